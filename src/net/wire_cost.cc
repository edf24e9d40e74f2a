// gso_wire_cost(): the segments and wire bytes of a TSO/USO frame; see wire_cost.h.
#include "net/wire_cost.h"

#include <algorithm>
#include <bit>

#include "net/frame.h"

namespace vnet::net {

namespace {
// The smallest headers a GSO frame can have: Ethernet, IPv4 without options, UDP.
constexpr uint32_t kMinGsoHeaders = kEthHdrLen + 20 + 8;
}  // namespace

WireCost gso_wire_cost(const Packet& p) {
  uint16_t mss = p.vhdr.gso_size;  // little-endian (VIRTIO_F_VERSION_1)
  if constexpr (std::endian::native == std::endian::big) mss = __builtin_bswap16(mss);
  if (mss == 0) return WireCost{1, p.len};  // not segmentable: one frame
  // Only the headers are read, which producers keep in data (an external packet's first
  // kDirectHead bytes); the rest of data is the packet's own memory either way.
  FrameInfo f;
  const ParseStatus st = parse_frame(p.data, p.len, &f);
  uint32_t hdr = kMinGsoHeaders;
  if ((st == ParseStatus::kOk) && f.payload_off <= p.head_len() && f.payload_off <= p.len)
    hdr = f.payload_off;
  hdr = std::min(hdr, p.len);
  const uint32_t payload = p.len - hdr;
  const uint32_t segs = payload == 0 ? 1 : (payload + mss - 1) / mss;
  return WireCost{segs, uint64_t(p.len) + uint64_t(segs - 1) * hdr};
}

}  // namespace vnet::net
