// Unit tests for net::wire_cost(): a plain frame is one packet of its length; a TSO or
// USO frame is its segments (as segment() makes them) and their bytes, whatever hdr_len
// the sender claims; gso_size 1 on a 64 KiB frame is thousands of packets; headers that
// do not parse count at least as many segments as there could be.
#include "net/wire_cost.h"

#include <gtest/gtest.h>

#include "net/offload.h"
#include "offload_test_util.h"

namespace vnet::net {
namespace {

using test::build_frame;
using test::FrameSpec;

class WireCostTest : public ::testing::Test {
 protected:
  // A GSO frame as a guest sends it; returns its header bytes (up to the L4 payload).
  uint32_t make(const FrameSpec& s, uint8_t gso_type, uint16_t mss) {
    test::BuiltFrame b = build_frame(p_->data, s);
    p_->len = b.len;
    test::make_partial(*p_, b, s.ip_version, s.proto);
    p_->vhdr.gso_type = gso_type;
    p_->vhdr.gso_size = mss;
    p_->vhdr.hdr_len = uint16_t(b.payload_off);
    return b.payload_off;
  }
  // What segment() makes of the frame: segments and the sum of their lengths.
  WireCost segmented() {
    auto out = test::make_packet();
    Packet* o = out.get();
    WireCost c{0, 0};
    for (uint32_t first = 0;;) {
      SegmentResult r = segment(*p_, OffloadCaps{}, first, &o, 1);
      EXPECT_EQ(r.error, OffloadError::kOk);
      if (r.error != OffloadError::kOk || r.produced == 0) break;
      c.packets += r.produced;
      c.bytes += o->len;
      first += r.produced;
      if (first == r.total) break;
    }
    return c;
  }
  std::unique_ptr<Packet> p_ = test::make_packet();
};

TEST_F(WireCostTest, PlainFrameIsOnePacket) {
  p_->len = 1514;
  const WireCost c = wire_cost(*p_);
  EXPECT_EQ(c.packets, 1u);
  EXPECT_EQ(c.bytes, 1514u);
}

TEST_F(WireCostTest, TsoMatchesSegmentation) {
  for (int ipv : {4, 6}) {
    for (uint16_t mss : {1448, 536, 1000}) {
      FrameSpec s;
      s.ip_version = ipv;
      s.tcp_opts = 12;
      s.payload = 64000;
      make(s, ipv == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6, mss);
      const WireCost want = segmented();
      const WireCost got = wire_cost(*p_);
      EXPECT_EQ(got.packets, want.packets) << ipv << " " << mss;
      EXPECT_EQ(got.bytes, want.bytes) << ipv << " " << mss;
      EXPECT_EQ(got.packets, (64000u + mss - 1) / mss);
    }
  }
}

TEST_F(WireCostTest, UsoWithVlanTag) {
  FrameSpec s;
  s.proto = 17;
  s.n_vlans = 1;
  s.payload = 30000;
  const uint32_t hdr = make(s, VIRTIO_NET_HDR_GSO_UDP_L4, 1200);
  EXPECT_EQ(hdr, 14u + 4 + 20 + 8);
  const WireCost c = wire_cost(*p_);
  EXPECT_EQ(c.packets, 25u);
  EXPECT_EQ(c.bytes, uint64_t(p_->len) + 24u * hdr);
}

TEST_F(WireCostTest, TinyGsoSizeIsThousandsOfPackets) {
  FrameSpec s;
  s.payload = 65000;
  const uint32_t hdr = make(s, VIRTIO_NET_HDR_GSO_TCPV4, 16);
  const WireCost c = wire_cost(*p_);
  EXPECT_EQ(c.packets, 65000u / 16 + 1);
  EXPECT_EQ(c.bytes, uint64_t(p_->len) + uint64_t(c.packets - 1) * hdr);
  // A lying hdr_len changes nothing.
  p_->vhdr.hdr_len = uint16_t(p_->len - 1);
  EXPECT_EQ(wire_cost(*p_).packets, c.packets);
  p_->vhdr.gso_size = 1;
  EXPECT_EQ(wire_cost(*p_).packets, 65000u);
}

TEST_F(WireCostTest, UnparsableHeadersCountTheMostSegments) {
  FrameSpec s;
  s.payload = 10000;
  make(s, VIRTIO_NET_HDR_GSO_TCPV4, 100);
  p_->data[14] = 0x35;  // IPv4 with IHL 5 -> version 3: not IPv4
  const WireCost c = wire_cost(*p_);
  EXPECT_EQ(c.packets, (p_->len - (14u + 20 + 8) + 99) / 100);
  EXPECT_GE(c.packets, 100u);
}

TEST_F(WireCostTest, GsoSizeZeroOrTinyFrame) {
  FrameSpec s;
  s.payload = 0;
  make(s, VIRTIO_NET_HDR_GSO_TCPV4, 1448);
  EXPECT_EQ(wire_cost(*p_).packets, 1u);
  EXPECT_EQ(wire_cost(*p_).bytes, p_->len);
  s.payload = 5000;
  make(s, VIRTIO_NET_HDR_GSO_TCPV4, 0);
  EXPECT_EQ(wire_cost(*p_).packets, 1u);
}

}  // namespace
}  // namespace vnet::net
