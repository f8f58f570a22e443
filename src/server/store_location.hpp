#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "store/postgresql/pg_session_lock.hpp"
#include "store/store.hpp"

namespace iothub::server {

// Where the hub keeps its state, from `--store` (docs/cluster.md "Store: PostgreSQL"):
// empty for the embedded SQLite database in the data directory (the default), or a
// PostgreSQL connection string, as a URI (postgresql://user:secret@host:5432/db?...) or as
// libpq key=value pairs (host=... dbname=...).
struct StoreLocation {
  enum class Kind { Sqlite, Postgres };
  Kind kind = Kind::Sqlite;
  std::filesystem::path sqlite_file;  // Sqlite: <data dir>/iothub.db
  std::string conninfo;               // Postgres: as given, handed to libpq
  std::string description;            // for logs and errors: passwords replaced by ***
};

// Errors: ArgumentInvalid naming the accepted forms when `store` is neither empty nor a
// PostgreSQL connection string (the message never repeats a password).
Result<StoreLocation> parseStoreLocation(std::string_view store,
                                         const std::filesystem::path& data_dir);

// `conninfo` with every password replaced by "***": the user:password@ part and a
// password= parameter of a URI, and a password=... pair of key=value form.
std::string redactConninfo(std::string_view conninfo);

// Opens the backend. Errors: the backend's, prefixed with the location's description.
Result<std::unique_ptr<store::Store>> openStore(const StoreLocation& location);

// For a hub on PostgreSQL without cluster coordination: takes the database's single-node
// lock (store::kPgSingleNodeLockKey) for as long as the result lives, so that a second
// iothubd on the same database refuses to start, naming the first. `lost` is called (from
// the lock's thread) if the lock is lost for good while the hub runs.
// Errors: InvalidOperation when another process holds it; connection errors.
Result<std::unique_ptr<store::PgSessionLock>> lockSingleNode(const StoreLocation& location,
                                                             std::function<void(Status)> lost);

// The locks a cluster node holds for as long as it runs (docs/cluster.md, "Topology"): the
// single-node key shared (so no single-node hub runs on the cluster's database, and no
// cluster node on a single node's) and its own node id's key exclusively (so two processes
// never run as one node; a node killed with kill -9 loses it with its connection).
// Errors: InvalidOperation naming the holder; connection errors.
Result<std::vector<std::unique_ptr<store::PgSessionLock>>> lockClusterNode(
    const StoreLocation& location, const std::string& node_id, std::function<void(Status)> lost);

// The advisory-lock key of node `node_id` (a 64-bit FNV-1a hash of the id, so stable across
// versions and processes).
std::int64_t nodeLockKey(std::string_view node_id);

}  // namespace iothub::server
