#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "common/clock.hpp"
#include "common/status.hpp"
#include "device_api/telemetry.hpp"
#include "store/store.hpp"

namespace iothub::telemetry {

// The built-in endpoint's shape and retention (docs/telemetry.md §1, §2).
struct TelemetryOptions {
  // Fixed at hub creation: changing it moves devices to other partitions (§1). Values
  // below 1 are taken as 1.
  std::int32_t partitions = 4;
  std::chrono::hours retention{24};                           // by age (§2)
  std::uint64_t max_partition_bytes = 1024ull * 1024 * 1024;  // by size, per partition (§2)
  // The devices' generation ids and authentication types are looked up once and kept this
  // long, for at most this many devices (§4).
  std::chrono::seconds identity_cache_ttl{60};
  std::size_t identity_cache_size = 10'000;
  // acceptAsync: messages appended per transaction at most, and the body bytes that may wait
  // for the appender; beyond them messages are refused (ServiceUnavailable) at once.
  std::size_t max_batch = 1000;
  std::size_t max_queued_bytes = 256 * 1024 * 1024;
};

// What the hub stamps about the sending device (docs/telemetry.md §3, §4).
struct DeviceIdentity {
  std::string generation_id;
  store::AuthType auth_type = store::AuthType::Sas;
};

// Finds a device's identity; DeviceNotFound for an unknown device, the store's errors.
using IdentityLookup = std::function<Result<DeviceIdentity>(std::string_view device_id)>;

// The lookup that reads the registry (store::RegistryStore::getDevice).
IdentityLookup registryIdentityLookup(store::Store& store);

// An annotation's value with the AMQP type it is sent as: string, long, timestamp.
using AnnotationValue = std::variant<std::string, std::int64_t, SystemTime>;

// The system properties a device set (docs/telemetry.md §3.2); empty = not set.
struct SystemProperties {
  std::string message_id;
  std::string correlation_id;
  std::string user_id;
  std::string to;
  std::string content_type;
  std::string content_encoding;
  std::optional<SystemTime> absolute_expiry_time;  // the device's expiry, when it parsed

  bool operator==(const SystemProperties&) const = default;
};

// One message as a reader of the Event Hubs-compatible endpoint gets it, ready to encode
// (docs/telemetry.md §3).
struct EventRecord {
  std::int32_t partition = 0;
  std::int64_t sequence = 0;
  SystemTime enqueued_time{};
  std::string device_id;
  std::string body;                                             // the bytes exactly
  std::vector<std::pair<std::string, std::string>> properties;  // application, in order
  SystemProperties system;
  // Message annotations in the order they are sent: the hub's stamps, then
  // x-opt-sequence-number, x-opt-offset, x-opt-enqueued-time.
  std::vector<std::pair<std::string, AnnotationValue>> annotations;

  // The annotation named `name`, or null.
  const AnnotationValue* annotation(std::string_view name) const;
};

// x-opt-offset of a sequence (its decimal digits), and back (nullopt unless the text is the
// decimal digits of a non-negative int64). docs/telemetry.md §3.4.
std::string offsetOf(std::int64_t sequence);
std::optional<std::int64_t> parseOffset(std::string_view offset);

// The partition of a device's messages: FNV-1a (32 bits) of the device id modulo
// `partitions` (docs/telemetry.md §1). `partitions` >= 1.
std::int32_t partitionFor(std::string_view device_id, std::int32_t partitions);

struct TelemetryCounters {
  std::atomic<std::uint64_t> appended{0};         // messages made durable
  std::atomic<std::uint64_t> bytes{0};            // their body bytes
  std::atomic<std::uint64_t> append_failures{0};  // messages refused (lookup or store error)
  std::atomic<std::uint64_t> trimmed{0};          // records removed by retention
};

// The partitioned device-to-cloud log behind the Event Hubs-compatible endpoint
// (docs/telemetry.md): takes the devices' messages (a device_api::TelemetrySink), stamps
// them, appends them to store::TelemetryStore, wakes the partition's readers, reads them back
// as EventRecords and applies retention. No I/O of its own. Thread-safe; every call but
// listen/unlisten/partitionOf blocks on the store (call from worker threads).
class TelemetryLog final : public device_api::TelemetrySink {
 public:
  TelemetryLog(store::Store& store, const Clock& clock, TelemetryOptions options,
               IdentityLookup lookup);
  // Looks devices up in the store's registry.
  TelemetryLog(store::Store& store, const Clock& clock, TelemetryOptions options = {});

  // Appends the message to its device's partition, returns once it is durable, then wakes
  // the partition's listeners. Errors: the lookup's (DeviceNotFound for a device deleted
  // meanwhile), the store's (ServiceUnavailable).
  Status accept(device_api::TelemetryMessage message) override;
  // The same for several messages (an HTTP batch) in one transaction: all or none.
  Status acceptAll(std::vector<device_api::TelemetryMessage> messages) override;
  // Without blocking: queues the message for the log's appender thread, which appends
  // whatever queued while its previous transaction committed (at most max_batch) in one
  // transaction, then calls each message's `done` with its outcome (as accept() would
  // return it), on that thread, and wakes the partitions' listeners. `done` must be quick.
  // Refused at once (ServiceUnavailable) beyond max_queued_bytes or after stop().
  void acceptAsync(device_api::TelemetryMessage message, std::function<void(Status)> done) override;
  // Appends what is queued, then ends the appender thread; later acceptAsync calls are
  // refused. Also done by the destructor.
  void stop();
  ~TelemetryLog() override;

  // Records of `partition` from `from_sequence` on (trimmed ones skipped), at most `limit`,
  // stopping once their stored bytes reach `max_bytes` (the first is always returned).
  // Errors: ArgumentInvalid for a partition outside [0, partitions), the store's.
  Result<std::vector<EventRecord>> read(std::int32_t partition, std::int64_t from_sequence,
                                        std::size_t limit, std::size_t max_bytes);
  // Positions and size of a partition. Errors: as read().
  Result<store::TelemetryPartitionInfo> partitionInfo(std::int32_t partition);
  // The first retained record enqueued strictly after `t` (next_sequence when none): where
  // an enqueued-time filter starts. Errors: as read().
  Result<std::int64_t> sequenceAfter(std::int32_t partition, SystemTime t);
  std::int32_t partitionOf(std::string_view device_id) const;
  std::int32_t partitions() const { return options_.partitions; }

  // Calls `wake` once after each accept/acceptAll that added records to `partition` has
  // committed (docs/telemetry.md §6), on the appending thread. `wake` must be quick and must
  // not call the store, listen or unlisten (it runs under the listeners' lock: post to your
  // own strand). Returns the id for unlisten; 0 for a partition outside [0, partitions).
  std::uint64_t listen(std::int32_t partition, std::function<void()> wake);
  // After it returns, the listener is never called again. Unknown ids are ignored.
  void unlisten(std::uint64_t id);

  // Retention (docs/telemetry.md §2): removes records older than `retention`, then the
  // oldest while a partition holds more than max_partition_bytes; bounded work per call,
  // the next call goes on where this one stopped. Returns the records removed.
  Result<std::size_t> sweep();

  // Drops the cached identity of a device (call when it is deleted or its auth changes;
  // docs/telemetry.md §4).
  void forgetDevice(std::string_view device_id);

  const TelemetryOptions& options() const { return options_; }
  const TelemetryCounters& counters() const { return counters_; }

 private:
  struct CachedIdentity {
    DeviceIdentity identity;
    SystemTime fetched{};
  };
  struct Listener {
    std::uint64_t id = 0;
    std::function<void()> wake;
  };

  struct Pending {
    device_api::TelemetryMessage message;
    std::function<void(Status)> done;
  };
  void appendLoop();
  void appendBatch(std::vector<Pending> batch);

  Result<DeviceIdentity> identityOf(const std::string& device_id);
  Result<store::TelemetryRecord> toRecord(device_api::TelemetryMessage message, SystemTime now);
  Status append(std::vector<store::TelemetryRecord> records);
  Status checkPartition(std::int32_t partition) const;

  store::Store& store_;
  const Clock& clock_;
  TelemetryOptions options_;
  IdentityLookup lookup_;

  std::mutex cache_mutex_;
  std::unordered_map<std::string, CachedIdentity> cache_;

  mutable std::shared_mutex listeners_mutex_;
  std::vector<std::vector<Listener>> listeners_;  // by partition
  std::uint64_t next_listener_id_ = 1;            // under listeners_mutex_ (exclusive)

  std::mutex queue_mutex_;
  std::condition_variable queue_cv_;
  std::deque<Pending> queue_;     // guarded by queue_mutex_
  std::size_t queued_bytes_ = 0;  // guarded by queue_mutex_
  bool stopping_ = false;         // guarded by queue_mutex_
  std::thread appender_;          // started by the first acceptAsync

  std::atomic<std::int32_t> sweep_cursor_{0};  // the partition the next sweep starts at
  mutable TelemetryCounters counters_;
};

}  // namespace iothub::telemetry
