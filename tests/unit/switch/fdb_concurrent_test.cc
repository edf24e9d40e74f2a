// Concurrency tests for sw::Fdb shared by several workers: lock-free lookups never see a
// torn entry while other threads learn, evict, move and age; learning from two threads
// keeps the counts exact. Meant to run under ThreadSanitizer too (-fsanitize=thread).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "switch/fdb.h"

namespace vnet::sw {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

Mac mac(uint32_t n) {
  uint8_t b[6] = {0x52, 0x54};
  for (int i = 0; i < 4; ++i) b[2 + i] = uint8_t(n >> (24 - 8 * i));
  return Mac::from_bytes(b);
}

// The port a key always maps to in these tests: a torn read (key of one entry, port of
// another) shows up as a port that does not match.
uint16_t port_of(uint32_t n) {
  return uint16_t(1 + n % 13);
}

TEST(FdbConcurrent, TwoLearnersDisjointKeysAllLearned) {
  FdbConfig c;
  c.capacity = 8192;
  Fdb fdb(c);
  constexpr uint32_t kPerThread = 3000;
  std::atomic<uint32_t> wrong{0};
  auto learner = [&](uint32_t base) {
    for (int round = 0; round < 3; ++round) {
      for (uint32_t i = base; i < base + kPerThread; ++i) {
        fdb.learn(mac(i), 0, port_of(i), kSec);
        // Look up the other thread's keys while it learns them.
        uint32_t other = (base == 0 ? kPerThread : 0) + (i - base);
        uint16_t p = fdb.lookup(mac(other), 0, kSec);
        if (p != 0 && p != port_of(other)) wrong.fetch_add(1);
      }
    }
  };
  std::thread t1(learner, 0), t2(learner, kPerThread);
  t1.join();
  t2.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_EQ(fdb.size(), 2 * kPerThread);
  EXPECT_EQ(fdb.counters().learned.get(), 2 * kPerThread);
  EXPECT_EQ(fdb.counters().evicted.get(), 0u);
  for (uint32_t i = 0; i < 2 * kPerThread; ++i) ASSERT_EQ(fdb.lookup(mac(i), 0, kSec), port_of(i));
}

TEST(FdbConcurrent, ReadersNeverSeeTornEntriesUnderChurn) {
  // A small table kept full: every new key evicts another, so slots are rewritten with
  // other keys and ports all the time while readers look keys up.
  FdbConfig c;
  c.capacity = 64;
  Fdb fdb(c);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> wrong{0}, hits{0};
  std::thread writer([&] {
    uint64_t now = kSec;
    for (uint32_t i = 0; i < 200'000; ++i) {
      fdb.learn(mac(i % 1000), 0, port_of(i % 1000), now);
      if ((i & 255) == 0) fdb.age(now, 64);
      now += 1000;
    }
    stop = true;
  });
  auto reader = [&] {
    uint32_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      uint32_t k = n++ % 1000;
      uint16_t p = fdb.lookup(mac(k), 0, kSec);
      if (p == 0) continue;
      hits.fetch_add(1, std::memory_order_relaxed);
      if (p != port_of(k)) wrong.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::thread r1(reader);
  reader();
  writer.join();
  r1.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(hits.load(), 0u);
  EXPECT_LE(fdb.size(), 64u);
}

TEST(FdbConcurrent, MovesBetweenTwoPortsAreSeenAsOneOrTheOther) {
  Fdb fdb;
  constexpr uint32_t kKeys = 16;
  for (uint32_t k = 0; k < kKeys; ++k) fdb.learn(mac(k), 7, 100, kSec);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0};
  // Two "workers" see the same stations on two ports (a station moving back and forth).
  auto mover = [&](uint16_t port) {
    for (int i = 0; i < 20'000; ++i) fdb.learn(mac(uint32_t(i) % kKeys), 7, port, kSec);
  };
  std::thread reader([&] {
    uint32_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      uint16_t p = fdb.lookup(mac(n++ % kKeys), 7, kSec);
      if (p != 100 && p != 200 && p != 0) bad.fetch_add(1);
    }
  });
  std::thread m1(mover, 100), m2(mover, 200);
  m1.join();
  m2.join();
  stop = true;
  reader.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(fdb.size(), kKeys);  // moves never duplicate a key
  EXPECT_EQ(fdb.port_entries(100) + fdb.port_entries(200), kKeys);
}

TEST(FdbConcurrent, LockFreeRefreshKeepsEntriesAliveWhileAnotherThreadAges) {
  FdbConfig c;
  c.age_ns = 2 * kSec;
  Fdb fdb(c);
  constexpr uint32_t kKeys = 200;
  for (uint32_t k = 0; k < kKeys; ++k) fdb.learn(mac(k), 0, port_of(k), 0);
  std::atomic<uint64_t> clock_ns{0};
  std::atomic<bool> stop{false};
  std::thread ager([&] {
    while (!stop.load(std::memory_order_relaxed)) fdb.age(clock_ns.load(), 128);
  });
  // Simulated time runs 10 s in 10 ms steps; every key is refreshed every step.
  for (uint64_t t = 0; t <= 10 * kSec; t += 10'000'000) {
    clock_ns.store(t);
    for (uint32_t k = 0; k < kKeys; ++k)
      ASSERT_NE(fdb.learn(mac(k), 0, port_of(k), t), Fdb::Learn::kRefused);
  }
  stop = true;
  ager.join();
  EXPECT_EQ(fdb.size(), kKeys);
  EXPECT_EQ(fdb.counters().aged.get(), 0u);
  EXPECT_EQ(fdb.counters().learned.get(), kKeys);
}

}  // namespace
}  // namespace vnet::sw
