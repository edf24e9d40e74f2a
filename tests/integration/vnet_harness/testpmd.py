"""DPDK testpmd as a real vhost-user peer: virtio-user front ends and net_vhost back ends.

testpmd runs in interactive mode (`-i`) with its standard input a pipe the
harness keeps open (non-interactive testpmd quits at end of input) and its
output line-buffered through `stdbuf -oL` (otherwise `show port stats` sits in
stdio's buffer).  `cmd()` sends one command and returns its output, delimited
by the next `testpmd> ` prompt.

CPU placement (the CI machine has 2 cores): every testpmd gets `-l A,B
--main-lcore A`, so its main lcore (the command line, idle) is on CPU A and
its single forwarding lcore (busy-polling) on CPU B.  By default A is the
first and B the last CPU we may run on, and vnetd is pinned to the first
(see vnetd.py): the peers' busy loops share one CPU and vnetd gets the other.
"""

import os
import re
import time
from dataclasses import dataclass, field

from . import hugepages
from .procs import HarnessError, log, wait_until

PROMPT = "testpmd> "


def cpu_plan():
    """(switch_cpu, peer_cpu): vnetd on the first allowed CPU, peers' forwarding on the last."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[0], cpus[-1]


def virtio_user_vdev(index, path, mac=None, mrg_rxbuf=None, server=False, queues=1,
                     queue_size=None, packed_vq=None, in_order=None):
    """--vdev string of a virtio-user front end (connects to a back end's socket,
    or with server=True listens and lets the back end connect)."""
    parts = ["net_virtio_user%d" % index, "path=%s" % path, "queues=%d" % queues]
    if mac:
        parts.append("mac=%s" % mac)
    if mrg_rxbuf is not None:
        parts.append("mrg_rxbuf=%d" % int(mrg_rxbuf))
    if server:
        parts.append("server=1")
    if queue_size:
        parts.append("queue_size=%d" % queue_size)
    if packed_vq is not None:
        parts.append("packed_vq=%d" % int(packed_vq))
    if in_order is not None:
        parts.append("in_order=%d" % int(in_order))
    return ",".join(parts)


def vhost_vdev(index, iface, queues=1, client=False):
    """--vdev string of a net_vhost back end (listens on iface, or connects with client=True)."""
    parts = ["net_vhost%d" % index, "iface=%s" % iface, "queues=%d" % queues]
    if client:
        parts.append("client=1")
    return ",".join(parts)


@dataclass
class PortStats:
    rx_packets: int = 0
    rx_missed: int = 0
    rx_bytes: int = 0
    rx_errors: int = 0
    rx_nombuf: int = 0
    tx_packets: int = 0
    tx_errors: int = 0
    tx_bytes: int = 0


_STATS_FIELDS = {
    "RX-packets": "rx_packets", "RX-missed": "rx_missed", "RX-bytes": "rx_bytes",
    "RX-errors": "rx_errors", "RX-nombuf": "rx_nombuf", "TX-packets": "tx_packets",
    "TX-errors": "tx_errors", "TX-bytes": "tx_bytes",
}
_PORT_HEADER = re.compile(r"#+ NIC statistics for port (\d+)\s+#+")
_FIELD = re.compile(r"([RT]X-[a-z]+):\s*(\d+)")


def parse_port_stats(text):
    """{port_id: PortStats} from the output of `show port stats all` (or `show port stats N`)."""
    result = {}
    current = None
    for line in text.splitlines():
        m = _PORT_HEADER.search(line)
        if m:
            current = PortStats()
            result[int(m.group(1))] = current
            continue
        if current is None:
            continue
        if line.strip().startswith("Throughput"):
            current = None
            continue
        for name, value in _FIELD.findall(line):
            attr = _STATS_FIELDS.get(name)
            if attr:
                setattr(current, attr, int(value))
    return result


class TestPmd:
    """One interactive dpdk-testpmd.

    session:  the test Session (owns the process, the file prefix, the log)
    vdevs:    list of --vdev strings (virtio_user_vdev / vhost_vdev)
    virtio_user: True for front ends (adds --single-file-segments, needed for
              the vhost-user memory table limit)
    """

    __test__ = False  # not a pytest class

    def __init__(self, session, name, vdevs, virtio_user=True, mem_mb=None,
                 total_mbufs=16384, main_cpu=None, fwd_cpu=None, fwd_mode=None,
                 eth_peers=None, extra_eal=(), extra_app=()):
        switch_cpu, peer_cpu = cpu_plan()
        self.main_cpu = switch_cpu if main_cpu is None else main_cpu
        self.fwd_cpu = peer_cpu if fwd_cpu is None else fwd_cpu
        self.session = session
        self.name = name
        self.vdevs = list(vdevs)
        self.virtio_user = virtio_user
        # Front ends need little (16384 mbufs ~ 36 MiB); 256 MiB keeps four of them
        # plus a back end inside 1024 2-MiB pages.
        self.mem_mb = mem_mb or (256 if virtio_user else 512)
        self.total_mbufs = total_mbufs
        self.fwd_mode = fwd_mode
        self.eth_peers = dict(eth_peers or {})
        self.extra_eal = list(extra_eal)
        self.extra_app = list(extra_app)
        self.proc = None
        self.prefix = None

    def argv(self):
        if self.main_cpu == self.fwd_cpu:
            lcores = ["--lcores", "0@%d,1@%d" % (self.main_cpu, self.fwd_cpu), "--main-lcore", "0"]
        else:
            lcores = ["-l", "%d,%d" % (self.main_cpu, self.fwd_cpu),
                      "--main-lcore", str(self.main_cpu)]
        eal = lcores + ["-m", str(self.mem_mb), "--no-pci", "--file-prefix=%s" % self.prefix,
                        "--log-level=pmd.net.virtio.*:info"]
        if self.virtio_user:
            eal.append("--single-file-segments")
        for v in self.vdevs:
            eal += ["--vdev", v]
        eal += self.extra_eal
        app = ["-i", "--nb-cores=1", "--no-mlockall", "--total-num-mbufs=%d" % self.total_mbufs]
        if self.fwd_mode:
            app.append("--forward-mode=%s" % self.fwd_mode)
        for port, mac in sorted(self.eth_peers.items()):
            app.append("--eth-peer=%d,%s" % (port, mac))
        app += self.extra_app
        return ["stdbuf", "-oL", "-eL", "dpdk-testpmd"] + eal + ["--"] + app

    def start(self, timeout=30.0):
        """Start and wait for the first prompt (ports configured and started)."""
        self.prefix = self.session.dpdk_prefix(self.name[:6])
        t0 = time.monotonic()
        self.proc = self.session.spawn(self.name, self.argv(), stdin_pipe=True,
                                       stop_timeout=5.0)
        self.proc.wait_for_log(re.escape(PROMPT), timeout)
        log("%s ready in %.1f s" % (self.name, time.monotonic() - t0))
        return self

    def cmd(self, command, timeout=15.0):
        """Send one command; return what testpmd printed up to the next prompt."""
        start = self.proc.log_size()
        self.proc.send(command + "\n")
        m = self.proc.wait_for_log(r"^(.*?)" + re.escape(PROMPT), timeout, start=start,
                                   flags=re.DOTALL)
        return m.group(1)

    # --- convenience ------------------------------------------------------------
    def set_fwd(self, mode):
        out = self.cmd("set fwd %s" % mode)
        if "Bad argument" in out or "Invalid" in out:
            raise HarnessError("%s: set fwd %s: %s" % (self.name, mode, out.strip()))

    def start_fwd(self, tx_first=None):
        self.cmd("start" if tx_first is None else "start tx_first %d" % tx_first)

    def stop_fwd(self):
        return self.cmd("stop")

    def clear_stats(self):
        # Beware: DPDK 22.11's virtio-user PMD clears RX-bytes but not RX-packets here;
        # compare snapshots instead.
        self.cmd("clear port stats all")

    def port_stats(self):
        out = self.cmd("show port stats all")
        stats = parse_port_stats(out)
        if not stats:
            raise HarnessError("%s: no port statistics in output:\n%s" % (self.name, out))
        return stats

    def queue_stats(self, port=0):
        """{"rx": {queue: packets}, "tx": {queue: packets}} from `show port xstats`
        (the virtio PMD's rx_qN_good_packets / tx_qN_good_packets)."""
        out = self.cmd("show port xstats %d" % port)
        stats = {"rx": {}, "tx": {}}
        for d, q, n in re.findall(r"\b(rx|tx)_q(\d+)_(?:good_)?packets:\s*(\d+)", out):
            stats[d][int(q)] = int(n)
        if not stats["rx"] and not stats["tx"]:
            raise HarnessError("%s: no per-queue counters in xstats:\n%s" % (self.name, out))
        return stats

    def link_up(self, port=0):
        out = self.cmd("show port info %d" % port)
        m = re.search(r"Link status:\s*(\w+)", out)
        return bool(m and m.group(1).lower() == "up")

    def wait_link_up(self, port=0, timeout=20.0):
        wait_until(lambda: self.link_up(port), timeout, interval=0.2,
                   what="%s port %d link up" % (self.name, port))

    def wait_stats_settle(self, port, timeout=10.0, quiet=0.5):
        """Poll stats until RX and TX of `port` have not changed for `quiet` s; return them."""
        deadline = time.monotonic() + timeout
        last = None
        last_change = time.monotonic()
        while True:
            s = self.port_stats()[port]
            key = (s.rx_packets, s.tx_packets)
            now = time.monotonic()
            if key != last:
                last, last_change = key, now
            elif now - last_change >= quiet:
                return s
            if now > deadline:
                raise HarnessError("%s port %d counters still moving after %.0f s"
                                   % (self.name, port, timeout))
            time.sleep(0.1)

    def quit(self, timeout=10.0):
        """Clean exit through the `quit` command; falls back to SIGTERM/SIGKILL."""
        if self.proc is None or not self.proc.alive():
            return
        try:
            self.proc.send("quit\n")
        except (HarnessError, OSError):
            pass
        if self.proc.wait(timeout) is None:
            log("%s did not quit in %.0f s" % (self.name, timeout))
        self.proc.stop()
        hugepages.remove_prefix_files(self.prefix)

    def kill(self):
        """SIGKILL (a crash, as far as the peer is concerned); frees its hugepages."""
        self.proc.kill()
        hugepages.remove_prefix_files(self.prefix)
