#include "device_api/device_endpoint.hpp"

#include <spdlog/spdlog.h>

#include <future>

#include "auth/sas_token.hpp"
#include "common/encoding.hpp"
#include "common/time_format.hpp"
#include "mqtt/azure_topics.hpp"

namespace iothub::device_api {
namespace {

using mqtt::ConnectReturnCode;
using mqtt::SubAckReturnCode;

ConnectRefusal refuse(ConnectReturnCode code, std::string reason) {
  return {code, std::move(reason)};
}

// Splits "a=b&c=d" bag entries, URL-decoding both sides (docs/protocol.md §3.11).
std::string describePropertyBag(std::string_view bag) {
  std::string out;
  while (!bag.empty()) {
    auto amp = bag.find('&');
    std::string_view pair = bag.substr(0, amp);
    bag = amp == std::string_view::npos ? std::string_view() : bag.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    auto key = urlDecode(pair.substr(0, eq));
    auto value = eq == std::string_view::npos ? std::optional<std::string>("")
                                              : urlDecode(pair.substr(eq + 1));
    if (!out.empty()) out += ", ";
    out += (key ? *key : std::string(pair.substr(0, eq))) + "=" + (value ? *value : "?");
  }
  return out;
}

PublishOutcome closeWith(CloseCause cause, std::string reason) {
  PublishOutcome out;
  out.close = true;
  out.cause = cause;
  out.close_reason = std::move(reason);
  return out;
}

PublishOutcome telemetryRefused(const Status& status) {
  return closeWith(CloseCause::ServerError,
                   "telemetry not stored, the device sends it again: " + status.toString());
}

}  // namespace

DeviceEndpoint::DeviceEndpoint(std::string host_name, store::Store& store,
                               std::vector<store::AccessPolicyRecord> policies,
                               twin::TwinService& twins, methods::MethodInvoker& methods,
                               const Clock& clock, Random& random,
                               routing::PresenceTracker* presence, TelemetrySink* telemetry)
    : host_name_(std::move(host_name)),
      store_(store),
      policies_(std::move(policies)),
      twins_(twins),
      methods_(methods),
      clock_(clock),
      random_(random),
      presence_(presence),
      telemetry_(telemetry),
      activity_(store, clock) {}

std::variant<DeviceIdentity, ConnectRefusal> DeviceEndpoint::authenticate(
    const mqtt::Connect& connect) {
  auto refused = [this](ConnectReturnCode code, std::string reason) {
    ++counters_.refused_connects;
    return refuse(code, std::move(reason));
  };
  const std::string& device_id = connect.client_id;
  if (device_id.empty() || device_id.find('/') != std::string::npos) {
    // Module identities (deviceId/moduleId) are not supported yet.
    return refused(ConnectReturnCode::IdentifierRejected, "client id must be a device id");
  }
  if (!connect.user_name || !connect.password) {
    return refused(ConnectReturnCode::BadUserNameOrPassword,
                   "username and SAS token password are required");
  }
  // Username: "<host>/<deviceId>/?api-version=…" or just "<host>/<deviceId>"
  // (docs/protocol.md §2.2).
  std::string_view user = *connect.user_name;
  user = user.substr(0, user.find("/?"));
  if (!user.empty() && user.back() == '/') user.remove_suffix(1);
  auto slash = user.find('/');
  if (slash == std::string_view::npos || user.substr(slash + 1) != device_id ||
      !equalsIgnoreCase(user.substr(0, slash), host_name_)) {
    return refused(ConnectReturnCode::BadUserNameOrPassword,
                   "username must be '" + host_name_ + "/" + device_id + "/?api-version=…'");
  }
  // A hostile password is refused before it costs a store read (docs/limits.md).
  if (connect.password->size() > auth::kMaxSasTokenLength) {
    return refused(ConnectReturnCode::NotAuthorized, "the SAS token is too long");
  }
  auto device = enabledDevice(device_id);
  if (!device) {
    return refused(device.code() == ErrorCode::ServiceUnavailable
                       ? ConnectReturnCode::ServerUnavailable
                       : ConnectReturnCode::NotAuthorized,
                   device.status().message());
  }
  auto expiry =
      auth::verifyDeviceToken(*connect.password, host_name_, device_id, device->primary_key,
                              device->secondary_key, policies_, clock_);
  if (!expiry) return refused(ConnectReturnCode::NotAuthorized, expiry.status().message());
  return DeviceIdentity{device_id, *expiry};
}

Status DeviceEndpoint::stillAllowed(std::string_view device_id) {
  return enabledDevice(device_id).status();
}

Result<std::int64_t> DeviceEndpoint::claimPresence(std::string_view device_id) {
  if (presence_ == nullptr) return std::int64_t{0};
  auto epoch = presence_->claim(device_id);
  if (!epoch && epoch.code() != ErrorCode::DeviceNotFound) {
    return Status(ErrorCode::ServiceUnavailable, epoch.status().toString());
  }
  return epoch;
}

void DeviceEndpoint::releasePresence(std::string_view device_id, std::int64_t epoch) {
  if (presence_ != nullptr && epoch != 0) presence_->release(device_id, epoch);
}

Result<store::DeviceRecord> DeviceEndpoint::enabledDevice(std::string_view device_id) {
  auto device = store_.registry().getDevice(device_id);
  if (!device) {
    if (device.code() == ErrorCode::DeviceNotFound) {
      return Status(ErrorCode::Unauthorized, "unknown device");
    }
    return Status(ErrorCode::ServiceUnavailable, device.status().toString());
  }
  if (device->status != store::DeviceStatus::Enabled) {
    return Status(ErrorCode::Unauthorized, "the device is disabled");
  }
  return device;
}

SubAckReturnCode DeviceEndpoint::authorizeSubscription(std::string_view device_id,
                                                       std::string_view filter,
                                                       mqtt::QoS requested) const {
  auto grant = [requested](mqtt::QoS max) {
    return mqtt::grantedQoS(static_cast<int>(requested) < static_cast<int>(max) ? requested : max);
  };
  if (mqtt::azure::isDeviceSubscriptionFilter(device_id, filter)) {
    return grant(mqtt::QoS::AtLeastOnce);
  }
  return SubAckReturnCode::Failure;
}

Result<std::optional<store::MqttSessionRecord>> DeviceEndpoint::loadSession(
    std::string_view client_id) {
  return store_.mqttSessions().getSession(client_id);
}

Status DeviceEndpoint::saveSession(const store::MqttSessionRecord& session) {
  return store_.mqttSessions().putSession(session);
}

Status DeviceEndpoint::deleteSession(std::string_view client_id) {
  // Most clean-session connects find no stored session: a read spares them a durable write
  // (a store transaction and its commit wait on every connect of a clean-session fleet).
  auto existing = store_.mqttSessions().getSession(client_id);
  if (existing && !existing->has_value()) return Status::ok();
  return store_.mqttSessions().deleteSession(client_id);
}

Reply DeviceEndpoint::twinError(std::string_view request_id, const Status& error) {
  const ErrorInfo& info = errorInfo(error.code());
  int status = info.http_status >= 400 ? info.http_status : 500;
  int code = info.azure_code != 0 ? info.azure_code : status * 1000 + 1;
  json::object body{{"errorCode", code},
                    {"trackingId", random_.hex(16)},
                    {"message", error.message()},
                    {"timestampUtc", formatTimestamp(clock_.now())}};
  return {mqtt::azure::twinResponseTopic(status, request_id), json::serialize(body)};
}

static PublishOutcome replyWith(Reply reply) {
  PublishOutcome out;
  out.replies.push_back(std::move(reply));
  return out;
}

PublishOutcome DeviceEndpoint::twinGet(std::string_view device_id, std::string_view request_id) {
  auto twin = twins_.deviceGetTwin(device_id);
  if (!twin) return replyWith(twinError(request_id, twin.status()));
  return replyWith({mqtt::azure::twinResponseTopic(200, request_id), json::serialize(*twin)});
}

PublishOutcome DeviceEndpoint::twinPatchReported(std::string_view device_id,
                                                 std::string_view request_id,
                                                 std::string_view payload) {
  auto patch = parseJson(payload);
  if (!patch) return replyWith(twinError(request_id, patch.status()));
  auto version = twins_.devicePatchReported(device_id, *patch);
  if (!version) return replyWith(twinError(request_id, version.status()));
  return replyWith({mqtt::azure::twinResponseTopic(204, request_id, *version), ""});
}

PublishOutcome DeviceEndpoint::handlePublish(std::string_view device_id,
                                             const mqtt::Publish& publish) {
  std::string_view topic = publish.topic;
  auto violation = [&](std::string reason) {
    ++counters_.acl_violations;
    return closeWith(CloseCause::AclViolation, std::move(reason));
  };
  if (auto twin = mqtt::azure::parseTwinRequestTopic(topic)) {
    if (twin->rid.empty()) return violation("twin request without $rid");
    if (twin->kind == mqtt::azure::TwinRequestKind::Get) return twinGet(device_id, twin->rid);
    return twinPatchReported(device_id, twin->rid, publish.payload);
  }
  if (mqtt::azure::isMethodResponseTopic(topic)) {
    auto response = mqtt::azure::parseMethodResponseTopic(topic);
    if (!response) return violation("malformed method response topic");
    if (!methods_.onResponse(device_id, response->rid, response->status, publish.payload)) {
      spdlog::debug("device {}: method response for unknown or expired request {}", device_id,
                    response->rid);
    }
    return {};
  }
  if (isTelemetryTopic(device_id, topic)) {
    // The asynchronous path, waited for: one implementation of telemetry.
    std::promise<PublishOutcome> taken;
    std::future<PublishOutcome> outcome = taken.get_future();
    publishTelemetryAsync(device_id, publish,
                          [&taken](PublishOutcome o) { taken.set_value(std::move(o)); });
    return outcome.get();
  }
  return violation("publish to a topic the device may not use: " +
                   std::string(topic.substr(0, 128)));
}

bool DeviceEndpoint::isTelemetryTopic(std::string_view device_id, std::string_view topic) {
  return mqtt::azure::telemetryPropertyBag(device_id, topic).has_value();
}

std::variant<TelemetryMessage, PublishOutcome> DeviceEndpoint::telemetryOf(
    std::string_view device_id, std::string_view topic, std::string payload) {
  auto message = parseMqttTelemetryTopic(device_id, topic);
  if (!message) {
    return closeWith(CloseCause::BadMessage,
                     "malformed telemetry topic: " + message.status().message());
  }
  message->body = std::move(payload);
  std::size_t size = message->size();
  if (size > kMaxTelemetryMessageBytes) {
    return closeWith(CloseCause::BadMessage, "telemetry message of " + std::to_string(size) +
                                                 " bytes, over the 256 KiB limit");
  }
  if (spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug(
        "device {}: telemetry {} bytes [{}]", device_id, message->body.size(),
        describePropertyBag(mqtt::azure::telemetryPropertyBag(device_id, topic).value_or("")));
  }
  return std::move(*message);
}

bool DeviceEndpoint::publishTelemetryAsync(std::string_view device_id, mqtt::Publish publish,
                                           std::function<void(PublishOutcome)> done) {
  if (!isTelemetryTopic(device_id, publish.topic)) return false;
  auto parsed = telemetryOf(device_id, publish.topic, std::move(publish.payload));
  if (auto* refused = std::get_if<PublishOutcome>(&parsed)) {
    done(std::move(*refused));
    return true;
  }
  auto& message = std::get<TelemetryMessage>(parsed);
  if (activity_.due(device_id)) {
    if (background_) {
      background_([this, id = std::string(device_id)] { activity_.write(id); });
    } else {
      activity_.write(device_id);
    }
  }
  std::size_t size = message.size();
  if (telemetry_ == nullptr) {
    ++counters_.telemetry_messages;
    counters_.telemetry_bytes += size;
    done({});
    return true;
  }
  telemetry_->acceptAsync(std::move(message), [this, size, done = std::move(done)](Status taken) {
    if (!taken) {
      ++counters_.telemetry_refused;
      done(telemetryRefused(taken));
      return;
    }
    ++counters_.telemetry_messages;
    counters_.telemetry_bytes += size;
    done({});
  });
  return true;
}

void DeviceEndpoint::onConnected(std::string_view device_id) { activity_.record(device_id, true); }
void DeviceEndpoint::onDisconnected(std::string_view device_id, std::int64_t epoch) {
  releasePresence(device_id, epoch);
  activity_.record(device_id, true);
  activity_.forget(device_id);
}

}  // namespace iothub::device_api
