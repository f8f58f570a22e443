#include "query/condition.hpp"

#include "query/ast.hpp"
#include "query/evaluator.hpp"

namespace iothub::query {
namespace {

// The path and constant list of an indexable operand: `path = c`, `c = path` or
// `path IN [...]`.
std::optional<std::pair<Path, std::vector<json::value>>> lookupOf(const Expr& e, bool allow_in) {
  if (e.kind == ExprKind::Comparison && e.comparison_op == ComparisonOp::Equal) {
    const Expr& left = *e.children[0];
    const Expr& right = *e.children[1];
    const Expr* path = left.kind == ExprKind::Path ? &left : &right;
    const Expr* constant = left.kind == ExprKind::Path ? &right : &left;
    if (path->kind == ExprKind::Path && constant->kind == ExprKind::Constant &&
        isPrimitive(constant->constant)) {
      return std::make_pair(path->path, std::vector<json::value>{constant->constant});
    }
  }
  if (allow_in && e.kind == ExprKind::In && e.children[0]->kind == ExprKind::Path) {
    const json::array& list = e.constant.get_array();
    return std::make_pair(e.children[0]->path, std::vector<json::value>(list.begin(), list.end()));
  }
  return std::nullopt;
}

std::optional<std::pair<Path, std::vector<json::value>>> findLookup(const Expr* root,
                                                                    bool allow_in) {
  if (root == nullptr) return std::nullopt;
  if (root->kind != ExprKind::And) return lookupOf(*root, allow_in);
  for (const auto& child : root->children) {
    if (auto found = lookupOf(*child, allow_in)) return found;
  }
  return std::nullopt;
}

}  // namespace

bool Condition::matches(const RowView& row) const {
  return expr_ == nullptr || evaluateTruth(*expr_, row) == Truth::True;
}

std::optional<std::pair<Path, json::value>> Condition::indexableEquality() const {
  auto found = findLookup(expr_.get(), /*allow_in=*/false);
  if (!found) return std::nullopt;
  return std::make_pair(std::move(found->first), std::move(found->second.front()));
}

std::optional<std::pair<Path, std::vector<json::value>>> Condition::indexableLookup() const {
  return findLookup(expr_.get(), /*allow_in=*/true);
}

std::string Condition::toString() const { return expr_ ? expr_->toString() : "*"; }

}  // namespace iothub::query
