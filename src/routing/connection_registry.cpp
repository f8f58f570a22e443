#include "routing/connection_registry.hpp"

#include <algorithm>

namespace iothub::routing {

ConnectionRegistry::Attached ConnectionRegistry::attach(std::shared_ptr<DeviceLink> link,
                                                        std::int64_t epoch) {
  Attached out;
  {
    std::lock_guard lock(mutex_);
    const std::string& id = link->deviceId();
    if (auto fence = fences_.find(id); fence != fences_.end() && fence->second.epoch > epoch &&
                                       fence->second.until > std::chrono::steady_clock::now()) {
      out.refused = true;
      return out;
    }
    auto& slot = links_[id];
    if (slot.link && slot.epoch > epoch) {
      out.refused = true;
      return out;
    }
    out.replaced = std::move(slot.link);
    slot = Slot{link, epoch};
    if (observer_ && !out.replaced) observer_(id, true);
  }
  subscriptionsChanged(link);
  return out;
}

bool ConnectionRegistry::closeBelow(std::string_view device_id, std::int64_t epoch,
                                    std::string reason) {
  std::shared_ptr<DeviceLink> doomed;
  {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    pruneFences(now);
    std::string id(device_id);
    auto& fence = fences_[id];
    if (fence.epoch < epoch) {
      fence.epoch = epoch;
      fence.until = now + kFenceTtl;
      fence_expiry_.emplace_back(fence.until, id);
    }
    auto it = links_.find(id);
    if (it != links_.end() && it->second.epoch < epoch) doomed = it->second.link;
  }
  // The link detaches itself as it closes (and reports its own disconnect).
  if (doomed) doomed->close(CloseCause::Replaced, std::move(reason));
  return doomed != nullptr;
}

void ConnectionRegistry::pruneFences(std::chrono::steady_clock::time_point now) {
  while (!fence_expiry_.empty() && fence_expiry_.front().first <= now) {
    auto it = fences_.find(fence_expiry_.front().second);
    if (it != fences_.end() && it->second.until <= now) fences_.erase(it);
    fence_expiry_.pop_front();
  }
}

bool ConnectionRegistry::detach(const DeviceLink& link) {
  std::lock_guard lock(mutex_);
  auto it = links_.find(link.deviceId());
  if (it == links_.end() || it->second.link.get() != &link) return false;
  links_.erase(it);
  if (observer_) observer_(link.deviceId(), false);
  return true;
}

std::shared_ptr<DeviceLink> ConnectionRegistry::find(std::string_view device_id) const {
  std::lock_guard lock(mutex_);
  auto it = links_.find(std::string(device_id));
  return it == links_.end() ? nullptr : it->second.link;
}

bool ConnectionRegistry::isConnected(std::string_view device_id) const {
  return find(device_id) != nullptr;
}

void ConnectionRegistry::disconnect(std::string_view device_id, std::string reason) {
  if (auto link = find(device_id)) link->close(CloseCause::Revoked, std::move(reason));
}

std::size_t ConnectionRegistry::size() const {
  std::lock_guard lock(mutex_);
  return links_.size();
}

std::vector<std::pair<std::string, std::int64_t>> ConnectionRegistry::epochs() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, std::int64_t>> out;
  out.reserve(links_.size());
  for (const auto& [device_id, slot] : links_) out.emplace_back(device_id, slot.epoch);
  return out;
}

std::optional<std::int64_t> ConnectionRegistry::epochOf(std::string_view device_id) const {
  std::lock_guard lock(mutex_);
  auto it = links_.find(std::string(device_id));
  if (it == links_.end()) return std::nullopt;
  return it->second.epoch;
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
    if (it != links_.end() && it->second.link->isSubscribed(topic)) {
      ready = it->second.link;
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
    if (current == links_.end() || current->second.link != link) return;
    auto it = waits_.find(link->deviceId());
    if (it != waits_.end()) {
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
  }
  for (auto& waiter : ready) waiter(link);
  if (subscription_observer_) subscription_observer_(link->deviceId());
}

}  // namespace iothub::routing
