#include "store/sqlite/sqlite_connection.hpp"

#include <sqlite3.h>

#include <limits>
#include <utility>

namespace iothub::store {
namespace {

// Long enough to ride out a checkpoint or another process holding the lock briefly;
// within one process only the writer thread writes, so this is rarely reached.
constexpr int kBusyTimeoutMs = 10'000;

int textLength(std::string_view text) {
  // SQLite takes an int length; anything larger than that is far beyond SQLITE_MAX_LENGTH
  // and is rejected by SQLite as SQLITE_TOOBIG.
  return text.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())
             ? std::numeric_limits<int>::max()
             : static_cast<int>(text.size());
}

}  // namespace

Status sqliteError(sqlite3* db, int rc, std::string_view context) {
  std::string message(context);
  message += ": ";
  message += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  int primary = rc & 0xff;
  if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
    return Status(ErrorCode::StoreCorruption, std::move(message));
  }
  return Status(ErrorCode::ServerError, std::move(message));
}

void SqliteCloser::operator()(sqlite3* db) const { sqlite3_close(db); }

void SqliteFinalizer::operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }

// --- SqliteStatement ---

SqliteStatement::SqliteStatement(SqliteConnection* connection, sqlite3_stmt* statement,
                                 bool* in_use)
    : connection_(connection), statement_(statement), in_use_(in_use) {
  *in_use_ = true;
}

SqliteStatement::SqliteStatement(SqliteConnection* connection, SqliteStatementHandle statement)
    : connection_(connection),
      owned_(std::move(statement)),
      statement_(owned_.get()),
      in_use_(nullptr) {}

SqliteStatement::SqliteStatement(SqliteStatement&& other) noexcept
    : connection_(other.connection_),
      owned_(std::move(other.owned_)),
      statement_(std::exchange(other.statement_, nullptr)),
      in_use_(std::exchange(other.in_use_, nullptr)),
      bind_error_(other.bind_error_) {}

SqliteStatement::~SqliteStatement() {
  if (statement_ == nullptr) return;
  sqlite3_reset(statement_);
  sqlite3_clear_bindings(statement_);
  if (in_use_ != nullptr) *in_use_ = false;
}

void SqliteStatement::noteBind(int rc) {
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
}

SqliteStatement& SqliteStatement::bind(int index, std::string_view text) {
  // An empty string_view may carry a null data pointer, which SQLite would bind as NULL.
  const char* data = text.data() != nullptr ? text.data() : "";
  noteBind(sqlite3_bind_text(statement_, index, data, textLength(text), SQLITE_TRANSIENT));
  return *this;
}

SqliteStatement& SqliteStatement::bind(int index, std::int64_t number) {
  noteBind(sqlite3_bind_int64(statement_, index, number));
  return *this;
}

SqliteStatement& SqliteStatement::bind(int index, const std::optional<std::string>& text) {
  return text ? bind(index, std::string_view(*text)) : bindNull(index);
}

SqliteStatement& SqliteStatement::bindNull(int index) {
  noteBind(sqlite3_bind_null(statement_, index));
  return *this;
}

Result<bool> SqliteStatement::step() {
  if (bind_error_ != 0) {
    return sqliteError(nullptr, bind_error_, "binding a statement parameter");
  }
  int rc = sqlite3_step(statement_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Status error = connection_->lastError("executing statement");
  // Reset now so a failed statement does not keep its transaction state until destruction.
  sqlite3_reset(statement_);
  return error;
}

Status SqliteStatement::run() {
  while (true) {
    Result<bool> row = step();
    if (!row) return row.status();
    if (!*row) return Status::ok();
  }
}

void SqliteStatement::reset() { sqlite3_reset(statement_); }

bool SqliteStatement::isNull(int column) const {
  return sqlite3_column_type(statement_, column) == SQLITE_NULL;
}

std::int64_t SqliteStatement::int64(int column) const {
  return sqlite3_column_int64(statement_, column);
}

std::string SqliteStatement::text(int column) const {
  const unsigned char* data = sqlite3_column_text(statement_, column);
  int size = sqlite3_column_bytes(statement_, column);
  if (data == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(data), static_cast<std::size_t>(size));
}

std::optional<std::string> SqliteStatement::optionalText(int column) const {
  if (isNull(column)) return std::nullopt;
  return text(column);
}

// --- SqliteConnection ---

Result<std::unique_ptr<SqliteConnection>> SqliteConnection::open(const std::filesystem::path& file,
                                                                 Mode mode) {
  // NOMUTEX: a connection is only ever used by one thread at a time (see the header), so
  // SQLite's per-connection mutex would be pure overhead.
  int flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  flags |=
      mode == Mode::ReadOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(file.c_str(), &raw, flags, nullptr);
  SqliteHandle db(raw);  // sqlite3_open_v2 may return a handle even on failure
  std::string context = "opening " + file.string();
  if (rc != SQLITE_OK) return sqliteError(db.get(), rc, context);
  rc = sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  if (rc != SQLITE_OK) return sqliteError(db.get(), rc, context);
  return std::unique_ptr<SqliteConnection>(new SqliteConnection(std::move(db)));
}

Status SqliteConnection::exec(std::string_view sql) {
  std::string text(sql);  // sqlite3_exec needs a NUL-terminated string
  char* message = nullptr;
  int rc = sqlite3_exec(db_.get(), text.c_str(), nullptr, nullptr, &message);
  sqlite3_free(message);  // the same text is available from sqlite3_errmsg
  if (rc != SQLITE_OK) return lastError("executing SQL");
  return Status::ok();
}

Result<SqliteStatement> SqliteConnection::prepare(std::string_view sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end() && !it->second.in_use) {
    return SqliteStatement(this, it->second.statement.get(), &it->second.in_use);
  }
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db_.get(), sql.data(), textLength(sql), SQLITE_PREPARE_PERSISTENT,
                              &raw, nullptr);
  SqliteStatementHandle statement(raw);
  if (rc != SQLITE_OK) return lastError("preparing statement");
  if (statement == nullptr) {
    return Status(ErrorCode::ServerError, "preparing statement: the SQL text is empty");
  }
  if (it != cache_.end()) {
    // The cached copy is busy further up this thread's stack: use a private one.
    return SqliteStatement(this, std::move(statement));
  }
  auto [inserted, ok] = cache_.emplace(std::string(sql), CachedStatement{std::move(statement)});
  (void)ok;
  return SqliteStatement(this, inserted->second.statement.get(), &inserted->second.in_use);
}

Result<std::int64_t> SqliteConnection::queryInt64(std::string_view sql) {
  Result<SqliteStatement> statement = prepare(sql);
  if (!statement) return statement.status();
  Result<bool> row = statement->step();
  if (!row) return row.status();
  if (!*row) return Status(ErrorCode::ServerError, "query returned no row: " + std::string(sql));
  return statement->int64(0);
}

std::int64_t SqliteConnection::changes() const { return sqlite3_changes64(db_.get()); }

bool SqliteConnection::inTransaction() const { return sqlite3_get_autocommit(db_.get()) == 0; }

Status SqliteConnection::lastError(std::string_view context) const {
  return sqliteError(db_.get(), sqlite3_extended_errcode(db_.get()), context);
}

}  // namespace iothub::store
