#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/keyed_locks.hpp"
#include "common/status.hpp"
#include "registry/device_registry.hpp"
#include "store/store.hpp"
#include "twin/twin_patch.hpp"

namespace iothub::twin {

// A committed change of a device's desired properties (docs/protocol.md §3.6).
struct DesiredChange {
  std::string device_id;
  // The change as the back end made it: explicit nulls for removed members, then
  // "$version" (equal to desired_version). Ready to publish on
  // $iothub/twin/PATCH/properties/desired/?$version=<desired_version>.
  json::object patch;
  std::int64_t desired_version = 0;
};

// Told about every committed desired change (the device endpoint pushes it to a connected,
// subscribed device).
//
// Called on the thread that made the change (a worker, never the store's writer thread),
// after the commit, exactly once per change. For one device, calls come in increasing
// desired_version order: the service holds a per-device ordering lock during the update
// and the call, so the listener must be quick (post the work elsewhere) and must not call
// back into TwinService. Calls for different devices may run concurrently.
class DesiredChangeListener {
 public:
  virtual ~DesiredChangeListener() = default;
  virtual void onDesiredChanged(const DesiredChange& change) = 0;
};

// Device twins on top of the store: the service operations of docs/protocol.md §6, the
// device operations of §3.3/§3.4 and twin-job updates (§9.9). Rules and limits are those of
// twin_document.hpp and twin_patch.hpp.
//
// Thread-safe. Every method blocks on the store, so call it from a worker thread, never
// from an I/O thread. Etag checks run inside the store's read-modify-write transaction, so
// they are atomic with the update.
//
// `if_match` values are bare etags, quoted etags (quotes and "W/" are stripped), "*" or
// empty; "*" and empty mean unconditional.
//
// Errors common to all methods: DeviceNotFound for unknown devices; the store's errors
// (ServerError, StoreCorruption, Cancelled) pass through.
// Twin writes that committed: by the service (REST PATCH/PUT and twin jobs) and by devices
// (reported patches).
struct TwinCounters {
  std::atomic<std::uint64_t> service_updates{0};
  std::atomic<std::uint64_t> reported_updates{0};
};

class TwinService {
 public:
  // `connections` (may be null: every device reads as disconnected) and `listener` (may be
  // null) must outlive the service; so must `store` and `clock`.
  TwinService(store::Store& store, const Clock& clock,
              const registry::ConnectionStates* connections, DesiredChangeListener* listener);

  // The service view (twin_json.hpp) of GET /twins/{id}.
  Result<json::object> getTwin(std::string_view device_id);

  // PATCH /twins/{id}: merges tags and properties.desired (parseServicePatch rules) and
  // returns the service view after the update. Notifies the listener when desired was
  // written. Errors: IotHubFormatError, ArgumentInvalid, MessageTooLarge (size limits;
  // a REST adapter may prefer to answer 400), PreconditionFailed (412) when `if_match`
  // names another etag.
  Result<json::object> patchTwin(std::string_view device_id, const json::value& patch,
                                 std::string_view if_match);

  // PUT /twins/{id}: replaces tags and desired (parseServiceReplacement rules); reported is
  // untouched. Always notifies the listener, with the merge patch from the old desired
  // properties to the new ones (nulls for removed members). Errors as patchTwin.
  Result<json::object> replaceTwin(std::string_view device_id, const json::value& twin,
                                   std::string_view if_match);

  // The device view (twin_json.hpp) for $iothub/twin/GET.
  Result<json::object> deviceGetTwin(std::string_view device_id);

  // A device's reported patch ($iothub/twin/PATCH/properties/reported). Returns the
  // reported "$version" after the patch (for res/204/?$version=). An empty patch changes
  // nothing and returns the current version. Errors: IotHubFormatError, ArgumentInvalid,
  // MessageTooLarge (answer 413/413001 over MQTT).
  Result<std::int64_t> devicePatchReported(std::string_view device_id, const json::value& patch);

  // A twin job's update for one device: `update_twin` is the job's updateTwin object; its
  // tags and properties.desired are merged as by patchTwin. Its "etag" member, when present
  // and not "*", must equal the twin's etag. With `outcome` (may be null), the job's row for
  // the device is committed in the same transaction as the twin
  // (TwinStore::updateTwinForJob), so the update is recorded exactly when it is applied.
  // Returns the twin as stored after the update (a job has no use for the service view,
  // which would cost a read of the device). Errors as patchTwin; ArgumentInvalid when
  // "etag" is not a string; JobLeaseLost when `outcome`'s lease is not held (nothing is
  // written).
  Result<store::TwinRecord> applyJobUpdate(std::string_view device_id,
                                           const json::object& update_twin,
                                           const store::DeviceJobWrite* outcome = nullptr);

  // applyJobUpdate for a batch of devices with one updateTwin and one outcome row each
  // (`outcomes[i]` for `device_ids[i]`), in as few store transactions as the store can
  // (TwinStore::updateTwinsForJob): one status per device, in order. A refusal of one
  // device leaves the others alone; an invalid updateTwin is every device's error.
  std::vector<Status> applyJobUpdates(const std::vector<std::string>& device_ids,
                                      const json::object& update_twin,
                                      const std::vector<store::DeviceJobWrite>& outcomes);

  const TwinCounters& counters() const { return counters_; }

 private:
  using Change = std::function<Result<TwinChange>(const store::TwinRecord& current)>;

  // Runs `change` after the etag check inside the store's transaction (which also writes
  // `job_row`, when not null), then notifies the listener and returns the twin as stored.
  // `orders_desired` takes the device's ordering lock (only needed when desired may change).
  Result<store::TwinRecord> update(std::string_view device_id, std::string_view if_match,
                                   bool orders_desired, const Change& change,
                                   const store::DeviceJobWrite* job_row = nullptr);
  Result<store::TwinRecord> applyPatch(std::string_view device_id, const TwinPatch& patch,
                                       std::string_view if_match,
                                       const store::DeviceJobWrite* job_row = nullptr);
  Result<json::object> serviceView(const store::TwinRecord& twin);
  store::Store& store_;
  const Clock& clock_;
  const registry::ConnectionStates* connections_;
  DesiredChangeListener* listener_;
  // Per-device locks that keep desired notifications of one device in version order; held
  // across the store update and the listener call.
  KeyedLocks ordering_locks_;
  TwinCounters counters_;
};

}  // namespace iothub::twin
