#include "server/cluster_membership.hpp"

#include <gtest/gtest.h>

#include <atomic>

#include "store/postgresql/pg_store.hpp"
#include "tests/support/postgres_server.hpp"

namespace iothub::server {
namespace {

using namespace std::chrono_literals;
using iothub::testing::PostgresServer;
using iothub::testing::waitFor;

const MembershipOptions kFast{.renew_every = 50ms, .lease = 600ms};

class ClusterMembershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Status started = server_.start();
    ASSERT_TRUE(started.isOk()) << started.toString();
    for (auto* store : {&a_store_, &b_store_}) {
      auto opened = store::PostgresStore::open(server_.conninfo());
      ASSERT_TRUE(opened.isOk()) << opened.status().toString();
      *store = std::move(*opened);
    }
  }

  static std::size_t count(const ClusterMembership& m) { return m.nodes().size(); }

  PostgresServer server_;
  std::unique_ptr<store::PostgresStore> a_store_, b_store_;
};

TEST_F(ClusterMembershipTest, NodesSeeEachOtherAndACrashedNodeIsReapedWithItsDevices) {
  std::atomic<int> a_changes{0};
  auto a = ClusterMembership::join(*a_store_->cluster(), "node-a", "127.0.0.1", kFast,
                                   [&](const auto&) { a_changes.fetch_add(1); });
  ASSERT_TRUE(a.isOk()) << a.status().toString();
  EXPECT_EQ(count(**a), 1u);
  EXPECT_EQ(a_changes.load(), 1);
  auto b = ClusterMembership::join(*b_store_->cluster(), "node-b", "127.0.0.2", kFast);
  ASSERT_TRUE(b.isOk());
  EXPECT_EQ(count(**b), 2u);
  ASSERT_TRUE(waitFor([&] { return count(**a) == 2; }, 5s));
  EXPECT_EQ(a_changes.load(), 2);
  EXPECT_EQ((*a)->nodes()[1].address, "127.0.0.2");
  EXPECT_TRUE((*a)->leaseHeld());

  store::DeviceRecord device;
  device.device_id = "d1";
  device.generation_id = "g";
  device.etag = "e";
  store::TwinRecord twin;
  twin.device_id = "d1";
  ASSERT_TRUE(b_store_->registry().createDevice(device, twin).isOk());
  ASSERT_TRUE(b_store_->cluster()->claimPresence("d1", "node-b").isOk());

  b->reset();  // node-b stops renewing without leaving: a crash, as the others see it
  ASSERT_TRUE(waitFor([&] { return count(**a) == 1; }, 10s));
  auto presence = a_store_->cluster()->getPresence("d1");
  ASSERT_TRUE(presence.isOk() && presence->has_value());
  EXPECT_FALSE((*presence)->connected);
}

TEST_F(ClusterMembershipTest, ALeavingNodeIsGoneAtOnce) {
  MembershipOptions slow_lease{.renew_every = 50ms, .lease = 60s};
  auto a = ClusterMembership::join(*a_store_->cluster(), "node-a", "127.0.0.1", slow_lease);
  auto b = ClusterMembership::join(*b_store_->cluster(), "node-b", "127.0.0.2", slow_lease);
  ASSERT_TRUE(a.isOk() && b.isOk());
  ASSERT_TRUE(waitFor([&] { return count(**a) == 2; }, 5s));
  ASSERT_TRUE((*b)->leave().isOk());
  // Far sooner than the 60 s lease.
  EXPECT_TRUE(waitFor([&] { return count(**a) == 1; }, 5s));
}

TEST_F(ClusterMembershipTest, ANodeThatCannotRenewKnowsItsLeaseIsGone) {
  auto a = ClusterMembership::join(*a_store_->cluster(), "node-a", "127.0.0.1", kFast);
  ASSERT_TRUE(a.isOk());
  ASSERT_TRUE(server_.stop().isOk());
  EXPECT_TRUE(waitFor([&] { return !(*a)->leaseHeld(); }, 10s));
  ASSERT_TRUE(server_.restart().isOk());
  EXPECT_TRUE(waitFor([&] { return (*a)->leaseHeld(); }, 20s));
}

TEST_F(ClusterMembershipTest, JoiningFailsClearlyWhenTheStoreIsDown) {
  ASSERT_TRUE(server_.stop().isOk());
  auto a = ClusterMembership::join(*a_store_->cluster(), "node-a", "127.0.0.1", kFast);
  ASSERT_FALSE(a.isOk());
  EXPECT_NE(a.status().message().find("cannot join the cluster as node 'node-a'"),
            std::string::npos)
      << a.status().message();
}

}  // namespace
}  // namespace iothub::server
