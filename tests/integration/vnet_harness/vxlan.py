"""Shared parts of the VXLAN tests (test_vxlan_static, test_vxlan_vnetd, test_vxlan_evpn).

A "host" of these tests is a vnetd of its own started from a TOML file: a TAP port in a
VM namespace and a `[[segment]]` whose sockets live in the host's underlay namespace
(`VxlanHost`; the EVPN test subclasses it for its FRR and kernel shadow).  Two hosts'
underlay namespaces are joined by one veth (ula <-> ulb) with TX checksum offload off:
a real NIC finishes checksums on the wire, a veth would hand the other namespace's UDP
socket CHECKSUM_PARTIAL inner segments (see test_vxlan_static.py).

Also here: kernel-link prerequisites, warm-up / ping / iperf3 helpers with the
sanitizer-dependent throughput bound, segment counters and their deltas, the port and
FDB checks, vnetd log checks (warnings, sanitizer reports) and the outer
IPv4/UDP/VXLAN headers of captured datagrams.
"""

import collections
import re
import socket
import struct
import subprocess
import time

from .iperf import parse_iperf3
from .netns import Netns, unique_name
from .procs import HarnessError, log, wait_until
from .vnetd import ControlConnection, Vnetd, sanitizer_of

VNI = 100
UDP_PORT = 4789
SEGMENT = "vx100"
INNER_MTU = 1450
UNDERLAY_MTU = 1500
MAX_INNER = UNDERLAY_MTU - 36  # 1464: the inner frame, Ethernet header included
PING_COUNT = 20
PING_INTERVAL = 0.02
IPERF_SECONDS = 3
IPERF_PORT = 5201
MIN_MBPS = 50.0
MIN_MBPS_SANITIZER = 10.0
VXLAN_DROPS = ("vxlan_bad_header", "vxlan_bad_vni", "vxlan_unknown_vtep", "tunnel_too_big")
EXTRA = ("learned", "moved", "flood_copies", "unicast_sent", "send_errors")
SANITIZER_MARKERS = ("AddressSanitizer", "ThreadSanitizer", "LeakSanitizer",
                     "UndefinedBehaviorSanitizer", "runtime error:")


# --- prerequisites ------------------------------------------------------------------

_PROBE_LINKS = {
    "veth": ["p0", "type", "veth", "peer", "name", "p1"],
    "bridge": ["b0", "type", "bridge"],
    "vxlan": ["x0", "type", "vxlan", "id", "100", "dstport", "4789",
              "local", "192.0.2.1", "remote", "192.0.2.2"],
}


def kernel_links(*kinds):
    """A prerequisite check: links of these kinds (veth, bridge, vxlan) can be created;
    probed in a throwaway namespace, deleted by name."""
    def check(_args):
        name = unique_name("probe")
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if r.returncode != 0:
            return ["network namespaces (ip netns add: %s)" % r.stderr.strip()]
        missing = []
        try:
            for kind in kinds:
                r = subprocess.run(["ip", "-n", name, "link", "add"] + _PROBE_LINKS[kind],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    missing.append("kernel %s links (%s)" % (kind, r.stderr.strip()))
        finally:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True)
        return missing
    return check


require_kernel_links = kernel_links("veth", "bridge", "vxlan")
require_veth = kernel_links("veth")


# --- the underlay -------------------------------------------------------------------

def link_underlay(ua, ub, vtep_a, vtep_b, tx_off=("ula", "ulb")):
    """A veth ula (in ua, vtep_a/24) <-> ulb (in ub, vtep_b/24), MTU UNDERLAY_MTU; TX
    checksum offload off on the interfaces named in tx_off."""
    ua.run("ip link add ula type veth peer name ulb netns %s" % ub.name)
    for ns, ifname, addr in ((ua, "ula", vtep_a), (ub, "ulb", vtep_b)):
        ns.run("ip link set %s mtu %d && ip addr add %s/24 dev %s && ip link set %s up"
               % (ifname, UNDERLAY_MTU, addr, ifname, ifname))
        if ifname in tx_off:
            # A real NIC finishes checksums on the wire; a veth would hand the other
            # namespace's UDP socket CHECKSUM_PARTIAL inner segments.
            ns.run("ethtool -K %s tx off" % ifname)


def build_underlay(s, vtep_a, vtep_b):
    """Underlay namespaces ua and ub joined by link_underlay(), once they reach each
    other."""
    ua, ub = Netns(s, "ua"), Netns(s, "ub")
    link_underlay(ua, ub, vtep_a, vtep_b)
    wait_until(lambda: ua.run("ping -n -c 1 -W 1 %s" % vtep_b, check=False)[0] == 0, 15,
               interval=0.1, what="the underlay %s -> %s" % (vtep_a, vtep_b))
    log("underlay: %s (ula %s) <-> %s (ulb %s), TX checksum offload off on both"
        % (ua.name, vtep_a, ub.name, vtep_b))
    return ua, ub


def build_underlay_switch(s, vteps):
    """One underlay namespace per VTEP (u<tag>: interface ul<tag> with the VTEP's
    address/24, TX checksum offload off as in link_underlay) and a switch namespace "us"
    whose bridge "usw" joins them (veth sw<tag> <-> ul<tag>).  `vteps`: {tag: address},
    tags a single lower-case letter.  Returns {tag: namespace}, once each reaches every
    other."""
    sw = Netns(s, "us")
    sw.run("ip link add usw type bridge && ip link set usw type bridge mcast_snooping 0 "
           "&& ip link set usw up")
    spaces = {}
    for tag, addr in vteps.items():
        ns = Netns(s, "u" + tag)
        ul, port = "ul" + tag, "sw" + tag
        sw.run("ip link add %s mtu %d type veth peer name %s netns %s"
               % (port, UNDERLAY_MTU, ul, ns.name))
        sw.run("ip link set %s master usw && ip link set %s up" % (port, port))
        ns.run("ip link set %s mtu %d && ip addr add %s/24 dev %s && ip link set %s up "
               "&& ethtool -K %s tx off" % (ul, UNDERLAY_MTU, addr, ul, ul, ul))
        spaces[tag] = ns
    for tag, ns in spaces.items():
        for other, addr in vteps.items():
            if other != tag:
                wait_until(lambda: ns.run("ping -n -c 1 -W 1 %s" % addr, check=False)[0] == 0,
                           15, interval=0.1, what="the underlay %s -> %s" % (vteps[tag], addr))
    log("underlay: bridge usw in %s joins %s, TX checksum offload off"
        % (sw.name, ", ".join("%s (ul%s %s)" % (spaces[t].name, t, a) for t, a in vteps.items())))
    return spaces


# --- one host -----------------------------------------------------------------------

class VxlanHost:
    """One "host": its vnetd (config file, control socket), the VM namespace with the
    vnetd's TAP (address ip, MAC mac), the underlay namespace where its segment's
    sockets live (local VTEP address, remote: the other host's).

    `label` names the vnetd in log lines and errors ("vnetd A"), `name` its process,
    log, control socket and config file ("vnetd-A")."""

    control = "static"

    def __init__(self, s, tag, tap_port, vm, underlay, local, remote, ip, mac,
                 ifname_prefix="vx", name=None, label=None, pin=False):
        self.s = s
        self.tag = tag
        self.tap_port = tap_port
        self.vm = vm
        self.underlay = underlay
        self.local = local
        self.remote = remote
        self.ip = ip
        self.mac = mac
        self.name = name or "vnetd-%s" % tag
        self.label = label or "vnetd %s" % tag
        self.tap_if = unique_name(ifname_prefix + tag.lower())
        vm.own_link(self.tap_if)
        self.config = self.write_config()
        self.vnetd = Vnetd(s, [], name=self.name, pin=pin,
                           extra_args=["--config", self.config])

    def segment_config(self):
        """The `[[segment]]` table's lines: a static flood list of the remote VTEP."""
        return [
            "[[segment]]",
            'name = "%s"' % SEGMENT,
            "vni = %d" % VNI,
            "vlan = 0",
            'local = "%s"' % self.local,
            'remote = ["%s"]' % self.remote,
            "udp_port = %d" % UDP_PORT,
            'control = "%s"' % self.control,
            'netns = "%s"' % self.underlay.name,
            "underlay_mtu = %d" % UNDERLAY_MTU,
        ]

    def write_config(self):
        lines = [
            "[[port]]",
            'name = "%s"' % self.tap_port,
            'type = "tap"',
            'ifname = "%s"' % self.tap_if,
            'netns = "%s"' % self.vm.name,
            # No mtu: a TAP vnetd creates in a segment's VLAN gets the tunnel's inner MTU
            # (start() checks it has INNER_MTU).
            "",
        ] + self.segment_config() + [""]
        path = self.s.path("%s.toml" % self.name)
        with open(path, "w") as f:
            f.write("\n".join(lines))
        log("%s config:\n  %s" % (self.label, "\n  ".join(lines)))
        return path

    def start(self, timeout=30.0, link_timeout=15.0):
        """vnetd up, its TAP in the VM namespace with the VM's MAC and address; the TAP
        must have that MAC and MTU INNER_MTU."""
        self.vnetd.start(timeout=timeout)
        self.vm.wait_link(self.tap_if, timeout=link_timeout)
        self.vm.run("ip link set dev %s address %s" % (self.tap_if, self.mac))
        self.vm.add_address(self.tap_if, self.ip + "/24")
        mac = self.vm.run("cat /sys/class/net/%s/address" % self.tap_if)[1].strip().lower()
        mtu = self.vm.link_mtu(self.tap_if)
        if mac != self.mac or mtu != INNER_MTU:
            raise HarnessError("vm%s's TAP %s: MAC %s, MTU %d; expected %s, %d"
                               % (self.tag, self.tap_if, mac, mtu, self.mac, INNER_MTU))

    def stop(self, timeout=15.0):
        stop_clean(self.vnetd, self.label, timeout)

    # --- vnetd's state ----------------------------------------------------------------
    def ports(self):
        """{name: port} over a fresh control connection (no vnetctl process per query)."""
        self.vnetd.check_alive()
        c = ControlConnection(self.vnetd.control)
        try:
            reply = c.request("ports")
        finally:
            c.close()
        return {p["name"]: p for p in reply["ports"]}

    def segment(self):
        """The segment's port dict."""
        p = self.ports().get(SEGMENT)
        if p is None:
            raise HarnessError("%s has no port %s" % (self.label, SEGMENT))
        return p

    def segment_state(self):
        """(drops, extra) of the segment."""
        return drops_extra(self.segment())

    def check_ports(self, what):
        """The segment (of type vxlan, with every counter, configured as a static segment
        is written: VNI, local, remote, UDP port) and the TAP port; returns the segment."""
        want = {"vni": VNI, "local": self.local, "remote": [self.remote], "udp_port": UDP_PORT}
        return check_ports(self.ports(), "%s (%s)" % (self.label, what), self.tap_port, want)

    def fdb(self):
        self.vnetd.check_alive()
        return self.vnetd.vnetctl("fdb", timeout=20)["fdb"]

    def check_fdb(self, what, remote_mac, remote_vtep):
        """The remote VM's MAC on the segment with its VTEP, the local VM's on the TAP."""
        fdb = self.fdb()
        far, near = check_fdb(fdb, "%s FDB (%s)" % (self.label, what), remote_mac, remote_vtep,
                              self.mac, self.tap_port)
        log("%s FDB (%s): %s on %s via %s (age %s s), %s on %s; %d entries"
            % (self.label, what, remote_mac, far["port"], far["vtep"], far.get("age"), self.mac,
               near["port"], len(fdb)))
        return fdb


def host_pair(s, cls, ips, vteps, macs, tap_ports):
    """Underlay namespaces (build_underlay), VM namespaces ma and mb, and hosts A and B of
    class cls (a VxlanHost) on them, each with the other's VTEP as its remote."""
    ua, ub = build_underlay(s, *vteps)
    ma, mb = Netns(s, "ma"), Netns(s, "mb")
    a = cls(s, "A", tap_ports[0], ma, ua, vteps[0], vteps[1], ips[0], macs[0])
    b = cls(s, "B", tap_ports[1], mb, ub, vteps[1], vteps[0], ips[1], macs[1])
    return a, b


def start_hosts(hosts):
    """Start every host's vnetd and TAP; log their pids; returns (sanitizer, min_mbps)."""
    for h in hosts:
        h.start()
    sanitizer, min_mbps = iperf_bound([h.vnetd for h in hosts])
    log("%s%s" % (", ".join("%s pid %d (TAP %s in %s)" % (h.label, h.vnetd.proc.pid, h.tap_if,
                                                           h.vm.name) for h in hosts),
                  ", under %s" % sanitizer if sanitizer else ""))
    return sanitizer, min_mbps


def iperf_bound(vnetds):
    """(sanitizer, minimum iperf3 Mbit/s): MIN_MBPS_SANITIZER if a vnetd runs under a
    sanitizer (its name, else None), MIN_MBPS otherwise."""
    for v in vnetds:
        sanitizer = sanitizer_of(v.proc.pid)
        if sanitizer:
            return sanitizer, MIN_MBPS_SANITIZER
    return None, MIN_MBPS


# --- counters, ports, FDB -------------------------------------------------------------

def delta(before, after, keys):
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


def drops_extra(port):
    """(drops, extra) of a port dict of `ports`."""
    return dict(port["counters"]["drops"]), dict(port.get("extra", {}))


def check_ports(info, who, tap_port, want_vxlan=None):
    """`ports` info ({name: port}) has the segment of type vxlan with every VXLAN drop
    reason and extra counter (and, if given, the "vxlan" fields of want_vxlan) and the
    TAP port tap_port; returns the segment."""
    seg, tap = info.get(SEGMENT), info.get(tap_port)
    if seg is None or seg.get("type") != "vxlan":
        raise HarnessError("%s: %s should be a port of type vxlan: %s" % (who, SEGMENT, seg))
    missing = [k for k in VXLAN_DROPS if k not in seg["counters"]["drops"]] + \
        [k for k in EXTRA if k not in seg.get("extra", {})]
    if missing:
        raise HarnessError("%s: %s lacks counters %s: %s" % (who, SEGMENT, missing, seg))
    if want_vxlan is not None:
        vx = seg.get("vxlan", {})
        got = {k: vx.get(k) for k in want_vxlan}
        if got != want_vxlan:
            raise HarnessError("%s: segment %s configured %s, expected %s: %s"
                               % (who, SEGMENT, got, want_vxlan, seg))
    if tap is None or tap.get("type") != "tap":
        raise HarnessError("%s: %s should be a tap port: %s" % (who, tap_port, tap))
    return seg


def check_fdb(fdb, who, remote_mac, remote_vtep, local_mac, local_port):
    """The FDB entries (remote, local): remote_mac on the segment with vtep remote_vtep,
    local_mac on local_port."""
    by_mac = {x["mac"].lower(): x for x in fdb}
    far, near = by_mac.get(remote_mac), by_mac.get(local_mac)
    if far is None or far.get("port") != SEGMENT or far.get("vtep") != remote_vtep:
        raise HarnessError("%s: the remote MAC %s should be on %s with vtep %s: %s; fdb %s"
                           % (who, remote_mac, SEGMENT, remote_vtep, far, fdb))
    if near is None or near.get("port") != local_port:
        raise HarnessError("%s: the local MAC %s should be on %s: %s; fdb %s"
                           % (who, local_mac, local_port, near, fdb))
    return far, near


# --- traffic --------------------------------------------------------------------------

def ping_stats(out):
    m = re.search(r"rtt min/avg/max/mdev = ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    return "rtt min/avg/max %s/%s/%s ms" % m.groups()[:3] if m else "no rtt line"


def warm_up(ns, target, what, timeout=30.0):
    """One ping at a time until one is answered (ARP through the tunnel, learning on both
    sides; slow under ASan on a loaded machine)."""
    deadline = time.monotonic() + timeout
    tries = 0
    while True:
        tries += 1
        if ns.ping(target, count=1)[1] == 1:
            return tries
        if time.monotonic() > deadline:
            raise HarnessError("%s: no answer within %.0f s (%d pings)" % (what, timeout, tries))


def ping_all(ns, target, what, count=PING_COUNT):
    """`count` pings at PING_INTERVAL from ns, every one answered; (tx, rx, output)."""
    tx, rx, out = ns.ping(target, count=count, interval=PING_INTERVAL)
    if tx != count or rx != count:
        raise HarnessError("%s: %d/%d answered:\n%s" % (what, rx, tx, out))
    return tx, rx, out


def iperf_server(ns, ip):
    """iperf3 -s on ip:IPERF_PORT in ns, once it listens (stop() it)."""
    server = ns.spawn("iperf3-server", ["iperf3", "-s", "--forceflush", "-B", ip,
                                        "-p", IPERF_PORT])
    server.wait_for_log(r"Server listening", 15)
    return server


def iperf(ns, server_ip, min_mbps, what, reverse=False):
    """iperf3 TCP client in ns for IPERF_SECONDS (-R: the server sends); logged, and more
    than min_mbps received."""
    rc, text = ns.run("iperf3 -c %s -p %d -t %d -f m%s"
                      % (server_ip, IPERF_PORT, IPERF_SECONDS, " -R" if reverse else ""),
                      check=False, timeout=IPERF_SECONDS + 60)
    res = parse_iperf3(text, rc, what)
    log("RESULT %s: %.1f Mbit/s (sender %.1f Mbit/s, %.1f MBytes received)"
        % (what, res.receiver_mbps, res.sender_mbps, res.receiver_mbytes))
    if res.receiver_mbps < min_mbps:
        raise HarnessError("%s: %.1f Mbit/s, expected more than %.0f:\n%s"
                           % (what, res.receiver_mbps, min_mbps, text))
    return res


# --- vnetd's log ----------------------------------------------------------------------

def warning_lines(vnetd, about=None):
    """vnetd's log lines with warn/warning/error (only those that name `about`, if given)."""
    return [line for line in vnetd.proc.read_log().splitlines()
            if (about is None or about in line)
            and re.search(r"\b(warn|warning|error)\b", line, re.I)]


def listing(lines, most=8):
    """":\\n  line\\n  line..." (the first `most`) to end a log line, "" if none."""
    return (":\n  " + "\n  ".join(lines[:most])) if lines else ""


def sanitizer_report(text):
    return [m for m in SANITIZER_MARKERS if m in text]


def stop_clean(vnetd, label, timeout):
    """SIGTERM: vnetd must exit 0 with no sanitizer report in its log."""
    vnetd.stop_ok(timeout=timeout)
    found = sanitizer_report(vnetd.proc.read_log())
    if found:
        raise HarnessError("%s's log has a sanitizer report (%s)" % (label, ", ".join(found)))


# --- captures -------------------------------------------------------------------------

def mac_str(b):
    return ":".join("%02x" % x for x in b)


Outer = collections.namedtuple(
    "Outer", "src dst ihl total frag proto sport dport ulen csum vx vni inner")


def outer(data):
    """The outer IPv4/UDP/VXLAN fields of a captured Ethernet frame (IPv4 assumed): ulen
    and csum None if the UDP header is cut, vni None if the VXLAN header is; the VXLAN
    header bytes as vx, the rest as inner.  IndexError, struct.error or OSError if too
    short for the IPv4 addresses and the UDP ports."""
    ip = data[14:]
    ihl = (ip[0] & 0xF) * 4
    udp = ip[ihl:]
    sport, dport = struct.unpack("!HH", udp[:4])
    ulen, csum = struct.unpack("!HH", udp[4:8]) if len(udp) >= 8 else (None, None)
    vx = udp[8:16]
    return Outer(src=socket.inet_ntoa(ip[12:16]), dst=socket.inet_ntoa(ip[16:20]), ihl=ihl,
                 total=struct.unpack("!H", ip[2:4])[0], frag=struct.unpack("!H", ip[6:8])[0],
                 proto=ip[9], sport=sport, dport=dport, ulen=ulen, csum=csum, vx=vx,
                 vni=int.from_bytes(vx[4:7], "big") if len(vx) == 8 else None,
                 inner=udp[16:])


def fdb_entry(vnetd, mac):
    """vnetd's FDB entry of `mac` (None if it has none), over one control connection (no
    vnetctl process: read as soon as vnetd answers)."""
    vnetd.check_alive()
    c = ControlConnection(vnetd.control)
    try:
        cursor = 0
        while True:
            r = c.request("fdb", mac=mac, cursor=cursor)
            for e in r["fdb"]:
                if e["mac"].lower() == mac:
                    return e
            if "cursor" not in r:
                return None
            cursor = r["cursor"]
    finally:
        c.close()
