// The jobs engine and the query endpoint of a real iothubd process: method, tag and desired
// jobs over a fleet of 120 devices of which 30 run our C++ device SDK and 90 are offline,
// with every per-device row and every statistic checked exactly; POST /devices/query paging
// and errors on the wire; and kill -9 in the middle of running jobs, after which every
// device still ends in exactly one terminal state.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/hub_process.hpp"
#include "tests/support/rest_fleet.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub {
namespace {

using namespace std::chrono_literals;
using testing::connect;
using testing::createDevices;
using testing::HubProcess;
using testing::OnlineDevice;
using testing::parsed;
using testing::Service;
using testing::TempDir;
using testing::waitFor;

class JobsIntegrationTest : public ::testing::Test {
 protected:
  TempDir dir_{"iothub-jobs-it"};
};

TEST_F(JobsIntegrationTest, TagMethodAndDesiredJobsOverAMixedFleet) {
  HubProcess hub(IOTHUBD_PATH, dir_.path() / "hub");
  ASSERT_TRUE(hub.start()) << hub.startupError();
  Service service(hub);
  auto devices = createDevices(service, "mix-", 120);
  ASSERT_EQ(devices.size(), 120u);
  std::vector<std::unique_ptr<OnlineDevice>> online;
  for (int i = 0; i < 120; i += 4)
    online.push_back(connect(hub, devices[static_cast<std::size_t>(i)]));
  ASSERT_EQ(online.size(), 30u);

  // 1. A tag job selects the fleet by id prefix and labels it.
  service.ok("PUT", "/jobs/v2/tag-fleet", R"j({"jobId":"tag-fleet","type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","tags":{"fleet":"f1"}},"startTime":null,"queryCondition":"STARTSWITH(deviceId, 'mix-')"})j");
  ASSERT_TRUE(waitFor([&] { return service.jobDone("tag-fleet"); }, 60s));
  EXPECT_EQ(service.jobStatus("tag-fleet"), "completed");
  EXPECT_EQ(service.stats("tag-fleet")["succeededCount"], 120);
  // The twin index saw every tag write: the query finds the whole fleet.
  auto count = service.query("SELECT COUNT() AS n FROM devices WHERE tags.fleet = 'f1'", 10);
  ASSERT_EQ(count.size(), 1u);
  EXPECT_EQ(count[0].at("n"), 120);
  auto connected =
      service.query("SELECT COUNT() AS n FROM devices WHERE connectionState = 'Connected'", 10);
  EXPECT_EQ(connected[0].at("n"), 30);

  // 2. A method job on the tagged fleet: 30 answer, 90 are offline.
  json::value created =
      service.ok("PUT", "/jobs/v2/lock", R"({"jobId":"lock","type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"},"responseTimeoutInSeconds":30},
      "startTime":null,"queryCondition":"tags.fleet = 'f1'"})");
  EXPECT_EQ(created.at("status"), "queued");
  // 3. A desired job over the same devices, running at the same time.
  service.ok("PUT", "/jobs/v2/desired", R"({"jobId":"desired","type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","properties":{"desired":{"building":43,"floor":3}}},"queryCondition":"tags.fleet = 'f1'"})");
  ASSERT_TRUE(waitFor([&] { return service.jobDone("lock") && service.jobDone("desired"); }, 60s));

  auto lock = service.stats("lock");
  EXPECT_EQ(lock["deviceCount"], 120);
  EXPECT_EQ(lock["succeededCount"], 30);
  EXPECT_EQ(lock["failedCount"], 90);
  EXPECT_EQ(lock["pendingCount"] + lock["runningCount"] + lock["canceledCount"], 0);
  auto lock_rows = service.rows("lock");
  ASSERT_EQ(lock_rows.size(), 120u);
  for (std::size_t i = 0; i < devices.size(); ++i) {
    const json::object& row = lock_rows.at(devices[i].device_id);
    EXPECT_EQ(row.at("jobType"), "scheduleDeviceMethod");
    if (i % 4 == 0) {
      EXPECT_EQ(row.at("status"), "completed") << devices[i].device_id;
      const auto& response = row.at("outcome").at("deviceMethodResponse");
      EXPECT_EQ(response.at("status"), 200);
      EXPECT_EQ(response.at("payload").at("request").at("lockTime"), "10m");
    } else {
      EXPECT_EQ(row.at("status"), "failed") << devices[i].device_id;
      EXPECT_EQ(row.at("error").at("code"), "DeviceNotOnline");
    }
  }
  for (auto& d : online) EXPECT_EQ(d->lock_calls.load(), 1);

  auto desired = service.stats("desired");
  EXPECT_EQ(desired["succeededCount"], 120);
  EXPECT_EQ(desired["deviceCount"], 120);
  for (auto& d : online) {
    ASSERT_TRUE(waitFor(
        [&] {
          std::lock_guard guard(d->mutex);
          for (auto& patch : d->desired) {
            if (patch.contains("building") && patch.at("building") == 43 && patch.at("floor") == 3)
              return true;
          }
          return false;
        },
        10s))
        << d->client->deviceId();
  }
  auto floor3 = service.query("SELECT deviceId FROM devices WHERE properties.desired.floor = 3", 7);
  EXPECT_EQ(floor3.size(), 120u);

  // The job list filters by type and status and pages.
  int pages = 0;
  json::array twin_jobs;
  std::optional<std::string> token;
  for (;;) {
    std::vector<std::pair<std::string, std::string>> headers{{"x-ms-max-item-count", "1"}};
    if (token) headers.emplace_back("x-ms-continuation", *token);
    auto r = service.call("GET", "/jobs/v2/query?jobType=scheduleUpdateTwin&jobStatus=completed",
                          "", headers);
    ASSERT_TRUE(r.isOk() && r->status == 200);
    EXPECT_EQ(r->header("x-ms-item-type"), "JobResponse");
    json::value page = parsed(r->body);
    for (auto& j : page.as_array()) twin_jobs.push_back(j);
    ++pages;
    auto next = r->header("x-ms-continuation");
    if (!next) break;
    token = *next;
  }
  EXPECT_EQ(pages, 2);
  ASSERT_EQ(twin_jobs.size(), 2u);
  EXPECT_EQ(twin_jobs[0].at("jobId"), "tag-fleet");
  EXPECT_EQ(twin_jobs[1].at("jobId"), "desired");

  // Errors: a reused id, a bad condition (with its position), an unknown job.
  auto reused =
      service.call("PUT", "/jobs/v2/lock",
                   R"({"type":"scheduleUpdateTwin","updateTwin":{},"queryCondition":"*"})");
  ASSERT_TRUE(reused.isOk());
  EXPECT_EQ(reused->status, 409);
  EXPECT_NE(reused->body.find("JobAlreadyExists"), std::string::npos);
  auto bad = service.call(
      "PUT", "/jobs/v2/bad",
      R"({"type":"scheduleUpdateTwin","updateTwin":{},"queryCondition":"tags.x = = 1"})");
  ASSERT_TRUE(bad.isOk());
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(bad->body.find("1:"), std::string::npos) << bad->body;
  auto missing = service.call("GET", "/jobs/v2/nope");
  ASSERT_TRUE(missing.isOk());
  EXPECT_EQ(missing->status, 404);
  EXPECT_NE(missing->body.find("JobNotFound"), std::string::npos);
  for (auto& d : online) d->client->close();
}

// iothub's job extensions (docs/jobs.md) with real devices of our SDK and a real iothubd:
// a method job waits for offline devices and calls each as it connects, across a kill -9 of
// the hub, and calls no device twice; a re-run's dry run targets exactly the devices it left
// canceled; a twin job with convergence succeeds the device that reports the desired values
// and fails the one that does not; a continuous job reaches a device that comes to match
// after it started.
TEST_F(JobsIntegrationTest, ExtensionsWithRealDevicesWaitConvergeAndFollowTheFleet) {
  auto data = dir_.path() / "hub";
  auto hub = std::make_unique<HubProcess>(IOTHUBD_PATH, data);
  ASSERT_TRUE(hub->start()) << hub->startupError();
  auto service = std::make_unique<Service>(*hub);
  auto devices = createDevices(*service, "ext-", 6);
  ASSERT_EQ(devices.size(), 6u);
  std::vector<std::unique_ptr<OnlineDevice>> online;
  online.push_back(connect(*hub, devices[0]));
  online.push_back(connect(*hub, devices[1]));

  // 1. offlineDevices: two answer at once, four wait (pending) for their connection.
  json::value created = service->ok("PUT", "/jobs/v2/wait", R"j({"type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"10m"}},
      "queryCondition":"STARTSWITH(deviceId, 'ext-')","offlineDevices":{"waitSeconds":600}})j");
  EXPECT_EQ(created.at("offlineDevices").at("waitSeconds"), 600);
  ASSERT_TRUE(waitFor(
      [&] {
        auto s = service->stats("wait");
        return s["succeededCount"] == 2 && s["pendingCount"] == 4;
      },
      30s));
  EXPECT_EQ(service->jobStatus("wait"), "running");
  ASSERT_TRUE(waitFor(
      [&] { return service->rows("wait").at("ext-1002").contains("waitingForConnection"); }, 10s));
  online.push_back(connect(*hub, devices[2]));
  // Its outcome durable (a call in flight at a crash fails DeviceJobInterrupted instead).
  ASSERT_TRUE(waitFor(
      [&] { return service->rows("wait").at("ext-1002").at("status") == "completed"; }, 30s));

  // kill -9: the job resumes, its waiting devices still wait.
  for (auto& d : online) d->client->close();
  hub->kill9();
  ASSERT_TRUE(hub->start()) << hub->startupError();
  service = std::make_unique<Service>(*hub);
  ASSERT_TRUE(waitFor([&] { return service->stats("wait")["pendingCount"] == 3; }, 30s));
  EXPECT_EQ(service->jobStatus("wait"), "running");
  online.push_back(connect(*hub, devices[3]));
  ASSERT_TRUE(waitFor([&] { return service->stats("wait")["succeededCount"] == 4; }, 30s));
  service->ok("POST", "/jobs/v2/wait/cancel");
  ASSERT_TRUE(waitFor([&] { return service->jobDone("wait"); }, 30s));
  EXPECT_EQ(service->jobStatus("wait"), "cancelled");
  auto wait = service->stats("wait");
  EXPECT_EQ(wait["succeededCount"], 4);
  EXPECT_EQ(wait["canceledCount"], 2);
  for (auto& d : online) EXPECT_EQ(d->lock_calls.load(), 1) << d->client->deviceId();

  // 2. A re-run of what the cancel left: exactly those devices.
  json::value preview = service->ok("PUT", "/jobs/v2/again?dryRun=true",
                                    R"j({"type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor"},
      "rerunOf":{"jobId":"wait","deviceJobStatuses":["canceled"]}})j");
  EXPECT_EQ(preview.at("deviceCount"), 2);
  EXPECT_EQ(preview.at("sampleDeviceIds"), parsed(R"(["ext-1004","ext-1005"])"));

  // 3. convergence: ext-1003 reports what it is asked, ext-1004 never does.
  online.push_back(connect(*hub, devices[4]));
  OnlineDevice& reporter = *online[3];
  service->ok("PUT", "/jobs/v2/converge", R"j({"type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","properties":{"desired":{"building":43,"floor":3}}},
      "queryCondition":"deviceId IN ['ext-1003', 'ext-1004']","convergence":{"timeoutSeconds":8}})j");
  ASSERT_TRUE(waitFor(
      [&] {
        std::lock_guard guard(reporter.mutex);
        return !reporter.desired.empty();
      },
      10s));
  ASSERT_TRUE(reporter.client->patchReported(json::object{{"building", 43}, {"floor", 3}}).isOk());
  ASSERT_TRUE(waitFor([&] { return service->stats("converge")["succeededCount"] == 1; }, 10s));
  auto converging = service->rows("converge").at("ext-1004");
  if (!service->jobDone("converge")) {
    EXPECT_EQ(converging.at("status"), "running");
    EXPECT_EQ(converging.at("converging"), true);
  }
  ASSERT_TRUE(waitFor([&] { return service->jobDone("converge"); }, 30s));
  EXPECT_EQ(service->jobStatus("converge"), "completed");
  auto converge = service->rows("converge");
  EXPECT_EQ(converge.at("ext-1003").at("status"), "completed");
  EXPECT_EQ(converge.at("ext-1004").at("status"), "failed");
  EXPECT_EQ(converge.at("ext-1004").at("error").at("code"), "NotConverged");

  // 4. continuous: a device that comes to match later gets the update too.
  service->ok("PUT", "/jobs/v2/follow", R"j({"type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","tags":{"stage":"seen"}},
      "queryCondition":"tags.site = 'c1'","continuous":true})j");
  ASSERT_TRUE(waitFor([&] { return service->jobStatus("follow") == "running"; }, 10s));
  service->ok("PATCH", "/twins/ext-1005", R"j({"tags":{"site":"c1"}})j");
  ASSERT_TRUE(waitFor([&] { return service->stats("follow")["succeededCount"] == 1; }, 30s));
  EXPECT_EQ(service->ok("GET", "/twins/ext-1005").at("tags").at("stage"), "seen");
  EXPECT_EQ(service->jobStatus("follow"), "running");
  service->ok("POST", "/jobs/v2/follow/cancel");
  ASSERT_TRUE(waitFor([&] { return service->jobDone("follow"); }, 30s));
  EXPECT_EQ(service->jobStatus("follow"), "cancelled");
  for (auto& d : online) d->client->close();
}

// The value of the sample `series` (name and labels, as exposed) in a scrape; -1 if absent.
double metricValue(const std::string& scrape, const std::string& series) {
  std::size_t at = 0;
  while ((at = scrape.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || scrape[at - 1] == '\n') return std::stod(scrape.substr(at + series.size() + 1));
    at += series.size();
  }
  return -1;
}

TEST_F(JobsIntegrationTest, MetricsAndJsonLogsFollowTheDevicePathMethodsTwinsJobsAndTheStore) {
  HubProcess hub(IOTHUBD_PATH, dir_.path() / "hub",
                 {"--metrics-port", "0", "--log-format", "json"});
  ASSERT_TRUE(hub.start()) << hub.startupError();
  Service service(hub);
  auto devices = createDevices(service, "metrics-", 3);
  ASSERT_EQ(devices.size(), 3u);
  auto online = connect(hub, devices[0]);
  ASSERT_TRUE(online->client);
  ASSERT_TRUE(online->client->patchReported(json::object{{"firmware", "1.2"}}).isOk());
  ASSERT_TRUE(online->client->sendEvent(R"({"t":21.5})").isOk());

  service.ok("POST", "/twins/metrics-1000/methods",
             R"({"methodName":"lockDoor","payload":{},"responseTimeoutInSeconds":10})");
  auto offline =
      service.call("POST", "/twins/metrics-1001/methods",
                   R"({"methodName":"lockDoor","payload":{},"responseTimeoutInSeconds":10})");
  ASSERT_TRUE(offline.isOk());
  EXPECT_EQ(offline->status, 404);
  service.ok("PATCH", "/twins/metrics-1002", R"({"properties":{"desired":{"floor":3}}})");
  service.ok("PUT", "/jobs/v2/metrics-job", R"j({"jobId":"metrics-job","type":"scheduleUpdateTwin",
      "updateTwin":{"etag":"*","tags":{"site":"m"}},"queryCondition":"STARTSWITH(deviceId, 'metrics-')"})j");
  ASSERT_TRUE(waitFor([&] { return service.jobDone("metrics-job"); }, 60s));
  // Disabling the connected device closes its connection (revoked); the SDK's reconnects
  // are then refused with CONNACK 5.
  auto disabled =
      service.call("PUT", "/devices/metrics-1000",
                   R"({"deviceId":"metrics-1000","status":"disabled"})", {{"If-Match", "\"*\""}});
  ASSERT_TRUE(disabled.isOk());
  ASSERT_EQ(disabled->status, 200) << disabled->body;

  std::string scrape;
  auto value = [&](const std::string& series) { return metricValue(scrape, series); };
  ASSERT_TRUE(waitFor(
      [&] {
        scrape = testing::scrapeMetrics(hub.metricsPort());
        return value(R"(iothub_mqtt_disconnects_total{reason="revoked"})") == 1 &&
               value(R"(iothub_mqtt_connects_total{result="notAuthorized"})") >= 1;
      },
      30s))
      << scrape;
  EXPECT_EQ(value(R"(iothub_mqtt_connects_total{result="accepted"})"), 1) << scrape;
  EXPECT_EQ(value(R"(iothub_mqtt_disconnects_total{reason="clientDisconnect"})"), 0);
  EXPECT_GE(value(R"(iothub_mqtt_packets_total{direction="received"})"),
            5);  // CONNECT, 2+ SUBSCRIBE, PATCH, PUBLISH
  EXPECT_GE(value(R"(iothub_mqtt_packets_total{direction="sent"})"), 5);
  EXPECT_GT(value(R"(iothub_mqtt_bytes_total{direction="received"})"), 100);
  EXPECT_EQ(value(R"(iothub_method_calls_total{outcome="answered"})"), 1);
  EXPECT_EQ(value(R"(iothub_method_calls_total{outcome="deviceNotOnline"})"), 1);
  EXPECT_EQ(value("iothub_method_answer_seconds_count"), 1);
  EXPECT_EQ(value(R"(iothub_method_answer_seconds_bucket{le="+Inf"})"), 1);
  EXPECT_EQ(value(R"(iothub_twin_updates_total{source="device"})"), 1);
  EXPECT_EQ(value(R"(iothub_twin_updates_total{source="service"})"), 4);  // PATCH + 3 job updates
  EXPECT_EQ(value("iothub_telemetry_messages_total"), 1);
  EXPECT_EQ(value(R"(iothub_jobs_ended_total{status="completed"})"), 1);
  EXPECT_EQ(value(R"(iothub_jobs{status="running"})"), 0);
  EXPECT_EQ(value(R"(iothub_job_device_operations_total{outcome="succeeded"})"), 3);
  EXPECT_EQ(value(R"(iothub_job_device_operations_total{outcome="failed"})"), 0);
  EXPECT_GT(value("iothub_store_write_batch_operations_count"), 5);
  EXPECT_GE(value("iothub_store_write_batch_operations_sum"),
            value("iothub_store_write_batch_operations_count"));
  EXPECT_GT(value("iothub_store_write_batch_seconds_count"), 5);
  EXPECT_EQ(value("iothub_store_write_queue_depth"), 0);
  EXPECT_EQ(value("iothub_device_worker_queue_depth"), 0);
  EXPECT_EQ(value("iothub_rest_worker_queue_depth"), 0);
  EXPECT_EQ(hub.stop(), 0);

  // --log-format json: every line is one object with time, level and message; lines about a
  // device or a job carry its id as a field.
  std::istringstream lines(hub.process().err());
  int records = 0;
  std::set<std::string> device_ids, job_ids, remotes;
  for (std::string line; std::getline(lines, line);) {
    boost::system::error_code ec;
    json::value record = json::parse(line, ec);
    ASSERT_FALSE(ec) << "not JSON: " << line;
    ASSERT_TRUE(record.is_object()) << line;
    const json::object& o = record.as_object();
    for (const char* key : {"time", "level", "message"}) {
      ASSERT_TRUE(o.contains(key) && o.at(key).is_string()) << key << " in " << line;
    }
    ++records;
    if (o.contains("deviceId")) device_ids.insert(std::string(o.at("deviceId").as_string()));
    if (o.contains("jobId")) job_ids.insert(std::string(o.at("jobId").as_string()));
    if (o.contains("remote")) remotes.insert(std::string(o.at("remote").as_string()));
  }
  EXPECT_GT(records, 5);
  EXPECT_TRUE(device_ids.contains("metrics-1000")) << hub.process().err();
  EXPECT_TRUE(job_ids.contains("metrics-job")) << hub.process().err();
  EXPECT_FALSE(remotes.empty());
}

TEST_F(JobsIntegrationTest, QueryEndpointPagesAndRefusesBadInput) {
  HubProcess hub(IOTHUBD_PATH, dir_.path() / "hub");
  ASSERT_TRUE(hub.start()) << hub.startupError();
  Service service(hub);
  createDevices(service, "q-", 23);
  int pages = 0;
  auto all = service.query("SELECT * FROM devices", 5, &pages);
  EXPECT_EQ(pages, 5);
  ASSERT_EQ(all.size(), 23u);
  std::set<std::string> ids;
  for (auto& row : all) ids.insert(std::string(row.at("deviceId").as_string()));
  EXPECT_EQ(ids.size(), 23u);
  auto r = service.call("POST", "/devices/query", R"({"query":"SELECT * FROM devices"})");
  ASSERT_TRUE(r.isOk());
  EXPECT_EQ(r->header("x-ms-item-type"), "Twin");
  EXPECT_FALSE(r->header("x-ms-continuation"));  // 23 rows fit the default page of 100
  auto raw = service.call("POST", "/devices/query", R"({"query":"SELECT deviceId FROM devices"})");
  EXPECT_EQ(raw->header("x-ms-item-type"), "Raw");

  struct Bad {
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string expect;
  };
  std::vector<Bad> cases = {
      {R"({"query":"SELECT * FROM devices WHERE"})", {}, "1:"},
      {R"({"query":"SELECT * FROM devices.modules"})", {}, "1:"},
      {json::serialize(json::object{
           {"query", "SELECT * FROM devices WHERE tags.a = '" + std::string(8200, 'x') + "'"}}),
       {},
       "8192"},
      {R"({"nope":1})", {}, "query"},
      {"{not json", {}, ""},
      {R"({"query":"SELECT * FROM devices"})",
       {{"x-ms-max-item-count", "0"}},
       "x-ms-max-item-count"},
      {R"({"query":"SELECT * FROM devices"})",
       {{"x-ms-max-item-count", "abc"}},
       "x-ms-max-item-count"},
      {R"({"query":"SELECT * FROM devices"})", {{"x-ms-continuation", "bm9wZQ=="}}, "continuation"},
  };
  for (auto& c : cases) {
    auto answer = service.call("POST", "/devices/query", c.body, c.headers);
    ASSERT_TRUE(answer.isOk());
    EXPECT_EQ(answer->status, 400) << c.body.substr(0, 80) << " → " << answer->body;
    EXPECT_NE(answer->body.find(c.expect), std::string::npos) << answer->body;
  }
  // Still serving.
  EXPECT_EQ(service.query("SELECT COUNT() FROM devices", 1)[0].at("COUNT"), 23);
}

TEST_F(JobsIntegrationTest, KillDashNineDuringJobsLeavesEveryDeviceWithOneTerminalState) {
  auto data = dir_.path() / "hub";
  auto hub = std::make_unique<HubProcess>(IOTHUBD_PATH, data,
                                          std::vector<std::string>{"--job-window", "10"});
  ASSERT_TRUE(hub->start()) << hub->startupError();
  {
    Service service(*hub);
    createDevices(service, "k-", 1500);
    // Offline devices given 2 s to connect: ten calls in flight at a time, slowly failing.
    service.ok("PUT", "/jobs/v2/slow-method", R"({"type":"scheduleDeviceMethod",
        "cloudToDeviceMethod":{"methodName":"lockDoor","payload":null,"connectTimeoutInSeconds":2},
        "queryCondition":"deviceId < 'k-1040'"})");
    service.ok("PUT", "/jobs/v2/big-twin", R"({"type":"scheduleUpdateTwin",
        "updateTwin":{"etag":"*","properties":{"desired":{"wave":1}}},"queryCondition":"*"})");
    // Retries paced by a rollout, over offline devices: killed while some wait for their
    // next attempt.
    service.ok("PUT", "/jobs/v2/retrying", R"j({"type":"scheduleDeviceMethod",
        "cloudToDeviceMethod":{"methodName":"lockDoor","payload":null},
        "queryCondition":"deviceId >= 'k-1040' AND deviceId < 'k-1080'",
        "retry":{"maxAttempts":3,"backoffSeconds":1,"retryOn":["DeviceNotOnline"]},
        "rollout":{"maximumPerMinute":600}})j");
    ASSERT_TRUE(waitFor(
        [&] {
          auto m = service.stats("slow-method");
          auto t = service.stats("big-twin");
          int waiting = 0;
          for (auto& [id, row] : service.rows("retrying"))
            waiting += row.at("status") == "pending" && row.contains("attempts");
          return m["failedCount"] >= 10 && m["runningCount"] > 0 && t["succeededCount"] > 0 &&
                 waiting >= 3;
        },
        60s));
  }
  hub->kill9();
  hub = std::make_unique<HubProcess>(IOTHUBD_PATH, data);
  ASSERT_TRUE(hub->start()) << hub->startupError();
  Service service(*hub);
  ASSERT_TRUE(waitFor(
      [&] {
        return service.jobDone("slow-method") && service.jobDone("big-twin") &&
               service.jobDone("retrying");
      },
      90s));

  EXPECT_EQ(service.jobStatus("slow-method"), "completed");
  auto m = service.stats("slow-method");
  EXPECT_EQ(m["deviceCount"], 40);
  EXPECT_EQ(m["failedCount"], 40);
  auto method_rows = service.rows("slow-method");
  ASSERT_EQ(method_rows.size(), 40u);
  int interrupted = 0;
  for (auto& [id, row] : method_rows) {
    EXPECT_EQ(row.at("status"), "failed") << id;
    std::string code(row.at("error").at("code").as_string());
    EXPECT_TRUE(code == "DeviceNotOnline" || code == "DeviceJobInterrupted") << code;
    interrupted += code == "DeviceJobInterrupted";
  }
  EXPECT_GE(interrupted, 1);
  EXPECT_LE(interrupted, 10);  // at most the window was in flight

  EXPECT_EQ(service.jobStatus("big-twin"), "completed");
  auto t = service.stats("big-twin");
  EXPECT_EQ(t["deviceCount"], 1500);
  EXPECT_EQ(t["succeededCount"], 1500);
  auto twin_rows = service.rows("big-twin");
  EXPECT_EQ(twin_rows.size(), 1500u);
  for (auto& [id, row] : twin_rows) EXPECT_EQ(row.at("status"), "completed") << id;
  // Every twin carries the update exactly as a completed job promises; the index was
  // rebuilt from the store at the restart.
  auto waved =
      service.query("SELECT COUNT() AS n FROM devices WHERE properties.desired.wave = 1", 1);
  EXPECT_EQ(waved[0].at("n"), 1500);

  // Every retried device ends once: failed after its three attempts (the schedule survived
  // the kill), or interrupted if its call was in flight at the kill.
  EXPECT_EQ(service.jobStatus("retrying"), "completed");
  auto r = service.stats("retrying");
  EXPECT_EQ(r["deviceCount"], 40);
  EXPECT_EQ(r["failedCount"], 40);
  int retried_to_the_end = 0;
  for (auto& [id, row] : service.rows("retrying")) {
    EXPECT_EQ(row.at("status"), "failed") << id;
    std::string code(row.at("error").at("code").as_string());
    EXPECT_TRUE(code == "DeviceNotOnline" || code == "DeviceJobInterrupted") << code;
    EXPECT_GE(row.at("attempts").as_int64(), 1) << id;
    EXPECT_LE(row.at("attempts").as_int64(), 3) << id;
    retried_to_the_end += code == "DeviceNotOnline" && row.at("attempts") == 3;
  }
  EXPECT_GE(retried_to_the_end, 30);
}

}  // namespace
}  // namespace iothub
