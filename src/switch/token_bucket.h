// TokenBucket: a rate limit of `rate` units per second with room for `burst` units (RFC
// 2697's committed bucket, without colours): units are packets or bits, time is ticks of
// any clock whose rate is given (TSC cycles in the worker, nanoseconds in tests). The
// worker refills it once per burst and takes each frame's cost from it; nothing divides
// on that path and nothing overflows: the level is kept in unit-ticks (units * hz) in 128
// bits, the time credited at once is capped at what fills the bucket, and every input is
// bounded (kMaxRate, kMaxBurst, a 64-bit hz).
#pragma once

#include <algorithm>
#include <cstdint>

namespace vnet::sw {

__extension__ typedef unsigned __int128 u128;

class TokenBucket {
 public:
  // Bounds of a configuration (the control plane refuses more): 10^13 units per second is
  // 10 Tbit/s or 10 Gpps; a burst of 10^13 bits is more than a second at 1 Tbit/s.
  static constexpr uint64_t kMaxRate = 10'000'000'000'000ULL;
  static constexpr uint64_t kMaxBurst = 10'000'000'000'000ULL;

  // rate 0: off (take() always succeeds). The bucket starts full at `now`.
  void configure(uint64_t rate, uint64_t burst, uint64_t hz, uint64_t now) {
    rate_ = std::min(rate, kMaxRate);
    hz_ = std::max<uint64_t>(hz, 1);
    cap_ = u128(std::min(burst, kMaxBurst)) * hz_;
    level_ = cap_;
    last_ = now;
    // Ticks after which the bucket is full whatever its level (saturated to 64 bits).
    const u128 fill = rate_ ? (cap_ + rate_ - 1) / rate_ : 0;
    fill_ticks_ = fill > UINT64_MAX ? UINT64_MAX : uint64_t(fill);
  }
  bool on() const { return rate_ != 0; }
  uint64_t rate() const { return rate_; }
  uint64_t burst() const { return uint64_t(cap_ / hz_); }

  // Credits the time since the last refill. A clock that went backwards (another core's
  // TSC a little behind; or 2^63 ticks or more ahead, 58 years of a 5 GHz TSC) credits
  // nothing and counts on from there.
  void refill(uint64_t now) {
    const uint64_t elapsed = now - last_;
    last_ = now;
    if (int64_t(elapsed) <= 0) return;
    if (elapsed >= fill_ticks_) {
      level_ = cap_;
      return;
    }
    // elapsed < fill_ticks_ <= cap_ / rate_ + 1: the product is below cap_ + rate_.
    level_ = std::min(cap_, level_ + u128(elapsed) * rate_);
  }
  // Whether `cost` units are there now (without taking them).
  bool has(uint64_t cost) const { return level_ >= u128(cost) * hz_; }
  // Takes `cost` units if they are there; false (and nothing taken) if not.
  bool take(uint64_t cost) {
    const u128 need = u128(cost) * hz_;
    if (level_ < need) return false;
    level_ -= need;
    return true;
  }
  // Takes `cost` units that has() said are there.
  void consume(uint64_t cost) { level_ -= u128(cost) * hz_; }
  // Whole units in the bucket now (tests, vnetctl).
  uint64_t tokens() const { return uint64_t(level_ / hz_); }

 private:
  u128 level_ = 0, cap_ = 0;  // unit-ticks
  uint64_t rate_ = 0, hz_ = 1, last_ = 0, fill_ticks_ = 0;
};

}  // namespace vnet::sw
