// MetricsServer: the HTTP endpoint for Prometheus (metrics_server.h). One request per
// connection (HTTP/1.0 style, "Connection: close"), which is all a scraper needs.
#include "control/metrics_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

#include "common/log.h"
#include "common/send_pending.h"

namespace vnet::control {

namespace {

constexpr int kBacklog = 64;
constexpr int kAcceptsPerEvent = 64;
constexpr size_t kReadChunk = 4096;
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

RateLimit g_metrics_log;

}  // namespace

Result<ListenAddress> parse_listen_address(std::string_view s) {
  const auto bad = [&](const char* why) {
    return Status::errorf(
        "metrics listen address '{}': {} (want ADDRESS:PORT, e.g. "
        "127.0.0.1:9465 or [::1]:9465)",
        std::string(s.substr(0, 64)), why);
  };
  const size_t colon = s.rfind(':');
  if (colon == std::string_view::npos) return bad("no port");
  std::string_view host = s.substr(0, colon), port_text = s.substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535)
    return bad("the port must be a number in [0, 65535]");
  ListenAddress out;
  const bool v6 = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  const std::string h(v6 ? host.substr(1, host.size() - 2) : host);
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&out.addr);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(uint16_t(port));
    if (inet_pton(AF_INET6, h.c_str(), &a->sin6_addr) != 1) return bad("not an IPv6 address");
    out.len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&out.addr);
    a->sin_family = AF_INET;
    a->sin_port = htons(uint16_t(port));
    if (inet_pton(AF_INET, h.c_str(), &a->sin_addr) != 1)
      return bad("not an IPv4 address (IPv6 in brackets)");
    out.len = sizeof(sockaddr_in);
  }
  return out;
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::create(EventLoop& loop,
                                                             const std::string& listen,
                                                             Render render,
                                                             MetricsServerLimits limits) {
  std::unique_ptr<MetricsServer> s(new MetricsServer(loop, std::move(render), limits));
  if (Status st = s->listen_on(listen); !st) return st;
  return s;
}

Result<std::unique_ptr<MetricsServer>> MetricsServer::adopt(EventLoop& loop, UniqueFd listen,
                                                            Render render,
                                                            MetricsServerLimits limits) {
  std::unique_ptr<MetricsServer> s(new MetricsServer(loop, std::move(render), limits));
  int v = 0;
  socklen_t len = sizeof(v);
  if (getsockopt(listen.get(), SOL_SOCKET, SO_ACCEPTCONN, &v, &len) != 0 || v != 1)
    return Status::error("metrics: the fd handed over is not a listening socket");
  s->listen_fd_ = std::move(listen);
  // Never block the loop on accept, whatever the fd came as.
  ::fcntl(s->listen_fd_.get(), F_SETFL, ::fcntl(s->listen_fd_.get(), F_GETFL) | O_NONBLOCK);
  sockaddr_storage bound{};
  len = sizeof(bound);
  if (getsockname(s->listen_fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0)
    return Status::errorf("metrics: getsockname: {}", strerror(errno));
  s->port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  Status st = loop.add(s->listen_fd_.get(), EPOLLIN, [m = s.get()](uint32_t) { m->on_listen(); });
  if (!st) return st;
  s->registered_ = true;
  return s;
}

void MetricsServer::release() {
  if (registered_) loop_.remove(listen_fd_.get());
  registered_ = false;
  listen_fd_.reset();
}

MetricsServer::MetricsServer(EventLoop& loop, Render render, MetricsServerLimits limits)
    : loop_(loop), render_(std::move(render)), limits_(limits) {}

MetricsServer::~MetricsServer() {
  if (sweep_timer_) loop_.cancel_timer(*sweep_timer_);
  if (retry_timer_) loop_.cancel_timer(*retry_timer_);
  for (auto& [fd, c] : clients_) loop_.remove(fd);
  clients_.clear();
  if (registered_) loop_.remove(listen_fd_.get());
}

Status MetricsServer::listen_on(const std::string& listen) {
  auto addr = parse_listen_address(listen);
  if (!addr) return addr.status();
  listen_fd_.reset(socket(addr->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd_) return Status::errorf("metrics: socket: {}", strerror(errno));
  int one = 1;
  (void)setsockopt(listen_fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(listen_fd_.get(), reinterpret_cast<const sockaddr*>(&addr->addr), addr->len) != 0)
    return Status::errorf("metrics: bind {}: {}", listen, strerror(errno));
  if (::listen(listen_fd_.get(), kBacklog) != 0)
    return Status::errorf("metrics: listen {}: {}", listen, strerror(errno));
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (getsockname(listen_fd_.get(), reinterpret_cast<sockaddr*>(&bound), &len) != 0)
    return Status::errorf("metrics: getsockname: {}", strerror(errno));
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  Status st = loop_.add(listen_fd_.get(), EPOLLIN, [this](uint32_t) { on_listen(); });
  if (!st) return st;
  registered_ = true;
  return Status::ok();
}

void MetricsServer::on_listen() {
  for (int i = 0; i < kAcceptsPerEvent; ++i) {
    UniqueFd fd(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED) continue;
      VNET_LOG_RL(g_metrics_log, spdlog::level::warn, "metrics: accept: {}", strerror(err));
      // Out of fds or memory: stop watching for a moment instead of spinning.
      if (!retry_timer_ && loop_.modify(listen_fd_.get(), 0))
        retry_timer_ = loop_.add_timer(kAcceptRetry, [this] {
          retry_timer_.reset();
          (void)loop_.modify(listen_fd_.get(), EPOLLIN);
        });
      return;
    }
    if (clients_.size() >= limits_.max_clients) {  // the oldest goes
      auto oldest = clients_.begin();
      for (auto it = clients_.begin(); it != clients_.end(); ++it)
        if (it->second->accepted < oldest->second->accepted) oldest = it;
      if (oldest == clients_.end()) continue;  // max_clients 0: `fd` closes here
      counters_.evicted.add();
      VNET_LOG_RL(g_metrics_log, spdlog::level::warn,
                  "metrics: {} connections open, closing the oldest", clients_.size());
      close_client(oldest->first);
    }
    const int raw = fd.get();
    auto c = std::make_unique<Client>();
    c->fd = std::move(fd);
    c->accepted = std::chrono::steady_clock::now();
    if (Status st = loop_.add(raw, EPOLLIN, [this, raw](uint32_t) { on_client(raw); }); !st) {
      VNET_LOG_RL(g_metrics_log, spdlog::level::warn, "metrics: {}", st.message());
      continue;
    }
    clients_.emplace(raw, std::move(c));
    counters_.accepted.add();
    arm_sweep();
  }
}

void MetricsServer::on_client(int fd) {
  auto it = clients_.find(fd);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  if (c.replied) {
    flush(c);
    return;
  }
  char buf[kReadChunk];
  const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
    close_client(fd);  // gone before its request was complete
    return;
  }
  if (n < 0) return;
  c.in.append(buf, size_t(n));
  answer(c);
}

// RFC 9112 section 3: request-line = method SP request-target SP HTTP-version CRLF,
// then header fields, then an empty line (section 2.2: a bare LF ends a line too).
// Only the request line matters here; the head must end within max_request bytes.
MetricsRequest classify_request(std::string_view in, size_t max_request) {
  size_t end = in.find("\r\n\r\n");
  if (end == std::string_view::npos) end = in.find("\n\n");
  if (end == std::string_view::npos || end > max_request)
    return in.size() > max_request ? MetricsRequest::kTooLarge : MetricsRequest::kIncomplete;
  const std::string_view line = in.substr(0, in.find_first_of("\r\n"));
  const size_t sp1 = line.find(' '), sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1 || line.substr(sp2 + 1, 7) != "HTTP/1.")
    return MetricsRequest::kBadRequest;
  const std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  target = target.substr(0, target.find('?'));  // a query string is ignored
  if (method != "GET" && method != "HEAD") return MetricsRequest::kBadMethod;
  if (target != "/metrics") return MetricsRequest::kNotFound;
  return method == "GET" ? MetricsRequest::kGet : MetricsRequest::kHead;
}

void MetricsServer::answer(Client& c) {
  const MetricsRequest what = classify_request(c.in, limits_.max_request);
  switch (what) {
    case MetricsRequest::kIncomplete:
      return;
    case MetricsRequest::kGet:
    case MetricsRequest::kHead:
      counters_.scrapes.add();
      reply(c, 200, "OK", render_(), what == MetricsRequest::kHead);
      return;
    default:
      break;
  }
  counters_.bad_requests.add();
  VNET_LOG_RL(g_metrics_log, spdlog::level::warn, "metrics: request refused ({} bytes): {}",
              c.in.size(),
              what == MetricsRequest::kTooLarge    ? "head too large"
              : what == MetricsRequest::kNotFound  ? "not /metrics"
              : what == MetricsRequest::kBadMethod ? "not GET or HEAD"
                                                   : "malformed request line");
  switch (what) {
    case MetricsRequest::kTooLarge:
      reply(c, 431, "Request Header Fields Too Large", "request head too large\n");
      break;
    case MetricsRequest::kNotFound:
      reply(c, 404, "Not Found", "metrics are at /metrics\n");
      break;
    case MetricsRequest::kBadMethod:
      reply(c, 405, "Method Not Allowed", "only GET and HEAD\n");
      break;
    default:
      reply(c, 400, "Bad Request", "bad request\n");
      break;
  }
}

void MetricsServer::reply(Client& c, int status, std::string_view reason, std::string_view body,
                          bool head_only) {
  const char* type =
      status == 200 ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8";
  c.out = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
      status, reason, type, body.size());
  if (!head_only) c.out += body;
  c.out_off = 0;
  c.replied = true;
  c.in.clear();
  c.in.shrink_to_fit();
  if (flush(c)) (void)loop_.modify(c.fd.get(), EPOLLOUT);
}

bool MetricsServer::flush(Client& c) {
  switch (send_pending(c.fd.get(), c.out, c.out_off)) {
    case SendState::kBlocked:
      return true;
    case SendState::kFailed:
      counters_.write_errors.add();
      close_client(c.fd.get());
      return false;
    case SendState::kDone:
      break;
  }
  shutdown(c.fd.get(), SHUT_WR);
  close_client(c.fd.get());
  return false;
}

void MetricsServer::close_client(int fd) {
  loop_.remove(fd);
  clients_.erase(fd);
}

void MetricsServer::arm_sweep() {
  if (sweep_timer_ || clients_.empty()) return;
  const auto period = std::max(limits_.deadline / 4, std::chrono::milliseconds(1));
  sweep_timer_ = loop_.add_timer(period, [this] {
    sweep_timer_.reset();
    sweep();
  });
}

void MetricsServer::sweep() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<int> expired;
  for (auto& [fd, c] : clients_)
    if (now - c->accepted >= limits_.deadline) expired.push_back(fd);
  for (int fd : expired) {
    counters_.timeouts.add();
    VNET_LOG_RL(g_metrics_log, spdlog::level::warn,
                "metrics: connection fd {} not done after {} ms, closing it", fd,
                limits_.deadline.count());
    close_client(fd);
  }
  arm_sweep();
}

}  // namespace vnet::control
