// vnetd: the vnet daemon. A vhost-user virtio-net back end and an L2 switch.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/log.h"
#include "control/daemon.h"
#include "control/version.h"

namespace {

// PATH[,client][,name=NAME]
vnet::Result<vnet::control::VhostUserPortSpec> parse_vhost_user(const std::string& arg,
                                                                size_t index) {
  vnet::control::VhostUserPortSpec spec;
  spec.name = "vhu" + std::to_string(index);
  size_t pos = 0;
  bool first = true;
  while (pos <= arg.size()) {
    size_t comma = arg.find(',', pos);
    std::string tok = arg.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (first) {
      spec.cfg.socket_path = tok;
      first = false;
    } else if (tok == "client") {
      spec.cfg.client = true;
    } else if (tok == "server") {
      spec.cfg.client = false;
    } else if (tok.rfind("name=", 0) == 0 && tok.size() > 5) {
      spec.name = tok.substr(5);
    } else {
      return vnet::Status::errorf("--vhost-user {}: unknown option '{}'", arg, tok);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (spec.cfg.socket_path.empty())
    return vnet::Status::errorf("--vhost-user {}: empty socket path", arg);
  return spec;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "vnetd: vhost-user virtio-net back end and L2 switch.\n"
      "Ports are named vhu0, vhu1, ... in command-line order unless name= is given."};
  std::vector<std::string> vhost_user;
  std::string control_path = vnet::control::kDefaultControlPath;
  std::string log_level = "info";
  vnet::control::DaemonConfig cfg;
  app.add_option("--vhost-user", vhost_user,
                 "A vhost-user port: PATH[,client][,name=NAME]. vnetd listens on PATH (server, "
                 "the default) or connects to a front end listening there (client, retried "
                 "every few seconds). Repeatable.");
  app.add_option("--control", control_path, "Control socket for vnetctl")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--cpu", cfg.worker.cpu, "Pin the data-plane worker to this core (-1: no pinning)")
      ->capture_default_str();
  app.add_option("--idle-poll-us", cfg.worker.idle_poll_us,
                 "Busy-poll this long after the last frame before sleeping")
      ->capture_default_str();
  app.add_option("--fdb-size", cfg.worker.forwarding.fdb_capacity, "FDB entries at most")
      ->capture_default_str()
      ->check(CLI::Range(16u, 1u << 22));
  app.add_option("--fdb-age", cfg.worker.forwarding.fdb_age_seconds,
                 "Seconds after which an unused FDB entry is forgotten")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000000u));
  app.set_version_flag("--version", vnet::control::kVersion);
  CLI11_PARSE(app, argc, argv);

  vnet::init_logging(log_level);
  for (size_t i = 0; i < vhost_user.size(); ++i) {
    auto spec = parse_vhost_user(vhost_user[i], i);
    if (!spec) {
      fprintf(stderr, "vnetd: %s\n", spec.message().c_str());
      return 2;
    }
    cfg.vhost_user.push_back(*spec);
  }
  cfg.control_path = control_path;
  std::error_code ec;
  auto dir = std::filesystem::path(control_path).parent_path();
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    chmod(dir.c_str(), 0750);
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
