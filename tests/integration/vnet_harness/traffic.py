"""vnet-traffic (the project's lean vhost-user front end) in tests: prerequisite check
and the one JSON object it prints when it stops."""

import json

from .procs import HarnessError, wait_until
from .testpmd import cpu_plan
from .vnetd import find_program


def require_traffic(args):
    if find_program(args.build_dir, "vnet-traffic") is None:
        return ["vnet-traffic in build dir %s (build it first)" % args.build_dir]
    return []


def result_of(proc):
    """The JSON object vnet-traffic printed (the last line of its log that parses)."""
    for line in reversed(proc.read_log().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise HarnessError("%s printed no JSON result; log tail:\n%s" % (proc.name, proc.log_tail()))


def paced_flow(s, vnetd, socks, names=("b", "c"), macs=("02:00:00:00:0b:01", "02:00:00:00:0c:01"),
               rate=20000):
    """A receiver on port names[1] (announced first, so that vnetd learns its MAC) and a
    sender on port names[0] paced at `rate` frames/s to it, both vnet-traffic on the CPU
    vnetd does not use, for as long as the test runs; returns once frames arrive."""
    traffic = find_program(s.build_dir, "vnet-traffic")
    tx, rx = names
    common = ["--notify", "--cpu", cpu_plan()[1], "--log-level", "warn", "--duration", 900]
    s.spawn(rx, [traffic, "--socket", socks[rx], "--mode", "rx", "--mac", macs[1],
                 "--queue-size", 4096] + common)
    wait_until(lambda: vnetd.counters()[rx]["rx_packets"] >= 1, 20,
               what="%s's announcement" % rx)
    s.spawn(tx, [traffic, "--socket", socks[tx], "--mode", "tx", "--mac", macs[0], "--dst-mac",
                 macs[1], "--rate", rate] + common)
    wait_until(lambda: vnetd.counters()[rx]["tx_packets"] > 100, 20,
               what="%s's frames reaching %s" % (tx, rx))
