#include "query/ast.hpp"

#include <initializer_list>

#include "query/functions.hpp"

namespace iothub::query {

std::string_view aggregateName(AggregateKind kind) {
  switch (kind) {
    case AggregateKind::Count:
      return "COUNT";
    case AggregateKind::Avg:
      return "AVG";
    case AggregateKind::Sum:
      return "SUM";
    case AggregateKind::Min:
      return "MIN";
    case AggregateKind::Max:
      return "MAX";
  }
  return "?";
}

std::string_view comparisonOpName(ComparisonOp op) {
  switch (op) {
    case ComparisonOp::Equal:
      return "=";
    case ComparisonOp::NotEqual:
      return "!=";
    case ComparisonOp::Less:
      return "<";
    case ComparisonOp::LessEqual:
      return "<=";
    case ComparisonOp::Greater:
      return ">";
    case ComparisonOp::GreaterEqual:
      return ">=";
  }
  return "?";
}

std::string_view arithmeticOpName(ArithmeticOp op) {
  switch (op) {
    case ArithmeticOp::Add:
      return "+";
    case ArithmeticOp::Subtract:
      return "-";
    case ArithmeticOp::Multiply:
      return "*";
    case ArithmeticOp::Divide:
      return "/";
    case ArithmeticOp::Modulo:
      return "%";
  }
  return "?";
}

namespace {

// Concatenates by appending (GCC 12 at -O3 reports a false -Wrestrict for "literal" +
// std::string).
std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) out.append(part);
  return out;
}

}  // namespace

std::string Expr::toString() const {
  auto joined = [this](std::string_view separator) {
    std::string out;
    for (std::size_t i = 0; i < children.size(); ++i) {
      if (i > 0) out += separator;
      out += children[i]->toString();
    }
    return out;
  };
  auto child = [this](std::size_t i) { return children[i]->toString(); };
  switch (kind) {
    case ExprKind::Constant:
      return json::serialize(constant);
    case ExprKind::Undefined:
      return "undefined";
    case ExprKind::Path:
      return path.toString();
    case ExprKind::Negate:
      return concat({"(-", child(0), ")"});
    case ExprKind::UnaryPlus:
      return concat({"(+", child(0), ")"});
    case ExprKind::Not:
      return concat({"(NOT ", child(0), ")"});
    case ExprKind::Arithmetic:
      return concat({"(", child(0), " ", arithmeticOpName(arithmetic_op), " ", child(1), ")"});
    case ExprKind::Comparison:
      return concat({"(", child(0), " ", comparisonOpName(comparison_op), " ", child(1), ")"});
    case ExprKind::And:
      return concat({"(", joined(" AND "), ")"});
    case ExprKind::Or:
      return concat({"(", joined(" OR "), ")"});
    case ExprKind::In:
      return concat({"(", child(0), " IN ", json::serialize(constant), ")"});
    case ExprKind::NotIn:
      return concat({"(", child(0), " NIN ", json::serialize(constant), ")"});
    case ExprKind::Function:
      return concat({function->name, "(", joined(", "), ")"});
    case ExprKind::Aggregate:
      return concat({aggregateName(aggregate), "(", joined(", "), ")"});
  }
  return "?";
}

}  // namespace iothub::query
