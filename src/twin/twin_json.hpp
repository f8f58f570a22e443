#pragma once

#include "common/json.hpp"
#include "store/records.hpp"

namespace iothub::twin {

// The service view of a twin (GET /twins/{id}, query rows; docs/protocol.md §6.1):
// deviceId, etag, deviceEtag, status, statusReason (only when set), statusUpdateTime,
// connectionState, lastActivityTime, cloudToDeviceMessageCount, authenticationType,
// x509Thumbprint, modelId (""), version, capabilities, tags (always, even {}) and
// properties.desired / properties.reported, each with its properties, "$metadata" and
// "$version". A section that was never written shows {"$lastUpdated":"0001-01-01T00:00:00Z"}
// as its metadata. `connected` comes from the caller (the registry's ConnectionStates).
// One copy of the stored documents; no other allocation-heavy work, so the query engine
// can build it per row.
json::object serviceTwinJson(const store::DeviceRecord& device, const store::TwinRecord& twin,
                             bool connected);

// The parts of the service view, for an index that keeps views up to date as the device
// record, the twin or the connection changes: each (re)writes only the members it names.
// setDeviceFields: deviceEtag, status, statusReason (removed when unset), statusUpdateTime,
// connectionState, lastActivityTime, cloudToDeviceMessageCount, authenticationType,
// x509Thumbprint, capabilities.
void setDeviceFields(json::object& view, const store::DeviceRecord& device, bool connected);
// connectionState.
void setConnectionState(json::object& view, bool connected);
// etag, version, tags, properties.
void setTwinFields(json::object& view, const store::TwinRecord& twin);

// The device view (MQTT $iothub/twin/GET, docs/protocol.md §3.3):
// {"desired":{...,"$version":n},"reported":{...,"$version":m}} without "$metadata" and
// without tags. A fresh twin is {"desired":{"$version":1},"reported":{"$version":1}}.
json::object deviceTwinJson(const store::TwinRecord& twin);

}  // namespace iothub::twin
