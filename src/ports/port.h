// Port: one attachment of the switch (a VM's vhost-user socket, later TAP, VXLAN).
// A port has rx_queues() receive queues (a multiqueue guest's TX queues, a multiqueue
// TAP's fds); each is polled by exactly one worker (its owner), and different queues of
// one port may be polled by different workers at the same time, so per-queue receive
// state is the queue's own. receive_burst(q) runs only on queue q's owner. send_burst runs
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
#include "net/capture.h"
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

// Per queue (pair) q of a port: the receive side is written by the worker polling
// queue q; the send side (frames steered to q) by the holder of the send lock.
struct QueueCounters {
  Counter rx_packets, rx_bytes;
  Counter busy_cycles;  // TSC cycles of the owner's bursts that moved frames from q
  net::DropCounters drops;
  alignas(64) Counter tx_packets;
  Counter tx_drops;
};

// What vnetctl shows about a port.
struct PortInfo {
  std::string type;  // "vhost-user"
  std::string socket;
  std::string mode;  // "server" | "client"
  bool connected = false;
  std::vector<std::string> features;                    // negotiated feature names
  std::vector<std::pair<std::string, uint64_t>> extra;  // type-specific counters
  // Per receive queue (pair): "active", "rx-only", "tx-only" or "off" (empty: the port
  // does not say).
  std::vector<std::string> queue_states;
};

class Port {
 public:
  // `rx_queues`: receive queues (queue pairs), fixed for the port's life, >= 1.
  explicit Port(std::string name, uint32_t rx_queues = 1)
      : name_(std::move(name)),
        rx_queues_(rx_queues ? rx_queues : 1),
        queue_counters_(new QueueCounters[rx_queues_]) {}
  virtual ~Port() = default;
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  const std::string& name() const { return name_; }
  // Small integer the switch uses in its FDB; set when the port is added.
  uint16_t id() const { return id_; }
  void set_id(uint16_t id) { id_ = id; }
  PortCounters& counters() { return counters_; }
  uint32_t rx_queues() const { return rx_queues_; }
  QueueCounters& queue_counters(uint32_t q) { return queue_counters_[q]; }
  const QueueCounters& queue_counters(uint32_t q) const { return queue_counters_[q]; }
  // Port-wide totals: the port's counters plus every queue's receive side.
  uint64_t rx_packets_total() const {
    uint64_t n = counters_.rx_packets.get();
    for (uint32_t q = 0; q < rx_queues_; ++q) n += queue_counters_[q].rx_packets.get();
    return n;
  }
  uint64_t rx_bytes_total() const {
    uint64_t n = counters_.rx_bytes.get();
    for (uint32_t q = 0; q < rx_queues_; ++q) n += queue_counters_[q].rx_bytes.get();
    return n;
  }
  uint64_t dropped_total(net::Drop d) const {
    uint64_t n = counters_.dropped(d);
    for (uint32_t q = 0; q < rx_queues_; ++q) n += queue_counters_[q].drops.get(d);
    return n;
  }
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
  // The captures running on this port (vnetctl capture), nullptr when none: loaded
  // once per burst by whichever worker receives from or sends to the port. The control
  // thread publishes a new set and lets every worker finish its burst (WorkerPool::
  // quiesce) before it frees the old one.
  const net::CaptureSet* capture() const { return capture_.load(std::memory_order_acquire); }
  void set_capture(const net::CaptureSet* c) { capture_.store(c, std::memory_order_release); }

  // --- worker thread ---
  // Frames from receive queue q (< rx_queues()) into the switch: fills pkts[0..ret).
  virtual uint32_t receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t q = 0) = 0;
  // Whether queue q can bring frames now (started, enabled): the worker polls and
  // watches only live queues, and looks again after wait_fds_changed().
  virtual bool rx_queue_live(uint32_t q) const {
    (void)q;
    return true;
  }
  // Frames from the switch out of the port. Returns frames delivered; the rest are
  // dropped and counted by the port.
  virtual uint32_t send_burst(net::Packet* const* pkts, uint32_t n) = 0;
  // (queue q's worker) Hot upgrade, for ports whose frames come from the kernel (TAP,
  // VXLAN): no more reads from queue q until hold_reads(q, false); reads_drained(q): held,
  // and nothing read is still on its way.
  virtual void hold_reads(uint32_t q, bool on) {
    (void)q;
    (void)on;
  }
  virtual bool reads_drained(uint32_t q) const {
    (void)q;
    return true;
  }
  // After the frames of the last receive_burst(q) have been delivered (or dropped):
  // a port that lent external packets (net::Packet::tail) takes its buffers back.
  virtual void receive_done(uint32_t q = 0) { (void)q; }
  // Whether send_burst() takes external packets; the forwarder materializes them for
  // ports that do not.
  virtual bool takes_external() const { return false; }
  // A hint before the worker comes to queue q: start fetching what receive_burst(q)
  // (and, with `send_side`, send_burst()) will read first. Nothing else; `send_side`
  // only when no other worker may be sending to the port at the same time.
  virtual void prefetch(bool send_side, uint32_t q = 0) {
    (void)send_side;
    (void)q;
  }
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
  // Those of queue q.
  virtual void wait_fds(std::vector<WaitFd>& out, uint32_t q = 0) const = 0;
  // Before the worker sleeps: ask queue q to wake it. True if work arrived meanwhile.
  virtual bool enable_notifications(uint32_t q = 0) = 0;
  virtual void disable_notifications(uint32_t q = 0) = 0;

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
  uint32_t rx_queues_;
  std::unique_ptr<QueueCounters[]> queue_counters_;
  std::vector<Port*>* notify_list_ = nullptr;
  PortCounters counters_;
  PortLogLimits log_limits_;
  std::unique_ptr<net::VlanConfig> vlan_owned_ = std::make_unique<net::VlanConfig>();
  std::unique_ptr<net::VlanConfig> retired_vlan_;
  std::atomic<const net::VlanConfig*> vlan_{vlan_owned_.get()};
  // Next to vlan_, which the forwarder reads for every burst from and to the port: the
  // test of capture_ costs no line of its own.
  std::atomic<const net::CaptureSet*> capture_{nullptr};
  std::vector<uint64_t> allowed_macs_;
  sw::PortPolicer policer_;
  alignas(64) SpinLock tx_lock_;
};

}  // namespace vnet::ports
