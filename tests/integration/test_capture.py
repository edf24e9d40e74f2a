#!/usr/bin/env python3
"""vnetctl capture: live pcapng captures of a port's frames, filtered inside vnetd.

One vnetd with two workers and three TAP ports (ta, tb, tc), each in its own
network namespace (10.77.0.1, .2, .3). Asserts:
  - a bad filter: vnetctl exits != 0 with libpcap's message; vnetd goes on;
  - two captures at once (ta with `icmp`, tb rx-only with `udp port 9999`) plus a
    streaming one (`vnetctl capture ta -w - | tcpdump -nlr -`) while a pings b and
    b sends UDP to a on ports 9999 (7 datagrams) and 9998 (5): tcpdump prints echo
    requests before the capture ends; the files hold exactly the 5 echo requests
    inbound and 5 replies outbound on ta, exactly the 7 UDP 9999 datagrams inbound
    on tb (tshark: interface name, epb_flags direction; tcpdump -r reads them);
    vnetctl prints "N frames captured, 0 dropped by vnetd" after Ctrl-C;
  - --count 3 ends a capture by itself with exactly 3 frames;
  - TCP super-frames (TSO through the TAP's offloads) are captured whole, with a
    packet comment naming GSO and the partial checksum (tshark frame.comment);
  - `vnetctl capture tc -w - | tcpdump -c 2 -nr -`: when tcpdump exits, vnetctl
    sees EPIPE, ends the capture and exits 0 with its summary;
  - a reader that never reads while a floods c with UDP: the rings fill and frames
    are dropped (counted in the final Interface Statistics Block), the switch keeps
    forwarding everything a sends to c;
  - after every capture ended: no capture active, vnetd's fd count as before;
    `vnetctl del-port` of a port under capture ends that capture cleanly (statistics
    and summary); vnetd exits 0 on SIGTERM.
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import json

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.netns import Netns, require_netns, unique_name  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import TapSpec, Vnetd, require_vnetd  # noqa: E402

NET = "10.77.0."


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def captures(vnetd):
    return vnetd.vnetctl("counters")["captures"]


def udp_send(ns, dst, port, count, size=64, seconds=None):
    """Send `count` UDP datagrams (or as many as possible for `seconds`) from ns."""
    prog = ("import socket,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "d=b'x'*%d\nn=0\nt=time.monotonic()\n"
            "while %s:\n"
            "  try:\n    s.sendto(d,('%s',%d)); n+=1\n"
            "  except OSError: pass\n"
            "  %s\n"
            "print(n)\n") % (size, ("time.monotonic()-t<%f" % seconds) if seconds else
                             "n<%d" % count, dst, port, "" if seconds else "time.sleep(0.02)")
    _, out = ns.run("python3 -c \"%s\"" % prog.replace('"', '\\"'), timeout=60)
    return int(out.strip().splitlines()[-1])


def tshark_fields(path, *fields):
    argv = ["tshark", "-r", path, "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise HarnessError("tshark -r %s: %s" % (path, r.stderr[-1000:]))
    return [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()]


def tcpdump_lines(path, expr=""):
    r = subprocess.run("tcpdump -nr %s %s" % (path, expr), shell=True, capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        raise HarnessError("tcpdump -r %s: %s" % (path, r.stderr[-1000:]))
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


def parse_isb(data):
    """ifdrop, usrdeliv of the last Interface Statistics Block of a pcapng stream."""
    off, stats = 0, None
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        if blen < 12 or off + blen > len(data):
            break
        if btype == 5:
            o, stats = off + 20, {}  # after type, length, interface id, timestamp
            while o + 4 <= off + blen - 4:
                code, olen = struct.unpack_from("<HH", data, o)
                if code == 0:
                    break
                if olen == 8:
                    stats[code] = struct.unpack_from("<Q", data, o + 4)[0]
                o += 4 + ((olen + 3) & ~3)
        off += blen
    return stats


def body(s, args):
    nss = [Netns(s, "cap%s" % c) for c in "abc"]
    ifs = [unique_name("c%s" % c) for c in "abc"]
    names = ["ta", "tb", "tc"]
    vnetd = Vnetd(s, [TapSpec(n, ifname=i, netns=ns) for n, i, ns in zip(names, ifs, nss)],
                  extra_args=["--cpus", "0,1"], pin=False)
    vnetd.start()
    for k, (ns, i) in enumerate(zip(nss, ifs)):
        ns.add_address(i, NET + "%d/24" % (k + 1))
    ns_a, ns_b, ns_c = nss
    sent, got, out = ns_a.ping(NET + "2", count=2)  # ARP settled, FDB learned
    if got != sent:
        raise HarnessError("warm-up ping: %d of %d:\n%s" % (got, sent, out))
    ns_a.ping(NET + "3", count=1)
    pid = vnetd.proc.pid
    fds_before = fd_count(pid)
    ctl = [vnetd.vnetctl_binary, "--control", vnetd.control]

    # --- a bad filter ----------------------------------------------------------------------
    r = subprocess.run(ctl + ["capture", "ta", "--filter", "icmp and and", "-w", "/dev/null"],
                       capture_output=True, text=True, timeout=10)
    log("bad filter: status %d, %s" % (r.returncode, r.stderr.strip()))
    if r.returncode == 0 or "bad filter" not in r.stderr or "syntax error" not in r.stderr:
        raise HarnessError("bad filter not refused with libpcap's message: %d %r"
                           % (r.returncode, r.stderr))
    r = subprocess.run(ctl + ["capture", "nosuch", "-w", "/dev/null"], capture_output=True,
                       text=True, timeout=10)
    if r.returncode == 0 or "no port" not in r.stderr:
        raise HarnessError("capture of a missing port: %d %r" % (r.returncode, r.stderr))
    vnetd.check_alive()

    # --- two captures and a stream at once ----------------------------------------------------
    f1, f2, f3 = s.path("ta.pcapng"), s.path("tb.pcapng"), s.path("tc.pcapng")
    for f in (f1, f2, f3):
        s.remove_file_later(f)
    # Echo requests and replies only (b answers the UDP datagrams to closed ports with
    # ICMP port unreachable).
    echo = "icmp[icmptype] == icmp-echo or icmp[icmptype] == icmp-echoreply"
    c1 = subprocess.Popen(ctl + ["capture", "ta", "--filter", echo, "-w", f1],
                          stderr=subprocess.PIPE, text=True)
    c2 = subprocess.Popen(ctl + ["capture", "tb", "--direction", "rx", "--filter",
                                 "udp port 9999", "-w", f2], stderr=subprocess.PIPE, text=True)
    stream = subprocess.Popen(ctl + ["capture", "ta", "--filter", echo, "-w", "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tcpdump = subprocess.Popen(["tcpdump", "-nl", "-r", "-"], stdin=stream.stdout,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stream.stdout.close()
    for p in (c1, c2, stream, tcpdump):
        s.cleanup.push("capture process", lambda p=p: p.poll() is None and p.kill())
    wait_until(lambda: captures(vnetd)["active"] == 3, 10.0, interval=0.05,
               what="three captures running")
    sent, got, out = ns_a.ping(NET + "2", count=5, interval=0.1)
    if got != sent:
        raise HarnessError("ping: %d of %d:\n%s" % (got, sent, out))
    udp_send(ns_b, NET + "1", 9999, 7)
    udp_send(ns_b, NET + "1", 9998, 5)
    # The stream: tcpdump prints while the capture still runs.
    line = tcpdump.stdout.readline()
    log("tcpdump while the capture runs: %s" % line.strip())
    if "ICMP echo request" not in line or stream.poll() is not None:
        raise HarnessError("tcpdump printed %r before the capture ended" % line)
    for p in (c1, c2, stream):
        p.send_signal(signal.SIGINT)
    for p, name in ((c1, "ta"), (c2, "tb")):
        rc = p.wait(timeout=10)
        err = p.stderr.read()
        log("capture %s: status %d, %s" % (name, rc, err.strip()))
        if rc != 0 or "dropped by vnetd" not in err:
            raise HarnessError("capture %s ended with %d: %r" % (name, rc, err))
    stream.wait(timeout=10)
    tcpdump.wait(timeout=10)
    rest = tcpdump.stdout.read()  # (not communicate(): it would skip what readline buffered)
    streamed = [ln for ln in ([line] + rest.splitlines()) if "ICMP echo" in ln]
    if len(streamed) != 10:
        raise HarnessError("the stream through tcpdump held %d ICMP frames, not 10:\n%s"
                           % (len(streamed), "\n".join(streamed)))

    rows = tshark_fields(f1, "frame.interface_name", "frame.packet_flags_direction",
                         "icmp.type")
    log("ta capture (tshark): %s" % rows)
    req = [r for r in rows if r[2] == "8"]
    rep = [r for r in rows if r[2] == "0"]
    if len(rows) != 10 or len(req) != 5 or len(rep) != 5:
        raise HarnessError("ta capture: %d frames, %d requests, %d replies (expected 10/5/5)"
                           % (len(rows), len(req), len(rep)))
    if any(r[0] != "ta" for r in rows):
        raise HarnessError("interface names %s" % set(r[0] for r in rows))
    # epb_flags direction: 1 inbound (from the port into the switch), 2 outbound.
    if any(r[1] not in ("1", "0x00000001", "0x1") for r in req) or \
            any(r[1] not in ("2", "0x00000002", "0x2") for r in rep):
        raise HarnessError("directions: requests %s, replies %s"
                           % ([r[1] for r in req], [r[1] for r in rep]))
    lines = tcpdump_lines(f2)
    log("tb capture (tcpdump): %d lines" % len(lines))
    if len(lines) != 7 or not all(".9999:" in ln and "UDP" in ln for ln in lines):
        raise HarnessError("tb capture:\n%s" % "\n".join(lines))
    rows = tshark_fields(f2, "frame.packet_flags_direction")
    if len(rows) != 7 or any(r[0] not in ("1", "0x00000001", "0x1") for r in rows):
        raise HarnessError("tb directions %s" % rows)

    # --- --count -------------------------------------------------------------------------------
    c3 = subprocess.Popen(ctl + ["capture", "tc", "--count", "3", "--filter", "icmp", "-w", f3],
                          stderr=subprocess.PIPE, text=True)
    s.cleanup.push("capture process", lambda: c3.poll() is None and c3.kill())
    wait_until(lambda: captures(vnetd)["active"] == 1, 10.0, interval=0.05,
               what="the --count capture running")
    ns_a.ping(NET + "3", count=4, interval=0.1)
    rc = c3.wait(timeout=10)
    err = c3.stderr.read()
    if rc != 0 or "3 frames captured" not in err or len(tcpdump_lines(f3)) != 3:
        raise HarnessError("--count 3: status %d, %r, %d frames" % (rc, err, len(
            tcpdump_lines(f3))))

    # --- offload metadata: TSO super-frames from the TAP are captured as they are, marked ----------
    f4 = s.path("gso.pcapng")
    s.remove_file_later(f4)
    c5 = subprocess.Popen(ctl + ["capture", "ta", "--direction", "rx", "--count", "5",
                                 "--filter", "tcp and greater 3000", "-w", f4],
                          stderr=subprocess.PIPE, text=True)
    s.cleanup.push("capture process", lambda: c5.poll() is None and c5.kill())
    wait_until(lambda: captures(vnetd)["active"] == 1, 10.0, interval=0.05,
               what="the GSO capture running")
    ns_c.spawn("iperf3-s", ["iperf3", "-s", "-1", "-B", NET + "3", "-p", "5201"])
    wait_until(lambda: ":5201" in ns_c.run("ss -ltn")[1], 10.0, interval=0.1,
               what="iperf3 listening")
    ns_a.run("iperf3 -c %s3 -p 5201 -t 1 -f m" % NET, check=False, timeout=30)
    rc = c5.wait(timeout=10)
    rows = tshark_fields(f4, "frame.len", "frame.comment")
    log("GSO capture: status %d, %s" % (rc, rows[:3]))
    if rc != 0 or len(rows) != 5 or not all(
            "GSO tcpv4" in r[1] and "partial checksum" in r[1] for r in rows if len(r) > 1) \
            or any(len(r) < 2 for r in rows):
        raise HarnessError("TSO frames without their offload comment: %s" % rows)

    # --- the reader goes away (SIGPIPE/EPIPE in vnetctl) ----------------------------------------
    gone = subprocess.Popen(ctl + ["capture", "tc", "--filter", "icmp", "-w", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["tcpdump", "-c", "2", "-nr", "-"], stdin=gone.stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    gone.stdout.close()
    for p in (gone, head):
        s.cleanup.push("capture process", lambda p=p: p.poll() is None and p.kill())
    wait_until(lambda: captures(vnetd)["active"] == 1, 10.0, interval=0.05,
               what="the piped capture running")
    pinger = ns_a.spawn("ping-c", ["ping", "-n", "-i", "0.05", NET + "3"])
    try:
        out = head.communicate(timeout=10)[0]
        rc = gone.wait(timeout=10)
        err = gone.stderr.read().decode()
    finally:
        pinger.stop(5.0)
    log("tcpdump -c 2 exited; vnetctl: status %d, %s" % (rc, err.strip()))
    if len(out.splitlines()) != 2 or "dropped by vnetd" not in err:
        raise HarnessError("capture into a closed pipe: tcpdump %r, vnetctl %d %r"
                           % (out, rc, err))
    wait_until(lambda: captures(vnetd)["active"] == 0, 10.0, interval=0.05,
               what="the piped capture ended")

    # --- a reader that does not read ---------------------------------------------------------
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.cleanup.push("slow reader", slow.close)
    slow.connect(vnetd.control)
    slow.sendall(b'{"cmd":"capture","port":"ta"}\n')
    reply = b""
    while not reply.endswith(b"\n"):
        reply += slow.recv(1)
    if not json.loads(reply).get("ok"):
        raise HarnessError("slow capture refused: %r" % reply)
    before = vnetd.counters()
    k_before = ns_a.link_stats(ifs[0])
    n = udp_send(ns_a, NET + "3", 7777, 0, size=1400, seconds=1.0)

    def delivered():
        c = vnetd.counters()
        return (c["tc"]["tx_packets"] - before["tc"]["tx_packets"],
                c["ta"]["rx_packets"] - before["ta"]["rx_packets"])
    # Everything the kernel handed to vnetd's TAP (its tx) came into the switch...
    sent_to_vnetd = ns_a.link_stats(ifs[0])["tx_packets"] - k_before["tx_packets"]
    wait_until(lambda: delivered()[1] >= sent_to_vnetd, 10.0, interval=0.1,
               what="vnetd received the flood")
    to_c, from_a = delivered()
    log("flood: %d datagrams sent in a, %d frames to vnetd, %d received from ta, %d sent to tc"
        % (n, sent_to_vnetd, from_a, to_c))
    # ... and went out to tc (but for a's few other frames, such as an ARP probe to b):
    # the stalled capture cost the switch nothing.
    if to_c + 10 < sent_to_vnetd or sent_to_vnetd < 1000:
        raise HarnessError("with a stalled capture %d of %d frames reached tc"
                           % (to_c, sent_to_vnetd))
    if vnetd.counters()["tc"].get("drops") != before["tc"].get("drops"):
        raise HarnessError("tc drops grew: %s -> %s" % (before["tc"].get("drops"),
                                                       vnetd.counters()["tc"].get("drops")))
    slow.shutdown(socket.SHUT_WR)
    data = b""
    slow.settimeout(10)
    while True:
        chunk = slow.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    stats = parse_isb(data)
    log("slow reader: %d bytes, statistics %s" % (len(data), stats))
    if not stats or stats.get(5, 0) == 0:  # isb_ifdrop
        raise HarnessError("no drops counted for a reader that did not read: %s" % stats)
    if stats.get(8, 0) + stats[5] > stats.get(6, 0) or stats.get(6, 0) < sent_to_vnetd:
        raise HarnessError("statistics do not add up: %s (flood %d)" % (stats, sent_to_vnetd))
    slow.close()

    # --- everything torn down --------------------------------------------------------------------
    wait_until(lambda: captures(vnetd)["active"] == 0, 10.0, interval=0.05,
               what="no capture left")
    c = captures(vnetd)
    log("capture counters: %s" % c)
    if c["started"] != 7 or c["ended"] != 7 or c["bad_filters"] != 1:
        raise HarnessError("capture counters %s" % c)
    wait_until(lambda: fd_count(pid) == fds_before, 10.0, interval=0.1,
               what="vnetd's fd count back to %d (now %d)" % (fds_before, fd_count(pid)))
    # --- the port goes while a capture runs -----------------------------------------------------
    c4 = subprocess.Popen(ctl + ["capture", "tb", "-w", f3], stderr=subprocess.PIPE, text=True)
    s.cleanup.push("capture process", lambda: c4.poll() is None and c4.kill())
    wait_until(lambda: captures(vnetd)["active"] == 1, 10.0, interval=0.05,
               what="the capture of tb running")
    vnetd.vnetctl("del-port", "tb")
    rc = c4.wait(timeout=10)
    err = c4.stderr.read()
    log("tb removed: vnetctl status %d, %s" % (rc, err.strip()))
    if rc != 0 or "dropped by vnetd" not in err:
        raise HarnessError("capture of a removed port: %d %r" % (rc, err))

    if captures(vnetd)["active"] != 0:
        raise HarnessError("captures left after del-port: %s" % captures(vnetd))
    vnetd.stop_ok()


if __name__ == "__main__":
    run_test("capture", body,
             prerequisites=[lambda a: require_root(), require_vnetd, require_netns,
                            lambda a: require_tools("ping", "tcpdump", "tshark", "python3", "iperf3",
                                                   "ss")])
