#include "index/query_runner.hpp"

#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

#include "common/encoding.hpp"
#include "common/time_format.hpp"
#include "query/executor.hpp"

namespace iothub::index {
namespace {

using Key = std::vector<std::string>;  // {deviceId} or {jobId, deviceId}
using Visitor = std::function<bool(const Key& key, const query::RowView& row, bool matched)>;

constexpr std::size_t kStoreChunk = 1000;
constexpr std::size_t kBudgetCheckInterval = 256;

// A stable fingerprint of the query text, so a token is refused with another query.
std::string fingerprint(std::string_view text) { return fnv1aHex(text); }

struct Cursor {
  Key key;                    // row queries: the last row returned
  std::uint64_t emitted = 0;  // row queries: rows returned so far (for TOP)
  std::uint64_t offset = 0;   // aggregate queries: result rows returned so far
};

Status badToken() {
  return {ErrorCode::ArgumentInvalid,
          "The continuation token is malformed or does not belong to this query"};
}

std::string encodeCursor(const std::string& query_hash, const Cursor& c, bool aggregate) {
  json::object o{{"q", query_hash}};
  if (aggregate) {
    o["o"] = c.offset;
  } else {
    json::array key;
    for (const auto& k : c.key) key.emplace_back(k);
    o["k"] = std::move(key);
    o["n"] = c.emitted;
  }
  return base64Encode(json::serialize(o));
}

Result<Cursor> decodeCursor(std::string_view token, const std::string& query_hash, bool aggregate) {
  auto bytes = base64Decode(token);
  if (!bytes) return badToken();
  auto doc = parseJson(*bytes, 4);
  if (!doc || !doc->is_object()) return badToken();
  const json::object& o = doc->get_object();
  const json::string* q = findString(o, "q");
  if (q == nullptr || *q != query_hash) return badToken();
  Cursor c;
  auto count = [&o](std::string_view name) -> std::optional<std::uint64_t> {
    const json::value* v = findMember(o, name);
    if (v == nullptr) return std::nullopt;
    if (v->is_uint64()) return v->get_uint64();
    if (v->is_int64() && v->get_int64() >= 0) return static_cast<std::uint64_t>(v->get_int64());
    return std::nullopt;
  };
  if (aggregate) {
    auto offset = count("o");
    if (!offset) return badToken();
    c.offset = *offset;
    return c;
  }
  auto emitted = count("n");
  const json::value* key = findMember(o, "k");
  if (!emitted || key == nullptr || !key->is_array()) return badToken();
  c.emitted = *emitted;
  for (const auto& k : key->get_array()) {
    if (!k.is_string()) return badToken();
    c.key.emplace_back(k.get_string());
  }
  return c;
}

// Rows of FROM devices.jobs from the store, in (jobId, deviceId) order after `after`.
Status forEachDeviceJob(store::DeviceJobStore& store, const query::Query& q, const Key& after,
                        const Visitor& visit) {
  std::string after_job = after.size() == 2 ? after[0] : std::string();
  std::string after_device = after.size() == 2 ? after[1] : std::string();
  // devices.jobs.jobId = '<id>' reads one job's rows only.
  std::optional<std::string> only_job;
  if (auto eq = q.where.indexableEquality();
      eq && eq->first.keys == std::vector<std::string>{"jobId"} && eq->second.is_string()) {
    only_job = std::string(eq->second.get_string());
    if (!after_job.empty() && after_job > *only_job) return Status::ok();
    if (after_job < *only_job) after_device.clear();
    after_job = *only_job;
  }
  for (;;) {
    auto rows = only_job ? store.listDeviceJobs(*only_job, std::nullopt, after_device, kStoreChunk)
                         : store.listAllDeviceJobs(after_job, after_device, kStoreChunk);
    if (!rows) return rows.status();
    for (const auto& record : *rows) {
      Key key{record.job_id, record.device_id};
      json::object row = deviceJobRow(record);
      if (!visit(key, query::JsonRow(row), false)) return Status::ok();
    }
    if (rows->size() < kStoreChunk) return Status::ok();
    after_job = rows->back().job_id;
    after_device = rows->back().device_id;
  }
}

}  // namespace

json::object deviceJobRow(const store::DeviceJobRecord& record) {
  json::object row = record.document;
  row["deviceId"] = record.device_id;
  row["jobId"] = record.job_id;
  row["status"] = record.status;
  row["lastUpdatedDateTimeUtc"] = formatTimestamp(record.last_updated_time);
  return row;
}

QueryRunner::QueryRunner(const TwinIndex& twins, store::DeviceJobStore& device_jobs,
                         const Clock* clock, std::chrono::milliseconds time_budget,
                         BeforeQuery before_query)
    : twins_(twins),
      device_jobs_(device_jobs),
      clock_(clock),
      time_budget_(time_budget),
      before_query_(std::move(before_query)) {}

Result<QueryPage> QueryRunner::run(std::string_view text, std::size_t page_size,
                                   std::optional<std::string_view> continuation) const {
  if (page_size == 0 || page_size > kMaxPageSize) {
    return Status(ErrorCode::ArgumentInvalid,
                  "x-ms-max-item-count must be between 1 and " + std::to_string(kMaxPageSize));
  }
  auto parsed = query::parseQuery(text);
  if (!parsed) return parsed.status();
  const query::Query& q = *parsed;
  const bool aggregate = q.isAggregate();
  const std::string hash = fingerprint(text);
  Cursor cursor;
  if (continuation) {
    auto decoded = decodeCursor(*continuation, hash, aggregate);
    if (!decoded) return decoded.status();
    cursor = std::move(*decoded);
    std::size_t key_size = q.collection == query::Collection::Devices ? 1 : 2;
    if (!aggregate && cursor.key.size() != key_size) return badToken();
  }
  if (q.collection == query::Collection::Devices && before_query_) {
    IOTHUB_RETURN_IF_ERROR(before_query_());
  }

  // Every row visited counts against the time budget; the clock is read every
  // kBudgetCheckInterval rows.
  const std::optional<SystemTime> deadline =
      clock_ != nullptr ? std::optional<SystemTime>(clock_->now() + time_budget_) : std::nullopt;
  std::size_t visited = 0;
  bool over_budget = false;
  auto withinBudget = [&]() {
    if (!deadline || ++visited % kBudgetCheckInterval != 0) return true;
    over_budget = clock_->now() > *deadline;
    return !over_budget;
  };
  auto forEachRow = [&](const Key& after, const Visitor& visit) -> Status {
    Visitor budgeted = [&](const Key& key, const query::RowView& row, bool matched) {
      return withinBudget() && visit(key, row, matched);
    };
    Status s = Status::ok();
    if (q.collection == query::Collection::DeviceJobs) {
      s = forEachDeviceJob(device_jobs_, q, after, budgeted);
    } else {
      Key key(1);
      twins_.scan(q.where, after.empty() ? std::string_view() : std::string_view(after[0]),
                  [&key, &budgeted](const std::string& id, const query::RowView& row) {
                    key[0] = id;
                    return budgeted(key, row, true);
                  });
    }
    if (s && over_budget) {
      return Status(
          ErrorCode::ArgumentInvalid,
          "The query took longer than its time budget of " + std::to_string(time_budget_.count()) +
              " ms for one page; use a more selective WHERE condition (an equality on "
              "a tag or property is served by an index) or a smaller x-ms-max-item-count");
    }
    return s;
  };

  QueryPage page;
  page.item_type = q.itemType();
  if (aggregate) {
    query::QueryExecution execution(q, query::Page{cursor.offset, page_size});
    IOTHUB_RETURN_IF_ERROR(
        forEachRow({}, [&execution](const Key&, const query::RowView& row, bool matched) {
          return matched ? execution.offerMatched(row) : execution.offer(row);
        }));
    auto result = execution.finish();
    page.rows = std::move(result.rows);
    if (result.has_more) {
      cursor.offset += page.rows.size();
      page.continuation = encodeCursor(hash, cursor, true);
    }
    return page;
  }

  std::size_t limit = page_size;
  if (q.top) {
    if (cursor.emitted >= *q.top) return page;
    limit = static_cast<std::size_t>(std::min<std::uint64_t>(limit, *q.top - cursor.emitted));
  }
  query::QueryExecution execution(q, query::Page{0, limit});
  Key last = cursor.key;
  IOTHUB_RETURN_IF_ERROR(forEachRow(
      cursor.key, [&execution, &last](const Key& key, const query::RowView& row, bool matched) {
        std::size_t before = execution.rowCount();
        bool more = matched ? execution.offerMatched(row) : execution.offer(row);
        if (execution.rowCount() > before) last = key;
        return more;
      }));
  auto result = execution.finish();
  page.rows = std::move(result.rows);
  cursor.emitted += page.rows.size();
  bool top_reached = q.top && cursor.emitted >= *q.top;
  if (result.has_more && !top_reached) {
    cursor.key = std::move(last);
    page.continuation = encodeCursor(hash, cursor, false);
  }
  return page;
}

}  // namespace iothub::index
