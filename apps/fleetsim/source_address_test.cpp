#include "apps/fleetsim/source_address.hpp"

#include <gtest/gtest.h>

#include <set>

namespace iothub::fleetsim {
namespace {

TEST(SourceAddressPlanTest, StaysInLoopbackAndAvoidsServerSubnetAndEdgeHosts) {
  auto plan = SourceAddressPlan::create(SourceAddressPlan::kMaxAddresses);
  ASSERT_TRUE(plan);
  for (std::size_t n : {std::size_t{0}, std::size_t{253}, std::size_t{254}, std::size_t{65023},
                        std::size_t{65024}, SourceAddressPlan::kMaxAddresses - 1}) {
    const auto a = SourceAddressPlan::addressNumber(n);
    EXPECT_EQ(a >> 24, 127u) << n;
    EXPECT_GE((a >> 16) & 0xff, 1u) << n;
    EXPECT_LE((a >> 16) & 0xff, 254u) << n;
    EXPECT_GE(a & 0xff, 1u) << n;
    EXPECT_LE(a & 0xff, 254u) << n;
  }
}

TEST(SourceAddressPlanTest, FirstAddressesAreDistinctAndWellFormed) {
  EXPECT_EQ(formatIpv4(SourceAddressPlan::addressNumber(0)), "127.1.0.1");
  EXPECT_EQ(formatIpv4(SourceAddressPlan::addressNumber(253)), "127.1.0.254");
  EXPECT_EQ(formatIpv4(SourceAddressPlan::addressNumber(254)), "127.1.1.1");
  EXPECT_EQ(formatIpv4(SourceAddressPlan::addressNumber(254 * 256)), "127.2.0.1");
  std::set<std::uint32_t> seen;
  for (std::size_t n = 0; n < 100'000; ++n) seen.insert(SourceAddressPlan::addressNumber(n));
  EXPECT_EQ(seen.size(), 100'000u);
}

TEST(SourceAddressPlanTest, SpreadsDevicesRoundRobin) {
  auto plan = SourceAddressPlan::create(3);
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->addressForDevice(0), SourceAddressPlan::addressNumber(0));
  EXPECT_EQ(plan->addressForDevice(1), SourceAddressPlan::addressNumber(1));
  EXPECT_EQ(plan->addressForDevice(3), SourceAddressPlan::addressNumber(0));
  EXPECT_EQ(plan->addressForDevice(19'000), SourceAddressPlan::addressNumber(19'000 % 3));
}

TEST(SourceAddressPlanTest, RejectsZeroOrTooManyAddresses) {
  EXPECT_FALSE(SourceAddressPlan::create(0));
  EXPECT_FALSE(SourceAddressPlan::create(SourceAddressPlan::kMaxAddresses + 1));
}

}  // namespace
}  // namespace iothub::fleetsim
