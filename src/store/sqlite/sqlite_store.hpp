#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "store/sqlite/sqlite_connection.hpp"
#include "store/sqlite/sqlite_writer.hpp"
#include "store/store.hpp"

namespace iothub::store {

struct SqliteOptions {
  // PRAGMA synchronous=FULL: every commit is fsynced, so a returned write survives power
  // loss. NORMAL (false) only survives process crashes; the last commits may be lost on
  // power loss, but commits are cheaper.
  bool synchronous_full = true;
  // Most write operations the writer runs in one transaction.
  std::size_t max_batch = 512;
  // Read-only connections shared by all reading threads (at least 1).
  std::size_t reader_connections = 4;
};

// The embedded backend: one SQLite file in WAL mode.
//
// Writes go through one writer thread that owns the only write connection and commits
// concurrent writes together (see SqliteWriter); reads use a pool of read-only connections
// and never wait for the writer (WAL readers see the last commit). A read issued after a
// write call returned sees that write.
//
// All methods follow the contract in store.hpp: thread-safe, blocking, never throwing.
// SQLite failures are ServerError carrying SQLite's message; stored JSON that does not
// decode, or a stored value outside its enum, is StoreCorruption.
class SqliteStore final : public Store,
                          private RegistryStore,
                          private TwinStore,
                          private JobStore,
                          private DeviceJobStore,
                          private AccessPolicyStore,
                          private MqttSessionStore,
                          private C2dStore,
                          private TelemetryStore {
 public:
  using WriterStats = SqliteWriter::Stats;

  // Opens or creates `db_file` (its directory must exist), switches it to WAL, brings its
  // schema up to date (see sqlite_schema.hpp) and starts the writer thread.
  // Errors: ServerError when the file cannot be opened or created, or was written by a
  // newer iothub (schema version too high); StoreCorruption when it is not a database.
  static Result<std::unique_ptr<SqliteStore>> open(const std::filesystem::path& db_file,
                                                   SqliteOptions options = {});

  // Stops accepting writes (later ones get Cancelled), finishes the queued ones, joins the
  // writer thread and closes every connection. No read may be running.
  ~SqliteStore() override;

  RegistryStore& registry() override { return *this; }
  TwinStore& twins() override { return *this; }
  JobStore& jobs() override { return *this; }
  DeviceJobStore& deviceJobs() override { return *this; }
  AccessPolicyStore& policies() override { return *this; }
  MqttSessionStore& mqttSessions() override { return *this; }
  C2dStore& c2d() override { return *this; }
  TelemetryStore& telemetry() override { return *this; }

  // Counters of the group-commit writer (for tests, benchmarks and metrics).
  WriterStats stats() const;
  std::optional<WriterMetrics> writerMetrics() const override;

 private:
  class ReaderPool;

  SqliteStore(std::unique_ptr<SqliteConnection> write_connection,
              std::unique_ptr<ReaderPool> readers, std::size_t max_batch);

  // Runs `body` on a pooled read connection; converts exceptions to ServerError.
  template <class T, class Body>
  Result<T> read(Body&& body);
  // Runs `body` on the writer thread inside a group-commit transaction and returns its
  // value once committed.
  template <class T, class Body>
  Result<T> write(Body&& body);
  Status writeStatus(SqliteWriter::Operation operation);

  // RegistryStore
  Status createDevice(const DeviceRecord& device, const TwinRecord& twin) override;
  Result<DeviceRecord> getDevice(std::string_view device_id) override;
  Result<DeviceRecord> updateDevice(std::string_view device_id, DeviceMutation mutate) override;
  Status deleteDevice(std::string_view device_id, DevicePrecondition precondition) override;
  std::vector<Result<DeviceRecord>> writeDevices(const std::vector<DeviceWrite>& writes) override;
  Result<std::vector<DeviceRecord>> listDevices(std::string_view after_device_id,
                                                std::size_t limit) override;
  Result<DeviceStatistics> deviceStatistics() override;

  // TwinStore
  Result<TwinRecord> getTwin(std::string_view device_id) override;
  Result<TwinRecord> updateTwin(std::string_view device_id, TwinMutation mutate) override;
  Result<TwinRecord> updateTwinForJob(std::string_view device_id, TwinMutation mutate,
                                      const DeviceJobWrite& job_row) override;
  std::vector<Result<TwinRecord>> updateTwinsForJob(
      const std::vector<TwinJobUpdate>& updates) override;
  Result<std::vector<TwinRecord>> listTwins(std::string_view after_device_id,
                                            std::size_t limit) override;

  // JobStore
  Status createJob(const JobRecord& job) override;
  Result<JobRecord> getJob(std::string_view job_id) override;
  Result<JobRecord> updateJob(std::string_view job_id, JobMutation mutate) override;
  Result<std::vector<JobRecord>> listJobs(const JobFilter& filter, std::string_view after_job_id,
                                          std::size_t limit) override;
  Result<std::vector<JobRecord>> jobsWithStatus(const std::vector<std::string>& statuses) override;
  Result<std::vector<ClaimedJob>> claimJobs(std::string_view owner, SystemTime due_by,
                                            std::chrono::milliseconds ttl,
                                            std::size_t limit) override;
  Result<std::vector<JobLeaseRenewal>> renewJobLeases(const std::vector<JobLease>& leases,
                                                      std::chrono::milliseconds ttl) override;
  Status releaseJobLease(const JobLease& lease) override;
  Result<std::size_t> releaseJobLeasesOf(std::string_view owner) override;
  Result<JobRecord> updateLeasedJob(const JobLease& lease, JobMutation mutate) override;
  Status putLeasedDeviceJobs(const JobLease& lease,
                             const std::vector<DeviceJobRecord>& rows) override;
  Status requestJobCancel(std::string_view job_id) override;

  // DeviceJobStore
  Status putDeviceJobs(const std::vector<DeviceJobRecord>& rows) override;
  Result<std::vector<DeviceJobRecord>> listDeviceJobs(std::string_view job_id,
                                                      std::optional<std::string_view> status,
                                                      std::string_view after_device_id,
                                                      std::size_t limit) override;
  Result<std::vector<DeviceJobRecord>> listAllDeviceJobs(std::string_view after_job_id,
                                                         std::string_view after_device_id,
                                                         std::size_t limit) override;

  // AccessPolicyStore
  Result<std::vector<AccessPolicyRecord>> listPolicies() override;
  Status insertMissingPolicies(const std::vector<AccessPolicyRecord>& policies) override;

  // MqttSessionStore
  Result<std::optional<MqttSessionRecord>> getSession(std::string_view client_id) override;
  Status putSession(const MqttSessionRecord& session) override;
  Status deleteSession(std::string_view client_id) override;

  // C2dStore
  Result<std::int64_t> enqueueC2d(const C2dMessageRecord& message, std::size_t max_depth) override;
  Result<std::optional<C2dMessageRecord>> lockC2d(std::string_view device_id, const C2dLock& lock,
                                                  const C2dFeedbackRule& feedback) override;
  Result<C2dMessageRecord> settleC2d(std::string_view device_id, std::string_view lock_token,
                                     C2dSettlement settlement, SystemTime now,
                                     const C2dFeedbackRule& feedback) override;
  Result<std::size_t> purgeC2d(std::string_view device_id,
                               const C2dFeedbackRule& feedback) override;
  Result<std::size_t> expireC2d(SystemTime now, std::size_t limit,
                                const C2dFeedbackRule& feedback) override;
  Result<std::vector<C2dMessageRecord>> listC2d(std::string_view device_id,
                                                std::size_t limit) override;
  Result<std::vector<C2dFeedbackRecord>> lockC2dFeedback(SystemTime now, SystemTime until,
                                                         std::size_t limit) override;
  Status deleteC2dFeedback(const std::vector<std::int64_t>& sequences) override;
  Result<std::size_t> expireC2dFeedback(SystemTime enqueued_before, std::size_t limit) override;

  // TelemetryStore
  Result<std::vector<std::int64_t>> appendTelemetry(
      const std::vector<TelemetryRecord>& records) override;
  Result<std::vector<TelemetryRecord>> readTelemetry(std::int32_t partition,
                                                     std::int64_t from_sequence, std::size_t limit,
                                                     std::size_t max_bytes) override;
  Result<std::int64_t> telemetrySequenceAfter(std::int32_t partition, SystemTime t) override;
  Result<TelemetryPartitionInfo> telemetryPartition(std::int32_t partition) override;
  Result<std::size_t> trimTelemetry(std::int32_t partition, SystemTime older_than,
                                    std::uint64_t max_bytes, std::size_t limit) override;
  Result<std::vector<ConsumerGroupRecord>> listConsumerGroups() override;
  Result<ConsumerGroupRecord> getConsumerGroup(std::string_view name) override;
  Status createConsumerGroup(const ConsumerGroupRecord& group, std::size_t max_groups) override;
  Status deleteConsumerGroup(std::string_view name) override;

  // Destruction order matters (see the destructor): writer, then readers, then the write
  // connection, so the last connection to close is the one that can checkpoint the WAL.
  std::unique_ptr<SqliteConnection> write_connection_;
  std::unique_ptr<ReaderPool> readers_;
  std::unique_ptr<SqliteWriter> writer_;
};

}  // namespace iothub::store
