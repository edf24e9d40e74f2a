// Backend: what a vhost-user session drives. The session (session.h) owns the
// protocol: it decodes and validates messages, keeps the per-ring state the front
// end sets (num, addr, base, kick, call, err, enable), and calls these methods on
// the control thread. The virtio-net port implements them and hands the queues to
// its data-plane worker. No packet code here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/frontend_fd.h"
#include "common/result.h"
#include "memory/dirty_log.h"
#include "memory/guest_memory.h"
#include "virtio/device_queue.h"

namespace vnet::vhost_user {

class Backend {
 public:
  virtual ~Backend() = default;

  // GET_FEATURES: device feature bits, including VHOST_USER_F_PROTOCOL_FEATURES (bit 30).
  virtual uint64_t device_features() const = 0;
  // GET_PROTOCOL_FEATURES: the protocol features this back end supports.
  virtual uint64_t protocol_features() const = 0;
  // GET_QUEUE_NUM: queue pairs supported (for virtio-net, one pair = RX + TX ring).
  virtual uint32_t max_queue_pairs() const = 0;
  // SET_FEATURES, already checked to be a subset of device_features().
  virtual Status set_features(uint64_t features) = 0;
  // A new memory table (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG). The back end must
  // make running queues switch to it safely (stop, swap, restart at the same index).
  virtual void set_memory(std::shared_ptr<const memory::GuestMemory> mem) = 0;
  // Ring `index` has its size, addresses, base and kick eventfd (invalid: the front
  // end polls and never kicks). Called again if any of them changes while started.
  // The kick fd is watched edge-triggered and never read (common/frontend_fd.h).
  virtual Status start_queue(uint32_t index, const virtio::QueueConfig& cfg, FrontendFd kick) = 0;
  // GET_VRING_BASE (and reset/disconnect): stop ring `index`, return its last avail index.
  virtual uint16_t stop_queue(uint32_t index) = 0;
  // SET_VRING_CALL: the eventfd to signal used buffers on (invalid: do not signal),
  // signalled only through a Notifier (common/frontend_fd.h).
  virtual Status set_call(uint32_t index, FrontendFd call) = 0;
  // SET_VRING_ENABLE (rings start enabled when PROTOCOL_FEATURES is not negotiated).
  virtual void set_enabled(uint32_t index, bool enabled) = 0;
  // NET_SET_MTU (only when the MTU protocol feature was offered).
  virtual Status set_mtu(uint32_t /*mtu*/) { return Status::error("MTU not supported"); }
  // SET_LOG_BASE (VHOST_USER_PROTOCOL_F_LOG_SHMFD): the dirty log to mark while
  // VHOST_F_LOG_ALL is negotiated (SET_FEATURES), replacing the previous one.
  virtual Status set_log(std::shared_ptr<memory::DirtyLog> /*log*/) {
    return Status::error("dirty page logging not supported");
  }
  // SEND_RARP (VHOST_USER_PROTOCOL_F_RARP): after a migration, announce `mac` on the
  // network for a guest that cannot announce itself.
  virtual Status send_rarp(const uint8_t (&/*mac*/)[6]) {
    return Status::error("RARP not supported");
  }
  // Session ended or RESET_OWNER/RESET_DEVICE: stop every queue, forget memory and features.
  virtual void reset() = 0;
};

}  // namespace vnet::vhost_user
