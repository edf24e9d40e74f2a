// append_buffer: one descriptor's buffer into a Chain, shared by the split and the
// packed ring walkers (virtio 1.2 sections 2.7.4 and 2.8.4): device-readable pieces
// before device-writable ones, a buffer that spans regions as several pieces, the
// piece count bounded by Chain::kMaxSegs.
#pragma once

#include <cstdint>

#include "memory/guest_memory.h"
#include "virtio/device_queue.h"

namespace vnet::virtio {

// Adds [addr, addr + len) to `c` (segs[0, nsegs) are filled). nullptr when added,
// else the reason the chain is bad. A zero length adds nothing.
inline const char* append_buffer(const memory::GuestMemory& mem, uint64_t addr, uint32_t len,
                                 bool writable, Chain& c, uint32_t& nsegs) {
  // 2.7.4.2 / 2.8.4: device-readable descriptors come before device-writable ones.
  if (!writable && c.n_in) return "device-readable descriptor after a writable one";
  if (len == 0) return nullptr;
  if (nsegs == Chain::kMaxSegs) return "chain has too many pieces";
  size_t k = 1;
  if (uint8_t* h = mem.gpa_to_host(addr, len)) {  // the usual case: one region
    c.segs[nsegs] = iovec{h, len};
  } else {
    k = mem.gpa_to_iov(addr, len, c.segs + nsegs, Chain::kMaxSegs - nsegs);
    if (k == 0) return "buffer outside guest memory";
  }
  nsegs += uint32_t(k);
  if (writable) {
    c.n_in += uint32_t(k);
    c.in_len += len;
  } else {
    c.n_out += uint32_t(k);
    c.out_len += len;
  }
  return nullptr;
}

}  // namespace vnet::virtio
