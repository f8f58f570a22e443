#include "index/twin_index.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "index/index_test_support.hpp"
#include "index/indexed_store.hpp"
#include "query/query.hpp"

namespace iothub::index {
namespace {

using test_support::IndexedHub;
using test_support::parsed;

query::Condition where(std::string_view text) {
  auto c = query::parseCondition(text);
  EXPECT_TRUE(c.isOk()) << c.status().toString();
  return c ? *c : query::Condition();
}

std::vector<std::string> ids(const TwinIndex& index, std::string_view condition) {
  return index.select(where(condition));
}

// Every row of the index equals the service view the twin service computes from the store.
void expectIndexMatchesStore(IndexedHub& hub) {
  auto devices = hub.durable().registry().listDevices("", 100000);
  ASSERT_TRUE(devices.isOk());
  ASSERT_EQ(hub.index().size(), devices->size());
  for (const auto& d : *devices) {
    auto view = hub.twins().getTwin(d.device_id);
    ASSERT_TRUE(view.isOk());
    auto row = hub.index().find(d.device_id);
    ASSERT_NE(row, nullptr) << d.device_id;
    EXPECT_EQ(*row, *view) << d.device_id;
  }
}

TEST(TwinIndexTest, EveryWriteThroughTheStoreReachesTheIndex) {
  IndexedHub hub;
  hub.addDevice("a", R"({"site":"x"})");
  hub.addDevice("b");
  hub.addDevice("c");
  expectIndexMatchesStore(hub);
  hub.patch("b", R"({"tags":{"site":"y"},"properties":{"desired":{"rate":5}}})");
  ASSERT_TRUE(hub.twins().devicePatchReported("c", parsed(R"({"fw":"1.2"})")).isOk());
  registry::DeviceSpec disabled;
  disabled.status = store::DeviceStatus::Disabled;
  disabled.status_reason = "maintenance";
  ASSERT_TRUE(hub.registry().update("a", disabled, "*").isOk());
  expectIndexMatchesStore(hub);
  EXPECT_EQ(ids(hub.index(), "status = 'disabled'"), std::vector<std::string>{"a"});
  EXPECT_EQ(ids(hub.index(), "properties.reported.fw = '1.2'"), std::vector<std::string>{"c"});
  ASSERT_TRUE(hub.registry().remove("b", "*").isOk());
  expectIndexMatchesStore(hub);
  EXPECT_TRUE(ids(hub.index(), "tags.site = 'y'").empty());
  // Re-created with a fresh twin.
  hub.addDevice("b");
  expectIndexMatchesStore(hub);
  EXPECT_EQ(hub.index().find("b")->at("version"), 1);
}

TEST(TwinIndexTest, AJobsTwinUpdateReachesTheIndexWithItsOutcomeRow) {
  IndexedHub hub;
  hub.addDevice("a");
  store::DeviceJobWrite outcome{
      store::DeviceJobRecord{.job_id = "job",
                             .device_id = "a",
                             .status = "completed",
                             .last_updated_time = SystemTime{},
                             .document = json::object{{"jobType", "scheduleUpdateTwin"}}},
      std::nullopt};
  auto updated = hub.twins().applyJobUpdate(
      "a", parsed(R"({"etag":"*","tags":{"site":"z"}})").as_object(), &outcome);
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  expectIndexMatchesStore(hub);
  EXPECT_EQ(ids(hub.index(), "tags.site = 'z'"), std::vector<std::string>{"a"});
  auto rows = hub.durable().deviceJobs().listDeviceJobs("job", std::nullopt, "", 10);
  ASSERT_TRUE(rows.isOk());
  EXPECT_EQ(*rows, std::vector<store::DeviceJobRecord>{outcome.row});
}

TEST(TwinIndexTest, EveryEntryOfABulkRequestReachesTheIndex) {
  IndexedHub hub;
  hub.addDevice("gone");
  hub.addDevice("kept");
  hub.addDevice("off");
  auto kept = hub.index().find("kept");
  auto result = hub.registry().bulk(parsed(R"([
      {"id":"n1","importMode":"create"},
      {"id":"kept","importMode":"deleteIfMatchETag","etag":"stale"},
      {"id":"gone","importMode":"delete"},
      {"id":"off","importMode":"update","status":"disabled"},
      {"id":"n2","importMode":"create","status":"disabled"}])"));
  ASSERT_TRUE(result.isOk()) << result.status().toString();
  ASSERT_EQ(result->errors.size(), 1u);
  EXPECT_EQ(result->errors[0].device_id, "kept");
  expectIndexMatchesStore(hub);
  ASSERT_NE(hub.index().find("kept"), nullptr);
  EXPECT_EQ(*hub.index().find("kept"), *kept) << "a failed entry leaves its row alone";
  EXPECT_EQ(hub.index().find("gone"), nullptr);
  EXPECT_EQ(ids(hub.index(), "status = 'disabled'"), (std::vector<std::string>{"n2", "off"}));
}

TEST(TwinIndexTest, FailedWritesLeaveTheIndexAlone) {
  IndexedHub hub;
  hub.addDevice("a", R"({"n":1})");
  auto before = hub.index().find("a");
  EXPECT_EQ(hub.twins().patchTwin("a", parsed(R"({"tags":{"n":2}})"), "stale").code(),
            ErrorCode::PreconditionFailed);
  EXPECT_EQ(hub.registry().create("a", registry::DeviceSpec{}).code(),
            ErrorCode::DeviceAlreadyExists);
  ASSERT_NE(hub.index().find("a"), nullptr);
  EXPECT_EQ(*hub.index().find("a"), *before);
}

TEST(TwinIndexTest, LoadRebuildsFromTheStore) {
  IndexedHub hub;
  for (int i = 0; i < 2500; ++i)
    hub.addDevice("d" + std::to_string(10000 + i), R"({"k":)" + std::to_string(i % 3) + "}");
  TwinIndex fresh;
  ASSERT_TRUE(fresh.load(hub.durable(), [](std::string_view id) { return id == "d10001"; }).isOk());
  EXPECT_EQ(fresh.size(), 2500u);
  EXPECT_EQ(*fresh.find("d12499"), *hub.index().find("d12499"));
  EXPECT_EQ(fresh.find("d10001")->at("connectionState"), "Connected");
  EXPECT_EQ(fresh.select(where("tags.k = 1")).size(), 833u);
}

TEST(TwinIndexTest, ABackgroundLoadLetsWritesWinAndQueriesWait) {
  IndexedHub hub;
  for (int i = 0; i < 3000; ++i)
    hub.addDevice("d" + std::to_string(10000 + i), R"({"k":)" + std::to_string(i % 3) + "}");
  // A second index loads from the same store in the background while writes go through
  // an IndexedStore that tells it about them, as at a hub's startup.
  TwinIndex fresh;
  IndexedStore indexed(hub.durable(), fresh);
  FakeClock clock;
  SeededRandom random{11};
  registry::DeviceRegistry registry(indexed, random, clock);
  twin::TwinService twins(indexed, clock, nullptr, nullptr);
  std::atomic<bool> failed{false};
  fresh.startLoading(hub.durable(), [&failed](const Status&) { failed = true; });
  // Writes spread over the id range: most land before the load reaches their rows.
  for (int i = 2999; i >= 0; i -= 97) {
    std::string id = "d" + std::to_string(10000 + i);
    ASSERT_TRUE(twins.patchTwin(id, parsed(R"({"tags":{"k":7}})"), "*").isOk());
  }
  for (int i = 2950; i >= 0; i -= 301) {
    ASSERT_TRUE(registry.remove("d" + std::to_string(10000 + i), "*").isOk());
  }
  ASSERT_TRUE(registry.create("d12950", registry::DeviceSpec{}).isOk());  // deleted, re-created
  ASSERT_TRUE(registry.create("e-new", registry::DeviceSpec{}).isOk());
  fresh.setConnected("d12998", true);
  fresh.setConnected("d10001", true);
  // Queries wait for the load: they see every device, never part of the fleet.
  auto devices = hub.durable().registry().listDevices("", 100000);
  ASSERT_TRUE(devices.isOk());
  EXPECT_EQ(fresh.select(query::Condition()).size(), devices->size());
  fresh.waitLoaded();
  EXPECT_FALSE(failed);
  ASSERT_EQ(fresh.size(), devices->size());
  for (const auto& d : *devices) {
    auto view = twins.getTwin(d.device_id);
    ASSERT_TRUE(view.isOk());
    json::object expected = *view;
    if (d.device_id == "d12998" || d.device_id == "d10001") {
      expected["connectionState"] = "Connected";
    }
    auto row = fresh.find(d.device_id);
    ASSERT_NE(row, nullptr) << d.device_id;
    EXPECT_EQ(*row, expected) << d.device_id;
  }
  EXPECT_EQ(fresh.find("d12649"), nullptr);  // deleted
  EXPECT_EQ(fresh.select(where("tags.k = 7")).size(), 31u);
}

TEST(TwinIndexTest, ConnectionStateIsPartOfTheRow) {
  IndexedHub hub;
  hub.index().setConnected("early", true);  // connected before its row is known
  hub.addDevice("early");
  hub.addDevice("late");
  EXPECT_EQ(ids(hub.index(), "connectionState = 'Connected'"), std::vector<std::string>{"early"});
  hub.index().setConnected("late", true);
  hub.index().setConnected("early", false);
  EXPECT_EQ(ids(hub.index(), "connectionState = 'Connected'"), std::vector<std::string>{"late"});
  hub.patch("late", R"({"tags":{"a":1}})");  // a twin write keeps the connection state
  EXPECT_EQ(hub.index().find("late")->at("connectionState"), "Connected");
}

TEST(TwinIndexTest, PathIndexesAreBuiltOnDemandAndKeptUpToDate) {
  IndexedHub hub;
  for (int i = 0; i < 50; ++i)
    hub.addDevice("d" + std::to_string(100 + i), R"({"floor":)" + std::to_string(i % 5) + "}");
  EXPECT_EQ(hub.index().pathIndexCount(), 0u);
  EXPECT_EQ(ids(hub.index(), "tags.floor = 3").size(), 10u);
  EXPECT_EQ(hub.index().pathIndexCount(), 1u);
  // 3 and 3.0 are equal to the evaluator, so to the index too; strings are not numbers.
  EXPECT_EQ(ids(hub.index(), "tags.floor = 3.0").size(), 10u);
  EXPECT_TRUE(ids(hub.index(), "tags.floor = '3'").empty());
  hub.patch("d103", R"({"tags":{"floor":4}})");
  hub.patch("d100", R"({"tags":{"floor":3}})");
  ASSERT_TRUE(hub.registry().remove("d108", "*").isOk());
  hub.addDevice("d999", R"({"floor":3})");
  auto three = ids(hub.index(), "tags.floor = 3");
  EXPECT_EQ(three.size(), 10u);
  EXPECT_EQ(three.front(), "d100");
  EXPECT_EQ(three.back(), "d999");
  EXPECT_EQ(ids(hub.index(), "tags.floor IN [1, 3] AND deviceId > 'd140'").size(),
            5u);  // d141 d143 d146 d148 d999
  // The index never changes answers: compare with a plain scan for several conditions.
  for (std::string_view c :
       {"tags.floor = 3", "tags.floor IN [0, 2]", "tags.floor = 1 AND NOT (deviceId = 'd101')"}) {
    auto indexed = ids(hub.index(), c);
    std::vector<std::string> scanned;
    query::Condition cond = where(c);
    hub.index().scan(query::Condition(), "", [&](const std::string& id, const query::RowView& row) {
      if (cond.matches(row)) scanned.push_back(id);
      return true;
    });
    EXPECT_EQ(indexed, scanned) << c;
  }
}

TEST(TwinIndexTest, LeastRecentlyUsedPathIndexIsDroppedBeyondTheLimit) {
  IndexedHub hub;
  hub.addDevice("a", R"({"p0":1})");
  for (std::size_t i = 0; i <= TwinIndex::kMaxPathIndexes; ++i) {
    EXPECT_EQ(ids(hub.index(), "tags.p" + std::to_string(i) + " = 1").size(), i == 0 ? 1u : 0u);
  }
  EXPECT_EQ(hub.index().pathIndexCount(), TwinIndex::kMaxPathIndexes);
  EXPECT_EQ(ids(hub.index(), "tags.p0 = 1"), std::vector<std::string>{"a"});  // rebuilt
}

TEST(TwinIndexTest, DeviceIdLookupsUseThePrimaryOrder) {
  IndexedHub hub;
  for (std::string id : {"x", "y", "z"}) hub.addDevice(id);
  EXPECT_EQ(ids(hub.index(), "deviceId IN ['z', 'x', 'nope', 'x']"),
            (std::vector<std::string>{"x", "z"}));
  EXPECT_EQ(hub.index().pathIndexCount(), 0u);
  std::vector<std::string> after;
  hub.index().scan(where("deviceId IN ['x','y','z']"), "x",
                   [&](const std::string& id, const query::RowView&) {
                     after.push_back(id);
                     return id != "y";  // stops after y
                   });
  EXPECT_EQ(after, std::vector<std::string>{"y"});
}

TEST(TwinIndexTest, ScansSeeEachRowOnceWhileWritersRun) {
  IndexedHub hub;
  constexpr int kDevices = 3 * static_cast<int>(TwinIndex::kScanChunk) / 2;
  {
    TwinIndex& index = hub.index();
    // Fill the index directly (fast), then let writers churn it through its own API.
    for (int i = 0; i < kDevices; ++i) {
      store::DeviceRecord d;
      d.device_id = "d" + std::to_string(100000 + i);
      store::TwinRecord t;
      t.device_id = d.device_id;
      index.putDevice(d, t);
    }
  }
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int round = 0; !stop; ++round) {
      for (int i = 0; i < kDevices && !stop; i += 7) {
        store::TwinRecord t;
        t.device_id = "d" + std::to_string(100000 + i);
        t.version = round + 2;
        t.tags = json::object{{"round", round}};
        hub.index().updateTwin(t);
      }
    }
  });
  for (int pass = 0; pass < 5; ++pass) {
    std::vector<std::string> seen;
    hub.index().scan(query::Condition(), "", [&](const std::string& id, const query::RowView&) {
      seen.push_back(id);
      return true;
    });
    ASSERT_EQ(seen.size(), static_cast<std::size_t>(kDevices));
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  }
  stop = true;
  writer.join();
}

TEST(TwinIndexTest, PathIndexesBuiltWhileWritersRunMatchAPlainScan) {
  TwinIndex index;
  constexpr int kDevices = 5 * static_cast<int>(TwinIndex::kScanChunk);
  auto put = [&index](int i, int value, std::int64_t version) {
    store::TwinRecord t;
    t.device_id = "d" + std::to_string(100000 + i);
    t.version = version;
    t.tags = json::object{{"v", value}};
    index.updateTwin(t);
  };
  for (int i = 0; i < kDevices; ++i) {
    store::DeviceRecord d;
    d.device_id = "d" + std::to_string(100000 + i);
    store::TwinRecord t;
    t.device_id = d.device_id;
    t.tags = json::object{{"v", i % 10}};
    index.putDevice(d, t);
  }
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::int64_t version = 2;
    for (int round = 0; !stop; ++round, ++version) {
      for (int i = round % 13; i < kDevices && !stop; i += 13) put(i, (i + round) % 10, version);
      // Devices come and go on both sides of the build's cursor.
      store::DeviceRecord d;
      d.device_id = "d" + std::to_string(100000 + (round * 7919) % kDevices) + "x";
      store::TwinRecord t;
      t.device_id = d.device_id;
      t.tags = json::object{{"v", round % 10}};
      index.putDevice(d, t);
      if (round % 2) index.removeDevice(d.device_id);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(index.select(where("tags.v = 3")).size() > 0, true);  // builds the index meanwhile
  EXPECT_EQ(index.pathIndexCount(), 1u);
  stop = true;
  writer.join();
  for (int v = 0; v < 10; ++v) {
    query::Condition c = where("tags.v = " + std::to_string(v));
    std::vector<std::string> scanned;
    index.scan(query::Condition(), "", [&](const std::string& id, const query::RowView& row) {
      if (c.matches(row)) scanned.push_back(id);
      return true;
    });
    EXPECT_EQ(index.select(c), scanned) << v;
  }
}

TEST(TwinIndexTest, LateReportsOfOlderTwinVersionsAreIgnored) {
  TwinIndex index;
  store::DeviceRecord d;
  d.device_id = "a";
  store::TwinRecord t;
  t.device_id = "a";
  index.putDevice(d, t);
  t.version = 5;
  t.tags = json::object{{"v", 5}};
  index.updateTwin(t);
  t.version = 4;
  t.tags = json::object{{"v", 4}};
  index.updateTwin(t);
  EXPECT_EQ(index.find("a")->at("tags").at("v"), 5);
}

}  // namespace
}  // namespace iothub::index
