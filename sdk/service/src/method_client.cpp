#include "iothub/service/method_client.hpp"

#include <limits>

#include "auth/connection_string.hpp"
#include "request_building.hpp"

namespace iothub::service {
namespace {

// Far above what Azure accepts (300 s): only keeps the HTTP deadline arithmetic sane; the
// hub judges the real range.
constexpr std::chrono::seconds kMaxMethodTimeout = std::chrono::hours{24};

Status formatError(std::string_view why) {
  return Status(ErrorCode::IotHubFormatError, "Direct method response: " + std::string(why));
}

Result<MethodResponse> parseMethodResponse(const json::value& body) {
  const json::object* o = body.if_object();
  if (o == nullptr) return formatError("expected a JSON object");
  const json::value* status = findMember(*o, "status");
  // Integers that do not fit int64 parse as uint64 and are out of range anyway.
  if (status == nullptr || !status->is_int64()) return formatError("'status' must be an integer");
  std::int64_t code = status->get_int64();
  if (code < std::numeric_limits<int>::min() || code > std::numeric_limits<int>::max()) {
    return formatError("'status' is out of range");
  }
  MethodResponse response;
  response.status = static_cast<int>(code);
  if (const json::value* payload = findMember(*o, "payload")) response.payload = *payload;
  return response;
}

}  // namespace

MethodClient::MethodClient(std::shared_ptr<HttpTransport> transport)
    : transport_(std::move(transport)) {}

Result<MethodClient> MethodClient::fromConnectionString(std::string_view connection_string,
                                                        ServiceClientOptions options) {
  auto parsed = auth::ServiceConnectionString::parse(connection_string);
  if (!parsed) return parsed.status();
  auto transport = HttpTransport::create(std::move(*parsed), std::move(options));
  if (!transport) return transport.status();
  return MethodClient(std::shared_ptr<HttpTransport>(std::move(*transport)));
}

Result<HttpRequest> MethodClient::buildRequest(std::string_view device_id,
                                               const MethodRequest& request) {
  if (device_id.empty()) {
    return Status(ErrorCode::ArgumentInvalid, "The device id must not be empty");
  }
  if (request.method_name.empty()) {
    return Status(ErrorCode::ArgumentInvalid, "The method name must not be empty");
  }
  for (std::chrono::seconds timeout : {request.response_timeout, request.connect_timeout}) {
    if (timeout.count() < 0 || timeout > kMaxMethodTimeout) {
      return Status(ErrorCode::ArgumentInvalid, "Direct method timeouts must be 0 to " +
                                                    std::to_string(kMaxMethodTimeout.count()) +
                                                    " seconds");
    }
  }
  // Field order as the Node SDK sends it (docs/protocol.md §4.4).
  json::object body;
  body["methodName"] = request.method_name;
  body["payload"] = request.payload;
  body["responseTimeoutInSeconds"] = request.response_timeout.count();
  body["connectTimeoutInSeconds"] = request.connect_timeout.count();

  HttpRequest http;
  http.method = "POST";
  http.path = detail::twinPath(device_id) + "/methods";
  http.body = json::serialize(body);
  http.timeout = request.response_timeout + request.connect_timeout + kMethodTimeoutSlack;
  return http;
}

Result<MethodResponse> MethodClient::invoke(std::string_view device_id,
                                            const MethodRequest& request) {
  auto http = buildRequest(device_id, request);
  if (!http) return http.status();
  auto body = transport_->sendJson(*http);
  if (!body) return body.status();
  return parseMethodResponse(*body);
}

}  // namespace iothub::service
