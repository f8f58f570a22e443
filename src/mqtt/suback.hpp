#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.hpp"
#include "mqtt/packet_type.hpp"

namespace iothub::mqtt {

// SUBACK (§3.9), server to client: one return code per filter of the SUBSCRIBE it answers,
// in the same order. Invariants checked by the encoder and decoder: packet_id non-zero, at
// least one return code, each 0x00, 0x01, 0x02 or 0x80.
struct SubAck {
  static constexpr PacketType kType = PacketType::SubAck;

  std::uint16_t packet_id = 0;
  std::vector<SubAckReturnCode> return_codes;

  bool operator==(const SubAck&) const = default;
};

namespace detail {
Status checkEncodable(const SubAck& packet);
inline std::size_t remainingLength(const SubAck& packet) { return 2 + packet.return_codes.size(); }
inline std::uint8_t fixedHeaderFlags(const SubAck&) { return 0; }
void writeBody(const SubAck& packet, std::string& out);
Result<SubAck> decodeSubAck(std::string_view body);
}  // namespace detail

}  // namespace iothub::mqtt
