// PackedDriverQueue: ring layout, chain building and used descriptor reaping for the
// driver side of a packed virtqueue (virtio 1.2 sections 2.8.13 and 2.8.20).
#include "virtio/packed_driver_queue.h"

#include <cassert>
#include <cstring>

namespace vnet::virtio {

namespace {
constexpr uint16_t kWrapBit = 1u << 15;
constexpr uint16_t kAvail = 1u << VRING_PACKED_DESC_F_AVAIL;
constexpr uint16_t kUsed = 1u << VRING_PACKED_DESC_F_USED;
}  // namespace

void PackedDriverQueue::init(uint16_t size, void* host, uint64_t gpa, uint64_t uva,
                             bool event_idx) {
  assert(size >= 1 && size <= 32768);
  size_ = size;
  event_idx_ = event_idx;
  gpa_ = gpa;
  uva_ = uva;
  auto* h = static_cast<uint8_t*>(host);
  std::memset(h, 0, ring_bytes(size));
  desc_ = reinterpret_cast<vring_packed_desc*>(h);
  driver_event_ = reinterpret_cast<vring_packed_desc_event*>(h + 16ULL * size);
  device_event_ = reinterpret_cast<vring_packed_desc_event*>(h + 16ULL * size + 4);
  next_avail_ = next_used_ = 0;
  avail_wrap_ = used_wrap_ = true;  // 2.8.1: both wrap counters start at 1
  kicked_ = kWrapBit;
  num_free_ = size;
  free_ids_.clear();
  for (uint32_t i = size; i-- > 0;) free_ids_.push_back(uint16_t(i));  // 0 on top
  chain_n_.assign(size, 0);
  first_.assign(size, vring_packed_desc{});
  kept_.assign(size, 0);
  num_kept_ = 0;
  pending_.clear();
  bad_used_ = 0;
}

QueueConfig PackedDriverQueue::config() const {
  QueueConfig c;
  c.size = size_;
  c.desc_addr = uva_;
  c.avail_addr = uva_ + 16ULL * size_;     // driver area
  c.used_addr = uva_ + 16ULL * size_ + 4;  // device area
  c.avail_base = kWrapBit;
  c.event_idx = event_idx_;
  c.packed = true;
  return c;
}

int PackedDriverQueue::alloc_id(uint16_t ndesc) {
  if (ndesc == 0 || ndesc > num_free_ || free_ids_.empty()) return -1;
  const uint16_t id = free_ids_.back();
  free_ids_.pop_back();
  chain_n_[id] = ndesc;
  num_free_ = uint16_t(num_free_ - ndesc);
  return id;
}

void PackedDriverQueue::put(const vring_packed_desc& d, bool first) {
  vring_packed_desc& slot = desc_[next_avail_];
  slot.addr = d.addr;
  slot.len = d.len;
  slot.id = d.id;
  const uint16_t flags = uint16_t(d.flags | avail_flags(avail_wrap_));
  if (first) {
    first_[d.id] = d;
    pending_.push_back({next_avail_, flags});
  } else
    __atomic_store_n(&slot.flags, flags, __ATOMIC_RELEASE);
  if (++next_avail_ == size_) {
    next_avail_ = 0;
    avail_wrap_ = !avail_wrap_;
  }
}

int PackedDriverQueue::add(const Buf* out, uint32_t n_out, const Buf* in, uint32_t n_in) {
  const uint32_t total = n_out + n_in;
  if (total > size_) return -1;
  const int id = alloc_id(uint16_t(total));
  if (id < 0) return -1;
  for (uint32_t i = 0; i < total; ++i) {
    const Buf& b = i < n_out ? out[i] : in[i - n_out];
    vring_packed_desc d{};
    d.addr = b.gpa;
    d.len = b.len;
    d.id = uint16_t(id);  // 2.8.6: in the last one; every one carries it here
    d.flags =
        uint16_t((i >= n_out ? VRING_DESC_F_WRITE : 0) | (i + 1 < total ? VRING_DESC_F_NEXT : 0));
    put(d, i == 0);
  }
  return id;
}

int PackedDriverQueue::add_indirect(const Buf* out, uint32_t n_out, const Buf* in, uint32_t n_in,
                                    vring_packed_desc* table_host, uint64_t table_gpa) {
  const uint32_t total = n_out + n_in;
  if (total == 0) return -1;
  const int id = alloc_id(1);
  if (id < 0) return -1;
  for (uint32_t i = 0; i < total; ++i) {
    const Buf& b = i < n_out ? out[i] : in[i - n_out];
    table_host[i] = vring_packed_desc{};
    table_host[i].addr = b.gpa;
    table_host[i].len = b.len;
    table_host[i].flags = uint16_t(i >= n_out ? VRING_DESC_F_WRITE : 0);  // 2.8.7: only WRITE
  }
  vring_packed_desc d{};
  d.addr = table_gpa;
  d.len = uint32_t(total * sizeof(vring_packed_desc));
  d.id = uint16_t(id);
  d.flags = VRING_DESC_F_INDIRECT;
  put(d, true);
  return id;
}

void PackedDriverQueue::publish() {
  // The later chains first: the device polls the earliest one's flags (2.8.2).
  for (size_t i = pending_.size(); i-- > 0;)
    __atomic_store_n(&desc_[pending_[i].pos].flags, pending_[i].flags, __ATOMIC_RELEASE);
  pending_.clear();
}

bool PackedDriverQueue::should_kick() {
  const uint16_t now = uint16_t(next_avail_ | (avail_wrap_ ? kWrapBit : 0));
  if (kicked_ == now) return false;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  const uint16_t old = kicked_;
  kicked_ = now;
  uint32_t ev;
  std::memcpy(&ev, device_event_, 4);
  const uint16_t off_wrap = uint16_t(ev), flags = uint16_t(ev >> 16) & 3;
  if (flags == VRING_PACKED_EVENT_FLAG_DISABLE) return false;
  if (flags != VRING_PACKED_EVENT_FLAG_DESC || !event_idx_) return true;
  // 2.8.10: kick when the descriptor at off (in its lap) was made available.
  const uint16_t n = uint16_t(now & ~kWrapBit);
  uint16_t o = uint16_t(old & ~kWrapBit);
  if (n <= o) o = uint16_t(o - size_);
  uint16_t e = uint16_t(off_wrap & ~kWrapBit);
  if ((off_wrap & kWrapBit) != (now & kWrapBit)) e = uint16_t(e - size_);
  return vring_need_event(e, n, o);
}

int PackedDriverQueue::next_used(uint32_t* len) {
  const vring_packed_desc* d = &desc_[next_used_];
  const uint16_t flags = __atomic_load_n(&d->flags, __ATOMIC_ACQUIRE);
  const bool avail = flags & kAvail, used = flags & kUsed;
  if (used != used_wrap_ || avail != used_wrap_) return -1;
  const uint16_t id = d->id;
  if (id >= size_ || chain_n_[id] == 0 || kept_[id]) {
    ++bad_used_;  // the skip is unknown: reaping stops here
    return -1;
  }
  *len = (flags & VRING_DESC_F_WRITE) ? d->len : 0;
  // 2.8.6: the device skips the chain's descriptor count; so does the driver.
  next_used_ = uint16_t(next_used_ + chain_n_[id]);
  if (next_used_ >= size_) {
    next_used_ = uint16_t(next_used_ - size_);
    used_wrap_ = !used_wrap_;
  }
  num_free_ = uint16_t(num_free_ + chain_n_[id]);
  return id;
}

bool PackedDriverQueue::reap(Used& u) {
  const int id = next_used(&u.len);
  if (id < 0) return false;
  u.id = uint16_t(id);
  chain_n_[u.id] = 0;
  free_ids_.push_back(u.id);
  return true;
}

bool PackedDriverQueue::reap_keep(Used& u) {
  const int id = next_used(&u.len);
  if (id < 0) return false;
  u.id = uint16_t(id);
  kept_[u.id] = 1;
  ++num_kept_;
  return true;
}

bool PackedDriverQueue::repost(uint16_t id) {
  if (id >= size_ || !kept_[id] || chain_n_[id] != 1 || num_free_ == 0) return false;
  kept_[id] = 0;
  --num_kept_;
  --num_free_;
  put(first_[id], true);
  return true;
}

bool PackedDriverQueue::has_used() const {
  const uint16_t flags = __atomic_load_n(&desc_[next_used_].flags, __ATOMIC_ACQUIRE);
  return ((flags & kUsed) != 0) == used_wrap_ && ((flags & kAvail) != 0) == used_wrap_;
}

void PackedDriverQueue::enable_interrupts() {
  const uint32_t ev = event_idx_ ? uint32_t(next_used_ | (used_wrap_ ? kWrapBit : 0)) |
                                       uint32_t(VRING_PACKED_EVENT_FLAG_DESC) << 16
                                 : uint32_t(VRING_PACKED_EVENT_FLAG_ENABLE) << 16;
  __atomic_store_n(reinterpret_cast<uint32_t*>(driver_event_), ev, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void PackedDriverQueue::disable_interrupts() {
  __atomic_store_n(&driver_event_->flags, uint16_t(VRING_PACKED_EVENT_FLAG_DISABLE),
                   __ATOMIC_RELAXED);
}

}  // namespace vnet::virtio
