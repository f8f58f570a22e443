// The raw-SQLite peer of benchmark B4: applies the same desired-property patches the fleet
// sends to the hub ({"setpoint":k,"mode":"eco"}) to twin documents in SQLite, with the
// hub's durability (WAL, synchronous=FULL) and, by default, the hub's grouping: --batch
// updates per transaction with one SAVEPOINT each, which is what the hub's group-committing
// writer does with the updates in flight (docs/decisions.md §1, §2). --batch 1 gives one
// transaction (and one fsync) per update.
//
//   fleet_sqlite_peer --db FILE --devices N --duration-ms D --batch B [--synchronous normal]
//
// Prints {"updates","elapsed_s","updates_per_s","batch","synchronous"} as JSON.
//
// The peer of benchmark REG (bulk registration):
//
//   fleet_sqlite_peer --db FILE --register N [--batch 100] [--synchronous normal]
//
// inserts N devices with their twins, --batch of them per transaction, into the hub's own
// devices and twins tables (same columns, keys, foreign key and pragmas as the hub's SQLite
// store: WAL, synchronous=FULL, foreign_keys=ON) with rows shaped like the hub's (44-character
// keys, a generation id, an etag, empty twin documents). Prints
// {"devices","elapsed_s","devices_per_s","batch","synchronous"} as JSON.

#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

[[noreturn]] void die(sqlite3* db, const char* what) {
  std::fprintf(stderr, "fleet_sqlite_peer: %s: %s\n", what,
               db != nullptr ? sqlite3_errmsg(db) : "");
  std::exit(1);
}

void exec(sqlite3* db, const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::fprintf(stderr, "fleet_sqlite_peer: %s: %s\n", sql, error != nullptr ? error : "");
    std::exit(1);
  }
}

std::string deviceId(long index) {
  char text[32];
  std::snprintf(text, sizeof text, "fleet-%06ld", index);
  return text;
}

// REG: bulk registration as plain inserts, `batch` devices per transaction.
int registerDevices(sqlite3* db, long devices, long batch, const std::string& synchronous) {
  exec(db, "PRAGMA foreign_keys=ON");
  exec(db, "PRAGMA cache_size=-32768");
  exec(db,
       "CREATE TABLE devices (device_id TEXT NOT NULL PRIMARY KEY, generation_id TEXT NOT NULL,"
       " etag TEXT NOT NULL, status TEXT NOT NULL, status_reason TEXT,"
       " status_updated_time INTEGER NOT NULL, auth_type TEXT NOT NULL, primary_key TEXT NOT NULL,"
       " secondary_key TEXT NOT NULL, primary_thumbprint TEXT, secondary_thumbprint TEXT,"
       " iot_edge INTEGER NOT NULL, device_scope TEXT, parent_scopes TEXT NOT NULL,"
       " connection_state_updated_time INTEGER NOT NULL, last_activity_time INTEGER NOT NULL,"
       " cloud_to_device_message_count INTEGER NOT NULL) WITHOUT ROWID");
  exec(db,
       "CREATE TABLE twins (device_id TEXT NOT NULL PRIMARY KEY REFERENCES devices (device_id)"
       " ON DELETE CASCADE, tags TEXT NOT NULL, desired TEXT NOT NULL, reported TEXT NOT NULL,"
       " version INTEGER NOT NULL, desired_version INTEGER NOT NULL,"
       " reported_version INTEGER NOT NULL)");
  sqlite3_stmt* insert_device = nullptr;
  sqlite3_stmt* insert_twin = nullptr;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO devices VALUES (?1, ?2, ?3, 'enabled', NULL, ?4, 'sas', ?5,"
                         " ?5, NULL, NULL, 0, NULL, '[]', 0, 0, 0)"
                         " ON CONFLICT (device_id) DO NOTHING",
                         -1, &insert_device, nullptr) != SQLITE_OK ||
      sqlite3_prepare_v2(db, "INSERT INTO twins VALUES (?1, '{}', '{}', '{}', 1, 1, 1)", -1,
                         &insert_twin, nullptr) != SQLITE_OK) {
    die(db, "prepare insert");
  }
  const std::string key = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=";  // 44 characters
  const auto started = std::chrono::steady_clock::now();
  for (long first = 0; first < devices; first += batch) {
    exec(db, "BEGIN IMMEDIATE");
    for (long d = first; d < devices && d < first + batch; ++d) {
      const std::string id = deviceId(d);
      const std::string generation = std::to_string(638000000000000000L + d);
      const std::string etag = "MTIzNDU2Nzg5" + std::to_string(d % 10);
      sqlite3_bind_text(insert_device, 1, id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(insert_device, 2, generation.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(insert_device, 3, etag.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(insert_device, 4, 1700000000000000000LL + d);
      sqlite3_bind_text(insert_device, 5, key.c_str(), -1, SQLITE_STATIC);
      if (sqlite3_step(insert_device) != SQLITE_DONE || sqlite3_changes(db) != 1) {
        die(db, "insert device");
      }
      sqlite3_reset(insert_device);
      sqlite3_bind_text(insert_twin, 1, id.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(insert_twin) != SQLITE_DONE) die(db, "insert twin");
      sqlite3_reset(insert_twin);
    }
    exec(db, "COMMIT");
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  sqlite3_finalize(insert_device);
  sqlite3_finalize(insert_twin);
  sqlite3_close(db);
  std::printf(
      "{\"devices\":%ld,\"elapsed_s\":%.3f,\"devices_per_s\":%.1f,\"batch\":%ld,"
      "\"synchronous\":\"%s\",\"journal_mode\":\"wal\"}\n",
      devices, elapsed, static_cast<double>(devices) / elapsed, batch, synchronous.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  long devices = 1000;
  long duration_ms = 10'000;
  long batch = 32;
  long register_devices = 0;
  std::string synchronous = "full";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--db")
      path = value;
    else if (flag == "--devices")
      devices = std::atol(value);
    else if (flag == "--duration-ms")
      duration_ms = std::atol(value);
    else if (flag == "--batch")
      batch = std::atol(value);
    else if (flag == "--synchronous")
      synchronous = value;
    else if (flag == "--register")
      register_devices = std::atol(value);
    else {
      std::fprintf(stderr,
                   "usage: fleet_sqlite_peer --db FILE --devices N --duration-ms D --batch B "
                   "[--synchronous full|normal]\n"
                   "       fleet_sqlite_peer --db FILE --register N [--batch B] "
                   "[--synchronous full|normal]\n");
      return 2;
    }
  }
  if (path.empty() || devices < 1 || batch < 1 || duration_ms < 1 ||
      (synchronous != "full" && synchronous != "normal")) {
    std::fprintf(
        stderr,
        "fleet_sqlite_peer: --db, --devices >= 1, --batch >= 1, --duration-ms >= 1 needed\n");
    return 2;
  }
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) die(db, "open");
  exec(db, "PRAGMA journal_mode=WAL");
  exec(db, synchronous == "full" ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
  if (register_devices > 0) return registerDevices(db, register_devices, batch, synchronous);
  exec(db,
       "CREATE TABLE IF NOT EXISTS twins (device_id TEXT PRIMARY KEY, desired TEXT NOT NULL, "
       "version INTEGER NOT NULL)");
  exec(db, "DELETE FROM twins");
  exec(db, "BEGIN");
  sqlite3_stmt* insert = nullptr;
  if (sqlite3_prepare_v2(db, "INSERT INTO twins VALUES (?1, '{\"$version\":1}', 1)", -1, &insert,
                         nullptr) != SQLITE_OK) {
    die(db, "prepare insert");
  }
  for (long d = 0; d < devices; ++d) {
    const std::string id = deviceId(d);
    sqlite3_bind_text(insert, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert) != SQLITE_DONE) die(db, "insert");
    sqlite3_reset(insert);
  }
  sqlite3_finalize(insert);
  exec(db, "COMMIT");

  // Read-modify-write of the document in one statement: merge the patch (RFC 7396, like a
  // twin PATCH) and bump the section version, as the hub does per update.
  sqlite3_stmt* update = nullptr;
  if (sqlite3_prepare_v2(
          db,
          "UPDATE twins SET desired = json_set(json_patch(desired, ?1), '$.\"$version\"', "
          "version + 1), version = version + 1 WHERE device_id = ?2",
          -1, &update, nullptr) != SQLITE_OK) {
    die(db, "prepare update");
  }
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + std::chrono::milliseconds(duration_ms);
  long updates = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    exec(db, "BEGIN IMMEDIATE");
    for (long b = 0; b < batch; ++b) {
      const std::string id = deviceId(updates % devices);
      const std::string patch = "{\"setpoint\":" + std::to_string(updates) + ",\"mode\":\"eco\"}";
      if (batch > 1) exec(db, "SAVEPOINT w");
      sqlite3_bind_text(update, 1, patch.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(update, 2, id.c_str(), -1, SQLITE_TRANSIENT);
      if (sqlite3_step(update) != SQLITE_DONE || sqlite3_changes(db) != 1) die(db, "update");
      sqlite3_reset(update);
      if (batch > 1) exec(db, "RELEASE w");
      ++updates;
    }
    exec(db, "COMMIT");
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  sqlite3_finalize(update);
  sqlite3_close(db);
  std::printf(
      "{\"updates\":%ld,\"elapsed_s\":%.3f,\"updates_per_s\":%.1f,\"batch\":%ld,\"synchronous\":\"%"
      "s\","
      "\"journal_mode\":\"wal\"}\n",
      updates, elapsed, static_cast<double>(updates) / elapsed, batch, synchronous.c_str());
  return 0;
}
