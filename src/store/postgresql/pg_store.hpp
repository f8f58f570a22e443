#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "store/postgresql/pg_change_feed.hpp"
#include "store/postgresql/pg_connection.hpp"
#include "store/postgresql/pg_writer.hpp"
#include "store/store.hpp"

namespace iothub::store {

struct PostgresOptions {
  // Read connections shared by all reading threads (at least 1), opened on demand.
  std::size_t pool_size = 4;
  // Client-side bound on every query, from sending it to its last result. Past it the call
  // fails with ServiceUnavailable and the connection is closed (see PgConnection).
  std::chrono::milliseconds query_deadline{10'000};
  // Bound on opening a connection, unless the connection string sets connect_timeout.
  std::chrono::milliseconds connect_timeout{10'000};
  // Most write operations the writer runs in one transaction. Each operation of a batch is
  // a subtransaction (SAVEPOINT); PostgreSQL tracks up to 64 of them per transaction in
  // shared memory before every other session's snapshots get slower, hence 64.
  std::size_t max_batch = 64;
  // Transactions a batch may take when deadlocks or serialization failures abort it.
  int max_transaction_attempts = 3;
};

// The server backend: every record in one PostgreSQL (15 or later) database, so several
// iothub processes can share it.
//
// Writes go through one writer thread and connection that commits concurrent writes
// together (see PgWriter); mutation callbacks read their row with SELECT ... FOR UPDATE
// inside that transaction, so writers on other processes wait for each other per row.
// Reads use a small pool of connections and never wait for the writer; a read issued
// after a write call returned sees that write.
//
// All methods follow the contract in store.hpp: thread-safe, blocking, never throwing.
// Errors: ServiceUnavailable when PostgreSQL cannot be reached, drops the connection or
// misses the query deadline (transient: the next call connects again); ServerError for
// other SQL failures, with PostgreSQL's message and SQLSTATE; StoreCorruption for stored
// values that do not decode.
class PostgresStore final : public Store,
                            private RegistryStore,
                            private TwinStore,
                            private JobStore,
                            private DeviceJobStore,
                            private AccessPolicyStore,
                            private MqttSessionStore,
                            private C2dStore,
                            private TelemetryStore,
                            private ClusterStore {
 public:
  using WriterStats = PgWriter::Stats;

  // Connects with `conninfo` (a `postgresql://` URI or key=value pairs, see
  // parsePgConninfo), brings the schema up to date (see pg_schema.hpp) and starts the
  // writer thread. The database must exist and use the UTF8 encoding.
  // Errors: ArgumentInvalid for a connection string libpq cannot parse or a database that
  // is not UTF8; ServiceUnavailable when the server cannot be reached or its schema is
  // newer than this build's; a migration's error otherwise.
  static Result<std::unique_ptr<PostgresStore>> open(std::string conninfo,
                                                     PostgresOptions options = {});

  // Stops accepting writes (later ones get Cancelled), finishes the queued ones, joins the
  // writer thread and closes every connection. No read may be running.
  ~PostgresStore() override;

  RegistryStore& registry() override { return *this; }
  TwinStore& twins() override { return *this; }
  JobStore& jobs() override { return *this; }
  DeviceJobStore& deviceJobs() override { return *this; }
  AccessPolicyStore& policies() override { return *this; }
  MqttSessionStore& mqttSessions() override { return *this; }
  C2dStore& c2d() override { return *this; }
  TelemetryStore& telemetry() override { return *this; }
  ClusterStore* cluster() override { return this; }
  // Reads on the pool's connections (pg_change_feed.hpp).
  ChangeFeed* changeFeed() override { return change_feed_.get(); }

  // Counters of the group-commit writer (for tests, benchmarks and metrics).
  WriterStats stats() const;
  std::optional<WriterMetrics> writerMetrics() const override;

 private:
  class ReaderPool;

  PostgresStore(const PgConnectSettings& settings, std::unique_ptr<PgConnection> write_connection,
                const PostgresOptions& options);

  // Runs `body` on a pooled connection; converts exceptions to ServerError.
  template <class T, class Body>
  Result<T> read(Body&& body);
  // Runs `body` on the writer thread inside a group-commit transaction and returns its
  // value once committed.
  template <class T, class Body>
  Result<T> write(Body&& body);
  Status writeStatus(PgWriter::Operation operation);

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

  // ClusterStore
  Result<NodeRecord> renewNode(std::string_view node_id, std::string_view address,
                               std::chrono::milliseconds ttl) override;
  Result<NodeRecord> joinNode(std::string_view node_id, std::string_view address,
                              std::chrono::milliseconds ttl) override;
  Status leaveNode(std::string_view node_id) override;
  Result<std::vector<NodeRecord>> liveNodes() override;
  Result<std::vector<std::string>> reapExpiredNodes() override;
  Result<PresenceClaim> claimPresence(std::string_view device_id,
                                      std::string_view node_id) override;
  Result<bool> releasePresence(std::string_view device_id, std::int64_t epoch) override;
  Result<PresenceRepair> repairPresence(std::string_view node_id,
                                        const std::vector<HeldConnection>& held,
                                        std::chrono::milliseconds settle) override;
  Result<std::optional<PresenceRecord>> getPresence(std::string_view device_id) override;
  Result<std::int64_t> connectedDeviceCount() override;
  Result<std::string> shareValue(std::string_view key, std::string_view proposed) override;

  std::unique_ptr<ReaderPool> readers_;
  std::unique_ptr<PgWriter> writer_;
  std::unique_ptr<PgChangeFeed> change_feed_;  // reads through readers_
};

}  // namespace iothub::store
