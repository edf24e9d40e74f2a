#!/usr/bin/env python3
"""A Linux guest streams through vnetd while vnetd is hot-upgraded 20 times.

test_restart.py with `vnetctl upgrade` instead of SIGKILL: the same guest, receiver and
paced sender (imported from it), two variants, each with its own vnetd (command line), one
QEMU TCG guest on vhost-user port `guest` and TAP port `tap` that vnetd creates in a
network namespace the test makes:
  client  vnetd connects, QEMU listens (`server=on,wait=off`);
  server  vnetd listens, QEMU connects, without `reconnect`: a connection the upgrade
          dropped would end the guest's network for good.
The guest writes PAYLOAD_MB of /dev/urandom, takes its SHA-256 and streams it with busybox
`nc` to the Python receiver in the namespace (TCP_INFO bytes_received sampled every 2 ms,
every pause over 20 ms logged with its length).  While the stream runs, UPGRADES times
(spread over the stream by the bytes received, at least one 64 KiB chunk per vnetd): `vnetctl
--json upgrade`; the harness follows the new PID, the old vnetd must exit 0.  Then the rest
unpaced.

Asserted per variant:
  - every reply: a new pid, pause_ms < MAX_PAUSE_MS, and the old vnetd forwarded both ways
    (guest -> TAP and back: its counters in the reply);
  - the receiver got exactly the payload (length and SHA-256 the guest computed), nc exited 0;
  - QEMU saw no disconnect: the guest's eth0 carrier_changes is the same before the first
    and after the last upgrade (QEMU takes the link down when its vhost-user back end goes
    away; checked at the end: stopping vnetd does move it), QEMU printed nothing on its
    stderr (lines `qemu-system-x86_64: ...`) while vnetd ran, every vnetd reports the
    guest's port connected, at most 1 connection and no disconnect;
  - the TAP in the namespace is the same interface after the upgrades (ifindex, address);
  - no frame lost or counted twice over the hand-overs: the sum of every old vnetd's
    counters (replies) and the last one's, from the stream's start, equals the guest's eth0
    rx/tx packets and the namespace's TAP rx/tx packets over the same time; and with two
    ports every frame taken from one was delivered to the other or counted as a drop; no
    drop but rx_no_buffers toward the guest (printed); the guest's TCP had no
    retransmission timeout (TcpExt TCPTimeouts; retransmissions printed);
  - the largest stall of the stream (printed: overall and overlapping an upgrade) < STALL;
  - no NETDEV WATCHDOG, TX timeout, virtio error, warning or oops in the guest's kernel log;
    pings both ways after the last upgrade, 5/5;
  - vnetd's fd count the same after the last upgrade as after the first; no child process
    of vnetd after any upgrade;
  - the last vnetd exits 0 on SIGTERM; its log (every generation's) has nothing at warning
    level or above but "cannot connect ... retrying" (QEMU gone at the end, client variant).

VNET_UPGRADE_CYCLES (default 20) and VNET_RESTART_PAYLOAD_MB (default 32) change the sizes.
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_restart as restart  # noqa: E402  (the guest's sender, the receiver, checks)
from test_upgrade import (check_reply, check_sessions, counters_of, no_children,  # noqa: E402
                          port_infos, stable_fd_count)
from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.guest import GuestImage, QemuGuest, require_guest  # noqa: E402
from vnet_harness.netns import Netns, require_netns, unique_name  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import PortSpec, TapSpec, Vnetd, require_vnetd  # noqa: E402

UPGRADES = int(os.environ.get("VNET_UPGRADE_CYCLES", "20"))
PAYLOAD_MB = restart.PAYLOAD_MB
CHUNK = restart.CHUNK
PACE_US = restart.PACE_US
MAX_PAUSE_MS = 50.0
STALL = 1.0               # seconds: the longest the stream may stand still
SPREAD = 0.6              # the upgrades take place in this share of the payload
PORTS = ("guest", "tap")

VARIANTS = {  # mode: (guest IP, namespace IP, guest MAC, TAP MAC)
    "client": ("10.78.3.2", "10.78.3.1", "52:54:00:00:7e:02", "02:00:00:00:7e:01"),
    "server": ("10.78.4.2", "10.78.4.1", "52:54:00:00:7f:02", "02:00:00:00:7f:01"),
}

VNETD_ALLOWED = (r"cannot connect to .*; retrying every",)


def carrier_changes(guest):
    rc, out = guest.run("cat /sys/class/net/eth0/carrier_changes", timeout=30)
    if rc != 0 or not out.strip().isdigit():
        raise HarnessError("%s: carrier_changes: rc %d: %s" % (guest.name, rc, out))
    return int(out.strip())


def tap_identity(ns, ifname):
    """(ifindex, IPv4 addresses) of the TAP in the namespace."""
    r = subprocess.run(["ip", "-n", ns.name, "-o", "-4", "addr", "show", "dev", ifname],
                       capture_output=True, text=True)
    idx = subprocess.run(["ip", "-n", ns.name, "-o", "link", "show", "dev", ifname],
                         capture_output=True, text=True)
    if r.returncode != 0 or idx.returncode != 0:
        raise HarnessError("TAP %s in %s: %s %s" % (ifname, ns.name, r.stderr, idx.stderr))
    return int(idx.stdout.split(":")[0]), sorted(re.findall(r"inet (\S+)", r.stdout))


def qemu_complaints(guest, start=0):
    """Lines QEMU printed on its stderr (the log also holds the serial console)."""
    return [line for line in guest.proc.read_log(start).splitlines()
            if line.startswith("qemu-system") and "terminating on signal" not in line]


def settled_counts(guest, ns, tap_if, vnetd, what, tries=20):
    """The guest's link statistics, the namespace TAP's and vnetd's port counters at one
    quiet moment: read in turn (vnetd, guest, TAP, vnetd, guest, TAP, vnetd) until none of
    them changed across the round.  The guest and the namespace send on their own (IPv6
    router solicitations, MLD reports); one frame sent between two of the reads would be
    counted on one side only, and the sums compared below are exact."""
    v = counters_of(port_infos(vnetd))
    for _ in range(tries):
        g, k = guest.link_stats(), ns.link_stats(tap_if)
        v2 = counters_of(port_infos(vnetd))
        g2, k2 = guest.link_stats(), ns.link_stats(tap_if)
        v3 = counters_of(port_infos(vnetd))
        if v == v2 == v3 and g == g2 and k == k2:
            return g, k, v
        v = v3
    raise HarnessError("%s: the counters did not hold still over %d rounds of reading" %
                       (what, tries))


def run_variant(s, image, mode):
    client = mode == "client"
    guest_ip, ns_ip, guest_mac, tap_mac = VARIANTS[mode]
    t_variant = time.monotonic()
    ns = Netns(s, "g" + mode[0])
    tap_if = unique_name("tg" + mode[0])
    sock = s.path("up-%s.sock" % mode)
    s.remove_file_later(sock)
    vnetd = Vnetd(s, [PortSpec(sock, client=client, name="guest"),
                      TapSpec("tap", ifname=tap_if, netns=ns)], name="vnetd-%s" % mode)
    if client:
        guest = QemuGuest(s, "guest-" + mode, image, sock, guest_ip + "/24", guest_mac,
                          server=True, mem_mb=320).start()
        wait_until(lambda: os.path.exists(sock) or not guest.proc.alive(), 30,
                   what="QEMU's socket %s" % sock)
        vnetd.start()
    else:
        vnetd.start()
        guest = QemuGuest(s, "guest-" + mode, image, sock, guest_ip + "/24", guest_mac,
                          mem_mb=320).start()
    restart.ip("-n", ns.name, "link", "set", "dev", tap_if, "address", tap_mac)
    restart.ip("-n", ns.name, "addr", "add", ns_ip + "/24", "dev", tap_if)
    restart.ip("-n", ns.name, "link", "set", "dev", tap_if, "up")
    tap0 = tap_identity(ns, tap_if)
    guest.wait_ready(timeout=120)
    vnetd.expect_connected(["guest"], mode)
    want_sha, want_len = restart.reach_and_make_payload(ns, guest, guest_ip, mode)

    # What everyone counted before the stream (all idle now): the sums are taken from here.
    carrier0 = carrier_changes(guest)
    snmp0 = guest.snmp()
    g0, k0, base = settled_counts(guest, ns, tap_if, vnetd, "%s: before the stream" % mode)
    qemu_log_at = guest.proc.log_size()
    vnetd_log_at = vnetd.proc.log_size()

    rx = restart.Receiver(s, ns, "receiver-" + mode)
    sender = restart.SENDER % {"chunk": CHUNK, "ip": ns_ip, "port": restart.RECEIVER_PORT}
    rc, out = guest.run("echo %d > /tmp/pace; cat > /tmp/send.sh <<'EOF'\n%sEOF\n"
                        "rm -f /tmp/sender.status; setsid sh /tmp/send.sh "
                        ">/tmp/sender.log 2>&1 </dev/null &\necho started" % (PACE_US, sender),
                        timeout=30)
    if rc != 0:
        raise HarnessError("%s: cannot start the sender in the guest:\n%s" % (mode, out))
    rx.proc.wait_for_log(r"^ACCEPTED", 30)
    wait_until(lambda: rx.total() >= 4 * CHUNK, 30, what="the stream to start")
    t_stream = time.monotonic()
    first = rx.total()
    step = int(want_len * SPREAD / UPGRADES)
    log("%s: streaming (%d bytes so far); an upgrade every %d bytes" % (mode, first, step))

    finals, pauses, durations, windows, fds, pids = [], [], [], [], {}, [vnetd.proc.pid]
    before = counters_of(port_infos(vnetd))
    pace = PACE_US
    at_last = first
    for gen in range(1, UPGRADES + 1):
        # At least one chunk through every vnetd, and the upgrades spread over the stream.
        goal = max(first + gen * step, at_last + CHUNK)
        wait_until(lambda: rx.check_alive() or rx.total() >= goal or rx.poll().done, 60,
                   interval=0.01, what="%s: %d bytes before upgrade %d (%d so far)"
                   % (mode, goal, gen, rx.total()))
        now_total = rx.total()
        if rx.done or now_total >= want_len - CHUNK:
            raise HarnessError("%s: the stream ended before upgrade %d (%d of %d bytes)"
                               % (mode, gen, now_total, want_len))
        if pace < 1000000 and want_len - now_total < (UPGRADES - gen + 1) * step + 4 * CHUNK:
            # The upgrades wait for the stream, not the other way round; but slow ones let
            # more than `step` through each: keep the stream going through the rest.
            pace *= 2
            guest.run("echo %d > /tmp/pace" % pace, timeout=30)
            log("%s: %d bytes left for %d upgrades: pace %d us per 64 KiB"
                % (mode, want_len - now_total, UPGRADES - gen + 1, pace))
        old = vnetd.proc.pid
        t0 = time.monotonic()
        reply = vnetd.upgrade(timeout=60)
        t1 = time.monotonic()
        windows.append((t0, t1, gen))
        got = check_reply(reply, old, before, gen, ports=PORTS)
        finals.append(got)
        pauses.append(reply["pause_ms"])
        durations.append(t1 - t0)
        pids.append(vnetd.proc.pid)
        # What the old vnetd forwarded (the first one: since the stream started).
        moved = {(p, k): got[p][k] - (base[p][k] if gen == 1 else 0)
                 for p in PORTS for k in ("rx_packets", "tx_packets")}
        if not all(moved.values()):
            raise HarnessError("%s: vnetd pid %d did not forward both ways before upgrade %d: %s"
                               % (mode, old, gen, got))
        if reply["pause_ms"] >= MAX_PAUSE_MS:
            raise HarnessError("%s: upgrade %d: the data path stood still %.1f ms (>= %.0f)"
                               % (mode, gen, reply["pause_ms"], MAX_PAUSE_MS))
        no_children(vnetd, "%s: upgrade %d" % (mode, gen))
        info = port_infos(vnetd)
        check_sessions(info, gen, names=("guest",))
        before = counters_of(info)
        at_last = rx.total()
        if gen in (1, UPGRADES):
            fds[gen] = stable_fd_count(vnetd, "after upgrade %d" % gen)
        log("%s: upgrade %d: pid %d -> %d in %.0f ms, paused %.2f ms (%d bytes in)"
            % (mode, gen, old, vnetd.proc.pid, (t1 - t0) * 1e3, reply["pause_ms"], at_last))
    t_loop = time.monotonic() - t_stream
    if fds[UPGRADES] != fds[1]:
        raise HarnessError("%s: vnetd's fd count went from %d after upgrade 1 to %d after "
                           "upgrade %d" % (mode, fds[1], fds[UPGRADES], UPGRADES))

    flushed, t_flush, got_len, got_sha = restart.finish_stream(guest, rx, mode, want_len, want_sha)

    # Stalls: the receiver's pauses (> 20 ms), overall and those overlapping an upgrade.
    def overlaps(t, pause):
        return [g for a, b, g in windows if t - pause < b and t > a]
    worst = max(rx.points, key=lambda p: p[2])
    in_upgrade = [(t, pause) for t, _, pause in rx.points if overlaps(t, pause)]
    worst_up = max(in_upgrade, key=lambda p: p[1]) if in_upgrade else (0.0, 0.0)
    log("%s: %d bytes received intact (sha256 %s...), the last %d unpaced in %.1f s; largest "
        "stall %.0f ms (%s), largest overlapping an upgrade %.0f ms (%s)"
        % (mode, got_len, got_sha[:16], flushed, t_flush, worst[2] * 1e3,
           "upgrade %s" % overlaps(worst[0], worst[2]) if overlaps(worst[0], worst[2])
           else "no upgrade", worst_up[1] * 1e3,
           "upgrade %s" % overlaps(*worst_up) if in_upgrade else "-"))
    if worst[2] > STALL:
        raise HarnessError("%s: the stream stood still %.2f s (> %.1f)" % (mode, worst[2], STALL))

    # Both directions still work through the last vnetd.
    rc, out = guest.run("ping -c 5 -i 0.2 -W 2 %s" % ns_ip, timeout=60)
    if not re.search(r"5 packets transmitted, 5 (?:packets )?received", out):
        raise HarnessError("%s: guest ping %s after the upgrades (rc %d):\n%s"
                           % (mode, ns_ip, rc, out))
    tx, rcv, out = ns.ping(guest_ip, count=5)
    if rcv != tx or tx != 5:
        raise HarnessError("%s: namespace ping %s after the upgrades: %d/%d:\n%s"
                           % (mode, guest_ip, rcv, tx, out))

    # QEMU saw no disconnect; the TAP is the one vnetd created first.
    carrier1 = carrier_changes(guest)
    complaints = qemu_complaints(guest, qemu_log_at)
    if carrier1 != carrier0 or complaints:
        raise HarnessError("%s: the guest's carrier changed %d times during the upgrades; QEMU "
                           "said: %s" % (mode, carrier1 - carrier0, complaints or "nothing"))
    tap1 = tap_identity(ns, tap_if)
    if tap1 != tap0:
        raise HarnessError("%s: the TAP was (ifindex, addresses) %s, after the upgrades %s"
                           % (mode, tap0, tap1))

    # Every frame counted once over the vnetd generations, from the stream's start.
    rc, dmesg = guest.run("dmesg", timeout=30)
    snmp1 = guest.snmp()
    g1, k1, last = settled_counts(guest, ns, tap_if, vnetd, "%s: after the upgrades" % mode)
    total = {p: {k: sum(f[p][k] for f in finals) + last[p][k] - base[p][k]
                 for k in ("rx_packets", "tx_packets", "drops")} for p in PORTS}
    want = {"guest": {"rx_packets": g1["tx_packets"] - g0["tx_packets"],
                      "tx_packets": g1["rx_packets"] - g0["rx_packets"]},
            "tap": {"rx_packets": k1["tx_packets"] - k0["tx_packets"],
                    "tx_packets": k1["rx_packets"] - k0["rx_packets"]}}
    wrong = ["%s %s: vnetd %d, kernel %d" % (p, k, total[p][k], want[p][k])
             for p in PORTS for k in ("rx_packets", "tx_packets") if total[p][k] != want[p][k]]
    log("%s: frames over the %d vnetd generations: %s; the kernels counted %s"
        % (mode, len(finals) + 1, total, want))
    if wrong:
        raise HarnessError("%s: vnetd's counters (replies plus the last vnetd's) differ from the "
                           "guest's and the namespace's: %s" % (mode, "; ".join(wrong)))
    # Two ports: every frame vnetd took from one went to the other, or was counted dropped.
    lost = {"guest -> tap": total["guest"]["rx_packets"] - total["tap"]["tx_packets"],
            "tap -> guest": total["tap"]["rx_packets"] - total["guest"]["tx_packets"]}
    dropped = total["guest"]["drops"] + total["tap"]["drops"]
    if sum(lost.values()) != dropped or min(lost.values()) < 0:
        raise HarnessError("%s: vnetd took frames from one port that it neither delivered to "
                           "the other nor counted as dropped: taken minus delivered %s, %d "
                           "counted as dropped" % (mode, lost, dropped))
    reasons = {}  # drop reason: frames, over the generations since the stream started
    for sign, c in [(1, f) for f in finals] + [(1, last), (-1, base)]:
        for p in PORTS:
            for reason, v in c[p]["drop_reasons"].items():
                key = "%s.%s" % (p, reason)
                reasons[key] = reasons.get(key, 0) + sign * v
    reasons = {k: v for k, v in reasons.items() if v}
    tcp = {k: snmp1.get(proto, {}).get(k, 0) - snmp0.get(proto, {}).get(k, 0)
           for proto, k in (("Tcp", "RetransSegs"), ("TcpExt", "TCPTimeouts"),
                            ("TcpExt", "TCPLossProbes"), ("TcpExt", "TCPFastRetrans"))}
    log("%s: vnetd's drops during the stream %s; the guest's TCP during the stream: %s"
        % (mode, reasons or "none", tcp))
    if any(k != "guest.rx_no_buffers" for k in reasons):
        raise HarnessError("%s: vnetd dropped frames during the stream: %s" % (mode, reasons))
    if tcp["TCPTimeouts"]:
        raise HarnessError("%s: the guest's TCP timed out %d times (a frame lost or held "
                           "> 200 ms): %s" % (mode, tcp["TCPTimeouts"], tcp))
    bad = [line for line in dmesg.splitlines() if restart.GUEST_BAD.search(line)]
    if rc != 0 or bad:
        raise HarnessError("%s: the guest's kernel log (rc %d) says:\n%s"
                           % (mode, rc, "\n".join(bad) or dmesg[-3000:]))

    # The carrier check can see a lost back end: stopping vnetd moves it.
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("%s: the last vnetd (pid %d) exited with status %s"
                           % (mode, vnetd.proc.pid, rc))
    wait_until(lambda: carrier_changes(guest) > carrier1, 15, interval=0.2,
               what="%s: the guest's carrier going down with vnetd stopped (does "
               "carrier_changes see a disconnect at all?)" % mode)
    guest.poweroff()
    rx.proc.stop()
    text = vnetd.proc.read_log(vnetd_log_at)
    bad = [line for line in text.splitlines()
           if re.match(r"^\S+ (warning|error|critical) ", line)
           and not any(re.search(a, line) for a in VNETD_ALLOWED)]
    if bad:
        raise HarnessError("%s: vnetd logged:\n%s" % (mode, "\n".join(bad)))

    summary = ("%s: %d upgrades under a %d MiB stream: intact, largest stall %.0f ms (%.0f ms "
               "overlapping an upgrade), pause_ms max %.2f mean %.2f, vnetctl upgrade max %.0f "
               "ms, carrier changes 0, fds %d/%d; upgrade loop %.1f s, variant %.1f s"
               % (mode, UPGRADES, PAYLOAD_MB, worst[2] * 1e3, worst_up[1] * 1e3, max(pauses),
                  sum(pauses) / len(pauses), max(durations) * 1e3, fds[1], fds[UPGRADES], t_loop,
                  time.monotonic() - t_variant))
    log(summary)
    return summary


def body(s, args):
    image = GuestImage.build(os.path.join(s.build_dir, "integration-cache"))
    summaries = [run_variant(s, image, mode) for mode in ("client", "server")]
    for line in summaries:
        print(line)


if __name__ == "__main__":
    run_test("upgrade_guest", body, [lambda a: require_root(), lambda a: require_tools("ss"),
                                     require_guest, require_vnetd, require_netns])
