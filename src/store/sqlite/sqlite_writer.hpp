#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "common/status.hpp"
#include "store/sqlite/sqlite_connection.hpp"
#include "store/writer_thread.hpp"

namespace iothub::store {

// Group commit over one write connection: a dedicated thread drains queued operations
// and runs up to `max_batch` of them in ONE transaction, each inside its own SAVEPOINT.
//
// - An operation that returns an error (or throws) is rolled back to its savepoint: its
//   own changes vanish, the other operations of the batch still commit.
// - If COMMIT fails (or SQLite abandons the transaction, e.g. on SQLITE_FULL), every
//   operation of that transaction gets an error, since none of them is durable.
// - A caller of submit() is released only after its transaction committed (or failed),
//   so once submit() returns, readers on other connections see the write.
//
// Thread-safety: submit(), stats() and shutdown() may be called from any thread.
// Operations run on the writer thread, in submission order per submitting thread.
class SqliteWriter {
 public:
  // Runs on the writer thread inside the batch's transaction. It must not call submit()
  // (that would deadlock) and should be quick: the whole batch waits for it.
  using Operation = std::function<Status(SqliteConnection& connection)>;

  struct Stats {
    std::uint64_t transactions = 0;       // transactions committed
    std::uint64_t operations = 0;         // operations executed (whatever their outcome)
    std::uint64_t failed_commits = 0;     // transactions whose COMMIT failed
    std::uint64_t queued_operations = 0;  // operations waiting for the writer right now
  };

  // Starts the writer thread, which uses `connection` exclusively until shutdown().
  // `connection` must outlive this writer. `max_batch` is clamped to at least 1.
  SqliteWriter(SqliteConnection& connection, std::size_t max_batch);
  // Calls shutdown().
  ~SqliteWriter();
  SqliteWriter(const SqliteWriter&) = delete;
  SqliteWriter& operator=(const SqliteWriter&) = delete;

  // Queues `operation` and blocks until its transaction has committed or failed; returns
  // the operation's own error, or the transaction's. Errors: Cancelled once shutdown()
  // has begun (the operation is not run); ServerError when an operation throws, the
  // transaction fails, or submit() is called from an operation.
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

  void runBatch(std::vector<Pending>& batch, std::vector<Status>& results);
  // Runs batch[begin, end) in one transaction, stopping early if SQLite abandons it.
  // Returns the index of the first operation it did not get to.
  std::size_t runTransaction(std::vector<Pending>& batch, std::size_t begin,
                             std::vector<Status>& results);
  Status runOne(Pending& pending);

  SqliteConnection& connection_;  // used only by the writer thread

  std::atomic<std::uint64_t> transactions_{0};
  std::atomic<std::uint64_t> operations_{0};
  std::atomic<std::uint64_t> failed_commits_{0};

  Thread thread_;  // last: started after, and joined before, everything it uses
};

}  // namespace iothub::store
