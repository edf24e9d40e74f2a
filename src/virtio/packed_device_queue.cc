// PackedDeviceQueue: descriptor ring walking and validation (virtio 1.2 section 2.8),
// used descriptor writes (2.8.6, 2.8.9) and event suppression (2.8.10, 2.8.14).
#include "virtio/packed_device_queue.h"

#include <cstring>

#include "common/log.h"
#include "virtio/chain_append.h"

namespace vnet::virtio {

namespace {

// Reads a descriptor of an indirect table (any alignment) once.
inline vring_packed_desc read_table_desc(const vring_packed_desc* p) {
  vring_packed_desc d;
  std::memcpy(&d, p, sizeof(d));
  asm volatile("" ::: "memory");
  return d;
}

// The most descriptors in one indirect table (2.8.5: a list is no longer than the
// queue size, at most 32768).
constexpr uint32_t kMaxIndirect = 32768;

constexpr uint16_t kFlagsMask = 0x3;  // desc_event_flags: bits 0-1 (2.8.10)

}  // namespace

Status PackedDeviceQueue::start(std::shared_ptr<const memory::GuestMemory> mem,
                                const QueueConfig& cfg) {
  started_ = false;
  broken_ = false;
  broken_reason_ = "";
  // 2.8: packed virtqueues have up to 2^15 entries (the size need not be a power of 2).
  if (cfg.size == 0 || cfg.size > 32768)
    return Status::errorf("queue size {} is not in [1, 32768]", cfg.size);
  // 2.8.10.1: descriptor ring aligned 16, the two event suppression areas 4.
  if (cfg.desc_addr % 16 || cfg.avail_addr % 4 || cfg.used_addr % 4)
    return Status::errorf("misaligned packed ring (desc {:#x}, driver {:#x}, device {:#x})",
                          cfg.desc_addr, cfg.avail_addr, cfg.used_addr);
  const uint16_t pos = uint16_t(cfg.avail_base & ~kWrapBit);
  if (pos >= cfg.size)
    return Status::errorf("ring base {:#x}: position {} not below the queue size {}",
                          cfg.avail_base, pos, cfg.size);
  if (!mem) return Status::error("no guest memory");
  auto* d = mem->uva_to_host(cfg.desc_addr, 16ULL * cfg.size);
  auto* drv = mem->uva_to_host(cfg.avail_addr, sizeof(vring_packed_desc_event));
  auto* dev = mem->uva_to_host(cfg.used_addr, sizeof(vring_packed_desc_event));
  if (!d)
    return Status::errorf("descriptor ring {:#x} not inside one memory region", cfg.desc_addr);
  if (!drv)
    return Status::errorf("driver event suppression area {:#x} not inside one memory region",
                          cfg.avail_addr);
  if (!dev)
    return Status::errorf("device event suppression area {:#x} not inside one memory region",
                          cfg.used_addr);
  if (reinterpret_cast<uintptr_t>(d) % 16 || reinterpret_cast<uintptr_t>(drv) % 4 ||
      reinterpret_cast<uintptr_t>(dev) % 4)
    return Status::error("ring misaligned in host memory (region mmap_offset vs userspace_addr)");
  mem_ = std::move(mem);
  desc_ = reinterpret_cast<vring_packed_desc*>(d);
  driver_event_ = reinterpret_cast<const vring_packed_desc_event*>(drv);
  device_event_ = reinterpret_cast<vring_packed_desc_event*>(dev);
  size_ = cfg.size;
  staged_.assign(size_, Staged{});
  // vhost-user SET_VRING_BASE: bits 0-14 the position, bit 15 the wrap counter; every
  // chain before it was completed, so the device's used position and counter are the same.
  last_avail_ = used_idx_ = pos;
  avail_wrap_ = used_wrap_ = cfg.avail_base & kWrapBit;
  last_pop_ = published_ = signalled_ = cfg.avail_base;
  signalled_valid_ = false;
  since_signal_ = 0;
  event_idx_ = cfg.event_idx;
  indirect_ = cfg.indirect;
  in_order_ = cfg.in_order;
  batch_written_ = 0;
  // Ring memory the device writes: used descriptors in the descriptor ring (2.8.6) and
  // the device event suppression area (2.8.10), which vhost-user's log_guest_addr names.
  dlog_.areas = {};
  dlog_.areas.len[0] = 16ULL * cfg.size;
  if (!mem_->host_to_gpa(d, dlog_.areas.len[0], &dlog_.areas.gpa[0])) dlog_.areas.len[0] = 0;
  dlog_.areas.len[1] = sizeof(vring_packed_desc_event);
  if (cfg.log_used)
    dlog_.areas.gpa[1] = cfg.log_guest_addr;
  else if (!mem_->host_to_gpa(dev, dlog_.areas.len[1], &dlog_.areas.gpa[1]))
    dlog_.areas.len[1] = 0;
  started_ = true;
  return Status::ok();
}

void PackedDeviceQueue::stop() {
  started_ = false;
  desc_ = nullptr;
  driver_event_ = nullptr;
  device_event_ = nullptr;
  mem_.reset();
}

void PackedDeviceQueue::set_broken(const char* why) {
  if (broken_) return;
  broken_ = true;
  broken_reason_ = why;
  counters_.broken.add();
}

RateLimit& PackedDeviceQueue::log_limit() const {
  static RateLimit shared;
  return log_limit_ ? *log_limit_ : shared;
}

uint16_t PackedDeviceQueue::available() {
  if (!started_ || broken_) return 0;
  const uint16_t flags = __atomic_load_n(&desc_[last_avail_].flags, __ATOMIC_ACQUIRE);
  return is_avail(flags, avail_wrap_) ? 1 : 0;
}

PopStatus PackedDeviceQueue::pop(Chain& c) {
  for (;;) {
    if (!started_) return PopStatus::kEmpty;
    if (broken_) return PopStatus::kBroken;
    const vring_packed_desc first = read_ring_desc(&desc_[last_avail_]);
    if (!is_avail(first.flags, avail_wrap_)) return PopStatus::kEmpty;
    const char* why = nullptr;
    const uint16_t n = walk(first, c, &why);
    if (n == 0 || !room_for(n)) return PopStatus::kBroken;
    take(n);
    look_ahead();
    if (!why) return PopStatus::kOk;
    bad_chain(c.head, why);
  }
}

const char* PackedDeviceQueue::walk_indirect(const vring_packed_desc& d, Chain& c,
                                             uint32_t& nsegs) {
  // 2.8.7: a table of whole descriptors; in it only WRITE is valid (the rest, the id
  // included, is reserved and ignored), so a nested INDIRECT is refused as in 2.7.5.3.
  if (d.len == 0 || d.len % sizeof(vring_packed_desc) != 0)
    return "indirect table length not a non-zero multiple of 16";
  if (d.len / sizeof(vring_packed_desc) > kMaxIndirect) return "indirect table too long";
  const uint8_t* t = mem_->gpa_to_host(d.addr, d.len);
  if (!t) return "indirect table outside guest memory";
  const auto* table = reinterpret_cast<const vring_packed_desc*>(t);
  const uint32_t n = d.len / sizeof(vring_packed_desc);
  for (uint32_t i = 0; i < n; ++i) {
    const vring_packed_desc e = read_table_desc(&table[i]);
    if (e.flags & VRING_DESC_F_INDIRECT) return "nested indirect descriptor";
    if (const char* why =
            append_buffer(*mem_, e.addr, e.len, e.flags & VRING_DESC_F_WRITE, c, nsegs))
      return why;
  }
  return nullptr;
}

uint16_t PackedDeviceQueue::walk(const vring_packed_desc& first, Chain& c, const char** why) {
  c.n_out = c.n_in = 0;
  c.out_len = c.in_len = 0;
  uint32_t nsegs = 0;
  uint16_t pos = last_avail_;
  bool wrap = avail_wrap_;
  vring_packed_desc d = first;
  uint16_t n = 1;
  for (;;) {
    if (!*why) {
      if (d.flags & VRING_DESC_F_INDIRECT) {
        // 2.8.7: only with VIRTIO_RING_F_INDIRECT_DESC, and never in a list linked
        // by NEXT (neither with NEXT itself nor after a descriptor that had it).
        if (!indirect_)
          *why = "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC";
        else if (n > 1 || (d.flags & VRING_DESC_F_NEXT))
          *why = "indirect descriptor in a chain";
        else
          *why = walk_indirect(d, c, nsegs);
      } else {
        *why = append_buffer(*mem_, d.addr, d.len, d.flags & VRING_DESC_F_WRITE, c, nsegs);
      }
    }
    if (!(d.flags & VRING_DESC_F_NEXT)) break;
    // 2.8.5: a list is no longer than the queue size. Longer: where the next chain
    // begins is unknown, so the ring is unusable.
    if (n == size_) {
      set_broken("descriptor chain longer than the queue");
      return 0;
    }
    if (++pos == size_) {  // a chain may wrap the ring; the wrap counter flips there
      pos = 0;
      wrap = !wrap;
    }
    d = read_ring_desc(&desc_[pos]);
    ++n;
    // 2.8.6: every descriptor of a list carries correct AVAIL/USED bits (the driver
    // makes the first one available last); one that does not is a ring we cannot follow.
    if (!is_avail(d.flags, wrap)) {
      set_broken("chained descriptor not marked available (AVAIL/USED bits)");
      return 0;
    }
  }
  // 2.8.6: the buffer id is in the last descriptor of the list.
  c.head = d.id;
  if (!*why && d.id >= size_) *why = "buffer id out of range";
  // 2.8.4: the total length of a chain fits in 32 bits.
  if (!*why && c.out_len + c.in_len > UINT32_MAX) *why = "chain longer than 4 GiB";
  return n;
}

// Give it back empty and go on (its extent is known): the driver gets its buffer back.
[[gnu::noinline, gnu::cold]] void PackedDeviceQueue::bad_chain(uint16_t id, const char* why) {
  counters_.bad_chains.add();
  batch_written_ = 1;  // its id may be out of range: never the batch's id
  VNET_LOG_RL(log_limit(), spdlog::level::warn, "{}: bad descriptor chain (buffer id {}): {}",
              log_label_, id, why);
  push(id, 0);
}

void PackedDeviceQueue::publish() {
  if (!started_) return;
  const uint16_t end = pack(used_idx_, used_wrap_);
  if (published_ == end) return;
  // Descriptors published since the last notify decision; past a ring the count stops
  // (should_notify_fenced() only asks whether it reached one).
  since_signal_ += distance(linear(published_), linear(end));
  if (since_signal_ > size_) since_signal_ = size_;
  if (in_order_ && batch_written_ == 0) {
    // 2.8.20: one used descriptor for the batch, where it began, with the id of its last
    // buffer; the driver frees every buffer up to that one and skips their descriptors.
    const uint16_t pos = uint16_t(published_ & ~kWrapBit);
    vring_packed_desc& d = desc_[pos];
    __atomic_store_n(&d.id, batch_last_id_, __ATOMIC_RELAXED);
    __atomic_store_n(&d.len, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&d.flags, uint16_t((published_ & kWrapBit) ? kAvail | kUsed : 0),
                     __ATOMIC_RELEASE);
    published_ = end;
    if (dlog_.ring) [[unlikely]]
      dlog_.mark_ring();
    return;
  }
  batch_written_ = 0;
  // Ids and lengths of every staged element first...
  uint16_t pos = uint16_t(published_ & ~kWrapBit);
  bool wrap = published_ & kWrapBit;
  const uint16_t first_pos = pos;
  uint16_t first_flags = 0;
  for (uint32_t guard = 0; pack(pos, wrap) != end && guard < size_; ++guard) {
    const Staged& s = staged_[pos];
    vring_packed_desc& d = desc_[pos];
    __atomic_store_n(&d.id, s.id, __ATOMIC_RELAXED);
    __atomic_store_n(&d.len, s.len, __ATOMIC_RELAXED);
    pos = uint16_t(pos + s.ndesc);
    if (pos >= size_) {
      pos = uint16_t(pos - size_);
      wrap = !wrap;
    }
  }
  // ...then the flags (2.8.9: AVAIL and USED both equal to the device wrap counter;
  // WRITE when the device wrote something, 2.8.3), the first element's last: the driver
  // polls only the next one (2.8.2), so it sees the whole burst at once.
  __atomic_thread_fence(__ATOMIC_RELEASE);
  pos = first_pos;
  wrap = published_ & kWrapBit;
  for (uint32_t guard = 0; pack(pos, wrap) != end && guard < size_; ++guard) {
    const Staged& s = staged_[pos];
    const uint16_t f = uint16_t((wrap ? kAvail | kUsed : 0) | (s.len ? VRING_DESC_F_WRITE : 0));
    if (pos == first_pos && guard == 0)
      first_flags = f;
    else
      __atomic_store_n(&desc_[pos].flags, f, __ATOMIC_RELAXED);
    pos = uint16_t(pos + s.ndesc);
    if (pos >= size_) {
      pos = uint16_t(pos - size_);
      wrap = !wrap;
    }
  }
  __atomic_store_n(&desc_[first_pos].flags, first_flags, __ATOMIC_RELEASE);
  published_ = end;
  if (dlog_.ring) [[unlikely]]
    dlog_.mark_ring();
}

bool PackedDeviceQueue::should_notify() {
  if (!started_) return false;
  if (signalled_valid_ && signalled_ == published_) return false;
  // The used flags must be visible before we read the driver's wishes (2.8.14).
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return should_notify_fenced();
}

bool PackedDeviceQueue::should_notify_fenced() {
  if (!started_) return false;
  if (signalled_valid_ && signalled_ == published_) return false;
  const uint16_t old = signalled_;
  const bool valid = signalled_valid_;
  const uint32_t since = since_signal_;
  signalled_ = published_;
  signalled_valid_ = true;
  since_signal_ = 0;
  // The driver event suppression structure, read once (off_wrap, flags).
  const uint32_t ev =
      __atomic_load_n(reinterpret_cast<const uint32_t*>(driver_event_), __ATOMIC_RELAXED);
  const uint16_t off_wrap = uint16_t(ev), flags = uint16_t(ev >> 16) & kFlagsMask;
  if (flags == VRING_PACKED_EVENT_FLAG_DISABLE) return false;
  // ENABLE, the reserved value 3, and DESC without EVENT_IDX (2.8.10: DESC only valid
  // with it) all mean: notify.
  if (flags != VRING_PACKED_EVENT_FLAG_DESC || !event_idx_ || !valid) return true;
  // A lap or more published since the last decision (several publishes in one worker
  // round): the positions below cannot tell which lap the driver's event is in, and
  // a missed event would leave a driver asleep for good. Every position was passed.
  if (since >= size_) return true;
  // DESC: notify when the used descriptor at off (in lap wrap) was written since the
  // last decision. Positions made linear relative to the current lap, as vring_need_event
  // expects (any value of off is harmless: it is only compared).
  const uint16_t now = uint16_t(published_ & ~kWrapBit);
  uint16_t before = uint16_t(old & ~kWrapBit);
  if (now <= before) before = uint16_t(before - size_);
  uint16_t event = uint16_t(off_wrap & ~kWrapBit);
  if ((off_wrap & kWrapBit) != (published_ & kWrapBit)) event = uint16_t(event - size_);
  return vring_need_event(event, now, before);
}

bool PackedDeviceQueue::enable_notifications() {
  if (!started_ || broken_) return false;
  // 2.8.10: with EVENT_IDX, a kick once the driver makes the descriptor at our next
  // position (in the lap of our wrap counter) available; else any kick. One store.
  const uint32_t ev =
      event_idx_ ? uint32_t(last_avail_idx()) | uint32_t(VRING_PACKED_EVENT_FLAG_DESC) << 16
                 : uint32_t(VRING_PACKED_EVENT_FLAG_ENABLE) << 16;
  __atomic_store_n(reinterpret_cast<uint32_t*>(device_event_), ev, __ATOMIC_RELAXED);
  if (dlog_.ring) [[unlikely]]
    dlog_.mark_ring();
  // Make the request visible before looking at the ring one last time.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return available() != 0;
}

void PackedDeviceQueue::disable_notifications() {
  if (!started_) return;
  __atomic_store_n(&device_event_->flags, uint16_t(VRING_PACKED_EVENT_FLAG_DISABLE),
                   __ATOMIC_RELAXED);
  if (dlog_.ring) [[unlikely]]
    dlog_.mark_ring();
}

}  // namespace vnet::virtio
