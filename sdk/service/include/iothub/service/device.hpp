#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "iothub/json.hpp"
#include "iothub/status.hpp"

namespace iothub::service {

enum class DeviceStatus { Enabled, Disabled };
enum class ConnectionState { Disconnected, Connected };
enum class AuthenticationType { Sas, SelfSigned, CertificateAuthority, None };

// Wire names: "enabled", "Connected", "selfSigned", … (docs/protocol.md §5.1).
std::string_view toString(DeviceStatus status);
std::string_view toString(ConnectionState state);
std::string_view toString(AuthenticationType type);
std::optional<DeviceStatus> parseDeviceStatus(std::string_view text);

// A device identity as the registry REST API returns it (docs/protocol.md §5.1). Times are kept as
// the hub's ISO-8601 strings ("0001-01-01T00:00:00Z" = never). `raw` is the JSON the device
// was read from, so fields this model does not know survive a get → update round trip.
struct Device {
  std::string device_id;
  std::string generation_id;  // read-only
  std::string etag;           // read-only
  DeviceStatus status = DeviceStatus::Enabled;
  std::optional<std::string> status_reason;
  ConnectionState connection_state = ConnectionState::Disconnected;  // read-only
  std::string connection_state_updated_time;                         // read-only
  std::string status_updated_time;                                   // read-only
  std::string last_activity_time;                                    // read-only
  AuthenticationType authentication_type = AuthenticationType::Sas;
  // base64; both empty on create = "hub, generate the keys".
  std::string primary_key;
  std::string secondary_key;
  std::optional<std::string> primary_thumbprint;
  std::optional<std::string> secondary_thumbprint;
  std::int64_t cloud_to_device_message_count = 0;  // read-only
  bool iot_edge = false;
  json::object raw;

  // Errors: IotHubFormatError when `value` is not an object, lacks a string deviceId, or a
  // known field has the wrong type or an unknown enum value. Absent fields keep defaults.
  static Result<Device> fromJson(const json::value& value);

  // The body of a create/update PUT: `raw` with the model's writable fields written over it
  // (deviceId, status, statusReason, authentication normalised like the Node SDK,
  // capabilities.iotEdge; etag when known). Read-only fields the hub ignores stay as read.
  json::object toJson() const;
};

}  // namespace iothub::service
