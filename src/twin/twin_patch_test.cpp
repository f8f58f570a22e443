#include "twin/twin_patch.hpp"

#include <gtest/gtest.h>

#include "twin/twin_test_support.hpp"

namespace iothub::twin {
namespace {

using test_support::arrayOf;
using test_support::documentOfSize;
using test_support::obj;

json::value val(std::string_view text) { return json::value(obj(text)); }

store::TwinRecord freshTwin() {
  store::TwinRecord twin;
  twin.device_id = "dev1";
  return twin;
}

// --- parsing service patches ---

TEST(ServicePatchParseTest, ReadsTagsAndDesired) {
  auto patch = parseServicePatch(val(R"({"tags":{"a":1},"properties":{"desired":{"b":null}}})"));
  ASSERT_TRUE(patch.isOk()) << patch.status().toString();
  EXPECT_EQ(patch->tags.members, obj(R"({"a":1})"));
  EXPECT_FALSE(patch->tags.clear);
  EXPECT_EQ(patch->desired.members, obj(R"({"b":null})"));
}

TEST(ServicePatchParseTest, NullSectionsClearEverything) {
  auto patch = parseServicePatch(val(R"({"tags":null,"properties":{"desired":null}})"));
  ASSERT_TRUE(patch.isOk());
  EXPECT_TRUE(patch->tags.clear);
  EXPECT_TRUE(patch->desired.clear);
  EXPECT_TRUE(patch->tags.writes());
}

TEST(ServicePatchParseTest, IgnoresEchoedIdentityFieldsAndDesiredMetadata) {
  auto patch = parseServicePatch(val(R"({"deviceId":"dev1","etag":"AAAAAAAAAAE=","version":3,
      "status":"enabled","connectionState":"Connected","x509Thumbprint":{},"capabilities":{},
      "properties":{"desired":{"a":1,"$metadata":{"$lastUpdated":"x"},"$version":4}}})"));
  ASSERT_TRUE(patch.isOk()) << patch.status().toString();
  EXPECT_EQ(patch->desired.members, obj(R"({"a":1})"));
  EXPECT_FALSE(patch->tags.writes());
}

TEST(ServicePatchParseTest, AcceptsAnEmptyReportedSectionSilently) {
  auto patch = parseServicePatch(
      val(R"({"etag":"*","tags":{"t":1},"properties":{"desired":{},"reported":{}}})"));
  ASSERT_TRUE(patch.isOk()) << patch.status().toString();
  EXPECT_FALSE(patch->desired.writes());
}

TEST(ServicePatchParseTest, RejectsUnsupportedShapes) {
  for (const char* text : {
           R"({"etag":"*","desired":{"a":1}})",       // desired not under properties
           R"({"properties":{"reported":{"a":1}}})",  // reported is device-owned
           R"({"properties":{"reported":null}})",
           R"({"properties":{"other":{}}})",
           R"({"properties":[]})",
           R"({"tags":[1]})",
           R"({"properties":{"desired":5}})",
           R"({"tags":{"bad key":1}})",
           R"({"properties":{"desired":{"$other":1}}})",
       }) {
    auto patch = parseServicePatch(val(text));
    EXPECT_EQ(patch.code(), ErrorCode::ArgumentInvalid) << text;
  }
  auto top_level = parseServicePatch(val(R"({"desired":{"a":1}})"));
  EXPECT_NE(top_level.status().message().find("properties.desired"), std::string::npos);
  EXPECT_EQ(parseServicePatch(json::value(json::array{})).code(), ErrorCode::IotHubFormatError);
}

TEST(ServicePatchParseTest, RejectsAPatchLargerThanItsSectionAlone) {
  json::object body{{"tags", documentOfSize(8193)}};
  EXPECT_EQ(parseServicePatch(json::value(body)).code(), ErrorCode::MessageTooLarge);
}

TEST(ReportedPatchParseTest, RejectsEchoedVersionAndNonObjects) {
  EXPECT_EQ(parseReportedPatch(val(R"({"a":1,"$version":2})")).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(parseReportedPatch(json::value(5)).code(), ErrorCode::IotHubFormatError);
  auto ok = parseReportedPatch(val(R"({"a":{"b":null}})"));
  ASSERT_TRUE(ok.isOk());
  EXPECT_EQ(ok->members, obj(R"({"a":{"b":null}})"));
}

TEST(ReplacementParseTest, AbsentSectionsAreEmptyAndReportedIsIgnored) {
  auto replacement = parseServiceReplacement(
      val(R"({"deviceId":"dev1","properties":{"reported":{"x":1,"$version":3}}})"));
  ASSERT_TRUE(replacement.isOk()) << replacement.status().toString();
  EXPECT_TRUE(replacement->tags.empty());
  EXPECT_TRUE(replacement->desired.empty());
  auto with_nulls = parseServiceReplacement(
      val(R"({"tags":{"a":null,"b":1},"properties":{"desired":{"c":{"d":null}}}})"));
  ASSERT_TRUE(with_nulls.isOk());
  EXPECT_EQ(with_nulls->tags, obj(R"({"b":1})"));
  EXPECT_EQ(with_nulls->desired, obj(R"({"c":{}})"));
}

// --- applying ---

TEST(ServicePatchApplyTest, VersionsGrowByOnePerWrittenSection) {
  store::TwinRecord twin = freshTwin();
  TwinPatch tags_only{{false, obj(R"({"a":1})")}, {}};
  auto after_tags = applyServicePatch(twin, tags_only, "T1");
  ASSERT_TRUE(after_tags.isOk());
  EXPECT_EQ(after_tags->twin.version, 2);
  EXPECT_EQ(after_tags->twin.desired_version, 1);
  EXPECT_FALSE(after_tags->desired_patch.has_value());

  TwinPatch both{{false, obj(R"({"b":1})")}, {false, obj(R"({"c":1})")}};
  auto after_both = applyServicePatch(after_tags->twin, both, "T2");
  ASSERT_TRUE(after_both.isOk());
  EXPECT_EQ(after_both->twin.version, 3);
  EXPECT_EQ(after_both->twin.desired_version, 2);
  EXPECT_EQ(after_both->twin.reported_version, 1);
  ASSERT_TRUE(after_both->desired_patch.has_value());
  EXPECT_EQ(toJson(*after_both->desired_patch), R"({"c":1,"$version":2})");
}

TEST(ServicePatchApplyTest, SameValuesStillCountAsAnUpdate) {
  store::TwinRecord twin = freshTwin();
  TwinPatch patch{{}, {false, obj(R"({"c":1})")}};
  auto first = applyServicePatch(twin, patch, "T1");
  ASSERT_TRUE(first.isOk());
  auto second = applyServicePatch(first->twin, patch, "T2");
  ASSERT_TRUE(second.isOk());
  EXPECT_EQ(second->twin.version, 3);
  EXPECT_EQ(second->twin.desired_version, 3);
}

TEST(ServicePatchApplyTest, EmptyPatchChangesNothing) {
  store::TwinRecord twin = freshTwin();
  auto result = applyServicePatch(twin, TwinPatch{}, "T1");
  ASSERT_TRUE(result.isOk());
  EXPECT_EQ(result->twin, twin);
  EXPECT_FALSE(result->desired_patch.has_value());
}

TEST(ServicePatchApplyTest, ClearingDesiredNotifiesNullForEveryMember) {
  store::TwinRecord twin = freshTwin();
  auto filled = applyServicePatch(twin, {{}, {false, obj(R"({"a":1,"b":{"c":2}})")}}, "T1");
  ASSERT_TRUE(filled.isOk());
  auto cleared = applyServicePatch(filled->twin, {{}, {true, {}}}, "T2");
  ASSERT_TRUE(cleared.isOk());
  EXPECT_TRUE(propertiesOf(cleared->twin.desired).empty());
  EXPECT_EQ(toJson(*cleared->desired_patch), R"({"a":null,"b":null,"$version":3})");
}

TEST(ServicePatchApplyTest, ClearingTagsRemovesEverything) {
  store::TwinRecord twin = freshTwin();
  twin.tags = obj(R"({"a":1,"b":2})");
  auto cleared = applyServicePatch(twin, {{true, {}}, {}}, "T1");
  ASSERT_TRUE(cleared.isOk());
  EXPECT_TRUE(cleared->twin.tags.empty());
  EXPECT_EQ(cleared->twin.version, 2);
}

TEST(ServicePatchApplyTest, RejectsAResultOverTheSizeLimit) {
  store::TwinRecord twin = freshTwin();
  twin.tags = documentOfSize(8000);
  auto over =
      applyServicePatch(twin, {{false, json::object{{"zz", std::string(200, 'z')}}}, {}}, "T1");
  EXPECT_EQ(over.code(), ErrorCode::MessageTooLarge);
  // Replacing a member in place does not add its old size.
  twin.tags = documentOfSize(8192);
  json::object same_size{{"k000", std::string(twin.tags.at("k000").as_string().size(), 'y')}};
  auto in_place = applyServicePatch(twin, {{false, same_size}, {}}, "T1");
  EXPECT_TRUE(in_place.isOk()) << in_place.status().toString();
}

TEST(ReplacementApplyTest, NotifiesTheDiffWithNullsForRemovedMembers) {
  store::TwinRecord twin = freshTwin();
  auto filled = applyServicePatch(
      twin,
      {{false, obj(R"({"old":1})")}, {false, obj(R"({"keep":1,"gone":2,"nested":{"x":1,"y":2}})")}},
      "T1");
  ASSERT_TRUE(filled.isOk());
  TwinReplacement replacement{obj(R"({"new":1})"), obj(R"({"keep":1,"nested":{"x":1},"added":3})")};
  auto replaced = applyReplacement(filled->twin, replacement, "T2");
  ASSERT_TRUE(replaced.isOk());
  EXPECT_EQ(replaced->twin.tags, obj(R"({"new":1})"));
  EXPECT_EQ(propertiesOf(replaced->twin.desired), obj(R"({"keep":1,"nested":{"x":1},"added":3})"));
  EXPECT_EQ(toJson(*replaced->desired_patch),
            R"({"gone":null,"nested":{"y":null},"added":3,"$version":3})");
  EXPECT_EQ(replaced->twin.version, 3);
  EXPECT_EQ(replaced->twin.desired_version, 3);
  const json::object& metadata = replaced->twin.desired.at("$metadata").as_object();
  EXPECT_EQ(metadata.at("keep").at("$lastUpdated"), "T1");
  EXPECT_EQ(metadata.at("added").at("$lastUpdated"), "T2");
  EXPECT_EQ(metadata.at("$lastUpdatedVersion"), 3);
}

TEST(ReportedApplyTest, BumpsReportedAndTwinVersionsOnly) {
  store::TwinRecord twin = freshTwin();
  auto next = applyReportedPatch(twin, {false, obj(R"({"t":{"v":1}})")}, "T1");
  ASSERT_TRUE(next.isOk());
  EXPECT_EQ(next->reported_version, 2);
  EXPECT_EQ(next->desired_version, 1);
  EXPECT_EQ(next->version, 2);
  EXPECT_EQ(next->reported.at("$metadata"),
            obj(R"({"$lastUpdated":"T1","t":{"$lastUpdated":"T1","v":{"$lastUpdated":"T1"}}})"));
  auto unchanged = applyReportedPatch(*next, {}, "T2");
  ASSERT_TRUE(unchanged.isOk());
  EXPECT_EQ(*unchanged, *next);
}

TEST(ReportedApplyTest, RejectsAResultOver32KB) {
  store::TwinRecord twin = freshTwin();
  // ,"ext":"1234" adds 13 bytes (32768 in all), ,"extra":"1234" 15 (32770).
  twin.reported = documentOfSize(32755);
  EXPECT_EQ(applyReportedPatch(twin, {false, obj(R"({"extra":"1234"})")}, "T1").code(),
            ErrorCode::MessageTooLarge);
  EXPECT_TRUE(applyReportedPatch(twin, {false, obj(R"({"ext":"1234"})")}, "T1").isOk());
}

// --- sizes that Azure's accounting alone would miss ---

TEST(ReportedPatchParseTest, RefusesArraysOfNullsEmptyStringsAndControlCharacters) {
  for (const json::value& element : {json::value(nullptr), json::value(""), json::value("\x01\x1f"),
                                     json::value(json::object())}) {
    json::value body(arrayOf("k0", element, 45000));
    EXPECT_EQ(parseReportedPatch(body).code(), ErrorCode::MessageTooLarge) << toJson(element);
  }
}

TEST(ServicePatchParseTest, RefusesArraysThatOverflowTagsOrDesired) {
  json::object tags{{"tags", arrayOf("t", "", 3000)}};  // 9 KB of ""
  EXPECT_EQ(parseServicePatch(json::value(tags)).code(), ErrorCode::MessageTooLarge);
  json::object desired{{"properties", json::object{{"desired", arrayOf("d", nullptr, 7000)}}}};
  EXPECT_EQ(parseServicePatch(json::value(desired)).code(), ErrorCode::MessageTooLarge);
  json::object replacement{{"tags", arrayOf("t", "\x02", 2000)}};  // 2000 × "\u0002",
  EXPECT_EQ(parseServiceReplacement(json::value(replacement)).code(), ErrorCode::MessageTooLarge);
}

TEST(ReportedApplyTest, CumulativePatchesCannotGrowTheSectionPastTheLimit) {
  store::TwinRecord twin = freshTwin();
  int accepted = 0;
  for (int i = 0; i < 5; ++i) {
    // 15 KB of JSON each: two fit in 32 KB, a third does not.
    auto next =
        applyReportedPatch(twin, {false, arrayOf("k" + std::to_string(i), nullptr, 3000)}, "T1");
    if (!next) {
      EXPECT_EQ(next.code(), ErrorCode::MessageTooLarge);
      continue;
    }
    twin = std::move(next).value();
    ++accepted;
  }
  EXPECT_EQ(accepted, 2);
  EXPECT_LE(toJson(propertiesOf(twin.reported)).size(), kMaxReportedSize);
}

TEST(ServicePatchApplyTest, CumulativePatchesCannotGrowTagsOrDesiredPastTheLimit) {
  store::TwinRecord twin = freshTwin();
  for (int i = 0; i < 5; ++i) {
    std::string key = "k" + std::to_string(i);
    TwinPatch patch{{false, arrayOf(key, "", 1000)}, {false, arrayOf(key, nullptr, 3000)}};
    auto next = applyServicePatch(twin, patch, "T1");
    if (next) twin = std::move(next->twin);
  }
  EXPECT_LE(toJson(twin.tags).size(), kMaxTagsSize);
  EXPECT_LE(toJson(propertiesOf(twin.desired)).size(), kMaxDesiredSize);
  EXPECT_EQ(twin.tags.size(), 2u);  // 3 KB of "" each
  EXPECT_EQ(propertiesOf(twin.desired).size(), 2u);
}

TEST(ReplacementApplyTest, RefusesAReplacementOverTheLimit) {
  store::TwinRecord twin = freshTwin();
  TwinReplacement replacement{{}, arrayOf("d", json::array(), 11000)};  // 33 KB of []
  EXPECT_EQ(applyReplacement(twin, replacement, "T1").code(), ErrorCode::MessageTooLarge);
  replacement.desired = arrayOf("d", json::array(), 10000);
  EXPECT_TRUE(applyReplacement(twin, replacement, "T1").isOk());
}

}  // namespace
}  // namespace iothub::twin
