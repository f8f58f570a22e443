#pragma once

#include <cstddef>
#include <limits>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/json.hpp"
#include "query/query.hpp"

namespace iothub::query {

// Stage 4: runs a Query over rows the caller supplies (an in-memory index, a store scan, or
// candidates an index lookup produced; see Condition::indexableEquality()). No I/O.

// A window of the result, for paging (docs/protocol.md §8.6): rows [offset, offset + limit)
// of the result after TOP.
struct Page {
  std::size_t offset = 0;
  std::size_t limit = std::numeric_limits<std::size_t>::max();
};

struct QueryResult {
  ItemType item_type = ItemType::Raw;
  json::array rows;
  bool has_more = false;  // rows after the page remain (send x-ms-continuation)
};

// Push-style execution: offer() every row of the collection in the order results should
// appear, then finish(). Results:
//   SELECT *              → each matching row itself;
//   SELECT path [AS a],.. → per matching row an object keyed by the projection names
//                           (undefined values are left out);
//   aggregates            → one row ({"COUNT": n} ...), also over zero rows;
//   GROUP BY              → one row per distinct value of the group path (undefined is a
//                           group too, its key left out), in order of first appearance.
// COUNT() counts rows; AVG and SUM take numbers (SUM of none is 0, AVG of none is left out);
// MIN and MAX take numbers and strings (any number is below any string). TOP n then keeps
// the first n result rows, and `page` cuts its window out of those.
//
// Not thread-safe; `query` must outlive the execution.
class QueryExecution {
 public:
  explicit QueryExecution(const Query& query, Page page = {});

  // Considers one row. Returns false once no further row can change the result (TOP or
  // the page is complete, and for the page, one more matching row was seen so has_more is
  // known); the caller should then stop offering rows.
  bool offer(const RowView& row);
  bool offer(const json::object& row) { return offer(JsonRow(row)); }

  // offer() for a row the caller already found to satisfy the WHERE condition (an index
  // scan that evaluated it): skips evaluating it again.
  bool offerMatched(const RowView& row);

  // Result rows produced so far (grows as offer() emits rows of a non-aggregate query).
  std::size_t rowCount() const { return result_.rows.size(); }

  // The result. Call once, after the last offer().
  QueryResult finish();

 private:
  struct Accumulator {
    std::int64_t count = 0;  // rows (COUNT) or numbers seen (AVG, SUM)
    bool exact = true;       // SUM: int_sum holds the exact total
    std::int64_t int_sum = 0;
    double real_sum = 0;
    json::value extreme;  // MIN/MAX so far
    bool has_extreme = false;
  };
  struct Group {
    json::value key;
    bool key_defined = false;
    std::vector<Accumulator> accumulators;  // one per projection
  };

  void emit(const RowView& row);
  void accumulate(Group& group, const RowView& row);
  json::object groupRow(const Group& group) const;

  const Query& query_;
  Page page_;
  bool aggregate_;
  std::size_t matched_ = 0;  // rows that satisfied WHERE (non-aggregate queries)
  bool done_ = false;
  QueryResult result_;
  std::vector<Group> groups_;
  std::unordered_map<std::string, std::size_t> group_index_;
};

// Runs `query` over `rows` (in order) with QueryExecution.
QueryResult execute(const Query& query, std::span<const json::object* const> rows, Page page = {});

}  // namespace iothub::query
