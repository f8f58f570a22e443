#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.hpp"
#include "common/status.hpp"

namespace iothub::query {

// Stage 1 of the query engine: query text → tokens (docs/protocol.md §8.1).

enum class TokenKind {
  End,         // after the last token; begin == end == text size
  Identifier,  // names and keywords alike; the parser decides, case-insensitively
  Number,
  String,
  Comma,
  Dot,
  LeftParen,
  RightParen,
  LeftBracket,
  RightBracket,
  Star,
  Plus,
  Minus,
  Slash,
  Percent,
  Equal,     // =
  NotEqual,  // != or <>
  Less,
  LessEqual,
  Greater,
  GreaterEqual,
};

struct Token {
  TokenKind kind = TokenKind::End;
  std::size_t begin = 0;  // byte range in the query text
  std::size_t end = 0;
  std::string text;    // Identifier: as written; String: the decoded value
  json::value number;  // Number: an int64 when the literal is an integer that fits, else a double
};

// Splits `text` into tokens, always ending with one End token.
//
// Identifiers: [A-Za-z_$][A-Za-z0-9_$]*. Numbers: decimal integers, decimals, exponents
// (1.5e-3) and 0x hex; a decimal integer too large for int64 becomes a double, a hex one is
// an error. Strings: '...' or "..." with escapes \' \" \\ \/ \b \f \n \r \t \uXXXX
// (surrogate pairs combine; a lone surrogate is an error).
// Errors are ArgumentInvalid "Syntax error at line:col near '...': ...".
Result<std::vector<Token>> tokenize(std::string_view text);

// Case-insensitive ASCII comparison, used for keywords, functions and identity fields.
bool equalsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace iothub::query
