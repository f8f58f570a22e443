#pragma once

#include "common/json.hpp"
#include "query/ast.hpp"
#include "query/row.hpp"
#include "query/value.hpp"

namespace iothub::query {

// Stage 3: evaluates a bound expression against one row (docs/protocol.md §8.2).
// Never fails and never throws: a missing member, an operand of the wrong type, division by
// zero or a non-finite result is undefined. Comparisons are Unknown unless both sides are
// primitives of the same kind; AND/OR/NOT use three-valued logic (False AND Unknown is
// False, True OR Unknown is True, NOT Unknown is Unknown). Values borrowed from `row` stay
// valid as long as `row` does.

Value evaluate(const Expr& expr, const RowView& row);

// The truth of `expr`: True only for boolean true, False only for boolean false.
Truth evaluateTruth(const Expr& expr, const RowView& row);

}  // namespace iothub::query
