#include "jobs/job_model.hpp"

#include <cmath>

#include "common/time_format.hpp"
#include "methods/method_request.hpp"
#include "query/query.hpp"
#include "twin/twin_patch.hpp"

namespace iothub::jobs {
namespace {

constexpr std::int64_t kMaxExecutionSecondsLimit = 366LL * 24 * 3600;  // a year

json::value timeJson(std::optional<SystemTime> t) {
  if (!t) return nullptr;
  return json::string(formatTimestamp(*t));
}

// An optional integer member from 1 to `max`. Integral doubles (600.0) count as integers;
// anything out of range, huge ones included, is refused before it is converted, so no
// value can overflow.
Result<std::optional<std::int64_t>> optionalPositiveInt(const json::object& body,
                                                        std::string_view name, std::int64_t max) {
  const json::value* v = findMember(body, name);
  if (v == nullptr || v->is_null()) return std::optional<std::int64_t>();
  auto out_of_range = [&] {
    return Status(ErrorCode::ArgumentInvalid,
                  std::string(name) + " must be between 1 and " + std::to_string(max));
  };
  std::int64_t n = 0;
  if (v->is_int64()) {
    n = v->get_int64();
  } else if (v->is_uint64()) {
    if (v->get_uint64() > static_cast<std::uint64_t>(max)) return out_of_range();
    n = static_cast<std::int64_t>(v->get_uint64());
  } else if (v->is_double() && std::isfinite(v->get_double()) &&
             std::floor(v->get_double()) == v->get_double()) {
    if (v->get_double() < 1 || v->get_double() > static_cast<double>(max)) return out_of_range();
    n = static_cast<std::int64_t>(v->get_double());
  } else {
    return Status(ErrorCode::ArgumentInvalid, std::string(name) + " must be an integer");
  }
  if (n < 1 || n > max) return out_of_range();
  return std::optional<std::int64_t>(n);
}

}  // namespace

bool isTerminalJobStatus(std::string_view status) {
  return status == kJobCompleted || status == kJobFailed || status == kJobCancelled;
}

Status validateJobId(std::string_view job_id) {
  if (job_id.empty() || job_id.size() > kMaxJobIdLength) {
    return {ErrorCode::ArgumentInvalid,
            "The job id must be 1 to " + std::to_string(kMaxJobIdLength) + " characters"};
  }
  for (char c : job_id) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok) {
      return {ErrorCode::ArgumentInvalid,
              "The job id '" + std::string(job_id) +
                  "' may only contain US-ASCII letters, digits and '-'"};
    }
  }
  return Status::ok();
}

Result<JobSpec> parseJobRequest(std::string_view path_job_id, const json::value& body) {
  IOTHUB_RETURN_IF_ERROR(validateJobId(path_job_id));
  const json::object* o = body.if_object();
  if (o == nullptr)
    return Status(ErrorCode::IotHubFormatError, "The job request must be a JSON object");
  JobSpec spec;
  spec.job_id = std::string(path_job_id);
  if (const json::value* id = findMember(*o, "jobId"); id != nullptr && !id->is_null()) {
    if (!id->is_string() || id->get_string() != path_job_id) {
      return Status(ErrorCode::ArgumentInvalid,
                    "The body's jobId must equal the job id in the path");
    }
  }
  const json::string* type = findString(*o, "type");
  if (type == nullptr || (*type != kTypeDeviceMethod && *type != kTypeUpdateTwin)) {
    return Status(ErrorCode::ArgumentInvalid,
                  "type must be \"scheduleDeviceMethod\" or \"scheduleUpdateTwin\"");
  }
  spec.type = std::string(*type);

  const json::string* condition = findString(*o, "queryCondition");
  if (condition == nullptr) {
    return Status(ErrorCode::ArgumentInvalid, "queryCondition is required and must be a string");
  }
  spec.query_condition = std::string(*condition);
  if (auto parsed = query::parseCondition(spec.query_condition); !parsed) {
    return Status(ErrorCode::ArgumentInvalid, "queryCondition: " + parsed.status().message());
  }

  if (const json::value* start = findMember(*o, "startTime");
      start != nullptr && !start->is_null()) {
    std::optional<ClampedTimestamp> t;
    if (start->is_string()) t = parseTimestampClamped(start->get_string());
    if (!t) {
      return Status(ErrorCode::ArgumentInvalid,
                    "startTime must be null or an ISO-8601 date-time "
                    "(YYYY-MM-DDThh:mm:ss[.fraction][Z|+hh:mm|-hh:mm], years 0001 to 9999)");
    }
    spec.start_time = t->time;
    // Far-future times wait at kLatestTime but are shown as given; far-past ones mean now.
    if (t->clamped && t->time == kLatestTime)
      spec.start_time_text = std::string(start->get_string());
  }
  auto max_execution =
      optionalPositiveInt(*o, "maxExecutionTimeInSeconds", kMaxExecutionSecondsLimit);
  if (!max_execution) return max_execution.status();
  spec.max_execution_seconds = *max_execution;

  if (const json::value* rate = findMember(*o, "deviceOperationsPerSecond");
      rate != nullptr && !rate->is_null()) {
    if (!rate->is_number() || rate->to_number<double>() <= 0 ||
        !std::isfinite(rate->to_number<double>())) {
      return Status(ErrorCode::ArgumentInvalid,
                    "deviceOperationsPerSecond must be a positive number");
    }
    spec.device_operations_per_second = rate->to_number<double>();
  }
  if (const json::value* priority = findMember(*o, "priority");
      priority != nullptr && !priority->is_null()) {
    if (!priority->is_int64() || priority->get_int64() < 0 || priority->get_int64() > 9) {
      return Status(ErrorCode::ArgumentInvalid, "priority must be an integer from 0 to 9");
    }
    spec.priority = static_cast<int>(priority->get_int64());
  }
  if (const json::value* fail = findMember(*o, "failOnDeviceStatus");
      fail != nullptr && !fail->is_null()) {
    if (!fail->is_bool()) {
      return Status(ErrorCode::ArgumentInvalid, "failOnDeviceStatus must be true or false");
    }
    if (fail->get_bool() && spec.type != kTypeDeviceMethod) {
      return Status(ErrorCode::ArgumentInvalid,
                    "failOnDeviceStatus applies to scheduleDeviceMethod jobs only");
    }
    spec.fail_on_device_status = fail->get_bool();
  }

  if (spec.type == kTypeDeviceMethod) {
    const json::value* method = findMember(*o, "cloudToDeviceMethod");
    if (method == nullptr || !method->is_object()) {
      return Status(ErrorCode::ArgumentInvalid,
                    "cloudToDeviceMethod is required for scheduleDeviceMethod jobs");
    }
    auto call = methods::parseMethodCall("", *method);
    if (!call) return Status(call.code(), "cloudToDeviceMethod: " + call.status().message());
    spec.method = std::move(*call);
  } else {
    const json::value* update = findMember(*o, "updateTwin");
    if (update == nullptr || !update->is_object()) {
      return Status(ErrorCode::ArgumentInvalid,
                    "updateTwin is required for scheduleUpdateTwin jobs");
    }
    const json::object& u = update->get_object();
    if (const json::value* etag = findMember(u, "etag");
        etag != nullptr && !etag->is_null() && !etag->is_string()) {
      return Status(ErrorCode::ArgumentInvalid, "updateTwin.etag must be a string");
    }
    if (auto patch = twin::parseServicePatch(u); !patch) {
      return Status(patch.code(), "updateTwin: " + patch.status().message());
    }
    spec.update_twin = u;
  }
  return spec;
}

json::object JobStatistics::toJson() const {
  return json::object{{"deviceCount", device_count}, {"failedCount", failed},
                      {"succeededCount", succeeded}, {"runningCount", running},
                      {"pendingCount", pending},     {"canceledCount", canceled}};
}

JobStatistics JobStatistics::fromJson(const json::object* o) {
  JobStatistics s;
  if (o == nullptr) return s;
  auto get = [o](std::string_view name) -> std::int64_t {
    const json::value* v = findMember(*o, name);
    return v != nullptr && v->is_int64() ? v->get_int64() : 0;
  };
  s.device_count = get("deviceCount");
  s.failed = get("failedCount");
  s.succeeded = get("succeededCount");
  s.running = get("runningCount");
  s.pending = get("pendingCount");
  s.canceled = get("canceledCount");
  return s;
}

store::JobRecord newJobRecord(const JobSpec& spec, SystemTime now) {
  store::JobRecord job;
  job.job_id = spec.job_id;
  job.type = spec.type;
  job.status = std::string(kJobQueued);
  job.created_time = now;
  job.start_time = spec.start_time && *spec.start_time > now ? *spec.start_time : now;
  json::object& doc = job.document;
  doc["queryCondition"] = spec.query_condition;
  doc["startTimeRequested"] =
      spec.start_time_text ? json::value(*spec.start_time_text) : timeJson(spec.start_time);
  if (spec.max_execution_seconds) doc["maxExecutionTimeInSeconds"] = *spec.max_execution_seconds;
  if (spec.device_operations_per_second) {
    double rate = *spec.device_operations_per_second;
    if (rate == std::floor(rate) && rate <= 1e15) {
      doc["deviceOperationsPerSecond"] =
          static_cast<std::int64_t>(rate);  // echoed as given: 5, not 5.0
    } else {
      doc["deviceOperationsPerSecond"] = rate;
    }
  }
  if (spec.fail_on_device_status) doc["failOnDeviceStatus"] = true;
  if (spec.priority) doc["priority"] = *spec.priority;
  if (spec.type == kTypeDeviceMethod) {
    auto payload = parseJson(spec.method.payload_json);
    doc["cloudToDeviceMethod"] =
        json::object{{"methodName", spec.method.method_name},
                     {"payload", payload ? *payload : json::value(nullptr)},
                     {"responseTimeoutInSeconds", spec.method.response_timeout.count()},
                     {"connectTimeoutInSeconds", spec.method.connect_timeout.count()}};
  } else {
    doc["updateTwin"] = spec.update_twin;
  }
  doc[kDocStatistics] = JobStatistics{}.toJson();
  return job;
}

Result<JobSpec> specOf(const store::JobRecord& job) {
  json::object body = job.document;
  body["type"] = job.type;
  body["startTime"] = timeJson(job.start_time);
  auto spec = parseJobRequest(job.job_id, body);
  if (!spec) {
    return Status(ErrorCode::StoreCorruption,
                  "stored job " + job.job_id + " is invalid: " + spec.status().message());
  }
  return spec;
}

json::object jobResponse(const store::JobRecord& job, const JobStatistics& stats) {
  const json::object& doc = job.document;
  json::object r;
  r["jobId"] = job.job_id;
  r["queryCondition"] = doc.contains("queryCondition") ? doc.at("queryCondition") : json::value("");
  r["createdTime"] = formatTimestamp(job.created_time);
  r["startTime"] = formatTimestamp(job.start_time);
  if (job.start_time >= kLatestTime) {
    // Scheduled beyond what SystemTime holds: show the time the job was given.
    if (const json::string* requested = findString(doc, "startTimeRequested"))
      r["startTime"] = *requested;
  }
  if (job.end_time) r["endTime"] = formatTimestamp(*job.end_time);
  if (const json::value* max = findMember(doc, "maxExecutionTimeInSeconds"))
    r["maxExecutionTimeInSeconds"] = *max;
  r["type"] = job.type;
  if (const json::value* m = findMember(doc, "cloudToDeviceMethod")) r["cloudToDeviceMethod"] = *m;
  if (const json::value* u = findMember(doc, "updateTwin")) r["updateTwin"] = *u;
  r["status"] = job.status;
  if (const json::value* f = findMember(doc, kDocFailureReason)) r["failureReason"] = *f;
  if (const json::value* m = findMember(doc, kDocStatusMessage)) r["statusMessage"] = *m;
  r["deviceJobStatistics"] = stats.toJson();
  if (const json::value* rate = findMember(doc, "deviceOperationsPerSecond"))
    r["deviceOperationsPerSecond"] = *rate;
  if (const json::value* fail = findMember(doc, "failOnDeviceStatus"))
    r["failOnDeviceStatus"] = *fail;
  if (const json::value* priority = findMember(doc, "priority")) r["priority"] = *priority;
  return r;
}

json::object deviceJobError(std::string_view code, std::string_view description) {
  return json::object{{"code", code}, {"description", description}};
}

store::DeviceJobRecord deviceJobRecord(const store::JobRecord& job, std::string_view device_id,
                                       std::string_view status, SystemTime now, SystemTime started,
                                       std::optional<SystemTime> ended,
                                       std::optional<json::value> method_response,
                                       std::optional<json::object> error) {
  store::DeviceJobRecord row;
  row.job_id = job.job_id;
  row.device_id = std::string(device_id);
  row.status = std::string(status);
  row.last_updated_time = now;
  json::object& doc = row.document;
  doc.reserve(6);
  doc["jobType"] = job.type;
  doc["createdDateTimeUtc"] = formatTimestamp(job.created_time);
  doc["startTimeUtc"] = formatTimestamp(started);
  if (ended) doc["endTimeUtc"] = formatTimestamp(*ended);
  doc["outcome"] = json::object{
      {"deviceMethodResponse", method_response ? *method_response : json::value(nullptr)}};
  if (error) doc["error"] = std::move(*error);
  return row;
}

}  // namespace iothub::jobs
