#include "iothub/service/job_client.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <thread>
#include <utility>

#include "auth/connection_string.hpp"
#include "common/encoding.hpp"
#include "common/random.hpp"
#include "common/time_format.hpp"
#include "event_stream.hpp"
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

constexpr std::array<std::pair<AbortFailureType, std::string_view>, 3> kAbortFailureTypeNames = {{
    {AbortFailureType::Failed, "failed"},
    {AbortFailureType::TimedOut, "timedOut"},
    {AbortFailureType::Any, "any"},
}};

constexpr std::array<std::pair<RetryOn, std::string_view>, 3> kRetryOnNames = {{
    {RetryOn::DeviceNotOnline, "DeviceNotOnline"},
    {RetryOn::GatewayTimeout, "GatewayTimeout"},
    {RetryOn::DeviceMethodFailed, "DeviceMethodFailed"},
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

  void boolean(std::string_view key, bool& out) {
    if (const json::value* v = member(key)) {
      if (v->is_bool()) {
        out = v->get_bool();
      } else {
        wrongType(key, "true or false");
      }
    }
  }

  void number(std::string_view key, double& out) {
    std::optional<double> n;
    number(key, n);
    if (n) out = *n;
  }

  const json::object* object(std::string_view key) {
    const json::value* v = member(key);
    if (v == nullptr) return nullptr;
    if (!v->is_object()) wrongType(key, "an object");
    return v->if_object();
  }

  const json::array* array(std::string_view key) {
    const json::value* v = member(key);
    if (v == nullptr) return nullptr;
    if (!v->is_array()) wrongType(key, "an array");
    return v->if_array();
  }

  // Names of `key`, an array of strings; unknown names map to `unknown`.
  template <class Enum>
  std::vector<Enum> names(std::string_view key, std::optional<Enum> (*parse)(std::string_view),
                          Enum unknown) {
    std::vector<Enum> out;
    const json::array* a = array(key);
    if (a == nullptr) return out;
    for (const json::value& item : *a) {
      if (!item.is_string()) {
        wrongType(key, "an array of strings");
        break;
      }
      out.push_back(parse(item.get_string()).value_or(unknown));
    }
    return out;
  }

  // The status of a nested reader becomes this one's.
  void adopt(const MemberReader& nested) {
    if (!nested.status().isOk()) fail(nested.status().message());
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

std::optional<std::chrono::seconds> secondsMember(MemberReader& reader, std::string_view object_key,
                                                  std::string_view key, std::string_view what) {
  const json::object* o = reader.object(object_key);
  if (o == nullptr) return std::nullopt;
  MemberReader nested(*o, what);
  std::optional<std::int64_t> n;
  nested.integer(key, n);
  reader.adopt(nested);
  if (!n) return std::nullopt;
  return std::chrono::seconds{*n};
}

// The echoed extensions of docs/jobs.md into `job`.
void parseExtensions(MemberReader& reader, Job& job) {
  reader.number("deviceOperationsPerSecond", job.device_operations_per_second);
  std::optional<std::int64_t> priority;
  reader.integer("priority", priority);
  if (priority) job.priority = static_cast<int>(*priority);
  reader.boolean("failOnDeviceStatus", job.fail_on_device_status);
  reader.boolean("continuous", job.continuous);
  if (const json::object* o = reader.object("rollout")) {
    MemberReader rollout_reader(*o, "JobResponse.rollout");
    Rollout rollout;
    rollout_reader.number("maximumPerMinute", rollout.maximum_per_minute);
    if (const json::object* e = rollout_reader.object("exponentialRate")) {
      MemberReader rate_reader(*e, "JobResponse.rollout.exponentialRate");
      ExponentialRollout rate;
      rate_reader.number("baseRatePerMinute", rate.base_rate_per_minute);
      rate_reader.number("incrementFactor", rate.increment_factor);
      if (const json::object* c = rate_reader.object("rateIncreaseCriteria")) {
        MemberReader criteria(*c, "JobResponse.rollout.exponentialRate.rateIncreaseCriteria");
        criteria.integer("numberOfSucceededDevices", rate.succeeded_devices_per_increase);
        rate_reader.adopt(criteria);
      }
      rollout.exponential_rate = rate;
      rollout_reader.adopt(rate_reader);
    }
    job.rollout = rollout;
    reader.adopt(rollout_reader);
  }
  if (const json::object* o = reader.object("abort")) {
    MemberReader abort_reader(*o, "JobResponse.abort");
    if (const json::array* criteria = abort_reader.array("criteria")) {
      for (const json::value& item : *criteria) {
        const json::object* c = item.if_object();
        if (c == nullptr) {
          abort_reader.fail("'criteria' must be an array of objects");
          break;
        }
        MemberReader criterion_reader(*c, "JobResponse.abort.criteria");
        AbortCriterion criterion;
        std::string type;
        criterion_reader.string("failureType", type);
        criterion.failure_type = parseAbortFailureType(type).value_or(AbortFailureType::Unknown);
        criterion_reader.number("thresholdPercentage", criterion.threshold_percentage);
        criterion_reader.integer("minNumberOfExecutedDevices", criterion.min_executed_devices);
        abort_reader.adopt(criterion_reader);
        job.abort_criteria.push_back(criterion);
      }
    }
    reader.adopt(abort_reader);
  }
  if (const json::object* o = reader.object("retry")) {
    MemberReader retry_reader(*o, "JobResponse.retry");
    RetryPolicy retry;
    std::int64_t attempts = retry.max_attempts;
    retry_reader.integer("maxAttempts", attempts);
    retry.max_attempts = static_cast<int>(attempts);
    double backoff = 0;
    retry_reader.number("backoffSeconds", backoff);
    retry.backoff = std::chrono::duration<double>(backoff);
    retry.retry_on = retry_reader.names("retryOn", &parseRetryOn, RetryOn::Unknown);
    job.retry = std::move(retry);
    reader.adopt(retry_reader);
  }
  job.offline_wait =
      secondsMember(reader, "offlineDevices", "waitSeconds", "JobResponse.offlineDevices");
  job.convergence_timeout =
      secondsMember(reader, "convergence", "timeoutSeconds", "JobResponse.convergence");
  if (const json::object* o = reader.object("rerunOf")) {
    MemberReader rerun_reader(*o, "JobResponse.rerunOf");
    Rerun rerun;
    rerun_reader.string("jobId", rerun.job_id);
    rerun.device_job_statuses =
        rerun_reader.names("deviceJobStatuses", &parseDeviceJobStatus, DeviceJobStatus::Unknown);
    job.rerun_of = std::move(rerun);
    reader.adopt(rerun_reader);
  }
}

Status invalid(std::string message) {
  return Status(ErrorCode::ArgumentInvalid, std::move(message));
}

bool positive(double x) { return std::isfinite(x) && x > 0; }

// The extensions' own checks (docs/jobs.md), for a job of `type`.
Status checkExtensions(const JobSchedule& schedule, JobType type, const json::object* update_twin) {
  const bool method_job = type == JobType::ScheduleDeviceMethod;
  if (schedule.priority && (*schedule.priority < 0 || *schedule.priority > 9)) {
    return invalid("The priority must be an integer from 0 to 9");
  }
  if (schedule.fail_on_device_status && !method_job) {
    return invalid("failOnDeviceStatus is only for direct-method jobs");
  }
  if (const auto& rollout = schedule.rollout) {
    if (!rollout->maximum_per_minute && !rollout->exponential_rate) {
      return invalid("A rollout needs a maximum per minute, an exponential rate or both");
    }
    if (rollout->maximum_per_minute && !positive(*rollout->maximum_per_minute)) {
      return invalid("The rollout's maximum per minute must be a positive number");
    }
    if (rollout->maximum_per_minute && rollout->exponential_rate &&
        rollout->exponential_rate->base_rate_per_minute > *rollout->maximum_per_minute) {
      return invalid("The rollout's base rate must not exceed its maximum per minute");
    }
    if (const auto& rate = rollout->exponential_rate) {
      if (!positive(rate->base_rate_per_minute)) {
        return invalid("The rollout's base rate per minute must be a positive number");
      }
      if (!std::isfinite(rate->increment_factor) || rate->increment_factor <= 1) {
        return invalid("The rollout's increment factor must be a number greater than 1");
      }
      if (rate->succeeded_devices_per_increase <= 0) {
        return invalid("The rollout's number of succeeded devices per increase must be positive");
      }
    }
  }
  if (schedule.abort_criteria.size() > 10) return invalid("At most 10 abort criteria");
  for (const AbortCriterion& criterion : schedule.abort_criteria) {
    if (criterion.failure_type == AbortFailureType::Unknown) {
      return invalid("An abort criterion's failure type must be failed, timedOut or any");
    }
    if (!std::isfinite(criterion.threshold_percentage) || criterion.threshold_percentage <= 0 ||
        criterion.threshold_percentage > 100) {
      return invalid("An abort criterion's threshold must be a percentage in (0, 100]");
    }
    if (criterion.min_executed_devices <= 0) {
      return invalid("An abort criterion's minimum number of executed devices must be positive");
    }
  }
  if (const auto& retry = schedule.retry) {
    if (!method_job) return invalid("retry is only for direct-method jobs");
    if (retry->max_attempts < 1 || retry->max_attempts > 10) {
      return invalid("retry's maximum attempts must be from 1 to 10 (the first one included)");
    }
    if (!std::isfinite(retry->backoff.count()) || retry->backoff.count() < 0) {
      return invalid("retry's backoff must be a number of seconds, at least 0");
    }
    if (retry->retry_on.empty()) return invalid("retry needs at least one error code to retry on");
    for (RetryOn code : retry->retry_on) {
      if (code == RetryOn::Unknown) return invalid("retry on an unknown error code");
      if (code == RetryOn::DeviceMethodFailed && !schedule.fail_on_device_status) {
        return invalid(
            "retry on DeviceMethodFailed needs failOnDeviceStatus, the only source of that error");
      }
    }
  }
  if (schedule.offline_wait) {
    if (!method_job) return invalid("offlineDevices is only for direct-method jobs");
    if (schedule.offline_wait->count() <= 0) {
      return invalid("The wait for offline devices must be a positive number of seconds");
    }
  }
  if (schedule.convergence_timeout) {
    const json::object* properties =
        update_twin == nullptr ? nullptr : findObject(*update_twin, "properties");
    if (method_job || properties == nullptr || findObject(*properties, "desired") == nullptr) {
      return invalid("convergence is only for twin jobs that set desired properties");
    }
    if (schedule.convergence_timeout->count() <= 0) {
      return invalid("The convergence timeout must be a positive number of seconds");
    }
  }
  if (const auto& rerun = schedule.rerun_of) {
    if (rerun->job_id.empty()) return invalid("The job to re-run must be named");
    if (schedule.continuous) {
      return invalid(
          "A continuous job needs a query condition; a re-run has a fixed set of devices");
    }
    if (rerun->device_job_statuses.empty()) {
      return invalid("A re-run needs the device statuses to re-run");
    }
    for (DeviceJobStatus status : rerun->device_job_statuses) {
      if (status == DeviceJobStatus::Unknown || status == DeviceJobStatus::Scheduled) {
        return invalid(
            "A re-run's device statuses are pending, running, completed, failed or canceled");
      }
    }
  }
  return Status::ok();
}

// Compact JSON like json::serialize, but doubles in their shortest form ("2.5", "100"):
// Boost.JSON writes 2.5 as "2.5E0", valid JSON but not what a person (or Node) writes.
void writeJson(const json::value& v, std::string& out) {
  switch (v.kind()) {
    case json::kind::double_: {
      char number[64];
      auto [end, ec] = std::to_chars(number, number + sizeof number, v.get_double());
      out.append(number, ec == std::errc{} ? end : number);
      return;
    }
    case json::kind::object: {
      out += '{';
      bool first = true;
      for (const auto& member : v.get_object()) {
        if (!first) out += ',';
        first = false;
        out += json::serialize(json::string(member.key()));
        out += ':';
        writeJson(member.value(), out);
      }
      out += '}';
      return;
    }
    case json::kind::array: {
      out += '[';
      bool first = true;
      for (const json::value& item : v.get_array()) {
        if (!first) out += ',';
        first = false;
        writeJson(item, out);
      }
      out += ']';
      return;
    }
    default:
      out += json::serialize(v);
  }
}

// The extension members that are set, in docs/jobs.md's order.
json::object extensionMembers(const JobSchedule& schedule) {
  json::object ext;
  if (schedule.device_operations_per_second) {
    ext["deviceOperationsPerSecond"] = *schedule.device_operations_per_second;
  }
  if (schedule.priority) ext["priority"] = *schedule.priority;
  if (schedule.fail_on_device_status) ext["failOnDeviceStatus"] = true;
  if (const auto& rollout = schedule.rollout) {
    json::object r;
    if (rollout->maximum_per_minute) r["maximumPerMinute"] = *rollout->maximum_per_minute;
    if (const auto& rate = rollout->exponential_rate) {
      r["exponentialRate"] = json::object{
          {"baseRatePerMinute", rate->base_rate_per_minute},
          {"incrementFactor", rate->increment_factor},
          {"rateIncreaseCriteria",
           json::object{{"numberOfSucceededDevices", rate->succeeded_devices_per_increase}}}};
    }
    ext["rollout"] = std::move(r);
  }
  if (!schedule.abort_criteria.empty()) {
    json::array criteria;
    for (const AbortCriterion& c : schedule.abort_criteria) {
      criteria.push_back(json::object{{"failureType", toString(c.failure_type)},
                                      {"thresholdPercentage", c.threshold_percentage},
                                      {"minNumberOfExecutedDevices", c.min_executed_devices}});
    }
    ext["abort"] = json::object{{"criteria", std::move(criteria)}};
  }
  if (const auto& retry = schedule.retry) {
    json::array codes;
    for (RetryOn code : retry->retry_on) codes.push_back(json::string(toString(code)));
    json::value backoff = retry->backoff.count();
    double whole = 0;
    if (std::modf(retry->backoff.count(), &whole) == 0 && std::abs(whole) < 1e15) {
      backoff = static_cast<std::int64_t>(whole);  // 5, not 5.0
    }
    ext["retry"] = json::object{{"maxAttempts", retry->max_attempts},
                                {"backoffSeconds", std::move(backoff)},
                                {"retryOn", std::move(codes)}};
  }
  if (schedule.offline_wait) {
    ext["offlineDevices"] = json::object{{"waitSeconds", schedule.offline_wait->count()}};
  }
  if (schedule.convergence_timeout) {
    ext["convergence"] = json::object{{"timeoutSeconds", schedule.convergence_timeout->count()}};
  }
  if (schedule.continuous) ext["continuous"] = true;
  return ext;
}

Status checkSchedule(const JobSchedule& schedule) {
  if (schedule.job_id.empty()) {
    return Status(ErrorCode::ArgumentInvalid, "The job id must not be empty");
  }
  if (schedule.rerun_of && !schedule.query_condition.empty()) {
    return Status(ErrorCode::ArgumentInvalid,
                  "A re-run takes its devices from the earlier job: give no query condition");
  }
  if (!schedule.rerun_of && schedule.query_condition.empty()) {
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

// {"jobId","type",<operation>,"startTime","maxExecutionTimeInSeconds"?,"queryCondition"|"rerunOf",
// extensions…}: Node's member order (docs/protocol.md §9.1), the extensions last.
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
  if (const auto& rerun = schedule.rerun_of) {
    json::array statuses;
    for (DeviceJobStatus status : rerun->device_job_statuses) {
      statuses.push_back(json::string(toString(status)));
    }
    body["rerunOf"] =
        json::object{{"jobId", rerun->job_id}, {"deviceJobStatuses", std::move(statuses)}};
  } else {
    body["queryCondition"] = schedule.query_condition;
  }
  HttpRequest request;
  request.method = "PUT";
  request.path = "/jobs/v2/" + urlEncodeStrict(schedule.job_id);
  std::string text = json::serialize(body);
  json::object ext = extensionMembers(schedule);
  if (!ext.empty()) {
    text.pop_back();  // the closing '}'
    for (const auto& member : ext) {
      text += ',';
      text += json::serialize(json::string(member.key()));
      text += ':';
      writeJson(member.value(), text);
    }
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

std::string_view toString(AbortFailureType type) { return nameOf(kAbortFailureTypeNames, type); }
std::string_view toString(RetryOn code) { return nameOf(kRetryOnNames, code); }
std::optional<AbortFailureType> parseAbortFailureType(std::string_view text) {
  return valueOf(kAbortFailureTypeNames, text);
}
std::optional<RetryOn> parseRetryOn(std::string_view text) { return valueOf(kRetryOnNames, text); }

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
  parseExtensions(reader, job);
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

Result<DryRunResult> DryRunResult::fromJson(const json::value& value) {
  constexpr std::string_view kWhat = "Dry-run answer";
  const json::object* o = value.if_object();
  if (o == nullptr) return formatError(kWhat, "expected a JSON object");
  MemberReader reader(*o, kWhat);
  DryRunResult result;
  if (reader.member("deviceCount") == nullptr) reader.fail("'deviceCount' is missing");
  reader.integer("deviceCount", result.device_count);
  if (const json::array* ids = reader.array("sampleDeviceIds")) {
    for (const json::value& id : *ids) {
      if (!id.is_string()) {
        reader.fail("'sampleDeviceIds' must be an array of strings");
        break;
      }
      result.sample_device_ids.emplace_back(id.get_string());
    }
  }
  if (!reader.status().isOk()) return reader.status();
  result.raw = *o;
  return result;
}

Result<HttpRequest> JobClient::buildScheduleMethodRequest(const JobSchedule& schedule,
                                                          const MethodRequest& method) {
  if (Status status = checkSchedule(schedule); !status) return status;
  if (Status status = checkExtensions(schedule, JobType::ScheduleDeviceMethod, nullptr); !status) {
    return status;
  }
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
  if (Status status = checkExtensions(schedule, JobType::ScheduleUpdateTwin, &update_twin);
      !status) {
    return status;
  }
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

Result<DryRunResult> JobClient::dryRun(const JobSchedule& schedule, const MethodRequest& method) {
  auto request = buildScheduleMethodRequest(schedule, method);
  if (!request) return request.status();
  return sendDryRun(*request);
}

Result<DryRunResult> JobClient::dryRun(const JobSchedule& schedule,
                                       const json::object& update_twin) {
  auto request = buildScheduleTwinRequest(schedule, update_twin);
  if (!request) return request.status();
  return sendDryRun(*request);
}

Result<DryRunResult> JobClient::sendDryRun(HttpRequest request) {
  request.query = "dryRun=true";
  auto body = transport_->sendJson(request);
  if (!body) return body.status();
  return DryRunResult::fromJson(*body);
}

HttpRequest JobClient::buildWatchRequest(std::string_view job_id) {
  HttpRequest request;
  request.path = "/jobs/v2/" + urlEncodeStrict(job_id) + "/events";
  request.headers.emplace_back("Accept", "text/event-stream");
  return request;
}

Result<Job> JobClient::watchJob(std::string_view job_id,
                                const std::function<bool(const Job&)>& on_update,
                                const WatchOptions& options) {
  if (job_id.empty()) return emptyJobId();
  if (!on_update) return Status(ErrorCode::ArgumentInvalid, "watchJob needs a callback");
  const HttpRequest request = buildWatchRequest(job_id);
  std::optional<Job> last;
  for (;;) {
    detail::EventStreamParser parser;
    Status bad_event;
    bool done = false;  // a terminal event arrived or on_update said stop
    int events = 0;
    auto on_data = [&](std::string_view data) {
      for (detail::ServerSentEvent& event : parser.feed(data)) {
        if (event.type != "job") continue;  // other event types are for other clients
        auto parsed = parseJson(event.data);
        if (!parsed) {
          bad_event = formatError("Job event", parsed.status().message());
          return false;
        }
        auto job = Job::fromJson(*parsed);
        if (!job) {
          bad_event = job.status();
          return false;
        }
        ++events;
        last = std::move(*job);
        if (!on_update(*last) || isTerminal(last->status)) {
          done = true;
          return false;
        }
      }
      return true;
    };
    auto response = transport_->sendStreaming(request, on_data, options.idle_timeout);
    if (!bad_event.isOk()) return bad_event;
    if (done) return std::move(*last);
    if (response && response->status >= 300) {
      Status error = statusFromErrorResponse(*response);
      bool no_route = (response->status == 404 && error.code() != ErrorCode::JobNotFound) ||
                      response->status == 405;
      // 503: the hub serves as many streams as it will (docs/jobs.md); GET still works.
      bool no_stream = no_route || response->status == 503;
      if (no_stream && options.poll_when_unsupported) return pollJob(job_id, on_update, options);
      return error;
    }
    if (response) {
      std::string type = response->header("content-type").value_or("");
      std::transform(type.begin(), type.end(), type.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (type.find("text/event-stream") == std::string::npos) {
        return Status(ErrorCode::IotHubFormatError, "The hub answered GET " + request.path +
                                                        " with Content-Type '" + type +
                                                        "', expected text/event-stream");
      }
    }
    // The stream ended, or the connection failed, before the job did. Open it again if this
    // connection was useful; a hub that cannot deliver a single event gets no second try.
    if (events == 0) {
      if (!response) return response.status();
      return Status(
          ErrorCode::ServiceUnavailable,
          std::string(kTransportFailurePrefix) + "the job's event stream ended without an event");
    }
    std::this_thread::sleep_for(options.poll_interval);
  }
}

Result<Job> JobClient::pollJob(std::string_view job_id,
                               const std::function<bool(const Job&)>& on_update,
                               const WatchOptions& options) {
  std::optional<json::object> previous;
  for (;;) {
    auto job = getJob(job_id);
    if (!job) return job.status();
    if (!previous || *previous != job->raw) {
      previous = job->raw;
      if (!on_update(*job)) return job;
    }
    if (isTerminal(job->status)) return job;
    std::this_thread::sleep_for(options.poll_interval);
  }
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
