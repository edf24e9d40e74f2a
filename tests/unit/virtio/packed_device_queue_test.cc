// PackedDeviceQueue against PackedDriverQueue in fake guest memory (virtio 1.2 section
// 2.8): direct, chained and indirect chains, chains that wrap the ring, used
// descriptors written at the chain's first position and skipped by its length, the
// burst published at once, mark/rewind, event suppression both ways, ring state
// carried across stop/start (SET/GET_VRING_BASE with the wrap counter in bit 15).
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "fake_guest.h"
#include "virtio/packed_device_queue.h"
#include "virtio/packed_driver_queue.h"

namespace vnet::virtio {
namespace {

using vnet::testing::FakeGuest;
using vnet::testing::PackedQueuePair;

constexpr uint16_t kWrap = PackedDeviceQueue::kWrapBit;
constexpr uint16_t kAvailF = PackedDeviceQueue::kAvail;
constexpr uint16_t kUsedF = PackedDeviceQueue::kUsed;

class PackedQueueTest : public ::testing::Test {
 protected:
  PackedQueueTest() { g_.add_region(0, 0x400000, 0x7f0000000000); }

  // Pops one chain, completes it with `written` and publishes; returns its id.
  int pop_push(uint32_t written) {
    if (q_.dev.pop(*c_) != PopStatus::kOk) return -1;
    q_.dev.push(c_->head, written);
    q_.dev.publish();
    return c_->head;
  }

  FakeGuest g_;
  PackedQueuePair q_;
  std::unique_ptr<Chain> c_ = std::make_unique<Chain>();
};

TEST_F(PackedQueueTest, EmptyQueuePopsNothing) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  EXPECT_EQ(q_.dev.available(), 0);
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
  PackedDeviceQueue::Direct d;
  EXPECT_FALSE(q_.dev.pop_direct(d));
  EXPECT_EQ(q_.dev.last_avail_idx(), kWrap) << "position 0, wrap counter 1";
}

TEST_F(PackedQueueTest, OneReadableDescriptorRoundTrip) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf b = g_.buf(100, 0x5a);
  int id = q_.drv.add(&b, 1, nullptr, 0);
  ASSERT_GE(id, 0);
  EXPECT_EQ(q_.dev.available(), 0) << "visible before publish";
  q_.drv.publish();
  EXPECT_EQ(q_.dev.available(), 1);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, id);
  EXPECT_EQ(c_->n_out, 1u);
  EXPECT_EQ(c_->out_len, 100u);
  EXPECT_EQ(c_->segs[0].iov_base, g_.host(b.gpa));
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
  q_.dev.push(uint16_t(id), 0);
  Used u;
  EXPECT_FALSE(q_.drv.reap(u)) << "used before publish";
  q_.dev.publish();
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, id);
  EXPECT_EQ(u.len, 0u);
  // 2.8.1/2.8.3: used: AVAIL = USED = device wrap counter; no WRITE when nothing written.
  EXPECT_EQ(q_.drv.desc()[0].flags, kAvailF | kUsedF);
  EXPECT_EQ(q_.drv.num_free(), 8);
}

TEST_F(PackedQueueTest, ChainedDescriptorsUseOneUsedDescriptorAndSkip) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf out[2] = {g_.buf(12), g_.buf(300)};
  Buf in[1] = {g_.buf(4000)};
  int a = q_.drv.add(out, 2, in, 1);
  Buf one = g_.buf(64);
  int b = q_.drv.add(nullptr, 0, &one, 1);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, a);
  EXPECT_EQ(c_->n_out, 2u);
  EXPECT_EQ(c_->n_in, 1u);
  EXPECT_EQ(c_->out_len, 312u);
  EXPECT_EQ(c_->in_len, 4000u);
  q_.dev.push(c_->head, 500);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, b);
  q_.dev.push(c_->head, 64);
  q_.dev.publish();
  // The second used descriptor is at position 3: right after the first chain.
  EXPECT_EQ(q_.drv.desc()[3].id, b);
  EXPECT_EQ(q_.drv.desc()[3].len, 64u);
  EXPECT_EQ(q_.drv.desc()[3].flags, kAvailF | kUsedF | VRING_DESC_F_WRITE);
  Used u;
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, a);
  EXPECT_EQ(u.len, 500u);
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, b);
  EXPECT_FALSE(q_.drv.reap(u));
  EXPECT_EQ(q_.drv.bad_used(), 0u);
}

TEST_F(PackedQueueTest, IndirectChain) {
  ASSERT_TRUE(q_.start(g_, 8, false, true));
  Buf out[2] = {g_.buf(12), g_.buf(1500)};
  Buf in[1] = {g_.buf(64)};
  uint64_t tgpa = g_.alloc(3 * sizeof(vring_packed_desc));
  int id = q_.drv.add_indirect(out, 2, in, 1, g_.at<vring_packed_desc>(tgpa), tgpa);
  ASSERT_GE(id, 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, id);
  EXPECT_EQ(c_->n_out, 2u);
  EXPECT_EQ(c_->n_in, 1u);
  EXPECT_EQ(c_->out_len, 1512u);
  EXPECT_EQ(c_->in_segs()[0].iov_base, g_.host(in[0].gpa));
  q_.dev.push(c_->head, 64);
  q_.dev.publish();
  Used u;
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, id);
  EXPECT_EQ(u.len, 64u);
}

// Chains of 1 and 3 descriptors on a ring of 5: chains wrap the ring end, the wrap
// counters flip on both sides, and every chain comes back in order.
TEST_F(PackedQueueTest, ChainsWrapTheRingManyLaps) {
  ASSERT_TRUE(q_.start(g_, 5, false));
  Buf bufs[3] = {g_.buf(10), g_.buf(20), g_.buf(30)};
  for (int round = 0; round < 50; ++round) {
    const uint32_t n = round % 2 ? 3 : 1;
    int id = q_.drv.add(bufs, n, nullptr, 0);
    ASSERT_GE(id, 0) << round;
    q_.drv.publish();
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk) << round;
    EXPECT_EQ(c_->head, id);
    EXPECT_EQ(c_->n_out, n);
    EXPECT_EQ(c_->out_len, n == 1 ? 10u : 60u);
    q_.dev.push(c_->head, 0);
    q_.dev.publish();
    Used u;
    ASSERT_TRUE(q_.drv.reap(u)) << round;
    EXPECT_EQ(u.id, id);
    EXPECT_EQ(q_.drv.num_free(), 5);
  }
  EXPECT_FALSE(q_.dev.broken()) << q_.dev.broken_reason();
  EXPECT_EQ(q_.dev.counters().chains.get(), 50u);
}

TEST_F(PackedQueueTest, BurstIsPublishedAtOnceFirstFlagsLast) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf b = g_.buf(64);
  for (int i = 0; i < 4; ++i) ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    q_.dev.push(c_->head, 0);
  }
  // Nothing in the ring changed before publish().
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q_.drv.desc()[i].flags, kAvailF) << i;
  q_.dev.publish();
  Used u;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q_.drv.reap(u)) << i;
  EXPECT_FALSE(q_.drv.reap(u));
}

// VIRTIO_F_IN_ORDER (2.8.20): a burst of TX completions (nothing written) is one used
// descriptor at the burst's first position with the id of its last buffer; the other
// descriptors of the burst are left as the driver made them available.
TEST_F(PackedQueueTest, InOrderBurstOfCompletionsIsOneUsedDescriptor) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  q_.cfg.in_order = true;
  ASSERT_TRUE(q_.dev.start(g_.memory(), q_.cfg).is_ok());
  Buf b = g_.buf(64);
  Buf two[2] = {g_.buf(10), g_.buf(10)};
  int ids[3];
  ids[0] = q_.drv.add(&b, 1, nullptr, 0);
  ids[1] = q_.drv.add(two, 2, nullptr, 0);  // positions 1 and 2
  ids[2] = q_.drv.add(&b, 1, nullptr, 0);   // position 3
  q_.drv.publish();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    EXPECT_EQ(c_->head, ids[i]);
    q_.dev.push(c_->head, 0);
  }
  q_.dev.publish();
  const vring_packed_desc* d = q_.drv.desc();
  EXPECT_EQ(d[0].flags, kAvailF | kUsedF) << "used in the first lap";
  EXPECT_EQ(d[0].id, ids[2]) << "the id of the batch's last buffer";
  EXPECT_EQ(d[0].len, 0u);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(d[i].flags & (kAvailF | kUsedF), kAvailF) << i;
  EXPECT_EQ(q_.dev.mark().used_idx, 4 | kWrap) << "the device skipped the batch's 4 descriptors";

  // A burst with a written length (RX) is written element by element, as without
  // IN_ORDER; so is one after a rewind (its last pushed id may have been taken back).
  Buf in = g_.buf(2048);
  int rx[2];
  for (int& id : rx) id = q_.drv.add(nullptr, 0, &in, 1);  // positions 4 and 5
  q_.drv.publish();
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    q_.dev.push(c_->head, 100 + i);
  }
  q_.dev.publish();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(d[4 + i].flags, kAvailF | kUsedF | VRING_DESC_F_WRITE) << i;
    EXPECT_EQ(d[4 + i].id, rx[i]);
    EXPECT_EQ(d[4 + i].len, 100u + i);
  }
  int tx[2];
  for (int& id : tx) id = q_.drv.add(&b, 1, nullptr, 0);  // positions 6 and 7
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  q_.dev.push(c_->head, 0);
  const auto m = q_.dev.mark();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  q_.dev.push(c_->head, 0);
  q_.dev.rewind(m);  // the second one goes back to the ring
  q_.dev.publish();
  EXPECT_EQ(d[6].flags, kAvailF | kUsedF);
  EXPECT_EQ(d[6].id, tx[0]) << "not the rewound push's id " << tx[1];
  EXPECT_EQ(d[7].flags & (kAvailF | kUsedF), kAvailF) << "still the driver's";
  EXPECT_FALSE(q_.dev.broken()) << q_.dev.broken_reason();
}

TEST_F(PackedQueueTest, PopDirectTakesASingleDescriptorChain) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf in = g_.buf(2048);
  int id = q_.drv.add(nullptr, 0, &in, 1);
  Buf out[2] = {g_.buf(10), g_.buf(10)};
  q_.drv.add(out, 2, nullptr, 0);
  q_.drv.publish();
  PackedDeviceQueue::Direct d;
  ASSERT_TRUE(q_.dev.pop_direct(d));
  EXPECT_EQ(d.head, id);
  EXPECT_EQ(d.len, 2048u);
  EXPECT_TRUE(d.writable);
  EXPECT_EQ(d.host, g_.host(in.gpa));
  EXPECT_FALSE(q_.dev.pop_direct(d)) << "a chain of two is pop()'s";
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->n_out, 2u);
}

TEST_F(PackedQueueTest, RewindGivesBackPoppedAndPushedChains) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf in[3] = {g_.buf(100), g_.buf(100), g_.buf(100)};
  int ids[3];
  for (int i = 0; i < 3; ++i) ids[i] = q_.drv.add(nullptr, 0, &in[i], 1);
  q_.drv.publish();
  ASSERT_EQ(pop_push(100), ids[0]);
  const auto m = q_.dev.mark();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  q_.dev.push(c_->head, 100);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, ids[2]);
  EXPECT_EQ(q_.dev.mark_last_pop().last_avail, 2 | kWrap);
  q_.dev.rewind(m);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, ids[1]) << "the same chain again, its descriptor intact";
  EXPECT_EQ(c_->in_len, 100u);
  q_.dev.push(c_->head, 7);
  q_.dev.publish();
  Used u;
  ASSERT_TRUE(q_.drv.reap(u));
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, ids[1]);
  EXPECT_EQ(u.len, 7u);
  EXPECT_FALSE(q_.drv.reap(u));
}

TEST_F(PackedQueueTest, StopAndStartAtTheReportedBaseKeepsTheWrapCounter) {
  ASSERT_TRUE(q_.start(g_, 4, false));
  Buf b = g_.buf(64);
  // Six chains through a ring of four: the device is at position 2 of lap 2 (wrap 0).
  for (int i = 0; i < 6; ++i) {
    ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
    q_.drv.publish();
    ASSERT_GE(pop_push(0), 0);
    Used u;
    ASSERT_TRUE(q_.drv.reap(u));
  }
  const uint16_t base = q_.dev.last_avail_idx();
  EXPECT_EQ(base, 2) << "position 2, wrap counter 0 (GET_VRING_BASE)";
  q_.dev.stop();
  QueueConfig cfg = q_.cfg;
  cfg.avail_base = base;  // SET_VRING_BASE
  ASSERT_TRUE(q_.dev.start(g_.memory(), cfg).is_ok());
  for (int i = 0; i < 5; ++i) {
    int id = q_.drv.add(&b, 1, nullptr, 0);
    q_.drv.publish();
    ASSERT_EQ(pop_push(0), id) << i;
    Used u;
    ASSERT_TRUE(q_.drv.reap(u));
  }
  EXPECT_FALSE(q_.dev.broken());
}

TEST_F(PackedQueueTest, StartValidatesLayoutAndBase) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  QueueConfig cfg = q_.cfg;
  PackedDeviceQueue dq;
  cfg.avail_base = 8 | kWrap;
  EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << "position not below the size";
  cfg = q_.cfg;
  cfg.avail_addr += 2;
  EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << "driver area misaligned";
  cfg = q_.cfg;
  cfg.used_addr = 0x7f0000400000;  // just past the region
  EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << "device area outside memory";
  cfg = q_.cfg;
  cfg.avail_addr = 0x10;
  EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << "driver area outside memory";
  cfg = q_.cfg;
  cfg.desc_addr = 0x7f00003ffff0;
  EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << "ring crosses the region end";
  cfg = q_.cfg;
  cfg.size = 6;  // 2.8: need not be a power of 2
  EXPECT_TRUE(dq.start(g_.memory(), cfg).is_ok());
}

// The driver side's re-post path (vnet-traffic): chains reaped with reap_keep() go back
// with repost() as they were, lap after lap; a chain not kept cannot be re-posted.
TEST_F(PackedQueueTest, DriverRepostsKeptChainsAcrossLaps) {
  ASSERT_TRUE(q_.start(g_, 4, false));
  Buf b[4] = {g_.buf(60, 1), g_.buf(61, 2), g_.buf(62, 3), g_.buf(63, 4)};
  int ids[4];
  for (int i = 0; i < 4; ++i) ids[i] = q_.drv.add(&b[i], 1, nullptr, 0);
  q_.drv.publish();
  for (int lap = 0; lap < 5; ++lap) {
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk) << lap;
      EXPECT_EQ(c_->head, ids[i]);
      EXPECT_EQ(c_->out_len, 60u + i);
      q_.dev.push(c_->head, 0);
    }
    q_.dev.publish();
    EXPECT_TRUE(q_.drv.has_used());
    Used u;
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(q_.drv.reap_keep(u));
      EXPECT_EQ(u.id, ids[i]);
    }
    EXPECT_FALSE(q_.drv.has_used());
    EXPECT_EQ(q_.drv.num_kept(), 4);
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(q_.drv.repost(uint16_t(ids[i])));
    EXPECT_FALSE(q_.drv.repost(uint16_t(ids[0]))) << "not kept any more";
    q_.drv.publish();
  }
  EXPECT_EQ(q_.drv.bad_used(), 0u);
  EXPECT_FALSE(q_.dev.broken());
}

// ---- event suppression (2.8.10) --------------------------------------------------

TEST_F(PackedQueueTest, DriverEventFlagsDecideNotifications) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf b = g_.buf(64);
  auto round = [&] {
    q_.drv.add(&b, 1, nullptr, 0);
    q_.drv.publish();
    pop_push(0);
    Used u;
    q_.drv.reap(u);
    return q_.dev.should_notify();
  };
  q_.drv.enable_interrupts();
  EXPECT_TRUE(round());
  EXPECT_FALSE(q_.dev.should_notify()) << "nothing new published";
  q_.drv.disable_interrupts();
  EXPECT_FALSE(round());
  q_.drv.driver_event()->flags = 3;  // reserved: notify rather than lose one
  EXPECT_TRUE(round());
}

TEST_F(PackedQueueTest, DriverEventDescWithEventIdx) {
  ASSERT_TRUE(q_.start(g_, 8, true));
  Buf b = g_.buf(64);
  for (int i = 0; i < 3; ++i) q_.drv.add(&b, 1, nullptr, 0);
  q_.drv.publish();
  pop_push(0);
  EXPECT_TRUE(q_.dev.should_notify()) << "first decision";
  // Ask for a notification when the used descriptor at position 2 (this lap) is written.
  q_.drv.driver_event()->off_wrap = 2 | kWrap;
  q_.drv.driver_event()->flags = VRING_PACKED_EVENT_FLAG_DESC;
  pop_push(0);  // used position 1
  EXPECT_FALSE(q_.dev.should_notify());
  pop_push(0);  // used position 2
  EXPECT_TRUE(q_.dev.should_notify());
  // An offset anywhere (even past the ring) is only compared.
  q_.drv.driver_event()->off_wrap = 0x7fff;
  q_.drv.add(&b, 1, nullptr, 0);
  q_.drv.publish();
  pop_push(0);
  (void)q_.dev.should_notify();
  EXPECT_FALSE(q_.dev.broken());
}

TEST_F(PackedQueueTest, DescEventPassedByMoreThanALapBetweenDecisionsNotifies) {
  // vnetd decides once per worker round, after every publish of the round: more than a
  // ring of descriptors can be published between two decisions. The driver's event
  // lies in that stretch; relative positions alone would place it a lap away and the
  // driver, asleep until the event, would never be woken.
  ASSERT_TRUE(q_.start(g_, 8, true));
  Buf b = g_.buf(64);
  Used u;
  q_.drv.add(&b, 1, nullptr, 0);
  q_.drv.publish();
  ASSERT_EQ(pop_push(0), 0);
  EXPECT_TRUE(q_.dev.should_notify()) << "first decision (used position 1 published)";
  ASSERT_TRUE(q_.drv.reap(u));
  for (int i = 0; i < 7; ++i) q_.drv.add(&b, 1, nullptr, 0);  // positions 1..7
  q_.drv.publish();
  for (int i = 0; i < 6; ++i) ASSERT_GE(pop_push(0), 0);  // used 1..6, no decision
  int reaped = 0;
  while (q_.drv.reap(u)) ++reaped;
  ASSERT_EQ(reaped, 6);
  // Wake me when the used descriptor at position 7 of this lap is written.
  q_.drv.driver_event()->off_wrap = 7 | kWrap;
  q_.drv.driver_event()->flags = VRING_PACKED_EVENT_FLAG_DESC;
  for (int i = 0; i < 6; ++i) q_.drv.add(&b, 1, nullptr, 0);  // positions 0..5, next lap
  q_.drv.publish();
  for (int i = 0; i < 7; ++i) ASSERT_GE(pop_push(0), 0);  // used 7, then 0..5
  EXPECT_TRUE(q_.dev.should_notify()) << "13 descriptors since the last decision, event at 7";
  EXPECT_FALSE(q_.dev.should_notify()) << "nothing new published";
  EXPECT_FALSE(q_.dev.broken());
}

TEST_F(PackedQueueTest, DeviceEventAreaAsksForKicks) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  q_.dev.disable_notifications();
  EXPECT_EQ(q_.drv.device_event()->flags, VRING_PACKED_EVENT_FLAG_DISABLE);
  Buf b = g_.buf(64);
  q_.drv.add(&b, 1, nullptr, 0);
  q_.drv.publish();
  EXPECT_FALSE(q_.drv.should_kick());
  EXPECT_TRUE(q_.dev.enable_notifications()) << "a chain is available: poll again";
  EXPECT_EQ(q_.drv.device_event()->flags, VRING_PACKED_EVENT_FLAG_ENABLE);
  pop_push(0);
  EXPECT_FALSE(q_.dev.enable_notifications());
  q_.drv.add(&b, 1, nullptr, 0);
  q_.drv.publish();
  EXPECT_TRUE(q_.drv.should_kick());
}

TEST_F(PackedQueueTest, DeviceEventDescWithEventIdx) {
  ASSERT_TRUE(q_.start(g_, 4, true));
  Buf b = g_.buf(64);
  for (int i = 0; i < 3; ++i) {
    q_.drv.add(&b, 1, nullptr, 0);
    q_.drv.publish();
    pop_push(0);
    Used u;
    q_.drv.reap(u);
  }
  EXPECT_FALSE(q_.dev.enable_notifications());
  EXPECT_EQ(q_.drv.device_event()->flags, VRING_PACKED_EVENT_FLAG_DESC);
  EXPECT_EQ(q_.drv.device_event()->off_wrap, 3 | kWrap);
  (void)q_.drv.should_kick();
  q_.drv.add(&b, 1, nullptr, 0);  // position 3: the one asked for
  q_.drv.publish();
  EXPECT_TRUE(q_.drv.should_kick());
  pop_push(0);  // the device wraps: position 0, wrap counter 0
  EXPECT_FALSE(q_.dev.enable_notifications());
  EXPECT_EQ(q_.drv.device_event()->off_wrap, 0);
}

}  // namespace
}  // namespace vnet::virtio
