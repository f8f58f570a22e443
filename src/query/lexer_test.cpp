#include "query/lexer.hpp"

#include <gtest/gtest.h>

#include "query/errors.hpp"

namespace iothub::query {
namespace {

std::vector<Token> lex(std::string_view text) {
  Result<std::vector<Token>> tokens = tokenize(text);
  EXPECT_TRUE(tokens.isOk()) << tokens.status().message();
  return tokens ? *tokens : std::vector<Token>{};
}

std::vector<TokenKind> kinds(std::string_view text) {
  std::vector<TokenKind> out;
  for (const Token& t : lex(text)) out.push_back(t.kind);
  return out;
}

TEST(LexerTest, SplitsOperatorsAndPunctuation) {
  using K = TokenKind;
  EXPECT_EQ(kinds("= != <> < <= > >= + - * / % , . ( ) [ ]"),
            (std::vector<K>{K::Equal, K::NotEqual, K::NotEqual, K::Less, K::LessEqual, K::Greater,
                            K::GreaterEqual, K::Plus, K::Minus, K::Star, K::Slash, K::Percent,
                            K::Comma, K::Dot, K::LeftParen, K::RightParen, K::LeftBracket,
                            K::RightBracket, K::End}));
  EXPECT_EQ(kinds("a<=b"), (std::vector<K>{K::Identifier, K::LessEqual, K::Identifier, K::End}));
}

TEST(LexerTest, IdentifiersKeepCaseAndAcceptDollar) {
  std::vector<Token> t = lex("SELECT $version tags.Floor_2");
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t[0].text, "SELECT");
  EXPECT_EQ(t[1].text, "$version");
  EXPECT_EQ(t[2].text, "tags");
  EXPECT_EQ(t[4].text, "Floor_2");
  EXPECT_EQ(t[4].begin, 21u);
  EXPECT_EQ(t[4].end, 28u);
  EXPECT_EQ(t[5].begin, 28u);
}

TEST(LexerTest, ReadsIntegersDecimalsExponentsAndHex) {
  std::vector<Token> t =
      lex("42 007 1.5 2e3 2.5E-1 0x1F 0XfF 9223372036854775807 9223372036854775808");
  ASSERT_EQ(t.size(), 10u);
  EXPECT_EQ(t[0].number, json::value(42));
  EXPECT_EQ(t[1].number, json::value(7));
  EXPECT_EQ(t[2].number, json::value(1.5));
  EXPECT_EQ(t[3].number, json::value(2000.0));
  EXPECT_EQ(t[4].number, json::value(0.25));
  EXPECT_EQ(t[5].number, json::value(31));
  EXPECT_EQ(t[6].number, json::value(255));
  EXPECT_TRUE(t[7].number.is_int64());
  EXPECT_EQ(t[7].number.get_int64(), 9223372036854775807);
  EXPECT_TRUE(t[8].number.is_double()) << "too large for int64 becomes a double";
}

TEST(LexerTest, NumberFollowedByDotAndNameIsTwoTokens) {
  using K = TokenKind;
  EXPECT_EQ(kinds("1.x"), (std::vector<K>{K::Number, K::Dot, K::Identifier, K::End}));
}

TEST(LexerTest, DecodesStringEscapes) {
  std::vector<Token> t = lex(R"('it\'s' "say \"hi\"" 'a\\b\/c\n\t' '\u00e9\u20AC' "\ud83d\ude00")");
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(t[0].kind, TokenKind::String);
  EXPECT_EQ(t[0].text, "it's");
  EXPECT_EQ(t[1].text, "say \"hi\"");
  EXPECT_EQ(t[2].text, "a\\b/c\n\t");
  EXPECT_EQ(t[3].text, "\xC3\xA9\xE2\x82\xAC");
  EXPECT_EQ(t[4].text, "\xF0\x9F\x98\x80");
}

TEST(LexerTest, OtherQuoteNeedsNoEscape) {
  std::vector<Token> t = lex(R"('say "hi"' "it's")");
  EXPECT_EQ(t[0].text, "say \"hi\"");
  EXPECT_EQ(t[1].text, "it's");
}

TEST(LexerTest, ErrorsNameLineColumnAndToken) {
  Result<std::vector<Token>> r = tokenize("a = 1\n  b # c");
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(r.status().message(), "Syntax error at 2:5 near '#': unexpected character");
}

TEST(LexerTest, RejectsMalformedLiterals) {
  for (const char* bad : {"'open", "\"open\\\"", "'\\x'", "'\\u12g4'", "'\\ud800x'", "0x", "0xZ",
                          "1e+", "1abc", "0x10000000000000000", "1e400"}) {
    Result<std::vector<Token>> r = tokenize(bad);
    EXPECT_FALSE(r.isOk()) << bad;
    EXPECT_EQ(r.code(), ErrorCode::ArgumentInvalid) << bad;
  }
}

TEST(LexerTest, SnippetsOfBinaryInputAreSanitized) {
  Result<std::vector<Token>> r = tokenize(std::string_view("a \x01\xff", 4));
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().message(), "Syntax error at 1:3 near '?': unexpected character");
}

TEST(LinePositionTest, CountsCharactersNotBytes) {
  EXPECT_EQ(linePosition("abc", 0), "1:1");
  EXPECT_EQ(linePosition("abc", 3), "1:4");
  EXPECT_EQ(linePosition("\xC3\xA9x", 2), "1:2");
  EXPECT_EQ(linePosition("a\nbc\nd", 5), "3:1");
}

TEST(EqualsIgnoreCaseTest, ComparesAsciiWithoutCase) {
  EXPECT_TRUE(equalsIgnoreCase("DeviceId", "deviceid"));
  EXPECT_FALSE(equalsIgnoreCase("device", "devices"));
  EXPECT_FALSE(equalsIgnoreCase("a_", "a-"));
}

}  // namespace
}  // namespace iothub::query
