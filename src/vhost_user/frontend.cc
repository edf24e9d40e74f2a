// Frontend: guest memory, socket, negotiation and ring set-up of a vhost-user front
// end (docs/interop/vhost-user.rst in qemu/qemu; section names are quoted).
#include "vhost_user/frontend.h"

#include <fcntl.h>
#include <linux/virtio_ring.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/log.h"

namespace vnet::vhost_user {

namespace {

constexpr uint64_t kHugePage = 2ULL << 20;

uint64_t align_up(uint64_t v, uint64_t a) {
  return (v + a - 1) & ~(a - 1);
}

Result<sockaddr_un> unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return Status::errorf("socket path '{}' is empty or longer than {} bytes", path,
                          sizeof(a.sun_path) - 1);
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

UniqueFd make_eventfd() {
  return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

}  // namespace

Result<std::unique_ptr<Frontend>> Frontend::create(const FrontendConfig& cfg) {
  if (cfg.queue_size == 0 || (cfg.queue_size & (cfg.queue_size - 1)) != 0 || cfg.queue_size > 32768)
    return Status::errorf("queue size {} is not a power of 2 in 1..32768", cfg.queue_size);
  if (cfg.num_queues == 0 || cfg.num_queues > 256)
    return Status::errorf("{} queues: expected 1..256", cfg.num_queues);
  std::unique_ptr<Frontend> fe(new Frontend(cfg));
  fe->queues_.resize(cfg.num_queues);
  if (Status st = fe->map_memory(); !st) return st;
  if (Status st = fe->open_socket(); !st) return st;
  return fe;
}

Result<std::unique_ptr<Frontend>> Frontend::connect_and_start(const FrontendConfig& cfg) {
  auto fe = create(cfg);
  if (!fe) return fe;
  if (Status st = (*fe)->start(); !st) return st;
  return fe;
}

Frontend::~Frontend() {
  sock_.reset();
  if (mem_) munmap(mem_, mem_size_);
}

Status Frontend::map_memory() {
  const uint64_t page = uint64_t(sysconf(_SC_PAGESIZE));
  if (cfg_.mem_size == 0) return Status::error("guest memory size 0");
  if (cfg_.hugetlb) {
    uint64_t size = align_up(cfg_.mem_size, kHugePage);
    UniqueFd fd(memfd_create("vnet-frontend", MFD_CLOEXEC | MFD_HUGETLB));
    if (fd && ftruncate(fd.get(), off_t(size)) == 0) {
      // hugetlbfs reserves the pages at mmap time: no pages, no mapping (not SIGBUS later).
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
      if (p != MAP_FAILED) {
        mem_fd_ = std::move(fd);
        mem_ = static_cast<uint8_t*>(p);
        mem_size_ = size;
        hugetlb_ = true;
        return Status::ok();
      }
    }
    spdlog::warn("frontend: no hugetlb memfd of {} bytes ({}); using normal pages", size,
                 strerror(errno));
  }
  uint64_t size = align_up(cfg_.mem_size, page);
  UniqueFd fd(memfd_create("vnet-frontend", MFD_CLOEXEC));
  if (!fd) return Status::errorf("memfd_create: {}", strerror(errno));
  if (ftruncate(fd.get(), off_t(size)) != 0)
    return Status::errorf("ftruncate memfd to {}: {}", size, strerror(errno));
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd.get(), 0);
  if (p == MAP_FAILED) return Status::errorf("mmap memfd of {} bytes: {}", size, strerror(errno));
  mem_fd_ = std::move(fd);
  mem_ = static_cast<uint8_t*>(p);
  mem_size_ = size;
  return Status::ok();
}

Status Frontend::open_socket() {
  auto addr = unix_addr(cfg_.socket_path);
  if (!addr) return addr.status();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg_.timeout_ms);
  if (!cfg_.listen) {
    // The back end may not have created its socket yet: retry until the deadline.
    for (;;) {
      UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!fd) return Status::errorf("socket: {}", strerror(errno));
      if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) == 0) {
        sock_ = std::move(fd);
        return Status::ok();
      }
      int err = errno;
      if ((err != ENOENT && err != ECONNREFUSED && err != EAGAIN) ||
          std::chrono::steady_clock::now() >= deadline)
        return Status::errorf("connect to {}: {}", cfg_.socket_path, strerror(err));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // Listening: replace a stale socket file, never anything else.
  struct stat st;
  if (lstat(cfg_.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return Status::errorf("{} exists and is not a socket", cfg_.socket_path);
    unlink(cfg_.socket_path.c_str());
  }
  UniqueFd lfd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!lfd) return Status::errorf("socket: {}", strerror(errno));
  if (bind(lfd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0)
    return Status::errorf("bind {}: {}", cfg_.socket_path, strerror(errno));
  Status result = Status::ok();
  if (::listen(lfd.get(), 1) != 0) {
    result = Status::errorf("listen {}: {}", cfg_.socket_path, strerror(errno));
  } else {
    pollfd p{lfd.get(), POLLIN, 0};
    int n;
    do {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      n = poll(&p, 1, int(std::max<int64_t>(left, 0)));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      result = Status::errorf("no back end connected to {} within {} ms", cfg_.socket_path,
                              cfg_.timeout_ms);
    } else {
      sock_.reset(accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!sock_) result = Status::errorf("accept on {}: {}", cfg_.socket_path, strerror(errno));
    }
  }
  unlink(cfg_.socket_path.c_str());  // one connection only; the file is ours
  return result;
}

// ---- messages ----

Status Frontend::send_raw(uint32_t request, const std::vector<uint8_t>& payload,
                          const std::vector<int>& fds, uint32_t flags,
                          std::optional<uint32_t> size) {
  // Not send_message(): the header may lie about the size, and any number of fds
  // (up to the kernel's SCM_MAX_FD) may go with it.
  constexpr size_t kMaxRawFds = 253;
  if (fds.size() > kMaxRawFds) return Status::errorf("cannot send {} fds", fds.size());
  Header h{request, flags, size.value_or(uint32_t(payload.size()))};
  iovec iov[2] = {{&h, kHeaderSize}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
  std::vector<char> cbuf(CMSG_SPACE(sizeof(int) * std::max<size_t>(fds.size(), 1)));
  size_t total = kHeaderSize + payload.size(), sent = 0;
  size_t iov_first = 0;
  while (sent < total) {
    msghdr mh{};
    // Resume after a partial send.
    iovec cur[2];
    size_t n = 0;
    size_t skip = sent;
    for (size_t i = iov_first; i < 2; ++i) {
      if (skip >= iov[i].iov_len) {
        skip -= iov[i].iov_len;
        continue;
      }
      cur[n++] = {static_cast<uint8_t*>(iov[i].iov_base) + skip, iov[i].iov_len - skip};
      skip = 0;
    }
    mh.msg_iov = cur;
    mh.msg_iovlen = n;
    if (sent == 0 && !fds.empty()) {
      mh.msg_control = cbuf.data();
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t r = sendmsg(sock_.get(), &mh, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::errorf("sendmsg {}: {}", request_name(request), strerror(errno));
    }
    sent += size_t(r);
  }
  return Status::ok();
}

Result<Message> Frontend::recv_reply(int timeout_ms) {
  return recv_message_blocking(sock_.get(), timeout_ms < 0 ? cfg_.timeout_ms : timeout_ms);
}

Result<Message> Frontend::request(Request req, const void* payload, uint32_t size,
                                  const std::vector<int>& fds, bool need_ack) {
  const RequestInfo* info = request_info(uint32_t(req));
  if (!info) return Status::errorf("unknown request {}", uint32_t(req));
  const bool has_reply = info->has_reply;
  const bool ack = !has_reply && need_ack && (protocol_ & protocol::kReplyAck);
  Status st = send_request(sock_.get(), req, payload, size, fds, ack ? kFlagNeedReply : 0);
  if (!st) return Status::errorf("{}: {}", info->name, st.message());
  if (!has_reply && !ack) return Message{};
  auto m = recv_reply();
  if (!m) return Status::errorf("{}: no reply: {}", info->name, m.message());
  // "Header": a reply carries the request code and the reply flag.
  if (m->hdr.request != uint32_t(req) || (m->hdr.flags & kFlagReply) == 0)
    return Status::errorf("{}: reply has request {} flags {:#x}", info->name, m->hdr.request,
                          m->hdr.flags);
  if (ack) {
    if (m->hdr.size != sizeof(uint64_t))
      return Status::errorf("{}: REPLY_ACK of {} bytes", info->name, m->hdr.size);
    if (m->u64() != 0)
      return Status::errorf("{}: back end refused it (ack {})", info->name, m->u64());
  }
  return m;
}

Result<uint64_t> Frontend::get_u64(Request req) {
  auto m = request(req, nullptr, 0);
  if (!m) return m.status();
  if (m->hdr.size != sizeof(uint64_t))
    return Status::errorf("{}: reply of {} bytes, expected 8", request_name(uint32_t(req)),
                          m->hdr.size);
  return m->u64();
}

// ---- start-up ----

Status Frontend::negotiate() {
  auto offered = get_u64(Request::GET_FEATURES);
  if (!offered) return offered.status();
  offered_features_ = *offered;
  if (uint64_t missing = cfg_.required_features & ~offered_features_)
    return Status::errorf("back end lacks required features {:#x} (offers {:#x})", missing,
                          offered_features_);
  const bool use_proto =
      cfg_.protocol_features != 0 && (offered_features_ & kFeatureProtocolFeatures);
  if (use_proto) {
    auto op = get_u64(Request::GET_PROTOCOL_FEATURES);
    if (!op) return op.status();
    offered_protocol_ = *op;
    uint64_t want = cfg_.protocol_features & offered_protocol_;
    // Sent without need_reply: REPLY_ACK is only in force once this is handled.
    auto r = request(Request::SET_PROTOCOL_FEATURES, &want, sizeof(want), {}, false);
    if (!r) return r.status();
    protocol_ = want;
    if (protocol_ & protocol::kMq) {
      auto qn = get_u64(Request::GET_QUEUE_NUM);
      if (!qn) return qn.status();
      queue_pairs_ = *qn;
      if (cfg_.num_queues > 2 * queue_pairs_)
        return Status::errorf("{} rings asked for, the back end has {} queue pairs",
                              cfg_.num_queues, queue_pairs_);
    }
  }
  if (auto r = request(Request::SET_OWNER, nullptr, 0); !r) return r.status();
  features_ = (cfg_.features & offered_features_ & ~kFeatureProtocolFeatures) |
              (use_proto ? kFeatureProtocolFeatures : 0);
  if (auto r = request(Request::SET_FEATURES, &features_, sizeof(features_)); !r) return r.status();
  return Status::ok();
}

Status Frontend::send_mem_table() {
  uint8_t buf[sizeof(MemoryTableHeader) + sizeof(MemoryRegion)];
  MemoryTableHeader th{1, 0};
  MemoryRegion r{0, mem_size_, uva(), 0};
  std::memcpy(buf, &th, sizeof(th));
  std::memcpy(buf + sizeof(th), &r, sizeof(r));
  auto m = request(Request::SET_MEM_TABLE, buf, sizeof(buf), {mem_fd_.get()});
  return m ? Status::ok() : m.status();
}

Status Frontend::check_queue(uint32_t q) const {
  if (q >= queues_.size()) return Status::errorf("ring {} out of range ({})", q, queues_.size());
  return Status::ok();
}

Status Frontend::setup_queue(uint32_t q) {
  if (Status st = check_queue(q); !st) return st;
  Queue& qu = queues_[q];
  const uint16_t size = cfg_.queue_size;
  if (!qu.laid_out) {
    auto ring = alloc(std::max(virtio::DriverQueue::ring_bytes(size),
                               virtio::PackedDriverQueue::ring_bytes(size)),
                      4096);
    if (!ring) return Status::errorf("ring {}: {}", q, ring.message());
    qu.ring = *ring;
    qu.laid_out = true;
  }
  // A fresh ring each time: the back end starts it at the ring's base.
  const bool event_idx = features_ & (1ULL << VIRTIO_RING_F_EVENT_IDX);
  virtio::QueueConfig c;
  if (packed()) {
    qu.pdq.init(size, qu.ring.host, qu.ring.gpa, uva() + qu.ring.gpa, event_idx);
    c = qu.pdq.config();
  } else {
    qu.dq.init(size, qu.ring.host, qu.ring.gpa, uva() + qu.ring.gpa, event_idx);
    c = qu.dq.config();
  }
  VringState num{q, size};
  if (auto r = request(Request::SET_VRING_NUM, &num, sizeof(num)); !r) return r.status();
  VringState base{q, c.avail_base};
  if (auto r = request(Request::SET_VRING_BASE, &base, sizeof(base)); !r) return r.status();
  VringAddr addr{q, 0, c.desc_addr, c.used_addr, c.avail_addr, 0};
  if (auto r = request(Request::SET_VRING_ADDR, &addr, sizeof(addr)); !r) return r.status();
  // Call before kick: the back end has where to signal by the time the ring starts.
  qu.call = cfg_.call_fds ? make_eventfd() : UniqueFd();
  if (cfg_.call_fds && !qu.call) return Status::errorf("eventfd: {}", strerror(errno));
  uint64_t v = q | (qu.call ? 0 : kVringNoFdFlag);
  std::vector<int> fds;
  if (qu.call) fds.push_back(qu.call.get());
  if (auto r = request(Request::SET_VRING_CALL, &v, sizeof(v), fds); !r) return r.status();
  qu.kick = cfg_.kick_fds ? make_eventfd() : UniqueFd();
  if (cfg_.kick_fds && !qu.kick) return Status::errorf("eventfd: {}", strerror(errno));
  v = q | (qu.kick ? 0 : kVringNoFdFlag);
  fds.clear();
  if (qu.kick) fds.push_back(qu.kick.get());
  if (auto r = request(Request::SET_VRING_KICK, &v, sizeof(v), fds); !r) return r.status();
  return Status::ok();
}

Status Frontend::enable_queue(uint32_t q, bool enable) {
  if (Status st = check_queue(q); !st) return st;
  VringState s{q, enable ? 1u : 0u};
  auto r = request(Request::SET_VRING_ENABLE, &s, sizeof(s));
  return r ? Status::ok() : r.status();
}

Status Frontend::start() {
  if (Status st = negotiate(); !st) return st;
  if (Status st = send_mem_table(); !st) return st;
  for (uint32_t q = 0; q < queues_.size(); ++q)
    if (Status st = setup_queue(q); !st) return st;
  // "Ring states": with PROTOCOL_FEATURES a ring starts disabled.
  if (features_ & kFeatureProtocolFeatures)
    for (uint32_t q = 0; q < queues_.size(); ++q)
      if (Status st = enable_queue(q, true); !st) return st;
  return Status::ok();
}

Result<uint16_t> Frontend::get_vring_base(uint32_t q) {
  if (Status st = check_queue(q); !st) return st;
  VringState s{q, 0};
  auto m = request(Request::GET_VRING_BASE, &s, sizeof(s));
  if (!m) return m.status();
  if (m->hdr.size != sizeof(VringState))
    return Status::errorf("GET_VRING_BASE: reply of {} bytes", m->hdr.size);
  auto r = m->as<VringState>();
  if (r.index != q)
    return Status::errorf("GET_VRING_BASE: reply for ring {}, asked {}", r.index, q);
  // Packed rings: bits 16-31 are the used side's state (vhost-user "GET_VRING_BASE").
  if (r.num > 0xffff && !packed())
    return Status::errorf("GET_VRING_BASE: base {:#x} not 16-bit", r.num);
  return uint16_t(r.num);
}

// ---- data path helpers ----

void Frontend::kick(uint32_t q) {
  if (int fd = queues_[q].kick.get(); fd >= 0) {
    uint64_t one = 1;
    ssize_t r = ::write(fd, &one, sizeof(one));
    (void)r;  // EAGAIN: the counter is saturated, the back end has a kick pending anyway
  }
}

bool Frontend::wait_call(uint32_t q, int timeout_ms) {
  int fd = queues_[q].call.get();
  if (fd < 0) return false;
  pollfd p{fd, POLLIN, 0};
  int n;
  do n = poll(&p, 1, timeout_ms);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  uint64_t v;
  return ::read(fd, &v, sizeof(v)) == sizeof(v);
}

Result<Frontend::Mem> Frontend::alloc(uint64_t len, uint64_t align) {
  if (align == 0 || (align & (align - 1)) != 0) return Status::errorf("alignment {}", align);
  uint64_t at = align_up(alloc_next_, align);
  if (at > mem_size_ || len > mem_size_ - at)
    return Status::errorf("guest memory exhausted: {} bytes asked, {} of {} free", len,
                          at > mem_size_ ? 0 : mem_size_ - at, mem_size_);
  alloc_next_ = at + len;
  return Mem{at, mem_ + at, len};
}

uint8_t* Frontend::host(uint64_t gpa, uint64_t len) const {
  if (gpa > mem_size_ || len > mem_size_ - gpa) return nullptr;
  return mem_ + gpa;
}

}  // namespace vnet::vhost_user
