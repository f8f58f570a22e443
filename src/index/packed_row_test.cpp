#include "index/packed_row.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "query/query.hpp"

namespace iothub::index {
namespace {

// A twin's service view as the hub writes it (twin/twin_json.hpp), ~2 KB of JSON.
constexpr std::string_view kTwin = R"({
  "deviceId": "device-0000007", "etag": "AAAAAAAAAAM=", "deviceEtag": "Uv2nYEnT5ak=",
  "status": "enabled", "statusUpdateTime": "2024-01-01T00:00:07.0000000Z",
  "connectionState": "Disconnected", "lastActivityTime": "2024-01-01T01:09:57.0000000Z",
  "cloudToDeviceMessageCount": 0, "authenticationType": "sas",
  "x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
  "capabilities": {"iotEdge": false}, "modelId": "", "version": 3,
  "tags": {"location": {"region": "eastus", "building": "b27", "floor": 7},
           "serial": "SN-0067778", "customer": "cust-035", "mode": "normal"},
  "properties": {
    "desired": {"fw": "1.5.0", "interval": 30, "telemetry": {"enabled": true},
      "thresholds": {"tempHigh": 35.0, "tempLow": 5.0},
      "$metadata": {"$lastUpdated": "2024-01-01T00:50:07.0000000Z", "$lastUpdatedVersion": 2,
        "fw": {"$lastUpdated": "2024-01-01T00:50:07.0000000Z", "$lastUpdatedVersion": 2},
        "interval": {"$lastUpdated": "2024-01-01T00:50:07.0000000Z", "$lastUpdatedVersion": 2},
        "telemetry": {"$lastUpdated": "2024-01-01T00:50:07.0000000Z", "$lastUpdatedVersion": 2,
          "enabled": {"$lastUpdated": "2024-01-01T00:50:07.0000000Z", "$lastUpdatedVersion": 2}},
        "thresholds": {"$lastUpdated": "2024-01-01T00:50:07.0000000Z", "$lastUpdatedVersion": 2,
          "tempHigh": {"$lastUpdated": "2024-01-01T00:50:07.0000000Z", "$lastUpdatedVersion": 2},
          "tempLow": {"$lastUpdated": "2024-01-01T00:50:07.0000000Z", "$lastUpdatedVersion": 2}}},
      "$version": 2},
    "reported": {"fw": "1.5.0", "temp": 29.7, "battery": 53, "online": true, "uptime": 665067,
      "network": {"type": "wifi", "rssi": -80},
      "$metadata": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z",
        "fw": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z"},
        "temp": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z"},
        "battery": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z"},
        "online": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z"},
        "uptime": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z"},
        "network": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z",
          "type": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z"},
          "rssi": {"$lastUpdated": "2024-01-01T01:09:57.0000000Z"}}},
      "$version": 2}}})";

json::object object(std::string_view text) { return json::parse(text).as_object(); }

// Encodes `o` and expects decode() to give back an object that serializes identically
// (member order, number kinds and all).
void expectRoundTrip(const json::object& o) {
  PackedRowPtr row = PackedRow::encode(o);
  ASSERT_TRUE(row);
  json::object back = row->decode();
  EXPECT_EQ(back, o);
  EXPECT_EQ(json::serialize(back), json::serialize(o));
}

// Every path through `o` (and one missing member below each object, and one below each
// non-object), as query::Path.
void collectPaths(const json::object& o, std::vector<std::string> prefix,
                  std::vector<query::Path>& out) {
  auto missing = prefix;
  missing.push_back("no-such-member");
  out.push_back(query::Path{missing});
  for (const auto& member : o) {
    auto keys = prefix;
    keys.emplace_back(member.key());
    out.push_back(query::Path{keys});
    if (member.value().is_object()) {
      collectPaths(member.value().get_object(), keys, out);
    } else {
      keys.push_back("below-a-leaf");
      out.push_back(query::Path{keys});
    }
  }
}

// Packed resolve() agrees with Path::resolve on the JSON object for every path in it.
void expectResolveAgrees(const json::object& o) {
  PackedRowPtr row = PackedRow::encode(o);
  std::vector<query::Path> paths;
  collectPaths(o, {}, paths);
  for (const auto& path : paths) {
    const json::value* expected = path.resolve(o);
    query::Value got = row->resolve(path);
    ASSERT_EQ(got.isDefined(), expected != nullptr) << path.toString();
    if (expected != nullptr) {
      EXPECT_EQ(got.get(), *expected) << path.toString();
    }
  }
}

TEST(PackedRowTest, ATwinPacksIntoAThirdOfItsJsonText) {
  json::object twin = object(kTwin);
  expectRoundTrip(twin);
  expectResolveAgrees(twin);
  PackedRowPtr row = PackedRow::encode(twin);
  std::size_t text = json::serialize(twin).size();
  // 1 988 bytes of JSON; the DOM it replaces took ~6 KB (docs/benchmarks.md).
  EXPECT_LT(row->size(), text * 35 / 100) << "packed " << row->size() << " of " << text;
}

TEST(PackedRowTest, EveryKindOfValueRoundTrips) {
  json::object o;
  o["null"] = nullptr;
  o["t"] = true;
  o["f"] = false;
  o["zero"] = 0;
  o["neg"] = -1;
  o["i64min"] = std::numeric_limits<std::int64_t>::min();
  o["i64max"] = std::numeric_limits<std::int64_t>::max();
  o["u64max"] = std::numeric_limits<std::uint64_t>::max();
  o["half"] = 0.5;
  o["negzero"] = -0.0;
  o["big"] = 1e300;
  o["integral double"] = 35.0;
  o["empty string"] = "";
  o["long string"] = std::string(300, 'x');  // a two-byte length
  o["nul"] = json::string(std::string_view("a\0b", 3));
  o["unicode"] = "h\u00e9llo \u2603";
  o["empty object"] = json::object();
  o["empty array"] = json::array();
  o["array"] =
      json::array{1, "two", json::object{{"three", 3}}, json::array{json::array{}}, nullptr};
  o[""] = "an empty member name";
  o[std::string(200, 'k')] = "a long member name";
  expectRoundTrip(o);
  expectResolveAgrees(o);
  PackedRowPtr row = PackedRow::encode(o);
  EXPECT_TRUE(row->resolve(query::Path{{"u64max"}}).get().is_uint64());
  EXPECT_TRUE(row->resolve(query::Path{{"integral double"}}).get().is_double());
  EXPECT_TRUE(std::signbit(row->resolve(query::Path{{"negzero"}}).get().get_double()));
}

TEST(PackedRowTest, OnlyExactAzureTimestampsArePackedAsTimestamps) {
  const std::vector<std::string> exact = {
      "2024-01-01T00:00:07.0000000Z", "1969-12-31T23:59:59.9999999Z",
      "0001-01-01T00:00:00.0000000Z", "9999-12-31T23:59:59.9999999Z",
      "2024-02-29T12:34:56.7050295Z", "1970-01-01T00:00:00.0000000Z"};
  for (const auto& s : exact) {
    json::object o{{"t", s}};
    expectRoundTrip(o);
    // object tag, length, count, key, value tag, ticks
    EXPECT_EQ(PackedRow::encode(o)->size(), 1u + 1 + 1 + 1 + 1 + 8) << s;
  }
  // Look-alikes stay strings and come back byte for byte.
  const std::vector<std::string> others = {
      "2023-02-29T00:00:00.0000000Z",  // no such day
      "2024-01-01T24:00:00.0000000Z",  "2024-01-01T00:60:00.0000000Z",
      "2024-01-01T00:00:60.0000000Z",  "0000-01-01T00:00:00.0000000Z",
      "2024-01-01t00:00:00.0000000Z",  "2024-01-01T00:00:00.0000000z",
      "2024-01-01T00:00:00.000000Z",    // six digits
      "2024-01-01T00:00:00.00000000Z",  // eight
      "2024-01-01T00:00:00Z",          "0001-01-01T00:00:00Z",
      "2024-13-01T00:00:00.0000000Z",  "2024-1a-01T00:00:00.0000000Z",
      "+024-01-01T00:00:00.0000000Z"};
  for (const auto& s : others) {
    json::object o{{"t", s}};
    expectRoundTrip(o);
    EXPECT_EQ(PackedRow::encode(o)->size(), 1u + 1 + 1 + 1 + 1 + 1 + s.size()) << s;
  }
}

TEST(PackedRowTest, DeepNestingRoundTrips) {
  json::value v = 1;
  for (int i = 0; i < 40; ++i) v = json::object{{"n" + std::to_string(i % 3), std::move(v)}};
  json::object o = v.as_object();
  expectRoundTrip(o);
  expectResolveAgrees(o);
}

TEST(PackedRowTest, ConditionsMatchPackedRowsAsTheyMatchJson) {
  json::object twin = object(kTwin);
  PackedRowPtr row = PackedRow::encode(twin);
  for (std::string_view text :
       {"tags.location.floor = 7", "tags.location.floor > 7", "properties.reported.temp > 29.5",
        "properties.desired.thresholds.tempHigh = 35", "properties.reported.online = true",
        "tags.serial IN ['SN-0067778', 'x']", "statusUpdateTime < '2024-01-01T00:00:08Z'",
        "IS_OBJECT(tags.location)", "STARTSWITH(deviceId, 'device-')",
        "properties.desired.$metadata.fw.$lastUpdatedVersion = 2", "tags.missing = 1",
        "NOT (tags.location.region = 'westus')", "capabilities.iotEdge = false"}) {
    auto condition = query::parseCondition(text);
    ASSERT_TRUE(condition.isOk()) << text << ": " << condition.status().toString();
    EXPECT_EQ(condition->matches(PackedRowView(*row)), condition->matches(twin)) << text;
  }
}

TEST(PackedRowTest, NamesBeyondTheDictionaryAreStoredInline) {
  // Fill the process-wide dictionary; later names are written inline, earlier ones keep
  // their ids, and both kinds resolve and round-trip.
  json::object known{{"kept-name", 1}};
  PackedRowPtr before = PackedRow::encode(known);
  json::object many;
  for (std::size_t i = 0;
       PackedRow::dictionarySize() + many.size() <= PackedRow::kMaxDictionaryKeys; ++i) {
    many["filler-" + std::to_string(i)] = i;
  }
  PackedRow::encode(many);
  ASSERT_EQ(PackedRow::dictionarySize(), PackedRow::kMaxDictionaryKeys);
  json::object late{{"a-name-after-the-dictionary-filled", json::object{{"kept-name", 2}}}};
  PackedRowPtr row = PackedRow::encode(late);
  EXPECT_EQ(PackedRow::dictionarySize(), PackedRow::kMaxDictionaryKeys);
  expectRoundTrip(late);
  expectResolveAgrees(late);
  EXPECT_EQ(before->decode(), known);
  EXPECT_EQ(row->resolve(query::Path{{"a-name-after-the-dictionary-filled", "kept-name"}}).get(),
            2);
}

TEST(PackedRowTest, ReadersAndWritersOnManyThreads) {
  // Readers resolve and decode shared rows while writers intern new names (run under TSan).
  json::object twin = object(kTwin);
  PackedRowPtr shared = PackedRow::encode(twin);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &twin, shared] {
      for (int i = 0; i < 200; ++i) {
        if (t % 2 == 0) {
          json::object o{{"thread" + std::to_string(t) + "-" + std::to_string(i), i}};
          PackedRowPtr mine = PackedRow::encode(o);
          EXPECT_EQ(mine->decode(), o);
        } else {
          PackedRowPtr copy = shared;
          EXPECT_EQ(copy->resolve(query::Path{{"tags", "location", "floor"}}).get(), 7);
          if (i % 50 == 0) {
            EXPECT_EQ(copy->decode(), twin);
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
}

}  // namespace
}  // namespace iothub::index
