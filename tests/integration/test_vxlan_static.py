#!/usr/bin/env python3
"""A static VXLAN segment of vnetd against a plain Linux kernel VXLAN device (no FRR).

Topology (namespaces named vnt<pid>..., deleted by name at cleanup):

  vmA (10.77.0.1/24, MTU 1450)                          vmB (10.77.0.2/24, MTU 1450)
    TAP of vnetd                                           eth0 (veth)
      |                                                      |
  vnetd (root namespace): port "tapa" <-> segment "vx100"  vxB: br0 (Linux bridge)
      VNI 100, local 192.168.50.1, remote [.2]                 vxlan100 (kernel, VNI 100,
      sockets opened in the underlay namespace vxA              learning, MTU 1450)
      |                                                      |
  vxA: ula 192.168.50.1/24  <------- veth ------->  vxB: ulb 192.168.50.2/24 (+ .3 later)

vnetd runs from a TOML file with the TAP port and a `[[segment]]` (netns vxA); the
kernel VXLAN device in vxB learns vnetd's MACs from the tunnel, vnetd learns vmB's.
vxB's underlay veth has TX checksum offload off (`ethtool -K ulb tx off`): otherwise
vmB's TCP segments reach vnetd's UDP socket with unfinished inner checksums (a veth
keeps CHECKSUM_PARTIAL across namespaces; a real NIC finishes it on the wire), which
no user-space socket can tell, and vmA's kernel drops them.

Asserts:
  1. ping vmA -> vmB: after a warm-up (ARP through the tunnel), 20 pings at 20 ms are
     all answered (RTTs printed);
  2. iperf3 TCP vmA -> vmB for 3 s moves data at > 50 Mbit/s (10 under a sanitizer;
     printed): TSO frames from the TAP segmented to fit the tunnel, no VXLAN drop
     reason moves; the kernels' InCsumErrors/InHdrErrors do not grow in vmA or vmB
     (vmB verifies every inner checksum in software: the segments vnetd cut must
     carry complete checksums);
  3. tcpdump on vxB's veth (started before any traffic, parsed here): every datagram
     from 192.168.50.1 is UDP to port 4789, not fragmented, at most 1514 bytes on the
     wire, UDP checksum 0, VXLAN flags 0x08 with zero reserved bytes, VNI 100, an inner
     frame of at most 1464 bytes whose source MAC is vmA's TAP; the first ARP broadcast
     was flooded to the remote VTEP; the pings and the iperf3 data are in it; the
     UDP source port is the same for every datagram of one inner flow and at least two
     distinct source ports are used across the flows (ICMP, iperf3 control and data);
  4. `vnetctl --json ports`: the segment has type "vxlan", its extra counters
     (learned, flood_copies, unicast_sent, ...) moved; `vnetctl --json fdb`: vmB's MAC
     on the segment with vtep "192.168.50.2", vmA's MAC on the TAP port;
  5. hostile decapsulation, sent from vxB with a UDP socket to 192.168.50.1:4789:
     4-byte, 0-byte and 21-byte datagrams and a well-formed one with flags 0x00
     (vxlan_bad_header), well-formed ones with VNI 101 and VNI 0x010064
     (vxlan_bad_vni), a well-formed VNI 100 frame from 192.168.50.3, an address outside
     the flood list (vxlan_unknown_vtep): each drop counter rises by exactly the number
     sent (first one case at a time, then 10 mixed rounds), no other VXLAN drop counter
     moves, none of their inner MACs is learned; then ping still works;
  6. vnetd's fd count after the hostile part is not above the count before it;
  7. tunnel_too_big: with vmA's TAP MTU raised to 1500, `ping -s 1472 -M do` frames
     (1514 bytes, more than the 1464 the tunnel takes) go unanswered and are counted
     exactly as tunnel_too_big (no other VXLAN drop reason moves); with the MTU back at
     1450 ping works again;
  7b. the TAP port has no `mtu` in the file: with the segment it has the tunnel's inner
     MTU (1450); after `vnetctl del-port vx100` it has 1500, after `vnetctl add-segment`
     again 1450, and vmA reaches vmB again;
  7c. a second segment on the same local address and UDP port (`vnetctl add-segment 200
     --vlan 20`, a TAP in VLAN 20 in namespace mc, host B's kernel vxlan200 with an
     address): pings over VNI 200 and VNI 100 all answered; after `del-port vx100` VNI
     200 still answered, and after adding vx100 again both; no vxlan_bad_vni on either;
  7d. an IPv6 underlay: VNI 300 on VLAN 30 between fd77::1 (vnetd) and fd77::2 (host B's
     kernel vxlan300, which checks UDP checksums on IPv6 as Linux does by default): the
     TAP in VLAN 30 gets MTU 1430 (1500 - 70); pings both ways and iperf3 TCP; the
     capture on host B's underlay: IPv6 next header UDP, payload length right, UDP to
     4789 with a checksum that verifies over the pseudo-header, VNI 300, a flow label that
     is the same within an inner flow; `vnetctl fdb` shows host B's MAC behind fd77::2;
     after `vnetctl upgrade` the pings over VNI 300 are all answered again;
  8. vnetd exits 0 on SIGTERM, no sanitizer report in its log.
"""

import os
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.netns import Capture, Netns, require_netns, snmp_delta, unique_name  # noqa: E402
from vnet_harness.pcap import read_pcap  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import require_vnetd  # noqa: E402
from vnet_harness.vxlan import (EXTRA, INNER_MTU, IPERF_PORT, MAX_INNER, PING_COUNT,  # noqa: E402
                                SEGMENT, UDP_PORT, UNDERLAY_MTU, VNI, VXLAN_DROPS, VxlanHost,
                                check_fdb, check_ports, delta, drops_extra, iperf,
                                iperf_bound, iperf_server, link_underlay, listing, mac_str,
                                outer, ping_all, ping_stats, require_kernel_links, warm_up,
                                warning_lines)

NET = "10.77.0."
IP_A, IP_B = NET + "1", NET + "2"
UL = "192.168.50."
VTEP_A, VTEP_B, STRANGER = UL + "1", UL + "2", UL + "3"
TAP_PORT = "tapa"
# The second segment (7c): VNI 200 on VLAN 20, same local address and UDP port.
VNI2, SEGMENT2 = 200, "vx200"
IP_C2, IP_B2 = "10.77.20.1", "10.77.20.2"   # vmC's TAP, host B's vxlan200
# The IPv6 underlay segment (7d): VNI 300 on VLAN 30.
VNI3, SEGMENT3 = 300, "vx300"
VTEP6_A, VTEP6_B = "fd77::1", "fd77::2"
IP_D3, IP_B3 = "10.77.30.1", "10.77.30.2"   # vmD's TAP, host B's vxlan300
MAC_B3 = "02:77:00:00:03:02"                # host B's vxlan300
INNER_MTU6 = UNDERLAY_MTU - 70               # IPv6 40, UDP 8, VXLAN 8, inner Ethernet 14
MAC_A = "02:77:00:00:00:01"  # vmA's TAP
MAC_B = "02:77:00:00:00:02"  # vmB's eth0
MAC_BAD_VNI = "02:77:00:00:0b:01"  # inner source MACs of hostile datagrams: never learned
MAC_STRANGER = "02:77:00:00:0b:03"
MAC_FLAGS0 = "02:77:00:00:0b:04"
CAPTURE_FRAMES = 4000
CAPTURE_SNAPLEN = 160  # outer headers + VXLAN + inner Ethernet/IPv4/TCP with options
CSUM_KEYS = ("Tcp.InCsumErrors", "Udp.InCsumErrors", "Icmp.InCsumErrors", "IpExt.InCsumErrors",
             "Ip.InHdrErrors")


# --- frames ---------------------------------------------------------------------------

def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def vxlan_header(vni, flags=0x08):
    return struct.pack("!B3s3sB", flags, b"\0\0\0", vni.to_bytes(3, "big"), 0)


def inner_frame(src_mac, marker):
    """A broadcast Ethernet frame (IEEE local experimental ethertype), 60 bytes."""
    frame = mac_bytes("ff:ff:ff:ff:ff:ff") + mac_bytes(src_mac) + struct.pack("!H", 0x88B5)
    frame += b"vnet-vxlan-hostile " + marker.encode()
    return frame + b"\0" * max(0, 60 - len(frame))


_SENDER = r"""
import socket, sys
bind, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((bind, 0))
for h in sys.argv[4:]:
    s.sendto(bytes.fromhex(h), (dst, port))
print("sent %d" % (len(sys.argv) - 4))
"""


def send_datagrams(ns, bind_ip, payloads):
    """UDP datagrams from bind_ip (in namespace ns) to vnetd's VTEP address and port."""
    argv = ns.argv([sys.executable, "-c", _SENDER, bind_ip, VTEP_A, UDP_PORT]
                   + [p.hex() for p in payloads])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or ("sent %d" % len(payloads)) not in r.stdout:
        raise HarnessError("sending %d datagrams from %s in %s: status %d: %s %s"
                           % (len(payloads), bind_ip, ns.name, r.returncode, r.stdout, r.stderr))


# --- capture analysis -----------------------------------------------------------------

class Tunnel:
    """What the capture on vxB's underlay veth holds of vnetd's encapsulated frames."""

    def __init__(self):
        self.datagrams = 0
        self.problems = []
        self.sports = set()
        self.flow_sports = {}  # inner flow key -> set of outer UDP source ports
        self.inner_src = {}  # inner source MAC -> count
        self.icmp_requests = 0
        self.tcp_data = 0
        self.arp_broadcasts = 0
        self.largest = 0

    def problem(self, i, what):
        if len(self.problems) < 10:
            self.problems.append("frame %d: %s" % (i, what))


def inner_flow(inner):
    """(description, key) of an inner frame's flow (IPv4 TCP/UDP/ICMP echo), or None."""
    if len(inner) < 34 or inner[12:14] != b"\x08\x00":
        return None
    ip = inner[14:]
    ihl = (ip[0] & 0xF) * 4
    proto = ip[9]
    src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
    l4 = ip[ihl:]
    if proto in (6, 17) and len(l4) >= 4:
        sp, dp = struct.unpack("!HH", l4[:4])
        return ("tcp" if proto == 6 else "udp", src, sp, dst, dp)
    if proto == 1 and len(l4) >= 8:
        return ("icmp", src, dst, l4[0], struct.unpack("!H", l4[4:6])[0])
    return ("ip", src, dst, proto)


def analyse_capture(path, tap_mac):
    t = Tunnel()
    for i, (orig, data) in enumerate(read_pcap(path)):
        if len(data) < 14 + 20 + 8 + 8 + 14:
            t.problem(i, "only %d bytes captured (%s)" % (len(data), data.hex()))
            continue
        if data[12:14] != b"\x08\x00":
            t.problem(i, "ethertype 0x%s, not IPv4" % data[12:14].hex())
            continue
        t.largest = max(t.largest, orig)
        if orig > UNDERLAY_MTU + 14:
            t.problem(i, "%d bytes on the wire, over the underlay MTU %d + 14"
                      % (orig, UNDERLAY_MTU))
        o = outer(data)
        if (o.src, o.dst) != (VTEP_A, VTEP_B):
            t.problem(i, "outer IPv4 %s -> %s" % (o.src, o.dst))
        if o.frag & 0x3FFF:
            t.problem(i, "an IPv4 fragment (flags/offset 0x%04x)" % o.frag)
            continue
        if o.proto != 17:
            t.problem(i, "IP protocol %d, not UDP" % o.proto)
            continue
        if o.total != orig - 14:
            t.problem(i, "IPv4 total length %d, frame %d bytes" % (o.total, orig))
        sport, vx, inner = o.sport, o.vx, o.inner
        inner_len = o.ulen - 16
        if o.dport != UDP_PORT:
            t.problem(i, "UDP destination port %d" % o.dport)
        if o.ulen != o.total - o.ihl:
            t.problem(i, "UDP length %d, IPv4 payload %d" % (o.ulen, o.total - o.ihl))
        if o.csum != 0:
            t.problem(i, "UDP checksum 0x%04x, expected 0" % o.csum)
        if vx[0] != 0x08 or vx[1:4] != b"\0\0\0" or vx[7] != 0:
            t.problem(i, "VXLAN header %s: flags must be 0x08, reserved bytes 0" % vx.hex())
        if o.vni != VNI:
            t.problem(i, "VNI %d, expected %d" % (o.vni, VNI))
        if inner_len > MAX_INNER or inner_len < 14:
            t.problem(i, "inner frame of %d bytes (at most %d)" % (inner_len, MAX_INNER))
        src_mac = mac_str(inner[6:12])
        t.inner_src[src_mac] = t.inner_src.get(src_mac, 0) + 1
        if src_mac != tap_mac:
            t.problem(i, "inner source MAC %s, not vmA's TAP %s" % (src_mac, tap_mac))
        t.datagrams += 1
        t.sports.add(sport)
        if inner[0:6] == b"\xff" * 6 and inner[12:14] == b"\x08\x06":
            t.arp_broadcasts += 1
        flow = inner_flow(inner)
        if flow is None:
            continue
        t.flow_sports.setdefault(flow, set()).add(sport)
        if flow[0] == "icmp" and flow[1:3] == (IP_A, IP_B) and flow[3] == 8:
            t.icmp_requests += 1
        if flow[0] == "tcp" and flow[4] == IPERF_PORT and inner_len > 14 + 20 + 20 + 12 + 100:
            t.tcp_data += 1
    return t


def udp6_checksum_ok(src, dst, udp):
    """Whether a UDP datagram (header and payload, as on the wire) carries a checksum
    that verifies over the IPv6 pseudo-header (RFC 8200 8.1)."""
    data = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    data += struct.pack("!IxxxB", len(udp), 17) + udp
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def analyse_capture6(path):
    """Problems and facts of vnetd's IPv6-underlay datagrams captured on host B."""
    problems, checked, labels = [], 0, {}
    n = 0
    for i, (orig, data) in enumerate(read_pcap(path)):
        n += 1
        if len(data) < 14 + 40 + 16 + 14 or data[12:14] != b"\x86\xdd":
            problems.append("frame %d: not IPv6 or too short (%s)" % (i, data[:64].hex()))
            continue
        ip = data[14:]
        flow = struct.unpack("!I", ip[0:4])[0]
        plen, nxt = struct.unpack("!HB", ip[4:7])
        src = socket.inet_ntop(socket.AF_INET6, ip[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, ip[24:40])
        udp = ip[40:]
        sport, dport, ulen, csum = struct.unpack("!HHHH", udp[:8])
        vx = udp[8:16]
        what = []
        if flow >> 28 != 6 or nxt != 17:
            what.append("version %d, next header %d" % (flow >> 28, nxt))
        if (src, dst) != (VTEP6_A, VTEP6_B):
            what.append("outer %s -> %s" % (src, dst))
        if plen != orig - 54 or ulen != plen:
            what.append("payload length %d, UDP length %d, frame %d" % (plen, ulen, orig))
        if dport != UDP_PORT or csum == 0:
            what.append("UDP port %d, checksum 0x%04x" % (dport, csum))
        if vx[0] != 0x08 or int.from_bytes(vx[4:7], "big") != VNI3:
            what.append("VXLAN header %s" % vx.hex())
        if orig == len(data):
            if not udp6_checksum_ok(src, dst, udp[:ulen]):
                what.append("UDP checksum 0x%04x does not verify" % csum)
            checked += 1
        f = inner_flow(udp[16:])
        if f is not None:
            labels.setdefault(f, set()).add(flow & 0xFFFFF)
        if what:
            problems.append("frame %d: %s" % (i, "; ".join(what)))
    split = {str(f): sorted(v) for f, v in labels.items() if len(v) > 1}
    if split:
        problems.append("inner flows with several flow labels: %s" % split)
    return n, checked, problems


def ipv6_underlay(s, vnetd, xa, xb):
    """Step 7d: a segment over an IPv6 underlay against host B's kernel vxlan300."""
    for ns, ifname, addr in ((xa, "ula", VTEP6_A), (xb, "ulb", VTEP6_B)):
        # (the harness's namespaces keep IPv6 off: on for the underlay interface only)
        ns.run("sysctl -qw net.ipv6.conf.%s.disable_ipv6=0 && ip -6 addr add %s/64 dev %s nodad"
               % (ifname, addr, ifname))
    wait_until(lambda: xa.run("ping -6 -n -c 1 -W 1 %s" % VTEP6_B, check=False)[0] == 0, 15,
               interval=0.1, what="the IPv6 underlay %s -> %s" % (VTEP6_A, VTEP6_B))
    xb.run("ip link add vxlan%d type vxlan id %d local %s remote %s dstport %d"
           % (VNI3, VNI3, VTEP6_B, VTEP6_A, UDP_PORT))
    xb.run("ip link set vxlan%d address %s mtu %d up && ip addr add %s/24 dev vxlan%d"
           % (VNI3, MAC_B3, INNER_MTU6, IP_B3, VNI3))
    _, details = xb.run("ip -d link show vxlan%d" % VNI3)
    log("host B: %s" % " ".join(details.split()))
    md = Netns(s, "md")
    cap = Capture(xb, "cap-underlay6", "ulb",
                  "ip6 and udp and src host %s and dst host %s" % (VTEP6_A, VTEP6_B),
                  count=CAPTURE_FRAMES, snaplen=256).wait_ready()
    segment_with_tap(vnetd, xa, md, "tapd", VNI3, SEGMENT3, 30, VTEP6_A, VTEP6_B, IP_D3,
                     INNER_MTU6)
    warm_up(md, IP_B3, "ping vmD -> vxlan%d over the IPv6 underlay" % VNI3)
    tx, rx, out = ping_all(md, IP_B3, "ping vmD -> vxlan%d (IPv6 underlay)" % VNI3)
    tx2, rx2, _ = xb.ping(IP_D3, count=10, interval=0.02)
    if rx2 != tx2:
        raise HarnessError("ping host B's vxlan%d -> vmD over the IPv6 underlay: %d/%d answered"
                           % (VNI3, rx2, tx2))
    server = iperf_server(md, IP_D3)
    iperf(xb, IP_D3, 10, "iperf3 TCP host B -> vmD (IPv6 underlay)")
    iperf(xb, IP_D3, 10, "iperf3 TCP vmD -> host B (IPv6 underlay)", reverse=True)
    server.stop()
    log("RESULT IPv6 underlay %s <-> %s, VNI %d: ping %d/%d (%s), ping back %d/%d, TAP MTU %d"
        % (VTEP6_A, VTEP6_B, VNI3, rx, tx, ping_stats(out), rx2, tx2, INNER_MTU6))
    fdb = fdb_entries(vnetd)
    e = [x for x in fdb if x["mac"].lower() == MAC_B3]
    if len(e) != 1 or e[0].get("port") != SEGMENT3 or e[0].get("vtep") != VTEP6_B:
        raise HarnessError("FDB: %s should be on %s behind %s: %s" % (MAC_B3, SEGMENT3,
                                                                     VTEP6_B, e or fdb))
    cap.wait_frames(PING_COUNT, timeout=15)
    cap.stop()
    n, checked, problems = analyse_capture6(cap.path)
    log("capture on %s/ulb (IPv6): %d datagrams from vnetd, %d whole ones with a UDP checksum "
        "verified here" % (xb.name, n, checked))
    if problems:
        raise HarnessError("capture of vnetd's IPv6 tunnel traffic:\n  "
                           + "\n  ".join(problems[:10]))
    if n < PING_COUNT or checked < PING_COUNT:
        raise HarnessError("capture: %d datagrams (%d checksums verified), expected at least %d"
                           % (n, checked, PING_COUNT))
    reply = vnetd.upgrade()
    tx, rx, out = ping_all(md, IP_B3, "ping vmD -> vxlan%d after vnetctl upgrade" % VNI3)
    log("RESULT after vnetctl upgrade (pid %s -> %s): IPv6 underlay ping %d/%d (%s)"
        % (reply.get("old_pid"), reply.get("pid"), rx, tx, ping_stats(out)))
    return md


def segment_with_tap(vnetd, underlay, ns, port, vni, segment, vlan, local, remote, ip, mtu):
    """`vnetctl add-segment` on a VLAN and a TAP port of that VLAN in namespace ns (with
    address ip/24), whose MTU must then be the segment's inner MTU `mtu`."""
    ifname = unique_name("vx" + port[-1])
    ns.own_link(ifname)
    vnetd.vnetctl("add-segment", str(vni), "--name", segment, "--vlan", str(vlan), "--local",
                  local, "--remote", remote, "--netns", underlay.name)
    vnetd.vnetctl("add-port", "tap", port, "--ifname", ifname, "--netns", ns.name,
                  "--vlan", str(vlan))
    ns.wait_link(ifname)
    ns.add_address(ifname, ip + "/24")
    ns.run("ip link set dev %s up" % ifname)
    if ns.link_mtu(ifname) != mtu:
        raise HarnessError("TAP %s in VLAN %d (segment %s, underlay %s): MTU %d, expected %d"
                           % (ifname, vlan, segment, local, ns.link_mtu(ifname), mtu))


# --- vnetd state ------------------------------------------------------------------------

def segment_state(ctl):
    """(drops, extra) of the segment, from `ports` over a persistent control connection."""
    ports = {p["name"]: p for p in ctl.request("ports")["ports"]}
    p = ports.get(SEGMENT)
    if p is None:
        raise HarnessError("vnetd has no port %s: %s" % (SEGMENT, sorted(ports)))
    return drops_extra(p)


def fdb_entries(vnetd):
    return vnetd.vnetctl("fdb")["fdb"]


# --- topology ---------------------------------------------------------------------------

def build_topology(s):
    ns = {k: Netns(s, k) for k in ("xa", "xb", "ma", "mb")}
    xa, xb, ma, mb = ns["xa"], ns["xb"], ns["ma"], ns["mb"]
    # Underlay: one veth between the two hosts' namespaces (deleted with them).
    # Host B's "NIC" finishes checksums itself, as a real one does on the wire.  With TX
    # checksum offload on, a veth hands the other namespace vmB's TCP segments
    # CHECKSUM_PARTIAL inside the VXLAN datagram, and a UDP socket (vnetd's) gets the
    # payload with only the pseudo-header seed in the inner TCP checksum: nothing tells
    # user space, so vmA's kernel would drop every TCP segment from vmB (InCsumErrors).
    link_underlay(xa, xb, VTEP_A, VTEP_B, tx_off=("ulb",))
    # Host B: the kernel's VXLAN device (learning, the default) in a bridge with vmB's veth.
    xb.run("ip link add br0 type bridge && ip link set br0 up")
    xb.run("ip link add vxlan100 type vxlan id %d local %s remote %s dstport %d"
           % (VNI, VTEP_B, VTEP_A, UDP_PORT))
    xb.run("ip link set vxlan100 mtu %d master br0 && ip link set vxlan100 up" % INNER_MTU)
    xb.run("ip link add vmb0 type veth peer name eth0 netns %s" % mb.name)
    xb.run("ip link set vmb0 mtu %d master br0 && ip link set vmb0 up" % INNER_MTU)
    mb.run("ip link set eth0 address %s mtu %d && ip addr add %s/24 dev eth0 && "
           "ip link set eth0 up" % (MAC_B, INNER_MTU, IP_B))
    _, details = xb.run("ip -d link show vxlan100")
    log("underlay %s (%s) <-> %s (%s); in %s: %s" % (xa.name, VTEP_A, xb.name, VTEP_B, xb.name,
                                                  " ".join(details.split())))
    return ns


# --- the test -----------------------------------------------------------------------------

def body(s, args):
    t_start = time.monotonic()
    ns = build_topology(s)
    xa, xb, ma, mb = ns["xa"], ns["xb"], ns["ma"], ns["mb"]
    # The one vnetd ("host A"): pinned, as the single-vnetd tests run it.
    host = VxlanHost(s, "A", TAP_PORT, ma, xa, VTEP_A, VTEP_B, IP_A, MAC_A,
                     ifname_prefix="vxt", name="vnetd", label="vnetd", pin=True)
    host.start(timeout=15, link_timeout=10)
    vnetd, tap_if, tap_mac = host.vnetd, host.tap_if, host.mac
    sanitizer, min_mbps = iperf_bound([vnetd])

    seg = check_ports(vnetd.ports_info(), "vnetctl ports", TAP_PORT)
    log("vnetd ports: %s (%s), %s (%s)%s" % (TAP_PORT, tap_if, SEGMENT, seg.get("type"),
                                              ", under %s" % sanitizer if sanitizer else ""))
    ctl = vnetd.connect_control()
    drops0, extra0 = segment_state(ctl)

    snmp0 = {"vmA": ma.snmp(), "vmB": mb.snmp()}

    # --- capture on host B's underlay, before any traffic ---------------------------------
    cap = Capture(xb, "cap-underlay", "ulb",
                  "ip and src host %s and dst host %s" % (VTEP_A, VTEP_B),
                  count=CAPTURE_FRAMES, snaplen=CAPTURE_SNAPLEN).wait_ready()

    # --- (1) ping vmA -> vmB --------------------------------------------------------------
    tries = warm_up(ma, IP_B, "warm-up ping vmA -> %s" % IP_B)
    log("warm-up: vmA reached vmB with ping %d (ARP through the tunnel)" % tries)
    tx, rx, out = ping_all(ma, IP_B, "ping vmA -> vmB")
    log("RESULT ping vmA -> vmB: %d/%d answered, 0%% loss, %s" % (rx, tx, ping_stats(out)))

    # --- (2) iperf3 TCP vmA -> vmB --------------------------------------------------------
    server = iperf_server(mb, IP_B)
    iperf(ma, IP_B, min_mbps, "iperf3 TCP vmA -> vmB")
    server.stop()
    # The kernels' verdicts: vmB verifies every inner checksum in software (the datagrams
    # carry UDP checksum 0, so the Linux VXLAN device marks nothing as verified), so the
    # segments vnetd cut out of the TAP's TSO frames must carry complete checksums.
    for who, ns_ in (("vmA", ma), ("vmB", mb)):
        grew = {k: v for k, v in snmp_delta(snmp0[who], ns_.snmp(), CSUM_KEYS).items() if v}
        if grew:
            raise HarnessError("checksum/header errors in %s during ping and iperf3: %s"
                               % (who, grew))

    # --- (3) the capture ------------------------------------------------------------------
    cap.wait_frames(PING_COUNT + 100, timeout=15)
    cap.stop()
    t = analyse_capture(cap.path, tap_mac)
    log("capture on %s/ulb: %d datagrams (tcpdump: %d captured, %d dropped), largest frame "
        "%d bytes, inner source MACs %s, %d ICMP requests, %d iperf3 data segments, %d ARP "
        "broadcasts; UDP source ports %s"
        % (xb.name, t.datagrams, cap.captured, cap.dropped, t.largest, t.inner_src,
           t.icmp_requests, t.tcp_data, t.arp_broadcasts, sorted(t.sports)))
    if t.problems:
        raise HarnessError("capture of vnetd's tunnel traffic:\n  " + "\n  ".join(t.problems))
    if t.icmp_requests < PING_COUNT:
        raise HarnessError("capture: %d ICMP echo requests vmA -> vmB in the tunnel, expected "
                           "at least %d" % (t.icmp_requests, PING_COUNT))
    if t.tcp_data < 100:
        raise HarnessError("capture: %d iperf3 data segments in the tunnel, expected at least "
                           "100" % t.tcp_data)
    if t.arp_broadcasts < 1:
        raise HarnessError("capture: vmA's ARP broadcast was not flooded to the remote VTEP")
    split = {f: sorted(p) for f, p in t.flow_sports.items() if len(p) > 1}
    if split:
        raise HarnessError("one inner flow left with several UDP source ports: %s" % split)
    per_flow = {"%s" % (f,): sorted(p)[0] for f, p in t.flow_sports.items()}
    log("UDP source port per inner flow: %s" % per_flow)
    if len(set(per_flow.values())) < 2:
        raise HarnessError("the %d inner flows %s all left with the same UDP source port %s"
                           % (len(per_flow), sorted(per_flow), sorted(t.sports)))

    # --- (4) counters and FDB -------------------------------------------------------------
    drops1, extra1 = segment_state(ctl)
    d = delta(drops0, drops1, VXLAN_DROPS)
    e = delta(extra0, extra1, EXTRA)
    log("RESULT segment counters after the traffic: drops %s, extra %s" % (d, extra1))
    if any(d.values()):
        raise HarnessError("segment %s dropped frames of legitimate traffic: %s (all drops %s)"
                           % (SEGMENT, d, drops1))
    if e["learned"] < 1 or e["flood_copies"] < 1 or e["unicast_sent"] < PING_COUNT:
        raise HarnessError("segment extra counters did not move as expected (learned >= 1, "
                           "flood_copies >= 1, unicast_sent >= %d): %s"
                           % (PING_COUNT, e))
    fdb = fdb_entries(vnetd)
    b, a = check_fdb(fdb, "FDB", MAC_B, VTEP_B, MAC_A, TAP_PORT)
    log("FDB: %s on %s (vtep %s), %s on %s; all %d entries: %s"
        % (MAC_B, b["port"], b["vtep"], MAC_A, a["port"], len(fdb), fdb))

    # --- (5) hostile decapsulation --------------------------------------------------------
    xb.run("ip addr add %s/24 dev ulb" % STRANGER)
    fd0 = vnetd.fd_count()
    good = vxlan_header(VNI)
    cases = [  # (what, source address, payloads, drop reason)
        ("a 4-byte datagram", VTEP_B, [b"\x08\0\0\0"], "vxlan_bad_header"),
        ("an empty datagram", VTEP_B, [b""], "vxlan_bad_header"),
        ("a VXLAN header and 13 bytes (no Ethernet header)", VTEP_B,
         [good + inner_frame(MAC_FLAGS0, "short")[:13]], "vxlan_bad_header"),
        ("flags 0x00 (no I flag)", VTEP_B,
         [vxlan_header(VNI, flags=0) + inner_frame(MAC_FLAGS0, "flags0")], "vxlan_bad_header"),
        ("VNI 101", VTEP_B, [vxlan_header(101) + inner_frame(MAC_BAD_VNI, "vni101")],
         "vxlan_bad_vni"),
        ("VNI 0x010064 (100 in the low 16 bits)", VTEP_B,
         [vxlan_header(0x010064) + inner_frame(MAC_BAD_VNI, "vni65636")], "vxlan_bad_vni"),
        ("a well-formed VNI 100 frame (source not in the flood list)", STRANGER,
         [good + inner_frame(MAC_STRANGER, "stranger")], "vxlan_unknown_vtep"),
    ]
    base = drops1
    expect = {k: 0 for k in VXLAN_DROPS}

    def settle(what):
        def reached():
            dr, _ = segment_state(ctl)
            got = delta(base, dr, VXLAN_DROPS)
            return got if all(got[k] >= v for k, v in expect.items()) else None
        try:
            wait_until(reached, 15, interval=0.05, what=what)
        except HarnessError:
            dr, _ = segment_state(ctl)
            raise HarnessError("%s: segment drop counters rose by %s, expected %s"
                               % (what, delta(base, dr, VXLAN_DROPS), expect))
        vnetd.check_alive()
        got = delta(base, segment_state(ctl)[0], VXLAN_DROPS)
        if got != expect:
            raise HarnessError("%s: segment drop counters rose by %s, expected exactly %s"
                               % (what, got, expect))
        return got

    for what, src, payloads, reason in cases:
        send_datagrams(xb, src, payloads)
        expect[reason] += len(payloads)
        settle("hostile %s" % what)
        log("hostile: %s from %s: dropped as %s (counters +%s)" % (what, src, reason, expect))
    rounds = 10
    for r in range(rounds):
        # One socket per source address, every case of that source in one go.
        by_src = {}
        for what, src, payloads, reason in cases:
            by_src.setdefault(src, []).extend(payloads)
            expect[reason] += len(payloads)
        for src, payloads in by_src.items():
            send_datagrams(xb, src, payloads)
        got = settle("hostile round %d" % (r + 1))
    log("RESULT hostile decapsulation: %d rounds + single cases, drops rose by exactly %s"
        % (rounds, got))
    fdb = fdb_entries(vnetd)
    learned_bad = [x for x in fdb if x["mac"].lower() in (MAC_BAD_VNI, MAC_STRANGER, MAC_FLAGS0)]
    if learned_bad:
        raise HarnessError("MACs of refused datagrams were learned: %s" % learned_bad)
    tx, rx, out = ma.ping(IP_B, count=5, interval=0.02)
    if rx != tx:
        raise HarnessError("after the hostile datagrams, ping vmA -> vmB: %d/%d answered:\n%s"
                           % (rx, tx, out))
    log("after the hostile part: ping vmA -> vmB %d/%d answered, %s" % (rx, tx, ping_stats(out)))

    # --- (6) fds --------------------------------------------------------------------------
    try:
        fd1 = wait_until(lambda: (lambda n: n if n <= fd0 else None)(vnetd.fd_count()), 10,
                         interval=0.1, what="vnetd's fd count back to %d" % fd0)
    except HarnessError:
        raise HarnessError("vnetd's fd count grew over the hostile part: %d before, %d after"
                           % (fd0, vnetd.fd_count()))
    log("RESULT vnetd fds: %d before the hostile part, %d after" % (fd0, fd1))

    # --- (7) tunnel_too_big ---------------------------------------------------------------
    before, _ = segment_state(ctl)
    rx_b0 = mb.link_stats("eth0")["rx_packets"]
    ma.run("ip link set dev %s mtu %d" % (tap_if, UNDERLAY_MTU))
    too_big = 3
    tx, rx, out = ma.ping(IP_B, count=too_big, size=UNDERLAY_MTU - 28, dont_fragment=True,
                          interval=0.02)
    ma.run("ip link set dev %s mtu %d" % (tap_if, INNER_MTU))
    if rx != 0:
        raise HarnessError("%d-byte frames crossed a tunnel that takes %d: %d/%d answered"
                           % (UNDERLAY_MTU + 14, MAX_INNER, rx, tx))

    def counted():
        dr, _ = segment_state(ctl)
        return dr if dr["tunnel_too_big"] - before["tunnel_too_big"] >= too_big else None
    try:
        after = wait_until(counted, 10, interval=0.05, what="tunnel_too_big")
    except HarnessError:
        after = segment_state(ctl)[0]
    got = delta(before, after, VXLAN_DROPS)
    want = {k: (too_big if k == "tunnel_too_big" else 0) for k in VXLAN_DROPS}
    if got != want:
        raise HarnessError("%d pings of %d-byte frames (over the %d the tunnel takes): segment "
                           "drops rose by %s, expected %s"
                           % (tx, UNDERLAY_MTU + 14, MAX_INNER, got, want))
    rx_b1 = mb.link_stats("eth0")["rx_packets"]
    log("RESULT tunnel_too_big: %d pings of %d-byte frames, 0 answered, tunnel_too_big +%d "
        "(vmB eth0 received %d frames meanwhile)"
        % (tx, UNDERLAY_MTU + 14, got["tunnel_too_big"], rx_b1 - rx_b0))
    tx, rx, out = ma.ping(IP_B, count=3, interval=0.02)
    if rx != tx:
        raise HarnessError("ping vmA -> vmB after restoring MTU %d: %d/%d answered"
                           % (INNER_MTU, rx, tx))

    # --- (7b) the TAP's MTU follows the segment: removed -> 1500, added again -> 1450 -----
    drops9, extra9 = segment_state(ctl)
    vnetd.vnetctl("del-port", SEGMENT)
    mtu_without = ma.link_mtu(tap_if)
    vnetd.vnetctl("add-segment", str(VNI), "--name", SEGMENT, "--local", VTEP_A, "--remote",
                  VTEP_B, "--netns", xa.name)
    mtu_with = ma.link_mtu(tap_if)
    log("RESULT TAP %s (no mtu configured): MTU %d once the segment was removed, %d once it "
        "was added again" % (tap_if, mtu_without, mtu_with))
    if (mtu_without, mtu_with) != (1500, INNER_MTU):
        raise HarnessError("the TAP's MTU should follow the segment carrying its VLAN: %d "
                           "without it (expected 1500), %d with it (expected %d)"
                           % (mtu_without, mtu_with, INNER_MTU))
    warm_up(ma, IP_B, "ping vmA -> vmB after the segment was added again")

    # --- (7c) a second segment on the same local address and UDP port --------------------
    # VNI 200 on VLAN 20: a TAP in namespace mc (vmC) in vnetd, a kernel VXLAN device
    # vxlan200 with an address of its own in host B's namespace. Both segments' sockets
    # are bound to VTEP_A:4789; datagrams are steered to them by VNI.
    mc = Netns(s, "mc")
    xb.run("ip link add vxlan%d type vxlan id %d local %s remote %s dstport %d"
           % (VNI2, VNI2, VTEP_B, VTEP_A, UDP_PORT))
    xb.run("ip link set vxlan%d mtu %d up && ip addr add %s/24 dev vxlan%d"
           % (VNI2, INNER_MTU, IP_B2, VNI2))
    segment_with_tap(vnetd, xa, mc, "tapc", VNI2, SEGMENT2, 20, VTEP_A, VTEP_B, IP_C2, INNER_MTU)
    for what in ("both segments", "VNI %d alone" % VNI2, "both again"):
        if what.startswith("VNI"):
            vnetd.vnetctl("del-port", SEGMENT)  # the group's last member takes its slot
        elif what == "both again":
            vnetd.vnetctl("add-segment", str(VNI), "--name", SEGMENT, "--local", VTEP_A,
                          "--remote", VTEP_B, "--netns", xa.name)
        warm_up(mc, IP_B2, "ping vmC -> vxlan%d on host B (%s)" % (VNI2, what))
        tx, rx, out = ping_all(mc, IP_B2, "ping vmC -> vxlan%d (%s)" % (VNI2, what))
        if not what.startswith("VNI"):
            warm_up(ma, IP_B, "ping vmA -> vmB (%s)" % what)
            ping_all(ma, IP_B, "ping vmA -> vmB (%s)" % what)
        log("RESULT two segments on %s:%d: VNI %d ping %d/%d (%s)%s"
            % (VTEP_A, UDP_PORT, VNI2, rx, tx, what,
               "" if what.startswith("VNI") else ", VNI %d ping all answered" % VNI))
    bad = {n: p["counters"]["drops"]["vxlan_bad_vni"] for n, p in vnetd.ports_info().items()
           if p.get("type") == "vxlan"}
    if any(bad.values()):
        raise HarnessError("datagrams reached the other segment's socket (vxlan_bad_vni): %s"
                           % bad)

    # --- (7d) an IPv6 underlay --------------------------------------------------------------
    ipv6_underlay(s, vnetd, xa, xb)

    # --- (8) the end ----------------------------------------------------------------------
    log("RESULT segment %s final: drops %s; extra %s"
        % (SEGMENT, {k: drops9[k] for k in VXLAN_DROPS}, extra9))
    warnings = warning_lines(vnetd, about=SEGMENT)
    log("vnetd log: %d warning/error lines about %s%s" % (len(warnings), SEGMENT,
                                                          listing(warnings)))
    host.stop(timeout=10)
    log("done in %.1f s" % (time.monotonic() - t_start))


if __name__ == "__main__":
    run_test("vxlan_static", body,
             [lambda a: require_root(), require_netns, require_vnetd,
              lambda a: require_tools("ip", "ping", "tcpdump", "iperf3", "ethtool"),
              require_kernel_links])
