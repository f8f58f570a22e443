#include "device_api/activity.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace iothub::device_api {

void ActivityRecorder::record(std::string_view device_id, bool connection_change) {
  if (due(device_id, connection_change)) write(device_id, connection_change);
}

bool ActivityRecorder::due(std::string_view device_id, bool connection_change) {
  SystemTime now = clock_.now();
  std::lock_guard lock(mutex_);
  auto [it, inserted] = last_write_.try_emplace(std::string(device_id), now);
  if (!inserted) {
    if (!connection_change && now - it->second < std::chrono::minutes(1)) return false;
    it->second = now;
  }
  // Pruning scans every entry, so it runs only when the map has doubled since the last one:
  // during a connect storm every entry is fresh and a scan per new device would make the
  // storm quadratic (it did: a third of the hub's CPU at 19 000 connects).
  if (inserted && last_write_.size() > prune_at_) {
    std::erase_if(last_write_,
                  [&](const auto& entry) { return now - entry.second >= std::chrono::minutes(1); });
    prune_at_ = std::max(kPruneAbove, 2 * last_write_.size());
  }
  return true;
}

void ActivityRecorder::write(std::string_view device_id, bool connection_change) {
  SystemTime now = clock_.now();
  auto updated = store_.registry().updateDevice(
      device_id, [&](const store::DeviceRecord& d) -> Result<store::DeviceRecord> {
        store::DeviceRecord next = d;
        next.last_activity_time = now;
        if (connection_change) next.connection_state_updated_time = now;
        return next;
      });
  if (!updated && updated.code() != ErrorCode::DeviceNotFound) {
    spdlog::warn("device {}: cannot record activity: {}", device_id, updated.status().toString());
  }
}

std::size_t ActivityRecorder::remembered() {
  std::lock_guard lock(mutex_);
  return last_write_.size();
}

void ActivityRecorder::forget(std::string_view device_id) {
  std::lock_guard lock(mutex_);
  last_write_.erase(std::string(device_id));
}

}  // namespace iothub::device_api
