#include "mqtt/utf8.hpp"

#include <string>

namespace iothub::mqtt {
namespace {

Status invalidAt(std::size_t offset, std::string_view what) {
  return Status(ErrorCode::IotHubFormatError,
                std::string(what) + " at byte " + std::to_string(offset) + " of a UTF-8 string");
}

bool isContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

}  // namespace

Status validateUtf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t size = text.size();
  std::size_t i = 0;
  while (i < size) {
    const unsigned char lead = bytes[i];
    if (lead < 0x80) {
      // Topics and client ids are almost always ASCII; keep this branch first and tight.
      if (lead == 0) return invalidAt(i, "U+0000 is not allowed");
      ++i;
      continue;
    }
    // The second byte's admissible range depends on the lead byte: this is what excludes
    // overlong forms (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and code points above
    // U+10FFFF (F4 90..BF), per the table in RFC 3629 §4.
    std::size_t length = 0;
    unsigned char second_min = 0x80;
    unsigned char second_max = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) second_min = 0xA0;
      if (lead == 0xED) second_max = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) second_min = 0x90;
      if (lead == 0xF4) second_max = 0x8F;
    } else if (lead == 0xC0 || lead == 0xC1) {
      return invalidAt(i, "overlong encoding");
    } else if (isContinuation(lead)) {
      return invalidAt(i, "unexpected continuation byte");
    } else {
      return invalidAt(i, "invalid lead byte");
    }
    if (size - i < length) return invalidAt(i, "truncated sequence");
    const unsigned char second = bytes[i + 1];
    if (second < second_min || second > second_max) {
      if (lead == 0xED && isContinuation(second)) return invalidAt(i, "UTF-16 surrogate");
      if ((lead == 0xE0 || lead == 0xF0) && isContinuation(second)) {
        return invalidAt(i, "overlong encoding");
      }
      if (lead == 0xF4 && isContinuation(second)) return invalidAt(i, "code point above U+10FFFF");
      return invalidAt(i, "invalid continuation byte");
    }
    for (std::size_t k = 2; k < length; ++k) {
      if (!isContinuation(bytes[i + k])) return invalidAt(i, "invalid continuation byte");
    }
    i += length;
  }
  return Status::ok();
}

}  // namespace iothub::mqtt
