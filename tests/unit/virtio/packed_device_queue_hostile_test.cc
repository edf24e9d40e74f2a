// Hostile packed rings against PackedDeviceQueue: descriptors written by hand into fake
// guest memory the way a buggy or malicious driver could (virtio 1.2 section 2.8).
// A chain whose extent is known but whose content is bad (buffer or indirect table
// outside memory, id out of range, readable after writable, INDIRECT where 2.8.7 forbids
// it) is completed with length 0 and counted in bad_chains. A ring that cannot be
// followed (a chained descriptor not marked available, a chain longer than the ring,
// more descriptors available than the ring holds: wrap-counter lies) breaks the queue,
// which then writes nothing. Fake regions are separate heap blocks: any access outside
// them fails the sanitizer build.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "fake_guest.h"
#include "virtio/packed_device_queue.h"
#include "virtio/packed_driver_queue.h"

namespace vnet::virtio {
namespace {

using vnet::testing::FakeGuest;
using vnet::testing::PackedQueuePair;

constexpr uint64_t kR0Size = 0x400000, kR0Uva = 0x7f0000000000;
constexpr uint64_t kHoleGpa = 0x800000;  // unmapped
constexpr uint16_t kAvailF = PackedDeviceQueue::kAvail;
constexpr uint16_t kUsedF = PackedDeviceQueue::kUsed;

class PackedHostileTest : public ::testing::Test {
 protected:
  PackedHostileTest() { g_.add_region(0, kR0Size, kR0Uva); }

  void start(uint16_t size = 8, bool indirect = true) {
    ASSERT_TRUE(q_.start(g_, size, false, indirect));
  }

  // Writes ring descriptor `pos` by hand: flags get the AVAIL/USED bits of lap `wrap`.
  void put(uint16_t pos, uint64_t addr, uint32_t len, uint16_t id, uint16_t flags,
           bool wrap = true) {
    vring_packed_desc& d = q_.drv.desc()[pos];
    d.addr = addr;
    d.len = len;
    d.id = id;
    d.flags = uint16_t(flags | PackedDriverQueue::avail_flags(wrap));
  }

  // The chain at position 0 is bad: completed with length 0 and counted; the used
  // descriptor lands at position 0 with its id; the queue goes on.
  void expect_bad_chain(uint16_t id, const char* what) {
    SCOPED_TRACE(what);
    EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
    EXPECT_EQ(q_.dev.counters().bad_chains.get(), 1u);
    EXPECT_FALSE(q_.dev.broken()) << q_.dev.broken_reason();
    q_.dev.publish();
    const vring_packed_desc& d = q_.drv.desc()[0];
    EXPECT_EQ(d.flags, kAvailF | kUsedF) << "used, nothing written";
    EXPECT_EQ(d.id, id);
  }

  // The ring is unusable: the queue breaks, says why, and writes nothing.
  void expect_broken(const char* what) {
    SCOPED_TRACE(what);
    vring_packed_desc before[8];
    std::memcpy(before, q_.drv.desc(), sizeof(before));
    EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kBroken);
    EXPECT_TRUE(q_.dev.broken());
    EXPECT_NE(std::strlen(q_.dev.broken_reason()), 0u);
    EXPECT_EQ(q_.dev.counters().broken.get(), 1u);
    EXPECT_EQ(q_.dev.available(), 0);
    EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kBroken) << "stays broken";
    PackedDeviceQueue::Direct d;
    EXPECT_FALSE(q_.dev.pop_direct(d));
    q_.dev.publish();
    EXPECT_EQ(std::memcmp(before, q_.drv.desc(), sizeof(before)), 0) << "ring written";
    EXPECT_FALSE(q_.dev.enable_notifications());
  }

  FakeGuest g_;
  PackedQueuePair q_;
  std::unique_ptr<Chain> c_ = std::make_unique<Chain>();
};

// 2.8.1: available means AVAIL == wrap counter and USED != it. Both equal (a "used"
// descriptor the device never wrote) or both different: not available, nothing taken.
TEST_F(PackedHostileTest, AvailUsedBitMismatchIsNotAvailable) {
  start();
  Buf b = g_.buf(64);
  q_.drv.desc()[0] = vring_packed_desc{b.gpa, b.len, 0, uint16_t(kAvailF | kUsedF)};
  EXPECT_EQ(q_.dev.available(), 0);
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
  q_.drv.desc()[0].flags = 0;
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
  q_.drv.desc()[0].flags = kUsedF;  // the other lap's available
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
  EXPECT_FALSE(q_.dev.broken());
  EXPECT_EQ(q_.dev.counters().chains.get(), 0u);
}

TEST_F(PackedHostileTest, ChainedDescriptorNotMarkedAvailableBreaks) {
  start();
  Buf b = g_.buf(64);
  put(0, b.gpa, b.len, 0, VRING_DESC_F_NEXT);
  put(1, b.gpa, b.len, 0, 0, /*wrap=*/false);  // the other lap's bits
  expect_broken("second descriptor of the chain not available");
}

TEST_F(PackedHostileTest, ChainLongerThanTheRingBreaks) {
  start();
  Buf b = g_.buf(64);
  for (uint16_t i = 0; i < 8; ++i) put(i, b.gpa, b.len, 0, VRING_DESC_F_NEXT);
  expect_broken("every descriptor has NEXT");
}

// Wrap-counter lie: the driver marks descriptors available for the next lap although
// the device has not published the ones it holds. More than a ring's worth: broken.
TEST_F(PackedHostileTest, MoreDescriptorsThanTheRingBreaks) {
  start(4);
  Buf b = g_.buf(64);
  for (uint16_t i = 0; i < 4; ++i) put(i, b.gpa, b.len, i, 0);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  for (uint16_t i = 0; i < 4; ++i) q_.dev.push(i, 0);
  // Position 0, next lap (wrap 0), before the device published position 0.
  put(0, b.gpa, b.len, 0, 0, /*wrap=*/false);
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kBroken);
  EXPECT_TRUE(q_.dev.broken());
  PackedDeviceQueue::Direct d;
  EXPECT_FALSE(q_.dev.pop_direct(d));
}

TEST_F(PackedHostileTest, ChainThatWrapsTheRingIsValid) {
  start(4);
  Buf b = g_.buf(64);
  // Move to position 3 with three one-descriptor chains.
  for (uint16_t i = 0; i < 3; ++i) put(i, b.gpa, b.len, i, 0);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    q_.dev.push(c_->head, 0);
  }
  q_.dev.publish();
  // A chain of two at positions 3 and 0: the second in the next lap (wrap 0).
  put(0, b.gpa, b.len, 1, 0, /*wrap=*/false);
  put(3, b.gpa, b.len, 0, VRING_DESC_F_NEXT);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, 1) << "the id of the last descriptor";
  EXPECT_EQ(c_->out_len, 128u);
  q_.dev.push(c_->head, 0);
  q_.dev.publish();
  EXPECT_EQ(q_.drv.desc()[3].flags, kAvailF | kUsedF) << "used where the chain began";
  EXPECT_EQ(q_.dev.last_avail_idx(), 1) << "position 1, wrap counter 0";
}

TEST_F(PackedHostileTest, ChainThatWrapsWithTheWrongLapBreaks) {
  start(4);
  Buf b = g_.buf(64);
  for (uint16_t i = 0; i < 3; ++i) put(i, b.gpa, b.len, i, 0);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    q_.dev.push(c_->head, 0);
  }
  q_.dev.publish();
  put(3, b.gpa, b.len, 0, VRING_DESC_F_NEXT);
  put(0, b.gpa, b.len, 1, 0, /*wrap=*/true);  // the old lap's bits after the wrap
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kBroken);
  EXPECT_TRUE(q_.dev.broken());
}

TEST_F(PackedHostileTest, IdOutOfRangeIsABadChain) {
  start();
  Buf b = g_.buf(64);
  put(0, b.gpa, b.len, 8, 0);
  expect_bad_chain(8, "id equal to the queue size");
}

TEST_F(PackedHostileTest, BufferOutsideMemoryIsABadChain) {
  start();
  put(0, kHoleGpa, 64, 3, 0);
  expect_bad_chain(3, "buffer in a hole");
}

TEST_F(PackedHostileTest, BufferPastTheEndOfAddressSpaceIsABadChain) {
  start();
  put(0, ~0ULL - 10, 64, 3, 0);
  expect_bad_chain(3, "address wraps");
}

TEST_F(PackedHostileTest, ReadableAfterWritableIsABadChain) {
  start();
  Buf b = g_.buf(64);
  put(0, b.gpa, b.len, 0, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE);
  put(1, b.gpa, b.len, 5, 0);
  expect_bad_chain(5, "readable after writable");
  EXPECT_EQ(q_.dev.last_avail_idx(), 2 | PackedDeviceQueue::kWrapBit) << "skipped both";
}

TEST_F(PackedHostileTest, IndirectWithoutTheFeatureIsABadChain) {
  start(8, /*indirect=*/false);
  Buf b = g_.buf(16);
  put(0, b.gpa, 16, 2, VRING_DESC_F_INDIRECT);
  expect_bad_chain(2, "indirect not negotiated");
}

TEST_F(PackedHostileTest, IndirectWithNextIsABadChain) {
  start();
  Buf t = g_.buf(16);
  Buf b = g_.buf(64);
  put(0, t.gpa, 16, 0, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT);
  put(1, b.gpa, b.len, 4, 0);
  expect_bad_chain(4, "indirect in a list linked by NEXT");
}

TEST_F(PackedHostileTest, IndirectAfterADirectDescriptorIsABadChain) {
  start();
  Buf t = g_.buf(16);
  Buf b = g_.buf(64);
  put(0, b.gpa, b.len, 0, VRING_DESC_F_NEXT);
  put(1, t.gpa, 16, 4, VRING_DESC_F_INDIRECT);
  expect_bad_chain(4, "indirect at the end of a list");
}

TEST_F(PackedHostileTest, IndirectTableOutsideMemoryIsABadChain) {
  start();
  put(0, kHoleGpa, 64, 1, VRING_DESC_F_INDIRECT);
  expect_bad_chain(1, "table in a hole");
}

TEST_F(PackedHostileTest, IndirectTableCrossingTheRegionEndIsABadChain) {
  start();
  put(0, kR0Size - 16, 32, 1, VRING_DESC_F_INDIRECT);
  expect_bad_chain(1, "table crosses the end of memory");
}

TEST_F(PackedHostileTest, IndirectTableLengthNotAMultipleOf16IsABadChain) {
  start();
  Buf t = g_.buf(32);
  put(0, t.gpa, 24, 1, VRING_DESC_F_INDIRECT);
  expect_bad_chain(1, "len 24");
}

TEST_F(PackedHostileTest, EmptyIndirectTableIsABadChain) {
  start();
  Buf t = g_.buf(32);
  put(0, t.gpa, 0, 1, VRING_DESC_F_INDIRECT);
  expect_bad_chain(1, "len 0");
}

TEST_F(PackedHostileTest, NestedIndirectIsABadChain) {
  start();
  uint64_t tgpa = g_.alloc(32);
  auto* table = g_.at<vring_packed_desc>(tgpa);
  table[0] = vring_packed_desc{tgpa, 32, 0, VRING_DESC_F_INDIRECT};
  put(0, tgpa, 16, 6, VRING_DESC_F_INDIRECT);
  expect_bad_chain(6, "an indirect table pointing at itself");
}

TEST_F(PackedHostileTest, IndirectEntryOutsideMemoryIsABadChain) {
  start();
  uint64_t tgpa = g_.alloc(32);
  auto* table = g_.at<vring_packed_desc>(tgpa);
  table[0] = vring_packed_desc{kHoleGpa, 64, 0, 0};
  put(0, tgpa, 16, 6, VRING_DESC_F_INDIRECT);
  expect_bad_chain(6, "table entry in a hole");
}

// A bad chain does not stop the next good one.
TEST_F(PackedHostileTest, GoodChainAfterABadOneIsPopped) {
  start();
  Buf b = g_.buf(64);
  put(0, kHoleGpa, 64, 1, 0);
  put(1, b.gpa, b.len, 2, 0);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, 2);
  EXPECT_EQ(q_.dev.counters().bad_chains.get(), 1u);
  q_.dev.push(c_->head, 0);
  q_.dev.publish();
  EXPECT_EQ(q_.drv.desc()[0].id, 1);
  EXPECT_EQ(q_.drv.desc()[1].id, 2);
  EXPECT_EQ(q_.drv.desc()[1].flags, kAvailF | kUsedF);
}

// 2.8.10: the driver event suppression structure holds any bits a driver writes (offsets
// past the ring, the reserved flags value 3): they are only compared, never followed.
TEST_F(PackedHostileTest, EventSuppressionFieldsAnywhereAreHarmless) {
  ASSERT_TRUE(q_.start(g_, 8, /*event_idx=*/true));
  Buf b = g_.buf(64);
  for (uint32_t v : {0xffffffffu, 0x00027fffu, 0x0002ffffu, 0x00030000u, 0x12345678u}) {
    std::memcpy(q_.drv.driver_event(), &v, 4);
    int id = q_.drv.add(&b, 1, nullptr, 0);
    q_.drv.publish();
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    q_.dev.push(uint16_t(id), 0);
    q_.dev.publish();
    (void)q_.dev.should_notify();
    Used u;
    ASSERT_TRUE(q_.drv.reap(u));
  }
  EXPECT_FALSE(q_.dev.broken());
}

}  // namespace
}  // namespace vnet::virtio
