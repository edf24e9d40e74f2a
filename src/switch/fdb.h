// Fdb: the forwarding database, (MAC, VLAN) -> port id, with learning, ageing and
// bounded eviction. Fixed size, allocated once at construction; every data-path
// operation touches at most two 64-byte buckets and does a bounded amount of work.
//
// Layout: a power-of-two array of buckets, 4 entries of 16 bytes each (one cache
// line). A key hashes to two buckets (two-choice hashing); it lives in one of their
// 8 slots, its "window". New keys go to the less loaded bucket.
//
// Limits and eviction: at most `capacity` entries in all, and optionally at most
// `per_port_limit` entries learned on one port. When a new key finds no room (table
// at capacity or window full) one entry of its window is evicted: among those that
// belong to a port holding at least as many entries as the learning port, the one
// of the port holding the most, the oldest first. If there is no such entry the new
// key is not learned ("refused"). So a port flooding random source MACs can only
// displace its own entries or those of ports holding even more, never the entries
// of a port holding fewer. A port at its per-port limit may only replace one of its
// own entries in the window, else its new key is refused.
//
// Time: entries carry a 32-bit millisecond stamp; ages are computed modulo 2^32 ms
// (a stamp up to 24.8 days ahead of now counts as age 0), so age limits are capped at
// 24.8 days and age() must sweep the whole table more often than that (the worker's
// Forwarder::tick does it in well under a minute) so that no entry looks young again.
// lookup() treats an expired entry as a miss even before it is swept.
//
// Threading: one owner (the worker); counters may be read from any thread.
#pragma once

#include <cstdint>
#include <memory>

#include "common/counter.h"
#include "switch/mac.h"

namespace vnet::sw {

struct FdbConfig {
  uint32_t capacity = 8192;                 // entries at most (>= 1)
  uint64_t age_ns = 300'000'000'000ULL;     // entries unseen this long are gone
  uint32_t per_port_limit = 0;              // entries per port at most; 0: none
  uint64_t hash_seed = 0x6a09e667f3bcc908;  // vary it to make collisions unpredictable
};

struct FdbCounters {
  Counter learned;  // new entries
  Counter moved;    // station moves: a known (MAC, VLAN) seen on another port
  Counter aged;     // entries removed because they expired
  Counter evicted;  // entries removed to make room for a new one
  Counter full;     // new keys that found no free slot (table at capacity or window full)
  Counter refused;  // new keys not learned: nothing in their window could be evicted
  Counter limited;  // new keys (or moves) that hit the per-port limit
};

class Fdb {
 public:
  static constexpr uint32_t kWays = 4;  // entries per bucket
  static constexpr uint32_t kMaxPorts = 65536;
  static constexpr uint64_t kMaxAgeNs = (uint64_t(1) << 31) * 1'000'000;  // 2^31 ms, 24.8 days

  enum class Learn : uint8_t { kRefreshed, kLearned, kMoved, kRefused, kInvalid };

  explicit Fdb(const FdbConfig& cfg = {});
  Fdb(const Fdb&) = delete;
  Fdb& operator=(const Fdb&) = delete;

  // Inserts (mac, vlan) -> port or refreshes it. port 0 is not a port (kInvalid).
  Learn learn(Mac mac, uint16_t vlan, uint16_t port, uint64_t now_ns);
  // The port for (mac, vlan), or 0 if unknown or expired.
  uint16_t lookup(Mac mac, uint16_t vlan, uint64_t now_ns) const;
  // Removes the entry; true if there was one.
  bool remove(Mac mac, uint16_t vlan);
  // Incremental sweep: examines at most `budget` slots from where the last call
  // stopped and removes expired entries. Returns entries removed.
  uint32_t age(uint64_t now_ns, uint32_t budget);
  // Removes every entry of a port (one pass over the table; control path). Returns count.
  uint32_t remove_port(uint16_t port);
  void flush();

  uint32_t size() const { return size_; }
  uint32_t capacity() const { return capacity_; }
  uint32_t per_port_limit() const { return per_port_limit_; }
  uint32_t slots() const { return slot_mask_ + 1; }
  uint32_t port_entries(uint16_t port) const { return port_count_[port]; }
  uint64_t age_ns() const { return age_ms_ * 1'000'000ULL; }
  FdbCounters& counters() { return counters_; }
  const FdbCounters& counters() const { return counters_; }

  // Calls f(Mac, vlan, port, age_ns) for every live (unexpired) entry.
  template <typename F>
  void for_each(uint64_t now_ns, F&& f) const {
    const uint32_t now = to_ms(now_ns);
    for (uint32_t s = 0; s <= slot_mask_; ++s) {
      const Entry& e = slot(s);
      if (e.port == 0 || expired(e, now)) continue;
      f(Mac::from_raw(e.key), uint16_t(e.key >> 48), e.port, uint64_t(age_of(e, now)) * 1'000'000);
    }
  }

 private:
  struct Entry {
    uint64_t key;    // MAC in bits 0..47, VLAN in 48..63
    uint32_t stamp;  // last seen, milliseconds (mod 2^32)
    uint16_t port;   // 0: empty slot
    uint16_t pad;
  };
  static_assert(sizeof(Entry) == 16);
  struct alignas(64) Bucket {
    Entry e[kWays];
  };
  static_assert(sizeof(Bucket) == 64);

  static uint64_t make_key(Mac mac, uint16_t vlan) { return mac.raw() | uint64_t(vlan) << 48; }
  static uint32_t to_ms(uint64_t now_ns) { return uint32_t(now_ns / 1'000'000); }
  uint64_t hash(uint64_t key) const;
  // The two buckets of a key (always different).
  void buckets(uint64_t key, uint32_t* b1, uint32_t* b2) const;
  Entry& slot(uint32_t s) { return buckets_[s / kWays].e[s % kWays]; }
  const Entry& slot(uint32_t s) const { return buckets_[s / kWays].e[s % kWays]; }
  // Age in ms; a stamp slightly ahead of now (callers with clocks read at different
  // moments) counts as age 0.
  static uint32_t age_of(const Entry& e, uint32_t now_ms) {
    int32_t d = int32_t(now_ms - e.stamp);
    return d < 0 ? 0 : uint32_t(d);
  }
  bool expired(const Entry& e, uint32_t now_ms) const { return age_of(e, now_ms) >= age_ms_; }
  void erase(Entry& e);

  uint32_t capacity_;
  uint32_t per_port_limit_;
  uint32_t age_ms_;
  uint64_t seed_;
  uint32_t bucket_mask_;
  uint32_t slot_mask_;
  uint32_t size_ = 0;
  uint32_t sweep_ = 0;  // next slot age() looks at
  std::unique_ptr<Bucket[]> buckets_;
  std::unique_ptr<uint32_t[]> port_count_;  // entries per port id
  FdbCounters counters_;
};

}  // namespace vnet::sw
