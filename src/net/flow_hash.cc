// Flow hash: the frame walk (bounded by len at every step) and the symmetric mix.
#include "net/flow_hash.h"

#include <cstddef>
#include <cstring>

#include "net/frame.h"
#include "net/packet.h"

namespace vnet::net {

namespace {

constexpr uint8_t kIpProtoSctp = 132;

inline uint16_t load_be16(const uint8_t* p) {
  return uint16_t(uint16_t(p[0]) << 8 | p[1]);
}
inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
// 6 bytes (a MAC address) as the low 48 bits of a word, assembled in registers: a
// memcpy of 6 bytes into a zeroed word is two stores and a wider load, which the CPU
// cannot forward from the store buffer (a stall of a dozen cycles per address).
inline uint64_t load_u48(const uint8_t* p) {
  uint16_t hi;
  std::memcpy(&hi, p + 4, sizeof(hi));
  return uint64_t(load_u32(p)) | uint64_t(hi) << 32;
}

// 64-bit finalizer (a well-known avalanche mix: every input bit moves every output bit).
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Odd constants: the key words are multiplied (independent, pipelined) and summed,
// then mixed once: a few multiplies per frame, not one mix per word.
constexpr uint64_t kK1 = 0x9e3779b97f4a7c15ULL, kK2 = 0xc2b2ae3d27d4eb4fULL,
                   kK3 = 0x165667b19e3779f9ULL, kK4 = 0x27d4eb2f165667c5ULL;

inline uint64_t rotl(uint64_t x, unsigned r) {
  return (x << r) | (x >> (64 - r));
}

inline uint32_t finish(uint64_t h) {
  h = mix64(h);
  uint32_t r = uint32_t(h ^ (h >> 32));
  return r ? r : 1;
}

// Symmetric: (a, b) and (b, a) give the same value.
inline uint32_t hash_pair(uint64_t a, uint64_t b, uint64_t extra) {
  const uint64_t lo = a < b ? a : b, hi = a < b ? b : a;
  return finish(lo * kK1 + hi * kK2 + extra * kK3);
}

// An endpoint's address (up to 16 bytes) as two words, compared as a whole.
struct Addr {
  uint64_t hi = 0, lo = 0;
  bool operator<(const Addr& o) const { return hi != o.hi ? hi < o.hi : lo < o.lo; }
};

// hash_l4() of an IPv4 flow (addresses in the low words, ports known), in registers.
inline uint32_t hash_v4(uint32_t src, uint32_t dst, uint16_t sp, uint16_t dp, uint8_t proto) {
  const bool swap = dst < src || (dst == src && dp < sp);
  const uint64_t a = swap ? dst : src, b = swap ? src : dst;
  const uint16_t pa = swap ? dp : sp, pb = swap ? sp : dp;
  const uint64_t key = uint64_t(proto) << 40 | uint64_t(4) << 32 | uint64_t(pa) << 16 | pb;
  return finish(rotl(a, 29) * kK1 + rotl(b, 43) * kK2 + key * kK3 + kK4);
}

uint32_t hash_l4(uint8_t version, const Addr& src, const Addr& dst, const uint8_t* l4,
                 const uint8_t* end, uint8_t proto, bool ports) {
  // Addresses and ports as one endpoint each, ordered, so (src, dst) and (dst, src)
  // give the same value.
  uint16_t sp = 0, dp = 0;
  if (ports && (proto == kIpProtoTcp || proto == kIpProtoUdp || proto == kIpProtoSctp) &&
      end - l4 >= 4) {
    sp = load_be16(l4);
    dp = load_be16(l4 + 2);
  }
  const bool swap = dst < src || (!(src < dst) && dp < sp);
  const Addr& a = swap ? dst : src;
  const Addr& b = swap ? src : dst;
  const uint16_t pa = swap ? dp : sp, pb = swap ? sp : dp;
  const uint64_t key = uint64_t(proto) << 40 | uint64_t(version) << 32 | uint64_t(pa) << 16 | pb;
  return finish((a.hi ^ rotl(a.lo, 29)) * kK1 + (b.hi ^ rotl(b.lo, 43)) * kK2 + key * kK3 + kK4);
}

}  // namespace

uint32_t flow_hash(const uint8_t* frame, uint32_t len) {
  // The common case first: untagged IPv4 without options, TCP, UDP or SCTP, not a
  // fragment. The same value as the general path below gives it (hash_v4).
  if (len >= kEthHdrLen + 24 && load_be16(frame + 12) == kEthPIpv4 && frame[kEthHdrLen] == 0x45)
      [[likely]] {
    const uint8_t* ip = frame + kEthHdrLen;
    const uint8_t proto = ip[9];
    if ((proto == kIpProtoTcp || proto == kIpProtoUdp || proto == kIpProtoSctp) &&
        (load_be16(ip + 6) & 0x3fff) == 0)
      return hash_v4(load_u32(ip + 12), load_u32(ip + 16), load_be16(ip + 20), load_be16(ip + 22),
                     proto);
  }
  if (len < kEthHdrLen) return finish(len + 1);
  const uint8_t* const end = frame + len;
  uint16_t ethertype = load_be16(frame + 12);
  const uint8_t* p = frame + kEthHdrLen;
  // 802.1Q / 802.1ad tags: the VLAN does not enter the hash (a flow is the same flow
  // whichever tag it carries on the way).
  for (uint32_t i = 0; i < kMaxVlanTags && (ethertype == kEthPVlan || ethertype == kEthPQinQ);
       ++i) {
    if (end - p < 4) break;
    ethertype = load_be16(p + 2);
    p += 4;
  }
  // Not IP, or IP that is cut short or malformed: the MAC addresses and the ethertype.
  auto l2 = [&] { return hash_pair(load_u48(frame), load_u48(frame + 6), ethertype); };
  if (ethertype == kEthPIpv4 && end - p >= 20) {
    const uint32_t ihl = uint32_t(p[0] & 0x0f) * 4;
    if ((p[0] >> 4) != 4 || ihl < 20 || end - p < std::ptrdiff_t(ihl)) return l2();
    // RFC 791: MF set or a fragment offset: only the first fragment has the ports, so
    // every fragment hashes by addresses alone.
    const bool fragment = (load_be16(p + 6) & 0x3fff) != 0;
    Addr src, dst;
    src.lo = load_u32(p + 12);
    dst.lo = load_u32(p + 16);
    return hash_l4(4, src, dst, p + ihl, end, p[9], !fragment);
  }
  if (ethertype == kEthPIpv6 && end - p >= 40) {
    if ((p[0] >> 4) != 6) return l2();
    Addr src{load_u64(p + 8), load_u64(p + 16)};
    Addr dst{load_u64(p + 24), load_u64(p + 32)};
    // Extension headers are not walked: the flow is then its addresses (and the next
    // header), the same for every frame of it.
    return hash_l4(6, src, dst, p + 40, end, p[6], true);
  }
  return l2();
}

}  // namespace vnet::net
