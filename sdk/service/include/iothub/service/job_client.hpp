#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iothub/clock.hpp"
#include "iothub/json.hpp"
#include "iothub/status.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/method_client.hpp"
#include "iothub/service/query_client.hpp"
#include "iothub/service/service_client_options.hpp"

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
  // iothub extension: the job's own rate limit, when one was set.
  std::optional<double> device_operations_per_second;
  json::object raw;

  // Errors: IotHubFormatError when `value` is not an object, lacks a string jobId or
  // status, or a known field has the wrong type. Unknown type/status names parse as
  // Unknown (the text stays in `raw`); absent fields keep their defaults.
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
struct JobSchedule {
  std::string job_id;  // ≤ 64 ASCII letters, digits and '-' (the hub checks)
  // A WHERE-clause body without WHERE ("deviceId = 'd1'", "tags.floor = 3") or "*" for
  // every device.
  std::string query_condition;
  // nullopt = now (sent as "startTime": null); else sent as ISO-8601 UTC with milliseconds.
  std::optional<SystemTime> start_time;
  // Sent only when set.
  std::optional<std::chrono::seconds> max_execution_time;
  // iothub extension "deviceOperationsPerSecond": a per-job rate limit; sent only when set.
  std::optional<double> device_operations_per_second;
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

  // GET /jobs/v2/{jobId}. JobNotFound for an unknown id.
  Result<Job> getJob(std::string_view job_id);

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

  // A fresh job id: a random (version 4) UUID, which the hub's id rules accept.
  static std::string newJobId();

  // ISO-8601 UTC with milliseconds, as Node's Date.toISOString(): "2030-01-01T00:00:00.000Z".
  static std::string formatStartTime(SystemTime time);

  const std::shared_ptr<HttpTransport>& transport() const { return transport_; }

 private:
  Result<Job> send(const HttpRequest& request);

  std::shared_ptr<HttpTransport> transport_;
};

}  // namespace iothub::service
