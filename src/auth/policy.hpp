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

// The five policies a new Azure hub has (reference §1.1), with fresh random 256-bit keys:
// iothubowner (all four), service (ServiceConnect), device (DeviceConnect),
// registryRead (RegistryRead), registryReadWrite (RegistryRead|RegistryWrite).
std::vector<AccessPolicyRecord> defaultPolicies(Random& random);

// "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect" style rendering.
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
// "<hub host>". Every failure is Unauthorized with a message naming the reason (not the
// secret). Permission checks are the caller's (see requirePermission).
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

// Unauthorized ("… requires <permission>") unless the identity has `needed`.
Status requirePermission(const ServiceIdentity& identity, Permission needed);

// Verifies a device token (MQTT CONNECT password, reference §1.3): syntax, signature
// against the device's primary or secondary key (no `skn`), or, when `skn` is present,
// against a policy with DeviceConnect; `se` in the future; resource covers
// "<host>/devices/<device_id>". Returns the token's expiry on success.
// Errors: Unauthorized with the reason.
Result<SystemTime> verifyDeviceToken(std::string_view token, std::string_view host_name,
                                     std::string_view device_id,
                                     std::string_view device_primary_key,
                                     std::string_view device_secondary_key,
                                     const std::vector<AccessPolicyRecord>& policies,
                                     const Clock& clock);

}  // namespace iothub::auth
