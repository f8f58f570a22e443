#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "auth/policy.hpp"
#include "common/clock.hpp"
#include "common/random.hpp"
#include "common/status.hpp"
#include "device_api/activity.hpp"
#include "device_api/telemetry.hpp"
#include "methods/method_invoker.hpp"
#include "mqtt/packet.hpp"
#include "store/store.hpp"
#include "twin/twin_service.hpp"

namespace iothub::device_api {

// A device that passed CONNECT authentication.
struct DeviceIdentity {
  std::string device_id;
  SystemTime token_expiry;  // the connection is closed at this time (docs/protocol.md §2.4)
};

// Why a CONNECT is refused, as the CONNACK code and a reason for the log.
struct ConnectRefusal {
  mqtt::ConnectReturnCode code;
  std::string reason;
};

// A message the hub sends back to the device in answer to one of its publishes.
struct Reply {
  std::string topic;
  std::string payload;
};

// Why a PUBLISH closes its connection.
enum class CloseCause : std::uint8_t {
  AclViolation,  // a topic the device may not use
  BadMessage,    // a malformed telemetry topic, a message over 256 KiB
  ServerError,   // the hub could not store it (the device sends it again)
};

// What to do with a device's PUBLISH.
struct PublishOutcome {
  std::vector<Reply> replies;  // send these (QoS 0) in order
  bool close = false;          // close the connection, without acknowledging the PUBLISH
  CloseCause cause = CloseCause::AclViolation;
  std::string close_reason;  // for the log
};

// Counters an operator can read (and the metrics endpoint will expose).
struct DeviceEndpointCounters {
  std::atomic<std::uint64_t> telemetry_messages{0};  // taken by the sink (or counted, without one)
  std::atomic<std::uint64_t> telemetry_bytes{0};     // TelemetryMessage::size() of those
  std::atomic<std::uint64_t> telemetry_refused{0};   // the sink failed: no PUBACK, closed
  std::atomic<std::uint64_t> refused_connects{0};
  std::atomic<std::uint64_t> acl_violations{0};
};

// The device-facing protocol of Azure IoT Hub over MQTT (docs/protocol.md §2, §3) without any
// I/O: CONNECT authentication, the topic ACL, persistent sessions, and the twin, method and
// telemetry topics. The transport owns connections and calls in here. Thread-safe; the
// methods marked "blocks" wait on the store, so call them from worker threads.
class DeviceEndpoint {
 public:
  DeviceEndpoint(std::string host_name, store::Store& store,
                 std::vector<store::AccessPolicyRecord> policies, twin::TwinService& twins,
                 methods::MethodInvoker& methods, const Clock& clock, Random& random,
                 routing::PresenceTracker* presence = nullptr, TelemetrySink* telemetry = nullptr);

  // Blocks. Checks the client id, the username `<host>/<deviceId>/?api-version=…`, the SAS
  // password (device key or a DeviceConnect policy), expiry, resource, and that the device
  // exists and is enabled. Refusals: IdentifierRejected (bad client id),
  // BadUserNameOrPassword (malformed credentials), NotAuthorized (wrong/expired token,
  // unknown or disabled device), ServerUnavailable (store failure).
  std::variant<DeviceIdentity, ConnectRefusal> authenticate(const mqtt::Connect& connect);

  // Blocks. Reads the device again after its connection was registered: ok while it exists
  // and is enabled; Unauthorized once it was disabled or deleted (a revocation that
  // committed between authenticate() and the registration found no connection to close);
  // ServiceUnavailable when the store fails.
  Status stillAllowed(std::string_view device_id);

  // The highest QoS granted for `filter`, or Failure when the device may not subscribe to
  // it. Allowed: $iothub/methods/POST/#, $iothub/twin/res/#,
  // $iothub/twin/PATCH/properties/desired/# and devices/{own id}/messages/devicebound/#.
  mqtt::SubAckReturnCode authorizeSubscription(std::string_view device_id, std::string_view filter,
                                               mqtt::QoS requested) const;

  // Blocks. In a cluster, records that this node holds the device's connection (and has
  // the node that held it before close it), returning the claim's epoch for
  // ConnectionRegistry::attach(); 0 on a single node. Errors: ServiceUnavailable (the store
  // failed), DeviceNotFound (deleted meanwhile).
  Result<std::int64_t> claimPresence(std::string_view device_id);
  // Blocks. Gives up a claim whose connection never served (no-op on a single node).
  void releasePresence(std::string_view device_id, std::int64_t epoch);

  // Blocks. Persistent-session state for clean-session 0 connections (docs/protocol.md §2.6).
  Result<std::optional<store::MqttSessionRecord>> loadSession(std::string_view client_id);
  Status saveSession(const store::MqttSessionRecord& session);
  Status deleteSession(std::string_view client_id);

  // Blocks. Handles a device PUBLISH: twin GET and reported PATCH (answered on
  // $iothub/twin/res/…, errors carry {"errorCode":…} bodies, docs/protocol.md §3.5), method
  // responses, telemetry. Any other topic is an ACL violation (close). Telemetry goes to the
  // sink and returns once it was taken, so the transport's PUBACK follows the commit; a
  // message the sink cannot take (store failure, device deleted), one over 256 KiB or a
  // malformed property bag closes the connection without PUBACK (docs/telemetry.md §8), so
  // the device sends it again. Without a sink telemetry is counted and dropped.
  PublishOutcome handlePublish(std::string_view device_id, const mqtt::Publish& publish);

  // Telemetry without blocking the caller (the MQTT transport calls it on its I/O thread):
  // false when `publish` is not a telemetry publish of `device_id` (use handlePublish).
  // Otherwise takes it and calls `done` once with the outcome handlePublish would give,
  // when the sink has taken or refused the message (on the sink's thread: the telemetry
  // log's appender), or at once for a malformed or oversized one. The activity write it may
  // cause runs on the background executor (setBackgroundExecutor), else inline.
  bool publishTelemetryAsync(std::string_view device_id, mqtt::Publish publish,
                             std::function<void(PublishOutcome)> done);
  // Whether `topic` is a telemetry topic of `device_id` (devices/{id}/messages/events[/…]).
  static bool isTelemetryTopic(std::string_view device_id, std::string_view topic);
  // Where publishTelemetryAsync runs its store writes (activity times); set before serving.
  void setBackgroundExecutor(std::function<void(std::function<void()>)> executor) {
    background_ = std::move(executor);
  }

  // Blocks. Records connection-state changes on the device (connectionStateUpdatedTime,
  // lastActivityTime). Failures are logged, not returned.
  // `epoch` is the connection's claimPresence() result: in a cluster, its presence is
  // released (unless a newer connection of the device claimed it since).
  void onConnected(std::string_view device_id);
  void onDisconnected(std::string_view device_id, std::int64_t epoch = 0);

  const DeviceEndpointCounters& counters() const { return counters_; }

 private:
  // The device, if it exists and is enabled. Errors: Unauthorized (unknown or disabled),
  // ServiceUnavailable (the store failed).
  Result<store::DeviceRecord> enabledDevice(std::string_view device_id);
  PublishOutcome twinGet(std::string_view device_id, std::string_view request_id);
  PublishOutcome twinPatchReported(std::string_view device_id, std::string_view request_id,
                                   std::string_view payload);
  Reply twinError(std::string_view request_id, const Status& error);
  // A telemetry publish as a message, or the outcome that closes the connection (a
  // malformed property bag, over 256 KiB).
  std::variant<TelemetryMessage, PublishOutcome> telemetryOf(std::string_view device_id,
                                                             std::string_view topic,
                                                             std::string payload);

  std::string host_name_;
  store::Store& store_;
  std::vector<store::AccessPolicyRecord> policies_;
  twin::TwinService& twins_;
  methods::MethodInvoker& methods_;
  const Clock& clock_;
  Random& random_;
  routing::PresenceTracker* presence_;
  TelemetrySink* telemetry_;
  DeviceEndpointCounters counters_;
  ActivityRecorder activity_;
  std::function<void(std::function<void()>)> background_;
};

}  // namespace iothub::device_api
