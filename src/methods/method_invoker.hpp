#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/histogram.hpp"
#include "common/scheduler.hpp"
#include "common/status.hpp"
#include "routing/connection_registry.hpp"

namespace iothub::methods {

// One direct-method call (docs/protocol.md §7), already validated by the REST layer.
struct MethodCall {
  std::string device_id;
  std::string method_name;
  std::string payload_json = "null";  // the PUBLISH body; never empty (docs/protocol.md §3.9)
  std::chrono::seconds response_timeout{30};
  std::chrono::seconds connect_timeout{0};
};

struct MethodResult {
  int status = 0;
  std::string payload_json = "null";  // the device's body, or "null" when it sent none
};

using MethodCallback = std::function<void(Result<MethodResult>)>;

// Where direct-method calls go: this node's MethodInvoker on a single node, the cluster
// router (routing/cluster_router.hpp) in a cluster.
class MethodDispatcher {
 public:
  virtual ~MethodDispatcher() = default;
  // `callback` runs exactly once, on any thread; outcomes as MethodInvoker's.
  virtual void invoke(MethodCall call, MethodCallback callback) = 0;
};

// Direct-method calls this node delivered to its devices, by outcome, and how long the
// answered ones took (from the call to the device's answer, a connect wait included).
struct MethodCounters {
  std::atomic<std::uint64_t> answered{0};
  std::atomic<std::uint64_t> device_not_online{0};
  std::atomic<std::uint64_t> timed_out{0};
  std::atomic<std::uint64_t> other_errors{0};  // e.g. cancelled at shutdown
  AtomicHistogram answer_seconds{AtomicHistogram::latencyBounds()};
};

// Invokes direct methods on connected devices and correlates their answers by request id.
// Thread-safe. Each call's callback runs exactly once, on whichever thread completes it
// (the device connection's, a scheduler timer's, or the caller's): keep it quick.
//
// Outcomes: the device's {status, payload}; DeviceNotOnline when the device has no
// connection subscribed to `$iothub/methods/POST/#` within connect_timeout; GatewayTimeout
// when it does not answer within response_timeout.
class MethodInvoker final : public MethodDispatcher {
 public:
  MethodInvoker(routing::ConnectionRegistry& connections, Scheduler& scheduler);
  ~MethodInvoker();

  void invoke(MethodCall call, MethodCallback callback) override;

  // A device published `$iothub/methods/res/{status}/?$rid={rid}`. Answers for unknown
  // request ids, or from another device than the one called, are ignored (returns false).
  bool onResponse(std::string_view device_id, std::string_view request_id, int status,
                  std::string payload);

  // Calls in flight (waiting to connect or for an answer).
  std::size_t pendingCount() const;

  const MethodCounters& counters() const { return counters_; }

 private:
  using Deadlines = std::multimap<std::chrono::steady_clock::time_point, std::string>;
  struct Pending {
    std::string device_id;
    MethodCallback callback;
    Deadlines::iterator deadline;  // this call's entry in deadlines_
  };
  void send(std::shared_ptr<routing::DeviceLink> link, MethodCall call, MethodCallback callback);
  // Removes and returns the pending call, if still there.
  std::optional<Pending> take(const std::string& request_id);
  // Under mutex_: removes the call's deadline, and the timer when no call is left.
  void forgetDeadlineLocked(const Pending& p);
  // Under mutex_: (re)arms the one response timer for `deadline`.
  void armLocked(std::chrono::steady_clock::time_point deadline);
  // The response timer armed for `deadline` (generation `generation`) fired.
  void expire(std::chrono::steady_clock::time_point deadline, std::uint64_t generation);

  routing::ConnectionRegistry& connections_;
  Scheduler& scheduler_;
  std::atomic<std::uint64_t> next_request_id_{1};
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Pending> pending_;  // by request id; guarded by mutex_
  // Response deadlines of the calls in pending_, earliest first, and the one timer armed
  // for the earliest (decisions.md §91): a call costs a map entry, not a timer of its own.
  Deadlines deadlines_;                                             // guarded by mutex_
  std::optional<std::chrono::steady_clock::time_point> armed_for_;  // guarded by mutex_
  Scheduler::TimerId timer_ = 0;                                    // guarded by mutex_
  std::uint64_t generation_ = 0;  // guarded by mutex_; a timer of an older one is stale
  std::atomic<std::size_t> waiting_for_connect_{0};
  MethodCounters counters_;
};

// The DeviceNotOnline outcome of a call with `connect_timeout` (its message says whether
// the hub waited for the device).
Status deviceNotOnline(std::chrono::seconds connect_timeout);

// Formats "hh:mm:ss" as Azure's DeviceNotOnline info does.
std::string formatTimeout(std::chrono::seconds s);

}  // namespace iothub::methods
