#pragma once

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

namespace iothub {

// Exclusive locks on string keys (device ids), taken one key or a whole set at a time.
//
// Striped mutexes (a key's lock = mutex[hash % N]) make unrelated keys wait for each other:
// two batches of 64 devices share a stripe of 4 096 two times in three, so batches that
// never touch the same device ran one after the other (decisions.md §90). Here only the
// keys themselves conflict. A set is taken all at once (a caller waits until none of its
// keys is held, then holds them all), so sets taken by different threads cannot deadlock
// with each other or with single keys, whatever their order. A thread must not take a key
// it already holds (it would wait for itself).
//
// Waiting is on one condition variable, signalled only when a release has waiters; a set
// whose keys keep being taken one at a time by others can wait behind them (no fairness),
// which needs a device written continuously while a batch waits for it.
class KeyedLocks {
 public:
  // Holds its keys until destroyed (or moved from).
  class Guard {
   public:
    Guard() = default;
    Guard(Guard&& other) noexcept;
    Guard& operator=(Guard&& other) noexcept;
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard();

    // The keys held (without duplicates).
    const std::vector<std::string>& keys() const { return keys_; }

   private:
    friend class KeyedLocks;
    Guard(KeyedLocks* owner, std::vector<std::string> keys)
        : owner_(owner), keys_(std::move(keys)) {}
    void release();

    KeyedLocks* owner_ = nullptr;
    std::vector<std::string> keys_;
  };

  KeyedLocks() = default;
  KeyedLocks(const KeyedLocks&) = delete;
  KeyedLocks& operator=(const KeyedLocks&) = delete;

  // Blocks until `key` is free, then holds it.
  Guard lock(std::string_view key);
  // Blocks until every key of `keys` is free, then holds them all (duplicates count once).
  Guard lockAll(std::vector<std::string> keys);

  // Keys held, and callers waiting, right now (for tests).
  std::size_t heldCount() const;
  std::size_t waitingCount() const;

 private:
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  bool anyHeld(const std::vector<std::string>& keys) const;
  void release(const std::vector<std::string>& keys);

  mutable std::mutex mutex_;
  std::condition_variable released_;
  std::size_t waiters_ = 0;                                      // guarded by mutex_
  std::unordered_set<std::string, Hash, std::equal_to<>> held_;  // guarded by mutex_
};

}  // namespace iothub
