// The AMQP connection core: Proton's connection_driver plus the $cbs node and the attach gate
// (docs/amqp.md). Everything Proton stays in this translation unit.
#include "amqp/server_connection.hpp"

#include <proton/codec.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <exception>
#include <proton/annotation_key.hpp>
#include <proton/binary.hpp>
#include <proton/codec/map.hpp>
#include <proton/codec/vector.hpp>
#include <proton/connection.hpp>
#include <proton/connection_options.hpp>
#include <proton/delivery.hpp>
#include <proton/error_condition.hpp>
#include <proton/io/connection_driver.hpp>
#include <proton/message.hpp>
#include <proton/message_id.hpp>
#include <proton/messaging_handler.hpp>
#include <proton/receiver.hpp>
#include <proton/receiver_options.hpp>
#include <proton/scalar.hpp>
#include <proton/sender.hpp>
#include <proton/sender_options.hpp>
#include <proton/session.hpp>
#include <proton/source.hpp>
#include <proton/symbol.hpp>
#include <proton/target.hpp>
#include <proton/timestamp.hpp>
#include <proton/tracker.hpp>
#include <proton/transport.hpp>
#include <proton/uuid.hpp>
#include <proton/value.hpp>
#include <set>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>

namespace iothub::amqp {

bool covers(const Claim& claim, std::string_view address) {
  for (const std::string& scope : claim.scopes) {
    if (scope == "*" || scope == address) return true;
    if (!scope.empty() && scope.back() == '/' && address.starts_with(scope)) return true;
  }
  return false;
}

namespace {

constexpr std::string_view kCbsNode = "$cbs";

// Proton's C++ API has no rejected-with-error and no null terminus; both need the C object
// under the wrapper. object<T>::pn_object() is protected: a pointer to it formed through a
// derived class reaches it without touching Proton's private headers.
struct LinkAccess : proton::link {
  explicit LinkAccess(const proton::link& l) : proton::link(l) {}
  pn_link_t* get() const { return pn_object(); }
};
struct DeliveryAccess : proton::delivery {
  explicit DeliveryAccess(const proton::delivery& d) : proton::delivery(d) {}
  pn_delivery_t* get() const { return pn_object(); }
};
struct TransportAccess : proton::transport {
  explicit TransportAccess(const proton::transport& t) : proton::transport(t) {}
  pn_transport_t* get() const { return pn_object(); }
};
struct ConnectionAccess : proton::connection {
  explicit ConnectionAccess(const proton::connection& c) : proton::connection(c) {}
  pn_connection_t* get() const { return pn_object(); }
};
pn_link_t* rawLink(const proton::link& l) { return LinkAccess(l).get(); }
pn_delivery_t* rawDelivery(const proton::delivery& d) { return DeliveryAccess(d).get(); }

std::string scalarText(const proton::scalar& s) {
  switch (s.type()) {
    case proton::STRING:
      return proton::get<std::string>(s);
    case proton::SYMBOL:
      return std::string(proton::get<proton::symbol>(s));
    case proton::BINARY: {
      proton::binary b = proton::get<proton::binary>(s);
      return std::string(b.begin(), b.end());
    }
    case proton::UUID:
      return proton::get<proton::uuid>(s).str();
    default:
      return proton::to_string(s);
  }
}

std::optional<std::string> idText(const proton::message_id& id) {
  switch (id.type()) {
    case proton::NULL_TYPE:
      return std::nullopt;
    case proton::STRING:
      return proton::get<std::string>(id);
    case proton::UUID:
      return proton::get<proton::uuid>(id).str();
    case proton::ULONG:
      return std::to_string(proton::get<std::uint64_t>(id));
    case proton::BINARY: {
      proton::binary b = proton::get<proton::binary>(id);
      return std::string(b.begin(), b.end());
    }
    default:
      return proton::to_string(id);
  }
}

std::optional<std::string> nonEmpty(std::string s) {
  if (s.empty()) return std::nullopt;
  return s;
}

std::string bodyText(const proton::value& body) {
  switch (body.type()) {
    case proton::NULL_TYPE:
      return {};
    case proton::BINARY: {
      proton::binary b = proton::get<proton::binary>(body);
      return std::string(b.begin(), b.end());
    }
    case proton::STRING:
      return proton::get<std::string>(body);
    case proton::SYMBOL:
      return std::string(proton::get<proton::symbol>(body));
    default:
      return proton::to_string(body);
  }
}

Message toMessage(const proton::message& m) {
  Message out;
  out.message_id = idText(m.id());
  out.correlation_id = idText(m.correlation_id());
  out.to = nonEmpty(m.to());
  out.reply_to = nonEmpty(m.reply_to());
  out.content_type = nonEmpty(m.content_type());
  out.content_encoding = nonEmpty(m.content_encoding());
  out.user_id = nonEmpty(m.user());
  if (m.expiry_time().milliseconds() != 0)
    out.absolute_expiry_time_ms = m.expiry_time().milliseconds();
  if (!m.properties().empty()) {
    std::map<std::string, proton::scalar> props;
    proton::get(m.properties().value(), props);
    for (auto& [k, v] : props) out.application_properties[k] = scalarText(v);
  }
  if (!m.message_annotations().empty()) {
    std::map<proton::annotation_key, proton::value> annotations;
    proton::get(m.message_annotations().value(), annotations);
    for (auto& [k, v] : annotations) {
      std::string key = k.type() == proton::SYMBOL ? std::string(proton::get<proton::symbol>(k))
                                                   : proton::to_string(k);
      out.message_annotations[key] = bodyText(v);
    }
  }
  out.body = bodyText(m.body());
  return out;
}

// A typed value as Proton encodes it (timestamps as AMQP timestamps, vectors as arrays).
proton::value protonValue(const Value& v) {
  return std::visit(
      [](const auto& x) -> proton::value {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Timestamp>) {
          return proton::timestamp(x.ms);
        } else {
          return proton::value(x);
        }
      },
      v);
}

// The same, for places that take scalars only (application properties): an array of
// strings is sent as its elements joined by commas.
proton::scalar protonScalar(const Value& v) {
  return std::visit(
      [](const auto& x) -> proton::scalar {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Timestamp>) {
          return proton::timestamp(x.ms);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::string joined;
          for (const auto& item : x) joined += (joined.empty() ? "" : ",") + item;
          return joined;
        } else {
          return proton::scalar(x);
        }
      },
      v);
}

// The client's source filters: name → value text (a described value's described string).
std::map<std::string, std::string> sourceFilters(pn_link_t* link) {
  std::map<std::string, std::string> out;
  pn_data_t* data = pn_terminus_filter(pn_link_remote_source(link));
  if (data == nullptr) return out;
  pn_data_rewind(data);
  if (!pn_data_next(data) || pn_data_type(data) != PN_MAP) return out;
  pn_data_enter(data);
  while (pn_data_next(data)) {
    std::string key;
    if (pn_data_type(data) == PN_SYMBOL || pn_data_type(data) == PN_STRING) {
      pn_bytes_t b =
          pn_data_type(data) == PN_SYMBOL ? pn_data_get_symbol(data) : pn_data_get_string(data);
      key.assign(b.start, b.size);
    }
    if (!pn_data_next(data)) break;  // a key without a value
    std::string value;
    bool described = pn_data_type(data) == PN_DESCRIBED;
    if (described) {
      pn_data_enter(data);
      pn_data_next(data);  // the descriptor
      pn_data_next(data);  // the described value
    }
    if (pn_data_type(data) == PN_STRING || pn_data_type(data) == PN_SYMBOL) {
      pn_bytes_t b =
          pn_data_type(data) == PN_STRING ? pn_data_get_string(data) : pn_data_get_symbol(data);
      value.assign(b.start, b.size);
    }
    if (described) pn_data_exit(data);
    if (!key.empty()) out[key] = value;
  }
  pn_data_exit(data);
  return out;
}

proton::message fromMessage(const Message& in) {
  proton::message m;
  if (in.message_id) m.id(*in.message_id);
  if (in.correlation_id) m.correlation_id(*in.correlation_id);
  if (in.to) m.to(*in.to);
  if (in.reply_to) m.reply_to(*in.reply_to);
  if (in.content_type) m.content_type(*in.content_type);
  if (in.content_encoding) m.content_encoding(*in.content_encoding);
  if (in.user_id) m.user(*in.user_id);
  if (in.absolute_expiry_time_ms) m.expiry_time(proton::timestamp(*in.absolute_expiry_time_ms));
  for (auto& [k, v] : in.application_properties) m.properties().put(k, v);
  for (auto& [k, v] : in.typed_application_properties) m.properties().put(k, protonScalar(v));
  for (auto& [k, v] : in.message_annotations)
    m.message_annotations().put(proton::annotation_key(proton::symbol(k)), proton::value(v));
  for (auto& [k, v] : in.typed_message_annotations)
    m.message_annotations().put(proton::annotation_key(proton::symbol(k)), protonValue(v));
  if (in.value_body) {
    std::map<std::string, proton::value> map;
    for (auto& [k, v] : *in.value_body) map[k] = protonValue(v);
    m.body(map);
    m.inferred(false);  // an amqp-value section holding the map
    return m;
  }
  m.body(proton::binary(in.body.begin(), in.body.end()));
  m.inferred(true);  // one data section: the raw bytes
  return m;
}

std::string linkAddress(proton::link& l, LinkRole role) {
  // Proton hands out the remote terminus on incoming links (messaging_adapter copies it).
  if (role == LinkRole::Sender) return static_cast<proton::receiver&>(l).target().address();
  return static_cast<proton::sender&>(l).source().address();
}

// Reads just enough of AMQP's type encoding to find a few fields of a performative.
class TypeReader {
 public:
  explicit TypeReader(std::span<const std::uint8_t> bytes) : b_(bytes) {}
  bool ok() const { return ok_; }

  // The descriptor code of a described list (0x00, then smallulong or ulong), and the
  // number of its fields; nullopt if it is not one.
  std::optional<std::uint64_t> performative(std::uint32_t& fields) {
    if (u8() != 0x00) return fail();
    std::uint64_t code = 0;
    switch (u8()) {
      case 0x53:
        code = u8();
        break;
      case 0x80:
        for (int i = 0; i < 8; ++i) code = (code << 8) | u8();
        break;
      default:
        return fail();
    }
    switch (u8()) {
      case 0x45:
        fields = 0;
        break;
      case 0xc0:
        u8();
        fields = u8();
        break;
      case 0xd0:
        u32();
        fields = u32();
        break;
      default:
        return fail();
    }
    if (!ok_) return std::nullopt;
    return code;
  }

  // A uint field: its value, or nullopt when null or of another type (as Proton reads it).
  std::optional<std::uint32_t> uintField() {
    std::uint8_t c = u8();
    if (c == 0x43) return 0u;
    if (c == 0x52) return u8();
    if (c == 0x70) return u32();
    --p_;
    skip(0);
    return std::nullopt;
  }

  // A boolean field: true only when encoded as boolean true.
  bool boolField() {
    std::uint8_t c = u8();
    if (c == 0x41) return true;
    if (c == 0x56) return u8() == 1;
    --p_;
    skip(0);
    return false;
  }

  // Skips one value of any type.
  void skip(int depth) {
    if (depth > 8) {
      ok_ = false;
      return;
    }
    std::uint8_t c = u8();
    if (!ok_) return;
    if (c == 0x00) {  // described: descriptor, then value
      skip(depth + 1);
      skip(depth + 1);
      return;
    }
    switch (c >> 4) {
      case 0x4:
        return;
      case 0x5:
        return advance(1);
      case 0x6:
        return advance(2);
      case 0x7:
        return advance(4);
      case 0x8:
        return advance(8);
      case 0x9:
        return advance(16);
      case 0xa:
      case 0xc:
      case 0xe:
        return advance(u8());
      case 0xb:
      case 0xd:
      case 0xf:
        return advance(u32());
      default:
        ok_ = false;
    }
  }

 private:
  std::nullopt_t fail() {
    ok_ = false;
    return std::nullopt;
  }
  std::uint8_t u8() {
    if (!ok_ || p_ >= b_.size()) {
      ok_ = false;
      return 0;
    }
    return b_[p_++];
  }
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | u8();
    return v;
  }
  void advance(std::size_t n) {
    if (!ok_ || b_.size() - p_ < n) {
      ok_ = false;
      return;
    }
    p_ += n;
  }

  std::span<const std::uint8_t> b_;
  std::size_t p_ = 0;
  bool ok_ = true;
};

// Follows the frames of the input (protocol headers, then size-prefixed frames) for the
// inputs Proton 0.37 mishandles, and stops them before Proton sees a whole such frame:
// - a SASL frame after the AMQP header: Proton processes it, and a repeated sasl-init leaks
//   its fields;
// - the first transfer frame of a multi-frame delivery (`more` set) without a delivery-id:
//   Proton aborts the process on an assert (Debian builds Proton with assertions on).
// Both were found by the fuzz target. Everything else is Proton's to judge.
class FrameGuard {
 public:
  // How many leading bytes of `in` may go to Proton: all of them, or fewer when a frame
  // is refused (then reason() says why; the refused frame never reaches Proton whole).
  std::size_t scan(std::span<const std::uint8_t> in) {
    std::size_t i = 0;
    while (i < in.size() && reason_.empty() && !off_) {
      if (remaining_ == 0) {
        head_[have_++] = in[i++];
        if (have_ < head_.size()) continue;
        have_ = 0;
        if (std::memcmp(head_.data(), "AMQP", 4) == 0) {  // a protocol header
          if (head_[4] == 0) amqp_ = true;
          continue;
        }
        std::uint32_t size = (std::uint32_t{head_[0]} << 24) | (std::uint32_t{head_[1]} << 16) |
                             (std::uint32_t{head_[2]} << 8) | std::uint32_t{head_[3]};
        std::size_t header = std::size_t{head_[4]} * 4;
        if (size < head_.size() || header < head_.size() || header > size) {
          off_ = true;  // Proton refuses the frame; nothing more to follow
          break;
        }
        if (amqp_ && head_[5] == 1) {  // frame type 1 = SASL
          reason_ = "SASL frame after the AMQP header";
          return i >= head_.size() ? i - head_.size() : 0;
        }
        channel_ = static_cast<std::uint16_t>((head_[6] << 8) | head_[7]);
        inspect_ = amqp_ && head_[5] == 0;
        extended_ = header - head_.size();
        remaining_ = size - head_.size();
        body_.clear();
        continue;
      }
      std::size_t k = std::min(remaining_, in.size() - i);
      if (inspect_) {
        for (std::size_t j = 0; j < k; ++j) {
          if (extended_ > 0) {
            --extended_;
          } else if (body_.size() < kPeek) {
            body_.push_back(in[i + j]);
          }
        }
      }
      i += k;
      remaining_ -= k;
      if (remaining_ == 0 && inspect_ && !body_.empty() && !inspect()) {
        return i - 1;  // all but the frame's last byte: Proton never processes it
      }
    }
    return in.size();
  }

  const std::string& reason() const { return reason_; }

 private:
  static constexpr std::size_t kPeek = 1024;  // performatives that matter are far smaller

  // False (and reason_ set) for a frame Proton must not see.
  bool inspect() {
    TypeReader r(body_);
    std::uint32_t fields = 0;
    std::optional<std::uint64_t> code = r.performative(fields);
    if (code == 0x14) {  // transfer
      std::optional<std::uint32_t> handle = fields > 0 ? r.uintField() : std::nullopt;
      std::optional<std::uint32_t> id = fields > 1 ? r.uintField() : std::nullopt;
      for (std::uint32_t f = 2; f < 5 && f < fields; ++f) r.skip(0);
      bool more = fields > 5 && r.boolField();
      for (std::uint32_t f = 6; f < 9 && f < fields; ++f) r.skip(0);
      bool aborted = fields > 9 && r.boolField();
      if (!r.ok() || !handle) {
        reason_ = "malformed transfer";
        return false;
      }
      auto key = std::pair{channel_, *handle};
      bool in_progress = multi_frame_.contains(key);
      if (more && !id && !in_progress) {
        reason_ = "first transfer of a multi-frame delivery without a delivery-id";
        return false;
      }
      if (more && !aborted) {
        multi_frame_.insert(key);
      } else {
        multi_frame_.erase(key);
      }
      if (multi_frame_.size() > 4096) multi_frame_.clear();  // stricter, never laxer
      return true;
    }
    if (code == 0x12 || code == 0x16) {  // attach (handle is field 1) or detach (field 0)
      if (code == 0x12 && fields > 0) r.skip(0);
      std::optional<std::uint32_t> handle =
          r.ok() && fields > (code == 0x12 ? 1u : 0u) ? r.uintField() : std::nullopt;
      if (r.ok() && handle) {
        multi_frame_.erase(std::pair{channel_, *handle});
      } else {
        forgetChannel();
      }
      return true;
    }
    if (code == 0x11 || code == 0x17 || !r.ok()) forgetChannel();  // begin, end, unreadable
    return true;
  }

  void forgetChannel() {
    std::erase_if(multi_frame_, [&](const auto& key) { return key.first == channel_; });
  }

  std::array<std::uint8_t, 8> head_{};
  std::size_t have_ = 0;
  std::size_t remaining_ = 0;  // bytes of the current frame still to come
  std::size_t extended_ = 0;   // extended-header bytes still to skip
  std::uint16_t channel_ = 0;
  bool inspect_ = false;
  std::vector<std::uint8_t> body_;
  bool amqp_ = false;
  bool off_ = false;
  std::string reason_;
  // (channel, handle) of links in the middle of a multi-frame delivery, as Proton tracks it.
  std::set<std::pair<std::uint16_t, std::uint32_t>> multi_frame_;
};

}  // namespace

struct ServerConnection::Impl : proton::messaging_handler {
  struct LinkState {
    LinkId id = 0;
    LinkRole role = LinkRole::Sender;
    std::string address;
    bool cbs = false;
    proton::receiver receiver;  // role Sender: the hub's end of a client sender
    proton::sender sender;      // role Receiver: the hub's end of a client receiver
  };

  Impl(ServerConnectionOptions o, Authenticator& a, LinkHandler& h)
      : options(std::move(o)), authenticator(a), handler(h), driver(options.container_id) {
    proton::connection_options opts(*this);
    opts.container_id(options.container_id)
        .max_frame_size(options.max_frame_size)
        .max_sessions(options.max_sessions)
        .idle_timeout(proton::duration(options.idle_timeout.count()));
    if (options.sasl_mechanisms.empty()) {
      opts.sasl_enabled(false);
    } else {
      opts.sasl_enabled(true).sasl_allowed_mechs(options.sasl_mechanisms);
    }
    driver.accept(opts);
    dispatch();
  }

  ServerConnectionOptions options;
  Authenticator& authenticator;
  LinkHandler& handler;
  proton::io::connection_driver driver;
  bool active = true;
  std::optional<ErrorCondition> failure;
  ConnectionStats stats;
  Clock::time_point now = Clock::time_point::min();
  std::vector<Claim> claims;
  LinkId next_id = 1;
  std::map<pn_link_t*, LinkState> links;
  std::map<LinkId, pn_link_t*> by_id;
  // Transfers whose outcome the handler gives later (settle()), by id.
  struct Deferred {
    proton::delivery delivery;
    pn_link_t* link = nullptr;
  };
  std::unordered_map<DeliveryId, Deferred> deferred;
  DeliveryId next_delivery = 1;
  // CBS replies waiting for credit, per $cbs sender link.
  std::map<pn_link_t*, std::deque<proton::message>> cbs_pending;

  void dispatch() {
    try {
      active = driver.dispatch();
    } catch (const std::exception& e) {
      // Proton's decoders throw on values of an unexpected type; such a peer is closed.
      driver.disconnected(proton::error_condition("amqp:internal-error", e.what()));
      active = driver.dispatch();
    }
  }

  // Once Proton stops reading (the peer's Close, EOF, or a framing error), the connection
  // must end. Proton sends Close only if it had sent Open, holds a Close back until the
  // peer's Open arrived or SASL completed, and for some malformed frames closes its input
  // without an error or Close at all, waiting for the application. So: without the peer's
  // Close it is a protocol error and we close (Open+Close when Proton can); in every case the
  // write side is closed once nothing more is queued, so the driver always finishes.
  bool input_stopped = false;
  FrameGuard guard;
  void closeIfInputStopped() {
    if (!active || input_stopped) return;
    pn_transport_t* t = TransportAccess(driver.transport()).get();
    if (pn_transport_capacity(t) >= 0) return;  // still reading
    input_stopped = true;
    abort_when_flushed = true;
    proton::connection c = driver.connection();
    pn_state_t state = pn_connection_state(ConnectionAccess(c).get());
    if (!(state & PN_REMOTE_CLOSED)) {
      proton::error_condition e = driver.transport().error();
      if (e.empty()) {
        e = proton::error_condition("amqp:connection:framing-error", "malformed frame");
      }
      recordError(e);
      if (!(state & PN_REMOTE_UNINIT) && !(state & PN_LOCAL_CLOSED)) c.close(e);
    }
    dispatch();
    abortIfFlushed();
  }

  // Proton buffers a message's transfer frames until it is complete and does not enforce
  // max-message-size: bytes of unfinished messages beyond it end the connection.
  void checkPartialDeliveries() {
    if (!active || input_stopped) return;
    std::size_t buffered = 0;
    for (auto& [raw, state] : links) {
      if (state.role != LinkRole::Sender) continue;
      pn_delivery_t* d = pn_link_current(raw);
      if (d != nullptr && pn_delivery_partial(d)) buffered += pn_delivery_pending(d);
    }
    if (buffered <= options.max_message_size) return;
    proton::error_condition e(
        "amqp:link:message-size-exceeded",
        "a message is larger than " + std::to_string(options.max_message_size) + " bytes");
    recordError(e);
    driver.connection().close(e);
    // Stop reading here, without Proton's read_close: that would replace the condition of
    // our Close with its own "connection aborted".
    input_stopped = true;
    abort_when_flushed = true;
    dispatch();
    abortIfFlushed();
  }

  bool abort_when_flushed = false;
  void abortIfFlushed() {
    if (!abort_when_flushed || !active || driver.write_buffer().size != 0) return;
    driver.write_close();
    driver.read_close();
    dispatch();
  }

  void recordError(const proton::error_condition& e) {
    if (!e.empty() && !failure) failure = ErrorCondition{e.name(), e.description()};
  }

  // --- connection level ------------------------------------------------------------------

  void on_transport_error(proton::transport& t) override { recordError(t.error()); }
  void on_connection_error(proton::connection& c) override { recordError(c.error()); }
  void on_connection_open(proton::connection& c) override {
    if (c.uninitialized()) c.open();
  }
  void on_transport_close(proton::transport&) override { dropAllLinks(); }

  // --- links -----------------------------------------------------------------------------

  std::vector<Claim> claimsFor(std::string_view address) const {
    std::vector<Claim> out;
    for (const Claim& c : claims) {
      if (c.expires > now && covers(c, address)) out.push_back(c);
    }
    return out;
  }

  void refuse(proton::link& l, LinkRole role, const ErrorCondition& error) {
    ++stats.attaches_refused;
    // Spec §2.6.3: a refused link answers with a null terminus on our side, then detaches.
    pn_link_t* raw = rawLink(l);
    pn_terminus_set_type(role == LinkRole::Sender ? pn_link_target(raw) : pn_link_source(raw),
                         PN_UNSPECIFIED);
    l.close(proton::error_condition(error.condition, error.description));
  }

  void onLinkOpen(proton::link& l, LinkRole role) {
    std::string address = linkAddress(l, role);
    bool cbs = address == kCbsNode;
    if (links.size() >= options.max_links) {
      refuse(l, role, {"amqp:resource-limit-exceeded", "too many links on this connection"});
      return;
    }
    LinkState state;
    state.role = role;
    state.address = address;
    state.cbs = cbs;
    if (!cbs) {
      LinkRequest request;
      request.name = l.name();
      request.role = role;
      request.address = address;
      request.claims = claimsFor(address);
      if (request.claims.empty()) {
        refuse(l, role,
               {"amqp:unauthorized-access",
                "put a token on $cbs that covers '" + address + "' first"});
        return;
      }
      for (auto& [k, v] : l.properties()) request.properties[std::string(k)] = bodyText(v);
      if (role == LinkRole::Receiver) request.filters = sourceFilters(rawLink(l));
      request.id = next_id;
      std::optional<ErrorCondition> refusal = handler.onAttach(request);
      if (refusal) {
        refuse(l, role, *refusal);
        return;
      }
    }
    state.id = next_id++;
    if (role == LinkRole::Sender) {
      // Announced only: Proton 0.37 does not enforce it (checkPartialDeliveries does).
      pn_link_set_max_message_size(rawLink(l), options.max_message_size);
      state.receiver = static_cast<proton::receiver&>(l);
      // Credit is granted by hand, one back per settled message: messages whose outcome is
      // deferred count against it, so a client cannot queue unbounded work.
      state.receiver.open(proton::receiver_options().auto_accept(false).credit_window(0));
      state.receiver.add_credit(static_cast<int>(options.link_credit));
    } else {
      state.sender = static_cast<proton::sender&>(l);
      state.sender.open(proton::sender_options().auto_settle(true));
    }
    pn_link_t* raw = rawLink(l);
    by_id[state.id] = raw;
    links[raw] = std::move(state);
  }

  void on_receiver_open(proton::receiver& r) override { onLinkOpen(r, LinkRole::Sender); }
  void on_sender_open(proton::sender& s) override { onLinkOpen(s, LinkRole::Receiver); }

  void onLinkEnd(proton::link& l) {
    auto it = links.find(rawLink(l));
    if (it == links.end()) return;
    LinkState state = std::move(it->second);
    links.erase(it);
    by_id.erase(state.id);
    cbs_pending.erase(rawLink(l));
    std::erase_if(deferred,
                  [raw = rawLink(l)](const auto& entry) { return entry.second.link == raw; });
    if (!state.cbs) handler.onDetach(state.id);
  }
  void on_receiver_close(proton::receiver& r) override { onLinkEnd(r); }
  void on_sender_close(proton::sender& s) override { onLinkEnd(s); }
  void on_receiver_detach(proton::receiver& r) override { onLinkEnd(r); }
  void on_sender_detach(proton::sender& s) override { onLinkEnd(s); }
  void on_receiver_error(proton::receiver& r) override { onLinkEnd(r); }
  void on_sender_error(proton::sender& s) override { onLinkEnd(s); }

  void dropAllLinks() {
    auto remaining = std::move(links);
    links.clear();
    by_id.clear();
    cbs_pending.clear();
    deferred.clear();
    for (auto& [raw, state] : remaining) {
      if (!state.cbs) handler.onDetach(state.id);
    }
  }

  void on_sendable(proton::sender& s) override {
    auto it = links.find(rawLink(s));
    if (it == links.end()) return;
    if (it->second.cbs) {
      flushCbs(s);
    } else {
      handler.onCredit(it->second.id, s.credit());
    }
  }

  // --- messages --------------------------------------------------------------------------

  void on_message(proton::delivery& d, proton::message& m) override {
    proton::receiver r = d.receiver();
    auto it = links.find(rawLink(r));
    if (it == links.end()) {
      d.release();
      return;
    }
    ++stats.messages_received;
    if (it->second.cbs) {
      onPutToken(r, m);
      d.accept();
      r.add_credit(1);
      return;
    }
    Message message = toMessage(m);
    DeliveryId id = next_delivery++;
    Outcome outcome =
        message.body.size() > options.max_message_size
            ? Outcome::rejected(
                  "amqp:link:message-size-exceeded",
                  "larger than " + std::to_string(options.max_message_size) + " bytes")
            : handler.onMessage(it->second.id, id, message);
    if (outcome.kind == Outcome::Kind::Deferred) {
      deferred[id] = Deferred{d, rawLink(r)};
      return;
    }
    finishDelivery(d, outcome);
  }

  // Sends `outcome` for `d` and gives its credit back to the client's sender.
  void finishDelivery(proton::delivery& d, const Outcome& outcome) {
    proton::receiver r = d.receiver();
    switch (outcome.kind) {
      case Outcome::Kind::Deferred:  // not an outcome: the caller's mistake; release it
        d.release();
        break;
      case Outcome::Kind::Accepted:
        d.accept();
        break;
      case Outcome::Kind::Released:
        d.release();
        break;
      case Outcome::Kind::Rejected: {
        // delivery::reject() sends no error, which azure-iothub reads as success.
        pn_delivery_t* raw = rawDelivery(d);
        pn_condition_t* condition = pn_disposition_condition(pn_delivery_local(raw));
        pn_condition_set_name(condition, outcome.error.condition.c_str());
        pn_condition_set_description(condition, outcome.error.description.c_str());
        pn_delivery_update(raw, PN_REJECTED);
        pn_delivery_settle(raw);
        break;
      }
    }
    r.add_credit(1);
  }

  static std::string property(const proton::message& m, const std::string& key) {
    if (!m.properties().exists(key)) return {};
    return scalarText(m.properties().get(key));
  }

  void onPutToken(proton::receiver& r, const proton::message& request) {
    std::string operation = property(request, "operation");
    std::string type = property(request, "type");
    std::string audience = property(request, "name");
    std::string token = bodyText(request.body());
    TokenVerdict verdict;
    if (operation != "put-token") {
      verdict = {400, "unsupported $cbs operation '" + operation + "'", std::nullopt};
    } else if (audience.empty() || token.empty()) {
      verdict = {400, "put-token needs a name and a token", std::nullopt};
    } else {
      verdict = authenticator.verify(token, audience, type);
    }
    bool ok = verdict.status_code >= 200 && verdict.status_code < 300 && verdict.claim;
    if (ok) {
      // A renewal for the same audience replaces the earlier claim; expired ones go.
      std::erase_if(claims, [&](const Claim& c) {
        return c.audience == verdict.claim->audience || c.expires <= now;
      });
      if (claims.size() >= options.max_claims) {
        ok = false;
        verdict.status_code = 403;
        verdict.description = "too many tokens on this connection";
      } else {
        ++stats.tokens_accepted;
        claims.push_back(std::move(*verdict.claim));
      }
    }
    if (!ok) {
      ++stats.tokens_refused;
      if (verdict.status_code >= 200 && verdict.status_code < 300) verdict.status_code = 401;
    }
    proton::message reply;
    reply.correlation_id(request.id());
    if (!request.reply_to().empty()) reply.to(request.reply_to());
    reply.properties().put("status-code", static_cast<std::int32_t>(verdict.status_code));
    reply.properties().put("status-description", verdict.description.empty()
                                                     ? (ok ? "OK" : "Unauthorized")
                                                     : verdict.description);
    // Answer on the client's $cbs receiver in the request's session (reply_to cannot route:
    // azure-iothub sends a name that is not its link's), else on any $cbs receiver.
    pn_link_t* target = nullptr;
    for (auto& [raw, state] : links) {
      if (!state.cbs || state.role != LinkRole::Receiver) continue;
      if (state.sender.session() == r.session()) {
        target = raw;
        break;
      }
      if (!target) target = raw;
    }
    if (!target) return;  // no reply link: the client did not ask for an answer
    if (cbs_pending[target].size() >= options.max_pending_replies) {
      proton::error_condition e("amqp:resource-limit-exceeded", "$cbs replies are not read");
      recordError(e);
      driver.connection().close(e);
      return;
    }
    cbs_pending[target].push_back(std::move(reply));
    flushCbs(links[target].sender);
  }

  void flushCbs(proton::sender& s) {
    auto& queue = cbs_pending[rawLink(s)];
    while (!queue.empty() && s.credit() > 0) {
      s.send(queue.front());
      queue.pop_front();
    }
  }
};

ServerConnection::ServerConnection(ServerConnectionOptions options, Authenticator& authenticator,
                                   LinkHandler& handler)
    : impl_(std::make_unique<Impl>(std::move(options), authenticator, handler)) {}

ServerConnection::~ServerConnection() = default;

std::size_t ServerConnection::receive(std::span<const std::uint8_t> bytes) {
  if (impl_->input_stopped) return 0;
  std::size_t allowed = impl_->guard.scan(bytes);
  std::size_t done = feed(bytes.first(allowed));
  if (allowed < bytes.size() && !impl_->input_stopped) {
    impl_->recordError(
        proton::error_condition("amqp:connection:framing-error", impl_->guard.reason()));
    impl_->driver.read_close();
    impl_->dispatch();
    impl_->checkPartialDeliveries();
    impl_->closeIfInputStopped();
  }
  return done;
}

std::size_t ServerConnection::feed(std::span<const std::uint8_t> bytes) {
  std::size_t done = 0;
  while (done < bytes.size() && !impl_->input_stopped) {
    proton::io::mutable_buffer buffer = impl_->driver.read_buffer();
    if (buffer.size == 0) {
      impl_->dispatch();
      buffer = impl_->driver.read_buffer();
      if (buffer.size == 0) break;
    }
    std::size_t n = std::min(buffer.size, bytes.size() - done);
    std::memcpy(buffer.data, bytes.data() + done, n);
    impl_->driver.read_done(n);
    done += n;
    impl_->dispatch();
    impl_->checkPartialDeliveries();
    impl_->closeIfInputStopped();
  }
  return done;
}

void ServerConnection::receiveClosed() {
  impl_->driver.read_close();
  impl_->dispatch();
  impl_->closeIfInputStopped();
}

std::span<const std::uint8_t> ServerConnection::output() {
  proton::io::const_buffer buffer = impl_->driver.write_buffer();
  return {reinterpret_cast<const std::uint8_t*>(buffer.data), buffer.size};
}

void ServerConnection::consumed(std::size_t n) {
  impl_->driver.write_done(n);
  impl_->dispatch();
  impl_->abortIfFlushed();
}

void ServerConnection::sendClosed() {
  impl_->driver.write_close();
  impl_->dispatch();
}

std::optional<Clock::time_point> ServerConnection::tick(Clock::time_point now) {
  impl_->now = now;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
  proton::timestamp next = impl_->driver.tick(proton::timestamp(ms.count()));
  impl_->dispatch();
  if (next.milliseconds() == 0) return std::nullopt;
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(next.milliseconds())));
}

void ServerConnection::close(const ErrorCondition& error) {
  proton::connection c = impl_->driver.connection();
  if (!c.closed()) {
    proton::error_condition condition(error.condition, error.description);
    // Each session ends with the error first: azure-iothub notices an End at once, while a
    // bare Close leaves it detaching its links and waiting 45 s for answers that never come.
    for (proton::session session : c.sessions()) {
      if (session.active()) session.close(condition);
    }
    c.close(condition);
  }
  impl_->dispatch();
}

bool ServerConnection::send(LinkId link, const Message& message) {
  auto id = impl_->by_id.find(link);
  if (id == impl_->by_id.end()) return false;
  auto& state = impl_->links[id->second];
  if (state.role != LinkRole::Receiver || state.sender.credit() <= 0) return false;
  state.sender.send(fromMessage(message));
  impl_->dispatch();
  return true;
}

bool ServerConnection::detach(LinkId link, const ErrorCondition& error) {
  auto id = impl_->by_id.find(link);
  if (id == impl_->by_id.end()) return false;
  auto it = impl_->links.find(id->second);
  if (it == impl_->links.end()) return false;
  proton::link l = it->second.role == LinkRole::Sender ? proton::link(it->second.receiver)
                                                       : proton::link(it->second.sender);
  l.close(proton::error_condition(error.condition, error.description));
  // Forgotten now, not when the client's detach comes back (it may never come).
  impl_->onLinkEnd(l);
  impl_->dispatch();
  return true;
}

bool ServerConnection::settle(DeliveryId delivery, const Outcome& outcome) {
  auto it = impl_->deferred.find(delivery);
  if (it == impl_->deferred.end()) return false;
  proton::delivery d = it->second.delivery;
  impl_->deferred.erase(it);
  impl_->finishDelivery(d, outcome);
  impl_->dispatch();
  return true;
}

int ServerConnection::credit(LinkId link) const {
  auto id = impl_->by_id.find(link);
  if (id == impl_->by_id.end()) return 0;
  const auto& state = impl_->links.at(id->second);
  return state.role == LinkRole::Receiver ? state.sender.credit() : 0;
}

bool ServerConnection::finished() const { return !impl_->active; }

std::optional<ErrorCondition> ServerConnection::error() const { return impl_->failure; }

std::string ServerConnection::hostname() const { return impl_->driver.connection().virtual_host(); }

const ConnectionStats& ServerConnection::stats() const { return impl_->stats; }

}  // namespace iothub::amqp
