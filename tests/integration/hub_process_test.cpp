// The real iothubd as a process on loopback, driven through our C++ service SDK,
// iothubctl and raw sockets: startup contract, persistence, shutdown, bad input.
#include "tests/support/hub_process.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>

#include "auth/connection_string.hpp"
#include "iothub/service/registry_client.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub {
namespace {

using testing::HubProcess;
using testing::rawExchange;
using testing::TempDir;

std::string connectionString(const std::filesystem::path& data_dir,
                             const std::string& policy = "iothubowner") {
  auto r = testing::runCommand(
      {IOTHUBD_PATH, "connection-string", "--data-dir", data_dir.string(), "--policy", policy},
      data_dir.parent_path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  while (!r.out.empty() && (r.out.back() == '\n' || r.out.back() == '\r')) r.out.pop_back();
  return r.out;
}

class HubProcessTest : public ::testing::Test {
 protected:
  std::filesystem::path dataDir() const { return dir_.path() / "data"; }

  service::RegistryClient client(HubProcess& hub, const std::string& policy = "iothubowner") {
    auto c = service::RegistryClient::fromConnectionString(
        connectionString(dataDir(), policy),
        service::ServiceClientOptions{hub.caFile().string(), hub.httpsEndpoint()});
    EXPECT_TRUE(c.isOk()) << c.status().toString();
    return std::move(*c);
  }

  testing::CommandResult ctl(HubProcess& hub, std::vector<std::string> args) {
    std::vector<std::string> argv{IOTHUBCTL_PATH, "--ca", hub.caFile().string(), "--endpoint",
                                  hub.httpsEndpoint()};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::runCommand(argv, dir_.path(),
                               {"IOTHUB_CONNECTION_STRING=" + connectionString(dataDir())});
  }

  TempDir dir_;
};

TEST_F(HubProcessTest, FirstStartCreatesPoliciesCertificatesAndDatabase) {
  HubProcess hub(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(hub.start()) << hub.startupError();
  for (auto f : {"iothub.db", "tls/ca.pem", "tls/server.pem", "tls/server.key"}) {
    EXPECT_TRUE(std::filesystem::exists(dataDir() / f)) << f;
  }
  for (auto policy : {"iothubowner", "service", "device", "registryRead", "registryReadWrite"}) {
    auto cs = auth::ServiceConnectionString::parse(connectionString(dataDir(), policy));
    ASSERT_TRUE(cs.isOk()) << policy;
    EXPECT_EQ(cs->host_name, "localhost");
    EXPECT_EQ(cs->key_name, policy);
    EXPECT_EQ(cs->key.size(), 44u);
  }
  auto unknown = testing::runCommand(
      {IOTHUBD_PATH, "connection-string", "--data-dir", dataDir().string(), "--policy", "nosuch"},
      dir_.path());
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("nosuch"), std::string::npos);
  EXPECT_EQ(hub.stop(), 0);
}

TEST_F(HubProcessTest, RegistryRoundTripThroughTheSdkOverTls) {
  HubProcess hub(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(hub.start()) << hub.startupError();
  auto registry = client(hub);
  service::Device d;
  d.device_id = "sdk-1";
  auto created = registry.create(d);
  ASSERT_TRUE(created.isOk()) << created.status().toString();
  EXPECT_EQ(created->primary_key.size(), 44u);
  auto got = registry.get("sdk-1");
  ASSERT_TRUE(got.isOk());
  EXPECT_EQ(got->primary_key, created->primary_key);
  EXPECT_EQ(registry.create(d).code(), ErrorCode::DeviceAlreadyExists);
  got->status = service::DeviceStatus::Disabled;
  EXPECT_EQ(registry.update(*got, "not-the-etag").code(), ErrorCode::PreconditionFailed);
  auto updated = registry.update(*got, got->etag);
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(updated->status, service::DeviceStatus::Disabled);
  auto list = registry.list();
  ASSERT_TRUE(list.isOk());
  EXPECT_EQ(list->size(), 1u);
  auto stats = registry.statistics();
  ASSERT_TRUE(stats.isOk());
  EXPECT_EQ(stats->disabled_device_count, 1);
  EXPECT_TRUE(registry.remove("sdk-1").isOk());
  EXPECT_EQ(registry.get("sdk-1").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(registry.remove("sdk-1").code(), ErrorCode::DeviceNotFound);

  auto read_only = client(hub, "registryRead");
  EXPECT_EQ(read_only.create(d).code(), ErrorCode::Unauthorized);
  EXPECT_TRUE(read_only.list().isOk());
  EXPECT_EQ(hub.stop(), 0);
}

TEST_F(HubProcessTest, IothubctlManagesDevices) {
  HubProcess hub(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(hub.start()) << hub.startupError();
  auto create = ctl(hub, {"--json", "device", "create", "ctl-1"});
  ASSERT_EQ(create.exit_code, 0) << create.err;
  auto created = boost::json::parse(create.out).as_object();
  EXPECT_EQ(created.at("deviceId").as_string(), "ctl-1");

  auto get = ctl(hub, {"device", "get", "ctl-1"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_NE(get.out.find("ctl-1"), std::string::npos);

  auto list = ctl(hub, {"device", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("ctl-1"), std::string::npos);

  auto cs = ctl(hub, {"device", "connection-string", "ctl-1"});
  ASSERT_EQ(cs.exit_code, 0) << cs.err;
  auto parsed = auth::DeviceConnectionString::parse(cs.out.substr(0, cs.out.find('\n')));
  ASSERT_TRUE(parsed.isOk()) << cs.out;
  EXPECT_EQ(parsed->device_id, "ctl-1");
  EXPECT_EQ(
      parsed->shared_access_key.value_or(""),
      std::string(created.at("authentication").at("symmetricKey").at("primaryKey").as_string()));

  auto dup = ctl(hub, {"device", "create", "ctl-1"});
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_NE(dup.err.find("DeviceAlreadyExists"), std::string::npos) << dup.err;

  EXPECT_EQ(ctl(hub, {"device", "delete", "ctl-1"}).exit_code, 0);
  auto missing = ctl(hub, {"device", "get", "ctl-1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("DeviceNotFound"), std::string::npos) << missing.err;

  auto usage = ctl(hub, {"device", "frobnicate"});
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_EQ(hub.stop(), 0);
}

// iothubctl's job extension flags and `job watch` against a real hub: a dry run previews and
// creates nothing; a method job with retry, abort, rollout and an offline wait is echoed as
// scheduled; `job watch` follows the live stream to the end and its exit code says how the
// job ended; a re-run of the job's canceled devices targets exactly those.
TEST_F(HubProcessTest, IothubctlSchedulesExtendedJobsAndWatchesThemEnd) {
  HubProcess hub(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(hub.start()) << hub.startupError();
  for (std::string id : {"w-1", "w-2", "w-3"}) {
    ASSERT_EQ(ctl(hub, {"device", "create", id}).exit_code, 0);
  }
  auto preview = ctl(hub, {"--json", "job", "schedule-method", "--job-id", "wj", "--query",
                           "STARTSWITH(deviceId, 'w-')", "--method", "lockDoor", "--dry-run"});
  ASSERT_EQ(preview.exit_code, 0) << preview.err;
  auto counted = boost::json::parse(preview.out).as_object();
  EXPECT_EQ(counted.at("deviceCount"), 3);
  auto missing = ctl(hub, {"job", "get", "wj"});
  EXPECT_EQ(missing.exit_code, 1) << "a dry run creates nothing";

  auto scheduled =
      ctl(hub, {"--json", "job", "schedule-method", "--job-id", "wj", "--query",
                "STARTSWITH(deviceId, 'w-')", "--method", "lockDoor", "--retry",
                "2:1:DeviceNotOnline", "--abort", "any:90:3", "--rollout-max-per-minute", "600",
                "--wait-offline", "1", "--priority", "4"});
  ASSERT_EQ(scheduled.exit_code, 0) << scheduled.err;
  auto job = boost::json::parse(scheduled.out).as_object();
  EXPECT_EQ(job.at("retry").at("maxAttempts"), 2);
  EXPECT_EQ(job.at("abort").at("criteria").at(0).at("failureType"), "any");
  EXPECT_EQ(job.at("rollout").at("maximumPerMinute"), 600);
  EXPECT_EQ(job.at("offlineDevices").at("waitSeconds"), 1);
  EXPECT_EQ(job.at("priority"), 4);

  // Nobody connects: after the one-second wait every device fails, the abort trips, and the
  // job fails; `job watch` sees it end and exits 1.
  auto watched = ctl(hub, {"--json", "job", "watch", "wj"});
  EXPECT_EQ(watched.exit_code, 1) << watched.err;
  std::istringstream lines(watched.out);
  std::string line, last;
  int events = 0;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    ++events;
    last = line;
  }
  ASSERT_GE(events, 1) << watched.out;
  auto end = boost::json::parse(last).as_object();
  EXPECT_EQ(end.at("status"), "failed");
  EXPECT_EQ(end.at("deviceJobStatistics").at("failedCount"), 3);
  EXPECT_NE(std::string(end.at("failureReason").as_string()).find("abort criterion"),
            std::string::npos);

  auto rerun = ctl(hub, {"--json", "job", "schedule-twin", "--job-id", "again", "--rerun-of", "wj",
                         "--status", "failed", "--tags", R"({"retried":true})", "--dry-run"});
  ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
  EXPECT_EQ(boost::json::parse(rerun.out).at("deviceCount"), 3);
  EXPECT_EQ(hub.stop(), 0);
}

TEST_F(HubProcessTest, RestartKeepsDevicesKeysAndCertificates) {
  std::string key, ca, cs;
  {
    HubProcess hub(IOTHUBD_PATH, dataDir());
    ASSERT_TRUE(hub.start()) << hub.startupError();
    service::Device d;
    d.device_id = "keeper";
    auto created = client(hub).create(d);
    ASSERT_TRUE(created.isOk());
    key = created->primary_key;
    ca = testing::readFile(hub.caFile());
    cs = connectionString(dataDir());
    EXPECT_EQ(hub.stop(), 0);
    EXPECT_FALSE(std::filesystem::exists(dataDir() / "iothubd.json"))
        << "runtime file removed on exit";
  }
  HubProcess again(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(again.start()) << again.startupError();
  EXPECT_EQ(testing::readFile(again.caFile()), ca);
  EXPECT_EQ(connectionString(dataDir()), cs);
  auto got = client(again).get("keeper");
  ASSERT_TRUE(got.isOk()) << got.status().toString();
  EXPECT_EQ(got->primary_key, key);
  EXPECT_EQ(again.stop(), 0);
}

TEST_F(HubProcessTest, KillDashNineLosesNoAcknowledgedWrite) {
  HubProcess hub(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(hub.start()) << hub.startupError();
  {
    auto registry = client(hub);
    for (int i = 0; i < 20; ++i) {
      service::Device d;
      d.device_id = "durable-" + std::to_string(i);
      ASSERT_TRUE(registry.create(d).isOk());
    }
  }
  hub.kill9();
  HubProcess again(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(again.start()) << again.startupError();
  auto stats = client(again).statistics();
  ASSERT_TRUE(stats.isOk());
  EXPECT_EQ(stats->total_device_count, 20);
  EXPECT_EQ(again.stop(), 0);
}

TEST_F(HubProcessTest, StartupErrorsGiveOneClearMessage) {
  HubProcess first(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(first.start()) << first.startupError();
  // Port in use.
  auto busy = testing::runCommand(
      {IOTHUBD_PATH, "--data-dir", (dir_.path() / "other").string(), "--bind", "127.0.0.1",
       "--https-port", std::to_string(first.httpsPort()), "--mqtt-port", "0", "--amqp-port", "0"},
      dir_.path());
  EXPECT_NE(busy.exit_code, 0);
  EXPECT_NE(busy.err.find("in use"), std::string::npos) << busy.err;
  EXPECT_EQ(first.stop(), 0);

  // Unreadable certificate.
  auto cert =
      testing::runCommand({IOTHUBD_PATH, "--data-dir", (dir_.path() / "c").string(), "--https-port",
                           "0", "--mqtt-port", "0", "--amqp-port", "0", "--tls-cert",
                           "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"},
                          dir_.path());
  EXPECT_NE(cert.exit_code, 0);
  EXPECT_NE(cert.err.find("certificate"), std::string::npos) << cert.err;

  // Corrupt config file.
  auto config = dir_.path() / "bad.toml";
  std::ofstream(config) << "https-port = [[[ not toml\n";
  auto bad = testing::runCommand(
      {IOTHUBD_PATH, "--config", config.string(), "--data-dir", (dir_.path() / "d").string()},
      dir_.path());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_FALSE(bad.err.empty());

  // A data "directory" that is a file.
  std::ofstream(dir_.path() / "afile") << "x";
  auto file = testing::runCommand({IOTHUBD_PATH, "--data-dir", (dir_.path() / "afile").string(),
                                   "--https-port", "0", "--mqtt-port", "0", "--amqp-port", "0"},
                                  dir_.path());
  EXPECT_NE(file.exit_code, 0);
  EXPECT_NE(file.err.find("iothubd: "), std::string::npos) << file.err;
}

TEST_F(HubProcessTest, ConfigFileAndEnvironmentSetOptionsAndFlagsWin) {
  auto config = dir_.path() / "hub.toml";
  std::ofstream(config) << "hostname = \"from-config.test\"\n";
  HubProcess hub(IOTHUBD_PATH, dataDir(), {"--config", config.string()});
  ASSERT_TRUE(hub.start()) << hub.startupError();
  EXPECT_EQ(auth::ServiceConnectionString::parse(connectionString(dataDir()))->host_name,
            "from-config.test");
  EXPECT_EQ(hub.stop(), 0);

  HubProcess flagged(IOTHUBD_PATH, dataDir(),
                     {"--config", config.string(), "--hostname", "from-flag.test"});
  ASSERT_TRUE(flagged.start()) << flagged.startupError();
  EXPECT_EQ(auth::ServiceConnectionString::parse(connectionString(dataDir()))->host_name,
            "from-flag.test");
  EXPECT_EQ(flagged.stop(), 0);
}

TEST_F(HubProcessTest, MalformedAndOversizedRequestsGetErrorsAndTheHubKeepsServing) {
  HubProcess hub(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(hub.start()) << hub.startupError();
  auto garbage = rawExchange(hub.httpPort(), "THIS IS NOT HTTP\r\n\r\n");
  EXPECT_NE(garbage.find("400"), std::string::npos) << garbage;
  EXPECT_NE(garbage.find("application/json"), std::string::npos) << garbage;

  std::string huge =
      "PUT /devices/big HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000000\r\n\r\n";
  auto too_large = rawExchange(hub.httpPort(), huge);
  EXPECT_NE(too_large.find("413"), std::string::npos) << too_large;
  EXPECT_NE(too_large.find("MessageTooLarge"), std::string::npos) << too_large;

  auto unauth = rawExchange(
      hub.httpPort(), "GET /devices/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_NE(unauth.find("401"), std::string::npos) << unauth;

  // Still serving everyone else.
  auto stats = client(hub).statistics();
  EXPECT_TRUE(stats.isOk()) << stats.status().toString();
  EXPECT_TRUE(hub.process().running());
  EXPECT_EQ(hub.stop(), 0);
}

// --metrics-port: Prometheus metrics, liveness and readiness over plain HTTP, on a port of
// their own (docs/operations.md).
TEST_F(HubProcessTest, MetricsHealthAndReadinessOnTheMetricsPort) {
  HubProcess hub(IOTHUBD_PATH, dataDir(), {"--metrics-port", "0"});
  ASSERT_TRUE(hub.start()) << hub.startupError();
  ASSERT_GT(hub.metricsPort(), 0);
  auto get = [&](const std::string& method, const std::string& path) {
    return rawExchange(hub.metricsPort(), method + " " + path +
                                              " HTTP/1.1\r\nHost: localhost\r\nConnection: "
                                              "close\r\nContent-Length: 0\r\n\r\n");
  };
  auto alive = get("GET", "/healthz");
  EXPECT_EQ(alive.rfind("HTTP/1.1 200", 0), 0u) << alive;
  EXPECT_NE(alive.find(R"({"status":"alive"})"), std::string::npos) << alive;
  auto ready = get("GET", "/readyz");
  EXPECT_EQ(ready.rfind("HTTP/1.1 200", 0), 0u) << ready;
  EXPECT_NE(ready.find(R"("status":"ready")"), std::string::npos) << ready;
  EXPECT_NE(ready.find(R"("store":true)"), std::string::npos) << ready;
  EXPECT_NE(ready.find(R"("listeners":true)"), std::string::npos) << ready;

  auto registry = client(hub);
  service::Device d;
  d.device_id = "metrics-1";
  ASSERT_TRUE(registry.create(d).isOk());
  ASSERT_TRUE(registry.get("metrics-1").isOk());
  ASSERT_TRUE(registry.get("metrics-1").isOk());
  EXPECT_EQ(registry.get("no-such-device").code(), ErrorCode::DeviceNotFound);

  auto scrape = get("GET", "/metrics");
  EXPECT_EQ(scrape.rfind("HTTP/1.1 200", 0), 0u) << scrape;
  EXPECT_NE(scrape.find("text/plain; version=0.0.4"), std::string::npos) << scrape;
  for (const char* line :
       {R"(iothub_http_requests_total{code="200",method="GET",route="/devices/{id}"} 2)",
        R"(iothub_http_requests_total{code="404",method="GET",route="/devices/{id}"} 1)",
        R"(iothub_http_requests_total{code="200",method="PUT",route="/devices/{id}"} 1)",
        R"(iothub_http_request_duration_seconds_count{route="/devices/{id}"} 4)",
        "iothub_twin_index_devices 1", "iothub_connected_devices 0",
        "# TYPE iothub_connects_refused_total counter", "iothub_telemetry_messages_total 0"}) {
    EXPECT_NE(scrape.find(line), std::string::npos) << line << "\n" << scrape;
  }

  // Only GET, only these three paths; the public ports do not serve them.
  EXPECT_EQ(get("GET", "/devices").rfind("HTTP/1.1 404", 0), 0u);
  auto post = get("POST", "/metrics");
  EXPECT_EQ(post.rfind("HTTP/1.1 405", 0), 0u) << post;
  auto public_metrics = rawExchange(
      hub.httpPort(), "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(public_metrics.find("iothub_http_requests_total"), std::string::npos) << public_metrics;
  EXPECT_EQ(hub.stop(), 0);
}

TEST_F(HubProcessTest, SigtermWithKeepAliveConnectionsExitsCleanly) {
  HubProcess hub(IOTHUBD_PATH, dataDir());
  ASSERT_TRUE(hub.start()) << hub.startupError();
  auto registry = client(hub);  // holds a keep-alive TLS connection open
  ASSERT_TRUE(registry.list().isOk());
  EXPECT_EQ(hub.stop(), 0);
}

}  // namespace
}  // namespace iothub
