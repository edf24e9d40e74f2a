"""Shared pieces of the benchmark: harness import, CPU plan, per-run names, CPU time.

Every measurement runs inside its own `vnet_harness.Session` (temp dir, processes,
DPDK hugepage files, sockets, undone in reverse order on every exit path).  Network
namespaces and links created here are named `vnb<pid><suffix>` and deleted by name
by the same session cleanup.
"""

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

from vnet_harness import HarnessError, Session, log, wait_until  # noqa: E402,F401
from vnet_harness import hugepages  # noqa: E402,F401
from vnet_harness.netns import Netns  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.vnetd import find_program  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpus():
    """(switch_cpu, traffic_cpu): the switch under test on one core, every traffic
    generator, sink, iperf3 and ping on the other (the harness' own plan)."""
    return cpu_plan()


def line_latency_ns(build_dir, sw_cpu, gen_cpu):
    """One cache line's one-way trip between the two CPUs now (vnet-linexfer, 0.2 s).
    On a virtual machine it changes with where the host runs the vCPUs, and the 64-byte
    results change with it: each run records the value it ran under."""
    try:
        out = subprocess.run([os.path.join(build_dir, "vnet-linexfer"), "--cpus",
                              "%d,%d" % (sw_cpu, gen_cpu), "--seconds", "0.2"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return json.loads(out).get("latency_ns")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def use_baseline(vnetd, build_dir):
    """Points a harness Vnetd at the vnetd and vnetctl of another build (--baseline)."""
    vnetd.binary = find_program(build_dir, "vnetd")
    vnetd.vnetctl_binary = find_program(build_dir, "vnetctl")
    if vnetd.binary is None or vnetd.vnetctl_binary is None:
        raise HarnessError("vnetd/vnetctl not found in --baseline %s" % build_dir)


def unique(suffix):
    name = "vnb%d%s" % (os.getpid(), suffix)
    if len(name) > 15:
        raise HarnessError("interface name %s is longer than 15 bytes" % name)
    return name


class BenchNetns(Netns):
    """The harness' Netns (run, spawn, ping, own_link, cleanup by name) with this
    benchmark's own per-run prefix `vnb<pid>`."""

    def __init__(self, session, suffix):  # noqa: super().__init__ would pick vnt<pid>
        self.session = session
        self.name = unique(suffix)
        self._links = []
        r = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError("ip netns add %s: %s" % (self.name, r.stderr.strip()))
        session.cleanup.push("network namespace %s" % self.name, self._delete)
        self.run("ip link set lo up")
        self.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                 "net.ipv6.conf.default.disable_ipv6=1", check=False)


def delete_root_link_later(session, ifname):
    """Cleanup: delete a link of the root namespace by name if it still exists."""
    def rm():
        subprocess.run(["ip", "link", "del", ifname], capture_output=True)
    session.cleanup.push("link %s" % ifname, rm)


def proc_cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        text = f.read()
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_runtime_seconds(pid):
    """CPU time of all threads from /proc/PID/task/*/schedstat (nanoseconds, so finer than
    the clock ticks of /proc/PID/stat); falls back to utime+stime.  Threads that exit
    during the window are lost: the switches measured here keep theirs."""
    total, seen = 0, False
    base = "/proc/%d/task" % pid
    try:
        for tid in os.listdir(base):
            try:
                with open(os.path.join(base, tid, "schedstat")) as f:
                    total += int(f.read().split()[0])
                    seen = True
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total / 1e9 if seen else proc_cpu_seconds(pid)


class CpuMeter:
    """CPU time a process used over a wall-clock window, in % of one core: both the
    schedstat runtime (ns) and utime+stime from /proc/PID/stat (clock ticks)."""

    def __init__(self, pid):
        self.pid = pid
        self.t0 = time.monotonic()
        self.c0 = proc_cpu_seconds(pid)
        self.r0 = proc_runtime_seconds(pid)

    def percent(self):
        return 100.0 * (proc_runtime_seconds(self.pid) - self.r0) / (time.monotonic() - self.t0)

    def percent_stat(self):
        return 100.0 * (proc_cpu_seconds(self.pid) - self.c0) / (time.monotonic() - self.t0)


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def taskset(cpu):
    return ["taskset", "-c", str(cpu)]


def pair_traffic(session, build_dir, sock_a, sock_b, mac_a, mac_b, size, cpu, seconds,
                 packed=False):
    """One vnet-traffic thread driving both ports (--pair-socket): each keeps its TX ring
    of 256 full of SIZE-byte frames to the other's MAC and its RX ring refilled, counting
    what it receives without reading it (--rx-count-only), for SECONDS.  `packed`: packed
    virtqueues (--packed) instead of split ones."""
    prog = find_program(build_dir, "vnet-traffic")
    if prog is None:
        raise HarnessError("vnet-traffic not found in %s" % build_dir)
    return session.spawn("vnet-traffic", [
        prog, "--socket", sock_a, "--pair-socket", sock_b, "--mac", mac_a, "--pair-mac", mac_b,
        "--size", str(size), "--queue-size", "256", "--rx-count-only", "--cpu", str(cpu),
        "--duration", str(seconds), "--log-level", "warn"] + (["--packed"] if packed else []))


def new_session(name, args):
    return Session("bench-" + name, args.build_dir, keep_logs=args.keep_logs)
