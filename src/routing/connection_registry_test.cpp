#include "routing/connection_registry.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace iothub::routing {
namespace {

// A link that detaches itself when closed, as the transport's connections do.
class FakeLink final : public DeviceLink {
 public:
  FakeLink(ConnectionRegistry& registry, std::string id)
      : registry_(registry), id_(std::move(id)) {}
  const std::string& deviceId() const override { return id_; }
  bool isSubscribed(std::string_view) const override { return true; }
  bool publish(std::string, std::string) override { return true; }
  void close(CloseCause, std::string reason) override {
    closed.push_back(std::move(reason));
    registry_.detach(*this);
  }
  std::vector<std::string> closed;

 private:
  ConnectionRegistry& registry_;
  std::string id_;
};

class ConnectionRegistryTest : public ::testing::Test {
 protected:
  std::shared_ptr<FakeLink> link(const std::string& id = "d1") {
    return std::make_shared<FakeLink>(registry_, id);
  }
  std::vector<std::pair<std::string, bool>> changes_;
  ConnectionRegistry registry_{[this](std::string_view id, bool connected) {
    changes_.emplace_back(std::string(id), connected);
  }};
};

TEST_F(ConnectionRegistryTest, ANewerEpochReplacesAnOlderOneButNeverTheReverse) {
  auto first = link();
  auto attached = registry_.attach(first, 5);
  EXPECT_FALSE(attached.refused);
  EXPECT_EQ(attached.replaced, nullptr);
  // An older claim that attaches late is refused and changes nothing.
  auto late = link();
  EXPECT_TRUE(registry_.attach(late, 3).refused);
  EXPECT_EQ(registry_.find("d1"), first);
  // A newer one replaces it; the caller closes the replaced link.
  auto newer = link();
  attached = registry_.attach(newer, 9);
  EXPECT_FALSE(attached.refused);
  EXPECT_EQ(attached.replaced, first);
  EXPECT_EQ(registry_.find("d1"), newer);
  // Connected once, never disconnected in between.
  EXPECT_EQ(changes_, (std::vector<std::pair<std::string, bool>>{{"d1", true}}));
  // On a single node every epoch is 0: the newest attach wins, as before epochs.
  auto a = link("single");
  auto b = link("single");
  EXPECT_FALSE(registry_.attach(a).refused);
  EXPECT_EQ(registry_.attach(b).replaced, a);
}

TEST_F(ConnectionRegistryTest, CloseBelowClosesOlderLinksAndFencesLateOnes) {
  auto current = link();
  ASSERT_FALSE(registry_.attach(current, 4).refused);
  // Another node claimed the device under epoch 7: the link of epoch 4 closes.
  EXPECT_TRUE(registry_.closeBelow("d1", 7, "replaced"));
  EXPECT_EQ(current->closed, std::vector<std::string>{"replaced"});
  EXPECT_EQ(registry_.find("d1"), nullptr);
  // A connection of this node claimed before the kick but attaching after it is refused.
  EXPECT_TRUE(registry_.attach(link(), 6).refused);
  // A newer claim of this node attaches.
  auto newest = link();
  EXPECT_FALSE(registry_.attach(newest, 8).refused);
  // A kick for an older epoch than the link's closes nothing.
  EXPECT_FALSE(registry_.closeBelow("d1", 8, "stale kick"));
  EXPECT_TRUE(newest->closed.empty());
  // Kicks for devices without a link only fence.
  EXPECT_FALSE(registry_.closeBelow("d2", 3, "no link"));
  EXPECT_TRUE(registry_.attach(link("d2"), 2).refused);
  EXPECT_FALSE(registry_.attach(link("d2"), 3).refused);
}

}  // namespace
}  // namespace iothub::routing
