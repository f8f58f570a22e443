#include "jobs/jobs_engine.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/encoding.hpp"
#include "common/error_code.hpp"
#include "common/log.hpp"
#include "common/time_format.hpp"
#include "query/query.hpp"

namespace iothub::jobs {
namespace {

constexpr std::size_t kSelectionChunk = 10000;  // pending rows written per store call at start

using SteadyClock = std::chrono::steady_clock;

json::object errorOf(const Status& s) {
  return deviceJobError(errorInfo(s.code()).name, s.message());
}

bool isConnected(const json::object& twin) {
  const json::string* state = findString(twin, "connectionState");
  return state != nullptr && *state == "Connected";
}

std::string_view errorCodeOf(const json::object& error) {
  const json::string* code = findString(error, "code");
  return code != nullptr ? std::string_view(*code) : std::string_view();
}

}  // namespace

bool isTransientStoreError(ErrorCode code) {
  switch (code) {
    case ErrorCode::ServerError:
    case ErrorCode::ServiceUnavailable:
    case ErrorCode::Throttled:
    case ErrorCode::GatewayTimeout:
    case ErrorCode::Cancelled:
      return true;
    default:
      return false;
  }
}

struct JobsEngine::Run {
  // Guarded by state_mutex_ (read by API threads); written only by the engine thread.
  store::JobRecord record;
  JobStatistics stats;

  // Engine thread only.
  JobSpec spec;
  bool is_method = false;
  std::shared_ptr<const json::object> update_twin;
  bool started = false;  // running: its devices are being dispatched
  bool cancel_requested = false;
  bool timed_out = false;
  std::optional<SystemTime> deadline;
  std::deque<std::string> queue;  // pending devices fetched from the store, not dispatched
  std::string cursor;             // the last device id fetched
  bool exhausted = false;         // every pending row has been fetched
  std::size_t inflight = 0;
  std::unordered_map<std::string, SystemTime> started_at;  // in-flight devices
  std::vector<store::DeviceJobRecord> buffer;              // outcomes not written yet
  // Outcomes written by their own operation (twin updates) whose statistics are not saved.
  bool outcomes_unsaved = false;
  SteadyClock::time_point last_flush = SteadyClock::now();
  double tokens = 0;
  SystemTime last_refill{};

  // Store failures (engine thread only). The run touches the store again only from
  // retry_at on; store_failures counts its consecutive failed store calls.
  SystemTime retry_at{};
  int store_failures = 0;
  // Set when the run must fail ("Store failures" in jobs_engine.hpp): it dispatches no more,
  // lets operations in flight finish, fails its undispatched devices, then itself.
  std::optional<Status> failure;
  // recover() failed transiently: the engine thread tries again.
  bool needs_recovery = false;
  // Failed devices whose error was a time-out (abort criteria of type timedOut).
  std::int64_t timed_out_failures = 0;
  // Set once an abort criterion tripped: the run dispatches no more, cancels its
  // undispatched devices and ends failed with this as its failureReason.
  std::optional<std::string> abort_reason;
  // "retry": devices waiting for their next attempt, by when it is due, and the attempts
  // made by every device that has failed one (absent: none failed yet).
  std::multimap<SystemTime, std::string> retry_due;
  std::unordered_map<std::string, int> attempts;

  // Following devices (offlineDevices, convergence, continuous; engine thread only).
  bool follows = false;
  SystemTime run_started{};
  // Devices to dispatch before any other: connected after waiting, or newly matching.
  std::deque<std::string> ready;
  // offlineDevices: devices waiting to connect, until offline_deadline. A device shown
  // connected right after failing offline is dispatched again at once, only once.
  std::unordered_set<std::string> offline_waiting;
  std::unordered_set<std::string> offline_bounced;
  std::optional<SystemTime> offline_deadline;
  // convergence: updated devices waiting for their report, with when their update began
  // and until when they may converge.
  struct Converging {
    SystemTime began;
    SystemTime deadline;
  };
  std::unordered_map<std::string, Converging> converging;
  std::multimap<SystemTime, std::string> convergence_due;
  std::shared_ptr<const json::object> desired;  // the job's desired-properties patch
  // continuous: every device with a row in the job, and matching ones without a row yet.
  std::unordered_set<std::string> targeted;
  std::vector<std::string> newcomers;
  // A drain ended devices that were not done (a continuous job that reaches its deadline
  // with none left ends completed).
  bool left_undone = false;

  // The devices selected by the first attempt to start, kept until the run has started so
  // that a retry writes rows for the same devices.
  std::optional<std::vector<std::string>> targets;

  // Cluster mode: the lease every write of the run carries, and when it ends at the latest
  // by the steady clock (the renewal's send time + the lease). Engine thread only.
  std::optional<store::JobLease> lease;
  SteadyClock::time_point lease_deadline{};
  // Dropped because the lease was lost: nothing more is written for it.
  bool abandoned = false;
  // False once the run is abandoned; twin tasks still queued then leave their device alone.
  std::shared_ptr<std::atomic<bool>> live = std::make_shared<std::atomic<bool>>(true);
};

void JobsEngine::Inbox::post(Completion c) {
  std::lock_guard lock(mutex);
  completions.push_back(std::move(c));
  wake.notify_one();
}

void JobsEngine::Inbox::post(std::vector<Completion> batch) {
  if (batch.empty()) return;
  std::lock_guard lock(mutex);
  for (auto& c : batch) completions.push_back(std::move(c));
  wake.notify_one();
}

JobsEngine::JobsEngine(store::Store& store, DeviceOperations& operations, TargetSelector select,
                       const Clock& clock, JobsOptions options)
    : store_(store),
      operations_(operations),
      select_(std::move(select)),
      clock_(clock),
      options_(options) {}

JobsEngine::~JobsEngine() { stop(); }

void JobsEngine::followDevices(DeviceViewer view) { view_ = std::move(view); }

void JobsEngine::deviceChanged(std::string_view device_id) {
  if (!following_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(inbox_->mutex);
  inbox_->changed.emplace_back(device_id);
  inbox_->wake.notify_one();
}

bool JobsEngine::follows(const JobSpec& spec) {
  return spec.offline_wait_seconds || spec.convergence_timeout_seconds || spec.continuous;
}

bool JobsEngine::draining(const Run& run) const {
  return run.cancel_requested || run.timed_out || run.failure || run.abort_reason;
}

bool JobsEngine::load(std::shared_ptr<Run> run) {
  auto spec = specOf(run->record);
  if (!spec) {
    failRun(*run, spec.status());
    return false;
  }
  run->spec = std::move(*spec);
  if (follows(run->spec)) following_ = true;
  bool resumed = false;
  if (statusOf(run->record) == JobStatus::Running) {
    if (Status s = recover(*run); !s) {
      if (!retryLater(*run, s, "resuming")) {
        failRun(*run, s);
        return false;
      }
      run->needs_recovery = true;  // the engine thread tries again
    } else {
      resumed = true;
    }
  }
  std::lock_guard lock(state_mutex_);
  runs_[run->record.job_id] = run;
  return resumed;
}

Status JobsEngine::start() {
  if (started_) return Status::ok();
  if (options_.lease) {
    if (options_.lease->take_back_own_leases) {
      auto released = store_.jobs().releaseJobLeasesOf(options_.lease->node_id);
      if (!released) {
        spdlog::warn("jobs: the leases of a previous run of {} stay until they expire: {}",
                     options_.lease->node_id, released.status().toString());
      } else if (*released > 0) {
        spdlog::info("jobs: {} job lease(s) of a previous run of {} ended", *released,
                     options_.lease->node_id);
      }
    }
    // Jobs come by claims, the first one on the engine thread's first turn.
    next_claim_ = SteadyClock::now();
    next_renew_ = next_claim_ + options_.lease->renew_every;
  } else {
    auto unfinished = store_.jobs().jobsWithStatus({std::string(toString(JobStatus::Queued)),
                                                    std::string(toString(JobStatus::Scheduled)),
                                                    std::string(toString(JobStatus::Running))});
    if (!unfinished) return unfinished.status();
    std::size_t resumed = 0;
    for (auto& job : *unfinished) {
      auto run = std::make_shared<Run>();
      run->record = std::move(job);
      if (load(run)) ++resumed;
    }
    if (!unfinished->empty()) {
      spdlog::info("jobs: {} unfinished job(s) loaded, {} resumed while running",
                   unfinished->size(), resumed);
    }
  }
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options_.twin_workers); ++i) {
    twin_threads_.emplace_back([this] { twinWorker(); });
  }
  thread_ = std::thread([this] { loop(); });
  started_ = true;
  return Status::ok();
}

void JobsEngine::stop() {
  if (!started_) return;
  {
    std::lock_guard lock(inbox_->mutex);
    inbox_->stopping = true;
    inbox_->wake.notify_all();
  }
  thread_.join();
  {
    std::lock_guard lock(twin_mutex_);
    twin_stopping_ = true;
    twin_wake_.notify_all();
  }
  for (auto& t : twin_threads_) t.join();
  twin_threads_.clear();
  started_ = false;
}

void JobsEngine::twinWorker() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(twin_mutex_);
      twin_wake_.wait(lock, [this] { return twin_stopping_ || !twin_tasks_.empty(); });
      if (twin_stopping_) return;  // queued updates stay pending in the store: recovery runs them
      task = std::move(twin_tasks_.front());
      twin_tasks_.pop_front();
    }
    task();
  }
}

std::optional<Status> JobsEngine::updateTwinRetrying(const std::string& device_id,
                                                     const json::object& update,
                                                     const store::DeviceJobWrite& outcome,
                                                     std::optional<Status> first) {
  Status s = first ? std::move(*first) : operations_.updateTwin(device_id, update, outcome);
  for (int attempt = 1;
       !s && isTransientStoreError(s.code()) && attempt <= options_.store_retry_attempts;
       ++attempt) {
    {
      std::unique_lock lock(twin_mutex_);
      if (twin_wake_.wait_for(lock, retryDelay(attempt), [this] { return twin_stopping_; }))
        return std::nullopt;
    }
    log::withFields(spdlog::level::debug, {{"deviceId", device_id}},
                    "jobs: twin update of {} failed ({}); retry {} of {}", device_id, s.toString(),
                    attempt, options_.store_retry_attempts);
    s = operations_.updateTwin(device_id, update, outcome);
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// API

json::object JobsEngine::render(const store::JobRecord& job) {
  {
    std::lock_guard lock(state_mutex_);
    auto it = runs_.find(job.job_id);
    if (it != runs_.end()) return jobResponse(it->second->record, it->second->stats);
  }
  return jobResponse(job, statisticsOf(job));
}

Status JobsEngine::checkRerunSource(const JobSpec& spec) {
  if (!spec.rerun_of) return Status::ok();
  auto source = store_.jobs().getJob(spec.rerun_of->job_id);
  if (source.code() == ErrorCode::JobNotFound) {
    return Status(ErrorCode::ArgumentInvalid,
                  "rerunOf.jobId names no job: '" + spec.rerun_of->job_id + "'");
  }
  return source.status();
}

Result<std::vector<std::string>> JobsEngine::selectTargets(const JobSpec& spec) {
  if (!spec.rerun_of) return select_(spec.condition);
  // The rows of the earlier job with the statuses asked for, in device id order.
  std::vector<std::string> ids;
  for (const std::string& status : spec.rerun_of->statuses) {
    std::string after;
    for (;;) {
      auto rows = store_.deviceJobs().listDeviceJobs(spec.rerun_of->job_id, status, after,
                                                     options_.batch_size);
      if (!rows) return rows.status();
      for (auto& row : *rows) ids.push_back(std::move(row.device_id));
      if (rows->size() < options_.batch_size) break;
      after = ids.back();
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

Result<json::object> JobsEngine::create(std::string_view job_id, const json::value& body) {
  auto spec = parseJobRequest(job_id, body);
  if (!spec) return spec.status();
  IOTHUB_RETURN_IF_ERROR(checkRerunSource(*spec));
  if (follows(*spec) && !view_) {
    return Status(ErrorCode::ArgumentInvalid,
                  "offlineDevices, convergence and continuous need a hub that follows devices");
  }
  store::JobRecord job = newJobRecord(*spec, clock_.now());
  // In a cluster no node holds a job before its start time, so none would mark it
  // scheduled: it is stored so. The PUT still answers "queued", as Azure's does and as a
  // single node's does (docs/protocol.md §9.6).
  const bool stored_scheduled = options_.lease && job.start_time > job.created_time;
  if (stored_scheduled) setStatus(job, JobStatus::Scheduled);
  if (Status s = store_.jobs().createJob(job); !s) {
    if (s.code() == ErrorCode::JobAlreadyExists) {
      return Status(ErrorCode::JobAlreadyExists,
                    "A job with id '" + std::string(job_id) + "' already exists");
    }
    return s;
  }
  {
    std::lock_guard lock(inbox_->mutex);
    if (options_.lease) {
      inbox_->claim_now = true;
    } else {
      inbox_->new_jobs.push_back(job.job_id);
    }
    inbox_->wake.notify_one();
  }
  if (stored_scheduled) setStatus(job, JobStatus::Queued);
  return jobResponse(job, JobStatistics{});
}

Result<json::object> JobsEngine::dryRun(std::string_view job_id, const json::value& body) {
  auto spec = parseJobRequest(job_id, body);
  if (!spec) return spec.status();
  IOTHUB_RETURN_IF_ERROR(checkRerunSource(*spec));
  auto existing = store_.jobs().getJob(job_id);
  if (existing) {
    return Status(ErrorCode::JobAlreadyExists,
                  "A job with id '" + std::string(job_id) + "' already exists");
  }
  if (existing.code() != ErrorCode::JobNotFound) return existing.status();
  auto selected = selectTargets(*spec);
  if (!selected) return selected.status();
  const std::vector<std::string>& targets = *selected;
  json::array sample;
  for (std::size_t i = 0; i < targets.size() && i < kDryRunSampleSize; ++i) {
    sample.emplace_back(targets[i]);
  }
  return json::object{{"deviceCount", static_cast<std::int64_t>(targets.size())},
                      {"sampleDeviceIds", std::move(sample)}};
}

Result<json::object> JobsEngine::get(std::string_view job_id) {
  {
    std::lock_guard lock(state_mutex_);
    auto it = runs_.find(job_id);
    if (it != runs_.end()) return jobResponse(it->second->record, it->second->stats);
  }
  auto job = store_.jobs().getJob(job_id);
  if (!job) return job.status();
  return render(*job);
}

Result<json::object> JobsEngine::cancel(std::string_view job_id) {
  auto job = store_.jobs().getJob(job_id);
  if (!job) return job.status();
  if (!isTerminal(statusOf(*job))) {
    // Whoever runs it (maybe another node) sees the request in the store.
    if (options_.lease) IOTHUB_RETURN_IF_ERROR(store_.jobs().requestJobCancel(job_id));
    auto handled = std::make_shared<std::promise<void>>();
    auto done = handled->get_future();
    {
      std::lock_guard lock(inbox_->mutex);
      inbox_->cancels.push_back({job->job_id, handled});
      inbox_->wake.notify_one();
    }
    // The engine answers within a loop turn; without it (stopped) the job stays as it is.
    done.wait_for(std::chrono::seconds(5));
  }
  return get(job_id);
}

Result<JobPage> JobsEngine::list(std::optional<std::string> type, std::optional<std::string> status,
                                 std::size_t page_size,
                                 std::optional<std::string_view> continuation) {
  if (page_size == 0 || page_size > 1000) {
    return Status(ErrorCode::ArgumentInvalid, "x-ms-max-item-count must be between 1 and 1000");
  }
  if (type && *type != kTypeDeviceMethod && *type != kTypeUpdateTwin) {
    return Status(
        ErrorCode::ArgumentInvalid,
        "jobType must be scheduleDeviceMethod or scheduleUpdateTwin, not '" + *type + "'");
  }
  if (status && !parseJobStatus(*status)) {
    return Status(ErrorCode::ArgumentInvalid,
                  "jobStatus must be one of queued, scheduled, running, completed, "
                  "failed, cancelled, not '" +
                      *status + "'");
  }
  std::string after;
  if (continuation) {
    auto decoded = base64Decode(*continuation);
    if (!decoded || !validateJobId(*decoded)) {
      return Status(ErrorCode::ArgumentInvalid, "The continuation token is malformed");
    }
    after = std::move(*decoded);
  }
  store::JobFilter filter{std::move(type), std::move(status)};
  auto jobs = store_.jobs().listJobs(filter, after, page_size + 1);
  if (!jobs) {
    if (jobs.code() == ErrorCode::JobNotFound) {
      return Status(ErrorCode::ArgumentInvalid, "The continuation token names no job");
    }
    return jobs.status();
  }
  JobPage page;
  bool more = jobs->size() > page_size;
  if (more) jobs->resize(page_size);
  for (const auto& job : *jobs) page.jobs.push_back(render(job));
  if (more) page.continuation = base64Encode(jobs->back().job_id);
  return page;
}

std::size_t JobsEngine::runningCount() const {
  std::lock_guard lock(state_mutex_);
  return static_cast<std::size_t>(std::count_if(runs_.begin(), runs_.end(), [](const auto& r) {
    return statusOf(r.second->record) == JobStatus::Running;
  }));
}

std::map<std::string, std::size_t, std::less<>> JobsEngine::countByStatus() const {
  std::map<std::string, std::size_t, std::less<>> out;
  std::lock_guard lock(state_mutex_);
  for (const auto& [id, run] : runs_) ++out[run->record.status];
  return out;
}

// ---------------------------------------------------------------------------------------
// The engine thread

std::vector<std::shared_ptr<JobsEngine::Run>> JobsEngine::snapshotRuns() const {
  std::lock_guard lock(state_mutex_);
  std::vector<std::shared_ptr<Run>> out;
  out.reserve(runs_.size());
  for (const auto& [id, run] : runs_) out.push_back(run);
  return out;
}

std::chrono::milliseconds JobsEngine::nextWait() const {
  std::chrono::milliseconds wait = options_.idle_tick;
  if (options_.lease) {
    SteadyClock::time_point steady_now = SteadyClock::now();
    auto left = [&](SteadyClock::time_point t) {
      return std::chrono::ceil<std::chrono::milliseconds>(t - steady_now);
    };
    wait = std::max(options_.tick, std::min({wait, left(next_claim_), left(next_renew_)}));
  }
  SystemTime now = clock_.now();
  std::lock_guard lock(state_mutex_);
  auto until = [&](SystemTime t) {
    return std::clamp(std::chrono::ceil<std::chrono::milliseconds>(t - now), options_.tick, wait);
  };
  for (const auto& [id, run] : runs_) {
    if (run->started) return options_.tick;
    bool waits_for_start = !run->needs_recovery && !run->cancel_requested;
    wait = until(waits_for_start ? std::max(run->record.start_time, run->retry_at) : run->retry_at);
  }
  for (const auto& admission : admissions_) wait = until(admission.retry_at);
  return wait;
}

void JobsEngine::loop() {
  std::vector<std::string> new_jobs;
  std::vector<CancelRequest> cancels;
  std::vector<Completion> completions;
  std::vector<std::string> changed;
  // Cluster mode: cancels of jobs this node does not hold, answered after the claim that
  // may bring them here.
  std::vector<CancelRequest> claim_cancels;
  bool stopping = false;
  auto stop_deadline = SteadyClock::time_point::max();
  for (;;) {
    bool claim_now = false;
    {
      std::unique_lock lock(inbox_->mutex);
      inbox_->wake.wait_for(lock, nextWait(), [this, stopping] {
        return (inbox_->stopping && !stopping) || !inbox_->new_jobs.empty() ||
               !inbox_->cancels.empty() || !inbox_->completions.empty() || inbox_->claim_now;
      });
      if (inbox_->stopping && !stopping) {
        stopping = true;
        stop_deadline = SteadyClock::now() + options_.stop_grace;
      }
      new_jobs.swap(inbox_->new_jobs);
      cancels.swap(inbox_->cancels);
      completions.swap(inbox_->completions);
      changed.swap(inbox_->changed);
      claim_now = std::exchange(inbox_->claim_now, false);
    }
    for (const auto& id : new_jobs) admit(id);
    for (auto& c : cancels) {
      if (options_.lease) {
        bool held = false;
        {
          std::lock_guard lock(state_mutex_);
          held = runs_.contains(c.job_id);
        }
        if (!held) {
          claim_now = true;
          claim_cancels.push_back(std::move(c));
          continue;
        }
      }
      handleCancel(c.job_id);
      c.handled->set_value();
    }
    for (auto& c : completions) handleCompletion(c);
    if (!changed.empty()) handleDeviceChanges(changed);
    new_jobs.clear();
    cancels.clear();
    completions.clear();
    changed.clear();

    if (stopping) {
      // No new starts or dispatches: wait for in-flight operations, then record outcomes.
      bool idle = true;
      for (auto& run : snapshotRuns()) {
        if (run->inflight > 0) idle = false;
      }
      if (idle || SteadyClock::now() >= stop_deadline) {
        for (auto& run : snapshotRuns()) {
          if (run->started) flush(*run, true);
        }
        if (options_.lease) releaseLeases();
        for (auto& c : claim_cancels) c.handled->set_value();
        return;
      }
      continue;
    }
    if (options_.lease) leaseTurn(claim_now);
    retryAdmissions();
    startDueJobs();
    for (auto& c : claim_cancels) c.handled->set_value();
    claim_cancels.clear();
    bool following = false;
    for (auto& run : snapshotRuns()) {
      step(*run);
      following = following || follows(run->spec);
    }
    following_ = following;
  }
}

void JobsEngine::admit(const std::string& job_id) {
  auto job = store_.jobs().getJob(job_id);
  if (!job) {
    if (isTransientStoreError(job.code()) && options_.store_retry_attempts > 0) {
      log::withFields(spdlog::level::warn, {{"jobId", job_id}},
                      "jobs: cannot load new job {} yet: {}", job_id, job.status().toString());
      admissions_.push_back({job_id, clock_.now() + retryDelay(1), 1});
      return;
    }
    log::withFields(spdlog::level::err, {{"jobId", job_id}},
                    "jobs: cannot load new job {}: {}; it waits for the next restart", job_id,
                    job.status().toString());
    return;
  }
  admitRecord(std::move(*job));
}

void JobsEngine::retryAdmissions() {
  if (admissions_.empty()) return;
  SystemTime now = clock_.now();
  std::vector<Admission> waiting;
  for (auto& admission : admissions_) {
    if (admission.retry_at > now) {
      waiting.push_back(std::move(admission));
      continue;
    }
    auto job = store_.jobs().getJob(admission.job_id);
    if (job) {
      admitRecord(std::move(*job));
    } else if (isTransientStoreError(job.code()) &&
               admission.failures < options_.store_retry_attempts) {
      ++admission.failures;
      admission.retry_at = now + retryDelay(admission.failures);
      waiting.push_back(std::move(admission));
    } else {
      log::withFields(spdlog::level::err, {{"jobId", admission.job_id}},
                      "jobs: cannot load new job {}: {}; it waits for the next restart",
                      admission.job_id, job.status().toString());
    }
  }
  admissions_.swap(waiting);
}

void JobsEngine::admitRecord(store::JobRecord job) {
  std::string job_id = job.job_id;
  auto run = std::make_shared<Run>();
  run->record = std::move(job);
  auto spec = specOf(run->record);
  if (!spec) {
    failRun(*run, spec.status());
    return;
  }
  run->spec = std::move(*spec);
  if (follows(run->spec)) following_ = true;
  if (statusOf(run->record) == JobStatus::Queued && run->record.start_time > clock_.now()) {
    if (Status s = persist(*run, [](store::JobRecord& r) { setStatus(r, JobStatus::Scheduled); });
        !s)
      log::withFields(spdlog::level::err, {{"jobId", job_id}}, "jobs: {}: {}", job_id,
                      s.toString());
  }
  std::lock_guard lock(state_mutex_);
  runs_[job_id] = run;
}

void JobsEngine::handleCancel(const std::string& job_id) {
  std::shared_ptr<Run> run;
  {
    std::lock_guard lock(state_mutex_);
    auto it = runs_.find(job_id);
    if (it != runs_.end()) run = it->second;
  }
  if (!run) return;  // finished meanwhile
  if (!run->started && !run->needs_recovery) {
    run->cancel_requested = true;
    if (!backingOff(*run)) cancelUnstarted(*run);  // else startDueJobs does it when due
    return;
  }
  if (run->cancel_requested) return;
  run->cancel_requested = true;  // a run waiting to be recovered drains once it is
  if (Status s = persist(*run,
                         [](store::JobRecord& r) {
                           RunState state = runStateOf(r);
                           state.cancel_requested = true;
                           setRunState(r, state);
                         });
      !s)
    log::withFields(spdlog::level::err, {{"jobId", job_id}}, "jobs: cancelling {}: {}", job_id,
                    s.toString());
  log::withFields(spdlog::level::info, {{"jobId", job_id}},
                  "jobs: {} cancel requested ({} in flight finish first)", job_id, run->inflight);
}

void JobsEngine::cancelUnstarted(Run& run) {
  Status s = persist(run, [this](store::JobRecord& r) {
    setStatus(r, JobStatus::Cancelled);
    r.end_time = clock_.now();
  });
  if (!s) {
    if (retryLater(run, s, "cancelling")) return;
    log::withFields(spdlog::level::err, {{"jobId", run.record.job_id}}, "jobs: cancelling {}: {}",
                    run.record.job_id, s.toString());
  }
  std::lock_guard lock(state_mutex_);
  runs_.erase(run.record.job_id);
}

void JobsEngine::handleCompletion(Completion& c) {
  std::shared_ptr<Run> run;
  {
    std::lock_guard lock(state_mutex_);
    auto it = runs_.find(c.job_id);
    if (it != runs_.end()) run = it->second;
  }
  if (!run) return;
  if (c.status.code() == ErrorCode::JobLeaseLost) {
    abandon(*run, c.status.message());
    return;
  }
  auto started = run->started_at.find(c.device_id);
  if (started == run->started_at.end()) return;  // not ours (already resolved)
  SystemTime began = started->second;
  run->started_at.erase(started);
  --run->inflight;
  SystemTime now = clock_.now();
  bool ok = c.status.isOk();
  if (ok && c.recorded && run->spec.convergence_timeout_seconds) {
    // Updated; its row, written with the twin, says converging until this deadline. It
    // succeeds on its report.
    SystemTime deadline =
        addClamped(began, std::chrono::seconds(*run->spec.convergence_timeout_seconds));
    run->converging[c.device_id] = {began, deadline};
    run->convergence_due.emplace(deadline, c.device_id);
    auto twin = view_ ? view_(c.device_id) : nullptr;
    if (convergedNow(*run, twin.get())) endConvergence(*run, c.device_id, true);
    return;
  }
  std::optional<json::object> error;
  if (!ok) error = c.error ? std::move(*c.error) : errorOf(c.status);
  if (!ok && run->offline_deadline && now < *run->offline_deadline && !draining(*run) &&
      errorCodeOf(*error) == "DeviceNotOnline") {
    // offlineDevices: it waits for its connection instead of failing.
    updateStats(*run, [](JobStatistics& s) {
      --s.running;
      ++s.pending;
    });
    waitForConnection(*run, c.device_id, true);
    return;
  }
  int attempt = 0;  // shown in rows of jobs with "retry"
  if (run->spec.retry) {
    auto it = run->attempts.find(c.device_id);
    attempt = (it == run->attempts.end() ? 0 : it->second) + 1;
    if (!ok && attempt < run->spec.retry->max_attempts &&
        run->spec.retry->retries(errorCodeOf(*error)) && !draining(*run)) {
      // Tried again later: pending again, with when and why.
      SystemTime next = now + run->spec.retry->delayAfter(attempt);
      run->attempts[c.device_id] = attempt;
      run->retry_due.emplace(next, c.device_id);
      run->buffer.push_back(deviceJobRecord(run->record, {.device_id = c.device_id,
                                                          .status = DeviceJobStatus::Pending,
                                                          .now = now,
                                                          .started = began,
                                                          .method_response = std::move(c.response),
                                                          .attempts = attempt,
                                                          .next_attempt = next,
                                                          .last_attempt_error = std::move(error)}));
      updateStats(*run, [](JobStatistics& s) {
        --s.running;
        ++s.pending;
      });
      return;
    }
    run->attempts.erase(c.device_id);
  }
  if (!ok && isTimeoutError(errorCodeOf(*error))) ++run->timed_out_failures;
  if (c.recorded) {
    run->outcomes_unsaved = true;  // the statistics are saved at the next flush all the same
  } else {
    run->buffer.push_back(deviceJobRecord(
        run->record, {.device_id = c.device_id,
                      .status = ok ? DeviceJobStatus::Completed : DeviceJobStatus::Failed,
                      .now = now,
                      .started = began,
                      .ended = now,
                      .method_response = std::move(c.response),
                      .error = std::move(error),
                      .attempts = attempt}));
  }
  updateStats(*run, [ok](JobStatistics& s) {
    --s.running;
    ++(ok ? s.succeeded : s.failed);
  });
  (ok ? counters_.devices_succeeded : counters_.devices_failed)
      .fetch_add(1, std::memory_order_relaxed);
  checkAbort(*run);
}

void JobsEngine::checkAbort(Run& run) {
  if (run.spec.abort_criteria.empty() || run.abort_reason || run.cancel_requested ||
      run.timed_out || run.failure)
    return;
  JobStatistics stats;
  {
    std::lock_guard lock(state_mutex_);
    stats = run.stats;
  }
  const std::int64_t executed = stats.succeeded + stats.failed;
  for (const AbortCriterion& criterion : run.spec.abort_criteria) {
    if (!criterion.trips(executed, stats.failed, run.timed_out_failures)) continue;
    std::int64_t counted = criterion.failure_type == FailureType::Any ? stats.failed
                           : criterion.failure_type == FailureType::TimedOut
                               ? run.timed_out_failures
                               : stats.failed - run.timed_out_failures;
    run.abort_reason = "Aborted by " + criterion.describe() + ": " + std::to_string(counted) +
                       " of " + std::to_string(executed) + " devices with an outcome failed so";
    log::withFields(spdlog::level::warn, {{"jobId", run.record.job_id}}, "jobs: {}: {}",
                    run.record.job_id, *run.abort_reason);
    return;
  }
}

void JobsEngine::waitForConnection(Run& run, const std::string& id, bool called) {
  auto twin = view_ ? view_(id) : nullptr;
  if (called && twin && isConnected(*twin) && run.offline_bounced.insert(id).second) {
    // Shown connected already (it connected as the call failed): once more at once.
    run.ready.push_back(id);
    return;
  }
  run.offline_waiting.insert(id);
  SystemTime now = clock_.now();
  auto tried = run.attempts.find(id);
  run.buffer.push_back(
      deviceJobRecord(run.record, {.device_id = id,
                                   .status = DeviceJobStatus::Pending,
                                   .now = now,
                                   .started = now,
                                   .attempts = tried == run.attempts.end() ? 0 : tried->second,
                                   .waiting_for_connection = true}));
}

bool JobsEngine::convergedNow(const Run& run, const json::object* twin) const {
  if (twin == nullptr || !run.desired) return false;
  const json::object* props = findObject(*twin, "properties");
  return reportedMatches(*run.desired, props ? findObject(*props, "reported") : nullptr);
}

void JobsEngine::endConvergence(Run& run, const std::string& id, bool converged) {
  auto it = run.converging.find(id);
  if (it == run.converging.end()) return;
  SystemTime began = it->second.began;
  run.converging.erase(it);
  SystemTime now = clock_.now();
  std::optional<json::object> error;
  if (!converged) {
    error = deviceJobError("NotConverged",
                           "The device did not report the desired properties the job set within " +
                               std::to_string(run.spec.convergence_timeout_seconds.value_or(0)) +
                               " s of its update (convergence.timeoutSeconds)");
    ++run.timed_out_failures;
  }
  run.buffer.push_back(deviceJobRecord(
      run.record, {.device_id = id,
                   .status = converged ? DeviceJobStatus::Completed : DeviceJobStatus::Failed,
                   .now = now,
                   .started = began,
                   .ended = now,
                   .error = std::move(error)}));
  updateStats(run, [converged](JobStatistics& s) {
    --s.running;
    ++(converged ? s.succeeded : s.failed);
  });
  (converged ? counters_.devices_succeeded : counters_.devices_failed)
      .fetch_add(1, std::memory_order_relaxed);
  checkAbort(run);
}

void JobsEngine::handleDeviceChanges(const std::vector<std::string>& ids) {
  for (auto& run : snapshotRuns()) {
    if (!run->started || !run->follows || !view_) continue;
    for (const std::string& id : ids) {
      auto twin = view_(id);
      deviceChangedFor(*run, id, twin.get());
    }
    if (!run->newcomers.empty()) addNewcomers(*run);
  }
}

void JobsEngine::deviceChangedFor(Run& run, const std::string& id, const json::object* twin) {
  if (twin != nullptr && isConnected(*twin) && run.offline_waiting.erase(id) > 0)
    run.ready.push_back(id);
  if (run.converging.contains(id) && convergedNow(run, twin)) endConvergence(run, id, true);
  if (run.spec.continuous && !draining(run) && twin != nullptr && !run.targeted.contains(id) &&
      run.spec.condition.matches(*twin)) {
    run.targeted.insert(id);
    run.newcomers.push_back(id);
  }
}

void JobsEngine::addNewcomers(Run& run) {
  if (run.newcomers.empty() || backingOff(run)) return;
  SystemTime now = clock_.now();
  std::vector<store::DeviceJobRecord> rows;
  rows.reserve(run.newcomers.size());
  for (const auto& id : run.newcomers) {
    rows.push_back(deviceJobRecord(run.record, {.device_id = id,
                                                .status = DeviceJobStatus::Pending,
                                                .now = now,
                                                .started = now,
                                                .matched_after_start = true}));
  }
  // Durably targeted before anything is done to them, so a restart finds them (in ready,
  // by their mark: the fetch cursor may be past them, or reach them too).
  if (Status s = putRows(run, rows); !s) {
    if (!retryLater(run, s, "recording newly matching devices")) failSoftly(run, s);
    return;  // kept: written on a later turn
  }
  auto n = static_cast<std::int64_t>(run.newcomers.size());
  updateStats(run, [n](JobStatistics& st) {
    st.device_count += n;
    st.pending += n;
  });
  log::withFields(spdlog::level::info, {{"jobId", run.record.job_id}},
                  "jobs: {} (continuous): {} more device(s) match", run.record.job_id, n);
  for (auto& id : run.newcomers) run.ready.push_back(std::move(id));
  run.newcomers.clear();
}

void JobsEngine::expireWaits(Run& run) {
  SystemTime now = clock_.now();
  while (!run.convergence_due.empty() && run.convergence_due.begin()->first <= now) {
    auto [deadline, id] = *run.convergence_due.begin();
    run.convergence_due.erase(run.convergence_due.begin());
    auto it = run.converging.find(id);
    if (it != run.converging.end() && it->second.deadline == deadline)
      endConvergence(run, id, false);
  }
  if (run.offline_deadline && now >= *run.offline_deadline && !run.offline_waiting.empty()) {
    auto error = deviceJobError("DeviceNotOnline",
                                "The device did not connect within " +
                                    std::to_string(run.spec.offline_wait_seconds.value_or(0)) +
                                    " s of the job's start (offlineDevices.waitSeconds)");
    for (const std::string& id : run.offline_waiting) {
      auto tried = run.attempts.find(id);
      run.buffer.push_back(deviceJobRecord(
          run.record, {.device_id = id,
                       .status = DeviceJobStatus::Failed,
                       .now = now,
                       .started = now,
                       .ended = now,
                       .error = error,
                       .attempts = tried == run.attempts.end() ? 0 : tried->second}));
    }
    auto n = static_cast<std::int64_t>(run.offline_waiting.size());
    run.offline_waiting.clear();
    updateStats(run, [n](JobStatistics& st) {
      st.pending -= n;
      st.failed += n;
    });
    counters_.devices_failed.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
    checkAbort(run);
  }
}

void JobsEngine::updateStats(Run& run, const std::function<void(JobStatistics&)>& change) {
  std::lock_guard lock(state_mutex_);
  change(run.stats);
}

void JobsEngine::startDueJobs() {
  SystemTime now = clock_.now();
  std::size_t running = 0;
  std::vector<std::shared_ptr<Run>> due;
  for (auto& run : snapshotRuns()) {
    if (run->started) {
      ++running;
    } else if (backingOff(*run)) {
      continue;
    } else if (run->needs_recovery) {
      if (Status s = recover(*run); !s) {
        if (!retryLater(*run, s, "resuming")) failRun(*run, s);
        continue;
      }
      run->needs_recovery = false;
      ++running;
    } else if (run->cancel_requested) {
      cancelUnstarted(*run);
    } else if (run->record.start_time <= now) {
      due.push_back(run);
    }
  }
  // Higher priority first (docs/jobs.md), then in the order they became due.
  std::sort(due.begin(), due.end(), [](const auto& a, const auto& b) {
    const int pa = a->record.priority(), pb = b->record.priority();
    return std::tie(pb, a->record.start_time, a->record.created_time, a->record.job_id) <
           std::tie(pa, b->record.start_time, b->record.created_time, b->record.job_id);
  });
  for (auto& run : due) {
    if (running >= std::max<std::size_t>(1, options_.max_running_jobs)) {
      // Its time has come but every slot is taken: it waits its turn as queued.
      if (statusOf(run->record) != JobStatus::Queued) {
        if (Status s = persist(*run, [](store::JobRecord& r) { setStatus(r, JobStatus::Queued); });
            !s)
          log::withFields(spdlog::level::err, {{"jobId", run->record.job_id}}, "jobs: {}: {}",
                          run->record.job_id, s.toString());
      }
      continue;
    }
    if (Status s = startRun(*run); !s) {
      if (!retryLater(*run, s, "starting")) failRun(*run, s);
      continue;
    }
    ++running;
  }
}

namespace {
// The desired-properties patch of a twin job's updateTwin, or null.
std::shared_ptr<const json::object> desiredPatch(const json::object& update_twin) {
  const json::object* props = findObject(update_twin, "properties");
  const json::object* desired = props != nullptr ? findObject(*props, "desired") : nullptr;
  return desired != nullptr ? std::make_shared<const json::object>(*desired) : nullptr;
}
}  // namespace

Status JobsEngine::startRun(Run& run) {
  run.is_method = run.spec.type == kTypeDeviceMethod;
  run.update_twin = std::make_shared<const json::object>(run.spec.update_twin);
  SystemTime now = clock_.now();
  if (!run.targets) {
    auto selected = selectTargets(run.spec);
    if (!selected) return selected.status();
    run.targets = std::move(*selected);
  }
  const std::vector<std::string>& targets = *run.targets;
  for (std::size_t i = 0; i < targets.size(); i += kSelectionChunk) {
    std::vector<store::DeviceJobRecord> rows;
    std::size_t end = std::min(targets.size(), i + kSelectionChunk);
    rows.reserve(end - i);
    for (std::size_t j = i; j < end; ++j) {
      rows.push_back(deviceJobRecord(run.record, {.device_id = targets[j],
                                                  .status = DeviceJobStatus::Pending,
                                                  .now = now,
                                                  .started = now}));
    }
    IOTHUB_RETURN_IF_ERROR(putRows(run, rows));
  }
  updateStats(run, [n = static_cast<std::int64_t>(targets.size())](JobStatistics& s) {
    s = JobStatistics{};
    s.device_count = s.pending = n;
  });
  IOTHUB_RETURN_IF_ERROR(persist(run, [now](store::JobRecord& r) {
    setStatus(r, JobStatus::Running);
    RunState state = runStateOf(r);
    state.targets_selected = true;
    state.started = now;
    setRunState(r, state);
  }));
  if (run.spec.max_execution_seconds)
    run.deadline = addClamped(now, std::chrono::seconds(*run.spec.max_execution_seconds));
  run.started = true;
  run.store_failures = 0;
  run.tokens = 1;
  run.last_refill = now;
  run.run_started = now;
  run.follows = follows(run.spec);
  if (run.spec.offline_wait_seconds)
    run.offline_deadline = addClamped(now, std::chrono::seconds(*run.spec.offline_wait_seconds));
  if (run.spec.convergence_timeout_seconds) run.desired = desiredPatch(run.spec.update_twin);
  if (run.spec.continuous) run.targeted.insert(targets.begin(), targets.end());
  log::withFields(spdlog::level::info, {{"jobId", run.record.job_id}},
                  "jobs: {} ({}) started on {} device(s)", run.record.job_id, run.record.type,
                  targets.size());
  run.targets.reset();
  return Status::ok();
}

Status JobsEngine::recover(Run& run) {
  const RunState state = runStateOf(run.record);
  if (!state.targets_selected) {
    // Stopped while selecting: nothing was dispatched yet, so select again.
    return startRun(run);
  }
  run.is_method = run.spec.type == kTypeDeviceMethod;
  run.update_twin = std::make_shared<const json::object>(run.spec.update_twin);
  SystemTime now = clock_.now();
  JobStatistics stats;
  run.retry_due.clear();
  run.attempts.clear();
  run.timed_out_failures = 0;
  run.follows = follows(run.spec);
  run.ready.clear();
  run.offline_waiting.clear();
  run.converging.clear();
  run.convergence_due.clear();
  run.targeted.clear();
  run.newcomers.clear();
  run.run_started = state.started.value_or(run.record.start_time);
  if (run.spec.offline_wait_seconds) {
    run.offline_deadline =
        addClamped(run.run_started, std::chrono::seconds(*run.spec.offline_wait_seconds));
  }
  if (run.spec.convergence_timeout_seconds) run.desired = desiredPatch(run.spec.update_twin);
  std::vector<store::DeviceJobRecord> fixes;
  std::string after;
  for (;;) {
    auto rows = store_.deviceJobs().listDeviceJobs(run.record.job_id, std::nullopt, after,
                                                   options_.batch_size);
    if (!rows) return rows.status();
    for (auto& row : *rows) {
      ++stats.device_count;
      if (run.spec.continuous) run.targeted.insert(row.device_id);
      const auto row_status = parseDeviceJobStatus(row.status).value_or(DeviceJobStatus::Failed);
      const json::value* attempts = findMember(row.document, kRowAttempts);
      const int attempts_made =
          attempts != nullptr && attempts->is_int64() ? static_cast<int>(attempts->get_int64()) : 0;
      if (row_status == DeviceJobStatus::Pending) {
        ++stats.pending;
        if (findMember(row.document, kRowWaitingForConnection) != nullptr) {
          if (attempts_made > 0) run.attempts[row.device_id] = attempts_made;
          run.offline_waiting.insert(row.device_id);  // still offline, or called below
        } else if (findMember(row.document, kRowMatchedAfterStart) != nullptr) {
          run.ready.push_back(row.device_id);  // continuous: matched, not dispatched yet
        } else if (attempts_made > 0) {
          // Waiting for its next attempt ("retry"): due when its row says.
          SystemTime next = now;
          if (const json::string* t = findString(row.document, kRowNextAttempt))
            next = parseTimestamp(*t).value_or(now);
          run.attempts[row.device_id] = attempts_made;
          run.retry_due.emplace(next, row.device_id);
        }
      } else if (row_status == DeviceJobStatus::Running) {
        SystemTime began = now;
        if (const json::string* t = findString(row.document, "startTimeUtc"))
          began = parseTimestamp(*t).value_or(now);
        if (findMember(row.document, kRowConverging) != nullptr) {
          // Updated before the restart, waiting for its report: not applied again.
          ++stats.running;
          SystemTime deadline = now;
          if (const json::string* t = findString(row.document, kRowConvergenceDeadline))
            deadline = parseTimestamp(*t).value_or(now);
          run.converging[row.device_id] = {began, deadline};
          run.convergence_due.emplace(deadline, row.device_id);
        } else if (run.is_method) {
          ++stats.failed;
          fixes.push_back(deviceJobRecord(
              run.record,
              {.device_id = row.device_id,
               .status = DeviceJobStatus::Failed,
               .now = now,
               .started = began,
               .ended = now,
               .error = deviceJobError("DeviceJobInterrupted",
                                       "The hub (or the cluster node running the job) stopped "
                                       "while this method call was in flight; it may or may not "
                                       "have reached the device, so it was not repeated"),
               .attempts = attempts_made}));
        } else {
          // Rows of old versions, which recorded twin updates apart from the twin: the update
          // may be applied again. Today a twin row goes from pending straight to its outcome.
          ++stats.pending;
          fixes.push_back(deviceJobRecord(run.record, {.device_id = row.device_id,
                                                       .status = DeviceJobStatus::Pending,
                                                       .now = now,
                                                       .started = began}));
        }
      } else if (row_status == DeviceJobStatus::Completed) {
        ++stats.succeeded;
      } else if (row_status == DeviceJobStatus::Failed) {
        ++stats.failed;
        if (const json::object* error = findObject(row.document, "error");
            error != nullptr && isTimeoutError(errorCodeOf(*error)))
          ++run.timed_out_failures;
      } else {
        ++stats.canceled;
      }
    }
    if (rows->size() < options_.batch_size) break;
    after = rows->back().device_id;
  }
  if (!fixes.empty()) IOTHUB_RETURN_IF_ERROR(putRows(run, fixes));
  {
    // get() reads the statistics of runs it finds, and a retried recovery is already listed.
    std::lock_guard lock(state_mutex_);
    run.stats = stats;
  }
  run.cancel_requested = run.cancel_requested || state.cancel_requested;
  if (run.spec.max_execution_seconds) {
    run.deadline =
        addClamped(run.run_started, std::chrono::seconds(*run.spec.max_execution_seconds));
  }
  IOTHUB_RETURN_IF_ERROR(persist(run));
  run.started = true;
  run.store_failures = 0;
  run.tokens = 1;
  run.last_refill = now;
  checkAbort(run);  // the counts that tripped it before the restart trip it again
  if (view_) {
    // What changed while nobody followed: connections, reports, newly matching devices.
    std::vector<std::string> changed;
    changed.insert(changed.end(), run.offline_waiting.begin(), run.offline_waiting.end());
    for (const auto& [id, c] : run.converging) changed.push_back(id);
    for (const std::string& id : changed) deviceChangedFor(run, id, view_(id).get());
    if (run.spec.continuous && !draining(run)) {
      for (const std::string& id : select_(run.spec.condition)) {
        if (run.targeted.insert(id).second) run.newcomers.push_back(id);
      }
    }
  }
  log::withFields(spdlog::level::info, {{"jobId", run.record.job_id}},
                  "jobs: {} resumed: {} pending, {} succeeded, {} failed, {} interrupted",
                  run.record.job_id, stats.pending, stats.succeeded, stats.failed, fixes.size());
  return Status::ok();
}

void JobsEngine::step(Run& run) {
  if (!run.started) return;
  if (!run.cancel_requested && !run.timed_out && run.deadline && clock_.now() >= *run.deadline) {
    run.timed_out = true;
    spdlog::info("jobs: {} reached its maxExecutionTimeInSeconds", run.record.job_id);
  }
  if (backingOff(run)) return;  // completions still arrive and wait in the buffer
  expireWaits(run);
  if (!run.newcomers.empty()) addNewcomers(run);
  if (backingOff(run)) return;
  if (run.failure) {
    drainUndispatched(run, DeviceJobStatus::Failed,
                      deviceJobError("JobFailed",
                                     "The job failed before this device was "
                                     "processed: " +
                                         run.failure->message()));
  } else if (run.cancel_requested) {
    drainUndispatched(
        run, DeviceJobStatus::Canceled,
        deviceJobError("JobCancelled", "The job was cancelled before this device was processed"));
  } else if (run.abort_reason) {
    drainUndispatched(run, DeviceJobStatus::Canceled,
                      deviceJobError("JobAborted",
                                     "The job was aborted before this device was "
                                     "processed. " +
                                         *run.abort_reason));
  } else if (run.timed_out) {
    drainUndispatched(
        run, DeviceJobStatus::Failed,
        deviceJobError("JobTimedOut",
                       "The job's maxExecutionTimeInSeconds (" +
                           std::to_string(run.spec.max_execution_seconds.value_or(0)) +
                           " s) elapsed before this device was processed"));
  } else {
    dispatch(run);
  }
  if (!run.started || backingOff(run)) return;
  flush(run, false);
  if (run.started && !backingOff(run) && run.exhausted && run.queue.empty() &&
      run.retry_due.empty() && run.inflight == 0 && run.ready.empty() &&
      run.offline_waiting.empty() && run.converging.empty() && run.newcomers.empty() &&
      (!run.spec.continuous || draining(run)))
    finish(run);
}

bool JobsEngine::fetchPending(Run& run) {
  if (run.exhausted) return false;
  auto rows = store_.deviceJobs().listDeviceJobs(
      run.record.job_id, toString(DeviceJobStatus::Pending), run.cursor, options_.batch_size);
  if (!rows) {
    if (!retryLater(run, rows.status(), "reading its pending devices")) {
      failSoftly(run, rows.status());
      run.exhausted = true;  // they cannot be read, so they stay pending
    }
    return false;
  }
  run.store_failures = 0;
  if (!rows->empty()) run.cursor = rows->back().device_id;
  if (rows->size() < options_.batch_size) run.exhausted = true;
  bool fetched = false;
  for (auto& row : *rows) {
    // Devices waiting for their next attempt are in retry_due already.
    if (findMember(row.document, kRowAttempts) != nullptr ||
        findMember(row.document, kRowWaitingForConnection) != nullptr ||
        findMember(row.document, kRowMatchedAfterStart) != nullptr)
      continue;  // in retry_due, offline_waiting or ready
    run.queue.push_back(std::move(row.device_id));
    fetched = true;
  }
  return fetched || !run.exhausted;
}

void JobsEngine::drainUndispatched(Run& run, DeviceJobStatus status, const json::object& error) {
  SystemTime now = clock_.now();
  // Updated devices still converging end too (their update stays applied).
  if (!run.converging.empty()) {
    for (const auto& [id, c] : run.converging) {
      run.buffer.push_back(deviceJobRecord(run.record, {.device_id = id,
                                                        .status = status,
                                                        .now = now,
                                                        .started = c.began,
                                                        .ended = now,
                                                        .error = error}));
    }
    auto n = static_cast<std::int64_t>(run.converging.size());
    bool canceled = status == DeviceJobStatus::Canceled;
    updateStats(run, [n, canceled](JobStatistics& st) {
      st.running -= n;
      (canceled ? st.canceled : st.failed) += n;
    });
    run.converging.clear();
    run.convergence_due.clear();
    run.left_undone = true;
  }
  // Devices waiting for another attempt or a connection, or ready: they end with the rest.
  for (auto& id : run.ready) run.queue.push_back(std::move(id));
  run.ready.clear();
  for (auto& [due, id] : run.retry_due) run.queue.push_back(std::move(id));
  run.retry_due.clear();
  for (const auto& id : run.offline_waiting) run.queue.push_back(id);
  run.offline_waiting.clear();
  run.newcomers.clear();  // no row yet: never targeted
  for (;;) {
    if (run.queue.empty() && !fetchPending(run)) break;
    std::int64_t n = 0;
    while (!run.queue.empty()) {
      const std::string& id = run.queue.front();
      auto tried = run.attempts.find(id);
      run.buffer.push_back(deviceJobRecord(
          run.record, {.device_id = id,
                       .status = status,
                       .now = now,
                       .started = now,
                       .ended = now,
                       .error = error,
                       .attempts = tried == run.attempts.end() ? 0 : tried->second}));
      if (tried != run.attempts.end()) run.attempts.erase(tried);
      run.queue.pop_front();
      ++n;
    }
    bool canceled = status == DeviceJobStatus::Canceled;
    if (n > 0) run.left_undone = true;
    updateStats(run, [n, canceled](JobStatistics& s) {
      s.pending -= n;
      (canceled ? s.canceled : s.failed) += n;
    });
    flush(run, run.buffer.size() >= options_.batch_size);
    if (!run.started || backingOff(run)) return;  // the store failed
  }
}

void JobsEngine::dispatch(Run& run) {
  // Token bucket on the hub's clock: up to one second's worth of operations at once.
  SystemTime clock_now = clock_.now();
  std::optional<double> rate = run.spec.device_operations_per_second;
  if (run.spec.rollout) {
    std::int64_t succeeded = 0;
    {
      std::lock_guard lock(state_mutex_);
      succeeded = run.stats.succeeded;
    }
    double per_second = run.spec.rollout->ratePerMinute(succeeded) / 60.0;
    rate = std::min(rate.value_or(per_second), per_second);
  }
  if (rate) {
    std::chrono::duration<double> elapsed = clock_now - run.last_refill;
    run.tokens =
        std::min(std::max(1.0, *rate), run.tokens + std::max(0.0, elapsed.count()) * *rate);
  }
  run.last_refill = clock_now;
  std::vector<std::string> batch;
  std::size_t retried = 0;  // the first `retried` of batch come from retry_due
  while (run.inflight + batch.size() < std::max<std::size_t>(1, options_.window)) {
    if (rate && run.tokens < 1 - 1e-9) break;  // rounding: 60/min for 1 s is one token
    bool from_ready = false;
    bool from_queue = false;
    if (!run.ready.empty()) {
      // Like a device due for another attempt: put back there if nothing is called.
      batch.push_back(std::move(run.ready.front()));
      run.ready.pop_front();
      from_ready = true;
    } else if (!run.retry_due.empty() && run.retry_due.begin()->first <= clock_now) {
      batch.push_back(std::move(run.retry_due.begin()->second));
      run.retry_due.erase(run.retry_due.begin());
    } else {
      // A fetch may find only devices waiting for another attempt: look again.
      while (run.queue.empty() && fetchPending(run)) {
      }
      if (run.queue.empty()) break;
      batch.push_back(std::move(run.queue.front()));
      run.queue.pop_front();
      from_queue = true;
    }
    if (run.started_at.contains(batch.back())) {
      batch.pop_back();  // in flight already (its outcome decides); never twice at once
      continue;
    }
    if (!from_ready && run.offline_deadline && clock_now < *run.offline_deadline && view_) {
      // offlineDevices: an offline device is not called; it waits for its connection.
      auto twin = view_(batch.back());
      if (twin && !isConnected(*twin)) {
        waitForConnection(run, batch.back(), false);
        batch.pop_back();
        continue;
      }
    }
    if (!from_queue) ++retried;
    if (rate) run.tokens -= 1;
  }
  if (batch.empty()) return;
  const SystemTime& now = clock_now;
  if (run.is_method) {
    // Durably running before any call goes out, so a restart knows which calls may have
    // reached their device. The outcomes waiting for their write go in the same transaction,
    // so the rows marked running are exactly the calls in flight (at most the window).
    std::vector<store::DeviceJobRecord> rows;
    rows.swap(run.buffer);
    rows.reserve(rows.size() + batch.size());
    for (const auto& id : batch) {
      int attempt = 0;
      if (run.spec.retry) {
        auto tried = run.attempts.find(id);
        attempt = (tried == run.attempts.end() ? 0 : tried->second) + 1;
      }
      rows.push_back(deviceJobRecord(run.record, {.device_id = id,
                                                  .status = DeviceJobStatus::Running,
                                                  .now = now,
                                                  .started = now,
                                                  .attempts = attempt}));
    }
    if (Status s = putRows(run, rows); !s) {
      // Nothing was called: the outcomes wait for the next write, the devices go back to
      // the front of the queue in their order, and so do their tokens.
      rows.resize(rows.size() - batch.size());
      run.buffer = std::move(rows);
      for (std::size_t i = batch.size(); i-- > retried;) run.queue.push_front(std::move(batch[i]));
      for (std::size_t i = 0; i < retried; ++i) run.retry_due.emplace(now, std::move(batch[i]));
      if (rate) run.tokens += static_cast<double>(batch.size());
      if (!retryLater(run, s, "recording the calls it starts")) failSoftly(run, s);
      return;
    }
    run.store_failures = 0;
  }
  auto n = static_cast<std::int64_t>(batch.size());
  updateStats(run, [n](JobStatistics& s) {
    s.pending -= n;
    s.running += n;
  });
  run.inflight += batch.size();
  for (auto& id : batch) run.started_at.emplace(id, now);
  if (run.is_method) {
    for (auto& id : batch) {
      methods::MethodCall call = run.spec.method;
      call.device_id = id;
      operations_.invokeMethod(std::move(call), [inbox = inbox_, job = run.record.job_id, id,
                                                 fail_on_status = run.spec.fail_on_device_status](
                                                    Result<methods::MethodResult> result) {
        Completion c{job, id, Status::ok(), std::nullopt, false, std::nullopt};
        if (!result) {
          c.status = result.status();
        } else {
          auto payload = parseJson(result->payload_json);
          c.response = json::object{
              {"status", result->status},
              {"payload", payload ? *payload : json::value(json::string(result->payload_json))}};
          if (fail_on_status && (result->status < 200 || result->status > 299)) {
            // failOnDeviceStatus (docs/jobs.md): the device answered, with a failure.
            std::string why = "The device answered with status " + std::to_string(result->status);
            c.status = Status(ErrorCode::InvalidOperation, why);
            c.error = deviceJobError("DeviceMethodFailed", why);
          }
        }
        inbox->post(std::move(c));
      });
    }
    return;
  }
  // What a device's completed row is made of (the rest of the record stays here).
  auto shape = std::make_shared<store::JobRecord>();
  shape->job_id = run.record.job_id;
  shape->type = run.record.type;
  shape->created_time = run.record.created_time;
  // A twin worker updates up to twin_batch devices in one store call (one transaction on
  // SQLite); a device whose update fails transiently is retried on its own.
  std::lock_guard lock(twin_mutex_);
  const std::size_t chunk = std::max<std::size_t>(1, options_.twin_batch);
  for (std::size_t first = 0; first < batch.size(); first += chunk) {
    std::vector<std::string> ids(
        std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(first)),
        std::make_move_iterator(
            batch.begin() + static_cast<std::ptrdiff_t>(std::min(batch.size(), first + chunk))));
    twin_tasks_.emplace_back([this, inbox = inbox_, shape, ids = std::move(ids), began = now,
                              lease = run.lease, live = run.live, update = run.update_twin,
                              converge = run.spec.convergence_timeout_seconds] {
      if (!live->load()) return;  // the job left this node: its next owner applies the update
      SystemTime at = clock_.now();
      // With convergence the device is done only once it reports: its row says converging.
      std::optional<SystemTime> until;
      if (converge) until = addClamped(began, std::chrono::seconds(*converge));
      std::vector<store::DeviceJobWrite> outcomes;
      outcomes.reserve(ids.size());
      for (const auto& id : ids) {
        outcomes.push_back(store::DeviceJobWrite{
            deviceJobRecord(
                *shape, {.device_id = id,
                         .status = until ? DeviceJobStatus::Running : DeviceJobStatus::Completed,
                         .now = at,
                         .started = began,
                         .ended = until ? std::nullopt : std::optional<SystemTime>(at),
                         .convergence_deadline = until}),
            lease});
      }
      std::vector<Status> statuses = operations_.updateTwins(ids, *update, outcomes);
      // Outcomes go to the engine at once (one wake-up); devices that failed transiently
      // are then retried one by one.
      std::vector<Completion> done;
      std::vector<std::size_t> retry;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i < statuses.size() &&
            (statuses[i].isOk() || !isTransientStoreError(statuses[i].code()))) {
          bool recorded = statuses[i].isOk();
          done.push_back(Completion{shape->job_id, ids[i], std::move(statuses[i]), std::nullopt,
                                    recorded, std::nullopt});
        } else {
          retry.push_back(i);
        }
      }
      inbox->post(std::move(done));
      for (std::size_t i : retry) {
        std::optional<Status> tried;
        if (i < statuses.size()) tried = statuses[i];
        auto s = updateTwinRetrying(ids[i], *update, outcomes[i], std::move(tried));
        if (!s) return;  // stopping: the rest stay pending for recovery
        bool recorded = s->isOk();
        inbox->post(
            Completion{shape->job_id, ids[i], std::move(*s), std::nullopt, recorded, std::nullopt});
      }
    });
  }
  twin_wake_.notify_all();
}

void JobsEngine::flush(Run& run, bool force) {
  if (run.buffer.empty() && !run.outcomes_unsaved) return;
  auto now = SteadyClock::now();
  if (!force && run.buffer.size() < options_.batch_size &&
      now - run.last_flush < options_.flush_interval)
    return;
  run.last_flush = now;
  if (!run.buffer.empty()) {
    std::vector<store::DeviceJobRecord> rows;
    rows.swap(run.buffer);
    if (Status s = putRows(run, rows); !s) {
      run.buffer.swap(rows);  // kept for the next attempt
      if (retryLater(run, s, "recording outcomes")) return;
      failRun(run, s);  // the store refuses to record outcomes for good
      return;
    }
    run.store_failures = 0;
  }
  run.outcomes_unsaved = false;
  if (Status s = persist(run); !s)
    log::withFields(spdlog::level::warn, {{"jobId", run.record.job_id}},
                    "jobs: {}: statistics not saved: {}", run.record.job_id, s.toString());
}

Status JobsEngine::persist(Run& run, const std::function<void(store::JobRecord&)>& change) {
  store::JobRecord next;
  {
    std::lock_guard lock(state_mutex_);
    next = run.record;
    setStatistics(next, run.stats);
  }
  if (change) change(next);
  auto replace = [&next](const store::JobRecord&) { return Result<store::JobRecord>(next); };
  auto updated = run.lease ? store_.jobs().updateLeasedJob(*run.lease, replace)
                           : store_.jobs().updateJob(next.job_id, replace);
  if (!updated) {
    if (updated.code() == ErrorCode::JobLeaseLost) abandon(run, updated.status().message());
    return updated.status();
  }
  // Readers see a change only once it is durable, so what GET shows, a list from the store
  // shows too.
  std::lock_guard lock(state_mutex_);
  run.record = std::move(next);
  return Status::ok();
}

void JobsEngine::finish(Run& run) {
  flush(run, true);
  if (!run.started || !run.buffer.empty()) return;  // failed while flushing, or backing off
  Status s = persist(run, [this, &run](store::JobRecord& r) {
    RunState state = runStateOf(r);
    if (run.failure) {
      setStatus(r, JobStatus::Failed);
      state.failure_reason = run.failure->message();
    } else if (run.abort_reason && !run.cancel_requested) {
      setStatus(r, JobStatus::Failed);
      state.failure_reason = *run.abort_reason;
    } else if (run.cancel_requested) {
      setStatus(r, JobStatus::Cancelled);
    } else if (run.timed_out && run.spec.continuous && !run.left_undone) {
      setStatus(r, JobStatus::Completed);  // its time is up and nothing was left undone
    } else if (run.timed_out) {
      setStatus(r, JobStatus::Failed);
      state.failure_reason = "maxExecutionTimeInSeconds (" +
                             std::to_string(run.spec.max_execution_seconds.value_or(0)) +
                             " s) elapsed before every device was processed";
    } else {
      setStatus(r, JobStatus::Completed);
    }
    setRunState(r, state);
    r.end_time = clock_.now();
  });
  if (!s) {
    if (run.abandoned || retryLater(run, s, "recording its end")) return;
    log::withFields(spdlog::level::err, {{"jobId", run.record.job_id}},
                    "jobs: {} could not be finished: {}; a restart resumes and finishes it",
                    run.record.job_id, s.toString());
    std::lock_guard lock(state_mutex_);
    runs_.erase(run.record.job_id);
    return;
  }
  (statusOf(run.record) == JobStatus::Completed   ? counters_.jobs_completed
   : statusOf(run.record) == JobStatus::Cancelled ? counters_.jobs_cancelled
                                                  : counters_.jobs_failed)
      .fetch_add(1, std::memory_order_relaxed);
  log::withFields(spdlog::level::info, {{"jobId", run.record.job_id}},
                  "jobs: {} {}: {} succeeded, {} failed, {} canceled of {}", run.record.job_id,
                  run.record.status, run.stats.succeeded, run.stats.failed, run.stats.canceled,
                  run.stats.device_count);
  std::lock_guard lock(state_mutex_);
  runs_.erase(run.record.job_id);
}

bool JobsEngine::retryLater(Run& run, const Status& why, std::string_view during) {
  if (!isTransientStoreError(why.code()) || run.store_failures >= options_.store_retry_attempts)
    return false;
  ++run.store_failures;
  std::chrono::milliseconds delay = retryDelay(run.store_failures);
  run.retry_at = clock_.now() + delay;
  log::withFields(spdlog::level::warn, {{"jobId", run.record.job_id}},
                  "jobs: {}: {} failed ({}); retry {} of {} in {} ms", run.record.job_id, during,
                  why.toString(), run.store_failures, options_.store_retry_attempts, delay.count());
  return true;
}

std::chrono::milliseconds JobsEngine::retryDelay(int failures) const {
  std::chrono::milliseconds delay = options_.store_retry_initial;
  for (int i = 1; i < failures && delay < options_.store_retry_max; ++i) delay *= 2;
  return std::min(delay, options_.store_retry_max);
}

bool JobsEngine::backingOff(const Run& run) const { return clock_.now() < run.retry_at; }

void JobsEngine::failSoftly(Run& run, const Status& why) {
  if (run.failure || run.abandoned) return;
  log::withFields(spdlog::level::err, {{"jobId", run.record.job_id}},
                  "jobs: {} fails: {}; operations in flight finish first", run.record.job_id,
                  why.toString());
  run.failure = why;
}

void JobsEngine::failRun(Run& run, const Status& why) {
  if (run.abandoned) return;  // not ours to record any more
  log::withFields(spdlog::level::err, {{"jobId", run.record.job_id}}, "jobs: {} failed: {}",
                  run.record.job_id, why.toString());
  run.started = false;
  Status s = persist(run, [this, &why](store::JobRecord& r) {
    setStatus(r, JobStatus::Failed);
    r.end_time = clock_.now();
    RunState state = runStateOf(r);
    state.failure_reason = why.message();
    setRunState(r, state);
  });
  if (!s)
    log::withFields(spdlog::level::err, {{"jobId", run.record.job_id}}, "jobs: {}: {}",
                    run.record.job_id, s.toString());
  std::lock_guard lock(state_mutex_);
  runs_.erase(run.record.job_id);
}

// ---------------------------------------------------------------------------------------
// Cluster mode

Status JobsEngine::putRows(Run& run, const std::vector<store::DeviceJobRecord>& rows) {
  Status s = run.lease ? store_.jobs().putLeasedDeviceJobs(*run.lease, rows)
                       : store_.deviceJobs().putDeviceJobs(rows);
  if (s.code() == ErrorCode::JobLeaseLost) abandon(run, s.message());
  return s;
}

void JobsEngine::abandon(Run& run, std::string_view why) {
  if (run.abandoned) return;
  log::withFields(spdlog::level::warn, {{"jobId", run.record.job_id}},
                  "jobs: {} is dropped on this node, which writes nothing more for it: {}",
                  run.record.job_id, why);
  run.abandoned = true;
  run.started = false;
  run.live->store(false);
  std::lock_guard lock(state_mutex_);
  auto it = runs_.find(run.record.job_id);
  if (it != runs_.end() && it->second.get() == &run) runs_.erase(it);
}

void JobsEngine::leaseTurn(bool claim) {
  const JobLeaseOptions& lease = *options_.lease;
  SteadyClock::time_point now = SteadyClock::now();
  if (now >= next_renew_) {
    renewLeases();
    next_renew_ = now + lease.renew_every;
  }
  now = SteadyClock::now();
  for (auto& run : snapshotRuns()) {
    if (run->lease && now >= run->lease_deadline)
      abandon(*run, "no renewal succeeded before its lease ended");
  }
  if (claim || now >= next_claim_) {
    claimDueJobs();
    next_claim_ = SteadyClock::now() + lease.claim_poll;
  }
}

void JobsEngine::renewLeases() {
  std::vector<std::shared_ptr<Run>> held;
  std::vector<store::JobLease> leases;
  for (auto& run : snapshotRuns()) {
    if (!run->lease) continue;
    held.push_back(run);
    leases.push_back(*run->lease);
  }
  if (leases.empty()) return;
  // The store's lease ends `lease` after it ran the renewal, so no earlier than this.
  SteadyClock::time_point sent = SteadyClock::now();
  auto renewed = store_.jobs().renewJobLeases(leases, options_.lease->lease);
  if (!renewed) {
    spdlog::warn("jobs: renewing the leases of {} job(s) failed: {}", leases.size(),
                 renewed.status().toString());
    return;
  }
  for (std::size_t i = 0; i < held.size() && i < renewed->size(); ++i) {
    Run& run = *held[i];
    const store::JobLeaseRenewal& renewal = (*renewed)[i];
    if (!renewal.held) {
      abandon(run, "its lease expired or another node claimed it");
      continue;
    }
    run.lease_deadline = sent + options_.lease->lease;
    if (renewal.cancel_requested && !run.cancel_requested) {
      spdlog::info("jobs: {} cancelled through another node", run.record.job_id);
      handleCancel(run.record.job_id);
    }
  }
}

void JobsEngine::claimDueJobs() {
  const JobLeaseOptions& lease = *options_.lease;
  std::size_t held = 0;
  {
    std::lock_guard lock(state_mutex_);
    held = runs_.size();
  }
  const std::size_t capacity = std::max<std::size_t>(1, options_.max_running_jobs);
  if (held >= capacity) return;
  SteadyClock::time_point sent = SteadyClock::now();
  auto claimed = store_.jobs().claimJobs(lease.node_id, clock_.now(), lease.lease, capacity - held);
  if (!claimed) {
    spdlog::warn("jobs: claiming due jobs failed: {}", claimed.status().toString());
    return;
  }
  for (auto& claim : *claimed) {
    std::shared_ptr<Run> stale;
    {
      std::lock_guard lock(state_mutex_);
      auto it = runs_.find(claim.job.job_id);
      if (it != runs_.end()) stale = it->second;
    }
    // Only if this node's steady clock ran slower than the store's: the old run's lease is
    // gone (the claim bumped its epoch), so it must not write again.
    if (stale) abandon(*stale, "claimed again");
    auto run = std::make_shared<Run>();
    run->record = std::move(claim.job);
    run->lease = std::move(claim.lease);
    run->lease_deadline = sent + lease.lease;
    run->cancel_requested = claim.cancel_requested;
    log::withFields(spdlog::level::info, {{"jobId", run->record.job_id}},
                    "jobs: {} ({}) claimed by {} under epoch {}", run->record.job_id,
                    run->record.status, lease.node_id, run->lease->epoch);
    load(run);
  }
}

void JobsEngine::releaseLeases() {
  for (auto& run : snapshotRuns()) {
    if (!run->lease || run->abandoned) continue;
    if (Status s = store_.jobs().releaseJobLease(*run->lease); !s) {
      log::withFields(spdlog::level::warn, {{"jobId", run->record.job_id}},
                      "jobs: releasing the lease of {}: {}; it expires by itself",
                      run->record.job_id, s.toString());
    }
  }
  // The jobs are other nodes' now (or this one's again after its next claim).
  std::lock_guard lock(state_mutex_);
  runs_.clear();
}

}  // namespace iothub::jobs
