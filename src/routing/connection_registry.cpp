#include "routing/connection_registry.hpp"

#include <algorithm>

namespace iothub::routing {

std::shared_ptr<DeviceLink> ConnectionRegistry::attach(std::shared_ptr<DeviceLink> link) {
  std::shared_ptr<DeviceLink> previous;
  {
    std::lock_guard lock(mutex_);
    auto& slot = links_[link->deviceId()];
    previous = std::move(slot);
    slot = link;
    if (observer_ && !previous) observer_(link->deviceId(), true);
  }
  subscriptionsChanged(link);
  return previous;
}

bool ConnectionRegistry::detach(const DeviceLink& link) {
  std::lock_guard lock(mutex_);
  auto it = links_.find(link.deviceId());
  if (it == links_.end() || it->second.get() != &link) return false;
  links_.erase(it);
  if (observer_) observer_(link.deviceId(), false);
  return true;
}

std::shared_ptr<DeviceLink> ConnectionRegistry::find(std::string_view device_id) const {
  std::lock_guard lock(mutex_);
  auto it = links_.find(std::string(device_id));
  return it == links_.end() ? nullptr : it->second;
}

bool ConnectionRegistry::isConnected(std::string_view device_id) const {
  return find(device_id) != nullptr;
}

void ConnectionRegistry::disconnect(std::string_view device_id, std::string reason) {
  if (auto link = find(device_id)) link->close(std::move(reason));
}

std::size_t ConnectionRegistry::size() const {
  std::lock_guard lock(mutex_);
  return links_.size();
}

ConnectionRegistry::WaitId ConnectionRegistry::waitForSubscription(const std::string& device_id,
                                                                   std::string topic,
                                                                   Waiter waiter) {
  std::shared_ptr<DeviceLink> ready;
  WaitId id;
  {
    std::lock_guard lock(mutex_);
    id = next_wait_id_++;
    auto it = links_.find(device_id);
    if (it != links_.end() && it->second->isSubscribed(topic)) {
      ready = it->second;
    } else {
      waits_[device_id].push_back({id, std::move(topic), std::move(waiter)});
      return id;
    }
  }
  waiter(std::move(ready));
  return id;
}

bool ConnectionRegistry::cancelWait(WaitId id) {
  std::lock_guard lock(mutex_);
  for (auto it = waits_.begin(); it != waits_.end(); ++it) {
    auto& list = it->second;
    auto found = std::find_if(list.begin(), list.end(), [id](const Wait& w) { return w.id == id; });
    if (found != list.end()) {
      list.erase(found);
      if (list.empty()) waits_.erase(it);
      return true;
    }
  }
  return false;
}

void ConnectionRegistry::subscriptionsChanged(const std::shared_ptr<DeviceLink>& link) {
  std::vector<Waiter> ready;
  {
    std::lock_guard lock(mutex_);
    auto current = links_.find(link->deviceId());
    if (current == links_.end() || current->second != link) return;
    auto it = waits_.find(link->deviceId());
    if (it == waits_.end()) return;
    auto& list = it->second;
    for (auto w = list.begin(); w != list.end();) {
      if (link->isSubscribed(w->topic)) {
        ready.push_back(std::move(w->waiter));
        w = list.erase(w);
      } else {
        ++w;
      }
    }
    if (list.empty()) waits_.erase(it);
  }
  for (auto& waiter : ready) waiter(link);
}

}  // namespace iothub::routing
