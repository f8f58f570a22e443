#include "twin/twin_service.hpp"

#include "common/time_format.hpp"
#include "twin/twin_json.hpp"

namespace iothub::twin {

TwinService::TwinService(store::Store& store, const Clock& clock,
                         const registry::ConnectionStates* connections,
                         DesiredChangeListener* listener)
    : store_(store), clock_(clock), connections_(connections), listener_(listener) {}

std::mutex& TwinService::orderingLock(std::string_view device_id) {
  return ordering_locks_[std::hash<std::string_view>{}(device_id) % kOrderingLocks];
}

Result<json::object> TwinService::serviceView(const store::TwinRecord& twin) {
  auto device = store_.registry().getDevice(twin.device_id);
  if (!device) return device.status();
  bool connected = connections_ != nullptr && connections_->isConnected(twin.device_id);
  return serviceTwinJson(*device, twin, connected);
}

Result<json::object> TwinService::getTwin(std::string_view device_id) {
  auto twin = store_.twins().getTwin(device_id);
  if (!twin) return twin.status();
  return serviceView(*twin);
}

Result<json::object> TwinService::update(std::string_view device_id, std::string_view if_match,
                                         bool orders_desired, const Change& change,
                                         const store::DeviceJobWrite* job_row) {
  std::unique_lock<std::mutex> ordering;
  if (orders_desired && listener_ != nullptr) ordering = std::unique_lock(orderingLock(device_id));

  std::optional<json::object> notification;
  auto mutate = [&](const store::TwinRecord& current) -> Result<store::TwinRecord> {
    notification.reset();
    IOTHUB_RETURN_IF_ERROR(checkTwinEtag(current, if_match));
    auto next = change(current);
    if (!next) return next.status();
    notification = std::move(next->desired_patch);
    return std::move(next->twin);
  };
  auto updated = job_row != nullptr ? store_.twins().updateTwinForJob(device_id, mutate, *job_row)
                                    : store_.twins().updateTwin(device_id, mutate);
  if (!updated) return updated.status();
  counters_.service_updates.fetch_add(1, std::memory_order_relaxed);

  if (notification && listener_ != nullptr) {
    listener_->onDesiredChanged(
        DesiredChange{std::string(device_id), std::move(*notification), updated->desired_version});
  }
  if (ordering.owns_lock()) ordering.unlock();
  return serviceView(*updated);
}

Result<json::object> TwinService::applyPatch(std::string_view device_id, const TwinPatch& patch,
                                             std::string_view if_match,
                                             const store::DeviceJobWrite* job_row) {
  std::string timestamp = formatTimestamp(clock_.now());
  return update(
      device_id, if_match, patch.desired.writes(),
      [&](const store::TwinRecord& current) {
        return applyServicePatch(current, patch, timestamp);
      },
      job_row);
}

Result<json::object> TwinService::patchTwin(std::string_view device_id, const json::value& body,
                                            std::string_view if_match) {
  auto parsed = parseServicePatch(body);
  if (!parsed) return parsed.status();
  return applyPatch(device_id, *parsed, if_match);
}

Result<json::object> TwinService::replaceTwin(std::string_view device_id, const json::value& body,
                                              std::string_view if_match) {
  auto replacement = parseServiceReplacement(body);
  if (!replacement) return replacement.status();
  std::string timestamp = formatTimestamp(clock_.now());
  return update(device_id, if_match, true, [&](const store::TwinRecord& current) {
    return applyReplacement(current, *replacement, timestamp);
  });
}

Result<json::object> TwinService::deviceGetTwin(std::string_view device_id) {
  auto twin = store_.twins().getTwin(device_id);
  if (!twin) return twin.status();
  return deviceTwinJson(*twin);
}

Result<std::int64_t> TwinService::devicePatchReported(std::string_view device_id,
                                                      const json::value& body) {
  auto parsed = parseReportedPatch(body);
  if (!parsed) return parsed.status();
  if (!parsed->writes()) {
    auto twin = store_.twins().getTwin(device_id);
    if (!twin) return twin.status();
    return twin->reported_version;
  }
  std::string timestamp = formatTimestamp(clock_.now());
  auto updated = store_.twins().updateTwin(device_id, [&](const store::TwinRecord& current) {
    return applyReportedPatch(current, *parsed, timestamp);
  });
  if (!updated) return updated.status();
  counters_.reported_updates.fetch_add(1, std::memory_order_relaxed);
  return updated->reported_version;
}

Result<json::object> TwinService::applyJobUpdate(std::string_view device_id,
                                                 const json::object& update_twin,
                                                 const store::DeviceJobWrite* outcome) {
  std::string if_match;
  if (const json::value* etag = findMember(update_twin, "etag");
      etag != nullptr && !etag->is_null()) {
    if (!etag->is_string())
      return Status(ErrorCode::ArgumentInvalid, "updateTwin.etag must be a string");
    if_match = std::string(etag->get_string());
  }
  auto parsed = parseServicePatch(update_twin);
  if (!parsed) return parsed.status();
  return applyPatch(device_id, *parsed, if_match, outcome);
}

}  // namespace iothub::twin
