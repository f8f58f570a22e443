// The cluster part of the PostgreSQL store (store/cluster_store.hpp): node leases and
// device presence, and the advisory session lock (pg_session_lock.hpp). Each test runs its
// own throw-away server (tests/support/postgres_server.hpp).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/postgresql/pg_session_lock.hpp"
#include "store/postgresql/pg_store.hpp"
#include "tests/support/postgres_server.hpp"

namespace iothub::store {
namespace {

using namespace std::chrono_literals;
using iothub::testing::PostgresServer;
using iothub::testing::waitFor;

class PgClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Status started = server_.start();
    ASSERT_TRUE(started.isOk()) << started.toString();
    auto store = PostgresStore::open(server_.conninfo());
    ASSERT_TRUE(store.isOk()) << store.status().toString();
    store_ = std::move(*store);
    ASSERT_NE(store_->cluster(), nullptr);
    cluster_ = store_->cluster();
  }

  void addDevice(const std::string& id) {
    DeviceRecord device;
    device.device_id = id;
    device.generation_id = "gen";
    device.etag = "e";
    TwinRecord twin;
    twin.device_id = id;
    ASSERT_TRUE(store_->registry().createDevice(device, twin).isOk());
  }

  bool connected(const std::string& id) {
    auto p = cluster_->getPresence(id);
    EXPECT_TRUE(p.isOk()) << p.status().toString();
    return p.isOk() && p->has_value() && (*p)->connected;
  }

  PostgresServer server_;
  std::unique_ptr<PostgresStore> store_;
  ClusterStore* cluster_ = nullptr;
};

TEST_F(PgClusterTest, ClaimsGetGrowingEpochsAndReturnWhatTheyReplace) {
  addDevice("d1");
  auto never = cluster_->getPresence("d1");
  ASSERT_TRUE(never.isOk());
  EXPECT_FALSE(never->has_value());

  auto first = cluster_->claimPresence("d1", "node-a");
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_EQ(first->current.node_id, "node-a");
  EXPECT_TRUE(first->current.connected);
  EXPECT_FALSE(first->previous.has_value());

  auto second = cluster_->claimPresence("d1", "node-b");
  ASSERT_TRUE(second.isOk());
  EXPECT_GT(second->current.epoch, first->current.epoch);
  ASSERT_TRUE(second->previous.has_value());
  EXPECT_EQ(second->previous->node_id, "node-a");
  EXPECT_EQ(second->previous->epoch, first->current.epoch);
  EXPECT_TRUE(second->previous->connected);

  // A late disconnect of the replaced connection changes nothing.
  auto stale = cluster_->releasePresence("d1", first->current.epoch);
  ASSERT_TRUE(stale.isOk());
  EXPECT_FALSE(*stale);
  EXPECT_TRUE(connected("d1"));
  auto count = cluster_->connectedDeviceCount();
  ASSERT_TRUE(count.isOk());
  EXPECT_EQ(*count, 1);

  auto current = cluster_->releasePresence("d1", second->current.epoch);
  ASSERT_TRUE(current.isOk());
  EXPECT_TRUE(*current);
  EXPECT_FALSE(connected("d1"));
  auto again = cluster_->releasePresence("d1", second->current.epoch);
  ASSERT_TRUE(again.isOk());
  EXPECT_FALSE(*again);
  EXPECT_EQ(*cluster_->connectedDeviceCount(), 0);
}

TEST_F(PgClusterTest, UnknownDevicesCannotBeClaimedAndPresenceGoesWithTheDevice) {
  auto unknown = cluster_->claimPresence("ghost", "node-a");
  ASSERT_FALSE(unknown.isOk());
  EXPECT_EQ(unknown.code(), ErrorCode::DeviceNotFound);

  addDevice("d1");
  ASSERT_TRUE(cluster_->claimPresence("d1", "node-a").isOk());
  ASSERT_TRUE(store_->registry().deleteDevice("d1", nullptr).isOk());
  auto gone = cluster_->getPresence("d1");
  ASSERT_TRUE(gone.isOk());
  EXPECT_FALSE(gone->has_value());
  EXPECT_EQ(*cluster_->connectedDeviceCount(), 0);
}

TEST_F(PgClusterTest, RepairMakesPresenceAgreeWithTheConnectionsANodeHolds) {
  for (const char* id : {"held", "moved", "ended", "fresh", "other"}) addDevice(id);
  auto held = cluster_->claimPresence("held", "node-a");
  auto moved = cluster_->claimPresence("moved", "node-a");
  auto ended = cluster_->claimPresence("ended", "node-a");
  auto other = cluster_->claimPresence("other", "node-b");
  ASSERT_TRUE(held.isOk() && moved.isOk() && ended.isOk() && other.isOk());
  // node-a was reaped while alive: all its devices read disconnected.
  ASSERT_TRUE(cluster_->joinNode("node-a", "127.0.0.1", 60s).isOk());
  ASSERT_TRUE(cluster_->leaveNode("node-a").isOk());
  EXPECT_FALSE(connected("held"));
  // Meanwhile "moved" connected to node-b (a newer claim) and "ended"'s connection ended
  // on node-a without its release reaching the store; "fresh" was just claimed by node-a
  // and its connection is not in the registry yet.
  auto moved_b = cluster_->claimPresence("moved", "node-b");
  ASSERT_TRUE(moved_b.isOk());
  ASSERT_TRUE(cluster_->claimPresence("ended", "node-a").isOk());
  auto fresh = cluster_->claimPresence("fresh", "node-a");
  ASSERT_TRUE(fresh.isOk());

  // What node-a's registry holds: "held" and, still, the older "moved" connection.
  std::vector<HeldConnection> registry{{"held", held->current.epoch},
                                       {"moved", moved->current.epoch}};
  auto repaired = cluster_->repairPresence("node-a", registry, 60s);
  ASSERT_TRUE(repaired.isOk()) << repaired.status().toString();
  EXPECT_EQ(repaired->reinstated, (std::vector<HeldConnection>{{"held", held->current.epoch}}));
  EXPECT_EQ(repaired->released, 0u);  // "ended" and "fresh" are younger than the settle time
  EXPECT_TRUE(connected("held"));
  auto moved_now = cluster_->getPresence("moved");
  ASSERT_TRUE(moved_now.isOk() && moved_now->has_value());
  EXPECT_EQ((*moved_now)->node_id, "node-b");  // the newer claim stands
  EXPECT_EQ((*moved_now)->epoch, moved_b->current.epoch);
  EXPECT_TRUE(connected("ended"));
  EXPECT_TRUE(connected("other"));

  // With no settle time, connected rows of node-a it does not hold are released.
  auto again = cluster_->repairPresence("node-a", registry, 0ms);
  ASSERT_TRUE(again.isOk()) << again.status().toString();
  EXPECT_TRUE(again->reinstated.empty());
  EXPECT_EQ(again->released, 2u);
  EXPECT_FALSE(connected("ended"));
  EXPECT_FALSE(connected("fresh"));
  EXPECT_TRUE(connected("held"));
  EXPECT_TRUE(connected("moved"));  // node-b's
  EXPECT_TRUE(connected("other"));
  EXPECT_EQ(*cluster_->connectedDeviceCount(), 3);

  // A node holding nothing releases everything it is named for.
  auto empty = cluster_->repairPresence("node-b", {}, 0ms);
  ASSERT_TRUE(empty.isOk()) << empty.status().toString();
  EXPECT_EQ(empty->released, 2u);
  EXPECT_EQ(*cluster_->connectedDeviceCount(), 1);
}

TEST_F(PgClusterTest, ConcurrentClaimsOfOneDeviceChainUpAndTheLastOneHoldsIt) {
  addDevice("d1");
  // Two stores play two nodes: each commits through its own connection.
  auto other = PostgresStore::open(server_.conninfo());
  ASSERT_TRUE(other.isOk()) << other.status().toString();
  ClusterStore* nodes[] = {cluster_, (*other)->cluster()};
  constexpr int kThreads = 8, kClaims = 25;
  std::vector<std::vector<PresenceClaim>> claims(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kClaims; ++i) {
        auto claim = nodes[t % 2]->claimPresence("d1", "node-" + std::to_string(t));
        ASSERT_TRUE(claim.isOk()) << claim.status().toString();
        claims[t].push_back(*claim);
      }
    });
  }
  for (auto& t : threads) t.join();
  // Every claim replaced exactly the one before it: the replaced epochs are all the
  // epochs but the last, each once.
  std::set<std::int64_t> epochs, replaced;
  std::int64_t highest = 0;
  for (const auto& list : claims) {
    for (const auto& c : list) {
      EXPECT_TRUE(epochs.insert(c.current.epoch).second) << "epoch given twice";
      highest = std::max(highest, c.current.epoch);
      if (c.previous) {
        EXPECT_TRUE(replaced.insert(c.previous->epoch).second);
      }
    }
  }
  EXPECT_EQ(epochs.size(), static_cast<std::size_t>(kThreads * kClaims));
  EXPECT_EQ(replaced.size(), epochs.size() - 1);
  EXPECT_EQ(replaced.count(highest), 0u);
  auto now = cluster_->getPresence("d1");
  ASSERT_TRUE(now.isOk() && now->has_value());
  EXPECT_EQ((*now)->epoch, highest);
}

TEST_F(PgClusterTest, NodeLeasesRenewExpireAndTakeTheirDevicesDown) {
  addDevice("a1");
  addDevice("a2");
  addDevice("b1");
  auto a = cluster_->joinNode("node-a", "127.0.0.1", 60s);
  ASSERT_TRUE(a.isOk()) << a.status().toString();
  ASSERT_TRUE(cluster_->joinNode("node-b", "127.0.0.2", 60s).isOk());
  ASSERT_TRUE(cluster_->claimPresence("a1", "node-a").isOk());
  ASSERT_TRUE(cluster_->claimPresence("a2", "node-a").isOk());
  ASSERT_TRUE(cluster_->claimPresence("b1", "node-b").isOk());

  auto renewed = cluster_->renewNode("node-a", "127.0.0.1", 60s);
  ASSERT_TRUE(renewed.isOk());
  EXPECT_EQ(renewed->started_time, a->started_time);
  EXPECT_GE(renewed->lease_until, a->lease_until);
  auto live = cluster_->liveNodes();
  ASSERT_TRUE(live.isOk());
  ASSERT_EQ(live->size(), 2u);
  EXPECT_EQ((*live)[0].node_id, "node-a");
  EXPECT_EQ((*live)[1].address, "127.0.0.2");

  // node-a stops renewing: a lease of 0 ms has expired at once.
  ASSERT_TRUE(cluster_->renewNode("node-a", "127.0.0.1", 0ms).isOk());
  ASSERT_TRUE(waitFor([&] { return cluster_->liveNodes()->size() == 1; }));
  auto reaped = cluster_->reapExpiredNodes();
  ASSERT_TRUE(reaped.isOk()) << reaped.status().toString();
  EXPECT_EQ(*reaped, std::vector<std::string>{"node-a"});
  EXPECT_FALSE(connected("a1"));
  EXPECT_FALSE(connected("a2"));
  EXPECT_TRUE(connected("b1"));
  auto nothing = cluster_->reapExpiredNodes();
  ASSERT_TRUE(nothing.isOk());
  EXPECT_TRUE(nothing->empty());
}

TEST_F(PgClusterTest, ARestartedNodeForgetsItsOldConnectionsAndALeavingNodeTakesThemDown) {
  addDevice("d1");
  addDevice("d2");
  ASSERT_TRUE(cluster_->joinNode("node-a", "127.0.0.1", 60s).isOk());
  ASSERT_TRUE(cluster_->claimPresence("d1", "node-a").isOk());
  ASSERT_TRUE(cluster_->claimPresence("d2", "node-b").isOk());
  // node-a crashed and starts again before its lease ran out.
  auto rejoined = cluster_->joinNode("node-a", "127.0.0.1", 60s);
  ASSERT_TRUE(rejoined.isOk());
  EXPECT_FALSE(connected("d1"));
  EXPECT_TRUE(connected("d2"));

  ASSERT_TRUE(cluster_->claimPresence("d1", "node-a").isOk());
  ASSERT_TRUE(cluster_->leaveNode("node-a").isOk());
  EXPECT_FALSE(connected("d1"));
  EXPECT_TRUE(connected("d2"));
  EXPECT_TRUE(cluster_->liveNodes()->empty());
}

TEST_F(PgClusterTest, TheSessionLockIsExclusiveNamesItsHolderAndIsFreedWithItsProcess) {
  PgConnectSettings settings{.conninfo = server_.conninfo()};
  auto first = PgSessionLock::acquire(settings, kPgSingleNodeLockKey, "first holder", nullptr);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  auto second = PgSessionLock::acquire(settings, kPgSingleNodeLockKey, "second", nullptr);
  ASSERT_FALSE(second.isOk());
  EXPECT_EQ(second.code(), ErrorCode::InvalidOperation);
  EXPECT_NE(second.status().message().find("first holder"), std::string::npos)
      << second.status().message();
  // Another key is another lock.
  EXPECT_TRUE(PgSessionLock::acquire(settings, kPgSingleNodeLockKey + 1, "x", nullptr).isOk());
  first->reset();
  EXPECT_TRUE(PgSessionLock::acquire(settings, kPgSingleNodeLockKey, "second", nullptr).isOk());
}

TEST_F(PgClusterTest, TheSessionLockIsTakenAgainAfterTheServerRestarts) {
  PgConnectSettings settings{.conninfo = server_.conninfo(), .connect_timeout = 2s};
  std::atomic<int> lost{0};
  auto lock = PgSessionLock::acquire(
      settings, kPgSingleNodeLockKey, "holder", [&](Status) { lost.fetch_add(1); },
      PgSessionLock::Options{.check_every = 50ms, .regain_within = 20s});
  ASSERT_TRUE(lock.isOk()) << lock.status().toString();
  ASSERT_TRUE(server_.restart().isOk());
  // The lock went with the old connection; the watcher takes it back. Looked up in
  // pg_locks (probing with a lock of our own could race the watcher and take it).
  auto probe = PgConnection::connect(settings);
  ASSERT_TRUE(probe.isOk()) << probe.status().toString();
  auto heldByHolder = [&] {
    auto held = (*probe)->query(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'holder'");
    return held && held->rows() == 1 && held->row(0).int64(0) == 1;
  };
  ASSERT_TRUE(waitFor(heldByHolder, 15s));
  EXPECT_FALSE(PgSessionLock::acquire(settings, kPgSingleNodeLockKey, "other", nullptr).isOk());
  EXPECT_EQ(lost.load(), 0);
}

TEST_F(PgClusterTest, TheHolderIsToldWhenAnotherProcessTookTheLockMeanwhile) {
  PgConnectSettings settings{.conninfo = server_.conninfo(), .connect_timeout = 2s};
  std::atomic<int> lost{0};
  auto lock = PgSessionLock::acquire(
      settings, kPgSingleNodeLockKey, "holder", [&](Status) { lost.fetch_add(1); },
      PgSessionLock::Options{.check_every = 3000ms, .regain_within = 20s});
  ASSERT_TRUE(lock.isOk());
  ASSERT_TRUE(server_.restart().isOk());
  // Another process gets in first, before the next check.
  std::unique_ptr<PgSessionLock> thief;
  ASSERT_TRUE(waitFor(
      [&] {
        auto got = PgSessionLock::acquire(settings, kPgSingleNodeLockKey, "thief", nullptr);
        if (got) thief = std::move(*got);
        return thief != nullptr;
      },
      10s));
  EXPECT_TRUE(waitFor([&] { return lost.load() == 1; }, 10s));
}

// Job leases (JobStore::claimJobs) on two stores, as two nodes: claims racing for the same
// due jobs never take one job twice, and between them take every job.
TEST_F(PgClusterTest, JobClaimsOfTwoNodesAreExclusive) {
  auto other = PostgresStore::open(server_.conninfo());
  ASSERT_TRUE(other.isOk()) << other.status().toString();
  constexpr int kJobs = 300;
  for (int i = 0; i < kJobs; ++i) {
    JobRecord job;
    job.job_id = "job-" + std::to_string(1000 + i);
    job.type = "scheduleDeviceMethod";
    job.status = i % 3 == 0 ? "running" : "queued";
    job.created_time = SystemTime{std::chrono::seconds{1000 + i}};
    job.start_time = job.created_time;
    ASSERT_TRUE(store_->jobs().createJob(job).isOk());
  }
  std::vector<std::string> claimed[2];
  std::atomic<int> errors{0};
  auto claimAll = [&](Store& store, const std::string& owner, std::vector<std::string>& out) {
    for (;;) {
      auto got = store.jobs().claimJobs(owner, SystemTime{std::chrono::seconds{99999}}, 60s, 7);
      if (!got) {
        errors.fetch_add(1);
        return;
      }
      if (got->empty()) return;
      for (const ClaimedJob& claim : *got) {
        EXPECT_EQ(claim.lease.epoch, 1) << claim.job.job_id;
        out.push_back(claim.job.job_id);
      }
    }
  };
  std::thread first([&] { claimAll(*store_, "node-a", claimed[0]); });
  std::thread second([&] { claimAll(**other, "node-b", claimed[1]); });
  first.join();
  second.join();
  EXPECT_EQ(errors.load(), 0);
  std::set<std::string> all(claimed[0].begin(), claimed[0].end());
  all.insert(claimed[1].begin(), claimed[1].end());
  EXPECT_EQ(all.size(), static_cast<std::size_t>(kJobs));
  EXPECT_EQ(claimed[0].size() + claimed[1].size(), static_cast<std::size_t>(kJobs))
      << "a job was claimed twice";
  // The database names each job's owner.
  auto owners = server_.sql("SELECT count(*) FROM jobs WHERE lease_owner IN ('node-a', 'node-b')");
  ASSERT_TRUE(owners.isOk()) << owners.status().toString();
  EXPECT_EQ(*owners, std::to_string(kJobs));
}

TEST_F(PgClusterTest, SharedValuesAreWrittenOnceAndTheFirstProposalWins) {
  auto other = PostgresStore::open(server_.conninfo());
  ASSERT_TRUE(other.isOk()) << other.status().toString();
  ClusterStore* second = (*other)->cluster();
  // Many nodes propose at once: all of them get one and the same value.
  std::vector<std::string> got(16);
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] {
      ClusterStore* cluster = i % 2 == 0 ? cluster_ : second;
      auto value = cluster->shareValue("ca", "proposal-" + std::to_string(i));
      EXPECT_TRUE(value.isOk()) << value.status().toString();
      if (value) got[i] = *value;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(got[0].rfind("proposal-", 0), 0u) << got[0];
  for (const auto& value : got) EXPECT_EQ(value, got[0]);
  // Later proposals change nothing; other keys are independent.
  auto later = second->shareValue("ca", "late");
  ASSERT_TRUE(later.isOk());
  EXPECT_EQ(*later, got[0]);
  auto other_key = cluster_->shareValue("other", "x");
  ASSERT_TRUE(other_key.isOk());
  EXPECT_EQ(*other_key, "x");
}

}  // namespace
}  // namespace iothub::store
