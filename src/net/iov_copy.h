// Copies between flat buffers and iovec lists (descriptor chains as host pieces).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace vnet::net {

namespace detail {
// Walks iov[0..n) from byte `skip` on and copies up to `len` bytes between it and
// `flat`, in the direction ToIov says. Returns the bytes copied.
template <bool ToIov>
inline size_t iov_copy(const iovec* iov, size_t n, size_t skip, uint8_t* flat, size_t len) {
  size_t done = 0;
  for (size_t i = 0; i < n && done < len; ++i) {
    size_t seg = iov[i].iov_len;
    if (skip >= seg) {
      skip -= seg;
      continue;
    }
    size_t c = seg - skip;
    if (c > len - done) c = len - done;
    uint8_t* piece = static_cast<uint8_t*>(iov[i].iov_base) + skip;
    if constexpr (ToIov)
      memcpy(piece, flat + done, c);
    else
      memcpy(flat + done, piece, c);
    done += c;
    skip = 0;
  }
  return done;
}
}  // namespace detail

// Copies up to `len` bytes from iov[0..n), skipping the first `skip` bytes, to dst.
// Returns the bytes copied (less than len when the iovecs run out).
inline size_t iov_to_buf(const iovec* iov, size_t n, size_t skip, void* dst, size_t len) {
  return detail::iov_copy<false>(iov, n, skip, static_cast<uint8_t*>(dst), len);
}

// Copies up to `len` bytes from src into iov[0..n), starting `skip` bytes in.
// Returns the bytes copied.
inline size_t buf_to_iov(const void* src, size_t len, const iovec* iov, size_t n, size_t skip) {
  return detail::iov_copy<true>(iov, n, skip, static_cast<uint8_t*>(const_cast<void*>(src)), len);
}

}  // namespace vnet::net
