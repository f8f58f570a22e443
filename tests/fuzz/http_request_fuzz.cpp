// Fuzz target for the service REST front door: the input is the byte stream a client sends
// on one keep-alive connection. It is parsed as the hub's HTTP server parses it (Beast's
// request_parser with the hub's default body and header limits, src/transport/http_server.cpp),
// and every request that parses is handed to ServiceApi, as the server does, over a fresh
// in-memory hub per input: two devices with twins, the twin index and query runner, the
// jobs engine (not started: jobs are stored, never run) and a method invoker whose timers
// never fire. Requests run in order until one fails to parse, asks to close, or upgrades.
//
// Properties checked on any input:
//   1. Nothing crashes, hangs or leaks; the parser stops at the limits.
//   2. Every response has a status in 200..599 (1xx or 0 would confuse the server), and
//      every error response is Azure-shaped: a JSON body with a "Message".
//   3. A 2xx response with a JSON content type has a body that parses as JSON.
//
// Seed tokens are signed with kOwnerKey / kReadKey for host kHost, expiring at 2000000000
// (the fake clock reads 1700000000).
#include <spdlog/spdlog.h>

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/url/parse.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/encoding.hpp"
#include "common/json.hpp"
#include "index/indexed_store.hpp"
#include "index/query_runner.hpp"
#include "index/twin_index.hpp"
#include "jobs/jobs_engine.hpp"
#include "methods/method_invoker.hpp"
#include "registry/device_registry.hpp"
#include "routing/connection_registry.hpp"
#include "service_api/error_response.hpp"
#include "service_api/service_api.hpp"
#include "tests/fuzz/memory_store.hpp"
#include "twin/twin_service.hpp"

namespace {

using namespace iothub;
namespace beast = boost::beast;
namespace http = beast::http;

constexpr std::string_view kHost = "hub.fuzz";
constexpr std::string_view kOwnerKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
constexpr std::string_view kReadKey = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
constexpr std::string_view kDeviceKey = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=";
// The hub's defaults (HttpServerOptions, HubConfig::http_body_limit).
constexpr std::size_t kBodyLimit = 1024 * 1024;
constexpr std::uint32_t kHeaderLimit = 16 * 1024;
constexpr int kMaxRequests = 16;

[[noreturn]] void fail(const char* what, const HttpResponse& response) {
  std::fprintf(stderr, "http_request_fuzz: %s (status %d, body %.300s)\n", what, response.status,
               response.body.c_str());
  std::abort();
}

// Timers that never fire: a direct method to a device that is not connected stays pending
// until the invoker is destroyed, which answers it Cancelled.
class InertScheduler final : public Scheduler {
 public:
  TimerId schedule(std::chrono::steady_clock::duration, std::function<void()>) override {
    return ++next_;
  }
  bool cancel(TimerId) override { return true; }

 private:
  TimerId next_ = 0;
};

class NoDeviceOperations final : public jobs::DeviceOperations {
 public:
  void invokeMethod(methods::MethodCall, methods::MethodCallback done) override {
    done(Status(ErrorCode::DeviceNotOnline, "not in this harness"));
  }
  Status updateTwin(std::string_view, const json::object&, const store::DeviceJobWrite&) override {
    return Status::ok();
  }
};

// One hub without I/O, fresh for every input so that inputs do not depend on each other.
struct Hub {
  Hub()
      : policies{{"iothubowner", std::string(kOwnerKey), std::string(kOwnerKey),
                  store::kRegistryRead | store::kRegistryWrite | store::kServiceConnect |
                      store::kDeviceConnect},
                 {"registryRead", std::string(kReadKey), std::string(kReadKey),
                  store::kRegistryRead}},
        indexed(memory, index),
        authenticator(std::string(kHost), policies, clock),
        registry(indexed, random, clock, &connections),
        twins(indexed, clock, &connections, nullptr),
        methods(connections, scheduler),
        queries(index, indexed.deviceJobs()),
        jobs(
            indexed, operations, [](const query::Condition&) { return std::vector<std::string>(); },
            clock),
        api(service_api::ServiceApiDeps{
            .authenticator = &authenticator,
            .registry = &registry,
            .connections = &connections,
            .twins = &twins,
            .methods = &methods,
            .queries = &queries,
            .jobs = &jobs,
            .random = &random,
            .clock = &clock,
            .service_statistics =
                [] {
                  return json::object{{"connectedDeviceCount", 0}};
                },
            .cluster_nodes = nullptr,
            .console = nullptr,
            // As if dev1 were connected: its direct methods take the I/O-thread path.
            .held_here = [](std::string_view id) { return id == "dev1"; }}) {
    for (std::string id : {"dev1", "door-2"}) {
      store::DeviceRecord device;
      device.device_id = id;
      device.generation_id = "638000000000000000";
      device.etag = "MQ==";
      device.primary_key = std::string(kDeviceKey);
      device.secondary_key = std::string(kDeviceKey);
      store::TwinRecord twin;
      twin.device_id = id;
      twin.tags = json::object{{"site", json::object{{"building", 43}}}, {"floor", 3}};
      if (!indexed.registry().createDevice(device, twin).isOk()) std::abort();
    }
  }

  FakeClock clock;
  SeededRandom random{1};
  std::vector<store::AccessPolicyRecord> policies;
  fuzz::MemoryStore memory;
  index::TwinIndex index;
  index::IndexedStore indexed;
  auth::ServiceAuthenticator authenticator;
  routing::ConnectionRegistry connections;
  InertScheduler scheduler;
  NoDeviceOperations operations;
  registry::DeviceRegistry registry;
  twin::TwinService twins;
  methods::MethodInvoker methods;
  index::QueryRunner queries;
  jobs::JobsEngine jobs;
  service_api::ServiceApi api;
};

// Cancelling a stored job waits (5 s) for the engine thread, which this harness does not
// run; the cancel route is skipped rather than slowing every such input down.
bool isJobCancel(const HttpRequest& request) {
  auto url = boost::urls::parse_origin_form(request.target);
  if (!url) return false;
  for (auto segment : url->segments()) {
    if (equalsIgnoreCase(segment, "cancel")) return true;
  }
  return false;
}

// JSON syntax only. Bytes that are not UTF-8 are let through: the hub echoes ids from the
// request (percent-decoded, so any byte) into messages and bodies, which Node's SDK reads
// with replacement characters (reported in docs/testing.md; not a crash).
std::optional<json::value> parseLenient(const std::string& text) {
  json::parse_options options;
  options.allow_invalid_utf8 = true;
  std::error_code ec;
  json::value value = json::parse(text, ec, {}, options);
  if (ec) return std::nullopt;
  return value;
}

void checkResponse(const HttpResponse& response) {
  if (response.status < 200 || response.status > 599) fail("status outside 200..599", response);
  const std::string* content_type = response.headers.find("Content-Type");
  bool json_body = content_type != nullptr && content_type->find("json") != std::string::npos;
  if (response.status >= 400) {
    auto body = parseLenient(response.body);
    if (!body || !body->is_object() || !body->as_object().contains("Message")) {
      fail("an error response without an Azure error body", response);
    }
    return;
  }
  if (json_body && !response.body.empty() && !parseLenient(response.body)) {
    fail("a JSON response that does not parse", response);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // IOTHUB_FUZZ_VERBOSE=1 prints every request's status (to check that seeds get past
  // authentication and reach their routes).
  static const bool verbose = [] {
    spdlog::set_level(spdlog::level::off);
    return std::getenv("IOTHUB_FUZZ_VERBOSE") != nullptr;
  }();

  Hub hub;
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  for (int n = 0; n < kMaxRequests && !rest.empty(); ++n) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(kBodyLimit);
    parser.header_limit(kHeaderLimit);
    parser.eager(true);
    beast::error_code ec;
    // What async_read does with a socket, over the bytes left: put() until the message is
    // done, an error, or no progress; then the client has closed the connection.
    while (!parser.is_done()) {
      std::size_t used = 0;
      if (!rest.empty()) {
        used = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
        rest.remove_prefix(used);
        if (ec == http::error::need_more) ec = {};
        if (ec) break;
      }
      if (used == 0) {
        parser.put_eof(ec);
        break;
      }
    }
    if (ec == http::error::body_limit) {
      checkResponse(service_api::errorResponse(Status(ErrorCode::MessageTooLarge, "body too large"),
                                               hub.random, hub.clock.now()));
      return 0;
    }
    if (ec || !parser.is_done()) return 0;

    auto& req = parser.get();
    if (beast::websocket::is_upgrade(req)) return 0;
    HttpRequest request;
    request.method = std::string(req.method_string());
    request.target = std::string(req.target());
    for (const auto& field : req) {
      request.headers.fields.emplace_back(std::string(field.name_string()),
                                          std::string(field.value()));
    }
    request.body = std::move(req.body());
    request.remote_address = "127.0.0.1:1";
    if (isJobCancel(request)) return 0;

    auto answer = std::make_shared<std::optional<HttpResponse>>();
    auto respond = [answer](HttpResponse response) { *answer = std::move(response); };
    if (!hub.api.handleInline(request, respond)) hub.api.handleAsync(request, respond);
    // A direct method to a device that is not connected waits for a timer that never
    // fires; every other route answers at once.
    if (answer->has_value()) checkResponse(**answer);
    if (verbose) {
      std::fprintf(stderr, "  %s %s -> %d %.200s\n", request.method.c_str(), request.target.c_str(),
                   answer->has_value() ? (*answer)->status : 0,
                   answer->has_value() && (*answer)->status >= 400 ? (*answer)->body.c_str() : "");
    }
    if (!req.keep_alive()) return 0;
  }
  return 0;
}
