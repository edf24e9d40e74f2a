// virtio-net TX and RX over a packed ring (PackedDeviceQueue): the packed
// instantiation of net/virtio_net_queue_impl.h.
#include "net/virtio_net_queue_impl.h"

namespace vnet::net {

template <>
void complete_deferred(virtio::PackedDeviceQueue& q, TxDeferred& deferred) {
  complete_deferred_impl(q, deferred);
}
template <>
uint32_t tx_dequeue(virtio::PackedDeviceQueue& q, virtio::Chain& c, uint32_t hdr_len,
                    const OffloadCaps& src, Packet* const* pkts, uint32_t max, DropCounters& drops,
                    TxDeferred* deferred) {
  return tx_dequeue_impl(q, c, hdr_len, src, pkts, max, drops, deferred);
}
template <>
uint32_t rx_enqueue(virtio::PackedDeviceQueue& q, virtio::Chain& c, uint32_t hdr_len,
                    bool mergeable, const OffloadCaps& dst, const VlanConfig& vlan,
                    Packet* const* pkts, uint32_t n, DropCounters& drops, uint64_t* bytes) {
  return rx_enqueue_any(q, c, hdr_len, mergeable, dst, vlan, pkts, n, drops, bytes);
}

}  // namespace vnet::net
