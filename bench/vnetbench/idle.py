"""Scenario idle: what a switch with connected but silent ports costs.

vnet:    vnetd (default adaptive polling) with two vhost-user ports, each connected to
         a vnet-traffic front end in rx mode that sleeps on its call eventfd (--notify)
         and sends nothing after its one start-up announcement, plus a TAP port in a
         namespace with IPv6 off (silent).
testpmd: dpdk-testpmd io fwd over two net_vhost ports with the same two front ends.
After 2 s of settling, the switch process' CPU time over the window (30 s, 10 s with
--quick) divided by the window, in % of one core: cpu_pct from the threads' schedstat
run time (ns), cpu_pct_stat from utime+stime of /proc/PID/stat (10 ms ticks, so its
resolution is 0.03 % over 30 s).
"""

import time

from .common import (BenchNetns, CpuMeter, cpus, hugepages, log, new_session, taskset,
                     unique, wait_until)
from vnet_harness.testpmd import TestPmd, vhost_vdev  # noqa: E402
from vnet_harness.vnetd import PortSpec, TapSpec, Vnetd, find_program  # noqa: E402

SIDES = ("vnet", "testpmd")


def front_end(s, sock, mac, cpu, seconds):
    prog = find_program(s.build_dir, "vnet-traffic")
    return s.spawn("fe-%s" % mac[-2:], taskset(cpu) + [
        prog, "--socket", sock, "--mode", "rx", "--notify", "--duration", str(seconds),
        "--mac", mac])


def run_one(args, side):
    sw_cpu, cpu = cpus()
    window = 10.0 if args.quick else 30.0
    with new_session("idle-%s" % side, args) as s:
        a, b = s.path("a.sock"), s.path("b.sock")
        if side == "vnet":
            ns = BenchNetns(s, "i")
            sw = Vnetd(s, [PortSpec(a), PortSpec(b),
                           TapSpec("t0", ifname=unique("it"), netns=ns)],
                       log_level="warn", extra_args=["--cpu", str(sw_cpu)] + args.vnetd_arg)
            sw.start()
            ns.run("ip link set %s up" % unique("it"))
        else:
            hugepages.ensure_hugepages()
            sw = TestPmd(s, "idlepmd", [vhost_vdev(0, a), vhost_vdev(1, b)], virtio_user=False,
                         main_cpu=sw_cpu, fwd_cpu=sw_cpu, fwd_mode="io")
            sw.start()
            sw.cmd("start")
        front_end(s, a, "52:54:00:4e:49:01", cpu, window + 60)
        front_end(s, b, "52:54:00:4e:49:02", cpu, window + 60)
        if side == "vnet":
            sw.wait_connected(["vhu0", "vhu1"])
        else:
            wait_until(lambda: sw.link_up(0) and sw.link_up(1), 20, interval=0.2,
                       what="net_vhost links up")
        time.sleep(2.0)
        if side == "vnet":
            w0 = sw.vnetctl("counters")["worker"]
        meter = CpuMeter(sw.proc.pid)
        time.sleep(window)
        res = {"cpu_pct": meter.percent(), "cpu_pct_stat": meter.percent_stat(),
               "window_s": window}
        if side == "vnet":
            w1 = sw.vnetctl("counters")["worker"]
            res["wakeups"] = w1["wakeups"] - w0["wakeups"]
            res["sleeps"] = w1["sleeps"] - w0["sleeps"]
        log("idle %s: %.3f %% of a core" % (side, res["cpu_pct"]))
        return res


def scenarios():
    return [("idle", run_one, SIDES)]
