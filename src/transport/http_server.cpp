// All of iothub's Beast HTTP code lives in this translation unit, so that changes to
// domain code never recompile it (style.md "Build").
#include "transport/http_server.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <mutex>
#include <unordered_map>

#include "transport/accept_limit.hpp"
#include "transport/listen.hpp"
#include "transport/stream_types.hpp"

namespace iothub::transport {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);

// State of one connection shared with stop(); touched only on the connection's strand.
struct ConnectionState {
  beast::tcp_stream* lowest = nullptr;        // null once the connection is gone
  bool idle = false;                          // waiting for the next request
  asio::steady_timer* stream_wait = nullptr;  // while streaming: the wait between steps
};

// While a response streams: a read kept pending on the connection notices the client
// leaving (EOF or reset) at once. Touched only on the connection's strand.
struct StreamWatch {
  explicit StreamWatch(const asio::any_io_executor& executor) : timer(executor) {}
  asio::steady_timer timer;  // the wait between steps; cancelled when the client leaves
  bool reading = false;      // the read is pending
  bool client_gone = false;
  std::array<char, 512> scratch{};  // bytes a client sends meanwhile are discarded
};

// Keeps a read pending on `stream` until it fails, then marks the client gone and wakes
// the stream. `stream` must outlive the read (the stream's coroutine waits for it).
template <class Stream>
void watchClient(Stream& stream, std::shared_ptr<StreamWatch> watch) {
  watch->reading = true;
  stream.async_read_some(asio::buffer(watch->scratch),
                         [&stream, watch](const boost::system::error_code& ec, std::size_t) {
                           if (!ec) {
                             watchClient(stream, watch);
                             return;
                           }
                           watch->reading = false;
                           watch->client_gone = true;
                           watch->timer.cancel();
                         });
}

// A request that upgrades to WebSocket, with the acceptor that takes the connection.
struct Upgrade {
  UpgradeRequest request;
  std::shared_ptr<WebSocketAcceptor> acceptor;
};

// The acceptor for a WebSocket upgrade request (see HttpServerOptions::websocket), or null
// when the request is one for the handler.
std::shared_ptr<WebSocketAcceptor> webSocketTarget(const HttpServerOptions& options,
                                                   const UpgradeRequest& request) {
  if (!beast::websocket::is_upgrade(request)) return nullptr;
  std::string_view path = request.target();
  path = path.substr(0, path.find('?'));
  const bool iothub = path == kMqttWebSocketPath;
  if (!iothub && path != kServiceBusWebSocketPath) return nullptr;
  if (findWebSocketProtocol(request, kAmqpWebSocketProtocol)) return options.amqp_websocket;
  if (iothub &&
      (!hasWebSocketProtocols(request) || findWebSocketProtocol(request, kMqttWebSocketProtocol))) {
    return options.websocket;
  }
  return nullptr;
}

bool isParseError(const boost::system::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io_context, asio::thread_pool& pool, HttpServerOptions opts, HttpHandler h,
       HttpErrorResponder er)
      : io(io_context),
        workers(pool),
        options(std::move(opts)),
        handler(std::move(h)),
        error_responder(std::move(er)),
        acceptor(asio::make_strand(io_context)) {}

  asio::io_context& io;
  asio::thread_pool& workers;
  HttpServerOptions options;
  HttpHandler handler;
  HttpErrorResponder error_responder;
  tcp::acceptor acceptor;
  std::uint16_t bound_port = 0;
  std::atomic<bool> stopping{false};
  std::atomic<std::size_t> open_streams{0};

  mutable std::mutex mutex;
  std::uint64_t next_connection_id = 0;  // guarded by mutex
  std::unordered_map<std::uint64_t,
                     std::pair<asio::any_io_executor, std::shared_ptr<ConnectionState>>>
      connections;  // guarded by mutex

  // Runs the handler on a worker and resumes the calling coroutine on its own strand with
  // the response, whichever thread the handler responds from.
  awaitable<HttpResponse> invoke(const HttpRequest& request) {
    return asio::async_initiate<decltype(asio::use_awaitable), void(HttpResponse)>(
        [this, &request](auto completion) {
          auto shared = std::make_shared<decltype(completion)>(std::move(completion));
          auto responded = std::make_shared<std::atomic<bool>>(false);
          if (options.inline_handler) {
            // Posted, never dispatched: the answer may come before the handler returns, and
            // the coroutine must not resume inside its own initiation.
            HttpResponder respond_later = [shared, responded](HttpResponse response) {
              if (responded->exchange(true)) return;
              auto executor = asio::get_associated_executor(*shared);
              asio::post(executor, [shared, response = std::move(response)]() mutable {
                (*shared)(std::move(response));
              });
            };
            try {
              if (options.inline_handler(request, respond_later)) return;
            } catch (const std::exception& e) {
              spdlog::error("{}: inline handler failed on {} {}: {}", options.name, request.method,
                            request.target, e.what());
              respond_later(error_responder(Status(ErrorCode::ServerError, "Internal error")));
              return;
            }
          }
          HttpResponder respond = [shared, responded](HttpResponse response) {
            if (responded->exchange(true)) return;
            auto executor = asio::get_associated_executor(*shared);
            asio::dispatch(executor, [shared, response = std::move(response)]() mutable {
              (*shared)(std::move(response));
            });
          };
          std::atomic<std::int64_t>* queued = options.worker_queue.get();
          if (queued != nullptr) queued->fetch_add(1, std::memory_order_relaxed);
          asio::post(workers, [this, &request, respond, responded, queued]() {
            if (queued != nullptr) queued->fetch_sub(1, std::memory_order_relaxed);
            try {
              handler(request, respond);
            } catch (const std::exception& e) {
              spdlog::error("{}: handler failed on {} {}: {}", options.name, request.method,
                            request.target, e.what());
              if (!responded->load())
                respond(error_responder(Status(ErrorCode::ServerError, "Internal error")));
            }
          });
        },
        asio::use_awaitable);
  }

  // Asks the source for its next step on a worker and resumes the calling coroutine on its
  // own strand with it. A source that throws ends the stream.
  awaitable<HttpEventSource::Step> nextStep(std::shared_ptr<HttpEventSource> source) {
    return asio::async_initiate<decltype(asio::use_awaitable), void(HttpEventSource::Step)>(
        [this, source](auto completion) {
          auto shared = std::make_shared<decltype(completion)>(std::move(completion));
          std::atomic<std::int64_t>* queued = options.worker_queue.get();
          if (queued != nullptr) queued->fetch_add(1, std::memory_order_relaxed);
          asio::post(workers, [this, source, shared, queued]() {
            if (queued != nullptr) queued->fetch_sub(1, std::memory_order_relaxed);
            HttpEventSource::Step step;
            try {
              step = source->next(std::chrono::steady_clock::now());
            } catch (const std::exception& e) {
              spdlog::error("{}: event stream failed: {}", options.name, e.what());
              step = HttpEventSource::Step{{}, true, {}};
            }
            auto executor = asio::get_associated_executor(*shared);
            asio::dispatch(executor, [shared, step = std::move(step)]() mutable {
              (*shared)(std::move(step));
            });
          });
        },
        asio::use_awaitable);
  }

  // Writes a response whose body streams from `response.stream` (see HttpServer), or a 503
  // when max_event_streams are open. The connection is to be closed afterwards.
  template <class Stream>
  awaitable<void> writeStream(Stream& stream, ConnectionState& state, HttpResponse response,
                              unsigned version) {
    std::shared_ptr<HttpEventSource> source = std::move(response.stream);
    if (open_streams.fetch_add(1) >= options.max_event_streams) {
      open_streams.fetch_sub(1);
      source.reset();
      HttpResponse busy = error_responder(Status(
          ErrorCode::ServiceUnavailable,
          "This server already has " + std::to_string(options.max_event_streams) +
              " event streams open, its limit; try again later or poll the resource instead"));
      busy.headers.set("Retry-After", "10");
      boost::system::error_code ignored;
      co_await writeResponse(stream, std::move(busy), version, false, ignored);
      co_return;
    }
    struct Release {
      std::atomic<std::size_t>& count;
      ~Release() { count.fetch_sub(1); }
    } release{open_streams};

    auto& lowest = beast::get_lowest_layer(stream);
    const bool chunked = version >= 11;
    {
      http::response<http::empty_body> res{static_cast<http::status>(response.status), version};
      for (auto& [name, value] : response.headers.fields) res.set(name, value);
      res.set(http::field::server, "iothub");
      res.keep_alive(false);
      res.chunked(chunked);
      http::response_serializer<http::empty_body> serializer(res);
      lowest.expires_after(options.io_timeout);
      auto [ec, n] = co_await http::async_write_header(stream, serializer, kAwaitTuple);
      if (ec) co_return;
    }

    auto watch = std::make_shared<StreamWatch>(co_await asio::this_coro::executor);
    lowest.expires_never();  // the watching read has no deadline; writes set their own
    watchClient(stream, watch);
    state.stream_wait = &watch->timer;
    bool write_failed = false;
    // The first step runs even when stop() came meanwhile: a stream that started says
    // something before it ends.
    while (!watch->client_gone) {
      HttpEventSource::Step step = co_await nextStep(source);
      if (watch->client_gone) break;
      if (!step.data.empty()) {
        lowest.expires_after(options.io_timeout);
        boost::system::error_code ec;
        if (chunked) {
          std::tie(ec, std::ignore) = co_await asio::async_write(
              stream, http::make_chunk(asio::buffer(step.data)), kAwaitTuple);
        } else {
          std::tie(ec, std::ignore) =
              co_await asio::async_write(stream, asio::buffer(step.data), kAwaitTuple);
        }
        if (ec) {
          write_failed = true;
          break;
        }
      }
      if (step.done || stopping) break;
      watch->timer.expires_after(step.wait);
      co_await watch->timer.async_wait(kAwaitTuple);  // cancelled by stop() and by the client
      if (stopping) break;
    }
    state.stream_wait = nullptr;
    source.reset();  // the body is over, whatever comes next
    if (chunked && !write_failed && !watch->client_gone) {
      lowest.expires_after(stopping ? std::chrono::seconds(1) : options.io_timeout);
      co_await asio::async_write(stream, http::make_chunk_last(), kAwaitTuple);
    }
    // End the watching read and wait for it: it refers to `stream`.
    if (watch->reading) lowest.cancel();
    while (watch->reading) {
      watch->timer.expires_after(std::chrono::seconds(5));
      co_await watch->timer.async_wait(kAwaitTuple);
    }
  }

  // `self` keeps the server state alive for the whole coroutine (its body starts later
  // than the call).
  awaitable<void> acceptLoop([[maybe_unused]] std::shared_ptr<Impl> self) {
    asio::steady_timer backoff(acceptor.get_executor());
    while (!stopping) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), kAwaitTuple);
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
      if (ec) {
        // Out of file descriptors and the like: back off instead of spinning.
        spdlog::warn("{}: accept failed: {}", options.name, ec.message());
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(kAwaitTuple);
        continue;
      }
      auto slot = acquireSlot(*options.limiter, socket, options.name);
      if (!slot) continue;
      auto executor = socket.get_executor();
      asio::co_spawn(executor, session(self, std::move(socket), std::move(*slot)), asio::detached);
    }
  }

  awaitable<void> session([[maybe_unused]] std::shared_ptr<Impl> self, tcp::socket socket,
                          ConnectionLimiter::Slot slot) {
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::string remote;
    if (auto ep = socket.remote_endpoint(ignored); !ignored) {
      remote = ep.address().to_string() + ":" + std::to_string(ep.port());
    }
    auto state = std::make_shared<ConnectionState>();
    std::uint64_t id;
    {
      std::lock_guard lock(mutex);
      id = next_connection_id++;
      connections.emplace(id, std::make_pair(socket.get_executor(), state));
    }
    if (options.tls != nullptr) {
      beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *options.tls);
      state->lowest = &beast::get_lowest_layer(stream);
      beast::get_lowest_layer(stream).expires_after(options.handshake_timeout);
      auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, kAwaitTuple);
      if (ec) {
        spdlog::debug("{}: TLS handshake with {} failed: {}", options.name, remote, ec.message());
      } else {
        auto upgrade = co_await serve(stream, *state, remote);
        state->lowest = nullptr;
        if (upgrade) {
          upgrade->acceptor->accept_tls(std::move(stream), std::move(upgrade->request), remote,
                                        std::move(slot));
        } else {
          // Send close_notify; wait briefly for the peer's, and hardly at all when the hub
          // is shutting down (an idle keep-alive client may never answer).
          beast::get_lowest_layer(stream).expires_after(stopping ? std::chrono::milliseconds(200)
                                                                 : std::chrono::milliseconds(5000));
          co_await stream.async_shutdown(kAwaitTuple);
        }
      }
      state->lowest = nullptr;
    } else {
      beast::tcp_stream stream(std::move(socket));
      state->lowest = &stream;
      auto upgrade = co_await serve(stream, *state, remote);
      state->lowest = nullptr;
      if (upgrade) {
        upgrade->acceptor->accept_plain(std::move(stream), std::move(upgrade->request), remote,
                                        std::move(slot));
      } else {
        stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
      }
    }
    std::lock_guard lock(mutex);
    connections.erase(id);
  }

  template <class Stream>
  awaitable<void> writeResponse(Stream& stream, HttpResponse response, unsigned version,
                                bool keep_alive, boost::system::error_code& ec) {
    http::response<http::string_body> res{static_cast<http::status>(response.status), version};
    for (auto& [name, value] : response.headers.fields) res.set(name, value);
    res.set(http::field::server, "iothub");
    res.keep_alive(keep_alive);
    res.body() = std::move(response.body);
    res.prepare_payload();
    beast::get_lowest_layer(stream).expires_after(options.io_timeout);
    auto [wec, n] = co_await http::async_write(stream, res, kAwaitTuple);
    ec = wec;
  }

  // Serves requests until the connection should close; returns the request and its acceptor
  // when the client asked to upgrade to MQTT or AMQP over WebSocket, for the caller to hand
  // the stream over.
  template <class Stream>
  awaitable<std::optional<Upgrade>> serve(Stream& stream, ConnectionState& state,
                                          const std::string& remote) {
    beast::flat_buffer buffer;
    auto& lowest = beast::get_lowest_layer(stream);
    bool first = true;
    while (!stopping) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(options.body_limit);
      parser.header_limit(static_cast<std::uint32_t>(options.header_limit));
      state.idle = true;
      // A new connection's first request must arrive (headers complete) quickly; a
      // keep-alive connection may then idle between requests.
      lowest.expires_after(first ? options.handshake_timeout : options.idle_timeout);
      first = false;
      auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, kAwaitTuple);
      state.idle = false;
      if (!ec && !parser.is_done()) {
        lowest.expires_after(options.io_timeout);
        std::tie(ec, n) = co_await http::async_read(stream, buffer, parser, kAwaitTuple);
      }
      boost::system::error_code wec;
      if (ec == http::error::body_limit) {
        HttpResponse too_large = error_responder(
            Status(ErrorCode::MessageTooLarge,
                   "The request body exceeds " + std::to_string(options.body_limit) + " bytes"));
        co_await writeResponse(stream, std::move(too_large), 11, false, wec);
        co_return std::nullopt;
      }
      if (ec && isParseError(ec)) {
        spdlog::info("{}: bad request from {}: {}", options.name, remote, ec.message());
        HttpResponse bad = error_responder(
            Status(ErrorCode::ArgumentInvalid, "Malformed HTTP request: " + ec.message()));
        co_await writeResponse(stream, std::move(bad), 11, false, wec);
        co_return std::nullopt;
      }
      if (ec) co_return std::nullopt;  // closed, timed out or cancelled by stop()

      auto& req = parser.get();
      if (auto target = webSocketTarget(options, req)) {
        lowest.expires_never();
        co_return Upgrade{parser.release(), std::move(target)};
      }
      HttpRequest request;
      request.method = std::string(req.method_string());
      request.target = std::string(req.target());
      for (const auto& field : req) {
        request.headers.fields.emplace_back(std::string(field.name_string()),
                                            std::string(field.value()));
      }
      request.body = std::move(req.body());
      request.remote_address = remote;
      bool keep_alive = req.keep_alive();
      unsigned version = req.version();

      HttpResponse response = co_await invoke(request);
      if (response.stream) {
        co_await writeStream(stream, state, std::move(response), version);
        co_return std::nullopt;
      }
      keep_alive = keep_alive && !stopping;
      co_await writeResponse(stream, std::move(response), version, keep_alive, wec);
      if (wec || !keep_alive) co_return std::nullopt;
    }
    co_return std::nullopt;
  }
};

HttpServer::HttpServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::create(asio::io_context& io,
                                                       asio::thread_pool& workers,
                                                       HttpServerOptions options,
                                                       HttpHandler handler,
                                                       HttpErrorResponder error_responder) {
  if (!options.limiter) options.limiter = std::make_shared<ConnectionLimiter>(0);
  auto impl = std::make_shared<Impl>(io, workers, std::move(options), std::move(handler),
                                     std::move(error_responder));
  const auto& opts = impl->options;
  auto bound = bindAndListen(impl->acceptor, opts.name, opts.bind_address, opts.port);
  if (!bound) return bound.status();
  impl->bound_port = *bound;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

std::uint16_t HttpServer::port() const { return impl_->bound_port; }

void HttpServer::start() {
  asio::co_spawn(impl_->acceptor.get_executor(), impl_->acceptLoop(impl_), asio::detached);
}

void HttpServer::stop() {
  if (impl_->stopping.exchange(true)) return;
  auto impl = impl_;
  asio::post(impl->acceptor.get_executor(), [impl] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
  });
  std::lock_guard lock(impl->mutex);
  for (auto& [id, entry] : impl->connections) {
    asio::post(entry.first, [state = entry.second] {
      if (state->lowest != nullptr && state->idle) state->lowest->cancel();
      if (state->stream_wait != nullptr) state->stream_wait->cancel();
    });
  }
}

std::size_t HttpServer::connectionCount() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->connections.size();
}

std::size_t HttpServer::eventStreamCount() const { return impl_->open_streams.load(); }

}  // namespace iothub::transport
