// Software offloads: validation, checksum completion, TSO/USO segmentation; see offload.h.
#include "net/offload.h"

#include <bit>
#include <cstring>

#include "net/checksum.h"

namespace vnet::net {

namespace {

constexpr uint8_t kGsoTypeMask = uint8_t(~VIRTIO_NET_HDR_GSO_ECN);
constexpr uint32_t kTcpCsumOffset = 16;  // RFC 793 section 3.1
constexpr uint32_t kUdpCsumOffset = 6;   // RFC 768
constexpr uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpCwr = 0x80;

// virtio_net_hdr fields are little-endian with VIRTIO_F_VERSION_1 (5.1.6).
inline uint16_t vh16(uint16_t v) {
  if constexpr (std::endian::native == std::endian::little) return v;
  return __builtin_bswap16(v);
}

inline bool has(uint64_t features, unsigned bit) {
  return features & (1ULL << bit);
}

// The layout checks segment() needs, shared with validate(): headers parse, L3/L4 match the
// GSO type, no fragment, the IP datagram ends at the frame's end, csum_start/offset point at
// the L4 checksum, and the segment count is bounded. `type` is gso_type without ECN.
OffloadError check_gso_layout(const Packet& p, uint8_t type, FrameInfo* f, uint32_t* total) {
  const ParseStatus st = parse_frame(p.data, p.len, f);
  if (st == ParseStatus::kNotIp) return OffloadError::kGsoL3Mismatch;
  if (st != ParseStatus::kOk && st != ParseStatus::kL4Unknown) {
    return OffloadError::kGsoBadHeaders;
  }
  if ((type == VIRTIO_NET_HDR_GSO_TCPV4 && f->ip_version != 4) ||
      (type == VIRTIO_NET_HDR_GSO_TCPV6 && f->ip_version != 6)) {
    return OffloadError::kGsoL3Mismatch;
  }
  if (f->is_fragment) return OffloadError::kGsoFragment;
  const uint8_t want = type == VIRTIO_NET_HDR_GSO_UDP_L4 ? kIpProtoUdp : kIpProtoTcp;
  if (st != ParseStatus::kOk || f->l4_proto != want) return OffloadError::kGsoL4Mismatch;
  // The pseudo-header destination would be in the routing header: not segmented here.
  if (f->ipv6_routing_pending) return OffloadError::kGsoBadHeaders;
  if (f->ip_end != p.len) return OffloadError::kGsoLengthMismatch;
  const uint32_t csum_off = want == kIpProtoTcp ? kTcpCsumOffset : kUdpCsumOffset;
  if (vh16(p.vhdr.csum_start) != f->l4_off || vh16(p.vhdr.csum_offset) != csum_off) {
    return OffloadError::kGsoCsumMismatch;
  }
  const uint32_t mss = vh16(p.vhdr.gso_size);
  const uint32_t payload = p.len - f->payload_off;
  const uint32_t n = payload == 0 ? 1 : (payload + mss - 1) / mss;
  if (n > kMaxGsoSegments) return OffloadError::kGsoTooManySegments;
  *total = n;
  return OffloadError::kOk;
}

// The header-only checks of a GSO frame that do not depend on the source's features.
OffloadError check_gso_header(const virtio_net_hdr_v1& h, uint8_t type) {
  if (type == VIRTIO_NET_HDR_GSO_UDP) return OffloadError::kGsoUfoUnsupported;
  if (type != VIRTIO_NET_HDR_GSO_TCPV4 && type != VIRTIO_NET_HDR_GSO_TCPV6 &&
      type != VIRTIO_NET_HDR_GSO_UDP_L4) {
    return OffloadError::kGsoUnknownType;
  }
  if ((h.gso_type & VIRTIO_NET_HDR_GSO_ECN) && type == VIRTIO_NET_HDR_GSO_UDP_L4) {
    return OffloadError::kEcnWithoutTcp;
  }
  if (!(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) return OffloadError::kGsoWithoutCsum;
  if (vh16(h.gso_size) == 0) return OffloadError::kGsoSizeZero;
  return OffloadError::kOk;
}

}  // namespace

OffloadCaps guest_rx_caps(uint64_t f) {
  OffloadCaps c;
  c.csum = has(f, VIRTIO_NET_F_GUEST_CSUM);
  c.tso4 = c.csum && has(f, VIRTIO_NET_F_GUEST_TSO4);
  c.tso6 = c.csum && has(f, VIRTIO_NET_F_GUEST_TSO6);
  c.tso_ecn = (c.tso4 || c.tso6) && has(f, VIRTIO_NET_F_GUEST_ECN);
  c.uso = c.csum && has(f, VIRTIO_NET_F_GUEST_USO4) && has(f, VIRTIO_NET_F_GUEST_USO6);
  return c;
}

OffloadCaps guest_tx_caps(uint64_t f) {
  OffloadCaps c;
  c.csum = has(f, VIRTIO_NET_F_CSUM);
  c.tso4 = c.csum && has(f, VIRTIO_NET_F_HOST_TSO4);
  c.tso6 = c.csum && has(f, VIRTIO_NET_F_HOST_TSO6);
  c.tso_ecn = (c.tso4 || c.tso6) && has(f, VIRTIO_NET_F_HOST_ECN);
  c.uso = c.csum && has(f, VIRTIO_NET_F_HOST_USO);
  return c;
}

OffloadCaps tap_caps(unsigned t) {
  OffloadCaps c;
  c.csum = t & kTunFCsum;
  c.tso4 = c.csum && (t & kTunFTso4);
  c.tso6 = c.csum && (t & kTunFTso6);
  c.tso_ecn = (c.tso4 || c.tso6) && (t & kTunFTsoEcn);
  c.uso = c.csum && (t & kTunFUso4) && (t & kTunFUso6);
  return c;
}

const char* offload_error_name(OffloadError e) {
  switch (e) {
    case OffloadError::kOk:
      return "ok";
    case OffloadError::kFlagsForbidden:
      return "flags_forbidden";
    case OffloadError::kCsumNotNegotiated:
      return "csum_not_negotiated";
    case OffloadError::kCsumStartBeyondFrame:
      return "csum_start_beyond_frame";
    case OffloadError::kCsumOffsetBeyondFrame:
      return "csum_offset_beyond_frame";
    case OffloadError::kGsoUnknownType:
      return "gso_unknown_type";
    case OffloadError::kGsoNotNegotiated:
      return "gso_not_negotiated";
    case OffloadError::kEcnNotNegotiated:
      return "ecn_not_negotiated";
    case OffloadError::kEcnWithoutTcp:
      return "ecn_without_tcp";
    case OffloadError::kGsoUfoUnsupported:
      return "gso_ufo_unsupported";
    case OffloadError::kGsoWithoutCsum:
      return "gso_without_csum";
    case OffloadError::kGsoSizeZero:
      return "gso_size_zero";
    case OffloadError::kHdrLenBeyondFrame:
      return "hdr_len_beyond_frame";
    case OffloadError::kGsoBadHeaders:
      return "gso_bad_headers";
    case OffloadError::kGsoL3Mismatch:
      return "gso_l3_mismatch";
    case OffloadError::kGsoL4Mismatch:
      return "gso_l4_mismatch";
    case OffloadError::kGsoFragment:
      return "gso_fragment";
    case OffloadError::kGsoLengthMismatch:
      return "gso_length_mismatch";
    case OffloadError::kGsoCsumMismatch:
      return "gso_csum_mismatch";
    case OffloadError::kGsoTooManySegments:
      return "gso_too_many_segments";
    case OffloadError::kCount:
      break;
  }
  return "?";
}

OffloadError validate_offloads(const Packet& p, OffloadCaps src) {
  const virtio_net_hdr_v1& h = p.vhdr;
  // 5.1.6.2.1: the driver MUST NOT set DATA_VALID or RSC_INFO. Passing DATA_VALID on would
  // let a guest make its peers skip checksum verification.
  if (h.flags & (VIRTIO_NET_HDR_F_DATA_VALID | VIRTIO_NET_HDR_F_RSC_INFO)) {
    return OffloadError::kFlagsForbidden;
  }
  const bool needs_csum = h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM;
  if (needs_csum) {
    // 5.1.6.2.1: NEEDS_CSUM only with VIRTIO_NET_F_CSUM; csum_start and csum_offset must
    // leave room for the 16-bit checksum inside the frame (Linux skb_partial_csum_set).
    if (!src.csum) return OffloadError::kCsumNotNegotiated;
    const uint32_t start = vh16(h.csum_start);
    if (start + 2 > p.len) return OffloadError::kCsumStartBeyondFrame;
    if (start + vh16(h.csum_offset) + 2 > p.len) return OffloadError::kCsumOffsetBeyondFrame;
  }
  const uint8_t type = h.gso_type & kGsoTypeMask;
  const bool ecn = h.gso_type & VIRTIO_NET_HDR_GSO_ECN;
  if (type == VIRTIO_NET_HDR_GSO_NONE) {
    // Linux virtio_net_hdr_to_skb rejects GSO_NONE | ECN as an unknown type.
    return ecn ? OffloadError::kEcnWithoutTcp : OffloadError::kOk;
  }
  if (const OffloadError e = check_gso_header(h, type); e != OffloadError::kOk) return e;
  // 5.1.6.2.1: a GSO type only with its HOST_* feature, the ECN bit only with HOST_ECN.
  const bool allowed = (type == VIRTIO_NET_HDR_GSO_TCPV4 && src.tso4) ||
                       (type == VIRTIO_NET_HDR_GSO_TCPV6 && src.tso6) ||
                       (type == VIRTIO_NET_HDR_GSO_UDP_L4 && src.uso);
  if (!allowed) return OffloadError::kGsoNotNegotiated;
  if (ecn && !src.tso_ecn) return OffloadError::kEcnNotNegotiated;
  // hdr_len is a hint (5.1.6.2.2) and is not used, but one past the frame is a lie.
  if (vh16(h.hdr_len) > p.len) return OffloadError::kHdrLenBeyondFrame;
  FrameInfo f;
  uint32_t total = 0;
  return check_gso_layout(p, type, &f, &total);
}

bool finish_csum(Packet& p) {
  virtio_net_hdr_v1& h = p.vhdr;
  if (!(h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) return true;
  const uint32_t start = vh16(h.csum_start);
  const uint32_t at = start + vh16(h.csum_offset);
  if (start + 2 > p.len || at + 2 > p.len) return false;
  uint16_t c = csum_finish(csum_partial(p.data + start, p.len - start));
  if (c == 0) c = 0xffff;  // RFC 768: 0 means "no checksum" for UDP; same value for TCP
  store_be16(p.data + at, c);
  h.flags &= uint8_t(~VIRTIO_NET_HDR_F_NEEDS_CSUM);
  return true;
}

OffloadAction decide_offloads(const Packet& p, OffloadCaps dst) {
  const uint8_t type = p.vhdr.gso_type & kGsoTypeMask;
  if (type == VIRTIO_NET_HDR_GSO_NONE) {
    return (p.vhdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !dst.csum ? OffloadAction::kFinishCsum
                                                                     : OffloadAction::kPass;
  }
  bool ok = dst.csum && ((type == VIRTIO_NET_HDR_GSO_TCPV4 && dst.tso4) ||
                         (type == VIRTIO_NET_HDR_GSO_TCPV6 && dst.tso6) ||
                         (type == VIRTIO_NET_HDR_GSO_UDP_L4 && dst.uso));
  // 5.1.6.4: GUEST_ECN (TUN_F_TSO_ECN) is needed to take a TSO frame with the ECN bit; the
  // software path puts CWR on the first segment only.
  if ((p.vhdr.gso_type & VIRTIO_NET_HDR_GSO_ECN) && !dst.tso_ecn) ok = false;
  return ok ? OffloadAction::kPass : OffloadAction::kSegment;
}

SegmentResult segment(const Packet& in, OffloadCaps dst, uint32_t first, Packet* const* out,
                      uint32_t n_out) {
  SegmentResult r;
  const uint8_t type = in.vhdr.gso_type & kGsoTypeMask;
  r.error = check_gso_header(in.vhdr, type);
  if (r.error != OffloadError::kOk) return r;
  FrameInfo f;
  r.error = check_gso_layout(in, type, &f, &r.total);
  if (r.error != OffloadError::kOk) return r;

  const bool tcp = f.l4_proto == kIpProtoTcp;
  const uint32_t mss = vh16(in.vhdr.gso_size);
  const uint32_t hdr = f.payload_off;
  const uint32_t payload = in.len - hdr;
  const uint32_t csum_off = tcp ? kTcpCsumOffset : kUdpCsumOffset;
  const uint8_t* in_l3 = in.data + f.l3_off;
  const uint16_t ip_id = f.ip_version == 4 ? load_be16(in_l3 + 4) : 0;
  const uint32_t seq = tcp ? load_be32(in.data + f.l4_off + 4) : 0;

  for (uint32_t k = first; k < r.total && r.produced < n_out; ++k) {
    Packet& o = *out[r.produced++];
    const uint32_t off = k * mss;  // k < kMaxGsoSegments, mss < 65536: no overflow
    const uint32_t seg = payload - off < mss ? payload - off : mss;
    std::memcpy(o.data, in.data, hdr);
    std::memcpy(o.data + hdr, in.data + hdr + off, seg);
    o.len = hdr + seg;
    o.vlan = in.vlan;
    o.flow = in.flow;  // the same addresses and ports

    uint8_t* l3 = o.data + f.l3_off;
    uint8_t* l4 = o.data + f.l4_off;
    const uint32_t l4_len = o.len - f.l4_off;
    uint32_t pseudo;
    if (f.ip_version == 4) {
      // RFC 791: total length, identification (Linux inet_gso_segment: id + index),
      // header checksum.
      store_be16(l3 + 2, uint16_t(o.len - f.l3_off));
      store_be16(l3 + 4, uint16_t(ip_id + k));
      store_be16(l3 + 10, ipv4_header_checksum(l3, f.l3_len));
      pseudo = pseudo_sum_v4(l3 + 12, l3 + 16, f.l4_proto, l4_len);
    } else {
      // RFC 8200 section 3: payload length counts extension headers too.
      store_be16(l3 + 4, uint16_t(o.len - f.l3_off - 40));
      pseudo = pseudo_sum_v6(l3 + 8, l3 + 24, f.l4_proto, l4_len);
    }
    if (tcp) {
      // RFC 793 sequence numbers; RFC 3168 section 6.1.2: CWR only on the first segment.
      store_be32(l4 + 4, seq + off);
      if (k != 0) l4[13] &= uint8_t(~kTcpCwr);
      if (k + 1 != r.total) l4[13] &= uint8_t(~(kTcpFin | kTcpPsh));
    } else {
      store_be16(l4 + 4, uint16_t(l4_len));  // RFC 768 length
    }
    o.vhdr = {};
    if (dst.csum) {
      // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum.
      store_be16(l4 + csum_off, csum_fold(pseudo));
      o.vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
      o.vhdr.csum_start = vh16(uint16_t(f.l4_off));
      o.vhdr.csum_offset = vh16(uint16_t(csum_off));
    } else {
      store_be16(l4 + csum_off, 0);
      uint16_t c = csum_finish(csum_partial(l4, l4_len, pseudo));
      if (c == 0) c = 0xffff;
      store_be16(l4 + csum_off, c);
    }
  }
  return r;
}

}  // namespace vnet::net
