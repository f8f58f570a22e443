#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.hpp"
#include "query/path.hpp"

namespace iothub::query {

// Stage 2 output: the expression tree the parser builds and the binder checks. Trees are
// immutable once bound and shared by const pointer between copies of a Condition.

struct FunctionDef;

enum class ExprKind {
  Constant,    // `constant`
  Undefined,   // the `undefined` literal
  Path,        // `path`
  Negate,      // -children[0]
  UnaryPlus,   // +children[0]
  Not,         // NOT children[0]
  Arithmetic,  // children[0] arithmetic_op children[1]
  Comparison,  // children[0] comparison_op children[1]
  And,         // all children (flattened, so long chains do not deepen the tree)
  Or,          // any child (flattened)
  In,          // children[0] IN `constant` (an array of primitives)
  NotIn,       // children[0] NIN `constant`
  Function,    // function(children...)
  Aggregate,   // aggregate(children...): only as a SELECT item
};

enum class ArithmeticOp { Add, Subtract, Multiply, Divide, Modulo };
enum class ComparisonOp { Equal, NotEqual, Less, LessEqual, Greater, GreaterEqual };
enum class AggregateKind { Count, Avg, Sum, Min, Max };

// Bound on expression nesting (parentheses, operators, function calls), so parsing,
// evaluating and destroying a tree never recurse deeper than this.
inline constexpr int kMaxExpressionDepth = 64;

struct Expr {
  ExprKind kind = ExprKind::Constant;
  std::size_t begin = 0;  // byte range in the query text, for error messages
  std::size_t end = 0;
  int depth = 1;  // 1 + the deepest child
  json::value constant;
  Path path;
  ArithmeticOp arithmetic_op = ArithmeticOp::Add;
  ComparisonOp comparison_op = ComparisonOp::Equal;
  AggregateKind aggregate = AggregateKind::Count;
  const FunctionDef* function = nullptr;  // static storage
  std::vector<std::unique_ptr<Expr>> children;
  // In/NotIn: the string members of the list, sorted, so long lists (deviceId IN [...]
  // with hundreds of ids) are searched in O(log n).
  std::vector<std::string> sorted_strings;

  // A fully parenthesized rendering, e.g. "((tags.a = 1) AND (NOT IS_DEFINED(tags.b)))".
  std::string toString() const;
};

std::string_view aggregateName(AggregateKind kind);  // "COUNT", "AVG", ...
std::string_view comparisonOpName(ComparisonOp op);  // "=", "!=", ...
std::string_view arithmeticOpName(ArithmeticOp op);  // "+", ...

}  // namespace iothub::query
