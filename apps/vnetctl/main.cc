// vnetctl: the command-line client of vnetd. Sends one request over the control socket
// and prints the reply as a table, or as JSON with --json (for scripts).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "control/capture_client.h"
#include "control/control_client.h"
#include "control/top.h"
#include "control/trace.h"
#include "control/version.h"

namespace {

using nlohmann::json;
using vnet::control::ControlClient;

int fail(bool as_json, const std::string& message, const json* reply = nullptr) {
  if (as_json)
    std::cout << (reply ? *reply : json{{"ok", false}, {"error", message}}).dump(2) << "\n";
  std::cerr << "vnetctl: " << message << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "vnetctl: query and control a running vnetd over its control socket.\n"
      "Prints tables by default; --json prints vnetd's reply object instead. Exits with "
      "status 1 if vnetd cannot be reached or reports an error."};
  std::string control = vnet::control::kDefaultControlPath;
  bool as_json = false;
  int timeout_ms = 5000;
  app.add_option("--control,-c", control,
                 "vnetd's control socket (vnetd --control); also from $VNET_CONTROL")
      ->envname("VNET_CONTROL")
      ->capture_default_str();
  app.add_flag("--json,-j", as_json, "Print vnetd's JSON reply (one object) instead of a table");
  app.add_option("--timeout", timeout_ms, "Milliseconds to wait for vnetd, in all")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600 * 1000));
  app.set_version_flag("--version", vnet::control::kVersion);
  app.require_subcommand(1, 1);
  app.fallthrough();  // global options are accepted after the subcommand too

  auto* version = app.add_subcommand("version", "Print the versions of vnetctl and vnetd");
  auto* ports = app.add_subcommand(
      "ports", "List the ports: name, type, mode, connected, socket, negotiated features");
  ports->alias("show");
  auto* counters = app.add_subcommand(
      "counters", "Per-port RX/TX packets and bytes and non-zero drops, then worker counters");
  std::string counters_port;
  counters->add_option("PORT", counters_port, "Only this port");
  auto* workers = app.add_subcommand(
      "workers",
      "Per data-plane worker: CPU, ports it polls, packets, busy and idle cycles, cycles per "
      "packet, wake-ups, sleeps");
  auto* capture = app.add_subcommand(
      "capture",
      "Capture a port's frames as pcapng (-w FILE, -w - for stdout; default: stdout when it "
      "is not a terminal, else one line per frame). Directions as seen from the port: rx "
      "(pcapng inbound) are frames the port sent into the switch, tx (outbound) frames the "
      "switch sent to it. Ctrl-C ends it; the frames captured and dropped (slow reader) are "
      "printed on stderr");
  vnet::control::CaptureOptions cap_opt;
  capture->add_option("PORT", cap_opt.port, "The port")->required();
  capture->add_option("--direction,-d", cap_opt.direction, "rx, tx or both")
      ->check(CLI::IsMember({"rx", "tx", "both"}))
      ->capture_default_str();
  capture->add_option("--filter,-f", cap_opt.filter,
                      "A tcpdump filter expression (pcap-filter(7)), applied by vnetd");
  capture->add_option("--count", cap_opt.count, "Stop after this many frames");
  capture->add_option("-w", cap_opt.write, "Write pcapng to FILE ('-': standard output)");
  auto* fdb = app.add_subcommand(
      "fdb", "List the forwarding database (MAC VLAN PORT AGE); 'fdb flush' empties it");
  std::string fdb_action;
  fdb->add_option("ACTION", fdb_action, "flush: forget every learned address")
      ->check(CLI::IsMember({"flush"}));
  std::string fdb_port, fdb_mac;
  int64_t fdb_vlan = -1;
  uint64_t fdb_count = 0;
  fdb->add_option("--port", fdb_port, "Only entries on this port");
  fdb->add_option("--vlan", fdb_vlan, "Only entries of this VLAN (0: untagged)")
      ->check(CLI::Range(0, 4094));
  fdb->add_option("--mac", fdb_mac, "Only entries of this MAC address");
  fdb->add_option("--count", fdb_count, "At most this many entries (default: all)");
  auto* reload = app.add_subcommand(
      "reload",
      "Make vnetd read its configuration file again (as SIGHUP does) and apply what changed: "
      "ports added, removed, changed in place or re-created; ports that did not change are "
      "not touched. A file with an error is refused (exit 1, the line and field printed) and "
      "nothing changes");
  auto* upgrade = app.add_subcommand(
      "upgrade",
      "Replace the running vnetd with a new one without the guests noticing: vnetd starts "
      "BINARY (default: its own binary's path, where a package upgrade put the new one) with "
      "its command line and hands it the control socket, every vhost-user socket and session "
      "(memory, rings, features) and every TAP; then it exits. A new binary that fails or is "
      "incompatible leaves the old vnetd running and says why");
  std::string upgrade_binary;
  double upgrade_timeout = 10;
  upgrade->add_option("--binary", upgrade_binary, "The vnetd binary to start");
  upgrade
      ->add_option("--timeout", upgrade_timeout,
                   "Seconds the new vnetd has to take over (default 10)")
      ->check(CLI::Range(0.1, 300.0));
  auto* fdb_flush =
      app.add_subcommand("fdb-flush", "Forget every learned address (same as 'fdb flush')");
  auto* trace = app.add_subcommand(
      "trace",
      "Which way the switch would send a frame arriving on PORT, and why (VLAN "
      "classification, port security, learning, FDB lookup, storm control, flood), without "
      "sending it: trace PORT --src MAC --dst MAC [--vlan VID] [--ethertype T] | trace PORT "
      "--hex FRAME");
  std::string trace_port, trace_src, trace_dst, trace_hex;
  int64_t trace_vlan = -1, trace_type = -1;
  trace->add_option("PORT", trace_port, "The port the frame arrives on")->required();
  auto* tsrc = trace->add_option("--src", trace_src, "Source MAC");
  auto* tdst = trace->add_option("--dst", trace_dst, "Destination MAC");
  auto* tvlan =
      trace->add_option("--vlan", trace_vlan, "An 802.1Q tag with this VID (default: untagged)")
          ->check(CLI::Range(0, 4094));
  auto* ttype = trace->add_option("--ethertype", trace_type, "EtherType (default 0x0800)")
                    ->check(CLI::Range(0x600, 0xffff));
  trace->add_option("--hex", trace_hex, "The whole Ethernet frame in hex (as tcpdump -xx shows it)")
      ->excludes(tsrc)
      ->excludes(tdst)
      ->excludes(tvlan)
      ->excludes(ttype);
  auto* top = app.add_subcommand(
      "top",
      "Live rates, redrawn every --interval: per port packets/s, bits/s and drops/s (by "
      "reason), per worker busy %, CPU %, packets/s, cycles/packet, wake-ups and sleeps. "
      "q or Ctrl-C quits; with --json one object per line");
  vnet::control::TopOptions top_opt;
  top->add_option("--interval,-d", top_opt.interval, "Seconds between screens")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  top->add_option("--iterations,-n", top_opt.iterations,
                  "Stop after this many screens (default: until q or Ctrl-C)");
  top->add_flag("--batch,-b", top_opt.batch,
                "Print screens one after another instead of redrawing (the default when "
                "stdout is not a terminal)");

  // Port changes. Values are passed through as given; vnetd checks them and names the
  // field it rejects (nothing changes on an error).
  struct PortArgs {
    std::string type, name, socket, ifname, netns, io, ingress_rate, ingress_burst, storm;
    bool client = false, attach = false, no_offloads = false;
    int64_t mtu = -1, vlan = -1, native = -1, worker = -1, queue = -1, queues = -1;
    std::vector<int64_t> trunk;
    std::vector<std::string> allowed_macs;
  } pa;
  auto vlan_options = [&](CLI::App* sub) {
    auto* v = sub->add_option("--vlan", pa.vlan, "Access port of this VLAN (0: untagged domain)");
    auto* t = sub->add_option("--trunk", pa.trunk, "Trunk carrying these VLANs tagged (10,20,...)")
                  ->delimiter(',');
    sub->add_option("--native", pa.native, "Trunk: VLAN of untagged frames")->needs(t);
    v->excludes(t);
    sub->add_option("--mtu", pa.mtu, "MTU (TAP: set on the device)");
    sub->add_option("--allowed-macs", pa.allowed_macs,
                    "Port security: only these source MACs (a,b,...; 'any' lifts it)")
        ->delimiter(',');
    sub->add_option("--worker", pa.worker,
                    "The data-plane worker that polls the port (vnetctl workers); set-port "
                    "moves it there");
    sub->add_option("--ingress-rate", pa.ingress_rate,
                    "Ingress policing: RATE[,RATE], bits/s (100M, 1.5G, 500kbit) and/or "
                    "packets/s (20kpps); 0 or off lifts it. Frames over it are dropped "
                    "(counted as policed); a TSO frame counts as its segments");
    sub->add_option("--ingress-burst", pa.ingress_burst,
                    "Ingress policing bucket: BURST[,BURST], bits (2M) and/or packets (256pkt); "
                    "default 10 ms of the rate, at least 1M bits / 64 packets");
    sub->add_option("--storm", pa.storm,
                    "Storm control of flooded frames: CLASS=RATE[,CLASS=RATE...], CLASS "
                    "broadcast, multicast or unknown-unicast, RATE packets/s (1000, 5k) or "
                    "bits/s with bit (10Mbit); CLASS=off or off lifts it");
  };
  auto* add_port = app.add_subcommand(
      "add-port",
      "Add a port: add-port vhost-user NAME --socket PATH [--client] | add-port tap NAME "
      "[--ifname IF] [--netns NS] [--attach] [--no-offloads] [--io MODE]");
  add_port->add_option("TYPE", pa.type, "vhost-user, tap or vxlan (see add-segment)")->required();
  add_port->add_option("NAME", pa.name, "Port name")->required();
  add_port->add_option("--socket", pa.socket, "vhost-user: socket path");
  add_port->add_flag("--client", pa.client, "vhost-user: connect to a front end listening there");
  add_port->add_option("--ifname", pa.ifname, "tap: interface name (default: NAME)");
  add_port->add_option("--netns", pa.netns, "tap: network namespace (ip netns) to create it in");
  add_port->add_flag("--attach", pa.attach, "tap: use an existing TAP device");
  add_port->add_flag("--no-offloads", pa.no_offloads, "tap: no checksum/TSO offloads");
  add_port->add_option("--queues", pa.queues,
                       "vhost-user: queue pairs offered (VIRTIO_NET_F_MQ), 1..128, default 8; "
                       "tap: IFF_MULTI_QUEUE fds, 1..16, default 1");
  add_port->add_option("--io", pa.io,
                       "tap: data path, uring (batched io_uring), syscalls (readv/writev) or auto");
  vlan_options(add_port);
  // A VXLAN segment is a port of type vxlan (del-port NAME removes it).
  struct SegmentArgs {
    int64_t vni = -1, udp_port = -1, underlay_mtu = -1, shadow_udp_port = -1;
    std::string local, name, control;
    std::vector<std::string> remotes;
  } sa;
  auto* add_segment = app.add_subcommand(
      "add-segment",
      "Add a VXLAN segment (a port of type vxlan, named vxlanVNI unless --name): add-segment "
      "VNI --local ADDR [--remote ADDR,...] [--control evpn] [--vlan V] [--netns NS]");
  add_segment->add_option("VNI", sa.vni, "VXLAN network identifier, 1..16777215")->required();
  add_segment->add_option("--local", sa.local, "This host's VTEP address (IPv4 or IPv6)")
      ->required();
  add_segment->add_option("--remote", sa.remotes, "Flood list: remote VTEPs (a,b,...)")
      ->delimiter(',');
  add_segment->add_option("--name", sa.name, "Port name (default vxlanVNI)");
  add_segment->add_option("--udp-port", sa.udp_port, "UDP port (default 4789)");
  add_segment->add_option("--netns", pa.netns,
                          "Underlay network namespace (ip netns) of the tunnel's sockets");
  add_segment->add_option("--underlay-mtu", sa.underlay_mtu,
                          "The underlay's MTU (default 1500: inner frames up to 1464 bytes)");
  add_segment->add_option("--vlan", pa.vlan, "The switch VLAN the segment is bound to");
  add_segment->add_option("--control", sa.control,
                          "static (flood list given, remote MACs learned from the tunnel) or "
                          "evpn (both from BGP EVPN through FRR's zebra)");
  add_segment->add_option("--shadow-udp-port", sa.shadow_udp_port,
                          "evpn: UDP port of the kernel shadow VXLAN device (default 4790)");
  add_segment->add_option("--worker", pa.worker, "The data-plane worker that polls it");
  auto* del_port =
      app.add_subcommand("del-port", "Remove a port (ends its session, removes its socket/TAP)");
  del_port->add_option("NAME", pa.name, "Port name")->required();
  auto* set_port = app.add_subcommand(
      "set-port",
      "Change a port's VLAN mode, MTU, port security or policing, or move it to another worker");
  set_port->add_option("NAME", pa.name, "Port name")->required();
  vlan_options(set_port);
  set_port->add_option("--queue", pa.queue,
                       "With --worker: move only this receive queue (pair) of the port");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // Usage errors exit 1 like every other failure (CLI11's own codes are 100+).
    return fail(as_json, std::string(e.what()) + " (see vnetctl --help)");
  }

  json req;
  enum class What {
    kVersion,
    kPorts,
    kCounters,
    kWorkers,
    kFdb,
    kFlush,
    kTrace,
    kReload,
    kUpgrade,
    kDone
  } what;
  auto put_common = [&](json& j) {
    if (pa.mtu >= 0) j["mtu"] = pa.mtu;
    if (pa.vlan >= 0) j["vlan"] = pa.vlan;
    if (!pa.trunk.empty()) j["trunk"] = pa.trunk;
    if (pa.native >= 0) j["native"] = pa.native;
    if (!pa.allowed_macs.empty()) {
      json a = json::array();
      if (!(pa.allowed_macs.size() == 1 && pa.allowed_macs[0] == "any"))
        for (const auto& m : pa.allowed_macs) a.push_back(m);
      j["allowed_macs"] = a;
    }
    if (pa.worker >= 0) j["worker"] = pa.worker;
    if (!pa.ingress_rate.empty()) j["ingress_rate"] = pa.ingress_rate;
    if (!pa.ingress_burst.empty()) j["ingress_burst"] = pa.ingress_burst;
    if (!pa.storm.empty()) j["storm"] = pa.storm;
  };
  if (*add_port) {
    json port{{"type", pa.type}, {"name", pa.name}};
    if (!pa.socket.empty()) port["socket"] = pa.socket;
    if (pa.client) port["mode"] = "client";
    if (!pa.ifname.empty()) port["ifname"] = pa.ifname;
    if (!pa.netns.empty()) port["netns"] = pa.netns;
    if (pa.attach) port["attach"] = true;
    if (pa.no_offloads) port["offloads"] = false;
    if (!pa.io.empty()) port["io"] = pa.io;
    if (pa.queues >= 0) port["queues"] = pa.queues;
    put_common(port);
    req = {{"cmd", "add-port"}, {"port", port}};
    what = What::kDone;
  } else if (*add_segment) {
    json port{{"type", "vxlan"},
              {"name", sa.name.empty() ? fmt::format("vxlan{}", sa.vni) : sa.name},
              {"vni", sa.vni},
              {"local", sa.local},
              {"remote", sa.remotes}};
    if (sa.udp_port >= 0) port["udp_port"] = sa.udp_port;
    if (sa.underlay_mtu >= 0) port["underlay_mtu"] = sa.underlay_mtu;
    if (!sa.control.empty()) port["control"] = sa.control;
    if (sa.shadow_udp_port >= 0) port["shadow_udp_port"] = sa.shadow_udp_port;
    if (!pa.netns.empty()) port["netns"] = pa.netns;
    put_common(port);
    req = {{"cmd", "add-port"}, {"port", port}};
    what = What::kDone;
  } else if (*del_port) {
    req = {{"cmd", "del-port"}, {"name", pa.name}};
    what = What::kDone;
  } else if (*set_port) {
    req = {{"cmd", "set-port"}, {"name", pa.name}};
    put_common(req);
    if (pa.queue >= 0) req["queue"] = pa.queue;
    if (req.size() == 2)
      return fail(as_json,
                  "set-port: nothing to change (--vlan, --trunk, --mtu, --allowed-macs, --worker, "
                  "--ingress-rate, --ingress-burst, --storm)");
    what = What::kDone;
  } else if (*trace) {
    req = {{"cmd", "trace"}, {"port", trace_port}};
    if (!trace_hex.empty()) {
      req["hex"] = trace_hex;
    } else {
      if (trace_src.empty() || trace_dst.empty())
        return fail(as_json, "trace: give --src and --dst, or --hex (see vnetctl --help)");
      req["src"] = trace_src;
      req["dst"] = trace_dst;
      if (trace_vlan >= 0) req["vlan"] = trace_vlan;
      if (trace_type >= 0) req["ethertype"] = trace_type;
    }
    what = What::kTrace;
  } else if (*reload) {
    req = {{"cmd", "reload"}};
    what = What::kReload;
  } else if (*upgrade) {
    req = {{"cmd", "upgrade"}, {"timeout", upgrade_timeout}};
    if (!upgrade_binary.empty()) {
      std::error_code ec;
      auto abs = std::filesystem::absolute(upgrade_binary, ec);
      req["binary"] = ec ? upgrade_binary : abs.string();
    }
    // The hand-over's own time on top of the usual wait.
    timeout_ms = std::max<int>(timeout_ms, int(upgrade_timeout * 1000) + 15000);
    what = What::kUpgrade;
  } else if (*version) {
    req = {{"cmd", "version"}};
    what = What::kVersion;
  } else if (*ports) {
    req = {{"cmd", "ports"}};
    what = What::kPorts;
  } else if (*counters) {
    req = {{"cmd", "counters"}};
    if (!counters_port.empty()) req["port"] = counters_port;
    what = What::kCounters;
  } else if (*workers) {
    req = {{"cmd", "workers"}};
    what = What::kWorkers;
  } else if (*fdb_flush || (*fdb && fdb_action == "flush")) {
    req = {{"cmd", "fdb-flush"}};
    what = What::kFlush;
  } else {
    req = {{"cmd", "fdb"}};
    what = What::kFdb;
  }

  auto client = ControlClient::connect(control, timeout_ms);
  if (!client) return fail(as_json, client.message());
  if (*capture) return vnet::control::run_capture(*client, cap_opt, timeout_ms);
  if (*top) {
    top_opt.as_json = as_json;
    top_opt.timeout_ms = timeout_ms;
    return vnet::control::run_top(*client, top_opt);
  }
  if (what == What::kFdb) {
    // In chunks, printed as they come (the --timeout applies to each chunk).
    json filter = json::object();
    if (!fdb_port.empty()) filter["port"] = fdb_port;
    if (fdb_vlan >= 0) filter["vlan"] = fdb_vlan;
    if (!fdb_mac.empty()) filter["mac"] = fdb_mac;
    bool first = true;
    std::cout << (as_json ? "{\"fdb\": [" : vnet::control::format_fdb_header());
    auto done = vnet::control::dump_fdb(*client, filter, fdb_count, timeout_ms, [&](const json& e) {
      if (as_json)
        std::cout << (first ? "\n" : ",\n")
                  << e.dump(-1, ' ', false, json::error_handler_t::replace);
      else
        std::cout << vnet::control::format_fdb_row(e);
      first = false;
    });
    const bool ok = done && (*done)["ok"] == true;
    const std::string why =
        !done ? done.message() : done->value("error", std::string("vnetd did not say ok"));
    if (as_json) {
      // The object is complete either way: "ok" and, on an error, "error" come last.
      json tail{{"ok", ok}};
      if (!ok) tail["error"] = why;
      const std::string t = tail.dump();
      std::cout << (first ? "" : "\n") << "], " << t.substr(1) << "\n";
    } else if (ok) {
      const uint64_t n = (*done)["entries"];
      std::cout << n << (n == 1 ? " entry\n" : " entries\n");
    }
    if (!ok) {
      std::cout << std::flush;
      std::cerr << "vnetctl: " << why << "\n";
      return 1;
    }
    return 0;
  }
  auto reply = client->request(req, timeout_ms);
  if (!reply) return fail(as_json, reply.message());
  const json& r = *reply;
  if (!r.is_object() || !r.contains("ok") || r["ok"] != true) {
    std::string why = "vnetd did not say ok";
    if (r.is_object() && r.contains("error") && r["error"].is_string()) why = r["error"];
    return fail(as_json, why, &r);
  }

  if (as_json) {
    std::cout << r.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return 0;
  }
  switch (what) {
    case What::kVersion:
      std::cout << "vnetctl " << vnet::control::kVersion << "\nvnetd   "
                << vnet::control::cell(r, "version") << "\n";
      break;
    case What::kPorts:
      std::cout << vnet::control::format_ports(r);
      break;
    case What::kCounters:
      std::cout << vnet::control::format_counters(r);
      break;
    case What::kWorkers:
      std::cout << vnet::control::format_workers(r);
      break;
    case What::kFdb:
      std::cout << vnet::control::format_fdb(r);
      break;
    case What::kTrace:
      std::cout << vnet::control::format_trace(r);
      break;
    case What::kFlush:
      std::cout << "FDB flushed\n";
      break;
    case What::kReload:
      for (const char* k : {"added", "removed", "recreated", "changed", "unchanged"}) {
        std::cout << k << ":";
        for (const auto& n : r.value(k, json::array())) std::cout << " " << n.get<std::string>();
        std::cout << "\n";
      }
      for (const auto& f : r.value("restart_needed", json::array()))
        std::cout << "changed, takes effect when vnetd restarts: " << f.get<std::string>() << "\n";
      break;
    case What::kDone:
      std::cout << "ok\n";
      break;
    case What::kUpgrade:
      std::cout << "vnetd upgraded: pid " << r.value("old_pid", 0) << " -> " << r.value("pid", 0)
                << " (" << r.value("binary", std::string()) << ", version "
                << r.value("version", std::string("?")) << "), data path paused "
                << fmt::format("{:.1f}", r.value("pause_ms", 0.0)) << " ms\n";
      if (r.contains("warning"))
        std::cout << "warning: " << r["warning"].get<std::string>() << "\n";
      break;
  }
  return 0;
}
