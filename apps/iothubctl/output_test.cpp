#include "output.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace iothub::ctl {
namespace {

json::value parse(std::string_view text) {
  auto v = parseJson(text);
  EXPECT_TRUE(v) << v.status().toString();
  return v ? *v : json::value();
}

TEST(FormatJsonPrettyTest, IndentsNestedValuesInDocumentOrder) {
  EXPECT_EQ(formatJsonPretty(parse(R"({"b":1,"a":[true,{"c":null}],"e":{},"f":[],"s":"x\"y"})")),
            "{\n"
            "  \"b\": 1,\n"
            "  \"a\": [\n"
            "    true,\n"
            "    {\n"
            "      \"c\": null\n"
            "    }\n"
            "  ],\n"
            "  \"e\": {},\n"
            "  \"f\": [],\n"
            "  \"s\": \"x\\\"y\"\n"
            "}\n");
}

TEST(FormatJsonPrettyTest, ScalarsStayOnOneLine) {
  EXPECT_EQ(formatJsonPretty(json::value(nullptr)), "null\n");
  EXPECT_EQ(formatJsonPretty(json::value("hi")), "\"hi\"\n");
  EXPECT_EQ(formatJsonPretty(json::value(42)), "42\n");
}

TEST(FormatMethodResponseTest, PrintsStatusThenPayload) {
  service::MethodResponse response;
  response.status = 200;
  response.payload = parse(R"({"ok":true})");
  EXPECT_EQ(formatMethodResponse(response), "status: 200\n{\n  \"ok\": true\n}\n");
  response.status = 404;
  response.payload = nullptr;
  EXPECT_EQ(formatMethodResponse(response), "status: 404\nnull\n");
}

using std::chrono::milliseconds;
using std::chrono::seconds;

service::Job parseJob(std::string_view text) {
  auto job = service::Job::fromJson(parse(text));
  EXPECT_TRUE(job) << job.status().toString();
  return job ? *job : service::Job{};
}

TEST(FormatTableTest, AlignsColumnsAndLeavesTheLastUnpadded) {
  EXPECT_EQ(formatTable({"A", "LONG HEADER", "C"}, {{"xyz", "1", "end"}, {"q", "22"}}),
            "A    LONG HEADER  C\n"
            "xyz  1            end\n"
            "q    22           \n");
}

TEST(FormatQueryTableTest, UsesTheUnionOfKeysInFirstAppearanceOrder) {
  auto rows = parse(R"([{"deviceId":"d1","n":1},{"deviceId":"d2","x":{"a":[1,2]},"n":null}])");
  EXPECT_EQ(formatQueryTable(rows.as_array(), service::QueryItemType::Raw),
            "deviceId  n     x\n"
            "d1        1     -\n"
            "d2        null  {\"a\":[1,2]}\n");
}

TEST(FormatQueryTableTest, TwinRowsGetASensibleColumnSet) {
  auto rows = parse(
      R"([{"deviceId":"d1","etag":"AAAA","status":"enabled","connectionState":"Connected",)"
      R"("lastActivityTime":"2024-01-01T00:00:00Z","version":3,"tags":{"floor":3},)"
      R"("properties":{"desired":{"x":1},"reported":{}}},)"
      R"({"deviceId":"d2","status":"disabled","connectionState":"Disconnected","version":1,"tags":{}}])");
  EXPECT_EQ(formatQueryTable(rows.as_array(), service::QueryItemType::Twin),
            "deviceId  status    connectionState  lastActivityTime      version  tags\n"
            "d1        enabled   Connected        2024-01-01T00:00:00Z  3        {\"floor\":3}\n"
            "d2        disabled  Disconnected     -                     1        {}\n");
}

TEST(FormatQueryTableTest, ModuleTwinsShowTheModuleId) {
  auto rows = parse(R"([{"deviceId":"d1","moduleId":"m1","status":"enabled","version":1}])");
  std::string table = formatQueryTable(rows.as_array(), service::QueryItemType::Twin);
  EXPECT_EQ(table.substr(0, table.find('\n')),
            "deviceId  moduleId  status   connectionState  lastActivityTime  version  tags");
}

TEST(FormatQueryTableTest, DeviceJobRowsLeadWithTheirIdentity) {
  auto rows = parse(R"([{"jobType":"scheduleUpdateTwin","outcome":{"deviceMethodResponse":null},)"
                    R"("deviceId":"d1","jobId":"j1","status":"completed"}])");
  EXPECT_EQ(formatQueryTable(rows.as_array(), service::QueryItemType::DeviceJob),
            "deviceId  jobId  jobType             status     outcome\n"
            "d1        j1     scheduleUpdateTwin  completed  {\"deviceMethodResponse\":null}\n");
}

TEST(FormatQueryTableTest, ScalarRowsAndEmptyResults) {
  EXPECT_EQ(formatQueryTable(parse(R"([1,"two"])").as_array(), service::QueryItemType::Raw),
            "value\n1\ntwo\n");
  EXPECT_EQ(formatQueryTable(json::array{}, service::QueryItemType::Twin), "(no results)\n");
}

constexpr std::string_view kRunningJob =
    R"({"jobId":"j1","type":"scheduleDeviceMethod","status":"running","queryCondition":"*",)"
    R"("createdTime":"2030-01-01T00:00:00Z","startTime":"2030-01-01T00:00:01Z",)"
    R"("maxExecutionTimeInSeconds":3600,"cloudToDeviceMethod":{"methodName":"lockDoor",)"
    R"("payload":{"lockTime":"10m"},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0},)"
    R"("deviceJobStatistics":{"deviceCount":100,"failedCount":2,"succeededCount":38,)"
    R"("runningCount":5,"pendingCount":55,"canceledCount":0},"deviceOperationsPerSecond":4})";

TEST(FormatJobTest, ListsFieldsOperationAndStatistics) {
  EXPECT_EQ(formatJob(parseJob(kRunningJob)),
            "jobId:                     j1\n"
            "type:                      scheduleDeviceMethod\n"
            "status:                    running\n"
            "queryCondition:            *\n"
            "createdTime:               2030-01-01T00:00:00Z\n"
            "startTime:                 2030-01-01T00:00:01Z\n"
            "endTime:                   -\n"
            "maxExecutionTimeInSeconds: 3600\n"
            "deviceOperationsPerSecond: 4\n"
            "methodName:                lockDoor\n"
            "payload:                   {\"lockTime\":\"10m\"}\n"
            "responseTimeoutInSeconds:  30\n"
            "connectTimeoutInSeconds:   0\n"
            "deviceCount:               100\n"
            "succeededCount:            38\n"
            "failedCount:               2\n"
            "runningCount:              5\n"
            "pendingCount:              55\n"
            "canceledCount:             0\n");
}

TEST(FormatJobTest, TwinJobShowsThePatchAndFailure) {
  std::string text = formatJob(parseJob(
      R"({"jobId":"j2","type":"scheduleUpdateTwin","status":"failed","failureReason":"timed out",)"
      R"("updateTwin":{"etag":"*","properties":{"desired":{"floor":3}}}})"));
  EXPECT_NE(text.find("updateTwin:                "
                      "{\"etag\":\"*\",\"properties\":{\"desired\":{\"floor\":3}}}\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("failureReason:             timed out\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("methodName"), std::string::npos);
}

TEST(FormatJobTableTest, OneLinePerJob) {
  EXPECT_EQ(
      formatJobTable({parseJob(kRunningJob)}),
      "JOB ID  TYPE                  STATUS   CREATED               DEVICES  SUCCEEDED  FAILED\n"
      "j1      scheduleDeviceMethod  running  2030-01-01T00:00:00Z  100      38         2\n");
}

TEST(FormatDeviceJobTableTest, ShowsMethodResultsAndErrors) {
  std::vector<service::DeviceJob> rows;
  for (
      std::string_view text :
      {R"({"deviceId":"d1","jobId":"j1","status":"completed","startTimeUtc":"s","endTimeUtc":"e",)"
       R"("outcome":{"deviceMethodResponse":{"status":200,"payload":{"ok":true}}}})",
       R"({"deviceId":"d2","jobId":"j1","status":"failed","outcome":{"deviceMethodResponse":null},)"
       R"("error":{"code":"DeviceNotOnline","description":"not connected"}})",
       R"({"deviceId":"d3","jobId":"j1","status":"pending"})"}) {
    auto row = service::DeviceJob::fromJson(parse(text));
    ASSERT_TRUE(row) << row.status().toString();
    rows.push_back(*row);
  }
  EXPECT_EQ(formatDeviceJobTable(rows),
            "DEVICE ID  STATUS     START  END  RESULT\n"
            "d1         completed  s      e    200 {\"ok\":true}\n"
            "d2         failed     -      -    DeviceNotOnline: not connected\n"
            "d3         pending    -      -    -\n");
}

TEST(FormatDurationTest, SecondsMinutesHours) {
  EXPECT_EQ(formatDuration(seconds{0}), "0s");
  EXPECT_EQ(formatDuration(seconds{45}), "45s");
  EXPECT_EQ(formatDuration(seconds{185}), "3m05s");
  EXPECT_EQ(formatDuration(seconds{7620}), "2h07m");
  EXPECT_EQ(formatDuration(seconds{-3}), "0s");
}

TEST(JobRateEstimatorTest, RateNeedsTwoSamplesApart) {
  JobRateEstimator estimator;
  JobRateEstimator::TimePoint t0{};
  EXPECT_EQ(estimator.rate(), std::nullopt);
  estimator.add(t0, 0);
  EXPECT_EQ(estimator.rate(), std::nullopt);
  estimator.add(t0 + milliseconds{50}, 1);
  EXPECT_EQ(estimator.rate(), std::nullopt);  // too short a span to mean anything
  estimator.add(t0 + seconds{2}, 10);
  ASSERT_TRUE(estimator.rate().has_value());
  EXPECT_DOUBLE_EQ(*estimator.rate(), 5.0);
  EXPECT_EQ(estimator.eta(50), seconds{10});
  EXPECT_EQ(estimator.eta(7), seconds{2});  // rounded up
  EXPECT_EQ(estimator.eta(0), seconds{0});
}

TEST(JobRateEstimatorTest, OldSamplesLeaveTheWindow) {
  JobRateEstimator estimator(seconds{10});
  JobRateEstimator::TimePoint t0{};
  estimator.add(t0, 0);
  estimator.add(t0 + seconds{5}, 100);  // a fast start...
  estimator.add(t0 + seconds{20}, 110);
  estimator.add(t0 + seconds{30}, 120);  // ...then 1 device/s
  ASSERT_TRUE(estimator.rate().has_value());
  EXPECT_DOUBLE_EQ(*estimator.rate(), 1.0);
}

TEST(JobRateEstimatorTest, NoProgressMeansNoEta) {
  JobRateEstimator estimator;
  JobRateEstimator::TimePoint t0{};
  estimator.add(t0, 4);
  estimator.add(t0 + seconds{3}, 4);
  EXPECT_EQ(estimator.rate(), 0.0);
  EXPECT_EQ(estimator.eta(10), std::nullopt);
}

TEST(FormatJobProgressTest, BarCountsRateAndEta) {
  service::Job job = parseJob(kRunningJob);
  EXPECT_EQ(formatJobProgress(job, 4.0, seconds{14}),
            "j1 running [########------------] 40/100 ok 38 failed 2 running 5 pending 55 4.0/s "
            "ETA 14s");
  EXPECT_EQ(formatJobProgress(job, std::nullopt, std::nullopt, 0),
            "j1 running 40/100 ok 38 failed 2 running 5 pending 55");
}

TEST(FormatJobProgressTest, TerminalJobsHaveNoEtaAndShowCancellations) {
  service::Job job = parseJob(
      R"({"jobId":"j9","status":"cancelled","deviceJobStatistics":{"deviceCount":4,)"
      R"("succeededCount":1,"failedCount":0,"runningCount":0,"pendingCount":0,"canceledCount":3}})");
  EXPECT_EQ(formatJobProgress(job, 2.0, seconds{5}, 4),
            "j9 cancelled [####] 4/4 ok 1 failed 0 running 0 pending 0 canceled 3 2.0/s");
  service::Job empty = parseJob(R"({"jobId":"e","status":"queued"})");
  EXPECT_EQ(formatJobProgress(empty, std::nullopt, std::nullopt, 4),
            "e queued [----] 0/0 ok 0 failed 0 running 0 pending 0");
}

TEST(FormatJobProgressTest, BarRoundsDownAndNeverOverflows) {
  auto job = [](int device_count, int succeeded, int failed, int canceled) {
    return parseJob(R"({"jobId":"b","status":"running","deviceJobStatistics":{"deviceCount":)" +
                    std::to_string(device_count) + R"(,"succeededCount":)" +
                    std::to_string(succeeded) + R"(,"failedCount":)" + std::to_string(failed) +
                    R"(,"canceledCount":)" + std::to_string(canceled) + "}}");
  };
  // 2 of 3 devices finished (one failed): two thirds of 10 cells is 6.67, drawn as 6.
  EXPECT_EQ(formatJobProgress(job(3, 1, 1, 0), std::nullopt, std::nullopt, 10),
            "b running [######----] 2/3 ok 1 failed 1 running 0 pending 0");
  // Counts beyond the device count (a racy snapshot) fill the bar, no more.
  EXPECT_EQ(formatJobProgress(job(2, 2, 0, 1), std::nullopt, std::nullopt, 5),
            "b running [#####] 3/2 ok 2 failed 0 running 0 pending 0 canceled 1");
}

TEST(JobRateEstimatorTest, RateIsOverTheLastWindowAndEtaRoundsUp) {
  JobRateEstimator estimator(seconds{4});
  JobRateEstimator::TimePoint t0{};
  for (int i = 0; i <= 10; ++i) estimator.add(t0 + seconds{i}, i * 3);  // 3 devices/s
  ASSERT_TRUE(estimator.rate().has_value());
  EXPECT_DOUBLE_EQ(*estimator.rate(), 3.0);
  EXPECT_EQ(estimator.eta(10), seconds{4});  // 3.33 s rounds up
  estimator.add(t0 + seconds{12}, 30);       // stalled for 2 s: 12 devices in the last 4 s
  EXPECT_DOUBLE_EQ(*estimator.rate(), 1.5);
}

TEST(FormatJobTest, ShowsTheExtensionsThatAreSet) {
  std::string text = formatJob(
      parseJob(R"({"jobId":"x","type":"scheduleDeviceMethod","status":"queued","priority":7,)"
               R"("failOnDeviceStatus":true,"rollout":{"maximumPerMinute":60},)"
               R"("retry":{"maxAttempts":3,"backoffSeconds":2.5,"retryOn":["GatewayTimeout"]},)"
               R"("rerunOf":{"jobId":"fw","deviceJobStatuses":["failed"]},"continuous":null})"));
  EXPECT_NE(text.find("priority:                  7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("failOnDeviceStatus:        true\n"), std::string::npos) << text;
  EXPECT_NE(text.find("rollout:                   {\"maximumPerMinute\":60}\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("retry:                     {\"maxAttempts\":3,\"backoffSeconds\":2.5,"
                      "\"retryOn\":[\"GatewayTimeout\"]}\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("rerunOf:                   {\"jobId\":\"fw\",\"deviceJobStatuses\":"
                      "[\"failed\"]}\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("continuous"), std::string::npos) << text;
  EXPECT_EQ(text.find("abort"), std::string::npos) << text;
}

TEST(FormatDryRunTest, CountAndSample) {
  service::DryRunResult result;
  result.device_count = 1234;
  result.sample_device_ids = {"door-1", "door-2"};
  EXPECT_EQ(formatDryRun(result),
            "Would target 1234 devices, first:\n  door-1\n  door-2\n  … and 1232 more\n");
  result.device_count = 1;
  result.sample_device_ids = {"door-1"};
  EXPECT_EQ(formatDryRun(result), "Would target 1 device, first:\n  door-1\n");
  EXPECT_EQ(formatDryRun(service::DryRunResult{}), "Would target 0 devices\n");
}

TEST(ParseAbortFlagTest, TypePercentAndMinimum) {
  auto a = parseAbortFlag("failed:10:50");
  ASSERT_TRUE(a) << a.status().toString();
  EXPECT_EQ(a->failure_type, service::AbortFailureType::Failed);
  EXPECT_EQ(a->threshold_percentage, 10.0);
  EXPECT_EQ(a->min_executed_devices, 50);
  auto b = parseAbortFlag("timedOut:2.5:1");
  ASSERT_TRUE(b) << b.status().toString();
  EXPECT_EQ(b->failure_type, service::AbortFailureType::TimedOut);
  EXPECT_EQ(b->threshold_percentage, 2.5);
  auto c = parseAbortFlag("any:100:7");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->failure_type, service::AbortFailureType::Any);
  for (std::string_view bad : {"", "failed", "failed:10", "failed:10:50:1", "timedout:10:5",
                               "failed:ten:5", "failed:10:5.5", "failed:10%:5", "failed::5"}) {
    auto r = parseAbortFlag(bad);
    EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid) << bad;
    EXPECT_NE(r.status().message().find("--abort"), std::string::npos) << bad;
  }
}

TEST(ParseRetryFlagTest, AttemptsBackoffAndCodes) {
  auto plain = parseRetryFlag("3:10");
  ASSERT_TRUE(plain) << plain.status().toString();
  EXPECT_EQ(plain->max_attempts, 3);
  EXPECT_EQ(plain->backoff.count(), 10.0);
  EXPECT_EQ(plain->retry_on, (std::vector<service::RetryOn>{service::RetryOn::DeviceNotOnline,
                                                            service::RetryOn::GatewayTimeout}));
  auto codes = parseRetryFlag("5:0.5:DeviceMethodFailed,GatewayTimeout");
  ASSERT_TRUE(codes) << codes.status().toString();
  EXPECT_EQ(codes->max_attempts, 5);
  EXPECT_EQ(codes->backoff.count(), 0.5);
  EXPECT_EQ(codes->retry_on, (std::vector<service::RetryOn>{service::RetryOn::DeviceMethodFailed,
                                                            service::RetryOn::GatewayTimeout}));
  for (std::string_view bad : {"", "3", "x:10", "3:x", "3:10:", "3:10:Nope",
                               "3:10:DeviceNotOnline,", "3:10:a:b", "2.5:1"}) {
    EXPECT_EQ(parseRetryFlag(bad).code(), ErrorCode::ArgumentInvalid) << bad;
  }
}

TEST(ParseDeviceJobStatusListTest, CommaSeparatedNames) {
  auto list = parseDeviceJobStatusList("failed,canceled,pending");
  ASSERT_TRUE(list) << list.status().toString();
  EXPECT_EQ(list.value(), (std::vector<service::DeviceJobStatus>{
                              service::DeviceJobStatus::Failed, service::DeviceJobStatus::Canceled,
                              service::DeviceJobStatus::Pending}));
  for (std::string_view bad : {"", "failed,", "cancelled", "scheduled", "failed canceled"}) {
    EXPECT_EQ(parseDeviceJobStatusList(bad).code(), ErrorCode::ArgumentInvalid) << bad;
  }
}

TEST(RolloutFromFlagsTest, MaximumExponentialOrBoth) {
  auto none = rolloutFromFlags({});
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  auto max_only = rolloutFromFlags({120.0, std::nullopt, std::nullopt, std::nullopt});
  ASSERT_TRUE(max_only && max_only->has_value());
  EXPECT_EQ((*max_only)->maximum_per_minute, 120.0);
  EXPECT_FALSE((*max_only)->exponential_rate.has_value());
  auto both = rolloutFromFlags({600.0, 10.0, 2.0, 50});
  ASSERT_TRUE(both && both->has_value());
  const service::Rollout& rollout = **both;
  EXPECT_EQ(rollout.maximum_per_minute, 600.0);
  ASSERT_TRUE(rollout.exponential_rate.has_value());
  EXPECT_EQ(rollout.exponential_rate->base_rate_per_minute, 10.0);
  EXPECT_EQ(rollout.exponential_rate->increment_factor, 2.0);
  EXPECT_EQ(rollout.exponential_rate->succeeded_devices_per_increase, 50);
  EXPECT_EQ(rolloutFromFlags({std::nullopt, 10.0, 2.0, std::nullopt}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(rolloutFromFlags({60.0, std::nullopt, 2.0, std::nullopt}).code(),
            ErrorCode::ArgumentInvalid);
}

TEST(FormatConsumerGroupTableTest, OneLinePerGroupWithItsCreationTime) {
  json::value groups =
      parse(R"([{"name":"$Default","createdTime":"2030-01-01T00:00:00.0000000Z"},)"
            R"({"name":"analytics-readers","createdTime":"2030-01-02T03:04:05.0000000Z"},)"
            R"({"name":"odd"},7])");
  EXPECT_EQ(formatConsumerGroupTable(groups.as_array()),
            "CONSUMER GROUP     CREATED\n"
            "$Default           2030-01-01T00:00:00.0000000Z\n"
            "analytics-readers  2030-01-02T03:04:05.0000000Z\n"
            "odd                -\n");
}

}  // namespace
}  // namespace iothub::ctl
