// send_pending: writes what is left of an output buffer to a non-blocking socket, as far
// as the socket takes it. Shared by the control socket, the metrics endpoint and the
// capture streams, which each keep a buffer and an offset and wait for EPOLLOUT.
#pragma once

#include <sys/socket.h>

#include <cerrno>
#include <string>

namespace vnet {

enum class SendState {
  kDone,     // everything is written
  kBlocked,  // the socket is full: wait for EPOLLOUT
  kFailed,   // the peer is gone (or another error: errno says which)
};

// Sends out[off, size) with MSG_NOSIGNAL | MSG_DONTWAIT, advancing `off` past what was
// written; EINTR is retried.
inline SendState send_pending(int fd, const std::string& out, size_t& off) {
  while (off < out.size()) {
    const ssize_t n = send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return SendState::kBlocked;
    return SendState::kFailed;
  }
  return SendState::kDone;
}

}  // namespace vnet
