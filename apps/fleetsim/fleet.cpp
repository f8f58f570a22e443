// The fleet: thousands of MQTT device connections and the service-side load, multiplexed over
// a few io_context threads. All Asio/Beast code of fleetsim lives in this translation unit.
//
// Threading: each Shard owns one io_context run by one thread, a slice of the devices
// (global index % threads) and some of the load generators. Everything a shard owns is
// touched only on its thread. The main thread drives the scenario's phases: it posts work
// into the shards and watches atomic counters; histograms are read by posting into the
// shard and waiting (runOn).

#include "apps/fleetsim/fleet.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "apps/fleetsim/d2c_log.hpp"
#include "apps/fleetsim/latency_histogram.hpp"
#include "apps/fleetsim/report.hpp"
#include "apps/fleetsim/source_address.hpp"
#include "auth/connection_string.hpp"
#include "auth/sas_token.hpp"
#include "common/encoding.hpp"
#include "iothub/service/http_transport.hpp"
#include "mqtt/azure_topics.hpp"
#include "mqtt/client_session.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

namespace iothub::fleetsim {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using ErrorCodeT = boost::system::error_code;

constexpr std::string_view kApiVersion = "2021-04-12";
constexpr int kConnectAttempts = 4;

std::uint64_t microsSince(SteadyClock::time_point start) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - start).count());
}

std::int64_t nanosOf(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::int64_t nowNanos() { return nanosOf(SteadyClock::now()); }

double seconds(SteadyClock::duration d) { return std::chrono::duration<double>(d).count(); }

void logLine(const std::string& text) { std::fprintf(stderr, "fleetsim: %s\n", text.c_str()); }

// Counters shared by every shard (relaxed atomics: they are statistics, read by the main
// thread while the shards run).
struct Counters {
  std::atomic<std::uint64_t> ready{0};           // connections CONNACKed and SUBACKed
  std::atomic<std::uint64_t> connect_failed{0};  // gave up after kConnectAttempts
  std::atomic<std::uint64_t> connect_retries{0};
  std::atomic<std::uint64_t> refused{0};      // CONNACK with a non-zero return code
  std::atomic<std::uint64_t> sub_refused{0};  // SUBACK 0x80
  std::atomic<std::uint64_t> drops{0};        // ready connections lost (not by us)
  std::atomic<std::uint64_t> storm_drops{0};  // closed on purpose by a storm
  std::atomic<std::uint64_t> methods_received{0};
  std::atomic<std::uint64_t> methods_answered{0};
  std::atomic<std::uint64_t> methods_ignored{0};  // --flaky silent: left unanswered
  std::atomic<std::uint64_t> desired_received{0};
  std::atomic<std::uint64_t> twin_responses{0};
  std::atomic<std::uint64_t> reported_sent{0};
  std::atomic<std::uint64_t> reported_rejected{0};  // twin responses with a status >= 300
  std::atomic<std::uint64_t> pings_sent{0};
  std::atomic<std::uint64_t> pongs{0};
  // Broker requests whose reply did not come within --response-timeout (failed).
  std::atomic<std::uint64_t> request_timeouts{0};
  std::atomic<std::int64_t> first_method_ns{0};
  std::atomic<std::int64_t> last_method_ns{0};
  // C2d: publishes on devices/{id}/messages/devicebound/..., the distinct benchmark messages
  // among them, repeats, messages at the wrong device, payloads that are not c2dPayload(),
  // the earliest send time read from a payload and the latest arrival (steady clock, ns).
  std::atomic<std::uint64_t> c2d_received{0};
  std::atomic<std::uint64_t> c2d_unique{0};
  std::atomic<std::uint64_t> c2d_duplicates{0};
  std::atomic<std::uint64_t> c2d_misrouted{0};
  std::atomic<std::uint64_t> c2d_malformed{0};
  std::atomic<std::int64_t> c2d_first_sent_ns{INT64_MAX};
  std::atomic<std::int64_t> c2d_last_received_ns{0};
  // Telemetry: QoS 1 publishes on devices/{id}/messages/events/, their PUBACKs, and those
  // whose connection was lost before the PUBACK came (the server may or may not have them).
  std::atomic<std::uint64_t> d2c_sent{0};
  std::atomic<std::uint64_t> d2c_acked{0};
  std::atomic<std::uint64_t> d2c_lost{0};
  std::atomic<std::int64_t> d2c_first_sent_ns{INT64_MAX};
  std::atomic<std::int64_t> d2c_last_acked_ns{0};
};

void storeMin(std::atomic<std::int64_t>& a, std::int64_t v) {
  std::int64_t seen = a.load(std::memory_order_relaxed);
  while (v < seen && !a.compare_exchange_weak(seen, v, std::memory_order_relaxed)) {
  }
}
void storeMax(std::atomic<std::int64_t>& a, std::int64_t v) {
  std::int64_t seen = a.load(std::memory_order_relaxed);
  while (v > seen && !a.compare_exchange_weak(seen, v, std::memory_order_relaxed)) {
  }
}

// A closed-loop workload: callers take call numbers from `next` until `total` is reached or
// the deadline passes; call k goes to device device_first + (k % device_count) * device_stride.
enum class CallKind { Method, TwinPatch };
struct Workload {
  CallKind kind = CallKind::Method;
  std::size_t device_first = 0;
  std::size_t device_stride = 1;
  std::size_t device_count = 1;
  std::uint64_t total = UINT64_MAX;
  SteadyClock::time_point deadline = SteadyClock::time_point::max();
  bool record_latency = true;
  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<std::uint64_t> device_errors{0};  // method answered with a status other than 200
  std::atomic<std::size_t> active{0};
  // The first call's start and the last call's end (steady clock, ns).
  std::atomic<std::int64_t> first_sent_ns{INT64_MAX};
  std::atomic<std::int64_t> last_done_ns{0};
};

class Fleet;
class Shard;

enum class Role { Device, Requester };

// One MQTT client connection: a simulated device, or (broker baseline) a requester that plays
// the service side of a direct method over two broker hops. A requester may have several
// requests in flight (FleetOptions::requesters): each has its own rid "{requester}.{seq}",
// which the device echoes in its reply's topic.
//
// The MQTT protocol (CONNACK, SUBACK and PUBACK matching, packet ids, acknowledging C2D
// messages) is mqtt::ClientSession's; Connection is its I/O shell (sockets, TLS, reconnects)
// plus the simulated device's or requester's behaviour and the counters.
//
// Keep-alive: fleetsim paces the pings itself (Shard::onTick -> sendPing, every 3/4 of the
// keep-alive, spread over the connections) and never calls ClientSession::onTick, so the
// session sends no PINGREQ of its own and closes nothing for a late PINGRESP: pings_sent and
// pongs count exactly fleetsim's pings and their answers, and a slow server is measured, not
// disconnected.
class Connection {
 public:
  Connection(Shard& shard, std::size_t index, Role role);

  void start();  // connect (again); the connect window slot is taken by the caller
  void closeForStorm();
  // CONNACKed and every SUBSCRIBE answered, until the socket is closed. (Not the session's
  // state: a session that closes the connection itself is Disconnected before fail() runs,
  // which must still count a ready device as dropped.)
  bool ready() const { return ready_; }
  std::size_t index() const { return index_; }
  void sendPing();
  void sendReported();
  // Telemetry: publish message 0 at `first` (or as soon as ready), then one per
  // Fleet::d2c_interval, each after the previous one's PUBACK, while Fleet::d2c_running.
  void startTelemetry(SteadyClock::time_point first);

  // Requester only: publishes a request to device `device` and calls `done(status)` with the
  // status segment of the reply; `done(0)` when the connection is not ready or is lost, or
  // when no reply came within --response-timeout (expireRequests). Never synchronously.
  void request(std::size_t device, std::function<void(int)> done);
  // Requester only: fails (done(0)) the requests sent before `cutoff`.
  void expireRequests(SteadyClock::time_point cutoff);

 private:
  void onConnected(std::uint32_t gen, const ErrorCodeT& ec);
  void onHandshake(std::uint32_t gen, const ErrorCodeT& ec);
  void sendConnect();
  void readPlain();
  void onReadable(std::uint32_t gen, const ErrorCodeT& ec);
  void readTls();
  bool drain();
  // Carries out the session's actions in order; false when the connection ended meanwhile.
  bool execute(mqtt::ClientActions actions);
  void onAccepted();
  void onSubscribed(const mqtt::SubscribeCompleted& done);
  void handlePublish(mqtt::Publish& publish);
  void receiveC2d(const mqtt::Publish& publish);
  void answerMethod(std::string rid, int status);
  void sendTelemetryWhenDue();
  void onTelemetryAck();
  void sendReportedBody(std::string body);
  // Publishes through the session; false when the connection ended.
  bool publish(mqtt::Publish message);
  void flush();
  void fail(std::string_view why);
  void closeSocket();

  Shard& shard_;
  std::size_t index_;
  Role role_;
  std::string id_;
  tcp::socket socket_;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls_;
  std::unique_ptr<char[]> tls_buffer_;
  mqtt::Decoder decoder_;
  mqtt::ClientSession session_;
  std::string out_;
  std::string writing_;
  bool write_in_flight_ = false;
  // SUBSCRIBEs of this connection not answered yet: the device is ready at the last SUBACK.
  std::uint8_t subscribes_left_ = 0;
  bool ready_ = false;
  int attempts_ = 0;
  bool ever_ready_ = false;
  std::uint32_t generation_ = 0;
  std::uint32_t reported_seq_ = 0;
  int flaky_group_ = -1;            // --flaky: the device's group, -1 = always answers
  std::uint32_t method_calls_ = 0;  // calls received since Fleet::method_epoch last changed
  std::uint32_t call_epoch_ = 0;
  SteadyClock::time_point started_;
  std::uint64_t request_seq_ = 0;
  struct PendingRequest {
    std::function<void(int)> done;
    SteadyClock::time_point sent;
  };
  std::unordered_map<std::uint64_t, PendingRequest> pending_;  // by the seq of its rid
  // Telemetry: the next message's counter and due time, the one in flight (its message id and
  // publish time; it is the connection's only QoS 1 publish, so the session's PublishCompleted
  // is its PUBACK) and the timer that waits for the due time.
  std::uint32_t d2c_counter_ = 0;
  SteadyClock::time_point d2c_due_{};
  bool d2c_started_ = false;
  bool d2c_in_flight_ = false;
  std::uint64_t d2c_id_ = 0;
  std::int64_t d2c_sent_ns_ = 0;
  std::unique_ptr<asio::steady_timer> d2c_timer_;
};

// Service REST calls over one keep-alive HTTP/1.1 connection, one call at a time.
class RestClient {
 public:
  using Done = std::function<void(int status, const std::string& body)>;
  RestClient(asio::io_context& ioc, tcp::endpoint endpoint, const std::string& host,
             const std::string& authorization);
  void call(http::verb verb, std::string target, std::string body, Done done);

 private:
  void connect();
  void write();
  void finish(int status, const std::string& body);
  void failed(const ErrorCodeT& ec);

  beast::tcp_stream stream_;
  tcp::endpoint endpoint_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  Done done_;
  bool connected_ = false;
  bool retried_ = false;
};

class Shard {
 public:
  Shard(Fleet& fleet, unsigned id);

  Fleet& fleet;
  unsigned id;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  std::optional<asio::ssl::context> tls_context;
  std::vector<std::unique_ptr<Connection>> devices;     // global index = i * threads + id
  std::vector<std::unique_ptr<Connection>> requesters;  // broker baseline service side
  std::vector<std::unique_ptr<RestClient>> rest;        // hub service side
  std::deque<Connection*> to_connect;
  std::size_t connecting = 0;
  std::size_t window = 1;
  LatencyHistogram connack;         // TCP connect start -> CONNACK
  LatencyHistogram ready;           // TCP connect start -> last SUBACK
  LatencyHistogram calls;           // service call -> answer
  LatencyHistogram notify;          // desired PATCH sent -> device notified
  LatencyHistogram c2d;             // C2D message sent (time in its payload) -> device received
  LatencyHistogram d2c;             // telemetry publish -> PUBACK
  std::vector<D2cRecord> d2c_acks;  // telemetry: one per PUBACK (for --ack-log)
  std::array<char, 64 * 1024> scratch{};
  std::mt19937_64 rng;
  asio::steady_timer ticker;
  std::uint64_t tick = 0;

  void startConnecting();
  void connectMore();
  void slotDone() {
    --connecting;
    connectMore();
  }
  void onTick();
  void startCaller(std::size_t caller, Workload& workload);

 private:
  void callLoop(std::size_t caller, Workload& workload);
};

class Fleet {
 public:
  explicit Fleet(const FleetOptions& o) : options(o) {}

  const FleetOptions& options;
  Counters counters;
  std::vector<std::unique_ptr<Shard>> shards;
  std::optional<SourceAddressPlan> addresses;
  tcp::endpoint mqtt_endpoint;
  tcp::endpoint http_endpoint;
  std::string service_host;
  std::string service_authorization;
  std::unique_ptr<std::atomic<std::int64_t>[]> patch_sent_ns;  // per connected device
  std::unique_ptr<std::atomic<std::uint8_t>[]> c2d_seen;       // C2d: per message number
  bool subscribe_desired = false;
  bool reconnect_on_loss = true;
  // Telemetry: devices publish while this is set; each device's interval between messages
  // (zero: the next one right after the PUBACK).
  std::atomic<bool> d2c_running{false};
  SteadyClock::duration d2c_interval{0};
  // Bumped by the driver before each job: flaky devices count their calls from there again.
  std::atomic<std::uint32_t> method_epoch{0};
  std::size_t requester_count = 0;

  // Devices by their position among this process's devices (not their global index).
  Shard& shardOf(std::size_t local) { return *shards[local % shards.size()]; }

  template <class F>
  void runOn(Shard& shard, F f) {
    std::promise<void> done;
    asio::post(shard.ioc, [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }
  template <class F>
  void runOnAll(F f) {
    for (auto& shard : shards) runOn(*shard, [&] { f(*shard); });
  }

  LatencyHistogram collect(LatencyHistogram Shard::*which, bool reset) {
    LatencyHistogram total;
    runOnAll([&](Shard& s) {
      total.merge(s.*which);
      if (reset) s.*which = LatencyHistogram();
    });
    return total;
  }
};

// ---------------------------------------------------------------------------------------
// Connection

Connection::Connection(Shard& shard, std::size_t index, Role role)
    : shard_(shard),
      index_(index),
      role_(role),
      id_(role == Role::Device ? deviceId(shard.fleet.options.device_prefix, index)
                               : "fleet-requester-" + std::to_string(index)),
      socket_(shard.ioc) {
  if (role == Role::Device) flaky_group_ = flakyGroupOf(shard.fleet.options.flaky, index);
}

void Connection::start() {
  ++generation_;
  ++attempts_;
  out_.clear();
  writing_.clear();
  write_in_flight_ = false;
  decoder_ = mqtt::Decoder();
  started_ = SteadyClock::now();
  const auto& fleet = shard_.fleet;
  ErrorCodeT ec;
  socket_ = tcp::socket(shard_.ioc);
  socket_.open(tcp::v4(), ec);
  if (!ec) {
    const int one = 1;
    // The port is chosen at connect() per 4-tuple, so ~28 000 ephemeral ports are not a
    // per-process limit (see source_address.hpp).
    ::setsockopt(socket_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    const auto source = asio::ip::address_v4(
        fleet.addresses->addressForDevice(role_ == Role::Device ? index_ : index_ + 7919));
    socket_.bind(tcp::endpoint(source, 0), ec);
  }
  if (!ec) socket_.set_option(tcp::no_delay(true), ec);
  if (ec) {
    fail("socket setup");
    return;
  }
  socket_.async_connect(fleet.mqtt_endpoint,
                        [this, gen = generation_](const ErrorCodeT& e) { onConnected(gen, e); });
}

void Connection::onConnected(std::uint32_t gen, const ErrorCodeT& ec) {
  if (gen != generation_) return;
  if (ec) {
    fail("connect");
    return;
  }
  if (shard_.tls_context) {
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, *shard_.tls_context);
    if (!tls_buffer_) tls_buffer_ = std::make_unique<char[]>(4096);
    tls_->set_verify_callback(asio::ssl::host_name_verification(shard_.fleet.options.host_name));
    tls_->async_handshake(asio::ssl::stream_base::client,
                          [this, gen](const ErrorCodeT& e) { onHandshake(gen, e); });
    return;
  }
  ErrorCodeT ignored;
  socket_.non_blocking(true, ignored);
  sendConnect();
  readPlain();
}

void Connection::onHandshake(std::uint32_t gen, const ErrorCodeT& ec) {
  if (gen != generation_) return;
  if (ec) {
    fail("tls handshake");
    return;
  }
  sendConnect();
  readTls();
}

void Connection::sendConnect() {
  const auto& o = shard_.fleet.options;
  mqtt::Connect connect;
  connect.client_id = id_;
  connect.clean_session = o.clean_session;
  connect.keep_alive = o.keep_alive_seconds;
  if (o.target == Target::Hub && role_ == Role::Device) {
    connect.user_name = o.host_name + "/" + id_ + "/?api-version=" + std::string(kApiVersion);
    const auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count() +
                        24 * 3600;
    auto token = auth::buildSasToken(urlEncodeStrict(o.host_name + "/devices/" + id_), o.device_key,
                                     std::nullopt, expiry);
    if (!token) {
      fail("sas token");
      return;
    }
    connect.password = std::move(*token);
  }
  execute(session_.connect(std::move(connect), SteadyClock::now()));
}

void Connection::readPlain() {
  socket_.async_wait(tcp::socket::wait_read,
                     [this, gen = generation_](const ErrorCodeT& ec) { onReadable(gen, ec); });
}

void Connection::onReadable(std::uint32_t gen, const ErrorCodeT& ec) {
  if (gen != generation_) return;
  if (ec) {
    fail("read");
    return;
  }
  for (;;) {
    ErrorCodeT rec;
    const std::size_t n = socket_.read_some(asio::buffer(shard_.scratch), rec);
    if (rec == asio::error::would_block || rec == asio::error::try_again) break;
    if (rec) {
      fail("read");
      return;
    }
    decoder_.feed(std::string_view(shard_.scratch.data(), n));
    if (!drain()) return;
    if (gen != generation_) return;
    if (n < shard_.scratch.size()) break;
  }
  readPlain();
}

void Connection::readTls() {
  tls_->async_read_some(asio::buffer(tls_buffer_.get(), 4096),
                        [this, gen = generation_](const ErrorCodeT& ec, std::size_t n) {
                          if (gen != generation_) return;
                          if (ec) {
                            fail("read");
                            return;
                          }
                          decoder_.feed(std::string_view(tls_buffer_.get(), n));
                          if (!drain() || gen != generation_) return;
                          readTls();
                        });
}

bool Connection::drain() {
  const std::uint32_t gen = generation_;
  // One clock read per received chunk: the session only needs it for its keep-alive
  // bookkeeping (the PUBACKs it sends), which fleetsim does not rely on.
  const auto now = SteadyClock::now();
  for (;;) {
    auto next = decoder_.next();
    if (!next) {
      // The session closes (CloseClientConnection); should it not, the bytes are still lost.
      if (execute(session_.onDecodeError(decoder_.lastError(), next.status().message())))
        fail("malformed packet");
      return false;
    }
    if (!next->has_value()) return true;
    if (!execute(session_.onPacket(std::move(**next), now)) || gen != generation_) return false;
  }
}

bool Connection::execute(mqtt::ClientActions actions) {
  auto& c = shard_.fleet.counters;
  const std::uint32_t gen = generation_;
  for (auto& action : actions) {
    if (auto* send = std::get_if<mqtt::SendPacket>(&action)) {
      // Encoded into the pending output; written (coalesced) by flush() below.
      if (!mqtt::encode(send->packet, out_)) {
        fail("encode");
        return false;
      }
    } else if (auto* received = std::get_if<mqtt::MessageReceived>(&action)) {
      handlePublish(received->publish);
    } else if (std::holds_alternative<mqtt::PublishCompleted>(action)) {
      if (d2c_in_flight_) onTelemetryAck();
    } else if (std::holds_alternative<mqtt::PingAnswered>(action)) {
      c.pongs.fetch_add(1, std::memory_order_relaxed);
    } else if (auto* subscribed = std::get_if<mqtt::SubscribeCompleted>(&action)) {
      onSubscribed(*subscribed);
    } else if (std::holds_alternative<mqtt::ConnectionAccepted>(action)) {
      onAccepted();
    } else if (std::holds_alternative<mqtt::ConnectionRefused>(action)) {
      c.refused.fetch_add(1, std::memory_order_relaxed);
      attempts_ = kConnectAttempts;  // a refusal does not get better by retrying
    } else if (auto* close = std::get_if<mqtt::CloseClientConnection>(&action)) {
      // Refusals, malformed packets and protocol violations: fleetsim never disconnect()s.
      fail(mqtt::clientCloseReasonName(close->reason));
      return false;
    }
    if (gen != generation_) return false;
  }
  flush();
  return true;
}

void Connection::onAccepted() {
  auto& fleet = shard_.fleet;
  shard_.connack.record(microsSince(started_));
  std::vector<std::string> filters;
  mqtt::QoS qos = mqtt::QoS::AtMostOnce;
  if (role_ == Role::Requester) {
    filters.push_back("fleet/res/" + std::to_string(index_) + "/#");
  } else if (fleet.options.scenario == Scenario::C2d) {
    // The hub's C2D topic, and the same topic on the broker: the SDKs subscribe at QoS 1.
    filters.push_back(mqtt::azure::c2dFilter(id_));
    qos = mqtt::QoS::AtLeastOnce;
  } else if (fleet.options.target == Target::Hub) {
    filters = {std::string(mqtt::azure::kMethodRequestFilter),
               std::string(mqtt::azure::kTwinResponseFilter)};
    if (fleet.subscribe_desired) filters.emplace_back(mqtt::azure::kDesiredPatchFilter);
  } else {
    filters = {"fleet/" + id_ + "/methods/POST/#", "fleet/" + id_ + "/twin/res/#"};
    if (fleet.subscribe_desired)
      filters.push_back("fleet/" + id_ + "/twin/PATCH/properties/desired/#");
  }
  // One SUBSCRIBE per filter, as the Azure device SDKs subscribe lazily one feature at a time.
  subscribes_left_ = static_cast<std::uint8_t>(filters.size());
  const auto now = SteadyClock::now();
  for (auto& filter : filters) {
    std::vector<mqtt::Subscription> one;
    one.push_back({std::move(filter), qos});
    auto sent = session_.subscribe(std::move(one), now);
    if (!sent) {
      fail("subscribe");
      return;
    }
    if (!execute(std::move(sent->actions))) return;
  }
}

void Connection::onSubscribed(const mqtt::SubscribeCompleted& done) {
  auto& c = shard_.fleet.counters;
  for (auto code : done.codes) {
    if (code == mqtt::SubAckReturnCode::Failure)
      c.sub_refused.fetch_add(1, std::memory_order_relaxed);
  }
  if (subscribes_left_ == 0 || --subscribes_left_ != 0) return;
  ready_ = true;
  attempts_ = 0;
  shard_.ready.record(microsSince(started_));
  c.ready.fetch_add(1, std::memory_order_relaxed);
  if (!ever_ready_) {
    ever_ready_ = true;
    shard_.slotDone();
  }
  if (d2c_started_) sendTelemetryWhenDue();  // reconnected during the telemetry phase
}

void Connection::handlePublish(mqtt::Publish& publish) {
  auto& fleet = shard_.fleet;
  auto& c = fleet.counters;
  if (role_ == Role::Requester) {
    // fleet/res/{requester}/{status}/?$rid={requester}.{seq}
    std::string_view topic = publish.topic;
    const auto rid_at = topic.find("$rid=");
    if (rid_at == std::string_view::npos || pending_.empty()) return;
    const std::string_view rid = topic.substr(rid_at + 5);
    const auto dot = rid.find('.');
    std::uint64_t seq = 0;
    if (dot == std::string_view::npos ||
        std::from_chars(rid.data() + dot + 1, rid.data() + rid.size(), seq).ptr !=
            rid.data() + rid.size()) {
      return;
    }
    const auto it = pending_.find(seq);
    if (it == pending_.end()) return;  // expired already, or not ours
    const std::string_view prefix = "fleet/res/";
    std::string_view rest = topic.substr(prefix.size());
    rest = rest.substr(rest.find('/') + 1);
    const int status = std::atoi(std::string(rest.substr(0, rest.find('/'))).c_str());
    auto done = std::move(it->second.done);
    pending_.erase(it);
    done(status);
    return;
  }
  if (publish.topic.find("/messages/devicebound/") != std::string::npos) {
    receiveC2d(publish);
    return;
  }
  std::string_view name;
  std::string_view rid;
  if (parseMethodTopic(publish.topic, name, rid)) {
    c.methods_received.fetch_add(1, std::memory_order_relaxed);
    const auto now = nowNanos();
    std::int64_t expected = 0;
    c.first_method_ns.compare_exchange_strong(expected, now, std::memory_order_relaxed);
    c.last_method_ns.store(now, std::memory_order_relaxed);
    const std::uint32_t epoch = fleet.method_epoch.load(std::memory_order_relaxed);
    if (epoch != call_epoch_) {
      call_epoch_ = epoch;
      method_calls_ = 0;
    }
    ++method_calls_;
    int status = 200;
    if (flaky_group_ >= 0) {
      const FlakyGroup& group = fleet.options.flaky[static_cast<std::size_t>(flaky_group_)];
      if (method_calls_ <= group.calls) {
        if (group.mode == FlakyMode::Silent) {
          c.methods_ignored.fetch_add(1, std::memory_order_relaxed);
          return;
        }
        status = 500;
      }
    }
    std::string rid_copy(rid);
    if (fleet.options.method_delay.count() > 0) {
      auto timer = std::make_shared<asio::steady_timer>(shard_.ioc, fleet.options.method_delay);
      timer->async_wait(
          [this, timer, gen = generation_, r = std::move(rid_copy), status](const ErrorCodeT& ec) {
            if (!ec && gen == generation_) answerMethod(r, status);
          });
    } else {
      answerMethod(std::move(rid_copy), status);
    }
    return;
  }
  if (publish.topic.find("/twin/PATCH/properties/desired/") != std::string::npos) {
    c.desired_received.fetch_add(1, std::memory_order_relaxed);
    if (std::size_t local = 0; ownDevice(fleet.options, index_, local)) {
      const std::int64_t sent = fleet.patch_sent_ns[local].exchange(0, std::memory_order_relaxed);
      if (sent != 0) shard_.notify.record(static_cast<std::uint64_t>((nowNanos() - sent) / 1000));
    }
    if (fleet.options.report_desired) {
      if (auto body = reportedFromDesired(publish.payload)) {
        sendReportedBody(std::move(*body));
      } else {
        logLine(id_ + ": desired patch not reported: " + body.status().message());
      }
    }
    return;
  }
  if (publish.topic.find("/twin/res/") != std::string::npos) {
    c.twin_responses.fetch_add(1, std::memory_order_relaxed);
    if (parseTwinResponseStatus(publish.topic) >= 300)
      c.reported_rejected.fetch_add(1, std::memory_order_relaxed);
  }
}

void Connection::receiveC2d(const mqtt::Publish& publish) {
  auto& fleet = shard_.fleet;
  auto& c = fleet.counters;
  const std::int64_t now = nowNanos();
  c.c2d_received.fetch_add(1, std::memory_order_relaxed);
  storeMax(c.c2d_last_received_ns, now);
  std::uint64_t seq = 0;
  std::int64_t sent = 0;
  if (!fleet.c2d_seen || !parseC2dPayload(publish.payload, seq, sent) ||
      seq >= fleet.options.messages) {
    c.c2d_malformed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // The sender sends message k to addressed device k mod count.
  const AddressedDevices to = addressedDevices(fleet.options);
  if (to.first + static_cast<std::size_t>(seq % to.count) * to.stride != index_)
    c.c2d_misrouted.fetch_add(1, std::memory_order_relaxed);
  if (fleet.c2d_seen[seq].exchange(1, std::memory_order_relaxed) != 0) {
    c.c2d_duplicates.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  storeMin(c.c2d_first_sent_ns, sent);
  shard_.c2d.record(now > sent ? static_cast<std::uint64_t>((now - sent) / 1000) : 0);
  c.c2d_unique.fetch_add(1, std::memory_order_relaxed);
}

void Connection::answerMethod(std::string rid, int status) {
  auto& fleet = shard_.fleet;
  if (!ready()) return;
  if (status == 200 && fleet.options.method_failure_rate > 0) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    if (u(shard_.rng) < fleet.options.method_failure_rate) status = 500;
  }
  std::string topic;
  if (fleet.options.target == Target::Hub) {
    topic = mqtt::azure::methodResponseTopic(status, rid);
  } else {
    // The requester's number is the part of the rid before the dot.
    topic = "fleet/res/" + rid.substr(0, rid.find('.')) + "/" + std::to_string(status) +
            "/?$rid=" + rid;
  }
  publish({.topic = std::move(topic), .payload = fleet.options.method_response});
  fleet.counters.methods_answered.fetch_add(1, std::memory_order_relaxed);
}

void Connection::request(std::size_t device, std::function<void(int)> done) {
  if (!ready()) {
    // Never complete synchronously: the caller loops on completion.
    asio::post(shard_.ioc, [d = std::move(done)] { d(0); });
    return;
  }
  const std::uint64_t seq = ++request_seq_;
  pending_.emplace(seq, PendingRequest{std::move(done), SteadyClock::now()});
  std::string topic = "fleet/" + deviceId(shard_.fleet.options.device_prefix, device) +
                      "/methods/POST/lockDoor/?$rid=" + std::to_string(index_) + "." +
                      std::to_string(seq);
  publish({.topic = std::move(topic), .payload = shard_.fleet.options.method_payload});
}

void Connection::expireRequests(SteadyClock::time_point cutoff) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.sent >= cutoff) {
      ++it;
      continue;
    }
    shard_.fleet.counters.request_timeouts.fetch_add(1, std::memory_order_relaxed);
    // Posted: the caller sends its next request from `done`, into pending_.
    asio::post(shard_.ioc, [d = std::move(it->second.done)] { d(0); });
    it = pending_.erase(it);
  }
}

void Connection::startTelemetry(SteadyClock::time_point first) {
  d2c_started_ = true;
  d2c_due_ = first;
  sendTelemetryWhenDue();
}

void Connection::sendTelemetryWhenDue() {
  auto& fleet = shard_.fleet;
  if (!ready() || d2c_in_flight_ || !fleet.d2c_running.load(std::memory_order_relaxed)) {
    return;
  }
  const auto now = SteadyClock::now();
  if (now < d2c_due_) {
    if (!d2c_timer_) d2c_timer_ = std::make_unique<asio::steady_timer>(shard_.ioc);
    d2c_timer_->expires_at(d2c_due_);
    d2c_timer_->async_wait([this, gen = generation_](const ErrorCodeT& ec) {
      if (!ec && gen == generation_) sendTelemetryWhenDue();
    });
    return;
  }
  // The offered rate is a ceiling: a device that fell behind (slow PUBACKs) does not send a
  // burst to catch up, its schedule starts again from now.
  d2c_due_ = std::max(d2c_due_ + fleet.d2c_interval, now);
  d2c_id_ = d2cMessageId(index_, d2c_counter_++);
  d2c_sent_ns_ = nowNanos();
  d2c_in_flight_ = true;
  auto& c = fleet.counters;
  c.d2c_sent.fetch_add(1, std::memory_order_relaxed);
  storeMin(c.d2c_first_sent_ns, d2c_sent_ns_);
  // The hub's telemetry topic without properties; the broker gets the same topic.
  publish({.topic = mqtt::azure::telemetryTopic(id_),
           .payload = d2cPayload(d2c_id_, d2c_sent_ns_),
           .qos = mqtt::QoS::AtLeastOnce});
}

void Connection::onTelemetryAck() {
  const std::int64_t now = nowNanos();
  d2c_in_flight_ = false;
  auto& c = shard_.fleet.counters;
  shard_.d2c.record(
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, now - d2c_sent_ns_) / 1000));
  if (!shard_.fleet.options.ack_log.empty())
    shard_.d2c_acks.push_back({d2c_id_, d2c_sent_ns_, now});
  storeMax(c.d2c_last_acked_ns, now);
  c.d2c_acked.fetch_add(1, std::memory_order_relaxed);
  sendTelemetryWhenDue();
}

void Connection::sendPing() {
  if (!ready()) return;
  execute(session_.ping(SteadyClock::now()));
  shard_.fleet.counters.pings_sent.fetch_add(1, std::memory_order_relaxed);
}

void Connection::sendReported() {
  if (!ready() || role_ != Role::Device) return;
  sendReportedBody(R"({"temperature":21.5,"seq":)" + std::to_string(reported_seq_ + 1) + "}");
}

void Connection::sendReportedBody(std::string body) {
  if (!ready() || role_ != Role::Device) return;
  const auto seq = std::to_string(++reported_seq_);
  std::string topic = shard_.fleet.options.target == Target::Hub
                          ? mqtt::azure::twinPatchReportedTopic(seq)
                          : "fleet/" + id_ + "/twin/PATCH/properties/reported/?$rid=" + seq;
  publish({.topic = std::move(topic), .payload = std::move(body)});
  shard_.fleet.counters.reported_sent.fetch_add(1, std::memory_order_relaxed);
}

bool Connection::publish(mqtt::Publish message) {
  auto sent = session_.publish(std::move(message), SteadyClock::now());
  if (!sent) {
    fail("publish");
    return false;
  }
  return execute(std::move(sent->actions));
}

void Connection::flush() {
  if (write_in_flight_ || out_.empty()) return;
  std::swap(writing_, out_);
  out_.clear();
  write_in_flight_ = true;
  auto handler = [this, gen = generation_](const ErrorCodeT& ec, std::size_t) {
    if (gen != generation_) return;
    write_in_flight_ = false;
    writing_.clear();
    if (ec) {
      fail("write");
      return;
    }
    flush();
  };
  if (tls_) {
    asio::async_write(*tls_, asio::buffer(writing_), std::move(handler));
  } else {
    asio::async_write(socket_, asio::buffer(writing_), std::move(handler));
  }
}

void Connection::closeSocket() {
  ++generation_;  // every pending completion of the old connection is now ignored
  ready_ = false;
  session_.connectionLost();
  // Telemetry is never re-sent on the next connection (fail() counts it lost): its packet id
  // is given up, so the session neither keeps it nor matches a late PUBACK to it.
  while (!session_.inFlight().empty()) session_.abandon(*session_.inFlight().begin());
  ErrorCodeT ignored;
  socket_.close(ignored);
  if (tls_) {
    // Aborted operations still reference the stream: free it after they have run.
    std::shared_ptr<asio::ssl::stream<tcp::socket&>> old(tls_.release());
    asio::post(shard_.ioc, [old] {});
  }
  for (auto& [seq, pending] : pending_)
    asio::post(shard_.ioc, [d = std::move(pending.done)] { d(0); });
  pending_.clear();
}

void Connection::closeForStorm() {
  if (!ready()) return;
  shard_.fleet.counters.storm_drops.fetch_add(1, std::memory_order_relaxed);
  shard_.fleet.counters.ready.fetch_sub(1,
                                        std::memory_order_relaxed);  // counted again on reconnect
  closeSocket();
  auto timer = std::make_shared<asio::steady_timer>(shard_.ioc, std::chrono::milliseconds(100));
  timer->async_wait([this, timer](const ErrorCodeT&) {
    attempts_ = 0;
    start();
  });
}

void Connection::fail(std::string_view why) {
  auto& fleet = shard_.fleet;
  const bool was_ready = ready();
  if (d2c_in_flight_) {
    d2c_in_flight_ = false;
    fleet.counters.d2c_lost.fetch_add(1, std::memory_order_relaxed);
  }
  closeSocket();
  if (was_ready) {
    fleet.counters.ready.fetch_sub(1, std::memory_order_relaxed);
    fleet.counters.drops.fetch_add(1, std::memory_order_relaxed);
    if (!fleet.reconnect_on_loss) return;
    attempts_ = 0;
  } else if (attempts_ >= kConnectAttempts) {
    fleet.counters.connect_failed.fetch_add(1, std::memory_order_relaxed);
    logLine(id_ + ": giving up (" + std::string(why) + ")");
    if (!ever_ready_) {
      ever_ready_ = true;  // the slot is released once
      shard_.slotDone();
    }
    return;
  } else {
    fleet.counters.connect_retries.fetch_add(1, std::memory_order_relaxed);
  }
  auto timer = std::make_shared<asio::steady_timer>(shard_.ioc, std::chrono::milliseconds(500));
  timer->async_wait([this, timer](const ErrorCodeT&) { start(); });
}

// ---------------------------------------------------------------------------------------
// RestClient

RestClient::RestClient(asio::io_context& ioc, tcp::endpoint endpoint, const std::string& host,
                       const std::string& authorization)
    : stream_(ioc), endpoint_(endpoint) {
  request_.version(11);
  request_.set(http::field::host, host);
  request_.set(http::field::authorization, authorization);
  request_.set(http::field::user_agent, "fleetsim/0.1");
  request_.set(http::field::content_type, "application/json; charset=utf-8");
  request_.keep_alive(true);
}

void RestClient::call(http::verb verb, std::string target, std::string body, Done done) {
  request_.method(verb);
  request_.target(target);
  if (verb == http::verb::patch) {
    request_.set(http::field::if_match, "\"*\"");
  } else {
    request_.erase(http::field::if_match);
  }
  request_.body() = std::move(body);
  request_.prepare_payload();
  done_ = std::move(done);
  retried_ = false;
  if (connected_) {
    write();
  } else {
    connect();
  }
}

void RestClient::connect() {
  stream_.expires_after(std::chrono::seconds(30));
  stream_.async_connect(endpoint_, [this](const ErrorCodeT& ec) {
    if (ec) {
      finish(0, ec.message());
      return;
    }
    connected_ = true;
    stream_.socket().set_option(tcp::no_delay(true));
    write();
  });
}

void RestClient::write() {
  stream_.expires_after(std::chrono::seconds(90));
  http::async_write(stream_, request_, [this](const ErrorCodeT& ec, std::size_t) {
    if (ec) {
      failed(ec);
      return;
    }
    response_ = {};
    http::async_read(stream_, buffer_, response_, [this](const ErrorCodeT& e, std::size_t) {
      if (e) {
        failed(e);
        return;
      }
      if (!response_.keep_alive()) {
        ErrorCodeT ignored;
        stream_.socket().close(ignored);
        connected_ = false;
      }
      finish(static_cast<int>(response_.result_int()), response_.body());
    });
  });
}

void RestClient::failed(const ErrorCodeT& ec) {
  ErrorCodeT ignored;
  stream_.socket().close(ignored);
  buffer_.clear();
  const bool was_connected = connected_;
  connected_ = false;
  if (was_connected && !retried_) {
    // A kept-alive connection the server closed: send once more on a fresh one.
    retried_ = true;
    connect();
    return;
  }
  finish(0, ec.message());
}

void RestClient::finish(int status, const std::string& body) {
  auto done = std::move(done_);
  done_ = nullptr;
  done(status, body);
}

// ---------------------------------------------------------------------------------------
// Shard

Shard::Shard(Fleet& f, unsigned shard_id)
    : fleet(f), id(shard_id), rng(0x5eed + shard_id), ticker(ioc) {
  guard.emplace(ioc.get_executor());
  if (f.options.tls) {
    tls_context.emplace(asio::ssl::context::tls_client);
    tls_context->set_verify_mode(asio::ssl::verify_peer);
    tls_context->load_verify_file(f.options.ca_file);
  }
}

void Shard::startConnecting() {
  for (auto& r : requesters) to_connect.push_back(r.get());
  for (auto& d : devices) to_connect.push_back(d.get());
  connectMore();
  ticker.expires_after(std::chrono::seconds(1));
  ticker.async_wait([this](const ErrorCodeT& ec) {
    if (!ec) onTick();
  });
}

void Shard::connectMore() {
  while (connecting < window && !to_connect.empty()) {
    Connection* next = to_connect.front();
    to_connect.pop_front();
    ++connecting;
    next->start();
  }
}

void Shard::onTick() {
  ++tick;
  const auto& o = fleet.options;
  // Each connection pings once per keep-alive period; the slices spread pings evenly.
  const std::uint64_t period = std::max<std::uint64_t>(1, o.keep_alive_seconds * 3 / 4);
  for (std::size_t i = tick % period; i < devices.size(); i += period) devices[i]->sendPing();
  for (std::size_t i = tick % period; i < requesters.size(); i += period) requesters[i]->sendPing();
  if (!requesters.empty()) {
    const auto cutoff = SteadyClock::now() - o.response_timeout;
    for (auto& r : requesters) r->expireRequests(cutoff);
  }
  if (o.report_every.count() > 0) {
    const auto every = static_cast<std::uint64_t>(o.report_every.count());
    for (std::size_t i = tick % every; i < devices.size(); i += every) devices[i]->sendReported();
  }
  if (o.storm_every.count() > 0 && tick % static_cast<std::uint64_t>(o.storm_every.count()) == 0) {
    std::bernoulli_distribution pick(o.storm_fraction);
    for (auto& d : devices) {
      if (d->ready() && pick(rng)) d->closeForStorm();
    }
  }
  ticker.expires_after(std::chrono::seconds(1));
  ticker.async_wait([this](const ErrorCodeT& ec) {
    if (!ec) onTick();
  });
}

void Shard::startCaller(std::size_t caller, Workload& workload) {
  workload.active.fetch_add(1);
  callLoop(caller, workload);
}

void Shard::callLoop(std::size_t caller, Workload& w) {
  const std::uint64_t k = w.next.fetch_add(1, std::memory_order_relaxed);
  if (k >= w.total || SteadyClock::now() >= w.deadline) {
    w.active.fetch_sub(1);
    return;
  }
  const std::size_t device =
      w.device_first + static_cast<std::size_t>(k % w.device_count) * w.device_stride;
  const auto started = SteadyClock::now();
  storeMin(w.first_sent_ns, nanosOf(started));
  const auto& o = fleet.options;
  if (o.target == Target::Mosquitto) {
    // Callers share the requester connections (round robin within the shard).
    requesters[caller % requesters.size()]->request(
        device, [this, caller, &w, started](int status) {
          storeMax(w.last_done_ns, nowNanos());
          if (w.record_latency) calls.record(microsSince(started));
          if (status == 0) {
            w.failed.fetch_add(1, std::memory_order_relaxed);
          } else {
            w.ok.fetch_add(1, std::memory_order_relaxed);
            if (status != 200) w.device_errors.fetch_add(1, std::memory_order_relaxed);
          }
          callLoop(caller, w);
        });
    return;
  }
  const std::string device_id = deviceId(o.device_prefix, device);
  std::string target;
  std::string body;
  http::verb verb = http::verb::post;
  if (w.kind == CallKind::Method) {
    target =
        "/twins/" + urlEncodeStrict(device_id) + "/methods?api-version=" + std::string(kApiVersion);
    body =
        R"({"methodName":"lockDoor","responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0,"payload":)" +
        o.method_payload + "}";
  } else {
    verb = http::verb::patch;
    target = "/twins/" + urlEncodeStrict(device_id) + "?api-version=" + std::string(kApiVersion);
    body = R"({"properties":{"desired":{"setpoint":)" + std::to_string(k) + R"(,"mode":"eco"}}})";
    if (std::size_t local = 0; ownDevice(o, device, local))
      fleet.patch_sent_ns[local].store(nowNanos(), std::memory_order_relaxed);
  }
  rest[caller]->call(
      verb, std::move(target), std::move(body),
      [this, caller, &w, started](int status, const std::string& response) {
        storeMax(w.last_done_ns, nowNanos());
        if (w.record_latency) calls.record(microsSince(started));
        if (status == 200) {
          w.ok.fetch_add(1, std::memory_order_relaxed);
          if (w.kind == CallKind::Method && response.find("\"status\":200") == std::string::npos) {
            w.device_errors.fetch_add(1, std::memory_order_relaxed);
          }
        } else {
          if (w.failed.fetch_add(1, std::memory_order_relaxed) < 5) {
            logLine("call failed: HTTP " + std::to_string(status) + " " + response.substr(0, 200));
          }
        }
        callLoop(caller, w);
      });
}

// ---------------------------------------------------------------------------------------
// Scenario driver (main thread)

template <class Pred>
bool waitUntil(Pred pred, std::chrono::milliseconds timeout,
               const std::atomic<bool>* stop = nullptr) {
  const auto deadline = SteadyClock::now() + timeout;
  while (!pred()) {
    if (SteadyClock::now() >= deadline) return false;
    if (stop != nullptr && stop->load()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

class Driver {
 public:
  Driver(const FleetOptions& o, const std::atomic<bool>& stop)
      : options_(o), stop_(stop), fleet_(o) {}
  ~Driver() { shutdown(); }

  Result<json::object> run();

 private:
  Status setUp();
  Status connectAll(json::object& out);
  void runWorkload(Workload& w, std::size_t callers);
  json::object runCalls(CallKind kind, std::size_t callers, std::uint64_t total,
                        std::chrono::milliseconds duration, bool record = true);
  Status scenarioMethods(json::object& out);
  Status scenarioTwin(json::object& out);
  Status scenarioIdle(json::object& out);
  Status scenarioJobs(json::object& out);
  Status scenarioTwinJobs(json::object& out);
  Status scenarioMethodJobs(json::object& out);
  Status scenarioC2d(json::object& out);
  Status scenarioTelemetry(json::object& out);
  Status scenarioSweep(json::object& out);
  // Creates the job `body` (its jobId added), polls it every 50 ms until it ends and returns
  // its figures: duration, final statistics, a timeline every options_.sample_every, when no
  // device was pending any more and (succeeded_target >= 0) when succeededCount reached it.
  Result<json::object> runJob(const std::string& body, std::size_t expected_devices,
                              std::int64_t succeeded_target = -1);
  // The job's rows (SELECT * FROM devices.jobs, all pages): counts by status, error code and
  // attempts, and how many distinct devices they name.
  Result<json::object> tallyRows(const std::string& job_id);
  // Waits until every reported PATCH sent so far was answered (at most `timeout`).
  void settleReports(std::chrono::milliseconds timeout);
  std::optional<ProcessSample> sample() const {
    return options_.server_pid > 0 ? sampleProcess(options_.server_pid) : std::nullopt;
  }
  void shutdown();

  const FleetOptions& options_;
  const std::atomic<bool>& stop_;
  Fleet fleet_;
  std::shared_ptr<service::HttpTransport> service_;
};

Status Driver::setUp() {
  auto plan = SourceAddressPlan::create(options_.source_addresses);
  if (!plan) return plan.status();
  fleet_.addresses = *plan;
  ErrorCodeT ec;
  const auto address = asio::ip::make_address(options_.server_address, ec);
  if (ec) return Status(ErrorCode::ArgumentInvalid, "invalid --server " + options_.server_address);
  fleet_.mqtt_endpoint = tcp::endpoint(address, options_.mqtt_port);
  fleet_.http_endpoint = tcp::endpoint(address, options_.http_port);
  fleet_.subscribe_desired =
      options_.scenario == Scenario::Twin || options_.scenario == Scenario::Jobs ||
      options_.scenario == Scenario::Serve || options_.scenario == Scenario::TwinJobs;
  fleet_.patch_sent_ns = std::make_unique<std::atomic<std::int64_t>[]>(options_.devices + 1);
  if (options_.scenario == Scenario::C2d)
    fleet_.c2d_seen = std::make_unique<std::atomic<std::uint8_t>[]>(options_.messages);
  if (options_.target == Target::Hub && !options_.service_connection_string.empty()) {
    auto cs = auth::ServiceConnectionString::parse(options_.service_connection_string);
    if (!cs) return cs.status();
    fleet_.service_host = cs->host_name;
    const auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count() +
                        24 * 3600;
    auto token = auth::buildSasToken(cs->host_name, cs->key, cs->key_name, expiry);
    if (!token) return token.status();
    fleet_.service_authorization = *token;
    service::ServiceClientOptions so;
    so.endpoint = "http://" + options_.server_address + ":" + std::to_string(options_.http_port);
    auto transport = service::HttpTransport::create(*cs, so);
    if (!transport) return transport.status();
    service_ = std::move(*transport);
  }
  fleet_.requester_count = requesterConnections(options_);
  for (unsigned i = 0; i < options_.threads; ++i) {
    try {
      fleet_.shards.push_back(std::make_unique<Shard>(fleet_, i));
    } catch (const std::exception& e) {
      return Status(ErrorCode::ArgumentInvalid, std::string("TLS setup: ") + e.what());
    }
  }
  for (std::size_t d = 0; d < options_.devices; ++d) {
    auto& shard = fleet_.shardOf(d);
    shard.devices.push_back(
        std::make_unique<Connection>(shard, deviceIndex(options_, d), Role::Device));
  }
  const std::size_t callers =
      options_.target == Target::Hub ? options_.concurrency : fleet_.requester_count;
  for (std::size_t r = 0; r < callers; ++r) {
    // Caller r lives in shard r % threads at position r / threads.
    auto& shard = *fleet_.shards[r % fleet_.shards.size()];
    if (options_.target == Target::Hub) {
      shard.rest.push_back(std::make_unique<RestClient>(
          shard.ioc, fleet_.http_endpoint, fleet_.service_host, fleet_.service_authorization));
    } else {
      shard.requesters.push_back(std::make_unique<Connection>(shard, r, Role::Requester));
    }
  }
  for (auto& shard : fleet_.shards) {
    shard->window = std::max<std::size_t>(1, options_.connect_window / fleet_.shards.size());
    shard->thread = std::thread([s = shard.get()] { s->ioc.run(); });
  }
  return Status::ok();
}

void Driver::shutdown() {
  for (auto& shard : fleet_.shards) {
    shard->guard.reset();
    shard->ioc.stop();
  }
  for (auto& shard : fleet_.shards) {
    if (shard->thread.joinable()) shard->thread.join();
  }
}

Status Driver::connectAll(json::object& out) {
  const auto before = sample();
  const std::size_t total = options_.devices + fleet_.requester_count;
  const auto started = SteadyClock::now();
  for (auto& shard : fleet_.shards)
    asio::post(shard->ioc, [s = shard.get()] { s->startConnecting(); });
  auto& c = fleet_.counters;
  const bool all =
      waitUntil([&] { return c.ready.load() + c.connect_failed.load() >= total; },
                std::chrono::duration_cast<std::chrono::milliseconds>(options_.timeout), &stop_);
  const auto elapsed = SteadyClock::now() - started;
  const auto after = sample();
  json::object connect;
  connect["devices"] = options_.devices;
  connect["connections"] = total;
  connect["connected"] = c.ready.load();
  connect["failed"] = c.connect_failed.load();
  connect["refused"] = c.refused.load();
  connect["subscribe_refused"] = c.sub_refused.load();
  connect["retries"] = c.connect_retries.load();
  connect["elapsed_s"] = round3(seconds(elapsed));
  connect["connect_rate_per_s"] = round3(static_cast<double>(c.ready.load()) / seconds(elapsed));
  connect["connack"] = latencyJson(fleet_.collect(&Shard::connack, true));
  connect["ready"] = latencyJson(fleet_.collect(&Shard::ready, true));
  if (before && after) {
    // Let the server finish what the storm queued (logging, store writes) before reading RSS.
    std::this_thread::sleep_for(std::chrono::seconds(options_.devices > 1000 ? 3 : 0));
    const auto settled = sample();
    json::object server;
    server["rss_before_kb"] = before->rss_kb;
    server["rss_after_kb"] = settled ? settled->rss_kb : after->rss_kb;
    const auto delta = (settled ? settled->rss_kb : after->rss_kb) - before->rss_kb;
    server["rss_per_connection_bytes"] =
        total == 0 ? 0.0 : round3(static_cast<double>(delta) * 1024.0 / static_cast<double>(total));
    server["cpu_percent_during_connect"] = round3(cpuPercent(*before, *after));
    connect["server"] = std::move(server);
  }
  out["connect"] = std::move(connect);
  logLine("connected " + std::to_string(c.ready.load()) + "/" + std::to_string(total) + " in " +
          std::to_string(seconds(elapsed)) + " s");
  if (!all || c.ready.load() < total) {
    return Status(ErrorCode::ServiceUnavailable, "only " + std::to_string(c.ready.load()) + " of " +
                                                     std::to_string(total) + " connected");
  }
  return Status::ok();
}

void Driver::runWorkload(Workload& w, std::size_t callers) {
  for (std::size_t r = 0; r < callers; ++r) {
    auto& shard = *fleet_.shards[r % fleet_.shards.size()];
    const std::size_t local = r / fleet_.shards.size();
    w.active.fetch_add(1);
    asio::post(shard.ioc, [&shard, local, &w] {
      shard.startCaller(local, w);
      w.active.fetch_sub(1);
    });
  }
  while (w.active.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

json::object Driver::runCalls(CallKind kind, std::size_t callers, std::uint64_t total,
                              std::chrono::milliseconds duration, bool record) {
  Workload w;
  w.kind = kind;
  if (kind == CallKind::TwinPatch && options_.registered > 0) {
    w.device_count = options_.registered;  // devices 0..registered-1, connected or not
  } else {
    const AddressedDevices addressed = addressedDevices(options_);
    w.device_first = addressed.first;
    w.device_stride = addressed.stride;
    w.device_count = addressed.count;
  }
  w.total = total;
  w.record_latency = record;
  const auto started = SteadyClock::now();
  if (duration.count() > 0) w.deadline = started + duration;
  runWorkload(w, callers);
  const auto elapsed = SteadyClock::now() - started;
  json::object o;
  o["callers"] = callers;
  o["calls"] = w.ok.load() + w.failed.load();
  o["ok"] = w.ok.load();
  o["failed"] = w.failed.load();
  o["device_errors"] = w.device_errors.load();
  o["elapsed_s"] = round3(seconds(elapsed));
  o["per_s"] = round3(static_cast<double>(w.ok.load()) / seconds(elapsed));
  if (record) o["latency"] = latencyJson(fleet_.collect(&Shard::calls, true));
  return o;
}

Status Driver::scenarioMethods(json::object& out) {
  const std::uint64_t warmup = std::min<std::uint64_t>(200, options_.latency_calls);
  (void)runCalls(CallKind::Method, 1, warmup, std::chrono::milliseconds(0), false);
  (void)fleet_.collect(&Shard::calls, true);
  auto single = runCalls(CallKind::Method, 1, options_.latency_calls, std::chrono::milliseconds(0));
  const auto before = sample();
  auto saturated = runCalls(CallKind::Method, options_.concurrency, UINT64_MAX, options_.duration);
  const auto after = sample();
  if (before && after) saturated["server_cpu_percent"] = round3(cpuPercent(*before, *after));
  const bool all_ok =
      single.at("failed").as_uint64() == 0 && saturated.at("failed").as_uint64() == 0;
  out["single"] = std::move(single);
  out["saturated"] = std::move(saturated);
  if (!all_ok) return Status(ErrorCode::ServiceUnavailable, "some method calls failed");
  return Status::ok();
}

Status Driver::scenarioTwin(json::object& out) {
  auto& c = fleet_.counters;
  const auto desired_before = c.desired_received.load();
  const auto before = sample();
  auto updates = runCalls(CallKind::TwinPatch, options_.concurrency, UINT64_MAX, options_.duration);
  const auto after = sample();
  const auto expected = updates.at("ok").as_uint64();
  // Every accepted PATCH must reach its (connected) device.
  waitUntil([&] { return c.desired_received.load() - desired_before >= expected; },
            std::chrono::seconds(10));
  updates["notified"] = c.desired_received.load() - desired_before;
  updates["notify_latency"] = latencyJson(fleet_.collect(&Shard::notify, true));
  if (before && after) updates["server_cpu_percent"] = round3(cpuPercent(*before, *after));
  const bool all_ok = updates.at("failed").as_uint64() == 0 &&
                      updates.at("notified").as_uint64() >= expected && expected > 0;
  out["updates"] = std::move(updates);
  if (!all_ok)
    return Status(ErrorCode::ServiceUnavailable, "some twin updates failed or were not notified");
  return Status::ok();
}

Status Driver::scenarioIdle(json::object& out) {
  auto& c = fleet_.counters;
  const auto drops_before = c.drops.load();
  const auto pings_before = c.pings_sent.load();
  const auto pongs_before = c.pongs.load();
  const auto first = sample();
  std::int64_t rss_max = first ? first->rss_kb : 0;
  std::int64_t rss_min = rss_max;
  json::array timeline;
  const auto started = SteadyClock::now();
  const auto deadline = started + options_.duration;
  auto next_sample = started;
  while (SteadyClock::now() < deadline && !stop_.load()) {
    if (SteadyClock::now() >= next_sample) {
      if (auto s = sample()) {
        rss_max = std::max(rss_max, s->rss_kb);
        rss_min = std::min(rss_min, s->rss_kb);
        json::object point;
        point["t_s"] = round3(seconds(SteadyClock::now() - started));
        point["rss_kb"] = s->rss_kb;
        point["connected"] = c.ready.load();
        timeline.push_back(std::move(point));
      }
      next_sample += std::chrono::seconds(options_.duration > std::chrono::seconds(60) ? 30 : 1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto last = sample();
  json::object idle;
  idle["duration_s"] = round3(seconds(SteadyClock::now() - started));
  idle["connected_at_end"] = c.ready.load();
  idle["drops"] = c.drops.load() - drops_before;
  idle["pings_sent"] = c.pings_sent.load() - pings_before;
  idle["pongs"] = c.pongs.load() - pongs_before;
  if (first && last) {
    json::object server;
    server["rss_start_kb"] = first->rss_kb;
    server["rss_end_kb"] = last->rss_kb;
    server["rss_min_kb"] = rss_min;
    server["rss_max_kb"] = rss_max;
    server["rss_growth_kb"] = last->rss_kb - first->rss_kb;
    server["cpu_percent"] = round3(cpuPercent(*first, *last));
    server["timeline"] = std::move(timeline);
    idle["server"] = std::move(server);
  }
  out["idle"] = std::move(idle);
  if (c.drops.load() != drops_before)
    return Status(ErrorCode::ServiceUnavailable, "connections dropped while idle");
  return Status::ok();
}

Result<json::object> Driver::runJob(const std::string& body, std::size_t expected_devices,
                                    std::int64_t succeeded_target) {
  static int job_number = 0;
  const std::string job_id =
      "fleet-" + std::to_string(::getpid()) + "-" + std::to_string(++job_number);
  auto& c = fleet_.counters;
  c.first_method_ns = 0;
  c.last_method_ns = 0;
  const auto methods_before = c.methods_received.load();
  service::HttpRequest put;
  put.method = "PUT";
  put.path = "/jobs/v2/" + job_id;
  std::string full = body;
  full.insert(1, "\"jobId\":\"" + job_id + "\",");
  put.body = full;
  const auto started = SteadyClock::now();
  auto created = service_->send(put);
  if (!created) return created.status();
  json::object out;
  out["job_id"] = job_id;
  if (created->status == 404 || created->status == 405 || created->status == 501) {
    out["available"] = false;
    out["http_status"] = created->status;
    return out;
  }
  if (created->status >= 300) {
    return Status(ErrorCode::ServiceUnavailable,
                  "job create: HTTP " + std::to_string(created->status) + " " + created->body);
  }
  out["available"] = true;
  out["create_ms"] = round3(seconds(SteadyClock::now() - started) * 1000.0);
  service::HttpRequest get;
  get.path = "/jobs/v2/" + job_id;
  json::value last;
  std::string status;
  LatencyHistogram poll_latency;
  const auto first_sample = sample();
  std::int64_t rss_max = first_sample ? first_sample->rss_kb : 0;
  const auto desired_before = c.desired_received.load();
  const auto reported_before = c.reported_sent.load();
  const auto responses_before = c.twin_responses.load();
  json::array timeline;
  auto next_point = started;
  std::optional<double> none_pending_s;
  std::optional<double> target_s;
  auto statistic = [](const json::value& job, std::string_view name) -> std::int64_t {
    const auto* stats =
        job.is_object() ? findObject(job.as_object(), "deviceJobStatistics") : nullptr;
    const auto* v = stats ? findMember(*stats, name) : nullptr;
    return v && v->is_int64()
               ? v->as_int64()
               : (v && v->is_uint64() ? static_cast<std::int64_t>(v->as_uint64()) : -1);
  };
  auto point = [&](double t) {
    json::object p;
    p["t_s"] = round3(t);
    for (const char* name : {"succeededCount", "failedCount", "runningCount", "pendingCount"})
      p[name] = statistic(last, name);
    p["device_requests"] = c.methods_received.load() - methods_before;
    p["desired_received"] = c.desired_received.load() - desired_before;
    p["reported_sent"] = c.reported_sent.load() - reported_before;
    p["reported_answered"] = c.twin_responses.load() - responses_before;
    if (auto s = sample()) {
      p["server_rss_kb"] = s->rss_kb;
      rss_max = std::max(rss_max, s->rss_kb);
    }
    timeline.push_back(std::move(p));
  };
  while (true) {
    const auto poll_start = SteadyClock::now();
    auto polled = service_->sendJson(get);
    poll_latency.record(microsSince(poll_start));
    if (!polled) return polled.status();
    last = *polled;
    if (const auto* s = last.is_object() ? findString(last.as_object(), "status") : nullptr) {
      status = std::string(*s);
    }
    const double t = seconds(SteadyClock::now() - started);
    if (!none_pending_s && statistic(last, "deviceCount") > 0 &&
        statistic(last, "pendingCount") == 0)
      none_pending_s = t;
    if (!target_s && succeeded_target >= 0 && statistic(last, "succeededCount") >= succeeded_target)
      target_s = t;
    if (status == "completed" || status == "failed" || status == "cancelled") break;
    if (SteadyClock::now() >= next_point) {
      point(t);
      next_point += options_.sample_every;
    }
    if (SteadyClock::now() - started > options_.timeout) {
      return Status(ErrorCode::ServiceUnavailable,
                    "job " + job_id + " still '" + status + "' at the timeout");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double elapsed = seconds(SteadyClock::now() - started);
  point(elapsed);
  out["status"] = status;
  out["duration_s"] = round3(elapsed);
  out["device_ops_per_s"] = round3(static_cast<double>(expected_devices) / elapsed);
  if (none_pending_s) {
    // Every device started (its twin written, or its call made); with a window of
    // in-flight operations, the last of them may still be running.
    out["none_pending_s"] = round3(*none_pending_s);
    out["started_per_s"] = round3(static_cast<double>(expected_devices) / *none_pending_s);
  }
  if (succeeded_target >= 0) {
    out["succeeded_target"] = succeeded_target;
    if (target_s) {
      out["succeeded_target_s"] = round3(*target_s);
      out["succeeded_target_per_s"] = round3(static_cast<double>(succeeded_target) / *target_s);
    }
  }
  out["timeline"] = std::move(timeline);
  if (first_sample) {
    json::object server;
    const auto end_sample = sample();
    server["rss_start_kb"] = first_sample->rss_kb;
    server["rss_max_kb"] = rss_max;
    if (end_sample) {
      server["rss_end_kb"] = end_sample->rss_kb;
      server["cpu_percent"] = round3(cpuPercent(*first_sample, *end_sample));
    }
    out["server"] = std::move(server);
  }
  out["poll_latency"] = latencyJson(poll_latency);
  if (const auto* stats = findObject(last.as_object(), "deviceJobStatistics"))
    out["statistics"] = *stats;
  const auto received = c.methods_received.load() - methods_before;
  out["device_requests_received"] = received;
  if (received > 1) {
    const double span =
        static_cast<double>(c.last_method_ns.load() - c.first_method_ns.load()) / 1e9;
    out["device_request_span_s"] = round3(span);
    if (span > 0) out["device_request_rate_per_s"] = round3(static_cast<double>(received) / span);
  }
  return out;
}

// The service side addresses devices 0..n-1 (n = --fleet-devices, or --devices): with a fleet
// spread over several processes (cluster nodes), this one connects only some of them, and
// the device counters below count only those.
Status Driver::scenarioJobs(json::object& out) {
  const std::size_t n = addressedDevices(options_).count;
  auto method_direct =
      runCalls(CallKind::Method, options_.concurrency, n, std::chrono::milliseconds(0));
  method_direct["device_ops_per_s"] = method_direct.at("per_s");
  out["method_direct"] = method_direct;
  const std::string method_job_body =
      R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"lockDoor","payload":)" +
      options_.method_payload +
      R"(,"responseTimeoutInSeconds":30},"startTime":null,"queryCondition":"*"})";
  auto method_job = runJob(method_job_body, n);
  if (!method_job) return method_job.status();
  const bool available = method_job->at("available").as_bool();
  out["method_job"] = std::move(*method_job);
  out["jobs_available"] = available;
  const std::size_t registered = std::max(options_.registered, n);
  if (registered > n) {
    auto provisioned = provisionDevices(
        options_.service_connection_string,
        "http://" + options_.server_address + ":" + std::to_string(options_.http_port), "",
        options_.device_prefix, n, registered - n, options_.device_key, 4);
    if (!provisioned) return provisioned.status();
    out["provision_extra"] = std::move(*provisioned);
  }
  auto& c = fleet_.counters;
  auto twin_direct =
      runCalls(CallKind::TwinPatch, options_.concurrency, registered, std::chrono::milliseconds(0));
  twin_direct["device_ops_per_s"] = twin_direct.at("per_s");
  out["twin_direct"] = std::move(twin_direct);
  if (available) {
    const auto desired_before = c.desired_received.load();
    auto twin_job = runJob(
        R"({"type":"scheduleUpdateTwin","updateTwin":{"etag":"*","properties":{"desired":{"jobRound":1}}},"startTime":null,"queryCondition":"*"})",
        registered);
    if (!twin_job) return twin_job.status();
    waitUntil([&] { return c.desired_received.load() - desired_before >= options_.devices; },
              std::chrono::seconds(10));
    (*twin_job)["connected_devices_notified"] = c.desired_received.load() - desired_before;
    out["twin_job"] = std::move(*twin_job);
  }
  out["registered"] = registered;
  return Status::ok();
}

void Driver::settleReports(std::chrono::milliseconds timeout) {
  auto& c = fleet_.counters;
  waitUntil([&] { return c.twin_responses.load() >= c.reported_sent.load(); }, timeout);
}

Result<json::object> Driver::tallyRows(const std::string& job_id) {
  std::map<std::string, std::uint64_t> statuses;
  std::map<std::string, std::uint64_t> errors;
  std::map<std::string, std::uint64_t> attempts;
  std::unordered_set<std::string> ids;
  std::uint64_t rows = 0;
  std::uint64_t pages = 0;
  std::string continuation;
  const auto started = SteadyClock::now();
  do {
    service::HttpRequest query;
    query.method = "POST";
    query.path = "/devices/query";
    query.body = toJson(json::object{
        {"query", "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '" + job_id + "'"}});
    query.headers.emplace_back("x-ms-max-item-count", "1000");
    if (!continuation.empty()) query.headers.emplace_back("x-ms-continuation", continuation);
    auto response = service_->send(query);
    if (!response) return response.status();
    if (response->status != 200) {
      return Status(ErrorCode::ServiceUnavailable, "devices.jobs query: HTTP " +
                                                       std::to_string(response->status) + " " +
                                                       response->body.substr(0, 200));
    }
    auto page = parseJson(response->body);
    if (!page || !page->is_array())
      return Status(ErrorCode::ServiceUnavailable, "devices.jobs query: not a JSON array");
    ++pages;
    for (const auto& item : page->as_array()) {
      if (!item.is_object()) continue;
      const auto& row = item.as_object();
      ++rows;
      if (const auto* id = findString(row, "deviceId")) ids.emplace(*id);
      const auto* status = findString(row, "status");
      ++statuses[status ? std::string(*status) : "?"];
      if (const auto* error = findObject(row, "error")) {
        const auto* code = findString(*error, "code");
        ++errors[code ? std::string(*code) : "?"];
      }
      const auto* tried = findMember(row, "attempts");
      ++attempts[tried && tried->is_number() ? std::to_string(tried->to_number<std::int64_t>())
                                             : "none"];
    }
    continuation = response->header("x-ms-continuation").value_or("");
  } while (!continuation.empty());
  auto toObject = [](const std::map<std::string, std::uint64_t>& m) {
    json::object o;
    for (const auto& [k, v] : m) o[k] = v;
    return o;
  };
  json::object out;
  out["rows"] = rows;
  out["distinct_devices"] = ids.size();
  out["by_status"] = toObject(statuses);
  out["errors"] = toObject(errors);
  out["attempts"] = toObject(attempts);
  out["pages"] = pages;
  out["read_s"] = round3(seconds(SteadyClock::now() - started));
  return out;
}

namespace {
std::uint64_t countIn(const json::object& o, std::string_view group, std::string_view key) {
  const auto* g = findObject(o, group);
  const auto* v = g ? findMember(*g, key) : nullptr;
  return v && v->is_number() ? v->to_number<std::uint64_t>() : 0;
}
std::int64_t statisticOf(const json::object& job, std::string_view name) {
  const auto* stats = findObject(job, "statistics");
  const auto* v = stats ? findMember(*stats, name) : nullptr;
  return v && v->is_number() ? v->to_number<std::int64_t>() : -1;
}
// The rows say what the statistics say: one row per device, counted alike by status.
bool rowsMatchStatistics(const json::object& job, const json::object& rows) {
  const auto count = static_cast<std::uint64_t>(statisticOf(job, "deviceCount"));
  return rows.at("rows").as_uint64() == count && rows.at("distinct_devices").as_uint64() == count &&
         countIn(rows, "by_status", "completed") ==
             static_cast<std::uint64_t>(statisticOf(job, "succeededCount")) &&
         countIn(rows, "by_status", "failed") ==
             static_cast<std::uint64_t>(statisticOf(job, "failedCount")) &&
         statisticOf(job, "pendingCount") == 0 && statisticOf(job, "runningCount") == 0 &&
         statisticOf(job, "canceledCount") <= 0;
}
// The members of a JSON object's text, without its braces, to append to another object.
std::string membersOf(const json::object& o) {
  const std::string text = toJson(o);
  return text.substr(1, text.size() - 2);
}
}  // namespace

// B8: a twin job over every registered device (--registered; the connected ones are
// notified and, with --report-desired, report the values back), then the same job with
// --job-extensions (e.g. convergence). Each sets a new desired value, so each needs new
// reports. A first job (the warm-up) writes desired properties into every twin, which grows
// the hub's twin index and store once, so that the two compared jobs find the same state.
Status Driver::scenarioTwinJobs(json::object& out) {
  auto& c = fleet_.counters;
  const std::size_t registered = std::max(options_.registered, options_.devices);
  const json::object extensions = parseJson(options_.job_extensions)->as_object();
  const bool converges = extensions.contains("convergence");
  // Under convergence only devices that are connected and report back can succeed.
  const std::int64_t converging =
      options_.report_desired ? static_cast<std::int64_t>(options_.devices) : 0;
  bool ok = true;
  json::object checks;
  for (int round = 0; round <= 2; ++round) {
    const bool extended = round == 2;
    const std::string name = round == 0 ? "warmup" : extended ? "extended" : "plain";
    settleReports(std::chrono::seconds(60));
    const auto desired_before = c.desired_received.load();
    const auto reported_before = c.reported_sent.load();
    const auto rejected_before = c.reported_rejected.load();
    std::string body =
        R"({"type":"scheduleUpdateTwin","updateTwin":{"etag":"*","properties":{"desired":{"jobRound":)" +
        std::to_string(round) + R"(,"config":{"intervalSeconds":)" + std::to_string(60 * round) +
        R"(}}}},"startTime":null,"queryCondition":"*")";
    if (extended) body += "," + membersOf(extensions);
    body += "}";
    const std::int64_t target =
        extended && converges ? converging : static_cast<std::int64_t>(registered);
    auto job = runJob(body, registered, target);
    if (!job) return job.status();
    waitUntil([&] { return c.desired_received.load() - desired_before >= options_.devices; },
              std::chrono::seconds(10));
    settleReports(std::chrono::seconds(30));
    (*job)["connected_devices_notified"] = c.desired_received.load() - desired_before;
    (*job)["reports_sent"] = c.reported_sent.load() - reported_before;
    (*job)["reports_rejected"] = c.reported_rejected.load() - rejected_before;
    auto rows = tallyRows(job->at("job_id").as_string().c_str());
    if (!rows) return rows.status();
    const bool match = rowsMatchStatistics(*job, *rows);
    const auto succeeded = statisticOf(*job, "succeededCount");
    const auto failed = statisticOf(*job, "failedCount");
    bool expected = succeeded == target &&
                    failed == static_cast<std::int64_t>(registered) - target &&
                    job->at("status").as_string() == "completed";
    if (extended && converges) {
      expected = expected &&
                 countIn(*rows, "errors", "NotConverged") == static_cast<std::uint64_t>(failed);
    }
    (*job)["rows"] = std::move(*rows);
    (*job)["expected_succeeded"] = target;
    checks[name + "_as_expected"] = expected ? 1 : 0;
    checks[name + "_rows_match_statistics"] = match ? 1 : 0;
    ok = ok && expected && match;
    out[name] = std::move(*job);
  }
  out["registered"] = registered;
  out["extensions"] = extensions;
  out["checks"] = std::move(checks);
  if (!ok)
    return Status(ErrorCode::ServiceUnavailable, "a twin job did not end as expected (see checks)");
  return Status::ok();
}

// B9: a method job over the connected devices (queryCondition "*": register no others), then
// the same job with --job-extensions (rollout, retry, ...). --flaky devices fail their first
// calls in each job; what every job should end with follows from the groups and the retry
// policy, and is checked against the statistics, the rows and the calls the devices received.
Status Driver::scenarioMethodJobs(json::object& out) {
  auto& c = fleet_.counters;
  const std::size_t n = addressedDevices(options_).count;
  const json::object extensions = parseJson(options_.job_extensions)->as_object();
  std::uint32_t max_attempts = 1;
  std::vector<std::string> retry_on = {"DeviceNotOnline", "GatewayTimeout"};
  bool has_retry = false;
  if (const auto* retry = findObject(extensions, "retry")) {
    has_retry = true;
    if (const auto* m = findMember(*retry, "maxAttempts"); m && m->is_number())
      max_attempts = m->to_number<std::uint32_t>();
    if (const auto* on = findMember(*retry, "retryOn"); on && on->is_array()) {
      retry_on.clear();
      for (const auto& code : on->as_array())
        if (code.is_string()) retry_on.emplace_back(code.as_string());
    }
  }
  const auto* fail_flag = findMember(extensions, "failOnDeviceStatus");
  const bool fail_on_status = fail_flag && fail_flag->is_bool() && fail_flag->as_bool();
  json::array groups;
  std::vector<std::size_t> group_devices(options_.flaky.size(), 0);
  for (std::size_t d = 0; d < options_.devices; ++d) {
    const int g = flakyGroupOf(options_.flaky, deviceIndex(options_, d));
    if (g >= 0) ++group_devices[static_cast<std::size_t>(g)];
  }
  for (std::size_t g = 0; g < options_.flaky.size(); ++g) {
    const auto& group = options_.flaky[g];
    json::object o;
    o["fraction"] = group.fraction;
    o["fails_calls"] =
        group.calls == kAlwaysFails ? json::value("always") : json::value(group.calls);
    o["mode"] = group.mode == FlakyMode::Silent ? "silent" : "error";
    o["devices"] = group_devices[g];
    groups.push_back(std::move(o));
  }
  out["flaky"] = std::move(groups);
  bool ok = true;
  json::object checks;
  for (int round = 1; round <= 2; ++round) {
    const bool extended = round == 2;
    // What each device should end with in this job.
    const std::uint32_t attempts_allowed = extended ? max_attempts : 1;
    std::int64_t expect_succeeded = 0;
    std::uint64_t expect_calls = 0;
    std::map<std::string, std::uint64_t> expect_attempts;
    for (std::size_t d = 0; d < options_.devices; ++d) {
      const int g = flakyGroupOf(options_.flaky, deviceIndex(options_, d));
      const FlakyGroup* group = g >= 0 ? &options_.flaky[static_cast<std::size_t>(g)] : nullptr;
      const bool silent = group && group->mode == FlakyMode::Silent;
      const bool fails = silent || (extended && fail_on_status);
      const std::string code = silent ? "GatewayTimeout" : "DeviceMethodFailed";
      const bool retried =
          extended && std::find(retry_on.begin(), retry_on.end(), code) != retry_on.end();
      const ExpectedOutcome e = expectedOutcome(group, attempts_allowed, retried, fails);
      expect_succeeded += e.succeeded ? 1 : 0;
      expect_calls += e.attempts;
      ++expect_attempts[std::to_string(e.attempts)];
    }
    fleet_.method_epoch.fetch_add(1);  // flaky devices fail their first calls again
    std::string body =
        R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"lockDoor","payload":)" +
        options_.method_payload + R"(,"responseTimeoutInSeconds":)" +
        std::to_string(options_.response_timeout.count()) +
        R"(},"startTime":null,"queryCondition":"*")";
    if (extended) body += "," + membersOf(extensions);
    body += "}";
    const auto ignored_before = c.methods_ignored.load();
    auto job = runJob(body, n, expect_succeeded);
    if (!job) return job.status();
    (*job)["device_requests_ignored"] = c.methods_ignored.load() - ignored_before;
    auto rows = tallyRows(job->at("job_id").as_string().c_str());
    if (!rows) return rows.status();
    const bool match = rowsMatchStatistics(*job, *rows);
    bool expected =
        statisticOf(*job, "succeededCount") == expect_succeeded &&
        statisticOf(*job, "failedCount") == static_cast<std::int64_t>(n) - expect_succeeded &&
        job->at("device_requests_received").as_uint64() == expect_calls;
    json::object expect;
    expect["succeeded"] = expect_succeeded;
    expect["failed"] = static_cast<std::int64_t>(n) - expect_succeeded;
    expect["device_requests"] = expect_calls;
    if (extended && has_retry) {
      json::object a;
      for (const auto& [k, v] : expect_attempts) a[k] = v;
      expected = expected && rows->at("attempts").as_object() == a;
      expect["attempts"] = std::move(a);
    }
    (*job)["rows"] = std::move(*rows);
    (*job)["expected"] = std::move(expect);
    checks[extended ? "extended_as_expected" : "plain_as_expected"] = expected ? 1 : 0;
    checks[extended ? "extended_rows_match_statistics" : "plain_rows_match_statistics"] =
        match ? 1 : 0;
    ok = ok && expected && match;
    out[extended ? "extended" : "plain"] = std::move(*job);
  }
  out["extensions"] = extensions;
  out["checks"] = std::move(checks);
  if (!ok)
    return Status(ErrorCode::ServiceUnavailable,
                  "a method job did not end as expected (see checks)");
  return Status::ok();
}

// C2D: the devices wait (connected, subscribed at QoS 1) for --messages messages that another
// process sends (c2d_sender, through the hub or the broker), PUBACK each and time it from the
// send time in its payload. Ends when every message arrived once, or --duration passed.
Status Driver::scenarioC2d(json::object& out) {
  auto& c = fleet_.counters;
  const std::uint64_t expected = options_.messages;
  logLine("waiting for " + std::to_string(expected) + " C2D messages");
  const bool all =
      waitUntil([&] { return c.c2d_unique.load() >= expected; },
                std::chrono::duration_cast<std::chrono::milliseconds>(options_.duration), &stop_);
  // Whatever the server would deliver twice comes right behind: look a moment longer.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::uint64_t unique = c.c2d_unique.load();
  const std::int64_t first_sent = c.c2d_first_sent_ns.load();
  const std::int64_t last = c.c2d_last_received_ns.load();
  json::object o;
  o["expected"] = expected;
  o["received"] = c.c2d_received.load();
  o["unique"] = unique;
  o["missing"] = expected - std::min(expected, unique);
  o["duplicates"] = c.c2d_duplicates.load();
  o["misrouted"] = c.c2d_misrouted.load();
  o["malformed"] = c.c2d_malformed.load();
  o["all_once"] = all && c.c2d_duplicates.load() == 0 && c.c2d_misrouted.load() == 0 &&
                          c.c2d_malformed.load() == 0 && c.c2d_received.load() == expected
                      ? 1
                      : 0;
  // From the first message's send to the last arrival: the rate the devices saw.
  const double span =
      unique > 0 && last > first_sent ? static_cast<double>(last - first_sent) / 1e9 : 0;
  o["first_sent_to_last_received_s"] = round3(span);
  o["delivered_per_s"] = span > 0 ? round3(static_cast<double>(unique) / span) : 0.0;
  o["latency"] = latencyJson(fleet_.collect(&Shard::c2d, true));
  const bool once = o.at("all_once").as_int64() == 1;
  out["c2d"] = std::move(o);
  if (!once)
    return Status(ErrorCode::ServiceUnavailable,
                  all ? "C2D messages arrived more than once, at the wrong device or malformed"
                      : "not every C2D message arrived before --duration passed");
  return Status::ok();
}

// Telemetry: every device publishes QoS 1 messages (one in flight) at options_.rate in all for
// --duration, then the run waits for the last PUBACKs. Each message carries its id and publish
// time (d2cPayload), so a reader of the server's output can time it too (bench/telemetry).
Status Driver::scenarioTelemetry(json::object& out) {
  auto& c = fleet_.counters;
  const std::size_t n = options_.devices;
  if (options_.rate > 0) {
    fleet_.d2c_interval = std::chrono::duration_cast<SteadyClock::duration>(
        std::chrono::duration<double>(static_cast<double>(n) / options_.rate));
  }
  const auto drops_before = c.drops.load();
  const auto before = sample();
  const auto started = SteadyClock::now();
  fleet_.d2c_running.store(true);
  logLine("publishing telemetry for " + std::to_string(seconds(options_.duration)) + " s" +
          (options_.rate > 0 ? " at " + std::to_string(options_.rate) + " messages/s in all"
                             : std::string(", each device as fast as its PUBACKs come")));
  for (auto& shard : fleet_.shards) {
    asio::post(shard->ioc, [s = shard.get(), started, interval = fleet_.d2c_interval] {
      // Spread the first messages over one interval so that the load is even from the start.
      for (auto& d : s->devices) {
        d->startTelemetry(started + std::chrono::duration_cast<SteadyClock::duration>(
                                        interval * unitHash(d->index())));
      }
    });
  }
  waitUntil([] { return false; }, options_.duration, &stop_);
  fleet_.d2c_running.store(false);
  const auto sending_ended = SteadyClock::now();
  const auto at_end = sample();
  // The last messages' PUBACKs.
  const bool settled =
      waitUntil([&] { return c.d2c_acked.load() + c.d2c_lost.load() >= c.d2c_sent.load(); },
                std::chrono::duration_cast<std::chrono::milliseconds>(options_.timeout));
  const std::uint64_t sent = c.d2c_sent.load();
  const std::uint64_t acked = c.d2c_acked.load();
  const std::int64_t first = c.d2c_first_sent_ns.load();
  const std::int64_t last = c.d2c_last_acked_ns.load();
  json::object o;
  o["offered_per_s"] = options_.rate;
  o["device_interval_ms"] =
      round3(std::chrono::duration<double, std::milli>(fleet_.d2c_interval).count());
  o["sending_s"] = round3(seconds(sending_ended - started));
  o["sent"] = sent;
  o["acked"] = acked;
  o["unacked"] = sent - std::min(sent, acked);
  o["lost_with_connection"] = c.d2c_lost.load();
  o["drops"] = c.drops.load() - drops_before;
  const double span = acked > 0 && last > first ? static_cast<double>(last - first) / 1e9 : 0;
  o["first_sent_to_last_ack_s"] = round3(span);
  o["acked_per_s"] = span > 0 ? round3(static_cast<double>(acked) / span) : 0.0;
  o["publish_to_puback"] = latencyJson(fleet_.collect(&Shard::d2c, true));
  if (before && at_end) o["server_cpu_percent"] = round3(cpuPercent(*before, *at_end));
  if (!options_.ack_log.empty()) {
    std::vector<D2cRecord> records;
    records.reserve(acked);
    fleet_.runOnAll([&](Shard& s) {
      records.insert(records.end(), s.d2c_acks.begin(), s.d2c_acks.end());
      s.d2c_acks.clear();
      s.d2c_acks.shrink_to_fit();
    });
    if (auto written = writeD2cRecords(options_.ack_log, records); !written) return written;
    o["ack_log"] = options_.ack_log;
    o["ack_log_records"] = records.size();
  }
  const bool ok = settled && acked == sent && acked > 0;
  out["telemetry"] = std::move(o);
  if (!ok) {
    return Status(ErrorCode::ServiceUnavailable, std::to_string(sent - std::min(sent, acked)) +
                                                     " of " + std::to_string(sent) +
                                                     " telemetry messages were not acknowledged");
  }
  return Status::ok();
}

// B5's peer against the broker: exactly one request/reply per addressed device, to devices
// 0..n-1 in that order, --concurrency in flight (over the --requesters connections), each
// through the broker to the device and its reply back (two hops each way). Timed from the
// first request to the last reply. A reply that does not come within --response-timeout
// fails its request; no request starts after --timeout, and those not sent fail too.
Status Driver::scenarioSweep(json::object& out) {
  auto& c = fleet_.counters;
  const AddressedDevices addressed = addressedDevices(options_);
  const std::size_t n = addressed.count;
  Workload w;
  w.kind = CallKind::Method;
  w.device_first = addressed.first;
  w.device_stride = addressed.stride;
  w.device_count = n;
  w.total = n;
  const auto received_before = c.methods_received.load();
  const auto timeouts_before = c.request_timeouts.load();
  (void)fleet_.collect(&Shard::calls, true);
  const auto before = sample();
  const auto started = SteadyClock::now();
  w.deadline = started + options_.timeout;
  logLine("sweep: one request to each of " + std::to_string(n) + " devices, " +
          std::to_string(options_.concurrency) + " in flight over " +
          std::to_string(fleet_.requester_count) + " requester connection(s)");
  runWorkload(w, options_.concurrency);
  const auto wall = SteadyClock::now() - started;
  const auto after = sample();
  // Every request sent ends: answered (ok), or failed (no reply in time, connection lost).
  const std::uint64_t succeeded = w.ok.load();
  const std::uint64_t sent = succeeded + w.failed.load();
  const std::uint64_t failed = n - succeeded;
  const std::int64_t first = w.first_sent_ns.load();
  const std::int64_t last = w.last_done_ns.load();
  const double span = sent > 0 && last > first ? static_cast<double>(last - first) / 1e9 : 0;
  json::object o;
  o["devices"] = n;
  o["concurrency"] = options_.concurrency;
  o["requesters"] = fleet_.requester_count;
  o["requests"] = sent;
  o["succeeded"] = succeeded;
  o["failed"] = failed;
  o["timed_out"] = c.request_timeouts.load() - timeouts_before;
  o["not_sent"] = n - sent;
  o["device_errors"] = w.device_errors.load();
  o["device_requests_received"] = c.methods_received.load() - received_before;
  o["elapsed_s"] = round3(span);
  o["ops_per_s"] = span > 0 ? round3(static_cast<double>(succeeded) / span) : 0.0;
  o["wall_s"] = round3(seconds(wall));
  o["latency"] = latencyJson(fleet_.collect(&Shard::calls, true));
  if (before && after) {
    json::object server;
    server["rss_start_kb"] = before->rss_kb;
    server["rss_end_kb"] = after->rss_kb;
    server["cpu_percent"] = round3(cpuPercent(*before, *after));
    o["server"] = std::move(server);
  }
  out["sweep"] = std::move(o);
  if (failed > 0 || succeeded != n) {
    return Status(ErrorCode::ServiceUnavailable, std::to_string(failed) + " of " +
                                                     std::to_string(n) +
                                                     " sweep requests failed or went unanswered");
  }
  return Status::ok();
}

Result<json::object> Driver::run() {
  if (auto s = setUp(); !s) return s;
  json::object out;
  out["target"] = toString(options_.target);
  out["scenario"] = toString(options_.scenario);
  out["devices"] = options_.devices;
  if (options_.first_device != 0 || options_.device_stride != 1) {
    out["first_device"] = options_.first_device;
    out["device_stride"] = options_.device_stride;
  }
  if (options_.fleet_devices != 0) out["fleet_devices"] = options_.fleet_devices;
  out["threads"] = options_.threads;
  out["tls"] = options_.tls;
  if (options_.devices > 0 || fleet_.requester_count > 0) {
    if (auto s = connectAll(out); !s) {
      out["error"] = s.message();
      return out;
    }
  }
  Status status;
  switch (options_.scenario) {
    case Scenario::Connect:
      break;
    case Scenario::Idle:
      status = scenarioIdle(out);
      break;
    case Scenario::Methods:
      status = scenarioMethods(out);
      break;
    case Scenario::Twin:
      status = scenarioTwin(out);
      break;
    case Scenario::Jobs:
      status = scenarioJobs(out);
      break;
    case Scenario::TwinJobs:
      status = scenarioTwinJobs(out);
      break;
    case Scenario::MethodJobs:
      status = scenarioMethodJobs(out);
      break;
    case Scenario::C2d:
      status = scenarioC2d(out);
      break;
    case Scenario::Telemetry:
      status = scenarioTelemetry(out);
      break;
    case Scenario::Sweep:
      status = scenarioSweep(out);
      break;
    case Scenario::Serve: {
      const auto deadline = SteadyClock::now() + options_.duration;
      while (!stop_.load() && (options_.duration.count() == 0 || SteadyClock::now() < deadline)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      break;
    }
  }
  auto& c = fleet_.counters;
  json::object devices;
  devices["methods_received"] = c.methods_received.load();
  devices["methods_answered"] = c.methods_answered.load();
  devices["desired_received"] = c.desired_received.load();
  devices["twin_responses"] = c.twin_responses.load();
  devices["reported_sent"] = c.reported_sent.load();
  devices["reported_rejected"] = c.reported_rejected.load();
  devices["methods_ignored"] = c.methods_ignored.load();
  devices["drops"] = c.drops.load();
  devices["storm_drops"] = c.storm_drops.load();
  devices["connected_at_end"] = c.ready.load();
  out["device_counters"] = std::move(devices);
  if (!status) out["error"] = status.message();
  return out;
}

}  // namespace

Result<json::object> runFleet(const FleetOptions& options, const std::atomic<bool>& stop) {
  if (auto s = validate(options); !s) return s;
  Driver driver(options, stop);
  return driver.run();
}

}  // namespace iothub::fleetsim
