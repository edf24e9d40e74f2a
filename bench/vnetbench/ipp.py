"""Scenario ipp: instructions per packet of vnetd's worker on the 64-byte vm2vm path.

`perf stat -e instructions` is not available on this machine (the virtual CPU exposes
no hardware counters: "<not supported>"), so vnetd runs under
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=DIR/cg.%p
with two vhost-user ports: vnet-traffic --mode rx (sink, MAC B) on one and
vnet-traffic --mode tx --count N --dst-mac B (generator) on the other.  Under callgrind
vnetd is ~50x slower than the generator, so the worker is never idle.  After the
generator finished, vnetctl gives the worker's packet count, vnetd gets SIGTERM and
callgrind writes one file per thread; the worker's is the one whose functions include
`Worker::loop`, its `summary:` line is its instruction count (Ir, user space only).

Two runs, N1 and N2 = 3 x N1 frames: instructions per packet = (I2 - I1) / (P2 - P1),
which removes start-up, connection set-up and shut-down.  The plain I2 / P2 is kept
too.  Only vnetd is measured: testpmd's instructions are not comparable this way.
"""

import glob
import os
import re

from .common import HarnessError, cpus, log, new_session, taskset
from vnet_harness.vnetd import PortSpec, Vnetd, find_program  # noqa: E402

MAC_A, MAC_B = "52:54:00:4e:43:01", "52:54:00:4e:43:02"
SIDES = ("vnet",)


class CallgrindVnetd(Vnetd):
    def __init__(self, session, ports, out_dir, **kw):
        super().__init__(session, ports, **kw)
        self.out_dir = out_dir

    def argv(self):
        base = super().argv()
        i = base.index(self.binary)
        return base[:i] + ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                           "--callgrind-out-file=%s/cg.%%p" % self.out_dir] + base[i:]


def worker_instructions(out_dir):
    found = []
    for path in glob.glob(os.path.join(out_dir, "cg.*")):
        with open(path, errors="replace") as f:
            text = f.read()
        m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.MULTILINE)
        if m and "Worker::loop" in text:
            found.append((int(m.group(1)), path))
    if len(found) != 1:
        raise HarnessError("expected one callgrind file of the worker thread, found %r" % found)
    return found[0][0]


def measure(args, count):
    sw_cpu, cpu = cpus()
    prog = None
    with new_session("ipp-%d" % count, args) as s:
        prog = find_program(s.build_dir, "vnet-traffic")
        a, b = s.path("a.sock"), s.path("b.sock")
        d = CallgrindVnetd(s, [PortSpec(a), PortSpec(b)], s.tmp, log_level="warn",
                           extra_args=["--cpu", str(sw_cpu)] + args.vnetd_arg)
        d.start(timeout=120)
        sink = s.spawn("sink", taskset(cpu) + [prog, "--socket", b, "--mode", "rx",
                                                "--duration", "600", "--mac", MAC_B])
        d.wait_connected(["vhu1"], timeout=60)
        gen = s.spawn("gen", taskset(cpu) + [prog, "--socket", a, "--mode", "tx", "--count",
                                              str(count), "--timeout", "300", "--mac", MAC_A,
                                              "--dst-mac", MAC_B])
        rc = gen.wait(330)
        if rc != 0:
            raise HarnessError("generator status %s:\n%s" % (rc, gen.log_tail()))
        w = d.vnetctl("counters", timeout=60)
        packets = w["worker"]["packets"]
        sink_rx = w["counters"]["vhu1"]["tx_packets"]
        sink.stop()
        rc = d.proc.stop(timeout=120)
        instr = worker_instructions(s.tmp)
        log("ipp: %d frames sent, worker switched %d packets, %d instructions (%.0f/packet)"
            % (count, packets, instr, instr / max(1, packets)))
        return {"frames": count, "packets": packets, "to_sink": sink_rx,
                "instructions": instr, "vnetd_status": rc}


def run_one(args, side):
    n1 = 100000 if args.quick else 300000
    r1 = measure(args, n1)
    r2 = measure(args, 3 * n1)
    dp = r2["packets"] - r1["packets"]
    return {"instructions_per_packet": (r2["instructions"] - r1["instructions"]) / dp,
            "instructions_per_packet_total": r2["instructions"] / r2["packets"],
            "small": r1, "large": r2}


def scenarios():
    return [("ipp", run_one, SIDES)]
