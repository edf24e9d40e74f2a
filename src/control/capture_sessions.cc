// CaptureSessions: filters, attachment and the pcapng stream (see capture_sessions.h).
#include "control/capture_sessions.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/send_pending.h"
#include "net/pcapng.h"

namespace vnet::control {

namespace {
uint64_t realtime_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}

// What a frame's virtio-net header says, when the frame is not what the wire would
// carry (virtio 1.2 section 5.1.6.2): a GSO super-frame and/or a partial checksum.
std::string offload_comment(const net::CaptureRecord& r) {
  std::string c;
  if (r.gso_type != VIRTIO_NET_HDR_GSO_NONE) {
    const char* kind = "?";
    switch (r.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) {
      case VIRTIO_NET_HDR_GSO_TCPV4:
        kind = "tcpv4";
        break;
      case VIRTIO_NET_HDR_GSO_TCPV6:
        kind = "tcpv6";
        break;
      case VIRTIO_NET_HDR_GSO_UDP:
        kind = "udp";
        break;
      case 5:
        kind = "udp_l4";
        break;  // VIRTIO_NET_HDR_GSO_UDP_L4 (virtio 1.2)
      default:
        break;
    }
    c = fmt::format("virtio-net: GSO {}{} gso_size {}", kind,
                    (r.gso_type & VIRTIO_NET_HDR_GSO_ECN) ? "+ecn" : "", r.gso_size);
  }
  if (r.vflags & VIRTIO_NET_HDR_F_NEEDS_CSUM)
    c += fmt::format("{}partial checksum (NEEDS_CSUM start {} offset {})",
                     c.empty() ? "virtio-net: " : ", ", r.csum_start, r.csum_offset);
  return c;
}
}  // namespace

CaptureSessions::~CaptureSessions() {
  if (timer_) loop_.cancel_timer(*timer_);
  for (auto& [port, set] : sets_) port->set_capture(nullptr);
  if (!sets_.empty()) pool_.quiesce();
  for (auto& [fd, s] : sessions_) loop_.remove(fd);
}

Result<std::shared_ptr<net::Capture>> CaptureSessions::prepare(const CaptureRequest& req) {
  if (sessions_.size() >= kMaxSessions)
    return Status::errorf("too many captures running (at most {})", kMaxSessions);
  if (req.filter.size() > CaptureRequest::kMaxFilter)
    return Status::errorf("filter longer than {} bytes", CaptureRequest::kMaxFilter);
  if (req.dirs == 0 || req.dirs > 3) return Status::error("direction must be rx, tx or both");
  pcap_t* dead = pcap_open_dead(DLT_EN10MB, int(req.snaplen));
  if (!dead) return Status::error("pcap_open_dead failed");
  bpf_program prog{};
  if (pcap_compile(dead, &prog, req.filter.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
    std::string why = pcap_geterr(dead);
    pcap_close(dead);
    counters_.bad_filters.add();
    return Status::errorf("bad filter: {}", why);
  }
  auto cap = std::make_shared<net::Capture>(req.filter.empty() ? nullptr : &prog, req.dirs,
                                            req.snaplen, uint32_t(pool_.size()), kRingBytes);
  pcap_freecode(&prog);
  pcap_close(dead);
  return cap;
}

void CaptureSessions::start(ports::Port& port, std::shared_ptr<net::Capture> cap,
                            const CaptureRequest& req, UniqueFd fd) {
  const int raw = fd.get();
  auto s = std::make_unique<Session>();
  s->port = &port;
  s->port_name = port.name();
  s->cap = std::move(cap);
  s->fd = std::move(fd);
  s->count = req.count;
  s->start_ns = realtime_ns();
  net::pcapng::append_section_header(s->out, "vnetd");
  net::pcapng::append_interface(s->out, net::pcapng::kLinkTypeEthernet, s->cap->snaplen(),
                                port.name());
  Status st = loop_.add(raw, EPOLLIN, [this, raw](uint32_t ev) { on_fd(raw, ev); });
  if (!st) {
    spdlog::warn("capture on {}: {}", port.name(), st.message());
    return;  // the connection closes here
  }
  sessions_.emplace(raw, std::move(s));
  counters_.started.add();
  publish(port);
  spdlog::info("capture on port {} started ({} running)", port.name(), sessions_.size());
  arm();
  flush(*sessions_.at(raw));
}

void CaptureSessions::publish(ports::Port& port) {
  auto set = std::make_unique<net::CaptureSet>();
  for (auto& [fd, s] : sessions_) {
    if (s->port != &port || s->detached) continue;
    set->captures.push_back(s->cap.get());
    set->rx |= s->cap->wants(net::CaptureDir::kRx);
    set->tx |= s->cap->wants(net::CaptureDir::kTx);
  }
  const bool none = set->captures.empty();
  port.set_capture(none ? nullptr : set.get());
  pool_.quiesce();  // no worker holds the old set (nor a detached capture) any more
  if (none)
    sets_.erase(&port);
  else
    sets_[&port] = std::move(set);
}

void CaptureSessions::drain(Session& s) {
  net::Capture& cap = *s.cap;
  while (s.out.size() - s.out_off < kOutMax && (s.count == 0 || s.delivered < s.count)) {
    // The oldest record at the head of any ring (one ring per worker).
    net::CaptureRing* from = nullptr;
    const net::CaptureRecord* rec = nullptr;
    for (uint32_t i = 0; i < cap.producers(); ++i) {
      const net::CaptureRecord* r = cap.ring(i).peek();
      if (r && (!rec || r->ts_ns < rec->ts_ns)) {
        rec = r;
        from = &cap.ring(i);
      }
    }
    if (!rec) break;
    const auto* data = reinterpret_cast<const char*>(rec + 1);
    const uint32_t flags = rec->dir == uint8_t(net::CaptureDir::kRx) ? net::pcapng::kFlagInbound
                                                                     : net::pcapng::kFlagOutbound;
    net::pcapng::append_packet(s.out, 0, rec->ts_ns, std::string_view(data, rec->caplen),
                               rec->orig_len, flags, offload_comment(*rec));
    from->release();
    ++s.delivered;
    counters_.frames.add();
  }
  if (s.out_off > 0 && s.out_off == s.out.size()) {
    s.out.clear();
    s.out_off = 0;
  }
}

void CaptureSessions::finish(Session& s) {
  if (s.detached) return;
  s.detached = true;
  s.deadline = std::chrono::steady_clock::now() + kFinalFlush;
  publish(*s.port);  // after this no worker writes to its rings
  drain(s);
  net::pcapng::Statistics st;
  st.start_ns = s.start_ns;
  st.end_ns = realtime_ns();
  for (uint32_t i = 0; i < s.cap->producers(); ++i) {
    const net::CaptureRing& r = s.cap->ring(i);
    st.ifrecv += r.seen.get();
    st.ifdrop += r.dropped.get();
    st.filteraccept += r.accepted.get();
  }
  st.usrdeliv = s.delivered;
  counters_.dropped.add(st.ifdrop);
  net::pcapng::append_statistics(s.out, 0, st.end_ns, st);
  spdlog::info("capture on port {} ended: {} frames captured, {} dropped", s.port_name, s.delivered,
               st.ifdrop);
}

bool CaptureSessions::flush(Session& s) {
  if (send_pending(s.fd.get(), s.out, s.out_off) == SendState::kFailed) {
    close(s.fd.get());  // the reader went away
    return false;
  }
  const bool pending = s.out_off < s.out.size();
  if (!pending) {
    s.out.clear();
    s.out_off = 0;
    if (s.detached) {
      close(s.fd.get());
      return false;
    }
  }
  // Once detached the client's input no longer matters (a half-closed socket would
  // stay readable): only the rest of the stream is watched.
  const uint32_t want = (s.detached ? 0u : uint32_t(EPOLLIN)) | (pending ? uint32_t(EPOLLOUT) : 0u);
  if (want != s.events) {
    s.events = want;
    (void)loop_.modify(s.fd.get(), want);
  }
  return true;
}

void CaptureSessions::on_fd(int fd, uint32_t events) {
  auto it = sessions_.find(fd);
  if (it == sessions_.end()) return;
  Session& s = *it->second;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    // The client says nothing more; its end of the stream (shutdown or close) ends
    // the capture. Anything it sends is ignored.
    char buf[512];
    const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      if (!s.detached) finish(s);
      if (n < 0 || (events & EPOLLERR)) {
        close(fd);
        return;
      }
      // Half-closed (vnetctl shut down its side): it still reads the rest.
    }
  }
  if (!s.detached) drain(s);
  flush(s);
}

void CaptureSessions::close(int fd) {
  auto it = sessions_.find(fd);
  if (it == sessions_.end()) return;
  Session& s = *it->second;
  if (!s.detached) {
    s.detached = true;
    publish(*s.port);
  }
  loop_.remove(fd);
  sessions_.erase(it);  // closes the connection, frees the rings
  counters_.ended.add();
}

void CaptureSessions::port_removed(ports::Port& port) {
  std::vector<int> fds;
  for (auto& [fd, s] : sessions_)
    if (s->port == &port) fds.push_back(fd);
  for (int fd : fds) {
    Session& s = *sessions_.at(fd);
    finish(s);
    (void)flush(s);  // best effort: the port is going now
    close(fd);
  }
}

void CaptureSessions::tick() {
  timer_.reset();
  const auto now = std::chrono::steady_clock::now();
  std::vector<int> fds;
  for (auto& [fd, s] : sessions_) fds.push_back(fd);
  for (int fd : fds) {
    auto it = sessions_.find(fd);
    if (it == sessions_.end()) continue;
    Session& s = *it->second;
    if (s.detached && now >= s.deadline) {
      close(fd);  // the reader did not take the end of its stream in time
      continue;
    }
    if (!s.detached) {
      drain(s);
      if (s.count && s.delivered >= s.count) finish(s);
    }
    flush(s);
  }
  arm();
}

void CaptureSessions::arm() {
  if (timer_ || sessions_.empty()) return;
  timer_ = loop_.add_timer(kDrainEvery, [this] { tick(); });
}

nlohmann::json CaptureSessions::counters_json() const {
  return {{"active", sessions_.size()},         {"started", counters_.started.get()},
          {"ended", counters_.ended.get()},     {"frames", counters_.frames.get()},
          {"dropped", counters_.dropped.get()}, {"bad_filters", counters_.bad_filters.get()}};
}

}  // namespace vnet::control
