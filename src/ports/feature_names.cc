// Feature bit names (virtio 1.2 sections 5.1.3 and 6).
#include "ports/feature_names.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include "virtio/net_uapi.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace vnet::ports {

namespace {
struct Name {
  unsigned bit;
  const char* name;
};
constexpr Name kNames[] = {
    {VIRTIO_NET_F_CSUM, "CSUM"},
    {VIRTIO_NET_F_GUEST_CSUM, "GUEST_CSUM"},
    {VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, "CTRL_GUEST_OFFLOADS"},
    {VIRTIO_NET_F_MTU, "MTU"},
    {VIRTIO_NET_F_MAC, "MAC"},
    {VIRTIO_NET_F_GSO, "GSO"},
    {VIRTIO_NET_F_GUEST_TSO4, "GUEST_TSO4"},
    {VIRTIO_NET_F_GUEST_TSO6, "GUEST_TSO6"},
    {VIRTIO_NET_F_GUEST_ECN, "GUEST_ECN"},
    {VIRTIO_NET_F_GUEST_UFO, "GUEST_UFO"},
    {VIRTIO_NET_F_HOST_TSO4, "HOST_TSO4"},
    {VIRTIO_NET_F_HOST_TSO6, "HOST_TSO6"},
    {VIRTIO_NET_F_HOST_ECN, "HOST_ECN"},
    {VIRTIO_NET_F_HOST_UFO, "HOST_UFO"},
    {VIRTIO_NET_F_MRG_RXBUF, "MRG_RXBUF"},
    {VIRTIO_NET_F_STATUS, "STATUS"},
    {VIRTIO_NET_F_CTRL_VQ, "CTRL_VQ"},
    {VIRTIO_NET_F_CTRL_RX, "CTRL_RX"},
    {VIRTIO_NET_F_CTRL_VLAN, "CTRL_VLAN"},
    {VIRTIO_NET_F_GUEST_ANNOUNCE, "GUEST_ANNOUNCE"},
    {VIRTIO_NET_F_MQ, "MQ"},
    {VIRTIO_NET_F_CTRL_MAC_ADDR, "CTRL_MAC_ADDR"},
    {24, "NOTIFY_ON_EMPTY"},
    {26, "LOG_ALL"},
    {27, "ANY_LAYOUT"},
    {VIRTIO_RING_F_INDIRECT_DESC, "INDIRECT_DESC"},
    {VIRTIO_RING_F_EVENT_IDX, "EVENT_IDX"},
    {30, "PROTOCOL_FEATURES"},
    {VIRTIO_F_VERSION_1, "VERSION_1"},
    {VIRTIO_F_ACCESS_PLATFORM, "ACCESS_PLATFORM"},
    {VIRTIO_F_RING_PACKED, "RING_PACKED"},
    {VIRTIO_F_IN_ORDER, "IN_ORDER"},
    {VIRTIO_F_ORDER_PLATFORM, "ORDER_PLATFORM"},
    {VIRTIO_F_SR_IOV, "SR_IOV"},
    {38, "NOTIFICATION_DATA"},
};
}  // namespace

std::vector<std::string> feature_names(uint64_t features) {
  std::vector<std::string> out;
  for (unsigned b = 0; b < 64; ++b) {
    if (!(features & (1ULL << b))) continue;
    const char* n = nullptr;
    for (const auto& e : kNames)
      if (e.bit == b) n = e.name;
    out.push_back(n ? n : fmt::format("BIT_{}", b));
  }
  return out;
}

std::string join_feature_names(uint64_t features) {
  return fmt::format("{}", fmt::join(feature_names(features), ","));
}

}  // namespace vnet::ports
