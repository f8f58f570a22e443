#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/random.hpp"
#include "common/status.hpp"
#include "registry/device_json.hpp"
#include "store/store.hpp"

namespace iothub::registry {

// Answers "is this device connected right now?" (the device endpoint knows; until it
// exists, nothing is). Thread-safe.
class ConnectionStates {
 public:
  virtual ~ConnectionStates() = default;
  virtual bool isConnected(std::string_view device_id) const = 0;
  // Closes the device's connection, if any (the device was disabled or deleted).
  virtual void disconnect(std::string_view device_id, std::string reason) = 0;
};

// The outcome of a bulk request (POST /devices), shaped as Azure's
// BulkRegistryOperationResult.
struct BulkResult {
  struct Error {
    std::string device_id;
    ErrorCode code;
    std::string message;
    std::string operation;
  };
  std::vector<Error> errors;
  bool isSuccessful() const { return errors.empty(); }
  json::object toJson() const;
};

// The identity registry: the rules of Azure's device identities on top of the store.
// Thread-safe; every method blocks on the store, so call it from a worker thread.
// `if_match` values are bare etags (quotes and W/ already stripped) or "*".
class DeviceRegistry {
 public:
  // Largest page of GET /devices (Azure's maximum for `top`).
  static constexpr std::size_t kMaxListSize = 1000;
  // Most entries in one bulk request (docs/protocol.md §5.5).
  static constexpr std::size_t kMaxBulkSize = 100;

  // `connections` (may be null) is told to close the connection of a device that gets
  // disabled or deleted, as Azure does.
  DeviceRegistry(store::Store& store, Random& random, const Clock& clock,
                 ConnectionStates* connections = nullptr);

  // Creates a device with its twin. Empty keys are generated (docs/protocol.md §5.4).
  // Errors: ArgumentInvalid (bad id, id differs from the body's), DeviceAlreadyExists.
  Result<DeviceRecord> create(std::string_view device_id, const DeviceSpec& spec);

  // Replaces the device's mutable fields; empty keys keep the current keys.
  // Errors: ArgumentInvalid, DeviceNotFound, PreconditionFailed (etag differs).
  Result<DeviceRecord> update(std::string_view device_id, const DeviceSpec& spec,
                              std::string_view if_match);

  // Errors: DeviceNotFound.
  Result<DeviceRecord> get(std::string_view device_id);

  // Errors: DeviceNotFound, PreconditionFailed.
  Status remove(std::string_view device_id, std::string_view if_match);

  // The first `top` devices by id (1..kMaxListSize).
  Result<std::vector<DeviceRecord>> list(std::size_t top);

  // Applies Registry.addDevices/updateDevices/removeDevices bodies: an array of 1..100
  // device objects each with "id" and "importMode" (create, update, updateIfMatchETag,
  // delete, deleteIfMatchETag; case-insensitive). The whole request is rejected
  // (ArgumentInvalid / DeviceDefinedMultipleTimes / IotHubFormatError) when any entry is
  // malformed or an id repeats; otherwise each entry succeeds or fails on its own and
  // failures are listed in the result.
  Result<BulkResult> bulk(const json::value& body);

  Result<store::DeviceStatistics> statistics();

 private:
  DeviceRecord newDevice(std::string_view device_id, const DeviceSpec& spec);
  std::string newEtag();
  // The read-modify-write of update(): the spec applied to the current device if its etag
  // matches `if_match`.
  store::DeviceMutation updateMutation(const DeviceSpec& spec, std::string if_match);

  store::Store& store_;
  Random& random_;
  const Clock& clock_;
  ConnectionStates* connections_;
};

}  // namespace iothub::registry
