// Copies between flat buffers and iovec lists (descriptor chains as host pieces).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace vnet::net {

// memcpy of a frame's bytes between two buffers that do not overlap. Frames of 32 to 64
// bytes (minimum-size frames, pure ACKs) move as two overlapping fixed 32-byte pieces,
// inline, instead of through a call into libc that first finds out what this branch
// knows; the others go to memcpy.
inline void copy_frame_bytes(void* dst, const void* src, size_t n) {
  if (n - 32 <= 32) {
    std::memcpy(dst, src, 32);
    std::memcpy(static_cast<uint8_t*>(dst) + n - 32, static_cast<const uint8_t*>(src) + n - 32, 32);
  } else {
    std::memcpy(dst, src, n);
  }
}

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

// Copies `len` bytes starting `src_skip` bytes into src[0..sn) to dst[0..dn), starting
// `dst_skip` bytes in. Returns the bytes copied (less when either side runs out).
inline size_t iov_to_iov(const iovec* src, size_t sn, size_t src_skip, const iovec* dst, size_t dn,
                         size_t dst_skip, size_t len) {
  size_t done = 0;
  for (size_t i = 0; i < sn && done < len; ++i) {
    size_t seg = src[i].iov_len;
    if (src_skip >= seg) {
      src_skip -= seg;
      continue;
    }
    size_t c = seg - src_skip;
    if (c > len - done) c = len - done;
    size_t w = buf_to_iov(static_cast<const uint8_t*>(src[i].iov_base) + src_skip, c, dst, dn,
                          dst_skip + done);
    done += w;
    if (w < c) break;
    src_skip = 0;
  }
  return done;
}

}  // namespace vnet::net
