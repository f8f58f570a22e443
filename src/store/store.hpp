#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "common/histogram.hpp"
#include "common/status.hpp"
#include "store/change_feed.hpp"
#include "store/cluster_store.hpp"
#include "store/records.hpp"

namespace iothub::store {

// Threading contract for every interface in this file:
// - All methods are thread-safe and BLOCK the calling thread until the data is read or
//   durably committed. Never call them from an I/O (Asio) thread: hand the work to a
//   worker thread first.
// - Writes from all threads are funnelled to the backend's writer, which commits many
//   concurrent writes in one transaction (group commit). Each write still succeeds or
//   fails on its own: one failing write never affects another in the same batch.
// - Mutation callbacks (DeviceMutation, TwinMutation, ...) run on the writer thread inside
//   the transaction: they must be quick, must not call back into the store, and their
//   error result aborts only their own write. A backend may run a callback more than once
//   for one call (PostgreSQL runs a transaction again after a deadlock); only the last
//   run's result is stored and returned, so a callback must not count its runs.
// - Failures of the backend itself that a later retry may cure (server unreachable, a
//   lost connection, a missed deadline) are ServiceUnavailable.

using DeviceMutation = std::function<Result<DeviceRecord>(const DeviceRecord& current)>;
using TwinMutation = std::function<Result<TwinRecord>(const TwinRecord& current)>;
using JobMutation = std::function<Result<JobRecord>(const JobRecord& current)>;
// Checked inside the delete's transaction; an error aborts the delete.
using DevicePrecondition = std::function<Status(const DeviceRecord& current)>;

// One device's update in a twin job's batch (TwinStore::updateTwinsForJob).
struct TwinJobUpdate {
  std::string device_id;
  TwinMutation mutate;
  DeviceJobWrite job_row;
};

// One write of a batch (RegistryStore::writeDevices): what createDevice, updateDevice or
// deleteDevice would do for one device.
struct DeviceWrite {
  enum class Kind { Create, Update, Delete };
  Kind kind = Kind::Create;
  std::string device_id;
  DeviceRecord device;              // Create: the new device (its id is device_id)
  TwinRecord twin;                  // Create: its initial twin (same id)
  DeviceMutation mutate;            // Update (required)
  DevicePrecondition precondition;  // Delete (may be empty)
};

class RegistryStore {
 public:
  virtual ~RegistryStore() = default;

  // Inserts the device and its initial twin atomically.
  // Errors: DeviceAlreadyExists when the id is taken; ArgumentInvalid when the twin's
  // device id differs from the device's.
  virtual Status createDevice(const DeviceRecord& device, const TwinRecord& twin) = 0;

  // Errors: DeviceNotFound.
  virtual Result<DeviceRecord> getDevice(std::string_view device_id) = 0;

  // Reads the device, applies `mutate`, stores and returns its result (the device id must
  // not change). Errors: DeviceNotFound, or whatever `mutate` returns.
  virtual Result<DeviceRecord> updateDevice(std::string_view device_id, DeviceMutation mutate) = 0;

  // Deletes the device, its twin and its persistent MQTT session, in one transaction, if
  // `precondition` (may be empty) passes.
  // Errors: DeviceNotFound, or the precondition's error.
  virtual Status deleteDevice(std::string_view device_id, DevicePrecondition precondition) = 0;

  // Applies `writes` in order as ONE write of the store (one transaction, one entry of a
  // group commit): a bulk registry request costs one commit, not one per device. Returns
  // one result per write, in order: for Create the device as given, for Update the
  // mutation's result as stored, for Delete the device as it was before the delete. Each
  // write succeeds or fails on its own, with the error its single-device call would return
  // (DeviceAlreadyExists, DeviceNotFound, ArgumentInvalid, the mutation's or the
  // precondition's), and a failed write changes nothing; a later write sees the earlier
  // ones (a create then a delete of one id both succeed). A failure of the backend itself
  // (lost connection, failed commit, ServiceUnavailable) gives every write that error and
  // stores none of them. Writes of one id that repeats are applied in order.
  virtual std::vector<Result<DeviceRecord>> writeDevices(
      const std::vector<DeviceWrite>& writes) = 0;

  // Devices ordered by id, starting strictly after `after_device_id` (empty = from the
  // start), at most `limit`.
  virtual Result<std::vector<DeviceRecord>> listDevices(std::string_view after_device_id,
                                                        std::size_t limit) = 0;

  virtual Result<DeviceStatistics> deviceStatistics() = 0;
};

class TwinStore {
 public:
  virtual ~TwinStore() = default;

  // Errors: DeviceNotFound.
  virtual Result<TwinRecord> getTwin(std::string_view device_id) = 0;

  // Read-modify-write of one twin in one transaction. Errors: DeviceNotFound, or the
  // mutation's error.
  virtual Result<TwinRecord> updateTwin(std::string_view device_id, TwinMutation mutate) = 0;

  // updateTwin, and in the same transaction the device-job row `job_row.row` (inserted or
  // replaced as by putDeviceJobs; with `job_row.lease`, as by putLeasedDeviceJobs): both are
  // committed or neither. A twin job records a device's outcome this way, so the update is
  // applied exactly once even when the job moves to another node (docs/cluster.md).
  // Errors: updateTwin's; JobLeaseLost when the lease is not held (nothing is written).
  virtual Result<TwinRecord> updateTwinForJob(std::string_view device_id, TwinMutation mutate,
                                              const DeviceJobWrite& job_row) = 0;

  // updateTwinForJob for several devices (a twin job's batch), in as few transactions as the
  // backend can (SQLite: one): each update is applied or refused as by updateTwinForJob, and
  // a refusal (DeviceNotFound, JobLeaseLost, the mutation's error) leaves the others alone.
  // Returns one result per update, in order; when the store itself fails, every update of
  // the failed transaction gets that error and none of them is written. By default, one
  // updateTwinForJob per update.
  virtual std::vector<Result<TwinRecord>> updateTwinsForJob(
      const std::vector<TwinJobUpdate>& updates) {
    std::vector<Result<TwinRecord>> results;
    results.reserve(updates.size());
    for (const TwinJobUpdate& u : updates) {
      results.push_back(updateTwinForJob(u.device_id, u.mutate, u.job_row));
    }
    return results;
  }

  // Twins ordered by device id, strictly after `after_device_id`, at most `limit`.
  // Used to build in-memory indexes at startup.
  virtual Result<std::vector<TwinRecord>> listTwins(std::string_view after_device_id,
                                                    std::size_t limit) = 0;
};

struct JobFilter {
  std::optional<std::string> type;
  std::optional<std::string> status;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  // Errors: JobAlreadyExists when the id is taken (also for finished jobs).
  virtual Status createJob(const JobRecord& job) = 0;
  // Errors: JobNotFound.
  virtual Result<JobRecord> getJob(std::string_view job_id) = 0;
  // Errors: JobNotFound, or the mutation's error.
  virtual Result<JobRecord> updateJob(std::string_view job_id, JobMutation mutate) = 0;
  // Jobs matching `filter`, ordered by (created_time, job_id), after the job with id
  // `after_job_id` in that order (empty = from the start), at most `limit`. The job at
  // `after_job_id` need not match the filter. Errors: JobNotFound when `after_job_id` is
  // not empty and names no job.
  virtual Result<std::vector<JobRecord>> listJobs(const JobFilter& filter,
                                                  std::string_view after_job_id,
                                                  std::size_t limit) = 0;
  // Jobs whose status is one of `statuses` (the scheduler's view after a restart).
  virtual Result<std::vector<JobRecord>> jobsWithStatus(
      const std::vector<std::string>& statuses) = 0;

  // --- Leases: which node runs a job (docs/cluster.md, "Jobs across nodes") ---
  // A job's lease (JobLease) is held while its epoch is the job's current one and its end
  // has not passed on the store's clock (PostgreSQL: the database server's clock, so the
  // nodes' clocks need not agree; SQLite: the system clock). At most one lease of a job is
  // held at any moment. A single node that runs every job itself (no lease) uses none of
  // this, and the writes above ignore leases.

  // Claims for `owner`, until now + `ttl`, up to `limit` jobs that are due and whose lease
  // is not held. Due: status running; status queued or scheduled with start_time <=
  // `due_by` (the caller's clock, the one start times are given on); or a cancel was
  // requested of a queued, scheduled or running job. Each claimed job gets the next epoch.
  // Claims running at once, in any process, never claim one job twice: a job another claim
  // holds locked is skipped, not waited for. Ordered as claimOrder(): running jobs first (an
  // owner died while they ran), then by priority, highest first (JobRecord::priority()), then
  // by (start_time, created_time, job_id).
  virtual Result<std::vector<ClaimedJob>> claimJobs(std::string_view owner, SystemTime due_by,
                                                    std::chrono::milliseconds ttl,
                                                    std::size_t limit) = 0;
  // Extends each of `leases` that is still held to now + `ttl`. Returns one entry per
  // lease, in order (held = false for one that expired or was claimed by another owner).
  virtual Result<std::vector<JobLeaseRenewal>> renewJobLeases(const std::vector<JobLease>& leases,
                                                              std::chrono::milliseconds ttl) = 0;
  // Ends the lease if it is still the job's (the job can be claimed at once); otherwise
  // changes nothing.
  virtual Status releaseJobLease(const JobLease& lease) = 0;
  // Ends every lease `owner` holds on an unfinished job, so that its jobs can be claimed at
  // once: for a node that starts again under its id after its previous run died. Only
  // when no other process can run under `owner` (the hub holds an advisory lock per node
  // id). Returns how many leases ended.
  virtual Result<std::size_t> releaseJobLeasesOf(std::string_view owner) = 0;
  // updateJob, only while `lease` is held. Errors: JobLeaseLost (nothing is written),
  // JobNotFound, the mutation's.
  virtual Result<JobRecord> updateLeasedJob(const JobLease& lease, JobMutation mutate) = 0;
  // putDeviceJobs of rows of the lease's job, only while `lease` is held, in one
  // transaction with the check. Errors: JobLeaseLost (nothing is written); ArgumentInvalid
  // for a row of another job.
  virtual Status putLeasedDeviceJobs(const JobLease& lease,
                                     const std::vector<DeviceJobRecord>& rows) = 0;
  // Asks for the job to be cancelled, whoever runs it: the flag is kept beside the job's
  // record (which its owner's writes do not touch); the owner sees it when it renews, and
  // it makes the job due for claimJobs. A finished job is left as it is. Errors:
  // JobNotFound.
  virtual Status requestJobCancel(std::string_view job_id) = 0;
};

class DeviceJobStore {
 public:
  virtual ~DeviceJobStore() = default;

  // Inserts or replaces every row in one write (one transaction for the whole batch).
  virtual Status putDeviceJobs(const std::vector<DeviceJobRecord>& rows) = 0;

  // Rows of one job, ordered by device id, strictly after `after_device_id`, at most
  // `limit`; only rows with `status` when given.
  virtual Result<std::vector<DeviceJobRecord>> listDeviceJobs(
      std::string_view job_id, std::optional<std::string_view> status,
      std::string_view after_device_id, std::size_t limit) = 0;

  // Rows of all jobs ordered by (job_id, device_id), strictly after the given key, at most
  // `limit` (for `SELECT * FROM devices.jobs`).
  virtual Result<std::vector<DeviceJobRecord>> listAllDeviceJobs(std::string_view after_job_id,
                                                                 std::string_view after_device_id,
                                                                 std::size_t limit) = 0;
};

class AccessPolicyStore {
 public:
  virtual ~AccessPolicyStore() = default;
  virtual Result<std::vector<AccessPolicyRecord>> listPolicies() = 0;
  // Inserts the policies whose names are not present yet; existing ones are untouched.
  virtual Status insertMissingPolicies(const std::vector<AccessPolicyRecord>& policies) = 0;
};

class MqttSessionStore {
 public:
  virtual ~MqttSessionStore() = default;
  // The session of `client_id`, or nullopt when it has none.
  virtual Result<std::optional<MqttSessionRecord>> getSession(std::string_view client_id) = 0;
  // Creates or replaces the session of an existing device. Errors: DeviceNotFound when no
  // device has the id `client_id`: a connection that saves its subscriptions after its
  // device was deleted cannot bring the session back.
  virtual Status putSession(const MqttSessionRecord& session) = 0;
  // Removes the session if it exists (a CleanSession=1 connect, a deleted device).
  virtual Status deleteSession(std::string_view client_id) = 0;
};

// For a message leaving its queue and why: the feedback record to store in the same
// transaction (its `document`, with the message's removal time as `enqueued_time`), or
// nullopt for none. Runs inside the store's transaction (same rules as mutations: quick,
// no calls into the store, may run more than once).
using C2dFeedbackRule =
    std::function<std::optional<C2dFeedbackRecord>(const C2dMessageRecord&, C2dRemoval)>;

// How lockC2d takes a message.
struct C2dLock {
  SystemTime now{};    // the caller's clock: expiry and earlier locks are judged by it
  SystemTime until{};  // the new lock's end
  std::string token;   // the new lock's token (unique; the c2d module makes them)
  std::int32_t max_delivery_count = 10;  // a free message already delivered this often is removed
};

enum class C2dSettlement { Complete, Reject, Abandon };

// Cloud-to-device message queues, one per device, and the hub-wide feedback queue
// (docs/c2d.md). Every change to a device's queue also keeps the device's
// cloud_to_device_message_count equal to the number of messages in it, in the same
// transaction (without touching its etag). RegistryStore::deleteDevice removes the
// device's messages (without feedback).
class C2dStore {
 public:
  virtual ~C2dStore() = default;

  // Appends `message` (sequence and lock fields are ignored; the lock is free and the
  // delivery count 0) to its device's queue unless the queue already holds `max_depth`
  // messages (expired ones not yet removed count). Returns the message's sequence.
  // Errors: DeviceNotFound; DeviceMaximumQueueDepthExceeded.
  virtual Result<std::int64_t> enqueueC2d(const C2dMessageRecord& message,
                                          std::size_t max_depth) = 0;

  // Locks the device's next message and returns it: in sequence order, the first whose lock
  // is free (no token, or locked_until <= lock.now) and that has not expired. In the same
  // transaction, messages passed on the way are removed: expired ones (expiry_time <=
  // lock.now) as Expired, free ones already delivered max_delivery_count times as
  // DeliveryCountExceeded, each through `feedback`. The returned message carries the new
  // lock (token, until) and its delivery count plus one. nullopt: nothing to deliver (also
  // for an unknown device). Concurrent calls for one device never lock one message twice.
  virtual Result<std::optional<C2dMessageRecord>> lockC2d(std::string_view device_id,
                                                          const C2dLock& lock,
                                                          const C2dFeedbackRule& feedback) = 0;

  // Settles the device's message locked under `lock_token`, whose lock has not passed at
  // `now`: Complete and Reject remove it (Completed, Rejected through `feedback`); Abandon
  // frees its lock so it is delivered again (its delivery count stays). Returns the message
  // as it was before the settlement. Errors: DeviceMessageLockLost when no message of the
  // device holds that token or its lock has passed.
  virtual Result<C2dMessageRecord> settleC2d(std::string_view device_id,
                                             std::string_view lock_token, C2dSettlement settlement,
                                             SystemTime now, const C2dFeedbackRule& feedback) = 0;

  // Removes every message of the device (Purged through `feedback`); returns how many.
  // Errors: DeviceNotFound.
  virtual Result<std::size_t> purgeC2d(std::string_view device_id,
                                       const C2dFeedbackRule& feedback) = 0;

  // Removes up to `limit` messages of any device whose expiry_time <= now (Expired through
  // `feedback`), earliest expiry first; returns how many (the caller repeats while it gets
  // `limit`).
  virtual Result<std::size_t> expireC2d(SystemTime now, std::size_t limit,
                                        const C2dFeedbackRule& feedback) = 0;

  // The device's queue in sequence order (locked and expired messages included), at most
  // `limit`: for tests and operators.
  virtual Result<std::vector<C2dMessageRecord>> listC2d(std::string_view device_id,
                                                        std::size_t limit) = 0;

  // The oldest feedback records whose lock is free (never locked, or locked_until <= now),
  // at most `limit`, in sequence order, now locked until `until` so that no other receiver
  // takes them meanwhile. Concurrent calls never return one record twice while it is locked.
  virtual Result<std::vector<C2dFeedbackRecord>> lockC2dFeedback(SystemTime now, SystemTime until,
                                                                 std::size_t limit) = 0;
  // Removes these feedback records (delivered); unknown sequences are ignored.
  virtual Status deleteC2dFeedback(const std::vector<std::int64_t>& sequences) = 0;
  // Removes up to `limit` feedback records enqueued before `enqueued_before` (nobody
  // received them in time); returns how many.
  virtual Result<std::size_t> expireC2dFeedback(SystemTime enqueued_before, std::size_t limit) = 0;
};

// The telemetry log (docs/telemetry.md): device-to-cloud messages in numbered partitions,
// each an append-only sequence read by position, trimmed from its start by age and size.
// Appends from every process sharing the store (a cluster's nodes) go into one order per
// partition: sequences are assigned at commit, gapless and strictly increasing, and a
// record is readable once its append returned.
class TelemetryStore {
 public:
  virtual ~TelemetryStore() = default;

  // Appends `records`, each to its `partition`, in the given order within a partition (their
  // `sequence` is ignored), in one transaction. Returns each record's sequence, in order.
  // Errors: ArgumentInvalid for a negative partition.
  virtual Result<std::vector<std::int64_t>> appendTelemetry(
      const std::vector<TelemetryRecord>& records) = 0;

  // Records of `partition` with sequence >= `from_sequence` (trimmed ones are skipped),
  // ascending, at most `limit`, and no more once their body + document bytes reach
  // `max_bytes` (the first record is always returned).
  virtual Result<std::vector<TelemetryRecord>> readTelemetry(std::int32_t partition,
                                                             std::int64_t from_sequence,
                                                             std::size_t limit,
                                                             std::size_t max_bytes) = 0;

  // The sequence of the first retained record of `partition` enqueued strictly after `t`
  // (the partition's next_sequence when there is none).
  virtual Result<std::int64_t> telemetrySequenceAfter(std::int32_t partition, SystemTime t) = 0;

  // The partition's positions and size (zeros and epoch for a partition never appended to).
  virtual Result<TelemetryPartitionInfo> telemetryPartition(std::int32_t partition) = 0;

  // Retention: removes from the start of `partition` the records enqueued before
  // `older_than`, then the oldest ones while the partition holds more than `max_bytes`, at
  // most `limit` records per call. Returns how many were removed. Positions never move
  // back: the next append still gets next_sequence.
  virtual Result<std::size_t> trimTelemetry(std::int32_t partition, SystemTime older_than,
                                            std::uint64_t max_bytes, std::size_t limit) = 0;

  // --- Consumer groups (docs/telemetry.md §9) ---
  // Names compare case-insensitively in ASCII ("$default" is "$Default"); a record keeps the
  // case it was created with. "$Default" exists from the store's creation on (the schema
  // migration inserts it, created at the migration's time) and cannot be deleted. The store
  // does not check the name rule (telemetry::validConsumerGroupName): its callers do.

  // Every group, "$Default" included, ordered by lower-cased name.
  virtual Result<std::vector<ConsumerGroupRecord>> listConsumerGroups() = 0;

  // Errors: ConsumerGroupNotFound.
  virtual Result<ConsumerGroupRecord> getConsumerGroup(std::string_view name) = 0;

  // Creates `group` as given (name and created_time). The count and the insert run in one
  // transaction that excludes every other creator, in any process sharing the store, so
  // that concurrent creators never exceed `max_groups`.
  // Errors: ConsumerGroupAlreadyExists when the name exists in any case;
  // IotHubQuotaExceeded when `max_groups` groups ("$Default" included) exist already.
  virtual Status createConsumerGroup(const ConsumerGroupRecord& group, std::size_t max_groups) = 0;

  // Errors: ConsumerGroupNotFound; ArgumentInvalid for "$Default" (in any case).
  virtual Status deleteConsumerGroup(std::string_view name) = 0;
};

// A backend's group-commit writer, as the metrics endpoint reads it.
struct WriterMetrics {
  const AtomicHistogram* batch_sizes = nullptr;    // operations per transaction
  const AtomicHistogram* batch_seconds = nullptr;  // a batch's run and commit
  std::size_t queued_operations = 0;               // waiting for the writer now
  std::uint64_t failed_commits = 0;
};

// The order in which claimJobs hands out due jobs: compare the tuples, smallest first.
inline auto claimOrder(const JobRecord& job) {
  return std::make_tuple(job.status != "running", -job.priority(), job.start_time, job.created_time,
                         job.job_id);
}

// A backend: owns its connections and writer thread. Destroying it finishes queued
// writes, then closes the database.
class Store {
 public:
  virtual ~Store() = default;
  virtual RegistryStore& registry() = 0;
  virtual TwinStore& twins() = 0;
  virtual JobStore& jobs() = 0;
  virtual DeviceJobStore& deviceJobs() = 0;
  virtual AccessPolicyStore& policies() = 0;
  virtual MqttSessionStore& mqttSessions() = 0;
  virtual C2dStore& c2d() = 0;
  virtual TelemetryStore& telemetry() = 0;
  // What the nodes of a cluster share (store/cluster_store.hpp); null for a backend that
  // only one process uses (SQLite).
  virtual ClusterStore* cluster() { return nullptr; }
  // Which devices other processes changed (store/change_feed.hpp); null for a backend
  // that only one process writes (SQLite).
  virtual ChangeFeed* changeFeed() { return nullptr; }
  // Its writer's figures; nullopt for a backend without a group-commit writer.
  virtual std::optional<WriterMetrics> writerMetrics() const { return std::nullopt; }
};

}  // namespace iothub::store
