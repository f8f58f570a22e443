#include "apps/fleetsim/source_address.hpp"

namespace iothub::fleetsim {

Result<SourceAddressPlan> SourceAddressPlan::create(std::size_t address_count) {
  if (address_count == 0 || address_count > kMaxAddresses) {
    return Status(ErrorCode::ArgumentInvalid,
                  "source address count must be within [1, " + std::to_string(kMaxAddresses) + "]");
  }
  return SourceAddressPlan(address_count);
}

std::uint32_t SourceAddressPlan::addressNumber(std::size_t n) {
  const auto c = static_cast<std::uint32_t>(1 + n % 254);
  const auto b = static_cast<std::uint32_t>((n / 254) % 256);
  const auto a = static_cast<std::uint32_t>(1 + n / (254 * 256));
  return (127u << 24) | (a << 16) | (b << 8) | c;
}

std::string formatIpv4(std::uint32_t address) {
  return std::to_string(address >> 24) + "." + std::to_string((address >> 16) & 0xff) + "." +
         std::to_string((address >> 8) & 0xff) + "." + std::to_string(address & 0xff);
}

}  // namespace iothub::fleetsim
