"""Network namespaces for TAP tests: the host kernel as a peer of vnetd.

`Netns(session, "a")` creates `ip netns add vnt<pid>a` (a per-run unique name) and
registers its removal (`ip netns del`, after deleting by name any link the test
registered with `own_link()`) with the session's cleanup, so every exit path
removes it.  vnetd creates its TAP inside the namespace (`--tap NAME,netns=NS`);
the namespace side configures addresses, runs ping, iperf3 and tcpdump there.

Also here: kernel counters (`/proc/net/snmp` and `/proc/net/netstat` parsed into
{"Tcp": {"InCsumErrors": 0, ...}, ...}) and link statistics, read from inside
the namespace.  The same parser reads a guest's copy of those files.
"""

import os
import re
import shutil
import subprocess

from .procs import HarnessError, log, wait_until


def unique_name(suffix):
    """A per-run unique interface/namespace name: vnt<pid><suffix> (<= 15 bytes)."""
    name = "vnt%d%s" % (os.getpid(), suffix)
    if len(name) > 15:
        raise HarnessError("name %s is longer than 15 bytes" % name)
    return name


def require_netns(_args=None):
    missing = []
    if shutil.which("ip") is None:
        missing.append("program ip (iproute2)")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    return missing


def parse_snmp(text):
    """Parse /proc/net/snmp + /proc/net/netstat text: {"Tcp": {"InCsumErrors": N, ...}}.

    Both files are pairs of lines `Proto: name name ...` / `Proto: value value ...`."""
    out = {}
    pending = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(\w+):\s+(.*)$", line)
        if not m:
            continue
        proto, rest = m.group(1), m.group(2).split()
        if proto in pending and all(re.match(r"^-?\d+$", v) for v in rest):
            names = pending.pop(proto)
            out.setdefault(proto, {}).update(zip(names, (int(v) for v in rest)))
        else:
            pending[proto] = rest
    return out


def csum_errors(snmp):
    """Every checksum/header error counter of a parsed snmp dict that is non-zero."""
    bad = {}
    for proto, fields in snmp.items():
        for k, v in fields.items():
            if (k == "InCsumErrors" or k == "InHdrErrors") and v:
                bad["%s.%s" % (proto, k)] = v
    return bad


def snmp_delta(before, after, keys):
    """{"Proto.Field": after - before} for the given "Proto.Field" keys."""
    d = {}
    for key in keys:
        proto, field = key.split(".")
        d[key] = after.get(proto, {}).get(field, 0) - before.get(proto, {}).get(field, 0)
    return d


class Netns:
    def __init__(self, session, suffix):
        self.session = session
        self.name = unique_name(suffix)
        self._links = []
        r = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError("ip netns add %s: %s" % (self.name, r.stderr.strip()))
        session.cleanup.push("network namespace %s" % self.name, self._delete)
        log("network namespace %s created" % self.name)
        self.run("ip link set lo up")
        # Keep the TAP quiet: no IPv6 router/neighbour solicitations, no DAD.
        self.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                 "net.ipv6.conf.default.disable_ipv6=1", check=False)

    def own_link(self, ifname):
        """Register an interface in this namespace to delete by name at cleanup."""
        self._links.append(ifname)

    def _delete(self):
        for ifname in self._links:
            # vnetd normally removed its TAP when it stopped; delete what is left.
            subprocess.run(["ip", "-n", self.name, "link", "del", ifname],
                           capture_output=True, text=True)
        r = subprocess.run(["ip", "netns", "del", self.name], capture_output=True, text=True)
        if r.returncode != 0 and "No such file" not in r.stderr:
            raise HarnessError("ip netns del %s: %s" % (self.name, r.stderr.strip()))

    # --- commands -------------------------------------------------------------------------
    def argv(self, argv):
        return ["ip", "netns", "exec", self.name] + [str(a) for a in argv]

    def run(self, cmd, check=True, timeout=60.0):
        """Run a shell command line inside the namespace; returns (rc, stdout+stderr)."""
        try:
            r = subprocess.run(self.argv(["sh", "-c", cmd]), capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError("[%s] %s: timed out after %.0f s" % (self.name, cmd, timeout))
        text = r.stdout + r.stderr
        if check and r.returncode != 0:
            raise HarnessError("[%s] %s: status %d: %s" % (self.name, cmd, r.returncode,
                                                           text.strip()))
        return r.returncode, text

    def spawn(self, name, argv, **kwargs):
        """A session process inside the namespace (`ip netns exec` execs the program, so
        the PID the harness signals is the program's)."""
        return self.session.spawn(name, self.argv(argv), **kwargs)

    # --- links ----------------------------------------------------------------------------
    def link_exists(self, ifname):
        rc, _ = self.run("ip link show dev %s" % ifname, check=False)
        return rc == 0

    def wait_link(self, ifname, timeout=10.0):
        wait_until(lambda: self.link_exists(ifname), timeout, interval=0.05,
                   what="interface %s in namespace %s" % (ifname, self.name))

    def link_mtu(self, ifname):
        _, text = self.run("cat /sys/class/net/%s/mtu" % ifname)
        return int(text.strip())

    def link_stats(self, ifname):
        """{rx_packets, tx_packets, rx_dropped, tx_dropped, rx_errors, tx_errors, ...}."""
        keys = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped",
                "tx_dropped", "rx_errors", "tx_errors")
        _, text = self.run("cd /sys/class/net/%s/statistics && cat %s"
                           % (ifname, " ".join(keys)))
        return dict(zip(keys, (int(v) for v in text.split())))

    def add_address(self, ifname, cidr):
        self.run("ip addr add %s dev %s && ip link set %s up" % (cidr, ifname, ifname))

    def snmp(self):
        _, text = self.run("cat /proc/net/snmp /proc/net/netstat")
        return parse_snmp(text)

    def ping(self, target, count=3, size=None, dont_fragment=False, interval=0.2,
             timeout=30.0):
        """iputils ping from the namespace; returns (transmitted, received, output)."""
        cmd = "ping -n -c %d -i %s -W 2" % (count, interval)
        if size is not None:
            cmd += " -s %d" % size
        if dont_fragment:
            cmd += " -M do"
        rc, out = self.run("%s %s" % (cmd, target), check=False, timeout=timeout)
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
        if not m:
            raise HarnessError("[%s] no ping summary (rc %d):\n%s" % (self.name, rc, out))
        return int(m.group(1)), int(m.group(2)), out


class Capture:
    """tcpdump on one interface of a namespace: frames RECEIVED there (-Q in), whole
    (-s 0), written to a pcap, bounded by a frame count and by `stop()`."""

    def __init__(self, netns, name, ifname, bpf, count=2000, direction="in", snaplen=0):
        self.netns = netns
        self.name = name
        self.path = netns.session.path("%s.pcap" % name)
        # --immediate-mode: no batching in the kernel's capture ring, so a frame is in
        # the file (-U) soon after it arrived, not up to a buffer timeout later.
        argv = ["tcpdump", "-i", ifname, "-n", "-s", str(snaplen), "-U", "--immediate-mode",
                "-c", str(count), "-w", self.path]
        # -Q filters the direction in user space.  (The kernel-side `inbound` filter
        # was tried: with it, libpcap 1.10 lost the first frame after "listening on".)
        if direction:
            argv += ["-Q", direction, "-B", "16384"]
        argv.append(bpf)
        self.proc = netns.spawn(name, argv)

    def wait_ready(self, timeout=15.0):
        self.proc.wait_for_log(r"listening on", timeout)
        return self

    def frames_in_file(self):
        from .pcap import read_pcap
        try:
            return len(read_pcap(self.path))
        except (OSError, ValueError):
            return 0

    def wait_frames(self, n, timeout=10.0):
        """Wait until the pcap holds at least n frames (or tcpdump reached its count)."""
        wait_until(lambda: not self.proc.alive() or self.frames_in_file() >= n, timeout,
                   interval=0.1, what="%d frames in capture %s" % (n, self.name))

    def stop(self, timeout=10.0):
        """SIGTERM (tcpdump writes out the pcap and its totals); returns the pcap path."""
        if self.proc.alive():
            self.proc.stop(timeout)
        m = re.search(r"(\d+) packets? captured", self.proc.read_log())
        if not m:
            raise HarnessError("tcpdump %s (status %s) printed no totals; log:\n%s"
                               % (self.name, self.proc.returncode, self.proc.log_tail()))
        self.captured = int(m.group(1))
        m = re.search(r"(\d+) packets? dropped by kernel", self.proc.read_log())
        self.dropped = int(m.group(1)) if m else 0
        return self.path
