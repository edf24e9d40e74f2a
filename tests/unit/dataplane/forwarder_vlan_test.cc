// Forwarder VLAN handling (802.1Q): access ports classify untagged frames into their
// VLAN and drop tagged ones; trunk ports take allowed tags (stripped inside the
// switch) and the native VLAN untagged; flooding and unicast stay inside the VLAN;
// the FDB is per VLAN.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/fake_port.h"
#include "dataplane/forwarder.h"
#include "packet_bytes.h"
#include "switch/mac.h"
#include "virtio/net_uapi.h"

namespace vnet::dataplane {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

net::VlanConfig access(uint16_t vlan) {
  net::VlanConfig v;
  v.access = vlan;
  return v;
}

net::VlanConfig trunk(std::initializer_list<uint16_t> vlans, uint16_t native = 0) {
  net::VlanConfig v;
  v.trunk = true;
  for (uint16_t id : vlans) v.allowed.set(id);
  v.native = native;
  return v;
}

class ForwarderVlanTest : public ::testing::Test {
 protected:
  // Ports 1, 2: access VLAN 10; 3: access VLAN 20; 4: trunk 10+20; 5: access 0.
  ForwarderVlanTest() : fwd_(Forwarder::Config{}) {
    const net::VlanConfig cfg[] = {access(10), access(10), access(20), trunk({10, 20}), access(0)};
    for (uint16_t id = 1; id <= 5; ++id) {
      owned_.push_back(std::make_unique<FakePort>("p" + std::to_string(id), id));
      owned_.back()->set_vlan(cfg[id - 1]);
      ports_.push_back(owned_.back().get());
    }
    fwd_.set_ports(ports_);
  }

  FakePort& port(uint16_t id) { return *owned_[id - 1]; }
  void clear() {
    for (auto& p : owned_) p->bursts.clear();
  }

  // A 64-byte frame dst <- src, with an 802.1Q tag when tag != 0.
  net::Packet* frame(const char* dst, const char* src, uint16_t tag = 0) {
    net::Packet& p = pkt_;
    p = {};
    auto d = sw::Mac::parse(dst)->to_bytes(), s = sw::Mac::parse(src)->to_bytes();
    std::copy(d.begin(), d.end(), p.data);
    std::copy(s.begin(), s.end(), p.data + 6);
    uint32_t off = 12;
    if (tag) {
      p.data[off++] = 0x81;
      p.data[off++] = 0x00;
      p.data[off++] = uint8_t(tag >> 8);
      p.data[off++] = uint8_t(tag);
    }
    p.data[off++] = 0x08;
    p.data[off++] = 0x00;
    for (uint32_t i = off; i < 64; ++i) p.data[i] = uint8_t(i);
    p.len = 64;
    return &p;
  }

  void send(uint16_t from, net::Packet* p) { fwd_.forward(port(from), &p, 1, ports_, kSec); }

  std::vector<uint16_t> receivers() {
    std::vector<uint16_t> r;
    for (uint16_t id = 1; id <= 5; ++id)
      if (!port(id).bursts.empty()) r.push_back(id);
    return r;
  }

  Forwarder fwd_;
  std::vector<std::unique_ptr<FakePort>> owned_;
  std::vector<ports::Port*> ports_;
  net::Packet pkt_;
};

const char* const kA = "52:54:00:00:00:0a";
const char* const kB = "52:54:00:00:00:0b";
const char* const kBcast = "ff:ff:ff:ff:ff:ff";

TEST_F(ForwarderVlanTest, FloodStaysInTheAccessVlan) {
  send(1, frame(kBcast, kA));
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{2, 4}));
  EXPECT_EQ(port(2).frames()[0]->vlan, 10);
  clear();
  send(3, frame(kBcast, kB));
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{4}));
  clear();
  send(5, frame(kBcast, kB));  // the untagged domain has no other member
  EXPECT_TRUE(receivers().empty());
}

TEST_F(ForwarderVlanTest, TaggedFrameOnAccessPortIsDropped) {
  send(1, frame(kBcast, kA, 10));
  EXPECT_TRUE(receivers().empty());
  EXPECT_EQ(port(1).counters().drops.get(net::Drop::kVlanTagged), 1u);
}

TEST_F(ForwarderVlanTest, TrunkTagIsStrippedAndClassifies) {
  net::Packet* p = frame(kBcast, kA, 20);
  std::vector<uint8_t> payload(p->data + 16, p->data + 64);
  send(4, p);
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{3}));
  net::Packet* got = port(3).frames()[0];
  EXPECT_EQ(got->vlan, 20);
  EXPECT_EQ(got->len, 60u);
  EXPECT_EQ(got->data[12], 0x08);
  EXPECT_EQ(std::memcmp(got->data + 14, payload.data() + 2, payload.size() - 2), 0);
}

TEST_F(ForwarderVlanTest, TrunkDropsDisallowedTagsAndUntaggedWithoutNative) {
  send(4, frame(kBcast, kA, 30));
  send(4, frame(kBcast, kA));
  EXPECT_TRUE(receivers().empty());
  EXPECT_EQ(port(4).counters().drops.get(net::Drop::kVlanDenied), 2u);
}

TEST_F(ForwarderVlanTest, NativeVlanTakesUntaggedFrames) {
  port(4).set_vlan(trunk({20}, 10));
  send(4, frame(kBcast, kA));
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{1, 2}));
  EXPECT_EQ(port(1).frames()[0]->vlan, 10);
}

TEST_F(ForwarderVlanTest, TagRemovalMovesOffloadOffsets) {
  net::Packet* p = frame(kBcast, kA, 20);
  p->vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  p->vhdr.csum_start = 38;
  p->vhdr.hdr_len = 58;
  send(4, p);
  net::Packet* got = port(3).frames()[0];
  EXPECT_EQ(got->vhdr.csum_start, 34);
  EXPECT_EQ(got->vhdr.hdr_len, 54);
}

TEST_F(ForwarderVlanTest, FdbIsPerVlan) {
  send(1, frame(kBcast, kA));      // A learned in VLAN 10 on port 1
  send(4, frame(kBcast, kB, 20));  // B learned in VLAN 20 on port 4
  clear();
  send(3, frame(kA, kB));  // A is unknown in VLAN 20: flooded there only
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{4}));
  EXPECT_EQ(fwd_.counters().unicast.get(), 0u);
  clear();
  send(4, frame(kA, kB, 10));  // in VLAN 10, A is known: unicast to port 1
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{1}));
  EXPECT_EQ(fwd_.counters().unicast.get(), 1u);
  std::vector<FdbView> d = fwd_.dump(kSec);
  ASSERT_GE(d.size(), 2u);
  bool seen10 = false, seen20 = false;
  for (auto& e : d) {
    seen10 |= e.vlan == 10 && e.port == 1;
    seen20 |= e.vlan == 20 && e.port == 3;  // B moved to port 3 in VLAN 20
  }
  EXPECT_TRUE(seen10 && seen20);
}

// Tagged frames whose first 14 bytes match (same MACs, EtherType 0x8100) but whose tags
// differ each go to their own VLAN; untagged ones from an access port get its VLAN.
TEST_F(ForwarderVlanTest, BurstOfFramesAlikeButForTheTag) {
  send(1, frame(kBcast, kA));      // A in VLAN 10 on port 1
  send(3, frame(kBcast, kA));      // A in VLAN 20 on port 3
  send(4, frame(kBcast, kB, 10));  // B in VLAN 10 on port 4
  clear();
  auto a10 = std::make_unique<net::Packet>(*frame(kA, kB, 10));
  auto a20 = std::make_unique<net::Packet>(*frame(kA, kB, 20));
  auto b10 = std::make_unique<net::Packet>(*frame(kA, kB, 10));
  net::Packet* burst[3] = {a10.get(), a20.get(), b10.get()};
  fwd_.forward(port(4), burst, 3, ports_, kSec);
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{1, 3}));
  EXPECT_EQ(port(1).frames(), (std::vector<net::Packet*>{a10.get(), b10.get()}));
  EXPECT_EQ(port(3).frames(), (std::vector<net::Packet*>{a20.get()}));
  EXPECT_EQ(a20->vlan, 20);
  EXPECT_EQ(b10->vlan, 10);
  clear();
  auto u1 = std::make_unique<net::Packet>(*frame(kB, kA));
  auto u2 = std::make_unique<net::Packet>(*frame(kB, kA));
  net::Packet* untagged[2] = {u1.get(), u2.get()};
  fwd_.forward(port(1), untagged, 2, ports_, kSec);
  EXPECT_EQ(port(4).frames(), (std::vector<net::Packet*>{u1.get(), u2.get()}));
  EXPECT_EQ(u2->vlan, 10);
}

TEST_F(ForwarderVlanTest, ShortTaggedFrameIsDropped) {
  net::Packet* p = frame(kBcast, kA, 20);
  p->len = 17;
  send(4, p);
  EXPECT_TRUE(receivers().empty());
  EXPECT_EQ(port(4).counters().drops.get(net::Drop::kVlanDenied), 1u);
}

}  // namespace
// External packets (net::Packet::tail, frames still in the source guest's buffers):
// the tag is stripped from the copied head only, a port that cannot take them gets the
// whole frame copied in, one that can gets the pieces, and after the burst no packet
// refers to the source's buffers any more.
class ExternalPort : public FakePort {
 public:
  using FakePort::FakePort;
  bool takes_external() const override { return true; }
  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override {
    for (uint32_t i = 0; i < n; ++i) {
      seen_external.push_back(!pkts[i]->local());
      assembled.push_back(test::frame_bytes(*pkts[i]));
    }
    return FakePort::send_burst(pkts, n);
  }
  std::vector<bool> seen_external;
  std::vector<std::vector<uint8_t>> assembled;
};

TEST_F(ForwarderVlanTest, ExternalPacketsAreCopiedOnlyWhereNeeded) {
  auto ext = std::make_unique<ExternalPort>("p6", 6);
  ext->set_vlan(access(20));
  ports_.insert(ports_.begin(), ext.get());  // served first: it gets the pieces
  fwd_.set_ports(ports_);
  // A 1000-byte tagged frame from the trunk: 256 bytes copied, the rest in two pieces.
  net::Packet* p = frame(kBcast, kA, 20);
  std::vector<uint8_t> whole(p->data, p->data + 64);
  for (uint32_t i = 64; i < 1000; ++i) whole.push_back(uint8_t(i * 7));
  std::copy(whole.begin(), whole.begin() + 256, p->data);
  std::vector<uint8_t> guest(whole.begin() + 256, whole.end());
  p->len = 1000;
  p->head = 256;
  p->tail_n = 2;
  p->tail[0] = iovec{guest.data(), 300};
  p->tail[1] = iovec{guest.data() + 300, guest.size() - 300};
  std::vector<uint8_t> untagged(whole.begin(), whole.begin() + 12);
  untagged.insert(untagged.end(), whole.begin() + 16, whole.end());

  send(4, p);
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{3}));  // and p6
  ASSERT_EQ(ext->assembled.size(), 1u);
  EXPECT_TRUE(ext->seen_external[0]);
  EXPECT_EQ(ext->assembled[0], untagged);
  net::Packet* got = port(3).frames()[0];
  EXPECT_TRUE(got->local());
  EXPECT_EQ(got->len, 996u);
  EXPECT_EQ(std::vector<uint8_t>(got->data, got->data + got->len), untagged);
  EXPECT_TRUE(p->local()) << "no reference to the source's buffers after the burst";
}

// Port security: a port with allowed_macs takes frames only from those sources; the
// others are dropped before learning and counted as port_security.
TEST_F(ForwarderVlanTest, PortSecurityDropsOtherSourceMacs) {
  port(1).set_allowed_macs({sw::Mac::parse(kA)->raw()});
  send(1, frame(kBcast, kB));  // kB is not allowed on port 1
  EXPECT_TRUE(receivers().empty());
  EXPECT_EQ(port(1).counters().drops.get(net::Drop::kPortSecurity), 1u);
  EXPECT_EQ(fwd_.fdb().lookup(*sw::Mac::parse(kB), 10, kSec), 0) << "not learned";
  send(1, frame(kBcast, kA));
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{2, 4}));
  EXPECT_EQ(port(1).counters().drops.get(net::Drop::kPortSecurity), 1u);
  EXPECT_EQ(fwd_.fdb().lookup(*sw::Mac::parse(kA), 10, kSec), 1);
  clear();
  port(2).set_allowed_macs({});  // no list: any source
  send(2, frame(kBcast, kB));
  EXPECT_EQ(receivers(), (std::vector<uint16_t>{1, 4}));
}

}  // namespace vnet::dataplane
