// Fuzz target for the untrusted-credential parsers of src/auth: SAS tokens (MQTT CONNECT
// passwords, HTTP Authorization headers) and connection strings. Besides "never crashes",
// it checks round-trip properties: a token that parses can be rebuilt and verifies, and a
// connection string that parses renders to one that parses to the same fields.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "auth/connection_string.hpp"
#include "auth/policy.hpp"
#include "auth/sas_token.hpp"

namespace {

using namespace iothub;
using namespace iothub::auth;

constexpr std::string_view kKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "sas_token_fuzz: property violated: %s\n", what);
    std::abort();
  }
}

void fuzzToken(std::string_view text) {
  auto token = SasToken::parse(text);
  if (!token) {
    require(token.code() == ErrorCode::Unauthorized, "parse errors are Unauthorized");
    return;
  }
  (void)resourceCovers(token->resource, "myhub.azure-devices.net/devices/dev1");
  (void)resourceCovers(token->resource, token->resource);
  (void)signatureMatches(*token, kKey);

  std::optional<std::string_view> key_name;
  if (token->key_name) key_name = *token->key_name;
  auto rebuilt = buildSasToken(token->resource_raw, kKey, key_name, token->expiry);
  require(rebuilt.isOk(), "a parsed token can be rebuilt");
  auto reparsed = SasToken::parse(*rebuilt);
  require(reparsed.isOk(), "a rebuilt token parses");
  require(reparsed->resource_raw == token->resource_raw, "sr survives a rebuild");
  require(reparsed->resource == token->resource, "decoded sr survives a rebuild");
  require(reparsed->key_name == token->key_name, "skn survives a rebuild");
  require(reparsed->expiry == token->expiry, "se survives a rebuild");
  require(signatureMatches(*reparsed, kKey), "a rebuilt token verifies");
}

void fuzzAuthenticators(std::string_view text) {
  FakeClock clock;
  std::vector<AccessPolicyRecord> policies{
      {"iothubowner", std::string(kKey), std::string(kKey),
       kRegistryRead | kRegistryWrite | kServiceConnect | kDeviceConnect},
      {"registryRead", std::string(kKey), "", kRegistryRead},
  };
  ServiceAuthenticator authenticator("myhub.azure-devices.net", policies, clock);
  auto identity = authenticator.authenticate(text);
  if (!identity)
    require(identity.code() == ErrorCode::Unauthorized, "auth errors are Unauthorized");
  auto expiry =
      verifyDeviceToken(text, "myhub.azure-devices.net", "dev1", kKey, "", policies, clock);
  if (!expiry) require(expiry.code() == ErrorCode::Unauthorized, "auth errors are Unauthorized");
  for (std::string_view audience :
       {"sb://myhub.azure-devices.net/myhub/$management",
        "sb://localhost:5671/myhub/ConsumerGroups/$default/Partitions/0", ""}) {
    auto event_hubs = verifyEventHubsToken(text, audience, policies, clock);
    if (!event_hubs)
      require(event_hubs.code() == ErrorCode::Unauthorized, "auth errors are Unauthorized");
  }
}

void fuzzConnectionStrings(std::string_view text) {
  (void)parseConnectionStringPairs(text);
  if (auto service = ServiceConnectionString::parse(text)) {
    auto again = ServiceConnectionString::parse(service->toString());
    require(again.isOk(), "a rendered service connection string parses");
    require(again->host_name == service->host_name && again->key_name == service->key_name &&
                again->key == service->key,
            "a service connection string round-trips");
  }
  if (auto device = DeviceConnectionString::parse(text)) {
    auto again = DeviceConnectionString::parse(device->toString());
    require(again.isOk(), "a rendered device connection string parses");
    require(again->host_name == device->host_name && again->device_id == device->device_id &&
                again->module_id == device->module_id &&
                again->shared_access_key == device->shared_access_key &&
                again->shared_access_key_name == device->shared_access_key_name &&
                again->shared_access_signature == device->shared_access_signature &&
                again->x509 == device->x509 &&
                again->gateway_host_name == device->gateway_host_name,
            "a device connection string round-trips");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzzToken(text);
  fuzzAuthenticators(text);
  fuzzConnectionStrings(text);
  return 0;
}
