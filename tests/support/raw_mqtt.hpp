#pragma once

// Raw MQTT over plain TCP for integration tests: credentials as the Node SDK builds them and
// a connection that writes bytes and decodes what the hub answers, every read with a
// deadline.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/sas_token.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"

namespace iothub::testing {

using namespace std::chrono_literals;

using SteadyClock = std::chrono::steady_clock;

// The hub's default HostName; it names the hub in every credential.
inline constexpr std::string_view kHostName = "localhost";

inline std::string mqttUserName(std::string_view device_id) {
  return std::string(kHostName) + "/" + std::string(device_id) + "/?api-version=2021-04-12";
}

// A device SAS token as the Node SDK signs it, valid for an hour.
inline std::string deviceToken(std::string_view device_id, std::string_view key) {
  auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch() + 1h)
                    .count();
  auto token =
      auth::buildSasToken(auth::deviceResource(kHostName, device_id), key, std::nullopt, expiry);
  EXPECT_TRUE(token.isOk()) << token.status().toString();
  return token.isOk() ? *token : "";
}

inline mqtt::Connect deviceConnect(std::string_view device_id, std::string password) {
  mqtt::Connect connect;
  connect.client_id = std::string(device_id);
  connect.clean_session = false;
  connect.keep_alive = 60;
  connect.user_name = mqttUserName(device_id);
  connect.password = std::move(password);
  return connect;
}

inline std::string encoded(const mqtt::Packet& packet) {
  std::string out;
  Status s = mqtt::encode(packet, out);
  EXPECT_TRUE(s.isOk()) << s.toString();
  return out;
}

// One plain TCP connection to a hub port: writes bytes, collects what comes back, and tells
// when the peer closed. Every wait has a deadline.
class RawTcpConnection {
 public:
  explicit RawTcpConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawTcpConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawTcpConnection(const RawTcpConnection&) = delete;
  RawTcpConnection& operator=(const RawTcpConnection&) = delete;

  bool connected() const { return fd_ >= 0; }

  // False when the peer has already closed (EPIPE/ECONNRESET): callers then check closed.
  bool sendBytes(std::string_view bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Reads one chunk before `deadline`, appending it to received(). False on timeout or
  // close (closed() set).
  bool receive(SteadyClock::time_point deadline) {
    if (closed_) return false;
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    received_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  // True when the peer closes within `timeout`; what it sent before is in received().
  bool waitClosed(std::chrono::milliseconds timeout) {
    auto deadline = SteadyClock::now() + timeout;
    while (!closed_ && SteadyClock::now() < deadline) receive(deadline);
    return closed_;
  }

  bool closed() const { return closed_; }
  const std::string& received() const { return received_; }
  // Hands over the bytes received so far.
  std::string takeReceived() { return std::exchange(received_, {}); }

 private:
  int fd_ = -1;
  bool closed_ = false;
  std::string received_;
};

// A raw TCP connection to the hub's plain MQTT port that decodes what the hub answers.
class RawMqttConnection {
 public:
  explicit RawMqttConnection(int port) : tcp_(port) {}

  bool connected() const { return tcp_.connected(); }
  bool sendBytes(std::string_view bytes) { return tcp_.sendBytes(bytes); }
  bool sendPacket(const mqtt::Packet& packet) { return sendBytes(encoded(packet)); }

  // The next packet from the hub within `timeout`; nullopt on timeout, close or bytes that
  // do not decode (closed() / malformedAnswer() tell which).
  std::optional<mqtt::Packet> read(std::chrono::milliseconds timeout = 10s) {
    auto deadline = SteadyClock::now() + timeout;
    for (;;) {
      auto next = decoder_.next();
      if (!next) {
        malformed_answer_ = true;
        return std::nullopt;
      }
      if (*next) return std::move(**next);
      if (!receive(deadline)) return std::nullopt;
    }
  }

  // True when the hub closes the connection within `timeout`. Packets the hub sends
  // before closing are kept in received().
  bool waitClosed(std::chrono::milliseconds timeout = 10s) {
    auto deadline = SteadyClock::now() + timeout;
    while (!tcp_.closed()) {
      if (!receive(deadline)) return tcp_.closed();
      for (;;) {
        auto next = decoder_.next();
        if (!next) {
          malformed_answer_ = true;
          break;
        }
        if (!*next) break;
        received_.push_back(std::move(**next));
      }
    }
    return true;
  }

  bool closed() const { return tcp_.closed(); }
  bool malformedAnswer() const { return malformed_answer_; }
  const std::vector<mqtt::Packet>& received() const { return received_; }

 private:
  bool receive(SteadyClock::time_point deadline) {
    if (!tcp_.receive(deadline)) return false;
    decoder_.feed(tcp_.takeReceived());
    return true;
  }

  RawTcpConnection tcp_;
  mqtt::Decoder decoder_;
  bool malformed_answer_ = false;
  std::vector<mqtt::Packet> received_;
};

inline std::optional<mqtt::ConnectReturnCode> connackCode(
    const std::optional<mqtt::Packet>& packet) {
  if (!packet) return std::nullopt;
  if (auto* connack = std::get_if<mqtt::ConnAck>(&*packet)) return connack->return_code;
  return std::nullopt;
}

}  // namespace iothub::testing
