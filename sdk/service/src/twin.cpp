#include "iothub/service/twin.hpp"

namespace iothub::service {
namespace {

Status formatError(std::string_view field, std::string_view expected) {
  return Status(ErrorCode::IotHubFormatError,
                "Twin JSON: '" + std::string(field) + "' must be " + std::string(expected));
}

// An optional object member; JSON null counts as absent.
Status readObject(const json::object& o, std::string_view key, std::string_view field,
                  json::object& out) {
  const json::value* v = findMember(o, key);
  if (v == nullptr || v->is_null()) return Status::ok();
  if (!v->is_object()) return formatError(field, "an object");
  out = v->get_object();
  return Status::ok();
}

}  // namespace

Result<Twin> Twin::fromJson(const json::value& value) {
  if (!value.is_object()) return formatError("twin", "a JSON object");
  const json::object& o = value.get_object();
  Twin twin;
  const json::string* id = findString(o, "deviceId");
  if (id == nullptr) return formatError("deviceId", "a string");
  twin.device_id = std::string(*id);

  if (const json::value* etag = findMember(o, "etag"); etag && !etag->is_null()) {
    if (!etag->is_string()) return formatError("etag", "a string");
    twin.etag = std::string(etag->get_string());
  }
  if (const json::value* version = findMember(o, "version"); version && !version->is_null()) {
    if (version->is_int64()) {
      twin.version = version->get_int64();
    } else if (version->is_uint64()) {
      twin.version = static_cast<std::int64_t>(version->get_uint64());
    } else {
      return formatError("version", "an integer");
    }
  }
  IOTHUB_RETURN_IF_ERROR(readObject(o, "tags", "tags", twin.tags));
  json::object properties;
  IOTHUB_RETURN_IF_ERROR(readObject(o, "properties", "properties", properties));
  IOTHUB_RETURN_IF_ERROR(readObject(properties, "desired", "properties.desired", twin.desired));
  IOTHUB_RETURN_IF_ERROR(readObject(properties, "reported", "properties.reported", twin.reported));
  twin.raw = o;
  return twin;
}

}  // namespace iothub::service
