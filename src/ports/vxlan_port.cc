#include "ports/vxlan_port.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "net/flow_hash.h"
#include "ports/netns.h"
#include "switch/mac.h"

namespace vnet::ports {

namespace {

constexpr uint8_t kFlagI = 0x08;  // RFC 7348 5: the VNI is valid
constexpr int kSocketBuffer = 4 << 20;

std::string addr_string(uint32_t be) {
  char b[INET_ADDRSTRLEN];
  in_addr a{be};
  return inet_ntop(AF_INET, &a, b, sizeof(b)) ? b : "?";
}

Result<uint32_t> parse_v4(const std::string& s, const char* what) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1)
    return Status::errorf("{} '{}' is not an IPv4 address (IPv6 VTEPs are not supported yet)", what,
                          s);
  if (a.s_addr == 0 || a.s_addr == INADDR_BROADCAST || IN_MULTICAST(ntohl(a.s_addr)))
    return Status::errorf("{} '{}' must be a unicast address", what, s);
  return a.s_addr;
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

VxlanPort::VxlanPort(std::string name, const VxlanPortConfig& cfg)
    : Port(std::move(name)),
      cfg_(cfg),
      vteps_(new std::atomic<uint32_t>[kMaxRemotes]),
      macs_(new std::atomic<uint64_t>[kMacSlots]) {
  for (uint32_t i = 0; i < kMacSlots; ++i) macs_[i].store(0, std::memory_order_relaxed);
  for (uint32_t i = 0; i < kMaxRemotes; ++i) vteps_[i].store(0, std::memory_order_relaxed);
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
    s.to.sin_family = AF_INET;
    s.iov[0] = {s.hdr, kOuterLen};
    m.msg_hdr.msg_name = &s.to;
    m.msg_hdr.msg_namelen = sizeof(s.to);
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
  if (cfg.underlay_mtu < kOuterLen + 68 || cfg.underlay_mtu > 65535)
    return Status::errorf("VXLAN port {}: underlay MTU {} is out of range [{}, 65535]", name,
                          cfg.underlay_mtu, kOuterLen + 68);
  std::unique_ptr<VxlanPort> p(new VxlanPort(name, cfg));
  auto local = parse_v4(cfg.local, "local address");
  if (!local) return Status::errorf("VXLAN port {}: {}", name, local.message());
  p->local_be_ = *local;
  std::vector<uint32_t> flood;
  for (const std::string& r : cfg.remotes) {
    auto a = parse_v4(r, "remote VTEP");
    if (!a) return Status::errorf("VXLAN port {}: {}", name, a.message());
    if (*a == p->local_be_)
      return Status::errorf("VXLAN port {}: remote VTEP {} is the local address", name, r);
    flood.push_back(*a);
  }
  p->set_flood_list(flood);
  p->max_inner_ = cfg.underlay_mtu - kOuterLen;
  return p;
}

Result<std::unique_ptr<VxlanPort>> VxlanPort::open(std::string name, const VxlanPortConfig& cfg) {
  auto made = make(name, cfg);
  if (!made) return made.status();
  std::unique_ptr<VxlanPort> p = std::move(*made);
  Status st = run_in_netns(cfg.netns, [&]() -> Status {
    UniqueFd rx(socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!rx) return Status::errorf("UDP socket: {}", strerror(errno));
    grow_buffer(rx.get(), SO_RCVBUF, SO_RCVBUFFORCE);
    // Other segments may bind the same address and port (VniSteering steers by VNI).
    int one = 1;
    if (setsockopt(rx.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
      return Status::errorf("SO_REUSEPORT: {}", strerror(errno));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = p->local_be_;
    sa.sin_port = htons(cfg.udp_port);
    if (bind(rx.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0)
      return Status::errorf("bind {}:{}: {}", cfg.local, cfg.udp_port, strerror(errno));
    // IPPROTO_RAW: send only, IP header ours (IP_HDRINCL implied); the kernel fills in
    // the total length, the ID and the header checksum.
    UniqueFd tx(socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW));
    if (!tx) return Status::errorf("raw IPv4 socket (needs CAP_NET_RAW): {}", strerror(errno));
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
      v != AF_INET)
    return Status::errorf("VXLAN port {}: the handed-over send socket is not a raw IPv4 socket",
                          name);
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
  sockaddr_in sa{};
  socklen_t sl = sizeof(sa);
  if (getsockname(rx_fd_.get(), reinterpret_cast<sockaddr*>(&sa), &sl) != 0 ||
      sa.sin_family != AF_INET || sa.sin_addr.s_addr != local_be_ ||
      (cfg_.udp_port != 0 && ntohs(sa.sin_port) != cfg_.udp_port))
    return Status::errorf("the receive socket is not bound to {}:{}", cfg_.local, cfg_.udp_port);
  bound_port_ = ntohs(sa.sin_port);
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
  for (uint32_t i = 0; i < kTxMsgs; ++i) {
    uint8_t* h = tx_[i].hdr;
    auto* ip = reinterpret_cast<iphdr*>(h);
    ip->version = 4;
    ip->ihl = 5;
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->saddr = local_be_;
    auto* udp = reinterpret_cast<udphdr*>(h + 20);
    udp->dest = htons(cfg_.udp_port);
    udp->check = 0;  // RFC 7348 5: zero on IPv4
    uint8_t* vx = h + 28;
    vx[0] = kFlagI;
    vx[4] = uint8_t(cfg_.vni >> 16);
    vx[5] = uint8_t(cfg_.vni >> 8);
    vx[6] = uint8_t(cfg_.vni);
  }
}

int VxlanPort::remote_index(uint32_t addr_be) const {
  const uint32_t n = nvteps_.load(std::memory_order_acquire);
  for (uint32_t i = 0; i < n; ++i)
    if (vteps_[i].load(std::memory_order_relaxed) == addr_be) return int(i);
  return -1;
}

int VxlanPort::vtep_slot(uint32_t addr_be) {
  int i = remote_index(addr_be);
  if (i >= 0) return i;
  const uint32_t n = nvteps_.load(std::memory_order_relaxed);
  if (n == kMaxRemotes || addr_be == 0) return -1;
  vteps_[n].store(addr_be, std::memory_order_relaxed);
  nvteps_.store(n + 1, std::memory_order_release);
  return int(n);
}

bool VxlanPort::set_flood_list(const std::vector<uint32_t>& addrs) {
  auto next = std::make_unique<Flood>();
  bool ok = true;
  for (uint32_t a : addrs) {
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

bool VxlanPort::set_remote_mac(uint64_t mac, uint32_t vtep) {
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
  const uint32_t a = vtep_addr(lookup(sw::Mac::from_raw(mac).raw()));
  return a ? addr_string(a) : "";
}

std::vector<std::pair<uint64_t, std::string>> VxlanPort::learned_macs() const {
  std::vector<std::pair<uint64_t, std::string>> out;
  for (uint32_t i = 0; i < kMacSlots; ++i) {
    const uint64_t w = macs_[i].load(std::memory_order_relaxed);
    const uint32_t a = w ? vtep_addr(slot_remote(w)) : 0;
    if (a) out.emplace_back(slot_mac(w), addr_string(a));
  }
  return out;
}

size_t VxlanPort::adopt_macs(const std::vector<std::pair<uint64_t, std::string>>& macs) {
  size_t n = 0;
  for (const auto& [mac, vtep] : macs) {
    in_addr a{};
    if (inet_pton(AF_INET, vtep.c_str(), &a) != 1) continue;
    const int r = remote_index(a.s_addr);
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
  uint32_t last_from = 0;
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
                  name(), got, addr_string(s.from.sin_addr.s_addr));
      continue;
    }
    const uint32_t vni = uint32_t(h[4]) << 16 | uint32_t(h[5]) << 8 | h[6];
    if (vni != cfg_.vni) {
      qc.drops.add(net::Drop::kVxlanBadVni);
      VNET_LOG_RL(rl, spdlog::level::warn, "VXLAN port {}: dropped a frame of VNI {} from {}",
                  name(), vni, addr_string(s.from.sin_addr.s_addr));
      continue;
    }
    if (s.from.sin_addr.s_addr != last_from || last_remote < 0) {
      last_from = s.from.sin_addr.s_addr;
      last_remote = remote_index(last_from);
    }
    const int remote = last_remote;
    if (remote < 0) {
      qc.drops.add(net::Drop::kVxlanUnknownVtep);
      VNET_LOG_RL(rl, spdlog::level::warn,
                  "VXLAN port {}: dropped a frame from {}, not a VTEP of the segment", name(),
                  addr_string(s.from.sin_addr.s_addr));
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
    const uint32_t to = dst.is_multicast() ? 0 : vtep_addr(lookup(dst.raw()));
    const uint16_t* idx = flood ? flood->idx.data() : nullptr;
    const uint32_t copies = to ? 1 : (flood ? uint32_t(flood->idx.size()) : 0);
    if (copies == 0) {  // no VTEP to flood to (yet)
      counters().send_drops.add(net::Drop::kRxNotReady);
      continue;
    }
    // RFC 7348 5: a source port from a hash of the inner headers, in the dynamic range.
    const uint16_t sport =
        uint16_t(49152 + net::hash_to_range(net::flow_hash(p.data, p.len), 16384));
    const uint16_t ulen = htons(uint16_t(8 + kVxlanHdrLen + p.len));
    for (uint32_t k = 0; k < copies; ++k) {
      const uint32_t addr = to ? to : vtep_addr(idx[k]);
      if (tx_n_ == kTxMsgs) flush_tx();
      TxSlot& s = tx_[tx_n_++];
      auto* ip = reinterpret_cast<iphdr*>(s.hdr);
      ip->daddr = addr;
      auto* udp = reinterpret_cast<udphdr*>(s.hdr + 20);
      udp->source = htons(sport);
      udp->len = ulen;
      s.to.sin_addr.s_addr = addr;
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
                name(), addr_string(tx_[off].to.sin_addr.s_addr), strerror(e));
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
