#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "registry/device_registry.hpp"

namespace iothub::routing {

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
  // Closes the connection (e.g. replaced by a newer connection of the same device).
  virtual void close(std::string reason) = 0;
};

// Where each device is connected, for a single node: at most one live link per device
// (reference §1.3: a new CONNECT for the same device drops the old one). Thread-safe.
class ConnectionRegistry final : public registry::ConnectionStates {
 public:
  using WaitId = std::uint64_t;
  // Called (on the thread that made the link ready) with the device's link once it is
  // subscribed to the awaited topic.
  using Waiter = std::function<void(std::shared_ptr<DeviceLink>)>;
  // Told (device id, connected) whenever a device gains its first link or loses its last.
  // Called under the registry's lock, so calls for one device arrive in order: it must be
  // quick and must not call back into the registry.
  using Observer = std::function<void(std::string_view device_id, bool connected)>;

  explicit ConnectionRegistry(Observer observer = nullptr) : observer_(std::move(observer)) {}

  // Makes `link` the device's connection and returns the one it replaces (or null), which
  // the caller must close.
  std::shared_ptr<DeviceLink> attach(std::shared_ptr<DeviceLink> link);
  // Forgets `link` if it is still the device's current connection. Returns whether it was.
  bool detach(const DeviceLink& link);
  std::shared_ptr<DeviceLink> find(std::string_view device_id) const;
  bool isConnected(std::string_view device_id) const override;
  void disconnect(std::string_view device_id, std::string reason) override;
  std::size_t size() const;

  // Calls `waiter` as soon as the device has a link subscribed to `topic`: immediately (on
  // this thread) when it already has one, else from subscriptionsChanged().
  WaitId waitForSubscription(const std::string& device_id, std::string topic, Waiter waiter);
  // True when the wait was pending and is now cancelled (its waiter will not be called).
  bool cancelWait(WaitId id);
  // The transport reports that `link`'s subscriptions changed; ready waiters fire.
  void subscriptionsChanged(const std::shared_ptr<DeviceLink>& link);

 private:
  struct Wait {
    WaitId id;
    std::string topic;
    Waiter waiter;
  };
  const Observer observer_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<DeviceLink>> links_;  // guarded by mutex_
  std::unordered_map<std::string, std::vector<Wait>> waits_;            // guarded by mutex_
  WaitId next_wait_id_ = 1;                                             // guarded by mutex_
};

}  // namespace iothub::routing
