#include "server/event_hubs.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <proton/annotation_key.hpp>
#include <proton/codec/map.hpp>
#include <proton/codec/vector.hpp>
#include <proton/receiver.hpp>
#include <proton/timestamp.hpp>

#include "amqp/test_client.hpp"
#include "auth/sas_token.hpp"
#include "common/encoding.hpp"
#include "server/amqp_service.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/fake_scheduler.hpp"
#include "tests/support/sqlite_test_store.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::server {
namespace {

using namespace std::chrono_literals;
using amqp::testing::TestClient;
using iothub::testing::FakeScheduler;

constexpr std::string_view kHost = "myhub.azure-devices.net";
constexpr std::string_view kEntity = "myhub";
constexpr std::string_view kSelector = "apache.org:selector-filter:string";
constexpr std::uint64_t kSelectorDescriptor = 0x0000468C00000004;

std::string partitionAddress(std::string_view group, int partition) {
  return std::string(kEntity) + "/ConsumerGroups/" + std::string(group) + "/Partitions/" +
         std::to_string(partition);
}
std::string audienceOf(std::string_view address) {
  return "sb://" + std::string(kHost) + "/" + std::string(address);
}

// --- names, addresses, start positions ---------------------------------------------------

TEST(EventHubsNames, TheEntityIsTheFirstLabelOfTheHostName) {
  EXPECT_EQ(eventHubsEntity("myhub.azure-devices.net"), "myhub");
  EXPECT_EQ(eventHubsEntity("localhost"), "localhost");
  EXPECT_EQ(eventHubsEntity("hub:5671"), "hub");
  EXPECT_EQ(eventHubsEntity(""), "iothub");
}

TEST(EventHubsNames, ServedAddressesAreManagementAndEverythingUnderTheEntity) {
  EXPECT_TRUE(isEventHubsAddress("myhub", "$management"));
  EXPECT_TRUE(isEventHubsAddress("myhub", "myhub/ConsumerGroups/$Default/Partitions/0"));
  EXPECT_TRUE(isEventHubsAddress("myhub", "MYHUB/anything"));
  EXPECT_FALSE(isEventHubsAddress("myhub", "myhub"));
  EXPECT_FALSE(isEventHubsAddress("myhub", "myhub2/ConsumerGroups/x/Partitions/0"));
  EXPECT_FALSE(isEventHubsAddress("myhub", "/messages/devicebound"));
  EXPECT_FALSE(isEventHubsAddress("myhub", "$cbs"));
}

TEST(EventHubsNames, PartitionAddressesParse) {
  auto a = parsePartitionAddress("myhub", "myhub/ConsumerGroups/$Default/Partitions/3");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->consumer_group, "$Default");
  EXPECT_EQ(a->partition, 3);
  auto b = parsePartitionAddress("myhub", "MyHub/consumergroups/Readers/partitions/12");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->consumer_group, "Readers");
  EXPECT_EQ(b->partition, 12);
  for (std::string_view bad :
       {"myhub/ConsumerGroups/$Default/Partitions/", "myhub/ConsumerGroups//Partitions/0",
        "myhub/ConsumerGroups/$Default/Partitions/-1", "myhub/ConsumerGroups/$Default/Partitions/x",
        "myhub/ConsumerGroups/$Default/Partitions/99999999999",
        "myhub/ConsumerGroups/$Default/Partitions/0/extra", "other/ConsumerGroups/g/Partitions/0",
        "myhub/Groups/g/Partitions/0", "myhub"}) {
    EXPECT_FALSE(parsePartitionAddress("myhub", bad).has_value()) << bad;
  }
}

TEST(EventHubsSelector, EveryStartPositionTheSdkSends) {
  auto sequence = [](std::string_view expression) -> std::int64_t {
    auto p = parseSelector(expression);
    EXPECT_TRUE(p.isOk()) << expression << ": " << p.status().toString();
    if (!p.isOk()) return -100;
    EXPECT_EQ(p->kind, StartPosition::Kind::Sequence) << expression;
    return p->sequence;
  };
  EXPECT_EQ(sequence("amqp.annotation.x-opt-offset > '-1'"), 0);
  EXPECT_EQ(sequence("amqp.annotation.x-opt-offset >= '-1'"), 0);
  EXPECT_EQ(sequence("amqp.annotation.x-opt-offset > '41'"), 42);
  EXPECT_EQ(sequence("amqp.annotation.x-opt-offset >= '41'"), 41);
  EXPECT_EQ(sequence("amqp.annotation.x-opt-sequence-number > '7'"), 8);
  EXPECT_EQ(sequence("amqp.annotation.x-opt-sequence-number >= '7'"), 7);
  EXPECT_EQ(sequence("amqp.annotation.x-opt-sequence-number > '-1'"), 0);
  EXPECT_EQ(sequence("  amqp.annotation.x-opt-offset>'5'  "), 6);
  EXPECT_EQ(sequence(""), 0);

  auto latest = parseSelector("amqp.annotation.x-opt-offset > '@latest'");
  ASSERT_TRUE(latest.isOk());
  EXPECT_EQ(latest->kind, StartPosition::Kind::Latest);

  auto time = parseSelector("amqp.annotation.x-opt-enqueued-time > '1700000000123'");
  ASSERT_TRUE(time.isOk());
  EXPECT_EQ(time->kind, StartPosition::Kind::EnqueuedAfter);
  EXPECT_EQ(time->time, SystemTime{1700000000123ms});
  auto inclusive = parseSelector("amqp.annotation.x-opt-enqueued-time >= '1700000000123'");
  ASSERT_TRUE(inclusive.isOk());
  EXPECT_EQ(inclusive->time, SystemTime{1700000000122ms});
}

TEST(EventHubsSelector, MalformedExpressionsAreRefusedWithAReason) {
  for (std::string_view bad :
       {"x-opt-offset > '1'", "amqp.annotation.x-opt-partition-key > '1'",
        "amqp.annotation.x-opt-offset = '1'", "amqp.annotation.x-opt-offset < '1'",
        "amqp.annotation.x-opt-offset > 1", "amqp.annotation.x-opt-offset > 'abc'",
        "amqp.annotation.x-opt-offset > '-2'", "amqp.annotation.x-opt-sequence-number > '@latest'",
        "amqp.annotation.x-opt-offset > '9223372036854775807'",
        "amqp.annotation.x-opt-offset > '99999999999999999999'",
        "amqp.annotation.x-opt-enqueued-time > 'yesterday'",
        "amqp.annotation.x-opt-offset > '1' OR 1=1"}) {
    auto p = parseSelector(bad);
    EXPECT_FALSE(p.isOk()) << bad;
    if (!p.isOk()) {
      EXPECT_EQ(p.code(), ErrorCode::ArgumentInvalid);
      EXPECT_NE(p.status().message().find("invalid start position"), std::string::npos);
    }
  }
}

// --- readers and epochs ------------------------------------------------------------------

TEST(ReaderRegistry, AtMostFiveReadersWithoutAnEpoch) {
  ReaderRegistry registry(5);
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(registry.admit("$Default", 0, {registry.nextId(), std::nullopt, {}}).has_value());
  }
  auto refused = registry.admit("$default", 0, {registry.nextId(), std::nullopt, {}});
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->condition, "amqp:resource-limit-exceeded");
  // Another partition and another group are counted apart.
  EXPECT_FALSE(registry.admit("$Default", 1, {registry.nextId(), std::nullopt, {}}).has_value());
  EXPECT_FALSE(registry.admit("other", 0, {registry.nextId(), std::nullopt, {}}).has_value());
}

TEST(ReaderRegistry, AnEpochReaderDisplacesLowerOrNoEpochsAndKeepsOthersOut) {
  ReaderRegistry registry(5);
  int stolen_plain = 0, stolen_one = 0;
  EXPECT_FALSE(registry.admit("g", 0, {1, std::nullopt, [&] { ++stolen_plain; }}).has_value());
  EXPECT_FALSE(registry.admit("g", 0, {2, 1, [&] { ++stolen_one; }}).has_value());
  EXPECT_EQ(stolen_plain, 1);
  // Lower epoch and no epoch are refused while epoch 1 reads.
  auto lower = registry.admit("G", 0, {3, 0, {}});
  ASSERT_TRUE(lower.has_value());
  EXPECT_EQ(lower->condition, "amqp:link:stolen");
  auto plain = registry.admit("g", 0, {4, std::nullopt, {}});
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->condition, "amqp:link:stolen");
  // An equal epoch takes over.
  int stolen_again = 0;
  EXPECT_FALSE(registry.admit("g", 0, {5, 1, [&] { ++stolen_again; }}).has_value());
  EXPECT_EQ(stolen_one, 1);
  // Once it leaves, readers without an epoch may come back.
  registry.remove("g", 0, 5);
  EXPECT_FALSE(registry.admit("g", 0, {6, std::nullopt, {}}).has_value());
  EXPECT_EQ(stolen_again, 0);
}

// --- events as AMQP messages -----------------------------------------------------------

TEST(EventHubsMessage, EventFieldsBecomeTypedAmqpFields) {
  telemetry::EventRecord event;
  event.partition = 1;
  event.sequence = 41;
  event.device_id = "dev1";
  event.body = std::string("{\"t\":1}\0x", 9);
  event.properties = {{"alert", "true"}, {"unit", "c"}};
  event.system.message_id = "m-1";
  event.system.content_type = "application/json";
  event.system.absolute_expiry_time = SystemTime{1700000000500ms};
  event.annotations = {{"iothub-connection-device-id", std::string("dev1")},
                       {"iothub-enqueuedtime", SystemTime{1700000000123ms}},
                       {"x-opt-sequence-number", std::int64_t{41}},
                       {"x-opt-offset", std::string("41")}};
  amqp::Message m = toAmqp(event);
  EXPECT_EQ(m.body, event.body);
  EXPECT_FALSE(m.value_body.has_value());
  EXPECT_EQ(m.message_id, "m-1");
  EXPECT_EQ(m.content_type, "application/json");
  EXPECT_FALSE(m.correlation_id.has_value());  // not set by the device: absent, not empty
  EXPECT_EQ(m.absolute_expiry_time_ms, 1700000000500);
  EXPECT_EQ(m.application_properties.at("alert"), "true");
  EXPECT_EQ(std::get<std::string>(m.typed_message_annotations.at("iothub-connection-device-id")),
            "dev1");
  EXPECT_EQ(std::get<amqp::Timestamp>(m.typed_message_annotations.at("iothub-enqueuedtime")).ms,
            1700000000123);
  EXPECT_EQ(std::get<std::int64_t>(m.typed_message_annotations.at("x-opt-sequence-number")), 41);
  EXPECT_EQ(std::get<std::string>(m.typed_message_annotations.at("x-opt-offset")), "41");
}

// --- the endpoint over an in-memory AMQP connection ----------------------------------------

class EventHubsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = iothub::testing::openTestSqliteStore(dir_.path() / "hub.db");
    iothub::testing::createTestDevice(*store_, iothub::testing::testDevice("dev1"));
    log_ = std::make_unique<telemetry::TelemetryLog>(*store_, clock_);
    service_key_ = base64Encode(std::string(32, 's'));
    read_key_ = base64Encode(std::string(32, 'r'));
    policies_ = {
        {"service", service_key_, base64Encode(std::string(32, 't')), auth::kServiceConnect},
        {"registryRead", read_key_, base64Encode(std::string(32, 'q')), auth::kRegistryRead},
    };
    service_auth_ =
        std::make_unique<auth::ServiceAuthenticator>(std::string(kHost), policies_, clock_);
    authenticator_ = std::make_unique<HubTokenAuthenticator>(
        std::string(kHost), *service_auth_, clock_, policies_, std::string(kEntity));
    makeService();
  }

  // Reads are not paced unless a test asks (the pacing test does).
  void makeService(std::chrono::milliseconds min_read_interval = 0ms) {
    EventHubsOptions options;
    options.min_read_interval = min_read_interval;
    service_ = std::make_unique<EventHubsService>(
        std::string(kEntity), *log_, *store_,
        [this](std::function<void()> work) { blocking_.push_back(std::move(work)); }, scheduler_,
        options);
  }

  void TearDown() override {
    for (auto& c : connections_) c.reset();
  }

  // One client connection (Event Hubs style: SASL ANONYMOUS, $cbs open).
  struct Connection {
    std::unique_ptr<amqp::LinkHandler> handler;
    std::unique_ptr<amqp::ServerConnection> server;
    std::unique_ptr<TestClient> client;
    std::vector<transport::AmqpConnectionWork> posted;
  };

  Connection& connect() {
    auto c = std::make_unique<Connection>();
    Connection* raw = c.get();
    c->handler = service_->makeHandler(
        [raw](transport::AmqpConnectionWork w) { raw->posted.push_back(std::move(w)); });
    c->server = std::make_unique<amqp::ServerConnection>(amqp::ServerConnectionOptions{},
                                                         *authenticator_, *c->handler);
    c->client = std::make_unique<TestClient>(/*sasl=*/true, std::string(kHost));
    connections_.push_back(std::move(c));
    pump(*raw);
    EXPECT_TRUE(raw->client->open);
    raw->client->openCbs();
    pump(*raw);
    return *raw;
  }

  void pump(Connection& c) {
    c.server->tick(amqp::Clock::now());
    amqp::testing::pump(*c.client, *c.server);
  }

  std::string token(std::string_view audience, const std::string& policy = "service") {
    const std::string& key = policy == "service" ? service_key_ : read_key_;
    auto built = auth::buildEventHubsToken(audience, key, policy, unixSeconds(clock_.now() + 1h));
    EXPECT_TRUE(built.isOk());
    return built.isOk() ? *built : std::string();
  }

  int putToken(Connection& c, std::string_view audience, const std::string& policy = "service") {
    std::size_t before = c.client->cbs_replies.size();
    c.client->putToken("t-" + std::to_string(before), std::string(audience),
                       token(audience, policy));
    pump(c);
    if (c.client->cbs_replies.size() != before + 1) return -1;
    return c.client->cbs_replies.back().status_code;
  }

  // Runs queued store work and what it posted back, until nothing is left.
  void settle() {
    for (int round = 0; round < 100; ++round) {
      bool any = false;
      for (auto& c : connections_) {
        if (c) pump(*c);
      }
      while (!blocking_.empty()) {
        auto work = std::move(blocking_.front());
        blocking_.erase(blocking_.begin());
        work();
        any = true;
      }
      for (auto& c : connections_) {
        if (!c) continue;
        while (!c->posted.empty()) {
          auto work = std::move(c->posted.front());
          c->posted.erase(c->posted.begin());
          work(*c->server);
          any = true;
        }
      }
      if (!any) break;
    }
    for (auto& c : connections_) {
      if (c) pump(*c);
    }
  }

  void append(int count, const std::string& device = "dev1") {
    for (int i = 0; i < count; ++i) {
      device_api::TelemetryMessage m;
      m.device_id = device;
      m.body = "m" + std::to_string(next_body_++);
      m.message_id = m.body;
      m.properties = {{"k", "v"}};
      m.source = "mqtt";
      ASSERT_TRUE(log_->accept(std::move(m)).isOk());
    }
  }

  int partitionOfDev1() const { return log_->partitionOf("dev1"); }

  // Attaches a partition receiver with `expression` (empty: no filter).
  proton::receiver attachReader(Connection& c, const std::string& name, const std::string& group,
                                int partition, const std::string& expression,
                                std::optional<std::int64_t> epoch = std::nullopt, int credit = 10) {
    std::string address = partitionAddress(group, partition);
    EXPECT_EQ(putToken(c, audienceOf(address)), 200);
    std::map<proton::symbol, proton::value> properties;
    if (epoch) properties[proton::symbol("com.microsoft:epoch")] = *epoch;
    proton::receiver receiver = c.client->attachFilteredReceiver(
        address, name, std::string(kSelector), kSelectorDescriptor, expression, properties, credit);
    settle();
    return receiver;
  }

  std::vector<std::string> bodies(const Connection& c) {
    std::vector<std::string> out;
    for (const auto& m : c.client->received) {
      auto b = proton::get<proton::binary>(m.body());
      out.emplace_back(b.begin(), b.end());
    }
    return out;
  }

  // The $management reply to a READ, as the client received it.
  struct Reply {
    int status = -1;
    std::string description;
    std::map<std::string, proton::value> body;
    std::string correlation;
  };
  Reply read(Connection& c, const std::string& type, std::optional<std::string> partition = {},
             std::string name = std::string(kEntity), std::string operation = "READ") {
    if (!management_open_) {
      EXPECT_EQ(putToken(c, audienceOf(std::string(kEntity) + "/$management")), 200);
      c.client->attachReceiver("$management", "mgmt-reply");
      management_sender_ = c.client->attachSender("$management", "mgmt-request");
      settle();
      management_open_ = true;
    }
    proton::message m;
    m.id(std::string("req-") + std::to_string(++requests_));
    m.reply_to("mgmt-reply");
    m.properties().put("operation", operation);
    m.properties().put("type", type);
    m.properties().put("name", name);
    if (partition) m.properties().put("partition", *partition);
    std::size_t before = c.client->received.size();
    management_sender_.send(m);
    settle();
    Reply reply;
    if (c.client->received.size() != before + 1) return reply;
    const proton::message& got = c.client->received.back();
    reply.status = proton::get<std::int32_t>(got.properties().get("status-code"));
    reply.description = proton::get<std::string>(got.properties().get("status-description"));
    reply.correlation = proton::get<std::string>(got.correlation_id());
    if (got.body().type() == proton::MAP) proton::get(got.body(), reply.body);
    return reply;
  }

  iothub::testing::TempDir dir_{"iothub-event-hubs-test"};
  FakeClock clock_{SystemTime{1700000000000ms}};
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<telemetry::TelemetryLog> log_;
  std::string service_key_, read_key_;
  std::vector<auth::AccessPolicyRecord> policies_;
  std::unique_ptr<auth::ServiceAuthenticator> service_auth_;
  std::unique_ptr<HubTokenAuthenticator> authenticator_;
  FakeScheduler scheduler_;
  std::unique_ptr<EventHubsService> service_;
  std::vector<std::function<void()>> blocking_;
  std::vector<std::unique_ptr<Connection>> connections_;
  int next_body_ = 0;
  bool management_open_ = false;
  proton::sender management_sender_;
  int requests_ = 0;
};

TEST_F(EventHubsTest, PutTokensForTheEntityAreVerifiedWithTheKeyText) {
  Connection& c = connect();
  EXPECT_EQ(putToken(c, audienceOf("myhub/$management")), 200);
  EXPECT_EQ(putToken(c, audienceOf(partitionAddress("$Default", 0))), 200);
  EXPECT_EQ(putToken(c, "sb://myhub.azure-devices.net:5671/myhub"), 200);
  // Another host or entity is not here.
  EXPECT_EQ(putToken(c, "sb://other.azure-devices.net/myhub/$management"), 404);
  EXPECT_EQ(putToken(c, "sb://myhub.azure-devices.net/otherhub/$management"), 404);
  // An IoT Hub-style token (decoded key) is not an Event Hubs token.
  std::string audience = audienceOf("myhub/$management");
  auto iothub_style = auth::buildSasToken(urlEncodeStrict(audience), service_key_, "service",
                                          unixSeconds(clock_.now() + 1h));
  ASSERT_TRUE(iothub_style.isOk());
  c.client->putToken("forged", audience, *iothub_style);
  pump(c);
  EXPECT_EQ(c.client->cbs_replies.back().status_code, 401);
}

TEST_F(EventHubsTest, ManagementReadDescribesTheHubAndItsPartitions) {
  Connection& c = connect();
  Reply hub = read(c, "com.microsoft:eventhub");
  ASSERT_EQ(hub.status, 200) << hub.description;
  EXPECT_EQ(hub.correlation, "req-1");
  EXPECT_EQ(proton::get<std::string>(hub.body.at("name")), "myhub");
  std::vector<std::string> ids;
  proton::get(hub.body.at("partition_ids"), ids);
  EXPECT_EQ(ids, (std::vector<std::string>{"0", "1", "2", "3"}));
  EXPECT_EQ(proton::get<std::int32_t>(hub.body.at("partition_count")), 4);
  EXPECT_GT(proton::get<proton::timestamp>(hub.body.at("created_at")).milliseconds(), 0);

  std::string p = std::to_string(partitionOfDev1());
  Reply empty = read(c, "com.microsoft:partition", p);
  ASSERT_EQ(empty.status, 200) << empty.description;
  EXPECT_TRUE(proton::get<bool>(empty.body.at("is_partition_empty")));
  EXPECT_EQ(proton::get<std::int64_t>(empty.body.at("last_enqueued_sequence_number")), -1);
  EXPECT_EQ(proton::get<std::string>(empty.body.at("last_enqueued_offset")), "-1");
  EXPECT_EQ(proton::get<std::string>(empty.body.at("partition")), p);

  append(3);
  Reply full = read(c, "com.microsoft:partition", p);
  ASSERT_EQ(full.status, 200);
  EXPECT_FALSE(proton::get<bool>(full.body.at("is_partition_empty")));
  EXPECT_EQ(proton::get<std::int64_t>(full.body.at("begin_sequence_number")), 0);
  EXPECT_EQ(proton::get<std::int64_t>(full.body.at("last_enqueued_sequence_number")), 2);
  EXPECT_EQ(proton::get<std::string>(full.body.at("last_enqueued_offset")), "2");
  EXPECT_EQ(proton::get<proton::timestamp>(full.body.at("last_enqueued_time_utc")).milliseconds(),
            1700000000000);
}

TEST_F(EventHubsTest, ManagementRefusalsCarryTheStatusTheSdkMaps) {
  Connection& c = connect();
  EXPECT_EQ(read(c, "com.microsoft:partition", "4").status, 400);
  EXPECT_EQ(read(c, "com.microsoft:partition", "x").status, 400);
  EXPECT_EQ(read(c, "com.microsoft:partition").status, 400);
  EXPECT_EQ(read(c, "com.microsoft:eventhub", {}, "otherhub").status, 404);
  EXPECT_EQ(read(c, "com.microsoft:consumergroup").status, 400);
  EXPECT_EQ(read(c, "com.microsoft:eventhub", {}, "myhub", "DELETE").status, 400);
  EXPECT_EQ(service_->counters().management_requests.load(), 6u);
}

TEST_F(EventHubsTest, AReaderFromTheStartGetsEveryEventInOrderWithItsAnnotations) {
  append(15);
  Connection& c = connect();
  attachReader(c, "r", "$Default", partitionOfDev1(), "amqp.annotation.x-opt-offset > '-1'");
  EXPECT_TRUE(c.client->links_open["r"]);
  ASSERT_EQ(c.client->received.size(), 15u);
  std::vector<std::string> expected;
  for (int i = 0; i < 15; ++i) expected.push_back("m" + std::to_string(i));
  EXPECT_EQ(bodies(c), expected);
  const proton::message& first = c.client->received[0];
  auto annotation = [&](const char* key) {
    return first.message_annotations().get(proton::annotation_key(proton::symbol(key)));
  };
  EXPECT_EQ(proton::get<std::int64_t>(annotation("x-opt-sequence-number")), 0);
  EXPECT_EQ(proton::get<std::string>(annotation("x-opt-offset")), "0");
  EXPECT_EQ(proton::get<proton::timestamp>(annotation("x-opt-enqueued-time")).milliseconds(),
            1700000000000);
  EXPECT_EQ(proton::get<std::string>(annotation("iothub-connection-device-id")), "dev1");
  EXPECT_EQ(proton::get<std::string>(first.properties().get("k")), "v");
  EXPECT_EQ(proton::get<std::string>(first.id()), "m0");
  EXPECT_EQ(service_->counters().events_sent.load(), 15u);
  EXPECT_EQ(service_->counters().receivers.load(), 1);
}

TEST_F(EventHubsTest, NeverMoreThanTheCreditTheClientGave) {
  append(5);
  Connection& c = connect();
  // No credit window: the client grants 2 by hand.
  proton::receiver r =
      attachReader(c, "r", "$Default", partitionOfDev1(), "", std::nullopt, /*credit=*/0);
  EXPECT_TRUE(c.client->received.empty());
  r.add_credit(2);
  settle();
  EXPECT_EQ(bodies(c), (std::vector<std::string>{"m0", "m1"}));
  r.add_credit(10);
  settle();
  EXPECT_EQ(c.client->received.size(), 5u);
}

TEST_F(EventHubsTest, LatestStartsAfterTheAttachAndAppendsWakeTheReader) {
  append(3);
  Connection& c = connect();
  attachReader(c, "r", "$Default", partitionOfDev1(), "amqp.annotation.x-opt-offset > '@latest'");
  EXPECT_TRUE(c.client->received.empty());
  append(2);  // the log's listener posts a read on the connection
  settle();
  EXPECT_EQ(bodies(c), (std::vector<std::string>{"m3", "m4"}));
}

TEST_F(EventHubsTest, OffsetSequenceAndTimeFiltersPickTheirStart) {
  append(3);
  clock_.advance(10s);
  append(3);
  Connection& c = connect();
  int p = partitionOfDev1();
  attachReader(c, "offset", "$Default", p, "amqp.annotation.x-opt-offset > '3'");
  EXPECT_EQ(bodies(c), (std::vector<std::string>{"m4", "m5"}));
  c.client->received.clear();
  attachReader(c, "seq", "$Default", p, "amqp.annotation.x-opt-sequence-number >= '4'");
  EXPECT_EQ(bodies(c), (std::vector<std::string>{"m4", "m5"}));
  c.client->received.clear();
  attachReader(c, "time", "$Default", p,
               "amqp.annotation.x-opt-enqueued-time > '" + std::to_string(1700000005000) + "'");
  EXPECT_EQ(bodies(c), (std::vector<std::string>{"m3", "m4", "m5"}));
}

TEST_F(EventHubsTest, ConsumerGroupsMustExistAndCompareIgnoringCase) {
  append(1);
  ASSERT_TRUE(store_->telemetry().createConsumerGroup({"Readers", clock_.now()}, 100).isOk());
  Connection& c = connect();
  attachReader(c, "known", "readers", partitionOfDev1(), "");
  EXPECT_TRUE(c.client->links_open["known"]);
  EXPECT_EQ(c.client->received.size(), 1u);
  attachReader(c, "default", "$default", partitionOfDev1(), "");
  EXPECT_EQ(c.client->received.size(), 2u);
  attachReader(c, "unknown", "nobody", partitionOfDev1(), "");
  EXPECT_FALSE(c.client->links_open["unknown"]);
  EXPECT_EQ(c.client->link_errors["unknown"].name(), "amqp:not-found");
  EXPECT_NE(c.client->link_errors["unknown"].description().find("could not be found"),
            std::string::npos);
  EXPECT_EQ(c.client->received.size(), 2u);
  EXPECT_EQ(service_->counters().receivers.load(), 2);
}

TEST_F(EventHubsTest, BadAttachesAreRefusedWithTheConditionsTheSdkMaps) {
  Connection& c = connect();
  attachReader(c, "range", "$Default", 4, "");
  EXPECT_EQ(c.client->link_errors["range"].name(), "com.microsoft:argument-out-of-range");
  attachReader(c, "filter", "$Default", 0, "amqp.annotation.x-opt-offset > 'x'");
  EXPECT_EQ(c.client->link_errors["filter"].name(), "com.microsoft:argument-error");
  // A sender: the endpoint is read-only.
  std::string address = partitionAddress("$Default", 0);
  c.client->attachSender(address, "writer");
  settle();
  EXPECT_EQ(c.client->link_errors["writer"].name(), "amqp:not-allowed");
  // A policy without ServiceConnect may not read.
  ASSERT_EQ(putToken(c, audienceOf(partitionAddress("$Default", 1)), "registryRead"), 200);
  c.client->attachReceiver(partitionAddress("$Default", 1), "weak");
  settle();
  EXPECT_EQ(c.client->link_errors["weak"].name(), "amqp:unauthorized-access");
  // No token for the partition at all.
  c.client->attachReceiver(partitionAddress("$Default", 3), "untokened");
  settle();
  EXPECT_EQ(c.client->link_errors["untokened"].name(), "amqp:unauthorized-access");
  EXPECT_EQ(service_->counters().receivers.load(), 0);
  EXPECT_EQ(service_->counters().receivers_refused.load(), 2u);  // range and filter
}

TEST_F(EventHubsTest, AHigherEpochOnAnotherConnectionStealsThePartition) {
  append(1);
  Connection& first = connect();
  Connection& second = connect();
  int p = partitionOfDev1();
  attachReader(first, "owner", "$Default", p, "", 1);
  EXPECT_TRUE(first.client->links_open["owner"]);
  attachReader(second, "plain", "$Default", p, "");
  EXPECT_EQ(second.client->link_errors["plain"].name(), "amqp:link:stolen");
  attachReader(second, "taker", "$Default", p, "", 2);
  settle();
  EXPECT_TRUE(second.client->links_open["taker"]);
  EXPECT_EQ(first.client->link_errors["owner"].name(), "amqp:link:stolen");
  EXPECT_EQ(service_->counters().receivers_stolen.load(), 1u);
  EXPECT_EQ(service_->counters().receivers.load(), 1);
  append(1);
  settle();
  EXPECT_EQ(second.client->received.size(), 2u);  // the first event and the new one
}

TEST_F(EventHubsTest, AClosedConnectionLeavesNoListenerOrTimerBehind) {
  Connection& c = connect();
  attachReader(c, "r", "$Default", partitionOfDev1(), "");
  // Gone without a detach (the socket dropped): the handler goes with the connection.
  connections_.back().reset();
  EXPECT_EQ(service_->counters().receivers.load(), 0);
  append(2);  // would call a dead handler's listener
  settle();
  scheduler_.fireAll();  // and its poll timer, had it not been cancelled
  settle();
  SUCCEED();
}

TEST_F(EventHubsTest, WakeUpsWithinTheMinimumIntervalWaitForATimer) {
  makeService(1h);  // nothing but the timer may read again
  Connection& c = connect();
  attachReader(c, "r", "$Default", partitionOfDev1(), "");
  ASSERT_EQ(scheduler_.pending(), 1u);  // the idle reader's poll
  append(2);
  settle();
  EXPECT_TRUE(c.client->received.empty());  // woken within the interval: no read yet
  EXPECT_EQ(scheduler_.pending(), 1u);      // the poll comes sooner than the interval's end
  scheduler_.fireAll();
  settle();
  EXPECT_EQ(bodies(c), (std::vector<std::string>{"m0", "m1"}));
}

TEST_F(EventHubsTest, AnIdleReaderPollsForAppendsOfOtherNodes) {
  Connection& c = connect();
  attachReader(c, "r", "$Default", partitionOfDev1(), "");
  ASSERT_GE(scheduler_.pending(), 1u);
  // An append through another TelemetryLog (another node) wakes nobody here.
  telemetry::TelemetryLog other(*store_, clock_);
  device_api::TelemetryMessage m;
  m.device_id = "dev1";
  m.body = "elsewhere";
  m.source = "mqtt";
  ASSERT_TRUE(other.accept(std::move(m)).isOk());
  settle();
  EXPECT_TRUE(c.client->received.empty());
  scheduler_.fireAll();
  settle();
  EXPECT_EQ(bodies(c), (std::vector<std::string>{"elsewhere"}));
}

TEST_F(EventHubsTest, LinkRouterSendsEachAddressToItsHandler) {
  // The hub's composition: Event Hubs addresses to the endpoint, the rest to a second
  // handler (here one that refuses everything).
  struct Refuser final : amqp::LinkHandler {
    std::optional<amqp::ErrorCondition> onAttach(const amqp::LinkRequest&) override {
      ++attaches;
      return amqp::ErrorCondition{"amqp:not-found", "refuser"};
    }
    amqp::Outcome onMessage(amqp::LinkId, amqp::DeliveryId, const amqp::Message&) override {
      return amqp::Outcome::accepted();
    }
    void onDetach(amqp::LinkId) override {}
    int attaches = 0;
  };
  auto refuser = std::make_unique<Refuser>();
  Refuser* refuser_raw = refuser.get();
  Connection& c = connect();
  auto router = std::make_unique<LinkRouter>();
  router->add([](std::string_view a) { return isEventHubsAddress(kEntity, a); },
              std::move(c.handler));
  router->add([](std::string_view) { return true; }, std::move(refuser));
  c.handler = std::move(router);
  // (The connection holds a reference to the handler it was made with; make a new one.)
  c.server = std::make_unique<amqp::ServerConnection>(amqp::ServerConnectionOptions{},
                                                      *authenticator_, *c.handler);
  c.client = std::make_unique<TestClient>(/*sasl=*/true, std::string(kHost));
  pump(c);
  c.client->openCbs();
  pump(c);
  append(1);
  attachReader(c, "r", "$Default", partitionOfDev1(), "");
  EXPECT_EQ(c.client->received.size(), 1u);
  EXPECT_EQ(refuser_raw->attaches, 0);
  ASSERT_EQ(putToken(c, "sb://myhub.azure-devices.net/myhub"), 200);
  c.client->attachReceiver("/messages/serviceBound/feedback", "fb");
  settle();
  EXPECT_EQ(c.client->link_errors["fb"].name(), "amqp:unauthorized-access");  // not covered
  EXPECT_EQ(refuser_raw->attaches, 0);
}

}  // namespace
}  // namespace iothub::server
