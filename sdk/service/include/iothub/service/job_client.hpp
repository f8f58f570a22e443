#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iothub/clock.hpp"
#include "iothub/json.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/method_client.hpp"
#include "iothub/service/query_client.hpp"
#include "iothub/service/service_client_options.hpp"
#include "iothub/status.hpp"

namespace iothub::service {

// The two job types of /jobs/v2 (docs/protocol.md §9.3). Unknown: any other type the hub reports.
enum class JobType { Unknown, ScheduleDeviceMethod, ScheduleUpdateTwin };

// Job-level status (docs/protocol.md §9.5); terminal: Completed, Failed, Cancelled (double L).
// Unknown: a value this SDK does not know (Azure also lists "enqueued" and "unknown").
enum class JobStatus { Unknown, Queued, Scheduled, Running, Completed, Failed, Cancelled };

// Per-device status (docs/protocol.md §9.8): Canceled has a single L here.
enum class DeviceJobStatus { Unknown, Pending, Scheduled, Running, Completed, Failed, Canceled };

// Wire names: "scheduleDeviceMethod", "queued", "canceled", … ("unknown" for Unknown).
std::string_view toString(JobType type);
std::string_view toString(JobStatus status);
std::string_view toString(DeviceJobStatus status);
// nullopt for a name that is not a known wire name.
std::optional<JobType> parseJobType(std::string_view text);
std::optional<JobStatus> parseJobStatus(std::string_view text);
std::optional<DeviceJobStatus> parseDeviceJobStatus(std::string_view text);
bool isTerminal(JobStatus status);

// deviceJobStatistics (docs/protocol.md §9.4). canceled_count is an iothub extension (0 when the
// hub does not send it); device_count is the sum of the five others.
struct DeviceJobStatistics {
  std::int64_t device_count = 0;
  std::int64_t failed_count = 0;
  std::int64_t succeeded_count = 0;
  std::int64_t running_count = 0;
  std::int64_t pending_count = 0;
  std::int64_t canceled_count = 0;
};

// iothub's job extensions (docs/jobs.md). Each is optional in a request and echoed in the
// JobResponse when set; the wire names are given with each field.

// "rollout": how fast a job starts device operations, per minute.
struct ExponentialRollout {
  double base_rate_per_minute = 0;  // "baseRatePerMinute": > 0
  double increment_factor = 0;      // "incrementFactor": > 1
  // "rateIncreaseCriteria": {"numberOfSucceededDevices": K}: the rate is multiplied by
  // increment_factor each time this many more devices succeed; > 0.
  std::int64_t succeeded_devices_per_increase = 0;
};
struct Rollout {
  // "maximumPerMinute": > 0, and not below exponential_rate's base rate.
  std::optional<double> maximum_per_minute;
  // "exponentialRate". At least one of the two must be set.
  std::optional<ExponentialRollout> exponential_rate;
};

// "failureType" of an abort criterion: which device outcomes count.
enum class AbortFailureType { Unknown, Failed, TimedOut, Any };
// One of "abort": {"criteria": [...]}: the hub aborts the job when, once at least
// min_executed_devices devices have executed, the share of them that failed this way
// reaches threshold_percentage (docs/jobs.md).
struct AbortCriterion {
  AbortFailureType failure_type = AbortFailureType::Any;  // "failureType"
  double threshold_percentage = 0;                        // "thresholdPercentage": (0, 100]
  std::int64_t min_executed_devices = 0;                  // "minNumberOfExecutedDevices": > 0
};

// Error codes of a device's attempt that "retry" retries.
enum class RetryOn { Unknown, DeviceNotOnline, GatewayTimeout, DeviceMethodFailed };
// "retry" (method jobs): a failed device operation is tried again.
struct RetryPolicy {
  int max_attempts = 2;  // "maxAttempts": total attempts, 1..10
  // "backoffSeconds": wait between attempts, >= 0 (fractions allowed).
  std::chrono::duration<double> backoff{0};
  // "retryOn": non-empty; DeviceMethodFailed only with JobSchedule::fail_on_device_status.
  std::vector<RetryOn> retry_on = {RetryOn::DeviceNotOnline, RetryOn::GatewayTimeout};
};

// "rerunOf": run the operation again on the devices of an earlier job whose rows ended in
// one of `device_job_statuses` (in place of a query condition).
struct Rerun {
  std::string job_id;                                // "jobId"
  std::vector<DeviceJobStatus> device_job_statuses;  // "deviceJobStatuses": non-empty
};

// Wire names: "failed", "timedOut", "any"; "DeviceNotOnline", … ("unknown" for Unknown).
std::string_view toString(AbortFailureType type);
std::string_view toString(RetryOn code);
// nullopt for a name that is not a known wire name.
std::optional<AbortFailureType> parseAbortFailureType(std::string_view text);
std::optional<RetryOn> parseRetryOn(std::string_view text);

// A JobResponse (docs/protocol.md §9.4). Times are the hub's ISO-8601 strings as sent.
struct Job {
  std::string job_id;
  JobType type = JobType::Unknown;
  JobStatus status = JobStatus::Unknown;
  std::string query_condition;
  std::string created_time;
  std::optional<std::string> start_time;
  std::optional<std::string> end_time;  // set once the job is terminal
  std::optional<std::int64_t> max_execution_time_seconds;
  // Exactly one of these, by type.
  std::optional<MethodRequest> cloud_to_device_method;
  std::optional<json::object> update_twin;
  std::string failure_reason;
  std::string status_message;
  DeviceJobStatistics statistics;
  // iothub extensions (docs/jobs.md), as echoed; see JobSchedule for their meaning.
  std::optional<double> device_operations_per_second;
  std::optional<int> priority;
  bool fail_on_device_status = false;
  std::optional<Rollout> rollout;
  std::vector<AbortCriterion> abort_criteria;
  std::optional<RetryPolicy> retry;
  std::optional<std::chrono::seconds> offline_wait;
  std::optional<std::chrono::seconds> convergence_timeout;
  bool continuous = false;
  std::optional<Rerun> rerun_of;
  json::object raw;

  // Errors: IotHubFormatError when `value` is not an object, lacks a string jobId or
  // status, or a known field has the wrong type. Unknown type/status names (also
  // failureType, retryOn and deviceJobStatuses names of the extensions) parse as Unknown
  // (the text stays in `raw`); absent fields keep their defaults.
  static Result<Job> fromJson(const json::value& value);
};

// One device's part in a job: a row of SELECT * FROM devices.jobs (docs/protocol.md §9.8).
struct DeviceJob {
  struct Error {
    std::string code;
    std::string description;
  };
  std::string device_id;
  std::string job_id;
  JobType job_type = JobType::Unknown;
  DeviceJobStatus status = DeviceJobStatus::Unknown;
  std::string start_time;
  std::string end_time;
  std::string created_time;       // createdDateTimeUtc
  std::string last_updated_time;  // lastUpdatedDateTimeUtc
  // outcome.deviceMethodResponse of a method job the device answered.
  std::optional<MethodResponse> method_response;
  std::optional<Error> error;
  json::object raw;

  // Errors: IotHubFormatError when `value` is not an object or lacks string deviceId,
  // jobId or status.
  static Result<DeviceJob> fromJson(const json::value& value);
};

// What every scheduled job has besides its operation (docs/protocol.md §9.1).
// Extensions (docs/jobs.md) are sent only when set; ArgumentInvalid (nothing sent) for the
// values the comments rule out; the hub checks the rest.
struct JobSchedule {
  std::string job_id;  // ≤ 64 ASCII letters, digits and '-' (the hub checks)
  // A WHERE-clause body without WHERE ("deviceId = 'd1'", "tags.floor = 3") or "*" for
  // every device. Empty exactly when rerun_of is set.
  std::string query_condition;
  // nullopt = now (sent as "startTime": null); else sent as ISO-8601 UTC with milliseconds.
  std::optional<SystemTime> start_time;
  // Sent only when set.
  std::optional<std::chrono::seconds> max_execution_time;
  // "deviceOperationsPerSecond": a per-job rate limit, > 0.
  std::optional<double> device_operations_per_second;
  // "priority": 0..9; among waiting jobs the highest starts first (absent means 0).
  std::optional<int> priority;
  // "failOnDeviceStatus": true (method jobs): a device answering outside 200-299 fails.
  // Sent only when true.
  bool fail_on_device_status = false;
  std::optional<Rollout> rollout;
  // "abort": {"criteria": [...]}: up to 10; sent when not empty.
  std::vector<AbortCriterion> abort_criteria;
  // "retry" (method jobs).
  std::optional<RetryPolicy> retry;
  // "offlineDevices": {"waitSeconds": W} (method jobs): how long the job waits for an offline
  // device to connect; > 0.
  std::optional<std::chrono::seconds> offline_wait;
  // "convergence": {"timeoutSeconds": T} (twin jobs that set desired properties): the
  // convergence timeout of docs/jobs.md; > 0.
  std::optional<std::chrono::seconds> convergence_timeout;
  // "continuous": true: a continuous job (docs/jobs.md); not with rerun_of. Sent only when
  // true.
  bool continuous = false;
  // "rerunOf", sent in place of "queryCondition" (query_condition must then be empty).
  std::optional<Rerun> rerun_of;
};

// The answer to a dry run: how many devices the job would target now, and the first ones
// (up to 100, in the order the job would reach them).
struct DryRunResult {
  std::int64_t device_count = 0;
  std::vector<std::string> sample_device_ids;
  json::object raw;

  // Errors: IotHubFormatError when `value` is not an object with an integer deviceCount
  // (sampleDeviceIds, when present, must be an array of strings).
  static Result<DryRunResult> fromJson(const json::value& value);
};

// How JobClient::watchJob follows a job.
struct WatchOptions {
  // Reading the event stream fails when nothing (not even a keep-alive comment, which the
  // hub sends every 15 s) arrives for this long.
  std::chrono::seconds idle_timeout{45};
  // When the hub has no /events route (an older hub: 404 other than JobNotFound, or 405)
  // or no stream to spare (503), poll getJob instead, this often. false: fail with the
  // hub's error instead.
  bool poll_when_unsupported = true;
  std::chrono::milliseconds poll_interval{1000};
};

struct JobPage {
  std::vector<Job> jobs;
  std::optional<std::string> continuation;  // nullopt on the last page
};

// Scheduled jobs over /jobs/v2 (docs/protocol.md §9), on the wire like the Node SDK's JobClient
// (cloudToDeviceMethod also carries connectTimeoutInSeconds, as the Azure CLI sends it),
// plus per-device records through the query API. Every call is synchronous.
// Errors: ArgumentInvalid for arguments checked before sending (below); otherwise the
// hub's, mapped by statusFromErrorResponse(): JobNotFound (404), JobAlreadyExists (409),
// ArgumentInvalid (400, e.g. a bad query condition), Throttled (429, too many active jobs),
// Unauthorized; IotHubFormatError for a reply that is not a JobResponse; or transport
// failures (isTransportFailure()). Thread-safety is that of the shared HttpTransport.
class JobClient {
 public:
  explicit JobClient(std::shared_ptr<HttpTransport> transport);

  // Parses a service connection string and opens a transport for it. Errors: ArgumentInvalid.
  static Result<JobClient> fromConnectionString(std::string_view connection_string,
                                                ServiceClientOptions options = {});

  // PUT /jobs/v2/{jobId}, type scheduleDeviceMethod. ArgumentInvalid (nothing sent) for an
  // empty job id, query condition or method name, negative method timeouts, a
  // max_execution_time that is not positive or a rate that is not a positive number.
  Result<Job> scheduleDeviceMethod(const JobSchedule& schedule, const MethodRequest& method);

  // PUT /jobs/v2/{jobId}, type scheduleUpdateTwin. `update_twin` is
  // {"etag":"*","tags":{…},"properties":{"desired":{…}}}, sent as given; "etag":"*" is put
  // first when it has no etag. Argument errors as above.
  Result<Job> scheduleTwinUpdate(const JobSchedule& schedule, const json::object& update_twin);

  // PUT /jobs/v2/{jobId}?dryRun=true with the body scheduleDeviceMethod/scheduleTwinUpdate
  // would send: the hub validates it as for a real PUT and counts the targets, creating
  // nothing. Argument errors as above; the hub's errors as for the real PUT.
  Result<DryRunResult> dryRun(const JobSchedule& schedule, const MethodRequest& method);
  Result<DryRunResult> dryRun(const JobSchedule& schedule, const json::object& update_twin);

  // GET /jobs/v2/{jobId}. JobNotFound for an unknown id.
  Result<Job> getJob(std::string_view job_id);

  // Follows a job live: GET /jobs/v2/{jobId}/events (text/event-stream, one "job" event per
  // change carrying a JobResponse) on a connection of its own, calling `on_update` with
  // each state, the first at once. Returns the last Job passed to `on_update`: after the
  // one whose status is terminal, or after `on_update` returned false.
  // If the stream ends or the connection drops before a terminal event, the stream is
  // opened again after options.poll_interval (the hub starts it with the current state),
  // as long as the previous connection delivered an event; otherwise the transport failure
  // is returned.
  // A hub without the route (older hubs answer 404 NotFound, not JobNotFound) or at its
  // limit of open streams (503) is polled with getJob() every options.poll_interval
  // instead, `on_update` being called with the first state and then whenever the
  // JobResponse changes (unless options say not to).
  // `on_update` runs on the calling thread and may use this client.
  // Errors: ArgumentInvalid (empty id, no callback); JobNotFound; IotHubFormatError for an
  // event that is not a JobResponse or a 200 that is not text/event-stream; transport
  // failures.
  Result<Job> watchJob(std::string_view job_id, const std::function<bool(const Job&)>& on_update,
                       const WatchOptions& options = {});

  // POST /jobs/v2/{jobId}/cancel (no body). The answer may still say "running": cancellation
  // completes shortly after.
  Result<Job> cancelJob(std::string_view job_id);

  // GET /jobs/v2/query[?jobStatus=…][&jobType=…]: one page of jobs, in the hub's order.
  // Paging as sendPagedRequest().
  Result<JobPage> listJobs(std::optional<JobType> type = std::nullopt,
                           std::optional<JobStatus> status = std::nullopt,
                           std::optional<int> page_size = std::nullopt,
                           const std::optional<std::string>& continuation = std::nullopt);
  // Every page of listJobs().
  Result<std::vector<Job>> listAllJobs(std::optional<JobType> type = std::nullopt,
                                       std::optional<JobStatus> status = std::nullopt,
                                       std::optional<int> page_size = std::nullopt);
  // A cursor over the raw JobResponse rows of the same request.
  PagedQuery createJobQuery(std::optional<JobType> type = std::nullopt,
                            std::optional<JobStatus> status = std::nullopt,
                            std::optional<int> page_size = std::nullopt) const;

  // Every device's record of a job (all pages of deviceJobsQuery()), optionally only those
  // in `status`. ArgumentInvalid for an empty job id.
  Result<std::vector<DeviceJob>> deviceJobs(std::string_view job_id,
                                            std::optional<DeviceJobStatus> status = std::nullopt,
                                            std::optional<int> page_size = std::nullopt);

  // SELECT * FROM devices.jobs WHERE devices.jobs.jobId = '<id>'
  // [AND devices.jobs.status = '<status>'], with the id quoted by QueryClient::quoteString.
  static std::string deviceJobsQuery(std::string_view job_id,
                                     std::optional<DeviceJobStatus> status = std::nullopt);

  // The PUT scheduleDeviceMethod/scheduleTwinUpdate send, without sending it.
  static Result<HttpRequest> buildScheduleMethodRequest(const JobSchedule& schedule,
                                                        const MethodRequest& method);
  static Result<HttpRequest> buildScheduleTwinRequest(const JobSchedule& schedule,
                                                      const json::object& update_twin);
  // The request of watchJob's event stream.
  static HttpRequest buildWatchRequest(std::string_view job_id);

  // A fresh job id: a random (version 4) UUID, which the hub's id rules accept.
  static std::string newJobId();

  // ISO-8601 UTC with milliseconds, as Node's Date.toISOString(): "2030-01-01T00:00:00.000Z".
  static std::string formatStartTime(SystemTime time);

  const std::shared_ptr<HttpTransport>& transport() const { return transport_; }

 private:
  Result<Job> send(const HttpRequest& request);
  Result<DryRunResult> sendDryRun(HttpRequest request);
  Result<Job> pollJob(std::string_view job_id, const std::function<bool(const Job&)>& on_update,
                      const WatchOptions& options);

  std::shared_ptr<HttpTransport> transport_;
};

}  // namespace iothub::service
