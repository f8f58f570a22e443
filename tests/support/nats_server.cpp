#include "tests/support/nats_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <cerrno>
#include <cstdlib>

namespace iothub::testing {
namespace {

constexpr auto kStartTimeout = std::chrono::seconds(10);

// A connected TCP socket to 127.0.0.1:port, or -1.
int connectLoopback(int port, std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd pfd{fd, POLLOUT, 0};
    int error = 0;
    socklen_t len = sizeof error;
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) == 1 &&
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0) {
      rc = 0;
    }
  }
  if (rc != 0) {
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

std::optional<std::string> httpGet(int port, std::string_view path,
                                   std::chrono::milliseconds timeout) {
  int fd = connectLoopback(port, timeout);
  if (fd < 0) return std::nullopt;
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string request = "GET " + std::string(path) + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  std::string response;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(request.size())) {
    char buffer[4096];
    while (true) {
      ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) {
        if (n < 0) response.clear();  // timed out: a partial answer is no answer
        break;
      }
      response.append(buffer, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  auto body = response.find("\r\n\r\n");
  if (!response.starts_with("HTTP/1.") || body == std::string::npos) return std::nullopt;
  if (response.compare(9, 3, "200") != 0) return std::nullopt;
  return response.substr(body + 4);
}

// The port of the first URL under `key` in a nats-server ports file
// ({"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"],...}).
int portOf(const boost::json::object& ports, std::string_view key) {
  auto it = ports.find(key);
  if (it == ports.end() || !it->value().is_array() || it->value().as_array().empty()) return 0;
  const auto& url = it->value().as_array().front();
  if (!url.is_string()) return 0;
  std::string_view text = url.as_string();
  return std::atoi(std::string(text.substr(text.rfind(':') + 1)).c_str());
}

}  // namespace

bool tcpConnects(int port, std::chrono::milliseconds timeout) {
  int fd = connectLoopback(port, timeout);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

NatsServer::NatsServer(Options options) : options_(std::move(options)), dir_("iothub-nats") {
  static std::atomic<int> counter{0};
  if (options_.name.empty()) options_.name = "nats-test-" + std::to_string(++counter);
  if (!options_.routes.empty()) options_.cluster = true;
}

NatsServer::~NatsServer() {
  if (process_ && process_->running()) {
    process_->signal(SIGKILL);  // works on a stopped process too
    process_->wait(std::chrono::seconds(10));
  }
}

std::optional<std::filesystem::path> NatsServer::findBinary() {
  std::vector<std::filesystem::path> candidates;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string_view rest = path;
    while (!rest.empty()) {
      auto colon = rest.find(':');
      std::string_view dir = rest.substr(0, colon);
      if (!dir.empty()) candidates.push_back(std::filesystem::path(dir) / "nats-server");
      rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
  }
  candidates.emplace_back("/usr/sbin/nats-server");
  candidates.emplace_back("/usr/local/bin/nats-server");
  for (const auto& candidate : candidates) {
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

bool NatsServer::start() {
  error_.clear();
  auto binary = findBinary();
  if (!binary) {
    error_ = "nats-server not found on PATH or in /usr/sbin (scripts/install-deps installs it)";
    return false;
  }
  // The first start takes kernel-chosen ports (-1) and reads them back from the ports file;
  // a restart asks for the same ones again.
  auto port = [](int known) { return known > 0 ? std::to_string(known) : std::string("-1"); };
  std::vector<std::string> argv{binary->string(),    "-a",
                                "127.0.0.1",         "-p",
                                port(port_),         "-m",
                                port(monitor_port_), "-n",
                                options_.name,       "--ports_file_dir",
                                dir_.path().string()};
  if (options_.cluster) {
    argv.insert(argv.end(), {"--cluster", "nats://127.0.0.1:" + port(cluster_port_),
                             "--cluster_name", options_.cluster_name});
    if (!options_.routes.empty()) {
      std::string routes;
      for (const auto& route : options_.routes) routes += (routes.empty() ? "" : ",") + route;
      argv.insert(argv.end(), {"--routes", routes});
    }
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    if (entry.path().extension() == ".ports") std::filesystem::remove(entry.path());
  }
  process_ = std::make_unique<Process>(argv, dir_.path());
  if (!process_->started()) {
    error_ = "could not start " + binary->string();
    return false;
  }
  bool up = waitFor([&] { return !process_->running() || (readPortsFile() && serving()); },
                    kStartTimeout);
  if (up && process_->running()) return true;
  error_ = std::string(process_->running() ? "nats-server did not become healthy in time"
                                           : "nats-server exited") +
           "; its log:\n" + log();
  return false;
}

bool NatsServer::readPortsFile() {
  auto file = dir_.path() / ("nats-server_" + std::to_string(process_->pid()) + ".ports");
  std::string text = readFile(file);
  if (text.empty()) return false;
  boost::system::error_code ec;
  auto doc = boost::json::parse(text, ec);
  if (ec || !doc.is_object()) return false;
  port_ = portOf(doc.as_object(), "nats");
  monitor_port_ = portOf(doc.as_object(), "monitoring");
  if (options_.cluster) cluster_port_ = portOf(doc.as_object(), "cluster");
  return port_ > 0 && monitor_port_ > 0 && (!options_.cluster || cluster_port_ > 0);
}

bool NatsServer::serving() const {
  if (!tcpConnects(port_)) return false;
  auto health = monitor("/healthz");
  return health && health->find("\"ok\"") != std::string::npos;
}

std::string NatsServer::url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

std::string NatsServer::clusterUrl() const {
  return cluster_port_ > 0 ? "nats://127.0.0.1:" + std::to_string(cluster_port_) : std::string();
}

bool NatsServer::running() { return process_ && process_->running(); }

bool NatsServer::stop() {
  if (!running()) return true;
  process_->signal(SIGCONT);
  process_->signal(SIGTERM);
  if (process_->wait(std::chrono::seconds(10))) return true;
  return kill();
}

bool NatsServer::kill() {
  if (!running()) return true;
  process_->signal(SIGKILL);
  return process_->wait(std::chrono::seconds(10)).has_value();
}

bool NatsServer::freeze() {
  if (!running()) return false;
  process_->signal(SIGSTOP);
  return true;
}

bool NatsServer::thaw() {
  if (!running()) return false;
  process_->signal(SIGCONT);
  return true;
}

bool NatsServer::restart() { return stop() && start(); }

std::optional<std::string> NatsServer::monitor(std::string_view path) const {
  if (monitor_port_ <= 0) return std::nullopt;
  return httpGet(monitor_port_, path, std::chrono::seconds(2));
}

int NatsServer::routeCount() const {
  auto body = monitor("/routez");
  if (!body) return -1;
  boost::system::error_code ec;
  auto doc = boost::json::parse(*body, ec);
  if (ec || !doc.is_object()) return -1;
  const auto* routes = doc.as_object().if_contains("num_routes");
  return routes != nullptr && routes->is_int64() ? static_cast<int>(routes->as_int64()) : -1;
}

std::string NatsServer::log() const { return process_ ? process_->err() + process_->out() : ""; }

std::vector<std::unique_ptr<NatsServer>> startNatsCluster(int count, std::string& error) {
  std::vector<std::unique_ptr<NatsServer>> servers;
  for (int i = 0; i < count; ++i) {
    NatsServer::Options options;
    options.cluster = true;
    if (i > 0) options.routes = {servers.front()->clusterUrl()};
    servers.push_back(std::make_unique<NatsServer>(options));
    if (!servers.back()->start()) {
      error = "server " + std::to_string(i) + ": " + servers.back()->error();
      return {};
    }
  }
  bool meshed = waitFor(
      [&] {
        for (auto& server : servers) {
          if (server->routeCount() != count - 1) return false;
        }
        return true;
      },
      kStartTimeout);
  if (!meshed) {
    error = "the " + std::to_string(count) + " nats-servers did not form a full mesh in time";
    return {};
  }
  return servers;
}

}  // namespace iothub::testing
