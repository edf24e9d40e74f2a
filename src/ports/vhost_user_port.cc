// VhostUserPort: control-thread Backend calls applied on the worker, and the
// per-burst data path over the guest's queue pairs.
#include "ports/vhost_user_port.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "virtio/net_uapi.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "net/flow_hash.h"
#include "net/virtio_net_queue.h"
#include "ports/feature_names.h"
#include "switch/mac.h"

namespace vnet::ports {

namespace {
constexpr uint64_t bit(unsigned b) {
  return 1ULL << b;
}
constexpr uint64_t kProtocolFeaturesBit = bit(30);  // VHOST_USER_F_PROTOCOL_FEATURES
// vhost-user protocol features (docs/interop/vhost-user.rst, "Protocol features").
constexpr uint64_t kProtoMq = bit(0), kProtoLogShmfd = bit(1), kProtoRarp = bit(2),
                   kProtoReplyAck = bit(3), kProtoNetMtu = bit(4),
                   kProtoConfigureMemSlots = bit(15), kProtoStatus = bit(16);
constexpr uint64_t kLogAll = vhost_user::kFeatureLogAll;  // VHOST_F_LOG_ALL
// Offloads both ways (5.1.3): the switch finishes checksums and segments in software
// for destinations that did not negotiate them.
constexpr uint64_t kOffloadFeatures =
    bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) |
    bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN) | bit(VIRTIO_NET_F_GUEST_TSO4) |
    bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN) | bit(VIRTIO_NET_F_HOST_USO) |
    bit(VIRTIO_NET_F_GUEST_USO4) | bit(VIRTIO_NET_F_GUEST_USO6);
}  // namespace

bool VhostUserPort::skip_dirty_log_knob() {
  const char* v = std::getenv("VNET_TEST_SKIP_DIRTY_LOG");
  return v && std::string_view(v) == "1";
}

namespace {
uint32_t clamp_pairs(uint32_t n) {
  return std::clamp<uint32_t>(n, 1, VhostUserPortConfig::kMaxQueuePairs);
}
}  // namespace

VhostUserPort::VhostUserPort(std::string name, const VhostUserPortConfig& cfg, Executor& worker)
    : Port(std::move(name), clamp_pairs(cfg.queue_pairs)),
      cfg_(cfg),
      worker_(worker),
      pairs_(clamp_pairs(cfg.queue_pairs)),
      num_queues_(2 * pairs_),
      queues_(new Queue[num_queues_]),
      tx_scratch_(new TxScratch[pairs_]),
      pair_state_(new std::atomic<uint8_t>[pairs_]) {
  for (uint32_t i = 0; i < num_queues_; ++i) {
    const std::string label = fmt::format("port {} queue {}", this->name(), i);
    queues_[i].vq.set_log(&log_limits().bad_input, label);
    queues_[i].pvq.set_log(&log_limits().bad_input, label);
  }
  for (uint32_t p = 0; p < pairs_; ++p) pair_state_[p].store(0, std::memory_order_relaxed);
}

VhostUserPort::~VhostUserPort() {
  endpoint_.reset();  // ends the session (which resets us) before members go
}

vhost_user::EndpointConfig VhostUserPort::endpoint_config() {
  vhost_user::EndpointConfig ec;
  ec.path = cfg_.socket_path;
  ec.client = cfg_.client;
  ec.perms = cfg_.perms;
  ec.name = name();
  ec.logs = &log_limits();
  return ec;
}

Status VhostUserPort::open(EventLoop& loop) {
  auto ep = vhost_user::Endpoint::create(loop, endpoint_config(), *this);
  if (!ep) return ep.status();
  endpoint_ = std::move(*ep);
  return Status::ok();
}

Status VhostUserPort::adopt(EventLoop& loop, UniqueFd listen, UniqueFd session,
                            std::vector<vhost_user::Message>& setup) {
  auto ep = vhost_user::Endpoint::adopt(loop, endpoint_config(), *this, std::move(listen),
                                        std::move(session), setup);
  if (!ep) return ep.status();
  endpoint_ = std::move(*ep);
  return Status::ok();
}

uint64_t VhostUserPort::device_features() const {
  // VIRTIO_F_IN_ORDER: every queue uses its buffers in the order they were made
  // available (tx_dequeue, rx_enqueue), which lets drivers take their in-order paths.
  // VIRTIO_NET_F_MQ (5.1.3) with more than one pair: the front end learns how many from
  // GET_QUEUE_NUM and turns pairs on and off with SET_VRING_ENABLE (its control queue,
  // VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, never reaches the back end).
  // VIRTIO_F_RING_PACKED: each queue then runs a PackedDeviceQueue (virtio 1.2 2.8).
  // VHOST_F_LOG_ALL (with the LOG_SHMFD protocol feature): live migration, the dirty
  // log marked while the front end asks for it. VIRTIO_NET_F_GUEST_ANNOUNCE: the guest
  // announces itself after a migration (its control queue is the front end's); for one
  // that does not, the front end sends SEND_RARP (the RARP protocol feature).
  return bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX) |
         bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_F_IN_ORDER) | bit(VIRTIO_NET_F_MTU) |
         bit(VIRTIO_F_RING_PACKED) | (pairs_ > 1 ? bit(VIRTIO_NET_F_MQ) : 0) | kOffloadFeatures |
         bit(VIRTIO_NET_F_GUEST_ANNOUNCE) | kLogAll | kProtocolFeaturesBit;
}

uint64_t VhostUserPort::protocol_features() const {
  return kProtoMq | kProtoLogShmfd | kProtoRarp | kProtoReplyAck | kProtoNetMtu |
         kProtoConfigureMemSlots | kProtoStatus;
}

Status VhostUserPort::set_features(uint64_t features) {
  const bool was_logging = features_.load(std::memory_order_relaxed) & kLogAll;
  worker_.run_sync([&] {
    hdr_len_ = net::net_hdr_len(features);
    mergeable_ = features & bit(VIRTIO_NET_F_MRG_RXBUF);
    tx_caps_ = net::guest_tx_caps(features);
    rx_caps_ = net::guest_rx_caps(features);
    log_all_ = features & kLogAll;
    apply_dirty_log();
  });
  features_.store(features, std::memory_order_relaxed);
  if (bool(features & kLogAll) != was_logging)
    VNET_LOG_RL(log_limits().session, spdlog::level::info, "port {}: dirty page logging {}{}",
                name(), was_logging ? "off" : "on",
                was_logging || log_buffers_ ? "" : " (test knob: RX buffers left unmarked)");
  VNET_LOG_RL(log_limits().session, spdlog::level::info, "port {}: features {}", name(),
              join_feature_names(features));
  return Status::ok();
}

Status VhostUserPort::set_mtu(uint32_t mtu) {
  // 5.1.4.1: the MTU the driver may use; 68 is the IPv4 minimum.
  if (mtu < 68 || mtu > 65535) return Status::errorf("MTU {} out of range [68, 65535]", mtu);
  mtu_.store(mtu, std::memory_order_relaxed);
  VNET_LOG_RL(log_limits().session, spdlog::level::info, "port {}: front end set MTU {}", name(),
              mtu);
  return Status::ok();
}

void VhostUserPort::apply_dirty_log() {
  memory::DirtyLog* log = log_all_ ? dirty_log_.get() : nullptr;
  for (uint32_t i = 0; i < num_queues_; ++i) {
    queues_[i].vq.set_dirty_log(log, log_buffers_);
    queues_[i].pvq.set_dirty_log(log, log_buffers_);
  }
}

Status VhostUserPort::set_log(std::shared_ptr<memory::DirtyLog> log) {
  std::shared_ptr<memory::DirtyLog> old;
  control_log_ = log;
  worker_.run_sync([&] {
    // Between bursts: no queue is marking; the old log is unmapped here, after.
    old = std::move(dirty_log_);
    dirty_log_ = std::move(log);
    apply_dirty_log();
  });
  if (old && old->beyond())
    VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn,
                "port {}: {} page marks fell past the end of the previous dirty log", name(),
                old->beyond());
  if (old) log_beyond_.fetch_add(old->beyond(), std::memory_order_relaxed);
  return Status::ok();
}

Status VhostUserPort::send_rarp(const uint8_t (&mac)[6]) {
  const sw::Mac m = sw::Mac::from_bytes(mac);
  if (m.is_multicast() || m.is_zero()) {
    // Not worth the session: nothing is sent, the front end is told so in the log.
    VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn,
                "port {}: SEND_RARP for {} ignored: not a unicast address", name(), m.to_string());
    return Status::ok();
  }
  worker_.run_sync([&] {
    std::memcpy(rarp_mac_, mac, sizeof(rarp_mac_));
    rarp_pending_ = true;
  });
  VNET_LOG_RL(log_limits().session, spdlog::level::info,
              "port {}: front end asked for a RARP announcement of {}", name(), m.to_string());
  return Status::ok();
}

void VhostUserPort::set_memory(std::shared_ptr<const memory::GuestMemory> mem) {
  worker_.run_sync([&] {
    mem_ = std::move(mem);
    // Running queues move to the new table at the index they reached. Between bursts
    // every popped chain is completed, so the used index equals last_avail_idx.
    for (uint32_t i = 0; i < num_queues_; ++i) {
      Queue& q = queues_[i];
      if (!q.started) continue;
      Status st = q.visit([&](auto& vq) {
        q.cfg.avail_base = vq.last_avail_idx();
        vq.stop();
        return vq.start(mem_, q.cfg);
      });
      if (!st) {
        VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn,
                    "port {}: queue {} cannot move to the new memory table: {}", name(), i,
                    st.message());
        q.started = false;
        worker_.wait_fds_changed();
      }
    }
    update_queue_state();
  });
}

Status VhostUserPort::start_queue(uint32_t index, const virtio::QueueConfig& cfg, FrontendFd kick) {
  if (index >= num_queues_) return Status::errorf("queue {} out of range", index);
  Status st;
  worker_.run_sync([&] {
    Queue& q = queues_[index];
    if (q.started) q.visit([](auto& vq) { vq.stop(); });
    q.started = false;
    q.broken_reported = false;
    if (!mem_) {
      st = Status::error("no memory table");
      update_queue_state();
      return;
    }
    q.cfg = cfg;
    uint64_t f = features_.load(std::memory_order_relaxed);
    q.cfg.event_idx = f & bit(VIRTIO_RING_F_EVENT_IDX);
    q.cfg.indirect = f & bit(VIRTIO_RING_F_INDIRECT_DESC);
    q.cfg.packed = f & bit(VIRTIO_F_RING_PACKED);
    q.cfg.in_order = f & bit(VIRTIO_F_IN_ORDER);
    q.packed = q.cfg.packed;
    st = q.visit([&](auto& vq) { return vq.start(mem_, q.cfg); });
    if (!st) {
      update_queue_state();
      return;
    }
    q.visit([&](auto& vq) {
      // RX buffers: the virtio-net header is written only where it changed.
      vq.set_write_kept(is_guest_rx(index) ? hdr_len_ : 0);
      vq.disable_notifications();  // the worker is polling; it asks for kicks before sleeping
    });
    q.kick = std::move(kick);
    q.started = true;
    update_queue_state();
    worker_.wait_fds_changed();
  });
  if (st)
    VNET_LOG_RL(log_limits().session, spdlog::level::info,
                "port {}: queue {} started (size {}, base {})", name(), index, cfg.size,
                cfg.avail_base);
  else
    VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn, "port {}: queue {} not started: {}",
                name(), index, st.message());
  return st;
}

uint16_t VhostUserPort::stop_queue(uint32_t index) {
  if (index >= num_queues_) return 0;
  uint16_t idx = 0;
  worker_.run_sync([&] {
    Queue& q = queues_[index];
    // (receive_done runs in the same loop pass)
    if (!is_guest_rx(index)) tx_scratch_[index / 2].deferred.n = 0;
    if (q.started) {
      // A packed queue's index carries the driver wrap counter in bit 15 (vhost-user
      // GET_VRING_BASE); between bursts every popped chain was completed.
      idx = q.visit([](auto& vq) {
        vq.stop();
        return vq.last_avail_idx();
      });
      q.started = false;
      q.kick.reset();
      worker_.wait_fds_changed();
    } else {
      idx = q.cfg.avail_base;
    }
    update_queue_state();
  });
  VNET_LOG_RL(log_limits().session, spdlog::level::info, "port {}: queue {} stopped at {}", name(),
              index, idx);
  return idx;
}

Status VhostUserPort::set_call(uint32_t index, FrontendFd call) {
  if (index >= num_queues_) return Status::errorf("queue {} out of range", index);
  Status st;
  worker_.run_sync([&] { st = queues_[index].call.set(std::move(call)); });
  return st;
}

void VhostUserPort::set_enabled(uint32_t index, bool enabled) {
  if (index >= num_queues_) return;
  worker_.run_sync([&] {
    queues_[index].enabled = enabled;
    update_queue_state();
    worker_.wait_fds_changed();
  });
}

void VhostUserPort::update_queue_state() {
  uint32_t rx[net::RxSteering::kMaxQueues];
  uint32_t n = 0;
  for (uint32_t p = 0; p < pairs_; ++p) {
    const bool rx_on = queues_[2 * p].active(), tx_on = queues_[2 * p + 1].active();
    if (rx_on) rx[n++] = p;
    pair_state_[p].store(uint8_t((rx_on ? 1 : 0) | (tx_on ? 2 : 0)), std::memory_order_relaxed);
  }
  steering_.set_enabled(rx, n);
  single_rx_ = n ? rx[0] : 0;
}

void VhostUserPort::reset() {
  worker_.run_sync([&] {
    for (uint32_t i = 0; i < num_queues_; ++i) {
      Queue& q = queues_[i];
      if (q.started) q.visit([](auto& vq) { vq.stop(); });
      q.started = false;
      q.enabled = false;
      q.kick.reset();
      (void)q.call.set(FrontendFd());
      q.cfg = {};
    }
    mem_.reset();
    log_all_ = false;
    rarp_pending_ = false;
    if (dirty_log_) log_beyond_.fetch_add(dirty_log_->beyond(), std::memory_order_relaxed);
    dirty_log_.reset();
    apply_dirty_log();
    for (uint32_t p = 0; p < pairs_; ++p) tx_scratch_[p].deferred.n = 0;
    steering_.clear();
    update_queue_state();
    hdr_len_ = 12;
    mergeable_ = false;
    tx_caps_ = rx_caps_ = {};
    worker_.wait_fds_changed();
  });
  control_log_.reset();
  features_.store(0, std::memory_order_relaxed);
}

// ---- data path (worker thread) ----

void VhostUserPort::notify(Queue& q) {
  if (std::vector<Port*>* list = notify_list()) {
    if (!notify_listed_) {
      list->push_back(this);
      notify_listed_ = true;
    }
    q.notify_due = true;
    return;
  }
  if (q.call.armed() && q.visit([](auto& vq) { return vq.should_notify(); })) q.call.signal();
}

void VhostUserPort::flush_notify() {
  notify_listed_ = false;
  for (uint32_t i = 0; i < num_queues_; ++i) {
    Queue& q = queues_[i];
    if (!q.notify_due) continue;
    q.notify_due = false;
    if (q.call.armed() && q.visit([](auto& vq) { return vq.should_notify_fenced(); }))
      q.call.signal();
  }
}

void VhostUserPort::check_broken(Queue& q, uint32_t index) {
  if (!q.broken() || q.broken_reported) return;
  q.broken_reported = true;
  // Each ring's side counts its own (a transmitq: its pair's owner; a receiveq: the send
  // lock holder).
  if (is_guest_rx(index))
    counters().send_drops.add(net::Drop::kQueueBroken);
  else
    queue_counters(index / 2).drops.add(net::Drop::kQueueBroken);
  VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn,
              "port {}: queue {} stopped, guest broke the ring: {}", name(), index,
              q.visit([](auto& vq) { return vq.broken_reason(); }));
}

// A RARP request (RFC 903, "request reverse", as QEMU's announce_self builds it) from
// `mac`, broadcast: the switch learns the MAC on this port and floods it.
void VhostUserPort::build_rarp(net::Packet& p) const {
  p.vhdr = {};
  p.vlan = 0;
  p.flow = 0;
  p.tail_n = 0;
  p.head = 0;
  uint8_t* d = p.data;
  std::memset(d, 0, 60);
  std::memset(d, 0xff, 6);
  std::memcpy(d + 6, rarp_mac_, 6);
  d[12] = 0x80, d[13] = 0x35;         // ETH_P_RARP
  d[14] = 0x00, d[15] = 0x01;         // hardware: Ethernet
  d[16] = 0x08, d[17] = 0x00;         // protocol: IPv4
  d[18] = 6, d[19] = 4;               // address lengths
  d[20] = 0x00, d[21] = 0x03;         // request reverse
  std::memcpy(d + 22, rarp_mac_, 6);  // sender hardware address
  std::memcpy(d + 32, rarp_mac_, 6);  // target hardware address
  p.len = 60;
}

uint32_t VhostUserPort::receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t pair) {
  if (rarp_pending_ && pair == 0 && max > 0) [[unlikely]] {
    // SEND_RARP: the announcement enters the switch as if the guest had sent it.
    rarp_pending_ = false;
    build_rarp(*pkts[0]);
    queue_counters(0).rx_packets.add();
    queue_counters(0).rx_bytes.add(pkts[0]->len);
    return 1;
  }
  Queue& q = queues_[2 * pair + 1];
  if (!q.active()) return 0;
  TxScratch& s = tx_scratch_[pair];
  QueueCounters& qc = queue_counters(pair);
  bool popped = false;
  uint32_t n = q.visit([&](auto& vq) {
    const uint16_t before = vq.last_avail_idx();
    uint32_t k = net::tx_dequeue(vq, s.chain, hdr_len_, tx_caps_, pkts, max, qc.drops, &s.deferred);
    popped = vq.last_avail_idx() != before;
    return k;
  });
  // With external packets in the burst, receive_done() publishes and notifies.
  if (popped && s.deferred.n == 0) notify(q);
  check_broken(q, 2 * pair + 1);
  if (n) {
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n; ++i) bytes += pkts[i]->len;
    qc.rx_packets.add(n);
    qc.rx_bytes.add(bytes);
    // The flows of this transmitq come back on the receiveq of the same pair.
    // The hash stays with the packet: a multiqueue destination steers by it.
    if (steering_.enabled_count() > 1) [[unlikely]] {
      uint32_t last = 0;  // frames of one flow back to back are learnt once
      for (uint32_t i = 0; i < n; ++i) {
        net::Packet& p = *pkts[i];
        p.flow = net::flow_hash(p.data, p.head_len());
        if (p.flow != last) steering_.learn(p.flow, pair);
        last = p.flow;
      }
    }
  }
  return n;
}

bool VhostUserPort::rx_queue_live(uint32_t pair) const {
  const Queue& q = queues_[2 * pair + 1];
  return q.started && q.enabled;
}

void VhostUserPort::prefetch(bool send_side, uint32_t pair) {
  auto prefetch_head = [](auto& vq) { vq.prefetch_head(); };
  if (queues_[2 * pair + 1].active()) queues_[2 * pair + 1].visit(prefetch_head);
  if (send_side && queues_[2 * single_rx_].active()) queues_[2 * single_rx_].visit(prefetch_head);
}

void VhostUserPort::receive_done(uint32_t pair) {
  net::TxDeferred& d = tx_scratch_[pair].deferred;
  if (d.n == 0) return;
  Queue& q = queues_[2 * pair + 1];
  if (!q.active()) {  // the ring broke after these chains were popped: leave it alone
    d.n = 0;
    return;
  }
  q.visit([&](auto& vq) { net::complete_deferred(vq, d); });
  notify(q);
}

uint32_t VhostUserPort::enqueue(Queue& q, net::Packet* const* pkts, uint32_t n) {
  uint64_t bytes = 0;
  uint32_t sent = q.visit([&](auto& vq) {
    return net::rx_enqueue(vq, rx_chain_, hdr_len_, mergeable_, rx_caps_, vlan(), pkts, n,
                           counters().send_drops, &bytes);
  });
  if (sent) {
    counters().tx_packets.add(sent);
    counters().tx_bytes.add(bytes);
  }
  return sent;
}

uint32_t VhostUserPort::send_to(uint32_t pair, net::Packet* const* pkts, uint32_t n) {
  Queue& q = queues_[2 * pair];
  QueueCounters& qc = queue_counters(pair);
  if (!q.active()) {
    counters().send_drops.add(net::Drop::kRxNotReady, n);
    qc.tx_drops.add(n);
    return 0;
  }
  uint32_t sent =
      fallback_.deliver(pkts, n, rx_caps_, counters(), name(), log_limits().bad_input,
                        [&](net::Packet* const* p, uint32_t k) { return enqueue(q, p, k); });
  if (sent) {
    notify(q);
    qc.tx_packets.add(sent);
  }
  if (sent != n) qc.tx_drops.add(n - sent);
  check_broken(q, 2 * pair);
  return sent;
}

uint32_t VhostUserPort::send_burst(net::Packet* const* pkts, uint32_t n) {
  // One branch per burst: a guest with one receiveq (or none) needs no steering.
  const uint32_t k = steering_.enabled_count();
  if (k > 1) [[unlikely]]
    return net::send_steered(
        steering_, pkts, n,
        [this](uint32_t pair, net::Packet* const* p, uint32_t m) { return send_to(pair, p, m); });
  if (k == 0) {
    counters().send_drops.add(net::Drop::kRxNotReady, n);
    queue_counters(0).tx_drops.add(n);
    return 0;
  }
  return send_to(single_rx_, pkts, n);
}

void VhostUserPort::wait_fds(std::vector<WaitFd>& out, uint32_t pair) const {
  const Queue& q = queues_[2 * pair + 1];
  if (q.started && q.enabled && q.kick)
    out.push_back({q.kick.watch_fd(), WaitFd::kFrontendEventFd});
}

bool VhostUserPort::enable_notifications(uint32_t pair) {
  Queue& q = queues_[2 * pair + 1];
  if (!q.active()) return false;
  if (!q.kick) return true;  // the front end never kicks: keep polling
  return q.visit([](auto& vq) { return vq.enable_notifications(); });
}

void VhostUserPort::disable_notifications(uint32_t pair) {
  Queue& q = queues_[2 * pair + 1];
  if (q.active()) q.visit([](auto& vq) { vq.disable_notifications(); });
}

PortInfo VhostUserPort::info() const {
  PortInfo i;
  i.type = "vhost-user";
  i.socket = cfg_.socket_path;
  i.mode = cfg_.client ? "client" : "server";
  i.connected = endpoint_ && endpoint_->connected();
  uint64_t f = features_.load(std::memory_order_relaxed);
  i.features = feature_names(f);
  if (uint32_t m = mtu_.load(std::memory_order_relaxed)) i.extra.emplace_back("front_end_mtu", m);
  if (endpoint_) {
    const auto& ec = endpoint_->counters();
    i.extra.emplace_back("connections", ec.connections.get());
    i.extra.emplace_back("disconnects", ec.disconnects.get());
    i.extra.emplace_back("rejected_connections", ec.rejected.get());
    i.extra.emplace_back("bad_messages", ec.bad_messages.get());
    i.extra.emplace_back("protocol_errors", ec.protocol_errors.get());
    i.extra.emplace_back("bad_fds", ec.bad_fds.get());
    i.extra.emplace_back("memory_lost", ec.memory_lost.get());
  }
  // Log lines of this port withheld by its rate limits (common/log.h).
  i.extra.emplace_back("log_suppressed", log_limits().suppressed_total());
  // Signals to the front end's call eventfds that the kernel refused.
  // Chains the guest got back empty because a descriptor was bad (the queue goes on),
  // and times a queue was stopped for a bad ring. (Counters: readable from any thread.)
  uint64_t call_failures = 0, bad_chains[2] = {0, 0};
  for (uint32_t q = 0; q < num_queues_; ++q) {
    call_failures += queues_[q].call.failures();
    bad_chains[q & 1] +=
        queues_[q].vq.counters().bad_chains.get() + queues_[q].pvq.counters().bad_chains.get();
  }
  i.extra.emplace_back("call_failures", call_failures);
  i.extra.emplace_back("rx_bad_chains", bad_chains[0]);
  i.extra.emplace_back("tx_bad_chains", bad_chains[1]);
  i.extra.emplace_back("queue_pairs", pairs_);
  // Live migration: whether the front end has the dirty log on, and marks that fell past
  // the end of a log it sized too small.
  i.extra.emplace_back("dirty_logging", (f & kLogAll) ? 1 : 0);
  i.extra.emplace_back("dirty_log_beyond", log_beyond_.load(std::memory_order_relaxed) +
                                               (control_log_ ? control_log_->beyond() : 0));
  static const char* const kStates[4] = {"off", "rx-only", "tx-only", "active"};
  for (uint32_t p = 0; p < pairs_; ++p)
    i.queue_states.emplace_back(kStates[pair_state_[p].load(std::memory_order_relaxed) & 3]);
  return i;
}

}  // namespace vnet::ports
