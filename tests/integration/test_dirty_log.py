#!/usr/bin/env python3
"""Live migration support against the real vnetd: the dirty page log (vhost-user
LOG_SHMFD, SET_LOG_BASE, VHOST_F_LOG_ALL, SET_VRING_ADDR's VHOST_VRING_F_LOG) and
SEND_RARP, spoken by raw Python front ends (vnet_harness/vhost_user.py) whose rings and
buffers are laid out by hand, so that every page vnetd marks can be named.

vnetd has ports a, b and h.  Front end A (port a) has its guest memory at guest physical
0x300000 (not 0, so a mark at an offset instead of an address is caught), its receive
buffers placed across page boundaries and, half of them, chained in three descriptors
of which a short frame fills only the first two; B (port b) sends it frames.
1. GET_FEATURES offers VHOST_F_LOG_ALL (26) and GUEST_ANNOUNCE (21),
   GET_PROTOCOL_FEATURES LOG_SHMFD (1) and RARP (2).
2. A turns logging on under running rings (SET_LOG_BASE with a memfd, answered by an
   empty reply; SET_FEATURES with LOG_ALL; SET_VRING_ADDR of ring 0 with F_LOG): after B's
   frames the bitmap holds exactly the pages of the bytes vnetd wrote into A's buffers
   (by used length), A's RX used ring (both of its pages) and A's TX used ring (found by
   translation, ring 1 has no F_LOG), nothing else: not the unwritten rest of a buffer,
   not A's TX buffer (A sends a frame too), nothing outside the log's range of its memfd.
   `vnetctl ports`: dirty_logging 1 on a, 0 on b, dirty_log_beyond 0.
3. SET_FEATURES without LOG_ALL: frames both ways leave the (cleared) bitmap empty,
   dirty_logging 0.
4. LOG_ALL on again and a second SET_LOG_BASE while B streams frames: marks before it in
   the first log, after it only in the second (the first, cleared at the reply, stays
   empty), the second (a memfd sealed as QEMU seals its log) holds every frame published
   after the reply.
5. RARP: SEND_RARP with a MAC: B receives a 60-byte broadcast RARP from it (ethertype
   0x8035, opcode 3) and `vnetctl fdb` has the MAC on port a.
6. Hostile SET_LOG_BASE on port h (size past the memfd's end, offset + size past it, size
   0, over 1 GiB, 2^64 - 4 KiB, offset + size wrapping past 2^64, an eventfd, a pipe, no
   fd, LOG_SHMFD not negotiated, no protocol features at all): no reply, vnetd closes the
   session with a warning (or counts it as withheld by the rate limit), stays up, B -> A
   still forwarded; 3 rounds, vnetd's fd count after each the same as before.  Before
   them (6b) a log memfd truncated to 0 while B's frames flow into h: vnetd survives,
   B -> A forwarded, fd count back.  And (2b) MRG_RXBUF on h: frames across several
   500-byte buffers, the last partly written: exactly the written pages marked.
7. vnetd started with VNET_TEST_SKIP_DIRTY_LOG=1 (the test knob): ring pages marked,
   buffer pages not; ring 0's F_LOG points at a page other than its used ring, and that
   page is marked instead of the used ring's.
8. SEND_RARP with a multicast and a zero MAC: refused with a warning, no frame, A's
   session goes on.
Each check fails against a vnetd that gets its part wrong (checked with mutated builds:
whole chains marked, buffers unmarked on either RX path, log_guest_addr ignored, marks
after LOG_ALL off, the old log kept, the TX used ring not translated, a bad RARP opcode,
no size limit, no LOG_SHMFD check, an fd leaked per SET_LOG_BASE); with
VNET_TEST_SKIP_DIRTY_LOG=1 exported to the whole test, check 2 fails.
"""

import fcntl
import mmap
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness import vhost_user as vu  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd, require_vnetd  # noqa: E402

PAGE = 4096
MAC_A, MAC_B, MAC_H = "02:00:00:00:0a:01", "02:00:00:00:0b:01", "02:00:00:00:0e:01"
MAC_RARP = "02:00:00:00:0a:77"  # announced for A (not A's own source MAC)

# A's guest memory: [G, G + A_MEM), one region, front-end address vu.UVA at G.
G = 0x300000
A_MEM = 4 << 20
LOG_SIZE = ((G + A_MEM) // PAGE + 7) // 8  # one bit per page up to A's last page
LOG_OFF = PAGE  # the log at a page offset of its memfd, with a page after it:
LOG_FILE = LOG_OFF + 2 * PAGE  # bytes outside [LOG_OFF, LOG_OFF + LOG_SIZE) stay 0
# A's layout, offsets from G.  Ring 0 (receiveq) 512 entries, its used ring crossing a page.
RX_DESC, RX_AVAIL, RX_USED, RX_SIZE = 0x0000, 0x2000, 0x2F00, 512
TX_DESC, TX_AVAIL, TX_USED, TX_SIZE = 0x5000, 0x6000, 0x7000, 256
LOG_ELSEWHERE = 0x9F00  # check 7: ring 0's log_guest_addr, pages 0x9 and 0xA
TX_BUF = 0xCFF0  # A's transmitted frame, across pages 0xC and 0xD
SLOTS_AT, SLOT_SIZE, SLOTS = 0x10000, 0x5000, 160  # receive buffers, 5 pages a slot
FEATURES_A = vu.F_VERSION_1 | vu.F_PROTOCOL_FEATURES
PROTO_A = vu.PROTO_LOG_SHMFD | vu.PROTO_RARP
GIB = 1 << 30


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def mac_str(b):
    return ":".join("%02x" % x for x in b)


def frame(dst, src, n=64, tag=0):
    """virtio_net_hdr_v1 (12 zero bytes) + an Ethernet frame of n bytes."""
    eth = mac_bytes(dst) + mac_bytes(src) + b"\x88\xb5" + struct.pack("<I", tag)
    return bytes(vu.HDR_LEN) + eth + bytes(n - len(eth))


def u64(b):
    return struct.unpack("<Q", b)[0]


def pages_of(gpa, length):
    if length <= 0:
        return set()
    return set(range(gpa // PAGE, (gpa + length - 1) // PAGE + 1))


def used_ring_pages(base, size):
    return pages_of(base, 4 + 8 * size)  # no EVENT_IDX negotiated: no avail_event


def sleep_until(cond, timeout, interval=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


# ---- the dirty log: a memfd the front end shares ---------------------------------------

class DirtyLog:
    def __init__(self, size=LOG_SIZE, offset=LOG_OFF, file_size=LOG_FILE, sealed=False):
        """sealed: as QEMU makes it (memfd sealed against growing, shrinking, more seals)."""
        self.size, self.offset = size, offset
        self.fd = os.memfd_create("vnet-dirty-log", os.MFD_ALLOW_SEALING if sealed else 0)
        os.ftruncate(self.fd, file_size)
        if sealed:
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        self.map = mmap.mmap(self.fd, file_size)

    def pages(self):
        bits = self.map[self.offset:self.offset + self.size]
        out = set()
        for i, byte in enumerate(bits):
            if byte:
                out.update(8 * i + b for b in range(8) if byte >> b & 1)
        return out

    def outside(self):
        """Bytes outside the log's window that are not zero (offset, value)."""
        data = self.map[:]
        return [(i, v) for i, v in enumerate(data)
                if v and not self.offset <= i < self.offset + self.size][:8]

    def clear(self):
        self.map[self.offset:self.offset + self.size] = bytes(self.size)

    def close(self):
        try:
            self.map.close()
        except (ValueError, BufferError):
            pass
        os.close(self.fd)


# ---- front end A: guest memory at G, rings and buffers at known guest addresses -------

class FrontA:
    def __init__(self, path, name="A", mergeable=False):
        self.name = name
        self.mergeable = mergeable
        self.fd = os.memfd_create("vnet-dirty-a", 0)
        os.ftruncate(self.fd, A_MEM)
        self.mem = mmap.mmap(self.fd, A_MEM)
        self.c = vu.Conn(path)
        self.rx_avail = 0
        self.rx_seen = 0
        self.tx_avail = 0
        self.elems = []  # every (head, len) A's RX used ring gave, in order
        self.features = 0

    def close(self):
        self.c.close()
        self.mem.close()
        os.close(self.fd)

    def put(self, gpa, data):
        o = gpa - G
        self.mem[o:o + len(data)] = data

    def get(self, gpa, n):
        o = gpa - G
        return bytes(self.mem[o:o + n])

    def u16(self, gpa):
        return struct.unpack("<H", self.get(gpa, 2))[0]

    @staticmethod
    def uva(gpa):
        return vu.UVA + gpa - G

    # -- session
    def handshake(self, features=FEATURES_A, proto=PROTO_A):
        """GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, SET_FEATURES, the memory
        table; returns what vnetd offered (features, protocol features)."""
        c = self.c
        offered = u64(c.call(vu.GET_FEATURES))
        offered_proto = u64(c.call(vu.GET_PROTOCOL_FEATURES))
        c.u64(vu.SET_PROTOCOL_FEATURES, offered_proto & proto)
        c.send(vu.SET_OWNER)
        self.set_features(offered & features)
        c.mem_table([vu.region(gpa=G, size=A_MEM, uva=vu.UVA)], [self.fd])
        return offered, offered_proto

    def set_features(self, features):
        self.c.u64(vu.SET_FEATURES, features)
        self.features = features

    def set_log(self, dlog):
        """SET_LOG_BASE; vnetd must answer with an empty reply."""
        self.c.log_base(dlog.size, dlog.offset, [dlog.fd])
        flags, body = self.c.reply_with_flags(vu.SET_LOG_BASE)
        if not flags & vu.REPLY_FLAG or body:
            raise HarnessError("%s: SET_LOG_BASE answered with flags %#x and %d payload bytes; "
                               "expected the reply flag and none" % (self.name, flags, len(body)))

    def ring0_addr(self, log_at=None):
        """SET_VRING_ADDR of ring 0, with F_LOG and log_guest_addr `log_at` when given."""
        flags = vu.VRING_F_LOG if log_at is not None else 0
        self.c.addr(0, self.uva(G + RX_DESC), self.uva(G + RX_USED), self.uva(G + RX_AVAIL),
                    flags=flags, log=log_at or 0)

    def start_rings(self, log_at=None):
        c = self.c
        for i, (desc, avail, used, size) in enumerate(((RX_DESC, RX_AVAIL, RX_USED, RX_SIZE),
                                                       (TX_DESC, TX_AVAIL, TX_USED, TX_SIZE))):
            c.state(vu.SET_VRING_NUM, i, size)
            c.state(vu.SET_VRING_BASE, i, 0)
            if i == 0:
                self.ring0_addr(log_at)
            else:
                c.addr(1, self.uva(G + desc), self.uva(G + used), self.uva(G + avail))
            c.u64(vu.SET_VRING_CALL, i, [c.eventfd()])  # fds[2i]: call, fds[2i+1]: kick
            c.u64(vu.SET_VRING_KICK, i, [c.eventfd()])
        for i in (0, 1):
            c.state(vu.SET_VRING_ENABLE, i, 1)
        self.sync()
        for k in range(SLOTS):
            self.post(k)
        self.publish_rx()

    def sync(self):
        """A round trip: vnetd has handled every message before it."""
        self.c.call(vu.GET_FEATURES)

    # -- receive buffers
    def chain(self, k):
        """Slot k's chain: [(gpa, len)], writable. Even: one 5000-byte buffer from 40
        bytes before the end of the slot's first page (3 pages; a frame fills the first
        two at most). Odd: 20 bytes across the first two pages, 4 KiB across pages 2-3,
        2 KiB in page 4 (a frame under 1492 bytes leaves pages 3 and 4 alone).
        Mergeable (MRG_RXBUF): 500-byte chains, 200 bytes across pages 0-1 and 300 across
        pages 2-3, so that a frame spans several and the last is partly written."""
        s = G + SLOTS_AT + k * SLOT_SIZE
        if self.mergeable:
            return [(s + PAGE - 100, 200), (s + 3 * PAGE - 50, 300)]
        if k % 2 == 0:
            return [(s + PAGE - 40, 5000)]
        return [(s + PAGE - 10, 20), (s + 3 * PAGE - 0x100, PAGE), (s + 4 * PAGE, 0x800)]

    def post(self, k):
        head = 3 * k
        ch = self.chain(k)
        for j, (gpa, ln) in enumerate(ch):
            more = j + 1 < len(ch)
            flags = vu.VRING_DESC_F_WRITE | (vu.VRING_DESC_F_NEXT if more else 0)
            self.put(G + RX_DESC + 16 * (head + j),
                     struct.pack("<QIHH", gpa, ln, flags, head + j + 1 if more else 0))
        self.put(G + RX_AVAIL + 4 + 2 * (self.rx_avail % RX_SIZE), struct.pack("<H", head))
        self.rx_avail += 1

    def publish_rx(self):
        self.put(G + RX_AVAIL + 2, struct.pack("<H", self.rx_avail & 0xFFFF))
        self.c.kick(0)

    def rx_used(self):
        return self.u16(G + RX_USED + 2)

    def take(self):
        """New used elements of ring 0 (appended to self.elems); their slots reposted."""
        new = []
        idx = self.rx_used()
        while (self.rx_seen & 0xFFFF) != idx:
            at = G + RX_USED + 4 + 8 * (self.rx_seen % RX_SIZE)
            head, ln = struct.unpack("<II", self.get(at, 8))
            new.append((head, ln))
            self.rx_seen += 1
        self.elems += new
        return new

    def received(self):
        """take(), then how many elements ring 0 gave in all."""
        self.take()
        return self.rx_seen

    def repost(self, elems):
        for head, _ in elems:
            self.post(head // 3)
        if elems:
            self.publish_rx()

    def written_pages(self, elems):
        """Pages of the first `len` bytes of each element's chain."""
        out = set()
        for head, ln in elems:
            if head % 3 or head // 3 >= SLOTS:
                raise HarnessError("A's RX used ring names head %d, not one it posted" % head)
            for gpa, blen in self.chain(head // 3):
                k = min(ln, blen)
                out |= pages_of(gpa, k)
                ln -= k
                if ln <= 0:
                    break
            if ln > 0:
                raise HarnessError("a used length past the end of chain %d" % head)
        return out

    # -- transmit
    def send(self, data, at=G + TX_BUF):
        """One frame on ring 1 from `at` (A's TX buffer across two pages); waits for it."""
        self.put(at, data)
        i = self.tx_avail
        self.put(G + TX_DESC + 16 * (i % TX_SIZE), struct.pack("<QIHH", at, len(data), 0, 0))
        self.put(G + TX_AVAIL + 4 + 2 * (i % TX_SIZE), struct.pack("<H", i % TX_SIZE))
        self.tx_avail = i + 1
        self.put(G + TX_AVAIL + 2, struct.pack("<H", self.tx_avail & 0xFFFF))
        self.c.kick(1)
        wait_until(lambda: self.u16(G + TX_USED + 2) == self.tx_avail & 0xFFFF, 5,
                   interval=0.002, what="%s: its frame sent (TX used index)" % self.name)

    def rarp(self, mac):
        self.c.send(vu.SEND_RARP, mac_bytes(mac) + b"\0\0")


def describe(page):
    """What A's page `page` holds (for failure messages)."""
    off = page * PAGE - G
    if off < 0 or off >= A_MEM:
        return "page %#x: outside A's memory" % page
    names = [("RX descriptors", RX_DESC, 16 * RX_SIZE), ("RX avail", RX_AVAIL, 4 + 2 * RX_SIZE),
             ("RX used ring", RX_USED, 4 + 8 * RX_SIZE), ("TX descriptors", TX_DESC, 16 * TX_SIZE),
             ("TX avail", TX_AVAIL, 4 + 2 * TX_SIZE), ("TX used ring", TX_USED, 4 + 8 * TX_SIZE),
             ("F_LOG elsewhere", LOG_ELSEWHERE, 4 + 8 * RX_SIZE), ("A's TX buffer", TX_BUF, 76)]
    hits = [name for name, o, n in names if page in pages_of(G + o, n)]
    if hits:
        return "page %#x: %s" % (page, " + ".join(hits))
    if off >= SLOTS_AT:
        k, p = divmod(off - SLOTS_AT, SLOT_SIZE)
        return "page %#x: RX slot %d (%s) page %d" % (page, k, "even" if k % 2 == 0 else "odd",
                                                     p // PAGE)
    return "page %#x: A's memory +%#x" % (page, off)


RX_RING_PAGES = used_ring_pages(G + RX_USED, RX_SIZE)
TX_RING_PAGES = used_ring_pages(G + TX_USED, TX_SIZE)
TX_BUF_PAGES = pages_of(G + TX_BUF, vu.HDR_LEN + 64)


def check_exact(what, dlog, required, allowed=frozenset(), forbidden=frozenset()):
    """dlog's pages: every `required` one, others only from `allowed`; never `forbidden`
    or a byte outside the log's window.  Marks are made after the writes they cover and
    the used ring's after the index store: wait for them, then look again for late ones."""
    sleep_until(lambda: required <= dlog.pages(), 2.0)
    time.sleep(0.05)
    got = dlog.pages()
    missing = required - got
    extra = got - required - (allowed - forbidden)
    problems = []
    if missing:
        problems.append("not marked: " + "; ".join(describe(p) for p in sorted(missing)))
    if extra:
        problems.append("marked but not written by vnetd: "
                        + "; ".join(describe(p) for p in sorted(extra)))
    out = dlog.outside()
    if out:
        problems.append("bytes outside the log's window changed: %s" % out)
    if problems:
        raise HarnessError("%s: %s" % (what, " | ".join(problems)))
    log("  %s: %d pages marked, as expected" % (what, len(got)))
    return got


# ---- front end B: the harness's usual layout (setup()), gpa 0 -------------------------

class FrontB:
    RX_DESC, RX_AVAIL, RX_USED = 0x40000, 0x44000, 0x48000  # setup()'s ring 0
    RX_BUFS, RX_N, TX_N = 0x50000, 64, 64

    def __init__(self, path):
        self.g = vu.GuestMemory()
        self.c = vu.Conn(path)
        self.c.setup(self.g)
        self.tx = 0
        self.rx_avail = 0
        self.rx_seen = 0
        self.lock = threading.Lock()
        for _ in range(self.RX_N):
            self.post_rx()
        self.publish_rx()

    def close(self):
        self.c.close()
        self.g.close()

    def post_rx(self):
        i = self.rx_avail % self.RX_N
        self.g.put(self.RX_DESC + 16 * i, struct.pack("<QIHH", self.RX_BUFS + 2048 * i, 2048,
                                                      vu.VRING_DESC_F_WRITE, 0))
        self.g.put(self.RX_AVAIL + 4 + 2 * (self.rx_avail % 256), struct.pack("<H", i))
        self.rx_avail += 1

    def publish_rx(self):
        self.g.put(self.RX_AVAIL + 2, struct.pack("<H", self.rx_avail & 0xFFFF))
        self.c.kick(0)

    def received(self):
        """Frames received since the last call (virtio-net header stripped)."""
        out = []
        idx = self.g.u16(self.RX_USED + 2)
        while (self.rx_seen & 0xFFFF) != idx:
            head, ln = struct.unpack_from("<II", self.g.mem,
                                          self.RX_USED + 4 + 8 * (self.rx_seen % 256))
            at = self.RX_BUFS + 2048 * head
            out.append((ln, bytes(self.g.mem[at + vu.HDR_LEN:at + ln])))
            self.rx_seen += 1
            self.post_rx()
        if out:
            self.publish_rx()
        return out

    def send(self, data):
        with self.lock:
            i = self.tx
            # The buffer of frame i - TX_N is reused: wait for it to be completed.
            wait_until(lambda: (self.tx - self.g.used_idx()) & 0xFFFF < self.TX_N, 5,
                       interval=0.001, what="B's TX ring draining")
            at = vu.BUFS + 2048 * (i % self.TX_N)
            self.g.put(at, data)
            self.g.desc(i % 256, at, len(data))
            self.g.avail(i, i % 256, 256)
            self.g.avail_idx(i + 1)
            self.tx = i + 1
            self.c.kick(1)

    def stream(self, n, dst, interval, sizes=(64,)):
        """n frames to `dst` from a thread, one every `interval` s; returns the thread."""
        def run():
            for i in range(n):
                self.send(frame(dst, MAC_B, sizes[i % len(sizes)], tag=i))
                time.sleep(interval)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


SIZES = (60, 64, 200, 1000, 1514, 128, 1400, 72)  # frame lengths B sends (no header)


def deliver(a, b, n, what, dst=MAC_A):
    """B sends n frames to dst, A must receive every one; returns A's new used elements."""
    target = a.rx_seen + n
    for i in range(n):
        b.send(frame(dst, MAC_B, SIZES[i % len(SIZES)], tag=i))
    new = []
    deadline = time.monotonic() + 5
    while len(new) < n and time.monotonic() < deadline:
        new += a.take()
        time.sleep(0.002)
    if a.rx_seen < target:
        raise HarnessError("%s: A received %d of B's %d frames" % (what, len(new), n))
    return new


def port_extra(vnetd, name):
    return vnetd.ports_info()[name].get("extra", {})


def expect_logging(vnetd, name, want):
    e = port_extra(vnetd, name)
    if "dirty_logging" not in e or "dirty_log_beyond" not in e:
        raise HarnessError("vnetctl ports: port %s has no dirty_logging/dirty_log_beyond: %s"
                           % (name, sorted(e)))
    if e["dirty_logging"] != want:
        raise HarnessError("vnetctl ports: port %s dirty_logging %s, expected %d"
                           % (name, e["dirty_logging"], want))
    return e


# ---- checks -------------------------------------------------------------------------

def check_offered(a):
    offered, proto = a.handshake()
    bits = [("GET_FEATURES", offered, 26, "VHOST_F_LOG_ALL"),
            ("GET_FEATURES", offered, 21, "VIRTIO_NET_F_GUEST_ANNOUNCE"),
            ("GET_PROTOCOL_FEATURES", proto, 1, "LOG_SHMFD"),
            ("GET_PROTOCOL_FEATURES", proto, 2, "RARP")]
    for req, value, b, name in bits:
        if not value >> b & 1:
            raise HarnessError("%s = %#x lacks bit %d (%s)" % (req, value, b, name))
    log("1. offered: features %#x (LOG_ALL, GUEST_ANNOUNCE), protocol features %#x (LOG_SHMFD, "
        "RARP)" % (offered, proto))


def check_marks(vnetd, a, b):
    """2: logging turned on under running rings; exactly the written pages marked."""
    before = deliver(a, b, 2, "before logging")
    a.repost(before)
    dlog = DirtyLog()
    a.set_log(dlog)
    a.set_features(a.features | vu.F_LOG_ALL)
    a.ring0_addr(log_at=G + RX_USED)  # ring 1 without F_LOG: found by translation
    a.sync()
    e = expect_logging(vnetd, "a", 1)
    if e["dirty_log_beyond"] != 0:
        raise HarnessError("dirty_log_beyond %s with a log covering all of A's memory"
                           % e["dirty_log_beyond"])
    expect_logging(vnetd, "b", 0)
    check_exact("2. logging on, no frame yet", dlog, set(), RX_RING_PAGES | TX_RING_PAGES)
    elems = deliver(a, b, 24, "logged frames")
    bufs = a.written_pages(elems)
    # Every frame size leaves slot pages unwritten (even: page 2, odd: pages 3/4 for < 1492).
    unwritten = set()
    for head, _ in elems:
        s = (G + SLOTS_AT + (head // 3) * SLOT_SIZE) // PAGE
        unwritten |= set(range(s, s + 5))
    unwritten -= bufs
    if not unwritten:
        raise HarnessError("test layout: every page of the used slots written")
    check_exact("2. %d frames B -> A" % len(elems), dlog, bufs | RX_RING_PAGES,
                allowed=TX_RING_PAGES, forbidden=unwritten | TX_BUF_PAGES)
    b0 = b.rx_seen
    a.send(frame(MAC_B, MAC_A))  # A's TX buffer across pages 0xC/0xD: read, never marked
    wait_until(lambda: b.received() or b.rx_seen > b0, 5, what="A's frame at B")
    got = check_exact("2. A transmitted", dlog, bufs | RX_RING_PAGES | TX_RING_PAGES,
                      forbidden=unwritten | TX_BUF_PAGES)
    a.repost(elems)
    log("2. marks exact: %d buffer pages of %d frames (%d pages of the same slots unwritten "
        "and unmarked), RX used ring %s, TX used ring %s, A's TX buffer %s unmarked"
        % (len(bufs), len(elems), len(unwritten), sorted(hex(p) for p in RX_RING_PAGES),
           sorted(hex(p) for p in TX_RING_PAGES), sorted(hex(p) for p in TX_BUF_PAGES)))
    return dlog, got


def check_mergeable(vnetd, b, sock_h):
    """2b: MRG_RXBUF on port h: frames across several 500-byte chains, the last of each
    partly written; exactly the written pages marked."""
    d0 = port_extra(vnetd, "h").get("disconnects", 0)
    m = FrontA(sock_h, name="M (MRG_RXBUF)", mergeable=True)
    dlog = DirtyLog()
    try:
        m.handshake(features=FEATURES_A | vu.F_MRG_RXBUF | vu.F_LOG_ALL)
        m.set_log(dlog)
        m.start_rings(log_at=G + RX_USED)
        expect_logging(vnetd, "h", 1)
        m.send(frame(MAC_B, MAC_H))  # h's MAC learned: B's frames go to h only
        want = sum(vu.HDR_LEN + n for n in SIZES)
        for i, n in enumerate(SIZES):
            b.send(frame(MAC_H, MAC_B, n, tag=i))
        wait_until(lambda: m.take() is not None and sum(ln for _, ln in m.elems) >= want, 5,
                   interval=0.002, what="2b. B's %d frames (%d bytes) at M" % (len(SIZES), want))
        got = sum(ln for _, ln in m.elems)
        if got != want:
            raise HarnessError("2b. M's used lengths add up to %d bytes, %d sent" % (got, want))
        bufs = m.written_pages(m.elems)
        unwritten = set()
        for head, _ in m.elems:
            for gpa, ln in m.chain(head // 3):
                unwritten |= pages_of(gpa, ln)
        unwritten -= bufs
        if not unwritten:
            raise HarnessError("2b. test layout: no chain was left partly written")
        check_exact("2b. MRG_RXBUF: %d frames in %d chains" % (len(SIZES), len(m.elems)), dlog,
                    bufs | RX_RING_PAGES | TX_RING_PAGES, forbidden=unwritten | TX_BUF_PAGES)
        log("2b. MRG_RXBUF: %d frames in %d buffers, %d pages marked, %d pages of partly "
            "written chains not" % (len(SIZES), len(m.elems), len(bufs), len(unwritten)))
    finally:
        m.close()
        dlog.close()
    wait_until(lambda: port_extra(vnetd, "h").get("disconnects", 0) > d0, 5, interval=0.02,
               what="2b. M's session gone")


def check_off(vnetd, a, b, dlog):
    """3: SET_FEATURES without LOG_ALL: no marks at all."""
    a.set_features(a.features & ~vu.F_LOG_ALL)
    a.sync()
    expect_logging(vnetd, "a", 0)
    dlog.clear()
    elems = deliver(a, b, 12, "LOG_ALL off")
    a.send(frame(MAC_B, MAC_A))
    time.sleep(0.2)
    got = dlog.pages()
    if got:
        raise HarnessError("3. LOG_ALL off, yet %d pages marked after %d frames: %s"
                           % (len(got), len(elems), "; ".join(describe(p) for p in sorted(got))))
    a.repost(elems)
    log("3. LOG_ALL off: %d frames each way left the bitmap empty" % len(elems))


def check_replace(vnetd, a, b, old):
    """4: a second SET_LOG_BASE while frames flow."""
    a.set_features(a.features | vu.F_LOG_ALL)
    a.sync()
    expect_logging(vnetd, "a", 1)
    old.clear()
    start = a.rx_seen
    n = 60
    t = b.stream(n, MAC_A, 0.004, SIZES)
    wait_until(lambda: a.received() >= start + 15, 5, interval=0.001,
               what="the stream under way")
    u_before = a.rx_seen
    before_pages = a.written_pages(a.elems[start:u_before])
    new = DirtyLog(sealed=True)
    a.set_log(new)
    a.take()
    u_reply = a.rx_seen  # everything after this was published after the swap
    seen_old = old.pages()
    old.clear()
    t.join(10)
    wait_until(lambda: a.received() >= start + n, 5, interval=0.002,
               what="all %d streamed frames at A" % n)
    if not before_pages <= seen_old:
        raise HarnessError("4. the first log lacked pages of frames before the swap: %s"
                           % "; ".join(describe(p) for p in sorted(before_pages - seen_old)))
    after = a.elems[u_reply:start + n]
    if len(after) < 5 or u_reply <= start:
        raise HarnessError("4. the swap was not mid-stream: %d frames before the reply, %d "
                           "after" % (u_reply - start, len(after)))
    all_pages = a.written_pages(a.elems[start:start + n])
    time.sleep(0.1)
    late = old.pages()
    if late:
        raise HarnessError("4. %d pages marked in the replaced log after SET_LOG_BASE was "
                           "answered: %s"
                           % (len(late), "; ".join(describe(p) for p in sorted(late))))
    check_exact("4. the new log", new, a.written_pages(after) | RX_RING_PAGES,
                allowed=all_pages | TX_RING_PAGES, forbidden=TX_BUF_PAGES)
    a.repost(a.elems[start:start + n])
    log("4. log replaced mid-stream: %d frames before the reply (in the old log), %d after "
        "(in the new), none in the old one after the reply" % (u_reply - start, len(after)))
    return new


def check_rarp(vnetd, a, b):
    """5: SEND_RARP: a RARP from the MAC at B, the FDB learns it on port a."""
    b.received()
    a.rarp(MAC_RARP)
    got = []
    wait_until(lambda: got.extend(b.received()) or
               any(d[12:14] == b"\x80\x35" for _, d in got), 5, interval=0.005,
               what="the RARP frame at B")
    rarps = [(ln, d) for ln, d in got if d[12:14] == b"\x80\x35"]
    if len(rarps) != 1:
        raise HarnessError("5. B received %d RARP frames for one SEND_RARP" % len(rarps))
    ln, d = rarps[0]
    problems = []
    if ln != vu.HDR_LEN + 60:
        problems.append("length %d, expected 60 + the 12-byte header" % ln)
    if d[0:6] != b"\xff" * 6:
        problems.append("destination %s" % mac_str(d[0:6]))
    if d[6:12] != mac_bytes(MAC_RARP):
        problems.append("source %s, expected %s" % (mac_str(d[6:12]), MAC_RARP))
    if d[20:22] != b"\x00\x03":
        problems.append("opcode %s, expected 3" % d[20:22].hex())
    if problems:
        raise HarnessError("5. the RARP frame: %s; bytes %s" % (", ".join(problems), d.hex()))
    fdb = vnetd.vnetctl("fdb")["fdb"]
    entry = [e for e in fdb if e["mac"].lower() == MAC_RARP]
    if not entry or entry[0]["port"] != "a":
        raise HarnessError("5. vnetctl fdb: %s for %s, expected port a (fdb %s)"
                           % (entry, MAC_RARP, fdb))
    log("5. SEND_RARP: B received %s; fdb has %s on port a" % (d[:22].hex(), MAC_RARP))


# ---- hostile SET_LOG_BASE ------------------------------------------------------------

def memfd(size):
    fd = os.memfd_create("vnet-hostile-log", 0)
    os.ftruncate(fd, size)
    return fd


def hostile_session(c, g, features=vu.F_VERSION_1 | vu.F_LOG_ALL | vu.F_PROTOCOL_FEATURES,
                    proto=vu.PROTO_LOG_SHMFD):
    offered = u64(c.call(vu.GET_FEATURES))
    if features & vu.F_PROTOCOL_FEATURES:
        c.call(vu.GET_PROTOCOL_FEATURES)
        c.u64(vu.SET_PROTOCOL_FEATURES, proto)
    c.send(vu.SET_OWNER)
    c.u64(vu.SET_FEATURES, offered & features)
    c.mem_table([vu.region()], [g.fd])


def bad_log(size, offset, file_size, **kw):
    def case(c, g):
        hostile_session(c, g, **kw)
        fd = memfd(file_size)
        try:
            c.log_base(size, offset, [fd])
        finally:
            os.close(fd)
    return case


def log_eventfd(c, g):
    hostile_session(c, g)
    fd = os.eventfd(0)
    try:
        c.log_base(PAGE, 0, [fd])
    finally:
        os.close(fd)


def log_pipe(c, g):
    hostile_session(c, g)
    r, w = os.pipe()
    try:
        c.log_base(PAGE, 0, [r])
    finally:
        os.close(r)
        os.close(w)


def log_no_fd(c, g):
    hostile_session(c, g)
    c.log_base(PAGE, 0, [])


HOSTILE = [
    ("size past the memfd's end", bad_log(2 * PAGE, 0, PAGE)),
    ("offset + size past the end", bad_log(PAGE, PAGE, PAGE)),
    ("size 0", bad_log(0, 0, PAGE)),
    ("size over 1 GiB (file that large)", bad_log(GIB + PAGE, 0, GIB + PAGE)),
    ("size 2^64 - 4 KiB", bad_log(2**64 - PAGE, 2 * PAGE, 4 * PAGE)),
    ("offset + size wrapping past 2^64", bad_log(2 * PAGE, 2**64 - PAGE, 4 * PAGE)),
    ("an eventfd", log_eventfd),
    ("a pipe", log_pipe),
    ("no fd", log_no_fd),
    ("LOG_SHMFD not negotiated", bad_log(PAGE, 0, PAGE, proto=vu.PROTO_RARP)),
    ("no protocol features", bad_log(PAGE, 0, PAGE,
                                     features=vu.F_VERSION_1 | vu.F_LOG_ALL)),
]


def wait_closed(c, timeout=5.0):
    """(closed, bytes received first) within timeout."""
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = c.sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            return True, got
        except socket.timeout:
            return False, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def settled_fd_count(pid):
    """vnetd's fd count without a control client: the least seen over 0.3 s (vnetd closes
    its end of a finished vnetctl connection a moment after vnetctl exits)."""
    n = fd_count(pid)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        time.sleep(0.01)
        n = min(n, fd_count(pid))
    return n


def check_hostile(vnetd, a, b, sock_h, rounds=3):
    """6: each bad SET_LOG_BASE ends h's session with a warning; vnetd and a/b go on."""
    pid = vnetd.proc.pid
    base_fds = settled_fd_count(pid)
    counts = []
    for rnd in range(rounds):
        for name, case in HOSTILE:
            e0 = port_extra(vnetd, "h")
            d0, s0 = e0.get("disconnects", 0), e0.get("log_suppressed", 0)
            at = vnetd.proc.log_size()
            g = vu.GuestMemory()
            c = vu.Conn(sock_h)
            try:
                try:
                    case(c, g)
                    closed, early = wait_closed(c)
                except (vu.Closed, BrokenPipeError, ConnectionResetError):
                    closed, early = True, b""
                if not closed:
                    raise HarnessError("6. %s: vnetd did not close the session (got %r)"
                                       % (name, early[:32]))
                # Replies to GET_FEATURES/GET_PROTOCOL_FEATURES were read by the case; a
                # SET_LOG_BASE reply would say the log was taken.
                if len(early) >= 12 and struct.unpack_from("<I", early)[0] == vu.SET_LOG_BASE:
                    raise HarnessError("6. %s: vnetd answered SET_LOG_BASE (%r) before closing"
                                       % (name, early.hex()))
            finally:
                c.close()
                g.close()
            wait_until(lambda: port_extra(vnetd, "h").get("disconnects", 0) > d0, 5,
                       interval=0.02, what="6. %s: h's session gone" % name)
            vnetd.check_alive()
            new_log = vnetd.proc.read_log(at)
            warned = [l for l in new_log.splitlines()
                      if " warning " in l and ("SET_LOG_BASE" in l or " h:" in l or " h " in l)]
            # Within the port's log budget (10 warnings per 5 s per call site) or counted
            # as withheld (log_suppressed): never silently lost.
            if not warned and port_extra(vnetd, "h").get("log_suppressed", 0) <= s0:
                raise HarnessError("6. %s: no warning in vnetd's log and none withheld:\n%s"
                                   % (name, new_log))
            elems = deliver(a, b, 1, "6. %s: B -> A after it" % name)
            a.repost(elems)
            if rnd == 0:
                log("  6. %-34s closed, warning: %s" % (
                    name, warned[0].split(" ", 3)[-1][:110] if warned else "(rate-limited)"))
        n = 0
        deadline = time.monotonic() + 5
        while True:
            n = fd_count(pid)
            if n == base_fds or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        counts.append(n)
        if n != base_fds:
            raise HarnessError("6. after round %d vnetd has %d fds open, %d before"
                               % (rnd + 1, n, base_fds))
    log("6. %d hostile SET_LOG_BASE cases x %d rounds: each session closed with a warning, "
        "B -> A forwarded after each, vnetd fds %d before, %s after each round"
        % (len(HOSTILE), rounds, base_fds, counts))


def check_truncated_log(vnetd, a, b, sock_h):
    """6b: the log memfd truncated to 0 while vnetd marks into it."""
    pid = vnetd.proc.pid
    base_fds = settled_fd_count(pid)
    at = vnetd.proc.log_size()
    d0 = port_extra(vnetd, "h").get("disconnects", 0)
    g = vu.GuestMemory()
    c = vu.Conn(sock_h)
    hostile_session(c, g, proto=vu.PROTO_LOG_SHMFD)
    dlog = DirtyLog(size=PAGE, offset=0, file_size=PAGE)
    c.log_base(dlog.size, 0, [dlog.fd])
    c.reply(vu.SET_LOG_BASE)
    # Rings as setup() lays them out; ring 0 gets 200 buffers of 2 KiB.
    for i in (0, 1):
        base = 0x40000 if i == 0 else 0
        c.state(vu.SET_VRING_NUM, i, 256)
        c.state(vu.SET_VRING_BASE, i, 0)
        c.addr(i, vu.UVA + base + vu.DESC, vu.UVA + base + vu.USED, vu.UVA + base + vu.AVAIL)
        c.u64(vu.SET_VRING_CALL, i, [c.eventfd()])
        c.u64(vu.SET_VRING_KICK, i, [c.eventfd()])
        c.state(vu.SET_VRING_ENABLE, i, 1)
    for i in range(200):
        g.put(0x40000 + 16 * i, struct.pack("<QIHH", 0x50000 + 2048 * i, 2048,
                                            vu.VRING_DESC_F_WRITE, 0))
        g.put(0x44000 + 4 + 2 * i, struct.pack("<H", i))
    g.put(0x44000 + 2, struct.pack("<H", 200))
    c.call(vu.GET_FEATURES)
    c.kick(0)
    # h announces its MAC so that B's frames go to h only.
    g.put(vu.BUFS, frame(MAC_B, MAC_H))
    g.desc(0, vu.BUFS, vu.HDR_LEN + 64)
    g.avail(0, 0, 256)
    g.avail_idx(1)
    c.kick(1)
    wait_until(lambda: g.used_idx() == 1, 5, what="6b. h's frame sent")
    h_used = lambda: g.u16(0x48000 + 2)  # noqa: E731
    t = b.stream(150, MAC_H, 0.002)
    wait_until(lambda: h_used() >= 20, 5, interval=0.002, what="6b. frames reaching h")
    if not dlog.pages():
        raise HarnessError("6b. h's log has no marks before the truncation")
    dlog.map.close()
    os.ftruncate(dlog.fd, 0)
    at_trunc = h_used()
    t.join(10)
    time.sleep(0.2)
    vnetd.check_alive()
    closed, _ = wait_closed(c, 1.0)
    h_after = h_used() - at_trunc
    extra = port_extra(vnetd, "h")
    elems = deliver(a, b, 3, "6b. B -> A after the truncation")
    a.repost(elems)
    c.close()
    os.close(dlog.fd)
    g.close()
    wait_until(lambda: port_extra(vnetd, "h").get("disconnects", 0) > d0, 5, interval=0.02,
               what="6b. h's session gone")
    sleep_until(lambda: fd_count(pid) == base_fds, 5, 0.02)
    if fd_count(pid) != base_fds:
        raise HarnessError("6b. vnetd has %d fds open, %d before" % (fd_count(pid), base_fds))
    new_log = vnetd.proc.read_log(at)
    warned = [l.split(" ", 3)[-1][:120] for l in new_log.splitlines() if " warning " in l]
    log("6b. log truncated under traffic: vnetd alive, h %s (%d frames to h after the "
        "truncation; h memory_lost %s, protocol_errors %s), warnings: %s"
        % ("closed by vnetd" if closed else "session kept", h_after, extra.get("memory_lost"),
           extra.get("protocol_errors"), warned or "none"))
    return closed, h_after, warned


def check_knob(s):
    """7: VNET_TEST_SKIP_DIRTY_LOG=1: ring pages marked (ring 0's at its log_guest_addr,
    elsewhere than its used ring), buffer pages not."""
    socks = {p: s.path("knob-%s.sock" % p) for p in "ab"}
    os.environ["VNET_TEST_SKIP_DIRTY_LOG"] = "1"
    try:
        vnetd = Vnetd(s, [PortSpec(socks[p], name=p) for p in "ab"], name="vnetd-knob")
        vnetd.start()
    finally:
        del os.environ["VNET_TEST_SKIP_DIRTY_LOG"]
    a = FrontA(socks["a"], name="A (knob)")
    b = FrontB(socks["b"])
    dlog = DirtyLog()
    try:
        a.handshake(features=FEATURES_A | vu.F_LOG_ALL)
        a.set_log(dlog)
        a.start_rings(log_at=G + LOG_ELSEWHERE)
        expect_logging(vnetd, "a", 1)
        elems = deliver(a, b, 16, "7. knob")
        bufs = a.written_pages(elems)
        elsewhere = used_ring_pages(G + LOG_ELSEWHERE, RX_SIZE)
        b0 = b.rx_seen
        a.send(frame(MAC_B, MAC_A))
        wait_until(lambda: b.received() or b.rx_seen > b0, 5, what="7. A's frame at B")
        check_exact("7. knob: ring pages only", dlog, elsewhere | TX_RING_PAGES,
                    forbidden=bufs | TX_BUF_PAGES | RX_RING_PAGES)
        log("7. VNET_TEST_SKIP_DIRTY_LOG=1: %d frames, none of their %d buffer pages marked; "
            "ring 0 marked at its log_guest_addr %s (not its used ring %s), TX used ring %s"
            % (len(elems), len(bufs), sorted(hex(p) for p in elsewhere),
               sorted(hex(p) for p in RX_RING_PAGES), sorted(hex(p) for p in TX_RING_PAGES)))
    finally:
        a.close()
        b.close()
        dlog.close()
    vnetd.stop_ok()


def check_rarp_refused(vnetd, a, b):
    """8: SEND_RARP with a multicast or zero MAC: warning, no frame, session alive."""
    for mac in ("01:00:5e:00:00:fb", "00:00:00:00:00:00"):
        b.received()
        d0 = port_extra(vnetd, "a").get("disconnects", 0)
        at = vnetd.proc.log_size()
        a.rarp(mac)
        try:
            a.sync()
        except (vu.Closed, OSError) as e:
            raise HarnessError("8. SEND_RARP %s ended A's session (%s); log:\n%s"
                               % (mac, e, vnetd.proc.read_log(at)))
        time.sleep(0.2)
        new_log = vnetd.proc.read_log(at)
        if not [l for l in new_log.splitlines() if " warning " in l]:
            raise HarnessError("8. SEND_RARP %s: no warning; log:\n%s" % (mac, new_log))
        if any(d[12:14] == b"\x80\x35" for _, d in b.received()):
            raise HarnessError("8. SEND_RARP %s: B received a RARP frame" % mac)
        if port_extra(vnetd, "a").get("disconnects", 0) != d0 or a.c.closed_by_peer(0.1):
            raise HarnessError("8. SEND_RARP %s: A's session ended" % mac)
        elems = deliver(a, b, 2, "8. B -> A after SEND_RARP %s" % mac)
        a.repost(elems)
        log("8. SEND_RARP %s refused: %s; A's session goes on"
            % (mac, [l.split(" ", 3)[-1][:100] for l in new_log.splitlines()
                     if " warning " in l][0]))


def body(s, args):
    socks = {p: s.path("%s.sock" % p) for p in "abh"}
    vnetd = Vnetd(s, [PortSpec(socks[p], name=p) for p in "abh"], log_level="info")
    vnetd.start()
    a = FrontA(socks["a"])
    s.cleanup.push("front end A", a.close)
    check_offered(a)
    a.start_rings()
    b = FrontB(socks["b"])
    s.cleanup.push("front end B", b.close)
    vnetd.wait_connected(["a", "b"], timeout=10)
    dlog, _ = check_marks(vnetd, a, b)
    s.cleanup.push("log 1", dlog.close)
    check_off(vnetd, a, b, dlog)
    new = check_replace(vnetd, a, b, dlog)
    s.cleanup.push("log 2", new.close)
    check_rarp(vnetd, a, b)
    check_mergeable(vnetd, b, socks["h"])
    check_truncated_log(vnetd, a, b, socks["h"])
    check_hostile(vnetd, a, b, socks["h"])
    check_knob(s)
    check_rarp_refused(vnetd, a, b)
    vnetd.check_alive()
    vnetd.stop_ok()


if __name__ == "__main__":
    run_test("dirty_log", body, [lambda a: require_root(), require_vnetd])
