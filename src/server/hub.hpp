#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/status.hpp"
#include "server/hub_config.hpp"

namespace iothub::server {

// The composition root: opens the store under the data directory, creates the shared
// access policies and development certificates on first start, and runs the listeners.
class Hub {
 public:
  // Prepares everything and binds every listener, so that startup errors (port in use,
  // unreadable certificate, unwritable or corrupt data directory) surface here as one
  // clear Status.
  static Result<std::unique_ptr<Hub>> create(const HubConfig& config);
  ~Hub();

  // Serves until stop() is called or SIGINT/SIGTERM arrives, then stops accepting, lets
  // in-flight requests finish (up to shutdown_grace), closes the store and returns. Fails
  // when the hub stopped because it lost a database lock it must hold (docs/cluster.md).
  Status run();
  // Thread-safe; may be called from any thread or a signal handler context via run().
  void stop();

  std::uint16_t httpsPort() const;
  std::optional<std::uint16_t> httpPort() const;

 private:
  struct Impl;
  explicit Hub(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The service connection string of a policy of the hub in `data_dir`:
// "HostName=<host>;SharedAccessKeyName=<policy>;SharedAccessKey=<primary key>". The host
// is the one the hub last started with, unless `host_name` overrides it.
// `store` is the hub's --store (empty: the SQLite database in `data_dir`).
// With `event_hubs`, the connection string of the Event Hubs-compatible endpoint instead
// (docs/event-hubs.md §1): "Endpoint=sb://<host>[:<amqp_port>]/;SharedAccessKeyName=<policy>;
// SharedAccessKey=<primary key>;EntityPath=<entity>", the port only when not 5671.
// Errors: NotFound when the directory holds no hub or the policy does not exist; the
// store's when it cannot be opened.
Result<std::string> serviceConnectionString(const std::filesystem::path& data_dir,
                                            const std::string& policy,
                                            const std::optional<std::string>& host_name,
                                            std::string_view store = {}, bool event_hubs = false,
                                            std::uint16_t amqp_port = 5671);

}  // namespace iothub::server
