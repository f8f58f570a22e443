#include "store/postgresql/pg_schema.hpp"

#include <string>

namespace iothub::store {
namespace {

// Version 1. Conventions (the same values as the SQLite schema, see record_codec.hpp):
// - Times are bigint nanoseconds since the Unix epoch (0 = never).
// - JSON documents are `json`, not `jsonb`: json keeps the text exactly as written, so
//   documents read back keep their key order (jsonb would sort the keys).
// - Keys and the columns lists are filtered or ordered by use COLLATE "C": byte order,
//   the order SQLite uses, whatever the database's default collation.
// - device_jobs has no foreign keys: it is job history and outlives deleted devices.
//   Twins and MQTT sessions go with their device (ON DELETE CASCADE); the session's key
//   also keeps another node from saving a session for a device deleted meanwhile.
constexpr std::string_view kSchemaV1 = R"sql(
CREATE TABLE devices (
  device_id                     text COLLATE "C" NOT NULL PRIMARY KEY,
  generation_id                 text    NOT NULL,
  etag                          text    NOT NULL,
  status                        text    NOT NULL,  -- 'enabled' | 'disabled'
  status_reason                 text,
  status_updated_time           bigint  NOT NULL,
  auth_type                     text    NOT NULL,  -- 'sas' | 'selfSigned' | 'certificateAuthority' | 'none'
  primary_key                   text    NOT NULL,
  secondary_key                 text    NOT NULL,
  primary_thumbprint            text,
  secondary_thumbprint          text,
  iot_edge                      boolean NOT NULL,
  device_scope                  text,
  parent_scopes                 json    NOT NULL,  -- array of strings
  connection_state_updated_time bigint  NOT NULL,
  last_activity_time            bigint  NOT NULL,
  cloud_to_device_message_count bigint  NOT NULL
);

CREATE TABLE twins (
  device_id        text COLLATE "C" NOT NULL PRIMARY KEY
                   REFERENCES devices (device_id) ON DELETE CASCADE,
  tags             json   NOT NULL,  -- object
  desired          json   NOT NULL,  -- object
  reported         json   NOT NULL,  -- object
  version          bigint NOT NULL,
  desired_version  bigint NOT NULL,
  reported_version bigint NOT NULL
);

CREATE TABLE jobs (
  job_id       text COLLATE "C" NOT NULL PRIMARY KEY,
  type         text COLLATE "C" NOT NULL,
  status       text COLLATE "C" NOT NULL,
  created_time bigint NOT NULL,
  start_time   bigint NOT NULL,
  end_time     bigint,
  document     json   NOT NULL  -- object
);
-- (status, created_time, job_id) serves status filters in list order without a sort.
CREATE INDEX jobs_by_status ON jobs (status, created_time, job_id);
CREATE INDEX jobs_by_created_time ON jobs (created_time, job_id);

CREATE TABLE device_jobs (
  job_id            text COLLATE "C" NOT NULL,
  device_id         text COLLATE "C" NOT NULL,
  status            text COLLATE "C" NOT NULL,
  last_updated_time bigint NOT NULL,
  document          json   NOT NULL,  -- object
  PRIMARY KEY (job_id, device_id)
);
CREATE INDEX device_jobs_by_status ON device_jobs (job_id, status, device_id);

CREATE TABLE access_policies (
  name          text COLLATE "C" NOT NULL PRIMARY KEY,
  primary_key   text   NOT NULL,
  secondary_key text   NOT NULL,
  permissions   bigint NOT NULL  -- Permission bits
);

CREATE TABLE mqtt_sessions (
  client_id     text COLLATE "C" NOT NULL PRIMARY KEY
                REFERENCES devices (device_id) ON DELETE CASCADE,
  subscriptions json NOT NULL  -- array of {"filter": text, "qos": int}
);
)sql";

// Version 2: what the nodes of a cluster share (store/cluster_store.hpp). Node leases and
// presence times are nanoseconds on the database's clock. A device's presence goes with
// the device. The partial index serves "the devices of node N that are connected".
constexpr std::string_view kSchemaV2 = R"sql(
CREATE TABLE cluster_nodes (
  node_id      text COLLATE "C" NOT NULL PRIMARY KEY,
  address      text   NOT NULL,
  started_time bigint NOT NULL,
  lease_until  bigint NOT NULL
);

CREATE SEQUENCE device_presence_epoch;

CREATE TABLE device_presence (
  device_id text COLLATE "C" NOT NULL PRIMARY KEY
            REFERENCES devices (device_id) ON DELETE CASCADE,
  node_id   text COLLATE "C" NOT NULL,
  epoch     bigint  NOT NULL,
  connected boolean NOT NULL,
  since     bigint  NOT NULL
);
CREATE INDEX device_presence_connected_by_node ON device_presence (node_id) WHERE connected;
)sql";

// Version 3: the change log that keeps every node's twin index current with writes made on
// other nodes (store/change_feed.hpp; docs/cluster.md "Queries"). Every insert, update or
// delete of a device, twin or presence row appends the device id with the id of the
// writing (top-level) transaction; a reader asks for the rows of the transactions its
// previous snapshot had not seen (xid >= its xmax, or one of those then in progress), which
// the index on xid answers. No sequence and no primary key: a row costs one heap and one
// index insert, in the transaction that made the change. A delete cascading to the twin and
// presence logs the id more than once; readers read each changed id once.
//
// Pruning: device_changes_marks remembers, each time a node prunes, the oldest transaction
// then running; a mark older than the retention becomes the horizon, and the log rows of
// transactions below it (all finished before the mark was taken) are deleted. A reader
// whose cursor's xmin is below the horizon may have lost rows and reloads everything.
// Only one node prunes at a time (the horizon row is locked with SKIP LOCKED).
constexpr std::string_view kSchemaV3 = R"sql(
CREATE TABLE device_changes (
  xid       xid8 NOT NULL DEFAULT pg_current_xact_id(),
  device_id text COLLATE "C" NOT NULL
);
CREATE INDEX device_changes_by_xid ON device_changes (xid);

CREATE TABLE device_changes_horizon (horizon xid8 NOT NULL);
INSERT INTO device_changes_horizon (horizon) VALUES ('0');

CREATE TABLE device_changes_marks (
  taken      bigint NOT NULL,  -- nanoseconds on the database's clock
  oldest_xid xid8   NOT NULL   -- the xmin of a snapshot taken then
);

CREATE FUNCTION iothub_log_device_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    INSERT INTO device_changes (device_id) VALUES (OLD.device_id);
  ELSE
    INSERT INTO device_changes (device_id) VALUES (NEW.device_id);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER devices_log_change AFTER INSERT OR UPDATE OR DELETE ON devices
  FOR EACH ROW EXECUTE FUNCTION iothub_log_device_change();
CREATE TRIGGER twins_log_change AFTER INSERT OR UPDATE OR DELETE ON twins
  FOR EACH ROW EXECUTE FUNCTION iothub_log_device_change();
CREATE TRIGGER device_presence_log_change AFTER INSERT OR UPDATE OR DELETE ON device_presence
  FOR EACH ROW EXECUTE FUNCTION iothub_log_device_change();

-- Returns the log rows deleted, or -1 when another node was pruning.
CREATE FUNCTION iothub_prune_device_changes(retention_ns bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  now_ns bigint := (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint;
  current_horizon xid8;
  next_horizon xid8;
  deleted bigint := 0;
BEGIN
  SELECT horizon INTO current_horizon FROM device_changes_horizon FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    RETURN -1;
  END IF;
  INSERT INTO device_changes_marks (taken, oldest_xid)
    VALUES (now_ns, pg_snapshot_xmin(pg_current_snapshot()));
  SELECT max(oldest_xid) INTO next_horizon FROM device_changes_marks
    WHERE taken <= now_ns - retention_ns;
  IF next_horizon IS NOT NULL THEN
    DELETE FROM device_changes_marks WHERE taken <= now_ns - retention_ns;
    IF next_horizon > current_horizon THEN
      DELETE FROM device_changes WHERE xid < next_horizon;
      GET DIAGNOSTICS deleted = ROW_COUNT;
      UPDATE device_changes_horizon SET horizon = next_horizon;
    END IF;
  END IF;
  RETURN deleted;
END
$$;
)sql";

// Version 4: job leases (JobStore leases in store.hpp; docs/cluster.md "Jobs across
// nodes"). lease_until is nanoseconds on the database's clock (0 = no lease); lease_epoch
// grows with every claim; cancel_requested is written by requestJobCancel only, never by
// the owner's record writes. Adding columns with constant defaults rewrites nothing.
constexpr std::string_view kSchemaV4 = R"sql(
ALTER TABLE jobs ADD COLUMN lease_owner text COLLATE "C";
ALTER TABLE jobs ADD COLUMN lease_until bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
)sql";

// Values every node of a cluster shares, written once (ClusterStore::shareValue).
constexpr std::string_view kSchemaV5 = R"sql(
CREATE TABLE cluster_values (
  key text COLLATE "C" PRIMARY KEY,
  value text NOT NULL
);
)sql";

// Version 6: cloud-to-device queues and the feedback queue (C2dStore in store.hpp).
// - Sequences come from identity columns: they grow with every insert, in every process,
//   and are never handed out again. (device_id, sequence) is a device's queue order;
//   messages go with their device (ON DELETE CASCADE), which RegistryStore::deleteDevice
//   relies on.
// - lock_token is '' and locked_until 0 while no device holds the message.
// - c2d_messages_by_expiry serves expireC2d's earliest-expiry-first sweep.
// - c2d_feedback: lockC2dFeedback reads in sequence order (the primary key); the index on
//   enqueued_time serves expireC2dFeedback.
// The change-feed trigger on devices fires when a queue change updates the device's
// cloud_to_device_message_count; that is wanted: the count is a queryable device field,
// so the other nodes' twin indexes reload it.
constexpr std::string_view kSchemaV6 = R"sql(
CREATE TABLE c2d_messages (
  sequence       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  device_id      text COLLATE "C" NOT NULL
                 REFERENCES devices (device_id) ON DELETE CASCADE,
  enqueued_time  bigint  NOT NULL,
  expiry_time    bigint  NOT NULL,
  lock_token     text    NOT NULL,
  locked_until   bigint  NOT NULL,
  delivery_count integer NOT NULL,
  document       json    NOT NULL,  -- object
  body           bytea   NOT NULL
);
CREATE UNIQUE INDEX c2d_messages_by_device ON c2d_messages (device_id, sequence);
CREATE INDEX c2d_messages_by_expiry ON c2d_messages (expiry_time, sequence);

CREATE TABLE c2d_feedback (
  sequence      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  enqueued_time bigint NOT NULL,
  locked_until  bigint NOT NULL,  -- 0 = never locked
  document      json   NOT NULL   -- object
);
CREATE INDEX c2d_feedback_by_enqueued_time ON c2d_feedback (enqueued_time);
)sql";

// Version 7: the partitioned telemetry log (TelemetryStore in store.hpp).
// - telemetry_partitions holds one row per partition ever appended to: the sequence the
//   next append gets, the retained records' bytes and the enqueued time of the last record
//   appended. Every append and trim locks its partitions' rows (the append by its
//   INSERT ... ON CONFLICT DO UPDATE) and writes its records in the same transaction, so
//   appends to one partition from every process commit one after the other, in sequence
//   order: a reader never sees a record while an earlier one is still uncommitted.
// - telemetry's primary key (partition_id, sequence) serves reads by position and trims
//   from the start; size is the record's body + document bytes.
// - telemetry_by_enqueued_time serves telemetrySequenceAfter: enqueued times come from the
//   nodes' clocks and need not grow with the sequence.
constexpr std::string_view kSchemaV7 = R"sql(
CREATE TABLE telemetry_partitions (
  partition_id       integer PRIMARY KEY,
  next_sequence      bigint NOT NULL,
  bytes              bigint NOT NULL,
  last_enqueued_time bigint NOT NULL
);

CREATE TABLE telemetry (
  partition_id  integer NOT NULL,
  sequence      bigint  NOT NULL,
  enqueued_time bigint  NOT NULL,
  device_id     text COLLATE "C" NOT NULL,
  size          bigint  NOT NULL,  -- body + document bytes
  document      json    NOT NULL,  -- object
  body          bytea   NOT NULL,
  PRIMARY KEY (partition_id, sequence)
);
CREATE INDEX telemetry_by_enqueued_time ON telemetry (partition_id, enqueued_time, sequence);
)sql";

// Version 8: consumer groups of the Event Hubs-compatible endpoint (TelemetryStore in
// store.hpp). name_key is the name in ASCII lower case (names compare case-insensitively;
// the key, in byte order, is also the list order), name keeps the case it was created
// with. "$Default" exists in every store: the migration inserts it, created at the
// migration transaction's start.
constexpr std::string_view kSchemaV8 = R"sql(
CREATE TABLE consumer_groups (
  name_key     text COLLATE "C" PRIMARY KEY,
  name         text   NOT NULL,
  created_time bigint NOT NULL
);
INSERT INTO consumer_groups (name_key, name, created_time)
  VALUES ('$default', '$Default', (extract(epoch FROM now()) * 1000000000)::bigint);
)sql";

constexpr PgMigration kMigrations[] = {
    {1, kSchemaV1}, {2, kSchemaV2}, {3, kSchemaV3}, {4, kSchemaV4},
    {5, kSchemaV5}, {6, kSchemaV6}, {7, kSchemaV7}, {8, kSchemaV8},
};

}  // namespace

std::span<const PgMigration> postgresMigrations() { return kMigrations; }

std::int64_t postgresSchemaVersion() { return kMigrations[std::size(kMigrations) - 1].version; }

Status migratePostgresSchema(PgConnection& connection, std::span<const PgMigration> migrations) {
  const std::int64_t latest = migrations.empty() ? 0 : migrations.back().version;
  IOTHUB_RETURN_IF_ERROR(connection.exec("BEGIN").status());
  auto fail = [&connection](Status error) {
    if (connection.inTransaction()) (void)connection.exec("ROLLBACK");
    return error;
  };

  // Held until COMMIT/ROLLBACK. Everything below reads with a snapshot taken after the lock
  // was granted (READ COMMITTED), so it sees what a previous holder committed.
  Result<PgResult> locked =
      connection.query("SELECT pg_advisory_xact_lock($1)", PgParams().add(kPgMigrationLockKey));
  if (!locked) return fail(locked.status());
  Result<PgResult> created =
      connection.exec("CREATE TABLE IF NOT EXISTS iothub_schema (version integer NOT NULL)");
  if (!created) return fail(created.status());
  Result<PgResult> versions = connection.query("SELECT version FROM iothub_schema");
  if (!versions) return fail(versions.status());
  if (versions->rows() > 1) {
    return fail(Status(
        ErrorCode::StoreCorruption,
        "table iothub_schema holds " + std::to_string(versions->rows()) + " rows instead of one"));
  }
  const bool has_row = versions->rows() == 1;
  std::int64_t current = 0;
  if (has_row) {
    PgRow row = versions->row(0);
    current = row.int64(0);
    if (!row.status()) return fail(row.status());
  }

  if (current > latest) {
    return fail(Status(ErrorCode::ServiceUnavailable,
                       "the PostgreSQL database has iothub schema version " +
                           std::to_string(current) + ", newer than version " +
                           std::to_string(latest) +
                           ", the newest this build knows; use a newer iothub"));
  }
  for (const PgMigration& migration : migrations) {
    if (migration.version <= current) continue;
    Result<PgResult> applied = connection.exec(migration.sql);
    if (!applied) {
      return fail(Status(applied.code(), "schema migration to version " +
                                             std::to_string(migration.version) +
                                             " failed: " + applied.status().message()));
    }
  }
  if (latest > current) {
    Result<PgResult> recorded =
        connection.query(has_row ? "UPDATE iothub_schema SET version = $1"
                                 : "INSERT INTO iothub_schema (version) VALUES ($1)",
                         PgParams().add(latest));
    if (!recorded) return fail(recorded.status());
  }
  Result<PgResult> committed = connection.exec("COMMIT");
  if (!committed) return fail(committed.status());
  if (committed->commandTag() != "COMMIT") {
    return Status(ErrorCode::ServerError, "the schema migration transaction was rolled back");
  }
  return Status::ok();
}

}  // namespace iothub::store
