#!/usr/bin/env python3
"""vnetd forwards frames between two DPDK virtio-user front ends, exactly.

vnetd has two server ports (vhu0, vhu1).  A sender testpmd on vhu0 and a
receiver testpmd on vhu1 both run in rxonly mode; the sender's
`start tx_first 4` transmits 4 bursts of 32 64-byte frames (128, fewer if its
ring were full: we use the TX-packets it reports) to the receiver's MAC.
Variants (a fresh vnetd each): mrg_rxbuf=0 and mrg_rxbuf=1 with 64-byte frames;
1500-byte frames (external packets: the sender's TX buffers are read straight into
the receiver's RX buffers and completed after delivery) with the PMD's in-order
paths; and in_order=0, which takes the PMD's general paths.  Asserted for each:
  receiver RX-packets == sender TX-packets > 0 after each of 3 rounds;
  MRG_RXBUF is negotiated on both ports exactly when mrg_rxbuf=1, IN_ORDER exactly
  when the front end did not turn it off (the PMD's in-order TX reclaims buffers
  by counting, so a chain completed out of order would lose frames or mbufs);
  vnetd's rx_packets/rx_bytes on vhu0 and tx_packets/tx_bytes on vhu1 grew by
  exactly what the sender sent and the receiver received, with no drops counted;
  vnetd exits with status 0 on SIGTERM.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, dpdk_prerequisites, log, run_test  # noqa: E402
from vnet_harness import hugepages  # noqa: E402
from vnet_harness.testpmd import TestPmd, virtio_user_vdev  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd  # noqa: E402

SENDER_MAC = "02:00:00:00:0a:01"
RECEIVER_MAC = "02:00:00:00:0a:02"
ROUNDS = 3
BURSTS = 4  # x 32 frames: well under the 256-entry rings, so nothing may be dropped


def wait_rx(pmd, expected, timeout=10.0):
    """Receiver RX-packets once it reaches `expected` (or whatever it has at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pmd.port_stats()[0]
        if got.rx_packets >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def counter_delta(vnetd, before, port, key):
    return vnetd.counters()[port][key] - before[port][key]


def wait_counter(vnetd, before, port, key, expected, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        d = counter_delta(vnetd, before, port, key)
        if d == expected or time.monotonic() > deadline:
            return d
        time.sleep(0.1)


def run_variant(s, mrg, in_order=None, size=64, packed=None, queue_size=None, rounds=ROUNDS):
    """One exact-count run of `rounds` rounds; `packed` and `queue_size` are virtio-user
    devargs (packed_vq, queue_size) that test_dpdk_packed.py varies."""
    tag = "mrg%d-%s-%d" % (mrg, "inorder" if in_order is None else "io%d" % in_order, size)
    if packed:
        tag += "-packed"
    if queue_size:
        tag += "-q%d" % queue_size
    sock0, sock1 = s.path("%s-0.sock" % tag), s.path("%s-1.sock" % tag)
    vnetd = Vnetd(s, [PortSpec(sock0), PortSpec(sock1)], log_level="info", name="vnetd-" + tag)
    vnetd.start()
    devargs = dict(mrg_rxbuf=mrg, in_order=in_order, packed_vq=packed, queue_size=queue_size)
    receiver = TestPmd(s, "recv-" + tag, [virtio_user_vdev(0, sock1, mac=RECEIVER_MAC, **devargs)],
                       fwd_mode="rxonly").start()
    sender = TestPmd(s, "send-" + tag, [virtio_user_vdev(0, sock0, mac=SENDER_MAC, **devargs)],
                     fwd_mode="rxonly", eth_peers={0: RECEIVER_MAC}).start()
    if size != 64:
        sender.cmd("set txpkts %d" % size)
    vnetd.wait_connected(["vhu0", "vhu1"])
    receiver.wait_link_up()
    sender.wait_link_up()
    info = vnetd.ports_info()
    for name in ("vhu0", "vhu1"):
        log("%s: %s" % (name, {k: info[name].get(k) for k in ("mode", "connected", "features")}))
        if info[name].get("mode") != "server":
            raise HarnessError("%s: mode %r, expected server" % (name, info[name].get("mode")))
    mrg_negotiated = [any(f.endswith("MRG_RXBUF") for f in info[n].get("features", []))
                      for n in ("vhu0", "vhu1")]
    log("%s: MRG_RXBUF negotiated per port: %s" % (tag, mrg_negotiated))
    # vnetd offers MRG_RXBUF; the devarg decides whether the front end accepts it, so
    # each variant really exercises its RX path (one buffer per frame, or merged).
    if mrg_negotiated != [bool(mrg)] * 2:
        raise HarnessError("%s: MRG_RXBUF negotiated on (vhu0, vhu1) = %s, expected %s; "
                           "features: %s" % (tag, mrg_negotiated, [bool(mrg)] * 2,
                                             {n: info[n].get("features") for n in info}))
    want_in_order = in_order is None or bool(in_order)
    in_order_negotiated = [any(f.endswith("IN_ORDER") for f in info[n].get("features", []))
                           for n in ("vhu0", "vhu1")]
    if in_order_negotiated != [want_in_order] * 2:
        raise HarnessError("%s: IN_ORDER negotiated on (vhu0, vhu1) = %s, expected %s"
                           % (tag, in_order_negotiated, [want_in_order] * 2))
    packed_negotiated = [any(f.endswith("RING_PACKED") for f in info[n].get("features", []))
                         for n in ("vhu0", "vhu1")]
    if packed_negotiated != [bool(packed)] * 2:
        raise HarnessError("%s: RING_PACKED negotiated on (vhu0, vhu1) = %s, expected %s"
                           % (tag, packed_negotiated, [bool(packed)] * 2))
    receiver.start_fwd()

    # Readiness: "connected" may precede the rings being enabled; one burst that
    # arrives whole proves the path.  Only the strict rounds below count.
    for attempt in range(10):
        sender.start_fwd(tx_first=1)
        sender.stop_fwd()
        sent = sender.port_stats()[0].tx_packets
        if sent and wait_rx(receiver, sent, timeout=2.0).rx_packets == sent:
            break
        log("%s: warm-up %d: receiver has %d of %d" % (
            tag, attempt, receiver.port_stats()[0].rx_packets, sent))
    else:
        raise HarnessError("%s: no burst from vhu0 arrived whole at vhu1 in 10 attempts" % tag)
    # Deltas, not `clear port stats`: DPDK 22.11's virtio-user PMD resets RX-bytes
    # but not RX-packets on clear (seen here).
    tx0 = sender.port_stats()[0]
    rx0 = receiver.port_stats()[0]
    before = vnetd.counters()

    prev_sent = 0
    for rnd in range(rounds):
        sender.start_fwd(tx_first=BURSTS)
        sender.stop_fwd()
        t = sender.port_stats()[0]
        sent, sent_bytes = t.tx_packets - tx0.tx_packets, t.tx_bytes - tx0.tx_bytes
        r = wait_rx(receiver, rx0.rx_packets + sent)
        got, got_bytes = r.rx_packets - rx0.rx_packets, r.rx_bytes - rx0.rx_bytes
        log("%s round %d: sender TX %d (%d B), receiver RX %d (%d B) (cumulative)"
            % (tag, rnd, sent, sent_bytes, got, got_bytes))
        if sent <= prev_sent:
            raise HarnessError("%s round %d: sender transmitted nothing" % (tag, rnd))
        if sent_bytes != sent * size:
            raise HarnessError("%s round %d: sender sent %d B in %d frames, not %d-byte frames"
                               % (tag, rnd, sent_bytes, sent, size))
        if got != sent or got_bytes != sent_bytes:
            raise HarnessError("%s round %d: receiver RX %d frames/%d B != sender TX %d/%d B; "
                               "vnetd counters: %s" % (tag, rnd, got, got_bytes, sent,
                                                       sent_bytes, vnetd.counters()))
        prev_sent = sent

    checks = [("vhu0", "rx_packets", sent), ("vhu0", "rx_bytes", sent_bytes),
              ("vhu1", "tx_packets", got), ("vhu1", "tx_bytes", got_bytes)]
    for port, key, expected in checks:
        got = wait_counter(vnetd, before, port, key, expected)
        if got != expected:
            raise HarnessError("%s: vnetd %s.%s grew by %d, expected %d; counters: %s"
                               % (tag, port, key, got, expected, vnetd.counters()))
    after = vnetd.counters()
    dropped = {"%s.%s" % (port, reason): n - before[port].get("drops", {}).get(reason, 0)
               for port in ("vhu0", "vhu1")
               for reason, n in after[port].get("drops", {}).items()}
    dropped = {k: v for k, v in dropped.items() if v}
    if dropped:
        raise HarnessError("%s: vnetd counted drops during the exact rounds: %s" % (tag, dropped))
    log("%s: vnetd counters agree: %s" % (tag, after))

    sender.quit()
    receiver.quit()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("%s: vnetd exited with status %s on SIGTERM" % (tag, rc))


def body(s, args):
    hugepages.ensure_hugepages()
    for mrg in (0, 1):
        run_variant(s, mrg)
    run_variant(s, 1, size=1500)
    run_variant(s, 1, in_order=0)


if __name__ == "__main__":
    run_test("dpdk_interop", body, dpdk_prerequisites())
