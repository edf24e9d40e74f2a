// TapPort: TAP set-up (TUNSETIFF and friends, then netlink for MTU and IFF_UP, all in the
// TAP's network namespace), the choice of data path (io_uring or system calls), and the
// per-frame work both paths share: checking frames read, laying out frames to write.
#include "ports/tap_port.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>  // glibc's; linux/if.h (via linux/if_arp.h) would clash with it
#include <net/if_arp.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "net/flow_hash.h"
#include "ports/netlink.h"
#include "ports/netns.h"

namespace vnet::ports {
// What setting a TAP up gathers (open and adopt).
struct TapSetup {
  bool adopted = false;  // fd and more came from a predecessor (hot upgrade)
  UniqueFd fd;
  std::vector<UniqueFd> more;  // queues 1.. of an IFF_MULTI_QUEUE TAP
  std::string ifname;
  int ifindex = 0;
  uint32_t mtu = 0;
  unsigned tun_flags = 0;
  bool kernel_uso = false;
};

namespace {

// The header on every frame through the fd: virtio_net_hdr_v1 (num_buffers included).
constexpr int kVnetHdrLen = sizeof(virtio_net_hdr_v1);
static_assert(kVnetHdrLen == 12);

constexpr unsigned kUsoFlags = net::kTunFUso4 | net::kTunFUso6;

unsigned tun_flags_of(const net::OffloadCaps& c) {
  unsigned f = 0;
  if (c.csum) f |= net::kTunFCsum;
  if (c.tso4) f |= net::kTunFTso4;
  if (c.tso6) f |= net::kTunFTso6;
  if (c.tso_ecn) f |= net::kTunFTsoEcn;
  if (c.uso) f |= kUsoFlags;
  return f;
}

Status check_config(const TapPortConfig& cfg) {
  if (cfg.ifname.size() >= IFNAMSIZ || cfg.ifname.find('/') != std::string::npos) {
    return Status::errorf("invalid interface name '{}' (at most {} bytes, no '/')", cfg.ifname,
                          IFNAMSIZ - 1);
  }
  if (cfg.attach && cfg.ifname.empty()) return Status::error("attach needs an interface name");
  if (!cfg.netns.empty()) {
    if (Status st = check_netns_name(cfg.netns); !st) return st;
  }
  if (cfg.queues < 1 || cfg.queues > TapPortConfig::kMaxQueues)
    return Status::errorf("{} queues: expected 1..{}", cfg.queues, TapPortConfig::kMaxQueues);
  if (cfg.queues > 1 && !cfg.multi_queue) return Status::error("queues > 1 needs multi_queue");
  if (cfg.mtu && (*cfg.mtu < 68 || *cfg.mtu > 65535)) {
    return Status::errorf("MTU {} out of range (68..65535)", *cfg.mtu);
  }
  const net::OffloadCaps& o = cfg.offloads;
  if ((o.tso4 || o.tso6 || o.uso) && !o.csum) {
    return Status::error("offloads tso4/tso6/uso need csum");
  }
  if (o.tso_ecn && !o.tso4 && !o.tso6) return Status::error("offload tso_ecn needs tso4 or tso6");
  return Status::ok();
}

std::string where(const TapPortConfig& cfg) {
  return cfg.netns.empty() ? std::string() : fmt::format(" in network namespace '{}'", cfg.netns);
}

// Why a link is not a TAP, in words.
std::string describe_link(const LinkState& l) {
  if (l.kind == "tun") return "a TUN (layer 3) device";
  if (!l.kind.empty()) return fmt::format("a {} device", l.kind);
  switch (l.arptype) {
    case ARPHRD_LOOPBACK:
      return "a loopback device";
    case ARPHRD_ETHER:
      return "an Ethernet device that is not a TAP";
    default:
      return fmt::format("a device of type {}", l.arptype);
  }
}

// Everything set-up finds out; filled in the TAP's namespace.

Status set_offloads(const TapPortConfig& cfg, TapSetup& s) {
  int fd = s.fd.get();
  unsigned want = tun_flags_of(cfg.offloads);
  // Does this kernel know USO (TUN_F_USO4/6, and so VIRTIO_NET_HDR_GSO_UDP_L4 on write)?
  // Asked with the request itself when it has uso, with a probe before it otherwise.
  if (!(want & kUsoFlags)) {
    s.kernel_uso = ::ioctl(fd, TUNSETOFFLOAD, net::kTunFCsum | kUsoFlags) == 0;
  }
  if (::ioctl(fd, TUNSETOFFLOAD, want) != 0) {
    if (errno != EINVAL || !(want & kUsoFlags)) {
      return Status::errorf("TUNSETOFFLOAD {:#x}: {}", want, std::strerror(errno));
    }
    spdlog::warn("TAP {}: kernel refuses USO offloads (TUN_F_USO4/6); using the others", s.ifname);
    want &= ~kUsoFlags;
    if (::ioctl(fd, TUNSETOFFLOAD, want) != 0) {
      return Status::errorf("TUNSETOFFLOAD {:#x}: {}", want, std::strerror(errno));
    }
  } else if (want & kUsoFlags) {
    s.kernel_uso = true;
  }
  s.tun_flags = want;
  return Status::ok();
}

// Runs in the TAP's namespace: what is opened here stays there.
Status setup_tap(const TapPortConfig& cfg, TapSetup& s) {
  auto nl = Netlink::open();
  if (!nl) return nl.status();
  const std::string in = where(cfg);

  if (s.adopted) {
    // Handed over by a predecessor vnetd (hot upgrade): checked below as any fd is.
    ifreq got{};
    if (::ioctl(s.fd.get(), TUNGETIFF, &got) != 0)
      return Status::errorf("the fd handed over is not a TAP (TUNGETIFF: {})",
                            std::strerror(errno));
    got.ifr_name[IFNAMSIZ - 1] = '\0';
    s.ifname = got.ifr_name;
    if (!cfg.ifname.empty() && s.ifname != cfg.ifname)
      return Status::errorf("the fd handed over is TAP '{}', not '{}'", s.ifname, cfg.ifname);
  }
  if (cfg.attach && !s.adopted) {
    // TUNSETIFF would create a missing TAP, so look first; and say what a non-TAP is.
    auto link = nl->find_link(cfg.ifname);
    if (!link) return link.status();
    if (!*link) return Status::errorf("no interface '{}'{} to attach to", cfg.ifname, in);
    const LinkState& l = **link;
    if (l.kind != "tun" || l.arptype != ARPHRD_ETHER) {
      return Status::errorf("interface '{}'{} is not a TAP device: it is {}", cfg.ifname, in,
                            describe_link(l));
    }
  }

  if (!s.adopted) s.fd.reset(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (s.adopted) {
  } else if (!s.fd) {
    return Status::errorf("open /dev/net/tun: {}{}", std::strerror(errno),
                          errno == ENOENT ? " (is the tun module loaded?)" : "");
  }
  if (!s.adopted) {
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, cfg.ifname.data(), cfg.ifname.size());
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (cfg.multi_queue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
    if (!cfg.attach) ifr.ifr_flags |= IFF_TUN_EXCL;  // fail rather than attach by accident
    // A TAP of this name that a previous vnetd created may still be going: the kernel
    // closes an fd an io_uring held in a deferred teardown, some 40 ms after a SIGKILL.
    // So EBUSY on create is retried for up to 300 ms before it is an error.
    int rc = 0, e = 0;
    for (int tries = 0;; ++tries) {
      rc = ::ioctl(s.fd.get(), TUNSETIFF, &ifr);
      e = errno;
      if (rc == 0 || e != EBUSY || cfg.attach || tries == 30) break;
      ::usleep(10000);
    }
    if (rc != 0) {
      if (!cfg.attach && e == EBUSY) {
        return Status::errorf("cannot create TAP '{}'{}: an interface of that name exists",
                              cfg.ifname, in);
      }
      if (cfg.attach && e == EBUSY) {
        return Status::errorf(
            "cannot attach to TAP '{}'{}: it is in use (a single-queue TAP "
            "takes one fd)",
            cfg.ifname, in);
      }
      if (cfg.attach && e == EINVAL) {
        return Status::errorf(
            "cannot attach to '{}'{}: not a TAP device, or its multi_queue "
            "setting is not {}",
            cfg.ifname, in, cfg.multi_queue);
      }
      return Status::errorf("TUNSETIFF '{}'{}: {}", cfg.ifname, in, std::strerror(e));
    }
    ifr.ifr_name[IFNAMSIZ - 1] = '\0';
    s.ifname = ifr.ifr_name;
  }

  // What the fd is attached to now: it must be a TAP with our header and framing.
  ifreq got{};
  if (::ioctl(s.fd.get(), TUNGETIFF, &got) != 0) {
    return Status::errorf("TUNGETIFF '{}': {}", s.ifname, std::strerror(errno));
  }
  const int need = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if ((got.ifr_flags & need) != need || (got.ifr_flags & IFF_TUN) ||
      bool(got.ifr_flags & IFF_MULTI_QUEUE) != cfg.multi_queue) {
    return Status::errorf("'{}'{} is not a TAP with the flags vnet needs (flags {:#x})", s.ifname,
                          in, unsigned(got.ifr_flags));
  }

  int hdr_len = kVnetHdrLen;
  if (::ioctl(s.fd.get(), TUNSETVNETHDRSZ, &hdr_len) != 0) {
    return Status::errorf("TUNSETVNETHDRSZ {}: {}", hdr_len, std::strerror(errno));
  }
  // virtio 1.x headers are little-endian whatever the host (a no-op on x86).
  int le = 1;
  if (::ioctl(s.fd.get(), TUNSETVNETLE, &le) != 0 &&
      !(errno == EINVAL && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)) {
    return Status::errorf("TUNSETVNETLE: {}", std::strerror(errno));
  }
  if (Status st = set_offloads(cfg, s); !st) return st;
  // IFF_MULTI_QUEUE: each further TUNSETIFF of the same name on a new fd adds a queue
  // (Documentation/networking/tuntap.rst, "Multiqueue tuntap interface"). The header
  // size and offloads are the device's, set above.
  for (uint32_t i = 1; i < cfg.queues && !s.adopted; ++i) {
    UniqueFd qfd(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
    if (!qfd) return Status::errorf("open /dev/net/tun (queue {}): {}", i, std::strerror(errno));
    ifreq qr{};
    std::memcpy(qr.ifr_name, s.ifname.data(), s.ifname.size());
    qr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
    if (::ioctl(qfd.get(), TUNSETIFF, &qr) != 0)
      return Status::errorf("TUNSETIFF '{}' queue {}: {}", s.ifname, i, std::strerror(errno));
    s.more.push_back(std::move(qfd));
  }

  if (Status st = nl->configure_link(s.ifname, cfg.mtu, true); !st) return st;
  auto link = nl->find_link(s.ifname);
  if (!link) return link.status();
  if (!*link) return Status::errorf("TAP '{}'{} vanished during set-up", s.ifname, in);
  s.ifindex = (*link)->ifindex;
  s.mtu = (*link)->mtu;
  return Status::ok();
}

}  // namespace

std::optional<TapIo> parse_tap_io(std::string_view s) {
  if (s == "auto") return TapIo::kAuto;
  if (s == "uring") return TapIo::kUring;
  if (s == "syscalls") return TapIo::kSyscalls;
  return std::nullopt;
}

const char* tap_io_name(TapIo io) {
  switch (io) {
    case TapIo::kUring:
      return "uring";
    case TapIo::kSyscalls:
      return "syscalls";
    default:
      return "auto";
  }
}

TapPort::TapPort(std::string name, const TapPortConfig& cfg)
    : Port(std::move(name), cfg.queues), cfg_(cfg), q_(new Queue[rx_queues()]) {}

Result<std::unique_ptr<TapPort>> TapPort::open(std::string name, const TapPortConfig& cfg_in) {
  TapPortConfig cfg = cfg_in;
  if (cfg.queues > 1) cfg.multi_queue = true;
  TapSetup s;
  return open_with(std::move(name), cfg, s);
}

Result<std::unique_ptr<TapPort>> TapPort::adopt(std::string name, const TapPortConfig& cfg_in,
                                                std::vector<UniqueFd> fds, bool created) {
  TapPortConfig cfg = cfg_in;
  if (cfg.queues > 1) cfg.multi_queue = true;
  if (fds.size() != cfg.queues)
    return Status::errorf("TAP port {}: {} fd(s) handed over for {} queue(s)", name, fds.size(),
                          cfg.queues);
  TapSetup s;
  s.adopted = true;
  s.fd = std::move(fds[0]);
  for (size_t i = 1; i < fds.size(); ++i) {
    ifreq got{};
    if (::ioctl(fds[i].get(), TUNGETIFF, &got) != 0)
      return Status::errorf("TAP port {}: queue {}: the fd handed over is not a TAP", name, i);
    s.more.push_back(std::move(fds[i]));
  }
  cfg.attach = !created;
  return open_with(std::move(name), cfg, s);
}

Result<std::unique_ptr<TapPort>> TapPort::open_with(std::string name, const TapPortConfig& cfg,
                                                    TapSetup& s) {
  const std::string what = cfg.attach ? "attach" : "create";
  if (Status st = check_config(cfg); !st) {
    return Status::errorf("TAP port {}: {}", name, st.message());
  }
  if (Status st = run_in_netns(cfg.netns, [&] { return setup_tap(cfg, s); }); !st) {
    // s.fd closes here: a TAP we created (never persistent) goes with it.
    return Status::errorf("TAP port {}: {}", name, st.message());
  }
  std::unique_ptr<TapPort> p(new TapPort(std::move(name), cfg));
  p->q_[0].fd = std::move(s.fd);
  for (uint32_t i = 1; i < cfg.queues; ++i) p->q_[i].fd = std::move(s.more[i - 1]);
  {
    uint32_t all[TapPortConfig::kMaxQueues];
    for (uint32_t i = 0; i < cfg.queues; ++i) all[i] = i;
    p->steering_.set_enabled(all, cfg.queues);
  }
  p->ifname_ = std::move(s.ifname);
  p->ifindex_ = s.ifindex;
  p->mtu_ = s.mtu;
  p->created_ = !cfg.attach;
  p->tun_flags_ = s.tun_flags;
  p->recv_caps_ = net::tap_caps(s.tun_flags);
  // With offloads configured off, frames go to the kernel fully checksummed and
  // segmented (vnetd does it in software), as with `ethtool -K tap tx off tso off`.
  const net::OffloadCaps& o = cfg.offloads;
  const bool any = o.csum || o.tso4 || o.tso6 || o.tso_ecn || o.uso;
  p->send_caps_ = any ? net::OffloadCaps{true, true, true, true, s.kernel_uso} : net::OffloadCaps{};
  for (uint32_t i = 0; i < cfg.queues && cfg.io != TapIo::kSyscalls; ++i) {
    auto u = TapUring::open(p->q_[i].fd.get(), kVnetHdrLen + sizeof(net::Packet::data));
    if (u) {
      p->q_[i].uring = std::move(*u);
    } else if (cfg.io == TapIo::kUring || i > 0) {
      return Status::errorf("TAP port {}: io_uring (queue {}): {}", p->name(), i, u.message());
    } else {
      spdlog::info("TAP port {}: io_uring unavailable ({}); one system call per frame", p->name(),
                   u.message());
      break;
    }
  }
  spdlog::info("TAP port {}: {} {}{} (ifindex {}, mtu {}, offloads to us {:#x}, {}, {} queue(s))",
               p->name(), p->created_ ? "created" : "attached to", p->ifname_, where(cfg),
               p->ifindex_, p->mtu_, p->tun_flags_, p->uses_uring() ? "io_uring" : "readv/writev",
               cfg.queues);
  return p;
}

void TapPort::hold_reads(uint32_t qi, bool on) {
  Queue& q = q_[qi];
  q.held = on;
  if (q.uring) q.uring->hold(on);
}

bool TapPort::reads_drained(uint32_t qi) const {
  const Queue& q = q_[qi];
  return !q.uring || q.uring->drained();
}

Result<std::vector<UniqueFd>> TapPort::dup_fds() const {
  std::vector<UniqueFd> out;
  for (uint32_t i = 0; i < rx_queues(); ++i) {
    UniqueFd d(::fcntl(q_[i].fd.get(), F_DUPFD_CLOEXEC, 0));
    if (!d) return Status::errorf("dup: {}", std::strerror(errno));
    out.push_back(std::move(d));
  }
  return out;
}

TapPort::~TapPort() {
  if (q_[0].fd && created_ && !gone()) {
    // Closing the last fd deletes a TAP that is not persistent; make sure it is not
    // (someone may have set TUNSETPERSIST on it meanwhile). An attached TAP is left alone.
    ::ioctl(q_[0].fd.get(), TUNSETPERSIST, 0);
  }
  for (uint32_t i = 0; i < rx_queues(); ++i) {
    q_[i].uring.reset();  // cancels the armed read and waits for it before the fd goes
    q_[i].fd.reset();
  }
}

void TapPort::mark_gone(const char* op) {
  if (gone()) return;
  gone_.store(true, std::memory_order_relaxed);
  spdlog::error("TAP port {}: {} {}: the device is gone; the port stays down until removed", name(),
                op, ifname_);
  // Same fd number, now a never-signalled eventfd: the worker's epoll loses the dead TAP
  // file (closed with its last fd) instead of spinning on its POLLERR, and a later
  // EPOLL_CTL_DEL of the number is harmless.
  UniqueFd quiet(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  for (uint32_t i = 0; i < rx_queues(); ++i)
    if (quiet && ::dup3(quiet.get(), q_[i].fd.get(), O_CLOEXEC) < 0)
      spdlog::error("TAP port {}: dup3: {}", name(), std::strerror(errno));
}

int TapPort::read_frame(Queue& q, net::Packet& p, size_t* got) {
  iovec iov[2] = {{&p.vhdr, kVnetHdrLen}, {p.data, sizeof(p.data)}};
  io_submits_.add();
  ssize_t r = ::readv(q.fd.get(), iov, 2);
  if (r < 0) return errno;
  *got = size_t(r);
  return 0;
}

void TapPort::read_error(int e) {
  if (e == EBADFD) {
    read_errors_.add();
    mark_gone("read");
  } else if (e != EAGAIN && e != EINTR && e != ECANCELED && e != ENOBUFS) {
    // ENOBUFS: the armed read ran out of buffers and ended; it is re-armed.
    read_errors_.add();
    VNET_LOG_RL(log_limits().bad_input, spdlog::level::warn, "TAP port {} ({}): read: {}", name(),
                ifname_, std::strerror(e));
  }
}

bool TapPort::accept_frame(QueueCounters& qc, net::Packet& p, size_t got) {
  if (got < kVnetHdrLen + net::kEthHdrLen) {
    qc.drops.add(net::Drop::kTxTooShort);
    return false;
  }
  if (got >= kVnetHdrLen + sizeof(p.data)) {  // filled the buffer: maybe cut short
    qc.drops.add(net::Drop::kTxTooBig);
    return false;
  }
  p.len = uint32_t(got - kVnetHdrLen);
  p.vhdr.num_buffers = 0;  // the kernel writes 10 bytes of header and skips the rest
  p.vlan = 0;
  p.flow = 0;
  return true;
}

uint32_t TapPort::receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t qi) {
  if (gone()) return 0;
  Queue& q = q_[qi];
  // Hot upgrade: no new reads; an io_uring read cancelled still brings what it read.
  if (q.held && (!q.uring || q.uring->drained())) [[unlikely]]
    return 0;
  QueueCounters& qc = queue_counters(qi);
  uint32_t n = q.uring ? receive_uring(q, qc, pkts, max) : receive_syscalls(q, qc, pkts, max);
  if (n) {
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < n; ++i) bytes += pkts[i]->len;
    qc.rx_packets.add(n);
    qc.rx_bytes.add(bytes);
    io_frames_.add(n);
    // Replies to these flows are written back on this queue.
    if (steering_.enabled_count() > 1) [[unlikely]]
      for (uint32_t i = 0; i < n; ++i)
        steering_.learn(net::flow_hash(pkts[i]->data, pkts[i]->head_len()), qi);
  }
  return n;
}

uint32_t TapPort::receive_syscalls(Queue& q, QueueCounters& qc, net::Packet* const* pkts,
                                   uint32_t max) {
  uint32_t n = 0;
  // Bounded: a stream of dropped frames cannot keep the worker here.
  for (uint32_t tries = 0; n < max && tries < 2 * max; ++tries) {
    net::Packet& p = *pkts[n];
    size_t got = 0;
    if (int e = read_frame(q, p, &got); e != 0) {
      read_error(e);
      break;
    }
    if (accept_frame(qc, p, got)) ++n;
  }
  return n;
}

uint32_t TapPort::receive_uring(Queue& q, QueueCounters& qc, net::Packet* const* pkts,
                                uint32_t max) {
  // A caller that did not call receive_done(): the last burst's packets are void now.
  if (q.lent_n) {
    q.uring->recycle(q.lent, q.lent_n);
    q.lent_n = 0;
  }
  TapUring* const uring = q.uring.get();
  // Armed here, on the worker (the kernel runs the reads in the task that armed them): on
  // the first call, and again after the read ended (buffers ran out, an error). The
  // submission reads what is queued at once.
  if (!uring->armed()) {
    if (int e = uring->arm(); e != 0) read_error(e == EBUSY ? EIO : e);
  }
  TapUring::ReadDone done[TapUring::kRxBuffers];
  // Buffers the kernel may have again at once are packed to the front of done[]
  // (n_back <= i: an entry is moved only after it was read).
  uint32_t n_back = 0;
  const uint32_t k = uring->reap_reads(done, std::min(max, TapUring::kRxBuffers));
  uint32_t n = 0;
  for (uint32_t i = 0; i < k; ++i) {
    const TapUring::ReadDone d = done[i];
    if (d.res < 0) {
      read_error(-d.res);
      if (d.has_buffer) done[n_back++] = d;
      continue;
    }
    if (!d.has_buffer) continue;
    // The buffer holds the header and the frame back to back, as readv would have split
    // them; a frame too big for the packet is caught by accept_frame.
    net::Packet& p = *pkts[n];
    const uint8_t* b = uring->buffer(d.bid);
    const size_t got = size_t(d.res);
    if (got >= kVnetHdrLen) std::memcpy(&p.vhdr, b, kVnetHdrLen);
    if (!accept_frame(qc, p, got)) {
      done[n_back++] = d;
      continue;
    }
    const uint8_t* frame = b + kVnetHdrLen;
    if (p.len >= net::kDirectMin) {
      // Lent: a 64 KiB GSO frame is then copied once, by the destination's write or
      // into the destination guest, instead of twice.
      std::memcpy(p.data, frame, net::kDirectHead);
      p.head = net::kDirectHead;
      p.tail[0] = {const_cast<uint8_t*>(frame) + net::kDirectHead, p.len - net::kDirectHead};
      p.tail_n = 1;
      q.lent[q.lent_n++] = d;
    } else {
      std::memcpy(p.data, frame, p.len);
      p.tail_n = 0;
      done[n_back++] = d;
    }
    ++n;
  }
  if (n_back) uring->recycle(done, n_back);
  return n;
}

void TapPort::receive_done(uint32_t qi) {
  Queue& q = q_[qi];
  if (q.lent_n == 0) return;
  q.uring->recycle(q.lent, q.lent_n);
  q.lent_n = 0;
}

uint32_t TapPort::send_burst(net::Packet* const* pkts, uint32_t n) {
  return fallback_.deliver(pkts, n, send_caps_, counters(), name(), log_limits().bad_input,
                           [this](net::Packet* const* p, uint32_t k) { return write_burst(p, k); });
}

void TapPort::prepare(TxFrame& f, const net::Packet& p, uint16_t vlan_tag) {
  f.hdr = p.vhdr;
  uint8_t* data = const_cast<uint8_t*>(p.data);
  const uint32_t head = p.head_len();
  f.iov[0] = {&f.hdr, kVnetHdrLen};
  if (vlan_tag == 0) {
    f.iov[1] = {data, head};
    f.iovcnt = 2;
  } else {
    // 802.1Q tag after the MAC addresses; offsets in the header move past it.
    if (f.hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
      f.hdr.csum_start = uint16_t(f.hdr.csum_start + net::kVlanTagLen);
    if (f.hdr.hdr_len) f.hdr.hdr_len = uint16_t(f.hdr.hdr_len + net::kVlanTagLen);
    f.tag[0] = uint8_t(net::kEthP8021Q >> 8);
    f.tag[1] = uint8_t(net::kEthP8021Q);
    f.tag[2] = uint8_t(vlan_tag >> 8);
    f.tag[3] = uint8_t(vlan_tag);
    f.iov[1] = {data, 12};
    f.iov[2] = {f.tag, sizeof(f.tag)};
    f.iov[3] = {data + 12, head - 12};
    f.iovcnt = 4;
  }
  // An external packet's tail follows as it is.
  for (uint32_t i = 0; i < p.tail_n; ++i) f.iov[f.iovcnt++] = p.tail[i];
}

uint32_t TapPort::write_burst(net::Packet* const* pkts, uint32_t n) {
  // One branch per burst: a single-queue TAP writes on its one fd.
  if (rx_queues() > 1) [[unlikely]]
    return net::send_steered(
        steering_, pkts, n,
        [this](uint32_t q, net::Packet* const* p, uint32_t k) { return write_queue(q, p, k); });
  return write_queue(0, pkts, n);
}

uint32_t TapPort::write_queue(uint32_t qi, net::Packet* const* pkts, uint32_t n) {
  uint32_t sent = 0;
  for (uint32_t i = 0; i < n; i += TapUring::kTxBatch)
    sent += write_chunk(q_[qi], pkts + i, std::min(n - i, TapUring::kTxBatch));
  if (rx_queues() > 1) {
    queue_counters(qi).tx_packets.add(sent);
    if (sent != n) queue_counters(qi).tx_drops.add(n - sent);
  }
  return sent;
}

uint32_t TapPort::write_chunk(Queue& q, net::Packet* const* pkts, uint32_t n) {
  const net::VlanConfig& v = vlan();
  const iovec* iovs[TapUring::kTxBatch];
  unsigned iovcnt[TapUring::kTxBatch];
  int res[TapUring::kTxBatch];
  uint32_t m = 0;  // frames to write, in tx_[0..m)
  for (uint32_t i = 0; i < n; ++i) {
    const net::Packet& p = *pkts[i];
    if (p.len < net::kEthHdrLen) {
      counters().send_drops.add(net::Drop::kTxTooShort);
      continue;
    }
    if (gone()) {
      counters().send_drops.add(net::Drop::kRxNotReady);
      continue;
    }
    prepare(tx_[m], p, v.egress_tag(p.vlan));
    iovs[m] = tx_[m].iov;
    iovcnt[m] = tx_[m].iovcnt;
    ++m;
  }
  if (m == 0) return 0;
  if (q.uring) {
    q.uring->write_batch(iovs, iovcnt, m, res);
  } else {
    for (uint32_t i = 0; i < m; ++i) {
      io_submits_.add();
      res[i] = ::writev(q.fd.get(), iovs[i], int(iovcnt[i])) < 0 ? -errno : 1;
    }
  }
  uint32_t sent = 0;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < m; ++i) {
    const int e = res[i] >= 0 ? 0 : -res[i];
    if (e == 0) {
      ++sent;
      for (unsigned k = 1; k < tx_[i].iovcnt; ++k) bytes += tx_[i].iov[k].iov_len;
      continue;
    }
    RateLimit& rl = log_limits().bad_input;
    if (e == EAGAIN || e == ENOBUFS) {
      // The kernel's queue is full.
      write_busy_.add();
      counters().send_drops.add(net::Drop::kTapBusy);
    } else if (e == EINVAL) {
      // The kernel refused the virtio_net_hdr (offsets or GSO fields that do not fit).
      counters().send_drops.add(net::Drop::kTxBadHeader);
      VNET_LOG_RL(rl, spdlog::level::warn, "TAP port {} ({}): kernel refused a frame: {}", name(),
                  ifname_, std::strerror(e));
    } else {
      write_errors_.add();
      counters().send_drops.add(net::Drop::kRxNotReady);
      if (e == EBADFD) {
        mark_gone("write");
        continue;
      }
      VNET_LOG_RL(rl, spdlog::level::warn, "TAP port {} ({}): write: {}", name(), ifname_,
                  std::strerror(e));
    }
  }
  if (sent) {
    counters().tx_packets.add(sent);
    counters().tx_bytes.add(bytes);
    io_frames_.add(sent);
  }
  return sent;
}

void TapPort::wait_fds(std::vector<WaitFd>& out, uint32_t qi) const {
  const Queue& q = q_[qi];
  if (q.uring) {
    out.push_back({q.uring->event_fd(), WaitFd::kOwnEventFd});
  } else {
    out.push_back({q.fd.get(), WaitFd::kLevel});
  }
}

bool TapPort::enable_notifications(uint32_t qi) {
  // Level-triggered epoll on the TAP fd: nothing to arm. With io_uring, completions posted
  // from now on signal the eventfd; one already there means work.
  Queue& q = q_[qi];
  if (!q.uring) return false;
  q.uring->set_wakeups(true);
  return q.uring->reads_pending();
}

void TapPort::disable_notifications(uint32_t qi) {
  if (q_[qi].uring) q_[qi].uring->set_wakeups(false);
}

PortInfo TapPort::info() const {
  PortInfo i;
  i.type = "tap";
  i.socket = cfg_.netns.empty() ? ifname_ : fmt::format("{} (netns {})", ifname_, cfg_.netns);
  i.mode = created_ ? "created" : "attached";
  i.connected = q_[0].fd.valid() && !gone();
  const std::pair<unsigned, const char*> names[] = {
      {net::kTunFCsum, "TUN_F_CSUM"}, {net::kTunFTso4, "TUN_F_TSO4"},
      {net::kTunFTso6, "TUN_F_TSO6"}, {net::kTunFTsoEcn, "TUN_F_TSO_ECN"},
      {net::kTunFUso4, "TUN_F_USO4"}, {net::kTunFUso6, "TUN_F_USO6"}};
  for (const auto& [bit, n] : names) {
    if (tun_flags_ & bit) i.features.emplace_back(n);
  }
  i.extra.emplace_back("ifindex", uint64_t(ifindex_));
  i.extra.emplace_back("mtu", mtu_);
  i.extra.emplace_back("read_errors", read_errors_.get());
  i.extra.emplace_back("write_errors", write_errors_.get());
  i.extra.emplace_back("write_busy", write_busy_.get());
  i.extra.emplace_back("io_uring", uses_uring() ? 1 : 0);
  uint64_t enters = 0;
  for (uint32_t q = 0; q < rx_queues(); ++q)
    if (q_[q].uring) enters += q_[q].uring->enters();
  i.extra.emplace_back("io_submits", io_submits_.get() + enters);
  i.extra.emplace_back("queues", rx_queues());
  for (uint32_t q = 0; q < rx_queues(); ++q) i.queue_states.emplace_back("active");
  i.extra.emplace_back("io_frames", io_frames_.get());
  return i;
}

Status TapPort::set_mtu(uint32_t mtu) {
  if (mtu < 68 || mtu > 65535) return Status::errorf("MTU {} out of range [68, 65535]", mtu);
  Status st = run_in_netns(cfg_.netns, [&]() -> Status {
    auto nl = Netlink::open();
    if (!nl) return nl.status();
    return nl->configure_link(ifname_, mtu, true);
  });
  if (!st) return Status::errorf("TAP {}: cannot set MTU {}: {}", ifname_, mtu, st.message());
  cfg_.mtu = mtu;
  mtu_ = mtu;
  return Status::ok();
}

}  // namespace vnet::ports
