#include <gtest/gtest.h>

#include <random>
#include <string>

#include "query/ast.hpp"
#include "query/errors.hpp"
#include "query/query.hpp"

namespace iothub::query {
namespace {

std::string bound(std::string_view condition) {
  Result<Condition> c = parseCondition(condition);
  EXPECT_TRUE(c.isOk()) << condition << ": " << c.status().message();
  return c ? c->toString() : "";
}

Query parsed(std::string_view text) {
  Result<Query> q = parseQuery(text);
  EXPECT_TRUE(q.isOk()) << text << ": " << q.status().message();
  return q ? std::move(q).value() : Query{};
}

TEST(ParserTest, ArithmeticBindsTighterThanComparisonThanNotThanAndThanOr) {
  EXPECT_EQ(bound("a = 1 OR b = 2 AND NOT c = 3"), "((a = 1) OR ((b = 2) AND (NOT (c = 3))))");
  EXPECT_EQ(bound("1 + 2 * 3 - 4 / 5 % 6 = x"), "(((1 + (2 * 3)) - ((4 / 5) % 6)) = x)");
  EXPECT_EQ(bound("(a OR b) AND c"), "((a OR b) AND c)");
  EXPECT_EQ(bound("a - b - c = 0"), "(((a - b) - c) = 0)");
}

TEST(ParserTest, FlattensAndOrChains) {
  EXPECT_EQ(bound("a AND b AND c AND d"), "(a AND b AND c AND d)");
  EXPECT_EQ(bound("a OR b OR c"), "(a OR b OR c)");
  std::string many = "deviceId = 'd0'";
  for (int i = 1; i < 300; ++i) many += " OR deviceId = 'd" + std::to_string(i) + "'";
  Result<Condition> c = parseCondition(many);
  ASSERT_TRUE(c.isOk()) << c.status().message();
  EXPECT_EQ(c->expr()->depth, 3);
}

TEST(ParserTest, MembershipForms) {
  EXPECT_EQ(bound("x IN [1, 'a', true, null]"), "(x IN [1,\"a\",true,null])");
  EXPECT_EQ(bound("x NIN (1, 2)"), "(x NIN [1,2])");
  EXPECT_EQ(bound("x not in [-1]"), "(x NIN [-1])");
  EXPECT_EQ(bound("x IN []"), "(x IN [])");
}

TEST(ParserTest, FoldsSignsOfNumericLiterals) {
  EXPECT_EQ(bound("x = -5"), "(x = -5)");
  EXPECT_EQ(bound("x = - -2"), "(x = 2)");
  EXPECT_EQ(bound("x = -2.5"), bound("x = -(2.5)"));
  EXPECT_EQ(bound("x = +3"), "(x = 3)");
  EXPECT_EQ(bound("-x = 1"), "((-x) = 1)");
}

TEST(ParserTest, KeywordsAndFunctionsAreCaseInsensitive) {
  EXPECT_EQ(bound("is_defined(tags.a) and StartsWith(deviceId, 'x') oR NoT TRUE"),
            "((IS_DEFINED(tags.a) AND STARTSWITH(deviceId, \"x\")) OR (NOT true))");
  EXPECT_EQ(bound("starts_with(deviceId, 'x') AND ends_with(deviceId, 'y')"),
            "(STARTSWITH(deviceId, \"x\") AND ENDSWITH(deviceId, \"y\"))");
}

TEST(ParserTest, CanonicalizesIdentityFieldsButNotTagNames) {
  EXPECT_EQ(bound("DEVICEID = 'a'"), "(deviceId = \"a\")");
  EXPECT_EQ(bound("ConnectionState = 'a' AND LastActivityTime > 'b' AND ETAG = 'c'"),
            "((connectionState = \"a\") AND (lastActivityTime > \"b\") AND (etag = \"c\"))");
  EXPECT_EQ(bound("Capabilities.IOTEDGE = true"), "(capabilities.iotEdge = true)");
  EXPECT_EQ(bound("Tags.Location.Region = 'a'"), "(tags.Location.Region = \"a\")");
  EXPECT_EQ(bound("PROPERTIES.Desired.$version = 1"), "(properties.desired.$version = 1)");
  EXPECT_EQ(bound("properties.REPORTED.$metadata.x.$lastUpdated > ''"),
            "(properties.reported.$metadata.x.$lastUpdated > \"\")");
  EXPECT_EQ(bound("id = 'x'"), "(deviceId = \"x\")");
  EXPECT_EQ(bound("tags.from = 1 AND tags.select.where = 2"),
            "((tags.from = 1) AND (tags.select.where = 2))");
  EXPECT_EQ(bound("tags['a.b'][\"c d\"] = 1"), "(tags.a.b.c d = 1)");
}

TEST(ParserTest, DeviceJobPathsDropTheirPrefix) {
  Result<Condition> c = parseCondition("DEVICES.JOBS.JOBID = 'j' AND devices.jobs.Outcome.x = 1",
                                       Collection::DeviceJobs);
  ASSERT_TRUE(c.isOk()) << c.status().message();
  EXPECT_EQ(c->toString(), "((jobId = \"j\") AND (outcome.x = 1))");
}

TEST(ParserTest, BuildsQueryStructure) {
  Query q = parsed(
      "SELECT TOP 7 TAGS.x.y, tags.x.y AS why, COUNT() AS n FROM Devices WHERE a = 1 GROUP BY "
      "Tags.x.y");
  EXPECT_EQ(q.collection, Collection::Devices);
  EXPECT_FALSE(q.select_all);
  ASSERT_TRUE(q.top.has_value());
  EXPECT_EQ(*q.top, 7u);
  ASSERT_EQ(q.projections.size(), 3u);
  EXPECT_EQ(q.projections[0].kind, ProjectionKind::Path);
  EXPECT_EQ(q.projections[0].name, "y");
  EXPECT_EQ(q.projections[1].name, "why");
  EXPECT_EQ(q.projections[1].path.keys, (std::vector<std::string>{"tags", "x", "y"}));
  EXPECT_EQ(q.projections[2].kind, ProjectionKind::Count);
  EXPECT_EQ(q.projections[2].name, "n");
  ASSERT_TRUE(q.group_by.has_value());
  EXPECT_EQ(q.group_by->keys, (std::vector<std::string>{"tags", "x", "y"}));
  EXPECT_EQ(q.where.toString(), "(a = 1)");
  EXPECT_TRUE(q.isAggregate());
  EXPECT_EQ(q.itemType(), ItemType::Raw);
}

TEST(ParserTest, ItemTypes) {
  EXPECT_EQ(parsed("SELECT * FROM devices").itemType(), ItemType::Twin);
  EXPECT_EQ(parsed("SELECT * FROM devices.jobs").itemType(), ItemType::DeviceJob);
  EXPECT_EQ(parsed("SELECT deviceId FROM devices").itemType(), ItemType::Raw);
  EXPECT_EQ(parsed("SELECT devices.jobs.jobId FROM devices.jobs").itemType(), ItemType::Raw);
  EXPECT_EQ(itemTypeName(ItemType::DeviceJob), "DeviceJob");
  EXPECT_TRUE(parsed("SELECT * FROM devices").where.matchesAll());
  EXPECT_FALSE(parsed("SELECT deviceId FROM devices").isAggregate());
  EXPECT_EQ(parsed("SELECT DEVICEID FROM devices").projections[0].name, "deviceId");
}

TEST(ParserTest, StarConditionMatchesEverything) {
  for (const char* text : {"*", " * ", "\n*\t"}) {
    Result<Condition> c = parseCondition(text);
    ASSERT_TRUE(c.isOk()) << text;
    EXPECT_TRUE(c->matchesAll());
    EXPECT_TRUE(c->matches(json::object{}));
    EXPECT_EQ(c->toString(), "*");
    EXPECT_FALSE(c->indexableEquality().has_value());
  }
}

TEST(ParserTest, RejectsTextOverMaximumLength) {
  std::string text = "SELECT * FROM devices WHERE deviceId = '" + std::string(8150, 'x') + "'";
  ASSERT_LE(text.size(), kMaxQueryLength);
  EXPECT_TRUE(parseQuery(text).isOk());
  text = "SELECT * FROM devices WHERE deviceId = '" + std::string(8200, 'x') + "'";
  Result<Query> q = parseQuery(text);
  ASSERT_FALSE(q.isOk());
  EXPECT_EQ(q.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(q.status().message().find("8192"), std::string::npos);
  EXPECT_FALSE(parseCondition(std::string(9000, ' ') + "*").isOk());
  // 8192 characters of two bytes each are still within the limit.
  std::string wide = "deviceId = '";
  while (wide.size() < 2 * 8170) wide += "\xC3\xA9";
  wide += "'";
  EXPECT_TRUE(parseCondition(wide).isOk());
}

TEST(ParserTest, BoundsNesting) {
  std::string ok = std::string(30, '(') + "a = 1" + std::string(30, ')');
  EXPECT_TRUE(parseCondition(ok).isOk());
  for (std::string deep : {std::string(2000, '(') + "a = 1" + std::string(2000, ')'),
                           std::string(4000, '-') + "1 = 1", "x = " + std::string(3000, '['),
                           [] {
                             std::string s = "1";
                             for (int i = 0; i < 2000; ++i) s += " + 1";
                             return s + " = 3";
                           }(),
                           [] {
                             std::string s;
                             for (int i = 0; i < 2000; ++i) s += "NOT ";
                             return s + "a";
                           }(),
                           [] {
                             std::string s;
                             for (int i = 0; i < 1000; ++i) s += "LOWER(";
                             return s;
                           }()}) {
    Result<Condition> c = parseCondition(deep);
    ASSERT_FALSE(c.isOk());
    EXPECT_NE(c.status().message().find("nested too deeply"), std::string::npos)
        << c.status().message();
  }
}

TEST(ParserTest, IndexableEqualityFindsPathEqualsConstantInTopLevelConjunction) {
  auto equality = [](std::string_view text) { return parseCondition(text)->indexableEquality(); };
  auto e = equality("tags.location.region = 'US'");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->first.keys, (std::vector<std::string>{"tags", "location", "region"}));
  EXPECT_EQ(e->second, json::value("US"));

  e = equality("status = 'enabled' AND 7 = Tags.floor AND x > 1");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->first.toString(), "status");

  e = equality("x > 1 AND -2 = tags.floor");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->first.toString(), "tags.floor");
  EXPECT_EQ(e->second, json::value(-2));

  EXPECT_FALSE(equality("a = 1 OR b = 2").has_value());
  EXPECT_FALSE(equality("NOT (a = 1)").has_value());
  EXPECT_FALSE(equality("a != 1").has_value());
  EXPECT_FALSE(equality("a = b").has_value());
  EXPECT_FALSE(equality("LOWER(a) = 'x'").has_value());
  EXPECT_FALSE(equality("a IN ['x']").has_value());

  Result<Query> q = parseQuery("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'j1'");
  ASSERT_TRUE(q.isOk());
  e = q->where.indexableEquality();
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->first.keys, (std::vector<std::string>{"jobId"}));
}

TEST(ParserTest, IndexableLookupAlsoAcceptsInLists) {
  auto lookup = parseCondition("status = 'enabled' AND DeviceId IN ['a', 'b']")->indexableLookup();
  ASSERT_TRUE(lookup.has_value());
  EXPECT_EQ(lookup->first.toString(), "status");
  lookup = parseCondition("x > 1 AND DeviceId IN ['a', 'b']")->indexableLookup();
  ASSERT_TRUE(lookup.has_value());
  EXPECT_EQ(lookup->first.toString(), "deviceId");
  EXPECT_EQ(lookup->second, (std::vector<json::value>{"a", "b"}));
  EXPECT_FALSE(parseCondition("x NIN ['a']")->indexableLookup().has_value());
}

TEST(ParserTest, ConditionCopiesShareTheTree) {
  Result<Condition> c = parseCondition("a = 1");
  ASSERT_TRUE(c.isOk());
  Condition copy = *c;
  EXPECT_EQ(copy.expr(), c->expr());
  EXPECT_TRUE(copy.matches(json::object{{"a", 1}}));
}

// Random token soup must give a clean result or ArgumentInvalid, never a crash.
TEST(ParserTest, SurvivesRandomTokenSoup) {
  const std::vector<std::string> pieces = {
      "SELECT",  "*",         "FROM",       "devices",    "devices.jobs",
      "WHERE",   "GROUP",     "BY",         "TOP",        "1",
      "AND",     "OR",        "NOT",        "IN",         "NIN",
      "(",       ")",         "[",          "]",          ",",
      ".",       "=",         "!=",         "<",          ">=",
      "+",       "-",         "/",          "%",          "'s'",
      "\"t\"",   "0x1F",      "1.5e3",      "tags",       "x",
      "COUNT()", "AS",        "STARTSWITH", "IS_DEFINED", "null",
      "true",    "undefined", "$version",   "properties"};
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    std::string text;
    int n = static_cast<int>(rng() % 20);
    for (int k = 0; k < n; ++k) text += pieces[rng() % pieces.size()] + " ";
    Result<Query> q = parseQuery(text);
    if (!q) {
      EXPECT_EQ(q.code(), ErrorCode::ArgumentInvalid) << text;
    }
    Result<Condition> c = parseCondition(text);
    if (!c) {
      EXPECT_EQ(c.code(), ErrorCode::ArgumentInvalid) << text;
    } else {
      c->matches(json::object{{"tags", json::object{{"x", 1}}}});
    }
  }
}

}  // namespace
}  // namespace iothub::query
