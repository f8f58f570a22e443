#include "auth/policy.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <set>

#include "auth/sas_token.hpp"
#include "common/encoding.hpp"

namespace iothub::auth {
namespace {

using std::chrono::seconds;

// Test vectors of docs/protocol.md §1.10.
constexpr std::string_view kKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::string_view kHost = "myhub.azure-devices.net";
constexpr std::int64_t kVectorExpiry = 1700000000;
constexpr std::string_view kServiceToken =
    "SharedAccessSignature sr=myhub.azure-devices.net"
    "&sig=sJAIZTF5oG40VHrie96heZ865%2BnR4QavBvHnzxZm8rk%3D&skn=iothubowner&se=1700000000";
constexpr std::string_view kDeviceToken =
    "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1"
    "&sig=wosmA3uJK9T0mdB5CIYn%2BsAVA2ODflnucuvNO5S6mbM%3D&se=1700000000";
constexpr std::string_view kSpacedDeviceToken =
    "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%201%2Fx"
    "&sig=%2FglFNP%2FeNK54OdJveejd6G52oKDjr2%2BfVJ7jyi7nc%2BY%3D&se=1700000000";

const std::string kOtherKey = base64Encode("another 32-byte key.............");
const std::string kThirdKey = base64Encode("a third 32-byte key.............");

SystemTime at(std::int64_t unix_seconds) { return SystemTime{seconds{unix_seconds}}; }

void expectUnauthorized(const Status& status, std::string_view fragment) {
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.code(), ErrorCode::Unauthorized);
  EXPECT_NE(status.message().find(fragment), std::string::npos) << status.message();
  // Neither a key nor a signature ever ends up in the message.
  EXPECT_EQ(status.message().find(kKey), std::string::npos) << status.message();
  EXPECT_EQ(status.message().find("sJAIZTF5"), std::string::npos) << status.message();
  EXPECT_EQ(status.message().find("wosmA3uJ"), std::string::npos) << status.message();
}

TEST(DefaultPoliciesTest, MatchAzureDefaultsWithFreshKeys) {
  SeededRandom random(42);
  auto policies = defaultPolicies(random);
  ASSERT_EQ(policies.size(), 5u);
  EXPECT_EQ(policies[0].name, "iothubowner");
  EXPECT_EQ(policies[0].permissions,
            std::uint32_t{kRegistryRead | kRegistryWrite | kServiceConnect | kDeviceConnect});
  EXPECT_EQ(policies[1].name, "service");
  EXPECT_EQ(policies[1].permissions, std::uint32_t{kServiceConnect});
  EXPECT_EQ(policies[2].name, "device");
  EXPECT_EQ(policies[2].permissions, std::uint32_t{kDeviceConnect});
  EXPECT_EQ(policies[3].name, "registryRead");
  EXPECT_EQ(policies[3].permissions, std::uint32_t{kRegistryRead});
  EXPECT_EQ(policies[4].name, "registryReadWrite");
  EXPECT_EQ(policies[4].permissions, std::uint32_t{kRegistryRead | kRegistryWrite});
  std::set<std::string> keys;
  for (const auto& policy : policies) {
    for (const auto& key : {policy.primary_key, policy.secondary_key}) {
      EXPECT_EQ(key.size(), 44u);
      ASSERT_TRUE(base64Decode(key).has_value());
      EXPECT_EQ(base64Decode(key)->size(), 32u);
      keys.insert(key);
    }
  }
  EXPECT_EQ(keys.size(), 10u) << "every key must be fresh";
}

TEST(PermissionsTest, RendersAzureStyle) {
  EXPECT_EQ(permissionsToString(kRegistryRead | kRegistryWrite | kServiceConnect | kDeviceConnect),
            "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect");
  EXPECT_EQ(permissionsToString(kServiceConnect), "ServiceConnect");
  EXPECT_EQ(permissionsToString(kDeviceConnect | kRegistryRead), "RegistryRead, DeviceConnect");
  EXPECT_EQ(permissionsToString(0), "");
}

TEST(PermissionsTest, RequirePermissionChecksTheBit) {
  ServiceIdentity service{"service", kServiceConnect};
  EXPECT_TRUE(service.has(kServiceConnect));
  EXPECT_FALSE(service.has(kRegistryWrite));
  EXPECT_TRUE(requirePermission(service, kServiceConnect).isOk());
  expectUnauthorized(requirePermission(service, kRegistryWrite), "requires RegistryWrite");
}

class ServiceAuthenticatorTest : public ::testing::Test {
 protected:
  ServiceAuthenticatorTest()
      : clock_(at(kVectorExpiry - 600)), authenticator_(std::string(kHost), policies(), clock_) {}

  static std::vector<AccessPolicyRecord> policies() {
    return {
        {"iothubowner", std::string(kKey), kOtherKey,
         kRegistryRead | kRegistryWrite | kServiceConnect | kDeviceConnect},
        {"service", kOtherKey, std::string(kKey), kServiceConnect},
        {"registryRead", kThirdKey, kThirdKey, kRegistryRead},
    };
  }

  std::string token(std::string_view resource, std::string_view key, std::string_view policy,
                    std::int64_t expiry) {
    auto built = buildSasToken(resource, key, policy, expiry);
    EXPECT_TRUE(built.isOk());
    return built.isOk() ? *built : std::string();
  }

  FakeClock clock_;
  ServiceAuthenticator authenticator_;
};

TEST_F(ServiceAuthenticatorTest, AcceptsReferenceServiceToken) {
  auto identity = authenticator_.authenticate(kServiceToken);
  ASSERT_TRUE(identity.isOk()) << identity.status().toString();
  EXPECT_EQ(identity->policy_name, "iothubowner");
  EXPECT_EQ(identity->permissions,
            std::uint32_t{kRegistryRead | kRegistryWrite | kServiceConnect | kDeviceConnect});
}

TEST_F(ServiceAuthenticatorTest, AcceptsFreshNodeStyleTokenOnEveryRequest) {
  // docs/protocol.md §1.7: se = now + 3600, sr = raw host, skn = policy.
  std::int64_t now = unixSeconds(clock_.now());
  for (int request = 0; request < 3; ++request) {
    clock_.advance(seconds{7});
    auto identity = authenticator_.authenticate(
        token(kHost, kThirdKey, "registryRead", now + 7 * (request + 1) + 3600));
    ASSERT_TRUE(identity.isOk()) << identity.status().toString();
    EXPECT_TRUE(identity->has(kRegistryRead));
    EXPECT_FALSE(identity->has(kServiceConnect));
  }
}

TEST_F(ServiceAuthenticatorTest, AcceptsSecondaryKey) {
  auto identity =
      authenticator_.authenticate(token(kHost, kOtherKey, "iothubowner", kVectorExpiry));
  ASSERT_TRUE(identity.isOk()) << identity.status().toString();
  EXPECT_EQ(identity->policy_name, "iothubowner");
  auto service = authenticator_.authenticate(token(kHost, kKey, "service", kVectorExpiry));
  ASSERT_TRUE(service.isOk()) << service.status().toString();
  EXPECT_EQ(service->policy_name, "service");
}

TEST_F(ServiceAuthenticatorTest, ToleratesSurroundingWhitespace) {
  EXPECT_TRUE(authenticator_.authenticate(" " + std::string(kServiceToken) + "\t").isOk());
}

TEST_F(ServiceAuthenticatorTest, RejectsMalformedToken) {
  expectUnauthorized(authenticator_.authenticate("").status(), "Malformed SAS token");
  expectUnauthorized(authenticator_.authenticate("Bearer abc").status(), "Malformed SAS token");
  expectUnauthorized(
      authenticator_.authenticate("SharedAccessSignature sr=myhub.azure-devices.net&skn=x&se=9")
          .status(),
      "Malformed SAS token");
}

TEST_F(ServiceAuthenticatorTest, RejectsTokenWithoutPolicy) {
  auto device = buildSasToken(kHost, kKey, std::nullopt, kVectorExpiry);
  ASSERT_TRUE(device.isOk());
  expectUnauthorized(authenticator_.authenticate(*device).status(), "no 'skn'");
}

TEST_F(ServiceAuthenticatorTest, RejectsUnknownPolicyAndPolicyNamesAreCaseSensitive) {
  expectUnauthorized(
      authenticator_.authenticate(token(kHost, kKey, "nobody", kVectorExpiry)).status(),
      "Unknown shared access policy");
  expectUnauthorized(
      authenticator_.authenticate(token(kHost, kKey, "IotHubOwner", kVectorExpiry)).status(),
      "Unknown shared access policy");
}

TEST_F(ServiceAuthenticatorTest, RejectsWrongKey) {
  expectUnauthorized(
      authenticator_.authenticate(token(kHost, kThirdKey, "iothubowner", kVectorExpiry)).status(),
      "signature does not match");
}

TEST_F(ServiceAuthenticatorTest, RejectsForgedSignatureOfTheRightLength) {
  std::string forged(kServiceToken);
  std::size_t sig = forged.find("sig=") + 4;
  forged[sig] = forged[sig] == 'A' ? 'B' : 'A';
  expectUnauthorized(authenticator_.authenticate(forged).status(), "signature does not match");
}

TEST_F(ServiceAuthenticatorTest, RejectsExpiredToken) {
  clock_.set(at(kVectorExpiry));  // se must be strictly in the future
  expectUnauthorized(authenticator_.authenticate(kServiceToken).status(), "expired");
  clock_.set(at(kVectorExpiry - 1));
  EXPECT_TRUE(authenticator_.authenticate(kServiceToken).isOk());
  clock_.advance(std::chrono::milliseconds{999});
  EXPECT_TRUE(authenticator_.authenticate(kServiceToken).isOk());
  clock_.advance(std::chrono::milliseconds{1});
  expectUnauthorized(authenticator_.authenticate(kServiceToken).status(), "expired");
}

TEST_F(ServiceAuthenticatorTest, RejectsWrongResource) {
  expectUnauthorized(
      authenticator_
          .authenticate(token("otherhub.azure-devices.net", kKey, "iothubowner", kVectorExpiry))
          .status(),
      "resource does not grant access");
  expectUnauthorized(authenticator_
                         .authenticate(token("myhub.azure-devices.net/devices/dev1", kKey,
                                             "iothubowner", kVectorExpiry))
                         .status(),
                     "resource does not grant access");
}

TEST_F(ServiceAuthenticatorTest, ComparesHostCaseInsensitively) {
  EXPECT_TRUE(
      authenticator_
          .authenticate(token("MyHub.Azure-Devices.Net", kKey, "iothubowner", kVectorExpiry))
          .isOk());
  EXPECT_TRUE(
      authenticator_
          .authenticate(token("myhub.azure-devices.net%2F", kKey, "iothubowner", kVectorExpiry))
          .isOk());
}

class VerifyDeviceTokenTest : public ::testing::Test {
 protected:
  Result<SystemTime> verify(std::string_view token, std::string_view device_id = "dev1",
                            std::string_view primary = kKey,
                            std::string_view secondary = kOtherKey) {
    return verifyDeviceToken(token, kHost, device_id, primary, secondary, policies_, clock_);
  }

  FakeClock clock_{at(kVectorExpiry - 600)};
  std::vector<AccessPolicyRecord> policies_{
      {"device", kThirdKey, kOtherKey, kDeviceConnect},
      {"service", kThirdKey, kThirdKey, kServiceConnect},
  };
};

TEST_F(VerifyDeviceTokenTest, AcceptsReferenceDeviceTokenAndReturnsExpiry) {
  auto expiry = verify(kDeviceToken);
  ASSERT_TRUE(expiry.isOk()) << expiry.status().toString();
  EXPECT_EQ(*expiry, at(kVectorExpiry));
}

TEST_F(VerifyDeviceTokenTest, AcceptsReferenceTokenForDeviceIdWithSpaceAndSlash) {
  auto expiry = verify(kSpacedDeviceToken, "dev 1/x");
  ASSERT_TRUE(expiry.isOk()) << expiry.status().toString();
}

TEST_F(VerifyDeviceTokenTest, AcceptsSecondaryKey) {
  EXPECT_TRUE(verify(kDeviceToken, "dev1", kOtherKey, kKey).isOk());
}

TEST_F(VerifyDeviceTokenTest, RejectsWrongKey) {
  expectUnauthorized(verify(kDeviceToken, "dev1", kOtherKey, kThirdKey).status(),
                     "signature does not match the device's keys");
}

TEST_F(VerifyDeviceTokenTest, RejectsDeviceWithoutSymmetricKeys) {
  expectUnauthorized(verify(kDeviceToken, "dev1", "", "").status(), "symmetric-key");
  // A token signed with an empty key never verifies, whatever the device stores.
  SasToken empty_signed = SasToken::parse(kDeviceToken).value();
  EXPECT_FALSE(signatureMatches(empty_signed, ""));
}

TEST_F(VerifyDeviceTokenTest, RejectsExpiredToken) {
  clock_.set(at(kVectorExpiry + 1));
  expectUnauthorized(verify(kDeviceToken).status(), "expired");
}

TEST_F(VerifyDeviceTokenTest, RejectsTokenOfAnotherDevice) {
  expectUnauthorized(verify(kDeviceToken, "dev2").status(), "resource does not grant access");
  expectUnauthorized(verify(kDeviceToken, "dev10").status(), "resource does not grant access");
  expectUnauthorized(verify(kDeviceToken, "Dev1").status(), "resource does not grant access");
  auto other_host =
      buildSasToken(deviceResource("otherhub.example", "dev1"), kKey, std::nullopt, kVectorExpiry);
  ASSERT_TRUE(other_host.isOk());
  expectUnauthorized(verify(*other_host).status(), "resource does not grant access");
}

TEST_F(VerifyDeviceTokenTest, ComparesHostCaseInsensitively) {
  auto upper = buildSasToken(deviceResource("MYHUB.Azure-Devices.net", "dev1"), kKey, std::nullopt,
                             kVectorExpiry);
  ASSERT_TRUE(upper.isOk());
  EXPECT_TRUE(verify(*upper).isOk());
}

TEST_F(VerifyDeviceTokenTest, AcceptsPolicySignedToken) {
  auto token = buildSasToken(deviceResource(kHost, "dev1"), kThirdKey, "device", kVectorExpiry);
  ASSERT_TRUE(token.isOk());
  // The device's own keys play no part: the policy's key signed it.
  auto expiry = verify(*token, "dev1", "", "");
  ASSERT_TRUE(expiry.isOk()) << expiry.status().toString();
  EXPECT_EQ(*expiry, at(kVectorExpiry));
  auto secondary = buildSasToken(deviceResource(kHost, "dev1"), kOtherKey, "device", kVectorExpiry);
  ASSERT_TRUE(secondary.isOk());
  EXPECT_TRUE(verify(*secondary).isOk());
  // A hub-wide resource covers every device.
  auto hub_wide = buildSasToken(kHost, kThirdKey, "device", kVectorExpiry);
  ASSERT_TRUE(hub_wide.isOk());
  EXPECT_TRUE(verify(*hub_wide, "any-device").isOk());
}

TEST_F(VerifyDeviceTokenTest, RejectsPolicySignedTokenWithoutDeviceConnect) {
  auto token = buildSasToken(deviceResource(kHost, "dev1"), kThirdKey, "service", kVectorExpiry);
  ASSERT_TRUE(token.isOk());
  expectUnauthorized(verify(*token).status(), "DeviceConnect");
}

TEST_F(VerifyDeviceTokenTest, RejectsPolicySignedTokenWithUnknownPolicyOrDeviceKey) {
  auto unknown = buildSasToken(deviceResource(kHost, "dev1"), kThirdKey, "nobody", kVectorExpiry);
  ASSERT_TRUE(unknown.isOk());
  expectUnauthorized(verify(*unknown).status(), "Unknown shared access policy");
  // Naming a policy but signing with the device key does not work.
  auto device_key = buildSasToken(deviceResource(kHost, "dev1"), kKey, "device", kVectorExpiry);
  ASSERT_TRUE(device_key.isOk());
  expectUnauthorized(verify(*device_key).status(), "signature does not match the policy's keys");
}

TEST_F(VerifyDeviceTokenTest, RejectsMalformedToken) {
  expectUnauthorized(verify("SharedAccessSignature sr=x").status(), "Malformed SAS token");
}

TEST_F(VerifyDeviceTokenTest, ClampsFarFutureExpiry) {
  auto token = buildSasToken(deviceResource(kHost, "dev1"), kKey, std::nullopt, INT64_MAX);
  ASSERT_TRUE(token.isOk());
  auto expiry = verify(*token);
  ASSERT_TRUE(expiry.isOk()) << expiry.status().toString();
  EXPECT_EQ(*expiry, SystemTime::max());
}

// Event Hubs-style tokens (docs/amqp.md §1.5), built exactly as @azure/event-hubs builds them.
std::string encodeURIComponent(std::string_view text) {
  static constexpr std::string_view kUnreserved = "-_.!~*'()";
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
        kUnreserved.find(static_cast<char>(c)) != std::string_view::npos) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out;
}

// sr = encodeURIComponent(audience); sig = base64(HMAC-SHA256(key text bytes, sr + "\n" + se)).
std::string eventHubsToken(std::string_view audience, std::string_view key_text,
                           std::string_view policy, std::int64_t expiry) {
  std::string sr = encodeURIComponent(audience);
  std::string se = std::to_string(expiry);
  auto sig = hmacSha256Base64RawKey(key_text, sr + "\n" + se);
  EXPECT_TRUE(sig.isOk());
  return "SharedAccessSignature sr=" + sr + "&sig=" + encodeURIComponent(sig.isOk() ? *sig : "") +
         "&se=" + se + "&skn=" + encodeURIComponent(policy);
}

constexpr std::string_view kEhManagement = "sb://myhub.azure-devices.net/myhub/$management";
constexpr std::string_view kEhPartition =
    "sb://myhub.azure-devices.net/myhub/ConsumerGroups/$default/Partitions/0";

class VerifyEventHubsTokenTest : public ::testing::Test {
 protected:
  Result<ServiceIdentityWithExpiry> verify(std::string_view token, std::string_view audience) {
    return verifyEventHubsToken(token, audience, policies_, clock_);
  }

  FakeClock clock_{at(kVectorExpiry - 600)};
  std::vector<AccessPolicyRecord> policies_{
      {"iothubowner", std::string(kKey), kOtherKey,
       kRegistryRead | kRegistryWrite | kServiceConnect | kDeviceConnect},
      {"service", kThirdKey, kThirdKey, kServiceConnect},
  };
};

TEST_F(VerifyEventHubsTokenTest, AcceptsTokenMadeLikeTheEventHubsSdk) {
  for (std::string_view audience : {kEhManagement, kEhPartition}) {
    std::string token = eventHubsToken(audience, kKey, "iothubowner", kVectorExpiry);
    ASSERT_NE(token.find("sr=sb%3A%2F%2Fmyhub"), std::string::npos) << token;
    auto result = verify(token, audience);
    ASSERT_TRUE(result.isOk()) << result.status().toString();
    EXPECT_EQ(result->identity.policy_name, "iothubowner");
    EXPECT_TRUE(result->identity.has(kServiceConnect));
    EXPECT_EQ(result->expiry, at(kVectorExpiry));
  }
  auto service =
      verify(eventHubsToken(kEhManagement, kThirdKey, "service", kVectorExpiry), kEhManagement);
  ASSERT_TRUE(service.isOk()) << service.status().toString();
  EXPECT_EQ(service->identity.permissions, std::uint32_t{kServiceConnect});
}

TEST_F(VerifyEventHubsTokenTest, AcceptsIndependentlyComputedVector) {
  // Computed outside this code base (Python hmac over the key text's bytes, quote() with
  // encodeURIComponent's safe set), so the test helper above cannot be wrong in step with it.
  constexpr std::string_view kVector =
      "SharedAccessSignature sr=sb%3A%2F%2Fmyhub.azure-devices.net%2Fmyhub%2F%24management"
      "&sig=3MO652TKcZchlTYWQrK9a7stpl4FeQ94OcmLqXhZ51Y%3D&se=1700000000&skn=iothubowner";
  EXPECT_EQ(eventHubsToken(kEhManagement, kKey, "iothubowner", kVectorExpiry), kVector);
  auto built = buildEventHubsToken(kEhManagement, kKey, "iothubowner", kVectorExpiry);
  ASSERT_TRUE(built.isOk()) << built.status().toString();
  EXPECT_EQ(*built, kVector);
  auto result = verify(kVector, kEhManagement);
  ASSERT_TRUE(result.isOk()) << result.status().toString();
}

TEST_F(VerifyEventHubsTokenTest, RejectsTokenSignedWithTheDecodedKey) {
  // The IoT Hub way (decoded key) is not the Event Hubs way.
  std::string sr = encodeURIComponent(kEhManagement);
  auto token = buildSasToken(sr, kKey, "iothubowner", kVectorExpiry);
  ASSERT_TRUE(token.isOk());
  expectUnauthorized(verify(*token, kEhManagement).status(),
                     "signature does not match the policy's keys");
}

TEST_F(VerifyEventHubsTokenTest, AcceptsSecondaryKey) {
  auto result =
      verify(eventHubsToken(kEhManagement, kOtherKey, "iothubowner", kVectorExpiry), kEhManagement);
  ASSERT_TRUE(result.isOk()) << result.status().toString();
}

TEST_F(VerifyEventHubsTokenTest, RejectsWrongOrMissingPolicy) {
  expectUnauthorized(
      verify(eventHubsToken(kEhManagement, kKey, "nobody", kVectorExpiry), kEhManagement).status(),
      "Unknown shared access policy");
  expectUnauthorized(
      verify(eventHubsToken(kEhManagement, kKey, "IoTHubOwner", kVectorExpiry), kEhManagement)
          .status(),
      "Unknown shared access policy");
  // Another policy's name with this policy's key.
  expectUnauthorized(
      verify(eventHubsToken(kEhManagement, kKey, "service", kVectorExpiry), kEhManagement).status(),
      "signature does not match the policy's keys");
  std::string sr = encodeURIComponent(kEhManagement);
  std::string se = std::to_string(kVectorExpiry);
  auto sig = hmacSha256Base64RawKey(kKey, sr + "\n" + se);
  ASSERT_TRUE(sig.isOk());
  expectUnauthorized(
      verify("SharedAccessSignature sr=" + sr + "&sig=" + encodeURIComponent(*sig) + "&se=" + se,
             kEhManagement)
          .status(),
      "no 'skn'");
}

TEST_F(VerifyEventHubsTokenTest, RejectsExpiredToken) {
  std::string token = eventHubsToken(kEhManagement, kKey, "iothubowner", kVectorExpiry);
  clock_.set(at(kVectorExpiry));
  expectUnauthorized(verify(token, kEhManagement).status(), "expired");
}

TEST_F(VerifyEventHubsTokenTest, RejectsMalformedToken) {
  expectUnauthorized(verify("SharedAccessSignature sr=x", kEhManagement).status(),
                     "Malformed SAS token");
  expectUnauthorized(verify("", kEhManagement).status(), "Malformed SAS token");
}

TEST_F(VerifyEventHubsTokenTest, RejectsResourceOfAnotherEntityOrHost) {
  std::string token = eventHubsToken("sb://myhub.azure-devices.net/other/$management", kKey,
                                     "iothubowner", kVectorExpiry);
  expectUnauthorized(verify(token, kEhManagement).status(), "resource does not grant access");
  token = eventHubsToken("sb://otherhub.azure-devices.net/myhub/$management", kKey, "iothubowner",
                         kVectorExpiry);
  expectUnauthorized(verify(token, kEhManagement).status(), "resource does not grant access");
  // The management audience does not cover a partition.
  token = eventHubsToken(kEhManagement, kKey, "iothubowner", kVectorExpiry);
  expectUnauthorized(verify(token, kEhPartition).status(), "resource does not grant access");
  // A resource that stops inside the scheme or host covers nothing.
  for (std::string_view sr : {"sb:", "sb://", "sb://myhub", "sb://myhub.azure-devices.ne"}) {
    token = eventHubsToken(sr, kKey, "iothubowner", kVectorExpiry);
    expectUnauthorized(verify(token, kEhManagement).status(), "resource does not grant access");
  }
}

TEST_F(VerifyEventHubsTokenTest, ResourcePrefixCoversWholeSegmentsOnly) {
  std::string entity =
      eventHubsToken("sb://myhub.azure-devices.net/myhub", kKey, "iothubowner", kVectorExpiry);
  EXPECT_TRUE(verify(entity, kEhPartition).isOk());
  EXPECT_TRUE(verify(entity, kEhManagement).isOk());
  std::string trailing =
      eventHubsToken("sb://myhub.azure-devices.net/myhub/", kKey, "iothubowner", kVectorExpiry);
  EXPECT_TRUE(verify(trailing, kEhPartition).isOk());
  std::string partial =
      eventHubsToken("sb://myhub.azure-devices.net/myh", kKey, "iothubowner", kVectorExpiry);
  expectUnauthorized(verify(partial, kEhPartition).status(), "resource does not grant access");
  // A namespace-wide resource covers every entity of that host.
  std::string host_wide =
      eventHubsToken("sb://myhub.azure-devices.net", kKey, "iothubowner", kVectorExpiry);
  EXPECT_TRUE(verify(host_wide, kEhPartition).isOk());
}

TEST_F(VerifyEventHubsTokenTest, HandlesPortsInTheHost) {
  constexpr std::string_view kPorted = "sb://localhost:5671/myhub/$management";
  std::string token = eventHubsToken(kPorted, kKey, "iothubowner", kVectorExpiry);
  EXPECT_TRUE(verify(token, kPorted).isOk());
  std::string entity =
      eventHubsToken("sb://localhost:5671/myhub", kKey, "iothubowner", kVectorExpiry);
  EXPECT_TRUE(
      verify(entity, "sb://localhost:5671/myhub/ConsumerGroups/$default/Partitions/3").isOk());
  // Another port is another endpoint.
  expectUnauthorized(verify(token, "sb://localhost:5672/myhub/$management").status(),
                     "resource does not grant access");
  expectUnauthorized(verify(token, "sb://localhost/myhub/$management").status(),
                     "resource does not grant access");
  // "sb://localhost:56" must not cover port 5671.
  std::string short_port = eventHubsToken("sb://localhost:56", kKey, "iothubowner", kVectorExpiry);
  expectUnauthorized(verify(short_port, kPorted).status(), "resource does not grant access");
}

TEST_F(VerifyEventHubsTokenTest, IgnoresCaseAndAcceptsEncodedAudience) {
  std::string upper = eventHubsToken("sb://MyHub.Azure-Devices.NET/MYHUB/$Management", kKey,
                                     "iothubowner", kVectorExpiry);
  EXPECT_TRUE(verify(upper, kEhManagement).isOk());
  std::string lower = eventHubsToken(kEhManagement, kKey, "iothubowner", kVectorExpiry);
  EXPECT_TRUE(verify(lower, "SB://MYHUB.AZURE-DEVICES.NET/myhub/$management").isOk());
  // The audience is URL-decoded too.
  EXPECT_TRUE(verify(lower, "sb://myhub.azure-devices.net/myhub/%24management").isOk());
  expectUnauthorized(verify(lower, "sb://myhub.azure-devices.net/myhub/%zz").status(),
                     "resource does not grant access");
  expectUnauthorized(verify(lower, "").status(), "resource does not grant access");
}

TEST_F(VerifyEventHubsTokenTest, ClampsFarFutureExpiry) {
  auto result =
      verify(eventHubsToken(kEhManagement, kKey, "iothubowner", INT64_MAX), kEhManagement);
  ASSERT_TRUE(result.isOk()) << result.status().toString();
  EXPECT_EQ(result->expiry, SystemTime::max());
}

}  // namespace
}  // namespace iothub::auth
