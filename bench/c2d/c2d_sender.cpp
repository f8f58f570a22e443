// c2d_sender: the service side of the C2D benchmark (docs/benchmarks.md, bench/c2d/run).
//
//   c2d_sender amqp --port P --ca CA --connection-string CS --devices N --messages M --in-flight C
//   c2d_sender mqtt --port P --devices N --messages M --in-flight C
//
// amqp: what azure-iothub's Client.send does, with Qpid Proton C++'s container: TLS to the
//   hub's AMQP port (no SASL layer, like the SDK), a put-token on $cbs (docs/amqp.md §1.4)
//   with a service SAS token for the host, a sender on /messages/devicebound, then message k
//   (k = 0..M-1) to device k mod N (`to` = /devices/<id>/messages/devicebound), at most C
//   waiting for their outcome (and never more than the hub's credit). Counts the outcomes.
// mqtt: the peer: one anonymous MQTT 3.1.1 connection to a broker that publishes message k at
//   QoS 1 to devices/<id>/messages/devicebound/x, at most C without their PUBACK.
//
// The body of message k is fleetsim's c2dPayload(k, send time), which fleetsim's c2d scenario
// reads at the devices. Prints one JSON object: accepted (hub: accepted outcomes; broker:
// PUBACKs), rejected, released, elapsed_s from the first send to the last outcome, and
// sends_per_s = accepted / elapsed_s. Exit 1 unless every message was accepted.

#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/container.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/ssl.hpp>
#include <proton/tracker.hpp>
#include <proton/transport.hpp>
#include <string>
#include <vector>

#include "apps/fleetsim/fleet_options.hpp"
#include "apps/fleetsim/report.hpp"
#include "auth/connection_string.hpp"
#include "auth/sas_token.hpp"
#include "bench/lib/bench_client.hpp"
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
  std::string prefix = "fleet-";
  std::size_t devices = 100;
  std::uint64_t messages = 1000;
  std::size_t in_flight = 100;
  int timeout_s = 600;
};

struct Figures {
  std::uint64_t sent = 0;
  std::uint64_t accepted = 0;
  std::uint64_t rejected = 0;
  std::uint64_t released = 0;  // released or modified (Proton reports both as released)
  std::int64_t first_send_ns = 0;
  std::int64_t last_outcome_ns = 0;
  std::string error;
  std::map<std::string, std::uint64_t> rejections;  // by error condition
};

void print(const char* protocol, const Options& o, Figures f) {
  f.error = iothub::bench::jsonSafe(std::move(f.error));
  const double elapsed =
      f.last_outcome_ns > f.first_send_ns ? (f.last_outcome_ns - f.first_send_ns) / 1e9 : 0.0;
  std::string rejections;
  for (const auto& [name, n] : f.rejections) {
    rejections +=
        (rejections.empty() ? "" : ",") + std::string("\"") + name + "\":" + std::to_string(n);
  }
  std::printf(
      "{\"protocol\":\"%s\",\"devices\":%zu,\"messages\":%llu,\"in_flight\":%zu,\"sent\":%llu,"
      "\"accepted\":%llu,\"rejected\":%llu,\"released\":%llu,\"rejections\":{%s},"
      "\"elapsed_s\":%.3f,\"sends_per_s\":%.3f%s%s%s}\n",
      protocol, o.devices, static_cast<unsigned long long>(o.messages), o.in_flight,
      static_cast<unsigned long long>(f.sent), static_cast<unsigned long long>(f.accepted),
      static_cast<unsigned long long>(f.rejected), static_cast<unsigned long long>(f.released),
      rejections.c_str(), round3(elapsed),
      elapsed > 0 ? round3(static_cast<double>(f.accepted) / elapsed) : 0.0,
      f.error.empty() ? "" : ",\"error\":\"", f.error.c_str(), f.error.empty() ? "" : "\"");
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------
// AMQP: Proton's container, one connection, one session.

class AmqpSender : public proton::messaging_handler {
 public:
  AmqpSender(const Options& o, iothub::auth::ServiceConnectionString cs, Figures& f)
      : o_(o), cs_(std::move(cs)), f_(f) {}

  void on_container_start(proton::container& c) override {
    proton::connection_options co;
    co.sasl_enabled(false);  // azure-iothub sends the plain AMQP header (docs/amqp.md §1.2)
    co.virtual_host(cs_.host_name);
    co.ssl_client_options(proton::ssl_client_options(o_.ca_file, proton::ssl::VERIFY_PEER_NAME));
    co.idle_timeout(proton::duration(0));
    c.connect("amqps://" + o_.server + ":" + std::to_string(o_.port), co);
  }

  void on_connection_open(proton::connection& c) override {
    cbs_sender_ = c.open_sender("$cbs", proton::sender_options().name("cbs-sender"));
    cbs_receiver_ =
        c.open_receiver("$cbs", proton::receiver_options().name("cbs-receiver").credit_window(10));
  }

  void on_sendable(proton::sender& s) override {
    if (s == cbs_sender_) {
      if (token_sent_) return;
      token_sent_ = true;
      const auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count() +
                          3600;
      auto token = iothub::auth::buildSasToken(cs_.host_name, cs_.key, cs_.key_name, expiry);
      if (!token) return fail(s.connection(), "token: " + token.status().message());
      // azure-iothub answers to "cbs", not to its receiver's name (docs/amqp.md §1.4).
      s.send(iothub::bench::putTokenRequest("put-token-1", cs_.host_name, *token, "cbs"));
      return;
    }
    if (s == c2d_) pump();
  }

  void on_message(proton::delivery& d, proton::message& m) override {
    if (d.receiver() != cbs_receiver_) return;
    std::string description;
    const int status = iothub::bench::putTokenStatus(m, description);
    if (status != 200) {
      return fail(d.connection(),
                  "put-token answered " + std::to_string(status) + " " + description);
    }
    if (!c2d_) {
      c2d_ = d.connection().open_sender("/messages/devicebound",
                                        proton::sender_options().name("c2d-sender"));
    }
  }

  void on_tracker_accept(proton::tracker& t) override {
    if (t.sender() != c2d_) return;
    ++f_.accepted;
    settled(t);
  }
  void on_tracker_reject(proton::tracker& t) override {
    if (t.sender() != c2d_) return;
    ++f_.rejected;
    ++f_.rejections["rejected"];  // the C++ API does not expose a disposition's condition
    settled(t);
  }
  void on_tracker_release(proton::tracker& t) override {
    if (t.sender() != c2d_) return;
    ++f_.released;
    settled(t);
  }
  void on_transport_error(proton::transport& t) override {
    if (f_.error.empty()) f_.error = "transport: " + t.error().what();
  }
  void on_connection_error(proton::connection& c) override {
    if (f_.error.empty()) f_.error = "connection: " + c.error().what();
  }
  void on_sender_error(proton::sender& s) override {
    if (f_.error.empty()) f_.error = "link " + s.name() + ": " + s.error().what();
    s.connection().close();
  }
  void on_receiver_error(proton::receiver& r) override {
    if (f_.error.empty()) f_.error = "link " + r.name() + ": " + r.error().what();
    r.connection().close();
  }

 private:
  void pump() {
    while (c2d_.credit() > 0 && f_.sent < o_.messages && f_.sent - counted_ < o_.in_flight) {
      const std::uint64_t k = f_.sent;
      const std::string id = fs::deviceId(o_.prefix, static_cast<std::size_t>(k % o_.devices));
      message_.to("/devices/" + id + "/messages/devicebound");
      message_.id(proton::message_id(std::string("c2d-") + std::to_string(k)));
      const std::int64_t now = nowNanos();
      if (k == 0) f_.first_send_ns = now;
      const std::string body = fs::c2dPayload(k, now);
      message_.body(proton::binary(body.begin(), body.end()));
      c2d_.send(message_);
      ++f_.sent;
    }
  }

  void settled(proton::tracker& t) {
    ++counted_;
    f_.last_outcome_ns = nowNanos();
    if (counted_ == o_.messages) {
      t.connection().close();
      return;
    }
    pump();
  }

  void fail(proton::connection c, std::string why) {
    if (f_.error.empty()) f_.error = std::move(why);
    c.close();
  }

  const Options& o_;
  iothub::auth::ServiceConnectionString cs_;
  Figures& f_;
  proton::sender cbs_sender_;
  proton::receiver cbs_receiver_;
  proton::sender c2d_;
  proton::message message_;
  bool token_sent_ = false;
  std::uint64_t counted_ = 0;  // messages with an outcome
};

int runAmqp(const Options& o) {
  auto cs = iothub::auth::ServiceConnectionString::parse(o.connection_string);
  if (!cs) {
    std::fprintf(stderr, "c2d_sender: --connection-string: %s\n", cs.status().message().c_str());
    return 2;
  }
  Figures f;
  AmqpSender handler(o, *cs, f);
  try {
    proton::container(handler, "c2d_sender").run();
  } catch (const std::exception& e) {
    f.error = e.what();
  }
  print("amqp", o, f);
  return f.error.empty() && f.accepted == o.messages ? 0 : 1;
}

// ---------------------------------------------------------------------------------------
// MQTT: one blocking socket, QoS 1 publishes with a window of in-flight packet ids.

int runMqtt(const Options& o) {
  Figures f;
  const int fd = iothub::bench::connectTcp(o.server, o.port, f.error);
  if (fd < 0) {
    print("mqtt", o, f);
    return 1;
  }
  iothub::bench::MqttPeer peer(fd);
  iothub::mqtt::Connect connect;
  connect.client_id = "c2d-sender";
  connect.clean_session = true;
  (void)iothub::mqtt::encode(connect, peer.out);
  bool connected = false;
  std::vector<bool> in_use(65536, false);
  std::uint16_t next_id = 0;
  std::uint64_t acked = 0;
  const auto deadline = SteadyClock::now() + std::chrono::seconds(o.timeout_s);
  while (acked < o.messages && f.error.empty()) {
    if (connected) {
      while (f.sent < o.messages && f.sent - acked < o.in_flight) {
        do {
          next_id = static_cast<std::uint16_t>(next_id == 65535 ? 1 : next_id + 1);
        } while (in_use[next_id]);
        in_use[next_id] = true;
        const std::uint64_t k = f.sent;
        const std::string topic = "devices/" +
                                  fs::deviceId(o.prefix, static_cast<std::size_t>(k % o.devices)) +
                                  "/messages/devicebound/x";
        const std::int64_t now = nowNanos();
        if (k == 0) f.first_send_ns = now;
        const std::string body = fs::c2dPayload(k, now);
        (void)iothub::mqtt::encode(
            iothub::mqtt::PublishView{topic, body, iothub::mqtt::QoS::AtLeastOnce, false, false,
                                      next_id},
            peer.out);
        ++f.sent;
      }
    }
    const bool arrived = peer.pump(1000, f.error, [&](iothub::mqtt::Packet& packet) {
      if (auto* connack = std::get_if<iothub::mqtt::ConnAck>(&packet)) {
        if (connack->return_code != iothub::mqtt::ConnectReturnCode::Accepted) {
          f.error = "CONNACK refused";
          return;
        }
        connected = true;
      } else if (auto* puback = std::get_if<iothub::mqtt::PubAck>(&packet)) {
        if (!in_use[puback->packet_id]) return;
        in_use[puback->packet_id] = false;
        ++acked;
        ++f.accepted;
        f.last_outcome_ns = nowNanos();
      }
    });
    if (!arrived && SteadyClock::now() > deadline) f.error = "timed out waiting for PUBACKs";
  }
  peer.disconnect();
  print("mqtt", o, f);
  return f.error.empty() && f.accepted == o.messages ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"c2d_sender: send C2D benchmark messages through the hub (AMQP) or a broker (MQTT)"};
  app.require_subcommand(1);
  Options o;
  auto common = [&](CLI::App* sub) {
    sub->add_option("--server", o.server, "Server address (IPv4)")->capture_default_str();
    sub->add_option("--port", o.port, "AMQP (TLS) or MQTT (plain) port")->required();
    sub->add_option("--prefix", o.prefix, "Device id prefix")->capture_default_str();
    sub->add_option("--devices", o.devices, "Message k goes to device k mod N")
        ->capture_default_str();
    sub->add_option("--messages", o.messages, "Messages to send")->capture_default_str();
    sub->add_option("--in-flight", o.in_flight, "Messages waiting for their outcome at most")
        ->capture_default_str();
    sub->add_option("--timeout", o.timeout_s, "Seconds to wait for outcomes (mqtt)")
        ->capture_default_str();
  };
  auto* amqp = app.add_subcommand("amqp", "Send through the hub's /messages/devicebound");
  common(amqp);
  amqp->add_option("--ca", o.ca_file, "CA that signs the hub's certificate")->required();
  amqp->add_option("--connection-string", o.connection_string,
                   "Service connection string (ServiceConnect)")
      ->required();
  auto* mqtt = app.add_subcommand("mqtt", "Publish QoS 1 to devices/<id>/messages/devicebound/x");
  common(mqtt);
  CLI11_PARSE(app, argc, argv);
  if (o.devices == 0 || o.messages == 0 || o.in_flight == 0 || o.in_flight > 60000) {
    std::fprintf(stderr, "c2d_sender: --devices, --messages >= 1, --in-flight in [1, 60000]\n");
    return 2;
  }
  return app.got_subcommand("amqp") ? runAmqp(o) : runMqtt(o);
}
