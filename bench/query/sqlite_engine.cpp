#include <sqlite3.h>

#include <system_error>

#include "sql_engine.hpp"

namespace iothub::bench {

Result<std::unique_ptr<SqliteEngine>> SqliteEngine::open(const std::filesystem::path& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status(ErrorCode::ServerError, "sqlite open " + path.string() + ": " + message);
  }
  std::unique_ptr<SqliteEngine> engine(new SqliteEngine(db, path));
  // Bulk load without durability; reads through a map of the whole file (up to 16 GiB).
  IOTHUB_RETURN_IF_ERROR(engine->execute(
      "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA mmap_size=17179869184;"
      "PRAGMA cache_size=-262144; PRAGMA temp_store=MEMORY"));
  return engine;
}

SqliteEngine::~SqliteEngine() {
  for (auto& [sql, statement] : statements_) sqlite3_finalize(statement);
  sqlite3_close(db_);
}

Status SqliteEngine::error(const std::string& what) const {
  return Status(ErrorCode::ServerError, "sqlite: " + what + ": " + sqlite3_errmsg(db_));
}

Status SqliteEngine::execute(const std::string& sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message != nullptr ? message : "unknown error";
    sqlite3_free(message);
    return Status(ErrorCode::ServerError, "sqlite: " + sql + ": " + text);
  }
  return Status::ok();
}

Status SqliteEngine::load(std::size_t count, const RowSource& source) {
  IOTHUB_RETURN_IF_ERROR(
      execute("DROP TABLE IF EXISTS twins; CREATE TABLE twins(device_id TEXT PRIMARY KEY, twin "
              "TEXT NOT NULL)"));
  IOTHUB_RETURN_IF_ERROR(execute("BEGIN"));
  sqlite3_stmt* insert = nullptr;
  if (sqlite3_prepare_v2(db_, "INSERT INTO twins(device_id, twin) VALUES(?1, ?2)", -1, &insert,
                         nullptr) != SQLITE_OK) {
    return error("prepare insert");
  }
  for (std::size_t i = 0; i < count; ++i) {
    auto [id, twin] = source(i);
    sqlite3_bind_text(insert, 1, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(insert, 2, twin.data(), static_cast<int>(twin.size()), SQLITE_TRANSIENT);
    if (sqlite3_step(insert) != SQLITE_DONE) {
      Status failed = error("insert");
      sqlite3_finalize(insert);
      return failed;
    }
    sqlite3_reset(insert);
  }
  sqlite3_finalize(insert);
  IOTHUB_RETURN_IF_ERROR(execute("COMMIT"));
  return execute("ANALYZE");
}

Result<SqlRows> SqliteEngine::query(const std::string& sql) {
  sqlite3_stmt*& statement = statements_[sql];
  if (statement == nullptr &&
      sqlite3_prepare_v2(db_, sql.c_str(), -1, &statement, nullptr) != SQLITE_OK) {
    statements_.erase(sql);
    return error("prepare " + sql);
  }
  SqlRows rows;
  int columns = sqlite3_column_count(statement);
  int rc = SQLITE_OK;
  while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
    auto& row = rows.emplace_back();
    row.reserve(columns);
    for (int c = 0; c < columns; ++c) {
      const unsigned char* text = sqlite3_column_text(statement, c);
      row.emplace_back(text != nullptr ? reinterpret_cast<const char*>(text) : "",
                       static_cast<std::size_t>(sqlite3_column_bytes(statement, c)));
    }
  }
  sqlite3_reset(statement);
  if (rc != SQLITE_DONE) return error("step " + sql);
  return rows;
}

Result<std::int64_t> SqliteEngine::tableBytes() {
  std::error_code ec;
  auto size = std::filesystem::file_size(path_, ec);
  if (ec) return Status(ErrorCode::ServerError, "size of " + path_.string() + ": " + ec.message());
  return static_cast<std::int64_t>(size);
}

}  // namespace iothub::bench
