"""vnetd launcher and vnetctl queries.

`vnetd --vhost-user PATH[,client][,name=NAME][,mtu=N] ... --tap NAME[,ifname=IF]
[,netns=NS][,no-offloads][,mtu=N] ... --control PATH --log-level L`;
vhost-user ports are vhu0, vhu1, ... in command-line order unless named; a TAP
port's name is its first field (`TapSpec`).  vnetd is
pinned (taskset) to the CPU the peers' forwarding lcores do not use, see
testpmd.cpu_plan().
"""

import json
import os
import shutil
import socket
import subprocess
import time

from .procs import AdoptedProcess, HarnessError, become_subreaper, child_pids, log, wait_until
from .testpmd import cpu_plan


def find_program(build_dir, name):
    """<build-dir>/NAME, or the first executable NAME below the build dir."""
    if not build_dir:
        return None
    direct = os.path.join(build_dir, name)
    if os.path.isfile(direct) and os.access(direct, os.X_OK):
        return direct
    for root, dirs, files in os.walk(build_dir):
        dirs[:] = [d for d in dirs if not d.startswith((".", "CMakeFiles", "integration-"))]
        if name in files:
            p = os.path.join(root, name)
            if os.access(p, os.X_OK):
                return p
    return None


def require_vnetd(args):
    missing = []
    for prog in ("vnetd", "vnetctl"):
        if find_program(args.build_dir, prog) is None:
            missing.append("%s in build dir %s (build it first)" % (prog, args.build_dir))
    return missing


class PortSpec:
    """One --vhost-user port: socket path, client mode (vnetd connects), name, MTU,
    VLAN, the worker that polls it, the queue pairs it offers."""

    option = "--vhost-user"

    def __init__(self, socket, client=False, name=None, mtu=None, vlan=None, worker=None,
                 queues=None):
        self.socket = socket
        self.client = client
        self.name = name
        self.mtu = mtu
        self.vlan = vlan
        self.worker = worker
        self.queues = queues

    def arg(self):
        a = self.socket
        if self.client:
            a += ",client"
        if self.name:
            a += ",name=%s" % self.name
        if self.mtu:
            a += ",mtu=%d" % self.mtu
        if self.vlan is not None:
            a += ",vlan=%d" % self.vlan
        if self.worker is not None:
            a += ",worker=%d" % self.worker
        if self.queues is not None:
            a += ",queues=%d" % self.queues
        return a


class TapSpec:
    """One --tap port: vnetd creates TAP `ifname` (in namespace `netns`, a harness
    `Netns` or a name), with or without offloads, with an MTU.  The port's name is
    `name`.  With a `Netns`, the TAP is also deleted by name at cleanup."""

    option = "--tap"
    socket = None
    client = False

    def __init__(self, name, ifname=None, netns=None, offloads=True, mtu=None, vlan=None,
                 attach=False, queues=None):
        self.name = name
        self.queues = queues
        self.ifname = ifname
        self.netns_obj = netns if hasattr(netns, "own_link") else None
        self.netns = getattr(netns, "name", netns)
        self.offloads = offloads
        self.mtu = mtu
        self.vlan = vlan
        self.attach = attach
        if self.netns_obj is not None and ifname and not attach:
            self.netns_obj.own_link(ifname)

    def arg(self):
        a = self.name
        if self.ifname:
            a += ",ifname=%s" % self.ifname
        if self.netns:
            a += ",netns=%s" % self.netns
        if self.attach:
            a += ",attach"
        if not self.offloads:
            a += ",no-offloads"
        if self.queues is not None:
            a += ",queues=%d" % self.queues
        if self.mtu:
            a += ",mtu=%d" % self.mtu
        if self.vlan is not None:
            a += ",vlan=%d" % self.vlan
        return a

    def link_exists(self):
        if not self.ifname:
            return True
        argv = ["ip"] + (["-n", self.netns] if self.netns else []) + [
            "link", "show", "dev", self.ifname]
        return subprocess.run(argv, capture_output=True).returncode == 0


class ControlConnection:
    """One persistent connection to vnetd's control socket (what vnetctl sends: a JSON
    request line, a JSON reply line), for tests that poll often: no process per query
    (vnetctl start-up costs ~0.3 s under ASan)."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def request(self, cmd, **fields):
        """Send {"cmd": cmd, ...}; return the decoded reply (must be ok)."""
        req = dict(fields, cmd=cmd)
        try:
            self.sock.sendall((json.dumps(req) + "\n").encode())
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise HarnessError("vnetd closed the control connection (request %s)" % req)
                self.buf += chunk
        except OSError as e:
            raise HarnessError("control request %s: %s" % (req, e))
        line, self.buf = self.buf.split(b"\n", 1)
        doc = json.loads(line)
        if not doc.get("ok"):
            raise HarnessError("control request %s failed: %s" % (req, doc))
        return doc

    def close(self):
        self.sock.close()


class Vnetd:
    def __init__(self, session, ports, log_level="info", extra_args=(), pin=True, name="vnetd",
                 config=None, control=None, env=None):
        """`config`: start from that file (`vnetd --config`, its control socket `control`);
        `ports` then only say what start() waits for. `env`: extra environment variables."""
        self.session = session
        self.binary = find_program(session.build_dir, "vnetd")
        self.vnetctl_binary = find_program(session.build_dir, "vnetctl")
        if self.binary is None or self.vnetctl_binary is None:
            raise HarnessError("vnetd/vnetctl not found in build dir %s" % session.build_dir)
        self.ports = list(ports)
        self.control = control or session.path("%s.ctl" % name)
        self.config = config
        self.env = dict(os.environ, **env) if env else None
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.pin = pin
        self.name = name
        self.proc = None

    def port_names(self):
        names, vhu = [], 0
        for p in self.ports:
            if isinstance(p, TapSpec):
                names.append(p.name)
            else:
                names.append(p.name or "vhu%d" % vhu)
                vhu += 1
        return names

    def argv(self):
        argv = []
        if self.pin and shutil.which("taskset"):
            argv += ["taskset", "-c", str(cpu_plan()[0])]
        argv.append(self.binary)
        if self.config:
            return argv + ["--config", self.config] + self.extra_args
        for p in self.ports:
            argv += [p.option, p.arg()]
        argv += ["--control", self.control, "--log-level", self.log_level]
        return argv + self.extra_args

    def start(self, timeout=15.0):
        """Start vnetd; wait until the control socket and every server socket exist."""
        for p in self.ports:
            if p.socket and not p.client:
                self.session.remove_file_later(p.socket)
        self.session.remove_file_later(self.control)
        self.proc = self.session.spawn(self.name, self.argv(), env=self.env, stop_timeout=10.0)
        paths = [self.control] + [p.socket for p in self.ports if p.socket and not p.client]

        def ready():
            if not self.proc.alive():
                raise HarnessError("vnetd exited with status %s during start-up; log:\n%s"
                                   % (self.proc.returncode, self.proc.log_tail()))
            return (all(os.path.exists(x) for x in paths)
                    and all(t.link_exists() for t in self.ports if isinstance(t, TapSpec)))
        wait_until(ready, timeout, interval=0.05, what="vnetd sockets %s and TAPs %s" % (
            ", ".join(os.path.basename(x) for x in paths),
            ", ".join(t.ifname or t.name for t in self.ports if isinstance(t, TapSpec))))
        # The control socket existing does not prove it answers: ask once.
        wait_until(lambda: self._try_ports() is not None, timeout, interval=0.1,
                   what="vnetctl answering")
        log("vnetd up (pid %d)" % self.proc.pid)
        return self

    def check_alive(self):
        if not self.proc.alive():
            raise HarnessError("vnetd died (status %s); log tail:\n%s"
                               % (self.proc.returncode, self.proc.log_tail()))

    def stop(self, timeout=10.0):
        """SIGTERM and expect a clean exit (status 0) within `timeout`."""
        self.check_alive()
        t0 = time.monotonic()
        rc = self.proc.stop(timeout)
        log("vnetd stopped with status %s in %.1f s" % (rc, time.monotonic() - t0))
        return rc

    def stop_ok(self, timeout=10.0):
        """stop(), and a HarnessError unless vnetd exited with status 0."""
        rc = self.stop(timeout)
        if rc != 0:
            raise HarnessError("vnetd exited with status %s" % rc)

    def connect_control(self):
        """A persistent ControlConnection, closed at cleanup."""
        c = ControlConnection(self.control)
        self.session.cleanup.push("control connection", c.close)
        return c

    # --- vnetctl ------------------------------------------------------------------
    def vnetctl(self, *args, timeout=10.0):
        """Run `vnetctl --control PATH --json ARGS`; return the decoded JSON (must be ok)."""
        argv = [self.vnetctl_binary, "--control", self.control, "--json",
                "--timeout", str(int(timeout * 1000))] + list(args)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError("vnetctl %s timed out after %.0f s" % (" ".join(args), timeout))
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            raise HarnessError("vnetctl %s: status %d, not JSON: %r %r"
                               % (" ".join(args), r.returncode, r.stdout[:500], r.stderr[:500]))
        if r.returncode != 0 or not doc.get("ok"):
            raise HarnessError("vnetctl %s failed (status %d): %s %s"
                               % (" ".join(args), r.returncode, r.stdout[:500], r.stderr[:500]))
        return doc

    def run_vnetctl(self, *args, timeout=10.0):
        """Run `vnetctl --control PATH --json --timeout MS ARGS` whatever its outcome;
        returns (exit status, decoded JSON or None, stderr)."""
        argv = [self.vnetctl_binary, "--control", self.control, "--json",
                "--timeout", str(int(timeout * 1000))] + list(args)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            raise HarnessError("vnetctl %s timed out after %.0f s" % (" ".join(args), timeout))
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            doc = None
        return r.returncode, doc, r.stderr

    # --- hot upgrade ------------------------------------------------------------------
    def upgrade(self, *args, timeout=60.0):
        """`vnetctl --json upgrade ARGS` (must succeed), then `upgraded()`; returns the reply.
        Makes the harness a child subreaper first, so that the new vnetd (forked by the old
        one) is re-parented to it when the old one exits."""
        become_subreaper()
        self.check_alive()
        reply = self.vnetctl("upgrade", *args, timeout=timeout)
        self.upgraded(reply)
        return reply

    def upgraded(self, reply, timeout=15.0):
        """After a successful upgrade (`reply`: vnetctl's JSON): the old vnetd (`old_pid`, this
        object's process) must exit with status 0 within `timeout`; from then on this object
        stands for the new one (`pid`, re-parented to the harness) in vnetctl calls,
        check_alive(), stop() and cleanup.  Its output goes to the old one's log file."""
        old = self.proc
        new_pid = reply.get("pid")
        if reply.get("old_pid") != old.pid or not isinstance(new_pid, int) or new_pid == old.pid:
            raise HarnessError("upgrade reply names old_pid %s, pid %s; vnetd was pid %d: %s"
                               % (reply.get("old_pid"), new_pid, old.pid, reply))
        rc = old.wait(timeout)
        if rc is None:
            raise HarnessError("the old vnetd (pid %d) still runs %.0f s after handing over to "
                               "pid %d; log tail:\n%s" % (old.pid, timeout, new_pid,
                                                          old.log_tail()))
        if rc != 0:
            raise HarnessError("the old vnetd (pid %d) exited with status %s after handing over "
                               "to pid %d; log tail:\n%s" % (old.pid, rc, new_pid,
                                                             old.log_tail()))
        self.proc = AdoptedProcess(self.name, new_pid, old.log_path)
        self.session.cleanup.push("process %s (pid %d)" % (self.name, new_pid), self.proc.stop,
                                  10.0)
        if not self.proc.alive():
            raise HarnessError("the new vnetd (pid %d) exited with status %s; log tail:\n%s"
                               % (new_pid, self.proc.returncode, self.proc.log_tail()))
        log("vnetd upgraded: pid %d -> %d" % (old.pid, new_pid))
        return self.proc

    def fd_count(self):
        """Open file descriptors of the running vnetd (/proc/PID/fd)."""
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def children(self):
        """PIDs of the running vnetd's child processes (zombies included)."""
        return child_pids(self.proc.pid)

    def _try_ports(self):
        try:
            return self.vnetctl("ports", timeout=5.0)
        except HarnessError:
            return None

    def ports_info(self):
        """{name: port dict} from `vnetctl ports`."""
        doc = self.vnetctl("ports")
        return {p["name"]: p for p in doc.get("ports", [])}

    def counters(self):
        """{name: counters dict} from `vnetctl counters`."""
        return self.vnetctl("counters")["counters"]

    def wait_connected(self, names, timeout=30.0, with_features=True):
        """Wait until every named port reports connected (and negotiated features)."""
        def ok():
            self.check_alive()
            info = self.ports_info()
            for n in names:
                p = info.get(n)
                if not p or not p.get("connected"):
                    return False
                if with_features and not p.get("features"):
                    return False
            return True
        wait_until(ok, timeout, interval=0.2, what="vnetd ports %s connected" % ", ".join(names))

    def expect_connected(self, names, mode, timeout=30.0):
        """wait_connected(), then each port must be connected in `mode` (server/client)."""
        self.wait_connected(names, timeout=timeout)
        info = self.ports_info()
        for n in names:
            p = info.get(n)
            if not p or not p.get("connected") or p.get("mode") != mode:
                raise HarnessError("vnetd port %s is %s; expected connected, mode %s"
                                   % (n, p, mode))


def sanitizer_of(pid):
    """'asan' or 'tsan' when the process runs with that sanitizer's runtime, else None."""
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read()
    for name in ("asan", "tsan"):
        if "lib%s" % name in maps:
            return name
    return None
