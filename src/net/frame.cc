// Bounded, length-checked frame parser; see frame.h.
#include "net/frame.h"

#include "net/checksum.h"

namespace vnet::net {

const char* parse_status_name(ParseStatus s) {
  switch (s) {
    case ParseStatus::kOk:
      return "ok";
    case ParseStatus::kNotIp:
      return "not_ip";
    case ParseStatus::kL4Unknown:
      return "l4_unknown";
    case ParseStatus::kTruncatedL2:
      return "truncated_l2";
    case ParseStatus::kTooManyVlans:
      return "too_many_vlans";
    case ParseStatus::kBadIpv4:
      return "bad_ipv4";
    case ParseStatus::kBadIpv6:
      return "bad_ipv6";
    case ParseStatus::kTooManyExtHdrs:
      return "too_many_ext_hdrs";
    case ParseStatus::kBadL4:
      return "bad_l4";
  }
  return "?";
}

namespace {

// IPv4 (RFC 791 section 3.1). Sets l3_len, ip_end, l4_proto, fragment fields.
ParseStatus parse_ipv4(const uint8_t* data, uint32_t len, FrameInfo& f) {
  const uint32_t off = f.l3_off;
  if (len - off < 20) return ParseStatus::kBadIpv4;
  const uint8_t* ip = data + off;
  if ((ip[0] >> 4) != 4) return ParseStatus::kBadIpv4;
  const uint32_t ihl = uint32_t(ip[0] & 0xf) * 4;
  const uint32_t total = load_be16(ip + 2);
  if (ihl < 20 || total < ihl || total > len - off) return ParseStatus::kBadIpv4;
  f.ip_version = 4;
  f.l3_len = ihl;
  f.ip_end = off + total;
  f.l4_proto = ip[9];
  const uint16_t frag = load_be16(ip + 6);
  const bool mf = frag & 0x2000;
  const uint32_t frag_off = frag & 0x1fff;
  f.is_fragment = mf || frag_off != 0;
  f.first_fragment = f.is_fragment && frag_off == 0;
  f.l4_off = off + ihl;
  return frag_off != 0 ? ParseStatus::kL4Unknown : ParseStatus::kOk;
}

// IPv6 (RFC 8200 sections 3, 4): the fixed header, then hop-by-hop (only first, 4.3),
// routing, fragment, destination options and AH (RFC 4302 section 2.2, 4-byte units).
ParseStatus parse_ipv6(const uint8_t* data, uint32_t len, FrameInfo& f) {
  const uint32_t off = f.l3_off;
  if (len - off < 40) return ParseStatus::kBadIpv6;
  const uint8_t* ip = data + off;
  if ((ip[0] >> 4) != 6) return ParseStatus::kBadIpv6;
  const uint32_t payload = load_be16(ip + 4);
  // A payload length of 0 means a jumbogram (RFC 2675): not supported here.
  if (payload == 0 || payload > len - off - 40) return ParseStatus::kBadIpv6;
  f.ip_version = 6;
  f.ip_end = off + 40 + payload;
  uint8_t next = ip[6];
  uint32_t pos = off + 40;
  bool non_first_fragment = false;
  for (uint32_t n = 0;; ++n) {
    uint32_t ext_len;
    switch (next) {
      case 43:  // routing (4.4): byte 3 is segments left
        if (f.ip_end - pos < 8) return ParseStatus::kBadIpv6;
        if (data[pos + 3] != 0) f.ipv6_routing_pending = true;
        ext_len = (uint32_t(data[pos + 1]) + 1) * 8;
        break;
      case 0:  // hop-by-hop: only immediately after the IPv6 header
        if (n != 0) return ParseStatus::kBadIpv6;
        [[fallthrough]];
      case 60:  // destination options
        if (f.ip_end - pos < 8) return ParseStatus::kBadIpv6;
        ext_len = (uint32_t(data[pos + 1]) + 1) * 8;
        break;
      case 51:  // AH
        if (f.ip_end - pos < 8) return ParseStatus::kBadIpv6;
        ext_len = (uint32_t(data[pos + 1]) + 2) * 4;
        break;
      case 44: {  // fragment (4.5): fixed 8 bytes
        if (f.ip_end - pos < 8) return ParseStatus::kBadIpv6;
        if (f.is_fragment) return ParseStatus::kBadIpv6;  // two fragment headers
        ext_len = 8;
        const uint16_t fo = load_be16(data + pos + 2);
        f.is_fragment = true;
        f.ipv6_frag_off = pos;
        f.first_fragment = (fo & 0xfff8) == 0;
        non_first_fragment = !f.first_fragment;
        break;
      }
      default:
        f.l3_len = pos - off;
        f.l4_proto = next;
        f.l4_off = pos;
        return non_first_fragment ? ParseStatus::kL4Unknown : ParseStatus::kOk;
    }
    if (n >= kMaxIpv6ExtHeaders) return ParseStatus::kTooManyExtHdrs;
    if (ext_len > f.ip_end - pos) return ParseStatus::kBadIpv6;
    next = data[pos];
    pos += ext_len;
    if (non_first_fragment) {
      // What follows the fragment header of a non-first fragment is not a header.
      f.l3_len = pos - off;
      f.l4_proto = next;
      f.l4_off = pos;
      return ParseStatus::kL4Unknown;
    }
  }
}

}  // namespace

ParseStatus parse_frame(const uint8_t* data, uint32_t len, FrameInfo* out) {
  FrameInfo& f = *out;
  f = FrameInfo{};
  if (len < 14) return ParseStatus::kTruncatedL2;
  uint32_t pos = 12;
  uint16_t type = load_be16(data + pos);
  while (type == kEthPVlan || type == kEthPQinQ) {
    if (f.n_vlans == kMaxVlanTags) return ParseStatus::kTooManyVlans;
    if (len - pos < 6) return ParseStatus::kTruncatedL2;  // TPID+TCI+next type
    f.vlan_tpid[f.n_vlans] = type;
    f.vlan_tci[f.n_vlans] = load_be16(data + pos + 2);
    ++f.n_vlans;
    pos += 4;
    type = load_be16(data + pos);
  }
  f.ethertype = type;
  f.l2_len = pos + 2;
  f.l3_off = f.l2_len;
  ParseStatus st;
  if (type == kEthPIpv4) {
    st = parse_ipv4(data, len, f);
  } else if (type == kEthPIpv6) {
    st = parse_ipv6(data, len, f);
  } else {
    return ParseStatus::kNotIp;
  }
  if (st != ParseStatus::kOk) return st;
  // L4, bounded by the end of the IP datagram (which parse_ipv* checked against len).
  const uint32_t avail = f.ip_end - f.l4_off;
  if (f.l4_proto == kIpProtoTcp) {
    if (avail < 20) return ParseStatus::kBadL4;
    const uint32_t doff = uint32_t(data[f.l4_off + 12] >> 4) * 4;
    if (doff < 20 || doff > avail) return ParseStatus::kBadL4;
    f.l4_hdr_len = doff;
  } else if (f.l4_proto == kIpProtoUdp) {
    if (avail < 8) return ParseStatus::kBadL4;
    f.l4_hdr_len = 8;
  } else {
    return ParseStatus::kL4Unknown;
  }
  f.payload_off = f.l4_off + f.l4_hdr_len;
  return ParseStatus::kOk;
}

}  // namespace vnet::net
