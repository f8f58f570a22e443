#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "common/status.hpp"
#include "store/postgresql/pg_connection.hpp"
#include "store/writer_thread.hpp"

namespace iothub::store {

// Group commit over one PostgreSQL connection: a dedicated thread drains queued operations
// and runs up to `max_batch` of them in ONE transaction, each inside its own SAVEPOINT
// (a batch of one needs none).
//
// - An operation that returns an error (or throws) is rolled back to its savepoint: its
//   own changes vanish, the other operations of the batch still commit.
// - A caller is released only after COMMIT returned (or the transaction failed), so once
//   submit() returns the write is durable and every connection sees it.
// - A deadlock or serialization failure (SQLSTATE 40P01 / 40001) rolls the whole
//   transaction back and runs the batch again, up to `max_attempts` transactions; in the
//   last one such an error only fails its own operation. An operation may therefore run
//   more than once; only its last run counts.
// - A lost connection or a missed query deadline fails every operation of the transaction
//   with ServiceUnavailable (for COMMIT itself the outcome is unknown, and the message
//   says so); the next batch connects again. A connection found dead at BEGIN (the server
//   restarted while it was idle) is replaced at once, since nothing was done on it.
//
// Thread-safety: submit(), stats() and shutdown() may be called from any thread.
// Operations run on the writer thread, in submission order per submitting thread.
class PgWriter {
 public:
  // Runs on the writer thread inside the batch's transaction. It must not call submit()
  // (that would deadlock) and should be quick: the whole batch waits for it.
  using Operation = std::function<Status(PgConnection& connection)>;

  struct Stats {
    std::uint64_t transactions = 0;          // transactions committed
    std::uint64_t operations = 0;            // operation runs (whatever their outcome)
    std::uint64_t failed_commits = 0;        // transactions whose COMMIT failed
    std::uint64_t retried_transactions = 0;  // transactions run again after a deadlock
    std::uint64_t reconnects = 0;            // connections opened after the first
    std::uint64_t queued_operations = 0;     // operations waiting for the writer right now
  };

  // Starts the writer thread. `connection` (may be null: the first batch connects) is used
  // exclusively by that thread from now on. `max_batch` and `max_attempts` are clamped to
  // at least 1.
  PgWriter(PgConnectSettings settings, std::unique_ptr<PgConnection> connection,
           std::size_t max_batch, int max_attempts);
  // Calls shutdown().
  ~PgWriter();
  PgWriter(const PgWriter&) = delete;
  PgWriter& operator=(const PgWriter&) = delete;

  // Queues `operation` and blocks until its transaction has committed or failed; returns
  // the operation's own error, or the transaction's. Errors: Cancelled once shutdown() has
  // begun (the operation is not run); ServiceUnavailable when PostgreSQL cannot be reached
  // or does not answer in time; ServerError when an operation throws or submit() is called
  // from an operation.
  Status submit(Operation operation);

  Stats stats() const;
  const AtomicHistogram& batchSizes() const { return thread_.batchSizes(); }
  const AtomicHistogram& batchSeconds() const { return thread_.batchSeconds(); }

  // Stops accepting operations, runs every operation already queued, joins the writer
  // thread. Idempotent; must not be called from an operation.
  void shutdown();

 private:
  using Thread = WriterThread<Operation>;
  using Pending = Thread::Pending;
  enum class Outcome { Done, Retry };
  enum class Step { Continue, Retry, Abandon };

  void runBatch(std::vector<Pending>& batch, std::vector<Status>& results);
  // One transaction over the whole batch; fills `results`.
  Outcome runTransaction(std::vector<Pending>& batch, std::vector<Status>& results, bool may_retry);
  // Runs one operation (inside a savepoint when `isolate`), leaving its result in `result`.
  Step runOne(Pending& pending, bool isolate, bool may_retry, Status& result);
  // Starts a transaction, connecting first when there is no usable connection.
  Status begin();
  void rollback();

  const PgConnectSettings settings_;
  const int max_attempts_;
  std::unique_ptr<PgConnection> connection_;  // used only by the writer thread
  bool connected_before_;                     // used only by the writer thread

  std::atomic<std::uint64_t> transactions_{0};
  std::atomic<std::uint64_t> operations_{0};
  std::atomic<std::uint64_t> failed_commits_{0};
  std::atomic<std::uint64_t> retried_transactions_{0};
  std::atomic<std::uint64_t> reconnects_{0};

  Thread thread_;  // last: started after, and joined before, everything it uses
};

}  // namespace iothub::store
