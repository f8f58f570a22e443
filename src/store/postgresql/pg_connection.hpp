#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"

struct pg_conn;
struct pg_result;

namespace iothub::store {

// Where and how to connect. Built once by PostgresStore::open() and shared by every
// connection of a store.
struct PgConnectSettings {
  std::string conninfo;  // validated by parsePgConninfo()
  // Upper bound for establishing a connection (TCP/socket connect, TLS, authentication,
  // session setup): a server that accepts but never answers cannot hold a thread longer.
  std::chrono::milliseconds connect_timeout{10'000};
  // Upper bound for each query, from sending it to its last result.
  std::chrono::milliseconds query_deadline{10'000};
};

// Checks a libpq connection string, in either form: a URI (`postgresql://user@host:port/db?…`,
// also `postgres://`) or key=value pairs (`host=… port=… dbname=…`). An empty string means
// libpq's defaults (PGHOST etc.).
// Returns the connect_timeout the string sets (whole seconds), if any.
// Errors: ArgumentInvalid naming what libpq could not parse.
Result<std::optional<std::chrono::seconds>> parsePgConninfo(const std::string& conninfo);

// SQLSTATEs the store reacts to.
inline constexpr std::string_view kPgSerializationFailure = "40001";
inline constexpr std::string_view kPgDeadlockDetected = "40P01";
inline constexpr std::string_view kPgForeignKeyViolation = "23503";
inline constexpr std::string_view kPgUniqueViolation = "23505";

// Values for the $1, $2, ... of one statement, sent in libpq's text format (NULL for
// nullopt). A text that cannot be sent (it holds a NUL byte, which PostgreSQL text cannot
// store) is remembered and reported by the query as ArgumentInvalid.
class PgParams {
 public:
  PgParams& add(std::string_view text);
  PgParams& add(const char* text) { return add(std::string_view(text)); }
  PgParams& add(const std::string& text) { return add(std::string_view(text)); }
  PgParams& add(std::int64_t number);
  PgParams& add(bool flag);
  PgParams& add(const std::optional<std::string>& text);
  PgParams& add(std::optional<std::int64_t> number);
  PgParams& addNull();

  int size() const { return static_cast<int>(values_.size()); }
  // NUL-terminated values, null pointers for NULL; valid while this object is unchanged.
  std::vector<const char*> pointers() const;
  const Status& error() const { return error_; }

 private:
  std::vector<std::optional<std::string>> values_;
  Status error_;
};

// An SQL array literal (`{"a","b"}`) of texts, for one `$n::text[]` parameter: batches go
// to the server as a few array parameters instead of one statement per row.
class PgArrayBuilder {
 public:
  void add(std::string_view element);
  void add(const std::string& element) { add(std::string_view(element)); }
  void add(std::int64_t element);
  void add(const std::optional<std::string>& element);  // NULL when empty
  void addNull();
  std::string finish() &&;

 private:
  std::string text_ = "{";
};

class PgResult;

// One row of a result. Accessors never throw: a value that does not decode as asked (which
// only a damaged database or a wrong column index can cause) reads as 0 / false and makes
// status() report StoreCorruption.
class PgRow {
 public:
  PgRow(const PgResult& result, int row) : result_(result), row_(row) {}

  bool isNull(int column) const;
  std::string text(int column) const;
  std::optional<std::string> optionalText(int column) const;
  std::int64_t int64(int column) const;
  std::optional<std::int64_t> optionalInt64(int column) const;
  bool flag(int column) const;
  Status status() const;

 private:
  void noteBad(int column) const;

  const PgResult& result_;
  int row_;
  mutable std::optional<int> bad_column_;
};

// A finished command's result (rows and/or the command tag). Move-only.
class PgResult {
 public:
  explicit PgResult(pg_result* result);
  PgResult(PgResult&& other) noexcept;
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;
  ~PgResult();

  int rows() const;
  PgRow row(int index) const { return PgRow(*this, index); }
  // Rows an INSERT/UPDATE/DELETE touched (0 for other commands).
  std::int64_t affectedRows() const;
  // The command tag ("COMMIT", "ROLLBACK", "INSERT 0 1", ...).
  std::string_view commandTag() const;

  pg_result* handle() const { return result_; }

 private:
  pg_result* result_;
};

// One libpq connection, used by one thread at a time, with a cache of prepared statements.
//
// Every round trip runs on libpq's non-blocking API under a client-side deadline, because
// a frozen server (SIGSTOP, a hung host) keeps TCP connections open and acknowledged:
// nothing else would ever time out. When the deadline passes, or the connection fails, the
// connection is closed at once and broken() turns true; every later call fails without
// touching the network. The owner then replaces it (connections are cheap to open again).
//
// Error codes: ServiceUnavailable for a lost or broken connection, a missed deadline, a
// server shutting down or out of connections, and serialization failures and deadlocks
// (all transient: retrying later may succeed); StoreCorruption for SQLSTATE class XX
// (data or index corruption); ArgumentInvalid for a parameter that cannot be sent;
// ServerError for every other SQL error. lastSqlState() tells them apart further.
class PgConnection {
 public:
  // Connects and prepares the session: non-blocking mode, notices dropped (they would go to
  // stderr), client encoding UTF8, synchronous_commit at least `on` (a commit returns only
  // once its WAL is flushed on the server, whatever the server's default). Errors:
  // ServiceUnavailable (unreachable, refused, timed out, authentication failed) with
  // libpq's message; ArgumentInvalid for a database whose encoding is not UTF8.
  static Result<std::unique_ptr<PgConnection>> connect(const PgConnectSettings& settings);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs one statement with parameters ($1, $2, ...), prepared on first use and reused.
  Result<PgResult> query(std::string_view sql, const PgParams& params = {});
  // Runs one or more statements without parameters in one round trip (BEGIN, COMMIT,
  // SAVEPOINT, schema scripts); the first error stops them. Returns the last result.
  Result<PgResult> exec(std::string_view sql);

  // True once the connection is unusable (see the class comment).
  bool broken() const { return connection_ == nullptr; }
  // True when the connection broke because the server did not answer in time.
  bool timedOut() const { return timed_out_; }
  // The SQLSTATE of the last failed command ("" when the last command succeeded or never
  // reached the server).
  const std::string& lastSqlState() const { return last_sqlstate_; }
  // Inside a transaction block (idle or failed), as opposed to autocommit.
  bool inTransaction() const;
  // Inside a transaction block that an error aborted (only ROLLBACK [TO] works).
  bool inFailedTransaction() const;

 private:
  PgConnection(pg_conn* connection, const PgConnectSettings& settings);

  // Sends what is buffered and waits for the results of the command sent last; keeps the
  // first error. On a missed deadline or a lost connection, closes the connection.
  Result<PgResult> finish(std::string_view context);
  Status waitFor(bool write, std::chrono::steady_clock::time_point deadline,
                 std::string_view context);
  Status lost(std::string_view context);
  Status failed(std::string_view context, const pg_result* result);
  void close();

  pg_conn* connection_;
  std::chrono::milliseconds query_deadline_;
  bool timed_out_ = false;
  std::string last_sqlstate_;
  std::map<std::string, std::string, std::less<>> prepared_;  // SQL text -> statement name
};

}  // namespace iothub::store
