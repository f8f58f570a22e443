// Fuzz target for POST /devices/query input beyond the query text: the first line is the
// query, the second the x-ms-continuation token, the third the page size. Runs the paging
// query runner over a small twin index and device-job rows, following continuations for a
// few pages, so token decoding, keyset resumption and TOP/aggregate paging see arbitrary input.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "index/query_runner.hpp"
#include "index/twin_index.hpp"

namespace {

using namespace iothub;

// Device-job rows held in memory, ordered as the store orders them.
class MemoryDeviceJobs final : public store::DeviceJobStore {
 public:
  MemoryDeviceJobs() {
    for (std::string job : {"job-1", "job-2"}) {
      for (int i = 0; i < 4; ++i) {
        store::DeviceJobRecord r;
        r.job_id = job;
        r.device_id = "dev-" + std::to_string(i);
        r.status = i % 2 ? "failed" : "completed";
        r.document = json::object{{"jobType", "scheduleUpdateTwin"}};
        rows_.push_back(r);
      }
    }
  }
  Status putDeviceJobs(const std::vector<store::DeviceJobRecord>&) override { return Status::ok(); }
  Result<std::vector<store::DeviceJobRecord>> listDeviceJobs(std::string_view job_id,
                                                             std::optional<std::string_view> status,
                                                             std::string_view after,
                                                             std::size_t limit) override {
    std::vector<store::DeviceJobRecord> out;
    for (const auto& r : rows_) {
      if (r.job_id == job_id && r.device_id > after && (!status || r.status == *status) &&
          out.size() < limit) {
        out.push_back(r);
      }
    }
    return out;
  }
  Result<std::vector<store::DeviceJobRecord>> listAllDeviceJobs(std::string_view after_job,
                                                                std::string_view after_device,
                                                                std::size_t limit) override {
    std::vector<store::DeviceJobRecord> out;
    for (const auto& r : rows_) {
      bool after = r.job_id > after_job || (r.job_id == after_job && r.device_id > after_device);
      if (after && out.size() < limit) out.push_back(r);
    }
    return out;
  }

 private:
  std::vector<store::DeviceJobRecord> rows_;
};

index::TwinIndex& twins() {
  static index::TwinIndex* index = [] {
    auto* i = new index::TwinIndex;
    for (int n = 0; n < 12; ++n) {
      store::DeviceRecord d;
      d.device_id = "dev-" + std::to_string(n);
      store::TwinRecord t;
      t.device_id = d.device_id;
      t.tags = json::object{{"floor", n % 3}, {"name", "d" + std::to_string(n)}};
      t.reported = json::object{{"temp", 20.5 + n}};
      i->putDevice(d, t);
    }
    return i;
  }();
  return *index;
}

std::string_view line(std::string_view& text) {
  auto end = text.find('\n');
  std::string_view out = text.substr(0, end);
  text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static MemoryDeviceJobs device_jobs;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view query = line(input);
  std::string_view token = line(input);
  std::string_view size_text = line(input);
  std::size_t page_size = size_text.empty() ? 3 : static_cast<std::size_t>(size_text[0]) % 1100;
  index::QueryRunner runner(twins(), device_jobs);
  std::optional<std::string> next;
  if (!token.empty()) next = std::string(token);
  for (int page = 0; page < 8; ++page) {
    auto result = runner.run(query, page_size, next);
    if (!result) return 0;
    (void)json::serialize(result->rows);
    if (!result->continuation) return 0;
    next = result->continuation;
  }
  return 0;
}
