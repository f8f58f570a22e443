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

namespace iothub::store {

// Decoding a row of the record's columns, in the order both backends select them:
//   devices:         device_id, generation_id, etag, status, status_reason,
//                    status_updated_time, auth_type, primary_key, secondary_key,
//                    primary_thumbprint, secondary_thumbprint, iot_edge, device_scope,
//                    parent_scopes, connection_state_updated_time, last_activity_time,
//                    cloud_to_device_message_count
//   twins:           device_id, tags, desired, reported, version, desired_version,
//                    reported_version
//   jobs:            job_id, type, status, created_time, start_time, end_time, document
//   device_jobs:     job_id, device_id, status, last_updated_time, document
//   access_policies: name, primary_key, secondary_key, permissions
// `Row` is a backend's row accessor with 0-based columns: isNull(c), text(c),
// optionalText(c), int64(c) and flag(c) (a boolean column).

template <class Row>
Result<DeviceRecord> decodeDeviceRow(const Row& row) {
  DeviceRecord device;
  device.device_id = row.text(0);
  device.generation_id = row.text(1);
  device.etag = row.text(2);
  std::optional<DeviceStatus> status = decodeDeviceStatus(row.text(3));
  if (!status) {
    return storeCorruption("stored status of device '" + device.device_id + "' is unknown");
  }
  device.status = *status;
  device.status_reason = row.optionalText(4);
  device.status_updated_time = fromNanoseconds(row.int64(5));
  std::optional<AuthType> auth_type = decodeAuthType(row.text(6));
  if (!auth_type) {
    return storeCorruption("stored authentication type of device '" + device.device_id +
                           "' is unknown");
  }
  device.auth_type = *auth_type;
  device.primary_key = row.text(7);
  device.secondary_key = row.text(8);
  device.primary_thumbprint = row.optionalText(9);
  device.secondary_thumbprint = row.optionalText(10);
  device.iot_edge = row.flag(11);
  device.device_scope = row.optionalText(12);
  Result<std::vector<std::string>> scopes = decodeStrings(row.text(13), "parent scopes");
  if (!scopes) return scopes.status();
  device.parent_scopes = std::move(scopes).value();
  device.connection_state_updated_time = fromNanoseconds(row.int64(14));
  device.last_activity_time = fromNanoseconds(row.int64(15));
  device.cloud_to_device_message_count = row.int64(16);
  return device;
}

template <class Row>
Result<TwinRecord> decodeTwinRow(const Row& row) {
  TwinRecord twin;
  twin.device_id = row.text(0);
  const std::string suffix = " of the twin of '" + twin.device_id + "'";
  Result<json::object> tags = decodeStoredObject(row.text(1), "tags" + suffix);
  if (!tags) return tags.status();
  Result<json::object> desired = decodeStoredObject(row.text(2), "desired properties" + suffix);
  if (!desired) return desired.status();
  Result<json::object> reported = decodeStoredObject(row.text(3), "reported properties" + suffix);
  if (!reported) return reported.status();
  twin.tags = std::move(tags).value();
  twin.desired = std::move(desired).value();
  twin.reported = std::move(reported).value();
  twin.version = row.int64(4);
  twin.desired_version = row.int64(5);
  twin.reported_version = row.int64(6);
  return twin;
}

template <class Row>
Result<JobRecord> decodeJobRow(const Row& row) {
  JobRecord job;
  job.job_id = row.text(0);
  job.type = row.text(1);
  job.status = row.text(2);
  job.created_time = fromNanoseconds(row.int64(3));
  job.start_time = fromNanoseconds(row.int64(4));
  if (!row.isNull(5)) job.end_time = fromNanoseconds(row.int64(5));
  Result<json::object> document =
      decodeStoredObject(row.text(6), "document of job '" + job.job_id + "'");
  if (!document) return document.status();
  job.document = std::move(document).value();
  return job;
}

template <class Row>
Result<DeviceJobRecord> decodeDeviceJobRow(const Row& row) {
  DeviceJobRecord record;
  record.job_id = row.text(0);
  record.device_id = row.text(1);
  record.status = row.text(2);
  record.last_updated_time = fromNanoseconds(row.int64(3));
  Result<json::object> document = decodeStoredObject(
      row.text(4), "document of device '" + record.device_id + "' in job '" + record.job_id + "'");
  if (!document) return document.status();
  record.document = std::move(document).value();
  return record;
}

template <class Row>
Result<AccessPolicyRecord> decodePolicyRow(const Row& row) {
  AccessPolicyRecord policy;
  policy.name = row.text(0);
  policy.primary_key = row.text(1);
  policy.secondary_key = row.text(2);
  std::int64_t permissions = row.int64(3);
  if (permissions < 0 || permissions > std::int64_t{0xffffffff}) {
    return storeCorruption("stored permissions of policy '" + policy.name + "' are out of range");
  }
  policy.permissions = static_cast<std::uint32_t>(permissions);
  return policy;
}

// The results of RegistryStore::writeDevices from a backend's transaction: each write's own
// outcome when the transaction committed (`transaction` ok), else the transaction's error
// for every write. A write without an outcome (not reached) is a ServerError.
std::vector<Result<DeviceRecord>> deviceWriteResults(
    const Status& transaction, std::vector<std::optional<Result<DeviceRecord>>>& outcomes,
    std::size_t writes);

}  // namespace iothub::store
