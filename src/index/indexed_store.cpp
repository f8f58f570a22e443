#include "index/indexed_store.hpp"

namespace iothub::index {

IndexedStore::IndexedStore(store::Store& inner, TwinIndex& index) : inner_(inner), index_(index) {}

IndexedStore::DeviceLocks IndexedStore::lockDevices(const std::vector<std::string>& device_ids) {
  DeviceLocks held;
  held.guard_ = locks_.lockAll(device_ids);
  return held;
}

Status IndexedStore::Registry::createDevice(const store::DeviceRecord& device,
                                            const store::TwinRecord& twin) {
  auto lock = owner_.locks_.lock(device.device_id);
  Status s = owner_.inner_.registry().createDevice(device, twin);
  if (s) owner_.index_.putDevice(device, twin);
  return s;
}

Result<store::DeviceRecord> IndexedStore::Registry::getDevice(std::string_view device_id) {
  return owner_.inner_.registry().getDevice(device_id);
}

Result<store::DeviceRecord> IndexedStore::Registry::updateDevice(std::string_view device_id,
                                                                 store::DeviceMutation mutate) {
  auto lock = owner_.locks_.lock(device_id);
  auto updated = owner_.inner_.registry().updateDevice(device_id, std::move(mutate));
  if (updated) owner_.index_.updateDevice(*updated);
  return updated;
}

Status IndexedStore::Registry::deleteDevice(std::string_view device_id,
                                            store::DevicePrecondition precondition) {
  auto lock = owner_.locks_.lock(device_id);
  Status s = owner_.inner_.registry().deleteDevice(device_id, std::move(precondition));
  if (s) owner_.index_.removeDevice(device_id);
  return s;
}

std::vector<Result<store::DeviceRecord>> IndexedStore::Registry::writeDevices(
    const std::vector<store::DeviceWrite>& writes) {
  std::vector<std::string> ids;
  ids.reserve(writes.size());
  for (const store::DeviceWrite& write : writes) ids.push_back(write.device_id);
  DeviceLocks locks = owner_.lockDevices(ids);
  auto results = owner_.inner_.registry().writeDevices(writes);
  for (std::size_t i = 0; i < writes.size() && i < results.size(); ++i) {
    if (!results[i]) continue;
    const store::DeviceWrite& write = writes[i];
    switch (write.kind) {
      case store::DeviceWrite::Kind::Create:
        owner_.index_.putDevice(write.device, write.twin);
        break;
      case store::DeviceWrite::Kind::Update:
        owner_.index_.updateDevice(*results[i]);
        break;
      case store::DeviceWrite::Kind::Delete:
        owner_.index_.removeDevice(write.device_id);
        break;
    }
  }
  return results;
}

Result<std::vector<store::DeviceRecord>> IndexedStore::Registry::listDevices(
    std::string_view after_device_id, std::size_t limit) {
  return owner_.inner_.registry().listDevices(after_device_id, limit);
}

Result<store::DeviceStatistics> IndexedStore::Registry::deviceStatistics() {
  return owner_.inner_.registry().deviceStatistics();
}

Result<store::TwinRecord> IndexedStore::Twins::getTwin(std::string_view device_id) {
  return owner_.inner_.twins().getTwin(device_id);
}

Result<store::TwinRecord> IndexedStore::Twins::updateTwin(std::string_view device_id,
                                                          store::TwinMutation mutate) {
  auto lock = owner_.locks_.lock(device_id);
  auto updated = owner_.inner_.twins().updateTwin(device_id, std::move(mutate));
  if (updated) owner_.index_.updateTwin(*updated);
  return updated;
}

Result<store::TwinRecord> IndexedStore::Twins::updateTwinForJob(
    std::string_view device_id, store::TwinMutation mutate, const store::DeviceJobWrite& job_row) {
  auto lock = owner_.locks_.lock(device_id);
  auto updated = owner_.inner_.twins().updateTwinForJob(device_id, std::move(mutate), job_row);
  if (updated) owner_.index_.updateTwin(*updated);
  return updated;
}

std::vector<Result<store::TwinRecord>> IndexedStore::Twins::updateTwinsForJob(
    const std::vector<store::TwinJobUpdate>& updates) {
  std::vector<std::string> ids;
  ids.reserve(updates.size());
  for (const store::TwinJobUpdate& u : updates) ids.push_back(u.device_id);
  DeviceLocks locks = owner_.lockDevices(ids);
  auto results = owner_.inner_.twins().updateTwinsForJob(updates);
  for (const auto& result : results) {
    if (result) owner_.index_.updateTwin(*result);
  }
  return results;
}

Result<std::vector<store::TwinRecord>> IndexedStore::Twins::listTwins(
    std::string_view after_device_id, std::size_t limit) {
  return owner_.inner_.twins().listTwins(after_device_id, limit);
}

}  // namespace iothub::index
