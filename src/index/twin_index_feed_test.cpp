// TwinIndexFeed over PostgreSQL: two PostgresStores on one database act as two nodes, each
// with its own TwinIndex, IndexedStore and TwinIndexFeed. Each test runs its own
// throw-away server (tests/support/postgres_server.hpp).
#include "index/twin_index_feed.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "index/indexed_store.hpp"
#include "index/query_runner.hpp"
#include "index/twin_index.hpp"
#include "store/postgresql/pg_connection.hpp"
#include "store/postgresql/pg_store.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/postgres_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::index {
namespace {

using namespace std::chrono_literals;
using iothub::testing::PostgresServer;
using iothub::testing::waitFor;

// One node: its own connections to the shared database, its own index.
struct Node {
  std::unique_ptr<store::PostgresStore> durable;
  TwinIndex index;
  std::unique_ptr<IndexedStore> store;
  std::unique_ptr<TwinIndexFeed> feed;

  ~Node() {
    feed.reset();  // before the store it reads
    store.reset();
  }

  // The row of `id` in this node's index, or null.
  const json::object* row(const std::string& id) {
    last_ = index.find(id);
    return last_.get();
  }
  std::string tag(const std::string& id, const std::string& name) {
    const json::object* r = row(id);
    if (r == nullptr) return "<no row>";
    const json::value* v = r->at("tags").as_object().if_contains(name);
    return v == nullptr ? "<no tag>" : json::serialize(*v);
  }
  std::string member(const std::string& id, const std::string& name) {
    const json::object* r = row(id);
    if (r == nullptr) return "<no row>";
    const json::value* v = r->if_contains(name);
    return v == nullptr ? "<none>"
                        : (v->is_string() ? std::string(v->as_string()) : json::serialize(*v));
  }

 private:
  std::shared_ptr<const json::object> last_;
};

store::DeviceRecord deviceRecord(const std::string& id) {
  store::DeviceRecord device;
  device.device_id = id;
  device.generation_id = "gen-" + id;
  device.etag = "etag-1";
  device.primary_key = "cHJpbWFyeQ==";
  device.secondary_key = "c2Vjb25kYXJ5";
  return device;
}

store::TwinRecord twinRecord(const std::string& id, json::object tags = {}) {
  store::TwinRecord twin;
  twin.device_id = id;
  twin.tags = std::move(tags);
  return twin;
}

class TwinIndexFeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Status started = server_.start();
    ASSERT_TRUE(started.isOk()) << started.toString();
  }

  // A node whose feed reads only when asked (catchUp), unless `options` say otherwise.
  std::unique_ptr<Node> startNode(TwinIndexFeedOptions options = quietOptions(),
                                  store::PostgresOptions pg = {}) {
    auto node = std::make_unique<Node>();
    auto durable = store::PostgresStore::open(server_.conninfo(), pg);
    EXPECT_TRUE(durable.isOk()) << durable.status().toString();
    if (!durable) return nullptr;
    node->durable = std::move(durable).value();
    node->store = std::make_unique<IndexedStore>(*node->durable, node->index);
    auto feed = TwinIndexFeed::start(*node->store, node->index, std::move(options));
    EXPECT_TRUE(feed.isOk()) << feed.status().toString();
    if (!feed) return nullptr;
    node->feed = std::move(feed).value();
    return node;
  }

  static TwinIndexFeedOptions quietOptions() {
    TwinIndexFeedOptions options;
    options.poll_interval = 1h;
    options.prune_interval = 0ms;
    return options;
  }

  static void catchUp(Node& node) {
    Status caught = node.feed->catchUp(30s);
    ASSERT_TRUE(caught.isOk()) << caught.toString();
  }

  static void create(Node& node, const std::string& id, json::object tags = {}) {
    Status created = node.store->registry().createDevice(deviceRecord(id), twinRecord(id, tags));
    ASSERT_TRUE(created.isOk()) << created.toString();
  }

  static void setTag(Node& node, const std::string& id, const std::string& name,
                     json::value value) {
    auto updated = node.store->twins().updateTwin(
        id, [&](const store::TwinRecord& current) -> Result<store::TwinRecord> {
          store::TwinRecord next = current;
          next.tags[name] = value;
          ++next.version;
          return next;
        });
    ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  }

  static void setStatusReason(Node& node, const std::string& id, const std::string& reason) {
    auto updated = node.store->registry().updateDevice(
        id, [&](const store::DeviceRecord& current) -> Result<store::DeviceRecord> {
          store::DeviceRecord next = current;
          next.status_reason = reason;
          return next;
        });
    ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  }

  PostgresServer server_;
};

TEST_F(TwinIndexFeedTest, WritesOnOneNodeReachTheOtherNodesIndexAfterCatchUp) {
  auto a = startNode();
  auto b = startNode();
  ASSERT_TRUE(a && b);

  create(*a, "d1", json::object{{"site", "north"}});
  catchUp(*b);
  ASSERT_NE(b->row("d1"), nullptr);
  EXPECT_EQ(b->tag("d1", "site"), "\"north\"");
  EXPECT_EQ(b->member("d1", "status"), "enabled");

  setTag(*a, "d1", "site", "south");
  auto disabled = a->store->registry().updateDevice(
      "d1", [](const store::DeviceRecord& current) -> Result<store::DeviceRecord> {
        store::DeviceRecord next = current;
        next.status = store::DeviceStatus::Disabled;
        next.status_reason = "maintenance";
        return next;
      });
  ASSERT_TRUE(disabled.isOk()) << disabled.status().toString();
  catchUp(*b);
  EXPECT_EQ(b->tag("d1", "site"), "\"south\"");
  EXPECT_EQ(b->member("d1", "version"), "2");
  EXPECT_EQ(b->member("d1", "status"), "disabled");
  EXPECT_EQ(b->member("d1", "statusReason"), "maintenance");

  // A query on B sees A's acknowledged write without anyone calling catchUp first: the
  // runner's before_query does.
  setTag(*a, "d1", "site", "east");
  QueryRunner queries(b->index, b->store->deviceJobs(), nullptr, QueryRunner::kDefaultTimeBudget,
                      [&b] { return b->feed->catchUp(10s); });
  auto page =
      queries.run("SELECT deviceId FROM devices WHERE tags.site = 'east'", 10, std::nullopt);
  ASSERT_TRUE(page.isOk()) << page.status().toString();
  ASSERT_EQ(page->rows.size(), 1u);
  EXPECT_EQ(page->rows[0].at("deviceId"), "d1");

  Status deleted = a->store->registry().deleteDevice("d1", nullptr);
  ASSERT_TRUE(deleted.isOk()) << deleted.toString();
  catchUp(*b);
  EXPECT_EQ(b->row("d1"), nullptr);
  EXPECT_EQ(b->index.size(), 0u);
  // B's own writes reach A the same way.
  create(*b, "d2");
  catchUp(*a);
  EXPECT_NE(a->row("d2"), nullptr);
  EXPECT_EQ(a->row("d1"), nullptr);
}

TEST_F(TwinIndexFeedTest, PresenceOnAnyNodeIsTheConnectionStateOnEveryNode) {
  auto a = startNode();
  auto b = startNode();
  ASSERT_TRUE(a && b);
  create(*a, "d1");
  catchUp(*b);
  EXPECT_EQ(b->member("d1", "connectionState"), "Disconnected");

  auto claim = a->durable->cluster()->claimPresence("d1", "node-a");
  ASSERT_TRUE(claim.isOk()) << claim.status().toString();
  catchUp(*b);
  catchUp(*a);
  EXPECT_EQ(b->member("d1", "connectionState"), "Connected");
  EXPECT_EQ(a->member("d1", "connectionState"), "Connected");
  // A local write of the device keeps the state the feed set.
  setStatusReason(*b, "d1", "checked");
  EXPECT_EQ(b->member("d1", "connectionState"), "Connected");

  // The device moves to node b, then a's late disconnect changes nothing.
  auto moved = b->durable->cluster()->claimPresence("d1", "node-b");
  ASSERT_TRUE(moved.isOk());
  auto stale = a->durable->cluster()->releasePresence("d1", claim->current.epoch);
  ASSERT_TRUE(stale.isOk());
  EXPECT_FALSE(*stale);
  catchUp(*a);
  EXPECT_EQ(a->member("d1", "connectionState"), "Connected");

  auto released = b->durable->cluster()->releasePresence("d1", moved->current.epoch);
  ASSERT_TRUE(released.isOk());
  EXPECT_TRUE(*released);
  catchUp(*a);
  EXPECT_EQ(a->member("d1", "connectionState"), "Disconnected");

  // A node that starts now loads the presence with the index.
  ASSERT_TRUE(a->durable->cluster()->claimPresence("d1", "node-a").isOk());
  auto c = startNode();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->member("d1", "connectionState"), "Connected");
}

// A transaction that is still open while a node reads the log, with a transaction id
// below those of changes the read returns, commits afterwards: the next read finds it
// (a reader that only remembered the highest id it had seen would skip it for good).
TEST_F(TwinIndexFeedTest, ATransactionThatCommitsLateIsNotSkipped) {
  auto a = startNode();
  auto b = startNode();
  ASSERT_TRUE(a && b);
  create(*a, "late");
  catchUp(*b);

  auto connected =
      store::PgConnection::connect(store::PgConnectSettings{.conninfo = server_.conninfo()});
  ASSERT_TRUE(connected.isOk()) << connected.status().toString();
  store::PgConnection& open = **connected;
  ASSERT_TRUE(open.exec("BEGIN").isOk());
  ASSERT_TRUE(open.exec("UPDATE twins SET tags = '{\"late\":true}', version = version + 1"
                        " WHERE device_id = 'late'")
                  .isOk());

  create(*a, "early");  // a later transaction id, committed first
  catchUp(*b);
  EXPECT_NE(b->row("early"), nullptr);
  EXPECT_EQ(b->tag("late", "late"), "<no tag>");
  catchUp(*b);  // a read with nothing new in between moves the cursor on

  auto committed = open.exec("COMMIT");
  ASSERT_TRUE(committed.isOk()) << committed.status().toString();
  catchUp(*b);
  EXPECT_EQ(b->tag("late", "late"), "true");
  EXPECT_EQ(b->member("late", "version"), "2");
}

// The feed reads a device at state S1 while this node's own write of S2 is about to
// commit: S2 waits for the feed's batch (it holds the device's write lock from before its
// read until its apply), so the feed's S1 can never land after S2.
TEST_F(TwinIndexFeedTest, AFeedReadNeverReplacesANewerLocalWrite) {
  std::mutex mutex;
  std::condition_variable changed;
  bool armed = false, read_done = false, release = false;
  TwinIndexFeedOptions options = quietOptions();
  options.before_apply = [&](const std::vector<std::string>& ids) {
    std::unique_lock lock(mutex);
    if (!armed || std::find(ids.begin(), ids.end(), "d1") == ids.end()) return;
    armed = false;
    read_done = true;
    changed.notify_all();
    changed.wait_for(lock, 20s, [&] { return release; });
  };
  auto a = startNode();
  auto b = startNode(options);
  ASSERT_TRUE(a && b);
  create(*a, "d1");
  catchUp(*b);

  setStatusReason(*a, "d1", "s1");
  {
    std::lock_guard lock(mutex);
    armed = true;
  }
  std::thread reader([&] { EXPECT_TRUE(b->feed->catchUp(30s).isOk()); });
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, 20s, [&] { return read_done; }));
  }
  // The feed has read S1 and holds d1's lock; B's own write of S2 starts now.
  std::atomic<bool> written{false};
  std::thread writer([&] {
    setStatusReason(*b, "d1", "s2");
    written = true;
  });
  EXPECT_FALSE(waitFor([&] { return written.load(); }, 300ms))
      << "the local write committed while the feed held an older state of its device";
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  reader.join();
  writer.join();
  EXPECT_EQ(b->member("d1", "statusReason"), "s2");
  catchUp(*b);
  EXPECT_EQ(b->member("d1", "statusReason"), "s2");
}

TEST_F(TwinIndexFeedTest, ADeviceDeletedAndCreatedAgainShowsItsNewTwin) {
  auto a = startNode();
  auto b = startNode();
  ASSERT_TRUE(a && b);
  create(*a, "d1", json::object{{"generation", 1}});
  for (int i = 0; i < 5; ++i) setTag(*a, "d1", "n", i);
  ASSERT_TRUE(a->durable->cluster()->claimPresence("d1", "node-a").isOk());
  catchUp(*b);
  EXPECT_EQ(b->member("d1", "version"), "6");
  EXPECT_EQ(b->member("d1", "connectionState"), "Connected");

  // Deleted and created again between two reads: the new twin has a lower version.
  ASSERT_TRUE(a->store->registry().deleteDevice("d1", nullptr).isOk());
  create(*a, "d1", json::object{{"generation", 2}});
  catchUp(*b);
  EXPECT_EQ(b->tag("d1", "generation"), "2");
  EXPECT_EQ(b->tag("d1", "n"), "<no tag>");
  EXPECT_EQ(b->member("d1", "version"), "1");
  EXPECT_EQ(b->member("d1", "connectionState"), "Disconnected");
  // Deleted and created again on the node itself, while its feed had the old one.
  ASSERT_TRUE(b->store->registry().deleteDevice("d1", nullptr).isOk());
  create(*b, "d1", json::object{{"generation", 3}});
  catchUp(*b);
  catchUp(*a);
  EXPECT_EQ(b->tag("d1", "generation"), "3");
  EXPECT_EQ(a->tag("d1", "generation"), "3");
}

TEST_F(TwinIndexFeedTest, ANodeBehindThePruneHorizonReloadsEverything) {
  auto a = startNode();
  auto b = startNode();
  ASSERT_TRUE(a && b);
  create(*a, "d1");
  create(*a, "d2");
  catchUp(*b);
  ASSERT_TRUE(a->durable->cluster()->claimPresence("d2", "node-a").isOk());
  catchUp(*b);
  EXPECT_EQ(b->member("d2", "connectionState"), "Connected");

  // Nothing is old enough to go yet.
  auto kept = a->durable->changeFeed()->prune(1h);
  ASSERT_TRUE(kept.isOk()) << kept.status().toString();
  EXPECT_EQ(*kept, 0);

  // While B does not read: d1 goes, d3 comes, d2 disconnects; then the log is pruned.
  ASSERT_TRUE(a->store->registry().deleteDevice("d1", nullptr).isOk());
  create(*a, "d3", json::object{{"fresh", true}});
  ASSERT_TRUE(a->durable->cluster()->leaveNode("node-a").isOk());
  auto pruned = a->durable->changeFeed()->prune(0ms);
  ASSERT_TRUE(pruned.isOk()) << pruned.status().toString();
  EXPECT_GT(*pruned, 0);

  EXPECT_EQ(b->feed->stats().full_reloads, 0u);
  catchUp(*b);
  EXPECT_EQ(b->feed->stats().full_reloads, 1u);
  EXPECT_EQ(b->row("d1"), nullptr);
  EXPECT_EQ(b->tag("d3", "fresh"), "true");
  EXPECT_EQ(b->member("d2", "connectionState"), "Disconnected");
  EXPECT_EQ(b->index.size(), 2u);

  // From its new position B follows the log again without reloading.
  setTag(*a, "d3", "fresh", false);
  catchUp(*b);
  EXPECT_EQ(b->tag("d3", "fresh"), "false");
  EXPECT_EQ(b->feed->stats().full_reloads, 1u);
}

TEST_F(TwinIndexFeedTest, ManyTwinUpdatesFromAnotherNodeAreAllApplied) {
  constexpr int kDevices = 1000;
  constexpr int kUpdatesPerDevice = 20;  // 20 000 twin updates
  constexpr int kThreads = 8;
  TwinIndexFeedOptions polling = quietOptions();
  polling.poll_interval = 20ms;  // reads while the writes go on
  auto a = startNode();
  auto b = startNode(polling);
  ASSERT_TRUE(a && b);
  auto id = [](int i) { return "dev" + std::to_string(10000 + i); };

  auto inParallel = [&](const std::function<void(int)>& body) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < kDevices; i += kThreads) body(i);
      });
    }
    for (auto& thread : threads) thread.join();
  };
  inParallel([&](int i) { create(*a, id(i)); });
  inParallel([&](int i) {
    for (int n = 1; n <= kUpdatesPerDevice; ++n) setTag(*a, id(i), "n", n);
  });

  catchUp(*b);
  EXPECT_EQ(b->index.size(), static_cast<std::size_t>(kDevices));
  int wrong = 0;
  for (int i = 0; i < kDevices; ++i) {
    if (b->tag(id(i), "n") != std::to_string(kUpdatesPerDevice) ||
        b->member(id(i), "version") != std::to_string(kUpdatesPerDevice + 1)) {
      ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0);
  EXPECT_GT(b->feed->stats().rounds, 1u);
  EXPECT_GE(b->feed->stats().devices_applied, static_cast<std::uint64_t>(kDevices));
}

// Both nodes write the same devices at once while their feeds poll: in the end each index
// shows exactly what the database holds.
TEST_F(TwinIndexFeedTest, NodesWritingTheSameDevicesConverge) {
  TwinIndexFeedOptions polling = quietOptions();
  polling.poll_interval = 5ms;
  polling.batch_size = 7;
  auto a = startNode(polling);
  auto b = startNode(polling);
  ASSERT_TRUE(a && b);
  constexpr int kDevices = 20;
  auto id = [](int i) { return "d" + std::to_string(i); };
  for (int i = 0; i < kDevices; ++i) create(*a, id(i));

  std::vector<std::thread> writers;
  for (Node* node : {a.get(), b.get()}) {
    for (int t = 0; t < 3; ++t) {
      writers.emplace_back([&, node, t] {
        for (int n = 0; n < 150; ++n) {
          const std::string device = id((n * 7 + t) % kDevices);
          std::string value =
              (node == a.get() ? "a" : "b") + std::to_string(t) + "-" + std::to_string(n);
          if (n % 3 == 0) {
            setStatusReason(*node, device, value);
          } else {
            setTag(*node, device, "v", json::value(value));
          }
        }
      });
    }
  }
  for (auto& writer : writers) writer.join();
  catchUp(*a);
  catchUp(*b);
  for (int i = 0; i < kDevices; ++i) {
    auto device = a->durable->registry().getDevice(id(i));
    auto twin = a->durable->twins().getTwin(id(i));
    ASSERT_TRUE(device.isOk() && twin.isOk());
    const std::string reason = device->status_reason.value_or("<none>");
    const json::value* v = twin->tags.if_contains("v");
    const std::string tag = v == nullptr ? "<no tag>" : json::serialize(*v);
    for (Node* node : {a.get(), b.get()}) {
      EXPECT_EQ(node->member(id(i), "statusReason"), reason) << id(i);
      EXPECT_EQ(node->tag(id(i), "v"), tag) << id(i);
      EXPECT_EQ(node->member(id(i), "version"), std::to_string(twin->version)) << id(i);
    }
  }
}

TEST_F(TwinIndexFeedTest, CatchUpFailsInsteadOfHangingWhenTheDatabaseIsFrozen) {
  store::PostgresOptions short_deadline;
  short_deadline.query_deadline = 2s;
  auto b = startNode(quietOptions(), short_deadline);
  ASSERT_TRUE(b);
  catchUp(*b);

  ASSERT_TRUE(server_.freeze().isOk());
  auto started = std::chrono::steady_clock::now();
  Status frozen = b->feed->catchUp(300ms);
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(frozen.code(), ErrorCode::ServiceUnavailable) << frozen.toString();
  EXPECT_LT(took, 2s);
  // The round itself gives up at the store's query deadline.
  EXPECT_TRUE(waitFor([&] { return b->feed->stats().failed_rounds >= 1; }, 20s));
  ASSERT_TRUE(server_.thaw().isOk());

  // Once the database answers again, so does the feed.
  EXPECT_TRUE(waitFor([&] { return b->feed->catchUp(5s).isOk(); }, 30s));
}

// Full reloads while the node itself writes and queries: every write that committed
// while a reload ran is in the index afterwards (the reload's cursor was taken before it
// loaded), and queries using a path index keep working while the index is replaced.
TEST_F(TwinIndexFeedTest, WritesAndQueriesDuringAFullReloadAreNotLost) {
  auto a = startNode();
  auto b = startNode();
  ASSERT_TRUE(a && b);
  // Enough devices that a reload takes a while, and that a write lost by one would rarely
  // be overwritten before the end.
  constexpr int kDevices = 2000;
  auto id = [](int i) { return "d" + std::to_string(10000 + i); };
  {
    std::vector<std::thread> creators;
    for (int t = 0; t < 8; ++t) {
      creators.emplace_back([&, t] {
        for (int i = t; i < kDevices; i += 8) create(*a, id(i), json::object{{"g", i % 4}});
      });
    }
    for (auto& creator : creators) creator.join();
  }
  catchUp(*b);

  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int n = 0; !stop; ++n) setTag(*b, id((n * 4 + t) % kDevices), "v", n);
    });
  }
  QueryRunner queries(b->index, b->store->deviceJobs());
  std::atomic<int> query_failures{0};
  threads.emplace_back([&] {
    while (!stop) {
      auto page = queries.run("SELECT deviceId FROM devices WHERE tags.g = 1", 1000, std::nullopt);
      if (!page || page->rows.size() != kDevices / 4) ++query_failures;
    }
  });
  for (std::uint64_t reload = 1; reload <= 5; ++reload) {
    create(*a, "extra" + std::to_string(reload));
    // The horizon passes B's cursor once no transaction that was running at B's last read
    // still runs (B's own writers may hold it back for a moment).
    EXPECT_TRUE(waitFor([&] {
      auto pruned = a->durable->changeFeed()->prune(0ms);
      EXPECT_TRUE(pruned.isOk()) << pruned.status().toString();
      catchUp(*b);
      return b->feed->stats().full_reloads >= reload;
    }));
  }
  stop = true;
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(query_failures.load(), 0);

  catchUp(*b);
  int stale = 0;
  for (int i = 0; i < kDevices; ++i) {
    auto twin = b->durable->twins().getTwin(id(i));
    ASSERT_TRUE(twin.isOk());
    const json::value* v = twin->tags.if_contains("v");
    if (b->tag(id(i), "v") != (v == nullptr ? "<no tag>" : json::serialize(*v)) ||
        b->member(id(i), "version") != std::to_string(twin->version)) {
      ++stale;
    }
  }
  EXPECT_EQ(stale, 0);
  EXPECT_EQ(b->index.size(), static_cast<std::size_t>(kDevices + 5));
}

// The feed's own thread: it polls without being asked, and prunes the log (here with no
// retention at all, so a node that does not read in between falls behind and reloads).
TEST_F(TwinIndexFeedTest, APollingFeedFollowsOtherNodesAndPrunesTheLog) {
  TwinIndexFeedOptions pruning = quietOptions();
  pruning.poll_interval = 20ms;
  pruning.prune_interval = 50ms;
  pruning.retention = 0ms;
  auto a = startNode(pruning);
  auto b = startNode();
  ASSERT_TRUE(a && b);
  create(*b, "from-b");
  EXPECT_TRUE(waitFor([&] { return a->row("from-b") != nullptr; }));
  create(*a, "from-a", json::object{{"x", 1}});
  EXPECT_TRUE(waitFor([&] { return a->feed->stats().pruned_rows > 0; }));

  catchUp(*b);
  EXPECT_EQ(b->feed->stats().full_reloads, 1u);
  EXPECT_EQ(b->tag("from-a", "x"), "1");
  setTag(*b, "from-a", "x", 2);
  EXPECT_TRUE(waitFor([&] { return a->tag("from-a", "x") == "2"; }));
}

// The store side alone: which ids a read returns, and what readDevices reads.
TEST_F(TwinIndexFeedTest, TheChangeFeedReturnsEachChangedDeviceOnceAndItsCurrentState) {
  auto opened = store::PostgresStore::open(server_.conninfo());
  ASSERT_TRUE(opened.isOk()) << opened.status().toString();
  store::PostgresStore& pg = **opened;
  store::ChangeFeed* feed = pg.changeFeed();
  ASSERT_NE(feed, nullptr);
  auto start = feed->currentCursor();
  ASSERT_TRUE(start.isOk()) << start.status().toString();

  ASSERT_TRUE(pg.registry().createDevice(deviceRecord("d2"), twinRecord("d2")).isOk());
  ASSERT_TRUE(pg.registry().createDevice(deviceRecord("d1"), twinRecord("d1")).isOk());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pg.twins()
                    .updateTwin("d1",
                                [](const store::TwinRecord& current) -> Result<store::TwinRecord> {
                                  store::TwinRecord next = current;
                                  ++next.version;
                                  return next;
                                })
                    .isOk());
  }
  ASSERT_TRUE(pg.cluster()->claimPresence("d2", "node-x").isOk());
  auto first = feed->readChanges(*start);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  EXPECT_FALSE(first->fell_behind);
  EXPECT_EQ(first->device_ids, (std::vector<std::string>{"d1", "d2"}));
  EXPECT_NE(first->next, *start);

  auto again = feed->readChanges(first->next);
  ASSERT_TRUE(again.isOk());
  EXPECT_TRUE(again->device_ids.empty());
  // Reading from an older cursor again returns the same changes (nothing is consumed).
  auto repeated = feed->readChanges(*start);
  ASSERT_TRUE(repeated.isOk());
  EXPECT_EQ(repeated->device_ids, first->device_ids);

  ASSERT_TRUE(pg.registry().deleteDevice("d2", nullptr).isOk());
  auto deleted = feed->readChanges(again->next);
  ASSERT_TRUE(deleted.isOk());
  EXPECT_EQ(deleted->device_ids, (std::vector<std::string>{"d2"}));

  auto states = feed->readDevices({"d2", "never", "d1"});
  ASSERT_TRUE(states.isOk()) << states.status().toString();
  ASSERT_EQ(states->size(), 3u);
  EXPECT_EQ((*states)[0].device_id, "d2");
  EXPECT_FALSE((*states)[0].device.has_value());
  EXPECT_EQ((*states)[1].device_id, "never");
  EXPECT_FALSE((*states)[1].device.has_value());
  EXPECT_EQ((*states)[2].device_id, "d1");
  ASSERT_TRUE((*states)[2].device.has_value());
  EXPECT_EQ(*(*states)[2].device, deviceRecord("d1"));
  EXPECT_EQ((*states)[2].twin.version, 4);
  EXPECT_FALSE((*states)[2].presence.has_value());

  ASSERT_TRUE(pg.registry().createDevice(deviceRecord("d3"), twinRecord("d3")).isOk());
  auto claim = pg.cluster()->claimPresence("d3", "node-x");
  ASSERT_TRUE(claim.isOk());
  auto with_presence = feed->readDevices({"d3"});
  ASSERT_TRUE(with_presence.isOk());
  ASSERT_TRUE((*with_presence)[0].presence.has_value());
  EXPECT_EQ(*(*with_presence)[0].presence, claim->current);
  auto connected = feed->connectedDevices();
  ASSERT_TRUE(connected.isOk());
  EXPECT_EQ(*connected, (std::vector<std::string>{"d3"}));

  // Once pruned, a cursor from before is told it fell behind.
  auto pruned = feed->prune(0ms);
  ASSERT_TRUE(pruned.isOk()) << pruned.status().toString();
  EXPECT_GT(*pruned, 0);
  auto behind = feed->readChanges(*start);
  ASSERT_TRUE(behind.isOk());
  EXPECT_TRUE(behind->fell_behind);
  EXPECT_TRUE(behind->device_ids.empty());
}

TEST(TwinIndexFeedWithoutSharedStoreTest, SqliteHasNoChangeFeed) {
  iothub::testing::TempDir dir{"iothub-feed-test"};
  auto sqlite = store::SqliteStore::open(dir.path() / "hub.db");
  ASSERT_TRUE(sqlite.isOk()) << sqlite.status().toString();
  EXPECT_EQ((*sqlite)->changeFeed(), nullptr);
  TwinIndex index;
  IndexedStore indexed(**sqlite, index);
  auto feed = TwinIndexFeed::start(indexed, index);
  ASSERT_FALSE(feed.isOk());
  EXPECT_EQ(feed.code(), ErrorCode::InvalidOperation);
}

}  // namespace
}  // namespace iothub::index
