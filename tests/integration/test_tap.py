#!/usr/bin/env python3
"""The host kernel as vnetd's peer: a TAP port in a network namespace and QEMU guests.

One vnetd, four ports: two TAPs that vnetd creates in two namespaces (one with
offloads, one `no-offloads`), and two vhost-user ports with a Linux guest each
(one with QEMU's default offloads, one with csum/guest_csum/TSO/ECN/UFO all off).
The four (guest, namespace) pairs are the four offload combinations:
  (a) defaults      guest offloads on  <-> TAP offloads on
  (b) tap-off       guest offloads on  <-> TAP no-offloads
  (c) guest-off     guest offloads off <-> TAP offloads on
  (d) both-off      guest offloads off <-> TAP no-offloads
Asserted for each pair:
  - negotiation: the guest driver has (or lacks) VIRTIO_NET_F_CSUM/GUEST_CSUM as
    configured, vnetd's TAP has (or lacks) TUN_F_CSUM/TSO4;
  - ping namespace -> guest and guest -> namespace: every echo answered;
  - iperf3 TCP guest -> namespace and namespace -> guest (iperf3 -R) complete with
    a non-zero throughput (printed);
  - tcpdump on the TAP inside the namespace (`-Q in`: frames the namespace
    RECEIVED from vnetd, whole, bounded count) for the ping, the forward and the
    reverse run; every frame is checked in Python (vnet_harness.pcap): IPv4 header
    checksum correct; TCP/ICMP checksum either complete and correct, or exactly
    the pseudo-header seed of a CHECKSUM_PARTIAL frame (what a TAP shows for a
    received frame whose virtio_net_hdr has NEEDS_CSUM: the kernel completes it
    only if the frame leaves the host).  A guest without CSUM cannot send partial
    frames, so in (c) and (d) every frame must carry a complete, correct checksum;
    the capture must hold the expected ICMP and TCP data frames;
  - what the namespace SENDS in the reverse run (headers only): TSO super-frames
    with TAP offloads (so in (c) vnetd must segment and checksum them in software
    for the guest), none without;
  - the kernels' own verdicts: InCsumErrors (Tcp, Udp, Icmp, IpExt) and Ip
    InHdrErrors do not grow in the namespace nor in the guest (a guest without
    GUEST_CSUM, and the namespace for frames vnetd wrote without NEEDS_CSUM,
    verify every checksum in software);
  - vnetd's counters: no drop of any reason on the pair's ports while it runs;
    at the end, each TAP port's rx/tx packets equal the kernel's tx/rx packets of
    that TAP, and each guest's eth0 rx/tx packets equal its vhost-user port's tx/rx.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.guest import OFFLOADS_OFF, GuestImage, QemuGuest, require_guest  # noqa: E402
from vnet_harness.netns import (Capture, Netns, csum_errors, require_netns,  # noqa: E402
                                unique_name)
from vnet_harness.pcap import check_pcap, detects_corruption, read_pcap  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import PortSpec, TapSpec, Vnetd, require_vnetd  # noqa: E402

NET = "10.77.0."
PING_COUNT = 3
IPERF_SECONDS = 3
IPERF_PORT = 5201
CAPTURE_FRAMES = 1500

# virtio-net feature bits (virtio spec 5.1.3)
F_CSUM, F_GUEST_CSUM = 0, 1

GUESTS = {  # key: (IP, MAC, offloads)
    "gon": (NET + "2", "52:54:00:00:7a:02", True),
    "goff": (NET + "12", "52:54:00:00:7a:12", False),
}
NAMESPACES = {  # key: (IP, offloads)
    "non": (NET + "1", True),
    "noff": (NET + "11", False),
}
COMBOS = [  # label, guest, namespace
    ("a-defaults", "gon", "non"),
    ("b-tap-no-offloads", "gon", "noff"),
    ("c-guest-offloads-off", "goff", "non"),
    ("d-both-off", "goff", "noff"),
]
CSUM_KEYS = ("Tcp.InCsumErrors", "Udp.InCsumErrors", "Icmp.InCsumErrors", "IpExt.InCsumErrors",
             "Ip.InHdrErrors")


def drops_of(counters, port):
    return dict(counters[port].get("drops", {}))


def grown(before, after):
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def csum_growth(before, after):
    b, a = csum_errors_all(before), csum_errors_all(after)
    return {k: a[k] - b[k] for k in a if a[k] != b[k]}


def csum_errors_all(snmp):
    out = {}
    for key in CSUM_KEYS:
        proto, field = key.split(".")
        out[key] = snmp.get(proto, {}).get(field, 0)
    return out


class Pair:
    def __init__(self, label, guest, gkey, ns, nkey, tap_port, tap_if, guest_port):
        self.label = label
        self.guest = guest
        self.gkey = gkey
        self.ns = ns
        self.nkey = nkey
        self.tap_port = tap_port
        self.tap_if = tap_if
        self.guest_port = guest_port
        self.guest_ip = GUESTS[gkey][0]
        self.ns_ip = NAMESPACES[nkey][0]
        self.guest_offloads = GUESTS[gkey][2]
        self.tap_offloads = NAMESPACES[nkey][1]


def check_capture(pair, cap, what, mtu, min_icmp=0, min_tcp_data=0):
    try:
        cap.wait_frames(max(min_icmp, min_tcp_data), timeout=10)
    except HarnessError:
        pass  # reported below with the capture's contents
    path = cap.stop()
    r = check_pcap(path, mtu=mtu)
    try:  # the checker itself must notice a changed byte in these very frames
        if detects_corruption(read_pcap(path)) == 0 and r.frames:
            raise HarnessError("%s: %s: no frame to self-check the checksum checker on"
                               % (pair.label, what))
    except ValueError as e:
        raise HarnessError("%s: %s: checksum checker self-check: %s" % (pair.label, what, e))
    log("%s: %s capture: %s (tcpdump: %d captured, %d dropped)"
        % (pair.label, what, r.summary(), cap.captured, cap.dropped))
    if r.truncated:
        raise HarnessError("%s: %s capture has %d truncated frames" % (pair.label, what,
                                                                      r.truncated))
    if r.n_bad:
        raise HarnessError("%s: %s: %d frames the namespace received from vnetd have wrong "
                           "checksums (%s):\n  %s" % (pair.label, what, r.n_bad, r.summary(),
                                                      "\n  ".join(r.bad)))
    if not pair.guest_offloads and r.n_partial:
        raise HarnessError("%s: %s: %d frames with a partial checksum reached the namespace "
                           "from a guest without VIRTIO_NET_F_CSUM (%s)"
                           % (pair.label, what, r.n_partial, r.summary()))
    if r.n("icmp full") < min_icmp:
        raise HarnessError("%s: %s: %d ICMP frames captured, expected at least %d (%s)"
                           % (pair.label, what, r.n("icmp full"), min_icmp, r.summary()))
    tcp = r.n("tcp full", "tcp partial")
    if tcp < min_tcp_data:
        raise HarnessError("%s: %s: %d TCP frames captured, expected at least %d (%s)"
                           % (pair.label, what, tcp, min_tcp_data, r.summary()))
    return r


def check_negotiation(pair, vnetd):
    bits = pair.guest.features()
    has_csum = bits[F_CSUM] == "1" and bits[F_GUEST_CSUM] == "1"
    no_csum = bits[F_CSUM] == "0" and bits[F_GUEST_CSUM] == "0"
    if (pair.guest_offloads and not has_csum) or (not pair.guest_offloads and not no_csum):
        raise HarnessError("%s: guest %s negotiated features %s: CSUM/GUEST_CSUM not as "
                           "configured (offloads %s)" % (pair.label, pair.guest.name, bits,
                                                         pair.guest_offloads))
    info = vnetd.ports_info()
    tap_features = info[pair.tap_port].get("features", [])
    want = {"TUN_F_CSUM", "TUN_F_TSO4"}
    if pair.tap_offloads and not want <= set(tap_features):
        raise HarnessError("%s: TAP port %s features %s lack %s" % (pair.label, pair.tap_port,
                                                                    tap_features, want))
    if not pair.tap_offloads and tap_features:
        raise HarnessError("%s: no-offloads TAP port %s has features %s"
                           % (pair.label, pair.tap_port, tap_features))
    log("%s: guest features %s; vnetd %s features %s; TAP %s features %s"
        % (pair.label, bits[:24], pair.guest_port, info[pair.guest_port].get("features"),
           pair.tap_port, tap_features or "none"))


def run_pair(pair, vnetd, results):
    t0 = time.monotonic()
    g, ns = pair.guest, pair.ns
    check_negotiation(pair, vnetd)
    # Warm-up: ARP and a first echo under TCG (and ASan, and a loaded CI machine) can
    # take longer than ping's 2 s wait. A path that never answers still fails here.
    deadline = time.monotonic() + 30
    while ns.ping(pair.guest_ip, count=1)[1] != 1:
        if time.monotonic() > deadline:
            raise HarnessError("%s: namespace cannot reach %s within 30 s"
                               % (pair.label, pair.guest_ip))
    ns_snmp0, g_snmp0 = ns.snmp(), g.snmp()
    c0 = vnetd.counters()
    bpf = "host %s and host %s" % (pair.guest_ip, pair.ns_ip)

    # Ping both ways.
    cap = Capture(ns, "cap-%s-ping" % pair.label, pair.tap_if, bpf + " and icmp",
                  count=200).wait_ready()
    tx, rx, out = ns.ping(pair.guest_ip, count=PING_COUNT)
    if tx != PING_COUNT or rx != PING_COUNT:
        raise HarnessError("%s: namespace ping %s: %d/%d replies:\n%s"
                           % (pair.label, pair.guest_ip, rx, tx, out))
    tx, rx, out = g.ping(pair.ns_ip, count=PING_COUNT)
    if tx != PING_COUNT or rx != PING_COUNT:
        raise HarnessError("%s: guest ping %s: %d/%d replies:\n%s"
                           % (pair.label, pair.ns_ip, rx, tx, out))
    log("%s: ping both ways: %d/%d replies each" % (pair.label, PING_COUNT, PING_COUNT))
    # The namespace received PING_COUNT replies and PING_COUNT requests from the guest.
    check_capture(pair, cap, "ping", 1500, min_icmp=2 * PING_COUNT)

    # iperf3 TCP, guest -> namespace, then namespace -> guest (-R: the server sends).
    server = ns.spawn("iperf3-%s" % pair.label,
                      ["iperf3", "-s", "--forceflush", "-B", pair.ns_ip, "-p", IPERF_PORT])
    server.wait_for_log(r"Server listening", 10)
    for reverse in (False, True):
        what = "namespace -> guest" if reverse else "guest -> namespace"
        cap = Capture(ns, "cap-%s-%s" % (pair.label, "rev" if reverse else "fwd"), pair.tap_if,
                      bpf + " and tcp port %d" % IPERF_PORT, count=CAPTURE_FRAMES).wait_ready()
        sent = None
        if reverse:  # headers of what the namespace sends: TSO super-frames or not
            sent = Capture(ns, "cap-%s-sent" % pair.label, pair.tap_if,
                           bpf + " and tcp port %d" % IPERF_PORT, count=300, direction="out",
                           snaplen=96).wait_ready()
        res = g.iperf3(pair.ns_ip, seconds=IPERF_SECONDS, reverse=reverse, port=IPERF_PORT)
        if res.receiver_mbps <= 0 or res.receiver_mbytes <= 0:
            raise HarnessError("%s: iperf3 %s moved no data:\n%s" % (pair.label, what, res.text))
        log("%s: iperf3 TCP %s: %s" % (pair.label, what, res))
        results.append((pair.label, what, res.gbps))
        # Forward: the namespace receives data segments; reverse: the guest's ACKs.
        check_capture(pair, cap, "iperf3 " + what, 1500, min_tcp_data=50)
        if sent is not None:
            sent.wait_frames(100)
            sent.stop()
            frames = read_pcap(sent.path)
            big = sum(1 for orig, _ in frames if orig > 1514)
            log("%s: the namespace sent %d frames of %d over the MTU (TSO) into the TAP"
                % (pair.label, big, len(frames)))
            # With TAP offloads the kernel hands vnetd TSO frames, which vnetd must segment
            # (and checksum) itself for a guest without GUEST_TSO/GUEST_CSUM; without
            # them the kernel segments before the TAP.
            if pair.tap_offloads and not big:
                raise HarnessError("%s: TAP with offloads, yet the namespace sent no TSO "
                                   "frame in %d" % (pair.label, len(frames)))
            if not pair.tap_offloads and big:
                raise HarnessError("%s: no-offloads TAP, yet the namespace sent %d frames "
                                   "over the MTU" % (pair.label, big))
    server.stop()

    # The kernels' verdicts.
    for who, b, a in (("namespace %s" % ns.name, ns_snmp0, ns.snmp()),
                      ("guest %s" % g.name, g_snmp0, g.snmp())):
        bad = csum_growth(b, a)
        if bad:
            raise HarnessError("%s: checksum/header errors in the %s: %s"
                               % (pair.label, who, bad))
        if csum_errors(a):
            raise HarnessError("%s: %s has checksum/header errors %s"
                               % (pair.label, who, csum_errors(a)))
    # vnetd dropped nothing on the pair's ports, except frames for the guest while its
    # RX ring was full (rx_no_buffers: the TCG guest drains it more slowly than the
    # namespace sends without TSO; TCP recovers, as from a full NIC ring).
    c1 = vnetd.counters()
    for port in (pair.tap_port, pair.guest_port):
        d = grown(drops_of(c0, port), drops_of(c1, port))
        ring_full = d.pop("rx_no_buffers", 0) if port == pair.guest_port else 0
        if d:
            raise HarnessError("%s: vnetd port %s dropped frames: %s" % (pair.label, port, d))
        if ring_full:
            log("%s: vnetd port %s: %d frames dropped with the guest's RX ring full "
                "(rx_no_buffers)" % (pair.label, port, ring_full))
            results.append((pair.label, "rx_no_buffers on %s" % port, ring_full))
    log("%s: done in %.1f s: no checksum errors in the namespace or the guest, no "
        "unexpected drops" % (pair.label, time.monotonic() - t0))


def check_counters_agree(vnetd, taps, guests):
    """vnetd's per-port packet counts equal the kernels' counts of the other end."""
    def compare():
        c = vnetd.counters()
        problems = []
        for port, (ns, ifname) in taps.items():
            k = ns.link_stats(ifname)
            if c[port]["tx_packets"] != k["rx_packets"] or c[port]["rx_packets"] != k["tx_packets"]:
                problems.append("%s: vnetd rx/tx %d/%d, kernel TAP %s tx/rx %d/%d (tx_dropped %d)"
                                % (port, c[port]["rx_packets"], c[port]["tx_packets"], ifname,
                                   k["tx_packets"], k["rx_packets"], k["tx_dropped"]))
        for port, g in guests.items():
            k = g.link_stats()
            if c[port]["tx_packets"] != k["rx_packets"] or c[port]["rx_packets"] != k["tx_packets"]:
                problems.append("%s: vnetd rx/tx %d/%d, guest %s eth0 tx/rx %d/%d"
                                % (port, c[port]["rx_packets"], c[port]["tx_packets"], g.name,
                                   k["tx_packets"], k["rx_packets"]))
        compare.last = problems
        return not problems
    compare.last = []
    try:
        wait_until(compare, 10, interval=0.5, what="vnetd counters to match the kernels'")
    except HarnessError:
        raise HarnessError("vnetd's counters disagree with the kernels': %s"
                           % "; ".join(compare.last))
    c = vnetd.counters()
    log("counters agree: %s" % ", ".join("%s rx/tx %d/%d" % (p, c[p]["rx_packets"],
                                                           c[p]["tx_packets"])
                                         for p in list(taps) + list(guests)))


def body(s, args):
    image = GuestImage.build(os.path.join(s.build_dir, "integration-cache"))
    namespaces, tap_ifs = {}, {}
    specs = []
    for key, (ip, offloads) in NAMESPACES.items():
        ns = Netns(s, key[1:])  # vnt<pid>on, vnt<pid>off
        namespaces[key] = ns
        tap_ifs[key] = unique_name("t" + key[1:])
        specs.append(TapSpec("tap-" + key, ifname=tap_ifs[key], netns=ns, offloads=offloads,
                             mtu=1500))
    socks = {}
    for key in GUESTS:
        socks[key] = s.path("%s.sock" % key)
        specs.append(PortSpec(socks[key], name="vhu-" + key))
    vnetd = Vnetd(s, specs)
    vnetd.start()
    for key, (ip, _) in NAMESPACES.items():
        namespaces[key].add_address(tap_ifs[key], ip + "/24")
    guests = {}
    for key, (ip, mac, offloads) in GUESTS.items():
        guests[key] = QemuGuest(s, "guest-" + key, image, socks[key], ip + "/24", mac,
                                device_props=None if offloads else OFFLOADS_OFF).start()
    for g in guests.values():
        g.wait_ready(timeout=150)
    vnetd.wait_connected(["vhu-" + k for k in GUESTS], timeout=30)

    results = []
    for label, gkey, nkey in COMBOS:
        pair = Pair(label, guests[gkey], gkey, namespaces[nkey], nkey, "tap-" + nkey,
                    tap_ifs[nkey], "vhu-" + gkey)
        run_pair(pair, vnetd, results)

    check_counters_agree(vnetd, {"tap-" + k: (namespaces[k], tap_ifs[k]) for k in NAMESPACES},
                         {"vhu-" + k: guests[k] for k in GUESTS})
    for label, what, value in results:
        if what.startswith("rx_no_buffers"):
            log("RESULT %-22s %-20s %d" % (label, what, value))
        else:
            log("RESULT %-22s %-20s %.3f Gbit/s" % (label, what, value))
    for g in guests.values():
        g.poweroff()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s on SIGTERM" % rc)
    for key, ns in namespaces.items():
        if ns.link_exists(tap_ifs[key]):
            raise HarnessError("TAP %s still exists in %s after vnetd exited"
                               % (tap_ifs[key], ns.name))


if __name__ == "__main__":
    run_test("tap", body, [lambda a: require_root(), require_guest, require_vnetd,
                           require_netns, lambda a: require_tools("tcpdump", "iperf3", "ping")])
