// Configuration parsing: TOML (toml++) is turned into JSON, and one set of checks
// serves both the file and vnetctl's run-time requests.
#include "control/config.h"

#include <arpa/inet.h>

#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "control/metrics_server.h"
#include "control/policing_config.h"
#include "control/request.h"
#include "control/toml_check.h"
#include "ports/tap_port.h"
#include "switch/mac.h"

namespace vnet::control {

using nlohmann::json;

namespace {

// TOML value -> JSON (dates and times are not used by vnet and become strings). The
// nesting is bounded by check_toml_text before toml++ runs, so the recursion is too.
json to_json(const toml::node& n);

json table_to_json(const toml::table& t) {
  json out = json::object();
  for (const auto& [k, v] : t) out[std::string(k.str())] = to_json(v);
  return out;
}

json to_json(const toml::node& n) {
  if (const auto* t = n.as_table()) return table_to_json(*t);
  if (const auto* a = n.as_array()) {
    json arr = json::array();
    for (const auto& v : *a) arr.push_back(to_json(v));
    return arr;
  }
  if (const auto* v = n.as_string()) return v->get();
  if (const auto* v = n.as_integer()) return v->get();
  if (const auto* v = n.as_floating_point()) return v->get();
  if (const auto* v = n.as_boolean()) return v->get();
  std::ostringstream os;
  n.visit([&os](const auto& x) { os << x; });
  return os.str();
}

Status check_keys(const json& j, const std::string& where,
                  std::initializer_list<const char*> known) {
  for (const auto& item : j.items()) {
    const std::string& k = item.key();  // (clang 14 cannot capture a structured binding)
    if (std::none_of(known.begin(), known.end(), [&](const char* n) { return k == n; })) {
      std::string list;
      for (const char* n : known) list += std::string(list.empty() ? "" : ", ") + n;
      return Status::errorf("{}: unknown field '{}' (known: {})", where, short_string(k), list);
    }
  }
  return Status::ok();
}

Result<std::string> get_string(const json& j, const std::string& where, const char* key,
                               bool required) {
  if (!j.contains(key)) {
    if (required) return Status::errorf("{}: missing field '{}'", where, key);
    return std::string();
  }
  if (!j[key].is_string()) return Status::errorf("{}: field '{}' must be a string", where, key);
  return j[key].get<std::string>();
}

Result<int64_t> get_int(const json& j, const std::string& where, const char* key, int64_t lo,
                        int64_t hi, int64_t dflt) {
  if (!j.contains(key)) return dflt;
  const json& v = j[key];
  if (!v.is_number_integer())
    return Status::errorf("{}: field '{}' must be an integer", where, key);
  int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    return Status::errorf("{}: field '{}' = {} is out of range [{}, {}]", where, key, x, lo, hi);
  return x;
}

Result<bool> get_bool(const json& j, const std::string& where, const char* key, bool dflt) {
  if (!j.contains(key)) return dflt;
  if (!j[key].is_boolean())
    return Status::errorf("{}: field '{}' must be true or false", where, key);
  return j[key].get<bool>();
}

// Linux interface names: 1..15 bytes, no '/', whitespace or ':'.
bool valid_ifname(const std::string& s) {
  if (s.empty() || s.size() > 15 || s == "." || s == "..") return false;
  return std::none_of(s.begin(), s.end(),
                      [](char c) { return c == '/' || c == ':' || c <= ' ' || c == 127; });
}

// An IPv4 or IPv6 address in its canonical text (so that equal addresses compare equal
// as strings), or "" if it is neither.
std::string canonical_ip(const std::string& s) {
  in_addr a{};
  in6_addr a6{};
  char b[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET, s.c_str(), &a) == 1) return inet_ntop(AF_INET, &a, b, sizeof(b)) ? b : "";
  if (inet_pton(AF_INET6, s.c_str(), &a6) == 1)
    return inet_ntop(AF_INET6, &a6, b, sizeof(b)) ? b : "";
  return "";
}

bool valid_port_name(const std::string& s) {
  if (s.empty() || s.size() > 32) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return isalnum(uint8_t(c)) || c == '-' || c == '_' || c == '.';
  });
}

// "SOURCE: what" -> "SOURCE: line N: what": N is the line of the field the message
// names ("field 'x'") in table `t`, else the line of the table itself. Semantic errors
// found after parsing thus carry a line as syntax errors do.
// At the top level (`t` is the whole file) only a named field gives a line.
Status with_line(Status st, const toml::node* t, const std::string& source, bool top) {
  if (st || !t) return st;
  const std::string& m = st.message();
  if (m.rfind(source + ": ", 0) != 0) return st;
  std::optional<toml::source_index> line;
  if (!top) line = t->source().begin.line;
  const size_t f = m.find("field '");
  if (const toml::table* tbl = t->as_table(); tbl && f != std::string::npos) {
    const size_t end = m.find('\'', f + 7);
    if (end != std::string::npos)
      if (const toml::node* n = tbl->get(std::string_view(m).substr(f + 7, end - f - 7)))
        line = n->source().begin.line;
  }
  if (!line) return st;
  return Status::errorf("{}: line {}: {}", source, *line, m.substr(source.size() + 2));
}

}  // namespace

Result<VlanSpec> parse_vlan(const json& j, const std::string& where) {
  VlanSpec v;
  const bool has_access = j.contains("vlan"), has_trunk = j.contains("trunk");
  if (has_access && has_trunk)
    return Status::errorf("{}: 'vlan' (access) and 'trunk' are exclusive", where);
  if (has_access) {
    auto tag = get_int(j, where, "vlan", 0, 4094, 0);
    if (!tag) return tag.status();
    v.tag = uint16_t(*tag);
  }
  if (has_trunk) {
    v.mode = VlanSpec::Mode::kTrunk;
    const json& t = j["trunk"];
    if (!t.is_array() || t.empty())
      return Status::errorf("{}: field 'trunk' must be a non-empty list of VLAN ids", where);
    std::set<uint16_t> ids;
    for (const auto& e : t) {
      if (!e.is_number_integer() || e.get<int64_t>() < 1 || e.get<int64_t>() > 4094)
        return Status::errorf("{}: field 'trunk': {} is not a VLAN id in [1, 4094]", where,
                              short_form(e));
      ids.insert(uint16_t(e.get<int64_t>()));
    }
    v.trunks.assign(ids.begin(), ids.end());
    auto native = get_int(j, where, "native", 0, 4094, 0);
    if (!native) return native.status();
    v.native = uint16_t(*native);
  } else if (j.contains("native")) {
    return Status::errorf("{}: field 'native' needs 'trunk'", where);
  }
  return v;
}

json vlan_json(const VlanSpec& v) {
  if (v.mode == VlanSpec::Mode::kAccess) return {{"mode", "access"}, {"vlan", v.tag}};
  return {{"mode", "trunk"}, {"trunk", v.trunks}, {"native", v.native}};
}

// socket_mode ("0660", or a TOML octal integer 0o660), socket_owner and socket_group
// (names or numbers) of `j`, each left at -1 when absent.
Status parse_socket_perms(const json& j, const std::string& where, int* mode, int* uid, int* gid) {
  if (j.contains("socket_mode")) {
    const json& m = j["socket_mode"];
    Result<mode_t> r = Status::error("");
    if (m.is_string() && m.get<std::string>().size() <= 8)
      r = parse_socket_mode(m.get<std::string>());
    else if (m.is_number_integer() && m.get<int64_t>() >= 0 && m.get<int64_t>() <= 07777)
      r = parse_socket_mode(fmt::format("{:o}", m.get<int64_t>()));
    else
      return Status::errorf("{}: field 'socket_mode' must be an octal mode like \"0660\"", where);
    if (!r) return Status::errorf("{}: field 'socket_mode': {}", where, r.message());
    *mode = int(*r);
  }
  for (auto [key, out, is_user] :
       {std::tuple{"socket_owner", uid, true}, std::tuple{"socket_group", gid, false}}) {
    auto name = get_string(j, where, key, false);
    if (!name) return name.status();
    if (name->empty()) continue;
    if (name->size() > kEchoMax || std::any_of(name->begin(), name->end(),
                                               [](char c) { return uint8_t(c) < ' ' || c == 127; }))
      return Status::errorf("{}: field '{}': \"{}\" is not a {} name", where, key,
                            short_string(*name), is_user ? "user" : "group");
    Result<int> id = is_user ? lookup_user(*name) : lookup_group(*name);
    if (!id) return Status::errorf("{}: field '{}': {}", where, key, id.message());
    *out = *id;
  }
  return Status::ok();
}

int max_cpu() {
  long n = sysconf(_SC_NPROCESSORS_CONF);
  return n > 0 ? int(n - 1) : 0;
}

Result<std::vector<int>> parse_cpu_list(const json& j, const std::string& where, int max) {
  if (!j.is_array() || j.empty())
    return Status::errorf("{} must be a non-empty list of CPU numbers", where);
  if (j.size() > size_t(kMaxWorkers))
    return Status::errorf("{}: at most {} workers", where, kMaxWorkers);
  std::vector<int> cpus;
  for (const json& c : j) {
    if (!c.is_number_integer())
      return Status::errorf("{}: CPU '{}' is not an integer", where, short_form(c));
    int64_t v = c.get<int64_t>();
    if (v < 0 || v > max)
      return Status::errorf("{}: CPU {} is out of range [0, {}] (this machine has {} CPUs)", where,
                            v, max, max + 1);
    if (std::find(cpus.begin(), cpus.end(), int(v)) != cpus.end())
      return Status::errorf("{}: CPU {} is listed twice (one worker per CPU)", where, v);
    cpus.push_back(int(v));
  }
  return cpus;
}

Status check_port_workers(const std::vector<PortSpec>& ports, size_t workers,
                          const std::string& where) {
  for (size_t i = 0; i < ports.size(); ++i) {
    if (ports[i].worker >= 0 && size_t(ports[i].worker) >= workers)
      return Status::errorf(
          "{}: port[{}] ({}): field 'worker' = {} but there {} {} worker{} "
          "(0..{})",
          where, i, ports[i].name, ports[i].worker, workers == 1 ? "is" : "are", workers,
          workers == 1 ? "" : "s", workers - 1);
  }
  return Status::ok();
}

// `netns`: a namespace name (ip netns), not a path; absent: vnetd's own.
Status parse_netns(const json& j, const std::string& where, std::string* out) {
  auto ns = get_string(j, where, "netns", false);
  if (!ns) return ns.status();
  if (!ns->empty() && (ns->find('/') != std::string::npos || *ns == "." || *ns == ".."))
    return Status::errorf("{}: field 'netns' must be a namespace name, not a path", where);
  *out = *ns;
  return Status::ok();
}

Result<PortSpec> parse_port(const json& j, const std::string& where_in) {
  if (!j.is_object()) return Status::errorf("{}: a port must be a table/object", where_in);
  PortSpec p;
  auto name = get_string(j, where_in, "name", true);
  if (!name) return name.status();
  p.name = *name;
  if (!valid_port_name(p.name))
    return Status::errorf("{}: port name '{}' must be 1-32 of [A-Za-z0-9._-]", where_in,
                          short_string(p.name));
  const std::string where = where_in + " (" + p.name + ")";
  auto type = get_string(j, where, "type", true);
  if (!type) return type.status();
  p.type = *type;
  Status st;
  if (p.type == "vhost-user") {
    st = check_keys(j, where,
                    {"name", "type", "socket", "mode", "mtu", "vlan", "trunk", "native",
                     "allowed_macs", "worker", "socket_mode", "socket_owner", "socket_group",
                     "ingress_rate", "ingress_burst", "storm", "queues"});
    if (!st) return st;
    auto sock = get_string(j, where, "socket", true);
    if (!sock) return sock.status();
    p.socket = *sock;
    if (p.socket.empty() || p.socket.size() > 107)
      return Status::errorf("{}: field 'socket' must be a path of 1-107 bytes", where);
    auto mode = get_string(j, where, "mode", false);
    if (!mode) return mode.status();
    if (*mode == "client")
      p.client = true;
    else if (!mode->empty() && *mode != "server")
      return Status::errorf("{}: field 'mode' must be \"server\" or \"client\", not \"{}\"", where,
                            short_string(*mode));
    st = parse_socket_perms(j, where, &p.socket_mode, &p.socket_uid, &p.socket_gid);
    if (!st) return st;
    // Queue pairs (virtio 1.2 5.1.4: max_virtqueue_pairs 1..0x8000; vnet offers up to
    // 128, what one byte of steering state per flow holds).
    auto queues = get_int(j, where, "queues", 1, kMaxQueuePairs, kDefaultQueuePairs);
    if (!queues) return queues.status();
    p.queues = uint32_t(*queues);
  } else if (p.type == "tap") {
    st = check_keys(
        j, where,
        {"name", "type", "ifname", "netns", "attach", "offloads", "io", "mtu", "vlan", "trunk",
         "native", "allowed_macs", "worker", "ingress_rate", "ingress_burst", "storm", "queues"});
    if (!st) return st;
    auto ifname = get_string(j, where, "ifname", false);
    if (!ifname) return ifname.status();
    p.ifname = ifname->empty() ? p.name : *ifname;
    if (!valid_ifname(p.ifname))
      return Status::errorf(
          "{}: '{}' is not a valid interface name (1-15 bytes, no '/', ':' or spaces)", where,
          short_string(p.ifname));
    st = parse_netns(j, where, &p.netns);
    if (!st) return st;
    auto attach = get_bool(j, where, "attach", false);
    if (!attach) return attach.status();
    p.attach = *attach;
    auto off = get_bool(j, where, "offloads", true);
    if (!off) return off.status();
    p.offloads = *off;
    auto io = get_string(j, where, "io", false);
    if (!io) return io.status();
    if (!io->empty() && !ports::parse_tap_io(*io))
      return Status::errorf(
          "{}: field 'io' must be \"uring\", \"syscalls\" or \"auto\", not \"{}\"", where,
          short_string(*io));
    p.io = *io;
    // IFF_MULTI_QUEUE with this many fds (Documentation/networking/tuntap.rst).
    auto queues = get_int(j, where, "queues", 1, kMaxTapQueues, 1);
    if (!queues) return queues.status();
    p.queues = uint32_t(*queues);
  } else if (p.type == "vxlan") {
    st = check_keys(j, where,
                    {"name", "type", "vni", "local", "remote", "udp_port", "control", "netns",
                     "underlay_mtu", "shadow_udp_port", "mtu", "vlan", "allowed_macs", "worker",
                     "ingress_rate", "ingress_burst", "storm"});
    if (!st) return st;
    auto vni = get_int(j, where, "vni", 1, 0xffffff, -1);
    if (!vni) return vni.status();
    if (*vni < 0) return Status::errorf("{}: field 'vni' is required", where);
    p.vni = uint32_t(*vni);
    auto local = get_string(j, where, "local", true);
    if (!local) return local.status();
    p.local = canonical_ip(*local);
    if (p.local.empty())
      return Status::errorf("{}: field 'local' must be an IPv4 or IPv6 address, not \"{}\"", where,
                            short_string(*local));
    const bool v6 = p.local.find(':') != std::string::npos;
    if (j.contains("remote")) {
      const json& r = j["remote"];
      constexpr size_t kMaxRemotes = 1024;
      if (!r.is_array() || r.size() > kMaxRemotes)
        return Status::errorf("{}: field 'remote' must be an array of at most {} IP addresses",
                              where, kMaxRemotes);
      for (size_t i = 0; i < r.size(); ++i) {
        const std::string ip = r[i].is_string() ? canonical_ip(r[i].get<std::string>()) : "";
        if (ip.empty() || (ip.find(':') != std::string::npos) != v6)
          return Status::errorf(
              "{}: remote[{}] must be an IPv{} address (the family of 'local'), "
              "not {}",
              where, i, v6 ? 6 : 4, short_form(r[i]));
        if (ip == p.local) return Status::errorf("{}: remote[{}] is the local address", where, i);
        if (std::find(p.remotes.begin(), p.remotes.end(), ip) == p.remotes.end())
          p.remotes.push_back(ip);
      }
    }
    auto port = get_int(j, where, "udp_port", 1, 65535, 4789);
    if (!port) return port.status();
    p.udp_port = uint32_t(*port);
    auto control = get_string(j, where, "control", false);
    if (!control) return control.status();
    if (!control->empty() && *control != "static" && *control != "evpn")
      return Status::errorf("{}: field 'control' must be \"static\" or \"evpn\", not \"{}\"", where,
                            short_string(*control));
    if (!control->empty()) p.control = *control;
    if (p.control == "evpn" && !p.remotes.empty())
      return Status::errorf(
          "{}: field 'remote': with control = \"evpn\" the flood list comes from BGP", where);
    auto shadow = get_int(j, where, "shadow_udp_port", 1, 65535, 4790);
    if (!shadow) return shadow.status();
    p.shadow_udp_port = uint32_t(*shadow);
    st = parse_netns(j, where, &p.netns);
    if (!st) return st;
    // IPv4 + UDP + VXLAN + the inner Ethernet header fit with an inner MTU of 68 at least.
    auto umtu = get_int(j, where, "underlay_mtu", 68 + 50, 65535, 1500);
    if (!umtu) return umtu.status();
    p.underlay_mtu = uint32_t(*umtu);
    if (p.control == "evpn" && p.shadow_udp_port == p.udp_port)
      return Status::errorf("{}: field 'shadow_udp_port' must differ from 'udp_port' ({})", where,
                            p.udp_port);
    p.queues = 1;
  } else {
    return Status::errorf(
        "{}: field 'type' must be \"vhost-user\", \"tap\" or \"vxlan\", not \"{}\"", where,
        short_string(p.type));
  }
  auto mtu = get_int(j, where, "mtu", 68, 65535, 0);
  if (!mtu) return mtu.status();
  p.mtu = uint32_t(*mtu);
  auto worker = get_int(j, where, "worker", 0, kMaxWorkers - 1, -1);
  if (!worker) return worker.status();
  p.worker = int(*worker);
  auto vlan = parse_vlan(j, where);
  if (!vlan) return vlan.status();
  p.vlan = *vlan;
  auto macs = parse_allowed_macs(j, where);
  if (!macs) return macs.status();
  p.allowed_macs = std::move(*macs);
  auto policing = parse_policing(j, where, sw::PolicerConfig{});
  if (!policing) return policing.status();
  p.policing = *policing;
  return p;
}

Result<std::vector<uint64_t>> parse_allowed_macs(const json& j, const std::string& where) {
  std::vector<uint64_t> out;
  if (!j.contains("allowed_macs")) return out;
  const json& a = j["allowed_macs"];
  constexpr size_t kMaxAllowed = 64;
  if (!a.is_array() || a.size() > kMaxAllowed)
    return Status::errorf("{}: field 'allowed_macs' must be an array of at most {} MAC addresses",
                          where, kMaxAllowed);
  for (size_t i = 0; i < a.size(); ++i) {
    std::optional<sw::Mac> m;
    if (a[i].is_string()) m = sw::Mac::parse(a[i].get<std::string>());
    if (!m || m->is_multicast() || m->is_zero())
      return Status::errorf(
          "{}: allowed_macs[{}] must be a unicast MAC like \"52:54:00:12:34:56\", "
          "not {}",
          where, i, short_form(a[i]));
    if (std::find(out.begin(), out.end(), m->raw()) == out.end()) out.push_back(m->raw());
  }
  return out;
}

json allowed_macs_json(const std::vector<uint64_t>& macs) {
  json a = json::array();
  for (uint64_t m : macs) a.push_back(sw::Mac::from_raw(m).to_string());
  return a;
}

namespace {
// The checks of a parsed file; *at is set to the table being checked.
Result<FileConfig> check_config(const json& root, const std::string& source,
                                const toml::table& parsed, const toml::node** at);
}  // namespace

Result<FileConfig> parse_config_toml(const std::string& text, const std::string& source) {
  if (text.size() > kMaxConfigBytes)
    return Status::errorf("{}: larger than {} bytes", source, kMaxConfigBytes);
  // toml++ limits the nesting of arrays and inline tables but not of dotted keys and
  // table headers, and it destroys (and to_json walks) tables recursively: the
  // pre-check bounds every kind of nesting (and checks the syntax) before it runs.
  if (Status st = check_toml_text(text, source); !st) return st;
  json root;
  toml::table parsed;
  try {
    parsed = toml::parse(text, std::string_view(source));
    root = table_to_json(parsed);
  } catch (const toml::parse_error& e) {
    return Status::errorf("{}: line {}: {}", source, e.source().begin.line,
                          short_string(e.description(), 160));
  } catch (const std::exception& e) {
    return Status::errorf("{}: {}", source, e.what());
  } catch (...) {
    return Status::errorf("{}: not a valid TOML file", source);
  }
  // Errors get the line of the table (or [[port]] element) and field they name.
  const toml::node* where = nullptr;
  Result<FileConfig> r = check_config(root, source, parsed, &where);
  if (!r) return with_line(r.status(), where, source, where == &parsed);
  return r;
}

namespace {
Result<FileConfig> check_config(const json& root, const std::string& source,
                                const toml::table& parsed, const toml::node** at) {
  *at = &parsed;
  FileConfig cfg;
  Status st = check_keys(root, source, {"vnetd", "worker", "fdb", "port", "segment", "metrics"});
  if (!st) return st;
  if (root.contains("vnetd")) {
    *at = parsed.get("vnetd");
    const json& v = root["vnetd"];
    std::string w = source + ": [vnetd]";
    if (!v.is_object()) return Status::errorf("{} must be a table", w);
    if (!(st = check_keys(v, w,
                          {"control", "log_level", "tap_io", "socket_mode", "socket_owner",
                           "socket_group", "control_idle_timeout", "control_request_timeout"})))
      return st;
    auto idle = get_int(v, w, "control_idle_timeout", 1, 86400, 0);
    if (!idle) return idle.status();
    cfg.control_idle_timeout = uint32_t(*idle);
    auto request = get_int(v, w, "control_request_timeout", 1, 86400, 0);
    if (!request) return request.status();
    cfg.control_request_timeout = uint32_t(*request);
    int mode = -1, uid = -1, gid = -1;
    if (!(st = parse_socket_perms(v, w, &mode, &uid, &gid))) return st;
    if (mode >= 0) cfg.socket_perms.mode = mode_t(mode);
    cfg.socket_perms.uid = uid;
    cfg.socket_perms.gid = gid;
    auto c = get_string(v, w, "control", false);
    if (!c) return c.status();
    cfg.control_path = *c;
    auto l = get_string(v, w, "log_level", false);
    if (!l) return l.status();
    static const std::set<std::string> levels = {"",     "trace", "debug",    "info",
                                                 "warn", "error", "critical", "off"};
    if (!levels.count(*l))
      return Status::errorf(
          "{}: field 'log_level' must be one of trace, debug, info, warn, error, "
          "critical, off",
          w);
    cfg.log_level = *l;
    auto io = get_string(v, w, "tap_io", false);
    if (!io) return io.status();
    if (!io->empty() && !ports::parse_tap_io(*io))
      return Status::errorf("{}: field 'tap_io' must be \"uring\", \"syscalls\" or \"auto\"", w);
    cfg.tap_io = *io;
  }
  if (root.contains("worker")) {
    *at = parsed.get("worker");
    const json& v = root["worker"];
    std::string w = source + ": [worker]";
    if (!v.is_object()) return Status::errorf("{} must be a table", w);
    if (!(st = check_keys(v, w, {"cpu", "cpus", "idle_poll_us", "idle_poll_max_us", "poll_mode"})))
      return st;
    if (v.contains("cpu") && v.contains("cpus"))
      return Status::errorf("{}: give 'cpus' (a list) or 'cpu', not both", w);
    if (v.contains("cpus")) {
      auto cpus = parse_cpu_list(v["cpus"], w + ": field 'cpus'", max_cpu());
      if (!cpus) return cpus.status();
      cfg.worker.cpus = *cpus;
    } else {
      auto cpu = get_int(v, w, "cpu", -1, max_cpu(), -1);
      if (!cpu) return cpu.status();
      if (*cpu >= 0) cfg.worker.cpus = {int(*cpu)};
    }
    auto idle = get_int(v, w, "idle_poll_us", 0, 10'000'000, 200);
    if (!idle) return idle.status();
    cfg.worker.idle_poll_us = uint32_t(*idle);
    auto idle_max = get_int(v, w, "idle_poll_max_us", 0, 10'000'000, 2000);
    if (!idle_max) return idle_max.status();
    cfg.worker.idle_poll_max_us = uint32_t(*idle_max);
    auto mode = get_string(v, w, "poll_mode", false);
    if (!mode) return mode.status();
    if (!mode->empty()) {
      if (*mode != "adaptive" && *mode != "poll" && *mode != "sleep")
        return Status::errorf("{}: field 'poll_mode' must be adaptive, poll or sleep", w);
      cfg.worker.poll_mode = *mode;
    }
  }
  if (root.contains("fdb")) {
    *at = parsed.get("fdb");
    const json& v = root["fdb"];
    std::string w = source + ": [fdb]";
    if (!v.is_object()) return Status::errorf("{} must be a table", w);
    if (!(st = check_keys(v, w, {"size", "age", "per_port_limit"}))) return st;
    auto size = get_int(v, w, "size", 16, 16 << 20, 8192);
    if (!size) return size.status();
    cfg.fdb_size = uint32_t(*size);
    auto age = get_int(v, w, "age", 1, 1'000'000, 300);
    if (!age) return age.status();
    cfg.fdb_age = uint32_t(*age);
    auto limit = get_int(v, w, "per_port_limit", 0, 16 << 20, 0);
    if (!limit) return limit.status();
    cfg.fdb_port_limit = uint32_t(*limit);
  }
  if (root.contains("metrics")) {
    *at = parsed.get("metrics");
    const json& v = root["metrics"];
    std::string w = source + ": [metrics]";
    if (!v.is_object()) return Status::errorf("{} must be a table", w);
    if (!(st = check_keys(v, w, {"listen"}))) return st;
    auto listen = get_string(v, w, "listen", false);
    if (!listen) return listen.status();
    if (!listen->empty()) {
      auto addr = parse_listen_address(*listen);
      if (!addr) return Status::errorf("{}: field 'listen': {}", w, addr.message());
    }
    cfg.metrics_listen = *listen;
  }
  if (root.contains("port")) {
    *at = &parsed;
    const json& ports = root["port"];
    if (!ports.is_array())
      return Status::errorf("{}: 'port' must be an array of tables ([[port]])", source);
    std::set<std::string> names, sockets, taps;
    for (size_t i = 0; i < ports.size(); ++i) {
      *at = parsed.at_path("port")[i].node();
      auto p = parse_port(ports[i], fmt::format("{}: port[{}]", source, i));
      if (!p) return p.status();
      if (!names.insert(p->name).second)
        return Status::errorf("{}: port[{}]: duplicate port name '{}'", source, i, p->name);
      if (p->type == "vhost-user" && !sockets.insert(p->socket).second)
        return Status::errorf("{}: port[{}] ({}): socket {} is used by another port", source, i,
                              p->name, p->socket);
      if (p->type == "tap" && !taps.insert(p->netns + "/" + p->ifname).second)
        return Status::errorf("{}: port[{}] ({}): interface {} is used by another port", source, i,
                              p->name, p->ifname);
      cfg.ports.push_back(std::move(*p));
    }
  }
  if (root.contains("segment")) {
    *at = &parsed;
    const json& segs = root["segment"];
    if (!segs.is_array())
      return Status::errorf("{}: 'segment' must be an array of tables ([[segment]])", source);
    std::set<std::string> names;
    for (const auto& p : cfg.ports) names.insert(p.name);
    for (size_t i = 0; i < segs.size(); ++i) {
      *at = parsed.at_path("segment")[i].node();
      const std::string w = fmt::format("{}: segment[{}]", source, i);
      if (!segs[i].is_object()) return Status::errorf("{}: a segment must be a table", w);
      json j = segs[i];
      if (j.contains("type")) return Status::errorf("{}: a segment has no field 'type'", w);
      j["type"] = "vxlan";
      if (!j.contains("vni")) return Status::errorf("{}: field 'vni' is required", w);
      if (!j.contains("name") && j["vni"].is_number_integer())
        j["name"] = fmt::format("vxlan{}", j["vni"].get<int64_t>());
      auto p = parse_port(j, w);
      if (!p) return p.status();
      if (!names.insert(p->name).second)
        return Status::errorf("{} ({}): the name is used by another port or segment", w, p->name);
      cfg.ports.push_back(std::move(*p));
    }
  }
  // VXLAN ports may share a local address and UDP port (the datagrams are steered by
  // VNI), but not a VNI there.
  {
    std::set<std::string> endpoints;
    for (const auto& p : cfg.ports)
      if (p.type == "vxlan" &&
          !endpoints.insert(fmt::format("{}/{}:{}/{}", p.netns, p.local, p.udp_port, p.vni)).second)
        return Status::errorf("{}: port {}: another VXLAN port already has VNI {} on {}:{}{}",
                              source, p.name, p.vni, p.local, p.udp_port,
                              p.netns.empty() ? "" : " in netns " + p.netns);
  }
  *at = nullptr;
  st = check_port_workers(cfg.ports, std::max<size_t>(cfg.worker.cpus.size(), 1), source);
  if (!st) return st;
  return cfg;
}
}  // namespace

Result<FileConfig> load_config_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::errorf("cannot read config file {}: {}", path, strerror(errno));
  // At most one byte more than the limit, whatever the file is (/dev/zero included).
  std::string text(kMaxConfigBytes + 1, '\0');
  f.read(text.data(), std::streamsize(text.size()));
  if (f.bad()) return Status::errorf("cannot read config file {}: {}", path, strerror(errno));
  text.resize(size_t(f.gcount()));
  return parse_config_toml(text, path);
}

}  // namespace vnet::control
