#include "auth/policy.hpp"

#include <chrono>
#include <utility>

#include "auth/sas_token.hpp"
#include "common/encoding.hpp"

namespace iothub::auth {
namespace {

Status unauthorized(std::string message) { return {ErrorCode::Unauthorized, std::move(message)}; }

const AccessPolicyRecord* findPolicy(const std::vector<AccessPolicyRecord>& policies,
                                     std::string_view name) {
  for (const auto& policy : policies) {
    if (policy.name == name) return &policy;
  }
  return nullptr;
}

// Empty keys belong to identities that do not use SAS; signatureMatches() never accepts
// them, so a non-SAS device cannot be reached with a token signed by an empty key.
bool matchesEither(const SasToken& token, std::string_view primary, std::string_view secondary) {
  // Both comparisons always run so the time taken does not reveal which key matched.
  bool primary_ok = signatureMatches(token, primary);
  bool secondary_ok = signatureMatches(token, secondary);
  return primary_ok || secondary_ok;
}

std::string_view trimWhitespace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// system_clock counts nanoseconds in 64 bits (until the year 2262); a token may claim any
// int64 expiry, so clamp instead of overflowing.
SystemTime expiryTime(std::int64_t expiry) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  constexpr std::int64_t kMaxSeconds = duration_cast<seconds>(SystemTime::duration::max()).count();
  if (expiry >= kMaxSeconds) return SystemTime::max();
  return SystemTime{duration_cast<SystemTime::duration>(seconds{expiry})};
}

bool matchesEitherRawKey(const SasToken& token, std::string_view primary,
                         std::string_view secondary) {
  bool primary_ok = signatureMatchesRawKey(token, primary);
  bool secondary_ok = signatureMatchesRawKey(token, secondary);
  return primary_ok || secondary_ok;
}

// docs/amqp.md §1.5: `resource` (decoded `sr`) covers `audience` when, ignoring ASCII case
// and trailing '/', the decoded audience equals it or starts with it + "/". The resource must
// reach at least the end of the audience's "scheme://authority" so that "sb:" or "sb://x"
// (a prefix of host "x.y") cannot grant anything.
bool eventHubsResourceCovers(std::string_view resource, std::string_view audience_text) {
  auto decoded = urlDecode(audience_text);
  if (!decoded) return false;
  auto trimSlashes = [](std::string_view s) {
    while (s.ends_with('/')) s.remove_suffix(1);
    return s;
  };
  std::string_view sr = trimSlashes(resource);
  std::string_view audience = trimSlashes(*decoded);
  std::size_t scheme_end = audience.find("://");
  if (scheme_end == std::string_view::npos || scheme_end == 0) return false;
  std::size_t host_start = scheme_end + 3;
  std::size_t authority_end = audience.find('/', host_start);
  if (authority_end == std::string_view::npos) authority_end = audience.size();
  if (authority_end == host_start) return false;  // empty host
  if (sr.size() < authority_end) return false;
  if (sr.size() > audience.size()) return false;
  if (!equalsIgnoreCase(audience.substr(0, sr.size()), sr)) return false;
  return audience.size() == sr.size() || audience[sr.size()] == '/';
}

}  // namespace

std::vector<AccessPolicyRecord> defaultPolicies(Random& random) {
  struct Spec {
    const char* name;
    std::uint32_t permissions;
  };
  const Spec specs[] = {
      {"iothubowner", kRegistryRead | kRegistryWrite | kServiceConnect | kDeviceConnect},
      {"service", kServiceConnect},
      {"device", kDeviceConnect},
      {"registryRead", kRegistryRead},
      {"registryReadWrite", kRegistryRead | kRegistryWrite},
  };
  std::vector<AccessPolicyRecord> policies;
  for (const Spec& spec : specs) {
    AccessPolicyRecord policy;
    policy.name = spec.name;
    policy.primary_key = random.symmetricKey();
    policy.secondary_key = random.symmetricKey();
    policy.permissions = spec.permissions;
    policies.push_back(std::move(policy));
  }
  return policies;
}

std::string permissionsToString(std::uint32_t permissions) {
  constexpr std::pair<Permission, std::string_view> kNames[] = {
      {kRegistryRead, "RegistryRead"},
      {kRegistryWrite, "RegistryWrite"},
      {kServiceConnect, "ServiceConnect"},
      {kDeviceConnect, "DeviceConnect"},
  };
  std::string out;
  for (const auto& [bit, name] : kNames) {
    if ((permissions & bit) == 0) continue;
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

ServiceAuthenticator::ServiceAuthenticator(std::string host_name,
                                           std::vector<AccessPolicyRecord> policies,
                                           const Clock& clock)
    : host_name_(std::move(host_name)), policies_(std::move(policies)), clock_(clock) {}

Result<ServiceIdentity> ServiceAuthenticator::authenticate(
    std::string_view authorization_header) const {
  auto token = SasToken::parse(trimWhitespace(authorization_header));
  if (!token) return token.status();
  if (!token->key_name) {
    return unauthorized("SAS token has no 'skn': service requests need a shared access policy");
  }
  const AccessPolicyRecord* policy = findPolicy(policies_, *token->key_name);
  if (policy == nullptr) return unauthorized("Unknown shared access policy");
  if (!matchesEither(*token, policy->primary_key, policy->secondary_key)) {
    return unauthorized("SAS token signature does not match the policy's keys");
  }
  if (token->expiry <= unixSeconds(clock_.now())) return unauthorized("SAS token has expired");
  if (!resourceCovers(token->resource, host_name_)) {
    return unauthorized("SAS token resource does not grant access to hub " + host_name_);
  }
  return ServiceIdentity{policy->name, policy->permissions};
}

Status requirePermission(const ServiceIdentity& identity, Permission needed) {
  if ((identity.permissions & needed) == needed) return Status::ok();
  return unauthorized("This operation requires " + permissionsToString(needed) + " permission");
}

Result<SystemTime> verifyDeviceToken(std::string_view token_text, std::string_view host_name,
                                     std::string_view device_id,
                                     std::string_view device_primary_key,
                                     std::string_view device_secondary_key,
                                     const std::vector<AccessPolicyRecord>& policies,
                                     const Clock& clock) {
  auto token = SasToken::parse(token_text);
  if (!token) return token.status();
  if (token->key_name) {
    const AccessPolicyRecord* policy = findPolicy(policies, *token->key_name);
    if (policy == nullptr) return unauthorized("Unknown shared access policy");
    if ((policy->permissions & kDeviceConnect) == 0) {
      return unauthorized("Shared access policy does not grant DeviceConnect");
    }
    if (!matchesEither(*token, policy->primary_key, policy->secondary_key)) {
      return unauthorized("SAS token signature does not match the policy's keys");
    }
  } else {
    if (device_primary_key.empty() && device_secondary_key.empty()) {
      return unauthorized("Device does not use symmetric-key authentication");
    }
    if (!matchesEither(*token, device_primary_key, device_secondary_key)) {
      return unauthorized("SAS token signature does not match the device's keys");
    }
  }
  if (token->expiry <= unixSeconds(clock.now())) return unauthorized("SAS token has expired");
  std::string target(host_name);
  target += "/devices/";
  target += device_id;
  if (!resourceCovers(token->resource, target)) {
    return unauthorized("SAS token resource does not grant access to this device");
  }
  return expiryTime(token->expiry);
}

Result<ServiceIdentityWithExpiry> verifyEventHubsToken(
    std::string_view token_text, std::string_view audience,
    const std::vector<AccessPolicyRecord>& policies, const Clock& clock) {
  auto token = SasToken::parse(token_text);
  if (!token) return token.status();
  if (!token->key_name) {
    return unauthorized("SAS token has no 'skn': Event Hubs tokens need a shared access policy");
  }
  const AccessPolicyRecord* policy = findPolicy(policies, *token->key_name);
  if (policy == nullptr) return unauthorized("Unknown shared access policy");
  if (!matchesEitherRawKey(*token, policy->primary_key, policy->secondary_key)) {
    return unauthorized("SAS token signature does not match the policy's keys");
  }
  if (token->expiry <= unixSeconds(clock.now())) return unauthorized("SAS token has expired");
  if (!eventHubsResourceCovers(token->resource, audience)) {
    return unauthorized("SAS token resource does not grant access to this audience");
  }
  return ServiceIdentityWithExpiry{ServiceIdentity{policy->name, policy->permissions},
                                   expiryTime(token->expiry)};
}

}  // namespace iothub::auth
