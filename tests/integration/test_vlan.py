#!/usr/bin/env python3
"""VLANs on one vnetd: two VLANs do not see each other; a trunk carries both, tagged.

vnetd runs from a config file with five TAP ports, each created by vnetd in its
own network namespace (names "vnt<pid>..."):
  pa, pb: access VLAN 10   (ns a: 10.0.0.1, ns b: 10.0.0.2)
  pc, pd: access VLAN 20   (ns c: 10.0.0.3, ns d: 10.0.0.4)
  pt:     trunk [10, 20], no native VLAN (ns t: no addresses)
All four addresses share one subnet, and d's TAP has the same MAC as b's, so
only VLAN isolation (and an FDB keyed by MAC+VLAN) keeps them apart.

The kernel here has no 8021q module (and no bridge), so ns t's "VLAN
sub-interfaces" are raw AF_PACKET sockets: the test sends 802.1Q-tagged ARP
and ICMP frames on t's TAP and reads tags from the kernel's packet aux data.

Asserts:
  - a<->b and c<->d ping (3/3 replies), d->c as well;
  - a cannot reach c and d cannot reach a: ARP unanswered (neighbour not
    reachable), and captures on c and d hold no frame from a's MAC or ARP
    for/from a's address; captures on a and b hold nothing from c;
  - a's broadcasts reach b (untagged) and the trunk (tag 10, never 20); c's
    reach d and the trunk with tag 20; every frame the trunk receives is
    tagged 10 or 20;
  - from the trunk, VLAN 10 ARP+ICMP reaches a (replies tagged 10), VLAN 20
    reaches c (replies tagged 20), and VLAN 20 cannot reach a's address;
  - tagged frames sent from an access port (tags 10 and 20) are dropped and
    counted exactly as vlan_tagged_on_access on that port; frames of VLAN 30
    and untagged frames on the trunk are counted as vlan_not_allowed; no
    port receives any of them;
  - a vhost-user port added at run time with --vlan 20 (DPDK testpmd
    virtio-user front end): its broadcasts reach c and d untagged and the
    trunk tagged 20, exactly once each, and never a or b;
  - `vnetctl --json fdb` holds (a,10,pa) (b,10,pb) (c,20,pc) (b's MAC,20,pd)
    the trunk's MAC in both VLANs on pt, testpmd's in 20 on pv, nothing of a in VLAN 20 or of c
    in VLAN 10; fdb_moved stays 0;
  - vnetd exits 0 on SIGTERM and its TAPs are gone.

The helpers above `body()` (namespaces, packet sockets, frame builders) are
also used by test_vnetctl.py.
"""

import ctypes
import os
import select
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness import hugepages  # noqa: E402
from vnet_harness.testpmd import TestPmd, virtio_user_vdev  # noqa: E402
from vnet_harness.vnetd import Vnetd, require_vnetd  # noqa: E402

# Every namespace, TAP and file name of this run starts with PREFIX.
PREFIX = "vnt%d" % os.getpid()

ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_EXPERIMENTAL = 0x88B5  # IEEE 802 local experimental ethertype 1
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
PACKET_OUTGOING = 4
CLONE_NEWNET = 0x40000000
BROADCAST = "ff:ff:ff:ff:ff:ff"

_libc = ctypes.CDLL(None, use_errno=True)


# --- commands -------------------------------------------------------------------

def sh(*argv, check=True, timeout=30):
    """Run a command; return CompletedProcess (text). check=True fails the test on rc != 0."""
    argv = [str(a) for a in argv]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise HarnessError("%s: timed out after %d s" % (" ".join(argv), timeout))
    if check and r.returncode != 0:
        raise HarnessError("%s: status %d: %s %s" % (" ".join(argv), r.returncode,
                                                     r.stdout.strip()[-500:], r.stderr.strip()[-500:]))
    return r


def netlab_prerequisites():
    return [lambda a: require_root(), lambda a: require_tools("ip", "ping"), require_vnetd]


class Netns:
    """A network namespace PREFIX+suffix, deleted by name at cleanup (IPv6 off: no noise)."""

    def __init__(self, s, suffix):
        self.name = PREFIX + suffix
        sh("ip", "netns", "add", self.name)
        s.cleanup.push("netns %s" % self.name, self.delete)
        # Keep captures quiet: no IPv6 autoconfiguration, router or MLD traffic.
        for key in ("all", "default"):
            path = "/proc/sys/net/ipv6/conf/%s/disable_ipv6" % key
            self.run("sh", "-c", "[ ! -e %s ] || echo 1 > %s" % (path, path))

    def delete(self):
        if os.path.exists("/run/netns/" + self.name):
            sh("ip", "netns", "del", self.name)

    def run(self, *argv, check=True, timeout=30):
        return sh("ip", "netns", "exec", self.name, *argv, check=check, timeout=timeout)

    def ip(self, *argv, check=True):
        return sh("ip", "-n", self.name, *argv, check=check)

    def has_link(self, ifname):
        return self.ip("link", "show", "dev", ifname, check=False).returncode == 0

    def wait_link(self, ifname, timeout=10.0):
        wait_until(lambda: self.has_link(ifname), timeout, interval=0.05,
                   what="interface %s in netns %s" % (ifname, self.name))

    def setup_if(self, ifname, addr, mac=None):
        """Address (CIDR) and optional MAC on ifname, link up."""
        self.wait_link(ifname)
        if mac:
            self.ip("link", "set", "dev", ifname, "address", mac)
        self.ip("addr", "add", addr, "dev", ifname)
        self.ip("link", "set", "dev", ifname, "up")
        self.ip("link", "set", "dev", "lo", "up")

    def ping(self, dst, count=3, interval=0.2, deadline=None):
        """Number of echo replies to `count` pings (waits at most `deadline` s)."""
        deadline = deadline or max(3, int(count * interval) + 3)
        r = self.run("ping", "-n", "-q", "-c", count, "-i", interval, "-w", deadline, dst,
                     check=False, timeout=deadline + 10)
        for line in r.stdout.splitlines():
            if " received" in line:
                return int(line.split(",")[1].split()[0])
        raise HarnessError("ping %s in %s: no summary: %s %s" % (dst, self.name, r.stdout, r.stderr))

    def neigh_state(self, dst, ifname):
        r = self.ip("neigh", "show", dst, "dev", ifname, check=False)
        return r.stdout.strip()

    def packet_socket(self, ifname):
        """AF_PACKET socket bound to ifname inside this namespace (aux data on: VLAN tags)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open("/run/netns/" + self.name, os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise HarnessError("setns %s: %s" % (self.name, os.strerror(ctypes.get_errno())))
            try:
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.bind((ifname, 0))
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:
                    raise HarnessError("setns back: %s" % os.strerror(ctypes.get_errno()))
        finally:
            os.close(own)
            os.close(target)
        sock.setblocking(False)
        return Capture(sock, "%s/%s" % (self.name, ifname))


# --- frames ---------------------------------------------------------------------

def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def mac_str(b):
    return ":".join("%02x" % x for x in b)


def ip_bytes(ip):
    return socket.inet_aton(ip)


def inet_checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst, src, ethertype, payload, vlan=None):
    """Ethernet frame (802.1Q tag if vlan is not None), padded to 60 bytes + tag."""
    hdr = mac_bytes(dst) + mac_bytes(src)
    if vlan is not None:
        hdr += struct.pack("!HH", ETH_P_8021Q, vlan)
    frame = hdr + struct.pack("!H", ethertype) + payload
    minimum = 60 + (4 if vlan is not None else 0)
    return frame + b"\0" * max(0, minimum - len(frame))


def arp_request(src_mac, src_ip, target_ip, vlan=None):
    payload = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + mac_bytes(src_mac) + ip_bytes(src_ip) \
        + b"\0" * 6 + ip_bytes(target_ip)
    return eth(BROADCAST, src_mac, ETH_P_ARP, payload, vlan)


def icmp_echo(src_mac, dst_mac, src_ip, dst_ip, ident, seq, vlan=None):
    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"vnet-vlan-test!!" * 2
    icmp = icmp[:2] + struct.pack("!H", inet_checksum(icmp)) + icmp[4:]
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), ident, 0, 64, 1, 0,
                      ip_bytes(src_ip), ip_bytes(dst_ip))
    iph = iph[:10] + struct.pack("!H", inet_checksum(iph)) + iph[12:]
    return eth(dst_mac, src_mac, ETH_P_IP, iph + icmp, vlan)


class Frame:
    """A received frame: dst, src, vlan (None if untagged), ethertype, payload."""

    def __init__(self, data, vlan):
        self.dst = mac_str(data[0:6])
        self.src = mac_str(data[6:12])
        etype = struct.unpack("!H", data[12:14])[0]
        body = data[14:]
        if vlan is None and etype == ETH_P_8021Q and len(data) >= 18:  # tag left inline
            vlan = struct.unpack("!H", data[14:16])[0] & 0xFFF
            etype = struct.unpack("!H", data[16:18])[0]
            body = data[18:]
        self.vlan = vlan
        self.ethertype = etype
        self.payload = body

    def arp(self):
        """(op, sender_mac, sender_ip, target_ip) or None."""
        if self.ethertype != ETH_P_ARP or len(self.payload) < 28:
            return None
        op = struct.unpack("!H", self.payload[6:8])[0]
        p = self.payload
        return op, mac_str(p[8:14]), socket.inet_ntoa(p[14:18]), socket.inet_ntoa(p[24:28])

    def icmp(self):
        """(type, src_ip, dst_ip, ident, seq) or None."""
        p = self.payload
        if self.ethertype != ETH_P_IP or len(p) < 28 or p[9] != 1:
            return None
        ihl = (p[0] & 0xF) * 4
        t, _, _, ident, seq = struct.unpack("!BBHHH", p[ihl:ihl + 8])
        return t, socket.inet_ntoa(p[12:16]), socket.inet_ntoa(p[16:20]), ident, seq

    def __repr__(self):
        return "<%s -> %s vlan=%s type=0x%04x %s%s>" % (self.src, self.dst, self.vlan,
                                                       self.ethertype, self.arp() or "",
                                                       self.icmp() or "")


class Capture:
    """Frames an AF_PACKET socket received (outgoing ones skipped), VLAN from aux data."""

    def __init__(self, sock, where):
        self.sock = sock
        self.where = where
        self.frames = []

    def send(self, frame):
        self.sock.send(frame)

    def poll(self):
        """Read whatever is queued; return the frames read now (also kept in .frames)."""
        new = []
        while True:
            try:
                data, anc, _, addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(32))
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            vlan = None
            for level, kind, cdata in anc:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(cdata) >= 20:
                    status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", cdata[:20])
                    if status & TP_STATUS_VLAN_VALID:
                        vlan = tci & 0xFFF
            new.append(Frame(data, vlan))
        self.frames.extend(new)
        return new

    def wait_for(self, pred, timeout, what):
        """Wait for a newly received frame matching pred; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for f in self.poll():
                if pred(f):
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError("%s: no %s within %.0f s" % (self.where, what, timeout))
            select.select([self.sock], [], [], min(left, 0.2))

    def clear(self):
        self.poll()
        self.frames = []

    def close(self):
        self.sock.close()


def port_drop(counters, port, reason):
    return counters[port]["drops"].get(reason, 0)


# --- the test -------------------------------------------------------------------

MAC_A = "02:00:00:0a:00:01"
MAC_B = "02:00:00:0a:00:02"
MAC_C = "02:00:00:14:00:03"
MAC_D = MAC_B  # same MAC as b, in the other VLAN
MAC_T = "02:00:00:00:00:54"  # the trunk's frames (both VLANs)
MAC_VU = "02:00:00:14:00:77"  # testpmd's virtio-user port (VLAN 20)
IP = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3", "d": "10.0.0.4"}
IP_T = "10.0.0.5"


def write_config(s, ns, taps):
    lines = ["[vnetd]", 'log_level = "info"', ""]
    for key, vlan in (("a", "vlan = 10"), ("b", "vlan = 10"), ("c", "vlan = 20"),
                      ("d", "vlan = 20"), ("t", "trunk = [10, 20]")):
        lines += ["[[port]]", 'name = "p%s"' % key, 'type = "tap"', 'ifname = "%s"' % taps[key],
                  'netns = "%s"' % ns[key].name, vlan, ""]
    path = s.path("vlan.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def trunk_reach(t, vlan, target_ip, target_mac, ident):
    """From the trunk in `vlan`: ARP for target_ip answered by target_mac tagged `vlan`,
    then an ICMP echo answered tagged `vlan`."""
    t.clear()
    t.send(arp_request(MAC_T, IP_T, target_ip, vlan=vlan))
    reply = t.wait_for(lambda f: (f.arp() or (0,))[0] == 2 and f.arp()[2] == target_ip,
                       5, "ARP reply from %s in VLAN %d" % (target_ip, vlan))
    if reply.vlan != vlan or reply.src != target_mac or reply.dst != MAC_T:
        raise HarnessError("trunk: ARP reply for %s should come tagged %d from %s to %s: %r"
                           % (target_ip, vlan, target_mac, MAC_T, reply))
    for seq in (1, 2):
        t.send(icmp_echo(MAC_T, target_mac, IP_T, target_ip, ident, seq, vlan=vlan))
        echo = t.wait_for(lambda f: (f.icmp() or (None,))[0] == 0 and f.icmp()[3] == ident
                          and f.icmp()[4] == seq, 5,
                          "echo reply %d from %s in VLAN %d" % (seq, target_ip, vlan))
        if echo.vlan != vlan or echo.icmp()[1] != target_ip:
            raise HarnessError("trunk: echo reply should come tagged %d from %s: %r"
                               % (vlan, target_ip, echo))
    log("trunk VLAN %d reaches %s (ARP + 2 pings, replies tagged %d)" % (vlan, target_ip, vlan))


def vhost_access_port(s, vnetd, cap):
    """vhost-user port pv added at run time as access VLAN 20; a testpmd virtio-user front
    end sends broadcasts: c and d get each one untagged, the trunk tagged 20, a and b none."""
    hugepages.ensure_hugepages()
    sock = s.path("pv.sock")
    s.remove_file_later(sock)
    vnetd.vnetctl("add-port", "vhost-user", "pv", "--socket", sock, "--vlan", "20")
    pmd = TestPmd(s, "pv", [virtio_user_vdev(0, sock, mac=MAC_VU)], fwd_mode="rxonly",
                  eth_peers={0: BROADCAST}).start()
    vnetd.wait_connected(["pv"])
    for c in cap.values():
        c.clear()
    pmd.start_fwd(tx_first=4)
    sent = pmd.wait_stats_settle(0).tx_packets

    def got(k, vlan):
        return [f for f in cap[k].frames if f.src == MAC_VU and f.dst == BROADCAST and f.vlan == vlan]

    def delivered():
        for c in cap.values():
            c.poll()
        return len(got("c", None)) >= sent and len(got("d", None)) >= sent and len(got("t", 20)) >= sent
    wait_until(delivered, 10, what="testpmd's %d broadcasts in VLAN 20 on c, d and the trunk" % sent)
    time.sleep(0.3)  # anything wrongly delivered arrives in this window (asserted below)
    for c in cap.values():
        c.poll()
    counts = {k: len([f for f in cap[k].frames if f.src == MAC_VU]) for k in "abcdt"}
    pmd.quit()
    if sent < 32 or counts != {"a": 0, "b": 0, "c": sent, "d": sent, "t": sent} \
            or len(got("t", 20)) != sent:
        raise HarnessError("vhost-user access port in VLAN 20: testpmd sent %d broadcasts; frames "
                           "of it per namespace %s (want c, d, t: %d, a, b: 0)" % (sent, counts, sent))
    log("vhost-user access port pv (VLAN 20, testpmd): %d broadcasts reached c and d untagged and "
        "the trunk tagged 20, none reached a or b" % sent)


def body(s, args):
    ns = {k: Netns(s, k) for k in "abcdt"}
    taps = {k: PREFIX + "t" + k for k in "abcdt"}
    cfg = write_config(s, ns, taps)
    vnetd = Vnetd(s, [], extra_args=["--config", cfg])
    vnetd.start()

    info = vnetd.ports_info()
    want = {"pa": {"mode": "access", "vlan": 10}, "pb": {"mode": "access", "vlan": 10},
            "pc": {"mode": "access", "vlan": 20}, "pd": {"mode": "access", "vlan": 20},
            "pt": {"mode": "trunk", "trunk": [10, 20], "native": 0}}
    for name, vlan in want.items():
        if name not in info or info[name].get("vlan") != vlan or info[name].get("type") != "tap":
            raise HarnessError("vnetctl ports: %s should be a tap port with vlan %s: %s"
                               % (name, vlan, info.get(name)))

    macs = {"a": MAC_A, "b": MAC_B, "c": MAC_C, "d": MAC_D}
    for k in "abcd":
        ns[k].setup_if(taps[k], IP[k] + "/24", macs[k])
    ns["t"].wait_link(taps["t"])
    ns["t"].ip("link", "set", "dev", taps["t"], "up")

    cap = {k: ns[k].packet_socket(taps[k]) for k in "abcdt"}
    s.cleanup.push("packet sockets", lambda: [c.close() for c in cap.values()])

    # --- same VLAN: ping works -------------------------------------------------------
    for src, dst in (("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")):
        n = ns[src].ping(IP[dst], count=3)
        if n != 3:
            raise HarnessError("ping %s -> %s (same VLAN): %d/3 replies" % (src, dst, n))
    log("same VLAN: a<->b (VLAN 10) and c<->d (VLAN 20) ping 3/3")

    # --- across VLANs: nothing -----------------------------------------------------
    for src, dst in (("a", "c"), ("d", "a")):
        n = ns[src].ping(IP[dst], count=2, interval=0.5, deadline=3)
        if n != 0:
            raise HarnessError("ping %s -> %s crossed VLANs: %d replies" % (src, dst, n))
        state = ns[src].neigh_state(IP[dst], taps[src])
        if "lladdr" in state:
            raise HarnessError("%s resolved %s across VLANs: %s" % (src, IP[dst], state))
        log("across VLANs: %s -> %s no reply, ARP unanswered (%s)" % (src, dst, state or "no entry"))

    for c in cap.values():
        c.poll()

    def from_a(f):  # a frame a sent (by MAC, or an ARP with a's address as sender)
        a = f.arp()
        return f.src == MAC_A or (a is not None and a[2] == IP["a"])

    for k in "cd":
        leaked = [f for f in cap[k].frames if from_a(f)]
        if leaked:
            raise HarnessError("capture on %s (VLAN 20) saw VLAN 10 frames of a: %s" % (k, leaked[:5]))
    leaked = [f for f in cap["a"].frames + cap["b"].frames if f.src == MAC_C]
    if leaked:
        raise HarnessError("captures on a/b (VLAN 10) saw frames of c: %s" % leaked[:5])
    a_bcast_b = [f for f in cap["b"].frames if f.src == MAC_A and f.dst == BROADCAST]
    if not a_bcast_b or any(f.vlan is not None for f in a_bcast_b):
        raise HarnessError("b should see a's broadcasts untagged: %s" % a_bcast_b[:5])
    c_bcast_d = [f for f in cap["d"].frames if f.src == MAC_C and f.dst == BROADCAST]
    if not c_bcast_d or any(f.vlan is not None for f in c_bcast_d):
        raise HarnessError("d should see c's broadcasts untagged: %s" % c_bcast_d[:5])

    # The trunk saw both VLANs, tagged, and nothing untagged.
    tf = cap["t"].frames
    untagged = [f for f in tf if f.vlan not in (10, 20)]
    if untagged:
        raise HarnessError("trunk received frames not tagged 10/20: %s" % untagged[:5])
    a_on_t = [f for f in tf if f.src == MAC_A]
    c_on_t = [f for f in tf if f.src == MAC_C]
    if not a_on_t or any(f.vlan != 10 for f in a_on_t):
        raise HarnessError("trunk should see a's broadcasts tagged 10 only: %s" % a_on_t[:5])
    if not c_on_t or any(f.vlan != 20 for f in c_on_t):
        raise HarnessError("trunk should see c's broadcasts tagged 20 only: %s" % c_on_t[:5])
    # The ARP "who has c, tell a" must be on the trunk in VLAN 10 (flooded there), never 20.
    a_asks_c = [f for f in tf if f.arp() and f.arp()[0] == 1 and f.arp()[2] == IP["a"]
                and f.arp()[3] == IP["c"]]
    if not a_asks_c or any(f.vlan != 10 for f in a_asks_c):
        raise HarnessError("a's ARP for c should reach the trunk tagged 10: %s" % a_asks_c)
    log("captures: VLAN 10 and 20 broadcasts stay apart; trunk got %d frames, tags %s"
        % (len(tf), sorted({f.vlan for f in tf})))

    # --- the trunk's two VLANs --------------------------------------------------------
    trunk_reach(cap["t"], 10, IP["a"], MAC_A, ident=0x1010)
    trunk_reach(cap["t"], 20, IP["c"], MAC_C, ident=0x2020)
    cap["t"].clear()
    cap["t"].send(arp_request(MAC_T, IP_T, IP["a"], vlan=20))
    time.sleep(1.0)  # a window in which no answer may come (asserted below)
    answers = [f for f in cap["t"].poll() if f.arp() and f.arp()[0] == 2]
    if answers:
        raise HarnessError("trunk VLAN 20 ARP for a's address (VLAN 10) was answered: %s" % answers)
    log("trunk VLAN 20 cannot reach a's address")

    # --- tagged frames on access ports, foreign frames on the trunk --------------------
    for c in cap.values():
        c.clear()
    c0 = vnetd.counters()
    marker = b"vnet-vlan-test: must be dropped"
    bad_a = [eth(BROADCAST, MAC_A, ETH_P_EXPERIMENTAL, marker + bytes([i]), vlan=v)
             for i, v in enumerate((10, 20, 10, 20, 10, 20))]
    for fr in bad_a:
        cap["a"].send(fr)
    bad_t = [eth(BROADCAST, MAC_T, ETH_P_EXPERIMENTAL, marker + b"T30", vlan=30),
             eth(BROADCAST, MAC_T, ETH_P_EXPERIMENTAL, marker + b"T-untagged"),
             eth(BROADCAST, MAC_T, ETH_P_EXPERIMENTAL, marker + b"T30b", vlan=30)]
    for fr in bad_t:
        cap["t"].send(fr)

    def counted():
        c = vnetd.counters()
        return (port_drop(c, "pa", "vlan_tagged_on_access") - port_drop(c0, "pa", "vlan_tagged_on_access")
                >= len(bad_a) and port_drop(c, "pt", "vlan_not_allowed")
                - port_drop(c0, "pt", "vlan_not_allowed") >= len(bad_t)) and c
    c1 = wait_until(counted, 5, interval=0.1, what="vlan drop counters (pa tagged_on_access +%d, "
                    "pt not_allowed +%d)" % (len(bad_a), len(bad_t)))
    time.sleep(0.5)  # let any wrongly forwarded copy arrive before the captures are read
    c1 = vnetd.counters()
    d_tag = port_drop(c1, "pa", "vlan_tagged_on_access") - port_drop(c0, "pa", "vlan_tagged_on_access")
    d_na = port_drop(c1, "pt", "vlan_not_allowed") - port_drop(c0, "pt", "vlan_not_allowed")
    if d_tag != len(bad_a) or d_na != len(bad_t):
        raise HarnessError("drop counters: pa vlan_tagged_on_access +%d (want %d), pt vlan_not_allowed "
                           "+%d (want %d)" % (d_tag, len(bad_a), d_na, len(bad_t)))
    for k, c in cap.items():
        leaked = [f for f in c.poll() + c.frames if marker in f.payload]
        if leaked:
            raise HarnessError("dropped frames reached %s: %s" % (k, leaked[:5]))
    log("tagged frames on access port pa: %d dropped as vlan_tagged_on_access; trunk VLAN 30 and "
        "untagged: %d dropped as vlan_not_allowed; none delivered" % (d_tag, d_na))

    # --- a vhost-user access port (DPDK testpmd virtio-user) in VLAN 20 ------------------
    vhost_access_port(s, vnetd, cap)

    # --- FDB per VLAN -------------------------------------------------------------------
    fdb = vnetd.vnetctl("fdb")["fdb"]
    have = {(e["mac"].lower(), e["vlan"]): e["port"] for e in fdb}
    want = {(MAC_A, 10): "pa", (MAC_B, 10): "pb", (MAC_C, 20): "pc", (MAC_D, 20): "pd",
            (MAC_T, 10): "pt", (MAC_T, 20): "pt", (MAC_VU, 20): "pv"}
    wrong = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
    if wrong:
        raise HarnessError("FDB per VLAN: (mac, vlan): (have, want) %s; fdb: %s" % (wrong, fdb))
    foreign = [k for k in have if (k[0] == MAC_A and k[1] != 10) or (k[0] == MAC_C and k[1] != 20)]
    if foreign:
        raise HarnessError("FDB learned a/c in the wrong VLAN: %s; fdb: %s" % (foreign, fdb))
    worker = vnetd.vnetctl("counters")
    moved = worker.get("worker", {}).get("fdb_moved")
    if moved:
        raise HarnessError("fdb_moved = %s: the same MAC in two VLANs must not move" % moved)
    log("FDB: %d entries, per VLAN as expected (b's MAC on pb in 10 and pd in 20, trunk MAC in both)"
        % len(fdb))

    vnetd.check_alive()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)
    left = [taps[k] for k in "abcdt" if ns[k].has_link(taps[k])]
    if left:
        raise HarnessError("vnetd left TAPs behind after exit: %s" % left)


if __name__ == "__main__":
    run_test("vlan", body, netlab_prerequisites()
             + [lambda a: require_tools("dpdk-testpmd", "stdbuf")])
