#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace iothub::store {

// Builds the Status for a failed SQLite call on `db` (may be null when the handle could not
// be allocated): StoreCorruption for SQLITE_CORRUPT / SQLITE_NOTADB, ServerError otherwise.
// The message is "`context`: <sqlite message>".
Status sqliteError(sqlite3* db, int rc, std::string_view context);

// Deleters for the two SQLite handles, so ownership is always a unique_ptr.
struct SqliteCloser {
  void operator()(sqlite3* db) const;
};
struct SqliteFinalizer {
  void operator()(sqlite3_stmt* statement) const;
};
using SqliteHandle = std::unique_ptr<sqlite3, SqliteCloser>;
using SqliteStatementHandle = std::unique_ptr<sqlite3_stmt, SqliteFinalizer>;

class SqliteConnection;

// A prepared statement borrowed from a connection's cache (or, when the cached one is
// already in use further up the stack, a private one). Move-only; on destruction the
// statement is reset and its bindings cleared, so it never pins a read snapshot or keeps
// a write lock. Use it on the thread that owns the connection only.
//
// Bind failures are remembered and reported by the next step()/run(), so call sites bind
// without checking each call.
class SqliteStatement {
 public:
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&&) = delete;
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;
  ~SqliteStatement();

  // Parameters are 1-based, as in SQL (?1, ?2, ...). Text is copied.
  SqliteStatement& bind(int index, std::string_view text);
  SqliteStatement& bind(int index, const std::string& text) {
    return bind(index, std::string_view(text));
  }
  SqliteStatement& bind(int index, std::int64_t number);
  SqliteStatement& bind(int index, const std::optional<std::string>& text);
  SqliteStatement& bindNull(int index);

  // Advances: true when a row is available, false when the statement is done.
  // Errors: ServerError (or StoreCorruption) with SQLite's message.
  Result<bool> step();
  // Steps a statement that returns no rows to completion.
  Status run();
  // Makes the statement ready to run again; bindings are kept (rebind what changes).
  void reset();

  // Columns are 0-based, valid after step() returned true.
  bool isNull(int column) const;
  std::int64_t int64(int column) const;
  bool flag(int column) const { return int64(column) != 0; }
  std::string text(int column) const;
  std::optional<std::string> optionalText(int column) const;

 private:
  friend class SqliteConnection;
  // Borrows a cached statement (marks it in use until destruction).
  SqliteStatement(SqliteConnection* connection, sqlite3_stmt* statement, bool* in_use);
  // Owns a private statement.
  SqliteStatement(SqliteConnection* connection, SqliteStatementHandle statement);
  void noteBind(int rc);

  SqliteConnection* connection_;
  SqliteStatementHandle owned_;  // set for a private statement
  sqlite3_stmt* statement_;      // the statement in use (owned_ or a cached one)
  bool* in_use_;                 // the cache entry's flag; null for a private statement
  int bind_error_ = 0;
};

// One SQLite connection with a cache of prepared statements keyed by SQL text.
// Not thread-safe: one thread uses a connection at a time (the writer thread owns the write
// connection; readers are checked out of a pool).
class SqliteConnection {
 public:
  enum class Mode { ReadWriteCreate, ReadOnly };

  // Opens (and for ReadWriteCreate creates) the database file. Configures busy_timeout;
  // the caller sets the pragmas it needs. Errors: ServerError with SQLite's message.
  static Result<std::unique_ptr<SqliteConnection>> open(const std::filesystem::path& file,
                                                        Mode mode);
  ~SqliteConnection() = default;
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  // Runs one or more SQL statements without parameters (schema, pragmas, BEGIN/COMMIT).
  Status exec(std::string_view sql);

  // A prepared statement for `sql`, compiled once per connection and reused.
  Result<SqliteStatement> prepare(std::string_view sql);

  // Runs `sql` (e.g. "PRAGMA user_version") and returns the first column of its first row.
  Result<std::int64_t> queryInt64(std::string_view sql);

  // Rows changed by the most recent INSERT/UPDATE/DELETE.
  std::int64_t changes() const;
  // False when the connection is in autocommit mode, i.e. no transaction is open (SQLite
  // rolls a transaction back by itself after some errors, such as SQLITE_FULL).
  bool inTransaction() const;
  // Status for the connection's most recent error.
  Status lastError(std::string_view context) const;

  sqlite3* handle() const { return db_.get(); }

 private:
  struct CachedStatement {
    SqliteStatementHandle statement;
    bool in_use = false;
  };

  explicit SqliteConnection(SqliteHandle db) : db_(std::move(db)) {}

  SqliteHandle db_;
  // Declared after db_ so every statement is finalized before the connection closes.
  std::map<std::string, CachedStatement, std::less<>> cache_;
};

}  // namespace iothub::store
