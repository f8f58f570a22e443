#include "store/sqlite/sqlite_schema.hpp"

#include <string>

namespace iothub::store {
namespace {

// Version 1. Conventions:
// - Times are INTEGER nanoseconds since the Unix epoch (0 = never).
// - JSON documents are TEXT holding one JSON value, so json_extract() works on them.
// - Tables keyed by short text with small rows are WITHOUT ROWID: the primary-key B-tree
//   holds the row, which saves one lookup per read. Twins and jobs can be large, so they
//   stay rowid tables (large rows in a WITHOUT ROWID table make its B-tree deep).
// - device_jobs has no foreign keys: it is job history and outlives deleted devices.
constexpr std::string_view kSchemaV1 = R"sql(
CREATE TABLE devices (
  device_id                     TEXT    NOT NULL PRIMARY KEY,
  generation_id                 TEXT    NOT NULL,
  etag                          TEXT    NOT NULL,
  status                        TEXT    NOT NULL,  -- 'enabled' | 'disabled'
  status_reason                 TEXT,
  status_updated_time           INTEGER NOT NULL,
  auth_type                     TEXT    NOT NULL,  -- 'sas' | 'selfSigned' | 'certificateAuthority' | 'none'
  primary_key                   TEXT    NOT NULL,
  secondary_key                 TEXT    NOT NULL,
  primary_thumbprint            TEXT,
  secondary_thumbprint          TEXT,
  iot_edge                      INTEGER NOT NULL,  -- 0 | 1
  device_scope                  TEXT,
  parent_scopes                 TEXT    NOT NULL,  -- JSON array of strings
  connection_state_updated_time INTEGER NOT NULL,
  last_activity_time            INTEGER NOT NULL,
  cloud_to_device_message_count INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE twins (
  device_id        TEXT    NOT NULL PRIMARY KEY
                           REFERENCES devices (device_id) ON DELETE CASCADE,
  tags             TEXT    NOT NULL,  -- JSON object
  desired          TEXT    NOT NULL,  -- JSON object
  reported         TEXT    NOT NULL,  -- JSON object
  version          INTEGER NOT NULL,
  desired_version  INTEGER NOT NULL,
  reported_version INTEGER NOT NULL
);

CREATE TABLE jobs (
  job_id       TEXT    NOT NULL PRIMARY KEY,
  type         TEXT    NOT NULL,
  status       TEXT    NOT NULL,
  created_time INTEGER NOT NULL,
  start_time   INTEGER NOT NULL,
  end_time     INTEGER,
  document     TEXT    NOT NULL  -- JSON object
);
-- (status, created_time, job_id) serves status filters in list order without a sort.
CREATE INDEX jobs_by_status ON jobs (status, created_time, job_id);
CREATE INDEX jobs_by_created_time ON jobs (created_time, job_id);

CREATE TABLE device_jobs (
  job_id            TEXT    NOT NULL,
  device_id         TEXT    NOT NULL,
  status            TEXT    NOT NULL,
  last_updated_time INTEGER NOT NULL,
  document          TEXT    NOT NULL,  -- JSON object
  PRIMARY KEY (job_id, device_id)
) WITHOUT ROWID;
CREATE INDEX device_jobs_by_status ON device_jobs (job_id, status, device_id);

CREATE TABLE access_policies (
  name          TEXT    NOT NULL PRIMARY KEY,
  primary_key   TEXT    NOT NULL,
  secondary_key TEXT    NOT NULL,
  permissions   INTEGER NOT NULL  -- Permission bits
) WITHOUT ROWID;
)sql";

// Version 2: persistent MQTT sessions. `subscriptions` is a JSON array of
// {"filter": text, "qos": int}.
constexpr std::string_view kSchemaV2 = R"sql(
CREATE TABLE mqtt_sessions (
  client_id     TEXT NOT NULL PRIMARY KEY,
  subscriptions TEXT NOT NULL
) WITHOUT ROWID;
)sql";

// Version 3: job leases (JobStore leases in store.hpp; docs/cluster.md "Jobs across
// nodes"). lease_until is nanoseconds on the system clock (0 = no lease); lease_epoch grows
// with every claim; cancel_requested (0 | 1) is written by requestJobCancel only, never by
// the owner's record writes.
constexpr std::string_view kSchemaV3 = R"sql(
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
)sql";

// Version 4: cloud-to-device queues and the feedback queue (C2dStore in store.hpp).
// - c2d_messages is a rowid table (bodies can be large) whose rowid is the message's
//   sequence; AUTOINCREMENT keeps a sequence from ever being handed out again, so it grows
//   with every enqueue even after the newest messages were removed. (device_id, sequence)
//   is the queue order; messages go with their device (ON DELETE CASCADE).
// - lock_token is '' and locked_until 0 while no device holds the message.
// - c2d_messages_by_expiry serves expireC2d's earliest-expiry-first sweep.
// - c2d_feedback: lockC2dFeedback reads in sequence order; the index on enqueued_time
//   serves expireC2dFeedback.
constexpr std::string_view kSchemaV4 = R"sql(
CREATE TABLE c2d_messages (
  sequence       INTEGER PRIMARY KEY AUTOINCREMENT,
  device_id      TEXT    NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
  enqueued_time  INTEGER NOT NULL,
  expiry_time    INTEGER NOT NULL,
  lock_token     TEXT    NOT NULL,
  locked_until   INTEGER NOT NULL,
  delivery_count INTEGER NOT NULL,
  document       TEXT    NOT NULL,  -- JSON object
  body           BLOB    NOT NULL
);
CREATE UNIQUE INDEX c2d_messages_by_device ON c2d_messages (device_id, sequence);
CREATE INDEX c2d_messages_by_expiry ON c2d_messages (expiry_time);

CREATE TABLE c2d_feedback (
  sequence      INTEGER PRIMARY KEY AUTOINCREMENT,
  enqueued_time INTEGER NOT NULL,
  locked_until  INTEGER NOT NULL,  -- 0 = never locked
  document      TEXT    NOT NULL   -- JSON object
);
CREATE INDEX c2d_feedback_by_enqueued_time ON c2d_feedback (enqueued_time);
)sql";

// Version 5: the partitioned telemetry log (TelemetryStore in store.hpp).
// - telemetry_partitions holds one row per partition ever appended to: the sequence the
//   next append gets, the retained records' bytes and the enqueued time of the last record
//   appended. Appends and trims update it in their transaction, so sequences are gapless
//   and never handed out again after a trim.
// - telemetry is a rowid table (bodies can be large; rows are appended at the end of the
//   rowid B-tree); its primary key (partition_id, sequence) serves reads by position and
//   trims from the start. size is the record's body + document bytes.
// - telemetry_by_enqueued_time serves telemetrySequenceAfter: enqueued times come from the
//   callers' clocks and need not grow with the sequence.
constexpr std::string_view kSchemaV5 = R"sql(
CREATE TABLE telemetry_partitions (
  partition_id       INTEGER NOT NULL PRIMARY KEY,
  next_sequence      INTEGER NOT NULL,
  bytes              INTEGER NOT NULL,
  last_enqueued_time INTEGER NOT NULL
);

CREATE TABLE telemetry (
  partition_id  INTEGER NOT NULL,
  sequence      INTEGER NOT NULL,
  enqueued_time INTEGER NOT NULL,
  device_id     TEXT    NOT NULL,
  size          INTEGER NOT NULL,  -- body + document bytes
  document      TEXT    NOT NULL,  -- JSON object
  body          BLOB    NOT NULL,
  PRIMARY KEY (partition_id, sequence)
);
CREATE INDEX telemetry_by_enqueued_time ON telemetry (partition_id, enqueued_time, sequence);
)sql";

// Version 6: consumer groups of the Event Hubs-compatible endpoint (TelemetryStore in
// store.hpp). name_key is the name in ASCII lower case (names compare case-insensitively;
// the key is also the list order), name keeps the case it was created with. "$Default"
// exists in every store: the migration inserts it, created now (milliseconds, the best
// SQLite 3.40's julianday gives).
constexpr std::string_view kSchemaV6 = R"sql(
CREATE TABLE consumer_groups (
  name_key     TEXT    NOT NULL PRIMARY KEY,
  name         TEXT    NOT NULL,
  created_time INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO consumer_groups (name_key, name, created_time) VALUES ('$default', '$Default',
  CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000000);
)sql";

constexpr SqliteMigration kMigrations[] = {
    {1, kSchemaV1}, {2, kSchemaV2}, {3, kSchemaV3}, {4, kSchemaV4}, {5, kSchemaV5}, {6, kSchemaV6},
};

}  // namespace

std::span<const SqliteMigration> sqliteMigrations() { return kMigrations; }

std::int64_t sqliteSchemaVersion() { return kMigrations[std::size(kMigrations) - 1].version; }

Status migrateSqliteSchema(SqliteConnection& connection,
                           std::span<const SqliteMigration> migrations) {
  std::int64_t latest = migrations.empty() ? 0 : migrations.back().version;
  // IMMEDIATE takes the write lock before reading user_version, so two processes opening
  // the same fresh file cannot both run the migrations.
  IOTHUB_RETURN_IF_ERROR(connection.exec("BEGIN IMMEDIATE"));
  auto fail = [&connection](Status error) {
    if (connection.inTransaction()) (void)connection.exec("ROLLBACK");
    return error;
  };

  Result<std::int64_t> current = connection.queryInt64("PRAGMA user_version");
  if (!current) return fail(current.status());
  if (*current > latest) {
    return fail(Status(ErrorCode::ServerError,
                       "the database has schema version " + std::to_string(*current) +
                           ", newer than the newest this build knows (" + std::to_string(latest) +
                           "); use a newer iothub"));
  }
  for (const SqliteMigration& migration : migrations) {
    if (migration.version <= *current) continue;
    Status applied = connection.exec(migration.sql);
    if (!applied) {
      return fail(Status(applied.code(), "schema migration to version " +
                                             std::to_string(migration.version) +
                                             " failed: " + applied.message()));
    }
    // user_version lives in the database header, which is written inside the transaction.
    applied = connection.exec("PRAGMA user_version = " + std::to_string(migration.version));
    if (!applied) return fail(applied);
  }
  Status committed = connection.exec("COMMIT");
  if (!committed) return fail(committed);
  return Status::ok();
}

}  // namespace iothub::store
