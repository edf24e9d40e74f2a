// flow_hash (net/flow_hash.h): symmetric, spreads flows, ignores what is not part of a
// flow (payload, VLAN tag, fragment ports), non-IP by MAC, bounded on short frames.
#include "net/flow_hash.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "flow_frames.h"

namespace vnet::net {
namespace {

using test::Flow4;
using test::ipv4_frame;
using test::ipv6_udp_frame;
using test::l2_frame;

uint32_t h(const std::vector<uint8_t>& f) {
  return flow_hash(f.data(), uint32_t(f.size()));
}

TEST(FlowHash, SymmetricIpv4UdpAndTcp) {
  for (uint8_t proto : {uint8_t(17), uint8_t(6)}) {
    for (uint32_t i = 0; i < 200; ++i) {
      Flow4 fl{0x0a000001 + i * 7, 0x0a100002 + i * 13, uint16_t(1000 + i), uint16_t(80 + i % 3),
               proto};
      EXPECT_EQ(h(ipv4_frame(fl)), h(ipv4_frame(fl.reversed()))) << "flow " << i;
    }
  }
}

TEST(FlowHash, SymmetricIpv6) {
  std::array<uint8_t, 16> a{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  std::array<uint8_t, 16> b = a;
  b[15] = 2;
  b[3] = 9;
  EXPECT_EQ(h(ipv6_udp_frame(a, b, 5000, 53)), h(ipv6_udp_frame(b, a, 53, 5000)));
  EXPECT_NE(h(ipv6_udp_frame(a, b, 5000, 53)), h(ipv6_udp_frame(a, b, 5001, 53)));
}

TEST(FlowHash, SymmetricNonIpByMac) {
  EXPECT_EQ(h(l2_frame(0x020000000001, 0x020000000002)),
            h(l2_frame(0x020000000002, 0x020000000001)));
  EXPECT_NE(h(l2_frame(0x020000000001, 0x020000000002)),
            h(l2_frame(0x020000000001, 0x020000000003)));
}

TEST(FlowHash, SameFlowSameHash) {
  // Payload length and a VLAN tag do not change the flow.
  Flow4 fl{0xc0a80001, 0xc0a80002, 40000, 443};
  EXPECT_EQ(h(ipv4_frame(fl, 18)), h(ipv4_frame(fl, 1400)));
  EXPECT_EQ(h(ipv4_frame(fl, 18)), h(ipv4_frame(fl, 18, 10)));
  // IP options (IHL 6) take the general path, plain frames a shorter one: same value.
  auto opt = ipv4_frame(fl, 18);
  opt.insert(opt.begin() + 34, {0x01, 0x01, 0x01, 0x00});  // NOP NOP NOP EOL
  opt[14] = 0x46;
  EXPECT_EQ(h(opt), h(ipv4_frame(fl, 18)));
  EXPECT_EQ(h(opt), h(ipv4_frame(fl.reversed(), 18)));
  // Every fragment of a datagram hashes alike (only the first has the ports).
  const uint16_t mf = 0x2000;
  EXPECT_EQ(h(ipv4_frame(fl, 100, 0, mf)),
            h(ipv4_frame(Flow4{0xc0a80001, 0xc0a80002, 1, 2}, 100, 0, uint16_t(185))));
}

TEST(FlowHash, DifferentPortsDifferentHashes) {
  std::set<uint32_t> seen;
  for (uint16_t p = 0; p < 1000; ++p)
    seen.insert(h(ipv4_frame(Flow4{0x0a000001, 0x0a000002, uint16_t(10000 + p), 4789})));
  EXPECT_GE(seen.size(), 999u);
}

TEST(FlowHash, SpreadsEvenlyOverQueues) {
  // 4096 flows (source ports) over 2, 3, 4 and 8 queues: every queue within 20% of
  // its share.
  for (uint32_t n : {2u, 3u, 4u, 8u}) {
    std::vector<uint32_t> count(n);
    for (uint32_t p = 0; p < 4096; ++p)
      ++count[hash_to_range(h(ipv4_frame(Flow4{0x0a000001, 0x0a000002, uint16_t(p), 5201})), n)];
    for (uint32_t q = 0; q < n; ++q) {
      EXPECT_GT(count[q], 4096 / n * 8 / 10) << n << " queues, queue " << q;
      EXPECT_LT(count[q], 4096 / n * 12 / 10) << n << " queues, queue " << q;
    }
  }
}

TEST(FlowHash, ShortAndHostileFramesAreBounded) {
  // Every prefix of a frame hashes without reading past it (ASan build checks the
  // reads; here: no crash, never 0).
  Flow4 fl{0x0a000001, 0x0a000002, 1, 2};
  std::vector<uint8_t> full = ipv4_frame(fl, 0, 10);
  for (size_t n = 0; n <= full.size(); ++n) {
    std::vector<uint8_t> part(full.begin(), full.begin() + long(n));
    EXPECT_NE(flow_hash(part.data(), uint32_t(n)), 0u);
  }
  // An IHL pointing past the frame, and IHL < 5.
  std::vector<uint8_t> bad = ipv4_frame(fl);
  bad[14] = 0x4f;
  bad.resize(14 + 24);
  EXPECT_NE(h(bad), 0u);
  bad[14] = 0x41;
  EXPECT_NE(h(bad), 0u);
}

TEST(HashToRange, CoversTheRange) {
  EXPECT_EQ(hash_to_range(0, 4), 0u);
  EXPECT_EQ(hash_to_range(0xffffffffu, 4), 3u);
  EXPECT_EQ(hash_to_range(0x80000000u, 2), 1u);
  EXPECT_EQ(hash_to_range(0x7fffffffu, 2), 0u);
  EXPECT_EQ(hash_to_range(12345, 1), 0u);
}

}  // namespace
}  // namespace vnet::net
