// vnetctl capture: the client side of the pcapng stream (see capture_client.h).
#include "control/capture_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <iostream>

#include <fmt/format.h>

#include "net/pcapng.h"

namespace vnet::control {

namespace {
volatile sig_atomic_t g_stop = 0;
void on_signal(int) {
  g_stop = 1;
}

bool write_all(int fd, const char* p, size_t n) {
  while (n) {
    const ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= size_t(w);
  }
  return true;
}

std::string mac(const uint8_t* m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4],
                     m[5]);
}
}  // namespace

std::string frame_summary(const std::string& port, uint64_t ts_ns, uint32_t flags,
                          std::string_view data, uint32_t orig_len, std::string_view comment) {
  const time_t secs = time_t(ts_ns / 1000000000ULL);
  tm t{};
  localtime_r(&secs, &t);
  std::string s = fmt::format("{:02}:{:02}:{:02}.{:06} {} {} ", t.tm_hour, t.tm_min, t.tm_sec,
                              (ts_ns % 1000000000ULL) / 1000, port,
                              (flags & 3) == net::pcapng::kFlagInbound ? "In " : "Out");
  const auto* d = reinterpret_cast<const uint8_t*>(data.data());
  if (data.size() < 14) return s + fmt::format("truncated frame, length {}", orig_len);
  s += mac(d + 6) + " > " + mac(d);
  size_t off = 12;
  uint16_t type = uint16_t(d[off] << 8 | d[off + 1]);
  if (type == 0x8100 && data.size() >= 18) {
    s += fmt::format(", vlan {}", (d[14] << 8 | d[15]) & 0xfff);
    off += 4;
    type = uint16_t(d[off] << 8 | d[off + 1]);
  }
  off += 2;
  if (type == 0x0800 && data.size() >= off + 20) {
    char src[INET_ADDRSTRLEN], dst[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, d + off + 12, src, sizeof(src));
    inet_ntop(AF_INET, d + off + 16, dst, sizeof(dst));
    const uint8_t proto = d[off + 9];
    const char* name = proto == 1 ? "ICMP" : proto == 6 ? "TCP" : proto == 17 ? "UDP" : nullptr;
    s += fmt::format(", IPv4 {} > {}: {}", src, dst,
                     name ? std::string(name) : fmt::format("proto {}", proto));
  } else if (type == 0x0806) {
    s += ", ARP";
  } else if (type == 0x86dd) {
    s += ", IPv6";
  } else {
    s += fmt::format(", ethertype 0x{:04x}", type);
  }
  s += fmt::format(", length {}", orig_len);
  if (!comment.empty()) s += fmt::format(" ({})", comment);
  return s;
}

int run_capture(ControlClient& client, const CaptureOptions& opt, int timeout_ms) {
  // Where the stream goes: a file, stdout, or lines on a terminal (opened first: a file
  // that cannot be written starts no capture).
  int out = -1;
  bool raw = true;
  if (opt.write.empty()) {
    raw = !isatty(STDOUT_FILENO);
    out = STDOUT_FILENO;
  } else if (opt.write == "-") {
    out = STDOUT_FILENO;
  } else {
    out = open(opt.write.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
      std::cerr << "vnetctl: " << opt.write << ": " << strerror(errno) << "\n";
      return 1;
    }
  }
  nlohmann::json req{{"cmd", "capture"}, {"port", opt.port}, {"direction", opt.direction}};
  if (!opt.filter.empty()) req["filter"] = opt.filter;
  if (opt.count) req["count"] = opt.count;
  auto reply = client.request(req, timeout_ms);
  if (!reply) {
    std::cerr << "vnetctl: " << reply.message() << "\n";
    if (out != STDOUT_FILENO) ::close(out);
    return 1;
  }
  if (!reply->is_object() || reply->value("ok", false) != true) {
    std::string why = "vnetd did not say ok";
    if (reply->is_object() && reply->contains("error") && (*reply)["error"].is_string())
      why = (*reply)["error"];
    std::cerr << "vnetctl: " << why << "\n";
    if (out != STDOUT_FILENO) ::close(out);
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const int fd = client.fd();
  std::string buf = client.take_buffered();
  size_t frames = 0;
  net::pcapng::Statistics stats;
  bool have_stats = false, shut = false, out_ok = true, bad = false;
  std::string pending;  // bytes not yet a whole block
  auto stop = [&] {
    if (!shut) shutdown(fd, SHUT_WR);  // vnetd ends the capture and sends the rest
    shut = true;
  };
  char chunk[65536];
  for (;;) {
    if (!buf.empty()) {
      if (raw && out_ok && !write_all(out, buf.data(), buf.size())) {
        out_ok = false;  // the reader went away (EPIPE): end the capture
        stop();
      }
      pending += buf;
      buf.clear();
      size_t off = 0;
      while (auto b = net::pcapng::next_block(std::string_view(pending).substr(off), &bad)) {
        if (b->type == net::pcapng::kEnhancedPacket) {
          ++frames;
          if (!raw)
            if (auto p = net::pcapng::read_packet(*b))
              std::cout << frame_summary(opt.port, p->ts_ns, p->flags, p->data, p->orig_len,
                                         p->comment)
                        << std::endl;
        } else if (b->type == net::pcapng::kInterfaceStatistics) {
          stats = net::pcapng::read_statistics(*b);
          have_stats = true;
        }
        off += b->bytes.size();
      }
      pending.erase(0, off);
      if (bad) {
        std::cerr << "vnetctl: malformed pcapng stream from vnetd\n";
        return 1;
      }
    }
    if (g_stop) stop();
    pollfd p{fd, POLLIN, 0};
    const int r = poll(&p, 1, shut ? timeout_ms : -1);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) break;  // shut down and vnetd said nothing more for timeout_ms
    const ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buf.assign(chunk, size_t(n));
  }
  if (out != STDOUT_FILENO) ::close(out);
  std::cerr << frames << (frames == 1 ? " frame" : " frames") << " captured, "
            << (have_stats ? stats.ifdrop : 0) << " dropped by vnetd"
            << (have_stats ? "" : " (statistics missing: the stream was cut)") << "\n";
  return have_stats ? 0 : 1;
}

}  // namespace vnet::control
