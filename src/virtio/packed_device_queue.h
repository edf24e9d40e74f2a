// PackedDeviceQueue: the device side of a packed virtqueue (VIRTIO_F_RING_PACKED,
// virtio 1.2 section 2.8), behind the same contract as DeviceQueue (the split ring), so
// that net/ is written once as templates over the queue type. Pops validated chains
// from the descriptor ring (driver ring wrap counter, AVAIL/USED bits), writes one used
// descriptor per chain at the position where the chain started and skips forward by the
// chain's descriptor count (2.8.6), publishes once per burst, and decides notifications
// from the driver event suppression area (2.8.10, 2.8.14).
//
// Order: chains are pushed in the order they were popped (net/ always does so, also
// across mark()/rewind()), so the used position of each push is where the chain it
// completes began, and its descriptor count was recorded when it was popped. pop()
// writes nothing; push() stages the used element in device memory; publish() writes
// the staged elements into the ring (ids and lengths first, then the flags, the first
// one last). A rewind() thus never meets a ring slot it already overwrote.
//
// Guest memory is hostile: each descriptor is read once (the word holding len, id and
// flags with acquire, then the address) into a local copy; a chain walk is bounded by
// the queue size; a descriptor of a chain that is not marked available, or a chain
// longer than the ring, breaks the queue (its extent, and so the next chain, is unknown);
// a chain with a bad buffer, a bad indirect table or an id out of range is completed
// with length 0 and counted. Knows nothing of sockets, eventfds or packets.
#pragma once

#include <linux/virtio_ring.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/counter.h"
#include "common/log.h"
#include "common/result.h"
#include "memory/guest_memory.h"
#include "virtio/device_queue.h"

namespace vnet::virtio {

class PackedDeviceQueue {
 public:
  using Direct = DeviceQueue::Direct;
  // Ring positions with their wrap counter: bits 0-14 the position, bit 15 the counter
  // (the vhost-user SET/GET_VRING_BASE encoding).
  struct Mark {
    uint16_t last_avail, used_idx;
  };
  static constexpr uint16_t kWrapBit = 1u << 15;
  static constexpr uint16_t kAvail = 1u << VRING_PACKED_DESC_F_AVAIL;
  static constexpr uint16_t kUsed = 1u << VRING_PACKED_DESC_F_USED;

  // Validates the layout (size in [1, 32768]; descriptor ring aligned 16, the event
  // suppression areas 4; each inside one region; base position below the size) and
  // starts at cfg.avail_base (position | wrap counter << 15).
  Status start(std::shared_ptr<const memory::GuestMemory> mem, const QueueConfig& cfg);
  void stop();
  bool started() const { return started_; }
  bool broken() const { return broken_; }
  const char* broken_reason() const { return broken_reason_; }
  void set_log(RateLimit* limit, std::string label) {
    log_limit_ = limit;
    log_label_ = std::move(label);
  }
  RateLimit& log_limit() const;
  const std::string& log_label() const { return log_label_; }
  // What GET_VRING_BASE returns: the next position to pop | the driver wrap counter << 15.
  uint16_t last_avail_idx() const { return pack(last_avail_, avail_wrap_); }
  uint16_t size() const { return size_; }

  // 1 when the next descriptor is available, else 0 (a packed ring has no index that
  // would say how many are; callers only test for zero).
  uint16_t available();
  // Same as DeviceQueue::pop (chain.head is the buffer id).
  PopStatus pop(Chain& c);
  // The next chain when it is one available, direct, non-empty descriptor inside one
  // region; false with nothing taken otherwise (pop() then decides). Inline: called
  // once per frame on both sides of a forwarded frame.
  bool pop_direct(Direct& out) {
    if (!started_ || broken_) [[unlikely]]
      return false;
    const vring_packed_desc d = read_ring_desc(&desc_[last_avail_]);
    if (!is_avail(d.flags, avail_wrap_)) return false;
    if ((d.flags & (VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT)) || d.len == 0 || d.id >= size_)
      return false;
    uint8_t* h = mem_->gpa_to_host(d.addr, d.len);
    if (!h || !room_for(1)) [[unlikely]]
      return false;
    take(1);
    look_ahead();
    out = Direct{h, d.len, d.id, (d.flags & VRING_DESC_F_WRITE) != 0};
    return true;
  }
  // Stages the used element of the oldest popped chain not yet pushed (pop order).
  void push(uint16_t id, uint32_t written) {
    Staged& s = staged_[used_idx_];
    s.id = id;
    s.len = written;
    batch_written_ |= written;
    batch_last_id_ = id;
    used_idx_ = uint16_t(used_idx_ + s.ndesc);
    if (used_idx_ >= size_) {
      used_idx_ = uint16_t(used_idx_ - size_);
      used_wrap_ = !used_wrap_;
    }
  }
  // Writes every staged element into the ring; the first one's flags go last, with
  // release, so the driver sees the burst at once (2.8.21: used descriptors complete).
  // With VIRTIO_F_IN_ORDER, a burst in which the device wrote nothing (TX completions)
  // is one used descriptor at the burst's first position with the last buffer's id
  // (2.8.20): the driver skips the whole batch, and the ring lines after the first one
  // are not written back.
  void publish();
  bool should_notify();
  bool should_notify_fenced();
  bool enable_notifications();
  void disable_notifications();
  void prefetch_head() const {
    if (started_) __builtin_prefetch(&desc_[last_avail_], 0, 3);
  }
  // As DeviceQueue::set_write_kept: the first `n` bytes of a writable buffer are
  // usually left as they are, so the look-ahead reads their line instead of owning it.
  void set_write_kept(uint32_t n) { write_kept_ = n < 64 ? n : 64; }

  // As DeviceQueue: dirty logging for live migration. The ring memory the device
  // writes is the descriptor ring (used descriptors) and the device event area.
  // `buffers` false leaves the RX buffers unmarked (logging() false): a test-only knob
  // that shows a migration test can catch what the marks prevent.
  void set_dirty_log(memory::DirtyLog* log, bool buffers = true) { dlog_.set(log, buffers); }
  bool logging() const { return dlog_.buffers != nullptr; }
  void log_write(const void* p, uint64_t len) const { dlog_.write(mem_.get(), p, len); }

  Mark mark() const { return {pack(last_avail_, avail_wrap_), pack(used_idx_, used_wrap_)}; }
  Mark mark_last_pop() const { return {last_pop_, pack(used_idx_, used_wrap_)}; }
  void rewind(const Mark& m) {
    batch_written_ = 1;  // batch_last_id_ may be a rewound element's: write each one
    last_avail_ = uint16_t(m.last_avail & ~kWrapBit);
    avail_wrap_ = m.last_avail & kWrapBit;
    used_idx_ = uint16_t(m.used_idx & ~kWrapBit);
    used_wrap_ = m.used_idx & kWrapBit;
  }

  QueueCounters& counters() { return counters_; }
  const QueueCounters& counters() const { return counters_; }

 private:
  static uint16_t pack(uint16_t pos, bool wrap) { return uint16_t(pos | (wrap ? kWrapBit : 0)); }
  // A descriptor is available when its AVAIL bit equals the wrap counter and its USED
  // bit does not (2.8.1).
  static bool is_avail(uint16_t flags, bool wrap) {
    return ((flags & kAvail) != 0) == wrap && ((flags & kUsed) != 0) != wrap;
  }
  // One used element waiting for publish(), kept at the position where its chain began.
  struct Staged {
    uint16_t id = 0;
    uint16_t ndesc = 1;  // descriptors of the chain that began here (set by pop)
    uint32_t len = 0;
  };
  void set_broken(const char* why);
  void bad_chain(uint16_t id, const char* why);
  // Reads a ring descriptor (16-byte aligned, checked at start) once: the word with
  // len, id and flags with acquire (the flags say whether the rest is the driver's to
  // read, 2.8.21.1), then the address. x86 only (as the worker's TSC clock): an aligned
  // 8-byte load there is one access, so len and id are as new as the flags beside
  // them. On a weakly ordered CPU the flags would need their own acquire load first.
  static vring_packed_desc read_ring_desc(const vring_packed_desc* p) {
    const auto* w = reinterpret_cast<const uint64_t*>(p);
    const uint64_t b = __atomic_load_n(&w[1], __ATOMIC_ACQUIRE);
    const uint64_t a = __atomic_load_n(&w[0], __ATOMIC_RELAXED);
    vring_packed_desc d;
    __builtin_memcpy(&d.addr, &a, 8);
    __builtin_memcpy(&d.len, &b, 8);  // len, id, flags
    return d;
  }
  // False (and the queue broken) when taking `ndesc` more descriptors would hold more
  // than the ring unpublished: the driver reused descriptors it never saw used.
  // A position with its wrap counter (| wrap << 15) as one number in [0, 2 * size):
  // the second lap of the counter follows the first.
  uint32_t linear(uint16_t pos_wrap) const {
    return uint32_t(pos_wrap & ~kWrapBit) + ((pos_wrap & kWrapBit) ? size_ : 0u);
  }
  // Positions from linear `from` forward to linear `to`, modulo the two laps.
  uint32_t distance(uint32_t from, uint32_t to) const {
    return to >= from ? to - from : to + 2u * size_ - from;
  }
  bool room_for(uint16_t ndesc) {
    // Descriptors popped and not yet published: a driver cannot make a descriptor
    // available again before it saw it used (2.8.21.1), so never more than the ring.
    const uint32_t a = uint32_t(last_avail_) + (avail_wrap_ ? size_ : 0u);
    const uint32_t held = distance(linear(published_), a);
    if (held + ndesc <= size_) [[likely]]
      return true;
    set_broken("more descriptors available than the ring holds (wrap counter lie)");
    return false;
  }
  // Look-ahead (chains are consumed in ring order): after each pop, the descriptor line
  // kDescAhead positions on, and the buffer (or indirect table) of the descriptor
  // kBufAhead on when it is available (a buffer's first two lines: read for TX, owned
  // for RX; of a chain, its first descriptor's, or a middle one's), start
  // coming from the driver's core while the frames before them are handled. The
  // descriptor read here is a hint only: pop reads it again.
  static constexpr uint16_t kDescAhead = 24;
  static constexpr uint16_t kBufAhead = 10;
  [[gnu::always_inline]] void look_ahead() {
    if (size_ <= kDescAhead) [[unlikely]]
      return;
    uint16_t i = uint16_t(last_avail_ + kDescAhead);
    __builtin_prefetch(&desc_[i >= size_ ? i - size_ : i], 0, 3);
    i = uint16_t(last_avail_ + kBufAhead);
    bool wrap = avail_wrap_;
    if (i >= size_) {
      i = uint16_t(i - size_);
      wrap = !wrap;
    }
    const vring_packed_desc d = read_ring_desc(&desc_[i]);
    if (!is_avail(d.flags, wrap)) return;
    const uint8_t* p = mem_->gpa_to_host(d.addr, d.len < 128 ? d.len : 128);
    if (!p) return;
    if (d.flags & VRING_DESC_F_INDIRECT)
      __builtin_prefetch(p, 0, 3);  // the table; its buffers come when it is walked
    else
      prefetch_buffer_lines(p, d.flags & VRING_DESC_F_WRITE, write_kept_);
  }
  // Takes the chain of `ndesc` descriptors that starts at last_avail_.
  void take(uint16_t ndesc) {
    last_pop_ = pack(last_avail_, avail_wrap_);
    staged_[last_avail_].ndesc = ndesc;
    last_avail_ = uint16_t(last_avail_ + ndesc);
    if (last_avail_ >= size_) {
      last_avail_ = uint16_t(last_avail_ - size_);
      avail_wrap_ = !avail_wrap_;
    }
    counters_.chains.add();
  }
  const char* walk_indirect(const vring_packed_desc& d, Chain& c, uint32_t& nsegs);
  // Walks the chain at last_avail_ whose first descriptor is `first` into `c`. Returns
  // its descriptor count, or 0 when the ring is broken; *why is set for a bad chain.
  uint16_t walk(const vring_packed_desc& first, Chain& c, const char** why);

  std::shared_ptr<const memory::GuestMemory> mem_;
  vring_packed_desc* desc_ = nullptr;
  const vring_packed_desc_event* driver_event_ = nullptr;  // read: the driver's wishes
  vring_packed_desc_event* device_event_ = nullptr;        // written: ours
  std::vector<Staged> staged_;
  uint16_t size_ = 0;
  uint16_t last_avail_ = 0;  // next descriptor position to pop
  bool avail_wrap_ = true;   // the driver ring wrap counter expected there
  uint16_t last_pop_ = 0;    // mark().last_avail before the last pop
  uint16_t used_idx_ = 0;    // next used position to stage
  bool used_wrap_ = true;
  uint16_t published_ = 0;  // first position not yet published (| wrap << 15)
  uint16_t signalled_ = 0;  // published_ at the last notify decision
  bool signalled_valid_ = false;
  uint32_t since_signal_ = 0;  // descriptors published since the last notify decision
  bool event_idx_ = false;
  bool indirect_ = false;
  bool in_order_ = false;
  uint32_t write_kept_ = 0;     // set_write_kept
  uint32_t batch_written_ = 0;  // OR of the lengths pushed since the last publish
  uint16_t batch_last_id_ = 0;  // the id pushed last
  bool started_ = false;
  bool broken_ = false;
  const char* broken_reason_ = "";
  QueueCounters counters_;
  RateLimit* log_limit_ = nullptr;
  std::string log_label_ = "virtqueue";
  // Dirty logging (set_dirty_log): cold, after everything the data path touches, so that
  // the hot members keep their lines.
  QueueDirtyLog dlog_;
};

}  // namespace vnet::virtio
