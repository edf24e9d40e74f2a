// Daemon::reload(): `vnetctl reload` and SIGHUP. The configuration file is read and
// checked as a whole (a bad file changes nothing), then compared with what runs:
//   - a [[port]] that is new is added, one that is gone is removed;
//   - a port whose identity changed (type, socket, mode, interface, namespace, queues,
//     socket permissions, TAP options) is removed and added again;
//   - a port whose VLANs, MTU, allowed MACs, policing or worker changed is changed in
//     place through the set-port path (change_port), its session untouched;
//   - every other port is not touched at all.
// Only ports the file owns are managed: ports from the command line or vnetctl add-port
// stay as they are (a file port may not take one of their names). Global settings that
// can change live (log_level) are applied; the others are reported as needing a restart.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "control/daemon.h"
#include "control/request.h"
#include "control/service_notify.h"

namespace vnet::control {

using nlohmann::json;

namespace {

// What a port is, as opposed to how it is set up: a change here re-creates it.
bool same_identity(const PortSpec& a, const PortSpec& b) {
  return a.type == b.type && a.socket == b.socket && a.client == b.client && a.ifname == b.ifname &&
         a.netns == b.netns && a.attach == b.attach && a.offloads == b.offloads && a.io == b.io &&
         a.queues == b.queues && a.socket_mode == b.socket_mode && a.socket_uid == b.socket_uid &&
         a.socket_gid == b.socket_gid && a.vni == b.vni && a.local == b.local &&
         a.remotes == b.remotes && a.udp_port == b.udp_port && a.control == b.control &&
         a.underlay_mtu == b.underlay_mtu && a.shadow_udp_port == b.shadow_udp_port;
}

// Global settings of the file that take a restart to change, by the name of their field.
std::vector<std::string> restart_needed(const FileConfig& a, const FileConfig& b) {
  std::vector<std::string> out;
  auto check = [&](bool same, const char* field) {
    if (!same) out.emplace_back(field);
  };
  check(a.control_path == b.control_path, "[vnetd] control");
  check(a.tap_io == b.tap_io, "[vnetd] tap_io");
  check(a.socket_perms.mode == b.socket_perms.mode && a.socket_perms.uid == b.socket_perms.uid &&
            a.socket_perms.gid == b.socket_perms.gid,
        "[vnetd] socket_mode/socket_owner/socket_group");
  check(a.control_idle_timeout == b.control_idle_timeout &&
            a.control_request_timeout == b.control_request_timeout,
        "[vnetd] control_idle_timeout/control_request_timeout");
  check(a.worker.cpus == b.worker.cpus && a.worker.idle_poll_us == b.worker.idle_poll_us &&
            a.worker.idle_poll_max_us == b.worker.idle_poll_max_us &&
            a.worker.poll_mode == b.worker.poll_mode,
        "[worker]");
  check(a.fdb_size == b.fdb_size && a.fdb_age == b.fdb_age && a.fdb_port_limit == b.fdb_port_limit,
        "[fdb]");
  check(a.metrics_listen == b.metrics_listen, "[metrics] listen");
  return out;
}

json names(const std::vector<const PortSpec*>& specs) {
  json a = json::array();
  for (const PortSpec* s : specs) a.push_back(s->name);
  return a;
}

}  // namespace

json Daemon::reload() {
  json reply;
  if (cfg_.config_file.empty()) {
    reply = {{"ok", false},
             {"error", "reload: vnetd was started without --config, there is no file to read"}};
    spdlog::error("vnetd: {}", reply["error"].get<std::string>());
    return reply;
  }
  notify_service(reloading_state() + "\nSTATUS=reloading " + cfg_.config_file);
  spdlog::info("vnetd: reloading {}", cfg_.config_file);
  auto next = load_config_file(cfg_.config_file);
  if (!next) {
    reply = {{"ok", false}, {"error", "reload refused, nothing changed: " + next.message()}};
  } else {
    auto applied = apply_file(*next);
    if (applied)
      reply = std::move(*applied);
    else
      reply = {{"ok", false}, {"error", "reload " + applied.message()}};
  }
  if (reply["ok"] == true)
    spdlog::info("vnetd: reloaded {}: {}", cfg_.config_file, reply.dump());
  else
    spdlog::error("vnetd: {}", reply["error"].get<std::string>());
  notify_service("READY=1\nSTATUS=" + status_text());
  return reply;
}

Result<json> Daemon::apply_file(const FileConfig& next) {
  // 1. Sort the file's ports into added, re-created, changed in place and unchanged;
  // check everything before anything changes.
  if (Status st = check_port_workers(next.ports, pool_.size(), cfg_.config_file); !st)
    return Status::errorf("refused, nothing changed: {} (vnetd runs {} worker(s))", st.message(),
                          pool_.size());
  std::vector<const PortSpec*> added, recreated, changed, unchanged;
  std::vector<std::pair<ports::Port*, PortChange>> changes;
  std::vector<PortSpec> removed;  // the running specs of ports removed or re-created
  for (const PortSpec& n : next.ports) {
    ports::Port* p = find_port(n.name);
    if (p && !file_ports_.count(n.name))
      return Status::errorf(
          "refused, nothing changed: port {} of the file exists but was added on the command "
          "line or by vnetctl add-port (vnetctl del-port it first)",
          n.name);
    if (!p) {
      added.push_back(&n);
      continue;
    }
    const PortSpec& old = *spec_of(n.name);
    if (!same_identity(old, n)) {
      recreated.push_back(&n);
      removed.push_back(old);
      continue;
    }
    PortChange c;
    if (n.vlan != old.vlan) c.vlan = n.vlan;
    if (n.mtu != old.mtu) c.mtu = n.mtu ? n.mtu : 1500;
    if (n.allowed_macs != old.allowed_macs) c.allowed_macs = n.allowed_macs;
    if (!(n.policing == old.policing)) c.policing = n.policing;
    if (n.worker >= 0 && size_t(n.worker) != pool_.owner(p)) c.worker = size_t(n.worker);
    if (c.vlan || c.mtu || c.allowed_macs || c.policing || c.worker) {
      changed.push_back(&n);
      changes.emplace_back(p, std::move(c));
    } else {
      unchanged.push_back(&n);
    }
  }
  for (const std::string& name : file_ports_)
    if (const PortSpec* old = spec_of(name);
        old && std::none_of(next.ports.begin(), next.ports.end(),
                            [&](const PortSpec& n) { return n.name == name; }))
      removed.push_back(*old);
  // A new or re-created port may not take the socket or interface of a port that stays.
  auto stays = [&](const std::string& name) {
    return std::none_of(removed.begin(), removed.end(),
                        [&](const PortSpec& r) { return r.name == name; });
  };
  for (const auto* list : {&added, &recreated})
    for (const PortSpec* n : *list)
      for (const auto& [name, s] : specs_)
        if (stays(name) && s.type == n->type &&
            ((n->type == "vhost-user" && s.socket == n->socket) ||
             (n->type == "tap" && s.ifname == n->ifname && s.netns == n->netns) ||
             (n->type == "vxlan" && s.local == n->local && s.udp_port == n->udp_port &&
              s.netns == n->netns)))
          return Status::errorf("refused, nothing changed: port {}: {} is used by port {}", n->name,
                                n->type == "tap" ? "interface " + n->ifname
                                : n->type == "vxlan"
                                    ? fmt::format("VXLAN address {}:{}", n->local, n->udp_port)
                                    : "socket " + n->socket,
                                name);

  // 2. Apply: removals first (a re-created port may keep its socket path), then
  // additions; if one fails, what this reload added goes and what it removed comes back.
  json removed_names = json::array();
  for (const PortSpec& r : removed) {
    Status st = remove_port(r.name);
    if (!st) spdlog::warn("vnetd: reload: {}", st.message());
    file_ports_.erase(r.name);
    const bool again = std::any_of(recreated.begin(), recreated.end(),
                                   [&](const PortSpec* n) { return n->name == r.name; });
    if (!again) removed_names.push_back(r.name);
  }
  std::vector<std::string> done;
  for (const auto* list : {&recreated, &added}) {
    for (const PortSpec* n : *list) {
      Status st = add_port(*n);
      if (st) {
        done.push_back(n->name);
        file_ports_.insert(n->name);
        continue;
      }
      for (const std::string& name : done) {
        (void)remove_port(name);
        file_ports_.erase(name);
      }
      for (const PortSpec& r : removed) {
        if (Status back = add_port(r); !back)
          spdlog::error("vnetd: reload: restoring port {}: {}", r.name, back.message());
        else
          file_ports_.insert(r.name);
      }
      return Status::errorf("refused: {} (the ports it removed or re-created were restored)",
                            st.message());
    }
  }
  for (auto& [p, c] : changes) {
    Status st = change_port(p, c);
    if (!st)
      return Status::errorf("stopped: port {}: {} (the ports before it are changed already)",
                            p->name(), st.message());
  }

  // 3. Global settings.
  json later = json::array();
  for (auto& f : restart_needed(cfg_.file, next)) {
    spdlog::warn("vnetd: reload: {} changed; it takes effect when vnetd restarts", f);
    later.push_back(f);
  }
  if (next.log_level != cfg_.file.log_level) {
    const std::string level = next.log_level.empty() ? "info" : next.log_level;
    spdlog::set_level(spdlog::level::from_str(level));
    spdlog::info("vnetd: log level {}", level);
  }
  // What runs now is this file; the settings that need a restart keep their old value
  // so that the next reload still reports them.
  FileConfig kept = next;
  kept.control_path = cfg_.file.control_path;
  kept.tap_io = cfg_.file.tap_io;
  kept.socket_perms = cfg_.file.socket_perms;
  kept.control_idle_timeout = cfg_.file.control_idle_timeout;
  kept.control_request_timeout = cfg_.file.control_request_timeout;
  kept.worker = cfg_.file.worker;
  kept.fdb_size = cfg_.file.fdb_size;
  kept.fdb_age = cfg_.file.fdb_age;
  kept.fdb_port_limit = cfg_.file.fdb_port_limit;
  kept.metrics_listen = cfg_.file.metrics_listen;
  cfg_.file = std::move(kept);
  return json{{"ok", true},
              {"added", names(added)},
              {"removed", removed_names},
              {"recreated", names(recreated)},
              {"changed", names(changed)},
              {"unchanged", names(unchanged)},
              {"restart_needed", later}};
}

}  // namespace vnet::control
