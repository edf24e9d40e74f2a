// Several VXLAN segments on one local address and UDP port (the daemon keeps one
// VniSteering per netns/address/port, daemon.h steering_).
//
// Each segment keeps a receive socket of its own, bound with SO_REUSEPORT to the same
// address and port: one reuseport group. A classic BPF program attached to the group
// (SO_ATTACH_REUSEPORT_CBPF) returns, for each datagram, the group index of the socket
// whose VNI the datagram carries. The program sees the UDP payload from offset 0, so the
// VNI is the top 24 bits of the word at offset 4. A VNI no member has makes it return an
// index past the end: the kernel then picks a member by the flow hash, and that segment
// drops the datagram as vxlan_bad_vni. A datagram too short for the load returns 0.
//
// The group's order is the kernel's: members in bind order, and when one is closed the
// last member moves into its slot. VniSteering mirrors that order; after every change it
// attaches the program anew, built for the new order (a datagram arriving between a
// close and the new program may reach the wrong member and be counted there as
// vxlan_bad_vni).
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "common/result.h"

namespace vnet::ports {

class VniSteering {
 public:
  // `fd` was just bound (SO_REUSEPORT set before bind) and is now the last member.
  // Attaches the program for the new order. A VNI already in the group is an error
  // (nothing changes).
  Status joined(int fd, uint32_t vni);
  // `fd` was closed: the last member takes its slot; the program is attached again (to
  // any remaining member). Unknown fds are ignored.
  Status left(int fd);

  // The members (fd, VNI) in the group's order.
  const std::vector<std::pair<int, uint32_t>>& members() const { return members_; }
  bool empty() const { return members_.empty(); }

  // The program for VNIs in group order (exposed for tests).
  static std::vector<sock_filter> program(const std::vector<uint32_t>& vnis);

 private:
  Status attach() const;
  std::vector<std::pair<int, uint32_t>> members_;
};

}  // namespace vnet::ports
