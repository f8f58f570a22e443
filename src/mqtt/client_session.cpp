#include "mqtt/client_session.hpp"

#include <algorithm>
#include <utility>

#include "mqtt/topic.hpp"

namespace iothub::mqtt {
namespace {

std::string packetName(const Packet& packet) {
  return std::string(packetTypeName(packetType(packet)));
}

}  // namespace

std::string_view clientCloseReasonName(ClientCloseReason reason) {
  switch (reason) {
    case ClientCloseReason::Disconnected:
      return "disconnected";
    case ClientCloseReason::ConnectRefused:
      return "connect refused";
    case ClientCloseReason::ProtocolViolation:
      return "protocol violation";
    case ClientCloseReason::MalformedPacket:
      return "malformed packet";
    case ClientCloseReason::PacketTooLarge:
      return "packet too large";
    case ClientCloseReason::KeepAliveTimeout:
      return "keep-alive timeout";
  }
  return "unknown";
}

ClientActions ClientSession::connect(Connect connect, TimePoint now) {
  ClientActions actions;
  state_ = State::AwaitingConnAck;
  keep_alive_ = std::chrono::seconds(connect.keep_alive);
  ping_sent_at_.reset();
  pending_subscribes_.clear();
  send(std::move(connect), now, actions);
  return actions;
}

ClientActions ClientSession::disconnect() {
  ClientActions actions;
  if (state_ == State::Disconnected) return actions;
  actions.push_back(SendPacket{Disconnect{}});
  close(ClientCloseReason::Disconnected, "disconnected by the client", actions);
  return actions;
}

void ClientSession::connectionLost() {
  state_ = State::Disconnected;
  ping_sent_at_.reset();
  pending_subscribes_.clear();
}

ClientActions ClientSession::onPacket(Packet packet, TimePoint now) {
  ClientActions actions;
  switch (state_) {
    case State::Disconnected:
      break;
    case State::AwaitingConnAck: {
      const auto* connack = std::get_if<ConnAck>(&packet);
      if (connack == nullptr) {
        close(ClientCloseReason::ProtocolViolation,
              "expected CONNACK, the server sent " + packetName(packet), actions);
        break;
      }
      if (connack->return_code != ConnectReturnCode::Accepted) {
        actions.push_back(ConnectionRefused{connack->return_code});
        close(ClientCloseReason::ConnectRefused,
              "CONNACK " + std::to_string(static_cast<int>(connack->return_code)), actions);
        break;
      }
      state_ = State::Connected;
      actions.push_back(ConnectionAccepted{connack->session_present});
      break;
    }
    case State::Connected:
      handleConnected(std::move(packet), now, actions);
      break;
  }
  return actions;
}

void ClientSession::handleConnected(Packet&& packet, TimePoint now, ClientActions& actions) {
  if (auto* publish = std::get_if<Publish>(&packet)) {
    if (publish->qos == QoS::ExactlyOnce) {
      close(ClientCloseReason::ProtocolViolation, "the server sent a QoS 2 PUBLISH", actions);
      return;
    }
    if (publish->qos == QoS::AtLeastOnce) send(PubAck{publish->packet_id}, now, actions);
    actions.push_back(MessageReceived{std::move(*publish)});
    return;
  }
  if (const auto* puback = std::get_if<PubAck>(&packet)) {
    if (in_flight_.erase(puback->packet_id) != 0) {
      actions.push_back(PublishCompleted{puback->packet_id});
    }
    return;
  }
  if (auto* suback = std::get_if<SubAck>(&packet)) {
    auto pending =
        std::find_if(pending_subscribes_.begin(), pending_subscribes_.end(),
                     [&](const PendingSubscribe& p) { return p.packet_id == suback->packet_id; });
    if (pending == pending_subscribes_.end()) return;
    if (pending->filters.size() != suback->return_codes.size()) {
      close(ClientCloseReason::ProtocolViolation, "SUBACK with a wrong number of return codes",
            actions);
      return;
    }
    SubscribeCompleted done{suback->packet_id, std::move(pending->filters),
                            std::move(suback->return_codes)};
    pending_subscribes_.erase(pending);
    actions.push_back(std::move(done));
    return;
  }
  if (std::holds_alternative<PingResp>(packet)) {
    ping_sent_at_.reset();
    actions.push_back(PingAnswered{});
    return;
  }
  if (std::holds_alternative<UnsubAck>(packet)) return;
  close(ClientCloseReason::ProtocolViolation,
        "unexpected " + packetName(packet) + " from the server", actions);
}

ClientActions ClientSession::onDecodeError(DecodeError error, std::string_view detail) {
  ClientActions actions;
  if (state_ == State::Disconnected) return actions;
  close(error == DecodeError::PacketTooLarge ? ClientCloseReason::PacketTooLarge
                                             : ClientCloseReason::MalformedPacket,
        "malformed packet from the server: " + std::string(detail), actions);
  return actions;
}

ClientActions ClientSession::onTick(TimePoint now) {
  ClientActions actions;
  if (state_ != State::Connected || keep_alive_.count() == 0) return actions;
  if (ping_sent_at_) {
    if (now >= *ping_sent_at_ + keep_alive_) {
      close(ClientCloseReason::KeepAliveTimeout,
            "no PINGRESP within " + std::to_string(keep_alive_.count()) + " s", actions);
    }
    return actions;
  }
  if (now >= last_sent_at_ + keep_alive_) {
    send(PingReq{}, now, actions);
    ping_sent_at_ = now;
  }
  return actions;
}

std::optional<TimePoint> ClientSession::nextDeadline() const {
  if (state_ != State::Connected || keep_alive_.count() == 0) return std::nullopt;
  if (ping_sent_at_) return *ping_sent_at_ + keep_alive_;
  return last_sent_at_ + keep_alive_;
}

Result<ClientSession::Sent> ClientSession::subscribe(std::vector<Subscription> subscriptions,
                                                     TimePoint now) {
  if (state_ != State::Connected) {
    return Status(ErrorCode::InvalidOperation, "SUBSCRIBE needs an accepted connection");
  }
  if (subscriptions.empty()) {
    return Status(ErrorCode::ArgumentInvalid, "SUBSCRIBE needs at least one filter");
  }
  for (const auto& subscription : subscriptions) {
    if (Status valid = validateTopicFilter(subscription.filter); !valid) {
      return Status(ErrorCode::ArgumentInvalid, valid.message());
    }
  }
  const std::uint16_t id = allocatePacketId();
  if (id == 0) return Status(ErrorCode::Throttled, "all 65535 packet identifiers are in use");
  PendingSubscribe pending{id, {}};
  pending.filters.reserve(subscriptions.size());
  for (const auto& subscription : subscriptions) pending.filters.push_back(subscription.filter);
  pending_subscribes_.push_back(std::move(pending));
  Sent sent;
  sent.packet_id = id;
  send(Subscribe{id, std::move(subscriptions)}, now, sent.actions);
  return sent;
}

Result<ClientSession::Sent> ClientSession::publish(Publish message, TimePoint now) {
  if (state_ != State::Connected) {
    return Status(ErrorCode::InvalidOperation, "PUBLISH needs an accepted connection");
  }
  if (message.qos == QoS::ExactlyOnce) {
    return Status(ErrorCode::ArgumentInvalid, "QoS 2 is not supported");
  }
  message.dup = false;
  message.packet_id = 0;
  if (message.qos == QoS::AtLeastOnce) {
    message.packet_id = allocatePacketId();
    if (message.packet_id == 0) {
      return Status(ErrorCode::Throttled, "all 65535 packet identifiers are in use");
    }
  }
  if (Status valid = detail::checkEncodable(message); !valid) {
    return Status(ErrorCode::ArgumentInvalid, valid.message());
  }
  Sent sent;
  sent.packet_id = message.packet_id;
  if (message.qos == QoS::AtLeastOnce) in_flight_.insert(message.packet_id);
  send(std::move(message), now, sent.actions);
  return sent;
}

Result<ClientActions> ClientSession::republish(Publish message, TimePoint now) {
  if (state_ != State::Connected) {
    return Status(ErrorCode::InvalidOperation, "PUBLISH needs an accepted connection");
  }
  if (message.qos != QoS::AtLeastOnce || !in_flight_.contains(message.packet_id)) {
    return Status(ErrorCode::ArgumentInvalid, "only a QoS 1 publish in flight can be re-sent");
  }
  message.dup = true;
  if (Status valid = detail::checkEncodable(message); !valid) {
    return Status(ErrorCode::ArgumentInvalid, valid.message());
  }
  ClientActions actions;
  send(std::move(message), now, actions);
  return actions;
}

ClientActions ClientSession::ping(TimePoint now) {
  ClientActions actions;
  if (state_ != State::Connected) return actions;
  send(PingReq{}, now, actions);
  if (!ping_sent_at_) ping_sent_at_ = now;
  return actions;
}

void ClientSession::abandon(std::uint16_t packet_id) { in_flight_.erase(packet_id); }

void ClientSession::close(ClientCloseReason reason, std::string detail, ClientActions& actions) {
  state_ = State::Disconnected;
  ping_sent_at_.reset();
  pending_subscribes_.clear();
  actions.push_back(CloseClientConnection{reason, std::move(detail)});
}

void ClientSession::send(Packet packet, TimePoint now, ClientActions& actions) {
  last_sent_at_ = now;
  actions.push_back(SendPacket{std::move(packet)});
}

bool ClientSession::isPendingSubscribe(std::uint16_t packet_id) const {
  return std::any_of(pending_subscribes_.begin(), pending_subscribes_.end(),
                     [&](const PendingSubscribe& p) { return p.packet_id == packet_id; });
}

std::uint16_t ClientSession::allocatePacketId() {
  for (int tries = 0; tries < 65535; ++tries) {
    last_packet_id_ =
        last_packet_id_ == 65535 ? 1 : static_cast<std::uint16_t>(last_packet_id_ + 1);
    if (!in_flight_.contains(last_packet_id_) && !isPendingSubscribe(last_packet_id_)) {
      return last_packet_id_;
    }
  }
  return 0;
}

}  // namespace iothub::mqtt
