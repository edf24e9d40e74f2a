// The virtio-net data path as templates over the device queue type (virtio 1.2 section
// 5.1.6): the bodies behind net/virtio_net_queue.h. Included only by the two .cc files
// that instantiate it, one ring layout each (virtio_net_queue.cc: split,
// virtio_net_queue_packed.cc: packed), so that each layout's code is compiled as if it
// were the only one: the split ring's is what it was before the packed ring existed.
// (Internal linkage on purpose: every includer gets its own copy.)
#pragma once

#include <linux/virtio_config.h>
#include "virtio/net_uapi.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "common/log.h"
#include "net/iov_copy.h"
#include "net/virtio_net_queue.h"

namespace vnet::net {

namespace {

// Copies a virtio-net header (12 bytes, or 10 for legacy drivers) with fixed-size
// moves: an 8-byte and a 4-byte one for the usual 12. A call to memcpy with a run-time
// size copies 12 bytes as two overlapping 8-byte loads, and the second one straddles
// the two stores that wrote a header we built, so the CPU cannot forward it.
inline void copy_net_hdr(void* dst, const void* src, uint32_t hdr_len) {
  auto* d = static_cast<uint8_t*>(dst);
  auto* s = static_cast<const uint8_t*>(src);
  if (hdr_len == sizeof(virtio_net_hdr_v1)) [[likely]] {
    std::memcpy(d, s, 8);
    std::memcpy(d + 8, s + 8, 4);
  } else {
    std::memcpy(d, s, sizeof(virtio_net_hdr));
  }
}

// Writes a virtio-net header into a guest's RX buffer, storing only the words that
// differ from what the buffer already holds. A driver that reuses its buffers (DPDK's
// mbufs, Linux's page fragments) finds the same header there as last time almost
// always: its line then stays clean and shared, and the driver's read of the header
// hits its own cache instead of fetching the line from this core. (DPDK's vhost library
// writes the header fields the same way.) The buffer is the guest's: what it holds is
// only compared, never used.
inline void put_net_hdr(void* dst, const void* src, uint32_t hdr_len) {
  auto* d = static_cast<uint8_t*>(dst);
  auto* s = static_cast<const uint8_t*>(src);
  if (hdr_len == sizeof(virtio_net_hdr_v1)) [[likely]] {
    uint64_t lo, old_lo;
    uint32_t hi, old_hi;
    std::memcpy(&lo, s, 8);
    std::memcpy(&hi, s + 8, 4);
    std::memcpy(&old_lo, d, 8);
    std::memcpy(&old_hi, d + 8, 4);
    if (lo != old_lo) std::memcpy(d, &lo, 8);
    if (hi != old_hi) std::memcpy(d + 8, &hi, 4);
  } else if (std::memcmp(d, s, hdr_len) != 0) {
    std::memcpy(d, s, hdr_len);
  }
}

// The header into the first pieces of an RX chain: in place when the first piece
// holds it whole (the usual case), else spread over the pieces.
inline void put_net_hdr(const iovec* segs, uint32_t n, const void* hdr, uint32_t hdr_len) {
  if (segs[0].iov_len >= hdr_len)
    put_net_hdr(segs[0].iov_base, hdr, hdr_len);
  else
    buf_to_iov(hdr, hdr_len, segs, n, 0);
}

// The pieces of iov[0..n) from byte `skip` on into out[0..max). Returns their number,
// or 0 when more than `max` are needed.
uint32_t iov_slice(const iovec* iov, uint32_t n, uint64_t skip, iovec* out, uint32_t max) {
  uint32_t k = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (skip >= iov[i].iov_len) {
      skip -= iov[i].iov_len;
      continue;
    }
    if (k == max) return 0;
    out[k++] = iovec{static_cast<uint8_t*>(iov[i].iov_base) + skip, iov[i].iov_len - skip};
    skip = 0;
  }
  return k;
}

}  // namespace

namespace {

template <class Q>
inline void complete_deferred_impl(Q& q, TxDeferred& deferred) {
  if (deferred.n == 0) return;
  deferred.n = 0;
  q.publish();
}

// The frame of one TX chain, whose device-readable pieces are segs[0, n_out) with
// `total` bytes, into p. False when it is dropped (counted). Inlined into both paths of
// tx_dequeue(): with one piece known, most of it folds away.
template <class Q>
[[gnu::noinline, gnu::cold]] void log_bad_header(const Q& q, OffloadError e) {
  VNET_LOG_RL(q.log_limit(), spdlog::level::warn, "{}: bad offload header dropped: {}",
              q.log_label(), offload_error_name(e));
}

template <class Q>
[[gnu::always_inline]] inline bool tx_frame(Packet& p, const iovec* segs, uint32_t n_out,
                                            uint64_t total, uint32_t hdr_len,
                                            const OffloadCaps& src, DropCounters& drops,
                                            TxDeferred* deferred, const Q& q) {
  // 5.1.6.2: the driver puts the header and the frame in device-readable buffers.
  if (total < uint64_t(hdr_len) + kEthHdrLen) {
    drops.add(Drop::kTxTooShort);
    return false;
  }
  if (total - hdr_len > kMaxFrame) {
    drops.add(Drop::kTxTooBig);
    return false;
  }
  p.vhdr = {};
  // Read once, into our copy (one piece: the usual case).
  if (n_out == 1)
    copy_net_hdr(&p.vhdr, segs[0].iov_base, hdr_len);
  else
    iov_to_buf(segs, n_out, 0, &p.vhdr, hdr_len);
  p.len = uint32_t(total - hdr_len);
  p.vlan = 0;
  p.flow = 0;
  p.tail_n = 0;
  if (deferred && p.len >= kDirectMin && p.vhdr.gso_type == VIRTIO_NET_HDR_GSO_NONE &&
      deferred->n < kBurst) {
    p.tail_n = uint16_t(iov_slice(segs, n_out, uint64_t(hdr_len) + kDirectHead, p.tail, kMaxTail));
  }
  if (p.tail_n) {
    p.head = kDirectHead;
    iov_to_buf(segs, n_out, hdr_len, p.data, kDirectHead);
  } else if (n_out == 1) {
    copy_frame_bytes(p.data, static_cast<const uint8_t*>(segs[0].iov_base) + hdr_len, p.len);
  } else {
    iov_to_buf(segs, n_out, hdr_len, p.data, p.len);
  }
  OffloadError e = validate(p, src);  // without GSO it reads only the header fields
  if (e != OffloadError::kOk) {
    drops.add(Drop::kTxBadHeader);
    log_bad_header(q, e);
    p.tail_n = 0;
    return false;
  }
  if (p.tail_n) ++deferred->n;  // its buffers are read after this returns
  return true;
}

template <class Q>
uint32_t tx_dequeue_impl(Q& q, virtio::Chain& c, uint32_t hdr_len, const OffloadCaps& src,
                         Packet* const* pkts, uint32_t max, DropCounters& drops,
                         TxDeferred* deferred) {
  uint32_t n = 0, popped = 0;
  const uint16_t used_start = q.mark().used_idx;
  while (n < max && popped < max * 2) {
    typename Q::Direct d;
    uint16_t head;
    bool ok;
    if (q.pop_direct(d)) [[likely]] {
      head = d.head;
      if (d.writable) {  // nothing device-readable: what pop() would make of it
        drops.add(Drop::kTxTooShort);
        ok = false;
      } else {
        const iovec seg{d.host, d.len};
        ok = tx_frame(*pkts[n], &seg, 1, d.len, hdr_len, src, drops, deferred, q);
      }
    } else {
      if (q.pop(c) != virtio::PopStatus::kOk) break;
      head = c.head;
      ok = tx_frame(*pkts[n], c.segs, c.n_out, c.out_len, hdr_len, src, drops, deferred, q);
    }
    ++popped;
    n += ok;
    // TX buffers are read, never written. Pushed in pop order; the driver sees the
    // element only at publish.
    q.push(head, 0);
  }
  if (q.mark().used_idx != used_start && !(deferred && deferred->n)) q.publish();
  return n;
}

// The header a frame gets in the guest's RX buffer (5.1.6.4): its offload metadata as
// far as the guest negotiated it, offsets moved past an inserted VLAN tag.
// Built in registers and stored as one 8-byte and one 4-byte word: the copies into the
// guest read it back with exactly those loads, which the CPU forwards from the stores
// (field-by-field stores read back as wider loads cannot be forwarded: a stall of a
// dozen cycles per frame).
inline void fill_rx_hdr(virtio_net_hdr_v1& h, const Packet& p, const OffloadCaps& dst,
                        bool tagged) {
  uint8_t flags = 0, gso_type = 0;
  uint16_t hdr_len = 0, gso_size = 0, csum_start = 0, csum_offset = 0;
  if (dst.csum) {  // 5.1.6.4.1: flags and GSO fields zero without GUEST_CSUM
    flags = p.vhdr.flags & (VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID);
    csum_start = p.vhdr.csum_start;
    csum_offset = p.vhdr.csum_offset;
    if (p.vhdr.gso_type != VIRTIO_NET_HDR_GSO_NONE) {
      gso_type = p.vhdr.gso_type;
      gso_size = p.vhdr.gso_size;
      hdr_len = p.vhdr.hdr_len;
    }
    if (tagged) {
      if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) csum_start = uint16_t(csum_start + kVlanTagLen);
      if (hdr_len) hdr_len = uint16_t(hdr_len + kVlanTagLen);
    }
  }
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  static_assert(sizeof(virtio_net_hdr_v1) == 12 && offsetof(virtio_net_hdr_v1, csum_offset) == 8);
  const uint64_t lo = uint64_t(flags) | uint64_t(gso_type) << 8 | uint64_t(hdr_len) << 16 |
                      uint64_t(gso_size) << 32 | uint64_t(csum_start) << 48;
  const uint32_t hi = uint32_t(csum_offset) | uint32_t(1) << 16;  // num_buffers = 1
  std::memcpy(reinterpret_cast<uint8_t*>(&h), &lo, 8);
  std::memcpy(reinterpret_cast<uint8_t*>(&h) + 8, &hi, 4);
#else
  h = {};
  h.flags = flags;
  h.gso_type = gso_type;
  h.hdr_len = hdr_len;
  h.gso_size = gso_size;
  h.csum_start = csum_start;
  h.csum_offset = csum_offset;
  h.num_buffers = 1;
#endif
}

// A frame as it will appear in the guest: its header, and the packet's bytes with an
// 802.1Q tag after the MAC addresses when the port sends its VLAN tagged.
// An external packet's tail follows as further pieces, straight from the source guest.
struct FrameView {
  iovec piece[3 + kMaxTail];
  uint32_t n;
  uint8_t tag[kVlanTagLen];
  uint64_t len;
  virtio_net_hdr_v1 hdr;

  FrameView(const Packet& p, uint16_t vlan_tag, const OffloadCaps& dst) {
    fill_rx_hdr(hdr, p, dst, vlan_tag != 0);
    const uint32_t head = p.head_len();
    if (vlan_tag == 0) {
      piece[0] = {const_cast<uint8_t*>(p.data), head};
      n = 1;
      len = p.len;
    } else {
      tag[0] = uint8_t(kEthP8021Q >> 8);
      tag[1] = uint8_t(kEthP8021Q);
      tag[2] = uint8_t(vlan_tag >> 8);
      tag[3] = uint8_t(vlan_tag);
      piece[0] = {const_cast<uint8_t*>(p.data), 12};
      piece[1] = {tag, kVlanTagLen};
      piece[2] = {const_cast<uint8_t*>(p.data) + 12, head - 12};
      n = 3;
      len = p.len + kVlanTagLen;
    }
    for (uint32_t i = 0; i < p.tail_n; ++i) piece[n++] = p.tail[i];
  }
  FrameView(const FrameView&) = delete;  // pieces point into the object
};

// Live migration (kLog: the queue is logging()): the first `len` bytes of an RX chain's
// writable pieces, which were just written, marked in the dirty log before the used
// element that hands them to the driver is published.
template <class Q>
inline void log_iov(const Q& q, const iovec* segs, uint32_t n, uint64_t len) {
  for (uint32_t i = 0; i < n && len; ++i) {
    const uint64_t k = std::min<uint64_t>(segs[i].iov_len, len);
    q.log_write(segs[i].iov_base, k);
    len -= k;
  }
}

// The usual case of rx_one() and rx_mergeable(): a frame in one piece into the next
// chain, when the look-ahead found it to be one writable buffer that holds the header
// and the frame. False, with nothing taken, otherwise.
template <bool kLog, class Q>
inline bool rx_direct(Q& q, uint32_t hdr_len, const FrameView& p) {
  if (p.n != 1) return false;
  typename Q::Direct d;
  if (!q.pop_direct(d)) return false;
  const uint64_t need = uint64_t(hdr_len) + p.len;
  if (!d.writable || d.len < need) [[unlikely]] {
    q.rewind(q.mark_last_pop());  // give it back: the general path decides
    return false;
  }
  put_net_hdr(d.host, &p.hdr, hdr_len);
  copy_frame_bytes(d.host + hdr_len, p.piece[0].iov_base, p.len);
  if constexpr (kLog) q.log_write(d.host, need);
  q.push(d.head, uint32_t(need));
  return true;
}

// One frame into one chain (no mergeable buffers). False if no buffer fits.
template <bool kLog, class Q>
bool rx_one(Q& q, virtio::Chain& c, uint32_t hdr_len, const FrameView& p, DropCounters& drops) {
  if (rx_direct<kLog>(q, hdr_len, p)) [[likely]]
    return true;
  if (q.pop(c) != virtio::PopStatus::kOk) {
    drops.add(q.broken() ? Drop::kQueueBroken : Drop::kRxNoBuffers);
    return false;
  }
  const auto mark = q.mark_last_pop();  // after the bad chains pop completed, before this one
  if (c.in_len < uint64_t(hdr_len) + p.len) {
    q.rewind(mark);  // keep the buffer for a frame that fits
    drops.add(Drop::kRxNoBuffers);
    return false;
  }
  if (c.n_in == 1 && p.n == 1) {  // the usual case: one buffer, a frame in one piece
    auto* dst = static_cast<uint8_t*>(c.in_segs()[0].iov_base);
    put_net_hdr(dst, &p.hdr, hdr_len);
    copy_frame_bytes(dst + hdr_len, p.piece[0].iov_base, p.len);
  } else {
    put_net_hdr(c.in_segs(), c.n_in, &p.hdr, hdr_len);
    iov_to_iov(p.piece, p.n, 0, c.in_segs(), c.n_in, hdr_len, p.len);
  }
  if constexpr (kLog) log_iov(q, c.in_segs(), c.n_in, hdr_len + p.len);
  q.push(c.head, uint32_t(hdr_len + p.len));
  return true;
}

// One frame across as many chains as it needs (5.1.6.3.2, VIRTIO_NET_F_MRG_RXBUF).
template <bool kLog, class Q>
bool rx_mergeable(Q& q, virtio::Chain& c, uint32_t hdr_len, const FrameView& p,
                  DropCounters& drops) {
  if (rx_direct<kLog>(q, hdr_len, p)) [[likely]]
    return true;
  typename Q::Mark mark{};
  const uint64_t need = uint64_t(hdr_len) + p.len;
  uint64_t done = 0;
  uint16_t num_buffers = 0;
  // Where the first buffer's header lives, to patch num_buffers at the end.
  iovec hdr_iov[sizeof(virtio_net_hdr_v1)];
  size_t hdr_iov_n = 0;
  virtio_net_hdr_v1 h = p.hdr;
  while (done < need) {
    if (num_buffers == q.size() || q.pop(c) != virtio::PopStatus::kOk) {
      if (num_buffers) q.rewind(mark);
      drops.add(q.broken() ? Drop::kQueueBroken : Drop::kRxNoBuffers);
      return false;
    }
    uint64_t skip = 0;
    if (num_buffers == 0) {
      mark = q.mark_last_pop();  // after the bad chains pop completed, before this one
      if (c.in_len < hdr_len) {  // 5.1.6.3.1: the first buffer must hold the header
        q.rewind(mark);
        drops.add(Drop::kRxNoBuffers);
        return false;
      }
      if (c.n_in == 1 && p.n == 1 && p.piece[0].iov_len == p.len && c.in_len >= need) {
        // The usual case: the whole frame, in one piece, fits the first buffer.
        auto* dst = static_cast<uint8_t*>(c.in_segs()[0].iov_base);
        put_net_hdr(dst, &h, hdr_len);
        copy_frame_bytes(dst + hdr_len, p.piece[0].iov_base, p.len);
        if constexpr (kLog) q.log_write(dst, need);
        q.push(c.head, uint32_t(need));
        return true;
      }
      put_net_hdr(c.in_segs(), c.n_in, &h, hdr_len);
      hdr_iov_n = std::min<size_t>(c.n_in, sizeof(hdr_iov) / sizeof(hdr_iov[0]));
      std::copy(c.in_segs(), c.in_segs() + hdr_iov_n, hdr_iov);
      skip = hdr_len;
      done = hdr_len;
    }
    uint64_t room = c.in_len - skip;
    uint64_t chunk = std::min<uint64_t>(room, need - done);
    iov_to_iov(p.piece, p.n, done - hdr_len, c.in_segs(), c.n_in, skip, chunk);
    done += chunk;
    if constexpr (kLog) log_iov(q, c.in_segs(), c.n_in, skip + chunk);
    q.push(c.head, uint32_t(skip + chunk));
    ++num_buffers;
  }
  if (num_buffers > 1) {
    h.num_buffers = num_buffers;
    buf_to_iov(&h, hdr_len, hdr_iov, hdr_iov_n, 0);
    if constexpr (kLog) log_iov(q, hdr_iov, uint32_t(hdr_iov_n), hdr_len);
  }
  return true;
}

// always_inline: the split instantiation then compiles to exactly the code rx_enqueue
// had before it was a template (checked with objdump at -O3).
template <bool kLog, class Q>
[[gnu::always_inline]] inline uint32_t rx_enqueue_impl(Q& q, virtio::Chain& c, uint32_t hdr_len,
                                                       bool mergeable, const OffloadCaps& dst,
                                                       const VlanConfig& vlan, Packet* const* pkts,
                                                       uint32_t n, DropCounters& drops,
                                                       uint64_t* bytes) {
  uint32_t sent = 0;
  const uint16_t used_start = q.mark().used_idx;
  for (uint32_t i = 0; i < n; ++i) {
    const FrameView f(*pkts[i], vlan.egress_tag(pkts[i]->vlan), dst);
    bool ok = mergeable ? rx_mergeable<kLog>(q, c, hdr_len, f, drops)
                        : rx_one<kLog>(q, c, hdr_len, f, drops);
    if (ok) {
      ++sent;
      *bytes += f.len;
    } else if (q.available() == 0) {
      drops.add(q.broken() ? Drop::kQueueBroken : Drop::kRxNoBuffers, n - i - 1);
      break;  // nothing left to try: drop the rest of the burst at once
    }
  }
  if (q.mark().used_idx != used_start) q.publish();
  return sent;
}

// rx_enqueue_impl while the queue is logging() (live migration): out of line, so the
// usual path pays one branch per burst for it.
template <class Q>
[[gnu::noinline, gnu::cold]] uint32_t rx_enqueue_logged(Q& q, virtio::Chain& c, uint32_t hdr_len,
                                                        bool mergeable, const OffloadCaps& dst,
                                                        const VlanConfig& vlan, Packet* const* pkts,
                                                        uint32_t n, DropCounters& drops,
                                                        uint64_t* bytes) {
  return rx_enqueue_impl<true>(q, c, hdr_len, mergeable, dst, vlan, pkts, n, drops, bytes);
}

template <class Q>
[[gnu::always_inline]] inline uint32_t rx_enqueue_any(Q& q, virtio::Chain& c, uint32_t hdr_len,
                                                      bool mergeable, const OffloadCaps& dst,
                                                      const VlanConfig& vlan, Packet* const* pkts,
                                                      uint32_t n, DropCounters& drops,
                                                      uint64_t* bytes) {
  if (q.logging()) [[unlikely]]
    return rx_enqueue_logged(q, c, hdr_len, mergeable, dst, vlan, pkts, n, drops, bytes);
  return rx_enqueue_impl<false>(q, c, hdr_len, mergeable, dst, vlan, pkts, n, drops, bytes);
}

}  // namespace

}  // namespace vnet::net
