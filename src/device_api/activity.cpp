#include "device_api/activity.hpp"

#include <spdlog/spdlog.h>

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
  if (inserted && last_write_.size() > kPruneAbove) {
    std::erase_if(last_write_,
                  [&](const auto& entry) { return now - entry.second >= std::chrono::minutes(1); });
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

void ActivityRecorder::forget(std::string_view device_id) {
  std::lock_guard lock(mutex_);
  last_write_.erase(std::string(device_id));
}

}  // namespace iothub::device_api
