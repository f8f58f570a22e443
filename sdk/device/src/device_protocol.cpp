#include "device_protocol.hpp"

#include <exception>

#include "common/encoding.hpp"
#include "common/error_code.hpp"

namespace iothub::device::detail {

namespace {

std::optional<std::int64_t> integerOf(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    return static_cast<std::int64_t>(v.get_uint64());
  }
  if (v.is_string()) return parseDecimal<std::int64_t>(v.get_string());
  return std::nullopt;
}

// Twin answers carry only the status codes of docs/protocol.md §3.5.
ErrorCode errorCodeFromStatus(int status) {
  switch (status) {
    case 400:
      return ErrorCode::ArgumentInvalid;
    case 401:
    case 403:
      return ErrorCode::Unauthorized;
    case 404:
      return ErrorCode::NotFound;
    case 412:
      return ErrorCode::PreconditionFailed;
    case 413:
      return ErrorCode::MessageTooLarge;
    case 429:
      return ErrorCode::Throttled;
    case 503:
      return ErrorCode::ServiceUnavailable;
    case 504:
      return ErrorCode::GatewayTimeout;
    default:
      break;
  }
  if (status >= 400 && status < 500) return ErrorCode::InvalidOperation;
  return ErrorCode::ServerError;
}

std::string jsonMessage(std::string_view message) {
  json::object body;
  body["message"] = message;
  return json::serialize(body);
}

}  // namespace

Result<HostPort> parseHostPort(std::string_view text, std::uint16_t default_port) {
  auto invalid = [&](std::string_view why) {
    return Status(ErrorCode::ArgumentInvalid,
                  "Invalid endpoint '" + std::string(text) + "': " + std::string(why));
  };
  HostPort out;
  std::string_view port_text;
  bool has_port = false;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return invalid("unclosed '['");
    out.host = std::string(text.substr(1, close - 1));
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return invalid("expected ':' after ']'");
      port_text = rest.substr(1);
      has_port = true;
    }
  } else {
    auto colon = text.rfind(':');
    if (colon != std::string_view::npos && text.find(':') == colon) {
      out.host = std::string(text.substr(0, colon));
      port_text = text.substr(colon + 1);
      has_port = true;
    } else {
      out.host = std::string(text);  // no port, or an unbracketed IPv6 literal
    }
  }
  if (out.host.empty()) return invalid("no host");
  out.port = default_port;
  if (has_port) {
    auto port = parseDecimal<std::uint32_t>(port_text);
    if (!port || *port == 0 || *port > 65535) return invalid("port must be 1..65535");
    out.port = static_cast<std::uint16_t>(*port);
  }
  bool ipv6 = out.host.find(':') != std::string::npos;
  out.text = (ipv6 ? "[" + out.host + "]" : out.host) + ":" + std::to_string(out.port);
  return out;
}

std::string hostWithoutPort(std::string_view host_name) {
  auto parsed = parseHostPort(host_name, 1);
  return parsed ? parsed->host : std::string(host_name);
}

std::string mqttUserName(std::string_view host_name, std::string_view device_id) {
  return std::string(host_name) + "/" + std::string(device_id) +
         "/?api-version=" + std::string(kApiVersion) +
         "&DeviceClientType=" + urlEncodeStrict(kDeviceClientType);
}

Status twinResponseStatus(int status, std::string_view payload) {
  std::optional<std::int64_t> azure_code;
  std::string message;
  if (!payload.empty()) {
    auto parsed = parseJson(payload);
    if (parsed && parsed->is_object()) {
      const json::object& body = parsed->get_object();
      if (const json::value* code = findMember(body, "errorCode")) {
        azure_code = integerOf(*code);
        if (azure_code == 0) azure_code.reset();
      }
      if (const json::string* text = findString(body, "message")) message = std::string(*text);
      if (message.empty()) {
        if (const json::string* text = findString(body, "Message")) message = std::string(*text);
      }
    }
  }
  if (!azure_code && status < 300) return Status::ok();
  ErrorCode code = ErrorCode::ServerError;
  if (azure_code) {
    code = errorCodeFromAzureCode(*azure_code).value_or(errorCodeFromStatus(status));
  } else {
    code = errorCodeFromStatus(status);
  }
  if (message.empty()) message = "The hub rejected the twin request";
  message += " (";
  if (azure_code) message += "errorCode " + std::to_string(*azure_code) + ", ";
  message += "status " + std::to_string(status) + ")";
  return Status(code, std::move(message));
}

Result<json::object> twinFromResponse(int status, std::string_view payload) {
  IOTHUB_RETURN_IF_ERROR(twinResponseStatus(status, payload));
  auto parsed = parseJson(payload);
  if (!parsed) {
    return Status(ErrorCode::IotHubFormatError,
                  "The hub's twin is not JSON: " + parsed.status().message());
  }
  if (!parsed->is_object() || findObject(parsed->get_object(), "desired") == nullptr ||
      findObject(parsed->get_object(), "reported") == nullptr) {
    return Status(ErrorCode::IotHubFormatError,
                  "The hub's twin lacks the \"desired\" and \"reported\" objects");
  }
  return std::move(parsed->get_object());
}

Result<std::int64_t> reportedVersionFromResponse(const mqtt::azure::TwinResponseTopic& topic,
                                                 std::string_view payload) {
  IOTHUB_RETURN_IF_ERROR(twinResponseStatus(topic.status, payload));
  if (!topic.version) {
    return Status(ErrorCode::IotHubFormatError,
                  "The hub accepted the reported patch without a $version in the topic");
  }
  return *topic.version;
}

MethodAnswer answerMethod(const MethodHandler* handler, std::string_view name,
                          std::string_view payload) {
  if (handler == nullptr || !*handler) {
    return {501,
            jsonMessage("Method '" + std::string(name) + "' is not implemented by this device")};
  }
  json::value request(nullptr);
  if (!payload.empty()) {
    auto parsed = parseJson(payload);
    if (!parsed) {
      return {400, jsonMessage("Invalid request format: " + parsed.status().message())};
    }
    request = std::move(*parsed);
  }
  // The handler is application code reading an untrusted payload, typically with
  // Boost.JSON's throwing accessors; a throw must become an answer, not kill the I/O thread.
  try {
    MethodResponse response = (*handler)(request);
    return {response.status, json::serialize(response.payload)};
  } catch (const std::exception& e) {
    return {500, jsonMessage("Method '" + std::string(name) + "' failed: " + e.what())};
  }
}

std::optional<DesiredUpdate> parseDesiredUpdate(const mqtt::azure::DesiredPatchTopic& topic,
                                                std::string_view payload) {
  auto parsed = parseJson(payload);
  if (!parsed || !parsed->is_object()) return std::nullopt;
  DesiredUpdate out;
  out.patch = std::move(parsed->get_object());
  if (topic.version) {
    out.version = *topic.version;
  } else if (const json::value* version = findMember(out.patch, "$version")) {
    auto number = integerOf(*version);
    if (!number) return std::nullopt;
    out.version = *number;
  } else {
    return std::nullopt;
  }
  return out;
}

}  // namespace iothub::device::detail
