#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <span>
#include <string_view>

#include "query/value.hpp"

namespace iothub::query {

// Built-in scalar functions (docs/protocol.md §8.3): the type checks IS_DEFINED ... IS_PRIMITIVE,
// the string functions STARTSWITH/STARTS_WITH, ENDSWITH/ENDS_WITH, CONTAINS, LOWER, UPPER,
// LENGTH, CONCAT, SUBSTRING, INDEX_OF, ARRAY_CONTAINS, and the routing-condition math
// functions ABS, CEILING, FLOOR, SIGN, SQRT, SQUARE, POWER, EXP, AS_NUMBER.
// An argument of the wrong type at run time makes the result undefined (never an error);
// the binder rejects constant arguments of the wrong type before evaluation.

// Static type of an expression, as far as the binder can tell; Any for property paths.
enum class ValueType { Any, Undefined, Null, Bool, Number, String, Array, Object };

std::string_view valueTypeName(ValueType type);

struct FunctionDef {
  std::string_view name;  // canonical upper-case spelling
  std::size_t min_args;
  std::size_t max_args;
  ValueType result;
  std::array<ValueType, 3> params;  // expected type of argument i; the last entry repeats
  Value (*invoke)(std::span<const Value> args);

  ValueType paramType(std::size_t i) const { return params[std::min<std::size_t>(i, 2)]; }
};

// The function called `name` (case-insensitive, e.g. "startsWith"), or nullptr.
// The returned definition is static.
const FunctionDef* findFunction(std::string_view name);

}  // namespace iothub::query
