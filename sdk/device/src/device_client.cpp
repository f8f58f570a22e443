// The only translation unit of the device SDK that includes Asio and OpenSSL streams.
//
// Shape: one io_context on one thread owns every piece of mutable state. The MQTT protocol
// (CONNACK, SUBACK and PUBACK matching, packet ids, keep-alive, protocol errors) is
// mqtt::ClientSession, a Sans-I/O state machine; this file moves its packets to and from the
// socket and carries out its actions (execute()). A run loop (runLoop) connects, waits for
// the connection to end and reconnects with back-off; each connection has a reader, a
// writer, a keep-alive timer and a token-renewal coroutine. Operations (twin requests,
// telemetry) are coroutines of their own that wait for a ready connection, send, and wait
// for their answer. Everyone waits on one ChangeNotifier and re-checks its condition when
// woken, which keeps the state machine in plain members instead of callback chains.

#include "iothub/device/device_client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <exception>
#include <future>
#include <list>
#include <set>
#include <thread>
#include <vector>

#include "auth/connection_string.hpp"
#include "auth/sas_token.hpp"
#include "device_protocol.hpp"
#include "iothub/sdk/tls_client.hpp"
#include "mqtt/client_session.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/topic.hpp"

namespace iothub::device {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using SteadyClock = std::chrono::steady_clock;
using SteadyTime = SteadyClock::time_point;

constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 16 * 1024;
// Twin documents are at most a few hundred KB; anything near this is not a hub talking.
constexpr std::size_t kMaxInboundPacket = 4 * 1024 * 1024;
// How long DISCONNECT may take to be written before the socket is closed anyway.
constexpr std::chrono::seconds kDisconnectFlushTimeout{2};

// Exceptions escaping a coroutine are bugs (bad_alloc at worst): crash loudly.
void rethrowIfFailed(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

std::string milliseconds(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

// Wakes every coroutine that waits for "something changed". Each waiter sleeps on a timer of
// its own with its own deadline; notifyAll() cancels them all. I/O thread only.
//
// Throughout this file co_await only appears as a statement or as the initializer of a
// variable: GCC 12 miscompiles it inside a condition (`if (!co_await f())` resumed a
// finished frame and died with SIGILL).
class ChangeNotifier {
 public:
  // Waits for the next notifyAll() or `deadline`. False when the deadline passed.
  awaitable<bool> wait(SteadyTime deadline) {
    if (SteadyClock::now() >= deadline) co_return false;
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor, deadline);
    auto position = waiters_.insert(waiters_.end(), &timer);
    auto [ec] = co_await timer.async_wait(kAwaitTuple);
    waiters_.erase(position);
    co_return ec == asio::error::operation_aborted;
  }

  // Waits until `done()` holds or `deadline` passes; returns done().
  template <class Predicate>
  awaitable<bool> waitUntil(Predicate done, SteadyTime deadline) {
    while (!done()) {
      bool notified = co_await wait(deadline);
      if (!notified) co_return done();
    }
    co_return true;
  }

  void notifyAll() {
    for (asio::steady_timer* timer : waiters_) timer->cancel();
  }

 private:
  std::list<asio::steady_timer*> waiters_;
};

enum class EndReason { None, Lost, TokenRenewal, ClientClose };

// One network connection to the hub and its MQTT state.
struct Connection {
  Connection(asio::io_context& ioc, ssl::context* tls_context) : resolver(ioc), socket(ioc) {
    if (tls_context != nullptr) tls.emplace(socket, *tls_context);
  }

  tcp::resolver resolver;
  tcp::socket socket;
  std::optional<ssl::stream<tcp::socket&>> tls;
  mqtt::Decoder decoder{kMaxInboundPacket};

  std::string outbox;  // encoded packets not yet handed to the socket
  bool writing = false;
  SteadyTime token_created{};

  bool accepted = false;  // CONNACK 0 received
  bool session_present = false;
  std::optional<mqtt::ConnectReturnCode> refused_with;  // CONNACK other than 0
  // Set once CONNACK accepted and the SUBACK of the (re-)subscriptions made right after it
  // arrived: only then does the client report Connected and let operations through.
  bool ready = false;
  std::uint16_t initial_subscribe_id = 0;
  std::set<std::string, std::less<>> subscribed;   // SUBACKed (or kept by the session)
  std::set<std::string, std::less<>> subscribing;  // SUBSCRIBE sent, no SUBACK yet
  std::set<std::string, std::less<>> refused;      // SUBACK 0x80

  bool closed = false;
  EndReason planned_end = EndReason::None;  // DISCONNECT on its way
  EndReason end = EndReason::None;
  std::string detail;
};

awaitable<std::tuple<boost::system::error_code, std::size_t>> readSome(Connection& conn,
                                                                       asio::mutable_buffer b) {
  if (conn.tls) {
    auto result = co_await conn.tls->async_read_some(b, kAwaitTuple);
    co_return result;
  }
  auto result = co_await conn.socket.async_read_some(b, kAwaitTuple);
  co_return result;
}

awaitable<std::tuple<boost::system::error_code, std::size_t>> writeAll(Connection& conn,
                                                                       asio::const_buffer b) {
  if (conn.tls) {
    auto result = co_await asio::async_write(*conn.tls, b, kAwaitTuple);
    co_return result;
  }
  auto result = co_await asio::async_write(conn.socket, b, kAwaitTuple);
  co_return result;
}

std::string_view refusalText(mqtt::ConnectReturnCode code) {
  switch (code) {
    case mqtt::ConnectReturnCode::UnacceptableProtocolVersion:
      return "Unacceptable protocol version";
    case mqtt::ConnectReturnCode::IdentifierRejected:
      return "Identifier rejected";
    case mqtt::ConnectReturnCode::ServerUnavailable:
      return "Server unavailable";
    case mqtt::ConnectReturnCode::BadUserNameOrPassword:
      return "Bad username or password";
    case mqtt::ConnectReturnCode::NotAuthorized:
      return "Not authorized";
    case mqtt::ConnectReturnCode::Accepted:
      break;
  }
  return "Unknown return code";
}

// The outcome of one connection attempt.
struct ConnectOutcome {
  Status status;
  bool credentials_refused = false;  // CONNACK 1, 2, 4 or 5
  std::shared_ptr<Connection> connection;
};

struct TwinReply {
  mqtt::azure::TwinResponseTopic topic;
  std::string payload;
};

enum class TwinOperation { Get, PatchReported };

}  // namespace

class DeviceClient::Impl {
 public:
  Impl(auth::DeviceConnectionString connection_string, DeviceClientOptions options,
       detail::HostPort target, std::shared_ptr<const Clock> clock, std::shared_ptr<Random> random)
      : connection_string_(std::move(connection_string)),
        options_(std::move(options)),
        target_(std::move(target)),
        verify_host_(detail::hostWithoutPort(connection_string_.host_name)),
        user_name_(
            detail::mqttUserName(connection_string_.host_name, connection_string_.device_id)),
        resource_(auth::deviceResource(connection_string_.host_name, connection_string_.device_id)),
        clock_(std::move(clock)),
        random_(std::move(random)),
        work_(ioc_.get_executor()) {}

  // Runs after close(): every coroutine is then finishing (connections are closed, operations
  // were woken to fail with Cancelled), so the I/O thread drains the queue, which calls every
  // pending completion, and returns.
  ~Impl() {
    work_.reset();
    if (thread_.joinable()) thread_.join();
  }

  Status init() {
    if (options_.use_tls) {
      auto context = sdk::makeClientTlsContext(options_.ca_file);
      if (!context) return context.status();
      tls_context_.emplace(std::move(*context));
    }
    // Sign once now so that a bad key fails in create(), not on the first connection.
    auto probe = makeToken();
    if (!probe) return probe.status();
    thread_ = std::thread([this] { ioc_.run(); });
    return Status::ok();
  }

  bool onIoThread() { return ioc_.get_executor().running_in_this_thread(); }

  const std::string& deviceId() const { return connection_string_.device_id; }
  const std::string& hostName() const { return connection_string_.host_name; }
  const std::string& endpoint() const { return target_.text; }

  // ---- Entry points: any thread; everything they touch is on the I/O thread. ----

  template <class F>
  void post(F&& f) {
    asio::post(ioc_, std::forward<F>(f));
  }

  void onMethod(std::string name, MethodHandler handler) {
    post([this, name = std::move(name), handler = std::move(handler)]() mutable {
      methods_[std::move(name)] = std::move(handler);
      wantFilter(mqtt::azure::kMethodRequestFilter);
    });
  }

  void onDesired(DesiredHandler handler) {
    post([this, handler = std::move(handler)]() mutable {
      desired_handler_ = std::move(handler);
      wantFilter(mqtt::azure::kDesiredPatchFilter);
    });
  }

  void onConnectionStatus(ConnectionStatusHandler handler) {
    post([this, handler = std::move(handler)]() mutable { status_handler_ = std::move(handler); });
  }

  void startOpen(std::function<void(Status)> done) {
    post([this, done = std::move(done)]() mutable {
      if (closing_) {
        done(Status(ErrorCode::InvalidOperation, "close() is in progress"));
        return;
      }
      if (running_ && opened_) {
        done(Status::ok());
        return;
      }
      open_waiters_.push_back(std::move(done));
      if (!running_) {
        running_ = true;
        opened_ = false;
        ++run_id_;
        stop_status_ = Status::ok();
        asio::co_spawn(ioc_, runLoop(), rethrowIfFailed);
      }
    });
  }

  void startClose(std::function<void()> done) {
    post([this, done = std::move(done)]() mutable {
      if (!running_) {
        if (done) done();
        return;
      }
      if (done) close_waiters_.push_back(std::move(done));
      if (closing_) return;
      closing_ = true;
      // A connection still being set up is abandoned; an established one gets its
      // DISCONNECT from runLoop.
      if (connection_ && !connection_->ready) {
        abortConnection(connection_, EndReason::ClientClose, "closed by the application");
      }
      changed_.notifyAll();
    });
  }

  void getTwinAsync(std::function<void(Result<json::object>)> done) {
    post([this, done = std::move(done)]() mutable {
      asio::co_spawn(ioc_, getTwinOperation(std::move(done)), rethrowIfFailed);
    });
  }

  void patchReportedAsync(json::object patch, std::function<void(Result<std::int64_t>)> done) {
    post([this, patch = std::move(patch), done = std::move(done)]() mutable {
      asio::co_spawn(ioc_, patchReportedOperation(std::move(patch), std::move(done)),
                     rethrowIfFailed);
    });
  }

  void sendEventAsync(std::string payload, MessageProperties properties,
                      std::function<void(Status)> done) {
    post([this, payload = std::move(payload), properties = std::move(properties),
          done = std::move(done)]() mutable {
      asio::co_spawn(ioc_,
                     sendEventOperation(std::move(payload), std::move(properties), std::move(done)),
                     rethrowIfFailed);
    });
  }

 private:
  // ---- Connection lifecycle ----

  awaitable<void> runLoop() {
    int failures = 0;
    bool back_off = false;
    while (!closing_) {
      if (back_off) {
        auto delay = backoffDelay(options_.retry, failures, *random_);
        co_await changed_.waitUntil([this] { return closing_; }, SteadyClock::now() + delay);
        if (closing_) break;
      }
      back_off = true;
      ConnectOutcome outcome = co_await connectOnce();
      if (closing_) {
        if (outcome.connection) {
          co_await disconnectGracefully(outcome.connection, EndReason::ClientClose);
        }
        break;
      }
      if (!outcome.status.isOk()) {
        if (outcome.credentials_refused && !opened_) {
          // Final, like the Node SDK's "Failure on first connection": a wrong key or a
          // disabled device does not fix itself, and open() must say so.
          report(ConnectionStatus::Disconnected, ConnectionStatusReason::BadCredential,
                 outcome.status.message());
          stop_status_ = outcome.status;
          break;
        }
        ++failures;
        if (options_.retry.max_attempts && failures >= *options_.retry.max_attempts) {
          report(ConnectionStatus::Disconnected, ConnectionStatusReason::RetryExpired,
                 outcome.status.message());
          stop_status_ =
              Status(ErrorCode::ServiceUnavailable,
                     "Gave up after " + std::to_string(failures) +
                         " failed connection attempts; last: " + outcome.status.message());
          break;
        }
        report(ConnectionStatus::DisconnectedRetrying,
               outcome.credentials_refused ? ConnectionStatusReason::BadCredential
                                           : ConnectionStatusReason::CommunicationError,
               outcome.status.message());
        continue;
      }

      failures = 0;
      opened_ = true;
      report(ConnectionStatus::Connected, ConnectionStatusReason::ConnectionOk, "");
      finishOpen(Status::ok());
      auto conn = outcome.connection;
      co_await changed_.waitUntil([&] { return conn->closed || closing_; }, SteadyTime::max());
      if (closing_) {
        co_await disconnectGracefully(conn, EndReason::ClientClose);
        break;
      }
      if (conn->end == EndReason::TokenRenewal) {
        report(ConnectionStatus::DisconnectedRetrying, ConnectionStatusReason::TokenRenewal, "");
        back_off = false;
        continue;
      }
      report(ConnectionStatus::DisconnectedRetrying, ConnectionStatusReason::CommunicationError,
             conn->detail);
    }

    if (connection_) abortConnection(connection_, EndReason::ClientClose, "client stopped");
    connection_.reset();
    if (closing_) {
      stop_status_ = Status(ErrorCode::Cancelled, "The client was closed");
      report(ConnectionStatus::Disconnected, ConnectionStatusReason::ClientClose, "");
    }
    running_ = false;
    closing_ = false;
    opened_ = false;
    finishOpen(stop_status_);
    changed_.notifyAll();
    auto waiters = std::move(close_waiters_);
    close_waiters_.clear();
    for (auto& done : waiters) done();
  }

  awaitable<ConnectOutcome> connectOnce() {
    auto conn = std::make_shared<Connection>(ioc_, tls_context_ ? &*tls_context_ : nullptr);
    connection_ = conn;
    const SteadyTime deadline = SteadyClock::now() + options_.connect_timeout;
    asio::co_spawn(ioc_, connectWatchdog(conn, deadline), rethrowIfFailed);

    auto fail = [&](std::string why) {
      abortConnection(conn, EndReason::Lost, why);
      // A watchdog or close() may have ended the attempt first; its reason is the real one.
      return ConnectOutcome{Status(ErrorCode::ServiceUnavailable, conn->detail), false, nullptr};
    };

    auto [resolve_error, endpoints] = co_await conn->resolver.async_resolve(
        target_.host, std::to_string(target_.port), kAwaitTuple);
    if (resolve_error || conn->closed) {
      co_return fail("cannot resolve " + target_.host + ": " + resolve_error.message());
    }
    auto [connect_error, endpoint] =
        co_await asio::async_connect(conn->socket, endpoints, kAwaitTuple);
    if (connect_error || conn->closed) {
      co_return fail("cannot connect to " + target_.text + ": " + connect_error.message());
    }
    boost::system::error_code ignored;
    conn->socket.set_option(tcp::no_delay(true), ignored);
    if (conn->tls) {
      SSL* handle = conn->tls->native_handle();
      sdk::expectServerName(handle, verify_host_);
      auto [handshake_error] =
          co_await conn->tls->async_handshake(ssl::stream_base::client, kAwaitTuple);
      if (handshake_error || conn->closed) {
        co_return fail("TLS handshake with " + target_.text +
                       " failed: " + sdk::handshakeFailureReason(handle, handshake_error));
      }
    }

    auto token = makeToken();
    if (!token) co_return fail(token.status().message());
    conn->token_created = SteadyClock::now();
    mqtt::Connect connect;
    connect.client_id = connection_string_.device_id;
    connect.clean_session = false;
    connect.keep_alive = options_.keep_alive_seconds;
    connect.user_name = user_name_;
    connect.password = std::move(*token);
    execute(conn, session_.connect(std::move(connect), SteadyClock::now()));

    auto packet = co_await readPacket(conn);
    if (!packet) co_return fail(packet.status().message());
    execute(conn, session_.onPacket(std::move(*packet), SteadyClock::now()));
    if (conn->refused_with) {
      auto rc = *conn->refused_with;
      std::string why = "Connection refused: " + std::string(refusalText(rc)) + " (CONNACK " +
                        std::to_string(static_cast<int>(rc)) + ")";
      abortConnection(conn, EndReason::Lost, why);
      ErrorCode code = ErrorCode::ServiceUnavailable;
      bool credentials = false;
      if (rc == mqtt::ConnectReturnCode::BadUserNameOrPassword ||
          rc == mqtt::ConnectReturnCode::NotAuthorized) {
        code = ErrorCode::Unauthorized;
        credentials = true;
      } else if (rc != mqtt::ConnectReturnCode::ServerUnavailable) {
        code = ErrorCode::ArgumentInvalid;
        credentials = true;
      }
      co_return ConnectOutcome{Status(code, why), credentials, nullptr};
    }
    if (!conn->accepted) co_return fail(conn->detail);  // the session closed it

    // Clean session 0: the hub keeps our subscriptions while it says session-present. When
    // it does not, everything in use is subscribed again (the Node SDK would not,
    // docs/protocol.md §2.6).
    if (conn->session_present) {
      conn->subscribed = session_filters_;
    } else {
      session_filters_.clear();
    }
    asio::co_spawn(ioc_, readLoop(conn), rethrowIfFailed);
    asio::co_spawn(ioc_, keepAliveLoop(conn), rethrowIfFailed);
    asio::co_spawn(ioc_, renewalLoop(conn), rethrowIfFailed);

    std::vector<std::string> missing;
    for (const auto& filter : wanted_filters_) {
      if (!conn->subscribed.contains(filter)) missing.push_back(filter);
    }
    if (missing.empty()) {
      conn->ready = true;
    } else {
      conn->initial_subscribe_id = subscribe(conn, std::move(missing));
    }
    co_await changed_.waitUntil([&] { return conn->ready || conn->closed; }, SteadyTime::max());
    if (conn->closed) {
      co_return ConnectOutcome{Status(ErrorCode::ServiceUnavailable, conn->detail), false, nullptr};
    }
    changed_.notifyAll();
    co_return ConnectOutcome{Status::ok(), false, conn};
  }

  // Bounds a connection attempt, from name resolution to the first SUBACK.
  awaitable<void> connectWatchdog(std::shared_ptr<Connection> conn, SteadyTime deadline) {
    bool settled =
        co_await changed_.waitUntil([&] { return conn->ready || conn->closed; }, deadline);
    if (!settled) {
      abortConnection(conn, EndReason::Lost,
                      "connection attempt to " + target_.text + " timed out after " +
                          milliseconds(options_.connect_timeout));
    }
  }

  // The next packet from the hub. A decode error goes to the session, which closes the
  // connection; the error then carries its reason.
  awaitable<Result<mqtt::Packet>> readPacket(const std::shared_ptr<Connection>& conn) {
    for (;;) {
      auto next = conn->decoder.next();
      if (!next) {
        execute(conn, session_.onDecodeError(conn->decoder.lastError(), next.status().message()));
        abortConnection(conn, EndReason::Lost, "malformed packet: " + next.status().message());
        co_return Status(ErrorCode::IotHubFormatError, conn->detail);
      }
      if (*next) co_return std::move(**next);
      auto buffer = conn->decoder.prepare(kReadChunk);
      auto [ec, n] = co_await readSome(*conn, asio::buffer(buffer.data(), buffer.size()));
      if (conn->closed) co_return Status(ErrorCode::ServiceUnavailable, conn->detail);
      if (ec) {
        co_return Status(ErrorCode::ServiceUnavailable,
                         ec == asio::error::eof ? std::string("the hub closed the connection")
                                                : "connection lost: " + ec.message());
      }
      conn->decoder.commit(n);
    }
  }

  awaitable<void> readLoop(std::shared_ptr<Connection> conn) {
    while (!conn->closed) {
      auto packet = co_await readPacket(conn);
      if (!packet) {
        abortConnection(conn, EndReason::Lost, packet.status().message());
        co_return;
      }
      execute(conn, session_.onPacket(std::move(*packet), SteadyClock::now()));
    }
  }

  awaitable<void> writeLoop(std::shared_ptr<Connection> conn) {
    while (!conn->outbox.empty() && !conn->closed) {
      std::string chunk;
      chunk.swap(conn->outbox);
      auto [ec, n] = co_await writeAll(*conn, asio::buffer(chunk));
      if (ec) {
        abortConnection(conn, EndReason::Lost, "connection lost while sending: " + ec.message());
        break;
      }
    }
    conn->writing = false;
    changed_.notifyAll();
  }

  // Calls the session's onTick() at its deadlines (PINGREQ after keep_alive seconds without
  // sending; no PINGRESP within another keep-alive period closes) while `conn` lives.
  awaitable<void> keepAliveLoop(std::shared_ptr<Connection> conn) {
    while (!conn->closed) {
      std::optional<SteadyTime> due = session_.nextDeadline();
      if (!due) co_return;
      co_await changed_.waitUntil([&] { return conn->closed; }, *due);
      if (conn->closed) co_return;
      execute(conn, session_.onTick(SteadyClock::now()));
    }
  }

  // Reconnects with a fresh SAS token renew_before its expiry, like the Node SDK
  // (docs/protocol.md §1.9). Twin requests already sent are given up to request_timeout to be
  // answered first: their answers would be lost with the connection.
  awaitable<void> renewalLoop(std::shared_ptr<Connection> conn) {
    SteadyTime due = conn->token_created + (options_.token_lifetime - options_.renew_before);
    co_await changed_.waitUntil([&] { return conn->closed; }, due);
    co_await changed_.waitUntil([&] { return conn->closed || twin_replies_.empty(); },
                                SteadyClock::now() + options_.request_timeout);
    if (!conn->closed) co_await disconnectGracefully(conn, EndReason::TokenRenewal);
  }

  awaitable<void> disconnectGracefully(std::shared_ptr<Connection> conn, EndReason reason) {
    if (conn->closed) co_return;
    // The hub closes its end on DISCONNECT; the reader must not mistake that for a drop.
    // A second caller (close() during a renewal) only waits for the first one's DISCONNECT.
    if (conn->planned_end == EndReason::None) {
      conn->planned_end = reason;
      execute(conn, session_.disconnect());
    }
    co_await changed_.waitUntil(
        [&] { return conn->closed || (!conn->writing && conn->outbox.empty()); },
        SteadyClock::now() + kDisconnectFlushTimeout);
    abortConnection(conn, reason, "disconnected");
  }

  void abortConnection(const std::shared_ptr<Connection>& conn, EndReason reason, std::string why) {
    if (conn->closed) return;
    conn->closed = true;
    conn->end = conn->planned_end != EndReason::None ? conn->planned_end : reason;
    conn->detail = std::move(why);
    if (conn == connection_) session_.connectionLost();
    boost::system::error_code ignored;
    conn->resolver.cancel();
    if (conn->socket.is_open()) {
      conn->socket.shutdown(tcp::socket::shutdown_both, ignored);
      conn->socket.close(ignored);
    }
    changed_.notifyAll();
  }

  void finishOpen(const Status& status) {
    auto waiters = std::move(open_waiters_);
    open_waiters_.clear();
    for (auto& done : waiters) done(status);
  }

  void report(ConnectionStatus status, ConnectionStatusReason reason, const std::string& why) {
    if (last_reported_ && last_reported_->first == status && last_reported_->second == reason) {
      return;
    }
    last_reported_ = {status, reason};
    if (status_handler_) status_handler_(ConnectionStatusChange{status, reason, why});
  }

  Result<std::string> makeToken() const {
    std::int64_t expiry = unixSeconds(clock_->now()) + options_.token_lifetime.count();
    std::optional<std::string_view> key_name;
    if (connection_string_.shared_access_key_name) {
      key_name = *connection_string_.shared_access_key_name;
    }
    return auth::buildSasToken(resource_, *connection_string_.shared_access_key, key_name, expiry);
  }

  // ---- Packets ----

  // Carries out what the session asks, in order.
  void execute(const std::shared_ptr<Connection>& conn, mqtt::ClientActions actions) {
    for (auto& action : actions) {
      if (auto* send = std::get_if<mqtt::SendPacket>(&action)) {
        write(conn, send->packet);
      } else if (auto* close = std::get_if<mqtt::CloseClientConnection>(&action)) {
        // A DISCONNECT of ours is flushed by disconnectGracefully, which then closes.
        if (close->reason != mqtt::ClientCloseReason::Disconnected) {
          abortConnection(conn, EndReason::Lost, std::move(close->detail));
        }
      } else if (auto* accepted = std::get_if<mqtt::ConnectionAccepted>(&action)) {
        conn->accepted = true;
        conn->session_present = accepted->session_present;
      } else if (auto* refused = std::get_if<mqtt::ConnectionRefused>(&action)) {
        conn->refused_with = refused->code;
      } else if (auto* subscribed = std::get_if<mqtt::SubscribeCompleted>(&action)) {
        onSubscribeCompleted(conn, *subscribed);
      } else if (auto* completed = std::get_if<mqtt::PublishCompleted>(&action)) {
        auto event = events_.find(completed->packet_id);
        if (event != events_.end()) {
          *event->second = true;
          events_.erase(event);
          changed_.notifyAll();
        }
      } else if (auto* received = std::get_if<mqtt::MessageReceived>(&action)) {
        handlePublish(conn, received->publish);
      }
    }
  }

  // Appends the packet's bytes to the connection's outbox and starts the writer if idle.
  void write(const std::shared_ptr<Connection>& conn, const mqtt::Packet& packet) {
    if (conn->closed) return;
    // The session validates what it builds from untrusted input; a CONNECT built from an
    // absurd connection string (a host name over 64 KiB) can still fail here.
    if (Status encoded = mqtt::encode(packet, conn->outbox); !encoded) {
      abortConnection(conn, EndReason::Lost, "cannot encode a packet: " + encoded.message());
      return;
    }
    if (!conn->writing) {
      conn->writing = true;
      asio::co_spawn(ioc_, writeLoop(conn), rethrowIfFailed);
    }
  }

  // True when `conn` can take requests: CONNACKed, subscribed as first needed, not closing.
  bool isReady(const std::shared_ptr<Connection>& conn) const {
    return conn && conn->ready && !conn->closed &&
           session_.state() == mqtt::ClientSession::State::Connected;
  }

  std::uint16_t subscribe(const std::shared_ptr<Connection>& conn,
                          std::vector<std::string> filters) {
    std::vector<mqtt::Subscription> subscriptions;
    for (const auto& filter : filters) {
      subscriptions.push_back({filter, mqtt::QoS::AtMostOnce});
    }
    auto sent = session_.subscribe(std::move(subscriptions), SteadyClock::now());
    if (!sent) {
      abortConnection(conn, EndReason::Lost, "cannot subscribe: " + sent.status().message());
      return 0;
    }
    for (auto& filter : filters) conn->subscribing.insert(std::move(filter));
    execute(conn, std::move(sent->actions));
    return sent->packet_id;
  }

  // Records that `filter` is in use from now on; subscribes at once when connected (a
  // connection that has no CONNACK yet subscribes everything wanted when it gets it).
  void wantFilter(std::string_view filter) {
    if (!wanted_filters_.insert(std::string(filter)).second) return;
    if (connection_ && connection_->accepted && !connection_->closed &&
        session_.state() == mqtt::ClientSession::State::Connected) {
      subscribe(connection_, {std::string(filter)});
    }
  }

  void onSubscribeCompleted(const std::shared_ptr<Connection>& conn,
                            const mqtt::SubscribeCompleted& suback) {
    for (std::size_t i = 0; i < suback.filters.size(); ++i) {
      const std::string& filter = suback.filters[i];
      conn->subscribing.erase(filter);
      if (suback.codes[i] == mqtt::SubAckReturnCode::Failure) {
        conn->refused.insert(filter);
      } else {
        conn->subscribed.insert(filter);
        session_filters_.insert(filter);
      }
    }
    if (suback.packet_id == conn->initial_subscribe_id) conn->ready = true;
    changed_.notifyAll();
  }

  void handlePublish(const std::shared_ptr<Connection>& conn, const mqtt::Publish& publish) {
    if (auto request = mqtt::azure::parseMethodRequestTopic(publish.topic)) {
      auto handler = methods_.find(request->name);
      detail::MethodAnswer answer = detail::answerMethod(
          handler == methods_.end() ? nullptr : &handler->second, request->name, publish.payload);
      mqtt::Publish response;
      response.topic = mqtt::azure::methodResponseTopic(answer.status, request->rid);
      response.payload = std::move(answer.payload);
      // A rid that cannot be echoed in a topic name cannot be answered; the hub times out.
      auto sent = session_.publish(std::move(response), SteadyClock::now());
      if (sent) execute(conn, std::move(sent->actions));
      return;
    }
    if (auto response = mqtt::azure::parseTwinResponseTopic(publish.topic)) {
      auto waiting = twin_replies_.find(response->rid);
      if (waiting != twin_replies_.end() && !waiting->second) {
        waiting->second = TwinReply{std::move(*response), publish.payload};
        changed_.notifyAll();
      }
      return;
    }
    if (auto desired = mqtt::azure::parseDesiredPatchTopic(publish.topic)) {
      auto update = detail::parseDesiredUpdate(*desired, publish.payload);
      if (update && desired_handler_) desired_handler_(update->patch, update->version);
    }
  }

  // ---- Operations ----

  Status notUsableStatus(std::uint64_t run) const {
    if (run != run_id_ || closing_ || stop_status_.code() == ErrorCode::Cancelled) {
      return Status(ErrorCode::Cancelled, "The client was closed");
    }
    if (!running_) return stop_status_;
    return Status::ok();
  }

  bool usable(std::uint64_t run) const { return running_ && !closing_ && run == run_id_; }

  static Status notOpenStatus() {
    return Status(ErrorCode::InvalidOperation, "The client is not open; call open() first");
  }

  // Waits for a Connected connection on which `filter` (if any) is subscribed.
  awaitable<Result<std::shared_ptr<Connection>>> readyConnection(
      std::uint64_t run, std::optional<std::string_view> filter, SteadyTime deadline,
      std::string_view what) {
    if (filter) wantFilter(*filter);
    for (;;) {
      if (!usable(run)) co_return notUsableStatus(run);
      auto conn = connection_;
      bool connected = isReady(conn);
      if (connected) {
        if (!filter || conn->subscribed.contains(*filter)) co_return conn;
        if (conn->refused.contains(*filter)) {
          co_return Status(ErrorCode::Unauthorized,
                           "The hub refused the subscription to " + std::string(*filter));
        }
        if (!conn->subscribing.contains(*filter)) subscribe(conn, {std::string(*filter)});
      }
      bool notified = co_await changed_.wait(deadline);
      if (!notified) {
        co_return Status(
            ErrorCode::GatewayTimeout,
            std::string(what) + " timed out after " + milliseconds(options_.request_timeout) +
                (connected ? " waiting for the hub's SUBACK" : " waiting for a connection"));
      }
    }
  }

  awaitable<Result<TwinReply>> twinRequest(std::uint64_t run, TwinOperation operation,
                                           std::string payload) {
    const std::string_view what =
        operation == TwinOperation::Get ? "twin GET" : "reported properties PATCH";
    const SteadyTime deadline = SteadyClock::now() + options_.request_timeout;
    auto ready = co_await readyConnection(run, mqtt::azure::kTwinResponseFilter, deadline, what);
    if (!ready) co_return ready.status();
    auto conn = std::move(*ready);
    std::string rid = std::to_string(next_rid_++);
    std::string topic = operation == TwinOperation::Get ? mqtt::azure::twinGetTopic(rid)
                                                        : mqtt::azure::twinPatchReportedTopic(rid);
    auto& reply = twin_replies_[rid];  // std::map: the reference survives other inserts
    mqtt::Publish request;
    request.topic = std::move(topic);
    request.payload = std::move(payload);
    auto sent = session_.publish(std::move(request), SteadyClock::now());
    if (!sent) {
      twin_replies_.erase(rid);
      co_return sent.status();
    }
    execute(conn, std::move(sent->actions));
    co_await changed_.waitUntil([&] { return reply.has_value() || conn->closed || !usable(run); },
                                deadline);
    std::optional<TwinReply> answer = std::move(reply);
    twin_replies_.erase(rid);
    if (answer) co_return std::move(*answer);
    if (!usable(run)) co_return notUsableStatus(run);
    if (conn->closed) {
      co_return Status(ErrorCode::ServiceUnavailable,
                       std::string(what) + ": the connection dropped before the hub answered (" +
                           conn->detail + "); the request may or may not have been applied");
    }
    co_return Status(ErrorCode::GatewayTimeout, std::string(what) + " timed out after " +
                                                    milliseconds(options_.request_timeout) +
                                                    " without an answer from the hub");
  }

  awaitable<void> getTwinOperation(std::function<void(Result<json::object>)> done) {
    if (!running_) {
      done(notOpenStatus());
      co_return;
    }
    auto reply = co_await twinRequest(run_id_, TwinOperation::Get, "");
    if (!reply) {
      done(reply.status());
      co_return;
    }
    done(detail::twinFromResponse(reply->topic.status, reply->payload));
  }

  awaitable<void> patchReportedOperation(json::object patch,
                                         std::function<void(Result<std::int64_t>)> done) {
    if (!running_) {
      done(notOpenStatus());
      co_return;
    }
    auto reply =
        co_await twinRequest(run_id_, TwinOperation::PatchReported, json::serialize(patch));
    if (!reply) {
      done(reply.status());
      co_return;
    }
    done(detail::reportedVersionFromResponse(reply->topic, reply->payload));
  }

  awaitable<void> sendEventOperation(std::string payload, MessageProperties properties,
                                     std::function<void(Status)> done) {
    Status status = co_await publishEvent(std::move(payload), properties);
    done(std::move(status));
  }

  awaitable<Status> publishEvent(std::string payload, const MessageProperties& properties) {
    if (payload.size() > detail::kMaxEventPayloadBytes) {
      co_return Status(ErrorCode::MessageTooLarge,
                       "Telemetry payload of " + std::to_string(payload.size()) +
                           " bytes exceeds the limit of " +
                           std::to_string(detail::kMaxEventPayloadBytes));
    }
    const std::string topic = mqtt::azure::telemetryTopic(connection_string_.device_id, properties);
    if (Status valid = mqtt::validateTopicName(topic); !valid) {
      co_return Status(ErrorCode::ArgumentInvalid, "Invalid telemetry topic: " + valid.message());
    }
    if (!running_) co_return notOpenStatus();
    const std::uint64_t run = run_id_;
    const SteadyTime deadline = SteadyClock::now() + options_.request_timeout;
    mqtt::Publish message;
    message.topic = topic;
    message.payload = std::move(payload);
    message.qos = mqtt::QoS::AtLeastOnce;
    // Set by execute() on PUBACK; its own object, since the id may be reused at once.
    auto acked = std::make_shared<bool>(false);
    std::uint16_t id = 0;  // assigned by the session on the first send
    Status result;
    for (;;) {
      auto ready = co_await readyConnection(run, std::nullopt, deadline, "telemetry");
      if (!ready) {
        result = ready.status();
        break;
      }
      auto conn = std::move(*ready);
      if (id == 0) {
        auto sent = session_.publish(message, SteadyClock::now());
        if (!sent) {
          result = sent.status();
          break;
        }
        id = sent->packet_id;
        message.packet_id = id;
        events_[id] = acked;
        execute(conn, std::move(sent->actions));
      } else {
        // Not acknowledged on an earlier connection: sent again with DUP (MQTT §4.4).
        auto sent = session_.republish(message, SteadyClock::now());
        if (!sent) {
          result = sent.status();
          break;
        }
        execute(conn, std::move(*sent));
      }
      co_await changed_.waitUntil([&] { return *acked || conn->closed || !usable(run); }, deadline);
      if (*acked) {
        result = Status::ok();
        break;
      }
      if (!usable(run)) {
        result = notUsableStatus(run);
        break;
      }
      if (!conn->closed) {
        result = Status(ErrorCode::GatewayTimeout, "telemetry timed out after " +
                                                       milliseconds(options_.request_timeout) +
                                                       " without PUBACK");
        break;
      }
    }
    if (id != 0 && !*acked) {
      // Given up: the id is free again, and a late PUBACK for it is ignored.
      session_.abandon(id);
      events_.erase(id);
    }
    co_return result;
  }

  // ---- Immutable configuration ----
  const auth::DeviceConnectionString connection_string_;
  const DeviceClientOptions options_;
  const detail::HostPort target_;
  const std::string verify_host_;
  const std::string user_name_;
  const std::string resource_;
  const std::shared_ptr<const Clock> clock_;
  const std::shared_ptr<Random> random_;
  // Declared before ioc_ so that it outlives the streams destroyed with ioc_'s handlers.
  std::optional<ssl::context> tls_context_;

  asio::io_context ioc_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::thread thread_;

  // ---- I/O-thread state ----
  ChangeNotifier changed_;
  bool running_ = false;  // runLoop is alive
  bool closing_ = false;  // close() asked runLoop to stop
  bool opened_ = false;   // connected at least once in this run ("first connection" is over)
  std::uint64_t run_id_ = 0;
  Status stop_status_;  // why the last run ended
  std::vector<std::function<void(Status)>> open_waiters_;
  std::vector<std::function<void()>> close_waiters_;
  std::shared_ptr<Connection> connection_;
  std::set<std::string, std::less<>> wanted_filters_;   // features in use
  std::set<std::string, std::less<>> session_filters_;  // acknowledged in the hub's session
  std::map<std::string, MethodHandler, std::less<>> methods_;
  DesiredHandler desired_handler_;
  ConnectionStatusHandler status_handler_;
  std::optional<std::pair<ConnectionStatus, ConnectionStatusReason>> last_reported_;
  std::uint64_t next_rid_ = 1;
  std::map<std::string, std::optional<TwinReply>, std::less<>> twin_replies_;
  // The MQTT session: lives as long as the client, since packet ids of telemetry awaiting
  // PUBACK survive reconnects (clean session 0).
  mqtt::ClientSession session_;
  // Telemetry awaiting PUBACK: packet id -> the flag its sender waits on.
  std::map<std::uint16_t, std::shared_ptr<bool>> events_;
};

// ---- Public facade ----

Result<std::unique_ptr<DeviceClient>> DeviceClient::create(std::string_view connection_string,
                                                           DeviceClientOptions options,
                                                           std::shared_ptr<const Clock> clock,
                                                           std::shared_ptr<Random> random) {
  auto parsed = auth::DeviceConnectionString::parse(connection_string);
  if (!parsed) return parsed.status();
  if (!parsed->shared_access_key) {
    return Status(ErrorCode::ArgumentInvalid,
                  "The connection string has no SharedAccessKey (SharedAccessSignature and x509 "
                  "are not supported)");
  }
  if (parsed->module_id) {
    return Status(ErrorCode::ArgumentInvalid, "Module identities are not supported");
  }
  if (options.token_lifetime.count() <= 0 || options.renew_before.count() < 0 ||
      options.renew_before >= options.token_lifetime) {
    return Status(ErrorCode::ArgumentInvalid,
                  "token_lifetime must be positive and renew_before in [0, token_lifetime)");
  }
  if (options.request_timeout.count() <= 0 || options.connect_timeout.count() <= 0) {
    return Status(ErrorCode::ArgumentInvalid,
                  "request_timeout and connect_timeout must be positive");
  }
  IOTHUB_RETURN_IF_ERROR(validateRetryPolicy(options.retry));
  const std::uint16_t default_port =
      options.use_tls ? detail::kDefaultTlsPort : detail::kDefaultPlainPort;
  std::string where = !options.endpoint.empty()   ? options.endpoint
                      : parsed->gateway_host_name ? *parsed->gateway_host_name
                                                  : parsed->host_name;
  auto target = detail::parseHostPort(where, default_port);
  if (!target) return target.status();
  if (!clock) clock = std::make_shared<SystemClock>();
  if (!random) random = std::make_shared<SecureRandom>();
  auto impl = std::make_unique<Impl>(std::move(*parsed), std::move(options), std::move(*target),
                                     std::move(clock), std::move(random));
  IOTHUB_RETURN_IF_ERROR(impl->init());
  return std::unique_ptr<DeviceClient>(new DeviceClient(std::move(impl)));
}

DeviceClient::DeviceClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DeviceClient::~DeviceClient() {
  IOTHUB_CHECK(!impl_->onIoThread(), "a DeviceClient must not be destroyed from its own callbacks");
  close();
}

void DeviceClient::onMethod(std::string name, MethodHandler handler) {
  impl_->onMethod(std::move(name), std::move(handler));
}

void DeviceClient::onDesired(DesiredHandler handler) { impl_->onDesired(std::move(handler)); }

void DeviceClient::onConnectionStatus(ConnectionStatusHandler handler) {
  impl_->onConnectionStatus(std::move(handler));
}

namespace {
Status blockingFromCallback(std::string_view call) {
  return Status(ErrorCode::InvalidOperation,
                std::string(call) +
                    "() would block the client's I/O thread; use the Async variant in callbacks");
}
}  // namespace

Status DeviceClient::open() {
  if (impl_->onIoThread()) return blockingFromCallback("open");
  std::promise<Status> promise;
  auto future = promise.get_future();
  impl_->startOpen([&promise](Status status) { promise.set_value(std::move(status)); });
  return future.get();
}

void DeviceClient::close() {
  if (impl_->onIoThread()) {
    impl_->startClose(nullptr);
    return;
  }
  std::promise<void> promise;
  auto future = promise.get_future();
  impl_->startClose([&promise] { promise.set_value(); });
  future.get();
}

Result<json::object> DeviceClient::getTwin() {
  if (impl_->onIoThread()) return blockingFromCallback("getTwin");
  std::promise<Result<json::object>> promise;
  auto future = promise.get_future();
  impl_->getTwinAsync([&promise](Result<json::object> r) { promise.set_value(std::move(r)); });
  return future.get();
}

Result<std::int64_t> DeviceClient::patchReported(const json::object& patch) {
  if (impl_->onIoThread()) return blockingFromCallback("patchReported");
  std::promise<Result<std::int64_t>> promise;
  auto future = promise.get_future();
  impl_->patchReportedAsync(
      patch, [&promise](Result<std::int64_t> r) { promise.set_value(std::move(r)); });
  return future.get();
}

Status DeviceClient::sendEvent(std::string payload, const MessageProperties& properties) {
  if (impl_->onIoThread()) return blockingFromCallback("sendEvent");
  std::promise<Status> promise;
  auto future = promise.get_future();
  impl_->sendEventAsync(std::move(payload), properties,
                        [&promise](Status s) { promise.set_value(std::move(s)); });
  return future.get();
}

void DeviceClient::openAsync(std::function<void(Status)> done) {
  impl_->startOpen(std::move(done));
}

void DeviceClient::getTwinAsync(std::function<void(Result<json::object>)> done) {
  impl_->getTwinAsync(std::move(done));
}

void DeviceClient::patchReportedAsync(json::object patch,
                                      std::function<void(Result<std::int64_t>)> done) {
  impl_->patchReportedAsync(std::move(patch), std::move(done));
}

void DeviceClient::sendEventAsync(std::string payload, MessageProperties properties,
                                  std::function<void(Status)> done) {
  impl_->sendEventAsync(std::move(payload), std::move(properties), std::move(done));
}

const std::string& DeviceClient::deviceId() const { return impl_->deviceId(); }
const std::string& DeviceClient::hostName() const { return impl_->hostName(); }
const std::string& DeviceClient::endpoint() const { return impl_->endpoint(); }

}  // namespace iothub::device
