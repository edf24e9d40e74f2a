// virtio-net TX and RX over a split ring (DeviceQueue): the split instantiation of
// net/virtio_net_queue_impl.h, and net_hdr_len.
#include "net/virtio_net_queue_impl.h"

namespace vnet::net {

uint32_t net_hdr_len(uint64_t features) {
  bool v1 = features & (1ULL << VIRTIO_F_VERSION_1);
  bool mrg = features & (1ULL << VIRTIO_NET_F_MRG_RXBUF);
  return (v1 || mrg) ? sizeof(virtio_net_hdr_v1) : sizeof(virtio_net_hdr);
}

// Explicit specializations: ordinary functions, each layout in its own translation unit
// (see virtio_net_queue_impl.h).
template <>
void complete_deferred(virtio::DeviceQueue& q, TxDeferred& deferred) {
  complete_deferred_impl(q, deferred);
}
template <>
uint32_t tx_dequeue(virtio::DeviceQueue& q, virtio::Chain& c, uint32_t hdr_len,
                    const OffloadCaps& src, Packet* const* pkts, uint32_t max, DropCounters& drops,
                    TxDeferred* deferred) {
  return tx_dequeue_impl(q, c, hdr_len, src, pkts, max, drops, deferred);
}
template <>
uint32_t rx_enqueue(virtio::DeviceQueue& q, virtio::Chain& c, uint32_t hdr_len, bool mergeable,
                    const OffloadCaps& dst, const VlanConfig& vlan, Packet* const* pkts, uint32_t n,
                    DropCounters& drops, uint64_t* bytes) {
  return rx_enqueue_any(q, c, hdr_len, mergeable, dst, vlan, pkts, n, drops, bytes);
}

}  // namespace vnet::net
