#include "query/functions.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "query/lexer.hpp"

namespace iothub::query {
namespace {

using Args = std::span<const Value>;

const json::string* stringArg(Args args, std::size_t i) {
  const json::value* v = args[i].getIf();
  return v ? v->if_string() : nullptr;
}

std::optional<Number> numberArg(Args args, std::size_t i) {
  const json::value* v = args[i].getIf();
  return v ? toNumber(*v) : std::nullopt;
}

// The optional trailing "ignore case" flag of the string predicates; nullopt when it is
// present but not a bool (the call is then undefined).
std::optional<bool> ignoreCaseArg(Args args, std::size_t i) {
  if (args.size() <= i) return false;
  const json::value* v = args[i].getIf();
  if (v == nullptr || !v->is_bool()) return std::nullopt;
  return v->get_bool();
}

Value boolean(bool b) { return Value::owned(json::value(b)); }

Value number(Number n) {
  if (!n.is_integer && !std::isfinite(n.real)) return Value();
  return Value::owned(numberToJson(n));
}

Value real(double d) {
  Number n;
  n.is_integer = false;
  n.real = d;
  return number(n);
}

std::string lowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string upperAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

// Byte offsets of the code points of `s` (plus s.size() at the end), for the functions
// that index strings by character.
std::vector<std::size_t> codePointOffsets(std::string_view s) {
  std::vector<std::size_t> offsets;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) offsets.push_back(i);
  }
  offsets.push_back(s.size());
  return offsets;
}

std::int64_t codePointCount(std::string_view s) {
  std::int64_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

template <bool (*Test)(const json::value&)>
Value typeCheck(Args args) {
  const json::value* v = args[0].getIf();
  return boolean(v != nullptr && Test(*v));
}

bool testDefined(const json::value&) { return true; }
bool testNull(const json::value& v) { return v.is_null(); }
bool testBool(const json::value& v) { return v.is_bool(); }
bool testNumber(const json::value& v) { return v.is_number(); }
bool testString(const json::value& v) { return v.is_string(); }
bool testObject(const json::value& v) { return v.is_object(); }
bool testArray(const json::value& v) { return v.is_array(); }

enum class StringTest { StartsWith, EndsWith, Contains };

template <StringTest Kind>
Value stringPredicate(Args args) {
  const json::string* s = stringArg(args, 0);
  const json::string* part = stringArg(args, 1);
  std::optional<bool> ignore_case = ignoreCaseArg(args, 2);
  if (s == nullptr || part == nullptr || !ignore_case) return Value();
  std::string folded_s;
  std::string folded_part;
  std::string_view hay(*s);
  std::string_view needle(*part);
  if (*ignore_case) {
    folded_s = lowerAscii(hay);
    folded_part = lowerAscii(needle);
    hay = folded_s;
    needle = folded_part;
  }
  switch (Kind) {
    case StringTest::StartsWith:
      return boolean(hay.starts_with(needle));
    case StringTest::EndsWith:
      return boolean(hay.ends_with(needle));
    case StringTest::Contains:
      return boolean(hay.find(needle) != std::string_view::npos);
  }
  return Value();
}

Value arrayContains(Args args) {
  const json::value* a = args[0].getIf();
  const json::value* item = args[1].getIf();
  if (a == nullptr || !a->is_array() || item == nullptr) return Value();
  for (const json::value& element : a->get_array()) {
    if (isPrimitive(*item) ? primitiveEquals(element, *item) : element == *item) {
      return boolean(true);
    }
  }
  return boolean(false);
}

Value lower(Args args) {
  const json::string* s = stringArg(args, 0);
  return s ? Value::owned(json::string(lowerAscii(*s))) : Value();
}

Value upper(Args args) {
  const json::string* s = stringArg(args, 0);
  return s ? Value::owned(json::string(upperAscii(*s))) : Value();
}

Value length(Args args) {
  const json::string* s = stringArg(args, 0);
  return s ? Value::owned(json::value(codePointCount(*s))) : Value();
}

Value concat(Args args) {
  std::string out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const json::string* s = stringArg(args, i);
    if (s == nullptr) return Value();
    out.append(s->data(), s->size());
  }
  return Value::owned(json::string(out));
}

Value substring(Args args) {
  const json::string* s = stringArg(args, 0);
  std::optional<Number> start = numberArg(args, 1);
  std::optional<Number> count = numberArg(args, 2);
  if (s == nullptr || !start || !count || !start->is_integer || !count->is_integer) return Value();
  std::vector<std::size_t> offsets = codePointOffsets(*s);
  auto chars = static_cast<std::int64_t>(offsets.size() - 1);
  std::int64_t first = std::clamp<std::int64_t>(start->integer, 0, chars);
  std::int64_t last =
      count->integer <= 0 ? first : std::min(chars, first + std::min(count->integer, chars));
  std::string_view view(*s);
  return Value::owned(json::string(view.substr(
      offsets[static_cast<std::size_t>(first)],
      offsets[static_cast<std::size_t>(last)] - offsets[static_cast<std::size_t>(first)])));
}

Value indexOf(Args args) {
  const json::string* s = stringArg(args, 0);
  const json::string* part = stringArg(args, 1);
  if (s == nullptr || part == nullptr) return Value();
  std::string_view view(*s);
  std::size_t at = view.find(std::string_view(*part));
  if (at == std::string_view::npos) return Value::owned(json::value(std::int64_t{-1}));
  return Value::owned(json::value(codePointCount(view.substr(0, at))));
}

Value abs(Args args) {
  std::optional<Number> n = numberArg(args, 0);
  if (!n) return Value();
  if (n->is_integer && n->integer != std::numeric_limits<std::int64_t>::min()) {
    n->integer = n->integer < 0 ? -n->integer : n->integer;
    return number(*n);
  }
  return real(std::fabs(n->asDouble()));
}

template <double (*Fn)(double)>
Value rounding(Args args) {
  std::optional<Number> n = numberArg(args, 0);
  if (!n) return Value();
  if (n->is_integer) return number(*n);
  return real(Fn(n->real));
}

double ceilingOf(double d) { return std::ceil(d); }
double floorOf(double d) { return std::floor(d); }

Value sign(Args args) {
  std::optional<Number> n = numberArg(args, 0);
  if (!n) return Value();
  double d = n->asDouble();
  return Value::owned(json::value(std::int64_t{d > 0 ? 1 : (d < 0 ? -1 : 0)}));
}

Value squareRoot(Args args) {
  std::optional<Number> n = numberArg(args, 0);
  if (!n || n->asDouble() < 0) return Value();
  return real(std::sqrt(n->asDouble()));
}

Value square(Args args) {
  std::optional<Number> n = numberArg(args, 0);
  if (!n) return Value();
  std::int64_t product = 0;
  if (n->is_integer && !__builtin_mul_overflow(n->integer, n->integer, &product)) {
    Number out;
    out.integer = product;
    return number(out);
  }
  double d = n->asDouble();
  return real(d * d);
}

Value power(Args args) {
  std::optional<Number> base = numberArg(args, 0);
  std::optional<Number> exponent = numberArg(args, 1);
  if (!base || !exponent) return Value();
  return real(std::pow(base->asDouble(), exponent->asDouble()));
}

Value exponential(Args args) {
  std::optional<Number> n = numberArg(args, 0);
  return n ? real(std::exp(n->asDouble())) : Value();
}

Value asNumber(Args args) {
  const json::string* s = stringArg(args, 0);
  if (s == nullptr) return Value();
  boost::system::error_code ec;
  json::value parsed = json::parse(std::string_view(*s), ec);
  if (ec || !parsed.is_number()) return Value();
  return Value::owned(std::move(parsed));
}

using VT = ValueType;

// clang-format off
// name, min args, max args, result, parameter types, implementation
constexpr FunctionDef kIsDefined{"IS_DEFINED", 1, 1, VT::Bool, {VT::Any, VT::Any, VT::Any}, typeCheck<testDefined>};
constexpr FunctionDef kIsNull{"IS_NULL", 1, 1, VT::Bool, {VT::Any, VT::Any, VT::Any}, typeCheck<testNull>};
constexpr FunctionDef kIsBool{"IS_BOOL", 1, 1, VT::Bool, {VT::Any, VT::Any, VT::Any}, typeCheck<testBool>};
constexpr FunctionDef kIsNumber{"IS_NUMBER", 1, 1, VT::Bool, {VT::Any, VT::Any, VT::Any}, typeCheck<testNumber>};
constexpr FunctionDef kIsString{"IS_STRING", 1, 1, VT::Bool, {VT::Any, VT::Any, VT::Any}, typeCheck<testString>};
constexpr FunctionDef kIsObject{"IS_OBJECT", 1, 1, VT::Bool, {VT::Any, VT::Any, VT::Any}, typeCheck<testObject>};
constexpr FunctionDef kIsArray{"IS_ARRAY", 1, 1, VT::Bool, {VT::Any, VT::Any, VT::Any}, typeCheck<testArray>};
constexpr FunctionDef kIsPrimitive{"IS_PRIMITIVE", 1, 1, VT::Bool, {VT::Any, VT::Any, VT::Any}, typeCheck<isPrimitive>};
constexpr FunctionDef kStartsWith{"STARTSWITH", 2, 3, VT::Bool, {VT::String, VT::String, VT::Bool}, stringPredicate<StringTest::StartsWith>};
constexpr FunctionDef kEndsWith{"ENDSWITH", 2, 3, VT::Bool, {VT::String, VT::String, VT::Bool}, stringPredicate<StringTest::EndsWith>};
constexpr FunctionDef kContains{"CONTAINS", 2, 3, VT::Bool, {VT::String, VT::String, VT::Bool}, stringPredicate<StringTest::Contains>};
constexpr FunctionDef kArrayContains{"ARRAY_CONTAINS", 2, 2, VT::Bool, {VT::Array, VT::Any, VT::Any}, arrayContains};
constexpr FunctionDef kLower{"LOWER", 1, 1, VT::String, {VT::String, VT::Any, VT::Any}, lower};
constexpr FunctionDef kUpper{"UPPER", 1, 1, VT::String, {VT::String, VT::Any, VT::Any}, upper};
constexpr FunctionDef kLength{"LENGTH", 1, 1, VT::Number, {VT::String, VT::Any, VT::Any}, length};
constexpr FunctionDef kConcat{"CONCAT", 2, 16, VT::String, {VT::String, VT::String, VT::String}, concat};
constexpr FunctionDef kSubstring{"SUBSTRING", 3, 3, VT::String, {VT::String, VT::Number, VT::Number}, substring};
constexpr FunctionDef kIndexOf{"INDEX_OF", 2, 2, VT::Number, {VT::String, VT::String, VT::Any}, indexOf};
constexpr FunctionDef kAbs{"ABS", 1, 1, VT::Number, {VT::Number, VT::Any, VT::Any}, abs};
constexpr FunctionDef kCeiling{"CEILING", 1, 1, VT::Number, {VT::Number, VT::Any, VT::Any}, rounding<ceilingOf>};
constexpr FunctionDef kFloor{"FLOOR", 1, 1, VT::Number, {VT::Number, VT::Any, VT::Any}, rounding<floorOf>};
constexpr FunctionDef kSign{"SIGN", 1, 1, VT::Number, {VT::Number, VT::Any, VT::Any}, sign};
constexpr FunctionDef kSqrt{"SQRT", 1, 1, VT::Number, {VT::Number, VT::Any, VT::Any}, squareRoot};
constexpr FunctionDef kSquare{"SQUARE", 1, 1, VT::Number, {VT::Number, VT::Any, VT::Any}, square};
constexpr FunctionDef kPower{"POWER", 2, 2, VT::Number, {VT::Number, VT::Number, VT::Any}, power};
constexpr FunctionDef kExp{"EXP", 1, 1, VT::Number, {VT::Number, VT::Any, VT::Any}, exponential};
constexpr FunctionDef kAsNumber{"AS_NUMBER", 1, 1, VT::Number, {VT::String, VT::Any, VT::Any}, asNumber};
// clang-format on

struct Spelling {
  std::string_view name;
  const FunctionDef* def;
};

constexpr Spelling kSpellings[] = {
    {"IS_DEFINED", &kIsDefined},
    {"IS_NULL", &kIsNull},
    {"IS_BOOL", &kIsBool},
    {"IS_NUMBER", &kIsNumber},
    {"IS_STRING", &kIsString},
    {"IS_OBJECT", &kIsObject},
    {"IS_ARRAY", &kIsArray},
    {"IS_PRIMITIVE", &kIsPrimitive},
    {"STARTSWITH", &kStartsWith},
    {"STARTS_WITH", &kStartsWith},
    {"ENDSWITH", &kEndsWith},
    {"ENDS_WITH", &kEndsWith},
    {"CONTAINS", &kContains},
    {"ARRAY_CONTAINS", &kArrayContains},
    {"LOWER", &kLower},
    {"UPPER", &kUpper},
    {"LENGTH", &kLength},
    {"CONCAT", &kConcat},
    {"SUBSTRING", &kSubstring},
    {"INDEX_OF", &kIndexOf},
    {"ABS", &kAbs},
    {"CEILING", &kCeiling},
    {"FLOOR", &kFloor},
    {"SIGN", &kSign},
    {"SQRT", &kSqrt},
    {"SQUARE", &kSquare},
    {"POWER", &kPower},
    {"EXP", &kExp},
    {"AS_NUMBER", &kAsNumber},
};

}  // namespace

std::string_view valueTypeName(ValueType type) {
  switch (type) {
    case ValueType::Any:
      return "any value";
    case ValueType::Undefined:
      return "undefined";
    case ValueType::Null:
      return "null";
    case ValueType::Bool:
      return "a boolean";
    case ValueType::Number:
      return "a number";
    case ValueType::String:
      return "a string";
    case ValueType::Array:
      return "an array";
    case ValueType::Object:
      return "an object";
  }
  return "?";
}

const FunctionDef* findFunction(std::string_view name) {
  for (const Spelling& s : kSpellings) {
    if (equalsIgnoreCase(s.name, name)) return s.def;
  }
  return nullptr;
}

}  // namespace iothub::query
