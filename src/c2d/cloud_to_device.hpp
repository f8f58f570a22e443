#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.hpp"
#include "common/random.hpp"
#include "common/status.hpp"
#include "store/store.hpp"

namespace iothub::c2d {

// Azure's limits and defaults for cloud-to-device messages (docs/c2d.md §1).
struct C2dOptions {
  std::size_t max_queue_depth = 50;                 // messages waiting per device
  std::size_t max_message_bytes = 64 * 1024;        // body and properties
  std::chrono::milliseconds lock_duration{60'000};  // a device's lock on a message
  std::int32_t max_delivery_count = 10;             // deliveries before a message is dead-lettered
  std::chrono::seconds default_ttl{3600};           // when the service sets no expiry
  std::chrono::seconds max_ttl{2 * 24 * 3600};      // a longer expiry is cut to this
  std::chrono::seconds feedback_ttl{3600};          // feedback nobody received is dropped after
};

using Properties = std::vector<std::pair<std::string, std::string>>;

// Acknowledgement a service asks for (the `iothub-ack` property): which outcomes make a
// feedback record. none: never; positive: completed; negative: expired, rejected,
// dead-lettered; full: all of these.
enum class Ack { None, Positive, Negative, Full };
std::optional<Ack> parseAck(std::string_view text);  // "none", "positive", ... (exact)
std::string_view ackName(Ack ack);

// A message as a service sends it (AMQP `Client.send`, docs/amqp.md §3).
struct OutgoingMessage {
  std::string device_id;
  std::string message_id;      // may be empty (then no feedback can be correlated)
  std::string correlation_id;  // may be empty
  std::string user_id;         // may be empty
  std::string content_type;
  std::string content_encoding;
  Ack ack = Ack::None;
  std::optional<SystemTime> expiry;  // absolute; nullopt = default_ttl from now
  Properties properties;             // application properties, in order
  std::string body;
};

// A message handed to a device (MQTT publish, or the HTTP receive's response), under a lock.
struct DeviceMessage {
  std::string device_id;
  std::string lock_token;
  std::int64_t sequence = 0;
  std::string message_id;
  std::string correlation_id;
  std::string user_id;
  std::string to;  // "/devices/{id}/messages/deviceBound"
  std::string content_type;
  std::string content_encoding;
  Ack ack = Ack::None;
  SystemTime enqueued_time{};
  SystemTime expiry_time{};
  std::int32_t delivery_count = 0;
  Properties properties;
  std::string body;
};

// Told that a device's queue may have a message for it (after an enqueue or an abandon).
// Called on the thread of the call that changed the queue; must be quick.
using QueueObserver = std::function<void(std::string_view device_id)>;

struct C2dCounters {
  std::atomic<std::uint64_t> sent{0};       // enqueued
  std::atomic<std::uint64_t> refused{0};    // send refused: unknown device, full queue, too large
  std::atomic<std::uint64_t> delivered{0};  // locked for a device (deliveries, retries included)
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> rejected{0};
  std::atomic<std::uint64_t> abandoned{0};
  std::atomic<std::uint64_t> expired{0};
  std::atomic<std::uint64_t> dead_lettered{0};  // delivery count exceeded
  std::atomic<std::uint64_t> purged{0};
  std::atomic<std::uint64_t> feedback_records{0};  // feedback records stored
};

// Cloud-to-device messaging with Azure IoT Hub's semantics (docs/c2d.md): durable per-device
// queues (store::C2dStore), locks, delivery counts, expiry, and feedback records for the
// outcomes the message's ack asks for. No I/O of its own: the AMQP service link, the MQTT
// connections and the device HTTP routes call in. Thread-safe; every call blocks on the
// store (call from worker threads).
class CloudToDevice {
 public:
  CloudToDevice(store::Store& store, const Clock& clock, Random& random, C2dOptions options = {});

  // Called after every enqueue and abandon (set once, before use).
  void setQueueObserver(QueueObserver observer) { observer_ = std::move(observer); }

  // Enqueues a message. Errors: MessageTooLarge (body and properties over
  // max_message_bytes), ArgumentInvalid (an empty or malformed device id), DeviceNotFound,
  // DeviceMaximumQueueDepthExceeded, the store's (ServiceUnavailable).
  Status send(OutgoingMessage message);

  // The device's next message, locked for lock_duration; nullopt when none waits.
  Result<std::optional<DeviceMessage>> receive(std::string_view device_id);
  // Settle a message received under `lock_token`. Errors: DeviceMessageLockLost (unknown
  // token, or its lock passed), the store's.
  Status complete(std::string_view device_id, std::string_view lock_token);
  Status reject(std::string_view device_id, std::string_view lock_token);
  Status abandon(std::string_view device_id, std::string_view lock_token);
  // Removes every message of the device (DELETE /devices/{id}/commands). Errors:
  // DeviceNotFound, the store's.
  Result<std::size_t> purge(std::string_view device_id);
  // Removes expired messages (feedback for those that asked) and feedback records older
  // than feedback_ttl; the hub calls it periodically. Returns the messages removed.
  Result<std::size_t> sweep();

  // Feedback records for a service's feedback receiver: up to `limit` records, locked for
  // `lock` (no other receiver gets them meanwhile). Each is a JSON object as Azure's
  // feedback message lists them (docs/c2d.md §4).
  Result<std::vector<store::C2dFeedbackRecord>> takeFeedback(std::size_t limit,
                                                             std::chrono::milliseconds lock);
  // The receiver accepted these records: they are gone.
  Status feedbackDelivered(const std::vector<std::int64_t>& sequences);

  const C2dOptions& options() const { return options_; }
  const C2dCounters& counters() const { return counters_; }

 private:
  std::optional<store::C2dFeedbackRecord> feedbackFor(const store::C2dMessageRecord& message,
                                                      store::C2dRemoval removal) const;
  Status settle(std::string_view device_id, std::string_view lock_token,
                store::C2dSettlement settlement);

  store::Store& store_;
  const Clock& clock_;
  Random& random_;
  C2dOptions options_;
  QueueObserver observer_;
  mutable C2dCounters counters_;
  // feedbackFor() as the store calls it, counting the records it makes.
  const store::C2dFeedbackRule feedback_rule_;
};

// The topic a device receives a message on over MQTT:
// devices/{id}/messages/devicebound/{property bag}, the bag URL-encoded as Azure's SDKs
// parse it ($.mid, $.cid, $.uid, $.to, $.exp, $.ct, $.ce, then application properties).
std::string deviceboundTopic(const DeviceMessage& message);

}  // namespace iothub::c2d
