// vnet-traffic: a lean traffic generator and sink on a vhost-user Frontend, for
// benchmarks and integration tests. It is the "guest": it owns the memory and the
// rings, connects to a vhost-user back end (vnetd), and
//   tx:   sends pre-built frames (built once, the same buffers re-posted; nothing is
//         allocated per packet), keeping the TX ring (1) full, reaping used buffers,
//         kicking once per burst and only when the device asked (should_kick);
//   rx:   keeps the RX ring (0) full of buffers, counts (and with --check verifies)
//         the frames addressed to its MAC, re-posting each buffer at once;
//   Both re-post a used chain as it is (DriverQueue::repost, in the order the device
//   used them): after the first lap a descriptor or avail entry is written only when
//   the device completed out of order, so the device reads clean lines and the
//   generator's per-frame work is a used-ring read and an index step;
//   txrx: both.
// With --pair-socket it drives a second port from the same thread (txrx on both, each
// sending to the other's MAC): an open-loop two-port generator and sink for switch
// benchmarks, which reports how often its polls found nothing to do (its headroom).
// With --rx-count-only the sink counts what the back end delivers without reading it.
// With --rx-no-refill the RX ring is filled once and never again: a guest whose
// driver stopped taking frames (fault tests: the back end must drop, not spin).
// With --gso-size every tx frame is one TCP over IPv4 TSO frame of --size bytes with that
// gso_size (CSUM and HOST_TSO4 negotiated): a guest handing the switch large frames that
// become many segments (policing tests).
// Before the run it sends one broadcast frame from its MAC so the switch learns it.
// At the end it prints one JSON object (packets, bytes, seconds, Mpps, Gbit/s, its own
// CPU time from getrusage) on stdout.
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <poll.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/log.h"
#include "vhost_user/frontend.h"
#include "virtio/net_uapi.h"

namespace {

using Clock = std::chrono::steady_clock;
using vnet::vhost_user::Frontend;
using vnet::vhost_user::FrontendConfig;
namespace virtio = vnet::virtio;

constexpr uint32_t kRxQ = 0, kTxQ = 1;
constexpr uint16_t kEtherType = 0x88b5;  // IEEE 802 local experimental
constexpr uint8_t kMagic[4] = {'V', 'N', 'T', 'R'};
constexpr uint8_t kAnnounceMagic[4] = {'V', 'N', 'T', 'A'};
constexpr uint32_t kEthHdr = 14;
constexpr uint32_t kMinFrame = kEthHdr + sizeof(kMagic);

std::atomic<bool> g_stop{false};
void on_signal(int) {
  g_stop.store(true, std::memory_order_relaxed);
}

bool parse_mac(const std::string& s, uint8_t out[6]) {
  unsigned v[6];
  char tail;
  if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                  &tail) != 6)
    return false;
  for (int i = 0; i < 6; ++i) {
    if (v[i] > 0xff) return false;
    out[i] = uint8_t(v[i]);
  }
  return true;
}

// A TCP over IPv4 TSO frame in place of the frame build_frame() wrote at f (size bytes,
// Ethernet header kept), and its virtio_net_hdr at h: NEEDS_CSUM with the TCP checksum
// offsets, GSO_TCPV4 with gso_size (virtio 1.2 section 5.1.6.2). The TCP checksum field
// is left zero (the back end only checks where it is).
void make_tso(uint8_t* h, uint8_t* f, uint32_t size, uint16_t gso_size) {
  constexpr uint32_t kIp = kEthHdr, kTcp = kIp + 20;
  f[12] = 0x08;
  f[13] = 0x00;
  uint8_t* ip = f + kIp;
  std::memset(ip, 0, 40);
  ip[0] = 0x45;  // IPv4, 20-byte header
  const uint16_t total = uint16_t(size - kIp);
  ip[2] = uint8_t(total >> 8);
  ip[3] = uint8_t(total);
  ip[6] = 0x40;  // DF
  ip[8] = 64;    // TTL
  ip[9] = 6;     // TCP
  const uint8_t addrs[8] = {10, 0, 0, 1, 10, 0, 0, 2};
  std::memcpy(ip + 12, addrs, 8);
  uint8_t* tcp = f + kTcp;
  tcp[0] = 0x9c;  // ports 40000 -> 5001
  tcp[1] = 0x40;
  tcp[2] = 0x13;
  tcp[3] = 0x89;
  tcp[12] = 5 << 4;          // data offset: 20 bytes
  tcp[13] = 0x18;            // PSH, ACK
  tcp[14] = tcp[15] = 0xff;  // window
  virtio_net_hdr_v1 vh{};
  vh.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  vh.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  vh.hdr_len = kTcp + 20;
  vh.gso_size = gso_size;
  vh.csum_start = kTcp;
  vh.csum_offset = 16;
  std::memcpy(h, &vh, sizeof(vh) - sizeof(vh.num_buffers));
}

// Frame: dst, src, ethertype, magic, then a byte pattern (checked by --check).
void build_frame(uint8_t* f, uint32_t size, const uint8_t dst[6], const uint8_t src[6],
                 const uint8_t magic[4]) {
  std::memcpy(f, dst, 6);
  std::memcpy(f + 6, src, 6);
  f[12] = uint8_t(kEtherType >> 8);
  f[13] = uint8_t(kEtherType);
  std::memcpy(f + kEthHdr, magic, 4);
  for (uint32_t i = kMinFrame; i < size; ++i) f[i] = uint8_t(i);
}

struct Stats {
  uint64_t packets = 0, bytes = 0;
  Clock::time_point first{}, last{};
  bool started = false;
  void count(uint64_t n, uint64_t b, Clock::time_point now) {
    if (!started) {
      started = true;
      first = now;
    }
    last = now;
    packets += n;
    bytes += b;
  }
  double seconds() const {
    return started ? std::chrono::duration<double>(last - first).count() : 0;
  }
};

std::string stats_json(const Stats& s, const std::string& extra) {
  double sec = s.seconds();
  double mpps = sec > 0 ? double(s.packets) / sec / 1e6 : 0;
  double gbps = sec > 0 ? double(s.bytes) * 8 / sec / 1e9 : 0;
  return fmt::format(
      "{{\"packets\": {}, \"bytes\": {}, \"seconds\": {:.6f}, \"mpps\": {:.4f}, \"gbps\": "
      "{:.4f}{}}}",
      s.packets, s.bytes, sec, mpps, gbps, extra);
}

double tv_seconds(const timeval& tv) {
  return double(tv.tv_sec) + double(tv.tv_usec) / 1e6;
}

struct Options {
  std::string socket;
  bool listen = false;
  std::string mode = "tx";
  uint32_t size = 64;
  uint16_t gso_size = 0;
  uint64_t count = 0;
  double duration = 0;
  double timeout = 60;
  std::string mac = "52:54:00:00:00:01";
  std::string dst_mac = "ff:ff:ff:ff:ff:ff";
  uint32_t burst = 32;
  bool mrg_rxbuf = false;
  bool packed = false;
  bool busy_poll = false;
  bool notify = false;
  bool check = false;
  bool rx_no_refill = false;
  bool random_src_mac = false;
  bool no_event_idx = false;
  bool hugetlb = false;
  uint32_t queue_size = 1024;
  uint64_t mem_mb = 0;
  double rate = 0;
  int cpu = -1;
  std::string pair_socket;
  std::string pair_mac = "52:54:00:00:00:02";
  bool rx_count_only = false;
};

inline uint64_t tsc() {
  return __builtin_ia32_rdtsc();
}

// The poll loop's own accounting: rounds, rounds that found nothing to do, and the TSC
// cycles of each kind (busy: rounds that moved frames).
struct LoopStats {
  uint64_t polls = 0, empty_polls = 0, busy_cycles = 0, idle_cycles = 0;
  void account(bool work, uint64_t cycles) {
    ++polls;
    if (work) {
      busy_cycles += cycles;
    } else {
      ++empty_polls;
      idle_cycles += cycles;
    }
  }
  std::string json() const {
    const uint64_t all = busy_cycles + idle_cycles;
    return fmt::format(
        "{{\"polls\": {}, \"empty_polls\": {}, \"busy_cycles\": {}, \"idle_cycles\": {}, "
        "\"busy_pct\": {:.2f}}}",
        polls, empty_polls, busy_cycles, idle_cycles,
        all ? 100.0 * double(busy_cycles) / all : 0.0);
  }
};

// DQ: the driver queue of the negotiated ring layout (virtio::DriverQueue, or
// virtio::PackedDriverQueue with --packed), chosen once for the run.
template <class DQ>
class Traffic {
 public:
  Traffic(const Options& o, Frontend& fe) : o_(o), fe_(fe) {}

  int run();
  // run() in parts, for a loop that drives several ports: begin() sets up and
  // announces; step() is one poll round (returns frames moved; sets *state when done).
  enum class State { kRunning, kComplete, kFailed };
  bool begin();
  uint32_t step(Clock::time_point now, State* state);
  std::string report_json(bool complete, const LoopStats& loop);
  // After a stop signal: reap the frames still posted (the back end may take them yet),
  // so "tx" counts every frame the back end took; at most `limit`.
  void drain_tx(Clock::duration limit);

 private:
  DQ& q(uint32_t i) {
    if constexpr (std::is_same_v<DQ, virtio::PackedDriverQueue>)
      return fe_.packed_queue(i);
    else
      return fe_.queue(i);
  }
  bool setup();
  bool announce();
  void service_rx(Clock::time_point now);
  uint32_t reap_tx(Clock::time_point now);
  uint32_t post_tx(Clock::time_point now);
  void wait_idle();
  void report(bool complete);

  const Options& o_;
  Frontend& fe_;
  bool tx_ = false, rx_ = false;
  uint8_t mac_[6] = {}, dst_[6] = {};
  uint32_t hdr_len_ = 12;
  uint32_t rx_buf_len_ = 2048;
  // Buffers by the head of the chain they are posted in (one descriptor per chain).
  std::vector<uint64_t> tx_buf_of_head_, rx_buf_of_head_;
  std::vector<uint64_t> tx_fresh_;  // tx buffer addresses never posted yet (a stack)
  // Heads of reaped tx chains (descriptor bound to its buffer), re-posted first, oldest
  // first: a FIFO of the queue's size (a power of 2).
  std::vector<uint16_t> tx_kept_;
  uint32_t kept_head_ = 0, kept_count_ = 0;
  uint64_t announce_gpa_ = 0;
  uint64_t tx_posted_ = 0;  // data frames posted
  uint64_t announce_sent_ = 0;
  Stats tx_stats_, rx_stats_;
  uint64_t rx_other_ = 0, rx_bad_ = 0, rx_continuations_ = 0;
  uint32_t rx_skip_ = 0;  // mergeable: used buffers still belonging to the last frame
  uint64_t kicks_ = 0, waits_ = 0, rx_refills_ = 0;
  uint64_t src_state_ = 0x9e3779b97f4a7c15;  // --random-src-mac generator
  uint16_t tx_reaped_ = 0, rx_reaped_ = 0;   // used elements consumed (wrapping, as used->idx)
  Clock::time_point t_start_{}, end_{}, give_up_{};
};

template <class DQ>
bool Traffic<DQ>::setup() {
  tx_ = o_.mode == "tx" || o_.mode == "txrx";
  rx_ = o_.mode == "rx" || o_.mode == "txrx";
  parse_mac(o_.mac, mac_);
  parse_mac(o_.dst_mac, dst_);
  // 5.1.6: the header is 12 bytes with VERSION_1 or MRG_RXBUF, else 10.
  hdr_len_ = (fe_.has_feature(VIRTIO_F_VERSION_1) || fe_.has_feature(VIRTIO_NET_F_MRG_RXBUF))
                 ? sizeof(virtio_net_hdr_mrg_rxbuf)
                 : sizeof(virtio_net_hdr);
  const uint16_t qs = q(kTxQ).size();
  // TX: one pre-built frame per descriptor, re-posted as they come back.
  const uint64_t tx_len = hdr_len_ + o_.size;
  tx_buf_of_head_.assign(qs, 0);
  rx_buf_of_head_.assign(q(kRxQ).size(), 0);
  if (tx_) {
    tx_fresh_.reserve(qs);
    tx_kept_.assign(qs, 0);
    for (uint16_t i = 0; i < qs; ++i) {
      auto m = fe_.alloc(tx_len, 64);
      if (!m) {
        spdlog::error("tx buffers: {}", m.message());
        return false;
      }
      std::memset(m->host, 0, hdr_len_);  // virtio_net_hdr: no offloads, num_buffers 0
      build_frame(m->host + hdr_len_, o_.size, dst_, mac_, kMagic);
      if (o_.gso_size) make_tso(m->host, m->host + hdr_len_, o_.size, o_.gso_size);
      tx_fresh_.push_back(m->gpa);
    }
  }
  // The announcement frame (broadcast from our MAC).
  auto a = fe_.alloc(hdr_len_ + 64, 64);
  if (!a) {
    spdlog::error("announce buffer: {}", a.message());
    return false;
  }
  static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  std::memset(a->host, 0, hdr_len_);
  build_frame(a->host + hdr_len_, 64, bcast, mac_, kAnnounceMagic);
  announce_gpa_ = a->gpa;
  // RX: fill the ring (in every mode, so that floods to us are not dropped).
  rx_buf_len_ = std::max<uint32_t>(2048, hdr_len_ + o_.size);
  DQ& rq = q(kRxQ);
  while (rq.num_free() > 0) {
    auto m = fe_.alloc(rx_buf_len_, 64);
    if (!m) {
      spdlog::error("rx buffers: {}", m.message());
      return false;
    }
    virtio::Buf b{m->gpa, rx_buf_len_};
    int head = rq.add(nullptr, 0, &b, 1);
    rx_buf_of_head_[uint16_t(head)] = m->gpa;
  }
  rq.publish();
  if (rq.should_kick()) fe_.kick(kRxQ);
  if (o_.notify) {
    q(kRxQ).enable_interrupts();
    q(kTxQ).enable_interrupts();
  } else {
    q(kRxQ).disable_interrupts();
    q(kTxQ).disable_interrupts();
  }
  return true;
}

// One broadcast frame from our MAC, waited for (the switch has learned us when it
// comes back as used).
template <class DQ>
bool Traffic<DQ>::announce() {
  DQ& tq = q(kTxQ);
  virtio::Buf b{announce_gpa_, hdr_len_ + 64};
  int head = tq.add(&b, 1, nullptr, 0);
  if (head < 0) return false;
  tq.publish();
  if (tq.should_kick()) {
    fe_.kick(kTxQ);
    ++kicks_;
  }
  auto deadline = Clock::now() + std::chrono::seconds(5);
  virtio::Used u;
  while (Clock::now() < deadline && !g_stop.load(std::memory_order_relaxed)) {
    if (tq.reap(u)) {
      ++tx_reaped_;
      ++announce_sent_;
      return true;
    }
    service_rx(Clock::now());
    if (o_.notify) fe_.wait_call(kTxQ, 10);
  }
  spdlog::error("the back end did not take the announcement frame within 5 s");
  return false;
}

template <class DQ>
void Traffic<DQ>::service_rx(Clock::time_point now) {
  DQ& rq = q(kRxQ);
  virtio::Used u;
  uint32_t n = 0;
  uint64_t pkts = 0, bytes = 0;
  const bool mrg = fe_.has_feature(VIRTIO_NET_F_MRG_RXBUF);
  while (n < 256 && rq.reap_keep(u)) {
    ++n;
    ++rx_reaped_;
    const uint64_t gpa = rx_buf_of_head_[u.id];
    if (rx_skip_) {
      --rx_skip_;  // a later buffer of a merged frame: counted with its first
      ++rx_continuations_;
    } else if (u.len < hdr_len_ + kEthHdr) {
      ++rx_bad_;
    } else if (o_.rx_count_only) {
      ++pkts;
      bytes += u.len - hdr_len_;
    } else {
      const uint8_t* h = fe_.host(gpa, rx_buf_len_);
      const uint32_t flen = u.len - hdr_len_;  // in this buffer
      if (mrg) {
        uint16_t nb;
        std::memcpy(&nb, h + offsetof(virtio_net_hdr_mrg_rxbuf, num_buffers), 2);
        if (nb > 1) rx_skip_ = nb - 1u;
      }
      const uint8_t* f = h + hdr_len_;
      const bool ours = std::memcmp(f, mac_, 6) == 0 && f[12] == uint8_t(kEtherType >> 8) &&
                        f[13] == uint8_t(kEtherType) && flen >= kMinFrame &&
                        std::memcmp(f + kEthHdr, kMagic, 4) == 0;
      if (!ours) {
        ++rx_other_;
      } else {
        bool good = true;
        if (o_.check) {
          good = rx_skip_ ? flen < o_.size : flen == o_.size;
          for (uint32_t i = kMinFrame; good && i < flen; ++i) good = f[i] == uint8_t(i);
        }
        if (good) {
          ++pkts;
          bytes += o_.size;
        } else {
          ++rx_bad_;
        }
      }
    }
    if (o_.rx_no_refill) continue;
    rq.repost(u.id);  // the same buffer, at once
  }
  if (n && pkts) rx_stats_.count(pkts, bytes, now);
  if (n && !o_.rx_no_refill) {
    rq.publish();
    ++rx_refills_;
    if (rq.should_kick()) {
      fe_.kick(kRxQ);
      ++kicks_;
    }
  }
}

template <class DQ>
uint32_t Traffic<DQ>::reap_tx(Clock::time_point now) {
  DQ& tq = q(kTxQ);
  virtio::Used u;
  uint32_t n = 0;
  const uint32_t qs = uint32_t(tx_kept_.size());
  while (tq.reap_keep(u)) {
    ++tx_reaped_;
    tx_kept_[(kept_head_ + kept_count_++) & (qs - 1)] = u.id;
    ++n;
  }
  if (n) tx_stats_.count(n, uint64_t(n) * o_.size, now);
  return n;
}

template <class DQ>
uint32_t Traffic<DQ>::post_tx(Clock::time_point now) {
  DQ& tq = q(kTxQ);
  uint64_t want = std::min<uint64_t>(o_.burst, kept_count_ + tx_fresh_.size());
  if (o_.count) want = std::min<uint64_t>(want, o_.count - tx_posted_);
  if (o_.rate > 0) {
    double el = std::chrono::duration<double>(now - t_start_).count();
    double allowed = o_.rate * el + o_.burst - double(tx_posted_);
    want = allowed <= 0 ? 0 : std::min<uint64_t>(want, uint64_t(allowed));
  }
  if (want == 0) return 0;
  if (!tx_stats_.started) {
    tx_stats_.started = true;
    tx_stats_.first = now;
    tx_stats_.last = now;
  }
  const uint32_t len = hdr_len_ + o_.size;
  const uint32_t qs = uint32_t(tx_kept_.size());
  for (uint64_t i = 0; i < want; ++i) {
    int head = -1;
    uint64_t gpa;
    if (kept_count_) {
      head = tx_kept_[kept_head_];
      kept_head_ = (kept_head_ + 1) & (qs - 1);
      --kept_count_;
      gpa = tx_buf_of_head_[uint16_t(head)];
    } else {
      gpa = tx_fresh_.back();
      tx_fresh_.pop_back();
    }
    if (o_.random_src_mac) {           // a new locally administered unicast source per frame
      src_state_ ^= src_state_ << 13;  // xorshift64
      src_state_ ^= src_state_ >> 7;
      src_state_ ^= src_state_ << 17;
      uint8_t* src = fe_.host(gpa + hdr_len_ + 6, 6);
      std::memcpy(src, &src_state_, 6);
      src[0] = uint8_t((src[0] & 0xfc) | 0x02);
    }
    if (head >= 0) {
      tq.repost(uint16_t(head));
    } else {
      virtio::Buf b{gpa, len};
      head = tq.add(&b, 1, nullptr, 0);
      tx_buf_of_head_[uint16_t(head)] = gpa;
    }
  }
  tx_posted_ += want;
  tq.publish();
  if (tq.should_kick()) {
    fe_.kick(kTxQ);
    ++kicks_;
  }
  return uint32_t(want);
}

// --notify: sleep until the back end calls on either ring (bounded, to re-check the
// clock and the stop flag).
template <class DQ>
void Traffic<DQ>::wait_idle() {
  DQ& tq = q(kTxQ);
  DQ& rq = q(kRxQ);
  tq.enable_interrupts();
  rq.enable_interrupts();
  // Re-check after asking: a used element may have arrived before the request.
  if (tq.has_used() || rq.has_used()) return;
  pollfd p[2] = {{fe_.call_fd(kRxQ), POLLIN, 0}, {fe_.call_fd(kTxQ), POLLIN, 0}};
  ++waits_;
  if (poll(p, 2, 10) > 0) {
    uint64_t v;
    for (auto& x : p)
      if (x.revents & POLLIN) {
        ssize_t r = read(x.fd, &v, sizeof(v));
        (void)r;
      }
  }
}

template <class DQ>
void Traffic<DQ>::report(bool complete) {
  std::printf("%s\n", report_json(complete, LoopStats{}).c_str());
  std::fflush(stdout);
}

template <class DQ>
std::string Traffic<DQ>::report_json(bool complete, const LoopStats& loop) {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  double wall = std::chrono::duration<double>(Clock::now() - t_start_).count();
  std::string tx = stats_json(tx_stats_, fmt::format(", \"posted\": {}", tx_posted_));
  std::string rx = stats_json(
      rx_stats_, fmt::format(", \"other_packets\": {}, \"bad_packets\": {}, \"continuations\": {}",
                             rx_other_, rx_bad_, rx_continuations_));
  return fmt::format(
      "{{\"mode\": \"{}\", \"complete\": {}, \"frame_size\": {}, \"burst\": {}, "
      "\"queue_size\": {}, \"wait\": \"{}\", \"features\": \"{:#x}\", \"hugetlb\": {}, "
      "\"announce_packets\": {}, \"tx\": {}, \"rx\": {}, \"kicks\": {}, \"waits\": {}, "
      "\"loop\": {}, \"wall_seconds\": {:.6f}, "
      "\"cpu\": {{\"user_seconds\": {:.6f}, \"sys_seconds\": {:.6f}}}}}",
      o_.mode, complete ? "true" : "false", o_.size, o_.burst, q(kTxQ).size(),
      o_.notify ? "notify" : "busy-poll", fe_.features(), fe_.hugetlb() ? "true" : "false",
      announce_sent_, tx, rx, kicks_, waits_, loop.json(), wall, tv_seconds(ru.ru_utime),
      tv_seconds(ru.ru_stime));
}

template <class DQ>
bool Traffic<DQ>::begin() {
  t_start_ = Clock::now();
  if (!setup() || !announce()) return false;
  t_start_ = Clock::now();
  end_ = o_.duration > 0 ? t_start_ + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(o_.duration))
                         : Clock::time_point::max();
  give_up_ = o_.duration > 0 ? end_
                             : t_start_ + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(o_.timeout));
  return true;
}

template <class DQ>
void Traffic<DQ>::drain_tx(Clock::duration limit) {
  if (!tx_) return;
  const auto deadline = Clock::now() + limit;
  DQ& tq = q(kTxQ);
  while (tq.in_flight() != 0 && Clock::now() < deadline) {
    if (reap_tx(Clock::now()) == 0) {
      pollfd p{fe_.call_fd(kTxQ), POLLIN, 0};
      tq.enable_interrupts();
      if (!tq.has_used() && poll(&p, 1, 1) > 0) {
        uint64_t v;
        ssize_t r = read(p.fd, &v, sizeof(v));
        (void)r;
      }
      tq.disable_interrupts();
    }
  }
}

template <class DQ>
uint32_t Traffic<DQ>::step(Clock::time_point now, State* state) {
  uint32_t work = 0;
  if (tx_) {
    work += reap_tx(now);
    const bool done_posting = (o_.count && tx_posted_ == o_.count) || now >= end_;
    if (!done_posting) work += post_tx(now);
  }
  const uint64_t rx_before = rx_stats_.packets + rx_other_ + rx_bad_;
  service_rx(now);
  work += uint32_t(rx_stats_.packets + rx_other_ + rx_bad_ - rx_before);
  const bool tx_done =
      !tx_ || ((o_.count ? tx_posted_ == o_.count : now >= end_) && q(kTxQ).in_flight() == 0);
  const bool rx_done = !rx_ || (o_.count ? rx_stats_.packets >= o_.count : now >= end_);
  if (tx_done && rx_done) {
    *state = State::kComplete;
  } else if (now >= give_up_ && (o_.count || now >= end_)) {
    // An rx-only run with a duration ends at the deadline; a count that is not
    // reached in time is a failure.
    *state = o_.count == 0 ? State::kComplete : State::kFailed;
  }
  return work;
}

template <class DQ>
int Traffic<DQ>::run() {
  if (!begin()) {
    report(false);
    return 1;
  }
  LoopStats loop;
  State state = State::kRunning;
  for (;;) {
    const uint64_t c0 = tsc();
    const auto now = Clock::now();
    if (g_stop.load(std::memory_order_relaxed)) {
      drain_tx(std::chrono::seconds(1));
      break;
    }
    const uint32_t work = step(now, &state);
    loop.account(work != 0, tsc() - c0);
    if (state != State::kRunning) break;
    if (!work && o_.notify) {
      wait_idle();
      q(kTxQ).disable_interrupts();
      q(kRxQ).disable_interrupts();
    }
  }
  const bool complete = state == State::kComplete;
  std::printf("%s\n", report_json(complete, loop).c_str());
  std::fflush(stdout);
  return complete ? 0 : 1;
}

// --pair-socket: two ports, one thread, busy polling. One JSON object:
// {"pair": [port A's report, port B's report]}, each with the shared loop's stats.
template <class DQ>
int run_pair(Traffic<DQ>& a, Traffic<DQ>& b) {
  if (!a.begin() || !b.begin()) {
    std::printf("{\"pair\": [%s, %s]}\n", a.report_json(false, {}).c_str(),
                b.report_json(false, {}).c_str());
    return 1;
  }
  LoopStats loop;
  using State = typename Traffic<DQ>::State;
  State sa = State::kRunning, sb = State::kRunning;
  for (;;) {
    const uint64_t c0 = tsc();
    const auto now = Clock::now();
    if (g_stop.load(std::memory_order_relaxed)) {
      a.drain_tx(std::chrono::seconds(1));
      b.drain_tx(std::chrono::seconds(1));
      break;
    }
    uint32_t work = 0;
    if (sa == State::kRunning) work += a.step(now, &sa);
    if (sb == State::kRunning) work += b.step(now, &sb);
    loop.account(work != 0, tsc() - c0);
    if (sa != State::kRunning && sb != State::kRunning) break;
  }
  const bool complete = sa == State::kComplete && sb == State::kComplete;
  std::printf("{\"pair\": [%s, %s]}\n", a.report_json(complete, loop).c_str(),
              b.report_json(complete, loop).c_str());
  std::fflush(stdout);
  return complete ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "vnet-traffic: a vhost-user front end that sends and/or receives Ethernet frames as "
      "fast as it can (or at --rate), for benchmarks and tests. Prints one JSON object."};
  Options o;
  app.add_option("--socket,-s", o.socket, "The back end's vhost-user socket")->required();
  app.add_flag("--listen", o.listen, "Listen at --socket for a back end in client mode");
  app.add_option("--mode,-m", o.mode, "tx, rx or txrx")
      ->check(CLI::IsMember({"tx", "rx", "txrx"}))
      ->capture_default_str();
  app.add_option("--size", o.size,
                 "Frame size in bytes (Ethernet header included, no FCS; above 9000 only with "
                 "--gso-size)")
      ->check(CLI::Range(kMinFrame, 65535u))
      ->capture_default_str();
  app.add_option("--gso-size", o.gso_size,
                 "tx: send TCP/IPv4 TSO frames of --size bytes with this gso_size (negotiates "
                 "CSUM and HOST_TSO4)")
      ->check(CLI::Range(1, 65535));
  auto* count =
      app.add_option("--count,-n", o.count, "tx: frames to send; rx: frames to receive, then stop");
  auto* duration = app.add_option("--duration,-d", o.duration, "Run this many seconds");
  count->excludes(duration);
  app.add_option("--timeout", o.timeout, "With --count: give up (exit 1) after this many seconds")
      ->capture_default_str();
  app.add_option("--mac", o.mac, "Our MAC (source of tx frames, destination counted on rx)")
      ->capture_default_str();
  app.add_option("--dst-mac", o.dst_mac, "Destination MAC of tx frames")->capture_default_str();
  app.add_option("--burst,-b", o.burst, "Frames per burst (one publish and kick decision each)")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  app.add_option("--queue-size,-q", o.queue_size, "Descriptors per ring (power of 2)")
      ->check(CLI::Range(1u, 32768u))
      ->capture_default_str();
  app.add_flag("--mrg-rxbuf", o.mrg_rxbuf, "Negotiate VIRTIO_NET_F_MRG_RXBUF");
  app.add_flag("--packed", o.packed, "Negotiate VIRTIO_F_RING_PACKED: packed rings");
  app.add_flag("--no-event-idx", o.no_event_idx, "Do not negotiate VIRTIO_RING_F_EVENT_IDX");
  auto* bp = app.add_flag("--busy-poll", o.busy_poll, "Poll the rings without sleeping (default)");
  auto* nt = app.add_flag("--notify", o.notify, "Sleep on the call eventfds when idle");
  bp->excludes(nt);
  app.add_flag("--check", o.check, "rx: verify size and payload of each frame");
  app.add_flag("--random-src-mac", o.random_src_mac,
               "tx: every frame from a new random locally administered source MAC (MAC flood)");
  app.add_flag("--rx-no-refill", o.rx_no_refill,
               "Fill the RX ring once and never re-post a buffer (a stuck guest)");
  app.add_option("--rate", o.rate, "tx: frames per second (0: as fast as possible)")
      ->capture_default_str();
  app.add_flag("--hugetlb", o.hugetlb, "Guest memory from MFD_HUGETLB (falls back if none)");
  app.add_option("--mem-mb", o.mem_mb, "Guest memory in MiB (default: what the rings need)");
  app.add_option("--cpu", o.cpu, "Pin to this CPU");
  auto* pair = app.add_option("--pair-socket", o.pair_socket,
                              "Drive a second port from the same thread (txrx on both, each "
                              "sending to the other's MAC, busy polling)");
  app.add_option("--pair-mac", o.pair_mac, "The second port's MAC")->capture_default_str();
  app.add_flag("--rx-count-only", o.rx_count_only,
               "rx: count every frame delivered without reading it (benchmark sink)");
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(log_level));
  uint8_t mac[6];
  if (!parse_mac(o.mac, mac) || !parse_mac(o.dst_mac, mac)) {
    std::fprintf(stderr, "vnet-traffic: bad MAC address\n");
    return 2;
  }
  if (o.queue_size & (o.queue_size - 1)) {
    std::fprintf(stderr, "vnet-traffic: --queue-size must be a power of 2\n");
    return 2;
  }
  if (o.size > 9000 && !o.gso_size) {
    std::fprintf(stderr, "vnet-traffic: --size above 9000 needs --gso-size\n");
    return 2;
  }
  if (o.gso_size && o.size < kEthHdr + 40) {
    std::fprintf(stderr, "vnet-traffic: --gso-size needs --size of at least 54 (headers)\n");
    return 2;
  }
  if (o.count == 0 && o.duration <= 0) o.duration = 10;
  if (*pair) {
    if (o.notify || o.listen || o.rx_no_refill || !parse_mac(o.pair_mac, mac)) {
      std::fprintf(stderr,
                   "vnet-traffic: --pair-socket needs a valid --pair-mac and excludes --notify, "
                   "--listen and --rx-no-refill\n");
      return 2;
    }
    o.mode = "txrx";
  }
  if (o.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(o.cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
      std::fprintf(stderr, "vnet-traffic: cannot pin to CPU %d: %s\n", o.cpu, strerror(errno));
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  FrontendConfig cfg;
  cfg.socket_path = o.socket;
  cfg.listen = o.listen;
  cfg.queue_size = uint16_t(o.queue_size);
  cfg.num_queues = 2;
  cfg.hugetlb = o.hugetlb;
  cfg.required_features = 1ULL << VIRTIO_F_VERSION_1;
  cfg.features = (1ULL << VIRTIO_F_VERSION_1) |
                 (o.no_event_idx ? 0 : 1ULL << VIRTIO_RING_F_EVENT_IDX) |
                 (o.mrg_rxbuf ? 1ULL << VIRTIO_NET_F_MRG_RXBUF : 0);
  if (o.mrg_rxbuf) cfg.required_features |= 1ULL << VIRTIO_NET_F_MRG_RXBUF;
  if (o.packed) {
    cfg.features |= 1ULL << VIRTIO_F_RING_PACKED;
    cfg.required_features |= 1ULL << VIRTIO_F_RING_PACKED;
  }
  if (o.gso_size) {
    const uint64_t tso = (1ULL << VIRTIO_NET_F_CSUM) | (1ULL << VIRTIO_NET_F_HOST_TSO4);
    cfg.features |= tso;
    cfg.required_features |= tso;
  }
  cfg.timeout_ms = 10000;
  const uint64_t per_ring = vnet::virtio::DriverQueue::ring_bytes(uint16_t(o.queue_size)) + 4096 +
                            uint64_t(o.queue_size) * (std::max<uint64_t>(2048, 12 + o.size) + 64);
  cfg.mem_size = o.mem_mb ? o.mem_mb << 20 : std::max<uint64_t>(2 * per_ring + (1 << 20), 16 << 20);

  auto fe = Frontend::connect_and_start(cfg);
  if (!fe) {
    std::fprintf(stderr, "vnet-traffic: %s\n", fe.message().c_str());
    return 1;
  }
  if (!*pair) {
    if (o.packed) return Traffic<virtio::PackedDriverQueue>(o, **fe).run();
    return Traffic<virtio::DriverQueue>(o, **fe).run();
  }
  // The second port: the same options, its own socket and MAC, sending to the first.
  Options o2 = o;
  o2.socket = o.pair_socket;
  o2.mac = o.pair_mac;
  o2.dst_mac = o.mac;
  Options o1 = o;
  o1.dst_mac = o.pair_mac;
  cfg.socket_path = o2.socket;
  auto fe2 = Frontend::connect_and_start(cfg);
  if (!fe2) {
    std::fprintf(stderr, "vnet-traffic: %s: %s\n", o2.socket.c_str(), fe2.message().c_str());
    return 1;
  }
  if (o.packed) {
    Traffic<virtio::PackedDriverQueue> a(o1, **fe), b(o2, **fe2);
    return run_pair(a, b);
  }
  Traffic<virtio::DriverQueue> a(o1, **fe), b(o2, **fe2);
  return run_pair(a, b);
}
