#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "common/http_message.hpp"
#include "common/json.hpp"
#include "common/status.hpp"

namespace iothub::service_api {

// The body of GET /jobs/v2/{id}/events (docs/jobs.md "Live progress"): a text/event-stream
// of the job's JobResponse, one `event: job` per change. Sans-I/O: it reads the job through
// `poll` and the time from next()'s argument, so it is tested without sockets or clocks.
//
// - The first next() sends `first` (the JobResponse the route read) at once.
// - Later calls poll the job and send it only when its serialized text differs from the
//   last one sent, at most one event per kMinInterval: a change seen sooner waits, and
//   whatever the job is when the interval has passed is sent (the latest state wins).
// - The event that carries a terminal status (completed, failed, cancelled) is the last:
//   next() answers done with it. A job that is terminal from the start gets one event.
// - When nothing was sent for kKeepAlive, a comment `: keep-alive` is sent.
// - A poll that fails is retried at the next call, except JobNotFound (the job is gone):
//   the stream ends.
class JobEventSource final : public HttpEventSource {
 public:
  static constexpr std::chrono::milliseconds kMinInterval{100};
  static constexpr std::chrono::milliseconds kKeepAlive{15000};

  using Poll = std::function<Result<json::object>()>;
  JobEventSource(json::object first, Poll poll);

  Step next(std::chrono::steady_clock::time_point now) override;

  // `event: job\ndata: <json on one line>\n\n`.
  static std::string event(std::string_view job_json);
  static bool terminal(const json::object& job);

 private:
  Poll poll_;
  std::optional<json::object> first_;  // until the first event is sent
  std::string last_sent_;              // the JSON of the last event
  std::chrono::steady_clock::time_point last_event_{};
  std::chrono::steady_clock::time_point last_write_{};
};

}  // namespace iothub::service_api
