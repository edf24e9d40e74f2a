// The virtio-net data path (tx_dequeue, rx_enqueue, complete_deferred) instantiated for
// the packed ring (virtio 1.2 sections 2.8 and 5.1.6): TX chains of any layout become
// Packets, RX frames land in one buffer or, mergeable, across several (num_buffers), and
// the paths that give buffers back (rewind after a frame that did not fit, also after
// some of its buffers were pushed) leave the ring intact for the next frame. The rings
// wrap many times on the way.
#include <gtest/gtest.h>
#include <linux/virtio_config.h>

#include <cstring>
#include <memory>
#include <vector>

#include "fake_guest.h"
#include "net/packet.h"
#include "net/virtio_net_queue.h"
#include "virtio/packed_driver_queue.h"

namespace vnet::net {
namespace {

using virtio::Buf;
using virtio::Used;
using vnet::testing::FakeGuest;
using vnet::testing::PackedQueuePair;

constexpr uint32_t kHdr = sizeof(virtio_net_hdr_v1);

std::vector<uint8_t> frame(uint32_t len, uint8_t seed) {
  std::vector<uint8_t> f(len);
  for (uint32_t i = 0; i < len; ++i) f[i] = uint8_t(seed + i * 7 + (i >> 8));
  return f;
}

class PackedNetTest : public ::testing::Test {
 protected:
  PackedNetTest() : batch_(std::make_unique<PacketBatch>()) {
    g_.add_region(0, 0x800000, 0x7f0000000000);
  }

  // A TX chain of `hdr` + `f` over buffers of the given sizes (adding up to both).
  int add_tx(const std::vector<uint8_t>& f, const std::vector<uint32_t>& sizes) {
    std::vector<uint8_t> bytes(kHdr, 0);
    bytes.insert(bytes.end(), f.begin(), f.end());
    std::vector<Buf> bufs;
    size_t off = 0;
    for (uint32_t s : sizes) {
      Buf b = g_.buf(s);
      std::memcpy(g_.host(b.gpa, s), bytes.data() + off, s);
      off += s;
      bufs.push_back(b);
    }
    EXPECT_EQ(off, bytes.size()) << "test bug";
    return tx_.drv.add(bufs.data(), uint32_t(bufs.size()), nullptr, 0);
  }
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
    p.head = 0;
    p.tail_n = 0;
    p.vlan = 0;
    std::memcpy(p.data, f.data(), f.size());
    return &p;
  }
  uint32_t tx(TxDeferred* d = nullptr) {
    return tx_dequeue(tx_.dev, *c_, kHdr, caps_, batch_->ptrs(), kBurst, drops_, d);
  }
  uint32_t rx(Packet* const* pkts, uint32_t n, bool mergeable) {
    return rx_enqueue(rx_.dev, *c_, kHdr, mergeable, caps_, vlan_, pkts, n, drops_, &bytes_);
  }

  FakeGuest g_;
  PackedQueuePair tx_, rx_;
  std::unique_ptr<virtio::Chain> c_ = std::make_unique<virtio::Chain>();
  std::unique_ptr<PacketBatch> batch_;
  DropCounters drops_;
  uint64_t bytes_ = 0;
  VlanConfig vlan_;
  OffloadCaps caps_;
};

TEST_F(PackedNetTest, TxFramesOfEveryLayoutAcrossManyLaps) {
  ASSERT_TRUE(tx_.start(g_, 8, false));
  for (int round = 0; round < 20; ++round) {
    auto a = frame(60, uint8_t(round)), b = frame(1500, uint8_t(round + 1));
    int ha = add_tx(a, {kHdr, 60});           // header in its own descriptor
    int hb = add_tx(b, {kHdr + 1500});        // one descriptor
    int hc = add_tx(a, {kHdr + 10, 30, 20});  // split anywhere
    ASSERT_GE(ha, 0);
    ASSERT_GE(hb, 0);
    ASSERT_GE(hc, 0);
    tx_.drv.publish();
    ASSERT_EQ(tx(), 3u) << round;
    EXPECT_EQ((*batch_)[0].len, 60u);
    EXPECT_EQ(std::memcmp((*batch_)[0].data, a.data(), 60), 0);
    EXPECT_EQ(std::memcmp((*batch_)[1].data, b.data(), 1500), 0);
    EXPECT_EQ(std::memcmp((*batch_)[2].data, a.data(), 60), 0);
    Used u;
    for (int id : {ha, hb, hc}) {
      ASSERT_TRUE(tx_.drv.reap(u)) << round;
      EXPECT_EQ(u.id, id);
    }
    EXPECT_EQ(tx_.drv.num_free(), 8);
  }
  EXPECT_EQ(drops_.get(Drop::kTxTooShort), 0u);
  EXPECT_FALSE(tx_.dev.broken());
}

TEST_F(PackedNetTest, TxDeferredPublishesOnlyAtCompletion) {
  ASSERT_TRUE(tx_.start(g_, 8, false));
  auto big = frame(1500, 3);
  int h = add_tx(big, {kHdr + 700, 800});
  tx_.drv.publish();
  TxDeferred d;
  ASSERT_EQ(tx(&d), 1u);
  ASSERT_EQ(d.n, 1u);
  Used u;
  EXPECT_FALSE(tx_.drv.reap(u)) << "the guest's buffer is still in use";
  materialize((*batch_)[0]);
  EXPECT_EQ(std::memcmp((*batch_)[0].data, big.data(), 1500), 0);
  complete_deferred(tx_.dev, d);
  ASSERT_TRUE(tx_.drv.reap(u));
  EXPECT_EQ(u.id, h);
}

TEST_F(PackedNetTest, RxFramesIntoOneBufferEachAcrossManyLaps) {
  ASSERT_TRUE(rx_.start(g_, 8, false));
  for (int round = 0; round < 20; ++round) {
    auto gpas = post_rx(5, 2048);
    std::vector<std::vector<uint8_t>> fs;
    Packet* ps[5];
    for (uint32_t i = 0; i < 5; ++i) {
      fs.push_back(frame(100 + i * 300, uint8_t(round * 5 + i)));
      ps[i] = pkt(i, fs.back());
    }
    ASSERT_EQ(rx(ps, 5, false), 5u) << round;
    for (uint32_t i = 0; i < 5; ++i) {
      Used u;
      ASSERT_TRUE(rx_.drv.reap(u)) << round;
      EXPECT_EQ(u.len, kHdr + fs[i].size());
      const uint8_t* b = g_.host(gpas[i], 2048);
      virtio_net_hdr_v1 h;
      std::memcpy(&h, b, kHdr);
      EXPECT_EQ(h.num_buffers, 1);
      EXPECT_EQ(std::memcmp(b + kHdr, fs[i].data(), fs[i].size()), 0);
    }
  }
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 0u);
}

TEST_F(PackedNetTest, RxBufferTooSmallIsKeptForTheNextFrame) {
  ASSERT_TRUE(rx_.start(g_, 8, false));
  auto gpas = post_rx(1, 200);
  auto big = frame(1000, 1), small = frame(100, 2);
  Packet* ps[2] = {pkt(0, big), pkt(1, small)};
  EXPECT_EQ(rx(ps, 2, false), 1u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 1u);
  Used u;
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, kHdr + 100);
  EXPECT_EQ(std::memcmp(g_.host(gpas[0], 200) + kHdr, small.data(), 100), 0);
}

TEST_F(PackedNetTest, RxMergeableJumboOverSeveralBuffers) {
  ASSERT_TRUE(rx_.start(g_, 8, false));
  auto gpas = post_rx(6, 2048);
  auto f = frame(9000, 30);
  Packet* p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, true), 1u);
  const uint32_t want[5] = {2048, 2048, 2048, 2048, 820};
  std::vector<uint8_t> got;
  for (int i = 0; i < 5; ++i) {
    Used u;
    ASSERT_TRUE(rx_.drv.reap(u));
    EXPECT_EQ(u.len, want[i]) << i;
    const uint8_t* b = g_.host(gpas[i], 2048);
    got.insert(got.end(), b + (i == 0 ? kHdr : 0), b + u.len);
  }
  ASSERT_EQ(got.size(), 9000u);
  EXPECT_EQ(std::memcmp(got.data(), f.data(), 9000), 0);
  virtio_net_hdr_v1 h;
  std::memcpy(&h, g_.host(gpas[0], kHdr), kHdr);
  EXPECT_EQ(h.num_buffers, 5);
  EXPECT_EQ(rx_.dev.available(), 1) << "the sixth buffer is left";
}

// The frame takes three buffers, pushes them, finds no fourth and rewinds: nothing was
// written into the ring, so the same buffers serve the next frame.
TEST_F(PackedNetTest, RxMergeableNotEnoughBuffersKeepsThemIntact) {
  ASSERT_TRUE(rx_.start(g_, 4, false));
  auto gpas = post_rx(3, 2048);
  auto big = frame(9000, 33), f = frame(3000, 34);
  Packet* p = pkt(0, big);
  EXPECT_EQ(rx(&p, 1, true), 0u);
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 1u);
  Used u;
  EXPECT_FALSE(rx_.drv.reap(u));
  p = pkt(0, f);
  ASSERT_EQ(rx(&p, 1, true), 1u);
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, 2048u);
  ASSERT_TRUE(rx_.drv.reap(u));
  EXPECT_EQ(u.len, 3000 + kHdr - 2048);
  EXPECT_FALSE(rx_.drv.reap(u));
  virtio_net_hdr_v1 h;
  std::memcpy(&h, g_.host(gpas[0], kHdr), kHdr);
  EXPECT_EQ(h.num_buffers, 2);
  EXPECT_EQ(std::memcmp(g_.host(gpas[1], 2048), f.data() + 2048 - kHdr, 3000 - 2048 + kHdr), 0);
  EXPECT_FALSE(rx_.dev.broken());
}

TEST_F(PackedNetTest, RxMergeableBurstsWrapTheRing) {
  ASSERT_TRUE(rx_.start(g_, 8, false));
  for (int round = 0; round < 10; ++round) {
    post_rx(uint32_t(8 - rx_.drv.in_flight()), 1024);
    auto f1 = frame(3000, uint8_t(round)), f2 = frame(500, uint8_t(round + 3));
    Packet* ps[2] = {pkt(0, f1), pkt(1, f2)};
    ASSERT_EQ(rx(ps, 2, true), 2u) << round;  // 3 + 1 buffers
    Used u;
    int n = 0;
    while (rx_.drv.reap(u)) ++n;
    EXPECT_EQ(n, 4) << round;
  }
  EXPECT_EQ(drops_.get(Drop::kRxNoBuffers), 0u);
  EXPECT_EQ(rx_.drv.bad_used(), 0u);
}

}  // namespace
}  // namespace vnet::net
