#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.hpp"
#include "registry/device_registry.hpp"

namespace iothub::routing {

// Why the hub closes a device's connection (a metrics label, docs/operations.md).
enum class CloseCause : std::uint8_t {
  Replaced,  // a newer connection of the device (on this node or another) took over
  Revoked,   // the device was disabled or deleted
  Shutdown,  // the hub stops
};

// A live device connection as the rest of the hub sees it; implemented by the transport.
// Every method is thread-safe and returns quickly (I/O is posted to the connection's own
// strand).
class DeviceLink {
 public:
  virtual ~DeviceLink() = default;
  virtual const std::string& deviceId() const = 0;
  // True when one of the connection's subscriptions matches `topic`.
  virtual bool isSubscribed(std::string_view topic) const = 0;
  // Queues a QoS 0 application message to the device. False when the device is not
  // subscribed to `topic` or the connection is closing (nothing is sent then).
  virtual bool publish(std::string topic, std::string payload) = 0;
  // Called exactly once per accepted publishReliable(), on any thread: true once the
  // device acknowledged the message, false when the connection ended first.
  using Acknowledgement = std::function<void(bool acknowledged)>;
  // Queues an at-least-once (MQTT QoS 1) message, for cloud-to-device messages
  // (docs/c2d.md). False when the device is not subscribed to `topic` or the connection is
  // closing; `done` is never called then. A link that cannot deliver reliably says false.
  virtual bool publishReliable(std::string /*topic*/, std::string /*payload*/,
                               Acknowledgement /*done*/) {
    return false;
  }
  // Closes the connection; `reason` is for the log.
  virtual void close(CloseCause cause, std::string reason) = 0;
};

// Where a cluster records which node holds each device's connection (docs/cluster.md,
// "Where each device is: presence"). A single node has none.
class PresenceTracker {
 public:
  virtual ~PresenceTracker() = default;
  // Blocks. Records that this node now holds the device's connection, under a new epoch
  // (higher than every earlier claim of the device), and tells the node that held it
  // before to close its older connection. Errors: the store's.
  virtual Result<std::int64_t> claim(std::string_view device_id) = 0;
  // Blocks. The connection claimed under `epoch` ended (a no-op when a newer claim
  // replaced it). Failures are logged: node leases clean up what a lost release leaves.
  virtual void release(std::string_view device_id, std::int64_t epoch) = 0;
};

// Where each device is connected on this node: at most one live link per device
// (docs/protocol.md §2.4: a new CONNECT for the same device drops the old one). Thread-safe.
//
// In a cluster each link carries the epoch of its presence claim (0 on a single node), and
// the newest epoch wins: a link never replaces one with a higher epoch, and closeBelow()
// (another node's newer claim) closes older links and fences off older links that have
// not attached yet.
class ConnectionRegistry final : public registry::ConnectionStates {
 public:
  // How long closeBelow() keeps fencing a device off after its link was told to close.
  static constexpr std::chrono::seconds kFenceTtl{120};

  struct Attached {
    std::shared_ptr<DeviceLink> replaced;  // the older link the caller must close, or null
    bool refused = false;  // a newer connection of the device exists: do not use `link`
  };

  using WaitId = std::uint64_t;
  // Called (on the thread that made the link ready) with the device's link once it is
  // subscribed to the awaited topic.
  using Waiter = std::function<void(std::shared_ptr<DeviceLink>)>;
  // Told (device id, connected) whenever a device gains its first link or loses its last.
  // Called under the registry's lock, so calls for one device arrive in order: it must be
  // quick and must not call back into the registry.
  using Observer = std::function<void(std::string_view device_id, bool connected)>;

  explicit ConnectionRegistry(Observer observer = nullptr) : observer_(std::move(observer)) {}

  // Makes `link` (claimed under `epoch`) the device's connection, unless a link or fence
  // with a higher epoch exists (then `refused`, and nothing changes).
  Attached attach(std::shared_ptr<DeviceLink> link, std::int64_t epoch = 0);
  // A newer connection of the device (claimed under `epoch`) exists elsewhere: closes the
  // device's link if its epoch is lower, and refuses attaches below `epoch` for kFenceTtl.
  // Returns whether a link was closed.
  bool closeBelow(std::string_view device_id, std::int64_t epoch, std::string reason);
  // Forgets `link` if it is still the device's current connection. Returns whether it was.
  bool detach(const DeviceLink& link);
  std::shared_ptr<DeviceLink> find(std::string_view device_id) const;
  bool isConnected(std::string_view device_id) const override;
  void disconnect(std::string_view device_id, std::string reason) override;
  std::size_t size() const;
  // Every device with a link, and the epoch its link was attached under (cluster mode:
  // what the node tells the store it holds, ClusterStore::repairPresence).
  std::vector<std::pair<std::string, std::int64_t>> epochs() const;
  // The epoch of the device's current link, if it has one.
  std::optional<std::int64_t> epochOf(std::string_view device_id) const;

  // Calls `waiter` as soon as the device has a link subscribed to `topic`: immediately (on
  // this thread) when it already has one, else from subscriptionsChanged().
  WaitId waitForSubscription(const std::string& device_id, std::string topic, Waiter waiter);
  // True when the wait was pending and is now cancelled (its waiter will not be called).
  bool cancelWait(WaitId id);
  // The transport reports that `link`'s subscriptions changed, or that a connection whose
  // persistent session restored subscriptions can now be published to (after its CONNACK);
  // ready waiters fire, then the subscription observer.
  void subscriptionsChanged(const std::shared_ptr<DeviceLink>& link);
  // Told the device id after every subscriptionsChanged() of a device's current link (the
  // C2D delivery starts there). Set once, before any link attaches; must be quick.
  void setSubscriptionObserver(std::function<void(std::string_view device_id)> observer) {
    subscription_observer_ = std::move(observer);
  }

 private:
  struct Wait {
    WaitId id;
    std::string topic;
    Waiter waiter;
  };
  struct Slot {
    std::shared_ptr<DeviceLink> link;
    std::int64_t epoch = 0;
  };
  struct Fence {
    std::int64_t epoch = 0;
    std::chrono::steady_clock::time_point until;
  };
  // mutex_ held: drops expired fences (amortised over closeBelow calls).
  void pruneFences(std::chrono::steady_clock::time_point now);

  const Observer observer_;
  std::function<void(std::string_view)> subscription_observer_;  // set before use
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Slot> links_;    // guarded by mutex_
  std::unordered_map<std::string, Fence> fences_;  // guarded by mutex_
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>>
      fence_expiry_;                                          // guarded by mutex_
  std::unordered_map<std::string, std::vector<Wait>> waits_;  // guarded by mutex_
  WaitId next_wait_id_ = 1;                                   // guarded by mutex_
};

}  // namespace iothub::routing
