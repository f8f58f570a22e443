#pragma once

// The device side of Azure IoT Hub's MQTT conventions (docs/protocol.md §2, §3), without I/O:
// credentials and the interpretation of twin answers and method requests. Topic names and
// their parsing live in mqtt/azure_topics.hpp, shared with the hub and fleetsim.
// DeviceClient's Asio code only moves what these functions produce.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/json.hpp"
#include "common/status.hpp"
#include "iothub/device/device_client.hpp"
#include "mqtt/azure_topics.hpp"

namespace iothub::device::detail {

inline constexpr std::string_view kApiVersion = "2021-04-12";
inline constexpr std::string_view kDeviceClientType = "iothub-cpp-device/0.1";

// The Node SDK refuses larger telemetry bodies client-side (docs/protocol.md §3.10).
inline constexpr std::size_t kMaxEventPayloadBytes = 256 * 1024;

inline constexpr std::uint16_t kDefaultTlsPort = 8883;
inline constexpr std::uint16_t kDefaultPlainPort = 1883;

struct HostPort {
  std::string host;  // IPv6 literals without brackets
  std::uint16_t port = 0;
  std::string text;  // "host:port" ("[::1]:8883"), for messages
};

// Parses "host", "host:port", "[v6]" or "[v6]:port". Errors: ArgumentInvalid for an empty
// host, a port that is not a number in 1..65535, or an unclosed bracket.
Result<HostPort> parseHostPort(std::string_view text, std::uint16_t default_port);

// The host part of a HostName that may carry a port ("hub:8883" -> "hub", "[::1]:1" -> "::1").
std::string hostWithoutPort(std::string_view host_name);

// "<host_name>/<device_id>/?api-version=2021-04-12&DeviceClientType=iothub-cpp-device%2F0.1"
std::string mqttUserName(std::string_view host_name, std::string_view device_id);

// Ok for a successful twin answer; the error of a failed one. Like Node, a body with a
// non-zero errorCode is an error whatever the status; unlike Node, so is a status >= 300
// without one. The code comes from errorCode (Azure six-digit code), else from the status;
// the message carries the hub's "message", the errorCode and the status.
Status twinResponseStatus(int status, std::string_view payload);

// A twin GET answer: its properties object. Errors: twinResponseStatus, or
// IotHubFormatError when the body lacks "desired"/"reported" objects.
Result<json::object> twinFromResponse(int status, std::string_view payload);

// A reported PATCH answer: the new reported version. Errors: twinResponseStatus, or
// IotHubFormatError when a success answer has no $version.
Result<std::int64_t> reportedVersionFromResponse(const mqtt::azure::TwinResponseTopic& topic,
                                                 std::string_view payload);

// What the device answers to method `name` with request `payload`: runs `handler` (may be
// null) and builds the response status and JSON body (see DeviceClient::onMethod for the
// 400/500/501 cases). Never throws.
struct MethodAnswer {
  int status = 0;
  std::string payload;  // JSON text
};
MethodAnswer answerMethod(const MethodHandler* handler, std::string_view name,
                          std::string_view payload);

// A desired notification's patch and version: the topic's $version, else the body's
// "$version". nullopt when the body is not a JSON object or no version is known.
struct DesiredUpdate {
  json::object patch;
  std::int64_t version = 0;
};
std::optional<DesiredUpdate> parseDesiredUpdate(const mqtt::azure::DesiredPatchTopic& topic,
                                                std::string_view payload);

}  // namespace iothub::device::detail
