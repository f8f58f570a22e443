#pragma once

#include <cstddef>
#include <string_view>

#include "common/json.hpp"
#include "common/status.hpp"
#include "methods/method_invoker.hpp"

namespace iothub::methods {

// Largest direct-method payload (docs/protocol.md §7.1: 128 KB).
inline constexpr std::size_t kMaxMethodPayload = 128 * 1024;

// Validates POST /twins/{id}/methods (docs/protocol.md §7.1): methodName (Azure's alphabet),
// responseTimeoutInSeconds 5..300 (default 30), connectTimeoutInSeconds 0..300 (default 0),
// payload any JSON (default null, at most kMaxMethodPayload serialized).
// Errors: IotHubFormatError, ArgumentInvalid, MessageTooLarge.
Result<methods::MethodCall> parseMethodCall(std::string_view device_id, const json::value& body);

}  // namespace iothub::methods
