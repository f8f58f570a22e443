#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace iothub {

// The closed set of failures iothub reports. Each maps to one HTTP status, one Azure
// six-digit error code and one Azure error name (docs/protocol.md §4.6); see errorInfo().
enum class ErrorCode {
  Ok,
  ArgumentInvalid,                  // 400 / 400004
  ArgumentNull,                     // 400 / 400005
  IotHubFormatError,                // 400 / 400006: malformed JSON or a body of the wrong shape
  InvalidOperation,                 // 400 / 400003
  DeviceDefinedMultipleTimes,       // 400 / 400011
  BulkRegistryOperationFailure,     // 400 / 400013
  Unauthorized,                     // 401 / 401002 IotHubUnauthorizedAccess
  DeviceNotFound,                   // 404 / 404001
  JobNotFound,                      // 404 / 404002
  ModuleNotFound,                   // 404 / 404010
  DeviceNotOnline,                  // 404 / 404103
  NotFound,                         // 404: an unknown route or resource that has no Azure code
  MethodNotAllowed,                 // 405
  DeviceAlreadyExists,              // 409 / 409001
  JobAlreadyExists,                 // 409
  PreconditionFailed,               // 412 / 412001
  MessageTooLarge,                  // 413 / 413001
  TooManyDevices,                   // 413 / 413002
  Throttled,                        // 429 / 429001
  ServerError,                      // 500 / 500001
  ServiceUnavailable,               // 503 / 503001
  GatewayTimeout,                   // 504 / 504101
  Cancelled,                        // operation abandoned because the hub is shutting down
  StoreCorruption,                  // 500: the store returned something impossible
  JobLeaseLost,                     // 409: a job's write under a lease that expired or that another
                                    // node took (store.hpp, JobStore leases); never sent to clients
  DeviceMaximumQueueDepthExceeded,  // 403 / 403004: the device's cloud-to-device queue is full
  DeviceMessageLockLost,            // 412 / 412002: a C2D lock token that holds no message
  ConsumerGroupNotFound,            // 404 / 404901 (iothub's own code): no such consumer group
  ConsumerGroupAlreadyExists,       // 409 / 409901 (iothub's own code)
  IotHubQuotaExceeded,              // 403 / 403002: a hub-wide quota is used up
};

struct ErrorInfo {
  int http_status;
  int azure_code;         // six-digit code, or 0 when Azure has none
  std::string_view name;  // Azure's error code name (iothub-errorcode header)
};

// The single table from ErrorCode to its HTTP status, Azure code and name.
const ErrorInfo& errorInfo(ErrorCode code);

// Reverse lookups in the same table, for decoding the hub's answers (docs/protocol.md §4.6). They
// only ever return a failure, never ErrorCode::Ok. Where several ErrorCodes share an Azure
// code or name, the first in enum order wins: it is the canonical one, the others only
// refine it on our side (503001 / "ServiceUnavailable" -> ServiceUnavailable, not
// Cancelled; 500001 / "ServerError" -> ServerError, not StoreCorruption).

// The failure whose six-digit Azure code is `azure_code` (404103 -> DeviceNotOnline);
// nullopt for 0 ("no code") and for codes the table does not know.
std::optional<ErrorCode> errorCodeFromAzureCode(std::int64_t azure_code);
// The failure whose Azure error name is `name` ("IotHubUnauthorizedAccess" -> Unauthorized);
// case-sensitive, as Azure sends them; nullopt for "", "Ok" and names the table does not know.
std::optional<ErrorCode> errorCodeFromName(std::string_view name);

}  // namespace iothub
