// Tests specific to the PostgreSQL backend: connection strings, schema migrations, group
// commit, deadlock retries, durability across a database crash, connection loss and the
// client-side deadline. Behaviour every backend shares is in store_conformance_test.cpp.
// Every test runs its own throw-away server (tests/support/postgres_server.hpp).

#include "store/postgresql/pg_store.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "store/postgresql/pg_connection.hpp"
#include "store/postgresql/pg_schema.hpp"
#include "tests/support/postgres_server.hpp"
#include "tests/support/process.hpp"

namespace iothub::store {
namespace {

using iothub::testing::PostgresServer;
using iothub::testing::waitFor;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

DeviceRecord makeDevice(const std::string& id) {
  DeviceRecord device;
  device.device_id = id;
  device.generation_id = "gen";
  device.etag = "etag-1";
  device.primary_key = "a2V5";
  device.secondary_key = "a2V5Mg==";
  return device;
}

TwinRecord makeTwin(const std::string& id) {
  TwinRecord twin;
  twin.device_id = id;
  twin.desired = json::parse(R"({"interval":30})").as_object();
  return twin;
}

DeviceMutation increment() {
  return [](const DeviceRecord& current) -> Result<DeviceRecord> {
    DeviceRecord next = current;
    next.cloud_to_device_message_count += 1;
    return next;
  };
}

class PostgresStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { startServer(); }

  void startServer(std::vector<std::string> settings = {}) {
    server_ = std::make_unique<PostgresServer>(std::move(settings));
    Status started = server_->start();
    ASSERT_TRUE(started.isOk()) << started.toString();
  }

  std::unique_ptr<PostgresStore> open(PostgresOptions options = {}) {
    auto store = PostgresStore::open(server_->conninfo(), options);
    EXPECT_TRUE(store.isOk()) << store.status().toString();
    return store ? std::move(store).value() : nullptr;
  }

  // A plain connection for a test to play another process, named `name` in
  // pg_stat_activity.
  std::unique_ptr<PgConnection> connect(const std::string& name) {
    auto connection = PgConnection::connect(
        PgConnectSettings{.conninfo = server_->conninfo() + " application_name=" + name,
                          .connect_timeout = std::chrono::seconds(10),
                          .query_deadline = std::chrono::seconds(30)});
    EXPECT_TRUE(connection.isOk()) << connection.status().toString();
    return connection ? std::move(connection).value() : nullptr;
  }

  std::string sql(const std::string& statement) {
    auto output = server_->sql(statement);
    EXPECT_TRUE(output.isOk()) << output.status().toString();
    return output ? *output : "";
  }

  void createDevices(Store& store, int count) {
    for (int i = 0; i < count; ++i) {
      std::string id = "device-" + std::to_string(i);
      Status created = store.registry().createDevice(makeDevice(id), makeTwin(id));
      ASSERT_TRUE(created.isOk()) << created.toString();
    }
  }

  std::unique_ptr<PostgresServer> server_;
};

// --- connection strings ---

TEST_F(PostgresStoreTest, OpensWithAUriAndWithKeyValuePairs) {
  auto by_uri = PostgresStore::open(server_->uri());
  ASSERT_TRUE(by_uri.isOk()) << by_uri.status().toString();
  ASSERT_TRUE((*by_uri)->registry().createDevice(makeDevice("d"), makeTwin("d")).isOk());
  by_uri.value().reset();

  auto by_pairs = PostgresStore::open(server_->conninfo());
  ASSERT_TRUE(by_pairs.isOk()) << by_pairs.status().toString();
  EXPECT_TRUE((*by_pairs)->registry().getDevice("d").isOk());
  by_pairs.value().reset();

  auto by_socket = PostgresStore::open(server_->socketConninfo());
  ASSERT_TRUE(by_socket.isOk()) << by_socket.status().toString();
  EXPECT_TRUE((*by_socket)->registry().getDevice("d").isOk());
}

TEST_F(PostgresStoreTest, MalformedConnectionStringsAreArgumentInvalid) {
  for (const std::string conninfo : {"host=127.0.0.1 port", "no_such_option=1", "postgresql://[::1",
                                     "iothub", "postgresql://localhost/db?connect_timeout=soon"}) {
    auto store = PostgresStore::open(conninfo);
    ASSERT_FALSE(store.isOk()) << conninfo;
    EXPECT_EQ(store.code(), ErrorCode::ArgumentInvalid) << conninfo;
    EXPECT_NE(store.status().message().find("invalid PostgreSQL connection string"),
              std::string::npos)
        << store.status().message();
  }
}

TEST_F(PostgresStoreTest, UnreachableServerIsServiceUnavailable) {
  Status stopped = server_->stop();
  ASSERT_TRUE(stopped.isOk()) << stopped.toString();
  auto store = PostgresStore::open(server_->conninfo());
  ASSERT_FALSE(store.isOk());
  EXPECT_EQ(store.code(), ErrorCode::ServiceUnavailable) << store.status().toString();
}

TEST_F(PostgresStoreTest, TextWithANulCharacterIsRefused) {
  auto store = open();
  std::string id("nul\0inside", 10);
  Status created = store->registry().createDevice(makeDevice(id), makeTwin(id));
  EXPECT_EQ(created.code(), ErrorCode::ArgumentInvalid) << created.toString();
  EXPECT_EQ(sql("SELECT count(*) FROM devices"), "0");
}

// --- schema migrations ---

TEST_F(PostgresStoreTest, OpeningRecordsTheSchemaVersionInOneRow) {
  open().reset();
  EXPECT_EQ(sql("SELECT string_agg(version::text, ',') FROM iothub_schema"),
            std::to_string(postgresSchemaVersion()));
  open().reset();  // an up-to-date database is left as it is
  EXPECT_EQ(sql("SELECT count(*) FROM iothub_schema"), "1");
}

TEST_F(PostgresStoreTest, ConcurrentOpensOfAnEmptyDatabaseMigrateItOnce) {
  constexpr int kOpeners = 4;
  std::latch go(kOpeners);
  std::vector<Status> results(kOpeners);
  std::vector<std::thread> threads;
  for (int i = 0; i < kOpeners; ++i) {
    threads.emplace_back([&, i] {
      go.arrive_and_wait();
      auto store = PostgresStore::open(server_->conninfo());
      results[i] = store.status();
      if (store) {
        std::string id = "device-" + std::to_string(i);
        results[i] = (*store)->registry().createDevice(makeDevice(id), makeTwin(id));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const Status& result : results) EXPECT_TRUE(result.isOk()) << result.toString();
  EXPECT_EQ(sql("SELECT string_agg(version::text, ',') FROM iothub_schema"),
            std::to_string(postgresSchemaVersion()));
  EXPECT_EQ(sql("SELECT count(*) FROM devices"), std::to_string(kOpeners));
}

TEST_F(PostgresStoreTest, ADatabaseWithANewerSchemaIsRefused) {
  open().reset();
  sql("UPDATE iothub_schema SET version = 999");
  auto store = PostgresStore::open(server_->conninfo());
  ASSERT_FALSE(store.isOk());
  EXPECT_EQ(store.code(), ErrorCode::ServiceUnavailable);
  const std::string message = store.status().message();
  EXPECT_NE(message.find("999"), std::string::npos) << message;
  EXPECT_NE(message.find("version " + std::to_string(postgresSchemaVersion())), std::string::npos)
      << message;
  EXPECT_EQ(sql("SELECT version FROM iothub_schema"), "999") << "left untouched";
}

TEST_F(PostgresStoreTest, MigrationsRunOnlyPastTheRecordedVersionAndAllOrNothing) {
  auto connection = connect("migrations-test");
  ASSERT_NE(connection, nullptr);
  const PgMigration first[] = {{1, "CREATE TABLE a (x int)"}};
  ASSERT_TRUE(migratePostgresSchema(*connection, first).isOk());

  // Version 1 is not run again (it would fail: table a exists); 2 runs, 3 fails, and the
  // database stays at version 1 without table b.
  const PgMigration broken[] = {
      {1, "CREATE TABLE a (x int)"}, {2, "CREATE TABLE b (x int)"}, {3, "CREATE TABLE ("}};
  Status failed = migratePostgresSchema(*connection, broken);
  EXPECT_FALSE(failed.isOk());
  EXPECT_NE(failed.message().find("migration to version 3"), std::string::npos) << failed.message();
  EXPECT_EQ(sql("SELECT version FROM iothub_schema"), "1");
  EXPECT_EQ(sql("SELECT to_regclass('b') IS NULL"), "t");

  const PgMigration fixed[] = {{1, "CREATE TABLE a (x int)"}, {2, "CREATE TABLE b (x int)"}};
  ASSERT_TRUE(migratePostgresSchema(*connection, fixed).isOk());
  EXPECT_EQ(sql("SELECT version FROM iothub_schema"), "2");
  EXPECT_EQ(sql("SELECT to_regclass('b') IS NULL"), "f");
}

TEST_F(PostgresStoreTest, AVersion7DatabaseGetsTheDefaultConsumerGroupCreatedAtTheUpgrade) {
  {
    auto connection = connect("upgrade-test");
    ASSERT_NE(connection, nullptr);
    ASSERT_TRUE(migratePostgresSchema(*connection, postgresMigrations().first(7)).isOk());
  }
  sql("INSERT INTO telemetry_partitions VALUES (0, 1, 2, 3)");
  EXPECT_EQ(sql("SELECT version FROM iothub_schema"), "7");
  const SystemTime before = std::chrono::system_clock::now() - std::chrono::seconds(1);
  auto store = open();
  const SystemTime after = std::chrono::system_clock::now() + std::chrono::seconds(1);
  EXPECT_EQ(sql("SELECT version FROM iothub_schema"), std::to_string(postgresSchemaVersion()));
  auto groups = store->telemetry().listConsumerGroups();
  ASSERT_TRUE(groups.isOk()) << groups.status().toString();
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ(groups->front().name, "$Default");
  EXPECT_GE(groups->front().created_time, before);
  EXPECT_LE(groups->front().created_time, after);
  EXPECT_EQ(store->telemetry().telemetryPartition(0)->next_sequence, 1) << "older data stays";
}

// --- group commit ---

TEST_F(PostgresStoreTest, ConcurrentWritesShareTransactions) {
  auto store = open();
  constexpr int kThreads = 16;
  constexpr int kWrites = 40;
  createDevices(*store, kThreads);
  const PgWriter::Stats before = store->stats();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i) {
        if (!store->registry().updateDevice("device-" + std::to_string(t), increment())) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  const PgWriter::Stats after = store->stats();
  EXPECT_EQ(after.operations - before.operations, std::uint64_t{kThreads * kWrites});
  EXPECT_LT(after.transactions - before.transactions, std::uint64_t{kThreads * kWrites})
      << "concurrent writes were never committed together";
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(
        store->registry().getDevice("device-" + std::to_string(t))->cloud_to_device_message_count,
        kWrites);
  }
}

TEST_F(PostgresStoreTest, OneTransactionCommitsItsGoodWritesAndDropsItsFailedOnes) {
  auto store = open();
  createDevices(*store, 5);
  // A first write holds the writer until the others are queued, so they all run in the
  // next transaction: two updates and a create that succeed, a mutation that fails, and a
  // create that PostgreSQL refuses (invalid UTF-8: an SQL error inside the transaction).
  constexpr int kQueued = 5;
  std::atomic<bool> holding{false};
  std::thread holder([&] {
    auto held = store->registry().updateDevice("device-0", [&](const DeviceRecord& current) {
      holding = true;
      waitFor([&] { return store->stats().queued_operations >= kQueued; });
      return increment()(current);
    });
    EXPECT_TRUE(held.isOk()) << held.status().toString();
  });
  ASSERT_TRUE(waitFor([&] { return holding.load(); }));
  const PgWriter::Stats before = store->stats();

  std::vector<std::thread> writers;
  Status good_update_1, good_update_2, good_create, refused_mutation, refused_create;
  writers.emplace_back(
      [&] { good_update_1 = store->registry().updateDevice("device-1", increment()).status(); });
  writers.emplace_back([&] {
    refused_mutation =
        store->registry()
            .updateDevice("device-2",
                          [](const DeviceRecord&) -> Result<DeviceRecord> {
                            return Status(ErrorCode::PreconditionFailed, "etag mismatch");
                          })
            .status();
  });
  writers.emplace_back([&] {
    std::string bad_id = "bad-\xff";
    refused_create = store->registry().createDevice(makeDevice(bad_id), makeTwin(bad_id));
  });
  writers.emplace_back(
      [&] { good_update_2 = store->registry().updateDevice("device-3", increment()).status(); });
  writers.emplace_back(
      [&] { good_create = store->registry().createDevice(makeDevice("new"), makeTwin("new")); });
  holder.join();
  for (std::thread& writer : writers) writer.join();

  EXPECT_TRUE(good_update_1.isOk()) << good_update_1.toString();
  EXPECT_TRUE(good_update_2.isOk()) << good_update_2.toString();
  EXPECT_TRUE(good_create.isOk()) << good_create.toString();
  EXPECT_EQ(refused_mutation.code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(refused_create.code(), ErrorCode::ServerError) << refused_create.toString();
  const PgWriter::Stats after = store->stats();
  EXPECT_EQ(after.transactions - before.transactions, 2u) << "the held one and the batch";
  EXPECT_EQ(store->registry().getDevice("device-1")->cloud_to_device_message_count, 1);
  EXPECT_EQ(store->registry().getDevice("device-2")->cloud_to_device_message_count, 0);
  EXPECT_EQ(store->registry().getDevice("device-3")->cloud_to_device_message_count, 1);
  EXPECT_TRUE(store->registry().getDevice("new").isOk());
  EXPECT_EQ(sql("SELECT count(*) FROM devices"), "6");
}

TEST_F(PostgresStoreTest, ADeadlockedTransactionIsRunAgain) {
  // PostgreSQL looks for a deadlock once per lock wait, deadlock_timeout (1 s by default)
  // after the wait began, and aborts the session that finds it. The store's session waits
  // first, and the other session looks only after 60 s, so the store's is the one aborted.
  auto store = open();
  for (const char* id : {"x", "y", "z"}) {
    ASSERT_TRUE(store->registry().createDevice(makeDevice(id), makeTwin(id)).isOk());
  }
  auto other = connect("other-process");
  auto monitor = connect("monitor");
  ASSERT_NE(other, nullptr);
  ASSERT_NE(monitor, nullptr);
  ASSERT_TRUE(other->exec("SET deadlock_timeout = '60s'").isOk());

  // The writer is held until x and y are queued (in that order) and the other session
  // holds y; then one transaction updates x, then y.
  std::atomic<bool> holding{false}, other_holds_y{false};
  std::vector<Status> results(3);
  std::thread holder([&] {
    results[0] =
        store->registry()
            .updateDevice("z",
                          [&](const DeviceRecord& current) {
                            holding = true;
                            waitFor([&] {
                              return store->stats().queued_operations >= 2 && other_holds_y.load();
                            });
                            return increment()(current);
                          })
            .status();
  });
  ASSERT_TRUE(waitFor([&] { return holding.load(); }));
  std::thread update_x(
      [&] { results[1] = store->registry().updateDevice("x", increment()).status(); });
  ASSERT_TRUE(waitFor([&] { return store->stats().queued_operations >= 1; }));
  std::thread update_y(
      [&] { results[2] = store->registry().updateDevice("y", increment()).status(); });

  ASSERT_TRUE(other->exec("BEGIN").isOk());
  ASSERT_TRUE(other->exec("SELECT 1 FROM devices WHERE device_id = 'y' FOR UPDATE").isOk());
  other_holds_y = true;
  // Once the store's transaction (holding x) waits for y, asking for x closes the cycle.
  ASSERT_TRUE(waitFor([&] {
    auto waiting = monitor->exec(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'iothub'"
        " AND wait_event_type = 'Lock'");
    return waiting && waiting->row(0).text(0) == "1";
  }));
  auto locked_x = other->exec("SELECT 1 FROM devices WHERE device_id = 'x' FOR UPDATE");
  EXPECT_TRUE(locked_x.isOk()) << locked_x.status().toString();
  ASSERT_TRUE(other->exec("COMMIT").isOk());

  holder.join();
  update_x.join();
  update_y.join();
  for (const Status& result : results) EXPECT_TRUE(result.isOk()) << result.toString();
  EXPECT_GE(store->stats().retried_transactions, 1u);
  // The aborted attempt left nothing behind: every update counted exactly once.
  for (const char* id : {"x", "y", "z"}) {
    EXPECT_EQ(store->registry().getDevice(id)->cloud_to_device_message_count, 1) << id;
  }
}

// --- durability and failures ---

TEST_F(PostgresStoreTest, AcknowledgedWritesSurviveADatabaseCrash) {
  // A server that acknowledges commits before their WAL is flushed, and flushes rarely: the
  // store's sessions must turn synchronous_commit back on, or the crash loses writes.
  server_.reset();
  startServer({"synchronous_commit=off", "wal_writer_delay=10000ms"});
  auto store = open();
  constexpr int kThreads = 8;
  constexpr int kDevices = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kDevices; ++i) {
        std::string id = "device-" + std::to_string(t) + "-" + std::to_string(i);
        if (!store->registry().createDevice(makeDevice(id), makeTwin(id))) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  ASSERT_EQ(failures.load(), 0);

  ASSERT_TRUE(server_->crash().isOk());
  Status restarted = server_->restart();
  ASSERT_TRUE(restarted.isOk()) << restarted.toString();
  auto statistics = store->registry().deviceStatistics();
  ASSERT_TRUE(statistics.isOk()) << statistics.status().toString();
  EXPECT_EQ(statistics->total, kThreads * kDevices);
}

TEST_F(PostgresStoreTest, LostConnectionsAreTransientAndTheStoreRecovers) {
  auto store = open();
  createDevices(*store, 1);
  ASSERT_TRUE(store->registry().getDevice("device-0").isOk());

  ASSERT_TRUE(server_->crash().isOk());
  auto write = store->registry().updateDevice("device-0", increment());
  EXPECT_EQ(write.code(), ErrorCode::ServiceUnavailable) << write.status().toString();
  auto read = store->registry().getDevice("device-0");
  EXPECT_EQ(read.code(), ErrorCode::ServiceUnavailable) << read.status().toString();

  Status restarted = server_->restart();
  ASSERT_TRUE(restarted.isOk()) << restarted.toString();
  // The first calls after the restart already succeed: connections found dead are replaced.
  write = store->registry().updateDevice("device-0", increment());
  EXPECT_TRUE(write.isOk()) << write.status().toString();
  read = store->registry().getDevice("device-0");
  ASSERT_TRUE(read.isOk()) << read.status().toString();
  EXPECT_EQ(read->cloud_to_device_message_count, 1);
  EXPECT_GE(store->stats().reconnects, 1u);
}

TEST_F(PostgresStoreTest, IdleConnectionsKilledByTheServerAreReplaced) {
  auto store = open();
  createDevices(*store, 1);
  ASSERT_TRUE(store->registry().getDevice("device-0").isOk());
  sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'iothub'");
  EXPECT_TRUE(store->registry().updateDevice("device-0", increment()).isOk());
  EXPECT_TRUE(store->registry().getDevice("device-0").isOk());
}

TEST_F(PostgresStoreTest, AFrozenServerMissesTheDeadlineInsteadOfHangingTheCaller) {
  PostgresOptions options;
  options.query_deadline = milliseconds(500);
  options.connect_timeout = milliseconds(500);
  auto store = open(options);
  createDevices(*store, 1);
  ASSERT_TRUE(store->registry().getDevice("device-0").isOk());  // a pooled read connection

  ASSERT_TRUE(server_->freeze().isOk());
  auto timed = [](auto call) {
    Clock::time_point start = Clock::now();
    ErrorCode code = call();
    auto elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    EXPECT_GE(elapsed, milliseconds(400));
    EXPECT_LT(elapsed, milliseconds(5000));
    return code;
  };
  // Open connections: the query deadline.
  EXPECT_EQ(timed([&] { return store->registry().getDevice("device-0").code(); }),
            ErrorCode::ServiceUnavailable);
  EXPECT_EQ(timed([&] { return store->registry().updateDevice("device-0", increment()).code(); }),
            ErrorCode::ServiceUnavailable);
  // New connections (the broken ones were closed): the connect timeout.
  EXPECT_EQ(timed([&] { return store->registry().getDevice("device-0").code(); }),
            ErrorCode::ServiceUnavailable);
  EXPECT_EQ(timed([&] { return store->registry().updateDevice("device-0", increment()).code(); }),
            ErrorCode::ServiceUnavailable);

  ASSERT_TRUE(server_->thaw().isOk());
  auto updated = store->registry().updateDevice("device-0", increment());
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(updated->cloud_to_device_message_count, 1);
  EXPECT_TRUE(store->registry().getDevice("device-0").isOk());
}

// --- connections ---

TEST_F(PostgresStoreTest, ReadsUseAtMostPoolSizeConnections) {
  PostgresOptions options;
  options.pool_size = 2;
  auto store = open(options);
  createDevices(*store, 1);
  std::atomic<int> failures{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 8; ++t) {
    readers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (!store->registry().getDevice("device-0")) ++failures;
      }
    });
  }
  for (std::thread& reader : readers) reader.join();
  EXPECT_EQ(failures.load(), 0);
  // The writer's connection and two readers.
  EXPECT_EQ(sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'iothub'"), "3");
}

}  // namespace
}  // namespace iothub::store
