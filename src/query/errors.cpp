#include "query/errors.hpp"

#include <algorithm>

namespace iothub::query {
namespace {

constexpr std::size_t kMaxSnippetBytes = 40;

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not one.
std::size_t utf8SequenceLength(std::string_view s, std::size_t i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  std::size_t n = 0;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4;
  else
    return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  // Overlong three-byte forms, surrogates and code points above U+10FFFF.
  if (n == 3 && c == 0xE0 && byte(i + 1) < 0xA0) return 0;
  if (n == 3 && c == 0xED && byte(i + 1) >= 0xA0) return 0;
  if (n == 4 && c == 0xF0 && byte(i + 1) < 0x90) return 0;
  if (n == 4 && c == 0xF4 && byte(i + 1) >= 0x90) return 0;
  return n;
}

std::string sanitizeSnippet(std::string_view raw) {
  std::string out;
  std::size_t i = 0;
  while (i < raw.size() && i < kMaxSnippetBytes) {
    std::size_t n = utf8SequenceLength(raw, i);
    unsigned char c = static_cast<unsigned char>(raw[i]);
    if (n == 0 || (n == 1 && (c < 0x20 || c == 0x7F))) {
      out.push_back('?');
      ++i;
    } else {
      out.append(raw.substr(i, n));
      i += n;
    }
  }
  if (i < raw.size()) out += "...";
  return out;
}

}  // namespace

std::string linePosition(std::string_view text, std::size_t offset) {
  std::size_t line = 1;
  std::size_t column = 1;
  std::size_t limit = std::min(offset, text.size());
  for (std::size_t i = 0; i < limit; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      ++line;
      column = 1;
    } else if ((c & 0xC0) != 0x80) {
      ++column;
    }
  }
  return std::to_string(line) + ":" + std::to_string(column);
}

Status queryError(std::string_view kind, std::string_view text, std::size_t begin, std::size_t end,
                  std::string_view message) {
  std::string out(kind);
  out += " error at ";
  out += linePosition(text, begin);
  if (begin >= text.size()) {
    out += " near end of query: ";
  } else {
    end = std::clamp(end, begin + 1, text.size());
    out += " near '";
    out += sanitizeSnippet(text.substr(begin, end - begin));
    out += "': ";
  }
  out += message;
  return Status(ErrorCode::ArgumentInvalid, std::move(out));
}

}  // namespace iothub::query
