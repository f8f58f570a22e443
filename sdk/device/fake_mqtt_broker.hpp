#pragma once

// A scriptable MQTT 3.1.1 broker for DeviceClient tests, built on the project's codec. It
// listens on 127.0.0.1 port 0 (plain TCP, or TLS with a given certificate) and runs on its
// own I/O thread; the test thread drives each accepted connection: it reads the packets the
// client sent (with deadlines) and sends whatever answer the test wants. The only thing it
// does by itself is answer PINGREQ with PINGRESP (can be switched off).

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "mqtt/packet.hpp"

namespace iothub::device::testing {

inline constexpr std::chrono::milliseconds kDefaultWait{5000};

struct BrokerTls {
  std::string cert_pem;
  std::string key_pem;
};

// One accepted client connection. Thread-safe.
class BrokerConnection {
 public:
  class State;
  explicit BrokerConnection(std::shared_ptr<State> state);

  // The next packet the client sent, or nullopt when none arrived within `wait` (or the
  // connection closed and every packet was taken). PINGREQs are not returned.
  std::optional<mqtt::Packet> next(std::chrono::milliseconds wait = kDefaultWait);

  // next(), required to be a P: nullopt (and a recorded test failure naming what came
  // instead) otherwise.
  template <class P>
  std::optional<P> expect(std::chrono::milliseconds wait = kDefaultWait);

  void send(const mqtt::Packet& packet);
  // Closes the socket at once (the client sees the connection drop).
  void drop();
  // True once the client closed its end (EOF or error on read) within `wait`.
  bool waitClosed(std::chrono::milliseconds wait = kDefaultWait);
  // Number of PINGREQs received; waitForPings waits until at least `count` arrived.
  int pings() const;
  bool waitForPings(int count, std::chrono::milliseconds wait = kDefaultWait);
  // Answer PINGREQs (default) or let them go unanswered.
  void setAnswerPings(bool answer);
  // The TLS SNI the client sent ("" for none or plain TCP).
  std::string serverName() const;

 private:
  std::shared_ptr<State> state_;
};

class FakeMqttBroker {
 public:
  explicit FakeMqttBroker(std::optional<BrokerTls> tls = std::nullopt);
  ~FakeMqttBroker();
  FakeMqttBroker(const FakeMqttBroker&) = delete;
  FakeMqttBroker& operator=(const FakeMqttBroker&) = delete;

  std::uint16_t port() const;
  // The next accepted connection not returned before (TLS handshake done), or nullptr when
  // none arrives within `wait`.
  std::shared_ptr<BrokerConnection> accept(std::chrono::milliseconds wait = kDefaultWait);
  // Connections accepted so far (including ones whose TLS handshake failed).
  int acceptedCount() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

template <class P>
std::optional<P> BrokerConnection::expect(std::chrono::milliseconds wait) {
  auto packet = next(wait);
  if (!packet) {
    ADD_FAILURE() << "no " << mqtt::packetTypeName(P::kType) << " within " << wait.count() << " ms";
    return std::nullopt;
  }
  if (auto* wanted = std::get_if<P>(&*packet)) return std::move(*wanted);
  ADD_FAILURE() << "expected " << mqtt::packetTypeName(P::kType) << ", got "
                << mqtt::packetTypeName(mqtt::packetType(*packet));
  return std::nullopt;
}

}  // namespace iothub::device::testing
