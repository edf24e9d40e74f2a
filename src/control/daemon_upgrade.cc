// Hot upgrade: `vnetctl upgrade` on the running vnetd (the predecessor) and the start of
// the vnetd it hands everything to (the successor). Protocol and state: handover.h.
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <thread>

#include "common/log.h"
#include "control/capture_sessions.h"
#include "control/control_server.h"
#include "control/daemon.h"
#include "control/handover.h"
#include "control/metrics_server.h"
#include "control/service_notify.h"
#include "control/version.h"
#include "dataplane/forwarder.h"
#include "ports/vxlan_port.h"

extern char** environ;

namespace vnet::control {

using nlohmann::json;
namespace ho = handover;
using Clock = std::chrono::steady_clock;

namespace {

void reap(pid_t pid) {
  int st;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
}

// What became of a child that stopped talking: "exited with status 1", ... (reaped), or
// empty while it still runs.
std::string child_end(pid_t pid) {
  int st = 0;
  pid_t r = ::waitpid(pid, &st, WNOHANG);
  if (r != pid) return "";
  if (WIFEXITED(st)) return fmt::format("exited with status {}", WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return fmt::format("was killed by signal {}", WTERMSIG(st));
  return "ended";
}

// The successor failed before commit: gone for good, by its pid.
std::string end_child(pid_t pid) {
  for (int i = 0; i < 20; ++i) {  // it may be exiting on its own (up to 100 ms)
    std::string how = child_end(pid);
    if (!how.empty()) return how;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  reap(pid);
  return "was stopped (SIGKILL)";
}

}  // namespace

Status Daemon::suspend_data_paths() {
  // 1. TAP and VXLAN reads held; an io_uring read cancelled still delivers what it read,
  // to guest rings that still run.
  std::vector<std::pair<ports::Port*, std::vector<size_t>>> taps;
  for (auto& p : ports_) {
    ports::Port* t = p.get();
    if (dynamic_cast<ports::VhostUserPort*>(t)) continue;
    auto owners = pool_.queue_owners(t);
    for (uint32_t q = 0; q < t->rx_queues() && q < owners.size(); ++q)
      pool_.worker(owners[q]).run_sync([t, q] { t->hold_reads(q, true); });
    taps.emplace_back(t, std::move(owners));
  }
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  for (;;) {
    bool drained = true;
    for (auto& tap : taps) {
      ports::Port* t = tap.first;  // not a structured binding: lambdas capture it
      const auto& owners = tap.second;
      for (uint32_t q = 0; q < t->rx_queues() && q < owners.size(); ++q) {
        bool d = false;
        pool_.worker(owners[q]).run_sync([t, q, &d] { d = t->reads_drained(q); });
        drained = drained && d;
      }
    }
    if (drained) break;
    if (Clock::now() > deadline) {
      resume_data_paths();
      return Status::error("TAP and VXLAN reads did not drain within 2 s");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  // 2. The guests' transmitqs, then (every frame taken from them forwarded) their receiveqs.
  for (bool odd : {true, false}) {
    for (auto& p : ports_) {
      auto* v = dynamic_cast<ports::VhostUserPort*>(p.get());
      if (!v || !v->endpoint()) continue;
      if (Status st = v->endpoint()->suspend(odd); !st) {
        resume_data_paths();
        return st;
      }
    }
  }
  return Status::ok();
}

void Daemon::resume_data_paths() {
  for (auto& p : ports_) {
    if (auto* v = dynamic_cast<ports::VhostUserPort*>(p.get())) {
      if (v->endpoint()) v->endpoint()->resume();
    } else {
      ports::Port* t = p.get();
      auto owners = pool_.queue_owners(t);
      for (uint32_t q = 0; q < t->rx_queues() && q < owners.size(); ++q)
        pool_.worker(owners[q]).run_sync([t, q] { t->hold_reads(q, false); });
    }
  }
}

json Daemon::fdb_json() {
  // Copied out under the FDB's lock, named after it is released.
  struct Raw {
    uint64_t mac;
    uint16_t vlan, port;
    uint64_t age_ms;
  };
  std::vector<Raw> raw;
  raw.reserve(pool_.fdb().size() + 64);
  pool_.fdb().for_each(dataplane::Forwarder::monotonic_ns(),
                       [&](sw::Mac m, uint16_t v, uint16_t port, uint64_t age_ns) {
                         if (raw.size() < raw.capacity())
                           raw.push_back({m.raw(), v, port, age_ns / 1000000});
                       });
  json out = json::array();
  for (const auto& r : raw)
    for (const auto& p : ports_)
      if (p->id() == r.port) {
        out.push_back({r.mac, r.vlan, p->name(), r.age_ms});
        break;
      }
  return out;
}

size_t Daemon::adopt_fdb(const json& entries) {
  // Untrusted like the rest: an entry that is not [MAC, VLAN, PORT, AGE_MS] with a
  // unicast MAC, a VLAN below 4096, a port of this vnetd and an age below the FDB's is
  // skipped. The age is kept (the entry is learned that long ago).
  if (!entries.is_array()) return 0;
  auto& fdb = pool_.fdb();
  const uint64_t now = dataplane::Forwarder::monotonic_ns();
  size_t n = 0;
  for (const auto& e : entries) {
    if (!e.is_array() || e.size() != 4 || !e[0].is_number_unsigned() ||
        !e[1].is_number_unsigned() || !e[2].is_string() || !e[3].is_number_unsigned())
      continue;
    const auto mac = sw::Mac::from_raw(e[0].get<uint64_t>());
    const uint64_t vlan = e[1].get<uint64_t>(), age_ms = e[3].get<uint64_t>();
    ports::Port* p = find_port(e[2].get_ref<const std::string&>());
    if (!p || vlan > 4095 || (e[0].get<uint64_t>() >> 48) || mac.is_zero() || mac.is_multicast() ||
        age_ms * 1000000 >= fdb.age_ns() || age_ms * 1000000 > now)
      continue;
    if (fdb.learn(mac, uint16_t(vlan), p->id(), now - age_ms * 1000000) == sw::Fdb::Learn::kLearned)
      ++n;
  }
  return n;
}

json Daemon::upgrade(const json& req) {
  auto fail = [](const std::string& why) {
    spdlog::error("vnetd: upgrade refused: {}", why);
    return json{{"ok", false}, {"error", "upgrade: " + why}};
  };
  std::string binary = cfg_.exe;
  if (req.contains("binary")) {
    if (!req["binary"].is_string() || req["binary"].get_ref<const std::string&>().empty())
      return fail("\"binary\" must be a non-empty path");
    binary = req["binary"];
  }
  double timeout_s = 10;
  if (req.contains("timeout")) {
    if (!req["timeout"].is_number() || req["timeout"].get<double>() <= 0 ||
        req["timeout"].get<double>() > 300)
      return fail("\"timeout\" must be a number of seconds in (0, 300]");
    timeout_s = req["timeout"];
  }
  if (binary.empty() || cfg_.argv.empty()) return fail("vnetd does not know its command line");
  if (::access(binary.c_str(), X_OK) != 0)
    return fail(fmt::format("cannot execute {}: {}", binary, strerror(errno)));

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return fail(fmt::format("socketpair: {}", strerror(errno)));
  UniqueFd mine(sv[0]), theirs(sv[1]);
  // Everything the child needs is built before fork: after it, only exec.
  std::vector<std::string> env;
  const std::string key = std::string(ho::kFdEnv) + "=";
  for (char** e = environ; e && *e; ++e)
    if (std::strncmp(*e, key.c_str(), key.size()) != 0) env.emplace_back(*e);
  env.push_back(key + std::to_string(theirs.get()));
  std::vector<char*> av, ev;
  for (auto& a : cfg_.argv) av.push_back(const_cast<char*>(a.c_str()));
  av.push_back(nullptr);
  for (auto& e : env) ev.push_back(const_cast<char*>(e.c_str()));
  ev.push_back(nullptr);
  const int child_fd = theirs.get();
  pid_t pid = ::fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::fcntl(child_fd, F_SETFD, 0);  // the one fd the successor inherits
    ::execve(binary.c_str(), av.data(), ev.data());
    _exit(127);
  }
  theirs.reset();
  if (pid < 0) return fail(fmt::format("fork: {}", strerror(errno)));
  spdlog::info("vnetd: upgrade: started {} (pid {})", binary, pid);

  const auto deadline = Clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
  auto hello = ho::recv_json(mine.get(), deadline, 4096);
  if (!hello) {
    std::string how = end_child(pid);
    return fail(fmt::format("the new vnetd (pid {}) {} before the hand-over ({})", pid, how,
                            hello.message()));
  }
  if (!hello->contains("hello") || (*hello)["hello"] != ho::kHandoverVersion) {
    std::string how = end_child(pid);
    return fail(fmt::format("the new vnetd (pid {}) speaks hand-over version {}, not {}; it {}",
                            pid, hello->value("hello", json()).dump(), ho::kHandoverVersion, how));
  }
  const std::string new_version = hello->value("version", std::string("?"));

  // From here on the data paths stand still until the successor runs them (or we resume).
  const auto t0 = Clock::now();
  if (Status st = suspend_data_paths(); !st) {
    std::string how = end_child(pid);
    return fail(fmt::format("{}; the new vnetd {}", st.message(), how));
  }
  ho::FdTable fds;
  json state = {{"handover", ho::kHandoverVersion}, {"version", kVersion}};
  json counters = json::object();
  Status built = Status::ok();
  auto dup = [](int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); };
  state["control"] = fds.add(dup(control_->listen_fd()));
  state["metrics"] = metrics_ ? fds.add(dup(metrics_->listen_fd())) : json(nullptr);
  state["file_ports"] = json(std::vector<std::string>(file_ports_.begin(), file_ports_.end()));
  json plist = json::array();
  for (auto& p : ports_) {
    const PortSpec* spec = spec_of(p->name());
    if (!spec) {
      built = Status::errorf("port {} has no spec", p->name());
      break;
    }
    json pj = {{"spec", ho::spec_json(*spec)}};
    if (auto* v = dynamic_cast<ports::VhostUserPort*>(p.get())) {
      auto h = v->endpoint()->save();
      if (!h) {
        built = h.status();
        break;
      }
      pj["vhost"] = {{"listen", fds.add(std::move(h->listen))},
                     {"session", fds.add(std::move(h->session))},
                     {"setup", ho::messages_json(h->state.setup, fds)},
                     {"start_rx", ho::messages_json(h->state.start_rx, fds)},
                     {"start_tx", ho::messages_json(h->state.start_tx, fds)}};
    } else if (auto* t = dynamic_cast<ports::TapPort*>(p.get())) {
      auto tf = t->dup_fds();
      if (!tf) {
        built = tf.status();
        break;
      }
      json arr = json::array();
      for (auto& f : *tf) arr.push_back(fds.add(std::move(f)));
      pj["tap"] = {{"fds", arr}, {"created", t->created()}};
    } else if (auto* x = dynamic_cast<ports::VxlanPort*>(p.get())) {
      auto xf = x->dup_fds();
      if (!xf) {
        built = xf.status();
        break;
      }
      json macs = json::array();
      for (const auto& [mac, vtep] : x->learned_macs()) macs.push_back({mac, vtep});
      int64_t steer = -1;  // its index in the reuseport group of its local:port
      if (const PortSpec* s = spec_of(p->name()))
        if (auto g = steering_.find(steer_key(*s)); g != steering_.end())
          for (size_t i = 0; i < g->second.members().size(); ++i)
            if (g->second.members()[i].first == x->rx_fd()) steer = int64_t(i);
      pj["vxlan"] = {{"rx", fds.add(std::move(xf->first))},
                     {"tx", fds.add(std::move(xf->second))},
                     {"macs", std::move(macs)},
                     {"steer", steer}};
    }
    counters[p->name()] = counters_json(*p);
    plist.push_back(std::move(pj));
  }
  state["ports"] = std::move(plist);
  state["fdb"] = fdb_json();
  state["fd_count"] = fds.fds().size();
  if (built) built = ho::send_json(mine.get(), state);
  if (built) built = ho::send_fds(mine.get(), fds.fds());
  fds.fds().clear();  // our copies of what was sent
  json ready;
  if (built) {
    auto r = ho::recv_json(mine.get(), deadline, 1 << 20);
    if (!r)
      built = Status::errorf("no answer from the new vnetd: {}", r.message());
    else if (!r->value("ready", false))
      built = Status::errorf("the new vnetd refused the state: {}",
                             r->value("error", std::string("(no reason given)")));
  }
  if (!built) {
    std::string how = end_child(pid);
    resume_data_paths();
    return fail(fmt::format("{}; the new vnetd (pid {}) {}; this vnetd goes on", built.message(),
                            pid, how));
  }

  // Commit: the successor runs the data paths; this vnetd never resumes them.
  handed_over_ = true;
  Status commit = ho::send_json(mine.get(), json{{"commit", true}});
  auto done = commit ? ho::recv_json(mine.get(), Clock::now() + std::chrono::seconds(10), 4096)
                     : Result<json>(commit);
  const double pause_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  control_->release();
  if (metrics_) metrics_->release();
  for (auto& p : ports_)
    if (auto* v = dynamic_cast<ports::VhostUserPort*>(p.get()))
      if (v->endpoint()) v->endpoint()->release();
  // The service manager follows the new main process (Type=notify, NotifyAccess=main).
  notify_service(fmt::format("MAINPID={}\nSTATUS=handed over to pid {}", pid, pid));
  loop_.add_timer(std::chrono::milliseconds(0), [this] { loop_.stop(); });
  json reply = {{"ok", true},       {"old_pid", ::getpid()},  {"pid", pid},
                {"binary", binary}, {"version", new_version}, {"pause_ms", pause_ms},
                {"ports", counters}};
  if (!done) {
    spdlog::error("vnetd: upgrade: the new vnetd (pid {}) did not confirm its start: {}", pid,
                  done.message());
    reply["warning"] = "the new vnetd did not confirm its start: " + done.message();
  }
  spdlog::info("vnetd: handed over to pid {} ({} port(s), data path paused {:.1f} ms); exiting",
               pid, ports_.size(), pause_ms);
  return reply;
}

Status Daemon::start_takeover() {
  UniqueFd sock(cfg_.handover_fd);
  cfg_.handover_fd = -1;
  // Whatever fails before commit ends this process at once: the predecessor still runs
  // everything, and destructors here would close or unlink what is its.
  auto abort = [&](const Status& st) {
    spdlog::error("vnetd: taking over failed: {}", st.message());
    (void)ho::send_json(sock.get(), json{{"ready", false}, {"error", st.message()}});
    ho::drain(sock.get());
    _exit(1);
  };
  if (Status st = ho::send_json(
          sock.get(),
          json{{"hello", ho::kHandoverVersion}, {"version", kVersion}, {"pid", ::getpid()}});
      !st)
    abort(st);
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  auto state = ho::recv_json(sock.get(), deadline);
  if (!state) abort(state.status());
  json& s = *state;
  if (s.value("handover", json()) != ho::kHandoverVersion)
    abort(Status::errorf("state of hand-over version {}, this vnetd reads {}",
                         s.value("handover", json()).dump(), ho::kHandoverVersion));
  if (!s.contains("fd_count") || !s["fd_count"].is_number_unsigned() ||
      s["fd_count"].get<uint64_t>() > ho::kMaxFds)
    abort(Status::error("state: bad fd_count"));
  auto fdv = ho::recv_fds(sock.get(), s["fd_count"].get<size_t>(), deadline);
  if (!fdv) abort(fdv.status());
  ho::FdTable fds;
  fds.set(std::move(*fdv));
  if (!s.contains("ports") || !s["ports"].is_array()) abort(Status::error("state: no ports"));

  ControlServerLimits limits;
  limits.perms = cfg_.socket_perms;
  limits.idle_timeout = cfg_.control_idle_timeout;
  limits.request_timeout = cfg_.control_request_timeout;
  auto cfd = fds.take(s.value("control", json()), "control socket");
  if (!cfd) abort(cfd.status());
  auto server = ControlServer::adopt(
      loop_, cfg_.control_path, std::move(*cfd), [this](const json& req) { return handle(req); },
      limits);
  if (!server) abort(server.status());
  control_ = std::move(*server);
  captures_ = std::make_unique<CaptureSessions>(loop_, pool_);
  auto mfd = fds.take(s.value("metrics", json()), "metrics socket");
  if (!mfd) abort(mfd.status());
  if (*mfd) {
    auto metrics = MetricsServer::adopt(loop_, std::move(*mfd), [this] { return metrics_text(); });
    if (!metrics) abort(metrics.status());
    metrics_ = std::move(*metrics);
  }

  pool_.start();
  struct Starts {
    ports::VhostUserPort* port;
    std::vector<vhost_user::Message> rx, tx;
  };
  std::vector<Starts> starts;
  for (const auto& pj : s["ports"]) {
    if (!pj.is_object() || !pj.contains("spec")) abort(Status::error("state: malformed port"));
    auto spec = ho::spec_from_json(pj["spec"]);
    if (!spec) abort(spec.status());
    Adopted a;
    std::vector<vhost_user::Message> start_rx, start_tx;
    const std::string what = "port " + spec->name;
    if (spec->type == "vhost-user") {
      if (!pj.contains("vhost") || !pj["vhost"].is_object())
        abort(Status::errorf("{}: no vhost-user state", what));
      const json& v = pj["vhost"];
      auto l = fds.take(v.value("listen", json()), what);
      if (!l) abort(l.status());
      auto ss = fds.take(v.value("session", json()), what);
      if (!ss) abort(ss.status());
      auto setup = ho::messages_from_json(v.value("setup", json::array()), fds, what);
      if (!setup) abort(setup.status());
      auto srx = ho::messages_from_json(v.value("start_rx", json::array()), fds, what);
      if (!srx) abort(srx.status());
      auto stx = ho::messages_from_json(v.value("start_tx", json::array()), fds, what);
      if (!stx) abort(stx.status());
      a.listen = std::move(*l);
      a.session = std::move(*ss);
      a.setup = std::move(*setup);
      start_rx = std::move(*srx);
      start_tx = std::move(*stx);
    } else if (spec->type == "vxlan") {
      if (!pj.contains("vxlan") || !pj["vxlan"].is_object())
        abort(Status::errorf("{}: no VXLAN state", what));
      auto rx = fds.take(pj["vxlan"].value("rx", json()), what);
      if (!rx) abort(rx.status());
      auto tx = fds.take(pj["vxlan"].value("tx", json()), what);
      if (!tx) abort(tx.status());
      if (!*rx || !*tx) abort(Status::errorf("{}: a VXLAN socket is null", what));
      a.vxlan_rx = std::move(*rx);
      a.vxlan_tx = std::move(*tx);
      if (const json st = pj["vxlan"].value("steer", json()); st.is_number_integer())
        a.vxlan_steer = st.get<int64_t>();
      // [MAC raw, VTEP] each; anything else is skipped (the port checks the rest).
      const json macs = pj["vxlan"].value("macs", json::array());
      if (macs.is_array())
        for (const auto& m : macs)
          if (m.is_array() && m.size() == 2 && m[0].is_number_unsigned() && m[1].is_string() &&
              a.vxlan_macs.size() < 65536)
            a.vxlan_macs.emplace_back(m[0].get<uint64_t>(), m[1].get<std::string>());
    } else {
      if (!pj.contains("tap") || !pj["tap"].is_object() || !pj["tap"].contains("fds") ||
          !pj["tap"]["fds"].is_array() || !pj["tap"].value("created", json()).is_boolean())
        abort(Status::errorf("{}: no TAP state", what));
      for (const auto& f : pj["tap"]["fds"]) {
        auto fd = fds.take(f, what);
        if (!fd) abort(fd.status());
        if (!*fd) abort(Status::errorf("{}: a TAP fd is null", what));
        a.tap_fds.push_back(std::move(*fd));
      }
      a.tap_created = pj["tap"]["created"].get<bool>();
    }
    if (Status st = add_port(*spec, &a); !st) abort(st);
    if (auto* v = dynamic_cast<ports::VhostUserPort*>(find_port(spec->name)))
      starts.push_back({v, std::move(start_rx), std::move(start_tx)});
  }
  const size_t fdb_n = adopt_fdb(s.value("fdb", json::array()));
  if (s.contains("file_ports") && s["file_ports"].is_array())
    for (const auto& n : s["file_ports"])
      if (n.is_string() && find_port(n.get<std::string>()))
        file_ports_.insert(n.get<std::string>());

  if (Status st = ho::send_json(sock.get(), json{{"ready", true}}); !st) abort(st);
  auto commit = ho::recv_json(sock.get(), Clock::now() + std::chrono::seconds(30), 4096);
  if (!commit || !commit->value("commit", false)) {
    spdlog::error("vnetd: the predecessor did not commit the hand-over ({}); exiting",
                  commit ? "it said no" : commit.message());
    _exit(1);
  }
  // Ours now. In the reverse order of the predecessor's stop, so that no frame finds its
  // way out closed.
  control_->own();
  for (auto& st : starts) st.port->endpoint()->own();
  join_pending_steering();  // the predecessor's groups, in their order
  // Every port a destination before any frame moves: vhost-user ports attached with no
  // ring running, TAPs attached with their reads held (not on a worker yet: no thread
  // reads them). Then every guest's receiveqs, then their transmitqs, then the TAP reads.
  for (const auto& pa : pending_attach_)
    if (!dynamic_cast<ports::VhostUserPort*>(pa.port))
      for (uint32_t q = 0; q < pa.port->rx_queues(); ++q) pa.port->hold_reads(q, true);
  for (const auto& pa : pending_attach_)
    pool_.attach(pa.port, pa.worker, executors_[pa.port].get(), pa.spread);
  for (bool tx : {false, true})
    for (auto& st : starts)
      if (Status r = st.port->endpoint()->start_adopted(tx ? st.tx : st.rx); !r)
        spdlog::error("vnetd: port {}: rings not restarted: {}", st.port->name(), r.message());
  for (const auto& pa : pending_attach_)
    if (!dynamic_cast<ports::VhostUserPort*>(pa.port)) {
      ports::Port* t = pa.port;
      auto owners = pool_.queue_owners(t);
      for (uint32_t q = 0; q < t->rx_queues() && q < owners.size(); ++q)
        pool_.worker(owners[q]).run_sync([t, q] { t->hold_reads(q, false); });
    }
  pending_attach_.clear();
  (void)ho::send_json(sock.get(), json{{"done", true}});
  std::string cpus;
  for (int c : pool_.cpus())
    cpus += (cpus.empty() ? "" : ",") + (c < 0 ? "any" : std::to_string(c));
  spdlog::info(
      "vnetd {}: took over {} port(s) and {} FDB entries from the vnetd before it, {} worker(s) "
      "on cpu {}, control socket {}",
      kVersion, ports_.size(), fdb_n, pool_.size(), cpus, cfg_.control_path);
  notify_service(fmt::format("MAINPID={}\nREADY=1\nSTATUS=", ::getpid()) + status_text());
  return Status::ok();
}

}  // namespace vnet::control
