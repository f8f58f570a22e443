#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/http_message.hpp"
#include "common/status.hpp"

namespace iothub::device_api {

// Azure's limit on one device-to-cloud message, and on the total of one HTTP batch
// (docs/protocol.md §10.2, §11.3). Counted as TelemetryMessage::size().
inline constexpr std::size_t kMaxTelemetryMessageBytes = 256 * 1024;
inline constexpr std::size_t kMaxTelemetryBatchBytes = 256 * 1024;
// The longest property bag parseMqttTelemetryTopic reads. An MQTT 3.1.1 topic cannot be
// longer (its length is a 16-bit field), so a longer bag cannot have come off the wire.
inline constexpr std::size_t kMaxPropertyBagLength = 65535;

// One device-to-cloud message as it arrived, over MQTT or HTTP, with its system properties
// decoded. Text fields the device did not send are empty.
struct TelemetryMessage {
  std::string device_id;
  std::string message_id;        // $.mid / IoTHub-MessageId
  std::string correlation_id;    // $.cid / IoTHub-CorrelationId
  std::string user_id;           // $.uid / IoTHub-UserId
  std::string to;                // $.to / IoTHub-To
  std::string content_type;      // $.ct / iothub-contenttype
  std::string content_encoding;  // $.ce / iothub-contentencoding
  std::string interface_id;      // $.ifid / iothub-interface-id
  std::string subject;           // $.sub / dt-subject (Plug and Play components)
  // $.exp / IoTHub-Expiry exactly as the device wrote it (ISO 8601 by the SDKs). Kept as
  // text: the hub passes it on and does not act on it, so a device's odd format must not
  // make the message fail.
  std::string expiry;
  // Application properties in arrival order; a key sent twice keeps its last value.
  std::vector<std::pair<std::string, std::string>> properties;
  std::string body;
  std::string source;  // "mqtt" or "http"

  // What counts against kMaxTelemetryMessageBytes: the body plus every property's name and
  // value, system ones included (Azure counts the whole message, not only its body).
  std::size_t size() const;
};

// Where accepted telemetry goes (the hub's routing / event stream). accept() blocks until
// the message is taken or refused; it is called from worker threads, concurrently. An error
// is reported to the device as 503 over HTTP (the device retries).
class TelemetrySink {
 public:
  virtual ~TelemetrySink() = default;
  virtual Status accept(TelemetryMessage message) = 0;
  // Several messages (an HTTP batch). The default takes them one after the other and stops
  // at the first failure; a sink that can should take all or none.
  virtual Status acceptAll(std::vector<TelemetryMessage> messages) {
    for (TelemetryMessage& message : messages) {
      if (Status s = accept(std::move(message)); !s) return s;
    }
    return Status::ok();
  }
  // Takes the message without blocking the caller where the sink can (the telemetry log
  // appends in batches on a thread of its own) and calls `done` with what accept() would
  // have returned, once. The default calls accept() on the caller's thread.
  virtual void acceptAsync(TelemetryMessage message, std::function<void(Status)> done) {
    done(accept(std::move(message)));
  }
};

// Reads the topic of a device's telemetry PUBLISH, `devices/{device_id}/messages/events`
// followed by nothing, `/`, or `/{property bag}` (docs/protocol.md §3.10, §3.11). The bag is
// `key=value&key=value`, both sides percent-decoded (so `%24.mid` is `$.mid`); a key without
// `=` has an empty value; empty pairs and one trailing `/` are ignored. System keys fill the
// message's fields ($.mid $.cid $.uid $.to $.ct $.ce $.ifid $.exp $.sub); every other key,
// `$.on` included, is an application property. The body is left empty and source is "mqtt".
// Errors: ArgumentInvalid for a topic of another device or shape, a malformed percent escape
// (naming the offending text), or a bag longer than kMaxPropertyBagLength.
Result<TelemetryMessage> parseMqttTelemetryTopic(std::string_view device_id,
                                                 std::string_view topic);

// The message of an HTTP sendEvent (docs/protocol.md §11.2): `body` as it came, system
// properties from the IoTHub-MessageId, IoTHub-CorrelationId, IoTHub-UserId, IoTHub-To,
// IoTHub-Expiry, iothub-contenttype, iothub-contentencoding, iothub-interface-id and
// dt-subject headers, application properties from the `iothub-app-<name>` headers (names
// compared case-insensitively; the property keeps the case of the header). Source "http".
// Errors: MessageTooLarge when size() exceeds kMaxTelemetryMessageBytes.
Result<TelemetryMessage> telemetryFromHttp(std::string_view device_id, const HttpHeaders& headers,
                                           std::string body);

// The messages of an HTTP sendEventBatch (Content-Type application/vnd.microsoft.iothub.json,
// docs/protocol.md §11.2): a JSON array of {"body": "<base64>", "properties": {...}}, where
// `"base64Encoded": false` (the C SDK's spelling) takes the body as plain text, property keys
// `iothub-app-<name>` are application properties, the system keys of telemetryFromHttp's
// headers (lower case) fill the system fields and other keys are application properties as
// written. Errors: IotHubFormatError / ArgumentInvalid for anything else (not JSON, not an
// array, an empty array, more than kMaxTelemetryBatchMessages entries, a member of the wrong
// type, bad base64); MessageTooLarge when a message, or the sum of all, exceeds 256 KiB.
inline constexpr std::size_t kMaxTelemetryBatchMessages = 500;
Result<std::vector<TelemetryMessage>> parseTelemetryBatch(std::string_view device_id,
                                                          std::string_view body);

}  // namespace iothub::device_api
