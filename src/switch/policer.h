// Per-port ingress policing and storm control, as the switch applies them to the frames
// a port sends (OVS's ingress_policing_rate/_kpkts_rate, a switch's storm control):
//   - ingress: every frame, at most `packets` per second and/or `bits` per second;
//   - storm: frames the switch floods, by class (broadcast, multicast, unknown unicast),
//     each at most so many packets and/or bits per second.
// A frame that does not fit is dropped (and counted by the caller), taking no tokens. A
// frame's cost is what it becomes on the wire: a TSO/USO frame is as many packets as it
// has segments and the bytes of all of them (net::wire_cost). Owned by the worker that
// polls the port; the control thread configures it through that worker (run_sync).
#pragma once

#include <array>
#include <cstdint>

#include "switch/token_bucket.h"

namespace vnet::sw {

// One limit: `rate` per second (0: none) and a bucket of `burst`.
struct Limit {
  uint64_t rate = 0;
  uint64_t burst = 0;
  bool on() const { return rate != 0; }
  bool operator==(const Limit&) const = default;
};

// Packets and bits per second; either, both or neither.
struct RateLimits {
  Limit packets, bits;
  bool on() const { return packets.on() || bits.on(); }
  bool operator==(const RateLimits&) const = default;
};

enum class StormClass : uint8_t { kBroadcast, kMulticast, kUnknownUnicast, kCount };
inline constexpr size_t kStormClasses = size_t(StormClass::kCount);

inline const char* storm_class_name(StormClass c) {
  switch (c) {
    case StormClass::kBroadcast:
      return "broadcast";
    case StormClass::kMulticast:
      return "multicast";
    case StormClass::kUnknownUnicast:
      return "unknown_unicast";
    case StormClass::kCount:
      break;
  }
  return "?";
}

struct PolicerConfig {
  RateLimits ingress;
  std::array<RateLimits, kStormClasses> storm;
  bool storm_on() const {
    for (const RateLimits& s : storm)
      if (s.on()) return true;
    return false;
  }
  bool on() const { return ingress.on() || storm_on(); }
  bool operator==(const PolicerConfig&) const = default;
};

class PortPolicer {
 public:
  // `hz`: ticks per second of the clock given to refill(); `now` on that clock.
  void configure(const PolicerConfig& cfg, uint64_t hz, uint64_t now) {
    cfg_ = cfg;
    setup(ingress_, cfg.ingress, hz, now);
    for (size_t i = 0; i < kStormClasses; ++i) setup(storm_[i], cfg.storm[i], hz, now);
    ingress_on_ = cfg.ingress.on();
    storm_on_ = cfg.storm_on();
    on_ = ingress_on_ || storm_on_;
  }
  const PolicerConfig& config() const { return cfg_; }
  // Anything to do (the forwarder's one test per burst).
  bool on() const { return on_; }
  bool ingress_on() const { return ingress_on_; }
  bool storm_on() const { return storm_on_; }

  // Once per burst, before admit_*.
  void refill(uint64_t now) {
    if (ingress_on_) ingress_.refill(now);
    if (storm_on_)
      for (Pair& s : storm_) s.refill(now);
  }
  // A frame of `packets` segments and `bytes` bytes on the wire: whether it may pass.
  bool admit_ingress(uint32_t packets, uint64_t bytes) { return ingress_.admit(packets, bytes); }
  bool admit_storm(StormClass c, uint32_t packets, uint64_t bytes) {
    return storm_[size_t(c)].admit(packets, bytes);
  }

 private:
  struct Pair {
    TokenBucket packets, bits;
    void refill(uint64_t now) {
      if (packets.on()) packets.refill(now);
      if (bits.on()) bits.refill(now);
    }
    // Both buckets must hold the cost; only then is it taken from both.
    bool admit(uint32_t n, uint64_t bytes) {
      const bool p = packets.on(), b = bits.on();
      if ((p && !packets.has(n)) || (b && !bits.has(bytes * 8))) return false;
      if (p) packets.consume(n);
      if (b) bits.consume(bytes * 8);
      return true;
    }
  };
  static void setup(Pair& p, const RateLimits& l, uint64_t hz, uint64_t now) {
    p.packets.configure(l.packets.rate, l.packets.burst, hz, now);
    p.bits.configure(l.bits.rate, l.bits.burst, hz, now);
  }

  // The flags first: the forwarder reads on() once per burst, next to the port's other
  // ingress fields.
  bool on_ = false, ingress_on_ = false, storm_on_ = false;
  Pair ingress_;
  std::array<Pair, kStormClasses> storm_;
  PolicerConfig cfg_;
};

}  // namespace vnet::sw
