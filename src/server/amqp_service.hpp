#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

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

// Verifies put-tokens whose audience is the hub's host name as service REST tokens are
// verified (auth::ServiceAuthenticator: the policy's decoded key, `sr` covering the host);
// the claim covers the service addresses (/messages/…) and names the policy's rights.
// Thread-safe (the authenticator is immutable).
class HubTokenAuthenticator final : public amqp::Authenticator {
 public:
  HubTokenAuthenticator(std::string host_name, const auth::ServiceAuthenticator& service,
                        const Clock& clock);
  amqp::TokenVerdict verify(std::string_view token, std::string_view audience,
                            std::string_view type) override;

 private:
  std::string host_name_;
  const auth::ServiceAuthenticator& service_;
  const Clock& clock_;
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
  const AmqpServiceCounters& counters() const { return *counters_; }

 private:
  c2d::CloudToDevice& c2d_;
  Executor blocking_;
  Scheduler& scheduler_;
  AmqpServiceOptions options_;
  std::shared_ptr<AmqpServiceCounters> counters_ = std::make_shared<AmqpServiceCounters>();
};

// The device id in a C2D message's `to` (/devices/<url-encoded id>/messages/devicebound,
// docs/amqp.md §3), or nullopt when it has another shape.
std::optional<std::string> deviceIdFromTo(std::string_view to);

}  // namespace iothub::server
