#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/packet.hpp"
#include "mqtt/server_session.hpp"  // TimePoint, SendPacket

namespace iothub::mqtt {

// Why a ClientSession wants the network connection closed.
enum class ClientCloseReason : std::uint8_t {
  Disconnected,       // disconnect() was called: DISCONNECT is the last packet to write
  ConnectRefused,     // CONNACK with a refusal code (see ConnectionRefused)
  ProtocolViolation,  // a valid packet the server must not send, or not at that time
  MalformedPacket,    // the Decoder failed with DecodeError::Malformed
  PacketTooLarge,     // the Decoder failed with DecodeError::PacketTooLarge
  KeepAliveTimeout,   // no PINGRESP within the keep-alive period after a PINGREQ
};

std::string_view clientCloseReasonName(ClientCloseReason reason);

// ---- Actions: what the session asks its owner to do, in order. SendPacket (encode and write
// this packet) is shared with ServerSession. ----

// Close the network connection after writing the packets of earlier SendPacket actions.
struct CloseClientConnection {
  ClientCloseReason reason;
  std::string detail;  // for logs and status messages; never contains secrets
};

// CONNACK 0: the connection is usable. `session_present` is the server's flag (§3.2.2.2).
struct ConnectionAccepted {
  bool session_present = false;
};

// CONNACK with a refusal code; a CloseClientConnection{ConnectRefused} follows.
struct ConnectionRefused {
  ConnectReturnCode code;
};

// The SUBACK of subscribe() `packet_id`: one code per filter, in the order subscribed.
struct SubscribeCompleted {
  std::uint16_t packet_id;
  std::vector<std::string> filters;
  std::vector<SubAckReturnCode> codes;
};

// The PUBACK of the QoS 1 publish `packet_id`; its id is free again.
struct PublishCompleted {
  std::uint16_t packet_id;
};

// An application message from the server. For QoS 1 the PUBACK was sent just before (the
// preceding SendPacket): a client that crashes while handling it loses it, as the Azure
// device SDKs do.
struct MessageReceived {
  Publish publish;
};

// A PINGRESP from the server, one per PINGRESP (answering ping() or a keep-alive PINGREQ of
// onTick()): for an owner that counts its pings' answers, such as a load generator.
struct PingAnswered {};

using ClientAction =
    std::variant<SendPacket, CloseClientConnection, ConnectionAccepted, ConnectionRefused,
                 SubscribeCompleted, PublishCompleted, MessageReceived, PingAnswered>;
using ClientActions = std::vector<ClientAction>;

// The client side of MQTT 3.1.1 as a pure state machine: the owner feeds it decoded packets,
// decode errors and time, and calls it to connect, subscribe, publish and disconnect; it
// returns the actions to carry out. It does no I/O and reads no clock.
//
// One ClientSession lives as long as the MQTT session (clean session 0 keeps it across
// network connections, §3.1.2.4): packet identifiers of QoS 1 publishes still awaiting PUBACK
// survive a reconnect, so the owner can re-send them with their original id and DUP (§4.4)
// through republish(). Everything else (pending SUBSCRIBEs, keep-alive) belongs to one
// network connection and is reset by connect().
//
// Rules enforced:
//   - The first packet from the server must be CONNACK, else close (ProtocolViolation).
//     CONNACK 0 -> ConnectionAccepted; any other code -> ConnectionRefused and close.
//   - CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, PUBREL, PUBREC, PUBCOMP and a
//     second CONNACK from the server close (ProtocolViolation); so does a QoS 2 PUBLISH,
//     since Azure IoT Hub never starts a QoS 2 flow (docs/protocol.md §2.4). UNSUBACK is
//     ignored: this client never unsubscribes.
//   - PINGRESP -> PingAnswered.
//   - SUBACK -> SubscribeCompleted; one with the wrong number of codes closes. SUBACKs and
//     PUBACKs for unknown packet ids are ignored (a late answer to an abandoned request).
//   - Keep-alive k > 0 (§3.1.2.10): a PINGREQ goes out when nothing was sent for k seconds;
//     no PINGRESP within another k seconds closes (KeepAliveTimeout), judged at onTick().
//   - Packet ids: one 16-bit space for QoS 1 publishes and SUBSCRIBEs, never 0, never one in
//     use; allocation continues after the last id handed out.
// After CloseClientConnection the connection is over: onPacket and onTick do nothing until
// the next connect(); publish() and subscribe() fail with InvalidOperation.
//
// Typical use by an I/O shell, per network connection:
//   run(session.connect(connect_packet, now));
//   per received chunk: decoder.feed(bytes); loop over decoder.next():
//     error -> run(session.onDecodeError(...)); packet -> run(session.onPacket(p, now))
//   arm a timer at nextDeadline(), calling onTick() when it fires;
//   when the socket fails on its own: session.connectionLost().
// Not thread-safe: one owner (strand) drives a session.
class ClientSession {
 public:
  enum class State : std::uint8_t { Disconnected, AwaitingConnAck, Connected };

  ClientSession() = default;

  // ---- Connection lifecycle ----
  // Starts a new network connection: SendPacket(CONNECT). The keep-alive is taken from
  // `connect`. Subscriptions awaiting SUBACK from an earlier connection are forgotten (their
  // SUBACKs can no longer come); publishes awaiting PUBACK are kept.
  ClientActions connect(Connect connect, TimePoint now);
  // Ends the connection politely: SendPacket(DISCONNECT), CloseClientConnection{Disconnected}.
  // Nothing when not connected.
  ClientActions disconnect();
  // The owner noticed the connection ended (read or write error, EOF, close). No actions.
  void connectionLost();

  // ---- Input from the connection ----
  ClientActions onPacket(Packet packet, TimePoint now);
  // The Decoder failed; `detail` is its Status message.
  ClientActions onDecodeError(DecodeError error, std::string_view detail);
  // Time passed: PINGREQ or KeepAliveTimeout when due (at or after nextDeadline()).
  ClientActions onTick(TimePoint now);

  // ---- Requests from the owner ----
  struct Sent {
    std::uint16_t packet_id = 0;  // 0 for a QoS 0 publish
    ClientActions actions;
  };
  // SUBSCRIBE to `subscriptions` with a fresh packet id. Errors: InvalidOperation unless
  // Connected; ArgumentInvalid for an empty list or an invalid filter; Throttled when all
  // 65535 packet ids are in use.
  Result<Sent> subscribe(std::vector<Subscription> subscriptions, TimePoint now);
  // PUBLISH `message`. QoS 0 goes out as is (packet id and DUP cleared). QoS 1 gets a fresh
  // packet id (the message's is ignored) that stays in use until PublishCompleted or
  // abandon(). Errors: InvalidOperation unless Connected; ArgumentInvalid for QoS 2 or a
  // message the encoder would reject; Throttled when all packet ids are in use.
  Result<Sent> publish(Publish message, TimePoint now);
  // Re-sends the QoS 1 publish `message.packet_id` (still awaiting PUBACK, typically from an
  // earlier connection) with DUP set (§4.4). Errors: InvalidOperation unless Connected;
  // ArgumentInvalid unless the message is QoS 1 with a packet id in flight, or when the
  // encoder would reject it.
  Result<ClientActions> republish(Publish message, TimePoint now);
  // Sends a PINGREQ now, on the owner's schedule rather than the keep-alive's (a load
  // generator paces its pings itself). Like any packet sent, it postpones the keep-alive
  // PINGREQ; the PINGRESP deadline runs from the oldest unanswered PINGREQ, so pinging again
  // does not hide a server that stopped answering. Nothing unless Connected.
  ClientActions ping(TimePoint now);
  // Gives up on QoS 1 publish `packet_id` (its sender timed out): the id is free again and a
  // late PUBACK for it is ignored. Unknown ids are ignored.
  void abandon(std::uint16_t packet_id);

  // ---- Observers ----
  State state() const { return state_; }
  // When onTick() must be called next, or nullopt when no timer is needed.
  std::optional<TimePoint> nextDeadline() const;
  // The QoS 1 publishes awaiting PUBACK.
  const std::set<std::uint16_t>& inFlight() const { return in_flight_; }
  bool awaitingPingResponse() const { return ping_sent_at_.has_value(); }

 private:
  struct PendingSubscribe {
    std::uint16_t packet_id;
    std::vector<std::string> filters;
  };

  void handleConnected(Packet&& packet, TimePoint now, ClientActions& actions);
  void close(ClientCloseReason reason, std::string detail, ClientActions& actions);
  void send(Packet packet, TimePoint now, ClientActions& actions);
  std::uint16_t allocatePacketId();
  bool isPendingSubscribe(std::uint16_t packet_id) const;

  State state_ = State::Disconnected;
  std::chrono::seconds keep_alive_{0};
  TimePoint last_sent_at_{};
  std::optional<TimePoint> ping_sent_at_;
  std::uint16_t last_packet_id_ = 0;
  std::set<std::uint16_t> in_flight_;
  std::vector<PendingSubscribe> pending_subscribes_;
};

}  // namespace iothub::mqtt
