// The device endpoint's network side: all Asio code for MQTT lives in this translation unit.
#include "transport/mqtt_server.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/log.hpp"
#include "device_api/device_endpoint.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/server_session.hpp"
#include "mqtt/topic.hpp"
#include "routing/connection_registry.hpp"
#include "transport/accept_limit.hpp"
#include "transport/listen.hpp"
#include "transport/stream_types.hpp"
#include "transport/tls_socket.hpp"

namespace iothub::transport {

std::string_view disconnectReasonName(DisconnectReason reason) {
  switch (reason) {
    case DisconnectReason::ClientDisconnect:
      return "clientDisconnect";
    case DisconnectReason::ConnectionLost:
      return "connectionLost";
    case DisconnectReason::KeepAliveTimeout:
      return "keepAliveTimeout";
    case DisconnectReason::ProtocolError:
      return "protocolError";
    case DisconnectReason::AclViolation:
      return "aclViolation";
    case DisconnectReason::TokenExpired:
      return "tokenExpired";
    case DisconnectReason::NotReading:
      return "notReading";
    case DisconnectReason::Replaced:
      return "replaced";
    case DisconnectReason::Revoked:
      return "revoked";
    case DisconnectReason::Shutdown:
      return "shutdown";
    case DisconnectReason::ServerError:
      return "serverError";
  }
  return "unknown";
}

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using asio::awaitable;
constexpr auto kAwaitTuple = asio::as_tuple(asio::use_awaitable);
using SteadyClock = std::chrono::steady_clock;

// What every connection needs of the server, shared so connections may outlive it briefly.
struct ServerContext {
  ServerContext(asio::thread_pool& w, device_api::DeviceEndpoint& e, routing::ConnectionRegistry& c,
                MqttServerOptions o)
      : workers(w), endpoint(e), connections(c), options(std::move(o)) {
    if (!options.counters) options.counters = std::make_shared<MqttCounters>();
  }
  asio::thread_pool& workers;
  device_api::DeviceEndpoint& endpoint;
  routing::ConnectionRegistry& connections;
  MqttServerOptions options;
  MqttCounters& counters() { return *options.counters; }
  std::atomic<bool> stopping{false};
  std::mutex mutex;
  std::unordered_map<std::uint64_t, std::weak_ptr<routing::DeviceLink>> open;  // guarded by mutex
  std::uint64_t next_id = 0;                                                   // guarded by mutex
};

// Runs `fn` on the worker pool and resumes the calling coroutine on its own executor with
// the result. (Not written as a lambda coroutine: GCC 12 mishandles captures of coroutine
// lambdas, destroying them twice.)
// The job counts as queued for the device workers until it starts.
template <class Fn>
auto onWorker(ServerContext& server, Fn fn) {
  using R = std::invoke_result_t<Fn&>;
  return asio::async_initiate<decltype(asio::use_awaitable), void(R)>(
      [&server](auto handler, Fn f) {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        std::atomic<std::int64_t>& queued = server.counters().worker_jobs_queued;
        queued.fetch_add(1, std::memory_order_relaxed);
        asio::post(server.workers, [handler = std::move(handler), f = std::move(f),
                                    work = std::move(work), &queued]() mutable {
          queued.fetch_sub(1, std::memory_order_relaxed);
          R result = f();
          auto executor = asio::get_associated_executor(handler);
          asio::dispatch(executor,
                         [handler = std::move(handler), result = std::move(result)]() mutable {
                           std::move(handler)(std::move(result));
                         });
        });
      },
      asio::use_awaitable, std::move(fn));
}

// Hands a telemetry publish to the endpoint, which stores it without a worker thread
// waiting (docs/event-hubs.md §7), and resumes the calling coroutine on its own executor
// with the outcome once the message is durable or refused.
inline auto onTelemetry(device_api::DeviceEndpoint& endpoint, std::string device,
                        mqtt::Publish publish) {
  using Outcome = device_api::PublishOutcome;
  return asio::async_initiate<decltype(asio::use_awaitable), void(Outcome)>(
      [&endpoint](auto handler, std::string device_id, mqtt::Publish message) {
        using Handler = decltype(handler);
        auto executor = asio::get_associated_executor(handler);
        // The completion is called from another thread through a copyable std::function.
        auto shared = std::make_shared<Handler>(std::move(handler));
        auto work = std::make_shared<decltype(asio::make_work_guard(executor))>(
            asio::make_work_guard(executor));
        bool telemetry = endpoint.publishTelemetryAsync(
            device_id, std::move(message), [shared, work, executor](Outcome outcome) mutable {
              // Posted, never run inline: `done` may come before the initiation returns.
              asio::post(executor, [shared, work, outcome = std::move(outcome)]() mutable {
                std::move (*shared)(std::move(outcome));
              });
            });
        if (!telemetry) {
          // Not telemetry after all (the caller checked): handled as an unknown topic.
          Outcome refused;
          refused.close = true;
          refused.close_reason = "not a telemetry topic";
          asio::post(executor, [shared, work, refused = std::move(refused)]() mutable {
            std::move (*shared)(std::move(refused));
          });
        }
      },
      asio::use_awaitable, std::move(device), std::move(publish));
}

template <class Stream>
class MqttConnection final : public routing::DeviceLink,
                             public std::enable_shared_from_this<MqttConnection<Stream>> {
 public:
  MqttConnection(Stream stream, std::shared_ptr<ServerContext> server, std::string remote,
                 ConnectionLimiter::Slot slot)
      : stream_(std::move(stream)),
        server_(std::move(server)),
        remote_(std::move(remote)),
        slot_(std::move(slot)),
        decoder_(server_->options.max_packet_size),
        session_(sessionOptions(server_->options), SteadyClock::now()),
        timer_(stream_.get_executor()),
        close_wait_(stream_.get_executor()),
        watchdog_(stream_.get_executor()) {}

  asio::any_io_executor executor() { return stream_.get_executor(); }

  // For WebSocket connections: the HTTP upgrade request to accept before speaking MQTT.
  void setUpgradeRequest(UpgradeRequest request) { upgrade_ = std::move(request); }

  // Logs with the connection's device id (once known) and remote address as fields.
  template <class... Args>
  void logLine(spdlog::level::level_enum level, spdlog::format_string_t<Args...> format,
               Args&&... args) const {
    log::withFields(level, {{"deviceId", device_id_}, {"remote", remote_}}, format,
                    std::forward<Args>(args)...);
  }

  // --- routing::DeviceLink (any thread) ---
  const std::string& deviceId() const override { return device_id_; }

  bool isSubscribed(std::string_view topic) const override {
    std::lock_guard lock(subscriptions_mutex_);
    return std::any_of(
        subscriptions_.begin(), subscriptions_.end(),
        [&](const mqtt::Subscription& s) { return mqtt::topicMatches(s.filter, topic); });
  }

  bool publish(std::string topic, std::string payload) override {
    if (closed_.load() || !isSubscribed(topic)) return false;
    asio::post(stream_.get_executor(), [self = this->shared_from_this(), topic = std::move(topic),
                                        payload = std::move(payload)]() mutable {
      self->sendToDevice(std::move(topic), std::move(payload));
    });
    return true;
  }

  bool publishReliable(std::string topic, std::string payload,
                       routing::DeviceLink::Acknowledgement done) override {
    if (closed_.load() || !isSubscribed(topic)) return false;
    asio::post(stream_.get_executor(),
               [self = this->shared_from_this(), topic = std::move(topic),
                payload = std::move(payload), done = std::move(done)]() mutable {
                 self->sendReliably(std::move(topic), std::move(payload), std::move(done));
               });
    return true;
  }

  void close(routing::CloseCause cause, std::string reason) override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this(), cause,
                                        reason = std::move(reason)] {
      self->noteDisconnect(cause == routing::CloseCause::Replaced  ? DisconnectReason::Replaced
                           : cause == routing::CloseCause::Revoked ? DisconnectReason::Revoked
                                                                   : DisconnectReason::Shutdown);
      self->beginClose(reason);
    });
  }

  // --- the connection's life, on its strand ---
  // `self` keeps the connection alive for the whole coroutine: a coroutine's body starts
  // later than its call, so it cannot take a reference of its own at its first line.
  awaitable<void> run([[maybe_unused]] std::shared_ptr<MqttConnection> self) {
    if constexpr (kOwnTls) {
      // The handshake must end within the deadline: cancelling the socket ends its wait.
      asio::steady_timer deadline(stream_.get_executor());
      deadline.expires_after(server_->options.handshake_timeout);
      deadline.async_wait([self](const boost::system::error_code& ec) {
        boost::system::error_code ignored;
        if (!ec) self->stream_.socket().cancel(ignored);
      });
      boost::system::error_code ec = co_await stream_.handshake();
      deadline.cancel();
      if (ec) {
        logLine(spdlog::level::debug, "{}: TLS handshake with {} failed: {}", server_->options.name,
                remote_, ec == asio::error::operation_aborted ? "timed out" : ec.message());
        co_return co_await finish();
      }
    }
    if constexpr (kWebSocket) {
      namespace websocket = beast::websocket;
      // The WebSocket layer keeps its own handshake timeout; MQTT's keep-alive does the rest.
      beast::get_lowest_layer(stream_).expires_never();
      stream_.set_option(websocket::stream_base::timeout{server_->options.handshake_timeout,
                                                         websocket::stream_base::none(), false});
      stream_.set_option(websocket::stream_base::decorator([](websocket::response_type& response) {
        response.set(beast::http::field::sec_websocket_protocol, "mqtt");
        response.set(beast::http::field::server, "iothub");
      }));
      stream_.binary(true);
      stream_.read_message_max(server_->options.max_packet_size + 1024);
      UpgradeRequest request = std::move(*upgrade_);
      upgrade_.reset();
      auto [ec] = co_await stream_.async_accept(request, kAwaitTuple);
      if (ec) {
        logLine(spdlog::level::debug, "{}: WebSocket handshake with {} failed: {}",
                server_->options.name, remote_, ec.message());
        co_return co_await finish();
      }
    }
    startTimer();
    if constexpr (kRawTcp) {
      boost::system::error_code ignored;
      stream_.non_blocking(true, ignored);  // reads after a wait never block the thread
    }
    boost::system::error_code deferred;  // the end of a TLS connection, after its last bytes
    while (!closing_) {
      boost::system::error_code ec;
      if constexpr (kDirectRead) {
        // Wait for readability, then read into this thread's scratch buffer, so an idle
        // connection holds no read buffer at all (decisions.md §32, §81).
        if (deferred) {
          ec = deferred;
        } else if constexpr (kOwnTls) {
          ec = co_await stream_.waitToRead();
        } else {
          auto [wait_ec] = co_await stream_.async_wait(asio::socket_base::wait_read, kAwaitTuple);
          ec = wait_ec;
        }
        if (!ec) {
          thread_local std::array<char, 64 * 1024> scratch;
          std::size_t n = 0;
          if constexpr (kOwnTls) {
            n = stream_.readSome(scratch.data(), scratch.size(), ec);
            if (ec && n > 0) {
              deferred = ec;  // the bytes before the end are handled first
              ec = {};
            }
          } else {
            n = stream_.read_some(asio::buffer(scratch), ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
          }
          if (!ec && n == 0) continue;  // a spurious wake-up, or half a TLS record
          if (!ec) {
            server_->counters().bytes_received.fetch_add(n, std::memory_order_relaxed);
            decoder_.feed(std::string_view(scratch.data(), n));
          }
        }
      } else {
        auto buffer = decoder_.prepare(16 * 1024);
        auto [read_ec, n] = co_await stream_.async_read_some(
            asio::buffer(buffer.data(), buffer.size()), kAwaitTuple);
        ec = read_ec;
        if (!ec) {
          server_->counters().bytes_received.fetch_add(n, std::memory_order_relaxed);
          decoder_.commit(n);
        }
      }
      if (ec) {
        if (!closing_) {
          logLine(spdlog::level::debug, "{}: {} ({}) closed: {}", server_->options.name, remote_,
                  device_id_, ec.message());
        }
        break;
      }
      for (;;) {
        auto next = decoder_.next();
        if (!next) {
          post(session_.onDecodeError(decoder_.lastError(), next.status().message()));
          co_await drainOutbox();
          break;
        }
        if (!*next) break;
        server_->counters().packets_received.fetch_add(1, std::memory_order_relaxed);
        post(session_.onPacket(std::move(**next), SteadyClock::now()));
        co_await drainOutbox();
        if (closing_) break;
      }
      if constexpr (kDirectRead) decoder_.shrinkToFit();
      rearmTimer();
      flush();
    }
    co_await finish();
  }

 private:
  // MQTT/TLS on the device port, OpenSSL on the socket itself (transport/tls_socket.hpp).
  static constexpr bool kOwnTls = std::is_same_v<Stream, TlsSocket>;
  // Plain MQTT on its own listener: the bare socket (Beast's tcp_stream would add ~530 bytes
  // of timer state per connection that nothing here uses).
  static constexpr bool kRawTcp = std::is_same_v<Stream, tcp::socket>;
  // Plain TCP and MQTT/TLS wait for readability and read into a per-thread buffer.
  static constexpr bool kDirectRead = kOwnTls || kRawTcp;

  tcp::socket& lowestSocket() {
    if constexpr (kOwnTls) {
      return stream_.socket();
    } else if constexpr (kRawTcp) {
      return stream_;
    } else {
      return beast::get_lowest_layer(stream_).socket();
    }
  }

  static mqtt::ServerSessionOptions sessionOptions(const MqttServerOptions& options) {
    mqtt::ServerSessionOptions out;
    out.connect_timeout = options.handshake_timeout;
    return out;
  }
  static constexpr bool kWebSocket = !kDirectRead;

  void encode(const mqtt::Packet& packet) {
    if (closed_by_force_) return;
    const std::size_t before = out_.size();
    Status s = mqtt::encode(packet, out_);
    if (!s) {
      logLine(spdlog::level::err, "{}: cannot encode a packet for {}: {}", server_->options.name,
              device_id_, s.toString());
      return;  // the encoder queued nothing, so nothing is counted
    }
    MqttCounters& counters = server_->counters();
    counters.packets_sent.fetch_add(1, std::memory_order_relaxed);
    counters.bytes_sent.fetch_add(out_.size() - before, std::memory_order_relaxed);
    if (const auto* connack = std::get_if<mqtt::ConnAck>(&packet)) {
      const auto code = static_cast<std::size_t>(connack->return_code);
      if (code == 0) {
        counters.connects_accepted.fetch_add(1, std::memory_order_relaxed);
      } else if (code < counters.connects_refused.size()) {
        counters.connects_refused[code].fetch_add(1, std::memory_order_relaxed);
      }
    }
    // Checked here, not only when a write starts: while one is in flight, a device that asks
    // for its twin over and over without reading would otherwise grow out_ without bound.
    if (out_.size() > server_->options.max_write_backlog) {
      forceClose("it does not read (" + std::to_string(out_.size()) + " bytes queued)");
    }
  }

  void sendToDevice(std::string topic, std::string payload) {
    if (closing_) return;
    if (session_.state() != mqtt::ServerSession::State::Connected) {
      // Attached, and reachable through the subscriptions its persistent session restored,
      // but the CONNACK is not out yet (the device is checked again first): MQTT allows no
      // PUBLISH before it, so the message waits for it. A direct method sent in this window
      // was lost before, and its caller waited for the response timeout.
      if (attached_ && held_before_connack_.size() < kMaxHeldBeforeConnack) {
        held_before_connack_.emplace_back(std::move(topic), std::move(payload));
      }
      return;
    }
    mqtt::Publish message;
    message.topic = std::move(topic);
    message.payload = std::move(payload);
    auto actions = session_.publish(std::move(message));
    if (!actions) {
      logLine(spdlog::level::warn, "{}: cannot publish to {}: {}", server_->options.name,
              device_id_, actions.status().toString());
      return;
    }
    for (auto& action : *actions) {
      if (auto* send = std::get_if<mqtt::SendPacket>(&action)) encode(send->packet);
    }
    flush();
  }

  // The highest QoS granted to the device's subscriptions matching `topic` (MQTT 3.1.1
  // §3.8.4: a message goes out at the lower of its QoS and the subscription's).
  mqtt::QoS grantedQos(std::string_view topic) const {
    std::lock_guard lock(subscriptions_mutex_);
    mqtt::QoS best = mqtt::QoS::AtMostOnce;
    for (const auto& s : subscriptions_) {
      if (mqtt::topicMatches(s.filter, topic) && s.qos > best) best = s.qos;
    }
    return best;
  }

  // A cloud-to-device message (publishReliable), on the strand.
  void sendReliably(std::string topic, std::string payload,
                    routing::DeviceLink::Acknowledgement done) {
    if (closing_) {
      done(false);
      return;
    }
    if (session_.state() != mqtt::ServerSession::State::Connected) {
      // Between attach and CONNACK, as in sendToDevice().
      if (attached_ && held_reliable_.size() < kMaxHeldBeforeConnack) {
        held_reliable_.push_back({std::move(topic), std::move(payload), std::move(done)});
      } else {
        done(false);
      }
      return;
    }
    mqtt::Publish message;
    message.topic = std::move(topic);
    message.payload = std::move(payload);
    message.qos = grantedQos(message.topic);
    if (message.qos == mqtt::QoS::AtMostOnce) {
      // The device subscribed at QoS 0 and asked for at-most-once: once written, the
      // message counts as delivered.
      sendToDevice(std::move(message.topic), std::move(message.payload));
      done(true);
      return;
    }
    std::uint64_t tag = ++next_reliable_tag_;
    auto actions = session_.publish(std::move(message), tag);
    if (!actions) {
      logLine(spdlog::level::warn, "{}: cannot publish a C2D message to {}: {}",
              server_->options.name, device_id_, actions.status().toString());
      done(false);
      return;
    }
    reliable_.emplace(tag, std::move(done));
    for (auto& action : *actions) {
      if (auto* send = std::get_if<mqtt::SendPacket>(&action)) encode(send->packet);
    }
    flush();
  }

  // The connection ends: messages not acknowledged go back to their queue.
  void dropReliable() {
    auto pending = std::move(reliable_);
    reliable_.clear();
    for (auto& [tag, done] : pending) done(false);
    auto held = std::move(held_reliable_);
    held_reliable_.clear();
    for (auto& h : held) h.done(false);
  }

  // Every action the session returns goes into the outbox (post), and drainOutbox carries
  // them out in order: one place that runs actions, whichever input (a packet, a decode
  // error, a tick, a worker's answer) produced them. An action may post and drain more (an
  // authentication ends with the CONNACK's actions): those run at once, before the rest of
  // the batch, as they are the consequence of the action being run.
  void post(mqtt::Actions actions) {
    if (outbox_.empty()) {
      outbox_ = std::move(actions);
    } else {
      outbox_.insert(outbox_.end(), std::make_move_iterator(actions.begin()),
                     std::make_move_iterator(actions.end()));
    }
  }

  awaitable<void> drainOutbox() {
    while (!outbox_.empty()) {
      mqtt::Actions batch = std::exchange(outbox_, {});
      for (auto& action : batch) {
        if (auto* send = std::get_if<mqtt::SendPacket>(&action)) {
          encode(send->packet);
        } else if (auto* close = std::get_if<mqtt::CloseConnection>(&action)) {
          noteDisconnect(close->reason == mqtt::CloseReason::ClientDisconnected
                             ? DisconnectReason::ClientDisconnect
                         : close->reason == mqtt::CloseReason::KeepAliveTimeout
                             ? DisconnectReason::KeepAliveTimeout
                             : DisconnectReason::ProtocolError);
          if (close->reason != mqtt::CloseReason::ClientDisconnected) {
            logLine(spdlog::level::info, "{}: closing {} ({}): {} {}", server_->options.name,
                    remote_, device_id_, mqtt::closeReasonName(close->reason), close->detail);
          }
          beginClose("");
        } else if (auto* authenticate = std::get_if<mqtt::Authenticate>(&action)) {
          co_await onAuthenticate(std::move(authenticate->connect));
        } else if (auto* subscribe = std::get_if<mqtt::AuthorizeSubscribe>(&action)) {
          co_await onSubscribe(*subscribe);
        } else if (auto* remove = std::get_if<mqtt::RemoveSubscriptions>(&action)) {
          {
            std::lock_guard lock(subscriptions_mutex_);
            std::erase_if(subscriptions_, [&](const mqtt::Subscription& s) {
              return std::find(remove->filters.begin(), remove->filters.end(), s.filter) !=
                     remove->filters.end();
            });
          }
          co_await persistSubscriptions();
        } else if (auto* deliver = std::get_if<mqtt::DeliverPublish>(&action)) {
          co_await onPublish(std::move(deliver->publish));
        } else if (auto* acked = std::get_if<mqtt::PublishAcknowledged>(&action)) {
          // A cloud-to-device message the device took (docs/c2d.md §3).
          auto it = reliable_.find(acked->tag);
          if (it != reliable_.end()) {
            auto done = std::move(it->second);
            reliable_.erase(it);
            done(true);
          }
        }
      }
    }
  }

  awaitable<void> onAuthenticate(mqtt::Connect connect) {
    auto& endpoint = server_->endpoint;
    struct Outcome {
      std::variant<device_api::DeviceIdentity, device_api::ConnectRefusal> auth;
      std::optional<store::MqttSessionRecord> session;
      Status session_status;
      std::int64_t epoch = 0;  // the presence claim, in a cluster
    };
    bool clean = connect.clean_session;
    // Named, not a temporary inside co_await: GCC 12 destroys such temporaries twice.
    auto job = [&endpoint, connect = std::move(connect)]() {
      Outcome o{endpoint.authenticate(connect), std::nullopt, Status::ok()};
      if (std::holds_alternative<device_api::DeviceIdentity>(o.auth)) {
        if (connect.clean_session) {
          o.session_status = endpoint.deleteSession(connect.client_id);
        } else {
          auto loaded = endpoint.loadSession(connect.client_id);
          if (loaded) o.session = std::move(*loaded);
          o.session_status = loaded.status();
        }
      }
      // Claimed last, once nothing else can refuse the device before it attaches.
      if (std::holds_alternative<device_api::DeviceIdentity>(o.auth) && o.session_status) {
        auto claimed = endpoint.claimPresence(connect.client_id);
        if (claimed) {
          o.epoch = *claimed;
        } else if (claimed.code() == ErrorCode::DeviceNotFound) {
          o.auth = device_api::ConnectRefusal{mqtt::ConnectReturnCode::NotAuthorized,
                                              "the device was deleted while connecting"};
        } else {
          o.session_status = claimed.status();
        }
      }
      return o;
    };
    Outcome outcome = co_await onWorker(*server_, std::move(job));
    if (auto* refusal = std::get_if<device_api::ConnectRefusal>(&outcome.auth)) {
      logLine(spdlog::level::info, "{}: refused {} : {}", server_->options.name, remote_,
              refusal->reason);
      post(session_.refuseConnect(refusal->code));
      co_await drainOutbox();
      co_return;
    }
    if (!outcome.session_status) {
      logLine(spdlog::level::warn, "{}: session state unavailable: {}", server_->options.name,
              outcome.session_status.toString());
      post(session_.refuseConnect(mqtt::ConnectReturnCode::ServerUnavailable));
      co_await drainOutbox();
      co_return;
    }
    auto& identity = std::get<device_api::DeviceIdentity>(outcome.auth);
    device_id_ = identity.device_id;
    persistent_ = !clean;
    auto remaining = identity.token_expiry - std::chrono::system_clock::now();
    token_deadline_ = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                               std::max(remaining, decltype(remaining)::zero()));
    bool session_present = false;
    if (outcome.session) {
      {
        std::lock_guard lock(subscriptions_mutex_);
        for (const auto& s : outcome.session->subscriptions) {
          subscriptions_.push_back({s.filter, static_cast<mqtt::QoS>(s.qos)});
        }
      }
      stored_subscriptions_ = sortedSubscriptions();
      session_present = true;
    } else if (!clean) {
      stored_subscriptions_.emplace();  // the store holds no session for the device
    }
    epoch_ = outcome.epoch;
    auto attached = server_->connections.attach(this->shared_from_this(), epoch_);
    if (attached.refused) {
      // A newer connection of the device (on this node or another) claimed it meanwhile.
      logLine(spdlog::level::info, "{}: refused {} ({}): a newer connection of the device exists",
              server_->options.name, remote_, device_id_);
      releaseAfterRefusal();
      post(session_.refuseConnect(mqtt::ConnectReturnCode::ServerUnavailable));
      co_await drainOutbox();
      co_return;
    }
    if (attached.replaced) {
      attached.replaced->close(routing::CloseCause::Replaced,
                               "ConnectionForcefullyClosedOnNewConnection (400027)");
    }
    attached_ = true;
    // The device may have been disabled or deleted between authenticate() and attach(); the
    // registry then found no connection to close. Reading its status again now that the
    // connection is reachable closes that gap: a later revocation finds this connection.
    std::string id = device_id_;
    auto recheck = [&endpoint, id] { return endpoint.stillAllowed(id); };
    Status allowed = co_await onWorker(*server_, std::move(recheck));
    if (!allowed) {
      logLine(spdlog::level::info, "{}: refused {} ({}) after attaching: {}", server_->options.name,
              remote_, device_id_, allowed.message());
      attached_ = false;
      server_->connections.detach(*this);
      releaseAfterRefusal();
      post(session_.refuseConnect(allowed.code() == ErrorCode::ServiceUnavailable
                                      ? mqtt::ConnectReturnCode::ServerUnavailable
                                      : mqtt::ConnectReturnCode::NotAuthorized));
      co_await drainOutbox();
      co_return;
    }
    logLine(spdlog::level::debug, "{}: device {} connected from {} (session present: {})",
            server_->options.name, device_id_, remote_, session_present);
    asio::post(server_->workers,
               [endpoint = &server_->endpoint, id = device_id_] { endpoint->onConnected(id); });
    post(session_.acceptConnect(session_present));
    co_await drainOutbox();
    auto held = std::move(held_before_connack_);
    held_before_connack_.clear();
    for (auto& [topic, payload] : held) sendToDevice(std::move(topic), std::move(payload));
    auto held_reliable = std::move(held_reliable_);
    held_reliable_.clear();
    for (auto& h : held_reliable)
      sendReliably(std::move(h.topic), std::move(h.payload), std::move(h.done));
    // Subscriptions its persistent session restored can be served now (C2D delivery).
    if (session_present) server_->connections.subscriptionsChanged(this->shared_from_this());
  }

  // A claimed connection that will not serve: its presence goes (a no-op when a newer
  // connection claimed the device since).
  void releaseAfterRefusal() {
    if (epoch_ == 0) return;
    asio::post(server_->workers, [endpoint = &server_->endpoint, id = device_id_, epoch = epoch_] {
      endpoint->releasePresence(id, epoch);
    });
  }

  awaitable<void> onSubscribe(const mqtt::AuthorizeSubscribe& request) {
    std::vector<mqtt::SubAckReturnCode> codes;
    {
      std::lock_guard lock(subscriptions_mutex_);
      for (const auto& s : request.subscriptions) {
        auto code = server_->endpoint.authorizeSubscription(device_id_, s.filter, s.qos);
        codes.push_back(code);
        if (code == mqtt::SubAckReturnCode::Failure) {
          logLine(spdlog::level::info, "{}: device {} may not subscribe to {}",
                  server_->options.name, device_id_, s.filter);
          continue;
        }
        logLine(spdlog::level::debug, "{}: device {} subscribed to {}", server_->options.name,
                device_id_, s.filter);
        std::erase_if(subscriptions_,
                      [&](const mqtt::Subscription& old) { return old.filter == s.filter; });
        subscriptions_.push_back({s.filter, static_cast<mqtt::QoS>(static_cast<int>(code))});
      }
    }
    co_await persistSubscriptions();
    post(session_.completeSubscribe(request.packet_id, codes));
    co_await drainOutbox();
    server_->connections.subscriptionsChanged(this->shared_from_this());
  }

  // The subscriptions in their stored order-free form, to compare with what is stored.
  std::vector<mqtt::Subscription> sortedSubscriptions() const {
    std::vector<mqtt::Subscription> out;
    {
      std::lock_guard lock(subscriptions_mutex_);
      out = subscriptions_;
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      return std::tie(a.filter, a.qos) < std::tie(b.filter, b.qos);
    });
    return out;
  }

  awaitable<void> persistSubscriptions() {
    if (!persistent_) co_return;
    // A device that subscribes again to what its stored session holds (every reconnect of
    // the Azure SDKs) costs no store write.
    std::vector<mqtt::Subscription> current = sortedSubscriptions();
    if (stored_subscriptions_ && *stored_subscriptions_ == current) co_return;
    store::MqttSessionRecord record;
    record.client_id = device_id_;
    for (const auto& s : current)
      record.subscriptions.push_back({s.filter, static_cast<int>(s.qos)});
    auto& endpoint = server_->endpoint;
    auto job = [&endpoint, record = std::move(record)] { return endpoint.saveSession(record); };
    Status saved = co_await onWorker(*server_, std::move(job));
    if (saved) {
      stored_subscriptions_ = std::move(current);
    } else {
      stored_subscriptions_.reset();  // unknown now: the next change writes
      logLine(spdlog::level::warn, "{}: cannot persist the session of {}: {}",
              server_->options.name, device_id_, saved.toString());
    }
  }

  awaitable<void> onPublish(mqtt::Publish publish) {
    auto& endpoint = server_->endpoint;
    std::string device = device_id_;
    std::uint16_t packet_id = publish.packet_id;
    bool qos1 = publish.qos == mqtt::QoS::AtLeastOnce;
    device_api::PublishOutcome outcome;
    if (device_api::DeviceEndpoint::isTelemetryTopic(device, publish.topic)) {
      outcome = co_await onTelemetry(endpoint, device, std::move(publish));
    } else {
      auto job = [&endpoint, device, publish = std::move(publish)] {
        return endpoint.handlePublish(device, publish);
      };
      outcome = co_await onWorker(*server_, std::move(job));
    }
    if (outcome.close) {
      logLine(spdlog::level::info, "{}: closing {} ({}): {}", server_->options.name, remote_,
              device_id_, outcome.close_reason);
      noteDisconnect(
          outcome.cause == device_api::CloseCause::AclViolation ? DisconnectReason::AclViolation
          : outcome.cause == device_api::CloseCause::BadMessage ? DisconnectReason::ProtocolError
                                                                : DisconnectReason::ServerError);
      beginClose("");
      co_return;
    }
    for (auto& reply : outcome.replies) {
      mqtt::Publish message;
      message.topic = std::move(reply.topic);
      message.payload = std::move(reply.payload);
      if (auto actions = session_.publish(std::move(message))) post(std::move(*actions));
    }
    if (qos1) post(session_.acknowledgePublish(packet_id));
    co_await drainOutbox();
  }

  void rearmTimer() {
    auto deadline = session_.nextDeadline();
    if (token_deadline_ && (!deadline || *token_deadline_ < *deadline)) deadline = token_deadline_;
    if (!deadline) return;
    // Deadlines only move later as packets arrive; an early wake-up is harmless, so only
    // re-arm when the new deadline is earlier than the armed one.
    if (*deadline < timer_.expiry()) timer_.expires_at(*deadline);
  }

  // The keep-alive and token deadlines run on a timer with a plain handler, not a coroutine
  // of their own: an idle connection keeps one coroutine frame (its reader), not two
  // (docs/benchmarks.md, B1).
  void startTimer() {
    timer_.expires_at(SteadyClock::time_point::max());
    rearmTimer();
    waitTimer();
  }

  void waitTimer() {
    timer_.async_wait([self = this->shared_from_this()](const boost::system::error_code& ec) {
      self->onTimer(ec);
    });
  }

  void onTimer(const boost::system::error_code& ec) {
    if (closing_) return;
    if (ec && ec != asio::error::operation_aborted) return;
    if (ec) {  // re-armed earlier
      waitTimer();
      return;
    }
    auto now = SteadyClock::now();
    if (token_deadline_ && now >= *token_deadline_) {
      logLine(spdlog::level::info, "{}: closing {}: its SAS token expired", server_->options.name,
              device_id_);
      noteDisconnect(DisconnectReason::TokenExpired);
      beginClose("");
      return;
    }
    timer_.expires_at(SteadyClock::time_point::max());
    post(session_.onTick(now));
    if (outbox_.empty()) {
      afterTick();
      return;
    }
    asio::co_spawn(stream_.get_executor(), tickActions(this->shared_from_this()), asio::detached);
  }

  awaitable<void> tickActions([[maybe_unused]] std::shared_ptr<MqttConnection> self) {
    co_await drainOutbox();
    afterTick();
  }

  void afterTick() {
    rearmTimer();
    flush();
    if (!closing_) waitTimer();
  }

  void flush() {
    if (writing_ || out_.empty() || closed_by_force_) return;
    writing_ = true;
    asio::co_spawn(stream_.get_executor(), writeLoop(this->shared_from_this()), asio::detached);
  }

  awaitable<void> writeLoop([[maybe_unused]] std::shared_ptr<MqttConnection> self) {
    std::string buffer;
    while (!out_.empty() && !closed_by_force_) {
      buffer.clear();
      buffer.swap(out_);
      boost::system::error_code ec;
      // In chunks, each with the write deadline: a slow device that keeps reading is fine,
      // one that stops reading is closed after write_timeout.
      for (std::size_t done = 0; done < buffer.size() && !ec;) {
        std::size_t n = std::min(kWriteChunk, buffer.size() - done);
        if (!closing_) armWatchdog(server_->options.write_timeout, "a write stalled");
        if constexpr (kWebSocket) {
          std::tie(ec, std::ignore) =
              co_await stream_.async_write(asio::buffer(buffer.data() + done, n), kAwaitTuple);
        } else if constexpr (kOwnTls) {
          ec = co_await stream_.write(buffer.data() + done, n);
        } else {
          std::tie(ec, std::ignore) = co_await asio::async_write(
              stream_, asio::buffer(buffer.data() + done, n), kAwaitTuple);
        }
        done += n;
      }
      if (ec) {
        out_.clear();
        beginClose("");
        break;
      }
    }
    if (!closing_) disarmWatchdog();
    writing_ = false;
    boost::system::error_code ignored;
    if (closing_) lowestSocket().cancel(ignored);
    close_wait_.cancel();
  }

  // The first reason given for the end of the connection is the one counted.
  void noteDisconnect(DisconnectReason reason) {
    if (!disconnect_reason_) disconnect_reason_ = reason;
  }

  void beginClose(const std::string& reason) {
    if (!reason.empty()) {
      logLine(spdlog::level::info, "{}: closing {} ({}): {}", server_->options.name, remote_,
              device_id_, reason);
    }
    if (closing_) return;
    closing_ = true;
    closed_ = true;
    timer_.cancel();
    // Let queued packets (CONNACK refusals, SUBACKs) go out first, for a short while: a
    // device that does not read must not keep the connection (and its twin's
    // connectionState) alive. finish() closes.
    if (writing_) {
      armWatchdog(kCloseGrace, "queued packets did not drain");
    } else {
      boost::system::error_code ignored;
      lowestSocket().cancel(ignored);
    }
  }

  // Closes the socket under every pending operation: the read loop and the write loop end
  // with errors, and finish() runs. For devices that do not read, where a graceful close
  // would wait on a write that never completes.
  void forceClose(const std::string& why) {
    if (closed_by_force_) return;
    logLine(spdlog::level::warn, "{}: closing {} ({}): {}", server_->options.name, remote_,
            device_id_, why);
    noteDisconnect(DisconnectReason::NotReading);
    closed_by_force_ = true;
    closing_ = true;
    closed_ = true;
    out_.clear();
    out_.shrink_to_fit();
    timer_.cancel();
    disarmWatchdog();
    boost::system::error_code ignored;
    lowestSocket().close(ignored);
  }

  void armWatchdog(SteadyClock::duration after, const char* why) {
    std::uint64_t generation = ++watchdog_generation_;
    watchdog_.expires_after(after);
    watchdog_.async_wait(
        [self = this->shared_from_this(), generation, why](const boost::system::error_code& ec) {
          if (ec || generation != self->watchdog_generation_) return;
          self->forceClose(why);
        });
  }

  void disarmWatchdog() {
    ++watchdog_generation_;
    watchdog_.cancel();
  }

  awaitable<void> finish() {
    closing_ = true;
    closed_ = true;
    timer_.cancel();
    flush();
    // Give pending writes a moment to reach the device.
    close_wait_.expires_after(kCloseGrace);
    while (writing_) {
      auto [ec] = co_await close_wait_.async_wait(kAwaitTuple);
      if (!ec) break;  // timed out
    }
    disarmWatchdog();
    dropReliable();
    boost::system::error_code ignored;
    if constexpr (kOwnTls) stream_.sendCloseNotify();
    lowestSocket().shutdown(tcp::socket::shutdown_both, ignored);
    if constexpr (kDirectRead) {
      lowestSocket().close(ignored);
    } else {
      beast::get_lowest_layer(stream_).close();
    }
    if (attached_) {
      const auto reason =
          static_cast<std::size_t>(disconnect_reason_.value_or(DisconnectReason::ConnectionLost));
      server_->counters().disconnects[reason].fetch_add(1, std::memory_order_relaxed);
      bool was_current = server_->connections.detach(*this);
      if (was_current) {
        asio::post(server_->workers, [endpoint = &server_->endpoint, id = device_id_,
                                      epoch = epoch_] { endpoint->onDisconnected(id, epoch); });
      }
      logLine(spdlog::level::debug, "{}: device {} disconnected", server_->options.name,
              device_id_);
    }
  }

  static constexpr std::size_t kWriteChunk = 256 * 1024;
  static constexpr auto kCloseGrace = std::chrono::seconds(2);

  Stream stream_;
  std::optional<UpgradeRequest> upgrade_;
  std::shared_ptr<ServerContext> server_;
  std::string remote_;
  ConnectionLimiter::Slot slot_;  // this connection's place under the hub-wide cap
  mqtt::Decoder decoder_;
  mqtt::ServerSession session_;
  mqtt::Actions outbox_;  // the session's actions not carried out yet (post, drainOutbox)
  asio::steady_timer timer_;
  asio::steady_timer close_wait_;
  asio::steady_timer watchdog_;  // write deadline, and the deadline of a graceful close
  std::uint64_t watchdog_generation_ = 0;
  bool closed_by_force_ = false;
  std::optional<DisconnectReason> disconnect_reason_;
  // Messages for the device that arrived between attach and CONNACK (sendToDevice).
  static constexpr std::size_t kMaxHeldBeforeConnack = 64;
  std::vector<std::pair<std::string, std::string>> held_before_connack_;
  struct HeldReliable {
    std::string topic;
    std::string payload;
    routing::DeviceLink::Acknowledgement done;
  };
  std::vector<HeldReliable> held_reliable_;
  // QoS 1 cloud-to-device messages awaiting the device's PUBACK, by the session's tag.
  std::unordered_map<std::uint64_t, routing::DeviceLink::Acknowledgement> reliable_;
  std::uint64_t next_reliable_tag_ = 0;
  std::string out_;
  bool writing_ = false;
  bool closing_ = false;
  std::atomic<bool> closed_{false};
  bool attached_ = false;
  std::int64_t epoch_ = 0;  // the presence claim of this connection (cluster mode)
  bool persistent_ = false;
  std::optional<SteadyClock::time_point> token_deadline_;
  std::string device_id_;  // set once, before the link is attached; never changes after
  mutable std::mutex subscriptions_mutex_;
  std::vector<mqtt::Subscription> subscriptions_;  // guarded by subscriptions_mutex_
  // What the store holds for a persistent session (sorted), when known: loaded at connect,
  // then written by persistSubscriptions().
  std::optional<std::vector<mqtt::Subscription>> stored_subscriptions_;
};

}  // namespace

struct MqttServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io_context, std::shared_ptr<ServerContext> ctx)
      : io(io_context), context(std::move(ctx)), acceptor(asio::make_strand(io_context)) {}

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
    auto ctx = context;
    asio::co_spawn(connection->executor(), connection->run(connection),
                   [ctx, id](std::exception_ptr e) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         spdlog::error("MQTT connection failed: {}", ex.what());
                       }
                     }
                     std::lock_guard lock(ctx->mutex);
                     ctx->open.erase(id);
                   });
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
      if (context->options.tls != nullptr) {
        launch(std::make_shared<MqttConnection<TlsSocket>>(
            TlsSocket(std::move(socket), context->options.tls->native_handle()), context,
            std::move(remote), std::move(*slot)));
      } else {
        launch(std::make_shared<MqttConnection<tcp::socket>>(std::move(socket), context,
                                                             std::move(remote), std::move(*slot)));
      }
    }
  }
};

MqttServer::MqttServer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::shared_ptr<WebSocketAcceptor> MqttServer::webSocketAcceptor() {
  auto acceptor = std::make_shared<WebSocketAcceptor>();
  std::weak_ptr<Impl> weak = impl_;
  acceptor->accept_tls = [weak](TlsStream stream, UpgradeRequest request, std::string remote,
                                ConnectionLimiter::Slot slot) {
    auto impl = weak.lock();
    if (!impl || impl->context->stopping) return;
    using Stream = beast::websocket::stream<TlsStream>;
    auto connection = std::make_shared<MqttConnection<Stream>>(
        Stream(std::move(stream)), impl->context, std::move(remote), std::move(slot));
    connection->setUpgradeRequest(std::move(request));
    impl->launch(std::move(connection));
  };
  acceptor->accept_plain = [weak](PlainStream stream, UpgradeRequest request, std::string remote,
                                  ConnectionLimiter::Slot slot) {
    auto impl = weak.lock();
    if (!impl || impl->context->stopping) return;
    using Stream = beast::websocket::stream<PlainStream>;
    auto connection = std::make_shared<MqttConnection<Stream>>(
        Stream(std::move(stream)), impl->context, std::move(remote), std::move(slot));
    connection->setUpgradeRequest(std::move(request));
    impl->launch(std::move(connection));
  };
  return acceptor;
}

MqttServer::~MqttServer() { stop(); }

Result<std::unique_ptr<MqttServer>> MqttServer::create(asio::io_context& io,
                                                       asio::thread_pool& workers,
                                                       MqttServerOptions options,
                                                       device_api::DeviceEndpoint& endpoint,
                                                       routing::ConnectionRegistry& connections) {
  if (!options.limiter) options.limiter = std::make_shared<ConnectionLimiter>(0);
  auto context =
      std::make_shared<ServerContext>(workers, endpoint, connections, std::move(options));
  auto impl = std::make_shared<Impl>(io, context);
  const auto& opts = context->options;
  auto bound = bindAndListen(impl->acceptor, opts.name, opts.bind_address, opts.port);
  if (!bound) return bound.status();
  impl->bound_port = *bound;
  return std::unique_ptr<MqttServer>(new MqttServer(std::move(impl)));
}

std::uint16_t MqttServer::port() const { return impl_->bound_port; }

void MqttServer::start() {
  asio::co_spawn(impl_->acceptor.get_executor(), impl_->acceptLoop(impl_), asio::detached);
}

void MqttServer::stop() {
  if (impl_->context->stopping.exchange(true)) return;
  auto impl = impl_;
  asio::post(impl->acceptor.get_executor(), [impl] {
    boost::system::error_code ignored;
    impl->acceptor.close(ignored);
  });
  std::vector<std::shared_ptr<routing::DeviceLink>> open;
  {
    std::lock_guard lock(impl->context->mutex);
    for (auto& [id, weak] : impl->context->open) {
      if (auto link = weak.lock()) open.push_back(std::move(link));
    }
  }
  for (auto& link : open) link->close(routing::CloseCause::Shutdown, "the hub is shutting down");
}

std::size_t MqttServer::connectionCount() const {
  std::lock_guard lock(impl_->context->mutex);
  return impl_->context->open.size();
}

}  // namespace iothub::transport
