#include "iothub/service/job_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <functional>
#include <limits>

#include "common/time_format.hpp"
#include "fake_http_server.hpp"
#include "test_helpers.hpp"

namespace iothub::service {
namespace {

using std::chrono::seconds;
using testing::azureError;
using testing::CannedResponse;
using testing::FakeHttpServer;
using ::testing::HasSubstr;
using testing::parse;

using testing::kConnectionString;

// The Azure CLI fixture of docs/protocol.md §9.4, plus iothub's extensions.
constexpr std::string_view kTwinJobJson =
    R"({"createdTime":"2020-01-06T21:44:00.8884134Z",)"
    R"("deviceJobStatistics":{"deviceCount":2,"failedCount":0,"pendingCount":0,"runningCount":0,)"
    R"("succeededCount":2,"canceledCount":0},)"
    R"("endTime":"2020-01-06T21:44:06.2536519Z","jobId":"test-job-1",)"
    R"("maxExecutionTimeInSeconds":300,"queryCondition":"deviceId in ['d1','d2']",)"
    R"("startTime":"2020-01-06T21:44:00.8884134Z","status":"completed","type":"scheduleUpdateTwin",)"
    R"("updateTwin":{"deviceId":null,"etag":"*","tags":{"deviceClass":"Class1"}}})";

constexpr std::string_view kMethodJobJson =
    R"({"jobId":"j1","queryCondition":"deviceId = 'd1'","createdTime":"2030-01-01T00:00:00.0000000Z",)"
    R"("startTime":"2030-01-01T00:00:00.0000000Z","maxExecutionTimeInSeconds":3600,)"
    R"("type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"lockDoor",)"
    R"("payload":{"lockTime":"10m"},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":5},)"
    R"("status":"running","failureReason":null,"statusMessage":"",)"
    R"("deviceJobStatistics":{"deviceCount":10,"failedCount":1,"succeededCount":3,)"
    R"("runningCount":2,"pendingCount":3,"canceledCount":1},"deviceOperationsPerSecond":2.5})";

SystemTime at(std::string_view iso) {
  auto t = parseTimestamp(iso);
  EXPECT_TRUE(t.has_value()) << iso;
  return t.value_or(SystemTime{});
}

JobSchedule schedule(std::string job_id, std::string condition) {
  JobSchedule s;
  s.job_id = std::move(job_id);
  s.query_condition = std::move(condition);
  return s;
}

json::object parseObject(std::string_view text) {
  json::value v = parse(text);
  return v.is_object() ? v.get_object() : json::object();
}

class JobClientTest : public ::testing::Test {
 protected:
  JobClientTest() {
    ServiceClientOptions options;
    options.endpoint = server_.endpoint();
    options.timeout = seconds{10};
    auto client = JobClient::fromConnectionString(kConnectionString, options);
    EXPECT_TRUE(client) << client.status().toString();
    if (client) client_ = std::make_unique<JobClient>(std::move(*client));
  }

  testing::RecordedRequest onlyRequest() {
    auto requests = server_.requests();
    EXPECT_EQ(requests.size(), 1u);
    return requests.empty() ? testing::RecordedRequest{} : requests.back();
  }

  FakeHttpServer server_;
  std::unique_ptr<JobClient> client_;
};

TEST_F(JobClientTest, ScheduleDeviceMethodNowSendsANullStartTime) {
  server_.reply(200, std::string(kMethodJobJson));
  MethodRequest method{"reboot", parse(R"({"a":1})")};
  auto job = client_->scheduleDeviceMethod(schedule("j1", "deviceId IN ['d1','d2']"), method);
  ASSERT_TRUE(job) << job.status().toString();
  auto r = onlyRequest();
  EXPECT_EQ(r.method, "PUT");
  EXPECT_EQ(r.target, "/jobs/v2/j1?api-version=2021-04-12");
  EXPECT_EQ(r.header("content-type"), "application/json; charset=utf-8");
  EXPECT_EQ(
      r.body,
      R"({"jobId":"j1","type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"reboot",)"
      R"("payload":{"a":1},"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0},)"
      R"("startTime":null,"queryCondition":"deviceId IN ['d1','d2']"})");
}

TEST_F(JobClientTest, ScheduleDeviceMethodLaterSendsIsoStartAndMaxExecutionTime) {
  server_.reply(200, std::string(kMethodJobJson));
  JobSchedule s = schedule("j2", "deviceId = 'd1'");
  s.start_time = at("2030-01-01T00:00:00.1234567Z");
  s.max_execution_time = seconds{600};
  ASSERT_TRUE(client_->scheduleDeviceMethod(s, MethodRequest{"reboot", nullptr, seconds{15}}));
  EXPECT_EQ(
      onlyRequest().body,
      R"({"jobId":"j2","type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"reboot",)"
      R"("payload":null,"responseTimeoutInSeconds":15,"connectTimeoutInSeconds":0},)"
      R"("startTime":"2030-01-01T00:00:00.123Z","maxExecutionTimeInSeconds":600,)"
      R"("queryCondition":"deviceId = 'd1'"})");
}

TEST_F(JobClientTest, RateExtensionIsSentOnlyWhenSet) {
  server_.reply(200, std::string(kMethodJobJson));
  server_.reply(200, std::string(kTwinJobJson));
  JobSchedule s = schedule("j3", "*");
  s.device_operations_per_second = 2.5;
  ASSERT_TRUE(
      client_->scheduleDeviceMethod(s, MethodRequest{"m", nullptr, seconds{30}, seconds{5}}));
  s.device_operations_per_second = 100;
  ASSERT_TRUE(client_->scheduleTwinUpdate(s, parseObject(R"({"tags":{"x":1}})")));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(
      requests[0].body,
      R"({"jobId":"j3","type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m",)"
      R"("payload":null,"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":5},)"
      R"("startTime":null,"queryCondition":"*","deviceOperationsPerSecond":2.5})");
  json::value twin_body = parse(requests[1].body);
  EXPECT_EQ(twin_body.at("deviceOperationsPerSecond").to_number<double>(), 100.0);
}

TEST_F(JobClientTest, ScheduleTwinUpdateSendsThePatchVerbatim) {
  server_.reply(200, std::string(kTwinJobJson));
  JobSchedule s = schedule("j3", "tags.a = 1");
  s.start_time = at("2030-01-01T00:00:00Z");
  ASSERT_TRUE(client_->scheduleTwinUpdate(
      s, parseObject(R"({"etag":"*","tags":{"x":1},"properties":{"desired":{"z":1}}})")));
  auto r = onlyRequest();
  EXPECT_EQ(r.target, "/jobs/v2/j3?api-version=2021-04-12");
  // Byte for byte the Node body of docs/protocol.md §9.1.
  EXPECT_EQ(r.body, R"({"jobId":"j3","type":"scheduleUpdateTwin",)"
                    R"("updateTwin":{"etag":"*","tags":{"x":1},"properties":{"desired":{"z":1}}},)"
                    R"("startTime":"2030-01-01T00:00:00.000Z","queryCondition":"tags.a = 1"})");
}

TEST_F(JobClientTest, ScheduleTwinUpdateAddsAWildcardEtagFirstWhenMissing) {
  server_.reply(200, std::string(kTwinJobJson));
  server_.reply(200, std::string(kTwinJobJson));
  ASSERT_TRUE(client_->scheduleTwinUpdate(
      schedule("j4", "*"), parseObject(R"({"properties":{"desired":{"building":43}}})")));
  ASSERT_TRUE(client_->scheduleTwinUpdate(schedule("j5", "*"),
                                          parseObject(R"({"tags":{"t":1},"etag":"AAAA"})")));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_THAT(requests[0].body,
              HasSubstr(R"("updateTwin":{"etag":"*","properties":{"desired":{"building":43}}})"));
  EXPECT_THAT(requests[1].body, HasSubstr(R"("updateTwin":{"tags":{"t":1},"etag":"AAAA"})"));
}

TEST_F(JobClientTest, ParsesAMethodJobResponse) {
  server_.reply(200, std::string(kMethodJobJson));
  auto job = client_->getJob("j1");
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->job_id, "j1");
  EXPECT_EQ(job->type, JobType::ScheduleDeviceMethod);
  EXPECT_EQ(job->status, JobStatus::Running);
  EXPECT_EQ(job->query_condition, "deviceId = 'd1'");
  EXPECT_EQ(job->created_time, "2030-01-01T00:00:00.0000000Z");
  EXPECT_EQ(job->start_time, "2030-01-01T00:00:00.0000000Z");
  EXPECT_EQ(job->end_time, std::nullopt);
  EXPECT_EQ(job->max_execution_time_seconds, 3600);
  ASSERT_TRUE(job->cloud_to_device_method.has_value());
  EXPECT_EQ(job->cloud_to_device_method->method_name, "lockDoor");
  EXPECT_EQ(job->cloud_to_device_method->payload, parse(R"({"lockTime":"10m"})"));
  EXPECT_EQ(job->cloud_to_device_method->response_timeout, seconds{30});
  EXPECT_EQ(job->cloud_to_device_method->connect_timeout, seconds{5});
  EXPECT_FALSE(job->update_twin.has_value());
  EXPECT_EQ(job->failure_reason, "");
  EXPECT_EQ(job->statistics.device_count, 10);
  EXPECT_EQ(job->statistics.failed_count, 1);
  EXPECT_EQ(job->statistics.succeeded_count, 3);
  EXPECT_EQ(job->statistics.running_count, 2);
  EXPECT_EQ(job->statistics.pending_count, 3);
  EXPECT_EQ(job->statistics.canceled_count, 1);
  EXPECT_EQ(job->device_operations_per_second, 2.5);
  EXPECT_EQ(job->raw, parse(kMethodJobJson).as_object());
  EXPECT_FALSE(isTerminal(job->status));
}

TEST_F(JobClientTest, ParsesATerminalTwinJobFromAzure) {
  server_.reply(200, std::string(kTwinJobJson));
  auto job = client_->getJob("test-job-1");
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->type, JobType::ScheduleUpdateTwin);
  EXPECT_EQ(job->status, JobStatus::Completed);
  EXPECT_TRUE(isTerminal(job->status));
  EXPECT_EQ(job->end_time, "2020-01-06T21:44:06.2536519Z");
  ASSERT_TRUE(job->update_twin.has_value());
  EXPECT_EQ(job->update_twin->at("tags"), parse(R"({"deviceClass":"Class1"})"));
  EXPECT_FALSE(job->cloud_to_device_method.has_value());
  EXPECT_EQ(job->statistics.succeeded_count, 2);
  EXPECT_EQ(job->device_operations_per_second, std::nullopt);
}

TEST_F(JobClientTest, GetAndCancelUseTheJobPaths) {
  server_.reply(200, std::string(kMethodJobJson));
  server_.reply(200, std::string(kMethodJobJson));
  ASSERT_TRUE(client_->getJob("job-1"));
  auto cancelled = client_->cancelJob("job-1");
  ASSERT_TRUE(cancelled) << cancelled.status().toString();
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].target, "/jobs/v2/job-1?api-version=2021-04-12");
  EXPECT_TRUE(requests[0].body.empty());
  EXPECT_EQ(requests[1].method, "POST");
  EXPECT_EQ(requests[1].target, "/jobs/v2/job-1/cancel?api-version=2021-04-12");
  EXPECT_TRUE(requests[1].body.empty());
  EXPECT_EQ(requests[1].header("content-type"), std::nullopt);
}

TEST_F(JobClientTest, UnknownJobIsJobNotFound) {
  server_.reply(404, azureError("JobNotFound", "Job nope does not exist."));
  server_.reply(404, azureError("JobNotFound", "Job nope does not exist."));
  auto got = client_->getJob("nope");
  EXPECT_EQ(got.code(), ErrorCode::JobNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr("Job nope does not exist."));
  EXPECT_EQ(client_->cancelJob("nope").code(), ErrorCode::JobNotFound);
}

TEST_F(JobClientTest, ReusedJobIdIsJobAlreadyExists) {
  server_.reply(409, azureError("JobAlreadyExists", "Job j1 already exists."));
  auto result = client_->scheduleDeviceMethod(schedule("j1", "*"), MethodRequest{"m"});
  EXPECT_EQ(result.code(), ErrorCode::JobAlreadyExists);
  EXPECT_THAT(result.status().message(), HasSubstr("(HTTP 409)"));
}

TEST_F(JobClientTest, BadConditionAndThrottlingAreTheHubsErrors) {
  server_.reply(400, azureError("ArgumentInvalid", "line 1, column 5: unexpected token"));
  server_.reply(429, azureError("ThrottlingException", "Too many active jobs"));
  auto bad = client_->scheduleTwinUpdate(schedule("j1", "tags. = 1"), json::object{});
  EXPECT_EQ(bad.code(), ErrorCode::ArgumentInvalid);
  EXPECT_THAT(bad.status().message(), HasSubstr("line 1, column 5"));
  EXPECT_EQ(client_->scheduleTwinUpdate(schedule("j2", "*"), json::object{}).code(),
            ErrorCode::Throttled);
}

TEST_F(JobClientTest, ReplyThatIsNotAJobResponseIsIotHubFormatError) {
  for (std::string body :
       {R"([])", R"({"status":"running"})", R"({"jobId":"j1"})", R"({"jobId":7,"status":"queued"})",
        R"({"jobId":"j1","status":"queued","deviceJobStatistics":{"deviceCount":"2"}})",
        R"({"jobId":"j1","status":"queued","cloudToDeviceMethod":[]})",
        R"({"jobId":"j1","status":"queued","maxExecutionTimeInSeconds":1.5})"}) {
    server_.reply(200, body);
    EXPECT_EQ(client_->getJob("j1").code(), ErrorCode::IotHubFormatError) << body;
  }
}

TEST_F(JobClientTest, UnknownEnumNamesParseAsUnknown) {
  server_.reply(200, R"({"jobId":"j1","status":"enqueued","type":"export"})");
  auto job = client_->getJob("j1");
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->status, JobStatus::Unknown);
  EXPECT_EQ(job->type, JobType::Unknown);
  EXPECT_EQ(job->statistics.device_count, 0);
}

TEST_F(JobClientTest, InvalidArgumentsAreRejectedWithoutARequest) {
  JobSchedule s = schedule("j1", "*");
  EXPECT_EQ(client_->scheduleDeviceMethod(schedule("", "*"), MethodRequest{"m"}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->scheduleDeviceMethod(schedule("j1", ""), MethodRequest{"m"}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->scheduleDeviceMethod(s, MethodRequest{""}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->scheduleDeviceMethod(s, MethodRequest{"m", nullptr, seconds{-1}}).code(),
            ErrorCode::ArgumentInvalid);
  JobSchedule no_time = s;
  no_time.max_execution_time = seconds{0};
  EXPECT_EQ(client_->scheduleTwinUpdate(no_time, json::object{}).code(),
            ErrorCode::ArgumentInvalid);
  for (double rate : {0.0, -1.0, std::numeric_limits<double>::infinity(), std::nan("")}) {
    JobSchedule limited = s;
    limited.device_operations_per_second = rate;
    EXPECT_EQ(client_->scheduleTwinUpdate(limited, json::object{}).code(),
              ErrorCode::ArgumentInvalid)
        << rate;
  }
  EXPECT_EQ(client_->getJob("").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->cancelJob("").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->deviceJobs("").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->listJobs(std::nullopt, std::nullopt, 0).code(), ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

CannedResponse jobPage(std::string body, std::optional<std::string> continuation) {
  CannedResponse response;
  response.body = std::move(body);
  response.headers.emplace_back("x-ms-item-type", "JobResponse");
  if (continuation) response.headers.emplace_back("x-ms-continuation", *continuation);
  return response;
}

TEST_F(JobClientTest, ListJobsSendsFiltersAndPagingHeaders) {
  server_.reply(jobPage("[" + std::string(kMethodJobJson) + "]", "c1"));
  server_.reply(jobPage("[]", std::nullopt));
  server_.reply(jobPage("[]", std::nullopt));
  auto page = client_->listJobs(JobType::ScheduleDeviceMethod, JobStatus::Running, 10);
  ASSERT_TRUE(page) << page.status().toString();
  ASSERT_EQ(page->jobs.size(), 1u);
  EXPECT_EQ(page->jobs[0].job_id, "j1");
  EXPECT_EQ(page->continuation, "c1");
  auto last =
      client_->listJobs(JobType::ScheduleDeviceMethod, JobStatus::Running, 10, page->continuation);
  ASSERT_TRUE(last) << last.status().toString();
  EXPECT_EQ(last->continuation, std::nullopt);
  ASSERT_TRUE(client_->listJobs());
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].method, "GET");
  EXPECT_EQ(requests[0].target,
            "/jobs/v2/query?api-version=2021-04-12&jobStatus=running&jobType=scheduleDeviceMethod");
  EXPECT_EQ(requests[0].header("x-ms-max-item-count"), "10");
  EXPECT_EQ(requests[0].header("x-ms-continuation"), std::nullopt);
  EXPECT_EQ(requests[1].header("x-ms-continuation"), "c1");
  EXPECT_EQ(requests[2].target, "/jobs/v2/query?api-version=2021-04-12");
  EXPECT_EQ(requests[2].header("x-ms-max-item-count"), std::nullopt);
}

TEST_F(JobClientTest, ListAllJobsFollowsContinuationsToTheEnd) {
  server_.reply(jobPage("[" + std::string(kMethodJobJson) + "]", "c1"));
  server_.reply(jobPage("[" + std::string(kTwinJobJson) + "]", std::nullopt));
  auto jobs = client_->listAllJobs(std::nullopt, JobStatus::Completed);
  ASSERT_TRUE(jobs) << jobs.status().toString();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ(jobs->at(1).job_id, "test-job-1");
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].target, "/jobs/v2/query?api-version=2021-04-12&jobStatus=completed");
  EXPECT_EQ(requests[1].header("x-ms-continuation"), "c1");
}

constexpr std::string_view kDeviceJobRows =
    R"([{"deviceId":"d1","jobId":"j1","jobType":"scheduleDeviceMethod","status":"completed",)"
    R"("startTimeUtc":"2030-01-01T00:00:00.0000000Z","endTimeUtc":"2030-01-01T00:00:01.0000000Z",)"
    R"("createdDateTimeUtc":"2029-12-31T23:59:00.0000000Z","lastUpdatedDateTimeUtc":"2030-01-01T00:00:01.0000000Z",)"
    R"("outcome":{"deviceMethodResponse":{"status":200,"payload":{"Response":"ok"}}}},)"
    R"({"deviceId":"d2","jobId":"j1","jobType":"scheduleDeviceMethod","status":"failed",)"
    R"("outcome":{"deviceMethodResponse":null},)"
    R"("error":{"code":"DeviceNotOnline","description":"Timed out waiting for device to connect."}}])";

TEST_F(JobClientTest, DeviceJobsQueriesTheJobsCollectionAndParsesRows) {
  CannedResponse first;
  first.body = std::string(kDeviceJobRows);
  first.headers = {{"x-ms-item-type", "DeviceJob"}, {"x-ms-continuation", "t1"}};
  CannedResponse second;
  second.body = R"([{"deviceId":"d3","jobId":"j1","status":"canceled","outcome":null}])";
  second.headers = {{"x-ms-item-type", "DeviceJob"}};
  server_.reply(first);
  server_.reply(second);
  auto rows = client_->deviceJobs("j1", std::nullopt, 2);
  ASSERT_TRUE(rows) << rows.status().toString();
  ASSERT_EQ(rows->size(), 3u);
  const DeviceJob& ok = rows->at(0);
  EXPECT_EQ(ok.device_id, "d1");
  EXPECT_EQ(ok.job_id, "j1");
  EXPECT_EQ(ok.job_type, JobType::ScheduleDeviceMethod);
  EXPECT_EQ(ok.status, DeviceJobStatus::Completed);
  EXPECT_EQ(ok.start_time, "2030-01-01T00:00:00.0000000Z");
  EXPECT_EQ(ok.end_time, "2030-01-01T00:00:01.0000000Z");
  EXPECT_EQ(ok.created_time, "2029-12-31T23:59:00.0000000Z");
  EXPECT_EQ(ok.last_updated_time, "2030-01-01T00:00:01.0000000Z");
  ASSERT_TRUE(ok.method_response.has_value());
  EXPECT_EQ(ok.method_response->status, 200);
  EXPECT_EQ(ok.method_response->payload, parse(R"({"Response":"ok"})"));
  EXPECT_FALSE(ok.error.has_value());
  const DeviceJob& failed = rows->at(1);
  EXPECT_EQ(failed.status, DeviceJobStatus::Failed);
  EXPECT_FALSE(failed.method_response.has_value());
  ASSERT_TRUE(failed.error.has_value());
  EXPECT_EQ(failed.error->code, "DeviceNotOnline");
  EXPECT_EQ(failed.error->description, "Timed out waiting for device to connect.");
  EXPECT_EQ(rows->at(2).status, DeviceJobStatus::Canceled);

  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].target, "/devices/query?api-version=2021-04-12");
  EXPECT_EQ(requests[0].body,
            R"({"query":"SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'"})");
  EXPECT_EQ(requests[0].header("x-ms-max-item-count"), "2");
  EXPECT_EQ(requests[1].header("x-ms-continuation"), "t1");
}

TEST(DeviceJobsQueryTest, FiltersByStatusAndEscapesTheId) {
  EXPECT_EQ(JobClient::deviceJobsQuery("j1", DeviceJobStatus::Failed),
            "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1' AND "
            "devices.jobs.status = 'failed'");
  EXPECT_EQ(JobClient::deviceJobsQuery("it's"),
            R"(SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'it\'s')");
}

TEST(DeviceJobTest, RejectsRowsWithoutIdentity) {
  for (std::string_view body :
       {R"("x")", R"({"jobId":"j1","status":"running"})", R"({"deviceId":"d1","jobId":"j1"})",
        R"({"deviceId":"d1","jobId":"j1","status":"running","error":"x"})"}) {
    EXPECT_EQ(DeviceJob::fromJson(parse(body)).code(), ErrorCode::IotHubFormatError) << body;
  }
}

TEST(JobEnumsTest, WireNamesRoundTrip) {
  for (JobStatus s : {JobStatus::Queued, JobStatus::Scheduled, JobStatus::Running,
                      JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled}) {
    EXPECT_EQ(parseJobStatus(toString(s)), s);
  }
  for (DeviceJobStatus s :
       {DeviceJobStatus::Pending, DeviceJobStatus::Scheduled, DeviceJobStatus::Running,
        DeviceJobStatus::Completed, DeviceJobStatus::Failed, DeviceJobStatus::Canceled}) {
    EXPECT_EQ(parseDeviceJobStatus(toString(s)), s);
  }
  EXPECT_EQ(toString(JobStatus::Cancelled), "cancelled");
  EXPECT_EQ(toString(DeviceJobStatus::Canceled), "canceled");
  EXPECT_EQ(parseJobType("scheduleUpdateTwin"), JobType::ScheduleUpdateTwin);
  EXPECT_EQ(parseJobType("scheduleTwinUpdate"), std::nullopt);
  EXPECT_EQ(parseJobStatus("canceled"), std::nullopt);
}

TEST(JobIdTest, NewJobIdsAreDistinctUuids) {
  std::string a = JobClient::newJobId();
  std::string b = JobClient::newJobId();
  EXPECT_NE(a, b);
  ASSERT_EQ(a.size(), 36u);
  for (char c : a) EXPECT_TRUE(std::isxdigit(static_cast<unsigned char>(c)) || c == '-') << a;
}

TEST(FormatStartTimeTest, WritesMillisecondsLikeNode) {
  EXPECT_EQ(JobClient::formatStartTime(at("2030-01-01T00:00:00Z")), "2030-01-01T00:00:00.000Z");
  EXPECT_EQ(JobClient::formatStartTime(at("2024-02-29T23:59:59.9999999Z")),
            "2024-02-29T23:59:59.999Z");
}

// ---- iothub's job extensions (docs/jobs.md) ----

MethodRequest plainMethod() { return MethodRequest{"m", nullptr, seconds{30}, seconds{5}}; }

constexpr std::string_view kPlainMethodPrefix =
    R"({"jobId":"x1","type":"scheduleDeviceMethod","cloudToDeviceMethod":{"methodName":"m",)"
    R"("payload":null,"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":5},)"
    R"("startTime":null,)";

TEST_F(JobClientTest, MethodJobExtensionsAreSentLastWithTheirWireNames) {
  server_.reply(200, std::string(kMethodJobJson));
  JobSchedule s = schedule("x1", "*");
  s.device_operations_per_second = 0.5;
  s.priority = 9;
  s.fail_on_device_status = true;
  s.rollout = Rollout{120, ExponentialRollout{10, 1.5, 50}};
  s.abort_criteria = {{AbortFailureType::Failed, 12.5, 20}, {AbortFailureType::Any, 100, 1}};
  s.retry = RetryPolicy{3, seconds{5}, {RetryOn::DeviceNotOnline, RetryOn::DeviceMethodFailed}};
  s.offline_wait = seconds{600};
  s.continuous = true;
  ASSERT_TRUE(client_->scheduleDeviceMethod(s, plainMethod()));
  EXPECT_EQ(
      onlyRequest().body,
      std::string(kPlainMethodPrefix) +
          R"("queryCondition":"*","deviceOperationsPerSecond":0.5,"priority":9,)"
          R"("failOnDeviceStatus":true,"rollout":{"maximumPerMinute":120,)"
          R"("exponentialRate":{"baseRatePerMinute":10,"incrementFactor":1.5,)"
          R"("rateIncreaseCriteria":{"numberOfSucceededDevices":50}}},)"
          R"("abort":{"criteria":[{"failureType":"failed","thresholdPercentage":12.5,)"
          R"("minNumberOfExecutedDevices":20},{"failureType":"any","thresholdPercentage":100,)"
          R"("minNumberOfExecutedDevices":1}]},)"
          R"("retry":{"maxAttempts":3,"backoffSeconds":5,)"
          R"("retryOn":["DeviceNotOnline","DeviceMethodFailed"]},)"
          R"("offlineDevices":{"waitSeconds":600},"continuous":true})");
}

TEST_F(JobClientTest, OnlyTheExtensionsSetAreSent) {
  server_.reply(200, std::string(kMethodJobJson));
  server_.reply(200, std::string(kMethodJobJson));
  server_.reply(200, std::string(kMethodJobJson));
  JobSchedule s = schedule("x1", "*");
  s.rollout = Rollout{std::nullopt, ExponentialRollout{2, 2, 1}};
  ASSERT_TRUE(client_->scheduleDeviceMethod(s, plainMethod()));
  s = schedule("x1", "*");
  s.rollout = Rollout{30.5, std::nullopt};
  s.retry = RetryPolicy{};  // the defaults: 2 attempts, no backoff, the two connection errors
  s.retry->backoff = std::chrono::milliseconds{2500};
  ASSERT_TRUE(client_->scheduleDeviceMethod(s, plainMethod()));
  s = schedule("x1", "*");
  s.priority = 0;
  ASSERT_TRUE(client_->scheduleDeviceMethod(s, plainMethod()));
  // One attempt and a repeated code are the hub's to judge (it accepts both).
  s = schedule("x1", "*");
  s.retry = RetryPolicy{1, seconds{0}, {RetryOn::GatewayTimeout, RetryOn::GatewayTimeout}};
  server_.reply(200, std::string(kMethodJobJson));
  ASSERT_TRUE(client_->scheduleDeviceMethod(s, plainMethod()));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 4u);
  EXPECT_EQ(requests[3].body,
            std::string(kPlainMethodPrefix) +
                R"("queryCondition":"*","retry":{"maxAttempts":1,"backoffSeconds":0,)"
                R"("retryOn":["GatewayTimeout","GatewayTimeout"]}})");
  EXPECT_EQ(requests[0].body,
            std::string(kPlainMethodPrefix) +
                R"("queryCondition":"*","rollout":{"exponentialRate":{"baseRatePerMinute":2,)"
                R"("incrementFactor":2,"rateIncreaseCriteria":{"numberOfSucceededDevices":1}}}})");
  EXPECT_EQ(requests[1].body, std::string(kPlainMethodPrefix) +
                                  R"("queryCondition":"*","rollout":{"maximumPerMinute":30.5},)"
                                  R"("retry":{"maxAttempts":2,"backoffSeconds":2.5,)"
                                  R"("retryOn":["DeviceNotOnline","GatewayTimeout"]}})");
  EXPECT_EQ(requests[2].body,
            std::string(kPlainMethodPrefix) + R"("queryCondition":"*","priority":0})");
}

TEST_F(JobClientTest, TwinJobSendsConvergenceAndTheSharedExtensions) {
  server_.reply(200, std::string(kTwinJobJson));
  JobSchedule s = schedule("t1", "tags.site = 'b43'");
  s.convergence_timeout = seconds{300};
  s.priority = 2;
  s.abort_criteria = {{AbortFailureType::TimedOut, 50, 10}};
  s.continuous = true;
  ASSERT_TRUE(
      client_->scheduleTwinUpdate(s, parseObject(R"({"properties":{"desired":{"fw":2}}})")));
  EXPECT_EQ(
      onlyRequest().body,
      R"({"jobId":"t1","type":"scheduleUpdateTwin",)"
      R"("updateTwin":{"etag":"*","properties":{"desired":{"fw":2}}},"startTime":null,)"
      R"("queryCondition":"tags.site = 'b43'","priority":2,"abort":{"criteria":[)"
      R"({"failureType":"timedOut","thresholdPercentage":50,"minNumberOfExecutedDevices":10}]},)"
      R"("convergence":{"timeoutSeconds":300},"continuous":true})");
}

TEST_F(JobClientTest, RerunOfReplacesTheQueryCondition) {
  server_.reply(200, std::string(kMethodJobJson));
  JobSchedule s = schedule("x1", "");
  s.rerun_of = Rerun{"fw-1", {DeviceJobStatus::Failed, DeviceJobStatus::Canceled}};
  s.max_execution_time = seconds{60};
  ASSERT_TRUE(client_->scheduleDeviceMethod(s, plainMethod()));
  std::string body = onlyRequest().body;
  EXPECT_EQ(body, std::string(kPlainMethodPrefix) +
                      R"("maxExecutionTimeInSeconds":60,"rerunOf":{"jobId":"fw-1",)"
                      R"("deviceJobStatuses":["failed","canceled"]}})");
  EXPECT_EQ(body.find("queryCondition"), std::string::npos);
}

TEST_F(JobClientTest, BadExtensionValuesAreRejectedWithoutARequest) {
  struct Case {
    std::string what;
    std::function<void(JobSchedule&)> change;
  };
  auto exp = [](double base, double factor, std::int64_t every) {
    return Rollout{std::nullopt, ExponentialRollout{base, factor, every}};
  };
  std::vector<Case> method_cases = {
      {"priority -1", [](JobSchedule& s) { s.priority = -1; }},
      {"priority 10", [](JobSchedule& s) { s.priority = 10; }},
      {"empty rollout", [](JobSchedule& s) { s.rollout = Rollout{}; }},
      {"rollout max 0",
       [](JobSchedule& s) {
         s.rollout = Rollout{0.0, std::nullopt};
       }},
      {"rollout max nan",
       [](JobSchedule& s) {
         s.rollout = Rollout{std::nan(""), std::nullopt};
       }},
      {"rollout base 0", [&](JobSchedule& s) { s.rollout = exp(0, 2, 1); }},
      {"rollout factor 1", [&](JobSchedule& s) { s.rollout = exp(1, 1, 1); }},
      {"rollout factor inf",
       [&](JobSchedule& s) { s.rollout = exp(1, std::numeric_limits<double>::infinity(), 1); }},
      {"rollout every 0", [&](JobSchedule& s) { s.rollout = exp(1, 2, 0); }},
      {"abort 0 %",
       [](JobSchedule& s) {
         s.abort_criteria = {{AbortFailureType::Any, 0, 1}};
       }},
      {"abort 100.5 %",
       [](JobSchedule& s) {
         s.abort_criteria = {{AbortFailureType::Any, 100.5, 1}};
       }},
      {"abort min 0",
       [](JobSchedule& s) {
         s.abort_criteria = {{AbortFailureType::Any, 5, 0}};
       }},
      {"abort unknown type",
       [](JobSchedule& s) {
         s.abort_criteria = {{AbortFailureType::Unknown, 5, 1}};
       }},
      {"11 abort criteria",
       [](JobSchedule& s) {
         s.abort_criteria.assign(11, AbortCriterion{AbortFailureType::Any, 5, 1});
       }},
      {"retry 0 attempts", [](JobSchedule& s) { s.retry = RetryPolicy{0}; }},
      {"retry 11 attempts", [](JobSchedule& s) { s.retry = RetryPolicy{11}; }},
      {"retry negative backoff",
       [](JobSchedule& s) {
         s.retry = RetryPolicy{2, seconds{-1}};
       }},
      {"retry on nothing",
       [](JobSchedule& s) {
         s.retry = RetryPolicy{2, seconds{0}, {}};
       }},
      {"retry on DeviceMethodFailed without failOnDeviceStatus",
       [](JobSchedule& s) {
         s.retry = RetryPolicy{2, seconds{0}, {RetryOn::DeviceMethodFailed}};
       }},
      {"rollout base above its maximum",
       [](JobSchedule& s) {
         s.rollout = Rollout{10.0, ExponentialRollout{20, 2, 5}};
       }},
      {"continuous re-run",
       [](JobSchedule& s) {
         s.query_condition.clear();
         s.rerun_of = Rerun{"j0", {DeviceJobStatus::Failed}};
         s.continuous = true;
       }},
      {"retry on unknown",
       [](JobSchedule& s) {
         s.retry = RetryPolicy{2, seconds{0}, {RetryOn::Unknown}};
       }},
      {"offline wait 0", [](JobSchedule& s) { s.offline_wait = seconds{0}; }},
      {"convergence on a method job", [](JobSchedule& s) { s.convergence_timeout = seconds{5}; }},
      {"rerun and query",
       [](JobSchedule& s) {
         s.rerun_of = Rerun{"j0", {DeviceJobStatus::Failed}};
       }},
      {"rerun without job",
       [](JobSchedule& s) {
         s.query_condition.clear();
         s.rerun_of = Rerun{"", {DeviceJobStatus::Failed}};
       }},
      {"rerun without statuses",
       [](JobSchedule& s) {
         s.query_condition.clear();
         s.rerun_of = Rerun{"j0", {}};
       }},
      {"rerun of scheduled rows",
       [](JobSchedule& s) {
         s.query_condition.clear();
         s.rerun_of = Rerun{"j0", {DeviceJobStatus::Scheduled}};
       }},
  };
  for (const Case& c : method_cases) {
    JobSchedule s = schedule("x1", "*");
    c.change(s);
    EXPECT_EQ(client_->scheduleDeviceMethod(s, plainMethod()).code(), ErrorCode::ArgumentInvalid)
        << c.what;
    EXPECT_EQ(client_->dryRun(s, plainMethod()).code(), ErrorCode::ArgumentInvalid) << c.what;
  }
  std::vector<Case> twin_cases = {
      {"failOnDeviceStatus", [](JobSchedule& s) { s.fail_on_device_status = true; }},
      {"retry", [](JobSchedule& s) { s.retry = RetryPolicy{}; }},
      {"offline wait", [](JobSchedule& s) { s.offline_wait = seconds{5}; }},
      {"convergence 0", [](JobSchedule& s) { s.convergence_timeout = seconds{0}; }},
  };
  json::object desired = parseObject(R"({"properties":{"desired":{"a":1}}})");
  for (const Case& c : twin_cases) {
    JobSchedule s = schedule("x1", "*");
    c.change(s);
    EXPECT_EQ(client_->scheduleTwinUpdate(s, desired).code(), ErrorCode::ArgumentInvalid) << c.what;
  }
  JobSchedule tags_only = schedule("x1", "*");
  tags_only.convergence_timeout = seconds{5};
  EXPECT_EQ(client_->scheduleTwinUpdate(tags_only, parseObject(R"({"tags":{"a":1}})")).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

constexpr std::string_view kExtendedJobJson =
    R"({"jobId":"x1","type":"scheduleDeviceMethod","status":"queued",)"
    R"("rerunOf":{"jobId":"fw-1","deviceJobStatuses":["failed","canceled","weird"]},)"
    R"("deviceOperationsPerSecond":4,"priority":7,"failOnDeviceStatus":true,)"
    R"("rollout":{"maximumPerMinute":120,"exponentialRate":{"baseRatePerMinute":10,)"
    R"("incrementFactor":1.5,"rateIncreaseCriteria":{"numberOfSucceededDevices":50}}},)"
    R"("abort":{"criteria":[{"failureType":"timedOut","thresholdPercentage":12.5,)"
    R"("minNumberOfExecutedDevices":20},{"failureType":"later","thresholdPercentage":1,)"
    R"("minNumberOfExecutedDevices":1}]},)"
    R"("retry":{"maxAttempts":4,"backoffSeconds":2.5,"retryOn":["GatewayTimeout","Other"]},)"
    R"("offlineDevices":{"waitSeconds":600},"convergence":{"timeoutSeconds":90},"continuous":true})";

TEST_F(JobClientTest, ParsesEchoedExtensions) {
  server_.reply(200, std::string(kExtendedJobJson));
  auto job = client_->getJob("x1");
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->device_operations_per_second, 4.0);
  EXPECT_EQ(job->priority, 7);
  EXPECT_TRUE(job->fail_on_device_status);
  ASSERT_TRUE(job->rollout.has_value());
  EXPECT_EQ(job->rollout->maximum_per_minute, 120.0);
  ASSERT_TRUE(job->rollout->exponential_rate.has_value());
  EXPECT_EQ(job->rollout->exponential_rate->base_rate_per_minute, 10.0);
  EXPECT_EQ(job->rollout->exponential_rate->increment_factor, 1.5);
  EXPECT_EQ(job->rollout->exponential_rate->succeeded_devices_per_increase, 50);
  ASSERT_EQ(job->abort_criteria.size(), 2u);
  EXPECT_EQ(job->abort_criteria[0].failure_type, AbortFailureType::TimedOut);
  EXPECT_EQ(job->abort_criteria[0].threshold_percentage, 12.5);
  EXPECT_EQ(job->abort_criteria[0].min_executed_devices, 20);
  EXPECT_EQ(job->abort_criteria[1].failure_type, AbortFailureType::Unknown);
  ASSERT_TRUE(job->retry.has_value());
  EXPECT_EQ(job->retry->max_attempts, 4);
  EXPECT_EQ(job->retry->backoff.count(), 2.5);
  EXPECT_EQ(job->retry->retry_on,
            (std::vector<RetryOn>{RetryOn::GatewayTimeout, RetryOn::Unknown}));
  EXPECT_EQ(job->offline_wait, seconds{600});
  EXPECT_EQ(job->convergence_timeout, seconds{90});
  EXPECT_TRUE(job->continuous);
  ASSERT_TRUE(job->rerun_of.has_value());
  EXPECT_EQ(job->rerun_of->job_id, "fw-1");
  EXPECT_EQ(job->rerun_of->device_job_statuses,
            (std::vector<DeviceJobStatus>{DeviceJobStatus::Failed, DeviceJobStatus::Canceled,
                                          DeviceJobStatus::Unknown}));
  EXPECT_EQ(job->query_condition, "");
  EXPECT_EQ(job->raw, parse(kExtendedJobJson).as_object());
}

TEST(JobExtensionsTest, AbsentExtensionsKeepTheirDefaults) {
  auto job = Job::fromJson(parse(R"({"jobId":"j","status":"running","priority":null})"));
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->priority, std::nullopt);
  EXPECT_FALSE(job->fail_on_device_status);
  EXPECT_FALSE(job->continuous);
  EXPECT_FALSE(job->rollout.has_value());
  EXPECT_TRUE(job->abort_criteria.empty());
  EXPECT_FALSE(job->retry.has_value());
  EXPECT_EQ(job->offline_wait, std::nullopt);
  EXPECT_EQ(job->convergence_timeout, std::nullopt);
  EXPECT_FALSE(job->rerun_of.has_value());
}

TEST(JobExtensionsTest, EchoedExtensionsOfTheWrongTypeAreIotHubFormatError) {
  for (
      std::string_view extension :
      {R"("priority":"high")", R"("priority":1.5)", R"("failOnDeviceStatus":"yes")",
       R"("continuous":1)", R"("rollout":[])", R"("rollout":{"maximumPerMinute":"9"})",
       R"("rollout":{"exponentialRate":{"rateIncreaseCriteria":{"numberOfSucceededDevices":0.5}}})",
       R"("abort":{"criteria":{}})", R"("abort":{"criteria":[1]})",
       R"("abort":{"criteria":[{"failureType":3}]})", R"("retry":{"retryOn":"GatewayTimeout"})",
       R"("retry":{"retryOn":[1]})", R"("retry":{"backoffSeconds":"5"})",
       R"("offlineDevices":{"waitSeconds":"5"})", R"("convergence":5)", R"("rerunOf":{"jobId":7})",
       R"("rerunOf":{"deviceJobStatuses":"failed"})"}) {
    std::string text = R"({"jobId":"j","status":"running",)" + std::string(extension) + "}";
    EXPECT_EQ(Job::fromJson(parse(text)).code(), ErrorCode::IotHubFormatError) << text;
  }
}

TEST(JobExtensionsTest, WireNamesRoundTrip) {
  for (AbortFailureType t :
       {AbortFailureType::Failed, AbortFailureType::TimedOut, AbortFailureType::Any}) {
    EXPECT_EQ(parseAbortFailureType(toString(t)), t);
  }
  for (RetryOn r :
       {RetryOn::DeviceNotOnline, RetryOn::GatewayTimeout, RetryOn::DeviceMethodFailed}) {
    EXPECT_EQ(parseRetryOn(toString(r)), r);
  }
  EXPECT_EQ(toString(AbortFailureType::TimedOut), "timedOut");
  EXPECT_EQ(parseAbortFailureType("timedout"), std::nullopt);
  EXPECT_EQ(parseRetryOn("deviceNotOnline"), std::nullopt);
}

TEST_F(JobClientTest, DryRunSendsTheScheduleBodyWithDryRunAndParsesTheCount) {
  server_.reply(200, R"({"deviceCount":1234,"sampleDeviceIds":["door-0001","door-0002"]})");
  server_.reply(200, R"({"deviceCount":0,"sampleDeviceIds":[]})");
  JobSchedule s = schedule("x1", "*");
  s.priority = 3;
  auto method_run = client_->dryRun(s, plainMethod());
  ASSERT_TRUE(method_run) << method_run.status().toString();
  EXPECT_EQ(method_run->device_count, 1234);
  EXPECT_EQ(method_run->sample_device_ids, (std::vector<std::string>{"door-0001", "door-0002"}));
  EXPECT_EQ(method_run->raw.at("deviceCount"), json::value(1234));
  auto twin_run = client_->dryRun(schedule("t1", "tags.a = 1"), parseObject(R"({"tags":{"b":2}})"));
  ASSERT_TRUE(twin_run) << twin_run.status().toString();
  EXPECT_EQ(twin_run->device_count, 0);
  EXPECT_TRUE(twin_run->sample_device_ids.empty());

  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "PUT");
  EXPECT_EQ(requests[0].target, "/jobs/v2/x1?api-version=2021-04-12&dryRun=true");
  EXPECT_EQ(requests[0].body,
            std::string(kPlainMethodPrefix) + R"("queryCondition":"*","priority":3})");
  EXPECT_EQ(requests[1].target, "/jobs/v2/t1?api-version=2021-04-12&dryRun=true");
  EXPECT_EQ(requests[1].body, R"({"jobId":"t1","type":"scheduleUpdateTwin",)"
                              R"("updateTwin":{"etag":"*","tags":{"b":2}},"startTime":null,)"
                              R"("queryCondition":"tags.a = 1"})");
}

TEST_F(JobClientTest, DryRunErrorsAreTheHubs) {
  server_.reply(409, azureError("JobAlreadyExists", "Job x1 already exists."));
  server_.reply(200, R"({"sampleDeviceIds":[]})");
  server_.reply(200, R"({"deviceCount":2,"sampleDeviceIds":[1,2]})");
  EXPECT_EQ(client_->dryRun(schedule("x1", "*"), plainMethod()).code(),
            ErrorCode::JobAlreadyExists);
  EXPECT_EQ(client_->dryRun(schedule("x1", "*"), plainMethod()).code(),
            ErrorCode::IotHubFormatError);
  EXPECT_EQ(client_->dryRun(schedule("x1", "*"), plainMethod()).code(),
            ErrorCode::IotHubFormatError);
}

// ---- watchJob: the live event stream ----

std::string jobState(std::string_view status, int done, int total = 4) {
  return R"({"jobId":"w1","type":"scheduleDeviceMethod","status":")" + std::string(status) +
         R"(","deviceJobStatistics":{"deviceCount":)" + std::to_string(total) +
         R"(,"succeededCount":)" + std::to_string(done) + R"(,"failedCount":0,"runningCount":0,)" +
         R"("pendingCount":)" + std::to_string(total - done) + "}}";
}

std::string jobEvent(std::string_view status, int done) {
  return "event: job\ndata: " + jobState(status, done) + "\n\n";
}

CannedResponse eventStream(std::vector<std::string> chunks) {
  CannedResponse response;
  response.content_type = "text/event-stream";
  response.chunks = std::move(chunks);
  return response;
}

// What on_update saw: "status:succeeded" per call.
struct Updates {
  std::vector<std::string> seen;
  std::function<bool(const Job&)> record() {
    return [this](const Job& job) {
      seen.push_back(std::string(toString(job.status)) + ":" +
                     std::to_string(job.statistics.succeeded_count));
      return true;
    };
  }
};

WatchOptions fastOptions() {
  WatchOptions options;
  options.idle_timeout = seconds{5};
  options.poll_interval = std::chrono::milliseconds{10};
  return options;
}

TEST_F(JobClientTest, WatchJobReadsEventsSplitAcrossChunksUntilTheTerminalOne) {
  std::string first = jobEvent("running", 1);
  std::string second = jobEvent("running", 3);
  // CRLF line ends in the last event, as the format allows.
  std::string last = "event: job\r\ndata: " + jobState("completed", 4) + "\r\n\r\n";
  server_.reply(eventStream({
      first.substr(0, 7),                     // "event: " …
      first.substr(7, 30),                    // … the event cut inside its data line …
      first.substr(37) + ": keep-alive\n\n",  // … its end and a keep-alive comment
      "event: other\ndata: {}\n\n" + second,  // another event type is skipped
      ": keep-alive\n\n",
      last.substr(0, last.size() - 1),  // the blank line's "\n" in the next chunk
      "\n",
  }));
  Updates updates;
  auto job = client_->watchJob("w1", updates.record(), fastOptions());
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->status, JobStatus::Completed);
  EXPECT_EQ(job->statistics.succeeded_count, 4);
  EXPECT_EQ(updates.seen, (std::vector<std::string>{"running:1", "running:3", "completed:4"}));
  auto r = onlyRequest();
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/jobs/v2/w1/events?api-version=2021-04-12");
  EXPECT_EQ(r.header("accept"), "text/event-stream");
  EXPECT_TRUE(r.header("authorization").has_value());
}

TEST_F(JobClientTest, WatchJobDeliversEachEventAsItArrives) {
  // The server sends the second event only once the first has reached the callback: a
  // client that waited for the end of the body would never see either.
  CannedResponse stream = eventStream({jobEvent("running", 1), jobEvent("completed", 4)});
  stream.hold_before_chunk = 1;
  server_.reply(stream);
  Updates updates;
  auto job = client_->watchJob(
      "w1",
      [&](const Job& j) {
        updates.record()(j);
        if (j.status == JobStatus::Running) server_.release();
        return true;
      },
      fastOptions());
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(updates.seen, (std::vector<std::string>{"running:1", "completed:4"}));
}

TEST_F(JobClientTest, WatchJobStopsWhenTheCallbackSaysSo) {
  CannedResponse stream =
      eventStream({jobEvent("running", 1) + jobEvent("running", 2), jobEvent("completed", 4)});
  stream.hold_before_chunk = 1;  // never released: the stream stays open
  server_.reply(stream);
  int calls = 0;
  auto started = std::chrono::steady_clock::now();
  auto job = client_->watchJob(
      "w1", [&](const Job&) { return ++calls < 1; }, fastOptions());
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds{4});  // not the idle timeout
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(job->status, JobStatus::Running);
  EXPECT_EQ(job->statistics.succeeded_count, 1);
  EXPECT_EQ(server_.requests().size(), 1u);
}

TEST_F(JobClientTest, WatchJobReopensAStreamThatDropsBeforeTheJobEnds) {
  CannedResponse dropped = eventStream({jobEvent("running", 1)});
  dropped.finish_chunks = false;                                 // the connection closes mid-body
  CannedResponse ended = eventStream({jobEvent("running", 2)});  // a clean end, job running
  server_.reply(dropped);
  server_.reply(ended);
  server_.reply(eventStream({jobEvent("running", 2), jobEvent("failed", 3)}));
  Updates updates;
  auto job = client_->watchJob("w1", updates.record(), fastOptions());
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->status, JobStatus::Failed);
  EXPECT_EQ(updates.seen,
            (std::vector<std::string>{"running:1", "running:2", "running:2", "failed:3"}));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  for (const auto& r : requests) EXPECT_EQ(r.target, "/jobs/v2/w1/events?api-version=2021-04-12");
}

TEST_F(JobClientTest, WatchJobFailsWhenAStreamBringsNoEvent) {
  CannedResponse empty = eventStream({": keep-alive\n\n"});
  server_.reply(empty);
  Updates updates;
  auto job = client_->watchJob("w1", updates.record(), fastOptions());
  EXPECT_EQ(job.code(), ErrorCode::ServiceUnavailable);
  EXPECT_TRUE(isTransportFailure(job.status())) << job.status().toString();
  EXPECT_TRUE(updates.seen.empty());
  EXPECT_EQ(server_.requests().size(), 1u);
}

TEST_F(JobClientTest, WatchJobGivesUpOnASilentStream) {
  CannedResponse silent = eventStream({": keep-alive\n\n", jobEvent("completed", 4)});
  silent.hold_before_chunk = 1;  // nothing more arrives
  server_.reply(silent);
  WatchOptions options = fastOptions();
  options.idle_timeout = seconds{1};
  auto started = std::chrono::steady_clock::now();
  auto job = client_->watchJob("w1", Updates{}.record(), options);
  EXPECT_TRUE(isTransportFailure(job.status())) << job.status().toString();
  EXPECT_THAT(job.status().message(), HasSubstr("for 1s"));
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds{5});
}

TEST_F(JobClientTest, WatchJobOfAnUnknownJobIsJobNotFoundWithoutPolling) {
  server_.reply(404, azureError("JobNotFound", "Job w1 does not exist."));
  auto job = client_->watchJob("w1", Updates{}.record(), fastOptions());
  EXPECT_EQ(job.code(), ErrorCode::JobNotFound);
  EXPECT_THAT(job.status().message(), HasSubstr("Job w1 does not exist."));
  EXPECT_EQ(server_.requests().size(), 1u);
}

TEST_F(JobClientTest, WatchJobPollsAHubWithoutTheEventsRoute) {
  server_.reply(404, azureError("NotFound", "No resource at /jobs/v2/w1/events"));
  server_.reply(200, jobState("running", 1));
  server_.reply(200, jobState("running", 1));  // unchanged: no call
  server_.reply(200, jobState("completed", 4));
  Updates updates;
  auto job = client_->watchJob("w1", updates.record(), fastOptions());
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->status, JobStatus::Completed);
  EXPECT_EQ(updates.seen, (std::vector<std::string>{"running:1", "completed:4"}));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 4u);
  EXPECT_EQ(requests[0].target, "/jobs/v2/w1/events?api-version=2021-04-12");
  for (std::size_t i = 1; i < requests.size(); ++i) {
    EXPECT_EQ(requests[i].target, "/jobs/v2/w1?api-version=2021-04-12");
  }
}

TEST_F(JobClientTest, WatchJobPollsWhenTheHubHasNoStreamToSpare) {
  CannedResponse busy;
  busy.status = 503;
  busy.body = azureError("ServiceUnavailable", "Too many job event streams are open");
  busy.headers = {{"Retry-After", "10"}};
  server_.reply(busy);
  server_.reply(200, jobState("cancelled", 2));
  Updates updates;
  auto job = client_->watchJob("w1", updates.record(), fastOptions());
  ASSERT_TRUE(job) << job.status().toString();
  EXPECT_EQ(job->status, JobStatus::Cancelled);
  EXPECT_EQ(updates.seen, (std::vector<std::string>{"cancelled:2"}));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].target, "/jobs/v2/w1?api-version=2021-04-12");
}

TEST_F(JobClientTest, WatchJobCanRefuseToPoll) {
  server_.reply(404, azureError("NotFound", "No resource at /jobs/v2/w1/events"));
  WatchOptions options = fastOptions();
  options.poll_when_unsupported = false;
  EXPECT_EQ(client_->watchJob("w1", Updates{}.record(), options).code(), ErrorCode::NotFound);
  EXPECT_EQ(server_.requests().size(), 1u);
}

TEST_F(JobClientTest, WatchJobRejectsEventsThatAreNotJobResponses) {
  server_.reply(eventStream({"event: job\ndata: {not json\n\n"}));
  server_.reply(eventStream({"event: job\ndata: {\"status\":\"running\"}\n\n"}));
  server_.reply(200, jobState("running", 1));  // application/json, not an event stream
  EXPECT_EQ(client_->watchJob("w1", Updates{}.record(), fastOptions()).code(),
            ErrorCode::IotHubFormatError);
  EXPECT_EQ(client_->watchJob("w1", Updates{}.record(), fastOptions()).code(),
            ErrorCode::IotHubFormatError);
  auto not_a_stream = client_->watchJob("w1", Updates{}.record(), fastOptions());
  EXPECT_EQ(not_a_stream.code(), ErrorCode::IotHubFormatError);
  EXPECT_THAT(not_a_stream.status().message(), HasSubstr("text/event-stream"));
}

TEST_F(JobClientTest, WatchJobChecksItsArguments) {
  EXPECT_EQ(client_->watchJob("", Updates{}.record()).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->watchJob("w1", nullptr).code(), ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

}  // namespace
}  // namespace iothub::service
