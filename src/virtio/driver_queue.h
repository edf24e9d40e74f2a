// DriverQueue: the driver (front-end) side of a split virtqueue, for tests, the
// benchmark traffic generator and container ports. It lays the three rings out in
// memory the caller provides (which the device sees at guest address `gpa` and at
// front-end virtual address `uva`), adds buffer chains, publishes the avail index,
// decides whether the device wants a kick, and reaps used elements. It trusts the
// device only as far as a test needs: a used id out of range is reported, not followed.
#pragma once

#include <linux/virtio_ring.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "virtio/device_queue.h"

namespace vnet::virtio {

// One buffer as the device will see it: a guest physical address and a length.
struct Buf {
  uint64_t gpa = 0;
  uint32_t len = 0;
};

struct Used {
  uint16_t id = 0;
  uint32_t len = 0;
};

class DriverQueue {
 public:
  // Bytes the rings of a queue of `size` descriptors need (desc table, avail ring with
  // used_event, padding to 4, used ring with avail_event), starting 16-byte aligned.
  static size_t ring_bytes(uint16_t size);

  // Lays out and zeroes the rings at `host` (16-byte aligned, ring_bytes(size) long).
  // `size` must be a power of two in [1, 32768].
  void init(uint16_t size, void* host, uint64_t gpa, uint64_t uva, bool event_idx);

  // The QueueConfig a vhost-user front end would send (SET_VRING_NUM/ADDR/BASE).
  QueueConfig config() const;

  // Adds a chain of device-readable `out` buffers followed by device-writable `in`
  // buffers (direct descriptors). Returns the head index, or -1 when there are not
  // enough free descriptors. The chain becomes visible to the device at publish().
  int add(const Buf* out, uint32_t n_out, const Buf* in, uint32_t n_in);
  // Same, as one descriptor pointing at an indirect table the caller provides (host
  // pointer + guest address, room for n_out + n_in descriptors).
  int add_indirect(const Buf* out, uint32_t n_out, const Buf* in, uint32_t n_in,
                   vring_desc* table_host, uint64_t table_gpa);
  // Makes everything added since the last publish available (one release store).
  void publish();
  // After publish(): does the device want a kick (avail_event with EVENT_IDX, else
  // !VRING_USED_F_NO_NOTIFY)? Covers every chain published since the last call.
  bool should_kick();

  // Reaps one used element and frees its descriptors. False when none is pending.
  // A used id that is out of range or not in flight counts in bad_used() and is skipped.
  bool reap(Used& u);
  // For a driver that re-posts the same buffers (the benchmark generator and sink):
  // reap_keep() reaps like reap() but keeps the chain, its descriptors (buffers,
  // lengths, flags) as they are and owned by the caller; repost(head) makes such a kept
  // chain available again without writing a descriptor, and writes the avail ring entry
  // only when it holds another head. Chains re-posted in the order they were used (an
  // in-order device) then change nothing in the device's view of the rings but the avail
  // index: the descriptor table and the avail ring stay clean, shared cache lines.
  // repost() of a head that is not kept is refused (false).
  bool reap_keep(Used& u);
  bool repost(uint16_t head);
  // A used element is waiting (used->idx moved past what was reaped).
  bool has_used() const { return __atomic_load_n(&used_->idx, __ATOMIC_ACQUIRE) != last_used_; }
  // Asks for (or stops asking for) interrupts: used_event / VRING_AVAIL_F_NO_INTERRUPT.
  void enable_interrupts();
  void disable_interrupts();

  uint16_t size() const { return size_; }
  uint16_t num_free() const { return num_free_; }
  // Chains the device holds (published or added, not yet reaped); kept chains are not.
  uint16_t in_flight() const { return uint16_t(size_ - num_free_ - num_kept_); }
  uint16_t num_kept() const { return num_kept_; }
  uint64_t bad_used() const { return bad_used_; }
  // Raw ring access, for tests that build hostile rings.
  vring_desc* desc() const { return desc_; }
  vring_avail* avail() const { return avail_; }
  vring_used* used() const { return used_; }
  uint16_t avail_idx() const { return avail_idx_; }

 private:
  int alloc_chain(uint32_t n);  // head of n linked free descriptors, or -1
  // The next valid used element's chain head (bad ids counted and skipped), or -1.
  int next_used(uint32_t* len);
  void put_avail(uint16_t head);

  uint16_t size_ = 0;
  bool event_idx_ = false;
  vring_desc* desc_ = nullptr;
  vring_avail* avail_ = nullptr;
  vring_used* used_ = nullptr;
  uint64_t gpa_ = 0, uva_ = 0;
  uint8_t* host_ = nullptr;
  uint16_t avail_idx_ = 0;    // shadow of avail->idx
  uint16_t kicked_idx_ = 0;   // avail idx at the last should_kick()
  uint16_t last_used_ = 0;    // next used entry to reap
  uint16_t used_shadow_ = 0;  // used->idx as last read (re-read only when caught up)
  // The free list is a FIFO: chains completed in order are reused in order, so the
  // descriptors of consecutive chains share cache lines (as an in-order driver's do).
  uint16_t free_head_ = 0, free_tail_ = 0;
  uint16_t num_free_ = 0;
  std::vector<uint16_t> next_;     // our own copy of the free list / chain links
  std::vector<uint16_t> chain_n_;  // descriptors in the chain whose head is i (0: free)
  std::vector<uint8_t> kept_;      // 1: the chain at head i was reaped by reap_keep()
  uint16_t num_kept_ = 0;
  uint64_t bad_used_ = 0;
};

}  // namespace vnet::virtio
