#pragma once
// Small pieces the benchmark clients share (bench/c2d/c2d_sender, bench/telemetry/eh_reader):
// the steady clock they stamp messages with, a blocking TCP socket for their MQTT sides, and
// the $cbs put-token exchange of their AMQP sides (docs/amqp.md §1.4). Header-only: each tool
// is one translation unit.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

namespace iothub::bench {

// Steady-clock nanoseconds: CLOCK_MONOTONIC, the same in every process of one machine.
inline std::int64_t nowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

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
