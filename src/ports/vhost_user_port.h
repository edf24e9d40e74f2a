// VhostUserPort: a VM's virtio-net device, reached over a vhost-user socket.
// As a vhost_user::Backend it takes the session's calls on the control thread and
// applies them on its worker through run_sync(); as a Port it moves bursts between
// the guest's virtqueues (queue 0 = guest RX, queue 1 = guest TX) and the switch.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "common/event_loop.h"
#include "common/executor.h"
#include "common/log.h"
#include "net/offload.h"
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
};

class VhostUserPort : public Port, public vhost_user::Backend {
 public:
  VhostUserPort(std::string name, const VhostUserPortConfig& cfg, Executor& worker);
  ~VhostUserPort() override;

  // Creates the socket (server) or starts connecting (client) on `loop`.
  Status open(EventLoop& loop);

  // vhost_user::Backend (control thread)
  uint64_t device_features() const override;
  uint64_t protocol_features() const override;
  uint32_t max_queue_pairs() const override { return 1; }
  Status set_features(uint64_t features) override;
  void set_memory(std::shared_ptr<const memory::GuestMemory> mem) override;
  Status start_queue(uint32_t index, const virtio::QueueConfig& cfg, FrontendFd kick) override;
  uint16_t stop_queue(uint32_t index) override;
  Status set_call(uint32_t index, FrontendFd call) override;
  void set_enabled(uint32_t index, bool enabled) override;
  void reset() override;
  Status set_mtu(uint32_t mtu) override;

  // Port (worker thread)
  uint32_t receive_burst(net::Packet* const* pkts, uint32_t max) override;
  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override;
  void receive_done() override;
  void prefetch(bool send_side) override;
  bool takes_external() const override { return true; }
  void wait_fds(std::vector<WaitFd>& out) const override;
  bool enable_notifications() override;
  void disable_notifications() override;
  void flush_notify() override;

  // Port (control thread)
  PortInfo info() const override;

 private:
  static constexpr uint32_t kRxQ = 0, kTxQ = 1, kNumQueues = 2;
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
  void notify(Queue& q);
  uint32_t enqueue(net::Packet* const* pkts, uint32_t n);
  void check_broken(Queue& q, uint32_t index);

  VhostUserPortConfig cfg_;
  Executor& worker_;
  std::unique_ptr<vhost_user::Endpoint> endpoint_;

  // Worker-owned data-path state.
  Queue queues_[kNumQueues];
  std::shared_ptr<const memory::GuestMemory> mem_;
  uint32_t hdr_len_ = 12;
  bool mergeable_ = false;
  net::OffloadCaps tx_caps_;  // what the guest may send (HOST_*)
  net::OffloadCaps rx_caps_;  // what the guest can take (GUEST_*)
  OffloadFallback fallback_;  // software checksum/segmentation for what the guest cannot take
  // One scratch chain per direction: receive_burst (owner) and send_burst (a sender under
  // the send lock) may run at the same time.
  virtio::Chain tx_chain_, rx_chain_;
  net::TxDeferred deferred_;  // TX chains whose frames are out as external packets (owner)

  std::atomic<uint64_t> features_{0};  // negotiated; read by info()
  std::atomic<uint32_t> mtu_{0};       // from NET_SET_MTU (0: not sent)
};

}  // namespace vnet::ports
