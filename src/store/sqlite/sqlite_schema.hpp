#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/status.hpp"
#include "store/sqlite/sqlite_connection.hpp"

namespace iothub::store {

// One step of the schema's history. The database records the version it has reached in
// `PRAGMA user_version` (0 = empty file).
struct SqliteMigration {
  std::int64_t version;  // the user_version after this step; strictly increasing, from 1
  std::string_view sql;  // one or more statements, run inside the migration transaction
};

// The migrations of this build, in order. Never edit a released entry: append a new one.
std::span<const SqliteMigration> sqliteMigrations();

// The schema version this build writes (the version of the last migration).
std::int64_t sqliteSchemaVersion();

// Brings the database behind `connection` (opened read-write) up to the last of
// `migrations`: reads user_version and runs every later migration, plus the user_version
// update, in ONE immediate transaction, so a failure leaves the file as it was.
// Errors: ServerError when the database is newer than the last migration (written by a
// newer iothub) or a migration fails; StoreCorruption when the file is not a database.
Status migrateSqliteSchema(SqliteConnection& connection,
                           std::span<const SqliteMigration> migrations);

}  // namespace iothub::store
