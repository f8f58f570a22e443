#pragma once

// A throw-away nats-server for tests: started on 127.0.0.1 with kernel-chosen ports, in its
// own temporary directory, with helpers for the faults cluster tests need (kill, freeze,
// restart on the same ports). Waits are polls with deadlines, never fixed sleeps.
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::testing {

class NatsServer {
 public:
  struct Options {
    std::string name;                 // server name (-n); default "nats-test-<n>"
    bool cluster = false;             // listen for routes from other servers
    std::vector<std::string> routes;  // cluster URLs of servers to connect to (implies cluster)
    std::string cluster_name = "iothub-test";
  };

  NatsServer() : NatsServer(Options()) {}
  explicit NatsServer(Options options);
  // Kills the server if it still runs and removes its directory.
  ~NatsServer();
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  // Starts the server and waits (up to 10 s) until it answers on its client port and its
  // monitor reports healthy. The first start lets the kernel choose the ports; later starts
  // (restart()) reuse them. False with the reason in error() otherwise.
  bool start();
  const std::string& error() const { return error_; }

  std::string url() const;         // nats://127.0.0.1:<client port>
  std::string clusterUrl() const;  // nats://127.0.0.1:<route port>; empty without a cluster
  int port() const { return port_; }
  int monitorPort() const { return monitor_port_; }
  const std::string& name() const { return options_.name; }

  bool running();
  // SIGTERM (after SIGCONT when frozen) and waits for the exit; SIGKILL if it lingers.
  bool stop();
  // SIGKILL, as a crash, and waits for the exit.
  bool kill();
  // SIGSTOP / SIGCONT: the kernel still accepts connections but nothing answers.
  bool freeze();
  bool thaw();
  // Stops the server if it runs, then starts it again on the same ports.
  bool restart();

  // The body of GET <path> from the HTTP monitor ("/varz", "/routez", ...); nullopt when it
  // does not answer within 2 s.
  std::optional<std::string> monitor(std::string_view path) const;
  // num_routes from /routez; -1 when the monitor does not answer.
  int routeCount() const;
  // What the server logged (its stderr) since its last start.
  std::string log() const;

  // Where nats-server is installed (PATH, then /usr/sbin and /usr/local/bin).
  static std::optional<std::filesystem::path> findBinary();

 private:
  bool readPortsFile();
  bool serving() const;

  Options options_;
  TempDir dir_;  // declared before process_: the process dies before its directory goes
  std::unique_ptr<Process> process_;
  std::string error_;
  int port_ = 0;
  int monitor_port_ = 0;
  int cluster_port_ = 0;
};

// Starts `count` clustered servers (each routed to the first) and waits until every server
// has a route to every other. Empty, with the reason in `error`, on failure.
std::vector<std::unique_ptr<NatsServer>> startNatsCluster(int count, std::string& error);

// A TCP connection to 127.0.0.1:`port` succeeds within `timeout`.
bool tcpConnects(int port, std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

}  // namespace iothub::testing
