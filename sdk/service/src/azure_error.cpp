#include "azure_error.hpp"

#include <charconv>
#include <string>

#include "common/encoding.hpp"
#include "common/json.hpp"
#include "iothub/service/http_transport.hpp"

namespace iothub::service {
namespace detail {

ErrorCode errorCodeFromHttpStatus(int http_status) {
  switch (http_status) {
    case 400: return ErrorCode::ArgumentInvalid;
    case 401: return ErrorCode::Unauthorized;
    case 403: return ErrorCode::Unauthorized;
    case 404: return ErrorCode::NotFound;
    case 405: return ErrorCode::MethodNotAllowed;
    case 408: return ErrorCode::GatewayTimeout;
    case 409: return ErrorCode::DeviceAlreadyExists;
    case 412: return ErrorCode::PreconditionFailed;
    case 413: return ErrorCode::MessageTooLarge;
    case 429: return ErrorCode::Throttled;
    case 503: return ErrorCode::ServiceUnavailable;
    case 504: return ErrorCode::GatewayTimeout;
    default: break;
  }
  if (http_status >= 400 && http_status < 500) return ErrorCode::InvalidOperation;
  return ErrorCode::ServerError;
}

}  // namespace detail

namespace {

// Hub error text is shown to people; keep a runaway body (an HTML proxy page) short.
constexpr std::size_t kMaxQuotedBody = 300;

struct DecodedError {
  std::optional<ErrorCode> code;
  std::string text;
};

std::int64_t integerOf(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) return static_cast<std::int64_t>(v.get_uint64());
  if (v.is_string()) {
    std::string_view text = v.get_string();
    std::int64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec == std::errc{} && end == text.data() + text.size()) return n;
  }
  return 0;
}

// {"errorCode":404103,"message":"…",…}: the direct-method shape, found nested in Message or
// at the top level.
bool decodeNumericShape(const json::object& o, DecodedError& out) {
  const json::value* error_code = findMember(o, "errorCode");
  if (error_code == nullptr) return false;
  out.code = errorCodeFromAzureCode(integerOf(*error_code));
  if (const json::string* message = findString(o, "message")) out.text = std::string(*message);
  return true;
}

DecodedError decodeBody(std::string_view body) {
  DecodedError out;
  auto parsed = parseJson(body);
  if (!parsed || !parsed->is_object()) {
    out.text = std::string(body.substr(0, kMaxQuotedBody));
    return out;
  }
  const json::object& o = parsed->get_object();
  if (const json::string* message = findString(o, "Message")) {
    std::string_view m = *message;
    constexpr std::string_view kPrefix = "ErrorCode:";
    if (m.substr(0, kPrefix.size()) == kPrefix) {
      // Shape 1: "ErrorCode:<Name>;<human text>". Unlike Node we keep all the text after
      // the first ';' (Node drops anything after a second one).
      auto semicolon = m.find(';');
      std::string_view name = m.substr(kPrefix.size(), semicolon == std::string_view::npos
                                                           ? std::string_view::npos
                                                           : semicolon - kPrefix.size());
      out.code = errorCodeFromName(name);
      out.text = semicolon == std::string_view::npos ? std::string(name)
                                                     : std::string(m.substr(semicolon + 1));
      return out;
    }
    // Shape 2: Message is itself a JSON object.
    auto nested = parseJson(m);
    if (nested && nested->is_object() && decodeNumericShape(nested->get_object(), out)) {
      return out;
    }
    out.text = std::string(m);
    return out;
  }
  if (decodeNumericShape(o, out)) return out;
  if (const json::string* message = findString(o, "message")) {
    out.text = std::string(*message);
    return out;
  }
  out.text = std::string(body.substr(0, kMaxQuotedBody));
  return out;
}

}  // namespace

std::optional<std::string> HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (equalsIgnoreCase(key, name)) return value;
  }
  return std::nullopt;
}

bool isTransportFailure(const Status& status) {
  return status.code() == ErrorCode::ServiceUnavailable &&
         std::string_view(status.message()).substr(0, kTransportFailurePrefix.size()) ==
             kTransportFailurePrefix;
}

Status statusFromErrorResponse(const HttpResponse& response) {
  DecodedError decoded = decodeBody(response.body);
  ErrorCode code = ErrorCode::ServerError;
  if (decoded.code) {
    code = *decoded.code;
  } else if (auto by_header = errorCodeFromName(
                 response.header("iothub-errorcode").value_or(std::string{}))) {
    code = *by_header;
  } else {
    code = detail::errorCodeFromHttpStatus(response.status);
  }
  std::string message = decoded.text;
  if (!message.empty()) message += ' ';
  message += "(HTTP " + std::to_string(response.status) + ")";
  return Status(code, std::move(message));
}

}  // namespace iothub::service
