#include "iothub/device/device_client.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <vector>

#include "auth/sas_token.hpp"
#include "fake_mqtt_broker.hpp"
#include "sdk/service/test_certificate.hpp"

namespace iothub::device {
namespace {

using namespace std::chrono_literals;
using testing::BrokerConnection;
using testing::FakeMqttBroker;
using testing::kDefaultWait;

constexpr std::string_view kHost = "myhub.example";
constexpr std::string_view kKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::string_view kUserName =
    "myhub.example/dev1/?api-version=2021-04-12&DeviceClientType=iothub-cpp-device%2F0.1";
constexpr std::string_view kMethodsFilter = "$iothub/methods/POST/#";
constexpr std::string_view kTwinResponseFilter = "$iothub/twin/res/#";
constexpr std::string_view kDesiredFilter = "$iothub/twin/PATCH/properties/desired/#";

std::string connectionString(std::string_view extra = "") {
  return "HostName=" + std::string(kHost) + ";DeviceId=dev1;SharedAccessKey=" + std::string(kKey) +
         std::string(extra);
}

template <class T>
bool isReady(std::future<T>& future, std::chrono::milliseconds wait = kDefaultWait) {
  return future.wait_for(wait) == std::future_status::ready;
}

// Collects connection status changes from the client's I/O thread.
class StatusRecorder {
 public:
  ConnectionStatusHandler handler() {
    return [this](const ConnectionStatusChange& change) {
      std::lock_guard lock(mutex_);
      changes_.push_back(change);
      changed_.notify_all();
    };
  }

  // Waits until a change with this status and reason has been seen `count` times in all.
  bool waitFor(ConnectionStatus status, ConnectionStatusReason reason, int count = 1,
               std::chrono::milliseconds wait = kDefaultWait) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, wait, [&] {
      int seen = 0;
      for (const auto& change : changes_) {
        if (change.status == status && change.reason == reason) ++seen;
      }
      return seen >= count;
    });
  }

  std::vector<ConnectionStatusChange> all() {
    std::lock_guard lock(mutex_);
    return changes_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<ConnectionStatusChange> changes_;
};

class DeviceClientTest : public ::testing::Test {
 protected:
  DeviceClientOptions fastOptions() const {
    DeviceClientOptions options;
    options.use_tls = false;
    options.endpoint = "127.0.0.1:" + std::to_string(broker_.port());
    options.retry = RetryPolicy{20ms, 200ms, 2.0, 0.0, std::nullopt};
    options.request_timeout = 5s;
    options.connect_timeout = 5s;
    return options;
  }

  void makeClient(DeviceClientOptions options,
                  const std::string& connection_string = connectionString()) {
    auto created = DeviceClient::create(connection_string, std::move(options), clock_, random_);
    ASSERT_TRUE(created) << created.status().toString();
    client_ = std::move(*created);
    client_->onConnectionStatus(statuses_.handler());
  }

  // Accepts the next connection, expects CONNECT and answers CONNACK.
  std::shared_ptr<BrokerConnection> acceptConnect(
      bool session_present = false,
      mqtt::ConnectReturnCode code = mqtt::ConnectReturnCode::Accepted) {
    auto connection = broker_.accept();
    if (!connection) {
      ADD_FAILURE() << "the client did not connect";
      return nullptr;
    }
    auto connect = connection->expect<mqtt::Connect>();
    if (!connect) return nullptr;
    last_connect_ = *connect;
    connection->send(mqtt::ConnAck{session_present, code});
    return connection;
  }

  // Expects one SUBSCRIBE of exactly `filters` (QoS 0, in order) and grants it.
  void expectSubscribe(BrokerConnection& connection, const std::vector<std::string_view>& filters,
                       mqtt::SubAckReturnCode grant = mqtt::SubAckReturnCode::MaxQoS0) {
    auto subscribe = connection.expect<mqtt::Subscribe>();
    ASSERT_TRUE(subscribe);
    std::vector<mqtt::Subscription> wanted;
    for (auto filter : filters) wanted.push_back({std::string(filter), mqtt::QoS::AtMostOnce});
    EXPECT_EQ(subscribe->subscriptions, wanted);
    connection.send(mqtt::SubAck{subscribe->packet_id,
                                 std::vector<mqtt::SubAckReturnCode>(filters.size(), grant)});
  }

  // open() against the broker: CONNACK, then the SUBSCRIBE of `filters` if any.
  std::shared_ptr<BrokerConnection> openConnected(
      const std::vector<std::string_view>& filters = {}) {
    auto opening = std::async(std::launch::async, [this] { return client_->open(); });
    auto connection = acceptConnect();
    if (connection && !filters.empty()) expectSubscribe(*connection, filters);
    if (!isReady(opening)) {
      ADD_FAILURE() << "open() did not return";
      return nullptr;
    }
    Status opened = opening.get();
    EXPECT_TRUE(opened.isOk()) << opened.toString();
    return connection;
  }

  // Answers the next twin request on `connection` (which must already have the twin
  // response subscription) and returns its PUBLISH.
  std::optional<mqtt::Publish> answerTwin(BrokerConnection& connection, const std::string& status,
                                          const std::string& payload,
                                          const std::string& extra_query = "") {
    auto request = connection.expect<mqtt::Publish>();
    if (!request) return std::nullopt;
    auto rid_at = request->topic.find("?$rid=");
    if (rid_at == std::string::npos) {
      ADD_FAILURE() << "no $rid in " << request->topic;
      return std::nullopt;
    }
    std::string rid = request->topic.substr(rid_at + 6);
    connection.send(
        mqtt::Publish{"$iothub/twin/res/" + status + "/?$rid=" + rid + extra_query, payload});
    return request;
  }

  FakeMqttBroker broker_;
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::shared_ptr<SeededRandom> random_ = std::make_shared<SeededRandom>(7);
  StatusRecorder statuses_;
  std::optional<mqtt::Connect> last_connect_;
  // Last member: destroyed (and closed) first, while the broker still runs.
  std::unique_ptr<DeviceClient> client_;
};

TEST_F(DeviceClientTest, ConnectsLikeTheAzureSdks) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  ASSERT_TRUE(last_connect_);
  EXPECT_EQ(last_connect_->client_id, "dev1");
  EXPECT_EQ(last_connect_->user_name, std::string(kUserName));
  EXPECT_FALSE(last_connect_->clean_session);
  EXPECT_EQ(last_connect_->keep_alive, 180);
  EXPECT_FALSE(last_connect_->will);
  ASSERT_TRUE(last_connect_->password);
  auto token = auth::SasToken::parse(*last_connect_->password);
  ASSERT_TRUE(token) << token.status().toString();
  EXPECT_EQ(token->resource_raw, "myhub.example%2Fdevices%2Fdev1");
  EXPECT_FALSE(token->key_name);
  EXPECT_EQ(token->expiry, unixSeconds(clock_->now()) + 3600);
  EXPECT_TRUE(auth::signatureMatches(*token, kKey));
  EXPECT_TRUE(statuses_.waitFor(ConnectionStatus::Connected, ConnectionStatusReason::ConnectionOk));
  EXPECT_EQ(client_->endpoint(), "127.0.0.1:" + std::to_string(broker_.port()));
}

TEST_F(DeviceClientTest, GatewayHostNameChoosesWhereToConnect) {
  DeviceClientOptions options = fastOptions();
  options.endpoint.clear();
  makeClient(options,
             connectionString(";GatewayHostName=127.0.0.1:" + std::to_string(broker_.port())));
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  // HostName still names the hub in the credentials.
  EXPECT_EQ(last_connect_->user_name, std::string(kUserName));
}

TEST_F(DeviceClientTest, OpenReturnsOnlyAfterTheHandlersAreSubscribed) {
  makeClient(fastOptions());
  client_->onMethod("lockDoor", [](const json::value&) { return MethodResponse{}; });
  client_->onDesired([](const json::object&, std::int64_t) {});
  auto opening = std::async(std::launch::async, [this] { return client_->open(); });
  auto connection = acceptConnect();
  ASSERT_TRUE(connection);
  auto subscribe = connection->expect<mqtt::Subscribe>();
  ASSERT_TRUE(subscribe);
  EXPECT_EQ(subscribe->subscriptions, (std::vector<mqtt::Subscription>{
                                          {std::string(kMethodsFilter), mqtt::QoS::AtMostOnce},
                                          {std::string(kDesiredFilter), mqtt::QoS::AtMostOnce}}));
  EXPECT_FALSE(isReady(opening, 0ms));
  connection->send(mqtt::SubAck{
      subscribe->packet_id, {mqtt::SubAckReturnCode::MaxQoS0, mqtt::SubAckReturnCode::MaxQoS0}});
  ASSERT_TRUE(isReady(opening));
  EXPECT_TRUE(opening.get().isOk());
}

TEST_F(DeviceClientTest, AnswersDirectMethods) {
  makeClient(fastOptions());
  std::promise<json::value> received;
  client_->onMethod("lockDoor", [&](const json::value& payload) {
    received.set_value(payload);
    return MethodResponse{200, json::object{{"Response", "lockDoor called successfully"}}};
  });
  auto connection = openConnected({kMethodsFilter});
  ASSERT_TRUE(connection);
  connection->send(mqtt::Publish{"$iothub/methods/POST/lockDoor/?$rid=1a", R"({"force":true})"});
  auto response = connection->expect<mqtt::Publish>();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->topic, "$iothub/methods/res/200/?$rid=1a");
  EXPECT_EQ(response->payload, R"({"Response":"lockDoor called successfully"})");
  EXPECT_EQ(response->qos, mqtt::QoS::AtMostOnce);
  auto payload = received.get_future();
  ASSERT_TRUE(isReady(payload));
  EXPECT_EQ(json::serialize(payload.get()), R"({"force":true})");
}

TEST_F(DeviceClientTest, AnswersUnknownMethodsWith501) {
  makeClient(fastOptions());
  client_->onMethod("lockDoor", [](const json::value&) { return MethodResponse{}; });
  auto connection = openConnected({kMethodsFilter});
  ASSERT_TRUE(connection);
  connection->send(mqtt::Publish{"$iothub/methods/POST/reboot/?$rid=7", "null"});
  auto response = connection->expect<mqtt::Publish>();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->topic, "$iothub/methods/res/501/?$rid=7");
  EXPECT_EQ(response->payload,
            R"({"message":"Method 'reboot' is not implemented by this device"})");
}

TEST_F(DeviceClientTest, SubscribesToMethodsRegisteredAfterOpen) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  client_->onMethod("later", [](const json::value&) { return MethodResponse{204, nullptr}; });
  expectSubscribe(*connection, {kMethodsFilter});
  connection->send(mqtt::Publish{"$iothub/methods/POST/later/?$rid=2", "null"});
  auto response = connection->expect<mqtt::Publish>();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->topic, "$iothub/methods/res/204/?$rid=2");
  EXPECT_EQ(response->payload, "null");
}

TEST_F(DeviceClientTest, GetTwinSubscribesToResponsesFirst) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  auto twin = std::async(std::launch::async, [this] { return client_->getTwin(); });
  expectSubscribe(*connection, {kTwinResponseFilter});
  const std::string body =
      R"({"desired":{"$version":1},"reported":{"temperature":32,"$version":2}})";
  auto request = answerTwin(*connection, "200", body);
  ASSERT_TRUE(request);
  EXPECT_EQ(request->topic, "$iothub/twin/GET/?$rid=1");
  EXPECT_EQ(request->qos, mqtt::QoS::AtMostOnce);
  ASSERT_TRUE(isReady(twin));
  auto result = twin.get();
  ASSERT_TRUE(result) << result.status().toString();
  EXPECT_EQ(json::serialize(*result), body);

  // The subscription is made once; the next request goes straight out.
  auto again = std::async(std::launch::async, [this] { return client_->getTwin(); });
  request = answerTwin(*connection, "200", body);
  ASSERT_TRUE(request);
  EXPECT_EQ(request->topic, "$iothub/twin/GET/?$rid=2");
  ASSERT_TRUE(isReady(again));
  EXPECT_TRUE(again.get());
}

TEST_F(DeviceClientTest, PatchReportedReturnsTheNewVersion) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  auto patched = std::async(std::launch::async, [this] {
    return client_->patchReported(json::object{{"temperature", 21}, {"old", nullptr}});
  });
  expectSubscribe(*connection, {kTwinResponseFilter});
  auto request = answerTwin(*connection, "204", "", "&$version=5");
  ASSERT_TRUE(request);
  EXPECT_EQ(request->topic, "$iothub/twin/PATCH/properties/reported/?$rid=1");
  EXPECT_EQ(request->payload, R"({"temperature":21,"old":null})");
  ASSERT_TRUE(isReady(patched));
  auto version = patched.get();
  ASSERT_TRUE(version) << version.status().toString();
  EXPECT_EQ(*version, 5);
}

TEST_F(DeviceClientTest, TwinErrorBodiesBecomeErrors) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  auto patched = std::async(std::launch::async, [this] {
    return client_->patchReported(json::object{{"a.b", 1}});
  });
  expectSubscribe(*connection, {kTwinResponseFilter});
  ASSERT_TRUE(answerTwin(*connection, "400",
                         R"({"errorCode":400004,"message":"Property name a.b is invalid"})"));
  ASSERT_TRUE(isReady(patched));
  auto version = patched.get();
  EXPECT_EQ(version.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(version.status().message().find("Property name a.b is invalid"), std::string::npos);

  // errorCode wins over a 200 status, as in the Node SDK.
  auto twin = std::async(std::launch::async, [this] { return client_->getTwin(); });
  ASSERT_TRUE(answerTwin(*connection, "200", R"({"errorCode":429001,"message":"throttled"})"));
  ASSERT_TRUE(isReady(twin));
  EXPECT_EQ(twin.get().code(), ErrorCode::Throttled);
}

TEST_F(DeviceClientTest, TwinRequestsTimeOut) {
  DeviceClientOptions options = fastOptions();
  options.request_timeout = 300ms;
  makeClient(options);
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  auto twin = std::async(std::launch::async, [this] { return client_->getTwin(); });
  expectSubscribe(*connection, {kTwinResponseFilter});
  ASSERT_TRUE(connection->expect<mqtt::Publish>());
  ASSERT_TRUE(isReady(twin));
  auto result = twin.get();
  EXPECT_EQ(result.code(), ErrorCode::GatewayTimeout);
  EXPECT_NE(result.status().message().find("timed out after 300 ms"), std::string::npos)
      << result.status().message();
}

TEST_F(DeviceClientTest, TwinRequestsFailWhenTheHubRefusesTheSubscription) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  auto twin = std::async(std::launch::async, [this] { return client_->getTwin(); });
  expectSubscribe(*connection, {kTwinResponseFilter}, mqtt::SubAckReturnCode::Failure);
  ASSERT_TRUE(isReady(twin));
  EXPECT_EQ(twin.get().code(), ErrorCode::Unauthorized);
}

TEST_F(DeviceClientTest, DeliversDesiredUpdatesWithTheirVersion) {
  makeClient(fastOptions());
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::pair<std::string, std::int64_t>> updates;
  client_->onDesired([&](const json::object& patch, std::int64_t version) {
    std::lock_guard lock(mutex);
    updates.emplace_back(json::serialize(patch), version);
    changed.notify_all();
  });
  auto connection = openConnected({kDesiredFilter});
  ASSERT_TRUE(connection);
  connection->send(mqtt::Publish{"$iothub/twin/PATCH/properties/desired/?$version=15",
                                 R"({"color":"red","$version":15})"});
  connection->send(mqtt::Publish{"$iothub/twin/PATCH/properties/desired/?$version=16", "not json"});
  connection->send(mqtt::Publish{"$iothub/twin/PATCH/properties/desired/?$version=17",
                                 R"({"color":null,"$version":17})"});
  std::unique_lock lock(mutex);
  ASSERT_TRUE(changed.wait_for(lock, kDefaultWait, [&] { return updates.size() >= 2; }));
  EXPECT_EQ(updates[0],
            (std::pair<std::string, std::int64_t>{R"({"color":"red","$version":15})", 15}));
  EXPECT_EQ(updates[1],
            (std::pair<std::string, std::int64_t>{R"({"color":null,"$version":17})", 17}));
}

TEST_F(DeviceClientTest, TelemetryCompletesOnPubAck) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  auto sent = std::async(std::launch::async, [this] {
    return client_->sendEvent("hello", {{"$.ct", "application/json"}, {"alert", "high temp"}});
  });
  auto publish = connection->expect<mqtt::Publish>();
  ASSERT_TRUE(publish);
  EXPECT_EQ(publish->topic,
            "devices/dev1/messages/events/%24.ct=application%2Fjson&alert=high%20temp");
  EXPECT_EQ(publish->payload, "hello");
  EXPECT_EQ(publish->qos, mqtt::QoS::AtLeastOnce);
  EXPECT_FALSE(publish->dup);
  EXPECT_NE(publish->packet_id, 0);
  EXPECT_FALSE(isReady(sent, 0ms));
  connection->send(mqtt::PubAck{publish->packet_id});
  ASSERT_TRUE(isReady(sent));
  EXPECT_TRUE(sent.get().isOk());
}

TEST_F(DeviceClientTest, TelemetryRejectsOversizedPayloadsAndWildcardTopics) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  EXPECT_EQ(client_->sendEvent(std::string(256 * 1024 + 1, 'x')).code(),
            ErrorCode::MessageTooLarge);

  auto created = DeviceClient::create(
      "HostName=myhub.example;DeviceId=dev#1;SharedAccessKey=" + std::string(kKey), fastOptions(),
      clock_, random_);
  ASSERT_TRUE(created);
  EXPECT_EQ((*created)->sendEvent("x").code(), ErrorCode::ArgumentInvalid);
}

TEST_F(DeviceClientTest, ReconnectsWithBackOffAndResubscribesWhenTheSessionIsGone) {
  DeviceClientOptions options = fastOptions();
  options.retry = RetryPolicy{300ms, 1000ms, 2.0, 0.0, std::nullopt};
  makeClient(options);
  client_->onMethod("lockDoor", [](const json::value&) { return MethodResponse{}; });
  auto first = openConnected({kMethodsFilter});
  ASSERT_TRUE(first);

  auto dropped_at = std::chrono::steady_clock::now();
  first->drop();
  ASSERT_TRUE(statuses_.waitFor(ConnectionStatus::DisconnectedRetrying,
                                ConnectionStatusReason::CommunicationError));
  auto second = broker_.accept();
  ASSERT_TRUE(second);
  // Jitter 0: the first retry waits exactly initial_delay.
  EXPECT_GE(std::chrono::steady_clock::now() - dropped_at, 300ms);
  ASSERT_TRUE(second->expect<mqtt::Connect>());
  second->send(mqtt::ConnAck{false, mqtt::ConnectReturnCode::Accepted});
  expectSubscribe(*second, {kMethodsFilter});
  EXPECT_TRUE(
      statuses_.waitFor(ConnectionStatus::Connected, ConnectionStatusReason::ConnectionOk, 2));

  second->send(mqtt::Publish{"$iothub/methods/POST/lockDoor/?$rid=9", "null"});
  auto response = second->expect<mqtt::Publish>();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->topic, "$iothub/methods/res/200/?$rid=9");
}

TEST_F(DeviceClientTest, KeepsSubscriptionsWhenTheSessionIsPresent) {
  makeClient(fastOptions());
  client_->onMethod("lockDoor", [](const json::value&) { return MethodResponse{}; });
  auto first = openConnected({kMethodsFilter});
  ASSERT_TRUE(first);
  first->drop();
  auto second = acceptConnect(/*session_present=*/true);
  ASSERT_TRUE(second);
  ASSERT_TRUE(
      statuses_.waitFor(ConnectionStatus::Connected, ConnectionStatusReason::ConnectionOk, 2));
  second->send(mqtt::Publish{"$iothub/methods/POST/lockDoor/?$rid=3", "null"});
  // The method answer is the first packet after CONNACK: no SUBSCRIBE went out.
  auto response = second->expect<mqtt::Publish>();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->topic, "$iothub/methods/res/200/?$rid=3");
}

TEST_F(DeviceClientTest, ResendsUnacknowledgedTelemetryWithDupAfterReconnect) {
  makeClient(fastOptions());
  auto first = openConnected();
  ASSERT_TRUE(first);
  auto sent = std::async(std::launch::async, [this] { return client_->sendEvent("reading"); });
  auto original = first->expect<mqtt::Publish>();
  ASSERT_TRUE(original);
  first->drop();
  auto second = acceptConnect(/*session_present=*/true);
  ASSERT_TRUE(second);
  auto again = second->expect<mqtt::Publish>();
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->dup);
  EXPECT_EQ(again->packet_id, original->packet_id);
  EXPECT_EQ(again->topic, original->topic);
  EXPECT_EQ(again->payload, "reading");
  second->send(mqtt::PubAck{again->packet_id});
  ASSERT_TRUE(isReady(sent));
  EXPECT_TRUE(sent.get().isOk());
}

TEST_F(DeviceClientTest, TwinRequestFailsWhenTheConnectionDropsBeforeTheAnswer) {
  makeClient(fastOptions());
  auto first = openConnected();
  ASSERT_TRUE(first);
  auto twin = std::async(std::launch::async, [this] { return client_->getTwin(); });
  expectSubscribe(*first, {kTwinResponseFilter});
  ASSERT_TRUE(first->expect<mqtt::Publish>());
  first->drop();
  ASSERT_TRUE(isReady(twin));
  EXPECT_EQ(twin.get().code(), ErrorCode::ServiceUnavailable);
}

TEST_F(DeviceClientTest, RenewsTheTokenByReconnecting) {
  DeviceClientOptions options = fastOptions();
  options.token_lifetime = 2s;
  options.renew_before = 1s;
  makeClient(options);
  client_->onMethod("lockDoor", [](const json::value&) { return MethodResponse{}; });
  auto first = openConnected({kMethodsFilter});
  ASSERT_TRUE(first);
  const std::string first_password = *last_connect_->password;
  clock_->advance(100s);

  ASSERT_TRUE(first->expect<mqtt::Disconnect>());
  EXPECT_TRUE(first->waitClosed());
  auto second = acceptConnect(/*session_present=*/false);
  ASSERT_TRUE(second);
  ASSERT_TRUE(last_connect_->password);
  EXPECT_NE(*last_connect_->password, first_password);
  auto token = auth::SasToken::parse(*last_connect_->password);
  ASSERT_TRUE(token);
  EXPECT_EQ(token->expiry, unixSeconds(clock_->now()) + 2);
  EXPECT_TRUE(auth::signatureMatches(*token, kKey));
  // Session-present 0: the SDK subscribes again.
  expectSubscribe(*second, {kMethodsFilter});
  EXPECT_TRUE(statuses_.waitFor(ConnectionStatus::DisconnectedRetrying,
                                ConnectionStatusReason::TokenRenewal));
  EXPECT_TRUE(
      statuses_.waitFor(ConnectionStatus::Connected, ConnectionStatusReason::ConnectionOk, 2));
}

TEST_F(DeviceClientTest, TokenRenewalWaitsForTwinAnswersInFlight) {
  DeviceClientOptions options = fastOptions();
  options.token_lifetime = 2s;
  options.renew_before = 1s;
  makeClient(options);
  auto first = openConnected();
  ASSERT_TRUE(first);
  auto twin = std::async(std::launch::async, [this] { return client_->getTwin(); });
  expectSubscribe(*first, {kTwinResponseFilter});
  auto request = first->expect<mqtt::Publish>();
  ASSERT_TRUE(request);
  // The renewal is due after 1 s but must wait for the answer (request_timeout is 5 s).
  EXPECT_FALSE(first->next(1500ms));
  first->send(mqtt::Publish{"$iothub/twin/res/200/?$rid=1", R"({"desired":{},"reported":{}})"});
  ASSERT_TRUE(isReady(twin));
  EXPECT_TRUE(twin.get());
  EXPECT_TRUE(first->expect<mqtt::Disconnect>());
}

TEST_F(DeviceClientTest, RefusalOnTheFirstConnectionIsFinal) {
  makeClient(fastOptions());
  auto opening = std::async(std::launch::async, [this] { return client_->open(); });
  ASSERT_TRUE(acceptConnect(false, mqtt::ConnectReturnCode::NotAuthorized));
  ASSERT_TRUE(isReady(opening));
  Status opened = opening.get();
  EXPECT_EQ(opened.code(), ErrorCode::Unauthorized);
  EXPECT_NE(opened.message().find("Not authorized"), std::string::npos);
  EXPECT_TRUE(
      statuses_.waitFor(ConnectionStatus::Disconnected, ConnectionStatusReason::BadCredential));
  // The retry policy would try again after 20 ms.
  EXPECT_EQ(broker_.accept(300ms), nullptr);
  EXPECT_EQ(client_->getTwin().code(), ErrorCode::InvalidOperation);
}

TEST_F(DeviceClientTest, RefusalAfterTheFirstConnectionIsRetried) {
  makeClient(fastOptions());
  auto first = openConnected();
  ASSERT_TRUE(first);
  first->drop();
  ASSERT_TRUE(acceptConnect(false, mqtt::ConnectReturnCode::BadUserNameOrPassword));
  EXPECT_TRUE(statuses_.waitFor(ConnectionStatus::DisconnectedRetrying,
                                ConnectionStatusReason::BadCredential));
  auto third = acceptConnect();
  ASSERT_TRUE(third);
  EXPECT_TRUE(
      statuses_.waitFor(ConnectionStatus::Connected, ConnectionStatusReason::ConnectionOk, 2));
}

TEST_F(DeviceClientTest, GivesUpAfterMaxAttempts) {
  DeviceClientOptions options = fastOptions();
  options.retry.max_attempts = 2;
  makeClient(options);
  auto opening = std::async(std::launch::async, [this] { return client_->open(); });
  for (int i = 0; i < 2; ++i) {
    auto connection = acceptConnect(false, mqtt::ConnectReturnCode::ServerUnavailable);
    ASSERT_TRUE(connection);
  }
  ASSERT_TRUE(isReady(opening));
  Status opened = opening.get();
  EXPECT_EQ(opened.code(), ErrorCode::ServiceUnavailable);
  EXPECT_NE(opened.message().find("Gave up after 2"), std::string::npos) << opened.message();
  EXPECT_TRUE(
      statuses_.waitFor(ConnectionStatus::Disconnected, ConnectionStatusReason::RetryExpired));
  EXPECT_EQ(broker_.accept(200ms), nullptr);
}

TEST_F(DeviceClientTest, PingsWhenIdleAndReconnectsWhenPingsGoUnanswered) {
  DeviceClientOptions options = fastOptions();
  options.keep_alive_seconds = 1;
  makeClient(options);
  auto first = openConnected();
  ASSERT_TRUE(first);
  EXPECT_EQ(last_connect_->keep_alive, 1);
  ASSERT_TRUE(first->waitForPings(2));

  first->setAnswerPings(false);
  ASSERT_TRUE(first->waitClosed(5s));
  EXPECT_TRUE(statuses_.waitFor(ConnectionStatus::DisconnectedRetrying,
                                ConnectionStatusReason::CommunicationError));
  EXPECT_TRUE(acceptConnect());
}

TEST_F(DeviceClientTest, CloseSendsDisconnectAndCancelsPendingRequests) {
  makeClient(fastOptions());
  auto connection = openConnected();
  ASSERT_TRUE(connection);
  auto twin = std::async(std::launch::async, [this] { return client_->getTwin(); });
  ASSERT_TRUE(connection->expect<mqtt::Subscribe>());
  client_->close();
  ASSERT_TRUE(isReady(twin));
  EXPECT_EQ(twin.get().code(), ErrorCode::Cancelled);
  ASSERT_TRUE(connection->expect<mqtt::Disconnect>());
  EXPECT_TRUE(connection->waitClosed());
  EXPECT_TRUE(
      statuses_.waitFor(ConnectionStatus::Disconnected, ConnectionStatusReason::ClientClose));
  EXPECT_EQ(client_->sendEvent("x").code(), ErrorCode::InvalidOperation);

  // The client can be opened again; the twin feature stays in use and is subscribed again.
  auto reopened = openConnected({kTwinResponseFilter});
  EXPECT_TRUE(reopened);
}

TEST_F(DeviceClientTest, BlockingCallsFromCallbacksAreRefused) {
  makeClient(fastOptions());
  std::promise<Status> from_callback;
  client_->onMethod("nested", [&](const json::value&) {
    from_callback.set_value(client_->sendEvent("x"));
    return MethodResponse{};
  });
  auto connection = openConnected({kMethodsFilter});
  ASSERT_TRUE(connection);
  connection->send(mqtt::Publish{"$iothub/methods/POST/nested/?$rid=1", "null"});
  auto status = from_callback.get_future();
  ASSERT_TRUE(isReady(status));
  EXPECT_EQ(status.get().code(), ErrorCode::InvalidOperation);
}

TEST_F(DeviceClientTest, OperationsBeforeOpenFail) {
  makeClient(fastOptions());
  EXPECT_EQ(client_->getTwin().code(), ErrorCode::InvalidOperation);
  EXPECT_EQ(client_->patchReported({}).code(), ErrorCode::InvalidOperation);
  EXPECT_EQ(client_->sendEvent("x").code(), ErrorCode::InvalidOperation);
}

TEST_F(DeviceClientTest, CreateRejectsWhatItCannotUse) {
  auto create = [&](const std::string& cs, DeviceClientOptions options = {}) {
    return DeviceClient::create(cs, std::move(options), clock_, random_).code();
  };
  EXPECT_EQ(create("HostName=h;DeviceId=d"), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(create("HostName=h;DeviceId=d;x509=true"), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(create(connectionString(";ModuleId=m")), ErrorCode::ArgumentInvalid);
  DeviceClientOptions options;
  options.renew_before = options.token_lifetime;
  EXPECT_EQ(create(connectionString(), options), ErrorCode::ArgumentInvalid);
  options = {};
  options.endpoint = "host:99999";
  EXPECT_EQ(create(connectionString(), options), ErrorCode::ArgumentInvalid);
  options = {};
  options.ca_file = "/nonexistent/ca.pem";
  EXPECT_EQ(create(connectionString(), options), ErrorCode::ArgumentInvalid);
  options = {};
  options.retry.multiplier = 0;
  EXPECT_EQ(create(connectionString(), options), ErrorCode::ArgumentInvalid);
}

class DeviceClientTlsTest : public ::testing::Test {
 protected:
  DeviceClientTlsTest()
      : certificate_(service::testing::makeSelfSignedCertificate("DNS:myhub.example")),
        broker_(testing::BrokerTls{certificate_.cert_pem, certificate_.key_pem}) {}

  DeviceClientOptions options(const std::string& ca_pem) const {
    DeviceClientOptions out;
    out.ca_file = service::testing::writeTempFile("device_ca.pem", ca_pem);
    out.endpoint = "127.0.0.1:" + std::to_string(broker_.port());
    out.retry = RetryPolicy{20ms, 200ms, 2.0, 0.0, 1};
    return out;
  }

  service::testing::TestCertificate certificate_;
  FakeMqttBroker broker_;
};

TEST_F(DeviceClientTlsTest, VerifiesTheHubAgainstHostNameAndSendsSni) {
  auto client = DeviceClient::create(connectionString(), options(certificate_.cert_pem));
  ASSERT_TRUE(client) << client.status().toString();
  auto opening = std::async(std::launch::async, [&] { return (*client)->open(); });
  auto connection = broker_.accept();
  ASSERT_TRUE(connection);
  EXPECT_EQ(connection->serverName(), "myhub.example");
  auto connect = connection->expect<mqtt::Connect>();
  ASSERT_TRUE(connect);
  connection->send(mqtt::ConnAck{false, mqtt::ConnectReturnCode::Accepted});
  ASSERT_TRUE(isReady(opening));
  EXPECT_TRUE(opening.get().isOk());
}

TEST_F(DeviceClientTlsTest, RefusesAHubSignedByAnotherCa) {
  auto other = service::testing::makeSelfSignedCertificate("DNS:myhub.example");
  auto client = DeviceClient::create(connectionString(), options(other.cert_pem));
  ASSERT_TRUE(client) << client.status().toString();
  Status opened = (*client)->open();
  EXPECT_EQ(opened.code(), ErrorCode::ServiceUnavailable);
  EXPECT_NE(opened.message().find("certificate verify failed"), std::string::npos)
      << opened.message();
}

}  // namespace
}  // namespace iothub::device
