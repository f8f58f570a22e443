#include "mqtt/azure_topics.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace iothub::mqtt::azure {
namespace {

TEST(AzureTopicsTest, SubscriptionFilters) {
  EXPECT_EQ(kMethodRequestFilter, "$iothub/methods/POST/#");
  EXPECT_EQ(kTwinResponseFilter, "$iothub/twin/res/#");
  EXPECT_EQ(kDesiredPatchFilter, "$iothub/twin/PATCH/properties/desired/#");
  EXPECT_EQ(c2dFilter("dev1"), "devices/dev1/messages/devicebound/#");
}

TEST(AzureTopicsTest, DeviceMaySubscribeToItsOwnFiltersOnly) {
  EXPECT_TRUE(isDeviceSubscriptionFilter("d", "$iothub/methods/POST/#"));
  EXPECT_TRUE(isDeviceSubscriptionFilter("d", "$iothub/twin/res/#"));
  EXPECT_TRUE(isDeviceSubscriptionFilter("d", "$iothub/twin/PATCH/properties/desired/#"));
  EXPECT_TRUE(isDeviceSubscriptionFilter("d", "devices/d/messages/devicebound/#"));
  EXPECT_FALSE(isDeviceSubscriptionFilter("d", "devices/e/messages/devicebound/#"));
  EXPECT_FALSE(isDeviceSubscriptionFilter("d", "devices/d/messages/devicebound/+"));
  EXPECT_FALSE(isDeviceSubscriptionFilter("d", "$iothub/#"));
  EXPECT_FALSE(isDeviceSubscriptionFilter("d", "#"));
}

TEST(AzureTopicsTest, DeviceRequestAndResponseTopics) {
  EXPECT_EQ(twinGetTopic("7"), "$iothub/twin/GET/?$rid=7");
  EXPECT_EQ(twinPatchReportedTopic("8"), "$iothub/twin/PATCH/properties/reported/?$rid=8");
  EXPECT_EQ(methodResponseTopic(200, "1a"), "$iothub/methods/res/200/?$rid=1a");
  // The rid is echoed as received, encoded or not.
  EXPECT_EQ(methodResponseTopic(404, "a%2Fb"), "$iothub/methods/res/404/?$rid=a%2Fb");
}

TEST(AzureTopicsTest, HubTopics) {
  EXPECT_EQ(twinResponseTopic(200, "3"), "$iothub/twin/res/200/?$rid=3");
  EXPECT_EQ(twinResponseTopic(204, "3", 12), "$iothub/twin/res/204/?$rid=3&$version=12");
  EXPECT_EQ(desiredPatchTopic(15), "$iothub/twin/PATCH/properties/desired/?$version=15");
  EXPECT_EQ(methodRequestTopic("lockDoor", "0"), "$iothub/methods/POST/lockDoor/?$rid=0");
  EXPECT_EQ(c2dTopic("dev1"), "devices/dev1/messages/devicebound/");
}

TEST(AzureTopicsTest, TelemetryTopicEncodesThePropertyBagStrictly) {
  EXPECT_EQ(telemetryTopic("dev1"), "devices/dev1/messages/events/");
  EXPECT_EQ(telemetryTopic("dev1", std::map<std::string, std::string>{}),
            "devices/dev1/messages/events/");
  // Node's capture (docs/protocol.md §3.10) has the same pairs; a map sends them in key order.
  std::map<std::string, std::string> properties{{"$.mid", "m1"},
                                                {"$.ct", "application/json"},
                                                {"$.ce", "utf-8"},
                                                {"alert", "high temp"},
                                                {"k&=", "v/?"}};
  EXPECT_EQ(telemetryTopic("dev1", properties),
            "devices/dev1/messages/events/"
            "%24.ce=utf-8&%24.ct=application%2Fjson&%24.mid=m1&alert=high%20temp&k%26%3D=v%2F%3F");
  // A vector keeps its order.
  std::vector<std::pair<std::string, std::string>> ordered{{"b", "/"}, {"a", ""}};
  EXPECT_EQ(telemetryTopic("d", ordered), "devices/d/messages/events/b=%2F&a=");
}

TEST(AzureTopicsTest, PropertyAfterAnEncodedSlashStillGetsASeparator) {
  std::string topic = c2dTopic("d");
  appendTopicProperty(topic, "x", "/");
  appendTopicProperty(topic, "", "");
  appendTopicProperty(topic, "y", "1");
  EXPECT_EQ(topic, "devices/d/messages/devicebound/x=%2F&=&y=1");
}

TEST(AzureTopicsTest, ParsesTwinRequests) {
  auto get = parseTwinRequestTopic("$iothub/twin/GET/?$rid=42");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->kind, TwinRequestKind::Get);
  EXPECT_EQ(get->rid, "42");

  auto patch = parseTwinRequestTopic("$iothub/twin/PATCH/properties/reported/?%24rid=a%2Fb");
  ASSERT_TRUE(patch);
  EXPECT_EQ(patch->kind, TwinRequestKind::PatchReported);
  EXPECT_EQ(patch->rid, "a/b");

  auto missing = parseTwinRequestTopic("$iothub/twin/GET/");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->rid, "");

  EXPECT_FALSE(parseTwinRequestTopic("$iothub/twin/GET"));
  EXPECT_FALSE(parseTwinRequestTopic("$iothub/twin/PATCH/properties/desired/?$rid=1"));
  EXPECT_FALSE(parseTwinRequestTopic("$iothub/twin/res/200/?$rid=1"));
}

TEST(AzureTopicsTest, ParsesMethodResponses) {
  auto ok = parseMethodResponseTopic("$iothub/methods/res/200/?$rid=1a");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->rid, "1a");

  auto decoded = parseMethodResponseTopic("$iothub/methods/res/-5/?$rid=a%2Fb");
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->status, -5);
  EXPECT_EQ(decoded->rid, "a/b");

  auto empty_rid = parseMethodResponseTopic("$iothub/methods/res/200/?$rid=");
  ASSERT_TRUE(empty_rid);
  EXPECT_EQ(empty_rid->rid, "");

  EXPECT_TRUE(isMethodResponseTopic("$iothub/methods/res/x"));
  EXPECT_FALSE(isMethodResponseTopic("$iothub/methods/POST/m/?$rid=1"));
  EXPECT_FALSE(parseMethodResponseTopic("$iothub/methods/res/x"));
  EXPECT_FALSE(parseMethodResponseTopic("$iothub/methods/res/200"));
  EXPECT_FALSE(parseMethodResponseTopic("$iothub/methods/res//?$rid=1"));
  EXPECT_FALSE(parseMethodResponseTopic("$iothub/methods/res/200x/?$rid=1"));
  EXPECT_FALSE(parseMethodResponseTopic("$iothub/methods/res/200/"));
  EXPECT_FALSE(parseMethodResponseTopic("$iothub/methods/POST/m/?$rid=1"));
}

TEST(AzureTopicsTest, FindsTheTelemetryPropertyBag) {
  EXPECT_EQ(telemetryPropertyBag("d", "devices/d/messages/events"), "");
  EXPECT_EQ(telemetryPropertyBag("d", "devices/d/messages/events/"), "");
  EXPECT_EQ(telemetryPropertyBag("d", "devices/d/messages/events/a=1&b=%2F/"), "a=1&b=%2F/");
  EXPECT_FALSE(telemetryPropertyBag("d", "devices/d/messages/eventsX"));
  EXPECT_FALSE(telemetryPropertyBag("d", "devices/dd/messages/events/"));
  EXPECT_FALSE(telemetryPropertyBag("d", "devices/other/messages/events/"));
  EXPECT_FALSE(telemetryPropertyBag("d", "devices/d/messages/devicebound/"));
  EXPECT_FALSE(telemetryPropertyBag("", "devices//messages/events/"));
}

TEST(AzureTopicsTest, ParsesMethodRequestTopicWithoutDecoding) {
  auto request = parseMethodRequestTopic("$iothub/methods/POST/lock%20Door/?$rid=a%2Fb");
  ASSERT_TRUE(request);
  EXPECT_EQ(request->name, "lock%20Door");
  EXPECT_EQ(request->rid, "a%2Fb");

  auto last_rid = parseMethodRequestTopic("$iothub/methods/POST/m/?$rid=1&x=2&$rid=3");
  ASSERT_TRUE(last_rid);
  EXPECT_EQ(last_rid->rid, "3");

  EXPECT_FALSE(parseMethodRequestTopic("$iothub/methods/POST/lockDoor/"));
  EXPECT_FALSE(parseMethodRequestTopic("$iothub/methods/POST/lockDoor"));
  EXPECT_FALSE(parseMethodRequestTopic("$iothub/methods/POST/lockDoor/?$rid="));
  EXPECT_FALSE(parseMethodRequestTopic("$iothub/methods/POST//?$rid=1"));
  EXPECT_FALSE(parseMethodRequestTopic("$iothub/twin/res/200/?$rid=1"));
}

TEST(AzureTopicsTest, ParsesTwinResponseTopic) {
  auto response = parseTwinResponseTopic("$iothub/twin/res/204/?$rid=3&$version=12");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 204);
  EXPECT_EQ(response->rid, "3");
  EXPECT_EQ(response->version, 12);

  // Node decodes the query (docs/protocol.md §3.2): %24rid is $rid.
  response = parseTwinResponseTopic("$iothub/twin/res/200/?%24rid=abc");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->rid, "abc");
  EXPECT_FALSE(response->version);

  response = parseTwinResponseTopic("$iothub/twin/res/204/?$rid=3&$version=x");
  ASSERT_TRUE(response);
  EXPECT_FALSE(response->version);

  EXPECT_FALSE(parseTwinResponseTopic("$iothub/twin/res//?$rid=1"));
  EXPECT_FALSE(parseTwinResponseTopic("$iothub/twin/res/abc/?$rid=1"));
  EXPECT_FALSE(parseTwinResponseTopic("$iothub/twin/res/200/"));
  EXPECT_FALSE(parseTwinResponseTopic("$iothub/twin/res/200/?$rid="));
}

TEST(AzureTopicsTest, ParsesDesiredPatchTopic) {
  auto topic = parseDesiredPatchTopic("$iothub/twin/PATCH/properties/desired/?$version=15");
  ASSERT_TRUE(topic);
  EXPECT_EQ(topic->version, 15);
  auto bare = parseDesiredPatchTopic("$iothub/twin/PATCH/properties/desired/");
  ASSERT_TRUE(bare);
  EXPECT_FALSE(bare->version);
  EXPECT_FALSE(parseDesiredPatchTopic("$iothub/twin/PATCH/properties/reported/?$rid=1"));
}

TEST(AzureTopicsTest, BuiltTopicsParseBack) {
  const std::string request_topic = methodRequestTopic("reboot", "17");
  auto request = parseMethodRequestTopic(request_topic);  // views into request_topic
  ASSERT_TRUE(request);
  EXPECT_EQ(request->name, "reboot");
  EXPECT_EQ(request->rid, "17");
  auto response = parseMethodResponseTopic(methodResponseTopic(500, "17"));
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 500);
  EXPECT_EQ(response->rid, "17");
  auto twin = parseTwinResponseTopic(twinResponseTopic(204, "9", 4));
  ASSERT_TRUE(twin);
  EXPECT_EQ(twin->version, 4);
  auto desired = parseDesiredPatchTopic(desiredPatchTopic(7));
  ASSERT_TRUE(desired);
  EXPECT_EQ(desired->version, 7);
  EXPECT_EQ(parseTwinRequestTopic(twinGetTopic("5"))->rid, "5");
  EXPECT_EQ(parseTwinRequestTopic(twinPatchReportedTopic("6"))->kind,
            TwinRequestKind::PatchReported);
}

}  // namespace
}  // namespace iothub::mqtt::azure
