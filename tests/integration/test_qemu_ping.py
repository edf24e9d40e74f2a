#!/usr/bin/env python3
"""Two QEMU Linux guests (kernel virtio_net driver) ping each other through vnetd.

Variant "server": vnetd listens on both sockets, QEMU connects.
Variant "client": QEMU listens (`server=on,wait=off`) and vnetd connects
(`--vhost-user PATH,client`, retrying); QEMU 7.2 holds its start-up until
the back end has connected.
Asserted for each: both guests boot and configure eth0; 5/5 echo replies in
each direction (console markers from the guest's /init); vnetd reports both
ports connected in the expected mode and counted at least the 20 frames of
the two pings each way; vnetd exits with status 0 on SIGTERM.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.guest import GuestImage, QemuGuest, require_guest  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd, require_vnetd  # noqa: E402

COUNT = 5
GUESTS = [("guest-a", "10.0.0.1", "52:54:00:00:0b:01"),
          ("guest-b", "10.0.0.2", "52:54:00:00:0b:02")]


def run_variant(s, image, mode):
    client = mode == "client"  # vnetd is the client, QEMU listens
    socks = [s.path("%s-%d.sock" % (mode, i)) for i in range(2)]
    for p in socks:
        s.remove_file_later(p)
    vnetd = Vnetd(s, [PortSpec(p, client=client) for p in socks], name="vnetd-" + mode)
    guests = []
    t0 = time.monotonic()
    if client:
        # QEMU first: its listening socket must exist before vnetd's first attempt.
        for i, (name, ip, mac) in enumerate(GUESTS):
            guests.append(QemuGuest(s, "%s-%s" % (name, mode), image, socks[i], ip + "/24", mac,
                                    server=True).start())
        for g, p in zip(guests, socks):
            wait_until(lambda: os.path.exists(p) or not g.proc.alive(), 30,
                       what="QEMU socket %s" % os.path.basename(p))
        vnetd.start()
    else:
        vnetd.start()
        for i, (name, ip, mac) in enumerate(GUESTS):
            guests.append(QemuGuest(s, "%s-%s" % (name, mode), image, socks[i], ip + "/24",
                                    mac).start())
    for g in guests:
        g.wait_ready(timeout=120)
    log("%s: both guests ready %.1f s after start" % (mode, time.monotonic() - t0))

    vnetd.expect_connected(["vhu0", "vhu1"], mode)

    before = vnetd.counters()
    a, b = guests
    for src, dst_ip in ((a, GUESTS[1][1]), (b, GUESTS[0][1])):
        tx, rx, out = src.ping(dst_ip, count=COUNT)
        log("%s: %s ping %s: %d/%d replies" % (mode, src.name, dst_ip, rx, tx))
        if tx != COUNT or rx != COUNT:
            raise HarnessError("%s: %s ping %s got %d/%d replies:\n%s"
                               % (mode, src.name, dst_ip, rx, tx, out))
    after = vnetd.counters()
    for port in ("vhu0", "vhu1"):
        for key in ("rx_packets", "tx_packets"):
            d = after[port][key] - before[port][key]
            # Each guest sent COUNT requests + COUNT replies, and received as many.
            if d < 2 * COUNT:
                raise HarnessError("%s: vnetd %s.%s grew by %d, expected >= %d; %s"
                                   % (mode, port, key, d, 2 * COUNT, after))
    log("%s: vnetd counters %s" % (mode, after))
    for g in guests:
        g.poweroff()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("%s: vnetd exited with status %s on SIGTERM" % (mode, rc))


def body(s, args):
    image = GuestImage.build(os.path.join(s.build_dir, "integration-cache"))
    for mode in ("server", "client"):
        run_variant(s, image, mode)


if __name__ == "__main__":
    run_test("qemu_ping", body, [lambda a: require_root(), require_guest, require_vnetd])
