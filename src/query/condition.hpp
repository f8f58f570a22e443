#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/json.hpp"
#include "query/path.hpp"
#include "query/row.hpp"

namespace iothub::query {

struct Expr;

// A bound WHERE condition (or a job's queryCondition), ready to test rows.
// Immutable; copies share the expression tree, so a Condition is cheap to copy and safe to
// use from several threads at once. Built by parseCondition() / parseQuery() (query.hpp).
class Condition {
 public:
  // The condition that matches every row: a query without WHERE, or the job condition "*".
  Condition() = default;
  // `expr` must be bound (see binder.hpp); nullptr means "every row".
  explicit Condition(std::shared_ptr<const Expr> expr) : expr_(std::move(expr)) {}

  bool matchesAll() const { return expr_ == nullptr; }

  // True when the condition evaluates to boolean true on `row` (docs/protocol.md §8.2): null,
  // undefined and non-boolean results do not match. `row` is in its service shape: a twin
  // (§6.1) for FROM devices, a device-job row (§9.8) for FROM devices.jobs.
  bool matches(const RowView& row) const;
  bool matches(const json::object& row) const { return matches(JsonRow(row)); }

  // For a planner: when the condition is `path = constant` (constant a primitive), or an AND
  // whose operands include one, that path and constant (the first such operand). Every
  // matching row then has at `path` a value primitiveEquals() (value.hpp) to the constant,
  // so an index on `path` can supply the candidates; matches() must still be applied to
  // each candidate for the rest of the condition.
  std::optional<std::pair<Path, json::value>> indexableEquality() const;

  // Like indexableEquality(), but also accepts `path IN [c1, c2, ...]` at the same places:
  // every matching row has at `path` a value equal to one of the returned constants.
  std::optional<std::pair<Path, std::vector<json::value>>> indexableLookup() const;

  // The bound expression, fully parenthesized with canonical paths, e.g.
  // "((tags.a = 1) AND (deviceId IN [\"x\"]))"; "*" for the match-all condition.
  std::string toString() const;

  // The bound tree; nullptr for the match-all condition.
  const Expr* expr() const { return expr_.get(); }

 private:
  std::shared_ptr<const Expr> expr_;
};

}  // namespace iothub::query
