// EvpnSync: BGP EVPN as the control plane of a VXLAN segment (control = "evpn"), through
// the netlink interface FRR's zebra already uses, so FRR needs no change and no plugin.
//
// Per segment vnetd keeps a kernel "shadow" in the underlay namespace: a bridge
// vnb<VNI>, a VXLAN device vnx<VNI> (that VNI, the segment's local address, UDP port
// shadow_udp_port so that vnetd's own port stays free, no learning) in the bridge, and an
// anchor veth vna<VNI> (peer vnp<VNI>) in the bridge; no IPv6 link-local addresses, so
// they send nothing. zebra sees a VNI on a bridge like any host's and:
// - advertises the MACs vnetd writes on the anchor (RTM_NEWNEIGH, AF_BRIDGE, NTF_MASTER |
//   NTF_EXT_LEARNED): every MAC of the segment's VLAN the switch learned on a local port,
//   written within 250 ms and removed when it ages out or its port goes (type-2 routes);
// - installs what BGP brings on vnx<VNI> (NDA_DST): 00:00:00:00:00:00 entries are the
//   flood list (type-3 routes), others remote MACs (type-2), which vnetd takes into the
//   segment's port (MAC -> VTEP) and the switch's FDB (MAC on the segment, refreshed while
//   the route lasts). EvpnSync subscribes to RTNLGRP_NEIGH and dumps at start and after
//   the socket overflowed (ENOBUFS), so it never misses a change for good.
// Control thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "common/event_loop.h"
#include "common/result.h"
#include "control/config.h"
#include "ports/netlink.h"
#include "ports/vxlan_port.h"
#include "switch/fdb.h"

struct nl_sock;

namespace vnet::control {

class EvpnSync {
 public:
  // Shadow device names of a VNI.
  static constexpr size_t kMaxRemoteMacs = 65536;

  static std::string bridge_name(uint32_t vni) { return "vnb" + std::to_string(vni); }
  static std::string vxlan_name(uint32_t vni) { return "vnx" + std::to_string(vni); }
  static std::string anchor_name(uint32_t vni) { return "vna" + std::to_string(vni); }
  static std::string anchor_peer_name(uint32_t vni) { return "vnp" + std::to_string(vni); }

  // Creates the shadow (an existing one is re-created, or with `reuse` - a hot upgrade -
  // taken as it is) and starts following the kernel's neighbour table. `quiesce` lets
  // every worker finish its burst (between flood-list changes).
  static Result<std::unique_ptr<EvpnSync>> start(EventLoop& loop, ports::VxlanPort& port,
                                                 const PortSpec& spec, sw::Fdb& fdb,
                                                 std::function<void()> quiesce, bool reuse);
  // Removes the shadow unless released (a successor vnetd keeps it).
  ~EvpnSync();
  EvpnSync(const EvpnSync&) = delete;
  EvpnSync& operator=(const EvpnSync&) = delete;
  void release() { released_ = true; }

  // Every 250 ms (the daemon's timer): local MACs exported, remote MACs refreshed in the
  // switch's FDB.
  void tick();

  struct Stats {
    uint64_t vteps = 0, remote_macs = 0, local_macs = 0, netlink_errors = 0, resyncs = 0;
    uint64_t over_limit = 0;  // routes not taken: more VTEPs or remote MACs than held
  };
  Stats stats() const;

 private:
  EvpnSync(EventLoop& loop, ports::VxlanPort& port, const PortSpec& spec, sw::Fdb& fdb,
           std::function<void()> quiesce);
  Status create_shadow(bool reuse);
  void delete_shadow();
  int ifindex(const std::string& name);  // 0: no such link
  Status subscribe();
  void on_readable();
  void dump();
  // Reads the answer to dump() here and now (for at most `limit`), then applies it.
  void finish_dump(std::chrono::milliseconds limit);
  // A neighbour message of the shadow (RTM_NEWNEIGH / RTM_DELNEIGH).
  void on_neigh(int type, const void* nlh);
  void apply();
  Status write_local(uint64_t mac, bool add);

  struct NlDeleter {
    void operator()(nl_sock* s) const;
  };
  EventLoop& loop_;
  ports::VxlanPort& port_;
  PortSpec spec_;
  sw::Fdb& fdb_;
  std::function<void()> quiesce_;
  std::unique_ptr<nl_sock, NlDeleter> cmd_, events_;
  std::optional<ports::Netlink> nl_;  // links: look up, up, delete (in the namespace)
  int vxlan_ifindex_ = 0, anchor_ifindex_ = 0, bridge_ifindex_ = 0;
  bool released_ = false;
  bool dirty_ = false;
  bool dump_pending_ = false;
  // What zebra installed: the flood list and remote MACs.
  std::set<ports::VtepAddr> flood_;
  std::map<uint64_t, ports::VtepAddr> remote_;
  // What the port and the FDB have of it.
  std::set<ports::VtepAddr> flood_applied_;
  std::map<uint64_t, ports::VtepAddr> remote_applied_;
  // Local MACs written on the anchor.
  std::set<uint64_t> exported_;
  Stats stats_;
};

}  // namespace vnet::control
