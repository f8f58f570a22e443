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

  // Registers device `id` (so that presence can be claimed for it).
  static void addDevice(store::PostgresStore& store, const std::string& id) {
    store::DeviceRecord device;
    device.device_id = id;
    device.generation_id = "g";
    device.etag = "e";
    store::TwinRecord twin;
    twin.device_id = id;
    ASSERT_TRUE(store.registry().createDevice(device, twin).isOk());
  }

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

  addDevice(*b_store_, "d1");
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

TEST_F(ClusterMembershipTest, AfterALapseTheNodeRepairsThePresenceOfTheDevicesItHolds) {
  addDevice(*a_store_, "d1");
  auto claim = a_store_->cluster()->claimPresence("d1", "node-a");
  ASSERT_TRUE(claim.isOk()) << claim.status().toString();
  const std::int64_t epoch = claim->current.epoch;

  std::atomic<int> lapses{0}, periodic{0};
  MembershipOptions options = kFast;
  options.repair_every = 300ms;
  // node-a holds d1's connection throughout, as its registry would say.
  auto a = ClusterMembership::join(
      *a_store_->cluster(), "node-a", "127.0.0.1", options, nullptr, [&](bool lapsed) {
        auto repaired = a_store_->cluster()->repairPresence("node-a", {{"d1", epoch}}, 0ms);
        // A periodic repair may meet the database going down below; the one after the
        // lapse runs once it is back and must succeed.
        if (lapsed) {
          EXPECT_TRUE(repaired.isOk()) << repaired.status().toString();
        }
        // Counted once the repair is done: the test reads the presence after it.
        (lapsed ? lapses : periodic).fetch_add(1);
      });
  auto b = ClusterMembership::join(*b_store_->cluster(), "node-b", "127.0.0.2", kFast);
  ASSERT_TRUE(a.isOk() && b.isOk());
  EXPECT_TRUE(waitFor([&] { return periodic.load() >= 2; }, 10s));
  EXPECT_EQ(lapses.load(), 0);

  // The database goes away for longer than a lease: when it is back, whichever node renews
  // first reaps the other (and, if that is node-b, marks d1 disconnected).
  ASSERT_TRUE(server_.stop().isOk());
  ASSERT_TRUE(waitFor([&] { return !(*a)->leaseHeld() && !(*b)->leaseHeld(); }, 10s));
  ASSERT_TRUE(server_.restart().isOk());
  ASSERT_TRUE(waitFor([&] { return lapses.load() >= 1; }, 20s));
  ASSERT_TRUE(waitFor([&] { return count(**a) == 2 && count(**b) == 2; }, 10s));
  auto presence = b_store_->cluster()->getPresence("d1");
  ASSERT_TRUE(presence.isOk() && presence->has_value()) << presence.status().toString();
  EXPECT_TRUE((*presence)->connected);
  EXPECT_EQ((*presence)->epoch, epoch);
  EXPECT_EQ((*presence)->node_id, "node-a");
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
