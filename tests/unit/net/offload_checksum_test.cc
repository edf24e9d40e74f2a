// Tests for net/checksum.h against an independent byte-at-a-time RFC 1071 implementation:
// random data of every small length and at every alignment, pieces, the RFC 1071 worked
// example, the IPv4 header checksum, pseudo-header sums and RFC 1624 incremental updates.
#include "net/checksum.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "offload_test_util.h"

namespace vnet::net {
namespace {

using test::ref_sum;

TEST(OffloadChecksum, Rfc1071Example) {
  // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 (folded).
  const uint8_t d[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
  EXPECT_EQ(csum_fold(csum_partial(d, sizeof d)), 0xddf2);
  EXPECT_EQ(csum_finish(csum_partial(d, sizeof d)), uint16_t(~0xddf2));
}

TEST(OffloadChecksum, RandomDataEveryLengthAndAlignment) {
  std::mt19937 rng(1234);
  std::vector<uint8_t> buf(4096 + 16);
  for (auto& b : buf) b = uint8_t(rng());
  for (size_t align = 0; align < 8; ++align) {
    for (size_t len = 0; len <= 300; ++len) {
      ASSERT_EQ(csum_fold(csum_partial(buf.data() + align, len)), ref_sum(buf.data() + align, len))
          << "align " << align << " len " << len;
    }
  }
  for (int i = 0; i < 200; ++i) {
    const size_t len = rng() % 4096, align = rng() % 16;
    ASSERT_EQ(csum_fold(csum_partial(buf.data() + align, len)), ref_sum(buf.data() + align, len));
  }
}

TEST(OffloadChecksum, AllOnesAndCarries) {
  std::vector<uint8_t> ff(65537, 0xff);
  for (size_t len : {1u, 2u, 7u, 8u, 31u, 32u, 33u, 1500u, 65535u, 65537u}) {
    EXPECT_EQ(csum_fold(csum_partial(ff.data(), len)), ref_sum(ff.data(), len)) << len;
  }
}

TEST(OffloadChecksum, InitialSumAndEvenPieces) {
  std::mt19937 rng(99);
  std::vector<uint8_t> buf(1001);
  for (auto& b : buf) b = uint8_t(rng());
  for (size_t cut = 0; cut <= buf.size(); cut += 2) {
    uint32_t s = csum_partial(buf.data(), cut);
    s = csum_partial(buf.data() + cut, buf.size() - cut, s);
    ASSERT_EQ(csum_fold(s), ref_sum(buf.data(), buf.size())) << cut;
  }
  // csum_add folds the end-around carry.
  EXPECT_EQ(csum_fold(csum_add(0xffffffffu, 1)), csum_fold(1));
  EXPECT_EQ(csum_add(0xffffffffu, 2), 2u);
}

TEST(OffloadChecksum, Ipv4HeaderChecksum) {
  // A header from a capture (checksum 0xb861): 4500 0073 0000 4000 4011 b861 c0a8 0001
  // c0a8 00c7.
  uint8_t h[20] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                   0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
  EXPECT_EQ(ipv4_header_checksum(h, 20), 0xb861);
  h[10] = 0x12;  // the field is ignored
  EXPECT_EQ(ipv4_header_checksum(h, 20), 0xb861);
  // With options: verified by the reference (sum over the header == 0xffff).
  uint8_t o[32];
  std::mt19937 rng(7);
  for (auto& b : o) b = uint8_t(rng());
  o[0] = 0x48;
  test::wr16(o + 10, ipv4_header_checksum(o, 32));
  EXPECT_EQ(ref_sum(o, 32), 0xffff);
}

TEST(OffloadChecksum, PseudoHeaders) {
  const uint8_t s4[4] = {10, 1, 2, 3}, d4[4] = {192, 168, 200, 4};
  const uint8_t v4[] = {10, 1, 2, 3, 192, 168, 200, 4, 0, 6, 0x05, 0xdc};
  EXPECT_EQ(csum_fold(pseudo_sum_v4(s4, d4, 6, 1500)), ref_sum(v4, sizeof v4));
  uint8_t s6[16], d6[16], v6[40] = {};
  for (int i = 0; i < 16; ++i) v6[i] = s6[i] = uint8_t(0xf0 + i);
  for (int i = 0; i < 16; ++i) v6[16 + i] = d6[i] = uint8_t(0x11 * i);
  v6[34] = 0xfa;  // length 0xfa00 + 0x17 as 32 bits
  v6[35] = 0x17;
  v6[39] = 17;
  EXPECT_EQ(csum_fold(pseudo_sum_v6(s6, d6, 17, 0xfa17)), ref_sum(v6, sizeof v6));
  v6[33] = 0x01;  // a length above 16 bits (jumbo) is summed as 32 bits
  EXPECT_EQ(csum_fold(pseudo_sum_v6(s6, d6, 17, 0x1fa17)), ref_sum(v6, sizeof v6));
}

// RFC 1624: updating one field gives the checksum a recomputation gives.
TEST(OffloadChecksum, IncrementalUpdate) {
  std::mt19937 rng(5);
  std::vector<uint8_t> d(64);
  for (int iter = 0; iter < 2000; ++iter) {
    for (auto& b : d) b = uint8_t(rng());
    test::wr16(&d[10], 0);
    const uint16_t check = uint16_t(~ref_sum(d.data(), d.size()));
    test::wr16(&d[10], check);
    const size_t at = 2 * (rng() % 16) + 20;
    if (iter % 2 == 0) {
      const uint16_t old16 = test::rd16(&d[at]);
      const uint16_t new16 = iter % 8 == 0 ? 0 : uint16_t(rng());  // zero: RFC 1624 case
      test::wr16(&d[at], new16);
      test::wr16(&d[10], csum_replace16(check, old16, new16));
    } else {
      const uint32_t old32 = test::rd32(&d[at]);
      const uint32_t new32 = uint32_t(rng());
      test::wr32(&d[at], new32);
      test::wr16(&d[10], csum_replace32(check, old32, new32));
    }
    // The data with the updated checksum verifies (sum == 0xffff, i.e. -0).
    ASSERT_EQ(ref_sum(d.data(), d.size()), 0xffff) << iter;
  }
  // RFC 1624 section 4's example: the update must not produce 0x0000 where a recomputation
  // gives 0xffff... both are -0/+0 in ones' complement; eqn. 3 yields the recomputed value.
  // Header sums to 0xcd7a with the field holding 0xdd2f; field changes 0x5555 -> 0x3285.
  EXPECT_EQ(csum_replace16(0xdd2f, 0x5555, 0x3285), 0x0000);
}

}  // namespace
}  // namespace vnet::net
