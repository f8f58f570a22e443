#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/status.hpp"
#include "jobs/job_model.hpp"
#include "methods/method_invoker.hpp"
#include "query/condition.hpp"
#include "store/store.hpp"

namespace iothub::jobs {

// What a job does to one device; the hub implements it with MethodInvoker and TwinService,
// tests with fakes.
class DeviceOperations {
 public:
  virtual ~DeviceOperations() = default;
  // Asynchronous: `done` runs exactly once, on any thread.
  virtual void invokeMethod(methods::MethodCall call, methods::MethodCallback done) = 0;
  // Blocking (runs on one of the engine's twin workers): merges the job's updateTwin into
  // the device's twin, checking a concrete etag, and notifies the device. On success
  // `outcome` (the device's completed row, under the job's lease in cluster mode) is
  // committed in the same transaction as the twin (TwinStore::updateTwinForJob), so a job
  // that moves to another node never applies the update twice; on failure neither is
  // written. Errors: the twin's (PreconditionFailed for an etag mismatch, ...), the store's;
  // JobLeaseLost when the job's lease is no longer held.
  virtual Status updateTwin(std::string_view device_id, const json::object& update_twin,
                            const store::DeviceJobWrite& outcome) = 0;
  // updateTwin for several devices (outcomes[i] is device_ids[i]'s row): one status per
  // device, in order; one device's failure leaves the others alone. The hub applies a
  // batch in one store transaction (TwinStore::updateTwinsForJob); by default, one
  // updateTwin per device.
  virtual std::vector<Status> updateTwins(const std::vector<std::string>& device_ids,
                                          const json::object& update_twin,
                                          const std::vector<store::DeviceJobWrite>& outcomes) {
    std::vector<Status> statuses;
    statuses.reserve(device_ids.size());
    for (std::size_t i = 0; i < device_ids.size() && i < outcomes.size(); ++i) {
      statuses.push_back(updateTwin(device_ids[i], update_twin, outcomes[i]));
    }
    return statuses;
  }
};

// The ids of the devices a condition selects, in order (the hub's TwinIndex).
using TargetSelector = std::function<std::vector<std::string>(const query::Condition&)>;
// A device's twin as queries see it (the hub's TwinIndex row: connectionState, tags,
// desired and reported properties), or null for a device that does not exist.
using DeviceViewer = std::function<std::shared_ptr<const json::object>(std::string_view)>;

// Cluster mode (docs/cluster.md, "Jobs across nodes"): the engines of several nodes share
// one store, and each job runs on the node that holds its lease (JobStore leases).
struct JobLeaseOptions {
  std::string node_id;  // the owner named in the leases this node takes
  // How long a claim or renewal holds a job (on the store's clock), and how often the owner
  // renews. A node that dies stops holding its jobs at most `lease` after its last renewal.
  std::chrono::milliseconds lease{15000};
  std::chrono::milliseconds renew_every{5000};
  // How often the engine looks for jobs that are due and held by nobody (new, scheduled,
  // cancelled, or left by a node that died); also at once after create() and cancel().
  std::chrono::milliseconds claim_poll{1000};
  // At start, end the leases `node_id` still holds from a previous run (which died), so its
  // jobs resume at once instead of when those leases expire. Only when no other process can
  // run under `node_id` (the hub holds an advisory lock per node id in cluster mode).
  bool take_back_own_leases = false;
};

struct JobsOptions {
  // In-flight device operations per running job.
  std::size_t window = 1000;
  // Jobs running at once; due jobs beyond it stay queued (never refused) until one ends.
  std::size_t max_running_jobs = 8;
  // Threads that apply twin updates (each blocks on the store; the store commits their
  // writes together, so more threads mean bigger group commits).
  std::size_t twin_workers = 128;
  // Devices a twin worker updates in one store call (TwinStore::updateTwinsForJob).
  std::size_t twin_batch = 64;
  // Device-job rows written per store call, and the longest an outcome waits for its write.
  std::size_t batch_size = 1000;
  std::chrono::milliseconds flush_interval{200};
  // While a job runs, the engine re-checks the clock (deadlines, rate limits) at least this
  // often; with none running, it wakes at the next start time, and at least every idle_tick
  // (the hub clock may jump).
  std::chrono::milliseconds tick{20};
  std::chrono::milliseconds idle_tick{1000};
  // How long stop() lets in-flight operations finish before leaving them to recovery.
  std::chrono::milliseconds stop_grace{3000};
  // A job's store call that fails with a transient error (isTransientStoreError) is retried
  // after store_retry_initial, doubling up to store_retry_max, on the hub clock; meanwhile
  // the job touches the store no more (other jobs go on). A job retries at most
  // store_retry_attempts times in a row (10: about 43 s); the next failure, or any
  // permanent error, fails it (see "Store failures" at JobsEngine). A twin job's update of
  // one device that fails transiently is retried the same way (in real time, on its twin
  // worker) before the device is recorded failed.
  std::chrono::milliseconds store_retry_initial{100};
  std::chrono::milliseconds store_retry_max{10000};
  int store_retry_attempts = 10;
  // Unset (a single node): the engine runs every job of the store. Set: only the jobs it
  // holds a lease on (see "Cluster mode" at JobsEngine).
  std::optional<JobLeaseOptions> lease = std::nullopt;
};

// Store errors that may go away by themselves: ServerError (what the SQLite backend answers
// for busy, locked, I/O and full-disk errors alike), ServiceUnavailable, Throttled,
// GatewayTimeout and Cancelled (the store is shutting down; a restart resumes the job).
// StoreCorruption and every other code are permanent.
bool isTransientStoreError(ErrorCode code);

// One page of GET /jobs/v2/query.
struct JobPage {
  json::array jobs;
  std::optional<std::string> continuation;
};

// The jobs engine (docs/protocol.md §9; docs/decisions.md §28): accepts jobs, starts them at
// their start time, selects their devices once, runs the device operations with a window
// of in-flight operations and an optional per-job rate limit, writes per-device rows and
// statistics in batches, and resumes after a restart.
//
// Durability. A job is stored before create() returns. Its rows are written (pending)
// before any device is touched; a method job's rows are written running before the calls
// go out; outcomes are written in batches, then the statistics. After a crash, start()
// resumes: jobs not started yet wait for their time, running jobs recount their rows,
// apply the twin updates whose row is not completed (none of them was applied: see "Twin
// jobs" below) and fail method calls that were in flight with DeviceJobInterrupted (a call
// may have reached the device; methods are not assumed to be idempotent).
//
// Store failures. A job's store calls (selecting its devices, reading pending rows, writing
// rows, its final record, loading and cancelling it) that fail transiently are retried with
// back-off (JobsOptions::store_retry_*); nothing is lost or done twice meanwhile. A
// permanent error, or transient ones beyond the retry budget, fail the job the way a
// cancel ends it: no more dispatching, operations in flight finish and are recorded, the
// undispatched devices fail with JobFailed, then the job is failed with the error as its
// failureReason. Only when the store refuses to record outcomes for good is the job failed
// at once (rows it could not write stay as they were; failureReason says why).
//
// Twin jobs. They record a device's outcome in the transaction that updates its twin
// (DeviceOperations::updateTwin), so after a crash or a takeover the devices still to
// apply are exactly those whose row is not completed, and none of them had been applied.
//
// Cluster mode (JobsOptions::lease; docs/cluster.md, "Jobs across nodes"). start() loads
// nothing; instead the engine claims due jobs that no node holds (JobStore::claimJobs) at
// start, every claim_poll, and at once after create() or cancel() on this node, up to
// max_running_jobs held at once. It renews the leases it holds every renew_every. A job
// whose lease is lost (a renewal finds it taken, a write fails with JobLeaseLost, or no
// renewal succeeded before the lease would end by this node's steady clock) is dropped
// here without another write: its next owner recovers it as after a restart (pending
// devices continue; method calls that were in flight fail with DeviceJobInterrupted). So a
// job resumes at most lease + claim_poll after its owner dies. Every write of an owner is
// fenced by its lease (updateLeasedJob, putLeasedDeviceJobs, updateTwinForJob).
// create() stores a job to start later as scheduled. cancel() of a job this node does not
// run records the request in the store (requestJobCancel): its owner applies it at its next
// renewal, or the node that claims it next (this one at once, when nobody holds it).
// get() and list() read the store for jobs other nodes run (statistics as of their owner's
// last flush). stop() releases the leases it holds, so other nodes take the jobs over at
// their next claim.
//
// Threading: the API methods are thread-safe and block on the store (call them from a
// worker thread). One engine thread does all the scheduling and store writes of running
// jobs; twin updates run on `twin_workers` threads; method results arrive on any thread.
class JobsEngine {
 public:
  JobsEngine(store::Store& store, DeviceOperations& operations, TargetSelector select,
             const Clock& clock, JobsOptions options = {});
  ~JobsEngine();
  JobsEngine(const JobsEngine&) = delete;
  JobsEngine& operator=(const JobsEngine&) = delete;

  // Jobs with offlineDevices, convergence or continuous (docs/jobs.md) follow their devices:
  // `view` reads a device's current twin, and whoever changes devices (the hub's twin index)
  // calls deviceChanged() after every change of one. Without it such jobs are refused.
  // Call before start().
  void followDevices(DeviceViewer view);
  // A device's twin, connection state or registry entry changed. Thread-safe and quick:
  // nothing is queued while no job follows devices.
  void deviceChanged(std::string_view device_id);

  // Loads unfinished jobs from the store and starts the engine thread.
  Status start();
  // Stops dispatching, gives in-flight operations up to stop_grace, records what finished
  // and joins the threads. Idempotent.
  void stop();

  // PUT /jobs/v2/{id}. Errors: parseJobRequest's; JobAlreadyExists (409) for a used id.
  Result<json::object> create(std::string_view job_id, const json::value& body);
  // GET /jobs/v2/{id}. Errors: JobNotFound.
  Result<json::object> get(std::string_view job_id);

  // PUT /jobs/v2/{id}?dryRun=true (iothub's extension, docs/jobs.md): validates the request
  // as create() does (a job with that id must not exist either) and answers the devices it
  // would target if it started now, {"deviceCount": n, "sampleDeviceIds": [first 100 ids]},
  // storing nothing. Errors as create().
  Result<json::object> dryRun(std::string_view job_id, const json::value& body);
  static constexpr std::size_t kDryRunSampleSize = 100;
  // POST /jobs/v2/{id}/cancel: a job that has not started is cancelled at once; a running
  // one stops dispatching, its pending devices become canceled, operations in flight
  // finish and are recorded, then it is cancelled. Cancelling a finished job changes
  // nothing. Returns the job as it is now. Errors: JobNotFound.
  Result<json::object> cancel(std::string_view job_id);
  // GET /jobs/v2/query. `type`/`status` filter when set; page_size 1..1000.
  Result<JobPage> list(std::optional<std::string> type, std::optional<std::string> status,
                       std::size_t page_size, std::optional<std::string_view> continuation);

  // Jobs running right now (tests, metrics).
  std::size_t runningCount() const;
  // This node's admitted, unfinished jobs by status ("queued", "scheduled", "running"...).
  std::map<std::string, std::size_t, std::less<>> countByStatus() const;

  // What this node's runs ended with, since it started (metrics).
  struct Counters {
    std::atomic<std::uint64_t> devices_succeeded{0};
    std::atomic<std::uint64_t> devices_failed{0};
    std::atomic<std::uint64_t> jobs_completed{0};
    std::atomic<std::uint64_t> jobs_failed{0};
    std::atomic<std::uint64_t> jobs_cancelled{0};
  };
  const Counters& counters() const { return counters_; }

 private:
  using SteadyTime = std::chrono::steady_clock::time_point;
  struct Run;
  struct Completion {
    std::string job_id;
    std::string device_id;
    Status status;                        // an error: the device failed
    std::optional<json::value> response;  // answered method calls: {status, payload}
    bool recorded = false;                // its row is written (twin updates that succeeded)
    std::optional<json::object> error;    // the row's error, when not errorOf(status)
  };
  struct CancelRequest {
    std::string job_id;
    std::shared_ptr<std::promise<void>> handled;
  };
  // Where other threads leave work for the engine thread. Shared with the callbacks of
  // method calls, which may outlive the engine.
  struct Inbox {
    std::mutex mutex;
    std::condition_variable wake;
    bool stopping = false;                // guarded by mutex
    bool claim_now = false;               // guarded by mutex (cluster mode)
    std::vector<std::string> new_jobs;    // guarded by mutex
    std::vector<CancelRequest> cancels;   // guarded by mutex
    std::vector<Completion> completions;  // guarded by mutex
    std::vector<std::string> changed;     // guarded by mutex: deviceChanged() ids
    void post(Completion c);
    void post(std::vector<Completion> batch);  // one wake-up for the whole batch
  };

  void loop();
  // Cluster mode, on the engine thread: renews the leases held, drops the jobs whose lease
  // is gone, and claims due jobs when `claim` or the poll interval says so.
  void leaseTurn(bool claim);
  void renewLeases();
  void claimDueJobs();
  void releaseLeases();
  // Forgets a job whose lease is lost, writing nothing more (its next owner recovers it).
  void abandon(Run& run, std::string_view why);
  // Loads a stored unfinished job into runs_ (recovering it when running). True when it
  // was resumed.
  bool load(std::shared_ptr<Run> run);
  // The run's device-job rows, under its lease in cluster mode.
  Status putRows(Run& run, const std::vector<store::DeviceJobRecord>& rows);
  // How long the engine thread may sleep when nothing arrives.
  std::chrono::milliseconds nextWait() const;
  void admit(const std::string& job_id);
  void admitRecord(store::JobRecord job);
  void retryAdmissions();
  void cancelUnstarted(Run& run);
  void handleCancel(const std::string& job_id);
  void handleCompletion(Completion& c);
  // Trips the run's abort criteria ("abort", docs/jobs.md) when its outcomes say so.
  void checkAbort(Run& run);
  // Following devices (offlineDevices, convergence, continuous), on the engine thread.
  static bool follows(const JobSpec& spec);
  bool draining(const Run& run) const;
  void handleDeviceChanges(const std::vector<std::string>& ids);
  void deviceChangedFor(Run& run, const std::string& id, const json::object* twin);
  // offlineDevices: the device is offline; it waits (pending) for its connection.
  void waitForConnection(Run& run, const std::string& id, bool called);
  // convergence: the device's reported properties now match (or the deadline passed).
  bool convergedNow(const Run& run, const json::object* twin) const;
  void endConvergence(Run& run, const std::string& id, bool converged);
  void expireWaits(Run& run);
  // continuous: writes the rows of devices that came to match, then queues them.
  void addNewcomers(Run& run);
  // rerunOf's job must exist. Errors: ArgumentInvalid naming it; the store's.
  Status checkRerunSource(const JobSpec& spec);
  // The devices a job targets: its rerunOf rows, or what its condition selects.
  Result<std::vector<std::string>> selectTargets(const JobSpec& spec);
  void startDueJobs();
  Status startRun(Run& run);
  Status recover(Run& run);
  void step(Run& run);
  void drainUndispatched(Run& run, DeviceJobStatus status, const json::object& error);
  bool fetchPending(Run& run);
  void dispatch(Run& run);
  void flush(Run& run, bool force);
  void finish(Run& run);
  // Writes the run's record with its statistics and `change` applied, then shows it to
  // readers; on failure nothing changes.
  Status persist(Run& run, const std::function<void(store::JobRecord&)>& change = nullptr);
  void failRun(Run& run, const Status& why);
  // After a failed store call of `run`: true when the error is transient and the retry
  // budget allows another attempt (the run then backs off until its retry_at); false
  // otherwise (the caller fails the run).
  bool retryLater(Run& run, const Status& why, std::string_view during);
  std::chrono::milliseconds retryDelay(int failures) const;
  bool backingOff(const Run& run) const;
  // Starts failing `run` (see "Store failures" above); the first reason wins.
  void failSoftly(Run& run, const Status& why);
  void updateStats(Run& run, const std::function<void(JobStatistics&)>& change);
  std::vector<std::shared_ptr<Run>> snapshotRuns() const;
  json::object render(const store::JobRecord& job);

  store::Store& store_;
  DeviceOperations& operations_;
  TargetSelector select_;
  const Clock& clock_;
  const JobsOptions options_;
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();

  // Admitted, unfinished jobs. The map and each Run's `record` and `stats` are guarded by
  // state_mutex_ (the API reads them); the rest of a Run belongs to the engine thread.
  mutable std::mutex state_mutex_;
  std::map<std::string, std::shared_ptr<Run>, std::less<>> runs_;

  // Twin workers.
  void twinWorker();
  // One device's twin update, on a twin worker: transient store errors are retried after
  // retryDelay() (real time; the store's outage is) up to store_retry_attempts times.
  // nullopt when the engine stops meanwhile: the row stays pending and recovery re-applies it.
  // `first`: the outcome of a first attempt already made (in a batch), if any.
  std::optional<Status> updateTwinRetrying(const std::string& device_id, const json::object& update,
                                           const store::DeviceJobWrite& outcome,
                                           std::optional<Status> first = std::nullopt);
  std::mutex twin_mutex_;
  std::condition_variable twin_wake_;
  std::deque<std::function<void()>> twin_tasks_;  // guarded by twin_mutex_
  bool twin_stopping_ = false;                    // guarded by twin_mutex_
  std::vector<std::thread> twin_threads_;

  // Admissions whose job could not be read yet (engine thread only).
  struct Admission {
    std::string job_id;
    SystemTime retry_at;
    int failures = 0;
  };
  std::vector<Admission> admissions_;

  DeviceViewer view_;
  // Whether any admitted job follows devices (deviceChanged queues ids only then).
  std::atomic<bool> following_{false};

  // Cluster mode (engine thread only): when to renew and to claim next.
  SteadyTime next_renew_{};
  SteadyTime next_claim_{};

  Counters counters_;

  std::thread thread_;
  bool started_ = false;
};

}  // namespace iothub::jobs
