#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "store/cluster_store.hpp"
#include "store/records.hpp"

namespace iothub::store {

// A position in a shared database's commit order: which transactions a reader has already
// seen. It has the shape of a PostgreSQL snapshot (pg_snapshot): every transaction with an
// id below `xmin` had finished, those in `in_progress` and those from `xmax` on had not
// (they may commit later), the others had finished. Transaction ids are 64-bit and never
// wrap (xid8).
//
// A change-log reader that remembers the snapshot of its previous read asks next for the
// rows of exactly the transactions that snapshot did not see (ids >= xmax or in
// in_progress): a transaction that was running during the read and commits later is found
// by the next read, however long it stays open, and nothing the reader has seen is read
// again (docs/cluster.md, "Queries").
struct ChangeCursor {
  std::uint64_t xmin = 0;
  std::uint64_t xmax = 0;
  std::vector<std::uint64_t> in_progress;  // ascending, each in [xmin, xmax)

  // Parses PostgreSQL's text form "xmin:xmax:xip,xip,..." (the list may be empty).
  // Errors: ArgumentInvalid for anything else, or values out of order.
  static Result<ChangeCursor> parse(std::string_view text);
  // The text form parse() reads.
  std::string toString() const;

  // Whether the transaction `xid` had finished at this position, i.e. whether a read at
  // this position saw its changes (if it committed).
  bool saw(std::uint64_t xid) const;
  // Whether a reader at this position still needs log rows of transactions below
  // `horizon`: every transaction it has not seen has an id >= xmin.
  bool needsRowsBelow(std::uint64_t horizon) const { return xmin < horizon; }

  bool operator==(const ChangeCursor&) const = default;
};

// The devices changed after a cursor.
struct ChangeBatch {
  // Every device whose record, twin or presence a transaction not seen at the cursor
  // changed (created, updated or deleted), each once, in id order.
  std::vector<std::string> device_ids;
  // Where the next read starts: the position of this read.
  ChangeCursor next;
  // True when log rows the cursor still needed were pruned (the reader was away longer
  // than the log's retention): the changes cannot be known; the reader must reload
  // everything (and start from a cursor taken before that reload). device_ids is then
  // empty.
  bool fell_behind = false;
};

// The current state of one device, read in one snapshot.
struct DeviceState {
  std::string device_id;
  // nullopt: there is no such device (deleted, or never created).
  std::optional<DeviceRecord> device;
  TwinRecord twin;  // meaningful only with `device`
  // The device's connection as the cluster knows it; nullopt when it never connected.
  std::optional<PresenceRecord> presence;
};

// The change feed of a store that several processes write (PostgreSQL): which devices
// changed since a reader last looked, whatever process changed them, so that every node
// can keep its in-memory index current (index/twin_index_feed.hpp). Store::changeFeed()
// returns it; it is null for a backend only one process writes (SQLite).
//
// Same threading contract as store.hpp: every method is thread-safe and blocks.
// Errors: those of the store (ServiceUnavailable when the database cannot be reached or
// does not answer in time).
class ChangeFeed {
 public:
  virtual ~ChangeFeed() = default;

  // The position now: a reader that loads everything after taking it and then reads the
  // changes after it misses nothing (changes committed meanwhile are read twice, which
  // is harmless since a reader re-reads the current state).
  virtual Result<ChangeCursor> currentCursor() = 0;

  // The devices changed by transactions `after` has not seen and that have committed now.
  virtual Result<ChangeBatch> readChanges(const ChangeCursor& after) = 0;

  // The current state of each of `device_ids`, in one snapshot, in the order given.
  virtual Result<std::vector<DeviceState>> readDevices(
      const std::vector<std::string>& device_ids) = 0;

  // The ids of the devices connected anywhere in the cluster (for a full load).
  virtual Result<std::vector<std::string>> connectedDevices() = 0;

  // Deletes log rows of transactions that finished more than `retention` ago (at least;
  // rows may stay up to about twice as long), so the log does not grow without bound.
  // Cheap when there is nothing to delete; safe to call from every node at once (only
  // one prunes, the others return at once). Returns the number of rows deleted.
  // A reader whose cursor needed a deleted row is told by readChanges (fell_behind).
  virtual Result<std::int64_t> prune(std::chrono::milliseconds retention) = 0;
};

}  // namespace iothub::store
