#include "test_helpers.hpp"
#include "iothub/service/device.hpp"

#include <gtest/gtest.h>

namespace iothub::service {
namespace {

using testing::parse;


constexpr std::string_view kAzureDevice = R"({
  "deviceId": "d1", "generationId": "638000000000000000", "etag": "MTIzNDU2Nzg=",
  "connectionState": "Connected", "status": "disabled", "statusReason": "maintenance",
  "connectionStateUpdatedTime": "2023-01-02T21:43:41.2182189Z",
  "statusUpdatedTime": "2023-01-02T21:40:00.0000000Z",
  "lastActivityTime": "0001-01-01T00:00:00Z", "cloudToDeviceMessageCount": 3,
  "authentication": {"symmetricKey": {"primaryKey": "cHJpbWFyeQ==", "secondaryKey": "c2Vjb25kYXJ5"},
                     "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
                     "type": "sas"},
  "capabilities": {"iotEdge": true}, "deviceScope": "ms-azure-iot-edge://d1-1234", "parentScopes": []
})";

TEST(DeviceTest, ParsesEveryFieldOfAnAzureDevice) {
  auto device = Device::fromJson(parse(kAzureDevice));
  ASSERT_TRUE(device) << device.status().toString();
  EXPECT_EQ(device->device_id, "d1");
  EXPECT_EQ(device->generation_id, "638000000000000000");
  EXPECT_EQ(device->etag, "MTIzNDU2Nzg=");
  EXPECT_EQ(device->connection_state, ConnectionState::Connected);
  EXPECT_EQ(device->status, DeviceStatus::Disabled);
  EXPECT_EQ(device->status_reason, "maintenance");
  EXPECT_EQ(device->connection_state_updated_time, "2023-01-02T21:43:41.2182189Z");
  EXPECT_EQ(device->status_updated_time, "2023-01-02T21:40:00.0000000Z");
  EXPECT_EQ(device->last_activity_time, "0001-01-01T00:00:00Z");
  EXPECT_EQ(device->cloud_to_device_message_count, 3);
  EXPECT_EQ(device->authentication_type, AuthenticationType::Sas);
  EXPECT_EQ(device->primary_key, "cHJpbWFyeQ==");
  EXPECT_EQ(device->secondary_key, "c2Vjb25kYXJ5");
  EXPECT_EQ(device->primary_thumbprint, std::nullopt);
  EXPECT_TRUE(device->iot_edge);
  EXPECT_EQ(device->raw, parse(kAzureDevice).get_object());
}

TEST(DeviceTest, NullStatusReasonAndMissingFieldsKeepDefaults) {
  auto device = Device::fromJson(parse(R"({"deviceId":"d2","statusReason":null})"));
  ASSERT_TRUE(device) << device.status().toString();
  EXPECT_EQ(device->status, DeviceStatus::Enabled);
  EXPECT_EQ(device->status_reason, std::nullopt);
  EXPECT_EQ(device->connection_state, ConnectionState::Disconnected);
  EXPECT_EQ(device->authentication_type, AuthenticationType::Sas);
}

TEST(DeviceTest, ParsesSelfSignedThumbprints) {
  auto device = Device::fromJson(parse(
      R"({"deviceId":"x","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"AB","secondaryThumbprint":"CD"}}})"));
  ASSERT_TRUE(device);
  EXPECT_EQ(device->authentication_type, AuthenticationType::SelfSigned);
  EXPECT_EQ(device->primary_thumbprint, "AB");
  EXPECT_EQ(device->secondary_thumbprint, "CD");
}

TEST(DeviceTest, RejectsMalformedDevices) {
  EXPECT_EQ(Device::fromJson(parse("[]")).code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(Device::fromJson(parse(R"({"status":"enabled"})")).code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(Device::fromJson(parse(R"({"deviceId":1})")).code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(Device::fromJson(parse(R"({"deviceId":"d","status":"paused"})")).code(),
            ErrorCode::IotHubFormatError);
  EXPECT_EQ(Device::fromJson(parse(R"({"deviceId":"d","cloudToDeviceMessageCount":"3"})")).code(),
            ErrorCode::IotHubFormatError);
  EXPECT_EQ(Device::fromJson(parse(R"({"deviceId":"d","authentication":{"type":"magic"}})")).code(),
            ErrorCode::IotHubFormatError);
}

TEST(DeviceTest, NewDeviceSerializesWithNormalizedSasAuthentication) {
  Device device;
  device.device_id = "d 1/x";
  EXPECT_EQ(json::value(device.toJson()),
            parse(R"({"deviceId":"d 1/x","status":"enabled",
                      "authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}},
                      "capabilities":{"iotEdge":false}})"));
}

TEST(DeviceTest, RoundTripKeepsFieldsTheModelDoesNotKnow) {
  auto device = Device::fromJson(parse(kAzureDevice));
  ASSERT_TRUE(device);
  device->status = DeviceStatus::Enabled;
  device->status_reason = "back";
  json::object out = device->toJson();
  EXPECT_EQ(out.at("status"), "enabled");
  EXPECT_EQ(out.at("statusReason"), "back");
  EXPECT_EQ(out.at("deviceScope"), "ms-azure-iot-edge://d1-1234");
  EXPECT_EQ(out.at("etag"), "MTIzNDU2Nzg=");
  EXPECT_EQ(out.at("authentication").at("symmetricKey").at("primaryKey"), "cHJpbWFyeQ==");
  EXPECT_EQ(out.at("capabilities").at("iotEdge"), true);
  auto again = Device::fromJson(out);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, DeviceStatus::Enabled);
}

TEST(DeviceTest, EnumsUseWireNames) {
  EXPECT_EQ(toString(DeviceStatus::Disabled), "disabled");
  EXPECT_EQ(toString(ConnectionState::Connected), "Connected");
  EXPECT_EQ(toString(AuthenticationType::CertificateAuthority), "certificateAuthority");
  EXPECT_EQ(parseDeviceStatus("enabled"), DeviceStatus::Enabled);
  EXPECT_EQ(parseDeviceStatus("Enabled"), std::nullopt);
}

}  // namespace
}  // namespace iothub::service
