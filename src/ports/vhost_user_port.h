// VhostUserPort: a VM's virtio-net device, reached over a vhost-user socket.
// As a vhost_user::Backend it takes the session's calls on the control thread and
// applies them on its worker through run_sync(); as a Port it moves bursts between
// the guest's virtqueues and the switch. Queue pairs (virtio 1.2 5.1.2: receiveq k is
// ring 2k, transmitq k is ring 2k+1): VIRTIO_NET_F_MQ with up to queue_pairs of them;
// the port's receive queue k (Port::receive_burst) is the guest's transmitq k, and
// send_burst() steers each frame to one enabled receiveq (net/rx_steering.h).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "common/event_loop.h"
#include "common/executor.h"
#include "common/log.h"
#include "net/offload.h"
#include "net/rx_steering.h"
#include "net/virtio_net_queue.h"
#include "ports/offload_fallback.h"
#include "ports/port.h"
#include "vhost_user/backend.h"
#include "vhost_user/endpoint.h"
#include "virtio/device_queue.h"
#include "virtio/packed_device_queue.h"

namespace vnet::ports {

struct VhostUserPortConfig {
  std::string socket_path;
  bool client = false;  // vnetd connects to the front end's socket
  SocketPerms perms;    // server socket: mode, owner, group
  // Queue pairs offered (GET_QUEUE_NUM); above 1 with VIRTIO_NET_F_MQ.
  uint32_t queue_pairs = kDefaultQueuePairs;
  static constexpr uint32_t kDefaultQueuePairs = 8;
  static constexpr uint32_t kMaxQueuePairs = net::RxSteering::kMaxQueues;
};

class VhostUserPort : public Port, public vhost_user::Backend {
 public:
  VhostUserPort(std::string name, const VhostUserPortConfig& cfg, Executor& worker);
  ~VhostUserPort() override;

  // Creates the socket (server) or starts connecting (client) on `loop`.
  Status open(EventLoop& loop);
  // Hot upgrade (control/handover.h): the sockets and session state a predecessor handed
  // over instead of open(); the rings start with endpoint()->start_adopted().
  Status adopt(EventLoop& loop, UniqueFd listen, UniqueFd session,
               std::vector<vhost_user::Message>& setup);
  vhost_user::Endpoint* endpoint() { return endpoint_.get(); }

  // vhost_user::Backend (control thread)
  uint64_t device_features() const override;
  uint64_t protocol_features() const override;
  uint32_t max_queue_pairs() const override { return pairs_; }
  Status set_features(uint64_t features) override;
  void set_memory(std::shared_ptr<const memory::GuestMemory> mem) override;
  Status start_queue(uint32_t index, const virtio::QueueConfig& cfg, FrontendFd kick) override;
  uint16_t stop_queue(uint32_t index) override;
  Status set_call(uint32_t index, FrontendFd call) override;
  void set_enabled(uint32_t index, bool enabled) override;
  void reset() override;
  Status set_mtu(uint32_t mtu) override;
  Status set_log(std::shared_ptr<memory::DirtyLog> log) override;
  Status send_rarp(const uint8_t (&mac)[6]) override;

  // Port (worker thread)
  uint32_t receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t pair = 0) override;
  bool rx_queue_live(uint32_t pair) const override;
  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override;
  void receive_done(uint32_t pair = 0) override;
  void prefetch(bool send_side, uint32_t pair = 0) override;
  bool takes_external() const override { return true; }
  void wait_fds(std::vector<WaitFd>& out, uint32_t pair = 0) const override;
  bool enable_notifications(uint32_t pair = 0) override;
  void disable_notifications(uint32_t pair = 0) override;
  void flush_notify() override;

  // Port (control thread)
  PortInfo info() const override;

 private:
  // Ring index -> role (virtio 1.2 5.1.2): even rings are the guest's receiveqs (the
  // send side), odd ones its transmitqs (the receive side).
  static constexpr bool is_guest_rx(uint32_t index) { return (index & 1) == 0; }
  struct Queue {
    virtio::DeviceQueue vq;         // the split ring...
    virtio::PackedDeviceQueue pvq;  // ...or the packed one (VIRTIO_F_RING_PACKED)
    bool packed = false;            // which of the two this queue runs (set at start)
    virtio::QueueConfig cfg;
    FrontendFd kick;  // watched edge-triggered by the worker, never read
    Notifier call;    // the front end's call eventfd, signalled without blocking
    bool enabled = false;
    bool started = false;
    bool broken_reported = false;
    bool notify_due = false;  // a notification waits for flush_notify()
    bool active() const { return started && enabled && !broken(); }
    bool broken() const { return packed ? pvq.broken() : vq.broken(); }
    // Calls f with the queue object of the negotiated layout: one branch per call, so
    // per burst on the data path; f is instantiated for both layouts.
    template <class F>
    auto visit(F&& f) {
      if (packed) return f(pvq);
      return f(vq);
    }
    template <class F>
    auto visit(F&& f) const {
      if (packed) return f(pvq);
      return f(vq);
    }
  };
  // Receive-side scratch of one transmitq: the workers of different pairs run at once.
  struct TxScratch {
    virtio::Chain chain;
    net::TxDeferred deferred;  // chains whose frames are out as external packets
  };
  // Per-ring data path: each takes the ring it works on.
  void notify(Queue& q);
  uint32_t enqueue(Queue& q, net::Packet* const* pkts, uint32_t n);
  uint32_t send_to(uint32_t pair, net::Packet* const* pkts, uint32_t n);
  void check_broken(Queue& q, uint32_t index);
  // After a control change (on the worker, under the send lock): which receiveqs take
  // frames, and the per-pair state info() shows.
  void update_queue_state();
  // (worker) Gives every queue the dirty log while VHOST_F_LOG_ALL is on, else none.
  void apply_dirty_log();
  void build_rarp(net::Packet& p) const;
  vhost_user::EndpointConfig endpoint_config();

  VhostUserPortConfig cfg_;
  Executor& worker_;
  std::unique_ptr<vhost_user::Endpoint> endpoint_;

  // Worker-owned data-path state.
  const uint32_t pairs_;
  const uint32_t num_queues_;  // 2 * pairs_
  std::unique_ptr<Queue[]> queues_;
  std::unique_ptr<TxScratch[]> tx_scratch_;  // per pair
  net::RxSteering steering_;
  uint32_t single_rx_ = 0;  // with steering_.enabled_count() == 1: that pair
  std::shared_ptr<const memory::GuestMemory> mem_;
  uint32_t hdr_len_ = 12;
  bool mergeable_ = false;
  net::OffloadCaps tx_caps_;  // what the guest may send (HOST_*)
  net::OffloadCaps rx_caps_;  // what the guest can take (GUEST_*)
  OffloadFallback fallback_;  // software checksum/segmentation for what the guest cannot take
  // The send side's scratch chain (one sender at a time, under the send lock).
  virtio::Chain rx_chain_;
  bool notify_listed_ = false;  // on the worker's notify list this round
  // Live migration (worker-owned): the front end's log (SET_LOG_BASE) and whether
  // VHOST_F_LOG_ALL is negotiated; the queues mark only with both.
  std::shared_ptr<memory::DirtyLog> dirty_log_;
  bool log_all_ = false;
  // False only under the test knob VNET_TEST_SKIP_DIRTY_LOG=1: RX buffers unmarked.
  const bool log_buffers_ = !skip_dirty_log_knob();
  static bool skip_dirty_log_knob();
  std::atomic<uint64_t> log_beyond_{0};  // marks past the end of logs that are gone
  // The same log as dirty_log_, for info() on the control thread (set_log, reset).
  std::shared_ptr<memory::DirtyLog> control_log_;
  // SEND_RARP waiting for the next receive_burst of pair 0 (worker-owned).
  bool rarp_pending_ = false;
  uint8_t rarp_mac_[6] = {};

  std::atomic<uint64_t> features_{0};  // negotiated; read by info()
  std::atomic<uint32_t> mtu_{0};       // from NET_SET_MTU (0: not sent)
  // Per pair, for info(): bit 0 receiveq active, bit 1 transmitq active.
  std::unique_ptr<std::atomic<uint8_t>[]> pair_state_;
};

}  // namespace vnet::ports
