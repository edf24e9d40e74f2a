#!/usr/bin/env python3
"""Fault tests: vnetd under front ends that crash, stall or flood.

One vnetd with six server ports a..f; every front end is vnet-traffic (our lean
vhost-user front end) on the CPU vnetd is not pinned to, sleeping on its call
eventfds when idle (--notify) unless it floods (--busy-poll).  Three phases:

 1. Kill loop (CYCLES times, default 200; env VNET_FAULTS_CYCLES): C receives,
    B sends to C at a fixed rate the whole time.  Each cycle starts a new front
    end on port a sending to C's MAC, waits until vnetd counts its data frames
    (so every reconnection forwards again), SIGKILLs it by PID and waits until
    vnetd reports the port disconnected.  vnetd's open fds after the warm-up
    cycle and after the last must be equal, VmRSS and RssAnon may grow only by
    small limits (not checked under a sanitizer); B->C kept flowing in every
    window of 20 cycles; C dropped nothing; vnetd's counters add up: every frame
    a and b sent was delivered to c; a saw CYCLES connections and disconnects.
 2. A guest that never refills its RX ring: the front end on d posts its RX
    buffers once (--rx-no-refill).  B floods (unknown destination) as fast as it
    can, so every frame is also offered to d.  vnetd must deliver exactly one
    ring's worth to d, then drop each further frame once with rx_no_buffers (no
    retry queue: d's tx + drops equal what was flooded to it; d reconnects
    between windows, each connection gets exactly one ring), sleep when the
    traffic stops, and the B->C rate with d stuck must stay >= STUCK_RATIO of the
    rate with d absent (medians of ROUNDS alternating windows; not asserted
    under a sanitizer, whose instrumentation dominates the timing).
 3. One port flooding: e sends as fast as it can to f's MAC while B sends a fixed
    number of frames at a modest rate to C: vnetd's per-poll burst budget must
    keep B served: every frame of B reaches C (no drop) and B finishes on time.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.procs import Process, wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import (PortSpec, Vnetd, find_program, require_vnetd,  # noqa: E402
                                sanitizer_of)

CYCLES = int(os.environ.get("VNET_FAULTS_CYCLES", "200"))
WARM_CYCLE = min(10, max(1, CYCLES // 2))  # fds/RSS reference point
RSS_GROWTH_LIMIT_KIB = 2048  # VmRSS, which includes guest memory vnetd touched
ANON_GROWTH_LIMIT_KIB = 256  # RssAnon: vnetd's own heap (measured: +0 over 190 cycles)
MAC = {p: "02:00:00:00:fa:%02x" % i for i, p in enumerate("abcdef", 1)}
NOBODY = "02:00:00:00:fa:ff"
B_RATE = 20000  # frames/s of the background flow B->C in the kill loop
WINDOW = 1.0  # seconds per throughput window
ROUNDS = 4  # pairs of windows: d stuck, d absent
STUCK_RATIO = 0.7
STUCK_QUEUE = 256  # d's RX ring: filled once
FLOOD_B_RATE, FLOOD_B_COUNT = 20000, 40000
RX_QUEUE = 16384  # buffers of the flood phase's receivers: 819 ms of B at FLOOD_B_RATE
LONG = 3600  # --duration of front ends stopped by the test




def fd_targets(pid):
    """What each open fd of a process refers to ({fd: target})."""
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:  # closed meanwhile
            pass
    return out


def proc_stats(pid):
    """(open fds {fd: target}, {VmRSS, RssAnon, RssShmem: KiB}) of a process, once its
    fds are steady: the control server closes a vnetctl connection a moment after
    vnetctl exits.  RssShmem is guest memory (front ends' memfds) vnetd has touched."""
    def steady():
        a = fd_targets(pid)
        time.sleep(0.05)  # compared with a second sample
        b = fd_targets(pid)
        return b if a == b else None
    fds = wait_until(steady, 5, interval=0.0, what="vnetd's open fds steady")
    mem = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssShmem"):
                mem[key] = int(line.split()[1])
    if "VmRSS" not in mem:
        raise HarnessError("no VmRSS in /proc/%d/status" % pid)
    return fds, mem


def drops(c, port):
    return sum(c[port]["drops"].values())


class Faults:
    def __init__(self, s):
        self.s = s
        self.traffic = find_program(s.build_dir, "vnet-traffic")
        self.socks = {p: s.path("f%s.sock" % p) for p in MAC}
        self.vnetd = Vnetd(s, [PortSpec(self.socks[p], name=p) for p in MAC])
        self.peer_cpu = cpu_plan()[1]
        self.seq = 0

    def argv(self, port, mode, *extra):
        """vnet-traffic on `port`; it sleeps on its eventfds when idle unless extra has
        --busy-poll."""
        wait = [] if "--busy-poll" in extra else ["--notify"]
        return [self.traffic, "--socket", self.socks[port], "--mode", mode, "--mac", MAC[port],
                "--cpu", self.peer_cpu, "--log-level", "warn"] + wait + list(extra)

    def spawn(self, port, mode, *extra, frames=1):
        """Start vnet-traffic on `port`; wait until vnetd has received `frames` frames
        from it (its announcement is the first)."""
        before = self.counters()[port]["rx_packets"]
        self.seq += 1
        p = self.s.spawn("%s%d" % (port, self.seq), self.argv(port, mode, *extra))
        wait_until(lambda: (p.alive() or self._dead(p))
                   and self.counters()[port]["rx_packets"] >= before + frames, 10,
                   interval=0.02, what="%d frames from %s on port %s" % (frames, p.name, port))
        p.port = port
        return p

    def finish(self, p):
        """SIGTERM a vnet-traffic (it stops and prints its result), wait until vnetd has
        seen it go; return its result."""
        p.stop(10.0)
        wait_until(lambda: not self.connected(p.port), 10, interval=0.02,
                   what="port %s disconnected after %s stopped" % (p.port, p.name))
        return result_of(p)

    # vnetd is queried over one persistent control connection (self.ctl), not by
    # running vnetctl: that costs a process start per query, ~0.3 s under ASan.
    def counters(self):
        self.vnetd.check_alive()
        return self.ctl.request("counters")["counters"]

    def port_info(self, port):
        for p in self.ctl.request("ports")["ports"]:
            if p["name"] == port:
                return p
        raise HarnessError("vnetd has no port %s" % port)

    def connected(self, port):
        return bool(self.port_info(port).get("connected"))

    # --- phase 1 -------------------------------------------------------------------
    def kill_loop(self):
        pid = self.vnetd.proc.pid
        c = self.spawn("c", "rx", "--duration", LONG, "--queue-size", 4096)
        b = self.spawn("b", "tx", "--duration", LONG, "--rate", B_RATE, "--dst-mac", MAC["c"],
                       frames=1000)
        # The victims share one log file; the current one is killed at cleanup.
        victim = {"proc": None}

        def kill_victim():
            if victim["proc"] is not None and victim["proc"].alive():
                victim["proc"].kill()
        self.s.cleanup.push("victim on port a", kill_victim)
        log_path = self.s.path("a-victims.log")
        ref = None
        t0 = time.monotonic()
        # B->C: vnetd keeps receiving from b (window by window), and at the end every
        # frame from a and b was delivered to c.
        last_b, last_t = self.counters()["b"]["rx_packets"], t0
        b_window = []
        for cycle in range(1, CYCLES + 1):
            before = self.counters()["a"]["rx_packets"]
            a = Process("a%d" % cycle, self.argv("a", "tx", "--duration", LONG, "--rate", 100000,
                                                  "--dst-mac", MAC["c"]), log_path)
            victim["proc"] = a
            # Announcement + at least one burst of data frames switched from this connection.
            wait_until(lambda: (a.alive() or self._dead(a))
                       and self.counters()["a"]["rx_packets"] >= before + 1 + 32, 10,
                       interval=0.01, what="vnetd forwarding from victim %d" % cycle)
            a.kill()
            wait_until(lambda: not self.connected("a"), 10, interval=0.01,
                       what="vnetd noticing victim %d is gone" % cycle)
            if cycle == WARM_CYCLE:
                ref = proc_stats(pid)
                log("cycle %d: vnetd fds %d, %s KiB" % (cycle, len(ref[0]), ref[1]))
            if cycle % 20 == 0 or cycle == CYCLES:
                now, brx = time.monotonic(), self.counters()["b"]["rx_packets"]
                b_window.append((brx - last_b) / (now - last_t))
                if brx <= last_b:
                    raise HarnessError("B->C stalled between cycles %d and %d"
                                       % (cycle - 19, cycle))
                last_b, last_t = brx, now
        elapsed = time.monotonic() - t0
        end = proc_stats(pid)
        log("%d kill cycles in %.1f s (%.0f ms each); vnetd fds %d -> %d, memory %s -> %s KiB"
            % (CYCLES, elapsed, 1000 * elapsed / CYCLES, len(ref[0]), len(end[0]), ref[1], end[1]))
        log("frames from B per second in windows of 20 cycles: %s"
            % ", ".join("%.0f" % r for r in b_window))
        if len(end[0]) != len(ref[0]):
            raise HarnessError("vnetd's fd count changed from %d (cycle %d) to %d (cycle %d): "
                               "%s -> %s" % (len(ref[0]), WARM_CYCLE, len(end[0]), CYCLES,
                                             ref[0], end[0]))
        growth = end[1]["VmRSS"] - ref[1]["VmRSS"]
        anon = end[1].get("RssAnon", 0) - ref[1].get("RssAnon", 0)
        san = sanitizer_of(pid)
        if san:  # its quarantine and shadow memory grow by design
            log("vnetd runs under %s: memory growth not checked" % san)
        elif growth > RSS_GROWTH_LIMIT_KIB or anon > ANON_GROWTH_LIMIT_KIB:
            raise HarnessError("vnetd's memory grew from cycle %d to %d: %s -> %s KiB (limits: "
                               "VmRSS +%d, RssAnon +%d)" % (WARM_CYCLE, CYCLES, ref[1], end[1],
                                                            RSS_GROWTH_LIMIT_KIB,
                                                            ANON_GROWTH_LIMIT_KIB))
        extra = dict(self.port_info("a").get("extra", {}))
        rb = self.finish(b)
        # Everything a and b sent went to c (unicast to C's MAC, or broadcast
        # announcements): c's deliveries plus drops account for every frame.
        c1 = self.settled()
        got = c1["c"]["tx_packets"] + drops(c1, "c")
        sent = c1["a"]["rx_packets"] + c1["b"]["rx_packets"]
        log("vnetd: a rx %d, b rx %d, c tx %d, c drops %s; port a %s"
            % (c1["a"]["rx_packets"], c1["b"]["rx_packets"], c1["c"]["tx_packets"],
               c1["c"]["drops"], extra))
        if (extra.get("connections"), extra.get("disconnects")) != (CYCLES, CYCLES):
            raise HarnessError("port a saw %s connections and %s disconnects, expected %d each"
                               % (extra.get("connections"), extra.get("disconnects"), CYCLES))
        if got != sent:
            raise HarnessError("c got %d frames (+drops), a and b sent %d" % (got, sent))
        if drops(c1, "c") and not (san and drops(c1, "c") <= got // 100):
            # (Instrumented, a sink on the traffic CPU may fall a ring behind: under a
            # sanitizer up to 1 % of the frames may be dropped, each one counted.)
            raise HarnessError("vnetd dropped frames to C: %s" % c1["c"]["drops"])
        # B was stopped mid-stream: frames in flight were posted but not yet completed.
        lo, hi = (rb["tx"]["packets"] + rb["announce_packets"],
                  rb["tx"]["posted"] + rb["announce_packets"])
        if not lo <= c1["b"]["rx_packets"] <= hi:
            raise HarnessError("B completed %d and posted %d frames, vnetd received %d from b"
                               % (lo, hi, c1["b"]["rx_packets"]))
        self.finish(c)

    @staticmethod
    def _dead(proc):
        raise HarnessError("%s exited (status %s) before forwarding; log tail:\n%s"
                           % (proc.name, proc.returncode, proc.log_tail()))

    def settled(self, ports=tuple(MAC), timeout=5):
        """Counters once those of `ports` stop changing (their senders are gone)."""
        prev = [None]

        def same():
            cur = self.counters()
            key = {p: (cur[p]["rx_packets"], cur[p]["tx_packets"], drops(cur, p)) for p in ports}
            if key == prev[0]:
                return cur
            prev[0] = key
            time.sleep(0.1)  # the next sample is compared with this one
            return None
        return wait_until(same, timeout, interval=0.0, what="vnetd counters settling")

    # --- phase 2 -------------------------------------------------------------------
    def window(self):
        """(frames/s vnetd took from b, note) over WINDOW seconds; the note has c's drops
        and the worker's TSC cycles per switched frame."""
        c0, w0, t0 = self.counters(), self.counters_worker(), time.monotonic()
        time.sleep(WINDOW)  # a measurement window; the assertion is on its count
        c1, w1, t1 = self.counters(), self.counters_worker(), time.monotonic()
        rate = (c1["b"]["rx_packets"] - c0["b"]["rx_packets"]) / (t1 - t0)
        note = "%.0f/s (c dropped %d, %.0f cycles/frame)" % (
            rate, drops(c1, "c") - drops(c0, "c"),
            (w1["busy_cycles"] - w0["busy_cycles"]) / max(1, w1["packets"] - w0["packets"]))
        return rate, note

    def stuck_rx(self):
        # C busy-polls like B, so both get an even share of their CPU.  Windows with d
        # stuck and with d absent alternate, so both see the same load on the machine.
        c = self.spawn("c", "rx", "--duration", LONG, "--queue-size", 4096, "--busy-poll")
        stuck_argv = ("d", "rx", "--duration", LONG, "--rx-no-refill", "--queue-size",
                      STUCK_QUEUE)
        d = self.spawn(*stuck_argv)
        c0 = self.settled()
        b = self.spawn("b", "tx", "--duration", LONG, "--dst-mac", NOBODY, "--busy-poll",
                       frames=10000)
        wait_until(lambda: self.counters()["d"]["drops"]["rx_no_buffers"] > 0, 10,
                   interval=0.05, what="vnetd dropping frames for d (rx_no_buffers)")
        stuck, absent, notes = [], [], []
        connections = 1
        for _ in range(ROUNDS):
            rate, note = self.window()
            stuck.append(rate)
            notes.append("stuck " + note)
            self.finish(d)  # d absent: its frames are dropped as rx_not_ready
            rate, note = self.window()
            absent.append(rate)
            notes.append("absent " + note)
            d = self.spawn(*stuck_argv)
            connections += 1
        log("B->C windows: %s" % "; ".join(notes))
        # The last d connected just now: b keeps flooding until its ring is full too.
        want = STUCK_QUEUE * connections
        wait_until(lambda: self.counters()["d"]["tx_packets"] - c0["d"]["tx_packets"] >= want,
                   10, interval=0.05, what="%d frames delivered to d over %d connections"
                   % (want, connections))
        self.finish(b)
        c1 = self.settled()
        w0 = self.counters_worker()
        time.sleep(1.0)  # an idle window: the worker must sleep, not retry d
        w1 = self.counters_worker()
        delta = {k: c1["d"]["drops"][k] - c0["d"]["drops"][k]
                 for k in ("rx_no_buffers", "rx_not_ready")}
        delivered = c1["d"]["tx_packets"] - c0["d"]["tx_packets"]
        flooded = c1["b"]["rx_packets"] - c0["b"]["rx_packets"]
        loops = w1["loops"] - w0["loops"]
        log("d stuck (%d connections): %d frames flooded to d, %d delivered, dropped %s; "
            "worker idle 1 s: %d loops, %d sleeps" % (connections, flooded, delivered, delta,
                                                     loops, w1["sleeps"] - w0["sleeps"]))
        if delivered != STUCK_QUEUE * connections:
            raise HarnessError("vnetd delivered %d frames to d, whose ring holds %d, over %d "
                               "connections" % (delivered, STUCK_QUEUE, connections))
        if delivered + delta["rx_no_buffers"] + delta["rx_not_ready"] != flooded:
            raise HarnessError("frames flooded to d: %d, delivered %d + dropped %s (each frame "
                               "must be tried once and dropped)" % (flooded, delivered, delta))
        if delta["rx_no_buffers"] < flooded // 4:
            raise HarnessError("only %d of %d frames were dropped as rx_no_buffers"
                               % (delta["rx_no_buffers"], flooded))
        if loops > 10000:
            raise HarnessError("worker ran %d poll loops in 1 s without traffic (d stuck): "
                               "it keeps retrying instead of sleeping" % loops)
        ms, ma = statistics.median(stuck), statistics.median(absent)
        log("B->C with d stuck: median %.0f/s, %.0f%% of the %.0f/s with d absent"
            % (ms, 100 * ms / ma, ma))
        san = sanitizer_of(self.vnetd.proc.pid)
        if san:  # instrumented atomics and memory accesses: timing says little
            log("vnetd runs under %s: throughput ratio not asserted" % san)
        elif ms < STUCK_RATIO * ma:
            raise HarnessError("B->C %.0f frames/s with d stuck, %.0f with d absent (< %.0f%%)"
                               % (ms, ma, 100 * STUCK_RATIO))
        self.finish(d)
        self.finish(c)

    def counters_worker(self):
        self.vnetd.check_alive()
        return self.ctl.request("counters")["worker"]

    # --- phase 3 -------------------------------------------------------------------
    def flood(self):
        c = self.spawn("c", "rx", "--duration", LONG, "--queue-size", RX_QUEUE)
        f = self.spawn("f", "rx", "--duration", LONG, "--queue-size", RX_QUEUE)
        e = self.spawn("e", "tx", "--duration", LONG, "--dst-mac", MAC["f"], "--busy-poll",
                       frames=10000)
        c0 = self.settled(("c",))
        e0 = self.counters()["e"]["rx_packets"]
        b = self.spawn("b", "tx", "--count", FLOOD_B_COUNT, "--rate", FLOOD_B_RATE,
                       "--dst-mac", MAC["c"], "--timeout", 60)
        if b.wait(60) is None:
            raise HarnessError("B still running after 60 s; log:\n%s" % b.log_tail())
        rb = result_of(b)
        e1 = self.counters()["e"]["rx_packets"]
        c1 = self.settled(("c",))
        for p in (e, f, c):
            self.finish(p)
        to_c = c1["c"]["tx_packets"] - c0["c"]["tx_packets"]
        lost = drops(c1, "c") - drops(c0, "c")
        want = FLOOD_B_COUNT + rb["announce_packets"]
        log("flood: e sent %d frames while B sent %d at %d/s in %.2f s; c got %d, dropped %d"
            % (e1 - e0, rb["tx"]["packets"], FLOOD_B_RATE, rb["wall_seconds"], to_c, lost))
        if b.returncode != 0 or not rb["complete"] or rb["tx"]["packets"] != FLOOD_B_COUNT:
            raise HarnessError("B did not complete its %d frames: %s" % (FLOOD_B_COUNT, rb))
        if e1 - e0 < 2 * FLOOD_B_COUNT:
            raise HarnessError("E sent only %d frames while B ran: not a flood" % (e1 - e0))
        san = sanitizer_of(self.vnetd.proc.pid)
        if san:
            # Instrumented, the sinks on the traffic CPU fall behind the flood: every
            # frame of B must still be accounted for, and most must arrive.
            if to_c + lost != want or to_c < want // 2:
                raise HarnessError("c got %d of B's %d frames (dropped %d) while e flooded"
                                   % (to_c, want, lost))
            log("vnetd runs under %s: lossless delivery not asserted" % san)
        elif to_c != want or lost:
            raise HarnessError("c got %d of B's %d frames (dropped %d) while e flooded"
                               % (to_c, want, lost))
        limit = 1.5 * FLOOD_B_COUNT / FLOOD_B_RATE + 0.5
        if rb["wall_seconds"] > limit:
            raise HarnessError("B needed %.2f s for %d frames at %d/s (limit %.2f s): starved"
                               % (rb["wall_seconds"], FLOOD_B_COUNT, FLOOD_B_RATE, limit))


def body(s, args):
    t = Faults(s)
    t.vnetd.start()
    t.ctl = t.vnetd.connect_control()
    t0 = time.monotonic()
    t.kill_loop()
    t1 = time.monotonic()
    t.stuck_rx()
    t2 = time.monotonic()
    t.flood()
    t3 = time.monotonic()
    log("phases: kill loop %.1f s, stuck rx %.1f s, flood %.1f s" % (t1 - t0, t2 - t1, t3 - t2))
    rc = t.vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)


if __name__ == "__main__":
    run_test("faults", body, [lambda a: require_root(), require_vnetd, require_traffic])
