#include "mqtt/utf8.hpp"

#include <gtest/gtest.h>

#include <string>

#include "mqtt/test_bytes.hpp"

namespace iothub::mqtt {
namespace {

using testing::hex;

TEST(Utf8Test, AcceptsWellFormedText) {
  const char* valid[] = {
      "",
      "41 42 43",     // ASCII
      "01 1F 7F",     // control characters are allowed (MAY reject, we don't)
      "C2 80",        // U+0080, smallest two-byte
      "C3 A9",        // é
      "DF BF",        // U+07FF
      "E0 A0 80",     // U+0800, smallest three-byte
      "E2 82 AC",     // €
      "ED 9F BF",     // U+D7FF, just below the surrogates
      "EE 80 80",     // U+E000, just above the surrogates
      "EF BB BF",     // U+FEFF, must not be skipped or stripped (§1.5.3)
      "EF BF BF",     // U+FFFF, a non-character, allowed
      "F0 90 80 80",  // U+10000, smallest four-byte
      "F0 9D 84 9E",  // musical G clef
      "F4 8F BF BF",  // U+10FFFF, the largest code point
  };
  for (const char* bytes : valid) {
    Status status = validateUtf8(hex(bytes));
    EXPECT_TRUE(status.isOk()) << bytes << ": " << status.message();
  }
}

struct InvalidCase {
  const char* bytes;
  const char* reason;
};

TEST(Utf8Test, RejectsIllFormedText) {
  const InvalidCase invalid[] = {
      {"00", "U+0000"},
      {"41 00", "U+0000"},
      {"C0 80", "overlong"},  // U+0000 in two bytes (modified UTF-8)
      {"C1 BF", "overlong"},
      {"E0 80 80", "overlong"},
      {"E0 9F BF", "overlong"},
      {"F0 80 80 80", "overlong"},
      {"F0 8F BF BF", "overlong"},
      {"ED A0 80", "surrogate"},  // U+D800
      {"ED AF BF", "surrogate"},
      {"ED B0 80", "surrogate"},  // U+DC00
      {"ED BF BF", "surrogate"},  // U+DFFF
      {"F4 90 80 80", "above U+10FFFF"},
      {"F5 80 80 80", "invalid lead byte"},
      {"F8 88 80 80 80", "invalid lead byte"},
      {"FE", "invalid lead byte"},
      {"FF", "invalid lead byte"},
      {"80", "unexpected continuation"},
      {"BF", "unexpected continuation"},
      {"C3", "truncated"},
      {"E2 82", "truncated"},
      {"F0 9D 84", "truncated"},
      {"C3 41", "invalid continuation"},
      {"E2 28 A1", "invalid continuation"},
      {"E2 82 28", "invalid continuation"},
      {"F0 9D 28 9E", "invalid continuation"},
      {"F0 9D 84 C3", "invalid continuation"},
  };
  for (const InvalidCase& c : invalid) {
    Status status = validateUtf8(hex(c.bytes));
    ASSERT_FALSE(status.isOk()) << c.bytes;
    EXPECT_EQ(status.code(), ErrorCode::IotHubFormatError);
    EXPECT_NE(status.message().find(c.reason), std::string::npos)
        << c.bytes << ": " << status.message();
  }
}

TEST(Utf8Test, ReportsTheOffset) {
  Status status = validateUtf8("abc\xED\xA0\x80");
  EXPECT_NE(status.message().find("at byte 3"), std::string::npos) << status.message();
}

}  // namespace
}  // namespace iothub::mqtt
