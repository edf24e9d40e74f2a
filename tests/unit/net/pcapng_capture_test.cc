// pcapng blocks (lengths, option padding, round trip through the reader) and the
// capture ring (filter, wrap, drops when full).
#include <gtest/gtest.h>

#include <pcap/pcap.h>

#include <cstring>
#include <memory>
#include <string>

#include "net/capture.h"
#include "net/pcapng.h"

namespace vnet::net {
namespace {

uint32_t u32(const std::string& s, size_t off) {
  uint32_t v;
  std::memcpy(&v, s.data() + off, 4);
  return v;
}

// Every block: total length at both ends, a multiple of 4.
void expect_framed(const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const uint32_t len = u32(s, off + 4);
    ASSERT_EQ(len % 4, 0u);
    ASSERT_LE(off + len, s.size());
    EXPECT_EQ(u32(s, off + len - 4), len);
    off += len;
  }
  EXPECT_EQ(off, s.size());
}

TEST(Pcapng, SectionAndInterfaceBlocksArePadded) {
  std::string s;
  pcapng::append_section_header(s, "vnetd");  // 5-byte option: 3 bytes of padding
  const size_t shb = s.size();
  EXPECT_EQ(u32(s, 0), pcapng::kSectionHeader);
  EXPECT_EQ(u32(s, 8), pcapng::kByteOrderMagic);
  EXPECT_EQ(shb, 28u + 4 + 8 + 4);  // fixed part, option header, padded "vnetd", end option
  pcapng::append_interface(s, pcapng::kLinkTypeEthernet, 262144, "vm1");
  EXPECT_EQ(u32(s, shb), pcapng::kInterfaceDescription);
  // 16 fixed + if_name (4 + 4) + if_tsresol (4 + 4) + end (4) + trailing length (4)
  EXPECT_EQ(u32(s, shb + 4), 16u + 8 + 8 + 4 + 4);
  EXPECT_EQ(u32(s, shb + 12), 262144u);
  EXPECT_EQ(std::memcmp(s.data() + shb + 20, "vm1\0", 4), 0);
  expect_framed(s);
}

TEST(Pcapng, PacketRoundTripWithFlagsAndComment) {
  for (uint32_t caplen = 0; caplen < 9; ++caplen) {
    std::string s;
    const std::string data(caplen, 'x');
    pcapng::append_packet(s, 0, 1234567890123456789ULL, data, caplen + 100, pcapng::kFlagOutbound,
                          "GSO");
    expect_framed(s);
    EXPECT_EQ(s.size() % 4, 0u);
    bool bad = true;
    auto b = pcapng::next_block(s, &bad);
    ASSERT_TRUE(b);
    EXPECT_FALSE(bad);
    auto p = pcapng::read_packet(*b);
    ASSERT_TRUE(p);
    EXPECT_EQ(p->data, data);
    EXPECT_EQ(p->orig_len, caplen + 100);
    EXPECT_EQ(p->flags, pcapng::kFlagOutbound);
    EXPECT_EQ(p->comment, "GSO");
    EXPECT_EQ(p->ts_ns, 1234567890123456789ULL);
  }
  std::string plain;  // no options at all: 32 bytes + data
  pcapng::append_packet(plain, 0, 1, "abcd", 4, 0);
  EXPECT_EQ(plain.size(), 32u + 4);
}

TEST(Pcapng, StatisticsRoundTrip) {
  std::string s;
  pcapng::Statistics st{1, 2, 30, 4, 25, 0, 21};
  pcapng::append_statistics(s, 0, 99, st);
  expect_framed(s);
  bool bad;
  auto b = pcapng::next_block(s, &bad);
  ASSERT_TRUE(b);
  const auto r = pcapng::read_statistics(*b);
  EXPECT_EQ(r.start_ns, 1u);
  EXPECT_EQ(r.end_ns, 2u);
  EXPECT_EQ(r.ifrecv, 30u);
  EXPECT_EQ(r.ifdrop, 4u);
  EXPECT_EQ(r.filteraccept, 25u);
  EXPECT_EQ(r.usrdeliv, 21u);
}

TEST(Pcapng, ReaderWaitsForWholeBlocksAndRejectsBadLengths) {
  std::string s;
  pcapng::append_packet(s, 0, 1, "abcdef", 6, pcapng::kFlagInbound);
  bool bad;
  EXPECT_FALSE(pcapng::next_block(std::string_view(s).substr(0, s.size() - 1), &bad));
  EXPECT_FALSE(bad);
  std::string broken = s;
  const uint32_t odd = 13;
  std::memcpy(broken.data() + 4, &odd, 4);
  EXPECT_FALSE(pcapng::next_block(broken, &bad));
  EXPECT_TRUE(bad);
}

std::unique_ptr<Packet> udp_frame(uint16_t dport, uint32_t len = 60) {
  auto p = std::make_unique<Packet>();
  std::memset(p->data, 0, len);
  p->len = len;
  p->data[12] = 0x08;  // IPv4
  p->data[14] = 0x45;  // version 4, IHL 5
  p->data[23] = 17;    // UDP
  p->data[36] = uint8_t(dport >> 8);
  p->data[37] = uint8_t(dport);
  return p;
}

TEST(Capture, FilterKeepsOnlyMatchingFrames) {
  pcap_t* dead = pcap_open_dead(DLT_EN10MB, 262144);
  bpf_program prog{};
  ASSERT_EQ(pcap_compile(dead, &prog, "udp port 9999", 1, PCAP_NETMASK_UNKNOWN), 0);
  Capture cap(&prog, uint8_t(CaptureDir::kRx), 262144, 1, 1 << 20);
  pcap_freecode(&prog);
  pcap_close(dead);
  auto a = udp_frame(9999), b = udp_frame(53);
  Packet* burst[] = {a.get(), b.get(), a.get()};
  CaptureSet set{{&cap}, true, false};
  capture_burst(set, CaptureDir::kRx, burst, 3, 0, VlanConfig{});
  capture_burst(set, CaptureDir::kTx, burst, 3, 0, VlanConfig{});  // not wanted
  CaptureRing& r = cap.ring(0);
  EXPECT_EQ(r.seen.get(), 3u);
  EXPECT_EQ(r.accepted.get(), 2u);
  for (int i = 0; i < 2; ++i) {
    const CaptureRecord* rec = r.peek();
    ASSERT_NE(rec, nullptr);
    EXPECT_EQ(rec->caplen, 60u);
    EXPECT_EQ(rec->dir, uint8_t(CaptureDir::kRx));
    EXPECT_EQ(reinterpret_cast<const uint8_t*>(rec + 1)[37], uint8_t(9999 & 0xff));
    r.release();
  }
  EXPECT_EQ(r.peek(), nullptr);
}

TEST(Capture, TxFramesCarryTheEgressTag) {
  Capture cap(nullptr, uint8_t(CaptureDir::kTx), 262144, 1, 1 << 20);
  auto a = udp_frame(1);
  a->vlan = 20;
  VlanConfig trunk;
  trunk.trunk = true;
  trunk.allowed.set(20);
  Packet* burst[] = {a.get()};
  cap.add_burst(CaptureDir::kTx, burst, 1, 0, trunk, 5);
  const CaptureRecord* rec = cap.ring(0).peek();
  ASSERT_NE(rec, nullptr);
  EXPECT_EQ(rec->orig_len, 64u);
  const auto* d = reinterpret_cast<const uint8_t*>(rec + 1);
  EXPECT_EQ(d[12], 0x81);
  EXPECT_EQ(d[13], 0x00);
  EXPECT_EQ(d[15], 20);
  EXPECT_EQ(d[16], 0x08);  // the EtherType after the tag
}

TEST(Capture, FullRingDropsAndCountsThenWraps) {
  Capture cap(nullptr, 3, 262144, 1, 0);  // the smallest ring
  CaptureRing& r = cap.ring(0);
  auto big = udp_frame(1, 60000);
  Packet* burst[] = {big.get()};
  uint32_t n = 0;
  while (r.dropped.get() == 0 && n < 100) {
    cap.add_burst(CaptureDir::kRx, burst, 1, 0, VlanConfig{}, n);
    ++n;
  }
  EXPECT_EQ(r.dropped.get(), 1u);
  const uint32_t fitted = n - 1;
  EXPECT_GT(fitted, 0u);
  // Consume and refill several times: records wrap around the ring's end.
  for (int round = 0; round < 5; ++round) {
    const CaptureRecord* rec = r.peek();
    ASSERT_NE(rec, nullptr);
    EXPECT_EQ(rec->caplen, 60000u);
    r.release();
    cap.add_burst(CaptureDir::kRx, burst, 1, 0, VlanConfig{}, 0);
    EXPECT_EQ(r.dropped.get(), 1u) << "round " << round;
  }
  uint32_t left = 0;
  while (r.peek()) {
    r.release();
    ++left;
  }
  EXPECT_EQ(left, fitted);
}

}  // namespace
}  // namespace vnet::net
