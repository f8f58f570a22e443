// The change feed's costs (docs/benchmarks.md, "Change feed"): two nodes (two
// PostgresStores, each with its own TwinIndex, IndexedStore and TwinIndexFeed) on one
// throw-away PostgreSQL server, measuring
// - catchUp() per query when nothing changed (what every FROM devices query pays),
// - catchUp() on node B while node A writes twins as fast as it can,
// - how fast B applies a burst of twin updates (a twin job's worth), and what the change
//   log's trigger costs the writes of that burst.
//
//   change_feed_bench [--devices N] [--seconds S] [--writers W]
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "index/indexed_store.hpp"
#include "index/twin_index.hpp"
#include "index/twin_index_feed.hpp"
#include "store/postgresql/pg_store.hpp"
#include "tests/support/postgres_server.hpp"

namespace {

using namespace iothub;
using namespace std::chrono_literals;
using Steady = std::chrono::steady_clock;

struct Node {
  std::unique_ptr<store::PostgresStore> durable;
  index::TwinIndex index;
  std::unique_ptr<index::IndexedStore> store;
  std::unique_ptr<index::TwinIndexFeed> feed;
  ~Node() {
    feed.reset();
    store.reset();
  }
};

[[noreturn]] void fail(const std::string& what, const Status& status) {
  std::fprintf(stderr, "change_feed_bench: %s: %s\n", what.c_str(), status.toString().c_str());
  std::exit(1);
}

std::unique_ptr<Node> startNode(const std::string& conninfo) {
  auto node = std::make_unique<Node>();
  auto durable = store::PostgresStore::open(conninfo);
  if (!durable) fail("opening the store", durable.status());
  node->durable = std::move(durable).value();
  node->store = std::make_unique<index::IndexedStore>(*node->durable, node->index);
  index::TwinIndexFeedOptions options;
  options.poll_interval = 1h;  // only catchUp reads: every read below is a measured one
  options.prune_interval = 0ms;
  auto feed = index::TwinIndexFeed::start(*node->store, node->index, options);
  if (!feed) fail("starting the feed", feed.status());
  node->feed = std::move(feed).value();
  return node;
}

double micros(Steady::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct Percentiles {
  double mean, p50, p99, max;
};
Percentiles percentiles(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  double sum = 0;
  for (double v : values) sum += v;
  auto at = [&](double q) { return values[static_cast<std::size_t>(q * (values.size() - 1))]; };
  return {sum / values.size(), at(0.5), at(0.99), values.back()};
}

void catchUp(Node& node) {
  Status caught = node.feed->catchUp(120s);
  if (!caught) fail("catchUp", caught);
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 100'000;
  int seconds = 5;
  int writers = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    int value = std::atoi(argv[i + 1]);
    if (flag == "--devices") devices = value;
    if (flag == "--seconds") seconds = value;
    if (flag == "--writers") writers = value;
  }
  spdlog::set_level(spdlog::level::warn);

  testing::PostgresServer server;
  if (Status s = server.start(); !s) fail("starting PostgreSQL", s);
  // Creates the schema (and so the change log's triggers) before the fleet goes in.
  { auto schema = startNode(server.conninfo()); }
  auto sql = [&](const std::string& statement) {
    auto out = server.sql(statement);
    if (!out) fail("psql", out.status());
    return *out;
  };
  const std::string n = std::to_string(devices);
  auto started = Steady::now();
  sql("INSERT INTO devices SELECT 'dev' || i, 'gen', 'e', 'enabled', NULL, 0, 'sas', 'cHJp',"
      " 'c2Vj', NULL, NULL, false, NULL, '[]', 0, 0, 0 FROM generate_series(1, " +
      n + ") i");
  sql("INSERT INTO twins SELECT 'dev' || i, json_build_object('floor', i % 10, 'site', 's' || "
      "(i % 7)), '{}', '{}', 1, 1, 1 FROM generate_series(1, " +
      n + ") i");
  sql("VACUUM ANALYZE");
  std::printf("fleet: %d devices inserted in %.1f s\n", devices,
              std::chrono::duration<double>(Steady::now() - started).count());

  started = Steady::now();
  auto a = startNode(server.conninfo());
  auto b = startNode(server.conninfo());
  std::printf("two nodes started (full index load each) in %.1f s\n",
              std::chrono::duration<double>(Steady::now() - started).count());

  // 1. catchUp when nothing changed.
  {
    for (int i = 0; i < 50; ++i) catchUp(*b);
    std::vector<double> took;
    for (int i = 0; i < 2000; ++i) {
      auto t0 = Steady::now();
      catchUp(*b);
      took.push_back(micros(Steady::now() - t0));
    }
    auto p = percentiles(took);
    std::printf("idle catchUp: mean %.0f us, p50 %.0f us, p99 %.0f us, max %.0f us (2000 calls)\n",
                p.mean, p.p50, p.p99, p.max);
  }

  // 2. What the trigger costs writes through the store: A's twin writes for a few seconds
  // with the change log's triggers disabled, then enabled (no catchUp running).
  auto writeRate = [&](int threads_count, std::chrono::seconds duration) {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> written{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < threads_count; ++w) {
      threads.emplace_back([&, w] {
        std::mt19937 random(static_cast<unsigned>(w + 100));
        std::uniform_int_distribution<int> pick(1, devices);
        while (!stop) {
          std::string id = "dev" + std::to_string(pick(random));
          auto updated = a->store->twins().updateTwin(
              id, [](const store::TwinRecord& current) -> Result<store::TwinRecord> {
                store::TwinRecord next = current;
                next.tags["rate"] = next.version;
                ++next.version;
                return next;
              });
          if (!updated) fail("a twin update on node A", updated.status());
          written.fetch_add(1);
        }
      });
    }
    std::this_thread::sleep_for(duration);
    stop = true;
    for (auto& t : threads) t.join();
    return static_cast<double>(written.load()) / static_cast<double>(duration.count());
  };
  {
    // Alternated, best of two each, so neither side always runs on the more bloated table.
    double without_log = 0, with_log = 0;
    for (int round = 0; round < 2; ++round) {
      sql("ALTER TABLE twins DISABLE TRIGGER twins_log_change");
      without_log = std::max(without_log, writeRate(writers, std::chrono::seconds(seconds)));
      sql("ALTER TABLE twins ENABLE TRIGGER twins_log_change");
      with_log = std::max(with_log, writeRate(writers, std::chrono::seconds(seconds)));
    }
    std::printf(
        "twin writes through node A's store (%d threads, best of 2 x %d s): %.0f /s "
        "without the change log, %.0f /s with it\n",
        writers, seconds, without_log, with_log);
  }
  catchUp(*b);

  // 3. catchUp on B while A writes twins.
  {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> written{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back([&, w] {
        std::mt19937 random(static_cast<unsigned>(w));
        std::uniform_int_distribution<int> pick(1, devices);
        while (!stop) {
          std::string id = "dev" + std::to_string(pick(random));
          auto updated = a->store->twins().updateTwin(
              id, [](const store::TwinRecord& current) -> Result<store::TwinRecord> {
                store::TwinRecord next = current;
                next.tags["stream"] = next.version;
                ++next.version;
                return next;
              });
          if (!updated) fail("a twin update on node A", updated.status());
          written.fetch_add(1);
        }
      });
    }
    std::vector<double> took;
    auto applied_before = b->feed->stats().devices_applied;
    auto until = Steady::now() + std::chrono::seconds(seconds);
    auto t_start = Steady::now();
    std::uint64_t written_start = written.load();
    while (Steady::now() < until) {
      auto t0 = Steady::now();
      catchUp(*b);
      took.push_back(micros(Steady::now() - t0));
    }
    double elapsed = std::chrono::duration<double>(Steady::now() - t_start).count();
    std::uint64_t writes = written.load() - written_start;
    stop = true;
    for (auto& t : threads) t.join();
    auto p = percentiles(took);
    std::printf(
        "catchUp under writes: node A %.0f twin writes/s (%d threads); node B %zu catchUps, "
        "mean %.0f us, p50 %.0f us, p99 %.0f us, max %.0f us; %.2f devices applied per "
        "catchUp\n",
        writes / elapsed, writers, took.size(), p.mean, p.p50, p.p99, p.max,
        static_cast<double>(b->feed->stats().devices_applied - applied_before) / took.size());
  }
  catchUp(*b);

  // 4. A burst: every twin updated once, in statements of 10 000 rows, with the change log's
  // trigger disabled (the write cost without it) and enabled, alternately; then B applies
  // the changes (each device once, however many bursts changed it).
  auto burst = [&](const std::string& value) {
    auto t0 = Steady::now();
    for (int first = 1; first <= devices; first += 10'000) {
      sql("UPDATE twins SET tags = json_build_object('burst', " + value +
          "), version = version + 1 WHERE device_id IN (SELECT 'dev' || i FROM "
          "generate_series(" +
          std::to_string(first) + ", " + std::to_string(std::min(devices, first + 9'999)) + ") i)");
    }
    return std::chrono::duration<double>(Steady::now() - t0).count();
  };
  double without_log = 1e9, with_log = 1e9;
  for (int round = 0; round < 2; ++round) {
    sql("VACUUM twins");
    sql("ALTER TABLE twins DISABLE TRIGGER twins_log_change");
    without_log = std::min(without_log, burst(std::to_string(2 * round)));
    sql("VACUUM twins");
    sql("ALTER TABLE twins ENABLE TRIGGER twins_log_change");
    with_log = std::min(with_log, burst(std::to_string(2 * round + 1)));
  }
  std::printf(
      "burst writes (%d twins, 10 000 per statement, best of 2): %.2f s without the "
      "change log, %.2f s with it (+%.0f %%)\n",
      devices, without_log, with_log, 100.0 * (with_log - without_log) / without_log);
  auto applied_before = b->feed->stats().devices_applied;
  auto t0 = Steady::now();
  catchUp(*b);
  double apply = std::chrono::duration<double>(Steady::now() - t0).count();
  std::uint64_t applied = b->feed->stats().devices_applied - applied_before;
  std::printf("burst applied on node B: %llu devices in %.2f s (%.0f devices/s)\n",
              static_cast<unsigned long long>(applied), apply, applied / apply);
  auto row = b->index.find("dev" + std::to_string(devices));
  bool exact = row != nullptr && row->at("tags").as_object().at("burst").to_number<int>() == 3;
  std::printf("node B shows the burst: %s\n", exact ? "yes" : "NO");
  t0 = Steady::now();
  catchUp(*b);
  std::printf("next catchUp: %.0f us\n", micros(Steady::now() - t0));

  std::printf("change log rows: %s; size %s\n", sql("SELECT count(*) FROM device_changes").c_str(),
              sql("SELECT pg_size_pretty(pg_total_relation_size('device_changes'))").c_str());
  return exact ? 0 : 1;
}
