#!/usr/bin/env python3
"""Hostile front ends against the real vnetd: one case each, vnetd and the others go on.

vnetd has a port `h` for the hostile front end (vnet_harness/vhost_user.py: raw
vhost-user messages and hand-written split rings in a memfd) and two ports b -> c that
carry paced vnet-traffic the whole time.  Each case connects to h and does one bad
thing: truncated headers and payloads; unknown request codes; a wrong fd count on every
message type; vring indices out of range (2, 0x10000, 0xFFFFFFFF); ring sizes 0, 3,
32769, 65536; memory tables with zero-sized, overlapping or overflowing regions or
offsets past the end of the file; ring addresses outside memory, misaligned or running
past a region; and, on a running TX ring: a descriptor loop, a chain longer than the
ring, nested indirect tables, an indirect table of odd length, an address that wraps,
zero-length descriptors, a chain shorter than the virtio-net header, an avail index far
ahead of the used index, a head out of range.  And the same messages 100,000 times.

After every case: vnetd is alive; vnetd delivered more of b's frames to c during the
case (counted); the session was closed by vnetd (protocol cases: EOF on our socket) or
the queue stopped (queue_broken), the chain given back empty (tx_bad_chains, the used
index advanced) or the frame dropped (the named drop reason) for ring cases; a
counter on h says why (protocol_errors + bad_messages, or the drop reason) and a warning
line in vnetd's log (rate-limited: at most 10 per 5 s per call site); and once the
session is gone vnetd's open fd count is back to the baseline and its RSS within 4 MiB
(RSS not under a sanitizer, whose quarantine holds freed memory).
"""

import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness import vhost_user as vu  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic  # noqa: E402
from vnet_harness.vnetd import (PortSpec, Vnetd, find_program, require_vnetd,  # noqa: E402
                                sanitizer_of)

MAC_B, MAC_C = "02:00:00:00:0b:01", "02:00:00:00:0c:01"
# 100,000 by default; under a sanitizer (the sanitize stage) 10,000 unless set.
REPEAT_ENV = os.environ.get("VNET_HOSTILE_REPEAT")
REPEAT = 100000
RSS_SLACK_KB = 4096


def proc_status(pid):
    fds = len(os.listdir("/proc/%d/fd" % pid))
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return fds, rss


def start_b_to_c(s, vnetd, traffic, socks):
    """vnet-traffic on ports b (20,000 frames/s to c) and c (a sink), running until the
    session ends; returns once b's frames reach c."""
    cpu = cpu_plan()[1]
    common = ["--notify", "--cpu", cpu, "--log-level", "warn", "--duration", 900]
    s.spawn("c", [traffic, "--socket", socks["c"], "--mode", "rx", "--mac", MAC_C,
                  "--queue-size", 4096] + common)
    wait_until(lambda: vnetd.counters()["c"]["rx_packets"] >= 1, 20, what="c's announcement")
    s.spawn("b", [traffic, "--socket", socks["b"], "--mode", "tx", "--mac", MAC_B, "--dst-mac",
                  MAC_C, "--rate", 20000] + common)
    wait_until(lambda: vnetd.counters()["c"]["tx_packets"] > 100, 20,
               what="b's frames reaching c")


def check_flat(pid, baseline, name, check_rss):
    """vnetd's fd count back at `baseline` (fds, rss) within 5 s and its RSS within
    RSS_SLACK_KB of it (when check_rss); returns the (fds, rss) seen."""
    fds, rss = proc_status(pid)
    deadline = time.monotonic() + 5
    while fds != baseline[0] and time.monotonic() < deadline:
        time.sleep(0.02)
        fds, rss = proc_status(pid)
    if fds != baseline[0]:
        raise HarnessError("case '%s': vnetd has %d fds open, %d before"
                           % (name, fds, baseline[0]))
    if check_rss and rss > baseline[1] + RSS_SLACK_KB:
        raise HarnessError("case '%s': vnetd's RSS %d KiB, %d KiB at the baseline"
                           % (name, rss, baseline[1]))
    return fds, rss


# ---- protocol cases: vnetd must close the session ------------------------------------

def truncated_header(c, g):
    c.raw(struct.pack("<II", vu.GET_FEATURES, vu.VERSION))  # 8 of 12 bytes, then EOF
    c.sock.shutdown(1)


def truncated_payload(c, g):
    c.send(vu.SET_FEATURES, b"\0\0\0\0", size=8)  # says 8 bytes, sends 4, then EOF
    c.sock.shutdown(1)


def oversized_payload(c, g):
    c.send(vu.SET_FEATURES, b"", size=0xFFFFFFFF)


def short_payload(c, g):
    c.send(vu.SET_VRING_NUM, b"\1\0\0\0")  # a vring state is 8 bytes


def unknown_request(code):
    return lambda c, g: c.send(code, struct.pack("<Q", 0))


def bad_version(c, g):
    c.send(vu.GET_FEATURES, flags=0x2)


def wrong_fds(request):
    """Every message with a wrong number of fds: two where it takes none or one, none
    where it needs one per region."""
    def case(c, g):
        extra = [c.eventfd(), c.eventfd()]
        if request == vu.SET_MEM_TABLE:
            payload = struct.pack("<II", 1, 0) + vu.region()
            c.send(request, payload, [g.fd] + extra)
        elif request in (vu.SET_VRING_KICK, vu.SET_VRING_CALL, vu.SET_VRING_ERR):
            c.send(request, struct.pack("<Q", 0), extra)  # 2 fds for one ring
        else:
            c.send(request, struct.pack("<Q", 0), extra)
    return case


def no_fd_for_region(c, g):
    c.mem_table([vu.region()], [])


def ring_index(request, index):
    def case(c, g):
        if request in (vu.SET_VRING_KICK, vu.SET_VRING_CALL):
            c.send(request, struct.pack("<Q", index), [c.eventfd()])
        elif request == vu.SET_VRING_ADDR:
            c.send(request, struct.pack("<IIQQQQ", index, 0, vu.UVA, vu.UVA + vu.USED,
                                        vu.UVA + vu.AVAIL, 0))
        else:
            c.state(request, index, 256)
        if request == vu.GET_VRING_BASE:
            c.reply(request)  # (must not come: the session is closed)
    return case


def ring_size(n):
    return lambda c, g: c.state(vu.SET_VRING_NUM, 1, n)


def mem_table(regions, nfds=None):
    def case(c, g):
        c.send(vu.SET_OWNER)
        c.mem_table(regions, [g.fd] * (len(regions) if nfds is None else nfds))
    return case


def ring_address(desc, used, avail, size=256):
    def case(c, g):
        c.send(vu.SET_OWNER)
        c.mem_table([vu.region()], [g.fd])
        c.state(vu.SET_VRING_NUM, 1, size)
        c.state(vu.SET_VRING_BASE, 1, 0)
        c.addr(1, desc, used, avail)
        c.u64(vu.SET_VRING_KICK, 1, [c.eventfd()])
    return case


# ---- ring cases: the TX ring runs, then gets bad chains --------------------------------

def frame_bytes(n=64):
    hdr = bytes(vu.HDR_LEN)
    eth = bytes.fromhex("ffffffffffff020000000d01") + b"\x88\xb5"
    return hdr + eth + bytes(n - len(eth))


def ring_case(write_chains, size=256):
    """Start both rings, write the chains (write_chains(g) -> number of avail entries),
    publish and kick."""
    def case(c, g):
        c.setup(g, size=size)
        n = write_chains(g)
        g.avail_idx(n)
        c.kick(1)
    return case


def loop_chain(g):
    g.desc(0, vu.BUFS, 100, vu.VRING_DESC_F_NEXT, 1)
    g.desc(1, vu.BUFS, 100, vu.VRING_DESC_F_NEXT, 0)  # back to 0
    g.avail(0, 0, 256)
    return 1


def chain_longer_than_ring(g):  # size 8, 8 descriptors each pointing at the next, then 0
    for i in range(8):
        g.desc(i, vu.BUFS, 16, vu.VRING_DESC_F_NEXT, (i + 1) % 8)
    g.avail(0, 0, 8)
    return 1


def nested_indirect(g):
    table, inner = vu.BUFS + 0x1000, vu.BUFS + 0x2000
    g.desc(0, table, 16, vu.VRING_DESC_F_INDIRECT)
    g.desc(0, inner, 16, vu.VRING_DESC_F_INDIRECT, table=table)
    g.desc(0, vu.BUFS, 100, 0, table=inner)
    g.avail(0, 0, 256)
    return 1


def odd_indirect(g):
    table = vu.BUFS + 0x1000
    g.desc(0, table, 24, vu.VRING_DESC_F_INDIRECT)  # not a multiple of 16
    g.avail(0, 0, 256)
    return 1


def wrapping_address(g):
    g.desc(0, 2**64 - 16, 256)
    g.avail(0, 0, 256)
    return 1


def outside_memory(g):
    g.desc(0, vu.MEM_SIZE - 8, 64)  # runs past the end of the only region
    g.avail(0, 0, 256)
    return 1


def zero_length(g):
    g.desc(0, vu.BUFS, 0, vu.VRING_DESC_F_NEXT, 1)
    g.desc(1, vu.BUFS, 0)
    g.avail(0, 0, 256)
    return 1


def shorter_than_header(g):
    g.put(vu.BUFS, bytes(6))
    g.desc(0, vu.BUFS, 6)
    g.avail(0, 0, 256)
    return 1


def avail_far_ahead(g):
    g.desc(0, vu.BUFS, 100)
    for i in range(256):
        g.avail(i, 0, 256)
    return 1000  # more than the queue size ahead of used


def head_out_of_range(g):
    g.avail(0, 300, 256)
    return 1


def good_then_bad(g):  # a good frame first: the ring works until the bad one
    g.put(vu.BUFS + 0x3000, frame_bytes())
    g.desc(0, vu.BUFS + 0x3000, len(frame_bytes()))
    g.desc(1, vu.BUFS, 100, vu.VRING_DESC_F_NEXT, 1)  # loop onto itself
    g.avail(0, 0, 256)
    g.avail(1, 1, 256)
    return 2


# ---- repeated messages ----------------------------------------------------------------

def repeated(what):
    def case(c, g):
        if what == "get_features":  # (a front end that does not read its replies is cut off)
            for _ in range(REPEAT):
                c.call(vu.GET_FEATURES)
        elif what == "set_vring_call":
            c.send(vu.SET_OWNER)
            for _ in range(REPEAT):
                fd = os.eventfd(0, os.EFD_CLOEXEC)
                c.u64(vu.SET_VRING_CALL, 0, [fd])
                os.close(fd)
            c.call(vu.GET_FEATURES)
        elif what == "set_mem_table":
            c.send(vu.SET_OWNER)
            for _ in range(REPEAT):
                c.mem_table([vu.region()], [g.fd])
            c.call(vu.GET_FEATURES)
        elif what == "set_features":
            for _ in range(REPEAT):
                c.u64(vu.SET_FEATURES, vu.F_VERSION_1)
            c.call(vu.GET_FEATURES)
    return case


def cases():
    out = [
        ("truncated header", truncated_header, "closed"),
        ("truncated payload", truncated_payload, "closed"),
        ("payload size 0xFFFFFFFF", oversized_payload, "closed"),
        ("payload shorter than its type", short_payload, "closed"),
        ("unknown request 0", unknown_request(0), "closed"),
        ("unknown request 1000", unknown_request(1000), "closed"),
        ("unknown request 0xFFFFFFFF", unknown_request(0xFFFFFFFF), "closed"),
        ("protocol version 2", bad_version, "closed"),
        ("memory region without its fd", no_fd_for_region, "closed"),
    ]
    for req in range(1, vu.LAST_REQUEST + 1):
        out.append(("wrong fd count on request %d" % req, wrong_fds(req), "closed"))
    for req in (vu.SET_VRING_NUM, vu.SET_VRING_BASE, vu.GET_VRING_BASE, vu.SET_VRING_ADDR,
                vu.SET_VRING_KICK, vu.SET_VRING_CALL, vu.SET_VRING_ENABLE):
        for idx in (2, 0x10000, 0xFFFFFFFF):
            out.append(("ring index %#x on request %d" % (idx, req), ring_index(req, idx),
                        "closed"))
    for n in (0, 3, 32769, 65536):
        out.append(("ring size %d" % n, ring_size(n), "closed"))
    out += [
        ("zero-sized region", mem_table([vu.region(size=0)]), "closed"),
        ("overlapping regions", mem_table([vu.region(0, 0x80000, vu.UVA, 0),
                                           vu.region(0x40000, 0x80000, vu.UVA + 0x100000,
                                                     0x40000)]), "closed"),
        ("region overflowing 2^64", mem_table([vu.region(2**64 - 0x1000, 0x2000)]), "closed"),
        ("region past the end of the file", mem_table([vu.region(size=vu.MEM_SIZE * 4)]),
         "closed"),
        ("mmap offset past the end of the file",
         mem_table([vu.region(size=0x1000, offset=vu.MEM_SIZE * 2)]), "closed"),
        ("no regions", mem_table([]), "closed"),
        ("600 regions", mem_table([vu.region(gpa=i * 0x1000, size=0x1000,
                                             uva=vu.UVA + i * 0x1000, offset=i * 0x1000)
                                   for i in range(600)], nfds=0), "closed"),
        ("ring outside memory", ring_address(vu.UVA + 2 * vu.MEM_SIZE, vu.UVA + vu.USED,
                                             vu.UVA + vu.AVAIL), "closed"),
        ("misaligned descriptor table", ring_address(vu.UVA + 8, vu.UVA + vu.USED,
                                                     vu.UVA + vu.AVAIL), "closed"),
        ("used ring running past the region", ring_address(vu.UVA, vu.UVA + vu.MEM_SIZE - 64,
                                                           vu.UVA + vu.AVAIL), "closed"),
        ("descriptor loop", ring_case(loop_chain), "bad_chain"),
        ("chain longer than the ring", ring_case(chain_longer_than_ring, size=8), "bad_chain"),
        ("nested indirect table", ring_case(nested_indirect), "bad_chain"),
        ("indirect table of odd length", ring_case(odd_indirect), "bad_chain"),
        ("address that wraps", ring_case(wrapping_address), "bad_chain"),
        ("buffer running past memory", ring_case(outside_memory), "bad_chain"),
        ("zero-length descriptors", ring_case(zero_length), "tx_too_short"),
        ("chain shorter than the header", ring_case(shorter_than_header), "tx_too_short"),
        ("avail index far ahead", ring_case(avail_far_ahead), "broken"),
        ("head out of range", ring_case(head_out_of_range), "broken"),
        ("a good frame, then a loop", ring_case(good_then_bad), "bad_chain"),
    ]
    for what in ("get_features", "set_features", "set_vring_call", "set_mem_table"):
        out.append(("%s repeated" % what, repeated(what), "repeat"))
    return out


def body(s, args):
    traffic = find_program(s.build_dir, "vnet-traffic")
    socks = {p: s.path("%s.sock" % p) for p in "hbc"}
    # h offers one queue pair (queues=1): ring 2 is out of range for it.
    vnetd = Vnetd(s, [PortSpec(socks[p], name=p, queues=1 if p == "h" else None) for p in "hbc"],
                  log_level="info")
    vnetd.start()
    pid = vnetd.proc.pid
    # Under ASan freed memory sits in the quarantine: RSS is checked only without one.
    check_rss = sanitizer_of(pid) is None
    global REPEAT
    REPEAT = int(REPEAT_ENV) if REPEAT_ENV else (100000 if check_rss else 10000)
    log("repeated messages: %d each" % REPEAT)
    start_b_to_c(s, vnetd, traffic, socks)

    def h_state():
        info = vnetd.ports_info()["h"]
        drops = vnetd.counters()["h"]["drops"]
        return info, drops

    def delivered_to_c():
        return vnetd.counters()["c"]["tx_packets"]

    baseline = None
    results = []
    lines_total = 0
    for i, (name, fn, expect) in enumerate(cases()):
        info0, drops0 = h_state()
        c0 = delivered_to_c()
        log_at = vnetd.proc.log_size()
        g = vu.GuestMemory()
        conn = vu.Conn(socks["h"])
        try:
            fn(conn, g)
            raised = None
        except (vu.Closed, BrokenPipeError, ConnectionResetError) as e:
            raised = e
        if expect == "closed":
            if raised is None and not conn.closed_by_peer(5.0):
                raise HarnessError("case '%s': vnetd did not close the session" % name)
        elif expect == "repeat":
            if raised is not None:
                raise HarnessError("case '%s': the session failed: %s" % (name, raised))
        elif expect == "bad_chain":  # given back empty, counted, the queue goes on
            wait_until(lambda: h_state()[0]["extra"]["tx_bad_chains"]
                       > info0["extra"]["tx_bad_chains"], 5, interval=0.02,
                       what="case '%s': h's tx_bad_chains counter" % name)
            if g.used_idx() != 1 + (name.startswith("a good")):
                raise HarnessError("case '%s': used index %d, the chains were not completed"
                                   % (name, g.used_idx()))
        else:  # a drop reason on h
            reason = "queue_broken" if expect == "broken" else expect
            wait_until(lambda: h_state()[1][reason] > drops0[reason], 5, interval=0.02,
                       what="case '%s': h's %s counter" % (name, reason))
        conn.close()
        g.close()
        wait_until(lambda: not vnetd.ports_info()["h"]["connected"]
                   and vnetd.ports_info()["h"]["extra"]["disconnects"]
                   > info0["extra"]["disconnects"], 10, interval=0.02,
                   what="case '%s': the session gone" % name)
        vnetd.check_alive()
        info1, drops1 = h_state()
        e0, e1 = info0["extra"], info1["extra"]
        if expect == "closed":
            if e1["protocol_errors"] <= e0["protocol_errors"] and \
                    e1["bad_messages"] <= e0["bad_messages"]:
                raise HarnessError("case '%s': no counter says why (h extra %s)" % (name, e1))
        # b's frames kept reaching c while this went on.
        wait_until(lambda: delivered_to_c() > c0, 5, interval=0.02,
                   what="case '%s': b -> c still forwarded" % name)
        new_log = vnetd.proc.read_log(log_at)
        warned = any(" warn " in l or "warning" in l for l in new_log.splitlines())
        lines_total += int(warned)
        fds, rss = proc_status(pid)
        if baseline is None and i >= 2:
            baseline = (fds, rss)  # after the first sessions warmed the allocator up
        if baseline:
            fds, rss = check_flat(pid, baseline, name, check_rss)
        results.append((name, expect, warned, delivered_to_c() - c0, fds, rss))

    for name, expect, warned, fwd, fds, rss in results:
        log("  %-45s %-12s log=%s b->c +%d fds=%d rss=%d KiB"
            % (name, expect, "yes" if warned else "rl", fwd, fds, rss))
    log("%d hostile cases, all handled; fds %d -> %d, RSS %d -> %d KiB; %d cases logged a "
        "warning (the rest within the rate limit)"
        % (len(results), baseline[0], results[-1][4], baseline[1], results[-1][5], lines_total))
    if lines_total < 10:
        raise HarnessError("only %d cases produced a warning line" % lines_total)
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)


if __name__ == "__main__":
    run_test("hostile", body, [lambda a: require_root(), require_vnetd, require_traffic])
