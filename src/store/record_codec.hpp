#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/status.hpp"
#include "store/records.hpp"

namespace iothub::store {

// How every SQL backend spells record fields in columns, so that the backends store the
// same values the same way and a value read back from either decodes identically.
//
// Decoders treat what they read as data the store wrote itself: a value that does not
// decode is StoreCorruption naming `what` (never an exception).

// Stored documents were validated by the domain modules before they were written; this
// bound only keeps a damaged database from exhausting memory or the stack.
inline constexpr std::size_t kMaxStoredJsonDepth = 512;

// Times are stored as integer nanoseconds since the Unix epoch (0 = never).
std::int64_t toNanoseconds(SystemTime time);
SystemTime fromNanoseconds(std::int64_t nanoseconds);

// A page size as an SQL LIMIT (which is a signed 64-bit integer).
std::int64_t sqlLimit(std::size_t limit);

Status storeCorruption(std::string message);
Status deviceNotFound(std::string_view device_id);
Status jobNotFound(std::string_view job_id);

// 'enabled' | 'disabled'
std::string_view encodeDeviceStatus(DeviceStatus status);
std::optional<DeviceStatus> decodeDeviceStatus(std::string_view text);

// 'sas' | 'selfSigned' | 'certificateAuthority' | 'none'
std::string_view encodeAuthType(AuthType type);
std::optional<AuthType> decodeAuthType(std::string_view text);

// A JSON object column (twin sections, job documents). Errors: StoreCorruption.
Result<json::object> decodeStoredObject(std::string_view text, std::string_view what);

// A list of strings as a JSON array (parent scopes). Errors: StoreCorruption.
std::string encodeStrings(const std::vector<std::string>& strings);
Result<std::vector<std::string>> decodeStrings(std::string_view text, std::string_view what);

// MQTT subscriptions as a JSON array of {"filter": text, "qos": int}. Errors: StoreCorruption.
std::string encodeSubscriptions(const std::vector<MqttSubscriptionRecord>& subscriptions);
Result<std::vector<MqttSubscriptionRecord>> decodeSubscriptions(std::string_view text);

}  // namespace iothub::store
