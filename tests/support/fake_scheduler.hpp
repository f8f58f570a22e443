#pragma once
// A Scheduler that records its timers; the test fires them (tests/support).
#include <chrono>
#include <cstddef>
#include <functional>
#include <vector>

#include "common/scheduler.hpp"

namespace iothub::testing {

// Records scheduled callbacks; the test fires them (they only post, never touch the core).
class FakeScheduler final : public Scheduler {
 public:
  struct Timer {
    TimerId id = 0;
    std::chrono::steady_clock::duration delay{};
    std::function<void()> fn;
    bool cancelled = false;
    bool fired = false;
  };

  TimerId schedule(std::chrono::steady_clock::duration delay, std::function<void()> fn) override {
    timers.push_back({next_++, delay, std::move(fn)});
    return timers.back().id;
  }
  bool cancel(TimerId id) override {
    for (auto& timer : timers) {
      if (timer.id == id && !timer.cancelled && !timer.fired) {
        timer.cancelled = true;
        return true;
      }
    }
    return false;
  }

  std::size_t pending() const {
    std::size_t n = 0;
    for (const auto& timer : timers) n += (!timer.cancelled && !timer.fired) ? 1 : 0;
    return n;
  }
  std::size_t cancelled() const {
    std::size_t n = 0;
    for (const auto& timer : timers) n += timer.cancelled ? 1 : 0;
    return n;
  }
  // Fires every pending timer; returns how many.
  std::size_t fireAll() {
    std::vector<std::function<void()>> due;
    for (auto& timer : timers) {
      if (timer.cancelled || timer.fired) continue;
      timer.fired = true;
      due.push_back(timer.fn);
    }
    for (auto& fn : due) fn();
    return due.size();
  }

  std::vector<Timer> timers;

 private:
  TimerId next_ = 1;
};

}  // namespace iothub::testing
