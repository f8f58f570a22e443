#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/status.hpp"
#include "index/twin_index.hpp"
#include "query/query.hpp"
#include "store/store.hpp"

namespace iothub::index {

// One page of a query's result (POST /devices/query, docs/protocol.md §8.4, §8.6).
struct QueryPage {
  query::ItemType item_type = query::ItemType::Raw;
  json::array rows;
  // Present while more rows remain: the opaque x-ms-continuation token for the next page.
  std::optional<std::string> continuation;
};

// The row of `SELECT * FROM devices.jobs` (docs/protocol.md §9.8) for a stored device-job record:
// its document (jobType, times, outcome, error as the jobs module writes them) with
// deviceId, jobId, status and lastUpdatedDateTimeUtc from the record's own fields.
json::object deviceJobRow(const store::DeviceJobRecord& record);

// Runs query-language text page by page: FROM devices over the TwinIndex, FROM devices.jobs
// over the store's device-job rows.
//
// Paging guarantee (docs/decisions.md §27). Row queries page by key (the device id, or the
// job id and device id for devices.jobs): each continuation token carries the key of the
// last row returned, and the next page starts strictly after it. So across pages no row is
// returned twice and no row that exists and matches throughout the paging is skipped, even
// when twins change or devices come and go between pages; a row that starts or stops
// matching meanwhile appears iff it matches when its key range is read. TOP n counts over
// all pages. Aggregate queries (COUNT, GROUP BY) are computed anew for every page and paged
// by position in their result, which is tiny compared with the rows it summarizes.
//
// Thread-safe; blocks on the store for devices.jobs (and in before_query), so call it from
// a worker thread.
class QueryRunner {
 public:
  static constexpr std::size_t kDefaultPageSize = 100;
  static constexpr std::size_t kMaxPageSize = 1000;
  static constexpr std::chrono::milliseconds kDefaultTimeBudget{10'000};

  // Called before every page of a FROM devices query is computed (not for devices.jobs,
  // which reads the store); an error it returns is the query's error. In cluster mode it
  // is TwinIndexFeed::catchUp, so the index reflects every write acknowledged on any node
  // before the query was sent (twin_index_feed.hpp).
  using BeforeQuery = std::function<Status()>;

  // All must outlive the runner. Without a clock, queries have no time budget.
  QueryRunner(const TwinIndex& twins, store::DeviceJobStore& device_jobs,
              const Clock* clock = nullptr,
              std::chrono::milliseconds time_budget = kDefaultTimeBudget,
              BeforeQuery before_query = {});

  // `page_size` 1..kMaxPageSize; `continuation` a token from an earlier page of the same
  // text. A page that takes longer than the time budget to compute (measured on the clock
  // every few hundred rows, so overshoot is tiny) is abandoned: an expensive query cannot
  // hold a worker thread for long (docs/limits.md). Errors: ArgumentInvalid for query
  // errors (with position, query/query.hpp), for a token that is malformed or belongs to
  // another query, and for a page past the time budget (the message says how to narrow
  // it); the store's errors.
  Result<QueryPage> run(std::string_view text, std::size_t page_size,
                        std::optional<std::string_view> continuation) const;

 private:
  const TwinIndex& twins_;
  store::DeviceJobStore& device_jobs_;
  const Clock* clock_;
  std::chrono::milliseconds time_budget_;
  BeforeQuery before_query_;
};

}  // namespace iothub::index
