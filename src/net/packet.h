// Packet: one frame in flight through the switch, with the virtio-net offload
// metadata it arrived with. A worker owns a fixed PacketBatch of them, reused for
// every burst: the hot path allocates nothing.
#pragma once

#include "virtio/net_uapi.h"

#include <cstdint>
#include <memory>

namespace vnet::net {

inline constexpr uint32_t kBurst = 32;
inline constexpr uint32_t kEthHdrLen = 14;
// Largest frame a port may hand to the switch: a 64 KiB GSO frame plus Ethernet and
// VLAN headers.
inline constexpr uint32_t kMaxFrame = 65536 + 2 * 18;

struct Packet {
  virtio_net_hdr_v1 vhdr;  // offload metadata (flags, gso_*, csum_*); num_buffers unused
  uint32_t len = 0;
  uint16_t vlan = 0;  // VLAN inside the switch (set by the forwarder); data is untagged
  alignas(64) uint8_t data[kMaxFrame];
};

// kBurst packets and an array of pointers to them.
class PacketBatch {
 public:
  PacketBatch() : storage_(new Packet[kBurst]) {
    for (uint32_t i = 0; i < kBurst; ++i) ptrs_[i] = &storage_[i];
  }
  Packet** ptrs() { return ptrs_; }
  Packet& operator[](uint32_t i) { return *ptrs_[i]; }

 private:
  std::unique_ptr<Packet[]> storage_;
  Packet* ptrs_[kBurst];
};

}  // namespace vnet::net
