#include "mqtt/server_session.hpp"

#include <algorithm>

#include "mqtt/encoder.hpp"

namespace iothub::mqtt {
namespace {

constexpr std::size_t kMaxPacketIds = 65535;

std::chrono::milliseconds keepAliveTimeout(std::uint16_t keep_alive,
                                           const ServerSessionOptions& options) {
  // 1.5 x keep-alive, §3.1.2.10; in milliseconds so the half second of odd values survives.
  std::chrono::milliseconds timeout{static_cast<std::int64_t>(keep_alive) * 1500};
  if (options.max_keep_alive_timeout) timeout = std::min(timeout, *options.max_keep_alive_timeout);
  return timeout;
}

}  // namespace

std::string_view closeReasonName(CloseReason reason) {
  switch (reason) {
    case CloseReason::ClientDisconnected:
      return "client disconnected";
    case CloseReason::ProtocolViolation:
      return "protocol violation";
    case CloseReason::MalformedPacket:
      return "malformed packet";
    case CloseReason::PacketTooLarge:
      return "packet too large";
    case CloseReason::UnsupportedProtocol:
      return "unsupported protocol";
    case CloseReason::ConnectRefused:
      return "connect refused";
    case CloseReason::ConnectTimeout:
      return "connect timeout";
    case CloseReason::KeepAliveTimeout:
      return "keep-alive timeout";
    case CloseReason::TooManyPendingPackets:
      return "too many packets before CONNACK";
  }
  return "unknown";
}

ServerSession::ServerSession(ServerSessionOptions options, TimePoint connected_at)
    : options_(options),
      max_in_flight_(std::clamp<std::size_t>(options.max_in_flight, 1, kMaxPacketIds)),
      connected_at_(connected_at),
      connect_received_at_(connected_at),
      last_packet_at_(connected_at) {}

void ServerSession::close(CloseReason reason, std::string detail, Actions& actions) {
  state_ = State::Closed;
  held_.clear();
  pending_subscribes_.clear();
  inbound_.clear();
  actions.emplace_back(CloseConnection{reason, std::move(detail)});
}

Actions ServerSession::onPacket(Packet packet, TimePoint now) {
  Actions actions;
  if (state_ == State::Closed) return actions;
  last_packet_at_ = now;
  switch (state_) {
    case State::AwaitingConnect:
      connect_received_at_ = now;
      handleFirst(std::move(packet), actions);
      break;
    case State::Authenticating:
      // §3.1.4: nothing after CONNECT is processed before the CONNECT is accepted.
      if (std::holds_alternative<Connect>(packet)) {
        close(CloseReason::ProtocolViolation, "second CONNECT", actions);
      } else if (held_.size() >= options_.max_packets_before_connack) {
        close(CloseReason::TooManyPendingPackets,
              "more than " + std::to_string(options_.max_packets_before_connack) +
                  " packets before CONNACK",
              actions);
      } else {
        held_.push_back(std::move(packet));
      }
      break;
    case State::Connected:
      handleConnected(std::move(packet), actions);
      break;
    case State::Closed:
      break;
  }
  return actions;
}

void ServerSession::handleFirst(Packet&& packet, Actions& actions) {
  auto* connect = std::get_if<Connect>(&packet);
  if (connect == nullptr) {
    close(CloseReason::ProtocolViolation,
          "first packet is " + std::string(packetTypeName(packetType(packet))) + ", not CONNECT",
          actions);
    return;
  }
  if (connect->client_id.empty() && !connect->clean_session) {
    actions.emplace_back(SendPacket{ConnAck{false, ConnectReturnCode::IdentifierRejected}});
    close(CloseReason::ConnectRefused, "empty client identifier with clean session 0", actions);
    return;
  }
  state_ = State::Authenticating;
  keep_alive_ = connect->keep_alive;
  clean_session_ = connect->clean_session;
  actions.emplace_back(Authenticate{std::move(*connect)});
}

void ServerSession::handleConnected(Packet&& packet, Actions& actions) {
  switch (packetType(packet)) {
    case PacketType::Connect:
      close(CloseReason::ProtocolViolation, "second CONNECT", actions);
      return;
    case PacketType::Publish: {
      auto& publish = std::get<Publish>(packet);
      if (publish.qos == QoS::ExactlyOnce) {
        close(CloseReason::ProtocolViolation, "QoS 2 PUBLISH is not supported", actions);
        return;
      }
      if (publish.qos == QoS::AtLeastOnce) inbound_.push_back({publish.packet_id, false});
      actions.emplace_back(DeliverPublish{std::move(publish)});
      return;
    }
    case PacketType::PubAck: {
      const std::uint16_t packet_id = std::get<PubAck>(packet).packet_id;
      auto it =
          std::find_if(in_flight_.begin(), in_flight_.end(),
                       [packet_id](const InFlightPublish& p) { return p.packet_id == packet_id; });
      // A PUBACK for an id not in flight is a late duplicate; MQTT 3.1.1 does not make it an
      // error, so it is ignored.
      if (it == in_flight_.end()) return;
      const std::uint64_t tag = it->tag;
      in_flight_.erase(it);
      actions.emplace_back(PublishAcknowledged{packet_id, tag});
      return;
    }
    case PacketType::PubRec:
    case PacketType::PubRel:
    case PacketType::PubComp:
      close(CloseReason::ProtocolViolation,
            std::string(packetTypeName(packetType(packet))) + ": QoS 2 is not supported", actions);
      return;
    case PacketType::Subscribe: {
      auto& subscribe = std::get<Subscribe>(packet);
      const bool id_in_use = std::any_of(
          pending_subscribes_.begin(), pending_subscribes_.end(),
          [&](const PendingSubscribe& p) { return p.packet_id == subscribe.packet_id; });
      if (id_in_use) {
        close(CloseReason::ProtocolViolation,
              "SUBSCRIBE reuses packet identifier " + std::to_string(subscribe.packet_id) +
                  " before its SUBACK",
              actions);
        return;
      }
      PendingSubscribe pending{subscribe.packet_id, {}};
      pending.requested.reserve(subscribe.subscriptions.size());
      for (const Subscription& s : subscribe.subscriptions) pending.requested.push_back(s.qos);
      pending_subscribes_.push_back(std::move(pending));
      actions.emplace_back(
          AuthorizeSubscribe{subscribe.packet_id, std::move(subscribe.subscriptions)});
      return;
    }
    case PacketType::Unsubscribe: {
      auto& unsubscribe = std::get<Unsubscribe>(packet);
      const std::uint16_t packet_id = unsubscribe.packet_id;
      actions.emplace_back(RemoveSubscriptions{std::move(unsubscribe.filters)});
      actions.emplace_back(SendPacket{UnsubAck{packet_id}});
      return;
    }
    case PacketType::PingReq:
      actions.emplace_back(SendPacket{PingResp{}});
      return;
    case PacketType::Disconnect:
      close(CloseReason::ClientDisconnected, "DISCONNECT", actions);
      return;
    case PacketType::ConnAck:
    case PacketType::SubAck:
    case PacketType::UnsubAck:
    case PacketType::PingResp:
      close(CloseReason::ProtocolViolation,
            std::string(packetTypeName(packetType(packet))) + " is only sent by servers", actions);
      return;
  }
}

Actions ServerSession::onDecodeError(DecodeError error, std::string_view detail) {
  Actions actions;
  if (state_ == State::Closed) return actions;
  switch (error) {
    case DecodeError::UnsupportedProtocol:
      if (state_ == State::AwaitingConnect) {
        actions.emplace_back(
            SendPacket{ConnAck{false, ConnectReturnCode::UnacceptableProtocolVersion}});
        close(CloseReason::UnsupportedProtocol, std::string(detail), actions);
      } else {
        close(CloseReason::ProtocolViolation, "second CONNECT: " + std::string(detail), actions);
      }
      break;
    case DecodeError::PacketTooLarge:
      close(CloseReason::PacketTooLarge, std::string(detail), actions);
      break;
    case DecodeError::Malformed:
    case DecodeError::None:
      close(CloseReason::MalformedPacket, std::string(detail), actions);
      break;
  }
  return actions;
}

std::optional<TimePoint> ServerSession::nextDeadline() const {
  switch (state_) {
    case State::AwaitingConnect:
      return connected_at_ + options_.connect_timeout;
    case State::Authenticating:
      return connect_received_at_ + options_.authentication_timeout;
    case State::Connected:
      if (keep_alive_ == 0) return std::nullopt;
      return last_packet_at_ + keepAliveTimeout(keep_alive_, options_);
    case State::Closed:
      return std::nullopt;
  }
  return std::nullopt;
}

Actions ServerSession::onTick(TimePoint now) {
  Actions actions;
  const std::optional<TimePoint> deadline = nextDeadline();
  if (!deadline || now < *deadline) return actions;
  if (state_ == State::Connected) {
    close(CloseReason::KeepAliveTimeout,
          "nothing received for " +
              std::to_string(keepAliveTimeout(keep_alive_, options_).count()) + " ms (keep-alive " +
              std::to_string(keep_alive_) + " s)",
          actions);
  } else {
    close(CloseReason::ConnectTimeout,
          state_ == State::AwaitingConnect ? "no CONNECT received" : "authentication took too long",
          actions);
  }
  return actions;
}

Actions ServerSession::acceptConnect(bool session_present) {
  Actions actions;
  if (state_ == State::Closed) return actions;
  IOTHUB_CHECK(state_ == State::Authenticating, "acceptConnect without a pending CONNECT");
  state_ = State::Connected;
  actions.emplace_back(
      SendPacket{ConnAck{session_present && !clean_session_, ConnectReturnCode::Accepted}});
  std::vector<Packet> held = std::move(held_);
  held_.clear();
  for (Packet& packet : held) {
    if (state_ == State::Closed) break;
    handleConnected(std::move(packet), actions);
  }
  return actions;
}

Actions ServerSession::refuseConnect(ConnectReturnCode code) {
  Actions actions;
  if (state_ == State::Closed) return actions;
  IOTHUB_CHECK(state_ == State::Authenticating, "refuseConnect without a pending CONNECT");
  IOTHUB_CHECK(code != ConnectReturnCode::Accepted, "refuseConnect with the Accepted code");
  actions.emplace_back(SendPacket{ConnAck{false, code}});
  close(CloseReason::ConnectRefused,
        "CONNACK return code " + std::to_string(static_cast<int>(code)), actions);
  return actions;
}

Actions ServerSession::completeSubscribe(std::uint16_t packet_id,
                                         const std::vector<SubAckReturnCode>& codes) {
  Actions actions;
  if (state_ == State::Closed) return actions;
  auto it =
      std::find_if(pending_subscribes_.begin(), pending_subscribes_.end(),
                   [packet_id](const PendingSubscribe& p) { return p.packet_id == packet_id; });
  IOTHUB_CHECK(it != pending_subscribes_.end(), "completeSubscribe for an unknown packet id");
  IOTHUB_CHECK(it->requested.size() == codes.size(),
               "completeSubscribe needs one code per subscription");
  SubAck suback{packet_id, {}};
  suback.return_codes.reserve(codes.size());
  for (std::size_t i = 0; i < codes.size(); ++i) {
    if (codes[i] == SubAckReturnCode::Failure) {
      suback.return_codes.push_back(SubAckReturnCode::Failure);
      continue;
    }
    const auto allowed = static_cast<std::uint8_t>(codes[i]);
    IOTHUB_CHECK(allowed <= 2, "completeSubscribe with an invalid code");
    const auto granted = std::min({static_cast<std::uint8_t>(it->requested[i]), allowed,
                                   static_cast<std::uint8_t>(options_.max_granted_qos)});
    suback.return_codes.push_back(static_cast<SubAckReturnCode>(granted));
  }
  pending_subscribes_.erase(it);
  actions.emplace_back(SendPacket{std::move(suback)});
  return actions;
}

Actions ServerSession::acknowledgePublish(std::uint16_t packet_id) {
  Actions actions;
  if (state_ == State::Closed) return actions;
  auto it = std::find_if(inbound_.begin(), inbound_.end(), [packet_id](const InboundPublish& p) {
    return p.packet_id == packet_id && !p.acknowledged;
  });
  if (it == inbound_.end()) return actions;
  it->acknowledged = true;
  // §4.6: PUBACKs leave in the order the PUBLISHes arrived.
  auto done = inbound_.begin();
  for (; done != inbound_.end() && done->acknowledged; ++done) {
    actions.emplace_back(SendPacket{PubAck{done->packet_id}});
  }
  inbound_.erase(inbound_.begin(), done);
  return actions;
}

bool ServerSession::isInFlight(std::uint16_t packet_id) const {
  return std::any_of(in_flight_.begin(), in_flight_.end(),
                     [packet_id](const InFlightPublish& p) { return p.packet_id == packet_id; });
}

std::uint16_t ServerSession::allocatePacketId() {
  // max_in_flight_ <= 65535 and the window is not full, so a free id exists.
  while (true) {
    const std::uint16_t candidate = next_packet_id_;
    next_packet_id_ =
        next_packet_id_ == 65535 ? 1 : static_cast<std::uint16_t>(next_packet_id_ + 1);
    if (!isInFlight(candidate)) return candidate;
  }
}

Result<Actions> ServerSession::sendQoS1(Publish&& message, std::uint64_t tag) {
  if (in_flight_.size() >= max_in_flight_) {
    return Status(ErrorCode::Throttled, "in-flight window of " + std::to_string(max_in_flight_) +
                                            " QoS 1 publishes is full");
  }
  Status encodable = detail::checkEncodable(message);
  if (!encodable) return Status(ErrorCode::ArgumentInvalid, encodable.message());
  in_flight_.push_back({message.packet_id, tag});
  Actions actions;
  actions.emplace_back(SendPacket{std::move(message)});
  return actions;
}

Result<Actions> ServerSession::publish(Publish message, std::uint64_t tag) {
  if (state_ != State::Connected) {
    return Status(ErrorCode::InvalidOperation, "the MQTT session is not connected");
  }
  message.dup = false;
  switch (message.qos) {
    case QoS::AtMostOnce: {
      message.packet_id = 0;
      Status encodable = detail::checkEncodable(message);
      if (!encodable) return Status(ErrorCode::ArgumentInvalid, encodable.message());
      Actions actions;
      actions.emplace_back(SendPacket{std::move(message)});
      return actions;
    }
    case QoS::AtLeastOnce:
      // Only take a packet id when there is room for it; sendQoS1 reports the full window.
      if (canPublishQoS1()) message.packet_id = allocatePacketId();
      return sendQoS1(std::move(message), tag);
    case QoS::ExactlyOnce:
      break;
  }
  return Status(ErrorCode::ArgumentInvalid, "the hub does not send QoS 2 publishes");
}

Result<Actions> ServerSession::redeliver(Publish message, std::uint64_t tag) {
  if (state_ != State::Connected) {
    return Status(ErrorCode::InvalidOperation, "the MQTT session is not connected");
  }
  if (message.qos != QoS::AtLeastOnce) {
    return Status(ErrorCode::ArgumentInvalid, "only QoS 1 publishes are redelivered");
  }
  if (message.packet_id == 0) {
    return Status(ErrorCode::ArgumentInvalid, "a redelivered publish keeps its packet identifier");
  }
  if (isInFlight(message.packet_id)) {
    return Status(ErrorCode::ArgumentInvalid,
                  "packet identifier " + std::to_string(message.packet_id) + " is in flight");
  }
  message.dup = true;
  return sendQoS1(std::move(message), tag);
}

}  // namespace iothub::mqtt
