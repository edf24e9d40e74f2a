// vnetctl trace: which way the switch would send one frame arriving on a port, and why,
// step by step (as `ovs-appctl ofproto/trace` answers for OVS). A dry run on the control
// thread: it reads the ports' VLAN settings, their configured port security and policing
// and the shared FDB (lock-free lookups), and changes nothing (no learning, no counter).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "control/config.h"
#include "net/vlan.h"
#include "switch/fdb.h"

namespace vnet::control {

// What the trace needs of one port.
struct TracePort {
  std::string name;
  std::string type;  // "vhost-user" | "tap"
  uint16_t id = 0;
  const net::VlanConfig* vlan = nullptr;  // the port's live setting
  const PortSpec* spec = nullptr;         // its configuration (port security, policing)
};

// The "trace" request: {"cmd": "trace", "port": NAME, and the frame either as "hex"
// (the Ethernet frame, hex digits, ':', '-' or spaces between bytes allowed) or as fields
// "dst", "src" (MACs), "vlan" (an 802.1Q tag with this VID; absent: untagged) and
// "ethertype" (default 0x0800)}. Reply: {"ok": true, "steps": [{"step", "text"}...],
// "action": "unicast" | "flood" | "drop", "outputs": [{"port", "vlan" (the frame's
// VLAN), "tag" (VID it leaves with, 0: untagged)}...], "drop": reason (when dropped, the
// counter name of `vnetctl counters`)}; or {"ok": false, "error"} for a bad request.
nlohmann::json trace_frame(const nlohmann::json& req, const std::vector<TracePort>& ports,
                           const sw::Fdb& fdb, uint64_t now_ns);

// The reply as text: one "STEP  text" line per step, then the verdict
// ("=> unicast to py (untagged)", "=> flood to ...", "=> drop (vlan_not_allowed)").
std::string format_trace(const nlohmann::json& reply);

}  // namespace vnet::control
