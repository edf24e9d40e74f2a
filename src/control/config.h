// Configuration: what vnetd starts with (a TOML file and the command line) and what
// vnetctl asks for at run time (add-port, set-port), checked in one place. Every
// error names the field (and, for files, the line the parser reports) and nothing
// is applied unless the whole request or file is valid.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/socket_perms.h"
#include "switch/policer.h"

namespace vnet::control {

// 802.1Q handling of a port (issue "VLANs"): access ports carry one VLAN untagged
// (0: the port is not in any VLAN, frames untagged); trunk ports carry the listed
// VLANs tagged, and untagged frames in `native` (0: dropped).
constexpr int kMaxWorkers = 64;
constexpr uint32_t kDefaultQueuePairs = 8;
constexpr uint32_t kMaxQueuePairs = 128;
constexpr uint32_t kMaxTapQueues = 16;

struct VlanSpec {
  enum class Mode { kAccess, kTrunk };
  Mode mode = Mode::kAccess;
  uint16_t tag = 0;              // access VLAN
  std::vector<uint16_t> trunks;  // allowed VLANs on a trunk, sorted, unique
  uint16_t native = 0;           // trunk: VLAN of untagged frames
  bool operator==(const VlanSpec&) const = default;
};

struct PortSpec {
  std::string name;
  std::string type;  // "vhost-user" | "tap" | "vxlan"
  // vhost-user
  std::string socket;
  bool client = false;
  // tap
  std::string ifname;
  std::string netns;    // empty: vnetd's own namespace
  bool attach = false;  // use an existing TAP instead of creating one
  bool offloads = true;
  std::string io;  // data path: "uring" | "syscalls" | "auto"; empty: the daemon's default
  // vxlan (a [[segment]]): VNI, local VTEP, flood list, UDP port, control plane, the
  // underlay's MTU; the underlay namespace is `netns`.
  uint32_t vni = 0;
  std::string local;
  std::vector<std::string> remotes;
  uint32_t udp_port = 4789;
  std::string control = "static";  // "static" | "evpn"
  uint32_t underlay_mtu = 1500;
  // evpn: the UDP port of the kernel shadow VXLAN device zebra watches (never carries
  // traffic; must differ from udp_port).
  uint32_t shadow_udp_port = 4790;
  // common
  uint32_t mtu = 0;  // 0: default (1500)
  VlanSpec vlan;
  std::vector<uint64_t> allowed_macs;  // port security (raw sw::Mac); empty: any source
  // vhost-user server socket: mode, owner, group; -1: vnetd's default ([vnetd] socket_*)
  int socket_mode = -1, socket_uid = -1, socket_gid = -1;
  // The worker that polls it (every queue); -1: its queues spread over the workers,
  // starting from the one with the fewest queues.
  int worker = -1;
  // vhost-user: queue pairs offered (VIRTIO_NET_F_MQ above 1), 1..128; 0: default (8).
  // tap: queues (fds of an IFF_MULTI_QUEUE TAP), 1..16; 0: 1.
  uint32_t queues = 0;
  sw::PolicerConfig policing;  // ingress_rate, ingress_burst, storm (policing_config.h)
};

// [worker]: `cpus = [0, 1]` runs one data-plane worker per listed CPU, pinned to it;
// `cpu = N` is the one-element form (-1: one worker, not pinned).
struct WorkerSpec {
  std::vector<int> cpus;  // empty: one worker, not pinned
  uint32_t idle_poll_us = 200;
  uint32_t idle_poll_max_us = 2000;
  std::string poll_mode = "adaptive";  // adaptive | poll | sleep
};

struct FileConfig {
  std::string control_path;  // empty: keep the default
  std::string log_level;     // empty: keep the default
  std::string tap_io;        // [vnetd] tap_io, default data path of TAP ports; empty: auto
  // [vnetd] control_idle_timeout, control_request_timeout (seconds); 0: keep the default
  uint32_t control_idle_timeout = 0;
  uint32_t control_request_timeout = 0;
  WorkerSpec worker;
  uint32_t fdb_size = 8192;
  uint32_t fdb_age = 300;
  uint32_t fdb_port_limit = 0;
  // [vnetd] socket_mode/owner/group: the control socket's and every vhost-user server
  // socket's unless a port says otherwise.
  SocketPerms socket_perms;  // entries one port may hold; 0: no limit but the size
  std::vector<PortSpec> ports;
  std::string metrics_listen;  // [metrics] listen, "ADDRESS:PORT"; empty: off
};

// One port from JSON (vnetctl add-port, or a [[port]] table converted to JSON).
// `where` prefixes error messages ("port[2]", "add-port").
Result<PortSpec> parse_port(const nlohmann::json& j, const std::string& where);
// A VLAN setting: {"vlan": 10} (access) or {"trunk": [10, 20], "native": 1}.
Result<VlanSpec> parse_vlan(const nlohmann::json& j, const std::string& where);
nlohmann::json vlan_json(const VlanSpec& v);
// {"allowed_macs": ["52:54:00:00:00:01", ...]}: unicast, non-zero, at most 64.
Result<std::vector<uint64_t>> parse_allowed_macs(const nlohmann::json& j, const std::string& where);
nlohmann::json allowed_macs_json(const std::vector<uint64_t>& macs);

// A CPU list for workers ("0,1" from the command line): each in [0, max_cpu], no
// duplicates, at most 64. `where` names the option or field in errors.
Result<std::vector<int>> parse_cpu_list(const nlohmann::json& j, const std::string& where,
                                        int max_cpu);
// The highest CPU number this machine has (sysconf(_SC_NPROCESSORS_CONF) - 1).
int max_cpu();
// Checks that every port's worker index is below the number of workers.
Status check_port_workers(const std::vector<PortSpec>& ports, size_t workers,
                          const std::string& where);

// Parses and checks a whole TOML file. Port names must be unique; sockets and TAP
// names too.
Result<FileConfig> load_config_file(const std::string& path);
Result<FileConfig> parse_config_toml(const std::string& text, const std::string& source);

}  // namespace vnet::control
