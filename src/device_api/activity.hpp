#pragma once

#include <cstddef>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/clock.hpp"
#include "store/store.hpp"

namespace iothub::device_api {

// Writes a device's lastActivityTime (and, for connection changes, its
// connectionStateUpdatedTime) to the registry (docs/protocol.md §5.3). Activity is written at
// most once a minute per device: each write is a store transaction, and telemetry or polling
// may come many times a second. Thread-safe; record() blocks on the store. Failures are
// logged, not returned (activity times are informative).
class ActivityRecorder {
 public:
  // Beyond this many remembered devices (or twice as many as the last pruning kept), the ones
  // not written for a minute are forgotten.
  static constexpr std::size_t kPruneAbove = 10'000;

  ActivityRecorder(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  // due() then, when due, write().
  void record(std::string_view device_id, bool connection_change = false);
  // Whether activity of the device is to be written now (then it counts as written: the
  // next is due a minute later). Does not block on the store. A connection change is always
  // due and restarts the minute.
  bool due(std::string_view device_id, bool connection_change = false);
  // Blocks: writes the activity time (and the connection change) to the registry.
  void write(std::string_view device_id, bool connection_change = false);
  // How many devices' last writes are remembered (for tests and diagnostics).
  std::size_t remembered();

  // Forgets the device's last write (its connection ended): its next activity is written.
  void forget(std::string_view device_id);

 private:
  store::Store& store_;
  const Clock& clock_;
  std::mutex mutex_;
  std::unordered_map<std::string, SystemTime> last_write_;  // guarded by mutex_
  std::size_t prune_at_ = kPruneAbove;                      // guarded by mutex_
};

}  // namespace iothub::device_api
