// Fuzz target for PUT /jobs/v2/{id}: the first line is the job id from the path, the rest the
// request body. A request that validates is stored, read back and rendered, as the engine
// does after a restart, so every accepted request round-trips.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "jobs/job_model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace iothub;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto newline = input.find('\n');
  std::string_view job_id = input.substr(0, newline);
  std::string_view body =
      newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);
  auto parsed = parseJson(body);
  if (!parsed) return 0;
  auto spec = jobs::parseJobRequest(job_id, *parsed);
  if (!spec) return 0;
  store::JobRecord job = jobs::newJobRecord(*spec, SystemTime{std::chrono::seconds{1700000000}});
  auto again = jobs::specOf(job);
  if (!again) __builtin_trap();  // an accepted request must survive the store
  (void)json::serialize(jobs::jobResponse(job, jobs::JobStatistics{}));
  return 0;
}
