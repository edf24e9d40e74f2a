// Unit tests for dirty page logging (live migration, vhost-user VHOST_F_LOG_ALL) on the
// virtio-net data path, over both ring layouts: while a queue has a DirtyLog, exactly
// the guest pages the device wrote are marked (the bytes of RX buffers a frame filled,
// and the ring memory the device writes: the split used ring, the packed descriptor
// ring and device event area); TX buffers, which the device only reads, are not;
// without a log, or with the buffer marks turned off, no buffer page is marked.
#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <type_traits>
#include <vector>

#include "fake_guest.h"
#include "memory/dirty_log.h"
#include "net/packet.h"
#include "net/virtio_net_queue.h"

namespace vnet::net {
namespace {

using virtio::Buf;
using virtio::Used;
using vnet::testing::FakeGuest;

// Guest memory that does not start at 0, so that a mark at a host-relative or
// front-end virtual address instead of the guest physical one is caught.
constexpr uint64_t kGpa = 0x300000, kSize = 0x400000, kUva = 0x7f0000000000;
constexpr uint32_t kHdr = sizeof(virtio_net_hdr_v1);
constexpr uint64_t kPage = 4096;
constexpr uint64_t kLogBytes = (kGpa + kSize) / kPage / 8;

std::vector<uint8_t> frame(uint32_t len, uint8_t seed) {
  std::vector<uint8_t> f(len);
  for (uint32_t i = 0; i < len; ++i) f[i] = uint8_t(seed + i * 7);
  return f;
}

using Pages = std::set<uint64_t>;
void add_range(Pages& p, uint64_t gpa, uint64_t len) {
  for (uint64_t pg = gpa / kPage; len && pg <= (gpa + len - 1) / kPage; ++pg) p.insert(pg);
}

template <class Pair>
class DirtyLogTest : public ::testing::Test {
 protected:
  static constexpr bool kPacked = std::is_same_v<Pair, vnet::testing::PackedQueuePair>;

  DirtyLogTest()
      : batch_(std::make_unique<PacketBatch>()),
        bits_(kLogBytes + 8, 0),
        log_(memory::DirtyLog::borrow(bits_.data(), kLogBytes)) {
    g_.add_region(kGpa, kSize, kUva);
  }

  void start(Pair& q, uint16_t size = 16) {
    ASSERT_TRUE(q.start(g_, size, false));
    q.dev.set_write_kept(kHdr);
  }
  uint64_t gpa_of(uint64_t uva) const { return uva - kUva + kGpa; }
  // The pages of the ring memory the device writes.
  Pages ring_pages(const Pair& q) const {
    Pages p;
    if constexpr (kPacked) {
      add_range(p, gpa_of(q.cfg.desc_addr), 16ULL * q.cfg.size);
      add_range(p, gpa_of(q.cfg.used_addr), 4);
    } else {
      add_range(p, gpa_of(q.cfg.used_addr), 4 + 8ULL * q.cfg.size);
    }
    return p;
  }
  Pages marked() const {
    Pages p;
    for (uint64_t i = 0; i < bits_.size() * 8; ++i)
      if (bits_[i / 8] & (1u << (i % 8))) p.insert(i);
    return p;
  }
  void clear() { std::fill(bits_.begin(), bits_.end(), 0); }

  // `n` RX buffers of `len` bytes, each starting `len - 100` bytes before a page end so
  // that every one crosses a page boundary.
  std::vector<Buf> post_rx(uint32_t n, uint32_t len) {
    std::vector<Buf> bufs;
    for (uint32_t i = 0; i < n; ++i) {
      uint64_t at = g_.alloc(2 * kPage, kPage);
      Buf b{at + kPage - (len - 100), len};
      EXPECT_GE(rx_.drv.add(nullptr, 0, &b, 1), 0);
      bufs.push_back(b);
    }
    rx_.drv.publish();
    return bufs;
  }
  Packet* pkt(uint32_t i, const std::vector<uint8_t>& f) {
    Packet& p = (*batch_)[i];
    p.vhdr = {};
    p.len = uint32_t(f.size());
    p.vlan = 0;
    p.tail_n = 0;
    p.head = 0;
    std::memcpy(p.data, f.data(), f.size());
    return &p;
  }
  uint32_t rx(Packet* const* pkts, uint32_t n, bool mergeable) {
    uint64_t bytes = 0;
    return rx_enqueue(rx_.dev, *c_, kHdr, mergeable, caps_, vlan_, pkts, n, drops_, &bytes);
  }
  // Reaps every used element and adds the pages of the bytes written to `p`.
  void reap_written(const std::vector<Buf>& bufs, Pages& p, uint32_t expect) {
    uint32_t got = 0;
    Used u;
    while (rx_.drv.reap(u)) {
      ASSERT_LT(got, bufs.size());
      add_range(p, bufs[got].gpa, u.len);
      ++got;
    }
    EXPECT_EQ(got, expect);
  }

  FakeGuest g_;
  Pair tx_, rx_;
  std::unique_ptr<virtio::Chain> c_ = std::make_unique<virtio::Chain>();
  std::unique_ptr<PacketBatch> batch_;
  DropCounters drops_;
  VlanConfig vlan_;
  OffloadCaps caps_;
  std::vector<uint8_t> bits_;
  std::shared_ptr<memory::DirtyLog> log_;
};

using Layouts = ::testing::Types<vnet::testing::QueuePair, vnet::testing::PackedQueuePair>;
TYPED_TEST_SUITE(DirtyLogTest, Layouts);

TYPED_TEST(DirtyLogTest, RxMarksExactlyTheBytesWrittenAndTheRing) {
  this->start(this->rx_);
  this->rx_.dev.set_dirty_log(this->log_.get());
  auto bufs = this->post_rx(3, 2048);
  Packet* p[2] = {this->pkt(0, frame(1500, 1)), this->pkt(1, frame(60, 2))};
  ASSERT_EQ(this->rx(p, 2, false), 2u);
  Pages want = this->ring_pages(this->rx_);
  this->reap_written(bufs, want, 2);
  EXPECT_EQ(this->marked(), want) << "the third buffer, not written, stays unmarked";
  EXPECT_EQ(this->log_->beyond(), 0u);
}

TYPED_TEST(DirtyLogTest, MergeableFrameMarksEveryBufferItFilled) {
  this->start(this->rx_);
  this->rx_.dev.set_dirty_log(this->log_.get());
  auto bufs = this->post_rx(6, 2048);
  Packet* p = this->pkt(0, frame(9000, 3));
  ASSERT_EQ(this->rx(&p, 1, true), 1u);
  Pages want = this->ring_pages(this->rx_);
  this->reap_written(bufs, want, 5);
  EXPECT_EQ(this->marked(), want);
}

TYPED_TEST(DirtyLogTest, TxMarksTheRingButNotTheBuffersItRead) {
  this->start(this->tx_);
  this->tx_.dev.set_dirty_log(this->log_.get());
  std::vector<uint8_t> bytes(kHdr, 0);
  auto f = frame(200, 4);
  bytes.insert(bytes.end(), f.begin(), f.end());
  Buf b = this->g_.buf(uint32_t(bytes.size()));
  std::memcpy(this->g_.host(b.gpa, b.len), bytes.data(), b.len);
  ASSERT_GE(this->tx_.drv.add(&b, 1, nullptr, 0), 0);
  this->tx_.drv.publish();
  ASSERT_EQ(tx_dequeue(this->tx_.dev, *this->c_, kHdr, this->caps_, this->batch_->ptrs(), 32,
                       this->drops_),
            1u);
  EXPECT_EQ(this->marked(), this->ring_pages(this->tx_));
}

TYPED_TEST(DirtyLogTest, NoLogOrBuffersOffMarksNoBuffer) {
  this->start(this->rx_);
  auto bufs = this->post_rx(4, 2048);
  Packet* p = this->pkt(0, frame(1000, 5));
  ASSERT_EQ(this->rx(&p, 1, false), 1u);  // no log: nothing
  EXPECT_TRUE(this->marked().empty());
  // The test knob: the ring is marked, the buffers are not.
  this->rx_.dev.set_dirty_log(this->log_.get(), false);
  EXPECT_FALSE(this->rx_.dev.logging());
  ASSERT_EQ(this->rx(&p, 1, false), 1u);
  EXPECT_EQ(this->marked(), this->ring_pages(this->rx_));
  // Logging on, then off again: the frame after it leaves no mark.
  this->rx_.dev.set_dirty_log(this->log_.get());
  ASSERT_EQ(this->rx(&p, 1, false), 1u);
  this->rx_.dev.set_dirty_log(nullptr);
  this->clear();
  ASSERT_EQ(this->rx(&p, 1, false), 1u);
  EXPECT_TRUE(this->marked().empty());
}

TYPED_TEST(DirtyLogTest, LogKeptAcrossARestartAtTheSamePosition) {
  this->start(this->rx_);
  this->rx_.dev.set_dirty_log(this->log_.get());
  auto bufs = this->post_rx(2, 2048);
  Packet* p = this->pkt(0, frame(500, 6));
  ASSERT_EQ(this->rx(&p, 1, false), 1u);
  // A new memory table or ring address restarts the queue where it was.
  auto cfg = this->rx_.cfg;
  cfg.avail_base = this->rx_.dev.last_avail_idx();
  this->rx_.dev.stop();
  ASSERT_TRUE(this->rx_.dev.start(this->g_.memory(), cfg).is_ok());
  this->clear();
  ASSERT_EQ(this->rx(&p, 1, false), 1u);
  Pages want = this->ring_pages(this->rx_);
  add_range(want, bufs[1].gpa, kHdr + 500);
  EXPECT_EQ(this->marked(), want);
}

TEST(DirtyLog, MarksEachPageOfARangeOnceAndCountsWhatFallsPastTheEnd) {
  std::vector<uint8_t> bits(4, 0);  // 32 pages
  auto log = memory::DirtyLog::borrow(bits.data(), bits.size());
  log->mark(7 * kPage + 4000, 200);  // pages 7 and 8: across a byte boundary
  EXPECT_EQ(bits[0], 0x80);
  EXPECT_EQ(bits[1], 0x01);
  log->mark(31 * kPage, 3 * kPage);  // page 31 fits, 32 and 33 do not
  EXPECT_EQ(bits[3], 0x80);
  EXPECT_EQ(log->beyond(), 2u);
  log->mark(5 * kPage, 0);  // nothing
  EXPECT_EQ(bits[0], 0x80);
  log->mark(UINT64_MAX - 10, 100);  // a range that wraps marks nothing
  EXPECT_EQ(log->beyond(), 2u);
}

TEST(DirtyLog, MapChecksSizeAndFile) {
  EXPECT_FALSE(memory::DirtyLog::map(-1, 0, 0).is_ok());
  EXPECT_FALSE(memory::DirtyLog::map(-1, memory::DirtyLog::kMaxSize + 1, 0).is_ok());
  FILE* f = tmpfile();
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(ftruncate(fileno(f), 8192), 0);
  EXPECT_FALSE(memory::DirtyLog::map(fileno(f), 8192, 4096).is_ok()) << "past the file's end";
  auto log = memory::DirtyLog::map(fileno(f), 4096, 4096);
  ASSERT_TRUE(log.is_ok()) << log.message();
  (*log)->mark(0, 1);
  uint8_t b = 0;
  ASSERT_EQ(pread(fileno(f), &b, 1, 4096), 1);
  EXPECT_EQ(b, 1) << "the mark is in the shared file, at the offset";
  fclose(f);
}

}  // namespace
}  // namespace vnet::net
