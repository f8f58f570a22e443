// The service REST API driven as a pure function over a real SQLite store: every route,
// and every kind of bad input the foundation issue names, with status and error code.
#include "service_api/service_api.hpp"

#include <gtest/gtest.h>

#include "auth/sas_token.hpp"
#include "common/encoding.hpp"
#include "common/json.hpp"
#include "common/time_format.hpp"
#include "routing/connection_registry.hpp"
#include "service_api/error_response.hpp"
#include "store/sqlite/sqlite_store.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::service_api {
namespace {

constexpr const char* kHost = "hub.test";

// Timers that never fire: the tests here only exercise calls that end at once.
class InertScheduler final : public Scheduler {
 public:
  TimerId schedule(std::chrono::steady_clock::duration, std::function<void()>) override {
    return ++next_;
  }
  bool cancel(TimerId) override { return true; }

 private:
  TimerId next_ = 0;
};

class ServiceApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = store::SqliteStore::open(dir_.path() / "iothub.db", store::SqliteOptions{});
    ASSERT_TRUE(store.isOk()) << store.status().toString();
    store_ = std::move(*store);
    policies_ = auth::defaultPolicies(random_);
    authenticator_ = std::make_unique<auth::ServiceAuthenticator>(kHost, policies_, clock_);
    registry_ = std::make_unique<registry::DeviceRegistry>(*store_, random_, clock_);
    twins_ = std::make_unique<twin::TwinService>(*store_, clock_, &connections_, nullptr);
    methods_ = std::make_unique<methods::MethodInvoker>(connections_, scheduler_);
    api_ = std::make_unique<ServiceApi>(ServiceApiDeps{
        .authenticator = authenticator_.get(),
        .registry = registry_.get(),
        .connections = &connections_,
        .twins = twins_.get(),
        .methods = methods_.get(),
        .consumer_groups = &store_->telemetry(),
        .random = &random_,
        .clock = &clock_,
        .service_statistics =
            [] {
              return json::object{{"connectedDeviceCount", 3}};
            },
        .cluster_nodes =
            [] {
              return Result<json::object>(json::object{
                  {"nodeId", "n1"}, {"nodes", json::array{json::object{{"nodeId", "n1"}}}}});
            },
        .console =
            [](const HttpRequest& r) {
              HttpResponse response;
              response.status = 200;
              response.body = "console " + r.method + " " + r.target;
              return response;
            },
        .held_here = nullptr});
  }

  // The API's dependencies with `engine` for the jobs routes (tests that run a jobs engine).
  ServiceApiDeps jobDeps(jobs::JobsEngine& engine) {
    return ServiceApiDeps{.authenticator = authenticator_.get(),
                          .registry = registry_.get(),
                          .connections = &connections_,
                          .twins = twins_.get(),
                          .methods = methods_.get(),
                          .jobs = &engine,
                          .random = &random_,
                          .clock = &clock_,
                          .service_statistics = [] { return json::object{}; },
                          .cluster_nodes = nullptr,
                          .console = nullptr,
                          .held_here = nullptr};
  }

  const store::AccessPolicyRecord& policy(const std::string& name) {
    for (const auto& p : policies_) {
      if (p.name == name) return p;
    }
    throw std::runtime_error("no policy " + name);
  }

  std::string token(const std::string& policy_name = "iothubowner", std::int64_t lifetime = 3600) {
    auto t = auth::buildSasToken(kHost, policy(policy_name).primary_key, policy_name,
                                 unixSeconds(clock_.now()) + lifetime);
    return *t;
  }

  HttpResponse call(const std::string& method, const std::string& target,
                    const std::string& body = "",
                    std::optional<std::string> if_match = std::nullopt,
                    std::optional<std::string> authorization = std::nullopt) {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.body = body;
    r.headers.set("Authorization", authorization.value_or(token()));
    if (if_match) r.headers.set("If-Match", *if_match);
    return api_->handle(r);
  }

  static json::value body(const HttpResponse& r) { return json::parse(r.body); }

  // The Azure error name a response carries, checked in both the header and the body.
  static std::string errorName(const HttpResponse& r) {
    const std::string* header = r.headers.find("iothub-errorcode");
    EXPECT_NE(header, nullptr);
    std::string message(body(r).as_object().at("Message").as_string());
    EXPECT_EQ(message.rfind("ErrorCode:" + *header + ";", 0), 0u) << message;
    return header ? *header : "";
  }

  testing::TempDir dir_;
  FakeClock clock_;
  SeededRandom random_{42};
  std::vector<store::AccessPolicyRecord> policies_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::ServiceAuthenticator> authenticator_;
  std::unique_ptr<registry::DeviceRegistry> registry_;
  routing::ConnectionRegistry connections_;
  InertScheduler scheduler_;
  std::unique_ptr<twin::TwinService> twins_;
  std::unique_ptr<methods::MethodInvoker> methods_;
  std::unique_ptr<ServiceApi> api_;
};

constexpr const char* kNodeCreateBody =
    R"({"deviceId":"d1","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}})";

TEST_F(ServiceApiTest, CreateGeneratesKeysAndReturnsTheDevice) {
  auto r = call("PUT", "/devices/d1?api-version=2021-04-12", kNodeCreateBody);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(*r.headers.find("Content-Type"), "application/json; charset=utf-8");
  auto d = body(r).as_object();
  EXPECT_EQ(d.at("deviceId").as_string(), "d1");
  EXPECT_EQ(d.at("status").as_string(), "enabled");
  EXPECT_EQ(d.at("connectionState").as_string(), "Disconnected");
  EXPECT_FALSE(d.at("etag").as_string().empty());
  EXPECT_FALSE(d.at("generationId").as_string().empty());
  EXPECT_EQ(d.at("lastActivityTime").as_string(), "0001-01-01T00:00:00Z");
  const auto& sym = d.at("authentication").at("symmetricKey").as_object();
  EXPECT_EQ(sym.at("primaryKey").as_string().size(), 44u);
  EXPECT_EQ(sym.at("secondaryKey").as_string().size(), 44u);
  EXPECT_NE(sym.at("primaryKey"), sym.at("secondaryKey"));

  auto got = call("GET", "/devices/d1?api-version=2021-04-12");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(body(got).at("authentication"), d.at("authentication"));
  EXPECT_EQ(body(got).at("etag"), d.at("etag"));
}

TEST_F(ServiceApiTest, SuppliedKeysAreStoredVerbatim) {
  std::string k1 = base64Encode(std::string(32, 'a')), k2 = base64Encode(std::string(32, 'b'));
  auto r = call("PUT", "/devices/d2",
                R"({"deviceId":"d2","authentication":{"symmetricKey":{"primaryKey":")" + k1 +
                    R"(","secondaryKey":")" + k2 + R"("}}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(body(r).at("authentication").at("symmetricKey").at("primaryKey").as_string(), k1);
  EXPECT_EQ(body(r).at("authentication").at("symmetricKey").at("secondaryKey").as_string(), k2);
}

TEST_F(ServiceApiTest, CreateOfAnExistingIdIsAConflict) {
  ASSERT_EQ(call("PUT", "/devices/d1", kNodeCreateBody).status, 200);
  auto r = call("PUT", "/devices/d1", kNodeCreateBody);
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(errorName(r), "DeviceAlreadyExists");
}

TEST_F(ServiceApiTest, UpdateHonoursIfMatch) {
  auto created = body(call("PUT", "/devices/d1", kNodeCreateBody));
  std::string etag(created.at("etag").as_string());
  auto keys = created.at("authentication").at("symmetricKey");

  auto stale = call("PUT", "/devices/d1", R"({"deviceId":"d1","status":"disabled"})", "\"bogus\"");
  EXPECT_EQ(stale.status, 412);
  EXPECT_EQ(errorName(stale), "PreconditionFailed");

  auto ok = call("PUT", "/devices/d1",
                 R"({"deviceId":"d1","status":"disabled","statusReason":"maintenance"})",
                 "\"" + etag + "\"");
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto updated = body(ok);
  EXPECT_EQ(updated.at("status").as_string(), "disabled");
  EXPECT_EQ(updated.at("statusReason").as_string(), "maintenance");
  EXPECT_NE(updated.at("etag"), created.at("etag"));
  EXPECT_EQ(updated.at("generationId"), created.at("generationId"));
  // An update without keys keeps the device's keys.
  EXPECT_EQ(updated.at("authentication").at("symmetricKey"), keys);

  auto wildcard = call("PUT", "/devices/d1", R"({"deviceId":"d1","status":"enabled"})", "W/\"*\"");
  EXPECT_EQ(wildcard.status, 200);
}

TEST_F(ServiceApiTest, UpdateOfAMissingDeviceIsNotFound) {
  auto r = call("PUT", "/devices/ghost", R"({"deviceId":"ghost"})", "\"*\"");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(errorName(r), "DeviceNotFound");
}

// Found by http_request_fuzz: a decoded byte that is not UTF-8 used to be echoed into the
// error message, making the body invalid JSON text.
TEST_F(ServiceApiTest, PathsAndParametersThatAreNotPrintableAsciiAre400) {
  for (const char* target : {"/devices/d%8A2", "/devices/d%C3%A9", "/devices/d%0A",
                             "/jobs/v2/query?jobType=%FF", "/devices?top=%E2%80%8B"}) {
    auto r = call("GET", target);
    EXPECT_EQ(r.status, 400) << target;
    EXPECT_TRUE(boost::json::parse(r.body).is_object()) << target << ": " << r.body;
    EXPECT_EQ(errorName(r), "ArgumentInvalid") << target;
  }
}

TEST_F(ServiceApiTest, GetAndDeleteOfUnknownDevicesAreDeviceNotFound) {
  auto get = call("GET", "/devices/nobody");
  EXPECT_EQ(get.status, 404);
  EXPECT_EQ(errorName(get), "DeviceNotFound");
  auto del = call("DELETE", "/devices/nobody", "", "\"*\"");
  EXPECT_EQ(del.status, 404);
  EXPECT_EQ(errorName(del), "DeviceNotFound");
}

TEST_F(ServiceApiTest, DeleteRemovesTheDeviceAndChecksTheEtag) {
  auto created = body(call("PUT", "/devices/d1", kNodeCreateBody));
  EXPECT_EQ(call("DELETE", "/devices/d1", "", "\"wrong\"").status, 412);
  auto r =
      call("DELETE", "/devices/d1", "", "\"" + std::string(created.at("etag").as_string()) + "\"");
  EXPECT_EQ(r.status, 204);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(call("GET", "/devices/d1").status, 404);
}

TEST_F(ServiceApiTest, ListReturnsAnArrayInIdOrder) {
  for (std::string id : {"c", "a", "b"}) {
    ASSERT_EQ(call("PUT", "/devices/" + id, R"({"deviceId":")" + id + "\"}").status, 200);
  }
  auto r = call("GET", "/devices/?api-version=2021-04-12");
  ASSERT_EQ(r.status, 200);
  auto list = body(r).as_array();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].at("deviceId").as_string(), "a");
  EXPECT_EQ(list[2].at("deviceId").as_string(), "c");
  auto top = call("GET", "/devices?top=2");
  ASSERT_EQ(top.status, 200);
  EXPECT_EQ(body(top).as_array().size(), 2u);
  EXPECT_EQ(call("GET", "/devices?top=0").status, 400);
  EXPECT_EQ(call("GET", "/devices?top=abc").status, 400);
}

TEST_F(ServiceApiTest, DeviceIdsNeedNotBePlainWords) {
  auto r = call("PUT", "/devices/d%201%2Ex?api-version=2021-04-12", R"({"deviceId":"d 1.x"})");
  // A space is outside Azure's device-id alphabet.
  EXPECT_EQ(r.status, 400);
  auto ok = call("PUT", "/devices/a-b.c%2Bd%3A1", R"({"deviceId":"a-b.c+d:1"})");
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(call("GET", "/devices/a-b.c%2Bd%3A1").status, 200);
}

TEST_F(ServiceApiTest, BadBodiesAreRejectedWithTheRightCode) {
  struct Case {
    std::string target, body;
    int status;
    std::string code;
  } cases[] = {
      {"/devices/d1", "{\"deviceId\":", 400, "IotHubFormatError"},
      {"/devices/d1", "", 400, "ArgumentNull"},
      {"/devices/d1", "[1,2]", 400, "IotHubFormatError"},
      {"/devices/d1", R"({"deviceId":5})", 400, "ArgumentInvalid"},
      {"/devices/d1", R"({"deviceId":"d2"})", 400, "ArgumentInvalid"},
      {"/devices/d1", R"({"status":"sleeping"})", 400, "ArgumentInvalid"},
      {"/devices/d1", R"({"status":true})", 400, "ArgumentInvalid"},
      {"/devices/d1", R"({"authentication":"sas"})", 400, "ArgumentInvalid"},
      {"/devices/d1",
       R"({"authentication":{"symmetricKey":{"primaryKey":"not base64!","secondaryKey":"x"}}})",
       400, "ArgumentInvalid"},
      {"/devices/d1",
       R"({"authentication":{"symmetricKey":{"primaryKey":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=","secondaryKey":""}}})",
       400, "ArgumentInvalid"},
      {"/devices/d1", R"({"authentication":{"type":"magic"}})", 400, "ArgumentInvalid"},
      {"/devices/d1", R"({"capabilities":{"iotEdge":"yes"}})", 400, "ArgumentInvalid"},
      {"/devices/invalid%2Fname", R"({"deviceId":"invalid/name"})", 400, "ArgumentInvalid"},
      {"/devices/" + std::string(129, 'x'), "{}", 400, "ArgumentInvalid"},
      {"/devices/d1", std::string(100, '[') + std::string(100, ']'), 400, "IotHubFormatError"},
  };
  for (const auto& c : cases) {
    auto r = call("PUT", c.target, c.body);
    EXPECT_EQ(r.status, c.status) << c.body;
    EXPECT_EQ(errorName(r), c.code) << c.body;
  }
  EXPECT_EQ(call("GET", "/devices/d1").status, 404) << "nothing was created";
}

TEST_F(ServiceApiTest, RequestsWithoutValidCredentialsAreUnauthorized) {
  ASSERT_EQ(call("PUT", "/devices/d1", kNodeCreateBody).status, 200);
  HttpRequest no_header;
  no_header.method = "GET";
  no_header.target = "/devices/d1";
  auto missing = api_->handle(no_header);
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(errorName(missing), "IotHubUnauthorizedAccess");

  std::string wrong_key = *auth::buildSasToken(kHost, base64Encode(std::string(32, 'z')),
                                               "iothubowner", unixSeconds(clock_.now()) + 3600);
  std::string expired = token("iothubowner", -10);
  std::string forged = token();
  forged[forged.find("sig=") + 5] ^= 1;
  std::string other_host = *auth::buildSasToken("other.test", policy("iothubowner").primary_key,
                                                "iothubowner", unixSeconds(clock_.now()) + 3600);
  std::string unknown_policy = *auth::buildSasToken(kHost, policy("iothubowner").primary_key,
                                                    "nobody", unixSeconds(clock_.now()) + 3600);
  for (const auto& bad :
       {wrong_key, expired, forged, other_host, unknown_policy, std::string("Bearer abc"),
        std::string("SharedAccessSignature garbage")}) {
    auto r = call("GET", "/devices/d1", "", std::nullopt, bad);
    EXPECT_EQ(r.status, 401) << bad;
    EXPECT_EQ(errorName(r), "IotHubUnauthorizedAccess");
    // The response never echoes the credentials.
    EXPECT_EQ(r.body.find("sig="), std::string::npos);
  }
}

TEST_F(ServiceApiTest, PoliciesGrantOnlyTheirPermissions) {
  ASSERT_EQ(call("PUT", "/devices/d1", kNodeCreateBody).status, 200);
  EXPECT_EQ(call("GET", "/devices/d1", "", std::nullopt, token("registryRead")).status, 200);
  EXPECT_EQ(call("PUT", "/devices/d2", R"({"deviceId":"d2"})", std::nullopt, token("registryRead"))
                .status,
            401);
  EXPECT_EQ(
      call("PUT", "/devices/d2", R"({"deviceId":"d2"})", std::nullopt, token("registryReadWrite"))
          .status,
      200);
  EXPECT_EQ(call("GET", "/devices/d1", "", std::nullopt, token("service")).status, 401);
  EXPECT_EQ(call("GET", "/devices/d1", "", std::nullopt, token("device")).status, 401);
  EXPECT_EQ(call("DELETE", "/devices/d1", "", std::nullopt, token("service")).status, 401);
}

TEST_F(ServiceApiTest, UnknownRoutesAndMethods) {
  auto r = call("GET", "/nothing/here");
  EXPECT_EQ(r.status, 404);
  auto m = call("PATCH", "/devices/d1", "{}");
  EXPECT_EQ(m.status, 405);
  EXPECT_NE(m.headers.find("Allow"), nullptr);
}

TEST_F(ServiceApiTest, BulkCreateUpdateDeleteReportsPerDeviceErrors) {
  ASSERT_EQ(call("PUT", "/devices/taken", R"({"deviceId":"taken"})").status, 200);
  auto r = call(
      "POST", "/devices?api-version=2021-04-12",
      R"([{"id":"b1","importMode":"create"},{"id":"b2","importMode":"create","status":"disabled"},
                    {"id":"taken","importMode":"create"}])");
  ASSERT_EQ(r.status, 200) << r.body;
  auto result = body(r).as_object();
  EXPECT_FALSE(result.at("isSuccessful").as_bool());
  ASSERT_EQ(result.at("errors").as_array().size(), 1u);
  EXPECT_EQ(result.at("errors").at(0).at("deviceId").as_string(), "taken");
  EXPECT_EQ(result.at("errors").at(0).at("errorCode").as_int64(), 409001);
  EXPECT_EQ(body(call("GET", "/devices/b2")).at("status").as_string(), "disabled");

  auto upd = call("POST", "/devices", R"([{"id":"b1","importMode":"Update","status":"disabled"},
                                          {"id":"b2","importMode":"UpdateIfMatchETag","etag":"stale"}])");
  ASSERT_EQ(upd.status, 200);
  EXPECT_EQ(body(upd).at("errors").at(0).at("errorCode").as_int64(), 412001);
  EXPECT_EQ(body(call("GET", "/devices/b1")).at("status").as_string(), "disabled");

  auto del = call("POST", "/devices",
                  R"([{"id":"b1","importMode":"delete"},{"id":"b2","importMode":"Delete"}])");
  ASSERT_EQ(del.status, 200);
  EXPECT_TRUE(body(del).at("isSuccessful").as_bool());
  EXPECT_EQ(call("GET", "/devices/b1").status, 404);
}

TEST_F(ServiceApiTest, BulkEntriesSucceedOrFailOnTheirOwnInOneRequest) {
  ASSERT_EQ(call("PUT", "/devices/u1", R"({"deviceId":"u1"})").status, 200);
  ASSERT_EQ(call("PUT", "/devices/d1", R"({"deviceId":"d1"})").status, 200);
  ASSERT_EQ(call("PUT", "/devices/d2", R"({"deviceId":"d2"})").status, 200);
  std::string u1_etag(body(call("GET", "/devices/u1")).at("etag").as_string());
  std::string d1_etag(body(call("GET", "/devices/d1")).at("etag").as_string());
  auto r = call("POST", "/devices?api-version=2021-04-12",
                R"([
      {"id":"n1","importMode":"create","status":"disabled"},
      {"id":"u1","importMode":"updateIfMatchETag","etag":")" +
                    u1_etag + R"(","status":"disabled"},
      {"id":"d1","importMode":"deleteIfMatchETag","etag":")" +
                    d1_etag + R"("},
      {"id":"d2","importMode":"deleteIfMatchETag","etag":"stale"},
      {"id":"gone","importMode":"delete"},
      {"id":"n2","deviceId":"other","importMode":"create"},
      {"id":"nobody","importMode":"update"},
      {"id":"d1x","importMode":"create"}])");
  ASSERT_EQ(r.status, 200) << r.body;
  auto result = body(r).as_object();
  EXPECT_FALSE(result.at("isSuccessful").as_bool());
  const auto& errors = result.at("errors").as_array();
  ASSERT_EQ(errors.size(), 4u) << r.body;
  // In the order of the request's entries, each with its own code and operation.
  EXPECT_EQ(errors.at(0).at("deviceId").as_string(), "d2");
  EXPECT_EQ(errors.at(0).at("errorCode").as_int64(), 412001);
  EXPECT_EQ(errors.at(0).at("operation").as_string(), "delete");
  EXPECT_EQ(errors.at(1).at("deviceId").as_string(), "gone");
  EXPECT_EQ(errors.at(1).at("errorCode").as_int64(), 404001);
  EXPECT_EQ(errors.at(2).at("deviceId").as_string(), "n2");
  EXPECT_EQ(errors.at(2).at("errorCode").as_int64(), 400004);
  EXPECT_EQ(errors.at(2).at("operation").as_string(), "create");
  EXPECT_EQ(errors.at(3).at("deviceId").as_string(), "nobody");
  EXPECT_EQ(errors.at(3).at("errorCode").as_int64(), 404001);
  EXPECT_EQ(errors.at(3).at("operation").as_string(), "update");

  EXPECT_EQ(body(call("GET", "/devices/n1")).at("status").as_string(), "disabled");
  EXPECT_EQ(call("GET", "/twins/n1").status, 200) << "a created device has its twin";
  auto u1 = body(call("GET", "/devices/u1"));
  EXPECT_EQ(u1.at("status").as_string(), "disabled");
  EXPECT_NE(u1.at("etag").as_string(), u1_etag);
  EXPECT_EQ(call("GET", "/devices/d1").status, 404);
  EXPECT_EQ(call("GET", "/devices/d2").status, 200);
  EXPECT_EQ(call("GET", "/devices/n2").status, 404);
  EXPECT_EQ(call("GET", "/devices/d1x").status, 200);
}

TEST_F(ServiceApiTest, MalformedBulkRequestsChangeNothing) {
  EXPECT_EQ(call("POST", "/devices", "{}").status, 400);
  EXPECT_EQ(call("POST", "/devices", "[]").status, 400);
  auto dup = call("POST", "/devices",
                  R"([{"id":"x","importMode":"create"},{"id":"x","importMode":"create"}])");
  EXPECT_EQ(dup.status, 400);
  EXPECT_EQ(errorName(dup), "DeviceDefinedMultipleTimes");
  auto mode = call("POST", "/devices",
                   R"([{"id":"y","importMode":"create"},{"id":"z","importMode":"explode"}])");
  EXPECT_EQ(mode.status, 400);
  EXPECT_EQ(call("GET", "/devices/y").status, 404) << "a rejected request applies nothing";
  std::string many = "[";
  for (int i = 0; i < 101; ++i)
    many += std::string(i ? "," : "") + R"({"id":"m)" + std::to_string(i) +
            R"(","importMode":"create"})";
  EXPECT_EQ(call("POST", "/devices", many + "]").status, 400);
}

TEST_F(ServiceApiTest, StatisticsCountDevicesByStatus) {
  ASSERT_EQ(call("PUT", "/devices/a", R"({"deviceId":"a"})").status, 200);
  ASSERT_EQ(call("PUT", "/devices/b", R"({"deviceId":"b","status":"disabled"})").status, 200);
  auto r = call("GET", "/statistics/devices");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(body(r).at("totalDeviceCount").as_int64(), 2);
  EXPECT_EQ(body(r).at("enabledDeviceCount").as_int64(), 1);
  EXPECT_EQ(body(r).at("disabledDeviceCount").as_int64(), 1);
}

TEST_F(ServiceApiTest, TwinsAreReadPatchedAndReplacedWithEtags) {
  ASSERT_EQ(call("PUT", "/devices/t1", R"({"deviceId":"t1"})").status, 200);
  auto got = call("GET", "/twins/t1?api-version=2021-04-12");
  ASSERT_EQ(got.status, 200) << got.body;
  auto twin = body(got).as_object();
  EXPECT_EQ(twin.at("deviceId").as_string(), "t1");
  EXPECT_EQ(twin.at("etag").as_string(), "AAAAAAAAAAE=");
  EXPECT_TRUE(twin.at("tags").as_object().empty());
  EXPECT_EQ(twin.at("properties").at("desired").at("$version").as_int64(), 1);

  auto patched =
      call("PATCH", "/twins/t1", R"({"tags":{"floor":3},"properties":{"desired":{"building":43}}})",
           "\"AAAAAAAAAAE=\"");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(body(patched).at("tags").at("floor").as_int64(), 3);
  EXPECT_EQ(body(patched).at("properties").at("desired").at("$version").as_int64(), 2);
  auto stale = call("PATCH", "/twins/t1", R"({"tags":{"floor":4}})", "\"AAAAAAAAAAE=\"");
  EXPECT_EQ(stale.status, 412);
  EXPECT_EQ(errorName(stale), "PreconditionFailed");

  auto replaced = call("PUT", "/twins/t1", R"({"tags":{"zone":"a"},"properties":{"desired":{}}})");
  ASSERT_EQ(replaced.status, 200) << replaced.body;
  EXPECT_FALSE(body(replaced).at("tags").as_object().contains("floor"));
  EXPECT_FALSE(body(replaced).at("properties").at("desired").as_object().contains("building"));

  EXPECT_EQ(call("GET", "/twins/ghost").status, 404);
  auto bad = call("PATCH", "/twins/t1", R"({"properties":{"desired":{"a.b":1}}})");
  EXPECT_EQ(bad.status, 400);
  std::string big = R"({"properties":{"desired":{"x":")" + std::string(4000, 'x') + R"(","y":")" +
                    std::string(4000, 'y') + R"(","z":")" + std::string(4000, 'z') + R"("}}})";
  for (int i = 0; i < 3; ++i) ASSERT_EQ(call("PATCH", "/twins/t1", big).status, 200);
  std::string too_big = R"({"tags":{"a":")" + std::string(4000, 'a') + R"(","b":")" +
                        std::string(4000, 'b') + R"(","c":")" + std::string(1000, 'c') + R"("}})";
  auto over = call("PATCH", "/twins/t1", too_big);
  EXPECT_EQ(over.status, 400) << "tags over 8 KB";
  EXPECT_EQ(call("GET", "/twins/t1", "", std::nullopt, token("registryRead")).status, 401)
      << "twins need ServiceConnect";
  EXPECT_EQ(call("GET", "/twins/t1", "", std::nullopt, token("service")).status, 200);
}

// Regression: arrays of nulls or empty strings counted as nothing against the twin limits.
TEST_F(ServiceApiTest, TwinArraysCountTheirJsonAgainstTheLimits) {
  ASSERT_EQ(call("PUT", "/devices/t2", R"({"deviceId":"t2"})").status, 200);
  auto repeated = [](const std::string& element, int count) {
    std::string text = "[";
    for (int i = 0; i < count; ++i) text += (i == 0 ? "" : ",") + element;
    return text + "]";
  };
  for (const std::string& text :
       {R"({"properties":{"desired":{"k":)" + repeated("null", 45000) + "}}}",
        R"({"tags":{"k":)" + repeated(R"("")", 3000) + "}}",
        R"({"tags":{"k":)" + repeated(R"("\u0001")", 1000) + "}}"}) {
    for (const char* method : {"PATCH", "PUT"}) {
      auto r = call(method, "/twins/t2", text);
      EXPECT_EQ(r.status, 400) << method << " " << text.substr(0, 40);
      EXPECT_EQ(errorName(r), "ArgumentInvalid") << method << " " << text.substr(0, 40);
    }
  }
  auto twin = body(call("GET", "/twins/t2"));
  EXPECT_EQ(twin.at("version").as_int64(), 1) << "nothing was written";
  auto fits = call("PATCH", "/twins/t2",
                   R"({"properties":{"desired":{"k":)" + repeated("null", 6000) + "}}}");
  EXPECT_EQ(fits.status, 200) << fits.body.substr(0, 200);
}

// Job operations for a jobs engine that is never started: jobs are stored, never run.
class NoDeviceOperations final : public jobs::DeviceOperations {
 public:
  void invokeMethod(methods::MethodCall, methods::MethodCallback) override {}
  Status updateTwin(std::string_view, const json::object&, const store::DeviceJobWrite&) override {
    return Status::ok();
  }
};

// Regression: a startTime of 9999-12-31 overflowed into the past (the job ran at once);
// times that cannot be represented are a 400 naming the field.
TEST_F(ServiceApiTest, JobTimesAreCheckedAndFarFutureStartTimesKept) {
  NoDeviceOperations operations;
  jobs::JobsEngine engine(
      *store_, operations, [](const query::Condition&) { return std::vector<std::string>{}; },
      clock_);
  ServiceApi api(jobDeps(engine));
  auto put = [&](const std::string& id, const std::string& fields) {
    HttpRequest r;
    r.method = "PUT";
    r.target = "/jobs/v2/" + id + "?api-version=2021-04-12";
    r.body = R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},"queryCondition":"*",)" +
             fields + "}";
    r.headers.set("Authorization", token());
    return api.handle(r);
  };
  for (std::string fields :
       {R"("startTime":"10000-01-01T00:00:00Z")", R"("startTime":"9999-12-31T00:00:00Zjunk")",
        R"("startTime":"2030-02-30T00:00:00Z")", R"("startTime":"0000-01-01T00:00:00Z")",
        R"("maxExecutionTimeInSeconds":-1)", R"("maxExecutionTimeInSeconds":1e300)",
        R"("maxExecutionTimeInSeconds":18446744073709551615)"}) {
    auto r = put("bad", fields);
    EXPECT_EQ(r.status, 400) << fields;
    EXPECT_EQ(errorName(r), "ArgumentInvalid") << fields;
    std::string field = fields.substr(1, fields.find('"', 1) - 1);
    EXPECT_NE(r.body.find(field), std::string::npos) << r.body;
  }
  auto far = put("far", R"("startTime":"9999-12-31T00:00:00Z")");
  ASSERT_EQ(far.status, 200) << far.body;
  EXPECT_EQ(body(far).at("startTime"), "9999-12-31T00:00:00Z");
  HttpRequest get;
  get.method = "GET";
  get.target = "/jobs/v2/far";
  get.headers.set("Authorization", token());
  auto got = api.handle(get);
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(body(got).at("startTime"), "9999-12-31T00:00:00Z");
  EXPECT_EQ(body(got).at("status"), "queued");
  // ?dryRun=true answers the preview and stores nothing; any other value than true or false
  // is refused.
  auto preview = put("far?dryRun=true&x", R"("startTime":null)");
  EXPECT_EQ(preview.status, 409) << "far exists: " << preview.body;
  auto fresh = put("fresh?dryRun=true&x", R"("startTime":null)");
  ASSERT_EQ(fresh.status, 200) << fresh.body;
  EXPECT_EQ(body(fresh).at("deviceCount"), 0);
  EXPECT_TRUE(body(fresh).at("sampleDeviceIds").as_array().empty());
  EXPECT_EQ(put("fresh?dryRun=yes&x", R"("startTime":null)").status, 400);
  get.target = "/jobs/v2/fresh";
  EXPECT_EQ(api.handle(get).status, 404) << "a dry run creates nothing";
  EXPECT_EQ(put("fresh?dryRun=false&x", R"("startTime":null)").status, 200);
  EXPECT_EQ(api.handle(get).status, 200);
  // A job named "query" could never be read back: PUT there is not a job's route.
  auto put_query = put("query", R"("startTime":"9999-12-31T00:00:00Z")");
  EXPECT_EQ(put_query.status, 405);
  ASSERT_NE(put_query.headers.find("Allow"), nullptr);
  EXPECT_EQ(*put_query.headers.find("Allow"), "GET");
  // Paging headers: numbers that do not fit are a 400 naming the header.
  for (const char* count : {"99999999999999999999999", "-1", "0", "1001", "1e3", "10 "}) {
    HttpRequest list;
    list.method = "GET";
    list.target = "/jobs/v2/query";
    list.headers.set("Authorization", token());
    list.headers.set("x-ms-max-item-count", count);
    auto r = api.handle(list);
    EXPECT_EQ(r.status, 400) << count;
    EXPECT_NE(r.body.find("x-ms-max-item-count"), std::string::npos) << r.body;
  }
}

// GET /jobs/v2/{id}/events: errors are ordinary JSON error responses; success is a 200
// text/event-stream whose first event is what GET /jobs/v2/{id} answers.
TEST_F(ServiceApiTest, JobEventsStreamTheJobResponseAndFailLikeGet) {
  NoDeviceOperations operations;
  jobs::JobsEngine engine(
      *store_, operations, [](const query::Condition&) { return std::vector<std::string>{}; },
      clock_);
  ASSERT_TRUE(engine.start().isOk());  // it applies the cancellation below
  ServiceApi api(jobDeps(engine));
  auto request = [&](const std::string& method, const std::string& target,
                     const std::string& policy_name = "iothubowner") {
    HttpRequest r;
    r.method = method;
    r.target = target;
    r.headers.set("Authorization", token(policy_name));
    if (method == "PUT") {
      r.body = R"({"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}},)"
               R"("queryCondition":"*","startTime":"9999-12-31T00:00:00Z"})";
    }
    return api.handle(r);
  };
  auto missing = request("GET", "/jobs/v2/nope/events?api-version=2021-04-12");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.stream, nullptr);
  EXPECT_EQ(errorName(missing), "JobNotFound");
  EXPECT_EQ(*missing.headers.find("Content-Type"), kJsonContentType);
  ASSERT_EQ(request("PUT", "/jobs/v2/later?api-version=2021-04-12").status, 200);
  EXPECT_EQ(request("GET", "/jobs/v2/later/events", "registryRead").status, 401)
      << "the permission of GET /jobs/v2/{id}";
  EXPECT_EQ(request("POST", "/jobs/v2/later/events").status, 405);
  EXPECT_EQ(routeTemplate("/jobs/v2/later/events?x=1"), "/jobs/v2/{id}/events");

  auto events = request("GET", "/jobs/v2/later/events?api-version=2021-04-12");
  ASSERT_EQ(events.status, 200) << events.body;
  EXPECT_EQ(*events.headers.find("Content-Type"), "text/event-stream");
  EXPECT_EQ(*events.headers.find("Cache-Control"), "no-cache");
  ASSERT_NE(events.stream, nullptr);
  auto first = events.stream->next(std::chrono::steady_clock::now());
  EXPECT_FALSE(first.done) << "a job waiting for its start time is not terminal";
  auto got = request("GET", "/jobs/v2/later");
  EXPECT_EQ(first.data, "event: job\ndata: " + got.body + "\n\n");
  // Cancelled: the next event carries it and ends the stream.
  ASSERT_EQ(request("POST", "/jobs/v2/later/cancel").status, 200);
  auto last = events.stream->next(std::chrono::steady_clock::now() + std::chrono::seconds(1));
  EXPECT_TRUE(last.done);
  EXPECT_EQ(last.data, "event: job\ndata: " + request("GET", "/jobs/v2/later").body + "\n\n");
  EXPECT_NE(last.data.find(R"("status":"cancelled")"), std::string::npos) << last.data;
  engine.stop();
}

TEST_F(ServiceApiTest, MethodRequestsAreValidated) {
  ASSERT_EQ(call("PUT", "/devices/m1", R"({"deviceId":"m1"})").status, 200);
  struct Case {
    std::string body;
    int status;
    std::string code;
  } cases[] = {
      {R"({"payload":1})", 400, "ArgumentInvalid"},
      {R"({"methodName":"bad/name"})", 400, "ArgumentInvalid"},
      {R"({"methodName":"ok","responseTimeoutInSeconds":4})", 400, "ArgumentInvalid"},
      {R"({"methodName":"ok","responseTimeoutInSeconds":301})", 400, "ArgumentInvalid"},
      {R"({"methodName":"ok","responseTimeoutInSeconds":"30"})", 400, "ArgumentInvalid"},
      {R"({"methodName":"ok","connectTimeoutInSeconds":-1})", 400, "ArgumentInvalid"},
      {R"({"methodName":"ok","payload":")" + std::string(130 * 1024, 'p') + R"("})", 413,
       "MessageTooLarge"},
      {"[1]", 400, "IotHubFormatError"},
  };
  for (const auto& c : cases) {
    auto r = call("POST", "/twins/m1/methods", c.body);
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 80);
    EXPECT_EQ(errorName(r), c.code) << c.body.substr(0, 80);
  }
  auto unknown = call("POST", "/twins/ghost/methods", R"({"methodName":"lockDoor"})");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(errorName(unknown), "DeviceNotFound");
  // An offline device: shape-2 body with the nested 404103.
  auto offline = call("POST", "/twins/m1/methods", R"({"methodName":"lockDoor","payload":null})");
  EXPECT_EQ(offline.status, 404);
  EXPECT_EQ(*offline.headers.find("iothub-errorcode"), "DeviceNotOnline");
  auto inner = json::parse(std::string(body(offline).at("Message").as_string()));
  EXPECT_EQ(inner.at("errorCode").as_int64(), 404103);
}

// Answers every call at once with 200 and the payload it was given, recording the devices.
class EchoDispatcher final : public methods::MethodDispatcher {
 public:
  void invoke(methods::MethodCall call, methods::MethodCallback done) override {
    devices.push_back(call.device_id);
    done(methods::MethodResult{200, call.payload_json});
  }
  std::vector<std::string> devices;
};

TEST_F(ServiceApiTest, ADirectMethodToADeviceHeldHereIsServedInlineWithoutTheStore) {
  EchoDispatcher echo;
  // "held" is not in the registry at all: served inline, nothing reads the store for it.
  ServiceApi api(ServiceApiDeps{.authenticator = authenticator_.get(),
                                .registry = registry_.get(),
                                .connections = &connections_,
                                .twins = twins_.get(),
                                .methods = &echo,
                                .random = &random_,
                                .clock = &clock_,
                                .service_statistics = nullptr,
                                .cluster_nodes = nullptr,
                                .console = nullptr,
                                .held_here = [](std::string_view id) { return id == "held"; }});
  auto request = [&](std::string method, std::string target, std::string body,
                     std::optional<std::string> authorization = std::nullopt) {
    HttpRequest r;
    r.method = std::move(method);
    r.target = std::move(target);
    r.body = std::move(body);
    r.headers.set("Authorization", authorization.value_or(token()));
    return r;
  };
  std::vector<HttpResponse> answers;
  auto respond = [&answers](HttpResponse r) { answers.push_back(std::move(r)); };

  auto call = request("POST", "/twins/held/methods?api-version=2021-04-12",
                      R"({"methodName":"lockDoor","payload":{"lockTime":"10m"}})");
  ASSERT_TRUE(api.handleInline(call, respond));
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].status, 200);
  EXPECT_EQ(body(answers[0]), json::parse(R"({"status":200,"payload":{"lockTime":"10m"}})"));
  EXPECT_EQ(echo.devices, std::vector<std::string>{"held"});

  // Refusals of a held device's call are answered inline too, shaped as ever.
  ASSERT_TRUE(
      api.handleInline(request("POST", "/twins/held/methods", R"({"payload":1})"), respond));
  ASSERT_TRUE(api.handleInline(
      request("POST", "/twins/held/methods", R"({"methodName":"x"})", token("registryRead")),
      respond));
  ASSERT_EQ(answers.size(), 3u);
  EXPECT_EQ(answers[1].status, 400);
  EXPECT_EQ(errorName(answers[1]), "ArgumentInvalid");
  EXPECT_EQ(answers[2].status, 401);

  // Everything else is left to handleAsync, untouched: a device not held here (whose
  // existence only the store can tell), other routes, other methods on the route.
  const HttpRequest declined[] = {
      request("POST", "/twins/ghost/methods", R"({"methodName":"lockDoor"})"),
      request("GET", "/twins/held", ""),
      request("GET", "/twins/held/methods", ""),
      request("POST", "/devices/query", R"({"query":"SELECT * FROM devices"})"),
      request("POST", "/twins/held/methods/extra", R"({"methodName":"lockDoor"})"),
      request("POST", "%zz", ""),
  };
  for (const auto& r : declined) EXPECT_FALSE(api.handleInline(r, respond)) << r.target;
  EXPECT_EQ(answers.size(), 3u);
  EXPECT_EQ(echo.devices.size(), 1u);
  // Through handleAsync the same unregistered device is DeviceNotFound: the store decides.
  auto ghost = api.handle(request("POST", "/twins/held2/methods", R"({"methodName":"lockDoor"})"));
  EXPECT_EQ(errorName(ghost), "DeviceNotFound");

  // Without held_here nothing is served inline.
  EXPECT_FALSE(api_->handleInline(call, respond));
  EXPECT_EQ(answers.size(), 3u);
}

TEST_F(ServiceApiTest, ServiceStatisticsNeedServiceConnect) {
  auto r = call("GET", "/statistics/service", "", std::nullopt, token("service"));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(body(r).at("connectedDeviceCount").as_int64(), 3);
  EXPECT_EQ(call("GET", "/statistics/service", "", std::nullopt, token("registryRead")).status,
            401);
}

TEST_F(ServiceApiTest, ClusterNodesNeedServiceConnect) {
  auto r = call("GET", "/cluster/nodes", "", std::nullopt, token("service"));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(body(r).at("nodeId"), "n1");
  EXPECT_EQ(body(r).at("nodes").as_array().size(), 1u);
  EXPECT_EQ(call("GET", "/cluster/nodes", "", std::nullopt, token("registryRead")).status, 401);
  EXPECT_EQ(call("POST", "/cluster/nodes", "{}", std::nullopt, token("service")).status, 405);
}

TEST_F(ServiceApiTest, TheConsoleIsServedWithoutAuthenticationForGetAndHeadOnly) {
  HttpRequest get;
  get.method = "GET";
  get.target = "/ui/js/app.js";
  auto r = api_->handle(get);  // no Authorization header at all
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "console GET /ui/js/app.js");
  get.method = "HEAD";
  get.target = "/ui";
  EXPECT_EQ(api_->handle(get).body, "console HEAD /ui");
  get.method = "POST";
  auto post = api_->handle(get);
  EXPECT_EQ(post.status, 405);
  ASSERT_NE(post.headers.find("Allow"), nullptr);
  EXPECT_EQ(*post.headers.find("Allow"), "GET, HEAD");
  // The API's own routes still need a token; a path beside /ui is not the console's.
  get.method = "GET";
  get.target = "/statistics/devices";
  EXPECT_EQ(api_->handle(get).status, 401);
  get.target = "/uix";
  EXPECT_EQ(api_->handle(get).status, 404);
}

TEST_F(ServiceApiTest, ARouteMatchedForAnotherMethodAnswers405WithItsMethods) {
  auto patch = call("PATCH", "/devices/d1", "{}", std::nullopt, token("service"));
  EXPECT_EQ(patch.status, 405);
  ASSERT_NE(patch.headers.find("Allow"), nullptr);
  EXPECT_EQ(*patch.headers.find("Allow"), "GET, PUT, DELETE");
}

// --- consumer groups (docs/telemetry.md §9) ---

constexpr const char* kGroups = "/eventHubEndpoint/consumerGroups";

std::string groupPath(const std::string& name) {
  return std::string(kGroups) + "/" + name + "?api-version=2021-04-12";
}

TEST_F(ServiceApiTest, ConsumerGroupsAreListedCreatedReadAndDeleted) {
  auto listed = call("GET", std::string(kGroups) + "?api-version=2021-04-12");
  ASSERT_EQ(listed.status, 200) << listed.body;
  const json::value first_list = body(listed);
  ASSERT_EQ(first_list.as_array().size(), 1u);
  const json::object& default_group = first_list.as_array().front().as_object();
  EXPECT_EQ(default_group.at("name"), "$Default");
  EXPECT_TRUE(parseTimestamp(default_group.at("createdTime").as_string()).has_value())
      << default_group;

  auto created = call("PUT", groupPath("Readers"));
  ASSERT_EQ(created.status, 200) << created.body;
  EXPECT_EQ(body(created), json::parse(R"({"name":"Readers","createdTime":")" +
                                       formatTimestamp(clock_.now()) + R"("})"));

  // Idempotent in any case: the existing group as it was created.
  clock_.advance(std::chrono::minutes(5));
  auto again = call("PUT", groupPath("readers"));
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(body(again), body(created));
  auto got = call("GET", groupPath("READERS"));
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(body(got), body(created));
  auto sdk_default = call("GET", groupPath("%24default"));  // the SDKs' spelling, encoded
  ASSERT_EQ(sdk_default.status, 200) << sdk_default.body;
  EXPECT_EQ(body(sdk_default).at("name"), "$Default");

  ASSERT_EQ(call("PUT", groupPath("alpha")).status, 200);
  listed = call("GET", kGroups);
  ASSERT_EQ(listed.status, 200);
  const json::value second_list = body(listed);
  std::vector<std::string> names;
  for (const auto& group : second_list.as_array()) {
    names.emplace_back(group.at("name").as_string());
  }
  EXPECT_EQ(names, (std::vector<std::string>{"$Default", "alpha", "Readers"}));

  auto deleted = call("DELETE", groupPath("rEaDeRs"));
  EXPECT_EQ(deleted.status, 204);
  EXPECT_TRUE(deleted.body.empty());
  auto missing = call("GET", groupPath("Readers"));
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(errorName(missing), "ConsumerGroupNotFound");
  auto missing_delete = call("DELETE", groupPath("Readers"));
  EXPECT_EQ(missing_delete.status, 404);
  EXPECT_EQ(errorName(missing_delete), "ConsumerGroupNotFound");
}

TEST_F(ServiceApiTest, DefaultConsumerGroupCannotBeDeleted) {
  for (const char* name : {"$Default", "%24default", "$DEFAULT"}) {
    auto r = call("DELETE", groupPath(name));
    EXPECT_EQ(r.status, 400) << name;
    EXPECT_EQ(errorName(r), "ArgumentInvalid");
    EXPECT_NE(r.body.find("$Default cannot be deleted"), std::string::npos) << r.body;
  }
  EXPECT_EQ(call("GET", groupPath("$Default")).status, 200);
}

TEST_F(ServiceApiTest, ConsumerGroupNamesFollowTheEventHubsRule) {
  for (const std::string& name :
       {std::string("-readers"), std::string("readers."), std::string(51, 'a'),
        std::string("a%20b"), std::string("%24other"), std::string("caf%C3%A9"),
        std::string("a%2Fb")}) {
    auto r = call("PUT", groupPath(name));
    EXPECT_EQ(r.status, 400) << name;
    EXPECT_EQ(errorName(r), "ArgumentInvalid") << name;
  }
  EXPECT_EQ(call("PUT", groupPath(std::string(50, 'a'))).status, 200);
  EXPECT_EQ(body(call("GET", kGroups)).as_array().size(), 2u);
}

TEST_F(ServiceApiTest, ConsumerGroupsStopAtTheQuota) {
  // $Default and 99 more.
  for (int i = 1; i < 100; ++i) {
    auto r = call("PUT", groupPath("group-" + std::to_string(i)));
    ASSERT_EQ(r.status, 200) << i << ": " << r.body;
  }
  auto full = call("PUT", groupPath("one-too-many"));
  EXPECT_EQ(full.status, 403) << full.body;
  EXPECT_EQ(errorName(full), "IotHubQuotaExceeded");
  EXPECT_EQ(call("PUT", groupPath("GROUP-7")).status, 200) << "an existing group, even when full";
  EXPECT_EQ(body(call("GET", kGroups)).as_array().size(), 100u);
  ASSERT_EQ(call("DELETE", groupPath("group-1")).status, 204);
  EXPECT_EQ(call("PUT", groupPath("one-too-many")).status, 200);
}

TEST_F(ServiceApiTest, ConsumerGroupReadsNeedRegistryReadOrServiceConnectAndWritesRegistryWrite) {
  for (const char* reader : {"registryRead", "service", "registryReadWrite", "iothubowner"}) {
    EXPECT_EQ(call("GET", kGroups, "", std::nullopt, token(reader)).status, 200) << reader;
    EXPECT_EQ(call("GET", groupPath("$Default"), "", std::nullopt, token(reader)).status, 200)
        << reader;
  }
  EXPECT_EQ(call("GET", kGroups, "", std::nullopt, token("device")).status, 401);
  for (const char* refused : {"registryRead", "service", "device"}) {
    auto put = call("PUT", groupPath("g"), "", std::nullopt, token(refused));
    EXPECT_EQ(put.status, 401) << refused;
    EXPECT_EQ(errorName(put), "IotHubUnauthorizedAccess");
  }
  EXPECT_EQ(call("PUT", groupPath("g"), "", std::nullopt, token("registryReadWrite")).status, 200);
  EXPECT_EQ(call("DELETE", groupPath("g"), "", std::nullopt, token("service")).status, 401);
  EXPECT_EQ(call("DELETE", groupPath("g"), "", std::nullopt, token("registryReadWrite")).status,
            204);
  EXPECT_EQ(call("POST", groupPath("g")).status, 405);
}

TEST(RouteTemplateTest, NamesEachRouteWithoutItsIdentifiers) {
  EXPECT_EQ(routeTemplate("/devices?api-version=2021-04-12"), "/devices");
  EXPECT_EQ(routeTemplate("/devices/d%201?api-version=2021-04-12"), "/devices/{id}");
  EXPECT_EQ(routeTemplate("/devices/query?api-version=2021-04-12"), "/devices/query");
  EXPECT_EQ(routeTemplate("/twins/door-1"), "/twins/{id}");
  EXPECT_EQ(routeTemplate("/twins/door-1/methods?api-version=2021-04-12"), "/twins/{id}/methods");
  EXPECT_EQ(routeTemplate("/jobs/v2/job-7"), "/jobs/v2/{id}");
  EXPECT_EQ(routeTemplate("/jobs/v2/job-7/cancel"), "/jobs/v2/{id}/cancel");
  EXPECT_EQ(routeTemplate("/jobs/v2/query?jobType=x"), "/jobs/v2/query");
  EXPECT_EQ(routeTemplate("/statistics/service"), "/statistics/service");
  EXPECT_EQ(routeTemplate("/statistics/devices"), "/statistics/devices");
  EXPECT_EQ(routeTemplate("/cluster/nodes"), "/cluster/nodes");
  EXPECT_EQ(routeTemplate("/eventHubEndpoint/consumerGroups"), "/eventHubEndpoint/consumerGroups");
  EXPECT_EQ(routeTemplate("/eventHubEndpoint/consumerGroups/%24Default?api-version=2021-04-12"),
            "/eventHubEndpoint/consumerGroups/{name}");
  EXPECT_EQ(routeTemplate("/ui/css/app.css"), "/ui/{path*}");
  // Anything else, however many distinct paths clients send, is one label.
  EXPECT_EQ(routeTemplate("/"), "other");
  EXPECT_EQ(routeTemplate("/twins/a/b/c"), "other");
  EXPECT_EQ(routeTemplate("/%ff"), "other");
  EXPECT_EQ(routeTemplate("not a path"), "other");
}

TEST(NormalizeEtagTest, StripsQuotesAndWeakPrefix) {
  EXPECT_EQ(normalizeEtag("\"*\""), "*");
  EXPECT_EQ(normalizeEtag("W/\"abc\""), "abc");
  EXPECT_EQ(normalizeEtag("abc"), "abc");
}

}  // namespace
}  // namespace iothub::service_api
