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
// lookup() treats an expired entry as a miss even before it is swept. A refresh rewrites
// the stamp only once it is `refresh` old (1 s, or age/32 for short age limits), so the
// buckets of active stations are not written per frame; an entry may thus expire up to
// that much early.
//
// Threading: shared by all workers. lookup() takes no lock and writes nothing: each bucket
// has a sequence number (a seqlock: odd while a writer changes the bucket), the reader
// copies what it needs and retries if the sequence moved, so it never sees a torn entry.
// learn() of a known key on the same port (the steady state) is lock-free too: it stores
// the new stamp (one relaxed 32-bit store, no read-modify-write) when the old one is stale.
// Everything that changes which key sits where (new keys, moves, eviction, ageing,
// removal, flush) takes the writer mutex and bumps the sequences of the buckets it
// changes. A concurrent stamp store may land on a slot that a writer has just reused;
// the new entry then looks a little younger, which is harmless. Counters have one
// writer at a time (the mutex holder) and may be read from any thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

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
  // For callers that share the table (one Forwarder per worker): true for the first
  // caller at or after the due time, which becomes now + interval; false for the rest,
  // so the table is swept at one rate however many workers tick.
  bool claim_sweep(uint64_t now_ns, uint64_t interval_ns) {
    uint64_t due = next_sweep_ns_.load(std::memory_order_relaxed);
    return now_ns >= due && next_sweep_ns_.compare_exchange_strong(due, now_ns + interval_ns,
                                                                   std::memory_order_relaxed);
  }
  // Removes every entry of a port (one pass over the table; control path). Returns count.
  uint32_t remove_port(uint16_t port);
  void flush();

  uint32_t size() const { return size_.load(std::memory_order_relaxed); }
  uint32_t capacity() const { return capacity_; }
  uint32_t per_port_limit() const { return per_port_limit_; }
  uint32_t slots() const { return slot_mask_ + 1; }
  uint32_t port_entries(uint16_t port) const {
    std::lock_guard lk(mu_);
    return port_count_[port];
  }
  uint64_t age_ns() const { return age_ms_ * 1'000'000ULL; }
  FdbCounters& counters() { return counters_; }
  const FdbCounters& counters() const { return counters_; }

  // Calls f(Mac, vlan, port, age_ns) for every live (unexpired) entry.
  // (Control path: holds the writer mutex, so f must not call back into the Fdb.)
  template <typename F>
  void for_each(uint64_t now_ns, F&& f) const {
    for_each_slice(now_ns, 0, slots(), [&](Mac m, uint16_t v, uint16_t p, uint64_t a) {
      f(m, v, p, a);
      return true;
    });
  }

  // Bounded work for dumps in chunks: visits the slots [from, from + max_slots) in
  // table order and calls f(Mac, vlan, port, age_ns) -> bool for each live entry; f
  // returning false ends the slice after that entry. Returns the slot where the next
  // slice starts (slots() when the table is done). Entries learned, moved or removed
  // between slices may be missed or seen twice; the others are seen exactly once.
  // (Holds the writer mutex for the slice: f must not call back into the Fdb.)
  template <typename F>
  uint32_t for_each_slice(uint64_t now_ns, uint32_t from, uint32_t max_slots, F&& f) const {
    std::lock_guard lk(mu_);
    const uint32_t now = to_ms(now_ns);
    const uint32_t end = uint32_t(std::min<uint64_t>(uint64_t(from) + max_slots, slots()));
    for (uint32_t s = from; s < end; ++s) {
      const Entry& e = slot(s);
      const uint16_t port = ld(e.port);
      const uint64_t key = ld(e.key);
      const uint32_t stamp = ld(e.stamp);
      if (port == 0 || expired(stamp, now)) continue;
      if (!f(Mac::from_raw(key), uint16_t(key >> 48), port,
             uint64_t(age_of(stamp, now)) * 1'000'000))
        return s + 1;
    }
    return std::max(end, from);
  }

 private:
  // Fields are atomics, loaded with acquire and stored with release (plain moves on
  // x86). That is the seqlock's ordering without fences (which ThreadSanitizer does not
  // model): a writer's entry stores cannot move before its odd sequence store, and a
  // reader's entry loads cannot move after its second sequence load.
  struct Entry {
    std::atomic<uint64_t> key;    // MAC in bits 0..47, VLAN in 48..63
    std::atomic<uint32_t> stamp;  // last seen, milliseconds (mod 2^32)
    std::atomic<uint16_t> port;   // 0: empty slot
    std::atomic<uint16_t> seq;    // e[0] only: the bucket's sequence (odd: being written)
  };
  static_assert(sizeof(Entry) == 16);
  struct alignas(64) Bucket {
    Entry e[kWays];
  };
  static_assert(sizeof(Bucket) == 64);
  template <typename T>
  static T ld(const std::atomic<T>& a) {
    return a.load(std::memory_order_acquire);
  }
  template <typename T, typename V>
  static void st(std::atomic<T>& a, V v) {
    a.store(T(v), std::memory_order_release);
  }
  // Writer side of a bucket's seqlock (mutex held).
  static void write_begin(Bucket& b);
  static void write_end(Bucket& b);
  // A key's slot as a reader sees it (consistent copy), or found = false.
  struct Found {
    bool found = false;
    uint16_t port = 0;
    uint32_t stamp = 0;
    Entry* e = nullptr;
  };
  Found find(uint64_t key, uint32_t b1, uint32_t b2) const;
  Learn learn_locked(uint64_t key, uint16_t port, uint32_t now, uint32_t b1, uint32_t b2);

  static uint64_t make_key(Mac mac, uint16_t vlan) { return mac.raw() | uint64_t(vlan) << 48; }
  static uint32_t to_ms(uint64_t now_ns) { return uint32_t(now_ns / 1'000'000); }
  uint64_t hash(uint64_t key) const;
  // The two buckets of a key (always different).
  void buckets(uint64_t key, uint32_t* b1, uint32_t* b2) const;
  Entry& slot(uint32_t s) { return buckets_[s / kWays].e[s % kWays]; }
  const Entry& slot(uint32_t s) const { return buckets_[s / kWays].e[s % kWays]; }
  // Age in ms; a stamp slightly ahead of now (callers with clocks read at different
  // moments) counts as age 0.
  static uint32_t age_of(uint32_t stamp, uint32_t now_ms) {
    int32_t d = int32_t(now_ms - stamp);
    return d < 0 ? 0 : uint32_t(d);
  }
  bool expired(uint32_t stamp, uint32_t now_ms) const { return age_of(stamp, now_ms) >= age_ms_; }
  void erase(Entry& e);  // mutex held, inside write_begin/write_end of its bucket

  uint32_t capacity_;
  uint32_t per_port_limit_;
  uint32_t age_ms_;
  uint32_t refresh_ms_;  // a refresh stores a new stamp only when the old one is this old
  uint64_t seed_;
  uint32_t bucket_mask_;
  uint32_t slot_mask_;
  std::unique_ptr<Bucket[]> buckets_;

  // Writer state: under mu_ (size_ is also read without it).
  mutable std::mutex mu_;
  std::atomic<uint32_t> size_{0};
  uint32_t sweep_ = 0;                      // next slot age() looks at
  std::atomic<uint64_t> next_sweep_ns_{0};  // claim_sweep(): when the next sweep is due
  std::unique_ptr<uint32_t[]> port_count_;  // entries per port id
  FdbCounters counters_;
};

}  // namespace vnet::sw
