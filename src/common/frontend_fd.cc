// FrontendFd and Notifier: kind checks for front-end fds and non-blocking signalling.
#include "common/frontend_fd.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "common/log.h"

namespace vnet {

namespace {

// The target of /proc/self/fd/N ("anon_inode:[eventfd]", "pipe:[123]", "socket:[45]",
// a path), or "" when it cannot be read.
std::string fd_link(int fd) {
  char path[64], buf[256];
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  return std::string(buf, size_t(n));
}

bool is_eventfd(int fd) {
  return fd_link(fd) == "anon_inode:[eventfd]";
}

}  // namespace

std::string FrontendFd::describe(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return fmt::format("not an open fd ({})", strerror(errno));
  switch (st.st_mode & S_IFMT) {
    case S_IFREG:
      return "regular file";
    case S_IFDIR:
      return "directory";
    case S_IFCHR:
      return "character device";
    case S_IFBLK:
      return "block device";
    case S_IFIFO:
      return "pipe";
    case S_IFSOCK:
      return "socket";
    default:
      break;
  }
  std::string link = fd_link(fd);
  if (link.rfind("anon_inode:", 0) == 0) {
    std::string what = link.substr(11);
    if (what.size() > 2 && what.front() == '[' && what.back() == ']')
      what = what.substr(1, what.size() - 2);
    return what;  // eventfd, eventpoll, timerfd, signalfd, io_uring, ...
  }
  return link.empty() ? "unknown kind of file" : link;
}

Result<FrontendFd> FrontendFd::adopt(UniqueFd fd, FdKind kind) {
  if (!fd) return FrontendFd();
  bool ok = false;
  if (kind == FdKind::kEventFd) {
    ok = is_eventfd(fd.get());
  } else {
    struct stat st;
    ok = fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode);
  }
  if (!ok) {
    std::string what = describe(fd.get());
    const char* article =
        std::string_view("aeiou").find(what[0]) != std::string_view::npos ? "an" : "a";
    return Status::errorf("the fd is {} {}, not {}", article, what,
                          kind == FdKind::kEventFd ? "an eventfd" : "a memory file");
  }
  return FrontendFd(std::move(fd), kind);
}

Result<FrontendFd> FrontendFd::dup() const {
  if (!fd_) return FrontendFd();
  UniqueFd d(fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!d) return Status::errorf("dup: {}", strerror(errno));
  return FrontendFd(std::move(d), kind_);
}

Result<UniqueFd> FrontendFd::dup_for_handover() const {
  if (!fd_) return UniqueFd();
  UniqueFd d(fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!d) return Status::errorf("dup: {}", strerror(errno));
  return d;
}

bool FrontendFd::sealed_against_shrink() const {
  if (kind_ != FdKind::kMemory || !fd_) return false;
  int seals = fcntl(fd_.get(), F_GET_SEALS);
  return seals >= 0 && (seals & F_SEAL_SHRINK);
}

Notifier::Notifier() = default;

// The ring is made when an eventfd comes and goes with it: a multiqueue port holds a
// Notifier for each of its (up to 256) rings, most of which a front end never uses.
void Notifier::init_ring() {
  ring_tried_ = true;
  auto ring = std::make_unique<io_uring>();
  int r = io_uring_queue_init(2, ring.get(), 0);
  if (r == 0) {
    ring_ = std::move(ring);
    return;
  }
  static std::atomic<bool> logged{false};
  if (!logged.exchange(true))
    spdlog::warn(
        "io_uring unavailable ({}): front-end call fds are signalled with write(); a front end "
        "that saturates its eventfd and clears O_NONBLOCK can block a worker",
        strerror(-r));
}

Notifier::~Notifier() {
  if (ring_) io_uring_queue_exit(ring_.get());
}

Status Notifier::set(FrontendFd fd) {
  if (fd && fd.kind() != FdKind::kEventFd) return Status::error("a notifier needs an eventfd");
  if (ring_ && fd_) io_uring_unregister_eventfd(ring_.get());
  fd_ = std::move(fd);
  if (!fd_) {
    // No eventfd: no ring either (a session that ended leaves no fd of it behind).
    if (ring_) io_uring_queue_exit(ring_.get());
    ring_.reset();
    ring_tried_ = false;
    return Status::ok();
  }
  if (!ring_tried_) init_ring();
  if (ring_) {
    int r = io_uring_register_eventfd(ring_.get(), fd_.fd_.get());
    if (r < 0) {
      fd_.reset();
      return Status::errorf("registering the eventfd: {}", strerror(-r));
    }
    return Status::ok();
  }
  int fl = fcntl(fd_.fd_.get(), F_GETFL);
  if (fl < 0 || fcntl(fd_.fd_.get(), F_SETFL, fl | O_NONBLOCK) < 0) {
    Status st = Status::errorf("making the eventfd non-blocking: {}", strerror(errno));
    fd_.reset();
    return st;
  }
  return Status::ok();
}

void Notifier::signal() {
  if (!fd_) return;
  if (!ring_) {
    if (eventfd_write(fd_.fd_.get(), 1) != 0) failures_.add();
    return;
  }
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  if (!sqe) {  // (cannot happen: every submission is reaped below)
    failures_.add();
    return;
  }
  io_uring_prep_nop(sqe);
  if (io_uring_submit(ring_.get()) < 0) failures_.add();
  // A NOP completes inside the submission: reap it so the ring never fills.
  if (unsigned n = io_uring_cq_ready(ring_.get())) io_uring_cq_advance(ring_.get(), n);
}

}  // namespace vnet
