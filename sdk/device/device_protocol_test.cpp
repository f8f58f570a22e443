#include "device_protocol.hpp"

#include <gtest/gtest.h>

#include <stdexcept>

namespace iothub::device::detail {
namespace {

TEST(DeviceProtocolTest, UserNameCarriesApiVersionAndEncodedClientType) {
  EXPECT_EQ(mqttUserName("myhub.example", "dev1"),
            "myhub.example/dev1/?api-version=2021-04-12&DeviceClientType=iothub-cpp-device%2F0.1");
}

// Topic names and their parsing are tested in src/mqtt/azure_topics_test.cpp.
TEST(DeviceProtocolTest, DesiredUpdateTakesTheVersionFromTopicOrBody) {
  auto topic =
      mqtt::azure::parseDesiredPatchTopic("$iothub/twin/PATCH/properties/desired/?$version=15");
  ASSERT_TRUE(topic);
  EXPECT_EQ(topic->version, 15);
  auto update = parseDesiredUpdate(*topic, R"({"color":"red","$version":15})");
  ASSERT_TRUE(update);
  EXPECT_EQ(update->version, 15);
  EXPECT_EQ(json::serialize(update->patch), R"({"color":"red","$version":15})");

  // Without $version in the topic, the body's is used.
  auto bare = mqtt::azure::parseDesiredPatchTopic("$iothub/twin/PATCH/properties/desired/");
  ASSERT_TRUE(bare);
  EXPECT_FALSE(bare->version);
  update = parseDesiredUpdate(*bare, R"({"route":null,"$version":8})");
  ASSERT_TRUE(update);
  EXPECT_EQ(update->version, 8);

  EXPECT_FALSE(parseDesiredUpdate(*bare, R"({"route":null})"));
  EXPECT_FALSE(parseDesiredUpdate(*topic, "[1]"));
  EXPECT_FALSE(parseDesiredUpdate(*topic, "{"));
}

TEST(DeviceProtocolTest, TwinErrorComesFromErrorCodeWhateverTheStatus) {
  EXPECT_TRUE(twinResponseStatus(200, R"({"desired":{},"reported":{}})").isOk());
  EXPECT_TRUE(twinResponseStatus(204, "").isOk());

  Status bad = twinResponseStatus(400, R"({"errorCode":400004,"message":"Key has a dot"})");
  EXPECT_EQ(bad.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(bad.message().find("Key has a dot"), std::string::npos);
  EXPECT_NE(bad.message().find("errorCode 400004"), std::string::npos);
  EXPECT_NE(bad.message().find("status 400"), std::string::npos);

  // Like Node, a body with a non-zero errorCode fails even under a 2xx status.
  EXPECT_EQ(twinResponseStatus(200, R"({"errorCode":429001,"message":"slow down"})").code(),
            ErrorCode::Throttled);
  // Unlike Node, an error status without a body fails too, with the status' meaning.
  EXPECT_EQ(twinResponseStatus(500, "").code(), ErrorCode::ServerError);
  EXPECT_EQ(twinResponseStatus(413, "not json").code(), ErrorCode::MessageTooLarge);
  // An unknown six-digit code falls back to the status.
  EXPECT_EQ(twinResponseStatus(429, R"({"errorCode":429999})").code(), ErrorCode::Throttled);
}

TEST(DeviceProtocolTest, TwinGetAnswerMustHaveDesiredAndReported) {
  auto twin = twinFromResponse(200, R"({"desired":{"$version":1},"reported":{"$version":2}})");
  ASSERT_TRUE(twin) << twin.status().toString();
  EXPECT_EQ(json::serialize(*twin), R"({"desired":{"$version":1},"reported":{"$version":2}})");
  EXPECT_EQ(twinFromResponse(200, "").code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(twinFromResponse(200, R"({"desired":{}})").code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(twinFromResponse(404, R"({"errorCode":404001,"message":"gone"})").code(),
            ErrorCode::DeviceNotFound);
}

TEST(DeviceProtocolTest, ReportedPatchAnswerNeedsVersion) {
  mqtt::azure::TwinResponseTopic topic{204, "1", 7};
  auto version = reportedVersionFromResponse(topic, "");
  ASSERT_TRUE(version);
  EXPECT_EQ(*version, 7);
  topic.version.reset();
  EXPECT_EQ(reportedVersionFromResponse(topic, "").code(), ErrorCode::IotHubFormatError);
  topic.status = 400;
  EXPECT_EQ(reportedVersionFromResponse(topic, R"({"errorCode":400004,"message":"x"})").code(),
            ErrorCode::ArgumentInvalid);
}

TEST(DeviceProtocolTest, MethodAnswers) {
  MethodHandler echo = [](const json::value& payload) {
    return MethodResponse{201, json::object{{"got", payload}}};
  };
  auto answer = answerMethod(&echo, "echo", R"({"a":1})");
  EXPECT_EQ(answer.status, 201);
  EXPECT_EQ(answer.payload, R"({"got":{"a":1}})");

  answer = answerMethod(&echo, "echo", "");
  EXPECT_EQ(answer.payload, R"({"got":null})");

  answer = answerMethod(&echo, "echo", "{not json");
  EXPECT_EQ(answer.status, 400);
  EXPECT_NE(answer.payload.find("Invalid request format"), std::string::npos);

  answer = answerMethod(nullptr, "reboot", "null");
  EXPECT_EQ(answer.status, 501);
  EXPECT_EQ(answer.payload, R"({"message":"Method 'reboot' is not implemented by this device"})");

  MethodHandler throws = [](const json::value& payload) -> MethodResponse {
    return MethodResponse{200, payload.as_object().at("missing")};
  };
  answer = answerMethod(&throws, "strict", "[]");
  EXPECT_EQ(answer.status, 500);
  EXPECT_NE(answer.payload.find("Method 'strict' failed"), std::string::npos);

  MethodHandler no_payload = [](const json::value&) { return MethodResponse{}; };
  answer = answerMethod(&no_payload, "ping", "null");
  EXPECT_EQ(answer.status, 200);
  EXPECT_EQ(answer.payload, "null");
}

TEST(DeviceProtocolTest, ParsesHostPort) {
  auto parsed = parseHostPort("127.0.0.1:9883", 8883);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->host, "127.0.0.1");
  EXPECT_EQ(parsed->port, 9883);
  EXPECT_EQ(parsed->text, "127.0.0.1:9883");

  parsed = parseHostPort("myhub.example", 8883);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->port, 8883);

  parsed = parseHostPort("[::1]:1883", 8883);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->host, "::1");
  EXPECT_EQ(parsed->text, "[::1]:1883");

  EXPECT_FALSE(parseHostPort("", 8883));
  EXPECT_FALSE(parseHostPort(":8883", 8883));
  EXPECT_FALSE(parseHostPort("host:0", 8883));
  EXPECT_FALSE(parseHostPort("host:65536", 8883));
  EXPECT_FALSE(parseHostPort("host:x", 8883));
  EXPECT_FALSE(parseHostPort("[::1", 8883));

  EXPECT_EQ(hostWithoutPort("myhub.example:8883"), "myhub.example");
  EXPECT_EQ(hostWithoutPort("myhub.example"), "myhub.example");
}

}  // namespace
}  // namespace iothub::device::detail
