"""bench/run: run the scenarios, alternating vnet and its peers, and write the report.

For each scenario, runs are interleaved A B (C) A B (C) ... so that load from other
processes on the machine hits every side alike; the table shows per-side medians and
vnet/peer ratios of the medians.  Every run's numbers go to the JSON file.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback

from .common import BENCH_DIR, REPO, HarnessError, cpus, log, median
from vnet_harness.vxlan import require_kernel_links as vxlan_links
from . import idle, ipp, tap, vm2vm, vxlan

SCENARIO_GROUPS = {"vm2vm": vm2vm, "tap": tap, "vxlan": vxlan, "idle": idle, "ipp": ipp}
ORDER = ("vm2vm", "tap", "vxlan", "idle", "ipp")

# (scenario, metric, label, peer side, target ratio, "higher"/"lower" is better, note)
COMPARISONS = [
    ("vm2vm-64", "mpps", "Mpps at the sink (testpmd front end)", "testpmd", 1.5, "higher",
     ">= 1.5x testpmd"),
    ("vm2vm-64", "cycles_per_packet", "switch cycles/packet", "testpmd", 0.6, "lower",
     "<= 0.6x testpmd"),
    ("vm2vm-64", "switch_mpps_best", "switch Mpps, best 10 % of 0.25 s samples", "testpmd", 1.5,
     "higher", ">= 1.5x testpmd"),
    ("vm2vm-64", "cycles_per_packet_best", "switch cycles/packet, best 10 % of samples",
     "testpmd", 0.6, "lower", "<= 0.6x testpmd"),
    ("vm2vm-64", "switch_cpu_pct", "switch process CPU %", "testpmd", None, None, ""),
    ("vm2vm-64", "gen_busy_pct", "front end busy % (<100: not the bottleneck)", "testpmd",
     None, None, ""),
    ("vm2vm-64", "line_latency_ns", "cache line one way, ns, before each run", "testpmd", None,
     None, "host placement"),
    ("vm2vm-1518", "mpps", "Mpps at the sink", "testpmd", None, "higher", ""),
    ("vm2vm-1518", "gbps", "Gbit/s at the sink", "testpmd", None, "higher", ""),
    ("vm2vm-1518", "cycles_per_packet", "switch cycles/packet", "testpmd", None, "lower", ""),
    ("vm2vm-1518", "gen_busy_pct", "front end busy %", "testpmd", None, None, ""),
    # The 64-byte targets are judged where the front end has headroom (the issue: the
    # traffic source and sink must not be the bottleneck).  testpmd's virtio-user front
    # end above is saturated with vnetd as the switch (its busy % row); vnet-traffic's
    # pair is not (its empty-polls row).
    ("vm2vm-64-vt", "mpps", "Mpps through the switch (vnet-traffic pair)", "testpmd", 1.5,
     "higher", ">= 1.5x testpmd"),
    ("vm2vm-64-vt", "cycles_per_packet", "switch cycles/packet (vnet-traffic pair)", "testpmd",
     0.6, "lower", "<= 0.6x testpmd"),
    ("vm2vm-64-vt", "gen_busy_pct", "vnet-traffic busy % of its cycles", "testpmd", None, None,
     ""),
    ("vm2vm-64-vt", "gen_empty_polls_pct", "vnet-traffic polls that found nothing, %",
     "testpmd", None, None, "> 0: headroom"),
    ("vm2vm-64-vt", "line_latency_ns", "cache line one way, ns, before each run", "testpmd",
     None, None, "host placement"),
    # The packed virtqueue on both front-end ports (virtio-user packed_vq=1), testpmd's
    # net_vhost serving the same layout.
    ("vm2vm-64-packed", "mpps", "packed ring: Mpps at the sink", "testpmd", 1.5, "higher",
     ">= 1.5x testpmd"),
    ("vm2vm-64-packed", "cycles_per_packet", "packed ring: switch cycles/packet", "testpmd",
     None, "lower", ""),
    ("vm2vm-64-packed", "gen_busy_pct", "packed ring: front end busy %", "testpmd", None, None,
     ""),
    ("vm2vm-1518-packed", "mpps", "packed ring: Mpps at the sink", "testpmd", None, "higher", ""),
    ("vm2vm-1518-packed", "gbps", "packed ring: Gbit/s at the sink", "testpmd", None, "higher",
     ""),
    ("vm2vm-1518-packed", "cycles_per_packet", "packed ring: switch cycles/packet", "testpmd",
     None, "lower", ""),
    # The packed ring with vnet-traffic's packed driver as the front end (not saturated:
    # its empty-polls row), against testpmd's net_vhost with the same front end.
    ("vm2vm-64-vt-packed", "mpps", "packed ring: Mpps through the switch (vnet-traffic pair)",
     "testpmd", 1.5, "higher", ">= 1.5x testpmd"),
    ("vm2vm-64-vt-packed", "cycles_per_packet", "packed ring: switch cycles/packet "
     "(vnet-traffic pair)", "testpmd", None, "lower", ""),
    ("vm2vm-64-vt-packed", "gen_empty_polls_pct", "vnet-traffic polls that found nothing, %",
     "testpmd", None, None, "> 0: headroom"),
    # Multiqueue: each front-end port with 4 queue pairs (testpmd virtio-user, 256 flows),
    # every pair polled by vnetd's one worker; vnet-1q: the same vnetd, the front end on 1 pair.
    ("vm2vm-64-mq4", "cycles_per_packet", "4 queue pairs, 1 worker: switch cycles/packet",
     "vnet-1q", 1.05, "lower", "<= 1.05x one pair"),
    ("vm2vm-64-mq4", "mpps", "4 queue pairs, 1 worker: Mpps at the sink", "vnet-1q", None,
     "higher", ""),
    ("vm2vm-64-mq4", "mpps", "4 queue pairs, 1 worker: Mpps at the sink", "testpmd", None,
     "higher", ""),
    ("vm2vm-64-mq4", "cycles_per_packet", "4 queue pairs: switch cycles/packet", "testpmd",
     None, "lower", ""),
    ("vm2vm-64-mq4", "queues_busy", "queues of both ports that carried frames (of 8)",
     "vnet-1q", None, None, ""),
    ("vm2vm-64-mq4", "gen_busy_pct", "front end busy %", "vnet-1q", None, None, ""),
    # 2 queue pairs per port, vnetd with 2 workers (CPU 0 and the traffic CPU) against 1.
    ("vm2vm-64-2w", "switch_mpps", "2 pairs: switch Mpps, 2 workers vs 1", "vnet-1w", None,
     "higher", "2 cores shared"),
    ("vm2vm-64-2w", "mpps", "2 pairs: Mpps at the sink, 2 workers vs 1", "vnet-1w", None,
     "higher", ""),
    ("vm2vm-64-2w", "switch_cpu_pct", "vnetd CPU %", "vnet-1w", None, None, ""),
    ("vm2vm-64-2w", "gen_cpu_pct", "front end (testpmd) CPU %", "vnet-1w", None, None,
     "its share"),
    ("vm2vm-64-2w", "worker_share_min_pct", "smaller worker's share of frames, %", None, None,
     None, "50: even"),
    ("tap", "tcp1_gbps", "TCP 1 stream Gbit/s", "bridge", 0.8, "higher", ">= 0.8x bridge"),
    ("tap", "tcp1_gbps", "TCP 1 stream Gbit/s", "dpdk-tap", 5.0, "higher", ">= 5x DPDK tap"),
    ("tap", "tcp4_gbps", "TCP 4 streams Gbit/s", "bridge", 0.8, "higher", ">= 0.8x bridge"),
    ("tap", "tcp4_gbps", "TCP 4 streams Gbit/s", "dpdk-tap", 5.0, "higher", ">= 5x DPDK tap"),
    ("tap", "rtt_avg_us", "ping -i 0.002 RTT avg us", "bridge", 1.5, "lower", "<= 1.5x bridge"),
    ("tap", "rtt_p99_us", "ping -i 0.002 RTT p99 us", "bridge", 1.5, "lower", "<= 1.5x bridge"),
    ("tap", "rtt_avg_us", "ping -i 0.002 RTT avg us", "dpdk-tap", None, "lower", ""),
    ("tap", "rtt_b2b_avg_us", "ping -i 0 RTT avg us", "bridge", 1.5, "lower", "<= 1.5x bridge"),
    ("tap", "rtt_b2b_p99_us", "ping -i 0 RTT p99 us", "bridge", 1.5, "lower", "<= 1.5x bridge"),
    # vnet-tapfloor: one read() and one write() per frame, busy polling; the least any
    # process between two TAPs can do (tap.py).
    ("tap", "rtt_avg_us", "ping -i 0.002 RTT avg us", "floor", None, "lower", "userspace floor"),
    ("tap", "rtt_p99_us", "ping -i 0.002 RTT p99 us", "floor", None, "lower", "userspace floor"),
    ("tap", "rtt_b2b_avg_us", "ping -i 0 RTT avg us", "floor", None, "lower", "userspace floor"),
    ("tap", "rtt_b2b_p99_us", "ping -i 0 RTT p99 us", "floor", None, "lower", "userspace floor"),
    # Two hosts joined by a static VXLAN segment (vxlan.py): two vnetds against two
    # kernel bridges with VXLAN devices, the same underlay veth and VM namespaces.
    ("vxlan", "tcp1_gbps", "TCP 1 stream Gbit/s through VXLAN", "kernel", None, "higher", ""),
    ("vxlan", "tcp4_gbps", "TCP 4 streams Gbit/s through VXLAN", "kernel", None, "higher", ""),
    ("vxlan", "rtt_avg_us", "ping -i 0.002 RTT avg us", "kernel", None, "lower", ""),
    ("vxlan", "rtt_p99_us", "ping -i 0.002 RTT p99 us", "kernel", None, "lower", ""),
    ("vxlan", "rtt_b2b_avg_us", "ping -i 0 RTT avg us", "kernel", None, "lower", ""),
    ("vxlan", "rtt_b2b_p99_us", "ping -i 0 RTT p99 us", "kernel", None, "lower", ""),
    ("vxlan", "switch_cpu_pct_tcp1", "both vnetds' CPU % during TCP 1 stream", None, None, None,
     ""),
    # 64-byte frames vhost-user -> vnetd A -> tunnel -> vnetd B -> vhost-user (vnet only).
    ("vxlan-64", "mpps", "64 B Mpps delivered to the sink through the tunnel", None, None,
     "higher", ""),
    ("vxlan-64", "encap_mpps", "64 B Mpps encapsulated (vnetd A's segment tx)", None, None,
     "higher", ""),
    ("vxlan-64", "unicast_pct", "vnetd A: unicast_sent / (unicast_sent + flood_copies), %",
     None, None, None, "100: learned"),
    ("vxlan-64", "a_syscalls_per_frame", "vnetd A segment syscalls (sendmmsg) per frame", None,
     None, "lower", ""),
    ("vxlan-64", "b_syscalls_per_frame", "vnetd B segment syscalls (recvmmsg) per frame", None,
     None, "lower", ""),
    ("vxlan-64", "encap_cycles_per_frame", "vnetd A worker busy cycles per frame", None, None,
     "lower", ""),
    ("vxlan-64", "decap_cycles_per_frame", "vnetd B worker busy cycles per frame", None, None,
     "lower", ""),
    ("vxlan-64", "loss_pct", "frames encapsulated but not delivered, %", None, None, "lower",
     ""),
    ("idle", "cpu_pct", "CPU % of one core", "testpmd", None, "lower", "vnet < 1 %"),
    ("ipp", "instructions_per_packet", "worker instructions/packet (marginal)", None, None,
     "lower", ""),
    ("ipp", "instructions_per_packet_total", "worker instructions/packet (whole run)", None,
     None, "lower", ""),
    ("ipp-mq4", "instructions_per_packet", "4 queue pairs: worker instructions/packet "
     "(marginal)", "vnet-1q", 1.05, "lower", "<= 1.05x one pair"),
]


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3f" % v


def met(row, vnet, peer):
    scen, metric, _, _, ratio, better, note = row
    if scen == "idle" and vnet is not None:
        return "yes" if vnet < 1.0 else "no"
    if ratio is None or vnet is None or not peer:
        return ""
    r = vnet / peer
    return "yes" if (r >= ratio if better == "higher" else r <= ratio) else "no"


def paired_ratio(sc, metric, side, peer):
    """Median over the alternation rounds of run i's vnet / peer: the host's slow drifts
    (they move 64-byte rates by a factor of 1.5 over seconds on a shared machine) hit the
    two runs of a round alike and cancel here, not in the ratio of the medians."""
    per_run = {}
    for e in sc["runs"]:
        v = (e.get("result") or {}).get(metric)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            per_run.setdefault(e["run"], {})[e["side"]] = v
    ratios = [r[side] / r[peer] for r in per_run.values() if side in r and r.get(peer)]
    return median(ratios) if ratios else None


def build_table(results):
    lines = ["| scenario | metric | vnet | peer | peer value | vnet/peer | paired | target | met |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | --- |"]
    rows = []
    for row in COMPARISONS:
        scen, metric, label, peer, ratio, better, note = row
        sc = results["scenarios"].get(scen)
        if not sc:
            continue
        med = sc["medians"]
        v = med.get("vnet", {}).get(metric)
        p = med.get(peer, {}).get(metric) if peer else None
        r = v / p if (v is not None and p) else None
        pr = paired_ratio(sc, metric, "vnet", peer) if peer else None
        m = met(row, v, p)
        rows.append({"scenario": scen, "metric": metric, "label": label, "vnet": v,
                     "peer": peer, "peer_value": p, "ratio": r, "paired_ratio": pr,
                     "target": note, "met": m,
                     "runs": {k: len(x) for k, x in sc["values"].get(metric, {}).items()}})
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            scen, label, fmt(v), peer or "-", fmt(p), fmt(r) + ("x" if r is not None else ""),
            fmt(pr) + ("x" if pr is not None else ""), note or "-", m or "-"))
    # vnet against the --baseline build, for every metric both have.
    for scen, sc in results["scenarios"].items():
        med = sc["medians"]
        if "vnet-base" not in med:
            continue
        for metric in ("mpps", "cycles_per_packet", "cycles_per_packet_best", "switch_mpps_best",
                       "gen_busy_pct", "line_latency_ns", "tcp1_gbps", "tcp4_gbps",
                       "rtt_avg_us", "rtt_p99_us", "rtt_b2b_avg_us", "rtt_b2b_p99_us",
                       "encap_mpps", "a_syscalls_per_frame", "b_syscalls_per_frame",
                       "encap_cycles_per_frame", "decap_cycles_per_frame",
                       "instructions_per_packet"):
            v, p = med.get("vnet", {}).get(metric), med["vnet-base"].get(metric)
            if v is None or not p:
                continue
            r = v / p
            pr = paired_ratio(sc, metric, "vnet", "vnet-base")
            rows.append({"scenario": scen, "metric": metric, "label": metric, "vnet": v,
                         "peer": "vnet-base", "peer_value": p, "ratio": r, "paired_ratio": pr,
                         "target": "", "met": "", "runs": {k: len(x) for k, x in
                                                           sc["values"].get(metric, {}).items()}})
            lines.append("| %s | %s | %s | vnet-base | %s | %sx | %sx | - | - |"
                         % (scen, metric, fmt(v), fmt(p), fmt(r), fmt(pr)))
    return "\n".join(lines), rows


def git_rev():
    try:
        r = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def ensure_built(args):
    progs = ("vnetd", "vnetctl", "vnet-traffic", "vnet-linexfer", "vnet-tapfloor")
    missing = [p for p in progs if not os.path.exists(os.path.join(args.build_dir, p))]
    if not missing and not args.rebuild:
        return
    log("building %s in %s (Release)" % (", ".join(progs), args.build_dir))
    # VNET_WERROR=OFF: GCC 12 at -O3 reports false -Wrestrict positives inside libstdc++.
    subprocess.run(["cmake", "-S", REPO, "-B", args.build_dir, "-G", "Ninja",
                    "-DCMAKE_BUILD_TYPE=Release", "-DVNET_WERROR=OFF"], check=True,
                   stdout=subprocess.DEVNULL)
    # Build output goes to stderr with the progress: stdout carries only the table.
    subprocess.run(["ninja", "-C", args.build_dir] + list(progs), check=True, stdout=sys.stderr)


def preflight(args, groups):
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (hugepages, namespaces, TAPs)")
    tools = {"ip", "taskset", "stdbuf"}
    if set(groups) & {"vm2vm", "idle", "tap"}:
        tools.add("dpdk-testpmd")
    if "tap" in groups:
        tools |= {"iperf3", "ping"}
    if "vxlan" in groups:
        tools |= {"iperf3", "ping", "ethtool"}
    if "ipp" in groups:
        tools |= {"valgrind", "dpdk-testpmd"}
    problems += ["program %s not found" % t for t in sorted(tools) if not shutil.which(t)]
    if "vxlan" in groups and os.geteuid() == 0 and shutil.which("ip"):
        # veth, bridge and VXLAN links can be made (probed in a throwaway namespace).
        problems += vxlan_links(None)
    return problems


class Terminated(BaseException):
    pass


def line_transfer(args, sw_cpu, gen_cpu):
    """The machine's cache-line transfer costs between the switch's and the traffic CPU
    (vnet-linexfer): what every packet's ring entries and buffers cost to move."""
    try:
        out = subprocess.run([os.path.join(args.build_dir, "vnet-linexfer"), "--cpus",
                              "%d,%d" % (sw_cpu, gen_cpu), "--seconds", "1"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log("vnet-linexfer failed: %s" % e)
        return {"error": str(e)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="shorter windows (vm2vm and vxlan-64 2 s, iperf3 3 s, idle 10 s, fewer "
                    "frames)")
    ap.add_argument("--only", action="append", choices=ORDER + ("vm2vm-64", "vm2vm-1518", "vm2vm-64-vt",
                                                    "vm2vm-64-packed", "vm2vm-1518-packed",
                                                    "vm2vm-64-vt-packed", "vm2vm-64-mq4",
                                                    "vm2vm-64-2w",
                                                    "vxlan-64", "ipp-mq4"),
                    help="run only this scenario (repeatable)")
    ap.add_argument("--runs", type=int, default=3, help="runs per side, alternating (default 3)")
    ap.add_argument("--ipp-runs", type=int, default=1,
                    help="runs of the callgrind scenario (nearly deterministic; default 1)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"))
    ap.add_argument("--rebuild", action="store_true", help="run ninja before measuring")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "results"),
                    help="directory for latest.md and latest.json")
    ap.add_argument("--vnetd-arg", action="append", default=[], metavar="ARG",
                    help="extra vnetd argument for every scenario (repeatable), e.g. "
                    "--vnetd-arg=--poll-mode=poll")
    ap.add_argument("--baseline", metavar="DIR",
                    help="build directory of another vnet (an earlier commit, built as "
                    "Release): the vm2vm, tap and vxlan scenarios get a further side, vnet-base, running its "
                    "vnetd in the same alternation, and the table vnet/vnet-base ratios")
    ap.add_argument("--keep-logs", action="store_true", help="keep each run's temp dir")
    args = ap.parse_args(argv)
    args.build_dir = os.path.abspath(args.build_dir)
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)

    only = args.only or list(ORDER)
    groups = [g for g in ORDER if any(o == g or o.startswith(g + "-") for o in only)]
    problems = preflight(args, groups)
    if problems:
        print("bench/run: " + "; ".join(problems), file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise Terminated("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    ensure_built(args)
    sw_cpu, gen_cpu = cpus()
    started = time.monotonic()
    results = {"meta": {
        "command": "bench/run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git": git_rev(), "quick": args.quick, "runs_per_side": args.runs,
        "switch_cpu": sw_cpu, "traffic_cpu": gen_cpu, "online_cpus": os.cpu_count(),
        "loadavg_start": open("/proc/loadavg").read().split()[:3]},
        "scenarios": {}}
    results["meta"]["line_transfer"] = line_transfer(args, sw_cpu, gen_cpu)
    aborted = None
    try:
        for g in groups:
            mod = SCENARIO_GROUPS[g]
            for name, fn, sides in (mod.scenarios(args) if mod in (vm2vm, tap, vxlan, ipp)
                                    else mod.scenarios()):
                if args.only and name not in args.only and g not in args.only:
                    continue
                runs = args.ipp_runs if g == "ipp" else args.runs
                sc = {"sides": list(sides), "runs": [], "values": {}, "medians": {}}
                results["scenarios"][name] = sc
                for i in range(runs):
                    for side in sides:
                        log("=== %s run %d/%d: %s" % (name, i + 1, runs, side))
                        t0 = time.monotonic()
                        entry = {"side": side, "run": i + 1}
                        try:
                            entry["result"] = fn(args, side)
                        except HarnessError as e:
                            entry["error"] = str(e)[:4000]
                            log("%s %s run %d failed: %s" % (name, side, i + 1, e))
                        except Exception:
                            entry["error"] = traceback.format_exc()[-4000:]
                            log("%s %s run %d crashed:\n%s" % (name, side, i + 1,
                                                                entry["error"]))
                        entry["seconds"] = round(time.monotonic() - t0, 1)
                        sc["runs"].append(entry)
                for entry in sc["runs"]:
                    for k, v in (entry.get("result") or {}).items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            sc["values"].setdefault(k, {}).setdefault(entry["side"], []).append(v)
                for metric, per_side in sc["values"].items():
                    for side, vals in per_side.items():
                        sc["medians"].setdefault(side, {})[metric] = median(vals)
    except (KeyboardInterrupt, Terminated) as e:
        aborted = repr(e)
        log("aborted: %s (everything started was cleaned up)" % aborted)
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["meta"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    if aborted:
        results["meta"]["aborted"] = aborted
    table, rows = build_table(results)
    results["table"] = rows
    errors = ["%s/%s run %d: %s" % (n, e["side"], e["run"], e["error"].splitlines()[0][:200])
              for n, sc in results["scenarios"].items() for e in sc["runs"] if "error" in e]
    m = results["meta"]
    md = ["# vnet benchmark", "",
          "`%s` at %s (git %s), %s, %d run(s) per side alternating, medians; switch on CPU %d, "
          "traffic on CPU %d; load average %s -> %s; %.0f s."
          % (m["command"].strip(), m["date"], m["git"], "quick" if args.quick else "full",
             args.runs, sw_cpu, gen_cpu, " ".join(m["loadavg_start"]),
             " ".join(m["loadavg_end"]), m["seconds"]), "", table, ""]
    lt = m.get("line_transfer") or {}
    if "latency_ns" in lt:
        md += ["Cache-line transfer between the two CPUs (`vnet-linexfer`): one way %.0f ns; "
               "a stream the switch core takes with prefetch, %.1f ns per line read and %.1f ns "
               "per line written." % (lt["latency_ns"], lt["read_ns_per_line"],
                                      lt["write_ns_per_line"]), ""]
    wk = lt.get("wake_ns")
    if isinstance(wk, dict) and "idle_0us" in wk:
        md += ["Waking a thread asleep in read() on the traffic CPU from the switch CPU "
               "(eventfd write to its answer, median): %.1f us right after its last answer, "
               "%.1f us after 200 us idle, %.1f us after 2 ms idle; a null system call %.0f ns.  "
               "Through a switch process every ping reply costs one such wake-up; through the "
               "bridge the reply is processed in ping's own sendmsg and wakes nobody."
               % (wk["idle_0us"] / 1000.0, wk["idle_200us"] / 1000.0, wk["idle_2000us"] / 1000.0,
                  lt.get("syscall_ns", 0)), ""]
    fl = (results["scenarios"].get("tap") or {}).get("medians", {})
    if fl.get("floor") and fl.get("bridge"):
        f, b = fl["floor"], fl["bridge"]
        parts = ["%s %.1f us, %.2fx the bridge's" % (label, f[k], f[k] / b[k])
                 for k, label in (("rtt_b2b_avg_us", "back to back avg"),
                                  ("rtt_b2b_p99_us", "p99"),
                                  ("rtt_avg_us", "at -i 0.002 avg"), ("rtt_p99_us", "p99"))
                 if f.get(k) and b.get(k)]
        md += ["The userspace floor (`vnet-tapfloor`: one thread busy-polling both TAPs, one "
               "read() and one write() per frame, nothing else): ping RTT " + "; ".join(parts)
               + ".  No process between two TAPs can do less per frame.", ""]
    if errors:
        md += ["Failed runs:", ""] + ["- " + e for e in errors] + [""]
    if aborted:
        md += ["ABORTED: %s" % aborted, ""]
    text = "\n".join(md)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    return 130 if aborted else (1 if errors else 0)
