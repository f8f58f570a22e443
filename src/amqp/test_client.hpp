#pragma once
// Test helper: a Proton client connection_driver that speaks to an amqp::ServerConnection in
// memory, or to anything else through raw byte buffers. Header-only, tests only.
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <proton/codec/encoder.hpp>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/io/connection_driver.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/scalar.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/session.hpp>
#include <proton/source.hpp>
#include <proton/source_options.hpp>
#include <proton/symbol.hpp>
#include <proton/target_options.hpp>
#include <proton/tracker.hpp>
#include <proton/transport.hpp>
#include <string>
#include <vector>

#include "amqp/server_connection.hpp"

namespace iothub::amqp::testing {

struct CbsReply {
  std::string correlation_id;
  int status_code = 0;
  std::string status_description;
};

// A client in the style of azure-iothub / Event Hubs: opens the connection, a $cbs sender and
// receiver, puts tokens, attaches links and records what comes back.
class TestClient : public proton::messaging_handler {
  // First, so that it outlives every Proton handle below (they release into it).
  proton::io::connection_driver driver_;

 public:
  explicit TestClient(bool sasl = true, std::string hostname = "myhub.azure-devices.net")
      : driver_("test-client") {
    proton::connection_options opts(*this);
    opts.virtual_host(hostname).idle_timeout(proton::duration(0));
    if (sasl) {
      opts.sasl_enabled(true).sasl_allowed_mechs("ANONYMOUS").user("iothubowner");
    } else {
      opts.sasl_enabled(false);
    }
    driver_.connect(opts);
  }

  proton::io::connection_driver& driver() { return driver_; }

  // Bytes the client wants to send, moved out.
  std::vector<std::uint8_t> takeOutput() {
    std::vector<std::uint8_t> out;
    dispatch();
    for (;;) {
      proton::io::const_buffer b = driver_.write_buffer();
      if (b.size == 0) break;
      out.insert(out.end(), b.data, b.data + b.size);
      driver_.write_done(b.size);
      dispatch();
    }
    return out;
  }

  void feed(std::span<const std::uint8_t> bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      proton::io::mutable_buffer b = driver_.read_buffer();
      if (b.size == 0) break;
      std::size_t n = std::min(b.size, bytes.size() - done);
      std::memcpy(b.data, bytes.data() + done, n);
      driver_.read_done(n);
      done += n;
      dispatch();
    }
  }

  void dispatch() { active_ = driver_.dispatch(); }
  bool active() const { return active_; }

  // --- actions ---------------------------------------------------------------------------
  void openCbs() {
    proton::session s = driver_.connection().default_session();
    cbs_sender_ = s.open_sender("$cbs", proton::sender_options().name("cbs-sender"));
    cbs_receiver_ = s.open_receiver(
        "$cbs", proton::receiver_options().name("cbs-receiver").credit_window(1000));
    dispatch();
  }

  void putToken(std::string id, std::string audience, std::string token,
                std::string operation = "put-token") {
    proton::message m;
    m.id(id);
    m.to("$cbs");
    m.reply_to("cbs");
    m.properties().put("operation", operation);
    m.properties().put("type", "servicebus.windows.net:sastoken");
    m.properties().put("name", audience);
    m.body(token);
    pending_.push_back(std::move(m));
    flush();
  }

  proton::sender attachSender(const std::string& address, const std::string& name) {
    proton::sender s = driver_.connection().default_session().open_sender(
        address, proton::sender_options().name(name));
    dispatch();
    return s;
  }

  // A receiver whose source carries a described filter, as Event Hubs' partition receivers
  // send their start position (docs/amqp.md §4).
  // `properties` are the attach's (Event Hubs: com.microsoft:epoch as a long).
  proton::receiver attachFilteredReceiver(
      const std::string& address, const std::string& name, const std::string& filter,
      std::uint64_t descriptor, const std::string& expression,
      const std::map<proton::symbol, proton::value>& properties = {}, int credit_window = 10) {
    proton::value described;
    proton::codec::encoder e(described);
    e << proton::codec::start::described() << descriptor << expression << proton::codec::finish();
    proton::source::filter_map filters;
    filters.put(proton::symbol(filter), described);
    proton::receiver_options options = proton::receiver_options()
                                           .name(name)
                                           .credit_window(credit_window)
                                           .source(proton::source_options().filters(filters));
    if (!properties.empty()) options.properties(properties);
    proton::receiver r = driver_.connection().default_session().open_receiver(address, options);
    dispatch();
    return r;
  }

  proton::receiver attachReceiver(const std::string& address, const std::string& name) {
    proton::receiver r = driver_.connection().default_session().open_receiver(
        address, proton::receiver_options().name(name).credit_window(10));
    dispatch();
    return r;
  }

  // --- what happened ---------------------------------------------------------------------
  bool open = false;
  std::vector<CbsReply> cbs_replies;
  std::map<std::string, bool> links_open;                      // by link name
  std::map<std::string, proton::error_condition> link_errors;  // by link name
  std::map<std::string, std::string> remote_target_address;    // by link name, on open
  std::vector<proton::message> received;
  std::vector<proton::tracker> outcomes;
  std::optional<proton::error_condition> connection_error;
  std::vector<proton::error_condition> session_errors;
  std::optional<proton::error_condition> transport_error;

  void on_connection_open(proton::connection&) override { open = true; }
  void on_connection_error(proton::connection& c) override { connection_error = c.error(); }
  void on_session_error(proton::session& s) override { session_errors.push_back(s.error()); }
  void on_transport_error(proton::transport& t) override { transport_error = t.error(); }
  void on_sender_open(proton::sender& s) override {
    links_open[s.name()] = true;
    remote_target_address[s.name()] = s.target().address();
  }
  void on_receiver_open(proton::receiver& r) override { links_open[r.name()] = true; }
  void on_sender_error(proton::sender& s) override {
    link_errors[s.name()] = s.error();
    links_open[s.name()] = false;
  }
  void on_receiver_error(proton::receiver& r) override {
    link_errors[r.name()] = r.error();
    links_open[r.name()] = false;
  }
  void on_sendable(proton::sender&) override { flush(); }
  void on_message(proton::delivery& d, proton::message& m) override {
    if (d.receiver() == cbs_receiver_) {
      CbsReply reply;
      if (m.correlation_id().type() == proton::STRING) {
        reply.correlation_id = proton::get<std::string>(m.correlation_id());
      }
      proton::scalar code = m.properties().get("status-code");
      reply.status_code = code.type() == proton::INT ? proton::get<std::int32_t>(code) : -1;
      proton::scalar desc = m.properties().get("status-description");
      if (desc.type() == proton::STRING) reply.status_description = proton::get<std::string>(desc);
      cbs_replies.push_back(reply);
    } else {
      received.push_back(m);
    }
  }
  void on_tracker_accept(proton::tracker& t) override {
    if (!isCbs(t)) outcomes.push_back(t);
  }
  void on_tracker_reject(proton::tracker& t) override {
    if (!isCbs(t)) outcomes.push_back(t);
  }
  void on_tracker_release(proton::tracker& t) override {
    if (!isCbs(t)) outcomes.push_back(t);
  }

 private:
  bool isCbs(proton::tracker& t) const { return t.sender() == cbs_sender_; }
  void flush() {
    while (!pending_.empty() && cbs_sender_ && cbs_sender_.credit() > 0) {
      cbs_sender_.send(pending_.front());
      pending_.pop_front();
    }
  }

  bool active_ = true;
  proton::sender cbs_sender_;
  proton::receiver cbs_receiver_;
  std::deque<proton::message> pending_;
};

// Moves bytes between a client and the core until neither has anything left to say.
inline void pump(TestClient& client, ServerConnection& server, int rounds = 50) {
  for (int i = 0; i < rounds; ++i) {
    bool moved = false;
    std::vector<std::uint8_t> up = client.takeOutput();
    if (!up.empty()) {
      server.receive(up);
      moved = true;
    }
    for (;;) {
      auto out = server.output();
      if (out.empty()) break;
      std::vector<std::uint8_t> copy(out.begin(), out.end());
      server.consumed(copy.size());
      client.feed(copy);
      moved = true;
    }
    if (!moved) return;
  }
}

}  // namespace iothub::amqp::testing
