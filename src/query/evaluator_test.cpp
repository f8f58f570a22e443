#include "query/evaluator.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

#include "query/functions.hpp"
#include "query/query.hpp"
#include "query/value.hpp"

namespace iothub::query {
namespace {

const json::object& row() {
  static const json::object r = json::parse(R"({
    "deviceId": "d1", "n": 7, "big": 9223372036854775807, "min": -9223372036854775808,
    "huge": 18446744073709551615, "d": 2.5, "s": "h\u00e9llo", "b": true, "z": null,
    "o": {"k": 1}, "a": [1, "x", {"k": 1}]})")
                                    .as_object();
  return r;
}

// Evaluates `expression` (written as a condition operand) against row().
json::value eval(std::string_view expression) {
  Result<Condition> c = parseCondition(std::string("IS_DEFINED(") + std::string(expression) + ")");
  EXPECT_TRUE(c.isOk()) << expression << ": " << c.status().message();
  if (!c) return json::value("<error>");
  Value v = evaluate(*c->expr()->children[0], JsonRow(row()));
  return v.isDefined() ? v.get() : json::value("<undefined>");
}

Truth truth(std::string_view condition) {
  Result<Condition> c = parseCondition(condition);
  EXPECT_TRUE(c.isOk()) << condition << ": " << c.status().message();
  return c ? evaluateTruth(*c->expr(), JsonRow(row())) : Truth::Unknown;
}

const json::value kUndefined("<undefined>");

TEST(ValueTest, CompareSameKindOnlyOrdersPrimitivesOfOneKind) {
  EXPECT_EQ(compareSameKind(json::value(1), json::value(1.0)), 0);
  EXPECT_EQ(compareSameKind(json::value(1), json::value(1.5)), -1);
  EXPECT_EQ(compareSameKind(json::value("b"), json::value("a")), 1);
  EXPECT_EQ(compareSameKind(json::value(false), json::value(true)), -1);
  EXPECT_EQ(compareSameKind(json::value(nullptr), json::value(nullptr)), 0);
  EXPECT_FALSE(compareSameKind(json::value(1), json::value("1")).has_value());
  EXPECT_FALSE(compareSameKind(json::value(nullptr), json::value(0)).has_value());
  EXPECT_FALSE(compareSameKind(json::object{}, json::object{}).has_value());
  EXPECT_FALSE(compareSameKind(json::array{}, json::array{}).has_value());
  // Large integers compare exactly, not through double.
  EXPECT_EQ(compareSameKind(json::value(std::int64_t{9007199254740993}),
                            json::value(std::int64_t{9007199254740992})),
            1);
  EXPECT_EQ(compareSameKind(json::value(std::uint64_t{1} << 60),
                            json::value(static_cast<double>(std::uint64_t{1} << 60))),
            0);
}

TEST(ValueTest, ValueKeyAgreesWithPrimitiveEquals) {
  const std::vector<json::value> values = {1,
                                           1.0,
                                           1.5,
                                           -0.0,
                                           0,
                                           "1",
                                           true,
                                           false,
                                           nullptr,
                                           std::uint64_t{1} << 60,
                                           static_cast<double>(std::uint64_t{1} << 60),
                                           "",
                                           json::array{1},
                                           json::object{{"a", 1}}};
  for (const json::value& a : values) {
    for (const json::value& b : values) {
      if (!isPrimitive(a) || !isPrimitive(b)) continue;
      EXPECT_EQ(valueKey(a) == valueKey(b), primitiveEquals(a, b))
          << json::serialize(a) << " vs " << json::serialize(b);
    }
  }
  EXPECT_NE(valueKey(json::array{1}), valueKey(json::value(1)));
}

TEST(ValueTest, NumberToJsonPrintsIntegralDoublesAsIntegers) {
  Number n;
  n.is_integer = false;
  n.real = 4.0;
  EXPECT_TRUE(numberToJson(n).is_int64());
  n.real = 4.5;
  EXPECT_TRUE(numberToJson(n).is_double());
  n.real = 1e300;
  EXPECT_TRUE(numberToJson(n).is_double());
}

TEST(EvaluatorTest, PathsBorrowFromTheRow) {
  Result<Condition> c = parseCondition("IS_DEFINED(o.k)");
  ASSERT_TRUE(c.isOk());
  Value v = evaluate(*c->expr()->children[0], JsonRow(row()));
  ASSERT_TRUE(v.isDefined());
  EXPECT_EQ(&v.get(), row().at("o").as_object().if_contains("k"));
  EXPECT_EQ(eval("o.k.deeper"), kUndefined);
  EXPECT_EQ(eval("a.k"), kUndefined);
  EXPECT_EQ(eval("missing"), kUndefined);
}

TEST(EvaluatorTest, IntegerArithmeticIsExactAndOverflowsToDouble) {
  EXPECT_EQ(eval("n + 1"), json::value(8));
  EXPECT_EQ(eval("n * 3"), json::value(21));
  EXPECT_EQ(eval("n / 7"), json::value(1));
  EXPECT_EQ(eval("n / 2"), json::value(3.5));
  EXPECT_EQ(eval("n % 4"), json::value(3));
  EXPECT_EQ(eval("-n % 4"), json::value(-3));
  EXPECT_EQ(eval("d * 2"), json::value(5));
  EXPECT_EQ(eval("d % 1"), json::value(0.5));
  EXPECT_TRUE(eval("big + 1").is_double());
  EXPECT_TRUE(eval("min - 1").is_double());
  EXPECT_TRUE(eval("big * 2").is_double());
  EXPECT_TRUE(eval("-min").is_double());
  EXPECT_EQ(eval("min % -1"), json::value(0));
  EXPECT_TRUE(eval("min / -1").is_double());
  EXPECT_TRUE(eval("huge + 0").is_double());
}

TEST(EvaluatorTest, UndefinedArithmetic) {
  EXPECT_EQ(eval("n / 0"), kUndefined);
  EXPECT_EQ(eval("n % 0"), kUndefined);
  EXPECT_EQ(eval("d / 0"), kUndefined);
  EXPECT_EQ(eval("s + 1"), kUndefined);
  EXPECT_EQ(eval("z + 1"), kUndefined);
  EXPECT_EQ(eval("b * 1"), kUndefined);
  EXPECT_EQ(eval("-s"), kUndefined);
  EXPECT_EQ(eval("+s"), kUndefined);
  EXPECT_EQ(eval("missing - 1"), kUndefined);
  EXPECT_EQ(eval("1e308 * 10"), kUndefined) << "non-finite results are undefined";
}

TEST(EvaluatorTest, ThreeValuedLogic) {
  EXPECT_EQ(truth("b AND missing = 1"), Truth::Unknown);
  EXPECT_EQ(truth("NOT b AND missing = 1"), Truth::False);
  EXPECT_EQ(truth("b OR missing = 1"), Truth::True);
  EXPECT_EQ(truth("NOT b OR missing = 1"), Truth::Unknown);
  EXPECT_EQ(truth("NOT (missing = 1)"), Truth::Unknown);
  EXPECT_EQ(truth("s AND b"), Truth::Unknown) << "a string is not a boolean";
  EXPECT_EQ(truth("z"), Truth::Unknown);
  EXPECT_EQ(truth("o"), Truth::Unknown);
}

TEST(EvaluatorTest, ComparisonsNeedSameKindPrimitives) {
  EXPECT_EQ(truth("n = 7.0"), Truth::True);
  EXPECT_EQ(truth("n != '7'"), Truth::Unknown);
  EXPECT_EQ(truth("z = null"), Truth::True);
  EXPECT_EQ(truth("z != null"), Truth::False);
  EXPECT_EQ(truth("z != 1"), Truth::Unknown);
  EXPECT_EQ(truth("o = o"), Truth::Unknown);
  EXPECT_EQ(truth("a != 1"), Truth::Unknown);
  EXPECT_EQ(truth("missing != 1"), Truth::Unknown);
  EXPECT_EQ(truth("s > 'h'"), Truth::True);
  EXPECT_EQ(truth("big > huge"), Truth::False);
  EXPECT_EQ(truth("big < huge"), Truth::True);
}

TEST(EvaluatorTest, Membership) {
  EXPECT_EQ(truth("n IN [1, 7.0]"), Truth::True);
  EXPECT_EQ(truth("n IN ['7']"), Truth::False);
  EXPECT_EQ(truth("n NIN ['7']"), Truth::True);
  EXPECT_EQ(truth("missing IN [1]"), Truth::Unknown);
  EXPECT_EQ(truth("missing NIN [1]"), Truth::Unknown);
  EXPECT_EQ(truth("o NIN [1]"), Truth::Unknown);
  EXPECT_EQ(truth("z IN [null]"), Truth::True);
}

TEST(EvaluatorTest, StringFunctionsCountCharacters) {
  EXPECT_EQ(eval("LENGTH(s)"), json::value(5));
  EXPECT_EQ(eval("SUBSTRING(s, 1, 2)"), json::value("\xC3\xA9l"));
  EXPECT_EQ(eval("SUBSTRING(s, 3, 100)"), json::value("lo"));
  EXPECT_EQ(eval("SUBSTRING(s, -4, 1)"), json::value("h"));
  EXPECT_EQ(eval("SUBSTRING(s, 9, 1)"), json::value(""));
  EXPECT_EQ(eval("SUBSTRING(s, 0, -1)"), json::value(""));
  EXPECT_EQ(eval("SUBSTRING(s, 0.5, 1)"), kUndefined);
  EXPECT_EQ(eval("INDEX_OF(s, 'l')"), json::value(2));
  EXPECT_EQ(eval("UPPER(s)"), json::value("H\xC3\xA9LLO")) << "ASCII case mapping only";
  EXPECT_EQ(eval("LOWER('ABC')"), json::value("abc"));
  EXPECT_EQ(eval("CONCAT(s, '-', deviceId, '!')"), json::value("h\xC3\xA9llo-d1!"));
  EXPECT_EQ(eval("CONCAT(s, n)"), kUndefined);
  EXPECT_EQ(eval("STARTSWITH(s, 'H', 1 = 1)"), json::value(true));
  EXPECT_EQ(eval("STARTSWITH(s, 'H', missing)"), kUndefined);
  EXPECT_EQ(eval("AS_NUMBER('1.5')"), json::value(1.5));
  EXPECT_EQ(eval("AS_NUMBER('x')"), kUndefined);
  EXPECT_EQ(eval("AS_NUMBER('[1]')"), kUndefined);
}

TEST(EvaluatorTest, ArrayContainsComparesElementsByValue) {
  EXPECT_EQ(eval("ARRAY_CONTAINS(a, 1.0)"), json::value(true));
  EXPECT_EQ(eval("ARRAY_CONTAINS(a, '1')"), json::value(false));
  EXPECT_EQ(eval("ARRAY_CONTAINS(a, o)"), json::value(true));
  EXPECT_EQ(eval("ARRAY_CONTAINS(o, 1)"), kUndefined);
  EXPECT_EQ(eval("ARRAY_CONTAINS(a, missing)"), kUndefined);
}

TEST(EvaluatorTest, MathFunctions) {
  EXPECT_EQ(eval("ABS(-3)"), json::value(3));
  EXPECT_TRUE(eval("ABS(min)").is_double());
  EXPECT_EQ(eval("ABS(-2.5)"), json::value(2.5));
  EXPECT_EQ(eval("CEILING(2.1)"), json::value(3));
  EXPECT_EQ(eval("FLOOR(-2.1)"), json::value(-3));
  EXPECT_EQ(eval("FLOOR(n)"), json::value(7));
  EXPECT_EQ(eval("SIGN(0)"), json::value(0));
  EXPECT_EQ(eval("SQRT(-1)"), kUndefined);
  EXPECT_EQ(eval("SQUARE(big)").is_double(), true);
  EXPECT_EQ(eval("POWER(2, 10)"), json::value(1024));
  EXPECT_EQ(eval("POWER(10, 400)"), kUndefined);
  EXPECT_EQ(eval("EXP(0)"), json::value(1));
}

TEST(EvaluatorTest, TypeFunctionsOnUndefined) {
  EXPECT_EQ(eval("IS_NULL(missing)"), json::value(false));
  EXPECT_EQ(eval("IS_PRIMITIVE(missing)"), json::value(false));
  EXPECT_EQ(eval("IS_DEFINED(z)"), json::value(true));
  EXPECT_EQ(eval("IS_PRIMITIVE(z)"), json::value(true));
}

TEST(FunctionsTest, LooksUpAllSpellingsCaseInsensitively) {
  EXPECT_EQ(findFunction("startswith"), findFunction("STARTS_WITH"));
  EXPECT_EQ(findFunction("EndsWith"), findFunction("ends_with"));
  EXPECT_NE(findFunction("Array_Contains"), nullptr);
  EXPECT_EQ(findFunction("COUNT"), nullptr) << "aggregates are not scalar functions";
  EXPECT_EQ(findFunction("nope"), nullptr);
}

}  // namespace
}  // namespace iothub::query
