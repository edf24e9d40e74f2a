// VxlanPort against the kernel's loopback: the port's VTEP is 127.0.0.1, its remote VTEPs
// are plain UDP sockets on other 127/8 addresses. Decapsulation (bytes, learning, drops by
// reason), encapsulation (header, VNI, source port by flow, flooding to every VTEP, known
// unicast to one, frames too big, GSO frames segmented), hot-upgrade fd hand-over; an IPv6
// underlay in a private network namespace (the kernel checks the UDP checksum vnetd
// computes). Needs root (the raw send socket); skips otherwise.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <vector>

#include "common/unique_fd.h"
#include "net/packet.h"
#include "ports/netlink.h"
#include "ports/vxlan_port.h"

namespace vnet::ports {
namespace {

constexpr uint32_t kVni = 100;
const uint8_t kMacA[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0a};  // local side
const uint8_t kMacB[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0b};  // behind 127.0.0.2
const uint8_t kMacC[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x0c};  // behind 127.0.0.4

bool have_root() {
  return geteuid() == 0;
}

// A UDP socket bound to addr:port (a remote VTEP).
UniqueFd peer(const char* addr, uint16_t port) {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, addr, &sa.sin_addr);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return UniqueFd();
  return fd;
}

std::vector<uint8_t> frame(const uint8_t* dst, const uint8_t* src, size_t len, uint8_t fill) {
  std::vector<uint8_t> f(len, fill);
  std::memcpy(f.data(), dst, 6);
  std::memcpy(f.data() + 6, src, 6);
  f[12] = 0x88;  // a local experimental ethertype
  f[13] = 0xb5;
  return f;
}

std::vector<uint8_t> vxlan(uint32_t vni, const std::vector<uint8_t>& inner, uint8_t flags = 0x08) {
  std::vector<uint8_t> d(8 + inner.size(), 0);
  d[0] = flags;
  d[4] = uint8_t(vni >> 16);
  d[5] = uint8_t(vni >> 8);
  d[6] = uint8_t(vni);
  if (!inner.empty()) std::memcpy(d.data() + 8, inner.data(), inner.size());
  return d;
}

void send_to(int fd, const std::vector<uint8_t>& d, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  ASSERT_EQ(sendto(fd, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)),
            ssize_t(d.size()));
}

// One datagram from fd within `ms`, with its source address and port; empty if none.
std::vector<uint8_t> recv_one(int fd, int ms, sockaddr_in* from = nullptr) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, ms) <= 0) return {};
  std::vector<uint8_t> b(70000);
  sockaddr_in sa{};
  socklen_t sl = sizeof(sa);
  ssize_t n = recvfrom(fd, b.data(), b.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&sa), &sl);
  if (n < 0) return {};
  b.resize(size_t(n));
  if (from) *from = sa;
  return b;
}

// Receives from the port until `want` frames came or 2 s passed.
uint32_t receive(VxlanPort& port, net::PacketBatch& batch, uint32_t want) {
  uint32_t got = 0;
  for (int i = 0; i < 2000 && got < want; ++i) {
    got += port.receive_burst(batch.ptrs() + got, net::kBurst - got);
    if (got < want) usleep(1000);
  }
  return got;
}

class VxlanPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_root()) GTEST_SKIP() << "needs root (raw socket)";
    VxlanPortConfig c;
    c.vni = kVni;
    c.local = "127.0.0.1";
    c.remotes = {"127.0.0.2", "127.0.0.4"};
    c.udp_port = 0;  // an ephemeral port: tests run in parallel
    auto p = VxlanPort::open("vx", c);
    ASSERT_TRUE(p) << p.message();
    port_ = std::move(*p);
    udp_ = port_->bound_port();
    b_ = peer("127.0.0.2", udp_);
    c_ = peer("127.0.0.4", udp_);
    ASSERT_TRUE(b_ && c_);
  }
  uint64_t drops(net::Drop d) const { return port_->dropped_total(d); }
  uint64_t extra(const char* name) const {
    for (const auto& [k, v] : port_->info().extra)
      if (k == name) return v;
    return ~0ULL;
  }

  std::unique_ptr<VxlanPort> port_;
  uint16_t udp_ = 0;
  UniqueFd b_, c_;
  net::PacketBatch batch_;
};

TEST(VxlanPortConfig, RejectsBadConfigurations) {
  VxlanPortConfig c;
  c.local = "127.0.0.1";
  auto r = VxlanPort::open("vx", c);  // VNI 0
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("VNI"), std::string::npos) << r.message();
  c.vni = 1;
  c.local = "fe80::1";
  r = VxlanPort::open("vx", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("unicast"), std::string::npos) << r.message();
  c.local = "127.0.0.1";
  c.remotes = {"fd00::2"};
  r = VxlanPort::open("vx", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("family"), std::string::npos) << r.message();
  c.remotes = {"127.0.0.1"};
  r = VxlanPort::open("vx", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("local address"), std::string::npos) << r.message();
  c.remotes = {"224.0.0.1"};
  r = VxlanPort::open("vx", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("unicast"), std::string::npos) << r.message();
  c.remotes = {};
  c.underlay_mtu = 100;
  r = VxlanPort::open("vx", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("MTU"), std::string::npos) << r.message();
  c.underlay_mtu = 1500;
  c.netns = "vnet-no-such-namespace";
  r = VxlanPort::open("vx", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("vnet-no-such-namespace"), std::string::npos) << r.message();
}

TEST_F(VxlanPortTest, DecapsulatesAndLearns) {
  const auto inner = frame(kMacA, kMacB, 200, 0x5a);
  send_to(b_.get(), vxlan(kVni, inner), udp_);
  ASSERT_EQ(receive(*port_, batch_, 1), 1u);
  const net::Packet& p = batch_[0];
  ASSERT_EQ(p.len, inner.size());
  EXPECT_EQ(std::memcmp(p.data, inner.data(), inner.size()), 0);
  EXPECT_EQ(p.vhdr.flags, 0);
  EXPECT_EQ(p.vhdr.gso_type, 0);
  EXPECT_EQ(port_->rx_packets_total(), 1u);
  uint64_t mac_b = 0;
  std::memcpy(&mac_b, kMacB, 6);
  EXPECT_EQ(port_->vtep_of(mac_b), "127.0.0.2");
  EXPECT_EQ(extra("learned"), 1u);
  // The MAC moves behind the other VTEP.
  send_to(c_.get(), vxlan(kVni, inner), udp_);
  ASSERT_EQ(receive(*port_, batch_, 1), 1u);
  EXPECT_EQ(port_->vtep_of(mac_b), "127.0.0.4");
  EXPECT_EQ(extra("moved"), 1u);
}

TEST_F(VxlanPortTest, DropsWhatDoesNotBelongByReason) {
  const auto inner = frame(kMacA, kMacB, 100, 1);
  send_to(b_.get(), {0x08, 0, 0, 0}, udp_);                                   // short
  send_to(b_.get(), vxlan(kVni, inner, 0x00), udp_);                          // no I flag
  send_to(b_.get(), vxlan(kVni, {inner.begin(), inner.begin() + 10}), udp_);  // no Ethernet
  send_to(b_.get(), vxlan(kVni + 1, inner), udp_);                            // another VNI
  UniqueFd stranger = peer("127.0.0.3", 0);
  ASSERT_TRUE(stranger);
  send_to(stranger.get(), vxlan(kVni, inner), udp_);  // not a VTEP of the segment
  send_to(b_.get(), vxlan(kVni, inner), udp_);        // good, after them all
  ASSERT_EQ(receive(*port_, batch_, 1), 1u);
  EXPECT_EQ(batch_[0].len, inner.size());
  EXPECT_EQ(std::memcmp(batch_[0].data, inner.data(), inner.size()), 0);
  EXPECT_EQ(drops(net::Drop::kVxlanBadHeader), 3u);
  EXPECT_EQ(drops(net::Drop::kVxlanBadVni), 1u);
  EXPECT_EQ(drops(net::Drop::kVxlanUnknownVtep), 1u);
  EXPECT_EQ(port_->rx_packets_total(), 1u);
}

TEST_F(VxlanPortTest, FloodsToEveryVtepThenUnicastsToTheLearnedOne) {
  net::Packet& p = batch_[0];
  const auto bcast = frame(std::vector<uint8_t>(6, 0xff).data(), kMacA, 120, 7);
  std::memcpy(p.data, bcast.data(), bcast.size());
  p.len = uint32_t(bcast.size());
  p.vhdr = {};
  p.tail_n = 0;
  net::Packet* one[1] = {&p};
  ASSERT_EQ(port_->send_burst(one, 1), 1u);
  for (int fd : {b_.get(), c_.get()}) {
    sockaddr_in from{};
    auto d = recv_one(fd, 2000, &from);
    ASSERT_EQ(d.size(), 8 + bcast.size());
    EXPECT_EQ(d[0], 0x08);
    EXPECT_EQ(uint32_t(d[4]) << 16 | uint32_t(d[5]) << 8 | d[6], kVni);
    EXPECT_EQ(std::memcmp(d.data() + 8, bcast.data(), bcast.size()), 0);
    EXPECT_EQ(from.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    EXPECT_GE(ntohs(from.sin_port), 49152);
  }
  EXPECT_EQ(extra("flood_copies"), 2u);
  // Unknown unicast floods too; once MAC B is learned behind 127.0.0.2 it goes there only.
  send_to(b_.get(), vxlan(kVni, frame(kMacA, kMacB, 60, 0)), udp_);
  ASSERT_EQ(receive(*port_, batch_, 1), 1u);
  const auto uni = frame(kMacB, kMacA, 300, 9);
  std::memcpy(p.data, uni.data(), uni.size());
  p.len = uint32_t(uni.size());
  p.vhdr = {};
  ASSERT_EQ(port_->send_burst(one, 1), 1u);
  auto d = recv_one(b_.get(), 2000);
  ASSERT_EQ(d.size(), 8 + uni.size());
  EXPECT_EQ(std::memcmp(d.data() + 8, uni.data(), uni.size()), 0);
  EXPECT_TRUE(recv_one(c_.get(), 100).empty()) << "known unicast copied to another VTEP";
  EXPECT_EQ(extra("unicast_sent"), 1u);
  EXPECT_EQ(port_->counters().tx_packets.get(), 2u);
}

TEST_F(VxlanPortTest, SourcePortFollowsTheFlow) {
  // Two IPv4/UDP flows: the same flow always leaves from one port, the two flows (very
  // likely) from two.
  auto udp_frame = [](uint16_t sport) {
    std::vector<uint8_t> f(14 + 20 + 8 + 16, 0);
    std::memset(f.data(), 0xff, 6);
    std::memcpy(f.data() + 6, kMacA, 6);
    f[12] = 0x08;
    f[14] = 0x45;
    f[16] = 0;
    f[17] = 44;
    f[22] = 64;
    f[23] = 17;
    f[26] = 10, f[29] = 1;
    f[30] = 10, f[33] = 2;
    f[34] = uint8_t(sport >> 8), f[35] = uint8_t(sport);
    f[36] = 0x13, f[37] = 0x89;
    f[39] = 24;
    return f;
  };
  std::set<uint16_t> ports_seen;
  uint16_t first_of_1000 = 0;
  for (uint16_t flow : {1000, 1000, 2000, 3000, 4000}) {
    auto f = udp_frame(flow);
    net::Packet& p = batch_[0];
    std::memcpy(p.data, f.data(), f.size());
    p.len = uint32_t(f.size());
    p.vhdr = {};
    net::Packet* one[1] = {&p};
    ASSERT_EQ(port_->send_burst(one, 1), 1u);
    sockaddr_in from{};
    ASSERT_FALSE(recv_one(b_.get(), 2000, &from).empty());
    recv_one(c_.get(), 2000);
    if (flow == 1000 && first_of_1000 == 0) {
      first_of_1000 = ntohs(from.sin_port);
    } else if (flow == 1000) {
      EXPECT_EQ(ntohs(from.sin_port), first_of_1000) << "one flow, two source ports";
    }
    ports_seen.insert(ntohs(from.sin_port));
  }
  EXPECT_GE(ports_seen.size(), 2u);
}

TEST_F(VxlanPortTest, DropsFramesTooBigForTheUnderlay) {
  net::Packet& p = batch_[0];
  const auto big = frame(kMacB, kMacA, port_->max_inner() + 1, 3);
  std::memcpy(p.data, big.data(), big.size());
  p.len = uint32_t(big.size());
  p.vhdr = {};
  net::Packet* one[1] = {&p};
  EXPECT_EQ(port_->send_burst(one, 1), 0u);
  EXPECT_EQ(port_->dropped_total(net::Drop::kTunnelTooBig), 1u);
  EXPECT_TRUE(recv_one(b_.get(), 100).empty());
  EXPECT_EQ(port_->max_inner(), 1500u - 36u);
  EXPECT_EQ(port_->inner_mtu(), 1450u);
}

TEST_F(VxlanPortTest, HeldReadsLeaveDatagramsForASuccessor) {
  port_->hold_reads(0, true);
  send_to(b_.get(), vxlan(kVni, frame(kMacA, kMacB, 90, 2)), udp_);
  usleep(20000);
  EXPECT_EQ(port_->receive_burst(batch_.ptrs(), net::kBurst), 0u);
  auto fds = port_->dup_fds();
  ASSERT_TRUE(fds) << fds.message();
  VxlanPortConfig c = port_->config();
  auto next = VxlanPort::adopt("vx", c, std::move(fds->first), std::move(fds->second));
  ASSERT_TRUE(next) << next.message();
  port_.reset();  // the predecessor goes; the sockets stay with the successor
  EXPECT_EQ(receive(**next, batch_, 1), 1u);
  // A socket that is not what it claims is refused.
  UniqueFd udp(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  UniqueFd udp2(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  auto bad = VxlanPort::adopt("vx", c, std::move(udp), std::move(udp2));
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("raw"), std::string::npos) << bad.message();
}

TEST_F(VxlanPortTest, LearnedMacsGoToASuccessorLiesSkipped) {
  send_to(b_.get(), vxlan(kVni, frame(kMacA, kMacB, 60, 0)), udp_);
  send_to(c_.get(), vxlan(kVni, frame(kMacA, kMacC, 60, 0)), udp_);
  ASSERT_EQ(receive(*port_, batch_, 2), 2u);
  auto macs = port_->learned_macs();
  ASSERT_EQ(macs.size(), 2u);
  uint64_t mac_b = 0, mac_c = 0;
  std::memcpy(&mac_b, kMacB, 6);
  std::memcpy(&mac_c, kMacC, 6);
  auto fds = port_->dup_fds();
  ASSERT_TRUE(fds) << fds.message();
  auto next =
      VxlanPort::adopt("vx", port_->config(), std::move(fds->first), std::move(fds->second));
  ASSERT_TRUE(next) << next.message();
  macs.push_back({0x0000010203040506ULL, "127.0.0.9"});  // not a VTEP of the segment
  macs.push_back({0x01, "127.0.0.2"});                   // multicast
  macs.push_back({1ULL << 50 | 0x02, "127.0.0.2"});      // more than 48 bits
  macs.push_back({0x02, "nowhere"});
  EXPECT_EQ((*next)->adopt_macs(macs), 2u);
  EXPECT_EQ((*next)->vtep_of(mac_b), "127.0.0.2");
  EXPECT_EQ((*next)->vtep_of(mac_c), "127.0.0.4");
  EXPECT_EQ((*next)->learned_macs().size(), 2u);
}

// control = "evpn": the flood list and the remote MACs come from the control plane;
// nothing is learned from the tunnel, and a source that is no VTEP of either is dropped.
TEST(VxlanPortEvpn, FloodListAndMacsFromTheControlPlane) {
  if (!have_root()) GTEST_SKIP() << "needs root (raw socket)";
  VxlanPortConfig c;
  c.vni = kVni;
  c.local = "127.0.0.1";
  c.udp_port = 0;
  c.control = "evpn";
  c.remotes = {"127.0.0.2"};
  EXPECT_FALSE(VxlanPort::open("vx", c)) << "a flood list of its own with evpn";
  c.remotes.clear();
  auto made = VxlanPort::open("vx", c);
  ASSERT_TRUE(made) << made.message();
  VxlanPort& port = **made;
  const uint16_t udp = port.bound_port();
  UniqueFd b = peer("127.0.0.2", udp), cc = peer("127.0.0.4", udp);
  ASSERT_TRUE(b && cc);
  net::PacketBatch batch;
  net::Packet& p = batch[0];
  net::Packet* one[1] = {&p};
  auto put = [&](const std::vector<uint8_t>& f) {
    std::memcpy(p.data, f.data(), f.size());
    p.len = uint32_t(f.size());
    p.vhdr = {};
    p.tail_n = 0;
  };
  // No flood list yet: a broadcast has nowhere to go.
  put(frame(std::vector<uint8_t>(6, 0xff).data(), kMacA, 64, 1));
  EXPECT_EQ(port.send_burst(one, 1), 0u);
  // From a VTEP nobody announced: dropped.
  send_to(b.get(), vxlan(kVni, frame(kMacA, kMacB, 64, 2)), udp);
  usleep(20000);
  EXPECT_EQ(port.receive_burst(batch.ptrs(), net::kBurst), 0u);
  EXPECT_EQ(port.dropped_total(net::Drop::kVxlanUnknownVtep), 1u);

  const VtepAddr a2 = *parse_vtep("127.0.0.2"), a4 = *parse_vtep("127.0.0.4");
  ASSERT_FALSE(port.set_flood_list({*parse_vtep("fd00::2")}));  // not the port's family
  ASSERT_TRUE(port.set_flood_list({a2, a4}));
  EXPECT_EQ(port.flood_size(), 2u);
  put(frame(std::vector<uint8_t>(6, 0xff).data(), kMacA, 64, 1));
  EXPECT_EQ(port.send_burst(one, 1), 1u);
  EXPECT_FALSE(recv_one(b.get(), 2000).empty());
  EXPECT_FALSE(recv_one(cc.get(), 2000).empty());
  // Frames from a VTEP of the flood list come in, but teach nothing.
  send_to(b.get(), vxlan(kVni, frame(kMacA, kMacB, 64, 2)), udp);
  ASSERT_EQ(receive(port, batch, 1), 1u);
  uint64_t mac_b = 0;
  std::memcpy(&mac_b, kMacB, 6);
  EXPECT_EQ(port.vtep_of(mac_b), "");
  // A type-2 route: MAC B behind 127.0.0.4, unicast there only.
  ASSERT_TRUE(port.set_remote_mac(mac_b, a4));
  EXPECT_EQ(port.vtep_of(mac_b), "127.0.0.4");
  put(frame(kMacB, kMacA, 100, 3));
  EXPECT_EQ(port.send_burst(one, 1), 1u);
  EXPECT_FALSE(recv_one(cc.get(), 2000).empty());
  EXPECT_TRUE(recv_one(b.get(), 100).empty());
  // Withdrawn: flooded again. The flood list shrinks to one VTEP.
  port.remove_remote_mac(mac_b);
  EXPECT_EQ(port.vtep_of(mac_b), "");
  ASSERT_TRUE(port.set_flood_list({a2}));
  EXPECT_EQ(port.send_burst(one, 1), 1u);
  EXPECT_FALSE(recv_one(b.get(), 2000).empty());
  EXPECT_TRUE(recv_one(cc.get(), 100).empty());
}

// The calling thread in a network namespace of its own (lo up, fd00::1 and fd00::2 on it)
// for the scope; back in the previous one after.
class PrivateNetns {
 public:
  PrivateNetns() : prev_(open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
    if (!prev_ || unshare(CLONE_NEWNET) != 0) return;
    auto nl = Netlink::open();
    if (!nl || !nl->configure_link("lo", std::nullopt, true) ||
        !nl->add_address("lo", "fd00::1/128") || !nl->add_address("lo", "fd00::2/128"))
      return;
    // The addresses are tentative until the kernel's DAD work ran (at once on lo, but
    // from a work queue): wait until both can be bound.
    for (int i = 0; i < 2000 && !ok_; ++i) {
      ok_ = bindable("fd00::1") && bindable("fd00::2");
      if (!ok_) usleep(1000);
    }
  }
  ~PrivateNetns() {
    if (prev_) setns(prev_.get(), CLONE_NEWNET);
  }
  bool ok() const { return ok_; }

 private:
  static bool bindable(const char* addr) {
    UniqueFd fd(socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    inet_pton(AF_INET6, addr, &sa.sin6_addr);
    return fd && bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
  }

  UniqueFd prev_;
  bool ok_ = false;
};

UniqueFd peer6(const char* addr, uint16_t port) {
  UniqueFd fd(socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_port = htons(port);
  inet_pton(AF_INET6, addr, &sa.sin6_addr);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return UniqueFd();
  return fd;
}

TEST(VxlanPortIpv6, EncapsulatesWithAChecksumTheKernelTakesAndDecapsulates) {
  if (!have_root()) GTEST_SKIP() << "needs root (raw socket, network namespace)";
  PrivateNetns ns;
  ASSERT_TRUE(ns.ok()) << "private network namespace with fd00::1, fd00::2 on lo";
  VxlanPortConfig c;
  c.vni = kVni;
  c.local = "fd00::1";
  c.remotes = {"fd00::2"};
  c.udp_port = 0;
  c.underlay_mtu = 1500;
  auto p = VxlanPort::open("vx6", c);
  ASSERT_TRUE(p) << p.message();
  VxlanPort& port = **p;
  EXPECT_TRUE(port.ipv6());
  EXPECT_EQ(port.max_inner(), 1500u - 56u);  // IPv6 40, UDP 8, VXLAN 8
  const uint16_t udp = port.bound_port();
  UniqueFd b = peer6("fd00::2", udp);
  ASSERT_TRUE(b);
  // Out: the peer's UDP socket gets the datagram only if the checksum is right (the
  // kernel drops it otherwise); odd and even lengths, a flood and a unicast.
  net::PacketBatch batch;
  net::Packet* one[1] = {&batch[0]};
  for (size_t len : {60u, 61u, 1444u}) {
    const auto f = frame(std::vector<uint8_t>(6, 0xff).data(), kMacA, len, uint8_t(len));
    std::memcpy(batch[0].data, f.data(), f.size());
    batch[0].len = uint32_t(f.size());
    batch[0].vhdr = {};
    batch[0].tail_n = 0;
    ASSERT_EQ(port.send_burst(one, 1), 1u);
    sockaddr_in6 from{};
    pollfd pf{b.get(), POLLIN, 0};
    ASSERT_EQ(poll(&pf, 1, 2000), 1) << "no datagram of " << len << " bytes (checksum?)";
    std::vector<uint8_t> got(2000);
    socklen_t fl = sizeof(from);
    const ssize_t n =
        recvfrom(b.get(), got.data(), got.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
    ASSERT_EQ(n, ssize_t(8 + len));
    got.resize(size_t(n));
    EXPECT_EQ(got, vxlan(kVni, f));
    char a[INET6_ADDRSTRLEN];
    EXPECT_STREQ(inet_ntop(AF_INET6, &from.sin6_addr, a, sizeof(a)), "fd00::1");
    EXPECT_GE(ntohs(from.sin6_port), 49152);
  }
  // In: learned behind fd00::2, then known unicast goes there.
  const auto inner = frame(kMacA, kMacB, 100, 7);
  sockaddr_in6 to{};
  to.sin6_family = AF_INET6;
  to.sin6_port = htons(udp);
  inet_pton(AF_INET6, "fd00::1", &to.sin6_addr);
  const auto d = vxlan(kVni, inner);
  ASSERT_EQ(sendto(b.get(), d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
            ssize_t(d.size()));
  ASSERT_EQ(receive(port, batch, 1), 1u);
  ASSERT_EQ(batch[0].len, inner.size());
  EXPECT_EQ(std::memcmp(batch[0].data, inner.data(), inner.size()), 0);
  uint64_t mac_b = 0;
  std::memcpy(&mac_b, kMacB, 6);
  EXPECT_EQ(port.vtep_of(mac_b), "fd00::2");
  // A source outside the flood list is dropped.
  UniqueFd stranger = peer6("fd00::1", 0);
  ASSERT_TRUE(stranger);
  // (fd00::1 is the port's own address: not a remote VTEP)
  ASSERT_EQ(
      sendto(stranger.get(), d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to)),
      ssize_t(d.size()));
  for (int i = 0; i < 200 && port.dropped_total(net::Drop::kVxlanUnknownVtep) == 0; ++i) {
    port.receive_burst(batch.ptrs(), net::kBurst);
    usleep(1000);
  }
  EXPECT_EQ(port.dropped_total(net::Drop::kVxlanUnknownVtep), 1u);
  // The hand-over check takes the IPv6 sockets.
  auto fds = port.dup_fds();
  ASSERT_TRUE(fds);
  auto next = VxlanPort::adopt("vx6", c, std::move(fds->first), std::move(fds->second));
  ASSERT_TRUE(next) << next.message();
}

}  // namespace
}  // namespace vnet::ports
