#include "common/keyed_locks.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.hpp"

namespace iothub {
namespace {

using testing::waitFor;

TEST(KeyedLocksTest, DifferentKeysDoNotWaitForEachOther) {
  KeyedLocks locks;
  auto a = locks.lock("device-a");
  std::atomic<bool> took_b{false};
  std::thread other([&] {
    auto b = locks.lockAll({"device-b", "device-c"});
    took_b = true;
  });
  // "device-a" is still held here: the other thread must not need it.
  EXPECT_TRUE(waitFor([&] { return took_b.load(); }));
  other.join();
  EXPECT_EQ(locks.heldCount(), 1u);
}

TEST(KeyedLocksTest, ASetWaitsForAllItsKeysAndHoldsNoneMeanwhile) {
  KeyedLocks locks;
  std::optional<KeyedLocks::Guard> a = locks.lock("a");
  std::atomic<bool> took_set{false};
  std::thread waiter([&] {
    auto set = locks.lockAll({"b", "a"});
    took_set = true;
  });
  ASSERT_TRUE(waitFor([&] { return locks.waitingCount() == 1; }));
  // The waiting set holds nothing: "b" is free for someone else.
  std::optional<KeyedLocks::Guard> b = locks.lock("b");
  a.reset();  // "a" is free now, but "b" is not: the set still waits
  EXPECT_FALSE(took_set.load());
  EXPECT_EQ(locks.waitingCount(), 1u);
  b.reset();
  EXPECT_TRUE(waitFor([&] { return took_set.load(); }));
  waiter.join();
  EXPECT_EQ(locks.heldCount(), 0u);
  EXPECT_EQ(locks.waitingCount(), 0u);
}

TEST(KeyedLocksTest, DuplicatesCountOnceAndAMovedGuardReleasesOnce) {
  KeyedLocks locks;
  {
    auto set = locks.lockAll({"x", "y", "x"});
    EXPECT_EQ(set.keys(), (std::vector<std::string>{"x", "y"}));
    EXPECT_EQ(locks.heldCount(), 2u);
    KeyedLocks::Guard moved = std::move(set);
    EXPECT_EQ(locks.heldCount(), 2u);
    KeyedLocks::Guard assigned = locks.lock("z");
    assigned = std::move(moved);  // releases "z", takes over "x" and "y"
    EXPECT_EQ(locks.heldCount(), 2u);
  }
  EXPECT_EQ(locks.heldCount(), 0u);
  auto empty = locks.lockAll({});
  EXPECT_TRUE(empty.keys().empty());
}

// Threads take random sets of keys in random orders: no two ever hold a key at once, and
// all of them finish (taking sets in any order cannot deadlock).
TEST(KeyedLocksTest, RandomSetsAreExclusiveAndNeverDeadlock) {
  constexpr int kKeys = 16;
  constexpr int kThreads = 8;
  constexpr int kRounds = 2000;
  KeyedLocks locks;
  std::array<std::atomic<int>, kKeys> holders{};
  std::atomic<int> overlaps{0};
  std::atomic<int> finished{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
      for (int round = 0; round < kRounds; ++round) {
        std::vector<std::string> keys;
        int n = 1 + static_cast<int>(rng() % 4);
        std::vector<int> picked;
        for (int i = 0; i < n; ++i) picked.push_back(static_cast<int>(rng() % kKeys));
        for (int k : picked) keys.push_back("key-" + std::to_string(k));
        auto guard = locks.lockAll(keys);
        std::sort(picked.begin(), picked.end());
        picked.erase(std::unique(picked.begin(), picked.end()), picked.end());
        for (int k : picked) {
          if (holders[static_cast<std::size_t>(k)].fetch_add(1) != 0) ++overlaps;
        }
        for (int k : picked) holders[static_cast<std::size_t>(k)].fetch_sub(1);
      }
      ++finished;
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(finished.load(), kThreads);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(locks.heldCount(), 0u);
}

}  // namespace
}  // namespace iothub
