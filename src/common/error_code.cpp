#include "common/error_code.hpp"

#include <array>

namespace iothub {
namespace {

struct Entry {
  ErrorCode code;
  ErrorInfo info;
};

// Order must follow the enum; checked by the static_assert below and by a unit test.
constexpr std::array kTable{
    Entry{ErrorCode::Ok, {200, 0, "Ok"}},
    Entry{ErrorCode::ArgumentInvalid, {400, 400004, "ArgumentInvalid"}},
    Entry{ErrorCode::ArgumentNull, {400, 400005, "ArgumentNull"}},
    Entry{ErrorCode::IotHubFormatError, {400, 400006, "IotHubFormatError"}},
    Entry{ErrorCode::InvalidOperation, {400, 400003, "InvalidOperation"}},
    Entry{ErrorCode::DeviceDefinedMultipleTimes, {400, 400011, "DeviceDefinedMultipleTimes"}},
    Entry{ErrorCode::BulkRegistryOperationFailure, {400, 400013, "BulkRegistryOperationFailure"}},
    Entry{ErrorCode::Unauthorized, {401, 401002, "IotHubUnauthorizedAccess"}},
    Entry{ErrorCode::DeviceNotFound, {404, 404001, "DeviceNotFound"}},
    Entry{ErrorCode::JobNotFound, {404, 404002, "JobNotFound"}},
    Entry{ErrorCode::ModuleNotFound, {404, 404010, "ModuleNotFound"}},
    Entry{ErrorCode::DeviceNotOnline, {404, 404103, "DeviceNotOnline"}},
    Entry{ErrorCode::NotFound, {404, 0, "NotFound"}},
    Entry{ErrorCode::MethodNotAllowed, {405, 0, "MethodNotAllowed"}},
    Entry{ErrorCode::DeviceAlreadyExists, {409, 409001, "DeviceAlreadyExists"}},
    Entry{ErrorCode::JobAlreadyExists, {409, 0, "JobAlreadyExists"}},
    Entry{ErrorCode::PreconditionFailed, {412, 412001, "PreconditionFailed"}},
    Entry{ErrorCode::MessageTooLarge, {413, 413001, "MessageTooLarge"}},
    Entry{ErrorCode::TooManyDevices, {413, 413002, "TooManyDevices"}},
    Entry{ErrorCode::Throttled, {429, 429001, "ThrottlingException"}},
    Entry{ErrorCode::ServerError, {500, 500001, "ServerError"}},
    Entry{ErrorCode::ServiceUnavailable, {503, 503001, "ServiceUnavailable"}},
    Entry{ErrorCode::GatewayTimeout, {504, 504101, "GatewayTimeout"}},
    Entry{ErrorCode::Cancelled, {503, 503001, "ServiceUnavailable"}},
    Entry{ErrorCode::StoreCorruption, {500, 500001, "ServerError"}},
    Entry{ErrorCode::JobLeaseLost, {409, 0, "JobLeaseLost"}},
    Entry{ErrorCode::DeviceMaximumQueueDepthExceeded,
          {403, 403004, "DeviceMaximumQueueDepthExceeded"}},
    Entry{ErrorCode::DeviceMessageLockLost, {412, 412002, "DeviceMessageLockLost"}},
    Entry{ErrorCode::ConsumerGroupNotFound, {404, 404901, "ConsumerGroupNotFound"}},
    Entry{ErrorCode::ConsumerGroupAlreadyExists, {409, 409901, "ConsumerGroupAlreadyExists"}},
    Entry{ErrorCode::IotHubQuotaExceeded, {403, 403002, "IotHubQuotaExceeded"}},
};

constexpr bool tableFollowsEnum() {
  for (std::size_t i = 0; i < kTable.size(); ++i) {
    if (static_cast<std::size_t>(kTable[i].code) != i) return false;
  }
  return true;
}
static_assert(tableFollowsEnum(), "kTable must list ErrorCode values in declaration order");

}  // namespace

const ErrorInfo& errorInfo(ErrorCode code) {
  auto index = static_cast<std::size_t>(code);
  if (index >= kTable.size()) return kTable[static_cast<std::size_t>(ErrorCode::ServerError)].info;
  return kTable[index].info;
}

// Scanning in table order (skipping Ok) is what makes the first ErrorCode of a shared code
// or name win; the table has two dozen entries, so a scan is as fast as any index.
std::optional<ErrorCode> errorCodeFromAzureCode(std::int64_t azure_code) {
  if (azure_code == 0) return std::nullopt;
  for (const Entry& entry : kTable) {
    if (entry.code != ErrorCode::Ok && entry.info.azure_code == azure_code) return entry.code;
  }
  return std::nullopt;
}

std::optional<ErrorCode> errorCodeFromName(std::string_view name) {
  if (name.empty()) return std::nullopt;
  for (const Entry& entry : kTable) {
    if (entry.code != ErrorCode::Ok && entry.info.name == name) return entry.code;
  }
  return std::nullopt;
}

}  // namespace iothub
