#include "iothub/service/twin_client.hpp"

#include "auth/connection_string.hpp"
#include "request_building.hpp"

namespace iothub::service {
namespace {

HttpRequest twinRequest(std::string method, std::string_view device_id) {
  HttpRequest request;
  request.method = std::move(method);
  request.path = detail::twinPath(device_id);
  return request;
}

Status emptyDeviceId() {
  return Status(ErrorCode::ArgumentInvalid, "The device id must not be empty");
}

}  // namespace

TwinClient::TwinClient(std::shared_ptr<HttpTransport> transport)
    : transport_(std::move(transport)) {}

Result<TwinClient> TwinClient::fromConnectionString(std::string_view connection_string,
                                                    ServiceClientOptions options) {
  auto parsed = auth::ServiceConnectionString::parse(connection_string);
  if (!parsed) return parsed.status();
  auto transport = HttpTransport::create(std::move(*parsed), std::move(options));
  if (!transport) return transport.status();
  return TwinClient(std::shared_ptr<HttpTransport>(std::move(*transport)));
}

Result<Twin> TwinClient::get(std::string_view device_id) {
  if (device_id.empty()) return emptyDeviceId();
  return send(twinRequest("GET", device_id));
}

Result<Twin> TwinClient::update(std::string_view device_id, const json::object& patch,
                                std::string_view etag) {
  if (device_id.empty()) return emptyDeviceId();
  HttpRequest request = twinRequest("PATCH", device_id);
  request.if_match = std::string(etag);
  request.body = json::serialize(patch);
  return send(request);
}

Result<Twin> TwinClient::replace(std::string_view device_id, const json::object& twin,
                                 std::string_view etag) {
  if (device_id.empty()) return emptyDeviceId();
  HttpRequest request = twinRequest("PUT", device_id);
  request.if_match = std::string(etag);
  request.body = json::serialize(twin);
  return send(request);
}

Result<Twin> TwinClient::send(const HttpRequest& request) {
  auto body = transport_->sendJson(request);
  if (!body) return body.status();
  return Twin::fromJson(*body);
}

}  // namespace iothub::service
