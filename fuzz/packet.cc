// Fuzz target "packet": frame parsing and the software offloads of src/net (frame.h,
// offload.h, checksum.h) over a frame and a virtio_net_hdr that a hostile guest chose.
//
// Input: src caps (u8), dst caps (u8), segment pool size (u8), VLAN (u16), the 12-byte
// virtio_net_hdr_v1, then the frame (the rest, at most kMaxFrame bytes).
//
// Checked beyond "no crash, no out-of-bounds access": parse_frame's offsets are ordered
// and inside the frame; csum_partial agrees with a byte-by-byte RFC 1071 sum; a validated
// NEEDS_CSUM frame can be finished and its checksum then verifies; a validated GSO frame
// segments (resumed in chunks of the pool size), every segment is no longer than the
// original, reparses with consistent lengths, carries the right slice of the payload
// (payload bytes conserved, in order), the right TCP sequence number and flags, and a
// correct IPv4 header checksum and L4 checksum (complete, or partial when dst.csum).
// The bytes of a Packet past its length are poisoned for AddressSanitizer, so reading or
// writing past a frame is caught even though Packet::data is a fixed array.
#include <sanitizer/asan_interface.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "fuzz_input.h"
#include "net/checksum.h"
#include "net/frame.h"
#include "net/offload.h"
#include "net/packet.h"

namespace {

using vnet::fuzz::caps_from;

using namespace vnet::net;
using vnet::fuzz::FuzzInput;

constexpr uint32_t kMaxPool = 8;
constexpr uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpCwr = 0x80;

struct Packets {
  std::unique_ptr<Packet> in = std::make_unique<Packet>();
  std::unique_ptr<Packet> work = std::make_unique<Packet>();
  std::unique_ptr<Packet> out_store[kMaxPool];
  Packet* out[kMaxPool];
  Packets() {
    for (uint32_t i = 0; i < kMaxPool; ++i) {
      out_store[i] = std::make_unique<Packet>();  // separate heap blocks
      out[i] = out_store[i].get();
    }
  }
};

// Only data[0, len) of a packet may be touched.
void poison_tail(Packet& p, uint32_t len) {
  ASAN_UNPOISON_MEMORY_REGION(p.data, kMaxFrame);
  ASAN_POISON_MEMORY_REGION(p.data + len, kMaxFrame - len);
}
void unpoison(Packet& p) {
  ASAN_UNPOISON_MEMORY_REGION(p.data, kMaxFrame);
}

// RFC 1071 by the book: big-endian 16-bit words, odd byte padded with zero, added to
// `init`; the result as a residue mod 0xffff (0 and 0xffff are the same number).
uint64_t ref_sum(const uint8_t* p, size_t len, uint64_t init = 0) {
  uint64_t s = init;
  for (size_t i = 0; i + 1 < len; i += 2) s += uint64_t(p[i]) << 8 | p[i + 1];
  if (len & 1) s += uint64_t(p[len - 1]) << 8;
  return s % 0xffff;
}

// Pseudo-header sum (RFC 793 3.1 / RFC 768 for IPv4, RFC 8200 8.1 for IPv6), reference.
uint64_t ref_pseudo(const uint8_t* l3, uint8_t ip_version, uint8_t proto, uint32_t l4_len) {
  if (ip_version == 4) return ref_sum(l3 + 12, 8, uint64_t(proto) + l4_len);
  return ref_sum(l3 + 8, 32, uint64_t(proto) + (l4_len >> 16) + (l4_len & 0xffff));
}

void check_frame_info(ParseStatus st, const FrameInfo& f, uint32_t len) {
  if (st == ParseStatus::kTruncatedL2 || st == ParseStatus::kTooManyVlans) return;
  FUZZ_CHECK(f.n_vlans <= kMaxVlanTags);
  FUZZ_CHECK(f.l2_len == 14 + 4 * f.n_vlans);
  FUZZ_CHECK(f.l2_len <= len);
  if (st == ParseStatus::kNotIp) return;
  if (st != ParseStatus::kOk && st != ParseStatus::kL4Unknown) return;
  FUZZ_CHECK(f.ip_version == 4 || f.ip_version == 6);
  FUZZ_CHECK(f.l3_off == f.l2_len);
  FUZZ_CHECK(f.ip_end <= len);
  FUZZ_CHECK(f.l3_off + f.l3_len == f.l4_off);
  FUZZ_CHECK(f.l4_off <= f.ip_end);
  if (st == ParseStatus::kOk) {
    FUZZ_CHECK(f.l4_proto == kIpProtoTcp || f.l4_proto == kIpProtoUdp);
    FUZZ_CHECK(f.payload_off == f.l4_off + f.l4_hdr_len);
    FUZZ_CHECK(f.payload_off <= f.ip_end);
  }
}

// csum_partial against the reference over a few slices of the frame (odd lengths,
// odd starts, carries from a large initial sum).
void check_csum_partial(const uint8_t* d, uint32_t len, uint32_t seed) {
  const uint32_t starts[] = {0, 1, seed % (len + 1), (seed >> 8) % (len + 1)};
  for (uint32_t s : starts) {
    if (s > len) continue;
    const uint32_t n = len - s;
    const uint32_t lens[] = {n, n / 2, n ? (seed >> 16) % n : 0};
    for (uint32_t l : lens) {
      const uint32_t init = seed * 2654435761u;
      FUZZ_CHECK(csum_fold(csum_partial(d + s, l, init)) % 0xffff == ref_sum(d + s, l, init));
    }
  }
}

// After a successful finish_csum of a NEEDS_CSUM frame: the field at csum_start +
// csum_offset holds the checksum of [csum_start, len) with the old field value (the
// pseudo-header sum, Linux CHECKSUM_PARTIAL) as the initial sum.
void check_finished(const Packet& before, const Packet& after) {
  const uint32_t start = before.vhdr.csum_start, at = start + before.vhdr.csum_offset;
  FUZZ_CHECK(!(after.vhdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM));
  FUZZ_CHECK(after.len == before.len);
  FUZZ_CHECK(std::memcmp(before.data, after.data, at) == 0);
  FUZZ_CHECK(std::memcmp(before.data + at + 2, after.data + at + 2, before.len - at - 2) == 0);
  FUZZ_CHECK(load_be16(after.data + at) != 0);
  if ((at - start) % 2 == 0) {  // an odd offset makes the field straddle two words
    const uint16_t old = load_be16(before.data + at);
    FUZZ_CHECK(ref_sum(after.data + start, after.len - start, old) == 0);
  }
}

// One segment of `in` (index k of total, mss bytes of payload each).
void check_segment(const Packet& in, const FrameInfo& fi, OffloadCaps dst, uint32_t k,
                   uint32_t total, Packet& o) {
  const uint32_t mss = in.vhdr.gso_size;
  const uint32_t payload = in.len - fi.payload_off;
  const uint32_t off = k * mss;
  const uint32_t seg = std::min(mss, payload - off);
  FUZZ_CHECK(o.len <= in.len);
  FUZZ_CHECK(o.len == fi.payload_off + seg);
  // Payload conserved, in order.
  FUZZ_CHECK(std::memcmp(o.data + fi.payload_off, in.data + fi.payload_off + off, seg) == 0);
  // The L2 header (tags included) is the original's.
  FUZZ_CHECK(std::memcmp(o.data, in.data, fi.l2_len) == 0);
  FrameInfo so;
  const ParseStatus st = parse_frame(o.data, o.len, &so);
  FUZZ_CHECK(st == ParseStatus::kOk);
  FUZZ_CHECK(so.l4_off == fi.l4_off && so.payload_off == fi.payload_off);
  FUZZ_CHECK(so.l4_proto == fi.l4_proto && so.ip_end == o.len);
  FUZZ_CHECK(!so.is_fragment);
  const uint8_t* l3 = o.data + fi.l3_off;
  uint8_t* l4 = o.data + fi.l4_off;
  const uint32_t l4_len = o.len - fi.l4_off;
  if (fi.ip_version == 4) FUZZ_CHECK(ref_sum(l3, fi.l3_len) == 0);  // header checksum
  const bool tcp = fi.l4_proto == kIpProtoTcp;
  if (tcp) {
    const uint8_t* il4 = in.data + fi.l4_off;
    FUZZ_CHECK(load_be32(l4 + 4) == load_be32(il4 + 4) + off);
    const uint8_t flags = l4[13], iflags = il4[13];
    if (k != 0) FUZZ_CHECK(!(flags & kTcpCwr));
    if (k + 1 != total) FUZZ_CHECK(!(flags & (kTcpFin | kTcpPsh)));
    if (k + 1 == total) FUZZ_CHECK((flags & (kTcpFin | kTcpPsh)) == (iflags & (kTcpFin | kTcpPsh)));
  } else {
    FUZZ_CHECK(load_be16(l4 + 4) == l4_len);
  }
  const uint64_t pseudo = ref_pseudo(l3, fi.ip_version, fi.l4_proto, l4_len);
  if (dst.csum) {
    // Partial: the field holds the folded pseudo-header sum; finishing it must verify.
    FUZZ_CHECK(o.vhdr.flags == VIRTIO_NET_HDR_F_NEEDS_CSUM);
    FUZZ_CHECK(o.vhdr.csum_start == fi.l4_off);
    FUZZ_CHECK(o.vhdr.csum_offset == (tcp ? 16 : 6));
    FUZZ_CHECK(o.vhdr.gso_type == VIRTIO_NET_HDR_GSO_NONE);
    OffloadCaps c;
    c.csum = true;
    FUZZ_CHECK(validate(o, c) == OffloadError::kOk);
    FUZZ_CHECK(load_be16(l4 + o.vhdr.csum_offset) % 0xffff == pseudo);
    FUZZ_CHECK(finish_csum(o));
  } else {
    FUZZ_CHECK(o.vhdr.flags == 0 && o.vhdr.gso_type == VIRTIO_NET_HDR_GSO_NONE);
  }
  FUZZ_CHECK(ref_sum(l4, l4_len, pseudo) == 0);
}

void check_segmentation(const Packet& p, OffloadCaps dst, uint32_t pool, bool validated,
                        Packets& pk) {
  FrameInfo fi;
  parse_frame(p.data, p.len, &fi);
  uint32_t first = 0, total = 0;
  uint64_t payload_done = 0;
  for (;;) {
    for (uint32_t i = 0; i < pool; ++i) poison_tail(*pk.out[i], p.len);
    const SegmentResult r = segment(p, dst, first, pk.out, pool);
    if (r.error != OffloadError::kOk) {
      // segment() re-derives everything from the frame: it fails on the first call or never.
      FUZZ_CHECK(first == 0);
      FUZZ_CHECK(r.produced == 0);
      FUZZ_CHECK(!validated);  // validate() accepted it: segment() must take it
      break;
    }
    if (first == 0) {
      total = r.total;
      FUZZ_CHECK(total >= 1 && total <= kMaxGsoSegments);
    }
    FUZZ_CHECK(r.total == total);
    FUZZ_CHECK(r.produced == std::min(pool, total - first));
    for (uint32_t i = 0; i < r.produced; ++i) {
      check_segment(p, fi, dst, first + i, total, *pk.out[i]);
      payload_done += pk.out[i]->len - fi.payload_off;
    }
    first += r.produced;
    if (first == total) {
      FUZZ_CHECK(payload_done == p.len - fi.payload_off);
      // Past the end: nothing more.
      const SegmentResult end = segment(p, dst, total, pk.out, pool);
      FUZZ_CHECK(end.error == OffloadError::kOk && end.produced == 0 && end.total == total);
      break;
    }
  }
  for (uint32_t i = 0; i < pool; ++i) unpoison(*pk.out[i]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Packets pk;
  FuzzInput in(data, size);
  const OffloadCaps src = caps_from(in.u8());
  const OffloadCaps dst = caps_from(in.u8());
  const uint32_t pool = 1 + in.u8() % kMaxPool;
  const uint16_t vlan = in.u16() & 0xfff;
  virtio_net_hdr_v1 h;
  in.bytes(&h, sizeof(h));
  size_t len = 0;
  const uint8_t* frame = in.view(kMaxFrame, &len);

  // parse_frame straight on the fuzzer's buffer: it ends exactly at frame + len.
  FrameInfo f;
  const ParseStatus ps = parse_frame(frame, uint32_t(len), &f);
  check_frame_info(ps, f, uint32_t(len));
  check_csum_partial(frame, uint32_t(len), uint32_t(size) * 0x9e3779b9u ^ h.csum_start);

  Packet& p = *pk.in;
  unpoison(p);
  p.vhdr = h;
  p.len = uint32_t(len);
  p.vlan = vlan;
  std::memcpy(p.data, frame, len);
  poison_tail(p, p.len);

  const OffloadError e = validate(p, src);
  FUZZ_CHECK(e < OffloadError::kCount);
  (void)offload_error_name(e);
  (void)decide(p, dst);

  // finish_csum on a copy.
  Packet& w = *pk.work;
  unpoison(w);
  w.vhdr = p.vhdr;
  w.len = p.len;
  std::memcpy(w.data, p.data, p.len);
  poison_tail(w, w.len);
  const bool needs = p.vhdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
  const bool finished = finish_csum(w);
  if (e == OffloadError::kOk && needs) FUZZ_CHECK(finished);
  if (!finished) FUZZ_CHECK(std::memcmp(&w.vhdr, &p.vhdr, sizeof(w.vhdr)) == 0);
  if (finished && needs) check_finished(p, w);
  if (finished && !needs) FUZZ_CHECK(std::memcmp(w.data, p.data, p.len) == 0);
  unpoison(w);

  if ((h.gso_type & uint8_t(~VIRTIO_NET_HDR_GSO_ECN)) != VIRTIO_NET_HDR_GSO_NONE)
    check_segmentation(p, dst, pool, e == OffloadError::kOk, pk);
  unpoison(p);
  return 0;
}
