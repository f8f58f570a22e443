#include "query/parser.hpp"

#include <algorithm>
#include <array>
#include <limits>

#include "query/errors.hpp"
#include "query/functions.hpp"

namespace iothub::query {
namespace {

using ExprPtr = std::unique_ptr<Expr>;

// Lists with more string members than this get a sorted index (Expr::sorted_strings).
constexpr std::size_t kSortedListThreshold = 8;

constexpr std::array<std::string_view, 17> kReservedWords = {
    "SELECT", "FROM", "WHERE", "GROUP", "BY",    "AS",   "AND",       "OR",    "NOT",
    "IN",     "NIN",  "TOP",   "TRUE",  "FALSE", "NULL", "UNDEFINED", "ORDER",
};

struct AggregateSpelling {
  std::string_view name;
  AggregateKind kind;
};
constexpr std::array<AggregateSpelling, 5> kAggregates = {{
    {"COUNT", AggregateKind::Count},
    {"AVG", AggregateKind::Avg},
    {"SUM", AggregateKind::Sum},
    {"MIN", AggregateKind::Min},
    {"MAX", AggregateKind::Max},
}};

bool isReserved(const Token& t) {
  if (t.kind != TokenKind::Identifier) return false;
  return std::any_of(kReservedWords.begin(), kReservedWords.end(),
                     [&](std::string_view w) { return equalsIgnoreCase(w, t.text); });
}

class Parser {
 public:
  Parser(std::string_view text, const std::vector<Token>& tokens) : text_(text), tokens_(tokens) {}

  Result<SelectStatement> select() {
    SelectStatement statement;
    if (!acceptKeyword("SELECT")) return expected("SELECT");
    if (acceptKeyword("TOP")) {
      const Token& n = peek();
      if (n.kind != TokenKind::Number || !n.number.is_int64() || n.number.get_int64() < 0) {
        return queryError("Syntax", text_, n.begin, n.end, "TOP expects a non-negative integer");
      }
      statement.top = static_cast<std::uint64_t>(n.number.get_int64());
      advance();
    }
    if (peek().kind == TokenKind::Star) {
      advance();
      statement.select_all = true;
    } else {
      while (true) {
        SelectItem item;
        Result<ExprPtr> expr = expression();
        if (!expr) return expr.status();
        item.expr = std::move(expr).value();
        if (acceptKeyword("AS")) {
          const Token& alias = peek();
          bool is_name = alias.kind == TokenKind::Identifier && !isReserved(alias);
          if (!is_name && alias.kind != TokenKind::String) return expected("an alias after AS");
          if (alias.text.empty()) return errorAt(alias, "an alias cannot be empty");
          item.alias = alias.text;
          item.alias_begin = alias.begin;
          item.alias_end = alias.end;
          advance();
        }
        statement.items.push_back(std::move(item));
        if (peek().kind != TokenKind::Comma) break;
        advance();
      }
    }
    if (!acceptKeyword("FROM")) {
      return expected(statement.select_all ? "FROM" : "',', AS or FROM");
    }
    const Token& first = peek();
    if (first.kind != TokenKind::Identifier || isReserved(first)) {
      return expected("a collection (devices or devices.jobs)");
    }
    statement.from_begin = first.begin;
    statement.from.push_back(first.text);
    statement.from_end = first.end;
    advance();
    while (peek().kind == TokenKind::Dot) {
      advance();
      const Token& name = peek();
      if (name.kind != TokenKind::Identifier) return expected("a name after '.'");
      statement.from.push_back(name.text);
      statement.from_end = name.end;
      advance();
    }
    if (acceptKeyword("WHERE")) {
      Result<ExprPtr> where = expression();
      if (!where) return where.status();
      statement.where = std::move(where).value();
    }
    if (acceptKeyword("GROUP")) {
      if (!acceptKeyword("BY")) return expected("BY after GROUP");
      Result<ExprPtr> group = expression();
      if (!group) return group.status();
      statement.group_by = std::move(group).value();
    }
    if (isKeyword(peek(), "ORDER")) return errorAt(peek(), "ORDER BY is not supported");
    if (peek().kind != TokenKind::End) {
      if (statement.group_by) return expected("end of query");
      if (statement.where) return expected("an operator, GROUP BY or end of query");
      return expected("WHERE, GROUP BY or end of query");
    }
    return statement;
  }

  Result<ExprPtr> standalone() {
    Result<ExprPtr> expr = expression();
    if (!expr) return expr.status();
    if (peek().kind != TokenKind::End) return expected("an operator or end of condition");
    return expr;
  }

 private:
  // Counts nested constructs so that hostile input ("((((...", "NOT NOT NOT ...") cannot
  // drive the recursive descent arbitrarily deep.
  class NestingGuard {
   public:
    explicit NestingGuard(int& depth) : depth_(depth) { ++depth_; }
    ~NestingGuard() { --depth_; }
    NestingGuard(const NestingGuard&) = delete;
    NestingGuard& operator=(const NestingGuard&) = delete;

   private:
    int& depth_;
  };

  const Token& peek(std::size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  void advance() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  static bool isKeyword(const Token& t, std::string_view word) {
    return t.kind == TokenKind::Identifier && equalsIgnoreCase(t.text, word);
  }
  bool acceptKeyword(std::string_view word) {
    if (!isKeyword(peek(), word)) return false;
    advance();
    return true;
  }

  Status errorAt(const Token& t, std::string_view message) const {
    return queryError("Syntax", text_, t.begin, t.end, message);
  }
  Status expected(std::string_view what) const {
    return errorAt(peek(), "expected " + std::string(what));
  }
  Status tooDeep(const Token& t) const {
    return errorAt(t, "expression nested too deeply (more than " +
                          std::to_string(kMaxExpressionDepth) + " levels)");
  }

  // Builds a node over `children`, enforcing the depth bound on the resulting tree.
  Result<ExprPtr> node(ExprKind kind, std::vector<ExprPtr> children, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    int deepest = 0;
    for (const ExprPtr& child : children) deepest = std::max(deepest, child->depth);
    e->depth = deepest + 1;
    if (e->depth > kMaxExpressionDepth) return tooDeep(at);
    if (!children.empty()) {
      e->begin = children.front()->begin;
      e->end = children.back()->end;
    }
    e->children = std::move(children);
    return e;
  }

  Result<ExprPtr> binary(ExprKind kind, ExprPtr left, ExprPtr right, const Token& op) {
    std::vector<ExprPtr> children;
    children.push_back(std::move(left));
    children.push_back(std::move(right));
    return node(kind, std::move(children), op);
  }

  Result<ExprPtr> expression() {
    NestingGuard guard(nesting_);
    if (nesting_ > kMaxExpressionDepth) return tooDeep(peek());
    return orExpression();
  }

  // AND and OR chains become one n-ary node, so a long list of alternatives stays shallow.
  Result<ExprPtr> chain(ExprKind kind, std::string_view keyword,
                        Result<ExprPtr> (Parser::*operand)()) {
    Result<ExprPtr> first = (this->*operand)();
    if (!first) return first;
    if (!isKeyword(peek(), keyword)) return first;
    const Token& op = peek();
    std::vector<ExprPtr> children;
    children.push_back(std::move(first).value());
    while (acceptKeyword(keyword)) {
      Result<ExprPtr> next = (this->*operand)();
      if (!next) return next;
      children.push_back(std::move(next).value());
    }
    return node(kind, std::move(children), op);
  }

  Result<ExprPtr> orExpression() { return chain(ExprKind::Or, "OR", &Parser::andExpression); }
  Result<ExprPtr> andExpression() { return chain(ExprKind::And, "AND", &Parser::notExpression); }

  Result<ExprPtr> notExpression() {
    if (!isKeyword(peek(), "NOT")) return comparison();
    const Token& op = peek();
    advance();
    NestingGuard guard(nesting_);
    if (nesting_ > kMaxExpressionDepth) return tooDeep(op);
    Result<ExprPtr> operand = notExpression();
    if (!operand) return operand;
    std::vector<ExprPtr> children;
    children.push_back(std::move(operand).value());
    Result<ExprPtr> e = node(ExprKind::Not, std::move(children), op);
    if (e) e.value()->begin = op.begin;
    return e;
  }

  static std::optional<ComparisonOp> comparisonOp(TokenKind kind) {
    switch (kind) {
      case TokenKind::Equal:
        return ComparisonOp::Equal;
      case TokenKind::NotEqual:
        return ComparisonOp::NotEqual;
      case TokenKind::Less:
        return ComparisonOp::Less;
      case TokenKind::LessEqual:
        return ComparisonOp::LessEqual;
      case TokenKind::Greater:
        return ComparisonOp::Greater;
      case TokenKind::GreaterEqual:
        return ComparisonOp::GreaterEqual;
      default:
        return std::nullopt;
    }
  }

  Result<ExprPtr> comparison() {
    Result<ExprPtr> left = additive();
    if (!left) return left;
    const Token& op = peek();
    if (std::optional<ComparisonOp> cmp = comparisonOp(op.kind)) {
      advance();
      Result<ExprPtr> right = additive();
      if (!right) return right;
      Result<ExprPtr> e =
          binary(ExprKind::Comparison, std::move(left).value(), std::move(right).value(), op);
      if (e) e.value()->comparison_op = *cmp;
      return e;
    }
    ExprKind membership;
    if (isKeyword(op, "IN")) {
      membership = ExprKind::In;
      advance();
    } else if (isKeyword(op, "NIN")) {
      membership = ExprKind::NotIn;
      advance();
    } else if (isKeyword(op, "NOT") && isKeyword(peek(1), "IN")) {
      membership = ExprKind::NotIn;
      advance();
      advance();
    } else {
      return left;
    }
    const Token& list_start = peek();
    Result<json::array> list = memberList();
    if (!list) return list.status();
    std::vector<ExprPtr> children;
    children.push_back(std::move(left).value());
    Result<ExprPtr> e = node(membership, std::move(children), op);
    if (!e) return e;
    Expr& in = *e.value();
    in.end = tokens_[pos_ - 1].end;
    std::size_t strings = 0;
    for (const json::value& member : *list) {
      if (!isPrimitive(member)) {
        return queryError("Type", text_, list_start.begin, in.end,
                          "IN lists may only contain strings, numbers, booleans and null");
      }
      if (member.is_string()) ++strings;
    }
    if (strings > kSortedListThreshold) {
      for (const json::value& member : *list) {
        if (member.is_string()) in.sorted_strings.emplace_back(member.get_string());
      }
      std::sort(in.sorted_strings.begin(), in.sorted_strings.end());
    }
    in.constant = std::move(list).value();
    return e;
  }

  // A constant list: [c, ...] or (c, ...).
  Result<json::array> memberList() {
    TokenKind close;
    if (peek().kind == TokenKind::LeftBracket) {
      close = TokenKind::RightBracket;
    } else if (peek().kind == TokenKind::LeftParen) {
      close = TokenKind::RightParen;
    } else {
      return expected("a list such as ['a', 'b'] after IN");
    }
    advance();
    return constantList(close);
  }

  // Elements up to the closing token (already past the opening one); each must fold to a
  // constant.
  Result<json::array> constantList(TokenKind close) {
    NestingGuard guard(nesting_);
    if (nesting_ > kMaxExpressionDepth) return tooDeep(peek());
    json::array out;
    if (peek().kind == close) {
      advance();
      return out;
    }
    while (true) {
      Result<ExprPtr> element = expression();
      if (!element) return element.status();
      const Expr& e = *element.value();
      if (e.kind != ExprKind::Constant) {
        return queryError("Type", text_, e.begin, e.end, "list elements must be constants");
      }
      out.push_back(e.constant);
      if (peek().kind == close) {
        advance();
        return out;
      }
      if (peek().kind != TokenKind::Comma) {
        return expected(close == TokenKind::RightBracket ? "',' or ']'" : "',' or ')'");
      }
      advance();
    }
  }

  Result<ExprPtr> additive() {
    Result<ExprPtr> left = multiplicative();
    if (!left) return left;
    while (peek().kind == TokenKind::Plus || peek().kind == TokenKind::Minus) {
      const Token& op = peek();
      advance();
      Result<ExprPtr> right = multiplicative();
      if (!right) return right;
      left = binary(ExprKind::Arithmetic, std::move(left).value(), std::move(right).value(), op);
      if (!left) return left;
      left.value()->arithmetic_op =
          op.kind == TokenKind::Plus ? ArithmeticOp::Add : ArithmeticOp::Subtract;
    }
    return left;
  }

  Result<ExprPtr> multiplicative() {
    Result<ExprPtr> left = unary();
    if (!left) return left;
    while (peek().kind == TokenKind::Star || peek().kind == TokenKind::Slash ||
           peek().kind == TokenKind::Percent) {
      const Token& op = peek();
      advance();
      Result<ExprPtr> right = unary();
      if (!right) return right;
      left = binary(ExprKind::Arithmetic, std::move(left).value(), std::move(right).value(), op);
      if (!left) return left;
      left.value()->arithmetic_op = op.kind == TokenKind::Star    ? ArithmeticOp::Multiply
                                    : op.kind == TokenKind::Slash ? ArithmeticOp::Divide
                                                                  : ArithmeticOp::Modulo;
    }
    return left;
  }

  Result<ExprPtr> unary() {
    const Token& op = peek();
    if (op.kind != TokenKind::Minus && op.kind != TokenKind::Plus) return primary();
    advance();
    NestingGuard guard(nesting_);
    if (nesting_ > kMaxExpressionDepth) return tooDeep(op);
    Result<ExprPtr> operand = unary();
    if (!operand) return operand;
    Expr& inner = *operand.value();
    // Fold signs of numeric literals, so "-1" is a constant (usable in lists and by an
    // index) rather than an operation.
    if (inner.kind == ExprKind::Constant && inner.constant.is_number()) {
      if (op.kind == TokenKind::Minus) {
        std::optional<Number> n = toNumber(inner.constant);
        if (n->is_integer && n->integer != std::numeric_limits<std::int64_t>::min()) {
          inner.constant = -n->integer;
        } else {
          inner.constant = -n->asDouble();
        }
      }
      inner.begin = op.begin;
      return operand;
    }
    std::vector<ExprPtr> children;
    children.push_back(std::move(operand).value());
    Result<ExprPtr> e = node(op.kind == TokenKind::Minus ? ExprKind::Negate : ExprKind::UnaryPlus,
                             std::move(children), op);
    if (e) e.value()->begin = op.begin;
    return e;
  }

  ExprPtr leaf(ExprKind kind, const Token& t) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->begin = t.begin;
    e->end = t.end;
    return e;
  }

  Result<ExprPtr> primary() {
    const Token& t = peek();
    switch (t.kind) {
      case TokenKind::Number: {
        ExprPtr e = leaf(ExprKind::Constant, t);
        e->constant = t.number;
        advance();
        return e;
      }
      case TokenKind::String: {
        ExprPtr e = leaf(ExprKind::Constant, t);
        e->constant = json::string(t.text);
        advance();
        return e;
      }
      case TokenKind::LeftParen: {
        advance();
        Result<ExprPtr> inner = expression();
        if (!inner) return inner;
        if (peek().kind != TokenKind::RightParen) return expected("')'");
        advance();
        return inner;
      }
      case TokenKind::LeftBracket: {
        advance();
        Result<json::array> list = constantList(TokenKind::RightBracket);
        if (!list) return list.status();
        ExprPtr e = leaf(ExprKind::Constant, t);
        e->end = tokens_[pos_ - 1].end;
        e->constant = std::move(list).value();
        return e;
      }
      case TokenKind::Identifier:
        break;
      default:
        return expected("an expression");
    }
    if (isKeyword(t, "TRUE") || isKeyword(t, "FALSE")) {
      ExprPtr e = leaf(ExprKind::Constant, t);
      e->constant = isKeyword(t, "TRUE");
      advance();
      return e;
    }
    if (isKeyword(t, "NULL")) {
      ExprPtr e = leaf(ExprKind::Constant, t);
      advance();
      return e;
    }
    if (isKeyword(t, "UNDEFINED")) {
      ExprPtr e = leaf(ExprKind::Undefined, t);
      advance();
      return e;
    }
    if (isReserved(t)) return expected("an expression");
    if (peek(1).kind == TokenKind::LeftParen) return call();
    return path();
  }

  Result<ExprPtr> call() {
    const Token& name = peek();
    ExprPtr e = leaf(ExprKind::Function, name);
    auto aggregate = std::find_if(kAggregates.begin(), kAggregates.end(), [&](const auto& a) {
      return equalsIgnoreCase(a.name, name.text);
    });
    if (aggregate != kAggregates.end()) {
      e->kind = ExprKind::Aggregate;
      e->aggregate = aggregate->kind;
    } else {
      e->function = findFunction(name.text);
      if (e->function == nullptr) return errorAt(name, "unknown function '" + name.text + "'");
    }
    advance();  // name
    advance();  // (
    NestingGuard guard(nesting_);
    if (nesting_ > kMaxExpressionDepth) return tooDeep(name);
    if (peek().kind != TokenKind::RightParen) {
      while (true) {
        Result<ExprPtr> arg = expression();
        if (!arg) return arg;
        e->depth = std::max(e->depth, arg.value()->depth + 1);
        e->children.push_back(std::move(arg).value());
        if (peek().kind == TokenKind::RightParen) break;
        if (peek().kind != TokenKind::Comma) return expected("',' or ')'");
        advance();
      }
    }
    if (e->depth > kMaxExpressionDepth) return tooDeep(name);
    e->end = peek().end;
    advance();  // )
    return e;
  }

  // name ('.' name | '[' 'quoted name' ']')*; any word may follow a dot, so tags.from and
  // properties.desired.select are ordinary paths.
  Result<ExprPtr> path() {
    ExprPtr e = leaf(ExprKind::Path, peek());
    e->path.keys.push_back(peek().text);
    advance();
    while (true) {
      if (peek().kind == TokenKind::Dot) {
        advance();
        if (peek().kind != TokenKind::Identifier) return expected("a property name after '.'");
        e->path.keys.push_back(peek().text);
        e->end = peek().end;
        advance();
      } else if (peek().kind == TokenKind::LeftBracket) {
        advance();
        if (peek().kind != TokenKind::String) return expected("a quoted property name");
        e->path.keys.push_back(peek().text);
        advance();
        if (peek().kind != TokenKind::RightBracket) return expected("']'");
        e->end = peek().end;
        advance();
      } else {
        return e;
      }
    }
  }

  std::string_view text_;
  const std::vector<Token>& tokens_;
  std::size_t pos_ = 0;
  int nesting_ = 0;
};

}  // namespace

Result<SelectStatement> parseSelect(std::string_view text, const std::vector<Token>& tokens) {
  return Parser(text, tokens).select();
}

Result<std::unique_ptr<Expr>> parseStandaloneExpression(std::string_view text,
                                                        const std::vector<Token>& tokens) {
  return Parser(text, tokens).standalone();
}

}  // namespace iothub::query
