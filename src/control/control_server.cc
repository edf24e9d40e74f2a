// ControlServer: the control socket (creation, stale-socket handling, permissions) and
// the per-client line protocol (framing, limits, buffered nonblocking replies).
#include "control/control_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/send_pending.h"

namespace vnet::control {

using nlohmann::json;

namespace {

constexpr mode_t kDirMode = 0755;
constexpr int kListenBacklog = 64;
constexpr int kAcceptsPerEvent = 64;
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

RateLimit g_accept_log;
RateLimit g_client_log;
RateLimit g_request_log;
RateLimit g_evict_log;
RateLimit g_timeout_log;

json error_reply(const std::string& why) {
  return json{{"ok", false}, {"error", why}};
}

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return Status::error("control socket path is empty");
  if (path.size() >= sizeof(addr.sun_path))
    return Status::errorf("control socket path is too long ({} bytes, at most {}): {}", path.size(),
                          sizeof(addr.sun_path) - 1, path);
  memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// Creates the missing directories leading to `path`, each with mode 0755.
Status make_parent_dirs(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return Status::ok();
  std::filesystem::path cur;
  for (const auto& part : parent) {
    cur /= part;
    struct stat st;
    if (stat(cur.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode))
        return Status::errorf("control socket directory {}: not a directory", cur.string());
      continue;
    }
    if (errno != ENOENT)
      return Status::errorf("control socket directory {}: {}", cur.string(), strerror(errno));
    if (mkdir(cur.c_str(), kDirMode) != 0) {
      if (errno == EEXIST) continue;  // made by someone else meanwhile
      return Status::errorf("cannot create directory {}: {}", cur.string(), strerror(errno));
    }
    if (chmod(cur.c_str(), kDirMode) != 0)  // exactly 0755 whatever the umask
      return Status::errorf("chmod {}: {}", cur.string(), strerror(errno));
    spdlog::info("control: created directory {}", cur.string());
  }
  return Status::ok();
}

// An existing file at `path` is fine only if it is a socket nobody listens on (left
// behind by a daemon that died); that one is removed.
Status clear_stale_socket(const std::string& path, const sockaddr_un& addr) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::ok();
    return Status::errorf("control socket {}: {}", path, strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode))
    return Status::errorf("control socket path {} exists and is not a socket; not replacing it",
                          path);
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe) return Status::errorf("socket: {}", strerror(errno));
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 ||
      errno == EAGAIN || errno == EINPROGRESS)  // EAGAIN: listening, backlog full
    return Status::errorf("another vnetd is listening on {}", path);
  if (errno != ECONNREFUSED)
    return Status::errorf("cannot check existing control socket {}: {}", path, strerror(errno));
  if (unlink(path.c_str()) != 0 && errno != ENOENT)
    return Status::errorf("cannot remove stale control socket {}: {}", path, strerror(errno));
  spdlog::info("control: removed stale socket {}", path);
  return Status::ok();
}

}  // namespace

Result<std::unique_ptr<ControlServer>> ControlServer::create(EventLoop& loop,
                                                             const std::string& path,
                                                             Handler handler,
                                                             ControlServerLimits limits) {
  std::unique_ptr<ControlServer> server(new ControlServer(loop, path, std::move(handler), limits));
  Status st = server->listen_on_path();
  if (!st) return st;  // the destructor undoes what was done
  return server;
}

Result<std::unique_ptr<ControlServer>> ControlServer::adopt(EventLoop& loop,
                                                            const std::string& path,
                                                            UniqueFd listen, Handler handler,
                                                            ControlServerLimits limits) {
  std::unique_ptr<ControlServer> server(new ControlServer(loop, path, std::move(handler), limits));
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(listen.get(), SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0 || v != 1)
    return Status::error("the control fd handed over is not a listening socket");
  struct stat sst;
  if (stat(path.c_str(), &sst) != 0) return Status::errorf("stat {}: {}", path, strerror(errno));
  server->sock_dev_ = sst.st_dev;
  server->sock_ino_ = sst.st_ino;
  server->listen_fd_ = std::move(listen);
  // Never block the loop on accept, whatever the fd came as.
  ::fcntl(server->listen_fd_.get(), F_SETFL,
          ::fcntl(server->listen_fd_.get(), F_GETFL) | O_NONBLOCK);
  Status st = loop.add(server->listen_fd_.get(), EPOLLIN,
                       [s = server.get()](uint32_t ev) { s->on_listen(ev); });
  if (!st) return st;
  server->listening_registered_ = true;
  // bound_ stays false until the hand-over is final (Daemon sets it through release's
  // opposite, own()); a successor that fails must not unlink its predecessor's file.
  return server;
}

void ControlServer::own() {
  bound_ = true;
}

void ControlServer::release() {
  bound_ = false;
  if (listening_registered_) loop_.remove(listen_fd_.get());
  listening_registered_ = false;
  listen_fd_.reset();
}

ControlServer::ControlServer(EventLoop& loop, std::string path, Handler handler,
                             ControlServerLimits limits)
    : loop_(loop), path_(std::move(path)), handler_(std::move(handler)), limits_(limits) {}

ControlServer::~ControlServer() {
  if (accept_retry_timer_) loop_.cancel_timer(*accept_retry_timer_);
  if (sweep_timer_) loop_.cancel_timer(*sweep_timer_);
  if (more_timer_) loop_.cancel_timer(*more_timer_);
  for (auto& [fd, c] : clients_) loop_.remove(fd);
  clients_.clear();
  if (bound_) {
    // Remove the file only if it is still ours: a successor may have replaced it.
    struct stat st;
    if (lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == sock_dev_ &&
        st.st_ino == sock_ino_)
      unlink(path_.c_str());
  }
  if (listening_registered_) loop_.remove(listen_fd_.get());
  listen_fd_.reset();
}

Status ControlServer::listen_on_path() {
  auto addr = unix_address(path_);
  if (!addr) return addr.status();
  Status st = make_parent_dirs(path_);
  if (!st) return st;
  st = clear_stale_socket(path_, *addr);
  if (!st) return st;

  listen_fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_) return Status::errorf("socket: {}", strerror(errno));
  // Never more open than configured, not even for an instant (common/socket_perms.h).
  st = socket_perms_before_bind(listen_fd_.get(), limits_.perms);
  if (!st) return st;
  if (bind(listen_fd_.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0) {
    if (errno == EADDRINUSE)
      return Status::errorf("control socket {} appeared while vnetd was starting", path_);
    return Status::errorf("bind {}: {}", path_, strerror(errno));
  }
  struct stat sst;
  if (stat(path_.c_str(), &sst) != 0) return Status::errorf("stat {}: {}", path_, strerror(errno));
  sock_dev_ = sst.st_dev;
  sock_ino_ = sst.st_ino;
  bound_ = true;
  st = socket_perms_after_bind(path_, limits_.perms);
  if (!st) return st;
  if (listen(listen_fd_.get(), kListenBacklog) != 0)
    return Status::errorf("listen {}: {}", path_, strerror(errno));
  st = loop_.add(listen_fd_.get(), EPOLLIN, [this](uint32_t ev) { on_listen(ev); });
  if (!st) return st;
  listening_registered_ = true;
  return Status::ok();
}

void ControlServer::on_listen(uint32_t) {
  for (int i = 0; i < kAcceptsPerEvent; ++i) {
    UniqueFd fd(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED) continue;
      VNET_LOG_RL(g_accept_log, spdlog::level::warn, "control: accept on {}: {}", path_,
                  strerror(err));
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // Out of descriptors or memory: the pending connection would wake us at once
        // again. Stop watching the socket for a moment instead of spinning.
        if (!accept_retry_timer_ && loop_.modify(listen_fd_.get(), 0)) {
          accept_retry_timer_ = loop_.add_timer(kAcceptRetry, [this] {
            accept_retry_timer_.reset();
            (void)loop_.modify(listen_fd_.get(), EPOLLIN);
          });
        }
      }
      return;
    }
    if (clients_.size() >= limits_.max_clients && limits_.max_clients > 0) evict_one();
    if (clients_.size() >= limits_.max_clients) {
      counters_.rejected.add();
      VNET_LOG_RL(g_accept_log, spdlog::level::warn,
                  "control: {} clients already connected, closing a new connection",
                  clients_.size());
      static const std::string busy =
          error_reply("too many control clients, try again later").dump() + "\n";
      (void)!send(fd.get(), busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      continue;  // `fd` closes here
    }
    int raw = fd.get();
    auto c = std::make_unique<Client>();
    c->fd = std::move(fd);
    c->events = EPOLLIN;
    c->active = c->seen = std::chrono::steady_clock::now();
    Status st = loop_.add(raw, EPOLLIN, [this, raw](uint32_t ev) { on_client(raw, ev); });
    if (!st) {
      VNET_LOG_RL(g_accept_log, spdlog::level::warn, "control: {}", st.message());
      continue;
    }
    clients_.emplace(raw, std::move(c));
    counters_.accepted.add();
    arm_sweep();
    spdlog::debug("control: client fd {} connected ({} now)", raw, clients_.size());
  }
}

void ControlServer::on_client(int fd, uint32_t events) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  // Events are hints: whatever they say, only the results of send and recv decide.
  if (c.reply_pending() && !flush_client(c)) return;
  if (c.reply_pending()) {  // still blocked: wait for EPOLLOUT
    update_events(c);
    return;
  }
  // Lines that arrived while a reply was pending (or in an earlier turn) come before new
  // input.
  if (!process_lines(c)) return;
  if (!c.reply_pending() && !c.more && !c.eof && !c.closing &&
      (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
    if (!read_client(c)) return;
    if (!process_lines(c)) return;
  }
  if (c.more && !c.reply_pending()) schedule_more(fd);
  update_events(c);
}

bool ControlServer::read_client(Client& c) {
  size_t old = c.in.size();
  c.in.resize(old + limits_.read_chunk);
  ssize_t n = recv(c.fd.get(), c.in.data() + old, limits_.read_chunk, MSG_DONTWAIT);
  c.in.resize(old + (n > 0 ? size_t(n) : 0));
  if (n > 0) {
    c.seen = std::chrono::steady_clock::now();
    if (old == 0) c.started = c.seen;  // a new partial line
    return true;
  }
  if (n == 0) {
    c.eof = true;  // answer what is complete, then close
    return true;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return true;
  spdlog::debug("control: client fd {}: recv: {}", c.fd.get(), strerror(errno));
  close_client(c.fd.get());
  return false;
}

bool ControlServer::process_lines(Client& c) {
  c.more = false;
  size_t handled = 0;
  while (!c.closing && !c.reply_pending() && !c.handoff) {
    if (handled == limits_.lines_per_turn) {
      c.more = true;  // the rest in a later turn
      break;
    }
    size_t from = std::max(c.scanned, c.in_off);
    size_t nl = c.in.find('\n', from);
    size_t end = nl == std::string::npos ? c.in.size() : nl;
    if (end - c.in_off > limits_.max_request) {
      counters_.too_long.add();
      VNET_LOG_RL(g_client_log, spdlog::level::warn,
                  "control: request longer than {} bytes, closing the client", limits_.max_request);
      queue_reply(c, error_reply("request too long"));
      c.closing = true;
      break;
    }
    if (nl == std::string::npos) {
      c.scanned = c.in.size();
      if (!c.eof) break;
      // The client closed its side after a last line without a newline: answer it.
      end = c.in.size();
      c.closing = true;
    }
    std::string_view line(c.in.data() + c.in_off, end - c.in_off);
    c.in_off = nl == std::string::npos ? end : nl + 1;
    ++handled;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
    handoff_ = nullptr;
    queue_reply(c, handle_line(line));
    c.handoff = std::move(handoff_);
    handoff_ = nullptr;
    // Usually written at once, and the next line follows; if not, it waits for EPOLLOUT.
    if (!flush_client(c)) return false;
  }
  // Drop handled bytes once per batch (not per line: many small lines stay linear).
  if (c.in_off > 0) {
    // What is left is a partial line that came with the lines just handled.
    if (c.in_off < c.in.size()) c.started = std::chrono::steady_clock::now();
    c.in.erase(0, c.in_off);
    c.scanned = c.scanned > c.in_off ? c.scanned - c.in_off : 0;
    c.in_off = 0;
  }
  if (c.closing) c.in.clear();
  if (c.reply_pending() && !flush_client(c)) return false;  // "request too long"
  if ((c.closing || (c.eof && c.in.empty())) && !c.reply_pending()) {
    close_client(c.fd.get());
    return false;
  }
  return true;
}

json ControlServer::handle_line(std::string_view line) {
  counters_.requests.add();
  ParsedRequest req = parse_request(line, limits_.max_depth);
  if (!req.ok()) {
    (req.error == ParsedRequest::Error::kTooDeep ? counters_.too_deep : counters_.bad_json).add();
    VNET_LOG_RL(g_request_log, spdlog::level::warn, "control: refused a request of {} bytes: {}",
                line.size(), req.message);
    return error_reply(req.message);
  }
  // Whatever a handler throws becomes an error reply on this connection.
  const char* what = nullptr;
  std::string why;
  try {
    return handler_(req.value);
  } catch (const json::exception& e) {  // a field of the wrong type (type_error, ...)
    counters_.bad_requests.add();
    why = "bad request: " + json_error_text(e.what());
    what = "refused";
  } catch (const std::exception& e) {
    counters_.handler_failures.add();
    why = "internal error: " + json_error_text(e.what());
    what = "failed";
  } catch (...) {
    counters_.handler_failures.add();
    why = "internal error";
    what = "failed";
  }
  VNET_LOG_RL(g_request_log, spdlog::level::warn, "control: request {} {}: {}",
              short_form(req.value), what, why);
  return error_reply(why);
}

void ControlServer::queue_reply(Client& c, const json& reply) {
  if (reply.is_object() && reply.contains("ok") && reply["ok"] == false)
    counters_.error_replies.add();
  std::string s = reply.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > limits_.max_reply) {
    counters_.error_replies.add();
    VNET_LOG_RL(g_client_log, spdlog::level::warn, "control: reply of {} bytes not sent", s.size());
    s = error_reply(
            fmt::format("reply too large ({} bytes, at most {})", s.size(), limits_.max_reply))
            .dump();
  }
  if (c.out_off == c.out.size()) {
    c.out.clear();
    c.out_off = 0;
    c.progress = std::chrono::steady_clock::now();
  }
  c.active = c.progress;
  c.out += s;
  c.out += '\n';
}

bool ControlServer::flush_client(Client& c) {
  const size_t before = c.out_off;
  const SendState sent = send_pending(c.fd.get(), c.out, c.out_off);
  if (c.out_off != before) c.progress = c.seen = std::chrono::steady_clock::now();
  if (sent == SendState::kBlocked) return true;  // wait for EPOLLOUT
  if (sent == SendState::kFailed) {
    counters_.write_errors.add();
    spdlog::debug("control: client fd {} gone with {} reply bytes unsent: {}", c.fd.get(),
                  c.out.size() - c.out_off, strerror(errno));
    close_client(c.fd.get());
    return false;
  }
  c.out.clear();
  c.out_off = 0;
  if (c.handoff) {
    // The reply is out: the connection is the handler's now.
    auto take = std::move(c.handoff);
    const int fd = c.fd.get();
    loop_.remove(fd);
    UniqueFd owned = std::move(c.fd);
    clients_.erase(fd);
    take(std::move(owned));
    return false;
  }
  if (c.out.capacity() > limits_.read_chunk) c.out.shrink_to_fit();  // after a big reply
  if (c.in.empty() && c.in.capacity() > limits_.read_chunk) c.in.shrink_to_fit();
  if (c.closing) {
    close_client(c.fd.get());
    return false;
  }
  return true;
}

void ControlServer::update_events(Client& c) {
  uint32_t want = 0;
  if (c.reply_pending())
    want = EPOLLOUT;
  else if (!c.eof && !c.closing && !c.more)
    want = EPOLLIN;
  if (want == c.events) return;
  Status st = loop_.modify(c.fd.get(), want);
  if (!st) {
    VNET_LOG_RL(g_client_log, spdlog::level::warn, "control: {}", st.message());
    close_client(c.fd.get());
    return;
  }
  c.events = want;
}

void ControlServer::close_client(int fd) {
  loop_.remove(fd);    // before the fd is closed (and its number reused)
  clients_.erase(fd);  // closes it
  spdlog::debug("control: client fd {} closed ({} left)", fd, clients_.size());
}

void ControlServer::evict_one() {
  // Idle (nothing half-read, no reply pending) before busy; then the longest silent.
  Client* victim = nullptr;
  auto key = [](const Client& c) { return std::pair(!c.in.empty() || c.reply_pending(), c.seen); };
  for (auto& [fd, c] : clients_)
    if (!victim || key(*c) < key(*victim)) victim = c.get();
  if (!victim) return;
  counters_.evicted.add();
  const auto silent = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - victim->seen);
  VNET_LOG_RL(g_evict_log, spdlog::level::warn,
              "control: {} clients connected: closing client fd {} (silent for {} ms) to make "
              "room for a new one",
              clients_.size(), victim->fd.get(), silent.count());
  if (!victim->reply_pending()) {  // never in the middle of a reply
    static const std::string evicted =
        error_reply("closed to make room for a new control client (too many clients)").dump() +
        "\n";
    (void)!send(victim->fd.get(), evicted.data(), evicted.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  close_client(victim->fd.get());
}

void ControlServer::schedule_more(int fd) {
  more_.push_back(fd);
  if (more_timer_) return;
  more_timer_ = loop_.add_timer(std::chrono::milliseconds(0), [this] {
    more_timer_.reset();
    run_more();
  });
}

void ControlServer::run_more() {
  std::vector<int> fds;
  fds.swap(more_);
  // (A client closed meanwhile is gone from clients_; one that reused its fd number
  // has nothing waiting and only gets an empty turn.)
  for (int fd : fds)
    if (clients_.count(fd)) on_client(fd, 0);
}

void ControlServer::arm_sweep() {
  if (sweep_timer_ || clients_.empty()) return;
  auto shortest =
      std::min({limits_.write_stall_timeout, limits_.idle_timeout, limits_.request_timeout});
  auto period = std::max(shortest / 4, std::chrono::milliseconds(1));
  sweep_timer_ = loop_.add_timer(period, [this] {
    sweep_timer_.reset();
    sweep();
  });
}

void ControlServer::sweep() {
  const auto now = std::chrono::steady_clock::now();
  enum class Why { kStall, kIdle, kSlow };
  std::vector<std::pair<int, Why>> expired;
  for (auto& [fd, c] : clients_) {
    if (c->reply_pending()) {
      if (now - c->progress >= limits_.write_stall_timeout) expired.emplace_back(fd, Why::kStall);
    } else if (c->closing || c->eof) {
      continue;  // being closed anyway
    } else if (!c->in.empty()) {
      if (now - c->started >= limits_.request_timeout) expired.emplace_back(fd, Why::kSlow);
    } else if (now - c->active >= limits_.idle_timeout) {
      expired.emplace_back(fd, Why::kIdle);
    }
  }
  for (auto [fd, why] : expired) {
    auto it = clients_.find(fd);
    if (it == clients_.end()) continue;
    if (why != Why::kSlow) {
      const bool stall = why == Why::kStall;
      (stall ? counters_.write_stalls : counters_.idle_timeouts).add();
      VNET_LOG_RL(g_timeout_log, spdlog::level::warn,
                  "control: client fd {} {} for {} ms, closing it", fd,
                  stall ? "has not read its reply" : "sent no request",
                  (stall ? limits_.write_stall_timeout : limits_.idle_timeout).count());
      close_client(fd);
      continue;
    }
    Client& c = *it->second;
    counters_.request_timeouts.add();
    VNET_LOG_RL(g_timeout_log, spdlog::level::warn,
                "control: client fd {} has not finished its request line ({} bytes) in {} ms, "
                "closing it",
                fd, c.in.size(), limits_.request_timeout.count());
    c.in.clear();
    c.closing = true;
    queue_reply(c, error_reply("request timed out"));
    if (flush_client(c)) update_events(c);  // closes it once written
  }
  arm_sweep();
}

json ControlServer::counters_json() const {
  return json{{"clients", clients_.size()},
              {"accepted", counters_.accepted.get()},
              {"rejected", counters_.rejected.get()},
              {"evicted", counters_.evicted.get()},
              {"requests", counters_.requests.get()},
              {"error_replies", counters_.error_replies.get()},
              {"bad_json", counters_.bad_json.get()},
              {"too_deep", counters_.too_deep.get()},
              {"too_long", counters_.too_long.get()},
              {"bad_requests", counters_.bad_requests.get()},
              {"handler_failures", counters_.handler_failures.get()},
              {"write_errors", counters_.write_errors.get()},
              {"write_stalls", counters_.write_stalls.get()},
              {"idle_timeouts", counters_.idle_timeouts.get()},
              {"request_timeouts", counters_.request_timeouts.get()}};
}

}  // namespace vnet::control
