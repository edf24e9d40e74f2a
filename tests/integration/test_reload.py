#!/usr/bin/env python3
"""vnetd reloads its configuration file (vnetctl reload, SIGHUP) without touching the
ports that did not change, and tells a service manager where it is (sd_notify).

vnetd starts from a file with five ports: TAPs px (namespace x, 10.9.0.1) and py
(namespace y, 10.9.0.2), vhost-user ports va, vb, vc and vr; it runs with NOTIFY_SOCKET
pointing at a datagram socket of the test (systemd's Type=notify protocol). A
vnet-traffic front end sends a paced stream into va, another one sits connected on vc,
and ping x -> y runs every 20 ms through px and py the whole time. Asserted:

1. READY=1 is the first notification; the moment it arrives the control socket answers
   (one try), every configured port is listed, every server socket and TAP exists.
   A file with an error: vnetd exits 2 naming the line, and never says READY=1.
2. vnetctl reload of an edited file (vd added, vb removed, vc's VLAN 0 -> 10, vr's
   socket changed, [fdb] size changed): the reply lists exactly that (vr re-created,
   px/py/va unchanged, [fdb] needing a restart), `vnetctl ports` shows it (vb's socket
   gone, vd's and vr's new one there, vc in VLAN 10), and vc's front end stays
   connected with the same session (connections 1). RELOADING=1 then READY=1.
3. SIGHUP after another edit (vd removed, ve added): applied the same way.
4. A file with an error (VLAN 5000 on a known line, next to a new port) is refused by
   vnetctl reload (exit 1, the line and the field printed) and by SIGHUP (logged with
   the line); a TOML syntax error too; nothing changes (ports snapshot the same). A valid
   file whose new TAP port cannot be created (no such namespace) is refused and what it
   had done already (vr re-created on another socket) is undone.
5. Unchanged ports were never touched: the ping lost no echo across all of it, va's
   session is the first one (connections 1, disconnects 0), and vnetd received every
   frame va's front end sent.
6. SIGTERM: STOPPING=1, exit 0.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import Vnetd, find_program, require_vnetd  # noqa: E402
from test_vlan import Netns  # noqa: E402
from test_vnetctl import PingStream  # noqa: E402

IP_X, IP_Y = "10.9.0.1", "10.9.0.2"
MAC_X, MAC_Y = "02:00:00:09:00:01", "02:00:00:09:00:02"
MAC_A, MAC_C = "02:00:00:09:00:0a", "02:00:00:09:00:0c"
RATE_A = 2000  # frames/s from va's front end


class Notifications:
    """The test's NOTIFY_SOCKET: a datagram socket that collects what vnetd sends."""

    def __init__(self, s):
        self.path = s.path("notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        s.cleanup.push("notify socket", self.sock.close)
        self.seen = []

    def next(self, timeout=15.0):
        """The next datagram as a dict of its KEY=VALUE lines."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except socket.timeout:
            raise HarnessError("no sd_notify message within %.0f s (so far: %s)"
                               % (timeout, self.seen))
        msg = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        self.seen.append(msg)
        log("sd_notify: %s" % msg)
        return msg

    def expect(self, key, timeout=15.0):
        msg = self.next(timeout)
        if msg.get(key) != "1":
            raise HarnessError("expected %s=1 from vnetd, got %s" % (key, msg))
        return msg

    def pending(self):
        self.sock.settimeout(0)
        try:
            return self.sock.recv(4096).decode()
        except (BlockingIOError, socket.timeout):
            return None


def port_toml(name, **kv):
    lines = ["[[port]]", 'name = "%s"' % name]
    for k, v in kv.items():
        lines.append("%s = %s" % (k, json.dumps(v)))
    return "\n".join(lines) + "\n"


class Lab:
    def __init__(self, s):
        self.s = s
        self.nx, self.ny = Netns(s, "rx"), Netns(s, "ry")
        self.sock = {p: s.path("%s.sock" % p) for p in ("va", "vb", "vc", "vd", "ve", "vf",
                                                       "vr", "vr2")}
        for path in self.sock.values():
            s.remove_file_later(path)
        self.cfg = s.path("vnetd.toml")
        self.vnetd = Vnetd(s, [])
        self.traffic = find_program(s.build_dir, "vnet-traffic")

    def tap(self, name, ns, **kv):
        return port_toml(name, type="tap", ifname="r" + name, netns=ns.name, **kv)

    def vhost(self, name, sock=None, **kv):
        return port_toml(name, type="vhost-user", socket=self.sock[sock or name], queues=1, **kv)

    def write(self, ports, fdb_size=8192, extra=""):
        text = ('[vnetd]\ncontrol = "%s"\nlog_level = "info"\n[fdb]\nsize = %d\n%s\n'
                % (self.vnetd.control, fdb_size, extra)) + "\n".join(ports)
        with open(self.cfg, "w") as f:
            f.write(text)
        return text

    def ctl(self, *args):
        argv = [self.vnetd.vnetctl_binary, "--control", self.vnetd.control] + list(args)
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    def ports(self):
        return self.vnetd.ports_info()

    def snapshot(self):
        """What a refused reload must not change: each port's type, socket, VLAN, MTU."""
        return {n: (p["type"], p.get("socket"), json.dumps(p.get("vlan")), p.get("mtu"))
                for n, p in self.ports().items()}

    def front_end(self, port, mode, *extra):
        argv = [self.traffic, "--socket", self.sock[port], "--mode", mode, "--notify",
                "--queue-size", "256", "--cpu", cpu_plan()[1], "--log-level", "warn"]
        return self.s.spawn("traffic-%s" % port, argv + list(extra))


def extra(info, port, key):
    return info[port].get("extra", {}).get(key)


def check_ready_state(lab, names, taps):
    """Right after READY=1: one try each, no waiting."""
    try:
        info = {p["name"]: p for p in lab.vnetd.vnetctl("ports", timeout=5.0)["ports"]}
    except HarnessError as e:
        raise HarnessError("READY=1 came before the control socket answered: %s" % e)
    if sorted(info) != sorted(names):
        raise HarnessError("READY=1 with ports %s listed, configured %s" % (sorted(info), names))
    for n in names:
        if n in lab.sock and not os.path.exists(lab.sock[n]):
            raise HarnessError("READY=1 before port %s's socket %s existed" % (n, lab.sock[n]))
    for ns, ifname in taps:
        if not ns.has_link(ifname):
            raise HarnessError("READY=1 before TAP %s existed in %s" % (ifname, ns.name))


def reload_reply(lab):
    r = lab.ctl("--json", "reload")
    if r.returncode != 0:
        raise HarnessError("vnetctl reload: status %d: %s %s" % (r.returncode, r.stdout, r.stderr))
    return json.loads(r.stdout)


def expect_lists(reply, **want):
    for k, v in want.items():
        if sorted(reply.get(k, [])) != sorted(v):
            raise HarnessError("reload reply %s = %s, expected %s (reply %s)"
                               % (k, reply.get(k), v, reply))


def body(s, args):
    lab = Lab(s)
    notify = Notifications(s)
    env = dict(os.environ, NOTIFY_SOCKET=notify.path)
    base = [lab.tap("px", lab.nx), lab.tap("py", lab.ny)]

    # 1a. a bad file: exit 2 with the line, no READY=1
    bad = lab.write(base + [lab.vhost("va", vlan=5000)])
    bad_line = bad.splitlines().index("vlan = 5000") + 1
    p = s.spawn("vnetd-bad", [lab.vnetd.binary, "--config", lab.cfg], env=env)
    wait_until(lambda: not p.alive(), 20, interval=0.05, what="vnetd exits on a bad file")
    text = p.read_log()
    if p.returncode != 2 or "line %d" % bad_line not in text or "'vlan'" not in text:
        raise HarnessError("vnetd on a bad file: status %s, expected 2 and 'line %d', 'vlan': %s"
                           % (p.returncode, bad_line, text[-500:]))
    if notify.pending() is not None:
        raise HarnessError("vnetd sent an sd_notify message for a file it refused")
    log("bad file refused at start: %s" % text.strip().splitlines()[-1])

    # 1b. start; READY=1 only once everything is up
    v1 = base + [lab.vhost("va"), lab.vhost("vb"), lab.vhost("vc"), lab.vhost("vr")]
    lab.write(v1)
    s.remove_file_later(lab.vnetd.control)
    argv = ["taskset", "-c", str(cpu_plan()[0]), lab.vnetd.binary, "--config", lab.cfg]
    lab.vnetd.proc = s.spawn("vnetd", argv, env=env, stop_timeout=10.0)
    msg = notify.expect("READY", timeout=30)
    check_ready_state(lab, ["px", "py", "va", "vb", "vc", "vr"],
                      [(lab.nx, "rpx"), (lab.ny, "rpy")])
    if "6 port(s)" not in msg.get("STATUS", ""):
        raise HarnessError("READY=1 without the port count in STATUS: %s" % msg)
    log("READY=1 after the control socket and all 6 ports were up")

    lab.nx.setup_if("rpx", IP_X + "/24", MAC_X)
    lab.ny.setup_if("rpy", IP_Y + "/24", MAC_Y)
    if lab.nx.ping(IP_Y, count=3, deadline=10) != 3:
        raise HarnessError("x cannot ping y through vnetd")
    ta = lab.front_end("va", "tx", "--rate", RATE_A, "--duration", 600, "--mac", MAC_A,
                       "--dst-mac", MAC_X)
    tc = lab.front_end("vc", "rx", "--duration", 600, "--mac", MAC_C)
    lab.vnetd.wait_connected(["va", "vc"], timeout=20)
    wait_until(lambda: lab.vnetd.counters()["va"]["rx_packets"] > 10, 10, interval=0.05,
               what="frames from va's front end")
    ping = PingStream(s, lab.nx, IP_Y)
    info0 = lab.ports()

    # 2. vnetctl reload: vd added, vb removed, vc VLAN 10, vr re-created, [fdb] size
    v2 = base + [lab.vhost("va"), lab.vhost("vc", vlan=10), lab.vhost("vr", sock="vr2"),
                 lab.vhost("vd")]
    lab.write(v2, fdb_size=4096)
    reply = reload_reply(lab)
    log("reload: %s" % reply)
    expect_lists(reply, added=["vd"], removed=["vb"], changed=["vc"], recreated=["vr"],
                 unchanged=["px", "py", "va"], restart_needed=["[fdb]"])
    notify.expect("RELOADING")
    notify.expect("READY")
    info = lab.ports()
    if sorted(info) != ["px", "py", "va", "vc", "vd", "vr"]:
        raise HarnessError("ports after reload: %s" % sorted(info))
    if os.path.exists(lab.sock["vb"]) or not os.path.exists(lab.sock["vd"]):
        raise HarnessError("after reload: vb's socket still there or vd's missing")
    if info["vr"]["socket"] != lab.sock["vr2"] or os.path.exists(lab.sock["vr"]):
        raise HarnessError("vr not re-created on its new socket: %s" % info["vr"])
    if info["vc"]["vlan"] != {"mode": "access", "vlan": 10}:
        raise HarnessError("vc's VLAN after reload: %s" % info["vc"]["vlan"])
    for port in ("va", "vc"):
        if not info[port]["connected"] or extra(info, port, "connections") != 1 \
                or extra(info, port, "disconnects") != 0:
            raise HarnessError("port %s's session was touched by the reload: %s"
                               % (port, info[port].get("extra")))

    # 3. SIGHUP: vd removed, ve added
    v3 = base + [lab.vhost("va"), lab.vhost("vc", vlan=10), lab.vhost("vr", sock="vr2"),
                 lab.vhost("ve")]
    lab.write(v3, fdb_size=4096)
    os.kill(lab.vnetd.proc.pid, signal.SIGHUP)
    notify.expect("RELOADING")
    notify.expect("READY")
    info = lab.ports()
    if sorted(info) != ["px", "py", "va", "vc", "ve", "vr"] or os.path.exists(lab.sock["vd"]):
        raise HarnessError("ports after SIGHUP: %s" % sorted(info))
    log("SIGHUP: vd removed, ve added")

    # 4. broken files change nothing
    before = lab.snapshot()
    broken = lab.write(v3[:-1] + [lab.vhost("ve", vlan=5000), lab.vhost("vf")], fdb_size=4096)
    line = broken.splitlines().index("vlan = 5000") + 1
    r = lab.ctl("reload")
    if r.returncode == 0 or "line %d" % line not in r.stderr or "'vlan'" not in r.stderr:
        raise HarnessError("vnetctl reload of a bad file: status %d, expected != 0 and 'line %d',"
                           " 'vlan' in: %s%s" % (r.returncode, line, r.stdout, r.stderr))
    log("refused: %s" % r.stderr.strip())
    notify.expect("RELOADING")
    notify.expect("READY")
    os.kill(lab.vnetd.proc.pid, signal.SIGHUP)
    notify.expect("RELOADING")
    notify.expect("READY")
    lab.vnetd.proc.wait_for_log(r"reload refused.*line %d" % line, 10)
    syntax = lab.write(v3, fdb_size=4096, extra='age = "300\n')
    r = lab.ctl("reload")
    sline = syntax.splitlines().index('age = "300') + 1
    if r.returncode == 0 or "line %d" % sline not in r.stderr:
        raise HarnessError("vnetctl reload of a syntax error on line %d: status %d: %s"
                           % (sline, r.returncode, r.stderr))
    log("refused: %s" % r.stderr.strip())
    notify.expect("RELOADING")
    notify.expect("READY")
    if lab.snapshot() != before or os.path.exists(lab.sock["vf"]):
        raise HarnessError("a refused reload changed the ports: %s -> %s"
                           % (before, lab.snapshot()))
    # A valid file whose new port cannot be created (no such namespace): what the
    # reload did before (vr re-created on its old socket) is undone.
    failing = v3[:-2] + [lab.vhost("vr"), lab.vhost("ve"),
                         port_toml("pz", type="tap", ifname="rpz",
                                   netns="vnt%dnosuch" % os.getpid())]
    lab.write(failing, fdb_size=4096)
    r = lab.ctl("reload")
    if r.returncode == 0 or "restored" not in r.stderr or "pz" not in r.stderr:
        raise HarnessError("vnetctl reload with a port that cannot be created: status %d: %s"
                           % (r.returncode, r.stderr))
    log("refused: %s" % r.stderr.strip())
    notify.expect("RELOADING")
    notify.expect("READY")
    if lab.snapshot() != before or os.path.exists(lab.sock["vr"]) \
            or not os.path.exists(lab.sock["vr2"]):
        raise HarnessError("a failed reload was not rolled back: %s -> %s"
                           % (before, lab.snapshot()))

    # 5. the unchanged ports were never touched (and the streams ran a while)
    wait_until(lambda: len(ping.replies()) >= 30, 10, interval=0.05, what="30 ping replies")
    sent, received, lost, missing, in_flight, gap = ping.stop_counted()
    log("ping x -> y during the reloads: %d sent, %d received, lost %d (icmp_seq %s, %d after "
        "the last reply), longest gap %.3f s" % (sent, received, lost, missing or "none",
                                                 in_flight, gap))
    if sent < 10 or lost:
        raise HarnessError("ping through the unchanged ports px, py lost %d of %d echoes "
                           "(icmp_seq %s, %d after the last reply)"
                           % (lost, sent, missing, in_flight))
    ta.stop(10.0)
    ra = result_of(ta)
    frames = ra["tx"]["packets"] + ra.get("announce_packets", 0)
    wait_until(lambda: lab.vnetd.counters()["va"]["rx_packets"] >= frames, 10, interval=0.05,
               what="vnetd to count va's %d frames" % frames)
    got = lab.vnetd.counters()["va"]["rx_packets"]
    info = lab.ports()
    log("va: front end sent %d frames, vnetd received %d; sessions %s"
        % (frames, got, info["va"].get("extra")))
    if got != frames:
        raise HarnessError("va: front end sent %d frames, vnetd received %d" % (frames, got))
    if extra(info0, "va", "connections") != 1 or extra(info, "va", "connections") != 1:
        raise HarnessError("va's session was reset: %s" % info["va"].get("extra"))
    if extra(info, "vc", "connections") != 1 or not info["vc"]["connected"]:
        raise HarnessError("vc's session was reset: %s" % info["vc"].get("extra"))
    tc.stop(10.0)

    # 6. SIGTERM
    rc = lab.vnetd.proc.stop(10.0)
    notify.expect("STOPPING", timeout=5)
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)


def prerequisites():
    return [lambda a: require_root(), lambda a: require_tools("ip", "ping", "taskset"),
            require_vnetd, require_traffic]


if __name__ == "__main__":
    run_test("test_reload", body, prerequisites())
