// eh_reader: the reading side of the telemetry-ingest benchmark (docs/benchmarks.md,
// "Telemetry ingest (D2C) and Event Hubs read"; `bench/fleet/run D2C`).
//
//   eh_reader eventhubs --port P --ca CA --connection-string "Endpoint=sb://...;EntityPath=E"
//                       --partitions N (--expect M | --expect-file F) [--log FILE]
//   eh_reader mqtt --port P (--expect M | --expect-file F) [--log FILE]
//
// eventhubs: what an @azure/event-hubs consumer does, with Qpid Proton C++'s container: TLS
//   to the hub's AMQP port, SASL ANONYMOUS, a $cbs put-token per partition with an Event Hubs
//   SAS token (sr = the URL-encoded audience sb://HOST[:P]/E/ConsumerGroups/$Default/
//   Partitions/n, signed with the key TEXT's bytes, docs/amqp.md §1.5), then one receiver per
//   partition at '@latest' (selector filter x-opt-offset > '@latest') with a credit window of
//   --credit. Start it before the load: it prints "eh_reader: ready" on stderr once every
//   receiver is attached and has had a moment to take its position.
// mqtt: the peer: one MQTT 3.1.1 subscriber on devices/+/messages/events/# at QoS 1 (PUBACKs
//   everything) on a broker; "eh_reader: ready" once SUBACKed.
//
// Each message's body is fleetsim's d2cPayload (id, publish time). The reader records per
// message (id, publish ns, arrival ns) in steady-clock time, and stops once M distinct
// messages arrived (and --grace-ms more passed, to see duplicates) or --timeout passed. M is
// --expect, or the number --expect-file holds once it exists (the run writes it when the
// devices are done). Prints one JSON object: received, unique, duplicates, malformed,
// elapsed_s (first to last arrival), rate_per_s (unique / elapsed_s). Exit 1 unless M
// distinct messages arrived and nothing failed.

#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <proton/codec/encoder.hpp>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/source.hpp>
#include <proton/source_options.hpp>
#include <proton/ssl.hpp>
#include <proton/transport.hpp>
#include <proton/work_queue.hpp>
#include <string>
#include <unordered_set>
#include <vector>

#include "apps/fleetsim/d2c_log.hpp"
#include "apps/fleetsim/report.hpp"
#include "auth/sas_token.hpp"
#include "bench/lib/bench_client.hpp"
#include "common/encoding.hpp"
#include "mqtt/encoder.hpp"

namespace {

using SteadyClock = std::chrono::steady_clock;
namespace fs = iothub::fleetsim;
using iothub::bench::nowNanos;
using iothub::fleetsim::round3;

struct Options {
  std::string server = "127.0.0.1";
  std::uint16_t port = 0;
  std::string ca_file;
  std::string connection_string;
  std::string consumer_group = "$Default";
  int partitions = 4;
  std::uint64_t expect = 0;
  std::string expect_file;
  std::string log_file;
  int credit = 1000;
  int grace_ms = 1000;
  int timeout_s = 900;
};

// What a reader saw.
struct Reads {
  std::vector<fs::D2cRecord> records;
  std::unordered_set<std::uint64_t> seen;
  std::uint64_t received = 0;
  std::uint64_t duplicates = 0;
  std::uint64_t malformed = 0;
  std::int64_t first_ns = 0;
  std::int64_t last_ns = 0;
  std::string error;

  void add(std::string_view body) {
    const std::int64_t now = nowNanos();
    ++received;
    if (first_ns == 0) first_ns = now;
    last_ns = now;
    std::uint64_t id = 0;
    std::int64_t sent = 0;
    if (!fs::parseD2cPayload(body, id, sent)) {
      ++malformed;
      return;
    }
    if (!seen.insert(id).second) ++duplicates;
    records.push_back({id, sent, now});
  }
  std::uint64_t unique() const { return seen.size(); }
};

// The expected count: --expect, or what --expect-file holds once it was written.
class Expectation {
 public:
  explicit Expectation(const Options& o) : file_(o.expect_file) {
    if (o.expect > 0) value_ = o.expect;
  }
  std::optional<std::uint64_t> value() {
    if (!value_ && !file_.empty()) {
      std::ifstream in(file_);
      std::uint64_t n = 0;
      if (in >> n) value_ = n;
    }
    return value_;
  }

 private:
  std::string file_;
  std::optional<std::uint64_t> value_;
};

// When to stop: every expected message seen and the grace period over, or the timeout.
class Finish {
 public:
  explicit Finish(const Options& o)
      : grace_(std::chrono::milliseconds(o.grace_ms)),
        deadline_(SteadyClock::now() + std::chrono::seconds(o.timeout_s)),
        expectation_(o) {}
  bool due(const Reads& r) {
    const auto now = SteadyClock::now();
    if (now >= deadline_) {
      if (r.error.empty()) timed_out_ = true;
      return true;
    }
    const auto expected = expectation_.value();
    if (!expected || r.unique() < *expected) return false;
    if (!complete_at_) complete_at_ = now;
    return now - *complete_at_ >= grace_;
  }
  bool timedOut() const { return timed_out_; }
  std::uint64_t expected() { return expectation_.value().value_or(0); }

 private:
  std::chrono::milliseconds grace_;
  SteadyClock::time_point deadline_;
  Expectation expectation_;
  std::optional<SteadyClock::time_point> complete_at_;
  bool timed_out_ = false;
};

int finish(const char* protocol, const Options& o, Finish& f, Reads& r) {
  if (f.timedOut() && r.error.empty()) r.error = "timed out";
  const std::uint64_t expected = f.expected();
  if (r.error.empty() && r.unique() < expected) r.error = "not every message arrived";
  if (!o.log_file.empty()) {
    if (auto written = fs::writeD2cRecords(o.log_file, r.records); !written) {
      if (r.error.empty()) r.error = written.message();
    }
  }
  const double elapsed = r.last_ns > r.first_ns ? (r.last_ns - r.first_ns) / 1e9 : 0.0;
  const std::string error = iothub::bench::jsonSafe(r.error);
  std::printf(
      "{\"protocol\":\"%s\",\"expected\":%llu,\"received\":%llu,\"unique\":%llu,"
      "\"duplicates\":%llu,\"malformed\":%llu,\"elapsed_s\":%.3f,\"rate_per_s\":%.3f%s%s%s}\n",
      protocol, static_cast<unsigned long long>(expected),
      static_cast<unsigned long long>(r.received), static_cast<unsigned long long>(r.unique()),
      static_cast<unsigned long long>(r.duplicates), static_cast<unsigned long long>(r.malformed),
      round3(elapsed), elapsed > 0 ? round3(static_cast<double>(r.unique()) / elapsed) : 0.0,
      error.empty() ? "" : ",\"error\":\"", error.c_str(), error.empty() ? "" : "\"");
  std::fflush(stdout);
  return r.error.empty() ? 0 : 1;
}

void announceReady(const std::string& what) {
  std::fprintf(stderr, "eh_reader: ready (%s)\n", what.c_str());
  std::fflush(stderr);
}

// ---------------------------------------------------------------------------------------
// Event Hubs: Proton's container, one connection.

// Endpoint=sb://HOST[:PORT]/;SharedAccessKeyName=K;SharedAccessKey=S;EntityPath=E
struct EventHubsConnectionString {
  std::string host;       // without the port
  std::string authority;  // HOST[:PORT], as in the audience
  std::string key_name;
  std::string key;
  std::string entity;
};

std::optional<EventHubsConnectionString> parseEventHubs(std::string_view text) {
  EventHubsConnectionString cs;
  while (!text.empty()) {
    const auto semi = text.find(';');
    const std::string_view part = text.substr(0, semi);
    text = semi == std::string_view::npos ? std::string_view() : text.substr(semi + 1);
    const auto eq = part.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view name = part.substr(0, eq);
    const std::string value(part.substr(eq + 1));
    if (name == "Endpoint") {
      std::string_view v = value;
      if (!v.starts_with("sb://")) return std::nullopt;
      v.remove_prefix(5);
      cs.authority = std::string(v.substr(0, v.find('/')));
      cs.host = cs.authority.substr(0, cs.authority.find(':'));
    } else if (name == "SharedAccessKeyName") {
      cs.key_name = value;
    } else if (name == "SharedAccessKey") {
      cs.key = value;
    } else if (name == "EntityPath") {
      cs.entity = value;
    }
  }
  if (cs.host.empty() || cs.key_name.empty() || cs.key.empty() || cs.entity.empty())
    return std::nullopt;
  return cs;
}

// An Event Hubs SAS token for `audience`: sr = the URL-encoded audience, signed with the
// key text's bytes over sr + "\n" + se (docs/amqp.md §1.5).
iothub::Result<std::string> eventHubsToken(const EventHubsConnectionString& cs,
                                           const std::string& audience, std::int64_t expiry) {
  const std::string sr = iothub::urlEncodeStrict(audience);
  auto sig = iothub::auth::hmacSha256Base64RawKey(cs.key, sr + "\n" + std::to_string(expiry));
  if (!sig) return sig.status();
  return "SharedAccessSignature sr=" + sr + "&sig=" + iothub::urlEncodeStrict(*sig) +
         "&se=" + std::to_string(expiry) + "&skn=" + iothub::urlEncodeStrict(cs.key_name);
}

class EventHubsReader : public proton::messaging_handler {
 public:
  EventHubsReader(const Options& o, EventHubsConnectionString cs, Reads& r, Finish& f)
      : o_(o), cs_(std::move(cs)), r_(r), f_(f) {}

  void on_container_start(proton::container& c) override {
    proton::connection_options co;
    co.sasl_enabled(true);  // ANONYMOUS, as @azure/event-hubs (docs/amqp.md §1.2)
    co.sasl_allowed_mechs("ANONYMOUS");
    co.virtual_host(cs_.host);
    co.ssl_client_options(proton::ssl_client_options(o_.ca_file, proton::ssl::VERIFY_PEER_NAME));
    co.idle_timeout(proton::duration(60000));
    c.connect("amqps://" + o_.server + ":" + std::to_string(o_.port), co);
    tick(c);
  }

  void on_connection_open(proton::connection& c) override {
    connection_ = c;
    cbs_sender_ = c.open_sender("$cbs", proton::sender_options().name("cbs-sender"));
    cbs_receiver_ =
        c.open_receiver("$cbs", proton::receiver_options().name("cbs-receiver").credit_window(100));
  }

  void on_sendable(proton::sender& s) override {
    if (s != cbs_sender_ || tokens_sent_) return;
    tokens_sent_ = true;
    const auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count() +
                        3600;
    for (int p = 0; p < o_.partitions; ++p) {
      auto token = eventHubsToken(cs_, audience(p), expiry);
      if (!token) return fail(s.connection(), "token: " + token.status().message());
      s.send(iothub::bench::putTokenRequest("put-token-" + std::to_string(p), audience(p), *token,
                                            "cbs-receiver"));
    }
  }

  void on_message(proton::delivery& d, proton::message& m) override {
    if (d.receiver() == cbs_receiver_) return onPutTokenReply(d, m);
    const proton::value& body = m.body();
    if (body.type() == proton::BINARY) {
      const auto bytes = proton::get<proton::binary>(body);
      r_.add(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    } else if (body.type() == proton::STRING) {
      r_.add(proton::get<std::string>(body));
    } else {
      r_.add("");
    }
  }

  void on_receiver_open(proton::receiver& r) override {
    if (r == cbs_receiver_) return;
    if (++attached_ == o_.partitions) {
      // The hub answers the attach and then takes the '@latest' position on a worker: give
      // it a moment before the load starts.
      r.connection().container().schedule(proton::duration(1000), [this] {
        announceReady(std::to_string(o_.partitions) + " partition receivers attached");
      });
    }
  }

  void on_transport_error(proton::transport& t) override {
    if (r_.error.empty()) r_.error = "transport: " + t.error().what();
  }
  void on_connection_error(proton::connection& c) override {
    if (r_.error.empty()) r_.error = "connection: " + c.error().what();
  }
  void on_receiver_error(proton::receiver& r) override {
    if (r_.error.empty()) r_.error = "link " + r.source().address() + ": " + r.error().what();
    r.connection().close();
  }
  void on_sender_error(proton::sender& s) override {
    if (r_.error.empty()) r_.error = "link " + s.name() + ": " + s.error().what();
    s.connection().close();
  }

 private:
  std::string address(int p) const {
    return cs_.entity + "/ConsumerGroups/" + o_.consumer_group + "/Partitions/" + std::to_string(p);
  }
  std::string audience(int p) const { return "sb://" + cs_.authority + "/" + address(p); }

  void onPutTokenReply(proton::delivery& d, proton::message& m) {
    std::string description;
    const int status = iothub::bench::putTokenStatus(m, description);
    if (status != 200) {
      return fail(d.connection(),
                  "put-token answered " + std::to_string(status) + " " + description);
    }
    // The reply's correlation-id is the request's message-id "put-token-<p>".
    const std::string id = proton::to_string(m.correlation_id());
    const auto dash = id.rfind('-');
    const int p = dash == std::string::npos ? -1 : std::atoi(id.c_str() + dash + 1);
    if (p < 0 || p >= o_.partitions) return fail(d.connection(), "put-token reply for " + id);
    proton::source::filter_map filters;
    proton::value filter;
    proton::codec::encoder encoder(filter);
    // Event Hubs' selector filter: descriptor 0x0000468C00000004, an SQL-like string.
    encoder << proton::codec::start::described() << std::uint64_t{0x0000468C00000004ULL}
            << std::string("amqp.annotation.x-opt-offset > '@latest'") << proton::codec::finish();
    filters.put(proton::symbol("apache.org:selector-filter:string"), filter);
    d.connection().open_receiver(address(p),
                                 proton::receiver_options()
                                     .name("partition-" + std::to_string(p))
                                     .credit_window(o_.credit)
                                     .source(proton::source_options().filters(filters)));
  }

  // Every 100 ms: whether the run is over.
  void tick(proton::container& c) {
    if (f_.due(r_) || !r_.error.empty()) {
      if (connection_) connection_.close();
      return;
    }
    c.schedule(proton::duration(100), [this, &c] { tick(c); });
  }

  void fail(proton::connection c, std::string why) {
    if (r_.error.empty()) r_.error = std::move(why);
    c.close();
  }

  const Options& o_;
  EventHubsConnectionString cs_;
  Reads& r_;
  Finish& f_;
  proton::connection connection_;
  proton::sender cbs_sender_;
  proton::receiver cbs_receiver_;
  bool tokens_sent_ = false;
  int attached_ = 0;
};

int runEventHubs(const Options& o) {
  Reads r;
  Finish f(o);
  auto cs = parseEventHubs(o.connection_string);
  if (!cs) {
    r.error =
        "--connection-string is not Endpoint=sb://...;SharedAccessKeyName=...;"
        "SharedAccessKey=...;EntityPath=...";
    return finish("eventhubs", o, f, r);
  }
  EventHubsReader handler(o, *cs, r, f);
  try {
    proton::container(handler, "eh_reader").run();
  } catch (const std::exception& e) {
    if (r.error.empty()) r.error = e.what();
  }
  return finish("eventhubs", o, f, r);
}

// ---------------------------------------------------------------------------------------
// MQTT: one blocking socket, a QoS 1 subscription, a PUBACK per message.

int runMqtt(const Options& o) {
  Reads r;
  Finish f(o);
  const int fd = iothub::bench::connectTcp(o.server, o.port, r.error);
  if (fd < 0) return finish("mqtt", o, f, r);
  namespace mqtt = iothub::mqtt;
  iothub::bench::MqttPeer peer(fd);
  mqtt::Connect connect;
  connect.client_id = "eh-reader";
  connect.clean_session = true;
  connect.keep_alive = 0;
  (void)mqtt::encode(connect, peer.out);
  while (r.error.empty() && !f.due(r)) {
    peer.pump(100, r.error, [&](mqtt::Packet& packet) {
      if (auto* connack = std::get_if<mqtt::ConnAck>(&packet)) {
        if (connack->return_code != mqtt::ConnectReturnCode::Accepted) {
          r.error = "CONNACK refused";
          return;
        }
        mqtt::Subscribe subscribe;
        subscribe.packet_id = 1;
        subscribe.subscriptions.push_back({"devices/+/messages/events/#", mqtt::QoS::AtLeastOnce});
        (void)mqtt::encode(subscribe, peer.out);
      } else if (auto* suback = std::get_if<mqtt::SubAck>(&packet)) {
        if (suback->return_codes.empty() ||
            suback->return_codes[0] == mqtt::SubAckReturnCode::Failure) {
          r.error = "SUBSCRIBE refused";
          return;
        }
        announceReady("subscribed to devices/+/messages/events/#");
      } else if (auto* publish = std::get_if<mqtt::Publish>(&packet)) {
        r.add(publish->payload);
        if (publish->qos != mqtt::QoS::AtMostOnce)
          (void)mqtt::encode(mqtt::PubAck{publish->packet_id}, peer.out);
      }
    });
  }
  peer.disconnect();
  return finish("mqtt", o, f, r);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"eh_reader: read the telemetry benchmark's messages from the hub or a broker"};
  app.require_subcommand(1);
  Options o;
  auto common = [&](CLI::App* sub) {
    sub->add_option("--server", o.server, "Server address (IPv4)")->capture_default_str();
    sub->add_option("--port", o.port, "AMQP (TLS) or MQTT (plain) port")->required();
    sub->add_option("--expect", o.expect, "Distinct messages to wait for");
    sub->add_option("--expect-file", o.expect_file,
                    "Read the count to wait for from this file once it exists");
    sub->add_option("--log", o.log_file, "Write a 24-byte record per message read");
    sub->add_option("--grace-ms", o.grace_ms, "Keep reading this long after the last expected")
        ->capture_default_str();
    sub->add_option("--timeout", o.timeout_s, "Give up after this many seconds")
        ->capture_default_str();
  };
  auto* eventhubs = app.add_subcommand("eventhubs", "Read the hub's Event Hubs endpoint");
  common(eventhubs);
  eventhubs->add_option("--ca", o.ca_file, "CA that signs the hub's certificate")->required();
  eventhubs
      ->add_option("--connection-string", o.connection_string,
                   "Event Hubs connection string (iothubd connection-string --event-hubs)")
      ->required();
  eventhubs->add_option("--partitions", o.partitions, "Partitions to read")->capture_default_str();
  eventhubs->add_option("--consumer-group", o.consumer_group, "Consumer group")
      ->capture_default_str();
  eventhubs->add_option("--credit", o.credit, "Credit window per partition receiver")
      ->capture_default_str();
  auto* mqtt = app.add_subcommand("mqtt", "Subscribe to devices/+/messages/events/# at QoS 1");
  common(mqtt);
  CLI11_PARSE(app, argc, argv);
  if ((o.expect == 0) == o.expect_file.empty()) {
    std::fprintf(stderr, "eh_reader: give --expect M or --expect-file F\n");
    return 2;
  }
  if (o.partitions < 1 || o.credit < 1) {
    std::fprintf(stderr, "eh_reader: --partitions and --credit must be at least 1\n");
    return 2;
  }
  return app.got_subcommand("eventhubs") ? runEventHubs(o) : runMqtt(o);
}
