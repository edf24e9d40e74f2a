#!/usr/bin/env python3
"""9000-byte frames through vnetd: guest <-> guest and guest <-> host namespace.

vnetd with two vhost-user ports and a TAP port (mtu=9000) that it creates in a
network namespace; two QEMU guests with `host_mtu=9000` (VIRTIO_NET_F_MTU),
whose eth0 MTU the test sets to 9000.  The guests carry iputils ping (for -M do).
Asserted:
  - MTUs: both guests' eth0 at 9000; vnetd reports front_end_mtu 9000 on both
    vhost-user ports (QEMU's VHOST_USER_NET_SET_MTU) and MTU 9000 on the TAP,
    which the namespace sees at 9000;
  - `ping -s 8972 -M do` (9000-byte IPv4 packets, DF set, no fragmentation allowed)
    guest A -> guest B, guest B -> guest A, guest A -> namespace, namespace ->
    guest B: every echo answered;
  - nothing was fragmented or reassembled (Ip FragCreates/ReasmReqds unchanged in
    both guests and the namespace), and the namespace received whole 9014-byte
    frames (tcpdump on the TAP, -Q in) with correct IPv4 and ICMP checksums;
  - the MTU is enforced: `ping -s 8973 -M do` from the namespace fails locally;
  - vnetd dropped nothing on any port; checksum error counters stay 0.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.guest import GuestImage, QemuGuest, require_guest  # noqa: E402
from vnet_harness.netns import (Capture, Netns, csum_errors, require_netns,  # noqa: E402
                                unique_name)
from vnet_harness.pcap import check_pcap  # noqa: E402
from vnet_harness.vnetd import PortSpec, TapSpec, Vnetd, require_vnetd  # noqa: E402

MTU = 9000
PAYLOAD = MTU - 28  # 8972: IPv4 20 + ICMP 8
COUNT = 3
NET = "10.78.0."
NS_IP = NET + "1"
GUESTS = [("guest-a", NET + "2", "52:54:00:00:9a:02"), ("guest-b", NET + "3", "52:54:00:00:9a:03")]
FRAG_KEYS = (("Ip", "FragCreates"), ("Ip", "ReasmReqds"), ("Ip", "FragFails"))


def guest_ping(g, target):
    """iputils ping in the guest (busybox ping has no -M)."""
    rc, out = g.run("/usr/bin/ping -n -c %d -i 0.5 -W 3 -s %d -M do %s" % (COUNT, PAYLOAD, target),
                    timeout=60)
    return rc, out


def assert_ping(who, target, result):
    rc, out = result
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    if rc != 0 or not m or int(m.group(1)) != COUNT or int(m.group(2)) != COUNT:
        raise HarnessError("%s: ping -s %d -M do %s: not every echo answered (rc %d):\n%s"
                           % (who, PAYLOAD, target, rc, out))
    if "%d bytes from" % (PAYLOAD + 8) not in out:
        raise HarnessError("%s: ping %s: no %d-byte replies:\n%s" % (who, target, PAYLOAD + 8, out))
    log("%s -> %s: %d/%d %d-byte echoes answered (DF set)" % (who, target, COUNT, COUNT, MTU))


def frag_counts(snmp):
    return {"%s.%s" % k: snmp.get(k[0], {}).get(k[1], 0) for k in FRAG_KEYS}


def body(s, args):
    image = GuestImage.build(os.path.join(s.build_dir, "integration-cache"),
                             extra_programs=("iperf3", "ping"))
    ns = Netns(s, "j")
    tap_if = unique_name("tj")
    socks = [s.path("j%d.sock" % i) for i in range(2)]
    vnetd = Vnetd(s, [PortSpec(socks[0], name="vhu-a"), PortSpec(socks[1], name="vhu-b"),
                      TapSpec("tap-j", ifname=tap_if, netns=ns, mtu=MTU)])
    vnetd.start()
    ns.add_address(tap_if, NS_IP + "/24")
    if ns.link_mtu(tap_if) != MTU:
        raise HarnessError("TAP %s has MTU %d in the namespace, expected %d"
                           % (tap_if, ns.link_mtu(tap_if), MTU))
    guests = [QemuGuest(s, name, image, sock, ip + "/24", mac,
                        device_props={"host_mtu": MTU}).start()
              for (name, ip, mac), sock in zip(GUESTS, socks)]
    for g in guests:
        g.wait_ready(timeout=150)
    vnetd.wait_connected(["vhu-a", "vhu-b"], timeout=30)
    for g in guests:
        g.set_mtu(MTU)
    info = vnetd.ports_info()
    for port in ("vhu-a", "vhu-b"):
        fe = info[port].get("extra", {}).get("front_end_mtu")
        if fe != MTU:
            raise HarnessError("vnetd port %s: front_end_mtu %s, expected %d (host_mtu): %s"
                               % (port, fe, MTU, info[port]))
    if info["tap-j"].get("mtu") != MTU:
        raise HarnessError("vnetd TAP port MTU %s, expected %d" % (info["tap-j"].get("mtu"), MTU))
    log("MTUs: guests eth0 %d, vnetd front_end_mtu %d on vhu-a/vhu-b, TAP %d"
        % (MTU, MTU, MTU))

    a, b = guests
    before = vnetd.counters()
    snmp0 = [g.snmp() for g in guests] + [ns.snmp()]
    cap = Capture(ns, "cap-jumbo", tap_if, "icmp and host %s" % NS_IP, count=100).wait_ready()

    assert_ping(a.name, b.ip.split("/")[0], guest_ping(a, b.ip.split("/")[0]))
    assert_ping(b.name, a.ip.split("/")[0], guest_ping(b, a.ip.split("/")[0]))
    assert_ping(a.name, NS_IP, guest_ping(a, NS_IP))
    tx, rx, out = ns.ping(b.ip.split("/")[0], count=COUNT, size=PAYLOAD, dont_fragment=True)
    if tx != COUNT or rx != COUNT:
        raise HarnessError("namespace ping -s %d -M do %s: %d/%d answered:\n%s"
                           % (PAYLOAD, b.ip, rx, tx, out))
    log("namespace -> %s: %d/%d %d-byte echoes answered (DF set)" % (b.name, rx, tx, MTU))

    # The namespace received 3 requests from guest-a and 3 replies from guest-b.
    cap.wait_frames(2 * COUNT, timeout=10)
    cap.stop()
    r = check_pcap(cap.path, mtu=MTU)
    log("namespace capture: %s" % r.summary())
    if r.n_bad or r.truncated or r.n("icmp full") < 2 * COUNT:
        raise HarnessError("namespace capture: expected >= %d whole ICMP frames with correct "
                           "checksums: %s; %s" % (2 * COUNT, r.summary(), r.bad))
    if r.max_len != MTU + 14 or r.n("fragment"):
        raise HarnessError("namespace capture: largest frame %d bytes (expected %d), %d "
                           "fragments" % (r.max_len, MTU + 14, r.n("fragment")))

    # One byte more does not fit: -M do fails at the sender.
    tx, rx, out = ns.ping(b.ip.split("/")[0], count=1, size=PAYLOAD + 1, dont_fragment=True)
    if rx != 0 or "message too long" not in out.lower():
        raise HarnessError("ping -s %d -M do should fail with 'message too long':\n%s"
                           % (PAYLOAD + 1, out))
    log("ping -s %d -M do fails locally (message too long): the MTU is %d" % (PAYLOAD + 1, MTU))

    snmp1 = [g.snmp() for g in guests] + [ns.snmp()]
    for who, s0, s1 in zip([g.name for g in guests] + [ns.name], snmp0, snmp1):
        f0, f1 = frag_counts(s0), frag_counts(s1)
        grew = {k: f1[k] - f0[k] for k in f1 if f1[k] != f0[k]}
        if grew:
            raise HarnessError("%s fragmented or reassembled: %s" % (who, grew))
        if csum_errors(s1):
            raise HarnessError("%s has checksum/header errors: %s" % (who, csum_errors(s1)))
    after = vnetd.counters()
    for port in ("vhu-a", "vhu-b", "tap-j"):
        d = {k: v - before[port]["drops"].get(k, 0) for k, v in after[port]["drops"].items()
             if v - before[port]["drops"].get(k, 0)}
        if d:
            raise HarnessError("vnetd port %s dropped frames: %s" % (port, d))
        # Each port carried at least COUNT 9000-byte packets each way.
        for k in ("rx_bytes", "tx_bytes"):
            if after[port][k] - before[port][k] < COUNT * MTU:
                raise HarnessError("vnetd port %s %s grew by %d, expected >= %d"
                                   % (port, k, after[port][k] - before[port][k], COUNT * MTU))
    log("no fragmentation, no checksum errors, no drops")
    for g in guests:
        g.poweroff()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s on SIGTERM" % rc)


if __name__ == "__main__":
    run_test("jumbo", body, [lambda a: require_root(), require_guest, require_vnetd,
                             require_netns, lambda a: require_tools("tcpdump", "ping")])
