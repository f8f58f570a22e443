#include "index/twin_index_feed.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string_view>
#include <unordered_set>
#include <utility>

namespace iothub::index {

Result<std::unique_ptr<TwinIndexFeed>> TwinIndexFeed::start(IndexedStore& store, TwinIndex& index,
                                                            TwinIndexFeedOptions options) {
  store::ChangeFeed* feed = store.changeFeed();
  if (feed == nullptr) {
    return Status(ErrorCode::InvalidOperation,
                  "the store has no change feed: only a shared store (PostgreSQL) has one");
  }
  std::unique_ptr<TwinIndexFeed> started(
      new TwinIndexFeed(store, *feed, index, std::move(options)));
  IOTHUB_RETURN_IF_ERROR(started->fullReload());
  started->full_reloads_ = 0;  // the initial load is not a reload
  started->thread_ = std::thread([raw = started.get()] { raw->run(); });
  return started;
}

TwinIndexFeed::TwinIndexFeed(IndexedStore& store, store::ChangeFeed& feed, TwinIndex& index,
                             TwinIndexFeedOptions options)
    : store_(store), feed_(feed), index_(index), options_(std::move(options)) {}

TwinIndexFeed::~TwinIndexFeed() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  done_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status TwinIndexFeed::catchUp(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (stopping_) return Status(ErrorCode::Cancelled, "the twin index feed is stopping");
  const std::uint64_t ticket = ++requested_;
  wake_.notify_one();
  bool finished = done_.wait_for(lock, timeout, [&] { return completed_ >= ticket || stopping_; });
  if (!finished) {
    return Status(ErrorCode::ServiceUnavailable,
                  "the twin index could not catch up with the database within " +
                      std::to_string(timeout.count()) + " ms");
  }
  if (completed_ < ticket) return Status(ErrorCode::Cancelled, "the twin index feed is stopping");
  // The status of the newest round; it too started after this call.
  return last_status_;
}

TwinIndexFeed::Stats TwinIndexFeed::stats() const {
  return Stats{.rounds = rounds_.load(),
               .failed_rounds = failed_rounds_.load(),
               .devices_applied = devices_applied_.load(),
               .full_reloads = full_reloads_.load(),
               .pruned_rows = pruned_rows_.load()};
}

void TwinIndexFeed::run() {
  using Clock = std::chrono::steady_clock;
  const bool prunes = options_.prune_interval.count() > 0;
  Clock::time_point next_prune = Clock::now() + options_.prune_interval;
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait_for(lock, options_.poll_interval,
                   [this] { return stopping_ || requested_ > completed_; });
    if (stopping_) return;
    const std::uint64_t ticket = requested_;
    lock.unlock();

    Status status = round();
    rounds_.fetch_add(1);
    if (!status) {
      failed_rounds_.fetch_add(1);
      if (!failing_) {
        spdlog::warn("twin index feed: reading the changes of other nodes failed: {}",
                     status.toString());
      }
    } else if (failing_) {
      spdlog::info("twin index feed: reading changes again");
    }
    failing_ = !status;

    lock.lock();
    completed_ = std::max(completed_, ticket);
    last_status_ = status;
    done_.notify_all();

    // After the waiters are released: pruning may take a while, and no query waits for it.
    if (prunes && Clock::now() >= next_prune) {
      lock.unlock();
      next_prune = Clock::now() + options_.prune_interval;
      Result<std::int64_t> pruned = feed_.prune(options_.retention);
      if (pruned) {
        pruned_rows_.fetch_add(static_cast<std::uint64_t>(*pruned));
      } else {
        spdlog::warn("twin index feed: pruning the change log failed: {}",
                     pruned.status().toString());
      }
      lock.lock();
    }
  }
}

Status TwinIndexFeed::round() {
  if (needs_reload_) IOTHUB_RETURN_IF_ERROR(fullReload());
  Result<store::ChangeBatch> batch = feed_.readChanges(cursor_);
  if (!batch) return batch.status();
  if (batch->fell_behind) {
    spdlog::warn(
        "twin index feed: the change log was pruned past this node's position (cursor {}); "
        "reloading the whole index",
        cursor_.toString());
    needs_reload_ = true;
    IOTHUB_RETURN_IF_ERROR(fullReload());
    batch = feed_.readChanges(cursor_);
    if (!batch) return batch.status();
    if (batch->fell_behind) {
      needs_reload_ = true;
      return Status(ErrorCode::ServiceUnavailable,
                    "the change log was pruned again while the twin index reloaded");
    }
  }
  const std::vector<std::string>& ids = batch->device_ids;
  const std::size_t step = std::max<std::size_t>(options_.batch_size, 1);
  for (std::size_t begin = 0; begin < ids.size(); begin += step) {
    std::vector<std::string> chunk(
        ids.begin() + static_cast<std::ptrdiff_t>(begin),
        ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), begin + step)));
    // On failure the cursor stays: the next round reads these changes again.
    IOTHUB_RETURN_IF_ERROR(apply(chunk));
  }
  cursor_ = std::move(batch->next);
  return Status::ok();
}

Status TwinIndexFeed::apply(const std::vector<std::string>& device_ids) {
  Result<std::vector<store::DeviceState>> states = std::vector<store::DeviceState>{};
  {
    // Read and applied under the devices' write locks (see the class comment).
    IndexedStore::DeviceLocks locks = store_.lockDevices(device_ids);
    states = feed_.readDevices(device_ids);
    if (!states) return states.status();
    if (options_.before_apply) options_.before_apply(device_ids);
    for (const store::DeviceState& state : *states) {
      if (state.device) {
        index_.putDevice(*state.device, state.twin,
                         state.presence.has_value() && state.presence->connected);
      } else {
        index_.removeDevice(state.device_id);
        index_.setConnected(state.device_id, false);
      }
    }
  }
  devices_applied_.fetch_add(states->size());
  if (options_.after_apply) options_.after_apply(*states);
  return Status::ok();
}

Status TwinIndexFeed::fullReload() {
  // The cursor first: whatever commits from here on is read again after the load.
  Result<store::ChangeCursor> cursor = feed_.currentCursor();
  if (!cursor) return cursor.status();
  Result<std::vector<std::string>> connected = feed_.connectedDevices();
  if (!connected) return connected.status();
  std::unordered_set<std::string_view> connected_ids(connected->begin(), connected->end());
  IOTHUB_RETURN_IF_ERROR(index_.load(
      store_, [&connected_ids](std::string_view id) { return connected_ids.contains(id); }));
  cursor_ = std::move(cursor).value();
  needs_reload_ = false;
  full_reloads_.fetch_add(1);
  return Status::ok();
}

}  // namespace iothub::index
