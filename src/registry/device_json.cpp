#include "registry/device_json.hpp"

#include <cctype>

#include "common/encoding.hpp"
#include "common/time_format.hpp"

namespace iothub::registry {
namespace {

constexpr std::string_view kDeviceIdPunctuation = "-.+%_#*?!(),=@$':;";

Status invalid(std::string message) { return {ErrorCode::ArgumentInvalid, std::move(message)}; }

// Reads an optional string member: absent or null → nullopt; other types → error.
Result<std::optional<std::string>> optionalString(const json::object& o, std::string_view key,
                                                  std::string_view where) {
  const json::value* v = findMember(o, key);
  if (v == nullptr || v->is_null()) return std::optional<std::string>{};
  if (!v->is_string()) {
    return invalid(std::string(where) + std::string(key) + " must be a string");
  }
  return std::optional<std::string>{std::string(v->get_string())};
}

Status validateKey(const std::string& key, std::string_view name) {
  if (key.empty()) return Status::ok();
  auto bytes = base64Decode(key);
  if (!bytes || bytes->size() < 16 || bytes->size() > 64) {
    return invalid("authentication.symmetricKey." + std::string(name) +
                   " must be base64 of 16 to 64 bytes");
  }
  return Status::ok();
}

Status validateThumbprint(const std::optional<std::string>& thumbprint, std::string_view name) {
  if (!thumbprint || thumbprint->empty()) return Status::ok();
  bool hex = true;
  for (char c : *thumbprint) hex = hex && std::isxdigit(static_cast<unsigned char>(c));
  if (!hex || (thumbprint->size() != 40 && thumbprint->size() != 64)) {
    return invalid("authentication.x509Thumbprint." + std::string(name) +
                   " must be 40 or 64 hexadecimal digits");
  }
  return Status::ok();
}

json::value timeOrNever(SystemTime t) {
  if (t.time_since_epoch().count() == 0) return json::string(kNeverTimestamp);
  return json::string(formatTimestamp(t));
}

json::value optionalToJson(const std::optional<std::string>& s) {
  if (!s) return nullptr;
  return json::string(*s);
}

}  // namespace

Status validateDeviceId(std::string_view device_id) {
  if (device_id.empty()) return invalid("deviceId must not be empty");
  if (device_id.size() > 128) return invalid("deviceId must be at most 128 characters");
  for (char c : device_id) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && std::isalnum(u)) continue;
    if (kDeviceIdPunctuation.find(c) != std::string_view::npos) continue;
    std::string shown = (u >= 0x20 && u < 0x7F) ? std::string(1, c) : "0x" + hexEncode({&c, 1});
    return invalid("deviceId contains the character '" + shown +
                   "'; allowed are ASCII letters, digits and " + std::string(kDeviceIdPunctuation));
  }
  return Status::ok();
}

Result<DeviceSpec> parseDeviceSpec(const json::value& body) {
  const json::object* o = body.if_object();
  if (o == nullptr) return Status(ErrorCode::IotHubFormatError, "The device must be a JSON object");
  DeviceSpec spec;

  auto id = optionalString(*o, "deviceId", "");
  if (!id) return id.status();
  spec.device_id = std::move(*id);

  auto status = optionalString(*o, "status", "");
  if (!status) return status.status();
  if (*status) {
    if (equalsIgnoreCase(**status, "enabled")) {
      spec.status = store::DeviceStatus::Enabled;
    } else if (equalsIgnoreCase(**status, "disabled")) {
      spec.status = store::DeviceStatus::Disabled;
    } else {
      return invalid("status must be 'enabled' or 'disabled'");
    }
  }

  auto reason = optionalString(*o, "statusReason", "");
  if (!reason) return reason.status();
  if (*reason && (*reason)->size() > 128) return invalid("statusReason must be at most 128 characters");
  spec.status_reason = std::move(*reason);

  auto etag = optionalString(*o, "etag", "");
  if (!etag) return etag.status();
  spec.etag = std::move(*etag);

  if (const json::value* caps = findMember(*o, "capabilities"); caps && !caps->is_null()) {
    if (!caps->is_object()) return invalid("capabilities must be an object");
    if (const json::value* edge = findMember(caps->get_object(), "iotEdge"); edge && !edge->is_null()) {
      if (!edge->is_bool()) return invalid("capabilities.iotEdge must be a boolean");
      spec.iot_edge = edge->get_bool();
    }
  }

  const json::value* auth_value = findMember(*o, "authentication");
  if (auth_value == nullptr || auth_value->is_null()) return spec;
  if (!auth_value->is_object()) return invalid("authentication must be an object");
  const json::object& auth = auth_value->get_object();

  if (const json::value* sym = findMember(auth, "symmetricKey"); sym && !sym->is_null()) {
    if (!sym->is_object()) return invalid("authentication.symmetricKey must be an object");
    auto primary = optionalString(sym->get_object(), "primaryKey", "authentication.symmetricKey.");
    if (!primary) return primary.status();
    auto secondary = optionalString(sym->get_object(), "secondaryKey", "authentication.symmetricKey.");
    if (!secondary) return secondary.status();
    spec.primary_key = primary->value_or("");
    spec.secondary_key = secondary->value_or("");
    IOTHUB_RETURN_IF_ERROR(validateKey(spec.primary_key, "primaryKey"));
    IOTHUB_RETURN_IF_ERROR(validateKey(spec.secondary_key, "secondaryKey"));
    if (spec.primary_key.empty() != spec.secondary_key.empty()) {
      return invalid("authentication.symmetricKey: set both primaryKey and secondaryKey, or neither");
    }
  }
  if (const json::value* x509 = findMember(auth, "x509Thumbprint"); x509 && !x509->is_null()) {
    if (!x509->is_object()) return invalid("authentication.x509Thumbprint must be an object");
    auto primary = optionalString(x509->get_object(), "primaryThumbprint", "authentication.x509Thumbprint.");
    if (!primary) return primary.status();
    auto secondary = optionalString(x509->get_object(), "secondaryThumbprint", "authentication.x509Thumbprint.");
    if (!secondary) return secondary.status();
    spec.primary_thumbprint = std::move(*primary);
    spec.secondary_thumbprint = std::move(*secondary);
    IOTHUB_RETURN_IF_ERROR(validateThumbprint(spec.primary_thumbprint, "primaryThumbprint"));
    IOTHUB_RETURN_IF_ERROR(validateThumbprint(spec.secondary_thumbprint, "secondaryThumbprint"));
  }

  auto type = optionalString(auth, "type", "authentication.");
  if (!type) return type.status();
  if (!*type) {
    // The Node SDK's rule (docs/protocol.md §5.4): a thumbprint means selfSigned, else sas.
    bool has_thumbprint = (spec.primary_thumbprint && !spec.primary_thumbprint->empty()) ||
                          (spec.secondary_thumbprint && !spec.secondary_thumbprint->empty());
    spec.auth_type = has_thumbprint ? store::AuthType::SelfSigned : store::AuthType::Sas;
  } else if (equalsIgnoreCase(**type, "sas")) {
    spec.auth_type = store::AuthType::Sas;
  } else if (equalsIgnoreCase(**type, "selfSigned")) {
    spec.auth_type = store::AuthType::SelfSigned;
  } else if (equalsIgnoreCase(**type, "certificateAuthority")) {
    spec.auth_type = store::AuthType::CertificateAuthority;
  } else if (equalsIgnoreCase(**type, "none")) {
    spec.auth_type = store::AuthType::None;
  } else {
    return invalid("authentication.type must be one of sas, selfSigned, certificateAuthority, none");
  }
  if (spec.auth_type == store::AuthType::SelfSigned &&
      (!spec.primary_thumbprint || spec.primary_thumbprint->empty())) {
    return invalid("authentication.x509Thumbprint.primaryThumbprint is required for selfSigned devices");
  }
  return spec;
}

const char* deviceStatusName(store::DeviceStatus status) {
  return status == store::DeviceStatus::Enabled ? "enabled" : "disabled";
}

const char* authTypeName(store::AuthType type) {
  switch (type) {
    case store::AuthType::Sas: return "sas";
    case store::AuthType::SelfSigned: return "selfSigned";
    case store::AuthType::CertificateAuthority: return "certificateAuthority";
    case store::AuthType::None: return "none";
  }
  return "none";
}

json::object deviceToJson(const DeviceRecord& d, bool connected) {
  json::object o;
  o["deviceId"] = d.device_id;
  o["generationId"] = d.generation_id;
  o["etag"] = d.etag;
  o["connectionState"] = connected ? "Connected" : "Disconnected";
  o["status"] = deviceStatusName(d.status);
  o["statusReason"] = optionalToJson(d.status_reason);
  o["connectionStateUpdatedTime"] = timeOrNever(d.connection_state_updated_time);
  o["statusUpdatedTime"] = timeOrNever(d.status_updated_time);
  o["lastActivityTime"] = timeOrNever(d.last_activity_time);
  o["cloudToDeviceMessageCount"] = d.cloud_to_device_message_count;
  json::object sym;
  sym["primaryKey"] = d.auth_type == store::AuthType::Sas ? json::value(d.primary_key) : nullptr;
  sym["secondaryKey"] = d.auth_type == store::AuthType::Sas ? json::value(d.secondary_key) : nullptr;
  json::object thumb;
  thumb["primaryThumbprint"] = optionalToJson(d.primary_thumbprint);
  thumb["secondaryThumbprint"] = optionalToJson(d.secondary_thumbprint);
  json::object auth;
  auth["symmetricKey"] = std::move(sym);
  auth["x509Thumbprint"] = std::move(thumb);
  auth["type"] = authTypeName(d.auth_type);
  o["authentication"] = std::move(auth);
  o["capabilities"] = json::object{{"iotEdge", d.iot_edge}};
  o["deviceScope"] = optionalToJson(d.device_scope);
  json::array scopes;
  for (const auto& s : d.parent_scopes) scopes.emplace_back(s);
  o["parentScopes"] = std::move(scopes);
  return o;
}

}  // namespace iothub::registry
