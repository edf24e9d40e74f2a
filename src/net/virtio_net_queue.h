// The virtio-net data path over one device-side queue pair (virtio 1.2 section 5.1.6):
// guest TX chains -> Packets, Packets -> guest RX buffers (with and without
// VIRTIO_NET_F_MRG_RXBUF). Each call handles one burst: one publish of the used
// index, and the caller notifies once afterwards if should_notify() says so.
// Templates over the queue type, virtio::DeviceQueue (split ring) or
// virtio::PackedDeviceQueue (packed ring), both instantiated in the .cc: the layout is
// chosen once per queue, never tested per descriptor. Every chain is pushed in the
// order it was popped, also across mark()/rewind() (a rewind forgets only chains popped
// after the mark, with their pushes): the packed ring relies on it to write each used
// descriptor where its chain began (virtio 1.2 section 2.8.6).
#pragma once

#include <cstdint>

#include "net/drops.h"
#include "net/offload.h"
#include "net/packet.h"
#include "net/vlan.h"
#include "virtio/device_queue.h"
#include "virtio/packed_device_queue.h"

namespace vnet::net {

// Size of the virtio_net_hdr for the negotiated features (5.1.6.1): 12 bytes with
// VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF, 10 bytes for legacy without them.
uint32_t net_hdr_len(uint64_t features);

// Pops up to `max` chains from the guest's TX queue, copies each frame (header split
// across descriptors is fine) into pkts[i] and completes the chain. Bad frames are
// dropped and counted. Returns the number of packets filled.
// The offload metadata in each header is checked against the frame and against what
// the guest negotiated (`src`); a frame that fails is dropped (tx_bad_header).
//
// With `deferred`, a frame of at least kDirectMin bytes without GSO leaves as an
// external packet (Packet::tail): only its first kDirectHead bytes are copied, the rest
// stays in the guest's buffers until the caller has delivered the burst and calls
// complete_deferred(). Every chain is pushed to the used ring in the order it was
// popped (VIRTIO_F_IN_ORDER holds); when a burst has external packets the used index
// is published only by complete_deferred(), so the driver sees none of the burst's
// buffers back before the external ones are delivered.
struct TxDeferred {
  uint32_t n = 0;  // external packets of the burst not yet completed
};
template <class Q>
uint32_t tx_dequeue(Q& q, virtio::Chain& scratch, uint32_t hdr_len, const OffloadCaps& src,
                    Packet* const* pkts, uint32_t max, DropCounters& drops,
                    TxDeferred* deferred = nullptr);
// Publishes the burst whose external packets were delivered (one used-index store).
// The packets that referred to the guest's buffers must not be used afterwards.
template <class Q>
void complete_deferred(Q& q, TxDeferred& deferred);

// Copies pkts[0..n) into the guest's RX buffers. Without mergeable buffers a frame
// needs one chain large enough for header + frame; with them it may use several
// (num_buffers). A frame that does not fit in what is available is dropped (counted)
// and the buffers stay for the next one. Frames of a VLAN the port sends tagged
// (vlan.egress_tag) get their 802.1Q tag inserted on the way. Returns the number of
// frames delivered and adds their bytes (as the guest sees them) to *bytes.
// The guest's header gets the frame's offload metadata (NEEDS_CSUM/DATA_VALID, GSO)
// only as far as `dst` (its GUEST_* features) allows; the caller has already finished
// checksums and segmented what the guest cannot take (decide()).
template <class Q>
uint32_t rx_enqueue(Q& q, virtio::Chain& scratch, uint32_t hdr_len, bool mergeable,
                    const OffloadCaps& dst, const VlanConfig& vlan, Packet* const* pkts, uint32_t n,
                    DropCounters& drops, uint64_t* bytes);

// The two layouts (virtio_net_queue.cc, virtio_net_queue_packed.cc).
template <>
uint32_t tx_dequeue(virtio::DeviceQueue&, virtio::Chain&, uint32_t, const OffloadCaps&,
                    Packet* const*, uint32_t, DropCounters&, TxDeferred*);
template <>
uint32_t tx_dequeue(virtio::PackedDeviceQueue&, virtio::Chain&, uint32_t, const OffloadCaps&,
                    Packet* const*, uint32_t, DropCounters&, TxDeferred*);
template <>
void complete_deferred(virtio::DeviceQueue&, TxDeferred&);
template <>
void complete_deferred(virtio::PackedDeviceQueue&, TxDeferred&);
template <>
uint32_t rx_enqueue(virtio::DeviceQueue&, virtio::Chain&, uint32_t, bool, const OffloadCaps&,
                    const VlanConfig&, Packet* const*, uint32_t, DropCounters&, uint64_t*);
template <>
uint32_t rx_enqueue(virtio::PackedDeviceQueue&, virtio::Chain&, uint32_t, bool, const OffloadCaps&,
                    const VlanConfig&, Packet* const*, uint32_t, DropCounters&, uint64_t*);

}  // namespace vnet::net
