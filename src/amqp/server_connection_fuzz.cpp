// Fuzz target for the AMQP connection core (src/amqp). The input is what a client sends; the
// seed corpus (src/amqp/fuzz_corpus) holds the byte streams of real Proton clients: SASL or
// plain header, $cbs put-tokens, C2D and partition attaches, transfers, Close. Properties:
//   1. ServerConnection never crashes or reads out of bounds, whole or in small chunks.
//   2. After the input ends (receiveClosed) and its output is drained, it is finished():
//      a transport shell can always close the socket.
//   3. The handler sees each accepted link end exactly once (attaches == detaches).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <span>

#include "amqp/server_connection.hpp"

namespace {

using namespace iothub::amqp;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "amqp_connection_fuzz: %s\n", what);
  std::abort();
}

class Auth : public Authenticator {
 public:
  TokenVerdict verify(std::string_view token, std::string_view audience,
                      std::string_view) override {
    if (token != "SharedAccessSignature good") return {401, "bad token", std::nullopt};
    Claim claim;
    claim.audience = std::string(audience);
    claim.scopes = {"*"};
    return {200, "OK", claim};
  }
};

class Handler : public LinkHandler {
 public:
  std::optional<ErrorCondition> onAttach(const LinkRequest& request) override {
    if (!open.insert(request.id).second) fail("link id attached twice");
    return std::nullopt;
  }
  Outcome onMessage(LinkId link, DeliveryId, const Message& message) override {
    if (!open.contains(link)) fail("message on a link that is not open");
    if (message.body.size() % 3 == 1) return Outcome::rejected("amqp:not-found", "fuzz");
    return Outcome::accepted();
  }
  void onDetach(LinkId link) override {
    if (open.erase(link) != 1) fail("detach of a link that is not open");
  }
  std::set<LinkId> open;
};

void drain(ServerConnection& connection) {
  for (int i = 0; i < 1000; ++i) {
    std::span<const std::uint8_t> out = connection.output();
    if (out.empty()) return;
    connection.consumed(out.size());
  }
  fail("output never drains");
}

void run(std::span<const std::uint8_t> input, std::size_t chunk) {
  Auth auth;
  Handler handler;
  ServerConnection connection(ServerConnectionOptions{}, auth, handler);
  connection.tick(Clock::time_point(std::chrono::seconds(1)));
  for (std::size_t pos = 0; pos < input.size() && !connection.finished(); pos += chunk) {
    connection.receive(input.subspan(pos, std::min(chunk, input.size() - pos)));
    drain(connection);
  }
  connection.receiveClosed();
  drain(connection);
  if (!connection.finished()) fail("not finished after the input ended");
  if (!handler.open.empty()) fail("links still open after the connection finished");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> input(data, size);
  run(input, size == 0 ? 1 : size);
  run(input, 7);
  return 0;
}
