#!/usr/bin/env python3
"""Hostile front ends on packed rings (VIRTIO_F_RING_PACKED) against the real vnetd.

vnetd has a port `h` for the hostile front end and two ports a -> b whose front ends
(written here, test_packed_reconnect.py's packed rings) carry frames between cases.
Each case connects to h, negotiates VERSION_1 | RING_PACKED with 8-entry rings, and
does one bad thing (virtio 1.2 section 2.8): a chain longer than the ring; a chain
whose second descriptor carries the other lap's AVAIL/USED bits; a buffer id out of
range; a buffer outside guest memory; an INDIRECT descriptor without the feature; an
event suppression area outside memory or misaligned (SET_VRING_ADDR).
After every case: the ring cases stop the queue (h's queue_broken drop counter) or give
the chain back empty (h's tx_bad_chains, and a used descriptor with AVAIL = USED = 1 at
position 0 in h's memory); the address cases end the session; vnetd is alive and still
forwards a frame from a to b whole.
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, run_test  # noqa: E402
from vnet_harness import vhost_user as vu  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd, require_vnetd  # noqa: E402
from test_packed_reconnect import (F_AVAIL, F_RING_PACKED, F_USED, RING_BASE, SIZE,  # noqa: E402
                                   TX_RING, PackedRing, Sink, avail_flags, send_frames, setup)

NEXT, INDIRECT = vu.VRING_DESC_F_NEXT, vu.VRING_DESC_F_INDIRECT


def put(g, pos, addr, length, did, flags, wrap=True):
    d = RING_BASE[TX_RING] + vu.DESC + 16 * pos
    g.put(d, struct.pack("<QIH", addr & (2**64 - 1), length, did))
    g.put(d + 14, struct.pack("<H", flags | avail_flags(wrap)))


def frame_at(g, off=0):
    data = bytes(vu.HDR_LEN) + b"\xff" * 6 + bytes.fromhex("020000000d01") + b"\x88\xb5" + bytes(50)
    g.put(vu.BUFS + off, data)
    return vu.BUFS + off, len(data)


def too_long(g):
    for i in range(SIZE):
        put(g, i, vu.BUFS, 16, 0, NEXT)


def other_lap(g):
    addr, n = frame_at(g)
    put(g, 1, addr, n, 0, 0, wrap=False)
    put(g, 0, addr, n, 0, NEXT)


def id_out_of_range(g):
    addr, n = frame_at(g)
    put(g, 0, addr, n, SIZE, 0)


def outside_memory(g):
    put(g, 0, 2 * vu.MEM_SIZE, 64, 3, 0)


def indirect_not_negotiated(g):
    addr, _ = frame_at(g)
    put(g, 0, addr, 16, 2, INDIRECT)


def bad_address(driver_off=None, device_off=None):
    def case(c, g):
        offered = struct.unpack("<Q", c.call(vu.GET_FEATURES))[0]
        c.u64(vu.SET_FEATURES, offered & (vu.F_VERSION_1 | F_RING_PACKED))
        c.send(vu.SET_OWNER)
        c.mem_table([vu.region()], [g.fd])
        r = vu.UVA + RING_BASE[TX_RING]
        c.state(vu.SET_VRING_NUM, TX_RING, SIZE)
        c.state(vu.SET_VRING_BASE, TX_RING, 0x8000)
        c.addr(TX_RING, r + vu.DESC, device_off if device_off is not None else r + vu.USED,
               driver_off if driver_off is not None else r + vu.AVAIL)
        c.u64(vu.SET_VRING_KICK, TX_RING, [c.eventfd()])
    return case


def ring_case(write):
    def case(c, g):
        setup(c, g, 0x8000)
        write(g)
        os.eventfd_write(c.fds[-1], 1)
    return case


CASES = [
    ("chain longer than the ring", ring_case(too_long), "broken"),
    ("chained descriptor of the other lap", ring_case(other_lap), "broken"),
    ("buffer id out of range", ring_case(id_out_of_range), "bad_chain"),
    ("buffer outside memory", ring_case(outside_memory), "bad_chain"),
    ("indirect without the feature", ring_case(indirect_not_negotiated), "bad_chain"),
    ("driver event area outside memory", bad_address(driver_off=vu.UVA + 2 * vu.MEM_SIZE),
     "closed"),
    ("device event area misaligned", bad_address(device_off=vu.UVA + vu.USED + 2), "closed"),
]


def body(s, args):
    socks = {p: s.path("%s.sock" % p) for p in ("h", "a", "b")}
    vnetd = Vnetd(s, [PortSpec(socks[p], name=p) for p in ("h", "a", "b")])
    vnetd.start()
    ga, gb = vu.GuestMemory(), vu.GuestMemory()
    a, b = vu.Conn(socks["a"]), vu.Conn(socks["b"])
    try:
        setup(b, gb, 0x8000)
        sink = Sink(gb)
        setup(a, ga, 0x8000)
        vnetd.wait_connected(["a", "b"])
        tx = PackedRing(ga, TX_RING)
        sent = 0
        for name, fn, expect in CASES:
            info0 = vnetd.ports_info()["h"]
            drops0 = vnetd.counters()["h"]["drops"]
            g = vu.GuestMemory()
            c = vu.Conn(socks["h"])
            try:
                fn(c, g)
                raised = None
            except (vu.Closed, BrokenPipeError, ConnectionResetError) as e:
                raised = e
            if expect == "closed":
                if raised is None and not c.closed_by_peer(5.0):
                    raise HarnessError("case '%s': vnetd did not close the session" % name)
            elif expect == "broken":
                wait_until(lambda: vnetd.counters()["h"]["drops"]["queue_broken"]
                           > drops0["queue_broken"], 5, interval=0.02,
                           what="case '%s': h's queue_broken counter" % name)
            else:
                wait_until(lambda: vnetd.ports_info()["h"]["extra"]["tx_bad_chains"]
                           > info0["extra"]["tx_bad_chains"], 5, interval=0.02,
                           what="case '%s': h's tx_bad_chains counter" % name)
                flags = g.u16(RING_BASE[TX_RING] + vu.DESC + 14)
                if flags & (F_AVAIL | F_USED) != F_AVAIL | F_USED:
                    raise HarnessError("case '%s': position 0 flags %#x, not used" % (name, flags))
            c.close()
            g.close()
            wait_until(lambda: not vnetd.ports_info()["h"]["connected"], 10, interval=0.02,
                       what="case '%s': the session gone" % name)
            vnetd.check_alive()
            send_frames(a, tx, sink, sent, 1)
            sent += 1
            log("case '%s': %s as expected; a -> b still forwards" % (name, expect))
    finally:
        a.close()
        b.close()
        ga.close()
        gb.close()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)


if __name__ == "__main__":
    run_test("hostile_packed", body, [require_vnetd])
