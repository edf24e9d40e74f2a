#!/usr/bin/env python3
"""Hot upgrade (`vnetctl upgrade`) under traffic: no frame lost, no reconnect, fds flat.

vnetd has three ports: `a`, a vhost-user server; `b`, a vhost-user port where vnetd is the
client (vnet-traffic listens: `--listen`); `tap`, a TAP vnetd creates in a network
namespace the test makes (fixed MAC, txqueuelen TAP_QUEUE).  Three paced flows of
64-byte frames, RATE frames/s and N frames each, form a triangle through vnetd:
  A (vnet-traffic on a)  -> B (vnet-traffic on b)           vhost-user to vhost-user
  B                      -> the namespace (AF_PACKET)       vhost-user to TAP
  the namespace          -> A                               TAP to vhost-user
A and B are `--mode txrx --count N --check`; in the namespace one Python process sends
(an announcement, then N frames in vnet-traffic's format, so A's --check verifies them)
and another receives with kernel timestamps (SO_TIMESTAMPNS) and reports the largest
gaps between B's frames.  vnet-traffic cannot reconnect: a session lost in a
hand-over stops its flow for good.

First, before any front end exists, one upgrade with port b still trying to connect (the
new vnetd connects once B listens); its duration sizes the flows (FLOW_MIN to FLOW_MAX
seconds, or VNET_UPGRADE_FLOW_SECONDS) so that they outlast the upgrades.  Then, while the
flows run, UPGRADES `vnetctl --json upgrade`s, spread over the flows; after upgrade
FAIL_AFTER the failure cases: `--binary /nonexistent...`, `--binary /bin/false` and a
script that records its PID and sleeps (`--timeout 2`).

Asserted:
  - every upgrade reply: ok, old_pid is the vnetd the harness knew, pid a new process;
    pause_ms < MAX_PAUSE_MS; the old process exits with status 0 (the harness reaps it,
    the new one is re-parented to the harness, a child subreaper); each port's counters
    in the reply at least what the old process reported before;
  - zero frames lost: A, B and the namespace each received exactly N well-formed frames
    of their flow, A and B sent exactly N (+1 announcement); for every port, the sum over
    the replies' per-port counters plus the last vnetd's counters equals what the front
    ends counted (rx and tx, packets and bytes: vnet-traffic's tx, rx and other frames;
    the TAP's kernel counters in the namespace); no drop counted after the set-up (the
    only drops allowed are floods to a port not yet connected before the flows); the
    namespace's TAP dropped nothing (tx_dropped) and its packet socket dropped nothing;
  - the largest gap between B's frames arriving in the namespace (kernel timestamps)
    overlapping an upgrade (or a failed one) < MAX_GAP_MS (the largest overall is printed
    with what it overlaps); frames arrived after the last upgrade; under a sanitizer
    this bound and MAX_PAUSE_MS are SANITIZER_SLACK times larger;
  - the FDB was handed over: each receiver got at most MAX_FLOODED frames that were not
    for it (without the hand-over, every upgrade floods the flows until their MACs are
    seen again: hundreds of such frames);
  - the TAP is the one vnetd created at the start (same ifindex);
  - no reconnect: after every upgrade a and b are connected with features, `connections`
    at most 1 (exactly 1 before the first upgrade with front ends) and `disconnects` 0
    in every vnetd; no bad message, protocol error, bad fd, memory loss or bad chain;
  - vnetd's fd count (/proc/PID/fd) after the last upgrade equals that after the first
    (both read when stable), and is the same before and after the failure cases;
  - no child process of vnetd after any upgrade or failure case;
  - each failure case: vnetctl exits non-zero with a message (for the missing binary,
    naming it or saying it does not exist), the same vnetd (same PID, counters still
    growing from where they were: not a new process) keeps forwarding, no child left,
    the sleeping script was started (its PID file) and is gone, and the timeout case
    took at least ~2 s;
  - the last vnetd exits 0 on SIGTERM; its log (every generation's: they share the
    output) has no warning or error outside the failure cases but "cannot connect ...
    retrying" (port b before B listens).

VNET_UPGRADE_CYCLES (default 20) changes the number of upgrades under traffic.
"""

import os
import re
import stat
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.netns import Netns, require_netns, unique_name  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import (ControlConnection, PortSpec, TapSpec, Vnetd,  # noqa: E402
                                find_program, require_vnetd, sanitizer_of)

UPGRADES = int(os.environ.get("VNET_UPGRADE_CYCLES", "20"))
FAIL_AFTER = max(1, UPGRADES // 2)  # the failure cases run after this upgrade
RATE = 10000          # frames/s of each of the three flows
SIZE = 64
QUEUE = 4096          # vnet-traffic's rings: far more than a pause's worth of frames
TAP_QUEUE = 10000     # the TAP's queue toward vnetd (the kernel's default for a TAP: 500)
MAX_PAUSE_MS = 50.0   # pause_ms of every upgrade reply
MAX_GAP_MS = 50.0     # largest gap between B's frames arriving in the namespace
SANITIZER_SLACK = 4   # both bounds times this when vnetd runs under ASan or TSan
MAX_FLOODED = 20      # frames a receiver may get that were not for it (floods before learning)
FLOW_MIN, FLOW_MAX = 15.0, 50.0
MAC_A, MAC_B, MAC_T = "02:00:00:00:ab:01", "02:00:00:00:ab:02", "02:00:00:00:ab:03"
PORTS = ("a", "b", "tap")
COUNTER_KEYS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")
BAD_EXTRA = ("bad_messages", "protocol_errors", "bad_fds", "memory_lost", "rx_bad_chains",
             "tx_bad_chains", "rejected_connections", "read_errors", "write_errors")
VNETD_ALLOWED = (r"vhost-user b: cannot connect to .*; retrying every",)

# The namespace's side: `tx` sends an announcement (broadcast from its MAC, so vnetd learns
# the TAP's MAC), waits for a line on stdin, then COUNT frames to PEER at RATE in
# vnet-traffic's format; `rx` counts the frames from PEER to it (format checked), the
# others, and the 50 largest gaps between PEER's frames by their kernel receive timestamps.
PEER = r"""
import errno, json, signal, socket, struct, sys, time
mode, ifname = sys.argv[1], sys.argv[2]
me, peer = (bytes.fromhex(m.replace(":", "")) for m in sys.argv[3:5])
count, limit = int(sys.argv[5]), float(sys.argv[6])
ETH_P, SIZE, SO_RCVBUFFORCE, SO_TIMESTAMPNS = 0x88b5, 64, 33, 35
SOL_PACKET, PACKET_STATISTICS = 263, 6
PATTERN = bytes(i & 0xff for i in range(18, SIZE))
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
# The receiver sees every frame (ETH_P_ALL: also what is not vnet-traffic's ethertype).
proto = ETH_P if mode == "tx" else 0x0003
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
s.bind((ifname, proto))
if mode == "tx":
    rate = float(sys.argv[7])
    s.send(b"\xff" * 6 + me + b"\x88\xb5" + b"VNTA" + PATTERN)
    print("ANNOUNCED", flush=True)
    sys.stdin.readline()
    frame = peer + me + b"\x88\xb5" + b"VNTR" + PATTERN
    sent = errors = 0
    t0 = time.monotonic()
    while sent + errors < count and not stop:
        allowed = min(count, int(rate * (time.monotonic() - t0)) + 32)
        while sent + errors < allowed:
            try:
                s.send(frame)
                sent += 1
            except OSError:
                errors += 1  # the TAP's queue is full: the kernel dropped it
        time.sleep(0.001)
    print(json.dumps({"sent": sent, "errors": errors, "seconds": time.monotonic() - t0}),
          flush=True)
    sys.exit(0 if sent == count else 1)
s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.settimeout(0.2)
print("LISTENING", flush=True)
ours = other = bad = 0
first = last = None
gaps, downs, odd = [], [], []
deadline = time.monotonic() + limit
while ours < count and not stop and time.monotonic() < deadline:
    try:
        data, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(16))
    except socket.timeout:
        continue
    except OSError as e:  # ENETDOWN: the TAP was set down (reported once per event)
        if e.errno != errno.ENETDOWN:
            raise
        downs.append(time.time())
        continue
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    ts = None
    for level, kind, d in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", d[:16])
            ts = sec + nsec * 1e-9
    if ts is None:
        ts = time.time()
    if data[0:6] != me or data[6:12] != peer:
        other += 1
        if data[12:14] != b"\x88\xb5" and len(odd) < 10:
            odd.append(data[:32].hex())
        continue
    if len(data) != SIZE or data[14:18] != b"VNTR" or data[18:] != PATTERN:
        bad += 1
        continue
    ours += 1
    if last is None:
        first = ts
    elif ts - last > 0.015 or not gaps or ts - last > gaps[0][1] / 1e3:
        gaps.append((ts, (ts - last) * 1e3))
        gaps.sort(key=lambda g: -g[1])
        del gaps[50:]
    last = ts
packets, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
print(json.dumps({"ours": ours, "other": other, "bad": bad, "first": first, "last": last,
                  "gaps": gaps, "socket_drops": drops, "downs": downs,
                  "odd": odd}),
      flush=True)
sys.exit(0 if ours == count else 1)
"""

SLEEPER = "#!/bin/sh\necho $$ > %s\nexec sleep 3600\n"


def port_infos(vnetd):
    """{name: port} from `ports` over a fresh control connection (closed at once)."""
    c = ControlConnection(vnetd.control)
    try:
        return {p["name"]: p for p in c.request("ports")["ports"]}
    finally:
        c.close()


def counters_of(info):
    """{port: {rx_packets, tx_packets, rx_bytes, tx_bytes, drops (sum)}} from port infos or
    an upgrade reply's "ports"."""
    out = {}
    for name, p in info.items():
        c = p.get("counters", p)
        drops = c.get("drops", 0)
        if isinstance(drops, dict):
            reasons = {k: v for k, v in drops.items() if v}
        else:
            reasons = {"unspecified": drops} if drops else {}
        out[name] = dict({k: c[k] for k in COUNTER_KEYS}, drops=sum(reasons.values()),
                         drop_reasons=reasons)
    return out


def check_sessions(info, gen, first_gen_with_front_ends=False, names=("a", "b")):
    """vhost-user ports `names` connected with features and never reconnected; no bad
    counter on any port."""
    for name in names:
        p = info.get(name)
        if not p or not p.get("connected") or not p.get("features"):
            raise HarnessError("vnetd generation %d: port %s not connected: %s" % (gen, name, p))
        extra = p.get("extra", {})
        conns, disc = extra.get("connections"), extra.get("disconnects")
        if conns is None or disc is None:
            raise HarnessError("port %s reports no connections/disconnects: %s" % (name, p))
        if disc != 0 or conns > 1 or (first_gen_with_front_ends and conns != 1):
            raise HarnessError("vnetd generation %d: port %s counts %d connections and %d "
                               "disconnects: the front end reconnected or was dropped"
                               % (gen, name, conns, disc))
    for name, p in info.items():
        bad = {k: v for k, v in p.get("extra", {}).items() if k in BAD_EXTRA and v}
        if bad:
            raise HarnessError("vnetd generation %d: port %s: %s" % (gen, name, bad))


def tap_ifindex(ns, ifname):
    _, out = ns.run("cat /sys/class/net/%s/ifindex" % ifname)
    return int(out.strip())


def fd_table(pid):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            pass
    return out


def stable_fd_count(vnetd, what):
    """vnetd's fd count once three reads 20 ms apart agree (vnetd closes the connection of
    a control client that just went away asynchronously)."""
    seen = []

    def stable():
        vnetd.check_alive()
        seen.append(vnetd.fd_count())
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]
    wait_until(stable, 5, interval=0.02, what="a stable fd count of vnetd (%s): %s"
               % (what, seen[-10:]))
    return seen[-1]


def no_children(vnetd, what):
    """vnetd has no child process (a zombie it has not reaped yet may linger briefly)."""
    try:
        wait_until(lambda: not vnetd.children(), 5, interval=0.02,
                   what="vnetd without children")
    except HarnessError:
        kids = []
        for pid in vnetd.children():
            try:
                with open("/proc/%d/stat" % pid) as f:
                    kids.append(f.read().strip())
            except OSError:
                pass
        raise HarnessError("%s: vnetd (pid %d) has child processes left: %s"
                           % (what, vnetd.proc.pid, kids))


def check_reply(reply, old_pid, before, gen, ports=PORTS):
    """An upgrade reply: the pids, pause_ms, the old process's counters of every port in
    `ports` (at least what it reported before).  Returns its per-port counters."""
    for key in ("old_pid", "pid", "pause_ms", "ports"):
        if key not in reply:
            raise HarnessError("upgrade %d: no %s in the reply: %s" % (gen, key, reply))
    if reply["old_pid"] != old_pid or reply["pid"] == old_pid:
        raise HarnessError("upgrade %d: reply old_pid %s pid %s, vnetd was %d"
                           % (gen, reply["old_pid"], reply["pid"], old_pid))
    pause = reply["pause_ms"]
    if not isinstance(pause, (int, float)) or pause < 0:
        raise HarnessError("upgrade %d: pause_ms %r" % (gen, pause))
    if set(reply["ports"]) != set(ports):
        raise HarnessError("upgrade %d: reply ports %s, expected %s"
                           % (gen, sorted(reply["ports"]), ports))
    got = counters_of(reply["ports"])
    for name in ports:
        for k in COUNTER_KEYS + ("drops",):
            if got[name][k] < before[name][k]:
                raise HarnessError("upgrade %d: the reply's %s %s is %d, the old vnetd reported "
                                   "%d before" % (gen, name, k, got[name][k], before[name][k]))
    return got


def body(s, args):
    traffic = find_program(s.build_dir, "vnet-traffic")
    peer_cpu = cpu_plan()[1]
    ns = Netns(s, "u")
    tap_if = unique_name("tu")
    sock_a, sock_b = s.path("a.sock"), s.path("b.sock")
    s.remove_file_later(sock_b)
    vnetd = Vnetd(s, [PortSpec(sock_a, name="a"), PortSpec(sock_b, client=True, name="b"),
                      TapSpec("tap", ifname=tap_if, netns=ns)])
    vnetd.start()
    san = sanitizer_of(vnetd.proc.pid)
    max_pause, max_gap = ((MAX_PAUSE_MS * SANITIZER_SLACK, MAX_GAP_MS * SANITIZER_SLACK) if san
                          else (MAX_PAUSE_MS, MAX_GAP_MS))
    ns.run("ip link set dev %s address %s txqueuelen %d up" % (tap_if, MAC_T, TAP_QUEUE))
    k0 = ns.link_stats(tap_if)
    ifindex0 = tap_ifindex(ns, tap_if)
    pids = [vnetd.proc.pid]
    finals = []       # per-port counters of every vnetd that handed over (from the replies)
    pauses = []
    windows = []      # (wall clock start, end, what) of every upgrade and failure case
    durations = []

    def upgrade(gen, before):
        old = vnetd.proc.pid
        t0, m0 = time.time(), time.monotonic()
        reply = vnetd.upgrade(timeout=60)
        dt = time.monotonic() - m0
        windows.append((t0, time.time(), "upgrade %d" % gen))
        got = check_reply(reply, old, before, gen)
        finals.append(got)
        pauses.append(reply["pause_ms"])
        durations.append(dt)
        pids.append(vnetd.proc.pid)
        log("upgrade %d: pid %d -> %d in %.0f ms, data path paused %.2f ms"
            % (gen, old, vnetd.proc.pid, dt * 1e3, reply["pause_ms"]))
        if reply["pause_ms"] >= max_pause:
            raise HarnessError("upgrade %d: the data path stood still %.1f ms (>= %.0f)"
                               % (gen, reply["pause_ms"], max_pause))
        no_children(vnetd, "upgrade %d" % gen)
        return dt

    # Upgrade 0: no front end yet, port b retrying its connection.  It also times an
    # upgrade here (a sanitizer makes everything slower) to size the flows.
    m0 = time.monotonic()
    info = port_infos(vnetd)
    upgrade(0, counters_of(info))
    info = port_infos(vnetd)
    stable_fd_count(vnetd, "after upgrade 0")
    per_upgrade = time.monotonic() - m0
    fail_budget = 2.0 + 3 * per_upgrade + 3.0
    flow_seconds = float(os.environ.get("VNET_UPGRADE_FLOW_SECONDS", 0)) or min(
        FLOW_MAX, max(FLOW_MIN, 6.0 + 1.6 * per_upgrade * UPGRADES + fail_budget))
    n = int(RATE * flow_seconds)
    log("an upgrade cycle takes %.0f ms here%s: %d frames per flow at %d/s (%.0f s)"
        % (per_upgrade * 1e3, " (%s)" % san if san else "", n, RATE, flow_seconds))

    # The namespace's receiver and sender; the sender's announcement teaches vnetd MAC_T.
    script = s.path("peer.py")
    with open(script, "w") as f:
        f.write(PEER)
    py = ["taskset", "-c", str(peer_cpu), "python3", "-u", script]
    ns_rx = ns.spawn("ns-rx", py + ["rx", tap_if, MAC_T, MAC_B, n, flow_seconds + 120])
    ns_rx.wait_for_log(r"^LISTENING", 15)
    ns_tx = ns.spawn("ns-tx", py + ["tx", tap_if, MAC_T, MAC_A, n, flow_seconds + 120, RATE],
                     stdin_pipe=True)
    ns_tx.wait_for_log(r"^ANNOUNCED", 15)
    wait_until(lambda: port_infos(vnetd)["tap"]["counters"]["rx_packets"] >= 1, 10,
               what="the namespace's announcement in vnetd")

    common = ["--mode", "txrx", "--count", n, "--rate", RATE, "--size", SIZE, "--queue-size",
              QUEUE, "--check", "--notify", "--cpu", peer_cpu, "--timeout", flow_seconds + 90,
              "--log-level", "warn"]
    fe_b = s.spawn("b", [traffic, "--socket", sock_b, "--listen", "--mac", MAC_B, "--dst-mac",
                         MAC_T] + common)
    wait_until(lambda: os.path.exists(sock_b) or not fe_b.alive(), 10, interval=0.02,
               what="B listening on %s" % sock_b)
    # The new vnetd (upgrade 0) connects to B and B announces itself.
    wait_until(lambda: (vnetd.check_alive(), fe_b.alive() and
                        port_infos(vnetd)["b"]["counters"]["rx_packets"] >= 1)[1], 15,
               what="vnetd connected to B and B's announcement (b rx_packets)")
    fe_a = s.spawn("a", [traffic, "--socket", sock_a, "--mac", MAC_A, "--dst-mac", MAC_B]
                   + common)
    wait_until(lambda: fe_a.alive() and port_infos(vnetd)["a"]["counters"]["rx_packets"] >= 1,
               15, what="A connected and its announcement (a rx_packets)")
    ns_tx.send("go\n")
    t_go = time.monotonic()

    def flowing():
        c = counters_of(port_infos(vnetd))
        return all(c[p]["rx_packets"] > 200 and c[p]["tx_packets"] > 200 for p in PORTS)
    wait_until(flowing, 15, what="all three flows through vnetd")
    info = port_infos(vnetd)
    check_sessions(info, 1, first_gen_with_front_ends=True)
    before = counters_of(info)
    setup_drops = sum(c["drops"] for f in finals for c in f.values()) + sum(
        c["drops"] for c in before.values())
    setup_reasons = [(p, c["drop_reasons"]) for p, c in before.items() if c["drops"]]
    log("flows running; drops during the set-up: %d %s" % (setup_drops, setup_reasons))

    def flows_alive(what):
        for p in (fe_a, fe_b, ns_tx, ns_rx):
            if not p.alive():
                raise HarnessError("%s: %s exited (status %s) before it: the flows (%.0f s) "
                                   "ended before the upgrades did; log tail:\n%s"
                                   % (what, p.name, p.returncode, flow_seconds, p.log_tail()))

    fds = {}
    interval = max(0.0, (flow_seconds - 5.0 - fail_budget) * 0.8 / UPGRADES)
    target = t_go + 1.0
    for gen in range(1, UPGRADES + 1):
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)  # spreads the upgrades over the flows
        target = max(time.monotonic(), target) + interval
        flows_alive("upgrade %d" % gen)
        upgrade(gen, before)
        info = port_infos(vnetd)
        check_sessions(info, gen + 1)
        before = counters_of(info)
        if gen in (1, UPGRADES):
            fds[gen] = stable_fd_count(vnetd, "after upgrade %d" % gen)
            if gen == 1:
                fd_table1 = fd_table(vnetd.proc.pid)
        if gen == FAIL_AFTER:
            failure_log = failure_cases(s, vnetd, windows)
            before = counters_of(port_infos(vnetd))
            target = time.monotonic()
    t_last = windows[-1][1]
    flows_alive("after the last upgrade")
    log("%d upgrades in %.1f s; now waiting for the flows to end" % (UPGRADES,
                                                                   time.monotonic() - t_go))
    if fds[UPGRADES] != fds[1]:
        now_table = fd_table(vnetd.proc.pid)
        raise HarnessError("vnetd's fd count went from %d after upgrade 1 to %d after upgrade "
                           "%d; fds then: %s; now: %s" % (fds[1], fds[UPGRADES], UPGRADES,
                                                          fd_table1, now_table))

    # The flows end by themselves: every front end got its N frames.  One that does not is
    # stopped (SIGTERM: each prints what it counted); the counts are compared all the same
    # (where frames went missing), then what is missing is reported.
    deadline = time.monotonic() + flow_seconds + 30
    late = [p for p in (fe_a, fe_b, ns_tx) if p.wait(max(0.1, deadline - time.monotonic()))
            is None]
    # Once every sender is done, what the namespace is still to get is a few ms away.
    if ns_rx.wait(max(5.0, deadline - time.monotonic()) if late else 5.0) is None:
        late.append(ns_rx)
    for p in late:
        log("%s did not finish: stopped" % p.name)
        p.stop(5)
    ra, rb = result_of(fe_a), result_of(fe_b)
    tx_res, rx_res = result_of(ns_tx), result_of(ns_rx)
    log("A: tx %s rx %s" % (ra["tx"], ra["rx"]))
    log("B: tx %s rx %s" % (rb["tx"], rb["rx"]))
    log("namespace: sent %s, received %s" % (tx_res, {k: v for k, v in rx_res.items()
                                                      if k != "gaps"}))
    problems = []

    def problem(msg):
        log("FAILED: " + msg)
        problems.append(msg)
    for name, r, p in (("A", ra, fe_a), ("B", rb, fe_b)):
        if (p.returncode != 0 or not r["complete"] or r["tx"]["packets"] != n
                or r["rx"]["packets"] != n or r["rx"]["bad_packets"] or r["announce_packets"] != 1):
            problem("%s (status %s) sent %d (+%d announcements) and received %d (%d malformed) "
                    "of %d frames" % (name, p.returncode, r["tx"]["packets"],
                                      r["announce_packets"], r["rx"]["packets"],
                                      r["rx"]["bad_packets"], n))
    if ns_tx.returncode != 0 or tx_res["sent"] != n or tx_res["errors"]:
        problem("the namespace sent %d of %d frames, %d refused by the TAP's full queue"
                % (tx_res["sent"], n, tx_res["errors"]))
    if rx_res["downs"]:
        problem("the TAP went down %d times (the receiver's socket got ENETDOWN) at %s; "
                "upgrades: %s" % (len(rx_res["downs"]), rx_res["downs"], windows))
    if ns_rx.returncode != 0 or rx_res["ours"] != n or rx_res["bad"] or rx_res["socket_drops"]:
        problem("the namespace received %d of %d frames from B (%d malformed, %d dropped by "
                "its socket; vnetd took %d from B, counting its announcement)"
                % (rx_res["ours"], n, rx_res["bad"], rx_res["socket_drops"],
                   sum(f["b"]["rx_packets"] for f in finals)
                   + counters_of(port_infos(vnetd))["b"]["rx_packets"]))
    ifindex1 = tap_ifindex(ns, tap_if)
    if ifindex1 != ifindex0:
        problem("the TAP's ifindex went from %d to %d: not the TAP vnetd created first"
                % (ifindex0, ifindex1))

    # Every frame counted once over all vnetd generations.
    last = counters_of(port_infos(vnetd))
    total = {p: {k: sum(f[p][k] for f in finals) + last[p][k] for k in COUNTER_KEYS + ("drops",)}
             for p in PORTS}
    k1 = ns.link_stats(tap_if)
    kd = {k: k1[k] - k0[k] for k in k1}
    want = {
        "a": {"rx_packets": ra["tx"]["packets"] + ra["announce_packets"],
              "tx_packets": ra["rx"]["packets"] + ra["rx"]["other_packets"]
              + ra["rx"]["bad_packets"]},
        "b": {"rx_packets": rb["tx"]["packets"] + rb["announce_packets"],
              "tx_packets": rb["rx"]["packets"] + rb["rx"]["other_packets"]
              + rb["rx"]["bad_packets"]},
        "tap": {"rx_packets": kd["tx_packets"], "tx_packets": kd["rx_packets"]},
    }
    for p in PORTS:
        want[p]["rx_bytes"] = SIZE * want[p]["rx_packets"]
        want[p]["tx_bytes"] = SIZE * want[p]["tx_packets"]
    log("counted by the %d vnetd generations: %s" % (len(finals) + 1, total))
    log("counted by the front ends and the namespace's kernel: %s" % want)
    wrong = ["%s %s: vnetd %d, front end %d" % (p, k, total[p][k], want[p][k])
             for p in PORTS for k in COUNTER_KEYS if total[p][k] != want[p][k]]
    if wrong:
        problem("vnetd's counters (the replies' plus the last vnetd's) differ from the front "
                "ends': %s" % "; ".join(wrong))
    # The FDB is handed over: after an upgrade the flows' frames still go to their port
    # only. Frames that were not the receiver's (floods before a MAC was learned: the
    # first frames of each flow, the announcements) stay a handful; without the hand-over
    # every upgrade floods until the MACs are seen again (hundreds over 20 upgrades).
    flooded = {"A": ra["rx"]["other_packets"], "B": rb["rx"]["other_packets"],
               "namespace": rx_res["other"]}
    log("frames that were not the receiver's (flooded): %s" % flooded)
    if max(flooded.values()) > MAX_FLOODED:
        problem("frames flooded to a receiver they were not for: %s (at most %d): the FDB "
                "was not handed over" % (flooded, MAX_FLOODED))
    log("the namespace's TAP: %s" % kd)
    if want["tap"]["rx_packets"] != n + 1 or kd["tx_dropped"] or kd["tx_errors"]:
        problem("the namespace's TAP sent %d frames (want %d + 1 announcement), dropped %d"
                % (kd["tx_packets"], n, kd["tx_dropped"]))
    drops = sum(t["drops"] for t in total.values())
    if drops != setup_drops:
        problem("vnetd dropped %d frames after the set-up (last vnetd: %s)"
                % (drops - setup_drops, {p: last[p]["drop_reasons"] for p in PORTS}))
    if problems:
        raise HarnessError("; ".join(problems))

    # The largest gap between B's frames in the namespace, and what it overlaps.
    def during(t_end, gap_ms):
        t_start = t_end - gap_ms / 1e3
        hits = [w for a, b, w in windows if t_start < b and t_end > a]
        return ", ".join(hits) or "no upgrade"
    gaps = sorted((tuple(g) for g in rx_res["gaps"]), key=lambda g: -g[1])
    worst = gaps[0] if gaps else (rx_res["last"], 0.0)
    log("largest gaps between B's frames in the namespace: %s"
        % ", ".join("%.1f ms (%s)" % (g, during(t, g)) for t, g in gaps[:5]
                    if g >= 5 or (t, g) == worst))
    log("pause_ms of the upgrades: max %.2f, mean %.2f; vnetctl upgrade took max %.0f ms, mean "
        "%.0f ms" % (max(pauses), sum(pauses) / len(pauses), max(durations) * 1e3,
                     sum(durations) / len(durations) * 1e3))
    # The bound is on what an upgrade causes: a gap that overlaps one. A gap that overlaps
    # none is the test machine's scheduling of the paced senders (reported above).
    in_upgrade = [g for g in gaps if during(*g) != "no upgrade"]
    worst_up = max(in_upgrade, key=lambda g: g[1]) if in_upgrade else (0.0, 0.0)
    if worst_up[1] >= max_gap:
        raise HarnessError("B's frames stopped arriving in the namespace for %.1f ms (>= %.0f) "
                           "during %s" % (worst_up[1], max_gap, during(*worst_up)))
    if rx_res["last"] <= t_last:
        raise HarnessError("no frame arrived in the namespace after the last upgrade")

    check_sessions_disconnect_ok(vnetd)
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("the last vnetd (pid %d) exited with status %s" % (vnetd.proc.pid, rc))
    with open(vnetd.proc.log_path, "rb") as f:
        text = f.read()
    outside = (text[:failure_log[0]] + text[failure_log[1]:]).decode("utf-8", "replace")
    bad = [line for line in outside.splitlines()
           if re.match(r"^\S+ (warning|error|critical) ", line)
           and not any(re.search(a, line) for a in VNETD_ALLOWED)]
    if bad:
        raise HarnessError("vnetd logged (outside the failure cases):\n%s" % "\n".join(bad))
    print("%d upgrades under 3 x %d frames/s (%d frames each way): none lost, largest gap "
          "%.1f ms (%s), largest overlapping an upgrade %.1f ms, pause_ms max %.2f, fds %d "
          "after upgrade 1 and %d; pids %s"
          % (UPGRADES, RATE, n, worst[1], during(*worst), worst_up[1], max(pauses), fds[1],
             fds[UPGRADES],
             " ".join(str(p) for p in pids)))


def check_sessions_disconnect_ok(vnetd):
    """After the flows: the front ends exited, so their sessions ended exactly once."""
    info = port_infos(vnetd)
    for name in ("a", "b"):
        extra = info[name].get("extra", {})
        if extra.get("disconnects", 0) > 1 or extra.get("connections", 0) > 1:
            raise HarnessError("port %s after the flows: %s" % (name, extra))


def failure_cases(s, vnetd, windows):
    """Upgrades that must fail, each with the old vnetd going on as if nothing happened.
    Returns the byte range of vnetd's log they wrote (where warnings are expected)."""
    marker = s.path("sleeper.pid")
    script = s.path("sleeper.sh")
    with open(script, "w") as f:
        f.write(SLEEPER % marker)
    os.chmod(script, stat.S_IRWXU)

    def kill_sleeper():  # only if vnetd left it running: by its PID, checked to be the sleep
        try:
            with open(marker) as f:
                pid = int(f.read())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"sleep" in f.read():
                    os.kill(pid, 9)
        except (OSError, ValueError):
            pass
    s.cleanup.push("the sleeping upgrade binary", kill_sleeper)

    fds0 = stable_fd_count(vnetd, "before the failure cases")
    log_start = vnetd.proc.log_size()
    cases = [("a missing binary", ["--binary", "/nonexistent/vnetd"],
              r"(?i)/nonexistent/vnetd|no such file|not found|does not exist"),
             ("a binary that exits at once", ["--binary", "/bin/false"], None),
             ("a binary that never answers", ["--binary", script, "--timeout", "2"], None)]
    for what, argv, want_msg in cases:
        pid = vnetd.proc.pid
        c0 = counters_of(port_infos(vnetd))
        t0, m0 = time.time(), time.monotonic()
        rc, doc, err = vnetd.run_vnetctl("upgrade", *argv, timeout=60)
        dt = time.monotonic() - m0
        windows.append((t0, time.time(), "failed upgrade (%s)" % what))
        msg = ((doc or {}).get("error") or "") + " " + err.strip()
        log("upgrade with %s: vnetctl status %d after %.0f ms: %s" % (what, rc, dt * 1e3,
                                                                     msg.strip()))
        if rc == 0 or (doc or {}).get("ok"):
            raise HarnessError("upgrade with %s succeeded: status %d, %s" % (what, rc, doc))
        if not msg.strip() or (want_msg and not re.search(want_msg, msg)):
            raise HarnessError("upgrade with %s: vnetctl's message %r does not say what is "
                               "wrong" % (what, msg.strip()))
        vnetd.check_alive()
        if vnetd.proc.pid != pid:
            raise HarnessError("upgrade with %s: the harness lost track of vnetd" % what)
        no_children(vnetd, "upgrade with %s" % what)
        # The same process (its counters go on from where they were, a new one's would start
        # at zero) keeps forwarding every flow.
        c1 = counters_of(port_infos(vnetd))
        for p in PORTS:
            for k in COUNTER_KEYS:
                if c1[p][k] < c0[p][k]:
                    raise HarnessError("upgrade with %s: %s %s went from %d to %d: not the same "
                                       "vnetd" % (what, p, k, c0[p][k], c1[p][k]))

        def grew():
            c = counters_of(port_infos(vnetd))
            return all(c[p]["rx_packets"] > c1[p]["rx_packets"] + 100 for p in PORTS)
        wait_until(grew, 5, what="every flow through vnetd after the upgrade with %s" % what)
        if "--timeout" in argv:
            if dt < 1.8:
                raise HarnessError("upgrade with %s failed after %.2f s, before its 2 s timeout"
                                   % (what, dt))
            if not os.path.exists(marker):
                raise HarnessError("upgrade with %s: vnetd never started %s" % (what, script))
            with open(marker) as f:
                child = int(f.read())
            wait_until(lambda: not os.path.exists("/proc/%d" % child), 5, interval=0.02,
                       what="the sleeping binary (pid %d) gone after the failed upgrade" % child)
    log_end = vnetd.proc.log_size()
    fds1 = stable_fd_count(vnetd, "after the failure cases")
    if fds1 != fds0:
        raise HarnessError("vnetd's fd count went from %d to %d over the failed upgrades"
                           % (fds0, fds1))
    log("failure cases done: pid %d still serving, %d fds before and after" % (vnetd.proc.pid,
                                                                              fds1))
    return log_start, log_end


if __name__ == "__main__":
    run_test("upgrade", body, [lambda a: require_root(), require_vnetd, require_traffic,
                               require_netns])
