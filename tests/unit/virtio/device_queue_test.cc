// Unit tests for the device side of a split virtqueue driven by a DriverQueue in fake
// guest memory (virtio 1.2 section 2.7): valid direct and indirect chains, round trips
// add -> pop -> push -> publish -> reap, descriptors crossing regions, start() layout
// checks, notification suppression with and without EVENT_IDX, mark/rewind, and
// stop/restart at avail_base across the wrap of the 16-bit ring indices.
#include "virtio/device_queue.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "fake_guest.h"
#include "virtio/driver_queue.h"

namespace vnet::virtio {
namespace {

using vnet::testing::avail_event_of;
using vnet::testing::FakeGuest;
using vnet::testing::QueuePair;
using vnet::testing::used_event_of;

// Region 0: rings and buffers. Region 1: adjacent to region 0 in guest physical space
// and in front-end virtual space, but not on the host. Region 2: after a hole.
constexpr uint64_t kR0Gpa = 0x0, kR0Size = 0x400000, kR0Uva = 0x7f0000000000;
constexpr uint64_t kR1Gpa = kR0Gpa + kR0Size, kR1Size = 0x10000, kR1Uva = kR0Uva + kR0Size;
constexpr uint64_t kR2Gpa = 0x1000000, kR2Size = 0x10000, kR2Uva = 0x7f0010000000;

class DeviceQueueTest : public ::testing::Test {
 protected:
  DeviceQueueTest() {
    g_.add_region(kR0Gpa, kR0Size, kR0Uva);
    g_.add_region(kR1Gpa, kR1Size, kR1Uva);
    g_.add_region(kR2Gpa, kR2Size, kR2Uva);
  }

  // Adds `n` one-descriptor readable chains, publishes, pops them all, pushes each with
  // `len`, publishes once and reaps them, checking ids and lengths.
  void round_trip(uint32_t n, uint32_t len = 0) {
    std::vector<int> heads;
    for (uint32_t i = 0; i < n; ++i) {
      Buf b = g_.buf(64);
      int h = q_.drv.add(&b, 1, nullptr, 0);
      ASSERT_GE(h, 0);
      heads.push_back(h);
    }
    q_.drv.publish();
    for (uint32_t i = 0; i < n; ++i) {
      ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
      ASSERT_EQ(c_->head, heads[i]);
      q_.dev.push(c_->head, len);
    }
    q_.dev.publish();
    for (uint32_t i = 0; i < n; ++i) {
      Used u;
      ASSERT_TRUE(q_.drv.reap(u));
      ASSERT_EQ(u.id, heads[i]);
      ASSERT_EQ(u.len, len);
    }
    Used u;
    ASSERT_FALSE(q_.drv.reap(u));
  }

  // Re-uses buffers instead of allocating: for long runs.
  void quick_round_trip(uint64_t buf_gpa) {
    Buf b{buf_gpa, 64};
    int h = q_.drv.add(&b, 1, nullptr, 0);
    ASSERT_GE(h, 0);
    q_.drv.publish();
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    ASSERT_EQ(c_->head, h);
    q_.dev.push(c_->head, 7);
    q_.dev.publish();
    Used u;
    ASSERT_TRUE(q_.drv.reap(u));
    ASSERT_EQ(u.id, h);
    ASSERT_EQ(u.len, 7u);
  }

  FakeGuest g_;
  QueuePair q_;
  std::unique_ptr<Chain> c_ = std::make_unique<Chain>();
};

// ---- valid chains ------------------------------------------------------------------

TEST_F(DeviceQueueTest, EmptyQueuePopsNothing) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  EXPECT_TRUE(q_.dev.started());
  EXPECT_FALSE(q_.dev.broken());
  EXPECT_EQ(q_.dev.size(), 8);
  EXPECT_EQ(q_.dev.available(), 0);
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
}

TEST_F(DeviceQueueTest, OneReadableDescriptor) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf b = g_.buf(100, 0x5a);
  int h = q_.drv.add(&b, 1, nullptr, 0);
  ASSERT_GE(h, 0);
  EXPECT_EQ(q_.dev.available(), 0) << "visible before publish";
  q_.drv.publish();
  EXPECT_EQ(q_.dev.available(), 1);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h);
  EXPECT_EQ(c_->n_out, 1u);
  EXPECT_EQ(c_->n_in, 0u);
  EXPECT_EQ(c_->out_len, 100u);
  EXPECT_EQ(c_->in_len, 0u);
  EXPECT_EQ(c_->segs[0].iov_base, g_.host(b.gpa));
  EXPECT_EQ(c_->segs[0].iov_len, 100u);
  EXPECT_EQ(q_.dev.available(), 0);
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
  EXPECT_EQ(q_.dev.counters().chains.get(), 1u);
  EXPECT_EQ(q_.dev.counters().bad_chains.get(), 0u);
}

TEST_F(DeviceQueueTest, ReadableThenWritableDescriptors) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf out[2] = {g_.buf(12), g_.buf(300)};
  Buf in[3] = {g_.buf(10), g_.buf(20), g_.buf(4000)};
  int h = q_.drv.add(out, 2, in, 3);
  ASSERT_GE(h, 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h);
  ASSERT_EQ(c_->n_out, 2u);
  ASSERT_EQ(c_->n_in, 3u);
  EXPECT_EQ(c_->out_len, 312u);
  EXPECT_EQ(c_->in_len, 4030u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(c_->segs[i].iov_base, g_.host(out[i].gpa));
    EXPECT_EQ(c_->segs[i].iov_len, out[i].len);
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(c_->in_segs()[i].iov_base, g_.host(in[i].gpa));
    EXPECT_EQ(c_->in_segs()[i].iov_len, in[i].len);
  }
}

TEST_F(DeviceQueueTest, WritableOnlyChain) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf in = g_.buf(2048);
  ASSERT_GE(q_.drv.add(nullptr, 0, &in, 1), 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->n_out, 0u);
  EXPECT_EQ(c_->n_in, 1u);
  EXPECT_EQ(c_->in_len, 2048u);
  EXPECT_EQ(c_->in_segs()[0].iov_base, g_.host(in.gpa));
}

TEST_F(DeviceQueueTest, IndirectChain) {
  ASSERT_TRUE(q_.start(g_, 8, false, /*indirect=*/true));
  Buf out[2] = {g_.buf(12), g_.buf(1500)};
  Buf in[1] = {g_.buf(64)};
  uint64_t tgpa = g_.alloc(3 * sizeof(vring_desc));
  int h = q_.drv.add_indirect(out, 2, in, 1, g_.at<vring_desc>(tgpa), tgpa);
  ASSERT_GE(h, 0);
  EXPECT_EQ(q_.drv.num_free(), 7) << "an indirect chain takes one ring descriptor";
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h);
  ASSERT_EQ(c_->n_out, 2u);
  ASSERT_EQ(c_->n_in, 1u);
  EXPECT_EQ(c_->out_len, 1512u);
  EXPECT_EQ(c_->in_len, 64u);
  EXPECT_EQ(c_->segs[1].iov_base, g_.host(out[1].gpa));
  EXPECT_EQ(c_->in_segs()[0].iov_base, g_.host(in[0].gpa));
  q_.dev.push(c_->head, 64);
  q_.dev.publish();
  Used u;
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, h);
  EXPECT_EQ(u.len, 64u);
  EXPECT_EQ(q_.drv.num_free(), 8);
}

// 2.7.5.3.2: "The device MUST ignore the write-only flag in the descriptor that refers
// to an indirect table."
TEST_F(DeviceQueueTest, IndirectHeadWithWriteFlagIsAccepted) {
  ASSERT_TRUE(q_.start(g_, 8, false, true));
  Buf out = g_.buf(100);
  uint64_t tgpa = g_.alloc(sizeof(vring_desc));
  int h = q_.drv.add_indirect(&out, 1, nullptr, 0, g_.at<vring_desc>(tgpa), tgpa);
  ASSERT_GE(h, 0);
  q_.drv.desc()[h].flags |= VRING_DESC_F_WRITE;
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->n_out, 1u);
  EXPECT_EQ(c_->out_len, 100u);
  EXPECT_EQ(q_.dev.counters().bad_chains.get(), 0u);
}

// 2.7.5.3.2: "The device MUST handle the case of zero or more normal chained descriptors
// followed by a single descriptor with VIRTQ_DESC_F_INDIRECT."
TEST_F(DeviceQueueTest, DirectDescriptorsFollowedByIndirect) {
  ASSERT_TRUE(q_.start(g_, 8, false, true));
  Buf out[2] = {g_.buf(12), g_.buf(1)};
  int h = q_.drv.add(out, 2, nullptr, 0);
  ASSERT_GE(h, 0);
  uint16_t second = q_.drv.desc()[h].next;
  Buf t_out = g_.buf(500), t_in = g_.buf(700);
  uint64_t tgpa = g_.alloc(2 * sizeof(vring_desc));
  vring_desc* t = g_.at<vring_desc>(tgpa);
  t[0] = vring_desc{t_out.gpa, t_out.len, VRING_DESC_F_NEXT, 1};
  t[1] = vring_desc{t_in.gpa, t_in.len, VRING_DESC_F_WRITE, 0};
  q_.drv.desc()[second] = vring_desc{tgpa, 2 * sizeof(vring_desc), VRING_DESC_F_INDIRECT, 0};
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h);
  ASSERT_EQ(c_->n_out, 2u);
  ASSERT_EQ(c_->n_in, 1u);
  EXPECT_EQ(c_->out_len, 512u);
  EXPECT_EQ(c_->in_len, 700u);
  EXPECT_EQ(c_->segs[0].iov_base, g_.host(out[0].gpa));
  EXPECT_EQ(c_->segs[1].iov_base, g_.host(t_out.gpa));
  EXPECT_EQ(c_->in_segs()[0].iov_base, g_.host(t_in.gpa));
}

TEST_F(DeviceQueueTest, DescriptorCrossingRegionBoundaryGivesTwoSegs) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  // The last 0x100 bytes of region 0 and the first 0x80 of region 1.
  Buf b{kR1Gpa - 0x100, 0x180};
  Buf in{kR1Gpa + 0x1000, 16};
  ASSERT_GE(q_.drv.add(&b, 1, &in, 1), 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  ASSERT_EQ(c_->n_out, 2u);
  EXPECT_EQ(c_->out_len, 0x180u);
  EXPECT_EQ(c_->segs[0].iov_base, g_.host(kR1Gpa - 0x100));
  EXPECT_EQ(c_->segs[0].iov_len, 0x100u);
  EXPECT_EQ(c_->segs[1].iov_base, g_.host(kR1Gpa));
  EXPECT_EQ(c_->segs[1].iov_len, 0x80u);
  ASSERT_EQ(c_->n_in, 1u);
  EXPECT_EQ(c_->in_segs()[0].iov_base, g_.host(kR1Gpa + 0x1000));
}

// A chain of exactly Chain::kMaxSegs pieces fits.
TEST_F(DeviceQueueTest, ChainOfMaxSegsDescriptors) {
  ASSERT_TRUE(q_.start(g_, 512, false));
  std::vector<Buf> bufs;
  for (uint32_t i = 0; i < Chain::kMaxSegs; ++i) bufs.push_back(g_.buf(4));
  int h = q_.drv.add(bufs.data(), uint32_t(bufs.size()), nullptr, 0);
  ASSERT_GE(h, 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->n_out, Chain::kMaxSegs);
  EXPECT_EQ(c_->out_len, 4u * Chain::kMaxSegs);
  EXPECT_EQ(c_->segs[Chain::kMaxSegs - 1].iov_base, g_.host(bufs.back().gpa));
}

// A zero-length descriptor is not forbidden by the spec (2.7.5 only bounds the total);
// Linux vhost, DPDK and rust-vmm accept it. It adds no bytes.
TEST_F(DeviceQueueTest, ZeroLengthDescriptorIsAcceptedAndAddsNothing) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf out[3] = {g_.buf(64), g_.buf(16), g_.buf(32)};
  out[1].len = 0;
  Buf in = g_.buf(128);
  ASSERT_GE(q_.drv.add(out, 3, &in, 1), 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(q_.dev.counters().bad_chains.get(), 0u);
  EXPECT_EQ(c_->out_len, 96u);
  EXPECT_EQ(c_->in_len, 128u);
  uint64_t out_sum = 0, in_sum = 0;
  for (uint32_t i = 0; i < c_->n_out; ++i) out_sum += c_->segs[i].iov_len;
  for (uint32_t i = 0; i < c_->n_in; ++i) in_sum += c_->in_segs()[i].iov_len;
  EXPECT_EQ(out_sum, 96u);
  EXPECT_EQ(in_sum, 128u);
}

TEST_F(DeviceQueueTest, RoundTripIdsAndLengths) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf in[3] = {g_.buf(100), g_.buf(200), g_.buf(300)};
  int h0 = q_.drv.add(nullptr, 0, &in[0], 1);
  int h1 = q_.drv.add(nullptr, 0, &in[1], 1);
  int h2 = q_.drv.add(nullptr, 0, &in[2], 1);
  ASSERT_GE(h0, 0);
  ASSERT_GE(h1, 0);
  ASSERT_GE(h2, 0);
  q_.drv.publish();
  EXPECT_EQ(q_.dev.available(), 3);
  Chain c0, c1, c2;
  ASSERT_EQ(q_.dev.pop(c0), PopStatus::kOk);
  ASSERT_EQ(q_.dev.pop(c1), PopStatus::kOk);
  ASSERT_EQ(q_.dev.pop(c2), PopStatus::kOk);
  EXPECT_EQ(c0.head, h0);
  EXPECT_EQ(c1.head, h1);
  EXPECT_EQ(c2.head, h2);
  // Completed out of order: the used ring keeps the push order.
  q_.dev.push(c2.head, 300);
  q_.dev.push(c0.head, 17);
  Used u;
  EXPECT_FALSE(q_.drv.reap(u)) << "used visible before publish";
  EXPECT_EQ(q_.drv.used()->idx, 0);
  q_.dev.publish();
  EXPECT_EQ(q_.drv.used()->idx, 2);
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, h2);
  EXPECT_EQ(u.len, 300u);
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, h0);
  EXPECT_EQ(u.len, 17u);
  EXPECT_FALSE(q_.drv.reap(u));
  q_.dev.push(c1.head, 1);
  q_.dev.publish();
  ASSERT_TRUE(q_.drv.reap(u));
  EXPECT_EQ(u.id, h1);
  EXPECT_EQ(u.len, 1u);
  EXPECT_EQ(q_.drv.num_free(), 8);
  EXPECT_EQ(q_.drv.bad_used(), 0u);
}

TEST_F(DeviceQueueTest, FullRingAndManyRoundTrips) {
  ASSERT_TRUE(q_.start(g_, 4, false));
  // Exactly `size` chains outstanding is legal.
  round_trip(4, 9);
  for (int i = 0; i < 10; ++i) round_trip(3, uint32_t(i));
  EXPECT_FALSE(q_.dev.broken());
  EXPECT_EQ(q_.dev.last_avail_idx(), 34);
}

// A driver that reuses its descriptors in order gets, in each used slot, the element
// it got a lap ago; push() does not store such an element again, so its line stays
// clean in the driver's cache. Checked with a page of the used ring made read-only in
// a child process: the second lap must not write it, a changed length must.
TEST_F(DeviceQueueTest, PushDoesNotRewriteAnUnchangedUsedElement) {
  constexpr uint16_t kSize = 1024;
  ASSERT_TRUE(q_.start(g_, kSize, false));
  round_trip(kSize, 76);
  std::vector<Buf> bufs;
  for (uint16_t i = 0; i < kSize; ++i) {
    bufs.push_back(g_.buf(64));
    ASSERT_GE(q_.drv.add(&bufs.back(), 1, nullptr, 0), 0);
  }
  q_.drv.publish();
  vring_used* used = q_.drv.used();
  for (uint16_t i = 0; i < kSize; ++i)
    ASSERT_EQ(q_.drv.avail()->ring[i], used->ring[i].id) << "test bug: heads not in order";
  // The page after the one holding used->idx: whole entries only, flags/idx writable.
  uint8_t* first = reinterpret_cast<uint8_t*>(&used->ring[0]);
  uint8_t* page =
      reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(first) + 4095) & ~uintptr_t(4095));
  ASSERT_LE(page + 4096, reinterpret_cast<uint8_t*>(&used->ring[kSize]));
  auto second_lap = [&](uint32_t len) {
    vnet::testing::make_pages_read_only(page, 4096);
    for (uint16_t i = 0; i < kSize; ++i) {
      if (q_.dev.pop(*c_) != PopStatus::kOk) std::_Exit(2);
      q_.dev.push(c_->head, len);
    }
    q_.dev.publish();
    std::_Exit(used->idx == uint16_t(2 * kSize) ? 0 : 3);
  };
  EXPECT_EXIT(second_lap(76), ::testing::ExitedWithCode(0), "");
  EXPECT_EXIT(second_lap(77), vnet::testing::died, "") << "the page was not protected";
}

// ---- start() -----------------------------------------------------------------------

TEST_F(DeviceQueueTest, StartRejectsBadSizes) {
  q_.cfg = g_.place_queue(q_.drv, 8, false);
  for (uint16_t size : {0, 3, 6, 32769, 65535}) {
    QueueConfig cfg = q_.cfg;
    cfg.size = size;
    DeviceQueue dq;
    EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << "size " << size;
    EXPECT_FALSE(dq.started());
  }
}

TEST_F(DeviceQueueTest, StartAcceptsSizeOneAndMaximum) {
  DriverQueue d1;
  QueueConfig c1 = g_.place_queue(d1, 1, true);
  DeviceQueue q1;
  EXPECT_TRUE(q1.start(g_.memory(), c1).is_ok());
  DriverQueue dmax;
  QueueConfig cmax = g_.place_queue(dmax, 32768, true);
  DeviceQueue qmax;
  EXPECT_TRUE(qmax.start(g_.memory(), cmax).is_ok());
  EXPECT_EQ(qmax.size(), 32768);
}

TEST_F(DeviceQueueTest, StartRejectsMisalignedRings) {
  q_.cfg = g_.place_queue(q_.drv, 8, false);
  auto bad = [&](QueueConfig cfg, const char* what) {
    DeviceQueue dq;
    EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << what;
  };
  QueueConfig c = q_.cfg;
  c.desc_addr += 8;
  bad(c, "desc aligned 8");
  c = q_.cfg;
  c.avail_addr += 1;
  bad(c, "avail aligned 1");
  c = q_.cfg;
  c.used_addr += 2;
  bad(c, "used aligned 2");
  // The config as laid out is fine.
  DeviceQueue dq;
  EXPECT_TRUE(dq.start(g_.memory(), q_.cfg).is_ok());
}

TEST_F(DeviceQueueTest, StartRejectsRingsOutsideMemory) {
  q_.cfg = g_.place_queue(q_.drv, 8, false);
  auto bad = [&](QueueConfig cfg, const char* what) {
    DeviceQueue dq;
    EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << what;
  };
  QueueConfig c = q_.cfg;
  c.desc_addr = 0x1000;  // a guest physical address, not a front-end virtual one
  bad(c, "desc not a uva");
  c = q_.cfg;
  c.avail_addr = kR2Uva + kR2Size;  // just past region 2
  bad(c, "avail past region");
  c = q_.cfg;
  c.used_addr = 0xfffffffffffffff0;
  bad(c, "used at the top of the address space");
}

TEST_F(DeviceQueueTest, StartRejectsRingRunningPastRegionEnd) {
  q_.cfg = g_.place_queue(q_.drv, 8, false);
  auto bad = [&](QueueConfig cfg, const char* what) {
    DeviceQueue dq;
    EXPECT_FALSE(dq.start(g_.memory(), cfg).is_ok()) << what;
  };
  const uint64_t r2_end = kR2Uva + kR2Size;
  QueueConfig c = q_.cfg;
  c.desc_addr = r2_end - 16 * 8 + 16;  // last descriptor past the end
  bad(c, "desc table past the end");
  c = q_.cfg;
  c.avail_addr = r2_end - (4 + 2 * 8) + 2;
  bad(c, "avail ring past the end");
  c = q_.cfg;
  c.used_addr = r2_end - (4 + 8 * 8) + 4;
  bad(c, "used ring past the end");
  // Regions 0 and 1 are adjacent in front-end virtual space but not on the host: a ring
  // straddling them is not "wholly inside one region".
  c = q_.cfg;
  c.desc_addr = kR1Uva - 64;
  bad(c, "desc table across two regions");
  c = q_.cfg;
  c.used_addr = kR1Uva - 32;
  bad(c, "used ring across two regions");
}

// With EVENT_IDX the avail ring ends with used_event and the used ring with avail_event
// (2.7.6, 2.7.8): both must be inside the region too.
TEST_F(DeviceQueueTest, StartWithEventIdxChecksTheEventFields) {
  q_.cfg = g_.place_queue(q_.drv, 8, true);
  const uint64_t r2_end = kR2Uva + kR2Size;
  QueueConfig c = q_.cfg;
  c.avail_addr = r2_end - (4 + 2 * 8);  // flags, idx, ring fit; used_event does not
  DeviceQueue dq1;
  EXPECT_FALSE(dq1.start(g_.memory(), c).is_ok()) << "used_event outside memory";
  c = q_.cfg;
  c.used_addr = r2_end - (4 + 8 * 8);  // flags, idx, ring fit; avail_event does not
  DeviceQueue dq2;
  EXPECT_FALSE(dq2.start(g_.memory(), c).is_ok()) << "avail_event outside memory";
  // Exactly fitting with the event fields is fine.
  c = q_.cfg;
  c.avail_addr = r2_end - (6 + 2 * 8);
  c.used_addr = r2_end - 0x1000;
  DeviceQueue dq3;
  EXPECT_TRUE(dq3.start(g_.memory(), c).is_ok());
}

TEST_F(DeviceQueueTest, StoppedQueueHasNothingAvailable) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf b = g_.buf(64);
  ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  q_.dev.stop();
  EXPECT_FALSE(q_.dev.started());
  EXPECT_EQ(q_.dev.available(), 0);
  EXPECT_NE(q_.dev.pop(*c_), PopStatus::kOk);
}

// prefetch_head() is a hint: on a queue never started or stopped it reads nothing (its
// ring pointers are null), and on a started one it changes no state.
TEST_F(DeviceQueueTest, PrefetchHeadChangesNothing) {
  DeviceQueue never_started;
  never_started.prefetch_head();
  EXPECT_EQ(never_started.available(), 0);
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf b = g_.buf(64);
  ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  q_.dev.prefetch_head();
  EXPECT_EQ(q_.dev.last_avail_idx(), 0);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  q_.dev.prefetch_head();  // at an entry not made available yet
  EXPECT_EQ(q_.dev.available(), 0);
  q_.dev.stop();
  q_.dev.prefetch_head();
  EXPECT_EQ(q_.dev.last_avail_idx(), 1);
}

// ---- notification suppression ------------------------------------------------------

TEST_F(DeviceQueueTest, ShouldNotifyFollowsUsedEvent) {
  ASSERT_TRUE(q_.start(g_, 8, true));
  uint16_t* used_event = used_event_of(q_.drv.avail(), 8);
  *used_event = 0;
  round_trip(1);  // used idx 1: crosses used_event 0
  EXPECT_TRUE(q_.dev.should_notify());
  EXPECT_FALSE(q_.dev.should_notify()) << "nothing published since";
  *used_event = 5;
  for (uint16_t idx = 2; idx <= 5; ++idx) {
    round_trip(1);
    EXPECT_FALSE(q_.dev.should_notify()) << "used idx " << idx << ", used_event 5";
  }
  round_trip(1);  // idx 6: the entry at index 5 was written
  EXPECT_TRUE(q_.dev.should_notify());
  // A burst published once that jumps over used_event still notifies once.
  *used_event = 7;
  round_trip(3);  // idx 9
  EXPECT_TRUE(q_.dev.should_notify());
  EXPECT_FALSE(q_.dev.should_notify());
  *used_event = 20;
  round_trip(2);  // idx 11
  EXPECT_FALSE(q_.dev.should_notify());
}

// Elements pushed but not published are invisible to the driver: they do not count
// towards a notification until publish() (TX holds a burst back while its external
// packets are delivered).
TEST_F(DeviceQueueTest, ShouldNotifyCountsOnlyPublishedElements) {
  for (bool event_idx : {false, true}) {
    QueuePair q;
    ASSERT_TRUE(q.start(g_, 8, event_idx));
    uint16_t* used_event = used_event_of(q.drv.avail(), 8);
    Buf b{0x10000, 64};
    auto pop_and_push = [&] {
      ASSERT_GE(q.drv.add(&b, 1, nullptr, 0), 0);
      q.drv.publish();
      ASSERT_EQ(q.dev.pop(*c_), PopStatus::kOk);
      q.dev.push(c_->head, 0);
    };
    if (event_idx) *used_event = 0;
    pop_and_push();
    q.dev.publish();
    EXPECT_TRUE(q.dev.should_notify()) << event_idx;
    pop_and_push();
    if (event_idx) *used_event = 1;  // wants to hear of used entry 1
    EXPECT_FALSE(q.dev.should_notify()) << event_idx << ": pushed, not published";
    q.dev.publish();
    EXPECT_TRUE(q.dev.should_notify()) << event_idx;
  }
}

// 2.7.7.2: with EVENT_IDX "the device MUST ignore the lower bit of flags".
TEST_F(DeviceQueueTest, EventIdxIgnoresNoInterruptFlag) {
  ASSERT_TRUE(q_.start(g_, 8, true));
  q_.drv.avail()->flags = VRING_AVAIL_F_NO_INTERRUPT;
  *used_event_of(q_.drv.avail(), 8) = 0;
  round_trip(1);
  EXPECT_TRUE(q_.dev.should_notify());
  *used_event_of(q_.drv.avail(), 8) = 1;
  round_trip(1);
  EXPECT_TRUE(q_.dev.should_notify());
}

TEST_F(DeviceQueueTest, ShouldNotifyWithoutEventIdxFollowsFlags) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  q_.drv.avail()->flags = VRING_AVAIL_F_NO_INTERRUPT;
  round_trip(1);
  EXPECT_FALSE(q_.dev.should_notify());
  q_.drv.avail()->flags = 0;
  round_trip(1);
  EXPECT_TRUE(q_.dev.should_notify());
  // The same through the driver's own API.
  q_.drv.disable_interrupts();
  round_trip(2);
  EXPECT_FALSE(q_.dev.should_notify());
  q_.drv.enable_interrupts();
  round_trip(1);
  EXPECT_TRUE(q_.dev.should_notify());
}

TEST_F(DeviceQueueTest, DriverInterruptApiWithEventIdx) {
  ASSERT_TRUE(q_.start(g_, 8, true));
  round_trip(1);
  (void)q_.dev.should_notify();
  q_.drv.enable_interrupts();  // wants to hear about the next used entry
  round_trip(1);
  EXPECT_TRUE(q_.dev.should_notify());
}

TEST_F(DeviceQueueTest, EnableNotificationsWritesAvailEvent) {
  ASSERT_TRUE(q_.start(g_, 8, true));
  round_trip(3);
  q_.dev.disable_notifications();
  // 2.7.10: with EVENT_IDX "the device MUST set flags to 0".
  EXPECT_EQ(q_.drv.used()->flags, 0);
  EXPECT_FALSE(q_.dev.enable_notifications()) << "nothing new was available";
  EXPECT_EQ(*avail_event_of(q_.drv.used(), 8), 3);
  EXPECT_EQ(q_.drv.used()->flags, 0);
  Buf b = g_.buf(64);
  ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  EXPECT_TRUE(q_.drv.should_kick()) << "avail idx reached avail_event + 1";
  EXPECT_TRUE(q_.dev.enable_notifications()) << "a chain became available meanwhile";
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_FALSE(q_.dev.enable_notifications());
  EXPECT_EQ(*avail_event_of(q_.drv.used(), 8), 4);
}

TEST_F(DeviceQueueTest, NotificationFlagsWithoutEventIdx) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf b = g_.buf(64);
  q_.dev.disable_notifications();
  EXPECT_TRUE(q_.drv.used()->flags & VRING_USED_F_NO_NOTIFY);
  ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  EXPECT_FALSE(q_.drv.should_kick());
  EXPECT_TRUE(q_.dev.enable_notifications()) << "a chain is pending";
  EXPECT_FALSE(q_.drv.used()->flags & VRING_USED_F_NO_NOTIFY);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_FALSE(q_.dev.enable_notifications());
  ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  EXPECT_TRUE(q_.drv.should_kick());
}

// ---- mark / rewind -----------------------------------------------------------------

TEST_F(DeviceQueueTest, RewindGivesBackPoppedChainsAndForgetsPushes) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  int h[3];
  for (int& x : h) {
    Buf b = g_.buf(32);
    x = q_.drv.add(nullptr, 0, &b, 1);
    ASSERT_GE(x, 0);
  }
  q_.drv.publish();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h[0]);
  q_.dev.push(c_->head, 10);
  DeviceQueue::Mark m = q_.dev.mark();
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  q_.dev.push(c_->head, 20);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(q_.dev.available(), 0);
  q_.dev.rewind(m);
  EXPECT_EQ(q_.dev.available(), 2);
  EXPECT_EQ(q_.dev.last_avail_idx(), 1);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h[1]);
  q_.dev.push(c_->head, 21);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h[2]);
  q_.dev.push(c_->head, 31);
  q_.dev.publish();
  EXPECT_EQ(q_.drv.used()->idx, 3);
  const uint32_t want_len[3] = {10, 21, 31};
  for (int i = 0; i < 3; ++i) {
    Used u;
    ASSERT_TRUE(q_.drv.reap(u));
    EXPECT_EQ(u.id, h[i]);
    EXPECT_EQ(u.len, want_len[i]);
  }
}

// ---- pop_direct: the look-ahead's single-descriptor chains ---------------------------

TEST_F(DeviceQueueTest, PopDirectTakesOnlyWhatTheLookAheadFoundSimple) {
  ASSERT_TRUE(q_.start(g_, 16, false));
  Buf r[3] = {g_.buf(60), g_.buf(70), g_.buf(80)};
  int h[6];
  for (int i = 0; i < 3; ++i) h[i] = q_.drv.add(&r[i], 1, nullptr, 0);
  Buf out = g_.buf(40), in = g_.buf(50);
  h[3] = q_.drv.add(&out, 1, &in, 1);  // two descriptors
  Buf w = g_.buf(90);
  h[4] = q_.drv.add(nullptr, 0, &w, 1);  // one writable descriptor
  Buf across{kR1Gpa - 0x100, 0x180};     // one descriptor, two regions
  h[5] = q_.drv.add(&across, 1, nullptr, 0);
  for (int x : h) ASSERT_GE(x, 0);
  DeviceQueue::Direct d{};
  EXPECT_FALSE(q_.dev.pop_direct(d)) << "nothing read yet";
  q_.drv.publish();
  EXPECT_FALSE(q_.dev.pop_direct(d)) << "the look-ahead starts at available()";
  ASSERT_EQ(q_.dev.available(), 6);
  auto expect_direct = [&](int head, const Buf& b, bool writable) {
    ASSERT_TRUE(q_.dev.pop_direct(d)) << head;
    EXPECT_EQ(d.head, head);
    EXPECT_EQ(d.host, g_.host(b.gpa));
    EXPECT_EQ(d.len, b.len);
    EXPECT_EQ(d.writable, writable);
  };
  for (int i = 0; i < 3; ++i) expect_direct(h[i], r[i], false);
  EXPECT_FALSE(q_.dev.pop_direct(d));
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h[3]);
  EXPECT_EQ(c_->n_in, 1u);
  expect_direct(h[4], w, true);
  EXPECT_FALSE(q_.dev.pop_direct(d));
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h[5]);
  EXPECT_EQ(c_->n_out, 2u);
  EXPECT_FALSE(q_.dev.pop_direct(d));
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kEmpty);
  EXPECT_EQ(q_.dev.counters().chains.get(), 6u);
  EXPECT_EQ(q_.dev.last_avail_idx(), 6);
}

TEST_F(DeviceQueueTest, PopDirectAfterRewindStopAndBreak) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  Buf b = g_.buf(64);
  int h[3];
  for (int& x : h) x = q_.drv.add(&b, 1, nullptr, 0);
  q_.drv.publish();
  ASSERT_EQ(q_.dev.available(), 3);
  DeviceQueue::Mark m = q_.dev.mark();
  DeviceQueue::Direct d{};
  ASSERT_TRUE(q_.dev.pop_direct(d));
  EXPECT_EQ(d.head, h[0]);
  q_.dev.rewind(m);  // taken once: read again by pop()
  EXPECT_FALSE(q_.dev.pop_direct(d));
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h[0]);
  // Stopped and started again: the ring may be elsewhere, nothing kept is used.
  q_.dev.stop();
  EXPECT_FALSE(q_.dev.pop_direct(d));
  QueueConfig cfg = q_.cfg;
  cfg.avail_base = q_.dev.last_avail_idx();
  ASSERT_TRUE(q_.dev.start(g_.memory(), cfg).is_ok());
  EXPECT_FALSE(q_.dev.pop_direct(d));
  ASSERT_EQ(q_.dev.available(), 2);
  ASSERT_TRUE(q_.dev.pop_direct(d));
  EXPECT_EQ(d.head, h[1]);
  // A driver that breaks the ring: what the look-ahead kept is not given out.
  q_.drv.avail()->idx = uint16_t(q_.drv.avail()->idx + 20);
  EXPECT_EQ(q_.dev.available(), 0);
  ASSERT_TRUE(q_.dev.broken());
  EXPECT_FALSE(q_.dev.pop_direct(d));
  EXPECT_EQ(q_.dev.pop(*c_), PopStatus::kBroken);
}

// ---- stop / restart and 16-bit wrap ------------------------------------------------

TEST_F(DeviceQueueTest, RestartAtAvailBase) {
  ASSERT_TRUE(q_.start(g_, 8, false));
  int h[3];
  for (int& x : h) {
    Buf b = g_.buf(32);
    x = q_.drv.add(&b, 1, nullptr, 0);
  }
  q_.drv.publish();
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
    q_.dev.push(c_->head, 0);
  }
  q_.dev.publish();
  q_.dev.stop();
  EXPECT_EQ(q_.dev.last_avail_idx(), 2) << "what GET_VRING_BASE returns";
  QueueConfig cfg = q_.cfg;
  cfg.avail_base = q_.dev.last_avail_idx();
  ASSERT_TRUE(q_.dev.start(g_.memory(), cfg).is_ok());
  EXPECT_EQ(q_.dev.available(), 1);
  ASSERT_EQ(q_.dev.pop(*c_), PopStatus::kOk);
  EXPECT_EQ(c_->head, h[2]);
  q_.dev.push(c_->head, 5);
  q_.dev.publish();
  EXPECT_EQ(q_.drv.used()->idx, 3);
  for (int i = 0; i < 3; ++i) {
    Used u;
    ASSERT_TRUE(q_.drv.reap(u));
    EXPECT_EQ(u.id, h[i]);
  }
}

TEST_F(DeviceQueueTest, IndicesWrapAt16Bits) {
  ASSERT_TRUE(q_.start(g_, 8, true));
  uint64_t buf = g_.alloc(64);
  for (uint32_t i = 0; i < 65530; ++i) {
    quick_round_trip(buf);
    if (HasFatalFailure()) return;
  }
  q_.dev.stop();
  EXPECT_EQ(q_.dev.last_avail_idx(), 65530);
  QueueConfig cfg = q_.cfg;
  cfg.avail_base = 65530;
  ASSERT_TRUE(q_.dev.start(g_.memory(), cfg).is_ok());
  EXPECT_EQ(q_.dev.available(), 0);
  uint16_t* used_event = used_event_of(q_.drv.avail(), 8);
  *used_event = 65530;
  quick_round_trip(buf);  // used idx 65531
  EXPECT_TRUE(q_.dev.should_notify());
  *used_event = 1;  // past the wrap: notify when the entry at index 1 is written
  for (uint32_t i = 0; i < 12; ++i) {
    quick_round_trip(buf);
    uint16_t idx = q_.drv.used()->idx;
    EXPECT_EQ(q_.dev.should_notify(), idx == 2) << "used idx " << idx;
  }
  EXPECT_EQ(q_.dev.last_avail_idx(), uint16_t(65531 + 12));
  EXPECT_EQ(q_.drv.used()->idx, uint16_t(65531 + 12));
  EXPECT_FALSE(q_.dev.broken());
  // A burst across the wrap: available() counts modulo 2^16.
  Buf b{buf, 64};
  for (int i = 0; i < 8; ++i) ASSERT_GE(q_.drv.add(&b, 1, nullptr, 0), 0);
  q_.drv.publish();
  EXPECT_EQ(q_.dev.available(), 8);
}

}  // namespace
}  // namespace vnet::virtio
