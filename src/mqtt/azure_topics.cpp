#include "mqtt/azure_topics.hpp"

#include <charconv>

#include "common/encoding.hpp"
#include "mqtt/topic.hpp"

namespace iothub::mqtt::azure {
namespace {

constexpr std::string_view kTwinGetPrefix = "$iothub/twin/GET/";
constexpr std::string_view kTwinPatchReportedPrefix = "$iothub/twin/PATCH/properties/reported/";
constexpr std::string_view kTwinResponsePrefix = "$iothub/twin/res/";
constexpr std::string_view kDesiredPatchPrefix = "$iothub/twin/PATCH/properties/desired/";
constexpr std::string_view kMethodRequestPrefix = "$iothub/methods/POST/";
constexpr std::string_view kMethodResponsePrefix = "$iothub/methods/res/";
constexpr std::string_view kDevicesPrefix = "devices/";
constexpr std::string_view kEventsSuffix = "/messages/events";
constexpr std::string_view kDeviceboundSuffix = "/messages/devicebound/";

std::string concat(std::initializer_list<std::string_view> parts) {
  std::size_t size = 0;
  for (std::string_view part : parts) size += part.size();
  std::string out;
  out.reserve(size);
  for (std::string_view part : parts) out += part;
  return out;
}

}  // namespace

std::string c2dFilter(std::string_view device_id) {
  return concat({kDevicesPrefix, device_id, kDeviceboundSuffix, "#"});
}

bool isDeviceSubscriptionFilter(std::string_view device_id, std::string_view filter) {
  if (filter == kMethodRequestFilter || filter == kTwinResponseFilter ||
      filter == kDesiredPatchFilter) {
    return true;
  }
  return filter == c2dFilter(device_id);
}

std::string twinGetTopic(std::string_view rid) { return concat({kTwinGetPrefix, "?$rid=", rid}); }

std::string twinPatchReportedTopic(std::string_view rid) {
  return concat({kTwinPatchReportedPrefix, "?$rid=", rid});
}

std::string methodResponseTopic(int status, std::string_view rid) {
  return concat({kMethodResponsePrefix, std::to_string(status), "/?$rid=", rid});
}

std::string telemetryTopic(std::string_view device_id) {
  return concat({kDevicesPrefix, device_id, kEventsSuffix, "/"});
}

void appendTopicProperty(std::string& topic, std::string_view key, std::string_view value) {
  if (!topic.empty() && topic.back() != '/') topic += '&';
  topic += urlEncodeStrict(key);
  topic += '=';
  topic += urlEncodeStrict(value);
}

std::string twinResponseTopic(int status, std::string_view rid) {
  return concat({kTwinResponsePrefix, std::to_string(status), "/?$rid=", rid});
}

std::string twinResponseTopic(int status, std::string_view rid, std::int64_t version) {
  return concat({kTwinResponsePrefix, std::to_string(status), "/?$rid=", rid,
                 "&$version=", std::to_string(version)});
}

std::string desiredPatchTopic(std::int64_t version) {
  return concat({kDesiredPatchPrefix, "?$version=", std::to_string(version)});
}

std::string methodRequestTopic(std::string_view name, std::string_view rid) {
  return concat({kMethodRequestPrefix, name, "/?$rid=", rid});
}

std::string c2dTopic(std::string_view device_id) {
  return concat({kDevicesPrefix, device_id, kDeviceboundSuffix});
}

std::optional<TwinRequestTopic> parseTwinRequestTopic(std::string_view topic) {
  TwinRequestTopic out;
  if (topic.starts_with(kTwinGetPrefix)) {
    out.kind = TwinRequestKind::Get;
  } else if (topic.starts_with(kTwinPatchReportedPrefix)) {
    out.kind = TwinRequestKind::PatchReported;
  } else {
    return std::nullopt;
  }
  if (auto rid = topicQueryValue(topic, "$rid")) out.rid = std::move(*rid);
  return out;
}

bool isMethodResponseTopic(std::string_view topic) {
  return topic.starts_with(kMethodResponsePrefix);
}

std::optional<MethodResponseTopic> parseMethodResponseTopic(std::string_view topic) {
  if (!isMethodResponseTopic(topic)) return std::nullopt;
  std::string_view rest = topic.substr(kMethodResponsePrefix.size());
  const char* last = rest.data() + rest.size();
  int status = 0;
  auto [end, ec] = std::from_chars(rest.data(), last, status);
  if (ec != std::errc() || end == rest.data() || end == last || *end != '/') return std::nullopt;
  auto rid = topicQueryValue(topic, "$rid");
  if (!rid) return std::nullopt;
  return MethodResponseTopic{status, std::move(*rid)};
}

std::optional<std::string_view> telemetryPropertyBag(std::string_view device_id,
                                                     std::string_view topic) {
  if (device_id.empty() || !topic.starts_with(kDevicesPrefix)) return std::nullopt;
  topic.remove_prefix(kDevicesPrefix.size());
  if (!topic.starts_with(device_id)) return std::nullopt;
  topic.remove_prefix(device_id.size());
  if (!topic.starts_with(kEventsSuffix)) return std::nullopt;
  topic.remove_prefix(kEventsSuffix.size());
  if (topic.empty()) return topic;
  if (topic.front() != '/') return std::nullopt;
  return topic.substr(1);
}

std::optional<MethodRequestTopic> parseMethodRequestTopic(std::string_view topic) {
  if (!topic.starts_with(kMethodRequestPrefix)) return std::nullopt;
  std::string_view rest = topic.substr(kMethodRequestPrefix.size());
  auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  MethodRequestTopic out;
  out.name = rest.substr(0, slash);
  // Node copies the rid verbatim into the response (docs/protocol.md §3.2), so it is not decoded.
  std::string_view query = rest.substr(slash);
  if (!query.starts_with("/?")) return std::nullopt;
  query.remove_prefix(2);
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.starts_with("$rid=")) out.rid = pair.substr(5);
  }
  if (out.rid.empty()) return std::nullopt;
  return out;
}

std::optional<TwinResponseTopic> parseTwinResponseTopic(std::string_view topic) {
  if (!topic.starts_with(kTwinResponsePrefix)) return std::nullopt;
  std::string_view rest = topic.substr(kTwinResponsePrefix.size());
  auto status = parseDecimal<int>(rest.substr(0, rest.find('/')));
  if (!status) return std::nullopt;
  auto rid = topicQueryValue(topic, "$rid");
  if (!rid || rid->empty()) return std::nullopt;
  TwinResponseTopic out;
  out.status = *status;
  out.rid = std::move(*rid);
  if (auto version = topicQueryValue(topic, "$version")) {
    out.version = parseDecimal<std::int64_t>(*version);
  }
  return out;
}

std::optional<DesiredPatchTopic> parseDesiredPatchTopic(std::string_view topic) {
  if (!topic.starts_with(kDesiredPatchPrefix)) return std::nullopt;
  DesiredPatchTopic out;
  if (auto version = topicQueryValue(topic, "$version")) {
    out.version = parseDecimal<std::int64_t>(*version);
  }
  return out;
}

}  // namespace iothub::mqtt::azure
