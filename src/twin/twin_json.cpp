#include "twin/twin_json.hpp"

#include "common/time_format.hpp"
#include "registry/device_json.hpp"
#include "twin/twin_document.hpp"

namespace iothub::twin {
namespace {

json::value timeOrNever(SystemTime t) {
  if (t.time_since_epoch().count() == 0) return json::string(kNeverTimestamp);
  return json::string(formatTimestamp(t));
}

json::value optionalString(const std::optional<std::string>& s) {
  if (!s) return nullptr;
  return json::string(*s);
}

// Properties first, then "$metadata" (when asked for), then "$version", as Azure orders them.
json::object sectionView(const json::object& stored, std::int64_t version, bool with_metadata) {
  json::object view;
  view.reserve(stored.size() + 1);
  const json::value* metadata = nullptr;
  for (const auto& member : stored) {
    if (member.key() == kMetadataKey) {
      metadata = &member.value();
    } else {
      view.emplace(member.key(), member.value());
    }
  }
  if (with_metadata) {
    if (metadata != nullptr && metadata->is_object()) {
      view.emplace(kMetadataKey, *metadata);
    } else {
      view.emplace(kMetadataKey, json::object{{kLastUpdatedKey, kNeverTimestamp}});
    }
  }
  view.emplace(kVersionKey, version);
  return view;
}

}  // namespace

json::object serviceTwinJson(const store::DeviceRecord& device, const store::TwinRecord& twin,
                             bool connected) {
  json::object o;
  o.reserve(18);
  o["deviceId"] = twin.device_id;
  o["etag"] = nullptr;  // placeholders keep Azure's member order
  o["deviceEtag"] = nullptr;
  o["status"] = nullptr;
  setDeviceFields(o, device, connected);
  o["modelId"] = "";
  setTwinFields(o, twin);
  return o;
}

void setDeviceFields(json::object& view, const store::DeviceRecord& device, bool connected) {
  view["deviceEtag"] = device.etag;
  view["status"] = registry::deviceStatusName(device.status);
  if (device.status_reason) {
    view["statusReason"] = *device.status_reason;
  } else {
    view.erase("statusReason");
  }
  view["statusUpdateTime"] = timeOrNever(device.status_updated_time);
  setConnectionState(view, connected);
  view["lastActivityTime"] = timeOrNever(device.last_activity_time);
  view["cloudToDeviceMessageCount"] = device.cloud_to_device_message_count;
  view["authenticationType"] = registry::authTypeName(device.auth_type);
  view["x509Thumbprint"] =
      json::object{{"primaryThumbprint", optionalString(device.primary_thumbprint)},
                   {"secondaryThumbprint", optionalString(device.secondary_thumbprint)}};
  view["capabilities"] = json::object{{"iotEdge", device.iot_edge}};
}

void setConnectionState(json::object& view, bool connected) {
  view["connectionState"] = connected ? "Connected" : "Disconnected";
}

void setTwinFields(json::object& view, const store::TwinRecord& twin) {
  view["etag"] = twinEtag(twin.version);
  view["version"] = twin.version;
  view["tags"] = twin.tags;
  json::object properties;
  properties.reserve(2);
  properties.emplace("desired", sectionView(twin.desired, twin.desired_version, true));
  properties.emplace("reported", sectionView(twin.reported, twin.reported_version, true));
  view["properties"] = std::move(properties);
}

json::object deviceTwinJson(const store::TwinRecord& twin) {
  json::object o;
  o.reserve(2);
  o.emplace("desired", sectionView(twin.desired, twin.desired_version, false));
  o.emplace("reported", sectionView(twin.reported, twin.reported_version, false));
  return o;
}

}  // namespace iothub::twin
