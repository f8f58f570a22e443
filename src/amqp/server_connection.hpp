#pragma once
// A Sans-I/O AMQP 1.0 server connection (docs/amqp.md). Bytes in, bytes out, a clock in; no
// sockets, no threads, no Asio. Built on Qpid Proton's proton::io::connection_driver, which
// stays behind the pimpl: nothing here includes Proton.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace iothub::amqp {

using Clock = std::chrono::steady_clock;

// What a valid put-token on $cbs grants, as the Authenticator decides it.
struct Claim {
  std::string audience;  // the put-token's `name`
  // Link addresses the token covers: an entry matches an address equal to it or, when it
  // ends with '/', any address it prefixes; "*" matches every address.
  std::vector<std::string> scopes;
  // Rights the token carries (policy permissions such as "ServiceConnect"); the core does
  // not interpret them, the LinkHandler may.
  std::vector<std::string> rights;
  Clock::time_point expires = Clock::time_point::max();
};

// The answer to one put-token. `status_code` goes back as the reply's AMQP int `status-code`
// (200 accepted; 401 bad token; 400 malformed request; 503 try again).
struct TokenVerdict {
  int status_code = 401;
  std::string description;     // status-description; never the token
  std::optional<Claim> claim;  // set when status_code is 2xx
};

// Verifies SAS tokens put on $cbs. Called synchronously from receive(), on whatever thread
// drives the connection.
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // `type` is the put-token's `type` (servicebus.windows.net:sastoken, azure-devices.net:sastoken,
  // jwt); `audience` its `name`; `token` the request body.
  virtual TokenVerdict verify(std::string_view token, std::string_view audience,
                              std::string_view type) = 0;
};

// An AMQP error condition (symbolic name such as "amqp:unauthorized-access" and text).
struct ErrorCondition {
  std::string condition;
  std::string description;
};

using LinkId = std::uint64_t;
// One incoming transfer whose outcome the handler decides later (Outcome::deferred()).
using DeliveryId = std::uint64_t;

enum class LinkRole : std::uint8_t {
  Sender,    // the client sends to `address` (its target), the hub receives
  Receiver,  // the client receives from `address` (its source), the hub sends
};

struct LinkRequest {
  LinkId id = 0;
  std::string name;  // the link name
  LinkRole role = LinkRole::Sender;
  std::string address;  // target address (client sender) or source address (client receiver)
  std::map<std::string, std::string> properties;  // attach properties, values rendered as text
  // The source's filter set (client receivers): filter name (a symbol) → its value as text,
  // for a described value the described string (Event Hubs' apache.org:selector-filter:string).
  std::map<std::string, std::string> filters;
  // Claims granted on this connection that are still valid and cover `address`.
  std::vector<Claim> claims;
};

// An AMQP timestamp: milliseconds since the Unix epoch.
struct Timestamp {
  std::int64_t ms = 0;
  bool operator==(const Timestamp&) const = default;
};
// A typed value the hub sends where the client reads the AMQP type (Event Hubs: longs,
// timestamps, string arrays; docs/amqp.md §4): string, int, long, boolean, timestamp, or an
// array of strings.
using Value = std::variant<std::string, std::int32_t, std::int64_t, bool, Timestamp,
                           std::vector<std::string>>;

// A message, with the fields the hub uses rendered without Proton types.
struct Message {
  std::optional<std::string> message_id;      // uuid ids as hyphenated text
  std::optional<std::string> correlation_id;  // same rule
  std::optional<std::string> to;
  std::optional<std::string> reply_to;
  std::optional<std::string> content_type;
  std::optional<std::string> content_encoding;
  std::optional<std::string> user_id;
  std::optional<std::int64_t> absolute_expiry_time_ms;        // ms since the Unix epoch
  std::map<std::string, std::string> application_properties;  // values rendered as text
  std::map<std::string, std::string> message_annotations;     // values rendered as text
  std::string body;  // data section bytes, or the text of a string/symbol/binary value body
  // Outgoing only (ignored on receipt): typed application properties and message annotations
  // (sent besides the text ones; a typed entry wins over a text one of the same key), and an
  // AMQP-value body holding a map with string keys, sent instead of `body` when set.
  std::map<std::string, Value> typed_application_properties;
  std::map<std::string, Value> typed_message_annotations;
  std::optional<std::map<std::string, Value>> value_body;
};

// The outcome of an incoming transfer, sent back as its disposition.
struct Outcome {
  // Deferred: the handler answers later with ServerConnection::settle() (it needs the
  // store, which the connection's strand must not wait for).
  enum class Kind : std::uint8_t { Accepted, Rejected, Released, Deferred };
  Kind kind = Kind::Accepted;
  ErrorCondition
      error;  // Rejected: sent as the rejected outcome's error (required by azure-iothub)

  static Outcome accepted() { return {}; }
  static Outcome rejected(std::string condition, std::string description) {
    return {Kind::Rejected, {std::move(condition), std::move(description)}};
  }
  static Outcome released() { return {Kind::Released, {}}; }
  static Outcome deferred() { return {Kind::Deferred, {}}; }
};

// What the hub implements for every address but $cbs. Calls come from receive()/tick().
class LinkHandler {
 public:
  virtual ~LinkHandler() = default;
  // A client attached a link to an address its claims cover. Return nullopt to accept, or
  // the error to detach it with (the client's terminus is then not echoed).
  virtual std::optional<ErrorCondition> onAttach(const LinkRequest& request) = 0;
  // A transfer on an accepted client sender link.
  // `delivery` names it for a later settle() when the outcome is Outcome::deferred(). The
  // client's sender gets one credit back per settled message, so a link never has more
  // than link_credit messages waiting for their outcome.
  virtual Outcome onMessage(LinkId link, DeliveryId delivery, const Message& message) = 0;
  // An accepted link ended (detached or closed by the client, or with the connection).
  virtual void onDetach(LinkId link) = 0;
  // The hub may now send up to `credit` messages on an accepted client receiver link.
  virtual void onCredit(LinkId /*link*/, int /*credit*/) {}
};

struct ServerConnectionOptions {
  std::string container_id = "iothub";
  // SASL mechanisms offered; empty = SASL off (only the plain AMQP header is accepted).
  // Clients that skip SASL (azure-iothub) are accepted either way.
  std::string sasl_mechanisms = "ANONYMOUS";
  // Our idle-time-out (0 = none): a peer silent for this long is closed with
  // amqp:resource-limit-exceeded. Proton also sends empty frames at half the peer's.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(240)};
  std::uint32_t max_frame_size = 64 * 1024;
  std::uint16_t max_sessions = 32;
  // Links the connection may hold at once (all sessions); beyond it attaches are refused.
  std::size_t max_links = 256;
  // Link credit granted to client senders ($cbs and accepted links).
  std::uint32_t link_credit = 100;
  // Largest message accepted on a client sender (announced in our attach; larger ones end
  // the link with amqp:link:message-size-exceeded). Azure's C2D limit is 64 KB.
  std::uint64_t max_message_size = 256 * 1024;
  // Distinct unexpired claims a connection may hold; a put-token beyond it gets 403.
  std::size_t max_claims = 64;
  // $cbs replies waiting for the client's credit; beyond it the connection is closed with
  // amqp:resource-limit-exceeded (a client that never reads its replies).
  std::size_t max_pending_replies = 1000;
};

// Counters of one connection, for tests and logs.
struct ConnectionStats {
  std::uint64_t tokens_accepted = 0;
  std::uint64_t tokens_refused = 0;
  std::uint64_t attaches_refused = 0;
  std::uint64_t messages_received = 0;
};

// One accepted AMQP connection. Not thread-safe: drive it from one strand.
class ServerConnection {
 public:
  ServerConnection(ServerConnectionOptions options, Authenticator& authenticator,
                   LinkHandler& handler);
  ~ServerConnection();
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;

  // Feeds bytes read from the peer and runs everything they cause. Returns how many were
  // consumed: fewer than given only when the connection stopped reading (a protocol error
  // or the peer's Close); it then finishes once output() is drained.
  std::size_t receive(std::span<const std::uint8_t> bytes);
  // The peer closed its side (EOF) or the socket failed.
  void receiveClosed();
  // Bytes waiting to be sent; valid until the next call on this object.
  std::span<const std::uint8_t> output();
  // `n` bytes of output() were written.
  void consumed(std::size_t n);
  // Writing is no longer possible.
  void sendClosed();
  // Runs timers (idle timeout, keep-alive frames). Returns when to call again, or nullopt.
  std::optional<Clock::time_point> tick(Clock::time_point now);
  // Closes the connection with `error` (e.g. the hub stopping: amqp:connection:forced).
  void close(const ErrorCondition& error);
  // Sends a message on an accepted client receiver link. False without credit or link.
  bool send(LinkId link, const Message& message);
  int credit(LinkId link) const;
  // Ends an accepted link from the hub's side with `error` (e.g. amqp:link:stolen when a
  // newer receiver took its place); the handler's onDetach follows. False for an unknown link.
  bool detach(LinkId link, const ErrorCondition& error);
  // Sends the outcome of a deferred transfer (not Deferred again). False when its link
  // ended meanwhile (the client saw the link end; the outcome is dropped).
  bool settle(DeliveryId delivery, const Outcome& outcome);

  // Nothing more will be read or written: the shell may close the socket once output() is
  // empty.
  bool finished() const;
  // Why the connection ended, if it ended with an error (ours or the peer's).
  std::optional<ErrorCondition> error() const;
  // The hostname of the client's Open, once received.
  std::string hostname() const;
  const ConnectionStats& stats() const;

 private:
  std::size_t feed(std::span<const std::uint8_t> bytes);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// True when `claim` covers link `address` (rule in Claim::scopes).
bool covers(const Claim& claim, std::string_view address);

}  // namespace iothub::amqp
