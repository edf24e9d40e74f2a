// PackedDriverQueue: the driver (front-end) side of a packed virtqueue (virtio 1.2
// section 2.8), for tests and benchmarks, the sibling of DriverQueue. It lays the
// descriptor ring and the two event suppression areas out in memory the caller
// provides, adds chains (direct or one indirect descriptor) with the first descriptor's
// flags written last, publishes them, decides whether the device wants a kick, and reaps
// used descriptors (skipping each chain's descriptor count, 2.8.6). It trusts the device
// only as far as a test needs: a used id out of range or not in flight is counted.
#pragma once

#include <linux/virtio_ring.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "virtio/device_queue.h"
#include "virtio/driver_queue.h"

namespace vnet::virtio {

class PackedDriverQueue {
 public:
  // Bytes of the rings of a queue of `size` descriptors: the descriptor ring, then the
  // driver and the device event suppression areas (4 bytes each), 16-byte aligned start.
  static size_t ring_bytes(uint16_t size) { return 16ULL * size + 8; }

  // Lays out and zeroes the rings at `host`; `size` in [1, 32768].
  void init(uint16_t size, void* host, uint64_t gpa, uint64_t uva, bool event_idx);
  // The QueueConfig a front end sends (base: position 0, wrap counter 1, as DPDK and
  // QEMU start a packed ring).
  QueueConfig config() const;

  // Adds a chain of `out` device-readable then `in` device-writable buffers. Returns
  // its buffer id, or -1 when there are not enough free descriptors. Visible at publish().
  int add(const Buf* out, uint32_t n_out, const Buf* in, uint32_t n_in);
  // Same, as one descriptor pointing at an indirect table the caller provides.
  int add_indirect(const Buf* out, uint32_t n_out, const Buf* in, uint32_t n_in,
                   vring_packed_desc* table_host, uint64_t table_gpa);
  // Makes everything added since the last publish available: the first descriptor of
  // each chain gets its flags (release), the earliest chain last.
  void publish();
  // After publish(): does the device want a kick (device event suppression area)?
  bool should_kick();
  // Reaps one used descriptor and frees its chain. False when none is pending (or the
  // next used descriptor is bad: counted in bad_used(), and reaping stops there).
  bool reap(Used& u);
  // For a driver that re-posts the same buffers (vnet-traffic), as DriverQueue's:
  // reap_keep() reaps but keeps the chain's id (and its one descriptor) owned by the
  // caller; repost(id) makes a kept one-descriptor chain available again at the next
  // position. repost() of an id that is not kept, or of a longer chain, is refused.
  bool reap_keep(Used& u);
  bool repost(uint16_t id);
  // A used descriptor is waiting at the next used position.
  bool has_used() const;
  // Driver event suppression: ask for used notifications (with EVENT_IDX: at the next
  // used position) or stop asking.
  void enable_interrupts();
  void disable_interrupts();

  uint16_t size() const { return size_; }
  uint16_t num_free() const { return num_free_; }
  // Descriptors the device holds (published or added, not yet reaped).
  uint16_t in_flight() const { return uint16_t(size_ - num_free_); }
  uint16_t num_kept() const { return num_kept_; }
  uint64_t bad_used() const { return bad_used_; }
  // Raw access, for tests that build hostile rings.
  vring_packed_desc* desc() const { return desc_; }
  vring_packed_desc_event* driver_event() const { return driver_event_; }
  vring_packed_desc_event* device_event() const { return device_event_; }
  uint16_t next_avail() const { return next_avail_; }
  bool avail_wrap() const { return avail_wrap_; }
  // Flags an available descriptor carries in the current lap (AVAIL = wrap, USED = !wrap).
  uint16_t avail_flags() const { return avail_flags(avail_wrap_); }
  static uint16_t avail_flags(bool wrap) {
    return uint16_t(wrap ? 1u << VRING_PACKED_DESC_F_AVAIL : 1u << VRING_PACKED_DESC_F_USED);
  }

 private:
  int alloc_id(uint16_t ndesc);
  // The next used descriptor's id (checked: in range, in flight), or -1.
  int next_used(uint32_t* len);
  // Writes descriptor `i` of a chain at next_avail_ (the first one's flags are kept
  // for publish()) and advances.
  void put(const vring_packed_desc& d, bool first);

  uint16_t size_ = 0;
  bool event_idx_ = false;
  vring_packed_desc* desc_ = nullptr;
  vring_packed_desc_event* driver_event_ = nullptr;
  vring_packed_desc_event* device_event_ = nullptr;
  uint64_t gpa_ = 0, uva_ = 0;
  uint16_t next_avail_ = 0;
  bool avail_wrap_ = true;
  uint16_t next_used_ = 0;
  bool used_wrap_ = true;
  uint16_t kicked_ = 0;  // next_avail_ | wrap << 15 at the last should_kick()
  uint16_t num_free_ = 0;
  std::vector<uint16_t> free_ids_;        // stack of free buffer ids
  std::vector<uint16_t> chain_n_;         // descriptors of the chain with id i (0: free)
  std::vector<vring_packed_desc> first_;  // chain i's first descriptor (for repost)
  std::vector<uint8_t> kept_;             // 1: chain i was reaped by reap_keep()
  uint16_t num_kept_ = 0;
  struct Pending {
    uint16_t pos, flags;
  };
  std::vector<Pending> pending_;  // first descriptors waiting for publish()
  uint64_t bad_used_ = 0;
};

}  // namespace vnet::virtio
