// 802.1Q VLANs on a port. Inside the switch a frame is untagged and carries its VLAN
// in Packet::vlan; the input port's VlanConfig classifies it (and strips a tag), the
// output port's VlanConfig says whether it may leave there and with which tag. Tags
// are inserted while the frame is copied out, never by moving the frame.
#pragma once

#include <bitset>
#include <cstdint>

namespace vnet::net {

inline constexpr uint16_t kEthP8021Q = 0x8100;
inline constexpr uint32_t kVlanTagLen = 4;

struct VlanConfig {
  bool trunk = false;
  uint16_t access = 0;        // access port: its VLAN (0: the untagged domain)
  uint16_t native = 0;        // trunk: VLAN of untagged frames (0: untagged frames dropped)
  std::bitset<4096> allowed;  // trunk: VLANs carried tagged

  // May a frame of VLAN `vlan` leave through this port?
  bool member(uint16_t vlan) const {
    return trunk ? (allowed[vlan & 0xfff] || (native != 0 && vlan == native)) : vlan == access;
  }
  // The VLAN id to tag a frame of `vlan` with when it leaves (0: send untagged).
  uint16_t egress_tag(uint16_t vlan) const { return trunk && vlan != native ? vlan : 0; }
};

}  // namespace vnet::net
