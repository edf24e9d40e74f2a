// Tests for the frame parser (net/frame.h): tagged and untagged frames, IPv4 options, IPv6
// extension headers, fragments, and every truncation of each frame (each one in a buffer of
// exactly its length, so the ASan build catches a read past the end).
#include "net/frame.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "offload_test_util.h"

namespace vnet::net {
namespace {

using test::build_frame;
using test::BuiltFrame;
using test::FrameSpec;

std::vector<uint8_t> bytes_of(const FrameSpec& s, BuiltFrame* b) {
  std::vector<uint8_t> buf(2048);
  *b = build_frame(buf.data(), s);
  buf.resize(b->len);
  return buf;
}

TEST(OffloadFrame, UntaggedTcpV4) {
  FrameSpec s;
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  ASSERT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kOk);
  EXPECT_EQ(f.l2_len, 14u);
  EXPECT_EQ(f.n_vlans, 0u);
  EXPECT_EQ(f.ethertype, kEthPIpv4);
  EXPECT_EQ(f.l3_off, 14u);
  EXPECT_EQ(f.ip_version, 4);
  EXPECT_EQ(f.l3_len, 20u);
  EXPECT_EQ(f.l4_proto, kIpProtoTcp);
  EXPECT_EQ(f.l4_off, 34u);
  EXPECT_EQ(f.l4_hdr_len, 20u);
  EXPECT_EQ(f.payload_off, 54u);
  EXPECT_EQ(f.ip_end, b.len);
  EXPECT_FALSE(f.is_fragment);
}

TEST(OffloadFrame, DoubleTaggedV4WithOptionsAndTcpOptions) {
  FrameSpec s;
  s.n_vlans = 2;
  s.ipv4_opts = 12;
  s.tcp_opts = 12;
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  ASSERT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kOk);
  EXPECT_EQ(f.n_vlans, 2u);
  EXPECT_EQ(f.vlan_tpid[0], kEthPQinQ);
  EXPECT_EQ(f.vlan_tpid[1], kEthPVlan);
  EXPECT_EQ(f.vlan_tci[0], 100);
  EXPECT_EQ(f.vlan_tci[1], 101);
  EXPECT_EQ(f.l2_len, 22u);
  EXPECT_EQ(f.l3_len, 32u);
  EXPECT_EQ(f.l4_off, 22u + 32u);
  EXPECT_EQ(f.l4_hdr_len, 32u);
  EXPECT_EQ(f.payload_off, b.payload_off);
}

TEST(OffloadFrame, ThreeTagsRejected) {
  FrameSpec s;
  s.n_vlans = 2;
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  // Insert a third tag after the second.
  std::vector<uint8_t> t(buf.begin(), buf.begin() + 20);
  t.insert(t.end(), {0x81, 0x00, 0x00, 0x05});
  t.insert(t.end(), buf.begin() + 20, buf.end());
  FrameInfo f;
  EXPECT_EQ(parse_frame(t.data(), uint32_t(t.size()), &f), ParseStatus::kTooManyVlans);
}

TEST(OffloadFrame, UdpV6WithExtensionHeaders) {
  FrameSpec s;
  s.ip_version = 6;
  s.proto = kIpProtoUdp;
  s.n_vlans = 1;
  s.v6_ext = {0, 43, 60};
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  ASSERT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kOk);
  EXPECT_EQ(f.ip_version, 6);
  EXPECT_EQ(f.l3_off, 18u);
  EXPECT_EQ(f.l3_len, 40u + 24u);
  EXPECT_EQ(f.l4_proto, kIpProtoUdp);
  EXPECT_EQ(f.l4_off, b.l4_off);
  EXPECT_EQ(f.l4_hdr_len, 8u);
  EXPECT_EQ(f.payload_off, b.payload_off);
  EXPECT_FALSE(f.is_fragment);
  EXPECT_FALSE(f.ipv6_routing_pending);
}

TEST(OffloadFrame, Ipv6HopByHopNotFirstRejected) {
  FrameSpec s;
  s.ip_version = 6;
  s.v6_ext = {60, 0};
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kBadIpv6);
}

TEST(OffloadFrame, Ipv6TooManyExtensionHeaders) {
  FrameSpec s;
  s.ip_version = 6;
  s.v6_ext = std::vector<uint8_t>(kMaxIpv6ExtHeaders + 1, 60);
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kTooManyExtHdrs);
  s.v6_ext.pop_back();
  buf = bytes_of(s, &b);
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kOk);
  EXPECT_EQ(f.l4_off, b.l4_off);
}

TEST(OffloadFrame, Ipv6Fragments) {
  FrameSpec s;
  s.ip_version = 6;
  s.v6_ext = {44};
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  // First fragment (offset 0, M=1): L4 parsed.
  buf[b.l3_off + 40 + 3] = 1;
  ASSERT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kOk);
  EXPECT_TRUE(f.is_fragment);
  EXPECT_TRUE(f.first_fragment);
  EXPECT_EQ(f.ipv6_frag_off, b.l3_off + 40);
  // Later fragment: no L4 header.
  test::wr16(&buf[b.l3_off + 40 + 2], 0x0100);
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kL4Unknown);
  EXPECT_TRUE(f.is_fragment);
  EXPECT_FALSE(f.first_fragment);
  EXPECT_EQ(f.l4_hdr_len, 0u);
}

TEST(OffloadFrame, Ipv4Fragments) {
  FrameSpec s;
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  test::wr16(&buf[b.l3_off + 6], 0x2000);  // MF, offset 0
  ASSERT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kOk);
  EXPECT_TRUE(f.is_fragment);
  EXPECT_TRUE(f.first_fragment);
  test::wr16(&buf[b.l3_off + 6], 0x0010);  // offset 16*8
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kL4Unknown);
  EXPECT_TRUE(f.is_fragment);
  EXPECT_FALSE(f.first_fragment);
}

TEST(OffloadFrame, Ipv4LengthsChecked) {
  FrameSpec s;
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  auto tot = [&](uint16_t v) { test::wr16(&buf[b.l3_off + 2], v); };
  tot(uint16_t(b.len - b.l3_off + 1));  // beyond the frame
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kBadIpv4);
  tot(19);  // below IHL
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kBadIpv4);
  tot(30);  // room for IP but not for TCP
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kBadL4);
  tot(uint16_t(b.len - b.l3_off - 10));  // shorter than the frame: trailing padding
  ASSERT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kOk);
  EXPECT_EQ(f.ip_end, b.len - 10);
  tot(uint16_t(b.len - b.l3_off));
  buf[b.l3_off] = 0x44;  // IHL 4
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kBadIpv4);
  buf[b.l3_off] = 0x65;  // version 6 under ethertype IPv4
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kBadIpv4);
  buf[b.l3_off] = 0x45;
  buf[b.l4_off + 12] = 0x40;  // TCP data offset 4
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kBadL4);
}

TEST(OffloadFrame, NonIpAndOtherL4) {
  FrameSpec s;
  s.proto = 47;  // GRE: not parsed
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  FrameInfo f;
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kL4Unknown);
  EXPECT_EQ(f.l4_proto, 47);
  EXPECT_EQ(f.l4_off, 34u);
  test::wr16(&buf[12], 0x0806);  // ARP
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kNotIp);
  EXPECT_EQ(f.ethertype, 0x0806);
  EXPECT_EQ(f.ip_version, 0);
}

TEST(OffloadFrame, Ipv6JumbogramRejected) {
  FrameSpec s;
  s.ip_version = 6;
  BuiltFrame b;
  auto buf = bytes_of(s, &b);
  test::wr16(&buf[b.l3_off + 4], 0);
  FrameInfo f;
  EXPECT_EQ(parse_frame(buf.data(), uint32_t(buf.size()), &f), ParseStatus::kBadIpv6);
}

// Every prefix of each frame, copied into a heap buffer of exactly that size: the parser
// must never read past it (ASan), and must never report an offset beyond it.
TEST(OffloadFrame, EveryTruncationIsSafe) {
  std::vector<FrameSpec> specs;
  {
    FrameSpec s;
    s.payload = 3;
    specs.push_back(s);
    s.n_vlans = 2;
    s.ipv4_opts = 8;
    s.tcp_opts = 8;
    specs.push_back(s);
    s.proto = kIpProtoUdp;
    specs.push_back(s);
    FrameSpec v6;
    v6.ip_version = 6;
    v6.payload = 2;
    v6.n_vlans = 1;
    v6.v6_ext = {0, 43, 44, 60};
    specs.push_back(v6);
    v6.proto = kIpProtoUdp;
    v6.v6_ext = {60};
    specs.push_back(v6);
  }
  for (const FrameSpec& s : specs) {
    BuiltFrame b;
    auto full = bytes_of(s, &b);
    FrameInfo f;
    ASSERT_EQ(parse_frame(full.data(), uint32_t(full.size()), &f), ParseStatus::kOk);
    for (uint32_t len = 0; len < full.size(); ++len) {
      auto cut = std::make_unique<uint8_t[]>(len + 1);  // +1: make_unique of 0 is fine too
      std::memcpy(cut.get(), full.data(), len);
      // Also shrink the IP length fields to the cut, so deeper layers get exercised.
      for (int fix = 0; fix < 2; ++fix) {
        if (fix == 1 && len >= b.l3_off + 6) {
          if (s.ip_version == 4) {
            test::wr16(cut.get() + b.l3_off + 2, uint16_t(len - b.l3_off));
          } else if (len >= b.l3_off + 40) {
            test::wr16(cut.get() + b.l3_off + 4, uint16_t(len - b.l3_off - 40));
          }
        }
        const ParseStatus st = parse_frame(cut.get(), len, &f);
        // Cut inside the payload with fixed lengths: a valid, shorter frame. Otherwise the
        // frame is inconsistent and must not parse.
        if (fix == 1 && len >= b.payload_off) {
          EXPECT_EQ(st, ParseStatus::kOk) << "len " << len;
          EXPECT_EQ(f.payload_off, b.payload_off);
        } else {
          EXPECT_NE(st, ParseStatus::kOk) << "len " << len << " fix " << fix;
        }
        EXPECT_LE(f.l2_len, len);
        EXPECT_LE(f.ip_end, len);
        EXPECT_LE(f.payload_off, len);
      }
    }
  }
}

}  // namespace
}  // namespace vnet::net
