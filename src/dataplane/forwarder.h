// Forwarder: the L2 switching step of a worker. For each burst received on a port it
// learns source MACs, looks destinations up in the FDB, groups frames by output port
// and hands each group to that port in one send_burst. Unknown unicast, broadcast and
// multicast are flooded to every other port; nothing goes back where it came from.
#pragma once

#include <cstdint>
#include <vector>

#include "common/counter.h"
#include "net/packet.h"
#include "ports/port.h"
#include "switch/fdb.h"

namespace vnet::dataplane {

struct ForwarderCounters {
  Counter flooded;      // frames flooded (unknown unicast, broadcast, multicast)
  Counter unicast;      // frames sent to one learned port
  Counter same_port;    // frames whose destination sits on the port they came from
};

class Forwarder {
 public:
  struct Config {
    uint32_t fdb_capacity = 8192;
    uint32_t fdb_age_seconds = 300;
  };
  explicit Forwarder(const Config& cfg);

  // Worker thread only.
  void set_ports(const std::vector<ports::Port*>& ports);
  void forward(ports::Port& in, net::Packet* const* pkts, uint32_t n,
               const std::vector<ports::Port*>& ports, uint64_t now_ns);
  void tick(uint64_t now_ns);  // ageing, bounded work per call
  void port_removed(const ports::Port& p);
  sw::Fdb& fdb() { return fdb_; }
  ForwarderCounters& counters() { return counters_; }

 private:
  sw::Fdb fdb_;
  std::vector<ports::Port*> by_id_;  // port id -> port
  // Per output port (by position in the worker's port list): frames of this burst.
  struct OutList {
    uint32_t n = 0;
    net::Packet* pkts[net::kBurst];
  };
  std::vector<OutList> out_;
  ForwarderCounters counters_;
};

}  // namespace vnet::dataplane
