// RxSteering: which RX queue of a multiqueue port a frame goes to. A flow the port's
// peer sent on its TX queue q comes back on RX queue q when that is known and q is
// enabled (what Linux TAP and vhost-net do: one vCPU then handles both directions of
// the flow); any other flow goes to an enabled queue picked from its symmetric flow
// hash (net/flow_hash.h), so frames of one flow keep one queue and flows spread evenly.
//
// Threads: learn() runs on the receive side (any worker polling one of the port's TX
// queues), pick() and set_enabled() on the send side (the holder of the port's send
// lock, or the owner applying a control change). They share only the table, an array
// of relaxed atomics; a lost or stale entry only sends a flow the hash way.
#pragma once

#include <atomic>
#include <cstdint>

#include "net/flow_hash.h"
#include "net/packet.h"

namespace vnet::net {

class RxSteering {
 public:
  static constexpr uint32_t kMaxQueues = 128;
  // Flows remembered: kBuckets sets of kWays entries (one 16-byte group each), the
  // most recently learnt first. A flow is forgotten only when kWays newer flows of its
  // set were learnt after it.
  static constexpr uint32_t kBucketBits = 10;
  static constexpr uint32_t kWays = 4;

  // Send side: the queues that may take frames now (ascending, each < kMaxQueues).
  void set_enabled(const uint32_t* queues, uint32_t n) {
    for (bool& e : enabled_) e = false;
    for (uint32_t i = 0; i < n && i < kMaxQueues; ++i) {
      list_[i] = uint8_t(queues[i]);
      enabled_[queues[i]] = true;
    }
    n_.store(n < kMaxQueues ? n : kMaxQueues, std::memory_order_relaxed);
  }
  // Number of enabled queues (any thread): below 2 nothing needs steering.
  uint32_t enabled_count() const { return n_.load(std::memory_order_relaxed); }

  // Receive side: a frame with flow hash `hash` arrived on TX queue `q`.
  void learn(uint32_t hash, uint32_t q) {
    const uint32_t tag = hash >> kBucketBits;
    const uint32_t e = tag << 8 | (q + 1);
    std::atomic<uint32_t>* set = &table_[(hash & kBucketMask) * kWays];
    uint32_t w = 0;
    for (; w < kWays; ++w) {
      const uint32_t old = set[w].load(std::memory_order_relaxed);
      if ((old >> 8) == tag && (old & 0xff) != 0) break;
    }
    if (w == 0 && set[0].load(std::memory_order_relaxed) == e) return;  // (the common case)
    // A new flow (or a moved one) goes first; the others move down, the oldest drops.
    if (w == kWays) w = kWays - 1;
    for (; w > 0; --w)
      set[w].store(set[w - 1].load(std::memory_order_relaxed), std::memory_order_relaxed);
    set[0].store(e, std::memory_order_relaxed);
  }

  // Send side: the queue for a frame with flow hash `hash`. enabled_count() >= 1.
  uint32_t pick(uint32_t hash) const {
    const uint32_t tag = hash >> kBucketBits;
    const std::atomic<uint32_t>* set = &table_[(hash & kBucketMask) * kWays];
    for (uint32_t w = 0; w < kWays; ++w) {
      const uint32_t e = set[w].load(std::memory_order_relaxed);
      if ((e >> 8) != tag || (e & 0xff) == 0) continue;
      const uint32_t q = (e & 0xff) - 1;
      if (q < kMaxQueues && enabled_[q]) return q;
      break;
    }
    const uint32_t n = n_.load(std::memory_order_relaxed);
    return list_[spread(hash, n)];
  }

  // Index in [0, n) of the enabled queue a flow without a learnt queue takes. The hash
  // is first multiplied by an odd number that depends on n: with plain multiply-shift
  // the index for n/2 queues would be the index for n halved, and every flow of a
  // disabled upper half would land on one queue.
  static uint32_t spread(uint32_t hash, uint32_t n) {
    return hash_to_range(hash * (0x9e3779b1u + 2 * n), n);
  }

  // Forgets every learnt flow (a reset of the port).
  void clear() {
    for (auto& s : table_) s.store(0, std::memory_order_relaxed);
  }

 private:
  static constexpr uint32_t kBucketMask = (1u << kBucketBits) - 1;
  alignas(64) std::atomic<uint32_t> table_[(1u << kBucketBits) * kWays] = {};
  bool enabled_[kMaxQueues] = {};
  uint8_t list_[kMaxQueues] = {};
  std::atomic<uint32_t> n_{0};
};

// Sends pkts[0..n) as one sub-burst per queue (each frame's queue from steering.pick()),
// the frames of each queue in the order they came, so a flow's frames keep their order:
// send(queue, pkts, k) returns the frames delivered. Returns the total delivered.
template <typename Send>
uint32_t send_steered(const RxSteering& steering, Packet* const* pkts, uint32_t n, Send&& send) {
  uint32_t sent = 0;
  for (uint32_t base = 0; base < n; base += kBurst) {
    const uint32_t m = n - base < kBurst ? n - base : kBurst;
    uint8_t sel[kBurst];
    // Frames of one flow often come back to back: the previous frame's queue is reused.
    uint32_t last_hash = 0, last_q = 0, first_q = 0;
    bool one_queue = true;
    for (uint32_t i = 0; i < m; ++i) {
      const Packet* p = pkts[base + i];
      const uint32_t h = p->flow ? p->flow : flow_hash(p->data, p->head_len());
      if (h != last_hash) {
        last_hash = h;  // (a hash is never 0)
        last_q = steering.pick(h);
      }
      sel[i] = uint8_t(last_q);
      if (i == 0) first_q = last_q;
      one_queue &= last_q == first_q;
    }
    if (one_queue) {  // the whole burst to one queue: no sub-bursts
      sent += send(last_q, pkts + base, m);
      continue;
    }
    Packet* sub[kBurst];
    constexpr uint8_t kDone = 0xff;  // (queues are < kMaxQueues = 128)
    for (uint32_t i = 0; i < m; ++i) {
      if (sel[i] == kDone) continue;
      const uint8_t q = sel[i];
      uint32_t k = 0;
      for (uint32_t j = i; j < m; ++j)
        if (sel[j] == q) {
          sub[k++] = pkts[base + j];
          sel[j] = kDone;
        }
      sent += send(uint32_t(q), static_cast<Packet* const*>(sub), k);
    }
  }
  return sent;
}

}  // namespace vnet::net
