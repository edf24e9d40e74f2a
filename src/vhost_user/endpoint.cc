// Endpoint: listening / connecting Unix socket and the one Session on it.
#include "vhost_user/endpoint.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/log.h"
#include "memory/fault_guard.h"

namespace vnet::vhost_user {

namespace {

Result<sockaddr_un> make_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty()) return Status::error("empty vhost-user socket path");
  if (path.size() >= sizeof(a.sun_path))
    return Status::errorf("vhost-user socket path {} too long ({} bytes, at most {})", path,
                          path.size(), sizeof(a.sun_path) - 1);
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

// A Unix stream socket handed over (hot upgrade): listening (1), connected (0), or
// something else (-1).
int unix_stream_state(int fd) {
  int v = 0;
  socklen_t len = sizeof(v);
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) != 0 || v != AF_UNIX) return -1;
  len = sizeof(v);
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) != 0 || v != SOCK_STREAM) return -1;
  len = sizeof(v);
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0) return -1;
  if (v) return 1;
  sockaddr_un peer{};
  len = sizeof(peer);
  return ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 ? 0 : -1;
}

int connect_to(int fd, const sockaddr_un& a) {
  return ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a));
}

// The endpoints of each event loop that watches memory::FaultGuard::notify_fd(): one
// watch per loop (an fd can be added to an epoll set once), every endpoint asked.
struct FaultWatch {
  EventLoop* loop;
  std::vector<Endpoint*> endpoints;
};
std::mutex g_watch_mu;
std::vector<FaultWatch> g_watches;

void on_memory_fault(EventLoop* loop) {
  uint64_t v;
  [[maybe_unused]] ssize_t r = ::read(memory::FaultGuard::notify_fd(), &v, sizeof(v));
  std::vector<Endpoint*> eps;
  {
    std::lock_guard<std::mutex> lock(g_watch_mu);
    for (auto& w : g_watches)
      if (w.loop == loop) eps = w.endpoints;
  }
  for (Endpoint* ep : eps) ep->check_memory();
}

}  // namespace

Endpoint::Endpoint(EventLoop& loop, const EndpointConfig& cfg, Backend& backend)
    : loop_(loop), cfg_(cfg), backend_(backend), logs_(cfg.logs ? *cfg.logs : own_logs_) {}

void Endpoint::watch_faults(bool on) {
  std::lock_guard<std::mutex> lock(g_watch_mu);
  auto it = std::find_if(g_watches.begin(), g_watches.end(),
                         [&](const FaultWatch& w) { return w.loop == &loop_; });
  if (on) {
    if (it == g_watches.end()) {
      EventLoop* loop = &loop_;
      if (!loop_.add(memory::FaultGuard::notify_fd(), EPOLLIN,
                     [loop](uint32_t) { on_memory_fault(loop); }))
        spdlog::error("vhost-user {}: cannot watch for lost guest memory", cfg_.name);
      it = g_watches.insert(g_watches.end(), FaultWatch{&loop_, {}});
    }
    it->endpoints.push_back(this);
    return;
  }
  if (it == g_watches.end()) return;
  std::erase(it->endpoints, this);
  if (it->endpoints.empty()) {
    loop_.remove(memory::FaultGuard::notify_fd());
    g_watches.erase(it);
  }
}

void Endpoint::check_memory() {
  if (!session_) return;
  auto mem = session_->memory();
  const memory::MappedRegion* lost = mem ? mem->lost_region() : nullptr;
  if (!lost && !session_->log_lost()) return;
  counters_.memory_lost.add();
  if (lost)
    end_session(Status::errorf(
        "guest memory at gpa {:#x} (size {:#x}) lost its pages under vnetd: the front end shrank "
        "its memory file; the region reads as zeros until the session is gone",
        lost->desc().guest_phys_addr, lost->desc().memory_size));
  else
    end_session(Status::error(
        "the dirty log lost its pages under vnetd: the front end shrank its log file; "
        "marks went to zero pages, so the migration must not go on"));
}

Result<std::unique_ptr<Endpoint>> Endpoint::create(EventLoop& loop, const EndpointConfig& cfg,
                                                   Backend& backend) {
  auto addr = make_addr(cfg.path);
  if (!addr) return addr.status();
  std::unique_ptr<Endpoint> ep(new Endpoint(loop, cfg, backend));
  ep->watch_faults(true);
  if (cfg.client) {
    ep->start_connect();
  } else {
    Status st = ep->listen();
    if (!st) return st;
  }
  return Result<std::unique_ptr<Endpoint>>(std::move(ep));
}

Endpoint::~Endpoint() {
  watch_faults(false);
  if (timer_) loop_.cancel_timer(*timer_);
  if (connecting_fd_) loop_.remove(connecting_fd_.get());
  if (session_) {
    loop_.remove(session_->fd());
    session_.reset();  // backend.reset()
    counters_.disconnects.add();
  }
  if (listen_fd_) {
    loop_.remove(listen_fd_.get());
    listen_fd_.reset();
    // Unlink only the socket file we created, not one another process put there since.
    struct stat st;
    if (::stat(cfg_.path.c_str(), &st) == 0 && st.st_dev == sock_dev_ && st.st_ino == sock_ino_)
      ::unlink(cfg_.path.c_str());
  }
}

Status Endpoint::listen() {
  auto addr = make_addr(cfg_.path);
  if (!addr) return addr.status();
  const char* path = cfg_.path.c_str();
  struct stat st;
  if (::lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Status::errorf("{} exists and is not a socket", cfg_.path);
    // A socket file: stale if nobody listens on it (ECONNREFUSED), else in use.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!probe) return Status::errorf("socket: {}", strerror(errno));
    if (connect_to(probe.get(), *addr) == 0 || errno == EAGAIN)
      return Status::errorf("vhost-user socket {} is in use: another process listens on it",
                            cfg_.path);
    if (errno != ECONNREFUSED)
      return Status::errorf("vhost-user socket {} exists and cannot be checked: {}", cfg_.path,
                            strerror(errno));
    if (::unlink(path) != 0 && errno != ENOENT)
      return Status::errorf("cannot remove stale socket {}: {}", cfg_.path, strerror(errno));
    spdlog::info("vhost-user {}: removed stale socket {}", cfg_.name, cfg_.path);
  } else if (errno != ENOENT) {
    return Status::errorf("stat {}: {}", cfg_.path, strerror(errno));
  }

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return Status::errorf("socket: {}", strerror(errno));
  // Never more open than configured, not even for an instant (common/socket_perms.h).
  if (Status s = socket_perms_before_bind(fd.get(), cfg_.perms); !s) return s;
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0)
    return Status::errorf("bind {}: {}", cfg_.path, strerror(errno));
  if (::stat(path, &st) == 0) {
    sock_dev_ = st.st_dev;
    sock_ino_ = st.st_ino;
  }
  int raw = fd.get();
  listen_fd_ = std::move(fd);  // from here on the destructor unlinks the file
  if (Status s = socket_perms_after_bind(cfg_.path, cfg_.perms); !s) return s;
  if (::listen(raw, 8) != 0) return Status::errorf("listen {}: {}", cfg_.path, strerror(errno));
  return add_listener();
}

Status Endpoint::add_listener() {
  if (Status s = loop_.add(listen_fd_.get(), EPOLLIN, [this](uint32_t) { on_accept(); }); !s)
    return s;
  spdlog::info("vhost-user {}: listening on {}", cfg_.name, cfg_.path);
  return Status::ok();
}

// ---- hot upgrade ----

Status Endpoint::suspend(bool odd) {
  if (!session_) return Status::ok();
  if (session_->in_message())
    return Status::errorf("vhost-user {}: a message from the front end is half read", cfg_.name);
  session_->suspend(odd);
  return Status::ok();
}

void Endpoint::resume() {
  if (session_) session_->resume();
}

Result<Endpoint::Handover> Endpoint::save() const {
  Handover h;
  auto dup = [](int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); };
  if (listen_fd_) {
    h.listen = dup(listen_fd_.get());
    if (!h.listen) return Status::errorf("dup: {}", strerror(errno));
  }
  if (session_) {
    h.session = dup(session_->fd());
    if (!h.session) return Status::errorf("dup: {}", strerror(errno));
    auto st = session_->save();
    if (!st) return Status::errorf("vhost-user {}: {}", cfg_.name, st.message());
    h.state = std::move(*st);
  }
  return h;
}

void Endpoint::release() {
  // The sockets are the successor's now: never read them again, close our copies, and
  // leave the socket file (the destructor would unlink it).
  if (timer_) loop_.cancel_timer(*timer_);
  timer_.reset();
  if (connecting_fd_) loop_.remove(connecting_fd_.get());
  connecting_fd_.reset();
  if (session_) {
    loop_.remove(session_->fd());
    session_.reset();  // backend.reset(): the rings are stopped already
  }
  if (listen_fd_) loop_.remove(listen_fd_.get());
  listen_fd_.reset();
  sock_dev_ = 0;
  sock_ino_ = 0;
}

Result<std::unique_ptr<Endpoint>> Endpoint::adopt(EventLoop& loop, const EndpointConfig& cfg,
                                                  Backend& backend, UniqueFd listen,
                                                  UniqueFd session, std::vector<Message>& setup) {
  std::unique_ptr<Endpoint> ep(new Endpoint(loop, cfg, backend));
  ep->watch_faults(true);
  if (listen) {
    if (cfg.client) return Status::error("a listening socket for a client-mode port");
    if (unix_stream_state(listen.get()) != 1)
      return Status::error("the listening fd handed over is not a listening Unix socket");
    // The socket file stays the predecessor's (never unlinked here) until own().
    ep->listen_fd_ = std::move(listen);
    // Never block the loop on accept, whatever the fd came as.
    ::fcntl(ep->listen_fd_.get(), F_SETFL, ::fcntl(ep->listen_fd_.get(), F_GETFL) | O_NONBLOCK);
    if (Status s = ep->add_listener(); !s) return s;
  } else if (!cfg.client) {
    return Status::error("a server-mode port without its listening socket");
  }
  if (session) {
    if (unix_stream_state(session.get()) != 0)
      return Status::error("the session fd handed over is not a connected Unix stream socket");
    if (Status s = ep->start_session(std::move(session), true); !s) return s;
    if (Status s = ep->session_->restore(setup); !s)
      return Status::errorf("session state: {}", s.message());
  } else if (cfg.client) {
    ep->start_connect();
  }
  return Result<std::unique_ptr<Endpoint>>(std::move(ep));
}

void Endpoint::own() {
  struct stat st;
  if (listen_fd_ && ::stat(cfg_.path.c_str(), &st) == 0) {
    sock_dev_ = st.st_dev;
    sock_ino_ = st.st_ino;
  }
}

Status Endpoint::start_adopted(std::vector<Message>& start) {
  if (!session_) return Status::ok();
  if (Status s = session_->restore(start); !s)
    return Status::errorf("session state: {}", s.message());
  return Status::ok();
}

void Endpoint::on_accept() {
  for (;;) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        VNET_LOG_RL(logs_.ended, spdlog::level::warn, "vhost-user {}: accept on {}: {}", cfg_.name,
                    cfg_.path, strerror(errno));
      return;
    }
    UniqueFd sock(fd);
    if (session_) {
      // One front end at a time: the second one is closed at once.
      counters_.rejected.add();
      VNET_LOG_RL(logs_.ended, spdlog::level::warn,
                  "vhost-user {}: refused a second front end on {} (one is connected)", cfg_.name,
                  cfg_.path);
      continue;
    }
    Status st = start_session(std::move(sock));
    if (!st)
      VNET_LOG_RL(logs_.ended, spdlog::level::warn, "vhost-user {}: cannot start session: {}",
                  cfg_.name, st.message());
  }
}

Status Endpoint::start_session(UniqueFd sock, bool adopted) {
  int fd = sock.get();
  auto s = std::make_unique<Session>(std::move(sock), backend_, cfg_.name, &logs_);
  if (Status st = loop_.add(fd, EPOLLIN, [this](uint32_t) { on_session_event(); }); !st)
    return st;  // `s` goes: the socket is closed and the backend reset
  session_ = std::move(s);
  if (adopted) {
    spdlog::info("vhost-user {}: session on {} taken over", cfg_.name, cfg_.path);
    return Status::ok();
  }
  counters_.connections.add();
  VNET_LOG_RL(logs_.session, spdlog::level::info, "vhost-user {}: front end connected on {}",
              cfg_.name, cfg_.path);
  return Status::ok();
}

void Endpoint::on_session_event() {
  if (!session_) return;
  Status st = session_->on_readable();
  if (!st) end_session(st);  // nothing of the session is used after this
}

void Endpoint::end_session(const Status& why) {
  loop_.remove(session_->fd());
  bool closed = session_->peer_closed();
  counters_.bad_messages.add(session_->counters().bad_messages.get());
  counters_.bad_fds.add(session_->counters().bad_fds.get());
  session_.reset();  // ~Session: backend.reset(), socket closed
  counters_.disconnects.add();
  if (!closed) counters_.protocol_errors.add();
  if (closed)
    VNET_LOG_RL(logs_.session, spdlog::level::info, "vhost-user {}: front end disconnected",
                cfg_.name);
  else
    VNET_LOG_RL(logs_.ended, spdlog::level::warn, "vhost-user {}: session ended: {}", cfg_.name,
                why.message());
  if (cfg_.client) schedule_reconnect();
}

void Endpoint::start_connect() {
  timer_.reset();
  auto addr = make_addr(cfg_.path);
  if (!addr) return connect_failed(addr.message());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return connect_failed(std::string("socket: ") + strerror(errno));
  if (connect_to(fd.get(), *addr) == 0) {
    if (Status st = start_session(std::move(fd)); !st) return connect_failed(st.message());
    failure_logged_ = false;
    return;
  }
  if (errno == EINPROGRESS) {
    int raw = fd.get();
    connecting_fd_ = std::move(fd);
    if (Status st = loop_.add(raw, EPOLLOUT, [this](uint32_t) { on_connect_ready(); }); !st) {
      connecting_fd_.reset();
      return connect_failed(st.message());
    }
    return;
  }
  // ENOENT, ECONNREFUSED, EAGAIN (the front end's backlog is full), ...
  connect_failed(strerror(errno));
}

void Endpoint::on_connect_ready() {
  if (!connecting_fd_) return;
  pollfd p{connecting_fd_.get(), POLLOUT, 0};
  if (::poll(&p, 1, 0) <= 0) return;  // not ready yet (stale event)
  int err = 0;
  socklen_t len = sizeof(err);
  if (::getsockopt(connecting_fd_.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  loop_.remove(connecting_fd_.get());
  UniqueFd sock = std::move(connecting_fd_);
  if (err) return connect_failed(strerror(err));
  if (Status st = start_session(std::move(sock)); !st) return connect_failed(st.message());
  failure_logged_ = false;
}

void Endpoint::connect_failed(const std::string& why) {
  counters_.connect_failures.add();
  if (!failure_logged_) {  // the first failure of a series, not every retry
    spdlog::warn("vhost-user {}: cannot connect to {}: {}; retrying every {} ms", cfg_.name,
                 cfg_.path, why, cfg_.reconnect_interval.count());
    failure_logged_ = true;
  }
  schedule_reconnect();
}

void Endpoint::schedule_reconnect() {
  if (timer_) return;
  timer_ = loop_.add_timer(cfg_.reconnect_interval, [this] {
    timer_.reset();
    start_connect();
  });
}

}  // namespace vnet::vhost_user
