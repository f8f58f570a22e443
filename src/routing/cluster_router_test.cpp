// ClusterRouter between two nodes on a real nats-server; presence comes from an in-memory
// ClusterStore shared by both (the PostgreSQL one is tested in pg_cluster_test.cpp).
#include "routing/cluster_router.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "tests/support/nats_server.hpp"

namespace iothub::routing {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

bool waitFor(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 10s) {
  auto deadline = SteadyClock::now() + timeout;
  while (!condition()) {
    if (SteadyClock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

// Runs posted tasks, in order, on a thread of its own (the bus's executor, the router's
// blocking executor).
class TaskThread {
 public:
  TaskThread() : thread_([this] { run(); }) {}
  ~TaskThread() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    wake_.notify_all();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::deque<std::function<void()>> tasks_;
  std::thread thread_;
};

// Real-time timers on a thread of their own.
class ThreadScheduler final : public Scheduler {
 public:
  ThreadScheduler() : thread_([this] { run(); }) {}
  ~ThreadScheduler() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  TimerId schedule(SteadyClock::duration delay, std::function<void()> fn) override {
    std::lock_guard lock(mutex_);
    TimerId id = next_++;
    timers_[id] = {SteadyClock::now() + delay, std::move(fn)};
    wake_.notify_all();
    return id;
  }
  bool cancel(TimerId id) override {
    std::lock_guard lock(mutex_);
    return timers_.erase(id) > 0;
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      auto due = timers_.end();
      for (auto it = timers_.begin(); it != timers_.end(); ++it) {
        if (due == timers_.end() || it->second.first < due->second.first) due = it;
      }
      if (due == timers_.end()) {
        wake_.wait(lock);
        continue;
      }
      if (due->second.first > SteadyClock::now()) {
        // A copy: cancel() may erase the timer while this waits (the lock is released).
        const SteadyClock::time_point when = due->second.first;
        wake_.wait_until(lock, when);
        continue;
      }
      auto fn = std::move(due->second.second);
      timers_.erase(due);
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  TimerId next_ = 1;
  std::map<TimerId, std::pair<SteadyClock::time_point, std::function<void()>>> timers_;
  std::thread thread_;
};

// Presence in memory, with PostgresStore's semantics for claims and releases.
class MemoryClusterStore final : public store::ClusterStore {
 public:
  Result<store::NodeRecord> renewNode(std::string_view, std::string_view,
                                      std::chrono::milliseconds) override {
    return Status(ErrorCode::InvalidOperation, "not used here");
  }
  Result<store::NodeRecord> joinNode(std::string_view, std::string_view,
                                     std::chrono::milliseconds) override {
    return Status(ErrorCode::InvalidOperation, "not used here");
  }
  Status leaveNode(std::string_view) override { return Status::ok(); }
  Result<std::vector<store::NodeRecord>> liveNodes() override {
    return std::vector<store::NodeRecord>{};
  }
  Result<std::vector<std::string>> reapExpiredNodes() override {
    return std::vector<std::string>{};
  }
  Result<store::PresenceClaim> claimPresence(std::string_view device_id,
                                             std::string_view node_id) override {
    std::lock_guard lock(mutex_);
    store::PresenceClaim claim;
    auto it = presence_.find(std::string(device_id));
    if (it != presence_.end()) claim.previous = it->second;
    store::PresenceRecord& p = presence_[std::string(device_id)];
    p = {std::string(device_id), std::string(node_id), ++epoch_, true, SystemTime{}};
    claim.current = p;
    return claim;
  }
  Result<bool> releasePresence(std::string_view device_id, std::int64_t epoch) override {
    std::lock_guard lock(mutex_);
    auto it = presence_.find(std::string(device_id));
    if (it == presence_.end() || it->second.epoch != epoch) return false;
    it->second.connected = false;
    return true;
  }
  // Like PostgresStore's, with `since` left aside (this fake does not keep it).
  Result<store::PresenceRepair> repairPresence(std::string_view node_id,
                                               const std::vector<store::HeldConnection>& held,
                                               std::chrono::milliseconds) override {
    std::lock_guard lock(mutex_);
    store::PresenceRepair repair;
    for (auto& [id, p] : presence_) {
      if (p.node_id != node_id) continue;
      bool is_held =
          std::find(held.begin(), held.end(), store::HeldConnection{id, p.epoch}) != held.end();
      if (p.connected && !is_held) {
        p.connected = false;
        ++repair.released;
      } else if (!p.connected && is_held) {
        p.connected = true;
        repair.reinstated.push_back({id, p.epoch});
      }
    }
    return repair;
  }
  Result<std::optional<store::PresenceRecord>> getPresence(std::string_view device_id) override {
    std::lock_guard lock(mutex_);
    if (failing_) return Status(ErrorCode::ServiceUnavailable, "the store is down");
    auto it = presence_.find(std::string(device_id));
    if (it == presence_.end()) return std::optional<store::PresenceRecord>{};
    return std::optional<store::PresenceRecord>(it->second);
  }
  Result<std::int64_t> connectedDeviceCount() override { return std::int64_t{0}; }
  Result<std::string> shareValue(std::string_view, std::string_view proposed) override {
    return std::string(proposed);
  }
  // Presence as another node wrote it (e.g. one that died without releasing).
  void put(store::PresenceRecord p) {
    std::lock_guard lock(mutex_);
    p.epoch = ++epoch_;
    presence_[p.device_id] = p;
  }
  void setFailing(bool failing) {
    std::lock_guard lock(mutex_);
    failing_ = failing;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, store::PresenceRecord> presence_;
  std::int64_t epoch_ = 0;
  bool failing_ = false;
};

// A device connection that records what it is sent and detaches itself when closed.
class FakeLink final : public DeviceLink {
 public:
  FakeLink(ConnectionRegistry& registry, std::string id)
      : registry_(registry), id_(std::move(id)) {}
  const std::string& deviceId() const override { return id_; }
  bool isSubscribed(std::string_view) const override { return true; }
  bool publish(std::string topic, std::string payload) override {
    std::lock_guard lock(mutex_);
    sent_.emplace_back(std::move(topic), std::move(payload));
    return true;
  }
  void close(CloseCause, std::string reason) override {
    {
      std::lock_guard lock(mutex_);
      closed_.push_back(std::move(reason));
    }
    registry_.detach(*this);
  }
  std::vector<std::pair<std::string, std::string>> sent() const {
    std::lock_guard lock(mutex_);
    return sent_;
  }
  std::vector<std::string> closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }

 private:
  ConnectionRegistry& registry_;
  std::string id_;
  mutable std::mutex mutex_;
  std::vector<std::pair<std::string, std::string>> sent_;
  std::vector<std::string> closed_;
};

// One node: its registry, invoker, bus and router.
struct Node {
  Node(std::string id, const std::string& url, store::ClusterStore& store)
      : invoker(registry, scheduler) {
    NatsOptions options;
    options.servers = {url};
    options.name = id;
    auto connected = NatsBus::connect(
        options, [this](std::function<void()> t) { bus_thread->post(std::move(t)); });
    EXPECT_TRUE(connected.isOk()) << connected.status().toString();
    bus = std::move(*connected);
    ClusterRouterOptions router_options;
    router_options.node_id = id;
    router_options.forward_margin = 2s;
    auto started = ClusterRouter::start(
        *bus, store, registry, invoker, scheduler,
        [this](std::function<void()> t) { blocking->post(std::move(t)); }, router_options);
    EXPECT_TRUE(started.isOk()) << started.status().toString();
    router = std::move(*started);
  }
  // The order the hub stops in: the router, its blocking work (which then sees it closed),
  // the bus, the bus's executor.
  ~Node() {
    router.reset();
    blocking.reset();
    bus.reset();
    bus_thread.reset();
  }

  // A device connects here: claim, then attach under the claim's epoch.
  std::shared_ptr<FakeLink> connect(const std::string& device_id) {
    auto epoch = router->claim(device_id);
    EXPECT_TRUE(epoch.isOk());
    auto link = std::make_shared<FakeLink>(registry, device_id);
    EXPECT_FALSE(registry.attach(link, epoch ? *epoch : 0).refused);
    return link;
  }
  // Answers the n-th method request `link` got.
  void answer(const FakeLink& link, std::size_t n, int status, std::string payload) {
    auto sent = link.sent();
    ASSERT_LT(n, sent.size());
    const std::string& topic = sent[n].first;
    std::string rid = topic.substr(topic.find("$rid=") + 5);
    EXPECT_TRUE(invoker.onResponse(link.deviceId(), rid, status, std::move(payload)));
  }

  std::unique_ptr<TaskThread> bus_thread = std::make_unique<TaskThread>();
  std::unique_ptr<TaskThread> blocking = std::make_unique<TaskThread>();
  ThreadScheduler scheduler;
  ConnectionRegistry registry;
  methods::MethodInvoker invoker;
  std::unique_ptr<NatsBus> bus;
  std::unique_ptr<ClusterRouter> router;
};

// The outcome of one call, waited for by the test.
struct Outcome {
  std::mutex mutex;
  std::optional<Result<methods::MethodResult>> result;
  methods::MethodCallback callback() {
    return [this](Result<methods::MethodResult> r) {
      std::lock_guard lock(mutex);
      EXPECT_FALSE(result.has_value()) << "called twice";
      result = std::move(r);
    };
  }
  bool done() {
    std::lock_guard lock(mutex);
    return result.has_value();
  }
  Result<methods::MethodResult> get() {
    EXPECT_TRUE(waitFor([this] { return done(); }, 20s));
    std::lock_guard lock(mutex);
    return result ? *result : Status(ErrorCode::ServerError, "no outcome");
  }
};

methods::MethodCall call(const std::string& device, std::chrono::seconds connect = 0s,
                         std::chrono::seconds response = 5s) {
  return methods::MethodCall{device, "lockDoor", R"({"lockTime":"10m"})", response, connect};
}

class ClusterRouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(nats_.start()) << nats_.error();
    a_ = std::make_unique<Node>("node-a", nats_.url(), store_);
    b_ = std::make_unique<Node>("node.b*", nats_.url(), store_);  // ids are encoded
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
  }

  testing::NatsServer nats_;
  MemoryClusterStore store_;
  std::unique_ptr<Node> a_;
  std::unique_ptr<Node> b_;
};

TEST_F(ClusterRouterTest, AMethodCallReachesADeviceOnAnotherNodeAndTheAnswerComesBack) {
  auto link = b_->connect("d1");
  Outcome outcome;
  a_->router->invoke(call("d1"), outcome.callback());
  ASSERT_TRUE(waitFor([&] { return link->sent().size() == 1; }));
  EXPECT_EQ(link->sent()[0].first.rfind("$iothub/methods/POST/lockDoor/?$rid=", 0), 0u);
  EXPECT_EQ(link->sent()[0].second, R"({"lockTime":"10m"})");
  b_->answer(*link, 0, 201, R"({"locked":true})");
  auto r = outcome.get();
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->payload_json, R"({"locked":true})");
  EXPECT_EQ(a_->router->counters().methods_forwarded.load(), 1u);
  EXPECT_EQ(b_->router->counters().methods_served.load(), 1u);
  // The same call from B is delivered locally.
  Outcome local;
  b_->router->invoke(call("d1"), local.callback());
  ASSERT_TRUE(waitFor([&] { return link->sent().size() == 2; }));
  b_->answer(*link, 1, 200, "null");
  EXPECT_TRUE(local.get().isOk());
  EXPECT_EQ(b_->router->counters().methods_local.load(), 1u);
}

TEST_F(ClusterRouterTest, ADeviceThatDoesNotAnswerIsAGatewayTimeoutFromTheOtherNode) {
  auto link = b_->connect("quiet");
  Outcome outcome;
  a_->router->invoke(call("quiet", 0s, 1s), outcome.callback());
  auto r = outcome.get();
  EXPECT_EQ(r.code(), ErrorCode::GatewayTimeout) << r.status().toString();
}

TEST_F(ClusterRouterTest, OfflineDevicesAreNotOnlineAtOnceOrAfterTheirConnectTimeout) {
  Outcome never;
  a_->router->invoke(call("never"), never.callback());
  auto r = never.get();
  EXPECT_EQ(r.code(), ErrorCode::DeviceNotOnline);
  Outcome waited;
  auto started = SteadyClock::now();
  a_->router->invoke(call("never", 1s), waited.callback());
  r = waited.get();
  EXPECT_EQ(r.code(), ErrorCode::DeviceNotOnline);
  EXPECT_EQ(r.status().message(), "Timed out waiting for device to connect (00:00:01).");
  EXPECT_GE(SteadyClock::now() - started, 900ms);
  EXPECT_EQ(a_->router->waitingCount(), 0u);
}

TEST_F(ClusterRouterTest, AWaitingCallReachesTheDeviceWhenItConnectsToAnotherNode) {
  Outcome outcome;
  a_->router->invoke(call("late", 10s), outcome.callback());
  ASSERT_TRUE(waitFor([&] { return a_->router->waitingCount() == 1; }));
  auto link = b_->connect("late");  // the claim is broadcast; A wakes and forwards
  ASSERT_TRUE(waitFor([&] { return link->sent().size() == 1; }));
  b_->answer(*link, 0, 200, R"("ok")");
  auto r = outcome.get();
  ASSERT_TRUE(r.isOk()) << r.status().toString();
  EXPECT_EQ(r->payload_json, R"("ok")");
  EXPECT_EQ(a_->router->waitingCount(), 0u);
}

TEST_F(ClusterRouterTest, ACallForAGoneNodeIsRoutedAgainAndNeverDeliveredTwice) {
  // Presence names a node that no longer listens (it died; its lease has not run out).
  store_.put({"orphan", "dead-node", 0, true, SystemTime{}});
  Outcome fails;
  a_->router->invoke(call("orphan"), fails.callback());
  EXPECT_EQ(fails.get().code(), ErrorCode::DeviceNotOnline);
  EXPECT_GE(a_->router->counters().methods_rerouted.load(), 1u);
  // With connect time left, the call waits for the device to show up elsewhere.
  Outcome waits;
  a_->router->invoke(call("orphan", 10s), waits.callback());
  ASSERT_TRUE(waitFor([&] { return a_->router->waitingCount() == 1; }));
  auto link = b_->connect("orphan");
  ASSERT_TRUE(waitFor([&] { return link->sent().size() == 1; }));
  b_->answer(*link, 0, 200, "null");
  EXPECT_TRUE(waits.get().isOk());
  EXPECT_EQ(link->sent().size(), 1u);
}

TEST_F(ClusterRouterTest, ANodeWithoutTheDeviceSaysSoAndTheCallerReadsPresenceAgain) {
  // Presence says B, but B has no link (the device is between connections).
  store_.put({"ghost", "node.b*", 0, true, SystemTime{}});
  Outcome outcome;
  a_->router->invoke(call("ghost"), outcome.callback());
  EXPECT_EQ(outcome.get().code(), ErrorCode::DeviceNotOnline);
  EXPECT_GE(a_->router->counters().methods_rerouted.load(), 1u);
}

TEST_F(ClusterRouterTest, ANewerClaimOnAnotherNodeClosesTheOlderConnection) {
  auto on_a = a_->connect("mover");
  auto on_b = b_->connect("mover");
  ASSERT_TRUE(waitFor([&] { return !on_a->closed().empty(); }));
  EXPECT_EQ(on_a->closed()[0], "ConnectionForcefullyClosedOnNewConnection (400027)");
  EXPECT_TRUE(on_b->closed().empty());
  EXPECT_EQ(a_->registry.find("mover"), nullptr);
  EXPECT_EQ(b_->registry.find("mover"), on_b);
  EXPECT_EQ(b_->router->counters().kicks_sent.load(), 1u);
  EXPECT_EQ(a_->router->counters().kicks_closed.load(), 1u);
  // A's older connection goes, and its late release does not hide B's.
  EXPECT_TRUE(a_->router->isConnected("mover"));
}

TEST_F(ClusterRouterTest, NotificationsAndDisconnectsReachTheHoldingNode) {
  auto link = b_->connect("d2");
  a_->router->pushDesired("d2", "$iothub/twin/PATCH/properties/desired/?$version=2",
                          R"({"floor":3})");
  ASSERT_TRUE(waitFor([&] { return link->sent().size() == 1; }));
  EXPECT_EQ(link->sent()[0].first, "$iothub/twin/PATCH/properties/desired/?$version=2");
  EXPECT_EQ(link->sent()[0].second, R"({"floor":3})");
  EXPECT_TRUE(a_->router->isConnected("d2"));
  EXPECT_FALSE(a_->router->isConnected("unknown"));
  a_->router->disconnect("d2", "the device was disabled");
  ASSERT_TRUE(waitFor([&] { return !link->closed().empty(); }));
  EXPECT_EQ(link->closed()[0], "the device was disabled");
}

TEST_F(ClusterRouterTest, AStoreFailureFailsTheCallWithServiceUnavailable) {
  store_.setFailing(true);
  Outcome outcome;
  a_->router->invoke(call("any"), outcome.callback());
  EXPECT_EQ(outcome.get().code(), ErrorCode::ServiceUnavailable);
  EXPECT_FALSE(a_->router->isConnected("any"));
  store_.setFailing(false);
}

TEST_F(ClusterRouterTest, DestroyingTheRouterCancelsWaitingCalls) {
  Outcome outcome;
  a_->router->invoke(call("later", 30s), outcome.callback());
  ASSERT_TRUE(waitFor([&] { return a_->router->waitingCount() == 1; }));
  a_->router.reset();
  EXPECT_EQ(outcome.get().code(), ErrorCode::Cancelled);
}

}  // namespace
}  // namespace iothub::routing
