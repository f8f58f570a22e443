#include "query/value.hpp"

#include <cmath>
#include <cstdio>
#include <limits>

namespace iothub::query {
namespace {

// 2^53: doubles below this magnitude represent every integer exactly.
constexpr double kExactIntegerLimit = 9007199254740992.0;

// An integral double within int64 range as that integer, so 2^60 (int) equals 2^60 (double)
// exactly; nullopt otherwise.
std::optional<std::int64_t> exactInteger(const Number& n) {
  if (n.is_integer) return n.integer;
  // -2^63 is representable; 2^63 is not an int64.
  if (std::trunc(n.real) == n.real && n.real >= -9223372036854775808.0 &&
      n.real < 9223372036854775808.0) {
    return static_cast<std::int64_t>(n.real);
  }
  return std::nullopt;
}

int compareNumbers(const Number& a, const Number& b) {
  std::optional<std::int64_t> x_int = exactInteger(a);
  std::optional<std::int64_t> y_int = exactInteger(b);
  if (x_int && y_int) return *x_int < *y_int ? -1 : (*x_int > *y_int ? 1 : 0);
  double x = a.asDouble();
  double y = b.asDouble();
  return x < y ? -1 : (x > y ? 1 : 0);
}

// `tag` followed by `body`. (Built by appending: GCC 12 at -O3 reports a false -Wrestrict
// for "literal" + std::string.)
std::string prefixed(char tag, std::string_view body) {
  std::string out;
  out.reserve(body.size() + 1);
  out.push_back(tag);
  out.append(body);
  return out;
}

}  // namespace

std::optional<Number> toNumber(const json::value& v) {
  Number n;
  switch (v.kind()) {
    case json::kind::int64:
      n.integer = v.get_int64();
      return n;
    case json::kind::uint64:
      if (v.get_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        n.integer = static_cast<std::int64_t>(v.get_uint64());
      } else {
        n.is_integer = false;
        n.real = static_cast<double>(v.get_uint64());
      }
      return n;
    case json::kind::double_:
      n.is_integer = false;
      n.real = v.get_double();
      return n;
    default:
      return std::nullopt;
  }
}

json::value numberToJson(Number n) {
  if (n.is_integer) return json::value(n.integer);
  if (std::isfinite(n.real) && std::trunc(n.real) == n.real &&
      std::fabs(n.real) < kExactIntegerLimit) {
    return json::value(static_cast<std::int64_t>(n.real));
  }
  return json::value(n.real);
}

bool isPrimitive(const json::value& v) { return !v.is_object() && !v.is_array(); }

std::optional<int> compareSameKind(const json::value& a, const json::value& b) {
  if (a.is_string()) {
    if (!b.is_string()) return std::nullopt;
    int c = std::string_view(a.get_string()).compare(std::string_view(b.get_string()));
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_number()) {
    if (!b.is_number()) return std::nullopt;
    return compareNumbers(*toNumber(a), *toNumber(b));
  }
  if (a.is_bool()) {
    if (!b.is_bool()) return std::nullopt;
    return static_cast<int>(a.get_bool()) - static_cast<int>(b.get_bool());
  }
  if (a.is_null()) {
    if (!b.is_null()) return std::nullopt;
    return 0;
  }
  return std::nullopt;
}

bool primitiveEquals(const json::value& a, const json::value& b) {
  std::optional<int> c = compareSameKind(a, b);
  return c.has_value() && *c == 0;
}

std::string valueKey(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "n";
    case json::kind::bool_:
      return v.get_bool() ? "t" : "f";
    case json::kind::string:
      return prefixed('s', v.get_string());
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: {
      Number n = *toNumber(v);
      if (std::optional<std::int64_t> i = exactInteger(n)) return prefixed('i', std::to_string(*i));
      char buffer[40];
      std::snprintf(buffer, sizeof buffer, "d%.17g", n.real);
      return buffer;
    }
    case json::kind::array:
    case json::kind::object:
      return prefixed('j', json::serialize(v));
  }
  return "?";
}

}  // namespace iothub::query
