// Fuzz target for the MQTT 3.1.1 codec (src/mqtt). Properties checked on any input:
//   1. The Decoder never crashes, never reads out of bounds, and fails with a Status.
//   2. Feeding the input whole or in small chunks yields the same packets and outcome.
//   3. Every decoded packet re-encodes successfully (the encoder accepts everything the
//      decoder accepts) to exactly encodedSize() bytes, and decoding that gives an equal packet.
//   4. A ServerSession and a ClientSession driven by the decoded packets never crash, and
//      every packet the ClientSession asks to send encodes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "mqtt/client_session.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/encoder.hpp"
#include "mqtt/server_session.hpp"

namespace {

using namespace iothub::mqtt;

constexpr std::size_t kMaxPacket = 64 * 1024;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "mqtt_codec_fuzz: %s\n", what);
  std::abort();
}

struct Outcome {
  std::vector<Packet> packets;
  DecodeError error = DecodeError::None;
};

Outcome decodeInChunks(std::string_view input, std::size_t chunk) {
  Outcome outcome;
  Decoder decoder(kMaxPacket);
  for (std::size_t pos = 0; pos < input.size() && outcome.error == DecodeError::None;
       pos += chunk) {
    decoder.feed(input.substr(pos, chunk));
    while (true) {
      auto next = decoder.next();
      if (!next.isOk()) {
        outcome.error = decoder.lastError();
        if (outcome.error == DecodeError::None) fail("error without a DecodeError");
        break;
      }
      if (!next->has_value()) break;
      outcome.packets.push_back(std::move(**next));
    }
  }
  return outcome;
}

void checkRoundTrip(const Packet& packet) {
  std::string encoded;
  if (!encode(packet, encoded).isOk()) fail("a decoded packet does not re-encode");
  if (encoded.size() != encodedSize(packet)) fail("encodedSize disagrees with encode");
  auto again = decodePacket(encoded, kMaxPacket + kMaxFixedHeaderSize);
  if (!again.isOk()) fail("a re-encoded packet does not decode");
  if (!(*again == packet)) fail("round trip changed the packet");
}

void driveSession(const std::vector<Packet>& packets, DecodeError error) {
  const TimePoint start{};
  ServerSession session({}, start);
  TimePoint now = start;
  for (const Packet& packet : packets) {
    now += std::chrono::seconds(1);
    Actions actions = session.onPacket(packet, now);
    // Answer every question so the session's later states are explored too.
    for (Action& action : actions) {
      if (std::holds_alternative<Authenticate>(action)) {
        (void)session.acceptConnect(true);
      } else if (auto* authorize = std::get_if<AuthorizeSubscribe>(&action)) {
        (void)session.completeSubscribe(
            authorize->packet_id, std::vector<SubAckReturnCode>(authorize->subscriptions.size(),
                                                                SubAckReturnCode::MaxQoS2));
      } else if (auto* deliver = std::get_if<DeliverPublish>(&action)) {
        (void)session.acknowledgePublish(deliver->publish.packet_id);
        (void)session.publish(deliver->publish);
      }
    }
    (void)session.onTick(now);
  }
  if (error != DecodeError::None) (void)session.onDecodeError(error, "fuzz");
}

void sendAll(const ClientActions& actions) {
  for (const ClientAction& action : actions) {
    if (const auto* send = std::get_if<SendPacket>(&action)) {
      std::string bytes;
      if (!encode(send->packet, bytes).isOk())
        fail("the client session sent an unencodable packet");
    }
  }
}

// The decoded packets as a server's answers to a device: after a CONNECT, the input is read
// from the hub; every subscription and publish the client can make is made along the way.
void driveClientSession(const std::vector<Packet>& packets, DecodeError error) {
  const TimePoint start{};
  ClientSession session;
  Connect connect;
  connect.client_id = "dev1";
  connect.keep_alive = 5;
  sendAll(session.connect(connect, start));
  TimePoint now = start;
  for (const Packet& packet : packets) {
    now += std::chrono::seconds(3);
    ClientActions actions = session.onPacket(packet, now);
    sendAll(actions);
    for (const ClientAction& action : actions) {
      if (const auto* received = std::get_if<MessageReceived>(&action)) {
        Publish answer = received->publish;
        answer.qos = QoS::AtLeastOnce;
        if (auto sent = session.publish(answer, now)) sendAll(sent->actions);
        if (auto again = session.republish(answer, now)) sendAll(*again);
      } else if (std::holds_alternative<CloseClientConnection>(action)) {
        sendAll(session.connect(connect, now));
      }
    }
    if (auto sent = session.subscribe({{"$iothub/twin/res/#", QoS::AtMostOnce}}, now)) {
      sendAll(sent->actions);
    }
    sendAll(session.onTick(now));
  }
  if (error != DecodeError::None) (void)session.onDecodeError(error, "fuzz");
  sendAll(session.disconnect());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const Outcome whole = decodeInChunks(input, input.empty() ? 1 : input.size());
  // Chunked decoding must not change anything; byte by byte is exhaustive for small inputs.
  const Outcome chunked = decodeInChunks(input, size <= 4096 ? 1 : 7);
  if (whole.packets != chunked.packets || whole.error != chunked.error) {
    fail("chunked decoding differs from whole decoding");
  }
  for (const Packet& packet : whole.packets) checkRoundTrip(packet);
  driveSession(whole.packets, whole.error);
  driveClientSession(whole.packets, whole.error);
  return 0;
}
