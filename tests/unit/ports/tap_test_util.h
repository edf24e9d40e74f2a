// Test helpers for the TAP port tests: a named network namespace that removes itself, an
// AF_PACKET socket on the namespace side of a TAP, a frame builder for Ethernet/ARP/IPv4/
// ICMP/TCP with an independent RFC 1071 checksum, and a pump that reads a TapPort until
// the frames a test waits for arrive, answering the kernel's ARP requests on the way.
// Everything these tests create is named "vnt<pid>..." and removed on every exit path.
#pragma once

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "packet_bytes.h"
#include "test_bytes.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "net/packet.h"
#include "ports/netlink.h"
#include "ports/netns.h"
#include "ports/tap_port.h"

namespace vnet::ports::test {

using vnet::test::frame_bytes;
using vnet::test::rd16;
using vnet::test::rd32;
using vnet::test::ref_sum;
using vnet::test::wr16;
using vnet::test::wr32;

using Mac = std::array<uint8_t, 6>;
using Bytes = std::vector<uint8_t>;

inline bool have_tap_privileges(std::string* why) {
  if (::geteuid() != 0) {
    *why = "needs root (creates network namespaces and TAP devices)";
    return false;
  }
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
    *why = "needs /dev/net/tun";
    return false;
  }
  return true;
}

// "vnt<pid><suffix>": unique per test process, short enough for an interface name.
inline std::string test_name(const std::string& suffix) {
  return "vnt" + std::to_string(::getpid()) + suffix;
}

// Writes `value` to a /proc/sys file inside the namespace (/proc/sys/net follows the
// namespace of the thread that opens it).
inline Status write_sysctl(const std::string& netns, const std::string& path,
                           const std::string& value) {
  return run_in_netns(netns, [&]() -> Status {
    UniqueFd f(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!f) return Status::errorf("open {}: {}", path, std::strerror(errno));
    if (::write(f.get(), value.data(), value.size()) != ssize_t(value.size())) {
      return Status::errorf("write {}: {}", path, std::strerror(errno));
    }
    return Status::ok();
  });
}

// A named namespace for one test, deleted by the destructor. IPv6 is off in it so that
// the kernel sends no router solicitations or MLD reports through the TAPs.
class TestNetns {
 public:
  explicit TestNetns(const std::string& suffix) : name_(test_name(suffix)) {
    status_ = create_netns(name_);
    if (status_) {
      created_ = true;
      (void)write_sysctl(name_, "/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
      (void)write_sysctl(name_, "/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
    }
  }
  ~TestNetns() {
    if (created_) (void)delete_netns(name_);
  }
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;
  const std::string& name() const { return name_; }
  const Status& status() const { return status_; }

 private:
  std::string name_;
  Status status_;
  bool created_ = false;
};

inline Result<std::optional<LinkState>> find_link_in(const std::string& netns,
                                                     const std::string& ifname) {
  std::optional<LinkState> out;
  Status st = run_in_netns(netns, [&]() -> Status {
    auto nl = Netlink::open();
    if (!nl) return nl.status();
    auto l = nl->find_link(ifname);
    if (!l) return l.status();
    out = *l;
    return Status::ok();
  });
  if (!st) return st;
  return out;
}

inline Status netlink_in(const std::string& netns, const std::function<Status(Netlink&)>& fn) {
  return run_in_netns(netns, [&]() -> Status {
    auto nl = Netlink::open();
    if (!nl) return nl.status();
    return fn(*nl);
  });
}

// A persistent TAP made by "someone else" (to attach to), deleted by the destructor.
class PersistentTap {
 public:
  PersistentTap(std::string netns, std::string ifname)
      : netns_(std::move(netns)), ifname_(std::move(ifname)) {
    status_ = run_in_netns(netns_, [&]() -> Status {
      UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
      if (!fd) return Status::errorf("open /dev/net/tun: {}", std::strerror(errno));
      ifreq ifr{};
      std::strncpy(ifr.ifr_name, ifname_.c_str(), IFNAMSIZ - 1);
      ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
      if (::ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
        return Status::errorf("TUNSETIFF: {}", std::strerror(errno));
      }
      if (::ioctl(fd.get(), TUNSETPERSIST, 1) != 0) {
        return Status::errorf("TUNSETPERSIST: {}", std::strerror(errno));
      }
      created_ = true;
      return Status::ok();
    });
  }
  ~PersistentTap() {
    if (created_) {
      (void)netlink_in(netns_, [&](Netlink& nl) { return nl.delete_link(ifname_); });
    }
  }
  PersistentTap(const PersistentTap&) = delete;
  PersistentTap& operator=(const PersistentTap&) = delete;
  const Status& status() const { return status_; }

 private:
  std::string netns_, ifname_;
  Status status_;
  bool created_ = false;
};

// An AF_PACKET socket bound to a device inside a namespace, used from the test thread.
class PacketSocket {
 public:
  static Result<std::unique_ptr<PacketSocket>> open(const std::string& netns,
                                                    const std::string& ifname) {
    auto ps = std::make_unique<PacketSocket>();
    Status st = run_in_netns(netns, [&]() -> Status {
      unsigned ifindex = ::if_nametoindex(ifname.c_str());
      if (ifindex == 0) return Status::errorf("if_nametoindex {}: {}", ifname, strerror(errno));
      ps->fd_.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL)));
      if (!ps->fd_) return Status::errorf("socket(AF_PACKET): {}", std::strerror(errno));
      sockaddr_ll sll{};
      sll.sll_family = AF_PACKET;
      sll.sll_protocol = htons(ETH_P_ALL);
      sll.sll_ifindex = int(ifindex);
      if (::bind(ps->fd_.get(), reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) {
        return Status::errorf("bind AF_PACKET: {}", std::strerror(errno));
      }
      return Status::ok();
    });
    if (!st) return st;
    return ps;
  }

  Status send(const Bytes& frame) {
    if (::send(fd_.get(), frame.data(), frame.size(), 0) != ssize_t(frame.size())) {
      return Status::errorf("send: {}", std::strerror(errno));
    }
    return Status::ok();
  }

  // Frames the device received (written into the TAP by vnet; not the ones the kernel
  // sent out) that `want` accepts, until `count` of them or the timeout. `vlan_tci` gets
  // each frame's 802.1Q TCI (the kernel moves a tag into metadata; 0 without one).
  std::vector<Bytes> receive(size_t count, const std::function<bool(const Bytes&)>& want,
                             int timeout_ms = 3000, std::vector<uint16_t>* vlan_tci = nullptr) {
    std::vector<Bytes> out;
    int one = 1;
    ::setsockopt(fd_.get(), SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    Bytes buf(net::kMaxFrame);
    while (out.size() < count) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) break;
      pollfd pfd{fd_.get(), POLLIN, 0};
      if (::poll(&pfd, 1, int(left)) <= 0) continue;
      sockaddr_ll from{};
      iovec iov{buf.data(), buf.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(tpacket_auxdata))];
      msghdr msg{};
      msg.msg_name = &from;
      msg.msg_namelen = sizeof(from);
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t r = ::recvmsg(fd_.get(), &msg, 0);
      if (r < 0) continue;
      if (from.sll_pkttype == PACKET_OUTGOING) continue;
      Bytes f(buf.begin(), buf.begin() + r);
      if (!want(f)) continue;
      uint16_t tci = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA) {
          tpacket_auxdata aux;
          std::memcpy(&aux, CMSG_DATA(c), sizeof(aux));
          if (aux.tp_status & TP_STATUS_VLAN_VALID) tci = aux.tp_vlan_tci;
        }
      }
      if (vlan_tci) vlan_tci->push_back(tci);
      out.push_back(std::move(f));
    }
    return out;
  }

 private:
  UniqueFd fd_;
};

// --- frames ---

// IPv4 pseudo-header sum (RFC 793 3.1), unfolded.
inline uint64_t pseudo_sum(uint32_t src, uint32_t dst, uint8_t proto, uint32_t l4_len) {
  return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + l4_len;
}

inline constexpr uint16_t kEthTest = 0x88b5;  // IEEE local experimental EtherType
inline constexpr uint16_t kEthIpv4 = 0x0800, kEthArp = 0x0806;

inline uint32_t ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return (uint32_t(a) << 24) | (uint32_t(b) << 16) | (uint32_t(c) << 8) | d;
}

inline void put_eth(Bytes& f, const Mac& dst, const Mac& src, uint16_t type) {
  f.insert(f.end(), dst.begin(), dst.end());
  f.insert(f.end(), src.begin(), src.end());
  f.push_back(uint8_t(type >> 8));
  f.push_back(uint8_t(type));
}

// A test frame of `len` bytes: EtherType kEthTest, payload bytes derived from `seed`.
inline Bytes test_frame(const Mac& dst, const Mac& src, size_t len, uint8_t seed) {
  Bytes f;
  put_eth(f, dst, src, kEthTest);
  for (size_t i = f.size(); i < len; ++i) f.push_back(uint8_t(seed * 31 + i * 7));
  return f;
}
inline bool is_test_frame(const Bytes& f) {
  return f.size() >= 14 && rd16(&f[12]) == kEthTest;
}

// IPv4 header (20 bytes, DF) with a correct header checksum.
inline void put_ipv4(Bytes& f, uint32_t src, uint32_t dst, uint8_t proto, uint16_t l4_len,
                     uint16_t id) {
  size_t at = f.size();
  f.resize(at + 20);
  uint8_t* h = &f[at];
  h[0] = 0x45;
  wr16(h + 2, uint16_t(20 + l4_len));
  wr16(h + 4, id);
  wr16(h + 6, 0x4000);
  h[8] = 64;
  h[9] = proto;
  wr32(h + 12, src);
  wr32(h + 16, dst);
  wr16(h + 10, uint16_t(~ref_sum(h, 20)));
}

inline Bytes icmp_echo_request(const Mac& dst, const Mac& src, uint32_t sip, uint32_t dip,
                               uint16_t id, uint16_t seq, size_t payload) {
  Bytes f;
  put_eth(f, dst, src, kEthIpv4);
  put_ipv4(f, sip, dip, 1, uint16_t(8 + payload), 0x1111);
  size_t at = f.size();
  f.resize(at + 8 + payload);
  uint8_t* m = &f[at];
  m[0] = 8;  // echo request
  wr16(m + 4, id);
  wr16(m + 6, seq);
  for (size_t i = 0; i < payload; ++i) m[8 + i] = uint8_t(i ^ 0x5a);
  wr16(m + 2, uint16_t(~ref_sum(m, 8 + payload)));
  return f;
}

// A TCPv4 frame (ACK|PSH) with `payload` bytes, the TCP checksum field left holding the
// folded pseudo-header sum (Linux CHECKSUM_PARTIAL, virtio NEEDS_CSUM).
inline Bytes tcp4_partial(const Mac& dst, const Mac& src, uint32_t sip, uint32_t dip, uint32_t seq,
                          size_t payload) {
  Bytes f;
  put_eth(f, dst, src, kEthIpv4);
  put_ipv4(f, sip, dip, 6, uint16_t(20 + payload), 0x4242);
  size_t at = f.size();
  f.resize(at + 20 + payload);
  uint8_t* t = &f[at];
  wr16(t, 40000);
  wr16(t + 2, 5001);
  wr32(t + 4, seq);
  wr32(t + 8, 1);
  t[12] = 5 << 4;
  t[13] = 0x18;  // ACK | PSH
  wr16(t + 14, 65535);
  for (size_t i = 0; i < payload; ++i) t[20 + i] = uint8_t(i * 13 + 1);
  wr16(t + 16, ref_sum(nullptr, 0, pseudo_sum(sip, dip, 6, uint32_t(20 + payload))));
  return f;
}

// --- driving a TapPort ---

struct Frame {
  virtio_net_hdr_v1 vhdr;
  Bytes data;
};

// Frames as packets, the whole of each in data; with `lend`, a frame longer than `head`
// bytes keeps only those in data and the rest in `storage`, as tail pieces of 1, 7, 100,
// 1000 and then all remaining bytes (an external packet, as a vhost-user or TAP port
// lends them).
inline std::vector<std::unique_ptr<net::Packet>> make_packets(
    const std::vector<Bytes>& frames, const std::vector<virtio_net_hdr_v1>& hdrs = {},
    bool lend = false, uint32_t head = 64, std::vector<Bytes>* storage = nullptr) {
  std::vector<std::unique_ptr<net::Packet>> pkts;
  for (size_t i = 0; i < frames.size(); ++i) {
    auto p = std::make_unique<net::Packet>();
    p->vhdr = i < hdrs.size() ? hdrs[i] : virtio_net_hdr_v1{};
    p->len = uint32_t(frames[i].size());
    if (!lend || frames[i].size() <= head) {
      std::memcpy(p->data, frames[i].data(), frames[i].size());
    } else {
      std::memcpy(p->data, frames[i].data(), head);
      p->head = head;
      storage->emplace_back(frames[i].begin() + head, frames[i].end());
      uint8_t* t = storage->back().data();
      size_t left = storage->back().size();
      for (size_t piece : {size_t(1), size_t(7), size_t(100), size_t(1000), left}) {
        piece = std::min(piece, left);
        if (piece == 0) break;
        p->tail[p->tail_n++] = {t, piece};
        t += piece;
        left -= piece;
      }
    }
    pkts.push_back(std::move(p));
  }
  return pkts;
}

inline Status send_frames(TapPort& port, const std::vector<Bytes>& frames,
                          const std::vector<virtio_net_hdr_v1>& hdrs = {}, bool lend = false) {
  std::vector<Bytes> storage;
  storage.reserve(frames.size());  // the tails must not move
  auto pkts = make_packets(frames, hdrs, lend, 64, &storage);
  std::vector<net::Packet*> ptrs;
  for (auto& p : pkts) ptrs.push_back(p.get());
  uint32_t sent = port.send_burst(ptrs.data(), uint32_t(ptrs.size()));
  // A GSO frame vnetd segments itself (port without offloads) counts once per segment.
  if (sent < frames.size()) return Status::errorf("send_burst sent {} of {}", sent, frames.size());
  return Status::ok();
}

// Reads `port` until `want` accepted `count` frames or the timeout. ARP requests for any
// address are answered with `arp_mac`, so the kernel can reach the test's addresses.
class Pump {
 public:
  Pump(TapPort& port, Mac arp_mac) : port_(port), arp_mac_(arp_mac) {}

  std::vector<Frame> collect(size_t count, const std::function<bool(const Frame&)>& want,
                             int timeout_ms = 3000) {
    std::vector<Frame> out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (out.size() < count) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) break;
      uint32_t n = port_.receive_burst(batch_.ptrs(), net::kBurst);
      if (n == 0) {
        wait(int(left));
        continue;
      }
      for (uint32_t i = 0; i < n; ++i) {
        Frame f{batch_[i].vhdr, frame_bytes(batch_[i])};
        if (batch_[i].tail_n) ++lent_;
        if (answer_arp(f)) continue;
        if (want(f)) out.push_back(std::move(f));
      }
      port_.receive_done();
    }
    return out;
  }
  uint32_t arp_answered() const { return arp_answered_; }
  // Frames the port lent (external packets: a head and a tail in the port's buffer).
  uint32_t lent() const { return lent_; }

 private:
  // Sleeps as the worker does: on the port's wait fds, after enable_notifications().
  void wait(int timeout_ms) {
    std::vector<Port::WaitFd> fds;
    port_.wait_fds(fds);
    if (!port_.enable_notifications()) {
      std::vector<pollfd> pfds;
      for (const auto& w : fds) pfds.push_back({w.fd, POLLIN, 0});
      if (::poll(pfds.data(), pfds.size(), timeout_ms) > 0) {
        for (size_t i = 0; i < fds.size(); ++i) {
          uint64_t v;
          if (fds[i].kind == Port::WaitFd::kOwnEventFd && (pfds[i].revents & POLLIN))
            (void)!::read(fds[i].fd, &v, 8);
        }
      }
    }
    port_.disable_notifications();
  }

  bool answer_arp(const Frame& f) {
    const Bytes& d = f.data;
    if (d.size() < 42 || rd16(&d[12]) != kEthArp || rd16(&d[20]) != 1) return false;
    Bytes r;
    Mac asker;
    std::memcpy(asker.data(), &d[22], 6);
    put_eth(r, asker, arp_mac_, kEthArp);
    const uint8_t hdr[] = {0, 1, 8, 0, 6, 4, 0, 2};
    r.insert(r.end(), hdr, hdr + sizeof(hdr));
    r.insert(r.end(), arp_mac_.begin(), arp_mac_.end());
    r.insert(r.end(), &d[38], &d[42]);  // the address asked for
    r.insert(r.end(), &d[22], &d[32]);  // the asker's MAC and address
    (void)send_frames(port_, {r});
    ++arp_answered_;
    return true;
  }

  TapPort& port_;
  Mac arp_mac_;
  net::PacketBatch batch_;
  uint32_t arp_answered_ = 0;
  uint32_t lent_ = 0;
};

inline size_t count_open_fds() {
  size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d)) ++n;
    ::closedir(d);
  }
  return n;
}

}  // namespace vnet::ports::test
