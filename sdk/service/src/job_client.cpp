#include "iothub/service/job_client.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <utility>

#include "auth/connection_string.hpp"
#include "common/encoding.hpp"
#include "common/random.hpp"
#include "common/time_format.hpp"
#include "request_building.hpp"

namespace iothub::service {
namespace {

constexpr std::array<std::pair<JobType, std::string_view>, 2> kJobTypeNames = {{
    {JobType::ScheduleDeviceMethod, "scheduleDeviceMethod"},
    {JobType::ScheduleUpdateTwin, "scheduleUpdateTwin"},
}};

constexpr std::array<std::pair<JobStatus, std::string_view>, 6> kJobStatusNames = {{
    {JobStatus::Queued, "queued"},
    {JobStatus::Scheduled, "scheduled"},
    {JobStatus::Running, "running"},
    {JobStatus::Completed, "completed"},
    {JobStatus::Failed, "failed"},
    {JobStatus::Cancelled, "cancelled"},
}};

constexpr std::array<std::pair<DeviceJobStatus, std::string_view>, 6> kDeviceJobStatusNames = {{
    {DeviceJobStatus::Pending, "pending"},
    {DeviceJobStatus::Scheduled, "scheduled"},
    {DeviceJobStatus::Running, "running"},
    {DeviceJobStatus::Completed, "completed"},
    {DeviceJobStatus::Failed, "failed"},
    {DeviceJobStatus::Canceled, "canceled"},
}};

template <class Enum, std::size_t N>
std::string_view nameOf(const std::array<std::pair<Enum, std::string_view>, N>& names, Enum value) {
  for (const auto& [v, name] : names) {
    if (v == value) return name;
  }
  return "unknown";
}

template <class Enum, std::size_t N>
std::optional<Enum> valueOf(const std::array<std::pair<Enum, std::string_view>, N>& names,
                            std::string_view text) {
  for (const auto& [v, name] : names) {
    if (name == text) return v;
  }
  return std::nullopt;
}

// 'key', built by appending: GCC 12 warns falsely (-Wrestrict) on "'" + std::string(key).
std::string quoted(std::string_view key) {
  std::string text(1, '\'');
  text.append(key);
  text.push_back('\'');
  return text;
}

Status formatError(std::string_view what, std::string_view why) {
  return Status(ErrorCode::IotHubFormatError, std::string(what) + ": " + std::string(why));
}

// Reads typed members of a hub document; the first wrong type is remembered as the error.
// Absent and null members leave the target unchanged.
class MemberReader {
 public:
  MemberReader(const json::object& o, std::string_view what) : o_(o), what_(what) {}

  const json::value* member(std::string_view key) const {
    const json::value* v = findMember(o_, key);
    return v == nullptr || v->is_null() ? nullptr : v;
  }

  void string(std::string_view key, std::string& out) {
    if (const json::value* v = member(key)) {
      if (v->is_string()) {
        out = std::string(v->get_string());
      } else {
        wrongType(key, "a string");
      }
    }
  }

  void string(std::string_view key, std::optional<std::string>& out) {
    std::string text;
    if (member(key) == nullptr) return;
    string(key, text);
    out = std::move(text);
  }

  void integer(std::string_view key, std::int64_t& out) {
    if (const json::value* v = member(key)) {
      if (v->is_int64()) {
        out = v->get_int64();
      } else if (v->is_uint64()) {
        out = static_cast<std::int64_t>(v->get_uint64());
      } else {
        wrongType(key, "an integer");
      }
    }
  }

  void integer(std::string_view key, std::optional<std::int64_t>& out) {
    std::int64_t n = 0;
    if (member(key) == nullptr) return;
    integer(key, n);
    out = n;
  }

  void number(std::string_view key, std::optional<double>& out) {
    if (const json::value* v = member(key)) {
      if (v->is_number()) {
        out = v->to_number<double>();
      } else {
        wrongType(key, "a number");
      }
    }
  }

  const json::object* object(std::string_view key) {
    const json::value* v = member(key);
    if (v == nullptr) return nullptr;
    if (!v->is_object()) wrongType(key, "an object");
    return v->if_object();
  }

  // A member that must be present as a string.
  void requiredString(std::string_view key, std::string& out) {
    if (member(key) == nullptr) {
      fail(quoted(key) + " is missing");
      return;
    }
    string(key, out);
  }

  void fail(std::string why) {
    if (status_.isOk()) status_ = formatError(what_, why);
  }
  const Status& status() const { return status_; }

 private:
  void wrongType(std::string_view key, std::string_view type) {
    fail(quoted(key) + " must be " + std::string(type));
  }

  const json::object& o_;
  std::string_view what_;
  Status status_;
};

constexpr std::string_view kJobResponse = "JobResponse";
constexpr std::string_view kDeviceJobRow = "Device job record";

std::optional<MethodRequest> parseMethod(MemberReader& reader) {
  const json::object* o = reader.object("cloudToDeviceMethod");
  if (o == nullptr) return std::nullopt;
  MemberReader method(*o, "JobResponse.cloudToDeviceMethod");
  MethodRequest request;
  method.string("methodName", request.method_name);
  if (const json::value* payload = findMember(*o, "payload")) request.payload = *payload;
  std::int64_t response_timeout = request.response_timeout.count();
  std::int64_t connect_timeout = request.connect_timeout.count();
  method.integer("responseTimeoutInSeconds", response_timeout);
  method.integer("connectTimeoutInSeconds", connect_timeout);
  request.response_timeout = std::chrono::seconds{response_timeout};
  request.connect_timeout = std::chrono::seconds{connect_timeout};
  if (!method.status().isOk()) reader.fail(method.status().message());
  return request;
}

DeviceJobStatistics parseStatistics(MemberReader& reader) {
  DeviceJobStatistics stats;
  const json::object* o = reader.object("deviceJobStatistics");
  if (o == nullptr) return stats;
  MemberReader counts(*o, "JobResponse.deviceJobStatistics");
  counts.integer("deviceCount", stats.device_count);
  counts.integer("failedCount", stats.failed_count);
  counts.integer("succeededCount", stats.succeeded_count);
  counts.integer("runningCount", stats.running_count);
  counts.integer("pendingCount", stats.pending_count);
  counts.integer("canceledCount", stats.canceled_count);
  if (!counts.status().isOk()) reader.fail(counts.status().message());
  return stats;
}

Status checkSchedule(const JobSchedule& schedule) {
  if (schedule.job_id.empty()) {
    return Status(ErrorCode::ArgumentInvalid, "The job id must not be empty");
  }
  if (schedule.query_condition.empty()) {
    return Status(ErrorCode::ArgumentInvalid,
                  "The query condition must not be empty (use * for every device)");
  }
  if (schedule.max_execution_time && schedule.max_execution_time->count() <= 0) {
    return Status(ErrorCode::ArgumentInvalid, "The maximum execution time must be positive");
  }
  if (schedule.device_operations_per_second) {
    double rate = *schedule.device_operations_per_second;
    if (!std::isfinite(rate) || rate <= 0) {
      return Status(ErrorCode::ArgumentInvalid,
                    "The device operations per second must be a positive number");
    }
  }
  return Status::ok();
}

// {"jobId","type",<operation>,"startTime","maxExecutionTimeInSeconds"?,"queryCondition",
// "deviceOperationsPerSecond"?}: Node's member order (docs/protocol.md §9.1), the extension last.
HttpRequest scheduleRequest(const JobSchedule& schedule, std::string_view type,
                            std::string_view operation_key, json::object operation) {
  json::object body;
  body["jobId"] = schedule.job_id;
  body["type"] = type;
  body[operation_key] = std::move(operation);
  if (schedule.start_time) {
    body["startTime"] = JobClient::formatStartTime(*schedule.start_time);
  } else {
    body["startTime"] = nullptr;
  }
  if (schedule.max_execution_time) {
    body["maxExecutionTimeInSeconds"] = schedule.max_execution_time->count();
  }
  body["queryCondition"] = schedule.query_condition;
  HttpRequest request;
  request.method = "PUT";
  request.path = "/jobs/v2/" + urlEncodeStrict(schedule.job_id);
  std::string text = json::serialize(body);
  if (schedule.device_operations_per_second) {
    // Written by hand as the last member: Boost.JSON writes 2.5 as "2.5E0", which is valid
    // JSON but not what a person (or Node) writes; to_chars gives the shortest form.
    char number[64];
    auto [end, ec] =
        std::to_chars(number, number + sizeof number, *schedule.device_operations_per_second);
    text.pop_back();  // the closing '}'
    text += ",\"deviceOperationsPerSecond\":";
    text.append(number, ec == std::errc{} ? end : number);
    text += '}';
  }
  request.body = std::move(text);
  return request;
}

Status emptyJobId() { return Status(ErrorCode::ArgumentInvalid, "The job id must not be empty"); }

std::string jobListQuery(std::optional<JobType> type, std::optional<JobStatus> status) {
  // Status first, as the Node SDK orders them (docs/protocol.md §9.7).
  std::string query;
  if (status) query = "jobStatus=" + urlEncodeStrict(toString(*status));
  if (type) {
    if (!query.empty()) query += '&';
    query += "jobType=" + urlEncodeStrict(toString(*type));
  }
  return query;
}

}  // namespace

std::string_view toString(JobType type) { return nameOf(kJobTypeNames, type); }
std::string_view toString(JobStatus status) { return nameOf(kJobStatusNames, status); }
std::string_view toString(DeviceJobStatus status) { return nameOf(kDeviceJobStatusNames, status); }

std::optional<JobType> parseJobType(std::string_view text) { return valueOf(kJobTypeNames, text); }
std::optional<JobStatus> parseJobStatus(std::string_view text) {
  return valueOf(kJobStatusNames, text);
}
std::optional<DeviceJobStatus> parseDeviceJobStatus(std::string_view text) {
  return valueOf(kDeviceJobStatusNames, text);
}

bool isTerminal(JobStatus status) {
  return status == JobStatus::Completed || status == JobStatus::Failed ||
         status == JobStatus::Cancelled;
}

Result<Job> Job::fromJson(const json::value& value) {
  const json::object* o = value.if_object();
  if (o == nullptr) return formatError(kJobResponse, "expected a JSON object");
  MemberReader reader(*o, kJobResponse);
  Job job;
  reader.requiredString("jobId", job.job_id);
  std::string type;
  reader.string("type", type);
  job.type = parseJobType(type).value_or(JobType::Unknown);
  std::string status;
  reader.requiredString("status", status);
  job.status = parseJobStatus(status).value_or(JobStatus::Unknown);
  reader.string("queryCondition", job.query_condition);
  reader.string("createdTime", job.created_time);
  reader.string("startTime", job.start_time);
  reader.string("endTime", job.end_time);
  reader.integer("maxExecutionTimeInSeconds", job.max_execution_time_seconds);
  job.cloud_to_device_method = parseMethod(reader);
  if (const json::object* twin = reader.object("updateTwin")) job.update_twin = *twin;
  reader.string("failureReason", job.failure_reason);
  reader.string("statusMessage", job.status_message);
  job.statistics = parseStatistics(reader);
  reader.number("deviceOperationsPerSecond", job.device_operations_per_second);
  if (!reader.status().isOk()) return reader.status();
  job.raw = *o;
  return job;
}

Result<DeviceJob> DeviceJob::fromJson(const json::value& value) {
  const json::object* o = value.if_object();
  if (o == nullptr) return formatError(kDeviceJobRow, "expected a JSON object");
  MemberReader reader(*o, kDeviceJobRow);
  DeviceJob row;
  reader.requiredString("deviceId", row.device_id);
  reader.requiredString("jobId", row.job_id);
  std::string type;
  reader.string("jobType", type);
  row.job_type = parseJobType(type).value_or(JobType::Unknown);
  std::string status;
  reader.requiredString("status", status);
  row.status = parseDeviceJobStatus(status).value_or(DeviceJobStatus::Unknown);
  reader.string("startTimeUtc", row.start_time);
  reader.string("endTimeUtc", row.end_time);
  reader.string("createdDateTimeUtc", row.created_time);
  reader.string("lastUpdatedDateTimeUtc", row.last_updated_time);
  if (const json::object* outcome = reader.object("outcome")) {
    MemberReader outcome_reader(*outcome, "Device job record outcome");
    if (const json::object* response = outcome_reader.object("deviceMethodResponse")) {
      MemberReader response_reader(*response, "Device job record deviceMethodResponse");
      std::int64_t code = 0;
      response_reader.integer("status", code);
      MethodResponse method_response;
      method_response.status = static_cast<int>(code);
      if (const json::value* payload = findMember(*response, "payload")) {
        method_response.payload = *payload;
      }
      row.method_response = std::move(method_response);
      if (!response_reader.status().isOk()) reader.fail(response_reader.status().message());
    }
    if (!outcome_reader.status().isOk()) reader.fail(outcome_reader.status().message());
  }
  if (const json::object* error = reader.object("error")) {
    MemberReader error_reader(*error, "Device job record error");
    DeviceJob::Error e;
    error_reader.string("code", e.code);
    error_reader.string("description", e.description);
    row.error = std::move(e);
    if (!error_reader.status().isOk()) reader.fail(error_reader.status().message());
  }
  if (!reader.status().isOk()) return reader.status();
  row.raw = *o;
  return row;
}

JobClient::JobClient(std::shared_ptr<HttpTransport> transport) : transport_(std::move(transport)) {}

Result<JobClient> JobClient::fromConnectionString(std::string_view connection_string,
                                                  ServiceClientOptions options) {
  auto parsed = auth::ServiceConnectionString::parse(connection_string);
  if (!parsed) return parsed.status();
  auto transport = HttpTransport::create(std::move(*parsed), std::move(options));
  if (!transport) return transport.status();
  return JobClient(std::shared_ptr<HttpTransport>(std::move(*transport)));
}

Result<HttpRequest> JobClient::buildScheduleMethodRequest(const JobSchedule& schedule,
                                                          const MethodRequest& method) {
  if (Status status = checkSchedule(schedule); !status) return status;
  if (method.method_name.empty()) {
    return Status(ErrorCode::ArgumentInvalid, "The method name must not be empty");
  }
  if (method.response_timeout.count() < 0 || method.connect_timeout.count() < 0) {
    return Status(ErrorCode::ArgumentInvalid, "Direct method timeouts must not be negative");
  }
  // Member order as Node sends it, plus connectTimeoutInSeconds as the Azure CLI does.
  json::object operation;
  operation["methodName"] = method.method_name;
  operation["payload"] = method.payload;
  operation["responseTimeoutInSeconds"] = method.response_timeout.count();
  operation["connectTimeoutInSeconds"] = method.connect_timeout.count();
  return scheduleRequest(schedule, toString(JobType::ScheduleDeviceMethod), "cloudToDeviceMethod",
                         std::move(operation));
}

Result<HttpRequest> JobClient::buildScheduleTwinRequest(const JobSchedule& schedule,
                                                        const json::object& update_twin) {
  if (Status status = checkSchedule(schedule); !status) return status;
  json::object operation;
  if (findMember(update_twin, "etag") == nullptr) operation["etag"] = "*";
  for (const auto& member : update_twin) operation[member.key()] = member.value();
  return scheduleRequest(schedule, toString(JobType::ScheduleUpdateTwin), "updateTwin",
                         std::move(operation));
}

Result<Job> JobClient::scheduleDeviceMethod(const JobSchedule& schedule,
                                            const MethodRequest& method) {
  auto request = buildScheduleMethodRequest(schedule, method);
  if (!request) return request.status();
  return send(*request);
}

Result<Job> JobClient::scheduleTwinUpdate(const JobSchedule& schedule,
                                          const json::object& update_twin) {
  auto request = buildScheduleTwinRequest(schedule, update_twin);
  if (!request) return request.status();
  return send(*request);
}

Result<Job> JobClient::getJob(std::string_view job_id) {
  if (job_id.empty()) return emptyJobId();
  HttpRequest request;
  request.path = "/jobs/v2/" + urlEncodeStrict(job_id);
  return send(request);
}

Result<Job> JobClient::cancelJob(std::string_view job_id) {
  if (job_id.empty()) return emptyJobId();
  HttpRequest request;
  request.method = "POST";
  request.path = "/jobs/v2/" + urlEncodeStrict(job_id) + "/cancel";
  return send(request);
}

PagedQuery JobClient::createJobQuery(std::optional<JobType> type, std::optional<JobStatus> status,
                                     std::optional<int> page_size) const {
  HttpRequest request;
  request.path = "/jobs/v2/query";
  request.query = jobListQuery(type, status);
  return PagedQuery(transport_, std::move(request), page_size);
}

Result<JobPage> JobClient::listJobs(std::optional<JobType> type, std::optional<JobStatus> status,
                                    std::optional<int> page_size,
                                    const std::optional<std::string>& continuation) {
  HttpRequest request;
  request.path = "/jobs/v2/query";
  request.query = jobListQuery(type, status);
  auto page = sendPagedRequest(*transport_, std::move(request), page_size, continuation);
  if (!page) return page.status();
  JobPage jobs;
  jobs.continuation = std::move(page->continuation);
  jobs.jobs.reserve(page->rows.size());
  for (const json::value& row : page->rows) {
    auto job = Job::fromJson(row);
    if (!job) return job.status();
    jobs.jobs.push_back(std::move(*job));
  }
  return jobs;
}

Result<std::vector<Job>> JobClient::listAllJobs(std::optional<JobType> type,
                                                std::optional<JobStatus> status,
                                                std::optional<int> page_size) {
  auto rows = createJobQuery(type, status, page_size).rest();
  if (!rows) return rows.status();
  std::vector<Job> jobs;
  jobs.reserve(rows->size());
  for (const json::value& row : *rows) {
    auto job = Job::fromJson(row);
    if (!job) return job.status();
    jobs.push_back(std::move(*job));
  }
  return jobs;
}

std::string JobClient::deviceJobsQuery(std::string_view job_id,
                                       std::optional<DeviceJobStatus> status) {
  std::string sql =
      "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = " + QueryClient::quoteString(job_id);
  if (status) sql += " AND devices.jobs.status = " + QueryClient::quoteString(toString(*status));
  return sql;
}

Result<std::vector<DeviceJob>> JobClient::deviceJobs(std::string_view job_id,
                                                     std::optional<DeviceJobStatus> status,
                                                     std::optional<int> page_size) {
  if (job_id.empty()) return emptyJobId();
  auto rows = QueryClient(transport_).queryAll(deviceJobsQuery(job_id, status), page_size);
  if (!rows) return rows.status();
  std::vector<DeviceJob> records;
  records.reserve(rows->size());
  for (const json::value& row : *rows) {
    auto record = DeviceJob::fromJson(row);
    if (!record) return record.status();
    records.push_back(std::move(*record));
  }
  return records;
}

std::string JobClient::newJobId() {
  SecureRandom random;
  return detail::newRequestId(random);
}

std::string JobClient::formatStartTime(SystemTime time) {
  // formatTimestamp writes seven fractional digits ("…:ss.fffffffZ"); Node writes three.
  std::string text = formatTimestamp(std::chrono::floor<std::chrono::milliseconds>(time));
  auto dot = text.find('.');
  if (dot == std::string::npos) return text;
  return text.substr(0, dot + 4) + "Z";
}

Result<Job> JobClient::send(const HttpRequest& request) {
  auto body = transport_->sendJson(request);
  if (!body) return body.status();
  return Job::fromJson(*body);
}

}  // namespace iothub::service
