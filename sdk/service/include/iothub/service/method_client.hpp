#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "iothub/json.hpp"
#include "iothub/status.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/service_client_options.hpp"

namespace iothub::service {

// One direct-method call (docs/protocol.md §7). Build it as MethodRequest{"reboot"} or
// MethodRequest{"setRate", payload, std::chrono::seconds{60}}.
struct MethodRequest {
  MethodRequest() = default;
  // Implicit by design, so that invoke(id, {"reboot"}) reads naturally.
  // NOLINTNEXTLINE(google-explicit-constructor)
  MethodRequest(std::string name, json::value payload_value = nullptr,
                std::chrono::seconds response_wait = std::chrono::seconds{30},
                std::chrono::seconds connect_wait = std::chrono::seconds{0})
      : method_name(std::move(name)),
        payload(std::move(payload_value)),
        response_timeout(response_wait),
        connect_timeout(connect_wait) {}

  std::string method_name;
  json::value payload;  // any JSON value; null by default
  // How long the hub waits for the device's answer once the request is delivered
  // (Azure accepts 5..300 s).
  std::chrono::seconds response_timeout{30};
  // How long the hub waits for an offline device to connect first (0..300 s; 0 = the
  // device must already be connected).
  std::chrono::seconds connect_timeout{0};
};

// What the device answered. `status` is the device's own status code: the call succeeded
// even when it is, say, 500.
struct MethodResponse {
  int status = 0;
  json::value payload;  // null when the device sent no body
};

// Invokes direct methods on devices through the hub, on the wire like the Node SDK's
// Client.invokeDeviceMethod: POST /twins/{id}/methods with
// {"methodName","payload","responseTimeoutInSeconds","connectTimeoutInSeconds"}.
//
// The HTTP request may legitimately take connect_timeout + response_timeout, so its
// deadline is that plus kMethodTimeoutSlack, whatever ServiceClientOptions::timeout says.
//
// Errors: ArgumentInvalid for an empty device id or method name, or a timeout that is
// negative or longer than a day (nothing is sent); the hub's, mapped by
// statusFromErrorResponse(): DeviceNotFound (unknown device), DeviceNotOnline (404103: not
// connected within connect_timeout), GatewayTimeout (504101: no answer within
// response_timeout), ArgumentInvalid (e.g. a timeout out of range); IotHubFormatError for
// a reply without an integer "status"; or transport failures (isTransportFailure()).
// Thread-safety is that of the shared HttpTransport: a call holds the transport (and its one
// connection) for its whole duration.
class MethodClient {
 public:
  // Allowance over the method's own timeouts for connecting, TLS and the hub's processing.
  static constexpr std::chrono::seconds kMethodTimeoutSlack{10};

  explicit MethodClient(std::shared_ptr<HttpTransport> transport);

  // Parses a service connection string and opens a transport for it. Errors: ArgumentInvalid.
  static Result<MethodClient> fromConnectionString(std::string_view connection_string,
                                                   ServiceClientOptions options = {});

  Result<MethodResponse> invoke(std::string_view device_id, const MethodRequest& request);

  // The HTTP request invoke() sends, without sending it. Errors: ArgumentInvalid as above.
  static Result<HttpRequest> buildRequest(std::string_view device_id, const MethodRequest& request);

  const std::shared_ptr<HttpTransport>& transport() const { return transport_; }

 private:
  std::shared_ptr<HttpTransport> transport_;
};

}  // namespace iothub::service
