"""Scenario tap: host to host through TAP, namespace A <-> namespace B.

Sides (same addresses, same iperf3/ping commands, same CPU placement):
  vnet      vnetd with two TAP ports it creates, one in each namespace (offloads on)
  bridge    Linux bridge in a third namespace, a veth pair from it into A and into B
  dpdk-tap  dpdk-testpmd io fwd between two net_tap PMDs whose interfaces are moved
            into A and B after start-up
  vnet-base with --baseline DIR: vnet with the vnetd of another build (an A/B)
  floor     vnet-tapfloor: one busy-polling thread that read()s a frame from one TAP and
            write()s it to the other, nothing else (ping only: it has no offloads).  Not a
            peer but the least any process between two TAPs can do: the RTT floor of a
            userspace switch on this machine, which vnet's RTT is judged against beside
            the bridge's
The switch process (vnetd, testpmd) is pinned to the switch core; iperf3 client and
server and ping to the other core.  The bridge has no process: the kernel forwards
in the softirq of the sending CPU (the traffic core).

Measured: ping RTT average and p99 (ping -i 0.002, then back to back with -i 0; every
reply's time= parsed), then iperf3 TCP A -> B with 1 and with 4 streams (receiver
throughput from iperf3 -J).
"""

import json
import re
import subprocess
import time

from .common import (BenchNetns, CpuMeter, HarnessError, cpus, delete_root_link_later,
                     hugepages, log, new_session, taskset, unique, use_baseline, wait_until)
from vnet_harness.testpmd import TestPmd  # noqa: E402
from vnet_harness.vnetd import TapSpec, Vnetd, find_program  # noqa: E402

SIDES = ("vnet", "bridge", "dpdk-tap", "floor")
IP_A, IP_B = "10.91.0.1", "10.91.0.2"


def percentile(values, p):
    v = sorted(values)
    if not v:
        return None
    k = (len(v) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def ping_stats(ns, target, count, cpu, interval="0.002", prefix="rtt"):
    cmd = "%s ping -n -q -c 3 -i 0.05 -W 1 %s >/dev/null; %s ping -n -i %s -c %d -W 1 %s" % (
        " ".join(taskset(cpu)), target, " ".join(taskset(cpu)), interval, count, target)
    rc, out = ns.run(cmd, check=False, timeout=60)
    times = [float(x) * 1000.0 for x in re.findall(r"time=([\d.]+) ms", out)]
    if len(times) < count * 0.9:
        raise HarnessError("[%s] ping %s: %d of %d replies (rc %d):\n%s"
                           % (ns.name, target, len(times), count, rc, out[-2000:]))
    return {prefix + "_avg_us": sum(times) / len(times), prefix + "_p99_us": percentile(times, 99),
            prefix + "_min_us": min(times), prefix + "_replies": len(times),
            prefix + "_sent": count}


def iperf(s, ns_srv, ns_cli, server_ip, seconds, streams, cpu, tag):
    srv = ns_srv.spawn("iperf3-srv-%s" % tag,
                       taskset(cpu) + ["stdbuf", "-oL", "iperf3", "-s", "-1", "-B", server_ip, "-p", "5291"])
    srv.wait_for_log(r"Server listening", 10)
    cmd = "%s iperf3 -c %s -p 5291 -t %d -P %d -J" % (" ".join(taskset(cpu)), server_ip,
                                                       seconds, streams)
    rc, out = ns_cli.run(cmd, check=False, timeout=seconds + 30)
    try:
        doc = json.loads(out[out.index("{"):])
        bps = doc["end"]["sum_received"]["bits_per_second"]
        retr = doc["end"].get("sum_sent", {}).get("retransmits")
    except (ValueError, KeyError) as e:
        raise HarnessError("iperf3 %d streams (rc %d) gave no result (%s):\n%s"
                           % (streams, rc, e, out[-2000:]))
    srv.wait(10)
    srv.stop()
    return bps / 1e9, retr


def setup_vnet(s, nsa, nsb, sw_cpu, extra=(), baseline=None):
    ta, tb = unique("ta"), unique("tb")
    d = Vnetd(s, [TapSpec("ta", ifname=ta, netns=nsa), TapSpec("tb", ifname=tb, netns=nsb)],
              log_level="warn", extra_args=["--cpu", str(sw_cpu)] + list(extra))
    if baseline:  # vnet-base: the same, with the --baseline build's vnetd
        use_baseline(d, baseline)
    d.start()
    return ta, tb, d.proc.pid


def setup_bridge(s, nsa, nsb):
    nsc = BenchNetns(s, "c")
    br, ca, cb = unique("br"), unique("ca"), unique("cb")
    va, vb = unique("va"), unique("vb")
    for dev in (br, ca, cb):
        nsc.own_link(dev)
    nsa.own_link(va)
    nsb.own_link(vb)
    nsc.run("ip link add %s type bridge && ip link set %s up" % (br, br))
    for v, c, ns in ((va, ca, nsa), (vb, cb, nsb)):
        nsc.run("ip link add %s type veth peer name %s && ip link set %s netns %s"
                % (c, v, v, ns.name))
        nsc.run("ip link set %s master %s && ip link set %s up" % (c, br, c))
    return va, vb, None


def setup_dpdk_tap(s, nsa, nsb, sw_cpu):
    pa, pb = unique("pa"), unique("pb")
    for dev in (pa, pb):
        delete_root_link_later(s, dev)
    nsa.own_link(pa)
    nsb.own_link(pb)
    hugepages.ensure_hugepages()
    pmd = TestPmd(s, "tappmd", ["net_tap0,iface=%s" % pa, "net_tap1,iface=%s" % pb],
                  virtio_user=False, main_cpu=sw_cpu, fwd_cpu=sw_cpu, fwd_mode="io")
    pmd.start()
    for dev, ns in ((pa, nsa), (pb, nsb)):
        r = subprocess.run(["ip", "link", "set", dev, "netns", ns.name], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise HarnessError("ip link set %s netns %s: %s" % (dev, ns.name, r.stderr))
    pmd.cmd("start")
    return pa, pb, pmd.proc.pid


def setup_floor(s, nsa, nsb, sw_cpu, build_dir):
    fa, fb = unique("fa"), unique("fb")
    for dev in (fa, fb):
        delete_root_link_later(s, dev)
    nsa.own_link(fa)
    nsb.own_link(fb)
    prog = find_program(build_dir, "vnet-tapfloor")
    if prog is None:
        raise HarnessError("vnet-tapfloor not found in %s" % build_dir)
    p = s.spawn("tapfloor", [prog, "--tap", fa, "--tap", fb, "--cpu", str(sw_cpu)])
    p.wait_for_log(r"^ready$", 10)
    for dev, ns in ((fa, nsa), (fb, nsb)):
        r = subprocess.run(["ip", "link", "set", dev, "netns", ns.name], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise HarnessError("ip link set %s netns %s: %s" % (dev, ns.name, r.stderr))
    return fa, fb, p


def run_one(args, side):
    sw_cpu, cpu = cpus()
    seconds = 3 if args.quick else 10
    pings = 300 if args.quick else 500
    with new_session("tap-%s" % side, args) as s:
        nsa, nsb = BenchNetns(s, "a"), BenchNetns(s, "b")
        if side in ("vnet", "vnet-base"):
            ia, ib, pid = setup_vnet(s, nsa, nsb, sw_cpu, args.vnetd_arg,
                                     args.baseline if side == "vnet-base" else None)
        elif side == "bridge":
            ia, ib, pid = setup_bridge(s, nsa, nsb)
        elif side == "floor":
            ia, ib, floor = setup_floor(s, nsa, nsb, sw_cpu, args.build_dir)
            pid = floor.pid
        else:
            ia, ib, pid = setup_dpdk_tap(s, nsa, nsb, sw_cpu)
        nsa.wait_link(ia)
        nsb.wait_link(ib)
        nsa.add_address(ia, IP_A + "/24")
        nsb.add_address(ib, IP_B + "/24")
        wait_until(lambda: nsa.ping(IP_B, count=1, interval=0.2)[1] == 1, 15, interval=0.2,
                   what="first ping %s -> %s through %s" % (nsa.name, nsb.name, side))
        res = ping_stats(nsa, IP_B, pings, cpu)
        # Back to back: the next request leaves as its reply arrives, so a switch that
        # sleeps when idle is never found asleep; what is left is the forwarding and, through
        # a switch process, the wake-up of ping on the traffic core (README: wake_ns).
        res.update(ping_stats(nsa, IP_B, pings * 4, cpu, interval="0", prefix="rtt_b2b"))
        if side == "floor":
            floor.stop()
            m = re.search(r"^(\{.*\})$", floor.read_log(), re.MULTILINE)
            if not m:
                raise HarnessError("vnet-tapfloor printed no totals:\n%s" % floor.read_log()[-2000:])
            tot = json.loads(m.group(1))
            res["floor_frames"] = tot["a_to_b"]["frames"] + tot["b_to_a"]["frames"]
            res["floor_write_errors"] = (tot["a_to_b"]["write_errors"]
                                         + tot["b_to_a"]["write_errors"])
            log("tap floor: RTT avg %.1f us p99 %.1f us, back to back avg %.1f us p99 %.1f us"
                % (res["rtt_avg_us"], res["rtt_p99_us"], res["rtt_b2b_avg_us"],
                   res["rtt_b2b_p99_us"]))
            return res
        meter = CpuMeter(pid) if pid else None
        res["tcp1_gbps"], res["tcp1_retransmits"] = iperf(s, nsb, nsa, IP_B, seconds, 1, cpu, "1")
        if meter:
            res["switch_cpu_pct_tcp1"] = meter.percent()
        res["tcp4_gbps"], res["tcp4_retransmits"] = iperf(s, nsb, nsa, IP_B, seconds, 4, cpu, "4")
        res["iperf_seconds"] = seconds
        log("tap %s: TCP %.2f / %.2f Gbit/s (1/4 streams), RTT avg %.1f us p99 %.1f us, "
            "back to back avg %.1f us p99 %.1f us"
            % (side, res["tcp1_gbps"], res["tcp4_gbps"], res["rtt_avg_us"], res["rtt_p99_us"],
               res["rtt_b2b_avg_us"], res["rtt_b2b_p99_us"]))
        time.sleep(0.2)
        return res


def scenarios(args=None):
    sides = SIDES + (("vnet-base",) if args is not None and args.baseline else ())
    return [("tap", run_one, sides)]
