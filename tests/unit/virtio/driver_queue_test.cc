// Unit tests for DriverQueue, the driver side of a split virtqueue used by tests,
// benchmarks and container ports: ring layout, free descriptor accounting, reaping,
// a used ring written by a misbehaving device, and the driver's notification fields
// (virtio 1.2 sections 2.7.7 and 2.7.13).
#include "virtio/driver_queue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "fake_guest.h"

namespace vnet::virtio {
namespace {

using vnet::testing::FakeGuest;
using vnet::testing::used_event_of;

class DriverQueueTest : public ::testing::Test {
 protected:
  DriverQueueTest() { g_.add_region(0x10000, 0x100000, 0x7f0000000000); }
  FakeGuest g_;
  DriverQueue q_;
};

TEST_F(DriverQueueTest, LayoutMatchesTheSpec) {
  // desc 16*n, avail 6+2n, used aligned 4 and 6+8n (2.7).
  EXPECT_GE(DriverQueue::ring_bytes(8), 16u * 8 + 6 + 2 * 8 + 6 + 8 * 8);
  QueueConfig c = g_.place_queue(q_, 8, true);
  EXPECT_EQ(c.size, 8);
  EXPECT_EQ(c.desc_addr % 16, 0u);
  EXPECT_EQ(c.avail_addr % 2, 0u);
  EXPECT_EQ(c.used_addr % 4, 0u);
  EXPECT_GE(c.avail_addr, c.desc_addr + 16 * 8);
  EXPECT_GE(c.used_addr, c.avail_addr + 6 + 2 * 8);
  EXPECT_EQ(c.avail_base, 0);
  EXPECT_EQ(q_.num_free(), 8);
  EXPECT_EQ(q_.in_flight(), 0);
}

TEST_F(DriverQueueTest, AddTakesDescriptorsAndFailsWhenFull) {
  g_.place_queue(q_, 4, false);
  Buf b[5] = {g_.buf(1), g_.buf(2), g_.buf(3), g_.buf(4), g_.buf(5)};
  EXPECT_EQ(q_.add(b, 5, nullptr, 0), -1) << "5 descriptors on a queue of 4";
  EXPECT_EQ(q_.add(nullptr, 0, nullptr, 0), -1) << "empty chain";
  int h = q_.add(b, 2, b + 2, 1);
  ASSERT_GE(h, 0);
  EXPECT_EQ(q_.num_free(), 1);
  EXPECT_EQ(q_.add(b, 2, nullptr, 0), -1);
  // The descriptors as the device will read them.
  const vring_desc& d0 = q_.desc()[h];
  EXPECT_EQ(d0.addr, b[0].gpa);
  EXPECT_EQ(d0.flags, VRING_DESC_F_NEXT);
  const vring_desc& d1 = q_.desc()[d0.next];
  EXPECT_EQ(d1.flags, VRING_DESC_F_NEXT);
  const vring_desc& d2 = q_.desc()[d1.next];
  EXPECT_EQ(d2.addr, b[2].gpa);
  EXPECT_EQ(d2.flags, VRING_DESC_F_WRITE);
  EXPECT_EQ(q_.avail()->idx, 0) << "not published yet";
  q_.publish();
  EXPECT_EQ(q_.avail()->idx, 1);
  EXPECT_EQ(q_.avail()->ring[0], h);
}

TEST_F(DriverQueueTest, ReapSkipsBadUsedIds) {
  g_.place_queue(q_, 4, false);
  Buf b = g_.buf(8);
  int h = q_.add(&b, 1, nullptr, 0);
  q_.publish();
  // A device that writes an id out of range, an id not in flight, then the real one.
  q_.used()->ring[0] = vring_used_elem{4, 0};
  q_.used()->ring[1] = vring_used_elem{uint32_t(h == 0 ? 1 : 0), 0};
  q_.used()->ring[2] = vring_used_elem{uint32_t(h), 8};
  q_.used()->idx = 3;
  Used u;
  ASSERT_TRUE(q_.reap(u));
  EXPECT_EQ(u.id, h);
  EXPECT_EQ(u.len, 8u);
  EXPECT_EQ(q_.bad_used(), 2u);
  EXPECT_EQ(q_.num_free(), 4);
  EXPECT_FALSE(q_.reap(u));
}

// Chains completed in order are reused in order (a FIFO free list): single-descriptor
// chains keep taking consecutive descriptors, lap after lap, as an in-order driver's do,
// so a device reads four of them per cache line. A LIFO list would hand back the same
// few descriptors in a scrambled order.
TEST_F(DriverQueueTest, InOrderCompletionKeepsDescriptorsSequential) {
  g_.place_queue(q_, 8, false);
  Buf b = g_.buf(64);
  uint16_t used = 0;
  for (int lap = 0; lap < 3; ++lap) {
    int heads[8];
    for (int i = 0; i < 8; ++i) {
      heads[i] = q_.add(&b, 1, nullptr, 0);
      ASSERT_EQ(heads[i], i) << "lap " << lap;
    }
    q_.publish();
    // The device completes five in order (a partial burst), then the rest.
    for (int i = 0; i < 8; ++i) {
      q_.used()->ring[used % 8] = vring_used_elem{uint32_t(heads[i]), 0};
      ++used;
      if (i == 4 || i == 7) {
        q_.used()->idx = used;
        Used u;
        for (int k = 0; k < (i == 4 ? 5 : 3); ++k) ASSERT_TRUE(q_.reap(u));
        EXPECT_FALSE(q_.reap(u));
      }
    }
    EXPECT_EQ(q_.num_free(), 8);
  }
  // Two back, out of order, while others are in flight: still a valid free list.
  int h0 = q_.add(&b, 1, nullptr, 0), h1 = q_.add(&b, 1, nullptr, 0);
  int h2 = q_.add(&b, 1, nullptr, 0);
  q_.publish();
  q_.used()->ring[used % 8] = vring_used_elem{uint32_t(h1), 0};
  q_.used()->ring[(used + 1) % 8] = vring_used_elem{uint32_t(h0), 0};
  used = uint16_t(used + 2);
  q_.used()->idx = used;
  Used u;
  ASSERT_TRUE(q_.reap(u));
  ASSERT_TRUE(q_.reap(u));
  EXPECT_EQ(q_.num_free(), 7);
  std::vector<int> taken;
  for (int i = 0; i < 7; ++i) taken.push_back(q_.add(&b, 1, nullptr, 0));
  EXPECT_EQ(q_.add(&b, 1, nullptr, 0), -1);
  std::sort(taken.begin(), taken.end());
  for (int i = 0, k = 0; i < 8; ++i) {
    if (i == h2) continue;
    EXPECT_EQ(taken[k++], i);
  }
}

// reap_keep() + repost(): the same chains go round again with no descriptor written and,
// when re-posted in the order they were used, no avail ring entry written either; only
// the avail index moves. A device that returns them out of order still gets each head
// in its avail slot. A head that is not kept, or a kept one reported used again, is
// refused.
TEST_F(DriverQueueTest, KeptChainsArePostedAgainWithoutWritingTheRings) {
  g_.place_queue(q_, 8, false);
  std::vector<Buf> bufs;
  for (int i = 0; i < 8; ++i) bufs.push_back(g_.buf(100 + i));
  for (int i = 0; i < 8; ++i) ASSERT_EQ(q_.add(&bufs[i], 1, nullptr, 0), i);
  q_.publish();
  std::vector<vring_desc> desc_before(q_.desc(), q_.desc() + 8);
  uint16_t used = 0;
  for (int lap = 0; lap < 3; ++lap) {
    for (int i = 0; i < 8; ++i) {
      q_.used()->ring[used % 8] = vring_used_elem{uint32_t(i), uint32_t(lap)};
      ++used;
    }
    q_.used()->idx = used;
    Used u;
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(q_.reap_keep(u));
      EXPECT_EQ(u.id, i);
      EXPECT_EQ(u.len, uint32_t(lap));
    }
    EXPECT_FALSE(q_.reap_keep(u));
    EXPECT_EQ(q_.num_free(), 0) << "kept chains are not free";
    EXPECT_EQ(q_.num_kept(), 8);
    EXPECT_EQ(q_.in_flight(), 0);
    EXPECT_EQ(q_.add(&bufs[0], 1, nullptr, 0), -1);
    for (int i = 0; i < 8; ++i) ASSERT_TRUE(q_.repost(uint16_t(i)));
    EXPECT_FALSE(q_.repost(0)) << "already posted";
    EXPECT_EQ(q_.in_flight(), 8);
    q_.publish();
    EXPECT_EQ(q_.avail()->idx, uint16_t(8 * (lap + 2)));
    for (int i = 0; i < 8; ++i) {
      EXPECT_EQ(q_.avail()->ring[i], i);
      EXPECT_EQ(std::memcmp(&q_.desc()[i], &desc_before[i], sizeof(vring_desc)), 0);
    }
  }
  // Out of order: 3 then 1; reposted in that order they land in the next two slots.
  q_.used()->ring[used % 8] = vring_used_elem{3, 0};
  q_.used()->ring[(used + 1) % 8] = vring_used_elem{1, 0};
  q_.used()->ring[(used + 2) % 8] = vring_used_elem{3, 0};  // 3 again: not in flight
  used = uint16_t(used + 3);
  q_.used()->idx = used;
  Used u;
  ASSERT_TRUE(q_.reap_keep(u));
  EXPECT_EQ(u.id, 3);
  ASSERT_TRUE(q_.reap_keep(u));
  EXPECT_EQ(u.id, 1);
  EXPECT_FALSE(q_.reap_keep(u));
  EXPECT_EQ(q_.bad_used(), 1u);
  const uint16_t slot = q_.avail_idx();
  ASSERT_TRUE(q_.repost(3));
  ASSERT_TRUE(q_.repost(1));
  EXPECT_FALSE(q_.repost(5)) << "in flight, not kept";
  EXPECT_FALSE(q_.repost(8)) << "out of range";
  EXPECT_EQ(q_.avail()->ring[slot % 8], 3);
  EXPECT_EQ(q_.avail()->ring[(slot + 1) % 8], 1);
}

// 2.7.7.1: with EVENT_IDX "the driver MUST set flags to 0"; interrupts are suppressed
// through used_event instead.
TEST_F(DriverQueueTest, EventIdxKeepsAvailFlagsZero) {
  g_.place_queue(q_, 8, true);
  q_.disable_interrupts();
  EXPECT_EQ(q_.avail()->flags, 0);
  q_.enable_interrupts();
  EXPECT_EQ(q_.avail()->flags, 0);
  EXPECT_EQ(*used_event_of(q_.avail(), 8), 0);
}

TEST_F(DriverQueueTest, InterruptFlagsWithoutEventIdx) {
  g_.place_queue(q_, 8, false);
  q_.disable_interrupts();
  EXPECT_EQ(q_.avail()->flags, VRING_AVAIL_F_NO_INTERRUPT);
  q_.enable_interrupts();
  EXPECT_EQ(q_.avail()->flags, 0);
}

TEST_F(DriverQueueTest, ShouldKickOnlyForNewChains) {
  g_.place_queue(q_, 8, false);
  EXPECT_FALSE(q_.should_kick());
  Buf b = g_.buf(8);
  q_.add(&b, 1, nullptr, 0);
  q_.publish();
  EXPECT_TRUE(q_.should_kick());
  EXPECT_FALSE(q_.should_kick()) << "nothing new";
  q_.used()->flags = VRING_USED_F_NO_NOTIFY;
  q_.add(&b, 1, nullptr, 0);
  q_.publish();
  EXPECT_FALSE(q_.should_kick());
}

}  // namespace
}  // namespace vnet::virtio
