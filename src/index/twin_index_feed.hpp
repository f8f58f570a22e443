#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.hpp"
#include "index/indexed_store.hpp"
#include "index/twin_index.hpp"
#include "store/change_feed.hpp"

namespace iothub::index {

struct TwinIndexFeedOptions {
  // How often the feed reads the change log when nobody asks it to catch up: how long a
  // write on another node may take to reach this node's index for readers that do not
  // call catchUp() (job target selection, for instance).
  std::chrono::milliseconds poll_interval{200};
  // Devices whose state is read in one statement and applied under one set of locks.
  std::size_t batch_size = 500;
  // How often this node prunes the change log (0: never), and what it keeps.
  std::chrono::milliseconds prune_interval{60'000};
  std::chrono::milliseconds retention{600'000};
  // Test seam: runs on the feed's thread after a batch of device states was read and before
  // it is applied, while the devices' write locks are held.
  std::function<void(const std::vector<std::string>& device_ids)> before_apply;
  // Told, on the feed's thread, the states of each batch it applied (after the devices'
  // locks are released): the hub closes local connections of devices that another node
  // disabled or deleted, should that node's NATS message have been lost.
  std::function<void(const std::vector<store::DeviceState>& states)> after_apply;
};

// Keeps a node's TwinIndex current with writes that any node of the cluster made to the
// shared store (docs/cluster.md, "Queries"): a thread reads the store's change feed
// (store/change_feed.hpp) every poll interval, or at once when catchUp() asks, and applies
// the current state of each changed device to the index: putDevice with the presence row's
// `connected` as connectionState, or removeDevice. In cluster mode the feed is the only
// source of connectionState: the hub does not call TwinIndex::setConnected itself.
//
// Ordering with this node's own writes. IndexedStore applies a local write to the index
// right after it commits, while the feed may have read an older state of the same device
// just before: applied later, that older state would replace the newer one. So the feed
// reads and applies each batch under IndexedStore::lockDevices(): a local write either
// finished before the read (the read sees it) or waits until the batch is applied. Writes
// of other nodes reach the index only through the feed, which applies them in the order it
// read them; a device deleted and created again is read as it is now (putDevice replaces
// the row whatever its twin version). Applying a state twice is harmless, so a change read
// twice (after a full reload, or a batch that failed half way) does no harm.
//
// Full reload. The initial load, and a reload when the feed's cursor fell behind the
// change log's prune horizon (the node could not read for longer than the retention),
// take a cursor FIRST, then load the whole index (TwinIndex::load, with presence), then
// read the changes after that cursor: a write that committed while the load ran, and
// possibly reached the old index but not the loaded one, is read again and applied.
//
// Thread-safe. The destructor stops the thread (waiting for a read in progress, bounded by
// the store's query deadline); no catchUp() may be running or start once it has begun
// (the hub joins its worker threads first).
class TwinIndexFeed {
 public:
  struct Stats {
    std::uint64_t rounds = 0;         // reads of the change log that completed
    std::uint64_t failed_rounds = 0;  // reads or applies that failed (retried next round)
    std::uint64_t devices_applied = 0;
    std::uint64_t full_reloads = 0;  // after the initial load
    std::uint64_t pruned_rows = 0;
  };

  // Loads `index` from `store` (TwinIndex::load, connection states from the presence
  // table), then starts the feed's thread. `store` and `index` must outlive the feed, and
  // `store` must be the IndexedStore every local write of `index` goes through.
  // Errors: InvalidOperation when the store has no change feed (SQLite); the store's.
  static Result<std::unique_ptr<TwinIndexFeed>> start(IndexedStore& store, TwinIndex& index,
                                                      TwinIndexFeedOptions options = {});
  ~TwinIndexFeed();
  TwinIndexFeed(const TwinIndexFeed&) = delete;
  TwinIndexFeed& operator=(const TwinIndexFeed&) = delete;

  // Blocks until the index reflects every transaction that committed before the call, on
  // any node: the feed reads the log in a snapshot taken after the call and applies what
  // it found. Called before every FROM devices query (QueryRunner's before_query), so a
  // query sees every write acknowledged before it was sent. Costs one round trip to the
  // database when nothing changed; concurrent callers share rounds.
  // Errors: ServiceUnavailable when that takes longer than `timeout` (the database is
  // frozen or very slow; the feed keeps trying), or the store's error from that round;
  // Cancelled when the feed is stopping.
  Status catchUp(std::chrono::milliseconds timeout);

  Stats stats() const;

 private:
  TwinIndexFeed(IndexedStore& store, store::ChangeFeed& feed, TwinIndex& index,
                TwinIndexFeedOptions options);

  void run();
  // One read of the log and everything it leads to (feed thread only).
  Status round();
  Status fullReload();
  Status apply(const std::vector<std::string>& device_ids);

  IndexedStore& store_;
  store::ChangeFeed& feed_;
  TwinIndex& index_;
  const TwinIndexFeedOptions options_;

  // Feed thread only (and start(), before the thread exists).
  store::ChangeCursor cursor_;
  bool needs_reload_ = false;
  bool failing_ = false;  // the last round failed (to log a failure once, and the recovery)

  std::mutex mutex_;
  std::condition_variable wake_;  // the feed thread waits here
  std::condition_variable done_;  // catchUp() waits here
  // catchUp() takes a ticket (++requested_); a round takes the newest ticket when it starts
  // and, when it ends, sets completed_ to it: every caller whose ticket it covers asked
  // before the round read the log. All guarded by mutex_.
  std::uint64_t requested_ = 0;
  std::uint64_t completed_ = 0;
  Status last_status_;
  bool stopping_ = false;

  std::atomic<std::uint64_t> rounds_{0};
  std::atomic<std::uint64_t> failed_rounds_{0};
  std::atomic<std::uint64_t> devices_applied_{0};
  std::atomic<std::uint64_t> full_reloads_{0};
  std::atomic<std::uint64_t> pruned_rows_{0};

  std::thread thread_;  // last: started after everything it uses
};

}  // namespace iothub::index
