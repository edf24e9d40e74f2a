// Hostile rings against DeviceQueue: descriptor tables and available rings written by
// hand into fake guest memory the way a buggy or malicious driver could (virtio 1.2
// section 2.7). A bad chain with a valid head is completed with length 0 and counted
// in bad_chains; a bad ring (avail index too far ahead, head out of range) breaks the
// queue. Fake memory regions are separate heap blocks, so any read or write outside
// them fails the sanitizer build.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "fake_guest.h"
#include "virtio/device_queue.h"
#include "virtio/driver_queue.h"

namespace vnet::virtio {
namespace {

using vnet::testing::FakeGuest;
using vnet::testing::QueuePair;

constexpr uint64_t kR0Gpa = 0x0, kR0Size = 0x400000, kR0Uva = 0x7f0000000000;
constexpr uint64_t kR1Gpa = kR0Gpa + kR0Size, kR1Size = 0x10000, kR1Uva = 0x7f0100000000;
constexpr uint64_t kHoleGpa = kR1Gpa + kR1Size;  // unmapped up to kR2Gpa
constexpr uint64_t kR2Gpa = 0x1000000, kR2Size = 0x10000, kR2Uva = 0x7f0200000000;
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

class HostileQueueTest : public ::testing::Test {
 protected:
  HostileQueueTest() {
    g_.add_region(kR0Gpa, kR0Size, kR0Uva);
    g_.add_region(kR1Gpa, kR1Size, kR1Uva);
    g_.add_region(kR2Gpa, kR2Size, kR2Uva);
  }

  void start(uint16_t size = 8, bool indirect = true) {
    ASSERT_TRUE(q_.start(g_, size, false, indirect));
  }

  vring_desc& desc(int i) { return q_.drv.desc()[i]; }

  // A table of `n` descriptors in region 0 (16-byte aligned), zeroed.
  vring_desc* table(uint32_t n, uint64_t* gpa) {
    *gpa = g_.alloc(uint64_t(n) * sizeof(vring_desc));
    return g_.at<vring_desc>(*gpa);
  }

  // The only chain published is bad: pop finds nothing usable, counts it, completes it
  // with length 0, and the driver gets its buffer back after publish().
  void expect_bad_chain(int head, const char* what) {
    SCOPED_TRACE(what);
    const uint64_t bad_before = q_.dev.counters().bad_chains.get();
    EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
    EXPECT_EQ(q_.dev.counters().bad_chains.get(), bad_before + 1);
    EXPECT_FALSE(q_.dev.broken()) << q_.dev.broken_reason();
    q_.dev.publish();
    Used u;
    ASSERT_TRUE(q_.drv.reap(u)) << "bad chain not returned to the driver";
    EXPECT_EQ(u.id, head);
    EXPECT_EQ(u.len, 0u);
    EXPECT_EQ(q_.drv.bad_used(), 0u);
  }

  // The ring is bad: the queue breaks, says why, and writes nothing to the used ring.
  void expect_broken(const char* what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kBroken);
    EXPECT_TRUE(q_.dev.broken());
    EXPECT_NE(std::strlen(q_.dev.broken_reason()), 0u);
    EXPECT_EQ(q_.dev.counters().broken.get(), 1u);
    EXPECT_EQ(q_.dev.available(), 0);
    EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kBroken) << "stays broken";
    q_.dev.publish();
    EXPECT_EQ(q_.drv.used()->idx, 0);
    EXPECT_EQ(q_.drv.used()->ring[0].id, 0u);
    EXPECT_EQ(q_.drv.used()->ring[0].len, 0u);
    EXPECT_EQ(q_.dev.enable_notifications(), false);
  }

  // Publishes a good one-descriptor chain after whatever is there and checks that it
  // still comes out: a bad chain does not stop the queue.
  void expect_next_chain_ok() {
    Buf b = g_.buf(40);
    int h = q_.drv.add(&b, 1, nullptr, 0);
    ASSERT_GE(h, 0);
    q_.drv.publish();
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    EXPECT_EQ(c_->head, h);
    EXPECT_EQ(c_->out_len, 40u);
  }

  FakeGuest g_;
  QueuePair q_;
  std::unique_ptr<Chain> c_ = std::make_unique<Chain>();  // heap: overflow is caught
};

// ---- bad chains (valid head) -------------------------------------------------------

TEST_F(HostileQueueTest, DescriptorLoop) {
  start();
  Buf out[3] = {g_.buf(10), g_.buf(10), g_.buf(10)};
  int h = q_.drv.add(out, 3, nullptr, 0);
  ASSERT_GE(h, 0);
  uint16_t second = desc(h).next;
  uint16_t third = desc(second).next;
  desc(third).flags |= VRING_DESC_F_NEXT;
  desc(third).next = uint16_t(h);  // back to the head
  q_.drv.publish();
  expect_bad_chain(h, "loop to head");
  expect_next_chain_ok();
}

TEST_F(HostileQueueTest, DescriptorSelfLoop) {
  start();
  Buf out = g_.buf(10);
  int h = q_.drv.add(&out, 1, nullptr, 0);
  desc(h).flags |= VRING_DESC_F_NEXT;
  desc(h).next = uint16_t(h);
  q_.drv.publish();
  expect_bad_chain(h, "self loop");
}

TEST_F(HostileQueueTest, WritableSelfLoopIsNotFollowedForever) {
  // A loop of writable descriptors over a large queue: bounded by the queue size and by
  // Chain::kMaxSegs, whichever comes first, never past the segs array.
  start(1024);
  Buf in = g_.buf(16);
  int h = q_.drv.add(nullptr, 0, &in, 1);
  desc(h).flags |= VRING_DESC_F_NEXT;
  desc(h).next = uint16_t(h);
  q_.drv.publish();
  expect_bad_chain(h, "writable self loop");
}

TEST_F(HostileQueueTest, NextIndexOutOfRange) {
  start();
  for (uint16_t bad_next : {uint16_t(8), uint16_t(9), uint16_t(0xffff)}) {
    Buf out[2] = {g_.buf(10), g_.buf(10)};
    int h = q_.drv.add(out, 2, nullptr, 0);
    ASSERT_GE(h, 0);
    desc(h).next = bad_next;
    q_.drv.publish();
    expect_bad_chain(h, "next out of range");
  }
  expect_next_chain_ok();
}

TEST_F(HostileQueueTest, ChainWithMorePiecesThanChainCanHold) {
  // 2.7.4.2: "The device MAY have a reasonable limit of descriptors it will allow in a
  // chain". 257 descriptors on a 512 queue: more than Chain::kMaxSegs.
  start(512);
  std::vector<Buf> bufs;
  for (uint32_t i = 0; i < Chain::kMaxSegs + 1; ++i) bufs.push_back(g_.buf(4));
  int h = q_.drv.add(bufs.data(), uint32_t(bufs.size()), nullptr, 0);
  ASSERT_GE(h, 0);
  q_.drv.publish();
  expect_bad_chain(h, "kMaxSegs + 1 descriptors");
  expect_next_chain_ok();
}

TEST_F(HostileQueueTest, CrossingDescriptorPushesPiecesPastKMaxSegs) {
  // kMaxSegs descriptors, the last of which crosses from region 0 into region 1 and so
  // needs two pieces: one piece too many.
  start(512);
  std::vector<Buf> bufs;
  for (uint32_t i = 0; i + 1 < Chain::kMaxSegs; ++i) bufs.push_back(g_.buf(4));
  bufs.push_back(Buf{kR1Gpa - 8, 16});
  int h = q_.drv.add(bufs.data(), uint32_t(bufs.size()), nullptr, 0);
  ASSERT_GE(h, 0);
  q_.drv.publish();
  expect_bad_chain(h, "kMaxSegs descriptors, kMaxSegs + 1 pieces");
}

TEST_F(HostileQueueTest, WritableFollowedByReadable) {
  start();
  Buf out = g_.buf(10), in = g_.buf(10);
  int h = q_.drv.add(&out, 1, &in, 1);
  ASSERT_GE(h, 0);
  uint16_t second = desc(h).next;
  desc(h).flags = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE;
  desc(second).flags = 0;
  q_.drv.publish();
  expect_bad_chain(h, "W then R");
  expect_next_chain_ok();
}

TEST_F(HostileQueueTest, AddressOutsideMemory) {
  start();
  struct Case {
    uint64_t addr;
    uint32_t len;
    const char* what;
  } cases[] = {
      {kHoleGpa, 16, "in the hole"},
      {kHoleGpa - 8, 16, "runs from region 1 into the hole"},
      {kR2Gpa + kR2Size - 1, 2, "one byte past the last region"},
      {kR2Gpa - 1, 2, "starts in the hole, ends in region 2"},
      {0x7f0000000000, 16, "a front-end virtual address"},
      {kMax - 0xf, 0x20, "addr + len wraps past 2^64 into region 0"},
      {kMax, 0xffffffff, "addr + len wraps past 2^64"},
  };
  for (const Case& k : cases) {
    for (bool writable : {false, true}) {
      Buf b{k.addr, k.len};
      int h = writable ? q_.drv.add(nullptr, 0, &b, 1) : q_.drv.add(&b, 1, nullptr, 0);
      ASSERT_GE(h, 0);
      q_.drv.publish();
      expect_bad_chain(h, k.what);
    }
  }
  expect_next_chain_ok();
}

TEST_F(HostileQueueTest, BadDescriptorInTheMiddleOfAChain) {
  start();
  Buf out[3] = {g_.buf(10), Buf{kHoleGpa, 10}, g_.buf(10)};
  int h = q_.drv.add(out, 3, nullptr, 0);
  q_.drv.publish();
  expect_bad_chain(h, "second descriptor outside memory");
}

// ---- indirect ----------------------------------------------------------------------

TEST_F(HostileQueueTest, IndirectNotNegotiated) {
  start(8, /*indirect=*/false);
  Buf out = g_.buf(10);
  uint64_t tgpa;
  vring_desc* t = table(1, &tgpa);
  int h = q_.drv.add_indirect(&out, 1, nullptr, 0, t, tgpa);
  q_.drv.publish();
  expect_bad_chain(h, "indirect without VIRTIO_RING_F_INDIRECT_DESC");
  expect_next_chain_ok();
}

TEST_F(HostileQueueTest, NestedIndirect) {
  start();
  Buf out = g_.buf(10);
  uint64_t inner_gpa, outer_gpa;
  vring_desc* inner = table(1, &inner_gpa);
  inner[0] = vring_desc{out.gpa, out.len, 0, 0};
  vring_desc* outer = table(2, &outer_gpa);
  Buf first = g_.buf(10);
  int h = q_.drv.add_indirect(&first, 1, &out, 1, outer, outer_gpa);
  outer[1] = vring_desc{inner_gpa, sizeof(vring_desc), VRING_DESC_F_INDIRECT, 0};
  q_.drv.publish();
  expect_bad_chain(h, "indirect inside indirect");
  // Nested as the first entry of the table too.
  vring_desc* outer2 = table(1, &outer_gpa);
  h = q_.drv.add_indirect(&first, 1, nullptr, 0, outer2, outer_gpa);
  outer2[0] = vring_desc{inner_gpa, sizeof(vring_desc), VRING_DESC_F_INDIRECT, 0};
  q_.drv.publish();
  expect_bad_chain(h, "table whose only entry is indirect");
}

TEST_F(HostileQueueTest, IndirectTableLengthNotAMultipleOf16) {
  start();
  // One complete entry without NEXT: a device that rounded the length down would take
  // it as a valid one-entry table.
  for (uint32_t len : {8u, 17u, 24u, 31u}) {
    Buf out = g_.buf(10);
    uint64_t tgpa;
    vring_desc* t = table(2, &tgpa);
    int h = q_.drv.add_indirect(&out, 1, nullptr, 0, t, tgpa);
    desc(h).len = len;
    q_.drv.publish();
    expect_bad_chain(h, "indirect len not a multiple of 16");
  }
}

TEST_F(HostileQueueTest, IndirectTableLengthZero) {
  start();
  Buf out = g_.buf(10);
  uint64_t tgpa;
  vring_desc* t = table(1, &tgpa);
  int h = q_.drv.add_indirect(&out, 1, nullptr, 0, t, tgpa);
  desc(h).len = 0;
  q_.drv.publish();
  expect_bad_chain(h, "indirect len 0");
}

TEST_F(HostileQueueTest, IndirectTableLargerThanAllowed) {
  // More than 32768 entries (the most a chain can have, 2.7.5.3.1 with the largest
  // queue): rejected without being read. The length is valid memory: 32769 * 16 bytes.
  start();
  Buf out = g_.buf(10);
  uint64_t tgpa;
  vring_desc* t = table(32769, &tgpa);
  int h = q_.drv.add_indirect(&out, 1, nullptr, 0, t, tgpa);
  desc(h).len = 32769 * sizeof(vring_desc);
  q_.drv.publish();
  expect_bad_chain(h, "indirect table of 32769 entries");
  // Larger than the memory that backs it.
  h = q_.drv.add_indirect(&out, 1, nullptr, 0, t, tgpa);
  desc(h).len = 0xfffffff0;
  q_.drv.publish();
  expect_bad_chain(h, "indirect table of 4 GiB");
}

// Documents a decision of device_queue.cc: an indirect table may hold more entries than
// the queue size (Linux virtio_ring only bounds total_sg by the ring size when it does
// not use indirect descriptors), up to 32768 and Chain::kMaxSegs pieces.
TEST_F(HostileQueueTest, IndirectTableLongerThanQueueSizeIsAccepted) {
  start(8);
  std::vector<Buf> bufs;
  for (int i = 0; i < 9; ++i) bufs.push_back(g_.buf(4));
  uint64_t tgpa;
  vring_desc* t = table(9, &tgpa);
  int h = q_.drv.add_indirect(bufs.data(), 9, nullptr, 0, t, tgpa);
  ASSERT_GE(h, 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->n_out, 9u);
  EXPECT_EQ(c_->out_len, 36u);
}

TEST_F(HostileQueueTest, IndirectTableWithMorePiecesThanChainCanHold) {
  start(1024);
  const uint32_t n = Chain::kMaxSegs + 1;
  uint64_t tgpa;
  vring_desc* t = table(n, &tgpa);
  std::vector<Buf> bufs;
  for (uint32_t i = 0; i < n; ++i) bufs.push_back(g_.buf(4));
  int h = q_.drv.add_indirect(bufs.data(), n, nullptr, 0, t, tgpa);
  q_.drv.publish();
  expect_bad_chain(h, "indirect table with kMaxSegs + 1 descriptors");
}

TEST_F(HostileQueueTest, IndirectTableOutsideMemory) {
  start();
  Buf out = g_.buf(10);
  uint64_t tgpa;
  vring_desc* t = table(1, &tgpa);
  int h = q_.drv.add_indirect(&out, 1, nullptr, 0, t, tgpa);
  desc(h).addr = kHoleGpa;
  q_.drv.publish();
  expect_bad_chain(h, "table in the hole");
  h = q_.drv.add_indirect(&out, 1, nullptr, 0, t, tgpa);
  desc(h).addr = kMax - 0xf;
  desc(h).len = 32;
  q_.drv.publish();
  expect_bad_chain(h, "table wraps past 2^64");
}

TEST_F(HostileQueueTest, IndirectTableLoopAndNextOutOfRange) {
  start();
  Buf out[2] = {g_.buf(10), g_.buf(10)};
  uint64_t tgpa;
  vring_desc* t = table(2, &tgpa);
  int h = q_.drv.add_indirect(out, 2, nullptr, 0, t, tgpa);
  t[1].flags |= VRING_DESC_F_NEXT;
  t[1].next = 0;
  q_.drv.publish();
  expect_bad_chain(h, "loop inside the table");
  t = table(2, &tgpa);
  h = q_.drv.add_indirect(out, 2, nullptr, 0, t, tgpa);
  t[0].next = 2;  // past the end of a 2-entry table, though < queue size
  q_.drv.publish();
  expect_bad_chain(h, "next past the end of the table");
}

TEST_F(HostileQueueTest, IndirectTableWritableFollowedByReadable) {
  start();
  Buf out = g_.buf(10), in = g_.buf(10);
  uint64_t tgpa;
  vring_desc* t = table(2, &tgpa);
  int h = q_.drv.add_indirect(&out, 1, &in, 1, t, tgpa);
  t[0].flags = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE;
  t[1].flags = 0;
  q_.drv.publish();
  expect_bad_chain(h, "W then R inside the table");
  // A writable direct descriptor followed by an indirect table of readable ones.
  Buf dw = g_.buf(10);
  Buf dummy = g_.buf(1);
  h = q_.drv.add(nullptr, 0, &dw, 1);
  int h2 = q_.drv.add(&dummy, 1, nullptr, 0);
  (void)h2;
  // Make h a 2-descriptor chain by hand: [W] -> [INDIRECT -> R].
  vring_desc* t2 = table(1, &tgpa);
  t2[0] = vring_desc{out.gpa, out.len, 0, 0};
  desc(h2) = vring_desc{tgpa, sizeof(vring_desc), VRING_DESC_F_INDIRECT, 0};
  desc(h).flags |= VRING_DESC_F_NEXT;
  desc(h).next = uint16_t(h2);
  q_.drv.publish();
  const uint64_t bad_before = q_.dev.counters().bad_chains.get();
  // h is bad; h2 (published on its own) is a valid one-entry indirect chain.
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h2);
  EXPECT_EQ(q_.dev.counters().bad_chains.get(), bad_before + 1);
}

// 2.7.5.3.1: "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT".
// The device treats such a descriptor as a bad chain.
TEST_F(HostileQueueTest, IndirectTogetherWithNext) {
  start();
  Buf out = g_.buf(10), extra = g_.buf(10);
  uint64_t tgpa;
  vring_desc* t = table(1, &tgpa);
  int other = q_.drv.add(&extra, 1, nullptr, 0);  // a descriptor NEXT can point at
  int h = q_.drv.add_indirect(&out, 1, nullptr, 0, t, tgpa);
  desc(h).flags |= VRING_DESC_F_NEXT;
  desc(h).next = uint16_t(other);
  // Publish only h: overwrite the avail entry of `other` with h and move it back.
  q_.drv.avail()->ring[0] = uint16_t(h);
  q_.drv.avail()->idx = 1;
  expect_bad_chain(h, "INDIRECT | NEXT");
}

// ---- bad rings ---------------------------------------------------------------------

TEST_F(HostileQueueTest, AvailIndexMoreThanSizeAhead) {
  start();
  q_.drv.avail()->idx = 9;  // 9 chains "available" on a queue of 8
  EXPECT_EQ(q_.dev.available(), 0);
  EXPECT_TRUE(q_.dev.broken());
  expect_broken("avail idx 9 ahead");
}

TEST_F(HostileQueueTest, AvailIndexFarAheadOnPop) {
  start();
  q_.drv.avail()->idx = 0x8000;
  expect_broken("avail idx 0x8000 ahead");
}

TEST_F(HostileQueueTest, AvailIndexGoingBackwards) {
  // 2.7.6.1: the driver MUST NOT decrement avail idx; seen from the device, idx - last
  // becomes huge.
  start();
  Buf b = g_.buf(10);
  for (int i = 0; i < 2; ++i) ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  q_.drv.avail()->idx = 1;
  EXPECT_EQ(q_.dev.available(), 0);
  EXPECT_TRUE(q_.dev.broken());
}

TEST_F(HostileQueueTest, AvailIndexExactlySizeAheadIsFine) {
  start();
  Buf b = g_.buf(10);
  for (int i = 0; i < 8; ++i) ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  EXPECT_EQ(q_.dev.available(), 8);
  EXPECT_FALSE(q_.dev.broken());
}

TEST_F(HostileQueueTest, HeadOutOfRange) {
  start();
  q_.drv.avail()->ring[0] = 8;
  q_.drv.avail()->idx = 1;
  expect_broken("head 8 on a queue of 8");
}

TEST_F(HostileQueueTest, HeadOutOfRangeAfterGoodChains) {
  start();
  Buf b = g_.buf(10);
  int h = q_.drv.add(&b, 1, nullptr, 0);
  q_.drv.publish();
  q_.drv.avail()->ring[1] = 0xffff;
  q_.drv.avail()->idx = 2;
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h);
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kBroken);
  EXPECT_TRUE(q_.dev.broken());
  EXPECT_EQ(q_.dev.counters().broken.get(), 1u);
}

TEST_F(HostileQueueTest, RestartClearsBroken) {
  start();
  q_.drv.avail()->ring[0] = 8;
  q_.drv.avail()->idx = 1;
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kBroken);
  q_.dev.stop();
  q_.drv.avail()->ring[0] = 0;
  q_.drv.desc()[0] = vring_desc{g_.buf(10).gpa, 10, 0, 0};
  ASSERT_TRUE(q_.dev.start(g_.memory(), q_.cfg).is_ok());
  EXPECT_FALSE(q_.dev.broken());
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, 0);
}

// Many bad chains in a row are all completed by one pop call, which then reports the
// first good chain.
TEST_F(HostileQueueTest, BadChainsAreSkippedUpToTheNextGoodOne) {
  start();
  int bad[3];
  for (int& h : bad) {
    Buf b{kHoleGpa, 10};
    h = q_.drv.add(&b, 1, nullptr, 0);
  }
  Buf good = g_.buf(10);
  int hg = q_.drv.add(&good, 1, nullptr, 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, hg);
  EXPECT_EQ(q_.dev.counters().bad_chains.get(), 3u);
  q_.dev.push(c_->head, 0);
  q_.dev.publish();
  for (int i = 0; i < 3; ++i) {
    Used u;
    ASSERT_TRUE(q_.drv.reap(u));
    EXPECT_EQ(u.id, bad[i]);
    EXPECT_EQ(u.len, 0u);
  }
  Used u;
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, hg);
}

}  // namespace
}  // namespace vnet::virtio
