#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace iothub {

// Runs callbacks at a later time, so domain modules can have timeouts without an I/O
// library. Implementations are thread-safe; callbacks run on an implementation-defined
// thread and must be quick (post real work elsewhere).
class Scheduler {
 public:
  using TimerId = std::uint64_t;
  virtual ~Scheduler() = default;
  // Calls `fn` once, at or after `delay` from now, unless cancelled first.
  virtual TimerId schedule(std::chrono::steady_clock::duration delay, std::function<void()> fn) = 0;
  // True when the timer was still pending and will now never fire.
  virtual bool cancel(TimerId id) = 0;
};

}  // namespace iothub
