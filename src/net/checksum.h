// Internet checksum (RFC 1071) and its incremental update (RFC 1624), the IPv4 header
// checksum (RFC 791 section 3.1) and the TCP/UDP pseudo-header sums for IPv4 (RFC 793
// section 3.1, RFC 768) and IPv6 (RFC 8200 section 8.1).
//
// Conventions. A "sum" is an unfolded ones'-complement accumulator (uint32_t): the sum of
// the data read as big-endian 16-bit words, with carries not yet folded back. Sums add with
// csum_add(). csum_fold() folds a sum to 16 bits; csum_finish() also complements it and
// gives the value to store in a header. All 16-bit values here are in host order (what a
// big-endian load of the field gives); store_be16() writes them to a frame.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vnet::net {

inline uint16_t load_be16(const uint8_t* p) {
  return uint16_t((p[0] << 8) | p[1]);
}
inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

// Ones'-complement addition of two sums (end-around carry).
inline uint32_t csum_add(uint32_t a, uint32_t b) {
  uint32_t s = a + b;
  return s + (s < a);
}

// Folds a sum to 16 bits (not complemented).
inline uint16_t csum_fold(uint32_t sum) {
  sum = (sum & 0xffff) + (sum >> 16);
  sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(sum);
}

// The checksum to store: the complement of the folded sum.
inline uint16_t csum_finish(uint32_t sum) {
  return uint16_t(~csum_fold(sum));
}

// RFC 1071 sum of `len` bytes at `data`, added to `sum`. The bytes are taken as big-endian
// 16-bit words starting at `data`, so when a region is summed in pieces every piece but the
// last must have an even length. Accumulates 64 bits at a time.
uint32_t csum_partial(const void* data, size_t len, uint32_t sum = 0);

// Checksum of an IPv4 header of `len` bytes (IHL * 4) whose checksum field is ignored
// (taken as zero): the value to store at offset 10.
uint16_t ipv4_header_checksum(const uint8_t* hdr, size_t len);

// Pseudo-header sums (not folded, not complemented) for an L4 segment of `l4_len` bytes.
uint32_t pseudo_sum_v4(const uint8_t* src4, const uint8_t* dst4, uint8_t proto, uint32_t l4_len);
uint32_t pseudo_sum_v6(const uint8_t* src16, const uint8_t* dst16, uint8_t proto, uint32_t l4_len);

// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), the checksum after a 16-bit field changes from
// `old_val` to `new_val`, without summing the data again.
inline uint16_t csum_replace16(uint16_t check, uint16_t old_val, uint16_t new_val) {
  uint32_t s = uint16_t(~check);
  s = csum_add(s, uint16_t(~old_val));
  s = csum_add(s, new_val);
  return csum_finish(s);
}

// The same for a 32-bit field (two 16-bit words), e.g. an address or a sequence number.
inline uint16_t csum_replace32(uint16_t check, uint32_t old_val, uint32_t new_val) {
  uint32_t s = uint16_t(~check);
  s = csum_add(s, uint16_t(~(old_val >> 16)));
  s = csum_add(s, uint16_t(~old_val));
  s = csum_add(s, new_val >> 16);
  s = csum_add(s, new_val & 0xffff);
  return csum_finish(s);
}

}  // namespace vnet::net
