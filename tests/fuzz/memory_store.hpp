#pragma once

// A store::Store held in ordered maps, for fuzz targets that drive the domain modules
// without SQLite: no files, no writer thread, the same result for the same calls. It
// follows the contracts of store/store.hpp (orderings, strict "after" keys, error codes);
// one mutex serializes every call, and mutation callbacks run under it. Job leases are
// kept beside the jobs, on the system clock.

#include <algorithm>
#include <chrono>
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
  store::C2dStore& c2d() override { return c2d_; }
  store::TelemetryStore& telemetry() override { return telemetry_; }

 private:
  // No fuzz target drives cloud-to-device messages yet: every call fails, so a target
  // that starts to use them finds out at once instead of testing against a fake queue.
  class NoC2d final : public store::C2dStore {
   public:
    Result<std::int64_t> enqueueC2d(const store::C2dMessageRecord&, std::size_t) override {
      return unavailable();
    }
    Result<std::optional<store::C2dMessageRecord>> lockC2d(std::string_view, const store::C2dLock&,
                                                           const store::C2dFeedbackRule&) override {
      return unavailable();
    }
    Result<store::C2dMessageRecord> settleC2d(std::string_view, std::string_view,
                                              store::C2dSettlement, SystemTime,
                                              const store::C2dFeedbackRule&) override {
      return unavailable();
    }
    Result<std::size_t> purgeC2d(std::string_view, const store::C2dFeedbackRule&) override {
      return unavailable();
    }
    Result<std::size_t> expireC2d(SystemTime, std::size_t, const store::C2dFeedbackRule&) override {
      return unavailable();
    }
    Result<std::vector<store::C2dMessageRecord>> listC2d(std::string_view, std::size_t) override {
      return unavailable();
    }
    Result<std::vector<store::C2dFeedbackRecord>> lockC2dFeedback(SystemTime, SystemTime,
                                                                  std::size_t) override {
      return unavailable();
    }
    Status deleteC2dFeedback(const std::vector<std::int64_t>&) override { return unavailable(); }
    Result<std::size_t> expireC2dFeedback(SystemTime, std::size_t) override {
      return unavailable();
    }

   private:
    static Status unavailable() {
      return {ErrorCode::ServiceUnavailable, "the fuzz memory store keeps no C2D messages"};
    }
  };

  // No fuzz target drives the telemetry log yet: every call fails, as for C2D.
  class NoTelemetry final : public store::TelemetryStore {
   public:
    Result<std::vector<std::int64_t>> appendTelemetry(
        const std::vector<store::TelemetryRecord>&) override {
      return unavailable();
    }
    Result<std::vector<store::TelemetryRecord>> readTelemetry(std::int32_t, std::int64_t,
                                                              std::size_t, std::size_t) override {
      return unavailable();
    }
    Result<std::int64_t> telemetrySequenceAfter(std::int32_t, SystemTime) override {
      return unavailable();
    }
    Result<store::TelemetryPartitionInfo> telemetryPartition(std::int32_t) override {
      return unavailable();
    }
    Result<std::size_t> trimTelemetry(std::int32_t, SystemTime, std::uint64_t,
                                      std::size_t) override {
      return unavailable();
    }
    Result<std::vector<store::ConsumerGroupRecord>> listConsumerGroups() override {
      return unavailable();
    }
    Result<store::ConsumerGroupRecord> getConsumerGroup(std::string_view) override {
      return unavailable();
    }
    Status createConsumerGroup(const store::ConsumerGroupRecord&, std::size_t) override {
      return unavailable();
    }
    Status deleteConsumerGroup(std::string_view) override { return unavailable(); }

   private:
    static Status unavailable() {
      return {ErrorCode::ServiceUnavailable, "the fuzz memory store keeps no telemetry"};
    }
  };

  using Lock = std::lock_guard<std::mutex>;

  static Status deviceNotFound(std::string_view id) {
    return {ErrorCode::DeviceNotFound, "Device " + std::string(id) + " not found"};
  }
  static Status jobNotFound(std::string_view id) {
    return {ErrorCode::JobNotFound, "Job " + std::string(id) + " not found"};
  }
  static Status leaseLost(const store::JobLease& lease) {
    return {ErrorCode::JobLeaseLost, "the lease of job " + lease.job_id + " (epoch " +
                                         std::to_string(lease.epoch) + ") is not held"};
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

  // Each write under the lock in turn (one "transaction": nothing can fail halfway here).
  std::vector<Result<store::DeviceRecord>> writeDevices(
      const std::vector<store::DeviceWrite>& writes) override {
    std::vector<Result<store::DeviceRecord>> results;
    results.reserve(writes.size());
    for (const store::DeviceWrite& write : writes) {
      switch (write.kind) {
        case store::DeviceWrite::Kind::Create: {
          Status s = write.device.device_id == write.device_id
                         ? createDevice(write.device, write.twin)
                         : Status(ErrorCode::ArgumentInvalid, "the twin belongs to another device");
          if (s) {
            results.emplace_back(write.device);
          } else {
            results.emplace_back(s);
          }
          break;
        }
        case store::DeviceWrite::Kind::Update:
          results.push_back(updateDevice(write.device_id, write.mutate));
          break;
        case store::DeviceWrite::Kind::Delete: {
          auto current = getDevice(write.device_id);
          Status s = current ? deleteDevice(write.device_id, write.precondition) : current.status();
          if (s) {
            results.push_back(std::move(current));
          } else {
            results.emplace_back(s);
          }
          break;
        }
      }
    }
    return results;
  }

  Result<std::vector<store::DeviceRecord>> listDevices(std::string_view after_device_id,
                                                       std::size_t limit) override {
    Lock lock(mutex_);
    std::vector<store::DeviceRecord> out;
    for (auto it = devices_.upper_bound(after_device_id);
         it != devices_.end() && out.size() < limit; ++it) {
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

  Result<store::TwinRecord> updateTwinForJob(std::string_view device_id, store::TwinMutation mutate,
                                             const store::DeviceJobWrite& job_row) override {
    Lock lock(mutex_);
    auto it = twins_.find(device_id);
    if (it == twins_.end()) return deviceNotFound(device_id);
    if (job_row.lease && !leaseHeld(*job_row.lease)) return leaseLost(*job_row.lease);
    auto next = mutate(it->second);
    if (!next) return next.status();
    it->second = *next;
    device_jobs_[{job_row.row.job_id, job_row.row.device_id}] = job_row.row;
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

  // Leases on the system clock (what the SQLite store uses too).
  bool leaseHeld(const store::JobLease& lease) const {
    auto it = leases_.find(lease.job_id);
    return it != leases_.end() && it->second.epoch == lease.epoch &&
           it->second.until > std::chrono::system_clock::now();
  }
  static bool finished(const store::JobRecord& job) {
    return job.status == "completed" || job.status == "failed" || job.status == "cancelled";
  }

  Result<std::vector<store::ClaimedJob>> claimJobs(std::string_view owner, SystemTime due_by,
                                                   std::chrono::milliseconds ttl,
                                                   std::size_t limit) override {
    Lock lock(mutex_);
    auto now = std::chrono::system_clock::now();
    std::vector<store::JobRecord*> due;
    for (auto& [id, job] : jobs_) {
      if (finished(job)) continue;
      auto lease = leases_.find(id);
      if (lease != leases_.end() && lease->second.until > now) continue;
      bool cancel = lease != leases_.end() && lease->second.cancel_requested;
      bool waiting = job.status == "queued" || job.status == "scheduled";
      if (job.status == "running" || (waiting && job.start_time <= due_by) || cancel) {
        due.push_back(&job);
      }
    }
    std::sort(due.begin(), due.end(), [](const store::JobRecord* a, const store::JobRecord* b) {
      return std::tie(a->start_time, a->created_time, a->job_id) <
             std::tie(b->start_time, b->created_time, b->job_id);
    });
    std::vector<store::ClaimedJob> out;
    for (auto* job : due) {
      if (out.size() >= limit) break;
      auto& lease = leases_[job->job_id];
      lease.owner = std::string(owner);
      lease.epoch += 1;
      lease.until = now + ttl;
      out.push_back({.job = *job,
                     .lease = {.job_id = job->job_id, .epoch = lease.epoch},
                     .cancel_requested = lease.cancel_requested});
    }
    return out;
  }

  Result<std::vector<store::JobLeaseRenewal>> renewJobLeases(
      const std::vector<store::JobLease>& leases, std::chrono::milliseconds ttl) override {
    Lock lock(mutex_);
    std::vector<store::JobLeaseRenewal> out;
    for (const auto& lease : leases) {
      store::JobLeaseRenewal renewal{.job_id = lease.job_id};
      if (leaseHeld(lease)) {
        auto& held = leases_[lease.job_id];
        held.until = std::chrono::system_clock::now() + ttl;
        renewal.held = true;
        renewal.cancel_requested = held.cancel_requested;
      }
      out.push_back(std::move(renewal));
    }
    return out;
  }

  Status releaseJobLease(const store::JobLease& lease) override {
    Lock lock(mutex_);
    if (leaseHeld(lease)) leases_[lease.job_id].until = {};
    return Status::ok();
  }

  Result<std::size_t> releaseJobLeasesOf(std::string_view owner) override {
    Lock lock(mutex_);
    std::size_t released = 0;
    auto now = std::chrono::system_clock::now();
    for (auto& [id, lease] : leases_) {
      auto job = jobs_.find(id);
      if (lease.owner != owner || lease.until <= now || job == jobs_.end() ||
          finished(job->second)) {
        continue;
      }
      lease.until = {};
      ++released;
    }
    return released;
  }

  Result<store::JobRecord> updateLeasedJob(const store::JobLease& lease,
                                           store::JobMutation mutate) override {
    Lock lock(mutex_);
    if (!leaseHeld(lease)) return leaseLost(lease);
    auto it = jobs_.find(lease.job_id);
    if (it == jobs_.end()) return jobNotFound(lease.job_id);
    auto next = mutate(it->second);
    if (!next) return next.status();
    it->second = *next;
    return next;
  }

  Status putLeasedDeviceJobs(const store::JobLease& lease,
                             const std::vector<store::DeviceJobRecord>& rows) override {
    Lock lock(mutex_);
    if (!leaseHeld(lease)) return leaseLost(lease);
    for (const auto& row : rows) {
      if (row.job_id != lease.job_id) {
        return {ErrorCode::ArgumentInvalid,
                "row of job " + row.job_id + " under the lease of job " + lease.job_id};
      }
    }
    for (const auto& row : rows) device_jobs_[{row.job_id, row.device_id}] = row;
    return Status::ok();
  }

  Status requestJobCancel(std::string_view job_id) override {
    Lock lock(mutex_);
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return jobNotFound(job_id);
    if (!finished(it->second)) leases_[std::string(job_id)].cancel_requested = true;
    return Status::ok();
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
  struct Lease {
    std::string owner;
    std::int64_t epoch = 0;
    SystemTime until{};  // the lease is held while until > now
    bool cancel_requested = false;
  };
  std::map<std::string, Lease, std::less<>> leases_;
  std::vector<store::AccessPolicyRecord> policies_;
  std::map<std::string, store::MqttSessionRecord, std::less<>> sessions_;
  NoC2d c2d_;
  NoTelemetry telemetry_;
};

}  // namespace iothub::fuzz
