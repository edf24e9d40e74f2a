// Frontend: the driver (front-end) side of vhost-user, for tests, benchmarks and
// hostile-front-end tests. It owns the "guest" memory (one memfd, optionally
// MFD_HUGETLB, mapped here: one region at guest address 0 whose user address is the
// mapping address in this process), connects to a back end's socket (or listens for
// a back end in client mode), negotiates features the way QEMU does
// (docs/interop/vhost-user.rst in qemu/qemu, "Starting the device"), sends the memory
// table, and sets up each ring with a DriverQueue laid out in that memory, with an
// eventfd for kicks and one for calls.
//
// Everything here is blocking and single-threaded: a request that expects a reply
// (GET_*, or any request with need_reply under REPLY_ACK) waits at most
// FrontendConfig::timeout_ms for it. send_raw()/recv_reply() send and receive
// arbitrary bytes, so hostile tests can put malformed messages on the wire.
#pragma once

#include <linux/virtio_config.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "vhost_user/message.h"
#include "virtio/driver_queue.h"
#include "virtio/packed_driver_queue.h"

namespace vnet::vhost_user {

struct FrontendConfig {
  std::string socket_path;
  // false: connect to a back end listening at socket_path (vnetd's default).
  // true: listen at socket_path and accept one back end (vnetd's ",client" ports).
  bool listen = false;
  uint64_t mem_size = 64ULL << 20;  // guest memory (rounded up to the page size)
  bool hugetlb = false;             // try MFD_HUGETLB first; falls back to normal pages
  // Device features to ask for: SET_FEATURES sends (features & offered), plus
  // VHOST_USER_F_PROTOCOL_FEATURES when the back end offers it and protocol_features
  // is non-zero. A bit of required_features the back end lacks is an error.
  uint64_t features = 0;
  uint64_t required_features = 0;
  // Protocol features to ask for (sent as requested & offered).
  uint64_t protocol_features = protocol::kReplyAck | protocol::kMq;
  uint32_t num_queues = 2;    // rings to set up (virtio-net: RX 0, TX 1, ...)
  uint16_t queue_size = 256;  // descriptors per ring (power of 2)
  bool kick_fds = true;       // false: SET_VRING_KICK with the invalid-FD flag (back end polls)
  bool call_fds = true;       // false: SET_VRING_CALL with the invalid-FD flag
  int timeout_ms = 5000;      // connect/accept and each reply
};

class Frontend {
 public:
  // A piece of guest memory: guest address, host pointer, length.
  struct Mem {
    uint64_t gpa = 0;
    uint8_t* host = nullptr;
    uint64_t len = 0;
  };

  // Allocates the memory and connects (or accepts). No message is sent yet.
  static Result<std::unique_ptr<Frontend>> create(const FrontendConfig& cfg);
  // create() and then start(): a negotiated device with every ring running.
  static Result<std::unique_ptr<Frontend>> connect_and_start(const FrontendConfig& cfg);

  Frontend(const Frontend&) = delete;
  Frontend& operator=(const Frontend&) = delete;
  ~Frontend();  // closes the connection, unmaps the memory

  // ---- the steps of start-up, in order; start() runs all of them ----
  // GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM (with
  // MQ), SET_OWNER, SET_FEATURES.
  Status negotiate();
  // SET_MEM_TABLE: the one region (gpa 0, uva = our mapping address, offset 0).
  Status send_mem_table();
  // Lays out ring `q` in guest memory (first time only), then SET_VRING_NUM,
  // SET_VRING_BASE (0), SET_VRING_ADDR, SET_VRING_CALL, SET_VRING_KICK. With
  // VIRTIO_F_RING_PACKED negotiated the ring is a packed one (packed_queue(q)), started
  // at base 0x8000 (position 0, wrap counter 1) as DPDK and QEMU start one.
  Status setup_queue(uint32_t q);
  // SET_VRING_ENABLE (only meaningful with PROTOCOL_FEATURES negotiated).
  Status enable_queue(uint32_t q, bool enable);
  // Everything above, for every ring, enabling each.
  Status start();
  // GET_VRING_BASE: the back end stops ring `q` and says where it stopped.
  Result<uint16_t> get_vring_base(uint32_t q);

  // ---- negotiated state ----
  uint64_t offered_features() const { return offered_features_; }
  uint64_t features() const { return features_; }  // what SET_FEATURES sent
  uint64_t offered_protocol_features() const { return offered_protocol_; }
  uint64_t protocol_features() const { return protocol_; }
  bool has_feature(unsigned bit) const { return features_ & (1ULL << bit); }
  uint64_t backend_queue_pairs() const { return queue_pairs_; }  // GET_QUEUE_NUM (0 if not asked)

  // ---- data path ----
  uint32_t num_queues() const { return uint32_t(queues_.size()); }
  virtio::DriverQueue& queue(uint32_t q) { return queues_[q].dq; }
  virtio::PackedDriverQueue& packed_queue(uint32_t q) { return queues_[q].pdq; }
  bool packed() const { return has_feature(VIRTIO_F_RING_PACKED); }
  // Kicks ring `q` (eventfd write; a no-op without a kick fd).
  void kick(uint32_t q);
  // The call eventfd of ring `q` (non-blocking; -1 without call fds), for poll().
  int call_fd(uint32_t q) const { return queues_[q].call.get(); }
  // Waits at most timeout_ms for a call on ring `q` and consumes it. True if there was one.
  bool wait_call(uint32_t q, int timeout_ms);

  // ---- guest memory ----
  // Bump allocator over the memory left after the rings: `len` bytes aligned to
  // `align` (a power of 2). An error when the memory is exhausted.
  Result<Mem> alloc(uint64_t len, uint64_t align = 64);
  // Host pointer of [gpa, gpa+len), nullptr if outside the memory.
  uint8_t* host(uint64_t gpa, uint64_t len = 1) const;
  uint64_t mem_size() const { return mem_size_; }
  uint64_t mem_free() const { return mem_size_ - alloc_next_; }
  bool hugetlb() const { return hugetlb_; }
  int mem_fd() const { return mem_fd_.get(); }
  uint64_t uva() const { return reinterpret_cast<uint64_t>(mem_); }

  // ---- raw protocol access (hostile tests) ----
  int sock() const { return sock_.get(); }
  // Sends exactly this header (request, flags as given: include kVersion yourself)
  // and payload, with `fds` as SCM_RIGHTS. `size` overrides the header's size field
  // (default: payload.size()), to lie about it.
  Status send_raw(uint32_t request, const std::vector<uint8_t>& payload,
                  const std::vector<int>& fds = {}, uint32_t flags = kVersion,
                  std::optional<uint32_t> size = std::nullopt);
  // Receives one message (a reply), waiting at most timeout_ms (default: the config's).
  Result<Message> recv_reply(int timeout_ms = -1);
  // A well-formed request; waits for its reply when the request has one, or for the
  // REPLY_ACK when need_ack (only with REPLY_ACK negotiated). Returns the reply
  // (an empty Message when none was awaited); a non-zero ack is an error.
  Result<Message> request(Request req, const void* payload, uint32_t size,
                          const std::vector<int>& fds = {}, bool need_ack = true);

 private:
  struct Queue {
    virtio::DriverQueue dq;
    virtio::PackedDriverQueue pdq;  // used instead with VIRTIO_F_RING_PACKED
    bool laid_out = false;
    Mem ring;
    UniqueFd kick;  // our end of SET_VRING_KICK
    UniqueFd call;  // our end of SET_VRING_CALL
  };

  explicit Frontend(const FrontendConfig& cfg) : cfg_(cfg) {}
  Status map_memory();
  Status open_socket();
  Result<uint64_t> get_u64(Request req);
  Status check_queue(uint32_t q) const;

  FrontendConfig cfg_;
  UniqueFd mem_fd_;
  uint8_t* mem_ = nullptr;
  uint64_t mem_size_ = 0;
  uint64_t alloc_next_ = 0;
  bool hugetlb_ = false;
  UniqueFd sock_;
  uint64_t offered_features_ = 0, features_ = 0;
  uint64_t offered_protocol_ = 0, protocol_ = 0;
  uint64_t queue_pairs_ = 0;
  std::vector<Queue> queues_;
};

}  // namespace vnet::vhost_user
