// What a frame costs on the wire, for policing: a frame without GSO is one packet of its
// length; a TSO/USO frame (virtio_net_hdr gso_type) is the segments it becomes, each with
// its own copy of the headers, so a 64 KiB frame with a gso_size of 1 is thousands of
// packets, not one. Lengths are Ethernet frames without FCS, as the switch counts them.
#pragma once

#include <cstdint>

#include "net/packet.h"

namespace vnet::net {

struct WireCost {
  uint32_t packets = 1;
  uint64_t bytes = 0;
};

// A GSO frame: segments = ceil(L4 payload / gso_size) (at least 1), bytes = the frame plus
// the headers (up to the L4 payload) again for every further segment. The headers are
// parsed from the frame (hdr_len is only a hint from the sender); if they do not parse,
// the smallest possible headers are assumed, which counts at least as many segments as
// segmentation would make.
WireCost gso_wire_cost(const Packet& p);

inline WireCost wire_cost(const Packet& p) {
  if (p.vhdr.gso_type == VIRTIO_NET_HDR_GSO_NONE) [[likely]]
    return WireCost{1, p.len};
  return gso_wire_cost(p);
}

}  // namespace vnet::net
