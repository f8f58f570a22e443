#include "jobs/job_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

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

// A number as JSON: an integer when it is one (100, not 1E2), else the double.
json::value numberJson(double x) {
  if (x == std::floor(x) && std::fabs(x) <= 1e15) return static_cast<std::int64_t>(x);
  return x;
}

// A number as text for messages: "50", "12.5".
std::string numberText(double x) {
  if (x == std::floor(x) && std::fabs(x) <= 1e15)
    return std::to_string(static_cast<std::int64_t>(x));
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", x);
  return buf;
}

// A number member of an extension object, finite and within [min, max] (min excluded
// when `min_exclusive`). `what` names it in errors ("rollout.maximumPerMinute").
Result<double> numberIn(const json::value& v, const std::string& what, double min, double max,
                        bool min_exclusive) {
  double x = v.is_number() ? v.to_number<double>() : std::numeric_limits<double>::quiet_NaN();
  if (!std::isfinite(x) || x < min || (min_exclusive && x == min) || x > max) {
    std::string low = min_exclusive ? "greater than " : "at least ";
    return Status(ErrorCode::ArgumentInvalid, what + " must be a number " + low + numberText(min) +
                                                  " and at most " + numberText(max));
  }
  return x;
}

Result<std::int64_t> intIn(const json::value& v, const std::string& what, std::int64_t min,
                           std::int64_t max) {
  std::optional<std::int64_t> n;
  if (v.is_int64()) n = v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(max))
    n = static_cast<std::int64_t>(v.get_uint64());
  if (!n || *n < min || *n > max) {
    return Status(
        ErrorCode::ArgumentInvalid,
        what + " must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return *n;
}

// `o[name]` must be absent or null, or an object (returned; nullptr when absent).
Result<const json::object*> optionalObject(const json::object& o, std::string_view name,
                                           const std::string& what) {
  const json::value* v = findMember(o, name);
  if (v == nullptr || v->is_null()) return static_cast<const json::object*>(nullptr);
  if (!v->is_object()) return Status(ErrorCode::ArgumentInvalid, what + " must be an object");
  return &v->get_object();
}

// `o[name]`, which must be present.
Result<const json::value*> required(const json::object& o, std::string_view name,
                                    const std::string& what) {
  const json::value* v = findMember(o, name);
  if (v == nullptr || v->is_null())
    return Status(ErrorCode::ArgumentInvalid, what + " is required");
  return v;
}

constexpr double kMaxPerMinute = 1e9;

Result<Rollout> parseRollout(const json::object& r) {
  Rollout out;
  if (const json::value* max = findMember(r, "maximumPerMinute"); max && !max->is_null()) {
    auto n = numberIn(*max, "rollout.maximumPerMinute", 0, kMaxPerMinute, true);
    if (!n) return n.status();
    out.maximum_per_minute = *n;
  }
  auto exp = optionalObject(r, "exponentialRate", "rollout.exponentialRate");
  if (!exp) return exp.status();
  if (*exp != nullptr) {
    const json::object& e = **exp;
    Rollout::Exponential x;
    auto base = required(e, "baseRatePerMinute", "rollout.exponentialRate.baseRatePerMinute");
    if (!base) return base.status();
    auto b = numberIn(**base, "rollout.exponentialRate.baseRatePerMinute", 0, kMaxPerMinute, true);
    if (!b) return b.status();
    x.base_per_minute = *b;
    auto factor = required(e, "incrementFactor", "rollout.exponentialRate.incrementFactor");
    if (!factor) return factor.status();
    auto f = numberIn(**factor, "rollout.exponentialRate.incrementFactor", 1, 10, true);
    if (!f) return f.status();
    x.increment_factor = *f;
    auto criteria =
        optionalObject(e, "rateIncreaseCriteria", "rollout.exponentialRate.rateIncreaseCriteria");
    if (!criteria) return criteria.status();
    if (*criteria == nullptr) {
      return Status(ErrorCode::ArgumentInvalid,
                    "rollout.exponentialRate.rateIncreaseCriteria is required");
    }
    const std::string k_name =
        "rollout.exponentialRate.rateIncreaseCriteria.numberOfSucceededDevices";
    auto k = required(**criteria, "numberOfSucceededDevices", k_name);
    if (!k) return k.status();
    auto kn = intIn(**k, k_name, 1, 1'000'000'000);
    if (!kn) return kn.status();
    x.succeeded_per_increase = *kn;
    if (out.maximum_per_minute && x.base_per_minute > *out.maximum_per_minute) {
      return Status(ErrorCode::ArgumentInvalid,
                    "rollout.exponentialRate.baseRatePerMinute must not exceed "
                    "rollout.maximumPerMinute");
    }
    out.exponential = x;
  }
  if (!out.maximum_per_minute && !out.exponential) {
    return Status(ErrorCode::ArgumentInvalid,
                  "rollout needs maximumPerMinute, exponentialRate or both");
  }
  return out;
}

Result<std::vector<AbortCriterion>> parseAbort(const json::object& a) {
  const json::value* criteria = findMember(a, "criteria");
  if (criteria == nullptr || !criteria->is_array() || criteria->get_array().empty() ||
      criteria->get_array().size() > 10) {
    return Status(ErrorCode::ArgumentInvalid,
                  "abort.criteria must be an array of 1 to 10 criteria");
  }
  std::vector<AbortCriterion> out;
  for (std::size_t i = 0; i < criteria->get_array().size(); ++i) {
    const std::string at = "abort.criteria[" + std::to_string(i) + "]";
    const json::object* c = criteria->get_array()[i].if_object();
    if (c == nullptr) return Status(ErrorCode::ArgumentInvalid, at + " must be an object");
    AbortCriterion criterion;
    const json::string* type = findString(*c, "failureType");
    if (type != nullptr && *type == "failed") {
      criterion.failure_type = FailureType::Failed;
    } else if (type != nullptr && *type == "timedOut") {
      criterion.failure_type = FailureType::TimedOut;
    } else if (type != nullptr && *type == "any") {
      criterion.failure_type = FailureType::Any;
    } else {
      return Status(ErrorCode::ArgumentInvalid,
                    at + ".failureType must be \"failed\", \"timedOut\" or \"any\"");
    }
    auto p = required(*c, "thresholdPercentage", at + ".thresholdPercentage");
    if (!p) return p.status();
    auto pn = numberIn(**p, at + ".thresholdPercentage", 0, 100, true);
    if (!pn) return pn.status();
    criterion.threshold_percentage = *pn;
    auto m = required(*c, "minNumberOfExecutedDevices", at + ".minNumberOfExecutedDevices");
    if (!m) return m.status();
    auto mn = intIn(**m, at + ".minNumberOfExecutedDevices", 1, 1'000'000'000);
    if (!mn) return mn.status();
    criterion.min_executed = *mn;
    out.push_back(criterion);
  }
  return out;
}

constexpr std::string_view kRetryable[] = {"DeviceNotOnline", "GatewayTimeout",
                                           "DeviceMethodFailed"};

Result<RetryPolicy> parseRetry(const json::object& r, bool fail_on_device_status) {
  RetryPolicy out;
  auto attempts = required(r, "maxAttempts", "retry.maxAttempts");
  if (!attempts) return attempts.status();
  auto n = intIn(**attempts, "retry.maxAttempts", 1, 10);
  if (!n) return n.status();
  out.max_attempts = static_cast<int>(*n);
  if (const json::value* b = findMember(r, "backoffSeconds"); b && !b->is_null()) {
    auto s = numberIn(*b, "retry.backoffSeconds", 0, 3600, false);
    if (!s) return s.status();
    out.backoff_seconds = *s;
  }
  const json::value* on = findMember(r, "retryOn");
  if (on == nullptr || on->is_null()) {
    out.retry_on = {"DeviceNotOnline", "GatewayTimeout"};
  } else {
    if (!on->is_array() || on->get_array().empty()) {
      return Status(ErrorCode::ArgumentInvalid,
                    "retry.retryOn must be a non-empty array of error codes");
    }
    for (const json::value& code : on->get_array()) {
      const json::string* c = code.if_string();
      if (c == nullptr || std::find(std::begin(kRetryable), std::end(kRetryable),
                                    std::string_view(*c)) == std::end(kRetryable)) {
        return Status(ErrorCode::ArgumentInvalid,
                      "retry.retryOn may list DeviceNotOnline, GatewayTimeout and "
                      "DeviceMethodFailed, not " +
                          json::serialize(code));
      }
      if (*c == "DeviceMethodFailed" && !fail_on_device_status) {
        return Status(ErrorCode::ArgumentInvalid,
                      "retry.retryOn lists DeviceMethodFailed, which only failOnDeviceStatus: "
                      "true produces");
      }
      if (!out.retries(*c)) out.retry_on.emplace_back(*c);
    }
  }
  return out;
}

constexpr std::string_view kRowStatuses[] = {"pending", "running", "completed", "failed",
                                             "canceled"};

Result<Rerun> parseRerun(const json::object& r) {
  Rerun out;
  const json::string* id = findString(r, "jobId");
  if (id == nullptr || !validateJobId(*id)) {
    return Status(ErrorCode::ArgumentInvalid, "rerunOf.jobId must be a job id");
  }
  out.job_id = std::string(*id);
  const json::value* statuses = findMember(r, "deviceJobStatuses");
  if (statuses == nullptr || !statuses->is_array() || statuses->get_array().empty()) {
    return Status(ErrorCode::ArgumentInvalid,
                  "rerunOf.deviceJobStatuses must be a non-empty array of device job statuses");
  }
  for (const json::value& v : statuses->get_array()) {
    const json::string* s = v.if_string();
    if (s == nullptr || std::find(std::begin(kRowStatuses), std::end(kRowStatuses),
                                  std::string_view(*s)) == std::end(kRowStatuses)) {
      return Status(ErrorCode::ArgumentInvalid,
                    "rerunOf.deviceJobStatuses may hold pending, running, completed, failed "
                    "and canceled, not " +
                        json::serialize(v));
    }
    if (std::find(out.statuses.begin(), out.statuses.end(), *s) == out.statuses.end())
      out.statuses.emplace_back(*s);
  }
  return out;
}

}  // namespace

double Rollout::ratePerMinute(std::int64_t succeeded) const {
  double cap = maximum_per_minute.value_or(std::numeric_limits<double>::infinity());
  if (!exponential) return cap;
  // Beyond ~2 000 steps any factor > 1.01 has passed kMaxPerMinute: no overflow to inf.
  double steps = static_cast<double>(
      std::min<std::int64_t>(succeeded / exponential->succeeded_per_increase, 2000));
  double rate = exponential->base_per_minute * std::pow(exponential->increment_factor, steps);
  return std::min(cap, std::min(rate, kMaxPerMinute));
}

bool AbortCriterion::trips(std::int64_t executed, std::int64_t failed,
                           std::int64_t timed_out) const {
  if (executed < min_executed || executed <= 0) return false;
  std::int64_t counted = failure_type == FailureType::Any        ? failed
                         : failure_type == FailureType::TimedOut ? timed_out
                                                                 : failed - timed_out;
  return static_cast<double>(counted) * 100.0 >
         threshold_percentage * static_cast<double>(executed);
}

std::string AbortCriterion::describe() const {
  std::string type = failure_type == FailureType::Any        ? "any"
                     : failure_type == FailureType::TimedOut ? "timedOut"
                                                             : "failed";
  return "abort criterion {failureType: " + type +
         ", thresholdPercentage: " + numberText(threshold_percentage) +
         ", minNumberOfExecutedDevices: " + std::to_string(min_executed) + "}";
}

bool isTimeoutError(std::string_view code) {
  return code == "GatewayTimeout" || code == "NotConverged";
}

namespace {
// Values equal as JSON: numbers by value (3 and 3.0 are the same), the rest by Boost.JSON.
bool sameValue(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_double() || b.is_double()) return a.to_number<double>() == b.to_number<double>();
    if (a.is_int64() && b.is_int64()) return a.get_int64() == b.get_int64();
    if (a.is_uint64() && b.is_uint64()) return a.get_uint64() == b.get_uint64();
    return false;  // one is negative (int64), the other above INT64_MAX (uint64)
  }
  return a == b;
}
}  // namespace

bool reportedMatches(const json::object& desired, const json::object* reported) {
  for (const auto& [key, want] : desired) {
    if (key.starts_with("$")) continue;
    const json::value* have = reported != nullptr ? reported->if_contains(key) : nullptr;
    if (want.is_null()) {
      if (have != nullptr && !have->is_null()) return false;
    } else if (want.is_object()) {
      if (have == nullptr || !have->is_object() ||
          !reportedMatches(want.get_object(), &have->get_object()))
        return false;
    } else if (have == nullptr || !sameValue(*have, want)) {
      return false;
    }
  }
  return true;
}

bool RetryPolicy::retries(std::string_view code) const {
  return std::find(retry_on.begin(), retry_on.end(), code) != retry_on.end();
}

std::chrono::milliseconds RetryPolicy::delayAfter(int attempts_made) const {
  double ms = backoff_seconds * 1000.0;
  for (int i = 1; i < attempts_made && ms < 3.6e6; ++i) ms *= 2;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::min(
      ms, static_cast<double>(
              std::chrono::duration_cast<std::chrono::milliseconds>(kMaxRetryBackoff).count()))));
}

namespace {
constexpr std::string_view kJobStatusNames[] = {"queued",    "scheduled", "running",
                                                "completed", "failed",    "cancelled"};
constexpr std::string_view kDeviceJobStatusNames[] = {"pending", "running", "completed", "failed",
                                                      "canceled"};
// Members of a stored job's document that hold its run's state.
constexpr std::string_view kDocStatistics = "deviceJobStatistics";
constexpr std::string_view kDocTargetsSelected = "targetsSelected";
constexpr std::string_view kDocRunStartedTime = "runStartedTime";
constexpr std::string_view kDocCancelRequested = "cancelRequested";
constexpr std::string_view kDocFailureReason = "failureReason";
constexpr std::string_view kDocStatusMessage = "statusMessage";
}  // namespace

std::string_view toString(JobStatus status) {
  return kJobStatusNames[static_cast<std::size_t>(status)];
}

std::string_view toString(DeviceJobStatus status) {
  return kDeviceJobStatusNames[static_cast<std::size_t>(status)];
}

std::optional<JobStatus> parseJobStatus(std::string_view name) {
  for (std::size_t i = 0; i < std::size(kJobStatusNames); ++i) {
    if (kJobStatusNames[i] == name) return static_cast<JobStatus>(i);
  }
  return std::nullopt;
}

std::optional<DeviceJobStatus> parseDeviceJobStatus(std::string_view name) {
  for (std::size_t i = 0; i < std::size(kDeviceJobStatusNames); ++i) {
    if (kDeviceJobStatusNames[i] == name) return static_cast<DeviceJobStatus>(i);
  }
  return std::nullopt;
}

bool isTerminal(JobStatus status) {
  return status == JobStatus::Completed || status == JobStatus::Failed ||
         status == JobStatus::Cancelled;
}

bool isTerminalJobStatus(std::string_view status) {
  auto parsed = parseJobStatus(status);
  return parsed && isTerminal(*parsed);
}

JobStatus statusOf(const store::JobRecord& job) {
  return parseJobStatus(job.status).value_or(JobStatus::Failed);
}

void setStatus(store::JobRecord& job, JobStatus status) {
  job.status = std::string(toString(status));
}

RunState runStateOf(const store::JobRecord& job) {
  RunState state;
  state.targets_selected = findMember(job.document, kDocTargetsSelected) != nullptr;
  if (const json::string* t = findString(job.document, kDocRunStartedTime))
    state.started = parseTimestamp(*t);
  state.cancel_requested = findMember(job.document, kDocCancelRequested) != nullptr;
  if (const json::string* f = findString(job.document, kDocFailureReason))
    state.failure_reason = std::string(*f);
  return state;
}

void setRunState(store::JobRecord& job, const RunState& state) {
  json::object& doc = job.document;
  auto flag = [&doc](std::string_view name, bool on) {
    if (on) {
      doc[name] = true;
    } else {
      doc.erase(name);
    }
  };
  flag(kDocTargetsSelected, state.targets_selected);
  flag(kDocCancelRequested, state.cancel_requested);
  if (state.started) {
    doc[kDocRunStartedTime] = formatTimestamp(*state.started);
  } else {
    doc.erase(kDocRunStartedTime);
  }
  if (state.failure_reason) {
    doc[kDocFailureReason] = *state.failure_reason;
  } else {
    doc.erase(kDocFailureReason);
  }
}

JobStatistics statisticsOf(const store::JobRecord& job) {
  return JobStatistics::fromJson(findObject(job.document, kDocStatistics));
}

void setStatistics(store::JobRecord& job, const JobStatistics& stats) {
  job.document[kDocStatistics] = stats.toJson();
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

  auto rerun = optionalObject(*o, "rerunOf", "rerunOf");
  if (!rerun) return rerun.status();
  const json::value* condition = findMember(*o, "queryCondition");
  if (*rerun != nullptr) {
    if (condition != nullptr && !condition->is_null()) {
      return Status(ErrorCode::ArgumentInvalid,
                    "rerunOf replaces queryCondition: give one or the other");
    }
    auto r = parseRerun(**rerun);
    if (!r) return r.status();
    spec.rerun_of = std::move(*r);
  } else {
    if (condition == nullptr || !condition->is_string()) {
      return Status(ErrorCode::ArgumentInvalid, "queryCondition is required and must be a string");
    }
    spec.query_condition = std::string(condition->get_string());
    auto parsed = query::parseCondition(spec.query_condition);
    if (!parsed) {
      return Status(ErrorCode::ArgumentInvalid, "queryCondition: " + parsed.status().message());
    }
    spec.condition = std::move(*parsed);
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
  auto offline = optionalObject(*o, "offlineDevices", "offlineDevices");
  if (!offline) return offline.status();
  if (*offline != nullptr) {
    if (spec.type != kTypeDeviceMethod) {
      return Status(ErrorCode::ArgumentInvalid,
                    "offlineDevices applies to scheduleDeviceMethod jobs only (a twin update "
                    "does not need the device online)");
    }
    auto w = required(**offline, "waitSeconds", "offlineDevices.waitSeconds");
    if (!w) return w.status();
    auto n = intIn(**w, "offlineDevices.waitSeconds", 1, kMaxExecutionSecondsLimit);
    if (!n) return n.status();
    spec.offline_wait_seconds = *n;
  }
  auto convergence = optionalObject(*o, "convergence", "convergence");
  if (!convergence) return convergence.status();
  if (*convergence != nullptr) {
    auto t = required(**convergence, "timeoutSeconds", "convergence.timeoutSeconds");
    if (!t) return t.status();
    auto n = intIn(**t, "convergence.timeoutSeconds", 1, kMaxExecutionSecondsLimit);
    if (!n) return n.status();
    spec.convergence_timeout_seconds = *n;
  }
  if (const json::value* c = findMember(*o, "continuous"); c != nullptr && !c->is_null()) {
    if (!c->is_bool())
      return Status(ErrorCode::ArgumentInvalid, "continuous must be true or false");
    if (c->get_bool() && spec.rerun_of) {
      return Status(ErrorCode::ArgumentInvalid,
                    "continuous needs a queryCondition: rerunOf targets a fixed set of devices");
    }
    spec.continuous = c->get_bool();
  }
  auto rollout = optionalObject(*o, "rollout", "rollout");
  if (!rollout) return rollout.status();
  if (*rollout != nullptr) {
    auto r = parseRollout(**rollout);
    if (!r) return r.status();
    spec.rollout = *r;
  }
  auto abort = optionalObject(*o, "abort", "abort");
  if (!abort) return abort.status();
  if (*abort != nullptr) {
    auto a = parseAbort(**abort);
    if (!a) return a.status();
    spec.abort_criteria = std::move(*a);
  }
  auto retry = optionalObject(*o, "retry", "retry");
  if (!retry) return retry.status();
  if (*retry != nullptr) {
    if (spec.type != kTypeDeviceMethod) {
      return Status(ErrorCode::ArgumentInvalid, "retry applies to scheduleDeviceMethod jobs only");
    }
    auto r = parseRetry(**retry, spec.fail_on_device_status);
    if (!r) return r.status();
    spec.retry = std::move(*r);
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
  if (spec.convergence_timeout_seconds) {
    const json::object* props =
        spec.type == kTypeUpdateTwin ? findObject(spec.update_twin, "properties") : nullptr;
    const json::object* desired = props != nullptr ? findObject(*props, "desired") : nullptr;
    if (desired == nullptr || desired->empty()) {
      return Status(ErrorCode::ArgumentInvalid,
                    "convergence applies to scheduleUpdateTwin jobs that set desired properties "
                    "(updateTwin.properties.desired)");
    }
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
  setStatus(job, JobStatus::Queued);
  job.created_time = now;
  job.start_time = spec.start_time && *spec.start_time > now ? *spec.start_time : now;
  json::object& doc = job.document;
  if (!spec.rerun_of) doc["queryCondition"] = spec.query_condition;
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
  if (spec.rollout) {
    json::object r;
    if (spec.rollout->maximum_per_minute)
      r["maximumPerMinute"] = numberJson(*spec.rollout->maximum_per_minute);
    if (const auto& e = spec.rollout->exponential) {
      r["exponentialRate"] =
          json::object{{"baseRatePerMinute", numberJson(e->base_per_minute)},
                       {"incrementFactor", numberJson(e->increment_factor)},
                       {"rateIncreaseCriteria",
                        json::object{{"numberOfSucceededDevices", e->succeeded_per_increase}}}};
    }
    doc["rollout"] = std::move(r);
  }
  if (!spec.abort_criteria.empty()) {
    json::array criteria;
    for (const AbortCriterion& c : spec.abort_criteria) {
      criteria.push_back(
          json::object{{"failureType", c.failure_type == FailureType::Any        ? "any"
                                       : c.failure_type == FailureType::TimedOut ? "timedOut"
                                                                                 : "failed"},
                       {"thresholdPercentage", numberJson(c.threshold_percentage)},
                       {"minNumberOfExecutedDevices", c.min_executed}});
    }
    doc["abort"] = json::object{{"criteria", std::move(criteria)}};
  }
  if (spec.retry) {
    json::array on;
    for (const auto& code : spec.retry->retry_on) on.emplace_back(code);
    doc["retry"] = json::object{{"maxAttempts", spec.retry->max_attempts},
                                {"backoffSeconds", numberJson(spec.retry->backoff_seconds)},
                                {"retryOn", std::move(on)}};
  }
  if (spec.rerun_of) {
    json::array statuses;
    for (const auto& status : spec.rerun_of->statuses) statuses.emplace_back(status);
    doc["rerunOf"] =
        json::object{{"jobId", spec.rerun_of->job_id}, {"deviceJobStatuses", std::move(statuses)}};
  }
  if (spec.offline_wait_seconds)
    doc["offlineDevices"] = json::object{{"waitSeconds", *spec.offline_wait_seconds}};
  if (spec.convergence_timeout_seconds)
    doc["convergence"] = json::object{{"timeoutSeconds", *spec.convergence_timeout_seconds}};
  if (spec.continuous) doc["continuous"] = true;
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
  setStatistics(job, JobStatistics{});
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
  for (std::string_view name : {"priority", "rollout", "abort", "retry", "rerunOf",
                                "offlineDevices", "convergence", "continuous"}) {
    if (const json::value* v = findMember(doc, name)) r[name] = *v;
  }
  return r;
}

json::object deviceJobError(std::string_view code, std::string_view description) {
  return json::object{{"code", code}, {"description", description}};
}

store::DeviceJobRecord deviceJobRecord(const store::JobRecord& job, DeviceJobRow in) {
  store::DeviceJobRecord row;
  row.job_id = job.job_id;
  row.device_id = std::string(in.device_id);
  row.status = std::string(toString(in.status));
  row.last_updated_time = in.now;
  json::object& doc = row.document;
  doc.reserve(6);
  doc["jobType"] = job.type;
  doc["createdDateTimeUtc"] = formatTimestamp(job.created_time);
  doc["startTimeUtc"] = formatTimestamp(in.started);
  if (in.ended) doc["endTimeUtc"] = formatTimestamp(*in.ended);
  doc["outcome"] =
      json::object{{"deviceMethodResponse",
                    in.method_response ? std::move(*in.method_response) : json::value(nullptr)}};
  if (in.error) doc["error"] = std::move(*in.error);
  if (in.attempts > 0) doc[kRowAttempts] = in.attempts;
  if (in.next_attempt) doc[kRowNextAttempt] = formatTimestamp(*in.next_attempt);
  if (in.last_attempt_error) doc["lastAttemptError"] = std::move(*in.last_attempt_error);
  if (in.waiting_for_connection) doc[kRowWaitingForConnection] = true;
  if (in.matched_after_start) doc[kRowMatchedAfterStart] = true;
  if (in.convergence_deadline) {
    doc[kRowConverging] = true;
    doc[kRowConvergenceDeadline] = formatTimestamp(*in.convergence_deadline);
  }
  return row;
}

}  // namespace iothub::jobs
