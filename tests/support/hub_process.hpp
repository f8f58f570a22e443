#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.hpp"

namespace iothub::testing {

// A real iothubd on loopback with free ports (port 0), for integration tests.
// The hub writes DATA/iothubd.json once every listener is bound; start() waits for it.
class HubProcess {
 public:
  HubProcess(std::string binary, std::filesystem::path data_dir,
             std::vector<std::string> extra_args = {})
      : binary_(std::move(binary)),
        data_dir_(std::move(data_dir)),
        extra_args_(std::move(extra_args)) {}

  // Starts the hub and waits until it serves. False (with the hub's stderr in
  // startupError()) when it exits or does not come up in time.
  bool start() {
    std::filesystem::remove(data_dir_ / "iothubd.json");
    std::vector<std::string> argv{binary_,       "--data-dir",  data_dir_.string(),
                                  "--bind",      "127.0.0.1",   "--https-port",
                                  "0",           "--http-port", "0",
                                  "--mqtt-port", "0",           "--mqtt-plain-port",
                                  "0",           "--amqp-port", "0",
                                  "--log-level", "debug"};
    argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
    std::filesystem::create_directories(data_dir_);
    process_ = std::make_unique<Process>(argv, data_dir_.parent_path());
    bool up = waitFor([&] {
      if (!process_->running()) return true;
      auto text = readFile(data_dir_ / "iothubd.json");
      if (text.empty()) return false;
      auto doc = boost::json::parse(text).as_object();
      if (doc.at("pid").as_int64() != process_->pid()) return false;
      https_port_ = static_cast<int>(doc.at("httpsPort").as_int64());
      http_port_ = static_cast<int>(doc.at("httpPort").as_int64());
      mqtt_port_ = static_cast<int>(doc.at("mqttPort").as_int64());
      mqtt_plain_port_ = static_cast<int>(doc.at("mqttPlainPort").as_int64());
      metrics_port_ =
          doc.contains("metricsPort") ? static_cast<int>(doc.at("metricsPort").as_int64()) : 0;
      return true;
    });
    return up && process_->running();
  }

  // SIGTERM and the exit code (nullopt if it did not exit in time).
  std::optional<int> stop() {
    process_->signal(SIGTERM);
    return process_->wait(std::chrono::seconds(30));
  }
  void kill9() {
    process_->signal(SIGKILL);
    process_->wait();
  }

  std::string startupError() const { return process_ ? process_->err() : ""; }
  // The iothubowner connection string, as `iothubd connection-string` prints it ("" and a
  // test failure when that fails).
  std::string serviceConnectionString() const {
    std::vector<std::string> argv{binary_, "connection-string", "--data-dir", data_dir_.string()};
    auto store = std::find(extra_args_.begin(), extra_args_.end(), "--store");
    if (store != extra_args_.end() && store + 1 != extra_args_.end()) {
      argv.push_back("--store");
      argv.push_back(*(store + 1));
    }
    auto r = runCommand(argv, data_dir_.parent_path());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
    return r.out;
  }
  Process& process() { return *process_; }
  int httpsPort() const { return https_port_; }
  int httpPort() const { return http_port_; }
  int mqttPort() const { return mqtt_port_; }
  int mqttPlainPort() const { return mqtt_plain_port_; }
  int metricsPort() const { return metrics_port_; }  // 0 without --metrics-port
  std::string httpsEndpoint() const { return "https://127.0.0.1:" + std::to_string(https_port_); }
  std::string httpEndpoint() const { return "http://127.0.0.1:" + std::to_string(http_port_); }
  std::filesystem::path caFile() const { return data_dir_ / "tls" / "ca.pem"; }
  const std::filesystem::path& dataDir() const { return data_dir_; }

 private:
  std::string binary_;
  std::filesystem::path data_dir_;
  std::vector<std::string> extra_args_;
  std::unique_ptr<Process> process_;
  int https_port_ = 0;
  int http_port_ = 0;
  int mqtt_port_ = 0;
  int mqtt_plain_port_ = 0;
  int metrics_port_ = 0;
};

// A TCP connection to 127.0.0.1:port whose reads time out after `read_timeout`; -1 when it
// cannot connect.
inline int connectLoopback(int port, std::chrono::seconds read_timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{static_cast<time_t>(read_timeout.count()), 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends raw bytes to 127.0.0.1:port and returns everything the server answers until it closes.
inline std::string rawExchange(int port, const std::string& bytes) {
  int fd = connectLoopback(port, std::chrono::seconds(10));
  if (fd < 0) return "";
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    auto n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string out;
  char buf[4096];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

// GET /metrics on the hub's metrics port (started with --metrics-port).
inline std::string scrapeMetrics(int metrics_port) {
  return rawExchange(metrics_port,
                     "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
}

}  // namespace iothub::testing
