#include "twin/twin_json.hpp"

#include <gtest/gtest.h>

#include "common/time_format.hpp"
#include "twin/twin_document.hpp"
#include "twin/twin_test_support.hpp"

namespace iothub::twin {
namespace {

using test_support::obj;

store::DeviceRecord device() {
  store::DeviceRecord d;
  d.device_id = "dev1";
  d.etag = "OTA4NTk1Mjg=";
  d.status_updated_time = SystemTime{std::chrono::seconds{1700000000}};
  return d;
}

store::TwinRecord twin() {
  store::TwinRecord t;
  t.device_id = "dev1";
  return t;
}

TEST(ServiceTwinJsonTest, FreshTwinHasEveryFieldNodeNeeds) {
  json::object view = serviceTwinJson(device(), twin(), false);
  EXPECT_EQ(view, obj(R"({"deviceId":"dev1","etag":"AAAAAAAAAAE=","deviceEtag":"OTA4NTk1Mjg=",
      "status":"enabled","statusUpdateTime":"2023-11-14T22:13:20.0000000Z",
      "connectionState":"Disconnected","lastActivityTime":"0001-01-01T00:00:00Z",
      "cloudToDeviceMessageCount":0,"authenticationType":"sas",
      "x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"modelId":"",
      "version":1,"capabilities":{"iotEdge":false},"tags":{},
      "properties":{"desired":{"$metadata":{"$lastUpdated":"0001-01-01T00:00:00Z"},"$version":1},
                    "reported":{"$metadata":{"$lastUpdated":"0001-01-01T00:00:00Z"},"$version":1}}})"))
      << toJson(view);
}

TEST(ServiceTwinJsonTest, ShowsStoredPropertiesMetadataAndVersions) {
  store::TwinRecord t = twin();
  t.version = 4;
  t.desired_version = 3;
  t.reported_version = 2;
  t.tags = obj(R"({"site":"a"})");
  applyPropertiesPatch(t.desired, obj(R"({"rate":17})"), {"T", 3});
  applyPropertiesPatch(t.reported, obj(R"({"rate":30})"), {"U", std::nullopt});
  store::DeviceRecord d = device();
  d.status = store::DeviceStatus::Disabled;
  d.status_reason = "maintenance";
  d.primary_thumbprint = "ab";
  d.iot_edge = true;
  json::object view = serviceTwinJson(d, t, true);
  EXPECT_EQ(view.at("etag"), "AAAAAAAAAAQ=");
  EXPECT_EQ(view.at("version"), 4);
  EXPECT_EQ(view.at("status"), "disabled");
  EXPECT_EQ(view.at("statusReason"), "maintenance");
  EXPECT_EQ(view.at("connectionState"), "Connected");
  EXPECT_EQ(view.at("x509Thumbprint").at("primaryThumbprint"), "ab");
  EXPECT_EQ(view.at("capabilities").at("iotEdge"), true);
  EXPECT_EQ(view.at("tags"), obj(R"({"site":"a"})"));
  EXPECT_EQ(toJson(view.at("properties").at("desired")),
            R"({"rate":17,"$metadata":{"$lastUpdated":"T","$lastUpdatedVersion":3,)"
            R"("rate":{"$lastUpdated":"T","$lastUpdatedVersion":3}},"$version":3})");
  EXPECT_EQ(
      toJson(view.at("properties").at("reported")),
      R"({"rate":30,"$metadata":{"$lastUpdated":"U","rate":{"$lastUpdated":"U"}},"$version":2})");
}

TEST(ServiceTwinJsonTest, OmitsStatusReasonWhenUnset) {
  EXPECT_FALSE(serviceTwinJson(device(), twin(), false).contains("statusReason"));
}

TEST(DeviceTwinJsonTest, FreshTwinIsJustTheVersions) {
  EXPECT_EQ(toJson(deviceTwinJson(twin())),
            R"({"desired":{"$version":1},"reported":{"$version":1}})");
}

TEST(DeviceTwinJsonTest, HasNoMetadataAndNoTags) {
  store::TwinRecord t = twin();
  t.tags = obj(R"({"site":"a"})");
  t.desired_version = 2;
  t.reported_version = 5;
  applyPropertiesPatch(t.desired, obj(R"({"a":{"b":1}})"), {"T", 2});
  applyPropertiesPatch(t.reported, obj(R"({"temperature":32})"), {"T", std::nullopt});
  EXPECT_EQ(toJson(deviceTwinJson(t)),
            R"({"desired":{"a":{"b":1},"$version":2},"reported":{"temperature":32,"$version":5}})");
}

}  // namespace
}  // namespace iothub::twin
