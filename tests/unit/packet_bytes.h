// The bytes of the frame a net::Packet holds: its head, then an external packet's tail
// pieces (Packet::tail), as a destination port would see them.
#pragma once

#include <cstdint>
#include <vector>

#include "net/packet.h"

namespace vnet::test {

inline std::vector<uint8_t> frame_bytes(const net::Packet& p) {
  std::vector<uint8_t> b(p.data, p.data + p.head_len());
  for (uint32_t i = 0; i < p.tail_n; ++i) {
    const uint8_t* t = static_cast<const uint8_t*>(p.tail[i].iov_base);
    b.insert(b.end(), t, t + p.tail[i].iov_len);
  }
  return b;
}

}  // namespace vnet::test
