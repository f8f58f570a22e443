#include "routing/nats/nats_bus.hpp"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

// The only translation unit that sees libnats. Lifetimes, in short (docs/cluster.md has the
// long version): the library calls back on its own threads with raw closure pointers, so
// every closure must outlive the library's last call with it. For a subscription that last
// call is its on-complete callback, which the library makes after the subscription's last
// message callback has returned; for the connection it is the closed callback. The bus's
// destructor closes the connection and waits for both before anything is freed.

namespace iothub::routing {
namespace {

constexpr std::string_view kNoResponders = "no responders";

// Runs callbacks until closed. close() then waits for the calls running on other threads,
// so that "once close() returns, no callback runs" holds. Called from inside one of the
// gate's own callbacks, close() only stops new calls and waits for nothing: waiting there
// could deadlock (two calls closing at once, or one waiting for a lock the closer holds).
class CallbackGate {
 public:
  template <class F>
  bool run(F&& fn) {
    {
      std::lock_guard lock(mutex_);
      if (closed_) return false;
      ++running_;
    }
    active().push_back(this);
    struct Leave {
      CallbackGate* gate;
      ~Leave() {
        active().pop_back();
        std::lock_guard lock(gate->mutex_);
        --gate->running_;
        gate->idle_.notify_all();
      }
    } leave{this};
    std::forward<F>(fn)();
    return true;
  }

  void close() {
    const auto& stack = active();
    bool inside = std::find(stack.begin(), stack.end(), this) != stack.end();
    std::unique_lock lock(mutex_);
    closed_ = true;
    if (!inside) idle_.wait(lock, [&] { return running_ == 0; });
  }

 private:
  // The gates whose callbacks this thread is inside, innermost last.
  static std::vector<const CallbackGate*>& active() {
    thread_local std::vector<const CallbackGate*> gates;
    return gates;
  }

  std::mutex mutex_;
  std::condition_variable idle_;
  bool closed_ = false;  // guarded by mutex_
  long running_ = 0;     // calls inside run(); guarded by mutex_
};

// Keeps a closure alive for the rest of the process. Only for the corner where the library
// closed a subscription before the bus could ask for its on-complete callback (the
// connection was closed for good in between): nothing then tells when the library is done
// with the closure, so it is never freed. Reachable, so not a leak report.
void keepForever(std::shared_ptr<void> closure) {
  static std::mutex mutex;
  static auto* kept = new std::vector<std::shared_ptr<void>>();
  std::lock_guard lock(mutex);
  kept->push_back(std::move(closure));
}

std::string errorText(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* detail = nats_GetLastError(nullptr);
  if (detail != nullptr && *detail != '\0' && text != detail) text += std::string(": ") + detail;
  return text;
}

// The bus's view of a libnats failure of `what`.
Status fromNats(natsStatus s, const std::string& what) {
  switch (s) {
    case NATS_OK:
      return Status::ok();
    case NATS_CONNECTION_CLOSED:
      return {ErrorCode::ServiceUnavailable, what + ": the NATS connection is closed"};
    case NATS_INSUFFICIENT_BUFFER:
      return {ErrorCode::ServiceUnavailable,
              what + ": not connected to NATS and the reconnect buffer is full"};
    case NATS_NOT_YET_CONNECTED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_STALE_CONNECTION:
      return {ErrorCode::ServiceUnavailable,
              what + ": not connected to NATS (" + errorText(s) + ")"};
    case NATS_TIMEOUT:
      return {ErrorCode::GatewayTimeout, what + ": timed out"};
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_INVALID_QUEUE_NAME:
      return {ErrorCode::ArgumentInvalid, what + ": " + errorText(s)};
    default:
      return {ErrorCode::ServerError, what + ": NATS error: " + errorText(s)};
  }
}

Status checkHeaders(const NatsBus::Headers& headers) {
  for (const auto& [key, value] : headers) {
    if (key.empty()) return {ErrorCode::ArgumentInvalid, "NATS header with an empty name"};
    for (char ch : key) {
      auto c = static_cast<unsigned char>(ch);
      if (c <= 0x20 || c >= 0x7f || c == ':') {
        return {ErrorCode::ArgumentInvalid,
                "NATS header name '" + key + "' must be printable ASCII without ':' or spaces"};
      }
    }
    if (value.find_first_of("\r\n") != std::string::npos) {
      return {ErrorCode::ArgumentInvalid,
              "NATS header '" + key + "' has a line break in its value"};
    }
  }
  return Status::ok();
}

NatsBus::Message copyMessage(natsMsg* msg) {
  NatsBus::Message m;
  m.subject = natsMsg_GetSubject(msg);
  if (const char* reply = natsMsg_GetReply(msg); reply != nullptr) m.reply = reply;
  const char* data = natsMsg_GetData(msg);
  int length = natsMsg_GetDataLength(msg);
  if (data != nullptr && length > 0) m.data.assign(data, static_cast<std::size_t>(length));
  const char** keys = nullptr;
  int key_count = 0;
  if (natsMsgHeader_Keys(msg, &keys, &key_count) == NATS_OK) {
    for (int i = 0; i < key_count; ++i) {
      const char** values = nullptr;
      int value_count = 0;
      if (natsMsgHeader_Values(msg, keys[i], &values, &value_count) != NATS_OK) continue;
      for (int j = 0; j < value_count; ++j) m.headers.emplace(keys[i], values[j]);
      std::free(static_cast<void*>(values));
    }
    std::free(static_cast<void*>(keys));
  }
  return m;
}

std::vector<std::string> splitServers(const std::vector<std::string>& entries) {
  std::vector<std::string> servers;
  for (const auto& entry : entries) {
    std::size_t start = 0;
    while (start <= entry.size()) {
      std::size_t end = entry.find(',', start);
      if (end == std::string::npos) end = entry.size();
      std::string url = entry.substr(start, end - start);
      auto first = url.find_first_not_of(" \t");
      auto last = url.find_last_not_of(" \t");
      if (first != std::string::npos) servers.push_back(url.substr(first, last - first + 1));
      start = end + 1;
    }
  }
  return servers;
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

std::string millis(std::chrono::milliseconds d) { return std::to_string(d.count()) + " ms"; }

}  // namespace

std::optional<std::string_view> NatsBus::Message::header(std::string_view key) const {
  auto it = headers.find(key);
  if (it == headers.end()) return std::nullopt;
  return std::string_view(it->second);
}

bool isNoResponders(const Status& status) {
  return status.code() == ErrorCode::NotFound && status.message().starts_with(kNoResponders);
}

struct NatsBus::Core : std::enable_shared_from_this<NatsBus::Core> {
  // How a request ended, decided on the executor by whoever takes it from `pending`.
  enum class Outcome { Reply, NoResponders, Timeout, LinkLost, Failed };
  using Deadlines = std::multimap<std::chrono::steady_clock::time_point, std::uint64_t>;
  struct Pending {
    ReplyCallback callback;
    std::string subject;
    std::chrono::milliseconds timeout{0};
    Deadlines::iterator deadline;  // deadlines.end() once the timer has fired
  };

  Core(Executor exec, ConnectionObserver obs, std::string servers)
      : executor(std::move(exec)), observer(std::move(obs)), servers_text(std::move(servers)) {}
  ~Core() { IOTHUB_CHECK(!timer.joinable(), "NatsBus core destroyed without shutdown()"); }

  const Executor executor;
  const ConnectionObserver observer;
  const std::string servers_text;  // for error messages
  natsOptions* options = nullptr;
  natsConnection* conn = nullptr;
  natsSubscription* reply_sub = nullptr;
  std::string inbox;  // replies arrive on "<inbox>.<request id>"

  CallbackGate gate;  // reply callbacks and the observer
  std::atomic<bool> closing{false};

  std::atomic<std::uint64_t> published{0}, received{0}, requests{0}, replies{0}, timeouts{0},
      no_responders{0}, disconnects{0}, reconnects{0}, async_errors{0};

  mutable std::mutex mutex;
  std::condition_variable changed;                     // library_refs, closed_seen, connected_once
  std::condition_variable timer_wake;                  // deadlines, timer_stop
  std::unordered_map<std::uint64_t, Pending> pending;  // guarded by mutex
  Deadlines deadlines;                                 // guarded by mutex
  std::uint64_t next_request_id = 1;                   // guarded by mutex
  std::unordered_map<std::uint64_t, std::weak_ptr<Subscription::State>> subs;  // guarded by mutex
  std::uint64_t next_sub_id = 1;                                               // guarded by mutex
  int library_refs = 0;         // subscriptions whose on-complete is still due; guarded by mutex
  bool connected_once = false;  // guarded by mutex
  bool closed_seen = false;     // guarded by mutex
  bool timer_stop = false;      // guarded by mutex
  std::thread timer;

  Status send(std::string_view subject, const std::string& reply, std::string_view data,
              const Headers& headers);
  void request(std::string_view subject, std::string_view data, const Headers& headers,
               std::chrono::milliseconds timeout, ReplyCallback callback);
  void postResolve(std::uint64_t id, Outcome outcome, std::optional<Message> reply = std::nullopt,
                   Status failure = Status::ok());
  void resolve(std::uint64_t id, Outcome outcome, std::optional<Message> reply, Status failure);
  void failAllPending(Outcome outcome, const Status& failure);
  void notify(NatsConnectionEvent event);
  void timerLoop();
  void shutdown();
};

struct NatsSubscription::State {
  std::shared_ptr<NatsBus::Core> core;
  std::uint64_t id = 0;
  NatsBus::MessageHandler handler;
  CallbackGate gate;
  std::mutex mutex;
  natsSubscription* sub = nullptr;  // guarded by mutex; null once closed

  // Stops deliveries; after it returns the handler is not running on another thread and
  // will not be called again.
  void close() {
    natsSubscription* s = nullptr;
    {
      std::lock_guard lock(mutex);
      s = std::exchange(sub, nullptr);
    }
    natsSubscription_Destroy(s);  // unsubscribes unless the connection already closed it
    gate.close();
  }
};

namespace {

using Core = NatsBus::Core;
using SubState = NatsBus::Subscription::State;

// Library callbacks. They run on libnats threads: copy, post, return.

void onMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  const auto& state = *static_cast<std::shared_ptr<SubState>*>(closure);
  NatsBus::Message m = copyMessage(msg);
  natsMsg_Destroy(msg);
  state->core->received.fetch_add(1, std::memory_order_relaxed);
  state->core->executor([state, m = std::move(m)]() mutable {
    state->gate.run([&] { state->handler(std::move(m)); });
  });
}

void onSubscriptionComplete(void* closure) {
  auto* holder = static_cast<std::shared_ptr<SubState>*>(closure);
  std::shared_ptr<Core> core = (*holder)->core;  // keeps the core alive past the notify
  delete holder;
  std::lock_guard lock(core->mutex);
  --core->library_refs;
  core->changed.notify_all();
}

void onReply(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* core = static_cast<Core*>(closure);
  std::string_view subject = natsMsg_GetSubject(msg);
  std::uint64_t id = 0;
  std::string_view tail = subject.substr(subject.rfind('.') + 1);
  auto [end, ec] = std::from_chars(tail.data(), tail.data() + tail.size(), id);
  bool parsed = ec == std::errc() && end == tail.data() + tail.size();
  bool no_responders = natsMsg_IsNoResponders(msg);
  std::optional<NatsBus::Message> reply;
  if (parsed && !no_responders) reply = copyMessage(msg);
  natsMsg_Destroy(msg);
  if (!parsed) return;
  core->postResolve(id, no_responders ? Core::Outcome::NoResponders : Core::Outcome::Reply,
                    std::move(reply));
}

void onReplySubscriptionComplete(void* closure) {
  auto core = static_cast<Core*>(closure)->shared_from_this();
  std::lock_guard lock(core->mutex);
  --core->library_refs;
  core->changed.notify_all();
}

void onConnected(natsConnection*, void* closure) {
  auto* core = static_cast<Core*>(closure);
  std::lock_guard lock(core->mutex);
  core->connected_once = true;
  core->changed.notify_all();
}

void onDisconnected(natsConnection*, void* closure) {
  auto* core = static_cast<Core*>(closure);
  if (core->closing.load()) return;
  core->disconnects.fetch_add(1, std::memory_order_relaxed);
  // Replies to requests sent before the drop would come to an inbox the servers forgot.
  core->failAllPending(Core::Outcome::LinkLost, Status::ok());
  core->notify(NatsConnectionEvent::Disconnected);
}

void onReconnected(natsConnection*, void* closure) {
  auto* core = static_cast<Core*>(closure);
  if (core->closing.load()) return;
  core->reconnects.fetch_add(1, std::memory_order_relaxed);
  core->notify(NatsConnectionEvent::Reconnected);
}

void onClosed(natsConnection*, void* closure) {
  // The library's last call for this connection: the destructor waits for closed_seen.
  auto core = static_cast<Core*>(closure)->shared_from_this();
  if (!core->closing.load()) {
    core->failAllPending(Core::Outcome::Failed,
                         {ErrorCode::ServiceUnavailable, "the NATS connection closed"});
    core->notify(NatsConnectionEvent::Closed);
  }
  std::lock_guard lock(core->mutex);
  core->closed_seen = true;
  core->changed.notify_all();
}

void onAsyncError(natsConnection*, natsSubscription* sub, natsStatus err, void* closure) {
  auto* core = static_cast<Core*>(closure);
  core->async_errors.fetch_add(1, std::memory_order_relaxed);
  const char* subject = sub != nullptr ? natsSubscription_GetSubject(sub) : nullptr;
  spdlog::warn("NATS: {} (subscription '{}')", natsStatus_GetText(err),
               subject != nullptr ? subject : "-");
}

}  // namespace

Status NatsBus::Core::send(std::string_view subject, const std::string& reply,
                           std::string_view data, const Headers& headers) {
  std::string what = "publish to NATS subject '" + std::string(subject) + "'";
  if (closing.load()) return {ErrorCode::Cancelled, what + ": the bus is closed"};
  IOTHUB_RETURN_IF_ERROR(checkSubject(subject, /*wildcards=*/false));
  IOTHUB_RETURN_IF_ERROR(checkHeaders(headers));
  std::int64_t max_payload = natsConnection_GetMaxPayload(conn);
  auto too_large = [&] {
    return Status(ErrorCode::MessageTooLarge,
                  what + ": " + std::to_string(data.size()) +
                      " bytes of data (plus headers) exceed the NATS server's max_payload of " +
                      std::to_string(max_payload) + " bytes");
  };
  if (data.size() > static_cast<std::size_t>(INT_MAX) ||
      (max_payload > 0 && static_cast<std::int64_t>(data.size()) > max_payload)) {
    return too_large();
  }
  if (natsConnection_Status(conn) != NATS_CONN_STATUS_CONNECTED) {
    return {ErrorCode::ServiceUnavailable, what + ": not connected to NATS (" + servers_text + ")"};
  }
  std::string subj(subject);
  const char* reply_or_null = reply.empty() ? nullptr : reply.c_str();
  natsStatus s = NATS_OK;
  if (headers.empty()) {
    s = reply_or_null == nullptr
            ? natsConnection_Publish(conn, subj.c_str(), data.data(), static_cast<int>(data.size()))
            : natsConnection_PublishRequest(conn, subj.c_str(), reply_or_null, data.data(),
                                            static_cast<int>(data.size()));
  } else {
    natsMsg* msg = nullptr;
    s = natsMsg_Create(&msg, subj.c_str(), reply_or_null, data.data(),
                       static_cast<int>(data.size()));
    for (auto it = headers.begin(); s == NATS_OK && it != headers.end(); ++it) {
      s = natsMsgHeader_Add(msg, it->first.c_str(), it->second.c_str());
    }
    if (s == NATS_OK) s = natsConnection_PublishMsg(conn, msg);
    natsMsg_Destroy(msg);
  }
  if (s == NATS_MAX_PAYLOAD) return too_large();
  if (s != NATS_OK) return fromNats(s, what);
  published.fetch_add(1, std::memory_order_relaxed);
  return Status::ok();
}

void NatsBus::Core::request(std::string_view subject, std::string_view data, const Headers& headers,
                            std::chrono::milliseconds timeout, ReplyCallback callback) {
  std::uint64_t id = 0;
  {
    std::unique_lock lock(mutex);
    if (closing.load()) {
      lock.unlock();
      callback(Status(ErrorCode::Cancelled, "NATS request to '" + std::string(subject) +
                                                "' not sent: the bus is closed"));
      return;
    }
    id = next_request_id++;
    timeout = std::max(timeout, std::chrono::milliseconds(1));
    auto deadline = deadlines.emplace(std::chrono::steady_clock::now() + timeout, id);
    pending.emplace(id, Pending{std::move(callback), std::string(subject), timeout, deadline});
    if (deadline == deadlines.begin()) timer_wake.notify_one();
  }
  requests.fetch_add(1, std::memory_order_relaxed);
  // Registered before sending, so that even the fastest reply finds its request.
  Status sent = send(subject, inbox + "." + std::to_string(id), data, headers);
  if (!sent.isOk()) postResolve(id, Outcome::Failed, std::nullopt, std::move(sent));
}

void NatsBus::Core::postResolve(std::uint64_t id, Outcome outcome, std::optional<Message> reply,
                                Status failure) {
  executor([self = shared_from_this(), id, outcome, reply = std::move(reply),
            failure = std::move(failure)]() mutable {
    self->resolve(id, outcome, std::move(reply), std::move(failure));
  });
}

void NatsBus::Core::resolve(std::uint64_t id, Outcome outcome, std::optional<Message> reply,
                            Status failure) {
  // Taking the request out of `pending` inside the gate is what makes each callback run
  // exactly once: a reply, the timer, a dropped link and the destructor all race to take it.
  gate.run([&] {
    Pending p;
    {
      std::lock_guard lock(mutex);
      auto it = pending.find(id);
      if (it == pending.end()) return;
      p = std::move(it->second);
      if (p.deadline != deadlines.end()) deadlines.erase(p.deadline);
      pending.erase(it);
    }
    switch (outcome) {
      case Outcome::Reply:
        replies.fetch_add(1, std::memory_order_relaxed);
        p.callback(std::move(*reply));
        return;
      case Outcome::NoResponders:
        no_responders.fetch_add(1, std::memory_order_relaxed);
        p.callback(Status(ErrorCode::NotFound,
                          std::string(kNoResponders) + " on NATS subject '" + p.subject + "'"));
        return;
      case Outcome::Timeout:
        timeouts.fetch_add(1, std::memory_order_relaxed);
        p.callback(Status(ErrorCode::GatewayTimeout, "no reply on NATS subject '" + p.subject +
                                                         "' within " + millis(p.timeout) +
                                                         " (the request may have been delivered)"));
        return;
      case Outcome::LinkLost:
        timeouts.fetch_add(1, std::memory_order_relaxed);
        p.callback(Status(ErrorCode::GatewayTimeout,
                          "connection to NATS lost while waiting for the reply on '" + p.subject +
                              "' (the request may have been delivered)"));
        return;
      case Outcome::Failed:
        p.callback(std::move(failure));
        return;
    }
  });
}

void NatsBus::Core::failAllPending(Outcome outcome, const Status& failure) {
  std::vector<std::uint64_t> ids;
  {
    std::lock_guard lock(mutex);
    ids.reserve(pending.size());
    for (const auto& entry : pending) ids.push_back(entry.first);
  }
  for (auto id : ids) postResolve(id, outcome, std::nullopt, failure);
}

void NatsBus::Core::notify(NatsConnectionEvent event) {
  if (!observer) return;
  executor([self = shared_from_this(), event] { self->gate.run([&] { self->observer(event); }); });
}

void NatsBus::Core::timerLoop() {
  std::unique_lock lock(mutex);
  while (!timer_stop) {
    if (deadlines.empty()) {
      timer_wake.wait(lock);
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    if (auto next = deadlines.begin()->first; next > now) {
      timer_wake.wait_until(lock, next);  // a copy: the node may be erased meanwhile
      continue;
    }
    std::vector<std::uint64_t> expired;
    while (!deadlines.empty() && deadlines.begin()->first <= now) {
      auto first = deadlines.begin();
      if (auto it = pending.find(first->second); it != pending.end()) {
        it->second.deadline = deadlines.end();
      }
      expired.push_back(first->second);
      deadlines.erase(first);
    }
    lock.unlock();
    for (auto id : expired) postResolve(id, Outcome::Timeout);
    lock.lock();
  }
}

void NatsBus::Core::shutdown() {
  if (closing.exchange(true)) return;
  std::vector<Pending> cancelled;
  {
    std::lock_guard lock(mutex);
    for (auto& entry : pending) cancelled.push_back(std::move(entry.second));
    pending.clear();
    deadlines.clear();
    timer_stop = true;
    timer_wake.notify_all();
  }
  if (timer.joinable()) timer.join();
  // Flushes what was published (up to 0.5 s), closes every subscription and joins the
  // connection's reader and flusher threads; the closed callback follows on another thread.
  natsConnection_Close(conn);
  for (auto& p : cancelled) {
    gate.run([&] {
      p.callback(Status(ErrorCode::Cancelled,
                        "NATS bus closed before the reply on '" + p.subject + "' arrived"));
    });
  }
  gate.close();
  std::vector<std::shared_ptr<Subscription::State>> live;
  {
    std::lock_guard lock(mutex);
    for (auto& entry : subs) {
      if (auto state = entry.second.lock()) live.push_back(std::move(state));
    }
    subs.clear();
  }
  for (auto& state : live) state->close();
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return library_refs == 0 && (conn == nullptr || closed_seen); });
  }
  natsSubscription_Destroy(reply_sub);
  reply_sub = nullptr;
  natsConnection_Destroy(conn);
  conn = nullptr;
  natsOptions_Destroy(options);
  options = nullptr;
}

Result<std::unique_ptr<NatsBus>> NatsBus::connect(NatsOptions o, Executor executor,
                                                  ConnectionObserver observer) {
  if (!executor) return Status(ErrorCode::ArgumentInvalid, "NatsBus needs an executor");
  std::vector<std::string> servers = splitServers(o.servers);
  if (servers.empty()) return Status(ErrorCode::ArgumentInvalid, "no NATS server URL given");
  for (const auto& url : servers) {
    if (url.find_first_of(" \t\r\n") != std::string::npos) {
      return Status(ErrorCode::ArgumentInvalid, "invalid NATS server URL '" + url + "'");
    }
  }
  if (o.ping_interval.count() <= 0 || o.max_pings_out < 1 || o.reconnect_wait.count() < 0 ||
      o.reconnect_jitter.count() < 0 || o.connect_timeout.count() <= 0 ||
      o.initial_connect_timeout.count() < 0 || o.reconnect_buffer_bytes < 0) {
    return Status(ErrorCode::ArgumentInvalid,
                  "NATS options out of range (intervals and timeouts must be positive, "
                  "max_pings_out at least 1)");
  }
  std::string servers_text = joined(servers);
  auto core = std::make_shared<Core>(std::move(executor), std::move(observer), servers_text);

  natsStatus s = natsOptions_Create(&core->options);
  if (s != NATS_OK) return fromNats(s, "create NATS options");
  natsOptions* opts = core->options;
  std::vector<const char*> urls;
  for (const auto& url : servers) urls.push_back(url.c_str());
  s = natsOptions_SetServers(opts, urls.data(), static_cast<int>(urls.size()));
  if (s != NATS_OK) {
    Status error(ErrorCode::ArgumentInvalid,
                 "invalid NATS server URL in '" + servers_text + "': " + errorText(s));
    natsOptions_Destroy(opts);
    core->options = nullptr;
    return error;
  }
  Core* raw = core.get();
  bool retry = o.initial_connect_timeout.count() > 0;
  for (natsStatus step : {
           natsOptions_SetName(opts, o.name.empty() ? nullptr : o.name.c_str()),
           natsOptions_SetNoRandomize(opts, !o.randomize_servers),
           natsOptions_SetTimeout(opts, o.connect_timeout.count()),
           natsOptions_SetPingInterval(opts, o.ping_interval.count()),
           natsOptions_SetMaxPingsOut(opts, o.max_pings_out),
           natsOptions_SetAllowReconnect(opts, true),
           natsOptions_SetMaxReconnect(opts, -1),
           natsOptions_SetReconnectWait(opts, o.reconnect_wait.count()),
           natsOptions_SetReconnectJitter(opts, o.reconnect_jitter.count(),
                                          o.reconnect_jitter.count()),
           natsOptions_SetReconnectBufSize(opts, o.reconnect_buffer_bytes),
           natsOptions_SetNoEcho(opts, true),
           natsOptions_SetSendAsap(opts, o.send_asap),
           natsOptions_UseGlobalMessageDelivery(opts, true),
           natsOptions_SetDisconnectedCB(opts, onDisconnected, raw),
           natsOptions_SetReconnectedCB(opts, onReconnected, raw),
           natsOptions_SetClosedCB(opts, onClosed, raw),
           natsOptions_SetErrorHandler(opts, onAsyncError, raw),
           natsOptions_SetRetryOnFailedConnect(opts, retry, retry ? onConnected : nullptr,
                                               retry ? raw : nullptr),
       }) {
    if (step != NATS_OK) {
      Status error = fromNats(step, "configure the NATS connection");
      natsOptions_Destroy(opts);
      core->options = nullptr;
      return error;
    }
  }

  s = natsConnection_Connect(&core->conn, opts);
  if (s == NATS_NOT_YET_CONNECTED) {
    std::unique_lock lock(core->mutex);
    core->changed.wait_for(lock, o.initial_connect_timeout, [&] { return core->connected_once; });
    if (core->connected_once) s = NATS_OK;
  }
  if (s == NATS_INVALID_ARG) {
    Status error(ErrorCode::ArgumentInvalid,
                 "invalid NATS server URL in '" + servers_text + "': " + errorText(s));
    core->shutdown();
    return error;
  }
  if (s != NATS_OK) {
    std::string detail = s == NATS_NOT_YET_CONNECTED
                             ? "no server answered within " + millis(o.initial_connect_timeout)
                             : errorText(s);
    core->shutdown();
    return Status(ErrorCode::ServiceUnavailable,
                  "cannot connect to NATS at " + servers_text + ": " + detail);
  }

  natsInbox* inbox = nullptr;
  s = natsInbox_Create(&inbox);
  if (s == NATS_OK) {
    core->inbox = inbox;
    natsInbox_Destroy(inbox);
    std::lock_guard lock(core->mutex);
    ++core->library_refs;
  }
  if (s == NATS_OK) {
    s = natsConnection_Subscribe(&core->reply_sub, core->conn, (core->inbox + ".*").c_str(),
                                 onReply, raw);
    if (s != NATS_OK) {
      std::lock_guard lock(core->mutex);
      --core->library_refs;
    } else if (natsSubscription_SetOnCompleteCB(core->reply_sub, onReplySubscriptionComplete,
                                                raw) != NATS_OK) {
      keepForever(core);  // see keepForever(): the library may still hold `raw`
      std::lock_guard lock(core->mutex);
      --core->library_refs;
      s = NATS_CONNECTION_CLOSED;
    }
  }
  if (s != NATS_OK) {
    Status error = fromNats(s, "subscribe to the NATS reply inbox");
    core->shutdown();
    return error;
  }
  core->timer = std::thread([raw] { raw->timerLoop(); });
  return std::unique_ptr<NatsBus>(new NatsBus(std::move(core)));
}

NatsBus::NatsBus(std::shared_ptr<Core> core) : core_(std::move(core)) {}

NatsBus::~NatsBus() { core_->shutdown(); }

Status NatsBus::publish(std::string_view subject, std::string_view data, const Headers& headers) {
  return core_->send(subject, {}, data, headers);
}

Result<NatsBus::Subscription> NatsBus::subscribe(std::string_view subject,
                                                 std::string_view queue_group,
                                                 MessageHandler handler) {
  std::string what = "subscribe to NATS subject '" + std::string(subject) + "'";
  if (core_->closing.load()) return Status(ErrorCode::Cancelled, what + ": the bus is closed");
  IOTHUB_RETURN_IF_ERROR(checkSubject(subject, /*wildcards=*/true));
  if (queue_group.find_first_of(" \t\r\n") != std::string_view::npos) {
    return Status(ErrorCode::ArgumentInvalid,
                  what + ": queue group '" + std::string(queue_group) + "' contains whitespace");
  }
  if (!handler) return Status(ErrorCode::ArgumentInvalid, what + ": no handler");

  auto state = std::make_shared<Subscription::State>();
  state->core = core_;
  state->handler = std::move(handler);
  {
    std::lock_guard lock(core_->mutex);
    state->id = core_->next_sub_id++;
    core_->subs.emplace(state->id, state);
    ++core_->library_refs;
  }
  auto* closure = new std::shared_ptr<Subscription::State>(state);
  auto forget = [&] {
    std::lock_guard lock(core_->mutex);
    core_->subs.erase(state->id);
    --core_->library_refs;
    core_->changed.notify_all();
  };
  std::string subj(subject), queue(queue_group);
  natsSubscription* sub = nullptr;
  natsStatus s = queue.empty()
                     ? natsConnection_Subscribe(&sub, core_->conn, subj.c_str(), onMessage, closure)
                     : natsConnection_QueueSubscribe(&sub, core_->conn, subj.c_str(), queue.c_str(),
                                                     onMessage, closure);
  if (s != NATS_OK) {
    delete closure;  // never reached the library
    forget();
    return fromNats(s, what);
  }
  if (natsSubscription_SetOnCompleteCB(sub, onSubscriptionComplete, closure) != NATS_OK) {
    natsSubscription_Destroy(sub);
    keepForever(std::shared_ptr<void>(closure));
    forget();
    return Status(ErrorCode::ServiceUnavailable, what + ": the NATS connection is closed");
  }
  {
    std::lock_guard lock(state->mutex);
    state->sub = sub;
  }
  return Subscription(std::move(state));
}

void NatsSubscription::reset() {
  if (!state_) return;
  state_->close();
  {
    std::lock_guard lock(state_->core->mutex);
    state_->core->subs.erase(state_->id);
  }
  state_.reset();
}

void NatsBus::request(std::string_view subject, std::string_view data, const Headers& headers,
                      std::chrono::milliseconds timeout, ReplyCallback callback) {
  core_->request(subject, data, headers, timeout, std::move(callback));
}

Status NatsBus::respond(const Message& request, std::string_view data, const Headers& headers) {
  if (request.reply.empty()) {
    return {ErrorCode::ArgumentInvalid,
            "NATS message on '" + request.subject + "' has no reply subject to respond to"};
  }
  return core_->send(request.reply, {}, data, headers);
}

Status NatsBus::flush(std::chrono::milliseconds timeout) {
  if (core_->closing.load()) return {ErrorCode::Cancelled, "NATS flush: the bus is closed"};
  if (!connected()) {
    return {ErrorCode::ServiceUnavailable,
            "NATS flush: not connected to NATS (" + core_->servers_text + ")"};
  }
  natsStatus s =
      natsConnection_FlushTimeout(core_->conn, std::max<std::int64_t>(timeout.count(), 1));
  if (s == NATS_TIMEOUT) {
    return {ErrorCode::GatewayTimeout,
            "NATS flush: no answer from the server within " + millis(timeout)};
  }
  return fromNats(s, "NATS flush");
}

bool NatsBus::connected() const {
  return !core_->closing.load() && natsConnection_Status(core_->conn) == NATS_CONN_STATUS_CONNECTED;
}

std::string NatsBus::connectedUrl() const {
  char buffer[512] = {};
  if (natsConnection_GetConnectedUrl(core_->conn, buffer, sizeof buffer) != NATS_OK) return {};
  return buffer;
}

std::int64_t NatsBus::maxPayload() const { return natsConnection_GetMaxPayload(core_->conn); }

NatsBusCounters NatsBus::counters() const {
  const Core& c = *core_;
  auto get = [](const std::atomic<std::uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  return {.published = get(c.published),
          .received = get(c.received),
          .requests = get(c.requests),
          .replies = get(c.replies),
          .timeouts = get(c.timeouts),
          .no_responders = get(c.no_responders),
          .disconnects = get(c.disconnects),
          .reconnects = get(c.reconnects),
          .async_errors = get(c.async_errors)};
}

std::size_t NatsBus::pendingRequests() const {
  std::lock_guard lock(core_->mutex);
  return core_->pending.size();
}

void NatsBus::releaseThreadMemory() { nats_ReleaseThreadMemory(); }

}  // namespace iothub::routing
