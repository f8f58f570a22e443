// Fuzz target for the query language: parseQuery and parseCondition on arbitrary bytes; when
// parsing succeeds the result is evaluated against a fixed twin and device-job row, so the
// binder, evaluator and executor see every tree the parser accepts.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/json.hpp"
#include "query/executor.hpp"
#include "query/query.hpp"

namespace {

const iothub::json::object& twin() {
  static const iothub::json::object t = iothub::json::parse(R"({
    "deviceId": "fuzz-1", "etag": "AAAAAAAAAAE=", "status": "enabled", "statusReason": null,
    "connectionState": "Connected", "lastActivityTime": "2024-03-01T10:00:00.0000000Z",
    "version": 3, "capabilities": {"iotEdge": false},
    "tags": {"location": {"region": "US"}, "floor": 3, "ratio": 0.5, "labels": ["a", 1, null],
             "big": 9223372036854775807, "neg": -9223372036854775808},
    "properties": {
      "desired": {"interval": 30, "$version": 4, "$metadata": {"$lastUpdated": "2024-03-01T09:00:00Z"}},
      "reported": {"firmware": "1.2.0", "temp": 21.5, "$version": 7}}})")
                                            .as_object();
  return t;
}

const iothub::json::object& deviceJob() {
  static const iothub::json::object j = iothub::json::parse(R"({
    "deviceId": "fuzz-1", "jobId": "job-1", "jobType": "scheduleDeviceMethod", "status": "completed",
    "createdTimeUtc": "2024-03-01T10:00:00Z", "startTimeUtc": "2024-03-01T10:00:00Z",
    "endTimeUtc": "2024-03-01T10:00:01Z", "lastUpdatedTimeUtc": "2024-03-01T10:00:01Z",
    "outcome": {"deviceMethodResponse": {"status": 200, "payload": null}}})")
                                            .as_object();
  return j;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace iothub::query;
  std::string_view text(reinterpret_cast<const char*>(data), size);

  iothub::Result<Query> query = parseQuery(text);
  if (query) {
    const iothub::json::object* row =
        query->collection == Collection::Devices ? &twin() : &deviceJob();
    const iothub::json::object* rows[] = {row, row, row};
    QueryResult result = execute(*query, rows);
    (void)iothub::json::serialize(result.rows);
    (void)query->where.indexableLookup();
  }

  for (Collection collection : {Collection::Devices, Collection::DeviceJobs}) {
    iothub::Result<Condition> condition = parseCondition(text, collection);
    if (condition) {
      (void)condition->matches(collection == Collection::Devices ? twin() : deviceJob());
      (void)condition->toString();
      (void)condition->indexableEquality();
    }
  }
  return 0;
}
