#include "store/sqlite/sqlite_store.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <optional>
#include <utility>

#include "common/json.hpp"
#include "store/record_codec.hpp"
#include "store/sqlite/sqlite_schema.hpp"

namespace iothub::store {

// --- Reader pool ---

// Read-only connections handed out one per reading thread. A reader that finds the pool
// empty waits for a connection to come back rather than opening more: the pool size bounds
// how many reads run at once.
class SqliteStore::ReaderPool {
 public:
  static Result<std::unique_ptr<ReaderPool>> open(const std::filesystem::path& file,
                                                  std::size_t count) {
    auto pool = std::unique_ptr<ReaderPool>(new ReaderPool());
    for (std::size_t i = 0; i < std::max<std::size_t>(count, 1); ++i) {
      auto connection = SqliteConnection::open(file, SqliteConnection::Mode::ReadOnly);
      if (!connection) return connection.status();
      pool->idle_.push_back(std::move(connection).value());
    }
    return pool;
  }

  // Returns its connection to the pool on destruction.
  class Lease {
   public:
    Lease(ReaderPool& pool, std::unique_ptr<SqliteConnection> connection)
        : pool_(pool), connection_(std::move(connection)) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { pool_.release(std::move(connection_)); }
    SqliteConnection& connection() { return *connection_; }

   private:
    ReaderPool& pool_;
    std::unique_ptr<SqliteConnection> connection_;
  };

  Lease acquire() {
    std::unique_lock lock(mutex_);
    returned_.wait(lock, [this] { return !idle_.empty(); });
    std::unique_ptr<SqliteConnection> connection = std::move(idle_.back());
    idle_.pop_back();
    return Lease(*this, std::move(connection));
  }

 private:
  ReaderPool() = default;

  void release(std::unique_ptr<SqliteConnection> connection) {
    {
      std::lock_guard lock(mutex_);
      idle_.push_back(std::move(connection));
    }
    returned_.notify_one();
  }

  std::mutex mutex_;
  std::condition_variable returned_;
  std::vector<std::unique_ptr<SqliteConnection>> idle_;  // guarded by mutex_
};

namespace {

// Pages are capped by the caller's limit; reserve at most this much up front.
constexpr std::size_t kMaxReserve = 1024;

// Reads every row of a statement whose parameters are bound, decoding each with `decode`.
template <class T, class Decode>
Result<std::vector<T>> collect(SqliteStatement& statement, std::size_t expected, Decode decode) {
  std::vector<T> rows;
  rows.reserve(std::min(expected, kMaxReserve));
  while (true) {
    Result<bool> row = statement.step();
    if (!row) return row.status();
    if (!*row) return rows;
    Result<T> decoded = decode(statement);
    if (!decoded) return decoded.status();
    rows.push_back(std::move(decoded).value());
  }
}

// Runs a statement expected to return at most one row. Returns nullopt when there is none.
template <class T, class Decode>
Result<std::optional<T>> single(SqliteStatement& statement, Decode decode) {
  Result<bool> row = statement.step();
  if (!row) return row.status();
  if (!*row) return std::optional<T>();
  Result<T> decoded = decode(statement);
  if (!decoded) return decoded.status();
  return std::optional<T>(std::move(decoded).value());
}

// --- devices ---

// The SQL below is spelled out literally (not assembled at run time) so each statement is
// one cache entry and can be read as it runs. Column lists are kept in one place per table.
#define IOTHUB_DEVICE_COLUMNS                                                               \
  "device_id, generation_id, etag, status, status_reason, status_updated_time, auth_type, " \
  "primary_key, secondary_key, primary_thumbprint, secondary_thumbprint, iot_edge, "        \
  "device_scope, parent_scopes, connection_state_updated_time, last_activity_time, "        \
  "cloud_to_device_message_count"

constexpr std::string_view kSelectDevice =
    "SELECT " IOTHUB_DEVICE_COLUMNS " FROM devices WHERE device_id = ?1";
constexpr std::string_view kListDevices = "SELECT " IOTHUB_DEVICE_COLUMNS
                                          " FROM devices WHERE device_id > ?1"
                                          " ORDER BY device_id LIMIT ?2";
constexpr std::string_view kInsertDevice =
    "INSERT INTO devices (" IOTHUB_DEVICE_COLUMNS
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
    " ON CONFLICT (device_id) DO NOTHING";
constexpr std::string_view kUpdateDevice =
    "UPDATE devices SET generation_id = ?2, etag = ?3, status = ?4, status_reason = ?5,"
    " status_updated_time = ?6, auth_type = ?7, primary_key = ?8, secondary_key = ?9,"
    " primary_thumbprint = ?10, secondary_thumbprint = ?11, iot_edge = ?12, device_scope = ?13,"
    " parent_scopes = ?14, connection_state_updated_time = ?15, last_activity_time = ?16,"
    " cloud_to_device_message_count = ?17 WHERE device_id = ?1";
constexpr std::string_view kDeleteDevice = "DELETE FROM devices WHERE device_id = ?1";
constexpr std::string_view kDeleteSession = "DELETE FROM mqtt_sessions WHERE client_id = ?1";
constexpr std::string_view kDeviceStatistics =
    "SELECT count(*), coalesce(sum(status = 'enabled'), 0), coalesce(sum(status = 'disabled'), 0)"
    " FROM devices";

#undef IOTHUB_DEVICE_COLUMNS

void bindDevice(SqliteStatement& statement, const DeviceRecord& device) {
  statement.bind(1, device.device_id)
      .bind(2, device.generation_id)
      .bind(3, device.etag)
      .bind(4, encodeDeviceStatus(device.status))
      .bind(5, device.status_reason)
      .bind(6, toNanoseconds(device.status_updated_time))
      .bind(7, encodeAuthType(device.auth_type))
      .bind(8, device.primary_key)
      .bind(9, device.secondary_key)
      .bind(10, device.primary_thumbprint)
      .bind(11, device.secondary_thumbprint)
      .bind(12, std::int64_t{device.iot_edge ? 1 : 0})
      .bind(13, device.device_scope)
      .bind(14, encodeStrings(device.parent_scopes))
      .bind(15, toNanoseconds(device.connection_state_updated_time))
      .bind(16, toNanoseconds(device.last_activity_time))
      .bind(17, device.cloud_to_device_message_count);
}

Result<DeviceRecord> loadDevice(SqliteConnection& connection, std::string_view device_id) {
  Result<SqliteStatement> statement = connection.prepare(kSelectDevice);
  if (!statement) return statement.status();
  statement->bind(1, device_id);
  Result<std::optional<DeviceRecord>> device =
      single<DeviceRecord>(*statement, decodeDeviceRow<SqliteStatement>);
  if (!device) return device.status();
  if (!device->has_value()) return deviceNotFound(device_id);
  return std::move(**device);
}

// --- twins ---

#define IOTHUB_TWIN_COLUMNS \
  "device_id, tags, desired, reported, version, desired_version, reported_version"

constexpr std::string_view kSelectTwin =
    "SELECT " IOTHUB_TWIN_COLUMNS " FROM twins WHERE device_id = ?1";
constexpr std::string_view kListTwins = "SELECT " IOTHUB_TWIN_COLUMNS
                                        " FROM twins WHERE device_id > ?1"
                                        " ORDER BY device_id LIMIT ?2";
constexpr std::string_view kInsertTwin =
    "INSERT INTO twins (" IOTHUB_TWIN_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
constexpr std::string_view kUpdateTwin =
    "UPDATE twins SET tags = ?2, desired = ?3, reported = ?4, version = ?5,"
    " desired_version = ?6, reported_version = ?7 WHERE device_id = ?1";

#undef IOTHUB_TWIN_COLUMNS

void bindTwin(SqliteStatement& statement, const TwinRecord& twin) {
  statement.bind(1, twin.device_id)
      .bind(2, json::serialize(twin.tags))
      .bind(3, json::serialize(twin.desired))
      .bind(4, json::serialize(twin.reported))
      .bind(5, twin.version)
      .bind(6, twin.desired_version)
      .bind(7, twin.reported_version);
}

Result<TwinRecord> loadTwin(SqliteConnection& connection, std::string_view device_id) {
  Result<SqliteStatement> statement = connection.prepare(kSelectTwin);
  if (!statement) return statement.status();
  statement->bind(1, device_id);
  Result<std::optional<TwinRecord>> twin =
      single<TwinRecord>(*statement, decodeTwinRow<SqliteStatement>);
  if (!twin) return twin.status();
  if (!twin->has_value()) return deviceNotFound(device_id);
  return std::move(**twin);
}

// --- jobs ---

#define IOTHUB_JOB_COLUMNS "job_id, type, status, created_time, start_time, end_time, document"

constexpr std::string_view kSelectJob = "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE job_id = ?1";
constexpr std::string_view kInsertJob = "INSERT INTO jobs (" IOTHUB_JOB_COLUMNS
                                        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                                        " ON CONFLICT (job_id) DO NOTHING";
constexpr std::string_view kUpdateJob =
    "UPDATE jobs SET type = ?2, status = ?3, created_time = ?4, start_time = ?5, end_time = ?6,"
    " document = ?7 WHERE job_id = ?1";
constexpr std::string_view kJobsWithStatus =
    "SELECT " IOTHUB_JOB_COLUMNS
    " FROM jobs WHERE status IN (SELECT value FROM json_each(?1))"
    " ORDER BY created_time, job_id";
constexpr std::string_view kJobPosition = "SELECT created_time FROM jobs WHERE job_id = ?1";

// listJobs: one statement per combination of filters, so each keeps its own plan.
// Parameters: ?1 type, ?2 status, ?3/?4 (created_time, job_id) to start after, ?5 limit.
constexpr std::string_view kListJobs[2][2][2] = {
    // [type filter][status filter][after a job]
    {{"SELECT " IOTHUB_JOB_COLUMNS " FROM jobs"
      " ORDER BY created_time, job_id LIMIT ?5",
      "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE (created_time, job_id) > (?3, ?4)"
      " ORDER BY created_time, job_id LIMIT ?5"},
     {"SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE status = ?2"
      " ORDER BY created_time, job_id LIMIT ?5",
      "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE status = ?2"
      " AND (created_time, job_id) > (?3, ?4) ORDER BY created_time, job_id LIMIT ?5"}},
    {{"SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE type = ?1"
      " ORDER BY created_time, job_id LIMIT ?5",
      "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE type = ?1"
      " AND (created_time, job_id) > (?3, ?4) ORDER BY created_time, job_id LIMIT ?5"},
     {"SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE type = ?1 AND status = ?2"
      " ORDER BY created_time, job_id LIMIT ?5",
      "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE type = ?1 AND status = ?2"
      " AND (created_time, job_id) > (?3, ?4) ORDER BY created_time, job_id LIMIT ?5"}},
};

#undef IOTHUB_JOB_COLUMNS

void bindJob(SqliteStatement& statement, const JobRecord& job) {
  statement.bind(1, job.job_id)
      .bind(2, job.type)
      .bind(3, job.status)
      .bind(4, toNanoseconds(job.created_time))
      .bind(5, toNanoseconds(job.start_time))
      .bind(7, json::serialize(job.document));
  if (job.end_time) {
    statement.bind(6, toNanoseconds(*job.end_time));
  } else {
    statement.bindNull(6);
  }
}

Result<JobRecord> loadJob(SqliteConnection& connection, std::string_view job_id) {
  Result<SqliteStatement> statement = connection.prepare(kSelectJob);
  if (!statement) return statement.status();
  statement->bind(1, job_id);
  Result<std::optional<JobRecord>> job =
      single<JobRecord>(*statement, decodeJobRow<SqliteStatement>);
  if (!job) return job.status();
  if (!job->has_value()) return jobNotFound(job_id);
  return std::move(**job);
}

// --- job leases ---
// Times are nanoseconds on the system clock, passed in as ?-parameters: SQLite's own clock
// functions have millisecond resolution at best, and one process owns the file.

constexpr std::string_view kDueJobs =
    "SELECT job_id, type, status, created_time, start_time, end_time, document, lease_epoch,"
    " cancel_requested FROM jobs"
    " WHERE status IN ('queued', 'scheduled', 'running') AND lease_until <= ?1"
    " AND (status = 'running' OR start_time <= ?2 OR cancel_requested)"
    " ORDER BY status = 'running' DESC, coalesce(json_extract(document, '$.priority'), 0) DESC,"
    " start_time, created_time, job_id LIMIT ?3";
constexpr std::string_view kClaimJob =
    "UPDATE jobs SET lease_owner = ?2, lease_until = ?3, lease_epoch = ?4 WHERE job_id = ?1";
constexpr std::string_view kRenewJobLease =
    "UPDATE jobs SET lease_until = ?3 WHERE job_id = ?1 AND lease_epoch = ?2 AND lease_until > ?4"
    " RETURNING cancel_requested";
constexpr std::string_view kReleaseJobLease =
    "UPDATE jobs SET lease_owner = NULL, lease_until = 0 WHERE job_id = ?1 AND lease_epoch = ?2";
constexpr std::string_view kReleaseJobLeasesOf =
    "UPDATE jobs SET lease_owner = NULL, lease_until = 0"
    " WHERE lease_owner = ?1 AND lease_until > ?2 AND status IN ('queued', 'scheduled', 'running')";
constexpr std::string_view kJobLeaseHeld =
    "SELECT lease_epoch = ?2 AND lease_until > ?3 FROM jobs WHERE job_id = ?1";
constexpr std::string_view kRequestJobCancel =
    "UPDATE jobs SET cancel_requested = 1"
    " WHERE job_id = ?1 AND status IN ('queued', 'scheduled', 'running')";
constexpr std::string_view kJobExists = "SELECT 1 FROM jobs WHERE job_id = ?1";

std::int64_t nowNanoseconds() { return toNanoseconds(std::chrono::system_clock::now()); }

std::int64_t leaseEnd(std::int64_t now, std::chrono::milliseconds ttl) {
  return now + std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::max(ttl, std::chrono::milliseconds(0)))
                   .count();
}

Status jobLeaseLost(const JobLease& lease) {
  return Status(ErrorCode::JobLeaseLost, "the lease of job '" + lease.job_id + "' (epoch " +
                                             std::to_string(lease.epoch) + ") is no longer held");
}

// Inside a write transaction: ok while `lease` is held; JobLeaseLost or JobNotFound.
Status checkJobLease(SqliteConnection& connection, const JobLease& lease) {
  Result<SqliteStatement> statement = connection.prepare(kJobLeaseHeld);
  if (!statement) return statement.status();
  statement->bind(1, lease.job_id).bind(2, lease.epoch).bind(3, nowNanoseconds());
  Result<bool> row = statement->step();
  if (!row) return row.status();
  if (!*row) return jobNotFound(lease.job_id);
  return statement->flag(0) ? Status::ok() : jobLeaseLost(lease);
}

// --- device jobs ---

#define IOTHUB_DEVICE_JOB_COLUMNS "job_id, device_id, status, last_updated_time, document"

constexpr std::string_view kPutDeviceJob =
    "INSERT INTO device_jobs (" IOTHUB_DEVICE_JOB_COLUMNS
    ") VALUES (?1, ?2, ?3, ?4, ?5)"
    " ON CONFLICT (job_id, device_id) DO UPDATE SET status = excluded.status,"
    " last_updated_time = excluded.last_updated_time, document = excluded.document";
constexpr std::string_view kListDeviceJobs = "SELECT " IOTHUB_DEVICE_JOB_COLUMNS
                                             " FROM device_jobs WHERE job_id = ?1"
                                             " AND device_id > ?2 ORDER BY device_id LIMIT ?3";
// Without ANALYZE statistics SQLite prefers the primary key here, which scans every row of
// the job after `?2` to find the few with a status; the status index finds them directly.
constexpr std::string_view kListDeviceJobsWithStatus =
    "SELECT " IOTHUB_DEVICE_JOB_COLUMNS
    " FROM device_jobs INDEXED BY device_jobs_by_status WHERE job_id = ?1 AND status = ?4"
    " AND device_id > ?2 ORDER BY device_id LIMIT ?3";
constexpr std::string_view kListAllDeviceJobs =
    "SELECT " IOTHUB_DEVICE_JOB_COLUMNS
    " FROM device_jobs WHERE (job_id, device_id) > (?1, ?2)"
    " ORDER BY job_id, device_id LIMIT ?3";

#undef IOTHUB_DEVICE_JOB_COLUMNS

// Inside a write transaction: inserts or replaces every row.
Status writeDeviceJobs(SqliteConnection& connection, const std::vector<DeviceJobRecord>& rows) {
  // One statement, compiled once, rebound per row: the cost per row is one B-tree insert.
  Result<SqliteStatement> put = connection.prepare(kPutDeviceJob);
  if (!put) return put.status();
  for (const DeviceJobRecord& row : rows) {
    put->bind(1, row.job_id)
        .bind(2, row.device_id)
        .bind(3, row.status)
        .bind(4, toNanoseconds(row.last_updated_time))
        .bind(5, json::serialize(row.document));
    IOTHUB_RETURN_IF_ERROR(put->run());
    put->reset();
  }
  return Status::ok();
}

// --- access policies ---

constexpr std::string_view kListPolicies =
    "SELECT name, primary_key, secondary_key, permissions FROM access_policies ORDER BY name";
constexpr std::string_view kInsertPolicy =
    "INSERT INTO access_policies (name, primary_key, secondary_key, permissions)"
    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING";

// --- opening ---

Status configureWriteConnection(SqliteConnection& connection, const SqliteOptions& options) {
  Result<SqliteStatement> journal = connection.prepare("PRAGMA journal_mode = WAL");
  if (!journal) return journal.status();
  Result<bool> row = journal->step();
  if (!row) return row.status();
  if (!*row || journal->text(0) != "wal") {
    return Status(ErrorCode::ServerError, "the database cannot be switched to WAL mode");
  }
  // FULL fsyncs the WAL on every commit (durable on power loss); NORMAL only at
  // checkpoints. With group commit one fsync covers a whole batch, so FULL stays cheap.
  IOTHUB_RETURN_IF_ERROR(connection.exec(options.synchronous_full ? "PRAGMA synchronous = FULL"
                                                                  : "PRAGMA synchronous = NORMAL"));
  IOTHUB_RETURN_IF_ERROR(connection.exec("PRAGMA foreign_keys = ON"));
  // A large job writes ~100 000 device-job rows in one transaction; a bigger page cache
  // keeps SQLite from spilling dirty pages to the WAL in the middle of it.
  IOTHUB_RETURN_IF_ERROR(connection.exec("PRAGMA cache_size = -32768"));  // 32 MiB
  // Such a transaction also grows the WAL file; after the next checkpoint, shrink it back
  // instead of keeping the high-water mark on disk.
  IOTHUB_RETURN_IF_ERROR(connection.exec("PRAGMA journal_size_limit = 16777216"));  // 16 MiB
  return Status::ok();
}

Status withContext(const std::filesystem::path& file, const Status& error) {
  return Status(error.code(), "opening store " + file.string() + ": " + error.message());
}

}  // namespace

// --- SqliteStore ---

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::filesystem::path& db_file,
                                                       SqliteOptions options) {
  try {
    auto writer = SqliteConnection::open(db_file, SqliteConnection::Mode::ReadWriteCreate);
    if (!writer) return writer.status();
    Status configured = configureWriteConnection(**writer, options);
    if (!configured) return withContext(db_file, configured);
    Status migrated = migrateSqliteSchema(**writer, sqliteMigrations());
    if (!migrated) return withContext(db_file, migrated);

    // Opened after the migrations so readers never see a half-built schema.
    auto readers = ReaderPool::open(db_file, options.reader_connections);
    if (!readers) return withContext(db_file, readers.status());
    return std::unique_ptr<SqliteStore>(
        new SqliteStore(std::move(writer).value(), std::move(readers).value(), options.max_batch));
  } catch (const std::exception& e) {
    return Status(ErrorCode::ServerError,
                  "opening store " + db_file.string() + ": " + std::string(e.what()));
  }
}

SqliteStore::SqliteStore(std::unique_ptr<SqliteConnection> write_connection,
                         std::unique_ptr<ReaderPool> readers, std::size_t max_batch)
    : write_connection_(std::move(write_connection)),
      readers_(std::move(readers)),
      writer_(std::make_unique<SqliteWriter>(*write_connection_, max_batch)) {}

SqliteStore::~SqliteStore() {
  writer_.reset();
  readers_.reset();
  // Closing the last connection checkpoints the WAL into the main file and removes it.
  write_connection_.reset();
}

SqliteStore::WriterStats SqliteStore::stats() const { return writer_->stats(); }

std::optional<WriterMetrics> SqliteStore::writerMetrics() const {
  const auto s = writer_->stats();
  return WriterMetrics{&writer_->batchSizes(), &writer_->batchSeconds(), s.queued_operations,
                       s.failed_commits};
}

template <class T, class Body>
Result<T> SqliteStore::read(Body&& body) {
  try {
    ReaderPool::Lease lease = readers_->acquire();
    return body(lease.connection());
  } catch (const std::exception& e) {
    return Status(ErrorCode::ServerError, std::string("store read failed: ") + e.what());
  }
}

template <class T, class Body>
Result<T> SqliteStore::write(Body&& body) {
  return submitReturning<T>(*writer_, std::forward<Body>(body));
}

Status SqliteStore::writeStatus(SqliteWriter::Operation operation) {
  return writer_->submit(std::move(operation));
}

// RegistryStore

namespace {

// One device write inside the caller's transaction. The returned Status is a failure of the
// database itself (the transaction must not commit what this write did); otherwise
// `outcome` is the write's own result, and a refused write changed nothing.
Status applyDeviceWrite(SqliteConnection& connection, const DeviceWrite& write,
                        std::optional<Result<DeviceRecord>>& outcome) {
  switch (write.kind) {
    case DeviceWrite::Kind::Create: {
      if (write.twin.device_id != write.device.device_id ||
          write.device.device_id != write.device_id) {
        outcome.emplace(Status(ErrorCode::ArgumentInvalid, "the twin belongs to another device"));
        return Status::ok();
      }
      {
        Result<SqliteStatement> insert_device = connection.prepare(kInsertDevice);
        if (!insert_device) return insert_device.status();
        bindDevice(*insert_device, write.device);
        IOTHUB_RETURN_IF_ERROR(insert_device->run());
      }
      if (connection.changes() == 0) {
        outcome.emplace(Status(ErrorCode::DeviceAlreadyExists,
                               "device '" + write.device_id + "' already exists"));
        return Status::ok();
      }
      Result<SqliteStatement> insert_twin = connection.prepare(kInsertTwin);
      if (!insert_twin) return insert_twin.status();
      bindTwin(*insert_twin, write.twin);
      IOTHUB_RETURN_IF_ERROR(insert_twin->run());
      outcome.emplace(write.device);
      return Status::ok();
    }
    case DeviceWrite::Kind::Update: {
      Result<DeviceRecord> current = loadDevice(connection, write.device_id);
      if (!current) {
        if (current.code() != ErrorCode::DeviceNotFound) return current.status();
        outcome.emplace(std::move(current));
        return Status::ok();
      }
      Result<DeviceRecord> next = write.mutate(*current);
      if (next && next->device_id != write.device_id) {
        next = Status(ErrorCode::ServerError, "a device mutation must not change the device id");
      }
      if (next) {
        Result<SqliteStatement> update = connection.prepare(kUpdateDevice);
        if (!update) return update.status();
        bindDevice(*update, *next);
        IOTHUB_RETURN_IF_ERROR(update->run());
      }
      outcome.emplace(std::move(next));
      return Status::ok();
    }
    case DeviceWrite::Kind::Delete: {
      Result<DeviceRecord> current = loadDevice(connection, write.device_id);
      if (!current) {
        if (current.code() != ErrorCode::DeviceNotFound) return current.status();
        outcome.emplace(std::move(current));
        return Status::ok();
      }
      if (write.precondition) {
        Status allowed = write.precondition(*current);
        if (!allowed) {
          outcome.emplace(std::move(allowed));
          return Status::ok();
        }
      }
      {
        Result<SqliteStatement> remove = connection.prepare(kDeleteDevice);
        if (!remove) return remove.status();
        remove->bind(1, write.device_id);
        IOTHUB_RETURN_IF_ERROR(remove->run());  // the twin goes with it (ON DELETE CASCADE)
      }
      // The persistent MQTT session too, in the same transaction (putSession refuses
      // sessions of devices that do not exist, so it cannot come back).
      Result<SqliteStatement> session = connection.prepare(kDeleteSession);
      if (!session) return session.status();
      session->bind(1, write.device_id);
      IOTHUB_RETURN_IF_ERROR(session->run());
      outcome.emplace(std::move(current));
      return Status::ok();
    }
  }
  return Status(ErrorCode::ServerError, "unknown device write");
}

}  // namespace

Status SqliteStore::createDevice(const DeviceRecord& device, const TwinRecord& twin) {
  if (twin.device_id != device.device_id) {
    return Status(ErrorCode::ArgumentInvalid, "the twin belongs to another device");
  }
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> insert_device = connection.prepare(kInsertDevice);
    if (!insert_device) return insert_device.status();
    bindDevice(*insert_device, device);
    IOTHUB_RETURN_IF_ERROR(insert_device->run());
    if (connection.changes() == 0) {
      return Status(ErrorCode::DeviceAlreadyExists,
                    "device '" + device.device_id + "' already exists");
    }
    Result<SqliteStatement> insert_twin = connection.prepare(kInsertTwin);
    if (!insert_twin) return insert_twin.status();
    bindTwin(*insert_twin, twin);
    return insert_twin->run();
  });
}

Result<DeviceRecord> SqliteStore::getDevice(std::string_view device_id) {
  return read<DeviceRecord>(
      [&](SqliteConnection& connection) { return loadDevice(connection, device_id); });
}

Result<DeviceRecord> SqliteStore::updateDevice(std::string_view device_id, DeviceMutation mutate) {
  DeviceWrite write;
  write.kind = DeviceWrite::Kind::Update;
  write.device_id = std::string(device_id);
  write.mutate = std::move(mutate);
  std::optional<Result<DeviceRecord>> outcome;
  Status s = writeStatus([&](SqliteConnection& connection) -> Status {
    outcome.reset();
    IOTHUB_RETURN_IF_ERROR(applyDeviceWrite(connection, write, outcome));
    return outcome->status();
  });
  if (!s) return s;
  return std::move(*outcome);
}

Status SqliteStore::deleteDevice(std::string_view device_id, DevicePrecondition precondition) {
  DeviceWrite write;
  write.kind = DeviceWrite::Kind::Delete;
  write.device_id = std::string(device_id);
  write.precondition = std::move(precondition);
  return writeStatus([&](SqliteConnection& connection) -> Status {
    std::optional<Result<DeviceRecord>> outcome;
    IOTHUB_RETURN_IF_ERROR(applyDeviceWrite(connection, write, outcome));
    return outcome->status();
  });
}

std::vector<Result<DeviceRecord>> SqliteStore::writeDevices(
    const std::vector<DeviceWrite>& writes) {
  if (writes.empty()) return {};
  std::vector<std::optional<Result<DeviceRecord>>> outcomes;
  // One writer operation for the whole batch: its savepoint undoes every write when the
  // database fails halfway; a refused write has changed nothing, so needs no savepoint.
  Status s = writeStatus([&](SqliteConnection& connection) -> Status {
    outcomes.assign(writes.size(), std::nullopt);
    for (std::size_t i = 0; i < writes.size(); ++i) {
      IOTHUB_RETURN_IF_ERROR(applyDeviceWrite(connection, writes[i], outcomes[i]));
    }
    return Status::ok();
  });
  return deviceWriteResults(s, outcomes, writes.size());
}

Result<std::vector<DeviceRecord>> SqliteStore::listDevices(std::string_view after_device_id,
                                                           std::size_t limit) {
  return read<std::vector<DeviceRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<DeviceRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kListDevices);
        if (!statement) return statement.status();
        statement->bind(1, after_device_id).bind(2, sqlLimit(limit));
        return collect<DeviceRecord>(*statement, limit, decodeDeviceRow<SqliteStatement>);
      });
}

Result<DeviceStatistics> SqliteStore::deviceStatistics() {
  return read<DeviceStatistics>([](SqliteConnection& connection) -> Result<DeviceStatistics> {
    Result<SqliteStatement> statement = connection.prepare(kDeviceStatistics);
    if (!statement) return statement.status();
    Result<bool> row = statement->step();
    if (!row) return row.status();
    if (!*row) return Status(ErrorCode::ServerError, "device statistics returned no row");
    DeviceStatistics statistics;
    statistics.total = statement->int64(0);
    statistics.enabled = statement->int64(1);
    statistics.disabled = statement->int64(2);
    return statistics;
  });
}

// TwinStore

Result<TwinRecord> SqliteStore::getTwin(std::string_view device_id) {
  return read<TwinRecord>(
      [&](SqliteConnection& connection) { return loadTwin(connection, device_id); });
}

// Reads the twin, applies `mutate` and writes the result, inside the caller's transaction.
static Result<TwinRecord> mutateTwin(SqliteConnection& connection, std::string_view device_id,
                                     const TwinMutation& mutate) {
  Result<TwinRecord> current = loadTwin(connection, device_id);
  if (!current) return current;
  Result<TwinRecord> next = mutate(*current);
  if (!next) return next;
  if (next->device_id != device_id) {
    return Status(ErrorCode::ServerError, "a twin mutation must not change the device id");
  }
  Result<SqliteStatement> update = connection.prepare(kUpdateTwin);
  if (!update) return update.status();
  bindTwin(*update, *next);
  IOTHUB_RETURN_IF_ERROR(update->run());
  return next;
}

Result<TwinRecord> SqliteStore::updateTwin(std::string_view device_id, TwinMutation mutate) {
  return write<TwinRecord>([&](SqliteConnection& connection) -> Result<TwinRecord> {
    return mutateTwin(connection, device_id, mutate);
  });
}

Result<TwinRecord> SqliteStore::updateTwinForJob(std::string_view device_id, TwinMutation mutate,
                                                 const DeviceJobWrite& job_row) {
  // A batch of one: the same checks, the same transaction.
  return std::move(
      updateTwinsForJob({TwinJobUpdate{std::string(device_id), std::move(mutate), job_row}})
          .front());
}

std::vector<Result<TwinRecord>> SqliteStore::updateTwinsForJob(
    const std::vector<TwinJobUpdate>& updates) {
  if (updates.empty()) return {};
  std::vector<std::optional<Result<TwinRecord>>> outcomes;
  // One writer operation for the batch: a refused update wrote nothing (the mutation runs
  // before the twin is written, the job row after), so it needs no savepoint of its own;
  // a database failure undoes the whole operation.
  Status s = writeStatus([&](SqliteConnection& connection) -> Status {
    outcomes.assign(updates.size(), std::nullopt);
    for (std::size_t i = 0; i < updates.size(); ++i) {
      const TwinJobUpdate& u = updates[i];
      const std::optional<JobLease>& lease = u.job_row.lease;
      if (lease && lease->job_id != u.job_row.row.job_id) {
        outcomes[i] =
            Status(ErrorCode::ArgumentInvalid, "the device-job row belongs to another job");
        continue;
      }
      if (lease) {
        Status held = checkJobLease(connection, *lease);
        if (held.code() == ErrorCode::JobLeaseLost || held.code() == ErrorCode::JobNotFound) {
          outcomes[i] = held;
          continue;
        }
        IOTHUB_RETURN_IF_ERROR(held);
      }
      bool refused = false;
      Result<TwinRecord> next =
          mutateTwin(connection, u.device_id, [&](const TwinRecord& current) -> Result<TwinRecord> {
            Result<TwinRecord> r = u.mutate(current);
            refused = !r.isOk();
            return r;
          });
      if (!next) {
        if (!refused && next.status().code() != ErrorCode::DeviceNotFound) return next.status();
        outcomes[i] = next.status();
        continue;
      }
      IOTHUB_RETURN_IF_ERROR(writeDeviceJobs(connection, {u.job_row.row}));
      outcomes[i] = std::move(next);
    }
    return Status::ok();
  });
  std::vector<Result<TwinRecord>> results;
  results.reserve(updates.size());
  for (std::size_t i = 0; i < updates.size(); ++i) {
    if (!s) {
      results.emplace_back(s);
    } else {
      results.push_back(std::move(*outcomes[i]));
    }
  }
  return results;
}

Result<std::vector<TwinRecord>> SqliteStore::listTwins(std::string_view after_device_id,
                                                       std::size_t limit) {
  return read<std::vector<TwinRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<TwinRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kListTwins);
        if (!statement) return statement.status();
        statement->bind(1, after_device_id).bind(2, sqlLimit(limit));
        return collect<TwinRecord>(*statement, limit, decodeTwinRow<SqliteStatement>);
      });
}

// JobStore

Status SqliteStore::createJob(const JobRecord& job) {
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> insert = connection.prepare(kInsertJob);
    if (!insert) return insert.status();
    bindJob(*insert, job);
    IOTHUB_RETURN_IF_ERROR(insert->run());
    if (connection.changes() == 0) {
      return Status(ErrorCode::JobAlreadyExists, "job '" + job.job_id + "' already exists");
    }
    return Status::ok();
  });
}

Result<JobRecord> SqliteStore::getJob(std::string_view job_id) {
  return read<JobRecord>([&](SqliteConnection& connection) { return loadJob(connection, job_id); });
}

// Reads the job, applies `mutate` and writes the result, inside the caller's transaction.
static Result<JobRecord> mutateJob(SqliteConnection& connection, std::string_view job_id,
                                   const JobMutation& mutate) {
  Result<JobRecord> current = loadJob(connection, job_id);
  if (!current) return current;
  Result<JobRecord> next = mutate(*current);
  if (!next) return next;
  if (next->job_id != job_id) {
    return Status(ErrorCode::ServerError, "a job mutation must not change the job id");
  }
  Result<SqliteStatement> update = connection.prepare(kUpdateJob);
  if (!update) return update.status();
  bindJob(*update, *next);
  IOTHUB_RETURN_IF_ERROR(update->run());
  return next;
}

Result<JobRecord> SqliteStore::updateJob(std::string_view job_id, JobMutation mutate) {
  return write<JobRecord>([&](SqliteConnection& connection) -> Result<JobRecord> {
    return mutateJob(connection, job_id, mutate);
  });
}

Result<std::vector<JobRecord>> SqliteStore::listJobs(const JobFilter& filter,
                                                     std::string_view after_job_id,
                                                     std::size_t limit) {
  return read<std::vector<JobRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<JobRecord>> {
        const bool after = !after_job_id.empty();
        std::int64_t after_created_time = 0;
        if (after) {
          Result<SqliteStatement> position = connection.prepare(kJobPosition);
          if (!position) return position.status();
          position->bind(1, after_job_id);
          Result<bool> row = position->step();
          if (!row) return row.status();
          if (!*row) return jobNotFound(after_job_id);
          after_created_time = position->int64(0);
        }
        Result<SqliteStatement> statement = connection.prepare(
            kListJobs[filter.type ? 1 : 0][filter.status ? 1 : 0][after ? 1 : 0]);
        if (!statement) return statement.status();
        if (filter.type) statement->bind(1, *filter.type);
        if (filter.status) statement->bind(2, *filter.status);
        if (after) statement->bind(3, after_created_time).bind(4, after_job_id);
        statement->bind(5, sqlLimit(limit));
        return collect<JobRecord>(*statement, limit, decodeJobRow<SqliteStatement>);
      });
}

Result<std::vector<JobRecord>> SqliteStore::jobsWithStatus(
    const std::vector<std::string>& statuses) {
  return read<std::vector<JobRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<JobRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kJobsWithStatus);
        if (!statement) return statement.status();
        statement->bind(1, encodeStrings(statuses));
        return collect<JobRecord>(*statement, kMaxReserve, decodeJobRow<SqliteStatement>);
      });
}

Result<std::vector<ClaimedJob>> SqliteStore::claimJobs(std::string_view owner, SystemTime due_by,
                                                       std::chrono::milliseconds ttl,
                                                       std::size_t limit) {
  return write<std::vector<ClaimedJob>>(
      [&](SqliteConnection& connection) -> Result<std::vector<ClaimedJob>> {
        // The writer is the only one writing the file: selecting and then updating in its
        // transaction cannot race another claim.
        const std::int64_t now = nowNanoseconds();
        std::vector<ClaimedJob> claimed;
        {
          Result<SqliteStatement> due = connection.prepare(kDueJobs);
          if (!due) return due.status();
          due->bind(1, now).bind(2, toNanoseconds(due_by)).bind(3, sqlLimit(limit));
          while (true) {
            Result<bool> row = due->step();
            if (!row) return row.status();
            if (!*row) break;
            Result<JobRecord> job = decodeJobRow(*due);
            if (!job) return job.status();
            std::string id = job->job_id;
            claimed.push_back(ClaimedJob{.job = std::move(*job),
                                         .lease = {std::move(id), due->int64(7) + 1},
                                         .cancel_requested = due->flag(8)});
          }
        }
        Result<SqliteStatement> claim = connection.prepare(kClaimJob);
        if (!claim) return claim.status();
        for (const ClaimedJob& job : claimed) {
          claim->bind(1, job.lease.job_id)
              .bind(2, owner)
              .bind(3, leaseEnd(now, ttl))
              .bind(4, job.lease.epoch);
          IOTHUB_RETURN_IF_ERROR(claim->run());
          claim->reset();
        }
        return claimed;
      });
}

Result<std::vector<JobLeaseRenewal>> SqliteStore::renewJobLeases(
    const std::vector<JobLease>& leases, std::chrono::milliseconds ttl) {
  return write<std::vector<JobLeaseRenewal>>([&](SqliteConnection& connection)
                                                 -> Result<std::vector<JobLeaseRenewal>> {
    const std::int64_t now = nowNanoseconds();
    Result<SqliteStatement> renew = connection.prepare(kRenewJobLease);
    if (!renew) return renew.status();
    std::vector<JobLeaseRenewal> renewals;
    for (const JobLease& lease : leases) {
      renew->bind(1, lease.job_id).bind(2, lease.epoch).bind(3, leaseEnd(now, ttl)).bind(4, now);
      Result<bool> row = renew->step();
      if (!row) return row.status();
      JobLeaseRenewal renewal{.job_id = lease.job_id, .held = *row};
      if (*row) renewal.cancel_requested = renew->flag(0);
      renewals.push_back(std::move(renewal));
      renew->reset();
    }
    return renewals;
  });
}

Status SqliteStore::releaseJobLease(const JobLease& lease) {
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> release = connection.prepare(kReleaseJobLease);
    if (!release) return release.status();
    release->bind(1, lease.job_id).bind(2, lease.epoch);
    return release->run();
  });
}

Result<std::size_t> SqliteStore::releaseJobLeasesOf(std::string_view owner) {
  return write<std::size_t>([&](SqliteConnection& connection) -> Result<std::size_t> {
    Result<SqliteStatement> release = connection.prepare(kReleaseJobLeasesOf);
    if (!release) return release.status();
    release->bind(1, owner).bind(2, nowNanoseconds());
    IOTHUB_RETURN_IF_ERROR(release->run());
    return static_cast<std::size_t>(connection.changes());
  });
}

Result<JobRecord> SqliteStore::updateLeasedJob(const JobLease& lease, JobMutation mutate) {
  return write<JobRecord>([&](SqliteConnection& connection) -> Result<JobRecord> {
    IOTHUB_RETURN_IF_ERROR(checkJobLease(connection, lease));
    return mutateJob(connection, lease.job_id, mutate);
  });
}

Status SqliteStore::putLeasedDeviceJobs(const JobLease& lease,
                                        const std::vector<DeviceJobRecord>& rows) {
  for (const DeviceJobRecord& row : rows) {
    if (row.job_id != lease.job_id) {
      return Status(
          ErrorCode::ArgumentInvalid,
          "a row of job '" + row.job_id + "' under the lease of job '" + lease.job_id + "'");
    }
  }
  return writeStatus([&](SqliteConnection& connection) -> Status {
    IOTHUB_RETURN_IF_ERROR(checkJobLease(connection, lease));
    return writeDeviceJobs(connection, rows);
  });
}

Status SqliteStore::requestJobCancel(std::string_view job_id) {
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> request = connection.prepare(kRequestJobCancel);
    if (!request) return request.status();
    request->bind(1, job_id);
    IOTHUB_RETURN_IF_ERROR(request->run());
    if (connection.changes() > 0) return Status::ok();
    Result<SqliteStatement> exists = connection.prepare(kJobExists);
    if (!exists) return exists.status();
    exists->bind(1, job_id);
    Result<bool> row = exists->step();
    if (!row) return row.status();
    return *row ? Status::ok() : jobNotFound(job_id);
  });
}

// DeviceJobStore

Status SqliteStore::putDeviceJobs(const std::vector<DeviceJobRecord>& rows) {
  if (rows.empty()) return Status::ok();
  return writeStatus(
      [&](SqliteConnection& connection) -> Status { return writeDeviceJobs(connection, rows); });
}

Result<std::vector<DeviceJobRecord>> SqliteStore::listDeviceJobs(
    std::string_view job_id, std::optional<std::string_view> status,
    std::string_view after_device_id, std::size_t limit) {
  return read<std::vector<DeviceJobRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<DeviceJobRecord>> {
        Result<SqliteStatement> statement =
            connection.prepare(status ? kListDeviceJobsWithStatus : kListDeviceJobs);
        if (!statement) return statement.status();
        statement->bind(1, job_id).bind(2, after_device_id).bind(3, sqlLimit(limit));
        if (status) statement->bind(4, *status);
        return collect<DeviceJobRecord>(*statement, limit, decodeDeviceJobRow<SqliteStatement>);
      });
}

Result<std::vector<DeviceJobRecord>> SqliteStore::listAllDeviceJobs(
    std::string_view after_job_id, std::string_view after_device_id, std::size_t limit) {
  return read<std::vector<DeviceJobRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<DeviceJobRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kListAllDeviceJobs);
        if (!statement) return statement.status();
        statement->bind(1, after_job_id).bind(2, after_device_id).bind(3, sqlLimit(limit));
        return collect<DeviceJobRecord>(*statement, limit, decodeDeviceJobRow<SqliteStatement>);
      });
}

// AccessPolicyStore

Result<std::vector<AccessPolicyRecord>> SqliteStore::listPolicies() {
  return read<std::vector<AccessPolicyRecord>>(
      [](SqliteConnection& connection) -> Result<std::vector<AccessPolicyRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kListPolicies);
        if (!statement) return statement.status();
        return collect<AccessPolicyRecord>(*statement, kMaxReserve,
                                           decodePolicyRow<SqliteStatement>);
      });
}

Status SqliteStore::insertMissingPolicies(const std::vector<AccessPolicyRecord>& policies) {
  if (policies.empty()) return Status::ok();
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> insert = connection.prepare(kInsertPolicy);
    if (!insert) return insert.status();
    for (const AccessPolicyRecord& policy : policies) {
      insert->bind(1, policy.name)
          .bind(2, policy.primary_key)
          .bind(3, policy.secondary_key)
          .bind(4, std::int64_t{policy.permissions});
      IOTHUB_RETURN_IF_ERROR(insert->run());
      insert->reset();
    }
    return Status::ok();
  });
}

namespace {

constexpr std::string_view kGetSession =
    "SELECT subscriptions FROM mqtt_sessions WHERE client_id = ?1";
// Only for an existing device: a session saved after its device was deleted would come back
// to life when a device is created again under the same id.
constexpr std::string_view kPutSession =
    "INSERT INTO mqtt_sessions (client_id, subscriptions) SELECT ?1, ?2 "
    "WHERE EXISTS (SELECT 1 FROM devices WHERE device_id = ?1) "
    "ON CONFLICT (client_id) DO UPDATE SET subscriptions = excluded.subscriptions";

}  // namespace

Result<std::optional<MqttSessionRecord>> SqliteStore::getSession(std::string_view client_id) {
  return read<std::optional<MqttSessionRecord>>(
      [&](SqliteConnection& connection) -> Result<std::optional<MqttSessionRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kGetSession);
        if (!statement) return statement.status();
        statement->bind(1, client_id);
        Result<bool> row = statement->step();
        if (!row) return row.status();
        if (!*row) return std::optional<MqttSessionRecord>{};
        Result<std::vector<MqttSubscriptionRecord>> subscriptions =
            decodeSubscriptions(statement->text(0));
        if (!subscriptions) return subscriptions.status();
        MqttSessionRecord session;
        session.client_id = std::string(client_id);
        session.subscriptions = std::move(subscriptions).value();
        return std::optional<MqttSessionRecord>{std::move(session)};
      });
}

Status SqliteStore::putSession(const MqttSessionRecord& session) {
  std::string text = encodeSubscriptions(session.subscriptions);
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> put = connection.prepare(kPutSession);
    if (!put) return put.status();
    put->bind(1, session.client_id).bind(2, text);
    IOTHUB_RETURN_IF_ERROR(put->run());
    if (connection.changes() == 0) {
      return Status(ErrorCode::DeviceNotFound, "no device '" + session.client_id + "'");
    }
    return Status::ok();
  });
}

Status SqliteStore::deleteSession(std::string_view client_id) {
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> del = connection.prepare(kDeleteSession);
    if (!del) return del.status();
    del->bind(1, client_id);
    return del->run();
  });
}

// --- cloud-to-device messages (C2dStore) ---

namespace {

#define IOTHUB_C2D_COLUMNS                                                                     \
  "device_id, sequence, enqueued_time, expiry_time, lock_token, locked_until, delivery_count," \
  " document, body"

constexpr std::string_view kC2dDeviceExists = "SELECT 1 FROM devices WHERE device_id = ?1";
constexpr std::string_view kC2dDepth = "SELECT count(*) FROM c2d_messages WHERE device_id = ?1";
// The body is bound as text (its bytes, NULs included) and stored as a BLOB: a BLOB is
// never treated as UTF-8, so any bytes come back as they went in.
constexpr std::string_view kInsertC2d =
    "INSERT INTO c2d_messages (device_id, enqueued_time, expiry_time, lock_token, locked_until,"
    " delivery_count, document, body) VALUES (?1, ?2, ?3, '', 0, 0, ?4, CAST(?5 AS BLOB))"
    " RETURNING sequence";
// The count is recounted rather than adjusted, so it cannot drift from the queue whatever
// value the device row was created or updated with.
constexpr std::string_view kSyncC2dCount =
    "UPDATE devices SET cloud_to_device_message_count ="
    " (SELECT count(*) FROM c2d_messages WHERE device_id = ?1) WHERE device_id = ?1";
constexpr std::string_view kC2dQueuePage = "SELECT " IOTHUB_C2D_COLUMNS
                                           " FROM c2d_messages WHERE device_id = ?1"
                                           " AND sequence > ?2 ORDER BY sequence LIMIT ?3";
constexpr std::string_view kListC2d = "SELECT " IOTHUB_C2D_COLUMNS
                                      " FROM c2d_messages WHERE device_id = ?1"
                                      " ORDER BY sequence LIMIT ?2";
constexpr std::string_view kLockC2d =
    "UPDATE c2d_messages SET lock_token = ?2, locked_until = ?3,"
    " delivery_count = delivery_count + 1 WHERE sequence = ?1";
constexpr std::string_view kC2dByLockToken = "SELECT " IOTHUB_C2D_COLUMNS
                                             " FROM c2d_messages WHERE device_id = ?1"
                                             " AND lock_token = ?2";
constexpr std::string_view kAbandonC2d =
    "UPDATE c2d_messages SET lock_token = '', locked_until = 0 WHERE sequence = ?1";
constexpr std::string_view kDeleteC2d = "DELETE FROM c2d_messages WHERE sequence = ?1";
constexpr std::string_view kDeviceC2d = "SELECT " IOTHUB_C2D_COLUMNS
                                        " FROM c2d_messages WHERE device_id = ?1"
                                        " ORDER BY sequence";
constexpr std::string_view kExpiredC2d = "SELECT " IOTHUB_C2D_COLUMNS
                                         " FROM c2d_messages WHERE expiry_time <= ?1"
                                         " ORDER BY expiry_time, sequence LIMIT ?2";

#undef IOTHUB_C2D_COLUMNS

constexpr std::string_view kInsertC2dFeedback =
    "INSERT INTO c2d_feedback (enqueued_time, locked_until, document) VALUES (?1, 0, ?2)";
constexpr std::string_view kLockC2dFeedback =
    "UPDATE c2d_feedback SET locked_until = ?2 WHERE sequence IN (SELECT sequence FROM"
    " c2d_feedback WHERE locked_until <= ?1 ORDER BY sequence LIMIT ?3)"
    " RETURNING sequence, enqueued_time, document";
constexpr std::string_view kDeleteC2dFeedback = "DELETE FROM c2d_feedback WHERE sequence = ?1";
constexpr std::string_view kExpireC2dFeedback =
    "DELETE FROM c2d_feedback WHERE sequence IN (SELECT sequence FROM c2d_feedback"
    " WHERE enqueued_time < ?1 ORDER BY enqueued_time LIMIT ?2)";

// lockC2d reads a device's queue this many messages at a time.
constexpr std::size_t kC2dPage = 32;

Result<C2dMessageRecord> decodeC2dRow(const SqliteStatement& row) {
  C2dMessageRecord message;
  message.device_id = row.text(0);
  message.sequence = row.int64(1);
  message.enqueued_time = fromNanoseconds(row.int64(2));
  message.expiry_time = fromNanoseconds(row.int64(3));
  message.lock_token = row.text(4);
  message.locked_until = fromNanoseconds(row.int64(5));
  message.delivery_count = static_cast<std::int32_t>(row.int64(6));
  Result<json::object> document = decodeStoredObject(row.text(7), "c2d_messages.document");
  if (!document) return document.status();
  message.document = std::move(document).value();
  message.body = row.text(8);
  return message;
}

Result<C2dFeedbackRecord> decodeC2dFeedbackRow(const SqliteStatement& row) {
  C2dFeedbackRecord record;
  record.sequence = row.int64(0);
  record.enqueued_time = fromNanoseconds(row.int64(1));
  Result<json::object> document = decodeStoredObject(row.text(2), "c2d_feedback.document");
  if (!document) return document.status();
  record.document = std::move(document).value();
  return record;
}

Status syncC2dCount(SqliteConnection& connection, std::string_view device_id) {
  Result<SqliteStatement> sync = connection.prepare(kSyncC2dCount);
  if (!sync) return sync.status();
  sync->bind(1, device_id);
  return sync->run();
}

// Inside a write transaction: deletes `message` and stores the feedback record `feedback`
// makes of it, if any. The caller brings the device's count up to date afterwards.
Status removeC2d(SqliteConnection& connection, const C2dMessageRecord& message, C2dRemoval removal,
                 const C2dFeedbackRule& feedback) {
  Result<SqliteStatement> remove = connection.prepare(kDeleteC2d);
  if (!remove) return remove.status();
  remove->bind(1, message.sequence);
  IOTHUB_RETURN_IF_ERROR(remove->run());
  if (!feedback) return Status::ok();
  std::optional<C2dFeedbackRecord> record = feedback(message, removal);
  if (!record) return Status::ok();
  Result<SqliteStatement> insert = connection.prepare(kInsertC2dFeedback);
  if (!insert) return insert.status();
  insert->bind(1, toNanoseconds(record->enqueued_time)).bind(2, json::serialize(record->document));
  return insert->run();
}

Status c2dLockLost(std::string_view device_id) {
  return Status(ErrorCode::DeviceMessageLockLost,
                "no message of device '" + std::string(device_id) +
                    "' is locked under that lock token (it was settled, or its lock expired)");
}

}  // namespace

Result<std::int64_t> SqliteStore::enqueueC2d(const C2dMessageRecord& message,
                                             std::size_t max_depth) {
  std::string document = json::serialize(message.document);
  return write<std::int64_t>([&](SqliteConnection& connection) -> Result<std::int64_t> {
    Result<SqliteStatement> exists = connection.prepare(kC2dDeviceExists);
    if (!exists) return exists.status();
    exists->bind(1, message.device_id);
    Result<bool> found = exists->step();
    if (!found) return found.status();
    if (!*found) return deviceNotFound(message.device_id);

    Result<SqliteStatement> depth = connection.prepare(kC2dDepth);
    if (!depth) return depth.status();
    depth->bind(1, message.device_id);
    Result<bool> row = depth->step();
    if (!row) return row.status();
    if (static_cast<std::uint64_t>(depth->int64(0)) >= max_depth) {
      return Status(ErrorCode::DeviceMaximumQueueDepthExceeded,
                    "the cloud-to-device queue of device '" + message.device_id +
                        "' already holds " + std::to_string(max_depth) + " messages");
    }

    Result<SqliteStatement> insert = connection.prepare(kInsertC2d);
    if (!insert) return insert.status();
    insert->bind(1, message.device_id)
        .bind(2, toNanoseconds(message.enqueued_time))
        .bind(3, toNanoseconds(message.expiry_time))
        .bind(4, document)
        .bind(5, std::string_view(message.body));
    Result<bool> inserted = insert->step();
    if (!inserted) return inserted.status();
    if (!*inserted) return Status(ErrorCode::ServerError, "the insert returned no sequence");
    const std::int64_t sequence = insert->int64(0);
    IOTHUB_RETURN_IF_ERROR(insert->run());  // finishes the statement
    IOTHUB_RETURN_IF_ERROR(syncC2dCount(connection, message.device_id));
    return sequence;
  });
}

Result<std::optional<C2dMessageRecord>> SqliteStore::lockC2d(std::string_view device_id,
                                                             const C2dLock& lock,
                                                             const C2dFeedbackRule& feedback) {
  using Locked = std::optional<C2dMessageRecord>;
  return write<Locked>([&](SqliteConnection& connection) -> Result<Locked> {
    // The writer is the only one writing the file, so nothing else can lock a message
    // between reading the queue and updating it.
    const std::int64_t now = toNanoseconds(lock.now);
    bool removed = false;
    std::int64_t after = 0;
    Locked chosen;
    while (!chosen) {
      Result<std::vector<C2dMessageRecord>> page = [&] {
        Result<SqliteStatement> statement = connection.prepare(kC2dQueuePage);
        if (!statement) return Result<std::vector<C2dMessageRecord>>(statement.status());
        statement->bind(1, device_id).bind(2, after).bind(3, sqlLimit(kC2dPage));
        return collect<C2dMessageRecord>(*statement, kC2dPage, decodeC2dRow);
      }();
      if (!page) return page.status();
      if (page->empty()) break;
      for (C2dMessageRecord& message : *page) {
        after = message.sequence;
        if (toNanoseconds(message.expiry_time) <= now) {
          IOTHUB_RETURN_IF_ERROR(removeC2d(connection, message, C2dRemoval::Expired, feedback));
          removed = true;
          continue;
        }
        const bool free = message.lock_token.empty() || toNanoseconds(message.locked_until) <= now;
        if (!free) continue;
        if (message.delivery_count >= lock.max_delivery_count) {
          IOTHUB_RETURN_IF_ERROR(
              removeC2d(connection, message, C2dRemoval::DeliveryCountExceeded, feedback));
          removed = true;
          continue;
        }
        Result<SqliteStatement> take = connection.prepare(kLockC2d);
        if (!take) return take.status();
        take->bind(1, message.sequence).bind(2, lock.token).bind(3, toNanoseconds(lock.until));
        IOTHUB_RETURN_IF_ERROR(take->run());
        message.lock_token = lock.token;
        message.locked_until = lock.until;
        message.delivery_count += 1;
        chosen = std::move(message);
        break;
      }
      if (page->size() < kC2dPage) break;
    }
    if (removed) IOTHUB_RETURN_IF_ERROR(syncC2dCount(connection, device_id));
    return chosen;
  });
}

Result<C2dMessageRecord> SqliteStore::settleC2d(std::string_view device_id,
                                                std::string_view lock_token,
                                                C2dSettlement settlement, SystemTime now,
                                                const C2dFeedbackRule& feedback) {
  // '' marks a free message, so it never names a lock.
  if (lock_token.empty()) return c2dLockLost(device_id);
  return write<C2dMessageRecord>([&](SqliteConnection& connection) -> Result<C2dMessageRecord> {
    Result<std::optional<C2dMessageRecord>> found = [&] {
      Result<SqliteStatement> statement = connection.prepare(kC2dByLockToken);
      if (!statement) return Result<std::optional<C2dMessageRecord>>(statement.status());
      statement->bind(1, device_id).bind(2, lock_token);
      return single<C2dMessageRecord>(*statement, decodeC2dRow);
    }();
    if (!found) return found.status();
    if (!found->has_value() || (*found)->locked_until <= now) return c2dLockLost(device_id);
    const C2dMessageRecord& message = **found;
    if (settlement == C2dSettlement::Abandon) {
      Result<SqliteStatement> abandon = connection.prepare(kAbandonC2d);
      if (!abandon) return abandon.status();
      abandon->bind(1, message.sequence);
      IOTHUB_RETURN_IF_ERROR(abandon->run());
      return message;
    }
    IOTHUB_RETURN_IF_ERROR(removeC2d(
        connection, message,
        settlement == C2dSettlement::Complete ? C2dRemoval::Completed : C2dRemoval::Rejected,
        feedback));
    IOTHUB_RETURN_IF_ERROR(syncC2dCount(connection, device_id));
    return message;
  });
}

Result<std::size_t> SqliteStore::purgeC2d(std::string_view device_id,
                                          const C2dFeedbackRule& feedback) {
  return write<std::size_t>([&](SqliteConnection& connection) -> Result<std::size_t> {
    Result<SqliteStatement> exists = connection.prepare(kC2dDeviceExists);
    if (!exists) return exists.status();
    exists->bind(1, device_id);
    Result<bool> found = exists->step();
    if (!found) return found.status();
    if (!*found) return deviceNotFound(device_id);

    Result<std::vector<C2dMessageRecord>> queue = [&] {
      Result<SqliteStatement> statement = connection.prepare(kDeviceC2d);
      if (!statement) return Result<std::vector<C2dMessageRecord>>(statement.status());
      statement->bind(1, device_id);
      return collect<C2dMessageRecord>(*statement, kMaxReserve, decodeC2dRow);
    }();
    if (!queue) return queue.status();
    for (const C2dMessageRecord& message : *queue) {
      IOTHUB_RETURN_IF_ERROR(removeC2d(connection, message, C2dRemoval::Purged, feedback));
    }
    IOTHUB_RETURN_IF_ERROR(syncC2dCount(connection, device_id));
    return queue->size();
  });
}

Result<std::size_t> SqliteStore::expireC2d(SystemTime now, std::size_t limit,
                                           const C2dFeedbackRule& feedback) {
  if (limit == 0) return std::size_t{0};
  return write<std::size_t>([&](SqliteConnection& connection) -> Result<std::size_t> {
    Result<std::vector<C2dMessageRecord>> expired = [&] {
      Result<SqliteStatement> statement = connection.prepare(kExpiredC2d);
      if (!statement) return Result<std::vector<C2dMessageRecord>>(statement.status());
      statement->bind(1, toNanoseconds(now)).bind(2, sqlLimit(limit));
      return collect<C2dMessageRecord>(*statement, limit, decodeC2dRow);
    }();
    if (!expired) return expired.status();
    std::vector<std::string> devices;
    for (const C2dMessageRecord& message : *expired) {
      IOTHUB_RETURN_IF_ERROR(removeC2d(connection, message, C2dRemoval::Expired, feedback));
      devices.push_back(message.device_id);
    }
    std::sort(devices.begin(), devices.end());
    devices.erase(std::unique(devices.begin(), devices.end()), devices.end());
    for (const std::string& device_id : devices) {
      IOTHUB_RETURN_IF_ERROR(syncC2dCount(connection, device_id));
    }
    return expired->size();
  });
}

Result<std::vector<C2dMessageRecord>> SqliteStore::listC2d(std::string_view device_id,
                                                           std::size_t limit) {
  return read<std::vector<C2dMessageRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<C2dMessageRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kListC2d);
        if (!statement) return statement.status();
        statement->bind(1, device_id).bind(2, sqlLimit(limit));
        return collect<C2dMessageRecord>(*statement, limit, decodeC2dRow);
      });
}

Result<std::vector<C2dFeedbackRecord>> SqliteStore::lockC2dFeedback(SystemTime now,
                                                                    SystemTime until,
                                                                    std::size_t limit) {
  if (limit == 0) return std::vector<C2dFeedbackRecord>{};
  Result<std::vector<C2dFeedbackRecord>> locked = write<std::vector<C2dFeedbackRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<C2dFeedbackRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kLockC2dFeedback);
        if (!statement) return statement.status();
        statement->bind(1, toNanoseconds(now))
            .bind(2, toNanoseconds(until))
            .bind(3, sqlLimit(limit));
        return collect<C2dFeedbackRecord>(*statement, limit, decodeC2dFeedbackRow);
      });
  if (!locked) return locked;
  // RETURNING gives the rows in no promised order.
  std::sort(locked->begin(), locked->end(),
            [](const C2dFeedbackRecord& a, const C2dFeedbackRecord& b) {
              return a.sequence < b.sequence;
            });
  return locked;
}

Status SqliteStore::deleteC2dFeedback(const std::vector<std::int64_t>& sequences) {
  if (sequences.empty()) return Status::ok();
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> remove = connection.prepare(kDeleteC2dFeedback);
    if (!remove) return remove.status();
    for (std::int64_t sequence : sequences) {
      remove->bind(1, sequence);
      IOTHUB_RETURN_IF_ERROR(remove->run());
      remove->reset();
    }
    return Status::ok();
  });
}

Result<std::size_t> SqliteStore::expireC2dFeedback(SystemTime enqueued_before, std::size_t limit) {
  if (limit == 0) return std::size_t{0};
  return write<std::size_t>([&](SqliteConnection& connection) -> Result<std::size_t> {
    Result<SqliteStatement> expire = connection.prepare(kExpireC2dFeedback);
    if (!expire) return expire.status();
    expire->bind(1, toNanoseconds(enqueued_before)).bind(2, sqlLimit(limit));
    IOTHUB_RETURN_IF_ERROR(expire->run());
    return static_cast<std::size_t>(connection.changes());
  });
}

// --- the telemetry log (TelemetryStore) ---
//
// The writer is the only one writing the file, and an append assigns its sequences and
// inserts its records in one transaction, so commit order is sequence order and a reader
// never sees a later record of a partition without the earlier ones.

namespace {

#define IOTHUB_TELEMETRY_COLUMNS \
  "partition_id, sequence, enqueued_time, device_id, size, document, body"

// Reserves `?2` sequences of partition ?1 and returns the partition's next_sequence after
// them (the first reserved one is that minus ?2).
constexpr std::string_view kReserveTelemetry =
    "INSERT INTO telemetry_partitions (partition_id, next_sequence, bytes, last_enqueued_time)"
    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (partition_id) DO UPDATE SET"
    " next_sequence = next_sequence + excluded.next_sequence, bytes = bytes + excluded.bytes,"
    " last_enqueued_time = excluded.last_enqueued_time RETURNING next_sequence";
// The body is bound as text (its bytes, NULs included) and stored as a BLOB, as for C2D.
constexpr std::string_view kInsertTelemetry = "INSERT INTO telemetry (" IOTHUB_TELEMETRY_COLUMNS
                                              ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, CAST(?7 AS BLOB))";
constexpr std::string_view kReadTelemetry = "SELECT " IOTHUB_TELEMETRY_COLUMNS
                                            " FROM telemetry WHERE partition_id = ?1"
                                            " AND sequence >= ?2 ORDER BY sequence LIMIT ?3";
// The first retained record when it is already late enough (a position far back in the
// retention is found at once), else the smallest sequence among the records enqueued after
// ?2 (an index range: times do not grow with sequences), else next_sequence.
constexpr std::string_view kTelemetrySequenceAfter =
    "SELECT coalesce("
    "(SELECT sequence FROM (SELECT sequence, enqueued_time FROM telemetry"
    " WHERE partition_id = ?1 ORDER BY sequence LIMIT 1) WHERE enqueued_time > ?2),"
    " (SELECT min(sequence) FROM telemetry INDEXED BY telemetry_by_enqueued_time"
    " WHERE partition_id = ?1 AND enqueued_time > ?2),"
    " (SELECT next_sequence FROM telemetry_partitions WHERE partition_id = ?1), 0)";
constexpr std::string_view kTelemetryPartition =
    "SELECT p.next_sequence, p.bytes, p.last_enqueued_time,"
    " coalesce((SELECT min(sequence) FROM telemetry WHERE partition_id = ?1), p.next_sequence)"
    " FROM telemetry_partitions p WHERE p.partition_id = ?1";
constexpr std::string_view kTelemetryPartitionBytes =
    "SELECT bytes FROM telemetry_partitions WHERE partition_id = ?1";
constexpr std::string_view kTelemetryHead =
    "SELECT sequence, enqueued_time, size FROM telemetry WHERE partition_id = ?1"
    " ORDER BY sequence LIMIT ?2";
constexpr std::string_view kTrimTelemetry =
    "DELETE FROM telemetry WHERE partition_id = ?1 AND sequence <= ?2";
constexpr std::string_view kTrimTelemetryBytes =
    "UPDATE telemetry_partitions SET bytes = bytes - ?2 WHERE partition_id = ?1";

#undef IOTHUB_TELEMETRY_COLUMNS

Status telemetryPartitionInvalid(std::int32_t partition) {
  return Status(ErrorCode::ArgumentInvalid,
                "telemetry partition " + std::to_string(partition) + " is negative");
}

// What one append adds to one partition.
struct TelemetryGroup {
  std::int64_t count = 0;
  std::int64_t bytes = 0;
  std::int64_t last_enqueued_time = 0;  // of the group's last record
  std::int64_t next = 0;                // the next sequence to hand out, once reserved
};

Result<TelemetryRecord> decodeTelemetryRow(const SqliteStatement& row) {
  TelemetryRecord record;
  record.partition = static_cast<std::int32_t>(row.int64(0));
  record.sequence = row.int64(1);
  record.enqueued_time = fromNanoseconds(row.int64(2));
  record.device_id = row.text(3);
  Result<json::object> document = decodeStoredObject(row.text(5), "telemetry.document");
  if (!document) return document.status();
  record.document = std::move(document).value();
  record.body = row.text(6);
  return record;
}

}  // namespace

Result<std::vector<std::int64_t>> SqliteStore::appendTelemetry(
    const std::vector<TelemetryRecord>& records) {
  // Encoded before queueing: the writer thread, which every write waits for, only runs SQL.
  std::vector<std::string> documents;
  documents.reserve(records.size());
  std::map<std::int32_t, TelemetryGroup> groups;
  for (const TelemetryRecord& record : records) {
    if (record.partition < 0) return telemetryPartitionInvalid(record.partition);
    documents.push_back(json::serialize(record.document));
    TelemetryGroup& group = groups[record.partition];
    group.count += 1;
    group.bytes += static_cast<std::int64_t>(record.body.size() + documents.back().size());
    group.last_enqueued_time = toNanoseconds(record.enqueued_time);
  }
  if (records.empty()) return std::vector<std::int64_t>{};
  return write<std::vector<std::int64_t>>(
      [&](SqliteConnection& connection) -> Result<std::vector<std::int64_t>> {
        // A local copy: an operation may run again after its transaction failed.
        std::map<std::int32_t, TelemetryGroup> reserved = groups;
        {
          Result<SqliteStatement> reserve = connection.prepare(kReserveTelemetry);
          if (!reserve) return reserve.status();
          for (auto& [partition, group] : reserved) {
            reserve->bind(1, std::int64_t{partition})
                .bind(2, group.count)
                .bind(3, group.bytes)
                .bind(4, group.last_enqueued_time);
            Result<bool> row = reserve->step();
            if (!row) return row.status();
            if (!*row)
              return Status(ErrorCode::ServerError, "the partition update returned no row");
            group.next = reserve->int64(0) - group.count;
            IOTHUB_RETURN_IF_ERROR(reserve->run());  // finishes the statement
            reserve->reset();
          }
        }
        Result<SqliteStatement> insert = connection.prepare(kInsertTelemetry);
        if (!insert) return insert.status();
        std::vector<std::int64_t> sequences;
        sequences.reserve(records.size());
        for (std::size_t i = 0; i < records.size(); ++i) {
          const TelemetryRecord& record = records[i];
          const std::int64_t sequence = reserved[record.partition].next++;
          insert->bind(1, std::int64_t{record.partition})
              .bind(2, sequence)
              .bind(3, toNanoseconds(record.enqueued_time))
              .bind(4, record.device_id)
              .bind(5, static_cast<std::int64_t>(record.body.size() + documents[i].size()))
              .bind(6, documents[i])
              .bind(7, std::string_view(record.body));
          IOTHUB_RETURN_IF_ERROR(insert->run());
          insert->reset();
          sequences.push_back(sequence);
        }
        return sequences;
      });
}

Result<std::vector<TelemetryRecord>> SqliteStore::readTelemetry(std::int32_t partition,
                                                                std::int64_t from_sequence,
                                                                std::size_t limit,
                                                                std::size_t max_bytes) {
  if (partition < 0) return telemetryPartitionInvalid(partition);
  if (limit == 0) return std::vector<TelemetryRecord>{};
  return read<std::vector<TelemetryRecord>>(
      [&](SqliteConnection& connection) -> Result<std::vector<TelemetryRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kReadTelemetry);
        if (!statement) return statement.status();
        statement->bind(1, std::int64_t{partition}).bind(2, from_sequence).bind(3, sqlLimit(limit));
        std::vector<TelemetryRecord> records;
        std::uint64_t bytes = 0;
        while (true) {
          // Stops before reading the body of a record that is not returned.
          if (!records.empty() && bytes >= max_bytes) return records;
          Result<bool> row = statement->step();
          if (!row) return row.status();
          if (!*row) return records;
          bytes += static_cast<std::uint64_t>(statement->int64(4));
          Result<TelemetryRecord> record = decodeTelemetryRow(*statement);
          if (!record) return record.status();
          records.push_back(std::move(record).value());
        }
      });
}

Result<std::int64_t> SqliteStore::telemetrySequenceAfter(std::int32_t partition, SystemTime t) {
  if (partition < 0) return telemetryPartitionInvalid(partition);
  return read<std::int64_t>([&](SqliteConnection& connection) -> Result<std::int64_t> {
    Result<SqliteStatement> statement = connection.prepare(kTelemetrySequenceAfter);
    if (!statement) return statement.status();
    statement->bind(1, std::int64_t{partition}).bind(2, toNanoseconds(t));
    Result<bool> row = statement->step();
    if (!row) return row.status();
    if (!*row) return Status(ErrorCode::ServerError, "the position query returned no row");
    return statement->int64(0);
  });
}

Result<TelemetryPartitionInfo> SqliteStore::telemetryPartition(std::int32_t partition) {
  if (partition < 0) return telemetryPartitionInvalid(partition);
  return read<TelemetryPartitionInfo>(
      [&](SqliteConnection& connection) -> Result<TelemetryPartitionInfo> {
        Result<SqliteStatement> statement = connection.prepare(kTelemetryPartition);
        if (!statement) return statement.status();
        statement->bind(1, std::int64_t{partition});
        TelemetryPartitionInfo info;
        info.partition = partition;
        Result<bool> row = statement->step();
        if (!row) return row.status();
        if (!*row) return info;  // never appended to
        info.next_sequence = statement->int64(0);
        info.bytes = static_cast<std::uint64_t>(statement->int64(1));
        info.last_enqueued_time = fromNanoseconds(statement->int64(2));
        info.begin_sequence = statement->int64(3);
        return info;
      });
}

Result<std::size_t> SqliteStore::trimTelemetry(std::int32_t partition, SystemTime older_than,
                                               std::uint64_t max_bytes, std::size_t limit) {
  if (partition < 0) return telemetryPartitionInvalid(partition);
  if (limit == 0) return std::size_t{0};
  const std::int64_t cutoff = toNanoseconds(older_than);
  return write<std::size_t>([&](SqliteConnection& connection) -> Result<std::size_t> {
    std::uint64_t held = 0;
    {
      Result<SqliteStatement> bytes = connection.prepare(kTelemetryPartitionBytes);
      if (!bytes) return bytes.status();
      bytes->bind(1, std::int64_t{partition});
      Result<bool> row = bytes->step();
      if (!row) return row.status();
      if (!*row) return std::size_t{0};  // never appended to
      held = static_cast<std::uint64_t>(bytes->int64(0));
    }
    std::size_t removed = 0;
    std::uint64_t removed_bytes = 0;
    std::int64_t last_removed = 0;
    {
      Result<SqliteStatement> head = connection.prepare(kTelemetryHead);
      if (!head) return head.status();
      head->bind(1, std::int64_t{partition}).bind(2, sqlLimit(limit));
      bool by_age = true;
      while (true) {
        Result<bool> row = head->step();
        if (!row) return row.status();
        if (!*row) break;
        const auto size = static_cast<std::uint64_t>(head->int64(2));
        // By age from the start, up to the first record young enough; then by size.
        if (by_age && head->int64(1) >= cutoff) by_age = false;
        if (!by_age && held - removed_bytes <= max_bytes) break;
        last_removed = head->int64(0);
        removed += 1;
        removed_bytes += size;
      }
    }
    if (removed == 0) return std::size_t{0};
    Result<SqliteStatement> trim = connection.prepare(kTrimTelemetry);
    if (!trim) return trim.status();
    trim->bind(1, std::int64_t{partition}).bind(2, last_removed);
    IOTHUB_RETURN_IF_ERROR(trim->run());
    Result<SqliteStatement> update = connection.prepare(kTrimTelemetryBytes);
    if (!update) return update.status();
    update->bind(1, std::int64_t{partition}).bind(2, static_cast<std::int64_t>(removed_bytes));
    IOTHUB_RETURN_IF_ERROR(update->run());
    return removed;
  });
}

// --- consumer groups (TelemetryStore) ---
//
// The writer is the only one writing the file, so a create's count and insert in its
// transaction cannot interleave with another create.

namespace {

constexpr std::string_view kListConsumerGroups =
    "SELECT name, created_time FROM consumer_groups ORDER BY name_key";
constexpr std::string_view kGetConsumerGroup =
    "SELECT name, created_time FROM consumer_groups WHERE name_key = ?1";
constexpr std::string_view kCountConsumerGroups = "SELECT count(*) FROM consumer_groups";
constexpr std::string_view kInsertConsumerGroup =
    "INSERT INTO consumer_groups (name_key, name, created_time) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (name_key) DO NOTHING";
constexpr std::string_view kDeleteConsumerGroup = "DELETE FROM consumer_groups WHERE name_key = ?1";

Result<ConsumerGroupRecord> decodeConsumerGroupRow(const SqliteStatement& row) {
  return ConsumerGroupRecord{row.text(0), fromNanoseconds(row.int64(1))};
}

Status consumerGroupNotFound(std::string_view name) {
  return Status(ErrorCode::ConsumerGroupNotFound,
                "consumer group '" + std::string(name) + "' does not exist");
}

}  // namespace

Result<std::vector<ConsumerGroupRecord>> SqliteStore::listConsumerGroups() {
  return read<std::vector<ConsumerGroupRecord>>(
      [](SqliteConnection& connection) -> Result<std::vector<ConsumerGroupRecord>> {
        Result<SqliteStatement> statement = connection.prepare(kListConsumerGroups);
        if (!statement) return statement.status();
        return collect<ConsumerGroupRecord>(*statement, kMaxReserve, decodeConsumerGroupRow);
      });
}

Result<ConsumerGroupRecord> SqliteStore::getConsumerGroup(std::string_view name) {
  const std::string key = consumerGroupKey(name);
  return read<ConsumerGroupRecord>(
      [&](SqliteConnection& connection) -> Result<ConsumerGroupRecord> {
        Result<SqliteStatement> statement = connection.prepare(kGetConsumerGroup);
        if (!statement) return statement.status();
        statement->bind(1, key);
        Result<std::optional<ConsumerGroupRecord>> group =
            single<ConsumerGroupRecord>(*statement, decodeConsumerGroupRow);
        if (!group) return group.status();
        if (!group->has_value()) return consumerGroupNotFound(name);
        return std::move(**group);
      });
}

Status SqliteStore::createConsumerGroup(const ConsumerGroupRecord& group, std::size_t max_groups) {
  const std::string key = consumerGroupKey(group.name);
  return writeStatus([&](SqliteConnection& connection) -> Status {
    {
      Result<SqliteStatement> existing = connection.prepare(kGetConsumerGroup);
      if (!existing) return existing.status();
      existing->bind(1, key);
      Result<bool> row = existing->step();
      if (!row) return row.status();
      if (*row) {
        return Status(ErrorCode::ConsumerGroupAlreadyExists,
                      "consumer group '" + existing->text(0) + "' already exists");
      }
    }
    Result<std::int64_t> count = connection.queryInt64(kCountConsumerGroups);
    if (!count) return count.status();
    if (static_cast<std::uint64_t>(*count) >= max_groups) {
      return Status(ErrorCode::IotHubQuotaExceeded,
                    "the hub already has " + std::to_string(*count) +
                        " consumer groups, the most it may have is " + std::to_string(max_groups));
    }
    Result<SqliteStatement> insert = connection.prepare(kInsertConsumerGroup);
    if (!insert) return insert.status();
    insert->bind(1, key).bind(2, group.name).bind(3, toNanoseconds(group.created_time));
    return insert->run();
  });
}

Status SqliteStore::deleteConsumerGroup(std::string_view name) {
  const std::string key = consumerGroupKey(name);
  if (key == consumerGroupKey(kDefaultConsumerGroup)) {
    return Status(ErrorCode::ArgumentInvalid, "$Default cannot be deleted");
  }
  return writeStatus([&](SqliteConnection& connection) -> Status {
    Result<SqliteStatement> del = connection.prepare(kDeleteConsumerGroup);
    if (!del) return del.status();
    del->bind(1, key);
    IOTHUB_RETURN_IF_ERROR(del->run());
    if (connection.changes() == 0) return consumerGroupNotFound(name);
    return Status::ok();
  });
}

}  // namespace iothub::store
