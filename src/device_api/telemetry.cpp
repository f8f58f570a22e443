#include "device_api/telemetry.hpp"

#include <array>

#include "common/encoding.hpp"
#include "common/json.hpp"
#include "mqtt/azure_topics.hpp"

namespace iothub::device_api {
namespace {

// Which TelemetryMessage field a system property fills.
using Field = std::string TelemetryMessage::*;

struct SystemKey {
  std::string_view name;
  Field field;
};

// MQTT property-bag keys (docs/protocol.md §3.10).
constexpr std::array kMqttSystemKeys{
    SystemKey{"$.mid", &TelemetryMessage::message_id},
    SystemKey{"$.cid", &TelemetryMessage::correlation_id},
    SystemKey{"$.uid", &TelemetryMessage::user_id},
    SystemKey{"$.to", &TelemetryMessage::to},
    SystemKey{"$.ct", &TelemetryMessage::content_type},
    SystemKey{"$.ce", &TelemetryMessage::content_encoding},
    SystemKey{"$.ifid", &TelemetryMessage::interface_id},
    SystemKey{"$.exp", &TelemetryMessage::expiry},
    SystemKey{"$.sub", &TelemetryMessage::subject},
};

// HTTP header names (docs/protocol.md §11.2); compared case-insensitively. The batch format
// uses the same names as property keys.
constexpr std::array kHttpSystemKeys{
    SystemKey{"iothub-messageid", &TelemetryMessage::message_id},
    SystemKey{"iothub-correlationid", &TelemetryMessage::correlation_id},
    SystemKey{"iothub-userid", &TelemetryMessage::user_id},
    SystemKey{"iothub-to", &TelemetryMessage::to},
    SystemKey{"iothub-expiry", &TelemetryMessage::expiry},
    SystemKey{"iothub-contenttype", &TelemetryMessage::content_type},
    SystemKey{"iothub-contentencoding", &TelemetryMessage::content_encoding},
    SystemKey{"iothub-interface-id", &TelemetryMessage::interface_id},
    SystemKey{"dt-subject", &TelemetryMessage::subject},
};

constexpr std::string_view kAppPrefix = "iothub-app-";

template <std::size_t N>
const SystemKey* findKey(const std::array<SystemKey, N>& keys, std::string_view name,
                         bool ignore_case) {
  for (const SystemKey& key : keys) {
    if (ignore_case ? equalsIgnoreCase(key.name, name) : key.name == name) return &key;
  }
  return nullptr;
}

bool startsWithIgnoreCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && equalsIgnoreCase(text.substr(0, prefix.size()), prefix);
}

// A key sent twice keeps its last value, in the place of its first (a map, as the SDKs
// build it on the other side).
void setProperty(TelemetryMessage& message, std::string key, std::string value) {
  for (auto& [k, v] : message.properties) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  message.properties.emplace_back(std::move(key), std::move(value));
}

// Shows untrusted text in an error message: printable ASCII only, at most 64 characters.
std::string shown(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (text.size() > 64) out += "...";
  return out;
}

Status tooLarge(std::size_t size, std::size_t limit, std::string_view what) {
  return {ErrorCode::MessageTooLarge, std::string(what) + " is " + std::to_string(size) +
                                          " bytes; at most " + std::to_string(limit) +
                                          " are allowed (body and properties)"};
}

Status batchError(std::size_t index, std::string what) {
  return {ErrorCode::ArgumentInvalid, "Batch entry " + std::to_string(index) + ": " + what};
}

}  // namespace

std::size_t TelemetryMessage::size() const {
  std::size_t total = body.size() + message_id.size() + correlation_id.size() + user_id.size() +
                      to.size() + content_type.size() + content_encoding.size() +
                      interface_id.size() + subject.size() + expiry.size();
  for (const auto& [k, v] : properties) total += k.size() + v.size();
  return total;
}

Result<TelemetryMessage> parseMqttTelemetryTopic(std::string_view device_id,
                                                 std::string_view topic) {
  // The device id is compared as written: the SDKs put it into the topic unencoded
  // (docs/protocol.md §3.10), and device ids never contain '/' (§5.2).
  std::optional<std::string_view> found = mqtt::azure::telemetryPropertyBag(device_id, topic);
  if (!found) {
    return Status(ErrorCode::ArgumentInvalid, "not a telemetry topic of device '" +
                                                  shown(device_id) + "': '" + shown(topic) + "'");
  }
  std::string_view bag = *found;
  if (!bag.empty() && bag.back() == '/') bag.remove_suffix(1);
  if (bag.size() > kMaxPropertyBagLength) {
    return Status(ErrorCode::ArgumentInvalid,
                  "the property bag is " + std::to_string(bag.size()) + " characters; at most " +
                      std::to_string(kMaxPropertyBagLength) + " are allowed");
  }
  TelemetryMessage message;
  message.device_id = std::string(device_id);
  message.source = "mqtt";
  while (!bag.empty()) {
    std::size_t amp = bag.find('&');
    std::string_view pair = bag.substr(0, amp);
    bag = amp == std::string_view::npos ? std::string_view() : bag.substr(amp + 1);
    if (pair.empty()) continue;
    std::size_t eq = pair.find('=');
    std::string_view raw_key = pair.substr(0, eq);
    std::string_view raw_value = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    // Both sides are percent-decoded before they are interpreted (docs/protocol.md §3.11).
    auto key = urlDecode(raw_key);
    auto value = urlDecode(raw_value);
    if (!key || !value) {
      return Status(ErrorCode::ArgumentInvalid,
                    "malformed percent-encoding in the property '" + shown(pair) + "'");
    }
    if (key->empty()) continue;  // "=v" names nothing
    if (const SystemKey* system = findKey(kMqttSystemKeys, *key, false)) {
      message.*(system->field) = std::move(*value);
    } else {
      setProperty(message, std::move(*key), std::move(*value));
    }
  }
  return message;
}

Result<TelemetryMessage> telemetryFromHttp(std::string_view device_id, const HttpHeaders& headers,
                                           std::string body) {
  TelemetryMessage message;
  message.device_id = std::string(device_id);
  message.source = "http";
  message.body = std::move(body);
  for (const auto& [name, value] : headers.fields) {
    if (startsWithIgnoreCase(name, kAppPrefix)) {
      if (name.size() > kAppPrefix.size()) {
        setProperty(message, name.substr(kAppPrefix.size()), value);
      }
    } else if (const SystemKey* system = findKey(kHttpSystemKeys, name, true)) {
      message.*(system->field) = value;
    }
  }
  if (message.size() > kMaxTelemetryMessageBytes) {
    return tooLarge(message.size(), kMaxTelemetryMessageBytes, "The message");
  }
  return message;
}

Result<std::vector<TelemetryMessage>> parseTelemetryBatch(std::string_view device_id,
                                                          std::string_view body) {
  // Four levels are all the format has: array, entry, properties, value.
  auto parsed = parseJson(body, 4);
  if (!parsed) return parsed.status();
  const json::array* entries = parsed->if_array();
  if (entries == nullptr) {
    return Status(ErrorCode::IotHubFormatError, "A batch must be a JSON array of messages");
  }
  if (entries->empty()) return Status(ErrorCode::ArgumentInvalid, "The batch holds no message");
  if (entries->size() > kMaxTelemetryBatchMessages) {
    return Status(ErrorCode::ArgumentInvalid,
                  "The batch holds " + std::to_string(entries->size()) + " messages; at most " +
                      std::to_string(kMaxTelemetryBatchMessages) + " are allowed");
  }
  std::vector<TelemetryMessage> messages;
  messages.reserve(entries->size());
  std::size_t total = 0;
  for (std::size_t i = 0; i < entries->size(); ++i) {
    const json::object* entry = (*entries)[i].if_object();
    if (entry == nullptr) return batchError(i, "must be an object");
    const json::string* text = findString(*entry, "body");
    if (text == nullptr) return batchError(i, "needs a \"body\" string");
    bool base64 = true;
    if (const json::value* flag = findMember(*entry, "base64Encoded")) {
      if (!flag->is_bool()) return batchError(i, "\"base64Encoded\" must be true or false");
      base64 = flag->get_bool();
    }
    TelemetryMessage message;
    message.device_id = std::string(device_id);
    message.source = "http";
    if (base64) {
      auto bytes = base64Decode(std::string_view(text->data(), text->size()));
      if (!bytes) return batchError(i, "\"body\" is not base64");
      message.body = std::move(*bytes);
    } else {
      message.body = std::string(text->data(), text->size());
    }
    if (const json::value* props = findMember(*entry, "properties")) {
      const json::object* object = props->if_object();
      if (object == nullptr) return batchError(i, "\"properties\" must be an object");
      for (const auto& [key, value] : *object) {
        const json::string* v = value.if_string();
        if (v == nullptr) return batchError(i, "property values must be strings");
        std::string_view name(key.data(), key.size());
        std::string val(v->data(), v->size());
        if (startsWithIgnoreCase(name, kAppPrefix)) {
          if (name.size() > kAppPrefix.size()) {
            setProperty(message, std::string(name.substr(kAppPrefix.size())), std::move(val));
          }
        } else if (const SystemKey* system = findKey(kHttpSystemKeys, name, true)) {
          message.*(system->field) = std::move(val);
        } else {
          setProperty(message, std::string(name), std::move(val));
        }
      }
    }
    if (message.size() > kMaxTelemetryMessageBytes) {
      return tooLarge(message.size(), kMaxTelemetryMessageBytes,
                      "Batch entry " + std::to_string(i));
    }
    total += message.size();
    if (total > kMaxTelemetryBatchBytes) {
      return Status(ErrorCode::MessageTooLarge, "The batch's messages exceed " +
                                                    std::to_string(kMaxTelemetryBatchBytes) +
                                                    " bytes together (bodies and properties)");
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

}  // namespace iothub::device_api
