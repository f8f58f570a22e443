#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "c2d/cloud_to_device.hpp"
#include "common/clock.hpp"
#include "common/http_message.hpp"
#include "common/random.hpp"
#include "common/status.hpp"
#include "device_api/activity.hpp"
#include "device_api/telemetry.hpp"
#include "store/store.hpp"

namespace iothub::device_api {

// The content type that makes a POST to /messages/events a batch (docs/protocol.md §11.2).
inline constexpr std::string_view kBatchContentType = "application/vnd.microsoft.iothub.json";
// Longest lock token the routes pass on to the c2d module: ours are UUIDs, so anything much
// longer is answered as a lost lock without a store read.
inline constexpr std::size_t kMaxLockTokenLength = 128;

// What a device HTTP request asks for, once its method and target are understood.
struct DeviceHttpRoute {
  enum class Kind { SendEvent, Receive, Complete, Reject, Abandon };
  Kind kind = Kind::SendEvent;
  std::string device_id;   // percent-decoded, valid by the registry's rules
  std::string lock_token;  // percent-decoded; Complete, Reject and Abandon only
};

// Reads a request's method and target (docs/protocol.md §11.1): the routes of the table in
// §11.2 to §11.4, the `api-version` query parameter (required, any value, as the SDKs all
// send one), the device id (percent-decoded, then the registry's id rules) and the lock
// token. Path literals are matched case-insensitively (C# writes `deviceBound`).
// Errors: NotFound (a path this API does not serve), MethodNotAllowed (a known path,
// another method), ArgumentInvalid (no api-version, a malformed target or device id).
// Pure: the fuzz target and the unit tests call it directly.
Result<DeviceHttpRoute> parseDeviceHttpRoute(std::string_view method, std::string_view target);

// The one method the route of `target` serves ("POST", "GET", "DELETE"), or "" when the
// path is none of this API's: the Allow header of a 405.
std::string allowedMethod(std::string_view target);

// The 200 answer of a receive (docs/protocol.md §11.4): the body's bytes; ETag is the lock
// token in double quotes; iothub-* headers for the system properties; Content-Type and
// Content-Encoding when the message has them; one `iothub-app-<name>` header per
// application property. A property (or a system property) whose name or value cannot be
// written as an HTTP header (a name that is not an HTTP token, a value with control
// characters) is left out rather than corrupting the response.
HttpResponse receiveResponse(const c2d::DeviceMessage& message);

// Counters an operator can read (the metrics endpoint will expose them).
struct DeviceHttpCounters {
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> unauthorized{0};        // answered 401
  std::atomic<std::uint64_t> telemetry_messages{0};  // accepted (batches count each message)
  std::atomic<std::uint64_t> telemetry_bytes{0};     // TelemetryMessage::size() of those
  std::atomic<std::uint64_t> telemetry_dropped{0};   // accepted without a sink
  std::atomic<std::uint64_t> telemetry_refused{0};   // the sink failed (answered 503)
  std::atomic<std::uint64_t> receives{0};            // a message handed out (200)
  std::atomic<std::uint64_t> empty_receives{0};      // nothing waiting (204)
  std::atomic<std::uint64_t> completes{0};
  std::atomic<std::uint64_t> rejects{0};
  std::atomic<std::uint64_t> abandons{0};
  std::atomic<std::uint64_t> lock_lost{0};  // settlements answered 412
};

// The device-facing HTTPS transport of Azure IoT Hub (docs/protocol.md §11): telemetry
// (single and batch) and cloud-to-device polling, completion, rejection and abandonment, as
// `azure-iot-device-http` uses them. A pure request handler without I/O: the hub routes the
// requests for which handles() is true here. Thread-safe; handle() blocks on the store, so
// call it from a worker thread.
class DeviceHttpApi {
 public:
  // `telemetry` may be null: telemetry is then accepted, counted and dropped. Every
  // reference must outlive the object.
  DeviceHttpApi(std::string host_name, store::Store& store,
                std::vector<store::AccessPolicyRecord> policies, c2d::CloudToDevice& c2d,
                TelemetrySink* telemetry, const Clock& clock, Random& random);

  // Whether `target` (origin form, query included) is a device HTTP path:
  // /devices/{id}/messages/events and /devices/{id}/messages/devicebound[/...]. Everything
  // else, /devices/{id}, /devices/{id}/twin and the like included, is the service API's.
  static bool handles(std::string_view target);

  // Blocks. Answers one request: route and api-version (parseDeviceHttpRoute), then the
  // device's SAS token in Authorization (auth::verifyDeviceToken: the device's key, or a
  // policy with DeviceConnect; the token must cover this device), then the call. Errors
  // carry the service API's Azure-shaped bodies (service_api::errorResponse): 400, 401 (bad,
  // expired or foreign token, unknown or disabled device: Azure does not tell which), 404,
  // 405, 412 DeviceMessageLockLost, 413, 503 (store or telemetry sink failed).
  HttpResponse handle(const HttpRequest& request);

  const DeviceHttpCounters& counters() const { return counters_; }

 private:
  // The device, when the request's token authenticates it. Errors: Unauthorized,
  // ServiceUnavailable (the store failed).
  Status authenticate(const HttpRequest& request, std::string_view device_id);
  HttpResponse sendEvent(const HttpRequest& request, const DeviceHttpRoute& route);
  HttpResponse receive(const HttpRequest& request, const DeviceHttpRoute& route);
  HttpResponse settle(const HttpRequest& request, const DeviceHttpRoute& route);
  HttpResponse fail(const HttpRequest& request, const Status& status);
  Status deliver(std::vector<TelemetryMessage> messages);

  std::string host_name_;
  store::Store& store_;
  std::vector<store::AccessPolicyRecord> policies_;
  c2d::CloudToDevice& c2d_;
  TelemetrySink* telemetry_;
  const Clock& clock_;
  Random& random_;
  DeviceHttpCounters counters_;
  ActivityRecorder activity_;
};

}  // namespace iothub::device_api
