#include "server/event_hubs.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <unordered_map>

#include "common/encoding.hpp"
#include "server/amqp_service.hpp"

namespace iothub::server {
namespace {

constexpr std::string_view kManagement = "$management";
constexpr std::string_view kSelectorFilter = "apache.org:selector-filter:string";
constexpr std::string_view kEpochProperty = "com.microsoft:epoch";
constexpr std::string_view kStolen = "amqp:link:stolen";

std::optional<std::int64_t> parseInt64(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

amqp::Timestamp timestampOf(SystemTime t) {
  return {std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count()};
}

// Statuses of a $management reply (docs/event-hubs.md §3): what the SDK maps to its errors.
int statusOf(const Status& status) {
  switch (status.code()) {
    case ErrorCode::ArgumentInvalid:
    case ErrorCode::ArgumentNull:
      return 400;
    case ErrorCode::NotFound:
      return 404;
    default:
      return 503;
  }
}

// The links of one AMQP connection that belong to the Event Hubs endpoint. Lives on the
// connection's strand and dies with it; store work goes to `blocking` and comes back through
// `post`, which does nothing once the connection ended. Log listeners and timers are removed
// before this object goes, so their callbacks never find it destroyed.
class EventHubsLinks final : public amqp::LinkHandler {
 public:
  EventHubsLinks(const std::string& entity, telemetry::TelemetryLog& log, store::Store& store,
                 EventHubsService::Executor blocking, Scheduler& scheduler,
                 const EventHubsOptions& options, std::shared_ptr<EventHubsCounters> counters,
                 std::shared_ptr<ReaderRegistry> registry, transport::AmqpConnectionPost post)
      : entity_(entity),
        log_(log),
        store_(store),
        blocking_(std::move(blocking)),
        scheduler_(scheduler),
        options_(options),
        counters_(std::move(counters)),
        registry_(std::move(registry)),
        post_(std::move(post)) {}

  ~EventHubsLinks() override {
    for (auto& [id, reader] : readers_) release(reader);
  }

  std::optional<amqp::ErrorCondition> onAttach(const amqp::LinkRequest& request) override {
    if (auto refused = requireServiceConnect(request)) return refused;
    if (request.address == kManagement) {
      if (request.role == amqp::LinkRole::Sender) {
        management_senders_.insert({request.id, true});
      } else {
        management_receivers_[request.id] = request.name;
      }
      return std::nullopt;
    }
    if (request.role != amqp::LinkRole::Receiver) {
      return amqp::ErrorCondition{"amqp:not-allowed",
                                  "the Event Hubs endpoint of an IoT hub is read-only"};
    }
    return attachReader(request);
  }

  amqp::Outcome onMessage(amqp::LinkId link, amqp::DeliveryId /*delivery*/,
                          const amqp::Message& message) override {
    if (!management_senders_.contains(link)) {
      return amqp::Outcome::rejected("amqp:not-allowed", "not a $management link");
    }
    counters_->management_requests.fetch_add(1, std::memory_order_relaxed);
    answerManagement(message);
    return amqp::Outcome::accepted();
  }

  void onDetach(amqp::LinkId link) override {
    management_senders_.erase(link);
    management_receivers_.erase(link);
    auto it = readers_.find(link);
    if (it == readers_.end()) return;
    release(it->second);
    readers_.erase(it);
  }

  void onCredit(amqp::LinkId link, int credit) override {
    auto it = readers_.find(link);
    if (it == readers_.end() || credit <= 0) return;
    readSoon(link, it->second);
  }

 private:
  struct Reader {
    PartitionAddress where;
    std::uint64_t registry_id = 0;
    std::uint64_t listener = 0;
    Scheduler::TimerId timer = 0;
    std::optional<std::int64_t> next;  // the next sequence to send, once resolved
    bool busy = false;                 // a read (or the resolution) is under way
    bool missed = false;               // a wake-up came while busy: read again after it
    std::chrono::steady_clock::time_point last_read{};  // when the last read started
    std::chrono::steady_clock::time_point timer_due{};  // of `timer`, when set
    std::uint64_t timer_seq = 0;                        // which armTimer set `timer`
    // Set by a wake-up until the strand handles it: one post per burst of appends.
    std::shared_ptr<std::atomic<bool>> woken = std::make_shared<std::atomic<bool>>(false);
  };

  void release(Reader& reader) {
    if (reader.listener != 0) log_.unlisten(reader.listener);
    if (reader.timer != 0) scheduler_.cancel(reader.timer);
    if (reader.registry_id != 0) {
      registry_->remove(reader.where.consumer_group, reader.where.partition, reader.registry_id);
      counters_->receivers.fetch_sub(1, std::memory_order_relaxed);
    }
    reader.listener = 0;
    reader.timer = 0;
    reader.registry_id = 0;
  }

  std::optional<amqp::ErrorCondition> attachReader(const amqp::LinkRequest& request) {
    auto refuse = [this](std::string condition, std::string description) {
      counters_->receivers_refused.fetch_add(1, std::memory_order_relaxed);
      return amqp::ErrorCondition{std::move(condition), std::move(description)};
    };
    auto where = parsePartitionAddress(entity_, request.address);
    if (!where) {
      return refuse("amqp:not-found", "The messaging entity '" + request.address +
                                          "' could not be found; receive from " + entity_ +
                                          "/ConsumerGroups/<group>/Partitions/<id>");
    }
    if (where->partition < 0 || where->partition >= log_.partitions()) {
      return refuse("com.microsoft:argument-out-of-range",
                    "The specified partition is invalid for an EventHub partition sender or "
                    "receiver. It should be between 0 and " +
                        std::to_string(log_.partitions() - 1) + ".");
    }
    StartPosition start;
    if (auto filter = request.filters.find(std::string(kSelectorFilter));
        filter != request.filters.end()) {
      auto parsed = parseSelector(filter->second);
      if (!parsed) return refuse("com.microsoft:argument-error", parsed.status().message());
      start = *parsed;
    }
    std::optional<std::int64_t> epoch;
    if (auto property = request.properties.find(std::string(kEpochProperty));
        property != request.properties.end()) {
      epoch = parseInt64(trim(property->second));
      if (!epoch)
        return refuse("com.microsoft:argument-error", "com.microsoft:epoch must be a long");
    }
    ReaderRegistry::Reader entry;
    entry.id = registry_->nextId();
    entry.epoch = epoch;
    entry.steal = [post = post_, link = request.id, counters = counters_] {
      counters->receivers_stolen.fetch_add(1, std::memory_order_relaxed);
      post([link](amqp::ServerConnection& core) {
        core.detach(link, {std::string(kStolen),
                           "New receiver with a higher epoch was created, hence the current "
                           "receiver is being disconnected"});
      });
    };
    if (auto refused = registry_->admit(where->consumer_group, where->partition, entry)) {
      counters_->receivers_refused.fetch_add(1, std::memory_order_relaxed);
      return refused;
    }
    counters_->receivers.fetch_add(1, std::memory_order_relaxed);
    counters_->receivers_attached.fetch_add(1, std::memory_order_relaxed);
    Reader& reader = readers_[request.id];
    reader.where = *where;
    reader.registry_id = entry.id;
    reader.busy = true;
    reader.listener = log_.listen(
        where->partition, [post = post_, woken = reader.woken, link = request.id, this] {
          if (woken->exchange(true)) return;
          // `this` is only touched on the strand, which runs while the connection (and so
          // this handler) lives.
          post([this, link](amqp::ServerConnection& core) { onWake(core, link); });
        });
    resolve(request.id, *where, start);
    return std::nullopt;
  }

  // On a worker: checks the consumer group and turns the start position into a sequence.
  void resolve(amqp::LinkId link, const PartitionAddress& where, StartPosition start) {
    blocking_(
        [this, &log = log_, &store = store_, entity = entity_, post = post_, link, where, start] {
          Result<std::int64_t> next = [&]() -> Result<std::int64_t> {
            auto group = store.telemetry().getConsumerGroup(where.consumer_group);
            if (!group) {
              if (group.code() == ErrorCode::ConsumerGroupNotFound) {
                return Status(ErrorCode::NotFound, "The messaging entity '" + entity +
                                                       "/ConsumerGroups/" + where.consumer_group +
                                                       "' could not be found");
              }
              return group.status();
            }
            switch (start.kind) {
              case StartPosition::Kind::Sequence:
                return start.sequence;
              case StartPosition::Kind::Latest: {
                auto info = log.partitionInfo(where.partition);
                if (!info) return info.status();
                return info->next_sequence;
              }
              case StartPosition::Kind::EnqueuedAfter:
                return log.sequenceAfter(where.partition, start.time);
            }
            return Status(ErrorCode::ServerError, "unknown start position");
          }();
          post([this, link, next = std::move(next)](amqp::ServerConnection& core) {
            auto it = readers_.find(link);
            if (it == readers_.end()) return;
            it->second.busy = false;
            if (!next) {
              bool missing = next.code() == ErrorCode::NotFound;
              if (!missing) {
                spdlog::warn("event hubs: cannot position a reader: {}", next.status().toString());
              }
              counters_->receivers_refused.fetch_add(1, std::memory_order_relaxed);
              core.detach(link, {missing ? "amqp:not-found" : "com.microsoft:server-busy",
                                 next.status().message()});
              return;
            }
            it->second.next = *next;
            if (core.credit(link) > 0) read(core, link, it->second);
          });
        });
  }

  void onWake(amqp::ServerConnection& core, amqp::LinkId link) {
    auto it = readers_.find(link);
    if (it == readers_.end()) return;
    it->second.woken->store(false);
    if (it->second.busy) {
      // The read under way may have missed what woke us: read again once it is done.
      it->second.missed = true;
      return;
    }
    readPaced(core, link, it->second);
  }

  // Reads now, or once min_read_interval has passed since the last read.
  void readPaced(amqp::ServerConnection& core, amqp::LinkId link, Reader& reader) {
    if (core.credit(link) <= 0) return;  // onCredit reads when credit comes
    auto now = std::chrono::steady_clock::now();
    auto ready = reader.last_read + options_.min_read_interval;
    if (now >= ready) {
      read(core, link, reader);
    } else {
      armTimer(link, reader, ready - now);
    }
  }

  // From onCredit, which has no core at hand: reads on the next turn of the strand.
  void readSoon(amqp::LinkId link, Reader& reader) {
    if (reader.busy || !reader.next) return;
    reader.busy = true;
    post_([this, link](amqp::ServerConnection& core) {
      auto it = readers_.find(link);
      if (it == readers_.end()) return;
      it->second.busy = false;
      if (core.credit(link) > 0) read(core, link, it->second);
    });
  }

  // On the strand: reads up to the link's credit from the log, then sends.
  void read(amqp::ServerConnection& core, amqp::LinkId link, Reader& reader) {
    if (reader.busy || !reader.next) return;
    if (reader.timer != 0) {
      scheduler_.cancel(reader.timer);
      reader.timer = 0;
      ++reader.timer_seq;  // its callback, if already on its way, does nothing
    }
    reader.busy = true;
    reader.last_read = std::chrono::steady_clock::now();
    std::size_t limit =
        std::min<std::size_t>(options_.batch, static_cast<std::size_t>(core.credit(link)));
    blocking_([this, &log = log_, post = post_, link, partition = reader.where.partition,
               from = *reader.next, limit, bytes = options_.batch_bytes] {
      auto events = log.read(partition, from, limit, bytes);
      post([this, link, events = std::move(events)](amqp::ServerConnection& later) mutable {
        send(later, link, std::move(events));
      });
    });
  }

  void send(amqp::ServerConnection& core, amqp::LinkId link,
            Result<std::vector<telemetry::EventRecord>> events) {
    auto it = readers_.find(link);
    if (it == readers_.end()) return;
    Reader& reader = it->second;
    reader.busy = false;
    if (!events) {
      spdlog::warn("event hubs: cannot read partition {}: {}", reader.where.partition,
                   events.status().toString());
      armTimer(link, reader, options_.poll);
      return;
    }
    std::size_t sent = 0;
    for (const auto& event : *events) {
      // A reader asking for a trimmed position starts at the first retained event.
      if (!core.send(link, toAmqp(event))) break;
      reader.next = event.sequence + 1;
      ++sent;
    }
    counters_->events_sent.fetch_add(sent, std::memory_order_relaxed);
    bool full = sent > 0 && sent == events->size();
    bool missed = reader.missed;
    reader.missed = false;
    if (full && core.credit(link) > 0) {
      read(core, link, reader);  // more may be there
      return;
    }
    if (missed) {
      readPaced(core, link, reader);
      if (reader.busy || reader.timer != 0) return;
    }
    // Caught up (or out of credit): appends wake the reader; the poll covers appends on
    // other nodes.
    armTimer(link, reader, options_.poll);
  }

  // Reads after `delay` (a poll, or a paced read), unless a timer due sooner is set.
  void armTimer(amqp::LinkId link, Reader& reader, std::chrono::steady_clock::duration delay) {
    auto due = std::chrono::steady_clock::now() + delay;
    if (reader.timer != 0) {
      if (reader.timer_due <= due) return;
      scheduler_.cancel(reader.timer);
    }
    reader.timer_due = due;
    std::uint64_t seq = ++reader.timer_seq;
    reader.timer = scheduler_.schedule(delay, [this, post = post_, link, seq] {
      post([this, link, seq](amqp::ServerConnection& core) {
        auto it = readers_.find(link);
        // Gone, or replaced by a timer due sooner (whose cancel came too late for this one).
        if (it == readers_.end() || it->second.timer_seq != seq) return;
        it->second.timer = 0;
        if (core.credit(link) > 0) {
          read(core, link, it->second);
        } else {
          armTimer(link, it->second, options_.poll);
        }
      });
    });
  }

  // A $management request (docs/event-hubs.md §3): answered on the connection's
  // $management receiver named by reply-to (the only one, when reply-to names none).
  void answerManagement(const amqp::Message& request) {
    auto property = [&](std::string_view name) -> std::string {
      auto it = request.application_properties.find(std::string(name));
      return it == request.application_properties.end() ? std::string() : it->second;
    };
    std::string operation = property("operation");
    std::string type = property("type");
    std::string name = property("name");
    std::string partition_text = property("partition");
    std::string reply_to = request.reply_to.value_or("");
    std::string correlation = request.message_id.value_or("");
    auto reply = [this, reply_to, correlation](
                     amqp::ServerConnection& core, int status, std::string description,
                     std::optional<std::map<std::string, amqp::Value>> body) {
      amqp::Message message;
      message.correlation_id = correlation;
      message.typed_application_properties["status-code"] = std::int32_t{status};
      message.typed_application_properties["status-description"] = std::move(description);
      message.value_body = std::move(body);
      std::optional<amqp::LinkId> target;
      for (const auto& [id, link_name] : management_receivers_) {
        if (link_name == reply_to || !target) target = id;
        if (link_name == reply_to) break;
      }
      if (!target || !core.send(*target, message)) {
        spdlog::debug("event hubs: a $management reply found no receiver with credit");
      }
    };
    if (operation != "READ") {
      post_([reply, operation](amqp::ServerConnection& core) {
        reply(core, 400, "unsupported operation '" + operation + "'", std::nullopt);
      });
      return;
    }
    if (!equalsIgnoreCase(name, entity_)) {
      post_([reply, name](amqp::ServerConnection& core) {
        reply(core, 404, "The messaging entity '" + name + "' could not be found", std::nullopt);
      });
      return;
    }
    if (type == "com.microsoft:eventhub") {
      blocking_([this, &store = store_, post = post_, reply] {
        auto group = store.telemetry().getConsumerGroup("$Default");
        post([this, reply, group = std::move(group)](amqp::ServerConnection& core) {
          if (!group) {
            reply(core, statusOf(group.status()), group.status().message(), std::nullopt);
            return;
          }
          std::vector<std::string> ids;
          for (std::int32_t p = 0; p < log_.partitions(); ++p) ids.push_back(std::to_string(p));
          std::map<std::string, amqp::Value> body;
          body["name"] = entity_;
          body["created_at"] = timestampOf(group->created_time);
          body["partition_count"] = std::int32_t{log_.partitions()};
          body["partition_ids"] = std::move(ids);
          reply(core, 200, "OK", std::move(body));
        });
      });
      return;
    }
    if (type == "com.microsoft:partition") {
      auto partition = parseInt64(partition_text);
      if (!partition || *partition < 0 || *partition >= log_.partitions()) {
        post_([reply, this](amqp::ServerConnection& core) {
          reply(core, 400,
                "The specified partition is invalid. It should be between 0 and " +
                    std::to_string(log_.partitions() - 1) + ".",
                std::nullopt);
        });
        return;
      }
      auto id = static_cast<std::int32_t>(*partition);
      blocking_([this, &log = log_, post = post_, reply, id] {
        auto info = log.partitionInfo(id);
        post([this, reply, id, info = std::move(info)](amqp::ServerConnection& core) {
          if (!info) {
            reply(core, statusOf(info.status()), info.status().message(), std::nullopt);
            return;
          }
          std::map<std::string, amqp::Value> body;
          body["name"] = entity_;
          body["partition"] = std::to_string(id);
          bool empty = info->begin_sequence >= info->next_sequence;
          body["begin_sequence_number"] = std::int64_t{empty ? -1 : info->begin_sequence};
          body["last_enqueued_sequence_number"] = std::int64_t{info->next_sequence - 1};
          body["last_enqueued_offset"] = telemetry::offsetOf(info->next_sequence - 1);
          body["last_enqueued_time_utc"] = timestampOf(info->last_enqueued_time);
          body["is_partition_empty"] = empty;
          reply(core, 200, "OK", std::move(body));
        });
      });
      return;
    }
    post_([reply, type](amqp::ServerConnection& core) {
      reply(core, 400, "unsupported type '" + type + "'", std::nullopt);
    });
  }

  const std::string& entity_;
  telemetry::TelemetryLog& log_;
  store::Store& store_;
  EventHubsService::Executor blocking_;
  Scheduler& scheduler_;
  const EventHubsOptions& options_;
  std::shared_ptr<EventHubsCounters> counters_;
  std::shared_ptr<ReaderRegistry> registry_;
  transport::AmqpConnectionPost post_;
  std::unordered_map<amqp::LinkId, bool> management_senders_;
  std::map<amqp::LinkId, std::string> management_receivers_;  // id → link name
  std::unordered_map<amqp::LinkId, Reader> readers_;
};

}  // namespace

std::string eventHubsEntity(std::string_view host_name) {
  std::string_view label = host_name.substr(0, host_name.find_first_of(".:"));
  return label.empty() ? std::string("iothub") : std::string(label);
}

bool isEventHubsAddress(std::string_view entity, std::string_view address) {
  if (address == kManagement) return true;
  return address.size() > entity.size() && address[entity.size()] == '/' &&
         equalsIgnoreCase(address.substr(0, entity.size()), entity);
}

std::optional<PartitionAddress> parsePartitionAddress(std::string_view entity,
                                                      std::string_view address) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    std::size_t slash = address.find('/', start);
    parts.push_back(address.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  if (parts.size() != 5 || !equalsIgnoreCase(parts[0], entity) ||
      !equalsIgnoreCase(parts[1], "ConsumerGroups") || parts[2].empty() ||
      !equalsIgnoreCase(parts[3], "Partitions")) {
    return std::nullopt;
  }
  std::int32_t partition = 0;
  std::string_view digits = parts[4];
  if (digits.empty() ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), partition);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return PartitionAddress{std::string(parts[2]), partition};
}

Result<StartPosition> parseSelector(std::string_view expression) {
  auto invalid = [&](std::string_view why) {
    return Status(ErrorCode::ArgumentInvalid, "invalid start position '" +
                                                  std::string(expression.substr(0, 200)) +
                                                  "': " + std::string(why));
  };
  std::string_view text = trim(expression);
  if (text.empty()) return StartPosition{};
  constexpr std::string_view kPrefix = "amqp.annotation.";
  if (!text.starts_with(kPrefix)) return invalid("expected amqp.annotation.x-opt-…");
  text.remove_prefix(kPrefix.size());
  enum class Field { Offset, Sequence, Time } field;
  if (text.starts_with("x-opt-offset")) {
    field = Field::Offset;
    text.remove_prefix(12);
  } else if (text.starts_with("x-opt-sequence-number")) {
    field = Field::Sequence;
    text.remove_prefix(21);
  } else if (text.starts_with("x-opt-enqueued-time")) {
    field = Field::Time;
    text.remove_prefix(19);
  } else {
    return invalid("filter on x-opt-offset, x-opt-sequence-number or x-opt-enqueued-time");
  }
  text = trim(text);
  bool inclusive = false;
  if (text.starts_with(">=")) {
    inclusive = true;
    text.remove_prefix(2);
  } else if (text.starts_with(">")) {
    text.remove_prefix(1);
  } else {
    return invalid("the operator must be > or >=");
  }
  text = trim(text);
  if (text.size() < 2 || text.front() != '\'' || text.back() != '\'') {
    return invalid("the value must be quoted with '");
  }
  std::string_view value = text.substr(1, text.size() - 2);
  StartPosition start;
  if (field == Field::Time) {
    auto ms = parseInt64(value);
    if (!ms) return invalid("the enqueued time must be milliseconds since the epoch");
    start.kind = StartPosition::Kind::EnqueuedAfter;
    // `>=` starts with an event enqueued at exactly that millisecond.
    start.time = SystemTime{std::chrono::milliseconds{*ms - (inclusive ? 1 : 0)}};
    return start;
  }
  if (field == Field::Offset && value == "@latest") {
    start.kind = StartPosition::Kind::Latest;
    return start;
  }
  std::optional<std::int64_t> position;
  if (value == "-1") {
    position = -1;
  } else {
    position = field == Field::Offset ? telemetry::parseOffset(value) : parseInt64(value);
  }
  if (!position || *position < -1) return invalid("not a position in the partition");
  if (*position == std::numeric_limits<std::int64_t>::max() && !inclusive) {
    return invalid("not a position in the partition");
  }
  start.sequence = std::max<std::int64_t>(0, inclusive ? *position : *position + 1);
  return start;
}

std::optional<amqp::ErrorCondition> ReaderRegistry::admit(std::string_view group,
                                                          std::int32_t partition, Reader reader) {
  std::vector<std::function<void()>> displaced;
  {
    std::lock_guard lock(mutex_);
    auto& readers = readers_[{store::consumerGroupKey(group), partition}];
    std::optional<std::int64_t> highest;
    for (const auto& r : readers) {
      if (r.epoch && (!highest || *r.epoch > *highest)) highest = r.epoch;
    }
    if (reader.epoch) {
      if (highest && *highest > *reader.epoch) {
        return amqp::ErrorCondition{std::string(kStolen),
                                    "Receiver with a higher epoch of '" + std::to_string(*highest) +
                                        "' already exists; a new receiver with epoch " +
                                        std::to_string(*reader.epoch) + " cannot be created"};
      }
      for (auto& r : readers) displaced.push_back(std::move(r.steal));
      readers.clear();
    } else {
      if (highest) {
        return amqp::ErrorCondition{std::string(kStolen),
                                    "A receiver with epoch '" + std::to_string(*highest) +
                                        "' reads this partition; a receiver without an epoch "
                                        "cannot be created"};
      }
      if (readers.size() >= max_readers_) {
        return amqp::ErrorCondition{
            "amqp:resource-limit-exceeded",
            "Exceeded the maximum number of allowed receivers per partition in a consumer "
            "group, which is " +
                std::to_string(max_readers_)};
      }
    }
    readers.push_back(std::move(reader));
  }
  for (auto& steal : displaced) {
    if (steal) steal();
  }
  return std::nullopt;
}

void ReaderRegistry::remove(std::string_view group, std::int32_t partition, std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = readers_.find({store::consumerGroupKey(group), partition});
  if (it == readers_.end()) return;
  std::erase_if(it->second, [id](const Reader& r) { return r.id == id; });
  if (it->second.empty()) readers_.erase(it);
}

EventHubsService::EventHubsService(std::string entity, telemetry::TelemetryLog& log,
                                   store::Store& store, Executor blocking, Scheduler& scheduler,
                                   EventHubsOptions options)
    : entity_(std::move(entity)),
      log_(log),
      store_(store),
      blocking_(std::move(blocking)),
      scheduler_(scheduler),
      options_(options),
      registry_(std::make_shared<ReaderRegistry>(options.max_readers)) {}

std::unique_ptr<amqp::LinkHandler> EventHubsService::makeHandler(
    transport::AmqpConnectionPost post) {
  return std::make_unique<EventHubsLinks>(entity_, log_, store_, blocking_, scheduler_, options_,
                                          counters_, registry_, std::move(post));
}

amqp::Message toAmqp(const telemetry::EventRecord& event) {
  amqp::Message message;
  auto set = [](std::optional<std::string>& field, const std::string& value) {
    if (!value.empty()) field = value;
  };
  set(message.message_id, event.system.message_id);
  set(message.correlation_id, event.system.correlation_id);
  set(message.user_id, event.system.user_id);
  set(message.to, event.system.to);
  set(message.content_type, event.system.content_type);
  set(message.content_encoding, event.system.content_encoding);
  if (event.system.absolute_expiry_time) {
    message.absolute_expiry_time_ms = timestampOf(*event.system.absolute_expiry_time).ms;
  }
  for (const auto& [name, value] : event.properties) message.application_properties[name] = value;
  for (const auto& [name, value] : event.annotations) {
    if (const auto* text = std::get_if<std::string>(&value)) {
      message.typed_message_annotations[name] = *text;
    } else if (const auto* number = std::get_if<std::int64_t>(&value)) {
      message.typed_message_annotations[name] = *number;
    } else {
      message.typed_message_annotations[name] = timestampOf(std::get<SystemTime>(value));
    }
  }
  message.body = event.body;
  return message;
}

}  // namespace iothub::server
