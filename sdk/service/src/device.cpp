#include "iothub/service/device.hpp"

namespace iothub::service {
namespace {

Status formatError(std::string_view field, std::string_view expected) {
  return Status(ErrorCode::IotHubFormatError,
                "Device JSON: '" + std::string(field) + "' must be " + std::string(expected));
}

// Reads an optional string member; JSON null counts as absent.
Status readString(const json::object& o, std::string_view key, std::string& out) {
  const json::value* v = findMember(o, key);
  if (v == nullptr || v->is_null()) return Status::ok();
  if (!v->is_string()) return formatError(key, "a string");
  out = std::string(v->get_string());
  return Status::ok();
}

Status readOptionalString(const json::object& o, std::string_view key,
                          std::optional<std::string>& out) {
  const json::value* v = findMember(o, key);
  if (v == nullptr || v->is_null()) return Status::ok();
  if (!v->is_string()) return formatError(key, "a string");
  out = std::string(v->get_string());
  return Status::ok();
}

std::optional<ConnectionState> parseConnectionState(std::string_view text) {
  if (text == "Connected") return ConnectionState::Connected;
  if (text == "Disconnected") return ConnectionState::Disconnected;
  return std::nullopt;
}

std::optional<AuthenticationType> parseAuthenticationType(std::string_view text) {
  if (text == "sas") return AuthenticationType::Sas;
  if (text == "selfSigned") return AuthenticationType::SelfSigned;
  if (text == "certificateAuthority") return AuthenticationType::CertificateAuthority;
  if (text == "none") return AuthenticationType::None;
  return std::nullopt;
}

Status readAuthentication(const json::object& o, Device& device) {
  const json::value* v = findMember(o, "authentication");
  if (v == nullptr || v->is_null()) return Status::ok();
  if (!v->is_object()) return formatError("authentication", "an object");
  const json::object& auth = v->get_object();
  std::string type;
  IOTHUB_RETURN_IF_ERROR(readString(auth, "type", type));
  if (!type.empty()) {
    auto parsed = parseAuthenticationType(type);
    if (!parsed) return formatError("authentication.type", "sas, selfSigned, certificateAuthority or none");
    device.authentication_type = *parsed;
  }
  if (const json::value* keys = findMember(auth, "symmetricKey"); keys && !keys->is_null()) {
    if (!keys->is_object()) return formatError("authentication.symmetricKey", "an object");
    IOTHUB_RETURN_IF_ERROR(readString(keys->get_object(), "primaryKey", device.primary_key));
    IOTHUB_RETURN_IF_ERROR(readString(keys->get_object(), "secondaryKey", device.secondary_key));
  }
  if (const json::value* prints = findMember(auth, "x509Thumbprint"); prints && !prints->is_null()) {
    if (!prints->is_object()) return formatError("authentication.x509Thumbprint", "an object");
    IOTHUB_RETURN_IF_ERROR(
        readOptionalString(prints->get_object(), "primaryThumbprint", device.primary_thumbprint));
    IOTHUB_RETURN_IF_ERROR(readOptionalString(prints->get_object(), "secondaryThumbprint",
                                              device.secondary_thumbprint));
  }
  return Status::ok();
}

json::value optionalToJson(const std::optional<std::string>& v) {
  return v ? json::value(*v) : json::value(nullptr);
}

}  // namespace

std::string_view toString(DeviceStatus status) {
  return status == DeviceStatus::Enabled ? "enabled" : "disabled";
}

std::string_view toString(ConnectionState state) {
  return state == ConnectionState::Connected ? "Connected" : "Disconnected";
}

std::string_view toString(AuthenticationType type) {
  switch (type) {
    case AuthenticationType::Sas: return "sas";
    case AuthenticationType::SelfSigned: return "selfSigned";
    case AuthenticationType::CertificateAuthority: return "certificateAuthority";
    case AuthenticationType::None: return "none";
  }
  return "none";
}

std::optional<DeviceStatus> parseDeviceStatus(std::string_view text) {
  if (text == "enabled") return DeviceStatus::Enabled;
  if (text == "disabled") return DeviceStatus::Disabled;
  return std::nullopt;
}

Result<Device> Device::fromJson(const json::value& value) {
  if (!value.is_object()) return formatError("device", "a JSON object");
  const json::object& o = value.get_object();
  Device device;
  const json::string* id = findString(o, "deviceId");
  if (id == nullptr) return formatError("deviceId", "a string");
  device.device_id = std::string(*id);
  IOTHUB_RETURN_IF_ERROR(readString(o, "generationId", device.generation_id));
  IOTHUB_RETURN_IF_ERROR(readString(o, "etag", device.etag));

  std::string text;
  IOTHUB_RETURN_IF_ERROR(readString(o, "status", text));
  if (!text.empty()) {
    auto status = parseDeviceStatus(text);
    if (!status) return formatError("status", "enabled or disabled");
    device.status = *status;
  }
  IOTHUB_RETURN_IF_ERROR(readOptionalString(o, "statusReason", device.status_reason));
  text.clear();
  IOTHUB_RETURN_IF_ERROR(readString(o, "connectionState", text));
  if (!text.empty()) {
    auto state = parseConnectionState(text);
    if (!state) return formatError("connectionState", "Connected or Disconnected");
    device.connection_state = *state;
  }
  IOTHUB_RETURN_IF_ERROR(
      readString(o, "connectionStateUpdatedTime", device.connection_state_updated_time));
  IOTHUB_RETURN_IF_ERROR(readString(o, "statusUpdatedTime", device.status_updated_time));
  IOTHUB_RETURN_IF_ERROR(readString(o, "lastActivityTime", device.last_activity_time));
  IOTHUB_RETURN_IF_ERROR(readAuthentication(o, device));

  if (const json::value* count = findMember(o, "cloudToDeviceMessageCount");
      count && !count->is_null()) {
    if (count->is_int64()) {
      device.cloud_to_device_message_count = count->get_int64();
    } else if (count->is_uint64()) {
      device.cloud_to_device_message_count = static_cast<std::int64_t>(count->get_uint64());
    } else {
      return formatError("cloudToDeviceMessageCount", "an integer");
    }
  }
  if (const json::value* caps = findMember(o, "capabilities"); caps && !caps->is_null()) {
    if (!caps->is_object()) return formatError("capabilities", "an object");
    if (const json::value* edge = findMember(caps->get_object(), "iotEdge");
        edge && !edge->is_null()) {
      if (!edge->is_bool()) return formatError("capabilities.iotEdge", "a boolean");
      device.iot_edge = edge->get_bool();
    }
  }
  device.raw = o;
  return device;
}

json::object Device::toJson() const {
  json::object o = raw;
  o["deviceId"] = device_id;
  if (!etag.empty()) o["etag"] = etag;
  o["status"] = toString(status);
  if (status_reason) {
    o["statusReason"] = *status_reason;
  }

  // Node's _normalizeAuthentication: a type is always present, SAS devices always carry
  // both keys (empty = let the hub generate them).
  json::object auth;
  if (const json::object* previous = findObject(raw, "authentication")) auth = *previous;
  auth["type"] = toString(authentication_type);
  if (authentication_type == AuthenticationType::Sas) {
    auth["symmetricKey"] = json::object{{"primaryKey", primary_key}, {"secondaryKey", secondary_key}};
  } else if (primary_thumbprint || secondary_thumbprint) {
    auth["x509Thumbprint"] = json::object{{"primaryThumbprint", optionalToJson(primary_thumbprint)},
                                          {"secondaryThumbprint", optionalToJson(secondary_thumbprint)}};
  }
  o["authentication"] = std::move(auth);

  json::object capabilities;
  if (const json::object* previous = findObject(raw, "capabilities")) capabilities = *previous;
  capabilities["iotEdge"] = iot_edge;
  o["capabilities"] = std::move(capabilities);
  return o;
}

}  // namespace iothub::service
