#include "auth/sas_token.hpp"

#include <gtest/gtest.h>

#include "common/encoding.hpp"

namespace iothub::auth {
namespace {

// Test vectors of docs/protocol.md §1.10, produced by the Node SDK itself.
constexpr std::string_view kKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::string_view kHost = "myhub.azure-devices.net";
constexpr std::int64_t kExpiry = 1700000000;

constexpr std::string_view kDeviceToken =
    "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1"
    "&sig=wosmA3uJK9T0mdB5CIYn%2BsAVA2ODflnucuvNO5S6mbM%3D&se=1700000000";
constexpr std::string_view kModuleToken =
    "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1"
    "&sig=ZId0CjYzILqd7GGIpC99uIpjPK4fJTkYbrDAh8qYiy8%3D&se=1700000000";
constexpr std::string_view kSpacedDeviceToken =
    "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev%201%2Fx"
    "&sig=%2FglFNP%2FeNK54OdJveejd6G52oKDjr2%2BfVJ7jyi7nc%2BY%3D&se=1700000000";
constexpr std::string_view kServiceToken =
    "SharedAccessSignature sr=myhub.azure-devices.net"
    "&sig=sJAIZTF5oG40VHrie96heZ865%2BnR4QavBvHnzxZm8rk%3D&skn=iothubowner&se=1700000000";

TEST(SasTokenVectorTest, KeyIsBase64OfTheAsciiTestKey) {
  EXPECT_EQ(base64Decode(kKey).value(), "0123456789abcdef0123456789abcdef");
}

TEST(SasTokenVectorTest, DeviceResourceIsStrictlyEncoded) {
  EXPECT_EQ(deviceResource(kHost, "dev1"), "myhub.azure-devices.net%2Fdevices%2Fdev1");
  EXPECT_EQ(deviceResource(kHost, "dev1", "mod1"),
            "myhub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fmod1");
  EXPECT_EQ(deviceResource(kHost, "dev 1/x"), "myhub.azure-devices.net%2Fdevices%2Fdev%201%2Fx");
}

TEST(SasTokenVectorTest, BuildsDeviceTokenByteForByte) {
  auto token = buildSasToken(deviceResource(kHost, "dev1"), kKey, std::nullopt, kExpiry);
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(*token, kDeviceToken);
}

TEST(SasTokenVectorTest, BuildsModuleTokenByteForByte) {
  auto token = buildSasToken(deviceResource(kHost, "dev1", "mod1"), kKey, std::nullopt, kExpiry);
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(*token, kModuleToken);
}

TEST(SasTokenVectorTest, BuildsTokenForDeviceIdWithSpaceAndSlashByteForByte) {
  auto token = buildSasToken(deviceResource(kHost, "dev 1/x"), kKey, std::nullopt, kExpiry);
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(*token, kSpacedDeviceToken);
}

TEST(SasTokenVectorTest, BuildsServiceTokenByteForByte) {
  auto token = buildSasToken(kHost, kKey, "iothubowner", kExpiry);
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(*token, kServiceToken);
}

TEST(SasTokenVectorTest, SignsTheDocumentedStringToSign) {
  // sig of the device vector, URL-decoded, is the HMAC of the documented string-to-sign.
  EXPECT_EQ(hmacSha256Base64(kKey, "myhub.azure-devices.net%2Fdevices%2Fdev1\n1700000000").value(),
            "wosmA3uJK9T0mdB5CIYn+sAVA2ODflnucuvNO5S6mbM=");
  EXPECT_EQ(hmacSha256Base64(kKey, "myhub.azure-devices.net\n1700000000").value(),
            "sJAIZTF5oG40VHrie96heZ865+nR4QavBvHnzxZm8rk=");
}

TEST(SasTokenVectorTest, ParsesAndVerifiesDeviceToken) {
  auto token = SasToken::parse(kDeviceToken);
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(token->resource_raw, "myhub.azure-devices.net%2Fdevices%2Fdev1");
  EXPECT_EQ(token->resource, "myhub.azure-devices.net/devices/dev1");
  EXPECT_EQ(token->signature, "wosmA3uJK9T0mdB5CIYn+sAVA2ODflnucuvNO5S6mbM=");
  EXPECT_FALSE(token->key_name.has_value());
  EXPECT_EQ(token->expiry, kExpiry);
  EXPECT_TRUE(signatureMatches(*token, kKey));
  EXPECT_TRUE(resourceCovers(token->resource, "myhub.azure-devices.net/devices/dev1"));
}

TEST(SasTokenVectorTest, ParsesAndVerifiesModuleToken) {
  auto token = SasToken::parse(kModuleToken);
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(token->resource, "myhub.azure-devices.net/devices/dev1/modules/mod1");
  EXPECT_TRUE(signatureMatches(*token, kKey));
  EXPECT_TRUE(resourceCovers(token->resource, "myhub.azure-devices.net/devices/dev1/modules/mod1"));
  // A module token does not authenticate its device.
  EXPECT_FALSE(resourceCovers(token->resource, "myhub.azure-devices.net/devices/dev1"));
}

TEST(SasTokenVectorTest, ParsesAndVerifiesTokenForDeviceIdWithSpaceAndSlash) {
  auto token = SasToken::parse(kSpacedDeviceToken);
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(token->resource, "myhub.azure-devices.net/devices/dev 1/x");
  EXPECT_EQ(token->signature, "/glFNP/eNK54OdJveejd6G52oKDjr2+fVJ7jyi7nc+Y=");
  EXPECT_TRUE(signatureMatches(*token, kKey));
  EXPECT_TRUE(resourceCovers(token->resource, "myhub.azure-devices.net/devices/dev 1/x"));
}

TEST(SasTokenVectorTest, ParsesAndVerifiesServiceToken) {
  auto token = SasToken::parse(kServiceToken);
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(token->resource_raw, "myhub.azure-devices.net");
  EXPECT_EQ(token->resource, "myhub.azure-devices.net");
  EXPECT_EQ(token->key_name, "iothubowner");
  EXPECT_EQ(token->expiry, kExpiry);
  EXPECT_TRUE(signatureMatches(*token, kKey));
  EXPECT_TRUE(resourceCovers(token->resource, kHost));
}

TEST(SasTokenVectorTest, SignatureIsOverTheRawResourceNotTheDecodedOne) {
  // Same resource, but written unencoded: a different string was signed.
  auto raw = buildSasToken("myhub.azure-devices.net/devices/dev1", kKey, std::nullopt, kExpiry);
  ASSERT_TRUE(raw.isOk());
  EXPECT_NE(*raw, kDeviceToken);
  auto token = SasToken::parse(*raw);
  ASSERT_TRUE(token.isOk());
  EXPECT_TRUE(signatureMatches(*token, kKey));
  auto swapped = *token;
  swapped.resource_raw = "myhub.azure-devices.net%2Fdevices%2Fdev1";
  EXPECT_FALSE(signatureMatches(swapped, kKey));
}

TEST(SasTokenParseTest, AcceptsFieldsInAnyOrder) {
  const std::string_view orders[] = {
      "SharedAccessSignature sig=sJAIZTF5oG40VHrie96heZ865%2BnR4QavBvHnzxZm8rk%3D&se=1700000000"
      "&sr=myhub.azure-devices.net&skn=iothubowner",
      "SharedAccessSignature se=1700000000&skn=iothubowner&sr=myhub.azure-devices.net"
      "&sig=sJAIZTF5oG40VHrie96heZ865%2BnR4QavBvHnzxZm8rk%3D",
      "SharedAccessSignature "
      "sr=myhub.azure-devices.net&sig=sJAIZTF5oG40VHrie96heZ865%2BnR4QavBvHnzxZm8rk%3D"
      "&se=1700000000&skn=iothubowner",
  };
  for (std::string_view text : orders) {
    auto token = SasToken::parse(text);
    ASSERT_TRUE(token.isOk()) << text << ": " << token.status().toString();
    EXPECT_EQ(token->resource, "myhub.azure-devices.net");
    EXPECT_EQ(token->key_name, "iothubowner");
    EXPECT_EQ(token->expiry, kExpiry);
    EXPECT_TRUE(signatureMatches(*token, kKey)) << text;
  }
}

TEST(SasTokenParseTest, IgnoresUnknownFields) {
  auto token = SasToken::parse(std::string(kDeviceToken) + "&foo=bar&x=");
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_TRUE(signatureMatches(*token, kKey));
}

TEST(SasTokenParseTest, AcceptsUnencodedBase64Signature) {
  auto token = SasToken::parse(
      "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1"
      "&sig=wosmA3uJK9T0mdB5CIYn+sAVA2ODflnucuvNO5S6mbM=&se=1700000000");
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_TRUE(signatureMatches(*token, kKey));
}

TEST(SasTokenParseTest, TreatsEmptySknAsNoPolicy) {
  // The Azure C SDK appends "&skn=" to device-key tokens.
  auto token = SasToken::parse(std::string(kDeviceToken) + "&skn=");
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_FALSE(token->key_name.has_value());
}

TEST(SasTokenParseTest, DecodesPolicyName) {
  auto token = SasToken::parse("SharedAccessSignature sr=h&sig=abc&skn=my%20policy&se=1");
  ASSERT_TRUE(token.isOk()) << token.status().toString();
  EXPECT_EQ(token->key_name, "my policy");
}

void expectMalformed(std::string_view text, std::string_view fragment) {
  auto token = SasToken::parse(text);
  ASSERT_FALSE(token.isOk()) << text;
  EXPECT_EQ(token.code(), ErrorCode::Unauthorized) << text;
  EXPECT_NE(token.status().message().find(fragment), std::string::npos)
      << text << " -> " << token.status().message();
  // The message never carries the signature.
  EXPECT_EQ(token.status().message().find("wosmA3uJK9T0"), std::string::npos);
}

TEST(SasTokenParseTest, RejectsMissingPrefix) {
  expectMalformed("", "SharedAccessSignature");
  expectMalformed("sr=h&sig=abc&se=1", "SharedAccessSignature");
  expectMalformed("sharedaccesssignature sr=h&sig=abc&se=1", "SharedAccessSignature");
  expectMalformed("SharedAccessSignaturesr=h&sig=abc&se=1", "SharedAccessSignature");
  expectMalformed("SharedAccessSignature ", "no fields");
}

TEST(SasTokenParseTest, RejectsMissingFields) {
  expectMalformed("SharedAccessSignature sig=wosmA3uJK9T0&se=1", "missing 'sr'");
  expectMalformed("SharedAccessSignature sr=h&se=1", "missing 'sig'");
  expectMalformed("SharedAccessSignature sr=h&sig=wosmA3uJK9T0", "missing 'se'");
  expectMalformed("SharedAccessSignature sr=&sig=wosmA3uJK9T0&se=1", "'sr' is empty");
  expectMalformed("SharedAccessSignature sr=h&sig=&se=1", "'sig' is empty");
}

TEST(SasTokenParseTest, RejectsDuplicateFields) {
  expectMalformed("SharedAccessSignature sr=h&sr=h&sig=wosmA3uJK9T0&se=1", "duplicate 'sr'");
  expectMalformed("SharedAccessSignature sr=h&sig=wosmA3uJK9T0&sig=wosmA3uJK9T0&se=1",
                  "duplicate 'sig'");
  expectMalformed("SharedAccessSignature sr=h&sig=wosmA3uJK9T0&se=1&se=2", "duplicate 'se'");
  expectMalformed("SharedAccessSignature sr=h&skn=a&sig=wosmA3uJK9T0&skn=b&se=1",
                  "duplicate 'skn'");
  expectMalformed("SharedAccessSignature sr=h&x=1&sig=wosmA3uJK9T0&x=2&se=1", "duplicate field");
}

// An unauthenticated client may send a 64 KB password: it must be refused before it costs
// more than a scan of its bytes (the hardening issue measured 105 ms for 10 900 fields).
TEST(SasTokenParseTest, RejectsOverlongTokensAndTooManyFields) {
  std::string huge(kDeviceToken);
  for (int i = 0; huge.size() < 65000; ++i) huge += "&f" + std::to_string(i) + "=x";
  expectMalformed(huge, "longer than 4096 characters");

  std::string many(kDeviceToken);  // 3 fields
  for (int i = 0; i < 13; ++i) many += "&f" + std::to_string(i) + "=x";
  ASSERT_TRUE(SasToken::parse(many).isOk()) << "16 fields are allowed";
  many += "&f13=x";
  ASSERT_LE(many.size(), kMaxSasTokenLength);
  expectMalformed(many, "more than 16 fields");

  // Exactly at the length limit is still a token.
  std::string at_limit(kDeviceToken);
  at_limit += "&pad=";
  at_limit.append(kMaxSasTokenLength - at_limit.size(), 'p');
  ASSERT_EQ(at_limit.size(), kMaxSasTokenLength);
  EXPECT_TRUE(SasToken::parse(at_limit).isOk());
  expectMalformed(at_limit + "p", "longer than");
}

TEST(SasTokenParseTest, RejectsGarbageExpiry) {
  for (std::string_view se : {"", "-1", "+1", " 1", "1 ", "1a", "0x10", "1.5", "1e9", "01",
                              "99999999999999999999", "9223372036854775808"}) {
    expectMalformed("SharedAccessSignature sr=h&sig=wosmA3uJK9T0&se=" + std::string(se), "'se'");
  }
  auto zero = SasToken::parse("SharedAccessSignature sr=h&sig=abc&se=0");
  ASSERT_TRUE(zero.isOk());
  EXPECT_EQ(zero->expiry, 0);
  auto max = SasToken::parse("SharedAccessSignature sr=h&sig=abc&se=9223372036854775807");
  ASSERT_TRUE(max.isOk());
  EXPECT_EQ(max->expiry, INT64_MAX);
}

TEST(SasTokenParseTest, RejectsBadPercentEscapes) {
  expectMalformed("SharedAccessSignature sr=h%2&sig=wosmA3uJK9T0&se=1", "'sr'");
  expectMalformed("SharedAccessSignature sr=h%zz&sig=wosmA3uJK9T0&se=1", "'sr'");
  expectMalformed("SharedAccessSignature sr=h&sig=wosmA3uJK9T0%3&se=1", "'sig'");
  expectMalformed("SharedAccessSignature sr=h&sig=wosmA3uJK9T0&skn=%G0&se=1", "'skn'");
}

TEST(SasTokenParseTest, RejectsMalformedFields) {
  expectMalformed("SharedAccessSignature sr=h&&sig=wosmA3uJK9T0&se=1", "empty field");
  expectMalformed("SharedAccessSignature sr=h&sig=wosmA3uJK9T0&se=1&", "empty field");
  expectMalformed("SharedAccessSignature sr=h&sig=wosmA3uJK9T0&se=1&junk", "no '='");
  expectMalformed("SharedAccessSignature sr=h&=x&sig=wosmA3uJK9T0&se=1", "empty name");
}

TEST(SasTokenSignatureTest, RejectsWrongKey) {
  auto token = SasToken::parse(kDeviceToken);
  ASSERT_TRUE(token.isOk());
  EXPECT_FALSE(signatureMatches(*token, base64Encode("another key, 32 bytes long......")));
  EXPECT_FALSE(signatureMatches(*token, "not base64!"));
  EXPECT_FALSE(signatureMatches(*token, ""));
}

TEST(SasTokenSignatureTest, RejectsForgedSignatureOfTheRightLength) {
  auto token = SasToken::parse(kDeviceToken);
  ASSERT_TRUE(token.isOk());
  SasToken forged = *token;
  forged.signature[0] = forged.signature[0] == 'A' ? 'B' : 'A';
  ASSERT_EQ(forged.signature.size(), token->signature.size());
  EXPECT_FALSE(signatureMatches(forged, kKey));
}

TEST(SasTokenSignatureTest, RejectsChangedExpiryOrResource) {
  auto token = SasToken::parse(kDeviceToken);
  ASSERT_TRUE(token.isOk());
  SasToken later = *token;
  later.expiry += 1;
  EXPECT_FALSE(signatureMatches(later, kKey));
  SasToken other = *token;
  other.resource_raw = "myhub.azure-devices.net%2Fdevices%2Fdev2";
  EXPECT_FALSE(signatureMatches(other, kKey));
}

TEST(SasTokenBuildTest, RejectsBadKeysAndNegativeExpiry) {
  EXPECT_EQ(buildSasToken("h", "not base64!", std::nullopt, 1).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(buildSasToken("h", "", std::nullopt, 1).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(buildSasToken("h", kKey, std::nullopt, -1).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(hmacSha256Base64("abc", "x").code(), ErrorCode::ArgumentInvalid);
}

TEST(SasTokenBuildTest, StrictlyEncodesPolicyName) {
  auto token = buildSasToken("h", kKey, "a b", 5);
  ASSERT_TRUE(token.isOk());
  EXPECT_NE(token->find("&skn=a%20b&se=5"), std::string::npos);
  auto parsed = SasToken::parse(*token);
  ASSERT_TRUE(parsed.isOk());
  EXPECT_EQ(parsed->key_name, "a b");
  EXPECT_TRUE(signatureMatches(*parsed, kKey));
}

TEST(ResourceCoversTest, MatchesWholeSegmentsOnly) {
  EXPECT_TRUE(resourceCovers("h/devices/d1", "h/devices/d1"));
  EXPECT_TRUE(resourceCovers("h/devices/d1", "h/devices/d1/modules/m"));
  EXPECT_FALSE(resourceCovers("h/devices/d1", "h/devices/d10"));
  EXPECT_FALSE(resourceCovers("h/devices/d10", "h/devices/d1"));
  EXPECT_FALSE(resourceCovers("h/devices/d1", "h/devices/d2"));
  EXPECT_FALSE(resourceCovers("h/devices/d1/modules/m", "h/devices/d1"));
  EXPECT_TRUE(resourceCovers("h", "h/devices/d1"));
  EXPECT_TRUE(resourceCovers("h/devices", "h/devices/d1"));
  EXPECT_FALSE(resourceCovers("h/dev", "h/devices/d1"));
}

TEST(ResourceCoversTest, ComparesHostCaseInsensitivelyAndPathCaseSensitively) {
  EXPECT_TRUE(resourceCovers("MyHub.Azure-Devices.NET", "myhub.azure-devices.net"));
  EXPECT_TRUE(
      resourceCovers("MYHUB.azure-devices.net/devices/d1", "myhub.azure-devices.net/devices/d1"));
  EXPECT_FALSE(
      resourceCovers("myhub.azure-devices.net/devices/D1", "myhub.azure-devices.net/devices/d1"));
}

TEST(ResourceCoversTest, RejectsOtherHosts) {
  EXPECT_FALSE(resourceCovers("other.example", "myhub.example"));
  EXPECT_FALSE(resourceCovers("myhub.example.evil", "myhub.example"));
  EXPECT_FALSE(resourceCovers("myhub", "myhub.example"));
  EXPECT_FALSE(resourceCovers("myhub.example:8883", "myhub.example"));
  EXPECT_FALSE(resourceCovers("/devices/d1", "myhub.example/devices/d1"));
  EXPECT_FALSE(resourceCovers("", "myhub.example"));
}

TEST(ResourceCoversTest, IgnoresTrailingSlash) {
  EXPECT_TRUE(resourceCovers("h/", "h"));
  EXPECT_TRUE(resourceCovers("h/devices/d1/", "h/devices/d1"));
  EXPECT_TRUE(resourceCovers("h/devices/d1/", "h/devices/d1/modules/m"));
  EXPECT_FALSE(resourceCovers("h/devices/d1/", "h/devices/d10"));
}

TEST(ResourceCoversTest, NeverMatchesAnEmptyTargetHost) {
  EXPECT_FALSE(resourceCovers("/", ""));
  EXPECT_FALSE(resourceCovers("", ""));
  EXPECT_FALSE(resourceCovers("/devices/d1", "/devices/d1"));
}

}  // namespace
}  // namespace iothub::auth
