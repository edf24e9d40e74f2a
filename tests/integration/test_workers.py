#!/usr/bin/env python3
"""Two data-plane workers: vnetd --cpus 0,1 with four vhost-user ports, two per worker.

Ports p0 and p1 are polled by worker 0, p2 and p3 by worker 1 (worker=K on the
command line).  vnet-traffic front ends (our own vhost-user driver) send and count
frames.  Asserted:
  - `vnetctl ports --json` places the ports as asked;
  - across workers both ways at once (p0 -> p2: worker 0 to worker 1, p3 -> p1:
    worker 1 to worker 0), then within each worker at once (p0 -> p1, p3 -> p2):
    every receiver counts exactly N well-formed frames addressed to it, every
    sender had exactly N frames completed, vnetd's rx_packets agree, no drops for
    lack of RX buffers;
  - `vnetctl workers --json`: both workers forwarded packets and spent busy cycles,
    each lists its two ports; `vnetctl counters --json` still has its "worker"
    totals (packets = the sum over the workers);
  - moving a port between workers while it sends (`vnetctl set-port p0 --worker K`,
    back and forth): the sender's frames all reach vnetd (p0 rx_packets exact) and
    the receiver gets every one of them except frames counted as rx_no_buffers on
    its port (bounded: at most MOVE_LOSS_BOUND); the port ends on the last worker
    asked for;
  - a worker index out of range is refused with the field named, nothing moves.
Rates are printed for information only.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import (PortSpec, Vnetd, find_program, require_vnetd,  # noqa: E402
                                sanitizer_of)

N = 50000
SIZE = 64
MOVES = 6
RATE = 50000  # frames/s per sender
RX_QUEUE = 16384  # a receiver's buffers: 328 ms of one sender at RATE
MOVE_LOSS_BOUND = 64  # frames: two bursts of the receiver's ring running dry, at most
MACS = ["02:00:00:00:a0:%02x" % i for i in range(4)]  # the front end on port p<i>


def require_two_cpus(args):
    if not {0, 1} <= set(os.sched_getaffinity(0)):
        return ["CPUs 0 and 1 (vnetd --cpus 0,1)"]
    return []


class Traffic:
    def __init__(self, s, vnetd, socks):
        self.s, self.vnetd, self.socks = s, vnetd, socks
        self.binary = find_program(s.build_dir, "vnet-traffic")
        self.n = 0

    def rx(self, port, count, timeout=120):
        self.n += 1
        before = self.vnetd.counters()["p%d" % port]["rx_packets"]
        p = self.s.spawn("rx%d-p%d" % (self.n, port), [
            self.binary, "--socket", self.socks[port], "--mode", "rx", "--count", count,
            "--mac", MACS[port], "--queue-size", RX_QUEUE, "--check", "--timeout", timeout,
            "--size", SIZE, "--notify", "--log-level", "warn"])
        # Its announcement reached vnetd: the switch knows MACS[port] is on p<port>.
        wait_until(lambda: p.alive() and
                   self.vnetd.counters()["p%d" % port]["rx_packets"] > before, 20,
                   what="the announcement of the receiver on p%d" % port)
        return p

    def tx(self, port, dst_port, count, rate=0):
        self.n += 1
        argv = [self.binary, "--socket", self.socks[port], "--mode", "tx", "--count", count,
                "--mac", MACS[port], "--dst-mac", MACS[dst_port], "--queue-size", 1024,
                "--size", SIZE, "--notify", "--log-level", "warn", "--timeout", 120]
        if rate:
            argv += ["--rate", rate]
        return self.s.spawn("tx%d-p%d" % (self.n, port), argv)


def finish(proc, what):
    if proc.wait(150) is None:
        raise HarnessError("%s still running after 150 s; log:\n%s" % (what, proc.log_tail()))
    return result_of(proc)


def check_sender(t, proc, what, count):
    if proc.returncode != 0 or not t["complete"] or t["tx"]["packets"] != count:
        raise HarnessError("%s: completed %s of %d frames (status %s): %s"
                           % (what, t["tx"].get("packets"), count, proc.returncode, t))


def check_receiver(r, proc, what, count):
    if proc.returncode != 0 or r["rx"]["packets"] != count:
        raise HarnessError("%s: received %d of %d frames (status %s)"
                           % (what, r["rx"]["packets"], count, proc.returncode))
    if r["rx"]["bad_packets"]:
        raise HarnessError("%s: %d malformed frames" % (what, r["rx"]["bad_packets"]))


def exact_round(traffic, vnetd, pairs, label):
    """Each (src, dst) pair: a receiver on dst counting N, a sender on src sending N."""
    c0 = vnetd.counters()
    rxs = {dst: traffic.rx(dst, N) for _, dst in pairs}
    vnetd.wait_connected(["p%d" % d for _, d in pairs])
    t0 = time.monotonic()
    # Paced: on two cores both workers and four front ends share the CPUs, and an unpaced
    # sender outruns a receiver that is descheduled for a few milliseconds (8192 buffers
    # last 25 ms at full speed). CI once saw a receiver off the CPU for more than the 82 ms
    # that 8192 buffers lasted at 100 kpps: now 16384 buffers at 50 kpps, 328 ms.
    # Exactness is what is tested.
    txs = {src: traffic.tx(src, dst, N, rate=RATE) for src, dst in pairs}
    for src, dst in pairs:
        t = finish(txs[src], "sender p%d" % src)
        check_sender(t, txs[src], "%s sender p%d -> p%d" % (label, src, dst), N)
        r = finish(rxs[dst], "receiver p%d" % dst)
        try:
            check_receiver(r, rxs[dst], "%s receiver p%d (from p%d)" % (label, dst, src), N)
        except HarnessError as e:
            c = vnetd.counters()["p%d" % dst]
            raise HarnessError("%s; vnetd: p%d tx_packets %d, drops %s"
                               % (e, dst, c["tx_packets"] - c0["p%d" % dst]["tx_packets"],
                                  {k: v - c0["p%d" % dst]["drops"].get(k, 0)
                                   for k, v in c["drops"].items() if v}))
        log("%s p%d -> p%d: %d frames exact (rx %.3f Mpps, informative)"
            % (label, src, dst, N, r["rx"]["mpps"]))
    log("%s: %.1f s" % (label, time.monotonic() - t0))
    c1 = vnetd.counters()
    for src, dst in pairs:
        got = c1["p%d" % src]["rx_packets"] - c0["p%d" % src]["rx_packets"]
        # N data frames plus the sender's one announcement.
        if got != N + 1:
            raise HarnessError("%s: vnetd p%d rx_packets grew by %d, the sender sent %d"
                               % (label, src, got, N + 1))
        nobuf = (c1["p%d" % dst]["drops"].get("rx_no_buffers", 0)
                 - c0["p%d" % dst]["drops"].get("rx_no_buffers", 0))
        if nobuf:
            raise HarnessError("%s: vnetd dropped %d frames to p%d for lack of RX buffers"
                               % (label, nobuf, dst))


def body(s, args):
    socks = [s.path("w%d.sock" % i) for i in range(4)]
    vnetd = Vnetd(s, [PortSpec(p, name="p%d" % i, worker=i // 2) for i, p in enumerate(socks)],
                  extra_args=["--cpus", "0,1"], pin=False)
    vnetd.start()
    ports = {p["name"]: p for p in vnetd.vnetctl("ports")["ports"]}
    for i in range(4):
        if ports["p%d" % i].get("worker") != i // 2:
            raise HarnessError("port p%d on worker %s, asked for %d"
                               % (i, ports["p%d" % i].get("worker"), i // 2))
    traffic = Traffic(s, vnetd, socks)

    # Across workers both ways at once, then within each worker.
    exact_round(traffic, vnetd, [(0, 2), (3, 1)], "across")
    exact_round(traffic, vnetd, [(0, 1), (3, 2)], "within")

    w = vnetd.vnetctl("workers")["workers"]
    log("workers: %s" % json.dumps(w))
    if len(w) != 2:
        raise HarnessError("vnetctl workers lists %d workers, expected 2" % len(w))
    for i, wk in enumerate(w):
        if wk["cpu"] != i or sorted(wk["ports"]) != ["p%d" % (2 * i), "p%d" % (2 * i + 1)]:
            raise HarnessError("worker %d: cpu %s ports %s" % (i, wk["cpu"], wk["ports"]))
        # Each worker polled two senders of N frames (plus announcements).
        if wk["packets"] < 2 * N or wk["busy_cycles"] <= 0 or wk["busy_cycles_per_packet"] <= 0:
            raise HarnessError("worker %d was not busy: %s" % (i, wk))
    totals = vnetd.vnetctl("counters")["worker"]
    if totals.get("packets") != sum(wk["packets"] for wk in w) or totals.get("workers") != 2:
        raise HarnessError("counters' worker totals %s do not sum the workers %s" % (totals, w))

    # A bad worker index: refused, field named, nothing moved.
    r = subprocess.run([vnetd.vnetctl_binary, "--control", vnetd.control, "set-port", "p0",
                        "--worker", "2"], capture_output=True, text=True, timeout=10)
    if r.returncode == 0 or "field 'worker'" not in r.stderr:
        raise HarnessError("set-port --worker 2 was not refused with the field named: %s %r"
                           % (r.returncode, r.stderr))

    # Move p0 between the workers while it sends to p2.
    count = 4 * N
    c0 = vnetd.counters()
    rx = traffic.rx(2, count)
    tx = traffic.tx(0, 2, count, rate=RATE)  # ~4 s of traffic
    target = 0
    for i in range(MOVES):
        time.sleep(0.2)
        target = 1 - target
        vnetd.vnetctl("set-port", "p0", "--worker", str(target))
    t = finish(tx, "moving sender p0")
    check_sender(t, tx, "moving sender p0", count)
    if rx.wait(30) is None:
        rx.stop()
    r = result_of(rx)
    c1 = vnetd.counters()
    got_in = c1["p0"]["rx_packets"] - c0["p0"]["rx_packets"]
    nobuf = (c1["p2"]["drops"].get("rx_no_buffers", 0)
             - c0["p2"]["drops"].get("rx_no_buffers", 0))
    lost = count - r["rx"]["packets"]
    log("move under traffic: %d moves, sender %d, vnetd got %d, receiver %d, lost %d "
        "(rx_no_buffers %d)" % (MOVES, count, got_in, r["rx"]["packets"], lost, nobuf))
    if got_in != count + 1:
        raise HarnessError("vnetd received %d frames from p0 while it moved, the sender sent %d"
                           % (got_in, count + 1))
    # Every lost frame is counted. The bound is a timing figure: with vnetd and the
    # receiver under ThreadSanitizer the receiver posts its buffers several times slower
    # (19296 of 200000 in one CI run, every one counted), so it is not checked there.
    bound = None if sanitizer_of(vnetd.proc.pid) else MOVE_LOSS_BOUND
    if (bound is not None and lost > bound) or lost != nobuf:
        raise HarnessError("moving p0 lost %d frames (bound %d), %d of them counted as "
                           "rx_no_buffers" % (lost, MOVE_LOSS_BOUND, nobuf))
    if r["rx"]["bad_packets"]:
        raise HarnessError("receiver saw %d malformed frames" % r["rx"]["bad_packets"])
    ports = {p["name"]: p for p in vnetd.vnetctl("ports")["ports"]}
    if ports["p0"]["worker"] != target or ports["p1"]["worker"] != 0:
        raise HarnessError("p0 is on worker %s after the moves, expected %d"
                           % (ports["p0"]["worker"], target))
    vnetd.check_alive()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)


if __name__ == "__main__":
    run_test("workers", body,
             [lambda a: require_root(), require_vnetd, require_traffic, require_two_cpus])
