// FrontendFd: the one door to a file descriptor that came from a front end (vhost-user
// SCM_RIGHTS), as GuestMemory is the one door to guest bytes. A front end keeps its own
// copy of every fd it sends and shares the open file description with vnetd: at any
// moment it can read or write the file, set or clear O_NONBLOCK, saturate a counter,
// or close its end. So the kind is checked once, when the fd arrives, and from then on
// the fd is used only in ways that cannot block or spin whatever the front end does,
// and vnetd never changes the file's flags (they are the front end's too):
//   kEventFd (kick, call, err): must be an eventfd. Watched for kicks edge-triggered
//     (EPOLLIN | EPOLLET) and never read: every write is one event, a counter the
//     front end drains cannot block a read, and a counter left non-zero is not
//     reported again. Signalled (call, err) only through Notifier below.
//   kMemory (memory regions): must be a regular file (memfd, tmpfs, hugetlbfs, a
//     shared file). Only fstat, F_GET_SEALS and mmap; what a shrinking file does to the
//     mapping is memory/fault_guard.h's business.
// Anything else (pipe, socket, device, directory, epoll or timer fd) is refused with a
// reason naming what the fd is; the session that sent it is closed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/counter.h"
#include "common/result.h"
#include "common/unique_fd.h"

struct io_uring;

namespace vnet {

enum class FdKind : uint8_t { kEventFd, kMemory };

class FrontendFd {
 public:
  FrontendFd() = default;
  // Takes `fd` if it is of `kind`; otherwise closes it and says what it is instead.
  // An invalid `fd` gives an invalid FrontendFd (the message had none).
  static Result<FrontendFd> adopt(UniqueFd fd, FdKind kind);
  // What the fd is, for messages ("eventfd", "pipe", "socket", "regular file", ...).
  static std::string describe(int fd);

  bool valid() const { return fd_.valid(); }
  explicit operator bool() const { return valid(); }
  FdKind kind() const { return kind_; }
  // Another descriptor of the same file, already checked (F_DUPFD_CLOEXEC).
  Result<FrontendFd> dup() const;
  // A plain descriptor of the same file, to hand to another vnetd (hot upgrade), which
  // checks it again when it adopts it.
  Result<UniqueFd> dup_for_handover() const;
  void reset() { fd_.reset(); }

  // kEventFd: the fd to register with epoll, with EPOLLIN | EPOLLET only. Never read it.
  int watch_fd() const { return kind_ == FdKind::kEventFd ? fd_.get() : -1; }
  // kMemory: the fd to fstat and mmap.
  int map_fd() const { return kind_ == FdKind::kMemory ? fd_.get() : -1; }
  // kMemory: the file is sealed against shrinking (F_SEAL_SHRINK), e.g. QEMU's memfds.
  bool sealed_against_shrink() const;

 private:
  friend class Notifier;
  FrontendFd(UniqueFd fd, FdKind kind) : fd_(std::move(fd)), kind_(kind) {}
  UniqueFd fd_;
  FdKind kind_ = FdKind::kEventFd;
};

// Notifier: signals a front end's eventfd (a call or err fd) without ever blocking. A
// write() to an eventfd blocks when its counter is at its maximum, and the front end
// can put it there and clear O_NONBLOCK at any time. So the eventfd is registered with
// a small io_uring of our own (IORING_REGISTER_EVENTFD) and signal() submits a NOP:
// the kernel signals the registered eventfd for the completion with eventfd_signal(),
// which saturates instead of blocking. One system call per signal, as write() was.
// Where io_uring is not available the fallback is write() on the fd made non-blocking
// when it was set (QEMU and DPDK create theirs with EFD_NONBLOCK already), which a
// front end that clears O_NONBLOCK again can still block: logged once at start-up.
// One thread at a time calls set() and signal() (the queue's owner).
class Notifier {
 public:
  Notifier();
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Replaces the eventfd (an invalid one: signal() does nothing).
  Status set(FrontendFd fd);
  bool armed() const { return fd_.valid(); }
  // Signals the eventfd once. Never blocks; failures are counted.
  void signal();
  uint64_t failures() const { return failures_.get(); }
  // Whether signals go through io_uring (false: the write() fallback, or no eventfd
  // was ever set).
  bool uses_uring() const { return ring_ != nullptr; }

 private:
  void init_ring();
  std::unique_ptr<io_uring> ring_;
  bool ring_tried_ = false;
  FrontendFd fd_;
  Counter failures_;  // written by the owner, read by anyone
};

}  // namespace vnet
