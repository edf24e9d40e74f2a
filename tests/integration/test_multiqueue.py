#!/usr/bin/env python3
"""Multiqueue vhost-user ports: two DPDK virtio-user front ends with 4 queue pairs each.

vnetd has two server ports offering 4 queue pairs (queues=4).  A sender testpmd
on vhu0 and a receiver testpmd on vhu1, both `--rxq=4 --txq=4` on virtio-user
`queues=4` (their control queue turns the pairs on with SET_VRING_ENABLE).  The
sender's `start tx_first 2` sends 2 bursts of 32 64-byte frames on each of its 4
TX queues with --txonly-multi-flow (the source IP changes per frame: 256 flows).
Asserted:
  - MQ negotiated, every port shows 4 queues "active" in `vnetctl --json ports`;
  - every frame sent arrives (receiver RX-packets == sender TX-packets), exactly,
    over several rounds; every TX queue of the sender and every RX queue of the
    receiver carries traffic (flows spread over the receiver's queues);
  - vnetd's per-queue counters agree with testpmd's `show port xstats`: vhu0's
    queue q rx_packets == the sender's tx_qN_good_packets, vhu1's queue q
    tx_packets == the receiver's rx_qN_good_packets; no drops;
  - the reverse direction: the receiver in mac forwarding sends every frame back
    (on the TX queue of the RX queue it came on); the sender gets every frame back
    and, queue by queue, on the RX queue whose TX queue sent the flow (vnetd
    remembers on which transmitq a flow came);
  - `port stop` / `port config all rxq 2 / txq 2` / `port start` on the receiver
    (its control queue disables pairs 2 and 3 while the sender keeps sending):
    vnetd shows pairs 2, 3 "off", the frames that follow all arrive on queues 0
    and 1; back to 4 queues, all four carry traffic again;
  - `vnetctl set-port vhu0 --queue 1 --worker 1` with two workers: queue 1 of vhu0
    moves (vnetctl workers shows it on worker 1) and frames keep arriving exactly;
  - vnetd exits with status 0 on SIGTERM.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, dpdk_prerequisites, log, run_test  # noqa: E402
from vnet_harness import hugepages  # noqa: E402
from vnet_harness.testpmd import TestPmd, virtio_user_vdev  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd  # noqa: E402

SENDER_MAC = "02:00:00:00:0b:01"
RECEIVER_MAC = "02:00:00:00:0b:02"
QUEUES = 4
BURSTS = 2  # x 32 frames x 4 queues = 256 frames: one per flow, well within the rings
ROUNDS = 3


def total(d):
    return sum(d.values())


def sub(a, b):
    return {q: a.get(q, 0) - b.get(q, 0) for q in a}


def vnetd_queues(vnetd, port):
    """{queue: {rx_packets, tx_packets, ...}} of a port from `vnetctl ports`."""
    info = vnetd.ports_info()[port]
    qs = info.get("queues")
    if not isinstance(qs, list):
        raise HarnessError("%s: no per-queue list in vnetctl ports: %s" % (port, info))
    return {q["queue"]: q for q in qs}


def vq_counter(vnetd, port, key):
    return {q: v[key] for q, v in vnetd_queues(vnetd, port).items()}


def wait_total(pmd, direction, expected, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        qs = pmd.queue_stats()[direction]
        if total(qs) >= expected or time.monotonic() > deadline:
            return qs
        time.sleep(0.1)


def send_round(sender, receiver, what):
    """One tx_first burst from the sender; returns per-queue deltas
    (sender tx, receiver rx) once the receiver has them all."""
    s0, r0 = sender.queue_stats(), receiver.queue_stats()
    sender.start_fwd(tx_first=BURSTS)
    sender.stop_fwd()
    s1 = sender.queue_stats()
    sent = sub(s1["tx"], s0["tx"])
    if total(sent) == 0:
        raise HarnessError("%s: the sender transmitted nothing" % what)
    r1 = wait_total(receiver, "rx", total(r0["rx"]) + total(sent))
    got = sub(r1, r0["rx"])
    log("%s: sender TX per queue %s, receiver RX per queue %s" % (what, sent, got))
    if total(got) != total(sent):
        raise HarnessError("%s: receiver got %d frames, sender sent %d" % (what, total(got),
                                                                          total(sent)))
    return sent, got


def reconfigure_queues(pmd, n):
    """port stop / config all rxq, txq N / port start: the PMD's control queue then
    enables exactly N pairs (SET_VRING_ENABLE)."""
    pmd.stop_fwd()
    for c in ("port stop 0", "port config all rxq %d" % n, "port config all txq %d" % n,
              "port start 0"):
        out = pmd.cmd(c, timeout=30.0).strip()
        log("%s: %s -> %s" % (pmd.name, c, out.splitlines()[-1] if out else ""))
    pmd.wait_link_up()
    pmd.start_fwd()


def body(s, args):
    hugepages.ensure_hugepages()
    sock0, sock1 = s.path("mq0.sock"), s.path("mq1.sock")
    vnetd = Vnetd(s, [PortSpec(sock0, queues=QUEUES), PortSpec(sock1, queues=QUEUES)],
                  extra_args=["--cpus", "0,1"], pin=False)
    vnetd.start()
    qargs = ["--rxq=%d" % QUEUES, "--txq=%d" % QUEUES]
    receiver = TestPmd(s, "mq-recv", [virtio_user_vdev(0, sock1, mac=RECEIVER_MAC, queues=QUEUES)],
                       fwd_mode="rxonly", eth_peers={0: SENDER_MAC}, extra_app=qargs).start()
    sender = TestPmd(s, "mq-send", [virtio_user_vdev(0, sock0, mac=SENDER_MAC, queues=QUEUES)],
                     fwd_mode="rxonly", eth_peers={0: RECEIVER_MAC},
                     extra_app=qargs + ["--txonly-multi-flow"]).start()
    vnetd.wait_connected(["vhu0", "vhu1"])
    receiver.wait_link_up()
    sender.wait_link_up()
    for name in ("vhu0", "vhu1"):
        info = vnetd.ports_info()[name]
        if not any(f.endswith("MQ") for f in info.get("features", [])):
            raise HarnessError("%s: MQ not negotiated: %s" % (name, info.get("features")))
        states = [q.get("state") for q in info["queues"]]
        log("%s: queue states %s, workers %s" % (name, states,
                                                 [q.get("worker") for q in info["queues"]]))
        if states != ["active"] * QUEUES:
            raise HarnessError("%s: queue states %s, expected all active" % (name, states))
    receiver.start_fwd()

    # Warm-up: a round that arrives whole proves every ring is enabled.
    for attempt in range(10):
        try:
            send_round(sender, receiver, "warm-up %d" % attempt)
            break
        except HarnessError as e:
            log(str(e))
            time.sleep(0.5)
    else:
        raise HarnessError("no round arrived whole in 10 attempts")

    # Exact counts, every queue used, vnetd's per-queue counters == testpmd's.
    v_rx0, v_tx1 = vq_counter(vnetd, "vhu0", "rx_packets"), vq_counter(vnetd, "vhu1", "tx_packets")
    sent_all, got_all = {q: 0 for q in range(QUEUES)}, {q: 0 for q in range(QUEUES)}
    for rnd in range(ROUNDS):
        sent, got = send_round(sender, receiver, "round %d" % rnd)
        for q in range(QUEUES):
            sent_all[q] += sent.get(q, 0)
            got_all[q] += got.get(q, 0)
    for q in range(QUEUES):
        if sent_all[q] == 0:
            raise HarnessError("sender TX queue %d carried nothing: %s" % (q, sent_all))
        if got_all[q] == 0:
            raise HarnessError("receiver RX queue %d carried nothing: %s" % (q, got_all))
    d_rx0 = sub(vq_counter(vnetd, "vhu0", "rx_packets"), v_rx0)
    d_tx1 = sub(vq_counter(vnetd, "vhu1", "tx_packets"), v_tx1)
    log("vnetd vhu0 rx per queue %s (testpmd sender tx %s); vhu1 tx per queue %s "
        "(testpmd receiver rx %s)" % (d_rx0, sent_all, d_tx1, got_all))
    if d_rx0 != sent_all:
        raise HarnessError("vhu0 per-queue rx_packets %s != sender per-queue TX %s"
                           % (d_rx0, sent_all))
    if d_tx1 != got_all:
        raise HarnessError("vhu1 per-queue tx_packets %s != receiver per-queue RX %s"
                           % (d_tx1, got_all))

    # The way back: each flow returns on the queue pair that sent it.
    receiver.stop_fwd()
    receiver.set_fwd("mac")
    receiver.start_fwd()
    # The sender keeps polling (rxonly after its tx_first) until the frames are back.
    s0 = sender.queue_stats()
    sender.start_fwd(tx_first=BURSTS)
    sent = sub(sender.queue_stats()["tx"], s0["tx"])
    back = sub(wait_total(sender, "rx", total(s0["rx"]) + total(sent)), s0["rx"])
    sender.stop_fwd()
    log("reverse: sender TX per queue %s, sender RX (frames back) per queue %s" % (sent, back))
    if total(back) != total(sent):
        raise HarnessError("reverse: %d frames came back of %d" % (total(back), total(sent)))
    if back != sent:
        raise HarnessError("reverse: frames came back on RX queues %s, sent on TX queues %s"
                           % (back, sent))
    receiver.stop_fwd()
    receiver.set_fwd("rxonly")
    receiver.start_fwd()

    # The receiver goes to 2 queue pairs (its control queue disables pairs 2, 3).
    reconfigure_queues(receiver, 2)
    deadline = time.monotonic() + 10
    while True:
        states = [q.get("state") for q in vnetd.ports_info()["vhu1"]["queues"]]
        if states[2:] == ["off", "off"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    log("vhu1 queue states with 2 pairs: %s" % states)
    if states[:2] != ["active", "active"] or states[2:] != ["off", "off"]:
        raise HarnessError("vhu1 queue states %s, expected 2 active then 2 off" % states)
    t1 = vq_counter(vnetd, "vhu1", "tx_packets")
    for rnd in range(2):
        sent, got = send_round(sender, receiver, "2 pairs round %d" % rnd)
        if any(got.get(q, 0) for q in (2, 3)) or not all(got.get(q, 0) for q in (0, 1)):
            raise HarnessError("with 2 pairs the receiver got %s per queue" % got)
    d = sub(vq_counter(vnetd, "vhu1", "tx_packets"), t1)
    if d[2] or d[3]:
        raise HarnessError("vnetd sent to disabled queues of vhu1: %s" % d)
    reconfigure_queues(receiver, QUEUES)
    wait_states = time.monotonic() + 10
    while [q.get("state") for q in vnetd.ports_info()["vhu1"]["queues"]] != ["active"] * 4:
        if time.monotonic() > wait_states:
            raise HarnessError("vhu1 queues not all active again: %s"
                               % vnetd.ports_info()["vhu1"]["queues"])
        time.sleep(0.2)
    sent, got = send_round(sender, receiver, "4 pairs again")
    if not all(got.get(q, 0) for q in range(QUEUES)):
        raise HarnessError("back to 4 pairs, the receiver got %s per queue" % got)

    # Move one queue of vhu0 to the other worker; traffic stays exact.
    before = [q["worker"] for q in vnetd.ports_info()["vhu0"]["queues"]]
    target = 1 - before[1]
    vnetd.vnetctl("set-port", "vhu0", "--queue", "1", "--worker", str(target))
    after = [q["worker"] for q in vnetd.ports_info()["vhu0"]["queues"]]
    log("vhu0 queue workers %s -> %s" % (before, after))
    if after[1] != target or after[0] != before[0] or after[2:] != before[2:]:
        raise HarnessError("set-port --queue 1 --worker %d: workers %s -> %s"
                           % (target, before, after))
    workers = vnetd.vnetctl("workers")["workers"]
    on_target = [(u["port"], u["queue"]) for u in workers[target]["queues"]]
    if ("vhu0", 1) not in on_target:
        raise HarnessError("vnetctl workers: worker %d polls %s, not vhu0 queue 1"
                           % (target, on_target))
    for rnd in range(2):
        send_round(sender, receiver, "after the move, round %d" % rnd)

    drops = {n: {k: v for k, v in c.get("drops", {}).items() if v}
             for n, c in vnetd.counters().items()}
    if any(drops.values()):
        raise HarnessError("vnetd counted drops: %s" % drops)
    sender.quit()
    receiver.quit()
    vnetd.stop_ok()


if __name__ == "__main__":
    run_test("multiqueue", body, prerequisites=dpdk_prerequisites())
