// Forwarder: the L2 switching step of a worker. For each burst received on a port it
// learns source MACs, looks destinations up in the FDB, groups frames by output port
// and hands each group to that port in one send_burst. Unknown unicast, broadcast and
// multicast are flooded to every other port; nothing goes back where it came from.
// Per frame: no allocation, no lock, no syscall, no virtual call (one send_burst per
// output port per burst). With several workers each has its own Forwarder over the
// list of all ports, they share one FDB (lock-free lookups, sw::Fdb), and each
// send_burst runs under the destination's send lock (set_locked_send(true)).
// A port with policing on (Port::policer()) has its burst policed first and its floods
// held to its storm-control limits; with it off that costs one test per burst.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/counter.h"
#include "common/tsc.h"
#include "net/packet.h"
#include "ports/port.h"
#include "switch/fdb.h"

namespace vnet::dataplane {

struct ForwarderCounters {
  Counter flooded;        // frames flooded (unknown unicast, broadcast, multicast)
  Counter unicast;        // frames sent to one learned port
  Counter same_port;      // frames whose destination sits on the port they came from (dropped)
  Counter src_multicast;  // frames with a multicast/broadcast source MAC (forwarded, not learned)
  Counter src_zero;       // frames with source 00:00:00:00:00:00 (forwarded, not learned)
  Counter stale_port;     // FDB hits on a port id the worker does not have (flooded instead)
};

// One FDB entry as vnetctl shows it.
struct FdbView {
  std::string mac;  // "52:54:00:12:34:56"
  uint16_t vlan;    // 0: untagged
  uint16_t port;    // port id
  uint64_t age;     // seconds since last seen
};

class Forwarder {
 public:
  struct Config {
    uint32_t fdb_capacity = 8192;
    uint32_t fdb_age_seconds = 300;
    uint32_t fdb_port_limit = 0;  // entries learned per port at most; 0: no limit
  };
  // tick() runs the ageing sweep at most this often, over kAgeBudget slots each time.
  static constexpr uint64_t kTickIntervalNs = 10'000'000;
  static constexpr uint32_t kAgeBudget = 512;

  // Its own FDB (one worker, tests).
  explicit Forwarder(const Config& cfg);
  // An FDB shared with other workers' forwarders (make_fdb()).
  explicit Forwarder(std::shared_ptr<sw::Fdb> fdb);
  static std::shared_ptr<sw::Fdb> make_fdb(const Config& cfg);
  // Hold each destination's send lock around its send_burst (several workers).
  void set_locked_send(bool on) { locked_send_ = on; }
  bool locked_send() const { return locked_send_; }
  // Which ring of a capture this forwarder's worker fills (its index in the pool).
  void set_capture_producer(uint32_t index) { capture_producer_ = index; }
  // The clock of the ports' policers (read once per policed burst): the TSC, whose rate
  // (tsc_hz()) the policers are configured with. Tests give a clock of their own.
  using Clock = uint64_t (*)();
  void set_policer_clock(Clock c) { policer_clock_ = c; }

  // Worker thread only.
  // The list of destination ports changed: remember where each port id sits in it.
  // forward() must then be given the same list.
  void set_ports(const std::vector<ports::Port*>& ports);
  void forward(ports::Port& in, net::Packet* const* pkts, uint32_t n,
               const std::vector<ports::Port*>& ports, uint64_t now_ns);
  void tick(uint64_t now_ns);  // ageing, bounded work per call
  void port_removed(const ports::Port& p);
  void flush() { fdb_->flush(); }
  // Live entries sorted by port, VLAN, MAC (control path; allocates).
  std::vector<FdbView> dump(uint64_t now_ns = monotonic_ns()) const;
  sw::Fdb& fdb() { return *fdb_; }
  const sw::Fdb& fdb() const { return *fdb_; }
  ForwarderCounters& counters() { return counters_; }

  static uint64_t monotonic_ns();

 private:
  static constexpr uint32_t kNoPos = UINT32_MAX;
  struct OutList {
    uint32_t n = 0;
    net::Packet* pkts[net::kBurst];
  };

  // Ingress policing of a burst: the frames that pass, in order, into kept[]; returns
  // how many. The others are counted as Drop::kPoliced on `in`.
  static uint32_t police(ports::Port& in, net::Packet* const* pkts, uint32_t n, net::Packet** kept);

  std::shared_ptr<sw::Fdb> fdb_;
  bool locked_send_ = false;
  uint32_t capture_producer_ = 0;
  Clock policer_clock_ = &read_tsc;
  std::vector<uint32_t> pos_by_id_;  // port id -> position in the worker's port list
  // Per output port (by position in the worker's port list): frames of this burst.
  std::vector<OutList> out_;
  uint64_t last_tick_ns_ = 0;
  ForwarderCounters counters_;
};

}  // namespace vnet::dataplane
