#pragma once

// Decoding of Azure error responses (reference §3.7), without I/O.

#include <cstdint>
#include <optional>
#include <string_view>

#include "common/error_code.hpp"

namespace iothub::service::detail {

// ErrorCode whose Azure name is `name` ("DeviceNotFound", "IotHubUnauthorizedAccess", …).
std::optional<ErrorCode> errorCodeFromName(std::string_view name);
// ErrorCode whose six-digit Azure code is `code` (404103 -> DeviceNotOnline).
std::optional<ErrorCode> errorCodeFromAzureCode(std::int64_t code);
// What an error with no recognisable code means, by HTTP status alone.
ErrorCode errorCodeFromHttpStatus(int http_status);

}  // namespace iothub::service::detail
