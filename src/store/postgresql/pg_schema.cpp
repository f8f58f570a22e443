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

constexpr PgMigration kMigrations[] = {
    {1, kSchemaV1},
    {2, kSchemaV2},
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
