// Unit tests for the forwarder's policing (a fake clock in nanoseconds): off, every frame
// goes; an ingress packet or bit rate passes the burst, then the rate, keeps the frames
// that pass in order and counts the rest as `policed` (not learned); a TSO frame costs its
// segments; storm control holds broadcast, multicast and unknown unicast floods to their
// own limits (storm_*) and leaves known unicast alone; reconfiguring takes effect at once.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "dataplane/fake_port.h"
#include "dataplane/forwarder.h"
#include "net/offload_test_util.h"
#include "switch/mac.h"

namespace vnet::dataplane {
namespace {

constexpr uint64_t kSec = 1'000'000'000;
constexpr uint64_t kMs = 1'000'000;

uint64_t g_now = kSec;
uint64_t fake_clock() {
  return g_now;
}

const char* const kA = "52:54:00:00:00:0a";
const char* const kB = "52:54:00:00:00:0b";
const char* const kC = "52:54:00:00:00:0c";
const char* const kNobody = "52:54:00:00:00:99";
const char* const kBcast = "ff:ff:ff:ff:ff:ff";
const char* const kMcast = "01:00:5e:00:00:01";

class ForwarderPolicingTest : public FakePortsTest {
 protected:
  ForwarderPolicingTest() : FakePortsTest(3) {
    g_now = kSec;
    fwd_.set_policer_clock(&fake_clock);
    // B on port 2 is known; A on port 1 sends.
    send_one(2, kBcast, kB);
    clear();
  }

  void police(uint16_t id, const sw::PolicerConfig& c) {
    port(id).policer().configure(c, kSec, g_now);
  }

  net::Packet* frame(uint32_t i, const char* dst, const char* src, uint32_t len = 60) {
    net::Packet& p = batch_[i];
    p.vhdr = {};
    auto d = sw::Mac::parse(dst)->to_bytes(), s = sw::Mac::parse(src)->to_bytes();
    std::copy(d.begin(), d.end(), p.data);
    std::copy(s.begin(), s.end(), p.data + 6);
    p.data[12] = 0x88;
    p.data[13] = 0xb5;
    p.data[14] = uint8_t(i);  // which frame it was
    p.len = len;
    return &p;
  }
  void send_one(uint16_t from, const char* dst, const char* src) {
    net::Packet* p = frame(31, dst, src);
    fwd_.forward(port(from), &p, 1, ports_, g_now);
  }
  // n frames from A on port 1 to dst in one burst; returns how many port 2 got.
  size_t burst(const char* dst, uint32_t n = 32, uint32_t len = 60) {
    std::vector<net::Packet*> pkts;
    for (uint32_t i = 0; i < n; ++i) pkts.push_back(frame(i, dst, kA, len));
    const size_t before = port(2).frames().size();
    fwd_.forward(port(1), pkts.data(), n, ports_, g_now);
    return port(2).frames().size() - before;
  }
  uint64_t drops(uint16_t id, net::Drop d) { return port(id).counters().drops.get(d); }
};

TEST_F(ForwarderPolicingTest, OffForwardsEverything) {
  EXPECT_FALSE(port(1).policer().on());
  EXPECT_EQ(burst(kB), 32u);
  police(1, sw::PolicerConfig{});
  EXPECT_EQ(burst(kB), 32u);
  for (size_t d = 0; d < size_t(net::Drop::kCount); ++d)
    EXPECT_EQ(drops(1, net::Drop(d)), 0u) << net::drop_name(net::Drop(d));
}

TEST_F(ForwarderPolicingTest, IngressPacketRate) {
  sw::PolicerConfig c;
  c.ingress.packets = {1000, 10};  // 1000 pps, 10 packets
  police(1, c);
  ASSERT_EQ(burst(kB), 10u);
  EXPECT_EQ(drops(1, net::Drop::kPoliced), 22u);
  // The first ten, in order.
  const auto got = port(2).frames();
  for (uint32_t i = 0; i < 10; ++i) EXPECT_EQ(got[i]->data[14], i);
  // A second of bursts every millisecond: one frame each.
  size_t passed = 0;
  for (int ms = 1; ms <= 1000; ++ms) {
    g_now += kMs;
    passed += burst(kB);
  }
  EXPECT_EQ(passed, 1000u);
  EXPECT_EQ(drops(1, net::Drop::kPoliced), 22u + 1000 * 31);
  // Lifted: everything again.
  police(1, sw::PolicerConfig{});
  EXPECT_EQ(burst(kB), 32u);
}

TEST_F(ForwarderPolicingTest, IngressBitRate) {
  sw::PolicerConfig c;
  c.ingress.bits = {1'000'000, 8 * 1514 * 3};  // 1 Mbit/s, three full frames
  police(1, c);
  EXPECT_EQ(burst(kB, 32, 1514), 3u);
  g_now += 12'112'000;  // 12.112 ms: 12112 bits, one more 1514-byte frame
  EXPECT_EQ(burst(kB, 32, 1514), 1u);
  EXPECT_EQ(burst(kB, 32, 1514), 0u);
  EXPECT_EQ(drops(1, net::Drop::kPoliced), 29u + 31 + 32);
}

TEST_F(ForwarderPolicingTest, PolicedFramesAreNotLearned) {
  sw::PolicerConfig c;
  c.ingress.packets = {1, 1};
  police(1, c);
  ASSERT_EQ(burst(kB, 1), 1u);  // the token
  net::Packet* p = frame(0, kB, kC);
  fwd_.forward(port(1), &p, 1, ports_, g_now);
  EXPECT_EQ(fwd_.fdb().lookup(*sw::Mac::parse(kC), 0, g_now), 0);
  EXPECT_EQ(drops(1, net::Drop::kPoliced), 1u);
}

TEST_F(ForwarderPolicingTest, TsoFrameCostsItsSegments) {
  sw::PolicerConfig c;
  c.ingress.packets = {1000, 64};
  police(1, c);
  net::Packet& p = batch_[20];  // burst(kB, 1) below uses slot 0
  net::test::FrameSpec s;
  s.payload = 64000;
  const net::test::BuiltFrame b = net::test::build_frame(p.data, s);
  p.len = b.len;
  net::test::make_partial(p, b, 4, 6);
  const auto d = sw::Mac::parse(kB)->to_bytes(), a = sw::Mac::parse(kA)->to_bytes();
  std::copy(d.begin(), d.end(), p.data);
  std::copy(a.begin(), a.end(), p.data + 6);
  p.vhdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  p.vhdr.gso_size = 1000;  // 64 segments: the whole bucket
  net::Packet* pp = &p;
  fwd_.forward(port(1), &pp, 1, ports_, g_now);
  EXPECT_EQ(port(2).frames().size(), 1u);
  EXPECT_EQ(burst(kB, 1), 0u) << "the TSO frame took 64 packets";
  g_now += kSec;
  p.vhdr.gso_size = 1;  // 64000 segments: more than the bucket ever holds
  fwd_.forward(port(1), &pp, 1, ports_, g_now);
  EXPECT_EQ(port(2).frames().size(), 1u);
  EXPECT_EQ(drops(1, net::Drop::kPoliced), 2u);
  EXPECT_EQ(burst(kB, 32), 32u) << "and took nothing";
}

TEST_F(ForwarderPolicingTest, StormControlByClass) {
  sw::PolicerConfig c;
  c.storm[size_t(sw::StormClass::kBroadcast)].packets = {100, 2};
  c.storm[size_t(sw::StormClass::kUnknownUnicast)].packets = {100, 5};
  police(1, c);
  EXPECT_EQ(burst(kBcast), 2u);
  EXPECT_EQ(drops(1, net::Drop::kStormBroadcast), 30u);
  EXPECT_EQ(port(3).frames().size(), 2u) << "the same frames to every port";
  EXPECT_EQ(burst(kMcast), 32u) << "multicast has no limit";
  EXPECT_EQ(burst(kNobody), 5u);
  EXPECT_EQ(drops(1, net::Drop::kStormUnknownUnicast), 27u);
  EXPECT_EQ(burst(kB), 32u) << "known unicast is not flooded";
  EXPECT_EQ(drops(1, net::Drop::kStormMulticast), 0u);
  EXPECT_EQ(drops(1, net::Drop::kPoliced), 0u);
  g_now += 10 * kMs;  // one token each
  EXPECT_EQ(burst(kBcast), 1u);
  EXPECT_EQ(burst(kNobody), 1u);
  // The other ports' floods are theirs.
  clear();
  send_one(3, kBcast, kC);
  EXPECT_EQ(port(2).frames().size(), 1u);
  c = {};
  c.storm[size_t(sw::StormClass::kMulticast)].bits = {1'000'000, 8 * 60 * 4};
  police(1, c);
  EXPECT_EQ(burst(kMcast), 4u);
  EXPECT_EQ(drops(1, net::Drop::kStormMulticast), 28u);
  EXPECT_EQ(burst(kBcast), 32u);
}

TEST_F(ForwarderPolicingTest, IngressThenStorm) {
  sw::PolicerConfig c;
  c.ingress.packets = {1000, 20};
  c.storm[size_t(sw::StormClass::kBroadcast)].packets = {1000, 5};
  police(1, c);
  EXPECT_EQ(burst(kBcast), 5u);
  EXPECT_EQ(drops(1, net::Drop::kPoliced), 12u);
  EXPECT_EQ(drops(1, net::Drop::kStormBroadcast), 15u);
}

}  // namespace
}  // namespace vnet::dataplane
