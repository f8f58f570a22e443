#pragma once
// The AMQP 1.0 listener's network side (docs/amqp.md §3): TCP + TLS with Boost.Asio, bytes
// pumped through an amqp::ServerConnection. iothubd serves it on port 5671, and over
// WebSocket (subprotocol AMQPWSB10) on the HTTPS port through webSocketAcceptor().
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "amqp/server_connection.hpp"
#include "common/status.hpp"

namespace boost::asio {
class io_context;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace iothub::transport {

class ConnectionLimiter;
struct WebSocketAcceptor;

struct AmqpServerOptions {
  std::string name = "AMQP/TLS";  // for logs
  std::string bind_address = "0.0.0.0";
  std::uint16_t port = 0;                    // 0 = any free port; see AmqpServer::port()
  boost::asio::ssl::context* tls = nullptr;  // required: AMQP is served over TLS only
  // The TLS handshake must finish within this of the accept.
  std::chrono::seconds handshake_timeout{10};
  // A write that makes no progress for this long closes the connection.
  std::chrono::seconds write_timeout{30};
  // The hub-wide connection cap; null = none. Connections beyond it are closed at once.
  std::shared_ptr<ConnectionLimiter> limiter;
  amqp::ServerConnectionOptions connection;
};

// Runs work on a connection's strand with its core, from any thread (a handler settling a
// deferred message or sending on a receiver link once the store answered); the connection's
// output is flushed afterwards. Does nothing once the connection ended.
using AmqpConnectionWork = std::function<void(amqp::ServerConnection&)>;
using AmqpConnectionPost = std::function<void(AmqpConnectionWork)>;

// Per connection: the handler of its non-$cbs links (the hub's C2D, feedback, Event Hubs
// logic), given the connection's post function. Called on the connection's strand before
// it reads anything; `remote` is "ip:port". Destroyed with the connection.
using AmqpLinkHandlerFactory = std::function<std::unique_ptr<amqp::LinkHandler>(
    const std::string& remote, AmqpConnectionPost post)>;

// Each connection is a coroutine on its own strand driving one amqp::ServerConnection; the
// Authenticator is shared by all of them and must be thread-safe.
class AmqpServer {
 public:
  // Binds and listens at once so that "port in use" is a startup error.
  static Result<std::unique_ptr<AmqpServer>> create(boost::asio::io_context& io,
                                                    AmqpServerOptions options,
                                                    amqp::Authenticator& authenticator,
                                                    AmqpLinkHandlerFactory handlers);
  ~AmqpServer();
  AmqpServer(const AmqpServer&) = delete;
  AmqpServer& operator=(const AmqpServer&) = delete;

  std::uint16_t port() const;
  void start();
  // For HttpServerOptions::amqp_websocket: takes connections the HTTP(S) listener upgraded
  // to WebSocket with subprotocol AMQPWSB10 (azure-iothub's AmqpWs, Event Hubs over
  // WebSocket; docs/amqp.md §1.1) and serves AMQP on them like on the TLS port: the same
  // options, authenticator, handler factory, limits and stop(). The upgraded connection keeps
  // its slot of the connection cap. Valid while the server lives; refuses (drops the
  // connection) after stop().
  std::shared_ptr<WebSocketAcceptor> webSocketAcceptor();
  // Stops accepting and closes every connection with amqp:connection:forced. Returns at once.
  void stop();
  std::size_t connectionCount() const;

 private:
  struct Impl;
  explicit AmqpServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace iothub::transport
