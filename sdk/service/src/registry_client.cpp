#include "iothub/service/registry_client.hpp"

#include "auth/connection_string.hpp"
#include "request_building.hpp"

namespace iothub::service {
namespace {

// Bulk requests carry 1..100 devices (docs/protocol.md §5.5).
constexpr std::size_t kMaxBulkOperations = 100;

std::string_view importModeName(BulkImportMode mode) {
  // The exact spellings the Node SDK sends.
  switch (mode) {
    case BulkImportMode::Create: return "create";
    case BulkImportMode::Update: return "Update";
    case BulkImportMode::UpdateIfMatchETag: return "UpdateIfMatchETag";
    case BulkImportMode::Delete: return "Delete";
    case BulkImportMode::DeleteIfMatchETag: return "DeleteIfMatchETag";
  }
  return "create";
}

std::string stringMember(const json::object& o, std::string_view key) {
  const json::string* s = findString(o, key);
  return s ? std::string(*s) : std::string();
}

Result<std::int64_t> integerMember(const json::object& o, std::string_view key) {
  const json::value* v = findMember(o, key);
  if (v != nullptr && v->is_int64()) return v->get_int64();
  if (v != nullptr && v->is_uint64()) return static_cast<std::int64_t>(v->get_uint64());
  return Status(ErrorCode::IotHubFormatError,
                "Registry statistics: '" + std::string(key) + "' must be an integer");
}

Result<BulkRegistryResult> parseBulkResult(const json::value& value) {
  const json::object* o = value.if_object();
  const json::value* ok = o ? findMember(*o, "isSuccessful") : nullptr;
  if (ok == nullptr || !ok->is_bool()) {
    return Status(ErrorCode::IotHubFormatError,
                  "Bulk registry result: expected an object with a boolean 'isSuccessful'");
  }
  BulkRegistryResult result;
  result.is_successful = ok->get_bool();
  if (const json::value* errors = findMember(*o, "errors"); errors && errors->is_array()) {
    for (const json::value& e : errors->get_array()) {
      if (!e.is_object()) continue;
      const json::object& eo = e.get_object();
      result.errors.push_back(BulkError{stringMember(eo, "deviceId"), stringMember(eo, "moduleId"),
                                        stringMember(eo, "errorCode"),
                                        stringMember(eo, "errorStatus"),
                                        stringMember(eo, "operation")});
    }
  }
  if (const json::value* warnings = findMember(*o, "warnings"); warnings && warnings->is_array()) {
    for (const json::value& w : warnings->get_array()) {
      if (!w.is_object()) continue;
      const json::object& wo = w.get_object();
      result.warnings.push_back(BulkWarning{stringMember(wo, "deviceId"),
                                            stringMember(wo, "warningCode"),
                                            stringMember(wo, "warningStatus")});
    }
  }
  return result;
}

}  // namespace

RegistryClient::RegistryClient(std::shared_ptr<HttpTransport> transport)
    : transport_(std::move(transport)) {}

Result<RegistryClient> RegistryClient::fromConnectionString(std::string_view connection_string,
                                                            ServiceClientOptions options) {
  auto parsed = auth::ServiceConnectionString::parse(connection_string);
  if (!parsed) return parsed.status();
  auto transport = HttpTransport::create(std::move(*parsed), std::move(options));
  if (!transport) return transport.status();
  return RegistryClient(std::shared_ptr<HttpTransport>(std::move(*transport)));
}

Result<Device> RegistryClient::create(const Device& device) {
  HttpRequest request;
  request.method = "PUT";
  request.path = detail::devicePath(device.device_id);
  request.body = json::serialize(device.toJson());
  auto body = transport_->sendJson(request);
  if (!body) return body.status();
  return Device::fromJson(*body);
}

Result<Device> RegistryClient::get(std::string_view device_id) {
  HttpRequest request;
  request.path = detail::devicePath(device_id);
  auto body = transport_->sendJson(request);
  if (!body) return body.status();
  return Device::fromJson(*body);
}

Result<std::vector<Device>> RegistryClient::list() {
  HttpRequest request;
  request.path = "/devices/";
  auto body = transport_->sendJson(request);
  if (!body) return body.status();
  if (!body->is_array()) {
    return Status(ErrorCode::IotHubFormatError, "Device list: expected a JSON array");
  }
  std::vector<Device> devices;
  devices.reserve(body->get_array().size());
  for (const json::value& item : body->get_array()) {
    auto device = Device::fromJson(item);
    if (!device) return device.status();
    devices.push_back(std::move(*device));
  }
  return devices;
}

Result<Device> RegistryClient::update(const Device& device, std::string_view etag) {
  HttpRequest request;
  request.method = "PUT";
  request.path = detail::devicePath(device.device_id);
  request.if_match = std::string(etag);
  request.body = json::serialize(device.toJson());
  auto body = transport_->sendJson(request);
  if (!body) return body.status();
  return Device::fromJson(*body);
}

Status RegistryClient::remove(std::string_view device_id, std::string_view etag) {
  HttpRequest request;
  request.method = "DELETE";
  request.path = detail::devicePath(device_id);
  request.if_match = std::string(etag);
  auto body = transport_->sendJson(request);
  return body.status();
}

Result<BulkRegistryResult> RegistryClient::bulk(const std::vector<BulkOperation>& operations) {
  if (operations.empty() || operations.size() > kMaxBulkOperations) {
    return Status(ErrorCode::ArgumentInvalid, "A bulk registry operation takes 1 to " +
                                                  std::to_string(kMaxBulkOperations) + " devices");
  }
  json::array entries;
  for (const BulkOperation& op : operations) {
    json::object entry;
    bool is_delete = op.mode == BulkImportMode::Delete || op.mode == BulkImportMode::DeleteIfMatchETag;
    if (is_delete) {
      if (!op.device.etag.empty()) entry["etag"] = op.device.etag;
    } else {
      entry = op.device.toJson();
      entry.erase("deviceId");
    }
    // Node spreads the device, renames deviceId to id and adds importMode
    // (registry.js _processBulkDevices); the etag travels as the device's "etag".
    entry["id"] = op.device.device_id;
    entry["importMode"] = importModeName(op.mode);
    entries.push_back(std::move(entry));
  }
  HttpRequest request;
  request.method = "POST";
  request.path = "/devices";
  request.body = json::serialize(entries);
  auto response = transport_->send(request);
  if (!response) return response.status();
  // Azure answers a partly failed batch with 400 BulkRegistryOperationFailure and the
  // per-device result as the body; report that as a result, not as an error.
  if (response->status < 300 || response->status == 400) {
    auto parsed = parseJson(response->body);
    if (parsed && parsed->is_object() && findMember(parsed->get_object(), "isSuccessful")) {
      return parseBulkResult(*parsed);
    }
    if (response->status < 300) {
      return Status(ErrorCode::IotHubFormatError,
                    "Bulk registry result: expected a JSON object with 'isSuccessful'");
    }
  }
  return statusFromErrorResponse(*response);
}

Result<RegistryStatistics> RegistryClient::statistics() {
  HttpRequest request;
  request.path = "/statistics/devices";
  auto body = transport_->sendJson(request);
  if (!body) return body.status();
  if (!body->is_object()) {
    return Status(ErrorCode::IotHubFormatError, "Registry statistics: expected a JSON object");
  }
  const json::object& o = body->get_object();
  RegistryStatistics stats;
  auto total = integerMember(o, "totalDeviceCount");
  if (!total) return total.status();
  auto enabled = integerMember(o, "enabledDeviceCount");
  if (!enabled) return enabled.status();
  auto disabled = integerMember(o, "disabledDeviceCount");
  if (!disabled) return disabled.status();
  stats.total_device_count = *total;
  stats.enabled_device_count = *enabled;
  stats.disabled_device_count = *disabled;
  stats.raw = o;
  return stats;
}

Result<std::string> RegistryClient::deviceConnectionString(const Device& device,
                                                           std::string_view host_name) {
  auth::DeviceConnectionString cs;
  cs.host_name = std::string(host_name);
  cs.device_id = device.device_id;
  if (device.authentication_type == AuthenticationType::SelfSigned ||
      device.authentication_type == AuthenticationType::CertificateAuthority) {
    cs.x509 = true;
  } else if (!device.primary_key.empty()) {
    cs.shared_access_key = device.primary_key;
  } else {
    return Status(ErrorCode::ArgumentInvalid,
                  "Device '" + device.device_id + "' has no primary key to put in a connection string");
  }
  return cs.toString();
}

}  // namespace iothub::service
