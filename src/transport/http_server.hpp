#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/http_message.hpp"
#include "common/status.hpp"

namespace boost::asio {
class io_context;
class thread_pool;
namespace ssl {
class context;
}
}  // namespace boost::asio

namespace iothub::transport {

struct WebSocketAcceptor;
class ConnectionLimiter;

// Turns a request into a response, delivered through `respond` exactly once, from any
// thread, now or later (a direct-method call answers when the device does). Called on a
// worker thread (never an I/O thread), so it may block on the store. Must not throw; if
// it does before responding, the client gets a 500.
using HttpResponder = std::function<void(HttpResponse)>;
using HttpHandler = std::function<void(const HttpRequest&, HttpResponder)>;
// Offered each request on the connection's I/O thread before it goes to a worker. Returns
// true when it took the request: it must not block, and it answers through the responder,
// from any thread, after it returned. False hands the request to `workers` as usual. This
// spares a thread hand-off for requests that need no store (a direct method to a device
// connected to this node).
using HttpInlineHandler = std::function<bool(const HttpRequest&, const HttpResponder&)>;
// Builds the error response the server sends on its own (400 unparsable request, 413 body
// too large, 500 handler failure), so every error has the same shape as the handler's.
using HttpErrorResponder = std::function<HttpResponse(const Status&)>;

struct HttpServerOptions {
  std::string name = "HTTP";  // for logs: "HTTPS", "HTTP"
  std::string bind_address = "0.0.0.0";
  std::uint16_t port = 0;                    // 0 = any free port; see HttpServer::port()
  boost::asio::ssl::context* tls = nullptr;  // null = plain HTTP
  std::size_t body_limit = 1024 * 1024;      // larger bodies get 413 before being read
  std::size_t header_limit = 16 * 1024;
  // A new connection must finish its TLS handshake, and then send its first request's
  // headers, each within this (slow-loris clients cannot hold sockets for long).
  std::chrono::seconds handshake_timeout{10};
  std::chrono::seconds idle_timeout{120};  // keep-alive connections idle this long close
  std::chrono::seconds io_timeout{30};     // reading a started request's body, writing
  // The hub-wide connection cap; null = none. Connections beyond it are closed at once.
  std::shared_ptr<ConnectionLimiter> limiter;
  // WebSocket upgrades are dispatched by path and subprotocol (Sec-WebSocket-Protocol):
  //  - /$iothub/websocket or /$servicebus/websocket listing AMQPWSB10 go to `amqp_websocket`
  //    (AMQP over WebSocket, azure-iothub's AmqpWs, Event Hubs; docs/amqp.md §1.1);
  //  - /$iothub/websocket listing `mqtt`, or no subprotocol at all, go to `websocket` (MQTT
  //    over WebSocket);
  //  - anything else (another subprotocol, or a null acceptor) is an ordinary request for the
  //    handler, which answers 404 like any unknown route.
  // Either acceptor takes the connection's slot of the hub-wide cap with it.
  std::shared_ptr<WebSocketAcceptor> websocket;
  std::shared_ptr<WebSocketAcceptor> amqp_websocket;
  // Counts requests handed to `workers` that no worker thread has taken yet (the metrics'
  // worker-pool queue depth); null = not counted. Several servers may share one.
  std::shared_ptr<std::atomic<std::int64_t>> worker_queue;
  // Responses with a streamed body (HttpResponse::stream, e.g. GET /jobs/v2/{id}/events)
  // open at once on this server; beyond it such a response is replaced by a 503
  // ServiceUnavailable error. A stream holds no thread: between steps it waits on a timer.
  std::size_t max_event_streams = 256;
  // See HttpInlineHandler; null = every request goes to `workers`.
  HttpInlineHandler inline_handler;
};

// An HTTP/1.1 server (Boost.Beast, TLS optional) with keep-alive, timeouts and body limits.
// Each connection runs as a coroutine on its own strand of `io`; requests are handed to
// `workers` for the handler (unless the inline handler takes them on the I/O thread), then
// answered in order.
//
// A response with a `stream` is written as its header, then the source's steps: chunked
// for HTTP/1.1 (the final chunk when the source is done), unframed for HTTP/1.0; the
// connection closes after it (`Connection: close`). Each next() runs on `workers`; the
// waits between steps are timers on the connection's strand. The stream ends early, and
// the source is released, when the client closes its side or resets, a write fails or
// exceeds io_timeout, or stop() is called (then the final chunk is still sent).
class HttpServer {
 public:
  // Binds and listens immediately so that "port in use" is reported at startup.
  // Errors: ServiceUnavailable naming the address and the system's reason.
  static Result<std::unique_ptr<HttpServer>> create(boost::asio::io_context& io,
                                                    boost::asio::thread_pool& workers,
                                                    HttpServerOptions options, HttpHandler handler,
                                                    HttpErrorResponder error_responder);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port (useful with port 0).
  std::uint16_t port() const;
  // Starts accepting. Thread-safe.
  void start();
  // Stops accepting; idle connections close now, busy ones after their current response,
  // streamed responses at their next step.
  // Returns immediately; the io_context runs out of work once all connections are gone.
  void stop();
  // Connections currently open.
  std::size_t connectionCount() const;
  // Streamed responses currently open (see max_event_streams).
  std::size_t eventStreamCount() const;

 private:
  struct Impl;
  explicit HttpServer(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace iothub::transport
