// The storage conformance suite: every backend must pass the same tests. A backend joins
// by adding a StoreBackend to the INSTANTIATE_TEST_SUITE_P list at the bottom.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
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

}  // namespace
}  // namespace iothub::store
