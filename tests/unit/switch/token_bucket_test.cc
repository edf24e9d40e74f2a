// Unit tests for sw::TokenBucket and sw::PortPolicer: a bucket starts full and holds at
// most its burst, refills at its rate (whole runs of small steps equal one big step),
// takes nothing from a frame that does not fit, survives a clock going backwards, and
// stays exact at the extremes of rate, burst and clock (no overflow: 10 Tbit/s over an
// hour, a 1 bit/s rate, a 64-bit clock wrapping); a policer admits a frame only when
// every bucket of its limit holds it, and counts a GSO frame's segments and bits.
#include "switch/token_bucket.h"

#include <gtest/gtest.h>

#include <cstdint>

#include "switch/policer.h"

namespace vnet::sw {
namespace {

constexpr uint64_t kNs = 1'000'000'000;  // ticks per second of these tests' clock
constexpr uint64_t kMs = 1'000'000;

TEST(TokenBucket, OffAlwaysTakes) {
  TokenBucket b;
  EXPECT_FALSE(b.on());
  b.configure(0, 100, kNs, 0);
  EXPECT_FALSE(b.on());
}

TEST(TokenBucket, StartsFullAndHoldsTheBurst) {
  TokenBucket b;
  b.configure(1000, 50, kNs, 0);
  EXPECT_TRUE(b.on());
  EXPECT_EQ(b.tokens(), 50u);
  EXPECT_EQ(b.burst(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(b.take(1)) << i;
  EXPECT_FALSE(b.take(1));
  // An hour later it holds the burst, not an hour of tokens.
  b.refill(3600 * kNs);
  EXPECT_EQ(b.tokens(), 50u);
}

TEST(TokenBucket, RefillsAtItsRate) {
  TokenBucket b;
  b.configure(1000, 1000, kNs, 0);  // 1000/s
  ASSERT_TRUE(b.take(1000));
  b.refill(1 * kMs);  // 1 ms: one token
  EXPECT_EQ(b.tokens(), 1u);
  b.refill(1 * kMs + kMs / 2);  // half a token more: kept as a fraction
  EXPECT_FALSE(b.take(2));
  b.refill(2 * kMs);
  EXPECT_TRUE(b.take(2));
  EXPECT_FALSE(b.take(1));
  // One second in steps of 7 us: exactly 1000 tokens (fractions carried, none lost).
  uint64_t t = 2 * kMs, taken = 0;
  while (t < 2 * kMs + kNs) {
    t += 7000;
    b.refill(std::min(t, 2 * kMs + kNs));
    while (b.take(1)) ++taken;
  }
  EXPECT_EQ(taken, 1000u);
}

TEST(TokenBucket, AFrameThatDoesNotFitTakesNothing) {
  TokenBucket b;
  b.configure(1'000'000, 12'000, kNs, 0);  // bits
  EXPECT_FALSE(b.take(12'001));
  EXPECT_EQ(b.tokens(), 12'000u);
  EXPECT_TRUE(b.has(12'000));
  b.consume(11'000);
  EXPECT_EQ(b.tokens(), 1'000u);
}

TEST(TokenBucket, ClockGoingBackwardsCreditsNothing) {
  TokenBucket b;
  b.configure(1000, 10, kNs, 10 * kNs);
  ASSERT_TRUE(b.take(10));
  b.refill(9 * kNs);  // another core's clock, a second behind
  EXPECT_EQ(b.tokens(), 0u);
  b.refill(9 * kNs + 5 * kMs);  // counts on from there
  EXPECT_EQ(b.tokens(), 5u);
}

TEST(TokenBucket, ClockWrapping) {
  TokenBucket b;
  const uint64_t start = UINT64_MAX - kMs / 2;
  b.configure(1000, 10, kNs, start);
  ASSERT_TRUE(b.take(10));
  b.refill(start + 3 * kMs);  // wraps past 2^64
  EXPECT_EQ(b.tokens(), 3u);
}

TEST(TokenBucket, ExtremeRatesAndBursts) {
  // 10 Tbit/s with a burst of 10^13 bits on a 5 GHz clock, an hour idle: full, exactly.
  TokenBucket big;
  const uint64_t hz = 5'000'000'000ULL;
  big.configure(TokenBucket::kMaxRate, TokenBucket::kMaxBurst, hz, 0);
  ASSERT_TRUE(big.take(TokenBucket::kMaxBurst));
  EXPECT_EQ(big.tokens(), 0u);
  big.refill(hz / 1000);  // 1 ms: 10^10 bits
  EXPECT_EQ(big.tokens(), 10'000'000'000ULL);
  big.refill(3600 * hz);
  EXPECT_EQ(big.tokens(), TokenBucket::kMaxBurst);
  // Inputs above the bounds are clamped, never wrapped.
  TokenBucket clamped;
  clamped.configure(UINT64_MAX, UINT64_MAX, UINT64_MAX, 0);
  EXPECT_EQ(clamped.rate(), TokenBucket::kMaxRate);
  EXPECT_EQ(clamped.tokens(), TokenBucket::kMaxBurst);
  EXPECT_FALSE(clamped.take(UINT64_MAX));
  EXPECT_TRUE(clamped.take(TokenBucket::kMaxBurst));
  clamped.refill(UINT64_MAX / 2);  // half a second of a 2^64 Hz clock: half the burst
  EXPECT_EQ(clamped.tokens(), TokenBucket::kMaxBurst / 2 - 1);
  clamped.refill(UINT64_MAX / 2 + UINT64_MAX / 4);  // a quarter more
  EXPECT_GE(clamped.tokens(), TokenBucket::kMaxBurst / 4 * 3 - 2);
  EXPECT_LE(clamped.tokens(), TokenBucket::kMaxBurst / 4 * 3);
  // 1 bit/s with the largest burst: time to fill beyond 64 bits of ticks; a day credits
  // 86400 bits, an enormous elapsed time at most the burst.
  TokenBucket slow;
  slow.configure(1, TokenBucket::kMaxBurst, hz, 0);
  ASSERT_TRUE(slow.take(TokenBucket::kMaxBurst));
  slow.refill(86400 * hz);
  EXPECT_EQ(slow.tokens(), 86400u);
  slow.refill(UINT64_MAX / 2);
  EXPECT_LE(slow.tokens(), TokenBucket::kMaxBurst);
  EXPECT_EQ(slow.tokens(), 86400u + (UINT64_MAX / 2 - 86400 * hz) / hz);
}

TEST(PortPolicer, OffByDefault) {
  PortPolicer p;
  EXPECT_FALSE(p.on());
  p.configure(PolicerConfig{}, kNs, 0);
  EXPECT_FALSE(p.on());
  EXPECT_TRUE(p.admit_ingress(1000, 1'000'000));
}

TEST(PortPolicer, PacketsAndBitsBothMustFit) {
  PolicerConfig c;
  c.ingress.packets = {100, 10};      // 100 pps, 10 packets
  c.ingress.bits = {80'000, 16'000};  // 80 kbit/s, 2000 bytes
  PortPolicer p;
  p.configure(c, kNs, 0);
  EXPECT_TRUE(p.on());
  EXPECT_TRUE(p.ingress_on());
  EXPECT_FALSE(p.storm_on());
  // Bits run out first: two 1000-byte frames, then nothing, and no packet token is lost.
  EXPECT_TRUE(p.admit_ingress(1, 1000));
  EXPECT_TRUE(p.admit_ingress(1, 1000));
  EXPECT_FALSE(p.admit_ingress(1, 64));
  // 100 ms later: 8000 bits (1000 bytes) and 10 packets.
  p.refill(100 * kMs);
  int small = 0;
  while (p.admit_ingress(1, 64)) ++small;
  EXPECT_EQ(small, 10);  // packets limit now (10 x 512 bits fit in 8000)
}

TEST(PortPolicer, GsoFrameCostsItsSegments) {
  PolicerConfig c;
  c.ingress.packets = {1000, 64};
  PortPolicer p;
  p.configure(c, kNs, 0);
  EXPECT_FALSE(p.admit_ingress(65, 70'000));  // 65 segments never fit a 64-packet bucket
  EXPECT_TRUE(p.admit_ingress(46, 68'000));
  EXPECT_FALSE(p.admit_ingress(46, 68'000));
  EXPECT_TRUE(p.admit_ingress(18, 1'000));
}

TEST(PortPolicer, StormClassesAreSeparate) {
  PolicerConfig c;
  c.storm[size_t(StormClass::kBroadcast)].packets = {10, 2};
  c.storm[size_t(StormClass::kUnknownUnicast)].bits = {1'000'000, 12'144};
  PortPolicer p;
  p.configure(c, kNs, 0);
  EXPECT_TRUE(p.on());
  EXPECT_FALSE(p.ingress_on());
  EXPECT_TRUE(p.storm_on());
  EXPECT_TRUE(p.admit_storm(StormClass::kBroadcast, 1, 60));
  EXPECT_TRUE(p.admit_storm(StormClass::kBroadcast, 1, 60));
  EXPECT_FALSE(p.admit_storm(StormClass::kBroadcast, 1, 60));
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(p.admit_storm(StormClass::kMulticast, 1, 60));
  EXPECT_TRUE(p.admit_storm(StormClass::kUnknownUnicast, 1, 1518));
  EXPECT_FALSE(p.admit_storm(StormClass::kUnknownUnicast, 1, 1518));
  p.refill(100 * kMs);  // one broadcast token, 100 kbit
  EXPECT_TRUE(p.admit_storm(StormClass::kBroadcast, 1, 60));
  EXPECT_FALSE(p.admit_storm(StormClass::kBroadcast, 1, 60));
  EXPECT_TRUE(p.admit_storm(StormClass::kUnknownUnicast, 1, 1518));
  // Reconfiguring lifts what is no longer there and refills the rest.
  p.configure(PolicerConfig{}, kNs, 100 * kMs);
  EXPECT_FALSE(p.on());
}

}  // namespace
}  // namespace vnet::sw
