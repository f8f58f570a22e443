#include "store/record_codec.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

namespace iothub::store {

std::int64_t toNanoseconds(SystemTime time) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
}

SystemTime fromNanoseconds(std::int64_t nanoseconds) {
  return SystemTime{
      std::chrono::duration_cast<SystemTime::duration>(std::chrono::nanoseconds{nanoseconds})};
}

std::int64_t sqlLimit(std::size_t limit) {
  constexpr auto kMax = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
  return static_cast<std::int64_t>(std::min(limit, kMax));
}

Status storeCorruption(std::string message) {
  return Status(ErrorCode::StoreCorruption, std::move(message));
}

Status deviceNotFound(std::string_view device_id) {
  return Status(ErrorCode::DeviceNotFound, "device '" + std::string(device_id) + "' not found");
}

Status jobNotFound(std::string_view job_id) {
  return Status(ErrorCode::JobNotFound, "job '" + std::string(job_id) + "' not found");
}

std::string_view encodeDeviceStatus(DeviceStatus status) {
  return status == DeviceStatus::Enabled ? "enabled" : "disabled";
}

std::optional<DeviceStatus> decodeDeviceStatus(std::string_view text) {
  if (text == "enabled") return DeviceStatus::Enabled;
  if (text == "disabled") return DeviceStatus::Disabled;
  return std::nullopt;
}

std::string_view encodeAuthType(AuthType type) {
  switch (type) {
    case AuthType::Sas:
      return "sas";
    case AuthType::SelfSigned:
      return "selfSigned";
    case AuthType::CertificateAuthority:
      return "certificateAuthority";
    case AuthType::None:
      return "none";
  }
  return "none";
}

std::optional<AuthType> decodeAuthType(std::string_view text) {
  if (text == "sas") return AuthType::Sas;
  if (text == "selfSigned") return AuthType::SelfSigned;
  if (text == "certificateAuthority") return AuthType::CertificateAuthority;
  if (text == "none") return AuthType::None;
  return std::nullopt;
}

Result<json::object> decodeStoredObject(std::string_view text, std::string_view what) {
  Result<json::value> value = parseJson(text, kMaxStoredJsonDepth);
  if (!value) {
    return storeCorruption("stored " + std::string(what) +
                           " is not valid JSON: " + value.status().message());
  }
  if (!value->is_object()) {
    return storeCorruption("stored " + std::string(what) + " is not an object");
  }
  return std::move(value->as_object());
}

std::string encodeStrings(const std::vector<std::string>& strings) {
  json::array array;
  array.reserve(strings.size());
  for (const std::string& s : strings) array.emplace_back(s);
  return json::serialize(array);
}

Result<std::vector<std::string>> decodeStrings(std::string_view text, std::string_view what) {
  Result<json::value> value = parseJson(text, kMaxStoredJsonDepth);
  const json::array* array = value ? value->if_array() : nullptr;
  if (array == nullptr) {
    return storeCorruption("stored " + std::string(what) + " is not a JSON array");
  }
  std::vector<std::string> strings;
  strings.reserve(array->size());
  for (const json::value& item : *array) {
    const json::string* s = item.if_string();
    if (s == nullptr) {
      return storeCorruption("stored " + std::string(what) + " holds a non-string");
    }
    strings.emplace_back(*s);
  }
  return strings;
}

std::string encodeSubscriptions(const std::vector<MqttSubscriptionRecord>& subscriptions) {
  json::array array;
  array.reserve(subscriptions.size());
  for (const MqttSubscriptionRecord& s : subscriptions) {
    array.push_back(json::object{{"filter", s.filter}, {"qos", s.qos}});
  }
  return json::serialize(array);
}

Result<std::vector<MqttSubscriptionRecord>> decodeSubscriptions(std::string_view text) {
  Result<json::value> value = parseJson(text, kMaxStoredJsonDepth);
  const json::array* array = value ? value->if_array() : nullptr;
  if (array == nullptr) {
    return storeCorruption("mqtt_sessions.subscriptions is not a JSON array");
  }
  std::vector<MqttSubscriptionRecord> subscriptions;
  subscriptions.reserve(array->size());
  for (const json::value& item : *array) {
    const json::object* o = item.if_object();
    const json::string* filter = o != nullptr ? findString(*o, "filter") : nullptr;
    const json::value* qos = o != nullptr ? findMember(*o, "qos") : nullptr;
    if (filter == nullptr || qos == nullptr || !qos->is_int64()) {
      return storeCorruption("mqtt_sessions.subscriptions has a malformed entry");
    }
    subscriptions.push_back({std::string(*filter), static_cast<int>(qos->get_int64())});
  }
  return subscriptions;
}

std::vector<Result<DeviceRecord>> deviceWriteResults(
    const Status& transaction, std::vector<std::optional<Result<DeviceRecord>>>& outcomes,
    std::size_t writes) {
  std::vector<Result<DeviceRecord>> results;
  results.reserve(writes);
  for (std::size_t i = 0; i < writes; ++i) {
    if (!transaction) {
      results.emplace_back(transaction);
    } else if (i < outcomes.size() && outcomes[i]) {
      results.push_back(std::move(*outcomes[i]));
    } else {
      results.emplace_back(Status(ErrorCode::ServerError, "the write was not run"));
    }
  }
  return results;
}

}  // namespace iothub::store
