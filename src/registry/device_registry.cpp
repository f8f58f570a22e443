#include "registry/device_registry.hpp"

#include <optional>
#include <set>

#include "common/encoding.hpp"

namespace iothub::registry {
namespace {

// .NET ticks (100 ns since 0001-01-01): Azure's generation ids are such decimal numbers.
constexpr std::int64_t kUnixEpochInTicks = 621355968000000000;

Status checkBodyId(std::string_view device_id, const DeviceSpec& spec) {
  IOTHUB_RETURN_IF_ERROR(validateDeviceId(device_id));
  if (spec.device_id && *spec.device_id != device_id) {
    return {ErrorCode::ArgumentInvalid,
            "deviceId in the body ('" + *spec.device_id + "') differs from the one in the path"};
  }
  return Status::ok();
}

Status checkEtag(const DeviceRecord& current, std::string_view if_match) {
  if (if_match == "*" || if_match == current.etag) return Status::ok();
  return {ErrorCode::PreconditionFailed,
          "The etag does not match the device's current etag " + current.etag};
}

Status deviceNotFound(std::string_view device_id) {
  return {ErrorCode::DeviceNotFound, "Device " + std::string(device_id) + " was not found"};
}

}  // namespace

json::object BulkResult::toJson() const {
  json::array errs;
  for (const auto& e : errors) {
    const ErrorInfo& info = errorInfo(e.code);
    errs.push_back(json::object{{"deviceId", e.device_id},
                                {"errorCode", info.azure_code},
                                {"errorStatus", e.message},
                                {"moduleId", nullptr},
                                {"operation", e.operation}});
  }
  return json::object{
      {"isSuccessful", isSuccessful()}, {"errors", std::move(errs)}, {"warnings", json::array{}}};
}

DeviceRegistry::DeviceRegistry(store::Store& store, Random& random, const Clock& clock,
                               ConnectionStates* connections)
    : store_(store), random_(random), clock_(clock), connections_(connections) {}

std::string DeviceRegistry::newEtag() {
  return base64Encode(std::to_string(random_.u64() % 4'000'000'000ULL));
}

DeviceRecord DeviceRegistry::newDevice(std::string_view device_id, const DeviceSpec& spec) {
  SystemTime now = clock_.now();
  DeviceRecord d;
  d.device_id = std::string(device_id);
  auto ticks =
      std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count() / 100;
  d.generation_id = std::to_string(ticks + kUnixEpochInTicks);
  d.etag = newEtag();
  d.status = spec.status;
  d.status_reason = spec.status_reason;
  d.status_updated_time = now;
  d.auth_type = spec.auth_type;
  if (spec.auth_type == store::AuthType::Sas) {
    d.primary_key = spec.primary_key.empty() ? random_.symmetricKey() : spec.primary_key;
    d.secondary_key = spec.secondary_key.empty() ? random_.symmetricKey() : spec.secondary_key;
  }
  d.primary_thumbprint = spec.primary_thumbprint;
  d.secondary_thumbprint = spec.secondary_thumbprint;
  d.iot_edge = spec.iot_edge;
  return d;
}

Result<DeviceRecord> DeviceRegistry::create(std::string_view device_id, const DeviceSpec& spec) {
  IOTHUB_RETURN_IF_ERROR(checkBodyId(device_id, spec));
  DeviceRecord device = newDevice(device_id, spec);
  store::TwinRecord twin;
  twin.device_id = device.device_id;
  Status s = store_.registry().createDevice(device, twin);
  if (!s) return s;
  return device;
}

store::DeviceMutation DeviceRegistry::updateMutation(const DeviceSpec& spec, std::string if_match) {
  // Keys for a device switching to SAS without keys of its own.
  return [spec, if_match = std::move(if_match), now = clock_.now(), etag = newEtag(),
          fresh_primary = random_.symmetricKey(), fresh_secondary = random_.symmetricKey()](
             const DeviceRecord& current) -> Result<DeviceRecord> {
    IOTHUB_RETURN_IF_ERROR(checkEtag(current, if_match));
    DeviceRecord next = current;
    next.etag = etag;
    if (next.status != spec.status) next.status_updated_time = now;
    next.status = spec.status;
    next.status_reason = spec.status_reason;
    next.auth_type = spec.auth_type;
    if (spec.auth_type == store::AuthType::Sas) {
      if (!spec.primary_key.empty()) {
        next.primary_key = spec.primary_key;
        next.secondary_key = spec.secondary_key;
      } else if (next.primary_key.empty()) {
        next.primary_key = fresh_primary;
        next.secondary_key = fresh_secondary;
      }
    } else {
      next.primary_key.clear();
      next.secondary_key.clear();
    }
    next.primary_thumbprint = spec.primary_thumbprint;
    next.secondary_thumbprint = spec.secondary_thumbprint;
    next.iot_edge = spec.iot_edge;
    return next;
  };
}

Result<DeviceRecord> DeviceRegistry::update(std::string_view device_id, const DeviceSpec& spec,
                                            std::string_view if_match) {
  IOTHUB_RETURN_IF_ERROR(checkBodyId(device_id, spec));
  auto result =
      store_.registry().updateDevice(device_id, updateMutation(spec, std::string(if_match)));
  if (!result && result.code() == ErrorCode::DeviceNotFound) return deviceNotFound(device_id);
  if (result && result->status == store::DeviceStatus::Disabled && connections_ != nullptr) {
    connections_->disconnect(device_id, "the device was disabled");
  }
  return result;
}

Result<DeviceRecord> DeviceRegistry::get(std::string_view device_id) {
  auto result = store_.registry().getDevice(device_id);
  if (!result && result.code() == ErrorCode::DeviceNotFound) return deviceNotFound(device_id);
  return result;
}

Status DeviceRegistry::remove(std::string_view device_id, std::string_view if_match) {
  Status s = store_.registry().deleteDevice(
      device_id, [&](const DeviceRecord& current) { return checkEtag(current, if_match); });
  if (s.code() == ErrorCode::DeviceNotFound) return deviceNotFound(device_id);
  if (!s) return s;
  // The store deleted the device's persistent MQTT session in the same transaction; a device
  // created later under the same id starts clean.
  if (connections_ != nullptr) connections_->disconnect(device_id, "the device was deleted");
  return Status::ok();
}

Result<std::vector<DeviceRecord>> DeviceRegistry::list(std::size_t top) {
  if (top == 0 || top > kMaxListSize) {
    return Status(ErrorCode::ArgumentInvalid,
                  "top must be between 1 and " + std::to_string(kMaxListSize));
  }
  return store_.registry().listDevices("", top);
}

Result<store::DeviceStatistics> DeviceRegistry::statistics() {
  return store_.registry().deviceStatistics();
}

Result<BulkResult> DeviceRegistry::bulk(const json::value& body) {
  const json::array* entries = body.if_array();
  if (entries == nullptr) {
    return Status(ErrorCode::IotHubFormatError, "The bulk request must be a JSON array of devices");
  }
  if (entries->empty() || entries->size() > kMaxBulkSize) {
    return Status(ErrorCode::ArgumentInvalid,
                  "A bulk request carries 1 to " + std::to_string(kMaxBulkSize) + " devices");
  }
  enum class Mode { Create, Update, UpdateIfMatch, Delete, DeleteIfMatch };
  struct Op {
    std::string id;
    Mode mode;
    DeviceSpec spec;
  };
  std::vector<Op> ops;
  std::set<std::string, std::less<>> seen;
  for (std::size_t i = 0; i < entries->size(); ++i) {
    std::string where = "entry " + std::to_string(i) + ": ";
    const json::object* o = (*entries)[i].if_object();
    if (o == nullptr) return Status(ErrorCode::IotHubFormatError, where + "must be a JSON object");
    const json::string* id = findString(*o, "id");
    if (id == nullptr) id = findString(*o, "deviceId");
    if (id == nullptr) return Status(ErrorCode::ArgumentInvalid, where + "id is required");
    Status id_ok = validateDeviceId(*id);
    if (!id_ok) return Status(id_ok.code(), where + id_ok.message());
    if (!seen.insert(std::string(*id)).second) {
      return Status(ErrorCode::DeviceDefinedMultipleTimes,
                    "Device " + std::string(*id) + " appears more than once in the request");
    }
    const json::string* mode_text = findString(*o, "importMode");
    if (mode_text == nullptr)
      return Status(ErrorCode::ArgumentInvalid, where + "importMode is required");
    Mode mode;
    if (equalsIgnoreCase(*mode_text, "create"))
      mode = Mode::Create;
    else if (equalsIgnoreCase(*mode_text, "update"))
      mode = Mode::Update;
    else if (equalsIgnoreCase(*mode_text, "updateIfMatchETag"))
      mode = Mode::UpdateIfMatch;
    else if (equalsIgnoreCase(*mode_text, "delete"))
      mode = Mode::Delete;
    else if (equalsIgnoreCase(*mode_text, "deleteIfMatchETag"))
      mode = Mode::DeleteIfMatch;
    else
      return Status(ErrorCode::ArgumentInvalid,
                    where + "unknown importMode '" + std::string(*mode_text) + "'");
    // The entry's "id" is the device id; a "deviceId" member, if any, must agree.
    auto spec = parseDeviceSpec((*entries)[i]);
    if (!spec) return Status(spec.code(), where + spec.status().message());
    if ((mode == Mode::UpdateIfMatch || mode == Mode::DeleteIfMatch) &&
        (!spec->etag || spec->etag->empty())) {
      return Status(ErrorCode::ArgumentInvalid,
                    where + "etag is required for " + std::string(*mode_text));
    }
    ops.push_back({std::string(*id), mode, std::move(*spec)});
  }

  // Every entry in one store write (one transaction, one group commit) instead of one
  // per entry: each entry still succeeds or fails on its own (docs/decisions.md).
  std::vector<store::DeviceWrite> writes;
  std::vector<std::optional<Status>> refused(ops.size());  // refused before the store
  writes.reserve(ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    Status body_ok = checkBodyId(op.id, op.spec);
    if (!body_ok) {
      refused[i] = std::move(body_ok);
      continue;
    }
    store::DeviceWrite write;
    write.device_id = op.id;
    switch (op.mode) {
      case Mode::Create:
        write.kind = store::DeviceWrite::Kind::Create;
        write.device = newDevice(op.id, op.spec);
        write.twin.device_id = op.id;
        break;
      case Mode::Update:
      case Mode::UpdateIfMatch:
        write.kind = store::DeviceWrite::Kind::Update;
        write.mutate = updateMutation(op.spec, op.mode == Mode::Update ? "*" : *op.spec.etag);
        break;
      case Mode::Delete:
      case Mode::DeleteIfMatch: {
        write.kind = store::DeviceWrite::Kind::Delete;
        std::string if_match = op.mode == Mode::Delete ? "*" : *op.spec.etag;
        write.precondition = [if_match = std::move(if_match)](const DeviceRecord& current) {
          return checkEtag(current, if_match);
        };
        break;
      }
    }
    writes.push_back(std::move(write));
  }
  std::vector<Result<DeviceRecord>> written = store_.registry().writeDevices(writes);
  IOTHUB_CHECK(written.size() == writes.size(), "writeDevices returns one result per write");

  BulkResult result;
  std::size_t next_write = 0;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const char* operation = op.mode == Mode::Create                                     ? "create"
                            : op.mode == Mode::Update || op.mode == Mode::UpdateIfMatch ? "update"
                                                                                        : "delete";
    Status s;
    if (refused[i]) {
      s = *refused[i];
    } else {
      const Result<DeviceRecord>& r = written[next_write++];
      s = r.status();
      if (s.code() == ErrorCode::DeviceNotFound && op.mode != Mode::Create)
        s = deviceNotFound(op.id);
      if (r && connections_ != nullptr) {
        if (op.mode == Mode::Delete || op.mode == Mode::DeleteIfMatch) {
          // The store deleted the device's persistent MQTT session with it.
          connections_->disconnect(op.id, "the device was deleted");
        } else if (op.mode != Mode::Create && r->status == store::DeviceStatus::Disabled) {
          connections_->disconnect(op.id, "the device was disabled");
        }
      }
    }
    if (!s) result.errors.push_back({op.id, s.code(), s.message(), operation});
  }
  return result;
}

}  // namespace iothub::registry
