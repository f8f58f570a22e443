#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "iothub/clock.hpp"
#include "iothub/json.hpp"
#include "iothub/random.hpp"
#include "iothub/status.hpp"
#include "iothub/device/connection_status.hpp"
#include "iothub/device/device_client_options.hpp"

namespace iothub::device {

// What a direct-method handler answers: any status the application chooses (docs/protocol.md §3.8)
// and a JSON payload (null when there is nothing to say).
struct MethodResponse {
  int status = 200;
  json::value payload;
};

// Handles one direct-method call; gets the request payload (JSON, null when empty).
using MethodHandler = std::function<MethodResponse(const json::value& payload)>;
// A desired-properties update: the patch as the hub sent it (including "$version"; a null
// member means "deleted") and the new desired version.
using DesiredHandler = std::function<void(const json::object& patch, std::int64_t version)>;
using ConnectionStatusHandler = std::function<void(const ConnectionStatusChange& change)>;
// Telemetry application and system properties ("$.ct", "$.ce", "$.mid", ... are system
// properties, docs/protocol.md §3.10). Each key and value is percent-encoded into the topic.
using MessageProperties = std::map<std::string, std::string>;

// A device's connection to an IoT hub over MQTT 3.1.1 (over TLS), on the wire exactly like
// the Azure IoT device SDKs (docs/protocol.md §2, §3):
//   - CONNECT: client id = device id; user name
//     "<HostName>/<deviceId>/?api-version=2021-04-12&DeviceClientType=iothub-cpp-device%2F0.1";
//     password = a SAS token signed with the device key (sr = the strictly URL-encoded
//     "<HostName>/devices/<deviceId>", no skn); CleanSession 0; keep-alive from the options.
//   - The SAS token is renewed renew_before its expiry by DISCONNECT and a new connection
//     with a fresh token, like the Node SDK (after waiting, at most request_timeout, for the
//     answers to twin requests already sent). Whenever a CONNACK says session-present 0,
//     every subscription in use is made again before the client reports Connected; with
//     session-present 1 the hub's session is trusted to still hold them.
//   - Subscriptions are made lazily, when a feature is first used: $iothub/methods/POST/#
//     (onMethod), $iothub/twin/res/# (first twin request), $iothub/twin/PATCH/properties/
//     desired/# (onDesired), all QoS 0. A subscription the hub refuses (SUBACK 0x80) stays
//     missing until the next connection; twin requests then fail with Unauthorized.
//   - Any dropped connection or failed attempt is retried with RetryPolicy back-off.
//
// Threading: the client owns one I/O thread. Every callback (method, desired, connection
// status, and the completions of the *Async calls) runs on it, one at a time, in the order
// the events happened; a slow callback delays all traffic of this client. All public members
// are thread-safe. The blocking calls (open, getTwin, patchReported, sendEvent) must not be
// called from a callback: they return InvalidOperation there (use the *Async variants).
// close() called from a callback starts the close and returns at once. Callbacks must not
// throw, except method handlers (see onMethod): an exception escaping one on the I/O thread
// terminates the process.
//
// Operations issued while the client is open but reconnecting wait for the connection,
// within request_timeout. Telemetry not acknowledged when a connection drops is sent again
// (DUP set) on the next one: delivery is at-least-once. A twin request whose connection
// drops before the answer fails (ServiceUnavailable): it may or may not have been applied.
class DeviceClient {
 public:
  // Parses a device connection string (HostName, DeviceId, SharedAccessKey, optional
  // GatewayHostName=host[:port]). Does not connect. `clock` dates the SAS tokens (nullptr =
  // system clock); `random` drives back-off jitter (nullptr = SecureRandom).
  // Errors: ArgumentInvalid for a malformed connection string, a connection string without
  // SharedAccessKey (SharedAccessSignature, x509 and module identities are not supported),
  // invalid options (endpoint, token lifetimes, retry policy, timeouts) or an unreadable
  // CA file.
  static Result<std::unique_ptr<DeviceClient>> create(std::string_view connection_string,
                                                      DeviceClientOptions options = {},
                                                      std::shared_ptr<const Clock> clock = nullptr,
                                                      std::shared_ptr<Random> random = nullptr);
  // Closes (see close()), lets every pending completion run (with Cancelled) and joins the
  // I/O thread. Must not run on that thread, i.e. in a callback (checked).
  ~DeviceClient();
  DeviceClient(const DeviceClient&) = delete;
  DeviceClient& operator=(const DeviceClient&) = delete;

  // ---- Handlers: register before open() so that their subscriptions are in place when
  // open() returns; registering later subscribes in the background. ----

  // Answers direct method `name` (case-sensitive). A call for a method without a handler is
  // answered with status 501 and {"message":"Method '<name>' is not implemented by this
  // device"} (the Node SDK does not answer at all, which makes the service wait for its
  // timeout). A payload that is not JSON is answered with 400 {"message":"Invalid request
  // format: ..."}; an empty payload is passed as null. A handler that throws is answered
  // with 500 {"message":"Method '<name>' failed: <what()>"}. Replaces an earlier handler.
  void onMethod(std::string name, MethodHandler handler);
  // Receives desired-property updates. Notifications whose payload is not a JSON object are
  // dropped. Replaces an earlier handler.
  void onDesired(DesiredHandler handler);
  // Receives every connection status change (no repeats of the same status and reason).
  void onConnectionStatus(ConnectionStatusHandler handler);

  // ---- Lifecycle ----

  // Connects, retrying with back-off, and returns once Connected (see ConnectionStatus).
  // Ok at once when the client is already open, even while it reconnects.
  // Errors: Unauthorized when the FIRST connection attempt of this open() is refused with
  // CONNACK 4 (bad user name or password) or 5 (not authorized), and ArgumentInvalid for
  // 1 or 2 (protocol version, identifier rejected): these are final and not retried, as in
  // the Node SDK (a wrong key never fixes itself). Once connected, a refusal on a later
  // reconnect is retried with back-off (the hub may have been restarted, the device
  // re-enabled or its key restored). ServiceUnavailable when RetryPolicy::max_attempts
  // attempts failed; Cancelled when close() was called meanwhile; InvalidOperation when
  // called from a callback or while close() is in progress.
  Status open();
  // Sends DISCONNECT, closes the connection, stops reconnecting and fails pending operations
  // with Cancelled. Idempotent. open() may be called again afterwards.
  void close();

  // ---- Twins (docs/protocol.md §3.3-3.7) ----

  // GET $iothub/twin/GET/?$rid=n. Returns the twin's properties section,
  // {"desired":{...,"$version":n},"reported":{...,"$version":m}}.
  // Errors: InvalidOperation when the client is not open (or called from a callback);
  // the hub's error when the answer carries a non-zero errorCode or a status >= 300 (code
  // from errorCode, else from the status); IotHubFormatError for an answer without desired
  // and reported objects; Unauthorized when the hub refuses the $iothub/twin/res/#
  // subscription; GatewayTimeout after request_timeout; ServiceUnavailable when the
  // connection dropped before the answer; Cancelled by close().
  Result<json::object> getTwin();
  // PATCH $iothub/twin/PATCH/properties/reported/?$rid=n with `patch` (null members delete).
  // Returns the new reported version ($version of the 204 answer's topic). Errors as
  // getTwin, and IotHubFormatError when a success answer has no $version.
  Result<std::int64_t> patchReported(const json::object& patch);

  // ---- Telemetry (docs/protocol.md §3.10) ----

  // PUBLISH QoS 1 to devices/{deviceId}/messages/events/{property bag}, the bag being
  // urlEncodeStrict(key)=urlEncodeStrict(value) pairs joined by '&' in key order (so "$.ct"
  // goes out as "%24.ct", like Node). Returns when the hub's PUBACK arrives. Errors:
  // MessageTooLarge above 256 KiB (the Node SDK's limit); ArgumentInvalid when the topic is
  // not a valid MQTT topic name (a device id with '+' or '#'); InvalidOperation,
  // GatewayTimeout and Cancelled as for getTwin.
  Status sendEvent(std::string payload, const MessageProperties& properties = {});

  // ---- Non-blocking variants: same behaviour and errors, completion on the I/O thread;
  // usable from callbacks. The completion is always called exactly once. ----
  void openAsync(std::function<void(Status)> done);
  void getTwinAsync(std::function<void(Result<json::object>)> done);
  void patchReportedAsync(json::object patch, std::function<void(Result<std::int64_t>)> done);
  void sendEventAsync(std::string payload, MessageProperties properties,
                      std::function<void(Status)> done);

  const std::string& deviceId() const;
  const std::string& hostName() const;
  // Where connections go, "host:port".
  const std::string& endpoint() const;

 private:
  class Impl;
  explicit DeviceClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace iothub::device
