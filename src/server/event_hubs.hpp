#pragma once
// The Event Hubs-compatible endpoint (docs/event-hubs.md): `@azure/event-hubs` reads the
// telemetry log over AMQP. The `$management` node answers READ of the event hub and its
// partitions; receivers on ENTITY/ConsumerGroups/GROUP/Partitions/N get the partition's
// events from the start position their selector filter names, within their credit, woken by
// appends; epochs displace older readers with amqp:link:stolen.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "amqp/server_connection.hpp"
#include "common/clock.hpp"
#include "common/scheduler.hpp"
#include "common/status.hpp"
#include "store/store.hpp"
#include "telemetry/telemetry_log.hpp"
#include "transport/amqp_server.hpp"

namespace iothub::server {

// The hub's Event Hubs entity name (the connection string's EntityPath): the first label of
// its host name, "myhub" for "myhub.example.com" (docs/event-hubs.md §1).
std::string eventHubsEntity(std::string_view host_name);

// True for the addresses the endpoint serves on a connection: `$management` and anything
// under `<entity>/` (ASCII case ignored).
bool isEventHubsAddress(std::string_view entity, std::string_view address);

// A partition receiver's source address, ENTITY/ConsumerGroups/GROUP/Partitions/N.
struct PartitionAddress {
  std::string consumer_group;
  std::int32_t partition = 0;
};
// nullopt when `address` has another shape (the entity and the fixed words compare
// ignoring ASCII case; N must be decimal digits that fit an int32).
std::optional<PartitionAddress> parsePartitionAddress(std::string_view entity,
                                                      std::string_view address);

// Where a receiver starts, from its apache.org:selector-filter:string expression
// (docs/event-hubs.md §4).
struct StartPosition {
  enum class Kind : std::uint8_t {
    Sequence,       // the first event to send has `sequence`
    Latest,         // events appended after the attach
    EnqueuedAfter,  // the first event enqueued strictly after `time`
  };
  Kind kind = Kind::Sequence;
  std::int64_t sequence = 0;
  SystemTime time{};
};
// `amqp.annotation.x-opt-offset > '41'` and `>=`, `x-opt-sequence-number` likewise, offset
// '-1' (the beginning), '@latest', `x-opt-enqueued-time > '<epoch ms>'`. An empty
// expression starts at the beginning. Errors: ArgumentInvalid naming what is wrong.
Result<StartPosition> parseSelector(std::string_view expression);

struct EventHubsOptions {
  // Events read from the log per batch, and their bytes (at most one batch per link waits
  // to be sent).
  std::size_t batch = 1000;
  std::size_t batch_bytes = 1024 * 1024;
  // Readers without an epoch per consumer group and partition on this node (Azure: 5);
  // more are refused with amqp:resource-limit-exceeded.
  std::size_t max_readers = 5;
  // An idle reader with credit reads again this often even without a wake-up: appends on
  // other cluster nodes do not wake this node's readers.
  std::chrono::milliseconds poll{1000};
  // A reader woken by appends reads at most this often (a read that filled its batch is
  // followed at once): under a steady stream every append would otherwise cost each
  // reader of its partition a store read.
  std::chrono::milliseconds min_read_interval{5};
};

struct EventHubsCounters {
  std::atomic<std::uint64_t> events_sent{0};
  std::atomic<std::uint64_t> management_requests{0};
  std::atomic<std::uint64_t> receivers_attached{0};
  std::atomic<std::uint64_t> receivers_refused{0};  // unknown group, bad filter, limits
  std::atomic<std::uint64_t> receivers_stolen{0};   // displaced by a higher epoch
  std::atomic<std::int64_t> receivers{0};           // open now
};

// The readers of one consumer group and partition on this node, across connections: who
// holds an epoch, whom a new reader displaces. Thread-safe.
class ReaderRegistry {
 public:
  struct Reader {
    std::uint64_t id = 0;
    std::optional<std::int64_t> epoch;
    // Ends the reader's link (with amqp:link:stolen), on its connection's strand.
    std::function<void()> steal;
  };
  explicit ReaderRegistry(std::size_t max_readers) : max_readers_(max_readers) {}
  // Admits `reader` to (group, partition): an epoch reader displaces every reader with a
  // lower or equal epoch or none (their `steal` is called, outside the lock) and is refused
  // (amqp:link:stolen) when a higher epoch reads; a reader without an epoch is refused while
  // an epoch reader reads, and beyond max_readers (amqp:resource-limit-exceeded). Groups
  // compare ignoring ASCII case.
  std::optional<amqp::ErrorCondition> admit(std::string_view group, std::int32_t partition,
                                            Reader reader);
  // Forgets a reader (its link ended). Unknown ids are ignored.
  void remove(std::string_view group, std::int32_t partition, std::uint64_t id);
  std::uint64_t nextId() { return next_id_.fetch_add(1, std::memory_order_relaxed); }

 private:
  std::size_t max_readers_;
  std::mutex mutex_;
  std::map<std::pair<std::string, std::int32_t>, std::vector<Reader>> readers_;
  std::atomic<std::uint64_t> next_id_{1};
};

// Makes the Event Hubs link handler of each AMQP connection. `blocking` runs store work off
// the I/O threads; `scheduler` paces polls. Every reference must outlive the AMQP server.
class EventHubsService {
 public:
  using Executor = std::function<void(std::function<void()>)>;
  EventHubsService(std::string entity, telemetry::TelemetryLog& log, store::Store& store,
                   Executor blocking, Scheduler& scheduler, EventHubsOptions options = {});

  // The handler of one connection's Event Hubs links (addresses isEventHubsAddress accepts).
  std::unique_ptr<amqp::LinkHandler> makeHandler(transport::AmqpConnectionPost post);

  const std::string& entity() const { return entity_; }
  const EventHubsCounters& counters() const { return *counters_; }

 private:
  std::string entity_;
  telemetry::TelemetryLog& log_;
  store::Store& store_;
  Executor blocking_;
  Scheduler& scheduler_;
  EventHubsOptions options_;
  std::shared_ptr<EventHubsCounters> counters_ = std::make_shared<EventHubsCounters>();
  std::shared_ptr<ReaderRegistry> registry_;
};

// An event as an AMQP message (docs/event-hubs.md §5): the body as one data section, the
// device's system properties as message properties, its application properties, and the
// hub's and Event Hubs' annotations typed.
amqp::Message toAmqp(const telemetry::EventRecord& event);

}  // namespace iothub::server
