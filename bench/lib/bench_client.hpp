#pragma once
// Small pieces the benchmark clients share (bench/c2d/c2d_sender, bench/telemetry/eh_reader):
// the steady clock they stamp messages with, a blocking TCP socket for their MQTT sides, and
// the $cbs put-token exchange of their AMQP sides (docs/amqp.md §1.4). Header-only: each tool
// is one translation unit.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/scalar.hpp>
#include <string>
#include <vector>

#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"

namespace iothub::bench {

// Steady-clock nanoseconds: CLOCK_MONOTONIC, the same in every process of one machine.
inline std::int64_t nowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// `text` made safe to print between JSON quotes (quotes, backslashes, controls → ').
inline std::string jsonSafe(std::string text) {
  for (char& ch : text) {
    if (ch == '"' || ch == '\\' || static_cast<unsigned char>(ch) < 0x20) ch = '\'';
  }
  return text;
}

// A connected blocking TCP socket with TCP_NODELAY to server:port (IPv4), or -1 with `error`
// set.
inline int connectTcp(const std::string& server, std::uint16_t port, std::string& error) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  const int one = 1;
  if (fd < 0 || ::inet_pton(AF_INET, server.c_str(), &address.sin_addr) != 1 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    error = std::string("connect: ") + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return -1;
  }
  return fd;
}

inline bool writeAll(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// The MQTT side of a benchmark peer over one blocking socket (connectTcp): encode packets
// into `out`, then pump() sends them and hands what the broker answers to a callback.
class MqttPeer {
 public:
  explicit MqttPeer(int fd) : fd_(fd) {}
  ~MqttPeer() { disconnect(); }
  MqttPeer(const MqttPeer&) = delete;
  MqttPeer& operator=(const MqttPeer&) = delete;

  std::string out;  // encoded packets, sent by the next pump()

  // Writes `out`, waits up to `timeout_ms` for bytes and calls `on(packet)` for each packet
  // they complete, until `error` is set (by `on` too). Returns false when nothing arrived in
  // time; sets `error` when a write failed, the broker closed the connection or sent a
  // malformed packet.
  template <class OnPacket>
  bool pump(int timeout_ms, std::string& error, OnPacket on) {
    if (!out.empty()) {
      if (!writeAll(fd_, out)) {
        error = std::string("write: ") + std::strerror(errno);
        return true;
      }
      out.clear();
    }
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) == 0) return false;
    const ssize_t n = ::recv(fd_, in_.data(), in_.size(), 0);
    if (n <= 0) {
      error = n == 0 ? "the broker closed the connection" : std::strerror(errno);
      return true;
    }
    decoder_.feed(std::string_view(in_.data(), static_cast<std::size_t>(n)));
    while (error.empty()) {
      auto next = decoder_.next();
      if (!next) {
        error = "malformed packet from the broker";
        break;
      }
      if (!next->has_value()) break;
      on(**next);
    }
    return true;
  }

  // Sends DISCONNECT and closes the socket (once).
  void disconnect() {
    if (fd_ < 0) return;
    out.clear();
    (void)iothub::mqtt::encode(iothub::mqtt::Disconnect{}, out);
    (void)writeAll(fd_, out);
    ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  iothub::mqtt::Decoder decoder_;
  std::vector<char> in_ = std::vector<char>(256 * 1024);
};

// A $cbs put-token request for `audience` (docs/amqp.md §1.4): message-id `id` (a string),
// the token as an AMQP string body, answered on the link named `reply_to`.
inline proton::message putTokenRequest(const std::string& id, const std::string& audience,
                                       const std::string& token, const std::string& reply_to) {
  proton::message m;
  m.id(proton::message_id(id));
  m.to("$cbs");
  m.reply_to(reply_to);
  m.properties().put("operation", "put-token");
  m.properties().put("type", "servicebus.windows.net:sastoken");
  m.properties().put("name", audience);
  m.body(token);
  return m;
}

// The status-code of a put-token reply (0 when absent or not a number); `description` gets
// its status-description.
inline int putTokenStatus(const proton::message& reply, std::string& description) {
  int status = 0;
  try {
    status = proton::coerce<int>(reply.properties().get("status-code"));
  } catch (const std::exception&) {
  }
  try {
    description = proton::to_string(reply.properties().get("status-description"));
  } catch (const std::exception&) {
  }
  return status;
}

}  // namespace iothub::bench
