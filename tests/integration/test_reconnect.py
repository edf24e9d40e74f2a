#!/usr/bin/env python3
"""vnetd survives a front end crashing and reconnecting while others forward.

vnetd has three server ports; testpmd virtio-user front ends A (vhu0), B (vhu1),
C (vhu2).  A and B run mac forwarding and bounce frames between them forever
(`start tx_first`): B addresses A's MAC (learned, unicast), A addresses a MAC
nobody owns, so A's frames are flooded to B and C.  Then CYCLES times:
  - C is SIGKILLed while vnetd is transmitting to it (A's floods) and, on even
    cycles, while C itself transmits continuously (txonly to its own MAC,
    learned on vhu2, so none of it loops through A and B); vnetd must stay up,
    report vhu2 disconnected, and the A<->B counters (vnetd rx on vhu0 and
    vhu1, tx on vhu1) must keep growing during the outage;
  - C is started again (a new process); vhu2 must reconnect, C must receive
    flooded frames (vnetd forwards to the new connection), and one burst C
    sends must show up exactly in vnetd's vhu2 rx_packets.
Finally A<->B still flows and vnetd exits with status 0 on SIGTERM.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, dpdk_prerequisites, log, run_test  # noqa: E402
from vnet_harness import hugepages  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import TestPmd, virtio_user_vdev  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd  # noqa: E402

CYCLES = 4
MAC_A, MAC_B, MAC_C = "02:00:00:00:0c:01", "02:00:00:00:0c:02", "02:00:00:00:0c:03"
NOBODY = "02:00:00:00:0c:ff"
WINDOW = 1.0  # seconds over which "still flowing" is measured


def assert_flowing(vnetd, what):
    """A<->B counters in vnetd grow over WINDOW seconds."""
    keys = [("vhu0", "rx_packets"), ("vhu1", "rx_packets"), ("vhu1", "tx_packets"),
            ("vhu0", "tx_packets")]
    c0 = vnetd.counters()
    time.sleep(WINDOW)  # a measurement window, the assertion follows
    vnetd.check_alive()
    c1 = vnetd.counters()
    deltas = {"%s.%s" % k: c1[k[0]][k[1]] - c0[k[0]][k[1]] for k in keys}
    log("%s: A<->B in %.1f s: %s" % (what, WINDOW, deltas))
    stalled = [k for k, d in deltas.items() if d <= 0]
    if stalled:
        raise HarnessError("%s: A<->B traffic stalled (%s did not grow): %s"
                           % (what, ", ".join(stalled), c1))


def port_connected(vnetd, name):
    return bool(vnetd.ports_info().get(name, {}).get("connected"))


def c_sending(vnetd, c, cycle):
    """Switch C to continuous txonly (to MAC_C) and check vnetd sees vhu2 frames arriving."""
    c.stop_fwd()
    c.cmd("set eth-peer 0 %s" % MAC_C)
    c.set_fwd("txonly")
    c.start_fwd()
    r0 = vnetd.counters()["vhu2"]["rx_packets"]
    wait_until(lambda: vnetd.counters()["vhu2"]["rx_packets"] > r0 + 1000, 10,
               what="vnetd receiving C's continuous transmission (cycle %d)" % cycle)
    log("cycle %d: C transmitting continuously, killing it mid-stream" % cycle)


def start_c(s, sock, n):
    return TestPmd(s, "c%d" % n, [virtio_user_vdev(0, sock, mac=MAC_C)],
                   fwd_mode="rxonly", eth_peers={0: MAC_A}).start()


def body(s, args):
    hugepages.ensure_hugepages()
    socks = [s.path("r%d.sock" % i) for i in range(3)]
    vnetd = Vnetd(s, [PortSpec(p) for p in socks])
    vnetd.start()
    a = TestPmd(s, "a", [virtio_user_vdev(0, socks[0], mac=MAC_A)], fwd_mode="mac",
                eth_peers={0: NOBODY}).start()
    b = TestPmd(s, "b", [virtio_user_vdev(0, socks[1], mac=MAC_B)], fwd_mode="mac",
                eth_peers={0: MAC_A}).start()
    c = start_c(s, socks[2], 0)
    vnetd.wait_connected(["vhu0", "vhu1", "vhu2"])
    for pmd in (a, b, c):
        pmd.wait_link_up()
    c.start_fwd()
    b.start_fwd(tx_first=2)
    a.start_fwd(tx_first=2)
    wait_until(lambda: c.port_stats()[0].rx_packets > 0, 10,
               what="C receiving A's flooded frames")
    assert_flowing(vnetd, "start")

    for cycle in range(1, CYCLES + 1):
        if cycle % 2 == 0:
            # Kill C in the middle of its own transmission too: txonly to its own MAC
            # (learned on vhu2, so vnetd forwards none of it: no storm through A and B).
            c_sending(vnetd, c, cycle)
        c.kill()
        t0 = time.monotonic()
        wait_until(lambda: (vnetd.check_alive(), not port_connected(vnetd, "vhu2"))[1], 15,
                   what="vnetd noticing vhu2's front end is gone (cycle %d)" % cycle)
        log("cycle %d: vhu2 disconnected after %.2f s" % (cycle, time.monotonic() - t0))
        assert_flowing(vnetd, "cycle %d, C down" % cycle)

        c = start_c(s, socks[2], cycle)
        t0 = time.monotonic()
        vnetd.wait_connected(["vhu2"], timeout=20)
        c.wait_link_up()
        log("cycle %d: vhu2 reconnected in %.2f s" % (cycle, time.monotonic() - t0))
        before = vnetd.counters()["vhu2"]["rx_packets"]
        c.start_fwd(tx_first=1)
        sent = c.port_stats()[0].tx_packets
        if sent == 0:
            raise HarnessError("cycle %d: restarted C transmitted nothing" % cycle)
        wait_until(lambda: vnetd.counters()["vhu2"]["rx_packets"] - before >= sent, 10,
                   what="vnetd counting C's %d frames (cycle %d)" % (sent, cycle))
        got = vnetd.counters()["vhu2"]["rx_packets"] - before
        if got != sent:
            raise HarnessError("cycle %d: C sent %d frames, vnetd vhu2 rx_packets grew by %d"
                               % (cycle, sent, got))
        wait_until(lambda: c.port_stats()[0].rx_packets > 0, 10,
                   what="reconnected C receiving flooded frames (cycle %d)" % cycle)
        assert_flowing(vnetd, "cycle %d, C back" % cycle)

    for pmd in (c, b, a):
        pmd.quit()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s on SIGTERM" % rc)


if __name__ == "__main__":
    run_test("reconnect", body, dpdk_prerequisites())
