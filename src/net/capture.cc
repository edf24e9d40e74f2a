// Capture rings and the per-burst filter-and-copy step (see capture.h).
#include "net/capture.h"

#include <time.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "net/iov_copy.h"

namespace vnet::net {

namespace {
uint32_t record_size(uint32_t caplen) {
  return (uint32_t(sizeof(CaptureRecord)) + caplen + kRecordAlign - 1) & ~(kRecordAlign - 1);
}

// Bytes [off, off + len) of the frame, from its data and (external packets) its tail.
void copy_frame(const Packet& p, uint32_t off, uint8_t* dst, uint32_t len) {
  const uint32_t head = p.head_len();
  if (off < head) {
    const uint32_t k = std::min(len, head - off);
    std::memcpy(dst, p.data + off, k);
    dst += k;
    off += k;
    len -= k;
  }
  if (len && p.tail_n) iov_to_buf(p.tail, p.tail_n, off - head, dst, len);
}

// The first `caplen` bytes of the frame as the wire carries it: with an 802.1Q tag
// after the MAC addresses when `tag` is not 0 (802.1Q-2018 section 9.3).
void copy_wire(const Packet& p, uint16_t tag, uint8_t* dst, uint32_t caplen) {
  if (!tag) {
    copy_frame(p, 0, dst, caplen);
    return;
  }
  const uint32_t macs = std::min<uint32_t>(caplen, 12);
  copy_frame(p, 0, dst, macs);
  const uint8_t tci[kVlanTagLen] = {uint8_t(kEthP8021Q >> 8), uint8_t(kEthP8021Q),
                                    uint8_t((tag >> 8) & 0x0f), uint8_t(tag)};
  const uint32_t t = std::min<uint32_t>(caplen - macs, kVlanTagLen);
  std::memcpy(dst + macs, tci, t);
  if (caplen > macs + t) copy_frame(p, 12, dst + macs + t, caplen - macs - t);
}
}  // namespace

CaptureRing::CaptureRing(uint32_t bytes)
    : size_(std::bit_ceil(std::max<uint32_t>(bytes, record_size(kMaxFrame + kVlanTagLen) * 2))),
      mask_(size_ - 1),
      buf_(new uint8_t[size_]) {}

CaptureRecord* CaptureRing::reserve(uint32_t caplen) {
  const uint32_t need = record_size(caplen);
  uint64_t head = head_.load(std::memory_order_relaxed);
  const uint64_t tail = tail_.load(std::memory_order_acquire);
  uint32_t off = uint32_t(head & mask_);
  const uint32_t to_end = size_ - off;
  const uint32_t skip = to_end < need ? to_end : 0;
  if (uint64_t(need) + skip > size_ - (head - tail)) return nullptr;
  if (skip) {
    // to_end is a multiple of kRecordAlign, so a whole header fits.
    auto* s = reinterpret_cast<CaptureRecord*>(buf_.get() + off);
    s->size = skip;
    s->caplen = kSkipRecord;
    head += skip;
    off = 0;
  }
  reserved_head_ = head + need;
  auto* rec = reinterpret_cast<CaptureRecord*>(buf_.get() + off);
  rec->size = need;
  rec->caplen = caplen;
  return rec;
}

void CaptureRing::commit() {
  head_.store(reserved_head_, std::memory_order_release);
}

const CaptureRecord* CaptureRing::peek() {
  const uint64_t head = head_.load(std::memory_order_acquire);
  uint64_t tail = tail_.load(std::memory_order_relaxed);
  while (tail != head) {
    const auto* rec = reinterpret_cast<const CaptureRecord*>(buf_.get() + (tail & mask_));
    if (rec->caplen != kSkipRecord) {
      tail_next_ = tail + rec->size;
      return rec;
    }
    tail += rec->size;
    tail_.store(tail, std::memory_order_release);
  }
  return nullptr;
}

void CaptureRing::release() {
  tail_.store(tail_next_, std::memory_order_release);
}

Capture::Capture(const bpf_program* program, uint8_t dirs, uint32_t snaplen, uint32_t producers,
                 uint32_t ring_bytes)
    : dirs_(dirs), snaplen_(std::clamp<uint32_t>(snaplen, 64, 1u << 18)) {
  if (program && program->bf_insns)
    insns_.assign(program->bf_insns, program->bf_insns + program->bf_len);
  for (uint32_t i = 0; i < std::max<uint32_t>(producers, 1); ++i)
    rings_.push_back(std::make_unique<CaptureRing>(ring_bytes));
}

bool Capture::matches(const uint8_t* data, uint32_t wire_len, uint32_t buf_len) const {
  if (insns_.empty()) return true;
  return bpf_filter(insns_.data(), data, wire_len, buf_len) != 0;
}

void Capture::add_burst(CaptureDir d, Packet* const* pkts, uint32_t n, uint32_t producer,
                        const VlanConfig& vlan, uint64_t ts_ns) {
  CaptureRing& r = *rings_[producer];
  uint64_t accepted = 0, dropped = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const Packet& p = *pkts[i];
    const uint16_t tag = d == CaptureDir::kTx ? vlan.egress_tag(p.vlan) : 0;
    const uint32_t wire = p.len + (tag ? kVlanTagLen : 0);
    const uint32_t caplen = std::min(wire, snaplen_);
    CaptureRecord* rec = r.reserve(caplen);
    if (!rec) {
      // Full: whether the reader lost a frame it wanted, judged on the headers at hand.
      if (matches(p.data, wire, std::min(p.head_len(), caplen))) ++accepted, ++dropped;
      continue;
    }
    auto* data = reinterpret_cast<uint8_t*>(rec + 1);
    copy_wire(p, tag, data, caplen);
    if (!matches(data, wire, caplen)) continue;
    ++accepted;
    rec->orig_len = wire;
    rec->dir = uint8_t(d);
    rec->vflags = p.vhdr.flags;
    rec->gso_type = p.vhdr.gso_type;
    rec->ts_ns = ts_ns;
    rec->gso_size = p.vhdr.gso_size;
    rec->csum_start = p.vhdr.csum_start;
    rec->csum_offset = p.vhdr.csum_offset;
    r.commit();
  }
  r.seen.add(n);
  if (accepted) r.accepted.add(accepted);
  if (dropped) r.dropped.add(dropped);
}

void capture_burst(const CaptureSet& set, CaptureDir d, Packet* const* pkts, uint32_t n,
                   uint32_t producer, const VlanConfig& vlan) {
  if (!(d == CaptureDir::kRx ? set.rx : set.tx)) return;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const uint64_t ts_ns = uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
  for (Capture* c : set.captures)
    if (c->wants(d) && producer < c->producers()) c->add_burst(d, pkts, n, producer, vlan, ts_ns);
}

}  // namespace vnet::net
