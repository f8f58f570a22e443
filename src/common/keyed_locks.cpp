#include "common/keyed_locks.hpp"

#include <algorithm>
#include <utility>

namespace iothub {

KeyedLocks::Guard::Guard(Guard&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), keys_(std::move(other.keys_)) {}

KeyedLocks::Guard& KeyedLocks::Guard::operator=(Guard&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::exchange(other.owner_, nullptr);
    keys_ = std::move(other.keys_);
  }
  return *this;
}

KeyedLocks::Guard::~Guard() { release(); }

void KeyedLocks::Guard::release() {
  if (owner_ == nullptr) return;
  owner_->release(keys_);
  owner_ = nullptr;
  keys_.clear();
}

KeyedLocks::Guard KeyedLocks::lock(std::string_view key) {
  std::vector<std::string> keys;
  keys.emplace_back(key);
  return lockAll(std::move(keys));
}

KeyedLocks::Guard KeyedLocks::lockAll(std::vector<std::string> keys) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::unique_lock lock(mutex_);
  if (anyHeld(keys)) {
    ++waiters_;
    released_.wait(lock, [&] { return !anyHeld(keys); });
    --waiters_;
  }
  for (const std::string& key : keys) held_.insert(key);
  return Guard(this, std::move(keys));
}

std::size_t KeyedLocks::heldCount() const {
  std::lock_guard lock(mutex_);
  return held_.size();
}

std::size_t KeyedLocks::waitingCount() const {
  std::lock_guard lock(mutex_);
  return waiters_;
}

bool KeyedLocks::anyHeld(const std::vector<std::string>& keys) const {
  return std::any_of(keys.begin(), keys.end(),
                     [&](const std::string& key) { return held_.find(key) != held_.end(); });
}

void KeyedLocks::release(const std::vector<std::string>& keys) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    for (const std::string& key : keys) held_.erase(key);
    wake = waiters_ > 0;
  }
  if (wake) released_.notify_all();
}

}  // namespace iothub
