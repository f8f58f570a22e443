#include "device_api/device_http.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "auth/sas_token.hpp"
#include "common/encoding.hpp"
#include "common/json.hpp"
#include "common/time_format.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/sqlite_test_store.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::device_api {
namespace {

using namespace std::chrono_literals;
using Props = std::vector<std::pair<std::string, std::string>>;

constexpr std::string_view kHost = "hub.example";
constexpr std::string_view kDeviceKey = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=";
constexpr std::string_view kOtherKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::string_view kPolicyKey = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
constexpr std::string_view kQuery = "?api-version=2021-04-12";

class RecordingSink final : public TelemetrySink {
 public:
  Status accept(TelemetryMessage message) override {
    std::lock_guard lock(mutex_);
    if (fail_) return {ErrorCode::ServiceUnavailable, "sink down"};
    messages_.push_back(std::move(message));
    return Status::ok();
  }
  // All or none, as the telemetry log takes a batch.
  Status acceptAll(std::vector<TelemetryMessage> messages) override {
    std::lock_guard lock(mutex_);
    ++batches_;
    if (fail_) return {ErrorCode::ServiceUnavailable, "sink down"};
    for (auto& m : messages) messages_.push_back(std::move(m));
    return Status::ok();
  }
  int batches() const {
    std::lock_guard lock(mutex_);
    return batches_;
  }
  std::vector<TelemetryMessage> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  void setFailing(bool fail) {
    std::lock_guard lock(mutex_);
    fail_ = fail;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<TelemetryMessage> messages_;
  bool fail_ = false;
  int batches_ = 0;
};

class DeviceHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = iothub::testing::openTestSqliteStore(dir_.path() / "hub.db");
    c2d_ = std::make_unique<c2d::CloudToDevice>(*store_, clock_, random_);
    std::vector<store::AccessPolicyRecord> policies{
        {"device", std::string(kPolicyKey), std::string(kPolicyKey), store::kDeviceConnect},
        {"service", std::string(kPolicyKey), std::string(kPolicyKey), store::kServiceConnect}};
    api_ = std::make_unique<DeviceHttpApi>(std::string(kHost), *store_, policies, *c2d_, &sink_,
                                           clock_, random_);
    addDevice("d1");
    addDevice("d2");
  }

  void addDevice(const std::string& id, store::DeviceStatus status = store::DeviceStatus::Enabled) {
    store::DeviceRecord device = iothub::testing::testDevice(id);
    device.status = status;
    device.primary_key = std::string(kDeviceKey);
    device.secondary_key = std::string(kOtherKey);
    iothub::testing::createTestDevice(*store_, device);
  }

  // A token as the Node SDK signs it (docs/protocol.md §1.6), valid for an hour of the fake
  // clock unless told otherwise.
  std::string token(std::string_view device_id, std::string_view key = kDeviceKey,
                    std::optional<std::string_view> policy = std::nullopt,
                    std::chrono::seconds valid = 3600s) {
    auto t = auth::buildSasToken(auth::deviceResource(kHost, device_id), key, policy,
                                 unixSeconds(clock_.now() + valid));
    EXPECT_TRUE(t.isOk());
    return t.isOk() ? *t : "";
  }

  HttpResponse call(std::string method, std::string target, std::string authorization,
                    std::string body = "", HttpHeaders headers = {}) {
    HttpRequest r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.headers = std::move(headers);
    if (!authorization.empty()) r.headers.set("Authorization", std::move(authorization));
    r.body = std::move(body);
    r.remote_address = "127.0.0.1:9";
    return api_->handle(r);
  }

  HttpResponse sendEvent(std::string_view device_id, std::string body, HttpHeaders headers = {}) {
    return call("POST",
                "/devices/" + std::string(device_id) + "/messages/events" + std::string(kQuery),
                token(device_id), std::move(body), std::move(headers));
  }
  HttpResponse receive(std::string_view device_id = "d1") {
    return call(
        "GET", "/devices/" + std::string(device_id) + "/messages/devicebound" + std::string(kQuery),
        token(device_id));
  }
  HttpResponse settle(std::string method, std::string_view lock, std::string suffix = "",
                      std::string query = std::string(kQuery)) {
    HttpHeaders h;
    h.set("If-Match", std::string(lock));
    return call(std::move(method),
                "/devices/d1/messages/devicebound/" + std::string(lock) + suffix + query,
                token("d1"), "", std::move(h));
  }

  void sendC2d(std::string message_id, std::string body, Props properties = {}) {
    c2d::OutgoingMessage m;
    m.device_id = "d1";
    m.message_id = std::move(message_id);
    m.correlation_id = "corr";
    m.user_id = "svc";
    m.content_type = "application/json";
    m.content_encoding = "utf-8";
    m.ack = c2d::Ack::Full;
    m.expiry = clock_.now() + 600s;
    m.properties = std::move(properties);
    m.body = std::move(body);
    ASSERT_TRUE(c2d_->send(std::move(m)).isOk());
  }

  static std::string header(const HttpResponse& r, std::string_view name) {
    const std::string* v = r.headers.find(name);
    return v ? *v : "<absent>";
  }
  // An Azure-shaped error (docs/protocol.md §4.5) with the given status and error name.
  static void expectError(const HttpResponse& r, int status, std::string_view name) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(header(r, "iothub-errorcode"), name);
    auto body = parseJson(r.body);
    ASSERT_TRUE(body.isOk()) << r.body;
    ASSERT_TRUE(body->is_object());
    const json::string* message = findString(body->as_object(), "Message");
    ASSERT_NE(message, nullptr) << r.body;
    EXPECT_TRUE(message->starts_with("ErrorCode:" + std::string(name) + ";")) << *message;
  }
  static std::string lockOf(const HttpResponse& r) {
    std::string etag = header(r, "ETag");
    // What the SDK does: drop the first and the last character (docs/protocol.md §11.4).
    return etag.size() >= 2 ? etag.substr(1, etag.size() - 2) : "";
  }

  iothub::testing::TempDir dir_{"iothub-device-http-test"};
  FakeClock clock_;
  SeededRandom random_{11};
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<c2d::CloudToDevice> c2d_;
  RecordingSink sink_;
  std::unique_ptr<DeviceHttpApi> api_;
};

TEST(DeviceHttpRoutes, Handles) {
  EXPECT_TRUE(DeviceHttpApi::handles("/devices/d1/messages/events?api-version=2021-04-12"));
  EXPECT_TRUE(DeviceHttpApi::handles("/devices/d1/messages/events"));
  EXPECT_TRUE(DeviceHttpApi::handles("/devices/d%201/messages/devicebound?api-version=1"));
  EXPECT_TRUE(DeviceHttpApi::handles("/devices/d1/messages/deviceBound/abc/abandon?x"));
  EXPECT_TRUE(DeviceHttpApi::handles("/devices/d1/messages/devicebound/"));
  EXPECT_TRUE(DeviceHttpApi::handles("/devices//messages/events"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/d1"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/d1?api-version=2021-04-12"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/d1/twin"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/d1/methods"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/d1/messages"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/d1/messages/other"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/query"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/"));
  EXPECT_FALSE(DeviceHttpApi::handles("/twins/d1/messages/events"));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/d1/modules/m/messages/events"));
  EXPECT_FALSE(DeviceHttpApi::handles(""));
  EXPECT_FALSE(DeviceHttpApi::handles("/devices/d1/twin?x=/messages/events"));
}

TEST(DeviceHttpRoutes, Parse) {
  using Kind = DeviceHttpRoute::Kind;
  auto route = parseDeviceHttpRoute("POST", "/devices/d%241/messages/events?api-version=x");
  ASSERT_TRUE(route.isOk()) << route.status().toString();
  EXPECT_EQ(route->kind, Kind::SendEvent);
  EXPECT_EQ(route->device_id, "d$1");

  route = parseDeviceHttpRoute("GET", "/devices/d1/messages/deviceBound?api-version=x");
  ASSERT_TRUE(route.isOk());
  EXPECT_EQ(route->kind, Kind::Receive);

  route = parseDeviceHttpRoute("DELETE", "/devices/d1/messages/devicebound/t-1?api-version=x");
  ASSERT_TRUE(route.isOk());
  EXPECT_EQ(route->kind, Kind::Complete);
  EXPECT_EQ(route->lock_token, "t-1");

  route =
      parseDeviceHttpRoute("DELETE", "/devices/d1/messages/devicebound/t-1?api-version=x&reject");
  ASSERT_TRUE(route.isOk());
  EXPECT_EQ(route->kind, Kind::Reject);

  route =
      parseDeviceHttpRoute("POST", "/devices/d1/messages/devicebound/t-1/abandon?api-version=x");
  ASSERT_TRUE(route.isOk());
  EXPECT_EQ(route->kind, Kind::Abandon);

  EXPECT_EQ(parseDeviceHttpRoute("GET", "/devices/d1/messages/events?api-version=x").code(),
            ErrorCode::MethodNotAllowed);
  EXPECT_EQ(parseDeviceHttpRoute("POST", "/devices/d1/messages/events").code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(parseDeviceHttpRoute("POST", "/devices/d1/messages/events?api-version=").code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(parseDeviceHttpRoute("POST", "/devices/d1/messages/events/x?api-version=x").code(),
            ErrorCode::NotFound);
  EXPECT_EQ(
      parseDeviceHttpRoute("POST", "/devices/d1/messages/devicebound/t/x?api-version=x").code(),
      ErrorCode::NotFound);
  // Device ids follow the registry's rules after decoding (docs/protocol.md §5.2).
  for (std::string id :
       std::vector<std::string>{"a%2Fb", "a%20b", "%C3%A9", "", std::string(129, 'a')}) {
    EXPECT_EQ(
        parseDeviceHttpRoute("POST", "/devices/" + id + "/messages/events?api-version=x").code(),
        ErrorCode::ArgumentInvalid)
        << id;
  }
  EXPECT_EQ(parseDeviceHttpRoute("POST", "/devices/a%zz/messages/events?api-version=x").code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(allowedMethod("/devices/d1/messages/devicebound/t?api-version=x"), "DELETE");
  EXPECT_EQ(allowedMethod("/devices/d1"), "");
}

TEST_F(DeviceHttpTest, DeviceKeyTokensAuthenticate) {
  EXPECT_EQ(sendEvent("d1", "x").status, 204);
  // The secondary key signs too.
  EXPECT_EQ(
      call("POST", "/devices/d1/messages/events" + std::string(kQuery), token("d1", kOtherKey), "y")
          .status,
      204);
  EXPECT_EQ(sink_.messages().size(), 2u);
}

TEST_F(DeviceHttpTest, PolicyTokenNeedsDeviceConnect) {
  EXPECT_EQ(call("POST", "/devices/d1/messages/events" + std::string(kQuery),
                 token("d1", kPolicyKey, "device"), "x")
                .status,
            204);
  expectError(call("POST", "/devices/d1/messages/events" + std::string(kQuery),
                   token("d1", kPolicyKey, "service"), "x"),
              401, "IotHubUnauthorizedAccess");
}

TEST_F(DeviceHttpTest, RefusalsAreAll401AndAlike) {
  std::string path = "/devices/d1/messages/events" + std::string(kQuery);
  std::vector<HttpResponse> refused;
  refused.push_back(call("POST", path, token("d2"), "x"));              // d2's token on d1
  refused.push_back(call("POST", path, token("d1", kPolicyKey), "x"));  // wrong key
  refused.push_back(call("POST", path, token("d1", kDeviceKey, std::nullopt, -1s), "x"));
  addDevice("off", store::DeviceStatus::Disabled);
  refused.push_back(
      call("POST", "/devices/off/messages/events" + std::string(kQuery), token("off"), "x"));
  refused.push_back(
      call("POST", "/devices/ghost/messages/events" + std::string(kQuery), token("ghost"), "x"));
  refused.push_back(
      call("GET", "/devices/d1/messages/devicebound" + std::string(kQuery), token("d2")));
  for (const auto& r : refused) expectError(r, 401, "IotHubUnauthorizedAccess");
  // Azure does not tell an unknown or disabled device from a bad token: one message.
  for (const auto& r : refused) {
    EXPECT_EQ(json::parse(r.body).at("Message"), json::parse(refused[0].body).at("Message"));
  }
  expectError(call("POST", path, "", "x"), 401, "IotHubUnauthorizedAccess");
  expectError(call("POST", path, "SharedAccessSignature " + std::string(5000, 'a'), "x"), 401,
              "IotHubUnauthorizedAccess");
  EXPECT_TRUE(sink_.messages().empty());
  EXPECT_EQ(api_->counters().unauthorized.load(), refused.size() + 2);
}

TEST_F(DeviceHttpTest, TokenExpiresWithTheClock) {
  std::string t = token("d1", kDeviceKey, std::nullopt, 60s);
  std::string path = "/devices/d1/messages/events" + std::string(kQuery);
  EXPECT_EQ(call("POST", path, t, "x").status, 204);
  clock_.advance(61s);
  expectError(call("POST", path, t, "x"), 401, "IotHubUnauthorizedAccess");
}

TEST_F(DeviceHttpTest, RequestErrorsBeforeAuthentication) {
  expectError(call("POST", "/devices/d1/messages/events", token("d1"), "x"), 400,
              "ArgumentInvalid");
  expectError(
      call("POST", "/devices/a%2Fb/messages/events" + std::string(kQuery), token("d1"), "x"), 400,
      "ArgumentInvalid");
  auto r = call("PUT", "/devices/d1/messages/events" + std::string(kQuery), token("d1"), "x");
  expectError(r, 405, "MethodNotAllowed");
  EXPECT_EQ(header(r, "Allow"), "POST");
  expectError(
      call("GET", "/devices/d1/messages/devicebound/a/b/c" + std::string(kQuery), token("d1")), 404,
      "NotFound");
}

TEST_F(DeviceHttpTest, SingleTelemetryReachesTheSink) {
  HttpHeaders h;
  h.fields = {{"iothub-app-temp", "21"},           {"IoTHub-MessageId", "m1"},
              {"IoTHub-CorrelationId", "c1"},      {"iothub-contenttype", "application/json"},
              {"iothub-contentencoding", "utf-8"}, {"dt-subject", "thermostat1"}};
  std::string body("{\"t\":21}\0\xff", 10);
  EXPECT_EQ(sendEvent("d1", body, h).status, 204);
  auto got = sink_.messages();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].device_id, "d1");
  EXPECT_EQ(got[0].source, "http");
  EXPECT_EQ(got[0].body, body);
  EXPECT_EQ(got[0].message_id, "m1");
  EXPECT_EQ(got[0].correlation_id, "c1");
  EXPECT_EQ(got[0].content_type, "application/json");
  EXPECT_EQ(got[0].content_encoding, "utf-8");
  EXPECT_EQ(got[0].subject, "thermostat1");
  EXPECT_EQ(got[0].properties, (Props{{"temp", "21"}}));
  EXPECT_EQ(api_->counters().telemetry_messages.load(), 1u);
  EXPECT_EQ(api_->counters().telemetry_bytes.load(), got[0].size());
}

TEST_F(DeviceHttpTest, TelemetryOverTheLimitIs413) {
  expectError(sendEvent("d1", std::string(kMaxTelemetryMessageBytes + 1, 'x')), 413,
              "MessageTooLarge");
  EXPECT_EQ(sendEvent("d1", std::string(kMaxTelemetryMessageBytes, 'x')).status, 204);
  EXPECT_EQ(sink_.messages().size(), 1u);
}

TEST_F(DeviceHttpTest, BatchTelemetry) {
  HttpHeaders h;
  h.set("Content-Type", std::string(kBatchContentType));
  // Byte for byte as the SDK builds a batch (docs/protocol.md §11.2).
  std::string body = R"([{"body":")" + base64Encode("one") +
                     R"(","properties":{"iothub-app-k":"v"}},{"body":")" + base64Encode("two") +
                     R"("}])";
  EXPECT_EQ(sendEvent("d1", body, h).status, 204);
  auto got = sink_.messages();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].body, "one");
  EXPECT_EQ(got[0].properties, (Props{{"k", "v"}}));
  EXPECT_EQ(got[1].body, "two");
  EXPECT_EQ(got[1].device_id, "d1");
  EXPECT_EQ(sink_.batches(), 1);  // one call: the sink takes the batch whole or not at all
  sink_.setFailing(true);
  expectError(sendEvent("d1", body, h), 503, "ServiceUnavailable");
  EXPECT_EQ(api_->counters().telemetry_refused.load(), 2u);  // both messages of the batch
  sink_.setFailing(false);

  expectError(sendEvent("d1", "[{\"body\":", h), 400, "IotHubFormatError");
  expectError(sendEvent("d1", R"([{"body":"not base64!"}])", h), 400, "ArgumentInvalid");
  std::string big = base64Encode(std::string(kMaxTelemetryBatchBytes / 2 + 1, 'x'));
  expectError(sendEvent("d1", R"([{"body":")" + big + R"("},{"body":")" + big + R"("}])", h), 413,
              "MessageTooLarge");
  EXPECT_EQ(sink_.messages().size(), 2u);
}

TEST_F(DeviceHttpTest, RequestsRecordLastActivityAtMostOncePerMinute) {
  auto activity = [&] {
    auto d = store_->registry().getDevice("d1");
    EXPECT_TRUE(d.isOk());
    return d.isOk() ? d->last_activity_time : SystemTime{};
  };
  clock_.advance(1h);
  SystemTime start = clock_.now();
  ASSERT_NE(activity(), start);
  EXPECT_EQ(sendEvent("d1", "x").status, 204);
  EXPECT_EQ(activity(), start);
  clock_.advance(30s);
  EXPECT_EQ(sendEvent("d1", "x").status, 204);
  EXPECT_EQ(activity(), start);  // within the minute: not written again
  clock_.advance(31s);
  EXPECT_EQ(sendEvent("d1", "x").status, 204);
  EXPECT_EQ(activity(), start + 61s);
}

TEST_F(DeviceHttpTest, SinkFailureIs503) {
  sink_.setFailing(true);
  expectError(sendEvent("d1", "x"), 503, "ServiceUnavailable");
  EXPECT_EQ(api_->counters().telemetry_refused.load(), 1u);
}

TEST_F(DeviceHttpTest, WithoutASinkTelemetryIsCountedAndDropped) {
  DeviceHttpApi api(std::string(kHost), *store_, {}, *c2d_, nullptr, clock_, random_);
  HttpRequest r{"POST", "/devices/d1/messages/events" + std::string(kQuery), {}, "abc", ""};
  r.headers.set("Authorization", token("d1"));
  EXPECT_EQ(api.handle(r).status, 204);
  EXPECT_EQ(api.counters().telemetry_messages.load(), 1u);
  EXPECT_EQ(api.counters().telemetry_dropped.load(), 1u);
  EXPECT_EQ(api.counters().telemetry_bytes.load(), 3u);
}

TEST_F(DeviceHttpTest, ReceiveCompleteCycle) {
  EXPECT_EQ(receive().status, 204);
  std::string body("\x00\x01{\"x\":1}\xfe", 10);
  sendC2d("msg-1", body, {{"color", "blue"}, {"n", "1"}});

  auto r = receive();
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, body);
  std::string etag = header(r, "ETag");
  ASSERT_GE(etag.size(), 2u);
  EXPECT_EQ(etag.front(), '"');
  EXPECT_EQ(etag.back(), '"');
  std::string lock = lockOf(r);
  EXPECT_FALSE(lock.empty());
  EXPECT_EQ(urlEncodeStrict(lock), lock) << "lock tokens go into paths unencoded";
  EXPECT_EQ(header(r, "iothub-messageid"), "msg-1");
  EXPECT_EQ(header(r, "iothub-correlationid"), "corr");
  EXPECT_EQ(header(r, "iothub-userid"), "svc");
  EXPECT_EQ(header(r, "iothub-to"), "/devices/d1/messages/deviceBound");
  EXPECT_EQ(header(r, "iothub-expiry"), formatTimestamp(clock_.now() + 600s));
  EXPECT_EQ(header(r, "iothub-enqueuedtime"), formatTimestamp(clock_.now()));
  EXPECT_NE(header(r, "iothub-sequencenumber"), "<absent>");
  EXPECT_EQ(header(r, "iothub-deliverycount"), "1");
  EXPECT_EQ(header(r, "iothub-ack"), "full");
  EXPECT_EQ(header(r, "Content-Type"), "application/json");
  EXPECT_EQ(header(r, "Content-Encoding"), "utf-8");
  EXPECT_EQ(header(r, "iothub-app-color"), "blue");
  EXPECT_EQ(header(r, "iothub-app-n"), "1");

  // Locked: nothing else to receive meanwhile.
  EXPECT_EQ(receive().status, 204);
  EXPECT_EQ(settle("DELETE", lock).status, 204);
  EXPECT_EQ(receive().status, 204);
  // The lock is gone with the message.
  expectError(settle("DELETE", lock), 412, "DeviceMessageLockLost");
  EXPECT_EQ(api_->counters().receives.load(), 1u);
  EXPECT_EQ(api_->counters().completes.load(), 1u);
  EXPECT_EQ(api_->counters().lock_lost.load(), 1u);
}

TEST_F(DeviceHttpTest, Reject) {
  sendC2d("msg-r", "x");
  auto r = receive();
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(settle("DELETE", lockOf(r), "", std::string(kQuery) + "&reject").status, 204);
  EXPECT_EQ(receive().status, 204);
  EXPECT_EQ(api_->counters().rejects.load(), 1u);
}

TEST_F(DeviceHttpTest, AbandonDeliversAgain) {
  sendC2d("msg-a", "again");
  auto first = receive();
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(settle("POST", lockOf(first), "/abandon").status, 204);
  auto second = receive();
  ASSERT_EQ(second.status, 200);
  EXPECT_EQ(second.body, "again");
  EXPECT_EQ(header(second, "iothub-messageid"), "msg-a");
  EXPECT_EQ(header(second, "iothub-deliverycount"), "2");
  EXPECT_NE(lockOf(second), lockOf(first));
  // The first lock is stale now.
  expectError(settle("DELETE", lockOf(first)), 412, "DeviceMessageLockLost");
  EXPECT_EQ(settle("DELETE", lockOf(second)).status, 204);
  EXPECT_EQ(api_->counters().abandons.load(), 1u);
}

TEST_F(DeviceHttpTest, StaleAndForeignLocks) {
  expectError(settle("DELETE", "00000000-0000-0000-0000-000000000000"), 412,
              "DeviceMessageLockLost");
  expectError(settle("POST", std::string(200, 'a'), "/abandon"), 412, "DeviceMessageLockLost");
  sendC2d("msg-s", "x");
  auto r = receive();
  ASSERT_EQ(r.status, 200);
  // Another device cannot settle d1's message with its own token.
  HttpHeaders h;
  h.set("If-Match", lockOf(r));
  expectError(call("DELETE", "/devices/d2/messages/devicebound/" + lockOf(r) + std::string(kQuery),
                   token("d2"), "", h),
              412, "DeviceMessageLockLost");
  // If-Match naming another token than the path.
  h.set("If-Match", "\"other\"");
  expectError(call("DELETE", "/devices/d1/messages/devicebound/" + lockOf(r) + std::string(kQuery),
                   token("d1"), "", h),
              412, "PreconditionFailed");
  // The quoted form of the right token is fine.
  h.set("If-Match", "\"" + lockOf(r) + "\"");
  EXPECT_EQ(call("DELETE", "/devices/d1/messages/devicebound/" + lockOf(r) + std::string(kQuery),
                 token("d1"), "", h)
                .status,
            204);
}

TEST(DeviceHttpReceiveResponse, UnwritableHeadersAreLeftOut) {
  c2d::DeviceMessage m;
  m.lock_token = "tok";
  m.message_id = "bad\r\nInjected: 1";
  m.properties = {{"ok", "v"}, {"bad name", "v"}, {"nl", "a\nb"}, {"tab", "a\tb"}};
  HttpResponse r = receiveResponse(m);
  EXPECT_EQ(r.headers.find("iothub-messageid"), nullptr);
  EXPECT_EQ(r.headers.find("Injected"), nullptr);
  ASSERT_NE(r.headers.find("iothub-app-ok"), nullptr);
  EXPECT_EQ(r.headers.find("iothub-app-bad name"), nullptr);
  EXPECT_EQ(r.headers.find("iothub-app-nl"), nullptr);
  ASSERT_NE(r.headers.find("iothub-app-tab"), nullptr);
  EXPECT_EQ(*r.headers.find("ETag"), "\"tok\"");
}

}  // namespace
}  // namespace iothub::device_api
