#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/status.hpp"
#include "methods/method_invoker.hpp"
#include "query/condition.hpp"
#include "store/records.hpp"

namespace iothub::jobs {

// The job model of docs/protocol.md §9: what a job request may say, how a job and its per-device
// rows are stored, and how they are shown. Pure functions; the engine (jobs_engine.hpp)
// runs jobs.

inline constexpr std::string_view kTypeDeviceMethod = "scheduleDeviceMethod";
inline constexpr std::string_view kTypeUpdateTwin = "scheduleUpdateTwin";

// Job statuses (docs/protocol.md §9.5, §9.6). Queued: accepted, waiting to start (also when
// its start time has come but the running-job limit is reached); Scheduled: waiting for a
// future start time; Running; then one of the terminal ones. Stored and shown by their
// wire names: "queued", ..., "cancelled" (double L, docs/protocol.md §9.5).
enum class JobStatus : std::uint8_t { Queued, Scheduled, Running, Completed, Failed, Cancelled };
// Per-device statuses (docs/protocol.md §9.8): "pending", ..., "canceled" (single L).
enum class DeviceJobStatus : std::uint8_t { Pending, Running, Completed, Failed, Canceled };

std::string_view toString(JobStatus status);
std::string_view toString(DeviceJobStatus status);
// nullopt for a name that is not a wire name.
std::optional<JobStatus> parseJobStatus(std::string_view name);
std::optional<DeviceJobStatus> parseDeviceJobStatus(std::string_view name);
bool isTerminal(JobStatus status);
// For wire names (a stored record's status, a JobResponse's): false for unknown names.
bool isTerminalJobStatus(std::string_view status);

// iothub's job extensions (docs/jobs.md), as validated from the request.

// "rollout": how fast devices start, growing with the devices that succeeded.
struct Rollout {
  struct Exponential {
    double base_per_minute = 0;
    double increment_factor = 1;
    std::int64_t succeeded_per_increase = 1;
  };
  std::optional<double> maximum_per_minute{};
  std::optional<Exponential> exponential{};
  // Devices per minute allowed once `succeeded` devices of the job have succeeded:
  // base * factor^(succeeded / per_increase), never above the maximum.
  double ratePerMinute(std::int64_t succeeded) const;
};

// "abort": {"criteria": [...]}.
enum class FailureType { Failed, TimedOut, Any };
struct AbortCriterion {
  FailureType failure_type = FailureType::Any;
  double threshold_percentage = 100;
  std::int64_t min_executed = 1;
  // True once at least min_executed devices have an outcome (succeeded + failed) and more
  // than threshold_percentage percent of them failed this way.
  bool trips(std::int64_t executed, std::int64_t failed, std::int64_t timed_out) const;
  // Names the criterion in the job's failureReason.
  std::string describe() const;
};
// Which failed devices count as timed out for "timedOut" criteria: those whose error is
// GatewayTimeout (the device did not answer in time) or NotConverged (it did not report
// the desired values in time).
bool isTimeoutError(std::string_view code);

// "retry": a failed attempt whose error code is listed is tried again.
struct RetryPolicy {
  int max_attempts = 1;  // in all, the first included
  double backoff_seconds = 0;
  std::vector<std::string> retry_on;
  bool retries(std::string_view code) const;
  // How long after its `attempts_made`-th failed attempt a device is tried again:
  // backoff_seconds, doubling with each attempt, at most kMaxRetryBackoff.
  std::chrono::milliseconds delayAfter(int attempts_made) const;
};
inline constexpr std::chrono::hours kMaxRetryBackoff{1};

// "rerunOf": the devices whose rows in an earlier job have one of the statuses.
struct Rerun {
  std::string job_id;
  std::vector<std::string> statuses;
};

// What a job does, as validated from PUT /jobs/v2/{id}.
struct JobSpec {
  std::string job_id;
  std::string type;             // kTypeDeviceMethod or kTypeUpdateTwin
  std::string query_condition;  // as given ("*" = every device); empty with rerun_of
  query::Condition condition;   // query_condition, parsed
  // nullopt: now. A valid ISO-8601 time beyond kLatestTime (e.g. "9999-12-31T00:00:00Z")
  // is kept as kLatestTime: the job waits, scheduled, for as long as the hub runs.
  std::optional<SystemTime> start_time;
  // The startTime text as given, when it was beyond kLatestTime (shown instead of it).
  std::optional<std::string> start_time_text;
  std::optional<std::int64_t> max_execution_seconds;   // nullopt: unbounded
  std::optional<double> device_operations_per_second;  // iothub extension; nullopt: no limit
  // iothub extension (method jobs, docs/jobs.md): a device answering with a status outside
  // 200-299 fails with DeviceMethodFailed instead of succeeding.
  bool fail_on_device_status = false;
  // iothub extension (docs/jobs.md): among due jobs waiting for a slot, higher starts first.
  std::optional<int> priority;  // 0-9; nullopt: 0 (not echoed)
  std::optional<Rollout> rollout;
  std::vector<AbortCriterion> abort_criteria;
  std::optional<RetryPolicy> retry;  // method jobs
  // Targets: the rows of an earlier job instead of query_condition.
  std::optional<Rerun> rerun_of;
  // "offlineDevices" (method jobs): how long after the job started an offline target is
  // waited for (it is called as soon as it connects).
  std::optional<std::int64_t> offline_wait_seconds;
  // "convergence" (twin jobs setting desired properties): how long after its update a
  // device has to report the desired values before it fails NotConverged.
  std::optional<std::int64_t> convergence_timeout_seconds;
  // "continuous": devices that come to match the condition later are targeted too.
  bool continuous = false;
  // scheduleDeviceMethod: the call made on every device (device_id left empty).
  methods::MethodCall method;
  // scheduleUpdateTwin: the updateTwin object as given (tags, properties.desired, etag).
  json::object update_twin;
};

// Largest job id (docs/protocol.md §9.3: up to 64 US-ASCII letters, digits and '-').
inline constexpr std::size_t kMaxJobIdLength = 64;
Status validateJobId(std::string_view job_id);

// Validates a create request: the path's job id, and the body as the official SDKs send
// it (docs/protocol.md §9.2: "startTime": null, no maxExecutionTimeInSeconds, no
// connectTimeoutInSeconds, "payload": null, updateTwin with "etag": "*"). The body's jobId,
// when present, must equal the path's. queryCondition must parse (its error, with the
// position, is the answer). startTime is null or a date-time by parseTimestampClamped's
// rules (years 0001 to 9999; times before kEarliestTime are in the past, so mean now;
// times after kLatestTime are kept as kLatestTime); maxExecutionTimeInSeconds an integer
// from 1 to a year (366 days). Errors: ArgumentInvalid naming the field,
// IotHubFormatError, MessageTooLarge.
Result<JobSpec> parseJobRequest(std::string_view path_job_id, const json::value& body);

// Live counts of a job's devices. device_count = pending + running + succeeded + failed +
// canceled at every moment (canceled is iothub's addition, see docs/compatibility.md).
struct JobStatistics {
  std::int64_t device_count = 0;
  std::int64_t pending = 0;
  std::int64_t running = 0;
  std::int64_t succeeded = 0;
  std::int64_t failed = 0;
  std::int64_t canceled = 0;

  json::object toJson() const;
  static JobStatistics fromJson(const json::object* o);
  bool operator==(const JobStatistics&) const = default;
};

// The stored job for a new request: status queued, created now.
store::JobRecord newJobRecord(const JobSpec& spec, SystemTime now);
// The spec back from a stored job (the engine reloads it after a restart).
Result<JobSpec> specOf(const store::JobRecord& job);

// The JobResponse (Azure's job shape, docs/compatibility.md) for a stored job, with `stats` as its
// statistics. A job whose start time was beyond kLatestTime shows the startTime it was given.
json::object jobResponse(const store::JobRecord& job, const JobStatistics& stats);

// A stored job's status; a name that is not a wire name (a damaged store) reads as Failed.
JobStatus statusOf(const store::JobRecord& job);
void setStatus(store::JobRecord& job, JobStatus status);

// The durable state of a job's run, kept in its stored document beside the request.
struct RunState {
  bool targets_selected = false;      // every target's row is written ("targetsSelected")
  std::optional<SystemTime> started;  // when it started running ("runStartedTime")
  bool cancel_requested = false;      // a cancel reached it while it ran ("cancelRequested")
  std::optional<std::string> failure_reason;  // shown as the JobResponse's failureReason
  bool operator==(const RunState&) const = default;
};
RunState runStateOf(const store::JobRecord& job);
void setRunState(store::JobRecord& job, const RunState& state);

// The statistics kept in a stored job's document (those of its owner's last flush).
JobStatistics statisticsOf(const store::JobRecord& job);
void setStatistics(store::JobRecord& job, const JobStatistics& stats);

// What a per-device row (docs/protocol.md §9.8) says.
struct DeviceJobRow {
  std::string_view device_id{};
  DeviceJobStatus status = DeviceJobStatus::Pending;
  SystemTime now{};      // lastUpdatedDateTimeUtc
  SystemTime started{};  // when the device's operation began (pending rows: the job's start)
  std::optional<SystemTime> ended{};             // terminal rows only
  std::optional<json::value> method_response{};  // answered method calls: {status, payload}
  std::optional<json::object> error{};           // failed and canceled devices: {code, description}
  // Jobs with "retry" (docs/jobs.md): attempts made so far ("attempts"), and for a device
  // waiting for its next attempt, when it comes ("nextAttemptTimeUtc") and why the last
  // one failed ("lastAttemptError"). 0 / nullopt: not shown.
  int attempts = 0;
  std::optional<SystemTime> next_attempt{};
  std::optional<json::object> last_attempt_error{};
  bool waiting_for_connection = false;
  bool matched_after_start = false;
  std::optional<SystemTime> convergence_deadline{};  // set: converging
};
inline constexpr std::string_view kRowAttempts = "attempts";
// A pending row of a device that was offline, waiting for it to connect (offlineDevices).
inline constexpr std::string_view kRowWaitingForConnection = "waitingForConnection";
// A running row of a twin job with convergence: updated, waiting for the device's report.
inline constexpr std::string_view kRowConverging = "converging";
// A pending row of a continuous job's device that came to match after the job started.
inline constexpr std::string_view kRowMatchedAfterStart = "matchedAfterStart";
inline constexpr std::string_view kRowConvergenceDeadline = "convergenceDeadlineUtc";

// convergence: true when `reported` holds every value the desired-properties patch
// `desired` sets (nested objects member by member; a null in the patch means the
// property must be absent or null; "$"-members are ignored).
bool reportedMatches(const json::object& desired, const json::object* reported);
inline constexpr std::string_view kRowNextAttempt = "nextAttemptTimeUtc";

store::DeviceJobRecord deviceJobRecord(const store::JobRecord& job, DeviceJobRow row);

json::object deviceJobError(std::string_view code, std::string_view description);

}  // namespace iothub::jobs
