#include "store/postgresql/pg_connection.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <utility>

namespace iothub::store {
namespace {

using Clock = std::chrono::steady_clock;

// A transaction of ours never waits between statements for longer than a mutation
// callback takes. A session idle inside a transaction for this long belongs to a frozen or
// partitioned process: the server ends it, so its row locks cannot block other nodes.
constexpr std::string_view kSessionSetup =
    "SELECT set_config('synchronous_commit', 'on', false)"
    " WHERE current_setting('synchronous_commit') = 'off';"
    " SET idle_in_transaction_session_timeout = '60s'";

std::string trimmed(const char* message) {
  std::string text = message != nullptr ? message : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// A short name for a statement in error messages: its first words, never its values
// (those travel as parameters).
std::string describe(std::string_view sql) {
  constexpr std::size_t kMax = 60;
  std::string text(sql.substr(0, std::min(sql.find('\n'), kMax)));
  if (text.size() < sql.size()) text += "...";
  return text;
}

ErrorCode classify(std::string_view sqlstate) {
  if (sqlstate.starts_with("08") ||  // connection exception
      sqlstate.starts_with("53") ||  // insufficient resources (too many connections, disk full)
      sqlstate == "57P01" || sqlstate == "57P02" || sqlstate == "57P03" ||  // shutting down
      sqlstate == "57014" ||  // query cancelled (statement_timeout set by an operator)
      sqlstate == "55P03" ||  // lock not available (lock_timeout)
      sqlstate == kPgSerializationFailure || sqlstate == kPgDeadlockDetected) {
    return ErrorCode::ServiceUnavailable;
  }
  if (sqlstate.starts_with("XX0")) return ErrorCode::StoreCorruption;  // data/index corrupted
  return ErrorCode::ServerError;
}

void ignoreNotice(void*, const char*) {}

// Waits until the socket is ready for `events` (POLLIN/POLLOUT) or `deadline` passes.
// Returns the ready events, or 0 when the deadline passed.
Result<short> waitSocket(pg_conn* connection, short events, Clock::time_point deadline) {
  int fd = PQsocket(connection);
  if (fd < 0) return Status(ErrorCode::ServiceUnavailable, "the connection has no socket");
  while (true) {
    auto remaining = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (remaining.count() <= 0) return short{0};
    pollfd descriptor{fd, events, 0};
    int ready = ::poll(&descriptor, 1,
                       static_cast<int>(std::min<std::int64_t>(remaining.count(), INT_MAX)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return Status(ErrorCode::ServiceUnavailable,
                    std::string("waiting for the PostgreSQL socket: ") + std::strerror(errno));
    }
    if (ready > 0) return descriptor.revents;
  }
}

}  // namespace

Result<std::optional<std::chrono::seconds>> parsePgConninfo(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    std::string message = error != nullptr ? trimmed(error) : "out of memory";
    PQfreemem(error);
    return Status(ErrorCode::ArgumentInvalid, "invalid PostgreSQL connection string: " + message);
  }
  std::optional<std::chrono::seconds> connect_timeout;
  Status status;
  for (PQconninfoOption* option = options; option->keyword != nullptr; ++option) {
    if (std::strcmp(option->keyword, "connect_timeout") != 0 || option->val == nullptr) continue;
    std::string_view text = option->val;
    long long seconds = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (ec != std::errc() || end != text.data() + text.size() || seconds < 0) {
      status = Status(ErrorCode::ArgumentInvalid,
                      "invalid PostgreSQL connection string: connect_timeout must be a whole "
                      "number of seconds, not '" +
                          std::string(text) + "'");
    } else if (seconds > 0) {
      connect_timeout = std::chrono::seconds(seconds);
    }
  }
  PQconninfoFree(options);
  if (!status) return status;
  return connect_timeout;
}

// --- PgParams ---

PgParams& PgParams::add(std::string_view text) {
  if (text.find('\0') != std::string_view::npos && error_.isOk()) {
    error_ = Status(ErrorCode::ArgumentInvalid,
                    "a text value holds a NUL character, which PostgreSQL cannot store");
  }
  values_.emplace_back(std::string(text));
  return *this;
}

PgParams& PgParams::add(std::int64_t number) {
  values_.emplace_back(std::to_string(number));
  return *this;
}

PgParams& PgParams::add(bool flag) {
  values_.emplace_back(flag ? "true" : "false");
  return *this;
}

PgParams& PgParams::add(const std::optional<std::string>& text) {
  return text ? add(std::string_view(*text)) : addNull();
}

PgParams& PgParams::add(std::optional<std::int64_t> number) {
  return number ? add(*number) : addNull();
}

PgParams& PgParams::addNull() {
  values_.emplace_back(std::nullopt);
  return *this;
}

std::vector<const char*> PgParams::pointers() const {
  std::vector<const char*> pointers;
  pointers.reserve(values_.size());
  for (const std::optional<std::string>& value : values_) {
    pointers.push_back(value ? value->c_str() : nullptr);
  }
  return pointers;
}

// --- PgArrayBuilder ---

void PgArrayBuilder::add(std::string_view element) {
  if (text_.size() > 1) text_ += ',';
  text_ += '"';
  for (char c : element) {
    if (c == '"' || c == '\\') text_ += '\\';
    text_ += c;
  }
  text_ += '"';
}

void PgArrayBuilder::add(std::int64_t element) {
  if (text_.size() > 1) text_ += ',';
  text_ += std::to_string(element);
}

void PgArrayBuilder::add(const std::optional<std::string>& element) {
  if (element) {
    add(std::string_view(*element));
  } else {
    addNull();
  }
}

void PgArrayBuilder::addNull() {
  if (text_.size() > 1) text_ += ',';
  text_ += "NULL";  // unquoted: SQL NULL ("NULL" quoted is the text)
}

std::string PgArrayBuilder::finish() && {
  text_ += '}';
  return std::move(text_);
}

// --- PgRow ---

void PgRow::noteBad(int column) const {
  if (!bad_column_) bad_column_ = column;
}

bool PgRow::isNull(int column) const { return PQgetisnull(result_.handle(), row_, column) != 0; }

std::string PgRow::text(int column) const {
  const char* value = PQgetvalue(result_.handle(), row_, column);
  int length = PQgetlength(result_.handle(), row_, column);
  if (value == nullptr || length < 0) return {};
  return std::string(value, static_cast<std::size_t>(length));
}

std::optional<std::string> PgRow::optionalText(int column) const {
  if (isNull(column)) return std::nullopt;
  return text(column);
}

std::int64_t PgRow::int64(int column) const {
  const char* value = PQgetvalue(result_.handle(), row_, column);
  int length = PQgetlength(result_.handle(), row_, column);
  std::int64_t number = 0;
  if (value == nullptr || length <= 0 || isNull(column)) {
    noteBad(column);
    return 0;
  }
  auto [end, ec] = std::from_chars(value, value + length, number);
  if (ec != std::errc() || end != value + length) {
    noteBad(column);
    return 0;
  }
  return number;
}

std::optional<std::int64_t> PgRow::optionalInt64(int column) const {
  if (isNull(column)) return std::nullopt;
  return int64(column);
}

bool PgRow::flag(int column) const {
  std::string value = text(column);
  if (value == "t") return true;
  if (value != "f") noteBad(column);
  return false;
}

Status PgRow::status() const {
  if (!bad_column_) return Status::ok();
  const char* name = PQfname(result_.handle(), *bad_column_);
  return Status(ErrorCode::StoreCorruption, "stored column " +
                                                std::string(name != nullptr ? name : "?") +
                                                " does not hold the value it should");
}

// --- PgResult ---

PgResult::PgResult(pg_result* result) : result_(result) {}

PgResult::PgResult(PgResult&& other) noexcept : result_(std::exchange(other.result_, nullptr)) {}

PgResult& PgResult::operator=(PgResult&& other) noexcept {
  if (this != &other) {
    PQclear(result_);
    result_ = std::exchange(other.result_, nullptr);
  }
  return *this;
}

PgResult::~PgResult() { PQclear(result_); }

int PgResult::rows() const { return PQntuples(result_); }

std::int64_t PgResult::affectedRows() const {
  std::string_view text = PQcmdTuples(result_);
  std::int64_t count = 0;
  std::from_chars(text.data(), text.data() + text.size(), count);
  return count;
}

std::string_view PgResult::commandTag() const {
  const char* tag = PQcmdStatus(result_);
  return tag != nullptr ? tag : "";
}

// --- PgConnection ---

Result<std::unique_ptr<PgConnection>> PgConnection::connect(const PgConnectSettings& settings) {
  // Entries after the expanded connection string ("dbname") override it, entries before
  // it are defaults it may override: the client encoding is always UTF8, the application
  // name only a fallback.
  const char* const keywords[] = {"fallback_application_name", "dbname", "client_encoding",
                                  nullptr};
  const char* const values[] = {"iothub", settings.conninfo.c_str(), "UTF8", nullptr};
  pg_conn* raw = PQconnectStartParams(keywords, values, 1);
  if (raw == nullptr) {
    return Status(ErrorCode::ServerError, "PostgreSQL: out of memory allocating a connection");
  }
  // Owns `raw` until the connection is set up.
  std::unique_ptr<pg_conn, void (*)(pg_conn*)> pending(raw, PQfinish);
  auto failure = [&](ErrorCode code, std::string_view what) {
    return Status(code, "PostgreSQL: cannot connect: " + std::string(what));
  };

  const Clock::time_point deadline = Clock::now() + settings.connect_timeout;
  PostgresPollingStatusType polled = PGRES_POLLING_WRITING;
  while (PQstatus(raw) != CONNECTION_BAD && polled != PGRES_POLLING_OK &&
         polled != PGRES_POLLING_FAILED) {
    if (PQsocket(raw) >= 0) {
      Result<short> ready =
          waitSocket(raw, polled == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
      if (!ready) return failure(ErrorCode::ServiceUnavailable, ready.status().message());
      if (*ready == 0) {
        return failure(ErrorCode::ServiceUnavailable,
                       "no answer within " + std::to_string(settings.connect_timeout.count()) +
                           " ms (connect timeout)");
      }
    }
    polled = PQconnectPoll(raw);
  }
  if (PQstatus(raw) != CONNECTION_OK) {
    return failure(ErrorCode::ServiceUnavailable, trimmed(PQerrorMessage(raw)));
  }

  const char* encoding = PQparameterStatus(raw, "server_encoding");
  if (encoding == nullptr || std::string_view(encoding) != "UTF8") {
    return Status(ErrorCode::ArgumentInvalid,
                  "PostgreSQL: the database's encoding is " +
                      std::string(encoding != nullptr ? encoding : "unknown") +
                      "; iothub needs a database created with ENCODING 'UTF8'");
  }
  if (PQsetnonblocking(raw, 1) != 0) {
    return failure(ErrorCode::ServerError, trimmed(PQerrorMessage(raw)));
  }
  PQsetNoticeProcessor(raw, ignoreNotice, nullptr);

  std::unique_ptr<PgConnection> connection(new PgConnection(pending.release(), settings));
  Result<PgResult> setup = connection->exec(kSessionSetup);
  if (!setup) return setup.status();
  return connection;
}

PgConnection::PgConnection(pg_conn* connection, const PgConnectSettings& settings)
    : connection_(connection), query_deadline_(settings.query_deadline) {}

PgConnection::~PgConnection() { close(); }

void PgConnection::close() {
  // Non-blocking mode: PQfinish queues its goodbye message without waiting for the server,
  // so closing never hangs on a frozen server.
  if (connection_ != nullptr) PQfinish(connection_);
  connection_ = nullptr;
}

bool PgConnection::inTransaction() const {
  if (connection_ == nullptr) return false;
  PGTransactionStatusType status = PQtransactionStatus(connection_);
  return status == PQTRANS_INTRANS || status == PQTRANS_INERROR;
}

bool PgConnection::inFailedTransaction() const {
  return connection_ != nullptr && PQtransactionStatus(connection_) == PQTRANS_INERROR;
}

Status PgConnection::lost(std::string_view context) {
  std::string message = connection_ != nullptr ? trimmed(PQerrorMessage(connection_)) : "";
  close();
  return Status(ErrorCode::ServiceUnavailable, "PostgreSQL: " + std::string(context) +
                                                   ": the connection was lost" +
                                                   (message.empty() ? "" : ": " + message));
}

Status PgConnection::failed(std::string_view context, const pg_result* result) {
  const char* sqlstate = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  last_sqlstate_ = sqlstate != nullptr ? sqlstate : "";
  if (PQstatus(connection_) == CONNECTION_BAD) return lost(context);
  const char* primary = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
  std::string message =
      primary != nullptr ? std::string(primary) : trimmed(PQresultErrorMessage(result));
  return Status(classify(last_sqlstate_), "PostgreSQL: " + std::string(context) + ": " + message +
                                              " (SQLSTATE " + last_sqlstate_ + ")");
}

Status PgConnection::waitFor(bool write, Clock::time_point deadline, std::string_view context) {
  Result<short> ready = waitSocket(connection_, write ? (POLLIN | POLLOUT) : POLLIN, deadline);
  if (!ready) return lost(context);
  if (*ready == 0) {
    timed_out_ = true;
    close();
    return Status(ErrorCode::ServiceUnavailable,
                  "PostgreSQL: " + std::string(context) + ": no answer within " +
                      std::to_string(query_deadline_.count()) +
                      " ms (query deadline); the connection was closed");
  }
  // Input that arrived while we were sending (the server may be waiting for us to read
  // before it reads more) is consumed here, so sending a large batch cannot deadlock.
  if ((*ready & (POLLIN | POLLHUP | POLLERR)) != 0 && PQconsumeInput(connection_) == 0) {
    return lost(context);
  }
  return Status::ok();
}

Result<PgResult> PgConnection::finish(std::string_view context) {
  const Clock::time_point deadline = Clock::now() + query_deadline_;
  while (true) {
    int flushed = PQflush(connection_);
    if (flushed == 0) break;
    if (flushed < 0) return lost(context);
    IOTHUB_RETURN_IF_ERROR(waitFor(true, deadline, context));
  }

  std::optional<Status> error;
  std::optional<PgResult> last;
  while (true) {
    while (PQisBusy(connection_) != 0) {
      IOTHUB_RETURN_IF_ERROR(waitFor(false, deadline, context));
    }
    pg_result* raw = PQgetResult(connection_);
    if (raw == nullptr) break;
    PgResult result(raw);
    switch (PQresultStatus(raw)) {
      case PGRES_COMMAND_OK:
      case PGRES_TUPLES_OK:
      case PGRES_EMPTY_QUERY:
        last = std::move(result);
        break;
      case PGRES_FATAL_ERROR:
      case PGRES_NONFATAL_ERROR:
      case PGRES_BAD_RESPONSE:
        if (!error) error = failed(context, raw);
        if (connection_ == nullptr) return *error;
        break;
      default:  // COPY and pipeline states: this class never starts them
        if (!error) {
          error = Status(ErrorCode::ServerError, "PostgreSQL: " + std::string(context) +
                                                     ": unexpected result " +
                                                     PQresStatus(PQresultStatus(raw)));
        }
        break;
    }
  }
  if (PQstatus(connection_) == CONNECTION_BAD) return lost(context);
  if (error) return *error;
  if (!last) {
    return Status(ErrorCode::ServerError, "PostgreSQL: " + std::string(context) + ": no result");
  }
  return std::move(*last);
}

Result<PgResult> PgConnection::query(std::string_view sql, const PgParams& params) {
  const std::string context = describe(sql);
  if (broken()) {
    return Status(ErrorCode::ServiceUnavailable,
                  "PostgreSQL: " + context + ": the connection is closed");
  }
  if (!params.error().isOk()) return params.error();
  last_sqlstate_.clear();
  auto statement = prepared_.find(sql);
  if (statement == prepared_.end()) {
    std::string name = "iothub_" + std::to_string(prepared_.size() + 1);
    std::string text(sql);
    if (PQsendPrepare(connection_, name.c_str(), text.c_str(), 0, nullptr) == 0) {
      return lost(context);
    }
    Result<PgResult> prepared = finish(context);
    if (!prepared) return prepared.status();
    statement = prepared_.emplace(std::move(text), std::move(name)).first;
  }
  std::vector<const char*> values = params.pointers();
  if (PQsendQueryPrepared(connection_, statement->second.c_str(), params.size(), values.data(),
                          nullptr, nullptr, 0) == 0) {
    return lost(context);
  }
  return finish(context);
}

Result<PgResult> PgConnection::exec(std::string_view sql) {
  const std::string context = describe(sql);
  if (broken()) {
    return Status(ErrorCode::ServiceUnavailable,
                  "PostgreSQL: " + context + ": the connection is closed");
  }
  last_sqlstate_.clear();
  std::string text(sql);
  if (PQsendQuery(connection_, text.c_str()) == 0) return lost(context);
  return finish(context);
}

}  // namespace iothub::store
