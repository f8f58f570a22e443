#pragma once

#include <cstddef>
#include <string>

#include "common/status.hpp"
#include "mqtt/packet.hpp"

namespace iothub::mqtt {

// Appends the MQTT 3.1.1 wire form of `packet` to `out`, so that several packets produced in
// one pass can be written with one socket write. Reserves the exact size once.
// Fails with IotHubFormatError, leaving `out` unchanged, when the packet breaks an invariant
// documented on its struct (for instance a topic name with a wildcard, a string longer than
// 65535 bytes, QoS 3, a zero packet identifier, an empty SUBSCRIBE) or when its remaining
// length exceeds 268435455 bytes. The encoder never produces bytes the Decoder rejects.
Status encode(const Packet& packet, std::string& out);

// The same for one concrete packet, without building a Packet variant (no copy).
template <PacketStruct P>
Status encode(const P& packet, std::string& out);

// Encodes a PUBLISH straight from views of topic and payload.
Status encode(const PublishView& publish, std::string& out);

// The number of bytes encode() appends for `packet` (fixed header included).
// Only meaningful for packets that encode() accepts.
std::size_t encodedSize(const Packet& packet);

}  // namespace iothub::mqtt
