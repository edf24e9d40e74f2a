// Daemon: start-up, signal handling and the vnetctl request handlers.
#include "control/daemon.h"
#include "control/evpn_sync.h"

#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "common/log.h"
#include "common/tsc.h"
#include "control/capture_sessions.h"
#include "control/control_server.h"
#include "control/metrics_server.h"
#include "control/policing_config.h"
#include "control/request.h"
#include "control/service_notify.h"
#include "control/trace.h"
#include "control/version.h"
#include "ports/tap_port.h"
#include "ports/vxlan_port.h"

namespace vnet::control {

using nlohmann::json;

Daemon::Daemon(DaemonConfig cfg) : cfg_(std::move(cfg)), pool_(cfg_.workers) {}

Daemon::~Daemon() {
  // A successor keeps the EVPN shadows; otherwise they go with vnetd.
  for (auto& [n, e] : evpn_)
    if (handed_over_) e->release();
  evpn_.clear();
  metrics_.reset();
  control_.reset();
  captures_.reset();  // detached from their ports before the ports go
  // Ports end their sessions (which stop their queues on their worker) before the
  // workers go.
  for (auto& p : ports_) pool_.detach(p.get());
  ports_.clear();
  executors_.clear();
  pool_.stop();
}

Status Daemon::start() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);  // before the worker thread exists
  signal_fd_.reset(signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signal_fd_) return Status::errorf("signalfd: {}", strerror(errno));
  Status st = loop_.add(signal_fd_.get(), EPOLLIN, [this](uint32_t) {
    signalfd_siginfo si;
    while (read(signal_fd_.get(), &si, sizeof(si)) == sizeof(si)) {
      if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
        spdlog::info("vnetd: signal {}, shutting down", si.ssi_signo);
        loop_.stop();  // run() returns and tells the service manager STOPPING=1
      } else if (si.ssi_signo == SIGHUP) {
        spdlog::info("vnetd: SIGHUP, reloading the configuration");
        (void)reload();  // logs what it did or why it refused the file
      }
    }
  });
  if (!st) return st;
  if (cfg_.handover_fd >= 0) return start_takeover();  // hot upgrade (daemon_upgrade.cc)

  ControlServerLimits limits;
  limits.perms = cfg_.socket_perms;
  limits.idle_timeout = cfg_.control_idle_timeout;
  limits.request_timeout = cfg_.control_request_timeout;
  auto server = ControlServer::create(
      loop_, cfg_.control_path, [this](const json& req) { return handle(req); }, limits);
  if (!server) return server.status();
  control_ = std::move(*server);
  captures_ = std::make_unique<CaptureSessions>(loop_, pool_);
  if (!cfg_.metrics_listen.empty()) {
    auto metrics =
        MetricsServer::create(loop_, cfg_.metrics_listen, [this] { return metrics_text(); });
    if (!metrics) return metrics.status();
    metrics_ = std::move(*metrics);
    spdlog::info("vnetd: metrics on http://{}/metrics (port {})", cfg_.metrics_listen,
                 metrics_->port());
  }

  pool_.start();
  for (const auto& spec : cfg_.ports) {
    st = add_port(spec);
    if (!st) return st;
  }
  std::string cpus;
  for (int c : pool_.cpus())
    cpus += (cpus.empty() ? "" : ",") + (c < 0 ? "any" : std::to_string(c));
  spdlog::info("vnetd {}: {} port(s), {} worker(s) on cpu {}, control socket {}", kVersion,
               ports_.size(), pool_.size(), cpus, cfg_.control_path);
  for (const auto& p : cfg_.file.ports) file_ports_.insert(p.name);
  // The control socket listens and every configured port exists (server sockets
  // listening, TAPs created): a service manager may start what depends on vnetd.
  notify_service("READY=1\nSTATUS=" + status_text());
  return Status::ok();
}

void Daemon::arm_evpn_timer() {
  evpn_timer_armed_ = true;
  loop_.add_timer(std::chrono::milliseconds(250), [this] {
    evpn_timer_armed_ = false;
    if (evpn_.empty() || handed_over_) return;
    for (auto& [n, e] : evpn_) e->tick();
    arm_evpn_timer();
  });
}

uint16_t Daemon::metrics_port() const {
  return metrics_ ? metrics_->port() : 0;
}

void Daemon::run() {
  loop_.run();
  if (!handed_over_) notify_service("STOPPING=1\nSTATUS=stopping");
}

std::string Daemon::status_text() const {
  return fmt::format("{} port(s), {} worker(s), control socket {}", ports_.size(), pool_.size(),
                     cfg_.control_path);
}

namespace {
// Sets a port's policer (on its owner worker, or before any worker has the port). The
// buckets start full. The TSC's rate is measured on the first use (about 20 ms).
void configure_policer(ports::Port& p, const sw::PolicerConfig& cfg) {
  const uint64_t hz = cfg.on() ? tsc_hz() : 1;
  p.policer().configure(cfg, hz, read_tsc());
}

net::VlanConfig to_vlan_config(const VlanSpec& v) {
  net::VlanConfig c;
  c.trunk = v.mode == VlanSpec::Mode::kTrunk;
  c.access = v.tag;
  c.native = v.native;
  for (uint16_t id : v.trunks) c.allowed.set(id);
  return c;
}
}  // namespace

ports::Port* Daemon::find_port(const std::string& name) {
  for (auto& p : ports_)
    if (p->name() == name) return p.get();
  return nullptr;
}

Status Daemon::add_port(const PortSpec& spec, Adopted* adopted) {
  if (find_port(spec.name)) return Status::errorf("port {} already exists", spec.name);
  for (const auto& [n, s] : specs_) {
    if (spec.type == "vhost-user" && s.type == spec.type && s.socket == spec.socket)
      return Status::errorf("port {}: socket {} is used by port {}", spec.name, spec.socket, n);
    if (spec.type == "tap" && s.type == spec.type && s.ifname == spec.ifname &&
        s.netns == spec.netns)
      return Status::errorf("port {}: interface {} is used by port {}", spec.name, spec.ifname, n);
    if (spec.type == "vxlan" && s.type == spec.type && s.local == spec.local &&
        s.udp_port == spec.udp_port && s.netns == spec.netns && s.vni == spec.vni)
      return Status::errorf("port {}: VNI {} on {}:{} is VXLAN port {}'s", spec.name, spec.vni,
                            spec.local, spec.udp_port, n);
  }
  if (next_port_id_ == 0) return Status::error("out of port ids");
  if (spec.worker >= 0 && size_t(spec.worker) >= pool_.size())
    return Status::errorf("port {}: field 'worker' = {}: vnetd has {} worker(s) (0..{})", spec.name,
                          spec.worker, pool_.size(), pool_.size() - 1);
  const size_t w = spec.worker >= 0 ? size_t(spec.worker) : pool_.least_loaded();
  // A policed port's queues stay on one worker: its token buckets have one owner.
  const bool spread = spec.worker < 0 && !spec.policing.on();
  auto ex = pool_.make_executor(w);
  std::unique_ptr<ports::Port> port;
  if (spec.type == "vhost-user") {
    ports::VhostUserPortConfig vc;
    vc.socket_path = spec.socket;
    vc.client = spec.client;
    vc.perms = cfg_.socket_perms;
    if (spec.socket_mode >= 0) vc.perms.mode = mode_t(spec.socket_mode);
    if (spec.socket_uid >= 0) vc.perms.uid = spec.socket_uid;
    if (spec.socket_gid >= 0) vc.perms.gid = spec.socket_gid;
    vc.queue_pairs = spec.queues ? spec.queues : kDefaultQueuePairs;
    auto vp = std::make_unique<ports::VhostUserPort>(spec.name, vc, *ex);
    Status st = adopted ? vp->adopt(loop_, std::move(adopted->listen), std::move(adopted->session),
                                    adopted->setup)
                        : vp->open(loop_);
    if (!st) return Status::errorf("port {}: {}", spec.name, st.message());
    port = std::move(vp);
    spdlog::info("port {}: vhost-user {} {}, {} queue pair(s)", spec.name,
                 spec.client ? "client" : "server", spec.socket, vc.queue_pairs);
  } else if (spec.type == "tap") {
    ports::TapPortConfig tc;
    tc.ifname = spec.ifname;
    tc.attach = spec.attach;
    tc.queues = spec.queues ? spec.queues : 1;
    tc.netns = spec.netns;
    if (spec.mtu)
      tc.mtu = spec.mtu;
    else if (uint32_t t = tunnel_mtu(spec.vlan); t && !spec.attach && !adopted)
      tc.mtu = t;  // its VLAN goes into a tunnel: what the tunnel takes
    if (spec.offloads) tc.offloads = net::OffloadCaps{true, true, true, true, true};
    tc.io = spec.io.empty() ? cfg_.tap_io : ports::parse_tap_io(spec.io).value_or(cfg_.tap_io);
    auto tp = adopted ? ports::TapPort::adopt(spec.name, tc, std::move(adopted->tap_fds),
                                              adopted->tap_created)
                      : ports::TapPort::open(spec.name, tc);
    if (!tp) return Status::errorf("port {}: {}", spec.name, tp.message());
    spdlog::info("port {}: TAP {} {}{}", spec.name, (*tp)->ifname(),
                 (*tp)->created() ? "created" : "attached",
                 spec.netns.empty() ? "" : " in netns " + spec.netns);
    port = std::move(*tp);
  } else if (spec.type == "vxlan") {
    ports::VxlanPortConfig xc;
    xc.vni = spec.vni;
    xc.local = spec.local;
    xc.remotes = spec.remotes;
    xc.udp_port = uint16_t(spec.udp_port);
    xc.control = spec.control;
    xc.netns = spec.netns;
    xc.underlay_mtu = spec.underlay_mtu;
    auto xp = adopted ? ports::VxlanPort::adopt(spec.name, xc, std::move(adopted->vxlan_rx),
                                                std::move(adopted->vxlan_tx))
                      : ports::VxlanPort::open(spec.name, xc);
    if (!xp) return Status::errorf("port {}: {}", spec.name, xp.message());
    if (adopted) (*xp)->adopt_macs(adopted->vxlan_macs);
    spdlog::info("port {}: VXLAN VNI {}, local {}:{}{}, {} remote VTEP(s), inner MTU {}", spec.name,
                 spec.vni, spec.local, spec.udp_port,
                 spec.netns.empty() ? "" : " in netns " + spec.netns, spec.remotes.size(),
                 (*xp)->inner_mtu());
    port = std::move(*xp);
  } else {
    return Status::errorf("port {}: port type '{}' is not supported", spec.name, spec.type);
  }
  port->set_id(next_port_id_++);
  port->set_vlan(to_vlan_config(spec.vlan));  // not attached yet: no worker reads it
  port->set_allowed_macs(spec.allowed_macs);
  configure_policer(*port, spec.policing);
  if (spec.type == "vxlan" && spec.control == "evpn") {
    auto sync = EvpnSync::start(
        loop_, static_cast<ports::VxlanPort&>(*port), spec, pool_.fdb(),
        [this] { pool_.quiesce(); }, adopted != nullptr);
    if (!sync) return Status::errorf("port {}: {}", spec.name, sync.message());
    evpn_[spec.name] = std::move(*sync);
    if (!evpn_timer_armed_) arm_evpn_timer();
  }
  if (adopted)
    pending_attach_.push_back({port.get(), w, spread});
  else
    pool_.attach(port.get(), w, ex.get(), spread);
  if (pool_.size() > 1) spdlog::info("port {}: queue 0 on worker {}", spec.name, w);
  executors_[port.get()] = std::move(ex);
  ports_.push_back(std::move(port));
  specs_.emplace_back(spec.name, spec);
  if (auto* x = dynamic_cast<ports::VxlanPort*>(ports_.back().get())) {
    const std::string key = steer_key(spec);
    if (adopted) {
      pending_steer_.emplace_back(key, adopted->vxlan_steer, x->rx_fd(), spec.vni);
    } else if (Status st = steering_[key].joined(x->rx_fd(), spec.vni); !st) {
      if (steering_[key].empty()) steering_.erase(key);
      (void)remove_port(spec.name);
      return Status::errorf("port {}: {}", spec.name, st.message());
    }
  }
  if (spec.type == "vxlan" && !adopted) refresh_tap_mtus();
  return Status::ok();
}

std::string Daemon::steer_key(const PortSpec& s) {
  return fmt::format("{}/{}:{}", s.netns, s.local, s.udp_port);
}

void Daemon::join_pending_steering() {
  std::sort(pending_steer_.begin(), pending_steer_.end());  // by group, then group index
  for (const auto& [key, index, fd, vni] : pending_steer_)
    if (Status st = steering_[key].joined(fd, vni); !st)
      spdlog::warn("VXLAN {}: VNI {}: {}", key, vni, st.message());
  pending_steer_.clear();
}

namespace {
bool carries(const VlanSpec& v, uint16_t vlan) {
  if (v.mode == VlanSpec::Mode::kAccess) return v.tag == vlan;
  return v.native == vlan || std::binary_search(v.trunks.begin(), v.trunks.end(), vlan);
}
}  // namespace

uint32_t Daemon::tunnel_mtu(const VlanSpec& vlan) const {
  uint32_t mtu = 0;
  for (const auto& p : ports_)
    if (const auto* x = dynamic_cast<const ports::VxlanPort*>(p.get()))
      if (carries(vlan, x->vlan().access))
        mtu = mtu ? std::min(mtu, x->inner_mtu()) : x->inner_mtu();
  return mtu;
}

void Daemon::refresh_tap_mtus() {
  for (auto& p : ports_) {
    auto* tap = dynamic_cast<ports::TapPort*>(p.get());
    const PortSpec* spec = tap ? spec_of(p->name()) : nullptr;
    if (!spec || spec->mtu || !tap->created()) continue;
    const uint32_t tunnel = tunnel_mtu(spec->vlan), want = tunnel ? tunnel : 1500;
    if (tap->mtu() == want) continue;
    if (Status st = tap->set_mtu(want); !st) {
      spdlog::warn("port {}: {}", p->name(), st.message());
      continue;
    }
    spdlog::info("port {}: MTU {} ({})", p->name(), want,
                 tunnel ? "what the tunnel carrying its VLAN takes" : "no tunnel carries its VLAN");
  }
}

Status Daemon::remove_port(const std::string& name) {
  auto it =
      std::find_if(ports_.begin(), ports_.end(), [&](const auto& p) { return p->name() == name; });
  if (it == ports_.end()) return Status::errorf("no port named {}", short_string(name));
  const ports::Port* gone = it->get();
  const auto* vx = dynamic_cast<const ports::VxlanPort*>(gone);
  const bool segment = vx != nullptr;  // vx dangles once the port is erased below
  const int steer_fd = vx ? vx->rx_fd() : -1;
  const PortSpec* gone_spec = spec_of(name);
  const std::string key = gone_spec && segment ? steer_key(*gone_spec) : std::string();
  evpn_.erase(name);  // the shadow goes first: zebra withdraws the segment's routes
  if (captures_) captures_->port_removed(**it);
  pool_.detach(it->get());
  ports_.erase(it);  // ends its session / closes its device
  executors_.erase(gone);
  file_ports_.erase(name);  // a file port deleted by vnetctl: a reload adds it again
  specs_.erase(
      std::remove_if(specs_.begin(), specs_.end(), [&](const auto& e) { return e.first == name; }),
      specs_.end());
  spdlog::info("port {}: removed", name);
  // Its socket is closed: the group's last member took its slot; the program follows.
  if (auto s = steering_.find(key); segment && s != steering_.end()) {
    if (Status st = s->second.left(steer_fd); !st)
      spdlog::warn("VXLAN {}: steering after {} left: {}", key, name, st.message());
    if (s->second.empty()) steering_.erase(s);
  }
  if (segment) refresh_tap_mtus();
  return Status::ok();
}

namespace {
double per_packet(uint64_t cycles, uint64_t packets) {
  return packets ? double(cycles) / double(packets) : 0.0;
}
}  // namespace

json Daemon::counters_json(ports::Port& p) {
  auto& c = p.counters();
  json drops = json::object();
  for (size_t i = 0; i < size_t(net::Drop::kCount); ++i)
    drops[net::drop_name(net::Drop(i))] = p.dropped_total(net::Drop(i));
  return json{{"rx_packets", p.rx_packets_total()},
              {"rx_bytes", p.rx_bytes_total()},
              {"tx_packets", c.tx_packets.get()},
              {"tx_bytes", c.tx_bytes.get()},
              {"drops", drops}};
}

json Daemon::port_json(ports::Port& p) {
  ports::PortInfo i = p.info();
  json j{{"name", p.name()},
         {"type", i.type},
         {"socket", i.socket},
         {"mode", i.mode},
         {"connected", i.connected},
         {"features", i.features},
         {"counters", counters_json(p)}};
  for (const auto& [n, s] : specs_) {
    if (n != p.name()) continue;
    j["vlan"] = vlan_json(s.vlan);
    if (!s.allowed_macs.empty()) j["allowed_macs"] = allowed_macs_json(s.allowed_macs);
    j["mtu"] = s.mtu ? s.mtu : 1500;
    j["policing"] = policing_json(s.policing);
    if (s.type == "vxlan") {
      j["vxlan"] = {{"vni", s.vni},         {"local", s.local},
                    {"remote", s.remotes},  {"udp_port", s.udp_port},
                    {"control", s.control}, {"underlay_mtu", s.underlay_mtu},
                    {"netns", s.netns}};
      if (auto* x = dynamic_cast<ports::VxlanPort*>(&p)) j["mtu"] = x->inner_mtu();
      if (auto e = evpn_.find(p.name()); e != evpn_.end()) {
        const EvpnSync::Stats st = e->second->stats();
        j["extra"]["evpn_vteps"] = st.vteps;
        j["extra"]["evpn_remote_macs"] = st.remote_macs;
        j["extra"]["evpn_local_macs"] = st.local_macs;
        j["extra"]["evpn_netlink_errors"] = st.netlink_errors;
        j["extra"]["evpn_resyncs"] = st.resyncs;
        j["extra"]["evpn_over_limit"] = st.over_limit;
        j["vxlan"]["shadow"] = {EvpnSync::bridge_name(s.vni), EvpnSync::vxlan_name(s.vni),
                                EvpnSync::anchor_name(s.vni)};
      }
    }
  }
  for (const auto& [k, v] : i.extra) j["extra"][k] = v;
  j["worker"] = pool_.owner(&p);
  j["queues"] = queues_json(p, i);
  return j;
}

// Per receive queue (pair) of a port: who polls it, what it moved, what it cost.
json Daemon::queues_json(ports::Port& p, const ports::PortInfo& info) {
  json list = json::array();
  const std::vector<size_t> owners = pool_.queue_owners(&p);
  for (uint32_t q = 0; q < p.rx_queues(); ++q) {
    const ports::QueueCounters& c = p.queue_counters(q);
    uint64_t drops = 0;
    for (size_t d = 0; d < size_t(net::Drop::kCount); ++d) drops += c.drops.get(net::Drop(d));
    json one{{"queue", q},
             {"worker", q < owners.size() ? json(owners[q]) : json(nullptr)},
             {"rx_packets", c.rx_packets.get()},
             {"rx_bytes", c.rx_bytes.get()},
             {"rx_drops", drops},
             {"tx_packets", c.tx_packets.get()},
             {"tx_drops", c.tx_drops.get()},
             {"busy_cycles", c.busy_cycles.get()},
             {"busy_cycles_per_packet", per_packet(c.busy_cycles.get(), c.rx_packets.get())}};
    if (q < info.queue_states.size()) one["state"] = info.queue_states[q];
    list.push_back(std::move(one));
  }
  return list;
}

// fdb: one chunk of the FDB per request, so that a dump of a million entries holds
// neither the control thread (other clients are answered between chunks) nor memory
// (a chunk is at most kFdbChunkMax entries, found in at most kFdbScanSlots slots).
// Request: "cursor" (where the chunk starts, 0 or the last reply's "cursor"), "limit"
// (entries at most), and filters "port" (name), "vlan", "mac". Reply: "fdb" (the
// entries, in table order), "size" (entries in the FDB) and, while the table is not
// done, "cursor" for the next chunk.
json Daemon::fdb_chunk(const json& req) {
  auto fail = [](const std::string& why) { return json{{"ok", false}, {"error", "fdb: " + why}}; };
  auto& fdb = pool_.fdb();
  const auto get_int = [&](const char* key, int64_t lo, int64_t hi,
                           int64_t dflt) -> Result<int64_t> {
    if (!req.contains(key)) return dflt;
    const json& v = req[key];
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      return Status::errorf("field '{}' must be an integer in [{}, {}]", key, lo, hi);
    return v.get<int64_t>();
  };
  auto cursor = get_int("cursor", 0, fdb.slots(), 0);
  if (!cursor) return fail(cursor.message());
  auto limit = get_int("limit", 1, kFdbChunkMax, kFdbChunkMax);
  if (!limit) return fail(limit.message());
  auto vlan = get_int("vlan", 0, 4094, -1);
  if (!vlan) return fail(vlan.message());
  int port_id = -1;
  if (req.contains("port")) {
    if (!req["port"].is_string()) return fail("field 'port' must be a port name");
    ports::Port* p = find_port(req["port"].get<std::string>());
    if (!p) return fail("no port named " + short_string(req["port"].get<std::string>()));
    port_id = p->id();
  }
  std::optional<sw::Mac> mac;
  if (req.contains("mac")) {
    if (req["mac"].is_string()) mac = sw::Mac::parse(req["mac"].get<std::string>());
    if (!mac) return fail("field 'mac' must be a MAC address like \"52:54:00:12:34:56\"");
  }
  // Copied out under the FDB's writer lock (which learning workers take too) into
  // space reserved before; formatted after it is released.
  struct Raw {
    sw::Mac mac;
    uint16_t vlan, port;
    uint64_t age_ns;
  };
  std::vector<Raw> raw;
  raw.reserve(size_t(*limit));
  const uint32_t next = fdb.for_each_slice(
      dataplane::Forwarder::monotonic_ns(), uint32_t(*cursor), kFdbScanSlots,
      [&](sw::Mac m, uint16_t v, uint16_t port, uint64_t age_ns) {
        if ((port_id >= 0 && port != port_id) || (*vlan >= 0 && v != *vlan) || (mac && m != *mac))
          return true;
        raw.push_back({m, v, port, age_ns});
        return raw.size() < size_t(*limit);
      });
  json entries = json::array();
  for (const Raw& r : raw) {
    const ports::Port* at = nullptr;
    for (auto& p : ports_)
      if (p->id() == r.port) at = p.get();
    json e{{"mac", r.mac.to_string()},
           {"vlan", r.vlan},
           {"port", at ? at->name() : std::string("?")},
           {"age", r.age_ns / 1'000'000'000ULL}};
    // Behind a tunnel: the remote VTEP it was last seen behind.
    if (auto* x = dynamic_cast<const ports::VxlanPort*>(at)) {
      std::string vtep = x->vtep_of(r.mac.raw());
      if (!vtep.empty()) e["vtep"] = std::move(vtep);
    }
    entries.push_back(std::move(e));
  }
  json reply{{"ok", true}, {"fdb", std::move(entries)}, {"size", fdb.size()}};
  if (next < fdb.slots()) reply["cursor"] = next;
  return reply;
}

json Daemon::trace(const json& req) {
  std::vector<TracePort> list;
  list.reserve(ports_.size());
  for (auto& p : ports_) {
    const PortSpec* spec = nullptr;
    for (auto& [n, sp] : specs_)
      if (n == p->name()) spec = &sp;
    list.push_back({p->name(), p->info().type, p->id(), &p->vlan(), spec});
  }
  return trace_frame(req, list, pool_.fdb(), dataplane::Forwarder::monotonic_ns());
}

namespace {

// The counters a worker keeps, by the names vnetctl shows; `workers` lists them per
// worker and `counters` sums them.
json worker_counters(dataplane::Worker& wk) {
  const auto& wc = wk.counters();
  const auto& fc = wk.forwarder().counters();
  // clang-format off
  return {{"packets", wc.packets.get()},
          {"busy_cycles", wc.busy_cycles.get()},
          {"idle_cycles", wc.idle_cycles.get()},
          {"loops", wc.loops.get()},
          {"busy_loops", wc.busy_loops.get()},
          {"wakeups", wc.wakeups.get()},
          {"hangups", wc.hangups.get()},
          {"sleeps", wc.sleeps.get()},
          {"flooded", fc.flooded.get()},
          {"unicast", fc.unicast.get()},
          {"same_port", fc.same_port.get()},
          {"src_multicast", fc.src_multicast.get()},
          {"src_zero", fc.src_zero.get()},
          {"stale_port", fc.stale_port.get()}};
  // clang-format on
}
}  // namespace

// Per worker. Counters are single-writer atomics: read here without stopping anyone.
json Daemon::workers_json() {
  json list = json::array();
  for (size_t i = 0; i < pool_.size(); ++i) {
    auto& wk = pool_.worker(i);
    const auto& wc = wk.counters();
    json names = json::array();
    json queues = json::array();
    for (auto& p : ports_) {
      const std::vector<size_t> owners = pool_.queue_owners(p.get());
      bool listed = false;
      for (uint32_t q = 0; q < owners.size(); ++q) {
        if (owners[q] != i) continue;
        if (!listed) names.push_back(p->name());
        listed = true;
        const ports::QueueCounters& c = p->queue_counters(q);
        uint64_t drops = 0;
        for (size_t d = 0; d < size_t(net::Drop::kCount); ++d) drops += c.drops.get(net::Drop(d));
        queues.push_back({{"port", p->name()},
                          {"queue", q},
                          {"packets", c.rx_packets.get()},
                          {"drops", drops},
                          {"busy_cycles", c.busy_cycles.get()}});
      }
    }
    const int cpu = pool_.cpus()[i];
    json w = worker_counters(wk);
    w["worker"] = i;
    w["cpu"] = cpu < 0 ? json(nullptr) : json(cpu);
    w["ports"] = names;
    w["queues"] = queues;
    w["busy_cycles_per_packet"] = per_packet(wc.busy_cycles.get(), wc.packets.get());
    w["idle_window_us"] = wc.idle_window_us.load(std::memory_order_relaxed);
    w["window_grows"] = wc.window_grows.get();
    w["window_shrinks"] = wc.window_shrinks.get();
    list.push_back(std::move(w));
  }
  return list;
}

// vnetctl counters' "worker" object: the sum over all workers, and the shared FDB.
json Daemon::worker_totals_json() {
  json sum = json::object();
  for (size_t i = 0; i < pool_.size(); ++i) {
    const json one = worker_counters(pool_.worker(i));
    for (auto it = one.begin(); it != one.end(); ++it)
      sum[it.key()] = sum.value(it.key(), uint64_t(0)) + it->get<uint64_t>();
  }
  sum["workers"] = pool_.size();
  sum["busy_cycles_per_packet"] =
      per_packet(sum["busy_cycles"].get<uint64_t>(), sum["packets"].get<uint64_t>());
  auto& fdb = pool_.fdb();
  auto& dc = fdb.counters();
  sum["fdb_size"] = fdb.size();
  sum["fdb_capacity"] = fdb.capacity();
  sum["fdb_per_port_limit"] = fdb.per_port_limit();
  sum["fdb_learned"] = dc.learned.get();
  sum["fdb_moved"] = dc.moved.get();
  sum["fdb_aged"] = dc.aged.get();
  sum["fdb_evicted"] = dc.evicted.get();
  sum["fdb_full"] = dc.full.get();
  sum["fdb_refused"] = dc.refused.get();
  sum["fdb_limited"] = dc.limited.get();
  return sum;
}

Status Daemon::move_port(ports::Port* p, size_t worker) {
  Status st = pool_.move(p, worker);
  if (!st) return st;
  for (auto& [n, sp] : specs_)
    if (n == p->name()) sp.worker = int(worker);
  return Status::ok();
}

PortSpec* Daemon::spec_of(const std::string& name) {
  for (auto& [n, sp] : specs_)
    if (n == name) return &sp;
  return nullptr;
}

Result<PortChange> Daemon::parse_set_port(ports::Port* p, const json& req) {
  const std::string name = p->name();
  for (const auto& [k, v] : req.items()) {
    (void)v;
    if (k != "cmd" && k != "name" && k != "vlan" && k != "trunk" && k != "native" && k != "mtu" &&
        k != "allowed_macs" && k != "worker" && k != "ingress_rate" && k != "ingress_burst" &&
        k != "storm" && k != "queue")
      return Status::error("set-port: unknown field '" + short_string(k) +
                           "' (known: name, vlan, trunk, native, mtu, allowed_macs, worker, queue, "
                           "ingress_rate, ingress_burst, storm)");
  }
  PortChange c;
  if (req.contains("queue")) {
    const json& qj = req["queue"];
    if (!req.contains("worker"))
      return Status::error("set-port " + name +
                           ": field 'queue' needs 'worker' (the queue's new worker)");
    if (!qj.is_number_integer() || qj.get<int64_t>() < 0 ||
        qj.get<int64_t>() >= int64_t(p->rx_queues()))
      return Status::errorf("set-port {}: field 'queue' must be an integer in [0, {}]", name,
                            p->rx_queues() - 1);
    c.queue = uint32_t(qj.get<int64_t>());
  }
  if (req.contains("worker")) {
    // Checked before anything changes.
    const json& wj = req["worker"];
    if (!wj.is_number_integer() || wj.get<int64_t>() < 0 ||
        wj.get<int64_t>() >= int64_t(pool_.size()))
      return Status::errorf(
          "set-port {}: field 'worker' must be an integer in [0, {}] (vnetd has {} worker(s))",
          name, pool_.size() - 1, pool_.size());
    c.worker = size_t(wj.get<int64_t>());
  }
  const PortSpec* spec = spec_of(name);
  if (req.contains("allowed_macs")) {
    auto m = parse_allowed_macs(req, "set-port " + name);
    if (!m) return m.status();
    c.allowed_macs = std::move(*m);
  }
  if (has_policing(req)) {
    auto pc = parse_policing(req, "set-port " + name, spec ? spec->policing : sw::PolicerConfig{});
    if (!pc) return pc.status();
    c.policing = *pc;
  }
  if (c.queue && (c.policing ? c.policing->on() : spec && spec->policing.on()))
    return Status::error("set-port " + name +
                         ": the port is policed, its queues stay on one worker (move the whole "
                         "port with --worker alone)");
  if (req.contains("vlan") || req.contains("trunk") || req.contains("native")) {
    auto v = parse_vlan(req, "set-port " + name);
    if (!v) return v.status();
    c.vlan = *v;
  }
  if (req.contains("mtu")) {
    const json& m = req["mtu"];
    if (!m.is_number_integer() || m.get<int64_t>() < 68 || m.get<int64_t>() > 65535)
      return Status::error("set-port " + name + ": field 'mtu' must be an integer in [68, 65535]");
    if (!dynamic_cast<ports::TapPort*>(p))
      return Status::error("set-port " + name +
                           ": the MTU of a vhost-user port is the front end's (QEMU: host_mtu=N "
                           "on virtio-net-pci); vnetd follows NET_SET_MTU");
    c.mtu = uint32_t(m.get<int64_t>());
  }
  return c;
}

Status Daemon::change_port(ports::Port* p, const PortChange& c) {
  const std::string name = p->name();
  PortSpec* spec = spec_of(name);
  if (c.mtu) {
    if (auto* tap = dynamic_cast<ports::TapPort*>(p)) {
      Status st = tap->set_mtu(*c.mtu);
      if (!st) return st;
      spdlog::info("port {}: MTU {}", name, *c.mtu);
    }
    if (spec) spec->mtu = *c.mtu;
  }
  if (c.allowed_macs) {
    executors_[p]->run_sync([&] {
      p->set_allowed_macs(*c.allowed_macs);
      pool_.fdb().remove_port(p->id());  // learned from any source
    });
    if (spec) spec->allowed_macs = *c.allowed_macs;
    spdlog::info("port {}: allowed_macs {}", name, allowed_macs_json(*c.allowed_macs).dump());
  }
  if (c.policing && c.policing->on()) {
    // Its token buckets have one owner: every queue goes to the worker of queue 0.
    Status st = pool_.move(p, pool_.owner(p));
    if (!st) return st;
  }
  if (c.policing) {
    tsc_hz();  // measured here, not on the worker
    executors_[p]->run_sync([&] { configure_policer(*p, *c.policing); });
    if (spec) spec->policing = *c.policing;
    spdlog::info("port {}: policing {}", name, policing_json(*c.policing).dump());
  }
  if (c.worker && c.queue) {
    Status st = pool_.move_queue(p, *c.queue, *c.worker);
    if (!st) return st;
  } else if (c.worker) {
    Status st = move_port(p, *c.worker);
    if (!st) return st;
  }
  if (!c.vlan) return Status::ok();
  p->set_vlan(to_vlan_config(*c.vlan));
  pool_.quiesce();                   // no worker uses the old setting any more
  pool_.fdb().remove_port(p->id());  // learned in the old VLANs
  if (spec) spec->vlan = *c.vlan;
  spdlog::info("port {}: VLAN {}", name, vlan_json(*c.vlan).dump());
  // A TAP into a tunnel's VLAN, out of it, or a segment onto another VLAN.
  if (dynamic_cast<ports::TapPort*>(p) || dynamic_cast<ports::VxlanPort*>(p)) refresh_tap_mtus();
  return Status::ok();
}

json Daemon::start_capture(const json& req) {
  auto fail = [](const std::string& why) { return json{{"ok", false}, {"error", why}}; };
  if (!req.contains("port") || !req["port"].is_string())
    return fail("capture: missing string field 'port'");
  const std::string name = req["port"];
  ports::Port* p = find_port(name);
  if (!p) return fail("no port named " + short_string(name));
  CaptureRequest cr;
  const std::string dir = req.value("direction", std::string("both"));
  if (dir == "rx")
    cr.dirs = uint8_t(net::CaptureDir::kRx);
  else if (dir == "tx")
    cr.dirs = uint8_t(net::CaptureDir::kTx);
  else if (dir != "both")
    return fail("capture: direction must be rx, tx or both, not " + short_string(dir));
  cr.filter = req.value("filter", std::string());
  const int64_t count = req.value("count", int64_t(0));
  if (count < 0) return fail("capture: count must be >= 0");
  cr.count = uint64_t(count);
  const int64_t snaplen = req.value("snaplen", int64_t(CaptureRequest::kDefaultSnaplen));
  if (snaplen < 64 || snaplen > int64_t(CaptureRequest::kDefaultSnaplen))
    return fail(fmt::format("capture: snaplen must be 64..{}", CaptureRequest::kDefaultSnaplen));
  cr.snaplen = uint32_t(snaplen);
  auto cap = captures_->prepare(cr);
  if (!cap) return fail(cap.message());
  const uint32_t snap = (*cap)->snaplen();
  // The port is looked up again once the reply is out: it may be gone by then.
  control_->hand_off([this, name, cr, c = std::move(*cap)](UniqueFd fd) mutable {
    if (ports::Port* port = find_port(name))
      captures_->start(*port, std::move(c), cr, std::move(fd));
  });
  return {
      {"ok", true}, {"port", name}, {"direction", dir}, {"linktype", "EN10MB"}, {"snaplen", snap}};
}

json Daemon::handle(const json& req) {
  auto fail = [](const std::string& why) { return json{{"ok", false}, {"error", why}}; };
  if (!req.is_object() || !req.contains("cmd") || !req["cmd"].is_string())
    return fail("request must be an object with a string \"cmd\"");
  const std::string cmd = req["cmd"];
  if (handed_over_) return fail("this vnetd has handed over to its successor and is exiting");
  if (cmd == "version") return {{"ok", true}, {"version", kVersion}};
  if (cmd == "ports") {
    json list = json::array();
    for (auto& p : ports_) list.push_back(port_json(*p));
    return {{"ok", true}, {"ports", list}};
  }
  if (cmd == "counters") {
    json out = json::object();
    if (req.contains("port") && !req["port"].is_string())
      return fail("counters: field 'port' must be a string");
    std::string only = req.value("port", "");
    for (auto& p : ports_)
      if (only.empty() || p->name() == only) out[p->name()] = counters_json(*p);
    if (!only.empty() && out.empty()) return fail("no port named " + short_string(only));
    json w = worker_totals_json();
    json reply{
        {"ok", true}, {"counters", out}, {"worker", w}, {"control", control_->counters_json()}};
    if (captures_) reply["captures"] = captures_->counters_json();
    if (metrics_) {
      const auto& mc = metrics_->counters();
      reply["metrics"] = {{"port", metrics_->port()},
                          {"clients", metrics_->client_count()},
                          {"accepted", mc.accepted.get()},
                          {"scrapes", mc.scrapes.get()},
                          {"bad_requests", mc.bad_requests.get()},
                          {"evicted", mc.evicted.get()},
                          {"timeouts", mc.timeouts.get()},
                          {"write_errors", mc.write_errors.get()}};
    }
    return reply;
  }
  if (cmd == "fdb") return fdb_chunk(req);
  if (cmd == "trace") return trace(req);
  if (cmd == "capture") return start_capture(req);
  if (cmd == "workers") return {{"ok", true}, {"workers", workers_json()}};
  if (cmd == "add-port") {
    if (!req.contains("port")) return fail("add-port: missing \"port\" object");
    auto spec = parse_port(req["port"], "add-port");
    if (!spec) return fail(spec.message());
    Status st = add_port(*spec);
    if (!st) return fail(st.message());
    return {{"ok", true}};
  }
  if (cmd == "set-port") {
    if (!req.contains("name") || !req["name"].is_string())
      return fail("set-port: missing \"name\" string");
    const std::string name = req["name"];
    ports::Port* p = find_port(name);
    if (!p) return fail("no port named " + short_string(name));
    auto change = parse_set_port(p, req);
    if (!change) return fail(change.message());
    Status st = change_port(p, *change);
    if (!st) return fail(st.message());
    return {{"ok", true}};
  }
  if (cmd == "reload") return reload();
  if (cmd == "upgrade") return upgrade(req);
  if (cmd == "del-port") {
    if (!req.contains("name") || !req["name"].is_string())
      return fail("del-port: missing \"name\" string");
    Status st = remove_port(req["name"].get<std::string>());
    if (!st) return fail(st.message());
    return {{"ok", true}};
  }
  if (cmd == "fdb-flush") {
    pool_.fdb().flush();
    return {{"ok", true}};
  }
  return fail("unknown command '" + short_string(cmd) + "'");
}

}  // namespace vnet::control
