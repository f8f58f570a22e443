#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "iothub/json.hpp"
#include "iothub/status.hpp"
#include "iothub/service/http_transport.hpp"
#include "iothub/service/service_client_options.hpp"

namespace iothub::service {

// What the rows of a page are, from the x-ms-item-type response header (docs/protocol.md §8.4).
// A missing or unknown header is Unknown.
enum class QueryItemType { Unknown, Twin, DeviceJob, JobResponse, Raw };

// Wire names: "Twin", "DeviceJob", "JobResponse", "Raw" ("Unknown" for Unknown).
std::string_view toString(QueryItemType type);
QueryItemType parseQueryItemType(std::string_view text);

// Page sizes the hub accepts in x-ms-max-item-count (docs/protocol.md §8.6).
inline constexpr int kMinPageSize = 1;
inline constexpr int kMaxPageSize = 1000;

// One page of a paged REST call.
struct QueryPage {
  json::array rows;
  QueryItemType item_type = QueryItemType::Unknown;
  // The token for the next page; nullopt on the last page (the hub omits the header then).
  std::optional<std::string> continuation;
};

// Sends one page of a paged request (POST /devices/query, GET /jobs/v2/query): adds
// x-ms-max-item-count when `page_size` is set and x-ms-continuation when `continuation` is,
// and reads the rows, x-ms-item-type and x-ms-continuation from the answer.
// Errors: ArgumentInvalid for a page size outside kMinPageSize..kMaxPageSize or an empty
// continuation token (nothing is sent); the hub's, mapped by statusFromErrorResponse();
// IotHubFormatError when the body is not a JSON array or the hub sent an empty
// x-ms-continuation (which would page forever, docs/protocol.md §8.7); transport failures.
Result<QueryPage> sendPagedRequest(HttpTransport& transport, HttpRequest request,
                                   std::optional<int> page_size,
                                   const std::optional<std::string>& continuation);

// A cursor over the pages of one paged request, like the Node SDK's Query: next() fetches
// the following page while hasMoreResults(). Built by QueryClient::createQuery and
// JobClient::createJobQuery. Not thread-safe; holds the transport alive.
class PagedQuery {
 public:
  PagedQuery(std::shared_ptr<HttpTransport> transport, HttpRequest request,
             std::optional<int> page_size);

  // True until a page without a continuation token has been received.
  bool hasMoreResults() const { return !done_; }
  // The token next() will send (nullopt before the first page and after the last one).
  const std::optional<std::string>& continuationToken() const { return continuation_; }
  int pagesFetched() const { return pages_fetched_; }

  // Fetches the next page. Errors: those of sendPagedRequest(); InvalidOperation once the
  // last page has been returned. A failed call may be repeated: it resends the same token.
  Result<QueryPage> next();

  // Fetches the remaining pages (at most `max_pages` more when set) and concatenates their
  // rows. Errors: the first failing page's.
  Result<json::array> rest(std::optional<std::size_t> max_pages = std::nullopt);

 private:
  std::shared_ptr<HttpTransport> transport_;
  HttpRequest request_;
  std::optional<int> page_size_;
  std::optional<std::string> continuation_;
  bool done_ = false;
  int pages_fetched_ = 0;
};

// The IoT Hub query language over REST: POST /devices/query with {"query":"<sql>"}
// (docs/protocol.md §8), on the wire like the Node SDK's Registry.createQuery. Rows are the
// hub's JSON: twins for SELECT * FROM devices, device-job records for devices.jobs, plain
// objects for projections and aggregates. Errors: ArgumentInvalid for a page size out of
// range (nothing is sent), else the hub's (ArgumentInvalid naming
// line:column for a bad query, Unauthorized, Throttled, …), IotHubFormatError for a reply
// that is not an array, or transport failures (isTransportFailure()). Thread-safety is that
// of the shared HttpTransport.
class QueryClient {
 public:
  explicit QueryClient(std::shared_ptr<HttpTransport> transport);

  // Parses a service connection string and opens a transport for it. Errors: ArgumentInvalid.
  static Result<QueryClient> fromConnectionString(std::string_view connection_string,
                                                  ServiceClientOptions options = {});

  // One page. `page_size` (1..1000) goes out as x-ms-max-item-count (the hub's default when
  // unset); `continuation` is the token of the previous page.
  Result<QueryPage> query(std::string_view sql, std::optional<int> page_size = std::nullopt,
                          const std::optional<std::string>& continuation = std::nullopt);

  // A cursor that pages through all results. Argument errors surface on its first next().
  PagedQuery createQuery(std::string_view sql, std::optional<int> page_size = std::nullopt) const;

  // Every row of every page (at most `max_pages` pages when set), in order.
  Result<json::array> queryAll(std::string_view sql, std::optional<int> page_size = std::nullopt,
                               std::optional<std::size_t> max_pages = std::nullopt);

  // The request query() sends for `sql`, without paging headers and without sending it.
  static HttpRequest buildRequest(std::string_view sql);

  // `text` as a single-quoted string literal of the query language: ' and \ are escaped
  // with a backslash (src/query/lexer.cpp), e.g. O'Brien -> 'O\'Brien'.
  static std::string quoteString(std::string_view text);

  const std::shared_ptr<HttpTransport>& transport() const { return transport_; }

 private:
  std::shared_ptr<HttpTransport> transport_;
};

}  // namespace iothub::service
