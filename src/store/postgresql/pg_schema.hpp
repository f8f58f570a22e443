#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/status.hpp"
#include "store/postgresql/pg_connection.hpp"

namespace iothub::store {

// One step of the PostgreSQL schema's history. The database records the version it has
// reached in the one row of table iothub_schema (no table or no row = empty database).
struct PgMigration {
  std::int64_t version;  // the schema version after this step; strictly increasing, from 1
  std::string_view sql;  // one or more statements, run inside the migration transaction
};

// The migrations of this build, in order. Never edit a released entry: append a new one.
std::span<const PgMigration> postgresMigrations();

// The schema version this build writes (the version of the last migration).
std::int64_t postgresSchemaVersion();

// The advisory-lock key that serializes migrations across every process sharing the
// database.
inline constexpr std::int64_t kPgMigrationLockKey = 0x696f746875620001;  // "iothub" 0x0001

// Brings the database behind `connection` up to the last of `migrations` in ONE
// transaction that first takes pg_advisory_xact_lock(kPgMigrationLockKey): two nodes
// starting at once run the migrations one after the other, and the second finds nothing
// left to do. A failure rolls everything back.
// Errors: ServiceUnavailable when the database's schema is newer than the last migration
// (written by a newer iothub; the message names both versions) or the server is not
// reachable; StoreCorruption when iothub_schema holds more than one row; the failing
// statement's error otherwise.
Status migratePostgresSchema(PgConnection& connection, std::span<const PgMigration> migrations);

}  // namespace iothub::store
