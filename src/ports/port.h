// Port: one attachment of the switch (a VM's vhost-user socket, later TAP, VXLAN).
// The data-plane methods run only on the worker that owns the port and move whole
// bursts; the control methods run on the control thread. Counters have one writer
// (the worker) and are read by the control thread for vnetctl.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/counter.h"
#include "net/drops.h"
#include "net/vlan.h"
#include "net/packet.h"

namespace vnet::ports {

struct PortCounters {
  Counter rx_packets, rx_bytes;  // frames the switch received from this port
  Counter tx_packets, tx_bytes;  // frames the switch sent to this port
  net::DropCounters drops;
};

// What vnetctl shows about a port.
struct PortInfo {
  std::string type;  // "vhost-user"
  std::string socket;
  std::string mode;  // "server" | "client"
  bool connected = false;
  std::vector<std::string> features;  // negotiated feature names
  std::vector<std::pair<std::string, uint64_t>> extra;  // type-specific counters
};

class Port {
 public:
  explicit Port(std::string name) : name_(std::move(name)) {}
  virtual ~Port() = default;
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  const std::string& name() const { return name_; }
  // Small integer the switch uses in its FDB; set when the port is added.
  uint16_t id() const { return id_; }
  void set_id(uint16_t id) { id_ = id; }
  PortCounters& counters() { return counters_; }
  // VLAN handling; worker thread (set it through Worker::run_sync once attached).
  const net::VlanConfig& vlan() const { return vlan_; }
  void set_vlan(const net::VlanConfig& v) { vlan_ = v; }
  // Port security: when the list is not empty, frames from other source MACs (raw
  // sw::Mac values) are dropped at ingress. Worker thread, like set_vlan.
  void set_allowed_macs(std::vector<uint64_t> macs) { allowed_macs_ = std::move(macs); }
  bool source_allowed(uint64_t mac) const {
    if (allowed_macs_.empty()) return true;
    for (uint64_t m : allowed_macs_)
      if (m == mac) return true;
    return false;
  }

  // --- worker thread ---
  // Frames from the port into the switch: fills pkts[0..ret).
  virtual uint32_t receive_burst(net::Packet* const* pkts, uint32_t max) = 0;
  // Frames from the switch out of the port. Returns frames delivered; the rest are
  // dropped and counted by the port.
  virtual uint32_t send_burst(net::Packet* const* pkts, uint32_t n) = 0;
  // After the frames of the last receive_burst() have been delivered (or dropped):
  // a port that lent external packets (net::Packet::tail) takes its buffers back.
  virtual void receive_done() {}
  // Whether send_burst() takes external packets; the forwarder materializes them for
  // ports that do not.
  virtual bool takes_external() const { return false; }
  // File descriptors that become readable when the port has work (kick eventfds,
  // a TAP fd); the worker sleeps on them when idle and resets the eventfds on wake-up.
  struct WaitFd {
    int fd;
    bool is_eventfd;
  };
  virtual void wait_fds(std::vector<WaitFd>& out) const = 0;
  // Before the worker sleeps: ask to be woken. True if work arrived meanwhile.
  virtual bool enable_notifications() = 0;
  virtual void disable_notifications() = 0;

  // --- control thread ---
  virtual PortInfo info() const = 0;

 private:
  std::string name_;
  uint16_t id_ = 0;
  PortCounters counters_;
  net::VlanConfig vlan_;
  std::vector<uint64_t> allowed_macs_;
};

}  // namespace vnet::ports
