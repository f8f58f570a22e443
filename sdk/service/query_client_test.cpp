#include "iothub/service/query_client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fake_http_server.hpp"
#include "test_helpers.hpp"

namespace iothub::service {
namespace {

using testing::azureError;
using testing::CannedResponse;
using testing::FakeHttpServer;
using ::testing::HasSubstr;
using testing::parse;

using testing::kConnectionString;

CannedResponse page(std::string body, std::string item_type,
                    std::optional<std::string> continuation = std::nullopt) {
  CannedResponse response;
  response.body = std::move(body);
  response.headers.emplace_back("x-ms-item-type", std::move(item_type));
  if (continuation) response.headers.emplace_back("x-ms-continuation", *continuation);
  return response;
}

class QueryClientTest : public ::testing::Test {
 protected:
  QueryClientTest() {
    ServiceClientOptions options;
    options.endpoint = server_.endpoint();
    options.timeout = std::chrono::seconds{10};
    auto client = QueryClient::fromConnectionString(kConnectionString, options);
    EXPECT_TRUE(client) << client.status().toString();
    if (client) client_ = std::make_unique<QueryClient>(std::move(*client));
  }

  FakeHttpServer server_;
  std::unique_ptr<QueryClient> client_;
};

TEST_F(QueryClientTest, QueryPostsTheSqlWithoutPagingHeadersByDefault) {
  server_.reply(page(R"([{"deviceId":"d1"}])", "Twin"));
  auto result = client_->query("SELECT * FROM devices WHERE tags.a = 1");
  ASSERT_TRUE(result) << result.status().toString();
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& r = requests[0];
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/devices/query?api-version=2021-04-12");
  EXPECT_EQ(r.header("content-type"), "application/json; charset=utf-8");
  // Byte for byte the Node capture (docs/protocol.md §4.4).
  EXPECT_EQ(r.body, R"({"query":"SELECT * FROM devices WHERE tags.a = 1"})");
  EXPECT_EQ(r.header("x-ms-max-item-count"), std::nullopt);
  EXPECT_EQ(r.header("x-ms-continuation"), std::nullopt);
  EXPECT_THAT(r.header("authorization").value_or(""),
              HasSubstr("SharedAccessSignature sr=myhub.example&sig="));
}

TEST_F(QueryClientTest, QuerySendsPageSizeAndContinuation) {
  server_.reply(page("[]", "Twin"));
  ASSERT_TRUE(client_->query("SELECT * FROM devices", 100, std::string("tok1")));
  auto r = server_.requests().at(0);
  EXPECT_EQ(r.header("x-ms-max-item-count"), "100");
  EXPECT_EQ(r.header("x-ms-continuation"), "tok1");
}

TEST_F(QueryClientTest, PageCarriesRowsItemTypeAndContinuation) {
  server_.reply(page(R"([{"deviceId":"d1"},{"deviceId":"d2"}])", "Twin", "tok1"));
  server_.reply(page(R"([{"n":3}])", "Raw"));
  auto first = client_->query("SELECT * FROM devices", 2);
  ASSERT_TRUE(first) << first.status().toString();
  EXPECT_EQ(json::value(first->rows), parse(R"([{"deviceId":"d1"},{"deviceId":"d2"}])"));
  EXPECT_EQ(first->item_type, QueryItemType::Twin);
  EXPECT_EQ(first->continuation, "tok1");
  auto last = client_->query("SELECT COUNT() AS n FROM devices");
  ASSERT_TRUE(last) << last.status().toString();
  EXPECT_EQ(last->item_type, QueryItemType::Raw);
  EXPECT_EQ(last->continuation, std::nullopt);
}

TEST_F(QueryClientTest, PagingStopsExactlyWhenTheContinuationHeaderIsAbsent) {
  server_.reply(page(R"([{"deviceId":"d1"},{"deviceId":"d2"}])", "Twin", "tok1"));
  server_.reply(page(R"([{"deviceId":"d3"},{"deviceId":"d4"}])", "Twin", "tok2"));
  server_.reply(page(R"([{"deviceId":"d5"}])", "Twin"));
  // A fourth request would get the fake server's 500 and fail the call.
  auto rows = client_->queryAll("SELECT * FROM devices", 2);
  ASSERT_TRUE(rows) << rows.status().toString();
  EXPECT_EQ(rows->size(), 5u);
  EXPECT_EQ(rows->at(4).at("deviceId"), "d5");
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].header("x-ms-continuation"), std::nullopt);
  EXPECT_EQ(requests[1].header("x-ms-continuation"), "tok1");
  EXPECT_EQ(requests[2].header("x-ms-continuation"), "tok2");
  for (const auto& r : requests) {
    EXPECT_EQ(r.header("x-ms-max-item-count"), "2");
    EXPECT_EQ(r.body, R"({"query":"SELECT * FROM devices"})");
  }
}

TEST_F(QueryClientTest, CursorReportsProgressAndRefusesToReadPastTheEnd) {
  server_.reply(page(R"([{"deviceId":"d1"}])", "Twin", "tok1"));
  server_.reply(page("[]", "Twin"));
  PagedQuery query = client_->createQuery("SELECT * FROM devices", 1);
  EXPECT_TRUE(query.hasMoreResults());
  EXPECT_EQ(query.continuationToken(), std::nullopt);
  ASSERT_TRUE(query.next());
  EXPECT_TRUE(query.hasMoreResults());
  EXPECT_EQ(query.continuationToken(), "tok1");
  auto last = query.next();
  ASSERT_TRUE(last) << last.status().toString();
  EXPECT_TRUE(last->rows.empty());
  EXPECT_FALSE(query.hasMoreResults());
  EXPECT_EQ(query.pagesFetched(), 2);
  EXPECT_EQ(query.next().code(), ErrorCode::InvalidOperation);
  EXPECT_EQ(server_.requests().size(), 2u);
}

TEST_F(QueryClientTest, AFailedPageCanBeRetriedWithTheSameToken) {
  server_.reply(page(R"([{"deviceId":"d1"}])", "Twin", "tok1"));
  server_.reply(429, azureError("ThrottlingException", "Too many requests"));
  server_.reply(page(R"([{"deviceId":"d2"}])", "Twin"));
  PagedQuery query = client_->createQuery("SELECT * FROM devices");
  ASSERT_TRUE(query.next());
  EXPECT_EQ(query.next().code(), ErrorCode::Throttled);
  EXPECT_TRUE(query.hasMoreResults());
  ASSERT_TRUE(query.next());
  EXPECT_FALSE(query.hasMoreResults());
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1].header("x-ms-continuation"), "tok1");
  EXPECT_EQ(requests[2].header("x-ms-continuation"), "tok1");
}

TEST_F(QueryClientTest, MaxPagesBoundsQueryAll) {
  server_.reply(page(R"([1])", "Raw", "a"));
  server_.reply(page(R"([2])", "Raw", "b"));
  auto rows = client_->queryAll("SELECT deviceId FROM devices", std::nullopt, 2);
  ASSERT_TRUE(rows) << rows.status().toString();
  EXPECT_EQ(json::value(*rows), parse("[1,2]"));
  EXPECT_EQ(server_.requests().size(), 2u);
}

TEST_F(QueryClientTest, BadQueryIsArgumentInvalidWithThePosition) {
  server_.reply(400, azureError("ArgumentInvalid",
                                "Syntax error at line 1, column 8: expected a projection"));
  auto result = client_->query("SELECT FROM devices");
  EXPECT_EQ(result.code(), ErrorCode::ArgumentInvalid);
  EXPECT_THAT(result.status().message(), HasSubstr("line 1, column 8"));
  EXPECT_THAT(result.status().message(), HasSubstr("(HTTP 400)"));
  EXPECT_FALSE(isTransportFailure(result.status()));
}

TEST_F(QueryClientTest, HubErrorsAreMappedLikeTheOtherClients) {
  server_.reply(401, azureError("IotHubUnauthorizedAccess", "Unauthorized"));
  server_.reply(503, "");
  EXPECT_EQ(client_->query("SELECT * FROM devices").code(), ErrorCode::Unauthorized);
  auto unavailable = client_->query("SELECT * FROM devices");
  EXPECT_EQ(unavailable.code(), ErrorCode::ServiceUnavailable);
  EXPECT_FALSE(isTransportFailure(unavailable.status()));
}

TEST_F(QueryClientTest, AReplyThatIsNotAJsonArrayIsIotHubFormatError) {
  server_.reply(200, R"({"deviceId":"d1"})");
  server_.reply(200, "[1,");
  CannedResponse text;
  text.body = "[]";
  text.content_type = "text/plain";
  server_.reply(text);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(client_->query("SELECT * FROM devices").code(), ErrorCode::IotHubFormatError) << i;
  }
}

TEST_F(QueryClientTest, AnEmptyContinuationHeaderIsRefusedInsteadOfLoopingForever) {
  server_.reply(page(R"([{"deviceId":"d1"}])", "Twin", ""));
  auto rows = client_->queryAll("SELECT * FROM devices");
  EXPECT_EQ(rows.code(), ErrorCode::IotHubFormatError);
  EXPECT_THAT(rows.status().message(), HasSubstr("x-ms-continuation"));
  EXPECT_EQ(server_.requests().size(), 1u);
}

TEST_F(QueryClientTest, InvalidPagingArgumentsAreRejectedWithoutARequest) {
  EXPECT_EQ(client_->query("SELECT * FROM devices", 0).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->query("SELECT * FROM devices", 1001).code(), ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->query("SELECT * FROM devices", 10, std::string()).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_EQ(client_->queryAll("SELECT * FROM devices", -1).code(), ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(QueryClientTest, UnreachableHubIsATransportFailure) {
  ServiceClientOptions options;
  options.endpoint = "http://127.0.0.1:1";
  options.timeout = std::chrono::seconds{5};
  auto client = QueryClient::fromConnectionString(kConnectionString, options);
  ASSERT_TRUE(client) << client.status().toString();
  auto result = client->query("SELECT * FROM devices");
  EXPECT_TRUE(isTransportFailure(result.status())) << result.status().toString();
}

TEST(QueryItemTypeTest, ParsesTheCaseSensitiveWireNames) {
  EXPECT_EQ(parseQueryItemType("Twin"), QueryItemType::Twin);
  EXPECT_EQ(parseQueryItemType("DeviceJob"), QueryItemType::DeviceJob);
  EXPECT_EQ(parseQueryItemType("JobResponse"), QueryItemType::JobResponse);
  EXPECT_EQ(parseQueryItemType("Raw"), QueryItemType::Raw);
  EXPECT_EQ(parseQueryItemType("twin"), QueryItemType::Unknown);
  EXPECT_EQ(parseQueryItemType(""), QueryItemType::Unknown);
  EXPECT_EQ(toString(QueryItemType::DeviceJob), "DeviceJob");
}

TEST(QuoteStringTest, EscapesQuotesAndBackslashesForTheQueryLexer) {
  EXPECT_EQ(QueryClient::quoteString("d1"), "'d1'");
  EXPECT_EQ(QueryClient::quoteString("O'Brien"), R"('O\'Brien')");
  EXPECT_EQ(QueryClient::quoteString(R"(a\b)"), R"('a\\b')");
  EXPECT_EQ(QueryClient::quoteString(""), "''");
}

}  // namespace
}  // namespace iothub::service
