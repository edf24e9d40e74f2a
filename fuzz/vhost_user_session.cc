// Fuzz target "vhost_user_session": a hostile vhost-user front end. The input is a
// sequence of messages (header + payload) sent over a socketpair to a Session
// (src/vhost_user/session) that drives a fake Backend; file descriptors are real: each
// message may carry 0..10 memfds or fds of any other kind (eventfds non-blocking,
// blocking or saturated, pipe ends, sockets, a regular file, /dev/null; more than
// kMaxFds tests truncated ancillary data), memfds may be truncated to nothing after the
// message (guest memory shrinking under the session), and a message may arrive in two
// parts. When the session ends (error or close), a new connection is made for the rest
// of the input, as vnetd would accept.
//
// Input: one byte of device configuration (queue pairs, whether the back end refuses to
// start rings), then records:
//   ctl (u8): bits 0-3 fd count (0..15, capped at 10), bit 4 split the message in two,
//             bit 5 raw 12-byte header (else a compact one), bit 6 set NEED_REPLY,
//             bit 7 other fds (else memfds)
//   [fds]    (u8, when fds > 0): memfds: size 4 KiB << (bits 0-2), bits 3-6: 16-byte
//             units of input written at the start of each, bit 7: truncated to 0 once
//             the message was handled; other fds: bits 3-5 the kind (FdMaker)
//   header:   raw {u32 request, u32 flags, u32 size} or compact {u8 request, u8 flags,
//             u16 size}
//   [split]  (u8, when bit 4): where to split
//   payload:  `size` bytes (the input may end first: the front end then hangs up)
//
// Checked beyond "no crash, no leak": the back end is only called with ring indexes the
// device has and with ring sizes that are powers of two; the rings it starts are
// validated by a real DeviceQueue over the mapped memfds, which pops and completes what
// the front end put there; replies are well-formed; and at the end the process has
// exactly the file descriptors and no memfd mapping left than it had at the start.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/unique_fd.h"
#include "fuzz_input.h"
#include "memory/fault_guard.h"
#include "vhost_user/backend.h"
#include "vhost_user/message.h"
#include "vhost_user/session.h"
#include "virtio/device_queue.h"

namespace {

using namespace vnet;
using namespace vnet::vhost_user;
using vnet::fuzz::FuzzInput;

constexpr size_t kMaxFdsSent = 10;

// An fd of one of the kinds a hostile front end may send where an eventfd belongs.
UniqueFd make_other_fd(unsigned kind) {
  int p[2];
  switch (kind & 7) {
    case 0:
      return UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    case 1:
      return UniqueFd(eventfd(0, EFD_CLOEXEC));  // blocking
    case 2: {
      UniqueFd fd(eventfd(0, EFD_CLOEXEC));  // blocking and at its maximum
      uint64_t max = 0xfffffffffffffffeULL;
      if (write(fd.get(), &max, sizeof(max)) != sizeof(max)) std::abort();
      return fd;
    }
    case 3:
    case 4:
      if (pipe2(p, O_CLOEXEC) != 0) std::abort();
      close(p[kind & 1 ? 0 : 1]);  // 3: the read end (writer gone), 4: the write end
      return UniqueFd(p[kind & 1 ? 1 : 0]);
    case 5:
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) != 0) std::abort();
      close(p[1]);
      return UniqueFd(p[0]);  // hung up
    case 6:
      return UniqueFd(open("/dev/null", O_RDWR | O_CLOEXEC));
    default:
      return UniqueFd(open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  }
}
constexpr const char* kMemfdName = "vnet-fuzz-guest";

// Mappings of our memfds still in the address space.
size_t count_memfd_maps() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  size_t n = 0;
  while (std::getline(f, line))
    if (line.find(kMemfdName) != std::string::npos) ++n;
  return n;
}

// The back end: real DeviceQueues on the memory the session installs, so that what the
// session validated is used as the data path would use it.
class FuzzBackend : public Backend {
 public:
  FuzzBackend(uint32_t pairs, bool refuse_start) : pairs_(pairs), refuse_start_(refuse_start) {
    for (uint32_t i = 0; i < 2 * pairs; ++i) rings_.push_back(std::make_unique<Ring>());
  }

  uint64_t device_features() const override {
    return (1ULL << 32) /* VERSION_1 */ | (1ULL << VIRTIO_RING_F_EVENT_IDX) |
           (1ULL << VIRTIO_RING_F_INDIRECT_DESC) | (1ULL << 15) /* MRG_RXBUF */ |
           kFeatureProtocolFeatures;
  }
  uint64_t protocol_features() const override {
    return protocol::kMq | protocol::kReplyAck | protocol::kConfigureMemSlots | protocol::kStatus |
           protocol::kMtu | protocol::kResetDevice;
  }
  uint32_t max_queue_pairs() const override { return pairs_; }
  Status set_features(uint64_t f) override {
    FUZZ_CHECK((f & ~device_features()) == 0);  // the session checks the subset
    return Status::ok();
  }
  void set_memory(std::shared_ptr<const memory::GuestMemory> mem) override {
    // Running rings move to the new table at the index they reached.
    for (auto& r : rings_) {
      if (!r->q.started()) continue;
      uint16_t at = r->q.last_avail_idx();
      r->q.stop();
      r->cfg.avail_base = at;
      (void)r->q.start(mem, r->cfg);
    }
    mem_ = std::move(mem);
  }
  Status start_queue(uint32_t index, const virtio::QueueConfig& cfg, FrontendFd kick) override {
    FUZZ_CHECK(index < rings_.size());
    FUZZ_CHECK(cfg.size != 0 && (cfg.size & (cfg.size - 1)) == 0);
    FUZZ_CHECK(mem_ != nullptr);
    if (refuse_start_) return Status::error("refused by the fuzz back end");
    Ring& r = *rings_[index];
    r.cfg = cfg;
    Status st = r.q.start(mem_, cfg);
    if (!st) return st;
    r.kick = std::move(kick);
    // Work the ring once: pop what the front end's memory holds, complete it.
    virtio::Chain c;
    for (int i = 0; i < 64 && r.q.pop(c) == virtio::PopStatus::kOk; ++i) r.q.push(c.head, 0);
    r.q.publish();
    (void)r.q.should_notify();
    return Status::ok();
  }
  uint16_t stop_queue(uint32_t index) override {
    FUZZ_CHECK(index < rings_.size());
    Ring& r = *rings_[index];
    uint16_t at = r.q.last_avail_idx();
    r.q.stop();
    r.kick.reset();
    return at;
  }
  Status set_call(uint32_t index, FrontendFd call) override {
    FUZZ_CHECK(index < rings_.size());
    rings_[index]->call = std::move(call);
    return Status::ok();
  }
  void set_enabled(uint32_t index, bool) override { FUZZ_CHECK(index < rings_.size()); }
  Status set_mtu(uint32_t mtu) override {
    if (mtu < 68 || mtu > 65535) return Status::error("MTU out of range");
    return Status::ok();
  }
  void reset() override {
    for (auto& r : rings_) {
      r->q.stop();
      r->kick.reset();
      r->call.reset();
    }
    mem_.reset();
  }

 private:
  struct Ring {
    virtio::DeviceQueue q;
    virtio::QueueConfig cfg;
    FrontendFd kick, call;
  };
  uint32_t pairs_;
  bool refuse_start_;
  std::vector<std::unique_ptr<Ring>> rings_;  // DeviceQueue does not move
  std::shared_ptr<const memory::GuestMemory> mem_;
};

// One connection: our end (the front end) and the session on the other.
struct Conn {
  UniqueFd front;
  std::unique_ptr<Session> session;
  bool dead = false;
};

void connect(Conn& c, Backend& be) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) std::abort();
  c.front.reset(sv[0]);
  c.session = std::make_unique<Session>(UniqueFd(sv[1]), be, "fuzz");
  c.dead = false;
}

void hang_up(Conn& c) {
  c.session.reset();  // resets the back end
  c.front.reset();
  c.dead = true;
}

// Reads and checks whatever the session replied.
void drain_replies(Conn& c) {
  uint8_t buf[4096 + kHeaderSize];
  static std::vector<uint8_t> stream;
  for (;;) {
    ssize_t n = recv(c.front.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
    stream.insert(stream.end(), buf, buf + n);
  }
  while (stream.size() >= kHeaderSize) {
    Header h;
    std::memcpy(&h, stream.data(), kHeaderSize);
    FUZZ_CHECK(h.flags == (kVersion | kFlagReply));
    FUZZ_CHECK(request_info(h.request) != nullptr);
    FUZZ_CHECK(h.size <= 16);  // every reply is a u64 or a VringState
    if (stream.size() < kHeaderSize + h.size) break;
    stream.erase(stream.begin(), stream.begin() + long(kHeaderSize + h.size));
  }
  if (c.dead) stream.clear();
}

// Lets the session read everything there is to read.
void pump(Conn& c) {
  for (int guard = 0; guard < 1000 && !c.dead; ++guard) {
    pollfd p{c.session->fd(), POLLIN, 0};
    if (poll(&p, 1, 0) != 1) break;
    Status st = c.session->on_readable();
    drain_replies(c);
    if (!st) hang_up(c);
  }
}

bool send_part(int fd, const uint8_t* p, size_t len, const int* fds, size_t nfds) {
  iovec iov{const_cast<uint8_t*>(p), len};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFdsSent)] = {};
  if (nfds) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
  }
  return sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) == ssize_t(len);
}

void run(FuzzInput& in) {
  const uint8_t dev = in.u8();
  FuzzBackend be(1 + dev % 4, dev & 0x80);
  Conn c;
  connect(c, be);
  int records = 0;
  while (!in.empty() && records++ < 64) {
    if (c.dead) connect(c, be);
    const uint8_t ctl = in.u8();
    size_t nfds = std::min<size_t>(ctl & 0xf, kMaxFdsSent);
    std::vector<UniqueFd> fds;
    bool shrink = false;
    if (nfds) {
      const uint8_t spec = in.u8();
      const off_t mem_size = off_t(4096) << (spec & 7);
      std::vector<uint8_t> content(16u * ((spec >> 3) & 15));
      shrink = !(ctl & 0x80) && (spec & 0x80);
      in.bytes(content.data(), content.size());
      for (size_t i = 0; i < nfds; ++i) {
        if (ctl & 0x80) {
          fds.push_back(make_other_fd(spec >> 3));
        } else {
          fds.emplace_back(memfd_create(kMemfdName, MFD_CLOEXEC));
          if (fds.back().valid()) {
            if (ftruncate(fds.back().get(), mem_size) != 0) std::abort();
            if (!content.empty() && pwrite(fds.back().get(), content.data(), content.size(), 0) < 0)
              std::abort();
          }
        }
        if (!fds.back().valid()) std::abort();
      }
    }
    Header h;
    if (ctl & 0x20) {
      h.request = in.u32();
      h.flags = in.u32();
      h.size = in.u32();
    } else {
      h.request = in.u8();
      h.flags = in.u8();
      h.size = in.u16();
    }
    if (ctl & 0x40) h.flags |= kFlagNeedReply;
    const uint8_t split = (ctl & 0x10) ? in.u8() : 0;
    std::vector<uint8_t> msg(kHeaderSize);
    std::memcpy(msg.data(), &h, kHeaderSize);
    size_t got = 0;
    const uint8_t* payload = in.view(std::min<uint32_t>(h.size, kMaxPayload + 16), &got);
    msg.insert(msg.end(), payload, payload + got);

    std::vector<int> raw;
    for (auto& f : fds) raw.push_back(f.get());
    size_t cut = (ctl & 0x10) ? split % msg.size() : msg.size();
    if (cut == 0) cut = msg.size();
    bool ok = send_part(c.front.get(), msg.data(), cut, raw.data(), raw.size());
    if (ok) pump(c);
    // The front end shrinks the memory it just sent: the next access of the session's
    // rings (start, a new table) meets lost pages, which the FaultGuard absorbs.
    if (shrink)
      for (auto& f : fds)
        if (ftruncate(f.get(), 0) != 0) std::abort();
    fds.clear();  // in flight now (or refused): our copies go
    if (ok && !c.dead && cut < msg.size()) {
      send_part(c.front.get(), msg.data() + cut, msg.size() - cut, nullptr, 0);
      pump(c);
    }
    if (!c.dead && got < h.size) {
      // The input ended inside the payload: the front end hangs up mid-message.
      shutdown(c.front.get(), SHUT_WR);
      pump(c);
      if (!c.dead) hang_up(c);
    }
  }
  if (!c.dead) {
    shutdown(c.front.get(), SHUT_WR);  // an orderly close between messages
    pump(c);
    FUZZ_CHECK(c.dead);
  }
  hang_up(c);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  // The guard's notification eventfd lives as long as the process: made before any
  // input counts fds.
  memory::FaultGuard::install();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t fds_before = vnet::fuzz::count_open_fds();
  {
    FuzzInput in(data, size);
    run(in);
  }
  const size_t fds_after = vnet::fuzz::count_open_fds();
  if (fds_after != fds_before) {
    std::fprintf(stderr, "fd leak: %zu fds before the input, %zu after\n", fds_before, fds_after);
    FUZZ_CHECK(fds_after == fds_before);
  }
  FUZZ_CHECK(count_memfd_maps() == 0);
  return 0;
}
