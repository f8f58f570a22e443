#pragma once

// Internal to src/transport: what the HTTP and MQTT accept loops do with a new socket when
// the hub-wide connection cap is reached. Includes Asio: include it only from transport's
// .cpp files.
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <optional>
#include <string>

#include "transport/connection_limiter.hpp"

namespace iothub::transport {

// A slot for the accepted `socket`, or nullopt after closing it when the cap is reached.
// The refusal is counted by the limiter and logged at most once every 10 s, so a flood
// cannot flood the log too. The accept loop goes on either way: it never stops accepting,
// so connections are refused (closed at once) rather than left waiting in the backlog.
template <class Socket>
std::optional<ConnectionLimiter::Slot> acquireSlot(ConnectionLimiter& limiter, Socket& socket,
                                                   const std::string& listener) {
  auto slot = limiter.tryAcquire();
  if (slot) return slot;
  boost::system::error_code ignored;
  socket.close(ignored);
  static std::atomic<std::int64_t> last_warning{0};  // one per listener type; that is fine
  std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
  std::int64_t last = last_warning.load(std::memory_order_relaxed);
  if (now - last >= 10 && last_warning.compare_exchange_strong(last, now)) {
    spdlog::warn(
        "{}: refusing connections: {} open, the limit is --max-connections {} ({} refused "
        "so far)",
        listener, limiter.open(), limiter.max(), limiter.refused());
  }
  return std::nullopt;
}

}  // namespace iothub::transport
