// The storage conformance suite: every backend must pass the same tests. A backend joins
// by adding a StoreBackend to the INSTANTIATE_TEST_SUITE_P list at the bottom.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/json.hpp"
#include "common/status.hpp"
#include "store/postgresql/pg_store.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "store/store.hpp"
#include "tests/support/postgres_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::store {
namespace {

using std::chrono::nanoseconds;
using std::chrono::seconds;

// Where a backend keeps one test's data. open() may be called again after the previous
// store was destroyed and must then see the same data.
class StoreLocation {
 public:
  virtual ~StoreLocation() = default;
  virtual Result<std::unique_ptr<Store>> open() = 0;
};

struct StoreBackend {
  std::string name;
  std::function<std::unique_ptr<StoreLocation>()> make_location;
};

// What GoogleTest (and so ctest's test names) print for the parameter.
void PrintTo(const StoreBackend& backend, std::ostream* os) { *os << backend.name; }

class SqliteLocation final : public StoreLocation {
 public:
  Result<std::unique_ptr<Store>> open() override {
    auto store = SqliteStore::open(dir_.path() / "iothub.db", SqliteOptions{});
    if (!store) return store.status();
    return std::unique_ptr<Store>(std::move(store).value());
  }

 private:
  iothub::testing::TempDir dir_{"iothub-store"};
};

// A fresh PostgreSQL server per test (see tests/support/postgres_server.hpp), started on the
// first open().
class PostgresLocation final : public StoreLocation {
 public:
  Result<std::unique_ptr<Store>> open() override {
    if (!server_.running()) IOTHUB_RETURN_IF_ERROR(server_.start());
    auto store = PostgresStore::open(server_.conninfo(), PostgresOptions{});
    if (!store) return store.status();
    return std::unique_ptr<Store>(std::move(store).value());
  }

 private:
  iothub::testing::PostgresServer server_;
};

SystemTime at(std::int64_t unix_seconds, std::int64_t extra_nanoseconds = 0) {
  return SystemTime{std::chrono::duration_cast<SystemTime::duration>(
      seconds{unix_seconds} + nanoseconds{extra_nanoseconds})};
}

// A device with every field set to something other than its default, so a round trip
// that drops a field fails.
DeviceRecord makeDevice(const std::string& id) {
  DeviceRecord device;
  device.device_id = id;
  device.generation_id = "gen-" + id;
  device.etag = "etag-1";
  device.status = DeviceStatus::Enabled;
  device.status_reason = "provisioned";
  device.status_updated_time = at(1700000000, 123456789);
  device.auth_type = AuthType::SelfSigned;
  device.primary_key = "cHJpbWFyeQ==";
  device.secondary_key = "c2Vjb25kYXJ5";
  device.primary_thumbprint = "AA11";
  device.secondary_thumbprint = "BB22";
  device.iot_edge = true;
  device.device_scope = "ms-azure-iot-edge://edge-1";
  device.parent_scopes = {"ms-azure-iot-edge://parent-1", "ms-azure-iot-edge://parent-2"};
  device.connection_state_updated_time = at(1700000100, 1);
  device.last_activity_time = at(1700000200, 999999999);
  device.cloud_to_device_message_count = 7;
  return device;
}

TwinRecord makeTwin(const std::string& id) {
  TwinRecord twin;
  twin.device_id = id;
  twin.tags = json::parse(R"({"site":"north","floor":3,"labels":["a","b"]})").as_object();
  twin.desired =
      json::parse(R"({"telemetry":{"interval":30,"enabled":true},"$metadata":{}})").as_object();
  twin.reported = json::parse(R"({"firmware":"1.2.3","battery":null})").as_object();
  twin.version = 3;
  twin.desired_version = 2;
  twin.reported_version = 4;
  return twin;
}

JobRecord makeJob(const std::string& id, std::int64_t created,
                  const std::string& type = "scheduleUpdateTwin",
                  const std::string& status = "queued") {
  JobRecord job;
  job.job_id = id;
  job.type = type;
  job.status = status;
  job.created_time = at(created);
  job.start_time = at(created + 60, 5);
  job.document =
      json::parse(R"({"queryCondition":"tags.site = 'north'","maxExecutionTimeInSeconds":3600})")
          .as_object();
  return job;
}

DeviceJobRecord makeDeviceJob(const std::string& job_id, const std::string& device_id,
                              const std::string& status = "pending") {
  DeviceJobRecord row;
  row.job_id = job_id;
  row.device_id = device_id;
  row.status = status;
  row.last_updated_time = at(1700000300, 42);
  row.document = json::parse(R"({"type":"scheduleDeviceMethod"})").as_object();
  return row;
}

// "device-007" style ids: lexicographic order equals numeric order.
std::string numbered(const std::string& prefix, int n, int width = 3) {
  char digits[16];
  std::snprintf(digits, sizeof digits, "%0*d", width, n);
  return prefix + digits;
}

class StoreConformanceTest : public ::testing::TestWithParam<StoreBackend> {
 protected:
  void SetUp() override {
    location_ = GetParam().make_location();
    reopen();
  }

  void reopen() {
    store_.reset();
    auto store = location_->open();
    ASSERT_TRUE(store.isOk()) << store.status().toString();
    store_ = std::move(store).value();
  }

  RegistryStore& registry() { return store_->registry(); }
  TwinStore& twins() { return store_->twins(); }
  JobStore& jobs() { return store_->jobs(); }
  DeviceJobStore& deviceJobs() { return store_->deviceJobs(); }
  AccessPolicyStore& policies() { return store_->policies(); }

  void createDevice(const std::string& id) {
    Status created = registry().createDevice(makeDevice(id), makeTwin(id));
    ASSERT_TRUE(created.isOk()) << created.toString();
  }

  std::unique_ptr<StoreLocation> location_;
  std::unique_ptr<Store> store_;  // destroyed before location_
};

// --- registry ---

TEST_P(StoreConformanceTest, CreatedDeviceAndTwinReadBackUnchanged) {
  createDevice("device-1");
  auto device = registry().getDevice("device-1");
  ASSERT_TRUE(device.isOk()) << device.status().toString();
  EXPECT_EQ(*device, makeDevice("device-1"));
  auto twin = twins().getTwin("device-1");
  ASSERT_TRUE(twin.isOk()) << twin.status().toString();
  EXPECT_EQ(*twin, makeTwin("device-1"));
}

TEST_P(StoreConformanceTest, DeviceWithDefaultFieldsRoundTrips) {
  DeviceRecord device;
  device.device_id = "plain";
  TwinRecord twin;
  twin.device_id = "plain";
  ASSERT_TRUE(registry().createDevice(device, twin).isOk());
  EXPECT_EQ(registry().getDevice("plain").value(), device);
  EXPECT_EQ(twins().getTwin("plain").value(), twin);
}

TEST_P(StoreConformanceTest, CreatingAnExistingDeviceIsDeviceAlreadyExists) {
  createDevice("device-1");
  DeviceRecord other = makeDevice("device-1");
  other.etag = "other";
  Status again = registry().createDevice(other, makeTwin("device-1"));
  EXPECT_EQ(again.code(), ErrorCode::DeviceAlreadyExists);
  EXPECT_EQ(registry().getDevice("device-1")->etag, "etag-1");
}

TEST_P(StoreConformanceTest, UnknownDeviceIsDeviceNotFound) {
  EXPECT_EQ(registry().getDevice("nobody").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(twins().getTwin("nobody").code(), ErrorCode::DeviceNotFound);
  auto updated = registry().updateDevice(
      "nobody", [](const DeviceRecord& d) -> Result<DeviceRecord> { return d; });
  EXPECT_EQ(updated.code(), ErrorCode::DeviceNotFound);
  auto twin =
      twins().updateTwin("nobody", [](const TwinRecord& t) -> Result<TwinRecord> { return t; });
  EXPECT_EQ(twin.code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(registry().deleteDevice("nobody", nullptr).code(), ErrorCode::DeviceNotFound);
}

TEST_P(StoreConformanceTest, UpdateDeviceStoresAndReturnsTheMutation) {
  createDevice("device-1");
  auto updated = registry().updateDevice("device-1", [](const DeviceRecord& current) {
    DeviceRecord next = current;
    next.status = DeviceStatus::Disabled;
    next.status_reason.reset();
    next.etag = "etag-2";
    next.parent_scopes.clear();
    next.cloud_to_device_message_count += 1;
    return Result<DeviceRecord>(next);
  });
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(updated->etag, "etag-2");
  EXPECT_EQ(registry().getDevice("device-1").value(), *updated);
  EXPECT_EQ(updated->cloud_to_device_message_count, 8);
  EXPECT_FALSE(updated->status_reason.has_value());
}

TEST_P(StoreConformanceTest, MutationErrorIsReturnedAndNothingIsWritten) {
  createDevice("device-1");
  auto updated =
      registry().updateDevice("device-1", [](const DeviceRecord&) -> Result<DeviceRecord> {
        return Status(ErrorCode::PreconditionFailed, "etag mismatch");
      });
  EXPECT_EQ(updated.code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(updated.status().message(), "etag mismatch");
  EXPECT_EQ(registry().getDevice("device-1").value(), makeDevice("device-1"));
}

TEST_P(StoreConformanceTest, FailingMutationAbortsOnlyItsOwnWrite) {
  constexpr int kThreads = 6;
  constexpr int kWritesPerThread = 40;
  for (int t = 0; t < kThreads; ++t) createDevice(numbered("device-", t));

  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWritesPerThread; ++i) {
        // Odd writes fail; even writes increment the counter.
        bool fail = i % 2 == 1;
        auto result = registry().updateDevice(
            numbered("device-", t), [fail](const DeviceRecord& current) -> Result<DeviceRecord> {
              if (fail) return Status(ErrorCode::PreconditionFailed, "refused");
              DeviceRecord next = current;
              next.cloud_to_device_message_count += 1;
              return next;
            });
        ErrorCode expected = fail ? ErrorCode::PreconditionFailed : ErrorCode::Ok;
        if (result.code() != expected) ++unexpected;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(unexpected.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(registry().getDevice(numbered("device-", t))->cloud_to_device_message_count,
              7 + kWritesPerThread / 2);
  }
}

TEST_P(StoreConformanceTest, MutationMustNotChangeTheDeviceId) {
  createDevice("device-1");
  auto updated = registry().updateDevice("device-1", [](const DeviceRecord& current) {
    DeviceRecord next = current;
    next.device_id = "device-2";
    return Result<DeviceRecord>(next);
  });
  EXPECT_FALSE(updated.isOk());
  EXPECT_EQ(registry().getDevice("device-2").code(), ErrorCode::DeviceNotFound);
}

TEST_P(StoreConformanceTest, DeleteRemovesDeviceAndTwin) {
  createDevice("device-1");
  createDevice("device-2");
  Status deleted = registry().deleteDevice("device-1", nullptr);
  ASSERT_TRUE(deleted.isOk()) << deleted.toString();
  EXPECT_EQ(registry().getDevice("device-1").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(twins().getTwin("device-1").code(), ErrorCode::DeviceNotFound);
  EXPECT_TRUE(registry().getDevice("device-2").isOk());
  // The id is free again.
  createDevice("device-1");
}

TEST_P(StoreConformanceTest, DeletePreconditionSeesTheDeviceAndItsErrorKeepsIt) {
  createDevice("device-1");
  std::string seen_etag;
  Status deleted = registry().deleteDevice("device-1", [&](const DeviceRecord& current) {
    seen_etag = current.etag;
    return Status(ErrorCode::PreconditionFailed, "etag mismatch");
  });
  EXPECT_EQ(deleted.code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(seen_etag, "etag-1");
  EXPECT_TRUE(registry().getDevice("device-1").isOk());
  EXPECT_TRUE(twins().getTwin("device-1").isOk());

  deleted = registry().deleteDevice("device-1", [](const DeviceRecord&) { return Status::ok(); });
  EXPECT_TRUE(deleted.isOk()) << deleted.toString();
  EXPECT_EQ(registry().getDevice("device-1").code(), ErrorCode::DeviceNotFound);
}

DeviceWrite createWrite(const std::string& id) {
  DeviceWrite write;
  write.kind = DeviceWrite::Kind::Create;
  write.device_id = id;
  write.device = makeDevice(id);
  write.twin = makeTwin(id);
  return write;
}

DeviceWrite updateWrite(const std::string& id, DeviceMutation mutate) {
  DeviceWrite write;
  write.kind = DeviceWrite::Kind::Update;
  write.device_id = id;
  write.mutate = std::move(mutate);
  return write;
}

DeviceWrite deleteWrite(const std::string& id, DevicePrecondition precondition = nullptr) {
  DeviceWrite write;
  write.kind = DeviceWrite::Kind::Delete;
  write.device_id = id;
  write.precondition = std::move(precondition);
  return write;
}

// Operations (all kinds) the store's writer has run in transactions so far; nullopt for a
// backend without a group-commit writer.
std::optional<std::uint64_t> writerOperations(const Store& store) {
  auto metrics = store.writerMetrics();
  if (!metrics || metrics->batch_sizes == nullptr) return std::nullopt;
  auto snapshot = metrics->batch_sizes->snapshot();
  return static_cast<std::uint64_t>(snapshot.sum);
}

TEST_P(StoreConformanceTest, WriteDevicesAppliesEachWriteOnItsOwn) {
  for (const char* id :
       {"taken", "to-update", "kept-by-mutation", "kept-by-precondition", "to-delete"}) {
    createDevice(id);
  }
  ASSERT_TRUE(store_->mqttSessions().putSession({"to-delete", {{"$iothub/twin/res/#", 0}}}).isOk());
  auto bump = [](const DeviceRecord& current) -> Result<DeviceRecord> {
    DeviceRecord next = current;
    next.etag = "etag-2";
    next.status = DeviceStatus::Disabled;
    return next;
  };
  std::string seen_etag;
  std::vector<DeviceWrite> writes;
  writes.push_back(createWrite("new-1"));
  writes.push_back(createWrite("taken"));
  writes.push_back(updateWrite("to-update", bump));
  writes.push_back(updateWrite("missing", bump));
  writes.push_back(updateWrite("kept-by-mutation", [](const DeviceRecord&) -> Result<DeviceRecord> {
    return Status(ErrorCode::PreconditionFailed, "etag mismatch");
  }));
  writes.push_back(deleteWrite("kept-by-precondition", [&](const DeviceRecord& current) {
    seen_etag = current.etag;
    return Status(ErrorCode::PreconditionFailed, "etag mismatch");
  }));
  writes.push_back(deleteWrite("to-delete"));
  writes.push_back(deleteWrite("missing"));
  writes.push_back(createWrite("born-and-gone"));
  writes.push_back(deleteWrite("born-and-gone"));
  DeviceWrite wrong_twin = createWrite("wrong-twin");
  wrong_twin.twin.device_id = "someone-else";
  writes.push_back(std::move(wrong_twin));

  auto results = registry().writeDevices(writes);
  ASSERT_EQ(results.size(), writes.size());
  ASSERT_TRUE(results[0].isOk()) << results[0].status().toString();
  EXPECT_EQ(*results[0], makeDevice("new-1"));
  EXPECT_EQ(results[1].code(), ErrorCode::DeviceAlreadyExists);
  ASSERT_TRUE(results[2].isOk()) << results[2].status().toString();
  EXPECT_EQ(results[2]->etag, "etag-2");
  EXPECT_EQ(results[3].code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(results[4].code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(results[4].status().message(), "etag mismatch");
  EXPECT_EQ(results[5].code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(seen_etag, "etag-1");
  ASSERT_TRUE(results[6].isOk()) << results[6].status().toString();
  EXPECT_EQ(*results[6], makeDevice("to-delete")) << "a delete returns the device it removed";
  EXPECT_EQ(results[7].code(), ErrorCode::DeviceNotFound);
  EXPECT_TRUE(results[8].isOk()) << results[8].status().toString();
  EXPECT_TRUE(results[9].isOk()) << "a later write sees an earlier one of the batch";
  EXPECT_EQ(results[10].code(), ErrorCode::ArgumentInvalid);

  // What the store holds afterwards: the successes, and nothing of the refusals.
  EXPECT_EQ(registry().getDevice("new-1").value(), makeDevice("new-1"));
  EXPECT_EQ(twins().getTwin("new-1").value(), makeTwin("new-1"));
  EXPECT_EQ(registry().getDevice("taken").value(), makeDevice("taken"));
  EXPECT_EQ(registry().getDevice("to-update")->status, DeviceStatus::Disabled);
  EXPECT_EQ(registry().getDevice("kept-by-mutation").value(), makeDevice("kept-by-mutation"));
  EXPECT_EQ(registry().getDevice("kept-by-precondition").value(),
            makeDevice("kept-by-precondition"));
  EXPECT_EQ(registry().getDevice("to-delete").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(twins().getTwin("to-delete").code(), ErrorCode::DeviceNotFound);
  EXPECT_FALSE(store_->mqttSessions().getSession("to-delete")->has_value());
  EXPECT_EQ(registry().getDevice("missing").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(registry().getDevice("born-and-gone").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(registry().getDevice("wrong-twin").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(registry().deviceStatistics()->total, 5);
}

TEST_P(StoreConformanceTest, WriteDevicesIsOneWriteOfTheStore) {
  auto before = writerOperations(*store_);
  std::vector<DeviceWrite> writes;
  for (int i = 0; i < 100; ++i) writes.push_back(createWrite(numbered("bulk-", i)));
  auto results = registry().writeDevices(writes);
  ASSERT_EQ(results.size(), writes.size());
  for (const auto& result : results) EXPECT_TRUE(result.isOk()) << result.status().toString();
  auto after = writerOperations(*store_);
  if (before && after) {
    EXPECT_EQ(*after - *before, 1u) << "one group-commit entry for the batch";
  }

  auto listed = registry().listDevices("", 1000);
  ASSERT_TRUE(listed.isOk()) << listed.status().toString();
  ASSERT_EQ(listed->size(), 100u);
  EXPECT_EQ(listed->front(), makeDevice("bulk-000"));
  EXPECT_EQ(twins().getTwin("bulk-099").value(), makeTwin("bulk-099"));
  EXPECT_TRUE(registry().writeDevices({}).empty());

  // Survives a restart like any other committed write.
  reopen();
  EXPECT_EQ(registry().deviceStatistics()->total, 100);
}

TEST_P(StoreConformanceTest, WriteDevicesCreatesRoundTripEveryField) {
  DeviceWrite plain;
  plain.kind = DeviceWrite::Kind::Create;
  plain.device_id = "plain";
  plain.device.device_id = "plain";
  plain.twin.device_id = "plain";
  DeviceWrite odd = createWrite("odd");
  odd.device.status_reason = "quote \" backslash \\ comma , brace } NULL";
  odd.device.device_scope = "NULL";
  odd.device.parent_scopes = {"a\"b", "c,d"};
  odd.twin.tags = json::parse(R"({"s":"x\"y\\z","n":null})").as_object();
  std::vector<DeviceWrite> writes{plain, odd, createWrite("full")};
  auto results = registry().writeDevices(writes);
  ASSERT_EQ(results.size(), 3u);
  for (const auto& result : results) ASSERT_TRUE(result.isOk()) << result.status().toString();
  for (const DeviceWrite& write : writes) {
    EXPECT_EQ(registry().getDevice(write.device_id).value(), write.device) << write.device_id;
    EXPECT_EQ(twins().getTwin(write.device_id).value(), write.twin) << write.device_id;
  }
}

TEST_P(StoreConformanceTest, ConcurrentWriteDevicesCreateEachIdOnce) {
  constexpr int kThreads = 4;
  std::atomic<int> created{0};
  std::atomic<int> already{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<DeviceWrite> writes;
      for (int i = 0; i < 50; ++i) writes.push_back(createWrite(numbered("race-", i)));
      for (const auto& result : registry().writeDevices(writes)) {
        if (result.isOk()) {
          ++created;
        } else if (result.code() == ErrorCode::DeviceAlreadyExists) {
          ++already;
        } else {
          ++unexpected;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(unexpected.load(), 0);
  EXPECT_EQ(created.load(), 50);
  EXPECT_EQ(already.load(), 50 * (kThreads - 1));
  EXPECT_EQ(registry().deviceStatistics()->total, 50);
}

TEST_P(StoreConformanceTest, ListDevicesPagesByIdWithoutRepeatsOrSkips) {
  constexpr int kDevices = 57;
  // Created in a scrambled order: paging must follow ids, not insertion.
  for (int i = 0; i < kDevices; ++i) createDevice(numbered("device-", (i * 17) % kDevices));

  std::vector<std::string> seen;
  std::string after;
  while (true) {
    auto page = registry().listDevices(after, 10);
    ASSERT_TRUE(page.isOk()) << page.status().toString();
    ASSERT_LE(page->size(), 10u);
    if (page->empty()) break;
    for (const DeviceRecord& device : *page) seen.push_back(device.device_id);
    after = page->back().device_id;
  }
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(kDevices));
  for (int i = 0; i < kDevices; ++i) EXPECT_EQ(seen[i], numbered("device-", i));
  EXPECT_EQ(registry().listDevices("", 0)->size(), 0u);
  EXPECT_EQ(registry().listDevices("device-055", 10)->size(), 1u);
  EXPECT_EQ(registry().listDevices("zzz", 10)->size(), 0u);
  EXPECT_EQ(registry().listDevices("device-010", 1)->front(), makeDevice("device-011"));
}

TEST_P(StoreConformanceTest, DeviceStatisticsCountsByStatus) {
  auto empty = registry().deviceStatistics();
  ASSERT_TRUE(empty.isOk());
  EXPECT_EQ(empty->total, 0);
  EXPECT_EQ(empty->enabled, 0);
  EXPECT_EQ(empty->disabled, 0);

  for (int i = 0; i < 5; ++i) createDevice(numbered("device-", i));
  for (int i = 0; i < 2; ++i) {
    auto updated = registry().updateDevice(numbered("device-", i), [](const DeviceRecord& d) {
      DeviceRecord next = d;
      next.status = DeviceStatus::Disabled;
      return Result<DeviceRecord>(next);
    });
    ASSERT_TRUE(updated.isOk());
  }
  auto statistics = registry().deviceStatistics();
  ASSERT_TRUE(statistics.isOk());
  EXPECT_EQ(statistics->total, 5);
  EXPECT_EQ(statistics->enabled, 3);
  EXPECT_EQ(statistics->disabled, 2);
}

TEST_P(StoreConformanceTest, ConcurrentUpdatesOfOneDeviceAreAllApplied) {
  constexpr int kThreads = 8;
  constexpr int kUpdatesPerThread = 250;
  createDevice("shared");
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kUpdatesPerThread; ++i) {
        auto updated = registry().updateDevice("shared", [](const DeviceRecord& current) {
          DeviceRecord next = current;
          next.cloud_to_device_message_count += 1;
          return Result<DeviceRecord>(next);
        });
        if (!updated.isOk()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(registry().getDevice("shared")->cloud_to_device_message_count,
            7 + kThreads * kUpdatesPerThread);
}

// --- twins ---

TEST_P(StoreConformanceTest, UpdateTwinStoresAndReturnsTheMutation) {
  createDevice("device-1");
  auto updated = twins().updateTwin("device-1", [](const TwinRecord& current) {
    TwinRecord next = current;
    next.desired["telemetry"].as_object()["interval"] = 60;
    next.tags.erase("floor");
    next.version += 1;
    next.desired_version += 1;
    return Result<TwinRecord>(next);
  });
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(updated->version, 4);
  EXPECT_EQ(updated->desired_version, 3);
  auto stored = twins().getTwin("device-1");
  ASSERT_TRUE(stored.isOk());
  EXPECT_EQ(*stored, *updated);
  EXPECT_EQ(stored->desired.at("telemetry").at("interval").as_int64(), 60);
  EXPECT_EQ(stored->tags.count("floor"), 0u);
  // The device itself is untouched.
  EXPECT_EQ(registry().getDevice("device-1").value(), makeDevice("device-1"));
}

// json::object equality ignores key order; documents read back must keep it (a twin's
// JSON shows its keys in the order they were written).
TEST_P(StoreConformanceTest, JsonDocumentsKeepTheirKeyOrder) {
  const std::string text = R"({"zeta":1,"alpha":{"y":2,"b":[3,"x"]},"mid":null,"A":-1})";
  TwinRecord twin = makeTwin("device-1");
  twin.tags = json::parse(text).as_object();
  twin.desired = json::parse(text).as_object();
  twin.reported = json::parse(text).as_object();
  ASSERT_TRUE(registry().createDevice(makeDevice("device-1"), twin).isOk());
  JobRecord job = makeJob("job-1", 1700000000);
  job.document = json::parse(text).as_object();
  ASSERT_TRUE(jobs().createJob(job).isOk());
  DeviceJobRecord row = makeDeviceJob("job-1", "device-1");
  row.document = json::parse(text).as_object();
  ASSERT_TRUE(deviceJobs().putDeviceJobs({row}).isOk());

  auto stored = twins().getTwin("device-1");
  ASSERT_TRUE(stored.isOk()) << stored.status().toString();
  EXPECT_EQ(json::serialize(stored->tags), text);
  EXPECT_EQ(json::serialize(stored->desired), text);
  EXPECT_EQ(json::serialize(stored->reported), text);
  EXPECT_EQ(json::serialize(jobs().getJob("job-1")->document), text);
  EXPECT_EQ(json::serialize(deviceJobs().listAllDeviceJobs("", "", 1)->front().document), text);
}

TEST_P(StoreConformanceTest, TwinMutationErrorKeepsTheTwin) {
  createDevice("device-1");
  auto updated = twins().updateTwin("device-1", [](const TwinRecord&) -> Result<TwinRecord> {
    return Status(ErrorCode::PreconditionFailed, "stale etag");
  });
  EXPECT_EQ(updated.code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(twins().getTwin("device-1").value(), makeTwin("device-1"));
}

TEST_P(StoreConformanceTest, ListTwinsPagesByDeviceId) {
  constexpr int kDevices = 23;
  for (int i = kDevices - 1; i >= 0; --i) createDevice(numbered("device-", i));
  std::vector<TwinRecord> seen;
  std::string after;
  while (true) {
    auto page = twins().listTwins(after, 5);
    ASSERT_TRUE(page.isOk()) << page.status().toString();
    if (page->empty()) break;
    seen.insert(seen.end(), page->begin(), page->end());
    after = page->back().device_id;
  }
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(kDevices));
  for (int i = 0; i < kDevices; ++i) EXPECT_EQ(seen[i], makeTwin(numbered("device-", i)));
}

// --- jobs ---

TEST_P(StoreConformanceTest, CreatedJobReadsBackUnchanged) {
  JobRecord job = makeJob("job-1", 1700000000);
  ASSERT_TRUE(jobs().createJob(job).isOk());
  EXPECT_EQ(jobs().getJob("job-1").value(), job);

  JobRecord finished = makeJob("job-2", 1700000001, "scheduleDeviceMethod", "completed");
  finished.end_time = at(1700000500, 7);
  ASSERT_TRUE(jobs().createJob(finished).isOk());
  EXPECT_EQ(jobs().getJob("job-2").value(), finished);
}

TEST_P(StoreConformanceTest, DuplicateJobIsJobAlreadyExists) {
  ASSERT_TRUE(
      jobs().createJob(makeJob("job-1", 1700000000, "scheduleUpdateTwin", "completed")).isOk());
  EXPECT_EQ(jobs().createJob(makeJob("job-1", 1700000005)).code(), ErrorCode::JobAlreadyExists);
  EXPECT_EQ(jobs().getJob("job-1")->status, "completed");
}

TEST_P(StoreConformanceTest, UnknownJobIsJobNotFound) {
  EXPECT_EQ(jobs().getJob("nope").code(), ErrorCode::JobNotFound);
  auto updated =
      jobs().updateJob("nope", [](const JobRecord& j) -> Result<JobRecord> { return j; });
  EXPECT_EQ(updated.code(), ErrorCode::JobNotFound);
  EXPECT_EQ(jobs().listJobs({}, "nope", 10).code(), ErrorCode::JobNotFound);
}

TEST_P(StoreConformanceTest, UpdateJobStoresTheMutationAndItsErrorKeepsTheJob) {
  ASSERT_TRUE(jobs().createJob(makeJob("job-1", 1700000000)).isOk());
  auto updated = jobs().updateJob("job-1", [](const JobRecord& current) {
    JobRecord next = current;
    next.status = "completed";
    next.end_time = at(1700000900);
    next.document["statistics"] = json::object{{"succeeded", 10}};
    return Result<JobRecord>(next);
  });
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(jobs().getJob("job-1").value(), *updated);

  auto refused = jobs().updateJob("job-1", [](const JobRecord&) -> Result<JobRecord> {
    return Status(ErrorCode::InvalidOperation, "already finished");
  });
  EXPECT_EQ(refused.code(), ErrorCode::InvalidOperation);
  EXPECT_EQ(jobs().getJob("job-1").value(), *updated);
}

TEST_P(StoreConformanceTest, ListJobsOrdersByCreatedTimeThenIdAndPages) {
  // Two jobs share a creation time to exercise the id tie-break.
  ASSERT_TRUE(jobs().createJob(makeJob("job-c", 300)).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("job-a", 100)).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("job-e", 200)).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("job-b", 200)).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("job-d", 400)).isOk());
  const std::vector<std::string> expected = {"job-a", "job-b", "job-e", "job-c", "job-d"};

  std::vector<std::string> seen;
  std::string after;
  while (true) {
    auto page = jobs().listJobs({}, after, 2);
    ASSERT_TRUE(page.isOk()) << page.status().toString();
    if (page->empty()) break;
    for (const JobRecord& job : *page) seen.push_back(job.job_id);
    after = page->back().job_id;
  }
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(jobs().listJobs({}, "", 100)->size(), 5u);
}

TEST_P(StoreConformanceTest, ListJobsFiltersByTypeAndStatus) {
  ASSERT_TRUE(jobs().createJob(makeJob("m-queued", 1, "scheduleDeviceMethod", "queued")).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("m-running", 2, "scheduleDeviceMethod", "running")).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("t-queued", 3, "scheduleUpdateTwin", "queued")).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("t-running", 4, "scheduleUpdateTwin", "running")).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("m-queued-2", 5, "scheduleDeviceMethod", "queued")).isOk());

  auto ids = [](const Result<std::vector<JobRecord>>& jobs) {
    std::vector<std::string> out;
    if (jobs.isOk()) {
      for (const JobRecord& job : *jobs) out.push_back(job.job_id);
    }
    return out;
  };
  JobFilter methods{.type = "scheduleDeviceMethod", .status = std::nullopt};
  EXPECT_EQ(ids(jobs().listJobs(methods, "", 10)),
            (std::vector<std::string>{"m-queued", "m-running", "m-queued-2"}));
  JobFilter queued{.type = std::nullopt, .status = "queued"};
  EXPECT_EQ(ids(jobs().listJobs(queued, "", 10)),
            (std::vector<std::string>{"m-queued", "t-queued", "m-queued-2"}));
  JobFilter queued_methods{.type = "scheduleDeviceMethod", .status = "queued"};
  EXPECT_EQ(ids(jobs().listJobs(queued_methods, "", 10)),
            (std::vector<std::string>{"m-queued", "m-queued-2"}));
  // Paging combines with the filters; the page start may be a job the filter excludes.
  EXPECT_EQ(ids(jobs().listJobs(queued_methods, "m-queued", 10)),
            (std::vector<std::string>{"m-queued-2"}));
  EXPECT_EQ(ids(jobs().listJobs(queued, "m-running", 1)), (std::vector<std::string>{"t-queued"}));
  EXPECT_EQ(ids(jobs().listJobs(JobFilter{.type = "none", .status = std::nullopt}, "", 10)),
            std::vector<std::string>{});
}

TEST_P(StoreConformanceTest, JobsWithStatusReturnsEveryJobInOneOfTheStatuses) {
  ASSERT_TRUE(jobs().createJob(makeJob("a", 1, "scheduleDeviceMethod", "queued")).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("b", 2, "scheduleDeviceMethod", "running")).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("c", 3, "scheduleDeviceMethod", "completed")).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("d", 4, "scheduleDeviceMethod", "cancelled")).isOk());
  ASSERT_TRUE(jobs().createJob(makeJob("e", 5, "scheduleDeviceMethod", "queued")).isOk());

  auto active = jobs().jobsWithStatus({"queued", "running"});
  ASSERT_TRUE(active.isOk()) << active.status().toString();
  std::vector<std::string> ids;
  for (const JobRecord& job : *active) ids.push_back(job.job_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "e"}));
  EXPECT_EQ(active->front(), makeJob("a", 1, "scheduleDeviceMethod", "queued"));
  EXPECT_TRUE(jobs().jobsWithStatus({})->empty());
  EXPECT_TRUE(jobs().jobsWithStatus({"failed"})->empty());
}

// --- job leases ---

// A job whose start time is `start` (unix seconds), created a minute before.
JobRecord jobStartingAt(const std::string& id, std::int64_t start,
                        const std::string& status = "queued") {
  JobRecord job = makeJob(id, start - 60, "scheduleDeviceMethod", status);
  job.start_time = at(start);
  return job;
}

std::vector<std::string> claimedIds(const Result<std::vector<ClaimedJob>>& claimed) {
  std::vector<std::string> ids;
  if (claimed.isOk()) {
    for (const ClaimedJob& claim : *claimed) ids.push_back(claim.job.job_id);
  }
  return ids;
}

TEST_P(StoreConformanceTest, ClaimsTakeDueJobsNobodyHoldsUnderANewEpoch) {
  ASSERT_TRUE(jobs().createJob(jobStartingAt("due-later", 2000)).isOk());
  ASSERT_TRUE(jobs().createJob(jobStartingAt("due", 1000)).isOk());
  ASSERT_TRUE(jobs().createJob(jobStartingAt("running", 1500, "running")).isOk());
  ASSERT_TRUE(jobs().createJob(jobStartingAt("future", 9000, "scheduled")).isOk());
  ASSERT_TRUE(jobs().createJob(jobStartingAt("done", 500, "completed")).isOk());
  ASSERT_TRUE(jobs().createJob(jobStartingAt("cancel-me", 9500, "scheduled")).isOk());
  ASSERT_TRUE(jobs().requestJobCancel("cancel-me").isOk());

  auto claimed = jobs().claimJobs("node-a", at(2000), seconds(60), 10);
  ASSERT_TRUE(claimed.isOk()) << claimed.status().toString();
  // Due by start time, running, or asked to cancel; running first (its owner died), then in
  // start-time order.
  EXPECT_EQ(claimedIds(claimed),
            (std::vector<std::string>{"running", "due", "due-later", "cancel-me"}));
  for (const ClaimedJob& claim : *claimed) {
    EXPECT_EQ(claim.lease.job_id, claim.job.job_id);
    EXPECT_EQ(claim.lease.epoch, 1);
    EXPECT_EQ(claim.cancel_requested, claim.job.job_id == "cancel-me");
  }
  EXPECT_EQ(claimed->at(1).job, jobStartingAt("due", 1000)) << "the record as stored";

  // Held jobs are nobody else's; a job becomes due when the claimer's clock passes its start.
  EXPECT_TRUE(claimedIds(jobs().claimJobs("node-b", at(2000), seconds(60), 10)).empty());
  EXPECT_EQ(claimedIds(jobs().claimJobs("node-b", at(9000), seconds(60), 10)),
            std::vector<std::string>{"future"});
  EXPECT_TRUE(jobs().claimJobs("node-c", at(99999), seconds(60), 10)->empty());
}

TEST_P(StoreConformanceTest, ClaimsTakeHigherPriorityJobsFirst) {
  auto prioritized = [](const std::string& id, std::int64_t start, int priority) {
    JobRecord job = jobStartingAt(id, start);
    if (priority >= 0) job.document["priority"] = priority;
    return job;
  };
  ASSERT_TRUE(jobs().createJob(prioritized("early-default", 1000, -1)).isOk());
  ASSERT_TRUE(jobs().createJob(prioritized("early-zero", 1001, 0)).isOk());
  ASSERT_TRUE(jobs().createJob(prioritized("late-urgent", 3000, 9)).isOk());
  ASSERT_TRUE(jobs().createJob(prioritized("mid-high", 2000, 5)).isOk());
  ASSERT_TRUE(jobs().createJob(prioritized("late-high", 2500, 5)).isOk());
  ASSERT_TRUE(jobs().createJob(prioritized("last-default", 4000, -1)).isOk());
  ASSERT_TRUE(jobs().createJob(jobStartingAt("orphan", 4000, "running")).isOk());
  // Running jobs first, then by priority, then by start time; the limit takes from the top.
  EXPECT_EQ(claimedIds(jobs().claimJobs("a", at(5000), seconds(60), 3)),
            (std::vector<std::string>{"orphan", "late-urgent", "mid-high"}));
  EXPECT_EQ(claimedIds(jobs().claimJobs("b", at(5000), seconds(60), 10)),
            (std::vector<std::string>{"late-high", "early-default", "early-zero", "last-default"}));
  EXPECT_EQ(jobStartingAt("x", 1).priority(), 0);
  EXPECT_EQ(prioritized("x", 1, 7).priority(), 7);
}

TEST_P(StoreConformanceTest, ClaimsTakeAtMostTheirLimit) {
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(jobs().createJob(jobStartingAt(numbered("job-", i), 1000 + i)).isOk());
  }
  EXPECT_EQ(claimedIds(jobs().claimJobs("a", at(5000), seconds(60), 2)),
            (std::vector<std::string>{"job-000", "job-001"}));
  EXPECT_EQ(claimedIds(jobs().claimJobs("b", at(5000), seconds(60), 2)),
            (std::vector<std::string>{"job-002", "job-003"}));
  EXPECT_EQ(claimedIds(jobs().claimJobs("c", at(5000), seconds(60), 2)),
            std::vector<std::string>{"job-004"});
}

TEST_P(StoreConformanceTest, AnExpiredLeaseIsClaimedAgainAndFencesOutItsOldOwner) {
  createDevice("device-1");
  ASSERT_TRUE(jobs().createJob(jobStartingAt("job", 1000, "running")).isOk());
  ASSERT_TRUE(deviceJobs().putDeviceJobs({makeDeviceJob("job", "device-1")}).isOk());
  // A lease of no time at all has ended by the next call.
  auto first = jobs().claimJobs("node-a", at(1000), std::chrono::milliseconds(0), 10);
  ASSERT_EQ(claimedIds(first), std::vector<std::string>{"job"});
  JobLease stale = first->front().lease;
  auto second = jobs().claimJobs("node-b", at(1000), seconds(60), 10);
  ASSERT_EQ(claimedIds(second), std::vector<std::string>{"job"});
  EXPECT_GT(second->front().lease.epoch, stale.epoch);

  // Every write under the old lease fails and changes nothing.
  const JobRecord before = jobs().getJob("job").value();
  const TwinRecord twin_before = twins().getTwin("device-1").value();
  auto updated = jobs().updateLeasedJob(stale, [](const JobRecord& current) {
    JobRecord next = current;
    next.status = "completed";
    return Result<JobRecord>(next);
  });
  EXPECT_EQ(updated.code(), ErrorCode::JobLeaseLost);
  EXPECT_EQ(jobs().getJob("job").value(), before);
  EXPECT_EQ(jobs()
                .putLeasedDeviceJobs(stale, {makeDeviceJob("job", "device-1", "completed"),
                                             makeDeviceJob("job", "device-2", "failed")})
                .code(),
            ErrorCode::JobLeaseLost);
  EXPECT_EQ(deviceJobs().listDeviceJobs("job", std::nullopt, "", 10).value(),
            std::vector<DeviceJobRecord>{makeDeviceJob("job", "device-1")});
  auto twin = twins().updateTwinForJob(
      "device-1",
      [](const TwinRecord& current) {
        TwinRecord next = current;
        next.tags["applied"] = true;
        ++next.version;
        return Result<TwinRecord>(next);
      },
      DeviceJobWrite{makeDeviceJob("job", "device-1", "completed"), stale});
  EXPECT_EQ(twin.code(), ErrorCode::JobLeaseLost);
  EXPECT_EQ(twins().getTwin("device-1").value(), twin_before);
  EXPECT_EQ(deviceJobs().listDeviceJobs("job", std::nullopt, "", 10).value(),
            std::vector<DeviceJobRecord>{makeDeviceJob("job", "device-1")});
  auto renewed = jobs().renewJobLeases({stale}, seconds(60));
  ASSERT_TRUE(renewed.isOk()) << renewed.status().toString();
  ASSERT_EQ(renewed->size(), 1u);
  EXPECT_FALSE(renewed->front().held);
  // Releasing the old lease does not end the new one.
  ASSERT_TRUE(jobs().releaseJobLease(stale).isOk());
  EXPECT_TRUE(jobs().claimJobs("node-c", at(1000), seconds(60), 10)->empty());
}

TEST_P(StoreConformanceTest, TheHolderWritesRenewsAndReleasesItsLease) {
  ASSERT_TRUE(jobs().createJob(jobStartingAt("job", 1000)).isOk());
  auto claimed = jobs().claimJobs("node-a", at(1000), seconds(60), 10);
  ASSERT_EQ(claimedIds(claimed), std::vector<std::string>{"job"});
  const JobLease lease = claimed->front().lease;

  auto updated = jobs().updateLeasedJob(lease, [](const JobRecord& current) {
    JobRecord next = current;
    next.status = "running";
    return Result<JobRecord>(next);
  });
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(jobs().getJob("job").value(), *updated);
  EXPECT_EQ(jobs()
                .updateLeasedJob(lease,
                                 [](const JobRecord&) -> Result<JobRecord> {
                                   return Status(ErrorCode::InvalidOperation, "refused");
                                 })
                .code(),
            ErrorCode::InvalidOperation);
  EXPECT_EQ(jobs()
                .updateLeasedJob(JobLease{"nope", 1},
                                 [](const JobRecord& j) { return Result<JobRecord>(j); })
                .code(),
            ErrorCode::JobNotFound);
  ASSERT_TRUE(jobs()
                  .putLeasedDeviceJobs(lease, {makeDeviceJob("job", "device-1", "running"),
                                               makeDeviceJob("job", "device-2")})
                  .isOk());
  EXPECT_EQ(deviceJobs().listDeviceJobs("job", std::nullopt, "", 10)->size(), 2u);
  EXPECT_EQ(jobs().putLeasedDeviceJobs(lease, {makeDeviceJob("other", "device-1")}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(deviceJobs().listDeviceJobs("other", std::nullopt, "", 10)->empty());

  // A renewal reports a cancel asked for through any node.
  auto renewed = jobs().renewJobLeases({lease, JobLease{"nope", 1}}, seconds(60));
  ASSERT_TRUE(renewed.isOk()) << renewed.status().toString();
  ASSERT_EQ(renewed->size(), 2u);
  EXPECT_TRUE((*renewed)[0].held);
  EXPECT_FALSE((*renewed)[0].cancel_requested);
  EXPECT_FALSE((*renewed)[1].held);
  ASSERT_TRUE(jobs().requestJobCancel("job").isOk());
  EXPECT_EQ(jobs().requestJobCancel("nope").code(), ErrorCode::JobNotFound);
  renewed = jobs().renewJobLeases({lease}, seconds(60));
  ASSERT_TRUE(renewed.isOk());
  EXPECT_TRUE(renewed->front().held);
  EXPECT_TRUE(renewed->front().cancel_requested);
  EXPECT_EQ(jobs().getJob("job").value(), *updated) << "the request is not in the record";

  // Released: the next claim takes it at once, with the request.
  ASSERT_TRUE(jobs().releaseJobLease(lease).isOk());
  auto next = jobs().claimJobs("node-b", at(1000), seconds(60), 10);
  ASSERT_EQ(claimedIds(next), std::vector<std::string>{"job"});
  EXPECT_EQ(next->front().lease.epoch, lease.epoch + 1);
  EXPECT_TRUE(next->front().cancel_requested);
  EXPECT_EQ(jobs().putLeasedDeviceJobs(lease, {makeDeviceJob("job", "device-3")}).code(),
            ErrorCode::JobLeaseLost);
}

TEST_P(StoreConformanceTest, AnOwnersLeasesEndTogetherWhenItStartsAgain) {
  ASSERT_TRUE(jobs().createJob(jobStartingAt("a-1", 1000)).isOk());
  ASSERT_TRUE(jobs().createJob(jobStartingAt("a-2", 1001, "running")).isOk());
  ASSERT_TRUE(jobs().createJob(jobStartingAt("b-1", 1002)).isOk());
  ASSERT_EQ(jobs().claimJobs("node-a", at(5000), seconds(60), 2)->size(), 2u);
  auto theirs = jobs().claimJobs("node-b", at(5000), seconds(60), 10);
  ASSERT_EQ(claimedIds(theirs), std::vector<std::string>{"b-1"});

  auto released = jobs().releaseJobLeasesOf("node-a");
  ASSERT_TRUE(released.isOk()) << released.status().toString();
  EXPECT_EQ(*released, 2u);
  auto again = jobs().claimJobs("node-a", at(5000), seconds(60), 10);
  EXPECT_EQ(claimedIds(again), (std::vector<std::string>{"a-2", "a-1"}));  // running first
  for (const ClaimedJob& claim : *again) EXPECT_EQ(claim.lease.epoch, 2);
  // Other owners' leases are untouched.
  EXPECT_TRUE(jobs().renewJobLeases({theirs->front().lease}, seconds(60))->front().held);
  EXPECT_EQ(*jobs().releaseJobLeasesOf("nobody"), 0u);
}

TEST_P(StoreConformanceTest, ACancelRequestLeavesFinishedJobsAlone) {
  ASSERT_TRUE(jobs().createJob(jobStartingAt("done", 1000, "completed")).isOk());
  ASSERT_TRUE(jobs().requestJobCancel("done").isOk());
  EXPECT_TRUE(jobs().claimJobs("node-a", at(99999), seconds(60), 10)->empty());
  EXPECT_EQ(jobs().getJob("done").value(), jobStartingAt("done", 1000, "completed"));
}

TEST_P(StoreConformanceTest, ATwinUpdateAndItsJobRowCommitTogether) {
  createDevice("device-1");
  createDevice("device-2");
  auto tag = [](const std::string& value) {
    return [value](const TwinRecord& current) {
      TwinRecord next = current;
      next.tags["job"] = value;
      ++next.version;
      return Result<TwinRecord>(next);
    };
  };
  // Without a lease (a single node).
  DeviceJobRecord done = makeDeviceJob("job-1", "device-1", "completed");
  auto updated = twins().updateTwinForJob("device-1", tag("one"), DeviceJobWrite{done, {}});
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(twins().getTwin("device-1").value(), *updated);
  EXPECT_EQ(updated->tags.at("job"), "one");
  EXPECT_EQ(deviceJobs().listDeviceJobs("job-1", std::nullopt, "", 10).value(),
            std::vector<DeviceJobRecord>{done});

  // A failing mutation writes neither.
  auto refused = twins().updateTwinForJob(
      "device-2",
      [](const TwinRecord&) -> Result<TwinRecord> {
        return Status(ErrorCode::PreconditionFailed, "etag mismatch");
      },
      DeviceJobWrite{makeDeviceJob("job-1", "device-2", "completed"), {}});
  EXPECT_EQ(refused.code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(twins().getTwin("device-2").value(), makeTwin("device-2"));
  EXPECT_EQ(deviceJobs().listDeviceJobs("job-1", std::nullopt, "", 10)->size(), 1u);
  EXPECT_EQ(twins()
                .updateTwinForJob("nope", tag("x"),
                                  DeviceJobWrite{makeDeviceJob("job-1", "nope", "completed"), {}})
                .code(),
            ErrorCode::DeviceNotFound);
  EXPECT_EQ(deviceJobs().listDeviceJobs("job-1", std::nullopt, "", 10)->size(), 1u);

  // Under a lease that is held.
  ASSERT_TRUE(jobs().createJob(jobStartingAt("job-2", 1000, "running")).isOk());
  auto claimed = jobs().claimJobs("node-a", at(1000), seconds(60), 10);
  ASSERT_EQ(claimedIds(claimed), std::vector<std::string>{"job-2"});
  DeviceJobRecord leased_done = makeDeviceJob("job-2", "device-2", "completed");
  updated = twins().updateTwinForJob("device-2", tag("two"),
                                     DeviceJobWrite{leased_done, claimed->front().lease});
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(twins().getTwin("device-2")->tags.at("job"), "two");
  EXPECT_EQ(deviceJobs().listDeviceJobs("job-2", std::nullopt, "", 10).value(),
            std::vector<DeviceJobRecord>{leased_done});
}

TEST_P(StoreConformanceTest, ABatchOfJobTwinUpdatesRefusesOnlyItsOwnFailures) {
  for (const char* id : {"device-1", "device-2", "device-3"}) createDevice(id);
  auto tag = [](const std::string& value) -> TwinMutation {
    return [value](const TwinRecord& current) {
      TwinRecord next = current;
      next.tags["job"] = value;
      ++next.version;
      return Result<TwinRecord>(next);
    };
  };
  TwinMutation refuse = [](const TwinRecord&) -> Result<TwinRecord> {
    return Status(ErrorCode::PreconditionFailed, "etag mismatch");
  };
  ASSERT_TRUE(jobs().createJob(jobStartingAt("job-2", 1000, "running")).isOk());
  auto claimed = jobs().claimJobs("node-a", at(1000), seconds(60), 10);
  ASSERT_EQ(claimedIds(claimed), std::vector<std::string>{"job-2"});
  JobLease stale = claimed->front().lease;
  ++stale.epoch;
  std::vector<TwinJobUpdate> batch{
      {"device-1", tag("one"), DeviceJobWrite{makeDeviceJob("job-1", "device-1", "completed"), {}}},
      {"device-2", refuse, DeviceJobWrite{makeDeviceJob("job-1", "device-2", "completed"), {}}},
      {"nope", tag("x"), DeviceJobWrite{makeDeviceJob("job-1", "nope", "completed"), {}}},
      {"device-3", tag("three"),
       DeviceJobWrite{makeDeviceJob("job-1", "device-3", "completed"), {}}},
      {"device-2", tag("leased"),
       DeviceJobWrite{makeDeviceJob("job-2", "device-2", "completed"), claimed->front().lease}},
      {"device-1", tag("stale"),
       DeviceJobWrite{makeDeviceJob("job-2", "device-1", "completed"), stale}}};
  auto results = twins().updateTwinsForJob(batch);
  ASSERT_EQ(results.size(), batch.size());
  ASSERT_TRUE(results[0].isOk()) << results[0].status().toString();
  EXPECT_EQ(results[0]->tags.at("job"), "one");
  EXPECT_EQ(results[1].code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(results[2].code(), ErrorCode::DeviceNotFound);
  ASSERT_TRUE(results[3].isOk()) << results[3].status().toString();
  ASSERT_TRUE(results[4].isOk()) << results[4].status().toString();
  EXPECT_EQ(results[5].code(), ErrorCode::JobLeaseLost);
  EXPECT_EQ(twins().getTwin("device-1").value(), *results[0]);
  EXPECT_EQ(twins().getTwin("device-2").value(), *results[4]);
  EXPECT_EQ(twins().getTwin("device-3").value(), *results[3]);
  auto rows = deviceJobs().listDeviceJobs("job-1", std::nullopt, "", 10);
  ASSERT_TRUE(rows.isOk());
  std::vector<std::string> recorded;
  for (const auto& row : *rows) recorded.push_back(row.device_id);
  EXPECT_EQ(recorded, (std::vector<std::string>{"device-1", "device-3"}));
  EXPECT_EQ(deviceJobs().listDeviceJobs("job-2", std::nullopt, "", 10)->size(), 1u);
  EXPECT_TRUE(twins().updateTwinsForJob({}).empty());
}

// --- device jobs ---

TEST_P(StoreConformanceTest, PutDeviceJobsInsertsAndReplaces) {
  ASSERT_TRUE(
      deviceJobs()
          .putDeviceJobs({makeDeviceJob("job-1", "device-1"), makeDeviceJob("job-1", "device-2")})
          .isOk());
  DeviceJobRecord done = makeDeviceJob("job-1", "device-1", "completed");
  done.last_updated_time = at(1700009999, 1);
  done.document["outcome"] = json::object{{"status", 200}};
  ASSERT_TRUE(deviceJobs().putDeviceJobs({done}).isOk());

  auto rows = deviceJobs().listDeviceJobs("job-1", std::nullopt, "", 10);
  ASSERT_TRUE(rows.isOk()) << rows.status().toString();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0], done);
  EXPECT_EQ((*rows)[1], makeDeviceJob("job-1", "device-2"));
  EXPECT_TRUE(deviceJobs().putDeviceJobs({}).isOk());
}

TEST_P(StoreConformanceTest, ARowRepeatedInOneBatchKeepsItsLastVersion) {
  DeviceJobRecord first = makeDeviceJob("job-1", "device-1", "running");
  DeviceJobRecord last = makeDeviceJob("job-1", "device-1", "completed");
  last.document["outcome"] = json::object{{"status", 200}};
  ASSERT_TRUE(deviceJobs().putDeviceJobs({first, makeDeviceJob("job-1", "device-2"), last}).isOk());
  auto rows = deviceJobs().listDeviceJobs("job-1", std::nullopt, "", 10);
  ASSERT_TRUE(rows.isOk()) << rows.status().toString();
  EXPECT_EQ(*rows, (std::vector<DeviceJobRecord>{last, makeDeviceJob("job-1", "device-2")}));
}

TEST_P(StoreConformanceTest, ListDeviceJobsFiltersByStatusAndPages) {
  std::vector<DeviceJobRecord> rows;
  for (int i = 0; i < 30; ++i) {
    rows.push_back(
        makeDeviceJob("job-1", numbered("device-", i), i % 3 == 0 ? "failed" : "completed"));
  }
  rows.push_back(makeDeviceJob("job-2", "device-005", "failed"));
  ASSERT_TRUE(deviceJobs().putDeviceJobs(rows).isOk());

  std::vector<std::string> failed;
  std::string after;
  while (true) {
    auto page = deviceJobs().listDeviceJobs("job-1", "failed", after, 3);
    ASSERT_TRUE(page.isOk()) << page.status().toString();
    if (page->empty()) break;
    for (const DeviceJobRecord& row : *page) {
      EXPECT_EQ(row.job_id, "job-1");
      EXPECT_EQ(row.status, "failed");
      failed.push_back(row.device_id);
    }
    after = page->back().device_id;
  }
  ASSERT_EQ(failed.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(failed[i], numbered("device-", i * 3));

  EXPECT_EQ(deviceJobs().listDeviceJobs("job-1", std::nullopt, "", 100)->size(), 30u);
  EXPECT_EQ(deviceJobs().listDeviceJobs("job-1", std::nullopt, "device-027", 100)->size(), 2u);
  EXPECT_EQ(deviceJobs().listDeviceJobs("job-2", std::nullopt, "", 100)->size(), 1u);
  EXPECT_TRUE(deviceJobs().listDeviceJobs("job-3", std::nullopt, "", 100)->empty());
  EXPECT_TRUE(deviceJobs().listDeviceJobs("job-1", "running", "", 100)->empty());
}

TEST_P(StoreConformanceTest, ListAllDeviceJobsOrdersByJobThenDevice) {
  ASSERT_TRUE(
      deviceJobs()
          .putDeviceJobs({makeDeviceJob("job-b", "device-1"), makeDeviceJob("job-a", "device-2"),
                          makeDeviceJob("job-b", "device-0"), makeDeviceJob("job-a", "device-1"),
                          makeDeviceJob("job-c", "device-9")})
          .isOk());
  std::vector<std::pair<std::string, std::string>> seen;
  std::string after_job, after_device;
  while (true) {
    auto page = deviceJobs().listAllDeviceJobs(after_job, after_device, 2);
    ASSERT_TRUE(page.isOk()) << page.status().toString();
    if (page->empty()) break;
    for (const DeviceJobRecord& row : *page) seen.emplace_back(row.job_id, row.device_id);
    after_job = page->back().job_id;
    after_device = page->back().device_id;
  }
  const std::vector<std::pair<std::string, std::string>> expected = {{"job-a", "device-1"},
                                                                     {"job-a", "device-2"},
                                                                     {"job-b", "device-0"},
                                                                     {"job-b", "device-1"},
                                                                     {"job-c", "device-9"}};
  EXPECT_EQ(seen, expected);
  // A page may start in the middle of a job.
  auto rest = deviceJobs().listAllDeviceJobs("job-b", "device-0", 10);
  ASSERT_TRUE(rest.isOk());
  ASSERT_EQ(rest->size(), 2u);
  EXPECT_EQ(rest->front().device_id, "device-1");
}

TEST_P(StoreConformanceTest, DeviceJobRowsOutliveTheirDevice) {
  createDevice("device-1");
  ASSERT_TRUE(deviceJobs().putDeviceJobs({makeDeviceJob("job-1", "device-1", "completed")}).isOk());
  ASSERT_TRUE(registry().deleteDevice("device-1", nullptr).isOk());
  auto rows = deviceJobs().listDeviceJobs("job-1", std::nullopt, "", 10);
  ASSERT_TRUE(rows.isOk());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(rows->front(), makeDeviceJob("job-1", "device-1", "completed"));
}

TEST_P(StoreConformanceTest, HundredThousandDeviceJobsInOneWrite) {
  constexpr int kRows = 100'000;
  std::vector<DeviceJobRecord> rows;
  rows.reserve(kRows);
  for (int i = kRows - 1; i >= 0; --i)
    rows.push_back(makeDeviceJob("big", numbered("device-", i, 6)));
  Status put = deviceJobs().putDeviceJobs(rows);
  ASSERT_TRUE(put.isOk()) << put.toString();

  int count = 0;
  std::string after;
  while (true) {
    auto page = deviceJobs().listDeviceJobs("big", "pending", after, 5000);
    ASSERT_TRUE(page.isOk()) << page.status().toString();
    if (page->empty()) break;
    for (const DeviceJobRecord& row : *page) {
      ASSERT_EQ(row.device_id, numbered("device-", count, 6));
      ++count;
    }
    after = page->back().device_id;
  }
  EXPECT_EQ(count, kRows);
}

// --- access policies ---

TEST_P(StoreConformanceTest, InsertMissingPoliciesKeepsExistingOnes) {
  EXPECT_TRUE(policies().listPolicies()->empty());
  AccessPolicyRecord owner{"iothubowner", "b3duZXI=", "b3duZXIy",
                           kRegistryRead | kRegistryWrite | kServiceConnect | kDeviceConnect};
  AccessPolicyRecord service{"service", "c2VydmljZQ==", "c2VydmljZTI=", kServiceConnect};
  ASSERT_TRUE(policies().insertMissingPolicies({owner, service}).isOk());

  AccessPolicyRecord new_owner = owner;
  new_owner.primary_key = "cm90YXRlZA==";
  AccessPolicyRecord device{"device", "ZGV2aWNl", "ZGV2aWNlMg==", kDeviceConnect};
  ASSERT_TRUE(policies().insertMissingPolicies({new_owner, device}).isOk());

  auto listed = policies().listPolicies();
  ASSERT_TRUE(listed.isOk()) << listed.status().toString();
  EXPECT_EQ(*listed, (std::vector<AccessPolicyRecord>{device, owner, service}));
}

// --- persistent MQTT sessions ---

TEST_P(StoreConformanceTest, MqttSessionsArePutReplacedAndDeleted) {
  createDevice("dev1");
  auto& sessions = store_->mqttSessions();
  auto none = sessions.getSession("dev1");
  ASSERT_TRUE(none.isOk()) << none.status().toString();
  EXPECT_FALSE(none->has_value());

  MqttSessionRecord session{"dev1", {{"$iothub/methods/POST/#", 0}, {"$iothub/twin/res/#", 0}}};
  ASSERT_TRUE(sessions.putSession(session).isOk());
  EXPECT_EQ(sessions.getSession("dev1")->value(), session);

  session.subscriptions.push_back({"devices/dev1/messages/devicebound/#", 1});
  ASSERT_TRUE(sessions.putSession(session).isOk());
  EXPECT_EQ(sessions.getSession("dev1")->value(), session);
  EXPECT_FALSE(sessions.getSession("dev2")->has_value());

  ASSERT_TRUE(sessions.deleteSession("dev1").isOk());
  EXPECT_FALSE(sessions.getSession("dev1")->has_value());
  EXPECT_TRUE(sessions.deleteSession("never-existed").isOk());
}

TEST_P(StoreConformanceTest, MqttSessionsBelongToExistingDevicesAndGoWithThem) {
  auto& sessions = store_->mqttSessions();
  MqttSessionRecord session{"dev1", {{"$iothub/methods/POST/#", 1}}};
  EXPECT_EQ(sessions.putSession(session).code(), ErrorCode::DeviceNotFound);
  EXPECT_FALSE(sessions.getSession("dev1")->has_value());

  createDevice("dev1");
  ASSERT_TRUE(sessions.putSession(session).isOk());
  ASSERT_TRUE(registry().deleteDevice("dev1", nullptr).isOk());
  EXPECT_FALSE(sessions.getSession("dev1")->has_value()) << "deleted with its device";
  // A connection of the deleted device that saves its subscriptions late changes nothing.
  EXPECT_EQ(sessions.putSession(session).code(), ErrorCode::DeviceNotFound);
  createDevice("dev1");
  EXPECT_FALSE(sessions.getSession("dev1")->has_value()) << "a new device starts clean";
}

// --- cloud-to-device messages ---

constexpr std::int64_t kC2dT0 = 1700000000;  // the tests' "now", in Unix seconds

// A message numbered `n` (kept in its document, so the feedback rule can tell messages
// apart) that expires `expires_in` seconds after kC2dT0.
C2dMessageRecord makeC2d(const std::string& device_id, int n, std::int64_t expires_in = 3600,
                         std::string body = "") {
  C2dMessageRecord message;
  message.device_id = device_id;
  message.enqueued_time = at(kC2dT0 - 10, n);
  message.expiry_time = at(kC2dT0 + expires_in);
  message.document =
      json::parse(R"({"messageId":"m","ack":"full","properties":[["k","v"]]})").as_object();
  message.document["n"] = n;
  message.body = body.empty() ? "body-" + std::to_string(n) : std::move(body);
  return message;
}

int numberOf(const json::object& document) { return static_cast<int>(document.at("n").as_int64()); }

std::string_view removalName(C2dRemoval removal) {
  switch (removal) {
    case C2dRemoval::Completed:
      return "completed";
    case C2dRemoval::Rejected:
      return "rejected";
    case C2dRemoval::Expired:
      return "expired";
    case C2dRemoval::DeliveryCountExceeded:
      return "deliveryCountExceeded";
    case C2dRemoval::Purged:
      return "purged";
  }
  return "?";
}

// A feedback record {"n": the message's number, "reason": why it left}, enqueued n seconds
// after kC2dT0.
std::optional<C2dFeedbackRecord> feedbackOf(const C2dMessageRecord& message, C2dRemoval removal) {
  C2dFeedbackRecord record;
  const int n = numberOf(message.document);
  record.enqueued_time = at(kC2dT0 + n);
  record.document["n"] = n;
  record.document["reason"] = removalName(removal);
  record.document["device"] = message.device_id;
  return record;
}

std::optional<C2dFeedbackRecord> noFeedback(const C2dMessageRecord&, C2dRemoval) {
  return std::nullopt;
}

C2dLock lockAt(std::int64_t now_offset, std::string token, std::int64_t lock_seconds = 60,
               std::int32_t max_delivery_count = 10) {
  return C2dLock{.now = at(kC2dT0 + now_offset),
                 .until = at(kC2dT0 + now_offset + lock_seconds),
                 .token = std::move(token),
                 .max_delivery_count = max_delivery_count};
}

// (number, reason) of every feedback record, in sequence order. Their locks end the moment
// they are taken, so a later call sees them again.
std::vector<std::pair<int, std::string>> feedbackSummary(C2dStore& c2d) {
  auto records = c2d.lockC2dFeedback(at(kC2dT0 + 1'000'000), at(kC2dT0 + 1'000'000), 1000);
  EXPECT_TRUE(records.isOk()) << records.status().toString();
  std::vector<std::pair<int, std::string>> summary;
  if (!records.isOk()) return summary;
  for (const C2dFeedbackRecord& record : *records) {
    summary.emplace_back(numberOf(record.document),
                         std::string(record.document.at("reason").as_string()));
  }
  return summary;
}

class C2dConformanceTest : public StoreConformanceTest {
 protected:
  C2dStore& c2d() { return store_->c2d(); }

  // A device whose message count starts right (0), unlike makeDevice's.
  void createC2dDevice(const std::string& id) {
    DeviceRecord device = makeDevice(id);
    device.cloud_to_device_message_count = 0;
    Status created = registry().createDevice(device, makeTwin(id));
    ASSERT_TRUE(created.isOk()) << created.toString();
  }

  std::int64_t enqueue(const C2dMessageRecord& message, std::size_t max_depth = 50) {
    auto sequence = c2d().enqueueC2d(message, max_depth);
    EXPECT_TRUE(sequence.isOk()) << sequence.status().toString();
    return sequence.isOk() ? *sequence : -1;
  }

  std::optional<C2dMessageRecord> lock(const std::string& device_id, const C2dLock& how,
                                       const C2dFeedbackRule& feedback = feedbackOf) {
    auto locked = c2d().lockC2d(device_id, how, feedback);
    EXPECT_TRUE(locked.isOk()) << locked.status().toString();
    return locked.isOk() ? *locked : std::nullopt;
  }

  std::vector<C2dMessageRecord> queue(const std::string& device_id) {
    auto listed = c2d().listC2d(device_id, 1000);
    EXPECT_TRUE(listed.isOk()) << listed.status().toString();
    return listed.isOk() ? *listed : std::vector<C2dMessageRecord>{};
  }

  std::vector<int> numbers(const std::string& device_id) {
    std::vector<int> result;
    for (const C2dMessageRecord& message : queue(device_id)) {
      result.push_back(numberOf(message.document));
    }
    return result;
  }

  std::int64_t count(const std::string& device_id) {
    auto device = registry().getDevice(device_id);
    EXPECT_TRUE(device.isOk()) << device.status().toString();
    return device.isOk() ? device->cloud_to_device_message_count : -1;
  }
};

TEST_P(C2dConformanceTest, EnqueueAssignsGrowingSequencesInQueueOrder) {
  createC2dDevice("dev-a");
  createC2dDevice("dev-b");
  std::vector<std::int64_t> sequences;
  for (int n = 1; n <= 5; ++n) {
    C2dMessageRecord message = makeC2d(n % 2 == 1 ? "dev-a" : "dev-b", n);
    // Ignored on enqueue: the store assigns the sequence and starts the message free.
    message.sequence = 999;
    message.lock_token = "stale";
    message.locked_until = at(kC2dT0 + 999);
    message.delivery_count = 4;
    sequences.push_back(enqueue(message));
  }
  for (std::size_t i = 1; i < sequences.size(); ++i) {
    EXPECT_GT(sequences[i], sequences[i - 1]) << i;
  }

  auto a = queue("dev-a");
  ASSERT_EQ(a.size(), 3u);
  for (std::size_t i = 0; i < a.size(); ++i) {
    const int n = static_cast<int>(2 * i + 1);
    C2dMessageRecord expected = makeC2d("dev-a", n);
    expected.sequence = sequences[static_cast<std::size_t>(n - 1)];
    EXPECT_EQ(a[i], expected) << "message " << n;
  }
  EXPECT_EQ(numbers("dev-b"), (std::vector<int>{2, 4}));
  auto first = c2d().listC2d("dev-a", 2);
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ(numberOf(first->back().document), 3);
  EXPECT_TRUE(queue("nobody").empty());
}

TEST_P(C2dConformanceTest, EnqueueRefusesUnknownDevicesAndFullQueues) {
  EXPECT_EQ(c2d().enqueueC2d(makeC2d("nobody", 1), 50).code(), ErrorCode::DeviceNotFound);
  createC2dDevice("dev");
  EXPECT_EQ(c2d().enqueueC2d(makeC2d("dev", 1), 0).code(),
            ErrorCode::DeviceMaximumQueueDepthExceeded);
  enqueue(makeC2d("dev", 1, /*expires_in=*/-5), 3);  // expired, not yet removed: still counts
  enqueue(makeC2d("dev", 2), 3);
  enqueue(makeC2d("dev", 3), 3);
  EXPECT_EQ(c2d().enqueueC2d(makeC2d("dev", 4), 3).code(),
            ErrorCode::DeviceMaximumQueueDepthExceeded);
  EXPECT_EQ(numbers("dev"), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(count("dev"), 3);
  // Each queue has its own depth.
  createC2dDevice("other");
  enqueue(makeC2d("other", 5), 3);

  // Locking removes the expired message, which makes room again.
  auto locked = lock("dev", lockAt(0, "t1"));
  ASSERT_TRUE(locked.has_value());
  EXPECT_EQ(numberOf(locked->document), 2);
  enqueue(makeC2d("dev", 6), 3);
  EXPECT_EQ(numbers("dev"), (std::vector<int>{2, 3, 6}));
}

TEST_P(C2dConformanceTest, MessageCountFollowsTheQueueAndLeavesTheEtag) {
  createC2dDevice("dev");
  createC2dDevice("other");
  for (int n = 1; n <= 4; ++n) enqueue(makeC2d("dev", n));
  EXPECT_EQ(count("dev"), 4);
  EXPECT_EQ(count("other"), 0);
  DeviceRecord expected = makeDevice("dev");
  expected.cloud_to_device_message_count = 4;
  EXPECT_EQ(registry().getDevice("dev").value(), expected) << "only the count changes";

  auto first = lock("dev", lockAt(0, "t1"));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(count("dev"), 4) << "a locked message is still in the queue";
  ASSERT_TRUE(c2d().settleC2d("dev", "t1", C2dSettlement::Complete, at(kC2dT0), feedbackOf).isOk());
  EXPECT_EQ(count("dev"), 3);
  ASSERT_TRUE(c2d().purgeC2d("dev", feedbackOf).isOk());
  EXPECT_EQ(count("dev"), 0);
  expected.cloud_to_device_message_count = 0;
  EXPECT_EQ(registry().getDevice("dev").value(), expected);

  // A device update in between keeps the count the queue gives it.
  enqueue(makeC2d("dev", 5));
  auto updated = registry().updateDevice("dev", [](const DeviceRecord& current) {
    DeviceRecord next = current;
    next.etag = "etag-2";
    return Result<DeviceRecord>(next);
  });
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(updated->cloud_to_device_message_count, 1);
  enqueue(makeC2d("dev", 6));
  EXPECT_EQ(count("dev"), 2);
  EXPECT_EQ(registry().getDevice("dev")->etag, "etag-2");
}

TEST_P(C2dConformanceTest, LockTakesMessagesInSequenceOrderAndSkipsHeldOnes) {
  createC2dDevice("dev");
  std::vector<std::int64_t> sequences;
  for (int n = 1; n <= 3; ++n) sequences.push_back(enqueue(makeC2d("dev", n)));

  for (int n = 1; n <= 3; ++n) {
    const std::string token = "t" + std::to_string(n);
    auto locked = lock("dev", lockAt(0, token));
    ASSERT_TRUE(locked.has_value()) << n;
    C2dMessageRecord expected = makeC2d("dev", n);
    expected.sequence = sequences[static_cast<std::size_t>(n - 1)];
    expected.lock_token = token;
    expected.locked_until = at(kC2dT0 + 60);
    expected.delivery_count = 1;
    EXPECT_EQ(*locked, expected);
  }
  EXPECT_FALSE(lock("dev", lockAt(1, "t4")).has_value()) << "every message is held";
  EXPECT_FALSE(lock("nobody", lockAt(1, "t5")).has_value()) << "unknown device";

  auto listed = queue("dev");
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[1].lock_token, "t2");
  EXPECT_EQ(listed[1].locked_until, at(kC2dT0 + 60));
  EXPECT_EQ(listed[1].delivery_count, 1);
  EXPECT_EQ(feedbackSummary(c2d()).size(), 0u);
}

TEST_P(C2dConformanceTest, AnExpiredLockMakesTheMessageLockableAgain) {
  createC2dDevice("dev");
  enqueue(makeC2d("dev", 1));
  auto first = lock("dev", lockAt(0, "t1", 60));
  ASSERT_TRUE(first.has_value());
  EXPECT_FALSE(lock("dev", lockAt(59, "t2")).has_value()) << "still held";

  auto second = lock("dev", lockAt(60, "t3", 60));  // locked_until <= now: free
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->sequence, first->sequence);
  EXPECT_EQ(second->lock_token, "t3");
  EXPECT_EQ(second->locked_until, at(kC2dT0 + 120));
  EXPECT_EQ(second->delivery_count, 2);
  EXPECT_EQ(
      c2d().settleC2d("dev", "t1", C2dSettlement::Complete, at(kC2dT0 + 61), feedbackOf).code(),
      ErrorCode::DeviceMessageLockLost)
      << "the first lock is gone";

  auto third = lock("dev", lockAt(200, "t4"));
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->delivery_count, 3);
  EXPECT_EQ(queue("dev").front().delivery_count, 3);
}

TEST_P(C2dConformanceTest, LockRemovesExpiredAndOverDeliveredMessagesThroughTheRule) {
  createC2dDevice("dev");
  enqueue(makeC2d("dev", 1, /*expires_in=*/100));
  enqueue(makeC2d("dev", 2));
  enqueue(makeC2d("dev", 3));
  enqueue(makeC2d("dev", 4, /*expires_in=*/100));
  // Message 1 held until 10; message 2 delivered twice, free again.
  ASSERT_EQ(numberOf(lock("dev", lockAt(0, "a", 10))->document), 1);
  for (const char* token : {"b", "c"}) {
    auto locked = lock("dev", lockAt(0, token, 10));
    ASSERT_TRUE(locked.has_value());
    ASSERT_EQ(numberOf(locked->document), 2);
    ASSERT_TRUE(
        c2d().settleC2d("dev", token, C2dSettlement::Abandon, at(kC2dT0), feedbackOf).isOk());
  }
  EXPECT_EQ(queue("dev")[1].delivery_count, 2);

  // At 200 with at most 2 deliveries: 1 has expired, 2 was delivered twice, 3 is taken; 4
  // (expired too) lies beyond and stays.
  auto locked = lock("dev", lockAt(200, "d", 60, /*max_delivery_count=*/2));
  ASSERT_TRUE(locked.has_value());
  EXPECT_EQ(numberOf(locked->document), 3);
  EXPECT_EQ(locked->delivery_count, 1);
  EXPECT_EQ(numbers("dev"), (std::vector<int>{3, 4}));
  EXPECT_EQ(count("dev"), 2);
  EXPECT_EQ(feedbackSummary(c2d()), (std::vector<std::pair<int, std::string>>{
                                        {1, "expired"}, {2, "deliveryCountExceeded"}}));

  // Nothing left to deliver: the expired 4 goes on the way, and the held 3 stays.
  EXPECT_FALSE(lock("dev", lockAt(200, "e")).has_value());
  EXPECT_EQ(numbers("dev"), (std::vector<int>{3}));
  EXPECT_EQ(count("dev"), 1);
}

TEST_P(C2dConformanceTest, ARuleThatReturnsNothingStoresNoFeedback) {
  createC2dDevice("dev");
  enqueue(makeC2d("dev", 1, /*expires_in=*/-1));
  enqueue(makeC2d("dev", 2));
  enqueue(makeC2d("dev", 3));
  std::vector<std::pair<int, C2dRemoval>> calls;
  C2dFeedbackRule recording = [&calls](const C2dMessageRecord& message, C2dRemoval removal) {
    calls.emplace_back(numberOf(message.document), removal);
    return noFeedback(message, removal);
  };
  auto locked = lock("dev", lockAt(0, "t1"), recording);
  ASSERT_TRUE(locked.has_value());
  EXPECT_EQ(numberOf(locked->document), 2);
  ASSERT_TRUE(c2d().settleC2d("dev", "t1", C2dSettlement::Reject, at(kC2dT0), recording).isOk());
  EXPECT_EQ(c2d().purgeC2d("dev", recording).value(), 1u);
  // The rule saw each message leave once, with its reason (a backend may run a rule more than
  // once only when it runs the transaction again, which nothing here provokes).
  EXPECT_EQ(calls,
            (std::vector<std::pair<int, C2dRemoval>>{
                {1, C2dRemoval::Expired}, {2, C2dRemoval::Rejected}, {3, C2dRemoval::Purged}}));
  EXPECT_TRUE(feedbackSummary(c2d()).empty());
  EXPECT_TRUE(queue("dev").empty());
  EXPECT_EQ(count("dev"), 0);
}

TEST_P(C2dConformanceTest, SettlingCompletesRejectsAndAbandons) {
  createC2dDevice("dev");
  createC2dDevice("other");
  for (int n = 1; n <= 3; ++n) enqueue(makeC2d("dev", n));
  auto one = lock("dev", lockAt(0, "t1"));
  auto two = lock("dev", lockAt(0, "t2"));
  auto three = lock("dev", lockAt(0, "t3"));
  ASSERT_TRUE(one && two && three);

  auto completed =
      c2d().settleC2d("dev", "t1", C2dSettlement::Complete, at(kC2dT0 + 1), feedbackOf);
  ASSERT_TRUE(completed.isOk()) << completed.status().toString();
  EXPECT_EQ(*completed, *one) << "the message as it was before";
  auto rejected = c2d().settleC2d("dev", "t2", C2dSettlement::Reject, at(kC2dT0 + 1), feedbackOf);
  ASSERT_TRUE(rejected.isOk()) << rejected.status().toString();
  EXPECT_EQ(*rejected, *two);
  auto abandoned = c2d().settleC2d("dev", "t3", C2dSettlement::Abandon, at(kC2dT0 + 1), feedbackOf);
  ASSERT_TRUE(abandoned.isOk()) << abandoned.status().toString();
  EXPECT_EQ(*abandoned, *three);

  auto listed = queue("dev");
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(numberOf(listed[0].document), 3);
  EXPECT_EQ(listed[0].lock_token, "");
  EXPECT_EQ(listed[0].delivery_count, 1) << "an abandon keeps the delivery count";
  EXPECT_EQ(count("dev"), 1);
  EXPECT_EQ(feedbackSummary(c2d()),
            (std::vector<std::pair<int, std::string>>{{1, "completed"}, {2, "rejected"}}));

  // Delivered again after the abandon.
  auto again = lock("dev", lockAt(2, "t4"));
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(numberOf(again->document), 3);
  EXPECT_EQ(again->delivery_count, 2);

  auto lost = [&](std::string_view device, std::string_view token, std::int64_t now) {
    return c2d()
        .settleC2d(device, token, C2dSettlement::Complete, at(kC2dT0 + now), feedbackOf)
        .code();
  };
  EXPECT_EQ(lost("dev", "t1", 3), ErrorCode::DeviceMessageLockLost) << "already completed";
  EXPECT_EQ(lost("dev", "t3", 3), ErrorCode::DeviceMessageLockLost) << "abandoned";
  EXPECT_EQ(lost("dev", "nonsense", 3), ErrorCode::DeviceMessageLockLost);
  EXPECT_EQ(lost("dev", "", 3), ErrorCode::DeviceMessageLockLost);
  EXPECT_EQ(lost("other", "t4", 3), ErrorCode::DeviceMessageLockLost) << "another device's token";
  EXPECT_EQ(lost("nobody", "t4", 3), ErrorCode::DeviceMessageLockLost);
  EXPECT_EQ(lost("dev", "t4", 62), ErrorCode::DeviceMessageLockLost) << "the lock has passed";
  EXPECT_EQ(
      c2d().settleC2d("dev", "t4", C2dSettlement::Abandon, at(kC2dT0 + 62), feedbackOf).code(),
      ErrorCode::DeviceMessageLockLost);
  EXPECT_EQ(numbers("dev"), (std::vector<int>{3})) << "failed settlements change nothing";
  EXPECT_EQ(queue("dev")[0].lock_token, "t4");
  EXPECT_TRUE(
      c2d().settleC2d("dev", "t4", C2dSettlement::Complete, at(kC2dT0 + 61), feedbackOf).isOk());
  EXPECT_TRUE(queue("dev").empty());
}

TEST_P(C2dConformanceTest, PurgeRemovesEveryMessageOfTheDevice) {
  EXPECT_EQ(c2d().purgeC2d("nobody", feedbackOf).code(), ErrorCode::DeviceNotFound);
  createC2dDevice("dev");
  createC2dDevice("other");
  EXPECT_EQ(c2d().purgeC2d("dev", feedbackOf).value(), 0u);
  for (int n = 1; n <= 3; ++n) enqueue(makeC2d("dev", n));
  enqueue(makeC2d("other", 4));
  ASSERT_TRUE(lock("dev", lockAt(0, "t1")).has_value());  // held messages go too

  auto purged = c2d().purgeC2d("dev", feedbackOf);
  ASSERT_TRUE(purged.isOk()) << purged.status().toString();
  EXPECT_EQ(*purged, 3u);
  EXPECT_TRUE(queue("dev").empty());
  EXPECT_EQ(count("dev"), 0);
  EXPECT_EQ(numbers("other"), (std::vector<int>{4}));
  EXPECT_EQ(count("other"), 1);
  EXPECT_EQ(feedbackSummary(c2d()), (std::vector<std::pair<int, std::string>>{
                                        {1, "purged"}, {2, "purged"}, {3, "purged"}}));
}

TEST_P(C2dConformanceTest, ExpireRemovesTheEarliestExpiriesFirstUpToTheLimit) {
  createC2dDevice("dev-a");
  createC2dDevice("dev-b");
  // Expiries (seconds after kC2dT0): 1 -> 30, 2 -> 10, 3 -> 1000, 4 -> 20, 5 -> 40.
  enqueue(makeC2d("dev-a", 1, 30));
  enqueue(makeC2d("dev-b", 2, 10));
  enqueue(makeC2d("dev-a", 3, 1000));
  enqueue(makeC2d("dev-a", 4, 20));
  enqueue(makeC2d("dev-b", 5, 40));
  ASSERT_TRUE(lock("dev-a", lockAt(0, "t1")).has_value());  // held messages expire too

  EXPECT_EQ(c2d().expireC2d(at(kC2dT0 + 100), 0, feedbackOf).value(), 0u);
  EXPECT_EQ(c2d().expireC2d(at(kC2dT0 + 9), 10, feedbackOf).value(), 0u) << "none expired";
  EXPECT_EQ(c2d().expireC2d(at(kC2dT0 + 100), 2, feedbackOf).value(), 2u);
  EXPECT_EQ(numbers("dev-a"), (std::vector<int>{1, 3}));
  EXPECT_EQ(numbers("dev-b"), (std::vector<int>{5}));
  EXPECT_EQ(count("dev-a"), 2);
  EXPECT_EQ(count("dev-b"), 1);
  EXPECT_EQ(c2d().expireC2d(at(kC2dT0 + 30), 10, feedbackOf).value(), 1u) << "expiry <= now";
  EXPECT_EQ(c2d().expireC2d(at(kC2dT0 + 100), 10, feedbackOf).value(), 1u);
  EXPECT_EQ(c2d().expireC2d(at(kC2dT0 + 100), 10, feedbackOf).value(), 0u);
  EXPECT_EQ(numbers("dev-a"), (std::vector<int>{3}));
  EXPECT_TRUE(queue("dev-b").empty());
  EXPECT_EQ(count("dev-a"), 1);
  EXPECT_EQ(count("dev-b"), 0);
  EXPECT_EQ(feedbackSummary(c2d()),
            (std::vector<std::pair<int, std::string>>{
                {2, "expired"}, {4, "expired"}, {1, "expired"}, {5, "expired"}}));
}

TEST_P(C2dConformanceTest, DeletingADeviceRemovesItsMessagesWithoutFeedback) {
  createC2dDevice("dev");
  createC2dDevice("other");
  for (int n = 1; n <= 3; ++n) enqueue(makeC2d("dev", n));
  enqueue(makeC2d("other", 4));
  ASSERT_TRUE(lock("dev", lockAt(0, "t1")).has_value());
  ASSERT_TRUE(registry().deleteDevice("dev", nullptr).isOk());
  EXPECT_TRUE(queue("dev").empty());
  EXPECT_FALSE(lock("dev", lockAt(0, "t2")).has_value());
  EXPECT_EQ(c2d().settleC2d("dev", "t1", C2dSettlement::Complete, at(kC2dT0), feedbackOf).code(),
            ErrorCode::DeviceMessageLockLost);

  createC2dDevice("dev");
  EXPECT_TRUE(queue("dev").empty()) << "a new device starts with an empty queue";
  EXPECT_EQ(count("dev"), 0);
  EXPECT_EQ(numbers("other"), (std::vector<int>{4}));
  EXPECT_TRUE(feedbackSummary(c2d()).empty());
}

TEST_P(C2dConformanceTest, FeedbackIsLockedDeletedAndExpired) {
  createC2dDevice("dev");
  for (int n = 1; n <= 5; ++n) enqueue(makeC2d("dev", n));
  ASSERT_EQ(c2d().purgeC2d("dev", feedbackOf).value(), 5u);  // records enqueued at T0 + n

  auto numbersOf = [](const Result<std::vector<C2dFeedbackRecord>>& records) {
    EXPECT_TRUE(records.isOk()) << records.status().toString();
    std::vector<int> result;
    if (records.isOk()) {
      for (const C2dFeedbackRecord& record : *records) {
        result.push_back(numberOf(record.document));
      }
    }
    return result;
  };
  auto first = c2d().lockC2dFeedback(at(kC2dT0), at(kC2dT0 + 60), 2);
  EXPECT_EQ(numbersOf(first), (std::vector<int>{1, 2}));
  ASSERT_EQ(first->size(), 2u);
  EXPECT_LT((*first)[0].sequence, (*first)[1].sequence);
  EXPECT_EQ((*first)[0].enqueued_time, at(kC2dT0 + 1));
  EXPECT_EQ((*first)[0].document.at("reason").as_string(), "purged");
  EXPECT_EQ(numbersOf(c2d().lockC2dFeedback(at(kC2dT0), at(kC2dT0 + 30), 2)),
            (std::vector<int>{3, 4}));
  EXPECT_EQ(numbersOf(c2d().lockC2dFeedback(at(kC2dT0), at(kC2dT0 + 60), 10)),
            (std::vector<int>{5}));
  EXPECT_TRUE(numbersOf(c2d().lockC2dFeedback(at(kC2dT0 + 29), at(kC2dT0 + 90), 10)).empty());
  EXPECT_TRUE(numbersOf(c2d().lockC2dFeedback(at(kC2dT0 + 29), at(kC2dT0 + 90), 0)).empty());
  // At 30 the second lock has passed; at 60 the others too.
  EXPECT_EQ(numbersOf(c2d().lockC2dFeedback(at(kC2dT0 + 30), at(kC2dT0 + 90), 10)),
            (std::vector<int>{3, 4}));

  ASSERT_TRUE(
      c2d().deleteC2dFeedback({(*first)[0].sequence, (*first)[1].sequence, 987654321}).isOk());
  ASSERT_TRUE(c2d().deleteC2dFeedback({}).isOk());
  EXPECT_EQ(numbersOf(c2d().lockC2dFeedback(at(kC2dT0 + 60), at(kC2dT0 + 90), 10)),
            (std::vector<int>{5}))
      << "1 and 2 were deleted; 3 and 4 are locked until 90";

  // Enqueued before T0 + 4: only 3 is left of those.
  EXPECT_EQ(c2d().expireC2dFeedback(at(kC2dT0 + 4), 10).value(), 1u);
  EXPECT_EQ(c2d().expireC2dFeedback(at(kC2dT0 + 100), 0).value(), 0u);
  EXPECT_EQ(c2d().expireC2dFeedback(at(kC2dT0 + 100), 1).value(), 1u);
  EXPECT_EQ(numbersOf(c2d().lockC2dFeedback(at(kC2dT0 + 1000), at(kC2dT0 + 1001), 10)),
            (std::vector<int>{5}));
  EXPECT_EQ(c2d().expireC2dFeedback(at(kC2dT0 + 5), 10).value(), 0u) << "strictly before";
  EXPECT_EQ(c2d().expireC2dFeedback(at(kC2dT0 + 6), 10).value(), 1u);
  EXPECT_TRUE(feedbackSummary(c2d()).empty());
}

TEST_P(C2dConformanceTest, ConcurrentLocksNeverTakeOneMessageTwice) {
  constexpr int kMessages = 120;
  constexpr int kThreads = 6;
  createC2dDevice("dev");
  for (int n = 1; n <= kMessages; ++n) enqueue(makeC2d("dev", n), kMessages);
  // A backend that several processes share gets a second store of its own, as another
  // process would have.
  std::unique_ptr<Store> second;
  if (store_->cluster() != nullptr) {
    auto opened = location_->open();
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    second = std::move(opened).value();
  }

  std::mutex mutex;
  std::vector<std::int64_t> taken;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    C2dStore& store = second != nullptr && t % 2 == 1 ? second->c2d() : c2d();
    threads.emplace_back([&, t] {
      for (int i = 0;; ++i) {
        auto locked = store.lockC2d(
            "dev", lockAt(0, "thread-" + std::to_string(t) + "-" + std::to_string(i)), feedbackOf);
        if (!locked.isOk()) {
          ++failures;
          return;
        }
        if (!locked->has_value()) return;
        std::lock_guard guard(mutex);
        taken.push_back((*locked)->sequence);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  std::set<std::int64_t> distinct(taken.begin(), taken.end());
  EXPECT_EQ(taken.size(), static_cast<std::size_t>(kMessages));
  EXPECT_EQ(distinct.size(), static_cast<std::size_t>(kMessages));
  for (const C2dMessageRecord& message : queue("dev")) {
    EXPECT_EQ(message.delivery_count, 1) << message.sequence;
  }
}

TEST_P(C2dConformanceTest, BodiesKeepEveryByte) {
  createC2dDevice("dev");
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte += static_cast<char>(b);
  const std::vector<std::string> bodies = {std::string("\0", 1), std::string("a\0b\0\0", 5),
                                           "\xff\xfe\xc3\x28 not utf-8 \x80", every_byte,
                                           std::string(70000, '\0') + "end"};
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    enqueue(makeC2d("dev", static_cast<int>(i + 1), 3600, bodies[i]));
  }
  auto listed = queue("dev");
  ASSERT_EQ(listed.size(), bodies.size());
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    EXPECT_EQ(listed[i].body, bodies[i]) << "body " << i;
  }
  auto locked = lock("dev", lockAt(0, "t1"));
  ASSERT_TRUE(locked.has_value());
  EXPECT_EQ(locked->body, bodies[0]);
}

TEST_P(C2dConformanceTest, QueuesAndFeedbackSurviveReopening) {
  createC2dDevice("dev");
  for (int n = 1; n <= 3; ++n) enqueue(makeC2d("dev", n));
  const std::int64_t last = enqueue(makeC2d("dev", 4, 3600, std::string("x\0y\xff", 4)));
  ASSERT_TRUE(lock("dev", lockAt(0, "t1")).has_value());
  ASSERT_TRUE(lock("dev", lockAt(0, "t2")).has_value());
  ASSERT_TRUE(c2d().settleC2d("dev", "t2", C2dSettlement::Reject, at(kC2dT0), feedbackOf).isOk());
  // Removing the newest message must not make its sequence available again.
  ASSERT_TRUE(lock("dev", lockAt(0, "t3")).has_value());
  ASSERT_TRUE(lock("dev", lockAt(0, "t4")).has_value());
  ASSERT_TRUE(c2d().settleC2d("dev", "t4", C2dSettlement::Complete, at(kC2dT0), feedbackOf).isOk());
  const auto before = queue("dev");
  ASSERT_EQ(before.size(), 2u);

  reopen();
  EXPECT_EQ(queue("dev"), before);
  EXPECT_EQ(count("dev"), 2);
  EXPECT_EQ(c2d().settleC2d("dev", "t1", C2dSettlement::Complete, at(kC2dT0), feedbackOf)->sequence,
            before[0].sequence)
      << "a lock outlives the restart";
  EXPECT_GT(enqueue(makeC2d("dev", 5)), last);
  EXPECT_EQ(feedbackSummary(c2d()), (std::vector<std::pair<int, std::string>>{
                                        {2, "rejected"}, {4, "completed"}, {1, "completed"}}));
}

// --- the telemetry log ---

constexpr std::int64_t kTelemetryT0 = 1700004000;

// Record `n` of `partition`, enqueued at kTelemetryT0 + `second`.
TelemetryRecord makeTelemetry(std::int32_t partition, int n, std::int64_t second = 0,
                              std::string body = "") {
  TelemetryRecord record;
  record.partition = partition;
  record.enqueued_time = at(kTelemetryT0 + second, 250);
  record.device_id = numbered("device-", n % 7);
  record.document = json::object{{"n", n}, {"properties", json::object{{"kind", "reading"}}}};
  record.body = body.empty() ? "{\"temperature\":" + std::to_string(n) + "}" : std::move(body);
  return record;
}

// What the store counts for a record: its body and its document's bytes.
std::uint64_t telemetrySize(const TelemetryRecord& record) {
  return record.body.size() + json::serialize(record.document).size();
}

int telemetryNumber(const TelemetryRecord& record) {
  return static_cast<int>(record.document.at("n").as_int64());
}

class TelemetryConformanceTest : public StoreConformanceTest {
 protected:
  TelemetryStore& telemetry() { return store_->telemetry(); }

  std::vector<std::int64_t> append(const std::vector<TelemetryRecord>& records) {
    auto sequences = telemetry().appendTelemetry(records);
    EXPECT_TRUE(sequences.isOk()) << sequences.status().toString();
    return sequences.isOk() ? *sequences : std::vector<std::int64_t>{};
  }

  std::vector<TelemetryRecord> readAll(std::int32_t partition, std::int64_t from = 0) {
    auto records = telemetry().readTelemetry(partition, from, 100000, SIZE_MAX);
    EXPECT_TRUE(records.isOk()) << records.status().toString();
    return records.isOk() ? *records : std::vector<TelemetryRecord>{};
  }

  std::vector<int> numbers(std::int32_t partition, std::int64_t from = 0) {
    std::vector<int> result;
    for (const TelemetryRecord& record : readAll(partition, from)) {
      result.push_back(telemetryNumber(record));
    }
    return result;
  }

  TelemetryPartitionInfo info(std::int32_t partition) {
    auto read = telemetry().telemetryPartition(partition);
    EXPECT_TRUE(read.isOk()) << read.status().toString();
    return read.isOk() ? *read : TelemetryPartitionInfo{};
  }

  std::int64_t after(std::int32_t partition, SystemTime t) {
    auto sequence = telemetry().telemetrySequenceAfter(partition, t);
    EXPECT_TRUE(sequence.isOk()) << sequence.status().toString();
    return sequence.isOk() ? *sequence : -1;
  }

  std::size_t trim(std::int32_t partition, SystemTime older_than, std::uint64_t max_bytes,
                   std::size_t limit = 1000) {
    auto removed = telemetry().trimTelemetry(partition, older_than, max_bytes, limit);
    EXPECT_TRUE(removed.isOk()) << removed.status().toString();
    return removed.isOk() ? *removed : 0;
  }
};

TEST_P(TelemetryConformanceTest, AppendAssignsGaplessSequencesPerPartitionInOrder) {
  std::vector<TelemetryRecord> batch;
  const std::int32_t partitions[] = {2, 0, 2, 3, 0, 2};
  for (int n = 0; n < 6; ++n) {
    batch.push_back(makeTelemetry(partitions[n], n, n));
    batch.back().sequence = 999;  // ignored
  }
  EXPECT_EQ(append(batch), (std::vector<std::int64_t>{0, 0, 1, 0, 1, 2}));
  EXPECT_EQ(append({makeTelemetry(0, 6, 6), makeTelemetry(2, 7, 7)}),
            (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(append({}), std::vector<std::int64_t>{});

  auto two = readAll(2);
  ASSERT_EQ(two.size(), 4u);
  const int expected_numbers[] = {0, 2, 5, 7};
  for (std::size_t i = 0; i < two.size(); ++i) {
    TelemetryRecord expected = makeTelemetry(2, expected_numbers[i], expected_numbers[i]);
    expected.sequence = static_cast<std::int64_t>(i);
    EXPECT_EQ(two[i], expected) << i;
  }
  EXPECT_EQ(numbers(0), (std::vector<int>{1, 4, 6}));
  EXPECT_EQ(numbers(3), (std::vector<int>{3}));
  EXPECT_TRUE(readAll(1).empty());
  EXPECT_TRUE(readAll(7).empty());
  EXPECT_EQ(numbers(2, 2), (std::vector<int>{5, 7}));
  EXPECT_TRUE(readAll(2, 4).empty());
}

TEST_P(TelemetryConformanceTest, ReadStopsAtItsLimitAndOnceItsBytesAreReached) {
  std::vector<TelemetryRecord> batch;
  for (int n = 0; n < 10; ++n) batch.push_back(makeTelemetry(1, n, n, std::string(100, 'a' + n)));
  append(batch);
  const std::uint64_t size = telemetrySize(batch[0]);
  for (const TelemetryRecord& record : batch) ASSERT_EQ(telemetrySize(record), size);

  auto limited = telemetry().readTelemetry(1, 3, 4, SIZE_MAX);
  ASSERT_TRUE(limited.isOk()) << limited.status().toString();
  ASSERT_EQ(limited->size(), 4u);
  EXPECT_EQ(limited->front().sequence, 3);
  EXPECT_EQ(limited->back().sequence, 6);
  EXPECT_TRUE(telemetry().readTelemetry(1, 0, 0, SIZE_MAX)->empty());

  // Records are returned while the bytes of those before stay under max_bytes.
  auto exact = telemetry().readTelemetry(1, 0, 100, 3 * size);
  ASSERT_TRUE(exact.isOk()) << exact.status().toString();
  EXPECT_EQ(exact->size(), 3u);
  auto over = telemetry().readTelemetry(1, 0, 100, 3 * size + 1);
  ASSERT_TRUE(over.isOk()) << over.status().toString();
  EXPECT_EQ(over->size(), 4u);
  // The first record always comes, however small max_bytes is.
  for (std::size_t max_bytes : {std::size_t{0}, std::size_t{1}, std::size_t(size)}) {
    auto first = telemetry().readTelemetry(1, 5, 100, max_bytes);
    ASSERT_TRUE(first.isOk()) << first.status().toString();
    ASSERT_EQ(first->size(), 1u) << max_bytes;
    EXPECT_EQ(first->front(), [&] {
      TelemetryRecord expected = batch[5];
      expected.sequence = 5;
      return expected;
    }());
  }
  auto tail = telemetry().readTelemetry(1, 8, 100, 0);
  ASSERT_TRUE(tail.isOk());
  EXPECT_EQ(tail->size(), 1u);
}

TEST_P(TelemetryConformanceTest, PartitionInfoFollowsAppendsAndTrims) {
  EXPECT_EQ(info(3), (TelemetryPartitionInfo{3, 0, 0, SystemTime{}, 0}));
  std::vector<TelemetryRecord> batch;
  std::uint64_t bytes = 0;
  for (int n = 0; n < 5; ++n) {
    batch.push_back(makeTelemetry(3, n, 10 - n));  // the last one appended is the oldest
    bytes += telemetrySize(batch.back());
  }
  append(batch);
  EXPECT_EQ(info(3), (TelemetryPartitionInfo{3, 0, 5, batch.back().enqueued_time, bytes}));
  EXPECT_EQ(info(0), (TelemetryPartitionInfo{0, 0, 0, SystemTime{}, 0}));

  // Sizes: the two oldest go by size.
  EXPECT_EQ(trim(3, at(0), bytes - telemetrySize(batch[0]) - 1), 2u);
  bytes -= telemetrySize(batch[0]) + telemetrySize(batch[1]);
  EXPECT_EQ(info(3), (TelemetryPartitionInfo{3, 2, 5, batch.back().enqueued_time, bytes}));
  EXPECT_EQ(trim(3, at(kTelemetryT0 + 100), UINT64_MAX), 3u);
  EXPECT_EQ(info(3), (TelemetryPartitionInfo{3, 5, 5, batch.back().enqueued_time, 0}));

  // Positions never move back.
  EXPECT_EQ(append({makeTelemetry(3, 5, 1)}), std::vector<std::int64_t>{5});
  EXPECT_EQ(info(3), (TelemetryPartitionInfo{3, 5, 6, at(kTelemetryT0 + 1, 250),
                                             telemetrySize(makeTelemetry(3, 5, 1))}));
  EXPECT_EQ(numbers(3), std::vector<int>{5});
}

TEST_P(TelemetryConformanceTest, ReadingFromATrimmedPositionStartsAtTheBegin) {
  std::vector<TelemetryRecord> batch;
  for (int n = 0; n < 6; ++n) batch.push_back(makeTelemetry(0, n, n));
  append(batch);
  EXPECT_EQ(trim(0, at(kTelemetryT0 + 3), UINT64_MAX), 3u);
  EXPECT_EQ(numbers(0, 0), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(numbers(0, 2), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(numbers(0, 4), (std::vector<int>{4, 5}));
  EXPECT_EQ(numbers(0, -5), (std::vector<int>{3, 4, 5}));
  auto first = telemetry().readTelemetry(0, 1, 1, SIZE_MAX);
  ASSERT_TRUE(first.isOk());
  ASSERT_EQ(first->size(), 1u);
  EXPECT_EQ(first->front().sequence, 3);
}

TEST_P(TelemetryConformanceTest, SequenceAfterFindsTheFirstRecordEnqueuedLater) {
  EXPECT_EQ(after(1, at(kTelemetryT0)), 0) << "a partition never used";
  // Times in sequence order: 10, 20, 20, 15 (a node with a late clock), 30, 20.
  const std::int64_t offsets[] = {10, 20, 20, 15, 30, 20};
  std::vector<TelemetryRecord> batch;
  for (int n = 0; n < 6; ++n) batch.push_back(makeTelemetry(1, n, offsets[n]));
  append(batch);
  auto time = [](std::int64_t second, std::int64_t extra = 250) {
    return at(kTelemetryT0 + second, extra);
  };
  EXPECT_EQ(after(1, time(0)), 0);
  EXPECT_EQ(after(1, time(10, 249)), 0);
  EXPECT_EQ(after(1, time(10)), 1) << "strictly after: equal times do not count";
  EXPECT_EQ(after(1, time(14)), 1);
  EXPECT_EQ(after(1, time(15)), 1);
  EXPECT_EQ(after(1, time(19)), 1);
  EXPECT_EQ(after(1, time(20)), 4) << "past both 20s and the late 15";
  EXPECT_EQ(after(1, time(29)), 4);
  EXPECT_EQ(after(1, time(30)), 6) << "none later: next_sequence";
  EXPECT_EQ(after(1, time(1000)), 6);
  EXPECT_EQ(after(0, time(0)), 0);

  // Trimmed records are not found.
  EXPECT_EQ(trim(1, time(15), UINT64_MAX), 1u);
  EXPECT_EQ(after(1, time(0)), 1);
  EXPECT_EQ(trim(1, time(1000), UINT64_MAX), 5u);
  EXPECT_EQ(after(1, time(0)), 6);
}

TEST_P(TelemetryConformanceTest, TrimByAgeRemovesOnlyFromTheStart) {
  // Times in sequence order: 1, 2, 9, 3, 4: the 3 and 4 wait for the 9 in front of them.
  const std::int64_t offsets[] = {1, 2, 9, 3, 4};
  std::vector<TelemetryRecord> batch;
  for (int n = 0; n < 5; ++n) batch.push_back(makeTelemetry(2, n, offsets[n]));
  append(batch);
  EXPECT_EQ(trim(2, at(kTelemetryT0 + 1, 250), UINT64_MAX), 0u) << "strictly before";
  EXPECT_EQ(trim(2, at(kTelemetryT0 + 5), UINT64_MAX), 2u);
  EXPECT_EQ(numbers(2), (std::vector<int>{2, 3, 4}));
  EXPECT_EQ(trim(2, at(kTelemetryT0 + 5), UINT64_MAX), 0u);
  EXPECT_EQ(trim(2, at(kTelemetryT0 + 10), UINT64_MAX), 3u);
  EXPECT_TRUE(readAll(2).empty());
  EXPECT_EQ(info(2).bytes, 0u);
  EXPECT_EQ(trim(2, at(kTelemetryT0 + 10), 0), 0u);
  EXPECT_EQ(trim(0, at(kTelemetryT0 + 10), 0), 0u) << "a partition never used";
}

TEST_P(TelemetryConformanceTest, TrimBySizeRemovesTheOldestUntilTheRestFits) {
  std::vector<TelemetryRecord> batch;
  for (int n = 0; n < 6; ++n) {
    batch.push_back(
        makeTelemetry(0, n, n, std::string(static_cast<std::size_t>(50 * (n + 1)), 'x')));
  }
  append(batch);
  std::uint64_t total = 0;
  for (const TelemetryRecord& record : batch) total += telemetrySize(record);
  EXPECT_EQ(trim(0, at(0), total), 0u) << "exactly max_bytes fits";
  EXPECT_EQ(trim(0, at(0), total - 1), 1u);
  const std::uint64_t last_two = telemetrySize(batch[4]) + telemetrySize(batch[5]);
  EXPECT_EQ(trim(0, at(0), last_two), 3u);
  EXPECT_EQ(numbers(0), (std::vector<int>{4, 5}));
  EXPECT_EQ(info(0).bytes, last_two);
  // Age first, then size: the age removes 4, the size would keep 5 anyway.
  EXPECT_EQ(trim(0, at(kTelemetryT0 + 5), telemetrySize(batch[5])), 1u);
  EXPECT_EQ(trim(0, at(0), 0), 1u);
  EXPECT_EQ(info(0), (TelemetryPartitionInfo{0, 6, 6, batch.back().enqueued_time, 0}));
}

TEST_P(TelemetryConformanceTest, TrimRemovesAtMostItsLimit) {
  std::vector<TelemetryRecord> batch;
  for (int n = 0; n < 10; ++n) batch.push_back(makeTelemetry(1, n, n));
  append(batch);
  EXPECT_EQ(trim(1, at(kTelemetryT0 + 100), UINT64_MAX, 0), 0u);
  EXPECT_EQ(trim(1, at(kTelemetryT0 + 100), UINT64_MAX, 3), 3u);
  EXPECT_EQ(info(1).begin_sequence, 3);
  // Age and size together count against one limit.
  EXPECT_EQ(trim(1, at(kTelemetryT0 + 5), 0, 4), 4u);
  EXPECT_EQ(info(1).begin_sequence, 7);
  EXPECT_EQ(trim(1, at(0), 0, 100), 3u);
  EXPECT_EQ(info(1), (TelemetryPartitionInfo{1, 10, 10, batch.back().enqueued_time, 0}));
}

TEST_P(TelemetryConformanceTest, BodiesKeepEveryByte) {
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte += static_cast<char>(b);
  const std::vector<std::string> bodies = {std::string("\0", 1), std::string("a\0b\0\0", 5),
                                           "\xff\xfe\xc3\x28 not utf-8 \x80", every_byte,
                                           std::string(70000, '\0') + "end"};
  std::vector<TelemetryRecord> batch;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    batch.push_back(makeTelemetry(0, static_cast<int>(i), 0, bodies[i]));
  }
  append(batch);
  auto read = readAll(0);
  ASSERT_EQ(read.size(), bodies.size());
  std::uint64_t bytes = 0;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    EXPECT_EQ(read[i].body, bodies[i]) << "body " << i;
    bytes += telemetrySize(batch[i]);
  }
  EXPECT_EQ(info(0).bytes, bytes);
}

TEST_P(TelemetryConformanceTest, NegativePartitionsAreArgumentInvalid) {
  EXPECT_EQ(telemetry().appendTelemetry({makeTelemetry(0, 0), makeTelemetry(-1, 1)}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(readAll(0).empty()) << "nothing of the refused append is stored";
  EXPECT_EQ(telemetry().readTelemetry(-1, 0, 10, SIZE_MAX).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(telemetry().telemetrySequenceAfter(-2, at(0)).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(telemetry().telemetryPartition(-1).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(telemetry().trimTelemetry(-1, at(0), 0, 10).code(), ErrorCode::ArgumentInvalid);
}

TEST_P(TelemetryConformanceTest, TheLogSurvivesReopening) {
  std::vector<TelemetryRecord> batch;
  for (int n = 0; n < 4; ++n) batch.push_back(makeTelemetry(n % 2, n, n));
  batch.push_back(makeTelemetry(1, 4, 4, std::string("x\0y\xff", 4)));
  append(batch);
  EXPECT_EQ(trim(0, at(kTelemetryT0 + 1), UINT64_MAX), 1u);
  EXPECT_EQ(trim(1, at(kTelemetryT0 + 4), UINT64_MAX), 2u) << "the newest of partition 1 stays";
  const auto zero = readAll(0);
  const auto one = readAll(1);
  const auto info_zero = info(0);
  const auto info_one = info(1);

  reopen();
  EXPECT_EQ(readAll(0), zero);
  EXPECT_EQ(readAll(1), one);
  EXPECT_EQ(info(0), info_zero);
  EXPECT_EQ(info(1), info_one);
  EXPECT_EQ(append({makeTelemetry(1, 5, 5), makeTelemetry(0, 6, 6)}),
            (std::vector<std::int64_t>{3, 2}));
}

TEST_P(TelemetryConformanceTest, ConcurrentAppendsLeaveNoGapAndReadersSeeNoHole) {
  constexpr int kThreads = 8;
  constexpr int kAppends = 60;  // per thread
  constexpr std::int32_t kPartitions = 3;
  // A backend that several processes share gets a second store of its own, as another
  // process would have.
  std::unique_ptr<Store> second;
  if (store_->cluster() != nullptr) {
    auto opened = location_->open();
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    second = std::move(opened).value();
  }

  std::atomic<bool> writing{true};
  std::atomic<int> failures{0};
  std::mutex mutex;
  std::vector<std::set<std::int64_t>> assigned(kPartitions);
  // Readers poll each partition from their last position: the next record they get must
  // always be that position (a hole would show as a later one).
  std::vector<std::thread> readers;
  std::vector<std::int64_t> read_up_to(kPartitions, 0);
  std::vector<std::string> holes;
  for (std::int32_t p = 0; p < kPartitions; ++p) {
    TelemetryStore& store = second != nullptr && p % 2 == 1 ? second->telemetry() : telemetry();
    readers.emplace_back([&, p] {
      std::int64_t position = 0;
      bool last_round = false;
      while (true) {
        const bool done = !writing.load();
        auto records = store.readTelemetry(p, position, 7, SIZE_MAX);
        if (!records.isOk()) {
          ++failures;
          return;
        }
        for (const TelemetryRecord& record : *records) {
          if (record.sequence != position) {
            std::lock_guard guard(mutex);
            holes.push_back("partition " + std::to_string(p) + ": expected " +
                            std::to_string(position) + ", got " + std::to_string(record.sequence));
          }
          position = record.sequence + 1;
        }
        if (records->empty()) {
          if (last_round) break;
          if (done) last_round = true;
          std::this_thread::yield();
        }
      }
      read_up_to[static_cast<std::size_t>(p)] = position;
    });
  }

  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    TelemetryStore& store = second != nullptr && t % 2 == 1 ? second->telemetry() : telemetry();
    writers.emplace_back([&, t] {
      for (int i = 0; i < kAppends; ++i) {
        std::vector<TelemetryRecord> records;
        const std::int32_t p = (t + i) % kPartitions;
        records.push_back(makeTelemetry(p, t * 1000 + i, i));
        // Every fifth call appends to two partitions, in either order.
        if (i % 5 == 0) records.push_back(makeTelemetry((p + 1 + t % 2) % kPartitions, -1, i));
        auto sequences = store.appendTelemetry(records);
        if (!sequences.isOk() || sequences->size() != records.size()) {
          ++failures;
          continue;
        }
        std::lock_guard guard(mutex);
        for (std::size_t r = 0; r < records.size(); ++r) {
          const bool fresh = assigned[static_cast<std::size_t>(records[r].partition)]
                                 .insert((*sequences)[r])
                                 .second;
          if (!fresh) holes.push_back("duplicate sequence " + std::to_string((*sequences)[r]));
        }
      }
    });
  }
  for (std::thread& writer : writers) writer.join();
  writing = false;
  for (std::thread& reader : readers) reader.join();

  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(holes.empty()) << holes.front();
  std::size_t total = 0;
  for (std::int32_t p = 0; p < kPartitions; ++p) {
    const auto& sequences = assigned[static_cast<std::size_t>(p)];
    total += sequences.size();
    // Gapless: exactly 0 .. n-1.
    ASSERT_FALSE(sequences.empty());
    EXPECT_EQ(*sequences.begin(), 0) << p;
    EXPECT_EQ(*sequences.rbegin(), static_cast<std::int64_t>(sequences.size()) - 1) << p;
    EXPECT_EQ(info(p).next_sequence, static_cast<std::int64_t>(sequences.size())) << p;
    EXPECT_EQ(read_up_to[static_cast<std::size_t>(p)], static_cast<std::int64_t>(sequences.size()))
        << p;
    const auto records = readAll(p);
    ASSERT_EQ(records.size(), sequences.size()) << p;
    // Within one writer, a partition's records keep the writer's order.
    std::map<int, int> last_of_writer;
    for (const TelemetryRecord& record : records) {
      const int n = telemetryNumber(record);
      if (n < 0) continue;
      auto [it, inserted] = last_of_writer.emplace(n / 1000, n);
      if (!inserted) {
        EXPECT_LT(it->second, n) << p;
        it->second = n;
      }
    }
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kThreads * kAppends + kThreads * kAppends / 5));
}

// --- consumer groups ---

class ConsumerGroupConformanceTest : public StoreConformanceTest {
 protected:
  TelemetryStore& telemetry() { return store_->telemetry(); }

  std::vector<std::string> names() {
    auto groups = telemetry().listConsumerGroups();
    EXPECT_TRUE(groups.isOk()) << groups.status().toString();
    std::vector<std::string> result;
    if (groups.isOk()) {
      for (const ConsumerGroupRecord& group : *groups) result.push_back(group.name);
    }
    return result;
  }

  void create(const std::string& name, std::int64_t created = 1700000000,
              std::size_t max_groups = 100) {
    Status created_group =
        telemetry().createConsumerGroup({name, at(created, 123456789)}, max_groups);
    ASSERT_TRUE(created_group.isOk()) << name << ": " << created_group.toString();
  }
};

TEST_P(ConsumerGroupConformanceTest, DefaultExistsInAFreshStore) {
  auto groups = telemetry().listConsumerGroups();
  ASSERT_TRUE(groups.isOk()) << groups.status().toString();
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ(groups->front().name, "$Default");
  // Created by the schema migration, i.e. just now.
  const auto age = std::chrono::system_clock::now() - groups->front().created_time;
  EXPECT_GT(age, -std::chrono::minutes(1));
  EXPECT_LT(age, std::chrono::minutes(10));
  auto got = telemetry().getConsumerGroup("$Default");
  ASSERT_TRUE(got.isOk()) << got.status().toString();
  EXPECT_EQ(*got, groups->front());
}

TEST_P(ConsumerGroupConformanceTest, CreatedGroupsReadBackAndListByLowerCasedName) {
  create("zeta", 1700000001);
  create("Alpha", 1700000002);
  create("beta.2-x_y", 1700000003);
  create("ALPHB", 1700000004);
  EXPECT_EQ(names(),
            (std::vector<std::string>{"$Default", "Alpha", "ALPHB", "beta.2-x_y", "zeta"}));
  auto got = telemetry().getConsumerGroup("beta.2-x_y");
  ASSERT_TRUE(got.isOk()) << got.status().toString();
  EXPECT_EQ(*got, (ConsumerGroupRecord{"beta.2-x_y", at(1700000003, 123456789)}));
}

TEST_P(ConsumerGroupConformanceTest, NamesCompareCaseInsensitivelyAndKeepTheirCase) {
  create("Readers");
  for (const char* spelling : {"Readers", "readers", "READERS", "rEaDeRs"}) {
    auto got = telemetry().getConsumerGroup(spelling);
    ASSERT_TRUE(got.isOk()) << spelling << ": " << got.status().toString();
    EXPECT_EQ(got->name, "Readers") << spelling;
  }
  auto by_sdk_default = telemetry().getConsumerGroup("$default");
  ASSERT_TRUE(by_sdk_default.isOk()) << by_sdk_default.status().toString();
  EXPECT_EQ(by_sdk_default->name, "$Default");

  for (const char* spelling : {"readers", "READERS", "$DEFAULT", "$default"}) {
    Status again = telemetry().createConsumerGroup({spelling, at(1700000100)}, 100);
    EXPECT_EQ(again.code(), ErrorCode::ConsumerGroupAlreadyExists) << spelling;
  }
  EXPECT_EQ(names(), (std::vector<std::string>{"$Default", "Readers"}));
  EXPECT_EQ(telemetry().getConsumerGroup("readers")->created_time, at(1700000000, 123456789))
      << "a refused create changes nothing";
}

TEST_P(ConsumerGroupConformanceTest, DeleteRemovesAGroupInAnyCase) {
  create("one");
  create("Two");
  ASSERT_TRUE(telemetry().deleteConsumerGroup("TWO").isOk());
  EXPECT_EQ(names(), (std::vector<std::string>{"$Default", "one"}));
  EXPECT_EQ(telemetry().getConsumerGroup("Two").code(), ErrorCode::ConsumerGroupNotFound);
  EXPECT_EQ(telemetry().deleteConsumerGroup("Two").code(), ErrorCode::ConsumerGroupNotFound);
  EXPECT_EQ(telemetry().deleteConsumerGroup("never").code(), ErrorCode::ConsumerGroupNotFound);
  EXPECT_EQ(telemetry().getConsumerGroup("never").code(), ErrorCode::ConsumerGroupNotFound);
  create("two", 1700000500);  // the name is free again
  EXPECT_EQ(telemetry().getConsumerGroup("TWO")->name, "two");
}

TEST_P(ConsumerGroupConformanceTest, DefaultCannotBeDeleted) {
  for (const char* spelling : {"$Default", "$default", "$DEFAULT"}) {
    Status deleted = telemetry().deleteConsumerGroup(spelling);
    EXPECT_EQ(deleted.code(), ErrorCode::ArgumentInvalid) << spelling;
    EXPECT_NE(deleted.message().find("$Default cannot be deleted"), std::string::npos)
        << deleted.message();
  }
  EXPECT_EQ(names(), (std::vector<std::string>{"$Default"}));
}

TEST_P(ConsumerGroupConformanceTest, CreatesStopAtTheQuotaCountingDefault) {
  create("g1", 1700000000, 3);
  create("g2", 1700000000, 3);
  Status full = telemetry().createConsumerGroup({"g3", at(1700000000)}, 3);
  EXPECT_EQ(full.code(), ErrorCode::IotHubQuotaExceeded) << full.toString();
  // An existing name is a conflict even when the hub is full.
  EXPECT_EQ(telemetry().createConsumerGroup({"G1", at(1700000000)}, 3).code(),
            ErrorCode::ConsumerGroupAlreadyExists);
  EXPECT_EQ(names(), (std::vector<std::string>{"$Default", "g1", "g2"}));
  ASSERT_TRUE(telemetry().deleteConsumerGroup("g1").isOk());
  create("g3", 1700000000, 3);
  EXPECT_EQ(names(), (std::vector<std::string>{"$Default", "g2", "g3"}));
}

TEST_P(ConsumerGroupConformanceTest, GroupsSurviveReopening) {
  create("kept", 1700000000);
  reopen();
  EXPECT_EQ(names(), (std::vector<std::string>{"$Default", "kept"}));
  EXPECT_EQ(telemetry().getConsumerGroup("KEPT").value(),
            (ConsumerGroupRecord{"kept", at(1700000000, 123456789)}));
}

TEST_P(ConsumerGroupConformanceTest, ConcurrentCreatorsOfTheLastFreeSlotLetExactlyOneWin) {
  constexpr int kRounds = 10;
  constexpr int kThreads = 6;
  // A backend that several processes share gets a second store of its own, as another
  // process would have.
  std::unique_ptr<Store> second;
  if (store_->cluster() != nullptr) {
    auto opened = location_->open();
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    second = std::move(opened).value();
  }
  for (int round = 0; round < kRounds; ++round) {
    // Round r: $Default and r groups exist; the quota leaves one slot.
    const std::size_t max_groups = static_cast<std::size_t>(round) + 2;
    std::atomic<int> won{0};
    std::atomic<int> refused{0};
    std::atomic<int> other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      TelemetryStore& store = second != nullptr && t % 2 == 1 ? second->telemetry() : telemetry();
      threads.emplace_back([&, t] {
        Status created = store.createConsumerGroup(
            {"r" + std::to_string(round) + "-t" + std::to_string(t), at(1700000000)}, max_groups);
        if (created.isOk()) {
          ++won;
        } else if (created.code() == ErrorCode::IotHubQuotaExceeded) {
          ++refused;
        } else {
          ++other;
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(won.load(), 1) << "round " << round;
    EXPECT_EQ(refused.load(), kThreads - 1) << "round " << round;
    EXPECT_EQ(other.load(), 0) << "round " << round;
    EXPECT_EQ(names().size(), max_groups) << "round " << round;
  }
}

// --- durability ---

TEST_P(StoreConformanceTest, DataSurvivesCloseAndReopen) {
  createDevice("device-1");
  ASSERT_TRUE(jobs().createJob(makeJob("job-1", 1700000000)).isOk());
  ASSERT_TRUE(deviceJobs().putDeviceJobs({makeDeviceJob("job-1", "device-1")}).isOk());
  AccessPolicyRecord owner{"iothubowner", "a2V5", "a2V5Mg==", kRegistryRead};
  ASSERT_TRUE(policies().insertMissingPolicies({owner}).isOk());

  reopen();
  EXPECT_EQ(registry().getDevice("device-1").value(), makeDevice("device-1"));
  EXPECT_EQ(twins().getTwin("device-1").value(), makeTwin("device-1"));
  EXPECT_EQ(jobs().getJob("job-1").value(), makeJob("job-1", 1700000000));
  EXPECT_EQ(deviceJobs().listAllDeviceJobs("", "", 10).value(),
            std::vector<DeviceJobRecord>{makeDeviceJob("job-1", "device-1")});
  EXPECT_EQ(policies().listPolicies().value(), std::vector<AccessPolicyRecord>{owner});
}

std::string backendName(const ::testing::TestParamInfo<StoreBackend>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(
    Backends, StoreConformanceTest,
    ::testing::Values(StoreBackend{"Sqlite", [] { return std::make_unique<SqliteLocation>(); }},
                      StoreBackend{"Postgres",
                                   [] { return std::make_unique<PostgresLocation>(); }}),
    backendName);

INSTANTIATE_TEST_SUITE_P(
    Backends, C2dConformanceTest,
    ::testing::Values(StoreBackend{"Sqlite", [] { return std::make_unique<SqliteLocation>(); }},
                      StoreBackend{"Postgres",
                                   [] { return std::make_unique<PostgresLocation>(); }}),
    backendName);

INSTANTIATE_TEST_SUITE_P(
    Backends, ConsumerGroupConformanceTest,
    ::testing::Values(StoreBackend{"Sqlite", [] { return std::make_unique<SqliteLocation>(); }},
                      StoreBackend{"Postgres",
                                   [] { return std::make_unique<PostgresLocation>(); }}),
    backendName);

INSTANTIATE_TEST_SUITE_P(
    Backends, TelemetryConformanceTest,
    ::testing::Values(StoreBackend{"Sqlite", [] { return std::make_unique<SqliteLocation>(); }},
                      StoreBackend{"Postgres",
                                   [] { return std::make_unique<PostgresLocation>(); }}),
    backendName);

}  // namespace
}  // namespace iothub::store
