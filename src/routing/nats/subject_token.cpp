#include "routing/nats/subject_token.hpp"

#include <cstddef>

namespace iothub::routing {
namespace {

constexpr char kHexDigits[] = "0123456789ABCDEF";
constexpr std::size_t kMaxSubjectLength = 4096;

bool isPlain(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;  // lowercase is refused: one encoding per id
}

// What a subject shows in an error message: printable and bounded, whatever it holds.
std::string quoted(std::string_view subject) {
  std::string out = "'";
  for (std::size_t i = 0; i < subject.size() && i < 200; ++i) {
    auto c = static_cast<unsigned char>(subject[i]);
    if (c < 0x20 || c >= 0x7f) {
      out += "\\x";
      out += kHexDigits[c >> 4];
      out += kHexDigits[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (subject.size() > 200) out += "...";
  return out + "'";
}

}  // namespace

std::string encodeSubjectToken(std::string_view bytes) {
  if (bytes.empty()) return "%";
  std::string out;
  out.reserve(bytes.size());
  for (char ch : bytes) {
    auto c = static_cast<unsigned char>(ch);
    if (isPlain(c)) {
      out += ch;
    } else {
      out += '%';
      out += kHexDigits[c >> 4];
      out += kHexDigits[c & 0xf];
    }
  }
  return out;
}

std::optional<std::string> decodeSubjectToken(std::string_view token) {
  if (token == "%") return std::string();
  if (token.empty()) return std::nullopt;
  std::string out;
  out.reserve(token.size());
  for (std::size_t i = 0; i < token.size(); ++i) {
    auto c = static_cast<unsigned char>(token[i]);
    if (isPlain(c)) {
      out += token[i];
      continue;
    }
    if (c != '%' || i + 2 >= token.size()) return std::nullopt;
    int hi = hexValue(token[i + 1]);
    int lo = hexValue(token[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    auto byte = static_cast<unsigned char>(hi * 16 + lo);
    if (isPlain(byte)) return std::nullopt;  // "%41" for 'A' would be a second encoding
    out += static_cast<char>(byte);
    i += 2;
  }
  return out;
}

Status checkSubject(std::string_view subject, bool wildcards) {
  if (subject.empty()) return {ErrorCode::ArgumentInvalid, "NATS subject is empty"};
  if (subject.size() > kMaxSubjectLength) {
    return {ErrorCode::ArgumentInvalid, "NATS subject " + quoted(subject) + " is longer than " +
                                            std::to_string(kMaxSubjectLength) + " bytes"};
  }
  std::size_t start = 0;
  while (true) {
    std::size_t end = subject.find('.', start);
    bool last = end == std::string_view::npos;
    std::string_view token = subject.substr(start, last ? std::string_view::npos : end - start);
    if (token.empty()) {
      return {ErrorCode::ArgumentInvalid,
              "NATS subject " + quoted(subject) + " has an empty token"};
    }
    for (char ch : token) {
      auto c = static_cast<unsigned char>(ch);
      if (c <= 0x20 || c == 0x7f) {
        return {ErrorCode::ArgumentInvalid,
                "NATS subject " + quoted(subject) + " contains whitespace or a control character"};
      }
    }
    if (token == "*" || token == ">") {
      if (!wildcards) {
        return {ErrorCode::ArgumentInvalid,
                "NATS subject " + quoted(subject) +
                    " contains a wildcard; publish needs a literal subject"};
      }
      if (token == ">" && !last) {
        return {ErrorCode::ArgumentInvalid,
                "NATS subject " + quoted(subject) + " has '>' before its last token"};
      }
    }
    if (last) return Status::ok();
    start = end + 1;
  }
}

}  // namespace iothub::routing
