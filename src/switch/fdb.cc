// Fdb: hashing, learning with bounded eviction, lock-free lookup and refresh (per-bucket
// seqlock), incremental ageing.
#include "switch/fdb.h"

#include <algorithm>
#include <bit>

#include "common/cpu.h"

namespace vnet::sw {

Fdb::Fdb(const FdbConfig& cfg)
    : capacity_(std::max<uint32_t>(cfg.capacity, 1)),
      per_port_limit_(cfg.per_port_limit),
      age_ms_(uint32_t(std::clamp<uint64_t>(cfg.age_ns / 1'000'000, 1, kMaxAgeNs / 1'000'000 - 1))),
      refresh_ms_(std::clamp<uint32_t>(age_ms_ / 32, 1, 1000)),
      seed_(cfg.hash_seed) {
  // Load factor at most 80% at full capacity, at least two buckets.
  uint64_t want = uint64_t(capacity_) + capacity_ / 4;
  uint64_t slots = std::max<uint64_t>(std::bit_ceil(want), 2 * kWays);
  slot_mask_ = uint32_t(slots - 1);
  bucket_mask_ = uint32_t(slots / kWays - 1);
  buckets_.reset(new Bucket[slots / kWays]);
  port_count_.reset(new uint32_t[kMaxPorts]);
  flush();
}

// splitmix64's finalizer over the seeded key: every input bit reaches every output bit.
uint64_t Fdb::hash(uint64_t key) const {
  uint64_t z = key ^ seed_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void Fdb::buckets(uint64_t key, uint32_t* b1, uint32_t* b2) const {
  uint64_t h = hash(key);
  *b1 = uint32_t(h) & bucket_mask_;
  // XOR with a non-zero value below the bucket count: a different bucket, in range.
  *b2 = *b1 ^ ((uint32_t(h >> 32) & bucket_mask_) | 1);
}

// Seqlock writer: the sequence goes odd before any entry store (those are release
// stores) and even again after them (a release store).
void Fdb::write_begin(Bucket& b) {
  std::atomic<uint16_t>& seq = b.e[0].seq;
  seq.store(uint16_t(seq.load(std::memory_order_relaxed) + 1), std::memory_order_relaxed);
}

void Fdb::write_end(Bucket& b) {
  std::atomic<uint16_t>& seq = b.e[0].seq;
  seq.store(uint16_t(seq.load(std::memory_order_relaxed) + 1), std::memory_order_release);
}

Fdb::Found Fdb::find(uint64_t key, uint32_t b1, uint32_t b2) const {
  for (uint32_t bi : {b1, b2}) {
    Bucket& b = buckets_[bi];
    for (;;) {
      const uint16_t s1 = b.e[0].seq.load(std::memory_order_acquire);
      if (s1 & 1) {
        cpu_relax();
        continue;
      }
      Found f;
      for (Entry& e : b.e) {
        if (ld(e.key) != key) continue;
        const uint16_t port = ld(e.port);
        if (port == 0) continue;
        f = Found{true, port, ld(e.stamp), &e};
        break;
      }
      // After the entry loads (acquire): a writer changed the bucket meanwhile?
      if (b.e[0].seq.load(std::memory_order_relaxed) != s1) continue;
      if (f.found) return f;
      break;
    }
  }
  return Found{};
}

void Fdb::erase(Entry& e) {
  --port_count_[ld(e.port)];
  st(size_, ld(size_) - 1);
  st(e.port, 0);
}

Fdb::Learn Fdb::learn(Mac mac, uint16_t vlan, uint16_t port, uint64_t now_ns) {
  if (port == 0) return Learn::kInvalid;
  const uint64_t key = make_key(mac, vlan);
  const uint32_t now = to_ms(now_ns);
  uint32_t b1, b2;
  buckets(key, &b1, &b2);
  // Steady state, without the lock: the station is known on this port.
  Found f = find(key, b1, b2);
  if (f.found && f.port == port && !expired(f.stamp, now)) {
    if (age_of(f.stamp, now) >= refresh_ms_) st(f.e->stamp, now);
    return Learn::kRefreshed;
  }
  std::lock_guard lk(mu_);
  Bucket* bk[2] = {&buckets_[b1], &buckets_[b2]};
  write_begin(*bk[0]);
  write_begin(*bk[1]);
  Learn r = learn_locked(key, port, now, b1, b2);
  write_end(*bk[1]);
  write_end(*bk[0]);
  return r;
}

Fdb::Learn Fdb::learn_locked(uint64_t key, uint16_t port, uint32_t now, uint32_t b1, uint32_t b2) {
  const uint32_t b[2] = {b1, b2};
  Entry* window[2 * kWays];
  for (uint32_t i = 0; i < 2 * kWays; ++i) window[i] = &buckets_[b[i / kWays]].e[i % kWays];

  // Known key: refresh, move, or (if it expired) drop it and learn it anew below.
  for (Entry* e : window) {
    if (ld(e->port) == 0 || ld(e->key) != key) continue;
    if (expired(ld(e->stamp), now)) {
      erase(*e);
      counters_.aged.add();
      break;
    }
    if (ld(e->stamp) != now) st(e->stamp, now);
    const uint16_t old = ld(e->port);
    if (old == port) return Learn::kRefreshed;
    if (per_port_limit_ && port_count_[port] >= per_port_limit_) {
      // The station left its old port; it may not be learned on this one.
      erase(*e);
      counters_.limited.add();
      return Learn::kRefused;
    }
    --port_count_[old];
    ++port_count_[port];
    st(e->port, port);
    counters_.moved.add();
    return Learn::kMoved;
  }

  // New key. Reclaim expired slots of the window first: they are garbage anyway.
  uint32_t free_in[2] = {0, 0};
  Entry* free_slot[2] = {nullptr, nullptr};
  for (uint32_t i = 0; i < 2 * kWays; ++i) {
    Entry* e = window[i];
    if (ld(e->port) != 0 && expired(ld(e->stamp), now)) {
      erase(*e);
      counters_.aged.add();
    }
    if (ld(e->port) == 0) {
      ++free_in[i / kWays];
      free_slot[i / kWays] = e;
    }
  }

  Entry* target = nullptr;
  const bool at_limit = per_port_limit_ && port_count_[port] >= per_port_limit_;
  const bool no_room = ld(size_) >= capacity_ || (free_in[0] == 0 && free_in[1] == 0);
  if (at_limit || no_room) {
    if (at_limit) counters_.limited.add();
    if (no_room) counters_.full.add();
    // Victim: an entry of the learning port if at its limit, else of a port holding at
    // least as many entries as the learning port; the heaviest port first, then the oldest.
    const uint32_t mine = port_count_[port];
    Entry* victim = nullptr;
    uint32_t victim_count = 0, victim_age = 0;
    for (Entry* e : window) {
      const uint16_t ep = ld(e->port);
      if (ep == 0) continue;
      uint32_t count = port_count_[ep];
      if (at_limit ? ep != port : count < mine) continue;
      uint32_t a = age_of(ld(e->stamp), now);
      if (!victim || count > victim_count || (count == victim_count && a > victim_age)) {
        victim = e;
        victim_count = count;
        victim_age = a;
      }
    }
    if (!victim) {
      counters_.refused.add();
      return Learn::kRefused;
    }
    erase(*victim);
    counters_.evicted.add();
    target = victim;
  } else {
    target = free_in[0] >= free_in[1] ? free_slot[0] : free_slot[1];
  }

  st(target->key, key);
  st(target->stamp, now);
  st(target->port, port);
  ++port_count_[port];
  st(size_, ld(size_) + 1);
  counters_.learned.add();
  return Learn::kLearned;
}

uint16_t Fdb::lookup(Mac mac, uint16_t vlan, uint64_t now_ns) const {
  const uint64_t key = make_key(mac, vlan);
  uint32_t b1, b2;
  buckets(key, &b1, &b2);
  Found f = find(key, b1, b2);
  if (!f.found || expired(f.stamp, to_ms(now_ns))) return 0;
  return f.port;
}

bool Fdb::remove(Mac mac, uint16_t vlan) {
  const uint64_t key = make_key(mac, vlan);
  uint32_t b1, b2;
  buckets(key, &b1, &b2);
  std::lock_guard lk(mu_);
  for (uint32_t bi : {b1, b2}) {
    Bucket& b = buckets_[bi];
    for (Entry& e : b.e) {
      if (ld(e.key) == key && ld(e.port) != 0) {
        write_begin(b);
        erase(e);
        write_end(b);
        return true;
      }
    }
  }
  return false;
}

uint32_t Fdb::age(uint64_t now_ns, uint32_t budget) {
  const uint32_t now = to_ms(now_ns);
  std::lock_guard lk(mu_);
  budget = std::min(budget, slot_mask_ + 1);
  uint32_t removed = 0;
  for (uint32_t i = 0; i < budget; ++i) {
    Entry& e = slot(sweep_);
    Bucket& b = buckets_[sweep_ / kWays];
    sweep_ = (sweep_ + 1) & slot_mask_;
    if (ld(e.port) != 0 && expired(ld(e.stamp), now)) {
      write_begin(b);
      erase(e);
      write_end(b);
      ++removed;
    }
  }
  if (removed) counters_.aged.add(removed);
  return removed;
}

uint32_t Fdb::remove_port(uint16_t port) {
  if (port == 0) return 0;
  std::lock_guard lk(mu_);
  uint32_t removed = 0;
  for (uint32_t bi = 0; bi <= bucket_mask_ && port_count_[port] > 0; ++bi) {
    Bucket& b = buckets_[bi];
    for (Entry& e : b.e) {
      if (ld(e.port) != port) continue;
      write_begin(b);
      erase(e);
      write_end(b);
      ++removed;
    }
  }
  return removed;
}

void Fdb::flush() {
  std::lock_guard lk(mu_);
  for (uint32_t bi = 0; bi <= bucket_mask_; ++bi) {
    Bucket& b = buckets_[bi];
    write_begin(b);
    for (Entry& e : b.e) {
      st(e.key, 0);
      st(e.stamp, 0);
      st(e.port, 0);
    }
    write_end(b);
  }
  std::fill_n(port_count_.get(), kMaxPorts, 0u);
  st(size_, 0);
  sweep_ = 0;
}

}  // namespace vnet::sw
