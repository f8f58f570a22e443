// GET /jobs/v2/{id}/events on a real iothubd over HTTPS, read with a raw TLS client: a paced
// method job over devices running our C++ device SDK streams its progress as server-sent
// events, ends with the terminal JobResponse that GET answers, and the response closes.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "auth/sas_token.hpp"
#include "tests/support/hub_process.hpp"
#include "tests/support/rest_fleet.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub {
namespace {

using namespace std::chrono_literals;
using testing::HubProcess;
using testing::Service;
using testing::TempDir;

struct RawResponse {
  int status = 0;
  std::string head;  // status line and header fields
  std::string body;  // de-chunked
  bool chunked = false;
  bool complete = false;  // the final chunk arrived and then the server closed
};

// One request over a fresh TLS connection to 127.0.0.1:port; reads until the server closes.
RawResponse rawHttps(int port, const std::string& ca_file, const std::string& request) {
  RawResponse out;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free);
  EXPECT_EQ(SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr), 1);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  int fd = testing::connectLoopback(port, std::chrono::seconds(30));
  if (fd < 0) {
    ADD_FAILURE() << "cannot connect";
    return out;
  }
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  SSL_set_fd(ssl.get(), fd);
  SSL_set_tlsext_host_name(ssl.get(), "localhost");
  SSL_set1_host(ssl.get(), "localhost");
  if (SSL_connect(ssl.get()) != 1) {
    ::close(fd);
    ADD_FAILURE() << "TLS handshake failed: " << ERR_error_string(ERR_get_error(), nullptr);
    return out;
  }
  EXPECT_EQ(SSL_write(ssl.get(), request.data(), static_cast<int>(request.size())),
            static_cast<int>(request.size()));
  std::string raw;
  char buf[4096];
  for (;;) {
    int n = SSL_read(ssl.get(), buf, sizeof buf);
    if (n <= 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);

  auto end = raw.find("\r\n\r\n");
  if (end == std::string::npos) {
    ADD_FAILURE() << "no complete header: " << raw;
    return out;
  }
  out.head = raw.substr(0, end + 2);
  out.status = std::stoi(out.head.substr(9, 3));
  out.chunked = out.head.find("Transfer-Encoding: chunked\r\n") != std::string::npos;
  std::size_t at = end + 4;
  if (!out.chunked) {
    out.body = raw.substr(at);
    out.complete = true;
    return out;
  }
  for (;;) {
    auto line_end = raw.find("\r\n", at);
    if (line_end == std::string::npos) return out;
    std::size_t size = std::stoul(raw.substr(at, line_end - at), nullptr, 16);
    at = line_end + 2;
    if (size == 0) {
      out.complete = raw.compare(at, 2, "\r\n") == 0;
      return out;
    }
    if (at + size + 2 > raw.size()) return out;
    out.body += raw.substr(at, size);
    at += size + 2;
  }
}

// The `event: job` events of a text/event-stream body, parsed; comments are skipped.
std::vector<json::object> jobEvents(const std::string& body) {
  std::vector<json::object> events;
  std::size_t at = 0;
  for (;;) {
    auto end = body.find("\n\n", at);
    if (end == std::string::npos) {
      EXPECT_EQ(at, body.size()) << "the body ends with a whole event";
      return events;
    }
    std::string event = body.substr(at, end - at);
    at = end + 2;
    if (event.starts_with(":")) continue;
    EXPECT_EQ(event.rfind("event: job\ndata: ", 0), 0u) << event;
    std::string data = event.substr(event.find("data: ") + 6);
    EXPECT_EQ(data.find('\n'), std::string::npos) << "one line of data: " << event;
    events.push_back(testing::parsed(data).as_object());
  }
}

class JobEventsIntegrationTest : public ::testing::Test {
 protected:
  TempDir dir_{"iothub-job-events-it"};

  std::string request(const std::string& path) {
    auto cs = auth::ServiceConnectionString::parse(hub_->serviceConnectionString());
    EXPECT_TRUE(cs.isOk());
    auto token = auth::buildSasToken(cs->host_name, cs->key, cs->key_name,
                                     std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                             .count() +
                                         3600);
    EXPECT_TRUE(token.isOk());
    return "GET " + path + "?api-version=2021-04-12 HTTP/1.1\r\nHost: localhost\r\n" +
           "Authorization: " + *token +
           "\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
  }
  RawResponse get(const std::string& path) {
    return rawHttps(hub_->httpsPort(), hub_->caFile().string(), request(path));
  }

  std::unique_ptr<HubProcess> hub_;
};

TEST_F(JobEventsIntegrationTest, AMethodJobStreamsItsProgressAndEndsWithTheTerminalJob) {
  hub_ = std::make_unique<HubProcess>(IOTHUBD_PATH, dir_.path() / "hub");
  ASSERT_TRUE(hub_->start()) << hub_->startupError();
  Service service(*hub_);
  auto devices = testing::createDevices(service, "ev-", 6);
  ASSERT_EQ(devices.size(), 6u);
  std::vector<std::unique_ptr<testing::OnlineDevice>> online;
  for (const auto& d : devices) online.push_back(testing::connect(*hub_, d));

  // Unknown job: an ordinary JSON error before any stream.
  RawResponse missing = get("/jobs/v2/no-such-job/events");
  EXPECT_EQ(missing.status, 404) << missing.head;
  EXPECT_NE(missing.head.find("iothub-errorcode: JobNotFound"), std::string::npos) << missing.head;
  EXPECT_NE(missing.body.find("ErrorCode:JobNotFound;"), std::string::npos) << missing.body;

  // Two device operations per second over 6 devices: about 3 s of progress to watch.
  service.ok("PUT", "/jobs/v2/watched", R"j({"jobId":"watched","type":"scheduleDeviceMethod",
      "cloudToDeviceMethod":{"methodName":"lockDoor","payload":{"lockTime":"1m"},"responseTimeoutInSeconds":10},
      "queryCondition":"STARTSWITH(deviceId, 'ev-')","deviceOperationsPerSecond":2})j");
  auto started = std::chrono::steady_clock::now();
  RawResponse stream = get("/jobs/v2/watched/events");
  auto took = std::chrono::steady_clock::now() - started;
  ASSERT_EQ(stream.status, 200) << stream.head << stream.body;
  EXPECT_NE(stream.head.find("Content-Type: text/event-stream\r\n"), std::string::npos)
      << stream.head;
  EXPECT_NE(stream.head.find("Cache-Control: no-cache\r\n"), std::string::npos) << stream.head;
  EXPECT_TRUE(stream.chunked) << stream.head;
  EXPECT_TRUE(stream.complete) << "final chunk, then the server closed";
  EXPECT_GT(took, 1s) << "the stream lasted while the job ran";

  auto events = jobEvents(stream.body);
  ASSERT_GE(events.size(), 2u) << stream.body;
  int live = 0;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    std::string status(events[i].at("status").as_string());
    EXPECT_TRUE(status == "queued" || status == "running" || status == "scheduled") << status;
    if (status == "queued" || status == "running") ++live;
    if (i > 0) {
      EXPECT_NE(events[i], events[i - 1]) << "events are sent only on change";
    }
  }
  EXPECT_GE(live, 1);
  // Progress was seen along the way, not only at the end.
  std::int64_t max_seen_before_end = 0;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    max_seen_before_end = std::max(
        max_seen_before_end,
        events[i].at("deviceJobStatistics").at("succeededCount").to_number<std::int64_t>());
  }
  EXPECT_GE(max_seen_before_end, 1) << stream.body;

  const json::object& last = events.back();
  EXPECT_EQ(last.at("status"), "completed") << stream.body;
  json::object now = service.job("watched");
  EXPECT_EQ(last.at("jobId"), now.at("jobId"));
  EXPECT_EQ(last.at("status"), now.at("status"));
  EXPECT_EQ(last.at("deviceJobStatistics"), now.at("deviceJobStatistics"));
  EXPECT_EQ(last.at("deviceJobStatistics").at("succeededCount"), 6);
  for (auto& d : online) EXPECT_EQ(d->lock_calls.load(), 1);

  // A job already finished: one event, and the end.
  RawResponse again = get("/jobs/v2/watched/events");
  ASSERT_EQ(again.status, 200);
  EXPECT_TRUE(again.complete);
  auto one = jobEvents(again.body);
  ASSERT_EQ(one.size(), 1u) << again.body;
  EXPECT_EQ(one[0].at("status"), "completed");
  EXPECT_EQ(one[0].at("deviceJobStatistics"), now.at("deviceJobStatistics"));
}

// A watcher does not hold the hub up: SIGTERM ends open streams (final chunk) and the hub
// exits at once instead of waiting for them.
TEST_F(JobEventsIntegrationTest, StoppingTheHubEndsOpenStreams) {
  hub_ = std::make_unique<HubProcess>(IOTHUBD_PATH, dir_.path() / "hub");
  ASSERT_TRUE(hub_->start()) << hub_->startupError();
  Service service(*hub_);
  service.ok("PUT", "/jobs/v2/later", R"({"jobId":"later","type":"scheduleUpdateTwin",
      "updateTwin":{"tags":{"a":1}},"queryCondition":"*","startTime":"2999-01-01T00:00:00Z"})");
  std::string get_events = request("/jobs/v2/later/events");
  RawResponse stream;
  std::thread watcher(
      [&] { stream = rawHttps(hub_->httpsPort(), hub_->caFile().string(), get_events); });
  std::this_thread::sleep_for(1s);  // the stream is open, waiting for a change
  auto stopping = std::chrono::steady_clock::now();
  auto code = hub_->stop();
  watcher.join();
  EXPECT_EQ(code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, 5s);
  EXPECT_EQ(stream.status, 200) << stream.head;
  EXPECT_TRUE(stream.complete) << "ended with the final chunk";
  auto events = jobEvents(stream.body);
  ASSERT_EQ(events.size(), 1u) << stream.body;
  EXPECT_EQ(events[0].at("status"), "scheduled");
}

}  // namespace
}  // namespace iothub
