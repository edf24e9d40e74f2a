// Daemon: start-up, signal handling and the vnetctl request handlers.
#include "control/daemon.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "control/control_server.h"
#include "control/version.h"

namespace vnet::control {

using nlohmann::json;

Daemon::Daemon(DaemonConfig cfg) : cfg_(std::move(cfg)), worker_(cfg_.worker) {}

Daemon::~Daemon() {
  control_.reset();
  // Ports end their sessions (which stop their queues on the worker) before the
  // worker goes.
  for (auto& p : ports_) worker_.remove_port(p.get());
  ports_.clear();
  worker_.stop();
}

Status Daemon::start() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);  // before the worker thread exists
  signal_fd_.reset(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_) return Status::errorf("signalfd: {}", strerror(errno));
  Status st = loop_.add(signal_fd_.get(), EPOLLIN, [this](uint32_t) {
    signalfd_siginfo si;
    while (read(signal_fd_.get(), &si, sizeof(si)) == sizeof(si)) {
      if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
        spdlog::info("vnetd: signal {}, shutting down", si.ssi_signo);
        loop_.stop();
      }
    }
  });
  if (!st) return st;

  auto server = ControlServer::create(loop_, cfg_.control_path,
                                      [this](const json& req) { return handle(req); });
  if (!server) return server.status();
  control_ = std::move(*server);

  worker_.start();
  for (const auto& spec : cfg_.vhost_user) {
    st = add_vhost_user_port(spec);
    if (!st) return st;
  }
  spdlog::info("vnetd {}: {} port(s), control socket {}", kVersion, ports_.size(),
               cfg_.control_path);
  return Status::ok();
}

void Daemon::run() { loop_.run(); }

Status Daemon::add_vhost_user_port(const VhostUserPortSpec& spec) {
  for (auto& p : ports_)
    if (p->name() == spec.name) return Status::errorf("port {} already exists", spec.name);
  auto port = std::make_unique<ports::VhostUserPort>(spec.name, spec.cfg, worker_);
  port->set_id(next_port_id_++);
  Status st = port->open(loop_);
  if (!st) return Status::errorf("port {}: {}", spec.name, st.message());
  worker_.add_port(port.get());
  spdlog::info("port {}: vhost-user {} {}", spec.name, spec.cfg.client ? "client" : "server",
               spec.cfg.socket_path);
  ports_.push_back(std::move(port));
  return Status::ok();
}

json Daemon::counters_json(ports::Port& p) {
  auto& c = p.counters();
  json drops = json::object();
  for (size_t i = 0; i < size_t(net::Drop::kCount); ++i)
    drops[net::drop_name(net::Drop(i))] = c.drops.by_reason[i].get();
  return json{{"rx_packets", c.rx_packets.get()}, {"rx_bytes", c.rx_bytes.get()},
              {"tx_packets", c.tx_packets.get()}, {"tx_bytes", c.tx_bytes.get()},
              {"drops", drops}};
}

json Daemon::port_json(ports::Port& p) {
  ports::PortInfo i = p.info();
  json j{{"name", p.name()},         {"type", i.type},         {"socket", i.socket},
         {"mode", i.mode},           {"connected", i.connected}, {"features", i.features},
         {"counters", counters_json(p)}};
  return j;
}

json Daemon::fdb_json() {
  json entries = json::array();
  worker_.run_sync([&] {
    auto& fwd = worker_.forwarder();
    for (const auto& e : fwd.dump()) {
      std::string port_name = "?";
      for (auto* p : worker_.ports())
        if (p->id() == e.port) port_name = p->name();
      entries.push_back({{"mac", e.mac}, {"vlan", e.vlan}, {"port", port_name}, {"age", e.age}});
    }
  });
  return entries;
}

json Daemon::handle(const json& req) {
  auto fail = [](const std::string& why) { return json{{"ok", false}, {"error", why}}; };
  if (!req.is_object() || !req.contains("cmd") || !req["cmd"].is_string())
    return fail("request must be an object with a string \"cmd\"");
  const std::string cmd = req["cmd"];
  if (cmd == "version") return {{"ok", true}, {"version", kVersion}};
  if (cmd == "ports") {
    json list = json::array();
    for (auto& p : ports_) list.push_back(port_json(*p));
    return {{"ok", true}, {"ports", list}};
  }
  if (cmd == "counters") {
    json out = json::object();
    std::string only = req.value("port", "");
    for (auto& p : ports_)
      if (only.empty() || p->name() == only) out[p->name()] = counters_json(*p);
    if (!only.empty() && out.empty()) return fail("no port named " + only);
    json w;
    worker_.run_sync([&] {
      auto& wc = worker_.counters();
      auto& fc = worker_.forwarder().counters();
      w = {{"loops", wc.loops.get()},       {"busy_loops", wc.busy_loops.get()},
           {"sleeps", wc.sleeps.get()},     {"wakeups", wc.wakeups.get()},
           {"flooded", fc.flooded.get()},   {"unicast", fc.unicast.get()},
           {"same_port", fc.same_port.get()}};
    });
    return {{"ok", true}, {"counters", out}, {"worker", w}};
  }
  if (cmd == "fdb") return {{"ok", true}, {"fdb", fdb_json()}};
  if (cmd == "fdb-flush") {
    worker_.run_sync([&] { worker_.forwarder().flush(); });
    return {{"ok", true}};
  }
  return fail("unknown command '" + cmd + "'");
}

}  // namespace vnet::control
