// RFC 1071 checksum with a 64-bit accumulator; see checksum.h.
#include "net/checksum.h"

#include <bit>
#include <cstring>

namespace vnet::net {

namespace {

// Folds a 64-bit ones'-complement accumulator to 16 bits.
inline uint32_t fold64(uint64_t s) {
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffffffff) + (s >> 32);
  return csum_fold(uint32_t(s));
}

inline uint64_t add64(uint64_t a, uint64_t b) {
  uint64_t s = a + b;
  return s + (s < a);
}

}  // namespace

uint32_t csum_partial(const void* data, size_t len, uint32_t sum) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  // Words are summed in native byte order (RFC 1071 section 2(B): the sum is independent
  // of byte order up to a final swap), 8 bytes per addition with end-around carry.
  uint64_t acc = 0;
  while (len >= 32) {
    uint64_t w[4];
    std::memcpy(w, p, 32);
    acc = add64(acc, w[0]);
    acc = add64(acc, w[1]);
    acc = add64(acc, w[2]);
    acc = add64(acc, w[3]);
    p += 32;
    len -= 32;
  }
  while (len >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    acc = add64(acc, w);
    p += 8;
    len -= 8;
  }
  // The tail: up to 7 bytes, placed where they would sit in a native 64-bit load (a
  // missing odd byte is a zero pad, RFC 1071 section 4.1).
  uint64_t tail = 0;
  std::memcpy(&tail, p, len);
  acc = add64(acc, tail);
  uint32_t folded = fold64(acc);
  if constexpr (std::endian::native == std::endian::little) {
    folded = uint16_t((folded >> 8) | (folded << 8));
  }
  return csum_add(sum, folded);
}

uint16_t ipv4_header_checksum(const uint8_t* hdr, size_t len) {
  uint32_t s = csum_partial(hdr, 10);
  s = csum_partial(hdr + 12, len - 12, s);
  return csum_finish(s);
}

uint32_t pseudo_sum_v4(const uint8_t* src4, const uint8_t* dst4, uint8_t proto, uint32_t l4_len) {
  uint32_t s = csum_partial(src4, 4);
  s = csum_partial(dst4, 4, s);
  s = csum_add(s, proto);
  s = csum_add(s, l4_len >> 16);
  return csum_add(s, l4_len & 0xffff);
}

uint32_t pseudo_sum_v6(const uint8_t* src16, const uint8_t* dst16, uint8_t proto, uint32_t l4_len) {
  uint32_t s = csum_partial(src16, 16);
  s = csum_partial(dst16, 16, s);
  s = csum_add(s, l4_len >> 16);
  s = csum_add(s, l4_len & 0xffff);
  return csum_add(s, proto);
}

}  // namespace vnet::net
