#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <future>
#include <iterator>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "common/histogram.hpp"
#include "common/status.hpp"

namespace iothub::store {

// The thread of a backend's group-commit writer and the queue in front of it: a submitter
// queues an operation and blocks until the writer reports the outcome of the transaction
// that ran it; the thread takes what is queued in batches (up to `max_batch` operations)
// and hands each batch to the backend's BatchRunner.
//
// Thread-safety: submit(), queued() and shutdown() may be called from any thread but the
// writer thread itself; the BatchRunner runs on the writer thread only.
template <class Operation>
class WriterThread {
 public:
  struct Pending {
    Operation operation;
    std::promise<Status> done;
  };
  // Runs `batch` and sets results[i] (pre-sized, all ok) to the outcome of batch[i].
  using BatchRunner =
      std::function<void(std::vector<Pending>& batch, std::vector<Status>& results)>;

  // Starts the thread. Declare the WriterThread after every member `run_batch` uses, so
  // it starts after them and is destroyed (joined) before them.
  WriterThread(std::size_t max_batch, BatchRunner run_batch)
      : max_batch_(std::max<std::size_t>(max_batch, 1)), run_batch_(std::move(run_batch)) {
    thread_ = std::thread([this] { run(); });
    writer_thread_id_ = thread_.get_id();
  }
  // Calls shutdown().
  ~WriterThread() { shutdown(); }
  WriterThread(const WriterThread&) = delete;
  WriterThread& operator=(const WriterThread&) = delete;

  // Queues `operation` and blocks until its batch has run; returns the result the
  // BatchRunner gave it. Errors: Cancelled once shutdown() has begun (the operation is not
  // run); ServerError for an empty operation or a call from the writer thread (an
  // operation writing to the store would wait for itself).
  Status submit(Operation operation) {
    if (!operation) return Status(ErrorCode::ServerError, "empty store operation");
    if (std::this_thread::get_id() == writer_thread_id_) {
      return Status(ErrorCode::ServerError, "a store operation must not write to the store");
    }
    std::future<Status> done;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return Status(ErrorCode::Cancelled, "the store is shutting down");
      Pending& pending = queue_.emplace_back(Pending{std::move(operation), {}});
      done = pending.done.get_future();
    }
    wake_.notify_one();
    return done.get();
  }

  // Operations waiting for the writer right now.
  std::size_t queued() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
  }

  // Operations per batch, and how long each batch took to run and commit.
  const AtomicHistogram& batchSizes() const { return batch_sizes_; }
  const AtomicHistogram& batchSeconds() const { return batch_seconds_; }

  // Stops accepting operations, runs every operation already queued, joins the thread.
  // Idempotent.
  void shutdown() {
    std::lock_guard serialize(shutdown_mutex_);
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::vector<Pending> batch;
    std::vector<Status> results;
    while (true) {
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        // Drain what is queued even when stopping: accepted writes are always executed.
        if (queue_.empty()) return;
        auto end =
            queue_.begin() + static_cast<std::ptrdiff_t>(std::min(queue_.size(), max_batch_));
        batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(end));
        queue_.erase(queue_.begin(), end);
      }
      results.assign(batch.size(), Status::ok());
      const auto started = std::chrono::steady_clock::now();
      run_batch_(batch, results);
      batch_seconds_.observe(std::chrono::steady_clock::now() - started);
      batch_sizes_.observe(static_cast<double>(batch.size()));
      // Operations capture references into their callers' stacks: destroy them before
      // any caller is released.
      for (Pending& pending : batch) pending.operation = nullptr;
      for (std::size_t i = 0; i < batch.size(); ++i) batch[i].done.set_value(std::move(results[i]));
      batch.clear();
    }
  }

  const std::size_t max_batch_;
  const BatchRunner run_batch_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Pending> queue_;  // guarded by mutex_
  bool stopping_ = false;      // guarded by mutex_
  std::mutex shutdown_mutex_;  // serializes shutdown() calls around join()
  std::thread thread_;
  std::thread::id writer_thread_id_;  // set by the constructor, then immutable
  AtomicHistogram batch_sizes_{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}};
  AtomicHistogram batch_seconds_{AtomicHistogram::latencyBounds()};
};

// Runs `body` (a callable taking the backend's connection and returning Result<T>) through
// `writer`'s submit() and returns its value once its transaction committed.
template <class T, class Writer, class Body>
Result<T> submitReturning(Writer& writer, Body&& body) {
  std::optional<T> value;
  Status status = writer.submit([&](auto& connection) -> Status {
    Result<T> result = body(connection);
    if (!result) return result.status();
    value = std::move(result).value();
    return Status::ok();
  });
  if (!status) return status;
  return std::move(*value);
}

}  // namespace iothub::store
