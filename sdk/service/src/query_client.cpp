#include "iothub/service/query_client.hpp"

#include <array>
#include <cctype>
#include <utility>

#include "auth/connection_string.hpp"

namespace iothub::service {
namespace {

constexpr std::array<std::pair<QueryItemType, std::string_view>, 4> kItemTypeNames = {{
    {QueryItemType::Twin, "Twin"},
    {QueryItemType::DeviceJob, "DeviceJob"},
    {QueryItemType::JobResponse, "JobResponse"},
    {QueryItemType::Raw, "Raw"},
}};

}  // namespace

std::string_view toString(QueryItemType type) {
  for (const auto& [value, name] : kItemTypeNames) {
    if (value == type) return name;
  }
  return "Unknown";
}

QueryItemType parseQueryItemType(std::string_view text) {
  // Case-sensitive, as the C# SDK parses it (docs/protocol.md §8.4).
  for (const auto& [value, name] : kItemTypeNames) {
    if (name == text) return value;
  }
  return QueryItemType::Unknown;
}

Result<QueryPage> sendPagedRequest(HttpTransport& transport, HttpRequest request,
                                   std::optional<int> page_size,
                                   const std::optional<std::string>& continuation) {
  if (page_size && (*page_size < kMinPageSize || *page_size > kMaxPageSize)) {
    return Status(ErrorCode::ArgumentInvalid, "The page size must be " +
                                                  std::to_string(kMinPageSize) + " to " +
                                                  std::to_string(kMaxPageSize));
  }
  if (continuation && continuation->empty()) {
    return Status(ErrorCode::ArgumentInvalid, "The continuation token must not be empty");
  }
  if (page_size) request.headers.emplace_back("x-ms-max-item-count", std::to_string(*page_size));
  if (continuation) request.headers.emplace_back("x-ms-continuation", *continuation);

  auto response = transport.send(request);
  if (!response) return response.status();
  if (response->status >= 300) return statusFromErrorResponse(*response);
  // Like sendJson(): Node only parses bodies labelled JSON (docs/protocol.md §4.2).
  std::string content_type = response->header("content-type").value_or("");
  for (char& c : content_type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (content_type.find("application/json") == std::string::npos) {
    return Status(ErrorCode::IotHubFormatError, "The hub answered " + request.method + " " +
                                                    request.path + " with Content-Type '" +
                                                    content_type + "', expected application/json");
  }
  auto body = parseJson(response->body);
  if (!body || !body->is_array()) {
    return Status(ErrorCode::IotHubFormatError, "The hub answered " + request.method + " " +
                                                    request.path + " with no JSON array");
  }
  QueryPage page;
  page.rows = std::move(body->get_array());
  page.item_type = parseQueryItemType(response->header("x-ms-item-type").value_or(""));
  page.continuation = response->header("x-ms-continuation");
  if (page.continuation && page.continuation->empty()) {
    // Node would take this as "more" and resend without a token forever (docs/protocol.md §8.7).
    return Status(ErrorCode::IotHubFormatError, "Query result: empty x-ms-continuation header");
  }
  return page;
}

PagedQuery::PagedQuery(std::shared_ptr<HttpTransport> transport, HttpRequest request,
                       std::optional<int> page_size)
    : transport_(std::move(transport)), request_(std::move(request)), page_size_(page_size) {}

Result<QueryPage> PagedQuery::next() {
  if (done_) return Status(ErrorCode::InvalidOperation, "The query has no more results");
  auto page = sendPagedRequest(*transport_, request_, page_size_, continuation_);
  if (!page) return page.status();
  ++pages_fetched_;
  continuation_ = page->continuation;
  done_ = !continuation_.has_value();
  return page;
}

Result<json::array> PagedQuery::rest(std::optional<std::size_t> max_pages) {
  json::array rows;
  for (std::size_t fetched = 0; hasMoreResults() && (!max_pages || fetched < *max_pages);
       ++fetched) {
    auto page = next();
    if (!page) return page.status();
    for (json::value& row : page->rows) rows.push_back(std::move(row));
  }
  return rows;
}

QueryClient::QueryClient(std::shared_ptr<HttpTransport> transport)
    : transport_(std::move(transport)) {}

Result<QueryClient> QueryClient::fromConnectionString(std::string_view connection_string,
                                                      ServiceClientOptions options) {
  auto parsed = auth::ServiceConnectionString::parse(connection_string);
  if (!parsed) return parsed.status();
  auto transport = HttpTransport::create(std::move(*parsed), std::move(options));
  if (!transport) return transport.status();
  return QueryClient(std::shared_ptr<HttpTransport>(std::move(*transport)));
}

HttpRequest QueryClient::buildRequest(std::string_view sql) {
  HttpRequest request;
  request.method = "POST";
  request.path = "/devices/query";
  request.body = json::serialize(json::object{{"query", sql}});
  return request;
}

Result<QueryPage> QueryClient::query(std::string_view sql, std::optional<int> page_size,
                                     const std::optional<std::string>& continuation) {
  return sendPagedRequest(*transport_, buildRequest(sql), page_size, continuation);
}

PagedQuery QueryClient::createQuery(std::string_view sql, std::optional<int> page_size) const {
  return PagedQuery(transport_, buildRequest(sql), page_size);
}

Result<json::array> QueryClient::queryAll(std::string_view sql, std::optional<int> page_size,
                                          std::optional<std::size_t> max_pages) {
  return createQuery(sql, page_size).rest(max_pages);
}

std::string QueryClient::quoteString(std::string_view text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'' || c == '\\') quoted += '\\';
    quoted += c;
  }
  quoted += '\'';
  return quoted;
}

}  // namespace iothub::service
