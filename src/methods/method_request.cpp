#include "methods/method_request.hpp"

#include <string>

namespace iothub::methods {
namespace {

// Azure's method-name alphabet (docs/protocol.md §7.1): printable ASCII without separators.
Status validateMethodName(std::string_view name) {
  constexpr std::string_view kForbidden = "$()<>@,;:\\\"/[]?={} \t";
  if (name.empty() || name.size() > 128) {
    return {ErrorCode::ArgumentInvalid, "methodName must be 1 to 128 characters"};
  }
  for (char c : name) {
    if (c < 0x21 || c > 0x7E || kForbidden.find(c) != std::string_view::npos) {
      return {
          ErrorCode::ArgumentInvalid,
          "methodName may only contain printable ASCII characters other than $()<>@,;:\\\"/[]?={}"};
    }
  }
  return Status::ok();
}

// An optional integer member from `min` to `max` seconds. Out-of-range values, huge ones
// included, are refused before any conversion, so no value can overflow a duration.
Result<std::chrono::seconds> timeoutField(const json::object& body, std::string_view name,
                                          std::int64_t fallback, std::int64_t min,
                                          std::int64_t max) {
  const json::value* v = findMember(body, name);
  if (v == nullptr || v->is_null()) return std::chrono::seconds{fallback};
  auto out_of_range = [&] {
    return Status(ErrorCode::ArgumentInvalid, std::string(name) + " must be between " +
                                                  std::to_string(min) + " and " +
                                                  std::to_string(max));
  };
  std::int64_t seconds = 0;
  if (v->is_int64()) {
    seconds = v->get_int64();
  } else if (v->is_uint64()) {
    if (v->get_uint64() > static_cast<std::uint64_t>(max)) return out_of_range();
    seconds = static_cast<std::int64_t>(v->get_uint64());
  } else {
    return Status(ErrorCode::ArgumentInvalid, std::string(name) + " must be an integer");
  }
  if (seconds < min || seconds > max) return out_of_range();
  return std::chrono::seconds{seconds};
}

}  // namespace

Result<methods::MethodCall> parseMethodCall(std::string_view device_id, const json::value& body) {
  const json::object* o = body.if_object();
  if (o == nullptr)
    return Status(ErrorCode::IotHubFormatError, "The method request must be a JSON object");
  const json::string* name = findString(*o, "methodName");
  if (name == nullptr)
    return Status(ErrorCode::ArgumentInvalid, "methodName is required and must be a string");
  IOTHUB_RETURN_IF_ERROR(validateMethodName(*name));
  auto response_timeout = timeoutField(*o, "responseTimeoutInSeconds", 30, 5, 300);
  if (!response_timeout) return response_timeout.status();
  auto connect_timeout = timeoutField(*o, "connectTimeoutInSeconds", 0, 0, 300);
  if (!connect_timeout) return connect_timeout.status();
  const json::value* payload = findMember(*o, "payload");
  std::string payload_json = payload == nullptr ? "null" : json::serialize(*payload);
  if (payload_json.size() > kMaxMethodPayload) {
    return Status(ErrorCode::MessageTooLarge,
                  "The method payload exceeds " + std::to_string(kMaxMethodPayload / 1024) + " KB");
  }
  return methods::MethodCall{std::string(device_id), std::string(*name), std::move(payload_json),
                             *response_timeout, *connect_timeout};
}

}  // namespace iothub::methods
