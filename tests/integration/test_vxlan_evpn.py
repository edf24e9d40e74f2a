#!/usr/bin/env python3
"""Two vnetds joined by a VXLAN segment whose flood list and remote MACs come from BGP EVPN.

Two "hosts", each a vnetd of its own (both processes in the root namespace, each with its
own configuration file and control socket) and an FRR 8.4 zebra + bgpd in the host's
underlay namespace (an iBGP l2vpn evpn session between the two, `advertise-all-vni`).
Namespaces are named vnt<pid>..., deleted by name at cleanup; the FRR daemons are stopped
by the PIDs the harness started (checked against their pid files):

  vmA (10.79.0.1/24, MTU 1450)                       vmB (10.79.0.2/24, MTU 1450)
    TAP of vnetd A                                     TAP of vnetd B
      |                                                  |
  vnetd A: port "tapa" <-> segment "vx100"           vnetd B: port "tapb" <-> segment "vx100"
      VNI 100, local 192.168.70.1, control "evpn"        VNI 100, local 192.168.70.2, "evpn"
      (no remote: the flood list comes from BGP)         data path: UDP 4789 in uB
      data path: UDP 4789 in uA
      kernel shadow in uA: vnb100 (bridge),              the same shadow in uB
        vnx100 (vxlan id 100, dstport 4790),
        vna100/vnp100 (anchor veth)
      zebra + bgpd in uA  <------ iBGP l2vpn evpn ------>  zebra + bgpd in uB
      |                                                  |
  uA: ula 192.168.70.1/24  <-------- veth -------->  uB: ulb 192.168.70.2/24

vnetd writes each MAC it learns locally to the anchor port of its shadow bridge (an
extern_learn FDB entry: zebra advertises it as a type-2 route) and reads what zebra
installs on the shadow VXLAN device over netlink: `00:00:00:00:00:00 dst VTEP` (type-3,
the flood list) and `MAC dst VTEP` (type-2, a remote MAC).  The shadow carries no traffic
(its VXLAN device is on UDP 4790; vnetd's own data path is UDP 4789).  Both underlay
veths have TX checksum offload off, as in test_vxlan_vnetd.py.

Asserts:
  1. within 15 s of the vnetds' start, each vnetd's segment has the other host in its
     flood list: `vnetctl --json ports` -> the segment's "extra" has "evpn_vteps" == 1,
     and `bridge fdb show dev vnx100` in its underlay namespace has
     `00:00:00:00:00:00 dst <other VTEP>` (zebra's type-3 entry);
  2. ping vmA -> vmB: after a warm-up, 20 pings at 20 ms all answered; iperf3 TCP
     vmA -> vmB for 3 s > 50 Mbit/s (10 under a sanitizer);
  3. each VM's MAC is local on its host and remote with the right VTEP on the other, in
     BOTH `vtysh -N <ns> -c 'show evpn mac vni 100 json'` and `vnetctl --json fdb` (the
     remote entry on the segment with "vtep" the other host's address, the local one on
     the TAP port);
  4. `vnetctl del-port tapa` on host A: within 10 s vmA's MAC is withdrawn from host B's
     `show evpn mac vni 100` and from vnetd B's FDB (no entry of that MAC with a vtep);
  5. the VXLAN datagrams captured on host B's underlay veth during the pings are UDP
     destination port 4789 with VNI 100 (flags 0x08), both directions present, and none
     goes to or from UDP port 4790 during the whole test (the shadow carries nothing);
  6. both vnetds exit 0 on SIGTERM, no sanitizer report in their logs.
"""

import grp
import json
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.netns import Capture, require_netns  # noqa: E402
from vnet_harness.pcap import read_pcap  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import require_vnetd  # noqa: E402
from vnet_harness.vxlan import (PING_COUNT, SEGMENT, UDP_PORT, VNI, VxlanHost,  # noqa: E402
                                host_pair, iperf, iperf_server, listing, mac_str, outer,
                                ping_all, ping_stats, require_kernel_links, start_hosts,
                                warm_up, warning_lines)

NET = "10.79.0."
IP_A, IP_B = NET + "1", NET + "2"
UL = "192.168.70."
VTEP_A, VTEP_B = UL + "1", UL + "2"
SHADOW_PORT = 4790
TAP_A, TAP_B = "tapa", "tapb"
MAC_A = "02:79:00:00:00:01"       # vmA's TAP
MAC_B = "02:79:00:00:00:02"       # vmB's TAP
ZERO_MAC = "00:00:00:00:00:00"
VXLAN_DEV = "vnx%d" % VNI         # the shadow vnetd creates in the underlay namespace
BRIDGE_DEV = "vnb%d" % VNI
ANCHOR_DEV = "vna%d" % VNI
ASN = 65000
FLOOD_LIST_TIMEOUT = 15.0
WITHDRAW_TIMEOUT = 10.0
FRR_DIR = "/usr/lib/frr"


# --- prerequisites ------------------------------------------------------------------

def require_frr(_args):
    missing = []
    for d in ("zebra", "bgpd"):
        p = os.path.join(FRR_DIR, d)
        if not (os.path.isfile(p) and os.access(p, os.X_OK)):
            missing.append("FRR %s (%s; apt-get install frr)" % (d, p))
    if shutil.which("vtysh") is None:
        missing.append("program vtysh (frr)")
    try:
        pwd.getpwnam("frr")
        grp.getgrnam("frr")
    except KeyError:
        missing.append("user and group frr (the FRR daemons drop to them)")
    return missing


# --- FRR in a namespace -------------------------------------------------------------

class Frr:
    """zebra + bgpd in one underlay namespace, started by hand (no systemd, no
    /etc/frr/daemons): `ip netns exec NS /usr/lib/frr/zebra -N NS -f CONF -i PIDFILE -P 0
    --log stdout`, the same for bgpd.  /etc/frr/NS (configs, an empty vtysh.conf for
    `vtysh -N NS`) and /var/run/frr/NS (pid files, vty sockets) are created owned by frr
    (the daemons drop to it) and removed at cleanup, after the daemons are stopped by
    their PIDs."""

    def __init__(self, s, ns, tag, router_id, peer):
        self.s = s
        self.ns = ns
        self.tag = tag
        self.router_id = router_id
        self.peer = peer
        self.etc = "/etc/frr/%s" % ns.name
        self.run_dir = "/var/run/frr/%s" % ns.name
        self.zebra = self.bgpd = None
        for d in (self.etc, self.run_dir):
            if os.path.exists(d):
                raise HarnessError("%s exists already (left by another run?)" % d)
        # Pushed before the daemons' stop actions: runs after them (LIFO).
        s.cleanup.push("FRR directories of %s" % ns.name, self._remove_dirs)
        uid, gid = pwd.getpwnam("frr").pw_uid, grp.getgrnam("frr").gr_gid
        for d in (self.etc, self.run_dir):
            os.makedirs(d, mode=0o755)
            os.chown(d, uid, gid)
        self.zebra_conf = self._write("zebra.conf", [
            "hostname %s-%s" % (tag, "zebra"),
            "!",
        ], uid, gid)
        self.bgpd_conf = self._write("bgpd.conf", [
            "hostname %s-%s" % (tag, "bgpd"),
            "router bgp %d" % ASN,
            " bgp router-id %s" % router_id,
            " no bgp default ipv4-unicast",
            " neighbor %s remote-as %d" % (peer, ASN),
            " neighbor %s timers 3 9" % peer,
            " neighbor %s timers connect 2" % peer,
            " address-family l2vpn evpn",
            "  neighbor %s activate" % peer,
            "  advertise-all-vni",
            " exit-address-family",
            "!",
        ], uid, gid)
        self._write("vtysh.conf", [], uid, gid)

    def _write(self, name, lines, uid, gid):
        path = os.path.join(self.etc, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chown(path, uid, gid)
        os.chmod(path, 0o640)
        if lines:
            log("FRR %s %s:\n  %s" % (self.tag, name, "\n  ".join(lines)))
        return path

    def _remove_dirs(self):
        for d in (self.etc, self.run_dir):
            shutil.rmtree(d, ignore_errors=True)

    def pid_file(self, daemon):
        return os.path.join(self.run_dir, "%s.pid" % daemon)

    def _spawn(self, daemon, conf):
        return self.ns.spawn("%s-%s" % (daemon, self.tag), [
            os.path.join(FRR_DIR, daemon), "-N", self.ns.name, "-f", conf,
            "-i", self.pid_file(daemon), "-P", "0", "--log", "stdout"])

    def start(self):
        self.zebra = self._spawn("zebra", self.zebra_conf)
        # bgpd talks to zebra over zserv.api; zebra answers vtysh once it is up.
        wait_until(lambda: self._alive() and os.path.exists(
            os.path.join(self.run_dir, "zserv.api")), 20, interval=0.05,
            what="zebra %s's zserv.api in %s" % (self.tag, self.run_dir))
        self.bgpd = self._spawn("bgpd", self.bgpd_conf)
        wait_until(lambda: self._alive() and os.path.exists(
            os.path.join(self.run_dir, "bgpd.vty")), 20, interval=0.05,
            what="bgpd %s's vty socket in %s" % (self.tag, self.run_dir))
        self.check_pid_files()

    def _alive(self):
        for p in (self.zebra, self.bgpd):
            if p is not None and not p.alive():
                raise HarnessError("%s exited with status %s; log tail:\n%s"
                                   % (p.name, p.returncode, p.log_tail()))
        return True

    def check_pid_files(self):
        """The pid files name the processes the harness started (ip netns exec execs the
        daemon, which runs in the foreground): what cleanup signals is what FRR runs."""
        for daemon, p in (("zebra", self.zebra), ("bgpd", self.bgpd)):
            if p is None:
                continue
            wait_until(lambda: os.path.exists(self.pid_file(daemon)), 10, interval=0.05,
                       what="%s's pid file %s" % (p.name, self.pid_file(daemon)))
            with open(self.pid_file(daemon)) as f:
                pid = int(f.read().strip() or 0)
            if pid != p.pid:
                raise HarnessError("%s's pid file says %d, the harness started pid %d"
                                   % (p.name, pid, p.pid))

    def stop(self):
        """bgpd, then zebra, by the PIDs the harness started; each must be gone."""
        for p in (self.bgpd, self.zebra):
            if p is not None:
                p.stop(10)
                if p.alive():
                    raise HarnessError("%s (pid %d) still runs after stop" % (p.name, p.pid))
        log("FRR %s stopped (bgpd pid %d, zebra pid %d)"
            % (self.tag, self.bgpd.pid, self.zebra.pid))

    def vtysh(self, cmd, check=True):
        self._alive()
        try:
            r = subprocess.run(["vtysh", "-N", self.ns.name, "-c", cmd], capture_output=True,
                               text=True, timeout=20)
        except subprocess.TimeoutExpired:
            raise HarnessError("vtysh -N %s -c '%s': timed out" % (self.ns.name, cmd))
        if check and r.returncode != 0:
            raise HarnessError("vtysh -N %s -c '%s': status %d: %s %s"
                               % (self.ns.name, cmd, r.returncode, r.stdout, r.stderr))
        return r.stdout

    def vtysh_json(self, cmd):
        out = self.vtysh(cmd)
        try:
            return json.loads(out) if out.strip() else {}
        except ValueError:
            raise HarnessError("vtysh -N %s -c '%s': not JSON: %r" % (self.ns.name, cmd, out))

    def session_up(self):
        j = self.vtysh_json("show bgp l2vpn evpn summary json")
        peer = j.get("peers", {}).get(self.peer, {})
        return peer.get("state") == "Established"

    def evpn_macs(self):
        """{mac: {"type": "local"|"remote", "intf"/"remoteVtep": ...}} of VNI 100."""
        j = self.vtysh_json("show evpn mac vni %d json" % VNI)
        return {m.lower(): v for m, v in j.get("macs", {}).items()}


# --- one host -----------------------------------------------------------------------

class Host(VxlanHost):
    """One "host": its vnetd (config file, control socket), the VM namespace with the
    vnetd's TAP, the underlay namespace with the segment's sockets, the shadow and FRR."""

    control = "evpn"

    def __init__(self, s, tag, tap_port, vm, underlay, local, remote, ip, mac):
        self.frr = Frr(s, underlay, tag, local, remote)
        super().__init__(s, tag, tap_port, vm, underlay, local, remote, ip, mac,
                         ifname_prefix="ev")

    def segment_config(self):
        """No remote: the flood list comes from BGP."""
        return [
            "[[segment]]",
            'name = "%s"' % SEGMENT,
            "vni = %d" % VNI,
            'local = "%s"' % self.local,
            'control = "%s"' % self.control,
            'netns = "%s"' % self.underlay.name,
        ]

    # --- vnetd ----------------------------------------------------------------------------
    def evpn_vteps(self):
        return self.segment().get("extra", {}).get("evpn_vteps")

    # --- the kernel shadow ----------------------------------------------------------------
    def kernel_fdb(self, dev=VXLAN_DEV):
        """`bridge fdb show dev DEV` lines in the underlay namespace ([] if no such dev)."""
        rc, out = self.underlay.run("bridge fdb show dev %s" % dev, check=False)
        return [" ".join(line.split()) for line in out.splitlines() if line.strip()] \
            if rc == 0 else []

    def has_flood_entry(self):
        want = "%s dst %s" % (ZERO_MAC, self.remote)
        return [line for line in self.kernel_fdb() if line.startswith(want)]

    def shadow_details(self):
        """A short line per shadow device: state, master, and the fields that matter."""
        keys = (r"state \S+", r"master \S+", r"vxlan id \d+", r"local \S+", r"dstport \d+",
                r"nolearning", r"mcast_snooping \d+", r"addrgenmode \S+")
        out = []
        for dev in (BRIDGE_DEV, VXLAN_DEV, ANCHOR_DEV):
            rc, text = self.underlay.run("ip -o -d link show dev %s" % dev, check=False)
            if rc != 0:
                out.append("%s: absent" % dev)
                continue
            found = [m.group(0) for k in keys for m in [re.search(r"\b%s" % k, text)] if m]
            out.append("%s: %s" % (dev, ", ".join(found)))
        return out


# --- captures ---------------------------------------------------------------------------

def analyse_underlay(path):
    """(problems, {"src -> dst": datagrams}) of the UDP datagrams of a capture."""
    problems, dirs = [], {}
    for i, (orig, data) in enumerate(read_pcap(path)):
        if len(data) < 14 + 20 + 8 + 8 or data[12:14] != b"\x08\x00":
            problems.append("frame %d: not IPv4/UDP with a VXLAN header (%s)"
                            % (i, data[:64].hex()))
            continue
        o = outer(data)
        src, dst, sport, dport, vx, vni = o.src, o.dst, o.sport, o.dport, o.vx, o.vni
        if o.proto != 17:
            problems.append("frame %d: IP protocol %d" % (i, o.proto))
            continue
        if dport != UDP_PORT:
            problems.append("frame %d: %s:%d -> %s:%d, expected UDP destination port %d"
                            % (i, src, sport, dst, dport, UDP_PORT))
            continue
        if len(vx) < 8 or vx[0] != 0x08 or vni != VNI:
            problems.append("frame %d: %s -> %s VXLAN header %s, expected flags 0x08 VNI %d"
                            % (i, src, dst, vx.hex(), VNI))
            continue
        if sport == SHADOW_PORT:
            problems.append("frame %d: %s -> %s from UDP port %d (the shadow's)"
                            % (i, src, dst, SHADOW_PORT))
        dirs["%s -> %s" % (src, dst)] = dirs.get("%s -> %s" % (src, dst), 0) + 1
    return problems, dirs


def describe_datagrams(path, shadow_macs, limit=8):
    """One line per captured UDP datagram: outer addresses and ports, the inner frame's
    MACs (naming a shadow bridge's own MAC), ethertype and what it carries."""
    out = []
    for orig, data in read_pcap(path)[:limit]:
        try:
            o = outer(data)
            inner = o.inner
            dmac = mac_str(inner[0:6])
            smac = mac_str(inner[6:12])
            etype = struct.unpack("!H", inner[12:14])[0]
            what = "ethertype 0x%04x" % etype
            if etype == 0x0800:
                proto = inner[14 + 9]
                what = "IPv4 %s -> %s proto %d%s" % (
                    socket.inet_ntoa(inner[14 + 12:14 + 16]),
                    socket.inet_ntoa(inner[14 + 16:14 + 20]), proto,
                    " (IGMP)" if proto == 2 else "")
            elif etype == 0x86DD:
                what = "IPv6 %s -> %s next header %d" % (
                    socket.inet_ntop(socket.AF_INET6, inner[14 + 8:14 + 24]),
                    socket.inet_ntop(socket.AF_INET6, inner[14 + 24:14 + 40]), inner[14 + 6])
            out.append("%s:%d -> %s:%d VNI %d, inner %s -> %s%s, %s (%d bytes)" % (
                o.src, o.sport, o.dst, o.dport, int.from_bytes(o.vx[4:7], "big"), smac, dmac,
                " (%s)" % shadow_macs[smac] if smac in shadow_macs else "", what, orig))
        except (IndexError, struct.error, ValueError, OSError) as e:
            out.append("undecodable (%s): %s" % (e, data[:80].hex()))
    return out


def evpn_mac_state(frr, mac):
    """("local", intf) / ("remote", vtep) / None of `mac` in zebra's VNI 100."""
    e = frr.evpn_macs().get(mac)
    if e is None:
        return None
    if e.get("type") == "local":
        return ("local", e.get("intf"))
    if e.get("type") == "remote":
        return ("remote", e.get("remoteVtep"))
    return (e.get("type"), e)


# --- the test -----------------------------------------------------------------------------

def body(s, args):
    t_start = time.monotonic()
    a, b = host_pair(s, Host, (IP_A, IP_B), (VTEP_A, VTEP_B), (MAC_A, MAC_B), (TAP_A, TAP_B))
    hosts = (a, b)
    ma, mb, ub = a.vm, b.vm, b.underlay

    # --- FRR first (as a system service would be), the BGP session up -----------------------
    for h in hosts:
        h.frr.start()
    t0 = time.monotonic()
    wait_until(lambda: a.frr.session_up() and b.frr.session_up(), 30, interval=0.2,
               what="the iBGP l2vpn evpn session %s <-> %s Established" % (VTEP_A, VTEP_B))
    log("BGP l2vpn evpn session Established in %.1f s (zebra pids %d/%d, bgpd pids %d/%d)"
        % (time.monotonic() - t0, a.frr.zebra.pid, b.frr.zebra.pid, a.frr.bgpd.pid,
           b.frr.bgpd.pid))

    # Every UDP datagram on host B's underlay veth to or from the shadow's port, for the
    # whole test (expected: none); and every UDP datagram during the pings.
    cap_shadow = Capture(ub, "cap-4790", "ulb", "udp port %d" % SHADOW_PORT, count=1000,
                         direction="", snaplen=128).wait_ready()

    # --- the vnetds -------------------------------------------------------------------------
    t_vnetd = time.monotonic()
    _, min_mbps = start_hosts(hosts)
    for h in hosts:
        seg = h.segment()
        vx = seg.get("vxlan", {})
        if seg.get("type") != "vxlan" or vx.get("control") != "evpn" or vx.get("vni") != VNI \
                or vx.get("local") != h.local:
            raise HarnessError("vnetd %s: segment %s should be of type vxlan, control evpn, "
                               "VNI %d, local %s: %s" % (h.tag, SEGMENT, VNI, h.local, seg))

    # --- (1) the flood list from BGP (type-3) ---------------------------------------------
    def flood_lists():
        got = {}
        for h in hosts:
            got[h.tag] = (h.evpn_vteps(), h.has_flood_entry())
        return all(v[0] == 1 and v[1] for v in got.values()) and got
    try:
        got = wait_until(flood_lists, FLOOD_LIST_TIMEOUT, interval=0.2,
                         what="each vnetd's flood list to have the other host (evpn_vteps 1, "
                         "%s dst <other> on %s)" % (ZERO_MAC, VXLAN_DEV))
    except HarnessError as e:
        for h in hosts:
            log("vnetd %s: evpn_vteps %s, extra %s; %s in %s: %s; shadow: %s; zebra: %s"
                % (h.tag, h.evpn_vteps(), h.segment().get("extra"), VXLAN_DEV,
                   h.underlay.name, h.kernel_fdb(), h.shadow_details(),
                   " ".join(h.frr.vtysh("show evpn vni %d" % VNI, check=False).split())))
        raise e
    took = time.monotonic() - t_vnetd
    for h in hosts:
        log("shadow of vnetd %s in %s: %s" % (h.tag, h.underlay.name,
                                              "\n    ".join(h.shadow_details())))
        log("RESULT (1) vnetd %s: evpn_vteps %s; %s: %s"
            % (h.tag, got[h.tag][0], VXLAN_DEV, got[h.tag][1]))
    log("RESULT (1) flood lists from BGP %.1f s after the vnetds' start" % took)

    cap_udp = Capture(ub, "cap-udp", "ulb", "udp", count=1000, direction="",
                      snaplen=128).wait_ready()

    # --- (2) ping vmA -> vmB, iperf3 -----------------------------------------------------
    tries = warm_up(ma, IP_B, "warm-up ping vmA -> %s" % IP_B)
    log("warm-up: vmA reached vmB with ping %d" % tries)
    extra0 = {h.tag: h.segment().get("extra", {}) for h in hosts}
    tx, rx, out = ping_all(ma, IP_B, "ping vmA -> vmB")
    log("RESULT (2) ping vmA -> vmB: %d/%d answered, %s" % (rx, tx, ping_stats(out)))
    for h in hosts:
        # Informational: with control = "evpn" the segment learns no MAC -> VTEP from the
        # tunnel, so a MAC is sent as a flood until its type-2 route comes back.
        e = h.segment().get("extra", {})
        log("vnetd %s segment over the %d pings: unicast_sent +%d, flood_copies +%d "
            "(evpn_remote_macs %s, evpn_local_macs %s)"
            % (h.tag, PING_COUNT, e.get("unicast_sent", 0) - extra0[h.tag].get("unicast_sent", 0),
               e.get("flood_copies", 0) - extra0[h.tag].get("flood_copies", 0),
               e.get("evpn_remote_macs"), e.get("evpn_local_macs")))
    cap_udp.stop()

    server = iperf_server(mb, IP_B)
    fwd = iperf(ma, IP_B, min_mbps, "(2) iperf3 TCP vmA -> vmB")
    server.stop()

    # --- (3) MACs: local on their host, remote with the right VTEP on the other -----------
    want_frr = {("A", MAC_A): ("local", ANCHOR_DEV), ("A", MAC_B): ("remote", VTEP_B),
                ("B", MAC_B): ("local", ANCHOR_DEV), ("B", MAC_A): ("remote", VTEP_A)}
    want_fdb = {("A", MAC_A): (TAP_A, None), ("A", MAC_B): (SEGMENT, VTEP_B),
                ("B", MAC_B): (TAP_B, None), ("B", MAC_A): (SEGMENT, VTEP_A)}
    seen = {}

    def macs_right():
        ok = True
        for h in hosts:
            fdb = {e["mac"].lower(): e for e in h.fdb()}
            for mac in (MAC_A, MAC_B):
                z = evpn_mac_state(h.frr, mac)
                e = fdb.get(mac)
                v = (e.get("port"), e.get("vtep")) if e else None
                seen[(h.tag, mac)] = (z, v)
                # zebra names a local MAC's interface: vnetd writes it on the anchor.
                if z != want_frr[(h.tag, mac)]:
                    ok = False
                if v != want_fdb[(h.tag, mac)]:
                    ok = False
        return ok
    try:
        wait_until(macs_right, 10, interval=0.2,
                   what="each VM's MAC local on its host and remote with the right VTEP on "
                   "the other, in zebra (show evpn mac vni %d) and in vnetd's FDB" % VNI)
    except HarnessError as e:
        raise HarnessError("%s: (zebra, vnetd (port, vtep)) per (host, MAC): %s; expected "
                           "zebra %s, vnetd %s; kernel %s: A %s, B %s"
                           % (e, seen, want_frr, want_fdb, VXLAN_DEV, a.kernel_fdb(),
                              b.kernel_fdb()))
    for (tag, mac), (z, v) in sorted(seen.items()):
        log("RESULT (3) host %s, MAC %s: zebra %s, vnetd fdb (port, vtep) %s"
            % (tag, mac, z, v))
    for h in hosts:
        log("host %s kernel: %s %s; %s %s" % (
            h.tag, VXLAN_DEV, h.kernel_fdb(),
            ANCHOR_DEV, [x for x in h.kernel_fdb(ANCHOR_DEV) if x.startswith("02:79:")]))
    if [x for x in b.kernel_fdb() if x.startswith("%s dst %s" % (MAC_A, VTEP_A))] == []:
        log("note: host B's %s has no '%s dst %s' entry" % (VXLAN_DEV, MAC_A, VTEP_A))

    # --- (5) the underlay: VXLAN on 4789 only ----------------------------------------------
    problems, dirs = analyse_underlay(cap_udp.path)
    log("RESULT (5) underlay capture during the pings (host B's ulb, both directions): %d "
        "datagrams %s, %d problems" % (cap_udp.captured, dirs, len(problems)))
    if problems:
        raise HarnessError("UDP datagrams on the underlay during the pings that are not "
                           "VXLAN VNI %d to port %d (%d of %d): %s\n  %s"
                           % (VNI, UDP_PORT, len(problems), cap_udp.captured, problems[:10],
                              "\n  ".join(x for x in describe_datagrams(cap_udp.path, {}, 1000)
                                          if ":%d " % UDP_PORT not in x)[:4000]))
    for d in ("%s -> %s" % (VTEP_A, VTEP_B), "%s -> %s" % (VTEP_B, VTEP_A)):
        if dirs.get(d, 0) < PING_COUNT:
            raise HarnessError("underlay capture: %d VXLAN datagrams %s, expected at least %d "
                               "(the pings): %s" % (dirs.get(d, 0), d, PING_COUNT, dirs))

    # --- (4) del-port on host A: vmA's MAC withdrawn on host B -----------------------------
    t0 = time.monotonic()
    a.vnetd.vnetctl("del-port", TAP_A)
    state = {}

    def withdrawn():
        z = evpn_mac_state(b.frr, MAC_A)
        ent = [e for e in b.fdb() if e["mac"].lower() == MAC_A and e.get("vtep")]
        state.update(zebra=z, fdb=ent, kernel=[x for x in b.kernel_fdb()
                                               if x.startswith(MAC_A)])
        return z is None and not ent
    try:
        wait_until(withdrawn, WITHDRAW_TIMEOUT, interval=0.1,
                   what="vmA's MAC %s withdrawn from host B after del-port %s on host A"
                   % (MAC_A, TAP_A))
    except HarnessError as e:
        raise HarnessError("%s: host B still has it: zebra %s, vnetd B fdb %s, kernel %s; "
                           "host A: zebra %s, %s %s, vnetd A fdb %s"
                           % (e, state.get("zebra"), state.get("fdb"), state.get("kernel"),
                              evpn_mac_state(a.frr, MAC_A), ANCHOR_DEV,
                              [x for x in a.kernel_fdb(ANCHOR_DEV) if x.startswith(MAC_A)],
                              [x for x in a.fdb() if x["mac"].lower() == MAC_A]))
    took_withdraw = time.monotonic() - t0
    log("RESULT (4) del-port %s on host A: vmA's MAC withdrawn from host B (zebra and vnetd) "
        "in %.2f s; host A now: zebra %s, %s %s"
        % (TAP_A, took_withdraw, evpn_mac_state(a.frr, MAC_A), ANCHOR_DEV,
           [x for x in a.kernel_fdb(ANCHOR_DEV) if x.startswith(MAC_A)]))

    # --- (5) nothing on the shadow's port, the whole test long -------------------------------
    cap_shadow.stop()
    log("RESULT (5) UDP port %d on host B's underlay during the whole test: %d datagrams"
        % (SHADOW_PORT, cap_shadow.captured))
    if cap_shadow.captured:
        shadow_macs = {}
        for h in hosts:
            rc, text = h.underlay.run("cat /sys/class/net/%s/address" % BRIDGE_DEV,
                                      check=False)
            if rc == 0:
                shadow_macs[text.strip().lower()] = "host %s's %s" % (h.tag, BRIDGE_DEV)
        raise HarnessError("%d UDP datagrams to or from port %d (the kernel shadow's VXLAN "
                           "device) crossed the underlay: the shadow must carry no traffic:\n"
                           "  %s" % (cap_shadow.captured, SHADOW_PORT, "\n  ".join(
                               describe_datagrams(cap_shadow.path, shadow_macs))))

    # --- (6) the end ------------------------------------------------------------------------
    for h in hosts:
        warnings = warning_lines(h.vnetd)
        log("vnetd %s segment final: extra %s; log: %d warning/error lines%s"
            % (h.tag, h.segment().get("extra"), len(warnings), listing(warnings)))
    for h in hosts:
        h.stop()
        left = [d for d in (BRIDGE_DEV, VXLAN_DEV, ANCHOR_DEV) if h.underlay.link_exists(d)]
        log("after vnetd %s stopped, shadow links left in %s: %s"
            % (h.tag, h.underlay.name, left or "none"))
    for h in hosts:
        h.frr.check_pid_files()
        h.frr.stop()
    log("RESULT summary: flood lists in %.1f s; ping %s; iperf3 vmA -> vmB %.1f Mbit/s; "
        "withdrawal after del-port %.2f s" % (took, ping_stats(out), fwd.receiver_mbps,
                                              took_withdraw))
    log("done in %.1f s" % (time.monotonic() - t_start))


if __name__ == "__main__":
    run_test("vxlan_evpn", body,
             [lambda a: require_root(), require_netns, require_vnetd,
              lambda a: require_tools("ip", "bridge", "ping", "iperf3", "ethtool", "tcpdump"),
              require_frr, require_kernel_links])
