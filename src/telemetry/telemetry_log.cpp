#include "telemetry/telemetry_log.hpp"

#include <algorithm>
#include <charconv>
#include <set>

#include "common/json.hpp"
#include "common/time_format.hpp"

namespace iothub::telemetry {
namespace {

// The record's document (docs/telemetry.md §5).
constexpr std::string_view kSource = "source";
constexpr std::string_view kProperties = "properties";  // [[name, value], ...] in order
constexpr std::string_view kSystem = "system";
constexpr std::string_view kAnnotations = "annotations";

// System property keys of the document: the AMQP properties' names (§3.2).
constexpr std::string_view kMessageId = "message-id";
constexpr std::string_view kCorrelationId = "correlation-id";
constexpr std::string_view kUserId = "user-id";
constexpr std::string_view kTo = "to";
constexpr std::string_view kContentType = "content-type";
constexpr std::string_view kContentEncoding = "content-encoding";
constexpr std::string_view kAbsoluteExpiryTime = "absolute-expiry-time";  // as the device wrote it

// Annotations (§3.3, §3.4).
constexpr std::string_view kDeviceIdAnnotation = "iothub-connection-device-id";
constexpr std::string_view kAuthMethodAnnotation = "iothub-connection-auth-method";
constexpr std::string_view kGenerationIdAnnotation = "iothub-connection-auth-generation-id";
constexpr std::string_view kEnqueuedTimeAnnotation = "iothub-enqueuedtime";
constexpr std::string_view kMessageSourceAnnotation = "iothub-message-source";
constexpr std::string_view kInterfaceIdAnnotation = "iothub-interface-id";
constexpr std::string_view kSubjectAnnotation = "dt-subject";
constexpr std::string_view kSequenceNumberAnnotation = "x-opt-sequence-number";
constexpr std::string_view kOffsetAnnotation = "x-opt-offset";
constexpr std::string_view kEnqueuedTimeOptAnnotation = "x-opt-enqueued-time";

// The stored string annotations in the order they are sent; iothub-enqueuedtime (from the
// record) goes after the generation id, as Azure sends it (§3.3).
constexpr std::string_view kStoredAnnotationOrder[] = {
    kDeviceIdAnnotation,      kAuthMethodAnnotation,  kGenerationIdAnnotation,
    kMessageSourceAnnotation, kInterfaceIdAnnotation, kSubjectAnnotation,
};

// iothub-connection-auth-method: JSON text with Azure's member order (§3.3).
std::string authMethodOf(store::AuthType type) {
  std::string_view kind = "sas";
  std::string_view issuer = "iothub";
  switch (type) {
    case store::AuthType::Sas:
      break;
    case store::AuthType::SelfSigned:
      kind = "x509Certificate";
      break;
    case store::AuthType::CertificateAuthority:
      kind = "x509Certificate";
      issuer = "external";
      break;
    case store::AuthType::None:
      kind = "none";
      break;
  }
  std::string text = R"({"scope":"device","type":")";
  text += kind;
  text += R"(","issuer":")";
  text += issuer;
  text += R"(","acceptingIpFilterRule":null})";
  return text;
}

std::string stringField(const json::object& document, std::string_view key) {
  const json::string* value = findString(document, key);
  return value == nullptr ? std::string() : std::string(*value);
}

void putIfSet(json::object& object, std::string_view key, std::string& value) {
  if (!value.empty()) object[key] = std::move(value);
}

EventRecord toEvent(store::TelemetryRecord record) {
  EventRecord event;
  event.partition = record.partition;
  event.sequence = record.sequence;
  event.enqueued_time = record.enqueued_time;
  event.device_id = std::move(record.device_id);
  event.body = std::move(record.body);
  const json::object& document = record.document;
  if (const json::value* props = document.if_contains(kProperties);
      props != nullptr && props->is_array()) {
    for (const json::value& pair : props->get_array()) {
      const json::array* kv = pair.if_array();
      if (kv == nullptr || kv->size() != 2 || !(*kv)[0].is_string() || !(*kv)[1].is_string()) {
        continue;
      }
      event.properties.emplace_back(std::string((*kv)[0].get_string()),
                                    std::string((*kv)[1].get_string()));
    }
  }
  if (const json::object* system = findObject(document, kSystem); system != nullptr) {
    event.system.message_id = stringField(*system, kMessageId);
    event.system.correlation_id = stringField(*system, kCorrelationId);
    event.system.user_id = stringField(*system, kUserId);
    event.system.to = stringField(*system, kTo);
    event.system.content_type = stringField(*system, kContentType);
    event.system.content_encoding = stringField(*system, kContentEncoding);
    if (const json::string* expiry = findString(*system, kAbsoluteExpiryTime); expiry != nullptr) {
      event.system.absolute_expiry_time = parseTimestamp(*expiry);
    }
  }
  const json::object* stored = findObject(document, kAnnotations);
  auto add = [&](std::string_view name) {
    if (stored == nullptr) return;
    if (const json::string* value = findString(*stored, name); value != nullptr) {
      event.annotations.emplace_back(std::string(name), AnnotationValue(std::string(*value)));
    }
  };
  add(kDeviceIdAnnotation);
  add(kAuthMethodAnnotation);
  add(kGenerationIdAnnotation);
  event.annotations.emplace_back(std::string(kEnqueuedTimeAnnotation),
                                 AnnotationValue(event.enqueued_time));
  add(kMessageSourceAnnotation);
  add(kInterfaceIdAnnotation);
  add(kSubjectAnnotation);
  if (stored != nullptr) {
    // Any other string annotation a later version stored, after the known ones.
    for (const auto& [key, value] : *stored) {
      if (!value.is_string()) continue;
      if (std::find(std::begin(kStoredAnnotationOrder), std::end(kStoredAnnotationOrder), key) !=
          std::end(kStoredAnnotationOrder)) {
        continue;
      }
      event.annotations.emplace_back(std::string(key),
                                     AnnotationValue(std::string(value.get_string())));
    }
  }
  event.annotations.emplace_back(std::string(kSequenceNumberAnnotation),
                                 AnnotationValue(event.sequence));
  event.annotations.emplace_back(std::string(kOffsetAnnotation),
                                 AnnotationValue(offsetOf(event.sequence)));
  event.annotations.emplace_back(std::string(kEnqueuedTimeOptAnnotation),
                                 AnnotationValue(event.enqueued_time));
  return event;
}

// How many records one trimTelemetry call removes, and how many calls one sweep makes at
// most (bounded, so that one sweep cannot hold a worker for long; the next one goes on).
constexpr std::size_t kTrimBatch = 1000;
constexpr int kMaxTrimBatches = 20;

}  // namespace

const AnnotationValue* EventRecord::annotation(std::string_view name) const {
  for (const auto& [key, value] : annotations) {
    if (key == name) return &value;
  }
  return nullptr;
}

std::string offsetOf(std::int64_t sequence) { return std::to_string(sequence); }

std::optional<std::int64_t> parseOffset(std::string_view offset) {
  if (offset.empty()) return std::nullopt;
  for (char c : offset) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  std::int64_t value = 0;
  auto [end, error] = std::from_chars(offset.data(), offset.data() + offset.size(), value);
  if (error != std::errc() || end != offset.data() + offset.size()) return std::nullopt;
  return value;
}

std::int32_t partitionFor(std::string_view device_id, std::int32_t partitions) {
  // FNV-1a, 32 bits (docs/telemetry.md §1).
  std::uint32_t hash = 2166136261u;
  for (unsigned char c : device_id) {
    hash ^= c;
    hash *= 16777619u;
  }
  const auto n = static_cast<std::uint32_t>(std::max<std::int32_t>(partitions, 1));
  return static_cast<std::int32_t>(hash % n);
}

IdentityLookup registryIdentityLookup(store::Store& store) {
  return [&store](std::string_view device_id) -> Result<DeviceIdentity> {
    auto device = store.registry().getDevice(device_id);
    if (!device) return device.status();
    return DeviceIdentity{device->generation_id, device->auth_type};
  };
}

TelemetryLog::TelemetryLog(store::Store& store, const Clock& clock, TelemetryOptions options,
                           IdentityLookup lookup)
    : store_(store), clock_(clock), options_(options), lookup_(std::move(lookup)) {
  options_.partitions = std::max<std::int32_t>(options_.partitions, 1);
  if (!lookup_) lookup_ = registryIdentityLookup(store_);
  listeners_.resize(static_cast<std::size_t>(options_.partitions));
}

TelemetryLog::TelemetryLog(store::Store& store, const Clock& clock, TelemetryOptions options)
    : TelemetryLog(store, clock, options, registryIdentityLookup(store)) {}

std::int32_t TelemetryLog::partitionOf(std::string_view device_id) const {
  return partitionFor(device_id, options_.partitions);
}

Status TelemetryLog::checkPartition(std::int32_t partition) const {
  if (partition < 0 || partition >= options_.partitions) {
    return Status(ErrorCode::ArgumentInvalid,
                  "partition " + std::to_string(partition) + " does not exist; the hub has " +
                      std::to_string(options_.partitions) + " partitions");
  }
  return Status::ok();
}

Result<DeviceIdentity> TelemetryLog::identityOf(const std::string& device_id) {
  const SystemTime now = clock_.now();
  auto fresh = [&](const CachedIdentity& cached) {
    return cached.fetched <= now && now - cached.fetched < options_.identity_cache_ttl;
  };
  {
    std::lock_guard lock(cache_mutex_);
    if (auto it = cache_.find(device_id); it != cache_.end() && fresh(it->second)) {
      return it->second.identity;
    }
  }
  Result<DeviceIdentity> found = lookup_(device_id);
  if (!found) return found;
  if (options_.identity_cache_size > 0) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= options_.identity_cache_size && !cache_.contains(device_id)) {
      std::erase_if(cache_, [&](const auto& entry) { return !fresh(entry.second); });
      // Still full of live entries: start over rather than track recency (§4).
      if (cache_.size() >= options_.identity_cache_size) cache_.clear();
    }
    cache_[device_id] = CachedIdentity{*found, now};
  }
  return found;
}

void TelemetryLog::forgetDevice(std::string_view device_id) {
  std::lock_guard lock(cache_mutex_);
  if (auto it = cache_.find(std::string(device_id)); it != cache_.end()) cache_.erase(it);
}

Result<store::TelemetryRecord> TelemetryLog::toRecord(device_api::TelemetryMessage message,
                                                      SystemTime now) {
  Result<DeviceIdentity> identity = identityOf(message.device_id);
  if (!identity) return identity.status();

  json::array properties;
  properties.reserve(message.properties.size());
  for (auto& [name, value] : message.properties) {
    properties.push_back(json::array{json::string(name), json::string(value)});
  }
  json::object system;
  putIfSet(system, kMessageId, message.message_id);
  putIfSet(system, kCorrelationId, message.correlation_id);
  putIfSet(system, kUserId, message.user_id);
  putIfSet(system, kTo, message.to);
  putIfSet(system, kContentType, message.content_type);
  putIfSet(system, kContentEncoding, message.content_encoding);
  putIfSet(system, kAbsoluteExpiryTime, message.expiry);
  json::object annotations;
  annotations[kDeviceIdAnnotation] = message.device_id;
  annotations[kAuthMethodAnnotation] = authMethodOf(identity->auth_type);
  annotations[kGenerationIdAnnotation] = identity->generation_id;
  annotations[kMessageSourceAnnotation] = "Telemetry";
  putIfSet(annotations, kInterfaceIdAnnotation, message.interface_id);
  putIfSet(annotations, kSubjectAnnotation, message.subject);

  store::TelemetryRecord record;
  record.partition = partitionOf(message.device_id);
  record.enqueued_time = now;
  record.device_id = std::move(message.device_id);
  record.document = json::object{{kSource, message.source},
                                 {kProperties, std::move(properties)},
                                 {kSystem, std::move(system)},
                                 {kAnnotations, std::move(annotations)}};
  record.body = std::move(message.body);
  return record;
}

Status TelemetryLog::accept(device_api::TelemetryMessage message) {
  std::vector<device_api::TelemetryMessage> messages;
  messages.push_back(std::move(message));
  return acceptAll(std::move(messages));
}

Status TelemetryLog::acceptAll(std::vector<device_api::TelemetryMessage> messages) {
  if (messages.empty()) return Status::ok();
  const SystemTime now = clock_.now();
  std::vector<store::TelemetryRecord> records;
  records.reserve(messages.size());
  for (auto& message : messages) {
    Result<store::TelemetryRecord> record = toRecord(std::move(message), now);
    if (!record) {
      counters_.append_failures.fetch_add(messages.size(), std::memory_order_relaxed);
      return record.status();
    }
    records.push_back(std::move(record).value());
  }
  return append(std::move(records));
}

void TelemetryLog::acceptAsync(device_api::TelemetryMessage message,
                               std::function<void(Status)> done) {
  {
    std::lock_guard lock(queue_mutex_);
    std::size_t bytes = message.body.size();
    if (stopping_ || (queued_bytes_ > 0 && queued_bytes_ + bytes > options_.max_queued_bytes)) {
      counters_.append_failures.fetch_add(1, std::memory_order_relaxed);
      // Outside the lock: `done` may call back in.
    } else {
      if (!appender_.joinable()) appender_ = std::thread([this] { appendLoop(); });
      queued_bytes_ += bytes;
      queue_.push_back(Pending{std::move(message), std::move(done)});
      queue_cv_.notify_one();
      return;
    }
  }
  done(Status(ErrorCode::ServiceUnavailable,
              "The hub's telemetry log is stopping or too far behind; send again later"));
}

void TelemetryLog::appendLoop() {
  for (;;) {
    std::vector<Pending> batch;
    {
      std::unique_lock lock(queue_mutex_);
      queue_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued was appended
      std::size_t n = std::min(queue_.size(), std::max<std::size_t>(options_.max_batch, 1));
      batch.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        queued_bytes_ -= queue_.front().message.body.size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    appendBatch(std::move(batch));
  }
}

void TelemetryLog::appendBatch(std::vector<Pending> batch) {
  const SystemTime now = clock_.now();
  std::vector<store::TelemetryRecord> records;
  std::vector<std::function<void(Status)>> appended;  // the done of each record, in order
  records.reserve(batch.size());
  appended.reserve(batch.size());
  for (Pending& pending : batch) {
    Result<store::TelemetryRecord> record = toRecord(std::move(pending.message), now);
    if (!record) {
      // This device only (deleted meanwhile, or the registry failed): the others go on.
      counters_.append_failures.fetch_add(1, std::memory_order_relaxed);
      pending.done(record.status());
      continue;
    }
    records.push_back(std::move(record).value());
    appended.push_back(std::move(pending.done));
  }
  if (records.empty()) return;
  Status status = append(std::move(records));
  for (auto& done : appended) done(status);
}

void TelemetryLog::stop() {
  {
    std::lock_guard lock(queue_mutex_);
    stopping_ = true;
  }
  queue_cv_.notify_all();
  if (appender_.joinable() && appender_.get_id() != std::this_thread::get_id()) appender_.join();
}

TelemetryLog::~TelemetryLog() { stop(); }

Status TelemetryLog::append(std::vector<store::TelemetryRecord> records) {
  auto sequences = store_.telemetry().appendTelemetry(records);
  if (!sequences) {
    counters_.append_failures.fetch_add(records.size(), std::memory_order_relaxed);
    return sequences.status();
  }
  std::uint64_t bytes = 0;
  std::set<std::int32_t> partitions;
  for (const auto& record : records) {
    bytes += record.body.size();
    partitions.insert(record.partition);
  }
  counters_.appended.fetch_add(records.size(), std::memory_order_relaxed);
  counters_.bytes.fetch_add(bytes, std::memory_order_relaxed);
  // Committed: wake the readers of each partition that grew, once.
  std::shared_lock lock(listeners_mutex_);
  for (std::int32_t partition : partitions) {
    for (const Listener& listener : listeners_[static_cast<std::size_t>(partition)]) {
      listener.wake();
    }
  }
  return Status::ok();
}

Result<std::vector<EventRecord>> TelemetryLog::read(std::int32_t partition,
                                                    std::int64_t from_sequence, std::size_t limit,
                                                    std::size_t max_bytes) {
  IOTHUB_RETURN_IF_ERROR(checkPartition(partition));
  auto records = store_.telemetry().readTelemetry(partition, from_sequence, limit, max_bytes);
  if (!records) return records.status();
  std::vector<EventRecord> events;
  events.reserve(records->size());
  for (auto& record : *records) events.push_back(toEvent(std::move(record)));
  return events;
}

Result<store::TelemetryPartitionInfo> TelemetryLog::partitionInfo(std::int32_t partition) {
  IOTHUB_RETURN_IF_ERROR(checkPartition(partition));
  return store_.telemetry().telemetryPartition(partition);
}

Result<std::int64_t> TelemetryLog::sequenceAfter(std::int32_t partition, SystemTime t) {
  IOTHUB_RETURN_IF_ERROR(checkPartition(partition));
  return store_.telemetry().telemetrySequenceAfter(partition, t);
}

std::uint64_t TelemetryLog::listen(std::int32_t partition, std::function<void()> wake) {
  if (!checkPartition(partition).isOk() || !wake) return 0;
  std::unique_lock lock(listeners_mutex_);
  const std::uint64_t id = next_listener_id_++;
  listeners_[static_cast<std::size_t>(partition)].push_back(Listener{id, std::move(wake)});
  return id;
}

void TelemetryLog::unlisten(std::uint64_t id) {
  if (id == 0) return;
  std::unique_lock lock(listeners_mutex_);
  for (auto& partition : listeners_) {
    auto it = std::find_if(partition.begin(), partition.end(),
                           [id](const Listener& listener) { return listener.id == id; });
    if (it != partition.end()) {
      partition.erase(it);
      return;
    }
  }
}

Result<std::size_t> TelemetryLog::sweep() {
  const SystemTime now = clock_.now();
  const SystemTime cutoff =
      addClamped(now, -std::chrono::duration_cast<std::chrono::seconds>(options_.retention));
  const std::int32_t n = options_.partitions;
  std::int32_t partition = sweep_cursor_.load(std::memory_order_relaxed) % n;
  std::size_t removed = 0;
  int batches = 0;
  Status failed;
  for (std::int32_t visited = 0; visited < n && batches < kMaxTrimBatches; ++visited) {
    bool done = false;
    while (batches < kMaxTrimBatches) {
      ++batches;
      auto trimmed = store_.telemetry().trimTelemetry(partition, cutoff,
                                                      options_.max_partition_bytes, kTrimBatch);
      if (!trimmed) {
        failed = trimmed.status();
        break;
      }
      removed += *trimmed;
      if (*trimmed < kTrimBatch) {
        done = true;
        break;
      }
    }
    if (!done) break;  // out of budget (or failed) in this partition: the next sweep resumes
    partition = (partition + 1) % n;
  }
  sweep_cursor_.store(partition, std::memory_order_relaxed);
  counters_.trimmed.fetch_add(removed, std::memory_order_relaxed);
  if (!failed.isOk()) return failed;
  return removed;
}

}  // namespace iothub::telemetry
