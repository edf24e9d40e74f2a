#include "ports/vxlan_port.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "net/checksum.h"
#include "net/flow_hash.h"
#include "ports/netns.h"
#include "switch/mac.h"

namespace vnet::ports {

namespace {

constexpr uint8_t kFlagI = 0x08;  // RFC 7348 5: the VNI is valid
constexpr int kSocketBuffer = 4 << 20;

VtepAddr from_in6(const in6_addr& a) {
  VtepAddr v;
  std::memcpy(v.data(), &a, 16);
  return v;
}

void grow_buffer(int fd, int opt, int force_opt) {
  int v = kSocketBuffer;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof(v)) != 0)
    setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v));  // best effort: the kernel's maximum
}

uint64_t slot_mac(uint64_t w) {
  return w & ((uint64_t(1) << 48) - 1);
}
int slot_remote(uint64_t w) {
  return int(w >> 48) - 1;
}
uint32_t mac_hash(uint64_t mac) {
  return uint32_t((mac * 0x9e3779b97f4a7c15ULL) >> 40);
}

}  // namespace

VtepAddr vtep_v4(uint32_t addr_be) {
  VtepAddr v{};
  v[10] = v[11] = 0xff;
  std::memcpy(v.data() + 12, &addr_be, 4);
  return v;
}

Result<VtepAddr> parse_vtep(const std::string& s, const char* what) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) == 1) {
    if (a.s_addr == 0 || a.s_addr == INADDR_BROADCAST || IN_MULTICAST(ntohl(a.s_addr)))
      return Status::errorf("{} '{}' must be a unicast address", what, s);
    return vtep_v4(a.s_addr);
  }
  in6_addr a6{};
  if (inet_pton(AF_INET6, s.c_str(), &a6) != 1)
    return Status::errorf("{} '{}' is not an IPv4 or IPv6 address", what, s);
  if (IN6_IS_ADDR_UNSPECIFIED(&a6) || IN6_IS_ADDR_MULTICAST(&a6) || IN6_IS_ADDR_V4MAPPED(&a6) ||
      IN6_IS_ADDR_LINKLOCAL(&a6))
    return Status::errorf("{} '{}' must be a global or unique-local unicast address", what, s);
  return from_in6(a6);
}

std::string vtep_string(const VtepAddr& a) {
  char b[INET6_ADDRSTRLEN];
  if (vtep_is_v4(a)) return inet_ntop(AF_INET, a.data() + 12, b, sizeof(b)) ? b : "?";
  return inet_ntop(AF_INET6, a.data(), b, sizeof(b)) ? b : "?";
}

VtepAddr VxlanPort::addr_of(const SockAddr& a) {
  return a.v4.sin_family == AF_INET ? vtep_v4(a.v4.sin_addr.s_addr) : from_in6(a.v6.sin6_addr);
}

socklen_t VxlanPort::make_sockaddr(const VtepAddr& a, uint16_t port, SockAddr* out) {
  *out = {};
  if (vtep_is_v4(a)) {
    out->v4.sin_family = AF_INET;
    std::memcpy(&out->v4.sin_addr, a.data() + 12, 4);
    out->v4.sin_port = htons(port);
    return sizeof(out->v4);
  }
  out->v6.sin6_family = AF_INET6;
  std::memcpy(&out->v6.sin6_addr, a.data(), 16);
  out->v6.sin6_port = htons(port);
  return sizeof(out->v6);
}

VxlanPort::VxlanPort(std::string name, const VxlanPortConfig& cfg)
    : Port(std::move(name)),
      cfg_(cfg),
      vteps_(new VtepAddr[kMaxRemotes]()),
      macs_(new std::atomic<uint64_t>[kMacSlots]) {
  for (uint32_t i = 0; i < kMacSlots; ++i) macs_[i].store(0, std::memory_order_relaxed);
  evpn_ = cfg.control == "evpn";
  for (uint32_t i = 0; i < net::kBurst; ++i) {
    RxSlot& s = rx_[i];
    mmsghdr& m = rx_msgs_[i];
    std::memset(&m, 0, sizeof(m));
    m.msg_hdr.msg_name = &s.from;
    m.msg_hdr.msg_iov = s.iov;
    m.msg_hdr.msg_iovlen = 2;
  }
  for (uint32_t i = 0; i < kTxMsgs; ++i) {
    TxSlot& s = tx_[i];
    mmsghdr& m = tx_msgs_[i];
    std::memset(&m, 0, sizeof(m));
    std::memset(&s, 0, sizeof(s));
    m.msg_hdr.msg_name = &s.to;
    m.msg_hdr.msg_iov = s.iov;
    m.msg_hdr.msg_iovlen = 2;
  }
}

Result<std::unique_ptr<VxlanPort>> VxlanPort::make(std::string name, const VxlanPortConfig& cfg) {
  if (cfg.vni == 0 || cfg.vni > 0xffffff)
    return Status::errorf("VXLAN port {}: VNI {} is out of range [1, 16777215]", name, cfg.vni);
  if (cfg.control != "static" && cfg.control != "evpn")
    return Status::errorf("VXLAN port {}: control '{}' is not supported (static, evpn)", name,
                          cfg.control);
  if (cfg.control == "evpn" && !cfg.remotes.empty())
    return Status::errorf(
        "VXLAN port {}: with control = evpn the flood list comes from BGP "
        "(no remotes)",
        name);
  if (cfg.remotes.size() > kMaxRemotes)
    return Status::errorf("VXLAN port {}: at most {} remote VTEPs", name, kMaxRemotes);
  std::unique_ptr<VxlanPort> p(new VxlanPort(name, cfg));
  auto local = parse_vtep(cfg.local, "local address");
  if (!local) return Status::errorf("VXLAN port {}: {}", name, local.message());
  p->local_ = *local;
  p->v6_ = !vtep_is_v4(p->local_);
  p->outer_len_ = p->v6_ ? kOuterLen6 : kOuterLen;
  if (cfg.underlay_mtu < p->outer_len_ + 68 || cfg.underlay_mtu > 65535)
    return Status::errorf("VXLAN port {}: underlay MTU {} is out of range [{}, 65535]", name,
                          cfg.underlay_mtu, p->outer_len_ + 68);
  std::vector<VtepAddr> flood;
  for (const std::string& r : cfg.remotes) {
    auto a = parse_vtep(r, "remote VTEP");
    if (!a) return Status::errorf("VXLAN port {}: {}", name, a.message());
    if (*a == p->local_)
      return Status::errorf("VXLAN port {}: remote VTEP {} is the local address", name, r);
    if (vtep_is_v4(*a) == p->v6_)
      return Status::errorf("VXLAN port {}: remote VTEP {} is not of the local address's family",
                            name, r);
    flood.push_back(*a);
  }
  p->set_flood_list(flood);
  p->max_inner_ = cfg.underlay_mtu - p->outer_len_;
  return p;
}

Result<std::unique_ptr<VxlanPort>> VxlanPort::open(std::string name, const VxlanPortConfig& cfg) {
  auto made = make(name, cfg);
  if (!made) return made.status();
  std::unique_ptr<VxlanPort> p = std::move(*made);
  const int family = p->v6_ ? AF_INET6 : AF_INET;
  Status st = run_in_netns(cfg.netns, [&]() -> Status {
    UniqueFd rx(socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!rx) return Status::errorf("UDP socket: {}", strerror(errno));
    grow_buffer(rx.get(), SO_RCVBUF, SO_RCVBUFFORCE);
    // Other segments may bind the same address and port (VniSteering steers by VNI).
    int one = 1;
    if (setsockopt(rx.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
      return Status::errorf("SO_REUSEPORT: {}", strerror(errno));
    if (p->v6_ && setsockopt(rx.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
      return Status::errorf("IPV6_V6ONLY: {}", strerror(errno));
    SockAddr sa;
    const socklen_t sl = make_sockaddr(p->local_, cfg.udp_port, &sa);
    if (bind(rx.get(), reinterpret_cast<sockaddr*>(&sa), sl) != 0)
      return Status::errorf("bind {}:{}: {}", cfg.local, cfg.udp_port, strerror(errno));
    // IPPROTO_RAW: send only, IP header ours (header included implied, IPv6 too). On IPv4
    // the kernel fills in the total length, the ID and the header checksum; IPv6 headers
    // go as written.
    UniqueFd tx(socket(family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW));
    if (!tx)
      return Status::errorf("raw IPv{} socket (needs CAP_NET_RAW): {}", p->v6_ ? 6 : 4,
                            strerror(errno));
    grow_buffer(tx.get(), SO_SNDBUF, SO_SNDBUFFORCE);
    p->rx_fd_ = std::move(rx);
    p->tx_fd_ = std::move(tx);
    return Status::ok();
  });
  if (!st)
    return Status::errorf("VXLAN port {}{}: {}", name,
                          cfg.netns.empty() ? "" : " (netns " + cfg.netns + ")", st.message());
  st = p->bind_check();
  if (!st) return Status::errorf("VXLAN port {}: {}", name, st.message());
  p->init_tx_headers();
  return p;
}

Result<std::unique_ptr<VxlanPort>> VxlanPort::adopt(std::string name, const VxlanPortConfig& cfg,
                                                    UniqueFd rx, UniqueFd tx) {
  auto made = make(name, cfg);
  if (!made) return made.status();
  std::unique_ptr<VxlanPort> p = std::move(*made);
  int v = 0;
  socklen_t l = sizeof(v);
  if (!tx || getsockopt(tx.get(), SOL_SOCKET, SO_TYPE, &v, &l) != 0 || v != SOCK_RAW ||
      getsockopt(tx.get(), SOL_SOCKET, SO_PROTOCOL, &v, &(l = sizeof(v))) != 0 ||
      v != IPPROTO_RAW || getsockopt(tx.get(), SOL_SOCKET, SO_DOMAIN, &v, &(l = sizeof(v))) != 0 ||
      v != (p->v6_ ? AF_INET6 : AF_INET))
    return Status::errorf("VXLAN port {}: the handed-over send socket is not a raw IPv{} socket",
                          name, p->v6_ ? 6 : 4);
  p->rx_fd_ = std::move(rx);
  p->tx_fd_ = std::move(tx);
  Status st = p->bind_check();
  if (!st) return Status::errorf("VXLAN port {}: handed-over socket: {}", name, st.message());
  p->init_tx_headers();
  return p;
}

Status VxlanPort::bind_check() {
  int v = 0;
  socklen_t l = sizeof(v);
  if (!rx_fd_ || getsockopt(rx_fd_.get(), SOL_SOCKET, SO_TYPE, &v, &l) != 0 || v != SOCK_DGRAM)
    return Status::error("the receive socket is not a datagram socket");
  SockAddr sa{};
  socklen_t sl = sizeof(sa);
  if (getsockname(rx_fd_.get(), reinterpret_cast<sockaddr*>(&sa), &sl) != 0)
    return Status::errorf("getsockname: {}", strerror(errno));
  const bool family_ok = sa.v4.sin_family == (v6_ ? AF_INET6 : AF_INET);
  const uint16_t port = ntohs(v6_ ? sa.v6.sin6_port : sa.v4.sin_port);
  if (!family_ok || addr_of(sa) != local_ || (cfg_.udp_port != 0 && port != cfg_.udp_port))
    return Status::errorf("the receive socket is not bound to {}:{}", cfg_.local, cfg_.udp_port);
  bound_port_ = port;
  if (cfg_.udp_port == 0) cfg_.udp_port = bound_port_;
  return Status::ok();
}

Result<std::pair<UniqueFd, UniqueFd>> VxlanPort::dup_fds() const {
  UniqueFd rx(fcntl(rx_fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!rx) return Status::errorf("dup: {}", strerror(errno));
  UniqueFd tx(fcntl(tx_fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!tx) return Status::errorf("dup: {}", strerror(errno));
  return std::make_pair(std::move(rx), std::move(tx));
}

void VxlanPort::init_tx_headers() {
  // The parts of every outer header that do not change.
  const uint32_t l3 = v6_ ? 40 : 20;
  for (uint32_t i = 0; i < kTxMsgs; ++i) {
    TxSlot& s = tx_[i];
    uint8_t* h = s.hdr;
    if (v6_) {
      auto* ip6 = reinterpret_cast<ip6_hdr*>(h);
      ip6->ip6_flow = htonl(6u << 28);
      ip6->ip6_nxt = IPPROTO_UDP;
      ip6->ip6_hlim = 64;
      std::memcpy(&ip6->ip6_src, local_.data(), 16);
      s.to.v6.sin6_family = AF_INET6;
      tx_msgs_[i].msg_hdr.msg_namelen = sizeof(s.to.v6);
    } else {
      auto* ip = reinterpret_cast<iphdr*>(h);
      ip->version = 4;
      ip->ihl = 5;
      ip->ttl = 64;
      ip->protocol = IPPROTO_UDP;
      std::memcpy(&ip->saddr, local_.data() + 12, 4);
      s.to.v4.sin_family = AF_INET;
      tx_msgs_[i].msg_hdr.msg_namelen = sizeof(s.to.v4);
    }
    s.iov[0] = {h, outer_len_};
    auto* udp = reinterpret_cast<udphdr*>(h + l3);
    udp->dest = htons(cfg_.udp_port);
    udp->check = 0;  // RFC 7348 5: zero on IPv4; IPv6: per datagram
    uint8_t* vx = h + l3 + 8;
    vx[0] = kFlagI;
    vx[4] = uint8_t(cfg_.vni >> 16);
    vx[5] = uint8_t(cfg_.vni >> 8);
    vx[6] = uint8_t(cfg_.vni);
  }
  vx_sum_ = net::csum_add(net::csum_partial(tx_[0].hdr + l3 + 8, kVxlanHdrLen), cfg_.udp_port);
}

int VxlanPort::remote_index(const VtepAddr& a) const {
  const uint32_t n = nvteps_.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < n; ++i)
    if (vteps_[i] == a) return int(i);
  return -1;
}

int VxlanPort::vtep_slot(const VtepAddr& a) {
  int i = remote_index(a);
  if (i >= 0) return i;
  const uint32_t n = nvteps_.load(std::memory_order_relaxed);
  if (n == kMaxRemotes || vtep_is_v4(a) == v6_ || a == VtepAddr{} || a == vtep_v4(0)) return -1;
  vteps_[n] = a;
  nvteps_.store(n + 1, std::memory_order_release);
  return int(n);
}

bool VxlanPort::set_flood_list(const std::vector<VtepAddr>& addrs) {
  auto next = std::make_unique<Flood>();
  bool ok = true;
  for (const VtepAddr& a : addrs) {
    const int i = vtep_slot(a);
    if (i < 0) {
      ok = false;
      continue;
    }
    if (std::find(next->idx.begin(), next->idx.end(), uint16_t(i)) == next->idx.end())
      next->idx.push_back(uint16_t(i));
  }
  flood_.store(next.get(), std::memory_order_release);
  flood_retired_ = std::move(flood_owned_);
  flood_owned_ = std::move(next);
  return ok;
}

size_t VxlanPort::flood_size() const {
  const Flood* f = flood_.load(std::memory_order_acquire);
  return f ? f->idx.size() : 0;
}

bool VxlanPort::set_remote_mac(uint64_t mac, const VtepAddr& vtep) {
  const int i = vtep_slot(vtep);
  if (i < 0) return false;
  learn(mac, uint16_t(i));
  return true;
}

void VxlanPort::remove_remote_mac(uint64_t mac) {
  const uint32_t h = mac_hash(mac);
  for (uint32_t k = 0; k < kProbe; ++k) {
    std::atomic<uint64_t>& s = macs_[(h + k) & (kMacSlots - 1)];
    const uint64_t cur = s.load(std::memory_order_relaxed);
    if (cur != 0 && slot_mac(cur) == mac) s.store(0, std::memory_order_relaxed);
  }
}

void VxlanPort::learn(uint64_t mac, uint16_t remote) {
  const uint64_t w = (uint64_t(remote) + 1) << 48 | mac;
  const uint32_t h = mac_hash(mac);
  int free_slot = -1;
  for (uint32_t k = 0; k < kProbe; ++k) {
    std::atomic<uint64_t>& s = macs_[(h + k) & (kMacSlots - 1)];
    const uint64_t cur = s.load(std::memory_order_relaxed);
    if (cur == 0) {
      if (free_slot < 0) free_slot = int((h + k) & (kMacSlots - 1));
      continue;
    }
    if (slot_mac(cur) == mac) {
      if (cur != w) {
        s.store(w, std::memory_order_relaxed);
        moved_.add();
      }
      return;
    }
  }
  // New: a free slot of the probe window, else the first one (an older MAC forgets its
  // VTEP and is flooded to until it is seen again).
  macs_[free_slot >= 0 ? uint32_t(free_slot) : (h & (kMacSlots - 1))].store(
      w, std::memory_order_relaxed);
  learned_.add();
}

int VxlanPort::lookup(uint64_t mac) const {
  const uint32_t h = mac_hash(mac);
  for (uint32_t k = 0; k < kProbe; ++k) {
    const uint64_t cur = macs_[(h + k) & (kMacSlots - 1)].load(std::memory_order_relaxed);
    if (cur != 0 && slot_mac(cur) == mac) return slot_remote(cur);
  }
  return -1;
}

std::string VxlanPort::vtep_of(uint64_t mac) const {
  const VtepAddr* a = vtep_at(lookup(sw::Mac::from_raw(mac).raw()));
  return a ? vtep_string(*a) : "";
}

std::vector<std::pair<uint64_t, std::string>> VxlanPort::learned_macs() const {
  std::vector<std::pair<uint64_t, std::string>> out;
  for (uint32_t i = 0; i < kMacSlots; ++i) {
    const uint64_t w = macs_[i].load(std::memory_order_relaxed);
    const VtepAddr* a = w ? vtep_at(slot_remote(w)) : nullptr;
    if (a) out.emplace_back(slot_mac(w), vtep_string(*a));
  }
  return out;
}

size_t VxlanPort::adopt_macs(const std::vector<std::pair<uint64_t, std::string>>& macs) {
  size_t n = 0;
  for (const auto& [mac, vtep] : macs) {
    auto a = parse_vtep(vtep);
    if (!a) continue;
    const int r = remote_index(*a);
    const sw::Mac m = sw::Mac::from_raw(mac);
    if (r < 0 || m.raw() != mac || m.is_multicast() || m.is_zero()) continue;
    learn(mac, uint16_t(r));
    ++n;
  }
  learned_.reset();  // counts what this process learned from the tunnel
  moved_.reset();
  return n;
}

uint32_t VxlanPort::receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t q) {
  if (held_) [[unlikely]]
    return 0;
  if (max > net::kBurst) max = net::kBurst;
  for (uint32_t i = 0; i < max; ++i) {
    RxSlot& s = rx_[i];
    s.iov[0] = {s.hdr, kVxlanHdrLen};
    s.iov[1] = {pkts[i]->data, sizeof(pkts[i]->data)};
    rx_msgs_[i].msg_hdr.msg_namelen = sizeof(s.from);
    rx_msgs_[i].msg_hdr.msg_flags = 0;
  }
  const int r = recvmmsg(rx_fd_.get(), rx_msgs_, max, MSG_DONTWAIT, nullptr);
  if (r <= 0) return 0;
  syscalls_.add();
  QueueCounters& qc = queue_counters(q);
  RateLimit& rl = log_limits().bad_input;
  uint32_t kept = 0;
  uint64_t bytes = 0;
  // A burst mostly comes from one VTEP: look its slot up once per source, not per datagram.
  VtepAddr last_from{};
  int last_remote = -1;
  for (uint32_t i = 0; i < uint32_t(r); ++i) {
    const RxSlot& s = rx_[i];
    const uint32_t got = rx_msgs_[i].msg_len;
    const uint8_t* h = s.hdr;
    if (got < kVxlanHdrLen + net::kEthHdrLen || !(h[0] & kFlagI) ||
        (rx_msgs_[i].msg_hdr.msg_flags & MSG_TRUNC)) {
      qc.drops.add(net::Drop::kVxlanBadHeader);
      VNET_LOG_RL(rl, spdlog::level::warn,
                  "VXLAN port {}: dropped a datagram of {} bytes from {}: not a VXLAN frame",
                  name(), got, vtep_string(addr_of(s.from)));
      continue;
    }
    const uint32_t vni = uint32_t(h[4]) << 16 | uint32_t(h[5]) << 8 | h[6];
    if (vni != cfg_.vni) {
      qc.drops.add(net::Drop::kVxlanBadVni);
      VNET_LOG_RL(rl, spdlog::level::warn, "VXLAN port {}: dropped a frame of VNI {} from {}",
                  name(), vni, vtep_string(addr_of(s.from)));
      continue;
    }
    const VtepAddr from = addr_of(s.from);
    if (from != last_from || last_remote < 0) {
      last_from = from;
      last_remote = remote_index(from);
    }
    const int remote = last_remote;
    if (remote < 0) {
      qc.drops.add(net::Drop::kVxlanUnknownVtep);
      VNET_LOG_RL(rl, spdlog::level::warn,
                  "VXLAN port {}: dropped a frame from {}, not a VTEP of the segment", name(),
                  vtep_string(from));
      continue;
    }
    // Move it into the place of the next kept packet (pkts[kept] took datagram kept's
    // bytes: swap the data by pointer is not possible, so copy only when a drop came
    // before; drops are rare).
    net::Packet& p = *pkts[kept];
    const uint32_t len = got - kVxlanHdrLen;
    if (kept != i) std::memcpy(p.data, pkts[i]->data, len);
    std::memset(&p.vhdr, 0, sizeof(p.vhdr));
    p.len = len;
    p.vlan = 0;
    p.flow = 0;
    p.tail_n = 0;
    const sw::Mac src = sw::Mac::from_bytes(p.data + 6);
    if (!evpn_ && !src.is_multicast() && !src.is_zero() && lookup(src.raw()) != remote)
      learn(src.raw(), uint16_t(remote));
    bytes += len;
    ++kept;
  }
  if (kept) {
    qc.rx_packets.add(kept);
    qc.rx_bytes.add(bytes);
  }
  return kept;
}

uint32_t VxlanPort::send_burst(net::Packet* const* pkts, uint32_t n) {
  // Every offload resolved in software first: the far end gets plain frames.
  static const net::OffloadCaps kNone{};
  return fallback_.deliver(
      pkts, n, kNone, counters(), name(), log_limits().bad_input,
      [this](net::Packet* const* ps, uint32_t m) { return encap_send(ps, m); });
}

uint32_t VxlanPort::encap_send(net::Packet* const* pkts, uint32_t n) {
  const Flood* flood = flood_.load(std::memory_order_acquire);
  uint32_t sent = 0;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const net::Packet& p = *pkts[i];
    if (p.len > max_inner_) {
      counters().send_drops.add(net::Drop::kTunnelTooBig);
      VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn,
                  "VXLAN port {}: dropped a frame of {} bytes: the tunnel carries at most {}",
                  name(), p.len, max_inner_);
      continue;
    }
    if (p.len < net::kEthHdrLen) {
      counters().send_drops.add(net::Drop::kTxTooShort);
      continue;
    }
    const sw::Mac dst = sw::Mac::from_bytes(p.data);
    const VtepAddr* to = dst.is_multicast() ? nullptr : vtep_at(lookup(dst.raw()));
    const uint16_t* idx = flood ? flood->idx.data() : nullptr;
    const uint32_t copies = to ? 1 : (flood ? uint32_t(flood->idx.size()) : 0);
    if (copies == 0) {  // no VTEP to flood to (yet)
      counters().send_drops.add(net::Drop::kRxNotReady);
      continue;
    }
    // RFC 7348 5: a source port from a hash of the inner headers, in the dynamic range.
    const uint32_t hash = net::flow_hash(p.data, p.len);
    const uint16_t sport = uint16_t(49152 + net::hash_to_range(hash, 16384));
    const uint16_t ulen = uint16_t(8 + kVxlanHdrLen + p.len);
    // IPv6: the UDP checksum but for the pseudo-header's destination, once per frame.
    uint32_t sum = 0;
    if (v6_) {
      sum = net::csum_add(net::csum_partial(p.data, p.len, vx_sum_), sport);
      sum = net::csum_add(sum, ulen);  // the UDP length field (the pseudo-header has its own)
    }
    for (uint32_t k = 0; k < copies; ++k) {
      const VtepAddr* addr = to ? to : vtep_at(idx[k]);
      if (!addr) continue;
      if (tx_n_ == kTxMsgs) flush_tx();
      TxSlot& s = tx_[tx_n_++];
      udphdr* udp;
      if (v6_) {
        auto* ip6 = reinterpret_cast<ip6_hdr*>(s.hdr);
        ip6->ip6_flow = htonl(6u << 28 | (hash & 0xfffff));
        ip6->ip6_plen = htons(ulen);
        std::memcpy(&ip6->ip6_dst, addr->data(), 16);
        std::memcpy(&s.to.v6.sin6_addr, addr->data(), 16);
        udp = reinterpret_cast<udphdr*>(s.hdr + 40);
        const uint16_t c = net::csum_finish(
            net::csum_add(sum, net::pseudo_sum_v6(local_.data(), addr->data(), IPPROTO_UDP, ulen)));
        udp->check = htons(c ? c : 0xffff);  // RFC 768: a computed zero goes as all ones
      } else {
        auto* ip = reinterpret_cast<iphdr*>(s.hdr);
        std::memcpy(&ip->daddr, addr->data() + 12, 4);
        std::memcpy(&s.to.v4.sin_addr, addr->data() + 12, 4);
        udp = reinterpret_cast<udphdr*>(s.hdr + 20);
      }
      udp->source = htons(sport);
      udp->len = htons(ulen);
      s.iov[1] = {const_cast<uint8_t*>(p.data), p.len};
    }
    if (to)
      unicast_sent_.add();
    else
      flood_copies_.add(copies);
    ++sent;
    bytes += p.len;
  }
  flush_tx();
  if (sent) {
    counters().tx_packets.add(sent);
    counters().tx_bytes.add(bytes);
  }
  return sent;
}

void VxlanPort::flush_tx() {
  uint32_t off = 0;
  while (off < tx_n_) {
    const int r = sendmmsg(tx_fd_.get(), tx_msgs_ + off, tx_n_ - off, MSG_DONTWAIT);
    syscalls_.add();
    if (r > 0) {
      off += uint32_t(r);
      continue;
    }
    const int e = r < 0 ? errno : EIO;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == ENOBUFS) {  // the underlay is full: the rest goes
      send_errors_.add(tx_n_ - off);
      break;
    }
    // This datagram cannot go (no route, EMSGSIZE...): skip it, send the others.
    send_errors_.add();
    VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn, "VXLAN port {}: send to {}: {}",
                name(), vtep_string(addr_of(tx_[off].to)), strerror(e));
    ++off;
  }
  tx_n_ = 0;
}

void VxlanPort::wait_fds(std::vector<WaitFd>& out, uint32_t) const {
  out.push_back({rx_fd_.get(), WaitFd::kLevel});
}

bool VxlanPort::enable_notifications(uint32_t) {
  return false;  // level-triggered epoll on the socket: nothing to arm
}

PortInfo VxlanPort::info() const {
  PortInfo i;
  i.type = "vxlan";
  i.socket = fmt::format("{}:{} vni {}", cfg_.local, cfg_.udp_port, cfg_.vni);
  i.mode = cfg_.control;
  i.connected = true;
  i.extra = {{"vni", cfg_.vni},
             {"remote_vteps", flood_size()},
             {"learned", learned_.get()},
             {"moved", moved_.get()},
             {"unicast_sent", unicast_sent_.get()},
             {"flood_copies", flood_copies_.get()},
             {"send_errors", send_errors_.get()},
             {"syscalls", syscalls_.get()}};
  return i;
}

}  // namespace vnet::ports
