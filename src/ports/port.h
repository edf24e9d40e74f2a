// Port: one attachment of the switch (a VM's vhost-user socket, later TAP, VXLAN).
// receive_burst runs only on the worker that polls the port (its owner). send_burst runs
// on whichever worker forwards to the port: with one worker that is the owner; with
// several, every sender holds the port's send lock (tx_lock(), once per burst) around
// it, and control changes applied on the owner hold it too. So a port's receive side
// and send side may run at the same time on two threads and must share no mutable
// state (vhost-user: different virtqueues; TAP: one fd, read vs write). Counters have
// one writer at a time: the receive-side ones the owner, the send-side ones the holder
// of the send lock (the lock orders successive holders); the control thread reads them.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/counter.h"
#include "common/log.h"
#include "common/spinlock.h"
#include "net/drops.h"
#include "net/packet.h"
#include "net/vlan.h"
#include "switch/policer.h"

namespace vnet::ports {

struct PortCounters {
  // Receive side (the owner): frames the switch received from this port, and drops of
  // frames coming from it.
  Counter rx_packets, rx_bytes;
  net::DropCounters drops;
  // Send side (the holder of the send lock), on its own cache line: frames the switch
  // sent to this port, and drops of frames going to it.
  alignas(64) Counter tx_packets;
  Counter tx_bytes;
  net::DropCounters send_drops;
  uint64_t dropped(net::Drop d) const { return drops.get(d) + send_drops.get(d); }
};

// What vnetctl shows about a port.
struct PortInfo {
  std::string type;  // "vhost-user"
  std::string socket;
  std::string mode;  // "server" | "client"
  bool connected = false;
  std::vector<std::string> features;                    // negotiated feature names
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
  // The port's log budget: every line its guest or front end can trigger (any thread).
  PortLogLimits& log_limits() { return log_limits_; }
  const PortLogLimits& log_limits() const { return log_limits_; }
  // VLAN handling, read by every worker that forwards from or to the port. set_vlan
  // publishes a new setting (control thread); the previous one stays readable until the
  // next set_vlan, so the caller must let every worker finish its current burst (an
  // empty Worker::run_sync on each) before changing it again.
  const net::VlanConfig& vlan() const { return *vlan_.load(std::memory_order_acquire); }
  void set_vlan(const net::VlanConfig& v) {
    auto next = std::make_unique<net::VlanConfig>(v);
    vlan_.store(next.get(), std::memory_order_release);
    retired_vlan_ = std::move(vlan_owned_);
    vlan_owned_ = std::move(next);
  }
  // Held around send_burst (and control changes on the owner) when several workers
  // may send to this port.
  SpinLock& tx_lock() { return tx_lock_; }
  // Port security: when the list is not empty, frames from other source MACs (raw
  // sw::Mac values) are dropped at ingress. Read by the owner worker only; set it through
  // Worker::run_sync on the owner.
  void set_allowed_macs(std::vector<uint64_t> macs) { allowed_macs_ = std::move(macs); }
  bool source_allowed(uint64_t mac) const {
    if (allowed_macs_.empty()) return true;
    for (uint64_t m : allowed_macs_)
      if (m == mac) return true;
    return false;
  }
  // Ingress policing and storm control of the frames this port sends into the switch.
  // Used by the owner worker only; configure it through Worker::run_sync on the owner.
  sw::PortPolicer& policer() { return policer_; }
  const sw::PortPolicer& policer() const { return policer_; }

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
  // A hint before the worker comes to this port: start fetching what receive_burst()
  // (and, with `send_side`, send_burst()) will read first. Nothing else; `send_side`
  // only when no other worker may be sending to the port at the same time.
  virtual void prefetch(bool send_side) { (void)send_side; }
  // File descriptors that become readable when the port has work (kick eventfds,
  // a TAP fd); the worker sleeps on them when idle.
  struct WaitFd {
    enum Kind : uint8_t {
      kLevel,            // readable while work waits (a TAP fd): watched, never read
      kOwnEventFd,       // an eventfd of vnetd's own: read on wake-up to reset it
      kFrontendEventFd,  // a front end's kick eventfd: edge-triggered, never read
    };
    int fd;
    Kind kind;
  };
  virtual void wait_fds(std::vector<WaitFd>& out) const = 0;
  // Before the worker sleeps: ask to be woken. True if work arrived meanwhile.
  virtual bool enable_notifications() = 0;
  virtual void disable_notifications() = 0;

  // Notifications batched per poll round (one worker only, set by it): with a list, a
  // port that owes its guest a notification adds itself to it (once) instead of
  // notifying; the worker then issues one full fence and calls flush_notify() on each
  // listed port, so that a round costs one fence instead of one per queue. nullptr:
  // the port notifies at once.
  void set_notify_list(std::vector<Port*>* list) { notify_list_ = list; }
  // After a full fence that follows every publish: the notifications owed.
  virtual void flush_notify() {}

  // --- control thread ---
  virtual PortInfo info() const = 0;

 protected:
  std::vector<Port*>* notify_list() const { return notify_list_; }

 private:
  std::string name_;
  uint16_t id_ = 0;
  std::vector<Port*>* notify_list_ = nullptr;
  PortCounters counters_;
  PortLogLimits log_limits_;
  std::unique_ptr<net::VlanConfig> vlan_owned_ = std::make_unique<net::VlanConfig>();
  std::unique_ptr<net::VlanConfig> retired_vlan_;
  std::atomic<const net::VlanConfig*> vlan_{vlan_owned_.get()};
  std::vector<uint64_t> allowed_macs_;
  sw::PortPolicer policer_;
  alignas(64) SpinLock tx_lock_;
};

}  // namespace vnet::ports
