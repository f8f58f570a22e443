#pragma once

// All MQTT 3.1.1 control packets and the Packet variant that the Decoder yields and the
// encoder accepts. Every packet struct owns its data (strings, vectors): a decoded packet
// stays valid after the Decoder moves on, can be handed to another thread or kept across an
// asynchronous authentication, and compares with ==.

#include <cstddef>
#include <type_traits>
#include <variant>

#include "mqtt/connack.hpp"
#include "mqtt/connect.hpp"
#include "mqtt/disconnect.hpp"
#include "mqtt/packet_type.hpp"
#include "mqtt/pingreq.hpp"
#include "mqtt/pingresp.hpp"
#include "mqtt/puback.hpp"
#include "mqtt/pubcomp.hpp"
#include "mqtt/publish.hpp"
#include "mqtt/pubrec.hpp"
#include "mqtt/pubrel.hpp"
#include "mqtt/suback.hpp"
#include "mqtt/subscribe.hpp"
#include "mqtt/unsuback.hpp"
#include "mqtt/unsubscribe.hpp"

namespace iothub::mqtt {

// The alternatives are in PacketType order, so index() + 1 is the wire type.
using Packet = std::variant<Connect, ConnAck, Publish, PubAck, PubRec, PubRel, PubComp, Subscribe,
                            SubAck, Unsubscribe, UnsubAck, PingReq, PingResp, Disconnect>;

namespace detail {
template <class T>
constexpr bool isPacketStruct() {
  if constexpr (requires { T::kType; }) {
    constexpr auto index = static_cast<std::size_t>(T::kType) - 1;
    if constexpr (index < std::variant_size_v<Packet>) {
      return std::is_same_v<std::variant_alternative_t<index, Packet>, T>;
    }
  }
  return false;
}
}  // namespace detail

// One of the 14 packet structs (an alternative of Packet).
template <class T>
concept PacketStruct = detail::isPacketStruct<T>();

inline PacketType packetType(const Packet& packet) {
  return static_cast<PacketType>(packet.index() + 1);
}

}  // namespace iothub::mqtt
