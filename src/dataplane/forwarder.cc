// Forwarder: learning, lookup, per-port grouping and flooding of one burst.
#include "dataplane/forwarder.h"

#include <time.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <random>
#include <tuple>

#include "common/log.h"
#include "net/wire_cost.h"
#include "virtio/net_uapi.h"

namespace vnet::dataplane {

namespace {

sw::FdbConfig fdb_config(const Forwarder::Config& cfg) {
  sw::FdbConfig f;
  f.capacity = cfg.fdb_capacity;
  f.age_ns = uint64_t(cfg.fdb_age_seconds) * 1'000'000'000ULL;
  f.per_port_limit = cfg.fdb_port_limit;
  // A per-process seed: a guest cannot precompute MACs that collide in our buckets.
  try {
    std::random_device rd;
    f.hash_seed = (uint64_t(rd()) << 32) ^ rd();
  } catch (...) {
    f.hash_seed ^= Forwarder::monotonic_ns();
  }
  return f;
}

// Ingress VLAN classification (802.1Q): sets p.vlan and strips a tag, or returns
// the reason to drop the frame.
inline bool classify(const net::VlanConfig& v, net::Packet& p, net::Drop* why) {
  const uint16_t type = uint16_t(p.data[12] << 8 | p.data[13]);
  if (type != net::kEthP8021Q) {
    if (!v.trunk) {
      p.vlan = v.access;
      return true;
    }
    if (v.native == 0) {
      *why = net::Drop::kVlanDenied;
      return false;
    }
    p.vlan = v.native;
    return true;
  }
  if (!v.trunk) {
    *why = net::Drop::kVlanTagged;
    return false;
  }
  if (p.len < net::kEthHdrLen + net::kVlanTagLen) {
    *why = net::Drop::kVlanDenied;
    return false;
  }
  uint16_t vid = uint16_t((p.data[14] << 8 | p.data[15]) & 0xfff);
  if (vid == 0) vid = v.native;  // priority-tagged: the native VLAN
  if (vid == 0 || !(v.allowed[vid] || vid == v.native)) {
    *why = net::Drop::kVlanDenied;
    return false;
  }
  std::memmove(p.data + 12, p.data + 16, p.head_len() - 16);  // (an external tail stays)
  if (p.tail_n) p.head -= net::kVlanTagLen;
  p.len -= net::kVlanTagLen;
  // Offload offsets count from the start of the frame, which lost 4 bytes.
  if ((p.vhdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && p.vhdr.csum_start >= 16)
    p.vhdr.csum_start = uint16_t(p.vhdr.csum_start - net::kVlanTagLen);
  if (p.vhdr.hdr_len >= 16) p.vhdr.hdr_len = uint16_t(p.vhdr.hdr_len - net::kVlanTagLen);
  p.vlan = vid;
  return true;
}

// The storm-control class of a frame the switch floods, and its drop reason.
inline sw::StormClass storm_class(const sw::Mac& dst) {
  if (!dst.is_multicast()) return sw::StormClass::kUnknownUnicast;
  return dst.is_broadcast() ? sw::StormClass::kBroadcast : sw::StormClass::kMulticast;
}
inline net::Drop storm_drop(sw::StormClass c) {
  static_assert(size_t(net::Drop::kStormMulticast) == size_t(net::Drop::kStormBroadcast) + 1 &&
                size_t(net::Drop::kStormUnknownUnicast) == size_t(net::Drop::kStormBroadcast) + 2);
  return net::Drop(size_t(net::Drop::kStormBroadcast) + size_t(c));
}

}  // namespace

uint64_t Forwarder::monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ULL + uint64_t(ts.tv_nsec);
}

std::shared_ptr<sw::Fdb> Forwarder::make_fdb(const Config& cfg) {
  return std::make_shared<sw::Fdb>(fdb_config(cfg));
}

Forwarder::Forwarder(const Config& cfg) : fdb_(make_fdb(cfg)) {}

Forwarder::Forwarder(std::shared_ptr<sw::Fdb> fdb) : fdb_(std::move(fdb)) {}

void Forwarder::set_ports(const std::vector<ports::Port*>& ports) {
  uint16_t max_id = 0;
  for (auto* p : ports) max_id = std::max(max_id, p->id());
  pos_by_id_.assign(size_t(max_id) + 1, kNoPos);
  for (size_t i = 0; i < ports.size(); ++i) {
    if (ports[i]->id() != 0) pos_by_id_[ports[i]->id()] = uint32_t(i);
  }
  out_.assign(ports.size(), OutList{});
}

uint32_t Forwarder::police(ports::Port& in, net::Packet* const* pkts, uint32_t n,
                           net::Packet** kept) {
  sw::PortPolicer& pol = in.policer();
  uint32_t k = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const net::WireCost c = net::wire_cost(*pkts[i]);
    if (pol.admit_ingress(c.packets, c.bytes)) kept[k++] = pkts[i];
  }
  if (k != n) in.counters().drops.add(net::Drop::kPoliced, n - k);
  return k;
}

void Forwarder::forward(ports::Port& in, net::Packet* const* pkts, uint32_t n,
                        const std::vector<ports::Port*>& ports, uint64_t now_ns) {
  // The worker calls set_ports() whenever its list changes; this only guards callers
  // that did not (it allocates, but never in the steady state).
  if (out_.size() != ports.size()) set_ports(ports);
  n = std::min(n, net::kBurst);
  net::Packet* const* const received = pkts;
  const uint32_t n_received = n;
  // Captures see the burst as the port sent it: one test per burst when there is none.
  if (const net::CaptureSet* cap = in.capture()) [[unlikely]]
    net::capture_burst(*cap, net::CaptureDir::kRx, pkts, n, capture_producer_, in.vlan());
  // Policing: one test per burst when the port has none.
  net::Packet* kept[net::kBurst];
  bool storm = false;
  if (in.policer().on()) [[unlikely]] {
    in.policer().refill(policer_clock_());
    storm = in.policer().storm_on();
    if (in.policer().ingress_on()) {
      n = police(in, pkts, n, kept);
      pkts = kept;
    }
  }
  const uint16_t in_id = in.id();
  const uint32_t nports = uint32_t(ports.size());
  const net::VlanConfig& in_vlan = in.vlan();
  uint64_t flooded = 0, unicast = 0, same_port = 0, src_mc = 0, src_zero = 0, stale = 0;
  // Keys (MAC | VLAN << 48) of the last source learned and destination looked up in this
  // burst: consecutive frames of one flow cost one FDB access each way per burst.
  uint64_t last_src_key = ~0ULL, last_dst_key = ~0ULL;
  uint16_t last_to = 0;
  // The first 14 bytes (both MACs and the EtherType) of the last untagged frame sent to
  // one port, its VLAN and that port's position: a frame of this burst with the same
  // bytes gets the same classification, source check, learning and lookup, so it takes
  // the same way for one compare. kNoPos: no such frame yet.
  uint64_t run_lo = 0, run_hi = 0, run_dst_key = ~0ULL;
  uint32_t run_pos = kNoPos;
  uint16_t run_vlan = 0;

  for (uint32_t i = 0; i < n; ++i) {
    net::Packet* p = pkts[i];
    uint64_t lo, hi;  // bytes 0-7 and 6-13 (every producer gives at least 14)
    std::memcpy(&lo, p->data, 8);
    std::memcpy(&hi, p->data + 6, 8);
    if (lo == run_lo && hi == run_hi && run_pos != kNoPos) [[likely]] {
      p->vlan = run_vlan;
      OutList& o = out_[run_pos];
      o.pkts[o.n++] = p;
      ++unicast;
      continue;
    }
    const bool tagged =
        p->data[12] == uint8_t(net::kEthP8021Q >> 8) && p->data[13] == uint8_t(net::kEthP8021Q);
    net::Drop why;
    if (!classify(in_vlan, *p, &why)) {
      in.counters().drops.add(why);
      continue;
    }
    const uint16_t vlan = p->vlan;
    const sw::Mac dst = sw::Mac::from_bytes(p->data);
    const sw::Mac src = sw::Mac::from_bytes(p->data + 6);
    if (!in.source_allowed(src.raw())) {
      in.counters().drops.add(net::Drop::kPortSecurity);
      static RateLimit rl;
      VNET_LOG_RL(rl, spdlog::level::warn, "port {}: frame from {} dropped (not in allowed_macs)",
                  in.name(), src.to_string());
      continue;
    }
    const uint64_t src_key = src.raw() | uint64_t(vlan) << 48;
    if (src.is_multicast()) {
      ++src_mc;
    } else if (src.is_zero()) {
      ++src_zero;
    } else if (in_id != 0 && src_key != last_src_key) {
      // A burst mostly comes from one station: learn it once per burst.
      fdb_->learn(src, vlan, in_id, now_ns);
      last_src_key = src_key;
      if (src_key == last_dst_key) last_dst_key = ~0ULL;  // its answer may have changed
      if (src_key == run_dst_key) run_pos = kNoPos;
    }

    if (!dst.is_multicast()) {
      const uint64_t dst_key = dst.raw() | uint64_t(vlan) << 48;
      if (dst_key != last_dst_key) {
        last_to = fdb_->lookup(dst, vlan, now_ns);
        last_dst_key = dst_key;
      }
      const uint16_t to = last_to;
      if (to != 0) {
        if (to == in_id) {
          ++same_port;
          continue;
        }
        const uint32_t pos = to < pos_by_id_.size() ? pos_by_id_[to] : kNoPos;
        if (pos < nports && ports[pos]->id() == to && ports[pos]->vlan().member(vlan)) {
          OutList& o = out_[pos];
          o.pkts[o.n++] = p;
          ++unicast;
          // Not after classify() took a tag out (the bytes changed) nor for a source that
          // is counted per frame.
          if (!tagged && !src.is_multicast() && !src.is_zero()) {
            run_lo = lo;
            run_hi = hi;
            run_dst_key = dst_key;
            run_pos = pos;
            run_vlan = vlan;
          }
          continue;
        }
        ++stale;
      }
    }
    if (storm) [[unlikely]] {
      const sw::StormClass c = storm_class(dst);
      const net::WireCost cost = net::wire_cost(*p);
      if (!in.policer().admit_storm(c, cost.packets, cost.bytes)) {
        in.counters().drops.add(storm_drop(c));
        continue;
      }
    }
    ++flooded;
    for (uint32_t j = 0; j < nports; ++j) {
      if (ports[j] == &in || !ports[j]->vlan().member(vlan)) continue;
      OutList& o = out_[j];
      o.pkts[o.n++] = p;
    }
  }

  for (uint32_t j = 0; j < nports; ++j) {
    OutList& o = out_[j];
    if (o.n == 0) continue;
    if (const net::CaptureSet* cap = ports[j]->capture()) [[unlikely]]
      net::capture_burst(*cap, net::CaptureDir::kTx, o.pkts, o.n, capture_producer_,
                         ports[j]->vlan());
    if (!ports[j]->takes_external()) {
      for (uint32_t k = 0; k < o.n; ++k) net::materialize(*o.pkts[k]);
    }
    if (locked_send_) {
      SpinLock& lock = ports[j]->tx_lock();
      lock.lock();
      ports[j]->send_burst(o.pkts, o.n);
      lock.unlock();
    } else {
      ports[j]->send_burst(o.pkts, o.n);
    }
    o.n = 0;
  }
  // The source takes its buffers back after this (Port::receive_done).
  for (uint32_t i = 0; i < n_received; ++i) received[i]->tail_n = 0;

  if (flooded) counters_.flooded.add(flooded);
  if (unicast) counters_.unicast.add(unicast);
  if (same_port) counters_.same_port.add(same_port);
  if (src_mc) counters_.src_multicast.add(src_mc);
  if (src_zero) counters_.src_zero.add(src_zero);
  if (stale) counters_.stale_port.add(stale);
}

void Forwarder::tick(uint64_t now_ns) {
  if (now_ns - last_tick_ns_ < kTickIntervalNs) return;
  last_tick_ns_ = now_ns;
  // Every worker ticks; the shared table is swept by one of them per interval.
  if (fdb_->claim_sweep(now_ns, kTickIntervalNs)) fdb_->age(now_ns, kAgeBudget);
}

void Forwarder::port_removed(const ports::Port& p) {
  fdb_->remove_port(p.id());
  if (p.id() < pos_by_id_.size()) pos_by_id_[p.id()] = kNoPos;
}

std::vector<FdbView> Forwarder::dump(uint64_t now_ns) const {
  std::vector<FdbView> v;
  v.reserve(fdb_->size());
  struct Raw {
    uint16_t port, vlan;
    std::array<uint8_t, 6> mac;
    uint64_t age_ns;
  };
  std::vector<Raw> raw;
  raw.reserve(fdb_->size());
  fdb_->for_each(now_ns, [&](sw::Mac mac, uint16_t vlan, uint16_t port, uint64_t age_ns) {
    raw.push_back(Raw{port, vlan, mac.to_bytes(), age_ns});
  });
  std::sort(raw.begin(), raw.end(), [](const Raw& a, const Raw& b) {
    return std::tie(a.port, a.vlan, a.mac) < std::tie(b.port, b.vlan, b.mac);
  });
  for (const Raw& r : raw)
    v.push_back(FdbView{sw::Mac::from_bytes(r.mac).to_string(), r.vlan, r.port,
                        r.age_ns / 1'000'000'000ULL});
  return v;
}

}  // namespace vnet::dataplane
