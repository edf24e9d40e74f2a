// Daemon: what vnetd is. Owns the control event loop, the data-plane workers, the
// ports and the control socket, and answers vnetctl's requests.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/event_loop.h"
#include "common/result.h"
#include "control/config.h"
#include "dataplane/worker_pool.h"
#include "ports/port.h"
#include "ports/tap_port.h"
#include "ports/vhost_user_port.h"
#include "ports/vni_steering.h"

namespace vnet::control {

class EvpnSync;

class CaptureSessions;
class ControlServer;
class MetricsServer;

struct DaemonConfig {
  std::vector<PortSpec> ports;
  std::string control_path;
  dataplane::PoolConfig workers;
  // Data path of TAP ports that do not choose one (PortSpec::io).
  ports::TapIo tap_io = ports::TapIo::kAuto;
  // The control socket's and (unless a port says otherwise) every vhost-user server
  // socket's mode, owner and group.
  SocketPerms socket_perms;
  // Control clients that send no request for this long are closed, and so are request
  // lines not finished this long after their first byte (ControlServerLimits).
  std::chrono::milliseconds control_idle_timeout{60000};
  std::chrono::milliseconds control_request_timeout{10000};
  // The Prometheus endpoint, "ADDRESS:PORT" ([metrics] listen, --metrics-listen);
  // empty: off.
  std::string metrics_listen;
  // The configuration file vnetd started from (empty: none) and what it said. A reload
  // (vnetctl reload, SIGHUP) reads it again and applies the difference to the ports it
  // lists (daemon_reload.cc); ports from the command line or vnetctl add-port stay.
  std::string config_file;
  FileConfig file;
  // Hot upgrade (control/handover.h): the command line and binary a successor is
  // started with, and (in a successor) the hand-over socket from its predecessor (-1: none).
  std::vector<std::string> argv;
  std::string exe;
  int handover_fd = -1;
};

// What set-port (and a reload) changes on a port that stays; each part optional.
struct PortChange {
  std::optional<VlanSpec> vlan;
  std::optional<uint32_t> mtu;  // applied to TAP devices; a vhost-user port's is the front end's
  std::optional<std::vector<uint64_t>> allowed_macs;
  std::optional<sw::PolicerConfig> policing;
  std::optional<size_t> worker;   // move the port (or, with queue, one queue) there
  std::optional<uint32_t> queue;  // with worker
};

class Daemon {
 public:
  explicit Daemon(DaemonConfig cfg);
  ~Daemon();

  // Creates the control socket and the ports and starts the worker.
  Status start();
  // Runs the control loop until SIGINT/SIGTERM or stop().
  void run();
  void stop() { loop_.stop(); }
  EventLoop& loop() { return loop_; }

  // Reads the configuration file again and applies what changed: ports added, removed,
  // changed in place (PortChange) or re-created when their identity (type, socket,
  // interface, queues...) changed; settings that can change live. A file with an error
  // changes nothing. The reply lists what was done (control thread; daemon_reload.cc).
  nlohmann::json reload();

  // One vnetctl request (control thread).
  nlohmann::json handle(const nlohmann::json& req);
  // Every counter in the Prometheus text format (control thread; daemon_metrics.cc).
  std::string metrics_text();
  // The metrics endpoint's bound port (0 when it is off).
  uint16_t metrics_port() const;

 private:
  // What a predecessor handed over for one port (hot upgrade, daemon_upgrade.cc).
  struct Adopted {
    UniqueFd listen, session;                // vhost-user
    std::vector<vhost_user::Message> setup;  // vhost-user session state
    std::vector<UniqueFd> tap_fds;           // tap
    bool tap_created = false;
    UniqueFd vxlan_rx, vxlan_tx;                               // vxlan
    std::vector<std::pair<uint64_t, std::string>> vxlan_macs;  // MAC -> VTEP learned
    int64_t vxlan_steer = -1;  // its index in the reuseport group of its local:port
  };
  // Creates, opens and attaches a port; on failure nothing is left behind. With
  // `adopted`, on what a predecessor handed over, and attached later (pending_attach_).
  Status add_port(const PortSpec& spec, Adopted* adopted = nullptr);
  // vnetctl upgrade (predecessor) and the successor's start (daemon_upgrade.cc).
  nlohmann::json upgrade(const nlohmann::json& req);
  Status start_takeover();
  // The FDB for a successor ([MAC, VLAN, PORT NAME, AGE_MS] each), and a predecessor's
  // entries learned again (returns how many).
  nlohmann::json fdb_json();
  size_t adopt_fdb(const nlohmann::json& entries);
  // Stops every data path for a hand-over (see handover.h), or starts them again.
  Status suspend_data_paths();
  void resume_data_paths();
  struct PendingAttach {
    ports::Port* port;
    size_t worker;
    bool spread;
  };
  std::vector<PendingAttach> pending_attach_;
  bool handed_over_ = false;  // the successor runs everything: exit, touch nothing
  // control = "evpn" segments, by port name (evpn_sync.h), ticked every 250 ms.
  std::map<std::string, std::unique_ptr<EvpnSync>> evpn_;
  // Segments sharing a local address and UDP port, per "netns/local:port": one
  // reuseport group each, steered by VNI. A successor joins what it adopted in the
  // predecessor's group order (pending_steer_: key, index, fd, VNI) once all are there.
  std::map<std::string, ports::VniSteering> steering_;
  std::vector<std::tuple<std::string, int64_t, int, uint32_t>> pending_steer_;
  static std::string steer_key(const PortSpec& s);
  void join_pending_steering();
  bool evpn_timer_armed_ = false;
  void arm_evpn_timer();
  // Detaches a port from the worker and destroys it (ends its session, removes its
  // socket or TAP).
  Status remove_port(const std::string& name);
  ports::Port* find_port(const std::string& name);
  nlohmann::json port_json(ports::Port& p);
  static nlohmann::json counters_json(ports::Port& p);
  // One chunk of an FDB dump (the "fdb" request, daemon.cc).
  nlohmann::json fdb_chunk(const nlohmann::json& req);
  nlohmann::json trace(const nlohmann::json& req);  // vnetctl trace (trace.h)
  static constexpr int64_t kFdbChunkMax = 1024;     // entries per reply at most
  static constexpr uint32_t kFdbScanSlots = 65536;  // table slots looked at per request
  nlohmann::json workers_json();
  nlohmann::json queues_json(ports::Port& p, const ports::PortInfo& info);
  nlohmann::json worker_totals_json();
  // set-port NAME worker=K.
  Status move_port(ports::Port* p, size_t worker);
  // Applies a checked change to a port (set-port, reload) and records it in its spec.
  Status change_port(ports::Port* p, const PortChange& c);
  // set-port's request as a PortChange, checked against the port.
  Result<PortChange> parse_set_port(ports::Port* p, const nlohmann::json& req);
  PortSpec* spec_of(const std::string& name);
  // The MTU of a TAP port vnetd created and whose spec names none: the smallest inner
  // MTU of the segments (VXLAN ports) carrying one of its VLANs, 0 when none does (the
  // kernel's default, 1500). refresh_tap_mtus() applies it to every such TAP, after a
  // segment came, went or changed VLAN, or a TAP's VLANs changed.
  uint32_t tunnel_mtu(const VlanSpec& vlan) const;
  void refresh_tap_mtus();
  // The STATUS= line for the service manager.
  std::string status_text() const;
  // reload(): the new file's ports against the running ones.
  Result<nlohmann::json> apply_file(const FileConfig& next);
  // "capture": checks the request and compiles its filter; after the reply the
  // connection carries the pcapng stream (control/capture_sessions.h).
  nlohmann::json start_capture(const nlohmann::json& req);

  DaemonConfig cfg_;
  EventLoop loop_;
  dataplane::WorkerPool pool_;
  // Each port's executor; declared before ports_ so that it outlives its port (a port's
  // destructor still runs its last changes through it).
  std::map<const ports::Port*, std::unique_ptr<dataplane::PortExecutor>> executors_;
  std::vector<std::unique_ptr<ports::Port>> ports_;
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<CaptureSessions> captures_;
  std::unique_ptr<MetricsServer> metrics_;
  UniqueFd signal_fd_;
  std::vector<std::pair<std::string, PortSpec>> specs_;  // by port name, for vnetctl
  uint16_t next_port_id_ = 1;
  std::set<std::string> file_ports_;  // ports the configuration file owns (reload)
};

}  // namespace vnet::control
