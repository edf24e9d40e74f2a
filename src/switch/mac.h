// Mac: an Ethernet address as a 48-bit integer, the form the FDB hashes and compares.
// Loading one from a frame is a 6-byte copy; the integer keeps the wire bytes in
// memory order (so it is only ever turned back into bytes with to_bytes(), never
// interpreted numerically except for equality and hashing).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace vnet::sw {

class Mac {
 public:
  constexpr Mac() = default;

  // Six bytes as they appear on the wire (p[0] first).
  static Mac from_bytes(const uint8_t* p) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    // Two loads into registers. A 6-byte copy into a zeroed uint64_t goes through the
    // stack as a 4- and a 2-byte store read back as one 8-byte load, which the CPU
    // cannot forward (a stall of a dozen cycles, twice per forwarded frame).
    uint32_t lo;
    uint16_t hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 2);
    return Mac(uint64_t(lo) | uint64_t(hi) << 32);
#else
    uint64_t v = 0;
    std::memcpy(&v, p, 6);
    return Mac(v);
#endif
  }
  static Mac from_bytes(const std::array<uint8_t, 6>& b) {
    return from_bytes(b.data());
  }
  static Mac broadcast() {
    static constexpr uint8_t kAll[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    return from_bytes(kAll);
  }
  // "52:54:00:12:34:56" (also accepts '-' separators and upper case).
  static std::optional<Mac> parse(std::string_view s);
  // The packed form, for hashing and table keys: 48 significant bits.
  static constexpr Mac from_raw(uint64_t raw) {
    return Mac(raw & kMask);
  }
  constexpr uint64_t raw() const {
    return v_;
  }

  std::array<uint8_t, 6> to_bytes() const {
    std::array<uint8_t, 6> b;
    std::memcpy(b.data(), &v_, 6);
    return b;
  }
  std::string to_string() const;

  // I/G bit: the least significant bit of the first byte on the wire (IEEE 802-2014 8.2).
  bool is_multicast() const {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return v_ & 1;  // the first byte on the wire is the low byte
#else
    return to_bytes()[0] & 1;
#endif
  }
  bool is_broadcast() const {
    return v_ == kMask;
  }
  bool is_zero() const {
    return v_ == 0;
  }

  friend constexpr bool operator==(Mac a, Mac b) {
    return a.v_ == b.v_;
  }

 private:
  static constexpr uint64_t kMask = (uint64_t(1) << 48) - 1;
  constexpr explicit Mac(uint64_t v) : v_(v) {}
  uint64_t v_ = 0;
};

inline std::string Mac::to_string() const {
  static constexpr char kHex[] = "0123456789abcdef";
  auto b = to_bytes();
  std::string s(17, ':');
  for (int i = 0; i < 6; ++i) {
    s[size_t(i) * 3] = kHex[b[size_t(i)] >> 4];
    s[size_t(i) * 3 + 1] = kHex[b[size_t(i)] & 15];
  }
  return s;
}

inline std::optional<Mac> Mac::parse(std::string_view s) {
  if (s.size() != 17) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  uint8_t b[6];
  for (size_t i = 0; i < 6; ++i) {
    int hi = nibble(s[i * 3]), lo = nibble(s[i * 3 + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    if (i < 5 && s[i * 3 + 2] != ':' && s[i * 3 + 2] != '-') return std::nullopt;
    b[i] = uint8_t(hi << 4 | lo);
  }
  return from_bytes(b);
}

}  // namespace vnet::sw
