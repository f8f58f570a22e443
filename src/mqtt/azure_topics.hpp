#pragma once

// Azure IoT Hub's MQTT topic names (docs/protocol.md §3): every `$iothub/...` and
// `devices/{id}/messages/...` topic and filter the hub, the device SDK and fleetsim send or
// read is built and parsed here, and nowhere else, so the three cannot drift apart on the
// wire. Pure functions: no I/O, no allocation beyond the strings returned.
//
// Device ids and request ids are written into topics as given (the Azure SDKs do not encode
// them, docs/protocol.md §3.2, §3.10); property-bag keys and values are percent-encoded
// strictly (§3.11).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace iothub::mqtt::azure {

// ---- Subscription filters (device -> hub SUBSCRIBE) --------------------------------------

inline constexpr std::string_view kMethodRequestFilter = "$iothub/methods/POST/#";
inline constexpr std::string_view kTwinResponseFilter = "$iothub/twin/res/#";
inline constexpr std::string_view kDesiredPatchFilter = "$iothub/twin/PATCH/properties/desired/#";
// "devices/{device_id}/messages/devicebound/#"
std::string c2dFilter(std::string_view device_id);

// True for the filters a device may subscribe to (docs/protocol.md §3.1): the three constants
// above and its own c2dFilter.
bool isDeviceSubscriptionFilter(std::string_view device_id, std::string_view filter);

// ---- Topics a device publishes ----------------------------------------------------------

// "$iothub/twin/GET/?$rid={rid}"
std::string twinGetTopic(std::string_view rid);
// "$iothub/twin/PATCH/properties/reported/?$rid={rid}"
std::string twinPatchReportedTopic(std::string_view rid);
// "$iothub/methods/res/{status}/?$rid={rid}"; the rid is echoed byte for byte (§3.2).
std::string methodResponseTopic(int status, std::string_view rid);
// "devices/{device_id}/messages/events/": telemetry with an empty property bag; append
// properties with appendTopicProperty.
std::string telemetryTopic(std::string_view device_id);

// Appends one `key=value` pair of a property bag to `topic`, which ends either with the '/'
// that opens the bag (first pair) or with a previous pair (then '&' separates them). Both
// sides are percent-encoded strictly (urlEncodeStrict), so an encoded pair never ends in '/'.
void appendTopicProperty(std::string& topic, std::string_view key, std::string_view value);

// telemetryTopic followed by `properties` (any range of key/value pairs), in range order.
template <class Properties>
std::string telemetryTopic(std::string_view device_id, const Properties& properties) {
  std::string topic = telemetryTopic(device_id);
  for (const auto& [key, value] : properties) appendTopicProperty(topic, key, value);
  return topic;
}

// ---- Topics the hub publishes -----------------------------------------------------------

// "$iothub/twin/res/{status}/?$rid={rid}"
std::string twinResponseTopic(int status, std::string_view rid);
// "$iothub/twin/res/{status}/?$rid={rid}&$version={version}" (a reported PATCH's answer)
std::string twinResponseTopic(int status, std::string_view rid, std::int64_t version);
// "$iothub/twin/PATCH/properties/desired/?$version={version}"
std::string desiredPatchTopic(std::int64_t version);
// "$iothub/methods/POST/{name}/?$rid={rid}"
std::string methodRequestTopic(std::string_view name, std::string_view rid);
// "devices/{device_id}/messages/devicebound/": a C2D message with an empty property bag;
// append properties with appendTopicProperty.
std::string c2dTopic(std::string_view device_id);

// ---- Parsing what a device publishes (hub side) -----------------------------------------

enum class TwinRequestKind { Get, PatchReported };
struct TwinRequestTopic {
  TwinRequestKind kind = TwinRequestKind::Get;
  std::string rid;  // the URL-decoded $rid; empty when missing, empty or malformed
};
// A topic starting "$iothub/twin/GET/" or "$iothub/twin/PATCH/properties/reported/";
// nullopt for every other topic.
std::optional<TwinRequestTopic> parseTwinRequestTopic(std::string_view topic);

// True for topics starting "$iothub/methods/res/" (well-formed or not).
bool isMethodResponseTopic(std::string_view topic);
struct MethodResponseTopic {
  int status = 0;
  std::string rid;  // URL-decoded, possibly empty
};
// "$iothub/methods/res/{status}/?$rid={rid}"; nullopt when the status is not a decimal
// number followed by '/', or there is no $rid.
std::optional<MethodResponseTopic> parseMethodResponseTopic(std::string_view topic);

// The property bag of telemetry topic "devices/{device_id}/messages/events" followed by
// nothing, "/" or "/{bag}": "" for the first two, "{bag}" as written (not decoded, a trailing
// '/' kept) for the last. nullopt for an empty device id, another device's topic or another
// shape ("devices/d/messages/eventsX"). The id is compared as written (§3.10).
std::optional<std::string_view> telemetryPropertyBag(std::string_view device_id,
                                                     std::string_view topic);

// ---- Parsing what the hub publishes (device side) ---------------------------------------

struct MethodRequestTopic {
  std::string_view name;  // the 4th level, not decoded (§3.2)
  std::string_view rid;   // raw, to be echoed verbatim in the answer
};
// "$iothub/methods/POST/{name}/?$rid={rid}" (the last $rid pair wins); nullopt for other
// topics, an empty name or rid. The views point into `topic`.
std::optional<MethodRequestTopic> parseMethodRequestTopic(std::string_view topic);

struct TwinResponseTopic {
  int status = 0;
  std::string rid;  // URL-decoded, as Node's querystring.parse does
  std::optional<std::int64_t> version;
};
// "$iothub/twin/res/{status}/?$rid={rid}[&$version={n}]"; nullopt for other topics or a
// status or rid that is missing or not a number. A $version that is not a number is absent.
std::optional<TwinResponseTopic> parseTwinResponseTopic(std::string_view topic);

struct DesiredPatchTopic {
  std::optional<std::int64_t> version;
};
// "$iothub/twin/PATCH/properties/desired/[?$version={n}]"; nullopt for other topics.
std::optional<DesiredPatchTopic> parseDesiredPatchTopic(std::string_view topic);

}  // namespace iothub::mqtt::azure
