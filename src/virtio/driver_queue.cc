// DriverQueue: ring layout, chain building and used-ring reaping for the driver side
// of a split virtqueue (virtio 1.2 section 2.7.13).
#include "virtio/driver_queue.h"

#include <cassert>
#include <cstring>

namespace vnet::virtio {

namespace {
constexpr size_t align_up(size_t v, size_t a) {
  return (v + a - 1) & ~(a - 1);
}
constexpr size_t desc_bytes(uint16_t size) {
  return 16ULL * size;
}
constexpr size_t avail_bytes(uint16_t size) {
  return 4 + 2ULL * size + 2;
}  // + used_event
constexpr size_t used_bytes(uint16_t size) {
  return 4 + 8ULL * size + 2;
}  // + avail_event
}  // namespace

size_t DriverQueue::ring_bytes(uint16_t size) {
  return align_up(desc_bytes(size) + avail_bytes(size), 4) + used_bytes(size);
}

void DriverQueue::init(uint16_t size, void* host, uint64_t gpa, uint64_t uva, bool event_idx) {
  assert(size && (size & (size - 1)) == 0 && size <= 32768);
  size_ = size;
  event_idx_ = event_idx;
  host_ = static_cast<uint8_t*>(host);
  gpa_ = gpa;
  uva_ = uva;
  std::memset(host_, 0, ring_bytes(size));
  desc_ = reinterpret_cast<vring_desc*>(host_);
  avail_ = reinterpret_cast<vring_avail*>(host_ + desc_bytes(size));
  used_ = reinterpret_cast<vring_used*>(host_ + align_up(desc_bytes(size) + avail_bytes(size), 4));
  avail_idx_ = kicked_idx_ = last_used_ = used_shadow_ = 0;
  next_.assign(size, 0);
  chain_n_.assign(size, 0);
  kept_.assign(size, 0);
  num_kept_ = 0;
  for (uint16_t i = 0; i + 1 < size; ++i) next_[i] = uint16_t(i + 1);
  free_head_ = 0;
  free_tail_ = uint16_t(size - 1);
  num_free_ = size;
  bad_used_ = 0;
}

QueueConfig DriverQueue::config() const {
  QueueConfig c;
  c.size = size_;
  c.desc_addr = uva_;
  c.avail_addr = uva_ + (reinterpret_cast<uint8_t*>(avail_) - host_);
  c.used_addr = uva_ + (reinterpret_cast<uint8_t*>(used_) - host_);
  c.avail_base = 0;
  c.event_idx = event_idx_;
  return c;
}

int DriverQueue::alloc_chain(uint32_t n) {
  if (n == 0 || n > num_free_) return -1;
  uint16_t head = free_head_;
  uint16_t last = head;
  for (uint32_t i = 1; i < n; ++i) last = next_[last];
  free_head_ = next_[last];
  num_free_ = uint16_t(num_free_ - n);
  chain_n_[head] = uint16_t(n);
  return head;
}

int DriverQueue::add(const Buf* out, uint32_t n_out, const Buf* in, uint32_t n_in) {
  const uint32_t total = n_out + n_in;
  int head = alloc_chain(total);
  if (head < 0) return -1;
  uint16_t idx = uint16_t(head);
  for (uint32_t i = 0; i < total; ++i) {
    const Buf& b = i < n_out ? out[i] : in[i - n_out];
    vring_desc& d = desc_[idx];
    d.addr = b.gpa;
    d.len = b.len;
    d.flags =
        uint16_t((i >= n_out ? VRING_DESC_F_WRITE : 0) | (i + 1 < total ? VRING_DESC_F_NEXT : 0));
    d.next = i + 1 < total ? next_[idx] : 0;
    idx = next_[idx];
  }
  put_avail(uint16_t(head));
  return head;
}

int DriverQueue::add_indirect(const Buf* out, uint32_t n_out, const Buf* in, uint32_t n_in,
                              vring_desc* table_host, uint64_t table_gpa) {
  const uint32_t total = n_out + n_in;
  if (total == 0) return -1;
  int head = alloc_chain(1);
  if (head < 0) return -1;
  for (uint32_t i = 0; i < total; ++i) {
    const Buf& b = i < n_out ? out[i] : in[i - n_out];
    table_host[i].addr = b.gpa;
    table_host[i].len = b.len;
    table_host[i].flags =
        uint16_t((i >= n_out ? VRING_DESC_F_WRITE : 0) | (i + 1 < total ? VRING_DESC_F_NEXT : 0));
    table_host[i].next = uint16_t(i + 1 < total ? i + 1 : 0);
  }
  vring_desc& d = desc_[head];
  d.addr = table_gpa;
  d.len = uint32_t(total * sizeof(vring_desc));
  d.flags = VRING_DESC_F_INDIRECT;
  d.next = 0;
  put_avail(uint16_t(head));
  return head;
}

void DriverQueue::publish() {
  __atomic_store_n(&avail_->idx, avail_idx_, __ATOMIC_RELEASE);
}

bool DriverQueue::should_kick() {
  if (kicked_idx_ == avail_idx_) return false;
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  const uint16_t old = kicked_idx_;
  kicked_idx_ = avail_idx_;
  if (event_idx_) {
    uint16_t avail_event =
        __atomic_load_n(reinterpret_cast<uint16_t*>(&used_->ring[size_]), __ATOMIC_RELAXED);
    return vring_need_event(avail_event, avail_idx_, old);
  }
  return !(__atomic_load_n(&used_->flags, __ATOMIC_RELAXED) & VRING_USED_F_NO_NOTIFY);
}

void DriverQueue::put_avail(uint16_t head) {
  // Written only when it changes: the device's copy of the line stays valid.
  uint16_t& slot = avail_->ring[avail_idx_ & (size_ - 1)];
  if (slot != head) slot = head;
  ++avail_idx_;
}

int DriverQueue::next_used(uint32_t* len) {
  for (;;) {
    // The acquire load that showed an entry orders its read, however much later.
    if (last_used_ == used_shadow_) {
      used_shadow_ = __atomic_load_n(&used_->idx, __ATOMIC_ACQUIRE);
      if (used_shadow_ == last_used_) return -1;
    }
    const vring_used_elem e = used_->ring[last_used_ & (size_ - 1)];
    ++last_used_;
    if (e.id >= size_ || chain_n_[e.id] == 0 || kept_[e.id]) {
      ++bad_used_;
      continue;
    }
    *len = e.len;
    return int(e.id);
  }
}

bool DriverQueue::reap(Used& u) {
  const int h = next_used(&u.len);
  if (h < 0) return false;
  const uint16_t head = uint16_t(h);
  uint16_t last = head;
  for (uint32_t i = 1; i < chain_n_[head]; ++i) last = next_[last];
  if (num_free_ == 0)
    free_head_ = head;
  else
    next_[free_tail_] = head;
  free_tail_ = last;
  num_free_ = uint16_t(num_free_ + chain_n_[head]);
  chain_n_[head] = 0;
  u.id = head;
  return true;
}

bool DriverQueue::reap_keep(Used& u) {
  const int h = next_used(&u.len);
  if (h < 0) return false;
  u.id = uint16_t(h);
  kept_[u.id] = 1;
  num_kept_ = uint16_t(num_kept_ + chain_n_[u.id]);
  return true;
}

bool DriverQueue::repost(uint16_t head) {
  if (head >= size_ || !kept_[head]) return false;
  kept_[head] = 0;
  num_kept_ = uint16_t(num_kept_ - chain_n_[head]);
  put_avail(head);
  return true;
}

void DriverQueue::enable_interrupts() {
  if (event_idx_)
    __atomic_store_n(&avail_->ring[size_], last_used_, __ATOMIC_RELAXED);  // used_event
  else
    __atomic_store_n(&avail_->flags, uint16_t(0), __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void DriverQueue::disable_interrupts() {
  // 2.7.7.1: with EVENT_IDX flags stay 0; used_event, left behind, suppresses interrupts.
  if (!event_idx_)
    __atomic_store_n(&avail_->flags, uint16_t(VRING_AVAIL_F_NO_INTERRUPT), __ATOMIC_RELAXED);
}

}  // namespace vnet::virtio
