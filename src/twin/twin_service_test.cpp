#include "twin/twin_service.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/time_format.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/temp_dir.hpp"
#include "twin/twin_document.hpp"
#include "twin/twin_test_support.hpp"

namespace iothub::twin {
namespace {

using test_support::arrayOf;
using test_support::obj;

json::value val(std::string_view text) { return json::value(obj(text)); }

class RecordingListener final : public DesiredChangeListener {
 public:
  void onDesiredChanged(const DesiredChange& change) override {
    std::lock_guard lock(mutex_);
    changes_.push_back(change);
  }
  std::vector<DesiredChange> changes() const {
    std::lock_guard lock(mutex_);
    return changes_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<DesiredChange> changes_;
};

class FixedConnections final : public registry::ConnectionStates {
 public:
  bool isConnected(std::string_view device_id) const override { return device_id == "online"; }
  void disconnect(std::string_view, std::string) override {}
};

class TwinServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = store::SqliteStore::open(dir_.path() / "hub.db",
                                           store::SqliteOptions{.synchronous_full = false});
    ASSERT_TRUE(opened.isOk()) << opened.status().toString();
    store_ = std::move(opened).value();
    service_ = std::make_unique<TwinService>(*store_, clock_, &connections_, &listener_);
    addDevice("dev1");
  }

  void addDevice(const std::string& id) {
    store::DeviceRecord device;
    device.device_id = id;
    device.etag = "ZGV2aWNl";
    store::TwinRecord twin;
    twin.device_id = id;
    ASSERT_TRUE(store_->registry().createDevice(device, twin).isOk());
  }

  json::object twinOf(std::string_view id) {
    auto twin = service_->getTwin(id);
    EXPECT_TRUE(twin.isOk()) << twin.status().toString();
    return twin.isOk() ? *twin : json::object{};
  }

  static const json::object& desiredOf(const json::object& twin) {
    return twin.at("properties").at("desired").as_object();
  }
  static const json::object& reportedOf(const json::object& twin) {
    return twin.at("properties").at("reported").as_object();
  }

  iothub::testing::TempDir dir_{"iothub-twin-test"};
  FakeClock clock_;
  FixedConnections connections_;
  RecordingListener listener_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<TwinService> service_;
};

TEST_F(TwinServiceTest, UnknownDevicesAreNotFound) {
  EXPECT_EQ(service_->getTwin("nope").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(service_->patchTwin("nope", val(R"({"tags":{"a":1}})"), "*").code(),
            ErrorCode::DeviceNotFound);
  EXPECT_EQ(service_->replaceTwin("nope", val("{}"), "").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(service_->deviceGetTwin("nope").code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(service_->devicePatchReported("nope", val(R"({"a":1})")).code(),
            ErrorCode::DeviceNotFound);
  EXPECT_EQ(service_->applyJobUpdate("nope", obj(R"({"etag":"*","tags":{"a":1}})")).code(),
            ErrorCode::DeviceNotFound);
  EXPECT_TRUE(listener_.changes().empty());
}

TEST_F(TwinServiceTest, FreshTwinStartsAtVersionOne) {
  json::object twin = twinOf("dev1");
  EXPECT_EQ(twin.at("version"), 1);
  EXPECT_EQ(twin.at("etag"), "AAAAAAAAAAE=");
  EXPECT_EQ(twin.at("deviceEtag"), "ZGV2aWNl");
  EXPECT_EQ(twin.at("tags"), json::object{});
  EXPECT_EQ(desiredOf(twin).at("$version"), 1);
  EXPECT_EQ(reportedOf(twin).at("$version"), 1);
  auto device_view = service_->deviceGetTwin("dev1");
  ASSERT_TRUE(device_view.isOk());
  EXPECT_EQ(toJson(*device_view), R"({"desired":{"$version":1},"reported":{"$version":1}})");
}

TEST_F(TwinServiceTest, PatchMergesTagsAndDesiredAndReturnsTheNewTwin) {
  auto first = service_->patchTwin("dev1", val(R"({"tags":{"site":"a","floor":1},
      "properties":{"desired":{"rate":5,"cfg":{"x":1,"y":2}}}})"),
                                   "");
  ASSERT_TRUE(first.isOk()) << first.status().toString();
  auto second = service_->patchTwin(
      "dev1", val(R"({"tags":{"floor":null},"properties":{"desired":{"cfg":{"y":null,"z":3}}}})"),
      "");
  ASSERT_TRUE(second.isOk()) << second.status().toString();
  EXPECT_EQ(second->at("tags"), obj(R"({"site":"a"})"));
  EXPECT_EQ(propertiesOf(desiredOf(*second)),
            obj(R"({"rate":5,"cfg":{"x":1,"z":3},"$version":3})"));
  EXPECT_EQ(second->at("version"), 3);
  EXPECT_EQ(second->at("etag"), json::value(twinEtag(3)));
  EXPECT_EQ(*second, twinOf("dev1"));
}

TEST_F(TwinServiceTest, VersionsGrowByExactlyOnePerChangeAndIndependently) {
  ASSERT_TRUE(service_->patchTwin("dev1", val(R"({"tags":{"a":1}})"), "").isOk());  // tags
  auto reported = service_->devicePatchReported("dev1", val(R"({"r":1})"));
  ASSERT_TRUE(reported.isOk());
  EXPECT_EQ(*reported, 2);
  reported = service_->devicePatchReported("dev1", val(R"({"r":1})"));  // same value
  ASSERT_TRUE(reported.isOk());
  EXPECT_EQ(*reported, 3);
  ASSERT_TRUE(service_->patchTwin("dev1", val(R"({"properties":{"desired":{"d":1}}})"), "").isOk());
  json::object twin = twinOf("dev1");
  EXPECT_EQ(twin.at("version"), 5);
  EXPECT_EQ(desiredOf(twin).at("$version"), 2);
  EXPECT_EQ(reportedOf(twin).at("$version"), 3);
  auto device_view = service_->deviceGetTwin("dev1");
  ASSERT_TRUE(device_view.isOk());
  EXPECT_EQ(toJson(*device_view),
            R"({"desired":{"d":1,"$version":2},"reported":{"r":1,"$version":3}})");
  // An empty reported patch changes nothing.
  reported = service_->devicePatchReported("dev1", val("{}"));
  ASSERT_TRUE(reported.isOk());
  EXPECT_EQ(*reported, 3);
  EXPECT_EQ(twinOf("dev1").at("version"), 5);
}

TEST_F(TwinServiceTest, RejectsPatchWithStaleEtag) {
  auto updated = service_->patchTwin("dev1", val(R"({"tags":{"a":1}})"), "AAAAAAAAAAE=");
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(updated->at("etag"), "AAAAAAAAAAI=");
  auto stale =
      service_->patchTwin("dev1", val(R"({"properties":{"desired":{"a":1}}})"), "AAAAAAAAAAE=");
  EXPECT_EQ(stale.code(), ErrorCode::PreconditionFailed);
  EXPECT_EQ(service_->replaceTwin("dev1", val("{}"), "\"AAAAAAAAAAE=\"").code(),
            ErrorCode::PreconditionFailed);
  EXPECT_TRUE(listener_.changes().empty());
  EXPECT_EQ(twinOf("dev1").at("version"), 2);
  EXPECT_TRUE(service_->patchTwin("dev1", val(R"({"tags":{"b":1}})"), "\"AAAAAAAAAAI=\"").isOk());
  EXPECT_TRUE(service_->patchTwin("dev1", val(R"({"tags":{"c":1}})"), "\"*\"").isOk());
}

TEST_F(TwinServiceTest, MetadataRecordsTimeAndDesiredVersionOnNestedLevels) {
  std::string t1 = formatTimestamp(clock_.now());
  ASSERT_TRUE(service_
                  ->patchTwin("dev1",
                              val(R"({"properties":{"desired":{"cfg":{"a":{"b":1}},"other":1}}})"),
                              "")
                  .isOk());
  clock_.advance(std::chrono::seconds(5));
  std::string t2 = formatTimestamp(clock_.now());
  ASSERT_TRUE(
      service_->patchTwin("dev1", val(R"({"properties":{"desired":{"cfg":{"a":{"c":2}}}}})"), "")
          .isOk());
  ASSERT_TRUE(service_->devicePatchReported("dev1", val(R"({"fw":{"v":"1.0"}})")).isOk());

  json::object twin = twinOf("dev1");
  const json::object& metadata = desiredOf(twin).at("$metadata").as_object();
  EXPECT_EQ(metadata.at("$lastUpdated"), json::value(t2));
  EXPECT_EQ(metadata.at("$lastUpdatedVersion"), 3);
  EXPECT_EQ(metadata.at("cfg").at("$lastUpdatedVersion"), 3);
  EXPECT_EQ(metadata.at("cfg").at("a").at("$lastUpdated"), json::value(t2));
  EXPECT_EQ(metadata.at("cfg").at("a").at("b"),
            (json::object{{"$lastUpdated", t1}, {"$lastUpdatedVersion", 2}}));
  EXPECT_EQ(metadata.at("cfg").at("a").at("c"),
            (json::object{{"$lastUpdated", t2}, {"$lastUpdatedVersion", 3}}));
  EXPECT_EQ(metadata.at("other"), (json::object{{"$lastUpdated", t1}, {"$lastUpdatedVersion", 2}}));
  EXPECT_EQ(reportedOf(twin).at("$metadata"),
            (json::object{{"$lastUpdated", t2},
                          {"fw", json::object{{"$lastUpdated", t2},
                                              {"v", json::object{{"$lastUpdated", t2}}}}}}));
}

TEST_F(TwinServiceTest, NullsOutAllTagsAndDesired) {
  ASSERT_TRUE(
      service_
          ->patchTwin("dev1",
                      val(R"({"tags":{"a":1,"b":2},"properties":{"desired":{"x":1,"y":{"z":2}}}})"),
                      "")
          .isOk());
  auto cleared =
      service_->patchTwin("dev1", val(R"({"tags":null,"properties":{"desired":null}})"), "");
  ASSERT_TRUE(cleared.isOk()) << cleared.status().toString();
  EXPECT_EQ(cleared->at("tags"), json::object{});
  EXPECT_EQ(propertiesOf(desiredOf(*cleared)), obj(R"({"$version":3})"));
  auto changes = listener_.changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(toJson(changes[1].patch), R"({"x":null,"y":null,"$version":3})");
}

TEST_F(TwinServiceTest, ListenerGetsOneCallPerDesiredChangeWithItsVersion) {
  ASSERT_TRUE(service_->patchTwin("dev1", val(R"({"tags":{"t":1}})"), "").isOk());
  ASSERT_TRUE(service_->devicePatchReported("dev1", val(R"({"r":1})")).isOk());
  EXPECT_TRUE(listener_.changes().empty());

  ASSERT_TRUE(
      service_
          ->patchTwin(
              "dev1",
              val(R"({"properties":{"desired":{"telemetrySendFrequency":"5m","route":null}}})"), "")
          .isOk());
  ASSERT_TRUE(
      service_->patchTwin("dev1", val(R"({"properties":{"desired":{"a":{"b":1}}}})"), "").isOk());
  auto changes = listener_.changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(changes[0].device_id, "dev1");
  EXPECT_EQ(changes[0].desired_version, 2);
  EXPECT_EQ(toJson(changes[0].patch),
            R"({"telemetrySendFrequency":"5m","route":null,"$version":2})");
  EXPECT_EQ(changes[1].desired_version, 3);
  EXPECT_EQ(toJson(changes[1].patch), R"({"a":{"b":1},"$version":3})");
}

TEST_F(TwinServiceTest, ReplaceEmitsNullsForRemovedKeysAndKeepsReported) {
  ASSERT_TRUE(service_
                  ->patchTwin("dev1",
                              val(R"({"tags":{"old":1},"properties":{"desired":{"a":1,"b":2}}})"),
                              "")
                  .isOk());
  ASSERT_TRUE(service_->devicePatchReported("dev1", val(R"({"r":1})")).isOk());
  std::string etag = twinEtag(3);
  auto replaced = service_->replaceTwin(
      "dev1",
      val(R"({"deviceId":"dev1","tags":{"new":1},"properties":{"desired":{"b":2,"c":3},"reported":{"ignored":1}}})"),
      etag);
  ASSERT_TRUE(replaced.isOk()) << replaced.status().toString();
  EXPECT_EQ(replaced->at("tags"), obj(R"({"new":1})"));
  json::object desired = propertiesOf(desiredOf(*replaced));
  EXPECT_EQ(desired, obj(R"({"b":2,"c":3,"$version":3})"));
  EXPECT_EQ(propertiesOf(reportedOf(*replaced)), obj(R"({"r":1,"$version":2})"));
  auto changes = listener_.changes();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_EQ(toJson(changes[1].patch), R"({"a":null,"c":3,"$version":3})");
  EXPECT_EQ(changes[1].desired_version, 3);
}

TEST_F(TwinServiceTest, JobUpdateChecksAConcreteEtag) {
  auto updated = service_->applyJobUpdate(
      "dev1",
      obj(R"({"etag":"AAAAAAAAAAE=","tags":{"job":1},"properties":{"desired":{"d":1},"reported":{}}})"));
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(updated->version, 2);
  EXPECT_EQ(updated->tags, obj(R"({"job":1})"));
  auto stale = service_->applyJobUpdate("dev1", obj(R"({"etag":"AAAAAAAAAAE=","tags":{"job":2}})"));
  EXPECT_EQ(stale.code(), ErrorCode::PreconditionFailed);
  auto wildcard = service_->applyJobUpdate(
      "dev1", obj(R"({"etag":"*","properties":{"desired":{},"reported":{}},"tags":{"job":3}})"));
  ASSERT_TRUE(wildcard.isOk()) << wildcard.status().toString();
  EXPECT_EQ(service_->applyJobUpdate("dev1", obj(R"({"etag":5})")).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(service_->applyJobUpdate("dev1", obj(R"({"properties":{"reported":{"x":1}}})")).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(listener_.changes().size(), 1u);
}

TEST_F(TwinServiceTest, JobUpdateRecordsTheDevicesOutcomeWithTheTwin) {
  store::DeviceJobRecord done{.job_id = "job",
                              .device_id = "dev1",
                              .status = "completed",
                              .last_updated_time = clock_.now(),
                              .document = obj(R"({"jobType":"scheduleUpdateTwin"})")};
  store::DeviceJobWrite outcome{done, std::nullopt};
  auto updated = service_->applyJobUpdate(
      "dev1", obj(R"({"etag":"*","properties":{"desired":{"d":1}}})"), &outcome);
  ASSERT_TRUE(updated.isOk()) << updated.status().toString();
  EXPECT_EQ(listener_.changes().size(), 1u);
  EXPECT_EQ(store_->deviceJobs().listDeviceJobs("job", std::nullopt, "", 10).value(),
            std::vector<store::DeviceJobRecord>{done});

  // A refused update records nothing either.
  store::DeviceJobWrite other{done, std::nullopt};
  other.row.job_id = "job-2";
  EXPECT_EQ(
      service_->applyJobUpdate("dev1", obj(R"({"etag":"AAAAAAAAAAE=","tags":{"a":1}})"), &other)
          .code(),
      ErrorCode::PreconditionFailed);
  EXPECT_TRUE(store_->deviceJobs().listDeviceJobs("job-2", std::nullopt, "", 10)->empty());

  // Under a lease that is not held, the twin is not updated.
  store::JobRecord job{.job_id = "job-3",
                       .type = "scheduleUpdateTwin",
                       .status = "running",
                       .created_time = clock_.now(),
                       .start_time = clock_.now(),
                       .end_time = std::nullopt,
                       .document = {}};
  ASSERT_TRUE(store_->jobs().createJob(job).isOk());
  store::DeviceJobWrite fenced{done, store::JobLease{"job-3", 7}};
  fenced.row.job_id = "job-3";
  auto before = service_->getTwin("dev1");
  ASSERT_TRUE(before.isOk());
  EXPECT_EQ(service_->applyJobUpdate("dev1", obj(R"({"etag":"*","tags":{"b":2}})"), &fenced).code(),
            ErrorCode::JobLeaseLost);
  EXPECT_EQ(service_->getTwin("dev1").value(), *before);
  EXPECT_TRUE(store_->deviceJobs().listDeviceJobs("job-3", std::nullopt, "", 10)->empty());
  EXPECT_EQ(listener_.changes().size(), 1u);
}

TEST_F(TwinServiceTest, ValidationErrorsChangeNothing) {
  EXPECT_EQ(service_->patchTwin("dev1", val(R"({"desired":{"a":1}})"), "").code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(service_->patchTwin("dev1", json::value(json::array{}), "").code(),
            ErrorCode::IotHubFormatError);
  EXPECT_EQ(service_->devicePatchReported("dev1", val(R"({"$version":1})")).code(),
            ErrorCode::ArgumentInvalid);
  for (int i = 0; i < 8; ++i) {
    auto r = service_->devicePatchReported(
        "dev1", json::value(json::object{{"k" + std::to_string(i), std::string(4000, 'x')}}));
    ASSERT_TRUE(r.isOk()) << i << r.status().toString();
  }
  // 8 * (2 + 4000) = 32016 bytes stored; 800 more exceed 32 KB.
  auto over = service_->devicePatchReported(
      "dev1", json::value(json::object{{"k8", std::string(800, 'x')}}));
  EXPECT_EQ(over.code(), ErrorCode::MessageTooLarge);
  EXPECT_EQ(reportedOf(twinOf("dev1")).at("$version"), 9);
  EXPECT_EQ(twinOf("dev1").at("version"), 9);
}

TEST_F(TwinServiceTest, ReportsConnectionState) {
  addDevice("online");
  EXPECT_EQ(twinOf("online").at("connectionState"), "Connected");
  EXPECT_EQ(twinOf("dev1").at("connectionState"), "Disconnected");
  TwinService without_connections(*store_, clock_, nullptr, nullptr);
  auto twin = without_connections.getTwin("online");
  ASSERT_TRUE(twin.isOk());
  EXPECT_EQ(twin->at("connectionState"), "Disconnected");
}

TEST_F(TwinServiceTest, ConcurrentDesiredPatchesNotifyInVersionOrder) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 10;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kPerThread; ++i) {
        json::object desired{{"t" + std::to_string(t), i}};
        json::value body =
            json::object{{"properties", json::object{{"desired", std::move(desired)}}}};
        EXPECT_TRUE(service_->patchTwin("dev1", body, "").isOk());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  auto changes = listener_.changes();
  ASSERT_EQ(changes.size(), static_cast<std::size_t>(kThreads * kPerThread));
  for (std::size_t i = 0; i < changes.size(); ++i) {
    EXPECT_EQ(changes[i].desired_version, static_cast<std::int64_t>(i) + 2);
    EXPECT_EQ(changes[i].patch.at("$version"), changes[i].desired_version);
  }
  EXPECT_EQ(desiredOf(twinOf("dev1")).at("$version"), kThreads * kPerThread + 1);
}

// Regression: five reported patches of {"kN":[null x 45000]} (270 KB each) were accepted and
// the twin grew to 1.1 MB.
TEST_F(TwinServiceTest, ArraysAzuresCountMissesCannotGrowAnySection) {
  for (int i = 0; i < 5; ++i) {
    auto r = service_->devicePatchReported(
        "dev1", json::value(arrayOf("k" + std::to_string(i), nullptr, 45000)));
    EXPECT_EQ(r.code(), ErrorCode::MessageTooLarge) << i;
  }
  // Cumulative: 15 KB of JSON per patch, so the third patch of each path is refused.
  for (int i = 0; i < 4; ++i) {
    std::string key = "k" + std::to_string(i);
    auto reported = service_->devicePatchReported("dev1", json::value(arrayOf(key, nullptr, 3000)));
    json::object desired{{"properties", json::object{{"desired", arrayOf(key, "", 5000)}}}};
    auto patched = service_->patchTwin("dev1", json::value(desired), "*");
    json::object job{{"tags", arrayOf(key, "", 900)}};  // 2.7 KB of "" per job update
    auto updated = service_->applyJobUpdate("dev1", job);
    ErrorCode expected = i < 2 ? ErrorCode::Ok : ErrorCode::MessageTooLarge;
    EXPECT_EQ(reported.code(), expected) << i;
    EXPECT_EQ(patched.code(), expected) << i;
    EXPECT_EQ(updated.code(), i < 3 ? ErrorCode::Ok : ErrorCode::MessageTooLarge) << i;
  }
  json::object twin = twinOf("dev1");
  auto sizeOf = [](const json::object& section) {
    json::object properties = section;
    properties.erase("$metadata");
    properties.erase("$version");
    return toJson(properties).size();
  };
  EXPECT_LE(sizeOf(reportedOf(twin)), kMaxReportedSize);
  EXPECT_LE(sizeOf(desiredOf(twin)), kMaxDesiredSize);
  EXPECT_LE(toJson(twin.at("tags")).size(), kMaxTagsSize);

  // PUT /twins/{id} replaces with the same accounting.
  json::object replacement{{"tags", arrayOf("t", "\x01", 1000)},
                           {"properties", json::object{{"desired", arrayOf("d", nullptr, 10)}}}};
  EXPECT_EQ(service_->replaceTwin("dev1", json::value(replacement), "*").code(),
            ErrorCode::MessageTooLarge);
  replacement["tags"] = arrayOf("t", "\x01", 900);  // 900 × "\u0001", = 8.1 KB
  EXPECT_EQ(service_->replaceTwin("dev1", json::value(replacement), "*").code(), ErrorCode::Ok);
}

}  // namespace
}  // namespace iothub::twin
