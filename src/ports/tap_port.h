// TapPort: a Linux TAP device, so that VMs on the switch reach the host kernel (or a
// container's network namespace). vnetd creates the TAP (or attaches to an existing one),
// optionally inside a named network namespace, with IFF_VNET_HDR so frames cross with a
// 12-byte virtio_net_hdr_v1 and keep their checksum/GSO offloads both ways. Set-up runs on
// the control thread; the data path on the owning worker: batched through io_uring
// (ports/tap_uring.h) where the kernel has what it needs, else one readv/writev per frame.
#pragma once

#include <sys/uio.h>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/counter.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "net/offload.h"
#include "net/rx_steering.h"
#include "ports/offload_fallback.h"
#include "ports/port.h"
#include "ports/tap_uring.h"

namespace vnet::ports {

// How the data path talks to the kernel.
struct TapSetup;  // tap_port.cc

enum class TapIo {
  kAuto,      // io_uring when the kernel supports it, else system calls
  kUring,     // io_uring or fail
  kSyscalls,  // one readv/writev per frame
};
// "auto" | "uring" | "syscalls"; nullopt for anything else.
std::optional<TapIo> parse_tap_io(std::string_view s);
const char* tap_io_name(TapIo io);

struct TapPortConfig {
  // Interface name (at most 15 bytes). Empty when creating: the kernel picks tapN.
  std::string ifname;
  // Attach to an existing TAP instead of creating one. A created TAP goes away with the
  // port; an attached one is left as it is.
  bool attach = false;
  // Named network namespace (`ip netns add NAME`) the TAP is created in or looked up in.
  // Empty: vnetd's own. The port's fd works from vnetd's namespace either way.
  std::string netns;
  // MTU to set (68..65535); unset: leave the kernel's (1500 for a new TAP).
  std::optional<uint32_t> mtu;
  // IFF_MULTI_QUEUE. Must match an attached TAP's setting. Implied by queues > 1.
  bool multi_queue = false;
  // Queues (fds of an IFF_MULTI_QUEUE TAP), each a receive queue of the port polled by
  // one worker; 1..kMaxQueues.
  uint32_t queues = 1;
  static constexpr uint32_t kMaxQueues = 16;
  // Offloads the kernel may use in frames it sends us (TUNSETOFFLOAD). tso4, tso6 and uso
  // need csum, tso_ecn needs tso4 or tso6. uso is dropped (with a warning) on a kernel
  // without TUN_F_USO4/6.
  net::OffloadCaps offloads;
  TapIo io = TapIo::kAuto;
};

class TapPort : public Port {
 public:
  // Creates or attaches the TAP, sets its virtio-net header and offloads, its MTU and
  // IFF_UP (netlink). The error says which step failed and why.
  static Result<std::unique_ptr<TapPort>> open(std::string name, const TapPortConfig& cfg);
  // Hot upgrade (control/handover.h): a port on the fds a predecessor vnetd handed over
  // (one per queue), checked as an attached TAP is; `created`: the TAP goes with the port.
  static Result<std::unique_ptr<TapPort>> adopt(std::string name, const TapPortConfig& cfg,
                                                std::vector<UniqueFd> fds, bool created);
  // The TAP's fds, duplicated, for a successor.
  Result<std::vector<UniqueFd>> dup_fds() const;
  // (queue q's worker) Hot upgrade: no more reads from queue q (an armed io_uring read is
  // cancelled, and what it read still comes through receive_burst) until hold_reads(false).
  void hold_reads(uint32_t q, bool on) override;
  // (queue q's worker) Held and nothing read is waiting any more.
  bool reads_drained(uint32_t q) const override;
  ~TapPort() override;

  const std::string& ifname() const { return ifname_; }
  const std::string& netns() const { return cfg_.netns; }
  int ifindex() const { return ifindex_; }  // in the TAP's namespace
  bool created() const { return created_; }
  int fd(uint32_t q = 0) const { return q_[q].fd.get(); }
  // The device went away underneath the port (`ip link del`, its namespace removed): the
  // kernel answers EBADFD and the fd polls POLLERR for ever. The port then puts a silent
  // eventfd in the fd's place (epoll drops the dead TAP file by itself), receives nothing
  // and drops what it is sent. Set on the worker, readable anywhere.
  bool gone() const { return gone_.load(std::memory_order_relaxed); }

  // Offloads frames we WRITE may carry. The kernel takes any valid virtio_net_hdr on write
  // (tun_get_user -> virtio_net_hdr_to_skb) whatever TUNSETOFFLOAD says, so with offloads
  // configured everything is true except uso on a kernel that does not know
  // VIRTIO_NET_HDR_GSO_UDP_L4 (no TUN_F_USO); with none configured, nothing is: vnetd then
  // checksums and segments in software before writing, in both directions off.
  const net::OffloadCaps& send_caps() const { return send_caps_; }
  // Offloads frames we READ may carry: exactly what TUNSETOFFLOAD enabled.
  const net::OffloadCaps& recv_caps() const { return recv_caps_; }
  // The TUNSETOFFLOAD flags in force (TUN_F_*).
  unsigned tun_offload_flags() const { return tun_flags_; }

  // True when the data path runs on io_uring.
  bool uses_uring() const { return q_[0].uring != nullptr; }

  // Port (worker thread). With io_uring: receive_burst takes the frames the armed read
  // completed (no system call); a frame of net::kDirectMin bytes or more is lent: its
  // first net::kDirectHead bytes are copied into the packet, the rest stays in the port's
  // buffer (Packet::tail) until receive_done() or the next receive_burst(), whichever
  // comes first. send_burst writes a burst in one submission, external packets straight
  // from their pieces. With system calls: one readv per frame, plus one that finds the fd
  // empty (EAGAIN), and one writev per frame. A frame the kernel refuses is dropped.
  uint32_t receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t q = 0) override;
  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override;
  void receive_done(uint32_t q = 0) override;
  bool takes_external() const override { return true; }
  // The ring's eventfd with io_uring, the TAP fd (level-triggered) without.
  void wait_fds(std::vector<WaitFd>& out, uint32_t q = 0) const override;
  bool enable_notifications(uint32_t q = 0) override;
  void disable_notifications(uint32_t q = 0) override;

  // Control thread: changes the device's MTU (netlink, in the TAP's namespace).
  Status set_mtu(uint32_t mtu);
  uint32_t mtu() const { return mtu_; }

  // Port (control thread)
  PortInfo info() const override;

 private:
  TapPort(std::string name, const TapPortConfig& cfg);
  static Result<std::unique_ptr<TapPort>> open_with(std::string name, const TapPortConfig& cfg,
                                                    TapSetup& s);

  // One fd of the TAP (one queue of an IFF_MULTI_QUEUE TAP) and its data path. The read
  // side belongs to the worker polling the queue; the write side to the send-lock holder.
  struct Queue {
    UniqueFd fd;
    std::unique_ptr<TapUring> uring;
    // Buffers of the last burst's lent frames, back to the kernel in receive_done().
    TapUring::ReadDone lent[TapUring::kRxBuffers];
    uint32_t lent_n = 0;
    bool held = false;  // hold_reads()
  };
  // System-call path: 0 or an errno; stores the bytes read.
  int read_frame(Queue& q, net::Packet& p, size_t* got);
  uint32_t receive_syscalls(Queue& q, QueueCounters& qc, net::Packet* const* pkts, uint32_t max);
  uint32_t receive_uring(Queue& q, QueueCounters& qc, net::Packet* const* pkts, uint32_t max);
  // A frame read (`got` bytes, header included) into p, or dropped; true if kept.
  bool accept_frame(QueueCounters& qc, net::Packet& p, size_t got);
  void read_error(int e);
  void mark_gone(const char* op);

  TapPortConfig cfg_;
  std::unique_ptr<Queue[]> q_;  // rx_queues() of them
  std::string ifname_;
  int ifindex_ = 0;
  uint32_t mtu_ = 0;
  bool created_ = false;
  unsigned tun_flags_ = 0;
  net::OffloadCaps send_caps_, recv_caps_;
  OffloadFallback fallback_;
  // Which fd a frame is written to: the one its flow came from (the kernel's tun flow
  // table then sends that flow's replies back on it), else by flow hash.
  net::RxSteering steering_;
  // The frames as they are (send_burst has done the offload work), kTxBatch at a time.
  uint32_t write_burst(net::Packet* const* pkts, uint32_t n);
  uint32_t write_queue(uint32_t q, net::Packet* const* pkts, uint32_t n);
  uint32_t write_chunk(Queue& q, net::Packet* const* pkts, uint32_t n);
  // What one frame's write needs until it completes: the header (moved past a VLAN tag),
  // the tag, the iovecs.
  struct TxFrame {
    virtio_net_hdr_v1 hdr;
    uint8_t tag[4];
    iovec iov[4 + net::kMaxTail];
    unsigned iovcnt;
  };
  void prepare(TxFrame& f, const net::Packet& p, uint16_t vlan_tag);
  TxFrame tx_[TapUring::kTxBatch];

  // Worker-written, control-read. io_submits: system calls that moved frames (readv/writev,
  // or io_uring_enter); io_frames: frames they moved.
  Counter read_errors_, write_errors_, write_busy_;
  Counter io_submits_, io_frames_;
  std::atomic<bool> gone_{false};
};

}  // namespace vnet::ports
