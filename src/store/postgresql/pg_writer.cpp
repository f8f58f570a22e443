#include "store/postgresql/pg_writer.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <string>
#include <thread>
#include <utility>

namespace iothub::store {
namespace {

constexpr std::string_view kSavepoint = "SAVEPOINT iothub_operation";
constexpr std::string_view kRollbackToSavepoint = "ROLLBACK TO SAVEPOINT iothub_operation";
constexpr std::string_view kReleaseSavepoint = "RELEASE SAVEPOINT iothub_operation";

// A short pause before running a deadlocked batch again, growing with each attempt, so the
// transaction we collided with can finish first.
constexpr std::chrono::milliseconds kRetryPause{10};

Status withPrefix(std::string_view prefix, const Status& error) {
  return Status(error.code(), std::string(prefix) + error.message());
}

bool isRetryable(std::string_view sqlstate) {
  return sqlstate == kPgSerializationFailure || sqlstate == kPgDeadlockDetected;
}

}  // namespace

PgWriter::PgWriter(PgConnectSettings settings, std::unique_ptr<PgConnection> connection,
                   std::size_t max_batch, int max_attempts)
    : settings_(std::move(settings)),
      max_attempts_(std::max(max_attempts, 1)),
      connection_(std::move(connection)),
      connected_before_(connection_ != nullptr),
      thread_(max_batch, [this](std::vector<Pending>& batch, std::vector<Status>& results) {
        runBatch(batch, results);
      }) {}

PgWriter::~PgWriter() { shutdown(); }

Status PgWriter::submit(Operation operation) { return thread_.submit(std::move(operation)); }

PgWriter::Stats PgWriter::stats() const {
  Stats stats;
  stats.transactions = transactions_.load();
  stats.operations = operations_.load();
  stats.failed_commits = failed_commits_.load();
  stats.retried_transactions = retried_transactions_.load();
  stats.reconnects = reconnects_.load();
  stats.queued_operations = thread_.queued();
  return stats;
}

void PgWriter::shutdown() { thread_.shutdown(); }

void PgWriter::runBatch(std::vector<Pending>& batch, std::vector<Status>& results) {
  for (int attempt = 1;; ++attempt) {
    if (runTransaction(batch, results, attempt < max_attempts_) == Outcome::Done) break;
    retried_transactions_.fetch_add(1, std::memory_order_relaxed);
    std::this_thread::sleep_for(kRetryPause * attempt);
  }
  // A broken connection is replaced by the next batch's begin().
  if (connection_ != nullptr && connection_->broken()) connection_.reset();
}

Status PgWriter::begin() {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = connection_ != nullptr && !connection_->broken();
    if (!reused) {
      connection_.reset();
      Result<std::unique_ptr<PgConnection>> connected = PgConnection::connect(settings_);
      if (!connected) return connected.status();
      connection_ = std::move(connected).value();
      if (connected_before_) reconnects_.fetch_add(1, std::memory_order_relaxed);
      connected_before_ = true;
    }
    Result<PgResult> began = connection_->exec("BEGIN");
    if (began) return Status::ok();
    // A connection that died while idle (the server restarted, a proxy dropped it) fails
    // here; BEGIN changed nothing, so a new connection may try again. A fresh connection
    // failing, or a server too slow to answer, is reported.
    if (!reused || !connection_->broken() || connection_->timedOut()) {
      return withPrefix("starting a write transaction: ", began.status());
    }
  }
  return Status(ErrorCode::ServiceUnavailable, "starting a write transaction failed twice");
}

void PgWriter::rollback() {
  if (connection_ != nullptr && connection_->inTransaction()) {
    (void)connection_->exec("ROLLBACK");
  }
}

PgWriter::Outcome PgWriter::runTransaction(std::vector<Pending>& batch,
                                           std::vector<Status>& results, bool may_retry) {
  Status began = begin();
  if (!began) {
    std::fill(results.begin(), results.end(), began);
    return Outcome::Done;
  }

  // A batch of one needs no savepoint: its failure rolls back the whole transaction.
  const bool isolate = batch.size() > 1;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    Step step = runOne(batch[i], isolate, may_retry, results[i]);
    if (step == Step::Retry) {
      rollback();
      return Outcome::Retry;
    }
    if (step == Step::Abandon) {
      // Nothing since BEGIN survives: the operations that had succeeded, and those not run
      // yet, get the reason; those that failed keep their own error.
      const bool lost = connection_->broken();
      const Status cause = results[i];
      Status abandoned(lost ? ErrorCode::ServiceUnavailable : ErrorCode::ServerError,
                       "the write transaction was abandoned" +
                           (cause.isOk() ? std::string() : ": " + cause.message()));
      for (std::size_t j = 0; j < batch.size(); ++j) {
        if (j > i || results[j].isOk()) results[j] = abandoned;
      }
      if (!cause.isOk()) results[i] = cause;
      rollback();
      return Outcome::Done;
    }
  }
  if (!isolate && !results.front().isOk()) {
    rollback();
    return Outcome::Done;
  }

  Result<PgResult> committed = connection_->exec("COMMIT");
  if (committed && committed->commandTag() == "COMMIT") {
    transactions_.fetch_add(1, std::memory_order_relaxed);
    return Outcome::Done;
  }
  if (!committed && !connection_->broken() && may_retry &&
      isRetryable(connection_->lastSqlState())) {
    return Outcome::Retry;  // a failed COMMIT has already ended the transaction
  }
  failed_commits_.fetch_add(1, std::memory_order_relaxed);
  Status error;
  if (committed) {
    error = Status(ErrorCode::ServerError, "the server rolled the transaction back at COMMIT");
  } else if (connection_->broken()) {
    error = withPrefix("the outcome of the commit is unknown: ", committed.status());
  } else {
    error = withPrefix("commit failed: ", committed.status());
  }
  rollback();
  for (Status& result : results) {
    if (result.isOk()) result = error;  // a failed operation keeps its own error
  }
  return Outcome::Done;
}

PgWriter::Step PgWriter::runOne(Pending& pending, bool isolate, bool may_retry, Status& result) {
  if (isolate) {
    Result<PgResult> opened = connection_->exec(kSavepoint);
    if (!opened) {
      result = withPrefix("starting a savepoint: ", opened.status());
      return Step::Abandon;
    }
  }
  try {
    result = pending.operation(*connection_);
  } catch (const std::exception& e) {
    result = Status(ErrorCode::ServerError, std::string("store operation failed: ") + e.what());
  } catch (...) {
    result = Status(ErrorCode::ServerError, "store operation failed with an unknown exception");
  }
  operations_.fetch_add(1, std::memory_order_relaxed);
  if (connection_->broken()) return Step::Abandon;

  if (result.isOk()) {
    if (!isolate) return Step::Continue;
    Result<PgResult> released = connection_->exec(kReleaseSavepoint);
    if (released) return Step::Continue;
    result = withPrefix("releasing a savepoint: ", released.status());
    return Step::Abandon;
  }
  if (may_retry && connection_->inFailedTransaction() && isRetryable(connection_->lastSqlState())) {
    return Step::Retry;
  }
  if (!isolate) return Step::Continue;  // the caller rolls the transaction back
  Result<PgResult> undone = connection_->exec(kRollbackToSavepoint);
  if (undone) undone = connection_->exec(kReleaseSavepoint);
  // When the operation's changes cannot be isolated, the whole transaction goes.
  return undone ? Step::Continue : Step::Abandon;
}

}  // namespace iothub::store
