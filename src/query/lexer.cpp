#include "query/lexer.hpp"

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "query/errors.hpp"

namespace iothub::query {
namespace {

bool isIdentifierStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';
}
bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isIdentifierPart(char c) { return isIdentifierStart(c) || isDigit(c); }
int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void appendUtf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

class Lexer {
 public:
  explicit Lexer(std::string_view text) : text_(text) {}

  Result<std::vector<Token>> run() {
    std::vector<Token> tokens;
    while (true) {
      skipWhitespace();
      if (pos_ >= text_.size()) break;
      Result<Token> token = next();
      if (!token) return token.status();
      tokens.push_back(std::move(token).value());
    }
    Token end;
    end.kind = TokenKind::End;
    end.begin = end.end = text_.size();
    tokens.push_back(std::move(end));
    return tokens;
  }

 private:
  void skipWhitespace() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && c != '\f' && c != '\v') break;
      ++pos_;
    }
  }

  Status error(std::size_t begin, std::size_t end, std::string_view message) const {
    return queryError("Syntax", text_, begin, end, message);
  }

  Token make(TokenKind kind, std::size_t begin, std::size_t length) {
    Token t;
    t.kind = kind;
    t.begin = begin;
    t.end = begin + length;
    pos_ = t.end;
    return t;
  }

  char peek(std::size_t ahead) const {
    return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0';
  }

  Result<Token> next() {
    std::size_t begin = pos_;
    char c = text_[pos_];
    if (isIdentifierStart(c)) {
      std::size_t end = pos_ + 1;
      while (end < text_.size() && isIdentifierPart(text_[end])) ++end;
      Token t = make(TokenKind::Identifier, begin, end - begin);
      t.text = std::string(text_.substr(begin, end - begin));
      return t;
    }
    if (isDigit(c)) return number();
    if (c == '\'' || c == '"') return string();
    switch (c) {
      case ',':
        return make(TokenKind::Comma, begin, 1);
      case '.':
        return make(TokenKind::Dot, begin, 1);
      case '(':
        return make(TokenKind::LeftParen, begin, 1);
      case ')':
        return make(TokenKind::RightParen, begin, 1);
      case '[':
        return make(TokenKind::LeftBracket, begin, 1);
      case ']':
        return make(TokenKind::RightBracket, begin, 1);
      case '*':
        return make(TokenKind::Star, begin, 1);
      case '+':
        return make(TokenKind::Plus, begin, 1);
      case '-':
        return make(TokenKind::Minus, begin, 1);
      case '/':
        return make(TokenKind::Slash, begin, 1);
      case '%':
        return make(TokenKind::Percent, begin, 1);
      case '=':
        return make(TokenKind::Equal, begin, 1);
      case '!':
        if (peek(1) == '=') return make(TokenKind::NotEqual, begin, 2);
        break;
      case '<':
        if (peek(1) == '=') return make(TokenKind::LessEqual, begin, 2);
        if (peek(1) == '>') return make(TokenKind::NotEqual, begin, 2);
        return make(TokenKind::Less, begin, 1);
      case '>':
        if (peek(1) == '=') return make(TokenKind::GreaterEqual, begin, 2);
        return make(TokenKind::Greater, begin, 1);
      default:
        break;
    }
    return error(begin, begin + 1, "unexpected character");
  }

  Result<Token> number() {
    std::size_t begin = pos_;
    std::size_t end = pos_;
    if (text_[end] == '0' && (peek(1) == 'x' || peek(1) == 'X')) {
      end += 2;
      std::uint64_t value = 0;
      std::size_t digits = 0;
      bool overflow = false;
      while (end < text_.size() && hexValue(text_[end]) >= 0) {
        if (value > (std::uint64_t{std::numeric_limits<std::int64_t>::max()} >> 4)) overflow = true;
        value = (value << 4) | static_cast<std::uint64_t>(hexValue(text_[end]));
        ++end;
        ++digits;
      }
      if (end < text_.size() && isIdentifierPart(text_[end])) {
        return error(begin, end + 1, "invalid hexadecimal number");
      }
      if (digits == 0) return error(begin, end, "hexadecimal number needs digits after 0x");
      if (overflow) return error(begin, end, "hexadecimal number out of range");
      Token t = make(TokenKind::Number, begin, end - begin);
      t.number = static_cast<std::int64_t>(value);
      return t;
    }
    bool integral = true;
    while (end < text_.size() && isDigit(text_[end])) ++end;
    if (end + 1 < text_.size() && text_[end] == '.' && isDigit(text_[end + 1])) {
      integral = false;
      ++end;
      while (end < text_.size() && isDigit(text_[end])) ++end;
    }
    if (end < text_.size() && (text_[end] == 'e' || text_[end] == 'E')) {
      integral = false;
      std::size_t exp = end + 1;
      if (exp < text_.size() && (text_[exp] == '+' || text_[exp] == '-')) ++exp;
      if (exp >= text_.size() || !isDigit(text_[exp])) {
        return error(begin, exp, "exponent needs digits");
      }
      while (exp < text_.size() && isDigit(text_[exp])) ++exp;
      end = exp;
    }
    if (end < text_.size() && isIdentifierPart(text_[end])) {
      return error(begin, end + 1, "invalid number");
    }
    std::string literal(text_.substr(begin, end - begin));
    Token t = make(TokenKind::Number, begin, end - begin);
    if (integral) {
      errno = 0;
      char* parsed_end = nullptr;
      long long value = std::strtoll(literal.c_str(), &parsed_end, 10);
      if (errno == 0) {
        t.number = static_cast<std::int64_t>(value);
        return t;
      }
    }
    double value = std::strtod(literal.c_str(), nullptr);
    if (value == std::numeric_limits<double>::infinity()) {
      return error(begin, end, "number out of range");
    }
    t.number = value;
    return t;
  }

  Result<Token> string() {
    std::size_t begin = pos_;
    char quote = text_[pos_];
    std::string value;
    std::size_t i = pos_ + 1;
    while (true) {
      if (i >= text_.size()) return error(begin, begin + 1, "unterminated string");
      char c = text_[i];
      if (c == quote) break;
      if (c != '\\') {
        value.push_back(c);
        ++i;
        continue;
      }
      if (i + 1 >= text_.size()) return error(begin, begin + 1, "unterminated string");
      char e = text_[i + 1];
      switch (e) {
        case '\'':
          value.push_back('\'');
          break;
        case '"':
          value.push_back('"');
          break;
        case '\\':
          value.push_back('\\');
          break;
        case '/':
          value.push_back('/');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'n':
          value.push_back('\n');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'u': {
          std::size_t consumed = 0;
          Result<std::uint32_t> cp = unicodeEscape(i, consumed);
          if (!cp) return cp.status();
          appendUtf8(value, *cp);
          i += consumed;
          continue;
        }
        default:
          return error(i, i + 2, "invalid escape sequence");
      }
      i += 2;
    }
    Token t = make(TokenKind::String, begin, i + 1 - begin);
    t.text = std::move(value);
    return t;
  }

  // Reads "\uXXXX" (and a following low surrogate "\uXXXX" when the first is a high one)
  // starting at text_[at]; sets `consumed` to the bytes read.
  Result<std::uint32_t> unicodeEscape(std::size_t at, std::size_t& consumed) const {
    auto read4 = [&](std::size_t p) -> int {
      if (p + 6 > text_.size() || text_[p] != '\\' || text_[p + 1] != 'u') return -1;
      int v = 0;
      for (std::size_t k = p + 2; k < p + 6; ++k) {
        int h = hexValue(text_[k]);
        if (h < 0) return -1;
        v = v * 16 + h;
      }
      return v;
    };
    int first = read4(at);
    if (first < 0) return error(at, at + 2, "\\u needs four hexadecimal digits");
    if (first >= 0xDC00 && first <= 0xDFFF) return error(at, at + 6, "lone low surrogate");
    if (first >= 0xD800 && first <= 0xDBFF) {
      int second = read4(at + 6);
      if (second < 0xDC00 || second > 0xDFFF) return error(at, at + 6, "lone high surrogate");
      consumed = 12;
      return static_cast<std::uint32_t>(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00));
    }
    consumed = 6;
    return static_cast<std::uint32_t>(first);
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

}  // namespace

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

Result<std::vector<Token>> tokenize(std::string_view text) { return Lexer(text).run(); }

}  // namespace iothub::query
