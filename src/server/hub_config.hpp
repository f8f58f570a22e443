#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace iothub::server {

// Everything iothubd can be told, from flags, a config file or IOTHUB_* variables
// (apps/iothubd parses them; flags win over the config file, which wins over the
// environment).
struct HubConfig {
  std::filesystem::path data_dir = "iothub-data";
  // Where the state lives: empty = SQLite in data_dir; else a PostgreSQL connection string
  // (postgresql://... or key=value), see server/store_location.hpp.
  std::string store;
  // Cluster mode (docs/cluster.md): NATS server URLs (nats://host:port, comma-separated);
  // empty = a single node. Needs a PostgreSQL `store`.
  std::string nats;
  // This node's id in the cluster; empty = the machine's host name.
  std::string node_id;
  // The address other nodes and devices reach this node at (shown in GET /cluster/nodes and
  // put in its server certificate); empty = bind_address, or the host name when that is a
  // wildcard.
  std::string advertise_address;
  std::string host_name = "localhost";
  std::string bind_address = "0.0.0.0";
  std::uint16_t https_port = 443;
  std::uint16_t mqtt_port = 8883;                // device endpoint (MQTT over TLS)
  std::uint16_t amqp_port = 5671;                // service AMQP over TLS: C2D sends and feedback
  std::optional<std::uint16_t> http_port;        // plain HTTP service API, for tests
  std::optional<std::uint16_t> mqtt_plain_port;  // plain MQTT, for tests
  // GET /metrics, /healthz, /readyz over plain HTTP, without authentication, on this port
  // of the bind address (docs/operations.md). Off unless set.
  std::optional<std::uint16_t> metrics_port;
  std::optional<std::filesystem::path> tls_cert;  // PEM chain; both or neither with tls_key
  std::optional<std::filesystem::path> tls_key;
  std::string log_level = "info";
  unsigned io_threads = 0;             // 0 = one per core
  unsigned worker_threads = 8;         // threads that run REST handlers and wait on the store
  unsigned device_worker_threads = 8;  // the same for the device (MQTT) path, kept apart
  // Cloud-to-device store work (sends, locks, completions): each call mostly waits for a
  // group commit, so more threads make bigger commits (docs/benchmarks.md, C2D).
  unsigned c2d_worker_threads = 32;
  // The telemetry log behind the Event Hubs-compatible endpoint (docs/telemetry.md §1, §2).
  // The partition count is fixed when the hub is created: changing it later moves devices
  // to other partitions.
  std::int32_t telemetry_partitions = 4;
  std::chrono::hours telemetry_retention{24};
  std::uint64_t telemetry_partition_max_bytes = 1024ull * 1024 * 1024;
  std::size_t http_body_limit = 1024 * 1024;
  std::chrono::seconds shutdown_grace{10};
  std::size_t job_window = 1000;     // in-flight device operations per running job
  std::size_t max_running_jobs = 8;  // jobs running at once; more wait queued
  // Open connections across all listeners; 0 = derived from the open-file limit (which the
  // hub raises to its hard limit at start), keeping server::kReservedFds for everything else.
  std::size_t max_connections = 0;
  // A new connection's TLS handshake, first HTTP request headers or MQTT CONNECT.
  std::chrono::seconds handshake_timeout{10};
  // A write to a device that makes no progress for this long closes its connection.
  std::chrono::seconds write_timeout{30};
  // One page of a query may take this long; past it the query is refused (400).
  std::chrono::seconds query_timeout{10};
};

}  // namespace iothub::server
