#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "routing/nats/subject_token.hpp"

namespace iothub::routing {

// How a NatsBus connects. docs/cluster.md ("Messages between nodes: NATS") explains the
// defaults: a frozen server must be noticed in seconds, and a lost server retried at once.
struct NatsOptions {
  // Server URLs ("nats://host:port"); an entry may itself be a comma-separated list.
  std::vector<std::string> servers;
  // The connection's name as the servers show it (/connz): the node id.
  std::string name;
  // The client pings the server this often and gives the connection up after
  // `max_pings_out` unanswered pings (so a frozen server is noticed after 2-3 intervals).
  std::chrono::milliseconds ping_interval{2000};
  int max_pings_out = 2;
  // Reconnects never stop; between two rounds over the server list the client waits
  // `reconnect_wait` plus a random 0..`reconnect_jitter`.
  std::chrono::milliseconds reconnect_wait{200};
  std::chrono::milliseconds reconnect_jitter{100};
  // Bound on one connection attempt (TCP connect and the server's INFO).
  std::chrono::milliseconds connect_timeout{2000};
  // How long connect() keeps retrying when no server answers at first; 0 fails at once.
  std::chrono::milliseconds initial_connect_timeout{10000};
  // Bytes that publish() may queue while the connection is being re-established (from the
  // moment the connection drops until the bus notices): past it, ServiceUnavailable.
  int reconnect_buffer_bytes = 8 * 1024 * 1024;
  // Write each message to the socket at once instead of letting the NATS C client's
  // flusher thread batch writes (it waits up to 1 ms). Off: batching costs about 1 ms per
  // hop at low load (a method to a device on another node: p50 2.0 ms, against 0.7 ms with
  // it on) but carries a third more cross-node calls per second under load
  // (docs/benchmarks.md "Cluster", decisions §65).
  bool send_asap = false;
  // Try the servers in random order (spreads the nodes of a cluster over the servers).
  bool randomize_servers = true;
};

enum class NatsConnectionEvent {
  Disconnected,  // the connection dropped; the bus is reconnecting
  Reconnected,   // connected again; subscriptions are re-established by the bus
  Closed,        // closed for good by the library (never reported for the bus's destruction)
};

// Counters since connect(), for metrics. Each is monotonic.
struct NatsBusCounters {
  std::uint64_t published = 0;      // messages accepted by publish(), respond() and request()
  std::uint64_t received = 0;       // messages delivered to subscriptions (replies excluded)
  std::uint64_t requests = 0;       // calls of request()
  std::uint64_t replies = 0;        // requests answered by a responder
  std::uint64_t timeouts = 0;       // requests that ended GatewayTimeout (timer or lost link)
  std::uint64_t no_responders = 0;  // requests nobody was subscribed to
  std::uint64_t disconnects = 0;
  std::uint64_t reconnects = 0;
  std::uint64_t async_errors = 0;  // errors the library reported (e.g. a slow consumer)
};

// A live subscription of a NatsBus (NatsBus::subscribe()); unsubscribes when destroyed or
// reset(). Move-only, not thread-safe (like any object): one owner resets it. Once reset()
// or the destructor returns, the handler is never called again and no call of it is still
// running on another thread. Called from within the subscription's own handler, reset()
// only stops new calls (waiting there could deadlock). It may outlive its bus (it is then
// inert).
class NatsSubscription {
 public:
  NatsSubscription() = default;
  ~NatsSubscription() { reset(); }
  NatsSubscription(NatsSubscription&&) noexcept = default;
  NatsSubscription& operator=(NatsSubscription&& other) noexcept {
    if (this != &other) {
      reset();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  NatsSubscription(const NatsSubscription&) = delete;
  NatsSubscription& operator=(const NatsSubscription&) = delete;

  void reset();
  bool active() const { return state_ != nullptr; }

  struct State;  // defined in nats_bus.cpp
  explicit NatsSubscription(std::shared_ptr<State> state) : state_(std::move(state)) {}

 private:
  std::shared_ptr<State> state_;
};

// One connection to a NATS cluster, for messages between iothub nodes: publish, subscribe
// (optionally in a queue group), and request/reply without blocking any thread. A thin
// layer over the NATS C client (libnats); no other file of iothub sees that library.
//
// Threads. The library reads and writes on its own threads. The bus never runs user code
// there: every message handler, reply callback and connection observer is posted to the
// `Executor` given to connect(), which must be thread-safe, must not block or run the task
// inline, and must accept tasks until the bus's destructor has returned. Handlers of one
// subscription are posted in arrival order (run them on one thread or strand to keep it).
// publish(), subscribe(), request(), respond() and the queries never block (flush() does);
// all methods are thread-safe and may be called from handlers.
//
// Delivery is at most once (core NATS): a message published while nobody is subscribed,
// or while a link is down, is gone. The bus never echoes a node's own messages back to its
// own subscriptions, so a node must handle requests to itself without NATS.
//
// Destruction closes the connection (flushing what was published, up to 0.5 s), completes
// pending requests with Cancelled on the destroying thread, and waits for handlers running
// on other threads: once the destructor returns, no handler, callback or observer of this
// bus is ever called again. Do not destroy the bus while a handler that waits for the
// destroying thread is running.
class NatsBus {
 public:
  // NATS headers: a key may carry several values; keys are case-sensitive.
  using Headers = std::multimap<std::string, std::string, std::less<>>;

  // An owned copy of a received message.
  struct Message {
    std::string subject;
    std::string reply;  // where a request wants its answer; empty for a plain message
    std::string data;
    Headers headers;
    // The first value of `key`, if any.
    std::optional<std::string_view> header(std::string_view key) const;
  };

  using Executor = std::function<void(std::function<void()>)>;
  using MessageHandler = std::function<void(Message)>;
  // Exactly one call per request(), on the executor (or on the thread destroying the bus).
  using ReplyCallback = std::function<void(Result<Message>)>;
  using ConnectionObserver = std::function<void(NatsConnectionEvent)>;

  using Subscription = NatsSubscription;

  // Connects to one of `options.servers`, retrying up to initial_connect_timeout. Errors:
  // ArgumentInvalid (no server, bad option or URL, null executor), ServiceUnavailable (no
  // server answered in time; the message names the URLs).
  static Result<std::unique_ptr<NatsBus>> connect(NatsOptions options, Executor executor,
                                                  ConnectionObserver observer = nullptr);
  ~NatsBus();
  NatsBus(const NatsBus&) = delete;
  NatsBus& operator=(const NatsBus&) = delete;

  // Sends one message. Errors: ArgumentInvalid (bad subject or header), MessageTooLarge
  // (data plus headers over the server's max_payload), ServiceUnavailable (not connected,
  // or the reconnect buffer is full), Cancelled (the bus is being destroyed).
  Status publish(std::string_view subject, std::string_view data, const Headers& headers = {});

  // Delivers every message on `subject` (wildcards allowed) to `handler` until the returned
  // Subscription is destroyed. With a non-empty `queue_group`, each message goes to one
  // member of the group across the cluster. The server knows the subscription once a later
  // flush() returns; other servers of a cluster learn it asynchronously after that. Across
  // reconnects the bus subscribes again by itself. Errors: ArgumentInvalid, Cancelled,
  // ServiceUnavailable.
  Result<Subscription> subscribe(std::string_view subject, MessageHandler handler) {
    return subscribe(subject, {}, std::move(handler));
  }
  Result<Subscription> subscribe(std::string_view subject, std::string_view queue_group,
                                 MessageHandler handler);

  // Sends a request and calls `callback` exactly once, on the executor, with the first
  // reply or an error:
  //   NotFound "no responders ..." (isNoResponders()): nobody subscribed to `subject`; the
  //     request was not delivered. Returned as soon as the server says so.
  //   GatewayTimeout: no reply within `timeout`, or the connection dropped while waiting.
  //     The request may or may not have been delivered and acted on: never resend blindly.
  //   ServiceUnavailable: not connected; nothing was sent.
  //   ArgumentInvalid / MessageTooLarge: as publish(); nothing was sent.
  //   Cancelled: the bus was destroyed first (called on the destroying thread).
  void request(std::string_view subject, std::string_view data, const Headers& headers,
               std::chrono::milliseconds timeout, ReplyCallback callback);

  // Answers `request` on its reply subject. ArgumentInvalid when it has none; otherwise as
  // publish().
  Status respond(const Message& request, std::string_view data, const Headers& headers = {});

  // Blocks until the server has processed everything sent before (one PING/PONG round
  // trip), or `timeout`. Errors: GatewayTimeout, ServiceUnavailable, Cancelled.
  Status flush(std::chrono::milliseconds timeout);

  bool connected() const;
  // The URL of the server the bus is connected to; empty while disconnected.
  std::string connectedUrl() const;
  // The server's max_payload in bytes (from the last server the bus talked to).
  std::int64_t maxPayload() const;
  NatsBusCounters counters() const;
  // Requests whose callback has not been called yet.
  std::size_t pendingRequests() const;

  // Frees what the NATS library keeps per thread. Call it on a thread of yours that used
  // the bus, just before that thread ends (library threads and the main thread need not).
  static void releaseThreadMemory();

  struct Core;  // defined in nats_bus.cpp

 private:
  explicit NatsBus(std::shared_ptr<Core> core);
  std::shared_ptr<Core> core_;
};

// True when `status` is the "no responders" outcome of NatsBus::request().
bool isNoResponders(const Status& status);

}  // namespace iothub::routing
