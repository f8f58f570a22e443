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

}  // namespace
}  // namespace iothub::ctl
