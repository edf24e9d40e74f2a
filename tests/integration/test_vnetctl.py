#!/usr/bin/env python3
"""vnetctl against a running vnetd: ports come and go under traffic, VLANs change at
run time, bad commands and bad config files change nothing.

Namespaces x, y, z ("vnt<pid>x" ...); vnetd starts with two TAP ports from the
command line, px (ns x, 10.1.0.1) and py (ns y, 10.1.0.2), plus a vhost-user
server port vkeep.  Parts:

1. churn: a continuous ping x -> y (every 20 ms) runs while, CHURN times, a TAP
   port (in ns z, alternately with --no-offloads), a vhost-user server port and,
   on odd rounds, a vhost-user client port with nobody listening are added and
   removed again.  Each round: the ports are listed, the server socket exists,
   the new TAP in ns z pings x (10.1.0.3 -> 10.1.0.1); after del-port the ports
   are gone from the list, the socket file and the TAP are gone.  The ping must
   lose at most MAX_LOST packets and never go more than MAX_GAP s without a reply.
2. an added vhost-user port works: a DPDK testpmd virtio-user front end connects
   to a port added at run time and its 128 frames (to x's MAC) are received by
   vnetd on that port and delivered to px; the port is then deleted while the
   front end is still connected (gone from the list, socket removed, vnetd up).
3. set-port: VLANs change at run time and traffic follows (py to VLAN 10 cuts
   x -> y, px to VLAN 10 restores it, px as trunk [10, 20] without native VLAN
   cuts it, with native 10 restores it, both back to VLAN 0); ports --json
   shows each change; set-port --mtu on a TAP port changes the device's MTU.
4. bad commands exit 1 with a message naming the field, and `vnetctl --json
   ports` (minus counters) is the same before and after, no TAP appears:
   unknown type, missing socket, VLAN 4095, --vlan with --trunk (also sent raw
   to the control socket), trunk id 4095, MTU 10, duplicate name, duplicate
   socket, duplicate TAP interface, set-port MTU of a vhost-user port,
   set-port VLAN 4095, del-port/set-port of an unknown port.
5. config files: a TOML syntax error (message with the line), an unknown field,
   bad values (VLAN 4095, a string for an integer, a bad mode), and a file whose
   third port fails at creation (missing netns) make vnetd exit non-zero naming
   the line/field, leaving no socket file, control socket or TAP behind; a good
   file (vhost-user server in VLAN 10, client trunk [10, 20] native 10, created
   TAP with MTU 9000 in VLAN 20, attached existing TAP) starts exactly those
   ports (vnetctl ports), and after SIGTERM (exit 0) vnetd removes its socket and
   created TAP but leaves the attached one.
"""

import json
import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, run_test  # noqa: E402
from vnet_harness import hugepages  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.session import require_tools  # noqa: E402
from vnet_harness.testpmd import TestPmd, virtio_user_vdev  # noqa: E402
from vnet_harness.vnetd import Vnetd  # noqa: E402
from test_vlan import PREFIX, Netns, netlab_prerequisites, sh  # noqa: E402

CHURN = 20
PING_INTERVAL = 0.02
MAX_LOST = 5        # packets the continuous ping may lose during the whole churn
MAX_GAP = 0.5       # seconds without an echo reply, at most
IP_X, IP_Y, IP_Z = "10.1.0.1", "10.1.0.2", "10.1.0.3"
MAC_X = "02:00:00:01:00:01"
MAC_VU = "02:00:00:01:00:77"


# --- vnetctl without the harness' "must succeed" ------------------------------------

def vnetctl_raw(vnetd, *args, json_out=False):
    argv = [vnetd.vnetctl_binary, "--control", vnetd.control] + (["--json"] if json_out else [])
    return sh(*(argv + list(args)), check=False, timeout=15)


def ctl_ok(vnetd, *args):
    r = vnetctl_raw(vnetd, *args)
    if r.returncode != 0:
        raise HarnessError("vnetctl %s: status %d: %s%s" % (" ".join(args), r.returncode,
                                                           r.stdout, r.stderr))
    return r


def control_request(vnetd, req, timeout=5.0):
    """One JSON request straight to vnetd's control socket (newline-delimited JSON)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(timeout)
        c.connect(vnetd.control)
        c.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while b"\n" not in buf:
            chunk = c.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf.split(b"\n")[0])


def ports_snapshot(vnetd):
    """`vnetctl --json ports` without the counters and volatile fields. Of each queue only
    its number and worker: its counters move with any frame (an ARP or IPv6 neighbour
    probe from a namespace between two snapshots made this test fail in CI)."""
    out = {}
    for p in vnetd.vnetctl("ports")["ports"]:
        out[p["name"]] = {k: v for k, v in p.items() if k not in ("counters", "extra", "queues")}
        out[p["name"]]["queues"] = [(q["queue"], q["worker"]) for q in p.get("queues", [])]
    return out


# --- continuous ping ------------------------------------------------------------------

class PingStream:
    """ping -D every PING_INTERVAL s in a namespace; stop() -> (sent, received, max_gap)."""

    def __init__(self, s, ns, dst):
        self.proc = s.spawn("ping-%s" % dst, ["ip", "netns", "exec", ns.name, "ping", "-D", "-n",
                                               "-i", PING_INTERVAL, dst])
        self.proc.wait_for_log(r"bytes from %s" % re.escape(dst), 10)

    def replies(self):
        return [float(m.group(1)) for m in
                re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=\d+", self.proc.read_log(),
                            re.MULTILINE)]

    def stop(self):
        self.proc.stop(timeout=5, sig=signal.SIGINT)
        text = self.proc.read_log()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
        if not m:
            raise HarnessError("continuous ping: no summary; log tail:\n%s" % text[-1000:])
        ts = self.replies()
        gap = max((b - a for a, b in zip(ts, ts[1:])), default=float("inf"))
        return int(m.group(1)), int(m.group(2)), gap

    def stop_counted(self):
        """stop(), and what was lost: (sent, received, lost, unanswered icmp_seqs,
        requests after the last reply, longest gap). The request ping sent just before
        it was stopped may still be in flight: one request after the last reply is not
        counted as lost."""
        sent, received, gap = self.stop()
        seqs = sorted({int(m.group(1)) for m in re.finditer(
            r"^\[\d+\.\d+\] \d+ bytes from .*icmp_seq=(\d+)", self.proc.read_log(),
            re.MULTILINE)})
        if not seqs:
            raise HarnessError("continuous ping: no reply parsed; log tail:\n%s"
                               % self.proc.log_tail())
        answered = set(seqs)
        missing = [q for q in range(1, seqs[-1] + 1) if q not in answered]
        in_flight = sent - seqs[-1]
        return sent, received, len(missing) + max(0, in_flight - 1), missing, in_flight, gap


# --- parts ------------------------------------------------------------------------------

def churn(s, vnetd, nz, ping):
    socks_dir = s.tmp
    t0 = time.monotonic()
    for i in range(CHURN):
        tap_name, ifname = "z%d" % i, "%sz%d" % (PREFIX, i)
        vname, vsock = "v%d" % i, os.path.join(socks_dir, "v%d.sock" % i)
        cname, csock = "c%d" % i, os.path.join(socks_dir, "nobody%d.sock" % i)
        s.remove_file_later(vsock)
        tap_args = ["add-port", "tap", tap_name, "--ifname", ifname, "--netns", nz.name]
        if i % 2:
            tap_args.append("--no-offloads")
        ctl_ok(vnetd, *tap_args)
        ctl_ok(vnetd, "add-port", "vhost-user", vname, "--socket", vsock)
        if i % 2:
            ctl_ok(vnetd, "add-port", "vhost-user", cname, "--socket", csock, "--client")
        info = vnetd.ports_info()
        want = [tap_name, vname] + ([cname] if i % 2 else [])
        missing = [n for n in want if n not in info]
        if missing:
            raise HarnessError("round %d: added ports %s missing from vnetctl ports" % (i, missing))
        if not os.path.exists(vsock):
            raise HarnessError("round %d: vhost-user server socket %s not created" % (i, vsock))
        # The new TAP carries traffic: ns z pings x through it.
        nz.setup_if(ifname, IP_Z + "/24")
        n = nz.ping(IP_X, count=1, deadline=5)
        if n != 1:
            raise HarnessError("round %d: added TAP %s cannot ping x (%d replies); counters: %s"
                               % (i, tap_name, n, vnetd.counters().get(tap_name)))
        for name in want:
            ctl_ok(vnetd, "del-port", name)
        info = vnetd.ports_info()
        still = [n for n in want if n in info]
        if still:
            raise HarnessError("round %d: deleted ports %s still listed" % (i, still))
        if os.path.exists(vsock):
            raise HarnessError("round %d: del-port left socket %s behind" % (i, vsock))
        if nz.has_link(ifname):
            raise HarnessError("round %d: del-port left TAP %s in %s" % (i, ifname, nz.name))
        vnetd.check_alive()
        if not ping.proc.alive():
            raise HarnessError("continuous ping died: %s" % ping.proc.log_tail())
    log("churn: %d rounds of add/del (TAP + vhost-user server + client on odd rounds) in %.1f s"
        % (CHURN, time.monotonic() - t0))


def vhost_port_works(s, vnetd):
    hugepages.ensure_hugepages()
    sock = s.path("vq.sock")
    s.remove_file_later(sock)
    ctl_ok(vnetd, "add-port", "vhost-user", "vq", "--socket", sock)
    pmd = TestPmd(s, "vq", [virtio_user_vdev(0, sock, mac=MAC_VU)], fwd_mode="rxonly",
                  eth_peers={0: MAC_X}).start()
    vnetd.wait_connected(["vq"])
    c0 = vnetd.counters()
    pmd.start_fwd(tx_first=4)
    sent = pmd.wait_stats_settle(0).tx_packets
    wait_until(lambda: vnetd.counters()["vq"]["rx_packets"] - c0["vq"]["rx_packets"] >= sent,
               10, what="vnetd receiving testpmd's %d frames on vq" % sent)
    time.sleep(0.3)  # settle: the counts must not grow beyond what was sent
    c1 = vnetd.counters()
    rx = c1["vq"]["rx_packets"] - c0["vq"]["rx_packets"]
    tx_x = c1["px"]["tx_packets"] - c0["px"]["tx_packets"]
    if sent < 32 or rx != sent or tx_x < sent:
        raise HarnessError("added vhost-user port: testpmd sent %d, vnetd vq rx %d, px tx %d"
                           % (sent, rx, tx_x))
    # Remove the port while its front end is still connected, then let it go.
    ctl_ok(vnetd, "del-port", "vq")
    if "vq" in vnetd.ports_info() or os.path.exists(sock):
        raise HarnessError("del-port vq (front end connected): port still listed or %s left" % sock)
    pmd.quit()
    vnetd.check_alive()
    log("added vhost-user port: testpmd sent %d frames, vnetd received %d on vq, px sent %d"
        % (sent, rx, tx_x))


def trace(vnetd, port, *args):
    """`vnetctl --json trace PORT ARGS`: (action, [output ports], drop reason)."""
    r = vnetd.vnetctl("trace", port, *args)
    return r["action"], [o["port"] for o in r["outputs"]], r.get("drop")


def set_port_vlans(vnetd, nx, mac_y):
    def expect(desc, replies, port_vlans, traced=None):
        snap = ports_snapshot(vnetd)
        for name, vlan in port_vlans.items():
            if snap[name].get("vlan") != vlan:
                raise HarnessError("%s: %s vlan is %s, want %s" % (desc, name, snap[name].get("vlan"),
                                                                   vlan))
        n = nx.ping(IP_Y, count=3 if replies else 2, interval=0.2 if replies else 0.5,
                    deadline=4 if replies else 2)
        if n != replies:
            raise HarnessError("%s: x -> y got %d replies, want %d" % (desc, n, replies))
        # vnetctl trace of x's frame to y agrees: to py when the pings went through
        # (py learned from the replies), else not to py (and why).
        got = trace(vnetd, "px", "--src", MAC_X, "--dst", mac_y)
        if replies:
            ok = got[0] == "unicast" and got[1] == ["py"]
        else:
            ok = "py" not in got[1] and (traced is None or got[2] == traced)
        if not ok:
            raise HarnessError("%s: vnetctl trace px %s -> %s says %s" % (desc, MAC_X, mac_y, got))
        log("set-port: %s -> x->y %d replies; trace: %s" % (desc, n, got))

    acc = lambda v: {"mode": "access", "vlan": v}  # noqa: E731
    expect("both VLAN 0", 3, {"px": acc(0), "py": acc(0)})
    ctl_ok(vnetd, "set-port", "py", "--vlan", "10")
    expect("py in VLAN 10", 0, {"px": acc(0), "py": acc(10)})
    ctl_ok(vnetd, "set-port", "px", "--vlan", "10")
    expect("px and py in VLAN 10", 3, {"px": acc(10), "py": acc(10)})
    ctl_ok(vnetd, "set-port", "px", "--trunk", "10", "20")
    expect("px trunk [10, 20] no native", 0,
           {"px": {"mode": "trunk", "trunk": [10, 20], "native": 0}}, traced="vlan_not_allowed")
    # The same frame tagged 10 would reach py (access VLAN 10), untagged.
    got = vnetd.vnetctl("trace", "px", "--src", MAC_X, "--dst", mac_y, "--vlan", "10")
    if [(o["port"], o["tag"]) for o in got["outputs"]] != [("py", 0)]:
        raise HarnessError("trace of a frame tagged 10 from trunk px: %s" % got)
    ctl_ok(vnetd, "set-port", "px", "--trunk", "10", "20", "--native", "10")
    expect("px trunk [10, 20] native 10", 3,
           {"px": {"mode": "trunk", "trunk": [10, 20], "native": 10}})
    ctl_ok(vnetd, "set-port", "px", "--vlan", "0")
    ctl_ok(vnetd, "set-port", "py", "--vlan", "0")
    expect("both back in VLAN 0", 3, {"px": acc(0), "py": acc(0)})
    # MTU of a TAP port: set on the device, shown by ports.
    for mtu in (1400, 1500):
        ctl_ok(vnetd, "set-port", "px", "--mtu", str(mtu))
        link = nx.ip("link", "show", "dev", PREFIX + "tx").stdout
        shown = ports_snapshot(vnetd)["px"].get("mtu")
        if "mtu %d " % mtu not in link or shown != mtu:
            raise HarnessError("set-port px --mtu %d: device says %r, ports says %s" % (mtu, link, shown))
    if nx.ping(IP_Y, count=2) != 2:
        raise HarnessError("x -> y broken after set-port px --mtu")
    log("set-port px --mtu 1400 and back to 1500: device and ports follow, ping works")


def bad_commands(s, vnetd, nz):
    keep_sock = vnetd_socket(vnetd, "vkeep")
    bad_if = PREFIX + "bad"
    cases = [
        (["add-port", "bogus", "b1"], "type"),
        (["add-port", "vhost-user", "b2"], "socket"),
        (["add-port", "tap", "b3", "--ifname", bad_if, "--netns", nz.name, "--vlan", "4095"], "vlan"),
        (["add-port", "tap", "b4", "--ifname", bad_if, "--netns", nz.name, "--vlan", "10",
          "--trunk", "10", "20"], "trunk"),
        (["add-port", "tap", "b4n", "--ifname", bad_if, "--netns", nz.name, "--native", "5"],
         "native"),
        (["add-port", "tap", "b5", "--ifname", bad_if, "--netns", nz.name, "--trunk", "10",
          "4095"], "trunk"),
        (["add-port", "tap", "b6", "--ifname", bad_if, "--netns", nz.name, "--mtu", "10"], "mtu"),
        (["add-port", "tap", "px", "--ifname", bad_if, "--netns", nz.name], "px"),
        (["add-port", "vhost-user", "b7", "--socket", keep_sock], "socket"),
        (["add-port", "tap", "b8", "--ifname", PREFIX + "tx", "--netns", PREFIX + "x"], "interface"),
        (["set-port", "vkeep", "--mtu", "9000"], "mtu"),
        (["set-port", "px", "--vlan", "4095"], "vlan"),
        (["del-port", "nosuch"], "nosuch"),
        (["set-port", "nosuch", "--vlan", "3"], "nosuch"),
    ]
    failures = []
    before = ports_snapshot(vnetd)
    for argv, field in cases:
        shown = None
        for json_out in (False, True):
            r = vnetctl_raw(vnetd, *argv, json_out=json_out)
            msg = (r.stdout + r.stderr).strip()
            shown = shown or (r.returncode, msg)
            what = "vnetctl %s%s" % ("--json " if json_out else "", " ".join(argv))
            if r.returncode != 1:
                failures.append("%s: exit status %d, want 1 (%s)" % (what, r.returncode, msg))
            if field.lower() not in msg.lower():
                failures.append("%s: message does not name '%s': %r" % (what, field, msg))
            if json_out and r.returncode != 0:
                try:
                    doc = json.loads(r.stdout)
                    if doc.get("ok") is not False or field.lower() not in doc.get("error", "").lower():
                        failures.append("%s: JSON reply %r" % (what, doc))
                except ValueError:
                    failures.append("%s: --json output is not a JSON object: %r" % (what, r.stdout))
        after = ports_snapshot(vnetd)
        if after != before:
            failures.append("vnetctl %s changed the ports: %s -> %s" % (" ".join(argv), before, after))
            before = after
        if nz.has_link(bad_if):
            failures.append("vnetctl %s left TAP %s in %s" % (" ".join(argv), bad_if, nz.name))
            nz.ip("link", "del", bad_if, check=False)
        log("bad command: vnetctl %s -> status %d: %s" % (" ".join(argv), shown[0],
                                                         shown[1].splitlines()[0] if shown[1] else ""))
    # vnetd's own check of --vlan with --trunk (vnetctl's parser may stop it earlier).
    raw = [({"cmd": "add-port", "port": {"type": "tap", "name": "b9", "ifname": bad_if,
                                          "netns": nz.name, "vlan": 10, "trunk": [10, 20]}},
            ("vlan", "trunk")),
           ({"cmd": "set-port", "name": "px", "vlan": 10, "trunk": [10, 20]}, ("vlan", "trunk"))]
    for req, fields in raw:
        reply = control_request(vnetd, req)
        err = reply.get("error", "")
        if reply.get("ok") is not False or not all(f in err for f in fields):
            failures.append("control request %s: reply %r should be an error naming %s"
                            % (req, reply, fields))
        log("bad request to the control socket: %s -> %s" % (req["cmd"], err))
    if ports_snapshot(vnetd) != before:
        failures.append("raw bad requests changed the ports")
    if nz.has_link(bad_if):
        failures.append("raw bad requests left TAP %s" % bad_if)
    vnetd.check_alive()
    return failures


def vnetd_socket(vnetd, name):
    return vnetd.ports_info()[name]["socket"]


# --- config files -------------------------------------------------------------------------

def port_toml(**kv):
    lines = ["[[port]]"]
    for k, v in kv.items():
        lines.append("%s = %s" % (k, json.dumps(v) if not isinstance(v, bool) else str(v).lower()))
    return "\n".join(lines) + "\n"


def bad_configs(s, vnetd_bin, nz):
    sock0, sock1 = s.path("cfg0.sock"), s.path("cfg1.sock")
    ctl = s.path("cfgbad.ctl")
    tap0, tap1 = PREFIX + "c0", PREFIX + "c1"
    for p in (sock0, sock1, ctl):
        s.remove_file_later(p)
    good_ports = (port_toml(name="g0", type="vhost-user", socket=sock0) +
                  port_toml(name="g1", type="tap", ifname=tap0, netns=nz.name, vlan=10))
    syntax = '[vnetd]\nlog_level = "info"\n\n' + good_ports + '[[port]]\nname = "g2"\ntype = "tap"\n'
    bad_line = syntax.count("\n") + 1
    syntax += 'vlan = = 3\n'
    cases = [
        ("syntax error", syntax, [r"line %d\b" % bad_line]),
        ("unknown field", good_ports + port_toml(name="g2", type="tap", ifname=tap1, vlans=3),
         ["port[2]", "'vlans'"]),
        ("VLAN 4095", good_ports + port_toml(name="g2", type="tap", ifname=tap1, vlan=4095),
         ["port[2]", "'vlan'", "4095"]),
        ("string for an integer", '[fdb]\nsize = "big"\n' + good_ports, ["[fdb]", "'size'"]),
        ("bad mode", good_ports + port_toml(name="g2", type="vhost-user", socket=sock1,
                                            mode="listen"), ["port[2]", "'mode'", "listen"]),
        ("unknown table", good_ports + "[switch]\nflood = false\n", ["'switch'"]),
        ("third port fails to start", good_ports +
         port_toml(name="g2", type="tap", ifname=tap1, netns=PREFIX + "nosuch"),
         ["g2", PREFIX + "nosuch"]),
    ]
    failures = []
    for i, (desc, text, expected) in enumerate(cases):
        path = s.path("bad%d.toml" % i)
        with open(path, "w") as f:
            f.write(text)
        proc = s.spawn("vnetd-bad%d" % i, [vnetd_bin, "--config", path, "--control", ctl])
        rc = proc.wait(15)
        out = proc.read_log()
        if rc is None:
            failures.append("config %s: vnetd still running after 15 s" % desc)
            proc.stop()
            rc = proc.returncode
        elif rc == 0:
            failures.append("config %s: vnetd exited with status 0" % desc)
        for e in expected:
            if not (re.search(e, out) if e.startswith("line") else e in out):
                failures.append("config %s: message lacks %r: %r" % (desc, e, out[-600:]))
        left = [p for p in (sock0, sock1, ctl) if os.path.exists(p)]
        left += [t for t in (tap0, tap1) if nz.has_link(t)]
        if left:
            failures.append("config %s: vnetd left behind %s" % (desc, left))
            for t in (tap0, tap1):
                nz.ip("link", "del", t, check=False)
            for p in (sock0, sock1, ctl):
                if os.path.exists(p):
                    os.unlink(p)
        msg = [ln for ln in out.splitlines() if not ln.startswith("$")]
        log("bad config (%s): status %s: %s" % (desc, rc, msg[-1] if msg else ""))
    return failures


def good_config(s, nz):
    sock_srv, sock_cli = s.path("good-srv.sock"), s.path("good-cli.sock")
    tap_new, tap_att = PREFIX + "gn", PREFIX + "ga"
    s.remove_file_later(sock_srv)
    nz.ip("tuntap", "add", "dev", tap_att, "mode", "tap", "vnet_hdr")
    ctl_path = s.path("good.ctl")
    text = ('[vnetd]\ncontrol = "%s"\nlog_level = "debug"\n\n[worker]\npoll_mode = "adaptive"\n\n'
            '[fdb]\nsize = 1024\nage = 60\n\n' % ctl_path +
            port_toml(name="srv", type="vhost-user", socket=sock_srv, vlan=10) +
            port_toml(name="cli", type="vhost-user", socket=sock_cli, mode="client",
                      trunk=[10, 20], native=10) +
            port_toml(name="tnew", type="tap", ifname=tap_new, netns=nz.name, mtu=9000, vlan=20) +
            port_toml(name="tatt", type="tap", ifname=tap_att, netns=nz.name, attach=True,
                      offloads=False))
    path = s.path("good.toml")
    with open(path, "w") as f:
        f.write(text)
    # --control only where the harness expects it; the file's [vnetd] control is
    # overridden by the command line, so give the same path.
    vd = Vnetd(s, [], extra_args=["--config", path], name="vnetd-good", pin=False)
    vd.control = ctl_path
    vd.start()
    snap = ports_snapshot(vd)
    want = {
        "srv": {"type": "vhost-user", "socket": sock_srv, "vlan": {"mode": "access", "vlan": 10}},
        "cli": {"type": "vhost-user", "socket": sock_cli,
                "vlan": {"mode": "trunk", "trunk": [10, 20], "native": 10}},
        "tnew": {"type": "tap", "mtu": 9000, "vlan": {"mode": "access", "vlan": 20}},
        "tatt": {"type": "tap", "vlan": {"mode": "access", "vlan": 0}},
    }
    failures = []
    if sorted(snap) != sorted(want):
        failures.append("good config: ports %s, want %s" % (sorted(snap), sorted(want)))
    for name, fields in want.items():
        for k, v in fields.items():
            if snap.get(name, {}).get(k) != v:
                failures.append("good config: port %s %s = %r, want %r"
                                % (name, k, snap.get(name, {}).get(k), v))
    if snap.get("tatt", {}).get("features"):
        failures.append("good config: tatt has offloads=false but features %s" % snap["tatt"]["features"])
    if not os.path.exists(sock_srv):
        failures.append("good config: server socket %s missing" % sock_srv)
    link = nz.ip("-d", "link", "show", "dev", tap_new, check=False).stdout
    if "mtu 9000" not in link:
        failures.append("good config: TAP %s should exist with MTU 9000: %r" % (tap_new, link))
    log("good config: ports %s: %s" % (sorted(snap), {n: (p.get("type"), p.get("mode"), p.get("vlan"))
                                                       for n, p in snap.items()}))
    rc = vd.stop()
    if rc != 0:
        failures.append("good config: vnetd exited with status %s" % rc)
    if os.path.exists(sock_srv):
        failures.append("good config: vnetd left %s behind after exit" % sock_srv)
    if nz.has_link(tap_new):
        failures.append("good config: vnetd left its TAP %s behind after exit" % tap_new)
    if not nz.has_link(tap_att):
        failures.append("good config: vnetd removed the attached (pre-existing) TAP %s" % tap_att)
    nz.ip("link", "del", tap_att, check=False)
    return failures


# --- the test ------------------------------------------------------------------------------

def body(s, args):
    nx, ny, nz = Netns(s, "x"), Netns(s, "y"), Netns(s, "z")
    tx, ty = PREFIX + "tx", PREFIX + "ty"
    keep_sock = s.path("vkeep.sock")
    vnetd = Vnetd(s, [], extra_args=[
        "--tap", "px,ifname=%s,netns=%s" % (tx, nx.name),
        "--tap", "py,ifname=%s,netns=%s" % (ty, ny.name),
        "--vhost-user", "%s,name=vkeep" % keep_sock])
    s.remove_file_later(keep_sock)
    vnetd.start()
    nx.setup_if(tx, IP_X + "/24", MAC_X)
    ny.setup_if(ty, IP_Y + "/24")
    if nx.ping(IP_Y, count=3) != 3:
        raise HarnessError("x cannot ping y through vnetd before any change")

    # 1. churn under a continuous ping
    ping = PingStream(s, nx, IP_Y)
    time.sleep(1.0)  # a stretch of undisturbed replies before the churn
    churn(s, vnetd, nz, ping)
    time.sleep(0.5)
    sent, received, lost, _, _, gap = ping.stop_counted()
    log("continuous ping during churn: %d sent, %d received, %d lost (the last request in "
        "flight not counted), longest gap %.3f s" % (sent, received, lost, gap))
    if lost > MAX_LOST or gap > MAX_GAP:
        raise HarnessError("traffic on px/py suffered from the churn: %d of %d lost (max %d), longest "
                           "gap between replies %.3f s (max %.1f)" % (lost, sent, MAX_LOST, gap, MAX_GAP))

    # 2. a vhost-user port added at run time carries frames
    vhost_port_works(s, vnetd)

    # 3. VLAN changes at run time
    mac_y = json.loads(ny.ip("-j", "link", "show", "dev", ty).stdout)[0]["address"]
    set_port_vlans(vnetd, nx, mac_y)

    # 4. bad commands
    failures = bad_commands(s, vnetd, nz)
    if nx.ping(IP_Y, count=3) != 3:
        failures.append("x cannot ping y after the bad commands")
    rc = vnetd.stop()
    if rc != 0:
        failures.append("vnetd exited with status %s" % rc)

    # 5. config files
    failures += bad_configs(s, vnetd.binary, nz)
    failures += good_config(s, nz)
    if failures:
        raise HarnessError("%d problem(s):\n  %s" % (len(failures), "\n  ".join(failures)))


def prerequisites():
    return netlab_prerequisites() + [lambda a: require_tools("dpdk-testpmd", "stdbuf")]


if __name__ == "__main__":
    run_test("vnetctl", body, prerequisites())
