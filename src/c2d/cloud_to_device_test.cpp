#include "c2d/cloud_to_device.hpp"

#include <gtest/gtest.h>

#include "common/json.hpp"
#include "common/time_format.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/sqlite_test_store.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::c2d {
namespace {

using namespace std::chrono_literals;

class CloudToDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = iothub::testing::openTestSqliteStore(dir_.path() / "hub.db");
    c2d_ = std::make_unique<CloudToDevice>(*store_, clock_, random_, options_);
    c2d_->setQueueObserver([this](std::string_view id) { observed_.emplace_back(id); });
    addDevice("dev1");
  }

  void addDevice(const std::string& id) {
    iothub::testing::createTestDevice(*store_, iothub::testing::testDevice(id));
  }

  OutgoingMessage message(std::string id, std::string body = "hello", Ack ack = Ack::None) {
    OutgoingMessage m;
    m.device_id = "dev1";
    m.message_id = std::move(id);
    m.body = std::move(body);
    m.ack = ack;
    return m;
  }

  DeviceMessage receiveOne(std::string_view device_id = "dev1") {
    auto got = c2d_->receive(device_id);
    EXPECT_TRUE(got.isOk()) << got.status().toString();
    EXPECT_TRUE(got.isOk() && got->has_value());
    return got.isOk() && got->has_value() ? **got : DeviceMessage{};
  }

  bool queueEmpty(std::string_view device_id = "dev1") {
    auto got = c2d_->receive(device_id);
    return got.isOk() && !got->has_value();
  }

  std::vector<json::object> feedback() {
    auto taken = c2d_->takeFeedback(100, 30s);
    EXPECT_TRUE(taken.isOk()) << taken.status().toString();
    std::vector<json::object> out;
    std::vector<std::int64_t> sequences;
    if (!taken.isOk()) return out;
    for (auto& record : *taken) {
      out.push_back(record.document);
      sequences.push_back(record.sequence);
    }
    EXPECT_TRUE(c2d_->feedbackDelivered(sequences).isOk());
    return out;
  }

  std::int64_t countOf(std::string_view device_id) {
    auto device = store_->registry().getDevice(device_id);
    EXPECT_TRUE(device.isOk());
    return device.isOk() ? device->cloud_to_device_message_count : -1;
  }

  iothub::testing::TempDir dir_{"iothub-c2d-test"};
  FakeClock clock_;
  SeededRandom random_{7};
  C2dOptions options_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<CloudToDevice> c2d_;
  std::vector<std::string> observed_;
};

TEST_F(CloudToDeviceTest, SendsReceivesAndCompletesWithEveryField) {
  OutgoingMessage m = message("m1", std::string("bin\0ary\xff", 9));
  m.correlation_id = "c1";
  m.user_id = "u1";
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.properties = {{"color", "red"}, {"a b", "x/y&z"}};
  m.expiry = clock_.now() + 10min;
  ASSERT_TRUE(c2d_->send(m).isOk());
  EXPECT_EQ(observed_, std::vector<std::string>{"dev1"});
  EXPECT_EQ(countOf("dev1"), 1);

  DeviceMessage got = receiveOne();
  EXPECT_EQ(got.device_id, "dev1");
  EXPECT_EQ(got.message_id, "m1");
  EXPECT_EQ(got.correlation_id, "c1");
  EXPECT_EQ(got.user_id, "u1");
  EXPECT_EQ(got.content_type, "application/json");
  EXPECT_EQ(got.content_encoding, "utf-8");
  EXPECT_EQ(got.to, "/devices/dev1/messages/deviceBound");
  EXPECT_EQ(got.body, std::string("bin\0ary\xff", 9));
  EXPECT_EQ(got.properties, (Properties{{"color", "red"}, {"a b", "x/y&z"}}));
  EXPECT_EQ(got.expiry_time, clock_.now() + 10min);
  EXPECT_EQ(got.enqueued_time, clock_.now());
  EXPECT_EQ(got.delivery_count, 1);
  EXPECT_EQ(got.lock_token.size(), 36u);
  // Locked: not handed out twice.
  EXPECT_TRUE(queueEmpty());
  ASSERT_TRUE(c2d_->complete("dev1", got.lock_token).isOk());
  EXPECT_EQ(countOf("dev1"), 0);
  EXPECT_TRUE(queueEmpty());
  EXPECT_EQ(c2d_->complete("dev1", got.lock_token).code(), ErrorCode::DeviceMessageLockLost);
  EXPECT_EQ(c2d_->counters().sent.load(), 1u);
  EXPECT_EQ(c2d_->counters().completed.load(), 1u);
}

TEST_F(CloudToDeviceTest, RefusesUnknownDevicesFullQueuesAndLargeMessages) {
  OutgoingMessage unknown = message("x");
  unknown.device_id = "nobody";
  EXPECT_EQ(c2d_->send(unknown).code(), ErrorCode::DeviceNotFound);
  unknown.ack = Ack::Full;  // reads the device first
  EXPECT_EQ(c2d_->send(unknown).code(), ErrorCode::DeviceNotFound);
  for (std::size_t i = 0; i < options_.max_queue_depth; ++i) {
    ASSERT_TRUE(c2d_->send(message("m" + std::to_string(i))).isOk()) << i;
  }
  EXPECT_EQ(c2d_->send(message("one-too-many")).code(), ErrorCode::DeviceMaximumQueueDepthExceeded);
  EXPECT_EQ(countOf("dev1"), 50);
  addDevice("dev2");
  OutgoingMessage big = message("big", std::string(options_.max_message_bytes, 'x'));
  big.device_id = "dev2";
  big.properties = {{"k", "v"}};
  EXPECT_EQ(c2d_->send(big).code(), ErrorCode::MessageTooLarge);
  big.properties.clear();
  EXPECT_TRUE(c2d_->send(big).isOk());
  EXPECT_EQ(c2d_->counters().refused.load(), 4u);
}

TEST_F(CloudToDeviceTest, AbandonDeliversAgainAndTheLockPassingToo) {
  ASSERT_TRUE(c2d_->send(message("m1")).isOk());
  DeviceMessage first = receiveOne();
  observed_.clear();
  ASSERT_TRUE(c2d_->abandon("dev1", first.lock_token).isOk());
  EXPECT_EQ(observed_, std::vector<std::string>{"dev1"});
  DeviceMessage second = receiveOne();
  EXPECT_EQ(second.message_id, "m1");
  EXPECT_EQ(second.delivery_count, 2);
  EXPECT_NE(second.lock_token, first.lock_token);
  EXPECT_EQ(c2d_->complete("dev1", first.lock_token).code(), ErrorCode::DeviceMessageLockLost);
  // A device that never settles: after lock_duration the message is free again.
  clock_.advance(options_.lock_duration + 1s);
  EXPECT_EQ(c2d_->complete("dev1", second.lock_token).code(), ErrorCode::DeviceMessageLockLost);
  DeviceMessage third = receiveOne();
  EXPECT_EQ(third.delivery_count, 3);
}

TEST_F(CloudToDeviceTest, FeedbackFollowsTheAckOfEachMessage) {
  ASSERT_TRUE(c2d_->send(message("full-ok", "a", Ack::Full)).isOk());
  ASSERT_TRUE(c2d_->send(message("positive-rejected", "b", Ack::Positive)).isOk());
  ASSERT_TRUE(c2d_->send(message("negative-rejected", "c", Ack::Negative)).isOk());
  ASSERT_TRUE(c2d_->send(message("none-ok", "d", Ack::None)).isOk());
  ASSERT_TRUE(c2d_->complete("dev1", receiveOne().lock_token).isOk());
  ASSERT_TRUE(c2d_->reject("dev1", receiveOne().lock_token).isOk());
  ASSERT_TRUE(c2d_->reject("dev1", receiveOne().lock_token).isOk());
  ASSERT_TRUE(c2d_->complete("dev1", receiveOne().lock_token).isOk());
  auto records = feedback();
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].at("originalMessageId"), json::value("full-ok"));
  EXPECT_EQ(records[0].at("statusCode"), json::value("Success"));
  EXPECT_EQ(records[0].at("description"), json::value("Success"));
  EXPECT_EQ(records[0].at("deviceId"), json::value("dev1"));
  EXPECT_EQ(records[0].at("deviceGenerationId"), json::value("gen-dev1"));
  EXPECT_EQ(records[0].at("enqueuedTimeUtc"), json::value(formatTimestamp(clock_.now())));
  EXPECT_EQ(records[1].at("originalMessageId"), json::value("negative-rejected"));
  EXPECT_EQ(records[1].at("statusCode"), json::value("Rejected"));
  // Delivered feedback is gone.
  EXPECT_TRUE(feedback().empty());
}

TEST_F(CloudToDeviceTest, ExpiredMessagesAreNeverDeliveredAndReportExpired) {
  OutgoingMessage soon = message("soon", "a", Ack::Negative);
  soon.expiry = clock_.now() + 5s;
  ASSERT_TRUE(c2d_->send(soon).isOk());
  OutgoingMessage later = message("later", "b", Ack::Full);
  later.expiry = clock_.now() + 1h;
  ASSERT_TRUE(c2d_->send(later).isOk());
  clock_.advance(6s);
  // The sweep removes the expired one even though no device asks.
  auto swept = c2d_->sweep();
  ASSERT_TRUE(swept.isOk());
  EXPECT_EQ(*swept, 1u);
  EXPECT_EQ(countOf("dev1"), 1);
  EXPECT_EQ(receiveOne().message_id, "later");
  auto records = feedback();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].at("originalMessageId"), json::value("soon"));
  EXPECT_EQ(records[0].at("statusCode"), json::value("Expired"));

  // Also when the device asks before any sweep.
  OutgoingMessage quick = message("quick", "c", Ack::Full);
  quick.expiry = clock_.now() + 1s;
  addDevice("dev3");
  quick.device_id = "dev3";
  ASSERT_TRUE(c2d_->send(quick).isOk());
  clock_.advance(2s);
  EXPECT_TRUE(queueEmpty("dev3"));
  records = feedback();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].at("statusCode"), json::value("Expired"));
}

TEST_F(CloudToDeviceTest, ExpiryIsCappedAndDefaulted) {
  OutgoingMessage forever = message("forever");
  forever.expiry = clock_.now() + 24h * 365;
  ASSERT_TRUE(c2d_->send(forever).isOk());
  EXPECT_EQ(receiveOne().expiry_time, clock_.now() + options_.max_ttl);
  addDevice("dev2");
  OutgoingMessage plain = message("plain");
  plain.device_id = "dev2";
  ASSERT_TRUE(c2d_->send(plain).isOk());
  EXPECT_EQ(receiveOne("dev2").expiry_time, clock_.now() + options_.default_ttl);
}

TEST_F(CloudToDeviceTest, DeliveryCountExceededDeadLetters) {
  ASSERT_TRUE(c2d_->send(message("flaky", "a", Ack::Negative)).isOk());
  for (int i = 1; i <= options_.max_delivery_count; ++i) {
    DeviceMessage got = receiveOne();
    EXPECT_EQ(got.delivery_count, i);
    ASSERT_TRUE(c2d_->abandon("dev1", got.lock_token).isOk());
  }
  EXPECT_TRUE(queueEmpty());
  EXPECT_EQ(countOf("dev1"), 0);
  auto records = feedback();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].at("statusCode"), json::value("DeliveryCountExceeded"));
  EXPECT_EQ(c2d_->counters().dead_lettered.load(), 1u);
}

TEST_F(CloudToDeviceTest, PurgeEmptiesTheQueue) {
  ASSERT_TRUE(c2d_->send(message("p1", "a", Ack::Full)).isOk());
  ASSERT_TRUE(c2d_->send(message("p2")).isOk());
  auto purged = c2d_->purge("dev1");
  ASSERT_TRUE(purged.isOk());
  EXPECT_EQ(*purged, 2u);
  EXPECT_EQ(countOf("dev1"), 0);
  EXPECT_TRUE(queueEmpty());
  auto records = feedback();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].at("statusCode"), json::value("Purged"));
  EXPECT_EQ(c2d_->purge("nobody").code(), ErrorCode::DeviceNotFound);
}

TEST_F(CloudToDeviceTest, LockedFeedbackIsNotHandedOutTwiceUntilItsLockPasses) {
  ASSERT_TRUE(c2d_->send(message("f1", "a", Ack::Full)).isOk());
  ASSERT_TRUE(c2d_->complete("dev1", receiveOne().lock_token).isOk());
  auto first = c2d_->takeFeedback(10, 30s);
  ASSERT_TRUE(first.isOk());
  ASSERT_EQ(first->size(), 1u);
  auto second = c2d_->takeFeedback(10, 30s);
  ASSERT_TRUE(second.isOk());
  EXPECT_TRUE(second->empty());
  clock_.advance(31s);
  auto third = c2d_->takeFeedback(10, 30s);
  ASSERT_TRUE(third.isOk());
  ASSERT_EQ(third->size(), 1u);
  EXPECT_EQ((*third)[0].sequence, (*first)[0].sequence);
  // Nobody took it for feedback_ttl: dropped.
  clock_.advance(options_.feedback_ttl + 1s);
  ASSERT_TRUE(c2d_->sweep().isOk());
  auto fourth = c2d_->takeFeedback(10, 30s);
  ASSERT_TRUE(fourth.isOk());
  EXPECT_TRUE(fourth->empty());
}

TEST(DeviceboundTopicTest, EncodesThePropertyBagAsTheSdksParseIt) {
  DeviceMessage m;
  m.device_id = "dev1";
  m.message_id = "abc";
  m.to = "/devices/dev1/messages/deviceBound";
  m.expiry_time = SystemTime{std::chrono::seconds{1700000000}};
  m.properties = {{"color", "red"}, {"a b", "x/y&z=1"}};
  EXPECT_EQ(deviceboundTopic(m),
            "devices/dev1/messages/devicebound/%24.mid=abc&%24.to=%2Fdevices%2Fdev1%2Fmessages%"
            "2FdeviceBound&%24.exp=2023-11-14T22%3A13%3A20.0000000Z&color=red&a%20b=x%2Fy%26z%"
            "3D1");
}

TEST(AckTest, ParsesExactlyAzuresValues) {
  EXPECT_EQ(parseAck("full"), Ack::Full);
  EXPECT_EQ(parseAck("positive"), Ack::Positive);
  EXPECT_EQ(parseAck("negative"), Ack::Negative);
  EXPECT_EQ(parseAck("none"), Ack::None);
  EXPECT_EQ(parseAck("Full"), std::nullopt);
  EXPECT_EQ(parseAck(""), std::nullopt);
  for (Ack a : {Ack::None, Ack::Positive, Ack::Negative, Ack::Full}) {
    EXPECT_EQ(parseAck(ackName(a)), a);
  }
}

}  // namespace
}  // namespace iothub::c2d
