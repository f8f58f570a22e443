#pragma once

#include <memory>
#include <mutex>
#include <unordered_map>

#include "common/scheduler.hpp"

namespace boost::asio {
class io_context;
}

namespace iothub::transport {

// A Scheduler on Asio timers: callbacks run on `io`'s threads. Thread-safe.
class AsioScheduler final : public Scheduler {
 public:
  explicit AsioScheduler(boost::asio::io_context& io);
  ~AsioScheduler() override;
  TimerId schedule(std::chrono::steady_clock::duration delay, std::function<void()> fn) override;
  bool cancel(TimerId id) override;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace iothub::transport
