#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.hpp"

namespace boost::asio {
class io_context;
class thread_pool;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace iothub::device_api {
class DeviceEndpoint;
}
namespace iothub::routing {
class ConnectionRegistry;
}

namespace iothub::transport {

struct WebSocketAcceptor;
class ConnectionLimiter;

// Why a connected device's MQTT connection ended (a metrics label, docs/operations.md).
enum class DisconnectReason : std::uint8_t {
  ClientDisconnect,  // the device sent DISCONNECT
  ConnectionLost,    // the socket closed or failed without DISCONNECT
  KeepAliveTimeout,  // nothing received within 1.5 keep-alive periods
  ProtocolError,     // a malformed or oversized packet, or one at the wrong time
  AclViolation,      // a PUBLISH on a topic the device may not use
  TokenExpired,      // its SAS token expired
  NotReading,        // its write backlog overflowed, or a write to it stalled
  Replaced,          // a newer connection of the device took over
  Revoked,           // the device was disabled or deleted
  Shutdown,          // the hub stopped
  ServerError,       // the hub could not take a message (its telemetry was not stored)
};
inline constexpr std::size_t kDisconnectReasons = 11;
std::string_view disconnectReasonName(DisconnectReason reason);

// What the MQTT listeners count as they go, with relaxed atomic increments (a few per
// packet, no lock), read by the metrics endpoint. Several listeners may share one.
struct MqttCounters {
  std::atomic<std::uint64_t> connects_accepted{0};
  // CONNACKs refusing a CONNECT, indexed by their return code (1..5).
  std::array<std::atomic<std::uint64_t>, 6> connects_refused{};
  std::array<std::atomic<std::uint64_t>, kDisconnectReasons> disconnects{};
  std::atomic<std::uint64_t> packets_received{0};
  std::atomic<std::uint64_t> packets_sent{0};
  std::atomic<std::uint64_t> bytes_received{0};
  std::atomic<std::uint64_t> bytes_sent{0};
  // Store work (authentication, sessions, twin requests, telemetry) waiting for a device
  // worker thread right now.
  std::atomic<std::int64_t> worker_jobs_queued{0};
};

struct MqttServerOptions {
  std::string name = "MQTT";  // for logs: "MQTT/TLS", "MQTT"
  std::string bind_address = "0.0.0.0";
  std::uint16_t port = 0;                    // 0 = any free port; see MqttServer::port()
  boost::asio::ssl::context* tls = nullptr;  // null = plain MQTT (tests only)
  // Largest packet accepted: telemetry is up to 256 KB, method answers up to 128 KB
  // (docs/protocol.md §10.2), plus topic and header.
  std::size_t max_packet_size = 300 * 1024;
  // The TLS (or WebSocket) handshake must finish, and CONNECT arrive, within this of the
  // accept: idle sockets cannot hold file descriptors for long.
  std::chrono::seconds handshake_timeout{10};
  // Bytes queued for a device that does not read; beyond this it is disconnected, whether
  // or not a write is in flight.
  std::size_t max_write_backlog = 8 * 1024 * 1024;
  // A write to a device that makes no progress for this long closes the connection.
  std::chrono::seconds write_timeout{30};
  // The hub-wide connection cap; null = none. Connections beyond it are closed at once.
  std::shared_ptr<ConnectionLimiter> limiter;
  // Where the listener counts connects, disconnects, packets and bytes; null = its own.
  std::shared_ptr<MqttCounters> counters;
};

// Devices' MQTT 3.1.1 endpoint (over TLS, or plain for tests). Each connection is a
// coroutine on its own strand driving an mqtt::ServerSession; store work (authentication,
// sessions, twin requests) runs on `workers`, never on the I/O threads. Connections are
// registered in `connections` once authenticated, so the rest of the hub can reach them.
class MqttServer {
 public:
  // Binds and listens at once so that "port in use" is a startup error.
  static Result<std::unique_ptr<MqttServer>> create(boost::asio::io_context& io,
                                                    boost::asio::thread_pool& workers,
                                                    MqttServerOptions options,
                                                    device_api::DeviceEndpoint& endpoint,
                                                    routing::ConnectionRegistry& connections);
  ~MqttServer();
  MqttServer(const MqttServer&) = delete;
  MqttServer& operator=(const MqttServer&) = delete;

  std::uint16_t port() const;
  void start();
  // Stops accepting and closes every connection. Returns at once.
  void stop();
  std::size_t connectionCount() const;

  // Hands HTTPS connections that upgrade at /$iothub/websocket to this server (MQTT over
  // WebSocket, docs/protocol.md §2.5); give it to HttpServerOptions::websocket.
  std::shared_ptr<WebSocketAcceptor> webSocketAcceptor();

 private:
  struct Impl;
  explicit MqttServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace iothub::transport
