// Cluster mode end to end: three real iothubd nodes on one PostgreSQL database and one
// nats-server (both started by the test on loopback), driven over the wire with our service
// and device SDKs. The service talks to node 1; devices connect to nodes 2 and 3.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/hub_process.hpp"
#include "tests/support/nats_server.hpp"
#include "tests/support/postgres_server.hpp"
#include "tests/support/raw_mqtt.hpp"
#include "tests/support/rest_fleet.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub {
namespace {

using namespace std::chrono_literals;
using testing::connect;
using testing::createDevices;
using testing::HubProcess;
using testing::OnlineDevice;
using testing::Service;
using testing::TempDir;
using testing::waitFor;

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Status started = postgres_.start();
    ASSERT_TRUE(started.isOk()) << started.toString();
    Status created = postgres_.createDatabase("hub");
    ASSERT_TRUE(created.isOk()) << created.toString();
    ASSERT_TRUE(nats_.start()) << nats_.error();
  }

  std::vector<std::string> nodeArgs(int i) {
    return {"--store",
            postgres_.conninfo("hub"),
            "--nats",
            nats_.url(),
            "--node-id",
            "node" + std::to_string(i),
            "--advertise-address",
            "127.0.0.1"};
  }
  // Starts node i (1-based) in its own data directory.
  HubProcess& startNode(int i) {
    auto& slot = nodes_[static_cast<std::size_t>(i)];
    if (!slot) {
      slot = std::make_unique<HubProcess>(IOTHUBD_PATH, dir_.path() / ("node" + std::to_string(i)),
                                          nodeArgs(i));
    }
    EXPECT_TRUE(slot->start()) << slot->startupError();
    return *slot;
  }
  void startCluster() {
    for (int i = 1; i <= 3; ++i) startNode(i);
    service_ = std::make_unique<Service>(node(1));
  }
  HubProcess& node(int i) { return *nodes_[static_cast<std::size_t>(i)]; }

  std::vector<std::string> liveNodeIds(Service& service) {
    std::vector<std::string> ids;
    json::value nodes = service.ok("GET", "/cluster/nodes?api-version=2021-04-12");
    if (!nodes.is_object()) return ids;
    for (const auto& n : nodes.at("nodes").as_array()) ids.emplace_back(n.at("nodeId").as_string());
    return ids;
  }
  // A raw MQTT device on node `hub`'s plain port, CONNECTed with clean session 0.
  std::unique_ptr<testing::RawMqttConnection> rawDevice(HubProcess& hub, const service::Device& d,
                                                        bool* session_present = nullptr) {
    auto raw = std::make_unique<testing::RawMqttConnection>(hub.mqttPlainPort());
    EXPECT_TRUE(raw->connected());
    raw->sendPacket(
        testing::deviceConnect(d.device_id, testing::deviceToken(d.device_id, d.primary_key)));
    auto answer = raw->read();
    EXPECT_EQ(testing::connackCode(answer), mqtt::ConnectReturnCode::Accepted);
    if (session_present != nullptr && answer) {
      *session_present = std::get<mqtt::ConnAck>(*answer).session_present;
    }
    return raw;
  }
  std::string connectionState(const std::string& device_id) {
    json::value twin = service_->ok("GET", "/twins/" + device_id + "?api-version=2021-04-12");
    return twin.is_object() ? std::string(twin.at("connectionState").as_string()) : "";
  }
  Result<service::HttpResponse> invoke(const std::string& device_id, int connect_timeout = 0) {
    json::object body{{"methodName", "lockDoor"},
                      {"payload", {{"lockTime", "10m"}}},
                      {"responseTimeoutInSeconds", 10},
                      {"connectTimeoutInSeconds", connect_timeout}};
    return service_->call("POST", "/twins/" + device_id + "/methods?api-version=2021-04-12",
                          json::serialize(body));
  }

  // The index (1-3) of the node holding job `job_id`'s lease once one other than
  // `other_than` holds it (the job runs there); 0 if none does within `timeout`.
  int leaseOwner(const std::string& job_id, int other_than = 0,
                 std::chrono::milliseconds timeout = 10s) {
    std::string owner;
    bool held = waitFor(
        [&] {
          auto r = postgres_.sql(
              "SELECT coalesce(lease_owner, '') FROM jobs WHERE job_id = '" + job_id + "'", "hub");
          owner = r ? *r : "";
          return !owner.empty() && owner != "node" + std::to_string(other_than);
        },
        timeout);
    if (!held) return 0;
    int index = owner.back() - '0';
    EXPECT_TRUE(index >= 1 && index <= 3) << owner;
    return index;
  }
  // A node other than those given (all 1-3): where a test puts a device or a request that
  // must cross nodes.
  static int nodeOtherThan(int a, int b = 0) {
    for (int i = 1; i <= 3; ++i)
      if (i != a && i != b) return i;
    return 0;
  }
  // Whether `device` received a desired-property notification holding building 43, floor 3.
  static bool gotBuildingAndFloor(OnlineDevice& device) {
    std::lock_guard lock(device.mutex);
    for (const auto& patch : device.desired)
      if (patch.contains("floor") && patch.at("floor") == 3 && patch.contains("building") &&
          patch.at("building") == 43)
        return true;
    return false;
  }

  TempDir dir_{"iothub-cluster-it"};
  testing::PostgresServer postgres_;
  testing::NatsServer nats_;
  std::unique_ptr<HubProcess> nodes_[4];
  std::unique_ptr<Service> service_;
};

TEST_F(ClusterTest, NodesSeeEachOtherJoinLeaveAndRejoin) {
  startCluster();
  // Each node is in the table once it serves.
  EXPECT_EQ(liveNodeIds(*service_), (std::vector<std::string>{"node1", "node2", "node3"}));
  json::value seen = service_->ok("GET", "/cluster/nodes?api-version=2021-04-12");
  EXPECT_EQ(seen.at("nodeId"), "node1");
  EXPECT_EQ(seen.at("leaseHeld"), true);
  EXPECT_EQ(seen.at("natsConnected"), true);
  EXPECT_EQ(seen.at("nodes").as_array()[1].at("address"), "127.0.0.1");

  // One development CA for the whole cluster; each node's certificate names its address.
  std::string ca = testing::readFile(node(1).caFile());
  ASSERT_FALSE(ca.empty());
  EXPECT_EQ(testing::readFile(node(2).caFile()), ca);
  EXPECT_EQ(testing::readFile(node(3).caFile()), ca);

  // A clean stop leaves at once; a restart on the same data directory rejoins.
  ASSERT_EQ(node(3).stop(), 0);
  EXPECT_TRUE(waitFor([&] { return liveNodeIds(*service_).size() == 2; }, 10s));
  startNode(3);
  EXPECT_TRUE(waitFor([&] { return liveNodeIds(*service_).size() == 3; }, 10s));
  EXPECT_TRUE(waitFor([&] {
    return node(1).process().err().find("cluster: node node1 sees 3 node(s)") != std::string::npos;
  }));

  // Two processes never run under one node id.
  HubProcess twin(IOTHUBD_PATH, dir_.path() / "node3-again", nodeArgs(3));
  EXPECT_FALSE(twin.start());
  EXPECT_NE(twin.startupError().find("node id 'node3' is taken"), std::string::npos)
      << twin.startupError();
  // A node that would serve another hub name is refused.
  auto other_name = nodeArgs(4);
  other_name.insert(other_name.end(), {"--hostname", "other.example"});
  HubProcess renamed(IOTHUBD_PATH, dir_.path() / "node4", other_name);
  EXPECT_FALSE(renamed.start());
  EXPECT_NE(renamed.startupError().find("differs from the cluster's hub name 'localhost'"),
            std::string::npos)
      << renamed.startupError();
  // Nor does a single node on the cluster's database.
  HubProcess single(IOTHUBD_PATH, dir_.path() / "single", {"--store", postgres_.conninfo("hub")});
  EXPECT_FALSE(single.start());
  EXPECT_NE(single.startupError().find("the database is in use by iothubd node"), std::string::npos)
      << single.startupError();
}

TEST_F(ClusterTest, MethodsNotificationsAndStateReachDevicesOnOtherNodes) {
  startCluster();
  auto devices = createDevices(*service_, "cl-", 6);
  ASSERT_EQ(devices.size(), 6u);
  // Devices 0-2 on node 2, 3-4 on node 3, 5 offline.
  std::vector<std::unique_ptr<OnlineDevice>> online;
  for (std::size_t i = 0; i < 5; ++i) online.push_back(connect(node(i < 3 ? 2 : 3), devices[i]));

  // The whole cluster's count, from any node.
  EXPECT_TRUE(waitFor(
      [&] {
        return service_->ok("GET", "/statistics/service?api-version=2021-04-12")
                   .at("connectedDeviceCount") == 5;
      },
      10s));
  EXPECT_EQ(connectionState("cl-1000"), "Connected");
  EXPECT_EQ(connectionState("cl-1004"), "Connected");
  EXPECT_EQ(connectionState("cl-1005"), "Disconnected");

  // Queries on any node see every node's writes and connections as soon as they are
  // acknowledged: node 1's index is fed by the other nodes' presence, node 3's by node 1's
  // twin writes.
  auto count = [](Service& service, const std::string& where) {
    auto rows = service.query("SELECT COUNT() AS n FROM devices WHERE " + where, 10);
    return rows.size() == 1 ? rows[0].at("n").as_int64() : -1;
  };
  EXPECT_EQ(count(*service_, "connectionState = 'Connected'"), 5);
  service_->ok("PATCH", "/twins/cl-1004?api-version=2021-04-12", R"({"tags":{"room":"r4"}})");
  Service on3(node(3));
  EXPECT_EQ(count(on3, "tags.room = 'r4'"), 1);
  EXPECT_EQ(count(on3, "STARTSWITH(deviceId, 'cl-') AND connectionState = 'Disconnected'"), 1);

  // A direct method from node 1 reaches a device on node 2 and one on node 3.
  for (const char* id : {"cl-1001", "cl-1003"}) {
    auto r = invoke(id);
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    ASSERT_EQ(r->status, 200) << r->body;
    json::value answer = testing::parsed(r->body);
    EXPECT_EQ(answer.at("status"), 200);
    EXPECT_EQ(answer.at("payload").at("request").at("lockTime"), "10m");
  }
  EXPECT_EQ(online[1]->lock_calls.load(), 1);
  EXPECT_EQ(online[3]->lock_calls.load(), 1);

  // An offline device: 404103 at once, as on one node.
  auto offline = invoke("cl-1005");
  ASSERT_TRUE(offline.isOk());
  EXPECT_EQ(offline->status, 404);
  EXPECT_NE(offline->body.find("404103"), std::string::npos) << offline->body;

  // connectTimeoutInSeconds: the call waits for the device to connect to another node.
  std::atomic<bool> answered{false};
  Result<service::HttpResponse> waited = Status(ErrorCode::ServerError, "not yet");
  std::thread caller([&] {
    waited = invoke("cl-1005", 20);
    answered = true;
  });
  std::this_thread::sleep_for(500ms);  // let the call start waiting (the test of the wait)
  EXPECT_FALSE(answered.load());
  online.push_back(connect(node(3), devices[5]));
  caller.join();
  ASSERT_TRUE(waited.isOk()) << waited.status().toString();
  EXPECT_EQ(waited->status, 200) << waited->body;
  EXPECT_EQ(online[5]->lock_calls.load(), 1);

  // A desired-property patch made on node 1 reaches the device on node 2.
  service_->ok("PATCH", "/twins/cl-1002?api-version=2021-04-12",
               R"({"properties":{"desired":{"building":43,"floor":3}}})");
  EXPECT_TRUE(waitFor([&] {
    std::lock_guard lock(online[2]->mutex);
    for (const auto& patch : online[2]->desired) {
      if (patch.contains("building") && patch.at("building") == 43) return true;
    }
    return false;
  }));

  // Disabling a device closes its connection on node 3.
  auto d4 = service_->registry().get("cl-1004");
  ASSERT_TRUE(d4.isOk());
  d4->status = service::DeviceStatus::Disabled;
  ASSERT_TRUE(service_->registry().update(*d4, "*").isOk());
  EXPECT_TRUE(waitFor([&] { return connectionState("cl-1004") == "Disconnected"; }, 10s));
  auto disabled = invoke("cl-1004");
  ASSERT_TRUE(disabled.isOk());
  EXPECT_EQ(disabled->status, 404) << disabled->body;
}

TEST_F(ClusterTest, ADeviceThatMovesKeepsOneConnectionAndItsSession) {
  startCluster();
  auto devices = createDevices(*service_, "mv-", 1);
  ASSERT_EQ(devices.size(), 1u);
  const service::Device& d = devices[0];

  // A raw device on node 2 with a persistent session subscribes to direct methods.
  auto on2 = rawDevice(node(2), d);
  mqtt::Subscribe subscribe;
  subscribe.packet_id = 1;
  subscribe.subscriptions.push_back({"$iothub/methods/POST/#", mqtt::QoS::AtMostOnce});
  ASSERT_TRUE(on2->sendPacket(subscribe));
  auto suback = on2->read();
  ASSERT_TRUE(suback && std::holds_alternative<mqtt::SubAck>(*suback));
  EXPECT_TRUE(waitFor([&] { return connectionState("mv-1000") == "Connected"; }));

  // The same device connects to node 3 while still connected to node 2: node 2 closes
  // the older connection, and node 3 finds the session (its subscriptions, in PostgreSQL).
  bool session_present = false;
  auto on3 = rawDevice(node(3), d, &session_present);
  EXPECT_TRUE(session_present);
  EXPECT_TRUE(on2->waitClosed(10s));
  EXPECT_EQ(connectionState("mv-1000"), "Connected");
  EXPECT_EQ(
      service_->ok("GET", "/statistics/service?api-version=2021-04-12").at("connectedDeviceCount"),
      1);

  // A method from node 1 reaches the connection on node 3 without a new SUBSCRIBE.
  std::thread caller([&] {
    auto r = invoke("mv-1000");
    EXPECT_TRUE(r.isOk() && r->status == 200) << (r ? r->body : r.status().toString());
  });
  auto request = on3->read(15s);
  ASSERT_TRUE(request && std::holds_alternative<mqtt::Publish>(*request));
  const auto& publish = std::get<mqtt::Publish>(*request);
  EXPECT_EQ(publish.topic.rfind("$iothub/methods/POST/lockDoor/?$rid=", 0), 0u) << publish.topic;
  std::string rid = publish.topic.substr(publish.topic.find("$rid=") + 5);
  mqtt::Publish response;
  response.topic = "$iothub/methods/res/200/?$rid=" + rid;
  response.payload = R"({"locked":true})";
  ASSERT_TRUE(on3->sendPacket(response));
  caller.join();

  // The old connection's disconnect (on node 2) does not hide the newer one.
  EXPECT_EQ(connectionState("mv-1000"), "Connected");
  on3.reset();
  EXPECT_TRUE(waitFor([&] { return connectionState("mv-1000") == "Disconnected"; }));
}

TEST_F(ClusterTest, DevicesOfAKilledNodeReadDisconnectedAfterItsLease) {
  startCluster();
  auto devices = createDevices(*service_, "kd-", 2);
  auto a = connect(node(2), devices[0]);
  auto b = connect(node(3), devices[1]);
  EXPECT_TRUE(waitFor([&] { return connectionState("kd-1000") == "Connected"; }));
  node(2).kill9();
  // The other nodes reap node 2 once its lease (10 s) runs out.
  EXPECT_TRUE(waitFor([&] { return connectionState("kd-1000") == "Disconnected"; }, 20s));
  EXPECT_EQ(connectionState("kd-1001"), "Connected");
  EXPECT_TRUE(waitFor(
      [&] {
        return liveNodeIds(*service_) == std::vector<std::string>{"node1", "node3"};
      },
      5s));
  // A call to the dead node's device fails as for any offline device.
  auto r = invoke("kd-1000");
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->status, 404) << r->body;
  // Node 2 restarts under its id and rejoins.
  startNode(2);
  EXPECT_TRUE(waitFor([&] { return liveNodeIds(*service_).size() == 3; }, 10s));
}

// A node frozen for longer than its lease is reaped by the others, so its devices read
// Disconnected although their connections are open. When it thaws it renews after the
// lapse and marks the devices it still holds connected again (docs/cluster.md, "What
// happens when something fails"): methods from other nodes reach them without the devices
// reconnecting.
TEST_F(ClusterTest, AFrozenNodeThatThawsRepairsThePresenceOfItsDevices) {
  startCluster();
  auto devices = createDevices(*service_, "fz-", 2);
  auto held = connect(node(2), devices[0]);
  auto other = connect(node(3), devices[1]);
  EXPECT_TRUE(waitFor([&] { return connectionState("fz-1000") == "Connected"; }));

  node(2).process().signal(SIGSTOP);
  EXPECT_TRUE(waitFor([&] { return connectionState("fz-1000") == "Disconnected"; }, 25s));
  EXPECT_EQ(liveNodeIds(*service_), (std::vector<std::string>{"node1", "node3"}));
  node(2).process().signal(SIGCONT);

  EXPECT_TRUE(waitFor([&] { return connectionState("fz-1000") == "Connected"; }, 15s));
  EXPECT_TRUE(waitFor([&] { return liveNodeIds(*service_).size() == 3; }, 10s));
  auto r = invoke("fz-1000");
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(held->lock_calls.load(), 1);
  EXPECT_EQ(held->disconnects.load(), 0) << "the device had to reconnect";
  EXPECT_EQ(connectionState("fz-1001"), "Connected");
}

// NATS goes away and comes back (docs/cluster.md, "NATS unavailable, briefly"): the nodes
// say so in /cluster/nodes and /statistics/service, calls to devices on other nodes fail
// with 503 at once while devices on the calling node are still reached, and everything
// works again once NATS is back, without restarting a node.
TEST_F(ClusterTest, ANatsOutageIsReportedAndCallsAcrossNodesWorkAgainAfterIt) {
  startCluster();
  auto devices = createDevices(*service_, "no-", 4);
  auto here = connect(node(1), devices[0]);
  auto there = connect(node(2), devices[1]);
  auto to_disable = connect(node(2), devices[2]);
  auto to_delete = connect(node(2), devices[3]);
  EXPECT_TRUE(waitFor([&] { return connectionState("no-1003") == "Connected"; }));
  auto nats_connected = [&] {
    json::value nodes = service_->ok("GET", "/cluster/nodes?api-version=2021-04-12");
    return nodes.is_object() && nodes.at("natsConnected") == true;
  };
  ASSERT_TRUE(nats_connected());

  ASSERT_TRUE(nats_.stop());
  EXPECT_TRUE(waitFor([&] { return !nats_connected(); }, 10s));
  json::value stats = service_->ok("GET", "/statistics/service?api-version=2021-04-12");
  ASSERT_TRUE(stats.is_object());
  EXPECT_EQ(stats.at("natsConnected"), false);
  auto across = invoke("no-1001");
  ASSERT_TRUE(across.isOk());
  EXPECT_EQ(across->status, 503) << across->body;
  auto local = invoke("no-1000");
  ASSERT_TRUE(local.isOk());
  EXPECT_EQ(local->status, 200) << local->body;
  // Node 1 cannot tell node 2 to close the connections of devices it disables or deletes;
  // node 2's change feed (PostgreSQL) closes them anyway.
  auto d2 = service_->registry().get("no-1002");
  ASSERT_TRUE(d2.isOk());
  d2->status = service::DeviceStatus::Disabled;
  ASSERT_TRUE(service_->registry().update(*d2, "*").isOk());
  ASSERT_TRUE(service_->registry().remove("no-1003", "*").isOk());
  EXPECT_TRUE(
      waitFor([&] { return to_disable->disconnects > 0 && to_delete->disconnects > 0; }, 10s));
  EXPECT_EQ(there->disconnects.load(), 0);
  // The device sees its connection close before node 2 records the disconnect (on a
  // worker thread, then through the store): the state follows shortly after.
  EXPECT_TRUE(waitFor([&] { return connectionState("no-1002") == "Disconnected"; }, 10s));

  ASSERT_TRUE(nats_.start()) << nats_.error();
  EXPECT_TRUE(waitFor(nats_connected, 15s));
  // Node 2 has subscribed again too: its device answers a call from node 1.
  EXPECT_TRUE(waitFor(
      [&] {
        auto r = invoke("no-1001");
        return r.isOk() && r->status == 200;
      },
      15s));
  EXPECT_EQ(there->lock_calls.load(), 1);
  EXPECT_EQ(here->lock_calls.load(), 1);
}

// The reference jobs across the cluster: created on node 1, each job runs on one node and
// reaches devices on nodes 2 and 3; every device is called once and statistics are exact.
TEST_F(ClusterTest, JobsRunOnceAcrossTheNodesDevices) {
  startCluster();
  auto devices = createDevices(*service_, "jb-", 12);
  ASSERT_EQ(devices.size(), 12u);
  std::vector<std::unique_ptr<OnlineDevice>> online;  // 0-3 on node 2, 4-7 on node 3, 8-11 off
  for (std::size_t i = 0; i < 8; ++i) online.push_back(connect(node(i < 4 ? 2 : 3), devices[i]));
  service_->ok("PUT", "/jobs/v2/lock?api-version=2021-04-12",
               R"j({"jobId":"lock","type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"},"responseTimeoutInSeconds":10},
      "queryCondition":"STARTSWITH(deviceId, 'jb-')"})j");
  service_->ok("PUT", "/jobs/v2/desired?api-version=2021-04-12",
               R"j({"jobId":"desired","type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","properties":{"desired":{"building":43,"floor":3}}},
      "queryCondition":"STARTSWITH(deviceId, 'jb-')"})j");
  // Any node reports the jobs.
  Service on2(node(2));
  ASSERT_TRUE(waitFor([&] { return on2.jobDone("lock") && on2.jobDone("desired"); }, 60s));
  auto lock = on2.stats("lock");
  EXPECT_EQ(on2.jobStatus("lock"), "completed");
  EXPECT_EQ(lock["deviceCount"], 12);
  EXPECT_EQ(lock["succeededCount"], 8);
  EXPECT_EQ(lock["failedCount"], 4);
  auto desired = on2.stats("desired");
  EXPECT_EQ(desired["succeededCount"], 12);
  for (std::size_t i = 0; i < online.size(); ++i) {
    EXPECT_EQ(online[i]->lock_calls.load(), 1) << devices[i].device_id;
    EXPECT_TRUE(waitFor([&] {
      std::lock_guard lock_guard(online[i]->mutex);
      for (const auto& patch : online[i]->desired)
        if (patch.contains("floor") && patch.at("floor") == 3) return true;
      return false;
    })) << devices[i].device_id;
  }
  // Every desired twin was written once: version 2 (created 1, one patch).
  for (const auto& row : on2.query("SELECT deviceId, properties.desired.$version AS v FROM devices "
                                   "WHERE STARTSWITH(deviceId, 'jb-')",
                                   50)) {
    EXPECT_EQ(row.at("v"), 2) << json::serialize(row);
  }
}

// kill -9 of the node that drives a job, mid-job: another node carries it to the end within
// the lease (15 s) + claim poll (1 s); every device ends in one terminal state, no device is
// called twice, and the statistics match the rows.
TEST_F(ClusterTest, AJobSurvivesAKillDashNineOfItsNode) {
  startCluster();
  auto devices = createDevices(*service_, "kj-", 30);
  ASSERT_EQ(devices.size(), 30u);
  std::vector<std::unique_ptr<OnlineDevice>> online;  // 0-5 on node 2, 6-11 on node 3
  for (std::size_t i = 0; i < 12; ++i) online.push_back(connect(node(i < 6 ? 2 : 3), devices[i]));
  // The offline devices make the job slow: each waits 2 s for its device to connect.
  service_->ok("PUT", "/jobs/v2/slow?api-version=2021-04-12",
               R"j({"jobId":"slow","type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor","payload":{},"responseTimeoutInSeconds":10,
      "connectTimeoutInSeconds":2},"queryCondition":"STARTSWITH(deviceId, 'kj-')"})j");
  std::string owner;
  ASSERT_TRUE(waitFor([&] {
    auto r =
        postgres_.sql("SELECT coalesce(lease_owner, '') FROM jobs WHERE job_id = 'slow'", "hub");
    owner = r ? *r : "";
    return !owner.empty();
  }));
  int owner_index = owner.back() - '0';
  ASSERT_TRUE(owner_index >= 1 && owner_index <= 3) << owner;
  // Let it get going, then kill its node.
  ASSERT_TRUE(waitFor([&] {
    auto r = postgres_.sql(
        "SELECT count(*) FROM device_jobs WHERE job_id = 'slow' AND status <> 'pending'", "hub");
    return r && std::stoi(*r) >= 3;
  }));
  auto killed_at = std::chrono::steady_clock::now();
  node(owner_index).kill9();
  int survivor = owner_index == 1 ? 2 : 1;
  Service service(node(survivor));
  ASSERT_TRUE(waitFor(
      [&] {
        auto r = postgres_.sql("SELECT coalesce(lease_owner, '') FROM jobs WHERE job_id = 'slow'",
                               "hub");
        return r && !r->empty() && *r != owner;
      },
      30s));
  auto resumed_after = std::chrono::steady_clock::now() - killed_at;
  EXPECT_LT(resumed_after, 20s) << "lease 15 s + claim poll 1 s, with slack";
  ASSERT_TRUE(waitFor([&] { return service.jobDone("slow"); }, 90s));
  EXPECT_EQ(service.jobStatus("slow"), "completed");
  auto stats = service.stats("slow");
  auto rows = service.rows("slow");
  ASSERT_EQ(rows.size(), 30u);
  std::map<std::string, std::int64_t> counted;
  for (const auto& [id, row] : rows) counted[std::string(row.at("status").as_string())]++;
  EXPECT_EQ(counted["pending"] + counted["running"], 0);
  EXPECT_EQ(stats["deviceCount"], 30);
  EXPECT_EQ(stats["succeededCount"], counted["completed"]);
  EXPECT_EQ(stats["failedCount"], counted["failed"]);
  EXPECT_EQ(stats["succeededCount"] + stats["failedCount"], 30);
  // No device was called twice; the ones on a surviving node that completed were called once.
  for (std::size_t i = 0; i < online.size(); ++i) {
    EXPECT_LE(online[i]->lock_calls.load(), 1) << devices[i].device_id;
    if (rows.at(devices[i].device_id).at("status") == "completed") {
      EXPECT_EQ(online[i]->lock_calls.load(), 1) << devices[i].device_id;
    }
  }
}

// kill -9 of a node holding devices while a job targets them: the calls meant for the dead
// node find nobody there, wait (connectTimeoutInSeconds) for the devices to connect again,
// and reach them on the node they moved to; the job completes with exact statistics.
TEST_F(ClusterTest, DevicesOfAKilledNodeReconnectElsewhereAndTheJobCompletes) {
  startCluster();
  auto devices = createDevices(*service_, "mj-", 12);
  ASSERT_EQ(devices.size(), 12u);
  std::vector<std::unique_ptr<OnlineDevice>> online;  // 0-5 on node 3, 6-11 on node 2
  for (std::size_t i = 0; i < 12; ++i) online.push_back(connect(node(i < 6 ? 3 : 2), devices[i]));
  node(2).kill9();
  // Presence still names node 2 (its lease has not run out): the job's calls find no
  // responder there and wait for the devices.
  service_->ok("PUT", "/jobs/v2/moved?api-version=2021-04-12",
               R"j({"jobId":"moved","type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor","payload":{},"responseTimeoutInSeconds":10,
      "connectTimeoutInSeconds":30},"queryCondition":"STARTSWITH(deviceId, 'mj-')"})j");
  ASSERT_TRUE(waitFor([&] { return service_->stats("moved")["succeededCount"] == 6; }, 20s));
  EXPECT_FALSE(service_->jobDone("moved"));
  // The devices of node 2 reconnect to node 3 (new clients: the old ones keep retrying the
  // dead address).
  for (std::size_t i = 6; i < 12; ++i) {
    online[i]->client->close();
    online[i] = connect(node(3), devices[i]);
  }
  ASSERT_TRUE(waitFor([&] { return service_->jobDone("moved"); }, 30s));
  EXPECT_EQ(service_->jobStatus("moved"), "completed");
  auto stats = service_->stats("moved");
  EXPECT_EQ(stats["deviceCount"], 12);
  EXPECT_EQ(stats["succeededCount"], 12);
  EXPECT_EQ(stats["failedCount"], 0);
  // A device that failed says why (its row's error).
  for (const auto& [id, row] : service_->rows("moved")) {
    EXPECT_EQ(row.at("status"), "completed") << id << ": " << json::serialize(row);
  }
  for (std::size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(online[i]->lock_calls.load(), 1) << devices[i].device_id;
    EXPECT_EQ(connectionState(devices[i].device_id), "Connected");
  }
}

// offlineDevices across the cluster (docs/jobs.md): a method job waits for its offline devices
// and calls each once as it connects, to a node that is not the one running the job. kill -9
// of that node hands the job, waiting devices and all, to another node: a device that
// connected while nobody held the job is called when it is taken over, one that connects
// afterwards (to a node other than the new owner) as it connects, each exactly once; a
// cancel ends the device still waiting.
TEST_F(ClusterTest, AMethodJobWaitsForOfflineDevicesConnectingToOtherNodesAcrossAKillDashNine) {
  startCluster();
  auto devices = createDevices(*service_, "ow-", 6);
  ASSERT_EQ(devices.size(), 6u);
  std::vector<std::unique_ptr<OnlineDevice>> online(6);  // 0 on node 2, 1 on node 3, 2-5 off
  online[0] = connect(node(2), devices[0]);
  online[1] = connect(node(3), devices[1]);
  json::value created = service_->ok("PUT", "/jobs/v2/wait?api-version=2021-04-12",
                                     R"j({"jobId":"wait","type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"},"responseTimeoutInSeconds":10},
      "queryCondition":"STARTSWITH(deviceId, 'ow-')","offlineDevices":{"waitSeconds":600}})j");
  EXPECT_EQ(created.at("offlineDevices").at("waitSeconds"), 600);
  int owner = leaseOwner("wait");
  ASSERT_NE(owner, 0) << "no node took the job";

  // The two connected devices answer; the four offline ones wait, pending.
  ASSERT_TRUE(waitFor(
      [&] {
        auto s = service_->stats("wait");
        return s["succeededCount"] == 2 && s["pendingCount"] == 4;
      },
      15s));
  EXPECT_EQ(service_->jobStatus("wait"), "running");
  ASSERT_TRUE(waitFor(
      [&] {
        auto rows = service_->rows("wait");
        for (const char* id : {"ow-1002", "ow-1003", "ow-1004", "ow-1005"}) {
          if (rows.at(id).at("status") != "pending" ||
              !rows.at(id).contains("waitingForConnection"))
            return false;
        }
        return true;
      },
      10s));

  // ow-1002 connects to a node that does not run the job: it is called, once.
  int elsewhere = nodeOtherThan(owner);
  online[2] = connect(node(elsewhere), devices[2]);
  ASSERT_TRUE(waitFor(
      [&] { return service_->rows("wait").at("ow-1002").at("status") == "completed"; }, 15s));
  EXPECT_EQ(online[2]->lock_calls.load(), 1);
  EXPECT_EQ(service_->stats("wait")["pendingCount"], 3);

  // kill -9 of the node running the job; ow-1003 connects to a surviving node while nobody
  // holds the job. Another node takes it over (lease 15 s + claim poll 1 s) and calls it.
  node(owner).kill9();
  int survivor = nodeOtherThan(owner);
  online[3] = connect(node(survivor), devices[3]);
  Service service(node(survivor));
  int next_owner = leaseOwner("wait", owner, 25s);
  ASSERT_NE(next_owner, 0) << "no node took the job over from node" << owner;
  EXPECT_NE(next_owner, owner);
  ASSERT_TRUE(
      waitFor([&] { return service.rows("wait").at("ow-1003").at("status") == "completed"; }, 10s))
      << json::serialize(service.rows("wait").at("ow-1003"));
  EXPECT_EQ(online[3]->lock_calls.load(), 1);
  // Nothing was in flight at the kill, so nothing failed; two devices still wait.
  EXPECT_TRUE(waitFor(
      [&] {
        auto s = service.stats("wait");
        return s["succeededCount"] == 4 && s["pendingCount"] == 2 && s["failedCount"] == 0;
      },
      5s))
      << json::serialize(service.job("wait"));
  EXPECT_EQ(service.jobStatus("wait"), "running");

  // ow-1004 connects to the surviving node that does not run the job now: called once.
  int third = nodeOtherThan(owner, next_owner);
  online[4] = connect(node(third), devices[4]);
  ASSERT_TRUE(
      waitFor([&] { return service.rows("wait").at("ow-1004").at("status") == "completed"; }, 15s));
  EXPECT_EQ(online[4]->lock_calls.load(), 1);
  auto rows = service.rows("wait");
  EXPECT_EQ(rows.at("ow-1005").at("status"), "pending");
  EXPECT_TRUE(rows.at("ow-1005").contains("waitingForConnection"))
      << json::serialize(rows.at("ow-1005"));
  EXPECT_EQ(service.jobStatus("wait"), "running");

  // A cancel (through the node that does not run it) ends the device still waiting.
  Service on_third(node(third));
  on_third.ok("POST", "/jobs/v2/wait/cancel?api-version=2021-04-12");
  ASSERT_TRUE(waitFor([&] { return on_third.jobDone("wait"); }, 15s));
  EXPECT_EQ(on_third.jobStatus("wait"), "cancelled");
  auto stats = on_third.stats("wait");
  EXPECT_EQ(stats["deviceCount"], 6);
  EXPECT_EQ(stats["succeededCount"], 5);
  EXPECT_EQ(stats["canceledCount"], 1);
  EXPECT_EQ(stats["failedCount"], 0);
  EXPECT_EQ(stats["pendingCount"] + stats["runningCount"], 0);
  rows = on_third.rows("wait");
  ASSERT_EQ(rows.size(), 6u);
  for (const char* id : {"ow-1000", "ow-1001", "ow-1002", "ow-1003", "ow-1004"})
    EXPECT_EQ(rows.at(id).at("status"), "completed") << id << ": " << json::serialize(rows.at(id));
  EXPECT_EQ(rows.at("ow-1005").at("status"), "canceled") << json::serialize(rows.at("ow-1005"));
  // Every device that connected was called exactly once, across the takeover (the killed
  // node's device counted before it died).
  for (std::size_t i = 0; i < 5; ++i)
    EXPECT_EQ(online[i]->lock_calls.load(), 1) << devices[i].device_id;
}

// convergence and continuous across the cluster (docs/jobs.md), both jobs created on node 1
// and run wherever their lease is: a device reporting the desired values from any node
// succeeds (devices on all three nodes, so at least two report to a node that does not run
// the job), one that never reports fails NotConverged; a continuous job reaches a device
// whose tags are changed through the REST endpoint of a node that does not run it.
TEST_F(ClusterTest, TwinJobsConvergeOnReportsAndFollowTagsChangedOnOtherNodes) {
  startCluster();
  auto devices = createDevices(*service_, "cv-", 6);
  ASSERT_EQ(devices.size(), 6u);
  // cv-1000..1002 report, on nodes 1, 2 and 3; cv-1003 (node 2) never reports.
  std::vector<std::unique_ptr<OnlineDevice>> online;
  for (int i = 0; i < 4; ++i) online.push_back(connect(node(i < 3 ? i + 1 : 2), devices[i]));
  // cv-1004 matches the continuous job's condition from the start, cv-1005 later.
  service_->ok("PATCH", "/twins/cv-1004?api-version=2021-04-12", R"({"tags":{"site":"c1"}})");

  service_->ok("PUT", "/jobs/v2/converge?api-version=2021-04-12",
               R"j({"jobId":"converge","type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","properties":{"desired":{"building":43,"floor":3}}},
      "queryCondition":"deviceId IN ['cv-1000', 'cv-1001', 'cv-1002', 'cv-1003']",
      "convergence":{"timeoutSeconds":10}})j");
  json::value follow = service_->ok("PUT", "/jobs/v2/follow?api-version=2021-04-12",
                                    R"j({"jobId":"follow","type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","tags":{"stage":"seen"}},
      "queryCondition":"tags.site = 'c1'","continuous":true})j");
  EXPECT_EQ(follow.at("continuous"), true);
  int converge_owner = leaseOwner("converge");
  int follow_owner = leaseOwner("follow");
  ASSERT_NE(converge_owner, 0);
  ASSERT_NE(follow_owner, 0);

  // convergence: each device gets the desired patch; its row is running (converging) until
  // it reports the values.
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(waitFor([&] { return gotBuildingAndFloor(*online[i]); }, 10s))
        << devices[i].device_id;
  }
  auto early = service_->rows("converge");
  ASSERT_EQ(early.size(), 4u);
  for (const auto& [id, row] : early) {
    EXPECT_EQ(row.at("status"), "running") << id << ": " << json::serialize(row);
    EXPECT_EQ(row.at("converging"), true) << id << ": " << json::serialize(row);
  }
  for (std::size_t i = 0; i < 3; ++i) {
    auto reported = online[i]->client->patchReported(json::object{{"building", 43}, {"floor", 3}});
    EXPECT_TRUE(reported.isOk()) << devices[i].device_id << ": " << reported.status().toString();
  }
  ASSERT_TRUE(waitFor([&] { return service_->stats("converge")["succeededCount"] == 3; }, 10s))
      << "job on node" << converge_owner;

  // continuous: cv-1004 is updated; cv-1005 comes to match through the REST endpoint of a
  // node that does not run the job, and is updated too.
  ASSERT_TRUE(waitFor([&] { return service_->stats("follow")["succeededCount"] == 1; }, 10s));
  EXPECT_EQ(service_->jobStatus("follow"), "running");
  Service elsewhere(node(nodeOtherThan(follow_owner)));
  elsewhere.ok("PATCH", "/twins/cv-1005?api-version=2021-04-12", R"({"tags":{"site":"c1"}})");
  ASSERT_TRUE(waitFor([&] { return service_->stats("follow")["succeededCount"] == 2; }, 10s))
      << "job on node" << follow_owner;
  auto followed = service_->stats("follow");
  EXPECT_EQ(followed["deviceCount"], 2);
  EXPECT_EQ(followed["failedCount"], 0);
  EXPECT_EQ(followed["pendingCount"] + followed["runningCount"], 0);
  EXPECT_EQ(service_->jobStatus("follow"), "running");
  for (const char* id : {"cv-1004", "cv-1005"}) {
    EXPECT_EQ(elsewhere.ok("GET", std::string("/twins/") + id + "?api-version=2021-04-12")
                  .at("tags")
                  .at("stage"),
              "seen")
        << id;
  }
  auto follow_rows = service_->rows("follow");
  ASSERT_EQ(follow_rows.size(), 2u);
  for (const auto& [id, row] : follow_rows)
    EXPECT_EQ(row.at("status"), "completed") << id << ": " << json::serialize(row);
  elsewhere.ok("POST", "/jobs/v2/follow/cancel?api-version=2021-04-12");
  ASSERT_TRUE(waitFor([&] { return service_->jobDone("follow"); }, 15s));
  EXPECT_EQ(service_->jobStatus("follow"), "cancelled");
  EXPECT_EQ(service_->stats("follow")["succeededCount"], 2);

  // cv-1003 never reported: it fails NotConverged 10 s after its update, and the job ends.
  ASSERT_TRUE(waitFor([&] { return service_->jobDone("converge"); }, 15s));
  EXPECT_EQ(service_->jobStatus("converge"), "completed");
  auto converge = service_->stats("converge");
  EXPECT_EQ(converge["deviceCount"], 4);
  EXPECT_EQ(converge["succeededCount"], 3);
  EXPECT_EQ(converge["failedCount"], 1);
  EXPECT_EQ(converge["pendingCount"] + converge["runningCount"] + converge["canceledCount"], 0);
  auto rows = service_->rows("converge");
  for (const char* id : {"cv-1000", "cv-1001", "cv-1002"})
    EXPECT_EQ(rows.at(id).at("status"), "completed") << id << ": " << json::serialize(rows.at(id));
  EXPECT_EQ(rows.at("cv-1003").at("status"), "failed") << json::serialize(rows.at("cv-1003"));
  EXPECT_EQ(rows.at("cv-1003").at("error").at("code"), "NotConverged")
      << json::serialize(rows.at("cv-1003"));
  // Each desired twin was written once (version 2: created 1, one patch).
  for (const auto& row :
       service_->query("SELECT deviceId, properties.desired.$version AS v FROM devices "
                       "WHERE deviceId IN ['cv-1000', 'cv-1001', 'cv-1002', 'cv-1003']",
                       10)) {
    EXPECT_EQ(row.at("v"), 2) << json::serialize(row);
  }
}

}  // namespace
}  // namespace iothub
