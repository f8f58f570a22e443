#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

namespace iothub::transport {

// Counts the hub's open connections across every listener (HTTPS, HTTP, MQTT/TLS, MQTT,
// AMQP/TLS, MQTT and AMQP over WebSocket) against one cap, so that the process never runs out of
// file descriptors for its store and listeners (docs/limits.md). Thread-safe, lock-free.
class ConnectionLimiter {
  // Shared with the slots, so a connection that outlives the limiter stays safe.
  struct State {
    std::atomic<std::size_t> open{0};
    std::atomic<std::uint64_t> refused{0};
  };

 public:
  // Holds one unit of the cap until destroyed; move-only. A default-constructed slot holds
  // nothing.
  class Slot {
   public:
    Slot() = default;
    Slot(Slot&& other) noexcept : limiter_(std::exchange(other.limiter_, nullptr)) {}
    Slot& operator=(Slot&& other) noexcept {
      if (this != &other) {
        release();
        limiter_ = std::exchange(other.limiter_, nullptr);
      }
      return *this;
    }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() { release(); }

   private:
    friend class ConnectionLimiter;
    explicit Slot(std::shared_ptr<ConnectionLimiter::State> state) : limiter_(std::move(state)) {}
    void release() {
      if (limiter_) limiter_->open.fetch_sub(1, std::memory_order_relaxed);
      limiter_ = nullptr;
    }
    std::shared_ptr<ConnectionLimiter::State> limiter_;
  };

  // `max_connections` 0 means no cap.
  explicit ConnectionLimiter(std::size_t max_connections)
      : state_(std::make_shared<State>()), max_(max_connections) {}

  // A slot, or nullopt (and one more refusal counted) when `max_connections` are open.
  std::optional<Slot> tryAcquire() {
    std::size_t now = state_->open.fetch_add(1, std::memory_order_relaxed);
    if (max_ != 0 && now >= max_) {
      state_->open.fetch_sub(1, std::memory_order_relaxed);
      state_->refused.fetch_add(1, std::memory_order_relaxed);
      return std::nullopt;
    }
    return Slot(state_);
  }

  std::size_t open() const { return state_->open.load(std::memory_order_relaxed); }
  std::uint64_t refused() const { return state_->refused.load(std::memory_order_relaxed); }
  std::size_t max() const { return max_; }

 private:
  std::shared_ptr<State> state_;
  std::size_t max_;
};

}  // namespace iothub::transport
