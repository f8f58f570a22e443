// Tests specific to the SQLite backend: schema versions and migrations, file handling,
// the group-commit writer. Behaviour every backend shares is in store_conformance_test.cpp.

#include "store/sqlite/sqlite_store.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "store/sqlite/sqlite_connection.hpp"
#include "store/sqlite/sqlite_schema.hpp"
#include "store/sqlite/sqlite_writer.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::store {
namespace {

using iothub::testing::TempDir;
using iothub::testing::waitFor;

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

Result<DeviceRecord> incrementMessageCount(const DeviceRecord& current) {
  DeviceRecord next = current;
  next.cloud_to_device_message_count += 1;
  return next;
}

std::unique_ptr<SqliteConnection> openRaw(const std::filesystem::path& file) {
  auto connection = SqliteConnection::open(file, SqliteConnection::Mode::ReadWriteCreate);
  if (!connection) {
    ADD_FAILURE() << connection.status().toString();
    return nullptr;
  }
  return std::move(connection).value();
}

bool tableExists(SqliteConnection& connection, const std::string& name) {
  auto count = connection.queryInt64(
      "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '" + name + "'");
  return count.isOk() && *count == 1;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  std::filesystem::path dbFile() const { return dir_.path() / "iothub.db"; }

  std::unique_ptr<SqliteStore> openStore(SqliteOptions options = {}) {
    auto store = SqliteStore::open(dbFile(), options);
    if (!store) {
      ADD_FAILURE() << store.status().toString();
      return nullptr;
    }
    return std::move(store).value();
  }

  TempDir dir_{"iothub-store"};
};

// --- schema and files ---

TEST_F(SqliteStoreTest, FreshDatabaseGetsTheCurrentSchemaVersionAndWal) {
  ASSERT_NE(openStore(), nullptr);
  auto raw = openRaw(dbFile());
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(raw->queryInt64("PRAGMA user_version").value(), 6);
  EXPECT_EQ(sqliteSchemaVersion(), 6);
  auto journal = raw->prepare("PRAGMA journal_mode");
  ASSERT_TRUE(journal.isOk());
  ASSERT_TRUE(journal->step().value());
  EXPECT_EQ(journal->text(0), "wal");
  for (const char* table :
       {"devices", "twins", "jobs", "device_jobs", "access_policies", "mqtt_sessions",
        "c2d_messages", "c2d_feedback", "telemetry_partitions", "telemetry", "consumer_groups"}) {
    EXPECT_TRUE(tableExists(*raw, table)) << table;
  }
}

TEST_F(SqliteStoreTest, ReopeningACurrentDatabaseRunsNoMigration) {
  ASSERT_NE(openStore(), nullptr);
  auto store = openStore();
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->registry().createDevice(makeDevice("d"), makeTwin("d")).isOk());
}

TEST_F(SqliteStoreTest, DatabaseFromANewerVersionIsRefused) {
  ASSERT_NE(openStore(), nullptr);
  {
    auto raw = openRaw(dbFile());
    ASSERT_NE(raw, nullptr);
    ASSERT_TRUE(raw->exec("PRAGMA user_version = 99").isOk());
  }
  auto store = SqliteStore::open(dbFile(), {});
  ASSERT_FALSE(store.isOk());
  EXPECT_EQ(store.code(), ErrorCode::ServerError);
  EXPECT_NE(store.status().message().find("schema version 99"), std::string::npos)
      << store.status().message();
  EXPECT_NE(store.status().message().find("newer"), std::string::npos);
}

TEST_F(SqliteStoreTest, JobsOfAVersion2DatabaseKeepTheirRecordsAndBecomeClaimable) {
  {
    auto raw = openRaw(dbFile());
    ASSERT_NE(raw, nullptr);
    ASSERT_TRUE(migrateSqliteSchema(*raw, sqliteMigrations().first(2)).isOk());
    ASSERT_TRUE(raw->exec("INSERT INTO jobs VALUES ('old', 'scheduleDeviceMethod', 'running',"
                          " 1, 2, NULL, '{\"a\":1}')")
                    .isOk());
  }
  auto store = openStore();
  ASSERT_NE(store, nullptr);
  auto job = store->jobs().getJob("old");
  ASSERT_TRUE(job.isOk()) << job.status().toString();
  EXPECT_EQ(job->status, "running");
  EXPECT_EQ(toJson(job->document), R"({"a":1})");
  auto claimed = store->jobs().claimJobs("node", SystemTime{}, std::chrono::seconds(60), 10);
  ASSERT_TRUE(claimed.isOk()) << claimed.status().toString();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ(claimed->front().lease, (JobLease{"old", 1}));
  EXPECT_FALSE(claimed->front().cancel_requested);
}

TEST_F(SqliteStoreTest, AVersion5DatabaseGetsTheDefaultConsumerGroupCreatedAtTheUpgrade) {
  {
    auto raw = openRaw(dbFile());
    ASSERT_NE(raw, nullptr);
    ASSERT_TRUE(migrateSqliteSchema(*raw, sqliteMigrations().first(5)).isOk());
    ASSERT_TRUE(raw->exec("INSERT INTO telemetry_partitions VALUES (0, 1, 2, 3)").isOk());
  }
  const SystemTime before =
      std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
  auto store = openStore();
  ASSERT_NE(store, nullptr);
  const SystemTime after = std::chrono::system_clock::now();
  auto groups = store->telemetry().listConsumerGroups();
  ASSERT_TRUE(groups.isOk()) << groups.status().toString();
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ(groups->front().name, "$Default");
  EXPECT_GE(groups->front().created_time, before - std::chrono::milliseconds(1));
  EXPECT_LE(groups->front().created_time, after);
  EXPECT_EQ(store->telemetry().telemetryPartition(0)->next_sequence, 1) << "older data stays";
}

TEST_F(SqliteStoreTest, FileThatIsNotADatabaseIsRefused) {
  {
    std::ofstream garbage(dbFile(), std::ios::binary);
    for (int i = 0; i < 512; ++i) garbage << "this is not an SQLite database\n";
  }
  auto store = SqliteStore::open(dbFile(), {});
  ASSERT_FALSE(store.isOk());
  EXPECT_EQ(store.code(), ErrorCode::StoreCorruption);
  EXPECT_NE(store.status().message().find("not a database"), std::string::npos)
      << store.status().message();
}

TEST_F(SqliteStoreTest, MissingDirectoryIsAnError) {
  auto store = SqliteStore::open(dir_.path() / "missing" / "iothub.db", {});
  ASSERT_FALSE(store.isOk());
  EXPECT_EQ(store.code(), ErrorCode::ServerError);
}

constexpr SqliteMigration kTestV1{1, "CREATE TABLE a (x INTEGER);"};
constexpr SqliteMigration kTestV2{2, "CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (2);"};

TEST_F(SqliteStoreTest, OlderDatabaseGetsOnlyTheMissingMigrations) {
  auto raw = openRaw(dbFile());
  ASSERT_NE(raw, nullptr);
  const SqliteMigration first[] = {kTestV1};
  ASSERT_TRUE(migrateSqliteSchema(*raw, first).isOk());
  EXPECT_EQ(raw->queryInt64("PRAGMA user_version").value(), 1);
  ASSERT_TRUE(raw->exec("INSERT INTO a VALUES (1)").isOk());

  const SqliteMigration both[] = {kTestV1, kTestV2};
  Status migrated = migrateSqliteSchema(*raw, both);
  ASSERT_TRUE(migrated.isOk()) << migrated.toString();
  EXPECT_EQ(raw->queryInt64("PRAGMA user_version").value(), 2);
  EXPECT_TRUE(tableExists(*raw, "b"));
  // v1 did not run again (it would fail: table a exists), and v2's insert ran once.
  EXPECT_EQ(raw->queryInt64("SELECT count(*) FROM a").value(), 2);
  EXPECT_TRUE(migrateSqliteSchema(*raw, both).isOk());
  EXPECT_EQ(raw->queryInt64("SELECT count(*) FROM a").value(), 2);
}

TEST_F(SqliteStoreTest, FailedMigrationLeavesTheDatabaseAsItWas) {
  auto raw = openRaw(dbFile());
  ASSERT_NE(raw, nullptr);
  const SqliteMigration broken[] = {kTestV1, {2, "CREATE TABLE c (z INTEGER); NOT SQL AT ALL;"}};
  Status migrated = migrateSqliteSchema(*raw, broken);
  ASSERT_FALSE(migrated.isOk());
  EXPECT_NE(migrated.message().find("version 2"), std::string::npos) << migrated.message();
  EXPECT_FALSE(raw->inTransaction());
  EXPECT_EQ(raw->queryInt64("PRAGMA user_version").value(), 0);
  EXPECT_FALSE(tableExists(*raw, "a"));
  EXPECT_FALSE(tableExists(*raw, "c"));
}

TEST_F(SqliteStoreTest, UndecodableStoredValuesAreStoreCorruption) {
  {
    auto store = openStore();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(
        store->registry().createDevice(makeDevice("bad-json"), makeTwin("bad-json")).isOk());
    ASSERT_TRUE(
        store->registry().createDevice(makeDevice("bad-enum"), makeTwin("bad-enum")).isOk());
    JobRecord job;
    job.job_id = "job";
    ASSERT_TRUE(store->jobs().createJob(job).isOk());
  }
  {
    auto raw = openRaw(dbFile());
    ASSERT_NE(raw, nullptr);
    ASSERT_TRUE(raw->exec("UPDATE twins SET desired = '{\"broken' WHERE device_id = 'bad-json';"
                          "UPDATE devices SET parent_scopes = '{}' WHERE device_id = 'bad-json';"
                          "UPDATE devices SET status = 'sleepy' WHERE device_id = 'bad-enum';"
                          "UPDATE jobs SET document = '[1]';")
                    .isOk());
  }
  auto store = openStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->twins().getTwin("bad-json").code(), ErrorCode::StoreCorruption);
  EXPECT_EQ(store->twins().listTwins("", 10).code(), ErrorCode::StoreCorruption);
  EXPECT_EQ(store->registry().getDevice("bad-json").code(), ErrorCode::StoreCorruption);
  EXPECT_EQ(store->registry().getDevice("bad-enum").code(), ErrorCode::StoreCorruption);
  EXPECT_EQ(store->jobs().getJob("job").code(), ErrorCode::StoreCorruption);
  auto updated = store->registry().updateDevice("bad-enum", incrementMessageCount);
  EXPECT_EQ(updated.code(), ErrorCode::StoreCorruption);
  // Healthy rows are unaffected.
  EXPECT_TRUE(store->twins().getTwin("bad-enum").isOk());
}

TEST_F(SqliteStoreTest, SynchronousNormalAndSmallPoolsWork) {
  auto store =
      openStore(SqliteOptions{.synchronous_full = false, .max_batch = 1, .reader_connections = 1});
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->registry().createDevice(makeDevice("d"), makeTwin("d")).isOk());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        if (!store->registry().updateDevice("d", incrementMessageCount).isOk()) ++failures;
        if (!store->twins().getTwin("d").isOk()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(store->registry().getDevice("d")->cloud_to_device_message_count, 200);
  // max_batch = 1: every write is its own transaction.
  SqliteStore::WriterStats stats = store->stats();
  EXPECT_EQ(stats.transactions, stats.operations);
}

// --- group commit through the store ---

TEST_F(SqliteStoreTest, ConcurrentWritesShareTransactions) {
  constexpr int kThreads = 8;
  constexpr int kUpdatesPerThread = 250;
  auto store = openStore();
  ASSERT_NE(store, nullptr);
  for (int t = 0; t < kThreads; ++t) {
    std::string id = "device-" + std::to_string(t);
    ASSERT_TRUE(store->registry().createDevice(makeDevice(id), makeTwin(id)).isOk());
  }
  const SqliteStore::WriterStats before = store->stats();

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string id = "device-" + std::to_string(t);
      for (int i = 0; i < kUpdatesPerThread; ++i) {
        if (!store->registry().updateDevice(id, incrementMessageCount).isOk()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  const SqliteStore::WriterStats after = store->stats();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(after.operations - before.operations,
            static_cast<std::uint64_t>(kThreads * kUpdatesPerThread));
  EXPECT_LT(after.transactions - before.transactions, 1000u);
  EXPECT_EQ(after.failed_commits, 0u);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(
        store->registry().getDevice("device-" + std::to_string(t))->cloud_to_device_message_count,
        kUpdatesPerThread);
  }
}

TEST_F(SqliteStoreTest, FailingWriteInABatchDoesNotAffectTheOthers) {
  auto store = openStore();
  ASSERT_NE(store, nullptr);
  for (const char* id : {"blocker", "refused", "accepted"}) {
    ASSERT_TRUE(store->registry().createDevice(makeDevice(id), makeTwin(id)).isOk());
  }

  // Hold the writer inside a first write so the next two queue up and share a batch.
  std::latch entered(1);
  std::latch release(1);
  std::thread blocker([&] {
    auto result = store->registry().updateDevice("blocker", [&](const DeviceRecord& current) {
      entered.count_down();
      release.wait();
      return incrementMessageCount(current);
    });
    EXPECT_TRUE(result.isOk());
  });
  entered.wait();
  const SqliteStore::WriterStats before = store->stats();

  Result<DeviceRecord> refused = Status(ErrorCode::ServerError, "not run");
  Result<DeviceRecord> accepted = Status(ErrorCode::ServerError, "not run");
  std::thread refuse([&] {
    refused =
        store->registry().updateDevice("refused", [](const DeviceRecord&) -> Result<DeviceRecord> {
          return Status(ErrorCode::PreconditionFailed, "no");
        });
  });
  std::thread accept(
      [&] { accepted = store->registry().updateDevice("accepted", incrementMessageCount); });
  ASSERT_TRUE(waitFor([&] { return store->stats().queued_operations == 2; }));
  // Reads never wait for the writer, even while it is busy.
  EXPECT_EQ(store->registry().getDevice("accepted")->cloud_to_device_message_count, 0);

  release.count_down();
  blocker.join();
  refuse.join();
  accept.join();

  EXPECT_EQ(refused.code(), ErrorCode::PreconditionFailed);
  ASSERT_TRUE(accepted.isOk()) << accepted.status().toString();
  EXPECT_EQ(store->registry().getDevice("accepted")->cloud_to_device_message_count, 1);
  EXPECT_EQ(store->registry().getDevice("refused")->cloud_to_device_message_count, 0);
  const SqliteStore::WriterStats after = store->stats();
  EXPECT_EQ(after.transactions - before.transactions, 2u);  // the blocker's, then the pair's
  EXPECT_EQ(after.operations - before.operations, 3u);
}

TEST_F(SqliteStoreTest, PutDeviceJobsIsOneOperationInOneTransaction) {
  auto store = openStore();
  ASSERT_NE(store, nullptr);
  std::vector<DeviceJobRecord> rows(5000);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    rows[i].job_id = "job";
    rows[i].device_id = "device-" + std::to_string(i);
    rows[i].status = "pending";
  }
  const SqliteStore::WriterStats before = store->stats();
  ASSERT_TRUE(store->deviceJobs().putDeviceJobs(rows).isOk());
  const SqliteStore::WriterStats after = store->stats();
  EXPECT_EQ(after.operations - before.operations, 1u);
  EXPECT_EQ(after.transactions - before.transactions, 1u);
}

// --- the writer on its own ---

class SqliteWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    connection_ = openRaw(dir_.path() / "writer.db");
    ASSERT_NE(connection_, nullptr);
    ASSERT_TRUE(connection_
                    ->exec("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;"
                           "CREATE TABLE t (k INTEGER PRIMARY KEY);"
                           "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                           "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER"
                           "  REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);")
                    .isOk());
    writer_ = std::make_unique<SqliteWriter>(*connection_, 64);
  }

  void TearDown() override { writer_.reset(); }

  static SqliteWriter::Operation insert(const std::string& sql, Status outcome = Status::ok()) {
    return [sql, outcome](SqliteConnection& connection) {
      IOTHUB_RETURN_IF_ERROR(connection.exec(sql));
      return outcome;
    };
  }

  // Runs `operations` on separate threads while the writer is held busy, so all of them
  // land in one batch, queued in the order given; returns their results in that order.
  std::vector<Status> runInOneBatch(std::vector<SqliteWriter::Operation> operations) {
    std::latch entered(1);
    std::latch release(1);
    std::thread blocker([&] {
      Status held = writer_->submit([&](SqliteConnection&) {
        entered.count_down();
        release.wait();
        return Status::ok();
      });
      EXPECT_TRUE(held.isOk());
    });
    entered.wait();
    std::vector<Status> results(operations.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < operations.size(); ++i) {
      threads.emplace_back([&, i] { results[i] = writer_->submit(operations[i]); });
      // Threads started together may reach the queue in any order.
      EXPECT_TRUE(waitFor([&] { return writer_->stats().queued_operations == i + 1; }));
    }
    release.count_down();
    blocker.join();
    for (std::thread& thread : threads) thread.join();
    return results;
  }

  std::int64_t count(const std::string& sql) { return connection_->queryInt64(sql).value(); }

  TempDir dir_{"iothub-store"};
  std::unique_ptr<SqliteConnection> connection_;
  std::unique_ptr<SqliteWriter> writer_;
};

TEST_F(SqliteWriterTest, FailedOperationRollsBackOnlyItsOwnChanges) {
  std::vector<Status> results = runInOneBatch({
      insert("INSERT INTO t VALUES (1)"),
      insert("INSERT INTO t VALUES (2)", Status(ErrorCode::InvalidOperation, "changed my mind")),
      insert("INSERT INTO t VALUES (3)"),
      insert("INSERT INTO t VALUES (1)"),  // fails inside SQLite: duplicate key
  });
  EXPECT_TRUE(results[0].isOk()) << results[0].toString();
  EXPECT_EQ(results[1].code(), ErrorCode::InvalidOperation);
  EXPECT_TRUE(results[2].isOk()) << results[2].toString();
  EXPECT_EQ(results[3].code(), ErrorCode::ServerError);
  EXPECT_NE(results[3].message().find("UNIQUE"), std::string::npos) << results[3].message();
  writer_->shutdown();
  EXPECT_EQ(count("SELECT count(*) FROM t"), 2);
  EXPECT_EQ(count("SELECT count(*) FROM t WHERE k = 2"), 0);
  SqliteWriter::Stats stats = writer_->stats();
  EXPECT_EQ(stats.transactions, 2u);  // the blocker's, then the batch's
  EXPECT_EQ(stats.operations, 5u);
}

TEST_F(SqliteWriterTest, ThrowingOperationIsAnErrorOfItsOwn) {
  std::vector<Status> results = runInOneBatch({
      [](SqliteConnection& connection) -> Status {
        IOTHUB_RETURN_IF_ERROR(connection.exec("INSERT INTO t VALUES (1)"));
        throw std::runtime_error("boom");
      },
      insert("INSERT INTO t VALUES (2)"),
  });
  EXPECT_EQ(results[0].code(), ErrorCode::ServerError);
  EXPECT_NE(results[0].message().find("boom"), std::string::npos);
  EXPECT_TRUE(results[1].isOk());
  writer_->shutdown();
  EXPECT_EQ(count("SELECT count(*) FROM t"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM t WHERE k = 2"), 1);
}

TEST_F(SqliteWriterTest, FailedCommitFailsEveryOperationOfTheBatch) {
  std::vector<Status> results = runInOneBatch({
      insert("INSERT INTO t VALUES (1)"),
      // Deferred: the statement succeeds, the COMMIT fails.
      insert("INSERT INTO child VALUES (1, 42)"),
  });
  for (const Status& result : results) {
    EXPECT_EQ(result.code(), ErrorCode::ServerError);
    EXPECT_NE(result.message().find("commit failed"), std::string::npos) << result.message();
  }
  EXPECT_EQ(writer_->stats().failed_commits, 1u);
  // The writer recovers: the next batch commits.
  EXPECT_TRUE(writer_->submit(insert("INSERT INTO t VALUES (5)")).isOk());
  writer_->shutdown();
  EXPECT_EQ(count("SELECT count(*) FROM t"), 1);
  EXPECT_EQ(count("SELECT count(*) FROM child"), 0);
}

TEST_F(SqliteWriterTest, SubmitFromAnOperationIsAnErrorNotADeadlock) {
  Status inner;
  Status outer = writer_->submit([&](SqliteConnection&) {
    inner = writer_->submit(insert("INSERT INTO t VALUES (1)"));
    return inner;
  });
  EXPECT_EQ(inner.code(), ErrorCode::ServerError);
  EXPECT_EQ(outer.code(), ErrorCode::ServerError);
  EXPECT_TRUE(writer_->submit(insert("INSERT INTO t VALUES (2)")).isOk());
}

TEST_F(SqliteWriterTest, ShutdownFinishesQueuedOperationsThenCancelsNewOnes) {
  std::latch entered(1);
  std::latch release(1);
  std::thread blocker([&] {
    EXPECT_TRUE(writer_
                    ->submit([&](SqliteConnection&) {
                      entered.count_down();
                      release.wait();
                      return Status::ok();
                    })
                    .isOk());
  });
  entered.wait();
  Status queued_result = Status(ErrorCode::ServerError, "not run");
  std::thread queued([&] { queued_result = writer_->submit(insert("INSERT INTO t VALUES (7)")); });
  ASSERT_TRUE(waitFor([&] { return writer_->stats().queued_operations == 1; }));

  std::thread stopper([&] { writer_->shutdown(); });
  release.count_down();
  stopper.join();
  blocker.join();
  queued.join();

  EXPECT_TRUE(queued_result.isOk()) << queued_result.toString();
  Status late = writer_->submit(insert("INSERT INTO t VALUES (8)"));
  EXPECT_EQ(late.code(), ErrorCode::Cancelled);
  EXPECT_EQ(count("SELECT count(*) FROM t"), 1);
  writer_->shutdown();  // idempotent
}

}  // namespace
}  // namespace iothub::store
