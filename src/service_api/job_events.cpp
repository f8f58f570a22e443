#include "service_api/job_events.hpp"

#include <spdlog/spdlog.h>

#include <utility>

namespace iothub::service_api {

JobEventSource::JobEventSource(json::object first, Poll poll)
    : poll_(std::move(poll)), first_(std::move(first)) {}

std::string JobEventSource::event(std::string_view job_json) {
  std::string out;
  out.reserve(job_json.size() + 20);
  out += "event: job\ndata: ";
  out += job_json;  // Boost.JSON serializes on one line (newlines in strings are escaped)
  out += "\n\n";
  return out;
}

bool JobEventSource::terminal(const json::object& job) {
  const json::string* status = findString(job, "status");
  return status != nullptr &&
         (*status == "completed" || *status == "failed" || *status == "cancelled");
}

HttpEventSource::Step JobEventSource::next(std::chrono::steady_clock::time_point now) {
  json::object job;
  if (first_) {
    job = std::move(*first_);
    first_.reset();
  } else {
    auto since = now - last_event_;
    if (since < kMinInterval) {
      // Coalesce: whatever the job is once the interval has passed is what gets sent.
      return Step{{}, false, std::chrono::ceil<std::chrono::milliseconds>(kMinInterval - since)};
    }
    auto polled = poll_();
    if (!polled) {
      if (polled.code() == ErrorCode::JobNotFound) return Step{{}, true, {}};
      spdlog::debug("job event stream: reading the job failed, retrying: {}",
                    polled.status().toString());
    } else {
      job = std::move(*polled);
    }
  }
  if (!job.empty()) {
    std::string text = json::serialize(job);
    if (text != last_sent_) {
      last_sent_ = std::move(text);
      last_event_ = last_write_ = now;
      return Step{event(last_sent_), terminal(job), kMinInterval};
    }
  }
  if (now - last_write_ >= kKeepAlive) {
    last_write_ = now;
    return Step{": keep-alive\n\n", false, kMinInterval};
  }
  return Step{{}, false, kMinInterval};
}

}  // namespace iothub::service_api
