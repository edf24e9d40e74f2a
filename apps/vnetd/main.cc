// vnetd: the vnet daemon. A vhost-user virtio-net back end and an L2 switch.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "common/log.h"
#include "control/config.h"
#include "control/daemon.h"
#include "control/handover.h"
#include "control/metrics_server.h"
#include "control/version.h"

namespace {

using nlohmann::json;

// Splits "FIRST,key=value,flag,..." into the first item and a JSON object of the
// rest (flags become true, numbers become integers).
json parse_port_arg(const std::string& arg, const char* first_key) {
  json j = json::object();
  size_t pos = 0;
  bool first = true;
  while (pos <= arg.size()) {
    size_t comma = arg.find(',', pos);
    std::string tok = arg.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (first) {
      j[first_key] = tok;
      first = false;
    } else {
      size_t eq = tok.find('=');
      if (eq == std::string::npos) {
        j[tok] = true;
      } else {
        std::string k = tok.substr(0, eq), v = tok.substr(eq + 1);
        bool numeric =
            !v.empty() && v.find_first_not_of("0123456789") == std::string::npos && v.size() < 10;
        if (numeric)
          j[k] = std::stoll(v);
        else
          j[k] = v;
      }
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return j;
}

// --vhost-user PATH[,client|server][,name=NAME][,mtu=N][,vlan=N][,worker=K][,queues=N]
vnet::Result<vnet::control::PortSpec> vhost_user_spec(const std::string& arg, size_t index) {
  json j = parse_port_arg(arg, "socket");
  if (j.contains("client")) {
    j.erase("client");
    j["mode"] = "client";
  }
  if (j.contains("server")) {
    j.erase("server");
    j["mode"] = "server";
  }
  if (!j.contains("name")) j["name"] = "vhu" + std::to_string(index);
  j["type"] = "vhost-user";
  return vnet::control::parse_port(j, "--vhost-user " + arg);
}

// --tap
// NAME[,ifname=IF][,netns=NS][,attach][,no-offloads][,io=uring|syscalls][,mtu=N][,vlan=N][,worker=K]
// [,queues=N]
vnet::Result<vnet::control::PortSpec> tap_spec(const std::string& arg) {
  json j = parse_port_arg(arg, "name");
  if (j.contains("no-offloads")) {
    j.erase("no-offloads");
    j["offloads"] = false;
  }
  j["type"] = "tap";
  return vnet::control::parse_port(j, "--tap " + arg);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "vnetd: vhost-user virtio-net back end and L2 switch.\n"
      "Ports come from --config and from the command line; vhost-user ports are named vhu0, "
      "vhu1, ... in command-line order unless name= is given."};
  std::vector<std::string> vhost_user, taps;
  std::string config_file;
  std::string control_path = vnet::control::kDefaultControlPath;
  std::string log_level = "info";
  vnet::control::DaemonConfig cfg;
  app.add_option("--config", config_file,
                 "TOML file with [vnetd], [worker], [fdb] and [[port]] tables; command-line "
                 "options override it")
      ->check(CLI::ExistingFile);
  std::string check_config;
  app.add_option("--check-config", check_config,
                 "Check this configuration file (syntax, fields, values) and exit: 0 and "
                 "\"FILE: ok\" when vnetd would start from it, else 2 and the line and field "
                 "at fault. Nothing is created.");
  app.add_option(
      "--vhost-user", vhost_user,
      "A vhost-user port: PATH[,client][,name=NAME][,mtu=N][,vlan=N][,worker=K][,queues=N] "
      "(queue pairs offered, 1..128, default 8). vnetd listens "
      "on PATH (server, the default) or connects to a front end listening there "
      "(client, retried every second). This and --tap also take ingress_rate=R, ingress_burst=B "
      "and storm=CLASS=R, one value each (vnetctl set-port or [[port]] for more). "
      "Repeatable.");
  app.add_option(
      "--tap", taps,
      "A TAP port: NAME[,ifname=IF][,netns=NS][,attach][,no-offloads][,io=MODE][,mtu=N]"
      "[,vlan=N][,worker=K][,queues=N]. vnetd creates the TAP (in network namespace NS if given) "
      "or attaches to an existing one; queues=N (1..16) makes it IFF_MULTI_QUEUE with N fds. "
      "Repeatable.");
  std::string tap_io = "auto";
  app.add_option("--tap-io", tap_io,
                 "Data path of TAP ports that set no io=: uring (batched io_uring, fails without "
                 "it), syscalls (one readv/writev per frame) or auto (uring when the kernel has "
                 "it)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "uring", "syscalls"}));
  app.add_option("--control", control_path, "Control socket for vnetctl")->capture_default_str();
  double control_idle = 60, control_request = 10;
  app.add_option("--control-idle-timeout", control_idle,
                 "Seconds after which a control client that sent no request is closed")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 86400.0));
  app.add_option("--control-request-timeout", control_request,
                 "Seconds a control client has to finish a request line once it started it")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 86400.0));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  int cpu = -1;
  auto* cpu_opt =
      app.add_option("--cpu", cpu, "One data-plane worker pinned to this core (-1: no pinning)")
          ->capture_default_str();
  std::string cpus_arg;
  app.add_option("--cpus", cpus_arg,
                 "One data-plane worker per listed core, pinned to it (0,1,...). Ports go to "
                 "the worker with the fewest ports unless they say worker=K.")
      ->excludes(cpu_opt);
  app.add_option("--idle-poll-us", cfg.workers.idle_poll_us,
                 "adaptive: busy-poll at least this long after the last frame before sleeping")
      ->capture_default_str();
  app.add_option("--idle-poll-max-us", cfg.workers.idle_poll_max_us,
                 "adaptive: the idle window grows up to this when frames wake the worker soon "
                 "after it slept (halt-polling); at or below --idle-poll-us it stays fixed")
      ->capture_default_str();
  std::string poll_mode = "adaptive";
  app.add_option("--poll-mode", poll_mode,
                 "adaptive (busy-poll while frames flow, then sleep), poll (never sleep) or "
                 "sleep (sleep whenever idle)")
      ->capture_default_str()
      ->check(CLI::IsMember({"adaptive", "poll", "sleep"}));
  app.add_option("--fdb-size", cfg.workers.forwarding.fdb_capacity, "FDB entries at most")
      ->capture_default_str()
      ->check(CLI::Range(16u, 1u << 22));
  app.add_option("--fdb-port-limit", cfg.workers.forwarding.fdb_port_limit,
                 "FDB entries learned per port at most (0: no limit)")
      ->capture_default_str();
  app.add_option("--fdb-age", cfg.workers.forwarding.fdb_age_seconds,
                 "Seconds after which an unused FDB entry is forgotten")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000000u));
  std::string socket_mode, socket_owner, socket_group;
  app.add_option("--socket-mode", socket_mode,
                 "Mode of the control socket and the vhost-user server sockets (default 0660)");
  app.add_option("--socket-owner", socket_owner, "Their owner (user name or uid)");
  app.add_option("--socket-group", socket_group, "Their group (group name or gid)");
  std::string metrics_listen;
  app.add_option("--metrics-listen", metrics_listen,
                 "Serve Prometheus metrics on http://ADDR:PORT/metrics (e.g. 127.0.0.1:9465; "
                 "default: off)");
  app.set_version_flag("--version", vnet::control::kVersion);
  CLI11_PARSE(app, argc, argv);

  if (!check_config.empty()) {
    auto fc = vnet::control::load_config_file(check_config);
    if (!fc) {
      fprintf(stderr, "vnetd: %s\n", fc.message().c_str());
      return 2;
    }
    printf("%s: ok (%zu port(s))\n", check_config.c_str(), fc->ports.size());
    return 0;
  }
  if (!config_file.empty()) {
    auto fc = vnet::control::load_config_file(config_file);
    if (!fc) {
      fprintf(stderr, "vnetd: %s\n", fc.message().c_str());
      return 2;
    }
    if (!app.count("--control") && !fc->control_path.empty()) control_path = fc->control_path;
    if (!app.count("--log-level") && !fc->log_level.empty()) log_level = fc->log_level;
    if (!app.count("--metrics-listen")) metrics_listen = fc->metrics_listen;
    if (!app.count("--control-idle-timeout") && fc->control_idle_timeout)
      control_idle = fc->control_idle_timeout;
    if (!app.count("--control-request-timeout") && fc->control_request_timeout)
      control_request = fc->control_request_timeout;
    cfg.workers.cpus = fc->worker.cpus;
    if (!app.count("--idle-poll-us")) cfg.workers.idle_poll_us = fc->worker.idle_poll_us;
    if (!app.count("--idle-poll-max-us"))
      cfg.workers.idle_poll_max_us = fc->worker.idle_poll_max_us;
    if (!app.count("--poll-mode")) poll_mode = fc->worker.poll_mode;
    if (!app.count("--tap-io") && !fc->tap_io.empty()) tap_io = fc->tap_io;
    if (!app.count("--fdb-size")) cfg.workers.forwarding.fdb_capacity = fc->fdb_size;
    if (!app.count("--fdb-age")) cfg.workers.forwarding.fdb_age_seconds = fc->fdb_age;
    if (!app.count("--fdb-port-limit")) cfg.workers.forwarding.fdb_port_limit = fc->fdb_port_limit;
    cfg.socket_perms = fc->socket_perms;
    cfg.ports = fc->ports;
    // For vnetctl reload and SIGHUP: the file again, from wherever vnetd runs.
    cfg.config_file = std::filesystem::absolute(config_file).string();
    cfg.file = std::move(*fc);
  }
  // --socket-*: each overrides the config file's [vnetd] socket_* value.
  auto socket_flag = [](const char* flag, const std::string& value, auto parse, auto& out) {
    if (value.empty()) return true;
    auto r = parse(value);
    if (!r) {
      fprintf(stderr, "vnetd: %s: %s\n", flag, r.message().c_str());
      return false;
    }
    out = *r;
    return true;
  };
  if (!socket_flag("--socket-mode", socket_mode, vnet::parse_socket_mode, cfg.socket_perms.mode) ||
      !socket_flag("--socket-owner", socket_owner, vnet::lookup_user, cfg.socket_perms.uid) ||
      !socket_flag("--socket-group", socket_group, vnet::lookup_group, cfg.socket_perms.gid))
    return 2;
  for (size_t i = 0; i < vhost_user.size(); ++i) {
    auto spec = vhost_user_spec(vhost_user[i], i);
    if (!spec) {
      fprintf(stderr, "vnetd: %s\n", spec.message().c_str());
      return 2;
    }
    cfg.ports.push_back(*spec);
  }
  for (const auto& t : taps) {
    auto spec = tap_spec(t);
    if (!spec) {
      fprintf(stderr, "vnetd: %s\n", spec.message().c_str());
      return 2;
    }
    cfg.ports.push_back(*spec);
  }

  if (app.count("--cpu")) {
    if (cpu < -1 || cpu > vnet::control::max_cpu()) {
      fprintf(stderr, "vnetd: --cpu %d is out of range [-1, %d]\n", cpu, vnet::control::max_cpu());
      return 2;
    }
    cfg.workers.cpus.clear();
    if (cpu >= 0) cfg.workers.cpus.push_back(cpu);
  }
  if (app.count("--cpus")) {
    // "0,1" -> [0, 1]; anything not a number is passed on for parse_cpu_list to name.
    json list = json::array();
    std::stringstream in(cpus_arg);
    for (std::string t; std::getline(in, t, ',');) {
      bool numeric =
          !t.empty() && t.size() < 10 && t.find_first_not_of("0123456789") == std::string::npos;
      list.push_back(numeric ? json(std::stoll(t)) : json(t));
    }
    auto cpus = vnet::control::parse_cpu_list(list, "--cpus", vnet::control::max_cpu());
    if (!cpus) {
      fprintf(stderr, "vnetd: %s\n", cpus.message().c_str());
      return 2;
    }
    cfg.workers.cpus = *cpus;
  }
  if (auto addr = vnet::control::parse_listen_address(metrics_listen);
      !metrics_listen.empty() && !addr) {
    fprintf(stderr, "vnetd: --metrics-listen: %s\n", addr.message().c_str());
    return 2;
  }
  cfg.metrics_listen = metrics_listen;
  const size_t workers = std::max<size_t>(cfg.workers.cpus.size(), 1);
  if (auto st = vnet::control::check_port_workers(cfg.ports, workers, "vnetd"); !st) {
    fprintf(stderr, "vnetd: %s\n", st.message().c_str());
    return 2;
  }
  cfg.workers.poll_mode = poll_mode == "poll"    ? vnet::dataplane::PollMode::kPoll
                          : poll_mode == "sleep" ? vnet::dataplane::PollMode::kSleep
                                                 : vnet::dataplane::PollMode::kAdaptive;
  cfg.tap_io = *vnet::ports::parse_tap_io(tap_io);
  vnet::init_logging(log_level);
  cfg.control_path = control_path;
  cfg.control_idle_timeout = std::chrono::milliseconds(int64_t(control_idle * 1000));
  cfg.control_request_timeout = std::chrono::milliseconds(int64_t(control_request * 1000));
  // Hot upgrade: the command line and binary a successor starts with (the binary's path
  // as it was at start; a package upgrade puts the new one there), and the hand-over
  // socket when this vnetd is the successor (control/handover.h).
  cfg.argv.assign(argv, argv + argc);
  {
    std::error_code ec;
    auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) cfg.exe = exe.string();
    const std::string deleted = " (deleted)";  // replaced on disk since it was started
    if (cfg.exe.size() > deleted.size() && cfg.exe.ends_with(deleted))
      cfg.exe.resize(cfg.exe.size() - deleted.size());
  }
  if (const char* h = getenv(vnet::control::handover::kFdEnv)) {
    char* end = nullptr;
    long fd = strtol(h, &end, 10);
    unsetenv(vnet::control::handover::kFdEnv);
    if (!end || *end || fd < 3 || fd > 65535) {
      fprintf(stderr, "vnetd: %s=%s is not an fd\n", vnet::control::handover::kFdEnv, h);
      return 2;
    }
    fcntl(int(fd), F_SETFD, FD_CLOEXEC);
    cfg.handover_fd = int(fd);
  }
  vnet::control::Daemon daemon(std::move(cfg));
  vnet::Status st = daemon.start();
  if (!st) {
    spdlog::error("vnetd: {}", st.message());
    return 1;
  }
  daemon.run();
  spdlog::info("vnetd: exiting");
  return 0;
}
