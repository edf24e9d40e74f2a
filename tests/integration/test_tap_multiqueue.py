#!/usr/bin/env python3
"""A multiqueue TAP port: vnetd creates a TAP with queues=4 (IFF_MULTI_QUEUE, four fds)
in one namespace and a single-queue TAP in another, with two workers.

Asserted:
  - the kernel's TAP has 4 TX and 4 RX queues (/sys/class/net/IF/queues);
  - `vnetctl --json ports`: the port has 4 queues, spread over both workers;
  - ping across the two namespaces answers every echo;
  - iperf3 TCP with 8 parallel streams from the multiqueue side completes with data
    moved; the kernel spread its flows over the TAP's queues, so vnetd's per-queue
    rx_packets show at least 2 queues carrying traffic, and frames of the replies are
    written back on at least 2 queues (each flow on the fd it came from);
  - vnetd's totals agree with the kernel's: the port's rx_packets == the TAP's
    tx_packets, its tx_packets == the TAP's rx_packets; no drops;
  - vnetd exits with status 0 on SIGTERM.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.netns import Netns, require_netns, unique_name  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import TapSpec, Vnetd, require_vnetd  # noqa: E402

QUEUES = 4
PORT = "5213"


def body(s, args):
    ns_a, ns_b = Netns(s, "mqa"), Netns(s, "mqb")
    if_a, if_b = unique_name("ta"), unique_name("tb")
    vnetd = Vnetd(s, [TapSpec("tmq", ifname=if_a, netns=ns_a, queues=QUEUES),
                      TapSpec("tsq", ifname=if_b, netns=ns_b)],
                  extra_args=["--cpus", "0,1"], pin=False)
    vnetd.start()
    _, text = ns_a.run("ls /sys/class/net/%s/queues" % if_a)
    kernel_queues = sorted(text.split())
    log("kernel queues of %s: %s" % (if_a, kernel_queues))
    want = ["rx-%d" % i for i in range(QUEUES)] + ["tx-%d" % i for i in range(QUEUES)]
    if kernel_queues != want:
        raise HarnessError("%s has queues %s, expected %s" % (if_a, kernel_queues, want))
    info = vnetd.ports_info()["tmq"]
    workers = [q.get("worker") for q in info.get("queues", [])]
    log("tmq queues on workers %s" % workers)
    if len(workers) != QUEUES or set(workers) != {0, 1}:
        raise HarnessError("tmq queues on workers %s, expected %d spread over 0 and 1"
                           % (workers, QUEUES))
    ns_a.add_address(if_a, "10.77.0.1/24")
    ns_b.add_address(if_b, "10.77.0.2/24")
    sent, got, out = ns_a.ping("10.77.0.2", count=5)
    if got != sent or sent == 0:
        raise HarnessError("ping: %d of %d answered:\n%s" % (got, sent, out))

    ns_b.spawn("iperf3-s", ["iperf3", "-s", "-B", "10.77.0.2", "-p", PORT])
    wait_until(lambda: ":%s" % PORT in ns_b.run("ss -ltn")[1], 10.0, interval=0.1,
               what="iperf3 listening")
    rc, text = ns_a.run("iperf3 -c 10.77.0.2 -p %s -P 8 -t 3 -f m" % PORT, check=False,
                        timeout=60.0)
    summary = [ln for ln in text.splitlines() if "[SUM]" in ln]
    log("iperf3 -P 8: %s" % (summary[-2:] if summary else text[-300:]))
    if rc != 0 or not summary:
        raise HarnessError("iperf3 failed (status %d):\n%s" % (rc, text[-2000:]))

    def settled():
        c = vnetd.counters()["tmq"]
        k = ns_a.link_stats(if_a)
        return c["rx_packets"] == k["tx_packets"] and c["tx_packets"] == k["rx_packets"]
    try:
        wait_until(settled, 10.0, interval=0.2, what="vnetd and kernel counters agree")
    except HarnessError:
        raise HarnessError("tmq counters %s, kernel %s" % (vnetd.counters()["tmq"],
                                                           ns_a.link_stats(if_a)))
    qs = vnetd.ports_info()["tmq"]["queues"]
    rx = [q["rx_packets"] for q in qs]
    tx = [q["tx_packets"] for q in qs]
    log("tmq per queue: rx %s, tx %s" % (rx, tx))
    if sum(1 for n in rx if n) < 2:
        raise HarnessError("the kernel's frames came on queues %s: not spread" % rx)
    if sum(1 for n in tx if n) < 2:
        raise HarnessError("frames to the TAP were written on queues %s: not spread" % tx)
    drops = {n: {k: v for k, v in c.get("drops", {}).items() if v}
             for n, c in vnetd.counters().items()}
    if any(drops.values()):
        raise HarnessError("vnetd counted drops: %s" % drops)
    vnetd.stop_ok()


if __name__ == "__main__":
    run_test("tap_multiqueue", body,
             prerequisites=[lambda a: require_root(), require_vnetd, require_netns,
                            lambda a: require_tools("iperf3", "ping", "ss")])
