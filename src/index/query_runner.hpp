#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/json.hpp"
#include "common/status.hpp"
#include "index/twin_index.hpp"
#include "query/query.hpp"
#include "store/store.hpp"

namespace iothub::index {

// One page of a query's result (POST /devices/query, reference §3.6, §5.5).
struct QueryPage {
  query::ItemType item_type = query::ItemType::Raw;
  json::array rows;
  // Present while more rows remain: the opaque x-ms-continuation token for the next page.
  std::optional<std::string> continuation;
};

// The row of `SELECT * FROM devices.jobs` (reference §4.4) for a stored device-job record:
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
// Thread-safe; blocks on the store for devices.jobs, so call it from a worker thread.
class QueryRunner {
 public:
  static constexpr std::size_t kDefaultPageSize = 100;
  static constexpr std::size_t kMaxPageSize = 1000;

  // Both must outlive the runner.
  QueryRunner(const TwinIndex& twins, store::DeviceJobStore& device_jobs);

  // `page_size` 1..kMaxPageSize; `continuation` a token from an earlier page of the same
  // text. Errors: ArgumentInvalid for query errors (with position, query/query.hpp) and
  // for a token that is malformed or belongs to another query; the store's errors.
  Result<QueryPage> run(std::string_view text, std::size_t page_size,
                        std::optional<std::string_view> continuation) const;

 private:
  const TwinIndex& twins_;
  store::DeviceJobStore& device_jobs_;
};

}  // namespace iothub::index
