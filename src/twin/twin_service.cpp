#include "twin/twin_service.hpp"


#include "common/time_format.hpp"
#include "twin/twin_json.hpp"

namespace iothub::twin {
namespace {

// The If-Match of a job's updateTwin: its "etag" member, empty when absent or null.
Result<std::string> jobEtag(const json::object& update_twin) {
  const json::value* etag = findMember(update_twin, "etag");
  if (etag == nullptr || etag->is_null()) return std::string();
  if (!etag->is_string()) {
    return Status(ErrorCode::ArgumentInvalid, "updateTwin.etag must be a string");
  }
  return std::string(etag->get_string());
}

}  // namespace

TwinService::TwinService(store::Store& store, const Clock& clock,
                         const registry::ConnectionStates* connections,
                         DesiredChangeListener* listener)
    : store_(store), clock_(clock), connections_(connections), listener_(listener) {}

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

Result<store::TwinRecord> TwinService::update(std::string_view device_id, std::string_view if_match,
                                              bool orders_desired, const Change& change,
                                              const store::DeviceJobWrite* job_row) {
  KeyedLocks::Guard ordering;
  if (orders_desired && listener_ != nullptr) ordering = ordering_locks_.lock(device_id);

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
  return updated;
}

Result<store::TwinRecord> TwinService::applyPatch(std::string_view device_id,
                                                  const TwinPatch& patch, std::string_view if_match,
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
  auto updated = applyPatch(device_id, *parsed, if_match);
  if (!updated) return updated.status();
  return serviceView(*updated);
}

Result<json::object> TwinService::replaceTwin(std::string_view device_id, const json::value& body,
                                              std::string_view if_match) {
  auto replacement = parseServiceReplacement(body);
  if (!replacement) return replacement.status();
  std::string timestamp = formatTimestamp(clock_.now());
  auto updated = update(device_id, if_match, true, [&](const store::TwinRecord& current) {
    return applyReplacement(current, *replacement, timestamp);
  });
  if (!updated) return updated.status();
  return serviceView(*updated);
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

std::vector<Status> TwinService::applyJobUpdates(
    const std::vector<std::string>& device_ids, const json::object& update_twin,
    const std::vector<store::DeviceJobWrite>& outcomes) {
  std::vector<Status> statuses(device_ids.size(), Status::ok());
  if (outcomes.size() != device_ids.size()) {
    statuses.assign(device_ids.size(),
                    Status(ErrorCode::ServerError, "one outcome row per device is required"));
    return statuses;
  }
  auto etag = jobEtag(update_twin);
  if (!etag) {
    statuses.assign(device_ids.size(), etag.status());
    return statuses;
  }
  const std::string& if_match = *etag;
  auto patch = parseServicePatch(update_twin);
  if (!patch) {
    statuses.assign(device_ids.size(), patch.status());
    return statuses;
  }
  // The ordering locks of every device of the batch, taken all at once (no deadlock with
  // another batch or a single update), held until the listener has been told.
  KeyedLocks::Guard ordering;
  if (patch->desired.writes() && listener_ != nullptr) {
    ordering = ordering_locks_.lockAll(device_ids);
  }
  std::string timestamp = formatTimestamp(clock_.now());
  std::vector<std::optional<json::object>> notifications(device_ids.size());
  std::vector<store::TwinJobUpdate> updates;
  updates.reserve(device_ids.size());
  for (std::size_t i = 0; i < device_ids.size(); ++i) {
    auto mutate = [&if_match, &patch, &timestamp, &notifications,
                   i](const store::TwinRecord& current) -> Result<store::TwinRecord> {
      notifications[i].reset();
      IOTHUB_RETURN_IF_ERROR(checkTwinEtag(current, if_match));
      auto next = applyServicePatch(current, *patch, timestamp);
      if (!next) return next.status();
      notifications[i] = std::move(next->desired_patch);
      return std::move(next->twin);
    };
    updates.push_back(store::TwinJobUpdate{device_ids[i], std::move(mutate), outcomes[i]});
  }
  auto results = store_.twins().updateTwinsForJob(updates);
  for (std::size_t i = 0; i < device_ids.size() && i < results.size(); ++i) {
    if (!results[i]) {
      statuses[i] = results[i].status();
      continue;
    }
    counters_.service_updates.fetch_add(1, std::memory_order_relaxed);
    if (notifications[i] && listener_ != nullptr) {
      listener_->onDesiredChanged(
          DesiredChange{device_ids[i], std::move(*notifications[i]), results[i]->desired_version});
    }
  }
  return statuses;
}

Result<store::TwinRecord> TwinService::applyJobUpdate(std::string_view device_id,
                                                      const json::object& update_twin,
                                                      const store::DeviceJobWrite* outcome) {
  auto etag = jobEtag(update_twin);
  if (!etag) return etag.status();
  auto parsed = parseServicePatch(update_twin);
  if (!parsed) return parsed.status();
  return applyPatch(device_id, *parsed, *etag, outcome);
}

}  // namespace iothub::twin
