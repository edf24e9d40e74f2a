// VhostUserPort: control-thread Backend calls applied on the worker, and the
// per-burst data path over the guest's queue pair.
#include "ports/vhost_user_port.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "virtio/net_uapi.h"

#include "net/virtio_net_queue.h"
#include "ports/feature_names.h"

namespace vnet::ports {

namespace {
constexpr uint64_t bit(unsigned b) {
  return 1ULL << b;
}
constexpr uint64_t kProtocolFeaturesBit = bit(30);  // VHOST_USER_F_PROTOCOL_FEATURES
// vhost-user protocol features (docs/interop/vhost-user.rst, "Protocol features").
constexpr uint64_t kProtoMq = bit(0), kProtoReplyAck = bit(3), kProtoNetMtu = bit(4),
                   kProtoConfigureMemSlots = bit(15), kProtoStatus = bit(16);
// Offloads both ways (5.1.3): the switch finishes checksums and segments in software
// for destinations that did not negotiate them.
constexpr uint64_t kOffloadFeatures =
    bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) |
    bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN) | bit(VIRTIO_NET_F_GUEST_TSO4) |
    bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN) | bit(VIRTIO_NET_F_HOST_USO) |
    bit(VIRTIO_NET_F_GUEST_USO4) | bit(VIRTIO_NET_F_GUEST_USO6);
}  // namespace

VhostUserPort::VhostUserPort(std::string name, const VhostUserPortConfig& cfg, Executor& worker)
    : Port(std::move(name)), cfg_(cfg), worker_(worker) {
  for (uint32_t i = 0; i < kNumQueues; ++i) {
    const std::string label = fmt::format("port {} queue {}", this->name(), i);
    queues_[i].vq.set_log(&log_limits().bad_input, label);
    queues_[i].pvq.set_log(&log_limits().bad_input, label);
  }
}

VhostUserPort::~VhostUserPort() {
  endpoint_.reset();  // ends the session (which resets us) before members go
}

Status VhostUserPort::open(EventLoop& loop) {
  vhost_user::EndpointConfig ec;
  ec.path = cfg_.socket_path;
  ec.client = cfg_.client;
  ec.perms = cfg_.perms;
  ec.name = name();
  ec.logs = &log_limits();
  auto ep = vhost_user::Endpoint::create(loop, ec, *this);
  if (!ep) return ep.status();
  endpoint_ = std::move(*ep);
  return Status::ok();
}

uint64_t VhostUserPort::device_features() const {
  // VIRTIO_F_IN_ORDER: every queue uses its buffers in the order they were made
  // available (tx_dequeue, rx_enqueue), which lets drivers take their in-order paths.
  // VIRTIO_F_RING_PACKED: each queue then runs a PackedDeviceQueue (virtio 1.2 2.8).
  return bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX) |
         bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_F_IN_ORDER) | bit(VIRTIO_NET_F_MTU) |
         bit(VIRTIO_F_RING_PACKED) | kOffloadFeatures | kProtocolFeaturesBit;
}

uint64_t VhostUserPort::protocol_features() const {
  return kProtoMq | kProtoReplyAck | kProtoNetMtu | kProtoConfigureMemSlots | kProtoStatus;
}

Status VhostUserPort::set_features(uint64_t features) {
  worker_.run_sync([&] {
    hdr_len_ = net::net_hdr_len(features);
    mergeable_ = features & bit(VIRTIO_NET_F_MRG_RXBUF);
    tx_caps_ = net::guest_tx_caps(features);
    rx_caps_ = net::guest_rx_caps(features);
  });
  features_.store(features, std::memory_order_relaxed);
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

void VhostUserPort::set_memory(std::shared_ptr<const memory::GuestMemory> mem) {
  worker_.run_sync([&] {
    mem_ = std::move(mem);
    // Running queues move to the new table at the index they reached. Between bursts
    // every popped chain is completed, so the used index equals last_avail_idx.
    for (uint32_t i = 0; i < kNumQueues; ++i) {
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
  });
}

Status VhostUserPort::start_queue(uint32_t index, const virtio::QueueConfig& cfg, FrontendFd kick) {
  if (index >= kNumQueues) return Status::errorf("queue {} out of range", index);
  Status st;
  worker_.run_sync([&] {
    Queue& q = queues_[index];
    if (q.started) q.visit([](auto& vq) { vq.stop(); });
    q.started = false;
    q.broken_reported = false;
    if (!mem_) {
      st = Status::error("no memory table");
      return;
    }
    q.cfg = cfg;
    uint64_t f = features_.load(std::memory_order_relaxed);
    q.cfg.event_idx = f & bit(VIRTIO_RING_F_EVENT_IDX);
    q.cfg.indirect = f & bit(VIRTIO_RING_F_INDIRECT_DESC);
    q.cfg.packed = f & bit(VIRTIO_F_RING_PACKED);
    q.packed = q.cfg.packed;
    st = q.visit([&](auto& vq) { return vq.start(mem_, q.cfg); });
    if (!st) return;
    q.visit([&](auto& vq) {
      // RX buffers: the virtio-net header is written only where it changed.
      vq.set_write_kept(index == kRxQ ? hdr_len_ : 0);
      vq.disable_notifications();  // the worker is polling; it asks for kicks before sleeping
    });
    q.kick = std::move(kick);
    q.started = true;
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
  if (index >= kNumQueues) return 0;
  uint16_t idx = 0;
  worker_.run_sync([&] {
    Queue& q = queues_[index];
    if (index == kTxQ) deferred_.n = 0;  // (receive_done runs in the same loop pass)
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
  });
  VNET_LOG_RL(log_limits().session, spdlog::level::info, "port {}: queue {} stopped at {}", name(),
              index, idx);
  return idx;
}

Status VhostUserPort::set_call(uint32_t index, FrontendFd call) {
  if (index >= kNumQueues) return Status::errorf("queue {} out of range", index);
  Status st;
  worker_.run_sync([&] { st = queues_[index].call.set(std::move(call)); });
  return st;
}

void VhostUserPort::set_enabled(uint32_t index, bool enabled) {
  if (index >= kNumQueues) return;
  worker_.run_sync([&] {
    queues_[index].enabled = enabled;
    worker_.wait_fds_changed();
  });
}

void VhostUserPort::reset() {
  worker_.run_sync([&] {
    for (auto& q : queues_) {
      if (q.started) q.visit([](auto& vq) { vq.stop(); });
      q.started = false;
      q.enabled = false;
      q.kick.reset();
      (void)q.call.set(FrontendFd());
      q.cfg = {};
    }
    mem_.reset();
    deferred_.n = 0;
    hdr_len_ = 12;
    mergeable_ = false;
    tx_caps_ = rx_caps_ = {};
    worker_.wait_fds_changed();
  });
  features_.store(0, std::memory_order_relaxed);
}

// ---- data path (worker thread) ----

void VhostUserPort::notify(Queue& q) {
  if (std::vector<Port*>* list = notify_list()) {
    if (!queues_[kRxQ].notify_due && !queues_[kTxQ].notify_due) list->push_back(this);
    q.notify_due = true;
    return;
  }
  if (q.call.armed() && q.visit([](auto& vq) { return vq.should_notify(); })) q.call.signal();
}

void VhostUserPort::flush_notify() {
  for (Queue& q : queues_) {
    if (!q.notify_due) continue;
    q.notify_due = false;
    if (q.call.armed() && q.visit([](auto& vq) { return vq.should_notify_fenced(); }))
      q.call.signal();
  }
}

void VhostUserPort::check_broken(Queue& q, uint32_t index) {
  if (!q.broken() || q.broken_reported) return;
  q.broken_reported = true;
  // Each queue's side counts its own (kTxQ: the owner; kRxQ: the send lock holder).
  (index == kTxQ ? counters().drops : counters().send_drops).add(net::Drop::kQueueBroken);
  VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn,
              "port {}: queue {} stopped, guest broke the ring: {}", name(), index,
              q.visit([](auto& vq) { return vq.broken_reason(); }));
}

uint32_t VhostUserPort::receive_burst(net::Packet* const* pkts, uint32_t max) {
  Queue& q = queues_[kTxQ];
  if (!q.active()) return 0;
  bool popped = false;
  uint32_t n = q.visit([&](auto& vq) {
    const uint16_t before = vq.last_avail_idx();
    uint32_t k =
        net::tx_dequeue(vq, tx_chain_, hdr_len_, tx_caps_, pkts, max, counters().drops, &deferred_);
    popped = vq.last_avail_idx() != before;
    return k;
  });
  // With external packets in the burst, receive_done() publishes and notifies.
  if (popped && deferred_.n == 0) notify(q);
  check_broken(q, kTxQ);
  if (n) {
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n; ++i) bytes += pkts[i]->len;
    counters().rx_packets.add(n);
    counters().rx_bytes.add(bytes);
  }
  return n;
}

void VhostUserPort::prefetch(bool send_side) {
  auto prefetch_head = [](auto& vq) { vq.prefetch_head(); };
  if (queues_[kTxQ].active()) queues_[kTxQ].visit(prefetch_head);
  if (send_side && queues_[kRxQ].active()) queues_[kRxQ].visit(prefetch_head);
}

void VhostUserPort::receive_done() {
  if (deferred_.n == 0) return;
  Queue& q = queues_[kTxQ];
  if (!q.active()) {  // the ring broke after these chains were popped: leave it alone
    deferred_.n = 0;
    return;
  }
  q.visit([&](auto& vq) { net::complete_deferred(vq, deferred_); });
  notify(q);
}

uint32_t VhostUserPort::enqueue(net::Packet* const* pkts, uint32_t n) {
  Queue& q = queues_[kRxQ];
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

uint32_t VhostUserPort::send_burst(net::Packet* const* pkts, uint32_t n) {
  Queue& q = queues_[kRxQ];
  if (!q.active()) {
    counters().send_drops.add(net::Drop::kRxNotReady, n);
    return 0;
  }
  uint32_t sent =
      fallback_.deliver(pkts, n, rx_caps_, counters(), name(), log_limits().bad_input,
                        [this](net::Packet* const* p, uint32_t k) { return enqueue(p, k); });
  if (sent) notify(q);
  check_broken(q, kRxQ);
  return sent;
}

void VhostUserPort::wait_fds(std::vector<WaitFd>& out) const {
  const Queue& q = queues_[kTxQ];
  if (q.started && q.enabled && q.kick)
    out.push_back({q.kick.watch_fd(), WaitFd::kFrontendEventFd});
}

bool VhostUserPort::enable_notifications() {
  Queue& q = queues_[kTxQ];
  if (!q.active()) return false;
  if (!q.kick) return true;  // the front end never kicks: keep polling
  return q.visit([](auto& vq) { return vq.enable_notifications(); });
}

void VhostUserPort::disable_notifications() {
  Queue& q = queues_[kTxQ];
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
  i.extra.emplace_back("call_failures",
                       queues_[kRxQ].call.failures() + queues_[kTxQ].call.failures());
  // Chains the guest got back empty because a descriptor was bad (the queue goes on),
  // and times a queue was stopped for a bad ring. (Counters: readable from any thread.)
  auto bad_chains = [](const Queue& q) {
    return q.vq.counters().bad_chains.get() + q.pvq.counters().bad_chains.get();
  };
  i.extra.emplace_back("rx_bad_chains", bad_chains(queues_[kRxQ]));
  i.extra.emplace_back("tx_bad_chains", bad_chains(queues_[kTxQ]));
  return i;
}

}  // namespace vnet::ports
