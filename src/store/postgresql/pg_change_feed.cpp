#include "store/postgresql/pg_change_feed.hpp"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "store/record_codec.hpp"

namespace iothub::store {
namespace {

// One statement, so the ids, the snapshot they were read in and the horizon agree. The
// condition on xid is what the previous snapshot did not see; both arms use the index on
// xid (a range and a short list), so the cost follows the new rows, not the log's size,
// even while a long transaction holds the snapshot's xmin back. The LEFT JOIN keeps the
// snapshot row when nothing changed (device_id is then NULL).
constexpr std::string_view kReadChanges =
    "SELECT s.snapshot::text, h.horizon::text, c.device_id"
    " FROM (SELECT pg_current_snapshot() AS snapshot) s"
    " CROSS JOIN device_changes_horizon h"
    " LEFT JOIN LATERAL (SELECT DISTINCT device_id FROM device_changes"
    "   WHERE xid >= $1::xid8 OR xid = ANY ($2::xid8[])) c ON true"
    " ORDER BY c.device_id";
constexpr std::string_view kCurrentSnapshot = "SELECT pg_current_snapshot()::text";
// Device, twin and presence of each id, in one snapshot. Twins are created and deleted with
// their device, so the inner join loses no device.
constexpr std::string_view kReadDevices =
    "SELECT d.device_id, d.generation_id, d.etag, d.status, d.status_reason,"
    " d.status_updated_time, d.auth_type, d.primary_key, d.secondary_key,"
    " d.primary_thumbprint, d.secondary_thumbprint, d.iot_edge, d.device_scope,"
    " d.parent_scopes, d.connection_state_updated_time, d.last_activity_time,"
    " d.cloud_to_device_message_count,"
    " t.device_id, t.tags, t.desired, t.reported, t.version, t.desired_version,"
    " t.reported_version,"
    " p.device_id, p.node_id, p.epoch, p.connected, p.since"
    " FROM devices d JOIN twins t ON t.device_id = d.device_id"
    " LEFT JOIN device_presence p ON p.device_id = d.device_id"
    " WHERE d.device_id = ANY ($1::text[])";
constexpr int kDeviceColumn = 0;
constexpr int kTwinColumn = 17;
constexpr int kPresenceColumn = 24;
constexpr std::string_view kConnectedDevices =
    "SELECT device_id FROM device_presence WHERE connected ORDER BY device_id";
constexpr std::string_view kPrune = "SELECT iothub_prune_device_changes($1)";

// A row seen from column `first` on, for the record decoders (record_codec.hpp), which
// read their columns from 0.
class ShiftedRow {
 public:
  ShiftedRow(const PgRow& row, int first) : row_(row), first_(first) {}
  bool isNull(int column) const { return row_.isNull(first_ + column); }
  std::string text(int column) const { return row_.text(first_ + column); }
  std::optional<std::string> optionalText(int column) const {
    return row_.optionalText(first_ + column);
  }
  std::int64_t int64(int column) const { return row_.int64(first_ + column); }
  bool flag(int column) const { return row_.flag(first_ + column); }

 private:
  const PgRow& row_;
  int first_;
};

Result<ChangeCursor> decodeCursor(const std::string& text) {
  Result<ChangeCursor> cursor = ChangeCursor::parse(text);
  if (!cursor) return storeCorruption("PostgreSQL returned a snapshot iothub cannot read: " + text);
  return cursor;
}

}  // namespace

Result<ChangeCursor> PgChangeFeed::currentCursor() {
  ChangeCursor cursor;
  Status read = read_([&](PgConnection& connection) -> Status {
    Result<PgResult> result = connection.query(kCurrentSnapshot);
    if (!result) return result.status();
    if (result->rows() != 1) return Status(ErrorCode::ServerError, "no snapshot returned");
    Result<ChangeCursor> decoded = decodeCursor(result->row(0).text(0));
    if (!decoded) return decoded.status();
    cursor = std::move(decoded).value();
    return Status::ok();
  });
  if (!read) return read;
  return cursor;
}

Result<ChangeBatch> PgChangeFeed::readChanges(const ChangeCursor& after) {
  PgArrayBuilder in_progress;
  for (std::uint64_t xid : after.in_progress) in_progress.add(std::to_string(xid));
  PgParams params;
  params.add(std::to_string(after.xmax)).add(std::move(in_progress).finish());
  ChangeBatch batch;
  Status read = read_([&](PgConnection& connection) -> Status {
    Result<PgResult> result = connection.query(kReadChanges, params);
    if (!result) return result.status();
    if (result->rows() == 0) {
      return Status(ErrorCode::StoreCorruption, "table device_changes_horizon has no row");
    }
    PgRow first = result->row(0);
    Result<ChangeCursor> next = decodeCursor(first.text(0));
    if (!next) return next.status();
    // xid8 prints as a decimal number; transaction ids stay far below 2^63.
    const std::int64_t horizon = first.int64(1);
    IOTHUB_RETURN_IF_ERROR(first.status());
    batch = ChangeBatch{};
    batch.next = std::move(next).value();
    if (after.needsRowsBelow(static_cast<std::uint64_t>(horizon))) {
      batch.fell_behind = true;
      return Status::ok();
    }
    batch.device_ids.reserve(static_cast<std::size_t>(result->rows()));
    for (int i = 0; i < result->rows(); ++i) {
      PgRow row = result->row(i);
      if (row.isNull(2)) continue;
      batch.device_ids.push_back(row.text(2));
      IOTHUB_RETURN_IF_ERROR(row.status());
    }
    return Status::ok();
  });
  if (!read) return read;
  return batch;
}

Result<std::vector<DeviceState>> PgChangeFeed::readDevices(
    const std::vector<std::string>& device_ids) {
  std::vector<DeviceState> states;
  if (device_ids.empty()) return states;
  PgArrayBuilder ids;
  for (const std::string& id : device_ids) ids.add(id);
  PgParams params;
  params.add(std::move(ids).finish());
  Status read = read_([&](PgConnection& connection) -> Status {
    Result<PgResult> result = connection.query(kReadDevices, params);
    if (!result) return result.status();
    std::unordered_map<std::string, DeviceState> found;
    found.reserve(static_cast<std::size_t>(result->rows()));
    for (int i = 0; i < result->rows(); ++i) {
      PgRow row = result->row(i);
      Result<DeviceRecord> device = decodeDeviceRow(ShiftedRow(row, kDeviceColumn));
      if (!device) return device.status();
      Result<TwinRecord> twin = decodeTwinRow(ShiftedRow(row, kTwinColumn));
      if (!twin) return twin.status();
      DeviceState state{.device_id = device->device_id,
                        .device = std::move(device).value(),
                        .twin = std::move(twin).value(),
                        .presence = std::nullopt};
      if (!row.isNull(kPresenceColumn)) {
        state.presence = PresenceRecord{
            .device_id = row.text(kPresenceColumn),
            .node_id = row.text(kPresenceColumn + 1),
            .epoch = row.int64(kPresenceColumn + 2),
            .connected = row.flag(kPresenceColumn + 3),
            .since = fromNanoseconds(row.int64(kPresenceColumn + 4)),
        };
      }
      IOTHUB_RETURN_IF_ERROR(row.status());
      std::string id = state.device_id;
      found.emplace(std::move(id), std::move(state));
    }
    states.clear();
    states.reserve(device_ids.size());
    for (const std::string& id : device_ids) {
      auto it = found.find(id);
      if (it == found.end()) {
        DeviceState gone;
        gone.device_id = id;
        states.push_back(std::move(gone));
      } else {
        states.push_back(std::move(it->second));
      }
    }
    return Status::ok();
  });
  if (!read) return read;
  return states;
}

Result<std::vector<std::string>> PgChangeFeed::connectedDevices() {
  std::vector<std::string> ids;
  Status read = read_([&](PgConnection& connection) -> Status {
    Result<PgResult> result = connection.query(kConnectedDevices);
    if (!result) return result.status();
    ids.clear();
    ids.reserve(static_cast<std::size_t>(result->rows()));
    for (int i = 0; i < result->rows(); ++i) ids.push_back(result->row(i).text(0));
    return Status::ok();
  });
  if (!read) return read;
  return ids;
}

Result<std::int64_t> PgChangeFeed::prune(std::chrono::milliseconds retention) {
  const std::int64_t retention_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::max(retention, std::chrono::milliseconds(0)))
                                        .count();
  std::int64_t deleted = 0;
  Status read = read_([&](PgConnection& connection) -> Status {
    Result<PgResult> result = connection.query(kPrune, PgParams().add(retention_ns));
    if (!result) return result.status();
    if (result->rows() != 1) return Status(ErrorCode::ServerError, "prune returned no row");
    PgRow row = result->row(0);
    deleted = std::max<std::int64_t>(row.int64(0), 0);
    return row.status();
  });
  if (!read) return read;
  return deleted;
}

}  // namespace iothub::store
