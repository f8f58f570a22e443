// The device endpoint of a real iothubd process: our C++ device SDK over MQTT/TLS and our
// service SDK over HTTPS (direct methods, twins, connection state, disabled devices, SAS
// token renewal); raw MQTT byte probes on the plain MQTT port (malformed, oversized and
// unauthorized input, a flood of bad CONNECTs), after which the hub must still serve; and
// simdevice driven by iothubctl, as a user would run them.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "auth/sas_token.hpp"
#include "iothub/device/device_client.hpp"
#include "iothub/service/method_client.hpp"
#include "iothub/service/registry_client.hpp"
#include "iothub/service/twin_client.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/wire.hpp"
#include "tests/support/hub_process.hpp"
#include "tests/support/raw_mqtt.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub {
namespace {

using namespace std::chrono_literals;
using testing::connackCode;
using testing::deviceConnect;
using testing::deviceToken;
using testing::encoded;
using testing::HubProcess;
using testing::kHostName;
using testing::mqttUserName;
using testing::RawMqttConnection;
using testing::SteadyClock;
using testing::TempDir;
using testing::waitFor;

// Desired-property notifications, written by a device's I/O thread, read by the test.
class DesiredLog {
 public:
  void add(const json::object& patch, std::int64_t version) {
    std::lock_guard lock(mutex_);
    entries_.emplace_back(patch, version);
  }
  std::optional<json::object> find(std::int64_t version) const {
    std::lock_guard lock(mutex_);
    for (const auto& [patch, v] : entries_) {
      if (v == version) return patch;
    }
    return std::nullopt;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<json::object, std::int64_t>> entries_;
};

// Connection status changes, written by a device's I/O thread, read by the test.
class StatusLog {
 public:
  void add(const device::ConnectionStatusChange& change) {
    std::lock_guard lock(mutex_);
    changes_.push_back(change);
  }
  int count(device::ConnectionStatus status, device::ConnectionStatusReason reason) const {
    std::lock_guard lock(mutex_);
    int n = 0;
    for (const auto& c : changes_) n += (c.status == status && c.reason == reason) ? 1 : 0;
    return n;
  }
  std::string describe() const {
    std::lock_guard lock(mutex_);
    std::string out;
    for (const auto& c : changes_) {
      out += std::string(device::toString(c.status)) + "/" +
             std::string(device::toString(c.reason)) + " ";
    }
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<device::ConnectionStatusChange> changes_;
};

class DeviceEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hub_ = std::make_unique<HubProcess>(IOTHUBD_PATH, dir_.path() / "data");
    ASSERT_TRUE(hub_->start()) << hub_->startupError();
    service_connection_string_ = hub_->serviceConnectionString();
    auto parsed = auth::ServiceConnectionString::parse(service_connection_string_);
    ASSERT_TRUE(parsed.isOk()) << parsed.status().toString();
    auto transport = service::HttpTransport::create(
        *parsed, service::ServiceClientOptions{hub_->caFile().string(), hub_->httpsEndpoint()});
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
  // Its own transport: a method call holds its connection for the call's whole duration.
  service::MethodClient methods() {
    auto client = service::MethodClient::fromConnectionString(
        service_connection_string_,
        service::ServiceClientOptions{hub_->caFile().string(), hub_->httpsEndpoint()});
    EXPECT_TRUE(client.isOk()) << client.status().toString();
    return client.isOk() ? std::move(*client) : service::MethodClient(transport_);
  }

  service::Device createDevice(const std::string& id, bool disabled = false) {
    service::Device d;
    d.device_id = id;
    if (disabled) d.status = service::DeviceStatus::Disabled;
    auto created = registry().create(d);
    EXPECT_TRUE(created.isOk()) << created.status().toString();
    return created.isOk() ? *created : d;
  }

  std::string deviceConnectionString(const service::Device& d) {
    auto cs = service::RegistryClient::deviceConnectionString(d, kHostName);
    EXPECT_TRUE(cs.isOk()) << cs.status().toString();
    return cs.isOk() ? *cs : "";
  }

  device::DeviceClientOptions tlsOptions() const {
    device::DeviceClientOptions options;
    options.ca_file = hub_->caFile().string();
    options.endpoint = "127.0.0.1:" + std::to_string(hub_->mqttPort());
    options.connect_timeout = 10s;
    options.request_timeout = 10s;
    options.retry.initial_delay = 200ms;
    options.retry.max_delay = 2s;
    return options;
  }

  // A DeviceClient over MQTT/TLS for `d` (not opened).
  std::unique_ptr<device::DeviceClient> deviceClient(
      const service::Device& d, std::optional<device::DeviceClientOptions> options = {}) {
    auto client =
        device::DeviceClient::create(deviceConnectionString(d), options.value_or(tlsOptions()));
    EXPECT_TRUE(client.isOk()) << client.status().toString();
    return client.isOk() ? std::move(*client) : nullptr;
  }

  std::optional<service::ConnectionState> connectionState(const std::string& id) {
    auto got = registry().get(id);
    if (!got) return std::nullopt;
    return got->connection_state;
  }

  // A raw MQTT connection on the plain port that CONNECTed as `d` and was accepted.
  std::unique_ptr<RawMqttConnection> rawDevice(const service::Device& d) {
    auto raw = std::make_unique<RawMqttConnection>(hub_->mqttPlainPort());
    EXPECT_TRUE(raw->connected());
    raw->sendPacket(deviceConnect(d.device_id, deviceToken(d.device_id, d.primary_key)));
    EXPECT_EQ(connackCode(raw->read()), mqtt::ConnectReturnCode::Accepted);
    return raw;
  }

  // The hub survived whatever the test did: the process runs, a good device connects over
  // TLS and gets its twin, and the REST API answers.
  void expectHubStillServes() {
    ASSERT_TRUE(hub_->process().running()) << hub_->process().err();
    auto d = createDevice("survivor-" + std::to_string(++survivors_));
    auto client = deviceClient(d);
    ASSERT_NE(client, nullptr);
    Status opened = client->open();
    EXPECT_TRUE(opened.isOk()) << opened.toString();
    if (opened) {
      auto twin = client->getTwin();
      EXPECT_TRUE(twin.isOk()) << twin.status().toString();
    }
    client->close();
    auto stats = registry().statistics();
    EXPECT_TRUE(stats.isOk()) << stats.status().toString();
    EXPECT_TRUE(hub_->process().running());
  }

  TempDir dir_;
  std::unique_ptr<HubProcess> hub_;
  std::string service_connection_string_;
  std::shared_ptr<service::HttpTransport> transport_;
  int survivors_ = 0;
};

// ---------------------------------------------------------------------------------------
// Direct methods (docs/protocol.md §3.8, §7)

TEST_F(DeviceEndpointTest, MethodRoundTripPassesTheDeviceChosenStatusAndPayload) {
  auto d = createDevice("method-1");
  std::mutex seen_mutex;
  json::value seen;
  auto client = deviceClient(d);
  ASSERT_NE(client, nullptr);
  client->onMethod("lockDoor", [&](const json::value& payload) {
    std::lock_guard lock(seen_mutex);
    seen = payload;
    return device::MethodResponse{201, json::object{{"echo", payload}, {"by", "device"}}};
  });
  ASSERT_TRUE(client->open().isOk());

  auto response =
      methods().invoke("method-1", {"lockDoor", json::object{{"lockTime", "10m"}}, 10s});
  ASSERT_TRUE(response.isOk()) << response.status().toString();
  EXPECT_EQ(response->status, 201);
  EXPECT_EQ(response->payload, (json::value{{"echo", {{"lockTime", "10m"}}}, {"by", "device"}}));
  {
    std::lock_guard lock(seen_mutex);
    EXPECT_EQ(seen, (json::value{{"lockTime", "10m"}}));
  }

  // A status chosen by the device is not an error of the call, even a 5xx.
  client->onMethod("fail", [](const json::value&) { return device::MethodResponse{503, "busy"}; });
  auto failed = methods().invoke("method-1", {"fail", nullptr, 10s, 5s});
  ASSERT_TRUE(failed.isOk()) << failed.status().toString();
  EXPECT_EQ(failed->status, 503);
  EXPECT_EQ(failed->payload, json::value("busy"));

  // A method without a handler: our SDK answers 501 at once instead of letting it time out.
  auto missing = methods().invoke("method-1", {"noSuchMethod", nullptr, 10s});
  ASSERT_TRUE(missing.isOk()) << missing.status().toString();
  EXPECT_EQ(missing->status, 501);
  client->close();
}

TEST_F(DeviceEndpointTest, UnansweredMethodIsGatewayTimeoutAtTheRequestedTimeout) {
  auto d = createDevice("slow-1");
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  auto client = deviceClient(d);
  ASSERT_NE(client, nullptr);
  client->onMethod("slow", [released, &calls](const json::value&) {
    ++calls;
    // Bounded, so a broken test cannot hang the device's I/O thread for ever.
    released.wait_for(30s);
    return device::MethodResponse{200, "late"};
  });
  client->onMethod("fast", [](const json::value&) { return device::MethodResponse{200, "fast"}; });
  ASSERT_TRUE(client->open().isOk());

  auto started = SteadyClock::now();
  auto timed_out = methods().invoke("slow-1", {"slow", nullptr, 5s});
  auto elapsed = std::chrono::duration<double>(SteadyClock::now() - started).count();
  release.set_value();
  EXPECT_EQ(timed_out.code(), ErrorCode::GatewayTimeout) << timed_out.status().toString();
  EXPECT_GE(elapsed, 4.0) << "504 after " << elapsed << " s";
  EXPECT_LE(elapsed, 6.0) << "504 after " << elapsed << " s";
  EXPECT_EQ(calls.load(), 1) << "the request reached the device";

  // The late answer is dropped by the hub; the device and its connection carry on.
  auto after = methods().invoke("slow-1", {"fast", nullptr, 10s});
  ASSERT_TRUE(after.isOk()) << after.status().toString();
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(after->payload, json::value("fast"));
  client->close();
}

TEST_F(DeviceEndpointTest, MethodOnOfflineDeviceIsDeviceNotOnlineAndOnUnknownDeviceNotFound) {
  createDevice("offline-1");
  auto started = SteadyClock::now();
  auto offline = methods().invoke("offline-1", {"lockDoor"});
  EXPECT_EQ(offline.code(), ErrorCode::DeviceNotOnline) << offline.status().toString();
  EXPECT_LT(SteadyClock::now() - started, 3s) << "connect timeout 0 answers at once";

  // With a connect timeout the hub waits that long for the device before giving up.
  started = SteadyClock::now();
  auto waited = methods().invoke("offline-1", {"lockDoor", nullptr, 5s, 2s});
  auto elapsed = std::chrono::duration<double>(SteadyClock::now() - started).count();
  EXPECT_EQ(waited.code(), ErrorCode::DeviceNotOnline) << waited.status().toString();
  EXPECT_GE(elapsed, 1.5);
  EXPECT_LE(elapsed, 4.0);

  auto unknown = methods().invoke("no-such-device", {"lockDoor"});
  EXPECT_EQ(unknown.code(), ErrorCode::DeviceNotFound) << unknown.status().toString();
}

TEST_F(DeviceEndpointTest, MethodWaitsForADeviceThatConnectsWithinTheConnectTimeout) {
  auto d = createDevice("late-1");
  auto client = deviceClient(d);
  ASSERT_NE(client, nullptr);
  client->onMethod("lockDoor", [](const json::value&) {
    return device::MethodResponse{200, "locked"};
  });
  auto call = std::async(std::launch::async, [this] {
    return methods().invoke("late-1", {"lockDoor", nullptr, 10s, 15s});
  });
  ASSERT_TRUE(client->open().isOk());
  auto response = call.get();
  ASSERT_TRUE(response.isOk()) << response.status().toString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->payload, json::value("locked"));
  client->close();
}

// ---------------------------------------------------------------------------------------
// Twins (docs/protocol.md §3.3-3.7) and connection state

TEST_F(DeviceEndpointTest, ReportedPatchReturnsTheNewVersionAndTheServiceSeesIt) {
  auto d = createDevice("twin-1");
  auto client = deviceClient(d);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->open().isOk());

  auto v1 = client->patchReported(json::object{{"temperature", 21}, {"fw", {{"v", "1.0"}}}});
  ASSERT_TRUE(v1.isOk()) << v1.status().toString();
  auto twin = twins().get("twin-1");
  ASSERT_TRUE(twin.isOk()) << twin.status().toString();
  EXPECT_EQ(twin->reported.at("$version").to_number<std::int64_t>(), *v1);
  EXPECT_EQ(twin->reported.at("temperature"), json::value(21));
  EXPECT_EQ(twin->reported.at("fw").at("v"), json::value("1.0"));

  auto v2 = client->patchReported(json::object{{"temperature", 22}, {"fw", nullptr}});
  ASSERT_TRUE(v2.isOk()) << v2.status().toString();
  EXPECT_EQ(*v2, *v1 + 1);
  twin = twins().get("twin-1");
  ASSERT_TRUE(twin.isOk());
  EXPECT_EQ(twin->reported.at("$version").to_number<std::int64_t>(), *v2);
  EXPECT_EQ(twin->reported.at("temperature"), json::value(22));
  EXPECT_FALSE(twin->reported.contains("fw")) << "null deletes";

  // The device reads back what it reported.
  auto own = client->getTwin();
  ASSERT_TRUE(own.isOk()) << own.status().toString();
  EXPECT_EQ(own->at("reported").at("$version").to_number<std::int64_t>(), *v2);
  client->close();
}

TEST_F(DeviceEndpointTest, DesiredUpdateReachesTheDeviceWithItsVersion) {
  auto d = createDevice("desired-1");
  DesiredLog desired;
  auto client = deviceClient(d);
  ASSERT_NE(client, nullptr);
  client->onDesired(
      [&desired](const json::object& patch, std::int64_t version) { desired.add(patch, version); });
  ASSERT_TRUE(client->open().isOk());

  auto updated = twins().update(
      "desired-1", json::object{{"properties", {{"desired", {{"building", 43}, {"floor", 3}}}}}});
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  auto version = updated->desired.at("$version").to_number<std::int64_t>();
  ASSERT_TRUE(waitFor([&] { return desired.find(version).has_value(); }, 10s))
      << "no desired notification with $version " << version << " (" << desired.size()
      << " received)";
  auto patch = *desired.find(version);
  EXPECT_EQ(patch.at("building"), json::value(43));
  EXPECT_EQ(patch.at("floor"), json::value(3));

  auto own = client->getTwin();
  ASSERT_TRUE(own.isOk()) << own.status().toString();
  EXPECT_EQ(own->at("desired").at("building"), json::value(43));
  EXPECT_EQ(own->at("desired").at("$version").to_number<std::int64_t>(), version);

  // A deletion arrives as null with the next version.
  auto deleted = twins().update("desired-1",
                                json::object{{"properties", {{"desired", {{"floor", nullptr}}}}}});
  ASSERT_TRUE(deleted.isOk()) << deleted.status().toString();
  ASSERT_TRUE(waitFor([&] { return desired.find(version + 1).has_value(); }, 10s));
  EXPECT_TRUE(desired.find(version + 1)->at("floor").is_null());
  client->close();
}

TEST_F(DeviceEndpointTest, ConnectionStateIsConnectedWhileConnectedAndDisconnectedAfterClose) {
  auto d = createDevice("state-1");
  EXPECT_EQ(connectionState("state-1"), service::ConnectionState::Disconnected);
  auto client = deviceClient(d);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->open().isOk());
  EXPECT_TRUE(waitFor(
      [&] { return connectionState("state-1") == service::ConnectionState::Connected; }, 10s));
  // The time is recorded by a store write that follows the connection.
  std::string connected_at;
  EXPECT_TRUE(waitFor(
      [&] {
        auto got = registry().get("state-1");
        if (got) connected_at = got->connection_state_updated_time;
        return got && connected_at != "0001-01-01T00:00:00Z";
      },
      10s))
      << "connectionStateUpdatedTime stays " << connected_at;

  client->close();
  EXPECT_TRUE(waitFor(
      [&] { return connectionState("state-1") == service::ConnectionState::Disconnected; }, 10s));
  EXPECT_TRUE(waitFor(
      [&] {
        auto got = registry().get("state-1");
        return got && got->connection_state_updated_time > connected_at;
      },
      10s))
      << "the disconnection is timestamped too";
  // The service sees the device go: methods now fail as not online.
  EXPECT_EQ(methods().invoke("state-1", {"lockDoor"}).code(), ErrorCode::DeviceNotOnline);
}

TEST_F(DeviceEndpointTest, DisabledDeviceIsRefusedAndAcceptedOnceEnabled) {
  auto d = createDevice("disabled-1", /*disabled=*/true);
  auto client = deviceClient(d);
  ASSERT_NE(client, nullptr);
  Status refused = client->open();
  EXPECT_EQ(refused.code(), ErrorCode::Unauthorized) << refused.toString();
  EXPECT_EQ(connectionState("disabled-1"), service::ConnectionState::Disconnected);

  auto current = registry().get("disabled-1");
  ASSERT_TRUE(current.isOk());
  current->status = service::DeviceStatus::Enabled;
  ASSERT_TRUE(registry().update(*current).isOk());
  Status accepted = client->open();
  EXPECT_TRUE(accepted.isOk()) << accepted.toString();
  client->close();
}

TEST_F(DeviceEndpointTest, DesiredUpdatesKeepFlowingAcrossTokenRenewals) {
  auto d = createDevice("renew-1");
  DesiredLog desired;
  StatusLog statuses;
  auto options = tlsOptions();
  options.token_lifetime = 4s;
  options.renew_before = 2s;  // a renewal every 2 s
  auto client = deviceClient(d, options);
  ASSERT_NE(client, nullptr);
  client->onDesired(
      [&desired](const json::object& patch, std::int64_t version) { desired.add(patch, version); });
  client->onConnectionStatus(
      [&statuses](const device::ConnectionStatusChange& c) { statuses.add(c); });
  ASSERT_TRUE(client->open().isOk());

  using device::ConnectionStatus;
  using device::ConnectionStatusReason;
  for (int renewals = 1; renewals <= 3; ++renewals) {
    ASSERT_TRUE(waitFor(
        [&] {
          return statuses.count(ConnectionStatus::DisconnectedRetrying,
                                ConnectionStatusReason::TokenRenewal) >= renewals &&
                 statuses.count(ConnectionStatus::Connected, ConnectionStatusReason::ConnectionOk) >
                     renewals;
        },
        15s))
        << "renewal " << renewals << ": " << statuses.describe();
    auto updated = twins().update(
        "renew-1", json::object{{"properties", {{"desired", {{"round", renewals}}}}}});
    ASSERT_TRUE(updated.isOk()) << updated.status().toString();
    auto version = updated->desired.at("$version").to_number<std::int64_t>();
    ASSERT_TRUE(waitFor([&] { return desired.find(version).has_value(); }, 10s))
        << "desired $version " << version << " after renewal " << renewals << ": "
        << statuses.describe();
    EXPECT_EQ(desired.find(version)->at("round"), json::value(renewals));
  }
  // Renewals are planned reconnects, never communication errors or refusals.
  EXPECT_EQ(statuses.count(ConnectionStatus::DisconnectedRetrying,
                           ConnectionStatusReason::CommunicationError),
            0)
      << statuses.describe();
  EXPECT_EQ(
      statuses.count(ConnectionStatus::DisconnectedRetrying, ConnectionStatusReason::BadCredential),
      0)
      << statuses.describe();
  auto twin = client->getTwin();
  EXPECT_TRUE(twin.isOk()) << twin.status().toString();
  client->close();
}

// ---------------------------------------------------------------------------------------
// Raw MQTT probes on the plain port: untrusted bytes get a clear refusal or a closed
// connection, never a crash, and the hub keeps serving everyone else.

TEST_F(DeviceEndpointTest, GarbageBytesCloseTheConnection) {
  for (std::string garbage : {std::string("\xF0\x00", 2),  // reserved packet type 15
                              std::string("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
                              std::string("\x10\xFF\xFF\xFF\xFF\x7F", 6),  // a fifth length byte
                              std::string(64, '\0')}) {
    RawMqttConnection raw(hub_->mqttPlainPort());
    ASSERT_TRUE(raw.connected());
    raw.sendBytes(garbage);
    EXPECT_TRUE(raw.waitClosed(10s)) << "still open after " << garbage.size() << " garbage bytes";
    EXPECT_TRUE(raw.received().empty()) << "answered garbage with a packet";
  }
  expectHubStillServes();
}

TEST_F(DeviceEndpointTest, ConnectClaimingAHundredMegabytesIsClosedQuickly) {
  RawMqttConnection raw(hub_->mqttPlainPort());
  ASSERT_TRUE(raw.connected());
  std::string header("\x10", 1);
  mqtt::appendRemainingLength(100 * 1024 * 1024, header);
  auto started = SteadyClock::now();
  raw.sendBytes(header);
  raw.sendBytes(std::string(1024, 'x'));  // a start of the "body"; the rest never comes
  EXPECT_TRUE(raw.waitClosed(10s));
  EXPECT_LT(SteadyClock::now() - started, 3s)
      << "the hub waited for the body instead of refusing the size";
  expectHubStillServes();
}

TEST_F(DeviceEndpointTest, InvalidUtf8InTheClientIdIsClosedWithoutAnswer) {
  // MQTT 3.1.1 §1.5.3: ill-formed UTF-8 (a lead byte without its continuation, an encoded
  // UTF-16 surrogate, U+0000) closes the connection; there is nothing to answer.
  for (std::string bad_id :
       {std::string("\xC3\x28"), std::string("\xED\xA0\x80"), std::string("a\0b", 3)}) {
    // A valid CONNECT with a placeholder id of the same length, then the id's bytes swapped.
    std::string placeholder(bad_id.size(), 'z');
    std::string bytes =
        encoded(deviceConnect(placeholder, "SharedAccessSignature sr=x&sig=y&se=1"));
    std::string prefixed = std::string{'\0', static_cast<char>(placeholder.size())} + placeholder;
    auto at = bytes.find(prefixed);
    ASSERT_NE(at, std::string::npos);
    bytes.replace(at + 2, bad_id.size(), bad_id);
    RawMqttConnection raw(hub_->mqttPlainPort());
    ASSERT_TRUE(raw.connected());
    raw.sendBytes(bytes);
    EXPECT_TRUE(raw.waitClosed(10s));
    EXPECT_TRUE(raw.received().empty()) << "answered a CONNECT whose client id is not UTF-8";
  }
  expectHubStillServes();
}

TEST_F(DeviceEndpointTest, ConnectWithAWrongTokenGetsConnack5) {
  auto d = createDevice("wrong-token-1");
  auto other = createDevice("wrong-token-2");
  // Signed with another device's key, and a token that is not a SAS token at all.
  for (std::string password : {deviceToken("wrong-token-1", other.primary_key),
                               std::string("SharedAccessSignature sr=x&sig=y&se=1")}) {
    RawMqttConnection raw(hub_->mqttPlainPort());
    ASSERT_TRUE(raw.connected());
    raw.sendPacket(deviceConnect(d.device_id, password));
    auto answer = raw.read(10s);
    EXPECT_EQ(connackCode(answer), mqtt::ConnectReturnCode::NotAuthorized);
    EXPECT_TRUE(raw.waitClosed(10s)) << "a refused connection stays open";
  }
  EXPECT_EQ(connectionState("wrong-token-1"), service::ConnectionState::Disconnected);
  expectHubStillServes();
}

// A connection's deadlines run on its timer: a device silent for 1.5 times its keep-alive is
// disconnected (MQTT 3.1.1 §3.1.2.10), one that pings in time is not, and a connection whose
// SAS token expires is closed at the expiry.
TEST_F(DeviceEndpointTest, KeepAliveAndTokenExpiryDisconnectOnTime) {
  auto d = createDevice("deadline-1");
  {
    RawMqttConnection raw(hub_->mqttPlainPort());
    ASSERT_TRUE(raw.connected());
    auto connect = deviceConnect(d.device_id, deviceToken(d.device_id, d.primary_key));
    connect.keep_alive = 1;
    raw.sendPacket(connect);
    ASSERT_EQ(connackCode(raw.read(10s)), mqtt::ConnectReturnCode::Accepted);
    // Pinging every 0.5 s for 3 s keeps it: each packet moves the deadline later.
    auto last_ping = SteadyClock::now();
    for (int i = 0; i < 6; ++i) {
      last_ping = SteadyClock::now();
      raw.sendPacket(mqtt::PingReq{});
      auto answer = raw.read(5s);
      ASSERT_TRUE(answer && std::holds_alternative<mqtt::PingResp>(*answer))
          << "ping " << i << ": the hub closed a device that kept its keep-alive";
      std::this_thread::sleep_for(500ms);  // the device's own pace
    }
    EXPECT_TRUE(raw.waitClosed(10s)) << "a silent device outlived its keep-alive";
    // Not before 1.5 keep-alives after its last packet, which the hub received after it
    // was sent. (Measured from the send: the end of the device's own pause is ~0.5 s
    // later, and the hub may close the connection ~1 s after that.)
    EXPECT_GE(SteadyClock::now() - last_ping, 1500ms);
  }
  {
    auto expiry = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch() + 2s)
                      .count();
    auto token = auth::buildSasToken(auth::deviceResource(testing::kHostName, d.device_id),
                                     d.primary_key, std::nullopt, expiry);
    ASSERT_TRUE(token.isOk());
    RawMqttConnection raw(hub_->mqttPlainPort());
    ASSERT_TRUE(raw.connected());
    raw.sendPacket(deviceConnect(d.device_id, *token));  // keep-alive 60 s
    ASSERT_EQ(connackCode(raw.read(10s)), mqtt::ConnectReturnCode::Accepted);
    EXPECT_TRUE(raw.waitClosed(10s)) << "still connected after the token expired";
  }
  expectHubStillServes();
}

TEST_F(DeviceEndpointTest, SubscribingToAnotherDevicesTopicGetsSubAckFailure) {
  auto a = createDevice("acl-a");
  createDevice("acl-b");
  auto raw = rawDevice(a);
  raw->sendPacket(mqtt::Subscribe{7,
                                  {{"devices/acl-b/messages/devicebound/#", mqtt::QoS::AtLeastOnce},
                                   {"$iothub/methods/POST/#", mqtt::QoS::AtMostOnce},
                                   {"devices/acl-a/messages/devicebound/#", mqtt::QoS::AtLeastOnce},
                                   {"#", mqtt::QoS::AtMostOnce}}});
  auto answer = raw->read(10s);
  ASSERT_TRUE(answer.has_value()) << "no SUBACK";
  auto* suback = std::get_if<mqtt::SubAck>(&*answer);
  ASSERT_NE(suback, nullptr);
  EXPECT_EQ(suback->packet_id, 7);
  EXPECT_EQ(suback->return_codes,
            (std::vector<mqtt::SubAckReturnCode>{
                mqtt::SubAckReturnCode::Failure, mqtt::SubAckReturnCode::MaxQoS0,
                mqtt::SubAckReturnCode::MaxQoS1, mqtt::SubAckReturnCode::Failure}));
  // A refused subscription is not a reason to drop the connection.
  raw->sendPacket(mqtt::PingReq{});
  auto pong = raw->read(10s);
  ASSERT_TRUE(pong.has_value());
  EXPECT_TRUE(std::holds_alternative<mqtt::PingResp>(*pong));
  expectHubStillServes();
}

TEST_F(DeviceEndpointTest, PublishingToAnotherDevicesEventsClosesTheConnection) {
  auto a = createDevice("spoof-a");
  createDevice("spoof-b");
  auto raw = rawDevice(a);
  // Its own events topic is fine...
  raw->sendPacket(mqtt::Publish{"devices/spoof-a/messages/events/", "ok", mqtt::QoS::AtLeastOnce,
                                false, false, 1});
  auto ack = raw->read(10s);
  ASSERT_TRUE(ack.has_value());
  EXPECT_EQ(std::get_if<mqtt::PubAck>(&*ack) ? std::get<mqtt::PubAck>(*ack).packet_id : 0, 1);
  // ...another device's is not.
  raw->sendPacket(mqtt::Publish{"devices/spoof-b/messages/events/", "spoof", mqtt::QoS::AtLeastOnce,
                                false, false, 2});
  EXPECT_TRUE(raw->waitClosed(10s));
  for (const auto& packet : raw->received()) {
    EXPECT_FALSE(std::holds_alternative<mqtt::PubAck>(packet))
        << "the spoofed message was acknowledged";
  }
  expectHubStillServes();
}

// Telemetry is acknowledged only once stored (docs/telemetry.md §8): a message the hub will
// not store closes the connection without a PUBACK, so the device knows to send it again.
TEST_F(DeviceEndpointTest, TelemetryOverTheSizeLimitClosesWithoutPubAck) {
  auto d = createDevice("big-1");
  auto raw = rawDevice(d);
  raw->sendPacket(mqtt::Publish{"devices/big-1/messages/events/", std::string(256 * 1024, 'x'),
                                mqtt::QoS::AtLeastOnce, false, false, 1});
  auto ack = raw->read(10s);
  ASSERT_TRUE(ack.has_value());
  EXPECT_TRUE(std::holds_alternative<mqtt::PubAck>(*ack));  // exactly 256 KiB: accepted
  raw->sendPacket(mqtt::Publish{"devices/big-1/messages/events/k=v", std::string(256 * 1024, 'x'),
                                mqtt::QoS::AtLeastOnce, false, false,
                                2});  // the property counts too: one byte over
  EXPECT_TRUE(raw->waitClosed(10s));
  for (const auto& packet : raw->received()) {
    if (const auto* a = std::get_if<mqtt::PubAck>(&packet)) {
      EXPECT_NE(a->packet_id, 2) << "an oversized message was acknowledged";
    }
  }
  expectHubStillServes();
}

TEST_F(DeviceEndpointTest, TelemetryWithAMalformedPropertyBagClosesWithoutPubAck) {
  auto d = createDevice("bag-1");
  auto raw = rawDevice(d);
  raw->sendPacket(mqtt::Publish{"devices/bag-1/messages/events/a=%zz", "x", mqtt::QoS::AtLeastOnce,
                                false, false, 7});
  EXPECT_TRUE(raw->waitClosed(10s));
  for (const auto& packet : raw->received()) {
    EXPECT_FALSE(std::holds_alternative<mqtt::PubAck>(packet))
        << "a message with a malformed property bag was acknowledged";
  }
  expectHubStillServes();
}

TEST_F(DeviceEndpointTest, QoS2PublishClosesTheConnection) {
  auto d = createDevice("qos2-1");
  auto raw = rawDevice(d);
  raw->sendPacket(mqtt::Publish{"devices/qos2-1/messages/events/", "x", mqtt::QoS::ExactlyOnce,
                                false, false, 3});
  EXPECT_TRUE(raw->waitClosed(10s));
  for (const auto& packet : raw->received()) {
    EXPECT_FALSE(std::holds_alternative<mqtt::PubRec>(packet)) << "the hub started a QoS 2 flow";
  }
  expectHubStillServes();
}

TEST_F(DeviceEndpointTest, AFloodOfBadConnectsIsAllRefusedAndTheHubKeepsServing) {
  auto d = createDevice("flood-1");
  constexpr int kAttempts = 200;
  std::vector<std::unique_ptr<RawMqttConnection>> connections;
  // All CONNECTs go out before any answer is read, so the hub has them all at once.
  for (int i = 0; i < kAttempts; ++i) {
    auto raw = std::make_unique<RawMqttConnection>(hub_->mqttPlainPort());
    ASSERT_TRUE(raw->connected()) << "connection " << i;
    std::string password;
    switch (i % 3) {
      case 0:
        password = deviceToken("flood-1", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=");
        break;
      case 1:
        password = "not a token " + std::to_string(i);
        break;
      default:
        password = deviceToken("flood-1", d.primary_key) + "x";
        break;  // a corrupted signature
    }
    raw->sendPacket(deviceConnect("flood-1", password));
    connections.push_back(std::move(raw));
  }
  int refused_with_connack = 0;
  int closed_without_answer = 0;
  int accepted = 0;
  auto deadline = SteadyClock::now() + 60s;
  for (auto& raw : connections) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
    auto code = connackCode(raw->read(std::max(left, std::chrono::milliseconds(1))));
    if (code == mqtt::ConnectReturnCode::Accepted) {
      ++accepted;
    } else if (code) {
      ++refused_with_connack;
      EXPECT_TRUE(*code == mqtt::ConnectReturnCode::NotAuthorized ||
                  *code == mqtt::ConnectReturnCode::BadUserNameOrPassword)
          << "CONNACK " << static_cast<int>(*code);
    } else if (raw->closed()) {
      ++closed_without_answer;
    }
  }
  EXPECT_EQ(accepted, 0);
  EXPECT_EQ(refused_with_connack + closed_without_answer, kAttempts)
      << refused_with_connack << " refused, " << closed_without_answer
      << " closed, the rest unanswered";
  EXPECT_EQ(refused_with_connack, kAttempts) << "every bad CONNECT gets its CONNACK refusal";
  connections.clear();
  expectHubStillServes();

  // And the device the flood tried to be can still connect with its real key.
  auto client = deviceClient(d);
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->open().isOk());
  client->close();
}

// ---------------------------------------------------------------------------------------
// simdevice and iothubctl as processes (the reference scenario)

class SimdeviceTest : public DeviceEndpointTest {
 protected:
  testing::CommandResult ctl(std::vector<std::string> args) {
    std::vector<std::string> argv{IOTHUBCTL_PATH, "--ca", hub_->caFile().string(), "--endpoint",
                                  hub_->httpsEndpoint()};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::runCommand(argv, dir_.path(),
                               {"IOTHUB_CONNECTION_STRING=" + service_connection_string_});
  }

  std::unique_ptr<testing::Process> startSimdevice(const std::string& connection_string) {
    return std::make_unique<testing::Process>(
        std::vector<std::string>{SIMDEVICE_PATH, "--connection-string", connection_string, "--ca",
                                 hub_->caFile().string(), "--endpoint",
                                 "127.0.0.1:" + std::to_string(hub_->mqttPort())},
        dir_.path());
  }
};

TEST_F(SimdeviceTest, AnswersLockDoorPrintsDesiredUpdatesAndStopsOnSigterm) {
  auto created = ctl({"device", "create", "door-1"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  auto cs = ctl({"device", "connection-string", "door-1"});
  ASSERT_EQ(cs.exit_code, 0) << cs.err;
  auto simdevice = startSimdevice(cs.out.substr(0, cs.out.find('\n')));
  ASSERT_TRUE(simdevice->started());

  // No wait for the device: --connect-timeout makes the hub wait until it is online.
  auto invoked = ctl({"method", "invoke", "door-1", "lockDoor", "--payload",
                      R"({"lockTime":"10m"})", "--connect-timeout", "10"});
  ASSERT_EQ(invoked.exit_code, 0) << invoked.err << "\nsimdevice: " << simdevice->out()
                                  << simdevice->err();
  EXPECT_NE(invoked.out.find("status: 200"), std::string::npos) << invoked.out;
  EXPECT_NE(invoked.out.find("lockDoor called successfully"), std::string::npos) << invoked.out;
  EXPECT_TRUE(
      waitFor([&] { return simdevice->out().find("Locking Door!") != std::string::npos; }, 10s))
      << simdevice->out();
  EXPECT_NE(simdevice->out().find("Connection status: Connected"), std::string::npos)
      << simdevice->out();

  auto updated = ctl({"twin", "update", "door-1", "--json",
                      R"({"properties":{"desired":{"building":43,"floor":3}}})"});
  ASSERT_EQ(updated.exit_code, 0) << updated.err;
  EXPECT_TRUE(waitFor(
      [&] {
        auto out = simdevice->out();
        auto at = out.find("Desired properties updated");
        if (at == std::string::npos) return false;
        auto line = out.substr(at, out.find('\n', at) - at);
        return line.find("\"building\":43") != std::string::npos &&
               line.find("\"floor\":3") != std::string::npos;
      },
      10s))
      << simdevice->out();

  auto twin = ctl({"twin", "get", "door-1"});
  ASSERT_EQ(twin.exit_code, 0) << twin.err;
  EXPECT_NE(twin.out.find("\"building\": 43"), std::string::npos) << twin.out;
  EXPECT_NE(twin.out.find("\"connectionState\": \"Connected\""), std::string::npos) << twin.out;

  simdevice->signal(SIGTERM);
  EXPECT_EQ(simdevice->wait(15s), 0) << simdevice->err();
  EXPECT_NE(simdevice->out().find("Stopped"), std::string::npos) << simdevice->out();
  EXPECT_TRUE(waitFor(
      [&] { return connectionState("door-1") == service::ConnectionState::Disconnected; }, 10s));
}

TEST_F(SimdeviceTest, ExitsWithOneWhenItsKeyIsRefused) {
  auto d = createDevice("door-bad");
  d.primary_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=";
  auto simdevice = startSimdevice(deviceConnectionString(d));
  ASSERT_TRUE(simdevice->started());
  EXPECT_EQ(simdevice->wait(20s), 1) << simdevice->out() << simdevice->err();
  EXPECT_NE(simdevice->err().find("Unauthorized"), std::string::npos) << simdevice->err();
}

}  // namespace
}  // namespace iothub
