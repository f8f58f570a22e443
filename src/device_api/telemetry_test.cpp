#include "device_api/telemetry.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "common/encoding.hpp"

namespace iothub::device_api {
namespace {

using Props = std::vector<std::pair<std::string, std::string>>;

TEST(MqttTelemetryTopic, NodeCapture) {
  // Captured from the Node SDK (docs/protocol.md §3.10): system keys percent-encoded.
  auto m = parseMqttTelemetryTopic(
      "dev1",
      "devices/dev1/messages/events/"
      "%24.mid=m1&%24.ct=application%2Fjson&%24.ce=utf-8&alert=high%20temp&k%26%3D=v%2F%3F");
  ASSERT_TRUE(m.isOk()) << m.status().toString();
  EXPECT_EQ(m->device_id, "dev1");
  EXPECT_EQ(m->source, "mqtt");
  EXPECT_EQ(m->message_id, "m1");
  EXPECT_EQ(m->content_type, "application/json");
  EXPECT_EQ(m->content_encoding, "utf-8");
  EXPECT_EQ(m->properties, (Props{{"alert", "high temp"}, {"k&=", "v/?"}}));
}

TEST(MqttTelemetryTopic, EverySystemKeyLiteralOrEncoded) {
  auto m = parseMqttTelemetryTopic(
      "d-1",
      "devices/d-1/messages/events/$.mid=a&$.cid=b&%24.uid=c&$.to=%2Fx&$.ct=t&$.ce=e&"
      "$.ifid=dtmi%3Ax%3B1&$.exp=2030-01-01T00%3A00%3A00Z&$.sub=comp&$.on=out");
  ASSERT_TRUE(m.isOk()) << m.status().toString();
  EXPECT_EQ(m->message_id, "a");
  EXPECT_EQ(m->correlation_id, "b");
  EXPECT_EQ(m->user_id, "c");
  EXPECT_EQ(m->to, "/x");
  EXPECT_EQ(m->content_type, "t");
  EXPECT_EQ(m->content_encoding, "e");
  EXPECT_EQ(m->interface_id, "dtmi:x;1");
  EXPECT_EQ(m->expiry, "2030-01-01T00:00:00Z");
  EXPECT_EQ(m->subject, "comp");
  // Not a system key iothub interprets: kept as an application property.
  EXPECT_EQ(m->properties, (Props{{"$.on", "out"}}));
}

TEST(MqttTelemetryTopic, EmptyBagsAndTrailingSlash) {
  for (std::string topic :
       {"devices/d/messages/events", "devices/d/messages/events/", "devices/d/messages/events//"}) {
    auto m = parseMqttTelemetryTopic("d", topic);
    ASSERT_TRUE(m.isOk()) << topic << ": " << m.status().toString();
    EXPECT_TRUE(m->properties.empty()) << topic;
  }
  auto m = parseMqttTelemetryTopic("d", "devices/d/messages/events/a=1/");
  ASSERT_TRUE(m.isOk());
  EXPECT_EQ(m->properties, (Props{{"a", "1"}}));
}

TEST(MqttTelemetryTopic, KeyWithoutValueEmptyPairsAndRepeats) {
  auto m = parseMqttTelemetryTopic("d", "devices/d/messages/events/flag&&a=1&=x&a=2&b=");
  ASSERT_TRUE(m.isOk()) << m.status().toString();
  // The repeated key keeps its first place and its last value; "=x" names nothing.
  EXPECT_EQ(m->properties, (Props{{"flag", ""}, {"a", "2"}, {"b", ""}}));
}

TEST(MqttTelemetryTopic, ValueKeepsEverythingAfterTheFirstEquals) {
  auto m = parseMqttTelemetryTopic("d", "devices/d/messages/events/k=a=b");
  ASSERT_TRUE(m.isOk());
  EXPECT_EQ(m->properties, (Props{{"k", "a=b"}}));
}

TEST(MqttTelemetryTopic, Refusals) {
  auto bad = [](std::string_view id, std::string_view topic) {
    auto m = parseMqttTelemetryTopic(id, topic);
    EXPECT_FALSE(m.isOk()) << topic;
    if (!m.isOk()) {
      EXPECT_EQ(m.code(), ErrorCode::ArgumentInvalid) << topic;
    }
    return m.isOk() ? std::string() : m.status().message();
  };
  EXPECT_NE(bad("d", "devices/d/messages/events/a=%4"), "");
  EXPECT_NE(bad("d", "devices/d/messages/events/a%zz=1").find("percent"), std::string::npos);
  bad("d", "devices/other/messages/events/");
  bad("d", "devices/d/messages/eventsX");
  bad("d", "devices/d/messages/devicebound/");
  bad("", "devices//messages/events/");
  std::string longest =
      "devices/d/messages/events/k=" + std::string(kMaxPropertyBagLength - 2, 'v');
  EXPECT_TRUE(parseMqttTelemetryTopic("d", longest).isOk());
  EXPECT_NE(bad("d", longest + "v").find("at most"), std::string::npos);
}

TEST(MqttTelemetryTopic, RoundTripsStrictlyEncodedProperties) {
  Props props{{"a b", "c&d"}, {"é", "\x01\xff"}, {"x=y", "/?#%"}};
  std::string topic = "devices/d/messages/events/";
  for (const auto& [k, v] : props) topic += urlEncodeStrict(k) + "=" + urlEncodeStrict(v) + "&";
  auto m = parseMqttTelemetryTopic("d", topic);
  ASSERT_TRUE(m.isOk()) << m.status().toString();
  EXPECT_EQ(m->properties, props);
}

TEST(HttpTelemetry, HeadersBecomeProperties) {
  HttpHeaders h;
  h.fields = {{"iothub-app-temp", "21"},
              {"IOTHUB-APP-Mixed", "x"},
              {"IoTHub-MessageId", "m1"},
              {"IoTHub-CorrelationId", "c1"},
              {"IoTHub-UserId", "u1"},
              {"IoTHub-To", "/t"},
              {"IoTHub-Expiry", "2030"},
              {"IoTHub-Ack", "full"},
              {"iothub-contenttype", "application/json"},
              {"iothub-contentencoding", "utf-8"},
              {"iothub-interface-id", "dtmi:a;1"},
              {"dt-subject", "thermostat1"},
              {"Authorization", "SharedAccessSignature secret"},
              {"iothub-app-", "nameless"}};
  auto m = telemetryFromHttp("d1", h, std::string("\0\1body", 6));
  ASSERT_TRUE(m.isOk()) << m.status().toString();
  EXPECT_EQ(m->source, "http");
  EXPECT_EQ(m->body, std::string("\0\1body", 6));
  EXPECT_EQ(m->message_id, "m1");
  EXPECT_EQ(m->correlation_id, "c1");
  EXPECT_EQ(m->user_id, "u1");
  EXPECT_EQ(m->to, "/t");
  EXPECT_EQ(m->expiry, "2030");
  EXPECT_EQ(m->content_type, "application/json");
  EXPECT_EQ(m->content_encoding, "utf-8");
  EXPECT_EQ(m->interface_id, "dtmi:a;1");
  EXPECT_EQ(m->subject, "thermostat1");
  EXPECT_EQ(m->properties, (Props{{"temp", "21"}, {"Mixed", "x"}}));
}

TEST(HttpTelemetry, SizeLimitCountsBodyAndProperties) {
  HttpHeaders none;
  EXPECT_TRUE(telemetryFromHttp("d", none, std::string(kMaxTelemetryMessageBytes, 'x')).isOk());
  auto over = telemetryFromHttp("d", none, std::string(kMaxTelemetryMessageBytes + 1, 'x'));
  EXPECT_EQ(over.code(), ErrorCode::MessageTooLarge);
  HttpHeaders one;
  one.fields = {{"iothub-app-k", "v"}};
  EXPECT_EQ(telemetryFromHttp("d", one, std::string(kMaxTelemetryMessageBytes - 1, 'x')).code(),
            ErrorCode::MessageTooLarge);
}

TEST(TelemetryBatch, NodeShape) {
  std::string body = R"([{"body":")" + base64Encode("one") +
                     R"(","properties":{"iothub-app-k":"v","iothub-app-n":"2"}},{"body":")" +
                     base64Encode(std::string("\0two", 4)) + R"("}])";
  auto batch = parseTelemetryBatch("d1", body);
  ASSERT_TRUE(batch.isOk()) << batch.status().toString();
  ASSERT_EQ(batch->size(), 2u);
  EXPECT_EQ((*batch)[0].body, "one");
  EXPECT_EQ((*batch)[0].device_id, "d1");
  EXPECT_EQ((*batch)[0].source, "http");
  EXPECT_EQ((*batch)[0].properties, (Props{{"k", "v"}, {"n", "2"}}));
  EXPECT_EQ((*batch)[1].body, std::string("\0two", 4));
  EXPECT_TRUE((*batch)[1].properties.empty());
}

TEST(TelemetryBatch, CSdkShapeWithSystemProperties) {
  auto batch = parseTelemetryBatch(
      "d1",
      R"([{"body":"plain text","base64Encoded":false,"properties":{"iothub-messageid":"m","other":"o"}}])");
  ASSERT_TRUE(batch.isOk()) << batch.status().toString();
  EXPECT_EQ((*batch)[0].body, "plain text");
  EXPECT_EQ((*batch)[0].message_id, "m");
  EXPECT_EQ((*batch)[0].properties, (Props{{"other", "o"}}));
}

TEST(TelemetryBatch, Malformed) {
  for (std::string body :
       {"", "{", "{}", "[]", "[1]", R"([{}])", R"([{"body":1}])", R"([{"body":"!!"}])",
        R"([{"body":"","properties":[]}])", R"([{"body":"","properties":{"iothub-app-k":1}}])",
        R"([{"body":"","base64Encoded":"yes"}])", "[[[[[[]]]]]]"}) {
    auto batch = parseTelemetryBatch("d", body);
    ASSERT_FALSE(batch.isOk()) << body;
    EXPECT_EQ(errorInfo(batch.code()).http_status, 400)
        << body << ": " << batch.status().toString();
  }
  std::string many = "[";
  for (std::size_t i = 0; i <= kMaxTelemetryBatchMessages; ++i) many += R"({"body":""},)";
  many.back() = ']';
  EXPECT_EQ(parseTelemetryBatch("d", many).code(), ErrorCode::ArgumentInvalid);
}

TEST(TelemetryBatch, SizeLimits) {
  auto entry = [](std::size_t bytes) {
    return R"({"body":")" + base64Encode(std::string(bytes, 'x')) + R"("})";
  };
  EXPECT_EQ(parseTelemetryBatch("d", "[" + entry(kMaxTelemetryMessageBytes + 1) + "]").code(),
            ErrorCode::MessageTooLarge);
  // Two messages each within the limit, together over it.
  std::size_t half = kMaxTelemetryBatchBytes / 2;
  EXPECT_TRUE(parseTelemetryBatch("d", "[" + entry(half) + "," + entry(half) + "]").isOk());
  EXPECT_EQ(parseTelemetryBatch("d", "[" + entry(half) + "," + entry(half + 1) + "]").code(),
            ErrorCode::MessageTooLarge);
}

}  // namespace
}  // namespace iothub::device_api
