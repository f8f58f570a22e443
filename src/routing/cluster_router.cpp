#include "routing/cluster_router.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/json.hpp"

namespace iothub::routing {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPresenceSubject = "iothub.presence";
constexpr const char* kReplacedReason = "ConnectionForcefullyClosedOnNewConnection (400027)";

std::chrono::seconds remainingSeconds(SteadyClock::time_point deadline) {
  auto left = deadline - SteadyClock::now();
  if (left <= SteadyClock::duration::zero()) return std::chrono::seconds{0};
  return std::chrono::ceil<std::chrono::seconds>(left);
}

std::string errorReply(const Status& status) {
  return json::serialize(json::object{{"error", std::string(errorInfo(status.code()).name)},
                                      {"message", status.message()}});
}

// The failure a forwarding node reports, as the calling node's own Status.
Status statusFromReply(const json::object& reply) {
  const json::string* name = findString(reply, "error");
  const json::string* message = findString(reply, "message");
  auto code = name ? errorCodeFromName(*name) : std::nullopt;
  return Status(code.value_or(ErrorCode::ServerError),
                message ? std::string(*message) : "the device's node failed the call");
}

std::int64_t intMember(const json::object& o, std::string_view key, std::int64_t fallback) {
  const json::value* v = findMember(o, key);
  if (v == nullptr || !v->is_int64()) return fallback;
  return v->get_int64();
}

}  // namespace

std::string nodeSubject(std::string_view node_id, std::string_view kind) {
  std::string subject = "iothub.node.";
  subject += encodeSubjectToken(node_id);
  subject += '.';
  subject += kind;
  return subject;
}

struct ClusterRouter::State : std::enable_shared_from_this<State> {
  State(NatsBus& b, store::ClusterStore& s, ConnectionRegistry& l, methods::MethodInvoker& m,
        Scheduler& sch, Executor e, ClusterRouterOptions o)
      : bus(b),
        store(s),
        local(l),
        methods(m),
        scheduler(sch),
        blocking(std::move(e)),
        options(std::move(o)) {}

  NatsBus& bus;
  store::ClusterStore& store;
  ConnectionRegistry& local;
  methods::MethodInvoker& methods;
  Scheduler& scheduler;
  const Executor blocking;
  const ClusterRouterOptions options;
  ClusterRouterCounters counters;
  std::vector<NatsSubscription> subscriptions;  // reset by the router's destructor

  // A direct-method call being routed.
  struct Call {
    methods::MethodCall call;
    methods::MethodCallback done;
    SteadyClock::time_point connect_deadline;
    int reroutes = 0;
  };
  using CallPtr = std::shared_ptr<Call>;

  // Calls waiting for their device to connect somewhere.
  struct Waiter {
    std::uint64_t id;
    CallPtr call;
    Scheduler::TimerId timer = 0;
  };
  mutable std::mutex mutex;
  bool closed = false;                                           // guarded by mutex
  std::unordered_map<std::string, std::vector<Waiter>> waiters;  // guarded by mutex
  std::uint64_t next_waiter = 1;                                 // guarded by mutex
  std::size_t waiting = 0;                                       // guarded by mutex
  std::function<void(std::string_view)> c2d_handler;             // guarded by mutex

  bool isClosed() const {
    std::lock_guard lock(mutex);
    return closed;
  }

  // ---- methods ----------------------------------------------------------------------

  void route(CallPtr call) {
    if (isClosed()) {
      call->done(Status(ErrorCode::Cancelled, "The hub is shutting down"));
      return;
    }
    if (local.find(call->call.device_id)) {
      deliverLocally(std::move(call));
      return;
    }
    blocking([self = shared_from_this(), call = std::move(call)]() mutable {
      self->routeByPresence(std::move(call));
    });
  }

  // Blocking executor: where is the device?
  void routeByPresence(CallPtr call) {
    if (isClosed()) {
      call->done(Status(ErrorCode::Cancelled, "The hub is shutting down"));
      return;
    }
    const std::string& device_id = call->call.device_id;
    // A call that may wait registers first, so that a claim between the read below and
    // the registration cannot be missed.
    std::optional<std::uint64_t> waiter;
    if (remainingSeconds(call->connect_deadline).count() > 0) waiter = wait(call);
    auto presence = store.getPresence(device_id);
    if (!presence) {
      counters.presence_failures++;
      if (waiter && !cancelWait(device_id, *waiter)) return;  // woken or timed out already
      call->done(Status(ErrorCode::ServiceUnavailable,
                        "cannot tell which node holds the device: " + presence.status().message()));
      return;
    }
    const auto& p = *presence;
    if (!p || !p->connected) {
      if (waiter) return;  // a claim anywhere, or the deadline, resumes the call
      call->done(methods::deviceNotOnline(call->call.connect_timeout));
      return;
    }
    if (waiter && !cancelWait(device_id, *waiter)) return;
    if (p->node_id == options.node_id) {
      deliverLocally(std::move(call));  // attaching here right now
    } else {
      forward(std::move(call), p->node_id);
    }
  }

  void deliverLocally(CallPtr call) {
    counters.methods_local++;
    methods::MethodCall c = call->call;
    c.connect_timeout = remainingSeconds(call->connect_deadline);
    methods.invoke(std::move(c), [call](Result<methods::MethodResult> r) {
      // The local invoker words DeviceNotOnline after the time that was left; say the
      // caller's own timeout, as one node does.
      if (!r && r.code() == ErrorCode::DeviceNotOnline) {
        call->done(methods::deviceNotOnline(call->call.connect_timeout));
        return;
      }
      call->done(std::move(r));
    });
  }

  void forward(CallPtr call, const std::string& node_id) {
    counters.methods_forwarded++;
    auto connect_left = remainingSeconds(call->connect_deadline);
    json::object body{{"deviceId", call->call.device_id},
                      {"methodName", call->call.method_name},
                      {"payload", call->call.payload_json},
                      {"responseTimeout", call->call.response_timeout.count()},
                      {"connectTimeout", connect_left.count()}};
    auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
                       call->call.response_timeout + connect_left) +
                   options.forward_margin;
    bus.request(nodeSubject(node_id, "method"), json::serialize(body), {}, timeout,
                [self = shared_from_this(), call](Result<NatsBus::Message> reply) mutable {
                  self->onForwardReply(std::move(call), std::move(reply));
                });
  }

  void onForwardReply(CallPtr call, Result<NatsBus::Message> reply) {
    if (!reply) {
      if (isNoResponders(reply.status())) {
        reroute(std::move(call));  // nobody listens for that node: it never got the call
      } else if (reply.code() == ErrorCode::GatewayTimeout) {
        call->done(
            Status(ErrorCode::GatewayTimeout, "Timed out waiting for the response from device."));
      } else {
        call->done(Status(reply.code() == ErrorCode::Cancelled ? ErrorCode::Cancelled
                                                               : ErrorCode::ServiceUnavailable,
                          "cannot reach the device's node: " + reply.status().message()));
      }
      return;
    }
    auto doc = parseJson(reply->data);
    if (!doc || !doc->is_object()) {
      call->done(Status(ErrorCode::ServerError, "the device's node sent a malformed answer"));
      return;
    }
    const json::object& o = doc->get_object();
    if (findMember(o, "notHere") != nullptr) {
      reroute(std::move(call));  // the device left that node before the call reached it
      return;
    }
    if (findMember(o, "error") != nullptr) {
      Status failed = statusFromReply(o);
      if (failed.code() == ErrorCode::DeviceNotOnline) {
        failed = methods::deviceNotOnline(call->call.connect_timeout);
      }
      call->done(failed);
      return;
    }
    const json::string* payload = findString(o, "payload");
    methods::MethodResult result;
    result.status = static_cast<int>(intMember(o, "status", 0));
    if (payload != nullptr) result.payload_json = std::string(*payload);
    call->done(std::move(result));
  }

  // The call did not reach a device: find the device again. With connect time left the
  // normal path waits for it to connect anywhere; without, one more attempt is made.
  void reroute(CallPtr call) {
    counters.methods_rerouted++;
    if (++call->reroutes > 2 && remainingSeconds(call->connect_deadline).count() == 0) {
      call->done(methods::deviceNotOnline(call->call.connect_timeout));
      return;
    }
    if (call->reroutes > 2) {
      // Presence still names a node that is gone (its lease has not run out yet): wait for
      // the device's next claim rather than asking the dead node again.
      wait(call);
      return;
    }
    route(std::move(call));
  }

  // Serves a call another node forwarded (bus executor).
  void serveMethod(NatsBus::Message message) {
    auto doc = parseJson(message.data);
    const json::object* o = doc && doc->is_object() ? &doc->get_object() : nullptr;
    const json::string* device_id = o ? findString(*o, "deviceId") : nullptr;
    const json::string* method_name = o ? findString(*o, "methodName") : nullptr;
    const json::string* payload = o ? findString(*o, "payload") : nullptr;
    if (device_id == nullptr || method_name == nullptr || payload == nullptr) {
      (void)bus.respond(message, errorReply(Status(ErrorCode::ArgumentInvalid,
                                                   "malformed forwarded method call")));
      return;
    }
    if (!local.find(*device_id)) {
      (void)bus.respond(message, json::serialize(json::object{{"notHere", true}}));
      return;
    }
    counters.methods_served++;
    methods::MethodCall c;
    c.device_id = std::string(*device_id);
    c.method_name = std::string(*method_name);
    c.payload_json = std::string(*payload);
    c.response_timeout = std::chrono::seconds(intMember(*o, "responseTimeout", 30));
    c.connect_timeout = std::chrono::seconds(intMember(*o, "connectTimeout", 0));
    auto request = std::make_shared<NatsBus::Message>(std::move(message));
    methods.invoke(
        std::move(c), [self = shared_from_this(), request](Result<methods::MethodResult> r) {
          std::string answer =
              r ? json::serialize(json::object{{"status", r->status}, {"payload", r->payload_json}})
                : errorReply(r.status());
          Status sent = self->bus.respond(*request, answer);
          if (!sent)
            spdlog::warn("cluster: cannot answer a forwarded method call: {}", sent.toString());
        });
  }

  // ---- waiting for a device to connect anywhere ---------------------------------------

  std::uint64_t wait(const CallPtr& call) {
    std::lock_guard lock(mutex);
    std::uint64_t id = next_waiter++;
    auto delay = call->connect_deadline - SteadyClock::now();
    auto& list = waiters[call->call.device_id];
    list.push_back({id, call, 0});
    waiting++;
    list.back().timer =
        scheduler.schedule(std::max(delay, SteadyClock::duration::zero()),
                           [weak = weak_from_this(), device_id = call->call.device_id, id] {
                             if (auto self = weak.lock()) self->timeoutWait(device_id, id);
                           });
    return id;
  }

  std::optional<Waiter> takeWait(const std::string& device_id, std::uint64_t id) {
    std::lock_guard lock(mutex);
    auto it = waiters.find(device_id);
    if (it == waiters.end()) return std::nullopt;
    auto& list = it->second;
    auto found =
        std::find_if(list.begin(), list.end(), [id](const Waiter& w) { return w.id == id; });
    if (found == list.end()) return std::nullopt;
    Waiter w = std::move(*found);
    list.erase(found);
    if (list.empty()) waiters.erase(it);
    waiting--;
    return w;
  }

  // True when the wait was still pending (the caller now owns the call).
  bool cancelWait(const std::string& device_id, std::uint64_t id) {
    auto w = takeWait(device_id, id);
    if (!w) return false;
    scheduler.cancel(w->timer);
    return true;
  }

  void timeoutWait(const std::string& device_id, std::uint64_t id) {
    auto w = takeWait(device_id, id);
    if (!w) return;
    w->call->done(methods::deviceNotOnline(w->call->call.connect_timeout));
  }

  // A claim of `device_id` somewhere: waiting calls route again.
  void wake(const std::string& device_id) {
    std::vector<Waiter> woken;
    {
      std::lock_guard lock(mutex);
      auto it = waiters.find(device_id);
      if (it == waiters.end()) return;
      woken = std::move(it->second);
      waiters.erase(it);
      waiting -= woken.size();
    }
    // Taken out of the map, the calls are ours: a timer that fires anyway finds nothing.
    for (auto& w : woken) {
      scheduler.cancel(w.timer);
      route(std::move(w.call));
    }
  }

  // ---- presence, kicks, notifications -------------------------------------------------

  void publishTo(const std::string& subject, const json::object& body, const char* what) {
    Status sent = bus.publish(subject, json::serialize(body));
    if (!sent) spdlog::warn("cluster: cannot send {} ({}): {}", what, subject, sent.toString());
  }

  void onKick(const NatsBus::Message& message) {
    auto doc = parseJson(message.data);
    if (!doc || !doc->is_object()) return;
    const json::string* device_id = findString(doc->get_object(), "deviceId");
    std::int64_t epoch = intMember(doc->get_object(), "epoch", 0);
    if (device_id == nullptr || epoch <= 0) return;
    if (local.closeBelow(*device_id, epoch, kReplacedReason)) counters.kicks_closed++;
  }

  void onDesired(const NatsBus::Message& message) {
    auto doc = parseJson(message.data);
    if (!doc || !doc->is_object()) return;
    const auto& o = doc->get_object();
    const json::string* device_id = findString(o, "deviceId");
    const json::string* topic = findString(o, "topic");
    const json::string* payload = findString(o, "payload");
    if (device_id == nullptr || topic == nullptr || payload == nullptr) return;
    if (auto link = local.find(*device_id))
      link->publish(std::string(*topic), std::string(*payload));
  }

  void onC2d(const NatsBus::Message& message) {
    auto doc = parseJson(message.data);
    if (!doc || !doc->is_object()) return;
    const json::string* device_id = findString(doc->get_object(), "deviceId");
    if (device_id != nullptr) runC2dHandler(*device_id);
  }

  // Outside the lock: the handler may take its own locks.
  void runC2dHandler(std::string_view device_id) {
    std::function<void(std::string_view)> handler;
    {
      std::lock_guard lock(mutex);
      handler = c2d_handler;
    }
    if (handler) handler(device_id);
  }

  void onDisconnect(const NatsBus::Message& message) {
    auto doc = parseJson(message.data);
    if (!doc || !doc->is_object()) return;
    const json::string* device_id = findString(doc->get_object(), "deviceId");
    const json::string* reason = findString(doc->get_object(), "reason");
    if (device_id == nullptr) return;
    local.disconnect(*device_id, reason ? std::string(*reason) : "disconnected by the hub");
  }

  void onPresence(const NatsBus::Message& message) {
    auto doc = parseJson(message.data);
    if (!doc || !doc->is_object()) return;
    const json::string* device_id = findString(doc->get_object(), "deviceId");
    if (device_id != nullptr) wake(std::string(*device_id));
  }
};

Result<std::unique_ptr<ClusterRouter>> ClusterRouter::start(NatsBus& bus,
                                                            store::ClusterStore& store,
                                                            ConnectionRegistry& local,
                                                            methods::MethodInvoker& methods,
                                                            Scheduler& scheduler, Executor blocking,
                                                            ClusterRouterOptions options) {
  if (options.node_id.empty()) return Status(ErrorCode::ArgumentInvalid, "no node id");
  if (!blocking) return Status(ErrorCode::ArgumentInvalid, "no executor for blocking work");
  auto state = std::make_shared<State>(bus, store, local, methods, scheduler, std::move(blocking),
                                       std::move(options));
  std::weak_ptr<State> weak = state;
  auto handler = [weak](void (State::*fn)(NatsBus::Message)) {
    return [weak, fn](NatsBus::Message m) {
      if (auto self = weak.lock()) ((*self).*fn)(std::move(m));
    };
  };
  auto constHandler = [weak](void (State::*fn)(const NatsBus::Message&)) {
    return [weak, fn](NatsBus::Message m) {
      if (auto self = weak.lock()) ((*self).*fn)(m);
    };
  };
  const std::string& node = state->options.node_id;
  struct Sub {
    std::string subject;
    NatsBus::MessageHandler handler;
  };
  std::vector<Sub> subs = {
      {nodeSubject(node, "method"), handler(&State::serveMethod)},
      {nodeSubject(node, "kick"), constHandler(&State::onKick)},
      {nodeSubject(node, "desired"), constHandler(&State::onDesired)},
      {nodeSubject(node, "c2d"), constHandler(&State::onC2d)},
      {nodeSubject(node, "disconnect"), constHandler(&State::onDisconnect)},
      {kPresenceSubject, constHandler(&State::onPresence)},
  };
  for (auto& s : subs) {
    auto sub = bus.subscribe(s.subject, std::move(s.handler));
    if (!sub) return sub.status();
    state->subscriptions.push_back(std::move(*sub));
  }
  IOTHUB_RETURN_IF_ERROR(bus.flush(std::chrono::seconds(5)));
  return std::unique_ptr<ClusterRouter>(new ClusterRouter(std::move(state)));
}

ClusterRouter::ClusterRouter(std::shared_ptr<State> state)
    : state_(std::move(state)), counters_(state_->counters) {}

ClusterRouter::~ClusterRouter() {
  for (auto& s : state_->subscriptions) s.reset();
  std::unordered_map<std::string, std::vector<State::Waiter>> waiters;
  {
    std::lock_guard lock(state_->mutex);
    state_->closed = true;
    waiters.swap(state_->waiters);
    state_->waiting = 0;
  }
  for (auto& [device, list] : waiters) {
    for (auto& w : list) {
      state_->scheduler.cancel(w.timer);
      w.call->done(Status(ErrorCode::Cancelled, "The hub is shutting down"));
    }
  }
}

Result<std::int64_t> ClusterRouter::claim(std::string_view device_id) {
  State& s = *state_;
  auto claimed = s.store.claimPresence(device_id, s.options.node_id);
  if (!claimed) {
    s.counters.presence_failures++;
    return claimed.status();
  }
  std::int64_t epoch = claimed->current.epoch;
  const auto& previous = claimed->previous;
  if (previous && previous->connected && previous->node_id != s.options.node_id) {
    s.counters.kicks_sent++;
    s.publishTo(nodeSubject(previous->node_id, "kick"),
                json::object{{"deviceId", device_id}, {"epoch", epoch}}, "a kick");
  }
  s.publishTo(kPresenceSubject,
              json::object{{"deviceId", device_id}, {"node", s.options.node_id}, {"epoch", epoch}},
              "a presence change");
  s.wake(std::string(device_id));
  return epoch;
}

void ClusterRouter::release(std::string_view device_id, std::int64_t epoch) {
  auto released = state_->store.releasePresence(device_id, epoch);
  if (!released) {
    state_->counters.presence_failures++;
    spdlog::warn("cluster: cannot record that {} disconnected: {}", device_id,
                 released.status().toString());
  }
}

bool ClusterRouter::isConnected(std::string_view device_id) const {
  if (state_->local.find(device_id)) return true;
  auto presence = state_->store.getPresence(device_id);
  if (!presence) {
    state_->counters.presence_failures++;
    spdlog::warn("cluster: cannot read the presence of {}: {}", device_id,
                 presence.status().toString());
    return false;
  }
  return *presence && (*presence)->connected;
}

void ClusterRouter::disconnect(std::string_view device_id, std::string reason) {
  State& s = *state_;
  s.local.disconnect(device_id, reason);
  auto presence = s.store.getPresence(device_id);
  if (!presence) {
    s.counters.presence_failures++;
    spdlog::warn("cluster: cannot find the node of {} to disconnect it: {}", device_id,
                 presence.status().toString());
    return;
  }
  if (*presence && (*presence)->connected && (*presence)->node_id != s.options.node_id) {
    s.publishTo(nodeSubject((*presence)->node_id, "disconnect"),
                json::object{{"deviceId", device_id}, {"reason", reason}}, "a disconnect");
  }
}

void ClusterRouter::invoke(methods::MethodCall call, methods::MethodCallback done) {
  auto c = std::make_shared<State::Call>();
  c->connect_deadline = SteadyClock::now() + call.connect_timeout;
  c->call = std::move(call);
  c->done = std::move(done);
  state_->route(std::move(c));
}

void ClusterRouter::pushDesired(std::string_view device_id, std::string topic,
                                std::string payload) {
  State& s = *state_;
  if (auto link = s.local.find(device_id)) {
    link->publish(std::move(topic), std::move(payload));
    return;
  }
  auto presence = s.store.getPresence(device_id);
  if (!presence) {
    s.counters.presence_failures++;
    spdlog::warn("cluster: cannot find the node of {} for a desired-property notification: {}",
                 device_id, presence.status().toString());
    return;
  }
  if (*presence && (*presence)->connected && (*presence)->node_id != s.options.node_id) {
    s.counters.desired_forwarded++;
    s.publishTo(nodeSubject((*presence)->node_id, "desired"),
                json::object{{"deviceId", device_id}, {"topic", topic}, {"payload", payload}},
                "a desired-property notification");
  }
}

void ClusterRouter::setC2dHandler(std::function<void(std::string_view)> handler) {
  std::lock_guard lock(state_->mutex);
  state_->c2d_handler = std::move(handler);
}

void ClusterRouter::notifyC2d(std::string_view device_id) {
  State& s = *state_;
  if (s.local.find(device_id)) {
    s.runC2dHandler(device_id);
    return;
  }
  auto presence = s.store.getPresence(device_id);
  if (!presence) {
    // The message stays queued; the device gets it when it next connects.
    s.counters.presence_failures++;
    spdlog::warn("cluster: cannot find the node of {} for a C2D message: {}", device_id,
                 presence.status().toString());
    return;
  }
  if (*presence && (*presence)->connected && (*presence)->node_id != s.options.node_id) {
    s.counters.c2d_forwarded++;
    s.publishTo(nodeSubject((*presence)->node_id, "c2d"), json::object{{"deviceId", device_id}},
                "a C2D wake-up");
  }
}

std::size_t ClusterRouter::waitingCount() const {
  std::lock_guard lock(state_->mutex);
  return state_->waiting;
}

}  // namespace iothub::routing
