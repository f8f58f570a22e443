#include "query/query.hpp"

#include "query/binder.hpp"
#include "query/errors.hpp"
#include "query/lexer.hpp"
#include "query/parser.hpp"

namespace iothub::query {
namespace {

Status checkLength(std::string_view text) {
  std::size_t characters = 0;
  if (text.size() > kMaxQueryLength) {
    for (char c : text) {
      if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++characters;
    }
  }
  if (characters > kMaxQueryLength) {
    return Status(ErrorCode::ArgumentInvalid,
                  "Query text is longer than " + std::to_string(kMaxQueryLength) + " characters");
  }
  return Status::ok();
}

std::string_view trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string_view itemTypeName(ItemType type) {
  switch (type) {
    case ItemType::Twin:
      return "Twin";
    case ItemType::DeviceJob:
      return "DeviceJob";
    case ItemType::Raw:
      return "Raw";
  }
  return "Raw";
}

bool Query::isAggregate() const {
  if (group_by) return true;
  for (const Projection& p : projections) {
    if (p.kind != ProjectionKind::Path) return true;
  }
  return false;
}

ItemType Query::itemType() const {
  if (!select_all) return ItemType::Raw;
  return collection == Collection::Devices ? ItemType::Twin : ItemType::DeviceJob;
}

Result<Query> parseQuery(std::string_view text) {
  IOTHUB_RETURN_IF_ERROR(checkLength(text));
  Result<std::vector<Token>> tokens = tokenize(text);
  if (!tokens) return tokens.status();
  Result<SelectStatement> statement = parseSelect(text, *tokens);
  if (!statement) return statement.status();
  return bindSelect(text, std::move(statement).value());
}

Result<Condition> parseCondition(std::string_view text, Collection collection) {
  IOTHUB_RETURN_IF_ERROR(checkLength(text));
  if (trim(text) == "*") return Condition();
  Result<std::vector<Token>> tokens = tokenize(text);
  if (!tokens) return tokens.status();
  Result<std::unique_ptr<Expr>> expr = parseStandaloneExpression(text, *tokens);
  if (!expr) return expr.status();
  return bindCondition(text, std::move(expr).value(), collection);
}

}  // namespace iothub::query
