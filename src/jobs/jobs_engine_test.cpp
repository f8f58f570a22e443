#include "jobs/jobs_engine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <thread>

#include "common/time_format.hpp"
#include "query/query.hpp"
#include "store/postgresql/pg_store.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/postgres_server.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::jobs {
namespace {

using namespace std::chrono_literals;

// Waits (real time) until `done` holds; fails the test after the deadline.
template <class Pred>
bool waitUntil(Pred done, std::chrono::milliseconds deadline = 15000ms) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return done();
}

// Devices behave by the prefix of their id: "off-" are offline, "late-" offline until
// connect(), "ghost-" offline although the test's twins show them connected, "flap-"
// offline for their first two calls, "tmo-" never answer in time (GatewayTimeout), "slow-" answer
// only when released, "bad-" fail twin updates with a precondition failure, "flaky-" and "down-"
// with transient store errors (see updateTwin); others succeed. A twin update that
// succeeds writes its outcome row to the store given to recordInto() (these devices have
// no twin in the store).
class FakeOperations final : public DeviceOperations {
 public:
  void recordInto(store::Store* store) { store_ = store; }
  void invokeMethod(methods::MethodCall call, methods::MethodCallback done) override {
    std::unique_lock lock(mutex_);
    calls_.push_back(call.device_id);
    const auto made = std::count(calls_.begin(), calls_.end(), call.device_id);
    // "flap-" devices are offline for their first two calls.
    if (call.device_id.starts_with("off-") || call.device_id.starts_with("ghost-") ||
        (call.device_id.starts_with("late-") && !online_.contains(call.device_id)) ||
        (call.device_id.starts_with("flap-") && made <= 2)) {
      lock.unlock();
      done(Status(ErrorCode::DeviceNotOnline, "Timed out waiting for device to connect."));
      return;
    }
    if (call.device_id.starts_with("tmo-")) {  // connected, never answers in time
      lock.unlock();
      done(Status(ErrorCode::GatewayTimeout, "Timed out waiting for the response from device."));
      return;
    }
    if (call.device_id.starts_with("slow-")) {
      held_.emplace_back(std::move(call), std::move(done));
      return;
    }
    lock.unlock();
    if (call.device_id.starts_with("err-")) {  // answers, with a failure status
      done(methods::MethodResult{500, R"({"error":"flash write failed"})"});
      return;
    }
    done(methods::MethodResult{200, R"({"echo":)" + call.payload_json + "}"});
  }
  Status updateTwin(std::string_view device_id, const json::object& update,
                    const store::DeviceJobWrite& outcome) override {
    {
      std::lock_guard lock(mutex_);
      auto& attempts = twin_updates_[std::string(device_id)];
      attempts.push_back(update);
      if (device_id.starts_with("bad-")) return {ErrorCode::PreconditionFailed, "etag mismatch"};
      // The store behind the twin fails transiently: twice for "flaky-", always for "down-".
      if ((device_id.starts_with("flaky-") && attempts.size() <= 2) ||
          device_id.starts_with("down-"))
        return {ErrorCode::ServiceUnavailable, "injected: store unavailable"};
    }
    if (store_ == nullptr) return Status::ok();
    return outcome.lease ? store_->jobs().putLeasedDeviceJobs(*outcome.lease, {outcome.row})
                         : store_->deviceJobs().putDeviceJobs({outcome.row});
  }
  std::vector<Status> updateTwins(const std::vector<std::string>& device_ids,
                                  const json::object& update,
                                  const std::vector<store::DeviceJobWrite>& outcomes) override {
    {
      std::lock_guard lock(mutex_);
      batch_sizes_.push_back(device_ids.size());
    }
    return DeviceOperations::updateTwins(device_ids, update, outcomes);
  }
  // The sizes of the batches updateTwins was called with, in order.
  std::vector<std::size_t> twinBatchSizes() const {
    std::lock_guard lock(mutex_);
    return batch_sizes_;
  }
  // Answers every held call (status 200).
  std::size_t release() {
    std::vector<std::pair<methods::MethodCall, methods::MethodCallback>> held;
    {
      std::lock_guard lock(mutex_);
      held.swap(held_);
    }
    for (auto& [call, done] : held) done(methods::MethodResult{200, "{}"});
    return held.size();
  }
  std::size_t heldCount() const {
    std::lock_guard lock(mutex_);
    return held_.size();
  }
  std::vector<std::string> calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  void connect(const std::string& device_id) {
    std::lock_guard lock(mutex_);
    online_.insert(device_id);
  }
  bool shownConnected(const std::string& device_id) const {
    std::lock_guard lock(mutex_);
    if (device_id.starts_with("off-")) return false;
    return !device_id.starts_with("late-") || online_.contains(device_id);
  }
  std::size_t callsOf(std::string_view device_id) const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::count(calls_.begin(), calls_.end(), device_id));
  }
  std::map<std::string, std::vector<json::object>> twinUpdates() const {
    std::lock_guard lock(mutex_);
    return twin_updates_;
  }

 private:
  store::Store* store_ = nullptr;
  mutable std::mutex mutex_;
  std::vector<std::string> calls_;
  std::set<std::string> online_;
  std::vector<std::pair<methods::MethodCall, methods::MethodCallback>> held_;
  std::map<std::string, std::vector<json::object>> twin_updates_;
  std::vector<std::size_t> batch_sizes_;
};

// The tests' store with faults injected into the job and device-job stores: before each
// call `fault` sees its name ("getJob", "updateJob", "putDeviceJobs", "listDeviceJobs", ...)
// and the rows a putDeviceJobs writes, and returns the error to answer instead of making
// the call, or nullopt to make it. Calls are serialized for `fault`, which may keep state.
class FaultyStore final : public store::Store {
 public:
  using Fault = std::function<std::optional<Status>(std::string_view call,
                                                    const std::vector<store::DeviceJobRecord>*)>;
  FaultyStore(store::Store& inner, Fault fault)
      : inner_(inner), fault_(std::move(fault)), jobs_(*this), device_jobs_(*this), twins_(*this) {}

  store::RegistryStore& registry() override { return inner_.registry(); }
  store::TwinStore& twins() override { return twins_; }
  store::JobStore& jobs() override { return jobs_; }
  store::DeviceJobStore& deviceJobs() override { return device_jobs_; }
  store::AccessPolicyStore& policies() override { return inner_.policies(); }
  store::MqttSessionStore& mqttSessions() override { return inner_.mqttSessions(); }
  store::C2dStore& c2d() override { return inner_.c2d(); }
  store::TelemetryStore& telemetry() override { return inner_.telemetry(); }

 private:
  std::optional<Status> check(std::string_view call,
                              const std::vector<store::DeviceJobRecord>* rows = nullptr) {
    std::lock_guard lock(mutex_);
    return fault_(call, rows);
  }

  class Jobs final : public store::JobStore {
   public:
    explicit Jobs(FaultyStore& owner) : owner_(owner) {}
    Status createJob(const store::JobRecord& job) override {
      if (auto e = owner_.check("createJob")) return *e;
      return owner_.inner_.jobs().createJob(job);
    }
    Result<store::JobRecord> getJob(std::string_view job_id) override {
      if (auto e = owner_.check("getJob")) return *e;
      return owner_.inner_.jobs().getJob(job_id);
    }
    Result<store::JobRecord> updateJob(std::string_view job_id, store::JobMutation m) override {
      if (auto e = owner_.check("updateJob")) return *e;
      return owner_.inner_.jobs().updateJob(job_id, std::move(m));
    }
    Result<std::vector<store::JobRecord>> listJobs(const store::JobFilter& filter,
                                                   std::string_view after,
                                                   std::size_t limit) override {
      if (auto e = owner_.check("listJobs")) return *e;
      return owner_.inner_.jobs().listJobs(filter, after, limit);
    }
    Result<std::vector<store::JobRecord>> jobsWithStatus(
        const std::vector<std::string>& statuses) override {
      if (auto e = owner_.check("jobsWithStatus")) return *e;
      return owner_.inner_.jobs().jobsWithStatus(statuses);
    }
    Result<std::vector<store::ClaimedJob>> claimJobs(std::string_view owner, SystemTime due_by,
                                                     std::chrono::milliseconds ttl,
                                                     std::size_t limit) override {
      if (auto e = owner_.check("claimJobs")) return *e;
      return owner_.inner_.jobs().claimJobs(owner, due_by, ttl, limit);
    }
    Result<std::vector<store::JobLeaseRenewal>> renewJobLeases(
        const std::vector<store::JobLease>& leases, std::chrono::milliseconds ttl) override {
      if (auto e = owner_.check("renewJobLeases")) return *e;
      return owner_.inner_.jobs().renewJobLeases(leases, ttl);
    }
    Status releaseJobLease(const store::JobLease& lease) override {
      if (auto e = owner_.check("releaseJobLease")) return *e;
      return owner_.inner_.jobs().releaseJobLease(lease);
    }
    Result<std::size_t> releaseJobLeasesOf(std::string_view owner) override {
      if (auto e = owner_.check("releaseJobLeasesOf")) return *e;
      return owner_.inner_.jobs().releaseJobLeasesOf(owner);
    }
    Result<store::JobRecord> updateLeasedJob(const store::JobLease& lease,
                                             store::JobMutation m) override {
      if (auto e = owner_.check("updateJob")) return *e;
      return owner_.inner_.jobs().updateLeasedJob(lease, std::move(m));
    }
    Status putLeasedDeviceJobs(const store::JobLease& lease,
                               const std::vector<store::DeviceJobRecord>& rows) override {
      if (auto e = owner_.check("putDeviceJobs", &rows)) return *e;
      return owner_.inner_.jobs().putLeasedDeviceJobs(lease, rows);
    }
    Status requestJobCancel(std::string_view job_id) override {
      if (auto e = owner_.check("requestJobCancel")) return *e;
      return owner_.inner_.jobs().requestJobCancel(job_id);
    }

   private:
    FaultyStore& owner_;
  };

  class DeviceJobs final : public store::DeviceJobStore {
   public:
    explicit DeviceJobs(FaultyStore& owner) : owner_(owner) {}
    Status putDeviceJobs(const std::vector<store::DeviceJobRecord>& rows) override {
      if (auto e = owner_.check("putDeviceJobs", &rows)) return *e;
      return owner_.inner_.deviceJobs().putDeviceJobs(rows);
    }
    Result<std::vector<store::DeviceJobRecord>> listDeviceJobs(
        std::string_view job_id, std::optional<std::string_view> status, std::string_view after,
        std::size_t limit) override {
      if (auto e = owner_.check("listDeviceJobs")) return *e;
      return owner_.inner_.deviceJobs().listDeviceJobs(job_id, status, after, limit);
    }
    Result<std::vector<store::DeviceJobRecord>> listAllDeviceJobs(std::string_view after_job,
                                                                  std::string_view after_device,
                                                                  std::size_t limit) override {
      if (auto e = owner_.check("listAllDeviceJobs")) return *e;
      return owner_.inner_.deviceJobs().listAllDeviceJobs(after_job, after_device, limit);
    }

   private:
    FaultyStore& owner_;
  };

  class Twins final : public store::TwinStore {
   public:
    explicit Twins(FaultyStore& owner) : owner_(owner) {}
    Result<store::TwinRecord> getTwin(std::string_view device_id) override {
      if (auto e = owner_.check("getTwin")) return *e;
      return owner_.inner_.twins().getTwin(device_id);
    }
    Result<store::TwinRecord> updateTwin(std::string_view device_id,
                                         store::TwinMutation mutate) override {
      if (auto e = owner_.check("updateTwin")) return *e;
      return owner_.inner_.twins().updateTwin(device_id, std::move(mutate));
    }
    Result<store::TwinRecord> updateTwinForJob(std::string_view device_id,
                                               store::TwinMutation mutate,
                                               const store::DeviceJobWrite& job_row) override {
      if (auto e = owner_.check("updateTwinForJob")) return *e;
      return owner_.inner_.twins().updateTwinForJob(device_id, std::move(mutate), job_row);
    }
    Result<std::vector<store::TwinRecord>> listTwins(std::string_view after,
                                                     std::size_t limit) override {
      if (auto e = owner_.check("listTwins")) return *e;
      return owner_.inner_.twins().listTwins(after, limit);
    }

   private:
    FaultyStore& owner_;
  };

  store::Store& inner_;
  std::mutex mutex_;
  Fault fault_;  // guarded by mutex_
  Jobs jobs_;
  DeviceJobs device_jobs_;
  Twins twins_;
};

bool writesRunningRow(const std::vector<store::DeviceJobRecord>* rows) {
  return rows != nullptr && std::any_of(rows->begin(), rows->end(),
                                        [](const auto& row) { return row.status == "running"; });
}

class JobsEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = store::SqliteStore::open(dir_.path() / "hub.db",
                                           store::SqliteOptions{.synchronous_full = false});
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    store_ = std::move(opened).value();
    operations_.recordInto(store_.get());
  }
  void TearDown() override {
    engine_.reset();
    faulty_.reset();
  }

  void startEngine(JobsOptions options = {}) {
    options.tick = 5ms;
    options.idle_tick = 5ms;  // the fake clock jumps without telling anyone
    options.flush_interval = 20ms;
    options.twin_workers = 4;
    options.stop_grace = std::min<std::chrono::milliseconds>(options.stop_grace, 100ms);
    engine_ = std::make_unique<JobsEngine>(
        faulty_ ? static_cast<store::Store&>(*faulty_) : *store_, operations_,
        [this](const query::Condition& c) {
          std::lock_guard lock(devices_mutex_);
          std::vector<std::string> out;
          for (const auto& id : devices_) {
            if (c.matches(twinLocked(id))) out.push_back(id);
          }
          return out;
        },
        clock_, options);
    engine_->followDevices([this](std::string_view id) -> std::shared_ptr<const json::object> {
      std::lock_guard lock(devices_mutex_);
      if (!devices_.contains(std::string(id))) return nullptr;
      return std::make_shared<const json::object>(twinLocked(std::string(id)));
    });
    ASSERT_TRUE(engine_->start().isOk());
  }

  void addDevices(std::string_view prefix, int n) {
    std::lock_guard lock(devices_mutex_);
    for (int i = 0; i < n; ++i) devices_.insert(std::string(prefix) + std::to_string(1000 + i));
  }
  // The device's twin as the engine sees it: `twins_` merged over a default that shows
  // the connection the fake operations give it.
  json::object twinLocked(const std::string& id) const {
    json::object twin{
        {"deviceId", id},
        {"connectionState", operations_.shownConnected(id) ? "Connected" : "Disconnected"}};
    if (auto it = twins_.find(id); it != twins_.end()) {
      for (const auto& [k, v] : it->second) twin[k] = v;
    }
    return twin;
  }
  // Creates or changes a device's twin members and tells the engine, as the hub's index does.
  void setTwin(const std::string& id, json::object members) {
    {
      std::lock_guard lock(devices_mutex_);
      devices_.insert(id);
      for (const auto& [k, v] : members) twins_[id][k] = v;
    }
    if (engine_) engine_->deviceChanged(id);
  }
  void connectDevice(const std::string& id) {
    operations_.connect(id);
    if (engine_) engine_->deviceChanged(id);
  }

  json::object create(std::string_view id, std::string body_text) {
    auto body = parseJson(body_text);
    EXPECT_TRUE(body.isOk()) << body_text;
    auto r = engine_->create(id, *body);
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    return r ? *r : json::object{};
  }
  json::object methodJob(std::string_view id, std::string_view condition = "*",
                         std::string extra = "") {
    return create(id,
                  R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"lockDoor",
        "payload":{"lockTime":"10m"},"responseTimeoutInSeconds":30},"startTime":null,"queryCondition":")" +
                      std::string(condition) + "\"" + extra + "}");
  }
  json::object twinJob(std::string_view id, std::string extra = "") {
    return create(id,
                  R"({"type":"scheduleUpdateTwin","updateTwin":{"etag":"*","properties":{"desired":
        {"building":43,"floor":3}}},"startTime":null,"queryCondition":"*")" +
                      extra + "}");
  }

  json::object job(std::string_view id) {
    auto r = engine_->get(id);
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    return r ? *r : json::object{};
  }
  std::string status(std::string_view id) { return std::string(job(id).at("status").as_string()); }
  JobStatistics stats(std::string_view id) {
    json::object j = job(id);
    return JobStatistics::fromJson(findObject(j, "deviceJobStatistics"));
  }
  bool finished(std::string_view id) { return isTerminalJobStatus(status(id)); }

  std::map<std::string, store::DeviceJobRecord> rows(std::string_view id) {
    auto listed = store_->deviceJobs().listDeviceJobs(id, std::nullopt, "", 1000000);
    EXPECT_TRUE(listed.isOk());
    std::map<std::string, store::DeviceJobRecord> out;
    for (auto& r : *listed) out[r.device_id] = r;
    return out;
  }
  std::map<std::string, int> rowCounts(std::string_view id) {
    std::map<std::string, int> counts;
    for (auto& [device, row] : rows(id)) ++counts[row.status];
    return counts;
  }

  static void expectConsistent(const JobStatistics& s) {
    EXPECT_EQ(s.device_count, s.pending + s.running + s.succeeded + s.failed + s.canceled);
  }

  // The engine of the next startEngine() uses the store through `fault`. Unless
  // `on_test_thread`, only calls from other threads than the test's (the engine's) see
  // faults, so what the test reads through the engine is the truth.
  void injectFaults(FaultyStore::Fault fault, bool on_test_thread = false) {
    faulty_ = std::make_unique<FaultyStore>(
        *store_,
        [test_thread = std::this_thread::get_id(), on_test_thread, fault = std::move(fault)](
            std::string_view call, const std::vector<store::DeviceJobRecord>* rows) {
          if (!on_test_thread && std::this_thread::get_id() == test_thread)
            return std::optional<Status>();
          return fault(call, rows);
        });
  }

  iothub::testing::TempDir dir_{"iothub-jobs-test"};
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<FaultyStore> faulty_;
  FakeClock clock_;
  FakeOperations operations_;
  mutable std::mutex devices_mutex_;
  std::set<std::string> devices_;              // guarded by devices_mutex_
  std::map<std::string, json::object> twins_;  // guarded by devices_mutex_
  std::unique_ptr<JobsEngine> engine_;
};

TEST_F(JobsEngineTest, MethodJobRecordsEveryDeviceExactly) {
  addDevices("d", 90);
  addDevices("off-", 30);
  startEngine();
  json::object created = methodJob("lock");
  EXPECT_EQ(created.at("status"), "queued");
  ASSERT_TRUE(waitUntil([&] { return finished("lock"); }));
  EXPECT_EQ(status("lock"), "completed");
  JobStatistics s = stats("lock");
  EXPECT_EQ(s, (JobStatistics{.device_count = 120, .succeeded = 90, .failed = 30}));
  EXPECT_TRUE(job("lock").contains("endTime"));
  auto all = rows("lock");
  ASSERT_EQ(all.size(), 120u);
  const auto& ok = all.at("d1000");
  EXPECT_EQ(ok.status, "completed");
  EXPECT_EQ(ok.document.at("outcome").at("deviceMethodResponse").at("status"), 200);
  EXPECT_EQ(
      ok.document.at("outcome").at("deviceMethodResponse").at("payload").at("echo").at("lockTime"),
      "10m");
  const auto& off = all.at("off-1000");
  EXPECT_EQ(off.status, "failed");
  EXPECT_EQ(off.document.at("error").at("code"), "DeviceNotOnline");
  EXPECT_TRUE(off.document.at("outcome").at("deviceMethodResponse").is_null());
  EXPECT_EQ(operations_.calls().size(), 120u);  // each device called once
}

TEST_F(JobsEngineTest, ADryRunValidatesAndCountsTargetsWithoutCreatingAnything) {
  addDevices("d", 150);
  addDevices("off-", 7);
  startEngine();
  auto body = [](std::string_view condition) {
    return *parseJson(
        R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"lockDoor"},"queryCondition":")" +
        std::string(condition) + "\"}");
  };
  auto all = engine_->dryRun("preview", body("*"));
  ASSERT_TRUE(all.isOk()) << all.status().toString();
  EXPECT_EQ(all->at("deviceCount"), 157);
  const auto& sample = all->at("sampleDeviceIds").as_array();
  ASSERT_EQ(sample.size(), JobsEngine::kDryRunSampleSize);
  EXPECT_EQ(sample[0], "d1000");  // in the selector's order
  auto some = engine_->dryRun("preview", body("STARTSWITH(deviceId, 'off-')"));
  ASSERT_TRUE(some.isOk());
  EXPECT_EQ(some->at("deviceCount"), 7);
  EXPECT_EQ(some->at("sampleDeviceIds").as_array().size(), 7u);
  auto none = engine_->dryRun("preview", body("deviceId = 'nobody'"));
  ASSERT_TRUE(none.isOk());
  EXPECT_EQ(none->at("deviceCount"), 0);
  EXPECT_TRUE(none->at("sampleDeviceIds").as_array().empty());
  // Nothing was stored or started: the id is still free, no device was called.
  EXPECT_EQ(engine_->get("preview").code(), ErrorCode::JobNotFound);
  EXPECT_TRUE(operations_.calls().empty());
  // The whole request is validated as create() would.
  EXPECT_EQ(engine_->dryRun("preview", body("deviceId = ")).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(engine_->dryRun("bad id!", body("*")).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(engine_
                ->dryRun("preview", *parseJson(R"({"type":"scheduleDeviceMethod",
      "queryCondition":"*"})"))
                .code(),
            ErrorCode::ArgumentInvalid);
  methodJob("taken");
  EXPECT_EQ(engine_->dryRun("taken", body("*")).code(), ErrorCode::JobAlreadyExists);
}

TEST_F(JobsEngineTest, FailOnDeviceStatusFailsDevicesThatAnswerOutside2xx) {
  addDevices("d", 5);
  addDevices("err-", 3);
  startEngine();
  // Azure's behaviour by default: an answer is a success, whatever its status.
  methodJob("azure");
  json::object strict = methodJob("strict", "*", R"(,"failOnDeviceStatus":true)");
  EXPECT_EQ(strict.at("failOnDeviceStatus"), true);
  EXPECT_FALSE(job("azure").contains("failOnDeviceStatus"));
  ASSERT_TRUE(waitUntil([&] { return finished("azure") && finished("strict"); }));
  EXPECT_EQ(stats("azure"), (JobStatistics{.device_count = 8, .succeeded = 8}));
  EXPECT_EQ(stats("strict"), (JobStatistics{.device_count = 8, .succeeded = 5, .failed = 3}));
  EXPECT_EQ(status("strict"), "completed");
  EXPECT_EQ(job("strict").at("failOnDeviceStatus"), true);
  auto all = rows("strict");
  const auto& failed = all.at("err-1000");
  EXPECT_EQ(failed.status, "failed");
  EXPECT_EQ(failed.document.at("error").at("code"), "DeviceMethodFailed");
  EXPECT_EQ(failed.document.at("error").at("description"), "The device answered with status 500");
  // The device's answer is kept beside the error.
  EXPECT_EQ(failed.document.at("outcome").at("deviceMethodResponse").at("status"), 500);
  EXPECT_EQ(failed.document.at("outcome").at("deviceMethodResponse").at("payload").at("error"),
            "flash write failed");
  EXPECT_EQ(all.at("d1000").status, "completed");
  EXPECT_EQ(rows("azure").at("err-1000").status, "completed");
  // Not a boolean, or on a twin job: refused.
  for (
      std::string bad :
      {R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*","failOnDeviceStatus":"yes"})",
       R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},"queryCondition":"*","failOnDeviceStatus":true})"}) {
    EXPECT_EQ(engine_->create("bad", *parseJson(bad)).code(), ErrorCode::ArgumentInvalid) << bad;
  }
}

TEST_F(JobsEngineTest, RetryTriesListedErrorsAgainWithDoublingBackoffAcrossARestart) {
  addDevices("d", 3);
  addDevices("flap-", 2);  // offline twice, then answer
  addDevices("off-", 2);   // never online
  addDevices("err-", 1);   // answers 500: DeviceMethodFailed, not listed
  startEngine();
  json::object created = methodJob(
      "r", "*",
      R"(,"failOnDeviceStatus":true,"retry":{"maxAttempts":3,"backoffSeconds":10,"retryOn":["DeviceNotOnline"]})");
  EXPECT_EQ(created.at("retry"),
            *parseJson(R"({"maxAttempts":3,"backoffSeconds":10,"retryOn":["DeviceNotOnline"]})"));
  // First attempts: the offline devices wait, pending, for their second.
  ASSERT_TRUE(waitUntil([&] {
    return stats("r") ==
               JobStatistics{.device_count = 8, .pending = 4, .succeeded = 3, .failed = 1} &&
           rows("r").at("off-1001").document.contains("lastAttemptError");
  }));
  EXPECT_EQ(status("r"), "running");
  auto first = rows("r");
  const auto& waiting = first.at("flap-1000");
  EXPECT_EQ(waiting.status, "pending");
  EXPECT_EQ(waiting.document.at("attempts"), 1);
  EXPECT_EQ(waiting.document.at("nextAttemptTimeUtc").as_string(),
            formatTimestamp(clock_.now() + 10s));
  EXPECT_EQ(waiting.document.at("lastAttemptError").at("code"), "DeviceNotOnline");
  EXPECT_EQ(first.at("d1000").document.at("attempts"), 1);
  EXPECT_EQ(first.at("err-1000").status, "failed");  // DeviceMethodFailed is not listed
  EXPECT_EQ(first.at("err-1000").document.at("attempts"), 1);

  // A restart keeps the schedule: nothing is tried before it is due.
  engine_->stop();
  engine_.reset();
  startEngine();
  ASSERT_TRUE(waitUntil([&] { return status("r") == "running" && stats("r").pending == 4; }));
  clock_.advance(9s);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(operations_.callsOf("flap-1000"), 1u);
  clock_.advance(1s);
  // Second attempts fail again; the next one waits twice as long.
  ASSERT_TRUE(waitUntil([&] { return operations_.callsOf("off-1001") == 2; }));
  // Its second attempt's outcome written (not only its running row, which says 2 as well).
  ASSERT_TRUE(waitUntil([&] {
    const auto row = rows("r").at("off-1001");
    return row.status == "pending" && row.document.contains("nextAttemptTimeUtc") &&
           row.document.at("attempts") == 2;
  }));
  EXPECT_EQ(rows("r").at("off-1001").document.at("nextAttemptTimeUtc"),
            json::value(formatTimestamp(clock_.now() + 20s)));
  clock_.advance(19s);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(operations_.callsOf("flap-1000"), 2u);
  clock_.advance(1s);
  ASSERT_TRUE(waitUntil([&] { return finished("r"); }));
  EXPECT_EQ(status("r"), "completed");
  EXPECT_EQ(stats("r"), (JobStatistics{.device_count = 8, .succeeded = 5, .failed = 3}));
  auto last = rows("r");
  EXPECT_EQ(last.at("flap-1001").status, "completed");
  EXPECT_EQ(last.at("flap-1001").document.at("attempts"), 3);
  EXPECT_FALSE(last.at("flap-1001").document.contains("nextAttemptTimeUtc"));
  EXPECT_EQ(last.at("off-1000").status, "failed");
  EXPECT_EQ(last.at("off-1000").document.at("attempts"), 3);
  EXPECT_EQ(last.at("off-1000").document.at("error").at("code"), "DeviceNotOnline");
  for (std::string id : {"d1000", "err-1000"}) EXPECT_EQ(operations_.callsOf(id), 1u) << id;
  for (std::string id : {"flap-1000", "off-1000"}) EXPECT_EQ(operations_.callsOf(id), 3u) << id;
}

TEST_F(JobsEngineTest, ACancelEndsDevicesWaitingForAnotherAttempt) {
  addDevices("off-", 3);
  startEngine();
  methodJob("r", "*", R"(,"retry":{"maxAttempts":5,"backoffSeconds":60})");
  ASSERT_TRUE(
      waitUntil([&] { return stats("r").pending == 3 && operations_.calls().size() == 3; }));
  ASSERT_TRUE(engine_->cancel("r").isOk());
  ASSERT_TRUE(waitUntil([&] { return finished("r"); }));
  EXPECT_EQ(status("r"), "cancelled");
  EXPECT_EQ(stats("r"), (JobStatistics{.device_count = 3, .canceled = 3}));
  EXPECT_EQ(rows("r").at("off-1000").document.at("attempts"), 1);
  EXPECT_EQ(rows("r").at("off-1000").document.at("error").at("code"), "JobCancelled");
}

TEST_F(JobsEngineTest, RetryRequestsAreValidated) {
  startEngine();
  const std::string head =
      R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*",)";
  for (auto [extra, words] : std::vector<std::pair<std::string, std::string>>{
           {R"("retry":{"backoffSeconds":1})", "retry.maxAttempts is required"},
           {R"("retry":{"maxAttempts":11})", "retry.maxAttempts must be an integer from 1 to 10"},
           {R"("retry":{"maxAttempts":2,"backoffSeconds":-1})", "retry.backoffSeconds"},
           {R"("retry":{"maxAttempts":2,"retryOn":["Nope"]})", "retry.retryOn"},
           {R"("retry":{"maxAttempts":2,"retryOn":[]})", "retry.retryOn"},
           {R"("retry":{"maxAttempts":2,"retryOn":["DeviceMethodFailed"]})", "failOnDeviceStatus"},
           {R"("retry":5)", "retry must be an object"}}) {
    auto r = engine_->create("bad", *parseJson(head + extra + "}"));
    EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid) << extra;
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
  }
  auto twin = engine_->create("bad", *parseJson(R"({"type":"scheduleUpdateTwin",
      "updateTwin":{"tags":{"a":1}},"queryCondition":"*","retry":{"maxAttempts":2}})"));
  EXPECT_EQ(twin.code(), ErrorCode::ArgumentInvalid);
}

TEST_F(JobsEngineTest, AnAbortCriterionStopsTheJobAndCancelsDevicesNotStarted) {
  addDevices("off-", 6);
  addDevices("p", 10);
  startEngine({.window = 1});  // one device at a time, in id order: the offline ones first
  json::object created = methodJob(
      "a", "*",
      R"(,"abort":{"criteria":[{"failureType":"timedOut","thresholdPercentage":10,"minNumberOfExecutedDevices":1},
                             {"failureType":"any","thresholdPercentage":50,"minNumberOfExecutedDevices":4}]})");
  EXPECT_EQ(created.at("abort").at("criteria").as_array().size(), 2u);
  ASSERT_TRUE(waitUntil([&] { return finished("a"); }));
  json::object j = job("a");
  EXPECT_EQ(j.at("status"), "failed");
  EXPECT_EQ(j.at("failureReason"),
            "Aborted by abort criterion {failureType: any, thresholdPercentage: 50, "
            "minNumberOfExecutedDevices: 4}: 4 of 4 devices with an outcome failed so");
  EXPECT_EQ(stats("a"), (JobStatistics{.device_count = 16, .failed = 4, .canceled = 12}));
  auto all = rows("a");
  EXPECT_EQ(all.at("off-1003").status, "failed");
  EXPECT_EQ(all.at("off-1004").status, "canceled");
  EXPECT_EQ(all.at("p1000").document.at("error").at("code"), "JobAborted");
  EXPECT_EQ(operations_.calls().size(), 4u);
}

TEST_F(JobsEngineTest, AbortCriteriaCountTheirOwnFailureType) {
  addDevices("off-", 2);
  addDevices("p", 8);
  addDevices("tmo-", 2);
  startEngine({.window = 1});
  // Two offline devices of ten are 20 % "failed", not time-outs: a timedOut criterion
  // waits, then the time-outs trip it.
  methodJob(
      "t", "STARTSWITH(deviceId, 'off-') OR STARTSWITH(deviceId, 'p')",
      R"(,"abort":{"criteria":[{"failureType":"timedOut","thresholdPercentage":1,"minNumberOfExecutedDevices":1},
                                   {"failureType":"failed","thresholdPercentage":20,"minNumberOfExecutedDevices":10}]})");
  ASSERT_TRUE(waitUntil([&] { return finished("t"); }));
  EXPECT_EQ(status("t"), "completed");  // 20 % is not more than 20 %
  methodJob(
      "u", "*",
      R"(,"abort":{"criteria":[{"failureType":"timedOut","thresholdPercentage":10,"minNumberOfExecutedDevices":10}]})");
  ASSERT_TRUE(waitUntil([&] { return finished("u"); }));
  EXPECT_EQ(status("u"), "failed");  // tmo- come last: 1 of 11 is not more than 10 %, 2 of 12 is
  EXPECT_NE(std::string(job("u").at("failureReason").as_string()).find("2 of 12"),
            std::string::npos);
  const std::string head =
      R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*",)";
  for (
      auto [extra, words] : std::vector<std::pair<std::string, std::string>>{
          {R"("abort":{})", "abort.criteria"},
          {R"("abort":{"criteria":[]})", "abort.criteria"},
          {R"("abort":{"criteria":[{"failureType":"rejected","thresholdPercentage":5,"minNumberOfExecutedDevices":1}]})",
           "abort.criteria[0].failureType"},
          {R"("abort":{"criteria":[{"failureType":"any","thresholdPercentage":0,"minNumberOfExecutedDevices":1}]})",
           "abort.criteria[0].thresholdPercentage"},
          {R"("abort":{"criteria":[{"failureType":"any","thresholdPercentage":5,"minNumberOfExecutedDevices":0}]})",
           "abort.criteria[0].minNumberOfExecutedDevices"}}) {
    auto r = engine_->create("bad", *parseJson(head + extra + "}"));
    EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid) << extra;
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
  }
}

TEST_F(JobsEngineTest, AnExponentialRolloutSpeedsUpAsDevicesSucceed) {
  addDevices("d", 30);
  startEngine();
  // 60/min (1/s) at first, doubled every 2 successes, at most 240/min (4/s).
  json::object created = methodJob("roll", "*", R"(,"rollout":{"maximumPerMinute":240,
      "exponentialRate":{"baseRatePerMinute":60,"incrementFactor":2,
      "rateIncreaseCriteria":{"numberOfSucceededDevices":2}}})");
  EXPECT_EQ(created.at("rollout").at("exponentialRate").at("incrementFactor"), 2);
  std::size_t expected = 1;
  for (std::size_t next : {2u, 4u, 8u, 12u, 16u}) {
    ASSERT_TRUE(waitUntil([&] {
      return operations_.calls().size() == expected &&
             stats("roll").succeeded == static_cast<std::int64_t>(expected);
    })) << expected
        << " expected, " << operations_.calls().size() << " calls";
    std::this_thread::sleep_for(30ms);
    ASSERT_EQ(operations_.calls().size(), expected) << "the frozen clock grants nothing";
    clock_.advance(1s);
    expected = next;
  }
  const std::string head =
      R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*",)";
  for (
      auto [extra, words] : std::vector<std::pair<std::string, std::string>>{
          {R"("rollout":{})", "rollout needs"},
          {R"("rollout":{"maximumPerMinute":0})", "rollout.maximumPerMinute"},
          {R"("rollout":{"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":1,"rateIncreaseCriteria":{"numberOfSucceededDevices":1}}})",
           "rollout.exponentialRate.incrementFactor"},
          {R"("rollout":{"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":2}})",
           "rollout.exponentialRate.rateIncreaseCriteria"},
          {R"("rollout":{"maximumPerMinute":4,"exponentialRate":{"baseRatePerMinute":5,"incrementFactor":2,"rateIncreaseCriteria":{"numberOfSucceededDevices":1}}})",
           "must not exceed"}}) {
    auto r = engine_->create("bad", *parseJson(head + extra + "}"));
    EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid) << extra;
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
  }
}

TEST_F(JobsEngineTest, ARerunTargetsTheRowsOfAnEarlierJobWithTheStatusesAsked) {
  addDevices("d", 5);
  addDevices("off-", 3);
  startEngine();
  methodJob("first");
  ASSERT_TRUE(waitUntil([&] { return finished("first"); }));
  const std::string rerun =
      R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},
          "rerunOf":{"jobId":"first","deviceJobStatuses":["failed","canceled"]}})";
  auto preview = engine_->dryRun("again", *parseJson(rerun));
  ASSERT_TRUE(preview.isOk()) << preview.status().toString();
  EXPECT_EQ(preview->at("deviceCount"), 3);
  EXPECT_EQ(preview->at("sampleDeviceIds"), *parseJson(R"(["off-1000","off-1001","off-1002"])"));
  json::object created = create("again", rerun);
  EXPECT_EQ(created.at("rerunOf").at("jobId"), "first");
  EXPECT_EQ(created.at("queryCondition"), "");
  ASSERT_TRUE(waitUntil([&] { return finished("again"); }));
  EXPECT_EQ(stats("again"), (JobStatistics{.device_count = 3, .failed = 3}));
  EXPECT_EQ(operations_.callsOf("off-1000"), 2u);
  EXPECT_EQ(operations_.callsOf("d1000"), 1u);
  // The succeeded ones, by their rows.
  create("done", R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"v":2}},
      "rerunOf":{"jobId":"first","deviceJobStatuses":["completed"]}})");
  ASSERT_TRUE(waitUntil([&] { return finished("done"); }));
  EXPECT_EQ(stats("done").succeeded, 5);
  EXPECT_EQ(operations_.twinUpdates().count("off-1000"), 0u);
  for (
      auto [body, words] : std::vector<std::pair<std::string, std::string>>{
          {R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},
               "rerunOf":{"jobId":"nope","deviceJobStatuses":["failed"]}})",
           "rerunOf.jobId names no job"},
          {R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*",
               "rerunOf":{"jobId":"first","deviceJobStatuses":["failed"]}})",
           "rerunOf replaces queryCondition"},
          {R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},
               "rerunOf":{"jobId":"first","deviceJobStatuses":["broken"]}})",
           "rerunOf.deviceJobStatuses"},
          {R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},
               "rerunOf":{"jobId":"first"}})",
           "rerunOf.deviceJobStatuses"}}) {
    auto r = engine_->create("bad", *parseJson(body));
    EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid) << body;
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
  }
}

TEST_F(JobsEngineTest, OfflineDevicesWaitForTheirConnectionAcrossARestartUntilTheirTime) {
  addDevices("d", 3);
  addDevices("late-", 3);   // offline until connected
  addDevices("ghost-", 1);  // shown connected, but every call finds it offline
  startEngine();
  json::object created = methodJob("w", "*", R"(,"offlineDevices":{"waitSeconds":60})");
  EXPECT_EQ(created.at("offlineDevices"), *parseJson(R"({"waitSeconds":60})"));
  ASSERT_TRUE(waitUntil([&] {
    return stats("w") == JobStatistics{.device_count = 7, .pending = 4, .succeeded = 3} &&
           rows("w").at("late-1002").document.contains("waitingForConnection") &&
           rows("w").at("ghost-1000").document.contains("waitingForConnection");
  }));
  EXPECT_EQ(status("w"), "running");
  EXPECT_EQ(rows("w").at("late-1000").status, "pending");
  EXPECT_EQ(operations_.callsOf("late-1000"), 0u);   // offline devices are not called
  EXPECT_EQ(operations_.callsOf("ghost-1000"), 2u);  // failed, shown connected: once more
  connectDevice("late-1000");
  ASSERT_TRUE(waitUntil([&] { return stats("w").succeeded == 4; }));
  EXPECT_EQ(operations_.callsOf("late-1000"), 1u);

  engine_->stop();
  engine_.reset();
  operations_.connect("late-1001");  // while the hub is down
  startEngine();
  // late-1001 succeeds; the ghost is called twice more and waits again (until then it is
  // running, not pending).
  ASSERT_TRUE(waitUntil([&] {
    JobStatistics s = stats("w");
    return s.succeeded == 5 && s.pending == 2;
  }));
  EXPECT_EQ(status("w"), "running");
  clock_.advance(59s);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(stats("w").pending, 2);
  clock_.advance(1s);
  ASSERT_TRUE(waitUntil([&] { return finished("w"); }));
  EXPECT_EQ(status("w"), "completed");
  EXPECT_EQ(stats("w"), (JobStatistics{.device_count = 7, .succeeded = 5, .failed = 2}));
  auto last = rows("w");
  EXPECT_EQ(last.at("late-1002").document.at("error").at("code"), "DeviceNotOnline");
  EXPECT_NE(std::string(last.at("late-1002").document.at("error").at("description").as_string())
                .find("offlineDevices.waitSeconds"),
            std::string::npos);
  EXPECT_EQ(operations_.callsOf("late-1002"), 0u);
  // Shown connected after the restart too: called once more, and once again at once.
  EXPECT_EQ(operations_.callsOf("ghost-1000"), 4u);
  for (std::string id : {"d1000", "late-1000", "late-1001"}) EXPECT_EQ(operations_.callsOf(id), 1u);

  auto twin = engine_->create("bad", *parseJson(R"({"type":"scheduleUpdateTwin",
      "updateTwin":{"tags":{"a":1}},"queryCondition":"*","offlineDevices":{"waitSeconds":5}})"));
  EXPECT_EQ(twin.code(), ErrorCode::ArgumentInvalid);
  auto zero = engine_->create("bad", *parseJson(R"({"type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*","offlineDevices":{"waitSeconds":0}})"));
  EXPECT_NE(zero.status().message().find("offlineDevices.waitSeconds"), std::string::npos);
}

TEST_F(JobsEngineTest, ConvergenceSucceedsDevicesOnlyWhenTheyReportTheDesiredValues) {
  addDevices("conv-", 2);
  addDevices("silent-", 1);  // never reports
  setTwin("pre-1000", {{"properties",
                        json::object{{"reported", json::object{{"building", 43}, {"floor", 3}}}}}});
  startEngine();
  json::object created = twinJob("c", R"(,"convergence":{"timeoutSeconds":30})");
  EXPECT_EQ(created.at("convergence"), *parseJson(R"({"timeoutSeconds":30})"));
  // Updated: the device that reported the values already converges at once.
  ASSERT_TRUE(waitUntil([&] {
    return stats("c") == JobStatistics{.device_count = 4, .running = 3, .succeeded = 1};
  }));
  auto converging = rows("c").at("conv-1000");
  EXPECT_EQ(converging.status, "running");
  EXPECT_EQ(converging.document.at("converging"), true);
  EXPECT_EQ(converging.document.at("convergenceDeadlineUtc").as_string(),
            formatTimestamp(clock_.now() + 30s));
  auto report = [](json::object reported) {
    return json::object{{"properties", json::object{{"reported", std::move(reported)}}}};
  };
  setTwin("conv-1000", report({{"building", 43}, {"floor", 3}, {"extra", true}}));
  ASSERT_TRUE(waitUntil([&] { return stats("c").succeeded == 2; }));
  setTwin("conv-1001", report({{"building", 43}}));  // not all of it yet
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(stats("c").succeeded, 2);

  engine_->stop();
  engine_.reset();
  startEngine();
  ASSERT_TRUE(waitUntil([&] { return status("c") == "running" && stats("c").running == 2; }));
  setTwin("conv-1001", report({{"building", 43.0}, {"floor", 3}}));
  ASSERT_TRUE(waitUntil([&] { return stats("c").succeeded == 3; }));
  clock_.advance(31s);
  ASSERT_TRUE(waitUntil([&] { return finished("c"); }));
  EXPECT_EQ(status("c"), "completed");
  EXPECT_EQ(stats("c"), (JobStatistics{.device_count = 4, .succeeded = 3, .failed = 1}));
  auto last = rows("c");
  EXPECT_EQ(last.at("silent-1000").document.at("error").at("code"), "NotConverged");
  EXPECT_EQ(last.at("conv-1001").status, "completed");
  // No update was applied twice, the restart included.
  for (const auto& [id, updates] : operations_.twinUpdates()) EXPECT_EQ(updates.size(), 1u) << id;

  for (
      std::string bad :
      {R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*","convergence":{"timeoutSeconds":5}})",
       R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},"queryCondition":"*","convergence":{"timeoutSeconds":5}})",
       R"({"type":"scheduleUpdateTwin","updateTwin":{"properties":{"desired":{"a":1}}},"queryCondition":"*","convergence":{}})"}) {
    EXPECT_EQ(engine_->create("bad", *parseJson(bad)).code(), ErrorCode::ArgumentInvalid) << bad;
  }
}

TEST(ReportedMatchesTest, NestedValuesNumbersAndDeletions) {
  auto m = [](std::string_view desired, std::string_view reported) {
    auto d = parseJson(desired);
    auto r = parseJson(reported);
    return reportedMatches(d->as_object(), &r->as_object());
  };
  EXPECT_TRUE(m(R"({"a":1,"b":{"c":"x"}})", R"({"a":1.0,"b":{"c":"x","d":2},"e":3})"));
  EXPECT_FALSE(m(R"({"a":1,"b":{"c":"x"}})", R"({"a":1,"b":{"c":"y"}})"));
  EXPECT_FALSE(m(R"({"b":{"c":"x"}})", R"({"b":"x"})"));
  EXPECT_TRUE(m(R"({"gone":null,"$version":4})", R"({"other":1})"));
  EXPECT_FALSE(m(R"({"gone":null})", R"({"gone":1})"));
  EXPECT_TRUE(m(R"({"list":[1,2]})", R"({"list":[1,2]})"));
  EXPECT_FALSE(reportedMatches(parseJson(R"({"a":1})")->as_object(), nullptr));
}

TEST_F(JobsEngineTest, AContinuousJobReachesDevicesThatComeToMatchOnceEach) {
  for (std::string id : {"d1000", "d1001", "d1002"})
    setTwin(id, {{"tags", json::object{{"site", "b43"}}}});
  setTwin("e1000", {{"tags", json::object{{"site", "b44"}}}});
  startEngine();
  json::object created = methodJob("cont", "tags.site = 'b43'",
                                   R"(,"continuous":true,"maxExecutionTimeInSeconds":100)");
  EXPECT_EQ(created.at("continuous"), true);
  ASSERT_TRUE(waitUntil([&] { return stats("cont").succeeded == 3; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(status("cont"), "running");                         // until cancelled or its time is up
  setTwin("n1000", {{"tags", json::object{{"site", "b43"}}}});  // a new device
  ASSERT_TRUE(waitUntil([&] { return stats("cont").succeeded == 4; }));
  setTwin("e1000", {{"tags", json::object{{"site", "b43"}}}});  // moved
  ASSERT_TRUE(waitUntil([&] { return stats("cont").succeeded == 5; }));
  setTwin("d1000", {{"tags", json::object{{"site", "b43"}, {"floor", 2}}}});  // already done
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(stats("cont").device_count, 5);

  engine_->stop();
  engine_.reset();
  setTwin("n1001", {{"tags", json::object{{"site", "b43"}}}});  // while the hub is down
  startEngine();
  ASSERT_TRUE(waitUntil([&] { return stats("cont").succeeded == 6; }));
  EXPECT_EQ(stats("cont").device_count, 6);
  clock_.advance(101s);
  ASSERT_TRUE(waitUntil([&] { return finished("cont"); }));
  EXPECT_EQ(status("cont"), "completed");  // its time is up, nothing was left undone
  for (std::string id : {"d1000", "d1001", "d1002", "e1000", "n1000", "n1001"})
    EXPECT_EQ(operations_.callsOf(id), 1u) << id;

  methodJob("forever", "tags.site = 'b44'", R"(,"continuous":true)");
  ASSERT_TRUE(waitUntil([&] { return status("forever") == "running"; }));
  setTwin("f1000", {{"tags", json::object{{"site", "b44"}}}});
  ASSERT_TRUE(waitUntil([&] { return stats("forever").succeeded == 1; }));
  ASSERT_TRUE(engine_->cancel("forever").isOk());
  ASSERT_TRUE(waitUntil([&] { return finished("forever"); }));
  EXPECT_EQ(status("forever"), "cancelled");
  auto bad = engine_->create("bad", *parseJson(R"({"type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"m"},"continuous":true,
      "rerunOf":{"jobId":"cont","deviceJobStatuses":["failed"]}})"));
  EXPECT_EQ(bad.code(), ErrorCode::ArgumentInvalid);
}

TEST_F(JobsEngineTest, FutureStartWaitsForTheClock) {
  addDevices("d", 3);
  startEngine();
  std::string start = formatTimestamp(clock_.now() + 60s);
  json::object created =
      create("later", R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},
      "startTime":")" + start +
                          R"(","queryCondition":"*"})");
  EXPECT_EQ(created.at("status"), "queued");  // as Azure answers the PUT
  ASSERT_TRUE(waitUntil([&] { return status("later") == "scheduled"; }));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(status("later"), "scheduled");
  EXPECT_TRUE(operations_.calls().empty());
  clock_.advance(61s);
  ASSERT_TRUE(waitUntil([&] { return finished("later"); }));
  EXPECT_EQ(stats("later").succeeded, 3);
}

// Regression: a startTime of 9999-12-31 overflowed into the past and the job ran at once.
TEST_F(JobsEngineTest, AFarFutureStartTimeStaysScheduled) {
  addDevices("far-", 3);
  addDevices("d", 3);
  startEngine();
  json::object created = create("far", R"j({"type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"m"},"startTime":"9999-12-31T00:00:00Z",
      "queryCondition":"STARTSWITH(deviceId, 'far-')"})j");
  EXPECT_EQ(created.at("startTime"), "9999-12-31T00:00:00Z");
  ASSERT_TRUE(waitUntil([&] { return status("far") == "scheduled"; }));
  clock_.advance(std::chrono::hours(24 * 365 * 100));
  // A job due now runs to the end while the far one keeps waiting.
  methodJob("now", "STARTSWITH(deviceId, 'd')");
  ASSERT_TRUE(waitUntil([&] { return finished("now"); }));
  EXPECT_EQ(status("far"), "scheduled");
  EXPECT_EQ(job("far").at("startTime"), "9999-12-31T00:00:00Z");
  EXPECT_EQ(operations_.calls().size(), 3u);
  for (const auto& device : operations_.calls()) EXPECT_TRUE(device.starts_with("d")) << device;
  EXPECT_TRUE(rows("far").empty());
  auto bad = engine_->create("bad", *parseJson(R"j({"type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"m"},"startTime":"10000-01-01T00:00:00Z",
      "queryCondition":"*"})j"));
  EXPECT_EQ(bad.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(bad.status().message().find("startTime"), std::string::npos);
}

TEST_F(JobsEngineTest, TwinJobAppliesTheUpdateAndFailsMismatchedDevices) {
  addDevices("d", 100);
  addDevices("bad-", 5);
  startEngine();
  twinJob("twin");
  ASSERT_TRUE(waitUntil([&] { return finished("twin"); }));
  EXPECT_EQ(stats("twin"), (JobStatistics{.device_count = 105, .succeeded = 100, .failed = 5}));
  auto updates = operations_.twinUpdates();
  ASSERT_EQ(updates.size(), 105u);
  EXPECT_EQ(updates.at("d1042").size(), 1u);
  EXPECT_EQ(updates.at("d1042")[0].at("properties").at("desired").at("building"), 43);
  auto bad = rows("twin").at("bad-1003");
  EXPECT_EQ(bad.status, "failed");
  EXPECT_EQ(bad.document.at("error").at("code"), "PreconditionFailed");
}

TEST_F(JobsEngineTest, TwinUpdatesGoToTheStoreInBatches) {
  addDevices("d", 300);
  startEngine({.window = 200, .twin_batch = 64});
  twinJob("twin");
  ASSERT_TRUE(waitUntil([&] { return finished("twin"); }));
  EXPECT_EQ(stats("twin"), (JobStatistics{.device_count = 300, .succeeded = 300}));
  std::vector<std::size_t> sizes = operations_.twinBatchSizes();
  EXPECT_EQ(std::accumulate(sizes.begin(), sizes.end(), std::size_t{0}), 300u);
  EXPECT_LE(*std::max_element(sizes.begin(), sizes.end()), 64u);
  EXPECT_LT(sizes.size(), 300u / 8) << "devices were not batched";
}

TEST_F(JobsEngineTest, TwinUpdatesRetryTransientStoreErrorsBeforeFailingADevice) {
  addDevices("d", 10);
  addDevices("flaky-", 10);
  addDevices("down-", 3);
  addDevices("bad-", 2);
  startEngine({.store_retry_initial = 1ms, .store_retry_max = 4ms, .store_retry_attempts = 3});
  twinJob("twin");
  ASSERT_TRUE(waitUntil([&] { return finished("twin"); }));
  EXPECT_EQ(status("twin"), "completed");
  EXPECT_EQ(stats("twin"), (JobStatistics{.device_count = 25, .succeeded = 20, .failed = 5}));
  EXPECT_EQ(rowCounts("twin"), (std::map<std::string, int>{{"completed", 20}, {"failed", 5}}));
  auto updates = operations_.twinUpdates();
  EXPECT_EQ(updates.at("d1003").size(), 1u);
  EXPECT_EQ(updates.at("flaky-1004").size(), 3u);  // two transient failures, then applied
  EXPECT_EQ(updates.at("down-1001").size(), 4u);   // the first try and 3 retries
  EXPECT_EQ(updates.at("bad-1000").size(), 1u);    // permanent: never retried
  EXPECT_EQ(rows("twin").at("down-1002").document.at("error").at("code"), "ServiceUnavailable");
  EXPECT_EQ(rows("twin").at("bad-1001").document.at("error").at("code"), "PreconditionFailed");
}

TEST_F(JobsEngineTest, StoppingDuringATwinRetryLeavesTheDeviceToRecovery) {
  addDevices("down-", 1);
  startEngine(
      {.store_retry_initial = 10000ms, .store_retry_max = 10000ms, .store_retry_attempts = 5});
  twinJob("twin");
  ASSERT_TRUE(waitUntil([&] { return operations_.twinUpdates().size() == 1; }));
  const auto stopping = std::chrono::steady_clock::now();
  engine_->stop();  // wakes the worker waiting 10 s for its retry
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, 5s);
  engine_.reset();
  EXPECT_NE(rows("twin").at("down-1000").status, "failed");  // recovery re-applies it
}

TEST_F(JobsEngineTest, TheQuerySelectsTargetsWhenTheJobStarts) {
  addDevices("d", 4);
  startEngine();
  methodJob("some", "deviceId IN ['d1001', 'd1003', 'nope']");
  ASSERT_TRUE(waitUntil([&] { return finished("some"); }));
  EXPECT_EQ(stats("some").device_count, 2);
  auto all = rows("some");
  EXPECT_EQ(all.size(), 2u);
  EXPECT_TRUE(all.contains("d1001") && all.contains("d1003"));
}

TEST_F(JobsEngineTest, CancelBeforeStartStopsEverything) {
  addDevices("d", 3);
  startEngine();
  create("c", R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},"startTime":")" +
                  formatTimestamp(clock_.now() + 3600s) + R"(","queryCondition":"*"})");
  auto cancelled = engine_->cancel("c");
  ASSERT_TRUE(cancelled.isOk());
  EXPECT_EQ(cancelled->at("status"), "cancelled");
  EXPECT_TRUE(cancelled->contains("endTime"));
  clock_.advance(3601s);
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(status("c"), "cancelled");
  EXPECT_TRUE(rows("c").empty());
  EXPECT_TRUE(operations_.twinUpdates().empty());
}

TEST_F(JobsEngineTest, CancelDuringARunLetsCallsInFlightFinish) {
  addDevices("slow-", 50);
  startEngine({.window = 5});
  methodJob("c");
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 5; }));
  auto during = engine_->cancel("c");
  ASSERT_TRUE(during.isOk());
  EXPECT_NE(during->at("status"), "completed");
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(operations_.heldCount(), 5u);  // nothing new dispatched after the cancel
  EXPECT_EQ(operations_.release(), 5u);
  ASSERT_TRUE(waitUntil([&] { return finished("c"); }));
  EXPECT_EQ(status("c"), "cancelled");
  EXPECT_EQ(stats("c"), (JobStatistics{.device_count = 50, .succeeded = 5, .canceled = 45}));
  EXPECT_EQ(rowCounts("c"), (std::map<std::string, int>{{"canceled", 45}, {"completed", 5}}));
  EXPECT_EQ(rows("c").at("slow-1049").document.at("error").at("code"), "JobCancelled");
}

TEST_F(JobsEngineTest, DeadlineFailsDevicesNotProcessedInTime) {
  addDevices("slow-", 10);
  startEngine({.window = 2});
  methodJob("d", "*", R"(,"maxExecutionTimeInSeconds":10)");
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 2; }));
  clock_.advance(11s);
  ASSERT_TRUE(waitUntil([&] { return stats("d").failed == 8; }));
  EXPECT_EQ(status("d"), "running");  // the two calls in flight still finish
  operations_.release();
  ASSERT_TRUE(waitUntil([&] { return finished("d"); }));
  json::object j = job("d");
  EXPECT_EQ(j.at("status"), "failed");
  EXPECT_NE(std::string(j.at("failureReason").as_string()).find("maxExecutionTimeInSeconds"),
            std::string::npos);
  EXPECT_EQ(stats("d"), (JobStatistics{.device_count = 10, .succeeded = 2, .failed = 8}));
  EXPECT_EQ(rows("d").at("slow-1009").document.at("error").at("code"), "JobTimedOut");
}

TEST_F(JobsEngineTest, RateLimitFollowsTheClock) {
  addDevices("slow-", 20);
  startEngine();
  methodJob("r", "*", R"(,"deviceOperationsPerSecond":5)");
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 1; }));
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(operations_.heldCount(), 1u);  // frozen clock: no new tokens
  clock_.advance(1s);
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 6; }));
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(operations_.heldCount(), 6u);
  clock_.advance(10s);  // a long pause grants at most one second's worth
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 11; }));
  std::this_thread::sleep_for(60ms);
  EXPECT_EQ(operations_.heldCount(), 11u);
  EXPECT_EQ(job("r").at("deviceOperationsPerSecond"), 5);
}

TEST_F(JobsEngineTest, JobsBeyondTheRunningLimitWaitQueuedAndAllFinish) {
  addDevices("slow-", 3);
  startEngine({.max_running_jobs = 1});
  for (std::string id : {"a", "b", "c"}) methodJob(id);
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 3; }));
  EXPECT_EQ(status("a"), "running");
  EXPECT_EQ(status("b"), "queued");
  EXPECT_EQ(status("c"), "queued");
  EXPECT_EQ(engine_->runningCount(), 1u);
  for (std::string id : {"a", "b", "c"}) {
    ASSERT_TRUE(waitUntil([&] {
      operations_.release();
      return finished(id);
    }));
  }
  for (std::string id : {"a", "b", "c"}) EXPECT_EQ(stats(id).succeeded, 3) << id;
}

TEST_F(JobsEngineTest, AmongWaitingJobsHigherPriorityStartsFirst) {
  addDevices("slow-", 2);
  startEngine({.max_running_jobs = 1});
  methodJob("first");
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 2; }));
  // Created in this order while "first" holds the only slot.
  methodJob("low", "*", R"(,"priority":1)");
  methodJob("plain");
  json::object urgent = methodJob("urgent", "*", R"(,"priority":9)");
  EXPECT_EQ(urgent.at("priority"), 9);
  EXPECT_FALSE(job("plain").contains("priority")) << "absent stays absent";
  std::vector<std::string> started;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(waitUntil([&] {
      for (std::string id : {"first", "low", "plain", "urgent"}) {
        if (status(id) == "running" &&
            std::find(started.begin(), started.end(), id) == started.end()) {
          started.push_back(id);
          return true;
        }
      }
      return false;
    }));
    ASSERT_TRUE(waitUntil([&] {
      operations_.release();
      return finished(started.back());
    }));
  }
  EXPECT_EQ(started, (std::vector<std::string>{"first", "urgent", "low", "plain"}));
  for (std::string bad : {"-1", "10", "2.5", R"("9")"}) {
    auto body = parseJson(
        R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*","priority":)" +
        bad + "}");
    EXPECT_EQ(engine_->create("bad", *body).code(), ErrorCode::ArgumentInvalid) << bad;
  }
}

TEST_F(JobsEngineTest, StatisticsAddUpAtEveryRead) {
  addDevices("d", 400);
  addDevices("off-", 100);
  startEngine({.window = 7});
  twinJob("t");
  methodJob("m");
  while (!finished("t") || !finished("m")) {
    expectConsistent(stats("t"));
    expectConsistent(stats("m"));
  }
  EXPECT_EQ(stats("t").succeeded, 500);
  EXPECT_EQ(stats("m").failed, 100);
}

TEST_F(JobsEngineTest, RestartResumesAndResolvesCallsThatWereInFlight) {
  addDevices("slow-", 10);
  startEngine({.window = 3, .stop_grace = 0ms});
  methodJob("m");
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 3; }));
  engine_->stop();  // a crash as far as the store knows: three rows are "running"
  engine_.reset();
  EXPECT_EQ(rowCounts("m"), (std::map<std::string, int>{{"pending", 7}, {"running", 3}}));
  operations_.release();  // late answers reach nobody
  startEngine({.window = 3});
  ASSERT_TRUE(waitUntil([&] {
    operations_.release();
    return finished("m");
  }));
  EXPECT_EQ(status("m"), "completed");
  EXPECT_EQ(stats("m"), (JobStatistics{.device_count = 10, .succeeded = 7, .failed = 3}));
  auto all = rows("m");
  EXPECT_EQ(all.at("slow-1000").document.at("error").at("code"), "DeviceJobInterrupted");
  EXPECT_EQ(operations_.calls().size(), 10u);  // no device called twice
}

TEST_F(JobsEngineTest, RestartReappliesTwinUpdatesThatWereNotRecorded) {
  addDevices("d", 30);
  // Stop right after the start: the job is running and its rows are pending.
  startEngine({.window = 1, .twin_workers = 1, .stop_grace = 0ms});
  twinJob("t");
  ASSERT_TRUE(waitUntil([&] { return !operations_.twinUpdates().empty(); }));
  engine_->stop();
  engine_.reset();
  startEngine();
  ASSERT_TRUE(waitUntil([&] { return finished("t"); }));
  EXPECT_EQ(stats("t"), (JobStatistics{.device_count = 30, .succeeded = 30}));
  EXPECT_EQ(rowCounts("t"), (std::map<std::string, int>{{"completed", 30}}));
  EXPECT_EQ(operations_.twinUpdates().size(), 30u);
}

TEST_F(JobsEngineTest, ScheduledJobsSurviveARestart) {
  addDevices("d", 2);
  startEngine();
  create("s", R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},"startTime":")" +
                  formatTimestamp(clock_.now() + 600s) + R"(","queryCondition":"*"})");
  ASSERT_TRUE(waitUntil([&] { return status("s") == "scheduled"; }));
  engine_.reset();
  startEngine();
  EXPECT_EQ(status("s"), "scheduled");
  clock_.advance(601s);
  ASSERT_TRUE(waitUntil([&] { return finished("s"); }));
  EXPECT_EQ(stats("s").succeeded, 2);
}

TEST_F(JobsEngineTest, ErrorsAndListing) {
  startEngine();
  methodJob("j1");
  twinJob("j2");
  auto again = engine_->create(
      "j1", *parseJson(R"({"type":"scheduleUpdateTwin","updateTwin":{},"queryCondition":"*"})"));
  EXPECT_EQ(again.code(), ErrorCode::JobAlreadyExists);
  EXPECT_EQ(engine_->get("nope").code(), ErrorCode::JobNotFound);
  EXPECT_EQ(engine_->cancel("nope").code(), ErrorCode::JobNotFound);
  ASSERT_TRUE(waitUntil([&] { return finished("j1") && finished("j2"); }));
  auto twins = engine_->list(std::string(kTypeUpdateTwin), std::nullopt, 10, std::nullopt);
  ASSERT_TRUE(twins.isOk());
  ASSERT_EQ(twins->jobs.size(), 1u);
  EXPECT_EQ(twins->jobs[0].at("jobId"), "j2");
  auto first = engine_->list(std::nullopt, std::string("completed"), 1, std::nullopt);
  ASSERT_TRUE(first.isOk() && first->continuation);
  auto second = engine_->list(std::nullopt, std::string("completed"), 1, *first->continuation);
  ASSERT_TRUE(second.isOk());
  EXPECT_EQ(second->jobs.size(), 1u);
  EXPECT_FALSE(second->continuation);
  EXPECT_NE(first->jobs[0].at("jobId"), second->jobs[0].at("jobId"));
  EXPECT_EQ(engine_->list(std::nullopt, std::nullopt, 10, "garbage!").code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(engine_->list(std::string("export"), std::nullopt, 10, std::nullopt).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(engine_->list(std::nullopt, std::string("bogus"), 10, std::nullopt).code(),
            ErrorCode::ArgumentInvalid);
}

// --- store failures ---

// Regression: one transient store error failed a whole job for good.
TEST_F(JobsEngineTest, TransientStoreErrorsAreRetriedWithoutLosingOrRepeatingWork) {
  addDevices("d", 30);
  addDevices("off-", 10);
  std::map<std::string, int, std::less<>> calls;
  std::map<std::string, int, std::less<>> injected;
  injectFaults([&](std::string_view call, const std::vector<store::DeviceJobRecord>*) {
    // The first and every third engine call of each kind fails, with a transient code.
    int n = ++calls[std::string(call)];
    if (call == "jobsWithStatus" || n % 3 != 1) return std::optional<Status>();
    ++injected[std::string(call)];
    return std::optional<Status>(Status(
        n % 2 == 0 ? ErrorCode::ServerError : ErrorCode::ServiceUnavailable, "injected: busy"));
  });
  startEngine({.window = 5, .batch_size = 5});
  methodJob("flaky");
  ASSERT_TRUE(waitUntil([&] {
    clock_.advance(50ms);  // back-off runs on the hub clock
    return finished("flaky");
  }));
  EXPECT_EQ(status("flaky"), "completed") << toJson(job("flaky"));
  EXPECT_EQ(stats("flaky"), (JobStatistics{.device_count = 40, .succeeded = 30, .failed = 10}));
  EXPECT_EQ(rowCounts("flaky"), (std::map<std::string, int>{{"completed", 30}, {"failed", 10}}));
  auto called = operations_.calls();
  EXPECT_EQ(called.size(), 40u);
  EXPECT_EQ(std::set<std::string>(called.begin(), called.end()).size(), 40u);  // each once
  engine_.reset();  // no more calls into `fault` while reading its counters
  for (const char* call : {"getJob", "updateJob", "putDeviceJobs", "listDeviceJobs"}) {
    EXPECT_GT(injected[call], 0) << call;
  }
}

TEST_F(JobsEngineTest, RetriesBackOffOnTheHubClock) {
  addDevices("d", 3);
  std::vector<SystemTime> attempts;
  injectFaults([&](std::string_view call, const std::vector<store::DeviceJobRecord>*) {
    if (call != "putDeviceJobs") return std::optional<Status>();
    attempts.push_back(clock_.now());
    if (attempts.size() > 3) return std::optional<Status>();
    return std::optional<Status>(Status(ErrorCode::ServerError, "injected: database is locked"));
  });
  startEngine();
  twinJob("t");
  ASSERT_TRUE(waitUntil([&] {
    clock_.advance(10ms);
    return finished("t");
  }));
  EXPECT_EQ(stats("t"), (JobStatistics{.device_count = 3, .succeeded = 3}));
  engine_.reset();
  ASSERT_GE(attempts.size(), 4u);
  EXPECT_GE(attempts[1] - attempts[0], 100ms);
  EXPECT_GE(attempts[2] - attempts[1], 200ms);
  EXPECT_GE(attempts[3] - attempts[2], 400ms);
}

// Regression: a store error failed the job at once, losing the outcomes of calls that had
// been made and leaving their rows running.
TEST_F(JobsEngineTest, APermanentStoreErrorFailsTheJobAndLeavesNoRowRunning) {
  addDevices("slow-", 20);
  int running_writes = 0;
  injectFaults([&](std::string_view call, const std::vector<store::DeviceJobRecord>* rows) {
    // After the first batch of calls, no call can be recorded as started.
    if (call != "putDeviceJobs" || !writesRunningRow(rows) || ++running_writes == 1)
      return std::optional<Status>();
    return std::optional<Status>(Status(ErrorCode::StoreCorruption, "injected: disk image"));
  });
  startEngine({.window = 5});
  methodJob("broken");
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 5; }));
  ASSERT_TRUE(waitUntil([&] {
    operations_.release();
    return finished("broken");
  }));
  json::object j = job("broken");
  EXPECT_EQ(j.at("status"), "failed");
  EXPECT_NE(std::string(j.at("failureReason").as_string()).find("injected: disk image"),
            std::string::npos)
      << toJson(j);
  EXPECT_EQ(stats("broken"), (JobStatistics{.device_count = 20, .succeeded = 5, .failed = 15}));
  EXPECT_EQ(rowCounts("broken"), (std::map<std::string, int>{{"completed", 5}, {"failed", 15}}));
  EXPECT_EQ(rows("broken").at("slow-1019").document.at("error").at("code"), "JobFailed");
  EXPECT_EQ(operations_.calls().size(), 5u);
}

TEST_F(JobsEngineTest, TransientErrorsBeyondTheRetryBudgetFailTheJobCleanly) {
  addDevices("slow-", 20);
  int running_writes = 0;
  injectFaults([&](std::string_view call, const std::vector<store::DeviceJobRecord>* rows) {
    if (call != "putDeviceJobs" || !writesRunningRow(rows) || ++running_writes == 1)
      return std::optional<Status>();
    return std::optional<Status>(Status(ErrorCode::ServiceUnavailable, "injected: unavailable"));
  });
  startEngine({.window = 5, .store_retry_attempts = 3});
  methodJob("tired");
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 5; }));
  ASSERT_TRUE(waitUntil([&] {
    operations_.release();
    clock_.advance(100ms);
    return finished("tired");
  }));
  json::object j = job("tired");
  EXPECT_EQ(j.at("status"), "failed");
  EXPECT_NE(std::string(j.at("failureReason").as_string()).find("injected: unavailable"),
            std::string::npos);
  EXPECT_EQ(stats("tired"), (JobStatistics{.device_count = 20, .succeeded = 5, .failed = 15}));
  EXPECT_EQ(rowCounts("tired"), (std::map<std::string, int>{{"completed", 5}, {"failed", 15}}));
  engine_.reset();
  // The first batch, then the first try and 3 retries. The budget counts failures in a row:
  // when an outcome write of the 5 answered calls succeeds between two tries (a matter of
  // thread timing, seen under TSan), the count starts again, so allow one restart per call.
  EXPECT_GE(running_writes, 1 + 4);
  EXPECT_LE(running_writes, 1 + 4 * 6);
}

TEST_F(JobsEngineTest, ARestartRetriesRecoveryOnTransientErrors) {
  addDevices("slow-", 10);
  startEngine({.window = 3, .stop_grace = 0ms});
  methodJob("m");
  ASSERT_TRUE(waitUntil([&] { return operations_.heldCount() == 3; }));
  engine_->stop();  // three rows are "running"
  engine_.reset();
  operations_.release();
  int lists = 0;
  // start() recovers the running job on the calling thread: its reads fail twice.
  injectFaults(
      [&](std::string_view call, const std::vector<store::DeviceJobRecord>*) {
        if (call != "listDeviceJobs" || ++lists > 2) return std::optional<Status>();
        return std::optional<Status>(Status(ErrorCode::ServerError, "injected: locked"));
      },
      true);
  startEngine({.window = 3});
  EXPECT_EQ(status("m"), "running");
  ASSERT_TRUE(waitUntil([&] {
    operations_.release();
    clock_.advance(100ms);
    return finished("m");
  }));
  EXPECT_EQ(status("m"), "completed");
  EXPECT_EQ(stats("m"), (JobStatistics{.device_count = 10, .succeeded = 7, .failed = 3}));
  EXPECT_EQ(rowCounts("m"), (std::map<std::string, int>{{"completed", 7}, {"failed", 3}}));
}

// --- cluster mode: two engines (two nodes) on one PostgreSQL database ---

// A node's device operations: method calls go to a FakeOperations; twin updates are made
// in the node's own store as the hub makes them, in the transaction that records the
// device's outcome, each adding 1 to the twin's tag "applied". After the first `pass`
// updates, the next ones wait inside the operation until open(), so that a node can be
// killed with updates in flight.
class NodeOperations final : public DeviceOperations {
 public:
  NodeOperations(FakeOperations& methods, store::Store& store) : methods_(methods), store_(store) {}
  void invokeMethod(methods::MethodCall call, methods::MethodCallback done) override {
    methods_.invokeMethod(std::move(call), std::move(done));
  }
  Status updateTwin(std::string_view device_id, const json::object&,
                    const store::DeviceJobWrite& outcome) override {
    {
      std::unique_lock lock(mutex_);
      if (started_++ >= pass_) {
        ++waiting_;
        opened_.wait(lock, [this] { return open_; });
        --waiting_;
      }
    }
    auto updated = store_.twins().updateTwinForJob(
        device_id,
        [](const store::TwinRecord& current) {
          store::TwinRecord next = current;
          const json::value* applied = findMember(next.tags, "applied");
          next.tags["applied"] = (applied != nullptr ? applied->as_int64() : 0) + 1;
          ++next.version;
          return Result<store::TwinRecord>(next);
        },
        outcome);
    if (!updated) return updated.status();
    std::lock_guard lock(mutex_);
    ++applied_;
    return Status::ok();
  }
  void passFirst(std::size_t n) {
    std::lock_guard lock(mutex_);
    pass_ = n;
    open_ = false;
  }
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    opened_.notify_all();
  }
  std::size_t applied() const {
    std::lock_guard lock(mutex_);
    return applied_;
  }
  std::size_t waiting() const {
    std::lock_guard lock(mutex_);
    return waiting_;
  }

 private:
  FakeOperations& methods_;
  store::Store& store_;
  mutable std::mutex mutex_;
  std::condition_variable opened_;
  std::size_t pass_ = SIZE_MAX;  // guarded by mutex_
  bool open_ = true;             // guarded by mutex_
  std::size_t started_ = 0;      // guarded by mutex_
  std::size_t waiting_ = 0;      // guarded by mutex_
  std::size_t applied_ = 0;      // guarded by mutex_
};

class JobsClusterTest : public ::testing::Test {
 protected:
  static constexpr std::chrono::milliseconds kLease{1500};
  static constexpr std::chrono::milliseconds kRenew{300};
  static constexpr std::chrono::milliseconds kPoll{100};
  // Slack for the scheduling of threads and the database on a loaded test machine.
  static constexpr std::chrono::milliseconds kSlack{2500};

  // A node: its own connections to the database, reached through a store that fails every
  // call once the node is killed (so a killed node's engine, destroyed afterwards, reaches
  // the database no more, as after kill -9), and its own engine and devices' operations.
  struct Node {
    std::string id;
    std::unique_ptr<store::PostgresStore> durable;
    std::atomic<bool> killed{false};
    std::unique_ptr<FaultyStore> store;
    FakeOperations methods;
    std::unique_ptr<NodeOperations> operations;
    std::unique_ptr<JobsEngine> engine;
  };

  void SetUp() override {
    Status started = server_.start();
    ASSERT_TRUE(started.isOk()) << started.toString();
    openNode(a_, "node-a");
    openNode(b_, "node-b");
  }
  void openNode(Node& node, std::string id) {
    node.id = std::move(id);
    auto opened = store::PostgresStore::open(server_.conninfo());
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    node.durable = std::move(opened).value();
    node.store = std::make_unique<FaultyStore>(
        *node.durable, [&node](std::string_view, const std::vector<store::DeviceJobRecord>*) {
          if (!node.killed.load()) return std::optional<Status>();
          return std::optional<Status>(Status(ErrorCode::ServiceUnavailable, "the node is gone"));
        });
    node.operations = std::make_unique<NodeOperations>(node.methods, *node.store);
  }
  void TearDown() override {
    for (Node* node : {&a_, &b_}) {
      if (node->operations) node->operations->open();
      node->engine.reset();
    }
  }

  void startEngine(Node& node, JobsOptions options = {}, bool take_back_own_leases = false) {
    options.tick = 5ms;
    options.idle_tick = 50ms;
    options.flush_interval = 20ms;
    options.twin_workers = 4;
    options.stop_grace = 50ms;
    options.lease = JobLeaseOptions{.node_id = node.id,
                                    .lease = kLease,
                                    .renew_every = kRenew,
                                    .claim_poll = kPoll,
                                    .take_back_own_leases = take_back_own_leases};
    node.engine = std::make_unique<JobsEngine>(
        *node.store, *node.operations,
        [this](const query::Condition& c) {
          std::vector<std::string> out;
          for (const auto& id : devices_) {
            if (c.matches(json::object{{"deviceId", id}})) out.push_back(id);
          }
          return out;
        },
        clock_, options);
    ASSERT_TRUE(node.engine->start().isOk());
  }

  // kill -9 as far as the database can tell: from now on the node writes nothing.
  void kill(Node& node) {
    node.killed = true;
    node.operations->open();  // its twin updates in flight now fail
    node.engine.reset();
  }

  void addDevices(std::string_view prefix, int n) {
    for (int i = 0; i < n; ++i) devices_.insert(std::string(prefix) + std::to_string(1000 + i));
  }
  // Devices with twins in the database (for twin jobs).
  void addStoredDevices(std::string_view prefix, int n) {
    for (int i = 0; i < n; ++i) {
      std::string id = std::string(prefix) + std::to_string(1000 + i);
      store::DeviceRecord device;
      device.device_id = id;
      device.generation_id = "g";
      device.etag = "e";
      store::TwinRecord twin;
      twin.device_id = id;
      ASSERT_TRUE(a_.durable->registry().createDevice(device, twin).isOk());
      devices_.insert(id);
    }
  }

  json::object create(Node& node, std::string_view id, const std::string& body_text) {
    auto body = parseJson(body_text);
    EXPECT_TRUE(body.isOk()) << body_text;
    auto r = node.engine->create(id, *body);
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    return r ? *r : json::object{};
  }
  static std::string methodBody(std::string_view start = "null") {
    return R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m"},"startTime":)" +
           std::string(start) + R"(,"queryCondition":"*"})";
  }
  static std::string twinBody() {
    return R"({"type":"scheduleUpdateTwin","updateTwin":{"etag":"*","tags":{"x":1}},)"
           R"("startTime":null,"queryCondition":"*"})";
  }

  // What any node reads (through `node`, which must be alive).
  json::object job(Node& node, std::string_view id) {
    auto r = node.engine->get(id);
    EXPECT_TRUE(r.isOk()) << r.status().toString();
    return r ? *r : json::object{};
  }
  std::string status(Node& node, std::string_view id) {
    return std::string(job(node, id).at("status").as_string());
  }
  JobStatistics stats(Node& node, std::string_view id) {
    json::object j = job(node, id);
    return JobStatistics::fromJson(findObject(j, "deviceJobStatistics"));
  }
  bool finished(Node& node, std::string_view id) { return isTerminalJobStatus(status(node, id)); }
  std::map<std::string, store::DeviceJobRecord> rows(std::string_view id) {
    auto listed = b_.durable->deviceJobs().listDeviceJobs(id, std::nullopt, "", 1000000);
    EXPECT_TRUE(listed.isOk());
    std::map<std::string, store::DeviceJobRecord> out;
    for (auto& r : *listed) out[r.device_id] = r;
    return out;
  }
  std::map<std::string, int> rowCounts(std::string_view id) {
    std::map<std::string, int> counts;
    for (auto& [device, row] : rows(id)) ++counts[row.status];
    return counts;
  }

  iothub::testing::PostgresServer server_;
  FakeClock clock_;
  std::set<std::string> devices_;
  Node a_;
  Node b_;
};

TEST_F(JobsClusterTest, JobsCreatedOnAnyNodeRunOnceEach) {
  addDevices("d", 150);
  startEngine(a_);
  startEngine(b_);
  constexpr int kJobs = 6;
  for (int i = 0; i < kJobs; ++i) {
    json::object created = create(i % 2 == 0 ? a_ : b_, "job-" + std::to_string(i), methodBody());
    EXPECT_EQ(created.at("status"), "queued");
  }
  for (int i = 0; i < kJobs; ++i) {
    std::string id = "job-" + std::to_string(i);
    ASSERT_TRUE(waitUntil([&] { return finished(a_, id); }, 30s)) << id;
    EXPECT_EQ(status(b_, id), "completed");
    EXPECT_EQ(stats(b_, id), (JobStatistics{.device_count = 150, .succeeded = 150}));
    EXPECT_EQ(rowCounts(id), (std::map<std::string, int>{{"completed", 150}}));
  }
  // Each device was called once per job, by one node or the other.
  std::map<std::string, int> per_device;
  for (const auto& id : a_.methods.calls()) ++per_device[id];
  for (const auto& id : b_.methods.calls()) ++per_device[id];
  ASSERT_EQ(per_device.size(), 150u);
  for (const auto& [device, n] : per_device) EXPECT_EQ(n, kJobs) << device;
}

TEST_F(JobsClusterTest, AKilledOwnersMethodJobEndsOnAnotherNodeAndNoDeviceIsCalledTwice) {
  addDevices("d", 20);     // answer at once
  addDevices("slow-", 3);  // in flight when the owner dies
  addDevices("t", 10);     // still pending then
  startEngine(a_, {.window = 3});
  create(a_, "m", methodBody());
  ASSERT_TRUE(waitUntil([&] { return a_.methods.heldCount() == 3; }));
  startEngine(b_, {.window = 3});
  EXPECT_EQ(status(b_, "m"), "running");

  kill(a_);
  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(waitUntil([&] { return finished(b_, "m"); }, kLease + kPoll + 10s));
  const auto resumed_in = std::chrono::steady_clock::now() - killed_at;
  EXPECT_LT(resumed_in, kLease + kPoll + kSlack);

  EXPECT_EQ(status(b_, "m"), "completed");
  EXPECT_EQ(stats(b_, "m"), (JobStatistics{.device_count = 33, .succeeded = 30, .failed = 3}));
  auto all = rows("m");
  ASSERT_EQ(all.size(), 33u);
  for (const auto& id : {"slow-1000", "slow-1001", "slow-1002"}) {
    EXPECT_EQ(all.at(id).status, "failed") << id;
    EXPECT_EQ(all.at(id).document.at("error").at("code"), "DeviceJobInterrupted") << id;
  }
  EXPECT_EQ(rowCounts("m"), (std::map<std::string, int>{{"completed", 30}, {"failed", 3}}));
  // The new owner called exactly the devices the dead one had not.
  std::vector<std::string> by_a = a_.methods.calls();
  std::vector<std::string> by_b = b_.methods.calls();
  EXPECT_EQ(by_a.size(), 23u);
  EXPECT_EQ(by_b.size(), 10u);
  std::set<std::string> everyone(by_a.begin(), by_a.end());
  everyone.insert(by_b.begin(), by_b.end());
  EXPECT_EQ(everyone.size(), 33u) << "a device was called twice";
  for (const auto& id : by_b) EXPECT_TRUE(id.starts_with("t")) << id;
  a_.methods.release();  // late answers reach nobody
}

TEST_F(JobsClusterTest, AKilledOwnersTwinJobAppliesEveryUpdateExactlyOnce) {
  addStoredDevices("d", 30);
  a_.operations->passFirst(10);
  // One device per twin task, so the dead owner holds 4 updates in flight at once.
  startEngine(a_, {.window = 4, .twin_batch = 1});
  create(a_, "t", twinBody());
  ASSERT_TRUE(waitUntil([&] { return a_.operations->applied() == 10; }));
  ASSERT_TRUE(waitUntil([&] { return a_.operations->waiting() == 4; }));
  startEngine(b_, {.window = 4});
  // Other nodes read the owner's statistics, saved at its flushes.
  ASSERT_TRUE(waitUntil([&] { return stats(b_, "t").succeeded == 10; }));
  EXPECT_EQ(stats(b_, "t"),
            (JobStatistics{.device_count = 30, .pending = 16, .running = 4, .succeeded = 10}));

  kill(a_);
  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(waitUntil([&] { return finished(b_, "t"); }, kLease + kPoll + 10s));
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, kLease + kPoll + kSlack);

  EXPECT_EQ(status(b_, "t"), "completed");
  EXPECT_EQ(stats(b_, "t"), (JobStatistics{.device_count = 30, .succeeded = 30}));
  EXPECT_EQ(rowCounts("t"), (std::map<std::string, int>{{"completed", 30}}));
  EXPECT_EQ(b_.operations->applied(), 20u);
  for (const auto& id : devices_) {
    auto twin = b_.durable->twins().getTwin(id);
    ASSERT_TRUE(twin.isOk()) << twin.status().toString();
    EXPECT_EQ(twin->tags.at("applied"), 1) << id;
  }
}

TEST_F(JobsClusterTest, AScheduledJobStartsOnTimeWhenTheNodeThatAcceptedItIsGone) {
  addDevices("d", 5);
  startEngine(a_);
  startEngine(b_);
  json::object created =
      create(a_, "later", methodBody("\"" + formatTimestamp(clock_.now() + 60s) + "\""));
  EXPECT_EQ(created.at("status"), "queued");    // as Azure and a single node answer the PUT
  EXPECT_EQ(status(b_, "later"), "scheduled");  // stored so: no node holds it before its time
  kill(a_);
  // Nobody starts it before its time.
  EXPECT_FALSE(waitUntil([&] { return !b_.methods.calls().empty(); }, 5 * kPoll));
  clock_.advance(61s);
  const auto due_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(waitUntil([&] { return finished(b_, "later"); }));
  EXPECT_LT(std::chrono::steady_clock::now() - due_at, kPoll + kSlack);
  EXPECT_EQ(stats(b_, "later"), (JobStatistics{.device_count = 5, .succeeded = 5}));
  EXPECT_EQ(b_.methods.calls().size(), 5u);
  EXPECT_TRUE(a_.methods.calls().empty());
}

TEST_F(JobsClusterTest, ACancelOnAnotherNodeReachesTheOwner) {
  addDevices("slow-", 2);
  addDevices("t", 8);
  startEngine(a_, {.window = 2});
  create(a_, "c", methodBody());
  ASSERT_TRUE(waitUntil([&] { return a_.methods.heldCount() == 2; }));
  startEngine(b_);
  auto cancelled = b_.engine->cancel("c");
  ASSERT_TRUE(cancelled.isOk()) << cancelled.status().toString();
  // The owner sees the request at its next renewal and cancels what it has not dispatched.
  const auto asked_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(waitUntil([&] { return rowCounts("c")["canceled"] == 8; }));
  EXPECT_LT(std::chrono::steady_clock::now() - asked_at, kRenew + kSlack);
  a_.methods.release();  // the calls in flight finish and are recorded
  ASSERT_TRUE(waitUntil([&] { return finished(b_, "c"); }));
  EXPECT_EQ(status(b_, "c"), "cancelled");
  EXPECT_EQ(stats(b_, "c"), (JobStatistics{.device_count = 10, .succeeded = 2, .canceled = 8}));
  EXPECT_TRUE(b_.methods.calls().empty());
}

TEST_F(JobsClusterTest, ACancelOfAJobNobodyHoldsIsAppliedAtOnce) {
  addDevices("d", 3);
  startEngine(a_);
  create(a_, "later", methodBody("\"" + formatTimestamp(clock_.now() + 3600s) + "\""));
  kill(a_);
  startEngine(b_);
  auto cancelled = b_.engine->cancel("later");
  ASSERT_TRUE(cancelled.isOk()) << cancelled.status().toString();
  EXPECT_EQ(cancelled->at("status"), "cancelled");
  EXPECT_EQ(status(b_, "later"), "cancelled");
  EXPECT_EQ(b_.engine->cancel("nope").code(), ErrorCode::JobNotFound);
}

TEST_F(JobsClusterTest, AnOwnerCutOffFromTheDatabaseDropsItsJobAndWritesNothingWhenBack) {
  addDevices("slow-", 2);
  addDevices("t", 6);
  startEngine(a_, {.window = 2});
  create(a_, "m", methodBody());
  ASSERT_TRUE(waitUntil([&] { return a_.methods.heldCount() == 2; }));
  startEngine(b_, {.window = 2});
  a_.killed = true;  // a partition: the engine runs on but reaches the database no more
  // It cannot renew, so it drops the job when its lease would end, and B takes it over.
  ASSERT_TRUE(waitUntil([&] { return a_.engine->runningCount() == 0; }, kLease + 10s));
  ASSERT_TRUE(waitUntil([&] { return finished(b_, "m"); }, kLease + kPoll + 10s));
  const auto final_rows = rows("m");
  const JobStatistics final_stats = stats(b_, "m");
  EXPECT_EQ(final_stats, (JobStatistics{.device_count = 8, .succeeded = 6, .failed = 2}));
  EXPECT_EQ(final_rows.at("slow-1000").document.at("error").at("code"), "DeviceJobInterrupted");

  // Back online, its calls in flight are answered: nothing of it reaches the job.
  a_.killed = false;
  EXPECT_EQ(a_.methods.release(), 2u);
  EXPECT_FALSE(waitUntil([&] { return rows("m") != final_rows; }, 10 * kPoll));
  EXPECT_EQ(stats(b_, "m"), final_stats);
  EXPECT_EQ(status(b_, "m"), "completed");
  EXPECT_EQ(a_.methods.calls().size(), 2u);
  EXPECT_EQ(b_.methods.calls().size(), 6u);
}

TEST_F(JobsClusterTest, ANodeStartedAgainUnderItsIdTakesItsJobsBackAtOnce) {
  addDevices("d", 4);
  addDevices("slow-", 2);
  addDevices("t", 4);
  startEngine(a_, {.window = 2});
  create(a_, "m", methodBody());
  ASSERT_TRUE(waitUntil([&] { return a_.methods.heldCount() == 2; }));
  kill(a_);
  // The same node id, started again (no other process runs under it).
  Node again;
  openNode(again, "node-a");
  const auto restarted_at = std::chrono::steady_clock::now();
  startEngine(again, {.window = 2}, true);
  ASSERT_TRUE(waitUntil([&] { return finished(again, "m"); }));
  EXPECT_LT(std::chrono::steady_clock::now() - restarted_at, kLease)
      << "did not wait for the lease";
  EXPECT_EQ(stats(again, "m"), (JobStatistics{.device_count = 10, .succeeded = 8, .failed = 2}));
  EXPECT_EQ(again.methods.calls().size(), 4u);
  again.engine.reset();
  a_.methods.release();
}

TEST_F(JobsClusterTest, AStoppedNodeHandsItsJobsOverAtOnce) {
  addDevices("slow-", 2);
  addDevices("t", 6);
  startEngine(a_, {.window = 2});
  create(a_, "m", methodBody());
  ASSERT_TRUE(waitUntil([&] { return a_.methods.heldCount() == 2; }));
  startEngine(b_, {.window = 2});
  const auto stopped_at = std::chrono::steady_clock::now();
  a_.engine->stop();  // gives up on the calls in flight after stop_grace, releases the lease
  ASSERT_TRUE(waitUntil([&] { return finished(b_, "m"); }));
  // Well before the lease would have expired.
  EXPECT_LT(std::chrono::steady_clock::now() - stopped_at, kLease);
  EXPECT_EQ(stats(b_, "m"), (JobStatistics{.device_count = 8, .succeeded = 6, .failed = 2}));
  EXPECT_EQ(b_.methods.calls().size(), 6u);
  a_.methods.release();
}

}  // namespace
}  // namespace iothub::jobs
