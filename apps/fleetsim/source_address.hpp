#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/status.hpp"

namespace iothub::fleetsim {

// Which loopback address each simulated device connects from. A single source address can
// only reach one server port through ~28 000 ephemeral ports, so devices are spread over
// 127.0.0.0/8 (all of it is loopback on Linux); with IP_BIND_ADDRESS_NO_PORT the kernel
// picks the port at connect() time per 4-tuple, which lifts the limit (ip(7),
// IP_BIND_ADDRESS_NO_PORT).
//
// Addresses are 127.A.B.C with A in 1..254, B in 0..255, C in 1..254: 127.0.0.0/16 (where
// servers usually listen) and the .0/.255 host numbers are never used. Device i uses
// address number i % count, so neighbours land on different addresses.
class SourceAddressPlan {
 public:
  static constexpr std::size_t kMaxAddresses = std::size_t{254} * 256 * 254;

  // Errors: ArgumentInvalid for 0 or more than kMaxAddresses addresses.
  static Result<SourceAddressPlan> create(std::size_t address_count);

  std::size_t addressCount() const { return count_; }
  // The IPv4 address (host byte order) of address number `n` (< addressCount()).
  static std::uint32_t addressNumber(std::size_t n);
  // The address device `device_index` binds to, in host byte order.
  std::uint32_t addressForDevice(std::size_t device_index) const {
    return addressNumber(device_index % count_);
  }

 private:
  explicit SourceAddressPlan(std::size_t count) : count_(count) {}
  std::size_t count_;
};

// Dotted-quad text of a host-byte-order IPv4 address.
std::string formatIpv4(std::uint32_t address);

}  // namespace iothub::fleetsim
