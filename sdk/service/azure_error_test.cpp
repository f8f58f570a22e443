#include "azure_error.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "iothub/service/http_transport.hpp"

namespace iothub::service {
namespace {

using ::testing::HasSubstr;

HttpResponse response(int status, std::string body,
                      std::vector<std::pair<std::string, std::string>> headers = {}) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

TEST(AzureErrorTest, RegistryShapeNamesTheCode) {
  Status s = statusFromErrorResponse(response(
      404, R"({"Message":"ErrorCode:DeviceNotFound;Device d1 was not found.","ExceptionMessage":"Tracking ID:abc-G:0-TimeStamp:10/18/2022 20:50:39"})"));
  EXPECT_EQ(s.code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(s.message(), "Device d1 was not found. (HTTP 404)");
}

TEST(AzureErrorTest, KeepsTextAfterASecondSemicolon) {
  Status s = statusFromErrorResponse(
      response(409, R"({"Message":"ErrorCode:DeviceAlreadyExists;A device d1; already there","ExceptionMessage":""})"));
  EXPECT_EQ(s.code(), ErrorCode::DeviceAlreadyExists);
  EXPECT_THAT(s.message(), HasSubstr("A device d1; already there"));
}

TEST(AzureErrorTest, MapsPreconditionFailedAndUnauthorized) {
  EXPECT_EQ(statusFromErrorResponse(
                response(412, R"({"Message":"ErrorCode:PreconditionFailed;etag mismatch","ExceptionMessage":""})"))
                .code(),
            ErrorCode::PreconditionFailed);
  EXPECT_EQ(statusFromErrorResponse(
                response(401, R"({"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized","ExceptionMessage":""})"))
                .code(),
            ErrorCode::Unauthorized);
}

TEST(AzureErrorTest, DirectMethodShapeUsesNestedNumericCode) {
  Status s = statusFromErrorResponse(response(
      404,
      R"({"Message":"{\"errorCode\":404103,\"trackingId\":\"t\",\"message\":\"Timed out waiting for device to connect.\",\"info\":{\"timeout\":\"00:00:10\"},\"timestampUtc\":\"2018-11-12T19:35:33.5194825Z\"}","ExceptionMessage":""})"));
  EXPECT_EQ(s.code(), ErrorCode::DeviceNotOnline);
  EXPECT_EQ(s.message(), "Timed out waiting for device to connect. (HTTP 404)");

  Status timeout = statusFromErrorResponse(response(
      504, R"({"Message":"{\"errorCode\":504101,\"message\":\"Timed out waiting for the response from device.\"}","ExceptionMessage":""})"));
  EXPECT_EQ(timeout.code(), ErrorCode::GatewayTimeout);
}

TEST(AzureErrorTest, UnknownNameFallsBackToHeaderThenToHttpStatus) {
  Status by_header = statusFromErrorResponse(
      response(404, R"({"Message":"ErrorCode:SomethingNew;gone","ExceptionMessage":""})",
               {{"iothub-errorcode", "JobNotFound"}}));
  EXPECT_EQ(by_header.code(), ErrorCode::JobNotFound);
  EXPECT_THAT(by_header.message(), HasSubstr("gone"));

  EXPECT_EQ(statusFromErrorResponse(response(404, R"({"Message":"ErrorCode:IotHubNotFound;x"})")).code(),
            ErrorCode::NotFound);
  EXPECT_EQ(statusFromErrorResponse(response(429, "")).code(), ErrorCode::Throttled);
  EXPECT_EQ(statusFromErrorResponse(response(503, "")).code(), ErrorCode::ServiceUnavailable);
  EXPECT_EQ(statusFromErrorResponse(response(418, "")).code(), ErrorCode::InvalidOperation);
  EXPECT_EQ(statusFromErrorResponse(response(502, "")).code(), ErrorCode::ServerError);
}

TEST(AzureErrorTest, NonJsonBodyIsQuotedInTheMessage) {
  Status s = statusFromErrorResponse(response(400, "bad things happened"));
  EXPECT_EQ(s.code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(s.message(), "bad things happened (HTTP 400)");
  EXPECT_EQ(statusFromErrorResponse(response(500, "")).message(), "(HTTP 500)");
}

TEST(AzureErrorTest, TransportFailuresAreTellableFromHub503) {
  Status hub = statusFromErrorResponse(
      response(503, R"({"Message":"ErrorCode:ServiceUnavailable;busy","ExceptionMessage":""})"));
  EXPECT_EQ(hub.code(), ErrorCode::ServiceUnavailable);
  EXPECT_FALSE(isTransportFailure(hub));
  EXPECT_TRUE(isTransportFailure(
      Status(ErrorCode::ServiceUnavailable, std::string(kTransportFailurePrefix) + "refused")));
}

TEST(AzureErrorTest, NamesAndCodesMapThroughTheErrorTable) {
  EXPECT_EQ(detail::errorCodeFromName("DeviceNotFound"), ErrorCode::DeviceNotFound);
  EXPECT_EQ(detail::errorCodeFromName("ServiceUnavailable"), ErrorCode::ServiceUnavailable);
  EXPECT_EQ(detail::errorCodeFromName("Nope"), std::nullopt);
  EXPECT_EQ(detail::errorCodeFromAzureCode(409001), ErrorCode::DeviceAlreadyExists);
  EXPECT_EQ(detail::errorCodeFromAzureCode(0), std::nullopt);
}

}  // namespace
}  // namespace iothub::service
