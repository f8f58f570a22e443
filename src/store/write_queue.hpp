#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <future>
#include <iterator>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.hpp"

namespace iothub::store {

// The hand-off between the threads that write and a backend's single writer thread (group
// commit): a submitter queues an operation and blocks until the writer reports the outcome
// of the transaction that ran it; the writer takes queued operations in batches.
//
// Thread-safety: submit(), size() and close() may be called from any thread; takeBatch()
// and complete() only from the writer thread named by setWriterThread().
template <class Operation>
class WriteQueue {
 public:
  struct Pending {
    Operation operation;
    std::promise<Status> done;
  };

  // The thread that runs the operations: a submit() from it (an operation writing to the
  // store) would wait for itself, so it is refused instead. Call before the first submit().
  void setWriterThread(std::thread::id id) { writer_thread_ = id; }

  // Queues `operation` and blocks until complete() reports its result. Errors: Cancelled
  // once close() was called (the operation is not run); ServerError for an empty operation
  // or a call from the writer thread.
  Status submit(Operation operation) {
    if (!operation) return Status(ErrorCode::ServerError, "empty store operation");
    if (std::this_thread::get_id() == writer_thread_) {
      return Status(ErrorCode::ServerError, "a store operation must not write to the store");
    }
    std::future<Status> done;
    {
      std::lock_guard lock(mutex_);
      if (closed_) return Status(ErrorCode::Cancelled, "the store is shutting down");
      Pending& pending = queue_.emplace_back(Pending{std::move(operation), {}});
      done = pending.done.get_future();
    }
    wake_.notify_one();
    return done.get();
  }

  // Waits until operations are queued or the queue is closed, then moves up to `max` (at
  // least one) of them, oldest first, into `batch`. Returns false once the queue is closed
  // and empty: operations accepted before close() are always handed out.
  bool takeBatch(std::vector<Pending>& batch, std::size_t max) {
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [this] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return false;
    std::size_t count = std::min(queue_.size(), std::max<std::size_t>(max, 1));
    auto end = queue_.begin() + static_cast<std::ptrdiff_t>(count);
    batch.insert(batch.end(), std::make_move_iterator(queue_.begin()),
                 std::make_move_iterator(end));
    queue_.erase(queue_.begin(), end);
    return true;
  }

  // Releases every submitter of `batch` with its result (results[i] for batch[i]) and
  // empties `batch`. Operations capture references into their callers' stacks, so they are
  // destroyed before any caller is released.
  static void complete(std::vector<Pending>& batch, std::vector<Status>& results) {
    for (Pending& pending : batch) pending.operation = nullptr;
    for (std::size_t i = 0; i < batch.size(); ++i) batch[i].done.set_value(std::move(results[i]));
    batch.clear();
  }

  // Refuses later submissions; takeBatch() still hands out what is queued. Idempotent.
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    wake_.notify_all();
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Pending> queue_;  // guarded by mutex_
  bool closed_ = false;        // guarded by mutex_
  std::thread::id writer_thread_;
};

}  // namespace iothub::store
