// iothubd: the hub. A thin main: parse flags, environment and config file into a
// HubConfig, then hand over to iothub::server::Hub.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "common/log.hpp"
#include "server/hub.hpp"

namespace {

int fail(const std::string& message) {
  std::fprintf(stderr, "iothubd: %s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using iothub::server::HubConfig;
  HubConfig config;
  CLI::App app{"iothubd: a self-hosted hub speaking Azure IoT Hub's protocols"};
  app.set_config("--config", "",
                 "Read options from a TOML/INI file (keys are the long option names)");
  app.option_defaults()->always_capture_default();

  std::string data_dir = config.data_dir.string();
  std::uint16_t http_port = 0, mqtt_plain_port = 0, metrics_port = 0;
  std::string tls_cert, tls_key;
  app.add_option("--data-dir", data_dir, "Where the hub keeps its database and certificates")
      ->envname("IOTHUB_DATA_DIR");
  app.add_option("--store", config.store,
                 "PostgreSQL connection string (postgresql://user@host/db or host=... "
                 "dbname=...); default: SQLite in --data-dir")
      ->envname("IOTHUB_STORE");
  app.add_option("--nats", config.nats,
                 "Cluster mode: NATS server URLs (nats://host:4222[,nats://...]); needs "
                 "--store postgresql://...")
      ->envname("IOTHUB_NATS");
  app.add_option("--node-id", config.node_id,
                 "Cluster mode: this node's id, unique in the cluster (default: the host name)")
      ->envname("IOTHUB_NODE_ID");
  app.add_option("--advertise-address", config.advertise_address,
                 "Cluster mode: the address devices and other nodes reach this node at "
                 "(default: --bind, or the host name when it is a wildcard)")
      ->envname("IOTHUB_ADVERTISE_ADDRESS");
  app.add_option("--hostname", config.host_name,
                 "The hub's host name (HostName in connection strings)")
      ->envname("IOTHUB_HOSTNAME");
  app.add_option("--bind", config.bind_address, "Address the listeners bind to")
      ->envname("IOTHUB_BIND");
  app.add_option("--https-port", config.https_port,
                 "HTTPS service API (and MQTT over WebSocket) port")
      ->envname("IOTHUB_HTTPS_PORT");
  app.add_option("--mqtt-port", config.mqtt_port, "MQTT over TLS port for devices")
      ->envname("IOTHUB_MQTT_PORT");
  app.add_option("--amqp-port", config.amqp_port,
                 "AMQP over TLS port for services (cloud-to-device messages, feedback)")
      ->envname("IOTHUB_AMQP_PORT");
  auto* http_opt =
      app.add_option("--http-port", http_port, "Also serve the service API over plain HTTP (tests)")
          ->envname("IOTHUB_HTTP_PORT");
  auto* mqtt_plain_opt =
      app.add_option("--mqtt-plain-port", mqtt_plain_port, "Also accept plain MQTT (tests)")
          ->envname("IOTHUB_MQTT_PLAIN_PORT");
  auto* metrics_opt =
      app.add_option("--metrics-port", metrics_port,
                     "Serve GET /metrics (Prometheus), /healthz and /readyz over plain HTTP on "
                     "this port (off unless given; 0 = any free port)")
          ->envname("IOTHUB_METRICS_PORT");
  auto* cert_opt = app.add_option("--tls-cert", tls_cert,
                                  "Server certificate chain (PEM) instead of the generated one")
                       ->envname("IOTHUB_TLS_CERT");
  auto* key_opt = app.add_option("--tls-key", tls_key, "Private key (PEM) of --tls-cert")
                      ->envname("IOTHUB_TLS_KEY");
  cert_opt->needs(key_opt);
  key_opt->needs(cert_opt);
  app.add_option("--log-level", config.log_level, "trace, debug, info, warn, error")
      ->envname("IOTHUB_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  std::string log_format = "text";
  app.add_option("--log-format", log_format,
                 "text (the default), or json: one object per line (docs/operations.md)")
      ->envname("IOTHUB_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}));
  app.add_option("--io-threads", config.io_threads, "I/O threads (0 = one per core)")
      ->envname("IOTHUB_IO_THREADS");
  app.add_option("--worker-threads", config.worker_threads,
                 "Threads that run REST requests against the store")
      ->envname("IOTHUB_WORKER_THREADS")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--job-window", config.job_window, "In-flight device operations per running job")
      ->envname("IOTHUB_JOB_WINDOW")
      ->check(CLI::Range(std::size_t{1}, std::size_t{100000}));
  app.add_option("--max-running-jobs", config.max_running_jobs,
                 "Jobs running at once (more wait, queued)")
      ->envname("IOTHUB_MAX_RUNNING_JOBS")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1000}));
  app.add_option("--max-connections", config.max_connections,
                 "Open connections across all listeners; more are refused (0 = the open-file "
                 "limit less 256)")
      ->envname("IOTHUB_MAX_CONNECTIONS");
  app.add_option("--device-worker-threads", config.device_worker_threads,
                 "Threads that run device (MQTT) requests against the store")
      ->envname("IOTHUB_DEVICE_WORKER_THREADS")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--c2d-worker-threads", config.c2d_worker_threads,
                 "Threads that run cloud-to-device sends, locks and completions against the store")
      ->envname("IOTHUB_C2D_WORKER_THREADS")
      ->check(CLI::Range(1u, 256u));
  app.add_option("--telemetry-partitions", config.telemetry_partitions,
                 "Partitions of the telemetry log (the Event Hubs endpoint); fixed once the hub "
                 "holds telemetry")
      ->envname("IOTHUB_TELEMETRY_PARTITIONS")
      ->check(CLI::Range(1, 128));
  std::int64_t telemetry_retention = config.telemetry_retention.count();
  app.add_option("--telemetry-retention-hours", telemetry_retention,
                 "Hours telemetry stays readable")
      ->envname("IOTHUB_TELEMETRY_RETENTION_HOURS")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{24 * 90}));
  std::uint64_t telemetry_partition_mb = config.telemetry_partition_max_bytes / (1024 * 1024);
  app.add_option("--telemetry-partition-max-mb", telemetry_partition_mb,
                 "Largest size of one telemetry partition (MiB); the oldest messages go first")
      ->envname("IOTHUB_TELEMETRY_PARTITION_MAX_MB")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1024} * 1024));
  std::int64_t query_timeout = config.query_timeout.count();
  app.add_option("--query-timeout", query_timeout,
                 "Seconds one page of a query may take before it is refused")
      ->envname("IOTHUB_QUERY_TIMEOUT")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3600}));
  std::int64_t handshake_timeout = config.handshake_timeout.count();
  std::int64_t write_timeout = config.write_timeout.count();
  app.add_option("--handshake-timeout", handshake_timeout,
                 "Seconds a new connection has for its TLS handshake and its first request or "
                 "MQTT CONNECT")
      ->envname("IOTHUB_HANDSHAKE_TIMEOUT")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3600}));
  app.add_option("--write-timeout", write_timeout,
                 "Seconds a write to a device may make no progress before it is disconnected")
      ->envname("IOTHUB_WRITE_TIMEOUT")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{3600}));

  std::string policy = "iothubowner";
  std::string cs_host;
  auto* cs = app.add_subcommand("connection-string",
                                "Print a service connection string of the hub in --data-dir");
  cs->add_option("--data-dir", data_dir, "The hub's data directory")->envname("IOTHUB_DATA_DIR");
  cs->add_option("--store", config.store, "The hub's --store, if it has one")
      ->envname("IOTHUB_STORE");
  cs->add_option("--policy", policy,
                 "Shared access policy (iothubowner, service, registryRead, ...)");
  cs->add_option("--hostname", cs_host, "Host name to put in the string (default: the hub's)");
  bool cs_event_hubs = false;
  std::uint16_t cs_amqp_port = 5671;
  cs->add_flag("--event-hubs", cs_event_hubs,
               "Print the Event Hubs-compatible endpoint's connection string (for "
               "@azure/event-hubs and other Event Hubs clients) instead");
  cs->add_option("--amqp-port", cs_amqp_port,
                 "With --event-hubs: the hub's --amqp-port, when not 5671");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help, a bad flag, an unreadable or corrupt config file: one clear message.
    return app.exit(e);
  }

  if (cs->parsed()) {
    auto s = iothub::server::serviceConnectionString(
        data_dir, policy, cs_host.empty() ? std::nullopt : std::optional<std::string>(cs_host),
        config.store, cs_event_hubs, cs_amqp_port);
    if (!s) return fail(s.status().message());
    std::cout << *s << "\n";
    return 0;
  }

  config.data_dir = data_dir;
  config.telemetry_retention = std::chrono::hours(telemetry_retention);
  config.telemetry_partition_max_bytes = telemetry_partition_mb * 1024 * 1024;
  config.handshake_timeout = std::chrono::seconds(handshake_timeout);
  config.write_timeout = std::chrono::seconds(write_timeout);
  config.query_timeout = std::chrono::seconds(query_timeout);
  if (*http_opt) config.http_port = http_port;
  if (*metrics_opt) config.metrics_port = metrics_port;
  if (*mqtt_plain_opt) config.mqtt_plain_port = mqtt_plain_port;
  if (*cert_opt) config.tls_cert = tls_cert;
  if (*key_opt) config.tls_key = tls_key;

  auto logger = spdlog::stderr_color_mt("iothubd");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  iothub::log::setFormat(log_format);

  auto hub = iothub::server::Hub::create(config);
  if (!hub) return fail(hub.status().message());
  if (iothub::Status ran = (*hub)->run(); !ran) return fail(ran.message());
  return 0;
}
