#include "methods/method_invoker.hpp"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <vector>

#include "mqtt/azure_topics.hpp"

namespace iothub::methods {
namespace {

// A topic of the method's family, to ask whether the device's link is subscribed to it.
std::string probeTopic(const std::string& method_name) {
  return mqtt::azure::methodRequestTopic(method_name, "0");
}

}  // namespace

std::string formatTimeout(std::chrono::seconds s) {
  char buf[32];
  auto total = s.count();
  std::snprintf(buf, sizeof buf, "%02lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  return buf;
}

MethodInvoker::MethodInvoker(routing::ConnectionRegistry& connections, Scheduler& scheduler)
    : connections_(connections), scheduler_(scheduler) {}

MethodInvoker::~MethodInvoker() {
  std::unordered_map<std::string, Pending> left;
  {
    std::lock_guard lock(mutex_);
    left.swap(pending_);
    deadlines_.clear();
    if (armed_for_) scheduler_.cancel(timer_);
    armed_for_.reset();
  }
  for (auto& [id, p] : left) p.callback(Status(ErrorCode::Cancelled, "The hub is shutting down"));
}

void MethodInvoker::invoke(MethodCall call, MethodCallback done) {
  MethodCallback callback = [this, started = std::chrono::steady_clock::now(),
                             done = std::move(done)](Result<MethodResult> result) {
    if (result) {
      counters_.answered.fetch_add(1, std::memory_order_relaxed);
      counters_.answer_seconds.observe(std::chrono::steady_clock::now() - started);
    } else if (result.code() == ErrorCode::DeviceNotOnline) {
      counters_.device_not_online.fetch_add(1, std::memory_order_relaxed);
    } else if (result.code() == ErrorCode::GatewayTimeout) {
      counters_.timed_out.fetch_add(1, std::memory_order_relaxed);
    } else {
      counters_.other_errors.fetch_add(1, std::memory_order_relaxed);
    }
    done(std::move(result));
  };
  std::string topic = probeTopic(call.method_name);
  auto link = connections_.find(call.device_id);
  if (link && link->isSubscribed(topic)) {
    send(std::move(link), std::move(call), std::move(callback));
    return;
  }
  if (call.connect_timeout.count() <= 0) {
    callback(deviceNotOnline(call.connect_timeout));
    return;
  }
  // Wait for the device to connect and subscribe, up to connect_timeout. Whichever of the
  // waiter and the timer runs first claims the call.
  struct State {
    std::mutex mutex;
    bool claimed = false;
    MethodCall call;
    MethodCallback callback;
  };
  auto state = std::make_shared<State>();
  state->call = std::move(call);
  state->callback = std::move(callback);
  auto claim = [state]() {
    std::lock_guard lock(state->mutex);
    bool first = !state->claimed;
    state->claimed = true;
    return first;
  };
  ++waiting_for_connect_;
  auto timer = std::make_shared<std::atomic<Scheduler::TimerId>>(0);
  auto wait_id = std::make_shared<std::atomic<routing::ConnectionRegistry::WaitId>>(0);
  std::string device_id = state->call.device_id;
  std::chrono::seconds connect_timeout = state->call.connect_timeout;
  timer->store(scheduler_.schedule(connect_timeout, [this, state, claim, wait_id, connect_timeout] {
    if (!claim()) return;
    connections_.cancelWait(wait_id->load());
    --waiting_for_connect_;
    state->callback(deviceNotOnline(connect_timeout));
  }));
  wait_id->store(connections_.waitForSubscription(
      device_id, topic, [this, state, claim, timer](std::shared_ptr<routing::DeviceLink> ready) {
        if (!claim()) return;
        scheduler_.cancel(timer->load());
        --waiting_for_connect_;
        send(std::move(ready), std::move(state->call), std::move(state->callback));
      }));
}

void MethodInvoker::send(std::shared_ptr<routing::DeviceLink> link, MethodCall call,
                         MethodCallback callback) {
  std::string request_id = std::to_string(next_request_id_.fetch_add(1));
  std::string topic = mqtt::azure::methodRequestTopic(call.method_name, request_id);
  auto deadline = std::chrono::steady_clock::now() + call.response_timeout;
  {
    std::lock_guard lock(mutex_);
    Pending& p = pending_[request_id];
    p.device_id = call.device_id;
    p.callback = std::move(callback);
    p.deadline = deadlines_.emplace(deadline, request_id);
    if (!armed_for_ || deadline < *armed_for_) armLocked(deadline);
  }
  if (!link->publish(std::move(topic), std::move(call.payload_json))) {
    if (auto p = take(request_id)) p->callback(deviceNotOnline(std::chrono::seconds{0}));
  }
}

void MethodInvoker::armLocked(std::chrono::steady_clock::time_point deadline) {
  if (armed_for_) scheduler_.cancel(timer_);
  armed_for_ = deadline;
  auto delay = std::max(std::chrono::steady_clock::duration::zero(),
                        deadline - std::chrono::steady_clock::now());
  timer_ = scheduler_.schedule(
      delay, [this, deadline, generation = ++generation_] { expire(deadline, generation); });
}

void MethodInvoker::expire(std::chrono::steady_clock::time_point deadline,
                           std::uint64_t generation) {
  std::vector<Pending> due;
  {
    std::lock_guard lock(mutex_);
    if (generation != generation_) return;  // re-armed meanwhile: a newer timer decides
    armed_for_.reset();
    // The timer fires at or after `deadline`: every call due by then, or by now, has
    // waited its whole response timeout.
    auto until = std::max(deadline, std::chrono::steady_clock::now());
    while (!deadlines_.empty() && deadlines_.begin()->first <= until) {
      auto it = pending_.find(deadlines_.begin()->second);
      deadlines_.erase(deadlines_.begin());
      if (it == pending_.end()) continue;
      due.push_back(std::move(it->second));
      pending_.erase(it);
    }
    if (!deadlines_.empty()) armLocked(deadlines_.begin()->first);
  }
  for (Pending& p : due) {
    p.callback(
        Status(ErrorCode::GatewayTimeout, "Timed out waiting for the response from device."));
  }
}

void MethodInvoker::forgetDeadlineLocked(const Pending& p) {
  deadlines_.erase(p.deadline);
  if (deadlines_.empty() && armed_for_) {
    scheduler_.cancel(timer_);
    armed_for_.reset();
    ++generation_;
  }
}

std::optional<MethodInvoker::Pending> MethodInvoker::take(const std::string& request_id) {
  std::lock_guard lock(mutex_);
  auto it = pending_.find(request_id);
  if (it == pending_.end()) return std::nullopt;
  Pending p = std::move(it->second);
  pending_.erase(it);
  forgetDeadlineLocked(p);
  return p;
}

bool MethodInvoker::onResponse(std::string_view device_id, std::string_view request_id, int status,
                               std::string payload) {
  std::optional<Pending> p;
  {
    std::lock_guard lock(mutex_);
    auto it = pending_.find(std::string(request_id));
    if (it == pending_.end() || it->second.device_id != device_id) return false;
    p = std::move(it->second);
    pending_.erase(it);
    forgetDeadlineLocked(*p);
  }
  p->callback(MethodResult{status, payload.empty() ? std::string("null") : std::move(payload)});
  return true;
}

std::size_t MethodInvoker::pendingCount() const {
  std::lock_guard lock(mutex_);
  return pending_.size() + waiting_for_connect_.load();
}

Status deviceNotOnline(std::chrono::seconds connect_timeout) {
  return {ErrorCode::DeviceNotOnline,
          connect_timeout.count() > 0
              ? "Timed out waiting for device to connect (" + formatTimeout(connect_timeout) + ")."
              : "The device is not online: it has no connection subscribed to direct methods."};
}

}  // namespace iothub::methods
