#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/keyed_locks.hpp"
#include "index/twin_index.hpp"
#include "store/store.hpp"

namespace iothub::index {

// A Store that keeps a TwinIndex consistent with every committed write: it forwards each
// call to the durable store and, once the write succeeded, applies it to the index. The
// rest of the hub uses this store, so no write can bypass the index.
//
// Writes to one device (registry and twin alike) hold that device's lock across the
// durable write and the index update, so the index sees them in commit order even when
// they come from different threads (a device deleted and re-created while an older twin
// update is being reported cannot resurrect the old row). Writes to different devices run
// concurrently and still share the store's group commits.
class IndexedStore final : public store::Store {
 public:
  // `inner` and `index` must outlive this store.
  IndexedStore(store::Store& inner, TwinIndex& index);

  store::RegistryStore& registry() override { return registry_; }
  store::TwinStore& twins() override { return twins_; }
  store::JobStore& jobs() override { return inner_.jobs(); }
  store::DeviceJobStore& deviceJobs() override { return inner_.deviceJobs(); }
  store::ClusterStore* cluster() override { return inner_.cluster(); }
  store::ChangeFeed* changeFeed() override { return inner_.changeFeed(); }
  store::AccessPolicyStore& policies() override { return inner_.policies(); }
  store::MqttSessionStore& mqttSessions() override { return inner_.mqttSessions(); }
  // Forwarded as is: a queue change updates the device's cloud_to_device_message_count in
  // the store only, so the index's copy of that field stays as it was until the device's
  // row is next written or reloaded.
  store::C2dStore& c2d() override { return inner_.c2d(); }
  // Forwarded as is: the telemetry log touches no indexed field.
  store::TelemetryStore& telemetry() override { return inner_.telemetry(); }

  // The locks every write of this store to one of some devices holds from before its
  // durable write until its index update is done; released when destroyed.
  class DeviceLocks {
   public:
    DeviceLocks(DeviceLocks&&) = default;
    DeviceLocks& operator=(DeviceLocks&&) = default;

   private:
    friend class IndexedStore;
    DeviceLocks() = default;
    KeyedLocks::Guard guard_;
  };

  // Blocks until no write of this store to any of `device_ids` is under way, and keeps new
  // ones from starting until the result is destroyed. The change feed (twin_index_feed.hpp)
  // reads the current state of devices other nodes changed, and applies it, under these
  // locks: a local write then either finished before the read (so the read sees it) or
  // starts after the apply, so the feed never replaces a state a local write put in the
  // index with an older one. The set is taken all at once (KeyedLocks), so this cannot
  // deadlock with writes or other sets. The caller must not write to
  // those devices through this store while holding them (it would wait for itself).
  DeviceLocks lockDevices(const std::vector<std::string>& device_ids);

 private:
  class Registry final : public store::RegistryStore {
   public:
    explicit Registry(IndexedStore& owner) : owner_(owner) {}
    Status createDevice(const store::DeviceRecord& device, const store::TwinRecord& twin) override;
    Result<store::DeviceRecord> getDevice(std::string_view device_id) override;
    Result<store::DeviceRecord> updateDevice(std::string_view device_id,
                                             store::DeviceMutation mutate) override;
    Status deleteDevice(std::string_view device_id,
                        store::DevicePrecondition precondition) override;
    // Holds the locks of every device of the batch (lockDevices) across the durable write
    // and the index updates of the writes that succeeded.
    std::vector<Result<store::DeviceRecord>> writeDevices(
        const std::vector<store::DeviceWrite>& writes) override;
    Result<std::vector<store::DeviceRecord>> listDevices(std::string_view after_device_id,
                                                         std::size_t limit) override;
    Result<store::DeviceStatistics> deviceStatistics() override;

   private:
    IndexedStore& owner_;
  };

  class Twins final : public store::TwinStore {
   public:
    explicit Twins(IndexedStore& owner) : owner_(owner) {}
    Result<store::TwinRecord> getTwin(std::string_view device_id) override;
    Result<store::TwinRecord> updateTwin(std::string_view device_id,
                                         store::TwinMutation mutate) override;
    Result<store::TwinRecord> updateTwinForJob(std::string_view device_id,
                                               store::TwinMutation mutate,
                                               const store::DeviceJobWrite& job_row) override;
    // Like writeDevices: the batch's device locks are held across the write and the index.
    std::vector<Result<store::TwinRecord>> updateTwinsForJob(
        const std::vector<store::TwinJobUpdate>& updates) override;
    Result<std::vector<store::TwinRecord>> listTwins(std::string_view after_device_id,
                                                     std::size_t limit) override;

   private:
    IndexedStore& owner_;
  };

  store::Store& inner_;
  TwinIndex& index_;
  Registry registry_{*this};
  Twins twins_{*this};
  // Per-device write locks (only writes to the same device wait for each other).
  KeyedLocks locks_;
};

}  // namespace iothub::index
