// Frame parsing for offload work: Ethernet (IEEE 802.3), up to two 802.1Q / 802.1ad tags,
// IPv4 (RFC 791) or IPv6 (RFC 8200) with its common extension headers, then TCP (RFC 793)
// or UDP (RFC 768). Frames come from hostile guests: every read is checked against the
// frame length and IP lengths are checked against it; nothing here allocates or throws.
#pragma once

#include <cstdint>

namespace vnet::net {

inline constexpr uint16_t kEthPIpv4 = 0x0800;
inline constexpr uint16_t kEthPIpv6 = 0x86dd;
inline constexpr uint16_t kEthPVlan = 0x8100;  // 802.1Q C-tag
inline constexpr uint16_t kEthPQinQ = 0x88a8;  // 802.1ad S-tag
inline constexpr uint8_t kIpProtoTcp = 6;
inline constexpr uint8_t kIpProtoUdp = 17;
inline constexpr uint32_t kMaxVlanTags = 2;
// Bound on the IPv6 extension headers walked before the upper-layer header.
inline constexpr uint32_t kMaxIpv6ExtHeaders = 8;

// How far parse_frame() got. Anything but kOk/kNotIp/kL4Unknown leaves the later fields
// of FrameInfo unset (zero).
enum class ParseStatus : uint8_t {
  kOk,              // Ethernet, IP and (unless a non-first fragment) TCP/UDP parsed
  kNotIp,           // Ethernet (and tags) parsed; the ethertype is not IPv4/IPv6
  kL4Unknown,       // IP parsed; the protocol is neither TCP nor UDP, or a non-first fragment
  kTruncatedL2,     // shorter than the Ethernet header or its VLAN tags
  kTooManyVlans,    // a third VLAN tag
  kBadIpv4,         // version/IHL/total length inconsistent or truncated
  kBadIpv6,         // truncated, jumbogram (payload length 0), or truncated/misplaced ext header
  kTooManyExtHdrs,  // more than kMaxIpv6ExtHeaders extension headers
  kBadL4,           // TCP/UDP header truncated or TCP data offset below 5
};

const char* parse_status_name(ParseStatus s);

struct FrameInfo {
  uint32_t l2_len = 0;  // Ethernet header plus tags = offset of the L3 header
  uint32_t n_vlans = 0;
  uint16_t vlan_tpid[kMaxVlanTags] = {};  // outermost first
  uint16_t vlan_tci[kMaxVlanTags] = {};
  uint16_t ethertype = 0;  // after the tags
  uint32_t l3_off = 0;
  uint8_t ip_version = 0;  // 4, 6 or 0 (not IP)
  uint32_t l3_len = 0;     // IPv4 header with options / IPv6 header with extension headers
  uint32_t ip_end = 0;     // offset just past the IP datagram (total/payload length)
  uint8_t l4_proto = 0;    // the upper-layer protocol (after IPv6 extension headers)
  uint32_t l4_off = 0;
  uint32_t l4_hdr_len = 0;      // TCP data offset * 4, 8 for UDP, 0 if not parsed
  uint32_t payload_off = 0;     // l4_off + l4_hdr_len
  bool is_fragment = false;     // IPv4 MF/offset or IPv6 fragment header
  bool first_fragment = false;  // is_fragment and offset 0: the L4 header is present
  uint32_t ipv6_frag_off = 0;   // offset of an IPv6 fragment header (0: none)
  // An IPv6 routing header with segments left > 0: the pseudo-header destination of the
  // upper layer is then not the IPv6 destination address (RFC 8200 section 8.1).
  bool ipv6_routing_pending = false;
};

// Parses `len` bytes of a frame starting at the Ethernet destination address. Never reads
// at or past data + len (L4 is bounded by the IP datagram's end, itself <= len).
ParseStatus parse_frame(const uint8_t* data, uint32_t len, FrameInfo* out);

}  // namespace vnet::net
