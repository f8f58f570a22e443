#include "telemetry/consumer_group.hpp"

#include <gtest/gtest.h>

#include <string>

namespace iothub::telemetry {
namespace {

TEST(ConsumerGroupNameTest, AcceptsLettersDigitsAndInnerPunctuation) {
  for (const char* name : {"a", "Z", "7", "readers", "Readers-2", "a.b_c-d", "0-9", "x__y"}) {
    EXPECT_TRUE(validConsumerGroupName(name)) << name;
  }
}

TEST(ConsumerGroupNameTest, AcceptsDefaultInAnyCase) {
  for (const char* name : {"$Default", "$default", "$DEFAULT", "$dEfAuLt"}) {
    EXPECT_TRUE(validConsumerGroupName(name)) << name;
  }
}

TEST(ConsumerGroupNameTest, TakesOneToFiftyCharacters) {
  EXPECT_FALSE(validConsumerGroupName(""));
  EXPECT_TRUE(validConsumerGroupName(std::string(50, 'a')));
  EXPECT_FALSE(validConsumerGroupName(std::string(51, 'a')));
}

TEST(ConsumerGroupNameTest, BeginsAndEndsWithALetterOrDigit) {
  for (const char* name : {"-a", "a-", ".a", "a.", "_a", "a_", "-", ".", "_"}) {
    EXPECT_FALSE(validConsumerGroupName(name)) << name;
  }
}

TEST(ConsumerGroupNameTest, RefusesEveryOtherCharacter) {
  for (const char* name : {"a b", "a/b", "a$b", "$other", "$Default2", "Default$", "a%2Fb", "a:b",
                           "caf\xc3\xa9", "a\tb"}) {
    EXPECT_FALSE(validConsumerGroupName(name)) << name;
  }
  EXPECT_FALSE(validConsumerGroupName(std::string("a\0b", 3)));
}

}  // namespace
}  // namespace iothub::telemetry
