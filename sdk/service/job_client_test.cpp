#include "iothub/service/job_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
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

}  // namespace
}  // namespace iothub::service
