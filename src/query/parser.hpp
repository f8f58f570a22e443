#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "query/ast.hpp"
#include "query/lexer.hpp"

namespace iothub::query {

// Stage 2: tokens → an unbound statement. Paths keep the names as written; the binder
// (binder.hpp) resolves them once the collection is known and checks types.
// Errors are ArgumentInvalid "Syntax error at line:col near '...': expected ...".

struct SelectItem {
  std::unique_ptr<Expr> expr;
  std::optional<std::string> alias;
  std::size_t alias_begin = 0;  // byte range of the alias, for duplicate-name errors
  std::size_t alias_end = 0;
};

struct SelectStatement {
  std::optional<std::uint64_t> top;
  bool select_all = false;
  std::vector<SelectItem> items;  // empty when select_all
  std::vector<std::string> from;  // the collection's dotted name, as written
  std::size_t from_begin = 0;
  std::size_t from_end = 0;
  std::unique_ptr<Expr> where;     // nullptr without WHERE
  std::unique_ptr<Expr> group_by;  // nullptr without GROUP BY
};

// Parses a whole SELECT statement; `tokens` come from tokenize(text).
Result<SelectStatement> parseSelect(std::string_view text, const std::vector<Token>& tokens);

// Parses input that must be exactly one expression (a condition on its own).
Result<std::unique_ptr<Expr>> parseStandaloneExpression(std::string_view text,
                                                        const std::vector<Token>& tokens);

}  // namespace iothub::query
