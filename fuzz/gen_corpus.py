#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/<target>/: a few valid inputs per target, in the
input formats described at the top of fuzz/<target>.cc. Deterministic; run it again after
changing a format (scripts/fuzz does not run it: the seeds are checked in)."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- vhost_user_session
GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
NET_SET_MTU, RESET_DEVICE, GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG = 20, 34, 36, 37, 38
SET_STATUS, GET_STATUS = 39, 40
F_VERSION_1, F_EVENT_IDX, F_INDIRECT, F_MRG, F_PROTO = 1 << 32, 1 << 29, 1 << 28, 1 << 15, 1 << 30
P_MQ, P_REPLY_ACK, P_MTU, P_MEM_SLOTS, P_STATUS = 1, 8, 16, 1 << 15, 1 << 16
UVA = 0x7F0000000000


# Kinds of non-memfd fds (make_other_fd in fuzz/vhost_user_session.cc).
EVENTFD, EVENTFD_BLOCKING, EVENTFD_SATURATED, PIPE_READ, PIPE_WRITE, SOCKET, DEV_NULL, FILE = \
    range(8)


def rec(req, payload=b"", nfds=0, eventfd=False, memfd_log2=4, content=b"", need_reply=False,
        split=None, kind=EVENTFD, shrink=False):
    """One record: ctl, [fd spec + content], compact header, [split], payload. Non-memfd
    fds (eventfd=True) are of `kind`; memfds are truncated after the message with
    shrink=True."""
    ctl = nfds | (0x80 if eventfd else 0) | (0x40 if need_reply else 0)
    if split is not None:
        ctl |= 0x10
    out = bytes([ctl])
    if nfds:
        if eventfd:
            out += bytes([kind << 3])
        else:
            units = (len(content) + 15) // 16
            assert units < 16
            out += bytes([memfd_log2 | units << 3 | (0x80 if shrink else 0)])
            out += content.ljust(units * 16, b"\0")
    out += struct.pack("<BBH", req, 1, len(payload))
    if split is not None:
        out += bytes([split])
    return out + payload


def u64(v):
    return struct.pack("<Q", v)


def state(i, n):
    return struct.pack("<II", i, n)


def vring_addr(i, desc, used, avail):
    return struct.pack("<IIQQQQ", i, 0, desc, used, avail, 0)


def mem_table(regions):
    return struct.pack("<II", len(regions), 0) + b"".join(
        struct.pack("<QQQQ", *r) for r in regions)


def ring_content():
    """Queue of 4 at offset 0 of the memfd: desc table (64), avail (64..), used (128..);
    one chain available: a 60-byte device-readable buffer at 0x100."""
    mem = bytearray(240)
    struct.pack_into("<QIHH", mem, 0, 0x100, 60, 0, 0)      # desc 0
    struct.pack_into("<HHH", mem, 64, 0, 1, 0)              # avail flags, idx 1, ring[0]=0
    return bytes(mem)


def negotiate(features=F_VERSION_1 | F_EVENT_IDX | F_PROTO, proto=P_MQ | P_REPLY_ACK):
    return (rec(GET_FEATURES) + rec(SET_FEATURES, u64(features)) + rec(GET_PROTOCOL_FEATURES)
            + rec(SET_PROTOCOL_FEATURES, u64(proto)) + rec(SET_OWNER) + rec(GET_QUEUE_NUM))


def ring_setup(idx, num, size=0x10000, content=b"", shrink=False, kick=EVENTFD, call=EVENTFD):
    region = (0, size, UVA, 0)
    return (rec(SET_MEM_TABLE, mem_table([region]), nfds=1, content=content, shrink=shrink)
            + rec(SET_VRING_NUM, state(idx, num))
            + rec(SET_VRING_ADDR, vring_addr(idx, UVA, UVA + 128, UVA + 64))
            + rec(SET_VRING_BASE, state(idx, 0))
            + rec(SET_VRING_KICK, u64(idx), nfds=1, eventfd=True, kind=kick)
            + rec(SET_VRING_CALL, u64(idx), nfds=1, eventfd=True, kind=call)
            + rec(SET_VRING_ENABLE, state(idx, 1), need_reply=True))


def gen_session():
    t = "vhost_user_session"
    write(t, "negotiate", b"\x00" + negotiate())
    write(t, "start_ring", b"\x01" + negotiate() + ring_setup(0, 4, content=ring_content())
          + rec(GET_VRING_BASE, state(0, 0)))
    write(t, "start_ring_no_proto", b"\x00" + rec(SET_FEATURES, u64(F_VERSION_1))
          + rec(SET_OWNER) + ring_setup(1, 4, content=ring_content()) + rec(RESET_OWNER))
    write(t, "mem_slots", b"\x02" + negotiate(proto=P_MQ | P_REPLY_ACK | P_MEM_SLOTS)
          + rec(GET_MAX_MEM_SLOTS)
          + rec(ADD_MEM_REG, u64(0) + struct.pack("<QQQQ", 0, 0x1000, UVA, 0), nfds=1,
                memfd_log2=0, need_reply=True)
          + rec(ADD_MEM_REG, u64(0) + struct.pack("<QQQQ", 0x1000, 0x1000, UVA + 0x1000, 0),
                nfds=1, memfd_log2=0)
          + rec(REM_MEM_REG, u64(0) + struct.pack("<QQQQ", 0, 0x1000, UVA, 0), nfds=1,
                memfd_log2=0)
          + rec(RESET_DEVICE))
    write(t, "status_mtu_split", b"\x00" + negotiate(proto=P_STATUS | P_MTU | P_REPLY_ACK)
          + rec(SET_STATUS, u64(0xF), split=5) + rec(GET_STATUS)
          + rec(NET_SET_MTU, u64(1500), need_reply=True)
          + rec(SET_VRING_ERR, u64(0), nfds=1, eventfd=True)
          + rec(SET_VRING_CALL, u64(0x100)))
    write(t, "shrunk_memory", b"\x01" + negotiate()
          + ring_setup(0, 4, content=ring_content(), shrink=True)
          + rec(GET_VRING_BASE, state(0, 0)) + rec(SET_VRING_KICK, u64(0), nfds=1, eventfd=True))
    write(t, "saturated_call", b"\x00" + negotiate()
          + ring_setup(0, 4, content=ring_content(), kick=EVENTFD_BLOCKING,
                       call=EVENTFD_SATURATED))
    for name, kind in (("pipe_kick", PIPE_READ), ("socket_kick", SOCKET), ("file_kick", FILE)):
        write(t, name, b"\x00" + negotiate() + ring_setup(0, 4, content=ring_content(), kick=kind))
    write(t, "pipe_as_memory", b"\x00" + negotiate()
          + rec(SET_MEM_TABLE, mem_table([(0, 0x1000, UVA, 0)]), nfds=1, eventfd=True,
                kind=PIPE_WRITE))
    write(t, "too_many_fds", b"\x00" + negotiate()
          + rec(SET_MEM_TABLE, mem_table([(0, 0x1000, UVA, 0)]), nfds=9, memfd_log2=0))
    write(t, "truncated", b"\x00" + rec(GET_FEATURES) + struct.pack("<BBBH", 0, SET_FEATURES, 1, 8)
          + b"\x01\x02")


# ---------------------------------------------------------------- virtqueue
GPA0, GPA1 = 0x100000, 0x40000000
NEXT, WRITE, INDIRECT = 1, 2, 4
OP = {"pop": 0, "push": 2, "publish": 3, "notify": 4, "enable": 5, "disable": 6,
      "available": 7, "tx": 8, "rx": 9, "w16": 10, "w32": 11, "mark": 12, "rewind": 13,
      "restart": 14, "newmem": 15}


def op(name, a=0, b=0, c=0):
    return struct.pack("<BBHI", OP[name], a, b, c)


def vq_input(qlog, flags, ops, mem0, mem1=b"", size0=4096, size1=4096, tx_caps=0x1f,
             rx_caps=0x1f, base=0, layout=(0, 1024, 2048)):
    """Rings of region 0 at the offsets in `layout` (desc, avail, used)."""
    size0 = max(size0, (len(mem0) + 15) // 16 * 16)
    cfg = struct.pack("<BBHHHHHHBBH", qlog, flags, base, layout[0], layout[1], layout[2],
                      size0 - 16, size1 - 16, tx_caps, rx_caps, 10)
    return cfg + bytes([len(ops)]) + b"".join(ops) + mem0.ljust(size0, b"\0") + mem1


def ring(chains):
    """Region-0 image: desc table at 0, avail ring at 1024, used ring at 2048, buffers
    from 3072 on. `chains` is a list of chains, each a list of (len, flags, content)."""
    total = 3072 + sum((ln + 15) // 16 * 16 for ch in chains for ln, _, _ in ch)
    mem = bytearray(max(4096, total))
    d = 0
    heads = []
    pos = 3072
    for ch in chains:
        heads.append(d)
        for k, (ln, fl, content) in enumerate(ch):
            nxt = d + 1 if k + 1 < len(ch) else 0
            f = fl | (NEXT if k + 1 < len(ch) else 0)
            struct.pack_into("<QIHH", mem, 16 * d, GPA0 + pos, ln, f, nxt)
            mem[pos:pos + len(content)] = content
            pos += (ln + 15) // 16 * 16
            d += 1
    struct.pack_into("<HH", mem, 1024, 0, len(heads))
    for i, h in enumerate(heads):
        struct.pack_into("<H", mem, 1024 + 4 + 2 * i, h)
    return bytes(mem)


def eth_frame(n=60):
    return bytes([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]) + bytes(n - 14)


def gen_virtqueue():
    t = "virtqueue"
    hdr = bytes(12)
    tx = [[(12 + 60, 0, hdr + eth_frame())], [(12, 0, hdr), (60, 0, eth_frame())]]
    write(t, "tx", vq_input(3, 0x20, [op("tx", 3), op("publish"), op("notify")],
                            ring(tx)))
    rx = [[(1536, WRITE, b"")], [(512, WRITE, b""), (1024, WRITE, b"")], [(64, WRITE, b"")]]
    write(t, "rx", vq_input(3, 0x20, [op("rx", 1, 100, 0), op("rx", 0, 600, 0), op("notify")],
                            ring(rx)))
    write(t, "rx_mergeable_event_idx",
          vq_input(3, 0x20 | 0x10 | 0x01,
                   [op("enable"), op("rx", 2, 700, 0), op("notify"), op("disable")],
                   ring(rx)))
    mixed = [[(12 + 60, 0, hdr + eth_frame())], [(256, WRITE, b"")], [(16, 0, b"x" * 16)]]
    write(t, "pop_push_rewind",
          vq_input(3, 0x02, [op("mark"), op("pop"), op("pop"), op("rewind"), op("pop"),
                             op("push", 0, 0, 10), op("publish"), op("pop"), op("w16", 0, 1026, 5),
                             op("available"), op("restart"), op("pop"), op("newmem"),
                             op("pop")], ring(mixed)))
    # An indirect table of two descriptors at 0x900 and a buffer spanning both regions
    # (region 1 adjacent in guest physical space).
    mem = bytearray(ring([]))
    struct.pack_into("<QIHH", mem, 0, GPA0 + 0x900, 32, INDIRECT, 0)
    struct.pack_into("<QIHH", mem, 0x900, GPA0 + 0xA00, 12 + 60, 0, 0)
    struct.pack_into("<QIHH", mem, 0x910, GPA0 + 4096 - 8, 64, WRITE, 0)
    struct.pack_into("<HHH", mem, 1024, 0, 1, 0)
    write(t, "indirect_two_regions",
          vq_input(3, 0x02 | 0x04 | 0x08, [op("pop"), op("push", 1, 0, 64), op("publish")],
                   bytes(mem), bytes(4096)))
    # Hostile: avail idx far ahead, a descriptor loop.
    mem = bytearray(ring([]))
    struct.pack_into("<QIHH", mem, 0, GPA0 + 0x900, 16, NEXT, 1)
    struct.pack_into("<QIHH", mem, 16, GPA0 + 0x900, 16, NEXT, 0)
    struct.pack_into("<HHHH", mem, 1024, 0, 2, 0, 0)
    write(t, "loop", vq_input(3, 0, [op("pop"), op("pop"), op("w16", 0, 1026, 100), op("pop")],
                              bytes(mem)))
    gen_virtqueue_packed()


PACKED, AVAIL_F, USED_F = 0x80, 1 << 7, 1 << 15


def packed_ring(chains, size=8):
    """Region-0 image of a packed ring (flags 0x80): descriptors at 0, the driver event
    area at 1024, the device event area at 2048, buffers from 3072 on; every descriptor
    available in lap 1 (AVAIL set, USED clear), the id in the last one of each chain."""
    total = 3072 + sum((ln + 15) // 16 * 16 for ch in chains for ln, _, _ in ch)
    mem = bytearray(max(4096, total))
    d, pos = 0, 3072
    for cid, ch in enumerate(chains):
        for k, (ln, fl, content) in enumerate(ch):
            f = fl | (NEXT if k + 1 < len(ch) else 0) | AVAIL_F
            struct.pack_into("<QIHH", mem, 16 * (d % size), GPA0 + pos, ln, cid % size, f)
            mem[pos:pos + len(content)] = content
            pos += (ln + 15) // 16 * 16
            d += 1
    return bytes(mem)


def gen_virtqueue_packed():
    t = "virtqueue"
    hdr = bytes(12)
    tx = [[(12 + 60, 0, hdr + eth_frame())], [(12, 0, hdr), (60, 0, eth_frame())],
          [(12 + 60, 0, hdr + eth_frame())]]
    write(t, "packed_tx", vq_input(3, PACKED | 0x20, [op("tx", 3), op("publish"), op("notify")],
                                   packed_ring(tx), base=0x8000))
    rx = [[(1536, WRITE, b"")], [(512, WRITE, b""), (1024, WRITE, b"")], [(64, WRITE, b"")]]
    write(t, "packed_rx_mergeable_event_idx",
          vq_input(3, PACKED | 0x20 | 0x10 | 0x01,
                   [op("enable"), op("rx", 2, 700, 0), op("notify"), op("w32", 0, 1024, 0x20002),
                    op("rx", 0, 100, 0), op("notify"), op("disable")],
                   packed_ring(rx), base=0x8000))
    mixed = [[(12 + 60, 0, hdr + eth_frame())], [(256, WRITE, b"")], [(16, 0, b"x" * 16)]]
    write(t, "packed_pop_push_rewind",
          vq_input(3, PACKED | 0x02, [op("mark"), op("pop"), op("pop"), op("rewind"), op("pop"),
                                      op("push", 0, 0, 10), op("publish"), op("pop"),
                                      op("available"), op("restart"), op("pop"), op("newmem"),
                                      op("pop")], packed_ring(mixed), base=0x8000))
    # A chain of 5 on a ring of 4 starting at position 2: wraps, then is longer than
    # the ring (broken); an indirect descriptor with NEXT.
    mem = bytearray(packed_ring([]))
    for i in range(4):
        struct.pack_into("<QIHH", mem, 16 * i, GPA0 + 0x900, 16, 0, NEXT | AVAIL_F)
    write(t, "packed_wrap_too_long", vq_input(2, PACKED, [op("pop"), op("pop")], bytes(mem),
                                              base=0x8002))
    mem = bytearray(packed_ring([]))
    struct.pack_into("<QIHH", mem, 0, GPA0 + 0x900, 32, 0, INDIRECT | NEXT | AVAIL_F)
    struct.pack_into("<QIHH", mem, 16, GPA0 + 0xA00, 64, 1, AVAIL_F)
    struct.pack_into("<QIHH", mem, 0x900, GPA0 + 0xA00, 12 + 60, 0, 0)
    write(t, "packed_indirect_next", vq_input(3, PACKED | 0x02, [op("pop"), op("publish")],
                                              bytes(mem), base=0x8000))


# ---------------------------------------------------------------- packet
NEEDS_CSUM = 1
GSO_TCPV4, GSO_UDP_L4, GSO_TCPV6, GSO_ECN = 1, 5, 4, 0x80


def csum16(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ipv4(proto, l4):
    h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0x1234, 0, 64, proto, 0,
                              bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    struct.pack_into("!H", h, 10, 0xFFFF ^ csum16(bytes(h)))
    return bytes(h) + l4


def ipv6(proto, l4, ext=b""):
    nh = proto if not ext else 60
    src = bytes([0xFE, 0x80] + [0] * 13 + [1])
    dst = bytes([0xFE, 0x80] + [0] * 13 + [2])
    return struct.pack("!IHBB", 0x60000000, len(ext) + len(l4), nh, 64) + src + dst + ext + l4


def tcp(payload, flags=0x18):
    return struct.pack("!HHIIBBHHH", 1234, 80, 1000, 0, 5 << 4, flags, 65535, 0, 0) + payload


def udp(payload):
    return struct.pack("!HHHH", 1234, 53, 8 + len(payload), 0) + payload


def eth(l3, ethertype, vlans=()):
    out = bytes([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2])
    for tpid, tci in vlans:
        out += struct.pack("!HH", tpid, tci)
    return out + struct.pack("!H", ethertype) + l3


def pkt_input(frame, flags, gso_type, gso_size, csum_start, csum_offset, src=0x1F, dst=0,
              pool=2, hdr_len=0):
    h = struct.pack("<BBHHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, 0)
    return bytes([src, dst, pool]) + struct.pack("<H", 0) + h + frame


def gen_packet():
    t = "packet"
    pay = bytes(range(256)) * 4
    f = eth(ipv4(6, tcp(pay)), 0x0800)
    write(t, "tso4", pkt_input(f, NEEDS_CSUM, GSO_TCPV4, 300, 34, 16, hdr_len=54))
    write(t, "tso4_partial_dst", pkt_input(f, NEEDS_CSUM, GSO_TCPV4, 536, 34, 16, dst=1, pool=1))
    f = eth(ipv4(6, tcp(pay, flags=0x99)), 0x0800, vlans=[(0x88A8, 10), (0x8100, 20)])
    write(t, "tso4_qinq_ecn", pkt_input(f, NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 400, 42, 16, pool=3))
    f = eth(ipv6(6, tcp(pay[:700]), ext=struct.pack("!BB6s", 6, 0, bytes(6))), 0x86DD)
    write(t, "tso6_ext", pkt_input(f, NEEDS_CSUM, GSO_TCPV6, 200, 62, 16, dst=1))
    f = eth(ipv6(17, udp(pay[:900])), 0x86DD)
    write(t, "uso6", pkt_input(f, NEEDS_CSUM, GSO_UDP_L4, 256, 54, 6))
    f = eth(ipv4(17, udp(pay[:333])), 0x0800)
    write(t, "uso4", pkt_input(f, NEEDS_CSUM, GSO_UDP_L4, 100, 34, 6, dst=1, pool=8))
    write(t, "csum_udp4", pkt_input(f, NEEDS_CSUM, 0, 0, 34, 6))
    write(t, "plain_arp", pkt_input(eth(bytes(28), 0x0806), 0, 0, 0, 0, 0))
    frag = bytearray(ipv4(17, udp(pay[:64])))
    struct.pack_into("!H", frag, 6, 0x2000)
    write(t, "ipv4_fragment", pkt_input(eth(bytes(frag), 0x0800), NEEDS_CSUM, GSO_UDP_L4, 16,
                                        34, 6))


# ---------------------------------------------------------------- control_request
def gen_control_request():
    """A cut byte (0: one write) and request lines, as fuzz/control_request.cc reads them."""
    t = "control_request"
    reqs = [
        {"cmd": "version"}, {"cmd": "ports"}, {"cmd": "counters"},
        {"cmd": "counters", "port": "p0"}, {"cmd": "fdb"}, {"cmd": "workers"},
        {"cmd": "fdb", "port": "p0", "vlan": 10, "mac": "52:54:00:00:00:01", "limit": 5,
         "cursor": 3},
        {"cmd": "fdb", "cursor": 4294967295, "limit": 0, "port": "nosuch", "mac": "x"},
        {"cmd": "fdb-flush"},
        {"cmd": "set-port", "name": "p0", "vlan": 10},
        {"cmd": "set-port", "name": "p0", "trunk": [10, 20], "native": 1},
        {"cmd": "set-port", "name": "p0", "allowed_macs": ["52:54:00:00:00:01"]},
        {"cmd": "set-port", "name": "p0", "allowed_macs": []},
        {"cmd": "set-port", "name": "p0", "mtu": 9000},
        {"cmd": "set-port", "name": "p0", "worker": 0},
        {"cmd": "set-port", "name": "p0", "ingress_rate": "100M,20kpps", "ingress_burst": "2M",
         "storm": "broadcast=1000,multicast=5k"},
        {"cmd": "set-port", "name": "p0", "ingress_rate": "off", "storm": "off"},
        {"cmd": "add-port", "port": {"name": "v1", "type": "vhost-user", "socket": "/x/v1.sock",
                                     "mode": "client", "socket_mode": "0660"}},
        {"cmd": "add-port", "port": {"name": "t1", "type": "tap", "netns": "n", "io": "uring",
                                     "trunk": [5], "mtu": 1500}},
        {"cmd": "del-port", "name": "p0"},
    ]
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in reqs)
    write(t, "all_commands", b"\0" + lines)
    write(t, "all_commands_chunked", b"\x07" + lines)
    write(t, "hostile", b"\0" + b"\n".join([
        b'{"cmd":"counters","port":1e400}',
        b'{"cmd":"set-port","name":"p0","vlan":123456789012345678901234567890}',
        b'{"cmd":"set-port","name":"p0","trunk":[' + b"[" * 40 + b"]" * 40 + b"]}",
        b'{"cmd":"set-port","name":"p0","trunk":[' + b"[" * 30 + b"1" + b"]" * 30 + b"]}",
        b'{"cmd":"\xff\xfe"}',
        b'{"cmd":"set-port","name":"p0","bogus":{"a":[1,{"b":null}]}}',
        b'{"cmd":"counters","port":[1]}',
        b"[1,2,3]",
        b'{"cmd":"set-port","name":"p0"',  # no newline, then the end: answered at EOF
    ]))
    write(t, "oversized", b"\x31" + b'{"cmd":"' + b"x" * 1100 + b'"}\n{"cmd":"version"}\n')


# ---------------------------------------------------------------- config_file
CONFIG_FULL = b"""# every section
[vnetd]
control = "/run/vnet/vnetd.sock"
log_level = "info"
tap_io = "auto"
socket_mode = "0660"
control_idle_timeout = 60
control_request_timeout = 10
[worker]
cpus = [0]
poll_mode = "adaptive"
idle_poll_us = 200
idle_poll_max_us = 2000
[fdb]
size = 8192
age = 300
per_port_limit = 1024
[metrics]
listen = "127.0.0.1:9465"
[[port]]
name = "vm1"
type = "vhost-user"
socket = "/run/vnet/vm1.sock"
vlan = 10
allowed_macs = ["52:54:00:00:00:01"]
socket_mode = 0o640
[[port]]
name = "uplink"
type = "tap"
ifname = "vnet0"
netns = "host1"
mtu = 9000
trunk = [
  10, # comment
  20,
]
native = 10
io = "uring"
worker = 0
"""

CONFIG_SYNTAX = (b"a = { b.c = [1, 2], d = 'lit[eral' }\n"
                 b'm = """\nmulti [[ line \\\n  continued"""\n'
                 b"l = '''[[ raw '''\n"
                 b"[x . \"y\" . 'z']\n"
                 b"[[p.q]]\n"
                 b"f = [1.5, -2e3, inf]\n"
                 b"t = 1979-05-27T07:32:00Z\n")


def gen_config_file():
    """TOML files as fuzz/config_file.cc reads them (the bytes of the file)."""
    t = "config_file"
    write(t, "full", CONFIG_FULL)
    write(t, "syntax", CONFIG_SYNTAX)
    write(t, "deep", b"a = " + b"[" * 40 + b"]" * 40 + b"\n")
    write(t, "bad_types", b"[vnetd]\ncontrol = 5\n[[port]]\nname = [1]\n")


if __name__ == "__main__":
    gen_session()
    gen_virtqueue()
    gen_packet()
    gen_control_request()
    gen_config_file()
