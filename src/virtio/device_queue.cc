// DeviceQueue: chain walking and validation (virtio 1.2 section 2.7), used ring
// updates and notification suppression (2.7.7, 2.7.10).
#include "virtio/device_queue.h"

#include <cstring>

#include "common/cpu.h"
#include "common/log.h"
#include "virtio/chain_append.h"

namespace vnet::virtio {

namespace {

inline uint16_t load_acquire(const uint16_t* p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
inline uint16_t load_relaxed(const uint16_t* p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}
inline void store_relaxed(uint16_t* p, uint16_t v) {
  __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

// Reads a descriptor the guest may change under us exactly once. The table is
// 16-byte aligned for the main ring (checked at start); indirect tables may not be.
inline vring_desc read_desc(const vring_desc* p) {
  vring_desc d;
  if ((reinterpret_cast<uintptr_t>(p) & 7) == 0) {
    const auto* w = reinterpret_cast<const uint64_t*>(p);
    uint64_t a = __atomic_load_n(&w[0], __ATOMIC_RELAXED);
    uint64_t b = __atomic_load_n(&w[1], __ATOMIC_RELAXED);
    std::memcpy(&d.addr, &a, 8);
    std::memcpy(&d.len, &b, 8);  // len, flags, next
  } else {
    std::memcpy(&d, p, sizeof(d));
    asm volatile("" ::: "memory");
  }
  return d;
}

constexpr uint64_t avail_bytes(uint16_t size, bool event_idx) {
  return 4 + 2ULL * size + (event_idx ? 2 : 0);
}
constexpr uint64_t used_bytes(uint16_t size, bool event_idx) {
  return 4 + 8ULL * size + (event_idx ? 2 : 0);
}

// The most indirect descriptors we accept in one table. The spec bounds a chain by
// the queue size (2.7.5.3.1); an indirect table of a large queue can hold at most
// that many, and no more than 32768 in any case.
constexpr uint32_t kMaxIndirect = 32768;

// Look-ahead distances of pop(), in chains: descriptors further ahead than buffers, so
// that the descriptor a buffer hint reads is already in cache.
constexpr uint16_t kDescAhead = 20;
constexpr uint16_t kBufAhead = 10;

}  // namespace

Status DeviceQueue::start(std::shared_ptr<const memory::GuestMemory> mem, const QueueConfig& cfg) {
  started_ = false;
  broken_ = false;
  broken_reason_ = "";
  // 2.7: Queue Size is a power of 2, at most 32768.
  if (cfg.size == 0 || (cfg.size & (cfg.size - 1)) != 0 || cfg.size > 32768)
    return Status::errorf("queue size {} is not a power of 2 in [1, 32768]", cfg.size);
  // 2.7.2: alignment of the descriptor table (16), available ring (2), used ring (4).
  if (cfg.desc_addr % 16 || cfg.avail_addr % 2 || cfg.used_addr % 4)
    return Status::errorf("misaligned ring (desc {:#x}, avail {:#x}, used {:#x})", cfg.desc_addr,
                          cfg.avail_addr, cfg.used_addr);
  if (!mem) return Status::error("no guest memory");
  auto* d = mem->uva_to_host(cfg.desc_addr, 16ULL * cfg.size);
  auto* a = mem->uva_to_host(cfg.avail_addr, avail_bytes(cfg.size, cfg.event_idx));
  auto* u = mem->uva_to_host(cfg.used_addr, used_bytes(cfg.size, cfg.event_idx));
  if (!d)
    return Status::errorf("descriptor table {:#x} not inside one memory region", cfg.desc_addr);
  if (!a)
    return Status::errorf("available ring {:#x} not inside one memory region", cfg.avail_addr);
  if (!u) return Status::errorf("used ring {:#x} not inside one memory region", cfg.used_addr);
  // A region whose mmap_offset is not congruent with its userspace_addr puts aligned
  // front-end addresses at misaligned host addresses: refuse rather than misaccess.
  if (reinterpret_cast<uintptr_t>(d) % 16 || reinterpret_cast<uintptr_t>(a) % 2 ||
      reinterpret_cast<uintptr_t>(u) % 4)
    return Status::error("ring misaligned in host memory (region mmap_offset vs userspace_addr)");
  mem_ = std::move(mem);
  desc_ = reinterpret_cast<vring_desc*>(d);
  avail_ = reinterpret_cast<vring_avail*>(a);
  used_ = reinterpret_cast<vring_used*>(u);
  size_ = cfg.size;
  last_avail_ = cfg.avail_base;
  avail_shadow_ = cfg.avail_base;
  used_idx_ = cfg.avail_base;  // every chain before the base was completed
  published_ = cfg.avail_base;
  signalled_used_ = cfg.avail_base;
  signalled_valid_ = false;
  event_idx_ = cfg.event_idx;
  indirect_ = cfg.indirect;
  // The used ring is where the device writes ring memory (2.7.8; avail_event included).
  dlog_.areas = {};
  dlog_.areas.len[0] = used_bytes(cfg.size, cfg.event_idx);
  if (cfg.log_used)
    dlog_.areas.gpa[0] = cfg.log_guest_addr;
  else if (!mem_->host_to_gpa(u, dlog_.areas.len[0], &dlog_.areas.gpa[0]))
    dlog_.areas.len[0] = 0;
  clear_ahead();
  started_ = true;
  return Status::ok();
}

void DeviceQueue::stop() {
  started_ = false;
  clear_ahead();
  desc_ = nullptr;
  avail_ = nullptr;
  used_ = nullptr;
  mem_.reset();
}

void DeviceQueue::clear_ahead() {
  for (Ahead& a : ahead_) a.tag = 0;
}

void DeviceQueue::set_broken(const char* why) {
  if (broken_) return;
  broken_ = true;
  broken_reason_ = why;
  clear_ahead();  // pop_direct() relies on it
  counters_.broken.add();
}

uint16_t DeviceQueue::available() {
  if (!started_ || broken_) return 0;
  avail_shadow_ = load_acquire(&avail_->idx);
  uint16_t n = uint16_t(avail_shadow_ - last_avail_);
  // 2.7.13.3: the driver never makes more than Queue Size chains available at once.
  if (n > size_) {
    set_broken("avail index more than the queue size ahead");
    return 0;
  }
  // New chains: start the look-ahead that pop() keeps going.
  for (uint16_t i = 0; i < kDescAhead && i < n; ++i) prefetch_desc(i);
  for (uint16_t i = 0; i < kBufAhead && i < n; ++i) prefetch_buffer(i);
  return n;
}

[[gnu::always_inline]] inline void DeviceQueue::prefetch_desc(uint16_t ahead) {
  const uint16_t i = uint16_t(last_avail_ + ahead);
  if (uint16_t(i - last_avail_) >= uint16_t(avail_shadow_ - last_avail_)) return;
  const uint16_t head = load_relaxed(&avail_->ring[i & (size_ - 1)]);
  if (head < size_) __builtin_prefetch(&desc_[head], 0, 3);
}

[[gnu::always_inline]] inline void DeviceQueue::prefetch_buffer(uint16_t ahead) {
  const uint16_t i = uint16_t(last_avail_ + ahead);
  if (uint16_t(i - last_avail_) >= uint16_t(avail_shadow_ - last_avail_)) return;
  // The acquire load of avail->idx that made entry i available came before this read.
  const uint16_t head = load_relaxed(&avail_->ring[i & (size_ - 1)]);
  if (head >= size_) return;
  const vring_desc d = read_desc(&desc_[head]);
  uint8_t* p = direct_host(d);
  if (p) [[likely]] {
    // Keep it for pop(), which then trusts this one read of the entry and the
    // descriptor (a driver changes neither once available).
    ahead_[i & (kAheadSlots - 1)] = Ahead{i | kAheadValid, head, d.flags, d.len, p};
  } else {
    p = mem_->gpa_to_host(d.addr, d.len < 128 ? d.len : 128);
    if (!p) return;
    if (d.flags & VRING_DESC_F_INDIRECT) {
      __builtin_prefetch(p, 0, 3);  // the table; its buffers come when it is walked
      return;
    }
  }
  prefetch_buffer_lines(p, d.flags & VRING_DESC_F_WRITE, write_kept_);
}

void DeviceQueue::advance() {
  prefetch_desc(kDescAhead);
  prefetch_buffer(kBufAhead);
  ++last_avail_;
  counters_.chains.add();
}

PopStatus DeviceQueue::pop(Chain& c) {
  for (;;) {
    if (!started_) return PopStatus::kEmpty;
    if (broken_) return PopStatus::kBroken;
    if (last_avail_ == avail_shadow_ && available() == 0)
      return broken_ ? PopStatus::kBroken : PopStatus::kEmpty;
    Direct d;
    if (pop_direct(d)) [[likely]] {
      fill(c, d.head, d.writable, d.len, d.host);
      return PopStatus::kOk;
    }
    // The acquire load of avail->idx in available() orders this read after it.
    uint16_t head = load_relaxed(&avail_->ring[last_avail_ & (size_ - 1)]);
    if (head >= size_) {
      set_broken("available ring entry out of range");
      return PopStatus::kBroken;
    }
    advance();
    if (walk_direct(head, c)) [[likely]]
      return PopStatus::kOk;
    const char* why = walk(head, c);
    if (!why) return PopStatus::kOk;
    bad_chain(head, why);
  }
}

// Inlined into pop(); the checks of walk() hold for what it accepts: no NEXT, no
// INDIRECT (so no loop, no table), a length that is not zero and fits the 32 bits of
// the descriptor, one region. Anything else goes to walk(), which reads the descriptor
// again and checks everything.
inline bool DeviceQueue::walk_direct(uint16_t head, Chain& c) {
  const vring_desc d = read_desc(&desc_[head]);
  uint8_t* h = direct_host(d);
  if (!h) return false;
  fill(c, head, d.flags & VRING_DESC_F_WRITE, d.len, h);
  return true;
}

RateLimit& DeviceQueue::log_limit() const {
  static RateLimit shared;
  return log_limit_ ? *log_limit_ : shared;
}

// Give it back empty and go on: the driver gets its buffer back; nothing was read or
// written outside guest memory.
[[gnu::noinline, gnu::cold]] void DeviceQueue::bad_chain(uint16_t head, const char* why) {
  counters_.bad_chains.add();
  VNET_LOG_RL(log_limit(), spdlog::level::warn, "{}: bad descriptor chain at head {}: {}",
              log_label_, head, why);
  push(head, 0);
}

const char* DeviceQueue::walk(uint16_t head, Chain& c) {
  c.head = head;
  c.n_out = c.n_in = 0;
  c.out_len = c.in_len = 0;
  uint32_t nsegs = 0;
  const vring_desc* table = desc_;
  uint32_t table_size = size_;
  uint32_t idx = head;
  uint32_t count = 0;
  bool in_indirect = false;
  for (;;) {
    // 2.7.5.3.1: a chain is no longer than the queue size (or the indirect table);
    // a longer walk means a loop.
    if (++count > table_size) return "descriptor loop or chain longer than the queue";
    const vring_desc d = read_desc(&table[idx]);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      // 2.7.5.3: only with VIRTIO_RING_F_INDIRECT_DESC, not inside an indirect
      // table, not together with NEXT, a table of whole descriptors.
      if (!indirect_) return "indirect descriptor without VIRTIO_RING_F_INDIRECT_DESC";
      if (in_indirect) return "nested indirect descriptor";
      if (d.flags & VRING_DESC_F_NEXT) return "indirect descriptor with NEXT";
      if (d.len == 0 || d.len % sizeof(vring_desc) != 0)
        return "indirect table length not a non-zero multiple of 16";
      if (d.len / sizeof(vring_desc) > kMaxIndirect) return "indirect table too long";
      const uint8_t* t = mem_->gpa_to_host(d.addr, d.len);
      if (!t) return "indirect table outside guest memory";
      table = reinterpret_cast<const vring_desc*>(t);
      table_size = d.len / sizeof(vring_desc);
      idx = 0;
      count = 0;
      in_indirect = true;
      continue;
    }
    if (const char* why =
            append_buffer(*mem_, d.addr, d.len, d.flags & VRING_DESC_F_WRITE, c, nsegs))
      return why;
    if (!(d.flags & VRING_DESC_F_NEXT)) break;
    if (d.next >= table_size) return "next descriptor index out of range";
    idx = d.next;
  }
  // 2.7.4: the total length of a chain fits in 32 bits.
  if (c.out_len + c.in_len > UINT32_MAX) return "chain longer than 4 GiB";
  return nullptr;
}

void DeviceQueue::publish() {
  if (!started_) return;
  // 2.7.8.2: the used elements are visible before the index that covers them.
  __atomic_store_n(&used_->idx, used_idx_, __ATOMIC_RELEASE);
  published_ = used_idx_;
  if (dlog_.ring) [[unlikely]]
    dlog_.mark_ring();
}

bool DeviceQueue::should_notify() {
  if (!started_) return false;
  if (signalled_valid_ && signalled_used_ == published_) return false;
  // The used index store must be visible before we read the driver's wishes, or a
  // driver that just enabled interrupts could miss this update (2.7.7.2).
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return should_notify_fenced();
}

bool DeviceQueue::should_notify_fenced() {
  if (!started_) return false;
  if (signalled_valid_ && signalled_used_ == published_) return false;
  const uint16_t old = signalled_used_;
  const bool valid = signalled_valid_;
  signalled_used_ = published_;
  signalled_valid_ = true;
  if (event_idx_) {
    uint16_t used_event = load_relaxed(&avail_->ring[size_]);
    return !valid || vring_need_event(used_event, published_, old);
  }
  return !(load_relaxed(&avail_->flags) & VRING_AVAIL_F_NO_INTERRUPT);
}

bool DeviceQueue::enable_notifications() {
  if (!started_ || broken_) return false;
  if (event_idx_) {
    // avail_event: kick us once the driver makes chain `last_avail_` available.
    store_relaxed(reinterpret_cast<uint16_t*>(&used_->ring[size_]), last_avail_);
  } else {
    store_relaxed(&used_->flags, 0);
  }
  if (dlog_.ring) [[unlikely]]
    dlog_.mark_ring();
  // Make the request visible before looking at the avail index one last time.
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return available() != 0;
}

void DeviceQueue::disable_notifications() {
  if (!started_) return;
  // With EVENT_IDX the driver kicks only when it passes avail_event, which we left
  // behind; without it, the flag asks for no kicks.
  if (!event_idx_) {
    store_relaxed(&used_->flags, VRING_USED_F_NO_NOTIFY);
    if (dlog_.ring) [[unlikely]]
      dlog_.mark_ring();
  }
}

}  // namespace vnet::virtio
