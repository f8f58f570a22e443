#include "routing/nats/subject_token.hpp"

#include <gtest/gtest.h>

#include <random>
#include <set>

namespace iothub::routing {
namespace {

bool isSafeTokenChar(char c) { return c > 0x20 && c < 0x7f && c != '.' && c != '*' && c != '>'; }

TEST(SubjectTokenTest, KeepsPlainIdsReadable) {
  EXPECT_EQ(encodeSubjectToken("door-1"), "door-1");
  EXPECT_EQ(encodeSubjectToken("Door_42"), "Door_42");
}

TEST(SubjectTokenTest, EscapesSeparatorsAndWildcards) {
  EXPECT_EQ(encodeSubjectToken("a.b"), "a%2Eb");
  EXPECT_EQ(encodeSubjectToken("*"), "%2A");
  EXPECT_EQ(encodeSubjectToken(">"), "%3E");
  EXPECT_EQ(encodeSubjectToken("50%"), "50%25");
  EXPECT_EQ(encodeSubjectToken("$sys"), "%24sys");
  EXPECT_EQ(encodeSubjectToken("a b"), "a%20b");
  EXPECT_EQ(encodeSubjectToken(std::string("\0\xff", 2)), "%00%FF");
}

TEST(SubjectTokenTest, EmptyIdHasItsOwnToken) {
  EXPECT_EQ(encodeSubjectToken(""), "%");
  EXPECT_EQ(decodeSubjectToken("%"), std::string());
}

TEST(SubjectTokenTest, EveryByteRoundTripsToOneValidToken) {
  std::set<std::string> tokens;
  for (int b = 0; b < 256; ++b) {
    std::string id(1, static_cast<char>(b));
    std::string token = encodeSubjectToken(id);
    for (char c : token) EXPECT_TRUE(isSafeTokenChar(c)) << "byte " << b << " -> " << token;
    EXPECT_NE(token.front(), '$');
    EXPECT_TRUE(checkSubject("iothub.dev." + token + ".x", false).isOk()) << token;
    EXPECT_EQ(decodeSubjectToken(token), id) << "byte " << b;
    tokens.insert(token);
  }
  EXPECT_EQ(tokens.size(), 256u);
}

TEST(SubjectTokenTest, RandomIdsRoundTrip) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> length(0, 40), byte(0, 255);
  std::set<std::string> ids, tokens;
  for (int i = 0; i < 2000; ++i) {
    std::string id;
    for (int n = length(rng); n > 0; --n) id += static_cast<char>(byte(rng));
    std::string token = encodeSubjectToken(id);
    ASSERT_TRUE(checkSubject(token, false).isOk()) << token;
    ASSERT_EQ(decodeSubjectToken(token), id);
    ids.insert(id);
    tokens.insert(token);
  }
  EXPECT_EQ(ids.size(), tokens.size());  // distinct ids, distinct tokens
}

TEST(SubjectTokenTest, AzureDeviceIdCharactersRoundTrip) {
  std::string id = "dev-.+%_#*?!(),=@$'";
  std::string token = encodeSubjectToken(id);
  EXPECT_EQ(token.find_first_of(".*>"), std::string::npos);
  EXPECT_EQ(decodeSubjectToken(token), id);
}

TEST(SubjectTokenTest, DecodeRefusesWhatEncodeNeverProduces) {
  EXPECT_EQ(decodeSubjectToken(""), std::nullopt);
  EXPECT_EQ(decodeSubjectToken("a.b"), std::nullopt);
  EXPECT_EQ(decodeSubjectToken("a%2eb"), std::nullopt);  // lowercase hex
  EXPECT_EQ(decodeSubjectToken("%41"), std::nullopt);    // 'A' must stand for itself
  EXPECT_EQ(decodeSubjectToken("%2"), std::nullopt);
  EXPECT_EQ(decodeSubjectToken("ab%"), std::nullopt);
  EXPECT_EQ(decodeSubjectToken("%%"), std::nullopt);
  EXPECT_EQ(decodeSubjectToken("%G0"), std::nullopt);
  EXPECT_EQ(decodeSubjectToken("a*"), std::nullopt);
}

TEST(SubjectTokenTest, CheckSubjectAcceptsLiteralsAndWildcardsWhereAllowed) {
  EXPECT_TRUE(checkSubject("iothub.node.n1.method", false).isOk());
  EXPECT_TRUE(checkSubject("_INBOX.abc.17", false).isOk());
  EXPECT_TRUE(checkSubject("iothub.node.*.method", true).isOk());
  EXPECT_TRUE(checkSubject("iothub.node.n1.>", true).isOk());
  EXPECT_TRUE(checkSubject(">", true).isOk());
}

TEST(SubjectTokenTest, CheckSubjectRefusesMalformedSubjects) {
  for (std::string_view bad : {"", ".a", "a.", "a..b", "a b", "a\tb", "a\nb", "a\x7f"}) {
    Status s = checkSubject(bad, true);
    EXPECT_EQ(s.code(), ErrorCode::ArgumentInvalid) << "'" << bad << "'";
  }
  EXPECT_EQ(checkSubject("a.*", false).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(checkSubject("a.>", false).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(checkSubject("a.>.b", true).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(checkSubject(std::string(5000, 'a'), false).code(), ErrorCode::ArgumentInvalid);
  Status s = checkSubject("bad subject", false);
  EXPECT_NE(s.message().find("'bad subject'"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace iothub::routing
