#include "iothub/service/http_transport.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <regex>

#include "auth/sas_token.hpp"
#include "fake_http_server.hpp"
#include "test_certificate.hpp"

namespace iothub::service {
namespace {

using testing::CannedResponse;
using testing::FakeHttpServer;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using Then = CannedResponse::Then;

constexpr std::string_view kKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

CannedResponse canned(Then then, int status = 200, std::string body = "{}") {
  CannedResponse r;
  r.status = status;
  r.body = std::move(body);
  r.then = then;
  return r;
}

auth::ServiceConnectionString connectionString(std::string host = "myhub.example") {
  return auth::ServiceConnectionString{std::move(host), "iothubowner", std::string(kKey)};
}

class HttpTransportTest : public ::testing::Test {
 protected:
  std::unique_ptr<HttpTransport> makeTransport(std::chrono::seconds timeout = std::chrono::seconds{
                                                   10}) {
    ServiceClientOptions options;
    options.endpoint = server_.endpoint();
    options.timeout = timeout;
    auto transport = HttpTransport::create(connectionString(), options, clock_);
    EXPECT_TRUE(transport) << transport.status().toString();
    return transport ? std::move(*transport) : nullptr;
  }

  static HttpRequest get(std::string path) {
    HttpRequest request;
    request.path = std::move(path);
    return request;
  }

  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  FakeHttpServer server_;
};

TEST_F(HttpTransportTest, SendsAzureHeadersAndASignedServiceToken) {
  auto transport = makeTransport();
  server_.reply(200, R"({"ok":true})");
  auto response = transport->send(get("/statistics/devices"));
  ASSERT_TRUE(response) << response.status().toString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->body, R"({"ok":true})");
  EXPECT_EQ(response->header("Content-Type"), "application/json; charset=utf-8");

  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 1u);
  const auto& r = requests[0];
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/statistics/devices?api-version=2021-04-12");
  EXPECT_EQ(r.header("host"), "myhub.example");
  EXPECT_EQ(r.header("user-agent"), "iothub-cpp-sdk/0.1");
  EXPECT_EQ(r.header("connection"), "keep-alive");
  EXPECT_EQ(r.header("content-type"), std::nullopt);
  EXPECT_EQ(r.header("if-match"), std::nullopt);
  EXPECT_TRUE(std::regex_match(
      r.header("request-id").value_or(""),
      std::regex("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")));

  std::string authorization = r.header("authorization").value_or("");
  EXPECT_THAT(authorization, StartsWith("SharedAccessSignature sr=myhub.example&sig="));
  auto token = auth::SasToken::parse(authorization);
  ASSERT_TRUE(token) << token.status().toString();
  EXPECT_EQ(token->resource_raw, "myhub.example");
  EXPECT_EQ(token->key_name, "iothubowner");
  EXPECT_EQ(token->expiry, unixSeconds(clock_->now()) + 3600);
  EXPECT_TRUE(auth::signatureMatches(*token, kKey));
}

TEST_F(HttpTransportTest, SignsEveryRequestFreshWithANewRequestId) {
  auto transport = makeTransport();
  server_.reply(200);
  server_.reply(200);
  ASSERT_TRUE(transport->send(get("/a")));
  clock_->advance(std::chrono::seconds{100});
  ASSERT_TRUE(transport->send(get("/b")));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  auto first = auth::SasToken::parse(requests[0].header("authorization").value_or(""));
  auto second = auth::SasToken::parse(requests[1].header("authorization").value_or(""));
  ASSERT_TRUE(first && second);
  EXPECT_EQ(second->expiry - first->expiry, 100);
  EXPECT_TRUE(auth::signatureMatches(*second, kKey));
  EXPECT_NE(requests[0].header("request-id"), requests[1].header("request-id"));
}

TEST_F(HttpTransportTest, SendsBodyWithJsonContentTypeQuotedIfMatchAndExtraHeaders) {
  auto transport = makeTransport();
  server_.reply(200, "{}");
  HttpRequest request;
  request.method = "POST";
  request.path = "/devices/query";
  request.body = R"({"query":"SELECT * FROM devices"})";
  request.if_match = "*";
  request.headers = {{"x-ms-continuation", "tok1"}, {"x-ms-max-item-count", "100"}};
  ASSERT_TRUE(transport->send(request));
  auto r = server_.requests().at(0);
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/devices/query?api-version=2021-04-12");
  EXPECT_EQ(r.header("content-type"), "application/json; charset=utf-8");
  EXPECT_EQ(r.header("content-length"), std::to_string(request.body->size()));
  EXPECT_EQ(r.header("if-match"), "\"*\"");
  EXPECT_EQ(r.header("x-ms-continuation"), "tok1");
  EXPECT_EQ(r.header("x-ms-max-item-count"), "100");
  EXPECT_EQ(r.body, *request.body);
}

TEST_F(HttpTransportTest, PostWithoutBodySendsZeroLengthAndNoContentType) {
  // Like JobClient.cancelJob (docs/protocol.md §9.7): no body, no Content-Type, Content-Length: 0.
  auto transport = makeTransport();
  server_.reply(200, "{}");
  HttpRequest request;
  request.method = "POST";
  request.path = "/jobs/v2/j1/cancel";
  ASSERT_TRUE(transport->send(request));
  auto r = server_.requests().at(0);
  EXPECT_EQ(r.target, "/jobs/v2/j1/cancel?api-version=2021-04-12");
  EXPECT_EQ(r.header("content-length"), "0");
  EXPECT_EQ(r.header("content-type"), std::nullopt);
}

TEST_F(HttpTransportTest, ReusesOneKeepAliveConnection) {
  auto transport = makeTransport();
  for (int i = 0; i < 3; ++i) server_.reply(200, "{}");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(transport->send(get("/x")));
  EXPECT_EQ(server_.connectionsAccepted(), 1);
}

TEST_F(HttpTransportTest, ReconnectsWhenTheServerClosedTheIdleConnection) {
  auto transport = makeTransport();
  server_.reply(canned(Then::CloseAfterResponse));
  server_.reply(200, R"({"n":2})");
  ASSERT_TRUE(transport->send(get("/first")));
  ASSERT_TRUE(server_.waitForClosedConnections(1));
  auto second = transport->send(get("/second"));
  ASSERT_TRUE(second) << second.status().toString();
  EXPECT_EQ(second->body, R"({"n":2})");
  EXPECT_EQ(server_.connectionsAccepted(), 2);
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].connection, 2);
}

TEST_F(HttpTransportTest, ResendsOnceWhenAReusedConnectionDropsTheRequest) {
  auto transport = makeTransport();
  server_.reply(200, "{}");
  server_.reply(canned(Then::CloseWithoutResponse));
  server_.reply(200, R"({"n":3})");
  ASSERT_TRUE(transport->send(get("/first")));
  auto second = transport->send(get("/second"));
  ASSERT_TRUE(second) << second.status().toString();
  EXPECT_EQ(second->body, R"({"n":3})");
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[1].target, requests[2].target);
  EXPECT_EQ(requests[1].header("request-id"), requests[2].header("request-id"));
  EXPECT_EQ(requests[1].connection, 1);
  EXPECT_EQ(requests[2].connection, 2);
}

TEST_F(HttpTransportTest, ResendsAtMostOnce) {
  auto transport = makeTransport();
  server_.reply(200, "{}");
  server_.reply(canned(Then::CloseWithoutResponse));
  server_.reply(canned(Then::CloseWithoutResponse));
  ASSERT_TRUE(transport->send(get("/first")));
  auto second = transport->send(get("/second"));
  ASSERT_FALSE(second);
  EXPECT_TRUE(isTransportFailure(second.status())) << second.status().toString();
  EXPECT_EQ(server_.requests().size(), 3u);
}

TEST_F(HttpTransportTest, NeverResendsOnAFreshConnection) {
  auto transport = makeTransport();
  server_.reply(canned(Then::CloseWithoutResponse));
  auto response = transport->send(get("/x"));
  ASSERT_FALSE(response);
  EXPECT_EQ(response.code(), ErrorCode::ServiceUnavailable);
  EXPECT_TRUE(isTransportFailure(response.status()));
  EXPECT_THAT(response.status().message(), HasSubstr("reading the response"));
  EXPECT_EQ(server_.requests().size(), 1u);
}

TEST_F(HttpTransportTest, ConnectionCloseFromServerIsHonoured) {
  auto transport = makeTransport();
  CannedResponse closing = canned(Then::KeepOpen);
  closing.headers = {{"Connection", "close"}};
  server_.reply(closing);
  server_.reply(200, "{}");
  ASSERT_TRUE(transport->send(get("/a")));
  ASSERT_TRUE(transport->send(get("/b")));
  EXPECT_EQ(server_.connectionsAccepted(), 2);
  EXPECT_EQ(server_.requests().size(), 2u);
}

TEST_F(HttpTransportTest, TimesOutWhenTheServerNeverAnswers) {
  auto transport = makeTransport(std::chrono::seconds{1});
  server_.reply(canned(Then::Hang));
  auto response = transport->send(get("/slow"));
  ASSERT_FALSE(response);
  EXPECT_TRUE(isTransportFailure(response.status()));
  EXPECT_THAT(response.status().message(), HasSubstr("within 1s"));
  EXPECT_EQ(server_.requests().size(), 1u);
}

TEST_F(HttpTransportTest, PerRequestTimeoutReplacesTheDefault) {
  auto transport = makeTransport(std::chrono::seconds{60});
  server_.reply(canned(Then::Hang));
  HttpRequest request = get("/slow");
  request.timeout = std::chrono::milliseconds{500};
  auto started = std::chrono::steady_clock::now();
  auto response = transport->send(request);
  ASSERT_FALSE(response);
  EXPECT_TRUE(isTransportFailure(response.status()));
  EXPECT_THAT(response.status().message(), HasSubstr("within 500ms"));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds{30});
}

TEST_F(HttpTransportTest, RejectsANonPositiveRequestTimeout) {
  auto transport = makeTransport();
  HttpRequest request = get("/x");
  request.timeout = std::chrono::milliseconds{0};
  EXPECT_EQ(transport->send(request).code(), ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(HttpTransportTest, SendJsonParsesJsonAndMapsErrors) {
  auto transport = makeTransport();
  server_.reply(200, R"({"a":1})");
  server_.reply(204);
  server_.reply(
      404, R"({"Message":"ErrorCode:DeviceNotFound;Device nope not found","ExceptionMessage":""})");
  CannedResponse text = canned(Then::KeepOpen, 200, "hello");
  text.content_type = "text/plain";
  server_.reply(text);
  server_.reply(200, "{broken");

  auto ok = transport->sendJson(get("/a"));
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, json::value({{"a", 1}}));
  auto empty = transport->sendJson(get("/b"));
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->is_null());
  auto missing = transport->sendJson(get("/c"));
  EXPECT_EQ(missing.code(), ErrorCode::DeviceNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("Device nope not found"));
  EXPECT_EQ(transport->sendJson(get("/d")).code(), ErrorCode::IotHubFormatError);
  EXPECT_EQ(transport->sendJson(get("/e")).code(), ErrorCode::IotHubFormatError);
}

TEST(HttpTransportConnectTest, ConnectionRefusedIsATransportFailure) {
  std::uint16_t port = 0;
  {
    boost::asio::io_context ioc;
    boost::asio::ip::tcp::acceptor probe(
        ioc, boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    port = probe.local_endpoint().port();
  }
  ServiceClientOptions options;
  options.endpoint = "http://127.0.0.1:" + std::to_string(port);
  auto transport = HttpTransport::create(connectionString(), options);
  ASSERT_TRUE(transport);
  HttpRequest request;
  request.path = "/devices/";
  auto response = (*transport)->send(request);
  ASSERT_FALSE(response);
  EXPECT_EQ(response.code(), ErrorCode::ServiceUnavailable);
  EXPECT_TRUE(isTransportFailure(response.status()));
  EXPECT_THAT(response.status().message(), HasSubstr("refused"));
}

TEST(HttpTransportCreateTest, DefaultEndpointIsHttpsOnHostName) {
  auto plain = HttpTransport::create(connectionString("myhub.example"), {});
  ASSERT_TRUE(plain) << plain.status().toString();
  EXPECT_EQ((*plain)->endpoint(), "https://myhub.example:443");
  EXPECT_EQ((*plain)->hostName(), "myhub.example");
  auto with_port = HttpTransport::create(connectionString("localhost:8443"), {});
  ASSERT_TRUE(with_port);
  EXPECT_EQ((*with_port)->endpoint(), "https://localhost:8443");
}

TEST(HttpTransportCreateTest, RejectsBadEndpointsAndCaFiles) {
  for (std::string endpoint :
       {"ftp://127.0.0.1:21", "127.0.0.1:8443", "https://h:1/path", "https://h?x=1"}) {
    ServiceClientOptions options;
    options.endpoint = endpoint;
    EXPECT_EQ(HttpTransport::create(connectionString(), options).code(), ErrorCode::ArgumentInvalid)
        << endpoint;
  }
  ServiceClientOptions options;
  options.ca_file = "/nonexistent/ca.pem";
  auto missing_ca = HttpTransport::create(connectionString(), options);
  EXPECT_EQ(missing_ca.code(), ErrorCode::ArgumentInvalid);
  EXPECT_THAT(missing_ca.status().message(), HasSubstr("/nonexistent/ca.pem"));
  auto bad_key = HttpTransport::create(auth::ServiceConnectionString{"h", "p", "not base64!"},
                                       ServiceClientOptions{});
  EXPECT_EQ(bad_key.code(), ErrorCode::ArgumentInvalid);
}

CannedResponse chunked(std::vector<std::string> chunks) {
  CannedResponse r;
  r.content_type = "text/event-stream";
  r.chunks = std::move(chunks);
  return r;
}

TEST_F(HttpTransportTest, SendStreamingDeliversSuccessBodiesAndBuffersErrorBodies) {
  server_.reply(chunked({"ab", "cd", "e"}));
  server_.reply(404, R"({"Message":"ErrorCode:NotFound;nothing here"})");
  server_.reply(200, "{}");
  auto transport = makeTransport();
  std::vector<std::string> pieces;
  auto on_data = [&](std::string_view data) {
    pieces.emplace_back(data);
    return true;
  };
  auto streamed = transport->sendStreaming(get("/s"), on_data, std::chrono::seconds{5});
  ASSERT_TRUE(streamed) << streamed.status().toString();
  EXPECT_EQ(streamed->status, 200);
  EXPECT_EQ(streamed->header("content-type"), "text/event-stream");
  EXPECT_EQ(streamed->body, "");
  std::string joined;
  for (const auto& p : pieces) joined += p;
  EXPECT_EQ(joined, "abcde");

  pieces.clear();
  auto error = transport->sendStreaming(get("/missing"), on_data, std::chrono::seconds{5});
  ASSERT_TRUE(error) << error.status().toString();
  EXPECT_EQ(error->status, 404);
  EXPECT_THAT(error->body, HasSubstr("nothing here"));
  EXPECT_TRUE(pieces.empty());

  // Each stream had a connection of its own, closed afterwards: the fake server (one
  // connection at a time) can take the ordinary request that follows.
  ASSERT_TRUE(transport->send(get("/after")));
  auto requests = server_.requests();
  ASSERT_EQ(requests.size(), 3u);
  EXPECT_EQ(requests[0].target, "/s?api-version=2021-04-12");
  EXPECT_EQ(requests[0].connection, 1);
  EXPECT_EQ(requests[1].connection, 2);
  EXPECT_EQ(requests[2].connection, 3);
  EXPECT_THAT(requests[0].header("authorization").value_or(""),
              StartsWith("SharedAccessSignature "));
}

TEST_F(HttpTransportTest, SendStreamingStopsWhenTheHandlerSaysSo) {
  CannedResponse endless = chunked({"first", "never"});
  endless.hold_before_chunk = 1;
  server_.reply(endless);
  auto transport = makeTransport();
  int calls = 0;
  auto response = transport->sendStreaming(
      get("/s"),
      [&](std::string_view data) {
        ++calls;
        EXPECT_EQ(data, "first");
        return false;
      },
      std::chrono::seconds{5});
  ASSERT_TRUE(response) << response.status().toString();
  EXPECT_EQ(calls, 1);
  // The stream's connection is closed: once the server finishes writing it sees that and
  // takes the next connection (one left open would make the request below time out).
  server_.release();
  server_.reply(200, "{}");
  auto after = transport->send(get("/after"));
  ASSERT_TRUE(after) << after.status().toString();
  EXPECT_EQ(server_.requests().back().connection, 2);
}

TEST_F(HttpTransportTest, SendStreamingRejectsTimeoutsThatAreNotPositive) {
  auto transport = makeTransport();
  auto on_data = [](std::string_view) { return true; };
  EXPECT_EQ(transport->sendStreaming(get("/s"), on_data, std::chrono::seconds{0}).code(),
            ErrorCode::ArgumentInvalid);
  HttpRequest request = get("/s");
  request.timeout = std::chrono::milliseconds{0};
  EXPECT_EQ(transport->sendStreaming(request, on_data, std::chrono::seconds{5}).code(),
            ErrorCode::ArgumentInvalid);
  EXPECT_TRUE(server_.requests().empty());
}

// TLS: the fake server presents a self-signed certificate for myhub.example and 127.0.0.1.
class HttpTransportTlsTest : public ::testing::Test {
 protected:
  Result<HttpResponse> sendTo(const std::string& host_name, const std::string& ca_file) {
    ServiceClientOptions options;
    options.endpoint = server_.endpoint();
    options.ca_file = ca_file;
    options.timeout = std::chrono::seconds{10};
    auto transport = HttpTransport::create(connectionString(host_name), options);
    if (!transport) return transport.status();
    HttpRequest request;
    request.path = "/statistics/devices";
    return (*transport)->send(request);
  }

  static testing::TestCertificate& certificate() {
    static testing::TestCertificate cert =
        testing::makeSelfSignedCertificate("DNS:myhub.example,IP:127.0.0.1");
    return cert;
  }

  FakeHttpServer server_{testing::ServerTlsConfig{certificate().cert_pem, certificate().key_pem}};
  std::string ca_file_ = testing::writeTempFile("ca.pem", certificate().cert_pem);
};

TEST_F(HttpTransportTlsTest, VerifiesTheHubCertificateAndSendsSni) {
  server_.reply(200, "{}");
  auto response = sendTo("myhub.example", ca_file_);
  ASSERT_TRUE(response) << response.status().toString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(server_.lastServerName(), "myhub.example");
  EXPECT_EQ(server_.requests().at(0).header("host"), "myhub.example");
}

TEST_F(HttpTransportTlsTest, AcceptsAnIpHostNameAgainstAnIpSan) {
  server_.reply(200, "{}");
  auto response = sendTo("127.0.0.1", ca_file_);
  ASSERT_TRUE(response) << response.status().toString();
  EXPECT_EQ(server_.lastServerName(), "");
}

TEST_F(HttpTransportTlsTest, RejectsACertificateForAnotherHost) {
  auto response = sendTo("otherhub.example", ca_file_);
  ASSERT_FALSE(response);
  EXPECT_TRUE(isTransportFailure(response.status()));
  EXPECT_THAT(response.status().message(), HasSubstr("certificate verify failed"));
  EXPECT_THAT(response.status().message(), HasSubstr("hostname mismatch"));
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(HttpTransportTlsTest, SendStreamingReadsOverTls) {
  CannedResponse stream;
  stream.content_type = "text/event-stream";
  stream.chunks = {"event: job\n", "data: {}\n\n"};
  server_.reply(stream);
  ServiceClientOptions options;
  options.endpoint = server_.endpoint();
  options.ca_file = ca_file_;
  auto transport = HttpTransport::create(connectionString("myhub.example"), options);
  ASSERT_TRUE(transport) << transport.status().toString();
  std::string body;
  auto response = (*transport)
                      ->sendStreaming(
                          HttpRequest{},
                          [&](std::string_view data) {
                            body += data;
                            return true;
                          },
                          std::chrono::seconds{5});
  ASSERT_TRUE(response) << response.status().toString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(body, "event: job\ndata: {}\n\n");
  EXPECT_EQ(server_.lastServerName(), "myhub.example");
}

TEST_F(HttpTransportTlsTest, RejectsAnUntrustedCertificate) {
  auto response = sendTo("myhub.example", "");
  ASSERT_FALSE(response);
  EXPECT_TRUE(isTransportFailure(response.status()));
  EXPECT_THAT(response.status().message(), HasSubstr("certificate verify failed"));
  EXPECT_THAT(response.status().message(), HasSubstr("self-signed"));
}

}  // namespace
}  // namespace iothub::service
