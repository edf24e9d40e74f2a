// Packet: one frame in flight through the switch, with the virtio-net offload
// metadata it arrived with. A worker owns a fixed PacketBatch of them, reused for
// every burst: the hot path allocates nothing.
#pragma once

#include "virtio/net_uapi.h"

#include <sys/uio.h>

#include <cstdint>
#include <memory>

#include "net/iov_copy.h"

namespace vnet::net {

inline constexpr uint32_t kBurst = 32;
inline constexpr uint32_t kEthHdrLen = 14;
// Largest frame a port may hand to the switch: a 64 KiB GSO frame plus Ethernet and
// VLAN headers.
inline constexpr uint32_t kMaxFrame = 65536 + 2 * 18;

// A frame from a guest's TX queue may stay where the guest put it ("external"): the
// first `head` bytes are copied into data (every header the switch looks at), the rest
// is described by `tail`, pieces of the source guest's memory, and is copied only once,
// straight into each destination (virtio RX buffers take the pieces as they are).
// Valid only until the source port's receive_done(); the forwarder clears it after the
// burst. Producers that know nothing of it leave tail_n 0: the whole frame is in data.
inline constexpr uint32_t kMaxTail = 16;
// Producers lend frames of at least kDirectMin bytes (shorter ones: one copy costs less)
// and copy their first kDirectHead bytes, which hold every header the switch parses.
inline constexpr uint32_t kDirectMin = 512;
inline constexpr uint32_t kDirectHead = 256;

struct Packet {
  virtio_net_hdr_v1 vhdr;  // offload metadata (flags, gso_*, csum_*); num_buffers unused
  uint32_t len = 0;        // whole frame
  uint16_t vlan = 0;       // VLAN inside the switch (set by the forwarder); data is untagged
  uint16_t tail_n = 0;     // 0: local (all of the frame in data)
  uint32_t head = 0;       // with tail_n: bytes of the frame in data
  // flow_hash() of the frame once a port computed it (receive steering), 0: not yet.
  // Whatever fills a packet with a new frame sets it to 0 (where it sets vlan).
  uint32_t flow = 0;
  iovec tail[kMaxTail];
  alignas(64) uint8_t data[kMaxFrame];

  bool local() const { return tail_n == 0; }
  // Bytes at the start of data that belong to the frame.
  uint32_t head_len() const { return tail_n ? head : len; }
};

// Copies an external packet's tail into its data (for consumers that need the whole
// frame in one place: checksum, segmentation, TAP). No-op for a local packet.
inline void materialize(Packet& p) {
  if (p.tail_n == 0) return;
  iov_to_buf(p.tail, p.tail_n, 0, p.data + p.head, p.len - p.head);
  p.tail_n = 0;
}

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
