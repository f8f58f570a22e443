#include "twin/twin_document.hpp"

#include <gtest/gtest.h>

#include <string>

#include "twin/twin_test_support.hpp"

namespace iothub::twin {
namespace {

using test_support::arrayOf;
using test_support::documentOfSize;
using test_support::obj;

Status validate(std::string_view text, std::string_view path = "properties.desired") {
  return validateSectionPatch(obj(text), path);
}

// --- etags ---

TEST(TwinEtagTest, IsBase64OfTheBigEndianVersion) {
  EXPECT_EQ(twinEtag(1), "AAAAAAAAAAE=");
  EXPECT_EQ(twinEtag(4), "AAAAAAAAAAQ=");
  EXPECT_EQ(twinEtag(256), "AAAAAAAAAQA=");
}

TEST(TwinEtagTest, BareEtagStripsQuotesAndWeakPrefix) {
  EXPECT_EQ(bareEtag("\"AAAAAAAAAAE=\""), "AAAAAAAAAAE=");
  EXPECT_EQ(bareEtag("W/\"AAAAAAAAAAE=\""), "AAAAAAAAAAE=");
  EXPECT_EQ(bareEtag("\"*\""), "*");
  EXPECT_EQ(bareEtag("AAAAAAAAAAE="), "AAAAAAAAAAE=");
  EXPECT_EQ(bareEtag("\""), "\"");
}

TEST(TwinEtagTest, AcceptsEmptyWildcardAndCurrentEtagOnly) {
  store::TwinRecord twin;
  twin.version = 3;
  EXPECT_TRUE(checkTwinEtag(twin, "").isOk());
  EXPECT_TRUE(checkTwinEtag(twin, "*").isOk());
  EXPECT_TRUE(checkTwinEtag(twin, "\"*\"").isOk());
  EXPECT_TRUE(checkTwinEtag(twin, twinEtag(3)).isOk());
  EXPECT_TRUE(checkTwinEtag(twin, "\"" + twinEtag(3) + "\"").isOk());
  Status stale = checkTwinEtag(twin, twinEtag(2));
  EXPECT_EQ(stale.code(), ErrorCode::PreconditionFailed);
  EXPECT_NE(stale.message().find(twinEtag(3)), std::string::npos);
}

// --- merge patch ---

TEST(MergePatchTest, MergesObjectsRecursivelyAndNullDeletes) {
  json::object target = obj(R"({"a":{"b":1,"c":2},"d":3,"e":4})");
  applyMergePatch(target, obj(R"({"a":{"b":10,"x":{"y":1}},"d":null,"f":5})"));
  EXPECT_EQ(target, obj(R"({"a":{"b":10,"c":2,"x":{"y":1}},"e":4,"f":5})"));
}

TEST(MergePatchTest, ArraysAndScalarsReplace) {
  json::object target = obj(R"({"list":[1,2,3],"s":"old","o":{"k":1},"n":7})");
  applyMergePatch(target, obj(R"({"list":[9],"s":{"now":"object"},"o":"scalar","n":[1]})"));
  EXPECT_EQ(target, obj(R"({"list":[9],"s":{"now":"object"},"o":"scalar","n":[1]})"));
}

TEST(MergePatchTest, NullsInsideNewObjectsAreDropped) {
  json::object target;
  applyMergePatch(target, obj(R"({"a":{"b":null,"c":{"d":null,"e":1}}})"));
  EXPECT_EQ(target, obj(R"({"a":{"c":{"e":1}}})"));
}

TEST(MergePatchTest, KeepsTheOrderOfUntouchedMembers) {
  json::object target = obj(R"({"a":1,"b":2,"c":3,"d":4})");
  applyMergePatch(target, obj(R"({"b":null})"));
  EXPECT_EQ(toJson(target), R"({"a":1,"c":3,"d":4})");
}

TEST(MergePatchTest, CreateMergePatchDiffsRecursively) {
  json::object from = obj(R"({"a":{"x":1,"y":2},"b":1,"c":[1],"d":"same"})");
  json::object to = obj(R"({"a":{"x":1,"y":3},"c":[1,2],"d":"same","e":{"f":1}})");
  json::object patch = createMergePatch(from, to);
  EXPECT_EQ(patch, obj(R"({"b":null,"a":{"y":3},"c":[1,2],"e":{"f":1}})"));
  json::object applied = from;
  applyMergePatch(applied, patch);
  EXPECT_EQ(applied, to);
  EXPECT_TRUE(createMergePatch(to, to).empty());
}

TEST(MergePatchTest, WithoutNullsRemovesNullsRecursivelyButNotInArrays) {
  EXPECT_EQ(withoutNulls(obj(R"({"a":null,"b":{"c":null,"d":1},"e":[null]})")),
            obj(R"({"b":{"d":1},"e":[null]})"));
}

// --- metadata ---

TEST(PropertiesPatchTest, StampsEveryLevelAndLeafWithTimeAndVersion) {
  json::object stored;
  applyPropertiesPatch(stored, obj(R"({"a":{"b":{"c":1}},"d":2})"), {"T1", 2});
  EXPECT_EQ(stored, obj(R"({"a":{"b":{"c":1}},"d":2,"$metadata":{
      "$lastUpdated":"T1","$lastUpdatedVersion":2,
      "a":{"$lastUpdated":"T1","$lastUpdatedVersion":2,
           "b":{"$lastUpdated":"T1","$lastUpdatedVersion":2,
                "c":{"$lastUpdated":"T1","$lastUpdatedVersion":2}}},
      "d":{"$lastUpdated":"T1","$lastUpdatedVersion":2}}})"));
}

TEST(PropertiesPatchTest, RestampsOnlyThePathThatChanged) {
  json::object stored;
  applyPropertiesPatch(stored, obj(R"({"a":{"b":1,"c":2},"d":3})"), {"T1", 2});
  applyPropertiesPatch(stored, obj(R"({"a":{"b":5}})"), {"T2", 3});
  const json::object& metadata = stored.at("$metadata").as_object();
  EXPECT_EQ(metadata.at("$lastUpdated"), "T2");
  EXPECT_EQ(metadata.at("$lastUpdatedVersion"), 3);
  EXPECT_EQ(metadata.at("a").at("$lastUpdated"), "T2");
  EXPECT_EQ(metadata.at("a").at("$lastUpdatedVersion"), 3);
  EXPECT_EQ(metadata.at("a").at("b"), obj(R"({"$lastUpdated":"T2","$lastUpdatedVersion":3})"));
  EXPECT_EQ(metadata.at("a").at("c"), obj(R"({"$lastUpdated":"T1","$lastUpdatedVersion":2})"));
  EXPECT_EQ(metadata.at("d"), obj(R"({"$lastUpdated":"T1","$lastUpdatedVersion":2})"));
}

TEST(PropertiesPatchTest, DeletedMembersLoseTheirMetadata) {
  json::object stored;
  applyPropertiesPatch(stored, obj(R"({"a":{"b":1,"c":2},"d":3})"), {"T1", 2});
  applyPropertiesPatch(stored, obj(R"({"a":{"b":null},"d":null})"), {"T2", 3});
  EXPECT_EQ(propertiesOf(stored), obj(R"({"a":{"c":2}})"));
  const json::object& metadata = stored.at("$metadata").as_object();
  EXPECT_FALSE(metadata.contains("d"));
  EXPECT_FALSE(metadata.at("a").as_object().contains("b"));
  EXPECT_TRUE(metadata.at("a").as_object().contains("c"));
}

TEST(PropertiesPatchTest, ReplacingALeafByAnObjectGetsFreshMetadata) {
  json::object stored;
  applyPropertiesPatch(stored, obj(R"({"a":1})"), {"T1", std::nullopt});
  applyPropertiesPatch(stored, obj(R"({"a":{"b":2}})"), {"T2", std::nullopt});
  EXPECT_EQ(stored.at("$metadata").at("a"),
            obj(R"({"$lastUpdated":"T2","b":{"$lastUpdated":"T2"}})"));
  applyPropertiesPatch(stored, obj(R"({"a":[1]})"), {"T3", std::nullopt});
  EXPECT_EQ(stored.at("$metadata").at("a"), obj(R"({"$lastUpdated":"T3"})"));
}

TEST(PropertiesPatchTest, ReportedMetadataHasNoVersion) {
  json::object stored;
  applyPropertiesPatch(stored, obj(R"({"a":{"b":1}})"), {"T1", std::nullopt});
  EXPECT_EQ(stored.at("$metadata"),
            obj(R"({"$lastUpdated":"T1","a":{"$lastUpdated":"T1","b":{"$lastUpdated":"T1"}}})"));
}

TEST(PropertiesPatchTest, MetadataStaysTheLastMember) {
  json::object stored;
  applyPropertiesPatch(stored, obj(R"({"a":1})"), {"T1", 2});
  applyPropertiesPatch(stored, obj(R"({"b":1})"), {"T2", 3});
  EXPECT_EQ((stored.end() - 1)->key(), "$metadata");
}

TEST(PropertiesPatchTest, ClearLeavesOnlyTheRootStamp) {
  json::object stored;
  applyPropertiesPatch(stored, obj(R"({"a":1,"b":{"c":2}})"), {"T1", 2});
  clearProperties(stored, {"T2", 3});
  EXPECT_EQ(stored, obj(R"({"$metadata":{"$lastUpdated":"T2","$lastUpdatedVersion":3}})"));
}

// --- validation ---

TEST(TwinValidationTest, AcceptsOrdinaryDocuments) {
  EXPECT_TRUE(
      validate(R"({"a":1,"b":"x","c":true,"d":null,"e":1.5,"f":[1,{"g":2}],"h":{}})").isOk());
  EXPECT_TRUE(validate(R"({"naïve-key_with:punctuation#!":1})").isOk());
}

TEST(TwinValidationTest, RejectsForbiddenCharactersInKeysNamingThePath) {
  for (const char* text : {R"({"$version":1})", R"({"a.b":1})", R"({"a b":1})", R"({"a\u0001":1})",
                           R"({"a\u007f":1})", R"({"a\u0085":1})", R"({"":1})"}) {
    Status s = validate(text);
    EXPECT_EQ(s.code(), ErrorCode::ArgumentInvalid) << text;
    EXPECT_NE(s.message().find("properties.desired"), std::string::npos) << s.message();
  }
  Status nested = validate(R"({"outer":{"in ner":1}})");
  EXPECT_NE(nested.message().find("properties.desired.outer"), std::string::npos)
      << nested.message();
  EXPECT_NE(nested.message().find("'in ner'"), std::string::npos) << nested.message();
  Status in_array = validate(R"({"list":[1,{"$x":1}]})");
  EXPECT_NE(in_array.message().find("properties.desired.list[1]"), std::string::npos)
      << in_array.message();
}

TEST(TwinValidationTest, KeysUpTo1024Bytes) {
  json::object ok{{std::string(1024, 'k'), 1}};
  json::object too_long{{std::string(1025, 'k'), 1}};
  EXPECT_TRUE(validateSectionPatch(ok, "tags").isOk());
  Status s = validateSectionPatch(too_long, "tags");
  EXPECT_EQ(s.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(s.message().find("1025"), std::string::npos) << s.message();
}

TEST(TwinValidationTest, StringsUpTo4096Bytes) {
  json::object ok{{"s", std::string(4096, 'x')}};
  json::object too_long{{"s", std::string(4097, 'x')}};
  json::object in_array{{"s", json::array{std::string(4097, 'x')}}};
  EXPECT_TRUE(validateSectionPatch(ok, "tags").isOk());
  Status s = validateSectionPatch(too_long, "tags");
  EXPECT_EQ(s.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(s.message().find("tags.s"), std::string::npos) << s.message();
  EXPECT_EQ(validateSectionPatch(in_array, "tags").code(), ErrorCode::ArgumentInvalid);
}

TEST(TwinValidationTest, IntegersWithin53Bits) {
  EXPECT_TRUE(validate(R"({"i":4503599627370495})").isOk());
  EXPECT_TRUE(validate(R"({"i":-4503599627370496})").isOk());
  EXPECT_EQ(validate(R"({"i":4503599627370496})").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(validate(R"({"i":-4503599627370497})").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(validate(R"({"i":18446744073709551615})").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(validate(R"({"o":{"l":[4503599627370496]}})").code(), ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(validate(R"({"d":1e300})").isOk());
}

// Ten nested objects below the section root, the deepest example the Azure docs accept.
TEST(TwinValidationTest, NestingUpTo10Levels) {
  std::string ten =
      R"({"l1":{"l2":{"l3":{"l4":{"l5":{"l6":{"l7":{"l8":{"l9":{"l10":{"leaf":1}}}}}}}}}}})";
  std::string eleven =
      R"({"l1":{"l2":{"l3":{"l4":{"l5":{"l6":{"l7":{"l8":{"l9":{"l10":{"l11":{}}}}}}}}}}}})";
  std::string arrays = R"({"l1":{"l2":{"l3":{"l4":{"l5":{"l6":{"l7":{"l8":{"l9":[[[1]]]}}}}}}}}})";
  EXPECT_TRUE(validate(ten).isOk());
  Status s = validate(eleven);
  EXPECT_EQ(s.code(), ErrorCode::ArgumentInvalid);
  EXPECT_NE(s.message().find("l10.l11"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("10"), std::string::npos) << s.message();
  EXPECT_EQ(validate(arrays).code(), ErrorCode::ArgumentInvalid);
}

// --- size ---

TEST(TwinSizeTest, CountsKeysAndValuesAsAzureDocuments) {
  EXPECT_EQ(azureSectionSize(obj(R"({"ab":"cde"})")), 5u);
  EXPECT_EQ(azureSectionSize(obj(R"({"n":1,"d":2.5,"b":true})")), 1u + 8 + 1 + 8 + 1 + 4);
  EXPECT_EQ(azureSectionSize(obj(R"({"o":{"ab":"c"},"l":["xy",1]})")), 1u + 3 + 1 + 2 + 8);
  EXPECT_EQ(azureSectionSize(obj(R"({"gone":null})")), 0u);
  EXPECT_EQ(azureSectionSize(obj(R"({"a":"x","$metadata":{"$lastUpdated":"2023"}})")), 2u);
}

TEST(TwinSizeTest, AzureAccountingCountsCharactersNotBytesAndSkipsControlCharacters) {
  EXPECT_EQ(azureSectionSize(obj(R"({"é":"日本"})")), 3u);
  EXPECT_EQ(azureSectionSize(obj(R"({"s":"a\n\tb\u0085"})")), 3u);
}

TEST(TwinSizeTest, IsTheLargerOfAzuresCountAndTheCompactJson) {
  // Strings: the JSON (quotes, colons, commas) is larger than Azure's count.
  EXPECT_EQ(twinSize(obj(R"({"ab":"cde"})")), std::string(R"({"ab":"cde"})").size());
  // Numbers: Azure's 8 bytes each are larger than the JSON.
  EXPECT_EQ(twinSize(obj(R"({"n":1,"m":2,"o":3})")), 3u * (1 + 8));
}

TEST(TwinSizeTest, LimitsEachSectionAtItsBoundary) {
  EXPECT_EQ(twinSize(documentOfSize(8192)), 8192u);
  EXPECT_TRUE(checkSectionSize(documentOfSize(8192), Section::Tags).isOk());
  Status tags = checkSectionSize(documentOfSize(8193), Section::Tags);
  EXPECT_EQ(tags.code(), ErrorCode::MessageTooLarge);
  EXPECT_NE(tags.message().find("tags"), std::string::npos);
  EXPECT_TRUE(checkSectionSize(documentOfSize(32768), Section::Desired).isOk());
  EXPECT_EQ(checkSectionSize(documentOfSize(32769), Section::Desired).code(),
            ErrorCode::MessageTooLarge);
  EXPECT_TRUE(checkSectionSize(documentOfSize(32768), Section::Reported).isOk());
  EXPECT_EQ(checkSectionSize(documentOfSize(32769), Section::Reported).code(),
            ErrorCode::MessageTooLarge);
}

// Regression: arrays of values Azure's accounting counts as nothing let five 270 KB reported
// patches through and grew a twin to 1.1 MB.
TEST(TwinSizeTest, ArraysOfNullsCountTheirJson) {
  json::object nulls = arrayOf("k0", nullptr, 45000);
  EXPECT_GE(twinSize(nulls), toJson(nulls).size());
  Status s = checkSectionSize(nulls, Section::Reported);
  EXPECT_EQ(s.code(), ErrorCode::MessageTooLarge);
  EXPECT_NE(s.message().find("properties.reported"), std::string::npos) << s.message();
  EXPECT_EQ(checkSectionSize(arrayOf("k0", nullptr, 7000), Section::Desired).code(),
            ErrorCode::MessageTooLarge);
}

TEST(TwinSizeTest, EmptyStringsEmptyContainersAndControlCharactersCountTheirJson) {
  for (const json::value& element :
       {json::value(""), json::value(json::object()), json::value(json::array()),
        json::value("\x01\x02\x03"), json::value("\n\t\u0085"), json::value(false)}) {
    json::object section = arrayOf("k", element, 12000);
    EXPECT_GE(twinSize(section), toJson(section).size()) << toJson(element);
    EXPECT_EQ(checkSectionSize(section, Section::Reported).code(), ErrorCode::MessageTooLarge)
        << toJson(element);
    EXPECT_EQ(checkSectionSize(section, Section::Desired).code(), ErrorCode::MessageTooLarge)
        << toJson(element);
  }
  // Control characters in a string: 4096 of them are 24 KB of JSON escapes.
  json::object escapes{{"a", std::string(4096, '\x01')}, {"b", std::string(4096, '\x02')}};
  EXPECT_GE(twinSize(escapes), toJson(escapes).size());
  EXPECT_EQ(checkSectionSize(escapes, Section::Desired).code(), ErrorCode::MessageTooLarge);
}

TEST(TwinSizeTest, IsNeverBelowTheCompactJsonOfTheSection) {
  for (const char* text : {
           R"({})",
           R"({"ab":"cde"})",
           R"({"n":1,"d":2.5e-300,"b":true,"f":false,"big":4503599627370495,"neg":-7})",
           R"({"o":{"ab":"c","e":{}},"l":["xy",1,null,[],[[null]],{"k":null}]})",
           R"({"q":"a\"b\\c\/d","u":"\u00e9\u65e5\u0000\u001f\u007f\u0085"})",
       }) {
    json::object section = obj(text);
    EXPECT_EQ(serializedSectionSize(section), toJson(section).size()) << text;
    EXPECT_GE(twinSize(section), toJson(section).size()) << text;
    EXPECT_GE(twinSize(section), azureSectionSize(section)) << text;
  }
}

TEST(TwinSizeTest, APatchCountsWhatMergingItLeaves) {
  // Null members of objects delete, so they cost nothing; nulls inside arrays are stored.
  json::object patch = obj(R"({"gone":null,"o":{"x":null,"y":1},"l":[null,{"k":null}]})");
  EXPECT_EQ(serializedSectionSize(patch), toJson(withoutNulls(patch)).size());
  EXPECT_EQ(toJson(withoutNulls(patch)), R"({"o":{"y":1},"l":[null,{"k":null}]})");
  // "$metadata" at the top of a stored section is not counted.
  EXPECT_EQ(twinSize(obj(R"({"a":"x","$metadata":{"$lastUpdated":"2023"}})")),
            twinSize(obj(R"({"a":"x"})")));
}

TEST(TwinSizeTest, AcceptsOrdinaryTwinsBelowTheLimit) {
  // A realistic reported section of about 30 KB: a hundred readings with names and units.
  json::object reported;
  for (int i = 0; i < 100; ++i) {
    reported["sensor" + std::to_string(i)] = json::object{
        {"value", 21.5 + i}, {"unit", "celsius"}, {"ok", true}, {"note", std::string(240, 'n')}};
  }
  EXPECT_GT(toJson(reported).size(), 30000u);
  EXPECT_LT(toJson(reported).size(), 32768u);
  EXPECT_TRUE(checkSectionSize(reported, Section::Reported).isOk())
      << checkSectionSize(reported, Section::Reported).toString();
  // {"k":[null,...]} is 5 × count + 7 bytes: 6552 nulls fit in 32 KB, 6553 do not.
  EXPECT_TRUE(checkSectionSize(arrayOf("k", nullptr, 6552), Section::Reported).isOk());
  EXPECT_EQ(checkSectionSize(arrayOf("k", nullptr, 6553), Section::Reported).code(),
            ErrorCode::MessageTooLarge);
}

}  // namespace
}  // namespace iothub::twin
