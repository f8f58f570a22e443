#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/json.hpp"
#include "common/status.hpp"
#include "store/records.hpp"

namespace iothub::registry {

using store::DeviceRecord;

// Azure's device-id rules (docs/protocol.md §5.2): 1..128 ASCII characters from
// alphanumerics and - . + % _ # * ? ! ( ) , = @ $ ' : ;  ('/' is rejected).
// Errors: ArgumentInvalid naming the offending character.
Status validateDeviceId(std::string_view device_id);

// What a client asked for in a device body (PUT /devices/{id}, bulk entries), after
// validation. Fields the client may not set (etag, generationId, connectionState, times)
// are ignored, as Azure does.
struct DeviceSpec {
  std::optional<std::string> device_id;  // from the body, when present
  store::DeviceStatus status = store::DeviceStatus::Enabled;
  std::optional<std::string> status_reason;
  store::AuthType auth_type = store::AuthType::Sas;
  std::string primary_key;  // empty: generate (create) or keep (update)
  std::string secondary_key;
  std::optional<std::string> primary_thumbprint;
  std::optional<std::string> secondary_thumbprint;
  bool iot_edge = false;
  std::optional<std::string> etag;  // the body's etag (bulk UpdateIfMatchETag/DeleteIfMatchETag)
};

// Validates a device body. Errors: ArgumentInvalid naming the field and what is wrong
// (wrong JSON type, unknown enum value, a key that is not base64 of 16..64 bytes, only
// one of the two keys given, a thumbprint that is not 40 or 64 hex digits).
Result<DeviceSpec> parseDeviceSpec(const json::value& body);

// The device as Azure's REST API returns it (docs/protocol.md §5.1).
json::object deviceToJson(const DeviceRecord& device, bool connected);

const char* deviceStatusName(store::DeviceStatus status);
const char* authTypeName(store::AuthType type);

}  // namespace iothub::registry
