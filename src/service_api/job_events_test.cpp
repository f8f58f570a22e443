// The event source of GET /jobs/v2/{id}/events, driven with a scripted job and chosen times:
// first event at once, silence while the job is unchanged, coalescing to one event per
// 100 ms with the latest state, the terminal event ending the stream, keep-alive comments.
#include "service_api/job_events.hpp"

#include <gtest/gtest.h>

#include <deque>

namespace iothub::service_api {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

json::object job(std::string_view status, std::int64_t succeeded, std::int64_t pending) {
  return json::object{{"jobId", "j1"},
                      {"status", status},
                      {"deviceJobStatistics", json::object{{"deviceCount", succeeded + pending},
                                                           {"succeededCount", succeeded},
                                                           {"pendingCount", pending}}}};
}

// The JobResponse each poll reads: the current value, changed by the test.
struct ScriptedJob {
  explicit ScriptedJob(json::object initial) : current(std::move(initial)) {}
  json::object current;
  int polls = 0;
  std::deque<Status> failures;  // returned by the next polls, in order
  JobEventSource::Poll poll() {
    return [this]() -> Result<json::object> {
      ++polls;
      if (!failures.empty()) {
        Status s = failures.front();
        failures.pop_front();
        return s;
      }
      return current;
    };
  }
};

// The JobResponse an event carries, checked for the SSE framing on the way.
json::object eventJob(const std::string& data) {
  EXPECT_EQ(data.rfind("event: job\ndata: ", 0), 0u) << data;
  EXPECT_TRUE(data.ends_with("\n\n")) << data;
  std::string line = data.substr(17, data.size() - 19);
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one line of data";
  return json::parse(line).as_object();
}

TEST(JobEventSourceTest, TheFirstEventIsSentAtOnceAndNothingWhileUnchanged) {
  ScriptedJob j(job("running", 0, 3));
  JobEventSource source(j.current, j.poll());
  auto t0 = Clock::now();
  auto first = source.next(t0);
  EXPECT_FALSE(first.done);
  EXPECT_EQ(eventJob(first.data), job("running", 0, 3));
  EXPECT_EQ(j.polls, 0) << "the first event is the job the route read";
  EXPECT_EQ(first.wait, 100ms);
  for (int i = 1; i <= 20; ++i) {
    auto step = source.next(t0 + i * 100ms);
    EXPECT_TRUE(step.data.empty()) << step.data;
    EXPECT_FALSE(step.done);
  }
  EXPECT_EQ(j.polls, 20);
}

TEST(JobEventSourceTest, ChangesAreCoalescedToOneEventPer100msWithTheLatestState) {
  ScriptedJob j(job("running", 0, 3));
  JobEventSource source(j.current, j.poll());
  auto t0 = Clock::now();
  ASSERT_FALSE(source.next(t0).data.empty());
  // Two changes within 100 ms of the last event: nothing yet, and no poll either.
  j.current = job("running", 1, 2);
  auto early = source.next(t0 + 40ms);
  EXPECT_TRUE(early.data.empty());
  EXPECT_EQ(early.wait, 60ms) << "asks again when the interval has passed";
  EXPECT_EQ(j.polls, 0);
  j.current = job("running", 2, 1);
  // Once 100 ms have passed: one event with the latest state; the intermediate one is skipped.
  auto step = source.next(t0 + 100ms);
  EXPECT_EQ(eventJob(step.data), job("running", 2, 1));
  EXPECT_FALSE(step.done);
  // The same again is not sent again.
  EXPECT_TRUE(source.next(t0 + 200ms).data.empty());
  j.current = job("running", 3, 0);
  EXPECT_EQ(eventJob(source.next(t0 + 300ms).data), job("running", 3, 0));
}

TEST(JobEventSourceTest, TheTerminalStateIsTheLastEvent) {
  for (std::string_view terminal : {"completed", "failed", "cancelled"}) {
    ScriptedJob j(job("queued", 0, 3));
    JobEventSource source(j.current, j.poll());
    auto t0 = Clock::now();
    EXPECT_FALSE(source.next(t0).done);
    j.current = job(terminal, 3, 0);
    auto last = source.next(t0 + 100ms);
    EXPECT_TRUE(last.done) << terminal;
    EXPECT_EQ(eventJob(last.data), job(terminal, 3, 0));
  }
  // A job already terminal: one event, and the end.
  ScriptedJob done(job("completed", 3, 0));
  JobEventSource source(done.current, done.poll());
  auto only = source.next(Clock::now());
  EXPECT_TRUE(only.done);
  EXPECT_EQ(eventJob(only.data), job("completed", 3, 0));
  EXPECT_EQ(done.polls, 0);
}

TEST(JobEventSourceTest, AKeepAliveCommentFollows15SecondsOfSilence) {
  ScriptedJob j(job("scheduled", 0, 0));
  JobEventSource source(j.current, j.poll());
  auto t0 = Clock::now();
  ASSERT_FALSE(source.next(t0).data.empty());
  EXPECT_TRUE(source.next(t0 + 14900ms).data.empty());
  EXPECT_EQ(source.next(t0 + 15s).data, ": keep-alive\n\n");
  EXPECT_TRUE(source.next(t0 + 15100ms).data.empty());
  EXPECT_EQ(source.next(t0 + 30s).data, ": keep-alive\n\n");
  // An event restarts the silence.
  j.current = job("running", 0, 0);
  EXPECT_FALSE(source.next(t0 + 31s).data.empty());
  EXPECT_TRUE(source.next(t0 + 45s).data.empty());
  EXPECT_EQ(source.next(t0 + 46s).data, ": keep-alive\n\n");
}

TEST(JobEventSourceTest, FailedPollsAreRetriedAndAJobThatIsGoneEndsTheStream) {
  ScriptedJob j(job("running", 0, 2));
  JobEventSource source(j.current, j.poll());
  auto t0 = Clock::now();
  ASSERT_FALSE(source.next(t0).data.empty());
  j.failures.push_back(Status(ErrorCode::ServiceUnavailable, "store busy"));
  j.current = job("running", 1, 1);
  auto failed = source.next(t0 + 100ms);
  EXPECT_TRUE(failed.data.empty());
  EXPECT_FALSE(failed.done);
  EXPECT_EQ(eventJob(source.next(t0 + 200ms).data), job("running", 1, 1));
  j.failures.push_back(Status(ErrorCode::JobNotFound, "gone"));
  auto gone = source.next(t0 + 300ms);
  EXPECT_TRUE(gone.done);
  EXPECT_TRUE(gone.data.empty());
}

}  // namespace
}  // namespace iothub::service_api
