#include "routing/nats/nats_bus.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "tests/support/nats_server.hpp"

// Every test runs against real nats-servers started by tests/support/nats_server: the bus
// is a thin layer over libnats, and what matters (reconnects, no-responders, interest
// propagation, frozen servers) only shows against the real thing.

namespace iothub::routing {
namespace {

using namespace std::chrono_literals;
using iothub::testing::NatsServer;
using iothub::testing::waitFor;
using Message = NatsBus::Message;

// The executor of the tests: a few threads draining one queue. Threads that used the bus
// release libnats's per-thread memory before they end.
class TestExecutor {
 public:
  explicit TestExecutor(int threads = 1) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~TestExecutor() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  NatsBus::Executor executor() {
    return [this](std::function<void()> task) {
      {
        std::lock_guard lock(mutex_);
        tasks_.push_back(std::move(task));
      }
      wake_.notify_one();
    };
  }

 private:
  void run() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) break;  // stopping, and everything posted has run
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
    NatsBus::releaseThreadMemory();
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// Collects values from any thread; tests wait for a count with a deadline.
template <class T>
class Collector {
 public:
  void add(T value) {
    std::lock_guard lock(mutex_);
    values_.push_back(std::move(value));
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return values_.size();
  }
  bool waitForSize(std::size_t n, std::chrono::milliseconds timeout = 10s) const {
    return waitFor([&] { return size() >= n; }, timeout);
  }
  std::vector<T> values() const {
    std::lock_guard lock(mutex_);
    return values_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<T> values_;
};

class EventLog {
 public:
  NatsBus::ConnectionObserver observer() {
    return [this](NatsConnectionEvent e) { events_.add(e); };
  }
  std::size_t count(NatsConnectionEvent e) const {
    std::size_t n = 0;
    for (auto v : events_.values()) n += v == e ? 1 : 0;
    return n;
  }
  bool waitFor(NatsConnectionEvent e, std::size_t n, std::chrono::milliseconds timeout) const {
    return iothub::testing::waitFor([&] { return count(e) >= n; }, timeout);
  }

 private:
  Collector<NatsConnectionEvent> events_;
};

class NatsBusTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.start()) << server_.error(); }

  NatsOptions options(std::vector<std::string> servers, std::string name = "node") {
    NatsOptions o;
    o.servers = std::move(servers);
    o.name = std::move(name);
    o.ping_interval = 250ms;
    o.connect_timeout = 500ms;
    o.initial_connect_timeout = 5s;
    return o;
  }

  // Options naming the fixture's server after stopping it: nothing listens there.
  NatsOptions optionsForStoppedServer() {
    EXPECT_TRUE(server_.stop());
    return options({server_.url()});
  }

  // A subscription that never answers.
  NatsBus::Subscription silentResponder(NatsBus& bus, const std::string& subject) {
    auto sub = bus.subscribe(subject, [](Message) {});
    EXPECT_TRUE(sub.isOk()) << sub.status().toString();
    EXPECT_TRUE(bus.flush(5s).isOk());
    return sub.isOk() ? std::move(sub).value() : NatsBus::Subscription();
  }

  std::unique_ptr<NatsBus> connect(NatsOptions o, NatsBus::ConnectionObserver observer = nullptr) {
    auto bus = NatsBus::connect(std::move(o), executor_.executor(), std::move(observer));
    EXPECT_TRUE(bus.isOk()) << bus.status().toString();
    return bus.isOk() ? std::move(bus).value() : nullptr;
  }
  std::unique_ptr<NatsBus> connect(std::string name = "node",
                                   NatsBus::ConnectionObserver observer = nullptr) {
    return connect(options({server_.url()}, std::move(name)), std::move(observer));
  }

  // A subscription answering every request with "echo:" + data and the request's headers.
  NatsBus::Subscription echoResponder(NatsBus& bus, const std::string& subject) {
    auto sub = bus.subscribe(subject, [&bus](Message m) {
      NatsBus::Headers headers = m.headers;
      headers.emplace("answered-by", "echo");
      EXPECT_TRUE(bus.respond(m, "echo:" + m.data, headers).isOk());
    });
    EXPECT_TRUE(sub.isOk()) << sub.status().toString();
    EXPECT_TRUE(bus.flush(5s).isOk());
    return sub.isOk() ? std::move(sub).value() : NatsBus::Subscription();
  }

  // Sends requests until one is answered (interest reaches other servers asynchronously).
  Result<Message> requestUntilAnswered(NatsBus& bus, const std::string& subject,
                                       std::chrono::milliseconds deadline = 10s) {
    Result<Message> last = Status(ErrorCode::GatewayTimeout, "no attempt");
    auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      last = requestSync(bus, subject, "ping", 1s);
      if (last.isOk()) return last;
      std::this_thread::sleep_for(20ms);  // between attempts only, never instead of waiting
    }
    return last;
  }

  Result<Message> requestSync(NatsBus& bus, const std::string& subject, const std::string& data,
                              std::chrono::milliseconds timeout, NatsBus::Headers headers = {}) {
    auto promise = std::make_shared<std::promise<Result<Message>>>();
    auto future = promise->get_future();
    bus.request(subject, data, headers, timeout,
                [promise](Result<Message> r) { promise->set_value(std::move(r)); });
    if (future.wait_for(timeout + 10s) != std::future_status::ready) {
      return Status(ErrorCode::ServerError, "the callback never came");
    }
    return future.get();
  }

  TestExecutor executor_{2};
  NatsServer server_;
};

// --- connecting ---------------------------------------------------------------------------

TEST_F(NatsBusTest, ConnectsAndReportsServer) {
  auto bus = connect();
  ASSERT_TRUE(bus);
  EXPECT_TRUE(bus->connected());
  EXPECT_EQ(bus->connectedUrl(), server_.url());
  EXPECT_EQ(bus->maxPayload(), 1024 * 1024);
  EXPECT_TRUE(bus->flush(5s).isOk());
}

TEST_F(NatsBusTest, ConnectShowsTheNodeNameToTheServer) {
  auto bus = connect("node-7");
  ASSERT_TRUE(bus);
  auto connz = server_.monitor("/connz");
  ASSERT_TRUE(connz);
  EXPECT_NE(connz->find("\"name\": \"node-7\""), std::string::npos) << *connz;
}

TEST_F(NatsBusTest, ConnectFailsFastNamingTheUrlWhenNoServerListens) {
  auto o = optionsForStoppedServer();
  o.initial_connect_timeout = 0ms;
  auto started = std::chrono::steady_clock::now();
  auto bus = NatsBus::connect(o, executor_.executor());
  ASSERT_FALSE(bus.isOk());
  EXPECT_EQ(bus.code(), ErrorCode::ServiceUnavailable);
  EXPECT_NE(bus.status().message().find(server_.url()), std::string::npos)
      << bus.status().message();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
}

TEST_F(NatsBusTest, ConnectGivesUpAfterTheInitialConnectTimeout) {
  auto o = optionsForStoppedServer();
  o.initial_connect_timeout = 400ms;
  auto started = std::chrono::steady_clock::now();
  auto bus = NatsBus::connect(o, executor_.executor());
  auto took = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(bus.isOk());
  EXPECT_EQ(bus.code(), ErrorCode::ServiceUnavailable);
  EXPECT_NE(bus.status().message().find("within 400 ms"), std::string::npos)
      << bus.status().message();
  EXPECT_GE(took, 400ms);
  EXPECT_LT(took, 5s);
}

TEST_F(NatsBusTest, ConnectRetriesUntilTheServerComesUp) {
  auto o = optionsForStoppedServer();
  o.initial_connect_timeout = 20s;
  auto pending = std::async(std::launch::async, [&] {
    auto bus = NatsBus::connect(o, executor_.executor());
    NatsBus::releaseThreadMemory();
    return bus;
  });
  EXPECT_EQ(pending.wait_for(300ms), std::future_status::timeout);  // still trying
  ASSERT_TRUE(server_.start()) << server_.error();
  auto bus = pending.get();
  ASSERT_TRUE(bus.isOk()) << bus.status().toString();
  EXPECT_TRUE(bus.value()->connected());
}

TEST_F(NatsBusTest, ConnectAcceptsACommaSeparatedServerList) {
  auto o = options({"nats://127.0.0.1:1 , " + server_.url()});
  o.randomize_servers = false;
  auto bus = connect(o);
  ASSERT_TRUE(bus);
  EXPECT_EQ(bus->connectedUrl(), server_.url());
}

TEST_F(NatsBusTest, ConnectRefusesBadArguments) {
  EXPECT_EQ(NatsBus::connect(options({}), executor_.executor()).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(NatsBus::connect(options({" , "}), executor_.executor()).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(NatsBus::connect(options({server_.url()}), nullptr).code(), ErrorCode::ArgumentInvalid);
  auto o = options({server_.url()});
  o.max_pings_out = 0;
  EXPECT_EQ(NatsBus::connect(o, executor_.executor()).code(), ErrorCode::ArgumentInvalid);
  auto bad_url = NatsBus::connect(options({"nats://127.0.0.1:notaport"}), executor_.executor());
  EXPECT_EQ(bad_url.code(), ErrorCode::ArgumentInvalid) << bad_url.status().toString();
  EXPECT_NE(bad_url.status().message().find("notaport"), std::string::npos);
}

// --- publish / subscribe ------------------------------------------------------------------

TEST_F(NatsBusTest, DeliversOwnedCopiesWithBinaryDataAndHeaders) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  Collector<Message> got;
  auto sub = a->subscribe("iothub.node.a.>", [&](Message m) { got.add(std::move(m)); });
  ASSERT_TRUE(sub.isOk()) << sub.status().toString();
  ASSERT_TRUE(a->flush(5s).isOk());

  std::string binary("\0\x01\xffpayload\0", 11);
  ASSERT_TRUE(
      b->publish("iothub.node.a.kick", binary, {{"epoch", "7"}, {"x", "1"}, {"x", "2"}}).isOk());
  ASSERT_TRUE(b->publish("iothub.node.a.plain", "").isOk());
  ASSERT_TRUE(got.waitForSize(2));
  auto messages = got.values();  // two executor threads: either order
  if (messages[0].subject != "iothub.node.a.kick") std::swap(messages[0], messages[1]);
  EXPECT_EQ(messages[0].subject, "iothub.node.a.kick");
  EXPECT_EQ(messages[0].data, binary);
  EXPECT_TRUE(messages[0].reply.empty());
  EXPECT_EQ(messages[0].header("epoch"), "7");
  EXPECT_EQ(messages[0].headers.count("x"), 2u);
  EXPECT_EQ(messages[0].header("missing"), std::nullopt);
  EXPECT_EQ(messages[1].subject, "iothub.node.a.plain");
  EXPECT_TRUE(messages[1].data.empty());
  EXPECT_TRUE(messages[1].headers.empty());
  EXPECT_EQ(b->counters().published, 2u);
  EXPECT_EQ(a->counters().received, 2u);
}

TEST_F(NatsBusTest, KeepsArrivalOrderOnASerialExecutor) {
  TestExecutor serial(1);
  auto a = NatsBus::connect(options({server_.url()}, "a"), serial.executor());
  auto b = connect("b");
  ASSERT_TRUE(a.isOk() && b);
  Collector<std::string> got;
  auto sub = a.value()->subscribe("seq", [&](Message m) { got.add(m.data); });
  ASSERT_TRUE(sub.isOk());
  ASSERT_TRUE(a.value()->flush(5s).isOk());
  for (int i = 0; i < 500; ++i) ASSERT_TRUE(b->publish("seq", std::to_string(i)).isOk());
  ASSERT_TRUE(got.waitForSize(500));
  auto values = got.values();
  for (int i = 0; i < 500; ++i) ASSERT_EQ(values[static_cast<std::size_t>(i)], std::to_string(i));
  sub.value().reset();
  a.value().reset();
}

TEST_F(NatsBusTest, NeverEchoesANodesOwnMessages) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  Collector<Message> at_a, at_b;
  auto sub_a = a->subscribe("shared", [&](Message m) { at_a.add(std::move(m)); });
  auto sub_b = b->subscribe("shared", [&](Message m) { at_b.add(std::move(m)); });
  ASSERT_TRUE(sub_a.isOk() && sub_b.isOk());
  ASSERT_TRUE(a->flush(5s).isOk() && b->flush(5s).isOk());
  ASSERT_TRUE(a->publish("shared", "from a").isOk());
  ASSERT_TRUE(at_b.waitForSize(1));
  // A round trip on the same connection after the publish: an echo would have come first.
  auto echo = echoResponder(*b, "echo");
  ASSERT_TRUE(requestSync(*a, "echo", "x", 5s).isOk());
  EXPECT_EQ(at_a.size(), 0u);
  EXPECT_EQ(a->counters().received, 0u);
}

TEST_F(NatsBusTest, QueueGroupGivesEachMessageToOneMember) {
  auto a = connect("a");
  auto b = connect("b");
  auto c = connect("c");
  ASSERT_TRUE(a && b && c);
  std::atomic<int> at_a{0}, at_b{0}, everyone{0};
  auto qa = a->subscribe("work", "workers", [&](Message) { ++at_a; });
  auto qb = b->subscribe("work", "workers", [&](Message) { ++at_b; });
  auto all = b->subscribe("work", [&](Message) { ++everyone; });
  ASSERT_TRUE(qa.isOk() && qb.isOk() && all.isOk());
  ASSERT_TRUE(a->flush(5s).isOk() && b->flush(5s).isOk());
  constexpr int kMessages = 200;
  for (int i = 0; i < kMessages; ++i) ASSERT_TRUE(c->publish("work", std::to_string(i)).isOk());
  ASSERT_TRUE(waitFor([&] { return at_a + at_b == kMessages && everyone == kMessages; }));
  EXPECT_GT(at_a.load(), 0);
  EXPECT_GT(at_b.load(), 0);
  ASSERT_TRUE(a->flush(5s).isOk() && b->flush(5s).isOk());
  EXPECT_EQ(at_a + at_b, kMessages);
}

TEST_F(NatsBusTest, RefusesMalformedSubjectsAndHeaders) {
  auto bus = connect();
  ASSERT_TRUE(bus);
  EXPECT_EQ(bus->publish("a..b", "x").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(bus->publish("a.*", "x").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(bus->publish("a b", "x").code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(bus->publish("ok", "x", {{"bad:key", "v"}}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(bus->publish("ok", "x", {{"key", "line\r\nbreak"}}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(bus->subscribe("a.>.b", [](Message) {}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(bus->subscribe("a", "bad group", [](Message) {}).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(bus->subscribe("a", nullptr).code(), ErrorCode::ArgumentInvalid);
  Message no_reply;
  no_reply.subject = "x";
  EXPECT_EQ(bus->respond(no_reply, "y").code(), ErrorCode::ArgumentInvalid);
  // The connection survived all of that.
  EXPECT_TRUE(bus->flush(5s).isOk());
  EXPECT_TRUE(bus->connected());
}

TEST_F(NatsBusTest, RefusesPayloadsOverTheServersMaxPayload) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  auto max = static_cast<std::size_t>(a->maxPayload());
  ASSERT_EQ(max, 1024u * 1024u);
  Collector<std::size_t> sizes;
  auto sub = b->subscribe("big", [&](Message m) { sizes.add(m.data.size()); });
  ASSERT_TRUE(sub.isOk());
  ASSERT_TRUE(b->flush(5s).isOk());

  Status too_big = a->publish("big", std::string(max + 1, 'x'));
  EXPECT_EQ(too_big.code(), ErrorCode::MessageTooLarge);
  EXPECT_NE(too_big.message().find("1048576"), std::string::npos) << too_big.message();
  // With headers the limit counts them too (the library checks the total).
  EXPECT_EQ(a->publish("big", std::string(max, 'x'), {{"h", "v"}}).code(),
            ErrorCode::MessageTooLarge);
  auto r = requestSync(*a, "big", std::string(max + 1, 'x'), 5s);
  EXPECT_EQ(r.code(), ErrorCode::MessageTooLarge);

  ASSERT_TRUE(a->publish("big", std::string(max, 'x')).isOk());
  ASSERT_TRUE(sizes.waitForSize(1));
  EXPECT_EQ(sizes.values().front(), max);
  EXPECT_TRUE(a->connected());
}

// --- request / reply ----------------------------------------------------------------------

TEST_F(NatsBusTest, RequestGetsTheReplyWithHeaders) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  auto responder = echoResponder(*b, "iothub.node.b.method");
  auto reply = requestSync(*a, "iothub.node.b.method", "hello", 5s, {{"rid", "42"}});
  ASSERT_TRUE(reply.isOk()) << reply.status().toString();
  EXPECT_EQ(reply->data, "echo:hello");
  EXPECT_EQ(reply->header("rid"), "42");
  EXPECT_EQ(reply->header("answered-by"), "echo");
  auto counters = a->counters();
  EXPECT_EQ(counters.requests, 1u);
  EXPECT_EQ(counters.replies, 1u);
  EXPECT_EQ(counters.received, 0u);  // replies are not subscription deliveries
  EXPECT_EQ(a->pendingRequests(), 0u);
}

TEST_F(NatsBusTest, ManyConcurrentRequestsAreCorrelated) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  auto responder = echoResponder(*b, "echo");
  constexpr int kRequests = 300;
  std::mutex mutex;
  std::map<int, std::string> answers;
  for (int i = 0; i < kRequests; ++i) {
    a->request("echo", std::to_string(i), {}, 10s, [&, i](Result<Message> r) {
      std::lock_guard lock(mutex);
      answers[i] = r.isOk() ? r->data : r.status().toString();
    });
  }
  ASSERT_TRUE(waitFor([&] {
    std::lock_guard lock(mutex);
    return answers.size() == kRequests;
  }));
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(answers[i], "echo:" + std::to_string(i));
}

TEST_F(NatsBusTest, NoRespondersIsReturnedAtOnce) {
  auto bus = connect();
  ASSERT_TRUE(bus);
  auto started = std::chrono::steady_clock::now();
  auto r = requestSync(*bus, "iothub.node.gone.method", "x", 10s);
  auto took = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(r.isOk());
  EXPECT_TRUE(isNoResponders(r.status())) << r.status().toString();
  EXPECT_EQ(r.code(), ErrorCode::NotFound);
  EXPECT_NE(r.status().message().find("iothub.node.gone.method"), std::string::npos);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(bus->counters().no_responders, 1u);
  EXPECT_FALSE(isNoResponders(Status(ErrorCode::NotFound, "device not found")));
  EXPECT_FALSE(isNoResponders(Status(ErrorCode::GatewayTimeout, "no responders")));
}

TEST_F(NatsBusTest, RequestTimesOutWhenNobodyAnswers) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  auto silent = silentResponder(*b, "silent");
  auto started = std::chrono::steady_clock::now();
  auto r = requestSync(*a, "silent", "x", 300ms);
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(r.code(), ErrorCode::GatewayTimeout);
  EXPECT_NE(r.status().message().find("may have been delivered"), std::string::npos);
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 3s);
  EXPECT_EQ(a->counters().timeouts, 1u);
  EXPECT_EQ(a->pendingRequests(), 0u);
}

TEST_F(NatsBusTest, EachCallbackRunsExactlyOnceWhenRepliesRaceTimeouts) {
  // The responder answers after a random 0-40 ms and requests time out after 20 ms, so
  // replies and timers keep arriving at about the same moment.
  TestExecutor responder_threads(10);
  auto a = connect("a");
  auto b = NatsBus::connect(options({server_.url()}, "b"), responder_threads.executor());
  ASSERT_TRUE(a && b.isOk());
  NatsBus& responder_bus = *b.value();
  std::mutex rng_mutex;
  std::mt19937 rng(7);
  auto responder = responder_bus.subscribe("race", [&](Message m) {
    int delay_us = 0;
    {
      std::lock_guard lock(rng_mutex);
      delay_us = std::uniform_int_distribution<int>(0, 40000)(rng);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    (void)responder_bus.respond(m, "late or not");
  });
  ASSERT_TRUE(responder.isOk());
  ASSERT_TRUE(responder_bus.flush(5s).isOk());

  constexpr int kRounds = 20, kPerRound = 10, kRequests = kRounds * kPerRound;
  std::vector<std::atomic<int>> calls(kRequests);
  std::atomic<int> replies{0}, timeouts{0}, others{0};
  for (int round = 0; round < kRounds; ++round) {
    for (int j = 0; j < kPerRound; ++j) {
      auto i = static_cast<std::size_t>(round * kPerRound + j);
      a->request("race", "x", {}, 20ms, [&, i](Result<Message> r) {
        ++calls[i];
        if (r.isOk()) {
          ++replies;
        } else if (r.code() == ErrorCode::GatewayTimeout) {
          ++timeouts;
        } else {
          ++others;
        }
      });
    }
    ASSERT_TRUE(waitFor([&] { return replies + timeouts + others == (round + 1) * kPerRound; }));
  }
  // Late replies are still arriving; destroying the buses waits for the library to finish.
  a.reset();
  responder.value().reset();
  b.value().reset();
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(calls[static_cast<std::size_t>(i)].load(), 1) << i;
  EXPECT_EQ(others.load(), 0);
  EXPECT_EQ(replies + timeouts, kRequests);
  EXPECT_GT(replies.load(), 0);
  EXPECT_GT(timeouts.load(), 0);
}

// --- lifetimes ----------------------------------------------------------------------------

TEST_F(NatsBusTest, DestroyingTheBusCancelsPendingRequestsBeforeReturning) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  auto silent = silentResponder(*b, "silent");
  constexpr int kRequests = 100;
  std::vector<std::atomic<int>> calls(kRequests);
  std::atomic<int> cancelled{0};
  for (int i = 0; i < kRequests; ++i) {
    a->request("silent", "x", {}, 30s, [&, i](Result<Message> r) {
      ++calls[static_cast<std::size_t>(i)];
      if (r.code() == ErrorCode::Cancelled) ++cancelled;
    });
  }
  ASSERT_TRUE(a->flush(5s).isOk());
  EXPECT_EQ(a->pendingRequests(), static_cast<std::size_t>(kRequests));
  a.reset();
  EXPECT_EQ(cancelled.load(), kRequests);  // already, when the destructor returned
  for (auto& c : calls) EXPECT_EQ(c.load(), 1);
}

TEST_F(NatsBusTest, DestroyingTheBusWhileRepliesFlowCallsEachCallbackOnce) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  auto responder = echoResponder(*b, "echo");
  constexpr int kRequests = 500;
  std::vector<std::atomic<int>> calls(kRequests);
  std::atomic<bool> destroyed{false};
  std::atomic<int> after_destruction{0};
  for (int i = 0; i < kRequests; ++i) {
    a->request("echo", "x", {}, 30s, [&, i](Result<Message>) {
      if (destroyed) ++after_destruction;
      ++calls[static_cast<std::size_t>(i)];
    });
  }
  a.reset();
  destroyed = true;
  responder.reset();
  b.reset();
  for (auto& c : calls) EXPECT_EQ(c.load(), 1);
  EXPECT_EQ(after_destruction.load(), 0);
}

TEST_F(NatsBusTest, NoHandlerRunsAfterTheSubscriptionIsDestroyed) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  std::atomic<bool> destroyed{false};
  std::atomic<int> delivered{0}, after_destruction{0};
  auto sub = a->subscribe("flow", [&](Message) {
    ++delivered;
    std::this_thread::sleep_for(200us);  // handlers take a moment: destruction meets one
    if (destroyed) ++after_destruction;
  });
  ASSERT_TRUE(sub.isOk());
  ASSERT_TRUE(a->flush(5s).isOk());
  std::atomic<bool> stop{false};
  std::thread publisher([&] {
    for (int n = 1; !stop; ++n) {
      (void)b->publish("flow", "x");
      if (n % 10 == 0) std::this_thread::sleep_for(1ms);  // a steady flow, not a flood
    }
    NatsBus::releaseThreadMemory();
  });
  ASSERT_TRUE(waitFor([&] { return delivered > 50; }));
  sub.value().reset();
  destroyed = true;
  ASSERT_TRUE(b->flush(5s).isOk());
  ASSERT_TRUE(a->flush(5s).isOk());  // messages already in the library are discarded
  stop = true;
  publisher.join();
  EXPECT_EQ(after_destruction.load(), 0);
  EXPECT_FALSE(sub.value().active());
}

TEST_F(NatsBusTest, AHandlerMayDestroyItsOwnSubscription) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  std::atomic<int> delivered{0};
  std::mutex mutex;  // the executor has two threads: the owner's lock, as in real code
  NatsBus::Subscription holder;
  auto sub = a->subscribe("once", [&](Message) {
    ++delivered;
    std::lock_guard lock(mutex);
    holder.reset();  // must not wait for itself, nor for a second call waiting for `mutex`
  });
  ASSERT_TRUE(sub.isOk());
  {
    std::lock_guard lock(mutex);
    holder = std::move(sub).value();
  }
  ASSERT_TRUE(a->flush(5s).isOk());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(b->publish("once", "x").isOk());
  ASSERT_TRUE(waitFor([&] { return delivered >= 1; }));
  ASSERT_TRUE(waitFor([&] {
    std::lock_guard lock(mutex);
    return !holder.active();
  }));
  ASSERT_TRUE(b->flush(5s).isOk());
  ASSERT_TRUE(a->flush(5s).isOk());
  // On two executor threads a second message may already have been running; never more.
  EXPECT_LE(delivered.load(), 2);
}

TEST_F(NatsBusTest, ASubscriptionMayOutliveItsBus) {
  NatsBus::Subscription sub;
  {
    auto bus = connect();
    ASSERT_TRUE(bus);
    auto s = bus->subscribe("x", [](Message) {});
    ASSERT_TRUE(s.isOk());
    sub = std::move(s).value();
  }
  EXPECT_TRUE(sub.active());
  sub.reset();
  EXPECT_FALSE(sub.active());
}

TEST_F(NatsBusTest, ManySubscriptionsShareTheLibrarysDeliveryThreads) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  std::atomic<int> delivered{0};
  std::vector<NatsBus::Subscription> subs;
  for (int i = 0; i < 500; ++i) {
    auto s = a->subscribe("many." + std::to_string(i), [&](Message) { ++delivered; });
    ASSERT_TRUE(s.isOk());
    subs.push_back(std::move(s).value());
  }
  ASSERT_TRUE(a->flush(5s).isOk());
  for (int i = 0; i < 500; ++i) ASSERT_TRUE(b->publish("many." + std::to_string(i), "x").isOk());
  ASSERT_TRUE(waitFor([&] { return delivered == 500; }));
  // 500 subscriptions, yet the process has few threads (one per subscription would be 500+).
  int threads = 0;
  for ([[maybe_unused]] auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    ++threads;
  }
  EXPECT_LT(threads, 40);
}

// --- faults -------------------------------------------------------------------------------

TEST_F(NatsBusTest, SurvivesAServerKilledAndRestarted) {
  EventLog events_a, events_b;
  auto a = connect(options({server_.url()}, "a"), events_a.observer());
  auto b = connect(options({server_.url()}, "b"), events_b.observer());
  ASSERT_TRUE(a && b);
  auto responder = echoResponder(*b, "echo");
  ASSERT_TRUE(requestSync(*a, "echo", "x", 5s).isOk());

  ASSERT_TRUE(server_.kill());
  ASSERT_TRUE(events_a.waitFor(NatsConnectionEvent::Disconnected, 1, 5s));
  ASSERT_TRUE(events_b.waitFor(NatsConnectionEvent::Disconnected, 1, 5s));
  EXPECT_FALSE(a->connected());
  // During the outage calls fail at once instead of hanging.
  auto started = std::chrono::steady_clock::now();
  auto r = requestSync(*a, "echo", "x", 10s);
  EXPECT_EQ(r.code(), ErrorCode::ServiceUnavailable) << r.status().toString();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  EXPECT_EQ(a->publish("echo", "x").code(), ErrorCode::ServiceUnavailable);
  EXPECT_EQ(a->flush(1s).code(), ErrorCode::ServiceUnavailable);

  ASSERT_TRUE(server_.start()) << server_.error();  // same port
  ASSERT_TRUE(events_a.waitFor(NatsConnectionEvent::Reconnected, 1, 10s));
  ASSERT_TRUE(events_b.waitFor(NatsConnectionEvent::Reconnected, 1, 10s));
  // b's subscription came back by itself.
  auto again = requestUntilAnswered(*a, "echo");
  ASSERT_TRUE(again.isOk()) << again.status().toString();
  EXPECT_EQ(again->data, "echo:ping");
  EXPECT_GE(a->counters().reconnects, 1u);
  EXPECT_GE(a->counters().disconnects, 1u);
  EXPECT_EQ(events_a.count(NatsConnectionEvent::Closed), 0u);
}

TEST_F(NatsBusTest, APendingRequestFailsAtOnceWhenTheConnectionDrops) {
  auto a = connect("a");
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  auto silent = silentResponder(*b, "silent");
  auto promise = std::make_shared<std::promise<Result<Message>>>();
  auto future = promise->get_future();
  a->request("silent", "x", {}, 60s, [promise](Result<Message> r) { promise->set_value(r); });
  ASSERT_TRUE(a->flush(5s).isOk());
  ASSERT_TRUE(server_.kill());
  ASSERT_EQ(future.wait_for(5s), std::future_status::ready);
  auto r = future.get();
  EXPECT_EQ(r.code(), ErrorCode::GatewayTimeout);
  EXPECT_NE(r.status().message().find("connection to NATS lost"), std::string::npos);
}

TEST_F(NatsBusTest, AFrozenServerIsNoticedWithinAFewPingIntervals) {
  EventLog events;
  auto o = options({server_.url()}, "a");
  o.ping_interval = 300ms;
  o.max_pings_out = 2;
  auto a = connect(o, events.observer());
  auto b = connect("b");
  ASSERT_TRUE(a && b);
  auto responder = echoResponder(*b, "echo");
  ASSERT_TRUE(requestSync(*a, "echo", "x", 5s).isOk());

  ASSERT_TRUE(server_.freeze());
  auto frozen_at = std::chrono::steady_clock::now();
  auto r = requestSync(*a, "echo", "x", 200ms);
  EXPECT_EQ(r.code(), ErrorCode::GatewayTimeout) << r.status().toString();
  // Stale after max_pings_out unanswered pings: 2-3 intervals, plus scheduling slack.
  ASSERT_TRUE(events.waitFor(NatsConnectionEvent::Disconnected, 1, 5s));
  auto noticed = std::chrono::steady_clock::now() - frozen_at;
  EXPECT_LT(noticed, 3s) << "took "
                         << std::chrono::duration_cast<std::chrono::milliseconds>(noticed).count()
                         << " ms";
  ASSERT_TRUE(server_.thaw());
  ASSERT_TRUE(events.waitFor(NatsConnectionEvent::Reconnected, 1, 15s));
  auto again = requestUntilAnswered(*a, "echo");
  EXPECT_TRUE(again.isOk()) << again.status().toString();
}

TEST_F(NatsBusTest, ObserverIsNotCalledAfterTheBusIsDestroyed) {
  std::atomic<bool> destroyed{false};
  std::atomic<int> late{0};
  auto bus = connect("a", [&](NatsConnectionEvent) {
    if (destroyed) ++late;
  });
  ASSERT_TRUE(bus);
  ASSERT_TRUE(server_.kill());
  bus.reset();
  destroyed = true;
  ASSERT_TRUE(server_.start());
  EXPECT_EQ(late.load(), 0);
}

// --- clusters -----------------------------------------------------------------------------

class NatsClusterTest : public NatsBusTest {
 protected:
  void SetUp() override {
    std::string error;
    cluster_ = iothub::testing::startNatsCluster(2, error);
    ASSERT_EQ(cluster_.size(), 2u) << error;
  }
  std::vector<std::unique_ptr<NatsServer>> cluster_;
};

TEST_F(NatsClusterTest, RequestThroughOneServerIsAnsweredOnAnother) {
  auto a = connect(options({cluster_[0]->url()}, "a"));
  auto b = connect(options({cluster_[1]->url()}, "b"));
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->connectedUrl(), cluster_[0]->url());
  ASSERT_EQ(b->connectedUrl(), cluster_[1]->url());
  auto responder = echoResponder(*b, "iothub.node.b.>");
  // Interest reaches server 0 asynchronously: until it does, no-responders is the answer.
  auto reply = requestUntilAnswered(*a, "iothub.node.b.method");
  ASSERT_TRUE(reply.isOk()) << reply.status().toString();
  EXPECT_EQ(reply->data, "echo:ping");
  // Once propagated, every request is answered.
  for (int i = 0; i < 50; ++i) {
    auto r = requestSync(*a, "iothub.node.b.method", std::to_string(i), 5s);
    ASSERT_TRUE(r.isOk()) << r.status().toString();
    EXPECT_EQ(r->data, "echo:" + std::to_string(i));
  }
}

TEST_F(NatsClusterTest, FailsOverToTheOtherServer) {
  EventLog events;
  auto o = options({cluster_[0]->url(), cluster_[1]->url()}, "a");
  o.randomize_servers = false;
  auto a = connect(o, events.observer());
  auto b = connect(options({cluster_[1]->url()}, "b"));
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->connectedUrl(), cluster_[0]->url());
  auto responder = echoResponder(*b, "echo");
  ASSERT_TRUE(requestUntilAnswered(*a, "echo").isOk());
  ASSERT_TRUE(cluster_[0]->kill());
  ASSERT_TRUE(events.waitFor(NatsConnectionEvent::Reconnected, 1, 10s));
  EXPECT_EQ(a->connectedUrl(), cluster_[1]->url());
  auto r = requestUntilAnswered(*a, "echo");
  EXPECT_TRUE(r.isOk()) << r.status().toString();
}

}  // namespace
}  // namespace iothub::routing
