#include "request_building.hpp"

#include <gtest/gtest.h>

#include <regex>

namespace iothub::service::detail {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

TEST(RequestBuildingTest, TokenExpiryIsNowRoundedUpPlusOneHour) {
  EXPECT_EQ(serviceTokenExpiry(SystemTime{seconds{1700000000}}), 1700003600);
  EXPECT_EQ(serviceTokenExpiry(SystemTime{seconds{1700000000} + milliseconds{1}}), 1700003601);
}

TEST(RequestBuildingTest, ServiceTokenMatchesNodeSdkVector) {
  // docs/protocol.md §1.10: policy iothubowner, se = 1700000000.
  auth::ServiceConnectionString cs{"myhub.azure-devices.net", "iothubowner",
                                   "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="};
  auto token = serviceSasToken(cs, SystemTime{seconds{1700000000 - 3600}});
  ASSERT_TRUE(token) << token.status().toString();
  EXPECT_EQ(*token,
            "SharedAccessSignature sr=myhub.azure-devices.net&sig=sJAIZTF5oG40VHrie96heZ865%2BnR4QavBvHnzxZm8rk%3D"
            "&skn=iothubowner&se=1700000000");
}

TEST(RequestBuildingTest, ServiceTokenRejectsKeyThatIsNotBase64) {
  auth::ServiceConnectionString cs{"h", "p", "not base64!"};
  EXPECT_EQ(serviceSasToken(cs, SystemTime{}).code(), ErrorCode::ArgumentInvalid);
}

TEST(RequestBuildingTest, RequestIdIsRandomUuidV4) {
  SeededRandom random(7);
  std::string a = newRequestId(random);
  std::string b = newRequestId(random);
  std::regex uuid_v4("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$");
  EXPECT_TRUE(std::regex_match(a, uuid_v4)) << a;
  EXPECT_TRUE(std::regex_match(b, uuid_v4)) << b;
  EXPECT_NE(a, b);
}

TEST(RequestBuildingTest, EtagsAreAlwaysDoubleQuoted) {
  EXPECT_EQ(quoteEtag("*"), "\"*\"");
  EXPECT_EQ(quoteEtag("AAAAAAAAAAI="), "\"AAAAAAAAAAI=\"");
  EXPECT_EQ(quoteEtag("\"AAAA\""), "\"AAAA\"");
}

TEST(RequestBuildingTest, TargetCarriesApiVersionThenExtraQuery) {
  HttpRequest request;
  request.path = "/devices/";
  EXPECT_EQ(requestTarget(request), "/devices/?api-version=2021-04-12");
  request.path = "/jobs/v2/query";
  request.query = "jobStatus=running";
  EXPECT_EQ(requestTarget(request), "/jobs/v2/query?api-version=2021-04-12&jobStatus=running");
}

TEST(RequestBuildingTest, DevicePathEncodesIdLikeEncodeUriComponentStrict) {
  EXPECT_EQ(devicePath("d 1/x"), "/devices/d%201%2Fx");
  EXPECT_EQ(devicePath("a(b)*'!"), "/devices/a%28b%29%2A%27%21");
}

TEST(RequestBuildingTest, TwinPathEncodesIdLikeDevicePath) {
  EXPECT_EQ(twinPath("d 1/x"), "/twins/d%201%2Fx");
  EXPECT_EQ(twinPath("d1"), "/twins/d1");
}

TEST(RequestBuildingTest, DurationTextUsesSecondsWhenWhole) {
  EXPECT_EQ(durationText(seconds{40}), "40s");
  EXPECT_EQ(durationText(milliseconds{1500}), "1500ms");
}

}  // namespace
}  // namespace iothub::service::detail
