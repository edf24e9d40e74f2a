// vhost-user message codec: validation table, incremental reader with SCM_RIGHTS,
// sender. Section names refer to docs/interop/vhost-user.rst (qemu/qemu).
#include "vhost_user/message.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>

namespace vnet::vhost_user {

namespace {

constexpr uint32_t kU64 = sizeof(uint64_t);
constexpr uint32_t kState = sizeof(VringState);
constexpr uint32_t kMemTableMin = sizeof(MemoryTableHeader) + sizeof(MemoryRegion);
constexpr uint32_t kMemTableMax = sizeof(MemoryTableHeader) + kMaxMemRegions * sizeof(MemoryRegion);
constexpr uint32_t kConfigHdr = 12;  // offset, size, flags ("Virtio device config space")
constexpr uint32_t kConfigMax = kConfigHdr + 256;

// The validation table, indexed by request code ("Front-end message types": the
// "request payload", "reply payload" and ancillary data of each). Requests vnet
// never offers the feature for still get their sizes checked; the session then
// refuses them.
constexpr RequestInfo kTable[] = {
    /* 0 */ {"NONE", 0, 0, 0, 0, false},
    /* 1 */ {"GET_FEATURES", 0, 0, 0, 0, true},
    /* 2 */ {"SET_FEATURES", kU64, kU64, 0, 0, false},
    /* 3 */ {"SET_OWNER", 0, 0, 0, 0, false},
    /* 4 */ {"RESET_OWNER", 0, 0, 0, 0, false},
    /* 5 */ {"SET_MEM_TABLE", kMemTableMin, kMemTableMax, 1, kMaxFds, false},
    /* 6 */ {"SET_LOG_BASE", 2 * kU64, 2 * kU64, 1, 1, true},
    /* 7 */ {"SET_LOG_FD", 0, 0, 1, 1, false},
    /* 8 */ {"SET_VRING_NUM", kState, kState, 0, 0, false},
    /* 9 */ {"SET_VRING_ADDR", sizeof(VringAddr), sizeof(VringAddr), 0, 0, false},
    /* 10 */ {"SET_VRING_BASE", kState, kState, 0, 0, false},
    /* 11 */ {"GET_VRING_BASE", kState, kState, 0, 0, true},
    /* 12 */ {"SET_VRING_KICK", kU64, kU64, 0, 1, false},
    /* 13 */ {"SET_VRING_CALL", kU64, kU64, 0, 1, false},
    /* 14 */ {"SET_VRING_ERR", kU64, kU64, 0, 1, false},
    /* 15 */ {"GET_PROTOCOL_FEATURES", 0, 0, 0, 0, true},
    /* 16 */ {"SET_PROTOCOL_FEATURES", kU64, kU64, 0, 0, false},
    /* 17 */ {"GET_QUEUE_NUM", 0, 0, 0, 0, true},
    /* 18 */ {"SET_VRING_ENABLE", kState, kState, 0, 0, false},
    /* 19 */ {"SEND_RARP", kU64, kU64, 0, 0, false},
    /* 20 */ {"NET_SET_MTU", kU64, kU64, 0, 0, false},
    /* 21 */ {"SET_BACKEND_REQ_FD", 0, 0, 1, 1, false},
    /* 22 */ {"IOTLB_MSG", 0, kMaxPayload, 0, 0, false},
    /* 23 */ {"SET_VRING_ENDIAN", kState, kState, 0, 0, false},
    /* 24 */ {"GET_CONFIG", kConfigHdr, kConfigMax, 0, 0, true},
    /* 25 */ {"SET_CONFIG", kConfigHdr, kConfigMax, 0, 0, false},
    /* 26 */ {"CREATE_CRYPTO_SESSION", 0, kMaxPayload, 0, 0, true},
    /* 27 */ {"CLOSE_CRYPTO_SESSION", kU64, kU64, 0, 0, false},
    /* 28 */ {"POSTCOPY_ADVISE", 0, 0, 0, 0, true},
    /* 29 */ {"POSTCOPY_LISTEN", 0, 0, 0, 0, false},
    /* 30 */ {"POSTCOPY_END", 0, 0, 0, 0, true},
    /* 31 */ {"GET_INFLIGHT_FD", 0, kMaxPayload, 0, 0, true},
    /* 32 */ {"SET_INFLIGHT_FD", 0, kMaxPayload, 1, 1, false},
    /* 33 */ {"GPU_SET_SOCKET", 0, 0, 1, 1, false},
    /* 34 */ {"RESET_DEVICE", 0, 0, 0, 0, false},
    /* 35 */ {"VRING_KICK", kState, kState, 0, 0, false},
    /* 36 */ {"GET_MAX_MEM_SLOTS", 0, 0, 0, 0, true},
    /* 37 */ {"ADD_MEM_REG", sizeof(SingleMemoryRegion), sizeof(SingleMemoryRegion), 1, 1, false},
    // REM_MEM_REG: "No file descriptors SHOULD be passed ... the back-end MAY accept
    // messages with one file descriptor ... MUST close it" (QEMU sends one).
    /* 38 */ {"REM_MEM_REG", sizeof(SingleMemoryRegion), sizeof(SingleMemoryRegion), 0, 1, false},
    /* 39 */ {"SET_STATUS", kU64, kU64, 0, 0, false},
    /* 40 */ {"GET_STATUS", 0, 0, 0, 0, true},
};
constexpr uint32_t kTableSize = sizeof(kTable) / sizeof(kTable[0]);

// Timeout for a send that finds the socket buffer full (replies are a few bytes;
// a peer that never reads its replies is broken).
constexpr int kSendTimeoutMs = 1000;

}  // namespace

const RequestInfo* request_info(uint32_t code) {
  if (code == 0 || code >= kTableSize) return nullptr;
  return &kTable[code];
}

const char* request_name(uint32_t code) {
  const RequestInfo* info = request_info(code);
  return info ? info->name : "UNKNOWN";
}

Status validate(const Message& m) {
  const RequestInfo* info = request_info(m.hdr.request);
  if (!info) return Status::errorf("unknown request code {}", m.hdr.request);
  // "Header": version in bits 0-1 must be 0x1; a request never carries the reply bit.
  if ((m.hdr.flags & kFlagVersionMask) != kVersion)
    return Status::errorf("{}: unsupported version in flags {:#x}", info->name, m.hdr.flags);
  if (m.hdr.flags & kFlagReply)
    return Status::errorf("{}: request with the reply flag set", info->name);
  if (m.payload.size() != m.hdr.size)
    return Status::errorf("{}: payload is {} bytes, header says {}", info->name, m.payload.size(),
                          m.hdr.size);
  if (m.hdr.size < info->min_size || m.hdr.size > info->max_size) {
    if (info->min_size == info->max_size)
      return Status::errorf("{}: payload size {}, expected {}", info->name, m.hdr.size,
                            info->min_size);
    return Status::errorf("{}: payload size {}, expected {}..{}", info->name, m.hdr.size,
                          info->min_size, info->max_size);
  }
  size_t nfds = m.fds.size();
  if (nfds < info->min_fds || nfds > info->max_fds) {
    if (info->min_fds == info->max_fds)
      return Status::errorf("{}: {} file descriptors, expected {}", info->name, nfds,
                            info->min_fds);
    return Status::errorf("{}: {} file descriptors, expected {}..{}", info->name, nfds,
                          info->min_fds, info->max_fds);
  }
  switch (m.request()) {
    case Request::SET_MEM_TABLE: {
      // "Multiple Memory regions description": nregions regions follow, one fd each.
      auto th = m.as<MemoryTableHeader>();
      if (th.nregions == 0 || th.nregions > kMaxMemRegions)
        return Status::errorf("SET_MEM_TABLE: {} regions, expected 1..{}", th.nregions,
                              kMaxMemRegions);
      if (m.hdr.size != sizeof(MemoryTableHeader) + th.nregions * sizeof(MemoryRegion))
        return Status::errorf("SET_MEM_TABLE: payload size {} does not match {} regions",
                              m.hdr.size, th.nregions);
      if (nfds != th.nregions)
        return Status::errorf("SET_MEM_TABLE: {} file descriptors for {} regions", nfds,
                              th.nregions);
      break;
    }
    case Request::SET_VRING_KICK:
    case Request::SET_VRING_CALL:
    case Request::SET_VRING_ERR: {
      // "A vring descriptor index for split virtqueues": bits 0-7 index, bit 8 set
      // when no fd is passed; the other bits are reserved.
      uint64_t v = m.u64();
      if (v & ~(kVringIndexMask | kVringNoFdFlag))
        return Status::errorf("{}: reserved bits set in {:#x}", info->name, v);
      bool nofd = v & kVringNoFdFlag;
      if (nofd && nfds != 0)
        return Status::errorf("{}: invalid-FD flag set but a file descriptor was passed",
                              info->name);
      if (!nofd && nfds != 1)
        return Status::errorf("{}: no file descriptor and no invalid-FD flag", info->name);
      break;
    }
    default:
      break;
  }
  return Status::ok();
}

void MessageReader::clear() {
  got_ = 0;
  msg_ = Message{};  // closes every fd received so far
}

Result<MessageReader::Outcome> MessageReader::read(int fd, Message& out) {
  for (;;) {
    uint8_t* dst;
    size_t want;
    if (got_ < kHeaderSize) {
      dst = hdr_buf_ + got_;
      want = kHeaderSize - got_;
    } else {
      size_t p = got_ - kHeaderSize;
      dst = msg_.payload.data() + p;
      want = msg_.hdr.size - p;
    }
    iovec iov{dst, want};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof(cbuf);
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Outcome::kNone;
      Status st = Status::errorf("recvmsg: {}", strerror(errno));
      clear();
      return st;
    }
    // Every fd goes into a UniqueFd before anything else is looked at.
    size_t too_many = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        msg_.fds.emplace_back(received);
      }
    }
    if (msg_.fds.size() > kMaxFds) too_many = msg_.fds.size();
    if (mh.msg_flags & MSG_CTRUNC) {
      clear();
      return Status::errorf("ancillary data truncated (more than {} file descriptors?)", kMaxFds);
    }
    if (too_many) {
      clear();
      return Status::errorf("{} file descriptors with one message, at most {}", too_many, kMaxFds);
    }
    if (n == 0) {
      bool mid = got_ > 0 || !msg_.fds.empty();
      size_t had = got_;
      clear();
      if (!mid) return Outcome::kClosed;
      return Status::errorf("peer closed the connection after {} bytes of a message ({})", had,
                            had < kHeaderSize ? "truncated header" : "truncated payload");
    }
    bool header_done_now = got_ < kHeaderSize && got_ + size_t(n) >= kHeaderSize;
    got_ += size_t(n);
    if (header_done_now) {
      std::memcpy(&msg_.hdr, hdr_buf_, kHeaderSize);
      const RequestInfo* info = request_info(msg_.hdr.request);
      if (!info) {
        uint32_t code = msg_.hdr.request;
        clear();
        return Status::errorf("unknown request code {}", code);
      }
      if ((msg_.hdr.flags & kFlagVersionMask) != kVersion) {
        uint32_t flags = msg_.hdr.flags;
        clear();
        return Status::errorf("{}: unsupported protocol version in flags {:#x}", info->name, flags);
      }
      // The size is checked before any payload is read: nothing unbounded is read.
      if (msg_.hdr.size > kMaxPayload) {
        uint32_t size = msg_.hdr.size;
        clear();
        return Status::errorf("{}: payload size {} exceeds the maximum {}", info->name, size,
                              kMaxPayload);
      }
      msg_.payload.resize(msg_.hdr.size);
    }
    if (got_ >= kHeaderSize && got_ == kHeaderSize + msg_.hdr.size) {
      out = std::move(msg_);
      msg_ = Message{};
      got_ = 0;
      return Outcome::kMessage;
    }
  }
}

Status send_message(int fd, const Header& hdr, const void* payload, const int* fds, size_t nfds) {
  if (nfds > kMaxFds) return Status::errorf("cannot send {} file descriptors", nfds);
  if (hdr.size > kMaxPayload) return Status::errorf("payload of {} bytes too large", hdr.size);
  // One buffer so that a partial send can resume anywhere.
  uint8_t buf[kHeaderSize + kMaxPayload];
  std::memcpy(buf, &hdr, kHeaderSize);
  if (hdr.size) std::memcpy(buf + kHeaderSize, payload, hdr.size);
  size_t total = kHeaderSize + hdr.size, sent = 0;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kSendTimeoutMs);
  while (sent < total) {
    iovec iov{buf + sent, total - sent};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (sent == 0 && nfds > 0) {
      mh.msg_control = cbuf;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now())
                        .count();
        if (left <= 0) return Status::error("sendmsg: peer does not read (socket buffer full)");
        pollfd p{fd, POLLOUT, 0};
        poll(&p, 1, int(left));
        continue;
      }
      return Status::errorf("sendmsg: {}", strerror(errno));
    }
    sent += size_t(n);
  }
  return Status::ok();
}

Status send_request(int fd, Request req, const void* payload, uint32_t size,
                    const std::vector<int>& fds, uint32_t extra_flags) {
  Header h{static_cast<uint32_t>(req), kVersion | extra_flags, size};
  return send_message(fd, h, payload, fds.data(), fds.size());
}

Status send_reply(int fd, uint32_t request, const void* payload, uint32_t size) {
  Header h{request, kVersion | kFlagReply, size};
  return send_message(fd, h, payload);
}

Result<Message> recv_message_blocking(int fd, int timeout_ms) {
  MessageReader reader;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    Message m;
    auto r = reader.read(fd, m);
    if (!r) return r.status();
    if (*r == MessageReader::Outcome::kMessage) return m;
    if (*r == MessageReader::Outcome::kClosed) return Status::error("connection closed");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return Status::error("timed out waiting for a message");
    pollfd p{fd, POLLIN, 0};
    poll(&p, 1, int(left));
  }
}

}  // namespace vnet::vhost_user
