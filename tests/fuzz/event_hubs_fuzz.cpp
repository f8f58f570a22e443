// Fuzz target for what the Event Hubs-compatible endpoint parses from its clients
// (src/server/event_hubs.*, docs/event-hubs.md): the selector filter that names a receiver's
// start position, the partition receiver's address, and the audience of an `sb://` put-token.
//
// The first byte picks the parser (its distance from '0', modulo 3, so that seeds are text),
// the rest is its input:
//   0  a selector expression for parseSelector
//   1  a link address for parsePartitionAddress / isEventHubsAddress (entity "myhub")
//   2  an audience for HubTokenAuthenticator::verify, with a token that is never valid
//
// Properties checked on any input, besides "never crashes, hangs or leaks":
//   - a selector that parses starts at a sequence >= 0, and its canonical form parses to the
//     same start; errors are ArgumentInvalid and name the expression's problem;
//   - an address that parses is served by the endpoint, names a non-empty group without '/'
//     and a partition >= 0, and renders back to an address that parses the same;
//   - no audience gets a claim from a token without a valid signature (401 or 404 only).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "server/amqp_service.hpp"
#include "server/event_hubs.hpp"

namespace {

using namespace iothub;
using namespace iothub::server;

void require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "event_hubs_fuzz: property violated: %s\n", what);
    std::abort();
  }
}

void fuzzSelector(std::string_view input) {
  auto start = parseSelector(input);
  if (!start) {
    require(start.code() == ErrorCode::ArgumentInvalid, "selector errors are ArgumentInvalid");
    require(start.status().message().starts_with("invalid start position"),
            "selector errors say what they are");
    return;
  }
  switch (start->kind) {
    case StartPosition::Kind::Sequence: {
      require(start->sequence >= 0, "a start sequence is never negative");
      auto again = parseSelector("amqp.annotation.x-opt-sequence-number >= '" +
                                 std::to_string(start->sequence) + "'");
      require(again.isOk() && again->kind == StartPosition::Kind::Sequence &&
                  again->sequence == start->sequence,
              "a sequence start renders back");
      break;
    }
    case StartPosition::Kind::Latest:
      break;
    case StartPosition::Kind::EnqueuedAfter: {
      auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(start->time.time_since_epoch())
              .count();
      auto again =
          parseSelector("amqp.annotation.x-opt-enqueued-time > '" + std::to_string(ms) + "'");
      require(again.isOk() && again->time == start->time, "a time start renders back");
      break;
    }
  }
}

void fuzzAddress(std::string_view input) {
  auto where = parsePartitionAddress("myhub", input);
  if (!where) return;
  require(isEventHubsAddress("myhub", input), "a partition address is served");
  require(!where->consumer_group.empty() && where->consumer_group.find('/') == std::string::npos,
          "a group is one non-empty segment");
  require(where->partition >= 0, "a partition is never negative");
  std::string rendered = "myhub/ConsumerGroups/" + where->consumer_group + "/Partitions/" +
                         std::to_string(where->partition);
  auto again = parsePartitionAddress("myhub", rendered);
  require(again.has_value() && again->consumer_group == where->consumer_group &&
              again->partition == where->partition,
          "an address renders back");
}

struct Authentication {
  FakeClock clock{SystemTime{std::chrono::seconds{1700000000}}};
  std::vector<store::AccessPolicyRecord> policies{
      {"service", "c2VydmljZWtleXNlcnZpY2VrZXlzZXJ2aWNla2V5cw==",
       "b3RoZXJrZXlvdGhlcmtleW90aGVya2V5b3RoZXJrZXk=", store::kServiceConnect}};
  auth::ServiceAuthenticator service{"myhub.azure-devices.net", policies, clock};
  HubTokenAuthenticator authenticator{"myhub.azure-devices.net", service, clock, policies, "myhub"};
};

void fuzzAudience(std::string_view input) {
  static Authentication a;
  std::string token =
      "SharedAccessSignature sr=" + std::string(input.substr(0, 256)) +
      "&sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D&se=1800000000&skn=service";
  auto verdict = a.authenticator.verify(token, input, "servicebus.windows.net:sastoken");
  require(verdict.status_code == 401 || verdict.status_code == 404,
          "a forged token never gets a claim");
  require(!verdict.claim.has_value(), "no claim without 200");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (static_cast<unsigned char>(data[0] - '0') % 3) {
    case 0:
      fuzzSelector(input);
      break;
    case 1:
      fuzzAddress(input);
      break;
    default:
      fuzzAudience(input);
      break;
  }
  return 0;
}
