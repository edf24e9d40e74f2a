#!/usr/bin/env python3
"""Self-check of the harness against real peers, without vnetd.

DPDK testpmd with net_vhost ports (io forwarding) stands in for the switch:
  1. two QEMU guests ping each other through it (guest A: QEMU connects to
     testpmd's socket; guest B: QEMU listens, testpmd connects with client=1);
  2. two virtio-user testpmds (sender, receiver) pass a fixed number of frames
     through it, for mrg_rxbuf=0 and 1.
Not a ctest test (name does not start with test_); run it by hand:
  python3 tests/integration/selfcheck_peers.py --build-dir BUILD
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness import hugepages  # noqa: E402
from vnet_harness.guest import GuestImage, QemuGuest, require_guest  # noqa: E402
from vnet_harness.testpmd import TestPmd, cpu_plan, virtio_user_vdev, vhost_vdev  # noqa: E402

timings = {}


def backend(s, name, vdevs):
    switch_cpu, peer_cpu = cpu_plan()
    # The stand-in switch forwards on the "switch" CPU, as vnetd would run there.
    pmd = TestPmd(s, name, vdevs, virtio_user=False, main_cpu=peer_cpu, fwd_cpu=switch_cpu,
                  fwd_mode="io")
    pmd.start()
    return pmd


def check_guests(s):
    t0 = time.monotonic()
    image = GuestImage.build(os.path.join(s.build_dir or s.tmp, "integration-cache"))
    timings["initramfs build/lookup"] = time.monotonic() - t0
    sock_a, sock_b = s.path("a.sock"), s.path("b.sock")
    s.remove_file_later(sock_a)
    s.remove_file_later(sock_b)
    # Guest B's QEMU listens first; testpmd's client port connects (and retries).
    gb = QemuGuest(s, "guest-b", image, sock_b, "10.0.0.2/24", "52:54:00:00:00:02",
                   server=True).start()
    be = backend(s, "be-guests", [vhost_vdev(0, sock_a), vhost_vdev(1, sock_b, client=True)])
    be.start_fwd()
    ga = QemuGuest(s, "guest-a", image, sock_a, "10.0.0.1/24", "52:54:00:00:00:01").start()
    ga.wait_ready()
    gb.wait_ready()
    timings["guest-a boot (QEMU client)"] = ga.boot_seconds
    timings["guest-b boot (QEMU server)"] = gb.boot_seconds
    t0 = time.monotonic()
    tx, rx, out = ga.ping("10.0.0.2", count=5)
    timings["ping a->b 5x"] = time.monotonic() - t0
    log("guest-a ping: %d/%d" % (rx, tx))
    if rx != tx or tx != 5:
        raise HarnessError("guest-a ping 10.0.0.2: %d/%d replies:\n%s" % (rx, tx, out))
    tx, rx, out = gb.ping("10.0.0.1", count=5)
    log("guest-b ping: %d/%d" % (rx, tx))
    if rx != tx or tx != 5:
        raise HarnessError("guest-b ping 10.0.0.1: %d/%d replies:\n%s" % (rx, tx, out))
    rc, out = gb.run("iperf3 -s -D -1 && sleep 0.5 && echo started")
    if rc != 0:
        raise HarnessError("iperf3 server in guest-b failed (rc %d):\n%s" % (rc, out))
    t0 = time.monotonic()
    rc, out = ga.run("iperf3 -c 10.0.0.2 -t 2 -f m", timeout=60)
    timings["iperf3 -t 2 a->b"] = time.monotonic() - t0
    m = re.search(r"([\d.]+) Mbits/sec.*receiver", out)
    if rc != 0 or not m:
        raise HarnessError("iperf3 a->b failed (rc %d):\n%s" % (rc, out))
    timings["iperf3 TCP a->b (Mbit/s, TCG guests)"] = float(m.group(1))
    t0 = time.monotonic()
    ga.poweroff()
    gb.poweroff()
    timings["guests poweroff"] = time.monotonic() - t0
    stats = be.port_stats()
    log("back end stats: %s" % stats)
    be.quit()


def check_virtio_user(s, mrg):
    sock0, sock1 = s.path("v0.sock"), s.path("v1.sock")
    s.remove_file_later(sock0)
    s.remove_file_later(sock1)
    be = backend(s, "be-vu%d" % mrg, [vhost_vdev(0, sock0), vhost_vdev(1, sock1)])
    be.start_fwd()
    t0 = time.monotonic()
    rx = TestPmd(s, "recv%d" % mrg, [virtio_user_vdev(0, sock1, mac="02:00:00:00:01:02",
                                                      mrg_rxbuf=mrg)], fwd_mode="rxonly").start()
    tx = TestPmd(s, "send%d" % mrg, [virtio_user_vdev(0, sock0, mac="02:00:00:00:01:01",
                                                      mrg_rxbuf=mrg)], fwd_mode="rxonly",
                 eth_peers={0: "02:00:00:00:01:02"}).start()
    rx.wait_link_up()
    tx.wait_link_up()
    timings["2 virtio-user testpmds up (mrg=%d)" % mrg] = time.monotonic() - t0
    rx.start_fwd()
    total_tx = 0
    for rnd in range(3):
        tx.start_fwd(tx_first=4)
        tx.stop_fwd()
        total_tx = tx.port_stats()[0].tx_packets
        got = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = rx.port_stats()[0].rx_packets
            if got >= total_tx:
                break
            time.sleep(0.1)
        log("mrg=%d round %d: sender TX %d, receiver RX %d" % (mrg, rnd, total_tx, got))
        if got != total_tx or total_tx == 0:
            raise HarnessError("mrg=%d: receiver RX %s != sender TX %d" % (mrg, got, total_tx))
    timings["tx_first 4 => frames per round"] = total_tx / 3
    for p in (tx, rx, be):
        p.quit()


def check_restart(s):
    """The reconnect test's mechanics: A/B mac-forward ping-pong through the back end
    while front end C (looped back onto itself by the back end) is killed and restarted."""
    socks = [s.path("r%d.sock" % i) for i in range(3)]
    for p in socks:
        s.remove_file_later(p)
    be = backend(s, "be-restart", [vhost_vdev(i, p) for i, p in enumerate(socks)])
    be.start_fwd()
    a = TestPmd(s, "a", [virtio_user_vdev(0, socks[0], mac="02:00:00:00:0c:01")],
                fwd_mode="mac", eth_peers={0: "02:00:00:00:0c:02"}).start()
    b = TestPmd(s, "b", [virtio_user_vdev(0, socks[1], mac="02:00:00:00:0c:02")],
                fwd_mode="mac", eth_peers={0: "02:00:00:00:0c:01"}).start()
    a.wait_link_up()
    b.wait_link_up()
    b.start_fwd(tx_first=2)
    a.start_fwd(tx_first=2)
    for cycle in range(2):
        c = TestPmd(s, "c%d" % cycle, [virtio_user_vdev(0, socks[2], mac="02:00:00:00:0c:03")],
                    fwd_mode="rxonly").start()
        t0 = time.monotonic()
        c.wait_link_up()
        c.start_fwd(tx_first=1)
        sent = c.port_stats()[0].tx_packets
        # The back end pairs its odd port with itself: C gets its own frames back.
        deadline = time.monotonic() + 10
        while c.port_stats()[0].rx_packets < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        got = c.port_stats()[0].rx_packets
        timings["restart cycle %d: C up, burst looped" % cycle] = time.monotonic() - t0
        if sent == 0 or got != sent:
            raise HarnessError("restart cycle %d: C sent %d, got back %d" % (cycle, sent, got))
        s0 = be.port_stats()
        c.kill()
        time.sleep(1.0)  # measurement window
        s1 = be.port_stats()
        grew = [s1[p].rx_packets - s0[p].rx_packets for p in (0, 1)]
        log("restart cycle %d: A/B frames through back end in 1 s with C killed: %s"
            % (cycle, grew))
        if min(grew) <= 0:
            raise HarnessError("A<->B ping-pong stalled: %s" % grew)
    for p in (a, b, be):
        p.quit()


def body(s, args):
    hugepages.ensure_hugepages()
    before = hugepages.free_hugepages()
    check_restart(s)
    check_guests(s)
    check_virtio_user(s, 0)
    check_virtio_user(s, 1)
    s.cleanup.run()
    after = hugepages.free_hugepages()
    log("free hugepages before %d, after cleanup %d" % (before, after))
    if after != before:
        raise HarnessError("hugepages leaked: %d free before, %d after" % (before, after))
    for k, v in timings.items():
        print("  %-40s %.2f" % (k, v))


if __name__ == "__main__":
    run_test("selfcheck_peers", body,
             [lambda a: require_root(), lambda a: require_tools("dpdk-testpmd", "stdbuf"),
              require_guest])
