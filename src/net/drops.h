// Drop reasons: why a frame did not make it, counted per port.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/counter.h"

namespace vnet::net {

enum class Drop : uint8_t {
  kTxTooShort,    // guest sent a chain shorter than virtio_net_hdr + Ethernet header
  kTxTooBig,      // guest sent more than kMaxFrame bytes
  kTxBadHeader,   // virtio_net_hdr asks for an offload that was not negotiated
  kRxNoBuffers,   // the guest's RX ring had no (or not enough) buffers
  kRxNotReady,    // the port's RX queue is not running (not connected, disabled)
  kQueueBroken,   // the queue was declared broken (hostile ring)
  kVlanTagged,    // a tagged frame on an access port
  kVlanDenied,    // a frame of a VLAN the port does not carry (or untagged, no native VLAN)
  kTapBusy,       // the kernel's TAP queue was full (write EAGAIN/ENOBUFS)
  kPortSecurity,  // source MAC not in the port's allowed_macs
  kPoliced,       // over the port's ingress policing rate (sw::PortPolicer)
  // Storm control: a flooded frame over the port's limit for its class (sw::StormClass
  // order).
  kStormBroadcast,
  kStormMulticast,
  kStormUnknownUnicast,
  // VXLAN (ports/vxlan_port.h): decapsulation refused a datagram (shorter than the VXLAN
  // and Ethernet headers, or no I flag; another VNI; a source outside the flood list),
  // or a frame did not fit the underlay.
  kVxlanBadHeader,
  kVxlanBadVni,
  kVxlanUnknownVtep,
  kTunnelTooBig,
  kCount
};

inline const char* drop_name(Drop d) {
  switch (d) {
    case Drop::kTxTooShort:
      return "tx_too_short";
    case Drop::kTxTooBig:
      return "tx_too_big";
    case Drop::kTxBadHeader:
      return "tx_bad_header";
    case Drop::kRxNoBuffers:
      return "rx_no_buffers";
    case Drop::kRxNotReady:
      return "rx_not_ready";
    case Drop::kQueueBroken:
      return "queue_broken";
    case Drop::kVlanTagged:
      return "vlan_tagged_on_access";
    case Drop::kVlanDenied:
      return "vlan_not_allowed";
    case Drop::kTapBusy:
      return "tap_busy";
    case Drop::kPortSecurity:
      return "port_security";
    case Drop::kPoliced:
      return "policed";
    case Drop::kStormBroadcast:
      return "storm_broadcast";
    case Drop::kStormMulticast:
      return "storm_multicast";
    case Drop::kStormUnknownUnicast:
      return "storm_unknown_unicast";
    case Drop::kVxlanBadHeader:
      return "vxlan_bad_header";
    case Drop::kVxlanBadVni:
      return "vxlan_bad_vni";
    case Drop::kVxlanUnknownVtep:
      return "vxlan_unknown_vtep";
    case Drop::kTunnelTooBig:
      return "tunnel_too_big";
    case Drop::kCount:
      break;
  }
  return "?";
}

struct DropCounters {
  Counter by_reason[size_t(Drop::kCount)];
  void add(Drop d, uint64_t n = 1) { by_reason[size_t(d)].add(n); }
  uint64_t get(Drop d) const { return by_reason[size_t(d)].get(); }
};

}  // namespace vnet::net
