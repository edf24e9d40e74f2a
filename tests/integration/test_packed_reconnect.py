#!/usr/bin/env python3
"""A packed ring's state survives GET/SET_VRING_BASE and a reconnect (vhost-user
"VHOST_USER_GET_VRING_BASE" / "VHOST_USER_SET_VRING_BASE": for packed rings bits 0-14
are the next descriptor position and bit 15 the driver ring wrap counter; bits 16-31
the same for the used side).

Two front ends written here (vnet_harness/vhost_user.py for the protocol, packed rings
written by hand into each one's memfd, virtio 1.2 section 2.8), both negotiating
VIRTIO_F_VERSION_1 | VIRTIO_F_RING_PACKED with 8-entry rings: `a` sends broadcast frames
on its TX ring, `b` receives them on its RX ring (vnetd floods them a -> b).
  1. 13 frames from a (the TX ring wraps once): each one is used by vnetd at the
     position it was made available with AVAIL = USED = the lap's wrap counter, and
     arrives whole at b (b reposts its buffers as a packed driver does, wrapping too).
  2. GET_VRING_BASE on a's TX ring answers 0x00050005 (position 5, wrap counter 0, for the
     avail side in bits 0-15 and the used side in bits 16-31, as QEMU reads it).
  3. SET_VRING_BASE with that value and a new kick: 6 more frames go through, and
     GET_VRING_BASE answers 0x80038003 (position 3, wrap counter 1 again after the second lap).
  4. a disconnects; a new connection over the same guest memory sets the ring up at
     base 0x80038003: 7 more frames go through (the ring keeps wrapping) and arrive whole.
  vnetd's rx_packets on a's port and tx_packets on b's equal the frames sent, with no
  bad chains and no drops; vnetd exits with status 0.
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, run_test  # noqa: E402
from vnet_harness import vhost_user as vu  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd, require_vnetd  # noqa: E402

F_RING_PACKED = 1 << 34
F_AVAIL, F_USED = 1 << 7, 1 << 15
SIZE = 8
TX_RING, RX_RING = 1, 0
RING_BASE = {TX_RING: 0x0, RX_RING: 0x40000}  # desc at +DESC, driver area +AVAIL, device +USED
BUF_LEN = 2048
FRAME_LEN = 100


def avail_flags(wrap):
    return F_AVAIL if wrap else F_USED


class PackedRing:
    """The driver side of one packed ring in a GuestMemory (2.8.13, 2.8.20)."""

    def __init__(self, g, ring, next_avail=0, wrap=True):
        self.g, self.base = g, RING_BASE[ring]
        self.bufs = self.base + vu.BUFS
        self.next_avail, self.avail_wrap = next_avail, wrap
        self.next_used, self.used_wrap = next_avail, wrap

    def desc_at(self, pos):
        return self.base + vu.DESC + 16 * pos

    def post(self, data=None, writable=False):
        """One one-descriptor chain (id = its position), flags written last."""
        pos = self.next_avail
        buf = self.bufs + pos * BUF_LEN
        if data is not None:
            self.g.put(buf, data)
        length = BUF_LEN if writable else len(data)
        self.g.put(self.desc_at(pos), struct.pack("<QIH", buf, length, pos))
        flags = avail_flags(self.avail_wrap) | (vu.VRING_DESC_F_WRITE if writable else 0)
        self.g.put(self.desc_at(pos) + 14, struct.pack("<H", flags))
        self.next_avail += 1
        if self.next_avail == SIZE:
            self.next_avail, self.avail_wrap = 0, not self.avail_wrap

    def reap(self):
        """(id, len, buffer address) of the next used descriptor, or None."""
        addr, length, did, flags = struct.unpack_from("<QIHH", self.g.mem,
                                                      self.desc_at(self.next_used))
        avail, used = bool(flags & F_AVAIL), bool(flags & F_USED)
        if avail != self.used_wrap or used != self.used_wrap:
            return None
        if did != self.next_used:
            raise HarnessError("used descriptor at %d has id %d" % (self.next_used, did))
        buf = self.bufs + did * BUF_LEN
        self.next_used += 1
        if self.next_used == SIZE:
            self.next_used, self.used_wrap = 0, not self.used_wrap
        return did, length if flags & vu.VRING_DESC_F_WRITE else 0, buf


def frame(k):
    eth = b"\xff" * 6 + bytes([2, 0, 0, 0, 0xA, 1]) + b"\x08\x00"
    payload = bytes((k * 7 + i) & 0xFF for i in range(FRAME_LEN - len(eth)))
    return eth + payload


def setup(conn, g, base):
    """Features, memory, and both packed rings started at `base` (TX) / 0x8000 (RX)."""
    offered = struct.unpack("<Q", conn.call(vu.GET_FEATURES))[0]
    want = vu.F_VERSION_1 | F_RING_PACKED
    if offered & want != want:
        raise HarnessError("vnetd offers features %#x, without RING_PACKED" % offered)
    conn.u64(vu.SET_FEATURES, want)
    conn.send(vu.SET_OWNER)
    conn.mem_table([vu.region()], [g.fd])
    for ring, b in ((RX_RING, 0x8000), (TX_RING, base)):
        r = vu.UVA + RING_BASE[ring]
        conn.state(vu.SET_VRING_NUM, ring, SIZE)
        conn.state(vu.SET_VRING_BASE, ring, b)
        # SET_VRING_ADDR for a packed ring: descriptor ring, device area ("used"),
        # driver area ("avail").
        conn.addr(ring, r + vu.DESC, r + vu.USED, r + vu.AVAIL)
        conn.u64(vu.SET_VRING_CALL, ring, [conn.eventfd()])
        conn.u64(vu.SET_VRING_KICK, ring, [conn.eventfd()])
    conn.call(vu.GET_FEATURES)  # a round trip: all of the above handled


def get_base(conn, ring):
    body = conn.call(vu.GET_VRING_BASE, struct.pack("<II", ring, 0))
    index, num = struct.unpack("<II", body)
    if index != ring:
        raise HarnessError("GET_VRING_BASE answered ring %d for %d" % (index, ring))
    return num


class Sink:
    """b: keeps its RX ring full and checks every frame that arrives."""

    def __init__(self, g):
        self.rx = PackedRing(g, RX_RING)
        self.g = g
        self.got = []
        for _ in range(SIZE):
            self.rx.post(writable=True)

    def poll(self):
        while True:
            u = self.rx.reap()
            if u is None:
                return
            _, length, buf = u
            self.got.append(bytes(self.g.mem[buf + vu.HDR_LEN:buf + length]))
            self.rx.post(writable=True)


def send_frames(conn, tx, sink, first, n):
    """Frames first .. first+n-1 from a, one at a time, each used and delivered."""
    for k in range(first, first + n):
        pos, wrap = tx.next_avail, tx.avail_wrap
        tx.post(bytes(vu.HDR_LEN) + frame(k))
        os.eventfd_write(conn.fds[-1], 1)  # TX kick: the last eventfd set up
        wait_until(lambda: tx.reap() is not None, 5, interval=0.005,
                   what="frame %d used at position %d" % (k, pos))
        flags = tx.g.u16(tx.desc_at(pos) + 14)
        want = (F_AVAIL | F_USED) if wrap else 0
        if flags & (F_AVAIL | F_USED) != want:
            raise HarnessError("frame %d: used flags %#x at %d, lap wrap %d" % (k, flags, pos, wrap))

        def arrived():
            sink.poll()
            return len(sink.got) > k
        wait_until(arrived, 5, interval=0.005, what="frame %d at b" % k)
        if sink.got[k] != frame(k):
            raise HarnessError("frame %d arrived changed (%d bytes)" % (k, len(sink.got[k])))


def body(s, args):
    socks = [s.path("a.sock"), s.path("b.sock")]
    vnetd = Vnetd(s, [PortSpec(socks[0], name="a"), PortSpec(socks[1], name="b")])
    vnetd.start()
    ga, gb = vu.GuestMemory(), vu.GuestMemory()
    a, b = vu.Conn(socks[0]), vu.Conn(socks[1])
    try:
        setup(b, gb, 0x8000)
        sink = Sink(gb)
        setup(a, ga, 0x8000)
        vnetd.wait_connected(["a", "b"])
        for name in ("a", "b"):
            feats = vnetd.ports_info()[name].get("features", [])
            if not any(f.endswith("RING_PACKED") for f in feats):
                raise HarnessError("%s: RING_PACKED not negotiated: %s" % (name, feats))
        tx = PackedRing(ga, TX_RING)
        send_frames(a, tx, sink, 0, 13)
        base = get_base(a, TX_RING)
        log("after 13 frames: GET_VRING_BASE = %#x" % base)
        if base != 0x00050005:
            raise HarnessError("GET_VRING_BASE after 13 frames: %#x, expected 0x00050005" % base)

        a.state(vu.SET_VRING_BASE, TX_RING, base)
        a.u64(vu.SET_VRING_KICK, TX_RING, [a.eventfd()])
        a.call(vu.GET_FEATURES)
        send_frames(a, tx, sink, 13, 6)
        base = get_base(a, TX_RING)
        log("after 19 frames: GET_VRING_BASE = %#x" % base)
        if base != 0x80038003:
            raise HarnessError("GET_VRING_BASE after 19 frames: %#x, expected 0x80038003" % base)

        a.close()
        wait_until(lambda: not vnetd.ports_info()["a"]["connected"], 10, interval=0.02,
                   what="a's session gone")
        a = vu.Conn(socks[0])
        setup(a, ga, base)  # the same guest memory: the ring goes on where it was
        vnetd.wait_connected(["a"])
        send_frames(a, tx, sink, 19, 7)
        base = get_base(a, TX_RING)
        if base != 0x00020002:
            raise HarnessError("GET_VRING_BASE after 26 frames: %#x, expected 0x00020002" % base)

        total = 26
        c = vnetd.counters()
        info = vnetd.ports_info()
        log("counters: a %s, b %s" % (c["a"], c["b"]))
        if c["a"]["rx_packets"] != total or c["b"]["tx_packets"] != total:
            raise HarnessError("vnetd counted a.rx_packets %d, b.tx_packets %d, sent %d"
                               % (c["a"]["rx_packets"], c["b"]["tx_packets"], total))
        drops = {p: {k: v for k, v in c[p].get("drops", {}).items() if v} for p in ("a", "b")}
        if any(drops.values()):
            raise HarnessError("vnetd counted drops: %s" % drops)
        bad = {p: (info[p]["extra"]["tx_bad_chains"], info[p]["extra"]["rx_bad_chains"])
               for p in ("a", "b")}
        if any(x for v in bad.values() for x in v):
            raise HarnessError("bad chains counted: %s" % bad)
    finally:
        a.close()
        b.close()
        ga.close()
        gb.close()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)


if __name__ == "__main__":
    run_test("packed_reconnect", body, [require_vnetd])
