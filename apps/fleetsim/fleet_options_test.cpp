#include "apps/fleetsim/fleet_options.hpp"

#include <gtest/gtest.h>

#include "common/json.hpp"

namespace iothub::fleetsim {
namespace {

FleetOptions hubOptions() {
  FleetOptions o;
  o.mqtt_port = 1883;
  o.http_port = 8080;
  o.device_key = "a2V5";
  o.service_connection_string =
      "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5";
  return o;
}

TEST(FleetOptionsTest, ParsesDurations) {
  EXPECT_EQ(*parseDuration("250ms"), std::chrono::milliseconds(250));
  EXPECT_EQ(*parseDuration("3s"), std::chrono::seconds(3));
  EXPECT_EQ(*parseDuration("7"), std::chrono::seconds(7));
  EXPECT_EQ(*parseDuration("2m"), std::chrono::minutes(2));
  EXPECT_EQ(*parseDuration("1h"), std::chrono::hours(1));
  EXPECT_FALSE(parseDuration(""));
  EXPECT_FALSE(parseDuration("ms"));
  EXPECT_FALSE(parseDuration("5d"));
  EXPECT_FALSE(parseDuration("-1s"));
}

TEST(FleetOptionsTest, FormatsDeviceIdsThatSortLikeIndices) {
  EXPECT_EQ(deviceId("fleet-", 42), "fleet-000042");
  EXPECT_EQ(deviceId("d", 1'234'567), "d1234567");
  EXPECT_LT(deviceId("f", 9), deviceId("f", 10));
}

TEST(FleetOptionsTest, ParsesTargetsAndScenarios) {
  EXPECT_EQ(*parseTarget("mosquitto"), Target::Mosquitto);
  EXPECT_FALSE(parseTarget("emqx"));
  for (auto s : {Scenario::Connect, Scenario::Idle, Scenario::Methods, Scenario::Twin,
                 Scenario::Jobs, Scenario::Serve, Scenario::TwinJobs, Scenario::MethodJobs,
                 Scenario::C2d, Scenario::Telemetry, Scenario::Sweep}) {
    EXPECT_EQ(*parseScenario(toString(s)), s);
  }
  EXPECT_FALSE(parseScenario("storm"));
}

TEST(FleetOptionsTest, TelemetryNeedsADurationAndANonNegativeRate) {
  EXPECT_EQ(*parseScenario("telemetry"), Scenario::Telemetry);
  auto o = hubOptions();
  o.scenario = Scenario::Telemetry;
  o.rate = 20'000;
  EXPECT_TRUE(validate(o));
  o.rate = 0;  // unthrottled: one message in flight per device
  EXPECT_TRUE(validate(o));
  o.rate = -1;
  EXPECT_FALSE(validate(o));
  o.rate = 100;
  o.duration = std::chrono::milliseconds(0);
  EXPECT_FALSE(validate(o));
  o.duration = std::chrono::seconds(5);
  o.target = Target::Mosquitto;  // the same topic on the broker
  o.device_key.clear();
  EXPECT_TRUE(validate(o));
}

TEST(FleetOptionsTest, C2dNeedsAMessageCountAndRunsAgainstEitherTarget) {
  EXPECT_EQ(*parseScenario("c2d"), Scenario::C2d);
  auto o = hubOptions();
  o.scenario = Scenario::C2d;
  EXPECT_FALSE(validate(o));  // --messages missing
  o.messages = 20'000;
  EXPECT_TRUE(validate(o));
  o.http_port = 0;  // the devices only receive: no REST
  o.service_connection_string.clear();
  EXPECT_TRUE(validate(o));
  o.messages = kMaxC2dMessages + 1;
  EXPECT_FALSE(validate(o));
  o.messages = 1;
  o.device_key.clear();
  EXPECT_FALSE(validate(o));  // the hub target still needs the devices' key
  o.target = Target::Mosquitto;
  EXPECT_TRUE(validate(o));
}

TEST(FleetOptionsTest, C2dPayloadsRoundTrip) {
  std::uint64_t seq = 0;
  std::int64_t sent = 0;
  EXPECT_EQ(c2dPayload(42, 1'234'567'890'123), "c2d 42 1234567890123");
  ASSERT_TRUE(parseC2dPayload(c2dPayload(19'999, 987'654'321), seq, sent));
  EXPECT_EQ(seq, 19'999u);
  EXPECT_EQ(sent, 987'654'321);
  for (std::string_view bad : {"", "c2d", "c2d ", "c2d 1", "c2d 1 ", "c2d x 2", "c2d 1 2 ",
                               "c2d 1 -2", "C2D 1 2", "c2d 1  2", "c2d 1 2x"}) {
    EXPECT_FALSE(parseC2dPayload(bad, seq, sent)) << bad;
  }
}

TEST(FleetOptionsTest, ValidatesRangesAndCombinations) {
  EXPECT_TRUE(validate(hubOptions()));
  auto o = hubOptions();
  o.devices = 19'991;
  EXPECT_FALSE(validate(o));
  o = hubOptions();
  o.device_key.clear();
  EXPECT_FALSE(validate(o));
  o = hubOptions();
  o.method_failure_rate = 1.5;
  EXPECT_FALSE(validate(o));
  o = hubOptions();
  o.scenario = Scenario::Methods;
  o.http_port = 0;
  EXPECT_FALSE(validate(o));
  o = hubOptions();
  o.scenario = Scenario::Twin;
  o.concurrency = o.devices + 1;
  EXPECT_FALSE(validate(o));
  o = hubOptions();
  o.target = Target::Mosquitto;
  o.device_key.clear();
  o.scenario = Scenario::Methods;
  o.concurrency = 500;  // requesters are extra connections: more than devices is fine
  EXPECT_TRUE(validate(o));
  o.scenario = Scenario::Twin;
  EXPECT_FALSE(validate(o));
  o = hubOptions();
  o.tls = true;
  EXPECT_FALSE(validate(o));
}

// B5's peer: one request/reply per device through Mosquitto, the calls in flight shared by
// --requesters connections, all within one process's descriptors.
TEST(FleetOptionsTest, SweepRunsAgainstMosquittoWithinTheDescriptorLimit) {
  EXPECT_EQ(*parseScenario("sweep"), Scenario::Sweep);
  auto o = hubOptions();
  o.scenario = Scenario::Sweep;
  EXPECT_FALSE(validate(o));  // the hub has method jobs; the sweep is the broker's peer
  o.target = Target::Mosquitto;
  o.device_key.clear();
  o.devices = 19'000;
  o.concurrency = 1'000;
  EXPECT_EQ(requesterConnections(o), 1'000u);  // one per call in flight by default
  EXPECT_FALSE(validate(o));                   // 20 000 sockets
  o.requesters = 10;
  EXPECT_EQ(requesterConnections(o), 10u);
  EXPECT_TRUE(validate(o));
  o.requesters = 5'000;  // never more than the calls in flight
  EXPECT_EQ(requesterConnections(o), 1'000u);
  o.requesters = 2;
  o.threads = 4;  // every io_context thread needs one
  EXPECT_FALSE(validate(o));
  o.threads = 2;
  EXPECT_TRUE(validate(o));
  o.scenario = Scenario::Methods;  // B3's relay shares them the same way
  EXPECT_EQ(requesterConnections(o), 2u);
  o.scenario = Scenario::Idle;  // no service side
  EXPECT_EQ(requesterConnections(o), 0u);
  o.target = Target::Hub;
  o.scenario = Scenario::Methods;  // REST clients, not broker connections
  EXPECT_EQ(requesterConnections(o), 0u);
}

// One fleet spread over several processes (a cluster benchmark: device i on node i mod 3).
TEST(FleetOptionsTest, SplitsAFleetOverProcesses) {
  auto o = hubOptions();
  o.first_device = 1;
  o.device_stride = 3;
  o.devices = 4;  // devices 1, 4, 7, 10
  EXPECT_EQ(deviceIndex(o, 0), 1u);
  EXPECT_EQ(deviceIndex(o, 3), 10u);
  std::size_t local = 99;
  EXPECT_TRUE(ownDevice(o, 7, local));
  EXPECT_EQ(local, 2u);
  EXPECT_FALSE(ownDevice(o, 0, local));
  EXPECT_FALSE(ownDevice(o, 6, local));
  EXPECT_FALSE(ownDevice(o, 13, local));  // the fifth, but it connects four
  AddressedDevices own = addressedDevices(o);
  EXPECT_EQ(own.first, 1u);
  EXPECT_EQ(own.stride, 3u);
  EXPECT_EQ(own.count, 4u);
  EXPECT_TRUE(validate(o));
  o.fleet_devices = 11;
  EXPECT_TRUE(validate(o));
  AddressedDevices all = addressedDevices(o);
  EXPECT_EQ(all.first, 0u);
  EXPECT_EQ(all.stride, 1u);
  EXPECT_EQ(all.count, 11u);
  o.fleet_devices = 10;  // does not include device 10
  EXPECT_FALSE(validate(o));
  o.fleet_devices = 11;
  o.registered = 10;
  EXPECT_FALSE(validate(o));
  o.registered = 0;
  o.device_stride = 0;
  EXPECT_FALSE(validate(o));
  // The jobs scenario addresses devices 0..N-1, so a slice needs the fleet's size.
  o = hubOptions();
  o.scenario = Scenario::Jobs;
  o.first_device = 1;
  o.device_stride = 3;
  EXPECT_FALSE(validate(o));
  o.fleet_devices = 3 * o.devices;
  EXPECT_TRUE(validate(o));
}

TEST(FleetOptionsTest, ParsesMethodTopicsOfHubAndBroker) {
  std::string_view name;
  std::string_view rid;
  ASSERT_TRUE(parseMethodTopic("$iothub/methods/POST/lockDoor/?$rid=42", name, rid));
  EXPECT_EQ(name, "lockDoor");
  EXPECT_EQ(rid, "42");
  ASSERT_TRUE(parseMethodTopic("fleet/fleet-000001/methods/POST/reboot/?x=1&$rid=3.17", name, rid));
  EXPECT_EQ(name, "reboot");
  EXPECT_EQ(rid, "3.17");
  EXPECT_FALSE(parseMethodTopic("$iothub/methods/POST/lockDoor/?$rid=", name, rid));
  EXPECT_FALSE(parseMethodTopic("$iothub/methods/POST//?$rid=1", name, rid));
  EXPECT_FALSE(parseMethodTopic("$iothub/twin/res/200/?$rid=1", name, rid));
}

TEST(FleetOptionsTest, ParsesVersionParameter) {
  EXPECT_EQ(parseVersionParameter("$iothub/twin/PATCH/properties/desired/?$version=15"), 15);
  EXPECT_EQ(parseVersionParameter("$iothub/twin/PATCH/properties/desired/"), -1);
  EXPECT_EQ(parseVersionParameter("x/?$version=abc"), -1);
}

TEST(FleetOptionsTest, ParsesTwinResponseStatus) {
  EXPECT_EQ(parseTwinResponseStatus("$iothub/twin/res/204/?$rid=7&$version=3"), 204);
  EXPECT_EQ(parseTwinResponseStatus("fleet/fleet-000001/twin/res/400/?$rid=1"), 400);
  EXPECT_EQ(parseTwinResponseStatus("$iothub/twin/res/20x/?$rid=1"), -1);
  EXPECT_EQ(parseTwinResponseStatus("$iothub/twin/res/"), -1);
  EXPECT_EQ(parseTwinResponseStatus("$iothub/methods/POST/m/?$rid=1"), -1);
}

// A device with --report-desired reports back exactly what it was told, without "$version".
TEST(FleetOptionsTest, ReportsTheDesiredValuesWithoutDollarMembers) {
  auto reported = reportedFromDesired(
      R"({"jobRound":2,"config":{"rate":1.5,"on":true},"gone":null,"$version":17})");
  ASSERT_TRUE(reported) << reported.status().message();
  EXPECT_EQ(*parseJson(*reported),
            *parseJson(R"({"jobRound":2,"config":{"rate":1.5,"on":true},"gone":null})"));
  EXPECT_EQ(*reportedFromDesired(R"({"$version":3})"), "{}");
  EXPECT_FALSE(reportedFromDesired("[1,2]"));
  EXPECT_FALSE(reportedFromDesired("{"));
}

TEST(FleetOptionsTest, ParsesFlakyGroups) {
  EXPECT_EQ(*parseFlakyGroup("0.05:2"), (FlakyGroup{0.05, 2, FlakyMode::Silent}));
  EXPECT_EQ(*parseFlakyGroup("0.01:always"), (FlakyGroup{0.01, kAlwaysFails, FlakyMode::Silent}));
  EXPECT_EQ(*parseFlakyGroup("1:1:error"), (FlakyGroup{1.0, 1, FlakyMode::Error}));
  EXPECT_EQ(*parseFlakyGroup("0.5:3:silent"), (FlakyGroup{0.5, 3, FlakyMode::Silent}));
  for (const char* bad : {"", "0.05", "0:2", "1.5:2", "x:2", "0.1:", "0.1:0", "0.1:-1",
                          "0.1:2:loud", "0.1:2x", "0.1:4294967295"}) {
    EXPECT_FALSE(parseFlakyGroup(bad)) << bad;
  }
  auto o = hubOptions();
  o.flaky = {{0.7, 1}, {0.4, 2}};
  EXPECT_FALSE(validate(o));
  o.flaky = {{0.6, 1}, {0.4, 2}};
  EXPECT_TRUE(validate(o));
}

// Groups take consecutive slices of the hash range, so their sizes follow the fractions
// and a device's group depends on nothing but its index.
TEST(FleetOptionsTest, PicksFlakyDevicesByAStableHash) {
  const std::vector<FlakyGroup> groups = {{0.05, 2}, {0.01, kAlwaysFails}};
  std::size_t counts[3] = {0, 0, 0};
  for (std::size_t i = 0; i < 100'000; ++i) {
    const int g = flakyGroupOf(groups, i);
    ASSERT_GE(g, -1);
    ASSERT_LE(g, 1);
    ++counts[g + 1];
    EXPECT_EQ(g, flakyGroupOf(groups, i));
    const double u = unitHash(i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
  EXPECT_NEAR(static_cast<double>(counts[1]), 5'000, 300);
  EXPECT_NEAR(static_cast<double>(counts[2]), 1'000, 150);
  EXPECT_EQ(flakyGroupOf({}, 3), -1);
  EXPECT_EQ(flakyGroupOf({{1.0, 1}}, 3), 0);
}

TEST(FleetOptionsTest, ExpectsMethodJobOutcomesFromTheRetryPolicy) {
  const FlakyGroup twice{0.05, 2};
  const FlakyGroup always{0.01, kAlwaysFails};
  auto check = [](ExpectedOutcome e, bool succeeded, std::uint32_t attempts) {
    EXPECT_EQ(e.succeeded, succeeded);
    EXPECT_EQ(e.attempts, attempts);
  };
  check(expectedOutcome(nullptr, 3, true, true), true, 1);
  check(expectedOutcome(&twice, 3, true, true), true, 3);    // fails 2, the third answers
  check(expectedOutcome(&twice, 2, true, true), false, 2);   // out of attempts
  check(expectedOutcome(&twice, 3, false, true), false, 1);  // its error is not retried
  check(expectedOutcome(&twice, 1, true, true), false, 1);   // no retry
  check(expectedOutcome(&always, 3, true, true), false, 3);
  check(expectedOutcome(&always, 3, true, false), true, 1);  // a 500 that does not fail
}

}  // namespace
}  // namespace iothub::fleetsim
