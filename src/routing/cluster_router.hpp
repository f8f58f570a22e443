#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/scheduler.hpp"
#include "common/status.hpp"
#include "methods/method_invoker.hpp"
#include "routing/connection_registry.hpp"
#include "routing/nats/nats_bus.hpp"
#include "store/cluster_store.hpp"

namespace iothub::routing {

struct ClusterRouterOptions {
  std::string node_id;
  // A call forwarded to another node waits this much longer than the call's own connect
  // and response timeouts before it ends GatewayTimeout (the other node answers first in
  // every case but its own death or a lost link).
  std::chrono::milliseconds forward_margin{5000};
  // Bound on a kick or desired-property notification waiting in NATS's reconnect buffer.
  std::chrono::milliseconds flush_timeout{2000};
};

// Counters for metrics and tests; monotonic.
struct ClusterRouterCounters {
  std::atomic<std::uint64_t> methods_local{0};      // calls delivered by this node's invoker
  std::atomic<std::uint64_t> methods_forwarded{0};  // calls sent to another node
  std::atomic<std::uint64_t> methods_served{0};     // calls other nodes sent to this node
  std::atomic<std::uint64_t> methods_rerouted{0};   // sent again after the device moved
  std::atomic<std::uint64_t> desired_forwarded{0};  // notifications sent to another node
  std::atomic<std::uint64_t> c2d_forwarded{0};      // C2D wake-ups sent to another node
  std::atomic<std::uint64_t> kicks_sent{0};         // "close older connections" sent
  std::atomic<std::uint64_t> kicks_closed{0};       // local links closed by another node
  std::atomic<std::uint64_t> presence_failures{0};  // store errors reading/writing presence
};

// Cross-node delivery for cluster mode (docs/cluster.md, "Routing between nodes"): which
// node holds each device comes from the presence rows of the store (store::ClusterStore);
// messages between nodes go over NATS, each node listening on its own subjects
// `iothub.node.<node>.{method,desired,c2d,disconnect,kick}` and on the broadcast
// `iothub.presence` (every claim, so callers waiting for a device to connect anywhere wake).
//
// - Direct methods: invoke() delivers on this node when the device is connected here, else
//   forwards the call to the node holding the device and relays its answer. A call the
//   other node refuses because the device is no longer there (or no node answers on its
//   subject) never reached a device: the router reads presence again and tries once more.
//   A forwarded call that gets no answer in time is GatewayTimeout and is never resent (it
//   may have been delivered). Outcomes are MethodInvoker's: the device's answer,
//   DeviceNotOnline after connect_timeout, GatewayTimeout.
// - Desired-property notifications and disable/delete disconnects go to the holding node.
// - Presence (PresenceTracker): claims go to the store; a claim that replaced a connection
//   on another node tells that node to close every connection of the device with a lower
//   epoch.
//
// Thread-safe. `blocking` runs work that waits on the store (presence reads), off the
// callers' threads; NATS handlers run on the bus's executor and never block.
class ClusterRouter final : public registry::ConnectionStates,
                            public PresenceTracker,
                            public methods::MethodDispatcher {
 public:
  using Executor = std::function<void(std::function<void()>)>;

  // Subscribes this node's subjects (and waits until the server has them). Errors: the
  // bus's. Every reference must outlive the router.
  static Result<std::unique_ptr<ClusterRouter>> start(NatsBus& bus, store::ClusterStore& store,
                                                      ConnectionRegistry& local,
                                                      methods::MethodInvoker& methods,
                                                      Scheduler& scheduler, Executor blocking,
                                                      ClusterRouterOptions options);
  // Unsubscribes; calls waiting for a device to connect end Cancelled.
  ~ClusterRouter();
  ClusterRouter(const ClusterRouter&) = delete;
  ClusterRouter& operator=(const ClusterRouter&) = delete;

  // PresenceTracker.
  Result<std::int64_t> claim(std::string_view device_id) override;
  void release(std::string_view device_id, std::int64_t epoch) override;

  // ConnectionStates: connected anywhere in the cluster (a local link, else the store's
  // presence row; a store failure reads as disconnected and is logged).
  bool isConnected(std::string_view device_id) const override;
  // Closes the device's connections on this node and on the node that holds it.
  void disconnect(std::string_view device_id, std::string reason) override;

  // A direct method wherever the device is connected; `done` runs exactly once, on any
  // thread.
  void invoke(methods::MethodCall call, methods::MethodCallback done) override;
  // A desired-property notification to the device's connection wherever it is (only a
  // connected, subscribed device gets one, as on one node).
  void pushDesired(std::string_view device_id, std::string topic, std::string payload);

  // Cloud-to-device (docs/c2d.md §3): the device's queue may have a message. Runs the C2D
  // handler here when the device is connected to this node, else tells the node holding it
  // (which runs its handler). Blocks on a presence read when the device is not local.
  void notifyC2d(std::string_view device_id);
  // What notifyC2d runs on the node holding the device (set once, before devices connect).
  void setC2dHandler(std::function<void(std::string_view device_id)> handler);

  const ClusterRouterCounters& counters() const { return counters_; }
  // Calls waiting for their device to connect somewhere (tests, metrics).
  std::size_t waitingCount() const;

  struct State;  // shared with callbacks that may outlive the router (cluster_router.cpp)

 private:
  explicit ClusterRouter(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
  ClusterRouterCounters& counters_;
};

// The NATS subject on which node `node_id` receives `kind` ("method", "desired", ...).
std::string nodeSubject(std::string_view node_id, std::string_view kind);

}  // namespace iothub::routing
