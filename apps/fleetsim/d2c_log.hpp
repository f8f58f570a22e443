#pragma once
// The telemetry-ingest benchmark's records (docs/benchmarks.md, "Telemetry ingest (D2C) and
// Event Hubs read"): what fleetsim's telemetry scenario sends and logs per PUBACK, what the
// reader (bench/telemetry/eh_reader) logs per message it reads, and the join of both logs.
// Pure code: files in, figures out.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "apps/fleetsim/latency_histogram.hpp"
#include "common/json.hpp"
#include "common/status.hpp"

namespace iothub::fleetsim {

// A message's id: the sending device's global index in the high 32 bits, the device's own
// counter (0, 1, 2 ...) in the low 32, so ids are unique across the fleet without any
// coordination between devices.
inline constexpr std::uint64_t d2cMessageId(std::size_t device_index, std::uint32_t counter) {
  return (static_cast<std::uint64_t>(device_index) << 32) | counter;
}
inline constexpr std::size_t d2cDeviceOf(std::uint64_t id) {
  return static_cast<std::size_t>(id >> 32);
}

// The payload of telemetry message `id`, published at `sent_ns` (steady clock, which is
// CLOCK_MONOTONIC and so comparable between processes of one machine): "d2c <id> <sent_ns>".
std::string d2cPayload(std::uint64_t id, std::int64_t sent_ns);
// Reads it back; false for anything else.
bool parseD2cPayload(std::string_view payload, std::uint64_t& id, std::int64_t& sent_ns);

// One line of a log: the message, when it was published (from its payload) and when the
// event of the log happened to it (PUBACK at the device, or arrival at the reader), all in
// steady-clock nanoseconds. Stored as 24 bytes, three little-endian 64-bit integers.
struct D2cRecord {
  std::uint64_t id = 0;
  std::int64_t sent_ns = 0;
  std::int64_t at_ns = 0;
  bool operator==(const D2cRecord&) const = default;
};
inline constexpr std::size_t kD2cRecordBytes = 24;

// Writes `records` to `path` (replacing it). Errors: ServiceUnavailable naming the file.
Status writeD2cRecords(const std::string& path, const std::vector<D2cRecord>& records);
// Reads a file of records. Errors: ArgumentInvalid for a missing file or a size that is not
// a multiple of kD2cRecordBytes.
Result<std::vector<D2cRecord>> readD2cRecords(const std::string& path);

// The join of the devices' PUBACK log with the reader's arrival log.
struct D2cJoin {
  std::uint64_t acked = 0;               // PUBACK records (distinct ids)
  std::uint64_t ack_duplicates = 0;      // PUBACK records for an id already seen (a fleetsim bug)
  std::uint64_t read = 0;                // arrival records
  std::uint64_t read_unique = 0;         // distinct ids among them
  std::uint64_t read_duplicates = 0;     // arrivals of an id already read
  std::uint64_t acked_not_read = 0;      // lost: PUBACKed but never readable
  std::uint64_t read_not_acked = 0;      // readable, no PUBACK logged (sent, connection lost)
  std::uint64_t read_before_puback = 0;  // readable before the device had its PUBACK
  LatencyHistogram publish_to_puback;    // per acked message
  LatencyHistogram puback_to_read;       // per message both acked and read (clamped at 0)
  LatencyHistogram publish_to_read;      // per message read (first arrival)
  std::int64_t first_sent_ns = 0;        // earliest publish among the acked
  std::int64_t last_ack_ns = 0;
  std::int64_t last_read_ns = 0;
  // Exactly once: every PUBACKed message read once, nothing read twice or unannounced.
  bool exactlyOnce() const {
    return acked > 0 && ack_duplicates == 0 && read_duplicates == 0 && acked_not_read == 0 &&
           read_not_acked == 0;
  }
};
D2cJoin joinD2c(const std::vector<D2cRecord>& acks, const std::vector<D2cRecord>& reads);

// The records of messages published in the last `fraction` (0..1] of the span from the first
// to the last publish among `acks` (both logs filtered by the same threshold): the steady
// state of a run, without the start-up (every device's first message costs the hub more).
struct D2cRecords {
  std::vector<D2cRecord> acks;
  std::vector<D2cRecord> reads;
};
D2cRecords lastPartOf(const std::vector<D2cRecord>& acks, const std::vector<D2cRecord>& reads,
                      double fraction);

// The join's figures as JSON: counts, exactly_once (0/1), acked_per_s (acked ÷ first
// publish → last PUBACK), readable_per_s (read_unique ÷ first publish → last arrival) and the
// three latencies (count, p50_ms, p90_ms, p99_ms, max_ms, mean_ms).
json::object d2cJoinJson(const D2cJoin& join);

}  // namespace iothub::fleetsim
