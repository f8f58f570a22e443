// A real iothubd tried the way an attacker or an unlucky operator would: oversized
// credentials, idle and slow sockets, more connections than it may hold, devices that stop
// reading, revocations racing CONNECTs, two hubs on one directory, file permissions, and
// persistent MQTT sessions across restarts (docs/limits.md).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "iothub/service/job_client.hpp"
#include "iothub/service/method_client.hpp"
#include "iothub/service/registry_client.hpp"
#include "iothub/service/twin_client.hpp"
#include "tests/support/hub_process.hpp"
#include "tests/support/postgres_server.hpp"
#include "tests/support/raw_mqtt.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub {
namespace {

using namespace std::chrono_literals;
using testing::connackCode;
using testing::deviceConnect;
using testing::deviceToken;
using testing::HubProcess;
using testing::RawMqttConnection;
using testing::RawTcpConnection;
using testing::SteadyClock;
using testing::TempDir;
using testing::waitFor;
namespace fs = std::filesystem;

unsigned fileMode(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

class HardeningTest : public ::testing::Test {
 protected:
  void startHub(std::vector<std::string> extra_args = {}) {
    hub_ = std::make_unique<HubProcess>(IOTHUBD_PATH, dir_.path() / "data", std::move(extra_args));
    ASSERT_TRUE(hub_->start()) << hub_->startupError();
    connectService();
  }

  void connectService() {
    auto parsed = auth::ServiceConnectionString::parse(hub_->serviceConnectionString());
    ASSERT_TRUE(parsed.isOk()) << parsed.status().toString();
    auto transport = service::HttpTransport::create(
        *parsed, service::ServiceClientOptions{"", hub_->httpEndpoint()});
    ASSERT_TRUE(transport.isOk()) << transport.status().toString();
    transport_ = std::move(*transport);
  }

  void TearDown() override {
    if (hub_ && hub_->process().running()) {
      EXPECT_EQ(hub_->stop(), 0) << "iothubd did not exit cleanly on SIGTERM";
    }
  }

  service::RegistryClient registry() { return service::RegistryClient(transport_); }
  service::TwinClient twins() { return service::TwinClient(transport_); }

  service::Device createDevice(const std::string& id) {
    service::Device d;
    d.device_id = id;
    auto created = registry().create(d);
    EXPECT_TRUE(created.isOk()) << created.status().toString();
    return created.isOk() ? *created : d;
  }

  std::optional<service::ConnectionState> connectionState(const std::string& id) {
    auto got = registry().get(id);
    if (!got) return std::nullopt;
    return got->connection_state;
  }

  // A raw MQTT device on the plain port, CONNECTed with clean session 0 and accepted.
  std::unique_ptr<RawMqttConnection> rawDevice(const service::Device& d,
                                               bool* session_present = nullptr) {
    auto raw = std::make_unique<RawMqttConnection>(hub_->mqttPlainPort());
    EXPECT_TRUE(raw->connected());
    raw->sendPacket(deviceConnect(d.device_id, deviceToken(d.device_id, d.primary_key)));
    auto answer = raw->read();
    EXPECT_EQ(connackCode(answer), mqtt::ConnectReturnCode::Accepted);
    if (session_present != nullptr && answer) {
      *session_present = std::get<mqtt::ConnAck>(*answer).session_present;
    }
    return raw;
  }

  void expectRestStillServes() {
    ASSERT_TRUE(hub_->process().running()) << hub_->process().err();
    auto stats = registry().statistics();
    EXPECT_TRUE(stats.isOk()) << stats.status().toString();
  }

  void checkSessionsSurviveRestarts(std::vector<std::string> store_args);

  TempDir dir_;
  std::unique_ptr<HubProcess> hub_;
  std::shared_ptr<service::HttpTransport> transport_;
};

// --- credentials -------------------------------------------------------------------------

TEST_F(HardeningTest, OversizedSasTokensAreRefusedOverMqttAndRest) {
  startHub();
  auto d = createDevice("big-token");
  // ~65 KB of distinct fields: parsing used to be quadratic in their number (~105 ms each).
  std::string token = deviceToken("big-token", d.primary_key);
  for (int i = 0; token.size() < 65000; ++i) token += "&f" + std::to_string(i) + "=x";
  for (int attempt = 0; attempt < 20; ++attempt) {
    RawMqttConnection raw(hub_->mqttPlainPort());
    ASSERT_TRUE(raw.connected());
    raw.sendPacket(deviceConnect("big-token", token));
    EXPECT_EQ(connackCode(raw.read(10s)), mqtt::ConnectReturnCode::NotAuthorized);
  }
  EXPECT_NE(hub_->process().err().find("the SAS token is too long"), std::string::npos);

  // REST: a 12 KB Authorization header (below the 16 KB header limit) is a 401.
  std::string header(token.substr(0, 12 * 1024));
  RawTcpConnection http(hub_->httpPort());
  ASSERT_TRUE(http.connected());
  http.sendBytes(
      "GET /devices/big-token?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n"
      "Connection: close\r\nAuthorization: " +
      header + "\r\n\r\n");
  ASSERT_TRUE(http.waitClosed(10s));
  EXPECT_TRUE(http.received().starts_with("HTTP/1.1 401")) << http.received().substr(0, 200);
  EXPECT_NE(http.received().find("longer than 4096"), std::string::npos);
  expectRestStillServes();
}

// --- the data directory --------------------------------------------------------------------

TEST_F(HardeningTest, DataDirectoryIsPrivateAndServesOneHubAtATime) {
  startHub();
  createDevice("perm-1");  // so the database and its WAL exist with content
  fs::path data = hub_->dataDir();
  EXPECT_EQ(fileMode(data), 0700u);
  for (const char* name : {"iothub.db", "iothub.db-wal", "hub.json", "iothubd.json", "tls/ca.pem",
                           "tls/ca-key.pem", "tls/server.pem", "tls/server-key.pem"}) {
    if (!fs::exists(data / name)) continue;
    EXPECT_EQ(fileMode(data / name), 0600u) << name;
  }
  EXPECT_EQ(fileMode(data / "tls"), 0700u);
  EXPECT_EQ(fileMode(data / "iothub.db"), 0600u);

  // A second hub on the same directory refuses to start and leaves the first one alone.
  testing::Process second({IOTHUBD_PATH, "--data-dir", data.string(), "--bind", "127.0.0.1",
                           "--https-port", "0", "--mqtt-port", "0", "--amqp-port", "0"},
                          dir_.path());
  auto code = second.wait(30s);
  ASSERT_TRUE(code.has_value()) << "the second iothubd kept running";
  EXPECT_NE(*code, 0);
  EXPECT_NE(second.err().find("is in use by another iothubd (pid " +
                              std::to_string(hub_->process().pid()) + ")"),
            std::string::npos)
      << second.err();
  expectRestStillServes();

  // Permissions widened while the hub was down are narrowed again at start, with a log line.
  ASSERT_EQ(hub_->stop(), 0);
  fs::permissions(data, fs::perms(0755));
  fs::permissions(data / "iothub.db", fs::perms(0644));
  ASSERT_TRUE(hub_->start()) << hub_->startupError();
  EXPECT_EQ(fileMode(data), 0700u);
  EXPECT_EQ(fileMode(data / "iothub.db"), 0600u);
  EXPECT_NE(hub_->process().err().find("to owner-only permissions"), std::string::npos);
}

// --- sockets and file descriptors -----------------------------------------------------------

// The reproduction: a hub started with the common soft limit of 1 024 open files, then
// 1 100 idle connections. The hub raises its soft limit to the hard one, so they all fit
// and everybody else is still served.
TEST_F(HardeningTest, ThousandsOfIdleSocketsDoNotLockEverybodyOut) {
  rlimit original{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &original), 0);
  ASSERT_GE(original.rlim_max, 4096u) << "this test needs a hard open-file limit of at least 4096";
  rlimit low = original;
  low.rlim_cur = 1024;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  startHub();  // inherits the 1 024 soft limit
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &original), 0);
  EXPECT_NE(hub_->process().err().find("open-file limit: soft " +
                                       std::to_string(original.rlim_max) + " (was 1024)"),
            std::string::npos)
      << hub_->process().err();

  std::vector<std::unique_ptr<RawTcpConnection>> idle;
  for (int i = 0; i < 1100; ++i) {
    idle.push_back(
        std::make_unique<RawTcpConnection>(i % 2 == 0 ? hub_->httpPort() : hub_->mqttPlainPort()));
    ASSERT_TRUE(idle.back()->connected()) << "connection " << i;
  }
  auto d = createDevice("after-idle");
  auto raw = rawDevice(d);
  expectRestStillServes();
}

TEST_F(HardeningTest, ConnectionsBeyondMaxConnectionsAreRefusedAndCounted) {
  startHub({"--max-connections", "21"});
  // The service client's keep-alive connection is one of the 21.
  auto statistics = [&]() -> json::object {
    service::HttpRequest request;
    request.path = "/statistics/service";
    auto stats = transport_->sendJson(request);
    EXPECT_TRUE(stats.isOk()) << stats.status().toString();
    return stats.isOk() ? stats->as_object() : json::object{};
  };
  auto counter = [](const json::object& stats, std::string_view name) {
    const auto* v = stats.if_contains(name);
    return v != nullptr ? v->to_number<std::int64_t>() : -1;
  };
  ASSERT_EQ(counter(statistics(), "openConnections"), 1);
  std::vector<std::unique_ptr<RawTcpConnection>> idle;
  for (int i = 0; i < 20; ++i) {
    idle.push_back(
        std::make_unique<RawTcpConnection>(i % 2 == 0 ? hub_->httpPort() : hub_->mqttPlainPort()));
    ASSERT_TRUE(idle.back()->connected());
  }
  ASSERT_TRUE(waitFor([&] { return counter(statistics(), "openConnections") == 21; }, 10s))
      << "the hub did not take all 20 idle connections";
  for (int port : {hub_->httpPort(), hub_->mqttPlainPort(), hub_->httpsPort(), hub_->mqttPort()}) {
    RawTcpConnection extra(port);
    ASSERT_TRUE(extra.connected());  // the kernel completes the TCP handshake...
    EXPECT_TRUE(extra.waitClosed(5s)) << "port " << port << ": ...the hub closes it at once";
    EXPECT_TRUE(extra.received().empty());
  }
  auto stats = statistics();
  EXPECT_EQ(counter(stats, "refusedConnectionsOverLimit"), 4) << json::serialize(stats);
  EXPECT_EQ(counter(stats, "openConnections"), 21) << json::serialize(stats);
  EXPECT_NE(hub_->process().err().find("the limit is --max-connections 21"), std::string::npos);
  // Slots come back as connections close.
  idle.clear();
  EXPECT_TRUE(waitFor([&] { return counter(statistics(), "openConnections") == 1; }, 10s));
  auto d = createDevice("after-limit");
  auto raw = rawDevice(d);
  expectRestStillServes();
}

TEST_F(HardeningTest, SlowAndSilentClientsAreClosedAfterTheHandshakeTimeout) {
  startHub({"--handshake-timeout", "2"});
  struct Probe {
    const char* what;
    int port;
    std::string bytes;
  };
  std::vector<Probe> probes{
      {"HTTP, nothing sent", hub_->httpPort(), ""},
      {"HTTP, headers never finished", hub_->httpPort(),
       "GET /statistics/service HTTP/1.1\r\nHost: localhost\r\nX-Slow: "},
      {"HTTPS, no TLS handshake", hub_->httpsPort(), ""},
      {"MQTT, no CONNECT", hub_->mqttPlainPort(), ""},
      {"MQTT, half a CONNECT", hub_->mqttPlainPort(), std::string("\x10\x40\x00\x04MQTT", 8)},
      {"MQTT/TLS, no TLS handshake", hub_->mqttPort(), ""},
  };
  std::vector<std::unique_ptr<RawTcpConnection>> connections;
  auto started = SteadyClock::now();
  for (const auto& probe : probes) {
    connections.push_back(std::make_unique<RawTcpConnection>(probe.port));
    ASSERT_TRUE(connections.back()->connected()) << probe.what;
    connections.back()->sendBytes(probe.bytes);
  }
  for (std::size_t i = 0; i < probes.size(); ++i) {
    EXPECT_TRUE(connections[i]->waitClosed(8s)) << probes[i].what << ": still open";
  }
  auto elapsed = SteadyClock::now() - started;
  EXPECT_GE(elapsed, 1500ms) << "closed before the timeout";
  EXPECT_LT(elapsed, 8s);
  expectRestStillServes();
}

// --- devices that do not read ----------------------------------------------------------------

class NonReadingDeviceTest : public HardeningTest {
 protected:
  // A device whose twin is ~30 KB, so that each twin GET answer is that large.
  service::Device bigTwinDevice(const std::string& id) {
    auto d = createDevice(id);
    json::object desired;
    for (int i = 0; i < 7; ++i) desired["k" + std::to_string(i)] = std::string(4000, 'a' + i);
    auto updated = twins().update(id, json::object{{"properties", {{"desired", desired}}}});
    EXPECT_TRUE(updated.isOk()) << updated.status().toString();
    return d;
  }

  // Asks for the twin `count` times without reading a byte of the answers.
  static void spamTwinGets(RawMqttConnection& raw, int count) {
    raw.sendPacket(mqtt::Subscribe{1, {{"$iothub/twin/res/#", mqtt::QoS::AtMostOnce}}});
    std::string requests;
    for (int i = 0; i < count; ++i) {
      requests += testing::encoded(mqtt::Publish{"$iothub/twin/GET/?$rid=" + std::to_string(i), "",
                                                 mqtt::QoS::AtMostOnce, false, false, 0});
    }
    raw.sendBytes(requests);
  }
};

TEST_F(NonReadingDeviceTest, BacklogBeyondTheCapClosesTheConnectionWhileAWriteIsStuck) {
  startHub({"--write-timeout", "600"});  // only the backlog cap can close it here
  auto d = bigTwinDevice("no-read-1");
  auto raw = rawDevice(d);
  spamTwinGets(*raw, 2000);  // ~60 MB of answers against an 8 MB cap
  ASSERT_TRUE(waitFor(
      [&] { return hub_->process().err().find("it does not read") != std::string::npos; }, 30s))
      << "the hub kept queueing";
  EXPECT_TRUE(waitFor(
      [&] { return connectionState("no-read-1") == service::ConnectionState::Disconnected; }, 10s))
      << "the twin still says Connected";
  expectRestStillServes();
}

TEST_F(NonReadingDeviceTest, AStalledWriteClosesTheConnectionAfterTheWriteTimeout) {
  startHub({"--write-timeout", "2"});
  auto d = bigTwinDevice("no-read-2");
  auto raw = rawDevice(d);
  // ~7.5 MB: below the backlog cap, far above what loopback socket buffers hold.
  spamTwinGets(*raw, 250);
  ASSERT_TRUE(waitFor(
      [&] { return hub_->process().err().find("a write stalled") != std::string::npos; }, 30s))
      << hub_->process().err().substr(0, 2000);
  EXPECT_TRUE(waitFor(
      [&] { return connectionState("no-read-2") == service::ConnectionState::Disconnected; }, 10s));
  expectRestStillServes();
}

// --- revocation racing CONNECT ----------------------------------------------------------------

// A device disabled while its CONNECT is being authenticated must not keep a live
// connection: whichever way the race goes, the device ends up disconnected.
TEST_F(HardeningTest, DisablingADeviceDuringItsConnectNeverLeavesItConnected) {
  startHub();
  for (int round = 0; round < 25; ++round) {
    std::string id = "race-" + std::to_string(round);
    auto d = createDevice(id);
    auto raw = std::make_unique<RawMqttConnection>(hub_->mqttPlainPort());
    ASSERT_TRUE(raw->connected());
    std::thread disabler([&] {
      auto current = registry().get(id);
      ASSERT_TRUE(current.isOk());
      current->status = service::DeviceStatus::Disabled;
      EXPECT_TRUE(registry().update(*current).isOk());
    });
    raw->sendPacket(deviceConnect(id, deviceToken(id, d.primary_key)));
    disabler.join();
    auto answer = connackCode(raw->read(10s));
    if (answer == mqtt::ConnectReturnCode::Accepted) {
      EXPECT_TRUE(raw->waitClosed(10s)) << id << ": accepted and never closed after disabling";
    } else {
      EXPECT_EQ(answer, mqtt::ConnectReturnCode::NotAuthorized) << id;
    }
    EXPECT_TRUE(
        waitFor([&] { return connectionState(id) == service::ConnectionState::Disconnected; }, 10s))
        << id;
  }
  expectRestStillServes();
}

// --- query load and the device path ----------------------------------------------------------

// REST handlers (queries included) and the device path have separate worker threads: a
// queue of slow REST requests delays other REST requests, never a device's CONNECT. Bulk
// registry requests hold a REST worker for a store transaction per entry; with one REST
// worker and 16 clients, each waits behind the others. (With one shared pool the CONNECT's
// authentication waited in the same queue, as long as a request.)
TEST_F(HardeningTest, SlowRestLoadDoesNotStallDeviceConnects) {
  startHub({"--worker-threads", "1"});
  auto d = createDevice("load-device");
  auto service_cs = auth::ServiceConnectionString::parse(hub_->serviceConnectionString());
  ASSERT_TRUE(service_cs.isOk());

  constexpr int kClients = 16;
  constexpr int kRounds = 3;
  std::atomic<int> failed{0};
  std::mutex latencies_mutex;
  std::vector<double> latencies;  // seconds, one per bulk request
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      auto client = service::RegistryClient::fromConnectionString(
          hub_->serviceConnectionString(), service::ServiceClientOptions{"", hub_->httpEndpoint()});
      if (!client) {
        ++failed;
        return;
      }
      for (int round = 0; round < kRounds; ++round) {
        std::vector<service::BulkOperation> operations(100);
        for (int i = 0; i < 100; ++i) {
          operations[i].device.device_id =
              "load-" + std::to_string(c) + "-" + std::to_string(round) + "-" + std::to_string(i);
        }
        auto started = SteadyClock::now();
        auto done = client->bulk(operations);
        if (!done || !done->is_successful) ++failed;
        std::lock_guard lock(latencies_mutex);
        latencies.push_back(std::chrono::duration<double>(SteadyClock::now() - started).count());
      }
    });
  }
  // Once the first requests have come back, the REST queue is full: connect a device.
  ASSERT_TRUE(waitFor(
      [&] {
        std::lock_guard lock(latencies_mutex);
        return latencies.size() >= kClients / 2;
      },
      60s));
  auto started = SteadyClock::now();
  auto raw = rawDevice(d);
  double connect_seconds = std::chrono::duration<double>(SteadyClock::now() - started).count();
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  ASSERT_EQ(latencies.size(), static_cast<std::size_t>(kClients * kRounds));
  std::sort(latencies.begin(), latencies.end());
  double median = latencies[latencies.size() / 2];
  EXPECT_LT(connect_seconds, median / 2)
      << "the CONNECT took " << connect_seconds << " s; a bulk request's median latency was "
      << median << " s";
  expectRestStillServes();
}

// --- persistent sessions, for real ------------------------------------------------------------

// Clean session 0: the hub keeps the subscriptions. The device reconnects (after a
// reconnect, a clean stop and a kill -9 of the hub) WITHOUT subscribing again, sees
// session-present = 1, and still gets desired-property notifications and method calls.
// A device with a persistent session (clean session 0) keeps it across a reconnect, a clean
// restart of the hub and a kill -9: session-present is 1 and desired notifications and
// method calls reach it without a new SUBSCRIBE. `store_args` choose the hub's store.
void HardeningTest::checkSessionsSurviveRestarts(std::vector<std::string> store_args) {
  startHub(std::move(store_args));
  auto d = createDevice("sticky-1");
  {
    bool present = true;
    auto raw = rawDevice(d, &present);
    EXPECT_FALSE(present) << "a first connection has no session";
    raw->sendPacket(
        mqtt::Subscribe{1,
                        {{"$iothub/twin/PATCH/properties/desired/#", mqtt::QoS::AtMostOnce},
                         {"$iothub/methods/POST/#", mqtt::QoS::AtMostOnce}}});
    auto suback = raw->read();
    ASSERT_TRUE(suback && std::holds_alternative<mqtt::SubAck>(*suback));
    raw->sendPacket(mqtt::Disconnect{});
  }
  int round = 0;
  for (const char* how : {"reconnect", "clean stop", "kill -9"}) {
    ++round;
    if (std::string_view(how) == "clean stop") {
      ASSERT_EQ(hub_->stop(), 0);
      ASSERT_TRUE(hub_->start()) << hub_->startupError();
      connectService();
    } else if (std::string_view(how) == "kill -9") {
      hub_->kill9();
      ASSERT_TRUE(hub_->start()) << hub_->startupError();
      connectService();
    }
    bool present = false;
    auto raw = rawDevice(d, &present);
    EXPECT_TRUE(present) << how << ": session-present must be 1";
    ASSERT_TRUE(waitFor(
        [&] { return connectionState("sticky-1") == service::ConnectionState::Connected; }, 10s));

    auto updated =
        twins().update("sticky-1", json::object{{"properties", {{"desired", {{"round", round}}}}}});
    ASSERT_TRUE(updated.isOk()) << updated.status().toString();
    auto notification = raw->read(10s);
    ASSERT_TRUE(notification.has_value()) << how << ": no desired notification";
    auto* publish = std::get_if<mqtt::Publish>(&*notification);
    ASSERT_NE(publish, nullptr);
    EXPECT_TRUE(publish->topic.starts_with("$iothub/twin/PATCH/properties/desired/"))
        << publish->topic;
    EXPECT_EQ(json::parse(publish->payload).as_object().at("round"), json::value(round));

    // A direct method reaches it too; the raw device answers it.
    auto parsed = auth::ServiceConnectionString::parse(hub_->serviceConnectionString());
    ASSERT_TRUE(parsed.isOk());
    auto methods = service::MethodClient::fromConnectionString(
        hub_->serviceConnectionString(), service::ServiceClientOptions{"", hub_->httpEndpoint()});
    ASSERT_TRUE(methods.isOk()) << methods.status().toString();
    std::thread answerer([&] {
      auto request = raw->read(10s);
      ASSERT_TRUE(request.has_value()) << how << ": no method request";
      auto* call = std::get_if<mqtt::Publish>(&*request);
      ASSERT_NE(call, nullptr);
      ASSERT_TRUE(call->topic.starts_with("$iothub/methods/POST/lockDoor/")) << call->topic;
      std::string rid = call->topic.substr(call->topic.find("$rid=") + 5);
      raw->sendPacket(mqtt::Publish{"$iothub/methods/res/200/?$rid=" + rid, "{\"locked\":true}",
                                    mqtt::QoS::AtMostOnce, false, false, 0});
    });
    auto response =
        methods->invoke("sticky-1", {"lockDoor", json::object{{"lockTime", "10m"}}, 10s});
    answerer.join();
    ASSERT_TRUE(response.isOk()) << how << ": " << response.status().toString();
    EXPECT_EQ(response->status, 200);
    raw->sendPacket(mqtt::Disconnect{});
  }
}

TEST_F(HardeningTest, PersistentSessionsSurviveReconnectsAndHubRestarts) {
  checkSessionsSurviveRestarts({});
}

// --- the PostgreSQL store (docs/cluster.md) -------------------------------------------------

class PostgresHubTest : public HardeningTest {
 protected:
  void SetUp() override {
    Status started = postgres_.start();
    ASSERT_TRUE(started.isOk()) << started.toString();
    Status created = postgres_.createDatabase("hub");
    ASSERT_TRUE(created.isOk()) << created.toString();
  }
  std::vector<std::string> storeArgs() { return {"--store", postgres_.conninfo("hub")}; }

  testing::PostgresServer postgres_;
};

TEST_F(PostgresHubTest, PersistentSessionsSurviveReconnectsAndHubRestarts) {
  checkSessionsSurviveRestarts(storeArgs());
  // Everything lives in PostgreSQL: the data directory holds no database.
  EXPECT_FALSE(fs::exists(dir_.path() / "data" / "iothub.db"));
}

TEST_F(PostgresHubTest, ASecondSingleNodeHubOnTheSameDatabaseRefusesToStart) {
  startHub(storeArgs());
  HubProcess second(IOTHUBD_PATH, dir_.path() / "second", storeArgs());
  EXPECT_FALSE(second.start());
  EXPECT_NE(second.startupError().find("the database is in use by iothubd (single node)"),
            std::string::npos)
      << second.startupError();
  expectRestStillServes();
  // Once the first one is gone, the database is free again.
  ASSERT_EQ(hub_->stop(), 0);
  ASSERT_TRUE(second.start()) << second.startupError();
  EXPECT_EQ(second.stop(), 0);
}

// The database lock's session is ended and another process takes the lock before the hub
// can take it back: the hub stops, and exits with an error so that a supervisor restarting
// failed processes restarts it.
TEST_F(PostgresHubTest, AHubThatLosesItsDatabaseLockStopsWithAnError) {
  startHub(storeArgs());
  auto bin = testing::PostgresServer::binDir();
  ASSERT_TRUE(bin.isOk()) << bin.status().toString();
  // One psql session: end the hub's lock session, take the single-node lock
  // (kPgSingleNodeLockKey) and hold it.
  testing::Process thief(
      {(*bin / "psql").string(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h",
       postgres_.dir().string(), "-p", std::to_string(postgres_.port()), "-U", "postgres", "-d",
       "hub", "-c",
       "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND pid <> "
       "pg_backend_pid() AND database = (SELECT oid FROM pg_database WHERE datname = 'hub'); "
       "SELECT pg_advisory_lock(7597419088392093698); SELECT pg_sleep(120)"},
      dir_.path());
  auto exit_code = hub_->process().wait(std::chrono::seconds(30));
  ASSERT_TRUE(exit_code.has_value()) << "the hub kept running without its lock";
  EXPECT_EQ(*exit_code, 1);
  EXPECT_NE(hub_->process().err().find("lost a lock this node must hold"), std::string::npos)
      << hub_->process().err();
  EXPECT_NE(hub_->process().err().find("start it again once the database answers"),
            std::string::npos)
      << hub_->process().err();
  EXPECT_TRUE(thief.running()) << thief.err();
}

// GET /readyz follows the database: 503 naming the store while PostgreSQL is down, 200
// again once it is back (docs/operations.md).
TEST_F(PostgresHubTest, ReadinessFollowsTheDatabase) {
  auto args = storeArgs();
  args.insert(args.end(), {"--metrics-port", "0"});
  startHub(args);
  auto readyz = [&] {
    RawTcpConnection tcp(hub_->metricsPort());
    tcp.sendBytes("GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.waitClosed(15s);
    return tcp.received();
  };
  // Polls /readyz until it answers `status_line`; returns the last answer.
  auto readyzUntil = [&](const std::string& status_line, std::chrono::seconds timeout) {
    std::string answer;
    EXPECT_TRUE(waitFor([&] { return (answer = readyz()).rfind(status_line, 0) == 0; }, timeout))
        << answer;
    return answer;
  };
  readyzUntil("HTTP/1.1 200", 0s);
  ASSERT_TRUE(postgres_.stop().isOk());
  std::string down = readyzUntil("HTTP/1.1 503", 15s);
  EXPECT_NE(down.find(R"("store":false)"), std::string::npos) << down;
  EXPECT_NE(down.find(R"("status":"notReady")"), std::string::npos) << down;
  ASSERT_TRUE(postgres_.restart().isOk());
  readyzUntil("HTTP/1.1 200", 20s);
}

TEST_F(PostgresHubTest, JobsRunAndSurviveAKillDashNine) {
  startHub(storeArgs());
  for (int i = 0; i < 20; ++i) createDevice("pg-" + std::to_string(i));
  auto jobs = service::JobClient(transport_);
  service::JobSchedule schedule;
  schedule.job_id = "pg-twin";
  schedule.query_condition = "STARTSWITH(deviceId, 'pg-')";
  auto job = jobs.scheduleTwinUpdate(
      schedule, json::object{{"properties", {{"desired", {{"building", 43}, {"floor", 3}}}}}});
  ASSERT_TRUE(job.isOk()) << job.status().toString();
  ASSERT_TRUE(waitFor(
      [&] {
        auto got = jobs.getJob("pg-twin");
        return got && got->status == service::JobStatus::Completed;
      },
      30s));
  // A job scheduled in the future survives a kill -9 and starts after the restart.
  schedule.job_id = "pg-later";
  schedule.start_time = std::chrono::system_clock::now() + 3s;
  ASSERT_TRUE(jobs.scheduleTwinUpdate(schedule, json::object{{"tags", {{"later", true}}}}).isOk());
  hub_->kill9();
  ASSERT_TRUE(hub_->start()) << hub_->startupError();
  connectService();
  jobs = service::JobClient(transport_);
  ASSERT_TRUE(waitFor(
      [&] {
        auto got = jobs.getJob("pg-later");
        return got && got->status == service::JobStatus::Completed;
      },
      30s));
  auto done = jobs.getJob("pg-twin");
  ASSERT_TRUE(done.isOk());
  EXPECT_EQ(done->statistics.succeeded_count, 20);
  auto later = jobs.getJob("pg-later");
  EXPECT_EQ(later->statistics.succeeded_count, 20);
  auto twin = twins().get("pg-7");
  ASSERT_TRUE(twin.isOk());
  EXPECT_EQ(twin->desired.at("floor"), 3);
  EXPECT_EQ(twin->tags.at("later"), true);
}

}  // namespace
}  // namespace iothub
