#include "test_helpers.hpp"
#include "iothub/service/registry_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fake_http_server.hpp"

namespace iothub::service {
namespace {

using testing::parse;
using testing::azureError;


using ::testing::HasSubstr;
using testing::FakeHttpServer;

using testing::kConnectionString;

constexpr std::string_view kDeviceJson =
    R"({"deviceId":"d 1","generationId":"g1","etag":"ZXRhZzE=","connectionState":"Disconnected",)"
    R"("status":"enabled","statusReason":null,"connectionStateUpdatedTime":"0001-01-01T00:00:00Z",)"
    R"("statusUpdatedTime":"0001-01-01T00:00:00Z","lastActivityTime":"0001-01-01T00:00:00Z",)"
    R"("cloudToDeviceMessageCount":0,"authentication":{"symmetricKey":{"primaryKey":"cHJpbWFyeQ==",)"
    R"("secondaryKey":"c2Vjb25kYXJ5"},"x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},)"
    R"("type":"sas"},"capabilities":{"iotEdge":false}})";

class RegistryClientTest : public ::testing::Test {
 protected:
  RegistryClientTest() {
    ServiceClientOptions options;
    options.endpoint = server_.endpoint();
    options.timeout = std::chrono::seconds{10};
    auto client = RegistryClient::fromConnectionString(kConnectionString, options);
    EXPECT_TRUE(client) << client.status().toString();
    if (client) client_ = std::make_unique<RegistryClient>(std::move(*client));
  }

  testing::RecordedRequest onlyRequest() {
    auto requests = server_.requests();
    EXPECT_EQ(requests.size(), 1u);
    return requests.empty() ? testing::RecordedRequest{} : requests.back();
  }

  FakeHttpServer server_;
  std::unique_ptr<RegistryClient> client_;
};

TEST_F(RegistryClientTest, CreatePutsTheDeviceWithoutIfMatch) {
  server_.reply(200, std::string(kDeviceJson));
  Device device;
  device.device_id = "d 1";
  auto created = client_->create(device);
  ASSERT_TRUE(created) << created.status().toString();
  EXPECT_EQ(created->primary_key, "cHJpbWFyeQ==");
  EXPECT_EQ(created->etag, "ZXRhZzE=");

  auto r = onlyRequest();
  EXPECT_EQ(r.method, "PUT");
  EXPECT_EQ(r.target, "/devices/d%201?api-version=2021-04-12");
  EXPECT_EQ(r.header("if-match"), std::nullopt);
  EXPECT_EQ(r.header("content-type"), "application/json; charset=utf-8");
  EXPECT_EQ(parse(r.body),
            parse(R"({"deviceId":"d 1","status":"enabled",
                      "authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}},
                      "capabilities":{"iotEdge":false}})"));
}

TEST_F(RegistryClientTest, CreateSendsSuppliedKeysAndDisabledStatus) {
  server_.reply(200, std::string(kDeviceJson));
  Device device;
  device.device_id = "d2";
  device.status = DeviceStatus::Disabled;
  device.primary_key = "cA==";
  device.secondary_key = "cw==";
  ASSERT_TRUE(client_->create(device));
  json::value body = parse(onlyRequest().body);
  EXPECT_EQ(body.at("status"), "disabled");
  EXPECT_EQ(body.at("authentication").at("symmetricKey"),
            parse(R"({"primaryKey":"cA==","secondaryKey":"cw=="})"));
}

TEST_F(RegistryClientTest, CreateOfAnExistingIdIsDeviceAlreadyExists) {
  server_.reply(409, azureError("DeviceAlreadyExists", "A device with ID 'd 1' is already registered."));
  Device device;
  device.device_id = "d 1";
  auto created = client_->create(device);
  EXPECT_EQ(created.code(), ErrorCode::DeviceAlreadyExists);
  EXPECT_THAT(created.status().message(), HasSubstr("already registered"));
}

TEST_F(RegistryClientTest, GetParsesTheDevice) {
  server_.reply(200, std::string(kDeviceJson));
  auto device = client_->get("d 1");
  ASSERT_TRUE(device) << device.status().toString();
  EXPECT_EQ(device->device_id, "d 1");
  EXPECT_EQ(device->generation_id, "g1");
  EXPECT_EQ(device->raw, parse(kDeviceJson).get_object());
  auto r = onlyRequest();
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/devices/d%201?api-version=2021-04-12");
  EXPECT_TRUE(r.body.empty());
}

TEST_F(RegistryClientTest, GetOfAnUnknownIdIsDeviceNotFound) {
  server_.reply(404, azureError("DeviceNotFound", "Device nope does not exist."));
  auto device = client_->get("nope");
  EXPECT_EQ(device.code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(device.status().message(), "Device nope does not exist. (HTTP 404)");
}

TEST_F(RegistryClientTest, ListUsesTheTrailingSlashAndParsesTheArray) {
  server_.reply(200, "[" + std::string(kDeviceJson) + R"(,{"deviceId":"d2","status":"disabled"}])");
  auto devices = client_->list();
  ASSERT_TRUE(devices) << devices.status().toString();
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_EQ((*devices)[0].device_id, "d 1");
  EXPECT_EQ((*devices)[1].status, DeviceStatus::Disabled);
  EXPECT_EQ(onlyRequest().target, "/devices/?api-version=2021-04-12");
}

TEST_F(RegistryClientTest, ListRejectsANonArray) {
  server_.reply(200, "{}");
  EXPECT_EQ(client_->list().code(), ErrorCode::IotHubFormatError);
}

TEST_F(RegistryClientTest, UpdateSendsAQuotedIfMatch) {
  server_.reply(200, std::string(kDeviceJson));
  server_.reply(200, std::string(kDeviceJson));
  auto device = Device::fromJson(parse(kDeviceJson));
  ASSERT_TRUE(device);
  device->status = DeviceStatus::Disabled;
  device->status_reason = "maintenance";
  ASSERT_TRUE(client_->update(*device));
  ASSERT_TRUE(client_->update(*device, "ZXRhZzE="));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "PUT");
  EXPECT_EQ(requests[0].target, "/devices/d%201?api-version=2021-04-12");
  EXPECT_EQ(requests[0].header("if-match"), "\"*\"");
  EXPECT_EQ(requests[1].header("if-match"), "\"ZXRhZzE=\"");
  json::value body = parse(requests[0].body);
  EXPECT_EQ(body.at("status"), "disabled");
  EXPECT_EQ(body.at("statusReason"), "maintenance");
  EXPECT_EQ(body.at("authentication").at("symmetricKey").at("primaryKey"), "cHJpbWFyeQ==");
}

TEST_F(RegistryClientTest, UpdateWithAStaleEtagIsPreconditionFailed) {
  server_.reply(412, azureError("PreconditionFailed", "Precondition failed: the etag does not match."));
  Device device;
  device.device_id = "d1";
  EXPECT_EQ(client_->update(device, "old").code(), ErrorCode::PreconditionFailed);
}

TEST_F(RegistryClientTest, RemoveSendsDeleteWithIfMatch) {
  server_.reply(204);
  server_.reply(404, azureError("DeviceNotFound", "Device d1 does not exist."));
  EXPECT_TRUE(client_->remove("d/1").isOk());
  EXPECT_EQ(client_->remove("d1", "e1").code(), ErrorCode::DeviceNotFound);
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].method, "DELETE");
  EXPECT_EQ(requests[0].target, "/devices/d%2F1?api-version=2021-04-12");
  EXPECT_EQ(requests[0].header("if-match"), "\"*\"");
  EXPECT_EQ(requests[1].header("if-match"), "\"e1\"");
}

TEST_F(RegistryClientTest, UnauthorizedIsReported) {
  server_.reply(401, azureError("IotHubUnauthorizedAccess", "Unauthorized"));
  auto stats = client_->statistics();
  EXPECT_EQ(stats.code(), ErrorCode::Unauthorized);
  EXPECT_FALSE(isTransportFailure(stats.status()));
}

TEST_F(RegistryClientTest, BulkPostsEntriesWithIdAndImportMode) {
  server_.reply(200, R"({"isSuccessful":true,"errors":[],"warnings":[]})");
  Device a;
  a.device_id = "a";
  Device b;
  b.device_id = "b";
  b.etag = "ZQ==";
  auto result = client_->bulk({{BulkImportMode::Create, a},
                               {BulkImportMode::UpdateIfMatchETag, b},
                               {BulkImportMode::Delete, b}});
  ASSERT_TRUE(result) << result.status().toString();
  EXPECT_TRUE(result->is_successful);
  auto r = onlyRequest();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/devices?api-version=2021-04-12");
  EXPECT_EQ(r.header("if-match"), std::nullopt);
  EXPECT_EQ(parse(r.body),
            parse(R"([
      {"id":"a","importMode":"create","status":"enabled",
       "authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}},
       "capabilities":{"iotEdge":false}},
      {"id":"b","importMode":"UpdateIfMatchETag","etag":"ZQ==","status":"enabled",
       "authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}},
       "capabilities":{"iotEdge":false}},
      {"id":"b","importMode":"Delete","etag":"ZQ=="}])"));
}

TEST_F(RegistryClientTest, BulkReportsPerDeviceErrorsAlsoWhenTheHubAnswers400) {
  server_.reply(400, R"({"isSuccessful":false,"errors":[{"deviceId":"a","errorCode":"DeviceAlreadyExists",)"
                     R"("errorStatus":"already there","moduleId":null,"operation":"create"}],"warnings":[]})");
  Device a;
  a.device_id = "a";
  auto result = client_->bulk({{BulkImportMode::Create, a}});
  ASSERT_TRUE(result) << result.status().toString();
  EXPECT_FALSE(result->is_successful);
  ASSERT_EQ(result->errors.size(), 1u);
  EXPECT_EQ(result->errors[0].device_id, "a");
  EXPECT_EQ(result->errors[0].error_code, "DeviceAlreadyExists");
  EXPECT_EQ(result->errors[0].error_status, "already there");
  EXPECT_EQ(result->errors[0].operation, "create");
}

TEST_F(RegistryClientTest, BulkRejectsEmptyAndOversizedBatchesLocally) {
  EXPECT_EQ(client_->bulk({}).code(), ErrorCode::ArgumentInvalid);
  std::vector<BulkOperation> many(101);
  EXPECT_EQ(client_->bulk(many).code(), ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(RegistryClientTest, StatisticsParsesCounts) {
  server_.reply(200, R"({"totalDeviceCount":5,"enabledDeviceCount":3,"disabledDeviceCount":2})");
  auto stats = client_->statistics();
  ASSERT_TRUE(stats) << stats.status().toString();
  EXPECT_EQ(stats->total_device_count, 5);
  EXPECT_EQ(stats->enabled_device_count, 3);
  EXPECT_EQ(stats->disabled_device_count, 2);
  auto r = onlyRequest();
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/statistics/devices?api-version=2021-04-12");
}

TEST(RegistryClientStaticTest, DeviceConnectionStringUsesThePrimaryKey) {
  Device device;
  device.device_id = "d1";
  device.primary_key = "cHJpbWFyeQ==";
  device.secondary_key = "c2Vjb25kYXJ5";
  EXPECT_EQ(RegistryClient::deviceConnectionString(device, "myhub.example").value(),
            "HostName=myhub.example;DeviceId=d1;SharedAccessKey=cHJpbWFyeQ==");
  device.authentication_type = AuthenticationType::SelfSigned;
  EXPECT_EQ(RegistryClient::deviceConnectionString(device, "h").value(), "HostName=h;DeviceId=d1;x509=true");
  Device keyless;
  keyless.device_id = "k";
  EXPECT_EQ(RegistryClient::deviceConnectionString(keyless, "h").code(), ErrorCode::ArgumentInvalid);
}

TEST(RegistryClientStaticTest, FromConnectionStringRejectsIncompleteStrings) {
  EXPECT_EQ(RegistryClient::fromConnectionString("HostName=h;SharedAccessKeyName=p").code(),
            ErrorCode::ArgumentInvalid);
}

}  // namespace
}  // namespace iothub::service
