// TapPort against the real kernel: TAPs created in (and attached to inside) a network
// namespace of the test's own, frames both ways checked byte for byte through an AF_PACKET
// socket on the namespace side, ICMP echo answered by the namespace's stack, a TSO frame
// forwarded by that stack and coming back as checksummed segments (or, with offloads on,
// as one GSO frame), attach rules, clean-up and fd leaks. Needs root; skips otherwise.
#include <gtest/gtest.h>

#include <spdlog/spdlog.h>

#include <sys/eventfd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "../net/flow_frames.h"
#include "ports/tap_port.h"
#include "ports/tap_test_util.h"

namespace vnet::ports {
namespace {

using namespace test;  // NOLINT

const Mac kPeerMac = {0x02, 0x76, 0x6e, 0x74, 0x00, 0x02};   // the "VM" side in tests
const Mac kOtherMac = {0x02, 0x76, 0x6e, 0x74, 0x00, 0x03};  // ARP answers for everyone else
const Mac kBroadcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

bool zero_vhdr(const virtio_net_hdr_v1& h) {
  static const virtio_net_hdr_v1 zero{};
  return std::memcmp(&h, &zero, sizeof(h)) == 0;
}

// --- configuration checks: no privileges needed ---

TEST(TapPortConfig, RejectsBadConfigurations) {
  TapPortConfig c;
  c.ifname = "this-name-is-far-too-long";
  auto r = TapPort::open("p", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("invalid interface name"), std::string::npos) << r.message();

  c = {};
  c.attach = true;
  r = TapPort::open("p", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("attach needs an interface name"), std::string::npos);

  c = {};
  c.ifname = "x";
  c.mtu = 10;
  r = TapPort::open("p", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("MTU"), std::string::npos);

  c = {};
  c.ifname = "x";
  c.offloads.tso4 = true;  // without csum
  r = TapPort::open("p", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("need csum"), std::string::npos);

  c = {};
  c.ifname = "x";
  c.netns = "../etc";
  r = TapPort::open("p", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("invalid network namespace name"), std::string::npos);

  c = {};
  c.ifname = "x";
  c.netns = test_name("missing");
  r = TapPort::open("p", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("network namespace"), std::string::npos) << r.message();
}

// --- against the kernel ---

class TapPortTest : public ::testing::TestWithParam<TapIo> {
 protected:
  void SetUp() override {
    spdlog::set_level(spdlog::level::warn);  // one info line per port otherwise
    std::string why;
    if (!have_tap_privileges(&why)) GTEST_SKIP() << why;
    if (GetParam() == TapIo::kUring) {
      if (Status st = TapUring::probe(); !st) {
        if (std::getenv("CI")) FAIL() << "io_uring data path unavailable: " << st.message();
        GTEST_SKIP() << "io_uring data path unavailable: " << st.message();
      }
    }
    ns_ = std::make_unique<TestNetns>("n");
    ASSERT_TRUE(ns_->status()) << ns_->status().message();
  }
  const std::string& ns() const { return ns_->name(); }

  std::unique_ptr<TapPort> open_tap(TapPortConfig c) {
    if (c.netns.empty()) c.netns = ns();
    auto r = TapPort::open("tap-test", c);
    EXPECT_TRUE(r) << r.message();
    return r ? std::move(*r) : nullptr;
  }
  TapPortConfig config(std::optional<uint32_t> mtu = std::nullopt) {
    TapPortConfig c;
    c.ifname = ifname_;
    c.netns = ns();
    c.mtu = mtu;
    c.io = GetParam();
    return c;
  }
  Mac tap_mac() {
    auto l = find_link_in(ns(), ifname_);
    EXPECT_TRUE(l && *l);
    return l && *l ? (*l)->mac : Mac{};
  }

  std::unique_ptr<TestNetns> ns_;
  std::string ifname_ = test_name("t");
};

TEST_P(TapPortTest, CreatedInNamespaceUpWithMtu) {
  auto port = open_tap(config(9000));
  ASSERT_TRUE(port);
  EXPECT_TRUE(port->created());
  EXPECT_EQ(port->ifname(), ifname_);

  auto l = find_link_in(ns(), ifname_);
  ASSERT_TRUE(l) << l.message();
  ASSERT_TRUE(*l) << "TAP not in the namespace";
  EXPECT_EQ((*l)->kind, "tun");
  EXPECT_TRUE((*l)->up);
  EXPECT_EQ((*l)->mtu, 9000u);
  EXPECT_EQ((*l)->ifindex, port->ifindex());

  // And not in ours.
  EXPECT_EQ(::if_nametoindex(ifname_.c_str()), 0u);

  std::vector<Port::WaitFd> fds;
  port->wait_fds(fds);
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_EQ(port->uses_uring(), GetParam() == TapIo::kUring);
  if (port->uses_uring()) {
    // The worker sleeps on the ring's eventfd, not on the TAP.
    EXPECT_NE(fds[0].fd, port->fd());
    EXPECT_EQ(fds[0].kind, Port::WaitFd::kOwnEventFd);
  } else {
    EXPECT_EQ(fds[0].fd, port->fd());
    EXPECT_EQ(fds[0].kind, Port::WaitFd::kLevel);
  }
  EXPECT_FALSE(port->enable_notifications());
  port->disable_notifications();
  EXPECT_EQ(::fcntl(port->fd(), F_GETFL) & O_NONBLOCK, O_NONBLOCK);
  EXPECT_EQ(::fcntl(port->fd(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);

  PortInfo info = port->info();
  EXPECT_EQ(info.type, "tap");
  EXPECT_EQ(info.mode, "created");
  EXPECT_TRUE(info.connected);
}

// queues=4: an IFF_MULTI_QUEUE TAP with 4 fds, each a receive queue of the port. The
// kernel spreads the namespace's flows over the fds (tun's flow hash); every frame
// arrives once, on one queue; frames the switch sends back for a flow are written on
// the fd that flow came from (so tun's flow table keeps the flow on that queue).
TEST_P(TapPortTest, MultiQueueSpreadsFlowsAndWritesThemBack) {
  auto c = config();
  c.queues = 4;
  auto port = open_tap(c);
  ASSERT_TRUE(port);
  ASSERT_EQ(port->rx_queues(), 4u);
  std::set<int> fds;
  for (uint32_t q = 0; q < 4; ++q) {
    EXPECT_GE(port->fd(q), 0);
    fds.insert(port->fd(q));
    std::vector<Port::WaitFd> w;
    port->wait_fds(w, q);
    EXPECT_EQ(w.size(), 1u);
  }
  EXPECT_EQ(fds.size(), 4u);
  EXPECT_EQ(port->info().queue_states.size(), 4u);
  auto ps = PacketSocket::open(ns(), ifname_);
  ASSERT_TRUE(ps) << ps.message();
  constexpr uint32_t kFlows = 64;
  std::vector<Bytes> sent;
  for (uint32_t f = 0; f < kFlows; ++f) {
    auto fr = vnet::test::ipv4_frame(
        vnet::test::Flow4{0x0a000001, 0x0a000002, uint16_t(20000 + f), 7}, 18);
    std::memcpy(fr.data() + 14 + 20 + 8, &f, 4);
    sent.push_back(fr);
    ASSERT_TRUE((*ps)->send(fr)) << f;
  }
  net::PacketBatch batch;
  std::map<uint32_t, uint32_t> queue_of;  // flow -> queue it arrived on
  std::map<uint32_t, uint32_t> per_queue;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (queue_of.size() < kFlows && std::chrono::steady_clock::now() < deadline) {
    for (uint32_t q = 0; q < 4; ++q) {
      const uint32_t n = port->receive_burst(batch.ptrs(), net::kBurst, q);
      for (uint32_t i = 0; i < n; ++i) {
        net::materialize(batch[i]);
        const Bytes got(batch[i].data, batch[i].data + batch[i].len);
        if (got.size() != sent[0].size() || got[12] != 0x08 || got[23] != 17) continue;
        uint32_t f;
        std::memcpy(&f, got.data() + 14 + 20 + 8, 4);
        ASSERT_LT(f, kFlows);
        EXPECT_EQ(queue_of.count(f), 0u) << "flow " << f << " twice";
        EXPECT_EQ(got, sent[f]);
        queue_of[f] = q;
        ++per_queue[q];
      }
      port->receive_done(q);
    }
  }
  ASSERT_EQ(queue_of.size(), kFlows);
  EXPECT_GE(per_queue.size(), 2u) << "the kernel put every flow on one queue";
  // The way back: each flow is written on the fd it came from.
  std::vector<Bytes> replies;
  for (uint32_t f = 0; f < kFlows; ++f)
    replies.push_back(vnet::test::ipv4_frame(
        vnet::test::Flow4{0x0a000001, 0x0a000002, uint16_t(20000 + f), 7}.reversed(), 18));
  ASSERT_TRUE(send_frames(*port, replies));
  uint64_t total = 0;
  for (uint32_t q = 0; q < 4; ++q) {
    EXPECT_EQ(port->queue_counters(q).tx_packets.get(), per_queue[q]) << "queue " << q;
    total += port->queue_counters(q).tx_packets.get();
  }
  EXPECT_EQ(total, kFlows);
}

TEST_P(TapPortTest, ReceivesFramesSentInTheNamespaceByteExact) {
  auto port = open_tap(config(9000));
  ASSERT_TRUE(port);
  auto ps = PacketSocket::open(ns(), ifname_);
  ASSERT_TRUE(ps) << ps.message();

  std::vector<Bytes> sent;
  for (size_t len : {60u, 61u, 64u, 1514u, 4000u, 9014u}) {
    sent.push_back(test_frame(len % 2 ? kBroadcast : kPeerMac, kOtherMac, len, uint8_t(len)));
    ASSERT_TRUE((*ps)->send(sent.back())) << "len " << len;
  }
  Pump pump(*port, kOtherMac);
  auto got = pump.collect(sent.size(), [](const Frame& f) { return is_test_frame(f.data); });
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(got[i].data, sent[i]) << "frame " << i;
    EXPECT_TRUE(zero_vhdr(got[i].vhdr)) << "frame " << i;
  }
  EXPECT_GE(port->rx_packets_total(), sent.size());
  EXPECT_GE(port->rx_bytes_total(), 60u + 61 + 64 + 1514 + 4000 + 9014);
  // io_uring lends the frames of kDirectMin bytes or more (a head copied, the tail left
  // in the port's buffer); readv reads each straight into its packet.
  if (port->uses_uring()) {
    EXPECT_GE(pump.lent(), 3u);
  } else {
    EXPECT_EQ(pump.lent(), 0u);
  }
}

// More lent frames than the port has buffers, taken in bursts: each burst's buffers go
// back to the kernel, with receive_done() (the worker's way) or with the next
// receive_burst() (a caller that never calls it), and every frame arrives whole.
TEST_P(TapPortTest, LentBuffersGoBackToTheKernel) {
  for (bool done_calls : {true, false}) {
    SCOPED_TRACE(done_calls ? "receive_done" : "no receive_done");
    auto port = open_tap(config());
    ASSERT_TRUE(port);
    auto ps = PacketSocket::open(ns(), ifname_);
    ASSERT_TRUE(ps) << ps.message();
    constexpr uint32_t kRounds = 5, kPerRound = 40;  // 200 frames, 64 buffers
    net::PacketBatch batch;
    uint32_t seen = 0, lent = 0;
    for (uint32_t r = 0; r < kRounds; ++r) {
      std::vector<Bytes> in;
      for (uint32_t i = 0; i < kPerRound; ++i) {
        in.push_back(test_frame(kPeerMac, kOtherMac, 600 + 23 * i, uint8_t(r * 41 + i)));
        ASSERT_TRUE((*ps)->send(in.back()));
      }
      uint32_t got = 0;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
      while (got < kPerRound && std::chrono::steady_clock::now() < deadline) {
        const uint32_t n = port->receive_burst(batch.ptrs(), net::kBurst);
        for (uint32_t i = 0; i < n; ++i) {
          const Bytes f = frame_bytes(batch[i]);
          if (!is_test_frame(f)) continue;
          ASSERT_LT(got, kPerRound);
          EXPECT_EQ(f, in[got]) << "round " << r << " frame " << got;
          lent += batch[i].tail_n ? 1 : 0;
          ++got;
        }
        if (done_calls) port->receive_done();
        if (n == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      ASSERT_EQ(got, kPerRound) << "round " << r;
      seen += got;
    }
    EXPECT_EQ(seen, kRounds * kPerRound);
    EXPECT_EQ(lent, port->uses_uring() ? seen : 0u);
    EXPECT_EQ(port->dropped_total(net::Drop::kTxTooShort), 0u);
    EXPECT_EQ(port->dropped_total(net::Drop::kTxTooBig), 0u);
  }
}

TEST_P(TapPortTest, SentFramesArriveInTheNamespaceByteExact) {
  auto port = open_tap(config(9000));
  ASSERT_TRUE(port);
  auto ps = PacketSocket::open(ns(), ifname_);
  ASSERT_TRUE(ps) << ps.message();
  const Mac mac = tap_mac();

  std::vector<Bytes> frames;
  for (size_t len : {14u, 60u, 333u, 1514u, 9014u}) {
    frames.push_back(test_frame(len % 2 ? kBroadcast : mac, kPeerMac, len, uint8_t(len + 1)));
  }
  ASSERT_TRUE(send_frames(*port, frames));
  auto got = (*ps)->receive(frames.size(), is_test_frame);
  ASSERT_EQ(got.size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(got[i], frames[i]) << "frame " << i;
  EXPECT_EQ(port->counters().tx_packets.get(), frames.size());
  EXPECT_EQ(port->counters().tx_bytes.get(), 14u + 60 + 333 + 1514 + 9014);

  // External packets (a head in data, the rest in pieces elsewhere) go out as they are.
  ASSERT_TRUE(send_frames(*port, frames, {}, true));
  got = (*ps)->receive(frames.size(), is_test_frame);
  ASSERT_EQ(got.size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(got[i], frames[i]) << "lent frame " << i;
  EXPECT_EQ(port->counters().tx_bytes.get(), 2 * (14u + 60 + 333 + 1514 + 9014));

  // Shorter than an Ethernet header: dropped and counted, the rest of the burst goes.
  auto short_pkt = std::make_unique<net::Packet>();
  short_pkt->vhdr = {};
  short_pkt->len = 13;
  net::Packet* one = short_pkt.get();
  EXPECT_EQ(port->send_burst(&one, 1), 0u);
  EXPECT_EQ(port->dropped_total(net::Drop::kTxTooShort), 1u);
}

TEST_P(TapPortTest, VlanTagInsertedOnATrunk) {
  auto port = open_tap(config());
  ASSERT_TRUE(port);
  auto ps = PacketSocket::open(ns(), ifname_);
  ASSERT_TRUE(ps) << ps.message();
  net::VlanConfig v;
  v.trunk = true;
  v.allowed.set(42);
  port->set_vlan(v);

  // A local packet, then the same frame lent (head in data, tail in pieces).
  const std::vector<Bytes> f = {test_frame(kBroadcast, kPeerMac, 1000, 9)};
  std::vector<Bytes> storage;
  storage.reserve(1);
  for (bool lend : {false, true}) {
    SCOPED_TRACE(lend ? "lent" : "local");
    auto pkts = make_packets(f, {}, lend, 64, &storage);
    pkts[0]->vlan = 42;
    net::Packet* one = pkts[0].get();
    ASSERT_EQ(one->tail_n != 0, lend);
    ASSERT_EQ(port->send_burst(&one, 1), 1u);

    // The kernel moves the tag into the skb's metadata (the packet socket reports it as
    // auxdata) and hands over the untagged bytes: those must be the frame as it was.
    std::vector<uint16_t> tci;
    auto got = (*ps)->receive(1, is_test_frame, 3000, &tci);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], f[0]);
    ASSERT_EQ(tci.size(), 1u);
    EXPECT_EQ(tci[0] & 0xfff, 42);
  }
  EXPECT_EQ(port->counters().tx_bytes.get(), 2 * (f[0].size() + 4));
}

TEST_P(TapPortTest, IcmpEchoAnsweredByTheNamespace) {
  auto port = open_tap(config());
  ASSERT_TRUE(port);
  ASSERT_TRUE(
      netlink_in(ns(), [&](Netlink& nl) { return nl.add_address(ifname_, "10.77.0.1/24"); }));
  const Mac mac = tap_mac();
  const uint32_t tap_ip = ip4(10, 77, 0, 1), peer_ip = ip4(10, 77, 0, 2);

  ASSERT_TRUE(send_frames(*port, {icmp_echo_request(mac, kPeerMac, peer_ip, tap_ip, 0x77, 1, 56)}));
  Pump pump(*port, kPeerMac);
  auto got = pump.collect(1, [&](const Frame& f) {
    const Bytes& d = f.data;
    return d.size() >= 42 && rd16(&d[12]) == kEthIpv4 && d[23] == 1 && d[34] == 0 &&
           rd32(&d[26]) == tap_ip && rd32(&d[30]) == peer_ip;
  });
  ASSERT_EQ(got.size(), 1u) << "no echo reply (ARP answered " << pump.arp_answered() << ")";
  const Bytes& d = got[0].data;
  EXPECT_TRUE(zero_vhdr(got[0].vhdr));
  EXPECT_EQ(0, std::memcmp(&d[0], kPeerMac.data(), 6));
  const size_t ihl = (d[14] & 0xf) * 4;
  EXPECT_EQ(ref_sum(&d[14], ihl), 0xffff) << "IPv4 header checksum";
  const size_t icmp_len = rd16(&d[16]) - ihl;
  ASSERT_EQ(d.size(), 14 + ihl + icmp_len);
  const uint8_t* m = &d[14 + ihl];
  EXPECT_EQ(ref_sum(m, icmp_len), 0xffff) << "ICMP checksum";
  EXPECT_EQ(rd16(m + 4), 0x77);
  EXPECT_EQ(rd16(m + 6), 1);
  ASSERT_EQ(icmp_len, 8u + 56);
  for (size_t i = 0; i < 56; ++i) EXPECT_EQ(m[8 + i], uint8_t(i ^ 0x5a));
}

// A TSO frame given to send_burst reaches the namespace, which forwards it (routing it back
// out of the same TAP). With offloads the kernel takes it as one GSO skb and hands it back
// as one; without them vnetd segments and checksums it in software before writing, and the
// segments come back as they went (each checksum verified independently here).
class TapGsoTest : public TapPortTest {
 protected:
  static constexpr uint32_t kPayload = 3000, kMss = 1448, kSeq = 1000;
  const uint32_t tap_ip = ip4(10, 77, 0, 1), src_ip = ip4(10, 77, 0, 2), dst_ip = ip4(10, 77, 0, 3);

  void start(const net::OffloadCaps& offloads) {
    TapPortConfig c = config(9000);
    c.offloads = offloads;
    port_ = open_tap(c);
    ASSERT_TRUE(port_);
    ASSERT_TRUE(
        netlink_in(ns(), [&](Netlink& nl) { return nl.add_address(ifname_, "10.77.0.1/24"); }));
    ASSERT_TRUE(write_sysctl(ns(), "/proc/sys/net/ipv4/ip_forward", "1"));
    // Forwarding out of the interface it came in on would also send ICMP redirects.
    (void)write_sysctl(ns(), "/proc/sys/net/ipv4/conf/all/send_redirects", "0");
    (void)write_sysctl(ns(), "/proc/sys/net/ipv4/conf/" + ifname_ + "/send_redirects", "0");
    mac_ = tap_mac();
    frame_ = tcp4_partial(mac_, kPeerMac, src_ip, dst_ip, kSeq, kPayload);
    virtio_net_hdr_v1 h{};
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
    h.hdr_len = htole16(14 + 20 + 20);
    h.gso_size = htole16(kMss);
    h.csum_start = htole16(14 + 20);
    h.csum_offset = htole16(16);
    ASSERT_TRUE(send_frames(*port_, {frame_}, {h}));
  }

  bool forwarded_tcp(const Frame& f) const {
    const Bytes& d = f.data;
    return d.size() >= 54 && rd16(&d[12]) == kEthIpv4 && d[23] == 6 && rd32(&d[30]) == dst_ip;
  }

  std::unique_ptr<TapPort> port_;
  Mac mac_{};
  Bytes frame_;
};

TEST_P(TapGsoTest, TsoFrameComesBackAsChecksummedSegments) {
  start({});
  EXPECT_FALSE(port_->recv_caps().csum);
  Pump pump(*port_, kOtherMac);
  auto segs = pump.collect(3, [&](const Frame& f) { return forwarded_tcp(f); });
  ASSERT_EQ(segs.size(), 3u) << "ARP answered " << pump.arp_answered();

  Bytes payload;
  uint32_t seq = kSeq;
  for (size_t i = 0; i < segs.size(); ++i) {
    const Bytes& d = segs[i].data;
    SCOPED_TRACE("segment " + std::to_string(i));
    EXPECT_EQ(segs[i].vhdr.gso_type, VIRTIO_NET_HDR_GSO_NONE);
    EXPECT_FALSE(segs[i].vhdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
    EXPECT_EQ(0, std::memcmp(&d[0], kOtherMac.data(), 6));  // routed to 10.77.0.3
    EXPECT_EQ(0, std::memcmp(&d[6], mac_.data(), 6));
    const uint8_t* ip = &d[14];
    EXPECT_EQ(ip[8], 63) << "TTL after one hop";
    EXPECT_EQ(ref_sum(ip, 20), 0xffff) << "IPv4 header checksum";
    const uint32_t tot = rd16(ip + 2);
    ASSERT_EQ(d.size(), 14 + tot);
    const uint8_t* tcp = ip + 20;
    const uint32_t l4 = tot - 20;
    EXPECT_EQ(ref_sum(tcp, l4, pseudo_sum(src_ip, dst_ip, 6, l4)), 0xffff) << "TCP checksum";
    EXPECT_EQ(rd32(tcp + 4), seq);
    const uint32_t len = l4 - 20;
    EXPECT_EQ(len, i < 2 ? kMss : kPayload - 2 * kMss);
    EXPECT_EQ(bool(tcp[13] & 0x08), i == 2) << "PSH on the last segment only";
    payload.insert(payload.end(), tcp + 20, tcp + 20 + len);
    seq += len;
  }
  EXPECT_EQ(payload, Bytes(frame_.begin() + 54, frame_.end()));
}

TEST_P(TapGsoTest, WithOffloadsTheKernelSendsOneGsoFrame) {
  net::OffloadCaps o;
  o.csum = o.tso4 = o.tso6 = true;
  start(o);
  EXPECT_TRUE(port_->recv_caps().tso4);
  Pump pump(*port_, kOtherMac);
  auto got = pump.collect(1, [&](const Frame& f) { return forwarded_tcp(f); });
  ASSERT_EQ(got.size(), 1u) << "ARP answered " << pump.arp_answered();
  const virtio_net_hdr_v1& h = got[0].vhdr;
  EXPECT_EQ(h.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
  EXPECT_EQ(le16toh(h.gso_size), kMss);
  EXPECT_TRUE(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM);
  EXPECT_EQ(le16toh(h.csum_start), 34);
  EXPECT_EQ(le16toh(h.csum_offset), 16);
  EXPECT_EQ(h.num_buffers, 0);
  const Bytes& d = got[0].data;
  ASSERT_EQ(d.size(), frame_.size());
  EXPECT_EQ(d[14 + 8], 63);
  EXPECT_EQ(ref_sum(&d[14], 20), 0xffff);
  // The TCP checksum field still holds the pseudo-header sum; the payload is untouched.
  EXPECT_EQ(rd16(&d[50]), rd16(&frame_[50]));
  EXPECT_TRUE(std::equal(d.begin() + 34, d.end(), frame_.begin() + 34));
}

TEST_P(TapPortTest, OffloadCapsFollowTunSetOffload) {
  TapPortConfig c = config();
  c.offloads.csum = c.offloads.tso4 = c.offloads.tso6 = c.offloads.tso_ecn = true;
  c.offloads.uso = true;
  auto port = open_tap(c);
  ASSERT_TRUE(port);
  const net::OffloadCaps& r = port->recv_caps();
  EXPECT_TRUE(r.csum && r.tso4 && r.tso6 && r.tso_ecn);
  // uso only if this kernel has TUN_F_USO4/6 (Linux 6.2); then we can send it too.
  EXPECT_EQ(r.uso, port->send_caps().uso);
  const net::OffloadCaps& s = port->send_caps();
  EXPECT_TRUE(s.csum && s.tso4 && s.tso6 && s.tso_ecn);
  std::vector<std::string> want = {"TUN_F_CSUM", "TUN_F_TSO4", "TUN_F_TSO6", "TUN_F_TSO_ECN"};
  if (r.uso) {
    want.push_back("TUN_F_USO4");
    want.push_back("TUN_F_USO6");
  }
  EXPECT_EQ(port->info().features, want);

  port.reset();
  auto plain = open_tap(config());
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->recv_caps().csum || plain->recv_caps().tso4 || plain->recv_caps().uso);
  EXPECT_EQ(plain->tun_offload_flags(), 0u);
  // Offloads off means off both ways: vnetd segments and checksums before writing.
  EXPECT_FALSE(plain->send_caps().csum || plain->send_caps().tso4 || plain->send_caps().uso);
}

TEST_P(TapPortTest, AttachesToAnExistingTapAndLeavesIt) {
  PersistentTap existing(ns(), ifname_);
  ASSERT_TRUE(existing.status()) << existing.status().message();
  {
    TapPortConfig c = config(2000);
    c.attach = true;
    auto port = open_tap(c);
    ASSERT_TRUE(port);
    EXPECT_FALSE(port->created());
    EXPECT_EQ(port->info().mode, "attached");
    auto l = find_link_in(ns(), ifname_);
    ASSERT_TRUE(l && *l);
    EXPECT_TRUE((*l)->up);
    EXPECT_EQ((*l)->mtu, 2000u);

    // Frames flow both ways through the attached fd.
    auto ps = PacketSocket::open(ns(), ifname_);
    ASSERT_TRUE(ps) << ps.message();
    Bytes out = test_frame(kBroadcast, kPeerMac, 200, 3);
    ASSERT_TRUE(send_frames(*port, {out}));
    auto seen = (*ps)->receive(1, is_test_frame);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0], out);
    Bytes in = test_frame(kPeerMac, kOtherMac, 300, 4);
    ASSERT_TRUE((*ps)->send(in));
    Pump pump(*port, kOtherMac);
    auto got = pump.collect(1, [](const Frame& f) { return is_test_frame(f.data); });
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].data, in);

    // Creating one of the same name is refused, not turned into an attach.
    auto dup = TapPort::open("dup", config());
    ASSERT_FALSE(dup);
    EXPECT_NE(dup.message().find("exists"), std::string::npos) << dup.message();
  }
  auto l = find_link_in(ns(), ifname_);
  ASSERT_TRUE(l);
  EXPECT_TRUE(*l) << "an attached TAP must outlive the port";
}

TEST_P(TapPortTest, AttachToANonTapFails) {
  TapPortConfig c = config();
  c.attach = true;
  c.ifname = "lo";
  auto r = TapPort::open("p", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("is not a TAP device"), std::string::npos) << r.message();
  EXPECT_NE(r.message().find("loopback"), std::string::npos) << r.message();

  c.ifname = test_name("none");
  r = TapPort::open("p", c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.message().find("no interface"), std::string::npos) << r.message();
  // ...and looking did not create it.
  auto l = find_link_in(ns(), c.ifname);
  ASSERT_TRUE(l);
  EXPECT_FALSE(*l);
}

TEST_P(TapPortTest, CreatedTapDisappearsWithThePort) {
  auto port = open_tap(config());
  ASSERT_TRUE(port);
  auto l = find_link_in(ns(), ifname_);
  ASSERT_TRUE(l && *l);
  port.reset();
  l = find_link_in(ns(), ifname_);
  ASSERT_TRUE(l);
  EXPECT_FALSE(*l) << "the TAP outlived its port";
}

TEST_P(TapPortTest, DeviceDeletedUnderneathStopsThePortQuietly) {
  auto port = open_tap(config());
  ASSERT_TRUE(port);
  ASSERT_TRUE(netlink_in(ns(), [&](Netlink& nl) { return nl.delete_link(ifname_); }));
  pollfd pfd{port->fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 1000), 1);
  EXPECT_TRUE(pfd.revents & POLLERR);  // what a worker's epoll would spin on

  net::PacketBatch batch;
  EXPECT_EQ(port->receive_burst(batch.ptrs(), net::kBurst), 0u);
  EXPECT_TRUE(port->gone());
  EXPECT_FALSE(port->info().connected);
  // The fd number stays valid but never wakes anyone again.
  pfd = {port->fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 50), 0);
  EXPECT_EQ(port->receive_burst(batch.ptrs(), net::kBurst), 0u);
  EXPECT_FALSE(send_frames(*port, {test_frame(kBroadcast, kPeerMac, 60, 1)}));
  EXPECT_EQ(port->counters().dropped(net::Drop::kRxNotReady), 1u);
}

TEST_P(TapPortTest, KernelChoosesTheNameWhenNoneIsGiven) {
  TapPortConfig c = config();
  c.ifname.clear();
  auto port = open_tap(c);
  ASSERT_TRUE(port);
  EXPECT_FALSE(port->ifname().empty());
  auto l = find_link_in(ns(), port->ifname());
  ASSERT_TRUE(l && *l);
  EXPECT_TRUE((*l)->up);
}

TEST_P(TapPortTest, InTheDaemonsOwnNamespace) {
  TapPortConfig c = config(1400);
  c.netns.clear();
  c.ifname = test_name("h");
  {
    auto r = TapPort::open("own", c);
    ASSERT_TRUE(r) << r.message();
    EXPECT_NE(::if_nametoindex(c.ifname.c_str()), 0u);
    auto l = find_link_in("", c.ifname);
    ASSERT_TRUE(l && *l);
    EXPECT_EQ((*l)->mtu, 1400u);
    EXPECT_TRUE((*l)->up);
  }
  EXPECT_EQ(::if_nametoindex(c.ifname.c_str()), 0u);
}

TEST_P(TapPortTest, NoFdLeaksOverCreateDestroyCycles) {
  // Warm up (libnl, spdlog, thread start-up may keep something process-wide).
  { auto p = open_tap(config(9000)); }
  const size_t before = count_open_fds();
  for (int i = 0; i < 50; ++i) {
    auto p = open_tap(config(9000));
    ASSERT_TRUE(p) << "cycle " << i;
  }
  // Failures too: attach to a missing device, create a name that exists.
  for (int i = 0; i < 5; ++i) {
    TapPortConfig c = config();
    c.attach = true;
    c.ifname = test_name("none");
    EXPECT_FALSE(TapPort::open("p", c));
  }
  EXPECT_EQ(count_open_fds(), before);
  auto l = find_link_in(ns(), ifname_);
  ASSERT_TRUE(l);
  EXPECT_FALSE(*l);
}

uint64_t extra(const TapPort& port, const std::string& key) {
  for (const auto& [k, v] : port.info().extra)
    if (k == key) return v;
  ADD_FAILURE() << "no counter " << key;
  return 0;
}

// A burst of 32 frames each way: byte-exact and in order, and with io_uring far fewer than
// one system call per frame (io_submits counts readv/writev or io_uring_enter calls).
TEST_P(TapPortTest, BurstOf32FramesMovesInFewerThan32SystemCalls) {
  auto port = open_tap(config(9000));
  ASSERT_TRUE(port);
  auto ps = PacketSocket::open(ns(), ifname_);
  ASSERT_TRUE(ps) << ps.message();
  constexpr uint32_t kFrames = 32;

  std::vector<Bytes> out;
  for (uint32_t i = 0; i < kFrames; ++i)
    out.push_back(test_frame(kBroadcast, kPeerMac, 60 + 37 * i, uint8_t(i)));
  const uint64_t submits0 = extra(*port, "io_submits"), frames0 = extra(*port, "io_frames");
  ASSERT_TRUE(send_frames(*port, out));
  const uint64_t tx_submits = extra(*port, "io_submits") - submits0;
  EXPECT_EQ(extra(*port, "io_frames") - frames0, kFrames);
  if (port->uses_uring()) {
    EXPECT_LE(tx_submits, 2u) << "one submission for the burst (plus a wait at most)";
  } else {
    EXPECT_EQ(tx_submits, kFrames);
  }
  auto seen = (*ps)->receive(kFrames, is_test_frame);
  ASSERT_EQ(seen.size(), kFrames);
  for (uint32_t i = 0; i < kFrames; ++i) EXPECT_EQ(seen[i], out[i]) << "frame " << i;

  // Into the port: queued in the kernel before the port looks, then taken in bursts.
  std::vector<Bytes> in;
  for (uint32_t i = 0; i < kFrames; ++i) {
    in.push_back(test_frame(kPeerMac, kOtherMac, 1514 - 13 * i, uint8_t(100 + i)));
    ASSERT_TRUE((*ps)->send(in.back()));
  }
  const uint64_t submits1 = extra(*port, "io_submits");
  Pump pump(*port, kOtherMac);
  auto got = pump.collect(kFrames, [](const Frame& f) { return is_test_frame(f.data); });
  ASSERT_EQ(got.size(), kFrames);
  for (uint32_t i = 0; i < kFrames; ++i) EXPECT_EQ(got[i].data, in[i]) << "frame " << i;
  const uint64_t rx_submits = extra(*port, "io_submits") - submits1;
  if (port->uses_uring()) {
    EXPECT_LT(rx_submits, kFrames / 4) << "the armed read needs no system call per frame";
    RecordProperty("rx_submits", int(rx_submits));
    RecordProperty("tx_submits", int(tx_submits));
  } else {
    EXPECT_GE(rx_submits, kFrames);  // one readv per frame (and one per empty look)
  }
  EXPECT_EQ(extra(*port, "io_uring"), port->uses_uring() ? 1u : 0u);
}

// The daemon's order: the worker thread armed the read and sleeps elsewhere, the control
// thread removes the port while frames arrive. The read is cancelled and waited for before
// its buffers go (ASan would see a write into freed memory); no fd is left behind.
TEST_P(TapPortTest, RemovingAPortWithArmedReadsLeavesNothingBehind) {
  { auto warm = open_tap(config()); }
  const size_t before = count_open_fds();
  for (int cycle = 0; cycle < 5; ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    auto port = open_tap(config());
    ASSERT_TRUE(port);
    auto ps = PacketSocket::open(ns(), ifname_);
    ASSERT_TRUE(ps) << ps.message();
    UniqueFd armed(::eventfd(0, EFD_CLOEXEC)), quit(::eventfd(0, EFD_CLOEXEC));
    ASSERT_TRUE(armed && quit);
    std::thread worker([&] {
      net::PacketBatch batch;
      port->receive_burst(batch.ptrs(), net::kBurst);  // arms, on this thread
      uint64_t one = 1;
      (void)!::write(armed.get(), &one, 8);
      pollfd pfd{quit.get(), POLLIN, 0};
      while (::poll(&pfd, 1, 5000) == 0) {
      }
    });
    uint64_t v;
    ASSERT_EQ(::read(armed.get(), &v, 8), 8);
    // Frames the armed read takes into the port's buffers, unreaped.
    for (int i = 0; i < 40; ++i)
      ASSERT_TRUE((*ps)->send(test_frame(kPeerMac, kOtherMac, 1000, uint8_t(i))));
    port.reset();
    uint64_t one = 1;
    (void)!::write(quit.get(), &one, 8);
    worker.join();
  }
  EXPECT_EQ(count_open_fds(), before);
  auto l = find_link_in(ns(), ifname_);
  ASSERT_TRUE(l);
  EXPECT_FALSE(*l);
}

INSTANTIATE_TEST_SUITE_P(Io, TapPortTest, ::testing::Values(TapIo::kSyscalls, TapIo::kUring),
                         [](const auto& i) { return std::string(tap_io_name(i.param)); });
INSTANTIATE_TEST_SUITE_P(Io, TapGsoTest, ::testing::Values(TapIo::kSyscalls, TapIo::kUring),
                         [](const auto& i) { return std::string(tap_io_name(i.param)); });

}  // namespace
}  // namespace vnet::ports
