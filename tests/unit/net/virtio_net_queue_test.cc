// Unit tests for the virtio-net data path over a DeviceQueue (virtio 1.2 section
// 5.1.6): tx_dequeue turns guest TX chains into Packets whatever the descriptor layout,
// drops and counts bad frames but always returns their buffers; rx_enqueue writes the
// virtio_net_hdr and the frame into guest RX buffers, with and without mergeable
// buffers (num_buffers), and drops and counts frames the guest cannot take.
#include "net/virtio_net_queue.h"

#include <gtest/gtest.h>
#include <linux/virtio_config.h>

#include <cstring>
#include <memory>
#include <vector>

#include "fake_guest.h"
#include "net/packet.h"
#include "virtio/driver_queue.h"

namespace vnet::net {
namespace {

using virtio::Buf;
using virtio::PopStatus;
using virtio::Used;
using vnet::testing::FakeGuest;
using vnet::testing::QueuePair;

constexpr uint64_t kR0Gpa = 0x0, kR0Size = 0x800000, kR0Uva = 0x7f0000000000;
constexpr uint64_t kHoleGpa = 0x10000000;             // unmapped
constexpr uint32_t kHdr = sizeof(virtio_net_hdr_v1);  // 12

std::vector<uint8_t> frame(uint32_t len, uint8_t seed) {
  std::vector<uint8_t> f(len);
  for (uint32_t i = 0; i < len; ++i) f[i] = uint8_t(seed + i * 13 + (i >> 8));
  return f;
}

class NetQueueTest : public ::testing::Test {
 protected:
  NetQueueTest() : batch_(std::make_unique<PacketBatch>()) {
    g_.add_region(kR0Gpa, kR0Size, kR0Uva);
  }

  void start_tx(uint16_t size = 64) { ASSERT_TRUE(tx_.start(g_, size, false)); }
  void start_rx(uint16_t size = 64) { ASSERT_TRUE(rx_.start(g_, size, false)); }

  // Writes `bytes` across the buffers in order (as a driver filling a TX chain).
  void scatter(const std::vector<uint8_t>& bytes, const std::vector<Buf>& bufs) {
    size_t off = 0;
    for (const Buf& b : bufs) {
      size_t n = std::min<size_t>(b.len, bytes.size() - off);
      if (n) std::memcpy(g_.host(b.gpa, n), bytes.data() + off, n);
      off += n;
    }
    ASSERT_EQ(off, bytes.size()) << "test bug: buffers too small";
  }

  // A TX chain carrying `hdr` + `f`, laid out over buffers of the given sizes (the
  // sizes must add up to the header plus the frame).
  int add_tx(const virtio_net_hdr_v1& hdr, const std::vector<uint8_t>& f,
             const std::vector<uint32_t>& sizes, uint32_t hdr_len = kHdr) {
    std::vector<uint8_t> bytes(hdr_len);
    std::memcpy(bytes.data(), &hdr, hdr_len);
    bytes.insert(bytes.end(), f.begin(), f.end());
    std::vector<Buf> bufs;
    for (uint32_t s : sizes) bufs.push_back(g_.buf(s));
    scatter(bytes, bufs);
    return tx_.drv.add(bufs.data(), uint32_t(bufs.size()), nullptr, 0);
  }

  // Posts `n` one-descriptor RX buffers of `len` bytes; returns their guest addresses.
  std::vector<uint64_t> post_rx(uint32_t n, uint32_t len) {
    std::vector<uint64_t> gpas;
    for (uint32_t i = 0; i < n; ++i) {
      Buf b = g_.buf(len, 0xee);
      EXPECT_GE(rx_.drv.add(nullptr, 0, &b, 1), 0);
      gpas.push_back(b.gpa);
    }
    rx_.drv.publish();
    return gpas;
  }

  Packet* pkt(uint32_t i, const std::vector<uint8_t>& f) {
    Packet& p = (*batch_)[i];
    p.vhdr = {};
    p.len = uint32_t(f.size());
    std::memcpy(p.data, f.data(), f.size());
    return &p;
  }

  uint32_t tx(uint32_t max = kBurst, uint32_t hdr_len = kHdr) {
    return tx_dequeue(tx_.dev, *c_, hdr_len, tx_caps_, batch_->ptrs(), max, drops_);
  }
  uint32_t rx(Packet* const* pkts, uint32_t n, bool mergeable, uint32_t hdr_len = kHdr) {
    return rx_enqueue(rx_.dev, *c_, hdr_len, mergeable, rx_caps_, vlan_, pkts, n, drops_, &bytes_);
  }

  uint64_t drops_total() const {
    uint64_t t = 0;
    for (size_t i = 0; i < size_t(Drop::kCount); ++i) t += drops_.get(Drop(i));
    return t;
  }

  FakeGuest g_;
  QueuePair tx_, rx_;
  std::unique_ptr<virtio::Chain> c_ = std::make_unique<virtio::Chain>();
  std::unique_ptr<PacketBatch> batch_;
  DropCounters drops_;
  uint64_t bytes_ = 0;
  VlanConfig vlan_;
  OffloadCaps tx_caps_, rx_caps_;
};

// ---- header length -----------------------------------------------------------------

TEST(NetHdrLenTest, DependsOnVersion1AndMergeable) {
  EXPECT_EQ(net_hdr_len(0), 10u);
  EXPECT_EQ(net_hdr_len(1ULL << VIRTIO_F_VERSION_1), 12u);
  EXPECT_EQ(net_hdr_len(1ULL << VIRTIO_NET_F_MRG_RXBUF), 12u);
  EXPECT_EQ(net_hdr_len((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_NET_F_MRG_RXBUF)), 12u);
}

// ---- TX ----------------------------------------------------------------------------

TEST_F(NetQueueTest, TxHeaderInItsOwnDescriptor) {
  start_tx();
  auto f = frame(60, 1);
  int h = add_tx(virtio_net_hdr_v1{}, f, {kHdr, 60});
  ASSERT_GE(h, 0);
  tx_.drv.publish();
  ASSERT_EQ(tx(), 1u);
  Packet& p = (*batch_)[0];
  ASSERT_EQ(p.len, 60u);
  EXPECT_EQ(std::memcmp(p.data, f.data(), 60), 0);
  EXPECT_EQ(drops_total(), 0u);
  EXPECT_EQ(tx_.drv.used()->idx, 1);
  Used u;
  ASSERT_TRUE(tx_.drv.reap(u));
  EXPECT_EQ(u.id, h);
  EXPECT_EQ(u.len, 0u) << "TX buffers are not written";
}

TEST_F(NetQueueTest, TxHeaderAndFrameInOneDescriptor) {
  start_tx();
  auto f = frame(1514, 2);
  ASSERT_GE(add_tx(virtio_net_hdr_v1{}, f, {kHdr + 1514}), 0);
  tx_.drv.publish();
  ASSERT_EQ(tx(), 1u);
  ASSERT_EQ((*batch_)[0].len, 1514u);
  EXPECT_EQ(std::memcmp((*batch_)[0].data, f.data(), 1514), 0);
}

TEST_F(NetQueueTest, TxHeaderSplitAndFrameSplitAcrossManyDescriptors) {
  start_tx();
  auto f = frame(1000, 3);
  virtio_net_hdr_v1 hdr{};
  hdr.hdr_len = 0x1234;  // metadata without an offload request, must be carried over
  hdr.gso_size = 0x5678;
  // 5 + 7 bytes of header (the second piece also holds the first 3 frame bytes), then
  // the frame in pieces of 1, 10, ... bytes.
  std::vector<uint32_t> sizes = {5, 10, 1};
  uint32_t left = 1000 - 3 - 1;
  while (left) {
    uint32_t s = std::min(left, 37u);
    sizes.push_back(s);
    left -= s;
  }
  ASSERT_GE(add_tx(hdr, f, sizes), 0);
  tx_.drv.publish();
  ASSERT_EQ(tx(), 1u);
  Packet& p = (*batch_)[0];
  ASSERT_EQ(p.len, 1000u);
  EXPECT_EQ(std::memcmp(p.data, f.data(), 1000), 0);
  EXPECT_EQ(p.vhdr.hdr_len, 0x1234);
  EXPECT_EQ(p.vhdr.gso_size, 0x5678);
}

TEST_F(NetQueueTest, TxLegacyTenByteHeader) {
  start_tx();
  auto f = frame(64, 4);
  ASSERT_GE(add_tx(virtio_net_hdr_v1{}, f, {10, 64}, 10), 0);
  tx_.drv.publish();
  ASSERT_EQ(tx(kBurst, 10), 1u);
  ASSERT_EQ((*batch_)[0].len, 64u);
  EXPECT_EQ(std::memcmp((*batch_)[0].data, f.data(), 64), 0);
}

TEST_F(NetQueueTest, TxTooShortIsDroppedCountedAndReturned) {
  start_tx();
  int h = add_tx(virtio_net_hdr_v1{}, frame(kEthHdrLen - 1, 5), {kHdr + kEthHdrLen - 1});
  tx_.drv.publish();
  EXPECT_EQ(tx(), 0u);
  EXPECT_EQ(drops_.get(Drop::kTxTooShort), 1u);
  EXPECT_EQ(drops_total(), 1u);
  Used u;
  ASSERT_TRUE(tx_.drv.reap(u)) << "dropped frame's buffer not returned";
  EXPECT_EQ(u.id, h);
  EXPECT_EQ(u.len, 0u);
  // A chain shorter than the header alone, and an empty (writable-only) chain.
  add_tx(virtio_net_hdr_v1{}, {}, {kHdr});
  Buf w = g_.buf(100);
  tx_.drv.add(nullptr, 0, &w, 1);
  tx_.drv.publish();
  EXPECT_EQ(tx(), 0u);
  EXPECT_EQ(drops_.get(Drop::kTxTooShort), 3u);
  EXPECT_EQ(tx_.drv.used()->idx, 3);
  // Exactly header + Ethernet header is a frame.
  add_tx(virtio_net_hdr_v1{}, frame(kEthHdrLen, 6), {kHdr, kEthHdrLen});
  tx_.drv.publish();
  EXPECT_EQ(tx(), 1u);
  EXPECT_EQ((*batch_)[0].len, kEthHdrLen);
}

TEST_F(NetQueueTest, TxTooBigIsDroppedCountedAndReturned) {
  start_tx();
  auto f = frame(kMaxFrame + 1, 7);
  int h = add_tx(virtio_net_hdr_v1{}, f, {kHdr, 40000, kMaxFrame + 1 - 40000});
  tx_.drv.publish();
  EXPECT_EQ(tx(), 0u);
  EXPECT_EQ(drops_.get(Drop::kTxTooBig), 1u);
  Used u;
  ASSERT_TRUE(tx_.drv.reap(u));
  EXPECT_EQ(u.id, h);
  // Exactly kMaxFrame fits.
  f.pop_back();
  ASSERT_GE(add_tx(virtio_net_hdr_v1{}, f, {kHdr + 40000, kMaxFrame - 40000}), 0);
  tx_.drv.publish();
  ASSERT_EQ(tx(), 1u);
  ASSERT_EQ((*batch_)[0].len, kMaxFrame);
  EXPECT_EQ(std::memcmp((*batch_)[0].data, f.data(), kMaxFrame), 0);
}

TEST_F(NetQueueTest, TxOffloadRequestWithoutNegotiationIsBadHeader) {
  start_tx();
  virtio_net_hdr_v1 gso{};
  gso.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  virtio_net_hdr_v1 csum{};
  csum.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  add_tx(gso, frame(100, 8), {kHdr, 100});
  add_tx(csum, frame(100, 9), {kHdr, 100});
  tx_.drv.publish();
  EXPECT_EQ(tx(), 0u);
  EXPECT_EQ(drops_.get(Drop::kTxBadHeader), 2u);
  EXPECT_EQ(tx_.drv.used()->idx, 2) << "buffers of dropped frames returned";
}

TEST_F(NetQueueTest, TxDropsDoNotUsePacketSlots) {
  start_tx();
  auto a = frame(100, 10), b = frame(200, 11);
  add_tx(virtio_net_hdr_v1{}, a, {kHdr, 100});
  add_tx(virtio_net_hdr_v1{}, frame(3, 0), {kHdr + 3});
  add_tx(virtio_net_hdr_v1{}, b, {kHdr, 200});
  tx_.drv.publish();
  ASSERT_EQ(tx(), 2u);
  ASSERT_EQ((*batch_)[0].len, 100u);
  EXPECT_EQ(std::memcmp((*batch_)[0].data, a.data(), 100), 0);
  ASSERT_EQ((*batch_)[1].len, 200u);
  EXPECT_EQ(std::memcmp((*batch_)[1].data, b.data(), 200), 0);
  EXPECT_EQ(drops_.get(Drop::kTxTooShort), 1u);
  EXPECT_EQ(tx_.drv.used()->idx, 3) << "one publish covering the whole burst";
}

TEST_F(NetQueueTest, TxStopsAtMax) {
  start_tx();
  for (int i = 0; i < 5; ++i) add_tx(virtio_net_hdr_v1{}, frame(60, uint8_t(i)), {kHdr, 60});
  tx_.drv.publish();
  EXPECT_EQ(tx(2), 2u);
  EXPECT_EQ(tx_.dev.available(), 3);
  EXPECT_EQ(tx_.drv.used()->idx, 2);
  EXPECT_EQ(tx(kBurst), 3u);
  EXPECT_EQ(tx_.drv.used()->idx, 5);
}

TEST_F(NetQueueTest, TxFullBurst) {
  start_tx(64);
  for (uint32_t i = 0; i < kBurst + 3; ++i)
    add_tx(virtio_net_hdr_v1{}, frame(60, uint8_t(i)), {kHdr + 60});
  tx_.drv.publish();
  EXPECT_EQ(tx(), kBurst);
  EXPECT_EQ(tx_.drv.used()->idx, kBurst);
  for (uint32_t i = 0; i < kBurst; ++i) EXPECT_EQ((*batch_)[i].data[0], frame(1, uint8_t(i))[0]);
}

// A chain the queue rejects (bad descriptor, valid head) is completed with length 0 by
// the DeviceQueue; the TX path must publish that completion so the guest gets the
// buffer back, even when nothing else was in the burst.
TEST_F(NetQueueTest, TxBadChainAloneIsReturnedToTheGuest) {
  start_tx();
  Buf bad[2] = {Buf{kHoleGpa, kHdr}, Buf{kHoleGpa + 0x100, 60}};
  int h = tx_.drv.add(bad, 2, nullptr, 0);
  tx_.drv.publish();
  EXPECT_EQ(tx(), 0u);
  EXPECT_EQ(tx_.dev.counters().bad_chains.get(), 1u);
  Used u;
  ASSERT_TRUE(tx_.drv.reap(u)) << "bad chain completed but never published";
  EXPECT_EQ(u.id, h);
  EXPECT_EQ(u.len, 0u);
}

TEST_F(NetQueueTest, TxBrokenQueueDequeuesNothing) {
  start_tx(8);
  tx_.drv.avail()->ring[0] = 8;
  tx_.drv.avail()->idx = 1;
  EXPECT_EQ(tx(), 0u);
  EXPECT_TRUE(tx_.dev.broken());
  EXPECT_EQ(tx_.drv.used()->idx, 0);
}

// ---- RX without mergeable buffers --------------------------------------------------

TEST_F(NetQueueTest, RxFrameIntoOneChain) {
  start_rx();
  auto gpas = post_rx(1, 2048);
  auto f = frame(100, 20);
  Packet* p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, false), 1u);
  EXPECT_EQ(bytes_, 100u);
  EXPECT_EQ(drops_total(), 0u);
  EXPECT_EQ(rx_.drv.used()->idx, 1);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 100);
  const uint8_t* buf = g_.host(gpas[0], 2048);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, buf, kHdr);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(h.gso_type, VIRTIO_NET_HDR_GSO_NONE);
  EXPECT_EQ(h.num_buffers, 1) << "5.1.6.4: 1 without VIRTIO_NET_F_MRG_RXBUF";
  EXPECT_EQ(std::memcmp(buf + kHdr, f.data(), 100), 0);
}

// An RX buffer that already holds the header the frame gets (a driver reusing its
// buffers: the usual case) does not have it written again, so the header's line stays
// clean in the driver's cache; a buffer holding anything else gets the header. Checked
// with the header alone on a page made read-only in a child process.
TEST_F(NetQueueTest, RxDoesNotRewriteAnUnchangedHeader) {
  start_rx();
  const uint64_t page = g_.alloc(2 * 4096, 4096);
  const uint64_t gpa = page + 4096 - kHdr;  // header at the end of a page, frame after it
  auto f = frame(64, 7);
  for (bool mergeable : {false, true}) {
    for (uint16_t num_buffers : {1, 0}) {  // 1: what rx_enqueue writes; 0: differs
      virtio_net_hdr_v1 held{};
      held.num_buffers = num_buffers;
      std::memcpy(g_.host(gpa, kHdr), &held, kHdr);
      Buf b{gpa, 2048};
      ASSERT_GE(rx_.drv.add(nullptr, 0, &b, 1), 0);
      rx_.drv.publish();
      auto deliver = [&] {
        vnet::testing::make_pages_read_only(g_.host(page, 4096), 4096);
        Packet* p = pkt(0, f);
        if (rx(&p, 1, mergeable) != 1) std::_Exit(2);
        std::_Exit(std::memcmp(g_.host(gpa + kHdr, 64), f.data(), 64) == 0 ? 0 : 3);
      };
      if (num_buffers == 1)
        EXPECT_EXIT(deliver(), ::testing::ExitedWithCode(0), "") << "mergeable " << mergeable;
      else
        EXPECT_EXIT(deliver(), vnet::testing::died, "") << "the page was not protected";
      // The parent delivers too (its memory stays writable) and checks the header.
      Packet* p = pkt(0, f);
      ASSERT_EQ(rx(&p, 1, mergeable), 1u);
      Used u;
      ASSERT_TRUE(rx_.drv.reap(u));
      virtio_net_hdr_v1 h;
      std::memcpy(&h, g_.host(gpa, kHdr), kHdr);
      EXPECT_EQ(h.num_buffers, 1);
      EXPECT_EQ(h.flags, 0);
      EXPECT_EQ(std::memcmp(g_.host(gpa + kHdr, 64), f.data(), 64), 0);
    }
  }
}

// A trunk port sends frames of a non-native VLAN with an 802.1Q tag after the MACs,
// across buffer boundaries with mergeable buffers; the native VLAN goes untagged.
TEST_F(NetQueueTest, RxInsertsVlanTagOnTrunk) {
  vlan_.trunk = true;
  vlan_.allowed.set(100);
  vlan_.native = 7;
  start_rx();
  auto gpas = post_rx(4, 1024);
  auto f = frame(1500, 22);
  Packet* p = pkt(0, f);
  p->vlan = 100;
  ASSERT_EQ(rx(&p, 1, true), 1u);
  EXPECT_EQ(bytes_, 1504u);
  std::vector<uint8_t> got;
  for (int i = 0; i < 2; ++i) {
    Used u;
    ASSERT_TRUE(rx_.drv.reap(u));
    const uint8_t* b = g_.host(gpas[i], 1024);
    uint32_t skip = i == 0 ? kHdr : 0;
    got.insert(got.end(), b + skip, b + u.len);
  }
  std::vector<uint8_t> want(f.begin(), f.begin() + 12);
  for (uint8_t b : {0x81, 0x00, 0x00, 0x64}) want.push_back(b);
  want.insert(want.end(), f.begin() + 12, f.end());
  EXPECT_EQ(got, want);
  // The native VLAN leaves untagged.
  p = pkt(0, f);
  p->vlan = 7;
  ASSERT_EQ(rx(&p, 1, true), 1u);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, 1024u);
  EXPECT_EQ(std::memcmp(g_.host(gpas[2], 1024) + kHdr, f.data(), 1024 - kHdr), 0);
}

// 5.1.6.4: the guest's header carries the offload metadata only with GUEST_CSUM; a
// VLAN tag inserted on the way moves csum_start and hdr_len by 4.
TEST_F(NetQueueTest, RxHeaderCarriesOffloadsOnlyWhenNegotiated) {
  start_rx();
  auto gpas = post_rx(3, 4096);
  auto f = frame(3000, 23);
  auto send_with_meta = [&](uint16_t vlan) {
    Packet* p = pkt(0, f);
    p->vlan = vlan;
    p->vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    p->vhdr.csum_start = 34;
    p->vhdr.csum_offset = 16;
    p->vhdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
    p->vhdr.gso_size = 1448;
    p->vhdr.hdr_len = 66;
    EXPECT_EQ(rx(&p, 1, true), 1u);
    Used u;
    EXPECT_TRUE(rx_.drv.reap(u));
  };
  auto hdr_at = [&](uint64_t gpa) {
    virtio_net_hdr_v1 h;
    std::memcpy(&h, g_.host(gpa, kHdr), kHdr);
    return h;
  };
  send_with_meta(0);  // rx_caps_ all false: header zeroed
  virtio_net_hdr_v1 h = hdr_at(gpas[0]);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(h.gso_type, 0);
  EXPECT_EQ(h.gso_size, 0);
  EXPECT_EQ(h.csum_start, 0);

  rx_caps_.csum = rx_caps_.tso4 = true;
  send_with_meta(0);
  h = hdr_at(gpas[1]);
  EXPECT_EQ(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
  EXPECT_EQ(h.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
  EXPECT_EQ(h.gso_size, 1448);
  EXPECT_EQ(h.csum_start, 34);
  EXPECT_EQ(h.csum_offset, 16);
  EXPECT_EQ(h.hdr_len, 66);

  vlan_.trunk = true;
  vlan_.allowed.set(5);
  send_with_meta(5);
  h = hdr_at(gpas[2]);
  EXPECT_EQ(h.csum_start, 38);
  EXPECT_EQ(h.csum_offset, 16);
  EXPECT_EQ(h.hdr_len, 70);
}

TEST_F(NetQueueTest, RxHeaderAndFrameInSeparateDescriptors) {
  start_rx();
  Buf in[2] = {g_.buf(kHdr, 0xee), g_.buf(1514, 0xee)};
  ASSERT_GE(rx_.drv.add(nullptr, 0, in, 2), 0);
  rx_.drv.publish();
  auto f = frame(1514, 21);
  Packet* p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, false), 1u);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 1514);
  EXPECT_EQ(std::memcmp(g_.host(in[1].gpa, 1514), f.data(), 1514), 0);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, g_.host(in[0].gpa, kHdr), kHdr);
  EXPECT_EQ(h.num_buffers, 1);
}

TEST_F(NetQueueTest, RxLegacyTenByteHeader) {
  start_rx();
  auto gpas = post_rx(1, 2048);
  auto f = frame(60, 22);
  Packet* p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, false, 10), 1u);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, 70u);
  const uint8_t* buf = g_.host(gpas[0], 2048);
  EXPECT_EQ(buf[0], 0);
  EXPECT_EQ(std::memcmp(buf + 10, f.data(), 60), 0);
}

TEST_F(NetQueueTest, RxChainTooSmallDropsFrameAndKeepsBuffer) {
  start_rx();
  auto gpas = post_rx(1, 64);
  auto big = frame(100, 23);
  Packet* p = pkt(0, big);
  EXPECT_EQ(rx(&p, 1, false), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 1u);
  EXPECT_EQ(bytes_, 0u);
  EXPECT_EQ(rx_.drv.used()->idx, 0) << "buffer consumed by a frame that did not fit";
  EXPECT_EQ(rx_.dev.available(), 1);
  // A frame that fits takes the same buffer.
  auto small = frame(40, 24);
  p = pkt(0, small);
  ASSERT_EQ(rx(&p, 1, false), 1u);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 40);
  EXPECT_EQ(std::memcmp(g_.host(gpas[0] + kHdr, 40), small.data(), 40), 0);
}

// The same after the look-ahead has read the buffers (pop_direct): a buffer too small
// for one frame of a burst is given back and the next frame takes it.
TEST_F(NetQueueTest, RxBufferTooSmallInABurstIsKeptForTheNextFrame) {
  start_rx();
  auto gpas = post_rx(1, 2048);
  Buf small = g_.buf(80, 0xee), last = g_.buf(2048, 0xee);
  rx_.drv.add(nullptr, 0, &small, 1);
  rx_.drv.add(nullptr, 0, &last, 1);
  rx_.drv.publish();
  std::vector<uint8_t> fs[3] = {frame(60, 1), frame(100, 2), frame(61, 3)};
  Packet* ps[3] = {pkt(0, fs[0]), pkt(1, fs[1]), pkt(2, fs[2])};
  EXPECT_EQ(rx(ps, 3, false), 2u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 1u);
  EXPECT_EQ(rx_.dev.available(), 1);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 60);
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 61);
  EXPECT_EQ(std::memcmp(g_.host(small.gpa + kHdr, 61), fs[2].data(), 61), 0);
  EXPECT_FALSE(rx_.drv.reap(u));
}

TEST_F(NetQueueTest, RxBurstThatDoesNotFitIsDroppedNotQueued) {
  start_rx();
  post_rx(1, 64);
  auto f = frame(100, 25);
  Packet* ps[3] = {pkt(0, f), pkt(1, f), pkt(2, f)};
  EXPECT_EQ(rx(ps, 3, false), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 3u);
  EXPECT_EQ(rx_.dev.available(), 1);
  EXPECT_EQ(rx_.drv.used()->idx, 0);
  // The next call starts from scratch: nothing was kept from the dropped burst.
  EXPECT_EQ(rx(ps, 0, false), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 3u);
}

TEST_F(NetQueueTest, RxNoBuffersDropsTheWholeBurst) {
  start_rx();
  auto f = frame(100, 26);
  Packet* ps[4] = {pkt(0, f), pkt(1, f), pkt(2, f), pkt(3, f)};
  EXPECT_EQ(rx(ps, 4, false), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 4u);
  EXPECT_EQ(drops_total(), 4u);
  EXPECT_EQ(rx(ps, 4, true), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 8u);
}

TEST_F(NetQueueTest, RxFewerBuffersThanFrames) {
  start_rx();
  post_rx(2, 2048);
  std::vector<uint8_t> fs[4] = {frame(60, 1), frame(61, 2), frame(62, 3), frame(63, 4)};
  Packet* ps[4] = {pkt(0, fs[0]), pkt(1, fs[1]), pkt(2, fs[2]), pkt(3, fs[3])};
  EXPECT_EQ(rx(ps, 4, false), 2u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 2u);
  EXPECT_EQ(bytes_, 121u);
  EXPECT_EQ(rx_.drv.used()->idx, 2) << "one publish for the burst";
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 60);
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 61);
}

// ---- RX with mergeable buffers -----------------------------------------------------

TEST_F(NetQueueTest, RxMergeableJumboOverSeveralBuffers) {
  start_rx();
  auto gpas = post_rx(6, 2048);
  auto f = frame(9000, 30);
  Packet* p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, true), 1u);
  EXPECT_EQ(bytes_, 9000u);
  EXPECT_EQ(drops_total(), 0u);
  // 9012 bytes over 2048-byte buffers: 4 full ones and 820 bytes in the fifth.
  EXPECT_EQ(rx_.drv.used()->idx, 5);
  uint64_t total = 0;
  std::vector<uint8_t> got;
  const uint32_t want[5] = {2048, 2048, 2048, 2048, 820};
  for (int i = 0; i < 5; ++i) {
    Used u;
    ASSERT_TRUE(rx_.drv.reap(u));
    EXPECT_EQ(u.len, want[i]) << "buffer " << i;
    total += u.len;
    const uint8_t* b = g_.host(gpas[i], 2048);
    got.insert(got.end(), b + (i == 0 ? kHdr : 0), b + u.len);
  }
  EXPECT_EQ(total, kHdr + 9000u);
  ASSERT_EQ(got.size(), 9000u);
  EXPECT_EQ(std::memcmp(got.data(), f.data(), 9000), 0);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, g_.host(gpas[0], kHdr), kHdr);
  EXPECT_EQ(h.num_buffers, 5);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(h.gso_type, VIRTIO_NET_HDR_GSO_NONE);
  EXPECT_EQ(rx_.dev.available(), 1) << "the sixth buffer is left";
}

TEST_F(NetQueueTest, RxMergeableSmallFrameUsesOneBuffer) {
  start_rx();
  auto gpas = post_rx(2, 2048);
  auto f = frame(100, 31);
  Packet* p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, true), 1u);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 100);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, g_.host(gpas[0], kHdr), kHdr);
  EXPECT_EQ(h.num_buffers, 1);
  EXPECT_FALSE(rx_.drv.reap(u));
}

TEST_F(NetQueueTest, RxMergeableExactFit) {
  start_rx();
  auto gpas = post_rx(2, 2048);
  auto f = frame(2 * 2048 - kHdr, 32);
  Packet* p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, true), 1u);
  EXPECT_EQ(rx_.drv.used()->idx, 2);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, 2048u);
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, 2048u);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, g_.host(gpas[0], kHdr), kHdr);
  EXPECT_EQ(h.num_buffers, 2);
}

TEST_F(NetQueueTest, RxMergeableNotEnoughBuffersDropsAndKeepsThem) {
  start_rx();
  auto gpas = post_rx(3, 2048);
  auto big = frame(9000, 33);
  Packet* p = pkt(0, big);
  EXPECT_EQ(rx(&p, 1, true), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 1u);
  EXPECT_EQ(rx_.drv.used()->idx, 0);
  EXPECT_EQ(rx_.dev.available(), 3);
  // A frame that fits in two of them goes through, num_buffers 2.
  auto f = frame(3000, 34);
  p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, true), 1u);
  EXPECT_EQ(rx_.drv.used()->idx, 2);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, g_.host(gpas[0], kHdr), kHdr);
  EXPECT_EQ(h.num_buffers, 2);
  EXPECT_EQ(std::memcmp(g_.host(gpas[1], 2048), f.data() + 2048 - kHdr, 3000 - 2048 + kHdr), 0);
}

TEST_F(NetQueueTest, RxMergeableBurst) {
  start_rx();
  auto gpas = post_rx(6, 2048);
  auto a = frame(9000, 35), b = frame(100, 36);
  Packet* ps[2] = {pkt(0, a), pkt(1, b)};
  ASSERT_EQ(rx(ps, 2, true), 2u);
  EXPECT_EQ(bytes_, 9100u);
  EXPECT_EQ(rx_.drv.used()->idx, 6);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, g_.host(gpas[5], kHdr), kHdr);
  EXPECT_EQ(h.num_buffers, 1);
  EXPECT_EQ(std::memcmp(g_.host(gpas[5] + kHdr, 100), b.data(), 100), 0);
}

// num_buffers is the last field of the header; with the header split over two
// descriptors of the first chain it must land in the second one.
TEST_F(NetQueueTest, RxMergeableHeaderSplitAcrossDescriptors) {
  start_rx();
  Buf first[2] = {g_.buf(6, 0xee), g_.buf(2042, 0xee)};
  ASSERT_GE(rx_.drv.add(nullptr, 0, first, 2), 0);
  auto rest = post_rx(2, 2048);  // publishes all three
  auto f = frame(5000, 37);
  Packet* p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, true), 1u);
  EXPECT_EQ(rx_.drv.used()->idx, 3);
  uint8_t hb[kHdr];
  std::memcpy(hb, g_.host(first[0].gpa, 6), 6);
  std::memcpy(hb + 6, g_.host(first[1].gpa, 6), 6);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, hb, kHdr);
  EXPECT_EQ(h.num_buffers, 3);
  EXPECT_EQ(h.flags, 0);
  EXPECT_EQ(std::memcmp(g_.host(first[1].gpa + 6, 2036), f.data(), 2036), 0);
}

TEST_F(NetQueueTest, RxMergeableFirstBufferSmallerThanHeaderIsNotUsed) {
  start_rx();
  post_rx(1, 8);  // 5.1.6.3.1: the first buffer must hold the header
  auto f = frame(60, 38);
  Packet* p = pkt(0, f);
  EXPECT_EQ(rx(&p, 1, true), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 1u);
  EXPECT_EQ(rx_.drv.used()->idx, 0);
}

// ---- RX and bad chains -------------------------------------------------------------

// A bad chain in the RX ring is completed with length 0 by the queue; the frame finds
// no buffer and is dropped, and the bad chain must still reach the guest.
TEST_F(NetQueueTest, RxBadChainAloneIsReturnedToTheGuest) {
  start_rx();
  Buf bad{kHoleGpa, 2048};
  int h = rx_.drv.add(nullptr, 0, &bad, 1);
  rx_.drv.publish();
  auto f = frame(100, 40);
  Packet* p = pkt(0, f);
  EXPECT_EQ(rx(&p, 1, false), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 1u);
  EXPECT_EQ(rx_.dev.counters().bad_chains.get(), 1u);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u)) << "bad chain completed but never published";
  EXPECT_EQ(u.id, h);
  EXPECT_EQ(u.len, 0u);
}

// [bad chain, good but too small chain]: the frame is dropped and the small buffer
// kept, but the bad chain before it was already completed and must not be "un-popped"
// by the rewind (it would be walked and counted again on every burst, and never
// returned while the small buffer blocks the ring).
TEST_F(NetQueueTest, RxRewindDoesNotResurrectACompletedBadChain) {
  start_rx();
  Buf bad{kHoleGpa, 2048};
  int hb = rx_.drv.add(nullptr, 0, &bad, 1);
  post_rx(1, 64);  // publishes both
  auto f = frame(100, 41);
  Packet* p = pkt(0, f);
  for (bool mergeable : {false, true}) {
    EXPECT_EQ(rx(&p, 1, mergeable), 0u);
    EXPECT_EQ(rx(&p, 1, mergeable), 0u);
  }
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 4u);
  EXPECT_EQ(rx_.dev.counters().bad_chains.get(), 1u) << "the bad chain was walked again";
  EXPECT_EQ(rx_.dev.available(), 1) << "only the small buffer is left";
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u)) << "bad chain never returned";
  EXPECT_EQ(u.id, hb);
  EXPECT_EQ(u.len, 0u);
}

TEST_F(NetQueueTest, RxBrokenQueueCountsQueueBroken) {
  start_rx(8);
  rx_.drv.avail()->idx = 100;
  auto f = frame(100, 42);
  Packet* ps[2] = {pkt(0, f), pkt(1, f)};
  EXPECT_EQ(rx(ps, 2, false), 0u);
  EXPECT_TRUE(rx_.dev.broken());
  EXPECT_EQ(drops_.get(Drop::kQueueBroken), 2u);
  EXPECT_EQ(rx_.drv.used()->idx, 0);
}

// ---- external packets (guest TX buffers straight into guest RX buffers) ------------

// A frame of at least kDirectMin bytes without GSO leaves as an external packet: its
// first kDirectHead bytes copied, the rest described by pieces of the guest's buffers.
// The used ring gets every chain in pop order (VIRTIO_F_IN_ORDER), but the burst is
// published only by complete_deferred(): the driver gets no buffer of the burst back
// while an external packet still reads one.
TEST_F(NetQueueTest, TxDeferredLargeFramesStayInGuestMemory) {
  start_tx();
  auto big = frame(1500, 3), small = frame(100, 4);
  int hb = add_tx(virtio_net_hdr_v1{}, big, {kHdr + 700, 800});
  int hs = add_tx(virtio_net_hdr_v1{}, small, {kHdr + 100});
  ASSERT_GE(hb, 0);
  ASSERT_GE(hs, 0);
  tx_.drv.publish();
  TxDeferred d;
  ASSERT_EQ(tx_dequeue(tx_.dev, *c_, kHdr, tx_caps_, batch_->ptrs(), kBurst, drops_, &d), 2u);
  Packet& pb = (*batch_)[0];
  Packet& ps = (*batch_)[1];
  EXPECT_TRUE(ps.local());
  ASSERT_FALSE(pb.local());
  EXPECT_EQ(pb.len, 1500u);
  EXPECT_EQ(pb.head, kDirectHead);
  EXPECT_EQ(pb.tail_n, 2u);  // the rest of the first buffer, then the second
  EXPECT_EQ(std::memcmp(pb.data, big.data(), kDirectHead), 0);
  ASSERT_EQ(d.n, 1u);
  // Nothing is back yet, not even the short frame's chain.
  EXPECT_EQ(tx_.drv.used()->idx, 0);
  // Materialized, the packet is the frame.
  materialize(pb);
  EXPECT_TRUE(pb.local());
  EXPECT_EQ(std::memcmp(pb.data, big.data(), 1500), 0);
  complete_deferred(tx_.dev, d);
  EXPECT_EQ(d.n, 0u);
  EXPECT_EQ(tx_.drv.used()->idx, 2);
  Used u;
  ASSERT_TRUE(tx_.drv.reap(u));
  EXPECT_EQ(u.id, hb);  // in the order they were made available
  ASSERT_TRUE(tx_.drv.reap(u));
  EXPECT_EQ(u.id, hs);
  EXPECT_EQ(drops_total(), 0u);
}

// A burst without external packets is published by tx_dequeue itself.
TEST_F(NetQueueTest, TxDeferredBurstOfShortFramesPublishesAtOnce) {
  start_tx();
  auto small = frame(100, 4);
  for (int k = 0; k < 3; ++k) ASSERT_GE(add_tx(virtio_net_hdr_v1{}, small, {kHdr + 100}), 0);
  tx_.drv.publish();
  TxDeferred d;
  ASSERT_EQ(tx_dequeue(tx_.dev, *c_, kHdr, tx_caps_, batch_->ptrs(), kBurst, drops_, &d), 3u);
  EXPECT_EQ(d.n, 0u);
  EXPECT_EQ(tx_.drv.used()->idx, 3);
}

// GSO frames and chains of more pieces than a packet can describe are copied whole.
TEST_F(NetQueueTest, TxDeferredNotForGsoOrManyPieces) {
  start_tx(128);
  tx_caps_.csum = tx_caps_.tso4 = true;
  auto f = frame(2000, 5);
  std::vector<uint32_t> sizes(20, 100);
  sizes[0] = kHdr + 100;
  int h = add_tx(virtio_net_hdr_v1{}, f, sizes);
  ASSERT_GE(h, 0);
  tx_.drv.publish();
  TxDeferred d;
  ASSERT_EQ(tx_dequeue(tx_.dev, *c_, kHdr, tx_caps_, batch_->ptrs(), kBurst, drops_, &d), 1u);
  EXPECT_TRUE((*batch_)[0].local());
  EXPECT_EQ(std::memcmp((*batch_)[0].data, f.data(), f.size()), 0);
  EXPECT_EQ(d.n, 0u);
  EXPECT_EQ(tx_.drv.used()->idx, 1);
}

// An external packet lands in RX buffers byte for byte: one chain, mergeable chains
// smaller than the frame, and with an 802.1Q tag inserted.
TEST_F(NetQueueTest, RxTakesExternalPacketsAsTheyAre) {
  start_tx();
  start_rx(128);
  vlan_.trunk = true;
  vlan_.allowed.set(100);
  auto f = frame(3000, 9);
  for (int k = 0; k < 3; ++k) ASSERT_GE(add_tx(virtio_net_hdr_v1{}, f, {kHdr + 1000, 2000}), 0);
  tx_.drv.publish();
  TxDeferred d;
  ASSERT_EQ(tx_dequeue(tx_.dev, *c_, kHdr, tx_caps_, batch_->ptrs(), kBurst, drops_, &d), 3u);
  ASSERT_EQ(d.n, 3u);
  auto one = post_rx(1, 4096);
  Packet* p = &(*batch_)[0];
  ASSERT_FALSE(p->local());
  ASSERT_EQ(rx(&p, 1, false), 1u);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 3000);
  EXPECT_EQ(std::memcmp(g_.host(one[0], 4096) + kHdr, f.data(), 3000), 0);

  auto small = post_rx(3, 1024);  // mergeable: 1012 + 1024 + 964
  p = &(*batch_)[1];
  ASSERT_EQ(rx(&p, 1, true), 1u);
  std::vector<uint8_t> got;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(rx_.drv.reap(u));
    const uint8_t* b = g_.host(small[size_t(i)], 1024);
    got.insert(got.end(), b + (i == 0 ? kHdr : 0), b + u.len);
  }
  EXPECT_EQ(got, f);

  auto tagged = post_rx(1, 4096);
  p = &(*batch_)[2];
  p->vlan = 100;
  ASSERT_EQ(rx(&p, 1, true), 1u);
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 3004);
  std::vector<uint8_t> want(f.begin(), f.begin() + 12);
  for (uint8_t b : {0x81, 0x00, 0x00, 0x64}) want.push_back(b);
  want.insert(want.end(), f.begin() + 12, f.end());
  const uint8_t* b = g_.host(tagged[0], 4096) + kHdr;
  EXPECT_EQ(std::vector<uint8_t>(b, b + 3004), want);
  complete_deferred(tx_.dev, d);
  EXPECT_EQ(tx_.drv.used()->idx, 3);
  EXPECT_EQ(drops_total(), 0u);
}

}  // namespace
}  // namespace vnet::net
