// vnetctl trace: a dry run of the forwarding decision for one frame (trace.h). The
// steps follow the worker's order (dataplane/forwarder.cc): ingress policing, VLAN
// classification (802.1Q), port security, learning, FDB lookup, storm control, flood.
#include "control/trace.h"

#include <fmt/format.h>

#include <optional>

#include "common/result.h"
#include "control/control_client.h"
#include "control/policing_config.h"
#include "net/packet.h"
#include "switch/mac.h"

namespace vnet::control {

namespace {

using nlohmann::json;

// The frame as given: hex bytes, or built from fields.
Result<std::vector<uint8_t>> frame_of(const json& req) {
  std::vector<uint8_t> f;
  if (req.contains("hex")) {
    if (!req["hex"].is_string()) return Status::error("field 'hex' must be a string");
    const std::string& h = req["hex"].get_ref<const std::string&>();
    int hi = -1;
    for (char c : h) {
      if (c == ':' || c == '-' || c == ' ') {
        if (hi >= 0) return Status::error("field 'hex': odd number of digits in a byte");
        continue;
      }
      const int v = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (v < 0) return Status::errorf("field 'hex': '{}' is not a hex digit", c);
      if (hi < 0) {
        hi = v;
      } else {
        f.push_back(uint8_t(hi << 4 | v));
        hi = -1;
      }
      if (f.size() > 65535) return Status::error("field 'hex': longer than 65535 bytes");
    }
    if (hi >= 0) return Status::error("field 'hex': odd number of digits");
    if (f.size() < net::kEthHdrLen)
      return Status::errorf("field 'hex': {} bytes, an Ethernet frame has at least 14", f.size());
    return f;
  }
  std::optional<sw::Mac> mac[2];
  const char* keys[2] = {"dst", "src"};
  for (int i = 0; i < 2; ++i) {
    if (!req.contains(keys[i]))
      return Status::errorf("missing field '{}' (or give 'hex')", keys[i]);
    if (req[keys[i]].is_string()) mac[i] = sw::Mac::parse(req[keys[i]].get<std::string>());
    if (!mac[i])
      return Status::errorf("field '{}' must be a MAC address like \"52:54:00:12:34:56\"", keys[i]);
    const auto b = mac[i]->to_bytes();
    f.insert(f.end(), b.begin(), b.end());
  }
  auto u16_field = [&](const char* key, int64_t lo, int64_t hi, int64_t dflt) -> Result<int64_t> {
    if (!req.contains(key)) return dflt;
    const json& v = req[key];
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      return Status::errorf("field '{}' must be an integer in [{}, {}]", key, lo, hi);
    return v.get<int64_t>();
  };
  auto vlan = u16_field("vlan", 0, 4094, -1);
  if (!vlan) return vlan.status();
  auto type = u16_field("ethertype", 0x600, 0xffff, 0x0800);
  if (!type) return type.status();
  if (*vlan >= 0) f.insert(f.end(), {0x81, 0x00, uint8_t(*vlan >> 8), uint8_t(*vlan)});
  f.insert(f.end(), {uint8_t(*type >> 8), uint8_t(*type)});
  f.resize(std::max<size_t>(f.size(), 60), 0);  // a minimal frame's payload
  return f;
}

std::string vlan_setting(const net::VlanConfig& v) {
  if (!v.trunk)
    return v.access ? fmt::format("access port of VLAN {}", v.access)
                    : std::string("access port of the untagged domain (VLAN 0)");
  std::string list;
  for (size_t id = 1; id < v.allowed.size(); ++id)
    if (v.allowed[id]) list += (list.empty() ? "" : ",") + std::to_string(id);
  return fmt::format("trunk of VLANs {}, native {}", list.empty() ? "-" : list,
                     v.native ? std::to_string(v.native) : std::string("none"));
}

const char* storm_name(const sw::Mac& dst) {
  if (!dst.is_multicast()) return "unknown_unicast";
  return dst.is_broadcast() ? "broadcast" : "multicast";
}

}  // namespace

json trace_frame(const json& req, const std::vector<TracePort>& ports, const sw::Fdb& fdb,
                 uint64_t now_ns) {
  auto fail = [](const std::string& why) {
    return json{{"ok", false}, {"error", "trace: " + why}};
  };
  if (!req.contains("port") || !req["port"].is_string())
    return fail("missing field 'port' (the port the frame arrives on)");
  const TracePort* in = nullptr;
  for (const auto& p : ports)
    if (p.name == req["port"].get_ref<const std::string&>()) in = &p;
  if (!in) return fail("no port named " + req["port"].get<std::string>().substr(0, 64));
  auto frame = frame_of(req);
  if (!frame) return fail(frame.message());
  const std::vector<uint8_t>& f = *frame;

  json steps = json::array();
  auto step = [&](const char* name, std::string text) {
    steps.push_back({{"step", name}, {"text", std::move(text)}});
  };
  auto name_of = [&](uint16_t id) -> std::string {
    for (const auto& p : ports)
      if (p.id == id) return p.name;
    return fmt::format("(port id {}, gone)", id);
  };
  json reply{{"ok", true}, {"port", in->name}, {"length", f.size()}, {"outputs", json::array()}};
  auto drop = [&](const char* reason) {
    reply["action"] = "drop";
    reply["drop"] = reason;
    reply["steps"] = steps;
    return reply;
  };

  const sw::Mac dst = sw::Mac::from_bytes(f.data());
  const sw::Mac src = sw::Mac::from_bytes(f.data() + 6);
  const net::VlanConfig& v = *in->vlan;
  step("ingress", fmt::format("{} -> {} ({} bytes) on port {} ({}), {}", src.to_string(),
                              dst.to_string(), f.size(), in->name, in->type, vlan_setting(v)));
  const json pol = in->spec ? policing_json(in->spec->policing) : json::object();
  if (pol.contains("ingress") && !pol["ingress"].empty())
    step("policing", fmt::format("ingress policer {}: admitted while its bucket has tokens, else "
                                 "dropped (counter policed)",
                                 pol["ingress"].dump()));

  // VLAN classification, 802.1Q 6.9: as Forwarder's classify().
  const uint16_t type = uint16_t(f[12] << 8 | f[13]);
  uint16_t vlan = 0;
  if (type != 0x8100) {
    if (!v.trunk) {
      vlan = v.access;
      step("vlan", fmt::format("untagged frame on an access port: VLAN {}", vlan));
    } else if (v.native == 0) {
      step("vlan", "untagged frame on a trunk without a native VLAN: dropped");
      return drop("vlan_not_allowed");
    } else {
      vlan = v.native;
      step("vlan", fmt::format("untagged frame on a trunk: its native VLAN {}", vlan));
    }
  } else {
    if (!v.trunk) {
      step("vlan", "802.1Q-tagged frame on an access port: dropped");
      return drop("vlan_tagged_on_access");
    }
    if (f.size() < net::kEthHdrLen + 4) {
      step("vlan", "802.1Q tag cut short: dropped");
      return drop("vlan_not_allowed");
    }
    const uint16_t vid = uint16_t((f[14] << 8 | f[15]) & 0xfff);
    const uint16_t eff = vid ? vid : v.native;
    if (eff == 0 || !(v.allowed[eff] || eff == v.native)) {
      step("vlan", fmt::format("tag VID {}{}: not carried by this trunk: dropped", vid,
                               vid ? "" : " (priority tag, no native VLAN)"));
      return drop("vlan_not_allowed");
    }
    vlan = eff;
    step("vlan", vid ? fmt::format("tag VID {}: VLAN {}, tag removed", vid, vlan)
                     : fmt::format("priority tag (VID 0): the native VLAN {}", vlan));
  }

  if (in->spec && !in->spec->allowed_macs.empty()) {
    bool ok = false;
    for (uint64_t m : in->spec->allowed_macs) ok = ok || m == src.raw();
    if (!ok) {
      step("security",
           fmt::format("source {} is not in the port's allowed_macs: dropped", src.to_string()));
      return drop("port_security");
    }
    step("security", fmt::format("source {} is in the port's allowed_macs", src.to_string()));
  }

  if (src.is_multicast() || src.is_zero()) {
    step("learn",
         fmt::format("{} source address: not learned", src.is_zero() ? "zero" : "multicast"));
  } else {
    const uint16_t at = fdb.lookup(src, vlan, now_ns);
    if (at == in->id)
      step("learn", fmt::format("{} in VLAN {} is known on {}: its entry is refreshed",
                                src.to_string(), vlan, in->name));
    else if (at)
      step("learn", fmt::format("{} in VLAN {} is known on {}: it moves to {}", src.to_string(),
                                vlan, name_of(at), in->name));
    else
      step("learn",
           fmt::format("{} in VLAN {} is new: learned on {}", src.to_string(), vlan, in->name));
  }

  auto output = [&](const TracePort& p) {
    const uint16_t tag = p.vlan->egress_tag(vlan);
    reply["outputs"].push_back({{"port", p.name}, {"vlan", vlan}, {"tag", tag}});
    return tag ? fmt::format("{} (tagged VID {})", p.name, tag) : p.name + " (untagged)";
  };
  if (!dst.is_multicast()) {
    const uint16_t to = fdb.lookup(dst, vlan, now_ns);
    if (to == in->id) {
      step("lookup", fmt::format("{} in VLAN {} is on {}, the port it came from: dropped "
                                 "(worker counter same_port)",
                                 dst.to_string(), vlan, in->name));
      return drop("same_port");
    }
    const TracePort* out = nullptr;
    for (const auto& p : ports)
      if (to && p.id == to) out = &p;
    if (out && out->vlan->member(vlan)) {
      step("lookup", fmt::format("{} in VLAN {} is on {}", dst.to_string(), vlan, out->name));
      step("output", output(*out));
      reply["action"] = "unicast";
      reply["steps"] = steps;
      return reply;
    }
    step("lookup", to ? fmt::format("{} in VLAN {} was learned on {}, no longer in that VLAN: "
                                    "flooded (worker counter stale_port)",
                                    dst.to_string(), vlan, name_of(to))
                      : fmt::format("{} in VLAN {} is not in the FDB: flooded as unknown "
                                    "unicast",
                                    dst.to_string(), vlan));
  } else {
    step("lookup",
         fmt::format("{} destination: flooded", dst.is_broadcast() ? "broadcast" : "multicast"));
  }
  const char* cls = storm_name(dst);
  if (pol.contains("storm") && pol["storm"].contains(cls))
    step("storm", fmt::format("storm control of {} {}: flooded while its bucket has tokens, else "
                              "dropped (counter storm_{})",
                              cls, pol["storm"][cls].dump(), cls));
  std::string outs;
  for (const auto& p : ports) {
    if (&p == in || !p.vlan->member(vlan)) continue;
    outs += (outs.empty() ? "" : ", ") + output(p);
  }
  step("output", outs.empty() ? fmt::format("no other port in VLAN {}: nowhere to go", vlan)
                              : fmt::format("every other port in VLAN {}: {}", vlan, outs));
  reply["action"] = "flood";
  reply["steps"] = steps;
  return reply;
}

std::string format_trace(const json& reply) {
  std::vector<std::vector<std::string>> rows;
  if (reply.contains("steps") && reply["steps"].is_array())
    for (const json& s : reply["steps"]) rows.push_back({cell(s, "step"), cell(s, "text")});
  std::string out = format_table({"STEP", "WHAT"}, rows);
  const std::string action = cell(reply, "action");
  if (action == "drop") return out + "=> drop (" + cell(reply, "drop") + ")\n";
  std::string to;
  if (reply.contains("outputs") && reply["outputs"].is_array())
    for (const json& o : reply["outputs"]) {
      const std::string tag = cell(o, "tag");
      to += (to.empty() ? "" : ", ") + cell(o, "port") +
            (tag == "0" ? std::string(" (untagged)") : " (tag " + tag + ")");
    }
  return out + "=> " + action + " to " + (to.empty() ? std::string("no port") : to) + "\n";
}

}  // namespace vnet::control
