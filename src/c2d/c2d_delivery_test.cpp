#include "c2d/c2d_delivery.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <mutex>

#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/sqlite_test_store.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::c2d {
namespace {

using namespace std::chrono_literals;

// A device connection that keeps what it was sent, acknowledged by the test.
class RecordingLink final : public routing::DeviceLink {
 public:
  explicit RecordingLink(std::string id) : id_(std::move(id)) {}
  const std::string& deviceId() const override { return id_; }
  bool isSubscribed(std::string_view topic) const override {
    return subscribed && topic.starts_with("devices/" + id_ + "/messages/devicebound/");
  }
  bool publish(std::string, std::string) override { return false; }
  bool publishReliable(std::string topic, std::string payload, Acknowledgement done) override {
    if (refuse || !isSubscribed(topic)) return false;
    sent.push_back({std::move(topic), std::move(payload), std::move(done)});
    return true;
  }
  void close(routing::CloseCause, std::string) override {}

  struct Sent {
    std::string topic;
    std::string payload;
    Acknowledgement done;
  };
  bool subscribed = true;
  bool refuse = false;
  std::deque<Sent> sent;

 private:
  std::string id_;
};

class MqttDeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = iothub::testing::openTestSqliteStore(dir_.path() / "hub.db");
    c2d_ = std::make_unique<CloudToDevice>(*store_, clock_, random_);
    // Inline: every pass and settlement runs on the calling thread, so the test sees its
    // effects at once.
    delivery_ = std::make_unique<MqttDelivery>(
        *c2d_, connections_, [](std::function<void()> work) { work(); }, 3);
    c2d_->setQueueObserver([this](std::string_view id) { delivery_->poke(id); });
    connections_.setSubscriptionObserver([this](std::string_view id) { delivery_->poke(id); });
    iothub::testing::createTestDevice(*store_, iothub::testing::testDevice("dev1"));
  }

  void send(const std::string& body) {
    OutgoingMessage m;
    m.device_id = "dev1";
    m.message_id = "id-" + body;
    m.body = body;
    ASSERT_TRUE(c2d_->send(std::move(m)).isOk());
  }

  std::int64_t queued() {
    auto device = store_->registry().getDevice("dev1");
    return device.isOk() ? device->cloud_to_device_message_count : -1;
  }

  std::vector<store::C2dMessageRecord> queue() {
    auto listed = store_->c2d().listC2d("dev1", 100);
    EXPECT_TRUE(listed.isOk());
    return listed.isOk() ? *listed : std::vector<store::C2dMessageRecord>{};
  }

  iothub::testing::TempDir dir_{"iothub-c2d-delivery-test"};
  FakeClock clock_;
  SeededRandom random_{11};
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<CloudToDevice> c2d_;
  routing::ConnectionRegistry connections_;
  std::unique_ptr<MqttDelivery> delivery_;
};

TEST_F(MqttDeliveryTest, DeliversInOrderWithinTheWindowAndCompletesOnAcknowledgement) {
  auto link = std::make_shared<RecordingLink>("dev1");
  connections_.attach(link);
  for (int i = 0; i < 5; ++i) send("m" + std::to_string(i));
  // Window 3: three out, none acknowledged yet.
  ASSERT_EQ(link->sent.size(), 3u);
  EXPECT_EQ(link->sent[0].payload, "m0");
  EXPECT_EQ(link->sent[2].payload, "m2");
  EXPECT_TRUE(link->sent[0].topic.starts_with("devices/dev1/messages/devicebound/%24.mid=id-m0&"));
  std::vector<std::string> received;
  while (!link->sent.empty()) {
    auto next = std::move(link->sent.front());
    link->sent.pop_front();
    received.push_back(next.payload);
    next.done(true);
  }
  EXPECT_EQ(received, (std::vector<std::string>{"m0", "m1", "m2", "m3", "m4"}));
  EXPECT_EQ(queued(), 0);
  EXPECT_EQ(delivery_->counters().acknowledged.load(), 5u);
  EXPECT_EQ(delivery_->activeDevices(), 0u);
}

TEST_F(MqttDeliveryTest, WaitsForTheSubscriptionAndForTheConnection) {
  send("early");
  EXPECT_EQ(queued(), 1);  // nobody connected
  auto link = std::make_shared<RecordingLink>("dev1");
  link->subscribed = false;
  connections_.attach(link);
  connections_.subscriptionsChanged(link);
  EXPECT_TRUE(link->sent.empty());
  link->subscribed = true;
  connections_.subscriptionsChanged(link);
  ASSERT_EQ(link->sent.size(), 1u);
  EXPECT_EQ(link->sent[0].payload, "early");
}

TEST_F(MqttDeliveryTest, AConnectionThatEndsFirstGetsTheMessagesAgainNextTime) {
  auto first = std::make_shared<RecordingLink>("dev1");
  connections_.attach(first);
  send("a");
  send("b");
  ASSERT_EQ(first->sent.size(), 2u);
  connections_.detach(*first);
  for (auto& s : first->sent) s.done(false);  // the transport drops what it held
  EXPECT_EQ(delivery_->counters().interrupted.load(), 2u);
  auto items = queue();
  ASSERT_EQ(items.size(), 2u);
  EXPECT_TRUE(items[0].lock_token.empty());
  auto second = std::make_shared<RecordingLink>("dev1");
  connections_.attach(second);  // attach reports subscriptions: the delivery starts
  ASSERT_EQ(second->sent.size(), 2u);
  EXPECT_EQ(second->sent[0].payload, "a");
  items = queue();
  EXPECT_EQ(items[0].delivery_count, 2);
}

TEST_F(MqttDeliveryTest, ALinkThatRefusesGivesTheMessageBackAtOnce) {
  auto link = std::make_shared<RecordingLink>("dev1");
  link->refuse = true;
  connections_.attach(link);
  send("x");
  auto items = queue();
  ASSERT_EQ(items.size(), 1u);
  EXPECT_TRUE(items[0].lock_token.empty());
  EXPECT_EQ(delivery_->activeDevices(), 0u);
}

TEST_F(MqttDeliveryTest, AcknowledgementsAfterTheDeliveryStoppedAreIgnored) {
  auto link = std::make_shared<RecordingLink>("dev1");
  connections_.attach(link);
  send("late");
  ASSERT_EQ(link->sent.size(), 1u);
  delivery_.reset();
  link->sent[0].done(true);  // no crash; the message stays locked and comes back later
  EXPECT_EQ(queued(), 1);
}

}  // namespace
}  // namespace iothub::c2d
