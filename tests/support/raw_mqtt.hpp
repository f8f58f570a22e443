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

// One raw TCP connection to the hub's plain MQTT port: writes bytes, decodes what the hub
// answers, and tells when the hub closed the connection. Every read has a deadline.
class RawMqttConnection {
 public:
  explicit RawMqttConnection(int port) {
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
  ~RawMqttConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawMqttConnection(const RawMqttConnection&) = delete;
  RawMqttConnection& operator=(const RawMqttConnection&) = delete;

  bool connected() const { return fd_ >= 0; }

  // False when the hub has already closed (EPIPE/ECONNRESET): callers then check closed.
  bool sendBytes(std::string_view bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
      auto n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }
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
      if (closed_ || !receive(deadline)) return std::nullopt;
    }
  }

  // True when the hub closes the connection within `timeout`. Packets the hub sends
  // before closing are kept in received().
  bool waitClosed(std::chrono::milliseconds timeout = 10s) {
    auto deadline = SteadyClock::now() + timeout;
    while (!closed_) {
      if (!receive(deadline)) return closed_;
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

  bool closed() const { return closed_; }
  bool malformedAnswer() const { return malformed_answer_; }
  const std::vector<mqtt::Packet>& received() const { return received_; }

 private:
  // Reads one chunk before `deadline`. False on timeout or close (closed_ set).
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
    decoder_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
    return true;
  }

  int fd_ = -1;
  mqtt::Decoder decoder_;
  bool closed_ = false;
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
