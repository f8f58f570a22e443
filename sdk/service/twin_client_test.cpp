#include "test_helpers.hpp"
#include "iothub/service/twin_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fake_http_server.hpp"

namespace iothub::service {
namespace {

using testing::parse;
using testing::azureError;


using testing::CannedResponse;
using testing::FakeHttpServer;
using ::testing::HasSubstr;

using testing::kConnectionString;

// Shaped like the portal export of docs/protocol.md §6.1.
constexpr std::string_view kTwinJson =
    R"({"deviceId":"d 1","etag":"AAAAAAAAAAQ=","deviceEtag":"OTA4NTk1Mjg=","status":"enabled",)"
    R"("connectionState":"Disconnected","cloudToDeviceMessageCount":0,"authenticationType":"sas",)"
    R"("modelId":"","version":26,"tags":{"site":"b1"},)"
    R"("properties":{"desired":{"rate":17,"$metadata":{"$lastUpdated":"2023-01-02T21:42:14.7050295Z",)"
    R"("$lastUpdatedVersion":4,"rate":{"$lastUpdated":"2023-01-02T21:42:14.7050295Z","$lastUpdatedVersion":4}},)"
    R"("$version":4},)"
    R"("reported":{"rate":30,"$metadata":{"$lastUpdated":"2023-01-02T21:43:31.7177262Z",)"
    R"("rate":{"$lastUpdated":"2023-01-02T21:43:25.4205283Z"}},"$version":9}}})";

json::object parseObject(std::string_view text) {
  json::value v = parse(text);
  EXPECT_TRUE(v.is_object()) << text;
  return v.is_object() ? v.get_object() : json::object();
}

class TwinClientTest : public ::testing::Test {
 protected:
  TwinClientTest() {
    ServiceClientOptions options;
    options.endpoint = server_.endpoint();
    options.timeout = std::chrono::seconds{10};
    auto client = TwinClient::fromConnectionString(kConnectionString, options);
    EXPECT_TRUE(client) << client.status().toString();
    if (client) client_ = std::make_unique<TwinClient>(std::move(*client));
  }

  testing::RecordedRequest onlyRequest() {
    auto requests = server_.requests();
    EXPECT_EQ(requests.size(), 1u);
    return requests.empty() ? testing::RecordedRequest{} : requests.back();
  }

  FakeHttpServer server_;
  std::unique_ptr<TwinClient> client_;
};

TEST_F(TwinClientTest, GetRequestsTheEncodedTwinPath) {
  server_.reply(200, std::string(kTwinJson));
  auto twin = client_->get("d 1");
  ASSERT_TRUE(twin) << twin.status().toString();
  auto r = onlyRequest();
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/twins/d%201?api-version=2021-04-12");
  EXPECT_EQ(r.header("if-match"), std::nullopt);
  EXPECT_EQ(r.header("content-type"), std::nullopt);
  EXPECT_TRUE(r.body.empty());
}

TEST_F(TwinClientTest, GetParsesSectionsWithVersionsAndMetadata) {
  server_.reply(200, std::string(kTwinJson));
  auto twin = client_->get("d 1");
  ASSERT_TRUE(twin) << twin.status().toString();
  EXPECT_EQ(twin->device_id, "d 1");
  EXPECT_EQ(twin->etag, "AAAAAAAAAAQ=");
  EXPECT_EQ(twin->version, 26);
  EXPECT_EQ(twin->tags, parseObject(R"({"site":"b1"})"));
  json::value whole = parse(kTwinJson);
  EXPECT_EQ(twin->desired, whole.at("properties").at("desired").as_object());
  EXPECT_EQ(twin->reported, whole.at("properties").at("reported").as_object());
  EXPECT_EQ(twin->desired.at("$version"), 4);
  EXPECT_EQ(twin->reported.at("$metadata").at("rate").at("$lastUpdated"),
            "2023-01-02T21:43:25.4205283Z");
  EXPECT_EQ(twin->raw, whole.as_object());
}

TEST_F(TwinClientTest, UpdatePatchesWithAQuotedIfMatch) {
  server_.reply(200, std::string(kTwinJson));
  server_.reply(200, std::string(kTwinJson));
  server_.reply(200, std::string(kTwinJson));
  json::object patch = parseObject(R"({"tags":{"b":2},"properties":{"desired":{"y":2}}})");
  ASSERT_TRUE(client_->update("d 1", patch));
  ASSERT_TRUE(client_->update("d1", patch, "AAAAAAAAAAI="));
  ASSERT_TRUE(client_->update("d1", patch, "\"AAAAAAAAAAI=\""));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].method, "PATCH");
  EXPECT_EQ(requests[0].target, "/twins/d%201?api-version=2021-04-12");
  EXPECT_EQ(requests[0].header("if-match"), "\"*\"");
  EXPECT_EQ(requests[0].header("content-type"), "application/json; charset=utf-8");
  // Byte for byte what the Node SDK sends (docs/protocol.md §4.4).
  EXPECT_EQ(requests[0].body, R"({"tags":{"b":2},"properties":{"desired":{"y":2}}})");
  EXPECT_EQ(requests[1].target, "/twins/d1?api-version=2021-04-12");
  EXPECT_EQ(requests[1].header("if-match"), "\"AAAAAAAAAAI=\"");
  EXPECT_EQ(requests[2].header("if-match"), "\"AAAAAAAAAAI=\"");
}

TEST_F(TwinClientTest, UpdateReturnsTheFullTwin) {
  server_.reply(200, std::string(kTwinJson));
  auto twin = client_->update("d 1", parseObject(R"({"tags":{"site":"b1"}})"));
  ASSERT_TRUE(twin) << twin.status().toString();
  EXPECT_EQ(twin->version, 26);
  EXPECT_EQ(twin->tags, parseObject(R"({"site":"b1"})"));
}

TEST_F(TwinClientTest, UpdateSendsNullsThatDeleteMembers) {
  server_.reply(200, std::string(kTwinJson));
  ASSERT_TRUE(
      client_->update("d1", parseObject(R"({"tags":null,"properties":{"desired":{"x":null}}})")));
  EXPECT_EQ(onlyRequest().body, R"({"tags":null,"properties":{"desired":{"x":null}}})");
}

TEST_F(TwinClientTest, ReplacePutsTheTwinWithIfMatch) {
  server_.reply(200, std::string(kTwinJson));
  server_.reply(200, std::string(kTwinJson));
  json::object replacement = parseObject(R"({"tags":{"a":1},"properties":{"desired":{"x":1}}})");
  auto twin = client_->replace("d 1", replacement);
  ASSERT_TRUE(twin) << twin.status().toString();
  EXPECT_EQ(twin->etag, "AAAAAAAAAAQ=");
  ASSERT_TRUE(client_->replace("d 1", replacement, "AAAAAAAAAAQ="));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "PUT");
  EXPECT_EQ(requests[0].target, "/twins/d%201?api-version=2021-04-12");
  EXPECT_EQ(requests[0].header("if-match"), "\"*\"");
  EXPECT_EQ(requests[0].header("content-type"), "application/json; charset=utf-8");
  EXPECT_EQ(requests[0].body, R"({"tags":{"a":1},"properties":{"desired":{"x":1}}})");
  EXPECT_EQ(requests[1].header("if-match"), "\"AAAAAAAAAAQ=\"");
}

TEST_F(TwinClientTest, StaleEtagIsPreconditionFailed) {
  server_.reply(412, azureError("PreconditionFailed", "Precondition failed: etag mismatch."));
  server_.reply(412, azureError("PreconditionFailed", "Precondition failed: etag mismatch."));
  auto updated = client_->update("d1", parseObject(R"({"tags":{"a":1}})"), "old");
  EXPECT_EQ(updated.code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(updated.status().message(), "Precondition failed: etag mismatch. (HTTP 412)");
  EXPECT_EQ(client_->replace("d1", json::object{}, "old").code(), ErrorCode::PreconditionFailed);
}

TEST_F(TwinClientTest, UnknownDeviceIsDeviceNotFound) {
  server_.reply(404, azureError("DeviceNotFound", "Device nope does not exist."));
  auto twin = client_->get("nope");
  EXPECT_EQ(twin.code(), ErrorCode::DeviceNotFound);
  EXPECT_THAT(twin.status().message(), HasSubstr("Device nope does not exist."));
}

TEST_F(TwinClientTest, RejectedPatchIsArgumentInvalid) {
  server_.reply(400, azureError("ArgumentInvalid", "desired must be under properties"));
  auto twin = client_->update("d1", parseObject(R"({"desired":{"x":1}})"));
  EXPECT_EQ(twin.code(), ErrorCode::ArgumentInvalid);
  EXPECT_THAT(twin.status().message(), HasSubstr("desired must be under properties"));
}

TEST_F(TwinClientTest, ReplyThatIsNotATwinIsIotHubFormatError) {
  server_.reply(200, R"({"etag":"x"})");
  server_.reply(200, R"({"deviceId":"d1","tags":[1]})");
  CannedResponse text;
  text.body = "hello";
  text.content_type = "text/plain";
  server_.reply(text);
  server_.reply(204);
  EXPECT_EQ(client_->get("d1").code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(client_->get("d1").code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(client_->get("d1").code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(client_->get("d1").code(), ErrorCode::IotHubFormatError);
}

TEST_F(TwinClientTest, EmptyDeviceIdIsRejectedWithoutARequest) {
  EXPECT_EQ(client_->get("").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->update("", json::object{}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->replace("", json::object{}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

TEST(TwinTest, AbsentOrNullSectionsAreEmpty) {
  auto twin =
      Twin::fromJson(parse(R"({"deviceId":"d1","tags":null,"properties":{"desired":null}})"));
  ASSERT_TRUE(twin) << twin.status().toString();
  EXPECT_EQ(twin->device_id, "d1");
  EXPECT_EQ(twin->etag, "");
  EXPECT_EQ(twin->version, 0);
  EXPECT_TRUE(twin->tags.empty());
  EXPECT_TRUE(twin->desired.empty());
  EXPECT_TRUE(twin->reported.empty());
}

TEST(TwinTest, WrongTypesAreIotHubFormatError) {
  for (std::string_view text :
       {R"([])", R"({"deviceId":1})", R"({"deviceId":"d","etag":1})",
        R"({"deviceId":"d","version":"1"})", R"({"deviceId":"d","version":1.5})",
        R"({"deviceId":"d","properties":[]})", R"({"deviceId":"d","properties":{"desired":1}})",
        R"({"deviceId":"d","properties":{"reported":"x"}})"}) {
    auto twin = Twin::fromJson(parse(text));
    EXPECT_EQ(twin.code(), ErrorCode::IotHubFormatError) << text;
  }
  auto named = Twin::fromJson(parse(R"({"deviceId":"d","properties":{"desired":1}})"));
  EXPECT_THAT(named.status().message(), HasSubstr("properties.desired"));
}

}  // namespace
}  // namespace iothub::service
