// VxlanPort: one VXLAN segment (RFC 7348), the switch's way to other hosts. The port is
// a member of one VLAN of the switch (an access port), and every frame the switch sends
// it leaves in a VXLAN tunnel to one remote VTEP (known unicast) or to every VTEP of the
// segment's flood list (broadcast, multicast, unknown unicast: head-end replication);
// frames out of the tunnel go to the local ports only (the forwarder never sends a frame
// back to the port it came from: split horizon).
//
// Wire: outer IPv4 or IPv6 (the family of `local`; the flood list is of the same family) /
// UDP (destination `udp_port`, source from a hash of the inner flow; checksum 0 on IPv4,
// computed on IPv6, where RFC 8200 wants one and Linux VXLAN devices check it unless told
// otherwise; on IPv6 the flow label also carries the flow's hash, RFC 6438) / the 8-byte
// VXLAN header (I flag, VNI) / the inner frame. Received on a UDP socket bound to
// local:udp_port (recvmmsg, one call per burst); sent through a raw socket whose IP and
// UDP headers vnetd writes (sendmmsg, one call per burst), so that the source port can
// follow the flow. Both sockets live in the underlay namespace (`netns`);
// the kernel routes and resolves the outer Ethernet header.
//
// Decapsulation drops, counted by reason: a datagram shorter than the VXLAN header and an
// Ethernet header or without the I flag (vxlan_bad_header), another VNI (vxlan_bad_vni),
// a source that is not a VTEP of the flood list (vxlan_unknown_vtep). Encapsulation:
// a frame larger than the underlay takes (tunnel_too_big) is dropped, a GSO frame is
// segmented (and partial checksums finished) first.
//
// control = "static": remote MACs are learned from decapsulated frames (the inner source
// MAC and the outer source address), as a Linux VXLAN device does; interoperates with one.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/counter.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "ports/offload_fallback.h"
#include "ports/port.h"

namespace vnet::ports {

// A VTEP address in network order: IPv6, or IPv4 as ::ffff:a.b.c.d.
using VtepAddr = std::array<uint8_t, 16>;
VtepAddr vtep_v4(uint32_t addr_be);
inline bool vtep_is_v4(const VtepAddr& a) {
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  for (int i = 0; i < 12; ++i)
    if (a[i] != kMapped[i]) return false;
  return true;
}
// IPv4 or IPv6 text; an error says why not. A VTEP must be a unicast address.
Result<VtepAddr> parse_vtep(const std::string& s, const char* what = "VTEP address");
// Dotted quad for IPv4, RFC 5952 for IPv6.
std::string vtep_string(const VtepAddr& a);

struct VxlanPortConfig {
  uint32_t vni = 0;                  // 24 bits
  std::string local;                 // this host's VTEP address (IPv4 or IPv6)
  std::vector<std::string> remotes;  // the flood list: remote VTEPs (the family of local)
  uint16_t udp_port = 4789;
  // "static": the flood list is `remotes`, remote MACs learned from the tunnel;
  // "evpn": both come from the control plane (set_flood_list, set_remote_mac).
  std::string control = "static";
  std::string netns;  // underlay namespace; empty: vnetd's own
  // The inner frame may be this minus 36 bytes (IPv4) or 56 (IPv6).
  uint32_t underlay_mtu = 1500;
};

class VxlanPort : public Port {
 public:
  static constexpr uint32_t kOuterLen = 20 + 8 + 8;   // IPv4, UDP, VXLAN
  static constexpr uint32_t kOuterLen6 = 40 + 8 + 8;  // IPv6, UDP, VXLAN
  static constexpr uint32_t kVxlanHdrLen = 8;
  static constexpr uint32_t kMaxRemotes = 1024;

  // Opens the sockets (in cfg.netns). The error says which step failed and why.
  static Result<std::unique_ptr<VxlanPort>> open(std::string name, const VxlanPortConfig& cfg);
  // Hot upgrade (control/handover.h): a port on the sockets a predecessor handed over
  // (checked: a UDP socket bound to local:udp_port, a raw socket of local's family).
  static Result<std::unique_ptr<VxlanPort>> adopt(std::string name, const VxlanPortConfig& cfg,
                                                  UniqueFd rx, UniqueFd tx);
  // The two sockets, duplicated, for a successor.
  Result<std::pair<UniqueFd, UniqueFd>> dup_fds() const;
  ~VxlanPort() override = default;

  const VxlanPortConfig& config() const { return cfg_; }
  // Largest inner frame (Ethernet header included, no FCS) one datagram carries.
  uint32_t max_inner() const { return max_inner_; }
  // The inner MTU: what the segment's ports should offer their guests.
  uint32_t inner_mtu() const { return max_inner_ - 14; }
  // The receive socket (a member of the reuseport group of its local address and port).
  int rx_fd() const { return rx_fd_.get(); }
  // The UDP port the receive socket is bound to (tests bind port 0).
  uint16_t bound_port() const { return bound_port_; }
  // The remote VTEP a MAC (raw sw::Mac) was last seen behind, "" if none (any thread).
  std::string vtep_of(uint64_t mac) const;
  // --- control plane (control = "evpn"; control thread) ---
  // Replaces the flood list. The previous list stays readable until the next call:
  // quiesce the workers in between. False if the port has no room for a new VTEP
  // (kMaxRemotes over its life) or an address is not of the port's family (skipped).
  bool set_flood_list(const std::vector<VtepAddr>& addrs);
  // A remote MAC (raw sw::Mac) behind a VTEP, or no longer.
  bool set_remote_mac(uint64_t mac, const VtepAddr& vtep);
  void remove_remote_mac(uint64_t mac);
  size_t flood_size() const;
  bool evpn() const { return evpn_; }
  bool ipv6() const { return v6_; }

  // Hot upgrade: every (MAC, VTEP) the port learned (any thread), and the same taken
  // into a new port before it is attached (entries naming no VTEP of the flood list,
  // or not a unicast MAC, are skipped; returns how many were taken).
  std::vector<std::pair<uint64_t, std::string>> learned_macs() const;
  size_t adopt_macs(const std::vector<std::pair<uint64_t, std::string>>& macs);

  // Hot upgrade: datagrams stay in the socket while held (for a successor to read).
  void hold_reads(uint32_t, bool on) override { held_ = on; }
  uint32_t receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t q = 0) override;
  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override;
  void wait_fds(std::vector<WaitFd>& out, uint32_t q = 0) const override;
  bool enable_notifications(uint32_t q = 0) override;
  void disable_notifications(uint32_t = 0) override {}
  PortInfo info() const override;

 private:
  VxlanPort(std::string name, const VxlanPortConfig& cfg);
  // Checks the configuration and fills in the addresses (no sockets).
  static Result<std::unique_ptr<VxlanPort>> make(std::string name, const VxlanPortConfig& cfg);
  void init_tx_headers();
  // The receive socket is a UDP socket bound to local:udp_port; sets bound_port_.
  Status bind_check();
  // The frames as they are (no offload metadata left), encapsulated and sent.
  uint32_t encap_send(net::Packet* const* pkts, uint32_t n);
  void flush_tx();                            // sends tx_[0..tx_n_) (failures: send_errors)
  int remote_index(const VtepAddr& a) const;  // in vteps_, or -1
  int vtep_slot(const VtepAddr& a);           // remote_index, else a new slot (-1: full)
  // The address of a slot, nullptr if none (the acquire orders the slot's bytes).
  const VtepAddr* vtep_at(int idx) const {
    return idx >= 0 && uint32_t(idx) < nvteps_.load(std::memory_order_acquire) ? &vteps_[idx]
                                                                               : nullptr;
  }
  void learn(uint64_t mac, uint16_t remote);
  int lookup(uint64_t mac) const;  // remote index or -1

  VxlanPortConfig cfg_;
  UniqueFd rx_fd_, tx_fd_;
  VtepAddr local_{};
  bool v6_ = false;
  uint32_t outer_len_ = kOuterLen;
  uint32_t vx_sum_ = 0;  // IPv6: the checksum sum of the VXLAN header and destination port
  // Remote VTEPs by index: a slot, once given an address, keeps it for the port's life
  // (MAC entries refer to it by index). Written by the control thread (and make()) before
  // nvteps_ is raised past it (release); read by both sides below nvteps_ (acquire).
  std::unique_ptr<VtepAddr[]> vteps_;
  std::atomic<uint32_t> nvteps_{0};
  // The flood list: indices into vteps_, immutable once published; the previous one
  // stays readable until the next set_flood_list (the caller quiesces in between).
  struct Flood {
    std::vector<uint16_t> idx;
  };
  std::atomic<const Flood*> flood_{nullptr};
  std::unique_ptr<Flood> flood_owned_, flood_retired_;
  bool evpn_ = false;
  uint32_t max_inner_ = 1464;
  uint16_t bound_port_ = 0;
  OffloadFallback fallback_;

  // A socket address of either family (sin_family and sin6_family share their place).
  union SockAddr {
    sockaddr_in v4;
    sockaddr_in6 v6;
  };
  static VtepAddr addr_of(const SockAddr& a);
  static socklen_t make_sockaddr(const VtepAddr& a, uint16_t port, SockAddr* out);

  // Receive side (the owner).
  bool held_ = false;
  struct RxSlot {
    uint8_t hdr[kVxlanHdrLen];
    SockAddr from;
    iovec iov[2];
  };
  RxSlot rx_[net::kBurst];
  mmsghdr rx_msgs_[net::kBurst];

  // Send side (the send-lock holder): one message per (frame, VTEP).
  static constexpr uint32_t kTxMsgs = 128;
  struct TxSlot {
    uint8_t hdr[kOuterLen6];
    SockAddr to;
    iovec iov[2];
  };
  TxSlot tx_[kTxMsgs];
  mmsghdr tx_msgs_[kTxMsgs];
  uint32_t tx_n_ = 0;

  // MAC -> remote VTEP (static learning): open addressing, one word a slot,
  // (remote index + 1) << 48 | mac; written by the receive side, read by the send side.
  static constexpr uint32_t kMacSlots = 4096;
  static constexpr uint32_t kProbe = 8;
  std::unique_ptr<std::atomic<uint64_t>[]> macs_;

  Counter learned_, moved_, flood_copies_, unicast_sent_, send_errors_, syscalls_;
};

}  // namespace vnet::ports
