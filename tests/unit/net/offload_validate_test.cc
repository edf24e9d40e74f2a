// Tests for validate() (each rejection reason), finish_csum() (TCP/UDP over IPv4/IPv6 give
// what a from-scratch reference computation gives), decide() and the capability helpers.
#include <gtest/gtest.h>

#include <linux/if_tun.h>

#include "net/offload.h"
#include "offload_test_util.h"

namespace vnet::net {
namespace {

using test::build_frame;
using test::BuiltFrame;
using test::FrameSpec;

constexpr OffloadCaps kAll{true, true, true, true, true};

class OffloadValidate : public ::testing::Test {
 protected:
  // A GSO frame as a guest sends it: CHECKSUM_PARTIAL, gso fields set.
  BuiltFrame gso(const FrameSpec& s, uint8_t gso_type, uint16_t mss = 1448) {
    b_ = build_frame(p_->data, s);
    p_->len = b_.len;
    test::make_partial(*p_, b_, s.ip_version, s.proto);
    p_->vhdr.gso_type = gso_type;
    p_->vhdr.gso_size = mss;
    p_->vhdr.hdr_len = uint16_t(b_.payload_off);
    return b_;
  }
  OffloadError check(OffloadCaps src = kAll) { return validate(*p_, src); }

  std::unique_ptr<Packet> p_ = test::make_packet();
  BuiltFrame b_;
};

TEST_F(OffloadValidate, PlainFramesPass) {
  FrameSpec s;
  b_ = build_frame(p_->data, s);
  p_->len = b_.len;
  EXPECT_EQ(check(OffloadCaps{}), OffloadError::kOk);
  // Unknown flag bits are ignored (5.1.6.2.2).
  p_->vhdr.flags = 0x40;
  EXPECT_EQ(check(OffloadCaps{}), OffloadError::kOk);
  // csum fields are not looked at without NEEDS_CSUM.
  p_->vhdr.csum_start = 60000;
  EXPECT_EQ(check(OffloadCaps{}), OffloadError::kOk);
}

TEST_F(OffloadValidate, ChecksumRules) {
  FrameSpec s;
  b_ = build_frame(p_->data, s);
  p_->len = b_.len;
  test::make_partial(*p_, b_, 4, 6);
  EXPECT_EQ(check(), OffloadError::kOk);
  EXPECT_EQ(check(OffloadCaps{}), OffloadError::kCsumNotNegotiated);
  p_->vhdr.flags |= VIRTIO_NET_HDR_F_DATA_VALID;
  EXPECT_EQ(check(), OffloadError::kFlagsForbidden);
  p_->vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_RSC_INFO;
  EXPECT_EQ(check(), OffloadError::kFlagsForbidden);
  p_->vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  p_->vhdr.csum_start = uint16_t(b_.len - 1);
  p_->vhdr.csum_offset = 0;
  EXPECT_EQ(check(), OffloadError::kCsumStartBeyondFrame);
  p_->vhdr.csum_start = 0xffff;
  EXPECT_EQ(check(), OffloadError::kCsumStartBeyondFrame);
  p_->vhdr.csum_start = uint16_t(b_.len - 2);  // last two bytes: fits
  EXPECT_EQ(check(), OffloadError::kOk);
  p_->vhdr.csum_start = uint16_t(b_.l4_off);
  p_->vhdr.csum_offset = uint16_t(b_.len - b_.l4_off - 1);
  EXPECT_EQ(check(), OffloadError::kCsumOffsetBeyondFrame);
  p_->vhdr.csum_offset = 0xffff;
  EXPECT_EQ(check(), OffloadError::kCsumOffsetBeyondFrame);
}

TEST_F(OffloadValidate, GsoTypeRules) {
  FrameSpec s;
  s.payload = 4000;
  gso(s, VIRTIO_NET_HDR_GSO_TCPV4);
  EXPECT_EQ(check(), OffloadError::kOk);
  OffloadCaps no_tso4 = kAll;
  no_tso4.tso4 = false;
  EXPECT_EQ(check(no_tso4), OffloadError::kGsoNotNegotiated);
  p_->vhdr.gso_type = 2;
  EXPECT_EQ(check(), OffloadError::kGsoUnknownType);
  p_->vhdr.gso_type = 6;
  EXPECT_EQ(check(), OffloadError::kGsoUnknownType);
  p_->vhdr.gso_type = 0x7f;
  EXPECT_EQ(check(), OffloadError::kGsoUnknownType);
  p_->vhdr.gso_type = VIRTIO_NET_HDR_GSO_UDP;
  EXPECT_EQ(check(), OffloadError::kGsoUfoUnsupported);
  // ECN.
  p_->vhdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN;
  EXPECT_EQ(check(), OffloadError::kOk);
  OffloadCaps no_ecn = kAll;
  no_ecn.tso_ecn = false;
  EXPECT_EQ(check(no_ecn), OffloadError::kEcnNotNegotiated);
  p_->vhdr.gso_type = VIRTIO_NET_HDR_GSO_NONE | VIRTIO_NET_HDR_GSO_ECN;
  EXPECT_EQ(check(), OffloadError::kEcnWithoutTcp);
  p_->vhdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  // GSO without NEEDS_CSUM (5.1.6.2.1 MUST).
  p_->vhdr.flags = 0;
  EXPECT_EQ(check(), OffloadError::kGsoWithoutCsum);
  p_->vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  p_->vhdr.gso_size = 0;
  EXPECT_EQ(check(), OffloadError::kGsoSizeZero);
  p_->vhdr.gso_size = 1448;
  p_->vhdr.hdr_len = uint16_t(b_.len + 1);
  EXPECT_EQ(check(), OffloadError::kHdrLenBeyondFrame);
  // hdr_len is only a hint: a wrong but in-frame value is accepted.
  p_->vhdr.hdr_len = 3;
  EXPECT_EQ(check(), OffloadError::kOk);
  p_->vhdr.gso_size = 1;  // 4000 segments of one byte: still within the bound
  EXPECT_EQ(check(), OffloadError::kOk);
}

TEST_F(OffloadValidate, TooManySegments) {
  FrameSpec s;
  s.payload = kMaxGsoSegments + 1;
  gso(s, VIRTIO_NET_HDR_GSO_TCPV4, 1);
  EXPECT_EQ(check(), OffloadError::kGsoTooManySegments);
}

TEST_F(OffloadValidate, GsoLayoutRules) {
  FrameSpec s;
  s.payload = 3000;
  // TCPV6 on an IPv4 frame, and the reverse.
  gso(s, VIRTIO_NET_HDR_GSO_TCPV6);
  EXPECT_EQ(check(), OffloadError::kGsoL3Mismatch);
  FrameSpec s6 = s;
  s6.ip_version = 6;
  gso(s6, VIRTIO_NET_HDR_GSO_TCPV4);
  EXPECT_EQ(check(), OffloadError::kGsoL3Mismatch);
  // TCP GSO on UDP, USO on TCP.
  FrameSpec su = s;
  su.proto = kIpProtoUdp;
  gso(su, VIRTIO_NET_HDR_GSO_TCPV4);
  EXPECT_EQ(check(), OffloadError::kGsoL4Mismatch);
  gso(s, VIRTIO_NET_HDR_GSO_UDP_L4);
  EXPECT_EQ(check(), OffloadError::kGsoL4Mismatch);
  gso(su, VIRTIO_NET_HDR_GSO_UDP_L4);
  EXPECT_EQ(check(), OffloadError::kOk);
  // USO with ECN.
  p_->vhdr.gso_type = VIRTIO_NET_HDR_GSO_UDP_L4 | VIRTIO_NET_HDR_GSO_ECN;
  EXPECT_EQ(check(), OffloadError::kEcnWithoutTcp);
  // Not IP at all.
  gso(s, VIRTIO_NET_HDR_GSO_TCPV4);
  test::wr16(&p_->data[12], 0x0806);
  EXPECT_EQ(check(), OffloadError::kGsoL3Mismatch);
  // Headers that do not parse: TCP data offset past the datagram.
  gso(s, VIRTIO_NET_HDR_GSO_TCPV4);
  p_->len = b_.l4_off + 10;
  p_->vhdr.csum_start = 0;
  p_->vhdr.csum_offset = 0;
  p_->vhdr.hdr_len = 0;
  test::wr16(&p_->data[b_.l3_off + 2], uint16_t(p_->len - b_.l3_off));
  EXPECT_EQ(check(), OffloadError::kGsoBadHeaders);
  // A fragment.
  gso(s, VIRTIO_NET_HDR_GSO_TCPV4);
  test::wr16(&p_->data[b_.l3_off + 6], 0x2000);
  EXPECT_EQ(check(), OffloadError::kGsoFragment);
  // IP length shorter than the frame (trailing bytes).
  gso(s, VIRTIO_NET_HDR_GSO_TCPV4);
  test::wr16(&p_->data[b_.l3_off + 2], uint16_t(b_.len - b_.l3_off - 1));
  EXPECT_EQ(check(), OffloadError::kGsoLengthMismatch);
  // csum_start / csum_offset not at the TCP checksum.
  gso(s, VIRTIO_NET_HDR_GSO_TCPV4);
  p_->vhdr.csum_start = uint16_t(b_.l3_off);
  EXPECT_EQ(check(), OffloadError::kGsoCsumMismatch);
  gso(s, VIRTIO_NET_HDR_GSO_TCPV4);
  p_->vhdr.csum_offset = 6;
  EXPECT_EQ(check(), OffloadError::kGsoCsumMismatch);
  // IPv6 routing header with segments left: pseudo-header destination elsewhere.
  s6.v6_ext = {43};
  gso(s6, VIRTIO_NET_HDR_GSO_TCPV6);
  EXPECT_EQ(check(), OffloadError::kOk);
  p_->data[b_.l3_off + 40 + 3] = 1;
  EXPECT_EQ(check(), OffloadError::kGsoBadHeaders);
}

TEST_F(OffloadValidate, ErrorNamesAreDistinct) {
  for (int i = 0; i < int(OffloadError::kCount); ++i) {
    const char* a = offload_error_name(OffloadError(i));
    EXPECT_STRNE(a, "?");
    for (int j = 0; j < i; ++j) EXPECT_STRNE(a, offload_error_name(OffloadError(j)));
  }
}

// finish_csum on TCP/UDP over IPv4/IPv6 (with tags, options, extension headers) gives the
// checksum the reference computes from scratch.
TEST(OffloadFinishCsum, MatchesReference) {
  auto p = test::make_packet();
  for (int v : {4, 6}) {
    for (uint8_t proto : {kIpProtoTcp, kIpProtoUdp}) {
      for (uint32_t payload : {0u, 1u, 2u, 333u, 1400u, 9001u}) {
        for (int vlans : {0, 1, 2}) {
          FrameSpec s;
          s.ip_version = v;
          s.proto = proto;
          s.payload = payload;
          s.n_vlans = vlans;
          s.ipv4_opts = vlans * 4;
          if (v == 6 && vlans) s.v6_ext = {0, 60};
          s.fill_seed = uint8_t(payload + vlans);
          const BuiltFrame b = build_frame(p->data, s);
          p->len = b.len;
          const uint32_t co = proto == kIpProtoTcp ? 16 : 6;
          const uint16_t want = test::rd16(&p->data[b.l4_off + co]);
          test::make_partial(*p, b, v, proto);
          ASSERT_TRUE(finish_csum(*p));
          EXPECT_EQ(test::rd16(&p->data[b.l4_off + co]), want)
              << "v" << v << " proto " << int(proto) << " payload " << payload;
          EXPECT_EQ(test::ref_l4_verify(p->data, b.l3_off, v, proto, b.l4_off, b.len - b.l4_off),
                    0xffff);
          EXPECT_FALSE(p->vhdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
        }
      }
    }
  }
}

TEST(OffloadFinishCsum, NoOpAndBadOffsets) {
  auto p = test::make_packet();
  const BuiltFrame b = build_frame(p->data, FrameSpec{});
  p->len = b.len;
  const uint8_t before = p->data[b.l4_off + 16];
  EXPECT_TRUE(finish_csum(*p));  // no NEEDS_CSUM: untouched
  EXPECT_EQ(p->data[b.l4_off + 16], before);
  p->vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  p->vhdr.csum_start = uint16_t(b.len - 1);
  EXPECT_FALSE(finish_csum(*p));
  p->vhdr.csum_start = 0xffff;
  p->vhdr.csum_offset = 0xffff;
  EXPECT_FALSE(finish_csum(*p));
  EXPECT_TRUE(p->vhdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
}

TEST(OffloadDecide, PerDestination) {
  auto p = test::make_packet();
  OffloadCaps none{};
  EXPECT_EQ(decide(*p, none), OffloadAction::kPass);
  p->vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  EXPECT_EQ(decide(*p, none), OffloadAction::kFinishCsum);
  EXPECT_EQ(decide(*p, kAll), OffloadAction::kPass);
  struct Case {
    uint8_t type;
    OffloadCaps dst;
    OffloadAction want;
  } cases[] = {
      {VIRTIO_NET_HDR_GSO_TCPV4, kAll, OffloadAction::kPass},
      {VIRTIO_NET_HDR_GSO_TCPV4, {true, false, true, true, true}, OffloadAction::kSegment},
      {VIRTIO_NET_HDR_GSO_TCPV4, {false, true, true, true, true}, OffloadAction::kSegment},
      {VIRTIO_NET_HDR_GSO_TCPV6, {true, true, false, true, true}, OffloadAction::kSegment},
      {VIRTIO_NET_HDR_GSO_TCPV6, {true, false, true, false, false}, OffloadAction::kPass},
      {VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN,
       {true, true, true, false, true},
       OffloadAction::kSegment},
      {VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, kAll, OffloadAction::kPass},
      {VIRTIO_NET_HDR_GSO_UDP_L4, {true, true, true, true, false}, OffloadAction::kSegment},
      {VIRTIO_NET_HDR_GSO_UDP_L4, {true, false, false, false, true}, OffloadAction::kPass},
      {VIRTIO_NET_HDR_GSO_TCPV4, none, OffloadAction::kSegment},
  };
  for (const Case& c : cases) {
    p->vhdr.gso_type = c.type;
    EXPECT_EQ(decide(*p, c.dst), c.want) << int(c.type);
  }
}

// validate() and decide() answer the usual frame inline: they must agree with the whole
// checks for every header, not only the plain one (each flags byte, each GSO type with
// and without ECN, every capability set), on a TCP frame and on a partial-checksum one.
TEST(OffloadInline, AgreesWithTheWholeCheck) {
  auto p = test::make_packet();
  FrameSpec s;
  const BuiltFrame b = build_frame(p->data, s);
  p->len = b.len;
  const uint8_t types[] = {VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
                           VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, 2};
  uint32_t fast = 0, cases = 0;
  for (int partial = 0; partial < 2; ++partial) {
    p->vhdr = {};
    if (partial) test::make_partial(*p, b, s.ip_version, s.proto);
    const virtio_net_hdr_v1 base = p->vhdr;
    for (uint32_t caps = 0; caps < 32; ++caps) {
      const OffloadCaps c{bool(caps & 1), bool(caps & 2), bool(caps & 4), bool(caps & 8),
                          bool(caps & 16)};
      for (uint32_t flags = 0; flags < 256; ++flags) {
        for (uint8_t t : types) {
          for (uint8_t ecn : {uint8_t(0), uint8_t(VIRTIO_NET_HDR_GSO_ECN)}) {
            p->vhdr = base;
            p->vhdr.flags = uint8_t(flags);
            p->vhdr.gso_type = uint8_t(t | ecn);
            if (t != VIRTIO_NET_HDR_GSO_NONE) {
              p->vhdr.gso_size = 1000;
              p->vhdr.hdr_len = uint16_t(b.payload_off);
            }
            ASSERT_EQ(validate(*p, c), validate_offloads(*p, c))
                << "flags " << flags << " gso " << int(p->vhdr.gso_type) << " caps " << caps;
            ASSERT_EQ(decide(*p, c), decide_offloads(*p, c))
                << "flags " << flags << " gso " << int(p->vhdr.gso_type) << " caps " << caps;
            fast += (p->vhdr.flags | p->vhdr.gso_type) == 0;
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(fast, 2u * 32u);  // the inline answer was taken, and not only that
  EXPECT_GT(cases, fast);
}

TEST(OffloadCapsTest, FromFeatures) {
  auto bit = [](unsigned b) { return 1ULL << b; };
  OffloadCaps g = guest_rx_caps(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) |
                                bit(VIRTIO_NET_F_GUEST_ECN) | bit(VIRTIO_NET_F_GUEST_USO4));
  EXPECT_TRUE(g.csum);
  EXPECT_TRUE(g.tso4);
  EXPECT_FALSE(g.tso6);
  EXPECT_TRUE(g.tso_ecn);
  EXPECT_FALSE(g.uso);  // needs USO4 and USO6
  // GSO features without the checksum feature are void.
  g = guest_rx_caps(bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6));
  EXPECT_FALSE(g.tso4 || g.tso6 || g.csum);
  OffloadCaps h = guest_tx_caps(bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO6) |
                                bit(VIRTIO_NET_F_HOST_USO) | bit(VIRTIO_NET_F_GUEST_TSO4));
  EXPECT_TRUE(h.csum);
  EXPECT_FALSE(h.tso4);
  EXPECT_TRUE(h.tso6);
  EXPECT_FALSE(h.tso_ecn);
  EXPECT_TRUE(h.uso);
  OffloadCaps t = tap_caps(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | kTunFUso4 | kTunFUso6);
  EXPECT_TRUE(t.csum && t.tso4 && t.tso6 && t.uso);
  EXPECT_FALSE(t.tso_ecn);
  t = tap_caps(TUN_F_TSO4);
  EXPECT_FALSE(t.tso4);
}

}  // namespace
}  // namespace vnet::net
