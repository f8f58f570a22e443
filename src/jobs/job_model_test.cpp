#include "jobs/job_model.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/time_format.hpp"

namespace iothub::jobs {
namespace {

json::value body(std::string_view text) {
  auto v = parseJson(text);
  EXPECT_TRUE(v.isOk()) << text;
  return v ? *v : json::value();
}

TEST(JobModelTest, AcceptsTheNodeSdkBodies) {
  // Promise-style call: startTime null, no maxExecutionTimeInSeconds, no connect timeout.
  auto m = parseJobRequest("j1", body(R"({"jobId":"j1","type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"reboot","payload":null,"responseTimeoutInSeconds":15},
      "startTime":null,"queryCondition":"deviceId IN ['d1','d2']"})"));
  ASSERT_TRUE(m.isOk()) << m.status().toString();
  EXPECT_EQ(m->type, kTypeDeviceMethod);
  EXPECT_FALSE(m->start_time);
  EXPECT_FALSE(m->max_execution_seconds);
  EXPECT_EQ(m->method.method_name, "reboot");
  EXPECT_EQ(m->method.payload_json, "null");
  EXPECT_EQ(m->method.response_timeout.count(), 15);
  EXPECT_EQ(m->method.connect_timeout.count(), 0);

  auto t = parseJobRequest("j3", body(R"({"jobId":"j3","type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","tags":{"x":1},"properties":{"desired":{"z":1},"reported":{}}},
      "startTime":"2030-01-01T00:00:00.000Z","maxExecutionTimeInSeconds":600,"queryCondition":"tags.a = 1"})"));
  ASSERT_TRUE(t.isOk()) << t.status().toString();
  EXPECT_EQ(formatTimestamp(*t->start_time), "2030-01-01T00:00:00.0000000Z");
  EXPECT_EQ(*t->max_execution_seconds, 600);
  EXPECT_EQ(t->update_twin.at("tags").at("x"), 1);

  auto all =
      parseJobRequest("j4", body(R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},
      "queryCondition":"*","deviceOperationsPerSecond":50})"));
  ASSERT_TRUE(all.isOk()) << all.status().toString();
  EXPECT_EQ(*all->device_operations_per_second, 50);
}

TEST(JobModelTest, RejectsBadRequestsWithTheReason) {
  struct Case {
    std::string id;
    std::string body;
    ErrorCode code;
    std::string message_part;
  };
  const std::string method = R"("cloudToDeviceMethod":{"methodName":"m"})";
  std::vector<Case> cases = {
      {"bad id!", R"({"type":"scheduleUpdateTwin","updateTwin":{},"queryCondition":"*"})",
       ErrorCode::ArgumentInvalid, "letters"},
      {std::string(65, 'a'), "{}", ErrorCode::ArgumentInvalid, "64"},
      {"j", "[1]", ErrorCode::IotHubFormatError, "object"},
      {"j",
       R"({"jobId":"other","type":"scheduleDeviceMethod",)" + method + R"(,"queryCondition":"*"})",
       ErrorCode::ArgumentInvalid, "path"},
      {"j", R"({"type":"export","queryCondition":"*"})", ErrorCode::ArgumentInvalid, "type"},
      {"j", R"({"type":"scheduleDeviceMethod",)" + method + "}", ErrorCode::ArgumentInvalid,
       "queryCondition"},
      {"j", R"({"type":"scheduleDeviceMethod",)" + method + R"(,"queryCondition":"tags.a = = 1"})",
       ErrorCode::ArgumentInvalid, "1:"},
      {"j",
       R"({"type":"scheduleDeviceMethod",)" + method +
           R"(,"queryCondition":"*","startTime":"soon"})",
       ErrorCode::ArgumentInvalid, "startTime"},
      {"j",
       R"({"type":"scheduleDeviceMethod",)" + method +
           R"(,"queryCondition":"*","maxExecutionTimeInSeconds":0})",
       ErrorCode::ArgumentInvalid, "maxExecutionTimeInSeconds"},
      {"j",
       R"({"type":"scheduleDeviceMethod",)" + method +
           R"(,"queryCondition":"*","deviceOperationsPerSecond":-1})",
       ErrorCode::ArgumentInvalid, "deviceOperationsPerSecond"},
      {"j", R"({"type":"scheduleDeviceMethod","queryCondition":"*"})", ErrorCode::ArgumentInvalid,
       "cloudToDeviceMethod"},
      {"j",
       R"({"type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m","responseTimeoutInSeconds":1},"queryCondition":"*"})",
       ErrorCode::ArgumentInvalid, "responseTimeoutInSeconds"},
      {"j", R"({"type":"scheduleUpdateTwin","queryCondition":"*"})", ErrorCode::ArgumentInvalid,
       "updateTwin"},
      {"j", R"({"type":"scheduleUpdateTwin","updateTwin":{"etag":5},"queryCondition":"*"})",
       ErrorCode::ArgumentInvalid, "etag"},
      {"j", R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":"x"},"queryCondition":"*"})",
       ErrorCode::ArgumentInvalid, "updateTwin"},
  };
  for (const auto& c : cases) {
    auto r = parseJobRequest(c.id, body(c.body));
    EXPECT_EQ(r.code(), c.code) << c.body << " → " << r.status().toString();
    EXPECT_NE(r.status().message().find(c.message_part), std::string::npos) << r.status().message();
  }
}

// Regression: "9999-12-31T00:00:00Z" overflowed into a past time and the job ran at once.
TEST(JobModelTest, AFarFutureStartTimeWaitsAtTheEndOfTimeAndIsShownAsGiven) {
  auto spec =
      parseJobRequest("far", body(R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},
      "startTime":"9999-12-31T00:00:00Z","queryCondition":"*"})"));
  ASSERT_TRUE(spec.isOk()) << spec.status().toString();
  EXPECT_EQ(*spec->start_time, kLatestTime);
  SystemTime now = *parseTimestamp("2030-01-01T00:00:00Z");
  store::JobRecord job = newJobRecord(*spec, now);
  EXPECT_EQ(job.start_time, kLatestTime);
  EXPECT_GT(job.start_time, now + std::chrono::hours(24 * 365 * 200));
  EXPECT_EQ(jobResponse(job, {}).at("startTime"), "9999-12-31T00:00:00Z");
  auto again = specOf(job);
  ASSERT_TRUE(again.isOk()) << again.status().toString();
  EXPECT_EQ(*again->start_time, kLatestTime);
  // A time long before what SystemTime holds is in the past: now.
  auto ancient =
      parseJobRequest("old", body(R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},
      "startTime":"0001-01-01T00:00:00Z","queryCondition":"*"})"));
  ASSERT_TRUE(ancient.isOk()) << ancient.status().toString();
  EXPECT_EQ(newJobRecord(*ancient, now).start_time, now);
  EXPECT_EQ(jobResponse(newJobRecord(*ancient, now), {}).at("startTime"),
            "2030-01-01T00:00:00.0000000Z");
}

TEST(JobModelTest, RefusesTimesAndDurationsThatCannotBeRepresentedNamingTheField) {
  const std::string prefix =
      R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},"queryCondition":"*",)";
  for (const char* start :
       {R"("10000-01-01T00:00:00Z")", R"("0000-01-01T00:00:00Z")", R"("9999-02-30T00:00:00Z")",
        R"("2030-01-01T00:00:00Zjunk")", R"("2030-01-01T25:00:00Z")",
        R"("2030-01-01T00:00:00+24:00")", R"("")", "5", "true", "{}"}) {
    auto r = parseJobRequest("j", body(prefix + R"("startTime":)" + start + "}"));
    EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid) << start;
    EXPECT_NE(r.status().message().find("startTime"), std::string::npos) << r.status().message();
  }
  for (const char* max :
       {"0", "-1", "-9223372036854775808", "9223372036854775807", "18446744073709551615",
        "99999999999999999999999", "1e300", "-1e300", "31622401", "1.5", "\"60\"", "true"}) {
    auto r = parseJobRequest("j", body(prefix + R"("maxExecutionTimeInSeconds":)" + max + "}"));
    EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid) << max;
    EXPECT_NE(r.status().message().find("maxExecutionTimeInSeconds"), std::string::npos)
        << r.status().message();
  }
  auto whole = parseJobRequest("j", body(prefix + R"("maxExecutionTimeInSeconds":600.0})"));
  ASSERT_TRUE(whole.isOk()) << whole.status().toString();
  EXPECT_EQ(*whole->max_execution_seconds, 600);
  auto year = parseJobRequest("j", body(prefix + R"("maxExecutionTimeInSeconds":31622400})"));
  ASSERT_TRUE(year.isOk()) << year.status().toString();
}

TEST(JobModelTest, ResponseCarriesEveryFieldAndSurvivesTheStore) {
  auto spec = parseJobRequest("j1", body(R"({"type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"},"responseTimeoutInSeconds":30},
      "startTime":"2030-01-01T00:00:00Z","maxExecutionTimeInSeconds":3600,"queryCondition":"deviceId = 'd1'"})"));
  ASSERT_TRUE(spec.isOk());
  SystemTime now = *parseTimestamp("2029-12-31T23:00:00Z");
  store::JobRecord job = newJobRecord(*spec, now);
  EXPECT_EQ(statusOf(job), JobStatus::Queued);
  JobStatistics stats{
      .device_count = 5, .pending = 1, .running = 1, .succeeded = 1, .failed = 1, .canceled = 1};
  json::object r = jobResponse(job, stats);
  EXPECT_EQ(r.at("jobId"), "j1");
  EXPECT_EQ(r.at("type"), "scheduleDeviceMethod");
  EXPECT_EQ(r.at("status"), "queued");
  EXPECT_EQ(r.at("queryCondition"), "deviceId = 'd1'");
  EXPECT_EQ(r.at("createdTime"), "2029-12-31T23:00:00.0000000Z");
  EXPECT_EQ(r.at("startTime"), "2030-01-01T00:00:00.0000000Z");
  EXPECT_FALSE(r.contains("endTime"));
  EXPECT_EQ(r.at("maxExecutionTimeInSeconds"), 3600);
  EXPECT_EQ(r.at("cloudToDeviceMethod").at("payload").at("lockTime"), "10m");
  EXPECT_EQ(r.at("cloudToDeviceMethod").at("connectTimeoutInSeconds"), 0);
  EXPECT_EQ(
      toJson(r.at("deviceJobStatistics")),
      R"({"deviceCount":5,"failedCount":1,"succeededCount":1,"runningCount":1,"pendingCount":1,"canceledCount":1})");
  EXPECT_EQ(JobStatistics::fromJson(&r.at("deviceJobStatistics").as_object()), stats);
  // The engine reloads the spec from the stored record after a restart.
  auto again = specOf(job);
  ASSERT_TRUE(again.isOk()) << again.status().toString();
  EXPECT_EQ(again->method.payload_json, R"({"lockTime":"10m"})");
  EXPECT_EQ(*again->start_time, job.start_time);
  // A start time in the past means now.
  auto past =
      parseJobRequest("j2", body(R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},
      "startTime":"2001-01-01T00:00:00Z","queryCondition":"*"})"));
  EXPECT_EQ(newJobRecord(*past, now).start_time, now);
}

TEST(JobModelTest, DeviceRowsHaveTheReferenceShape) {
  store::JobRecord job;
  job.job_id = "j";
  job.type = std::string(kTypeDeviceMethod);
  SystemTime t = *parseTimestamp("2030-01-01T00:00:00Z");
  auto row = deviceJobRecord(
      job, {.device_id = "d1",
            .status = DeviceJobStatus::Completed,
            .now = t,
            .started = t,
            .ended = t,
            .method_response = json::value(json::object{{"status", 200}, {"payload", nullptr}})});
  EXPECT_EQ(row.status, "completed");
  EXPECT_EQ(row.document.at("jobType"), "scheduleDeviceMethod");
  EXPECT_EQ(row.document.at("outcome").at("deviceMethodResponse").at("status"), 200);
  EXPECT_TRUE(row.document.contains("endTimeUtc"));
  auto failed = deviceJobRecord(job, {.device_id = "d2",
                                      .status = DeviceJobStatus::Failed,
                                      .now = t,
                                      .started = t,
                                      .ended = t,
                                      .error = deviceJobError("DeviceNotOnline", "x")});
  EXPECT_TRUE(failed.document.at("outcome").at("deviceMethodResponse").is_null());
  EXPECT_EQ(failed.document.at("error").at("code"), "DeviceNotOnline");
}

TEST(JobModelTest, RolloutRatesGrowByStepsAndStopAtTheMaximum) {
  Rollout r{.maximum_per_minute = 1000,
            .exponential = Rollout::Exponential{
                .base_per_minute = 10, .increment_factor = 1.5, .succeeded_per_increase = 100}};
  EXPECT_DOUBLE_EQ(r.ratePerMinute(0), 10);
  EXPECT_DOUBLE_EQ(r.ratePerMinute(99), 10);
  EXPECT_DOUBLE_EQ(r.ratePerMinute(100), 15);
  EXPECT_DOUBLE_EQ(r.ratePerMinute(250), 22.5);
  EXPECT_DOUBLE_EQ(r.ratePerMinute(1'000'000'000), 1000);
  r.maximum_per_minute.reset();
  EXPECT_TRUE(std::isfinite(r.ratePerMinute(std::numeric_limits<std::int64_t>::max())));
  EXPECT_DOUBLE_EQ(Rollout{.maximum_per_minute = 30}.ratePerMinute(12345), 30);
}

TEST(JobModelTest, AbortCriteriaTripAboveTheirThresholdOnceEnoughDevicesEnded) {
  AbortCriterion any{
      .failure_type = FailureType::Any, .threshold_percentage = 20, .min_executed = 10};
  EXPECT_FALSE(any.trips(9, 9, 0));   // too few outcomes yet
  EXPECT_FALSE(any.trips(10, 2, 0));  // 20 % is not more than 20 %
  EXPECT_TRUE(any.trips(10, 3, 0));
  AbortCriterion timed{
      .failure_type = FailureType::TimedOut, .threshold_percentage = 10, .min_executed = 1};
  EXPECT_FALSE(timed.trips(10, 5, 1));
  EXPECT_TRUE(timed.trips(10, 5, 2));
  AbortCriterion failed{
      .failure_type = FailureType::Failed, .threshold_percentage = 10, .min_executed = 1};
  EXPECT_FALSE(failed.trips(10, 5, 4));  // 1 failure that is not a time-out
  EXPECT_TRUE(failed.trips(10, 5, 3));
  EXPECT_EQ(any.describe(),
            "abort criterion {failureType: any, thresholdPercentage: 20, "
            "minNumberOfExecutedDevices: 10}");
}

TEST(JobModelTest, RetryBackoffDoublesUpToAnHour) {
  RetryPolicy p{.max_attempts = 10, .backoff_seconds = 1.5, .retry_on = {"GatewayTimeout"}};
  EXPECT_EQ(p.delayAfter(1), std::chrono::milliseconds(1500));
  EXPECT_EQ(p.delayAfter(2), std::chrono::milliseconds(3000));
  EXPECT_EQ(p.delayAfter(4), std::chrono::milliseconds(12000));
  RetryPolicy slow{.max_attempts = 10, .backoff_seconds = 3600, .retry_on = {"GatewayTimeout"}};
  EXPECT_EQ(slow.delayAfter(9), kMaxRetryBackoff);
  EXPECT_TRUE(p.retries("GatewayTimeout"));
  EXPECT_FALSE(p.retries("DeviceNotOnline"));
}

TEST(JobModelTest, ExtensionsRoundTripThroughTheStoredRecord) {
  auto spec = parseJobRequest("j", *parseJson(R"({"type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"m"},"queryCondition":"*",
      "rollout":{"maximumPerMinute":100,"exponentialRate":{"baseRatePerMinute":2.5,
        "incrementFactor":2,"rateIncreaseCriteria":{"numberOfSucceededDevices":50}}},
      "abort":{"criteria":[{"failureType":"failed","thresholdPercentage":12.5,
        "minNumberOfExecutedDevices":100}]},
      "retry":{"maxAttempts":4,"backoffSeconds":30}})"));
  ASSERT_TRUE(spec.isOk()) << spec.status().toString();
  store::JobRecord job = newJobRecord(*spec, SystemTime{});
  json::object shown = jobResponse(job, {});
  EXPECT_EQ(shown.at("rollout").at("maximumPerMinute"), 100);
  EXPECT_EQ(shown.at("rollout").at("exponentialRate").at("baseRatePerMinute"), 2.5);
  EXPECT_EQ(shown.at("abort").at("criteria").at(0).at("thresholdPercentage"), 12.5);
  EXPECT_EQ(shown.at("retry"), *parseJson(R"({"maxAttempts":4,"backoffSeconds":30,
      "retryOn":["DeviceNotOnline","GatewayTimeout"]})"));
  auto back = specOf(job);
  ASSERT_TRUE(back.isOk()) << back.status().toString();
  EXPECT_EQ(back->rollout->exponential->succeeded_per_increase, 50);
  EXPECT_EQ(back->abort_criteria.at(0).min_executed, 100);
  EXPECT_EQ(back->retry->max_attempts, 4);
}

TEST(JobModelTest, StatusesRoundTripTheirWireNames) {
  for (auto status : {JobStatus::Queued, JobStatus::Scheduled, JobStatus::Running,
                      JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled}) {
    EXPECT_EQ(parseJobStatus(toString(status)), status);
  }
  EXPECT_EQ(toString(JobStatus::Cancelled), "cancelled");
  EXPECT_EQ(toString(DeviceJobStatus::Canceled), "canceled");
  EXPECT_EQ(parseDeviceJobStatus("cancelled"), std::nullopt);
  EXPECT_EQ(parseJobStatus("canceled"), std::nullopt);
  EXPECT_TRUE(isTerminalJobStatus("failed"));
  EXPECT_FALSE(isTerminalJobStatus("running"));
  EXPECT_FALSE(isTerminalJobStatus("bogus"));
}

TEST(JobModelTest, TheRunStateLivesInTheStoredDocument) {
  store::JobRecord job;
  EXPECT_EQ(runStateOf(job), RunState{});
  RunState state{.targets_selected = true,
                 .started = *parseTimestamp("2030-01-01T00:00:00Z"),
                 .cancel_requested = true,
                 .failure_reason = "why"};
  setRunState(job, state);
  EXPECT_EQ(runStateOf(job), state);
  EXPECT_EQ(job.document.at("runStartedTime"), "2030-01-01T00:00:00.0000000Z");
  EXPECT_EQ(jobResponse(job, {}).at("failureReason"), "why");
  setRunState(job, RunState{});
  EXPECT_TRUE(job.document.empty());
  setStatistics(job, JobStatistics{.device_count = 3, .pending = 3});
  EXPECT_EQ(statisticsOf(job).pending, 3);
}

}  // namespace
}  // namespace iothub::jobs
