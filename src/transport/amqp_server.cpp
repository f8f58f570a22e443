// The AMQP listener's network side: all Asio code for AMQP lives in this translation unit. The
// protocol is amqp::ServerConnection's; this file only moves bytes, runs its timers and
// closes sockets (docs/amqp.md §3). A connection is TLS on the AMQP port, or a WebSocket
// (subprotocol AMQPWSB10) the HTTPS listener upgraded and handed over.
#include "transport/amqp_server.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "transport/accept_limit.hpp"
#include "transport/connection_limiter.hpp"
#include "transport/listen.hpp"
#include "transport/stream_types.hpp"

namespace iothub::transport {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using asio::awaitable;
using SteadyClock = std::chrono::steady_clock;
constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);

// What stop() needs of a connection, whatever its stream.
class ConnectionHandle {
 public:
  virtual ~ConnectionHandle() = default;
  virtual asio::any_io_executor executor() = 0;
  // On the connection's strand: close with `error` (the hub stopping).
  virtual void close(amqp::ErrorCondition error) = 0;
};

struct ServerContext {
  ServerContext(AmqpServerOptions o, amqp::Authenticator& a, AmqpLinkHandlerFactory h)
      : options(std::move(o)), authenticator(a), handlers(std::move(h)) {}
  AmqpServerOptions options;
  amqp::Authenticator& authenticator;
  AmqpLinkHandlerFactory handlers;
  std::atomic<bool> stopping{false};
  std::mutex mutex;
  std::uint64_t next_id = 1;
  std::map<std::uint64_t, std::weak_ptr<ConnectionHandle>> open;
};

// Refuses every link: for a factory that returns no handler.
class NoLinks : public amqp::LinkHandler {
 public:
  std::optional<amqp::ErrorCondition> onAttach(const amqp::LinkRequest&) override {
    return amqp::ErrorCondition{"amqp:not-found", "no such node"};
  }
  amqp::Outcome onMessage(amqp::LinkId, amqp::DeliveryId, const amqp::Message&) override {
    return amqp::Outcome::rejected("amqp:not-found", "no such node");
  }
  void onDetach(amqp::LinkId) override {}
};

// The core's handler: forwards to the hub's handler once run() made it (the core is built
// before the connection has a shared_ptr to give the handler's post function).
class ForwardingHandler : public amqp::LinkHandler {
 public:
  void setTarget(amqp::LinkHandler* target) { target_ = target; }
  std::optional<amqp::ErrorCondition> onAttach(const amqp::LinkRequest& request) override {
    return target().onAttach(request);
  }
  amqp::Outcome onMessage(amqp::LinkId link, amqp::DeliveryId delivery,
                          const amqp::Message& message) override {
    return target().onMessage(link, delivery, message);
  }
  void onDetach(amqp::LinkId link) override { target().onDetach(link); }
  void onCredit(amqp::LinkId link, int credit) override { target().onCredit(link, credit); }

 private:
  amqp::LinkHandler& target() { return target_ != nullptr ? *target_ : no_links_; }
  NoLinks no_links_;
  amqp::LinkHandler* target_ = nullptr;
};

// One connection over `Stream`: TlsStream (the AMQP port), or beast::websocket::stream over
// TlsStream or PlainStream (an upgrade handed over by the HTTP(S) listener; each WebSocket
// message read is fed to the core, each write of the core's output is one binary message).
template <class Stream>
class AmqpConnection final : public ConnectionHandle,
                             public std::enable_shared_from_this<AmqpConnection<Stream>> {
 public:
  AmqpConnection(Stream stream, std::shared_ptr<ServerContext> context, std::string remote,
                 ConnectionLimiter::Slot slot)
      : stream_(std::move(stream)),
        context_(std::move(context)),
        remote_(std::move(remote)),
        slot_(std::move(slot)),
        core_(context_->options.connection, context_->authenticator, forwarding_),
        timer_(stream_.get_executor()),
        wake_(stream_.get_executor()) {
    timer_.expires_at(SteadyClock::time_point::max());
    wake_.expires_at(SteadyClock::time_point::max());
  }

  asio::any_io_executor executor() override { return stream_.get_executor(); }

  // For WebSocket connections: the HTTP upgrade request to accept, and the subprotocol token
  // to echo (the client's spelling of AMQPWSB10).
  void setUpgradeRequest(UpgradeRequest request, std::string protocol) {
    upgrade_ = std::move(request);
    protocol_ = std::move(protocol);
  }

  awaitable<void> run(std::shared_ptr<AmqpConnection> self) {
    if (context_->handlers) {
      handler_ =
          context_->handlers(remote_, [weak = this->weak_from_this()](AmqpConnectionWork work) {
            auto connection = weak.lock();
            if (!connection) return;
            asio::post(connection->executor(), [connection, work = std::move(work)] {
              if (connection->closed_) return;
              work(connection->core_);
              connection->kick();
            });
          });
      forwarding_.setTarget(handler_.get());
    }
    if constexpr (kWebSocket) {
      namespace websocket = beast::websocket;
      // The HTTP listener did TLS and read the upgrade request; the WebSocket layer's own
      // timeout bounds its opening and closing handshakes, the core's idle time-out the rest.
      beast::get_lowest_layer(stream_).expires_never();
      stream_.set_option(websocket::stream_base::timeout{context_->options.handshake_timeout,
                                                         websocket::stream_base::none(), false});
      stream_.set_option(websocket::stream_base::decorator(
          [protocol = protocol_](websocket::response_type& response) {
            response.set(beast::http::field::sec_websocket_protocol, protocol);
            response.set(beast::http::field::server, "iothub");
          }));
      stream_.binary(true);
      UpgradeRequest request = std::move(*upgrade_);
      upgrade_.reset();
      auto [ec] = co_await stream_.async_accept(request, kAwaitTuple);
      if (ec) {
        spdlog::debug("{}: WebSocket handshake with {} failed: {}", context_->options.name, remote_,
                      ec.message());
        closeSocket();
        co_return;
      }
    } else {
      auto& socket = beast::get_lowest_layer(stream_);
      socket.expires_after(context_->options.handshake_timeout);
      auto [ec] = co_await stream_.async_handshake(asio::ssl::stream_base::server, kAwaitTuple);
      if (ec) {
        spdlog::debug("{}: TLS handshake with {} failed: {}", context_->options.name, remote_,
                      ec.message());
        closeSocket();
        co_return;
      }
      socket.expires_never();
    }
    if (closed_) co_return;  // stopped during the handshake
    runTick();
    asio::co_spawn(executor(), timerLoop(self), asio::detached);
    asio::co_spawn(executor(), writeLoop(self), asio::detached);
    while (!closed_) {
      // On a WebSocket: the payload bytes of its messages, however they are framed (AMQP
      // frames may span messages); control frames are answered by Beast.
      auto [read_ec, n] = co_await stream_.async_read_some(asio::buffer(buffer_), kAwaitTuple);
      if (closed_ || closing_websocket_) break;
      if (read_ec) {
        core_.receiveClosed();
        input_ended_ = true;
        kick();
        break;
      }
      core_.receive(std::span<const std::uint8_t>(buffer_.data(), n));
      runTick();  // Proton wants a tick after every read; it also re-arms the idle timer
      kick();
    }
  }

  void close(amqp::ErrorCondition error) override {
    if (closed_) return;
    core_.close(error);
    kick();
  }

 private:
  static constexpr bool kWebSocket = !std::is_same_v<Stream, TlsStream>;

  void kick() { wake_.cancel(); }

  void runTick() {
    std::optional<SteadyClock::time_point> next = core_.tick(SteadyClock::now());
    timer_.expires_at(next.value_or(SteadyClock::time_point::max()));
  }

  awaitable<void> timerLoop([[maybe_unused]] std::shared_ptr<AmqpConnection> self) {
    while (!closed_) {
      auto [ec] = co_await timer_.async_wait(kAwaitTuple);
      if (closed_) break;
      if (ec == asio::error::operation_aborted) continue;  // re-armed by a read
      runTick();
      kick();
    }
  }

  awaitable<void> writeLoop([[maybe_unused]] std::shared_ptr<AmqpConnection> self) {
    auto& socket = beast::get_lowest_layer(stream_);
    while (!closed_) {
      std::span<const std::uint8_t> out = core_.output();
      if (!out.empty()) {
        // Copied: the core's buffer may move while the write is in flight and a read runs.
        pending_.assign(out.begin(), out.end());
        socket.expires_after(context_->options.write_timeout);
        boost::system::error_code ec;
        std::size_t n = 0;
        if constexpr (kWebSocket) {
          std::tie(ec, n) = co_await stream_.async_write(asio::buffer(pending_), kAwaitTuple);
        } else {
          std::tie(ec, n) =
              co_await asio::async_write(stream_, asio::buffer(pending_), kAwaitTuple);
        }
        socket.expires_never();
        if (closed_) break;
        if (ec) {
          core_.sendClosed();
          if (!input_ended_) core_.receiveClosed();
          closeSocket();
          break;
        }
        core_.consumed(n);
        continue;
      }
      if (input_ended_ && !core_.finished()) core_.sendClosed();  // nothing more will come
      if (core_.finished()) {
        if (auto error = core_.error()) {
          spdlog::debug("{}: connection from {} closed: {} {}", context_->options.name, remote_,
                        error->condition, error->description);
        }
        // The AMQP Close has been written; the TLS close_notify exchange is skipped (waiting
        // for the peer's would need a second reader beside the pending read). A WebSocket
        // gets its close handshake first (the pending read takes the peer's close frame),
        // bounded by the WebSocket timeout; it fails at once if the peer closed already.
        if constexpr (kWebSocket) {
          closing_websocket_ = true;
          co_await stream_.async_close(beast::websocket::close_code::normal, kAwaitTuple);
        }
        closeSocket();
        break;
      }
      co_await wake_.async_wait(kAwaitTuple);
      wake_.expires_at(SteadyClock::time_point::max());
    }
  }

  void closeSocket() {
    if (closed_) return;
    closed_ = true;
    auto& socket = beast::get_lowest_layer(stream_).socket();
    boost::system::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    timer_.cancel();
    wake_.cancel();
  }

  Stream stream_;
  std::optional<UpgradeRequest> upgrade_;  // WebSocket: until accepted
  std::string protocol_;                   // WebSocket: the subprotocol echoed
  std::shared_ptr<ServerContext> context_;
  std::string remote_;
  ConnectionLimiter::Slot slot_;
  // Declared before core_, which calls it until its destruction.
  std::unique_ptr<amqp::LinkHandler> handler_;
  ForwardingHandler forwarding_;
  amqp::ServerConnection core_;
  asio::steady_timer timer_;  // the core's next timer deadline
  asio::steady_timer wake_;   // cancelled to wake the writer
  std::array<std::uint8_t, 16 * 1024> buffer_{};
  std::vector<std::uint8_t> pending_;
  bool closed_ = false;
  bool input_ended_ = false;
  bool closing_websocket_ = false;  // the WebSocket close handshake has begun
};

}  // namespace

struct AmqpServer::Impl {
  Impl(asio::io_context& i, std::shared_ptr<ServerContext> c)
      : io(i), context(std::move(c)), acceptor(asio::make_strand(i)) {}
  asio::io_context& io;
  std::shared_ptr<ServerContext> context;
  tcp::acceptor acceptor;
  std::uint16_t bound_port = 0;

  template <class Connection>
  void launch(std::shared_ptr<Connection> connection) {
    std::uint64_t id;
    {
      std::lock_guard lock(context->mutex);
      id = context->next_id++;
      context->open[id] = connection;
    }
    if (context->stopping) {
      // stop() may have listed the open connections before this one was added.
      asio::post(connection->executor(), [connection] {
        connection->close({"amqp:connection:forced", "the hub is shutting down"});
      });
    }
    auto ctx = context;
    asio::co_spawn(connection->executor(), connection->run(connection),
                   [ctx, id](std::exception_ptr e) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         spdlog::error("{}: connection failed: {}", ctx->options.name, ex.what());
                       }
                     }
                     std::lock_guard lock(ctx->mutex);
                     ctx->open.erase(id);
                   });
  }

  // A connection the HTTP(S) listener upgraded to WebSocket (on the connection's strand).
  // Refused (the stream, its socket and the slot dropped) once the server stops, and when
  // the request does not list AMQPWSB10 (the HTTP listener dispatches only those here).
  template <class Inner>
  void acceptWebSocket(Inner stream, UpgradeRequest request, std::string remote,
                       ConnectionLimiter::Slot slot) {
    if (context->stopping) return;
    auto protocol = findWebSocketProtocol(request, kAmqpWebSocketProtocol);
    if (!protocol) return;
    using Stream = beast::websocket::stream<Inner>;
    auto connection = std::make_shared<AmqpConnection<Stream>>(Stream(std::move(stream)), context,
                                                               std::move(remote), std::move(slot));
    connection->setUpgradeRequest(std::move(request), std::move(*protocol));
    launch(std::move(connection));
  }

  awaitable<void> acceptLoop([[maybe_unused]] std::shared_ptr<Impl> self) {
    asio::steady_timer backoff(acceptor.get_executor());
    while (!context->stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), kAwaitTuple);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
      if (ec) {
        spdlog::warn("{}: accept failed: {}", context->options.name, ec.message());
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(kAwaitTuple);
        continue;
      }
      auto slot = acquireSlot(*context->options.limiter, socket, context->options.name);
      if (!slot) continue;
      boost::system::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      std::string remote;
      if (auto ep = socket.remote_endpoint(ignored); !ignored) {
        remote = ep.address().to_string() + ":" + std::to_string(ep.port());
      }
      launch(std::make_shared<AmqpConnection<TlsStream>>(
          TlsStream(beast::tcp_stream(std::move(socket)), *context->options.tls), context,
          std::move(remote), std::move(*slot)));
    }
  }
};

AmqpServer::AmqpServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::shared_ptr<WebSocketAcceptor> AmqpServer::webSocketAcceptor() {
  auto acceptor = std::make_shared<WebSocketAcceptor>();
  std::weak_ptr<Impl> weak = impl_;
  // Once the server is gone the stream, its socket and the slot are dropped.
  acceptor->accept_tls = [weak](TlsStream stream, UpgradeRequest request, std::string remote,
                                ConnectionLimiter::Slot slot) {
    if (auto impl = weak.lock()) {
      impl->acceptWebSocket(std::move(stream), std::move(request), std::move(remote),
                            std::move(slot));
    }
  };
  acceptor->accept_plain = [weak](PlainStream stream, UpgradeRequest request, std::string remote,
                                  ConnectionLimiter::Slot slot) {
    if (auto impl = weak.lock()) {
      impl->acceptWebSocket(std::move(stream), std::move(request), std::move(remote),
                            std::move(slot));
    }
  };
  return acceptor;
}

AmqpServer::~AmqpServer() { stop(); }

Result<std::unique_ptr<AmqpServer>> AmqpServer::create(asio::io_context& io,
                                                       AmqpServerOptions options,
                                                       amqp::Authenticator& authenticator,
                                                       AmqpLinkHandlerFactory handlers) {
  if (options.tls == nullptr) {
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot start " + options.name + ": no TLS context");
  }
  if (!options.limiter) options.limiter = std::make_shared<ConnectionLimiter>(0);
  auto context =
      std::make_shared<ServerContext>(std::move(options), authenticator, std::move(handlers));
  auto impl = std::make_shared<Impl>(io, context);
  const auto& opts = context->options;
  auto bound = bindAndListen(impl->acceptor, opts.name, opts.bind_address, opts.port);
  if (!bound) return bound.status();
  impl->bound_port = *bound;
  return std::unique_ptr<AmqpServer>(new AmqpServer(std::move(impl)));
}

std::uint16_t AmqpServer::port() const { return impl_->bound_port; }

void AmqpServer::start() {
  asio::co_spawn(impl_->acceptor.get_executor(), impl_->acceptLoop(impl_), asio::detached);
}

void AmqpServer::stop() {
  if (impl_->context->stopping.exchange(true)) return;
  auto impl = impl_;
  asio::post(impl->acceptor.get_executor(), [impl] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
  });
  std::vector<std::shared_ptr<ConnectionHandle>> open;
  {
    std::lock_guard lock(impl->context->mutex);
    for (auto& [id, weak] : impl->context->open) {
      if (auto connection = weak.lock()) open.push_back(std::move(connection));
    }
  }
  for (auto& connection : open) {
    asio::post(connection->executor(), [connection] {
      connection->close({"amqp:connection:forced", "the hub is shutting down"});
    });
  }
}

std::size_t AmqpServer::connectionCount() const {
  std::lock_guard lock(impl_->context->mutex);
  return impl_->context->open.size();
}

}  // namespace iothub::transport
