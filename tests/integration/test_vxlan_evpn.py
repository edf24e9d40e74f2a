#!/usr/bin/env python3
"""Three hosts in one VXLAN segment whose flood lists and remote MACs come from BGP EVPN:
two run vnetd, the third is the kernel's own VXLAN data path, as FRR documents it.

Each "host" has an underlay namespace with an FRR 8.4 zebra + bgpd (iBGP l2vpn evpn, a
full mesh of three sessions, `advertise-all-vni`) and a VM namespace.  Hosts A and B are
vnetds of their own (processes in the root namespace, each with its own configuration
file and control socket); host C is a kernel bridge with a VXLAN device.  The underlay
is one bridge (usw, in namespace us) joining the three.  Namespaces are named
vnt<pid>..., deleted by name at cleanup; the FRR daemons are stopped by the PIDs the
harness started (checked against their pid files):

  vmA 10.79.0.1/24              vmB 10.79.0.2/24 and a QEMU   vmC 10.79.0.3/24
                                guest 10.79.0.4/24 (host_mtu
                                1450) on vhost-user port "vmq"
   TAP of vnetd A                TAP of vnetd B                veth ethc <-> vcc
     |                             |                             |
  vnetd A: "tapa" <->           vnetd B: "tapb", "vmq" <->    uC: bridge br100:
   segment "vx100", VNI 100,     segment "vx100", the same       vcc, vxlan100 (id 100,
   control "evpn", no remote     in uB                           dstport 4789, nolearning,
   (flood list from BGP),                                        learning off)
   data path UDP 4789 in uA;
   shadow in uA: vnb100
   (bridge), vnx100 (vxlan,
   dstport 4790), vna100/vnp100
   (anchor veth)
  zebra + bgpd in uA  <------ iBGP l2vpn evpn, full mesh ------>  zebra + bgpd in uB, uC
     |                             |                             |
  uA: ula 192.168.70.1/24       uB: ulb 192.168.70.2/24       uC: ulc 192.168.70.3/24
     +------------------ veths into bridge usw (namespace us) ----------+

vnetd writes each MAC it learns locally to the anchor port of its shadow bridge (an
extern_learn FDB entry: zebra advertises it as a type-2 route) and reads what zebra
installs on the shadow VXLAN device over netlink: `00:00:00:00:00:00 dst VTEP` (type-3,
the flood list) and `MAC dst VTEP` (type-2, a remote MAC).  The shadow carries no traffic
(its VXLAN device is on UDP 4790; vnetd's own data path is UDP 4789).  The underlay
veths have TX checksum offload off, as in test_vxlan_vnetd.py.

Asserts:
  1. within 15 s of the vnetds' start, every host has both others in its flood list:
     for vnetd, `vnetctl --json ports` -> the segment's "extra" has "evpn_vteps" == 2 and
     `bridge fdb show dev vnx100` in its underlay namespace has `00:00:00:00:00:00 dst
     <VTEP>` for both others (zebra's type-3 entries); for host C, its vxlan100 has them;
  2. ping vmA -> vmB: after a warm-up, 20 pings at 20 ms all answered; iperf3 TCP
     vmA -> vmB for 3 s > 50 Mbit/s (10 under a sanitizer); vnetd <-> kernel VXLAN:
     20 pings vmA -> vmC and vmC -> vmB, all answered;
  10. the QEMU guest (eth0 MTU 1450 from host_mtu) pings vmA (behind vnetd A) and vmC
     (behind the kernel VTEP) 10/10, and iperf3 TCP guest -> vmA and vmA -> guest (-R)
     for 3 s each move more than the bound of (2) (the guest's TSO frames segmented by
     vnetd B to fit the tunnel; vmA's TSO frames by vnetd A, delivered to the guest);
  3. each VM's MAC (the QEMU guest's too) is local on its host and remote with the right
     VTEP on the two others,
     in `vtysh -N <ns> -c 'show evpn mac vni 100 json'` of all three, and in
     `vnetctl --json fdb` of both vnetds (a remote entry on the segment with "vtep" the
     other host's address, the local one on the TAP port);
  9. known unicast goes to its VTEP only: during 20 more pings vmA -> vmB, no datagram
     reaching host C's VTEP (capture on ulc) carries a frame between vmA's and vmB's MACs;
  5. the VXLAN datagrams captured on host B's underlay veth during the first pings are
     UDP destination port 4789 with VNI 100 (flags 0x08), both directions present;
  11. a second EVPN segment on the same endpoint: `vnetctl add-segment 200 --vlan 20
     --control evpn` on both vnetds (same local address and UDP port as VNI 100: the
     kernel steers by VNI; a second shadow vnb200/vnx200/vna200 whose VXLAN device shares
     UDP 4790 with vnx100) and a TAP in VLAN 20 on each: within 15 s each has the other in
     VNI 200's flood list (host C has no VNI 200), 20 pings between the VLAN 20 TAPs all
     answered, their MACs local/remote with the right VTEP in zebra's VNI 200 on A and B,
     VNI 100 still answers, no vxlan_bad_vni on any segment; after (7) VNI 200 answers
     again;
  7. hot upgrade of vnetd A (`vnetctl upgrade`) while vmA pings vmB every 20 ms: at most
     2 pings lost; the shadow devices in uA keep their ifindexes (the successor adopts
     them: zebra's routes hang on them); the new vnetd's flood list is back within 5 s
     and (3) holds again;
  8. restart of vnetd A (SIGTERM, then a new vnetd from the same file): at the stop its
     shadow is gone from uA, and within 10 s nothing of host A is left elsewhere: vnetd
     B's flood list is host C alone and its FDB has nothing behind A's VTEP, zebra B and
     C have no vmA MAC, host C's vxlan100 nothing to A; after the start the flood lists
     are back within 15 s, pings vmA -> vmB and vmA -> vmC all answered, (3) holds again;
  4. `vnetctl del-port tapa` on host A: within 10 s vmA's MAC is withdrawn from zebra B
     and C and from vnetd B's FDB (no entry of that MAC with a vtep);
  5. (the rest) no UDP datagram to or from port 4790 crossed host B's underlay veth during
     the whole test (the shadow carries nothing);
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
from vnet_harness.guest import GuestImage, QemuGuest, require_guest  # noqa: E402
from vnet_harness.netns import Capture, Netns, require_netns, unique_name  # noqa: E402
from vnet_harness.pcap import read_pcap  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import require_vnetd  # noqa: E402
from vnet_harness.vxlan import (INNER_MTU, PING_COUNT, SEGMENT, UDP_PORT, VNI,  # noqa: E402
                                VxlanHost, build_underlay_switch, iperf, iperf_server,
                                listing, mac_str, outer,
                                ping_all, ping_stats, require_kernel_links, start_hosts,
                                warm_up, warning_lines)
from test_vnetctl import PingStream  # noqa: E402

NET = "10.79.0."
IP_A, IP_B, IP_C = NET + "1", NET + "2", NET + "3"
UL = "192.168.70."
VTEP_A, VTEP_B, VTEP_C = UL + "1", UL + "2", UL + "3"
SHADOW_PORT = 4790
TAP_A, TAP_B = "tapa", "tapb"
MAC_A = "02:79:00:00:00:01"       # vmA's TAP
MAC_B = "02:79:00:00:00:02"       # vmB's TAP
MAC_C = "02:79:00:00:00:03"       # vmC's veth (the kernel host)
IP_Q, MAC_Q = NET + "4", "52:54:00:79:00:04"   # the QEMU guest on host B
GUEST_PORT = "vmq"
ZERO_MAC = "00:00:00:00:00:00"
VXLAN_DEV = "vnx%d" % VNI         # the shadow vnetd creates in the underlay namespace
BRIDGE_DEV = "vnb%d" % VNI
ANCHOR_DEV = "vna%d" % VNI
ASN = 65000
FLOOD_LIST_TIMEOUT = 15.0
WITHDRAW_TIMEOUT = 10.0
STREAM_PINGS = 25         # replies of the 20 ms ping stream before and after the upgrade
MAX_UPGRADE_LOST = 2
FRR_DIR = "/usr/lib/frr"
# The second segment (11): VNI 200 on VLAN 20, on the same endpoint as VNI 100.
VNI2, SEGMENT2 = 200, "vx200"
IPS2 = ("10.79.20.1", "10.79.20.2")
MACS2 = ("02:79:00:00:20:01", "02:79:00:00:20:02")


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

    def __init__(self, s, ns, tag, router_id, peers):
        self.s = s
        self.ns = ns
        self.tag = tag
        self.router_id = router_id
        self.peers = peers
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
        ] + [line % p for p in peers for line in (
            " neighbor %s remote-as " + str(ASN),
            " neighbor %s timers 3 9",
            " neighbor %s timers connect 2")] + [
            " address-family l2vpn evpn",
        ] + ["  neighbor %s activate" % p for p in peers] + [
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
        return all(j.get("peers", {}).get(p, {}).get("state") == "Established"
                   for p in self.peers)

    def evpn_macs(self, vni=VNI):
        """{mac: {"type": "local"|"remote", "intf"/"remoteVtep": ...}} of a VNI."""
        j = self.vtysh_json("show evpn mac vni %d json" % vni)
        return {m.lower(): v for m, v in j.get("macs", {}).items()}


# --- hosts --------------------------------------------------------------------------

def flood_entries(fdb, peers):
    """The flood entries (zebra's type-3: `00:00:00:00:00:00 dst PEER`) of every peer in
    `bridge fdb` lines, or [] if one is missing."""
    got = [[line for line in fdb if line.startswith("%s dst %s " % (ZERO_MAC, p))]
           for p in peers]
    return sum(got, []) if all(got) else []


class Host(VxlanHost):
    """One "host": its vnetd (config file, control socket), the VM namespace with the
    vnetd's TAP, the underlay namespace with the segment's sockets, the shadow and FRR."""

    control = "evpn"

    kernel = False
    intf = ANCHOR_DEV  # where zebra sees this host's local MACs

    def __init__(self, s, tag, tap_port, vm, underlay, local, peers, ip, mac, extra=()):
        self.peers = peers
        self.extra = list(extra)  # more config lines (a vhost-user port)
        self.frr = Frr(s, underlay, tag, local, peers)
        super().__init__(s, tag, tap_port, vm, underlay, local, peers[0], ip, mac,
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
        ] + self.extra

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
        return flood_entries(self.kernel_fdb(), self.peers)

    def shadow_ifindexes(self):
        """{device: ifindex or None} of the shadow in the underlay namespace."""
        out = {}
        for dev in (BRIDGE_DEV, VXLAN_DEV, ANCHOR_DEV):
            rc, text = self.underlay.run("cat /sys/class/net/%s/ifindex" % dev, check=False)
            out[dev] = int(text.strip()) if rc == 0 and text.strip().isdigit() else None
        return out

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


class KernelHost:
    """A host without vnetd: the kernel's data path as FRR's EVPN documentation sets it up,
    in the underlay namespace: bridge br100 (no multicast snooping), VXLAN device vxlan100
    (id 100, local VTEP, dstport 4789, nolearning; bridge port learning off,
    neigh_suppress off) and a veth vcc whose peer is the VM's interface in the VM
    namespace; FRR's zebra + bgpd beside them."""

    kernel = True
    intf = "vcc"
    bridge_dev, vxlan_dev = "br%d" % VNI, "vxlan%d" % VNI

    def __init__(self, s, tag, vm, underlay, local, peers, ip, mac):
        self.tag, self.vm, self.underlay, self.local = tag, vm, underlay, local
        self.peers, self.ip, self.mac = peers, ip, mac
        self.label = "kernel host %s" % tag
        self.vm_if = "eth" + tag.lower()
        self.frr = Frr(s, underlay, tag, local, peers)

    def setup(self):
        u, br, vx = self.underlay, self.bridge_dev, self.vxlan_dev
        u.run("ip link add %s type bridge mcast_snooping 0 && ip link set %s addrgenmode none"
              % (br, br))
        u.run("ip link add %s type vxlan id %d local %s dstport %d nolearning dev ul%s "
              "&& ip link set %s mtu %d addrgenmode none master %s"
              % (vx, VNI, self.local, UDP_PORT, self.tag.lower(), vx, INNER_MTU, br))
        u.run("bridge link set dev %s learning off neigh_suppress off" % vx)
        u.run("ip link add vcc mtu %d type veth peer name %s netns %s"
              % (INNER_MTU, self.vm_if, self.vm.name))
        u.run("ip link set vcc master %s && ip link set vcc up && ip link set %s up "
              "&& ip link set %s up" % (br, vx, br))
        self.vm.run("ip link set dev %s address %s && ip addr add %s/24 dev %s "
                    "&& ip link set dev %s up" % (self.vm_if, self.mac, self.ip, self.vm_if,
                                                 self.vm_if))
        log("%s: %s (vxlan id %d local %s dstport %d) and vcc in bridge %s in %s; vm%s %s/24 "
            "(%s) in %s" % (self.label, vx, VNI, self.local, UDP_PORT, br, u.name, self.tag,
                            self.ip, self.mac, self.vm.name))

    def kernel_fdb(self, dev=None):
        rc, out = self.underlay.run("bridge fdb show dev %s" % (dev or self.vxlan_dev),
                                    check=False)
        return [" ".join(line.split()) for line in out.splitlines() if line.strip()] \
            if rc == 0 else []

    def has_flood_entry(self):
        return flood_entries(self.kernel_fdb(), self.peers)


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


def evpn_mac_state(frr, mac, vni=VNI):
    """("local", intf) / ("remote", vtep) / None of `mac` in zebra's VNI (100)."""
    e = frr.evpn_macs(vni).get(mac)
    if e is None:
        return None
    if e.get("type") == "local":
        return ("local", e.get("intf"))
    if e.get("type") == "remote":
        return ("remote", e.get("remoteVtep"))
    return (e.get("type"), e)


def second_segment(s, hosts):
    """Step (11): VNI 200 on VLAN 20 of both vnetds, on the endpoint of VNI 100, with a
    TAP in VLAN 20 on each (namespaces n2a, n2b); pings between them, and their MACs in
    zebra's VNI 200.  Returns a function that pings over VNI 200 again."""
    vms = []
    for i, h in enumerate(hosts):
        ns = Netns(s, "n2" + h.tag.lower())
        ifname = unique_name("ev2" + h.tag.lower())
        ns.own_link(ifname)
        h.vnetd.vnetctl("add-segment", str(VNI2), "--name", SEGMENT2, "--vlan", "20",
                        "--local", h.local, "--control", "evpn", "--netns", h.underlay.name)
        h.vnetd.vnetctl("add-port", "tap", "tap2", "--ifname", ifname, "--netns", ns.name,
                        "--vlan", "20")
        ns.wait_link(ifname)
        ns.run("ip link set dev %s address %s" % (ifname, MACS2[i]))
        ns.add_address(ifname, IPS2[i] + "/24")
        ns.run("ip link set dev %s up" % ifname)
        vms.append(ns)
    a, b = hosts

    def vteps2(h):
        p = h.ports().get(SEGMENT2, {})
        return p.get("extra", {}).get("evpn_vteps")
    wait_until(lambda: all(vteps2(h) == 1 for h in hosts), FLOOD_LIST_TIMEOUT, interval=0.2,
               what="VNI %d's flood lists (evpn_vteps 1 on both vnetds): %s"
               % (VNI2, [h.ports().get(SEGMENT2) for h in hosts]))
    warm_up(vms[0], IPS2[1], "warm-up ping over VNI %d" % VNI2)
    tx, rx, out = ping_all(vms[0], IPS2[1], "ping over VNI %d" % VNI2)
    want = {(a.tag, MACS2[0]): ("local", "vna%d" % VNI2), (a.tag, MACS2[1]): ("remote", b.local),
            (b.tag, MACS2[1]): ("local", "vna%d" % VNI2), (b.tag, MACS2[0]): ("remote", a.local)}
    seen = {}

    def macs2():
        for (tag, mac) in want:
            h = a if tag == a.tag else b
            seen[(tag, mac)] = evpn_mac_state(h.frr, mac, VNI2)
        return seen == want
    wait_until(macs2, 10, interval=0.2, what="the VLAN 20 MACs in zebra's VNI %d as %s: %s"
               % (VNI2, want, seen))
    warm_up(hosts[0].vm, IP_B, "ping vmA -> vmB (VNI %d) next to VNI %d" % (VNI, VNI2))
    ping_all(hosts[0].vm, IP_B, "ping vmA -> vmB (VNI %d) next to VNI %d" % (VNI, VNI2))
    bad = {(h.tag, n): p["counters"]["drops"]["vxlan_bad_vni"] for h in hosts
           for n, p in h.ports().items() if p.get("type") == "vxlan"}
    if any(bad.values()):
        raise HarnessError("datagrams reached the other segment's socket (vxlan_bad_vni): %s"
                           % bad)
    log("RESULT (11) second EVPN segment VNI %d on %s:%d and %s:%d: flood lists 1 VTEP each, "
        "ping %d/%d (%s), zebra VNI %d MACs %s, VNI %d still answers, vxlan_bad_vni %s"
        % (VNI2, a.local, UDP_PORT, b.local, UDP_PORT, rx, tx, ping_stats(out), VNI2, seen,
           VNI, bad))

    def again(when):
        warm_up(vms[0], IPS2[1], "warm-up ping over VNI %d %s" % (VNI2, when))
        tx_, rx_, out_ = ping_all(vms[0], IPS2[1], "ping over VNI %d %s" % (VNI2, when))
        log("RESULT (11) ping over VNI %d %s: %d/%d (%s)" % (VNI2, when, rx_, tx_,
                                                           ping_stats(out_)))
    return again


# --- the test -----------------------------------------------------------------------------

def unicast_at(path, macs):
    """The datagrams of a capture whose inner frame is unicast between two of `macs`."""
    out = []
    for _, data in read_pcap(path):
        try:
            inner = outer(data).inner
        except (IndexError, struct.error, ValueError):
            continue
        if mac_str(inner[0:6]) in macs and mac_str(inner[6:12]) in macs:
            out.append(data)
    return out


def body(s, args):
    t_start = time.monotonic()
    under = build_underlay_switch(s, {"a": VTEP_A, "b": VTEP_B, "c": VTEP_C})
    ma, mb, mc = Netns(s, "ma"), Netns(s, "mb"), Netns(s, "mc")
    a = Host(s, "A", TAP_A, ma, under["a"], VTEP_A, [VTEP_B, VTEP_C], IP_A, MAC_A)
    guest_sock = s.path("vmq.sock")
    s.remove_file_later(guest_sock)
    b = Host(s, "B", TAP_B, mb, under["b"], VTEP_B, [VTEP_A, VTEP_C], IP_B, MAC_B,
             extra=["", "[[port]]", 'name = "%s"' % GUEST_PORT, 'type = "vhost-user"',
                    'socket = "%s"' % guest_sock])
    c = KernelHost(s, "C", mc, under["c"], VTEP_C, [VTEP_A, VTEP_B], IP_C, MAC_C)
    hosts = (a, b)           # the vnetd hosts
    everyone = (a, b, c)
    ub, uc = b.underlay, c.underlay
    c.setup()

    # --- FRR first (as a system service would be), the BGP sessions up ---------------------
    for h in everyone:
        h.frr.start()
    t0 = time.monotonic()
    wait_until(lambda: all(h.frr.session_up() for h in everyone), 30, interval=0.2,
               what="the iBGP l2vpn evpn sessions between %s, %s and %s Established"
               % (VTEP_A, VTEP_B, VTEP_C))
    log("BGP l2vpn evpn sessions Established in %.1f s (zebra pids %s, bgpd pids %s)"
        % (time.monotonic() - t0, [h.frr.zebra.pid for h in everyone],
           [h.frr.bgpd.pid for h in everyone]))

    # Every UDP datagram on host B's underlay veth to or from the shadow's port, for the
    # whole test (expected: none); and every UDP datagram during the pings.
    cap_shadow = Capture(ub, "cap-4790", "ulb", "udp port %d" % SHADOW_PORT, count=1000,
                         direction="", snaplen=128).wait_ready()

    # --- the vnetds -------------------------------------------------------------------------
    t_vnetd = time.monotonic()
    _, min_mbps = start_hosts(hosts)
    # A QEMU guest on host B (its virtio-net MTU the tunnel's, as README says: host_mtu).
    image = GuestImage.build(os.path.join(s.build_dir, "integration-cache"))
    guest = QemuGuest(s, "guest-q", image, guest_sock, IP_Q + "/24", MAC_Q,
                      device_props={"host_mtu": INNER_MTU}).start()
    for h in hosts:
        seg = h.segment()
        vx = seg.get("vxlan", {})
        if seg.get("type") != "vxlan" or vx.get("control") != "evpn" or vx.get("vni") != VNI \
                or vx.get("local") != h.local:
            raise HarnessError("vnetd %s: segment %s should be of type vxlan, control evpn, "
                               "VNI %d, local %s: %s" % (h.tag, SEGMENT, VNI, h.local, seg))

    # --- (1) the flood lists from BGP (type-3) --------------------------------------------
    def flood_lists():
        got = {h.tag: (h.evpn_vteps(), h.has_flood_entry()) for h in hosts}
        got[c.tag] = (None, c.has_flood_entry())
        return all(v[1] for v in got.values()) and \
            all(got[h.tag][0] == len(h.peers) for h in hosts) and got
    try:
        got = wait_until(flood_lists, FLOOD_LIST_TIMEOUT, interval=0.2,
                         what="every host's flood list to have the two others (vnetd: "
                         "evpn_vteps 2; kernel: %s dst <other> on the VXLAN device)" % ZERO_MAC)
    except HarnessError as e:
        for h in hosts:
            log("vnetd %s: evpn_vteps %s, extra %s; %s in %s: %s; shadow: %s; zebra: %s"
                % (h.tag, h.evpn_vteps(), h.segment().get("extra"), VXLAN_DEV,
                   h.underlay.name, h.kernel_fdb(), h.shadow_details(),
                   " ".join(h.frr.vtysh("show evpn vni %d" % VNI, check=False).split())))
        log("%s: %s: %s; zebra: %s" % (c.label, c.vxlan_dev, c.kernel_fdb(), " ".join(
            c.frr.vtysh("show evpn vni %d" % VNI, check=False).split())))
        raise e
    took = time.monotonic() - t_vnetd
    for h in hosts:
        log("shadow of vnetd %s in %s: %s" % (h.tag, h.underlay.name,
                                              "\n    ".join(h.shadow_details())))
        log("RESULT (1) vnetd %s: evpn_vteps %s; %s: %s"
            % (h.tag, got[h.tag][0], VXLAN_DEV, got[h.tag][1]))
    log("RESULT (1) %s: %s: %s" % (c.label, c.vxlan_dev, got[c.tag][1]))
    log("RESULT (1) flood lists from BGP %.1f s after the vnetds' start" % took)

    cap_udp = Capture(ub, "cap-udp", "ulb", "udp", count=1000, direction="",
                      snaplen=128).wait_ready()

    # --- (2) ping vmA -> vmB, iperf3; ping the kernel host's VM both ways -----------------
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
    for src_ns, src, dst_ip, dst in ((ma, "vmA", IP_C, "vmC"), (mc, "vmC", IP_B, "vmB")):
        warm_up(src_ns, dst_ip, "warm-up ping %s -> %s" % (src, dst))
        tx, rx, out_k = ping_all(src_ns, dst_ip, "ping %s -> %s" % (src, dst))
        log("RESULT (2) ping %s -> %s (vnetd <-> kernel VXLAN): %d/%d answered, %s"
            % (src, dst, rx, tx, ping_stats(out_k)))

    server = iperf_server(mb, IP_B)
    fwd = iperf(ma, IP_B, min_mbps, "(2) iperf3 TCP vmA -> vmB")
    server.stop()

    # --- (10) the QEMU guest on host B: to vmA (vnetd A) and vmC (kernel host C) ----------
    guest.wait_ready(timeout=120)
    b.vnetd.expect_connected([GUEST_PORT], "server")
    guest_mtu = guest.mtu()
    if guest_mtu != INNER_MTU:
        raise HarnessError("the QEMU guest's eth0 has MTU %d, host_mtu=%d was given"
                           % (guest_mtu, INNER_MTU))
    for target, who in ((IP_A, "vmA"), (IP_C, "vmC")):
        deadline = time.monotonic() + 30
        while guest.ping(target, count=1)[1] != 1:
            if time.monotonic() > deadline:
                raise HarnessError("the QEMU guest on host B cannot reach %s (%s)" % (who, target))
        rc, out_q = guest.run("ping -c 10 -i 0.2 -W 2 %s" % target, timeout=60)
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out_q)
        if not m or m.group(1) != "10" or m.group(2) != "10":
            raise HarnessError("QEMU guest -> %s: not 10/10 answered (rc %d):\n%s"
                               % (who, rc, out_q))
        log("RESULT (10) QEMU guest on host B (MTU %d) -> %s over the tunnel: 10/10 answered"
            % (guest_mtu, who))
    server = iperf_server(ma, IP_A)
    for reverse in (False, True):
        what = "vmA -> QEMU guest" if reverse else "QEMU guest -> vmA"
        res = guest.iperf3(IP_A, seconds=3, reverse=reverse)
        log("RESULT (10) iperf3 TCP %s over the tunnel: %.1f Mbit/s (sender %.1f Mbit/s)"
            % (what, res.receiver_mbps, res.sender_mbps))
        if res.receiver_mbps < min_mbps:
            raise HarnessError("iperf3 TCP %s: %.1f Mbit/s, expected more than %.0f"
                               % (what, res.receiver_mbps, min_mbps))
    server.stop()

    # --- (3) MACs: local on their host, remote with the right VTEP on the others ----------
    # (mac, its host, the port it is on there): the three VMs, and the QEMU guest on host B.
    stations = [(h.mac, h, None if h.kernel else h.tap_port) for h in everyone] + \
        [(MAC_Q, b, GUEST_PORT)]
    want_frr, want_fdb = {}, {}
    for h in everyone:
        for mac, at, port in stations:
            want_frr[(h.tag, mac)] = ("local", h.intf) if at is h else ("remote", at.local)
            if not h.kernel:
                want_fdb[(h.tag, mac)] = (port, None) if at is h else (SEGMENT, at.local)
    seen = {}

    def macs_right():
        ok = True
        for h in everyone:
            fdb = {} if h.kernel else {e["mac"].lower(): e for e in h.fdb()}
            for mac, _, _ in stations:
                z = evpn_mac_state(h.frr, mac)
                e = fdb.get(mac)
                v = (e.get("port"), e.get("vtep")) if e else None
                seen[(h.tag, mac)] = (z, v)
                # zebra names a local MAC's interface: vnetd writes it on the anchor.
                if z != want_frr[(h.tag, mac)]:
                    ok = False
                if not h.kernel and v != want_fdb[(h.tag, mac)]:
                    ok = False
        return ok

    def wait_macs_right(when):
        try:
            wait_until(macs_right, 10, interval=0.2,
                       what="each VM's MAC local on its host and remote with the right VTEP "
                       "on the others, in zebra (show evpn mac vni %d) and in vnetd's FDB%s"
                       % (VNI, when))
        except HarnessError as e:
            raise HarnessError("%s: (zebra, vnetd (port, vtep)) per (host, MAC): %s; expected "
                               "zebra %s, vnetd %s; kernel %s: A %s, B %s; %s: %s"
                               % (e, seen, want_frr, want_fdb, VXLAN_DEV, a.kernel_fdb(),
                                  b.kernel_fdb(), c.vxlan_dev, c.kernel_fdb()))
    wait_macs_right("")
    for (tag, mac), (z, v) in sorted(seen.items()):
        log("RESULT (3) host %s, MAC %s: zebra %s, vnetd fdb (port, vtep) %s"
            % (tag, mac, z, v))
    for h in hosts:
        log("host %s kernel: %s %s; %s %s" % (
            h.tag, VXLAN_DEV, h.kernel_fdb(),
            ANCHOR_DEV, [x for x in h.kernel_fdb(ANCHOR_DEV) if x.startswith("02:79:")]))

    # --- (9) known unicast goes to its VTEP only: nothing of vmA <-> vmB reaches host C ------
    cap_c = Capture(uc, "cap-c", "ulc", "udp and dst host %s" % VTEP_C, count=1000,
                    snaplen=128).wait_ready()
    tx, rx, out_u = ping_all(ma, IP_B, "ping vmA -> vmB with host C listening")
    cap_c.stop()
    leaked = unicast_at(cap_c.path, (MAC_A, MAC_B))
    log("RESULT (9) %d pings vmA -> vmB (MACs known from type-2 routes): %d datagrams to host "
        "C's VTEP during them, %d of them unicast between vmA and vmB"
        % (tx, cap_c.captured, len(leaked)))
    if leaked:
        raise HarnessError("known unicast between vmA and vmB was sent to host C's VTEP %s too "
                           "(%d datagrams):\n  %s" % (VTEP_C, len(leaked), "\n  ".join(
                               describe_datagrams(cap_c.path, {}, 1000))[:3000]))

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

    # --- (11) a second EVPN segment on the same endpoint --------------------------------------
    vni2_again = second_segment(s, hosts)

    # --- (7) hot upgrade of vnetd A under a ping stream: shadow and routes kept ------------
    shadow0 = a.shadow_ifindexes()
    old_pid = a.vnetd.proc.pid
    ping = PingStream(s, ma, IP_B)
    wait_until(lambda: len(ping.replies()) >= STREAM_PINGS, 30, interval=0.05,
               what="%d replies of the ping stream before the upgrade" % STREAM_PINGS)
    reply = a.vnetd.upgrade(timeout=60)
    n_at_upgrade = len(ping.replies())
    if reply.get("ok") is not True or "warning" in reply:
        raise HarnessError("upgrade of vnetd A: reply %s" % reply)
    try:
        wait_until(lambda: (a.vnetd.check_alive(), ping.proc.alive() and
                            len(ping.replies()) >= n_at_upgrade + STREAM_PINGS)[1], 15,
                   interval=0.05, what="%d replies of the ping stream after the upgrade"
                   % STREAM_PINGS)
    except HarnessError as e:
        raise HarnessError("%s; the new vnetd A's ports: %s; its FDB: %s; vnetd B's segment: %s"
                           % (e, a.ports(), a.fdb(), b.segment()))
    sent, received, lost, missing, in_flight, gap = ping.stop_counted()
    shadow1 = a.shadow_ifindexes()
    log("RESULT (7) upgrade of vnetd A: pid %d -> %d, data path paused %.2f ms; ping every "
        "20 ms across it: %d sent, %d answered, lost %d (icmp_seq %s), longest gap %.0f ms; "
        "shadow ifindexes before %s, after %s"
        % (old_pid, a.vnetd.proc.pid, reply.get("pause_ms", -1), sent, received, lost,
           missing or "none", gap * 1e3, shadow0, shadow1))
    if lost > MAX_UPGRADE_LOST:
        raise HarnessError("the upgrade of vnetd A lost %d pings (icmp_seq %s, %d after the "
                           "last reply), at most %d allowed"
                           % (lost, missing, in_flight, MAX_UPGRADE_LOST))
    if shadow1 != shadow0 or None in shadow0.values():
        raise HarnessError("the new vnetd A did not keep its predecessor's kernel shadow (the "
                           "routes zebra advertises hang on it): ifindexes before %s, after %s"
                           % (shadow0, shadow1))
    # The successor reads the flood list and remote MACs back from the shadow at its start.
    wait_until(lambda: a.evpn_vteps() == 2, 5, interval=0.1,
               what="the new vnetd A's flood list (evpn_vteps 2): %s" % a.segment().get("extra"))
    wait_macs_right(", after the upgrade")
    log("RESULT (7) after the upgrade: evpn_vteps %s; MACs in zebra and vnetd as before"
        % a.evpn_vteps())
    vni2_again("after the upgrade")

    # --- (8) restart of vnetd A: withdrawn, then advertised and synced again -----------------
    a.stop()
    left = [d for d in (BRIDGE_DEV, VXLAN_DEV, ANCHOR_DEV) if a.underlay.link_exists(d)]
    if left:
        raise HarnessError("vnetd A stopped, but its shadow links %s are left in %s"
                           % (left, a.underlay.name))
    t0 = time.monotonic()

    def a_gone():
        return b.evpn_vteps() == 1 and not [e for e in b.fdb() if e.get("vtep") == VTEP_A] \
            and all(evpn_mac_state(h.frr, MAC_A) is None for h in (b, c)) \
            and not [x for x in c.kernel_fdb() if " dst %s " % VTEP_A in x + " "]
    wait_until(a_gone, WITHDRAW_TIMEOUT, interval=0.1,
               what="host A's routes withdrawn after vnetd A stopped: vnetd B's flood list "
               "has only host C (evpn_vteps 1) and its FDB nothing behind %s; zebra B and C "
               "without %s; host C's %s nothing to %s" % (VTEP_A, MAC_A, c.vxlan_dev, VTEP_A))
    took_down = time.monotonic() - t0
    a.vnetd.name += "-restarted"  # a log file of its own
    t0 = time.monotonic()
    a.start()
    wait_until(flood_lists, FLOOD_LIST_TIMEOUT, interval=0.2,
               what="the flood lists again after vnetd A's restart")
    took_flood = time.monotonic() - t0
    warm_up(ma, IP_B, "warm-up ping vmA -> %s after vnetd A's restart" % IP_B)
    tx, rx, out_restart = ping_all(ma, IP_B, "ping vmA -> vmB after vnetd A's restart")
    warm_up(ma, IP_C, "warm-up ping vmA -> %s after vnetd A's restart" % IP_C)
    ping_all(ma, IP_C, "ping vmA -> vmC after vnetd A's restart")
    wait_macs_right(", after vnetd A's restart")
    log("RESULT (8) restart of vnetd A: host A's routes gone from hosts B and C %.2f s after "
        "the stop; flood lists back %.1f s after the start; ping vmA -> vmB %d/%d, %s, and "
        "vmA -> vmC; MACs synced again" % (took_down, took_flood, rx, tx,
                                           ping_stats(out_restart)))

    # --- (4) del-port on host A: vmA's MAC withdrawn on hosts B and C ----------------------
    t0 = time.monotonic()
    a.vnetd.vnetctl("del-port", TAP_A)
    state = {}

    def withdrawn():
        z = evpn_mac_state(b.frr, MAC_A)
        zc = evpn_mac_state(c.frr, MAC_A)
        ent = [e for e in b.fdb() if e["mac"].lower() == MAC_A and e.get("vtep")]
        state.update(zebra=z, zebra_c=zc, fdb=ent, kernel=[x for x in b.kernel_fdb()
                                                           if x.startswith(MAC_A)])
        return z is None and zc is None and not ent
    try:
        wait_until(withdrawn, WITHDRAW_TIMEOUT, interval=0.1,
                   what="vmA's MAC %s withdrawn from hosts B and C after del-port %s on host A"
                   % (MAC_A, TAP_A))
    except HarnessError as e:
        raise HarnessError("%s: zebra C %s; host B: zebra %s, vnetd B fdb %s, kernel %s; "
                           "host A: zebra %s, %s %s, vnetd A fdb %s"
                           % (e, state.get("zebra_c"), state.get("zebra"), state.get("fdb"),
                              state.get("kernel"),
                              evpn_mac_state(a.frr, MAC_A), ANCHOR_DEV,
                              [x for x in a.kernel_fdb(ANCHOR_DEV) if x.startswith(MAC_A)],
                              [x for x in a.fdb() if x["mac"].lower() == MAC_A]))
    took_withdraw = time.monotonic() - t0
    log("RESULT (4) del-port %s on host A: vmA's MAC withdrawn from hosts B (zebra and vnetd) and C "
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
    for h in everyone:
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
              require_frr, require_kernel_links, require_guest])
