#include "telemetry/telemetry_log.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/time_format.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/sqlite_test_store.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::telemetry {
namespace {

using namespace std::chrono_literals;

class TelemetryLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = iothub::testing::openTestSqliteStore(dir_.path() / "hub.db");
    for (int i = 0; i < 16; ++i) addDevice("dev" + std::to_string(i));
    make();
  }

  void make(TelemetryOptions options = {}) {
    log_.reset();
    log_ = std::make_unique<TelemetryLog>(*store_, clock_, options);
  }

  void addDevice(const std::string& id, store::AuthType auth = store::AuthType::Sas) {
    store::DeviceRecord device = iothub::testing::testDevice(id);
    device.auth_type = auth;
    iothub::testing::createTestDevice(*store_, device);
  }

  static device_api::TelemetryMessage message(std::string device_id, std::string body = "hello",
                                              std::string message_id = {}) {
    device_api::TelemetryMessage m;
    m.device_id = std::move(device_id);
    m.body = std::move(body);
    m.message_id = std::move(message_id);
    m.source = "mqtt";
    return m;
  }

  void send(const std::string& device_id, std::string body = "hello") {
    Status sent = log_->accept(message(device_id, std::move(body)));
    ASSERT_TRUE(sent.isOk()) << sent.toString();
  }

  std::vector<EventRecord> readAll(std::int32_t partition, std::int64_t from = 0) {
    auto got = log_->read(partition, from, 100'000, 1ull << 40);
    EXPECT_TRUE(got.isOk()) << got.status().toString();
    return got.isOk() ? std::move(got).value() : std::vector<EventRecord>{};
  }

  // Two of the fixture's devices in different partitions.
  std::pair<std::string, std::string> devicesInTwoPartitions() {
    std::string first = "dev0";
    for (int i = 1; i < 16; ++i) {
      std::string other = "dev" + std::to_string(i);
      if (log_->partitionOf(other) != log_->partitionOf(first)) return {first, other};
    }
    ADD_FAILURE() << "all fixture devices share a partition";
    return {first, first};
  }

  iothub::testing::TempDir dir_{"iothub-telemetry-test"};
  FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<TelemetryLog> log_;
};

TEST(PartitionFor, StableAndSpread) {
  // FNV-1a 32: "" hashes to the offset basis 2166136261, "a" to 0xe40c292c.
  EXPECT_EQ(partitionFor("", 4), static_cast<std::int32_t>(2166136261u % 4));
  EXPECT_EQ(partitionFor("a", 4), static_cast<std::int32_t>(0xe40c292cu % 4));
  EXPECT_EQ(partitionFor("a", 32), static_cast<std::int32_t>(0xe40c292cu % 32));
  EXPECT_EQ(partitionFor("anything", 1), 0);
  std::map<std::int32_t, int> counts;
  for (int i = 0; i < 1000; ++i) {
    std::string id = "device-" + std::to_string(i);
    std::int32_t p = partitionFor(id, 4);
    ASSERT_GE(p, 0);
    ASSERT_LT(p, 4);
    EXPECT_EQ(partitionFor(id, 4), p);
    ++counts[p];
  }
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& [p, n] : counts) EXPECT_GT(n, 150) << "partition " << p;
}

TEST(Offset, RoundTrips) {
  EXPECT_EQ(offsetOf(0), "0");
  EXPECT_EQ(offsetOf(1234567890123), "1234567890123");
  EXPECT_EQ(parseOffset("42"), 42);
  EXPECT_EQ(parseOffset("0"), 0);
  EXPECT_FALSE(parseOffset(""));
  EXPECT_FALSE(parseOffset("-1"));
  EXPECT_FALSE(parseOffset("+1"));
  EXPECT_FALSE(parseOffset("1 "));
  EXPECT_FALSE(parseOffset("99999999999999999999"));
}

TEST_F(TelemetryLogTest, PartitionOfUsesTheHubsCount) {
  make(TelemetryOptions{.partitions = 8});
  EXPECT_EQ(log_->partitions(), 8);
  EXPECT_EQ(log_->partitionOf("dev3"), partitionFor("dev3", 8));
  make(TelemetryOptions{.partitions = 0});
  EXPECT_EQ(log_->partitions(), 1);
  EXPECT_EQ(log_->partitionOf("dev3"), 0);
}

TEST_F(TelemetryLogTest, EveryFieldReadsBackExactly) {
  addDevice("cert-dev", store::AuthType::CertificateAuthority);
  device_api::TelemetryMessage m = message("dev1", std::string("\0bin\0ary\xff\x00", 11), "mid-1");
  m.correlation_id = "cid-1";
  m.user_id = "uid-1";
  m.to = "/devices/dev1/messages/events";
  m.content_type = "application/json";
  m.content_encoding = "utf-8";
  m.interface_id = "urn:azureiot:ModelDiscovery:1";
  m.subject = "thermostat1";
  m.expiry = "2023-11-14T22:13:21.5Z";
  m.properties = {{"zeta", "1"}, {"alpha", ""}, {"$.on", "x&y"}, {"mid", "ünïcode"}};
  const SystemTime enqueued = clock_.now();
  ASSERT_TRUE(log_->accept(m).isOk());
  clock_.advance(1500ms);
  ASSERT_TRUE(log_->accept(message("cert-dev", "")).isOk());

  std::int32_t p = log_->partitionOf("dev1");
  auto events = readAll(p);
  ASSERT_GE(events.size(), 1u);
  const EventRecord& e = events[0];
  EXPECT_EQ(e.partition, p);
  EXPECT_EQ(e.sequence, 0);
  EXPECT_EQ(e.device_id, "dev1");
  EXPECT_EQ(e.enqueued_time, enqueued);
  EXPECT_EQ(e.body, m.body);
  EXPECT_EQ(e.body.size(), 11u);
  EXPECT_EQ(e.properties, m.properties);
  EXPECT_EQ(e.system.message_id, "mid-1");
  EXPECT_EQ(e.system.correlation_id, "cid-1");
  EXPECT_EQ(e.system.user_id, "uid-1");
  EXPECT_EQ(e.system.to, "/devices/dev1/messages/events");
  EXPECT_EQ(e.system.content_type, "application/json");
  EXPECT_EQ(e.system.content_encoding, "utf-8");
  EXPECT_EQ(e.system.absolute_expiry_time, parseTimestamp("2023-11-14T22:13:21.5Z"));
  ASSERT_TRUE(e.system.absolute_expiry_time.has_value());

  std::vector<std::pair<std::string, AnnotationValue>> expected = {
      {"iothub-connection-device-id", std::string("dev1")},
      {"iothub-connection-auth-method",
       std::string(
           R"({"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null})")},
      {"iothub-connection-auth-generation-id", std::string("gen-dev1")},
      {"iothub-enqueuedtime", enqueued},
      {"iothub-message-source", std::string("Telemetry")},
      {"iothub-interface-id", std::string("urn:azureiot:ModelDiscovery:1")},
      {"dt-subject", std::string("thermostat1")},
      {"x-opt-sequence-number", std::int64_t{0}},
      {"x-opt-offset", std::string("0")},
      {"x-opt-enqueued-time", enqueued},
  };
  EXPECT_EQ(e.annotations, expected);
  ASSERT_NE(e.annotation("x-opt-offset"), nullptr);
  EXPECT_EQ(e.annotation("nope"), nullptr);

  // A message with nothing set: no system properties, no optional annotations; an X.509 CA
  // device's auth method.
  auto others = readAll(log_->partitionOf("cert-dev"));
  ASSERT_FALSE(others.empty());
  const EventRecord& bare = others.back();
  EXPECT_EQ(bare.device_id, "cert-dev");
  EXPECT_EQ(bare.body, "");
  EXPECT_TRUE(bare.properties.empty());
  EXPECT_EQ(bare.system, SystemProperties{});
  EXPECT_EQ(bare.enqueued_time, enqueued + 1500ms);
  EXPECT_EQ(bare.annotation("iothub-interface-id"), nullptr);
  EXPECT_EQ(bare.annotation("dt-subject"), nullptr);
  ASSERT_NE(bare.annotation("iothub-connection-auth-method"), nullptr);
  EXPECT_EQ(std::get<std::string>(*bare.annotation("iothub-connection-auth-method")),
            R"({"scope":"device","type":"x509Certificate",)"
            R"("issuer":"external","acceptingIpFilterRule":null})");
  EXPECT_EQ(std::get<std::int64_t>(*bare.annotation("x-opt-sequence-number")), bare.sequence);
  EXPECT_EQ(std::get<std::string>(*bare.annotation("x-opt-offset")), offsetOf(bare.sequence));

  EXPECT_EQ(log_->counters().appended.load(), 2u);
  EXPECT_EQ(log_->counters().bytes.load(), 11u);
}

TEST_F(TelemetryLogTest, SequencesArePerPartitionFromZero) {
  auto [a, b] = devicesInTwoPartitions();
  for (int i = 0; i < 3; ++i) send(a, "a" + std::to_string(i));
  for (int i = 0; i < 2; ++i) send(b, "b" + std::to_string(i));
  auto in_a = readAll(log_->partitionOf(a));
  auto in_b = readAll(log_->partitionOf(b));
  ASSERT_EQ(in_a.size(), 3u);
  ASSERT_EQ(in_b.size(), 2u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(in_a[i].sequence, i);
    EXPECT_EQ(in_a[i].body, "a" + std::to_string(i));
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(in_b[i].sequence, i);
    EXPECT_EQ(in_b[i].body, "b" + std::to_string(i));
  }
  auto info = log_->partitionInfo(log_->partitionOf(a));
  ASSERT_TRUE(info.isOk());
  EXPECT_EQ(info->begin_sequence, 0);
  EXPECT_EQ(info->next_sequence, 3);
  EXPECT_EQ(info->last_enqueued_time, clock_.now());
  EXPECT_GT(info->bytes, 0u);
}

TEST_F(TelemetryLogTest, ReadHonoursLimits) {
  for (int i = 0; i < 10; ++i) send("dev1", std::string(100, static_cast<char>('a' + i)));
  std::int32_t p = log_->partitionOf("dev1");
  auto three = log_->read(p, 0, 3, 1 << 20);
  ASSERT_TRUE(three.isOk());
  ASSERT_EQ(three->size(), 3u);
  EXPECT_EQ(three->back().sequence, 2);
  auto rest = log_->read(p, 5, 100, 1 << 20);
  ASSERT_TRUE(rest.isOk());
  ASSERT_EQ(rest->size(), 5u);
  EXPECT_EQ(rest->front().sequence, 5);
  EXPECT_EQ(rest->front().body, std::string(100, 'f'));
  auto one = log_->read(p, 0, 100, 1);
  ASSERT_TRUE(one.isOk());
  EXPECT_EQ(one->size(), 1u);  // the first record always comes
  auto some = log_->read(p, 0, 100, 350);
  ASSERT_TRUE(some.isOk());
  EXPECT_GE(some->size(), 1u);
  EXPECT_LT(some->size(), 4u);
  auto none = log_->read(p, 10, 100, 1 << 20);
  ASSERT_TRUE(none.isOk());
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(log_->read(-1, 0, 1, 1).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(log_->read(4, 0, 1, 1).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(log_->partitionInfo(4).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(log_->sequenceAfter(-2, clock_.now()).code(), ErrorCode::ArgumentInvalid);
}

TEST_F(TelemetryLogTest, SequenceAfterFindsTheFirstLaterRecord) {
  std::int32_t p = log_->partitionOf("dev1");
  auto empty = log_->sequenceAfter(p, clock_.now());
  ASSERT_TRUE(empty.isOk());
  EXPECT_EQ(*empty, 0);
  const SystemTime t0 = clock_.now();
  send("dev1");
  clock_.advance(1s);
  send("dev1");
  clock_.advance(1s);
  send("dev1");
  EXPECT_EQ(log_->sequenceAfter(p, t0 - 1s).value(), 0);
  EXPECT_EQ(log_->sequenceAfter(p, t0).value(), 1);
  EXPECT_EQ(log_->sequenceAfter(p, t0 + 500ms).value(), 1);
  EXPECT_EQ(log_->sequenceAfter(p, t0 + 1s).value(), 2);
  EXPECT_EQ(log_->sequenceAfter(p, t0 + 2s).value(), 3);
}

TEST_F(TelemetryLogTest, ListenersWakeOncePerAppendOnTheirPartitionOnly) {
  auto [a, b] = devicesInTwoPartitions();
  std::atomic<int> woken_a{0};
  std::atomic<int> woken_b{0};
  std::uint64_t id_a = log_->listen(log_->partitionOf(a), [&] { ++woken_a; });
  std::uint64_t id_b = log_->listen(log_->partitionOf(b), [&] { ++woken_b; });
  EXPECT_NE(id_a, 0u);
  EXPECT_NE(id_b, 0u);
  EXPECT_NE(id_a, id_b);
  EXPECT_EQ(log_->listen(4, [] {}), 0u);

  send(a);
  EXPECT_EQ(woken_a.load(), 1);
  EXPECT_EQ(woken_b.load(), 0);
  send(b);
  EXPECT_EQ(woken_a.load(), 1);
  EXPECT_EQ(woken_b.load(), 1);

  // A batch wakes each partition it grew once.
  std::vector<device_api::TelemetryMessage> batch;
  batch.push_back(message(a));
  batch.push_back(message(a));
  batch.push_back(message(b));
  ASSERT_TRUE(log_->acceptAll(std::move(batch)).isOk());
  EXPECT_EQ(woken_a.load(), 2);
  EXPECT_EQ(woken_b.load(), 2);
  EXPECT_EQ(readAll(log_->partitionOf(a)).size(), 3u);

  log_->unlisten(id_a);
  log_->unlisten(id_a);  // twice: ignored
  log_->unlisten(12345);
  send(a);
  send(b);
  EXPECT_EQ(woken_a.load(), 2);
  EXPECT_EQ(woken_b.load(), 3);

  // A failed append wakes nobody.
  EXPECT_EQ(log_->accept(message("ghost")).code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(woken_b.load(), 3);
  EXPECT_EQ(log_->counters().append_failures.load(), 1u);
  log_->unlisten(id_b);
}

TEST_F(TelemetryLogTest, IdentitiesAreCachedBoundedAndForgotten) {
  std::atomic<int> lookups{0};
  log_ = std::make_unique<TelemetryLog>(
      *store_, clock_, TelemetryOptions{.identity_cache_size = 2},
      [&](std::string_view id) -> Result<DeviceIdentity> {
        ++lookups;
        if (id == "ghost") return Status(ErrorCode::DeviceNotFound, "no such device");
        return DeviceIdentity{"g-" + std::string(id) + "-" + std::to_string(lookups.load()),
                              store::AuthType::SelfSigned};
      });
  send("dev1");
  send("dev1");
  EXPECT_EQ(lookups.load(), 1);
  auto events = readAll(log_->partitionOf("dev1"));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<std::string>(*events[1].annotation("iothub-connection-auth-generation-id")),
            "g-dev1-1");
  EXPECT_EQ(std::get<std::string>(*events[1].annotation("iothub-connection-auth-method")),
            R"({"scope":"device","type":"x509Certificate",)"
            R"("issuer":"iothub","acceptingIpFilterRule":null})");

  log_->forgetDevice("dev1");
  send("dev1");
  EXPECT_EQ(lookups.load(), 2);
  clock_.advance(61s);  // past identity_cache_ttl
  send("dev1");
  EXPECT_EQ(lookups.load(), 3);
  // Unknown devices are not cached.
  EXPECT_EQ(log_->accept(message("ghost")).code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(log_->accept(message("ghost")).code(), ErrorCode::DeviceNotFound);
  EXPECT_EQ(lookups.load(), 5);
  // Bounded: more devices than the cache holds still work.
  send("dev2");
  send("dev3");
  send("dev4");
  send("dev1");
  EXPECT_EQ(log_->counters().appended.load(), 8u);
}

TEST_F(TelemetryLogTest, RetentionByAge) {
  make(TelemetryOptions{.retention = std::chrono::hours(1)});
  std::int32_t p = log_->partitionOf("dev1");
  for (int i = 0; i < 3; ++i) send("dev1");
  clock_.advance(30min);
  for (int i = 0; i < 2; ++i) send("dev1");
  clock_.advance(20min);
  auto nothing = log_->sweep();
  ASSERT_TRUE(nothing.isOk()) << nothing.status().toString();
  EXPECT_EQ(*nothing, 0u);
  clock_.advance(15min);  // the first three are 65 minutes old
  auto swept = log_->sweep();
  ASSERT_TRUE(swept.isOk()) << swept.status().toString();
  EXPECT_EQ(*swept, 3u);
  EXPECT_EQ(log_->counters().trimmed.load(), 3u);
  auto info = log_->partitionInfo(p);
  ASSERT_TRUE(info.isOk());
  EXPECT_EQ(info->begin_sequence, 3);
  EXPECT_EQ(info->next_sequence, 5);
  auto left = readAll(p);
  ASSERT_EQ(left.size(), 2u);
  EXPECT_EQ(left[0].sequence, 3);
  // Positions never move back.
  send("dev1");
  EXPECT_EQ(readAll(p).back().sequence, 5);
  clock_.advance(2h);
  EXPECT_EQ(log_->sweep().value(), 3u);
  EXPECT_TRUE(readAll(p).empty());
  EXPECT_EQ(log_->partitionInfo(p)->begin_sequence, 6);
}

TEST_F(TelemetryLogTest, RetentionBySize) {
  make(TelemetryOptions{.max_partition_bytes = 2000});
  std::int32_t p = log_->partitionOf("dev1");
  for (int i = 0; i < 10; ++i) send("dev1", std::string(400, static_cast<char>('0' + i)));
  auto before = log_->partitionInfo(p);
  ASSERT_TRUE(before.isOk());
  EXPECT_GT(before->bytes, 4000u);
  auto swept = log_->sweep();
  ASSERT_TRUE(swept.isOk()) << swept.status().toString();
  EXPECT_GT(*swept, 0u);
  auto after = log_->partitionInfo(p);
  ASSERT_TRUE(after.isOk());
  EXPECT_LE(after->bytes, 2000u);
  EXPECT_EQ(after->begin_sequence, static_cast<std::int64_t>(*swept));
  auto left = readAll(p);
  ASSERT_FALSE(left.empty());
  EXPECT_EQ(left.back().sequence, 9);  // the newest stay
  EXPECT_EQ(left.back().body, std::string(400, '9'));
  EXPECT_EQ(log_->sweep().value(), 0u);
}

TEST_F(TelemetryLogTest, SweepIsBoundedAndResumesAcrossPartitions) {
  make(TelemetryOptions{.retention = std::chrono::hours(1)});
  auto [a, b] = devicesInTwoPartitions();
  for (int round = 0; round < 25; ++round) {
    std::vector<device_api::TelemetryMessage> batch;
    for (int i = 0; i < 1000; ++i) batch.push_back(message(round < 15 ? a : b, "x"));
    ASSERT_TRUE(log_->acceptAll(std::move(batch)).isOk());
  }
  clock_.advance(2h);
  std::size_t total = 0;
  int sweeps = 0;
  while (sweeps < 10) {
    auto swept = log_->sweep();
    ASSERT_TRUE(swept.isOk()) << swept.status().toString();
    ++sweeps;
    EXPECT_LE(*swept, 20'000u);  // at most 20 batches of 1000 per call
    if (*swept == 0) break;
    total += *swept;
  }
  EXPECT_GE(sweeps, 3);  // 25 000 records cannot go in one call
  EXPECT_EQ(total, 25'000u);
  EXPECT_EQ(log_->counters().trimmed.load(), 25'000u);
  EXPECT_TRUE(readAll(log_->partitionOf(a)).empty());
  EXPECT_TRUE(readAll(log_->partitionOf(b)).empty());
  EXPECT_EQ(log_->partitionInfo(log_->partitionOf(a))->begin_sequence, 15'000);
  EXPECT_EQ(log_->partitionInfo(log_->partitionOf(b))->begin_sequence, 10'000);
}

TEST_F(TelemetryLogTest, ConcurrentAcceptLosesAndDuplicatesNothing) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100;
  std::atomic<int> wakes{0};
  std::vector<std::uint64_t> ids;
  for (std::int32_t p = 0; p < log_->partitions(); ++p) {
    ids.push_back(log_->listen(p, [&] { ++wakes; }));
  }
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string device = "dev" + std::to_string((t * kPerThread + i) % 16);
        std::string id = std::to_string(t) + "-" + std::to_string(i);
        if (!log_->accept(message(device, "body-" + id, id)).isOk()) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(wakes.load(), kThreads * kPerThread);
  std::set<std::string> seen;
  std::size_t total = 0;
  for (std::int32_t p = 0; p < log_->partitions(); ++p) {
    auto events = readAll(p);
    for (std::size_t i = 0; i < events.size(); ++i) {
      EXPECT_EQ(events[i].sequence, static_cast<std::int64_t>(i));  // gapless from 0
      EXPECT_EQ(events[i].partition, p);
      EXPECT_EQ(log_->partitionOf(events[i].device_id), p);
      EXPECT_EQ(events[i].body, "body-" + events[i].system.message_id);
      EXPECT_TRUE(seen.insert(events[i].system.message_id).second)
          << "duplicate " << events[i].system.message_id;
    }
    total += events.size();
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(log_->counters().appended.load(), static_cast<std::uint64_t>(kThreads * kPerThread));
  for (auto id : ids) log_->unlisten(id);
}

}  // namespace
}  // namespace iothub::telemetry

namespace iothub::telemetry {
namespace {

// Collects acceptAsync outcomes from the appender thread.
struct Outcomes {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::pair<int, Status>> got;  // (tag, status) in completion order

  std::function<void(Status)> callback(int tag) {
    return [this, tag](Status s) {
      std::lock_guard lock(mutex);
      got.emplace_back(tag, std::move(s));
      cv.notify_all();
    };
  }
  bool waitFor(std::size_t n, std::chrono::seconds timeout = 10s) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, timeout, [&] { return got.size() >= n; });
  }
};

TEST_F(TelemetryLogTest, AcceptAsyncStoresInOrderAndCallsBackOnceEach) {
  Outcomes outcomes;
  std::atomic<int> woken{0};
  std::int32_t p = log_->partitionOf("dev0");
  log_->listen(p, [&] { ++woken; });
  for (int i = 0; i < 500; ++i) {
    log_->acceptAsync(message("dev0", "m" + std::to_string(i)), outcomes.callback(i));
  }
  ASSERT_TRUE(outcomes.waitFor(500));
  std::set<int> tags;
  for (const auto& [tag, status] : outcomes.got) {
    EXPECT_TRUE(status.isOk()) << status.toString();
    tags.insert(tag);
  }
  EXPECT_EQ(tags.size(), 500u);  // each callback once
  auto events = readAll(p);
  ASSERT_EQ(events.size(), 500u);
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ(events[static_cast<std::size_t>(i)].body, "m" + std::to_string(i));
  }
  EXPECT_GE(woken.load(), 1);
  EXPECT_LE(woken.load(), 500);  // once per transaction, which holds many messages
  EXPECT_EQ(log_->counters().appended.load(), 500u);
}

TEST_F(TelemetryLogTest, AcceptAsyncRefusesOnlyTheMessagesOfAnUnknownDevice) {
  Outcomes outcomes;
  log_->acceptAsync(message("dev1", "a"), outcomes.callback(1));
  log_->acceptAsync(message("ghost", "b"), outcomes.callback(2));
  log_->acceptAsync(message("dev1", "c"), outcomes.callback(3));
  ASSERT_TRUE(outcomes.waitFor(3));
  for (const auto& [tag, status] : outcomes.got) {
    if (tag == 2) {
      EXPECT_EQ(status.code(), ErrorCode::DeviceNotFound);
    } else {
      EXPECT_TRUE(status.isOk()) << status.toString();
    }
  }
  auto events = readAll(log_->partitionOf("dev1"));
  std::vector<std::string> bodies;
  for (const auto& e : events) bodies.push_back(e.body);
  EXPECT_EQ(bodies, (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(log_->counters().append_failures.load(), 1u);
}

TEST_F(TelemetryLogTest, StopAppendsWhatIsQueuedThenRefuses) {
  Outcomes outcomes;
  for (int i = 0; i < 50; ++i) log_->acceptAsync(message("dev2"), outcomes.callback(i));
  log_->stop();
  EXPECT_EQ(outcomes.got.size(), 50u);  // all answered before stop() returned
  for (const auto& [tag, status] : outcomes.got) EXPECT_TRUE(status.isOk()) << tag;
  log_->acceptAsync(message("dev2"), outcomes.callback(99));
  ASSERT_EQ(outcomes.got.size(), 51u);  // refused at once, on this thread
  EXPECT_EQ(outcomes.got.back().second.code(), ErrorCode::ServiceUnavailable);
  EXPECT_EQ(readAll(log_->partitionOf("dev2")).size(), 50u);
}

TEST_F(TelemetryLogTest, AcceptAsyncRefusesBeyondTheQueuedBytes) {
  // A queue bound of one message: while the appender holds the store's writer busy, more
  // bytes than the bound wait and are refused. The first message always goes in.
  make(TelemetryOptions{.max_queued_bytes = 1});
  Outcomes outcomes;
  for (int i = 0; i < 200; ++i) {
    log_->acceptAsync(message("dev3", std::string(1000, 'x')), outcomes.callback(i));
  }
  ASSERT_TRUE(outcomes.waitFor(200));
  std::size_t ok = 0, refused = 0;
  for (const auto& [tag, status] : outcomes.got) {
    if (status.isOk()) {
      ++ok;
    } else {
      EXPECT_EQ(status.code(), ErrorCode::ServiceUnavailable);
      ++refused;
    }
  }
  EXPECT_GE(ok, 1u);
  EXPECT_EQ(ok + refused, 200u);
  EXPECT_EQ(readAll(log_->partitionOf("dev3")).size(), ok);  // refused ones were not stored
}

}  // namespace
}  // namespace iothub::telemetry
