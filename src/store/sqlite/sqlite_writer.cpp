#include "store/sqlite/sqlite_writer.hpp"

#include <algorithm>
#include <exception>
#include <string>
#include <utility>
#include <vector>

namespace iothub::store {
namespace {

Status runStatement(SqliteConnection& connection, std::string_view sql) {
  Result<SqliteStatement> statement = connection.prepare(sql);
  if (!statement) return statement.status();
  return statement->run();
}

Status withPrefix(std::string_view prefix, const Status& error) {
  return Status(error.code(), std::string(prefix) + error.message());
}

}  // namespace

SqliteWriter::SqliteWriter(SqliteConnection& connection, std::size_t max_batch)
    : connection_(connection),
      thread_(max_batch, [this](std::vector<Pending>& batch, std::vector<Status>& results) {
        runBatch(batch, results);
      }) {}

SqliteWriter::~SqliteWriter() { shutdown(); }

Status SqliteWriter::submit(Operation operation) { return thread_.submit(std::move(operation)); }

SqliteWriter::Stats SqliteWriter::stats() const {
  Stats stats;
  stats.transactions = transactions_.load();
  stats.operations = operations_.load();
  stats.failed_commits = failed_commits_.load();
  stats.queued_operations = thread_.queued();
  return stats;
}

void SqliteWriter::shutdown() { thread_.shutdown(); }

void SqliteWriter::runBatch(std::vector<Pending>& batch, std::vector<Status>& results) {
  std::size_t next = 0;
  while (next < batch.size()) next = runTransaction(batch, next, results);
}

std::size_t SqliteWriter::runTransaction(std::vector<Pending>& batch, std::size_t begin,
                                         std::vector<Status>& results) {
  const std::size_t end = batch.size();
  Status began = runStatement(connection_, "BEGIN IMMEDIATE");
  if (!began) {
    Status error = withPrefix("starting a write transaction: ", began);
    for (std::size_t i = begin; i < end; ++i) results[i] = error;
    return end;
  }

  for (std::size_t i = begin; i < end; ++i) {
    results[i] = runOne(batch[i]);
    operations_.fetch_add(1, std::memory_order_relaxed);
    if (!connection_.inTransaction()) {
      // SQLite abandoned the transaction (I/O error, disk full, ...): nothing done since
      // BEGIN survives. The remaining operations get a fresh transaction.
      Status lost(ErrorCode::ServerError,
                  "the write transaction was rolled back" +
                      (results[i].isOk() ? std::string() : ": " + results[i].message()));
      for (std::size_t j = begin; j <= i; ++j) {
        if (results[j].isOk()) results[j] = lost;
      }
      return i + 1;
    }
  }

  Status committed = runStatement(connection_, "COMMIT");
  if (!committed) {
    // A failed COMMIT (e.g. a deferred constraint) may leave the transaction open.
    if (connection_.inTransaction()) (void)runStatement(connection_, "ROLLBACK");
    failed_commits_.fetch_add(1, std::memory_order_relaxed);
    Status error = withPrefix("commit failed: ", committed);
    for (std::size_t i = begin; i < end; ++i) {
      if (results[i].isOk()) results[i] = error;  // a failed operation keeps its own error
    }
    return end;
  }
  transactions_.fetch_add(1, std::memory_order_relaxed);
  return end;
}

Status SqliteWriter::runOne(Pending& pending) {
  Status opened = runStatement(connection_, "SAVEPOINT iothub_operation");
  if (!opened) return withPrefix("starting a savepoint: ", opened);

  Status result;
  try {
    result = pending.operation(connection_);
  } catch (const std::exception& e) {
    result = Status(ErrorCode::ServerError, std::string("store operation failed: ") + e.what());
  } catch (...) {
    result = Status(ErrorCode::ServerError, "store operation failed with an unknown exception");
  }
  if (!connection_.inTransaction()) return result;  // the caller handles the lost transaction

  if (!result.isOk()) {
    Status undone = runStatement(connection_, "ROLLBACK TO iothub_operation");
    if (undone) undone = runStatement(connection_, "RELEASE iothub_operation");
    if (!undone) {
      // The operation's partial changes could not be isolated: give up the whole
      // transaction rather than commit them.
      (void)runStatement(connection_, "ROLLBACK");
    }
    return result;
  }
  Status released = runStatement(connection_, "RELEASE iothub_operation");
  if (!released) {
    (void)runStatement(connection_, "ROLLBACK");
    return withPrefix("releasing a savepoint: ", released);
  }
  return result;
}

}  // namespace iothub::store
