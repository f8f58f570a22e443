#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "query/condition.hpp"
#include "query/path.hpp"

namespace iothub::query {

// The IoT Hub query language (docs/protocol.md §8): parse once, then run the Query or test
// rows with its Condition as often as needed. Pure computation: no I/O, no store access.
//
//   SELECT [TOP n] * | item [AS alias] [, item [AS alias]]...
//   FROM devices | devices.jobs
//   [WHERE condition] [GROUP BY path]
//
// where an item is a property path or COUNT(), AVG(path), SUM(path), MIN(path), MAX(path).
// Keywords and function names are case-insensitive; so are the twin's identity fields
// (deviceId, etag, status, ... §8.2), which are stored in their canonical case. Names inside
// tags and properties are case-sensitive.

enum class Collection {
  Devices,     // FROM devices: rows are twins (§6.1)
  DeviceJobs,  // FROM devices.jobs: rows are device-job records (§9.8); paths are written
               // devices.jobs.<field> and address <field> of the row
};

// What the result rows are, for the x-ms-item-type header (docs/protocol.md §8.4).
enum class ItemType {
  Twin,       // SELECT * FROM devices
  DeviceJob,  // SELECT * FROM devices.jobs
  Raw,        // projections and aggregates
};

// "Twin", "DeviceJob" or "Raw": the header value.
std::string_view itemTypeName(ItemType type);

enum class ProjectionKind { Path, Count, Avg, Sum, Min, Max };

struct Projection {
  ProjectionKind kind = ProjectionKind::Path;
  Path path;         // Path: the value to project; Avg..Max: the value aggregated; Count: empty
  std::string name;  // output member: the alias, else the path's leaf (canonical case),
                     // else the aggregate's name ("COUNT", "AVG", ...)
};

struct Query {
  Collection collection = Collection::Devices;
  bool select_all = false;              // SELECT *
  std::vector<Projection> projections;  // empty when select_all; names are distinct
  std::optional<std::uint64_t> top;     // TOP n
  Condition where;                      // matches every row without WHERE
  std::optional<Path> group_by;         // every Path projection equals it when set

  // True with GROUP BY or any aggregate: the rows are computed over the whole collection.
  bool isAggregate() const;
  ItemType itemType() const;
};

// Parses and checks a query. Errors (all ArgumentInvalid): text over kMaxQueryLength
// characters; "Syntax error at <line>:<col> near '<token>': ..." for malformed text, unknown
// functions, unsupported collections (FROM devices.modules), ORDER BY, and nesting deeper
// than kMaxExpressionDepth; "Type error at <line>:<col> near '<text>': ..." for operands and
// arguments of the wrong type, non-boolean conditions, aggregates outside SELECT, items that
// are neither paths nor aggregates, projections that are neither grouped nor aggregated,
// duplicate output names, properties.<x> other than desired/reported, devices.jobs (or
// devices.modules) paths in a devices query, and paths without the devices.jobs. prefix in a
// devices.jobs query. Never throws; recursion is bounded by kMaxExpressionDepth.
Result<Query> parseQuery(std::string_view text);

// Parses a condition on its own, as a job's queryCondition (docs/protocol.md §9.1) or a WHERE
// body: "*" (alone, surrounding spaces allowed) matches every row. Paths are bound for
// `collection`. Errors as for parseQuery; positions are relative to `text`.
Result<Condition> parseCondition(std::string_view text,
                                 Collection collection = Collection::Devices);

}  // namespace iothub::query
