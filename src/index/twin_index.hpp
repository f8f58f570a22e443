#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/json.hpp"
#include "common/status.hpp"
#include "index/packed_row.hpp"
#include "query/condition.hpp"
#include "query/path.hpp"
#include "store/records.hpp"
#include "store/store.hpp"

namespace iothub::index {

// One twin as queries see it: its service view (twin/twin_json.hpp), packed
// (packed_row.hpp) and immutable once published. Writers replace a row with a new one;
// readers holding the old one keep a consistent snapshot of that twin.
using Row = PackedRowPtr;

// The in-memory index of every device twin that FROM devices queries and job target
// selection run over (docs/protocol.md §8; decisions §26). The store stays the durable copy: the
// index is loaded from it at startup and then told about every committed write by
// IndexedStore (indexed_store.hpp), and about connection changes by the hub.
//
// Rows are kept ordered by device id, which is the order of query results and the key of
// paging. Equality and IN on a path (Condition::indexableLookup) are answered from a
// secondary index on that path: deviceId uses the primary order directly; any other path
// gets a hash index built on first use (one scan) and maintained on every later write,
// up to kMaxPathIndexes paths (the least recently used one is dropped beyond that).
//
// Thread-safe: readers share a lock, writers take it exclusively for the time it takes
// to swap one row. Scans release the lock every kScanChunk rows, so a long query never
// holds writers up for long.
class TwinIndex {
 public:
  static constexpr std::size_t kMaxPathIndexes = 16;
  static constexpr std::size_t kScanChunk = 4096;

  TwinIndex() = default;
  ~TwinIndex();  // stops a background load
  TwinIndex(const TwinIndex&) = delete;
  TwinIndex& operator=(const TwinIndex&) = delete;

  // Replaces the whole content with the store's twins and devices (startup, or the change
  // feed's full reload). Devices that `is_connected` names are shown Connected, and are
  // the only ones remembered as connected afterwards. Errors: the store's (the index is
  // then unchanged).
  Status load(store::Store& store, const std::function<bool(std::string_view)>& is_connected);

  // Loads the store's twins in the background (a single node's startup) and returns at
  // once, so a hub with millions of devices serves within moments (decisions §87). Until
  // the load is complete, scan, select and find wait for it: queries never see part of
  // the fleet. Writes and connection changes are applied as they come and win over what
  // the load read; a device written before its row was loaded is read again from the
  // store at the end. `on_failure` is called (on the loading thread) when the store
  // cannot be read; the load then ends with the index incomplete. `store` must outlive
  // the load (the destructor stops it). At most one load at a time, on an empty index.
  void startLoading(store::Store& store, std::function<void(const Status&)> on_failure);
  // Blocks until no background load is in progress.
  void waitLoaded() const;

  // A device and its twin were created (or re-created): inserts or replaces its row.
  void putDevice(const store::DeviceRecord& device, const store::TwinRecord& twin);
  // The whole current state of a device as the change feed read it (twin_index_feed.hpp):
  // inserts or replaces its row, whatever twin version the row showed (the device may have
  // been deleted and created again), and sets its connection state, in one step.
  void putDevice(const store::DeviceRecord& device, const store::TwinRecord& twin, bool connected);
  // A device record changed: rewrites the device members of its row. No-op for unknown ids.
  void updateDevice(const store::DeviceRecord& device);
  // A twin changed: rewrites its twin members. No-op for unknown ids, and for versions
  // older than the row's (a late report of an earlier write).
  void updateTwin(const store::TwinRecord& twin);
  void removeDevice(std::string_view device_id);
  // The device's connection opened or closed. Remembered even before its row exists.
  void setConnected(std::string_view device_id, bool connected);

  // Told the id of every device whose row was inserted, changed or removed, after the
  // change and outside the index's lock (a reload tells every device of the new content).
  // It must be quick and must not write to the index. Thread-safe; setting another
  // observer (or null) returns once no call of the old one is in progress.
  using ChangeObserver = std::function<void(std::string_view device_id)>;
  void setChangeObserver(ChangeObserver observer);

  std::size_t size() const;

  // The service view of one device's twin (decoded from its row), or null.
  std::shared_ptr<const json::object> find(std::string_view device_id) const;

  // Calls `visit` for every row whose device id is strictly after `after` (empty = from the
  // start) and that `condition` matches, in device-id order, until `visit` returns false.
  // Uses a secondary index when the condition allows (see class comment). `visit` runs
  // under the index's shared lock: it must not call back into the index and should be
  // quick (copy what it needs).
  void scan(const query::Condition& condition, std::string_view after,
            const std::function<bool(const std::string& device_id, const query::RowView& row)>&
                visit) const;

  // The ids of every device `condition` matches, in order (a job's target set).
  std::vector<std::string> select(const query::Condition& condition) const;

  // How many secondary path indexes exist now (tests, metrics).
  std::size_t pathIndexCount() const;

 private:
  struct Entry {
    Row row;
    std::int64_t version = 0;  // the twin version the row shows
  };
  using Rows = std::map<std::string, Entry, std::less<>>;

  using Node = const Rows::value_type*;  // stable while the row exists (std::map)
  // Orders nodes by device id; also compares with bare ids, to resume after a cursor.
  struct ById {
    using is_transparent = void;
    bool operator()(Node a, Node b) const { return a->first < b->first; }
    bool operator()(Node a, std::string_view b) const { return a->first < b; }
    bool operator()(std::string_view a, Node b) const { return a < b->first; }
  };
  using NodeSet = std::set<Node, ById>;

  // The rows by the value key (query/value.hpp valueKey) of the primitive at `path`; rows
  // where it is undefined or not primitive are not in it.
  struct PathIndex {
    query::Path path;
    std::unordered_map<std::string, NodeSet> nodes;
    std::atomic<std::uint64_t> last_used{0};  // touched by readers under the shared lock
  };

  // The background load (startLoading) and its two phases.
  void runLoad(store::Store& store, const std::function<void(const Status&)>& on_failure);
  Status loadPages(store::Store& store, std::size_t& loaded);
  Status reloadWrittenDevices(store::Store& store, std::size_t& loaded);
  // Exclusive lock held: while loading, remembers that `device_id` was written.
  void markWritten(std::string_view device_id);
  // Exclusive lock held: inserts the row of a device the load read (connection state
  // from connected_); false when the id already has a row.
  bool insertLoaded(const store::DeviceRecord& device, const store::TwinRecord& twin,
                    std::optional<Row> built);
  // Exclusive lock held: putDevice with the connection state connected_ holds.
  void putDeviceLocked(const store::DeviceRecord& device, const store::TwinRecord& twin);
  // Calls the change observer, if any (no index lock held).
  void notify(std::string_view device_id) const;
  // Exclusive lock held: the row of `node` becomes `row`, in every index.
  void replaceRow(Rows::iterator it, Row row);
  // Exclusive lock held: adds or removes `node` (showing `row`) in every path index and in
  // the one being built, if the build has already passed it.
  void indexRow(const Rows::value_type& node, const PackedRow& row, bool add);
  static void indexInto(PathIndex& index, const Rows::value_type& node, const PackedRow& row,
                        bool add);
  PathIndex* pathIndexFor(const query::Path& path) const;  // lock held (any mode)
  // Builds the index on `path` without holding writers up: the rows are read in chunks
  // under the shared lock while writers keep the part already read current. Called
  // without any lock; builds are serialized.
  void buildPathIndex(const query::Path& path) const;
  // Visits the rows of `candidates` (sets of one index, disjoint) in id order after `after`.
  void scanCandidates(
      const std::vector<const NodeSet*>& candidates, const query::Condition& condition,
      std::string_view after,
      const std::function<bool(const std::string&, const query::RowView&)>& visit) const;

  mutable std::shared_mutex mutex_;
  Rows rows_;
  std::unordered_set<std::string> connected_;  // devices with a live connection
  // Held shared by each call of the observer, exclusively to replace it.
  mutable std::shared_mutex observer_mutex_;
  ChangeObserver observer_;  // guarded by observer_mutex_
  // Lazily built, so mutable; guarded by mutex_ (published under the exclusive lock).
  mutable std::vector<std::unique_ptr<PathIndex>> path_indexes_;
  mutable std::atomic<std::uint64_t> use_clock_{0};
  // The index being built and how far the build has read (device ids <= build_cursor_ are
  // in it). Written by the builder under the shared lock (no other reader touches them),
  // read and updated by writers under the exclusive lock.
  mutable std::mutex build_mutex_;
  // Held shared while a scan reads candidate sets without the main lock, exclusively (before
  // mutex_) to drop an index: an index is never freed under a reader's feet.
  mutable std::shared_mutex index_life_;
  mutable PathIndex* building_ = nullptr;
  mutable std::string build_cursor_;

  // The background load: loading_ and written_ are guarded by mutex_. written_ holds the
  // ids written while loading, each with the write's number (write_clock_).
  bool loading_ = false;
  std::unordered_map<std::string, std::uint64_t> written_;
  std::uint64_t write_clock_ = 0;
  mutable std::condition_variable_any loaded_;
  std::atomic<bool> stop_loading_{false};
  std::thread loader_;
};

}  // namespace iothub::index
