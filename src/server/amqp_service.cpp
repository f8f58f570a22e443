#include "server/amqp_service.hpp"

#include <spdlog/spdlog.h>

#include <unordered_map>

#include "auth/sas_token.hpp"
#include "common/encoding.hpp"
#include "common/json.hpp"

namespace iothub::server {
namespace {

constexpr std::string_view kDeviceBound = "/messages/devicebound";
constexpr std::string_view kFeedback = "/messages/serviceBound/feedback";
constexpr std::string_view kFeedbackContentType = "application/vnd.microsoft.iothub.feedback.json";

// How a refused send reaches azure-iothub: the rejected outcome's condition picks its error
// class (docs/amqp.md §1.6; retried ones: timeout, internal-error).
amqp::Outcome refusal(const Status& status) {
  switch (status.code()) {
    case ErrorCode::DeviceNotFound:
      return amqp::Outcome::rejected("amqp:not-found", status.message());
    case ErrorCode::DeviceMaximumQueueDepthExceeded:
      return amqp::Outcome::rejected("amqp:resource-limit-exceeded", status.message());
    case ErrorCode::MessageTooLarge:
      return amqp::Outcome::rejected("amqp:link:message-size-exceeded", status.message());
    case ErrorCode::ArgumentInvalid:
    case ErrorCode::ArgumentNull:
      return amqp::Outcome::rejected("com.microsoft:argument-error", status.message());
    case ErrorCode::ServiceUnavailable:
    case ErrorCode::Cancelled:
      return amqp::Outcome::rejected("com.microsoft:timeout", status.message());
    default:
      return amqp::Outcome::rejected("amqp:internal-error", status.message());
  }
}

// The links of one AMQP connection. Lives on the connection's strand and dies with it;
// store work goes to `blocking` and comes back through `post`, which does nothing once the
// connection ended, so a callback never finds this object destroyed.
class ServiceLinks final : public amqp::LinkHandler {
 public:
  ServiceLinks(c2d::CloudToDevice& c2d, AmqpService::Executor blocking, Scheduler& scheduler,
               const AmqpServiceOptions& options, std::shared_ptr<AmqpServiceCounters> counters,
               transport::AmqpConnectionPost post)
      : c2d_(c2d),
        blocking_(std::move(blocking)),
        scheduler_(scheduler),
        options_(options),
        counters_(std::move(counters)),
        post_(std::move(post)) {}

  ~ServiceLinks() override {
    for (auto& [id, link] : feedback_) {
      if (link.timer != 0) scheduler_.cancel(link.timer);
    }
  }

  std::optional<amqp::ErrorCondition> onAttach(const amqp::LinkRequest& request) override {
    if (auto refused = requireServiceConnect(request)) return refused;
    if (request.role == amqp::LinkRole::Sender && request.address == kDeviceBound) {
      senders_.insert({request.id, true});
      return std::nullopt;
    }
    if (request.role == amqp::LinkRole::Receiver && request.address == kFeedback) {
      feedback_[request.id] = FeedbackLink{};
      return std::nullopt;
    }
    return amqp::ErrorCondition{"amqp:not-found", "no node '" + request.address + "' here"};
  }

  amqp::Outcome onMessage(amqp::LinkId link, amqp::DeliveryId delivery,
                          const amqp::Message& message) override {
    if (!senders_.contains(link)) {
      return amqp::Outcome::rejected("amqp:not-allowed", "not a C2D link");
    }
    auto outgoing = toOutgoing(message);
    if (!outgoing) {
      counters_->c2d_refused.fetch_add(1, std::memory_order_relaxed);
      return refusal(outgoing.status());
    }
    blocking_([&c2d = c2d_, counters = counters_, post = post_, delivery,
               m = std::move(*outgoing)]() mutable {
      Status sent = c2d.send(std::move(m));
      (sent ? counters->c2d_accepted : counters->c2d_refused)
          .fetch_add(1, std::memory_order_relaxed);
      amqp::Outcome outcome = sent ? amqp::Outcome::accepted() : refusal(sent);
      post([delivery, outcome](amqp::ServerConnection& core) { core.settle(delivery, outcome); });
    });
    return amqp::Outcome::deferred();
  }

  void onDetach(amqp::LinkId link) override {
    senders_.erase(link);
    auto it = feedback_.find(link);
    if (it == feedback_.end()) return;
    if (it->second.timer != 0) scheduler_.cancel(it->second.timer);
    feedback_.erase(it);
  }

  void onCredit(amqp::LinkId link, int credit) override {
    auto it = feedback_.find(link);
    if (it == feedback_.end() || credit <= 0 || it->second.busy) return;
    fetchFeedback(link);
  }

 private:
  struct FeedbackLink {
    bool busy = false;  // a fetch is under way, or a poll is scheduled
    Scheduler::TimerId timer = 0;
  };

  // A C2D message as azure-iothub sends it (docs/amqp.md §3.2).
  static Result<c2d::OutgoingMessage> toOutgoing(const amqp::Message& message) {
    c2d::OutgoingMessage out;
    auto device = deviceIdFromTo(message.to.value_or(""));
    if (!device) {
      return Status(ErrorCode::ArgumentInvalid,
                    "the message's 'to' must be /devices/{deviceId}/messages/devicebound");
    }
    out.device_id = std::move(*device);
    out.message_id = message.message_id.value_or("");
    out.correlation_id = message.correlation_id.value_or("");
    out.user_id = message.user_id.value_or("");
    out.content_type = message.content_type.value_or("");
    out.content_encoding = message.content_encoding.value_or("");
    if (message.absolute_expiry_time_ms) {
      out.expiry = SystemTime{std::chrono::milliseconds{*message.absolute_expiry_time_ms}};
    }
    for (const auto& [name, value] : message.application_properties) {
      if (name == "iothub-ack") {
        auto ack = c2d::parseAck(value);
        if (!ack) {
          return Status(ErrorCode::ArgumentInvalid,
                        "iothub-ack must be none, positive, negative or full");
        }
        out.ack = *ack;
        continue;
      }
      out.properties.emplace_back(name, value);
    }
    out.body = message.body;
    return out;
  }

  // On the strand: takes a batch of feedback records on a worker, then sends it.
  void fetchFeedback(amqp::LinkId link) {
    feedback_[link].busy = true;
    blocking_([this, &c2d = c2d_, post = post_, link, batch = options_.feedback_batch,
               lock = options_.feedback_lock] {
      auto records = c2d.takeFeedback(batch, lock);
      // `this` is only touched on the strand, which runs while the connection (and so this
      // handler) lives.
      post([this, link, records = std::move(records)](amqp::ServerConnection& core) mutable {
        sendFeedback(core, link, std::move(records));
      });
    });
  }

  void sendFeedback(amqp::ServerConnection& core, amqp::LinkId link,
                    Result<std::vector<store::C2dFeedbackRecord>> records) {
    auto it = feedback_.find(link);
    if (it == feedback_.end()) return;  // detached: the records' lock passes, others get them
    it->second.busy = false;
    if (!records) {
      spdlog::warn("amqp: cannot read C2D feedback: {}", records.status().toString());
    }
    if (!records || records->empty()) {
      schedulePoll(link);
      return;
    }
    json::array body;
    std::vector<std::int64_t> sequences;
    for (auto& record : *records) {
      body.push_back(std::move(record.document));
      sequences.push_back(record.sequence);
    }
    amqp::Message message;
    message.message_id = "feedback-" + std::to_string(sequences.front());
    message.content_type = std::string(kFeedbackContentType);
    message.body = json::serialize(body);
    if (!core.send(link, message)) {
      // No credit after all: the records come back once their lock passes.
      schedulePoll(link);
      return;
    }
    counters_->feedback_messages.fetch_add(1, std::memory_order_relaxed);
    counters_->feedback_records.fetch_add(sequences.size(), std::memory_order_relaxed);
    // Delivered once written to the client's receiver, which accepts on arrival (docs/c2d.md §4).
    blocking_([&c2d = c2d_, sequences = std::move(sequences)] {
      Status done = c2d.feedbackDelivered(sequences);
      if (!done) spdlog::warn("amqp: cannot remove delivered C2D feedback: {}", done.toString());
    });
    if (core.credit(link) > 0) fetchFeedback(link);
  }

  void schedulePoll(amqp::LinkId link) {
    auto& state = feedback_[link];
    state.busy = true;
    state.timer = scheduler_.schedule(options_.feedback_poll, [this, post = post_, link] {
      post([this, link](amqp::ServerConnection& core) {
        auto it = feedback_.find(link);
        if (it == feedback_.end()) return;
        it->second.timer = 0;
        it->second.busy = false;
        if (core.credit(link) > 0) fetchFeedback(link);
      });
    });
  }

  c2d::CloudToDevice& c2d_;
  AmqpService::Executor blocking_;
  Scheduler& scheduler_;
  const AmqpServiceOptions& options_;
  std::shared_ptr<AmqpServiceCounters> counters_;
  transport::AmqpConnectionPost post_;
  std::unordered_map<amqp::LinkId, bool> senders_;  // accepted C2D sender links
  std::unordered_map<amqp::LinkId, FeedbackLink> feedback_;
};

}  // namespace

std::optional<amqp::ErrorCondition> requireServiceConnect(const amqp::LinkRequest& request) {
  for (const auto& claim : request.claims) {
    for (const auto& right : claim.rights) {
      if (right == "ServiceConnect") return std::nullopt;
    }
  }
  return amqp::ErrorCondition{"amqp:unauthorized-access",
                              "the token's policy lacks ServiceConnect"};
}

std::optional<std::string> deviceIdFromTo(std::string_view to) {
  constexpr std::string_view kPrefix = "/devices/";
  constexpr std::string_view kSuffix = "/messages/devicebound";
  if (!to.starts_with(kPrefix) || to.size() <= kPrefix.size() + kSuffix.size()) return std::nullopt;
  std::string_view tail = to.substr(to.size() - kSuffix.size());
  if (!equalsIgnoreCase(tail, kSuffix)) return std::nullopt;
  std::string_view encoded = to.substr(kPrefix.size(), to.size() - kPrefix.size() - kSuffix.size());
  if (encoded.find('/') != std::string_view::npos) return std::nullopt;
  auto decoded = urlDecode(encoded);
  if (!decoded || decoded->empty()) return std::nullopt;
  return decoded;
}

namespace {

// The claim lapses with the token, on the connection's steady clock. Expiries beyond what
// the clocks can hold (Azure's tools write `se` years ahead) never lapse.
amqp::Clock::time_point claimExpiry(std::int64_t expiry_s, const Clock& clock) {
  using std::chrono::seconds;
  constexpr std::int64_t kHorizon = 100LL * 365 * 24 * 3600;  // far below either clock's end
  std::int64_t now_s = std::chrono::duration_cast<seconds>(clock.now().time_since_epoch()).count();
  std::int64_t left = expiry_s - now_s;
  if (left >= kHorizon) return amqp::Clock::time_point::max();
  return amqp::Clock::now() + seconds{left};
}

void addRights(const auth::ServiceIdentity& identity, amqp::Claim& claim) {
  if (identity.has(store::kServiceConnect)) claim.rights.push_back("ServiceConnect");
  if (identity.has(store::kRegistryRead)) claim.rights.push_back("RegistryRead");
  if (identity.has(store::kRegistryWrite)) claim.rights.push_back("RegistryWrite");
}

}  // namespace

HubTokenAuthenticator::HubTokenAuthenticator(std::string host_name,
                                             const auth::ServiceAuthenticator& service,
                                             const Clock& clock,
                                             std::vector<store::AccessPolicyRecord> policies,
                                             std::string event_hubs_entity)
    : host_name_(std::move(host_name)),
      service_(service),
      clock_(clock),
      policies_(std::move(policies)),
      event_hubs_entity_(std::move(event_hubs_entity)) {}

amqp::TokenVerdict HubTokenAuthenticator::verifyEventHubs(std::string_view token,
                                                          std::string_view audience) {
  amqp::TokenVerdict verdict;
  // sb://HOST[:port]/ENTITY[/rest]
  std::string_view rest = audience.substr(5);
  std::size_t slash = rest.find('/');
  std::string_view host = rest.substr(0, std::min(slash, rest.find(':')));
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  while (path.ends_with('/')) path.remove_suffix(1);
  std::string_view entity = path.substr(0, path.find('/'));
  if (!equalsIgnoreCase(host, host_name_) || !equalsIgnoreCase(entity, event_hubs_entity_)) {
    verdict.status_code = 404;
    verdict.description = "The messaging entity '" + std::string(audience) +
                          "' could not be found: this hub serves sb://" + host_name_ + "/" +
                          event_hubs_entity_;
    return verdict;
  }
  auto verified = auth::verifyEventHubsToken(token, audience, policies_, clock_);
  if (!verified) {
    verdict.status_code = 401;
    verdict.description = verified.status().message();
    return verdict;
  }
  amqp::Claim claim;
  claim.audience = std::string(audience);
  // The entity itself covers everything beneath it; ENTITY/$management the management
  // node; any other path the address it names (a partition receiver's).
  std::string_view below = path.substr(entity.size());
  if (below.empty()) {
    claim.scopes = {"$management", std::string(path) + "/"};
  } else if (below == "/$management") {
    claim.scopes = {"$management"};
  } else {
    claim.scopes = {std::string(path)};
  }
  addRights(verified->identity, claim);
  if (verified->expiry != SystemTime::max()) {
    claim.expires = claimExpiry(
        std::chrono::duration_cast<std::chrono::seconds>(verified->expiry.time_since_epoch())
            .count(),
        clock_);
  }
  verdict.status_code = 200;
  verdict.description = "OK";
  verdict.claim = std::move(claim);
  return verdict;
}

amqp::TokenVerdict HubTokenAuthenticator::verify(std::string_view token, std::string_view audience,
                                                 std::string_view /*type*/) {
  amqp::TokenVerdict verdict;
  if (!event_hubs_entity_.empty() && audience.size() > 5 &&
      equalsIgnoreCase(audience.substr(0, 5), "sb://")) {
    return verifyEventHubs(token, audience);
  }
  if (!equalsIgnoreCase(audience, host_name_)) {
    verdict.status_code = 404;
    verdict.description = "no entity '" + std::string(audience) + "' on this hub";
    return verdict;
  }
  auto identity = service_.authenticate(token);
  if (!identity) {
    verdict.status_code = 401;
    verdict.description = identity.status().message();
    return verdict;
  }
  auto parsed = auth::SasToken::parse(token);  // valid: authenticate() parsed it
  amqp::Claim claim;
  claim.audience = std::string(audience);
  // Every service address (/messages/…): the handler accepts the ones it serves and
  // answers amqp:not-found for the others, which azure-iothub reports more usefully than an
  // authorization error.
  claim.scopes = {"/messages/"};
  addRights(*identity, claim);
  if (parsed) claim.expires = claimExpiry(parsed->expiry, clock_);
  verdict.status_code = 200;
  verdict.description = "OK";
  verdict.claim = std::move(claim);
  return verdict;
}

AmqpService::AmqpService(c2d::CloudToDevice& c2d, Executor blocking, Scheduler& scheduler,
                         AmqpServiceOptions options)
    : c2d_(c2d), blocking_(std::move(blocking)), scheduler_(scheduler), options_(options) {}

std::unique_ptr<amqp::LinkHandler> AmqpService::makeHandler(transport::AmqpConnectionPost post) {
  return std::make_unique<ServiceLinks>(c2d_, blocking_, scheduler_, options_, counters_,
                                        std::move(post));
}

transport::AmqpLinkHandlerFactory AmqpService::handlerFactory() {
  return [this](const std::string& /*remote*/, transport::AmqpConnectionPost post) {
    return makeHandler(std::move(post));
  };
}

void LinkRouter::add(Predicate serves, std::unique_ptr<amqp::LinkHandler> handler) {
  routes_.emplace_back(std::move(serves), std::move(handler));
}

std::optional<amqp::ErrorCondition> LinkRouter::onAttach(const amqp::LinkRequest& request) {
  for (auto& [serves, handler] : routes_) {
    if (!serves(request.address)) continue;
    auto refused = handler->onAttach(request);
    if (!refused) links_[request.id] = handler.get();
    return refused;
  }
  return amqp::ErrorCondition{"amqp:not-found", "no node '" + request.address + "' here"};
}

amqp::Outcome LinkRouter::onMessage(amqp::LinkId link, amqp::DeliveryId delivery,
                                    const amqp::Message& message) {
  auto it = links_.find(link);
  if (it == links_.end()) return amqp::Outcome::rejected("amqp:not-allowed", "unknown link");
  return it->second->onMessage(link, delivery, message);
}

void LinkRouter::onDetach(amqp::LinkId link) {
  auto it = links_.find(link);
  if (it == links_.end()) return;
  amqp::LinkHandler* handler = it->second;
  links_.erase(it);
  handler->onDetach(link);
}

void LinkRouter::onCredit(amqp::LinkId link, int credit) {
  auto it = links_.find(link);
  if (it != links_.end()) it->second->onCredit(link, credit);
}

}  // namespace iothub::server
