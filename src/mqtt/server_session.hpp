#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.hpp"
#include "mqtt/decoder.hpp"
#include "mqtt/packet.hpp"

namespace iothub::mqtt {

// Monotonic time, always passed in by the caller; the session never reads a clock.
using TimePoint = std::chrono::steady_clock::time_point;

struct ServerSessionOptions {
  // How long a new connection may take to send CONNECT, counted from `connected_at` (§3.1.4:
  // the server SHOULD close a connection that does not send CONNECT in reasonable time).
  // Short, so idle sockets cannot hold the hub's file descriptors (docs/limits.md).
  std::chrono::milliseconds connect_timeout{10'000};
  // How long the owner may take to decide on a received CONNECT (authentication waits for
  // the store, which may be busy during a connection storm), counted from its arrival.
  std::chrono::milliseconds authentication_timeout{30'000};
  // Upper bound of the keep-alive timeout, which is otherwise 1.5 x the client's keep-alive
  // (§3.1.2.10). Azure caps it at 1767 s (docs/protocol.md §2.4); nullopt means no cap.
  std::optional<std::chrono::milliseconds> max_keep_alive_timeout = std::chrono::seconds{1767};
  // Outgoing QoS 1 publishes awaiting PUBACK at the same time; clamped to 1..65535.
  std::size_t max_in_flight = 16;
  // Highest QoS a SUBACK grants. Azure grants at most 1 (QoS 2 requests get 1).
  QoS max_granted_qos = QoS::AtLeastOnce;
  // Packets a client may send after CONNECT while the owner authenticates it (they are held
  // and processed after acceptConnect, §3.1.4); one more closes the connection.
  std::size_t max_packets_before_connack = 32;
};

// Why the session wants the connection closed.
enum class CloseReason : std::uint8_t {
  ClientDisconnected,     // DISCONNECT received: a clean close, the will is discarded (§3.14.4)
  ProtocolViolation,      // a valid packet at the wrong time or one the hub does not support
  MalformedPacket,        // the Decoder failed with DecodeError::Malformed
  PacketTooLarge,         // the Decoder failed with DecodeError::PacketTooLarge
  UnsupportedProtocol,    // CONNECT for another protocol level; CONNACK 0x01 was sent first
  ConnectRefused,         // CONNACK with a refusal code was sent first
  ConnectTimeout,         // no CONNECT, or no authentication decision, within connect_timeout
  KeepAliveTimeout,       // nothing received within the keep-alive timeout (§3.1.2.10)
  TooManyPendingPackets,  // more than max_packets_before_connack while authenticating
};

std::string_view closeReasonName(CloseReason reason);

// ---- Actions: what the session asks its owner to do, in order. ----

// Encode and write this packet.
struct SendPacket {
  Packet packet;
};

// Close the network connection after writing the packets of earlier SendPacket actions.
// If the CONNECT had been accepted, the owner publishes its will (if any) on every close
// except ClientDisconnected (§3.1.2.5); the session itself does not route messages.
struct CloseConnection {
  CloseReason reason;
  std::string detail;  // for logs; never contains secrets
};

// A CONNECT arrived: decide whether to accept it (credentials, client id, one connection per
// device, session state) and answer with acceptConnect() or refuseConnect().
struct Authenticate {
  Connect connect;
};

// A SUBSCRIBE arrived: decide, per subscription and in order, the highest QoS allowed or
// SubAckReturnCode::Failure, and answer with completeSubscribe(packet_id, codes). The owner
// also records the granted subscriptions (replacing identical filters, §3.8.4).
struct AuthorizeSubscribe {
  std::uint16_t packet_id;
  std::vector<Subscription> subscriptions;
};

// An UNSUBSCRIBE arrived: forget these filters. The session answers UNSUBACK itself.
struct RemoveSubscriptions {
  std::vector<std::string> filters;
};

// An application message from the client (QoS 0 or 1). For QoS 1 the owner calls
// acknowledgePublish(packet_id) once it has taken responsibility for the message
// (e.g. it is stored), which sends the PUBACK.
struct DeliverPublish {
  Publish publish;
};

// The client acknowledged an outgoing QoS 1 publish: one more slot in the in-flight window.
struct PublishAcknowledged {
  std::uint16_t packet_id;
  std::uint64_t tag;  // the owner's tag given to publish()/redeliver()
};

using Action = std::variant<SendPacket, CloseConnection, Authenticate, AuthorizeSubscribe,
                            RemoveSubscriptions, DeliverPublish, PublishAcknowledged>;
using Actions = std::vector<Action>;

// An outgoing QoS 1 publish awaiting its PUBACK.
struct InFlightPublish {
  std::uint16_t packet_id;
  std::uint64_t tag;

  bool operator==(const InFlightPublish&) const = default;
};

// The server side of one MQTT 3.1.1 connection, as a pure state machine: decoded packets,
// decode errors and time go in; actions come out (see above). It enforces the protocol's
// ordering and timing rules and Azure IoT Hub's restrictions, and leaves every decision about
// identity, authorization, subscriptions and routing to its owner, which answers through
// the calls below. It does no I/O and reads no clock.
//
// Rules enforced:
//   - The first packet must be CONNECT, else close (ProtocolViolation). A CONNECT with an
//     empty client id and clean session 0 gets CONNACK 0x02 (§3.1.3.1). Packets that follow
//     CONNECT before the owner accepts it are held and processed in order afterwards.
//   - A second CONNECT closes (§3.1.0). Packets only a server sends (CONNACK, SUBACK,
//     UNSUBACK, PINGRESP) close.
//   - Keep-alive: with a non-zero keep-alive k, the connection closes when nothing arrived
//     for 1.5 x k (capped by max_keep_alive_timeout), judged at onTick().
//   - PINGREQ -> PINGRESP. DISCONNECT -> CloseConnection{ClientDisconnected}.
//   - Any QoS 2 PUBLISH from the client closes (Azure, docs/protocol.md §2.4); PUBREC, PUBREL and
//     PUBCOMP therefore close too, since the hub never starts a QoS 2 flow.
//   - Inbound QoS 1: PUBACKs go out in the order the PUBLISHes arrived (§4.6), even when the
//     owner acknowledges out of order.
//   - Outgoing QoS 1: packet ids are assigned here; at most max_in_flight await PUBACK.
//   - SUBSCRIBE -> SUBACK with min(requested, owner's decision, max_granted_qos) or 0x80.
//   - UNSUBSCRIBE -> RemoveSubscriptions and UNSUBACK.
// After CloseConnection, the session is Closed and every call returns no actions.
//
// Typical use by a transport, per received chunk:
//   decoder.feed(bytes);
//   loop: auto next = decoder.next();
//         error   -> run(session.onDecodeError(decoder.lastError(), next.status().message()))
//         nullopt -> stop;  packet -> run(session.onPacket(std::move(**next), now))
// and arm a timer at nextDeadline(), calling onTick() when it fires.
// Not thread-safe: one owner (strand) drives a session.
class ServerSession {
 public:
  enum class State : std::uint8_t { AwaitingConnect, Authenticating, Connected, Closed };

  ServerSession(ServerSessionOptions options, TimePoint connected_at);

  // ---- Input from the connection ----
  Actions onPacket(Packet packet, TimePoint now);
  // The Decoder failed; `detail` is its Status message. Answers CONNACK 0x01 first when the
  // first packet was a CONNECT for an unsupported protocol level (§3.1.2.2).
  Actions onDecodeError(DecodeError error, std::string_view detail);
  // Time passed: closes on an expired connect or keep-alive timeout (at or after the deadline).
  Actions onTick(TimePoint now);

  // ---- Answers from the owner ----
  // Accepts the CONNECT of the last Authenticate: sends CONNACK 0 (session_present is forced
  // to false for a clean session, §3.2.2.2) and processes the packets held since CONNECT.
  // Does nothing when the session closed meanwhile (e.g. ConnectTimeout). Calling it in any
  // other state than Authenticating or Closed is a programming error (checked).
  Actions acceptConnect(bool session_present);
  // Refuses it: CONNACK `code` then CloseConnection{ConnectRefused}. `code` must not be
  // Accepted (checked). Same state rules as acceptConnect.
  Actions refuseConnect(ConnectReturnCode code);
  // Answers an AuthorizeSubscribe: one code per subscription, in order (checked). Nothing
  // happens when the session closed meanwhile.
  Actions completeSubscribe(std::uint16_t packet_id, const std::vector<SubAckReturnCode>& codes);
  // The owner took responsibility for the inbound QoS 1 publish `packet_id`: sends its PUBACK
  // (after the PUBACKs of earlier publishes). Unknown ids and closed sessions are ignored.
  Actions acknowledgePublish(std::uint16_t packet_id);

  // ---- Output to the client ----
  // Sends an application message. QoS 0 goes out as is (packet id and dup cleared).
  // QoS 1 gets a fresh packet id and stays in flight until the client's PUBACK produces
  // PublishAcknowledged{packet_id, tag}. Errors: InvalidOperation unless Connected;
  // ArgumentInvalid for QoS 2 or a message the encoder would reject; Throttled when
  // max_in_flight QoS 1 publishes are already in flight (retry after a PublishAcknowledged).
  Result<Actions> publish(Publish message, std::uint64_t tag = 0);
  // Re-sends a QoS 1 publish left unacknowledged by an earlier connection of a persistent
  // session, with its original packet id and DUP set (§4.4). Same errors as publish(), plus
  // ArgumentInvalid when its packet id is zero or already in flight.
  Result<Actions> redeliver(Publish message, std::uint64_t tag = 0);

  // ---- Observers ----
  State state() const { return state_; }
  // When onTick() must be called next, or nullopt when no timer is needed.
  std::optional<TimePoint> nextDeadline() const;
  // The client's keep-alive in seconds (0 before CONNECT or when disabled).
  std::uint16_t keepAlive() const { return keep_alive_; }
  bool canPublishQoS1() const { return in_flight_.size() < max_in_flight_; }
  // Outgoing QoS 1 publishes without PUBACK yet, oldest first; an owner persisting the
  // session stores them to redeliver() on the next connection.
  const std::vector<InFlightPublish>& inFlight() const { return in_flight_; }
  // Inbound QoS 1 publishes whose PUBACK has not been sent yet. A transport may stop reading
  // while this is high (backpressure).
  std::size_t unacknowledgedInbound() const { return inbound_.size(); }

 private:
  struct InboundPublish {
    std::uint16_t packet_id;
    bool acknowledged;
  };
  struct PendingSubscribe {
    std::uint16_t packet_id;
    std::vector<QoS> requested;
  };

  void handleConnected(Packet&& packet, Actions& actions);
  void handleFirst(Packet&& packet, Actions& actions);
  void close(CloseReason reason, std::string detail, Actions& actions);
  Result<Actions> sendQoS1(Publish&& message, std::uint64_t tag);
  std::uint16_t allocatePacketId();
  bool isInFlight(std::uint16_t packet_id) const;

  ServerSessionOptions options_;
  std::size_t max_in_flight_;
  State state_ = State::AwaitingConnect;
  TimePoint connected_at_;
  TimePoint connect_received_at_;  // set when CONNECT arrives
  TimePoint last_packet_at_;
  std::uint16_t keep_alive_ = 0;
  bool clean_session_ = true;
  std::vector<Packet> held_;  // received while Authenticating
  std::vector<InFlightPublish> in_flight_;
  std::uint16_t next_packet_id_ = 1;
  // Arrival order; the front is the next PUBACK to send. A vector, not a deque: the few
  // publishes awaiting their PUBACK do not need one, and an empty std::deque allocates
  // ~580 bytes, for every connection (docs/benchmarks.md, B1).
  std::vector<InboundPublish> inbound_;
  std::vector<PendingSubscribe> pending_subscribes_;
};

}  // namespace iothub::mqtt
