// vnetctl top: rates between two samples and their rendering (top.h).
#include "control/top.h"

#include <dirent.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

#include "control/control_client.h"

namespace vnet::control {

namespace {

using nlohmann::json;

uint64_t u64(const json& obj, const char* key) {
  if (!obj.is_object()) return 0;
  auto it = obj.find(key);
  return it != obj.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

// cur - prev, or cur when the counter went down (it started again from zero).
uint64_t delta(uint64_t prev, uint64_t cur) {
  return cur >= prev ? cur - prev : cur;
}

const json& field(const json& obj, const char* key) {
  static const json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

// /proc/.../stat: "PID (COMM) STATE ... utime stime ..." (proc(5): fields 14 and 15).
// COMM may hold spaces and parentheses, so the fields are counted from the last ')'.
bool parse_stat(const std::string& line, std::string& comm, uint64_t& ticks) {
  const auto open = line.find('(');
  const auto close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return false;
  comm = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 1));
  std::string f;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> f; ++i) {  // field 3 is the state
    if (i == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
  }
  if (!rest) return false;
  ticks = utime + stime;
  return true;
}

bool read_stat(const std::string& path, std::string& comm, uint64_t& ticks) {
  std::ifstream in(path);
  std::string line;
  return in && std::getline(in, line) && parse_stat(line, comm, ticks);
}

}  // namespace

bool read_cpu_ticks(pid_t pid, TopSample& s) {
  s.have_cpu = false;
  s.thread_ticks.clear();
  const std::string base = "/proc/" + std::to_string(pid);
  std::string comm;
  if (pid <= 0 || !read_stat(base + "/stat", comm, s.process_ticks)) return false;
  DIR* dir = opendir((base + "/task").c_str());
  if (!dir) return false;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    uint64_t ticks = 0;
    if (read_stat(base + "/task/" + e->d_name + "/stat", comm, ticks))
      s.thread_ticks[comm] += ticks;
  }
  closedir(dir);
  s.have_cpu = true;
  return true;
}

TopRates top_rates(const TopSample& prev, const TopSample& cur, long ticks_per_second) {
  TopRates r;
  r.interval = cur.seconds - prev.seconds;
  const double dt = r.interval > 0 ? r.interval : 1;
  const bool cpu = prev.have_cpu && cur.have_cpu && ticks_per_second > 0;
  auto cpu_pct = [&](uint64_t before, uint64_t after) {
    return 100.0 * double(delta(before, after)) / double(ticks_per_second) / dt;
  };
  if (cpu) r.vnetd_cpu_pct = cpu_pct(prev.process_ticks, cur.process_ticks);

  const json& now_ports = field(cur.counters, "counters");
  const json& then_ports = field(prev.counters, "counters");
  if (now_ports.is_object()) {
    for (const auto& [name, c] : now_ports.items()) {
      TopPortRates p;
      p.name = name;
      const json& b = field(then_ports, name.c_str());
      p.fresh = !b.is_object();
      if (!p.fresh) {
        p.rx_pps = double(delta(u64(b, "rx_packets"), u64(c, "rx_packets"))) / dt;
        p.tx_pps = double(delta(u64(b, "tx_packets"), u64(c, "tx_packets"))) / dt;
        p.rx_bps = 8.0 * double(delta(u64(b, "rx_bytes"), u64(c, "rx_bytes"))) / dt;
        p.tx_bps = 8.0 * double(delta(u64(b, "tx_bytes"), u64(c, "tx_bytes"))) / dt;
        const json& drops = field(c, "drops");
        if (drops.is_object()) {
          for (const auto& [reason, v] : drops.items()) {
            if (!v.is_number_unsigned()) continue;
            const double rate =
                double(delta(u64(field(b, "drops"), reason.c_str()), v.get<uint64_t>())) / dt;
            if (rate > 0) p.drops[reason] = rate;
            p.drop_pps += rate;
          }
        }
      }
      r.ports.push_back(std::move(p));
    }
  }
  std::sort(r.ports.begin(), r.ports.end(), [](const TopPortRates& a, const TopPortRates& b) {
    const double x = a.rx_pps + a.tx_pps, y = b.rx_pps + b.tx_pps;
    return x != y ? x > y : a.name < b.name;
  });

  const json& now_workers = field(cur.workers, "workers");
  const json& then_workers = field(prev.workers, "workers");
  if (now_workers.is_array()) {
    for (const json& w : now_workers) {
      TopWorkerRates t;
      t.index = field(w, "worker").is_number_integer() ? field(w, "worker").get<int64_t>() : -1;
      t.cpu = cell(w, "cpu");
      for (const json& n : field(w, "ports"))
        if (n.is_string()) t.ports.push_back(n.get<std::string>());
      const json* b = nullptr;
      if (then_workers.is_array())
        for (const json& x : then_workers)
          if (field(x, "worker") == field(w, "worker")) b = &x;
      const json empty = json::object();
      const json& before = b ? *b : empty;
      const uint64_t pkts = delta(u64(before, "packets"), u64(w, "packets"));
      const uint64_t busy = delta(u64(before, "busy_cycles"), u64(w, "busy_cycles"));
      const uint64_t idle = delta(u64(before, "idle_cycles"), u64(w, "idle_cycles"));
      t.pps = double(pkts) / dt;
      t.busy_pct = busy + idle ? 100.0 * double(busy) / double(busy + idle) : 0;
      t.cycles_per_packet = pkts ? double(busy) / double(pkts) : 0;
      t.wakeups_ps = double(delta(u64(before, "wakeups"), u64(w, "wakeups"))) / dt;
      t.sleeps_ps = double(delta(u64(before, "sleeps"), u64(w, "sleeps"))) / dt;
      if (cpu) {
        // Workers name their threads vnet-worker<N> (worker.cc).
        const std::string comm = "vnet-worker" + std::to_string(t.index);
        auto a = prev.thread_ticks.find(comm), z = cur.thread_ticks.find(comm);
        if (a != prev.thread_ticks.end() && z != cur.thread_ticks.end())
          t.cpu_pct = cpu_pct(a->second, z->second);
      }
      r.workers.push_back(std::move(t));
    }
  }
  return r;
}

std::string si_rate(double v) {
  if (!(v > 0)) return "0";
  static const char* kPrefix[] = {"", "k", "M", "G", "T"};
  size_t i = 0;
  while (v >= 999.5 && i + 1 < std::size(kPrefix)) {
    v /= 1000;
    ++i;
  }
  if (i == 0) return fmt::format("{:.0f}", v);
  const int digits = v < 9.995 ? 2 : v < 99.95 ? 1 : 0;
  return fmt::format("{:.{}f}{}", v, digits, kPrefix[i]);
}

std::string format_top(const TopRates& r, const std::string& title) {
  std::string out = title + "\n\n";
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : r.ports) {
    if (p.fresh) {
      rows.push_back({p.name, "-", "-", "-", "-", "-", "(new)"});
      continue;
    }
    std::string why;
    for (const auto& [reason, rate] : p.drops)
      why += (why.empty() ? "" : " ") + reason + ":" + si_rate(rate);
    rows.push_back({p.name, si_rate(p.rx_pps), si_rate(p.rx_bps), si_rate(p.tx_pps),
                    si_rate(p.tx_bps), si_rate(p.drop_pps), why.empty() ? "-" : why});
  }
  out += format_table({"PORT", "RX-PPS", "RX-BIT/S", "TX-PPS", "TX-BIT/S", "DROPS/S", "REASONS"},
                      rows, {1, 2, 3, 4, 5});
  out += "\n";
  rows.clear();
  for (const auto& w : r.workers) {
    std::string ports;
    for (const auto& n : w.ports) ports += (ports.empty() ? "" : ",") + n;
    rows.push_back({std::to_string(w.index), w.cpu, fmt::format("{:.1f}", w.busy_pct),
                    w.cpu_pct < 0 ? "-" : fmt::format("{:.1f}", w.cpu_pct), si_rate(w.pps),
                    w.pps > 0 ? fmt::format("{:.0f}", w.cycles_per_packet) : "-",
                    si_rate(w.wakeups_ps), si_rate(w.sleeps_ps), ports.empty() ? "-" : ports});
  }
  out += format_table(
      {"WORKER", "CPU", "BUSY%", "CPU%", "PPS", "CYC/PKT", "WAKEUPS/S", "SLEEPS/S", "PORTS"}, rows,
      {2, 3, 4, 5, 6, 7});
  return out;
}

nlohmann::json top_json(const TopRates& r) {
  json ports = json::array(), workers = json::array();
  for (const auto& p : r.ports) {
    json j{{"port", p.name}, {"new", p.fresh}};
    if (!p.fresh) {
      j.update({{"rx_pps", p.rx_pps},
                {"rx_bps", p.rx_bps},
                {"tx_pps", p.tx_pps},
                {"tx_bps", p.tx_bps},
                {"drop_pps", p.drop_pps},
                {"drops", p.drops}});
    }
    ports.push_back(std::move(j));
  }
  for (const auto& w : r.workers) {
    json j{{"worker", w.index},
           {"ports", w.ports},
           {"pps", w.pps},
           {"busy_pct", w.busy_pct},
           {"cycles_per_packet", w.cycles_per_packet},
           {"wakeups_ps", w.wakeups_ps},
           {"sleeps_ps", w.sleeps_ps}};
    j["cpu_pct"] = w.cpu_pct < 0 ? json(nullptr) : json(w.cpu_pct);
    workers.push_back(std::move(j));
  }
  json j{{"interval", r.interval}, {"ports", ports}, {"workers", workers}};
  j["vnetd_cpu_pct"] = r.vnetd_cpu_pct < 0 ? json(nullptr) : json(r.vnetd_cpu_pct);
  return j;
}

}  // namespace vnet::control

// --- the loop -------------------------------------------------------------------------

namespace vnet::control {

namespace {

volatile sig_atomic_t g_top_stop = 0;

void on_top_signal(int) {
  g_top_stop = 1;
}

double monotonic_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// Puts a terminal's stdin into single-key mode for the loop's lifetime (restored on
// every way out, Ctrl-C included: SIGINT only sets a flag while it runs).
class KeyInput {
 public:
  explicit KeyInput(bool want) {
    if (!want || !isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios raw = saved_;
    raw.c_lflag &= ~tcflag_t(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    active_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
  }
  ~KeyInput() {
    if (active_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  KeyInput(const KeyInput&) = delete;
  KeyInput& operator=(const KeyInput&) = delete;

  // Waits until `deadline` (monotonic seconds); true if q was pressed or a signal came.
  bool wait_until(double deadline) {
    for (;;) {
      if (g_top_stop) return true;
      const double left = deadline - monotonic_seconds();
      if (left <= 0) return false;
      pollfd p{active_ ? STDIN_FILENO : -1, POLLIN, 0};
      const int n = poll(&p, 1, int(std::ceil(left * 1000)));
      if (n > 0 && (p.revents & POLLIN)) {
        char c = 0;
        if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) return true;
      }
    }
  }

 private:
  termios saved_{};
  bool active_ = false;
};

pid_t peer_pid(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
}

}  // namespace

int run_top(ControlClient& client, const TopOptions& opt) {
  const pid_t pid = peer_pid(client.fd());
  const long hz = sysconf(_SC_CLK_TCK);
  std::string version = "?";
  if (auto v = client.request({{"cmd", "version"}}, opt.timeout_ms); v && v->is_object())
    version = cell(*v, "version");

  auto sample = [&](TopSample& s) -> std::string {
    for (auto [cmd, dst] : {std::pair{"counters", &s.counters}, std::pair{"workers", &s.workers}}) {
      auto r = client.request({{"cmd", cmd}}, opt.timeout_ms);
      if (!r) return r.message();
      if (!r->is_object() || r->value("ok", false) != true)
        return fmt::format("{}: {}", cmd, r->is_object() ? cell(*r, "error") : r->dump());
      *dst = std::move(*r);
    }
    s.seconds = monotonic_seconds();
    read_cpu_ticks(pid, s);
    return {};
  };

  const bool screen = !opt.batch && !opt.as_json && isatty(STDOUT_FILENO);
  g_top_stop = 0;
  struct sigaction sa {};
  sa.sa_handler = on_top_signal;
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  KeyInput keys(screen);

  int status = 0;
  TopSample prev, cur;
  std::string err = sample(prev);
  double next = prev.seconds;
  for (uint64_t shown = 0; err.empty() && (opt.iterations == 0 || shown < opt.iterations);
       ++shown) {
    next += opt.interval;
    if (keys.wait_until(next)) break;
    if (!(err = sample(cur)).empty()) break;
    const TopRates rates = top_rates(prev, cur, hz);
    if (opt.as_json) {
      std::printf("%s\n", top_json(rates).dump().c_str());
    } else {
      char clock[16] = "";
      const time_t now = time(nullptr);
      tm local{};
      if (localtime_r(&now, &local)) strftime(clock, sizeof(clock), "%H:%M:%S", &local);
      std::string title =
          fmt::format("vnetd {} (pid {})  {}  every {:g} s  {} ports  {} workers", version, pid,
                      clock, opt.interval, rates.ports.size(), rates.workers.size());
      if (rates.vnetd_cpu_pct >= 0)
        title += fmt::format("  vnetd CPU {:.1f}%", rates.vnetd_cpu_pct);
      const std::string text = format_top(rates, title);
      std::printf("%s%s", screen ? "\x1b[H\x1b[2J" : (shown ? "\n" : ""), text.c_str());
    }
    std::fflush(stdout);
    prev = std::move(cur);
    cur = TopSample{};
  }
  if (!err.empty()) {
    std::fprintf(stderr, "vnetctl: top: %s\n", err.c_str());
    status = 1;
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return status;
}

}  // namespace vnet::control
