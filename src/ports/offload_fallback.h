// OffloadFallback: hands a burst to a port that can take only some offloads. Frames the
// port can take as they are go out in runs (one call of the port's own enqueue per
// run); a partial checksum it cannot take is finished in place (right for every other
// destination too); a GSO frame it cannot take is segmented in software into a batch
// made on first use. Shared by the vhost-user and TAP ports. Send side: drops go to
// the port's send_drops.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/log.h"
#include "net/offload.h"
#include "net/packet.h"
#include "ports/port.h"

namespace vnet::ports {

class OffloadFallback {
 public:
  // enqueue(Packet* const* pkts, uint32_t n) -> frames delivered.
  template <typename Enqueue>
  uint32_t deliver(net::Packet* const* pkts, uint32_t n, const net::OffloadCaps& caps,
                   PortCounters& counters, const std::string& port, RateLimit& log_limit,
                   Enqueue&& enqueue) {
    bool plain = true;
    for (uint32_t i = 0; i < n && plain; ++i)
      plain = net::decide(*pkts[i], caps) == net::OffloadAction::kPass;
    if (plain) return enqueue(pkts, n);
    uint32_t sent = 0, run = 0;  // pkts[i - run, i) pass as they are
    for (uint32_t i = 0; i < n; ++i) {
      net::Packet& p = *pkts[i];
      net::OffloadAction a = net::decide(p, caps);
      if (a != net::OffloadAction::kPass) net::materialize(p);  // both need the whole frame
      if (a == net::OffloadAction::kFinishCsum) {
        if (!net::finish_csum(p)) {
          if (run) sent += enqueue(pkts + i - run, run);
          run = 0;
          counters.send_drops.add(net::Drop::kTxBadHeader);
          continue;
        }
        a = net::OffloadAction::kPass;
      }
      if (a == net::OffloadAction::kPass) {
        ++run;
        continue;
      }
      if (run) sent += enqueue(pkts + i - run, run);
      run = 0;
      sent += segment(p, caps, counters, port, log_limit, enqueue);
    }
    if (run) sent += enqueue(pkts + n - run, run);
    return sent;
  }

 private:
  template <typename Enqueue>
  uint32_t segment(const net::Packet& p, const net::OffloadCaps& caps, PortCounters& counters,
                   const std::string& port, RateLimit& log_limit, Enqueue& enqueue) {
    if (!seg_) seg_ = std::make_unique<net::PacketBatch>();
    uint32_t sent = 0, first = 0, total = 1;
    while (first < total) {
      net::SegmentResult r = net::segment(p, caps, first, seg_->ptrs(), net::kBurst);
      if (r.error != net::OffloadError::kOk || r.produced == 0) {
        counters.send_drops.add(net::Drop::kTxBadHeader);
        VNET_LOG_RL(log_limit, spdlog::level::warn, "port {}: cannot segment a frame: {}", port,
                    net::offload_error_name(r.error));
        break;
      }
      sent += enqueue(seg_->ptrs(), r.produced);
      first += r.produced;
      total = r.total;
    }
    return sent;
  }

  std::unique_ptr<net::PacketBatch> seg_;
};

}  // namespace vnet::ports
