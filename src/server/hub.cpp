#include "server/hub.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <csignal>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "auth/connection_string.hpp"
#include "auth/policy.hpp"
#include "c2d/c2d_delivery.hpp"
#include "c2d/cloud_to_device.hpp"
#include "common/json.hpp"
#include "common/time_format.hpp"
#include "console/console_assets.hpp"
#include "device_api/device_endpoint.hpp"
#include "device_api/device_http.hpp"
#include "index/indexed_store.hpp"
#include "index/query_runner.hpp"
#include "index/twin_index.hpp"
#include "index/twin_index_feed.hpp"
#include "jobs/jobs_engine.hpp"
#include "methods/method_invoker.hpp"
#include "metrics/hub_metrics.hpp"
#include "mqtt/azure_topics.hpp"
#include "registry/device_registry.hpp"
#include "routing/cluster_router.hpp"
#include "routing/connection_registry.hpp"
#include "routing/nats/nats_bus.hpp"
#include "server/amqp_service.hpp"
#include "server/cluster_membership.hpp"
#include "server/data_dir.hpp"
#include "server/event_hubs.hpp"
#include "server/store_location.hpp"
#include "server/tls_bootstrap.hpp"
#include "service_api/error_response.hpp"
#include "service_api/route_table.hpp"
#include "service_api/service_api.hpp"
#include "telemetry/telemetry_log.hpp"
#include "transport/amqp_server.hpp"
#include "transport/connection_limiter.hpp"
#include "transport/http_server.hpp"
#include "transport/mqtt_server.hpp"
#include "transport/scheduler.hpp"
#include "twin/twin_service.hpp"

namespace iothub::server {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

constexpr const char* kHubFile = "hub.json";          // persistent facts: the host name
constexpr const char* kRuntimeFile = "iothubd.json";  // while running: pid and bound ports
// How long a query (or a job's device selection) waits to catch up with other nodes' writes.
constexpr std::chrono::seconds kFeedCatchUpTimeout{5};

Status writeFileAtomically(const fs::path& path, const std::string& content) {
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    out.flush();
    if (!out) return {ErrorCode::ServerError, "cannot write " + tmp.string()};
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return {ErrorCode::ServerError, "cannot write " + path.string() + ": " + ec.message()};
  return Status::ok();
}

Result<std::string> readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status(ErrorCode::NotFound, "cannot read " + path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<std::unique_ptr<asio::ssl::context>> makeTlsContext(const fs::path& cert,
                                                           const fs::path& key) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  boost::system::error_code ec;
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use,
                   ec);
  ctx->use_certificate_chain_file(cert.string(), ec);
  if (ec) {
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot use TLS certificate " + cert.string() + ": " + ec.message());
  }
  ctx->use_private_key_file(key.string(), asio::ssl::context::pem, ec);
  if (ec) {
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot use TLS key " + key.string() + ": " + ec.message());
  }
  return ctx;
}

// Pushes desired-property changes to the device's connection, if it is subscribed
// (docs/protocol.md §3.7: only connected, subscribed devices get notifications).
// In a cluster, through the router to whatever node holds the device.
class DesiredPusher final : public twin::DesiredChangeListener {
 public:
  explicit DesiredPusher(routing::ConnectionRegistry& connections) : connections_(connections) {}
  void setRouter(routing::ClusterRouter* router) { router_ = router; }
  void onDesiredChanged(const twin::DesiredChange& change) override {
    std::string topic = mqtt::azure::desiredPatchTopic(change.desired_version);
    if (router_ != nullptr) {
      router_->pushDesired(change.device_id, std::move(topic), json::serialize(change.patch));
      return;
    }
    auto link = connections_.find(change.device_id);
    if (!link) return;
    link->publish(std::move(topic), json::serialize(change.patch));
  }

 private:
  routing::ConnectionRegistry& connections_;
  routing::ClusterRouter* router_ = nullptr;
};

// What a job does to a device, with the hub's own method invoker and twin service.
class JobOperations final : public jobs::DeviceOperations {
 public:
  JobOperations(methods::MethodDispatcher& methods, twin::TwinService& twins)
      : methods_(methods), twins_(twins) {}
  void invokeMethod(methods::MethodCall call, methods::MethodCallback done) override {
    methods_.invoke(std::move(call), std::move(done));
  }
  Status updateTwin(std::string_view device_id, const json::object& update_twin,
                    const store::DeviceJobWrite& outcome) override {
    return twins_.applyJobUpdate(device_id, update_twin, &outcome).status();
  }
  std::vector<Status> updateTwins(const std::vector<std::string>& device_ids,
                                  const json::object& update_twin,
                                  const std::vector<store::DeviceJobWrite>& outcomes) override {
    return twins_.applyJobUpdates(device_ids, update_twin, outcomes);
  }

 private:
  methods::MethodDispatcher& methods_;
  twin::TwinService& twins_;
};

std::string machineHostName() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) return "node";
  return host;
}

// The partition count is fixed at hub creation (docs/telemetry.md §1): a smaller count
// leaves the records of the partitions past it unreadable, so say so at start.
void warnOfOrphanedPartitions(store::Store& store, std::int32_t partitions) {
  constexpr std::int32_t kLookAhead = 64;
  for (std::int32_t p = partitions; p < partitions + kLookAhead; ++p) {
    auto info = store.telemetry().telemetryPartition(p);
    if (info && info->next_sequence > 0) {
      spdlog::warn(
          "telemetry: the store holds messages in partition {} but --telemetry-partitions is {}: "
          "they cannot be read until the count is set back",
          p, partitions);
      return;
    }
  }
}

json::object nodeJson(const store::NodeRecord& n) {
  return json::object{{"nodeId", n.node_id},
                      {"address", n.address},
                      {"startedTime", formatTimestamp(n.started_time)},
                      {"leaseUntil", formatTimestamp(n.lease_until)}};
}

}  // namespace

struct Hub::Impl {
  // Set (from a lock's thread) when a lock the node must hold was lost: run() then fails.
  std::atomic<bool> lost_lock{false};
  // Set (from the twin index's loading thread) when the store could not be read at startup.
  std::atomic<bool> index_load_failed{false};
  HubConfig config;
  std::optional<DataDirLock> data_dir_lock;  // held for the hub's whole life
  std::shared_ptr<transport::ConnectionLimiter> limiter;
  SystemClock clock;
  SecureRandom random;
  // A single node on PostgreSQL holds the database's single-node lock while it runs (and
  // until its store is closed: members are destroyed in reverse order).
  std::unique_ptr<store::PgSessionLock> single_node_lock;
  // A cluster node holds its own node id's lock instead (and shares the single-node one).
  std::vector<std::unique_ptr<store::PgSessionLock>> node_locks;
  std::unique_ptr<store::Store> durable_store;
  // Every write goes through the indexed store, so the twin index never misses one.
  index::TwinIndex twin_index;
  std::unique_ptr<index::IndexedStore> store;
  bool clustered = false;  // set in create() before anything connects
  // The feed's after_apply hook closes connections in `connections`, which is destroyed
  // before the feed: ~Impl turns the hook off first.
  std::mutex feed_hook_mutex;
  bool feed_hook_live = true;  // guarded by feed_hook_mutex
  // Cluster mode only: applies every node's writes (and presence) to twin_index. Destroyed
  // before `store`, after queries and jobs, which call it.
  std::unique_ptr<index::TwinIndexFeed> twin_feed;
  std::unique_ptr<auth::ServiceAuthenticator> authenticator;
  std::unique_ptr<registry::DeviceRegistry> registry;
  std::unique_ptr<asio::ssl::context> tls;
  asio::io_context io;
  asio::thread_pool workers;  // REST handlers (queries included)
  // The device path (CONNECT authentication, sessions, twin requests, telemetry) has its own
  // threads, so REST and query load cannot starve devices (docs/limits.md).
  asio::thread_pool device_workers;
  // Messaging store work: C2D sends, MQTT deliveries' locks and completions, Event Hubs
  // reads.
  asio::thread_pool c2d_workers;
  transport::AsioScheduler scheduler{io};
  routing::ConnectionRegistry connections{[this](std::string_view device_id, bool connected) {
    // In a cluster, connectionState in the index comes from presence, through the feed.
    if (!clustered) twin_index.setConnected(device_id, connected);
  }};
  DesiredPusher desired_pusher{connections};
  std::unique_ptr<methods::MethodInvoker> methods;
  // Cluster mode only (config.nats set): NATS handlers run on cluster_io; the router's
  // presence reads on cluster_workers. Both pools outlive the bus and the router.
  std::string node_id;
  std::optional<asio::thread_pool> cluster_io;
  std::optional<asio::thread_pool> cluster_workers;
  std::unique_ptr<routing::NatsBus> bus;
  std::unique_ptr<ClusterMembership> membership;
  std::unique_ptr<routing::ClusterRouter> router;
  std::unique_ptr<twin::TwinService> twins;
  std::unique_ptr<index::QueryRunner> queries;
  std::unique_ptr<JobOperations> job_operations;
  std::unique_ptr<jobs::JobsEngine> jobs;
  // Device-to-cloud messages (docs/telemetry.md), read through the Event Hubs endpoint.
  std::unique_ptr<telemetry::TelemetryLog> telemetry;
  std::unique_ptr<device_api::DeviceEndpoint> device_endpoint;
  // Cloud-to-device messages (docs/c2d.md): the queues, their delivery to MQTT devices on
  // this node, and the AMQP endpoint services send them through.
  std::unique_ptr<c2d::CloudToDevice> c2d;
  std::unique_ptr<c2d::MqttDelivery> c2d_delivery;
  std::unique_ptr<HubTokenAuthenticator> amqp_authenticator;
  // The device HTTP transport (docs/protocol.md §11) on the HTTPS listener.
  std::unique_ptr<device_api::DeviceHttpApi> device_http;
  std::unique_ptr<AmqpService> amqp_service;
  // The Event Hubs-compatible endpoint on the same AMQP listeners (docs/event-hubs.md).
  std::unique_ptr<EventHubsService> event_hubs;
  std::unique_ptr<service_api::ServiceApi> api;
  std::unique_ptr<transport::HttpServer> https;
  std::unique_ptr<transport::HttpServer> http;
  // --metrics-port: /metrics, /healthz, /readyz (docs/operations.md).
  metrics::HubMetrics metrics;
  std::unique_ptr<transport::HttpServer> ops;
  std::atomic<bool> serving{false};  // every listener accepts (set by run())
  std::unique_ptr<transport::MqttServer> mqtts;
  std::unique_ptr<transport::MqttServer> mqtt;
  std::unique_ptr<transport::AmqpServer> amqps;
  // REST requests waiting for a worker thread (the HTTPS and HTTP listeners; metrics).
  std::shared_ptr<std::atomic<std::int64_t>> rest_worker_queue =
      std::make_shared<std::atomic<std::int64_t>>(0);
  // Shared by the MQTT listeners (TLS, plain, WebSocket) for the metrics endpoint.
  std::shared_ptr<transport::MqttCounters> mqtt_counters =
      std::make_shared<transport::MqttCounters>();
  asio::signal_set signals{io, SIGINT, SIGTERM};
  std::atomic<bool> stopping{false};

  explicit Impl(const HubConfig& c)
      : config(c),
        workers(c.worker_threads == 0 ? 1 : c.worker_threads),
        device_workers(c.device_worker_threads == 0 ? 1 : c.device_worker_threads),
        c2d_workers(c.c2d_worker_threads == 0 ? 1 : c.c2d_worker_threads) {}

  std::string advertisedAddress() const {
    if (!config.advertise_address.empty()) return config.advertise_address;
    if (config.bind_address == "0.0.0.0" || config.bind_address == "::" ||
        config.bind_address.empty())
      return machineHostName();
    return config.bind_address;
  }

  // Cluster mode: the first node to start proposes its development CA (the one in its data
  // directory, or a new one) and every node installs the one the store kept.
  Status shareDevelopmentCa() {
    auto proposed = localOrNewDevelopmentCa(config.data_dir, clock);
    if (!proposed) return proposed.status();
    auto stored = durable_store->cluster()->shareValue(
        "development-ca",
        json::serialize(json::object{{"cert", proposed->cert_pem}, {"key", proposed->key_pem}}));
    if (!stored) return stored.status();
    auto doc = parseJson(*stored);
    const json::string* cert =
        doc && doc->is_object() ? findString(doc->get_object(), "cert") : nullptr;
    const json::string* key =
        doc && doc->is_object() ? findString(doc->get_object(), "key") : nullptr;
    if (cert == nullptr || key == nullptr) {
      return Status(ErrorCode::StoreCorruption, "the cluster's shared CA is malformed");
    }
    return installDevelopmentCa(config.data_dir,
                                DevelopmentCa{std::string(*cert), std::string(*key)}, clock);
  }

  ~Impl() {
    std::lock_guard lock(feed_hook_mutex);
    feed_hook_live = false;
    // Writers (the feed) may outlive `jobs`: they stop telling it about changes first.
    twin_index.setChangeObserver(nullptr);
  }

  // Cluster mode: connects to NATS, joins the membership and starts the router.
  Status joinCluster() {
    store::ClusterStore* cluster = durable_store->cluster();
    if (cluster == nullptr) {
      return Status(ErrorCode::ArgumentInvalid, "the store cannot be shared by a cluster");
    }
    cluster_io.emplace(2);
    cluster_workers.emplace(8);
    routing::NatsOptions nats;
    nats.servers = {config.nats};
    nats.name = node_id;
    auto bus_or = routing::NatsBus::connect(
        nats, [this](std::function<void()> task) { asio::post(*cluster_io, std::move(task)); },
        [](routing::NatsConnectionEvent event) {
          switch (event) {
            case routing::NatsConnectionEvent::Disconnected:
              spdlog::warn("cluster: lost the NATS connection; reconnecting");
              break;
            case routing::NatsConnectionEvent::Reconnected:
              spdlog::info("cluster: NATS connection re-established");
              break;
            case routing::NatsConnectionEvent::Closed:
              spdlog::error("cluster: the NATS connection closed for good");
              break;
          }
        });
    if (!bus_or) return bus_or.status();
    bus = std::move(*bus_or);
    spdlog::info("cluster: node {} connected to NATS at {}", node_id, bus->connectedUrl());
    auto joined = ClusterMembership::join(*cluster, node_id, advertisedAddress(), {}, nullptr,
                                          [this, cluster](bool) { repairPresence(*cluster); });
    if (!joined) return joined.status();
    membership = std::move(*joined);
    routing::ClusterRouterOptions options;
    options.node_id = node_id;
    auto router_or = routing::ClusterRouter::start(
        *bus, *cluster, connections, *methods, scheduler,
        [this](std::function<void()> task) { asio::post(*cluster_workers, std::move(task)); },
        options);
    if (!router_or) return router_or.status();
    router = std::move(*router_or);
    return Status::ok();
  }

  // On the membership's thread (ClusterMembership::Repair): tells the store which devices
  // this node holds, so that presence says connected for them (after the node was reaped
  // while alive) and disconnected for connections that ended without a release (a store
  // failure at the time). A connection that ends while this runs may have been marked
  // connected again after its release: such a one is released once more.
  void repairPresence(store::ClusterStore& cluster) {
    std::vector<store::HeldConnection> held;
    for (auto& [device_id, epoch] : connections.epochs()) {
      // Epoch 0: attached without a claim (never the case in cluster mode).
      if (epoch > 0) held.push_back({std::move(device_id), epoch});
    }
    // Claims younger than this may belong to connections not yet in the registry.
    constexpr auto kSettle = std::chrono::seconds(10);
    auto repaired = cluster.repairPresence(node_id, held, kSettle);
    if (!repaired) {
      spdlog::warn("cluster: repairing the presence of node {}'s devices failed: {}", node_id,
                   repaired.status().toString());
      return;
    }
    std::size_t undone = 0;
    for (const auto& back : repaired->reinstated) {
      if (connections.epochOf(back.device_id) == back.epoch) continue;
      auto released = cluster.releasePresence(back.device_id, back.epoch);
      if (!released) {
        spdlog::warn("cluster: releasing {} (epoch {}) after the repair failed: {}", back.device_id,
                     back.epoch, released.status().toString());
      }
      ++undone;
    }
    if (!repaired->reinstated.empty() || repaired->released > 0) {
      spdlog::warn(
          "cluster: presence repaired: {} device(s) connected to node {} marked connected again, "
          "{} ended connection(s) marked disconnected",
          repaired->reinstated.size() - undone, node_id, repaired->released + undone);
    }
  }

  // MQTT: connects, refusals and disconnects by reason, packets, bytes, the worker queue.
  void collectDevicePathMetrics(metrics::Sink& sink) {
    const transport::MqttCounters& m = *mqtt_counters;
    constexpr std::string_view kConnects = "iothub_mqtt_connects_total";
    constexpr std::string_view kConnectsHelp =
        "MQTT CONNECTs answered, by result (accepted, or the CONNACK refusal)";
    sink.counter(kConnects, kConnectsHelp, m.connects_accepted.load(), {{"result", "accepted"}});
    static constexpr std::string_view kRefusals[] = {"",
                                                     "unacceptableProtocolVersion",
                                                     "identifierRejected",
                                                     "serverUnavailable",
                                                     "badUserNameOrPassword",
                                                     "notAuthorized"};
    for (std::size_t code = 1; code < m.connects_refused.size(); ++code) {
      sink.counter(kConnects, kConnectsHelp, m.connects_refused[code].load(),
                   {{"result", kRefusals[code]}});
    }
    for (std::size_t i = 0; i < transport::kDisconnectReasons; ++i) {
      sink.counter(
          "iothub_mqtt_disconnects_total",
          "Connected devices' MQTT connections that ended, by reason", m.disconnects[i].load(),
          {{"reason",
            transport::disconnectReasonName(static_cast<transport::DisconnectReason>(i))}});
    }
    sink.counter("iothub_mqtt_packets_total", "MQTT packets, by direction",
                 m.packets_received.load(), {{"direction", "received"}});
    sink.counter("iothub_mqtt_packets_total", "MQTT packets, by direction", m.packets_sent.load(),
                 {{"direction", "sent"}});
    sink.counter("iothub_mqtt_bytes_total", "MQTT bytes (TLS and WebSocket framing excluded)",
                 m.bytes_received.load(), {{"direction", "received"}});
    sink.counter("iothub_mqtt_bytes_total", "MQTT bytes (TLS and WebSocket framing excluded)",
                 m.bytes_sent.load(), {{"direction", "sent"}});
    sink.gauge("iothub_rest_worker_queue_depth",
               "HTTP requests (REST, console, metrics) waiting for a worker thread",
               static_cast<double>(rest_worker_queue->load()));
    sink.gauge("iothub_device_worker_queue_depth",
               "Device store work (authentication, sessions, twin requests, telemetry) waiting "
               "for a device worker thread",
               static_cast<double>(m.worker_jobs_queued.load()));
  }

  // Direct methods, twins, jobs and the store's writer.
  void collectServiceMetrics(metrics::Sink& sink) {
    const methods::MethodCounters& mc = methods->counters();
    constexpr std::string_view kCalls = "iothub_method_calls_total";
    constexpr std::string_view kCallsHelp =
        "Direct-method calls this node delivered to its devices, by outcome";
    sink.counter(kCalls, kCallsHelp, mc.answered.load(), {{"outcome", "answered"}});
    sink.counter(kCalls, kCallsHelp, mc.device_not_online.load(), {{"outcome", "deviceNotOnline"}});
    sink.counter(kCalls, kCallsHelp, mc.timed_out.load(), {{"outcome", "timeout"}});
    sink.counter(kCalls, kCallsHelp, mc.other_errors.load(), {{"outcome", "error"}});
    sink.histogram("iothub_method_answer_seconds",
                   "From a direct-method call to the device's answer (answered calls)",
                   mc.answer_seconds);
    const twin::TwinCounters& tc = twins->counters();
    sink.counter("iothub_twin_updates_total", "Twin writes committed, by source",
                 tc.service_updates.load(), {{"source", "service"}});
    sink.counter("iothub_twin_updates_total", "Twin writes committed, by source",
                 tc.reported_updates.load(), {{"source", "device"}});
    const auto by_status = jobs->countByStatus();
    for (std::string_view status : {"queued", "scheduled", "running"}) {
      auto it = by_status.find(status);
      sink.gauge("iothub_jobs", "This node's unfinished jobs, by status",
                 it == by_status.end() ? 0 : static_cast<double>(it->second), {{"status", status}});
    }
    const jobs::JobsEngine::Counters& jc = jobs->counters();
    constexpr std::string_view kEnded = "iothub_jobs_ended_total";
    constexpr std::string_view kEndedHelp = "Jobs this node ran to the end, by final status";
    sink.counter(kEnded, kEndedHelp, jc.jobs_completed.load(), {{"status", "completed"}});
    sink.counter(kEnded, kEndedHelp, jc.jobs_failed.load(), {{"status", "failed"}});
    sink.counter(kEnded, kEndedHelp, jc.jobs_cancelled.load(), {{"status", "cancelled"}});
    constexpr std::string_view kOps = "iothub_job_device_operations_total";
    constexpr std::string_view kOpsHelp = "Jobs' device operations this node ran, by outcome";
    sink.counter(kOps, kOpsHelp, jc.devices_succeeded.load(), {{"outcome", "succeeded"}});
    sink.counter(kOps, kOpsHelp, jc.devices_failed.load(), {{"outcome", "failed"}});
    if (auto w = durable_store->writerMetrics()) {
      sink.histogram("iothub_store_write_batch_operations",
                     "Operations per store write transaction (group commit)", *w->batch_sizes);
      sink.histogram("iothub_store_write_batch_seconds",
                     "A store write transaction, from its first operation to its commit",
                     *w->batch_seconds);
      sink.gauge("iothub_store_write_queue_depth", "Store writes waiting for the writer",
                 static_cast<double>(w->queued_operations));
      sink.counter("iothub_store_failed_commits_total", "Store write transactions that failed",
                   static_cast<double>(w->failed_commits));
    }
  }

  // Cloud-to-device messages, the AMQP endpoint and the device HTTP transport.
  void collectMessagingMetrics(metrics::Sink& sink) {
    const c2d::C2dCounters& c = c2d->counters();
    constexpr std::string_view kC2d = "iothub_c2d_messages_total";
    constexpr std::string_view kC2dHelp =
        "Cloud-to-device message events on this node, by event (sent = enqueued)";
    const std::pair<std::string_view, const std::atomic<std::uint64_t>*> events[] = {
        {"sent", &c.sent},           {"refused", &c.refused},
        {"delivered", &c.delivered}, {"completed", &c.completed},
        {"rejected", &c.rejected},   {"abandoned", &c.abandoned},
        {"expired", &c.expired},     {"deadLettered", &c.dead_lettered},
        {"purged", &c.purged}};
    for (const auto& [event, value] : events) {
      sink.counter(kC2d, kC2dHelp, value->load(), {{"event", event}});
    }
    sink.counter("iothub_c2d_feedback_records_total",
                 "C2D feedback records stored for services (by the acks messages asked for)",
                 c.feedback_records.load());
    const c2d::DeliveryCounters& d = c2d_delivery->counters();
    constexpr std::string_view kMqtt = "iothub_c2d_mqtt_deliveries_total";
    constexpr std::string_view kMqttHelp =
        "C2D messages published to MQTT devices on this node, by result";
    sink.counter(kMqtt, kMqttHelp, d.published.load(), {{"result", "published"}});
    sink.counter(kMqtt, kMqttHelp, d.acknowledged.load(), {{"result", "acknowledged"}});
    sink.counter(kMqtt, kMqttHelp, d.interrupted.load(), {{"result", "interrupted"}});
    sink.gauge("iothub_amqp_connections", "Open AMQP connections (service clients)",
               static_cast<double>(amqps ? amqps->connectionCount() : 0));
    const AmqpServiceCounters& a = amqp_service->counters();
    sink.counter("iothub_amqp_c2d_sends_total", "C2D sends received over AMQP, by result",
                 a.c2d_accepted.load(), {{"result", "accepted"}});
    sink.counter("iothub_amqp_c2d_sends_total", "C2D sends received over AMQP, by result",
                 a.c2d_refused.load(), {{"result", "refused"}});
    sink.counter("iothub_amqp_feedback_messages_total",
                 "Feedback messages (batches of records) sent to services",
                 a.feedback_messages.load());
    const telemetry::TelemetryCounters& t = telemetry->counters();
    sink.counter("iothub_telemetry_messages_total",
                 "Device-to-cloud messages stored in the telemetry log by this node",
                 t.appended.load());
    sink.counter("iothub_telemetry_bytes_total", "Body bytes of those messages", t.bytes.load());
    sink.counter("iothub_telemetry_refused_total",
                 "Device-to-cloud messages the log could not take (store failure, device "
                 "deleted); devices send them again",
                 t.append_failures.load());
    sink.counter("iothub_telemetry_trimmed_total",
                 "Telemetry records removed by retention (age or size)", t.trimmed.load());
    const EventHubsCounters& e = event_hubs->counters();
    sink.counter("iothub_event_hubs_events_sent_total",
                 "Telemetry events sent to Event Hubs readers", e.events_sent.load());
    sink.gauge("iothub_event_hubs_receivers", "Event Hubs partition receivers open on this node",
               static_cast<double>(e.receivers.load()));
    sink.counter("iothub_event_hubs_receivers_refused_total",
                 "Event Hubs receivers refused (unknown consumer group, bad start position, "
                 "epoch or reader limits)",
                 e.receivers_refused.load());
    sink.counter("iothub_event_hubs_receivers_stolen_total",
                 "Event Hubs receivers displaced by a receiver with a higher epoch",
                 e.receivers_stolen.load());
    sink.counter("iothub_event_hubs_management_requests_total",
                 "Event Hubs $management requests (hub and partition properties)",
                 e.management_requests.load());
    const device_api::DeviceHttpCounters& h = device_http->counters();
    sink.counter("iothub_device_http_requests_total",
                 "Device HTTP transport requests (telemetry, C2D polling and settlement)",
                 h.requests.load());
    sink.counter("iothub_device_http_telemetry_messages_total",
                 "Device-to-cloud messages accepted over the device HTTP transport",
                 h.telemetry_messages.load());
  }

  // What every scrape of /metrics reads (besides the REST families HubMetrics keeps).
  void collectMetrics(metrics::Sink& sink) {
    const auto& c = device_endpoint->counters();
    sink.gauge("iothub_connected_devices", "Devices connected to this node", connections.size());
    sink.gauge("iothub_open_connections", "Open TCP connections (MQTT, HTTPS, WebSocket, metrics)",
               limiter->open());
    sink.counter("iothub_connections_refused_over_limit_total",
                 "Connections refused because the connection limit was reached",
                 limiter->refused());
    sink.counter(
        "iothub_connects_refused_total",
        "MQTT CONNECTs refused (bad credentials, disabled or unknown device, bad client id)",
        c.refused_connects.load());
    sink.counter("iothub_acl_violations_total",
                 "Device PUBLISH or SUBSCRIBE refused for a topic the device may not use",
                 c.acl_violations.load());
    sink.counter("iothub_telemetry_messages_total", "Device-to-cloud messages accepted",
                 c.telemetry_messages.load());
    sink.counter("iothub_telemetry_bytes_total", "Payload bytes of the messages accepted",
                 c.telemetry_bytes.load());
    sink.gauge("iothub_pending_method_calls", "Direct-method calls waiting for a device's answer",
               methods->pendingCount());
    sink.gauge("iothub_twin_index_devices", "Devices in this node's twin index", twin_index.size());
    collectDevicePathMetrics(sink);
    collectServiceMetrics(sink);
    collectMessagingMetrics(sink);
    if (router) {
      const auto& r = router->counters();
      sink.gauge("iothub_cluster_nodes", "Live cluster nodes this node sees",
                 membership->nodes().size());
      sink.gauge("iothub_nats_connected", "1 while this node's NATS connection is up",
                 bus->connected() ? 1 : 0);
      sink.gauge("iothub_cluster_lease_held", "1 while this node holds its membership lease",
                 membership->leaseHeld() ? 1 : 0);
      sink.counter("iothub_methods_forwarded_total",
                   "Direct-method calls this node sent to the node holding the device",
                   r.methods_forwarded.load());
      sink.counter("iothub_methods_served_for_other_nodes_total",
                   "Direct-method calls this node delivered for another node",
                   r.methods_served.load());
      sink.counter("iothub_desired_notifications_forwarded_total",
                   "Desired-property notifications sent to the node holding the device",
                   r.desired_forwarded.load());
      sink.counter("iothub_connections_closed_by_other_nodes_total",
                   "Connections closed because the device connected to another node",
                   r.kicks_closed.load());
      sink.counter("iothub_c2d_wakeups_forwarded_total",
                   "C2D wake-ups sent to the node holding the device", r.c2d_forwarded.load());
    }
  }

  // GET /readyz: 200 when every check holds, else 503; the body names each check.
  HttpResponse readiness() {
    json::object checks;
    bool ready = true;
    auto check = [&](const char* name, bool ok) {
      checks[name] = ok;
      ready = ready && ok;
    };
    check("listeners", serving.load() && !stopping.load());
    // A read of the smallest table: the store answers (PostgreSQL: a round trip).
    check("store", store->policies().listPolicies().isOk());
    check("twinIndex", true);  // loaded before the listeners open
    if (clustered) {
      check("nats", bus != nullptr && bus->connected());
      check("clusterLease", membership != nullptr && membership->leaseHeld());
    }
    HttpResponse response;
    response.status = ready ? 200 : 503;
    response.headers.set("Content-Type", "application/json; charset=utf-8");
    response.body = json::serialize(
        json::object{{"status", ready ? "ready" : "notReady"}, {"checks", std::move(checks)}});
    return response;
  }

  HttpResponse liveness() {
    HttpResponse response;
    response.headers.set("Content-Type", "application/json; charset=utf-8");
    response.body = R"({"status":"alive"})";
    return response;
  }

  HttpResponse scrape() {
    HttpResponse response;
    response.headers.set("Content-Type", std::string(metrics::HubMetrics::kContentType));
    response.body = metrics.render();
    return response;
  }

  // The metrics listener's routes: no authentication (bind it where only operators reach).
  using OpsRoutes = service_api::RouteTable<HttpResponse (Impl::*)()>;
  const OpsRoutes ops_routes = [] {
    OpsRoutes r;
    r.add("GET", "/metrics", &Impl::scrape);
    r.add("GET", "/healthz", &Impl::liveness);
    r.add("GET", "/readyz", &Impl::readiness);
    return r;
  }();

  HttpResponse operations(const HttpRequest& request) {
    std::string_view path = std::string_view(request.target).substr(0, request.target.find('?'));
    auto match = ops_routes.find(request.method, service_api::pathSegments(path));
    if (match.route != nullptr) return (this->*match.route->handler)();
    HttpResponse r = service_api::errorResponse(
        match.allow.empty() ? Status(ErrorCode::NotFound, "No resource at " + std::string(path))
                            : Status(ErrorCode::MethodNotAllowed,
                                     "Method " + request.method + " is not allowed here"),
        random, clock.now());
    if (!match.allow.empty()) r.headers.set("Allow", match.allow);
    return r;
  }

  void addClusterStatistics(json::object& stats) {
    auto total = durable_store->cluster()->connectedDeviceCount();
    if (total) {
      stats["connectedDeviceCount"] = *total;
    } else {
      spdlog::warn("cluster: cannot count the cluster's connected devices: {}",
                   total.status().toString());
    }
    const auto& c = router->counters();
    stats["nodeId"] = node_id;
    stats["nodeConnectedDeviceCount"] = connections.size();
    stats["clusterNodes"] = membership->nodes().size();
    stats["natsConnected"] = bus->connected();
    stats["methodsForwarded"] = c.methods_forwarded.load();
    stats["methodsServedForOtherNodes"] = c.methods_served.load();
    stats["desiredNotificationsForwarded"] = c.desired_forwarded.load();
    stats["connectionsClosedByOtherNodes"] = c.kicks_closed.load();
    stats["c2dWakeupsForwarded"] = c.c2d_forwarded.load();
  }

  // Cluster mode, at a clean stop: nothing may use the router any more; the node leaves
  // (its devices read disconnected at once instead of after its lease).
  void leaveCluster() {
    if (!membership) return;
    if (cluster_workers) cluster_workers->join();
    Status left = membership->leave();
    if (!left) spdlog::warn("cluster: cannot leave cleanly: {}", left.toString());
  }

  std::vector<transport::HttpServer*> servers() {
    std::vector<transport::HttpServer*> out;
    if (https) out.push_back(https.get());
    if (http) out.push_back(http.get());
    if (ops) out.push_back(ops.get());
    return out;
  }
  std::vector<transport::MqttServer*> mqttServers() {
    std::vector<transport::MqttServer*> out;
    if (mqtts) out.push_back(mqtts.get());
    if (mqtt) out.push_back(mqtt.get());
    return out;
  }

  // Every few seconds on a worker: removes expired C2D messages (with their feedback) and
  // stale feedback; every node does it in a cluster (each message goes once).
  void scheduleC2dSweep() {
    scheduler.schedule(std::chrono::seconds(5), [this] {
      asio::post(workers, [this] {
        if (stopping) return;
        auto swept = c2d->sweep();
        if (!swept) spdlog::warn("c2d: the expiry sweep failed: {}", swept.status().toString());
        scheduleC2dSweep();
      });
    });
  }

  // Every few seconds on a worker: telemetry retention (docs/telemetry.md §2). Each call
  // does bounded work; while it removes records the next one follows at once.
  void scheduleTelemetrySweep(std::chrono::milliseconds after = std::chrono::seconds(5)) {
    scheduler.schedule(after, [this] {
      asio::post(workers, [this] {
        if (stopping) return;
        auto swept = telemetry->sweep();
        if (!swept) {
          spdlog::warn("telemetry: the retention sweep failed: {}", swept.status().toString());
        }
        bool more = swept && *swept > 0;
        scheduleTelemetrySweep(more ? std::chrono::milliseconds(50) : std::chrono::seconds(5));
      });
    });
  }

  void beginShutdown() {
    if (stopping.exchange(true)) return;
    spdlog::info("shutting down: no new connections, finishing in-flight requests");
    boost::system::error_code ignored;
    signals.cancel(ignored);
    for (auto* s : servers()) s->stop();
    for (auto* s : mqttServers()) s->stop();
    if (amqps) amqps->stop();
    // Give open connections up to shutdown_grace to finish, then stop the loop.
    auto deadline = std::chrono::steady_clock::now() + config.shutdown_grace;
    auto timer = std::make_shared<asio::steady_timer>(io);
    auto poll = std::make_shared<std::function<void()>>();
    *poll = [this, timer, deadline, poll] {
      std::size_t open = 0;
      for (auto* s : servers()) open += s->connectionCount();
      for (auto* s : mqttServers()) open += s->connectionCount();
      if (amqps) open += amqps->connectionCount();
      if (open == 0 || std::chrono::steady_clock::now() >= deadline) {
        if (open > 0)
          spdlog::warn("closing {} connection(s) still open after the grace period", open);
        io.stop();
        *poll = nullptr;  // break the self-reference
        return;
      }
      timer->expires_after(std::chrono::milliseconds(20));
      timer->async_wait([poll](const boost::system::error_code&) {
        if (*poll) (*poll)();
      });
    };
    asio::post(io, [poll] { (*poll)(); });
  }
};

Hub::Hub(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Hub::~Hub() {
  if (!impl_) return;
  impl_->workers.join();
  impl_->device_workers.join();
  impl_->c2d_workers.join();
  // Appends what devices sent last, before the device endpoint its callbacks count in goes.
  if (impl_->telemetry) impl_->telemetry->stop();
  std::error_code ec;
  fs::remove(impl_->config.data_dir / kRuntimeFile, ec);
}

Result<std::unique_ptr<Hub>> Hub::create(const HubConfig& config) {
  auto impl = std::make_unique<Impl>(config);
  const fs::path& dir = config.data_dir;
  auto widened = makePrivate(dir);
  if (!widened) return widened.status();
  if (*widened > 0) {
    spdlog::warn(
        "restricted {} entries of {} to owner-only permissions (directories 0700, "
        "files 0600): the data directory holds the hub's keys",
        *widened, dir.string());
  }
  auto lock = DataDirLock::acquire(dir);
  if (!lock) return lock.status();
  impl->data_dir_lock = std::move(*lock);
  FileLimit fd_limit = raiseOpenFileLimit();
  std::size_t max_connections =
      config.max_connections != 0 ? config.max_connections : defaultMaxConnections(fd_limit.soft);
  spdlog::info("open-file limit: soft {} (was {}), hard {}; at most {} connections", fd_limit.soft,
               fd_limit.soft_before, fd_limit.hard, max_connections);
  if (fd_limit.soft != 0 && max_connections + kReservedFds / 2 > fd_limit.soft) {
    spdlog::warn(
        "--max-connections {} leaves fewer than {} of the {} file descriptors for the "
        "store and listeners",
        max_connections, kReservedFds / 2, fd_limit.soft);
  }
  impl->limiter = std::make_shared<transport::ConnectionLimiter>(max_connections);

  auto location = parseStoreLocation(config.store, dir);
  if (!location) return location.status();
  const bool clustered = !config.nats.empty();
  if (clustered && location->kind != StoreLocation::Kind::Postgres) {
    return Status(ErrorCode::ArgumentInvalid,
                  "--nats (cluster mode) needs --store postgresql://...: the nodes share it");
  }
  impl->node_id = config.node_id.empty() ? machineHostName() : config.node_id;
  auto lost_lock = [raw = impl.get()](const Status& why) {
    spdlog::critical("store: lost a lock this node must hold ({}); stopping", why.toString());
    raw->lost_lock = true;
    ::kill(::getpid(), SIGTERM);
  };
  if (clustered) {
    auto locks = lockClusterNode(*location, impl->node_id, lost_lock);
    if (!locks) return locks.status();
    impl->node_locks = std::move(*locks);
  } else if (location->kind == StoreLocation::Kind::Postgres) {
    // A second single-node hub is refused before it touches the database (migrations).
    auto node_lock = lockSingleNode(*location, lost_lock);
    if (!node_lock) return node_lock.status();
    impl->single_node_lock = std::move(*node_lock);
  }
  auto store = openStore(*location);
  if (!store) return store.status();
  spdlog::info("store: {}", location->description);
  impl->durable_store = std::move(*store);
  impl->clustered = clustered;
  impl->store = std::make_unique<index::IndexedStore>(*impl->durable_store, impl->twin_index);
  if (clustered) {
    index::TwinIndexFeedOptions feed_options;
    // Disabling or deleting a device reaches the node holding its connection over NATS
    // (ClusterRouter); should that message be lost, the change feed closes it here too.
    feed_options.after_apply = [raw = impl.get()](const std::vector<store::DeviceState>& states) {
      std::lock_guard hook_lock(raw->feed_hook_mutex);
      if (!raw->feed_hook_live) return;
      for (const store::DeviceState& state : states) {
        const bool deleted = !state.device.has_value();
        if (!deleted && state.device->status != store::DeviceStatus::Disabled) continue;
        if (!raw->connections.find(state.device_id)) continue;
        raw->connections.disconnect(state.device_id,
                                    deleted ? "the device was deleted" : "the device was disabled");
      }
    };
    auto feed = index::TwinIndexFeed::start(*impl->store, impl->twin_index,
                                            std::move(feed_options));  // loads the index
    if (!feed) return feed.status();
    impl->twin_feed = std::move(*feed);
  } else {
    // The hub serves while its twin index loads; queries and job target selection wait
    // for the load (decisions §87). A store that cannot be read stops the hub.
    impl->twin_index.startLoading(*impl->durable_store, [raw = impl.get()](const Status& why) {
      spdlog::critical("twin index: the store could not be read ({}); stopping", why.toString());
      raw->index_load_failed = true;
      ::kill(::getpid(), SIGTERM);
    });
  }

  if (clustered) {
    // Every node serves one hub: device and service tokens are signed for its name, so a
    // node started with another --hostname would refuse every one of them.
    auto shared = impl->durable_store->cluster()->shareValue("hub-host-name", config.host_name);
    if (!shared) return shared.status();
    if (*shared != config.host_name) {
      return Status(ErrorCode::ArgumentInvalid,
                    "--hostname '" + config.host_name + "' differs from the cluster's hub name '" +
                        *shared + "': every node of a cluster serves the same hub name");
    }
  }
  IOTHUB_RETURN_IF_ERROR(
      impl->store->policies().insertMissingPolicies(auth::defaultPolicies(impl->random)));
  auto policies = impl->store->policies().listPolicies();
  if (!policies) return policies.status();
  IOTHUB_RETURN_IF_ERROR(writeFileAtomically(
      dir / kHubFile, json::serialize(json::object{{"hostName", config.host_name}}) + "\n"));

  fs::path cert, key;
  if (config.tls_cert || config.tls_key) {
    if (!config.tls_cert || !config.tls_key) {
      return Status(ErrorCode::ArgumentInvalid, "--tls-cert and --tls-key go together");
    }
    cert = *config.tls_cert;
    key = *config.tls_key;
  } else {
    // A cluster node uses the cluster's CA (kept in the store) and puts its own address in
    // its certificate, so devices may connect to it by address (GatewayHostName).
    std::vector<std::string> node_names;
    if (clustered) {
      IOTHUB_RETURN_IF_ERROR(impl->shareDevelopmentCa());
      node_names.push_back(impl->advertisedAddress());
    }
    auto files = ensureDevelopmentCertificates(dir, config.host_name, impl->clock, node_names);
    if (!files) return files.status();
    cert = files->server_cert;
    key = files->server_key;
  }
  auto tls = makeTlsContext(cert, key);
  if (!tls) return tls.status();
  impl->tls = std::move(*tls);

  impl->authenticator =
      std::make_unique<auth::ServiceAuthenticator>(config.host_name, *policies, impl->clock);
  impl->methods = std::make_unique<methods::MethodInvoker>(impl->connections, impl->scheduler);
  if (clustered) IOTHUB_RETURN_IF_ERROR(impl->joinCluster());
  registry::ConnectionStates* states = &impl->connections;
  methods::MethodDispatcher* dispatcher = impl->methods.get();
  if (impl->router) {
    states = impl->router.get();
    dispatcher = impl->router.get();
    impl->desired_pusher.setRouter(impl->router.get());
  }
  impl->twins =
      std::make_unique<twin::TwinService>(*impl->store, impl->clock, states, &impl->desired_pusher);
  // In a cluster, a query first catches up with every write committed before it, on any node.
  index::QueryRunner::BeforeQuery catch_up;
  if (impl->twin_feed) {
    catch_up = [feed = impl->twin_feed.get()] { return feed->catchUp(kFeedCatchUpTimeout); };
  }
  impl->queries = std::make_unique<index::QueryRunner>(
      impl->twin_index, impl->store->deviceJobs(), &impl->clock,
      std::chrono::duration_cast<std::chrono::milliseconds>(config.query_timeout),
      std::move(catch_up));
  impl->registry =
      std::make_unique<registry::DeviceRegistry>(*impl->store, impl->random, impl->clock, states);
  impl->job_operations = std::make_unique<JobOperations>(*dispatcher, *impl->twins);
  jobs::JobsOptions job_options;
  job_options.window = config.job_window;
  job_options.max_running_jobs = config.max_running_jobs;
  if (clustered) {
    // Each job runs on the node holding its lease. This node's id is locked to this
    // process, so the leases a previous run of it left are taken back at once.
    jobs::JobLeaseOptions lease;
    lease.node_id = impl->node_id;
    lease.take_back_own_leases = true;
    job_options.lease = lease;
  }
  impl->jobs = std::make_unique<jobs::JobsEngine>(
      *impl->store, *impl->job_operations,
      [raw = impl.get()](const query::Condition& c) {
        // A job selects its devices after catching up with every node's writes.
        if (raw->twin_feed) {
          Status caught_up = raw->twin_feed->catchUp(kFeedCatchUpTimeout);
          if (!caught_up) {
            spdlog::warn("jobs: selecting devices without the latest writes of other nodes: {}",
                         caught_up.toString());
          }
        }
        return raw->twin_index.select(c);
      },
      impl->clock, job_options);
  // Jobs that follow devices (offlineDevices, convergence, continuous; docs/jobs.md) read
  // them from the index, which in a cluster has every node's writes and presence.
  impl->jobs->followDevices(
      [raw = impl.get()](std::string_view id) { return raw->twin_index.find(id); });
  impl->twin_index.setChangeObserver(
      [raw = impl.get()](std::string_view id) { raw->jobs->deviceChanged(id); });
  {
    telemetry::TelemetryOptions options;
    options.partitions = config.telemetry_partitions;
    options.retention = config.telemetry_retention;
    options.max_partition_bytes = config.telemetry_partition_max_bytes;
    impl->telemetry = std::make_unique<telemetry::TelemetryLog>(*impl->store, impl->clock, options);
    warnOfOrphanedPartitions(*impl->store, options.partitions);
  }
  impl->device_endpoint = std::make_unique<device_api::DeviceEndpoint>(
      config.host_name, *impl->store, *policies, *impl->twins, *impl->methods, impl->clock,
      impl->random, impl->router.get(), impl->telemetry.get());
  impl->device_endpoint->setBackgroundExecutor([raw = impl.get()](std::function<void()> work) {
    asio::post(raw->device_workers, std::move(work));
  });
  {
    Impl* hub = impl.get();
    hub->c2d = std::make_unique<c2d::CloudToDevice>(*hub->store, hub->clock, hub->random);
    hub->c2d_delivery = std::make_unique<c2d::MqttDelivery>(
        *hub->c2d, hub->connections,
        [hub](std::function<void()> work) { asio::post(hub->c2d_workers, std::move(work)); });
    // A device that subscribes (or reconnects with its session) gets what waits for it.
    hub->connections.setSubscriptionObserver(
        [hub](std::string_view id) { hub->c2d_delivery->poke(id); });
    // A new message wakes the delivery wherever the device is connected.
    hub->c2d->setQueueObserver([hub](std::string_view id) {
      if (hub->router) {
        hub->router->notifyC2d(id);
      } else {
        hub->c2d_delivery->poke(id);
      }
    });
    if (hub->router) {
      hub->router->setC2dHandler([hub](std::string_view id) { hub->c2d_delivery->poke(id); });
    }
    hub->device_http = std::make_unique<device_api::DeviceHttpApi>(
        config.host_name, *hub->store, *policies, *hub->c2d, hub->telemetry.get(), hub->clock,
        hub->random);
    hub->amqp_authenticator =
        std::make_unique<HubTokenAuthenticator>(config.host_name, *hub->authenticator, hub->clock,
                                                *policies, eventHubsEntity(config.host_name));
    hub->amqp_service = std::make_unique<AmqpService>(
        *hub->c2d,
        [hub](std::function<void()> work) { asio::post(hub->c2d_workers, std::move(work)); },
        hub->scheduler);
    EventHubsOptions event_hubs;
    // Appends on other nodes wake nobody here: readers poll more often in a cluster.
    if (hub->clustered) event_hubs.poll = std::chrono::milliseconds(200);
    hub->event_hubs = std::make_unique<EventHubsService>(
        eventHubsEntity(config.host_name), *hub->telemetry, *hub->store,
        [hub](std::function<void()> work) { asio::post(hub->c2d_workers, std::move(work)); },
        hub->scheduler, event_hubs);
  }
  impl->api = std::make_unique<service_api::ServiceApi>(service_api::ServiceApiDeps{
      impl->authenticator.get(), impl->registry.get(), states, impl->twins.get(), dispatcher,
      impl->queries.get(), impl->jobs.get(), impl->c2d.get(), &impl->store->telemetry(),
      &impl->random, &impl->clock,
      [raw = impl.get()] {
        const auto& counters = raw->device_endpoint->counters();
        json::object stats{{"connectedDeviceCount", raw->connections.size()},
                           {"telemetryMessages", counters.telemetry_messages.load()},
                           {"telemetryBytes", counters.telemetry_bytes.load()},
                           {"refusedConnects", counters.refused_connects.load()},
                           {"aclViolations", counters.acl_violations.load()},
                           {"openConnections", raw->limiter->open()},
                           {"refusedConnectionsOverLimit", raw->limiter->refused()},
                           {"pendingMethodCalls", raw->methods->pendingCount()}};
        if (raw->router) raw->addClusterStatistics(stats);
        return stats;
      },
      clustered
          ? std::function<Result<json::object>()>([raw = impl.get()]() -> Result<json::object> {
              // Read now rather than the membership's last read (up to a renewal period old).
              auto live = raw->durable_store->cluster()->liveNodes();
              if (!live) return live.status();
              json::array nodes;
              for (const auto& n : *live) nodes.push_back(nodeJson(n));
              return Result<json::object>(json::object{{"nodeId", raw->node_id},
                                                       {"leaseHeld", raw->membership->leaseHeld()},
                                                       {"natsConnected", raw->bus->connected()},
                                                       {"nodes", std::move(nodes)}});
            })
          : nullptr,
      // The web console's static files (no authentication; its API calls are signed).
      [raw = impl.get()](const HttpRequest& request) {
        return console::serveConsole(request, [raw](const Status& s) {
          return service_api::errorResponse(s, raw->random, raw->clock.now());
        });
      },
      // Direct methods to devices connected here are served on the I/O thread.
      [raw = impl.get()](std::string_view device_id) {
        return raw->connections.find(device_id) != nullptr;
      }});

  Impl* raw = impl.get();
  // Metrics labels of bounded cardinality: the route's template, a known method.
  auto method_label = [](const std::string& method) -> std::string_view {
    static constexpr std::string_view kMethods[] = {"GET",    "PUT",  "POST",   "PATCH",
                                                    "DELETE", "HEAD", "OPTIONS"};
    for (std::string_view known : kMethods) {
      if (method == known) return known;
    }
    return "other";
  };
  auto handler = [raw, method_label](const HttpRequest& r, transport::HttpResponder respond) {
    std::string_view method = method_label(r.method);
    if (device_api::DeviceHttpApi::handles(r.target)) {
      // A device's own calls (telemetry, C2D polling); this runs on a worker already.
      auto started = std::chrono::steady_clock::now();
      HttpResponse response = raw->device_http->handle(r);
      std::string_view route = r.target.find("/messages/events") != std::string::npos
                                   ? "/devices/{id}/messages/events"
                                   : "/devices/{id}/messages/devicebound";
      raw->metrics.observeRequest(route, method, response.status,
                                  std::chrono::steady_clock::now() - started);
      respond(std::move(response));
      return;
    }
    raw->api->handleAsync(r, [raw, route = service_api::routeTemplate(r.target), method,
                              started = std::chrono::steady_clock::now(),
                              respond = std::move(respond)](HttpResponse response) {
      raw->metrics.observeRequest(route, method, response.status,
                                  std::chrono::steady_clock::now() - started);
      respond(std::move(response));
    });
  };
  // The same, for the requests ServiceApi serves on the I/O thread.
  auto inline_handler = [raw, method_label](const HttpRequest& r,
                                            const transport::HttpResponder& respond) {
    return raw->api->handleInline(
        r, [raw, route = service_api::routeTemplate(r.target), method = method_label(r.method),
            started = std::chrono::steady_clock::now(), respond](HttpResponse response) {
          raw->metrics.observeRequest(route, method, response.status,
                                      std::chrono::steady_clock::now() - started);
          respond(std::move(response));
        });
  };
  raw->metrics.addCollector([raw](metrics::Sink& sink) { raw->collectMetrics(sink); });
  auto error_responder = [raw](const Status& s) {
    return service_api::errorResponse(s, raw->random, raw->clock.now());
  };
  transport::MqttServerOptions mqtt_options;
  mqtt_options.name = "MQTT/TLS";
  mqtt_options.bind_address = config.bind_address;
  mqtt_options.port = config.mqtt_port;
  mqtt_options.tls = raw->tls.get();
  mqtt_options.handshake_timeout = config.handshake_timeout;
  mqtt_options.write_timeout = config.write_timeout;
  mqtt_options.limiter = raw->limiter;
  mqtt_options.counters = raw->mqtt_counters;
  auto mqtts = transport::MqttServer::create(raw->io, raw->device_workers, mqtt_options,
                                             *raw->device_endpoint, raw->connections);
  if (!mqtts) return mqtts.status();
  impl->mqtts = std::move(*mqtts);
  if (config.mqtt_plain_port) {
    mqtt_options.name = "MQTT";
    mqtt_options.port = *config.mqtt_plain_port;
    mqtt_options.tls = nullptr;
    auto mqtt = transport::MqttServer::create(raw->io, raw->device_workers, mqtt_options,
                                              *raw->device_endpoint, raw->connections);
    if (!mqtt) return mqtt.status();
    impl->mqtt = std::move(*mqtt);
  }
  transport::AmqpServerOptions amqp_options;
  amqp_options.bind_address = config.bind_address;
  amqp_options.port = config.amqp_port;
  amqp_options.tls = raw->tls.get();
  amqp_options.handshake_timeout = config.handshake_timeout;
  amqp_options.write_timeout = config.write_timeout;
  amqp_options.limiter = raw->limiter;
  // Each connection's links: the Event Hubs endpoint's addresses, then the service's.
  auto handlers = [raw](const std::string& /*remote*/, transport::AmqpConnectionPost post) {
    auto router = std::make_unique<LinkRouter>();
    router->add([entity = raw->event_hubs->entity()](
                    std::string_view address) { return isEventHubsAddress(entity, address); },
                raw->event_hubs->makeHandler(post));
    router->add([](std::string_view) { return true; }, raw->amqp_service->makeHandler(post));
    return router;
  };
  auto amqps = transport::AmqpServer::create(raw->io, amqp_options, *raw->amqp_authenticator,
                                             std::move(handlers));
  if (!amqps) return amqps.status();
  impl->amqps = std::move(*amqps);
  transport::HttpServerOptions https_options;
  https_options.name = "HTTPS";
  https_options.bind_address = config.bind_address;
  https_options.port = config.https_port;
  https_options.tls = raw->tls.get();
  https_options.body_limit = config.http_body_limit;
  https_options.handshake_timeout = config.handshake_timeout;
  https_options.limiter = raw->limiter;
  https_options.websocket = raw->mqtts->webSocketAcceptor();  // MQTT over WebSocket on 443
  // AMQP over WebSocket on 443 (subprotocol AMQPWSB10, azure-iothub's AmqpWs; docs/amqp.md §3)
  https_options.amqp_websocket = raw->amqps->webSocketAcceptor();
  https_options.worker_queue = raw->rest_worker_queue;
  https_options.inline_handler = inline_handler;
  auto https =
      transport::HttpServer::create(raw->io, raw->workers, https_options, handler, error_responder);
  if (!https) return https.status();
  impl->https = std::move(*https);
  if (config.http_port) {
    transport::HttpServerOptions http_options = https_options;
    http_options.name = "HTTP";
    http_options.port = *config.http_port;
    http_options.tls = nullptr;
    auto http = transport::HttpServer::create(raw->io, raw->workers, http_options, handler,
                                              error_responder);
    if (!http) return http.status();
    impl->http = std::move(*http);
  }
  if (config.metrics_port) {
    transport::HttpServerOptions ops_options = https_options;
    ops_options.name = "metrics";
    ops_options.port = *config.metrics_port;
    ops_options.tls = nullptr;
    ops_options.websocket = nullptr;
    ops_options.amqp_websocket = nullptr;
    ops_options.body_limit = 4096;  // GETs only
    ops_options.inline_handler = nullptr;
    auto ops = transport::HttpServer::create(
        raw->io, raw->workers, ops_options,
        [raw](const HttpRequest& r, transport::HttpResponder respond) {
          respond(raw->operations(r));
        },
        error_responder);
    if (!ops) return ops.status();
    impl->ops = std::move(*ops);
  }
  IOTHUB_RETURN_IF_ERROR(impl->jobs->start());
  return std::unique_ptr<Hub>(new Hub(std::move(impl)));
}

Status Hub::run() {
  Impl& impl = *impl_;
  impl.signals.async_wait([&impl](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    spdlog::info("received signal {}", signal);
    impl.beginShutdown();
  });
  for (auto* s : impl.servers()) s->start();
  for (auto* s : impl.mqttServers()) s->start();
  impl.amqps->start();
  impl.scheduleC2dSweep();
  impl.scheduleTelemetrySweep();

  json::object runtime{{"pid", static_cast<std::int64_t>(::getpid())},
                       {"hostName", impl.config.host_name},
                       {"httpsPort", impl.https->port()}};
  if (impl.http) runtime["httpPort"] = impl.http->port();
  runtime["mqttPort"] = impl.mqtts->port();
  runtime["amqpPort"] = impl.amqps->port();
  if (impl.mqtt) runtime["mqttPlainPort"] = impl.mqtt->port();
  if (impl.ops) runtime["metricsPort"] = impl.ops->port();
  Status written =
      writeFileAtomically(impl.config.data_dir / kRuntimeFile, json::serialize(runtime) + "\n");
  if (!written) spdlog::warn("{}", written.toString());
  impl.serving = true;
  spdlog::info("iothubd serving hub '{}' on {}: HTTPS {}, MQTT/TLS {}, AMQP/TLS {}{}{}{}",
               impl.config.host_name, impl.config.bind_address, impl.https->port(),
               impl.mqtts->port(), impl.amqps->port(),
               impl.http ? ", HTTP " + std::to_string(impl.http->port()) : std::string(),
               impl.mqtt ? ", MQTT " + std::to_string(impl.mqtt->port()) : std::string(),
               impl.ops ? ", metrics " + std::to_string(impl.ops->port()) : std::string());

  unsigned threads = impl.config.io_threads != 0
                         ? impl.config.io_threads
                         : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&impl] { impl.io.run(); });
  impl.io.run();
  for (auto& t : pool) t.join();
  impl.jobs->stop();  // records what finished; the rest resumes at the next start
  impl.workers.join();
  impl.device_workers.join();
  impl.c2d_workers.join();
  impl.telemetry->stop();  // appends what is queued (its devices get no PUBACK: they resend)
  impl.leaveCluster();
  spdlog::info("stopped");
  if (impl.index_load_failed) {
    return Status(ErrorCode::ServiceUnavailable,
                  "stopped because the twin index could not be loaded from the store (see the "
                  "log); start it again once the store can be read");
  }
  if (impl.lost_lock) {
    // A supervisor that restarts only failed processes must restart this one.
    return Status(ErrorCode::ServiceUnavailable,
                  "stopped because a lock this node must hold in the database was lost; "
                  "start it again once the database answers");
  }
  return Status::ok();
}

void Hub::stop() {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl] { impl->beginShutdown(); });
}

std::uint16_t Hub::httpsPort() const { return impl_->https->port(); }

std::optional<std::uint16_t> Hub::httpPort() const {
  if (!impl_->http) return std::nullopt;
  return impl_->http->port();
}

Result<std::string> serviceConnectionString(const fs::path& data_dir, const std::string& policy,
                                            const std::optional<std::string>& host_name,
                                            std::string_view store_text, bool event_hubs,
                                            std::uint16_t amqp_port) {
  auto location = parseStoreLocation(store_text, data_dir);
  if (!location) return location.status();
  if (location->kind == StoreLocation::Kind::Sqlite && !fs::exists(location->sqlite_file)) {
    return Status(ErrorCode::NotFound, "no hub in " + data_dir.string() +
                                           " (start it once with: iothubd --data-dir " +
                                           data_dir.string() + ")");
  }
  std::string host = host_name.value_or("");
  if (host.empty()) {
    auto text = readFile(data_dir / kHubFile);
    if (!text) return text.status();
    auto doc = parseJson(*text);
    const json::string* stored =
        doc && doc->is_object() ? findString(doc->get_object(), "hostName") : nullptr;
    if (stored == nullptr)
      return Status(ErrorCode::StoreCorruption,
                    (data_dir / kHubFile).string() + " has no hostName");
    host = std::string(*stored);
  }
  auto store = openStore(*location);
  if (!store) return store.status();
  auto policies = (*store)->policies().listPolicies();
  if (!policies) return policies.status();
  for (const auto& p : *policies) {
    if (p.name == policy) {
      if (event_hubs) {
        std::string port = amqp_port == 5671 ? "" : ":" + std::to_string(amqp_port);
        return "Endpoint=sb://" + host + port + "/;SharedAccessKeyName=" + p.name +
               ";SharedAccessKey=" + p.primary_key + ";EntityPath=" + eventHubsEntity(host);
      }
      return auth::ServiceConnectionString{host, p.name, p.primary_key}.toString();
    }
  }
  return Status(ErrorCode::NotFound, "the hub has no shared access policy named '" + policy + "'");
}

}  // namespace iothub::server
