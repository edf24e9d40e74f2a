// DeviceQueue: the device side of a split virtqueue (virtio 1.2 section 2.7).
// Pops validated descriptor chains from the available ring, pushes used elements,
// publishes the used index once per burst, and decides whether the driver wants a
// notification (EVENT_IDX or the flags). Guest memory is hostile: each descriptor is
// read once into a local copy, every index is checked at full width, chain walks are
// bounded by the queue size. A structural error breaks the queue (it stops; a counter
// and reason say why). Knows nothing of sockets, eventfds or packets.
#pragma once

#include <linux/virtio_ring.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/counter.h"
#include "common/cpu.h"
#include "common/log.h"
#include "common/result.h"
#include "memory/dirty_log.h"
#include "memory/guest_memory.h"

namespace vnet::virtio {

// What vhost-user SET_VRING_NUM / SET_VRING_ADDR / SET_VRING_BASE give us.
struct QueueConfig {
  uint16_t size = 0;       // number of descriptors, power of 2, at most 32768
  uint64_t desc_addr = 0;  // front-end virtual addresses of the three rings
  uint64_t avail_addr = 0;
  uint64_t used_addr = 0;
  // First available index to process. Packed rings (VIRTIO_F_RING_PACKED): bits 0-14
  // the descriptor ring position, bit 15 the driver ring wrap counter, as vhost-user's
  // SET_VRING_BASE / GET_VRING_BASE carry them; desc/avail/used are then the descriptor
  // ring, the driver and the device event suppression areas (virtio 1.2 section 2.8).
  uint16_t avail_base = 0;
  bool event_idx = false;  // VIRTIO_RING_F_EVENT_IDX negotiated
  bool indirect = false;   // VIRTIO_RING_F_INDIRECT_DESC negotiated
  bool packed = false;     // VIRTIO_F_RING_PACKED negotiated: a PackedDeviceQueue
  bool in_order = false;   // VIRTIO_F_IN_ORDER negotiated (the packed ring uses it, 2.8.20)
  // vhost-user SET_VRING_ADDR's VHOST_VRING_F_LOG and log_guest_addr: the guest physical
  // address at which the used ring (packed: the device event suppression area) is
  // logged. Without the flag it is found from the memory table.
  bool log_used = false;
  uint64_t log_guest_addr = 0;
};

// Where a queue's device-written ring memory is in guest physical space, for the dirty
// log: [gpa, gpa + len) of up to two areas (split: the used ring; packed: the descriptor
// ring and the device event suppression area). len 0: not logged.
struct RingLogAreas {
  uint64_t gpa[2] = {0, 0};
  uint64_t len[2] = {0, 0};
  void mark(memory::DirtyLog& log) const {
    log.mark(gpa[0], len[0]);
    log.mark(gpa[1], len[1]);
  }
};

// A queue's dirty logging (live migration), the same for both ring layouts: the log the
// ring memory is marked in, the one RX buffers are (the same, or nullptr under the test
// knob), and where the ring memory is.
struct QueueDirtyLog {
  memory::DirtyLog* ring = nullptr;
  memory::DirtyLog* buffers = nullptr;
  RingLogAreas areas;  // found at start()
  void set(memory::DirtyLog* log, bool with_buffers) {
    ring = log;
    buffers = with_buffers ? log : nullptr;
  }
  // Host range [p, p + len) of `mem`, written by the device, marked (buffers set).
  void write(const memory::GuestMemory* mem, const void* p, uint64_t len) const {
    uint64_t gpa;
    if (mem && mem->host_to_gpa(p, len, &gpa)) buffers->mark(gpa, len);
  }
  [[gnu::noinline, gnu::cold]] void mark_ring() const { areas.mark(*ring); }
};

// The look-ahead of both ring layouts: the first two lines of a buffer the device will
// touch soon. An RX buffer (writable): own the lines before we write them, except a line
// that holds only the first `write_kept` bytes, which the device writes only where they
// changed (set_write_kept): that one is read, and stays shared with the driver. A TX
// buffer: read.
[[gnu::always_inline]] inline void prefetch_buffer_lines(const uint8_t* p, bool writable,
                                                         uint32_t write_kept) {
  if (writable) {
    const uint8_t* w = p + write_kept;
    if ((reinterpret_cast<uintptr_t>(p) ^ reinterpret_cast<uintptr_t>(w)) >= 64)
      __builtin_prefetch(p, 0, 3);
    prefetch_for_write(w);
    prefetch_for_write(w + 63);
  } else {
    __builtin_prefetch(p, 0, 3);
    __builtin_prefetch(p + 64, 0, 3);
  }
}

// One descriptor chain, as host memory pieces. Device-readable pieces come first
// (segs[0, n_out)), device-writable ones after (segs[n_out, n_out + n_in)). A
// descriptor that crosses a region boundary becomes several pieces.
struct Chain {
  static constexpr uint32_t kMaxSegs = 256;
  uint16_t head = 0;
  uint32_t n_out = 0, n_in = 0;
  uint64_t out_len = 0, in_len = 0;  // total bytes of each kind
  iovec segs[kMaxSegs];
  const iovec* in_segs() const { return segs + n_out; }
};

enum class PopStatus { kOk, kEmpty, kBroken };

struct QueueCounters {
  Counter chains;      // chains popped
  Counter bad_chains;  // chains completed with length 0 because a descriptor was bad
  Counter broken;      // times the queue was declared broken
};

class DeviceQueue {
 public:
  // Validates the layout (size a power of 2 in [1, 32768]; desc aligned 16, avail 2,
  // used 4; each ring wholly inside one region) and starts the queue at avail_base.
  Status start(std::shared_ptr<const memory::GuestMemory> mem, const QueueConfig& cfg);
  // Stops the queue; last_avail_idx() is then what GET_VRING_BASE returns.
  void stop();
  bool started() const { return started_; }
  bool broken() const { return broken_; }
  const char* broken_reason() const { return broken_reason_; }
  // Where bad chains are logged: the owner's limiter (its port's budget) and a label
  // naming the queue ("port vm1 queue 1"). Without one, a limiter shared by all queues.
  void set_log(RateLimit* limit, std::string label) {
    log_limit_ = limit;
    log_label_ = std::move(label);
  }
  RateLimit& log_limit() const;
  const std::string& log_label() const { return log_label_; }
  uint16_t last_avail_idx() const { return last_avail_; }
  uint16_t size() const { return size_; }

  // Chains the driver has made available and we have not popped (0 when stopped or
  // broken). An avail index more than `size` ahead breaks the queue.
  uint16_t available();
  // Pops the next chain into `c`. kEmpty when nothing is available. A chain whose
  // descriptors are bad but whose head is valid is completed with length 0, counted
  // in bad_chains, and the next chain is tried. kBroken when the ring itself is bad.
  // Zero-length descriptors are allowed and contribute no piece.
  PopStatus pop(Chain& c);
  // A chain of one direct, non-empty descriptor inside one region: what drivers that
  // post one buffer per frame (DPDK's virtio PMD, Linux's for small RX buffers) give.
  struct Direct {
    uint8_t* host;
    uint32_t len;
    uint16_t head;
    bool writable;
  };
  // pop() for that usual chain, without a call and without filling a Chain: true with
  // the next chain in `d` when the look-ahead found it to be one (the look-ahead
  // translated and bounds-checked it then); false, nothing taken, when it did not or
  // nothing is available: pop() then decides. Inline: two per forwarded frame.
  bool pop_direct(Direct& d) {
    Ahead& a = ahead_[last_avail_ & (kAheadSlots - 1)];
    if (a.tag != (uint32_t(last_avail_) | kAheadValid)) return false;
    a.tag = 0;  // taken: after a rewind the chain is read again
    d = Direct{a.host, a.len, a.head, (a.flags & VRING_DESC_F_WRITE) != 0};
    advance();
    return true;
  }
  // Adds a used element; the driver sees it only after publish(). An element equal to
  // the one already in that slot is not written again: a driver that reuses its
  // descriptors in order gets the same element as a lap ago, so its line is left clean,
  // the driver's cached copy stays valid and the line does not cross between the cores.
  // Inline: two calls per forwarded frame (TX completion and RX) from net/.
  void push(uint16_t head, uint32_t written) {
    vring_used_elem& e = used_->ring[used_idx_ & (size_ - 1)];
    if (__atomic_load_n(&e.id, __ATOMIC_RELAXED) != head)
      __atomic_store_n(&e.id, uint32_t(head), __ATOMIC_RELAXED);
    if (__atomic_load_n(&e.len, __ATOMIC_RELAXED) != written)
      __atomic_store_n(&e.len, written, __ATOMIC_RELAXED);
    ++used_idx_;
  }
  // One release store of used->idx for everything pushed since the last publish.
  void publish();

  // Live migration (vhost-user VHOST_F_LOG_ALL): while `log` is set, every guest page
  // the device writes is marked in it after the write: the used ring by publish() and
  // the notification calls, RX buffers by the caller through log_write(). nullptr: off.
  // The caller keeps the log alive while it is set; kept across stop() and start().
  // `buffers` false leaves the RX buffers unmarked (logging() false): a test-only knob
  // that shows a migration test can catch what the marks prevent.
  void set_dirty_log(memory::DirtyLog* log, bool buffers = true) { dlog_.set(log, buffers); }
  bool logging() const { return dlog_.buffers != nullptr; }
  // Marks host range [p, p + len) of guest memory, which the caller wrote (logging()).
  void log_write(const void* p, uint64_t len) const { dlog_.write(mem_.get(), p, len); }
  // True when the driver asked to be notified about what was published since the
  // previous call (used_event with EVENT_IDX, else VRING_AVAIL_F_NO_INTERRUPT).
  // Elements pushed but not yet published do not count.
  bool should_notify();
  // should_notify() without its full fence: for a caller that issued one
  // (std::atomic_thread_fence(seq_cst)) after the last publish(), so that one fence
  // serves every queue it checks.
  bool should_notify_fenced();
  // Asks the driver for kicks (avail_event / clears VRING_USED_F_NO_NOTIFY). Returns
  // true if chains became available meanwhile (the caller must poll again).
  bool enable_notifications();
  void disable_notifications();
  // A hint that changes nothing: starts bringing in the lines the next pop() reads
  // first (the avail index and the ring entries from the next one), so that their
  // misses overlap with other work instead of starting the chain of dependent misses
  // (index, entry, descriptor, buffer) late.
  void prefetch_head() const {
    if (!started_) return;
    __builtin_prefetch(&avail_->idx, 0, 3);
    __builtin_prefetch(&avail_->ring[last_avail_ & (size_ - 1)], 0, 3);
  }

  // The device usually leaves the first `n` bytes of each writable buffer as they are
  // (virtio-net writes its header only where it differs from what the buffer holds):
  // the look-ahead then brings their line in shared instead of owned, unless later
  // bytes share it. A hint only; 0 (the default) owns every line it prefetches.
  void set_write_kept(uint32_t n) { write_kept_ = n < 64 ? n : 64; }

  // A point to return to: rewind() forgets every chain popped and every element
  // pushed after mark() (nothing published in between). Used by RX to give back
  // buffers that a frame could not fill.
  struct Mark {
    uint16_t last_avail, used_idx;
  };
  Mark mark() const { return {last_avail_, used_idx_}; }
  // The mark from just before the last pop (after the bad chains that pop completed):
  // rewind() to it gives back that one chain.
  Mark mark_last_pop() const { return {uint16_t(last_avail_ - 1), used_idx_}; }
  void rewind(const Mark& m) {
    last_avail_ = m.last_avail;
    used_idx_ = m.used_idx;
  }

  QueueCounters& counters() { return counters_; }
  const QueueCounters& counters() const { return counters_; }

 private:
  void set_broken(const char* why);
  // Look-ahead hints (2.7.13 chains are consumed in ring order): prefetch the
  // descriptor of the chain `ahead` entries after the next one, and the first buffer
  // of a nearer chain whose descriptor an earlier hint brought in. Hints, except what
  // prefetch_buffer() keeps of a single-descriptor chain (Ahead): validated when read,
  // and trusted then.
  void prefetch_desc(uint16_t ahead);
  void prefetch_buffer(uint16_t ahead);
  // What prefetch_buffer() learnt of a chain that walk_direct() would accept (one
  // direct, non-empty descriptor inside one region), kept for pop_direct(), which pop()
  // tries first: its avail entry and its descriptor are then read once, by the
  // look-ahead, and translated once. `tag` is the avail index | kAheadValid, cleared
  // when pop_direct() takes it; start(), stop() and a broken queue clear them all (a
  // new memory table, a new ring, nothing more to pop). A valid tag thus also means
  // started, not broken, available.
  struct Ahead {
    uint32_t tag;
    uint16_t head;
    uint16_t flags;
    uint32_t len;
    uint8_t* host;
  };
  static constexpr uint32_t kAheadValid = 1u << 16;
  static constexpr uint16_t kAheadSlots = 16;  // more than the buffer look-ahead distance
  void clear_ahead();
  // Where a descriptor's buffer is when it is one direct, non-empty descriptor inside one
  // region (what walk_direct() accepts and prefetch_buffer() keeps); nullptr otherwise.
  uint8_t* direct_host(const vring_desc& d) const {
    if ((d.flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)) || d.len == 0) return nullptr;
    return mem_->gpa_to_host(d.addr, d.len);
  }
  // Takes the entry at last_avail_ and keeps the look-ahead going relative to it.
  void advance();
  // Fills `c` with a single-descriptor chain.
  static void fill(Chain& c, uint16_t head, bool writable, uint32_t len, uint8_t* h) {
    c.head = head;
    c.segs[0] = iovec{h, len};
    c.n_out = !writable;
    c.n_in = writable;
    c.out_len = writable ? 0 : len;
    c.in_len = writable ? len : 0;
  }
  // Walks the chain at `head` into `c`; nullptr when valid, else the reason.
  const char* walk(uint16_t head, Chain& c);
  // The common case of walk() without its checks' register pressure: one direct,
  // non-empty descriptor inside one region. False: take walk().
  bool walk_direct(uint16_t head, Chain& c);
  // A bad chain with a valid head: counted, logged (rate-limited), given back empty.
  void bad_chain(uint16_t head, const char* why);
  // (implementation state is private to device_queue.cc's needs)
  std::shared_ptr<const memory::GuestMemory> mem_;
  vring_desc* desc_ = nullptr;
  vring_avail* avail_ = nullptr;
  vring_used* used_ = nullptr;
  uint16_t size_ = 0;
  uint16_t last_avail_ = 0;      // next avail entry to pop
  uint16_t avail_shadow_ = 0;    // avail->idx as last read (re-read only when caught up)
  uint16_t used_idx_ = 0;        // next used entry to write
  uint16_t published_ = 0;       // used->idx as last stored
  uint16_t signalled_used_ = 0;  // used idx at the last notify decision
  bool signalled_valid_ = false;
  uint32_t write_kept_ = 0;  // set_write_kept
  Ahead ahead_[kAheadSlots] = {};
  bool event_idx_ = false;
  bool indirect_ = false;
  bool started_ = false;
  bool broken_ = false;
  const char* broken_reason_ = "";
  QueueCounters counters_;
  RateLimit* log_limit_ = nullptr;  // (cold: bad chains only)
  std::string log_label_ = "virtqueue";
  // Dirty logging (set_dirty_log): cold, after everything the data path touches, so that
  // the hot members keep their lines.
  QueueDirtyLog dlog_;
};

}  // namespace vnet::virtio
