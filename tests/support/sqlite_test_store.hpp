#pragma once

// A SQLite store for the unit tests of modules above the store, and devices in it.

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "store/sqlite/sqlite_store.hpp"

namespace iothub::testing {

// Opens (creates) a store at `file`, without a full fsync per commit: tests need no
// durability across power loss. Throws when it cannot (the test fails with the reason).
inline std::unique_ptr<store::SqliteStore> openTestSqliteStore(const std::filesystem::path& file) {
  auto opened = store::SqliteStore::open(file, store::SqliteOptions{.synchronous_full = false});
  if (!opened)
    throw std::runtime_error("cannot open the test store: " + opened.status().toString());
  return std::move(opened).value();
}

// An enabled SAS device `id` whose generation id is "gen-<id>"; tests adjust the rest.
inline store::DeviceRecord testDevice(const std::string& id) {
  store::DeviceRecord device;
  device.device_id = id;
  device.generation_id = "gen-" + id;
  device.etag = "ZGV2aWNl";
  return device;
}

// Creates `device` with an empty twin. Throws when the store refuses.
inline void createTestDevice(store::Store& store, const store::DeviceRecord& device) {
  store::TwinRecord twin;
  twin.device_id = device.device_id;
  Status created = store.registry().createDevice(device, twin);
  if (!created) throw std::runtime_error("cannot create device: " + created.toString());
}

}  // namespace iothub::testing
