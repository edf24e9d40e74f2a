#!/usr/bin/env python3
"""vnet demo: vnetd switching real traffic between two QEMU Linux guests and the host.

Run through `sudo scripts/demo` (which installs packages and builds first), or
directly: `python3 tests/integration/demo.py --build-dir BUILD`.

Steps (each prints a heading; the first failure stops the demo, cleans up and
exits 1 with the step and the reason; logs go to BUILD/integration-logs/demo/):
  - build (or reuse) the guest initramfs: busybox + the virtio-net modules of
    the kernel in /boot;
  - create a network namespace on the host (`ip netns add vnt<pid>demo`);
  - start vnetd with two vhost-user ports (vhu0, vhu1, vnetd listens) and a TAP
    port (tap0) that vnetd creates inside that namespace; give the TAP an
    address there (the host side of the switch);
  - boot two QEMU guests whose Linux virtio_net driver talks vhost-user to
    vnetd, wait until vnetd reports both ports connected;
  - `vnetctl ports`;
  - ping between every pair of endpoints: guest <-> guest, guest <-> host
    namespace (output printed, every echo answered);
  - iperf3 TCP from guest-a to an iperf3 server in the host namespace, its
    throughput printed;
  - `vnetctl counters` and `vnetctl fdb`;
  - check that vnetd's counters moved on every port by at least the pings;
  - `vnetctl capture PORT --filter icmp --count N -w - | tcpdump -nlr -` while a
    guest pings the host namespace: tcpdump prints exactly the N ICMP frames;
  - vnetd's Prometheus endpoint (`--metrics-listen`): the per-port packet counts
    of the demo's own traffic;
  - power the guests off, stop vnetd (it must exit 0 on SIGTERM), delete the
    namespace, remove everything the demo created (and check that it is gone).
Not a ctest test (its name does not start with test_).

Endpoints: every host on the switch is an `Endpoint` (a vnetd port, an IP
address, a way to run ping and later iperf3 from it).  The ping step pings
between every pair, so adding an endpoint kind (for instance a TAP port in a
network namespace) extends the demo without touching the traffic steps.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, Session, log, require_root, require_tools  # noqa: E402
from vnet_harness.guest import GuestImage, QemuGuest, require_guest  # noqa: E402
from vnet_harness.netns import Netns, require_netns, unique_name  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.session import Terminated  # noqa: E402
from vnet_harness.vnetd import PortSpec, TapSpec, Vnetd, require_vnetd  # noqa: E402

PING_COUNT = 3
IPERF_SECONDS = 5
GUESTS = [  # name, IP, MAC
    ("guest-a", "10.0.0.1", "52:54:00:00:0d:01"),
    ("guest-b", "10.0.0.2", "52:54:00:00:0d:02"),
]
HOST_IP = "10.0.0.100"  # the TAP's address inside the host namespace


class DemoError(Exception):
    """A demo step failed; the message says why."""


def out(text=""):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


class Endpoint:
    """A host attached to a vnetd port."""

    kind = "?"

    def __init__(self, name, port, ip, mac):
        self.name = name
        self.port = port  # vnetd port name
        self.ip = ip
        self.mac = mac

    def ping(self, target_ip, count):
        """Returns (transmitted, received, output)."""
        raise NotImplementedError


class GuestEndpoint(Endpoint):
    kind = "QEMU guest (Linux virtio_net over vhost-user)"

    def __init__(self, guest, port):
        super().__init__(guest.name, port, guest.ip.split("/")[0], guest.mac)
        self.guest = guest

    def ping(self, target_ip, count):
        return self.guest.ping(target_ip, count=count, timeout=30 + 3 * count)

    def shell(self):
        return "%s$ " % self.name


class NamespaceEndpoint(Endpoint):
    kind = "host network namespace (Linux kernel through vnetd's TAP port)"

    def __init__(self, netns, port, ifname, ip):
        super().__init__("host", port, ip, None)
        self.netns = netns
        self.ifname = ifname

    def ping(self, target_ip, count):
        return self.netns.ping(target_ip, count=count, interval=0.5, timeout=30 + 3 * count)

    def shell(self):
        return "host# ip netns exec %s " % self.netns.name


class Demo:
    def __init__(self, session, args):
        self.s = session
        self.args = args
        self.step_no = args.first_step - 1
        self.step_title = None
        self.vnetd = None
        self.guests = []
        self.endpoints = []
        self.netns = None
        self.host = None
        self.image = None
        self.iperf_gbps = None
        self.counters_before = None

    # --- presentation ---------------------------------------------------------
    def step(self, title):
        self.step_no += 1
        self.step_title = title
        out()
        out("==> Step %d: %s" % (self.step_no, title))

    def vnetctl_human(self, *cmd):
        """Run vnetctl without --json, print its output; fail on a non-zero status."""
        argv = [self.vnetd.vnetctl_binary, "--control", self.vnetd.control] + list(cmd)
        out("$ vnetctl %s" % " ".join(cmd))
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            raise DemoError("vnetctl %s did not answer within 10 s" % " ".join(cmd))
        if r.stdout.strip():
            out(indent(r.stdout))
        if r.returncode != 0 or not r.stdout.strip():
            raise DemoError("vnetctl %s failed (status %d, %s): %s"
                            % (" ".join(cmd), r.returncode,
                               "no output" if not r.stdout.strip() else "output above",
                               r.stderr.strip() or "no message"))
        return r.stdout

    # --- steps ------------------------------------------------------------------
    def run(self):
        self.prepare_image()
        self.create_netns()
        self.start_vnetd()
        self.boot_guests()
        self.step("vnetd's view of its ports")
        self.vnetctl_human("ports")
        self.counters_before = self.vnetd.counters()
        self.ping_all()
        self.iperf_to_host()
        self.show_counters()
        self.check_counters()
        self.capture()
        self.metrics()
        self.shut_down()

    def prepare_image(self):
        self.step("Guest image (Debian cloud kernel + busybox initramfs)")
        cache = os.path.join(self.s.build_dir, "integration-cache")
        self.image = GuestImage.build(cache)
        out("kernel %s, initramfs %s" % (self.image.kernel, os.path.basename(self.image.initrd)))

    def create_netns(self):
        self.step("Create a network namespace for the host side")
        self.netns = Netns(self.s, "demo")
        out("$ ip netns add %s" % self.netns.name)

    def start_vnetd(self):
        self.step("Start vnetd: two vhost-user ports (vnetd listens, QEMU connects) and a "
                  "TAP port in the namespace")
        socks = [self.s.path("demo-%d.sock" % i) for i in range(len(GUESTS))]
        tap_if = unique_name("d")
        self.tap = TapSpec("tap0", ifname=tap_if, netns=self.netns)
        self.vnetd = Vnetd(self.s, [PortSpec(p) for p in socks] + [self.tap],
                           log_level=self.args.log_level,
                           extra_args=["--metrics-listen", "127.0.0.1:0"])
        out("$ %s" % " ".join(self.vnetd.argv()))
        self.vnetd.start()
        out("vnetd running, pid %d, ports %s, control socket %s"
            % (self.vnetd.proc.pid, ", ".join(self.vnetd.port_names()), self.vnetd.control))
        self.netns.add_address(tap_if, HOST_IP + "/24")
        out("$ ip -n %s addr add %s/24 dev %s   (vnetd created %s there and brought it up)"
            % (self.netns.name, HOST_IP, tap_if, tap_if))
        self.host = NamespaceEndpoint(self.netns, "tap0", tap_if, HOST_IP)

    def boot_guests(self):
        self.step("Boot two QEMU Linux guests on vnetd's ports")
        names = self.vnetd.port_names()
        for (name, ip, mac), port, spec in zip(GUESTS, names, self.vnetd.ports):
            g = QemuGuest(self.s, name, self.image, spec.socket, ip + "/24", mac).start()
            self.guests.append(g)
            self.endpoints.append(GuestEndpoint(g, port))
            out("%s: QEMU pid %d, MAC %s, IP %s/24, on vnetd port %s"
                % (name, g.proc.pid, mac, ip, port))
        for g in self.guests:
            g.wait_ready(timeout=self.args.boot_timeout)
            out("%s booted in %.1f s (eth0 up)" % (g.name, g.boot_seconds))
        vhu = [n for n in names if n != "tap0"]
        self.vnetd.wait_connected(vhu, timeout=30)
        out("vnetd reports %s connected" % " and ".join(vhu))
        self.endpoints.append(self.host)

    def ping_all(self):
        for src in self.endpoints:
            for dst in self.endpoints:
                if src is dst:
                    continue
                self.step("Ping %s -> %s (%s, port %s -> %s)"
                          % (src.name, dst.name, dst.ip, src.port, dst.port))
                out("%sping -c %d %s" % (src.shell(), PING_COUNT, dst.ip))
                tx, rx, text = src.ping(dst.ip, PING_COUNT)
                out(indent(text))
                if tx != PING_COUNT or rx != tx:
                    raise DemoError("%s -> %s: %d of %d echo requests answered"
                                    % (src.name, dst.name, rx, tx))
                out("OK: %d/%d replies" % (rx, tx))

    def iperf_to_host(self):
        g = self.endpoints[0]
        self.step("iperf3 TCP %s -> host namespace (%s, port %s -> %s), %d s"
                  % (g.name, HOST_IP, g.port, self.host.port, IPERF_SECONDS))
        server = self.netns.spawn("iperf3-server", ["iperf3", "-s", "--forceflush", "-1",
                                                    "-B", HOST_IP])
        out("%siperf3 -s -1 -B %s" % (self.host.shell(), HOST_IP))
        server.wait_for_log(r"Server listening", 10)
        out("%siperf3 -c %s -t %d -f m" % (g.shell(), HOST_IP, IPERF_SECONDS))
        res = g.guest.iperf3(HOST_IP, seconds=IPERF_SECONDS)
        out(indent("\n".join(l for l in res.text.splitlines()
                              if re.search(r"sec|Connecting|connected", l))))
        self.iperf_gbps = res.gbps
        out("OK: %s -> host: %.2f Gbit/s (%.0f MBytes received by the host)"
            % (g.name, res.gbps, res.receiver_mbytes))

    def show_counters(self):
        self.step("vnetd's counters and forwarding table")
        self.vnetctl_human("counters")
        try:
            self.vnetctl_human("fdb")
        except DemoError as e:  # informative only; the demo checks ports and counters
            out("(vnetctl fdb not available: %s)" % e)

    def check_counters(self):
        self.step("Check that vnetd counted the traffic")
        after = self.vnetd.counters()
        before = self.counters_before
        # Each endpoint sent PING_COUNT requests to every other endpoint and answered
        # as many: at least 2 * PING_COUNT * (n - 1) frames each way on every port.
        need = 2 * PING_COUNT * (len(self.endpoints) - 1)
        problems = []
        out("%-8s %12s %12s %12s %12s  %s" % ("port", "rx_packets", "tx_packets", "rx_bytes",
                                               "tx_bytes", "drops (growth while pinging)"))
        for ep in self.endpoints:
            b, a = before.get(ep.port), after.get(ep.port)
            if a is None or b is None:
                raise DemoError("vnetctl counters has no port %s: %s" % (ep.port, after))
            d = {k: a.get(k, 0) - b.get(k, 0)
                 for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")}
            drops = {r: n - b.get("drops", {}).get(r, 0) for r, n in a.get("drops", {}).items()
                     if n - b.get("drops", {}).get(r, 0)}
            out("%-8s %+12d %+12d %+12d %+12d  %s" % (
                ep.port, d["rx_packets"], d["tx_packets"], d["rx_bytes"], d["tx_bytes"],
                ", ".join("%s +%d" % kv for kv in sorted(drops.items())) or "none"))
            for k in ("rx_packets", "tx_packets"):
                if d[k] < need:
                    problems.append("%s %s grew by %d, expected at least %d"
                                    % (ep.port, k, d[k], need))
            for k in ("rx_bytes", "tx_bytes"):
                if d[k] < 64 * need:
                    problems.append("%s %s grew by %d, expected at least %d"
                                    % (ep.port, k, d[k], 64 * need))
        if problems:
            raise DemoError("; ".join(problems))
        out("OK: every port received and sent at least %d frames" % need)

    def capture(self):
        g = self.endpoints[0]
        self.step("Capture: %s pings the host namespace while `vnetctl capture %s` streams "
                  "its ICMP frames as pcapng to tcpdump" % (g.name, g.port))
        cmd = ("%s --control %s capture %s --filter icmp --count %d -w - | tcpdump -nlr -"
               % (self.vnetd.vnetctl_binary, self.vnetd.control, g.port, 2 * PING_COUNT))
        out("$ vnetctl capture %s --filter icmp --count %d -w - | tcpdump -nlr -"
            % (g.port, 2 * PING_COUNT))
        cap = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        # Pings start once vnetd has the capture attached.
        wait_until(lambda: self.vnetd.vnetctl("counters").get("captures", {}).get("active", 0),
                   10, what="the capture attached")
        tx, rx, _ = g.ping(HOST_IP, PING_COUNT)
        try:
            stdout, stderr = cap.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            cap.kill()
            stdout, stderr = cap.communicate()
            raise DemoError("the capture did not end after %d frames: %s" % (2 * PING_COUNT,
                                                                             stderr))
        out(indent(stdout.strip()))
        out(indent(stderr.strip()))
        icmp = [ln for ln in stdout.splitlines() if "ICMP echo" in ln]
        if cap.returncode != 0 or len(icmp) != 2 * PING_COUNT or rx != tx:
            raise DemoError("capture: status %s, %d ICMP lines from tcpdump (want %d), %d/%d "
                            "replies" % (cap.returncode, len(icmp), 2 * PING_COUNT, rx, tx))
        out("OK: tcpdump read %d ICMP frames of %s from vnetd's capture" % (len(icmp), g.port))

    def metrics(self):
        port = self.vnetd.vnetctl("counters").get("metrics", {}).get("port")
        url = "http://127.0.0.1:%s/metrics" % port
        self.step("Metrics: vnetd's Prometheus endpoint (%s)" % url)
        out("$ curl -s %s | grep -E '^vnet_port_(rx|tx)_packets_total'" % url)
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        lines = [ln for ln in text.splitlines()
                 if re.match(r"vnet_port_(rx|tx)_packets_total\{", ln)]
        out(indent("\n".join(lines)))
        counters = self.vnetd.counters()
        for ep in self.endpoints:
            m = [ln for ln in lines
                 if ln.startswith('vnet_port_rx_packets_total{port="%s"}' % ep.port)]
            seen = float(m[0].split()[-1]) if m else -1
            if seen < counters[ep.port]["rx_packets"] * 0.5 or seen <= 0:
                raise DemoError("metrics: %s rx_packets %s, vnetctl counters says %d"
                                % (ep.port, seen, counters[ep.port]["rx_packets"]))
        out("OK: the metrics count the demo's own traffic on every port")

    def shut_down(self):
        self.step("Stop the guests and vnetd")
        for g in self.guests:
            g.poweroff()
            out("%s powered off (QEMU status %s)" % (g.name, g.proc.returncode))
        rc = self.vnetd.stop()
        if rc != 0:
            raise DemoError("vnetd exited with status %s on SIGTERM (expected 0); log tail:\n%s"
                            % (rc, self.vnetd.proc.log_tail(20)))
        out("vnetd exited with status 0")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="vnetd demo: two QEMU guests and a host network "
                                 "namespace (TAP) on one switch: ping, iperf3, counters")
    ap.add_argument("--build-dir", default=os.environ.get("VNET_BUILD_DIR", "build"),
                    help="CMake build directory holding vnetd and vnetctl (default: build)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    ap.add_argument("--log-level", default="info", help="vnetd --log-level (default: info)")
    ap.add_argument("--boot-timeout", type=float, default=120.0,
                    help="seconds a guest may take to boot (default: 120)")
    ap.add_argument("--first-step", type=int, default=1, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def check_cleanup(session, demo):
    """Everything the demo started has exited; its namespace, TAP and temp dir are gone."""
    left = [p for p in session.processes if p.alive()]
    if left:
        raise DemoError("still running after cleanup: %s"
                        % ", ".join("%s (pid %d)" % (p.name, p.pid) for p in left))
    if not session.keep_logs and os.path.exists(session.tmp):
        raise DemoError("temporary directory %s was not removed" % session.tmp)
    if demo is not None and demo.netns is not None:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout.split()
        if demo.netns.name in names:
            raise DemoError("network namespace %s was not deleted" % demo.netns.name)
        if demo.host is not None:
            r = subprocess.run(["ip", "link", "show", "dev", demo.host.ifname],
                               capture_output=True)
            if r.returncode == 0:
                raise DemoError("TAP %s still exists" % demo.host.ifname)


def main(argv=None):
    args = parse_args(argv)
    missing = (require_root() + require_guest(args) + require_vnetd(args) + require_netns(args)
               + require_tools("iperf3"))
    if missing:
        out("DEMO FAILED: missing prerequisites: %s" % "; ".join(missing))
        out("(`sudo scripts/demo` installs the packages and builds vnetd first)")
        return 1

    def on_term(signum, frame):
        raise Terminated("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    t0 = time.monotonic()
    demo = None
    try:
        with Session("demo", args.build_dir, args.keep_logs) as s:
            demo = Demo(s, args)
            demo.run()
            demo.step("Clean up")
        # Session.close() has stopped every process and removed sockets and temp files.
        check_cleanup(s, demo)
        out("all processes stopped; namespace, TAP, sockets and temporary files removed")
    except (DemoError, HarnessError) as e:
        where = ("step %d (%s)" % (demo.step_no, demo.step_title)
                 if demo and demo.step_title else "set-up")
        out()
        out("DEMO FAILED at %s:" % where)
        out(indent(str(e)))
        out("Everything the demo started has been stopped; logs (if any) are in %s"
            % os.path.join(os.path.abspath(args.build_dir), "integration-logs", "demo"))
        return 1
    except (KeyboardInterrupt, Terminated) as e:
        out()
        out("DEMO INTERRUPTED (%r); cleaned up" % e)
        return 130
    except Exception:
        traceback.print_exc()
        out("DEMO FAILED: unexpected error (traceback above); everything it started was stopped")
        return 1
    out()
    out("DEMO OK: vnetd switched guest <-> guest and guest <-> host traffic "
        "(iperf3 guest-a -> host %.2f Gbit/s) in %.0f s" % (demo.iperf_gbps, time.monotonic() - t0))
    log("demo done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
