#include "apps/fleetsim/d2c_log.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace iothub::fleetsim {
namespace {

TEST(D2cLogTest, PayloadRoundTrips) {
  const std::uint64_t id = d2cMessageId(18'999, 41);
  EXPECT_EQ(d2cDeviceOf(id), 18'999u);
  EXPECT_EQ(id & 0xffffffffu, 41u);
  const std::string payload = d2cPayload(id, 123'456'789);
  std::uint64_t back = 0;
  std::int64_t sent = 0;
  ASSERT_TRUE(parseD2cPayload(payload, back, sent));
  EXPECT_EQ(back, id);
  EXPECT_EQ(sent, 123'456'789);
}

TEST(D2cLogTest, RefusesOtherPayloads) {
  std::uint64_t id = 0;
  std::int64_t sent = 0;
  for (std::string_view bad : {"", "d2c", "d2c 1", "d2c 1 ", "d2c  1 2", "c2d 1 2", "d2c 1 -2",
                               "d2c 1 2 3", "d2c x 2", "d2c 1 2x"}) {
    EXPECT_FALSE(parseD2cPayload(bad, id, sent)) << bad;
  }
}

TEST(D2cLogTest, RecordsRoundTripThroughAFile) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("d2c_log_test_" + std::to_string(::getpid()) + ".bin"))
                               .string();
  const std::vector<D2cRecord> records = {
      {d2cMessageId(0, 0), 1, 2}, {d2cMessageId(7, 3), 1'000'000'000'000, 1'000'000'500'000}};
  ASSERT_TRUE(writeD2cRecords(path, records));
  EXPECT_EQ(std::filesystem::file_size(path), 2 * kD2cRecordBytes);
  auto back = readD2cRecords(path);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, records);
  {
    std::ofstream truncated(path, std::ios::binary | std::ios::app);
    truncated << "x";
  }
  EXPECT_FALSE(readD2cRecords(path));
  std::filesystem::remove(path);
  EXPECT_FALSE(readD2cRecords(path));
}

TEST(D2cLogTest, JoinMeasuresEachStepAndChecksExactlyOnce) {
  // Three messages published at 0, 1 and 2 ms, PUBACKed 1 ms later, read 2 ms after that.
  std::vector<D2cRecord> acks;
  std::vector<D2cRecord> reads;
  for (std::uint32_t k = 0; k < 3; ++k) {
    const std::int64_t sent = k * 1'000'000;
    acks.push_back({d2cMessageId(1, k), sent, sent + 1'000'000});
    reads.push_back({d2cMessageId(1, k), sent, sent + 3'000'000});
  }
  D2cJoin j = joinD2c(acks, reads);
  EXPECT_TRUE(j.exactlyOnce());
  EXPECT_EQ(j.acked, 3u);
  EXPECT_EQ(j.read_unique, 3u);
  EXPECT_EQ(j.publish_to_puback.percentile(0.5), 1000u);
  EXPECT_EQ(j.puback_to_read.percentile(0.99), 2000u);
  EXPECT_EQ(j.publish_to_read.max(), 3000u);
  const json::object o = d2cJoinJson(j);
  EXPECT_EQ(o.at("exactly_once").as_int64(), 1);
  EXPECT_DOUBLE_EQ(o.at("acked_span_s").as_double(), 0.003);  // 0 → last PUBACK at 3 ms
  EXPECT_DOUBLE_EQ(o.at("acked_per_s").as_double(), 1000.0);
  EXPECT_DOUBLE_EQ(o.at("readable_per_s").as_double(), 600.0);  // 3 in 5 ms

  // Read twice, one lost, one read that no PUBACK announced.
  reads.push_back(reads[0]);
  reads.erase(reads.begin() + 1);
  reads.push_back({d2cMessageId(2, 0), 0, 10});
  j = joinD2c(acks, reads);
  EXPECT_FALSE(j.exactlyOnce());
  EXPECT_EQ(j.read_duplicates, 1u);
  EXPECT_EQ(j.acked_not_read, 1u);
  EXPECT_EQ(j.read_not_acked, 1u);
  EXPECT_EQ(j.read_unique, 3u);
}

TEST(D2cLogTest, ReadBeforePubackCountsAndClampsAtZero) {
  // The hub wakes readers after the commit and sends the PUBACK in parallel: a reader may see
  // the message first.
  const std::vector<D2cRecord> acks = {{5, 0, 2'000'000}};
  const std::vector<D2cRecord> reads = {{5, 0, 1'500'000}};
  const D2cJoin j = joinD2c(acks, reads);
  EXPECT_TRUE(j.exactlyOnce());
  EXPECT_EQ(j.read_before_puback, 1u);
  EXPECT_EQ(j.puback_to_read.max(), 0u);
  EXPECT_FALSE(joinD2c({}, {}).exactlyOnce());  // nothing sent is not a pass
}

TEST(D2cLogTest, LastPartKeepsTheMessagesPublishedLate) {
  // Published at 0, 10, 20, 30 and 40 ms: the last half of the span starts at 20 ms.
  std::vector<D2cRecord> acks;
  std::vector<D2cRecord> reads;
  for (std::uint32_t k = 0; k < 5; ++k) {
    acks.push_back({d2cMessageId(0, k), k * 10'000'000, k * 10'000'000 + 5});
    reads.push_back({d2cMessageId(0, k), k * 10'000'000, k * 10'000'000 + 9});
  }
  const D2cRecords late = lastPartOf(acks, reads, 0.5);
  ASSERT_EQ(late.acks.size(), 3u);
  ASSERT_EQ(late.reads.size(), 3u);
  EXPECT_EQ(late.acks.front().id, d2cMessageId(0, 2));
  EXPECT_TRUE(joinD2c(late.acks, late.reads).exactlyOnce());
  EXPECT_EQ(lastPartOf(acks, reads, 1.0).acks.size(), 5u);
  EXPECT_TRUE(lastPartOf({}, reads, 0.5).reads.empty());
}

}  // namespace
}  // namespace iothub::fleetsim
