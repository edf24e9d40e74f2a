"""Scenario ipp: instructions per packet of vnetd's worker on the 64-byte vm2vm path.

`perf stat -e instructions` is not available on this machine (the virtual CPU exposes
no hardware counters: "<not supported>"), so vnetd runs under
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=DIR/cg.%p
with two vhost-user ports driven by one `vnet-traffic --pair-socket --rx-count-only`
thread (as in vm2vm-64-vt): each port keeps its TX ring full of 64-byte frames to the
other's MAC and its RX ring refilled in the same loop.  Under callgrind vnetd is ~50x
slower than the generator, so the worker is never idle, and since the sink is the
generator's own thread it cannot be descheduled while the switch delivers: every frame
the worker takes is forwarded, none dropped for want of RX buffers (a separate sink
process sharing the traffic CPU dropped about two thirds, and the count then mixed
the drop path into the figure: 382 and 433 for the same build).  After the generator
finished, vnetctl gives the worker's packet count and the ports' delivered frames,
vnetd gets SIGTERM and callgrind writes one file per thread; the worker's is the one
whose functions include `Worker::loop`, its `summary:` line is its instruction count
(Ir, user space only).

Two runs, of D1 and D2 = 3 x D1 seconds: instructions per packet = (I2 - I1) / (P2 - P1),
which removes start-up, connection set-up and shut-down.  The plain I2 / P2 is kept
too.  A run where under 99 % of the frames taken were delivered fails.  Only vnetd is
measured: testpmd's instructions are not comparable this way.

Scenario ipp-mq4: the same count with multiqueue ports.  vnetd's two ports offer 4 queue
pairs; the front end is testpmd's virtio-user as in vm2vm-64-mq4 (4 pairs, 256 flows,
io forwarding; vnet-traffic has one pair per port).  Side vnet-1q: the same vnetd with
the front end on one pair, so the difference is what steering and polling 4 pairs cost
per frame.  D1 = 4 s (2 s with --quick).
"""

import time

import glob
import os
import re

from .common import HarnessError, cpus, hugepages, log, new_session, pair_traffic, use_baseline
from vnet_harness.testpmd import TestPmd, virtio_user_vdev  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd  # noqa: E402

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


def measure(args, seconds):
    sw_cpu, cpu = cpus()
    with new_session("ipp-%d" % seconds, args) as s:
        a, b = s.path("a.sock"), s.path("b.sock")
        d = CallgrindVnetd(s, [PortSpec(a), PortSpec(b)], s.tmp, log_level="warn",
                           extra_args=["--cpu", str(sw_cpu)] + args.vnetd_arg)
        d.start(timeout=120)
        gen = pair_traffic(s, args.build_dir, a, b, MAC_A, MAC_B, 64, cpu, seconds)
        if gen.wait(seconds + 120) is None:
            raise HarnessError("vnet-traffic still running:\n%s" % gen.log_tail())
        if gen.returncode != 0:
            raise HarnessError("generator status %s:\n%s" % (gen.returncode, gen.log_tail()))
        w = d.vnetctl("counters", timeout=60)
        packets = w["worker"]["packets"]
        delivered = sum(p["tx_packets"] for p in w["counters"].values())
        rc = d.proc.stop(timeout=120)
        instr = worker_instructions(s.tmp)
        log("ipp: %d s, worker switched %d packets, delivered %d, %d instructions (%.0f/packet)"
            % (seconds, packets, delivered, instr, instr / max(1, packets)))
        if packets == 0 or delivered < 0.99 * packets:
            raise HarnessError("ipp: the worker took %d frames and delivered %d: the figure "
                               "would mix in the drop path" % (packets, delivered))
        return {"seconds": seconds, "packets": packets, "delivered": delivered,
                "instructions": instr, "vnetd_status": rc}


def marginal(name, r1, r2):
    """Instructions per packet between a run and one 3x as long (start-up removed)."""
    dp = r2["packets"] - r1["packets"]
    if dp <= 0:
        raise HarnessError("%s: the longer run switched no more packets (%d, %d)"
                           % (name, r1["packets"], r2["packets"]))
    return {"instructions_per_packet": (r2["instructions"] - r1["instructions"]) / dp,
            "instructions_per_packet_total": r2["instructions"] / r2["packets"],
            "small": r1, "large": r2}


def run_one(args, side):
    d1 = 1 if args.quick else 2
    return marginal("ipp", measure(args, d1), measure(args, 3 * d1))


MQ_QUEUES = 4


def measure_mq(args, seconds, queues, baseline):
    """vnetd under callgrind with two 4-pair ports, testpmd's virtio-user front end on
    `queues` pairs per port (io forwarding, 256 flows), for `seconds`."""
    sw_cpu, cpu = cpus()
    with new_session("ipp-mq-%d" % seconds, args) as s:
        a, b = s.path("a.sock"), s.path("b.sock")
        hugepages.ensure_hugepages()
        d = CallgrindVnetd(s, [PortSpec(a, queues=MQ_QUEUES), PortSpec(b, queues=MQ_QUEUES)],
                           s.tmp, log_level="warn",
                           extra_args=["--cpu", str(sw_cpu)] + args.vnetd_arg)
        if baseline:
            use_baseline(d, args.baseline)
        d.start(timeout=120)
        app = ["--rxq=%d" % queues, "--txq=%d" % queues, "--txonly-multi-flow"]
        fe = TestPmd(s, "fepmd", [virtio_user_vdev(0, a, mac=MAC_A, queues=queues),
                                  virtio_user_vdev(1, b, mac=MAC_B, queues=queues)],
                     main_cpu=cpu, fwd_cpu=cpu, fwd_mode="io",
                     eth_peers={0: MAC_B, 1: MAC_A}, extra_app=app)
        fe.start()
        fe.wait_link_up(0, timeout=60)
        fe.wait_link_up(1, timeout=60)
        fe.cmd("set txpkts 64")
        fe.start_fwd(tx_first=max(1, 8 // queues))
        time.sleep(seconds)
        w = d.vnetctl("counters", timeout=60)
        fe.stop_fwd()
        fe.quit()
        packets = w["worker"]["packets"]
        delivered = sum(p["tx_packets"] for p in w["counters"].values())
        rc = d.proc.stop(timeout=120)
        instr = worker_instructions(s.tmp)
        log("ipp-mq %d pair(s): %d s, worker switched %d packets, delivered %d, %d instructions"
            " (%.0f/packet)" % (queues, seconds, packets, delivered, instr, instr / max(1, packets)))
        if packets == 0 or delivered < 0.99 * packets:
            raise HarnessError("ipp-mq: the worker took %d frames and delivered %d"
                               % (packets, delivered))
        return {"seconds": seconds, "packets": packets, "delivered": delivered,
                "instructions": instr, "vnetd_status": rc}


def run_mq(args, side):
    queues = 1 if side == "vnet-1q" else MQ_QUEUES
    d1 = 2 if args.quick else 4
    return marginal("ipp-mq", measure_mq(args, d1, queues, side == "vnet-base"),
                    measure_mq(args, 3 * d1, queues, side == "vnet-base"))


def scenarios(args=None):
    mq_sides = ("vnet", "vnet-1q") + (("vnet-base",) if args is not None and args.baseline
                                      else ())
    return [("ipp", run_one, SIDES), ("ipp-mq4", run_mq, mq_sides)]
