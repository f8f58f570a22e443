#include "service_api/error_response.hpp"

#include <cstdio>
#include <ctime>

#include "common/json.hpp"
#include "common/time_format.hpp"

namespace iothub::service_api {
namespace {

// "10/18/2022 20:50:39", as in Azure's tracking ids.
std::string usTimestamp(SystemTime now) {
  std::time_t t = static_cast<std::time_t>(unixSeconds(now));
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%02d/%02d/%04d %02d:%02d:%02d", tm.tm_mon + 1, tm.tm_mday,
                tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

}  // namespace

HttpResponse jsonResponse(int http_status, std::string body) {
  HttpResponse r;
  r.status = http_status;
  r.headers.set("Content-Type", kJsonContentType);
  r.body = std::move(body);
  return r;
}

HttpResponse errorResponse(const Status& status, Random& random, SystemTime now) {
  const ErrorInfo& info = errorInfo(status.code());
  std::string tracking_id = random.hex(16);
  json::object body;
  if (status.code() == ErrorCode::DeviceNotOnline || status.code() == ErrorCode::GatewayTimeout) {
    json::object inner{{"errorCode", info.azure_code},
                       {"trackingId", tracking_id},
                       {"message", status.message()},
                       {"info", json::object{}},
                       {"timestampUtc", formatTimestamp(now)}};
    body["Message"] = json::serialize(inner);
    body["ExceptionMessage"] = "";
  } else {
    std::string text = status.message();
    for (char& c : text) {
      if (c == ';') c = ',';
    }
    body["Message"] = "ErrorCode:" + std::string(info.name) + ";" + text;
    body["ExceptionMessage"] = "Tracking ID:" + tracking_id + "-G:0-TimeStamp:" + usTimestamp(now);
  }
  HttpResponse r = jsonResponse(info.http_status, json::serialize(body));
  r.headers.set("iothub-errorcode", std::string(info.name));
  return r;
}

}  // namespace iothub::service_api
