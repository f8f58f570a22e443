#include "methods/method_invoker.hpp"

#include <gtest/gtest.h>

#include <map>
#include <optional>

#include "common/json.hpp"
#include "methods/method_request.hpp"

namespace iothub::methods {
namespace {

// Timers fire only when the test says so.
class ManualScheduler final : public Scheduler {
 public:
  TimerId schedule(std::chrono::steady_clock::duration delay, std::function<void()> fn) override {
    TimerId id = next_++;
    timers_[id] = {delay, std::move(fn)};
    return id;
  }
  bool cancel(TimerId id) override { return timers_.erase(id) > 0; }
  // Fires every pending timer whose delay is at most `delay` (as if that much time passed).
  void fire(std::chrono::steady_clock::duration delay) {
    for (auto it = timers_.begin(); it != timers_.end();) {
      if (it->second.first <= delay) {
        auto fn = std::move(it->second.second);
        it = timers_.erase(it);
        fn();
      } else {
        ++it;
      }
    }
  }
  std::size_t size() const { return timers_.size(); }
  // The delay of the only pending timer.
  std::chrono::steady_clock::duration onlyDelay() const {
    EXPECT_EQ(timers_.size(), 1u);
    return timers_.empty() ? std::chrono::steady_clock::duration::zero()
                           : timers_.begin()->second.first;
  }

 private:
  TimerId next_ = 1;
  std::map<TimerId, std::pair<std::chrono::steady_clock::duration, std::function<void()>>> timers_;
};

class FakeLink final : public routing::DeviceLink {
 public:
  explicit FakeLink(std::string id, bool subscribed = true)
      : subscribed_(subscribed), id_(std::move(id)) {}
  const std::string& deviceId() const override { return id_; }
  bool isSubscribed(std::string_view topic) const override {
    return subscribed_ && topic.starts_with("$iothub/methods/POST/");
  }
  bool publish(std::string topic, std::string payload) override {
    if (!isSubscribed(topic)) return false;
    sent.emplace_back(std::move(topic), std::move(payload));
    return true;
  }
  void close(routing::CloseCause, std::string) override {}
  // The request id of the n-th request sent.
  std::string rid(std::size_t n) const {
    return sent.at(n).first.substr(sent.at(n).first.find("$rid=") + 5);
  }

  bool subscribed_;
  std::vector<std::pair<std::string, std::string>> sent;

 private:
  std::string id_;
};

class MethodInvokerTest : public ::testing::Test {
 protected:
  MethodCall call(std::string device, std::chrono::seconds connect = std::chrono::seconds{0}) {
    return MethodCall{std::move(device), "lockDoor", R"({"lockTime":"10m"})",
                      std::chrono::seconds{30}, connect};
  }
  MethodCallback record(std::optional<Result<MethodResult>>& out) {
    return [&out](Result<MethodResult> r) { out = std::move(r); };
  }

  routing::ConnectionRegistry connections_;
  ManualScheduler scheduler_;
  MethodInvoker invoker_{connections_, scheduler_};
};

TEST_F(MethodInvokerTest, PublishesTheRequestAndCompletesWithTheDevicesAnswer) {
  auto link = std::make_shared<FakeLink>("d1");
  connections_.attach(link);
  std::optional<Result<MethodResult>> result;
  invoker_.invoke(call("d1"), record(result));
  ASSERT_EQ(link->sent.size(), 1u);
  EXPECT_EQ(link->sent[0].first.rfind("$iothub/methods/POST/lockDoor/?$rid=", 0), 0u);
  EXPECT_EQ(link->sent[0].second, R"({"lockTime":"10m"})");
  EXPECT_FALSE(result.has_value());
  EXPECT_TRUE(invoker_.onResponse("d1", link->rid(0), 201, R"({"ok":true})"));
  ASSERT_TRUE(result.has_value() && result->isOk());
  EXPECT_EQ((*result)->status, 201);
  EXPECT_EQ((*result)->payload_json, R"({"ok":true})");
  EXPECT_EQ(scheduler_.size(), 0u) << "the response timer is cancelled";
  EXPECT_FALSE(invoker_.onResponse("d1", link->rid(0), 200, "")) << "answered only once";
}

TEST_F(MethodInvokerTest, OfflineDeviceIsDeviceNotOnlineAtOnce) {
  std::optional<Result<MethodResult>> result;
  invoker_.invoke(call("nobody"), record(result));
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), ErrorCode::DeviceNotOnline);
  connections_.attach(std::make_shared<FakeLink>("unsubscribed", false));
  invoker_.invoke(call("unsubscribed"), record(result));
  EXPECT_EQ(result->code(), ErrorCode::DeviceNotOnline);
}

TEST_F(MethodInvokerTest, NoAnswerInTimeIsGatewayTimeout) {
  auto link = std::make_shared<FakeLink>("d1");
  connections_.attach(link);
  std::optional<Result<MethodResult>> result;
  invoker_.invoke(call("d1"), record(result));
  scheduler_.fire(std::chrono::seconds{30});
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), ErrorCode::GatewayTimeout);
  EXPECT_FALSE(invoker_.onResponse("d1", link->rid(0), 200, "null")) << "a late answer is dropped";
  EXPECT_EQ(invoker_.pendingCount(), 0u);
}

TEST_F(MethodInvokerTest, AnotherDeviceCannotAnswerACall) {
  auto link = std::make_shared<FakeLink>("d1");
  connections_.attach(link);
  std::optional<Result<MethodResult>> result;
  invoker_.invoke(call("d1"), record(result));
  EXPECT_FALSE(invoker_.onResponse("intruder", link->rid(0), 200, "null"));
  EXPECT_FALSE(result.has_value());
  EXPECT_TRUE(invoker_.onResponse("d1", link->rid(0), 200, "null")) << "the right device still can";
  EXPECT_TRUE(result.has_value());
}

TEST_F(MethodInvokerTest, ConnectTimeoutWaitsForTheDeviceToSubscribe) {
  std::optional<Result<MethodResult>> result;
  invoker_.invoke(call("late", std::chrono::seconds{10}), record(result));
  EXPECT_FALSE(result.has_value());
  EXPECT_EQ(invoker_.pendingCount(), 1u);
  auto link = std::make_shared<FakeLink>("late", false);
  connections_.attach(link);
  EXPECT_TRUE(link->sent.empty()) << "not subscribed yet";
  link->subscribed_ = true;
  connections_.subscriptionsChanged(link);
  ASSERT_EQ(link->sent.size(), 1u);
  EXPECT_TRUE(invoker_.onResponse("late", link->rid(0), 200, "null"));
  ASSERT_TRUE(result->isOk());
  EXPECT_EQ((*result)->payload_json, "null");
  scheduler_.fire(std::chrono::seconds{10});  // the connect timer was cancelled
  EXPECT_TRUE(result->isOk());
}

TEST_F(MethodInvokerTest, ConnectTimeoutExpiresAsDeviceNotOnline) {
  std::optional<Result<MethodResult>> result;
  invoker_.invoke(call("never", std::chrono::seconds{10}), record(result));
  scheduler_.fire(std::chrono::seconds{10});
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), ErrorCode::DeviceNotOnline);
  EXPECT_NE(result->status().message().find("00:00:10"), std::string::npos);
  auto link = std::make_shared<FakeLink>("never");
  connections_.attach(link);
  EXPECT_TRUE(link->sent.empty()) << "the expired call is not sent later";
  EXPECT_EQ(invoker_.pendingCount(), 0u);
}

TEST_F(MethodInvokerTest, ThousandsOfConcurrentCallsCorrelate) {
  std::vector<std::shared_ptr<FakeLink>> links;
  for (int d = 0; d < 10; ++d) {
    links.push_back(std::make_shared<FakeLink>("dev" + std::to_string(d)));
    connections_.attach(links.back());
  }
  constexpr int kCalls = 3000;
  std::vector<std::optional<Result<MethodResult>>> results(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    MethodCall c = call("dev" + std::to_string(i % 10));
    c.payload_json = std::to_string(i);
    invoker_.invoke(std::move(c), record(results[i]));
  }
  // Devices answer in reverse order, echoing the payload as the status.
  for (auto& link : links) {
    for (std::size_t n = link->sent.size(); n-- > 0;) {
      int echoed = std::stoi(link->sent[n].second);
      ASSERT_TRUE(invoker_.onResponse(link->deviceId(), link->rid(n), echoed,
                                      "\"" + link->sent[n].second + "\""));
    }
  }
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(results[i].has_value() && results[i]->isOk()) << i;
    EXPECT_EQ((*results[i])->status, i);
  }
  EXPECT_EQ(invoker_.pendingCount(), 0u);
}

// A call in flight costs an entry in a deadline queue, not a timer: one timer, armed for
// the earliest deadline, serves them all, and goes when the last call is answered.
TEST_F(MethodInvokerTest, OneTimerServesEveryCallInFlight) {
  auto link = std::make_shared<FakeLink>("d1");
  connections_.attach(link);
  constexpr int kCalls = 100;
  std::vector<std::optional<Result<MethodResult>>> results(kCalls);
  for (int i = 0; i < kCalls; ++i) invoker_.invoke(call("d1"), record(results[i]));
  EXPECT_EQ(scheduler_.size(), 1u);
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(invoker_.onResponse("d1", link->rid(static_cast<std::size_t>(i)), 200, "null"));
    EXPECT_EQ(scheduler_.size(), i + 1 < kCalls ? 1u : 0u) << i;
  }
  for (auto& r : results) EXPECT_TRUE(r.has_value() && r->isOk());
  EXPECT_EQ(invoker_.pendingCount(), 0u);
}

// Calls with different response timeouts time out each at its own deadline: a shorter
// one re-arms the timer earlier, and what is left re-arms it for the next deadline.
TEST_F(MethodInvokerTest, ShorterTimeoutsExpireFirstAndLongerOnesWait) {
  auto link = std::make_shared<FakeLink>("d1");
  connections_.attach(link);
  std::optional<Result<MethodResult>> slow, fast, answered;
  invoker_.invoke(call("d1"), record(slow));  // 30 s
  MethodCall quick = call("d1");
  quick.response_timeout = std::chrono::seconds{5};
  invoker_.invoke(std::move(quick), record(fast));
  invoker_.invoke(call("d1"), record(answered));  // 30 s, answered in time
  EXPECT_LE(scheduler_.onlyDelay(), std::chrono::seconds{5});
  scheduler_.fire(std::chrono::seconds{5});
  ASSERT_TRUE(fast.has_value());
  EXPECT_EQ(fast->code(), ErrorCode::GatewayTimeout);
  EXPECT_FALSE(slow.has_value()) << "30 s have not passed";
  EXPECT_GT(scheduler_.onlyDelay(), std::chrono::seconds{5}) << "re-armed for the 30 s calls";
  ASSERT_TRUE(invoker_.onResponse("d1", link->rid(2), 200, "null"));
  EXPECT_TRUE(answered.has_value() && answered->isOk());
  EXPECT_FALSE(invoker_.onResponse("d1", link->rid(1), 200, "null")) << "expired already";
  scheduler_.fire(std::chrono::seconds{30});
  ASSERT_TRUE(slow.has_value());
  EXPECT_EQ(slow->code(), ErrorCode::GatewayTimeout);
  EXPECT_EQ(scheduler_.size(), 0u);
  EXPECT_EQ(invoker_.pendingCount(), 0u);
}

TEST(FormatTimeoutTest, IsHoursMinutesSeconds) {
  EXPECT_EQ(formatTimeout(std::chrono::seconds{0}), "00:00:00");
  EXPECT_EQ(formatTimeout(std::chrono::seconds{300}), "00:05:00");
  EXPECT_EQ(formatTimeout(std::chrono::seconds{3725}), "01:02:05");
}

// Timeouts become durations: every value that cannot be one, or is absurd, is a 400 that
// names the field, and nothing is converted before it is range-checked.
TEST(ParseMethodCallTest, RefusesTimeoutsOutOfRangeNamingTheField) {
  for (const char* field : {"responseTimeoutInSeconds", "connectTimeoutInSeconds"}) {
    for (const char* value :
         {"-1", "301", "-9223372036854775808", "9223372036854775807", "18446744073709551615",
          "99999999999999999999999", "1e300", "-1e300", "30.5", "30.0", "\"30\"", "true", "[30]"}) {
      std::string text = std::string(R"({"methodName":"m",")") + field + "\":" + value + "}";
      auto parsed = parseJson(text);
      ASSERT_TRUE(parsed.isOk()) << text;
      auto call = parseMethodCall("d1", *parsed);
      EXPECT_EQ(call.code(), ErrorCode::ArgumentInvalid) << text;
      EXPECT_NE(call.status().message().find(field), std::string::npos)
          << text << " -> " << call.status().message();
    }
  }
  auto ok = parseMethodCall(
      "d1",
      *parseJson(
          R"({"methodName":"m","responseTimeoutInSeconds":300,"connectTimeoutInSeconds":0})"));
  ASSERT_TRUE(ok.isOk()) << ok.status().toString();
  EXPECT_EQ(ok->response_timeout, std::chrono::seconds{300});
  EXPECT_EQ(ok->connect_timeout, std::chrono::seconds{0});
  json::object unsigned_timeout{{"methodName", "m"},
                                {"responseTimeoutInSeconds", std::uint64_t{30}}};
  auto from_unsigned = parseMethodCall("d1", json::value(unsigned_timeout));
  ASSERT_TRUE(from_unsigned.isOk()) << from_unsigned.status().toString();
  EXPECT_EQ(from_unsigned->response_timeout, std::chrono::seconds{30});
  auto defaults = parseMethodCall("d1", *parseJson(R"({"methodName":"m"})"));
  ASSERT_TRUE(defaults.isOk());
  EXPECT_EQ(defaults->response_timeout, std::chrono::seconds{30});
}

}  // namespace
}  // namespace iothub::methods
