#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "amqp/server_connection.hpp"
#include "auth/policy.hpp"
#include "c2d/cloud_to_device.hpp"
#include "common/clock.hpp"
#include "common/scheduler.hpp"
#include "transport/amqp_server.hpp"

namespace iothub::server {

// The service side of IoT Hub's AMQP endpoint (docs/amqp.md §1.4–1.6, docs/c2d.md §2):
// put-tokens verified against the hub's shared access policies, C2D sends on
// /messages/devicebound and feedback on /messages/serviceBound/feedback.

// Verifies put-tokens. An audience that is the hub's host name: as service REST tokens are
// verified (auth::ServiceAuthenticator: the policy's decoded key, `sr` covering the host);
// the claim covers the service addresses (/messages/…). An `sb://HOST[:port]/ENTITY[/…]`
// audience (the Event Hubs endpoint, docs/event-hubs.md §2), when `event_hubs_entity` is
// set: with auth::verifyEventHubsToken (the key's text); the claim covers `$management` and
// the addresses under the audience's path. Either claim names the policy's rights.
// Thread-safe (everything is immutable).
class HubTokenAuthenticator final : public amqp::Authenticator {
 public:
  HubTokenAuthenticator(std::string host_name, const auth::ServiceAuthenticator& service,
                        const Clock& clock, std::vector<store::AccessPolicyRecord> policies = {},
                        std::string event_hubs_entity = {});
  amqp::TokenVerdict verify(std::string_view token, std::string_view audience,
                            std::string_view type) override;

 private:
  amqp::TokenVerdict verifyEventHubs(std::string_view token, std::string_view audience);

  std::string host_name_;
  const auth::ServiceAuthenticator& service_;
  const Clock& clock_;
  std::vector<store::AccessPolicyRecord> policies_;
  std::string event_hubs_entity_;
};

// Several link handlers on one AMQP connection: each link goes to the first handler whose
// predicate accepts its address; links no handler takes are refused with amqp:not-found.
class LinkRouter final : public amqp::LinkHandler {
 public:
  using Predicate = std::function<bool(std::string_view address)>;
  void add(Predicate serves, std::unique_ptr<amqp::LinkHandler> handler);

  std::optional<amqp::ErrorCondition> onAttach(const amqp::LinkRequest& request) override;
  amqp::Outcome onMessage(amqp::LinkId link, amqp::DeliveryId delivery,
                          const amqp::Message& message) override;
  void onDetach(amqp::LinkId link) override;
  void onCredit(amqp::LinkId link, int credit) override;

 private:
  std::vector<std::pair<Predicate, std::unique_ptr<amqp::LinkHandler>>> routes_;
  std::unordered_map<amqp::LinkId, amqp::LinkHandler*> links_;
};

struct AmqpServiceCounters {
  std::atomic<std::uint64_t> c2d_accepted{0};
  std::atomic<std::uint64_t> c2d_refused{0};
  std::atomic<std::uint64_t> feedback_messages{0};  // feedback messages sent (each a batch)
  std::atomic<std::uint64_t> feedback_records{0};
};

struct AmqpServiceOptions {
  // Feedback records per message (Azure batches them, docs/c2d.md §4).
  std::size_t feedback_batch = 64;
  // How often an idle feedback receiver looks for new records (they may come from any node).
  std::chrono::milliseconds feedback_poll{1000};
  // A feedback batch is locked this long while it is sent; unsent records come back after.
  std::chrono::milliseconds feedback_lock{30'000};
};

// Makes the per-connection link handlers. `blocking` runs store work off the I/O threads;
// `scheduler` paces feedback polls. Every reference must outlive the AMQP server.
class AmqpService {
 public:
  using Executor = std::function<void(std::function<void()>)>;
  AmqpService(c2d::CloudToDevice& c2d, Executor blocking, Scheduler& scheduler,
              AmqpServiceOptions options = {});
  transport::AmqpLinkHandlerFactory handlerFactory();
  // The handler of one connection's service links (what handlerFactory's handlers are).
  std::unique_ptr<amqp::LinkHandler> makeHandler(transport::AmqpConnectionPost post);
  const AmqpServiceCounters& counters() const { return *counters_; }

 private:
  c2d::CloudToDevice& c2d_;
  Executor blocking_;
  Scheduler& scheduler_;
  AmqpServiceOptions options_;
  std::shared_ptr<AmqpServiceCounters> counters_ = std::make_shared<AmqpServiceCounters>();
};

// Nothing when one of the link's claims carries ServiceConnect, else the refusal
// (amqp:unauthorized-access): C2D, feedback and the Event Hubs endpoint all need it.
std::optional<amqp::ErrorCondition> requireServiceConnect(const amqp::LinkRequest& request);

// The device id in a C2D message's `to` (/devices/<url-encoded id>/messages/devicebound,
// docs/amqp.md §3), or nullopt when it has another shape.
std::optional<std::string> deviceIdFromTo(std::string_view to);

}  // namespace iothub::server
