#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/random.hpp"
#include "common/status.hpp"
#include "store/records.hpp"

namespace iothub::auth {

using store::AccessPolicyRecord;
using store::Permission;
// The enumerators too, so callers can write auth::kServiceConnect (a using-declaration of
// an unscoped enum does not bring its enumerators along).
using store::kDeviceConnect;
using store::kRegistryRead;
using store::kRegistryWrite;
using store::kServiceConnect;

// The five policies a new Azure hub has (docs/protocol.md §1.3), with fresh random 256-bit keys:
// iothubowner (all four), service (ServiceConnect), device (DeviceConnect),
// registryRead (RegistryRead), registryReadWrite (RegistryRead|RegistryWrite).
std::vector<AccessPolicyRecord> defaultPolicies(Random& random);

// "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect" style rendering, in that
// order; unknown bits are ignored and no permissions give "".
std::string permissionsToString(std::uint32_t permissions);

// Who made a service request.
struct ServiceIdentity {
  std::string policy_name;
  std::uint32_t permissions = 0;
  bool has(Permission p) const { return (permissions & p) != 0; }
};

// Authenticates service (REST) requests from the Authorization header value.
// Checks, in order: token syntax; `skn` present and naming a known policy; signature
// against the policy's primary or secondary key; `se` in the future; resource covers
// "<hub host>" (docs/protocol.md §1.7, §1.8). Policy names are case-sensitive; spaces and tabs
// around the header value are ignored. Every failure is Unauthorized with a message naming
// the reason (not the secret): "Malformed SAS token: …", "… no 'skn' …", "Unknown shared
// access policy", "… signature does not match …", "… has expired", "… resource does not
// grant access …". Permission checks are the caller's (see requirePermission).
// Immutable after construction, so authenticate() may be called from any thread; `clock`
// must outlive the authenticator.
class ServiceAuthenticator {
 public:
  ServiceAuthenticator(std::string host_name, std::vector<AccessPolicyRecord> policies,
                       const Clock& clock);
  Result<ServiceIdentity> authenticate(std::string_view authorization_header) const;

 private:
  std::string host_name_;
  std::vector<AccessPolicyRecord> policies_;
  const Clock& clock_;
};

// Unauthorized ("… requires <permission>") unless the identity has every bit of `needed`.
Status requirePermission(const ServiceIdentity& identity, Permission needed);

// Verifies a device token (MQTT CONNECT password, docs/protocol.md §1.6): syntax, signature
// against the device's primary or secondary key (no `skn`), or, when `skn` is present,
// against a policy with DeviceConnect; `se` in the future; resource covers
// "<host>/devices/<device_id>" (so a module token does not authenticate its device, and a
// device token for "d1" does not cover "d10"). Empty device keys never match, so a device
// without symmetric keys can only connect with a policy-signed token. Returns the token's
// expiry on success (clamped to SystemTime::max() beyond what system_clock can hold).
// Errors: Unauthorized with the reason, never the secret.
Result<SystemTime> verifyDeviceToken(std::string_view token, std::string_view host_name,
                                     std::string_view device_id,
                                     std::string_view device_primary_key,
                                     std::string_view device_secondary_key,
                                     const std::vector<AccessPolicyRecord>& policies,
                                     const Clock& clock);

// A service identity together with when its token stops being valid.
struct ServiceIdentityWithExpiry {
  ServiceIdentity identity;
  SystemTime expiry;  // clamped to SystemTime::max() beyond what system_clock can hold
};

// Verifies an Event Hubs-style token put on `$cbs` for the Event Hubs-compatible endpoint
// (docs/amqp.md §1.5). Checks, in order: token syntax (SasToken::parse); `skn` present and
// naming a known policy (case-sensitive); signature against the policy's primary or
// secondary key, each used as the raw bytes of its key text (NOT base64-decoded, unlike
// IoT Hub tokens); `se` in the future; `sr` covers `audience`. Coverage: after URL-decoding
// both, ignoring ASCII case and trailing '/', the audience equals `sr` or starts with
// `sr` + "/"; `sr` must also include the audience's whole "scheme://host[:port]" (so "sb:"
// or "sb://" cover nothing). E.g. sr "sb://h/e" covers "sb://h/e/$management" and
// "sb://h/e/ConsumerGroups/$default/Partitions/0" but not "sb://h/entity2".
// Permission checks are the caller's. Errors: Unauthorized with the reason, never the
// secret: "Malformed SAS token: …", "… no 'skn' …", "Unknown shared access policy",
// "… signature does not match …", "… has expired", "… resource does not grant access …".
Result<ServiceIdentityWithExpiry> verifyEventHubsToken(
    std::string_view token, std::string_view audience,
    const std::vector<AccessPolicyRecord>& policies, const Clock& clock);

}  // namespace iothub::auth
