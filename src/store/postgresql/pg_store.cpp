#include "store/postgresql/pg_store.hpp"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/encoding.hpp"
#include "common/json.hpp"
#include "store/postgresql/pg_schema.hpp"
#include "store/record_codec.hpp"

namespace iothub::store {

// --- Reader pool ---

// Connections handed out one per reading thread. A reader that finds every slot taken
// waits for one to come back rather than opening more: the pool size bounds how many reads
// run at once, and how many connections a process holds on the server. Slots connect on
// first use, and again after their connection broke.
class PostgresStore::ReaderPool {
 public:
  ReaderPool(PgConnectSettings settings, std::size_t size)
      : settings_(std::move(settings)), free_slots_(std::max<std::size_t>(size, 1)) {}

  // A slot, and its connection if it has one; returns both on destruction (a broken
  // connection is dropped).
  class Lease {
   public:
    Lease(ReaderPool& pool, std::unique_ptr<PgConnection> connection)
        : pool_(pool), connection_(std::move(connection)), reused_(connection_ != nullptr) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { pool_.release(std::move(connection_)); }

    // The slot's connection, opened now if it has none.
    Result<PgConnection*> connection() {
      if (connection_ == nullptr) {
        Result<std::unique_ptr<PgConnection>> connected = PgConnection::connect(pool_.settings_);
        if (!connected) return connected.status();
        connection_ = std::move(connected).value();
      }
      return connection_.get();
    }
    // True when the connection had served an earlier read (it may have died since).
    bool reused() const { return reused_; }

   private:
    ReaderPool& pool_;
    std::unique_ptr<PgConnection> connection_;
    bool reused_;
  };

  Lease acquire() {
    std::unique_lock lock(mutex_);
    returned_.wait(lock, [this] { return free_slots_ > 0; });
    --free_slots_;
    std::unique_ptr<PgConnection> connection;
    if (!idle_.empty()) {
      connection = std::move(idle_.back());
      idle_.pop_back();
    }
    return Lease(*this, std::move(connection));
  }

  // Closes the idle connections: after one was found dead (a server restart ends every
  // session), the others most likely are too.
  void discardIdle() {
    std::vector<std::unique_ptr<PgConnection>> discarded;
    std::lock_guard lock(mutex_);
    discarded.swap(idle_);
  }

 private:
  void release(std::unique_ptr<PgConnection> connection) {
    {
      std::lock_guard lock(mutex_);
      if (connection != nullptr && !connection->broken()) idle_.push_back(std::move(connection));
      ++free_slots_;
    }
    returned_.notify_one();
  }

  const PgConnectSettings settings_;
  std::mutex mutex_;
  std::condition_variable returned_;
  std::size_t free_slots_;                           // guarded by mutex_
  std::vector<std::unique_ptr<PgConnection>> idle_;  // guarded by mutex_
};

namespace {

// putDeviceJobs sends its rows as arrays, this many rows per statement: one statement for
// the usual batch, and a 100 000-row job stays far below the query deadline per statement.
constexpr std::size_t kDeviceJobsPerStatement = 10'000;

// Decodes every row of `result`; a row whose columns do not read as expected is
// StoreCorruption.
template <class T, class Decode>
Result<std::vector<T>> decodeRows(const PgResult& result, Decode decode) {
  std::vector<T> records;
  records.reserve(static_cast<std::size_t>(result.rows()));
  for (int i = 0; i < result.rows(); ++i) {
    PgRow row = result.row(i);
    Result<T> record = decode(row);
    if (!record) return record.status();
    IOTHUB_RETURN_IF_ERROR(row.status());
    records.push_back(std::move(record).value());
  }
  return records;
}

// The one row `sql` selects by key, or `not_found` when there is none.
template <class T, class Decode>
Result<T> loadOne(PgConnection& connection, std::string_view sql, std::string_view key,
                  Decode decode, Status not_found) {
  Result<PgResult> result = connection.query(sql, PgParams().add(key));
  if (!result) return result.status();
  if (result->rows() == 0) return not_found;
  Result<std::vector<T>> records = decodeRows<T>(*result, decode);
  if (!records) return records.status();
  return std::move(records->front());
}

// --- devices ---

// The SQL below is spelled out literally (not assembled at run time): each statement is
// prepared once per connection and can be read as it runs. Column lists are kept in one
// place per table, in the order record_codec.hpp decodes.
#define IOTHUB_DEVICE_COLUMNS                                                               \
  "device_id, generation_id, etag, status, status_reason, status_updated_time, auth_type, " \
  "primary_key, secondary_key, primary_thumbprint, secondary_thumbprint, iot_edge, "        \
  "device_scope, parent_scopes, connection_state_updated_time, last_activity_time, "        \
  "cloud_to_device_message_count"

constexpr std::string_view kSelectDevice =
    "SELECT " IOTHUB_DEVICE_COLUMNS " FROM devices WHERE device_id = $1";
// Locks the row until the transaction ends: writers on other processes wait for it.
constexpr std::string_view kSelectDeviceForUpdate =
    "SELECT " IOTHUB_DEVICE_COLUMNS " FROM devices WHERE device_id = $1 FOR UPDATE";
constexpr std::string_view kListDevices = "SELECT " IOTHUB_DEVICE_COLUMNS
                                          " FROM devices WHERE device_id > $1"
                                          " ORDER BY device_id LIMIT $2";
constexpr std::string_view kInsertDevice =
    "INSERT INTO devices (" IOTHUB_DEVICE_COLUMNS
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    " ON CONFLICT (device_id) DO NOTHING";
constexpr std::string_view kUpdateDevice =
    "UPDATE devices SET generation_id = $2, etag = $3, status = $4, status_reason = $5,"
    " status_updated_time = $6, auth_type = $7, primary_key = $8, secondary_key = $9,"
    " primary_thumbprint = $10, secondary_thumbprint = $11, iot_edge = $12, device_scope = $13,"
    " parent_scopes = $14, connection_state_updated_time = $15, last_activity_time = $16,"
    " cloud_to_device_message_count = $17 WHERE device_id = $1";
// The twin and the persistent MQTT session go with the device (ON DELETE CASCADE).
constexpr std::string_view kDeleteDevice = "DELETE FROM devices WHERE device_id = $1";
constexpr std::string_view kDeviceStatistics =
    "SELECT count(*), count(*) FILTER (WHERE status = 'enabled'),"
    " count(*) FILTER (WHERE status = 'disabled') FROM devices";

#undef IOTHUB_DEVICE_COLUMNS

PgParams deviceParams(const DeviceRecord& device) {
  PgParams params;
  params.add(device.device_id)
      .add(device.generation_id)
      .add(device.etag)
      .add(encodeDeviceStatus(device.status))
      .add(device.status_reason)
      .add(toNanoseconds(device.status_updated_time))
      .add(encodeAuthType(device.auth_type))
      .add(device.primary_key)
      .add(device.secondary_key)
      .add(device.primary_thumbprint)
      .add(device.secondary_thumbprint)
      .add(device.iot_edge)
      .add(device.device_scope)
      .add(encodeStrings(device.parent_scopes))
      .add(toNanoseconds(device.connection_state_updated_time))
      .add(toNanoseconds(device.last_activity_time))
      .add(device.cloud_to_device_message_count);
  return params;
}

Result<DeviceRecord> loadDevice(PgConnection& connection, std::string_view device_id,
                                bool for_update) {
  return loadOne<DeviceRecord>(connection, for_update ? kSelectDeviceForUpdate : kSelectDevice,
                               device_id, decodeDeviceRow<PgRow>, deviceNotFound(device_id));
}

// --- twins ---

#define IOTHUB_TWIN_COLUMNS \
  "device_id, tags, desired, reported, version, desired_version, reported_version"

constexpr std::string_view kSelectTwin =
    "SELECT " IOTHUB_TWIN_COLUMNS " FROM twins WHERE device_id = $1";
constexpr std::string_view kSelectTwinForUpdate =
    "SELECT " IOTHUB_TWIN_COLUMNS " FROM twins WHERE device_id = $1 FOR UPDATE";
constexpr std::string_view kListTwins = "SELECT " IOTHUB_TWIN_COLUMNS
                                        " FROM twins WHERE device_id > $1"
                                        " ORDER BY device_id LIMIT $2";
constexpr std::string_view kInsertTwin =
    "INSERT INTO twins (" IOTHUB_TWIN_COLUMNS ") VALUES ($1, $2, $3, $4, $5, $6, $7)";
constexpr std::string_view kUpdateTwin =
    "UPDATE twins SET tags = $2, desired = $3, reported = $4, version = $5,"
    " desired_version = $6, reported_version = $7 WHERE device_id = $1";

#undef IOTHUB_TWIN_COLUMNS

PgParams twinParams(const TwinRecord& twin) {
  PgParams params;
  params.add(twin.device_id)
      .add(json::serialize(twin.tags))
      .add(json::serialize(twin.desired))
      .add(json::serialize(twin.reported))
      .add(twin.version)
      .add(twin.desired_version)
      .add(twin.reported_version);
  return params;
}

Result<TwinRecord> loadTwin(PgConnection& connection, std::string_view device_id, bool for_update) {
  return loadOne<TwinRecord>(connection, for_update ? kSelectTwinForUpdate : kSelectTwin, device_id,
                             decodeTwinRow<PgRow>, deviceNotFound(device_id));
}

// --- jobs ---

#define IOTHUB_JOB_COLUMNS "job_id, type, status, created_time, start_time, end_time, document"

constexpr std::string_view kSelectJob = "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE job_id = $1";
constexpr std::string_view kSelectJobForUpdate =
    "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE job_id = $1 FOR UPDATE";
constexpr std::string_view kInsertJob = "INSERT INTO jobs (" IOTHUB_JOB_COLUMNS
                                        ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
                                        " ON CONFLICT (job_id) DO NOTHING";
constexpr std::string_view kUpdateJob =
    "UPDATE jobs SET type = $2, status = $3, created_time = $4, start_time = $5, end_time = $6,"
    " document = $7 WHERE job_id = $1";
constexpr std::string_view kJobsWithStatus = "SELECT " IOTHUB_JOB_COLUMNS
                                             " FROM jobs WHERE status = ANY ($1::text[])"
                                             " ORDER BY created_time, job_id";
constexpr std::string_view kJobPosition = "SELECT created_time FROM jobs WHERE job_id = $1";

// listJobs: one statement per combination of filters, so each keeps its own plan. The
// parameters are numbered in this order, the absent ones left out: type, status,
// (created_time, job_id) to start after, limit.
constexpr std::string_view kListJobs[2][2][2] = {
    // [type filter][status filter][after a job]
    {{"SELECT " IOTHUB_JOB_COLUMNS " FROM jobs"
      " ORDER BY created_time, job_id LIMIT $1",
      "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE (created_time, job_id) > ($1, $2)"
      " ORDER BY created_time, job_id LIMIT $3"},
     {"SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE status = $1"
      " ORDER BY created_time, job_id LIMIT $2",
      "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE status = $1"
      " AND (created_time, job_id) > ($2, $3) ORDER BY created_time, job_id LIMIT $4"}},
    {{"SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE type = $1"
      " ORDER BY created_time, job_id LIMIT $2",
      "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE type = $1"
      " AND (created_time, job_id) > ($2, $3) ORDER BY created_time, job_id LIMIT $4"},
     {"SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE type = $1 AND status = $2"
      " ORDER BY created_time, job_id LIMIT $3",
      "SELECT " IOTHUB_JOB_COLUMNS " FROM jobs WHERE type = $1 AND status = $2"
      " AND (created_time, job_id) > ($3, $4) ORDER BY created_time, job_id LIMIT $5"}},
};

// A claimed job: its record in decodeJobRow's order, then its new epoch and whether a
// cancel was requested.
#define IOTHUB_JOB_LEASE_COLUMNS                                                     \
  "job_id, type, status, created_time, start_time, end_time, document, lease_epoch," \
  " cancel_requested"

#undef IOTHUB_JOB_COLUMNS

PgParams jobParams(const JobRecord& job) {
  PgParams params;
  params.add(job.job_id)
      .add(job.type)
      .add(job.status)
      .add(toNanoseconds(job.created_time))
      .add(toNanoseconds(job.start_time))
      .add(job.end_time ? std::optional<std::int64_t>(toNanoseconds(*job.end_time)) : std::nullopt)
      .add(json::serialize(job.document));
  return params;
}

Result<JobRecord> loadJob(PgConnection& connection, std::string_view job_id, bool for_update) {
  return loadOne<JobRecord>(connection, for_update ? kSelectJobForUpdate : kSelectJob, job_id,
                            decodeJobRow<PgRow>, jobNotFound(job_id));
}

// --- device jobs ---

#define IOTHUB_DEVICE_JOB_COLUMNS "job_id, device_id, status, last_updated_time, document"

// A batch as five parallel arrays: one statement (and one plan) whatever the batch size.
constexpr std::string_view kPutDeviceJobs =
    "INSERT INTO device_jobs (" IOTHUB_DEVICE_JOB_COLUMNS
    ") SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::json[])"
    " ON CONFLICT (job_id, device_id) DO UPDATE SET status = excluded.status,"
    " last_updated_time = excluded.last_updated_time, document = excluded.document";
constexpr std::string_view kListDeviceJobs = "SELECT " IOTHUB_DEVICE_JOB_COLUMNS
                                             " FROM device_jobs WHERE job_id = $1"
                                             " AND device_id > $2 ORDER BY device_id LIMIT $3";
constexpr std::string_view kListDeviceJobsWithStatus =
    "SELECT " IOTHUB_DEVICE_JOB_COLUMNS
    " FROM device_jobs WHERE job_id = $1 AND status = $4"
    " AND device_id > $2 ORDER BY device_id LIMIT $3";
constexpr std::string_view kListAllDeviceJobs =
    "SELECT " IOTHUB_DEVICE_JOB_COLUMNS
    " FROM device_jobs WHERE (job_id, device_id) > ($1, $2)"
    " ORDER BY job_id, device_id LIMIT $3";

#undef IOTHUB_DEVICE_JOB_COLUMNS

// --- job leases ---
// "Now" is the database's clock (as for the cluster statements below), so the nodes'
// clocks need not agree. A lease is held while lease_epoch is
// its epoch and lease_until has not passed.
#define IOTHUB_LEASE_NOW_NS "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"

// $1 owner, $2 due_by, $3 ttl in nanoseconds, $4 limit. SKIP LOCKED: a job that another
// node's claim (or its owner's write) has locked is left to it rather than waited for; the
// outer UPDATE repeats the conditions on the row version it locked.
constexpr std::string_view kClaimJobs =
    "UPDATE jobs SET lease_owner = $1, lease_until = " IOTHUB_LEASE_NOW_NS
    " + $3::bigint, lease_epoch = lease_epoch + 1 WHERE job_id IN (SELECT job_id FROM jobs"
    " WHERE status IN ('queued', 'scheduled', 'running') AND lease_until <= " IOTHUB_LEASE_NOW_NS
    " AND (status = 'running' OR start_time <= $2 OR cancel_requested)"
    " ORDER BY status = 'running' DESC, COALESCE((document->>'priority')::int, 0) DESC,"
    " start_time, created_time, job_id LIMIT $4 FOR UPDATE SKIP LOCKED)"
    " AND status IN ('queued', 'scheduled', 'running') AND lease_until <= " IOTHUB_LEASE_NOW_NS
    " RETURNING " IOTHUB_JOB_LEASE_COLUMNS;
// $1 job ids, $2 their epochs, $3 ttl in nanoseconds.
constexpr std::string_view kRenewJobLeases =
    "UPDATE jobs j SET lease_until = " IOTHUB_LEASE_NOW_NS
    " + $3::bigint FROM unnest($1::text[], $2::bigint[]) AS l (job_id, epoch)"
    " WHERE j.job_id = l.job_id AND j.lease_epoch = l.epoch AND j.lease_until "
    "> " IOTHUB_LEASE_NOW_NS " RETURNING j.job_id, j.cancel_requested";
constexpr std::string_view kReleaseJobLease =
    "UPDATE jobs SET lease_owner = NULL, lease_until = 0 WHERE job_id = $1 AND lease_epoch = $2";
constexpr std::string_view kReleaseJobLeasesOf =
    "UPDATE jobs SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1"
    " AND lease_until > " IOTHUB_LEASE_NOW_NS " AND status IN ('queued', 'scheduled', 'running')";
// Locks the job's row for the rest of the transaction: a claim by another node (an UPDATE)
// waits for the owner's write to commit, and then finds the epoch it must bump.
constexpr std::string_view kJobLeaseHeld =
    "SELECT lease_epoch = $2 AND lease_until > " IOTHUB_LEASE_NOW_NS
    " FROM jobs WHERE job_id = $1 FOR SHARE";
constexpr std::string_view kRequestJobCancel =
    "UPDATE jobs SET cancel_requested = true"
    " WHERE job_id = $1 AND status IN ('queued', 'scheduled', 'running')";
constexpr std::string_view kJobExists = "SELECT 1 FROM jobs WHERE job_id = $1";

#undef IOTHUB_LEASE_NOW_NS
#undef IOTHUB_JOB_LEASE_COLUMNS

Status jobLeaseLost(const JobLease& lease) {
  return Status(ErrorCode::JobLeaseLost, "the lease of job '" + lease.job_id + "' (epoch " +
                                             std::to_string(lease.epoch) + ") is no longer held");
}

// Inside a write transaction: ok while `lease` is held (and the job's row stays locked
// until the transaction ends); JobLeaseLost or JobNotFound.
Status checkJobLease(PgConnection& connection, const JobLease& lease) {
  Result<PgResult> held =
      connection.query(kJobLeaseHeld, PgParams().add(lease.job_id).add(lease.epoch));
  if (!held) return held.status();
  if (held->rows() == 0) return jobNotFound(lease.job_id);
  PgRow row = held->row(0);
  bool is_held = row.flag(0);
  IOTHUB_RETURN_IF_ERROR(row.status());
  return is_held ? Status::ok() : jobLeaseLost(lease);
}

// The statement parameters for rows[begin, end). ON CONFLICT DO UPDATE refuses to touch
// a row twice in one statement, so where a key repeats only its last row is sent (the one
// that would have won had the rows been written one after the other).
PgParams deviceJobParams(const std::vector<DeviceJobRecord>& rows, std::size_t begin,
                         std::size_t end) {
  std::unordered_set<std::string> seen;
  std::vector<const DeviceJobRecord*> unique;
  for (std::size_t i = end; i > begin; --i) {
    const DeviceJobRecord& row = rows[i - 1];
    std::string key = row.job_id;
    key += '\0';  // a NUL cannot occur in a key PostgreSQL accepts
    key += row.device_id;
    if (seen.insert(std::move(key)).second) unique.push_back(&row);
  }
  PgArrayBuilder job_ids, device_ids, statuses, times, documents;
  for (const DeviceJobRecord* row : unique) {
    job_ids.add(row->job_id);
    device_ids.add(row->device_id);
    statuses.add(row->status);
    times.add(toNanoseconds(row->last_updated_time));
    documents.add(json::serialize(row->document));
  }
  PgParams params;
  params.add(std::move(job_ids).finish())
      .add(std::move(device_ids).finish())
      .add(std::move(statuses).finish())
      .add(std::move(times).finish())
      .add(std::move(documents).finish());
  return params;
}

// --- access policies ---

constexpr std::string_view kListPolicies =
    "SELECT name, primary_key, secondary_key, permissions FROM access_policies ORDER BY name";
constexpr std::string_view kInsertPolicies =
    "INSERT INTO access_policies (name, primary_key, secondary_key, permissions)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])"
    " ON CONFLICT (name) DO NOTHING";

// --- persistent MQTT sessions ---

constexpr std::string_view kGetSession =
    "SELECT subscriptions FROM mqtt_sessions WHERE client_id = $1";
// Only for an existing device: a session saved after its device was deleted would come back
// to life when a device is created again under the same id. The foreign key catches a
// device deleted by another process between this check and the insert.
constexpr std::string_view kPutSession =
    "INSERT INTO mqtt_sessions (client_id, subscriptions) SELECT $1::text, $2::json"
    " WHERE EXISTS (SELECT 1 FROM devices WHERE device_id = $1::text)"
    " ON CONFLICT (client_id) DO UPDATE SET subscriptions = excluded.subscriptions";
constexpr std::string_view kDeleteSession = "DELETE FROM mqtt_sessions WHERE client_id = $1";

// --- cluster (store/cluster_store.hpp) ---
// "Now" on the database's clock, in nanoseconds (microsecond resolution).
#define IOTHUB_DB_NOW_NS "(extract(epoch FROM clock_timestamp()) * 1000000000)::bigint"
#define IOTHUB_NODE_COLUMNS "node_id, address, started_time, lease_until"
#define IOTHUB_PRESENCE_COLUMNS "device_id, node_id, epoch, connected, since"

// $1 node, $2 address, $3 ttl in nanoseconds. A renewal keeps started_time.
constexpr std::string_view kRenewNode = "INSERT INTO cluster_nodes (" IOTHUB_NODE_COLUMNS
                                        ") VALUES ($1, $2, " IOTHUB_DB_NOW_NS ", " IOTHUB_DB_NOW_NS
                                        " + $3::bigint) ON CONFLICT (node_id) DO UPDATE SET"
                                        " address = excluded.address, lease_until = "
                                        "excluded.lease_until RETURNING " IOTHUB_NODE_COLUMNS;
constexpr std::string_view kJoinNode =
    "INSERT INTO cluster_nodes (" IOTHUB_NODE_COLUMNS ") VALUES ($1, $2, " IOTHUB_DB_NOW_NS
    ", " IOTHUB_DB_NOW_NS
    " + $3::bigint) ON CONFLICT (node_id) DO UPDATE SET"
    " address = excluded.address, started_time = excluded.started_time,"
    " lease_until = excluded.lease_until RETURNING " IOTHUB_NODE_COLUMNS;
constexpr std::string_view kDisconnectNodeDevices =
    "UPDATE device_presence SET connected = false, since = " IOTHUB_DB_NOW_NS
    " WHERE node_id = $1 AND connected";
constexpr std::string_view kDeleteNode = "DELETE FROM cluster_nodes WHERE node_id = $1";
constexpr std::string_view kLiveNodes =
    "SELECT " IOTHUB_NODE_COLUMNS " FROM cluster_nodes WHERE lease_until >= " IOTHUB_DB_NOW_NS
    " ORDER BY node_id";
// Every sub-statement sees the same snapshot; the UPDATE reads the nodes DELETE removed.
constexpr std::string_view kReapNodes =
    "WITH dead AS (DELETE FROM cluster_nodes WHERE lease_until < " IOTHUB_DB_NOW_NS
    " RETURNING node_id), gone AS (UPDATE device_presence p SET connected = false, since "
    "= " IOTHUB_DB_NOW_NS
    " FROM dead WHERE p.node_id = dead.node_id AND p.connected RETURNING 1)"
    " SELECT node_id FROM dead ORDER BY node_id";
// A claim of device $1 by node $2, in three statements of one transaction: make sure the
// row exists (epoch 0 = never connected; a concurrent first claim by another process makes
// this wait for it), lock and read it, then take it over. Locking a row that exists first
// makes concurrent claims of one device run one after the other, each returning the claim
// it replaced. (A SELECT ... FOR UPDATE in the same statement as an upsert would not do:
// it skips the row the upsert changed.)
constexpr std::string_view kEnsurePresence =
    "INSERT INTO device_presence (" IOTHUB_PRESENCE_COLUMNS
    ") VALUES ($1, '', 0, false, 0) ON CONFLICT (device_id) DO NOTHING";
constexpr std::string_view kLockPresence =
    "SELECT " IOTHUB_PRESENCE_COLUMNS " FROM device_presence WHERE device_id = $1 FOR UPDATE";
constexpr std::string_view kClaimPresence =
    "UPDATE device_presence SET node_id = $2, epoch = nextval('device_presence_epoch'),"
    " connected = true, since = " IOTHUB_DB_NOW_NS
    " WHERE device_id = $1 RETURNING " IOTHUB_PRESENCE_COLUMNS;
constexpr std::string_view kReleasePresence =
    "UPDATE device_presence SET connected = false, since = " IOTHUB_DB_NOW_NS
    " WHERE device_id = $1 AND epoch = $2 AND connected";
// repairPresence: $1 node, $2 device ids, $3 epochs (the connections the node holds), $4
// settle time in nanoseconds.
constexpr std::string_view kReinstatePresence =
    "UPDATE device_presence p SET connected = true, since = " IOTHUB_DB_NOW_NS
    " FROM unnest($2::text[], $3::bigint[]) AS h (device_id, epoch)"
    " WHERE p.device_id = h.device_id AND p.epoch = h.epoch AND p.node_id = $1"
    " AND NOT p.connected RETURNING p.device_id, p.epoch";
constexpr std::string_view kReleaseUnheldPresence =
    "UPDATE device_presence p SET connected = false, since = " IOTHUB_DB_NOW_NS
    " WHERE p.node_id = $1 AND p.connected AND p.since < " IOTHUB_DB_NOW_NS
    " - $4::bigint AND NOT EXISTS (SELECT 1 FROM unnest($2::text[], $3::bigint[]) AS h"
    " (device_id, epoch) WHERE h.device_id = p.device_id AND h.epoch = p.epoch)";
constexpr std::string_view kGetPresence =
    "SELECT " IOTHUB_PRESENCE_COLUMNS " FROM device_presence WHERE device_id = $1";
constexpr std::string_view kConnectedCount = "SELECT count(*) FROM device_presence WHERE connected";
// Inserts unless present, then reads what is stored: a concurrent insert of the same key
// waits on the unique index, so the second statement sees the winner's row.
constexpr std::string_view kShareValue =
    "INSERT INTO cluster_values (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
constexpr std::string_view kGetSharedValue = "SELECT value FROM cluster_values WHERE key = $1";

Result<NodeRecord> decodeNode(const PgRow& row) {
  NodeRecord node{row.text(0), row.text(1), fromNanoseconds(row.int64(2)),
                  fromNanoseconds(row.int64(3))};
  if (Status s = row.status(); !s) return s;
  return node;
}

// The presence in columns [first, first + 5) of `row`.
Result<PresenceRecord> decodePresence(const PgRow& row, int first) {
  PresenceRecord p{row.text(first), row.text(first + 1), row.int64(first + 2), row.flag(first + 3),
                   fromNanoseconds(row.int64(first + 4))};
  if (Status s = row.status(); !s) return s;
  return p;
}

std::int64_t ttlNanoseconds(std::chrono::milliseconds ttl) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::max(ttl, std::chrono::milliseconds(0)))
      .count();
}

Status withContext(const Status& error) {
  return Status(error.code(), "opening the PostgreSQL store: " + error.message());
}

}  // namespace

// --- PostgresStore ---

Result<std::unique_ptr<PostgresStore>> PostgresStore::open(std::string conninfo,
                                                           PostgresOptions options) {
  try {
    Result<std::optional<std::chrono::seconds>> connect_timeout = parsePgConninfo(conninfo);
    if (!connect_timeout) return connect_timeout.status();
    PgConnectSettings settings{.conninfo = std::move(conninfo),
                               .connect_timeout = options.connect_timeout,
                               .query_deadline = options.query_deadline};
    if (connect_timeout->has_value()) settings.connect_timeout = **connect_timeout;

    Result<std::unique_ptr<PgConnection>> writer = PgConnection::connect(settings);
    if (!writer) return withContext(writer.status());
    Status migrated = migratePostgresSchema(**writer, postgresMigrations());
    if (!migrated) return withContext(migrated);
    return std::unique_ptr<PostgresStore>(
        new PostgresStore(settings, std::move(writer).value(), options));
  } catch (const std::exception& e) {
    return Status(ErrorCode::ServerError, std::string("opening the PostgreSQL store: ") + e.what());
  }
}

PostgresStore::PostgresStore(const PgConnectSettings& settings,
                             std::unique_ptr<PgConnection> write_connection,
                             const PostgresOptions& options)
    : readers_(std::make_unique<ReaderPool>(settings, options.pool_size)),
      writer_(std::make_unique<PgWriter>(settings, std::move(write_connection), options.max_batch,
                                         options.max_transaction_attempts)),
      change_feed_(std::make_unique<PgChangeFeed>(
          [this](const std::function<Status(PgConnection&)>& body) -> Status {
            return read<bool>([&body](PgConnection& connection) -> Result<bool> {
                     IOTHUB_RETURN_IF_ERROR(body(connection));
                     return true;
                   })
                .status();
          })) {}

PostgresStore::~PostgresStore() {
  change_feed_.reset();
  writer_.reset();
  readers_.reset();
}

PostgresStore::WriterStats PostgresStore::stats() const { return writer_->stats(); }

std::optional<WriterMetrics> PostgresStore::writerMetrics() const {
  const auto s = writer_->stats();
  return WriterMetrics{&writer_->batchSizes(), &writer_->batchSeconds(), s.queued_operations,
                       s.failed_commits};
}

template <class T, class Body>
Result<T> PostgresStore::read(Body&& body) {
  try {
    for (int attempt = 0;; ++attempt) {
      ReaderPool::Lease lease = readers_->acquire();
      Result<PgConnection*> connection = lease.connection();
      if (!connection) return connection.status();
      Result<T> result = body(**connection);
      // A pooled connection that died while idle (the server restarted) fails its first
      // query; a read is safe to repeat, so it gets one more try on a new connection. A
      // server that does not answer in time gets no second deadline.
      if (result || attempt > 0 || !lease.reused() || !(*connection)->broken() ||
          (*connection)->timedOut()) {
        return result;
      }
      readers_->discardIdle();
    }
  } catch (const std::exception& e) {
    return Status(ErrorCode::ServerError, std::string("store read failed: ") + e.what());
  }
}

template <class T, class Body>
Result<T> PostgresStore::write(Body&& body) {
  return submitReturning<T>(*writer_, std::forward<Body>(body));
}

Status PostgresStore::writeStatus(PgWriter::Operation operation) {
  return writer_->submit(std::move(operation));
}

// RegistryStore

namespace {

// One device write inside the caller's transaction. The returned Status is a failure of the
// database itself (the transaction is failed or its writes must not commit); otherwise
// `outcome` is the write's own result, and a refused write changed nothing.
Status applyDeviceWrite(PgConnection& connection, const DeviceWrite& write,
                        std::optional<Result<DeviceRecord>>& outcome) {
  switch (write.kind) {
    case DeviceWrite::Kind::Create: {
      if (write.twin.device_id != write.device.device_id ||
          write.device.device_id != write.device_id) {
        outcome.emplace(Status(ErrorCode::ArgumentInvalid, "the twin belongs to another device"));
        return Status::ok();
      }
      // ON CONFLICT DO NOTHING instead of a unique violation: a concurrent insert of the
      // same id on another process waits for that one to finish, then inserts nothing.
      Result<PgResult> inserted = connection.query(kInsertDevice, deviceParams(write.device));
      if (!inserted) return inserted.status();
      if (inserted->affectedRows() == 0) {
        outcome.emplace(Status(ErrorCode::DeviceAlreadyExists,
                               "device '" + write.device_id + "' already exists"));
        return Status::ok();
      }
      IOTHUB_RETURN_IF_ERROR(connection.query(kInsertTwin, twinParams(write.twin)).status());
      outcome.emplace(write.device);
      return Status::ok();
    }
    case DeviceWrite::Kind::Update: {
      Result<DeviceRecord> current = loadDevice(connection, write.device_id, true);
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
        IOTHUB_RETURN_IF_ERROR(connection.query(kUpdateDevice, deviceParams(*next)).status());
      }
      outcome.emplace(std::move(next));
      return Status::ok();
    }
    case DeviceWrite::Kind::Delete: {
      Result<DeviceRecord> current = loadDevice(connection, write.device_id, true);
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
      IOTHUB_RETURN_IF_ERROR(
          connection.query(kDeleteDevice, PgParams().add(write.device_id)).status());
      outcome.emplace(std::move(current));
      return Status::ok();
    }
  }
  return Status(ErrorCode::ServerError, "unknown device write");
}

// A run of creates as one statement: the devices, then the twins of those that were
// inserted, as parallel arrays (one round trip for up to a bulk request's 100 devices instead
// of two per device). Rows are inserted in id order, so two batches that overlap lock their
// ids in the same order. Returns the ids inserted.
constexpr std::string_view kInsertDevicesWithTwins =
    "WITH d AS (INSERT INTO devices (device_id, generation_id, etag, status, status_reason,"
    " status_updated_time, auth_type, primary_key, secondary_key, primary_thumbprint,"
    " secondary_thumbprint, iot_edge, device_scope, parent_scopes,"
    " connection_state_updated_time, last_activity_time, cloud_to_device_message_count)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
    " $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],"
    " $12::boolean[], $13::text[], $14::json[], $15::bigint[], $16::bigint[], $17::bigint[])"
    " ORDER BY 1 ON CONFLICT (device_id) DO NOTHING RETURNING device_id)"
    " INSERT INTO twins (device_id, tags, desired, reported, version, desired_version,"
    " reported_version) SELECT t.* FROM unnest($1::text[], $18::json[], $19::json[],"
    " $20::json[], $21::bigint[], $22::bigint[], $23::bigint[]) AS t (device_id, tags, desired,"
    " reported, version, desired_version, reported_version) JOIN d USING (device_id)"
    " RETURNING device_id";

// Creates writes[begin, end) (valid creates of distinct ids) in one statement; an id that
// exists already gets DeviceAlreadyExists, as from applyDeviceWrite.
Status insertDevices(PgConnection& connection, const std::vector<DeviceWrite>& writes,
                     std::size_t begin, std::size_t end,
                     std::vector<std::optional<Result<DeviceRecord>>>& outcomes) {
  constexpr int kColumns = 23;
  std::vector<PgArrayBuilder> columns(kColumns);
  for (std::size_t i = begin; i < end; ++i) {
    const DeviceRecord& d = writes[i].device;
    const TwinRecord& t = writes[i].twin;
    int c = 0;
    columns[c++].add(d.device_id);
    columns[c++].add(d.generation_id);
    columns[c++].add(d.etag);
    columns[c++].add(encodeDeviceStatus(d.status));
    columns[c++].add(d.status_reason);
    columns[c++].add(toNanoseconds(d.status_updated_time));
    columns[c++].add(encodeAuthType(d.auth_type));
    columns[c++].add(d.primary_key);
    columns[c++].add(d.secondary_key);
    columns[c++].add(d.primary_thumbprint);
    columns[c++].add(d.secondary_thumbprint);
    columns[c++].add(std::string_view(d.iot_edge ? "true" : "false"));
    columns[c++].add(d.device_scope);
    columns[c++].add(encodeStrings(d.parent_scopes));
    columns[c++].add(toNanoseconds(d.connection_state_updated_time));
    columns[c++].add(toNanoseconds(d.last_activity_time));
    columns[c++].add(d.cloud_to_device_message_count);
    columns[c++].add(json::serialize(t.tags));
    columns[c++].add(json::serialize(t.desired));
    columns[c++].add(json::serialize(t.reported));
    columns[c++].add(t.version);
    columns[c++].add(t.desired_version);
    columns[c++].add(t.reported_version);
  }
  PgParams params;
  for (PgArrayBuilder& column : columns) params.add(std::move(column).finish());
  Result<PgResult> inserted = connection.query(kInsertDevicesWithTwins, params);
  if (!inserted) return inserted.status();
  std::set<std::string, std::less<>> created;
  for (int r = 0; r < inserted->rows(); ++r) created.insert(inserted->row(r).text(0));
  for (std::size_t i = begin; i < end; ++i) {
    if (created.contains(writes[i].device_id)) {
      outcomes[i].emplace(writes[i].device);
    } else {
      outcomes[i].emplace(Status(ErrorCode::DeviceAlreadyExists,
                                 "device '" + writes[i].device_id + "' already exists"));
    }
  }
  return Status::ok();
}

bool isPlainCreate(const DeviceWrite& write) {
  return write.kind == DeviceWrite::Kind::Create && write.device.device_id == write.device_id &&
         write.twin.device_id == write.device_id;
}

}  // namespace

Status PostgresStore::createDevice(const DeviceRecord& device, const TwinRecord& twin) {
  if (twin.device_id != device.device_id) {
    return Status(ErrorCode::ArgumentInvalid, "the twin belongs to another device");
  }
  PgParams device_params = deviceParams(device);
  PgParams twin_params = twinParams(twin);
  return writeStatus([&](PgConnection& connection) -> Status {
    // ON CONFLICT DO NOTHING instead of a unique violation: a concurrent insert of the
    // same id on another process waits for that one to finish, then inserts nothing.
    Result<PgResult> inserted = connection.query(kInsertDevice, device_params);
    if (!inserted) return inserted.status();
    if (inserted->affectedRows() == 0) {
      return Status(ErrorCode::DeviceAlreadyExists,
                    "device '" + device.device_id + "' already exists");
    }
    return connection.query(kInsertTwin, twin_params).status();
  });
}

Result<DeviceRecord> PostgresStore::getDevice(std::string_view device_id) {
  return read<DeviceRecord>(
      [&](PgConnection& connection) { return loadDevice(connection, device_id, false); });
}

Result<DeviceRecord> PostgresStore::updateDevice(std::string_view device_id,
                                                 DeviceMutation mutate) {
  return write<DeviceRecord>([&](PgConnection& connection) -> Result<DeviceRecord> {
    Result<DeviceRecord> current = loadDevice(connection, device_id, true);
    if (!current) return current;
    Result<DeviceRecord> next = mutate(*current);
    if (!next) return next;
    if (next->device_id != device_id) {
      return Status(ErrorCode::ServerError, "a device mutation must not change the device id");
    }
    IOTHUB_RETURN_IF_ERROR(connection.query(kUpdateDevice, deviceParams(*next)).status());
    return next;
  });
}

Status PostgresStore::deleteDevice(std::string_view device_id, DevicePrecondition precondition) {
  return writeStatus([&](PgConnection& connection) -> Status {
    Result<DeviceRecord> current = loadDevice(connection, device_id, true);
    if (!current) return current.status();
    if (precondition) IOTHUB_RETURN_IF_ERROR(precondition(*current));
    return connection.query(kDeleteDevice, PgParams().add(device_id)).status();
  });
}

std::vector<Result<DeviceRecord>> PostgresStore::writeDevices(
    const std::vector<DeviceWrite>& writes) {
  if (writes.empty()) return {};
  std::vector<std::optional<Result<DeviceRecord>>> outcomes;
  // One writer operation for the whole batch (the writer may run it again after a
  // deadlock: only the last run's outcomes count). A database error fails the operation,
  // and the writer rolls every write of the batch back; a refused write changed nothing.
  Status s = writeStatus([&](PgConnection& connection) -> Status {
    outcomes.assign(writes.size(), std::nullopt);
    for (std::size_t i = 0; i < writes.size();) {
      // A run of creates of distinct ids (a bulk registration) goes as one statement.
      std::size_t end = i;
      std::set<std::string_view> ids;
      while (end < writes.size() && isPlainCreate(writes[end]) &&
             ids.insert(writes[end].device_id).second) {
        ++end;
      }
      if (end - i >= 2) {
        IOTHUB_RETURN_IF_ERROR(insertDevices(connection, writes, i, end, outcomes));
        i = end;
        continue;
      }
      IOTHUB_RETURN_IF_ERROR(applyDeviceWrite(connection, writes[i], outcomes[i]));
      ++i;
    }
    return Status::ok();
  });
  return deviceWriteResults(s, outcomes, writes.size());
}

Result<std::vector<DeviceRecord>> PostgresStore::listDevices(std::string_view after_device_id,
                                                             std::size_t limit) {
  return read<std::vector<DeviceRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<DeviceRecord>> {
        Result<PgResult> result =
            connection.query(kListDevices, PgParams().add(after_device_id).add(sqlLimit(limit)));
        if (!result) return result.status();
        return decodeRows<DeviceRecord>(*result, decodeDeviceRow<PgRow>);
      });
}

Result<DeviceStatistics> PostgresStore::deviceStatistics() {
  return read<DeviceStatistics>([](PgConnection& connection) -> Result<DeviceStatistics> {
    Result<PgResult> result = connection.query(kDeviceStatistics, PgParams());
    if (!result) return result.status();
    if (result->rows() != 1) {
      return Status(ErrorCode::ServerError, "device statistics returned no row");
    }
    PgRow row = result->row(0);
    DeviceStatistics statistics{
        .total = row.int64(0), .enabled = row.int64(1), .disabled = row.int64(2)};
    IOTHUB_RETURN_IF_ERROR(row.status());
    return statistics;
  });
}

// TwinStore

Result<TwinRecord> PostgresStore::getTwin(std::string_view device_id) {
  return read<TwinRecord>(
      [&](PgConnection& connection) { return loadTwin(connection, device_id, false); });
}

// Reads the twin locked, applies `mutate` and writes the result, inside the caller's
// transaction.
static Result<TwinRecord> mutateTwin(PgConnection& connection, std::string_view device_id,
                                     const TwinMutation& mutate) {
  Result<TwinRecord> current = loadTwin(connection, device_id, true);
  if (!current) return current;
  Result<TwinRecord> next = mutate(*current);
  if (!next) return next;
  if (next->device_id != device_id) {
    return Status(ErrorCode::ServerError, "a twin mutation must not change the device id");
  }
  IOTHUB_RETURN_IF_ERROR(connection.query(kUpdateTwin, twinParams(*next)).status());
  return next;
}

Result<TwinRecord> PostgresStore::updateTwin(std::string_view device_id, TwinMutation mutate) {
  return write<TwinRecord>([&](PgConnection& connection) -> Result<TwinRecord> {
    return mutateTwin(connection, device_id, mutate);
  });
}

Result<TwinRecord> PostgresStore::updateTwinForJob(std::string_view device_id, TwinMutation mutate,
                                                   const DeviceJobWrite& job_row) {
  if (job_row.lease && job_row.lease->job_id != job_row.row.job_id) {
    return Status(ErrorCode::ArgumentInvalid, "the device-job row belongs to another job");
  }
  PgParams row_params = deviceJobParams({job_row.row}, 0, 1);
  return write<TwinRecord>([&](PgConnection& connection) -> Result<TwinRecord> {
    // The job's row first, then the twin's: claims lock only job rows, so no cycle.
    if (job_row.lease) IOTHUB_RETURN_IF_ERROR(checkJobLease(connection, *job_row.lease));
    Result<TwinRecord> next = mutateTwin(connection, device_id, mutate);
    if (!next) return next;
    IOTHUB_RETURN_IF_ERROR(connection.query(kPutDeviceJobs, row_params).status());
    return next;
  });
}

Result<std::vector<TwinRecord>> PostgresStore::listTwins(std::string_view after_device_id,
                                                         std::size_t limit) {
  return read<std::vector<TwinRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<TwinRecord>> {
        Result<PgResult> result =
            connection.query(kListTwins, PgParams().add(after_device_id).add(sqlLimit(limit)));
        if (!result) return result.status();
        return decodeRows<TwinRecord>(*result, decodeTwinRow<PgRow>);
      });
}

// JobStore

Status PostgresStore::createJob(const JobRecord& job) {
  PgParams params = jobParams(job);
  return writeStatus([&](PgConnection& connection) -> Status {
    Result<PgResult> inserted = connection.query(kInsertJob, params);
    if (!inserted) return inserted.status();
    if (inserted->affectedRows() == 0) {
      return Status(ErrorCode::JobAlreadyExists, "job '" + job.job_id + "' already exists");
    }
    return Status::ok();
  });
}

Result<JobRecord> PostgresStore::getJob(std::string_view job_id) {
  return read<JobRecord>(
      [&](PgConnection& connection) { return loadJob(connection, job_id, false); });
}

// Reads the job locked, applies `mutate` and writes the result, inside the caller's
// transaction.
static Result<JobRecord> mutateJob(PgConnection& connection, std::string_view job_id,
                                   const JobMutation& mutate) {
  Result<JobRecord> current = loadJob(connection, job_id, true);
  if (!current) return current;
  Result<JobRecord> next = mutate(*current);
  if (!next) return next;
  if (next->job_id != job_id) {
    return Status(ErrorCode::ServerError, "a job mutation must not change the job id");
  }
  IOTHUB_RETURN_IF_ERROR(connection.query(kUpdateJob, jobParams(*next)).status());
  return next;
}

Result<JobRecord> PostgresStore::updateJob(std::string_view job_id, JobMutation mutate) {
  return write<JobRecord>([&](PgConnection& connection) -> Result<JobRecord> {
    return mutateJob(connection, job_id, mutate);
  });
}

Result<std::vector<JobRecord>> PostgresStore::listJobs(const JobFilter& filter,
                                                       std::string_view after_job_id,
                                                       std::size_t limit) {
  return read<std::vector<JobRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<JobRecord>> {
        PgParams params;
        if (filter.type) params.add(*filter.type);
        if (filter.status) params.add(*filter.status);
        const bool after = !after_job_id.empty();
        if (after) {
          Result<PgResult> position = connection.query(kJobPosition, PgParams().add(after_job_id));
          if (!position) return position.status();
          if (position->rows() == 0) return jobNotFound(after_job_id);
          PgRow row = position->row(0);
          params.add(row.int64(0)).add(after_job_id);
          IOTHUB_RETURN_IF_ERROR(row.status());
        }
        params.add(sqlLimit(limit));
        Result<PgResult> result = connection.query(
            kListJobs[filter.type ? 1 : 0][filter.status ? 1 : 0][after ? 1 : 0], params);
        if (!result) return result.status();
        return decodeRows<JobRecord>(*result, decodeJobRow<PgRow>);
      });
}

Result<std::vector<JobRecord>> PostgresStore::jobsWithStatus(
    const std::vector<std::string>& statuses) {
  PgArrayBuilder array;
  for (const std::string& status : statuses) array.add(status);
  PgParams params;
  params.add(std::move(array).finish());
  return read<std::vector<JobRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<JobRecord>> {
        Result<PgResult> result = connection.query(kJobsWithStatus, params);
        if (!result) return result.status();
        return decodeRows<JobRecord>(*result, decodeJobRow<PgRow>);
      });
}

Result<std::vector<ClaimedJob>> PostgresStore::claimJobs(std::string_view owner, SystemTime due_by,
                                                         std::chrono::milliseconds ttl,
                                                         std::size_t limit) {
  PgParams params;
  params.add(owner).add(toNanoseconds(due_by)).add(ttlNanoseconds(ttl)).add(sqlLimit(limit));
  return write<std::vector<ClaimedJob>>(
      [&](PgConnection& connection) -> Result<std::vector<ClaimedJob>> {
        Result<PgResult> claimed = connection.query(kClaimJobs, params);
        if (!claimed) return claimed.status();
        std::vector<ClaimedJob> jobs;
        for (int i = 0; i < claimed->rows(); ++i) {
          PgRow row = claimed->row(i);
          Result<JobRecord> job = decodeJobRow(row);
          if (!job) return job.status();
          ClaimedJob claim{.job = std::move(*job), .lease = {}, .cancel_requested = row.flag(8)};
          claim.lease = JobLease{claim.job.job_id, row.int64(7)};
          IOTHUB_RETURN_IF_ERROR(row.status());
          jobs.push_back(std::move(claim));
        }
        // RETURNING keeps no order.
        std::sort(jobs.begin(), jobs.end(), [](const ClaimedJob& a, const ClaimedJob& b) {
          return claimOrder(a.job) < claimOrder(b.job);
        });
        return jobs;
      });
}

Result<std::vector<JobLeaseRenewal>> PostgresStore::renewJobLeases(
    const std::vector<JobLease>& leases, std::chrono::milliseconds ttl) {
  if (leases.empty()) return std::vector<JobLeaseRenewal>{};
  PgArrayBuilder ids, epochs;
  for (const JobLease& lease : leases) {
    ids.add(lease.job_id);
    epochs.add(lease.epoch);
  }
  PgParams params;
  params.add(std::move(ids).finish()).add(std::move(epochs).finish()).add(ttlNanoseconds(ttl));
  return write<std::vector<JobLeaseRenewal>>(
      [&](PgConnection& connection) -> Result<std::vector<JobLeaseRenewal>> {
        Result<PgResult> renewed = connection.query(kRenewJobLeases, params);
        if (!renewed) return renewed.status();
        std::unordered_map<std::string, bool> cancel_requested;
        for (int i = 0; i < renewed->rows(); ++i) {
          PgRow row = renewed->row(i);
          cancel_requested[row.text(0)] = row.flag(1);
          IOTHUB_RETURN_IF_ERROR(row.status());
        }
        std::vector<JobLeaseRenewal> renewals;
        for (const JobLease& lease : leases) {
          auto it = cancel_requested.find(lease.job_id);
          renewals.push_back(
              JobLeaseRenewal{.job_id = lease.job_id,
                              .held = it != cancel_requested.end(),
                              .cancel_requested = it != cancel_requested.end() && it->second});
        }
        return renewals;
      });
}

Status PostgresStore::releaseJobLease(const JobLease& lease) {
  PgParams params;
  params.add(lease.job_id).add(lease.epoch);
  return writeStatus([&](PgConnection& connection) -> Status {
    return connection.query(kReleaseJobLease, params).status();
  });
}

Result<std::size_t> PostgresStore::releaseJobLeasesOf(std::string_view owner) {
  return write<std::size_t>([&](PgConnection& connection) -> Result<std::size_t> {
    Result<PgResult> released = connection.query(kReleaseJobLeasesOf, PgParams().add(owner));
    if (!released) return released.status();
    return static_cast<std::size_t>(released->affectedRows());
  });
}

Result<JobRecord> PostgresStore::updateLeasedJob(const JobLease& lease, JobMutation mutate) {
  return write<JobRecord>([&](PgConnection& connection) -> Result<JobRecord> {
    IOTHUB_RETURN_IF_ERROR(checkJobLease(connection, lease));
    return mutateJob(connection, lease.job_id, mutate);
  });
}

Status PostgresStore::putLeasedDeviceJobs(const JobLease& lease,
                                          const std::vector<DeviceJobRecord>& rows) {
  for (const DeviceJobRecord& row : rows) {
    if (row.job_id != lease.job_id) {
      return Status(
          ErrorCode::ArgumentInvalid,
          "a row of job '" + row.job_id + "' under the lease of job '" + lease.job_id + "'");
    }
  }
  std::vector<PgParams> statements;
  for (std::size_t begin = 0; begin < rows.size(); begin += kDeviceJobsPerStatement) {
    statements.push_back(
        deviceJobParams(rows, begin, std::min(rows.size(), begin + kDeviceJobsPerStatement)));
  }
  return writeStatus([&](PgConnection& connection) -> Status {
    IOTHUB_RETURN_IF_ERROR(checkJobLease(connection, lease));
    for (const PgParams& params : statements) {
      IOTHUB_RETURN_IF_ERROR(connection.query(kPutDeviceJobs, params).status());
    }
    return Status::ok();
  });
}

Status PostgresStore::requestJobCancel(std::string_view job_id) {
  return writeStatus([&](PgConnection& connection) -> Status {
    Result<PgResult> requested = connection.query(kRequestJobCancel, PgParams().add(job_id));
    if (!requested) return requested.status();
    if (requested->affectedRows() > 0) return Status::ok();
    Result<PgResult> exists = connection.query(kJobExists, PgParams().add(job_id));
    if (!exists) return exists.status();
    return exists->rows() > 0 ? Status::ok() : jobNotFound(job_id);
  });
}

// DeviceJobStore

Status PostgresStore::putDeviceJobs(const std::vector<DeviceJobRecord>& rows) {
  if (rows.empty()) return Status::ok();
  // Encoded before queueing: the writer thread, which every write waits for, only sends.
  std::vector<PgParams> statements;
  for (std::size_t begin = 0; begin < rows.size(); begin += kDeviceJobsPerStatement) {
    statements.push_back(
        deviceJobParams(rows, begin, std::min(rows.size(), begin + kDeviceJobsPerStatement)));
  }
  return writeStatus([&](PgConnection& connection) -> Status {
    for (const PgParams& params : statements) {
      IOTHUB_RETURN_IF_ERROR(connection.query(kPutDeviceJobs, params).status());
    }
    return Status::ok();
  });
}

Result<std::vector<DeviceJobRecord>> PostgresStore::listDeviceJobs(
    std::string_view job_id, std::optional<std::string_view> status,
    std::string_view after_device_id, std::size_t limit) {
  PgParams params;
  params.add(job_id).add(after_device_id).add(sqlLimit(limit));
  if (status) params.add(*status);
  return read<std::vector<DeviceJobRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<DeviceJobRecord>> {
        Result<PgResult> result =
            connection.query(status ? kListDeviceJobsWithStatus : kListDeviceJobs, params);
        if (!result) return result.status();
        return decodeRows<DeviceJobRecord>(*result, decodeDeviceJobRow<PgRow>);
      });
}

Result<std::vector<DeviceJobRecord>> PostgresStore::listAllDeviceJobs(
    std::string_view after_job_id, std::string_view after_device_id, std::size_t limit) {
  PgParams params;
  params.add(after_job_id).add(after_device_id).add(sqlLimit(limit));
  return read<std::vector<DeviceJobRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<DeviceJobRecord>> {
        Result<PgResult> result = connection.query(kListAllDeviceJobs, params);
        if (!result) return result.status();
        return decodeRows<DeviceJobRecord>(*result, decodeDeviceJobRow<PgRow>);
      });
}

// AccessPolicyStore

Result<std::vector<AccessPolicyRecord>> PostgresStore::listPolicies() {
  return read<std::vector<AccessPolicyRecord>>(
      [](PgConnection& connection) -> Result<std::vector<AccessPolicyRecord>> {
        Result<PgResult> result = connection.query(kListPolicies, PgParams());
        if (!result) return result.status();
        return decodeRows<AccessPolicyRecord>(*result, decodePolicyRow<PgRow>);
      });
}

Status PostgresStore::insertMissingPolicies(const std::vector<AccessPolicyRecord>& policies) {
  if (policies.empty()) return Status::ok();
  PgArrayBuilder names, primary_keys, secondary_keys, permissions;
  for (const AccessPolicyRecord& policy : policies) {
    names.add(policy.name);
    primary_keys.add(policy.primary_key);
    secondary_keys.add(policy.secondary_key);
    permissions.add(std::int64_t{policy.permissions});
  }
  PgParams params;
  params.add(std::move(names).finish())
      .add(std::move(primary_keys).finish())
      .add(std::move(secondary_keys).finish())
      .add(std::move(permissions).finish());
  return writeStatus([&](PgConnection& connection) -> Status {
    return connection.query(kInsertPolicies, params).status();
  });
}

// MqttSessionStore

Result<std::optional<MqttSessionRecord>> PostgresStore::getSession(std::string_view client_id) {
  return read<std::optional<MqttSessionRecord>>(
      [&](PgConnection& connection) -> Result<std::optional<MqttSessionRecord>> {
        Result<PgResult> result = connection.query(kGetSession, PgParams().add(client_id));
        if (!result) return result.status();
        if (result->rows() == 0) return std::optional<MqttSessionRecord>{};
        Result<std::vector<MqttSubscriptionRecord>> subscriptions =
            decodeSubscriptions(result->row(0).text(0));
        if (!subscriptions) return subscriptions.status();
        return std::optional<MqttSessionRecord>(
            MqttSessionRecord{std::string(client_id), std::move(subscriptions).value()});
      });
}

Status PostgresStore::putSession(const MqttSessionRecord& session) {
  PgParams params;
  params.add(session.client_id).add(encodeSubscriptions(session.subscriptions));
  const Status not_found(ErrorCode::DeviceNotFound, "no device '" + session.client_id + "'");
  return writeStatus([&](PgConnection& connection) -> Status {
    Result<PgResult> put = connection.query(kPutSession, params);
    if (!put) {
      return connection.lastSqlState() == kPgForeignKeyViolation ? not_found : put.status();
    }
    return put->affectedRows() == 0 ? not_found : Status::ok();
  });
}

Status PostgresStore::deleteSession(std::string_view client_id) {
  return writeStatus([&](PgConnection& connection) -> Status {
    return connection.query(kDeleteSession, PgParams().add(client_id)).status();
  });
}

// --- cloud-to-device messages (C2dStore) ---
//
// Every write to a device's queue first locks the device's row (FOR NO KEY UPDATE, which
// does not block foreign-key checks of other tables). That serializes the writes to one
// queue across every process sharing the database: a second lockC2d waits for the first
// one's transaction, and its next statement (READ COMMITTED: a fresh snapshot) sees the lock
// the first one took, so no message is locked twice. It also makes the queue depth check
// of enqueueC2d exact, and keeps the device's message count in step with its queue.
// expireC2d, which touches several devices, locks their rows in id order, as one lockC2d
// or enqueueC2d locks one; nothing locks a message row before its device's row.

namespace {

#define IOTHUB_C2D_COLUMNS                                                                     \
  "device_id, sequence, enqueued_time, expiry_time, lock_token, locked_until, delivery_count," \
  " document, encode(body, 'hex')"

constexpr std::string_view kC2dLockDevice =
    "SELECT 1 FROM devices WHERE device_id = $1 FOR NO KEY UPDATE";
constexpr std::string_view kC2dLockDevices =
    "SELECT device_id FROM devices WHERE device_id = ANY ($1::text[])"
    " ORDER BY device_id FOR NO KEY UPDATE";
constexpr std::string_view kC2dDepth = "SELECT count(*) FROM c2d_messages WHERE device_id = $1";
// The body travels as hex: libpq's text parameters cannot carry NUL bytes.
constexpr std::string_view kInsertC2d =
    "INSERT INTO c2d_messages (device_id, enqueued_time, expiry_time, lock_token, locked_until,"
    " delivery_count, document, body) VALUES ($1, $2, $3, '', 0, 0, $4, decode($5, 'hex'))"
    " RETURNING sequence";
// The counts are recounted rather than adjusted, so they cannot drift from the queues
// whatever value a device row was created or updated with.
constexpr std::string_view kSyncC2dCounts =
    "UPDATE devices d SET cloud_to_device_message_count ="
    " (SELECT count(*) FROM c2d_messages m WHERE m.device_id = d.device_id)"
    " WHERE d.device_id = ANY ($1::text[])";
constexpr std::string_view kC2dQueuePage = "SELECT " IOTHUB_C2D_COLUMNS
                                           " FROM c2d_messages WHERE device_id = $1"
                                           " AND sequence > $2 ORDER BY sequence LIMIT $3";
constexpr std::string_view kListC2d = "SELECT " IOTHUB_C2D_COLUMNS
                                      " FROM c2d_messages WHERE device_id = $1"
                                      " ORDER BY sequence LIMIT $2";
constexpr std::string_view kLockC2d =
    "UPDATE c2d_messages SET lock_token = $2, locked_until = $3,"
    " delivery_count = delivery_count + 1 WHERE sequence = $1";
constexpr std::string_view kC2dByLockToken = "SELECT " IOTHUB_C2D_COLUMNS
                                             " FROM c2d_messages WHERE device_id = $1"
                                             " AND lock_token = $2";
constexpr std::string_view kAbandonC2d =
    "UPDATE c2d_messages SET lock_token = '', locked_until = 0 WHERE sequence = $1";
constexpr std::string_view kDeleteC2d =
    "DELETE FROM c2d_messages WHERE sequence = ANY ($1::bigint[])";
constexpr std::string_view kDeviceC2d = "SELECT " IOTHUB_C2D_COLUMNS
                                        " FROM c2d_messages WHERE device_id = $1"
                                        " ORDER BY sequence";
constexpr std::string_view kExpiringDevices =
    "SELECT DISTINCT device_id FROM (SELECT device_id FROM c2d_messages"
    " WHERE expiry_time <= $1 ORDER BY expiry_time, sequence LIMIT $2) e";
// Only of the devices locked before: another process may have expired more meanwhile.
constexpr std::string_view kExpiredC2d = "SELECT " IOTHUB_C2D_COLUMNS
                                         " FROM c2d_messages WHERE expiry_time <= $1"
                                         " AND device_id = ANY ($2::text[])"
                                         " ORDER BY expiry_time, sequence LIMIT $3";

#undef IOTHUB_C2D_COLUMNS

// The records keep their order: identities are drawn in the order the rows are inserted.
constexpr std::string_view kInsertC2dFeedback =
    "INSERT INTO c2d_feedback (enqueued_time, locked_until, document)"
    " SELECT t, 0, d FROM unnest($1::bigint[], $2::json[]) WITH ORDINALITY AS f (t, d, n)"
    " ORDER BY n";
// SKIP LOCKED: records another receiver is locking right now are left to it; the outer
// UPDATE checks the lock again on the row version it locked.
constexpr std::string_view kLockC2dFeedback =
    "UPDATE c2d_feedback SET locked_until = $2 WHERE sequence IN (SELECT sequence FROM"
    " c2d_feedback WHERE locked_until <= $1 ORDER BY sequence LIMIT $3 FOR UPDATE SKIP LOCKED)"
    " AND locked_until <= $1 RETURNING sequence, enqueued_time, document";
constexpr std::string_view kDeleteC2dFeedback =
    "DELETE FROM c2d_feedback WHERE sequence = ANY ($1::bigint[])";
constexpr std::string_view kExpireC2dFeedback =
    "DELETE FROM c2d_feedback WHERE sequence IN (SELECT sequence FROM c2d_feedback"
    " WHERE enqueued_time < $1 ORDER BY enqueued_time LIMIT $2 FOR UPDATE SKIP LOCKED)";

// lockC2d reads a device's queue this many messages at a time.
constexpr std::int64_t kC2dPage = 32;

// The inverse of hexEncode (common/encoding.hpp), which writes the bodies' hex.
Result<std::string> fromHex(std::string_view hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return storeCorruption("a C2D message body is not hex");
  std::string bytes;
  bytes.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int high = digit(hex[i]);
    const int low = digit(hex[i + 1]);
    if (high < 0 || low < 0) return storeCorruption("a C2D message body is not hex");
    bytes += static_cast<char>((high << 4) | low);
  }
  return bytes;
}

Result<C2dMessageRecord> decodeC2dRow(const PgRow& row) {
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
  Result<std::string> body = fromHex(row.text(8));
  if (!body) return body.status();
  message.body = std::move(body).value();
  return message;
}

Result<C2dFeedbackRecord> decodeC2dFeedbackRow(const PgRow& row) {
  C2dFeedbackRecord record;
  record.sequence = row.int64(0);
  record.enqueued_time = fromNanoseconds(row.int64(1));
  Result<json::object> document = decodeStoredObject(row.text(2), "c2d_feedback.document");
  if (!document) return document.status();
  record.document = std::move(document).value();
  return record;
}

Result<std::vector<C2dMessageRecord>> queryC2d(PgConnection& connection, std::string_view sql,
                                               const PgParams& params) {
  Result<PgResult> result = connection.query(sql, params);
  if (!result) return result.status();
  return decodeRows<C2dMessageRecord>(*result, decodeC2dRow);
}

// Inside a write transaction, with the devices' rows locked: true when the device exists.
Result<bool> lockC2dDevice(PgConnection& connection, std::string_view device_id) {
  Result<PgResult> locked = connection.query(kC2dLockDevice, PgParams().add(device_id));
  if (!locked) return locked.status();
  return locked->rows() == 1;
}

Status syncC2dCounts(PgConnection& connection, const std::vector<std::string>& device_ids) {
  PgArrayBuilder ids;
  for (const std::string& id : device_ids) ids.add(id);
  return connection.query(kSyncC2dCounts, PgParams().add(std::move(ids).finish())).status();
}

// A message leaving its queue, and why.
struct C2dLeaving {
  const C2dMessageRecord* message;
  C2dRemoval removal;
};

// Inside a write transaction: deletes the messages and stores, in their order, the
// feedback records `feedback` makes of them. The caller brings the counts up to date.
Status removeC2d(PgConnection& connection, const std::vector<C2dLeaving>& leaving,
                 const C2dFeedbackRule& feedback) {
  if (leaving.empty()) return Status::ok();
  PgArrayBuilder sequences, times, documents;
  bool any_feedback = false;
  for (const C2dLeaving& item : leaving) {
    sequences.add(item.message->sequence);
    if (!feedback) continue;
    std::optional<C2dFeedbackRecord> record = feedback(*item.message, item.removal);
    if (!record) continue;
    times.add(toNanoseconds(record->enqueued_time));
    documents.add(json::serialize(record->document));
    any_feedback = true;
  }
  IOTHUB_RETURN_IF_ERROR(
      connection.query(kDeleteC2d, PgParams().add(std::move(sequences).finish())).status());
  if (!any_feedback) return Status::ok();
  PgParams params;
  params.add(std::move(times).finish()).add(std::move(documents).finish());
  return connection.query(kInsertC2dFeedback, params).status();
}

Status c2dLockLost(std::string_view device_id) {
  return Status(ErrorCode::DeviceMessageLockLost,
                "no message of device '" + std::string(device_id) +
                    "' is locked under that lock token (it was settled, or its lock expired)");
}

}  // namespace

Result<std::int64_t> PostgresStore::enqueueC2d(const C2dMessageRecord& message,
                                               std::size_t max_depth) {
  // Encoded before queueing: the writer thread, which every write waits for, only sends.
  PgParams insert_params;
  insert_params.add(message.device_id)
      .add(toNanoseconds(message.enqueued_time))
      .add(toNanoseconds(message.expiry_time))
      .add(json::serialize(message.document))
      .add(hexEncode(message.body));
  return write<std::int64_t>([&](PgConnection& connection) -> Result<std::int64_t> {
    Result<bool> exists = lockC2dDevice(connection, message.device_id);
    if (!exists) return exists.status();
    if (!*exists) return deviceNotFound(message.device_id);

    Result<PgResult> depth = connection.query(kC2dDepth, PgParams().add(message.device_id));
    if (!depth) return depth.status();
    PgRow depth_row = depth->row(0);
    const std::int64_t held = depth_row.int64(0);
    IOTHUB_RETURN_IF_ERROR(depth_row.status());
    if (static_cast<std::uint64_t>(held) >= max_depth) {
      return Status(ErrorCode::DeviceMaximumQueueDepthExceeded,
                    "the cloud-to-device queue of device '" + message.device_id +
                        "' already holds " + std::to_string(max_depth) + " messages");
    }

    Result<PgResult> inserted = connection.query(kInsertC2d, insert_params);
    if (!inserted) return inserted.status();
    if (inserted->rows() != 1) {
      return Status(ErrorCode::ServerError, "the insert returned no sequence");
    }
    PgRow row = inserted->row(0);
    const std::int64_t sequence = row.int64(0);
    IOTHUB_RETURN_IF_ERROR(row.status());
    IOTHUB_RETURN_IF_ERROR(syncC2dCounts(connection, {message.device_id}));
    return sequence;
  });
}

Result<std::optional<C2dMessageRecord>> PostgresStore::lockC2d(std::string_view device_id,
                                                               const C2dLock& lock,
                                                               const C2dFeedbackRule& feedback) {
  using Locked = std::optional<C2dMessageRecord>;
  return write<Locked>([&](PgConnection& connection) -> Result<Locked> {
    Result<bool> exists = lockC2dDevice(connection, device_id);
    if (!exists) return exists.status();
    if (!*exists) return Locked();

    const std::int64_t now = toNanoseconds(lock.now);
    std::vector<C2dMessageRecord> passed;  // removed on the way, with their reasons below
    std::vector<C2dRemoval> reasons;
    std::int64_t after = 0;
    Locked chosen;
    while (!chosen) {
      Result<std::vector<C2dMessageRecord>> page =
          queryC2d(connection, kC2dQueuePage, PgParams().add(device_id).add(after).add(kC2dPage));
      if (!page) return page.status();
      for (C2dMessageRecord& message : *page) {
        after = message.sequence;
        if (toNanoseconds(message.expiry_time) <= now) {
          passed.push_back(std::move(message));
          reasons.push_back(C2dRemoval::Expired);
          continue;
        }
        const bool free = message.lock_token.empty() || toNanoseconds(message.locked_until) <= now;
        if (!free) continue;
        if (message.delivery_count >= lock.max_delivery_count) {
          passed.push_back(std::move(message));
          reasons.push_back(C2dRemoval::DeliveryCountExceeded);
          continue;
        }
        PgParams params;
        params.add(message.sequence).add(lock.token).add(toNanoseconds(lock.until));
        IOTHUB_RETURN_IF_ERROR(connection.query(kLockC2d, params).status());
        message.lock_token = lock.token;
        message.locked_until = lock.until;
        message.delivery_count += 1;
        chosen = std::move(message);
        break;
      }
      if (static_cast<std::int64_t>(page->size()) < kC2dPage) break;
    }
    if (!passed.empty()) {
      std::vector<C2dLeaving> leaving;
      for (std::size_t i = 0; i < passed.size(); ++i) leaving.push_back({&passed[i], reasons[i]});
      IOTHUB_RETURN_IF_ERROR(removeC2d(connection, leaving, feedback));
      IOTHUB_RETURN_IF_ERROR(syncC2dCounts(connection, {std::string(device_id)}));
    }
    return chosen;
  });
}

Result<C2dMessageRecord> PostgresStore::settleC2d(std::string_view device_id,
                                                  std::string_view lock_token,
                                                  C2dSettlement settlement, SystemTime now,
                                                  const C2dFeedbackRule& feedback) {
  // '' marks a free message, so it never names a lock.
  if (lock_token.empty()) return c2dLockLost(device_id);
  return write<C2dMessageRecord>([&](PgConnection& connection) -> Result<C2dMessageRecord> {
    Result<bool> exists = lockC2dDevice(connection, device_id);
    if (!exists) return exists.status();
    if (!*exists) return c2dLockLost(device_id);
    Result<std::vector<C2dMessageRecord>> found =
        queryC2d(connection, kC2dByLockToken, PgParams().add(device_id).add(lock_token));
    if (!found) return found.status();
    if (found->empty() || found->front().locked_until <= now) return c2dLockLost(device_id);
    const C2dMessageRecord& message = found->front();
    if (settlement == C2dSettlement::Abandon) {
      IOTHUB_RETURN_IF_ERROR(
          connection.query(kAbandonC2d, PgParams().add(message.sequence)).status());
      return message;
    }
    const C2dRemoval removal =
        settlement == C2dSettlement::Complete ? C2dRemoval::Completed : C2dRemoval::Rejected;
    IOTHUB_RETURN_IF_ERROR(removeC2d(connection, {{&message, removal}}, feedback));
    IOTHUB_RETURN_IF_ERROR(syncC2dCounts(connection, {std::string(device_id)}));
    return message;
  });
}

Result<std::size_t> PostgresStore::purgeC2d(std::string_view device_id,
                                            const C2dFeedbackRule& feedback) {
  return write<std::size_t>([&](PgConnection& connection) -> Result<std::size_t> {
    Result<bool> exists = lockC2dDevice(connection, device_id);
    if (!exists) return exists.status();
    if (!*exists) return deviceNotFound(device_id);
    Result<std::vector<C2dMessageRecord>> queue =
        queryC2d(connection, kDeviceC2d, PgParams().add(device_id));
    if (!queue) return queue.status();
    std::vector<C2dLeaving> leaving;
    for (const C2dMessageRecord& message : *queue)
      leaving.push_back({&message, C2dRemoval::Purged});
    IOTHUB_RETURN_IF_ERROR(removeC2d(connection, leaving, feedback));
    IOTHUB_RETURN_IF_ERROR(syncC2dCounts(connection, {std::string(device_id)}));
    return queue->size();
  });
}

Result<std::size_t> PostgresStore::expireC2d(SystemTime now, std::size_t limit,
                                             const C2dFeedbackRule& feedback) {
  if (limit == 0) return std::size_t{0};
  const std::int64_t now_ns = toNanoseconds(now);
  return write<std::size_t>([&](PgConnection& connection) -> Result<std::size_t> {
    Result<PgResult> candidates =
        connection.query(kExpiringDevices, PgParams().add(now_ns).add(sqlLimit(limit)));
    if (!candidates) return candidates.status();
    if (candidates->rows() == 0) return std::size_t{0};
    PgArrayBuilder candidate_ids;
    for (int i = 0; i < candidates->rows(); ++i) candidate_ids.add(candidates->row(i).text(0));
    Result<PgResult> locked =
        connection.query(kC2dLockDevices, PgParams().add(std::move(candidate_ids).finish()));
    if (!locked) return locked.status();
    std::vector<std::string> devices;
    PgArrayBuilder device_ids;
    for (int i = 0; i < locked->rows(); ++i) {
      devices.push_back(locked->row(i).text(0));
      device_ids.add(devices.back());
    }
    PgParams params;
    params.add(now_ns).add(std::move(device_ids).finish()).add(sqlLimit(limit));
    Result<std::vector<C2dMessageRecord>> expired = queryC2d(connection, kExpiredC2d, params);
    if (!expired) return expired.status();
    std::vector<C2dLeaving> leaving;
    for (const C2dMessageRecord& message : *expired) {
      leaving.push_back({&message, C2dRemoval::Expired});
    }
    IOTHUB_RETURN_IF_ERROR(removeC2d(connection, leaving, feedback));
    IOTHUB_RETURN_IF_ERROR(syncC2dCounts(connection, devices));
    return expired->size();
  });
}

Result<std::vector<C2dMessageRecord>> PostgresStore::listC2d(std::string_view device_id,
                                                             std::size_t limit) {
  PgParams params;
  params.add(device_id).add(sqlLimit(limit));
  return read<std::vector<C2dMessageRecord>>(
      [&](PgConnection& connection) { return queryC2d(connection, kListC2d, params); });
}

Result<std::vector<C2dFeedbackRecord>> PostgresStore::lockC2dFeedback(SystemTime now,
                                                                      SystemTime until,
                                                                      std::size_t limit) {
  if (limit == 0) return std::vector<C2dFeedbackRecord>{};
  PgParams params;
  params.add(toNanoseconds(now)).add(toNanoseconds(until)).add(sqlLimit(limit));
  Result<std::vector<C2dFeedbackRecord>> locked = write<std::vector<C2dFeedbackRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<C2dFeedbackRecord>> {
        Result<PgResult> result = connection.query(kLockC2dFeedback, params);
        if (!result) return result.status();
        return decodeRows<C2dFeedbackRecord>(*result, decodeC2dFeedbackRow);
      });
  if (!locked) return locked;
  // RETURNING gives the rows in no promised order.
  std::sort(locked->begin(), locked->end(),
            [](const C2dFeedbackRecord& a, const C2dFeedbackRecord& b) {
              return a.sequence < b.sequence;
            });
  return locked;
}

Status PostgresStore::deleteC2dFeedback(const std::vector<std::int64_t>& sequences) {
  if (sequences.empty()) return Status::ok();
  PgArrayBuilder array;
  for (std::int64_t sequence : sequences) array.add(sequence);
  PgParams params;
  params.add(std::move(array).finish());
  return writeStatus([&](PgConnection& connection) -> Status {
    return connection.query(kDeleteC2dFeedback, params).status();
  });
}

Result<std::size_t> PostgresStore::expireC2dFeedback(SystemTime enqueued_before,
                                                     std::size_t limit) {
  if (limit == 0) return std::size_t{0};
  PgParams params;
  params.add(toNanoseconds(enqueued_before)).add(sqlLimit(limit));
  return write<std::size_t>([&](PgConnection& connection) -> Result<std::size_t> {
    Result<PgResult> expired = connection.query(kExpireC2dFeedback, params);
    if (!expired) return expired.status();
    return static_cast<std::size_t>(expired->affectedRows());
  });
}

// --- the telemetry log (TelemetryStore) ---
//
// An append draws its sequences from its partitions' rows (INSERT ... ON CONFLICT DO
// UPDATE) and inserts its records in the same transaction, under those rows' locks.
// Appends to one partition from every process therefore commit one after the other, in
// sequence order (a transaction leaves the running set before it releases its locks), so
// a reader's snapshot always holds a gapless prefix of each partition.
//
// Every append and trim first locks ALL partition rows, in partition order. The writer
// batches many appends into one transaction, each touching its own partitions; locking
// only those would take them in batch order, and two processes' batches would deadlock
// (p0 then p1 against p1 then p0) all the time. This way a transaction takes every
// partition lock in its first telemetry operation, in one order, and the later ones find
// them held. Appends of different processes thus serialize per transaction rather than
// per partition; a batch of any size touches most partitions anyway. (A partition's first
// row is inserted by the upsert, unlocked before: that happens once per partition.)

namespace {

// Reserves sequences: per partition (sorted), how many, their bytes and the last record's
// time. Returns each partition's next_sequence after the reservation.
constexpr std::string_view kReserveTelemetry =
    "INSERT INTO telemetry_partitions AS p (partition_id, next_sequence, bytes,"
    " last_enqueued_time) SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bigint[],"
    " $4::bigint[]) AS u (partition_id, n, b, t) ORDER BY partition_id"
    " ON CONFLICT (partition_id) DO UPDATE SET"
    " next_sequence = p.next_sequence + excluded.next_sequence, bytes = p.bytes + excluded.bytes,"
    " last_enqueued_time = excluded.last_enqueued_time RETURNING partition_id, next_sequence";
// The bodies travel as hex, as for C2D.
constexpr std::string_view kInsertTelemetry =
    "INSERT INTO telemetry (partition_id, sequence, enqueued_time, device_id, size, document,"
    " body) SELECT p, s, t, d, z, j, decode(h, 'hex') FROM unnest($1::integer[], $2::bigint[],"
    " $3::bigint[], $4::text[], $5::bigint[], $6::json[], $7::text[]) AS u (p, s, t, d, z, j, h)";
// At most $3 records from $2 on, cut once the bytes of the ones before reach $4 (the first
// always stays); bodies are encoded for the rows returned only.
constexpr std::string_view kReadTelemetry =
    "SELECT partition_id, sequence, enqueued_time, device_id, document, encode(body, 'hex')"
    " FROM (SELECT *, sum(size) OVER w - size AS before, row_number() OVER w AS n FROM"
    " (SELECT partition_id, sequence, enqueued_time, device_id, size, document, body"
    " FROM telemetry WHERE partition_id = $1 AND sequence >= $2 ORDER BY sequence LIMIT $3) l"
    " WINDOW w AS (ORDER BY sequence)) r WHERE before < $4 OR n = 1 ORDER BY sequence";
// One statement, so one snapshot: the first retained record when it is already late
// enough, else the smallest sequence among the records enqueued after $2 (times do not
// grow with sequences), else next_sequence.
constexpr std::string_view kTelemetrySequenceAfter =
    "SELECT coalesce("
    "(SELECT sequence FROM (SELECT sequence, enqueued_time FROM telemetry"
    " WHERE partition_id = $1 ORDER BY sequence LIMIT 1) f WHERE enqueued_time > $2),"
    " (SELECT min(sequence) FROM telemetry WHERE partition_id = $1 AND enqueued_time > $2),"
    " (SELECT next_sequence FROM telemetry_partitions WHERE partition_id = $1), 0)";
constexpr std::string_view kTelemetryPartition =
    "SELECT p.next_sequence, p.bytes, p.last_enqueued_time,"
    " coalesce((SELECT min(sequence) FROM telemetry t WHERE t.partition_id = $1),"
    " p.next_sequence) FROM telemetry_partitions p WHERE p.partition_id = $1";
constexpr std::string_view kLockTelemetryPartitions =
    "SELECT partition_id FROM telemetry_partitions ORDER BY partition_id FOR UPDATE";
constexpr std::string_view kTelemetryPartitionBytes =
    "SELECT bytes FROM telemetry_partitions WHERE partition_id = $1";
constexpr std::string_view kTelemetryHead =
    "SELECT sequence, enqueued_time, size FROM telemetry WHERE partition_id = $1"
    " ORDER BY sequence LIMIT $2";
constexpr std::string_view kTrimTelemetry =
    "WITH d AS (DELETE FROM telemetry WHERE partition_id = $1 AND sequence <= $2)"
    " UPDATE telemetry_partitions SET bytes = bytes - $3 WHERE partition_id = $1";

Status telemetryPartitionInvalid(std::int32_t partition) {
  return Status(ErrorCode::ArgumentInvalid,
                "telemetry partition " + std::to_string(partition) + " is negative");
}

// What one append adds to one partition.
struct TelemetryGroup {
  std::int64_t count = 0;
  std::int64_t bytes = 0;
  std::int64_t last_enqueued_time = 0;  // of the group's last record
};

Result<TelemetryRecord> decodeTelemetryRow(const PgRow& row) {
  TelemetryRecord record;
  record.partition = static_cast<std::int32_t>(row.int64(0));
  record.sequence = row.int64(1);
  record.enqueued_time = fromNanoseconds(row.int64(2));
  record.device_id = row.text(3);
  Result<json::object> document = decodeStoredObject(row.text(4), "telemetry.document");
  if (!document) return document.status();
  record.document = std::move(document).value();
  Result<std::string> body = fromHex(row.text(5));
  if (!body) return body.status();
  record.body = std::move(body).value();
  return record;
}

}  // namespace

Result<std::vector<std::int64_t>> PostgresStore::appendTelemetry(
    const std::vector<TelemetryRecord>& records) {
  // Encoded before queueing: the writer thread, which every write waits for, only sends.
  std::vector<std::string> documents;
  documents.reserve(records.size());
  std::map<std::int32_t, TelemetryGroup> groups;
  PgArrayBuilder times, device_ids, sizes, document_array, bodies;
  for (const TelemetryRecord& record : records) {
    if (record.partition < 0) return telemetryPartitionInvalid(record.partition);
    documents.push_back(json::serialize(record.document));
    const auto size = static_cast<std::int64_t>(record.body.size() + documents.back().size());
    TelemetryGroup& group = groups[record.partition];
    group.count += 1;
    group.bytes += size;
    group.last_enqueued_time = toNanoseconds(record.enqueued_time);
    times.add(toNanoseconds(record.enqueued_time));
    device_ids.add(record.device_id);
    sizes.add(size);
    document_array.add(documents.back());
    bodies.add(hexEncode(record.body));
  }
  if (records.empty()) return std::vector<std::int64_t>{};
  PgArrayBuilder partitions, counts, group_bytes, last_times;
  for (const auto& [partition, group] : groups) {
    partitions.add(std::int64_t{partition});
    counts.add(group.count);
    group_bytes.add(group.bytes);
    last_times.add(group.last_enqueued_time);
  }
  PgParams reserve_params;
  reserve_params.add(std::move(partitions).finish())
      .add(std::move(counts).finish())
      .add(std::move(group_bytes).finish())
      .add(std::move(last_times).finish());
  const std::string times_text = std::move(times).finish();
  const std::string device_ids_text = std::move(device_ids).finish();
  const std::string sizes_text = std::move(sizes).finish();
  const std::string documents_text = std::move(document_array).finish();
  const std::string bodies_text = std::move(bodies).finish();
  return write<std::vector<std::int64_t>>(
      [&](PgConnection& connection) -> Result<std::vector<std::int64_t>> {
        IOTHUB_RETURN_IF_ERROR(connection.query(kLockTelemetryPartitions).status());
        Result<PgResult> reserved = connection.query(kReserveTelemetry, reserve_params);
        if (!reserved) return reserved.status();
        // The next sequence to hand out per partition (a local: the writer may run an
        // operation again after a deadlock).
        std::map<std::int32_t, std::int64_t> next;
        for (int i = 0; i < reserved->rows(); ++i) {
          PgRow row = reserved->row(i);
          const auto partition = static_cast<std::int32_t>(row.int64(0));
          const std::int64_t after = row.int64(1);
          IOTHUB_RETURN_IF_ERROR(row.status());
          auto group = groups.find(partition);
          if (group == groups.end()) {
            return Status(ErrorCode::ServerError,
                          "the partition update returned another partition");
          }
          next[partition] = after - group->second.count;
        }
        if (next.size() != groups.size()) {
          return Status(ErrorCode::ServerError, "the partition update missed a partition");
        }
        PgArrayBuilder record_partitions, sequences_array;
        std::vector<std::int64_t> sequences;
        sequences.reserve(records.size());
        for (const TelemetryRecord& record : records) {
          sequences.push_back(next[record.partition]++);
          record_partitions.add(std::int64_t{record.partition});
          sequences_array.add(sequences.back());
        }
        PgParams insert_params;
        insert_params.add(std::move(record_partitions).finish())
            .add(std::move(sequences_array).finish())
            .add(times_text)
            .add(device_ids_text)
            .add(sizes_text)
            .add(documents_text)
            .add(bodies_text);
        IOTHUB_RETURN_IF_ERROR(connection.query(kInsertTelemetry, insert_params).status());
        return sequences;
      });
}

Result<std::vector<TelemetryRecord>> PostgresStore::readTelemetry(std::int32_t partition,
                                                                  std::int64_t from_sequence,
                                                                  std::size_t limit,
                                                                  std::size_t max_bytes) {
  if (partition < 0) return telemetryPartitionInvalid(partition);
  if (limit == 0) return std::vector<TelemetryRecord>{};
  PgParams params;
  params.add(std::int64_t{partition})
      .add(from_sequence)
      .add(sqlLimit(limit))
      .add(sqlLimit(max_bytes));
  return read<std::vector<TelemetryRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<TelemetryRecord>> {
        Result<PgResult> result = connection.query(kReadTelemetry, params);
        if (!result) return result.status();
        return decodeRows<TelemetryRecord>(*result, decodeTelemetryRow);
      });
}

Result<std::int64_t> PostgresStore::telemetrySequenceAfter(std::int32_t partition, SystemTime t) {
  if (partition < 0) return telemetryPartitionInvalid(partition);
  PgParams params;
  params.add(std::int64_t{partition}).add(toNanoseconds(t));
  return read<std::int64_t>([&](PgConnection& connection) -> Result<std::int64_t> {
    Result<PgResult> result = connection.query(kTelemetrySequenceAfter, params);
    if (!result) return result.status();
    if (result->rows() != 1) return Status(ErrorCode::ServerError, "the position query failed");
    PgRow row = result->row(0);
    const std::int64_t sequence = row.int64(0);
    IOTHUB_RETURN_IF_ERROR(row.status());
    return sequence;
  });
}

Result<TelemetryPartitionInfo> PostgresStore::telemetryPartition(std::int32_t partition) {
  if (partition < 0) return telemetryPartitionInvalid(partition);
  PgParams params;
  params.add(std::int64_t{partition});
  return read<TelemetryPartitionInfo>(
      [&](PgConnection& connection) -> Result<TelemetryPartitionInfo> {
        Result<PgResult> result = connection.query(kTelemetryPartition, params);
        if (!result) return result.status();
        TelemetryPartitionInfo info;
        info.partition = partition;
        if (result->rows() == 0) return info;  // never appended to
        PgRow row = result->row(0);
        info.next_sequence = row.int64(0);
        info.bytes = static_cast<std::uint64_t>(row.int64(1));
        info.last_enqueued_time = fromNanoseconds(row.int64(2));
        info.begin_sequence = row.int64(3);
        IOTHUB_RETURN_IF_ERROR(row.status());
        return info;
      });
}

Result<std::size_t> PostgresStore::trimTelemetry(std::int32_t partition, SystemTime older_than,
                                                 std::uint64_t max_bytes, std::size_t limit) {
  if (partition < 0) return telemetryPartitionInvalid(partition);
  if (limit == 0) return std::size_t{0};
  const std::int64_t cutoff = toNanoseconds(older_than);
  PgParams head_params;
  head_params.add(std::int64_t{partition}).add(sqlLimit(limit));
  return write<std::size_t>([&](PgConnection& connection) -> Result<std::size_t> {
    IOTHUB_RETURN_IF_ERROR(connection.query(kLockTelemetryPartitions).status());
    // A fresh snapshot (READ COMMITTED): every append before the lock is in it.
    Result<PgResult> locked =
        connection.query(kTelemetryPartitionBytes, PgParams().add(std::int64_t{partition}));
    if (!locked) return locked.status();
    if (locked->rows() == 0) return std::size_t{0};  // never appended to
    PgRow locked_row = locked->row(0);
    const auto held = static_cast<std::uint64_t>(locked_row.int64(0));
    IOTHUB_RETURN_IF_ERROR(locked_row.status());

    Result<PgResult> head = connection.query(kTelemetryHead, head_params);
    if (!head) return head.status();
    std::size_t removed = 0;
    std::uint64_t removed_bytes = 0;
    std::int64_t last_removed = 0;
    bool by_age = true;
    for (int i = 0; i < head->rows(); ++i) {
      PgRow row = head->row(i);
      const std::int64_t sequence = row.int64(0);
      const std::int64_t enqueued = row.int64(1);
      const auto size = static_cast<std::uint64_t>(row.int64(2));
      IOTHUB_RETURN_IF_ERROR(row.status());
      // By age from the start, up to the first record young enough; then by size.
      if (by_age && enqueued >= cutoff) by_age = false;
      if (!by_age && held - removed_bytes <= max_bytes) break;
      last_removed = sequence;
      removed += 1;
      removed_bytes += size;
    }
    if (removed == 0) return std::size_t{0};
    PgParams trim_params;
    trim_params.add(std::int64_t{partition})
        .add(last_removed)
        .add(static_cast<std::int64_t>(removed_bytes));
    IOTHUB_RETURN_IF_ERROR(connection.query(kTrimTelemetry, trim_params).status());
    return removed;
  });
}

// --- consumer groups (TelemetryStore) ---
//
// A create counts the groups and inserts its own in one transaction; READ COMMITTED alone
// would let two processes both count 99 and both insert. Every create therefore first takes
// a transaction-level advisory lock, so creates of all processes run one after the other and
// each counts what the previous one committed. Deletes need no lock: they only lower the
// count.

namespace {

// Next to kPgMigrationLockKey (…0001) and kPgSingleNodeLockKey (…0002).
constexpr std::int64_t kPgConsumerGroupLockKey = 0x696f746875620003;  // "iothub" 0x0003

constexpr std::string_view kListConsumerGroups =
    "SELECT name, created_time FROM consumer_groups ORDER BY name_key";
constexpr std::string_view kGetConsumerGroup =
    "SELECT name, created_time FROM consumer_groups WHERE name_key = $1";
constexpr std::string_view kLockConsumerGroups = "SELECT pg_advisory_xact_lock($1)";
constexpr std::string_view kCountConsumerGroups = "SELECT count(*) FROM consumer_groups";
constexpr std::string_view kInsertConsumerGroup =
    "INSERT INTO consumer_groups (name_key, name, created_time) VALUES ($1, $2, $3)"
    " ON CONFLICT (name_key) DO NOTHING";
constexpr std::string_view kDeleteConsumerGroup = "DELETE FROM consumer_groups WHERE name_key = $1";

Result<ConsumerGroupRecord> decodeConsumerGroupRow(const PgRow& row) {
  return ConsumerGroupRecord{row.text(0), fromNanoseconds(row.int64(1))};
}

Status consumerGroupNotFound(std::string_view name) {
  return Status(ErrorCode::ConsumerGroupNotFound,
                "consumer group '" + std::string(name) + "' does not exist");
}

}  // namespace

Result<std::vector<ConsumerGroupRecord>> PostgresStore::listConsumerGroups() {
  return read<std::vector<ConsumerGroupRecord>>(
      [](PgConnection& connection) -> Result<std::vector<ConsumerGroupRecord>> {
        Result<PgResult> result = connection.query(kListConsumerGroups, PgParams());
        if (!result) return result.status();
        return decodeRows<ConsumerGroupRecord>(*result, decodeConsumerGroupRow);
      });
}

Result<ConsumerGroupRecord> PostgresStore::getConsumerGroup(std::string_view name) {
  const std::string key = consumerGroupKey(name);
  return read<ConsumerGroupRecord>([&](PgConnection& connection) {
    return loadOne<ConsumerGroupRecord>(connection, kGetConsumerGroup, key, decodeConsumerGroupRow,
                                        consumerGroupNotFound(name));
  });
}

Status PostgresStore::createConsumerGroup(const ConsumerGroupRecord& group,
                                          std::size_t max_groups) {
  const std::string key = consumerGroupKey(group.name);
  PgParams insert_params;
  insert_params.add(key).add(group.name).add(toNanoseconds(group.created_time));
  return writeStatus([&](PgConnection& connection) -> Status {
    IOTHUB_RETURN_IF_ERROR(
        connection.query(kLockConsumerGroups, PgParams().add(kPgConsumerGroupLockKey)).status());
    Result<PgResult> existing = connection.query(kGetConsumerGroup, PgParams().add(key));
    if (!existing) return existing.status();
    if (existing->rows() > 0) {
      PgRow row = existing->row(0);
      const std::string name = row.text(0);
      IOTHUB_RETURN_IF_ERROR(row.status());
      return Status(ErrorCode::ConsumerGroupAlreadyExists,
                    "consumer group '" + name + "' already exists");
    }
    Result<PgResult> counted = connection.query(kCountConsumerGroups, PgParams());
    if (!counted) return counted.status();
    PgRow count_row = counted->row(0);
    const std::int64_t count = count_row.int64(0);
    IOTHUB_RETURN_IF_ERROR(count_row.status());
    if (static_cast<std::uint64_t>(count) >= max_groups) {
      return Status(ErrorCode::IotHubQuotaExceeded,
                    "the hub already has " + std::to_string(count) +
                        " consumer groups, the most it may have is " + std::to_string(max_groups));
    }
    // Under the lock no other create can insert the key meanwhile; DO NOTHING only guards
    // against a writer that bypassed it.
    Result<PgResult> inserted = connection.query(kInsertConsumerGroup, insert_params);
    if (!inserted) return inserted.status();
    if (inserted->affectedRows() == 0) {
      return Status(ErrorCode::ConsumerGroupAlreadyExists,
                    "consumer group '" + group.name + "' already exists");
    }
    return Status::ok();
  });
}

Status PostgresStore::deleteConsumerGroup(std::string_view name) {
  const std::string key = consumerGroupKey(name);
  if (key == consumerGroupKey(kDefaultConsumerGroup)) {
    return Status(ErrorCode::ArgumentInvalid, "$Default cannot be deleted");
  }
  return writeStatus([&](PgConnection& connection) -> Status {
    Result<PgResult> deleted = connection.query(kDeleteConsumerGroup, PgParams().add(key));
    if (!deleted) return deleted.status();
    if (deleted->affectedRows() == 0) return consumerGroupNotFound(name);
    return Status::ok();
  });
}

// ClusterStore

Result<NodeRecord> PostgresStore::renewNode(std::string_view node_id, std::string_view address,
                                            std::chrono::milliseconds ttl) {
  PgParams params;
  params.add(node_id).add(address).add(ttlNanoseconds(ttl));
  return write<NodeRecord>([&](PgConnection& connection) -> Result<NodeRecord> {
    Result<PgResult> renewed = connection.query(kRenewNode, params);
    if (!renewed) return renewed.status();
    return decodeNode(renewed->row(0));
  });
}

Result<NodeRecord> PostgresStore::joinNode(std::string_view node_id, std::string_view address,
                                           std::chrono::milliseconds ttl) {
  PgParams params;
  params.add(node_id).add(address).add(ttlNanoseconds(ttl));
  return write<NodeRecord>([&](PgConnection& connection) -> Result<NodeRecord> {
    Result<PgResult> disconnected =
        connection.query(kDisconnectNodeDevices, PgParams().add(node_id));
    if (!disconnected) return disconnected.status();
    Result<PgResult> joined = connection.query(kJoinNode, params);
    if (!joined) return joined.status();
    return decodeNode(joined->row(0));
  });
}

Status PostgresStore::leaveNode(std::string_view node_id) {
  return writeStatus([&](PgConnection& connection) -> Status {
    Result<PgResult> disconnected =
        connection.query(kDisconnectNodeDevices, PgParams().add(node_id));
    if (!disconnected) return disconnected.status();
    return connection.query(kDeleteNode, PgParams().add(node_id)).status();
  });
}

Result<std::vector<NodeRecord>> PostgresStore::liveNodes() {
  return read<std::vector<NodeRecord>>(
      [&](PgConnection& connection) -> Result<std::vector<NodeRecord>> {
        Result<PgResult> result = connection.query(kLiveNodes);
        if (!result) return result.status();
        return decodeRows<NodeRecord>(*result, decodeNode);
      });
}

Result<std::vector<std::string>> PostgresStore::reapExpiredNodes() {
  return write<std::vector<std::string>>(
      [&](PgConnection& connection) -> Result<std::vector<std::string>> {
        Result<PgResult> reaped = connection.query(kReapNodes);
        if (!reaped) return reaped.status();
        std::vector<std::string> ids;
        for (int i = 0; i < reaped->rows(); ++i) ids.push_back(reaped->row(i).text(0));
        return ids;
      });
}

Result<PresenceClaim> PostgresStore::claimPresence(std::string_view device_id,
                                                   std::string_view node_id) {
  PgParams params;
  params.add(device_id).add(node_id);
  const Status not_found(ErrorCode::DeviceNotFound, "no device '" + std::string(device_id) + "'");
  return write<PresenceClaim>([&](PgConnection& connection) -> Result<PresenceClaim> {
    Result<PgResult> ensured = connection.query(kEnsurePresence, PgParams().add(device_id));
    if (!ensured) {
      if (connection.lastSqlState() == kPgForeignKeyViolation) return not_found;
      return ensured.status();
    }
    Result<PgResult> old = connection.query(kLockPresence, PgParams().add(device_id));
    if (!old) return old.status();
    if (old->rows() != 1) return not_found;  // deleted by another process meanwhile
    std::optional<PresenceRecord> previous;
    auto decoded = decodePresence(old->row(0), 0);
    if (!decoded) return decoded.status();
    if (decoded->epoch != 0) previous = std::move(*decoded);
    Result<PgResult> claimed = connection.query(kClaimPresence, params);
    if (!claimed) return claimed.status();
    if (claimed->rows() != 1) return not_found;
    auto current = decodePresence(claimed->row(0), 0);
    if (!current) return current.status();
    return PresenceClaim{std::move(*current), std::move(previous)};
  });
}

Result<bool> PostgresStore::releasePresence(std::string_view device_id, std::int64_t epoch) {
  PgParams params;
  params.add(device_id).add(epoch);
  return write<bool>([&](PgConnection& connection) -> Result<bool> {
    Result<PgResult> released = connection.query(kReleasePresence, params);
    if (!released) return released.status();
    return released->affectedRows() == 1;
  });
}

Result<PresenceRepair> PostgresStore::repairPresence(std::string_view node_id,
                                                     const std::vector<HeldConnection>& held,
                                                     std::chrono::milliseconds settle) {
  PgArrayBuilder ids, epochs;
  for (const HeldConnection& connection : held) {
    ids.add(connection.device_id);
    epochs.add(connection.epoch);
  }
  const std::string id_array = std::move(ids).finish();
  const std::string epoch_array = std::move(epochs).finish();
  PgParams reinstate_params;
  reinstate_params.add(node_id).add(id_array).add(epoch_array);
  PgParams release_params;
  release_params.add(node_id).add(id_array).add(epoch_array).add(ttlNanoseconds(settle));
  return write<PresenceRepair>([&](PgConnection& connection) -> Result<PresenceRepair> {
    PresenceRepair repair;
    Result<PgResult> released = connection.query(kReleaseUnheldPresence, release_params);
    if (!released) return released.status();
    repair.released = static_cast<std::size_t>(released->affectedRows());
    Result<PgResult> reinstated = connection.query(kReinstatePresence, reinstate_params);
    if (!reinstated) return reinstated.status();
    for (int i = 0; i < reinstated->rows(); ++i) {
      PgRow row = reinstated->row(i);
      HeldConnection back{row.text(0), row.int64(1)};
      IOTHUB_RETURN_IF_ERROR(row.status());
      repair.reinstated.push_back(std::move(back));
    }
    return repair;
  });
}

Result<std::optional<PresenceRecord>> PostgresStore::getPresence(std::string_view device_id) {
  return read<std::optional<PresenceRecord>>(
      [&](PgConnection& connection) -> Result<std::optional<PresenceRecord>> {
        Result<PgResult> result = connection.query(kGetPresence, PgParams().add(device_id));
        if (!result) return result.status();
        if (result->rows() == 0) return std::optional<PresenceRecord>{};
        auto presence = decodePresence(result->row(0), 0);
        if (!presence) return presence.status();
        return std::optional<PresenceRecord>(std::move(*presence));
      });
}

Result<std::string> PostgresStore::shareValue(std::string_view key, std::string_view proposed) {
  Status inserted = writeStatus([&](PgConnection& connection) -> Status {
    return connection.query(kShareValue, PgParams().add(key).add(proposed)).status();
  });
  if (!inserted) return inserted;
  return read<std::string>([&](PgConnection& connection) -> Result<std::string> {
    Result<PgResult> result = connection.query(kGetSharedValue, PgParams().add(key));
    if (!result) return result.status();
    if (result->rows() != 1) {
      return Status(ErrorCode::StoreCorruption,
                    "the shared value '" + std::string(key) + "' vanished after it was stored");
    }
    return result->row(0).text(0);
  });
}

Result<std::int64_t> PostgresStore::connectedDeviceCount() {
  return read<std::int64_t>([&](PgConnection& connection) -> Result<std::int64_t> {
    Result<PgResult> result = connection.query(kConnectedCount);
    if (!result) return result.status();
    PgRow row = result->row(0);
    std::int64_t count = row.int64(0);
    if (Status s = row.status(); !s) return s;
    return count;
  });
}

}  // namespace iothub::store
