#include "c2d/cloud_to_device.hpp"

#include <algorithm>

#include "common/encoding.hpp"
#include "common/json.hpp"
#include "common/time_format.hpp"
#include "mqtt/azure_topics.hpp"

namespace iothub::c2d {
namespace {

// Keys of the message document the store keeps beside the queue fields.
constexpr std::string_view kMessageId = "messageId";
constexpr std::string_view kCorrelationId = "correlationId";
constexpr std::string_view kUserId = "userId";
constexpr std::string_view kContentType = "contentType";
constexpr std::string_view kContentEncoding = "contentEncoding";
constexpr std::string_view kAck = "ack";
constexpr std::string_view kProperties = "properties";  // [[name, value], ...] in order
constexpr std::string_view kGenerationId = "deviceGenerationId";

// The lock token: a random UUID, so that it is URL-safe (the HTTP SDK puts it in paths and
// If-Match unencoded, docs/protocol.md) and unguessable (it is a device's only proof).
std::string newLockToken(Random& random) {
  std::string hex = random.hex(16);
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20, 12);
}

std::string stringField(const json::object& document, std::string_view key) {
  const json::string* value = findString(document, key);
  return value == nullptr ? std::string() : std::string(*value);
}

DeviceMessage toDeviceMessage(const store::C2dMessageRecord& record) {
  DeviceMessage m;
  m.device_id = record.device_id;
  m.lock_token = record.lock_token;
  m.sequence = record.sequence;
  m.message_id = stringField(record.document, kMessageId);
  m.correlation_id = stringField(record.document, kCorrelationId);
  m.user_id = stringField(record.document, kUserId);
  m.to = "/devices/" + urlEncodeStrict(record.device_id) + "/messages/deviceBound";
  m.content_type = stringField(record.document, kContentType);
  m.content_encoding = stringField(record.document, kContentEncoding);
  m.ack = parseAck(stringField(record.document, kAck)).value_or(Ack::None);
  m.enqueued_time = record.enqueued_time;
  m.expiry_time = record.expiry_time;
  m.delivery_count = record.delivery_count;
  m.body = record.body;
  if (const json::value* props = record.document.if_contains(kProperties);
      props != nullptr && props->is_array()) {
    for (const json::value& pair : props->get_array()) {
      const json::array* kv = pair.if_array();
      if (kv == nullptr || kv->size() != 2 || !(*kv)[0].is_string() || !(*kv)[1].is_string()) {
        continue;
      }
      m.properties.emplace_back(std::string((*kv)[0].get_string()),
                                std::string((*kv)[1].get_string()));
    }
  }
  return m;
}

// Which outcomes an ack asks feedback for (docs/c2d.md §4): positive = delivered and
// completed; negative = the message died without being completed.
bool wantsFeedback(Ack ack, store::C2dRemoval removal) {
  bool positive = removal == store::C2dRemoval::Completed;
  switch (ack) {
    case Ack::None:
      return false;
    case Ack::Positive:
      return positive;
    case Ack::Negative:
      return !positive;
    case Ack::Full:
      return true;
  }
  return false;
}

std::string_view statusCodeOf(store::C2dRemoval removal) {
  switch (removal) {
    case store::C2dRemoval::Completed:
      return "Success";
    case store::C2dRemoval::Rejected:
      return "Rejected";
    case store::C2dRemoval::Expired:
      return "Expired";
    case store::C2dRemoval::DeliveryCountExceeded:
      return "DeliveryCountExceeded";
    case store::C2dRemoval::Purged:
      return "Purged";
  }
  return "Success";
}

std::string_view descriptionOf(store::C2dRemoval removal) {
  switch (removal) {
    case store::C2dRemoval::Completed:
      return "Success";
    case store::C2dRemoval::Rejected:
      return "Message rejected";
    case store::C2dRemoval::Expired:
      return "Message expired";
    case store::C2dRemoval::DeliveryCountExceeded:
      return "Message delivery count exceeded";
    case store::C2dRemoval::Purged:
      return "Message purged";
  }
  return "";
}

}  // namespace

std::optional<Ack> parseAck(std::string_view text) {
  if (text == "none") return Ack::None;
  if (text == "positive") return Ack::Positive;
  if (text == "negative") return Ack::Negative;
  if (text == "full") return Ack::Full;
  return std::nullopt;
}

std::string_view ackName(Ack ack) {
  switch (ack) {
    case Ack::None:
      return "none";
    case Ack::Positive:
      return "positive";
    case Ack::Negative:
      return "negative";
    case Ack::Full:
      return "full";
  }
  return "none";
}

CloudToDevice::CloudToDevice(store::Store& store, const Clock& clock, Random& random,
                             C2dOptions options)
    : store_(store),
      clock_(clock),
      random_(random),
      options_(options),
      feedback_rule_([this](const store::C2dMessageRecord& m, store::C2dRemoval removal) {
        auto record = feedbackFor(m, removal);
        if (record) counters_.feedback_records.fetch_add(1, std::memory_order_relaxed);
        return record;
      }) {}

std::optional<store::C2dFeedbackRecord> CloudToDevice::feedbackFor(
    const store::C2dMessageRecord& message, store::C2dRemoval removal) const {
  auto ack = parseAck(stringField(message.document, kAck)).value_or(Ack::None);
  if (!wantsFeedback(ack, removal)) return std::nullopt;
  store::C2dFeedbackRecord record;
  record.enqueued_time = clock_.now();
  record.document = json::object{
      {"originalMessageId", stringField(message.document, kMessageId)},
      {"enqueuedTimeUtc", formatTimestamp(record.enqueued_time)},
      {"statusCode", statusCodeOf(removal)},
      {"description", descriptionOf(removal)},
      {"deviceId", message.device_id},
      {"deviceGenerationId", stringField(message.document, kGenerationId)},
  };
  return record;
}

Status CloudToDevice::send(OutgoingMessage message) {
  std::size_t size = message.body.size();
  for (const auto& [name, value] : message.properties) size += name.size() + value.size();
  if (size > options_.max_message_bytes) {
    counters_.refused.fetch_add(1, std::memory_order_relaxed);
    return Status(ErrorCode::MessageTooLarge, "the message is " + std::to_string(size) +
                                                  " bytes with its properties; at most " +
                                                  std::to_string(options_.max_message_bytes) +
                                                  " are allowed");
  }
  if (message.device_id.empty()) {
    counters_.refused.fetch_add(1, std::memory_order_relaxed);
    return Status(ErrorCode::ArgumentInvalid, "the message names no device");
  }
  SystemTime now = clock_.now();
  store::C2dMessageRecord record;
  record.device_id = message.device_id;
  record.enqueued_time = now;
  SystemTime latest = addClamped(now, options_.max_ttl);
  record.expiry_time =
      message.expiry ? std::min(*message.expiry, latest) : addClamped(now, options_.default_ttl);
  json::array properties;
  for (auto& [name, value] : message.properties) properties.push_back(json::array{name, value});
  record.document = json::object{{kMessageId, message.message_id},
                                 {kCorrelationId, message.correlation_id},
                                 {kUserId, message.user_id},
                                 {kContentType, message.content_type},
                                 {kContentEncoding, message.content_encoding},
                                 {kAck, ackName(message.ack)},
                                 {kProperties, std::move(properties)}};
  if (message.ack != Ack::None) {
    // Feedback names the device's generation; read it only for messages that ask for one.
    auto device = store_.registry().getDevice(message.device_id);
    if (!device) {
      counters_.refused.fetch_add(1, std::memory_order_relaxed);
      return device.status();
    }
    record.document[kGenerationId] = device->generation_id;
  }
  record.body = std::move(message.body);
  auto enqueued = store_.c2d().enqueueC2d(record, options_.max_queue_depth);
  if (!enqueued) {
    counters_.refused.fetch_add(1, std::memory_order_relaxed);
    return enqueued.status();
  }
  counters_.sent.fetch_add(1, std::memory_order_relaxed);
  if (observer_) observer_(record.device_id);
  return Status::ok();
}

Result<std::optional<DeviceMessage>> CloudToDevice::receive(std::string_view device_id) {
  store::C2dLock lock;
  lock.now = clock_.now();
  lock.until = lock.now + options_.lock_duration;
  lock.token = newLockToken(random_);
  lock.max_delivery_count = options_.max_delivery_count;
  auto rule = [this](const store::C2dMessageRecord& m, store::C2dRemoval removal) {
    // Counted here: the rule runs for every message the lock removed on the way (it may run
    // more than once for one removal when PostgreSQL retries, which only skews counters).
    (removal == store::C2dRemoval::Expired ? counters_.expired : counters_.dead_lettered)
        .fetch_add(1, std::memory_order_relaxed);
    return feedback_rule_(m, removal);
  };
  auto locked = store_.c2d().lockC2d(device_id, lock, rule);
  if (!locked) return locked.status();
  if (!*locked) return std::optional<DeviceMessage>();
  counters_.delivered.fetch_add(1, std::memory_order_relaxed);
  return std::optional<DeviceMessage>(toDeviceMessage(**locked));
}

Status CloudToDevice::settle(std::string_view device_id, std::string_view lock_token,
                             store::C2dSettlement settlement) {
  auto settled =
      store_.c2d().settleC2d(device_id, lock_token, settlement, clock_.now(), feedback_rule_);
  if (!settled) return settled.status();
  switch (settlement) {
    case store::C2dSettlement::Complete:
      counters_.completed.fetch_add(1, std::memory_order_relaxed);
      break;
    case store::C2dSettlement::Reject:
      counters_.rejected.fetch_add(1, std::memory_order_relaxed);
      break;
    case store::C2dSettlement::Abandon:
      counters_.abandoned.fetch_add(1, std::memory_order_relaxed);
      if (observer_) observer_(device_id);
      break;
  }
  return Status::ok();
}

Status CloudToDevice::complete(std::string_view device_id, std::string_view lock_token) {
  return settle(device_id, lock_token, store::C2dSettlement::Complete);
}

Status CloudToDevice::reject(std::string_view device_id, std::string_view lock_token) {
  return settle(device_id, lock_token, store::C2dSettlement::Reject);
}

Status CloudToDevice::abandon(std::string_view device_id, std::string_view lock_token) {
  return settle(device_id, lock_token, store::C2dSettlement::Abandon);
}

Result<std::size_t> CloudToDevice::purge(std::string_view device_id) {
  auto purged = store_.c2d().purgeC2d(device_id, feedback_rule_);
  if (purged) counters_.purged.fetch_add(*purged, std::memory_order_relaxed);
  return purged;
}

Result<std::size_t> CloudToDevice::sweep() {
  constexpr std::size_t kBatch = 1000;
  // Bounded, so that one sweep cannot hold a worker for long; the next one goes on.
  constexpr int kMaxBatches = 20;
  std::size_t removed = 0;
  SystemTime now = clock_.now();
  for (int i = 0; i < kMaxBatches; ++i) {
    auto expired = store_.c2d().expireC2d(now, kBatch, feedback_rule_);
    if (!expired) return expired.status();
    removed += *expired;
    if (*expired < kBatch) break;
  }
  counters_.expired.fetch_add(removed, std::memory_order_relaxed);
  auto dropped = store_.c2d().expireC2dFeedback(now - options_.feedback_ttl, kBatch);
  if (!dropped) return dropped.status();
  return removed;
}

Result<std::vector<store::C2dFeedbackRecord>> CloudToDevice::takeFeedback(
    std::size_t limit, std::chrono::milliseconds lock) {
  SystemTime now = clock_.now();
  return store_.c2d().lockC2dFeedback(now, now + lock, limit);
}

Status CloudToDevice::feedbackDelivered(const std::vector<std::int64_t>& sequences) {
  return store_.c2d().deleteC2dFeedback(sequences);
}

std::string deviceboundTopic(const DeviceMessage& message) {
  std::string topic = mqtt::azure::c2dTopic(message.device_id);
  auto add = [&topic](std::string_view name, std::string_view value) {
    mqtt::azure::appendTopicProperty(topic, name, value);
  };
  if (!message.message_id.empty()) add("$.mid", message.message_id);
  if (!message.correlation_id.empty()) add("$.cid", message.correlation_id);
  if (!message.user_id.empty()) add("$.uid", message.user_id);
  add("$.to", message.to);
  add("$.exp", formatTimestamp(message.expiry_time));
  if (!message.content_type.empty()) add("$.ct", message.content_type);
  if (!message.content_encoding.empty()) add("$.ce", message.content_encoding);
  for (const auto& [name, value] : message.properties) add(name, value);
  return topic;
}

}  // namespace iothub::c2d
