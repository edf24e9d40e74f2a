#!/usr/bin/env python3
"""vnet-traffic through vnetd: exactly N frames in, exactly N frames out.

vnetd has two server ports, vhu0 and vhu1.  vnet-traffic (our own vhost-user
front end) receives on vhu1 (--mode rx, its MAC announced with one broadcast so
vnetd learns it), then a second vnet-traffic sends exactly N 64-byte frames to
that MAC on vhu0.  Asserted:
  - the receiver counts exactly N frames addressed to it, all well-formed (--check);
  - the sender had exactly N frames completed by vnetd;
  - vnetd's counters agree: vhu0 rx_packets == N + the sender's announcement,
    vhu1 tx_packets == every frame the receiver got (N + the sender's flooded
    announcement), and vhu1 dropped nothing for lack of RX buffers.
Then the same ports carry the benchmarks' two-port generator (--pair-socket: one
process, both ports, each sending to the other): both directions move frames, every
frame received is well-formed and addressed to its port, vnetd delivered at least
what each side counted.
The rate (Mpps) is printed for information only; nothing asserts a speed.

Both front ends sleep on their call eventfds when idle (--notify) and share the
CPU that vnetd is not pinned to, so the sender is paced (RATE): unpaced, it can
outrun a receiver that the scheduler keeps off that CPU for a time slice.  The
receiver's RX_QUEUE buffers last 655 ms at RATE (CI once saw a receiver kept off
the CPU for more than the 16 ms that 8192 buffers at 500 kpps gave; on a virtual
machine the vCPU itself can be descheduled).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd, find_program, require_vnetd  # noqa: E402

N = 100000
RATE = 50000  # frames/s
RX_QUEUE = 32768  # the receiver's buffers: 655 ms at RATE
SIZE = 64
MAC_TX, MAC_RX = "02:00:00:00:fe:01", "02:00:00:00:fe:02"
PAIR_SECONDS, PAIR_MIN = 1, 1000


def body(s, args, extra=()):
    """`extra`: more vnet-traffic options for every instance (test_frontend_traffic_packed.py
    passes --packed)."""
    extra = list(extra)
    traffic = find_program(s.build_dir, "vnet-traffic")
    socks = [s.path("t%d.sock" % i) for i in range(2)]
    vnetd = Vnetd(s, [PortSpec(p) for p in socks])
    vnetd.start()
    peer_cpu = cpu_plan()[1]
    common = ["--size", SIZE, "--notify", "--cpu", peer_cpu, "--log-level", "warn"] + extra

    rx = s.spawn("rx", [traffic, "--socket", socks[1], "--mode", "rx", "--count", N,
                        "--mac", MAC_RX, "--queue-size", RX_QUEUE, "--check", "--timeout", 120]
                 + common)
    # Its announcement arrived: vnetd knows MAC_RX is on vhu1.
    wait_until(lambda: rx.alive() and vnetd.counters()["vhu1"]["rx_packets"] >= 1, 20,
               what="the receiver's announcement in vnetd (vhu1 rx_packets)")
    vnetd.wait_connected(["vhu1"])

    tx = s.spawn("tx", [traffic, "--socket", socks[0], "--mode", "tx", "--count", N,
                        "--mac", MAC_TX, "--dst-mac", MAC_RX, "--queue-size", 1024,
                        "--rate", RATE] + common)
    if tx.wait(120) is None:
        raise HarnessError("sender still running after 120 s; log:\n%s" % tx.log_tail())
    if rx.wait(120) is None:
        raise HarnessError("receiver still running after 120 s; log:\n%s" % rx.log_tail())
    t, r = result_of(tx), result_of(rx)
    log("sender:   %s" % json.dumps(t["tx"]))
    log("receiver: %s" % json.dumps(r["rx"]))
    log("measured: tx %.3f Mpps, rx %.3f Mpps (%d-byte frames; informative only)"
        % (t["tx"]["mpps"], r["rx"]["mpps"], SIZE))
    if tx.returncode != 0 or not t["complete"]:
        raise HarnessError("sender failed (status %s): %s" % (tx.returncode, t))
    if t["tx"]["packets"] != N or t["announce_packets"] != 1:
        raise HarnessError("sender completed %d frames (+%d announcements), expected %d (+1)"
                           % (t["tx"]["packets"], t["announce_packets"], N))

    vnetd.check_alive()
    c = vnetd.counters()
    log("vnetd counters: vhu0 %s, vhu1 %s" % (c["vhu0"], c["vhu1"]))
    if rx.returncode != 0 or r["rx"]["packets"] != N:
        raise HarnessError("receiver got %d of %d frames (status %s; vhu1 drops %s)"
                           % (r["rx"]["packets"], N, rx.returncode, c["vhu1"].get("drops")))
    if r["rx"]["bad_packets"] != 0:
        raise HarnessError("receiver saw %d malformed frames" % r["rx"]["bad_packets"])
    if r["rx"]["bytes"] != N * SIZE:
        raise HarnessError("receiver counted %d bytes, expected %d" % (r["rx"]["bytes"], N * SIZE))

    want_rx = N + t["announce_packets"]
    got_all = r["rx"]["packets"] + r["rx"]["other_packets"]
    if c["vhu0"]["rx_packets"] != want_rx:
        raise HarnessError("vnetd vhu0 rx_packets %d, the sender sent %d"
                           % (c["vhu0"]["rx_packets"], want_rx))
    if c["vhu1"]["tx_packets"] != got_all:
        raise HarnessError("vnetd vhu1 tx_packets %d, the receiver got %d"
                           % (c["vhu1"]["tx_packets"], got_all))
    if got_all != N + 1:
        raise HarnessError("receiver got %d frames in all, expected %d data + 1 announcement"
                           % (got_all, N))
    no_buf = c["vhu1"].get("drops", {}).get("rx_no_buffers", 0)
    if no_buf:
        raise HarnessError("vnetd dropped %d frames on vhu1 for lack of RX buffers" % no_buf)

    # The two-port generator of the benchmarks (--pair-socket): one thread drives both
    # ports, each sending to the other's MAC as fast as it can for PAIR_SECONDS; every
    # frame each receives is checked (--check), and vnetd saw at least what they counted.
    before = vnetd.counters()
    pair = s.spawn("pair", [traffic, "--socket", socks[0], "--pair-socket", socks[1],
                            "--mac", MAC_TX, "--pair-mac", MAC_RX, "--duration", PAIR_SECONDS,
                            "--check", "--size", SIZE, "--cpu", peer_cpu, "--log-level", "warn"]
                   + extra)
    if pair.wait(60) is None:
        raise HarnessError("the pair generator still runs after 60 s:\n%s" % pair.log_tail())
    res = result_of(pair)
    if pair.returncode != 0 or "pair" not in res or len(res["pair"]) != 2:
        raise HarnessError("the pair generator failed (status %s): %s" % (pair.returncode, res))
    after = vnetd.counters()
    for port, (sender, receiver) in (("vhu1", (0, 1)), ("vhu0", (1, 0))):
        t, r = res["pair"][sender], res["pair"][receiver]
        log("pair: %s -> %s: sent %d, received %d (%.3f Mpps; loop %s)"
            % ("A" if sender == 0 else "B", "B" if receiver == 1 else "A", t["tx"]["packets"],
               r["rx"]["packets"], r["rx"]["mpps"], r["loop"]))
        if not r["complete"] or t["tx"]["packets"] < PAIR_MIN or r["rx"]["packets"] < PAIR_MIN:
            raise HarnessError("pair: %d sent, %d received (at least %d each expected)"
                               % (t["tx"]["packets"], r["rx"]["packets"], PAIR_MIN))
        if r["rx"]["bad_packets"] or r["rx"]["other_packets"] > 1:  # the other's announcement
            raise HarnessError("pair: %d malformed and %d foreign frames received"
                               % (r["rx"]["bad_packets"], r["rx"]["other_packets"]))
        delivered = after[port]["tx_packets"] - before[port]["tx_packets"]
        if delivered < r["rx"]["packets"] + r["rx"]["other_packets"]:
            raise HarnessError("pair: the receiver on %s counted %d frames, vnetd delivered %d"
                               % (port, r["rx"]["packets"], delivered))
    if res["pair"][0]["loop"]["polls"] == 0:
        raise HarnessError("pair: no loop statistics")
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)


if __name__ == "__main__":
    run_test("frontend_traffic", body,
             [lambda a: require_root(), require_vnetd, require_traffic])
