#!/usr/bin/env python3
"""A lying predecessor: the hand-over state a new vnetd reads during `vnetctl upgrade` is
untrusted input (src/control/handover.h).  This test plays the predecessor itself (its
own implementation of the hand-over socket, written from the protocol description), so
it also checks that vnetd speaks the protocol as documented.

vnetd is started the way a predecessor starts it: VNET_HANDOVER_FD in its environment
names its end of a SOCK_SEQPACKET pair.  For each lie:
  - the successor answers {"ready": false, "error": ...} naming what was wrong (or, for
    a predecessor that vanishes, just exits), and exits with status 1 within seconds,
    not by a signal (and, under a sanitizer, without a report);
  - it never says ready, and the files the predecessor owns stay: the control socket
    file and a vhost-user socket file the state names are still there, still answered.
Lies: not JSON, a JSON array, another hand-over version, fd_count beyond the limit,
fewer fds than announced (the predecessor goes), an fd index out of range or used
twice, a pipe as the control socket, a port spec with a bad name, VLAN or queue count,
vhost-user state with features that were not offered, a pipe as guest memory, a
truncated payload, a GET instead of state, a listening socket where a session is
expected, an eventfd as a TAP.
Then the truth: a valid state (the control socket and one vhost-user listening socket)
and commit: the successor serves `vnetctl ports` on the socket it was handed, with the
port, and reports done.  And a predecessor that never commits: the successor exits
and leaves the sockets it was handed.
"""

import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.vnetd import find_program, require_vnetd  # noqa: E402

CHUNK = 32 * 1024


def send_json(sock, obj):
    text = json.dumps(obj).encode()
    off = 0
    while True:
        n = min(CHUNK - 1, len(text) - off)
        last = off + n == len(text)
        sock.send((b"E" if last else b"J") + text[off:off + n])
        off += n
        if last:
            return


def send_fds(sock, fds):
    for i in range(0, len(fds), 200):
        socket.send_fds(sock, [b"F"], fds[i:i + 200])


def recv_json(sock, timeout=10.0):
    sock.settimeout(timeout)
    text = b""
    while True:
        m = sock.recv(CHUNK + 1)
        if not m:
            raise HarnessError("the successor closed the hand-over socket")
        if m[:1] not in (b"J", b"E"):
            raise HarnessError("not a JSON chunk: %r" % m[:20])
        text += m[1:]
        if m[:1] == b"E":
            return json.loads(text)


class Successor:
    """vnetd started as a predecessor starts it."""

    def __init__(self, s, vnetd, control, tag):
        self.mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["VNET_HANDOVER_FD"] = str(theirs.fileno())
        self.log_path = os.path.join(s.tmp, "successor-%s.log" % tag)
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [vnetd, "--control", control, "--log-level", "info"],
            env=env, pass_fds=[theirs.fileno()], stdout=self.log_file,
            stderr=subprocess.STDOUT)
        s.cleanup.push("successor vnetd", self.stop)
        theirs.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.mine.close()
        self.log_file.close()

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_exit(self, what, timeout=10):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError("%s: the successor still runs after %d s" % (what, timeout))
        text = self.log_text()
        if rc != 1:
            raise HarnessError("%s: the successor exited with %d, not 1:\n%s" % (what, rc, text))
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error", "ThreadSanitizer"):
            if bad in text:
                raise HarnessError("%s: sanitizer report:\n%s" % (what, text))
        return text


class Listener:
    """A listening Unix socket the predecessor owns (the file must survive)."""

    def __init__(self, s, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        s.cleanup.push("listener " + path, self.close)

    def close(self):
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)

    def check(self, what):
        if not os.path.exists(self.path):
            raise HarnessError("%s: %s was removed" % (what, self.path))
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(2)
        try:
            c.connect(self.path)
        except OSError as e:
            raise HarnessError("%s: %s no longer answers: %s" % (what, self.path, e))
        finally:
            c.close()
        conn, _ = self.sock.accept()
        conn.close()


def vhost_spec(sock_path, name="vm1"):
    return {"name": name, "type": "vhost-user", "socket": sock_path, "client": False,
            "ifname": "", "netns": "", "attach": False, "offloads": True, "io": "", "mtu": 0,
            "vlan": {"mode": "access", "vlan": 0}, "allowed_macs": [], "socket_mode": -1,
            "socket_uid": -1, "socket_gid": -1, "worker": -1, "queues": 1,
            "policing": [[0, 0, 0, 0]] * 4}


def tap_spec(name="t0"):
    spec = vhost_spec("", name)
    spec.update({"type": "tap", "ifname": "vnethost0", "queues": 1})
    return spec


def body(s, args):
    require_root()
    vnetd = find_program(s.build_dir, "vnetd")
    vnetctl = find_program(s.build_dir, "vnetctl")
    control = os.path.join(s.tmp, "ctl.sock")
    vhost = os.path.join(s.tmp, "vm1.sock")
    ctl_l = Listener(s, control)
    vhu_l = Listener(s, vhost)

    def valid_state(fds, ports=None):
        """The state with the control socket as fd 0 and the given ports."""
        fds.append(os.dup(ctl_l.sock.fileno()))
        return {"handover": 1, "version": "test", "control": 0, "metrics": None,
                "file_ports": [], "next_port_id": 1, "ports": ports or []}

    def vhost_port(fds, setup=None, session=None, listen=True):
        pj = {"spec": vhost_spec(vhost), "vhost": {
            "listen": None, "session": None, "setup": setup or [], "start_rx": [],
            "start_tx": []}}
        if listen:
            fds.append(os.dup(vhu_l.sock.fileno()))
            pj["vhost"]["listen"] = len(fds) - 1
        if session is not None:
            fds.append(session)
            pj["vhost"]["session"] = len(fds) - 1
        return pj

    def msg(req, payload=b"", fd_index=None):
        return {"r": req, "p": payload.hex(), "f": [] if fd_index is None else [fd_index]}

    SET_FEATURES, SET_OWNER, GET_VRING_BASE, ADD_MEM_REG, SET_VRING_NUM = 2, 3, 11, 37, 8

    def lie_session(setup):
        """A vhost-user port with a connected session whose state is `setup`."""
        def make(fds):
            st = valid_state(fds)
            a, b = socket.socketpair()
            s.cleanup.push("socket", b.close)
            st["ports"] = [vhost_port(fds, session=os.dup(a.fileno()))]
            a.close()
            st["ports"][0]["vhost"]["setup"] = setup(fds)
            return st
        return make

    def pipe_memory(fds):
        r, w = os.pipe()
        os.close(w)
        fds.append(r)
        region = (0).to_bytes(8, "little") + b"".join(
            v.to_bytes(8, "little") for v in (0, 1 << 20, 0x7f0000000000, 0))
        return [msg(SET_OWNER), msg(ADD_MEM_REG, region, len(fds) - 1)]

    lie_features = lie_session(
        lambda fds: [msg(SET_FEATURES, (1 << 63).to_bytes(8, "little"))])
    lie_pipe_memory = lie_session(pipe_memory)
    lie_truncated = lie_session(lambda fds: [msg(SET_VRING_NUM, b"\x00\x01\x02")])
    lie_get = lie_session(lambda fds: [msg(GET_VRING_BASE, bytes(8))])

    def lie_listener_as_session(fds):
        st = valid_state(fds)
        st["ports"] = [vhost_port(fds, session=os.dup(vhu_l.sock.fileno()))]
        return st

    def lie_eventfd_tap(fds):
        st = valid_state(fds)
        fds.append(os.eventfd(0))
        st["ports"] = [{"spec": tap_spec(), "tap": {"fds": [len(fds) - 1], "created": True}}]
        return st

    def lie_spec(field, value):
        def make(fds):
            st = valid_state(fds)
            pj = vhost_port(fds)
            pj["spec"][field] = value
            st["ports"] = [pj]
            return st
        return make

    def lie_field(field, value):
        def make(fds):
            st = valid_state(fds)
            st[field] = value
            return st
        return make

    def lie_pipe_control(fds):
        st = valid_state(fds)
        os.close(fds.pop())
        r, w = os.pipe()
        os.close(w)
        fds.append(r)
        return st

    def lie_index_twice(fds):
        st = valid_state(fds)
        pj = vhost_port(fds, listen=False)
        pj["vhost"]["listen"] = 0  # the control socket's fd again
        st["ports"] = [pj]
        return st

    # (name, make_state or raw bytes, expected words in the error or None: predecessor goes)
    lies = [
        ("not JSON", b"E{{{", "malformed"),
        ("a JSON array", b"E[1, 2]", "malformed"),
        ("hand-over version 2", lie_field("handover", 2), "version"),
        ("fd_count beyond the limit", lie_field("fd_count", 10 ** 7), "fd_count"),
        ("fd index out of range", lie_field("control", 5), "out of range"),
        ("fd index used twice", lie_index_twice, "used twice"),
        ("a pipe as the control socket", lie_pipe_control, "not a listening socket"),
        ("a bad port name", lie_spec("name", "../x"), "port name"),
        ("a VLAN out of range", lie_spec("vlan", {"vlan": 5000}), "vlan"),
        ("100000 queue pairs", lie_spec("queues", 100000), "queues"),
        ("features not offered", lie_features, "not offered"),
        ("a pipe as guest memory", lie_pipe_memory, "pipe"),
        ("a truncated payload", lie_truncated, "SET_VRING_NUM"),
        ("a GET as state", lie_get, "not session state"),
        ("a listening socket as the session", lie_listener_as_session, "not a connected"),
        ("an eventfd as a TAP", lie_eventfd_tap, "not a TAP"),
        ("fewer fds than announced", "short", None),
    ]
    for i, (what, lie, expect) in enumerate(lies):
        succ = Successor(s, vnetd, control, "lie%d" % i)
        hello = recv_json(succ.mine)
        if hello.get("hello") != 1 or not isinstance(hello.get("pid"), int):
            raise HarnessError("%s: bad hello %r" % (what, hello))
        fds = []
        if isinstance(lie, bytes):
            succ.mine.send(lie)
        elif lie == "short":
            st = valid_state(fds)
            st["fd_count"] = 3
            send_json(succ.mine, st)
            send_fds(succ.mine, fds)
            succ.mine.close()  # the predecessor goes
        else:
            st = lie(fds)
            st.setdefault("fd_count", len(fds))
            send_json(succ.mine, st)
            if st["fd_count"] == len(fds):
                send_fds(succ.mine, fds)
        for fd in fds:
            os.close(fd)
        if expect is not None:
            reply = recv_json(succ.mine)
            if reply.get("ready") is not False or expect.lower() not in reply.get("error", "").lower():
                raise HarnessError("%s: reply %r does not refuse with '%s'" % (what, reply, expect))
            log("%-36s refused: %s" % (what, reply["error"][:100]))
        else:
            log("%-36s the successor exits" % what)
        text = succ.wait_exit(what)
        if "taking over failed" not in text:
            raise HarnessError("%s: the successor did not log why:\n%s" % (what, text))
        ctl_l.check(what)
        vhu_l.check(what)

    def ready_successor(tag, fdb=()):
        """A successor handed a valid state (the control socket, one vhost-user port, FDB
        entries `fdb`) that said ready."""
        succ = Successor(s, vnetd, control, tag)
        recv_json(succ.mine)
        fds = []
        st = valid_state(fds)
        st["ports"] = [vhost_port(fds)]
        st["fdb"] = list(fdb)
        st["fd_count"] = len(fds)
        send_json(succ.mine, st)
        send_fds(succ.mine, fds)
        for fd in fds:
            os.close(fd)
        if recv_json(succ.mine).get("ready") is not True:
            raise HarnessError("a valid state was not accepted")
        return succ

    # A predecessor that never commits: the successor says ready, then exits when the
    # predecessor goes, leaving its sockets.
    succ = ready_successor("nocommit")
    succ.mine.close()
    succ.wait_exit("no commit")
    ctl_l.check("no commit")
    vhu_l.check("no commit")
    log("no commit: the successor exited and left the sockets")

    # The truth: commit, and the successor serves on what it was handed.
    # FDB entries: one good, the others lies the successor skips (multicast, zero, VLAN
    # 5000, a port it does not have, older than the FDB's age, not a number, wrong shape).
    good = int.from_bytes(bytes.fromhex("0200000000aa"), "little")  # raw: first octet lowest
    fdb = [[good, 0, "vm1", 1000],
           [int.from_bytes(bytes.fromhex("0100000000bb"), "little"), 0, "vm1", 0],
           [0, 0, "vm1", 0],
           [int.from_bytes(bytes.fromhex("0200000000cc"), "little"), 5000, "vm1", 0],
           [int.from_bytes(bytes.fromhex("0200000000dd"), "little"), 0, "nope", 0],
           [int.from_bytes(bytes.fromhex("0200000000ee"), "little"), 0, "vm1", 10 ** 12],
           ["02:00:00:00:00:ff", 0, "vm1", 0], [1, 2], "x"]
    succ = ready_successor("valid", fdb)
    send_json(succ.mine, {"commit": True})
    if recv_json(succ.mine).get("done") is not True:
        raise HarnessError("no done after commit")
    # Our listener stops answering the control socket: close it (as the predecessor
    # does) so that connections go to the successor's copy.
    ctl_l.sock.close()
    vhu_l.sock.close()
    out = subprocess.run([vnetctl, "--control", control, "--json", "ports"], capture_output=True,
                         text=True, timeout=20)
    if out.returncode != 0:
        raise HarnessError("vnetctl ports on the handed-over socket failed: %s" % out.stderr)
    ports = json.loads(out.stdout)["ports"]
    if [p["name"] for p in ports] != ["vm1"] or ports[0]["socket"] != vhost:
        raise HarnessError("the successor's ports are %r" % ports)
    log("valid state: the successor serves vnetctl on the handed-over socket: %s"
        % [p["name"] for p in ports])
    out = subprocess.run([vnetctl, "--control", control, "--json", "fdb"], capture_output=True,
                         text=True, timeout=20)
    entries = json.loads(out.stdout)["fdb"] if out.returncode == 0 else None
    macs = sorted(e["mac"] for e in entries or [])
    if macs != ["02:00:00:00:00:aa"]:
        raise HarnessError("the successor's FDB is %r (want only the one good entry)" % entries)
    log("FDB handed over: %s; %d lying entries skipped" % (entries, len(fdb) - 1))
    succ.proc.terminate()
    rc = succ.proc.wait(timeout=20)
    if rc != 0:
        raise HarnessError("the successor exited with %d on SIGTERM:\n%s" % (rc, succ.log_text()))
    # Committed: the files are the successor's, and it removed them on exit.
    if os.path.exists(control):
        raise HarnessError("the successor left %s behind after its exit" % control)


if __name__ == "__main__":
    run_test("test_upgrade_hostile", body, prerequisites=[require_vnetd])
