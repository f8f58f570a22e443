#include "query/evaluator.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>

#include "query/functions.hpp"

namespace iothub::query {
namespace {

constexpr std::size_t kMaxFunctionArgs = 16;

Truth truthOf(const Value& v) {
  const json::value* j = v.getIf();
  if (j == nullptr || !j->is_bool()) return Truth::Unknown;
  return j->get_bool() ? Truth::True : Truth::False;
}

Value fromTruth(Truth t) {
  if (t == Truth::Unknown) return Value();
  return Value::owned(json::value(t == Truth::True));
}

Truth fromBool(bool b) { return b ? Truth::True : Truth::False; }

Truth compare(ComparisonOp op, const Value& left, const Value& right) {
  if (!left.isDefined() || !right.isDefined()) return Truth::Unknown;
  std::optional<int> c = compareSameKind(left.get(), right.get());
  if (!c) return Truth::Unknown;
  switch (op) {
    case ComparisonOp::Equal:
      return fromBool(*c == 0);
    case ComparisonOp::NotEqual:
      return fromBool(*c != 0);
    case ComparisonOp::Less:
      return fromBool(*c < 0);
    case ComparisonOp::LessEqual:
      return fromBool(*c <= 0);
    case ComparisonOp::Greater:
      return fromBool(*c > 0);
    case ComparisonOp::GreaterEqual:
      return fromBool(*c >= 0);
  }
  return Truth::Unknown;
}

// Membership in a constant list: True when some member is equal (same kind), False when the
// value is a primitive equal to none, Unknown when it is undefined, an object or an array.
Truth member(const Expr& expr, const RowView& row) {
  Value v = evaluate(*expr.children[0], row);
  const json::value* x = v.getIf();
  if (x == nullptr || !isPrimitive(*x)) return Truth::Unknown;
  bool found = false;
  if (x->is_string() && !expr.sorted_strings.empty()) {
    std::string_view s(x->get_string());
    found = std::binary_search(expr.sorted_strings.begin(), expr.sorted_strings.end(), s,
                               [](std::string_view a, std::string_view b) { return a < b; });
  } else {
    for (const json::value& candidate : expr.constant.get_array()) {
      if (primitiveEquals(*x, candidate)) {
        found = true;
        break;
      }
    }
  }
  return fromBool(found == (expr.kind == ExprKind::In));
}

Value finiteReal(double d) {
  if (!std::isfinite(d)) return Value();
  Number n;
  n.is_integer = false;
  n.real = d;
  return Value::owned(numberToJson(n));
}

Value integer(std::int64_t i) { return Value::owned(json::value(i)); }

Value arithmetic(ArithmeticOp op, const Value& left, const Value& right) {
  const json::value* l = left.getIf();
  const json::value* r = right.getIf();
  if (l == nullptr || r == nullptr) return Value();
  std::optional<Number> a = toNumber(*l);
  std::optional<Number> b = toNumber(*r);
  if (!a || !b) return Value();
  if (a->is_integer && b->is_integer) {
    std::int64_t x = a->integer;
    std::int64_t y = b->integer;
    std::int64_t out = 0;
    switch (op) {
      case ArithmeticOp::Add:
        if (!__builtin_add_overflow(x, y, &out)) return integer(out);
        break;
      case ArithmeticOp::Subtract:
        if (!__builtin_sub_overflow(x, y, &out)) return integer(out);
        break;
      case ArithmeticOp::Multiply:
        if (!__builtin_mul_overflow(x, y, &out)) return integer(out);
        break;
      case ArithmeticOp::Divide:
        if (y == 0) return Value();
        if (y != -1 && x % y == 0) return integer(x / y);
        break;
      case ArithmeticOp::Modulo:
        if (y == 0) return Value();
        // INT64_MIN % -1 overflows in C++ although the answer is 0.
        return integer(y == -1 ? 0 : x % y);
    }
  }
  double x = a->asDouble();
  double y = b->asDouble();
  switch (op) {
    case ArithmeticOp::Add:
      return finiteReal(x + y);
    case ArithmeticOp::Subtract:
      return finiteReal(x - y);
    case ArithmeticOp::Multiply:
      return finiteReal(x * y);
    case ArithmeticOp::Divide:
      return y == 0 ? Value() : finiteReal(x / y);
    case ArithmeticOp::Modulo:
      return y == 0 ? Value() : finiteReal(std::fmod(x, y));
  }
  return Value();
}

Value negate(const Value& v) {
  const json::value* j = v.getIf();
  std::optional<Number> n = j ? toNumber(*j) : std::nullopt;
  if (!n) return Value();
  if (n->is_integer && n->integer != std::numeric_limits<std::int64_t>::min()) {
    return integer(-n->integer);
  }
  return finiteReal(-n->asDouble());
}

Value callFunction(const Expr& expr, const RowView& row) {
  // The binder caps argument counts at FunctionDef::max_args (at most kMaxFunctionArgs).
  std::array<Value, kMaxFunctionArgs> args;
  std::size_t count = std::min(expr.children.size(), kMaxFunctionArgs);
  for (std::size_t i = 0; i < count; ++i) args[i] = evaluate(*expr.children[i], row);
  return expr.function->invoke(std::span<const Value>(args.data(), count));
}

}  // namespace

Truth evaluateTruth(const Expr& expr, const RowView& row) {
  switch (expr.kind) {
    case ExprKind::Comparison:
      return compare(expr.comparison_op, evaluate(*expr.children[0], row),
                     evaluate(*expr.children[1], row));
    case ExprKind::And: {
      Truth result = Truth::True;
      for (const auto& child : expr.children) {
        Truth t = evaluateTruth(*child, row);
        if (t == Truth::False) return Truth::False;
        if (t == Truth::Unknown) result = Truth::Unknown;
      }
      return result;
    }
    case ExprKind::Or: {
      Truth result = Truth::False;
      for (const auto& child : expr.children) {
        Truth t = evaluateTruth(*child, row);
        if (t == Truth::True) return Truth::True;
        if (t == Truth::Unknown) result = Truth::Unknown;
      }
      return result;
    }
    case ExprKind::Not:
      switch (evaluateTruth(*expr.children[0], row)) {
        case Truth::True:
          return Truth::False;
        case Truth::False:
          return Truth::True;
        case Truth::Unknown:
          return Truth::Unknown;
      }
      return Truth::Unknown;
    case ExprKind::In:
    case ExprKind::NotIn:
      return member(expr, row);
    default:
      return truthOf(evaluate(expr, row));
  }
}

Value evaluate(const Expr& expr, const RowView& row) {
  switch (expr.kind) {
    case ExprKind::Constant:
      return Value::borrowed(&expr.constant);
    case ExprKind::Undefined:
      return Value();
    case ExprKind::Path:
      return row.resolve(expr.path);
    case ExprKind::Negate:
      return negate(evaluate(*expr.children[0], row));
    case ExprKind::UnaryPlus: {
      Value v = evaluate(*expr.children[0], row);
      const json::value* j = v.getIf();
      return (j != nullptr && j->is_number()) ? v : Value();
    }
    case ExprKind::Arithmetic:
      return arithmetic(expr.arithmetic_op, evaluate(*expr.children[0], row),
                        evaluate(*expr.children[1], row));
    case ExprKind::Comparison:
    case ExprKind::And:
    case ExprKind::Or:
    case ExprKind::Not:
    case ExprKind::In:
    case ExprKind::NotIn:
      return fromTruth(evaluateTruth(expr, row));
    case ExprKind::Function:
      return callFunction(expr, row);
    case ExprKind::Aggregate:
      return Value();  // computed by the executor, never per row
  }
  return Value();
}

}  // namespace iothub::query
