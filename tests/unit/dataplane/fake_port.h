// FakePort: a Port for forwarder tests that records every send_burst it gets.
#pragma once

#include <string>
#include <vector>

#include "ports/port.h"

namespace vnet::dataplane {

class FakePort : public ports::Port {
 public:
  FakePort(std::string name, uint16_t id) : Port(std::move(name)) { set_id(id); }
  uint32_t receive_burst(net::Packet* const*, uint32_t) override { return 0; }
  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override {
    bursts.emplace_back(pkts, pkts + n);
    return n;
  }
  void wait_fds(std::vector<WaitFd>&) const override {}
  bool enable_notifications() override { return false; }
  void disable_notifications() override {}
  ports::PortInfo info() const override { return {}; }

  // Every frame this port received, across bursts.
  std::vector<net::Packet*> frames() const {
    std::vector<net::Packet*> all;
    for (auto& b : bursts) all.insert(all.end(), b.begin(), b.end());
    return all;
  }
  std::vector<std::vector<net::Packet*>> bursts;
};

}  // namespace vnet::dataplane
