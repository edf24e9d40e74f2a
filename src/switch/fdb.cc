// Fdb: hashing, learning with bounded eviction, lookup, incremental ageing.
#include "switch/fdb.h"

#include <algorithm>
#include <bit>

namespace vnet::sw {

Fdb::Fdb(const FdbConfig& cfg)
    : capacity_(std::max<uint32_t>(cfg.capacity, 1)),
      per_port_limit_(cfg.per_port_limit),
      age_ms_(uint32_t(std::clamp<uint64_t>(cfg.age_ns / 1'000'000, 1, kMaxAgeNs / 1'000'000 - 1))),
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

void Fdb::erase(Entry& e) {
  --port_count_[e.port];
  --size_;
  e.port = 0;
}

Fdb::Learn Fdb::learn(Mac mac, uint16_t vlan, uint16_t port, uint64_t now_ns) {
  if (port == 0) return Learn::kInvalid;
  const uint64_t key = make_key(mac, vlan);
  const uint32_t now = to_ms(now_ns);
  uint32_t b[2];
  buckets(key, &b[0], &b[1]);
  Entry* window[2 * kWays];
  for (uint32_t i = 0; i < 2 * kWays; ++i) window[i] = &buckets_[b[i / kWays]].e[i % kWays];

  // Known key: refresh, move, or (if it expired) drop it and learn it anew below.
  for (Entry* e : window) {
    if (e->port == 0 || e->key != key) continue;
    if (expired(*e, now)) {
      erase(*e);
      counters_.aged.add();
      break;
    }
    if (e->stamp != now) e->stamp = now;  // most frames of a flow: no store, line stays clean
    if (e->port == port) return Learn::kRefreshed;
    if (per_port_limit_ && port_count_[port] >= per_port_limit_) {
      // The station left its old port; it may not be learned on this one.
      erase(*e);
      counters_.limited.add();
      return Learn::kRefused;
    }
    --port_count_[e->port];
    ++port_count_[port];
    e->port = port;
    counters_.moved.add();
    return Learn::kMoved;
  }

  // New key. Reclaim expired slots of the window first: they are garbage anyway.
  uint32_t free_in[2] = {0, 0};
  Entry* free_slot[2] = {nullptr, nullptr};
  for (uint32_t i = 0; i < 2 * kWays; ++i) {
    Entry* e = window[i];
    if (e->port != 0 && expired(*e, now)) {
      erase(*e);
      counters_.aged.add();
    }
    if (e->port == 0) {
      ++free_in[i / kWays];
      free_slot[i / kWays] = e;
    }
  }

  Entry* target = nullptr;
  const bool at_limit = per_port_limit_ && port_count_[port] >= per_port_limit_;
  const bool no_room = size_ >= capacity_ || (free_in[0] == 0 && free_in[1] == 0);
  if (at_limit || no_room) {
    if (at_limit) counters_.limited.add();
    if (no_room) counters_.full.add();
    // Victim: an entry of the learning port if at its limit, else of a port holding at
    // least as many entries as the learning port; the heaviest port first, then the oldest.
    const uint32_t mine = port_count_[port];
    Entry* victim = nullptr;
    uint32_t victim_count = 0, victim_age = 0;
    for (Entry* e : window) {
      if (e->port == 0) continue;
      uint32_t count = port_count_[e->port];
      if (at_limit ? e->port != port : count < mine) continue;
      uint32_t a = age_of(*e, now);
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

  target->key = key;
  target->stamp = now;
  target->port = port;
  ++port_count_[port];
  ++size_;
  counters_.learned.add();
  return Learn::kLearned;
}

uint16_t Fdb::lookup(Mac mac, uint16_t vlan, uint64_t now_ns) const {
  const uint64_t key = make_key(mac, vlan);
  uint32_t b1, b2;
  buckets(key, &b1, &b2);
  const uint32_t now = to_ms(now_ns);
  for (uint32_t bi : {b1, b2}) {
    for (const Entry& e : buckets_[bi].e) {
      if (e.key == key && e.port != 0) return expired(e, now) ? 0 : e.port;
    }
  }
  return 0;
}

bool Fdb::remove(Mac mac, uint16_t vlan) {
  const uint64_t key = make_key(mac, vlan);
  uint32_t b1, b2;
  buckets(key, &b1, &b2);
  for (uint32_t bi : {b1, b2}) {
    for (Entry& e : buckets_[bi].e) {
      if (e.key == key && e.port != 0) {
        erase(e);
        return true;
      }
    }
  }
  return false;
}

uint32_t Fdb::age(uint64_t now_ns, uint32_t budget) {
  const uint32_t now = to_ms(now_ns);
  budget = std::min(budget, slot_mask_ + 1);
  uint32_t removed = 0;
  for (uint32_t i = 0; i < budget; ++i) {
    Entry& e = slot(sweep_);
    sweep_ = (sweep_ + 1) & slot_mask_;
    if (e.port != 0 && expired(e, now)) {
      erase(e);
      ++removed;
    }
  }
  if (removed) counters_.aged.add(removed);
  return removed;
}

uint32_t Fdb::remove_port(uint16_t port) {
  if (port == 0 || port_count_[port] == 0) return 0;
  uint32_t removed = 0;
  for (uint32_t s = 0; s <= slot_mask_ && port_count_[port] > 0; ++s) {
    Entry& e = slot(s);
    if (e.port == port) {
      erase(e);
      ++removed;
    }
  }
  return removed;
}

void Fdb::flush() {
  for (uint32_t s = 0; s <= slot_mask_; ++s) slot(s) = Entry{0, 0, 0, 0};
  std::fill_n(port_count_.get(), kMaxPorts, 0u);
  size_ = 0;
  sweep_ = 0;
}

}  // namespace vnet::sw
