#pragma once

// A store::Store held in ordered maps, for fuzz targets that drive the domain modules
// without SQLite: no files, no writer thread, the same result for the same calls. It
// follows the contracts of store/store.hpp (orderings, strict "after" keys, error codes);
// one mutex serializes every call, and mutation callbacks run under it.

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "store/store.hpp"

namespace iothub::fuzz {

class MemoryStore final : public store::Store,
                          private store::RegistryStore,
                          private store::TwinStore,
                          private store::JobStore,
                          private store::DeviceJobStore,
                          private store::AccessPolicyStore,
                          private store::MqttSessionStore {
 public:
  store::RegistryStore& registry() override { return *this; }
  store::TwinStore& twins() override { return *this; }
  store::JobStore& jobs() override { return *this; }
  store::DeviceJobStore& deviceJobs() override { return *this; }
  store::AccessPolicyStore& policies() override { return *this; }
  store::MqttSessionStore& mqttSessions() override { return *this; }

 private:
  using Lock = std::lock_guard<std::mutex>;

  static Status deviceNotFound(std::string_view id) {
    return {ErrorCode::DeviceNotFound, "Device " + std::string(id) + " not found"};
  }
  static Status jobNotFound(std::string_view id) {
    return {ErrorCode::JobNotFound, "Job " + std::string(id) + " not found"};
  }

  // --- RegistryStore ---
  Status createDevice(const store::DeviceRecord& device, const store::TwinRecord& twin) override {
    Lock lock(mutex_);
    if (device.device_id != twin.device_id) {
      return {ErrorCode::ArgumentInvalid, "the twin belongs to another device"};
    }
    if (devices_.contains(device.device_id)) {
      return {ErrorCode::DeviceAlreadyExists, "Device " + device.device_id + " already exists"};
    }
    devices_.emplace(device.device_id, device);
    twins_.emplace(device.device_id, twin);
    return Status::ok();
  }

  Result<store::DeviceRecord> getDevice(std::string_view device_id) override {
    Lock lock(mutex_);
    auto it = devices_.find(device_id);
    if (it == devices_.end()) return deviceNotFound(device_id);
    return it->second;
  }

  Result<store::DeviceRecord> updateDevice(std::string_view device_id,
                                           store::DeviceMutation mutate) override {
    Lock lock(mutex_);
    auto it = devices_.find(device_id);
    if (it == devices_.end()) return deviceNotFound(device_id);
    auto next = mutate(it->second);
    if (!next) return next.status();
    if (next->device_id != it->second.device_id) {
      return Status(ErrorCode::ArgumentInvalid, "a mutation cannot change the device id");
    }
    it->second = *next;
    return next;
  }

  Status deleteDevice(std::string_view device_id, store::DevicePrecondition precondition) override {
    Lock lock(mutex_);
    auto it = devices_.find(device_id);
    if (it == devices_.end()) return deviceNotFound(device_id);
    if (precondition) IOTHUB_RETURN_IF_ERROR(precondition(it->second));
    sessions_.erase(it->first);
    twins_.erase(it->first);
    devices_.erase(it);
    return Status::ok();
  }

  Result<std::vector<store::DeviceRecord>> listDevices(std::string_view after_device_id,
                                                       std::size_t limit) override {
    Lock lock(mutex_);
    std::vector<store::DeviceRecord> out;
    for (auto it = devices_.upper_bound(after_device_id); it != devices_.end() && out.size() < limit;
         ++it) {
      out.push_back(it->second);
    }
    return out;
  }

  Result<store::DeviceStatistics> deviceStatistics() override {
    Lock lock(mutex_);
    store::DeviceStatistics stats;
    for (const auto& [id, device] : devices_) {
      ++stats.total;
      ++(device.status == store::DeviceStatus::Enabled ? stats.enabled : stats.disabled);
    }
    return stats;
  }

  // --- TwinStore ---
  Result<store::TwinRecord> getTwin(std::string_view device_id) override {
    Lock lock(mutex_);
    auto it = twins_.find(device_id);
    if (it == twins_.end()) return deviceNotFound(device_id);
    return it->second;
  }

  Result<store::TwinRecord> updateTwin(std::string_view device_id,
                                       store::TwinMutation mutate) override {
    Lock lock(mutex_);
    auto it = twins_.find(device_id);
    if (it == twins_.end()) return deviceNotFound(device_id);
    auto next = mutate(it->second);
    if (!next) return next.status();
    it->second = *next;
    return next;
  }

  Result<std::vector<store::TwinRecord>> listTwins(std::string_view after_device_id,
                                                   std::size_t limit) override {
    Lock lock(mutex_);
    std::vector<store::TwinRecord> out;
    for (auto it = twins_.upper_bound(after_device_id); it != twins_.end() && out.size() < limit;
         ++it) {
      out.push_back(it->second);
    }
    return out;
  }

  // --- JobStore ---
  Status createJob(const store::JobRecord& job) override {
    Lock lock(mutex_);
    if (jobs_.contains(job.job_id)) {
      return {ErrorCode::JobAlreadyExists, "Job " + job.job_id + " already exists"};
    }
    jobs_.emplace(job.job_id, job);
    return Status::ok();
  }

  Result<store::JobRecord> getJob(std::string_view job_id) override {
    Lock lock(mutex_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return jobNotFound(job_id);
    return it->second;
  }

  Result<store::JobRecord> updateJob(std::string_view job_id, store::JobMutation mutate) override {
    Lock lock(mutex_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return jobNotFound(job_id);
    auto next = mutate(it->second);
    if (!next) return next.status();
    it->second = *next;
    return next;
  }

  Result<std::vector<store::JobRecord>> listJobs(const store::JobFilter& filter,
                                                 std::string_view after_job_id,
                                                 std::size_t limit) override {
    Lock lock(mutex_);
    std::vector<const store::JobRecord*> ordered;
    for (const auto& [id, job] : jobs_) ordered.push_back(&job);
    auto key = [](const store::JobRecord* j) { return std::tie(j->created_time, j->job_id); };
    std::sort(ordered.begin(), ordered.end(),
              [&](const auto* a, const auto* b) { return key(a) < key(b); });
    auto start = ordered.begin();
    if (!after_job_id.empty()) {
      auto after = jobs_.find(after_job_id);
      if (after == jobs_.end()) return jobNotFound(after_job_id);
      start = std::upper_bound(ordered.begin(), ordered.end(), &after->second,
                               [&](const auto* a, const auto* b) { return key(a) < key(b); });
    }
    std::vector<store::JobRecord> out;
    for (auto it = start; it != ordered.end() && out.size() < limit; ++it) {
      if (filter.type && (*it)->type != *filter.type) continue;
      if (filter.status && (*it)->status != *filter.status) continue;
      out.push_back(**it);
    }
    return out;
  }

  Result<std::vector<store::JobRecord>> jobsWithStatus(
      const std::vector<std::string>& statuses) override {
    Lock lock(mutex_);
    std::vector<store::JobRecord> out;
    for (const auto& [id, job] : jobs_) {
      if (std::find(statuses.begin(), statuses.end(), job.status) != statuses.end()) {
        out.push_back(job);
      }
    }
    return out;
  }

  // --- DeviceJobStore ---
  Status putDeviceJobs(const std::vector<store::DeviceJobRecord>& rows) override {
    Lock lock(mutex_);
    for (const auto& row : rows) device_jobs_[{row.job_id, row.device_id}] = row;
    return Status::ok();
  }

  Result<std::vector<store::DeviceJobRecord>> listDeviceJobs(std::string_view job_id,
                                                             std::optional<std::string_view> status,
                                                             std::string_view after_device_id,
                                                             std::size_t limit) override {
    Lock lock(mutex_);
    std::vector<store::DeviceJobRecord> out;
    for (const auto& [key, row] : device_jobs_) {
      if (out.size() >= limit) break;
      if (key.first != job_id || key.second <= after_device_id) continue;
      if (status && row.status != *status) continue;
      out.push_back(row);
    }
    return out;
  }

  Result<std::vector<store::DeviceJobRecord>> listAllDeviceJobs(std::string_view after_job_id,
                                                                std::string_view after_device_id,
                                                                std::size_t limit) override {
    Lock lock(mutex_);
    std::vector<store::DeviceJobRecord> out;
    std::pair<std::string, std::string> after{after_job_id, after_device_id};
    for (auto it = device_jobs_.upper_bound(after); it != device_jobs_.end() && out.size() < limit;
         ++it) {
      out.push_back(it->second);
    }
    return out;
  }

  // --- AccessPolicyStore ---
  Result<std::vector<store::AccessPolicyRecord>> listPolicies() override {
    Lock lock(mutex_);
    return policies_;
  }

  Status insertMissingPolicies(const std::vector<store::AccessPolicyRecord>& policies) override {
    Lock lock(mutex_);
    for (const auto& policy : policies) {
      auto same = [&](const auto& p) { return p.name == policy.name; };
      if (std::none_of(policies_.begin(), policies_.end(), same)) policies_.push_back(policy);
    }
    return Status::ok();
  }

  // --- MqttSessionStore ---
  Result<std::optional<store::MqttSessionRecord>> getSession(std::string_view client_id) override {
    Lock lock(mutex_);
    auto it = sessions_.find(client_id);
    if (it == sessions_.end()) return std::optional<store::MqttSessionRecord>();
    return std::optional<store::MqttSessionRecord>(it->second);
  }

  Status putSession(const store::MqttSessionRecord& session) override {
    Lock lock(mutex_);
    if (!devices_.contains(session.client_id)) return deviceNotFound(session.client_id);
    sessions_[session.client_id] = session;
    return Status::ok();
  }

  Status deleteSession(std::string_view client_id) override {
    Lock lock(mutex_);
    if (auto it = sessions_.find(client_id); it != sessions_.end()) sessions_.erase(it);
    return Status::ok();
  }

  std::mutex mutex_;
  std::map<std::string, store::DeviceRecord, std::less<>> devices_;
  std::map<std::string, store::TwinRecord, std::less<>> twins_;
  std::map<std::string, store::JobRecord, std::less<>> jobs_;
  std::map<std::pair<std::string, std::string>, store::DeviceJobRecord> device_jobs_;
  std::vector<store::AccessPolicyRecord> policies_;
  std::map<std::string, store::MqttSessionRecord, std::less<>> sessions_;
};

}  // namespace iothub::fuzz
