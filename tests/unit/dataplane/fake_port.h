// FakePort: a Port for forwarder tests that records every send_burst it gets, and
// FakePortsTest, a fixture of ports 1..n and a forwarder over them.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "dataplane/forwarder.h"
#include "ports/port.h"

namespace vnet::dataplane {

class FakePort : public ports::Port {
 public:
  FakePort(std::string name, uint16_t id) : Port(std::move(name)) { set_id(id); }
  uint32_t receive_burst(net::Packet* const*, uint32_t, uint32_t = 0) override { return 0; }
  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override {
    bursts.emplace_back(pkts, pkts + n);
    return n;
  }
  void wait_fds(std::vector<WaitFd>&, uint32_t = 0) const override {}
  bool enable_notifications(uint32_t = 0) override { return false; }
  void disable_notifications(uint32_t = 0) override {}
  ports::PortInfo info() const override { return {}; }

  // Every frame this port received, across bursts.
  std::vector<net::Packet*> frames() const {
    std::vector<net::Packet*> all;
    for (auto& b : bursts) all.insert(all.end(), b.begin(), b.end());
    return all;
  }
  std::vector<std::vector<net::Packet*>> bursts;
};

class FakePortsTest : public ::testing::Test {
 protected:
  explicit FakePortsTest(uint16_t n) : fwd_(Forwarder::Config{}) {
    for (uint16_t id = 1; id <= n; ++id) {
      owned_.push_back(std::make_unique<FakePort>("p" + std::to_string(id), id));
      ports_.push_back(owned_.back().get());
    }
    fwd_.set_ports(ports_);
  }

  FakePort& port(uint16_t id) { return *owned_[id - 1]; }
  // Forgets what every port received.
  void clear() {
    for (auto& p : owned_) p->bursts.clear();
  }

  Forwarder fwd_;
  net::PacketBatch batch_;
  std::vector<std::unique_ptr<FakePort>> owned_;
  std::vector<ports::Port*> ports_;
};

}  // namespace vnet::dataplane
