#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.hpp"
#include "store/change_feed.hpp"
#include "store/postgresql/pg_connection.hpp"

namespace iothub::store {

// The change feed of PostgresStore (store/change_feed.hpp), over the change log of schema
// version 3 (pg_schema.cpp): triggers on devices, twins and device_presence append
// (xid, device_id) for every row they change, in the writing transaction.
//
// - readChanges(after) runs ONE statement, so the rows it returns, the next cursor
//   (pg_current_snapshot() of that statement) and the prune horizon come from the same
//   snapshot: it returns the ids logged by transactions with xid >= after.xmax or in
//   after.in_progress, i.e. exactly those the previous read did not see and that have
//   committed now. A transaction that stays open across reads is found by the first read
//   after it commits; one that aborted logged nothing.
// - readDevices reads device, twin and presence joined, in one statement.
// - Every call runs on one of the store's pooled read connections (autocommit), including
//   prune(), which must not hold up the group-commit writer.
//
// Thread-safe; blocking. Errors: the store's (see pg_store.hpp).
class PgChangeFeed final : public ChangeFeed {
 public:
  // Runs `body` on a read connection of the store, with its retry on a connection found
  // dead; the body must be safe to run twice.
  using ReadConnection = std::function<Status(const std::function<Status(PgConnection&)>& body)>;

  explicit PgChangeFeed(ReadConnection read) : read_(std::move(read)) {}

  Result<ChangeCursor> currentCursor() override;
  Result<ChangeBatch> readChanges(const ChangeCursor& after) override;
  Result<std::vector<DeviceState>> readDevices(const std::vector<std::string>& device_ids) override;
  Result<std::vector<std::string>> connectedDevices() override;
  Result<std::int64_t> prune(std::chrono::milliseconds retention) override;

 private:
  ReadConnection read_;
};

}  // namespace iothub::store
