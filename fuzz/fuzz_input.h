// FuzzInput: reads a fuzzer's input as a stream of little-endian integers and byte
// strings. Past the end every read gives zeros (and empty() says so), so a target never
// needs to check lengths before it reads a field. Shared by the targets in fuzz/, with
// FUZZ_CHECK and an open-fd count.
#pragma once

#include <dirent.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "net/offload.h"

namespace vnet::fuzz {

// Offload capabilities from the low five bits of an input byte.
inline net::OffloadCaps caps_from(uint8_t b) {
  net::OffloadCaps c;
  c.csum = b & 1;
  c.tso4 = b & 2;
  c.tso6 = b & 4;
  c.tso_ecn = b & 8;
  c.uso = b & 16;
  return c;
}

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : p_(data), left_(size) {}

  bool empty() const { return left_ == 0; }
  size_t left() const { return left_; }

  uint8_t u8() { return uint8_t(take(1)); }
  uint16_t u16() { return uint16_t(take(2)); }
  uint32_t u32() { return uint32_t(take(4)); }
  uint64_t u64() { return take(8); }
  bool flag() { return u8() & 1; }

  // Copies up to `n` bytes to `dst`, zero-filling what the input does not have.
  // Returns the bytes that came from the input.
  size_t bytes(void* dst, size_t n) {
    size_t c = n < left_ ? n : left_;
    if (c) std::memcpy(dst, p_, c);
    if (n > c) std::memset(static_cast<uint8_t*>(dst) + c, 0, n - c);
    p_ += c;
    left_ -= c;
    return c;
  }
  // The next `n` bytes (or fewer at the end) without copying.
  const uint8_t* view(size_t n, size_t* got) {
    size_t c = n < left_ ? n : left_;
    const uint8_t* r = p_;
    p_ += c;
    left_ -= c;
    *got = c;
    return r;
  }

 private:
  uint64_t take(size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n && left_ > 0; ++i, --left_) v |= uint64_t(*p_++) << (8 * i);
    return v;
  }
  const uint8_t* p_;
  size_t left_;
};

// File descriptors this process has open (for "no fd leaked by an input" checks).
inline size_t count_open_fds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) std::abort();
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n - 1;  // the directory's own fd
}

// An invariant of the code under test does not hold: report it and abort, so that
// libFuzzer saves the input as a crash.
[[noreturn]] inline void invariant_failed(const char* file, int line, const char* what) {
  std::fprintf(stderr, "\n*** fuzz invariant violated at %s:%d: %s\n", file, line, what);
  std::abort();
}

}  // namespace vnet::fuzz

#define FUZZ_CHECK(cond)                                                    \
  do {                                                                      \
    if (!(cond)) ::vnet::fuzz::invariant_failed(__FILE__, __LINE__, #cond); \
  } while (0)
