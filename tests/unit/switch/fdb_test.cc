// Unit tests for sw::Fdb and sw::Mac: learning, refresh, station moves, ageing with an
// injected clock, the incremental sweep, removal, the capacity and per-port limits and
// the eviction policy under a MAC flood.
#include "switch/fdb.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

namespace vnet::sw {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kSec = 1'000'000'000;

Mac mac(uint32_t n) {
  uint8_t b[6] = {0x52, 0x54};
  for (int i = 0; i < 4; ++i) b[2 + i] = uint8_t(n >> (24 - 8 * i));
  return Mac::from_bytes(b);
}

FdbConfig cfg(uint32_t capacity, uint32_t per_port_limit = 0) {
  FdbConfig c;
  c.capacity = capacity;
  c.per_port_limit = per_port_limit;
  return c;
}

TEST(Mac, ParseFormatAndBits) {
  auto m = Mac::parse("52:54:00:12:34:5A");
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->to_string(), "52:54:00:12:34:5a");
  EXPECT_FALSE(m->is_multicast());
  EXPECT_FALSE(Mac::parse("52:54:00:12:34").has_value());
  EXPECT_FALSE(Mac::parse("52:54:00:12:34:5g").has_value());
  EXPECT_FALSE(Mac::parse("52:54:00:12:34;56").has_value());
  EXPECT_TRUE(Mac::parse("01:00:5e:00:00:01")->is_multicast());
  EXPECT_TRUE(Mac::parse("33:33:00:00:00:01")->is_multicast());
  EXPECT_TRUE(Mac::broadcast().is_broadcast());
  EXPECT_TRUE(Mac::broadcast().is_multicast());
  EXPECT_EQ(Mac::broadcast().to_string(), "ff:ff:ff:ff:ff:ff");
  EXPECT_TRUE(Mac().is_zero());
  EXPECT_EQ(*Mac::parse("52-54-00-12-34-5a"), *m);
}

TEST(Fdb, LearnAndLookup) {
  Fdb fdb;
  EXPECT_EQ(fdb.learn(mac(1), 0, 3, kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.lookup(mac(1), 0, kSec), 3);
  EXPECT_EQ(fdb.lookup(mac(2), 0, kSec), 0);
  EXPECT_EQ(fdb.size(), 1u);
  EXPECT_EQ(fdb.port_entries(3), 1u);
  EXPECT_EQ(fdb.counters().learned.get(), 1u);
  EXPECT_EQ(fdb.learn(mac(1), 0, 0, kSec), Fdb::Learn::kInvalid);  // port 0 is "none"
  EXPECT_EQ(fdb.lookup(mac(1), 0, kSec), 3);
}

TEST(Fdb, RefreshKeepsEntryAlive) {
  Fdb fdb;  // 300 s
  fdb.learn(mac(1), 0, 1, 0);
  EXPECT_EQ(fdb.learn(mac(1), 0, 1, 200 * kSec), Fdb::Learn::kRefreshed);
  EXPECT_EQ(fdb.lookup(mac(1), 0, 400 * kSec), 1);  // 200 s since the refresh
  EXPECT_EQ(fdb.lookup(mac(1), 0, 500 * kSec), 0);  // 300 s since the refresh
  EXPECT_EQ(fdb.counters().learned.get(), 1u);
  EXPECT_EQ(fdb.size(), 1u);
}

TEST(Fdb, StationMove) {
  Fdb fdb;
  fdb.learn(mac(1), 0, 1, kSec);
  EXPECT_EQ(fdb.learn(mac(1), 0, 2, 2 * kSec), Fdb::Learn::kMoved);
  EXPECT_EQ(fdb.lookup(mac(1), 0, 2 * kSec), 2);
  EXPECT_EQ(fdb.counters().moved.get(), 1u);
  EXPECT_EQ(fdb.size(), 1u);
  EXPECT_EQ(fdb.port_entries(1), 0u);
  EXPECT_EQ(fdb.port_entries(2), 1u);
}

TEST(Fdb, VlanIsPartOfTheKey) {
  Fdb fdb;
  EXPECT_EQ(fdb.learn(mac(1), 0, 1, kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.learn(mac(1), 10, 2, kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.learn(mac(1), 4095, 3, kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.lookup(mac(1), 0, kSec), 1);
  EXPECT_EQ(fdb.lookup(mac(1), 10, kSec), 2);
  EXPECT_EQ(fdb.lookup(mac(1), 4095, kSec), 3);
  EXPECT_EQ(fdb.lookup(mac(1), 20, kSec), 0);
  EXPECT_EQ(fdb.counters().moved.get(), 0u);
  EXPECT_EQ(fdb.size(), 3u);
  EXPECT_TRUE(fdb.remove(mac(1), 10));
  EXPECT_EQ(fdb.lookup(mac(1), 10, kSec), 0);
  EXPECT_EQ(fdb.lookup(mac(1), 0, kSec), 1);
}

TEST(Fdb, ExpiredEntryIsAMiss) {
  FdbConfig c;
  c.age_ns = 300 * kSec;
  Fdb fdb(c);
  fdb.learn(mac(1), 0, 1, 10 * kSec);
  EXPECT_EQ(fdb.lookup(mac(1), 0, 310 * kSec - kMs), 1);
  EXPECT_EQ(fdb.lookup(mac(1), 0, 310 * kSec), 0);
  // Learning it again after expiry is a new entry, not a refresh or a move.
  EXPECT_EQ(fdb.learn(mac(1), 0, 2, 311 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.counters().moved.get(), 0u);
  EXPECT_EQ(fdb.counters().aged.get(), 1u);
  EXPECT_EQ(fdb.size(), 1u);
  EXPECT_EQ(fdb.lookup(mac(1), 0, 311 * kSec), 2);
}

TEST(Fdb, MillisecondStampWrapsSafely) {
  Fdb fdb;
  const uint64_t wrap = (uint64_t(1) << 32) * kMs;  // the 32-bit ms stamp wraps here
  fdb.learn(mac(1), 0, 1, wrap - 100 * kMs);
  EXPECT_EQ(fdb.lookup(mac(1), 0, wrap + 100 * kMs), 1);
  EXPECT_EQ(fdb.lookup(mac(1), 0, wrap + 299 * kSec), 1);
  EXPECT_EQ(fdb.lookup(mac(1), 0, wrap + 300 * kSec), 0);
}

TEST(Fdb, IncrementalAgeingIsBounded) {
  Fdb fdb(cfg(1024));
  for (uint32_t i = 0; i < 500; ++i) fdb.learn(mac(i), 0, 1, 0);
  for (uint32_t i = 500; i < 600; ++i) fdb.learn(mac(i), 0, 2, 200 * kSec);
  ASSERT_EQ(fdb.size(), 600u);
  const uint64_t now = 350 * kSec;  // the first 500 expired, the last 100 did not
  const uint32_t budget = 16;
  uint32_t calls = 0, total = 0;
  while (calls * budget < fdb.slots()) {
    uint32_t removed = fdb.age(now, budget);
    EXPECT_LE(removed, budget);
    total += removed;
    ++calls;
  }
  EXPECT_GT(calls, 1u);  // the work was spread over several calls
  EXPECT_EQ(total, 500u);
  EXPECT_EQ(fdb.size(), 100u);
  EXPECT_EQ(fdb.port_entries(1), 0u);
  EXPECT_EQ(fdb.port_entries(2), 100u);
  EXPECT_EQ(fdb.counters().aged.get(), 500u);
  EXPECT_EQ(fdb.lookup(mac(550), 0, now), 2);
  EXPECT_EQ(fdb.age(now, budget * 4), 0u);
}

TEST(Fdb, AgeingOneCallDoesNotSweepEverything) {
  Fdb fdb(cfg(1024));
  for (uint32_t i = 0; i < 800; ++i) fdb.learn(mac(i), 0, 1, 0);
  EXPECT_LE(fdb.age(400 * kSec, 8), 8u);
  EXPECT_GE(fdb.size(), 792u);
}

TEST(Fdb, RemovePortAndFlush) {
  Fdb fdb;
  for (uint32_t i = 0; i < 50; ++i) fdb.learn(mac(i), 0, 1, kSec);
  for (uint32_t i = 50; i < 80; ++i) fdb.learn(mac(i), 0, 2, kSec);
  EXPECT_EQ(fdb.remove_port(1), 50u);
  EXPECT_EQ(fdb.remove_port(1), 0u);
  EXPECT_EQ(fdb.size(), 30u);
  for (uint32_t i = 0; i < 50; ++i) EXPECT_EQ(fdb.lookup(mac(i), 0, kSec), 0);
  for (uint32_t i = 50; i < 80; ++i) EXPECT_EQ(fdb.lookup(mac(i), 0, kSec), 2);
  fdb.flush();
  EXPECT_EQ(fdb.size(), 0u);
  EXPECT_EQ(fdb.port_entries(2), 0u);
  EXPECT_EQ(fdb.lookup(mac(60), 0, kSec), 0);
  EXPECT_EQ(fdb.learn(mac(60), 0, 3, kSec), Fdb::Learn::kLearned);
}

TEST(Fdb, StructuredMacsFillToCapacityWithoutEviction) {
  // Sequential MACs (how hypervisors hand them out) must spread over the buckets.
  Fdb fdb;  // 8192
  for (uint32_t i = 0; i < 8192; ++i)
    ASSERT_EQ(fdb.learn(mac(i), 0, uint16_t(1 + i % 7), kSec), Fdb::Learn::kLearned) << i;
  EXPECT_EQ(fdb.size(), 8192u);
  EXPECT_EQ(fdb.counters().evicted.get(), 0u);
  EXPECT_EQ(fdb.counters().full.get(), 0u);
  for (uint32_t i = 0; i < 8192; ++i) ASSERT_EQ(fdb.lookup(mac(i), 0, kSec), 1 + i % 7) << i;
}

// Capacity <= 6 gives a table of two buckets: every key's window is the whole table,
// which makes the eviction order deterministic.
TEST(Fdb, FullEvictsOldestInWindow) {
  Fdb fdb(cfg(4));
  ASSERT_EQ(fdb.slots(), 8u);
  for (uint32_t i = 0; i < 4; ++i) fdb.learn(mac(i), 0, 1, (i + 1) * kSec);
  EXPECT_EQ(fdb.learn(mac(4), 0, 1, 5 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.size(), 4u);
  EXPECT_EQ(fdb.lookup(mac(0), 0, 5 * kSec), 0);  // the oldest went
  for (uint32_t i = 1; i <= 4; ++i) EXPECT_EQ(fdb.lookup(mac(i), 0, 5 * kSec), 1);
  EXPECT_EQ(fdb.counters().evicted.get(), 1u);
  EXPECT_EQ(fdb.counters().full.get(), 1u);
  fdb.learn(mac(1), 0, 1, 6 * kSec);  // refresh: mac(2) is the oldest now
  fdb.learn(mac(5), 0, 1, 7 * kSec);
  EXPECT_EQ(fdb.lookup(mac(2), 0, 7 * kSec), 0);
  EXPECT_EQ(fdb.lookup(mac(1), 0, 7 * kSec), 1);
  EXPECT_EQ(fdb.size(), 4u);
}

TEST(Fdb, FullPrefersExpiredSlots) {
  Fdb fdb(cfg(4));
  for (uint32_t i = 1; i < 4; ++i) fdb.learn(mac(i), 0, 1, 0);  // these expire at 300 s
  fdb.learn(mac(0), 0, 1, 100 * kSec);
  EXPECT_EQ(fdb.learn(mac(9), 0, 1, 350 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.lookup(mac(0), 0, 350 * kSec), 1);
  EXPECT_EQ(fdb.counters().evicted.get(), 0u);
  EXPECT_EQ(fdb.counters().aged.get(), 3u);
  EXPECT_EQ(fdb.size(), 2u);
}

TEST(Fdb, FullNeverEvictsALighterPort) {
  Fdb fdb(cfg(4));
  fdb.learn(mac(100), 0, 2, 0);  // port 2: 1 entry, the oldest of all
  for (uint32_t i = 0; i < 3; ++i) fdb.learn(mac(i), 0, 1, (i + 1) * kSec);  // port 1: 3
  EXPECT_EQ(fdb.learn(mac(3), 0, 1, 10 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.lookup(mac(100), 0, 10 * kSec), 2);  // older, but its port holds fewer
  EXPECT_EQ(fdb.lookup(mac(0), 0, 10 * kSec), 0);    // port 1's oldest went instead
  // A new port (0 entries) may take room from the heaviest port, its oldest entry first.
  EXPECT_EQ(fdb.learn(mac(200), 0, 3, 11 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.lookup(mac(1), 0, 11 * kSec), 0);
  EXPECT_EQ(fdb.lookup(mac(100), 0, 11 * kSec), 2);
  EXPECT_EQ(fdb.port_entries(1), 2u);
  // Port 2 (1 entry) vs port 1 (2) and port 3 (1): port 1 loses again.
  EXPECT_EQ(fdb.learn(mac(101), 0, 2, 12 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.port_entries(1), 1u);
  EXPECT_EQ(fdb.port_entries(2), 2u);
  // Port 3 (1 entry) wants room: only port 2 (2) and port 1 / port 3 (1) are eligible,
  // port 2 is the heaviest.
  EXPECT_EQ(fdb.learn(mac(201), 0, 3, 13 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.lookup(mac(100), 0, 13 * kSec), 0);
  EXPECT_EQ(fdb.size(), 4u);
}

// With more than one window, a heavy port whose new key's window holds only entries of
// lighter ports (or nothing) is refused rather than evicting them.
TEST(Fdb, HeavyPortIsRefusedRatherThanEvictingLighterPorts) {
  Fdb fdb(cfg(32));  // 64 slots, 16 buckets: a window is 2 of them
  ASSERT_EQ(fdb.slots(), 64u);
  for (uint16_t p = 2; p <= 29; ++p) fdb.learn(mac(1000 + p), 0, p, 0);  // 28 ports with 1
  for (uint32_t i = 0; i < 4; ++i) fdb.learn(mac(i), 0, 1, kSec);        // port 1 holds 4
  ASSERT_EQ(fdb.size(), 32u);
  uint32_t learned = 0, refused = 0;
  for (uint32_t i = 0; i < 1000; ++i) {
    auto r = fdb.learn(mac(100000 + i), 0, 1, 2 * kSec + i * kMs);
    learned += r == Fdb::Learn::kLearned;
    refused += r == Fdb::Learn::kRefused;
    ASSERT_LE(fdb.size(), 32u);
    for (uint16_t p = 2; p <= 29; ++p) ASSERT_EQ(fdb.port_entries(p), 1u) << i;
  }
  EXPECT_EQ(learned + refused, 1000u);
  EXPECT_GT(learned, 0u);
  EXPECT_GT(refused, 0u);
  EXPECT_EQ(fdb.port_entries(1), 4u);
  EXPECT_EQ(fdb.counters().refused.get(), refused);
  for (uint16_t p = 2; p <= 29; ++p) EXPECT_EQ(fdb.lookup(mac(1000 + p), 0, 3 * kSec), p);
}

TEST(Fdb, PerPortLimit) {
  Fdb fdb(cfg(6, 2));  // one window
  EXPECT_EQ(fdb.learn(mac(0), 0, 1, 1 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.learn(mac(1), 0, 1, 2 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.learn(mac(2), 0, 1, 3 * kSec), Fdb::Learn::kLearned);  // replaces mac(0)
  EXPECT_EQ(fdb.lookup(mac(0), 0, 3 * kSec), 0);
  EXPECT_EQ(fdb.lookup(mac(1), 0, 3 * kSec), 1);
  EXPECT_EQ(fdb.port_entries(1), 2u);
  EXPECT_EQ(fdb.counters().limited.get(), 1u);
  EXPECT_EQ(fdb.learn(mac(10), 0, 2, 3 * kSec), Fdb::Learn::kLearned);  // others unaffected
  // A move onto a port at its limit: the stale entry goes, nothing is learned.
  EXPECT_EQ(fdb.learn(mac(10), 0, 1, 4 * kSec), Fdb::Learn::kRefused);
  EXPECT_EQ(fdb.lookup(mac(10), 0, 4 * kSec), 0);
  EXPECT_EQ(fdb.port_entries(1), 2u);
  EXPECT_EQ(fdb.port_entries(2), 0u);
}

TEST(Fdb, PerPortLimitLargeTable) {
  Fdb fdb(cfg(8192, 10));
  for (uint32_t i = 0; i < 5000; ++i) {
    fdb.learn(mac(i), 0, 1, kSec + i * kMs);
    ASSERT_LE(fdb.port_entries(1), 10u);
  }
  EXPECT_GT(fdb.port_entries(1), 0u);
  // Port 1's limit does not stop port 2.
  for (uint32_t i = 0; i < 10; ++i)
    EXPECT_EQ(fdb.learn(mac(100000 + i), 0, 2, 10 * kSec), Fdb::Learn::kLearned);
  EXPECT_EQ(fdb.size(), fdb.port_entries(1) + 10);
}

TEST(Fdb, CapacityIsNeverExceeded) {
  Fdb fdb(cfg(64));
  uint32_t learned = 0, refused = 0;
  for (uint32_t i = 0; i < 2000; ++i) {
    auto r = fdb.learn(mac(i * 7919), 0, 1, kSec + i * kMs);
    learned += r == Fdb::Learn::kLearned;
    refused += r == Fdb::Learn::kRefused;
    ASSERT_LE(fdb.size(), 64u);
  }
  EXPECT_EQ(learned + refused, 2000u);
  EXPECT_EQ(fdb.size(), 64u);
  // Refused only when the window of the new key held no entry at all (table at
  // capacity, window empty): rare at this load.
  EXPECT_LT(refused, 100u);
  EXPECT_EQ(fdb.counters().evicted.get(), learned - 64);
  // The newest keys are there.
  EXPECT_EQ(fdb.lookup(mac(1999 * 7919), 0, 3 * kSec), 1);
}

// A guest floods random source MACs from port 1. With the "heavier port loses first"
// rule, entries of port 2 learned before the flood all survive (port 1 holds more than
// port 2 the whole time, so it never evicts port 2's entries), the table stays within
// capacity and port 2 can still learn new stations afterwards.
TEST(Fdb, MacFloodKeepsOtherPortsEntries) {
  Fdb fdb;  // 8192
  for (uint32_t i = 0; i < 20; ++i) fdb.learn(mac(0xa0000 + i), 0, 2, kSec);
  std::mt19937_64 rng(42);
  uint64_t now = 2 * kSec;
  for (uint32_t i = 0; i < 100000; ++i) {
    uint64_t r = rng();
    uint8_t b[6] = {uint8_t(r & 0xfe), uint8_t(r >> 8),  uint8_t(r >> 16),
                    uint8_t(r >> 24),  uint8_t(r >> 32), uint8_t(r >> 40)};  // unicast
    fdb.learn(Mac::from_bytes(b), 0, 1, now);
    now += 1000;  // 1 us per frame: the whole flood is within the age limit
  }
  EXPECT_LE(fdb.size(), 8192u);
  EXPECT_GT(fdb.port_entries(1), 8000u);
  EXPECT_GT(fdb.counters().evicted.get(), 90000u);
  for (uint32_t i = 0; i < 20; ++i) EXPECT_EQ(fdb.lookup(mac(0xa0000 + i), 0, now), 2) << i;
  EXPECT_EQ(fdb.port_entries(2), 20u);
  uint32_t learned = 0;
  for (uint32_t i = 0; i < 20; ++i)
    learned += fdb.learn(mac(0xb0000 + i), 0, 2, now) == Fdb::Learn::kLearned;
  EXPECT_GE(learned, 19u);  // refused only if a window holds no entry at all
  EXPECT_LE(fdb.size(), 8192u);
}

}  // namespace
}  // namespace vnet::sw

namespace vnet::sw {
namespace {

// A dump in slices (for_each_slice, as vnetd's chunked "fdb" request uses it) sees
// every entry exactly once, whatever the slice size and however often a slice is cut
// short by its callback, and never looks past max_slots per call.
TEST(Fdb, SlicesSeeEveryEntryOnce) {
  Fdb fdb(cfg(4096));
  const uint64_t now = 10 * kSec;
  std::set<uint64_t> want;
  for (uint32_t i = 0; i < 3000; ++i) {
    if (fdb.learn(mac(i), uint16_t(i % 7), uint16_t(1 + i % 3), now) == Fdb::Learn::kLearned)
      want.insert(mac(i).raw() | uint64_t(i % 7) << 48);
  }
  ASSERT_GT(want.size(), 2900u);
  for (uint32_t max_slots : {1u, 7u, 1000u, fdb.slots()}) {
    for (size_t take : {size_t(1), size_t(5), size_t(100000)}) {
      std::multiset<uint64_t> seen;
      uint32_t cursor = 0, calls = 0;
      while (cursor < fdb.slots()) {
        size_t n = 0;
        const uint32_t next =
            fdb.for_each_slice(now, cursor, max_slots, [&](Mac m, uint16_t v, uint16_t, uint64_t) {
              seen.insert(m.raw() | uint64_t(v) << 48);
              return ++n < take;
            });
        ASSERT_GT(next, cursor);
        ASSERT_LE(next - cursor, max_slots);
        cursor = next;
        ++calls;
      }
      EXPECT_EQ(cursor, fdb.slots());
      EXPECT_EQ(seen.size(), want.size()) << max_slots << " " << take;
      EXPECT_EQ(std::set<uint64_t>(seen.begin(), seen.end()), want);
    }
  }
  // Past the end: nothing, and the end again.
  EXPECT_EQ(fdb.for_each_slice(now, fdb.slots(), 10,
                               [](Mac, uint16_t, uint16_t, uint64_t) {
                                 ADD_FAILURE();
                                 return true;
                               }),
            fdb.slots());
}

}  // namespace
}  // namespace vnet::sw
