#pragma once

// Decoding of Azure error responses (docs/protocol.md §4.5), without I/O.

#include "common/error_code.hpp"

namespace iothub::service::detail {

// ErrorCode by Azure name or six-digit code: the lookups in the one ErrorCode table
// (common/error_code.hpp), named here beside the HTTP-status fallback they come before.
using ::iothub::errorCodeFromAzureCode;
using ::iothub::errorCodeFromName;
// What an error with no recognisable code means, by HTTP status alone.
ErrorCode errorCodeFromHttpStatus(int http_status);

}  // namespace iothub::service::detail
