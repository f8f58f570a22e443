#include "test_helpers.hpp"
#include "iothub/service/method_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <future>

#include "fake_http_server.hpp"

namespace iothub::service {
namespace {

using testing::parse;
using testing::azureError;


using std::chrono::seconds;
using testing::CannedResponse;
using testing::FakeHttpServer;
using ::testing::HasSubstr;

using testing::kConnectionString;

// Direct-method errors nest a JSON object in Message (docs/protocol.md §4.5 shape 2, §7.2).
constexpr std::string_view kNotOnlineBody =
    R"({"Message":"{\"errorCode\":404103,\"trackingId\":\"5f1b\",\"message\":\"Timed out waiting for device to connect.\",)"
    R"(\"info\":{\"timeout\":\"00:00:00\"},\"timestampUtc\":\"2018-11-12T19:35:33.5194825Z\"}","ExceptionMessage":""})";
constexpr std::string_view kGatewayTimeoutBody =
    R"({"Message":"{\"errorCode\":504101,\"trackingId\":\"5f1c\",\"message\":\"Timed out waiting for the response from device.\",)"
    R"(\"info\":{},\"timestampUtc\":\"2018-11-12T19:35:33.5194825Z\"}","ExceptionMessage":""})";

class MethodClientTest : public ::testing::Test {
 protected:
  // The transport's own deadline is deliberately short: method calls must not be bound by it.
  MethodClientTest() {
    ServiceClientOptions options;
    options.endpoint = server_.endpoint();
    options.timeout = seconds{1};
    auto client = MethodClient::fromConnectionString(kConnectionString, options);
    EXPECT_TRUE(client) << client.status().toString();
    if (client) client_ = std::make_unique<MethodClient>(std::move(*client));
  }

  testing::RecordedRequest onlyRequest() {
    auto requests = server_.requests();
    EXPECT_EQ(requests.size(), 1u);
    return requests.empty() ? testing::RecordedRequest{} : requests.back();
  }

  FakeHttpServer server_;
  std::unique_ptr<MethodClient> client_;
};

TEST_F(MethodClientTest, InvokePostsAllFourFieldsWithDefaults) {
  server_.reply(200, R"({"status":200,"payload":{"ok":true}})");
  auto response = client_->invoke("d 1", MethodRequest{"reboot"});
  ASSERT_TRUE(response) << response.status().toString();
  auto r = onlyRequest();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/twins/d%201/methods?api-version=2021-04-12");
  EXPECT_EQ(r.header("content-type"), "application/json; charset=utf-8");
  EXPECT_EQ(r.header("if-match"), std::nullopt);
  EXPECT_EQ(
      r.body,
      R"({"methodName":"reboot","payload":null,"responseTimeoutInSeconds":30,"connectTimeoutInSeconds":0})");
}

TEST_F(MethodClientTest, InvokeSendsPayloadAndTimeouts) {
  server_.reply(200, R"({"status":200,"payload":null})");
  MethodRequest request{"setRate", parse(R"({"a":1,"b":[true,"x"]})"), seconds{45}, seconds{15}};
  ASSERT_TRUE(client_->invoke("d1", request));
  EXPECT_EQ(onlyRequest().body, R"({"methodName":"setRate","payload":{"a":1,"b":[true,"x"]},)"
                                R"("responseTimeoutInSeconds":45,"connectTimeoutInSeconds":15})");
}

TEST_F(MethodClientTest, InvokeAcceptsAScalarPayload) {
  server_.reply(200, R"({"status":200})");
  ASSERT_TRUE(client_->invoke("d1", MethodRequest{"echo", json::value("hi")}));
  EXPECT_EQ(parse(onlyRequest().body).at("payload"), "hi");
}

TEST_F(MethodClientTest, ResponseCarriesTheDeviceStatusAndPayload) {
  server_.reply(200, R"({"status":200,"payload":{"uptime":12,"tags":["a"]}})");
  server_.reply(200, R"({"status":500,"payload":"disk full"})");
  server_.reply(200, R"({"status":204})");
  auto ok = client_->invoke("d1", MethodRequest{"stats"});
  ASSERT_TRUE(ok) << ok.status().toString();
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->payload, parse(R"({"uptime":12,"tags":["a"]})"));
  // The hub answers 200 whatever status the device chose; that is not an error.
  auto failed = client_->invoke("d1", MethodRequest{"stats"});
  ASSERT_TRUE(failed) << failed.status().toString();
  EXPECT_EQ(failed->status, 500);
  EXPECT_EQ(failed->payload, "disk full");
  auto empty = client_->invoke("d1", MethodRequest{"stats"});
  ASSERT_TRUE(empty) << empty.status().toString();
  EXPECT_EQ(empty->status, 204);
  EXPECT_TRUE(empty->payload.is_null());
}

TEST_F(MethodClientTest, OfflineDeviceIsDeviceNotOnline) {
  CannedResponse response;
  response.status = 404;
  response.body = std::string(kNotOnlineBody);
  response.headers = {{"iothub-errorcode", "DeviceNotOnline"}};
  server_.reply(response);
  auto result = client_->invoke("d1", MethodRequest{"reboot"});
  EXPECT_EQ(result.code(), ErrorCode::DeviceNotOnline);
  EXPECT_EQ(result.status().message(), "Timed out waiting for device to connect. (HTTP 404)");
  EXPECT_FALSE(isTransportFailure(result.status()));
}

TEST_F(MethodClientTest, SilentDeviceIsGatewayTimeout) {
  server_.reply(504, std::string(kGatewayTimeoutBody));
  auto result = client_->invoke("d1", MethodRequest{"reboot"});
  EXPECT_EQ(result.code(), ErrorCode::GatewayTimeout);
  EXPECT_EQ(result.status().message(),
            "Timed out waiting for the response from device. (HTTP 504)");
}

TEST_F(MethodClientTest, UnknownDeviceIsDeviceNotFound) {
  server_.reply(404, azureError("DeviceNotFound", "Device nope does not exist."));
  auto result = client_->invoke("nope", MethodRequest{"reboot"});
  EXPECT_EQ(result.code(), ErrorCode::DeviceNotFound);
  EXPECT_THAT(result.status().message(), HasSubstr("Device nope does not exist."));
}

TEST_F(MethodClientTest, TimeoutOutOfRangeIsArgumentInvalid) {
  server_.reply(400, azureError("ArgumentInvalid", "responseTimeoutInSeconds must be 5 to 300"));
  server_.reply(
      400,
      R"({"Message":"{\"errorCode\":400004,\"message\":\"bad method name\"}","ExceptionMessage":""})");
  auto result = client_->invoke("d1", MethodRequest{"reboot", nullptr, seconds{1}});
  EXPECT_EQ(result.code(), ErrorCode::ArgumentInvalid);
  EXPECT_THAT(result.status().message(), HasSubstr("5 to 300"));
  auto nested = client_->invoke("d1", MethodRequest{"re boot"});
  EXPECT_EQ(nested.code(), ErrorCode::ArgumentInvalid);
  EXPECT_THAT(nested.status().message(), HasSubstr("bad method name"));
}

TEST_F(MethodClientTest, ReplyWithoutIntegerStatusIsIotHubFormatError) {
  for (std::string body : {R"({"payload":1})", R"({"status":"200"})", R"({"status":2.5})",
                           R"({"status":9999999999})", R"([200])"}) {
    server_.reply(200, body);
    EXPECT_EQ(client_->invoke("d1", MethodRequest{"m"}).code(), ErrorCode::IotHubFormatError)
        << body;
  }
  server_.reply(200);  // empty body
  EXPECT_EQ(client_->invoke("d1", MethodRequest{"m"}).code(), ErrorCode::IotHubFormatError);
}

TEST_F(MethodClientTest, InvalidArgumentsAreRejectedWithoutARequest) {
  EXPECT_EQ(client_->invoke("", MethodRequest{"m"}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->invoke("d1", MethodRequest{""}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->invoke("d1", MethodRequest{"m", nullptr, seconds{-1}}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->invoke("d1", MethodRequest{"m", nullptr, seconds{30}, seconds{-5}}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->invoke("d1", MethodRequest{"m", nullptr, seconds{30}, seconds{100000}}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

TEST(MethodRequestTest, HttpDeadlineExceedsTheMethodTimeouts) {
  auto defaults = MethodClient::buildRequest("d1", MethodRequest{"m"});
  ASSERT_TRUE(defaults) << defaults.status().toString();
  ASSERT_TRUE(defaults->timeout.has_value());
  EXPECT_GT(*defaults->timeout, seconds{30});
  EXPECT_EQ(*defaults->timeout, seconds{30} + MethodClient::kMethodTimeoutSlack);

  auto both =
      MethodClient::buildRequest("d1", MethodRequest{"m", nullptr, seconds{300}, seconds{300}});
  ASSERT_TRUE(both) << both.status().toString();
  EXPECT_EQ(*both->timeout, seconds{600} + MethodClient::kMethodTimeoutSlack);
  EXPECT_EQ(both->path, "/twins/d1/methods");
}

TEST_F(MethodClientTest, InvokeOutlastsTheTransportDefaultTimeout) {
  CannedResponse held;
  held.body = R"({"status":200,"payload":"done"})";
  held.then = CannedResponse::Then::HoldUntilReleased;
  server_.reply(held);
  auto pending = std::async(std::launch::async, [&] {
    return client_->invoke("d1", MethodRequest{"slowOp", nullptr, seconds{5}});
  });
  ASSERT_TRUE(server_.waitForRequests(1));
  // Past the transport's 1 s default, the call must still be waiting for the hub.
  EXPECT_EQ(pending.wait_for(std::chrono::milliseconds{1500}), std::future_status::timeout);
  server_.release();
  auto response = pending.get();
  ASSERT_TRUE(response) << response.status().toString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->payload, "done");
}

}  // namespace
}  // namespace iothub::service
