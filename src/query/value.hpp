#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/json.hpp"

namespace iothub::query {

// The type rules of the query language (docs/protocol.md §8.2), shared by the evaluator, the
// executor and any index a planner builds, so they all agree on what "equal" means.

// A value during evaluation: undefined (a missing member), a reference to a JSON value
// that lives elsewhere (in the row being evaluated or in the query's AST), or a value it
// owns (a function's result). Borrowing avoids copying twin content on every row.
class Value {
 public:
  Value() = default;  // undefined

  // Refers to *v, which must outlive this Value; nullptr gives undefined.
  static Value borrowed(const json::value* v) {
    Value r;
    r.ptr_ = v;
    return r;
  }
  static Value owned(json::value v) {
    Value r;
    r.owned_ = std::move(v);
    r.is_owned_ = true;
    return r;
  }

  bool isDefined() const { return is_owned_ || ptr_ != nullptr; }
  // The JSON value; only when isDefined().
  const json::value& get() const { return is_owned_ ? owned_ : *ptr_; }
  // nullptr when undefined.
  const json::value* getIf() const { return isDefined() ? &get() : nullptr; }

 private:
  const json::value* ptr_ = nullptr;
  json::value owned_;
  bool is_owned_ = false;
};

// Three-valued logic: Unknown is what comparisons with undefined or mismatched types give;
// a condition matches only when it is True.
enum class Truth { False, True, Unknown };

// A JSON number as the evaluator computes with it: exact int64 where possible, else double.
struct Number {
  bool is_integer = true;
  std::int64_t integer = 0;
  double real = 0;

  double asDouble() const { return is_integer ? static_cast<double>(integer) : real; }
};

// The number in `v`, or nullopt when `v` is not a number. uint64 values above INT64_MAX
// become doubles.
std::optional<Number> toNumber(const json::value& v);

// `n` as JSON: int64 when integral, double otherwise. Doubles that are integral and within
// ±2^53 are written as int64 so results print as "2" rather than "2E0".
json::value numberToJson(Number n);

// Null, bool, number or string.
bool isPrimitive(const json::value& v);

// Orders two primitives of the same kind: null = null; false < true; numbers by value
// (1 == 1.0); strings bytewise (so ISO-8601 timestamps order in time). nullopt when the
// kinds differ or either is an object or array: such values never compare, not even with !=.
std::optional<int> compareSameKind(const json::value& a, const json::value& b);

// compareSameKind(a, b) == 0: the equality `path = constant` and `IN` use.
bool primitiveEquals(const json::value& a, const json::value& b);

// A string that is equal for exactly the values primitiveEquals() calls equal (and distinct
// for all others, including objects and arrays, compared structurally). Used as a hash key
// by GROUP BY and usable by an index that must agree with the evaluator.
std::string valueKey(const json::value& v);

}  // namespace iothub::query
