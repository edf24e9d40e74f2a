// Test helpers for building and checking frames by hand: big-endian field access and
// the RFC 1071 reference checksum (the straightforward way, independent of src/net).
#pragma once

#include <cstddef>
#include <cstdint>

namespace vnet::test {

inline uint16_t rd16(const uint8_t* p) {
  return uint16_t((p[0] << 8) | p[1]);
}
inline uint32_t rd32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
inline void wr16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void wr32(uint8_t* p, uint32_t v) {
  wr16(p, uint16_t(v >> 16));
  wr16(p + 2, uint16_t(v));
}

// RFC 1071 section 4.1: 16-bit big-endian words, odd byte padded, carries folded at the
// end. Returns the folded sum (not complemented).
inline uint16_t ref_sum(const uint8_t* p, size_t n, uint64_t init = 0) {
  uint64_t s = init;
  for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t(p[i]) << 8) | p[i + 1];
  if (n & 1) s += uint32_t(p[n - 1]) << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return uint16_t(s);
}

}  // namespace vnet::test
