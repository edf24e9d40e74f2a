#!/usr/bin/env python3
"""A vnetd that crashes or is restarted comes back and every guest continues.

Two variants, each with its own vnetd (started from a configuration file), one QEMU TCG
guest on a vhost-user port and a TAP port in a network namespace the test creates:
  client  vnetd connects (`mode = "client"`), QEMU listens (`server=on,wait=off`);
  server  vnetd listens, QEMU connects and reconnects by itself (`reconnect=1`).

The TAP: vnetd creates it inside the namespace itself (`netns =` in the port's table), on
every start.  A TAP vnetd creates is not persistent: it goes away with the killed vnetd,
and with it the namespace's address, route and neighbour entries; the new vnetd creates it
again, in the namespace again.  After every kill the test waits for the old TAP to be gone
(with io_uring the kernel closes its fd in the ring's deferred teardown, some ms after the
process was reaped; a vnetd started before that finds the name taken and exits), and after
every start checks that the new TAP is in the namespace (not in the root namespace) and
gives it back its address and MAC address (a new TAP gets a random MAC; the guest's
neighbour entry would still name the old one).  That is part of the measured outage.

The guest writes PAYLOAD_MB of /dev/urandom into its tmpfs, takes its SHA-256 and streams
it with busybox `nc` to a Python receiver in the namespace, paced (a 64 KiB chunk, then a
pause; the pause doubles when the rest would not last through the remaining restarts)
and, after the last restart, unpaced.  A thread of the receiver samples the kernel's count
of bytes that arrived on the connection (TCP_INFO bytes_received) every 2 ms and logs the
time of every first growth after a pause; the main thread prints the SHA-256 at the end.
While the stream runs, RESTARTS times: vnetd is SIGKILLed (by its PID), its TAP gone, what
arrived so far is read with `ss` (nothing more can arrive), vnetd is started again with the
same file, the TAP re-configured; the test waits for the guest's port to be connected and
for the arrived byte count to grow (outage = from the kill to that sample), then for more
of the stream (0 to 1 MiB, varying, so kills land both in the burst right after an outage
and in the paced flow).  Before each kill: that vnetd forwarded both ways, and none of its
ports counts a bad message, protocol error, bad chain, broken queue, malformed frame or
TAP read/write error.

Asserted per variant: every outage < MAX_OUTAGE s (min/median/max printed); no pause
> STALL s in the stream that no kill explains; the receiver got exactly the payload (length
and SHA-256 the guest computed) and `nc` exited 0; the guest's kernel log (dmesg over the
serial console) has no NETDEV WATCHDOG, "transmit queue N timed out", virtio ring error,
warning or oops; after the last restart ping guest -> namespace and namespace -> guest,
5/5 each; every vnetd's log has nothing at warning level or above but "cannot connect ...
retrying" (QEMU gone at the end of the client variant); the last vnetd exits 0 on SIGTERM.

What the outage is made of (measured here): vnetd is back and the guest's port connected
about 0.15 s after the kill in the client variant, about 1.0 s in the server variant
(QEMU's reconnect timer, 1 s), and vnetd forwards the guest's first frame at once.  While no
back end is connected QEMU 7.2 holds the NIC's link down and drops what the guest sends;
the guest kernel flushes its ARP entries on carrier loss, so its TCP retransmission waits
for an ARP request, and those are retried every second (seen in a capture on the TAP: the
guest's "who-has" comes first, then the retransmitted segment).  So most outages are about
1.0-1.1 s (client) and 1.0-2.1 s (server; up to 3.6 s seen once); a kill soon after the
previous restart can be much shorter (0.1-0.5 s: probably the guest had not yet handled the
carrier loss, its linkwatch runs at most once a second, and kept its ARP entry).

VNET_RESTART_CYCLES (default 20) and VNET_RESTART_PAYLOAD_MB (default 32) change the sizes.
"""

import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.guest import GuestImage, QemuGuest, require_guest  # noqa: E402
from vnet_harness.netns import Netns, require_netns, unique_name  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import PortSpec, TapSpec, Vnetd, require_vnetd  # noqa: E402

RESTARTS = int(os.environ.get("VNET_RESTART_CYCLES", "20"))
PAYLOAD_MB = int(os.environ.get("VNET_RESTART_PAYLOAD_MB", "32"))
CHUNK = 64 * 1024
PACE_US = 30000           # pause after each chunk while restarts go on
MAX_OUTAGE = 10.0         # seconds from a kill to the stream moving again
STALL = 3.0               # seconds: a pause in the stream without a kill is a failure
RECEIVER_PORT = 5601
# Bytes the receiver must get after a restart before the next kill, cycle by cycle.
KILL_AFTER = [64 * 1024, 256 * 1024, 1024 * 1024, 0]

VARIANTS = {  # mode: (guest IP, namespace IP, guest MAC, TAP MAC)
    "client": ("10.78.1.2", "10.78.1.1", "52:54:00:00:7c:02", "02:00:00:00:7c:01"),
    "server": ("10.78.2.2", "10.78.2.1", "52:54:00:00:7d:02", "02:00:00:00:7d:01"),
}

# The receiver in the namespace.  A thread samples the kernel's count of bytes received on
# the connection (TCP_INFO tcpi_bytes_received) every 2 ms and prints it with the time of
# the sample: every first growth after a pause on its own line, otherwise at most every
# 50 ms.  So arrival times do not depend on when the main thread gets to read the data
# (a late sample can only make an outage look longer, never shorter).  The main thread
# reads everything and prints the SHA-256 at the end.
RECEIVER = r"""
import hashlib, socket, struct, sys, threading, time
port = int(sys.argv[1])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port))
ls.listen(1)
print("LISTENING", flush=True)
c, peer = ls.accept()
print("ACCEPTED %s:%d" % peer, flush=True)
done = threading.Event()

def arrived():
    return struct.unpack_from("<Q", c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256),
                              128)[0]

def sample():
    last = 0
    last_change = last_print = time.monotonic()
    while True:
        stop = done.is_set()
        now = time.monotonic()
        n = arrived()
        if n != last:
            if now - last_change > 0.02 or now - last_print > 0.05 or stop:
                print("K %.6f %d %.6f" % (now, n, now - last_change), flush=True)
                last_print = now
            last, last_change = n, now
        if stop:
            return
        time.sleep(0.002)

sampler = threading.Thread(target=sample)
sampler.start()
h = hashlib.sha256()
total = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    h.update(b)
    total += len(b)
done.set()
sampler.join()
print("DONE %d %s" % (total, h.hexdigest()), flush=True)
"""

# The guest's sender: /tmp/p in CHUNK pieces, each followed by a pause of /tmp/pace
# microseconds (a shell builtin reads it; 0: the rest at once), into busybox nc.
SENDER = r"""
n=$(( $(stat -c %%s /tmp/p) / %(chunk)d ))
i=0
while [ $i -lt $n ]; do
  read pace < /tmp/pace
  if [ "$pace" = 0 ]; then dd if=/tmp/p bs=%(chunk)d skip=$i 2>/dev/null; break; fi
  dd if=/tmp/p bs=%(chunk)d skip=$i count=1 2>/dev/null
  usleep $pace
  i=$((i+1))
done | nc %(ip)s %(port)d
echo "rc=$?" > /tmp/sender.status
"""

GUEST_BAD = re.compile(r"NETDEV WATCHDOG|transmit queue \d+ timed out|\bBUG\b|Oops|WARNING:|"
                       r"Call Trace|general protection|Kernel panic|not a head|"
                       r"virtio_net.*(?:[Ee]rror|too (?:big|short|long)|unexpected|[Bb]ad)|"
                       r"[Cc]orrupt")

# Port counters that say a vnetd could not use the rings it took over, or the TAP.
BAD_EXTRA = ("bad_messages", "protocol_errors", "bad_fds", "memory_lost", "rx_bad_chains",
             "tx_bad_chains", "read_errors", "write_errors", "rejected_connections")
BAD_DROPS = ("tx_too_short", "tx_too_big", "tx_bad_header", "queue_broken")

# What a vnetd that comes back may log at warning level: in client mode QEMU may not have
# its socket back to listening at the first attempt.
VNETD_ALLOWED = (r"cannot connect to .*; retrying every",)


class RestartGuest(QemuGuest):
    """QemuGuest with QEMU's own reconnection (`-chardev socket,...,reconnect=N`)."""

    def __init__(self, *args, reconnect=None, **kwargs):
        QemuGuest.__init__(self, *args, **kwargs)
        self.reconnect = reconnect

    def argv(self):
        argv = QemuGuest.argv(self)
        if self.reconnect:
            i = argv.index("-chardev") + 1
            argv[i] += ",reconnect=%d" % self.reconnect
        return argv


class Receiver:
    """The Python receiver in the namespace and what its log says so far."""

    def __init__(self, s, ns, name):
        script = s.path("receiver.py")
        with open(script, "w") as f:
            f.write(RECEIVER)
        self.proc = ns.spawn(name, ["python3", "-u", script, str(RECEIVER_PORT)])
        self.proc.wait_for_log(r"^LISTENING", 15)
        self.points = []   # (time, bytes arrived, pause before it) of every K line
        self.done = None   # (total, sha256)
        self._off = 0
        self._partial = ""

    def poll(self):
        text = self.proc.read_log(self._off)
        self._off += len(text.encode())
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            f = line.split()
            if len(f) == 4 and f[0] == "K":
                self.points.append((float(f[1]), int(f[2]), float(f[3])))
            elif len(f) == 3 and f[0] == "DONE":
                self.done = (int(f[1]), f[2])
        return self

    def total(self):
        self.poll()
        return self.points[-1][1] if self.points else 0

    def first_beyond(self, total):
        """(time, bytes) of the first sample that saw more than `total` bytes arrived."""
        self.poll()
        for when, tot, _ in self.points:
            if tot > total:
                return when, tot
        return None

    def arrived_now(self, ns):
        """Bytes the namespace's kernel received on the connection, asked with ss."""
        r = subprocess.run(["ss", "-N", ns.name, "-tinH", "state", "established",
                            "( sport = :%d )" % RECEIVER_PORT], capture_output=True, text=True)
        m = re.search(r"bytes_received:(\d+)", r.stdout)
        if r.returncode != 0 or not m:
            raise HarnessError("ss in %s: no bytes_received (status %d): %s %s"
                               % (ns.name, r.returncode, r.stdout, r.stderr))
        return int(m.group(1))

    def check_alive(self):
        if not self.proc.alive() and self.poll().done is None:
            raise HarnessError("receiver exited with status %s; log:\n%s"
                               % (self.proc.returncode, self.proc.log_tail()))


def ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise HarnessError("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r


def vnetd_bad_lines(proc, levels, allowed=()):
    """Lines of a vnetd log at one of `levels` that match none of the `allowed` regexes."""
    out = []
    for line in proc.read_log().splitlines():
        if re.match(r"^\S+ (%s) " % levels, line) and not any(re.search(a, line)
                                                               for a in allowed):
            out.append(line)
    return out


def finish_stream(guest, rx, mode, want_len, want_sha):
    """The rest of the stream unpaced; then the whole payload must have arrived intact.
    Returns (bytes sent unpaced, seconds they took, bytes received, their SHA-256)."""
    t_flush = time.monotonic()
    flushed = want_len - rx.total()
    guest.run("echo 0 > /tmp/pace", timeout=30)
    wait_until(lambda: rx.check_alive() or rx.poll().done, 180, interval=0.1,
               what="%s: the end of the stream (%d of %d bytes so far)"
               % (mode, rx.total(), want_len))
    t_flush = time.monotonic() - t_flush
    got_len, got_sha = rx.done
    rc, status = guest.run("cat /tmp/sender.status /tmp/sender.log", timeout=30)
    if got_len != want_len or got_sha != want_sha:
        raise HarnessError("%s: the receiver got %d bytes, sha256 %s; the guest sent %d bytes, "
                           "sha256 %s" % (mode, got_len, got_sha, want_len, want_sha))
    if not re.search(r"^rc=0$", status, re.M):
        raise HarnessError("%s: the guest's nc did not exit 0: %s" % (mode, status))
    return flushed, t_flush, got_len, got_sha


def reach_and_make_payload(ns, guest, guest_ip, mode):
    """Waits until the namespace reaches the guest, then writes PAYLOAD_MB random MiB to
    /tmp/p in the guest; returns its SHA-256 and size."""
    deadline = time.monotonic() + 30
    while ns.ping(guest_ip, count=1)[1] != 1:
        if time.monotonic() > deadline:
            raise HarnessError("%s: namespace cannot reach the guest %s" % (mode, guest_ip))
    t0 = time.monotonic()
    rc, out = guest.run("dd if=/dev/urandom of=/tmp/p bs=1M count=%d 2>/dev/null && "
                        "sha256sum /tmp/p && stat -c %%s /tmp/p" % PAYLOAD_MB, timeout=300)
    m = re.search(r"^([0-9a-f]{64})\s+/tmp/p\s*\n(\d+)\s*$", out, re.M)
    if rc != 0 or not m:
        raise HarnessError("%s: payload in the guest: rc %d:\n%s" % (mode, rc, out))
    log("%s: %d MiB payload in the guest (sha256 %s...) in %.1f s"
        % (mode, PAYLOAD_MB, m.group(1)[:16], time.monotonic() - t0))
    return m.group(1), int(m.group(2))


def run_variant(s, image, mode):
    client = mode == "client"
    guest_ip, ns_ip, guest_mac, tap_mac = VARIANTS[mode]
    t_variant = time.monotonic()
    ns = Netns(s, mode[0])
    tap_if = unique_name("t" + mode[0])
    sock = s.path("%s.sock" % mode)
    s.remove_file_later(sock)
    control = s.path("vnetd-%s.ctl" % mode)
    conf = s.path("vnetd-%s.toml" % mode)
    with open(conf, "w") as f:
        f.write('[vnetd]\ncontrol = "%s"\nlog_level = "info"\n\n'
                '[[port]]\nname = "guest"\ntype = "vhost-user"\nsocket = "%s"\nmode = "%s"\n\n'
                '[[port]]\nname = "tap"\ntype = "tap"\nifname = "%s"\nnetns = "%s"\n'
                % (control, sock, mode, tap_if, ns.name))
    ports = [PortSpec(sock, client=client, name="guest"),
             TapSpec("tap", ifname=tap_if, netns=ns)]
    generation = [0]

    def start_vnetd():
        v = Vnetd(s, ports, name="vnetd-%s-%02d" % (mode, generation[0]), config=conf,
                  control=control)
        generation[0] += 1
        v.start()
        # vnetd put its new TAP into the namespace, not the root namespace: give it back
        # the namespace side's MAC and address (both went with the old TAP).
        if ip("link", "show", "dev", tap_if, check=False).returncode == 0:
            raise HarnessError("%s: TAP %s appeared in the root namespace" % (mode, tap_if))
        ip("-n", ns.name, "link", "set", "dev", tap_if, "address", tap_mac)
        ip("-n", ns.name, "addr", "add", ns_ip + "/24", "dev", tap_if)
        ip("-n", ns.name, "link", "set", "dev", tap_if, "up")
        return v

    if client:
        # QEMU listens first; it holds the guest's start-up until vnetd connected.
        guest = RestartGuest(s, "guest-" + mode, image, sock, guest_ip + "/24", guest_mac,
                             server=True, mem_mb=320).start()
        wait_until(lambda: os.path.exists(sock) or not guest.proc.alive(), 30,
                   what="QEMU's socket %s" % sock)
        vnetd = start_vnetd()
    else:
        vnetd = start_vnetd()
        guest = RestartGuest(s, "guest-" + mode, image, sock, guest_ip + "/24", guest_mac,
                             reconnect=1, mem_mb=320).start()
    guest.wait_ready(timeout=120)
    vnetd.expect_connected(["guest"], mode)
    want_sha, want_len = reach_and_make_payload(ns, guest, guest_ip, mode)

    rx = Receiver(s, ns, "receiver-" + mode)
    sender = SENDER % {"chunk": CHUNK, "ip": ns_ip, "port": RECEIVER_PORT}
    rc, out = guest.run("echo %d > /tmp/pace; cat > /tmp/send.sh <<'EOF'\n%sEOF\n"
                        "rm -f /tmp/sender.status; setsid sh /tmp/send.sh "
                        ">/tmp/sender.log 2>&1 </dev/null &\necho started" % (PACE_US, sender),
                        timeout=30)
    if rc != 0:
        raise HarnessError("%s: cannot start the sender in the guest:\n%s" % (mode, out))
    rx.proc.wait_for_log(r"^ACCEPTED", 30)
    wait_until(lambda: rx.total() >= 4 * CHUNK, 30, what="the stream to start")
    t_stream = time.monotonic()
    log("%s: streaming (%d bytes so far)" % (mode, rx.total()))

    outages = []
    connects = []         # kill to the guest's port connected again
    tap_linger = []
    windows = []          # (kill, resumed) of every restart
    drops = {}            # drop reason: count, over every vnetd generation
    pace = PACE_US
    first_kill_total = None
    for cycle in range(RESTARTS):
        rx.check_alive()
        before = rx.total()
        if before >= want_len - CHUNK or rx.done:
            raise HarnessError("%s: the stream ended before restart %d (%d of %d bytes)"
                               % (mode, cycle + 1, before, want_len))
        if first_kill_total is None:
            first_kill_total = before
        elif pace < 1000000:
            # Keep the stream going through the remaining restarts: what a cycle used so
            # far, times the cycles left, with room for what sits in the guest's socket.
            per_cycle = (before - first_kill_total) / cycle
            need = 1.5 * per_cycle * (RESTARTS - cycle) + 6 * 1024 * 1024
            if want_len - before < need:
                pace *= 2
                guest.run("echo %d > /tmp/pace" % pace, timeout=30)
                log("%s: %d bytes left for %d restarts (%.0f per restart): pace %d us per "
                    "64 KiB" % (mode, want_len - before, RESTARTS - cycle, per_cycle, pace))
        old = vnetd
        check_generation(mode, old, drops)
        t_kill = time.monotonic()
        old.proc.kill()
        # The kernel removes the TAP when its last fd closes; with io_uring that is the
        # ring's teardown, which runs after the process is gone (measured: up to ~15 ms
        # after the killed vnetd was reaped).  A vnetd started before that would find the
        # name taken (IFF_TUN_EXCL) and exit: wait for it, as a supervisor's restart
        # delay does.
        t_reaped = time.monotonic()
        wait_until(lambda: not ns.link_exists(tap_if), 5, interval=0.005,
                   what="%s: TAP %s gone after the kill" % (mode, tap_if))
        tap_linger.append(time.monotonic() - t_reaped)
        # What arrived through the old vnetd: its TAP is gone, nothing more can.
        arrived = rx.arrived_now(ns)
        vnetd = start_vnetd()
        t_up = time.monotonic()
        # Until the stream moves again: when the guest's port is connected and when vnetd
        # gets the guest's first frame (what of the outage is vnetd's, what the guest's).
        cc = vnetd.connect_control()
        t_conn = t_frame = resumed = None
        deadline = t_kill + MAX_OUTAGE + 5
        while resumed is None:
            rx.check_alive()
            vnetd.check_alive()
            now = time.monotonic()
            if t_conn is None:
                g = [p for p in cc.request("ports")["ports"] if p["name"] == "guest"][0]
                if g["connected"] and g["features"]:
                    t_conn = now
            if t_conn is not None and t_frame is None:
                if cc.request("counters")["counters"]["guest"]["rx_packets"]:
                    t_frame = now
            resumed = rx.first_beyond(arrived)
            if resumed is None and now > deadline:
                raise HarnessError("%s: restart %d: the stream did not move again within %.0f s "
                                   "(guest's port connected: %s, frames from the guest: %s); "
                                   "vnetd log:\n%s" % (mode, cycle + 1, MAX_OUTAGE + 5,
                                                       t_conn is not None, t_frame is not None,
                                                       vnetd.proc.log_tail()))
            time.sleep(0.005)
        cc.close()
        if t_conn is None:
            vnetd.wait_connected(["guest"], timeout=MAX_OUTAGE)
            t_conn = time.monotonic()
        outage = resumed[0] - t_kill
        outages.append(outage)
        windows.append((t_kill, resumed[0]))
        # More of the stream through the new vnetd before the next kill: how much varies,
        # so that kills land in the burst right after the outage and in the paced flow.
        more = KILL_AFTER[cycle % len(KILL_AFTER)]
        wait_until(lambda: rx.check_alive() or rx.total() >= resumed[1] + more
                   or rx.poll().done, 30,
                   interval=0.01, what="%s: %d more bytes after restart %d"
                   % (mode, more, cycle + 1))
        log("%s: restart %d: killed pid %d; new pid %d up %.0f ms, guest connected %.0f ms, "
            "its first frame %s ms, stream again %.0f ms after the kill (%d bytes in)"
            % (mode, cycle + 1, old.proc.pid, vnetd.proc.pid, (t_up - t_kill) * 1e3,
               (t_conn - t_kill) * 1e3, "%.0f" % ((t_frame - t_kill) * 1e3) if t_frame else "-",
               outage * 1e3, resumed[1]))
        connects.append(t_conn - t_kill)
        if outage > MAX_OUTAGE:
            raise HarnessError("%s: restart %d: outage %.1f s > %.0f s"
                               % (mode, cycle + 1, outage, MAX_OUTAGE))
    t_loop = time.monotonic() - t_stream

    flushed, t_flush, got_len, got_sha = finish_stream(guest, rx, mode, want_len, want_sha)
    # A pause in the stream that no kill explains: vnetd (or the guest's TX) stalled.
    stalls = [(t - pause, pause) for t, _, pause in rx.points if pause > 0.5 and not any(
        t - pause < resumed_at + 0.2 and t > killed for killed, resumed_at in windows)]
    log("%s: %d bytes received intact (sha256 %s...), the last %d unpaced in %.1f s; "
        "pauses > 0.5 s without a kill: %s" % (mode, got_len, got_sha[:16], flushed, t_flush,
                                                ["%.2f s" % p for _, p in stalls] or "none"))
    if any(p > STALL for _, p in stalls):
        raise HarnessError("%s: the stream stopped for %s s without a restart"
                           % (mode, ", ".join("%.1f" % p for _, p in stalls if p > STALL)))

    # Both directions still work through the last vnetd.
    rc, out = guest.run("ping -c 5 -i 0.2 -W 2 %s" % ns_ip, timeout=60)
    if not re.search(r"5 packets transmitted, 5 (?:packets )?received", out):
        raise HarnessError("%s: guest ping %s after the restarts (rc %d):\n%s"
                           % (mode, ns_ip, rc, out))
    tx, rcv, out = ns.ping(guest_ip, count=5)
    if rcv != tx or tx != 5:
        raise HarnessError("%s: namespace ping %s after the restarts: %d/%d:\n%s"
                           % (mode, guest_ip, rcv, tx, out))

    rc, dmesg = guest.run("dmesg", timeout=30)
    bad = [line for line in dmesg.splitlines() if GUEST_BAD.search(line)]
    if rc != 0 or bad:
        raise HarnessError("%s: the guest's kernel log (rc %d) says:\n%s"
                           % (mode, rc, "\n".join(bad) or dmesg[-3000:]))

    check_generation(mode, vnetd, drops)
    guest.poweroff()
    vnetd.stop_ok()
    rx.proc.stop()
    # Every vnetd's log: the killed ones up to the kill, the last one to its exit.
    for p in s.processes:
        if p.name.startswith("vnetd-%s-" % mode):
            bad = vnetd_bad_lines(p, "warning|error|critical", VNETD_ALLOWED)
            if bad:
                raise HarnessError("%s: %s (pid %d) logged:\n%s"
                                   % (mode, p.name, p.pid, "\n".join(bad)))

    srt = sorted(outages)
    summary = ("%s: %d restarts, outage (kill to stream moving) min %.0f / median %.0f / max "
               "%.0f ms; kill to guest's port connected median %.0f / max %.0f ms; TAP gone "
               "%.0f ms at most after the kill; drops %s; restart loop %.1f s, variant %.1f s"
               % (mode, len(outages), srt[0] * 1e3, statistics.median(srt) * 1e3, srt[-1] * 1e3,
                  statistics.median(connects) * 1e3, max(connects) * 1e3, max(tap_linger) * 1e3,
                  drops or "none", t_loop, time.monotonic() - t_variant))
    log(summary)
    return summary


def check_generation(mode, vnetd, drops):
    """One vnetd's ports before it goes: it forwarded both ways (the stream to the TAP, the
    namespace's ARP and ACKs to the guest), and no counter says that the rings it took over
    were in a state it could not use.  Adds its drops to `drops`."""
    def forwarded():
        info = vnetd.ports_info()
        c = [info[p]["counters"][k] for p in ("guest", "tap") for k in ("rx_packets",
                                                                       "tx_packets")]
        return info if all(c) else None
    try:
        info = wait_until(forwarded, 5, interval=0.02, what="forwarding both ways")
    except HarnessError:
        info = vnetd.ports_info()
        raise HarnessError("%s: vnetd pid %d did not forward both ways: guest %s, tap %s"
                           % (mode, vnetd.proc.pid, info["guest"]["counters"],
                              info["tap"]["counters"]))
    for name, port in info.items():
        bad = {k: v for k, v in port.get("extra", {}).items() if k in BAD_EXTRA and v}
        for reason, n in port["counters"]["drops"].items():
            if n:
                drops["%s.%s" % (name, reason)] = drops.get("%s.%s" % (name, reason), 0) + n
                if reason in BAD_DROPS:
                    bad[reason] = n
        if bad:
            raise HarnessError("%s: vnetd pid %d port %s: %s; port: %s"
                               % (mode, vnetd.proc.pid, name, bad, port))


def body(s, args):
    image = GuestImage.build(os.path.join(s.build_dir, "integration-cache"))
    summaries = [run_variant(s, image, mode) for mode in ("client", "server")]
    for line in summaries:
        print(line)


if __name__ == "__main__":
    run_test("restart", body, [lambda a: require_root(), lambda a: require_tools("ss"),
                               require_guest, require_vnetd, require_netns])
