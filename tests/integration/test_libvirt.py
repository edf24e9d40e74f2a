#!/usr/bin/env python3
"""Two libvirt guests with `<interface type='vhostuser'>` ping each other through vnetd.

libvirtd (Debian's, started here without systemd when none runs) starts QEMU from domain XML
(vnet_harness/libvirt.py: domain_xml; the README shows the same interface element), as its
own unprivileged user.  Two variants:
  "server": vnetd listens (per-port `socket_group` of QEMU's user, mode 0660, from a
            configuration file; the control socket stays root's); the domain says
            `<source type='unix' mode='client'>` with `<reconnect enabled='yes' timeout='1'/>`.
            After the pings vnetd is restarted: QEMU reconnects by itself and the pings
            work again.
  "client": the domain says `mode='server'` (QEMU listens), vnetd connects (`mode = "client"`,
            retried every second): what OpenStack Nova and KubeVirt write for OVS-DPDK's
            dpdkvhostuserclient ports, here with Nova's other choices too: 2 MiB hugepages
            and a NUMA cell with memAccess='shared', rx/tx queue size 1024.
Asserted for each: QEMU runs as libvirt's QEMU user, not root; the live domain XML has the
vhostuser interface on the socket given; both guests boot and configure eth0; 5/5 echo
replies each way; vnetd shows both ports connected in the expected mode and counted the
frames of the pings; vnetd exits with status 0 on SIGTERM; the domains are gone at the end.
"""

import grp
import os
import re
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.guest import GuestImage, require_guest  # noqa: E402
from vnet_harness.hugepages import ensure_hugepages, hugetlbfs_mounts  # noqa: E402
from vnet_harness.libvirt import (Libvirt, LibvirtGuest, qemu_user, require_libvirt,  # noqa: E402
                                  shared_dir)
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import Vnetd, require_vnetd  # noqa: E402

COUNT = 5
GUESTS = [("a", "10.0.3.1", "52:54:00:00:0c:01"),
          ("b", "10.0.3.2", "52:54:00:00:0c:02")]


def ping_both_ways(mode, guests, vnetd, what):
    before = vnetd.counters()
    a, b = guests
    for src, dst_ip in ((a, GUESTS[1][1]), (b, GUESTS[0][1])):
        tx, rx, out = src.ping(dst_ip, count=COUNT)
        log("%s: %s: %s ping %s: %d/%d replies" % (mode, what, src.name, dst_ip, rx, tx))
        if tx != COUNT or rx != COUNT:
            raise HarnessError("%s: %s: %s ping %s got %d/%d replies:\n%s"
                               % (mode, what, src.name, dst_ip, rx, tx, out))
    after = vnetd.counters()
    for port in ("vhu0", "vhu1"):
        for key in ("rx_packets", "tx_packets"):
            d = after[port][key] - before.get(port, {}).get(key, 0)
            if d < 2 * COUNT:
                raise HarnessError("%s: %s: vnetd %s.%s grew by %d, expected >= %d"
                                   % (mode, what, port, key, d, 2 * COUNT))


def check_guest(mode, g):
    uid = None
    with open("/proc/%d/status" % g.qemu_pid()) as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
    if uid != qemu_user()[0] or uid == 0:
        raise HarnessError("%s: QEMU of %s runs as uid %s, expected libvirt's QEMU user %d"
                           % (mode, g.name, uid, qemu_user()[0]))
    if g.nova:
        # Guest RAM on hugetlbfs (what vnetd maps), and the ring sizes the domain asked for.
        with open("/proc/%d/maps" % g.qemu_pid()) as f:
            huge = [m for m in hugetlbfs_mounts() if m in f.read()]
        if not huge:
            raise HarnessError("%s: QEMU of %s maps nothing from hugetlbfs %s"
                               % (mode, g.name, hugetlbfs_mounts()))
        rc, out = g.run("ethtool -g eth0", timeout=30)
        cur = out.split("Current hardware settings:")[-1]
        if rc != 0 or not re.search(r"^RX:\s+1024\s*$", cur, re.M) or not re.search(
                r"^TX:\s+1024\s*$", cur, re.M):
            raise HarnessError("%s: %s: ring sizes are not 1024 (rx/tx_queue_size):\n%s"
                               % (mode, g.name, out))
    xml = g.live_xml()
    if ("<interface type='vhostuser'>" not in xml or "path='%s'" % g.socket not in xml
            or "mode='%s'" % g.vhost_mode not in xml):
        raise HarnessError("%s: live XML of %s lacks the vhostuser interface on %s:\n%s"
                           % (mode, g.name, g.socket, xml))


def run_variant(s, image, mode):
    client = mode == "client"  # vnetd connects, QEMU listens
    workdir = shared_dir(s, "lv-" + mode)
    socks = [os.path.join(workdir, "vm%d.sock" % i) for i in range(2)]
    for p in socks:
        s.remove_file_later(p)
    _, gid, groups = qemu_user()
    group = "kvm" if "kvm" in groups else grp.getgrgid(gid).gr_name
    # The README's advice: socket permissions per [[port]], so the control socket stays
    # root's while QEMU's user may use the vhost-user sockets.
    conf = s.path("vnetd-%s.toml" % mode)
    with open(conf, "w") as f:
        for i, p in enumerate(socks):
            f.write('[[port]]\nname = "vhu%d"\ntype = "vhost-user"\nsocket = "%s"\n'
                    'mode = "%s"\nsocket_group = "%s"\nsocket_mode = "0660"\n\n'
                    % (i, p, mode, group))

    def new_vnetd(tag):
        v = Vnetd(s, [], extra_args=["--config", conf], name="vnetd-%s-%s" % (mode, tag))
        v.start()
        if not client:
            wait_until(lambda: all(os.path.exists(p) for p in socks), 10,
                       what="vnetd's vhost-user sockets")
        return v

    vnetd = new_vnetd("1")
    expect = [(vnetd.control, None)] + ([] if client else [(p, group) for p in socks])
    for p, want in expect:
        st = os.stat(p)
        got = grp.getgrgid(st.st_gid).gr_name
        if stat.S_IMODE(st.st_mode) != 0o660 or (got != want if want else got == group):
            raise HarnessError("%s: socket %s has mode %o group %s; expected 0660 and group %s"
                               % (mode, p, stat.S_IMODE(st.st_mode), got,
                                  want or "not " + group))
    t0 = time.monotonic()
    guests = []
    for i, (name, ip, mac) in enumerate(GUESTS):
        g = LibvirtGuest(s, "vnet-lv-%s-%s" % (mode, name), image, socks[i], ip + "/24", mac,
                         workdir, vhost_mode="server" if client else "client",
                         reconnect=None if client else 1, nova=client)
        guests.append(g.start())
    for g in guests:
        g.wait_ready(timeout=120)
        check_guest(mode, g)
    log("%s: both libvirt guests ready %.1f s after start" % (mode, time.monotonic() - t0))
    vnetd.expect_connected(["vhu0", "vhu1"], mode, timeout=60)
    ping_both_ways(mode, guests, vnetd, "first vnetd")

    if not client:
        # vnetd goes away and comes back: QEMU (<reconnect timeout='1'/>) connects again
        # and sets the device up anew; the guests keep their network.
        rc = vnetd.stop()
        if rc != 0:
            raise HarnessError("%s: vnetd exited with status %s on SIGTERM" % (mode, rc))
        t1 = time.monotonic()
        vnetd = new_vnetd("2")
        vnetd.expect_connected(["vhu0", "vhu1"], mode, timeout=60)
        log("%s: QEMU reconnected %.1f s after vnetd restarted" % (mode, time.monotonic() - t1))
        ping_both_ways(mode, guests, vnetd, "after a vnetd restart")

    for g in guests:
        g.poweroff()
        if g.state() != "gone":
            raise HarnessError("%s: domain %s is %s after poweroff" % (mode, g.name, g.state()))
    wait_until(lambda: not any(vnetd.ports_info()[p].get("connected") for p in ("vhu0", "vhu1")),
               20, what="vnetd ports disconnected after the guests powered off")
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("%s: vnetd exited with status %s on SIGTERM" % (mode, rc))


def body(s, args):
    image = GuestImage.build(os.path.join(s.build_dir, "integration-cache"))
    ensure_hugepages()  # before libvirtd starts: it looks for hugetlbfs mounts once
    Libvirt(s)
    for mode in ("server", "client"):
        run_variant(s, image, mode)


if __name__ == "__main__":
    run_test("libvirt", body, [lambda a: require_root(), require_guest, require_vnetd,
                               require_libvirt])
