#!/usr/bin/env python3
"""Hostile control clients against the real vnetd: no request crashes it, nobody locks
the operator out, and the data plane does not notice.

vnetd has two vhost-user ports b and c with paced vnet-traffic b -> c the whole time,
a control idle timeout of IDLE_S and a request timeout of REQUEST_S.  Parts:

0. hostile configuration files (nesting 100,000 deep in arrays, inline tables, dotted
   keys and table headers; integers and floats out of range; 2 MiB; wrong types):
   vnetd exits with status 2 (not a signal) naming the line or field.
1. hostile requests, each on one connection that must keep working afterwards (a
   valid request answered right after it): numbers out of range (1e400, -1e400, and
   123456789012345678901234567890 where an integer is expected), arrays and objects
   nested 100,000 deep inside fields vnetd echoes into its errors (trunk,
   allowed_macs, name), nesting just under the limit (echoed, bounded), invalid
   UTF-8, fields of the wrong type for every command; each gets an error reply
   ("ok": false) of bounded length.  An oversized line (2 MiB, no newline) gets
   "request too long" and the connection is closed.
2. lockout: a trickle client (one byte every 50 ms, never a newline) and then 200
   idle connections; `vnetctl ports` must answer within a second (the least recently
   active idle client is evicted for it); the trickle client gets "request timed
   out" after REQUEST_S and is closed; the idle ones are closed after IDLE_S.
3. after each part and while the idle clients are connected: vnetd alive, b's frames
   still reach c (counted), the control
   counters say what happened (bad_json, too_deep, too_long, bad_requests, evicted,
   request_timeouts, idle_timeouts) and vnetd logged it (rate-limited warnings).
   Parts 1 and 2 run ROUNDS times: after the first round (the allocator warmed up)
   vnetd's open fd count must come back to the same number and its RSS stay within
   4 MiB (test_hostile.check_flat; RSS not under a sanitizer).
"""

import json
import os
import select
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.traffic import require_traffic  # noqa: E402
from vnet_harness.vnetd import (PortSpec, Vnetd, find_program, require_vnetd,  # noqa: E402
                                sanitizer_of)
from test_hostile import check_flat, proc_status, start_b_to_c  # noqa: E402

IDLE_S = 3
REQUEST_S = 2
IDLE_CLIENTS = 200
ROUNDS = 3
MAX_ERROR = 400      # bytes of an error text at most
DEEP = 100000


class Client:
    """A raw control connection: bytes out, reply lines in."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self, timeout=5.0):
        """The next reply line, decoded; None if vnetd closed the connection first."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError("no reply within %.0f s" % timeout)
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def closed_by_peer(self, timeout):
        """True once vnetd closed the connection (lines before the EOF are dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if r:
                try:
                    if not self.sock.recv(65536):
                        return True
                except ConnectionResetError:
                    return True
        return False

    def close(self):
        self.sock.close()


def deep(n, open_="[", close="]", inner="1"):
    return open_ * n + inner + close * n


# (name, request bytes, what the error must start with or contain)
def hostile_requests():
    nested_obj = '{"a":' * DEEP + "1" + "}" * DEEP
    return [
        ("1e400", b'{"cmd":"counters","port":1e400}', "bad JSON: "),
        ("-1e400", b'{"cmd":"set-port","name":"b","vlan":-1e400}', "bad JSON: "),
        ("huge integer", b'{"cmd":"set-port","name":"b","vlan":123456789012345678901234567890}',
         "field 'vlan' must be an integer"),
        ("huge worker", b'{"cmd":"set-port","name":"b","worker":123456789012345678901234567890}',
         "field 'worker' must be an integer"),
        ("deep trunk", ('{"cmd":"set-port","name":"b","trunk":[%s]}' % deep(DEEP)).encode(),
         "request nested deeper than 32 levels"),
        ("deep allowed_macs",
         ('{"cmd":"set-port","name":"b","allowed_macs":[%s]}' % nested_obj).encode(),
         "request nested deeper than 32 levels"),
        ("deep name", ('{"cmd":"set-port","name":%s}' % deep(DEEP)).encode(),
         "request nested deeper than 32 levels"),
        ("deep unterminated", b'{"cmd":' + b"[" * DEEP, "request nested deeper than 32 levels"),
        ("trunk at depth 31", ('{"cmd":"set-port","name":"b","trunk":[%s]}' % deep(29)).encode(),
         "set-port b: field 'trunk': [[[["),
        ("macs at depth 31",
         ('{"cmd":"set-port","name":"b","allowed_macs":[%s]}' % deep(29, "{\"k\":", "}")).encode(),
         "allowed_macs[0] must be a unicast MAC"),
        ("invalid UTF-8 command", b'{"cmd":"\xff\xfe"}', "bad JSON: "),
        ("invalid UTF-8 name", b'{"cmd":"set-port","name":"b\xc3"}', "bad JSON: "),
        ("NUL in a string", b'{"cmd":"ver\x00sion"}', "bad JSON: "),
        ("not an object", b"[1,2,3]", "request must be an object"),
        ("cmd a number", b'{"cmd":5}', "request must be an object"),
        ("counters port an array", b'{"cmd":"counters","port":[1]}', "counters: field 'port'"),
        ("set-port name an object", b'{"cmd":"set-port","name":{"a":1}}', "set-port: missing"),
        ("set-port mtu a string", b'{"cmd":"set-port","name":"b","mtu":"9000"}', "field 'mtu'"),
        ("set-port unknown long field",
         b'{"cmd":"set-port","name":"b","' + b"k" * 100000 + b'":1}', "set-port: unknown field"),
        ("unknown long command", b'{"cmd":"' + b"x" * 500000 + b'"}', "unknown command"),
        ("add-port port a string", b'{"cmd":"add-port","port":"x"}', "add-port"),
        ("add-port long name",
         b'{"cmd":"add-port","port":{"name":"' + b"n" * 100000 + b'","type":"tap"}}',
         "must be 1-32 of"),
        ("del-port name null", b'{"cmd":"del-port","name":null}', "del-port: missing"),
        ("garbage", b"\x00\x01\x02 not json at all", "bad JSON: "),
    ]


def check_error(name, reply, expect):
    if reply is None:
        raise HarnessError("%s: vnetd closed the connection instead of answering" % name)
    err = reply.get("error", "")
    if reply.get("ok") is not False or not isinstance(err, str):
        raise HarnessError("%s: not an error reply: %.300s" % (name, reply))
    if expect not in err:
        raise HarnessError("%s: error %r does not say %r" % (name, err[:300], expect))
    if len(err) > MAX_ERROR:
        raise HarnessError("%s: error text of %d bytes (at most %d)" % (name, len(err), MAX_ERROR))


def part_requests(path):
    for name, data, expect in hostile_requests():
        c = Client(path)
        try:
            c.send(data + b"\n")
            check_error(name, c.line(), expect)
            c.send(b'{"cmd":"version"}\n')  # the connection goes on
            r = c.line()
            if not r or r.get("ok") is not True:
                raise HarnessError("%s: the next request on that connection got %s" % (name, r))
        finally:
            c.close()
    # Oversized: an error line, then the connection is closed.
    c = Client(path)
    try:
        try:
            c.send(b"[" + b" " * (2 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass  # vnetd closed while we were still writing: the reply is already there
        check_error("oversized line", c.line(), "request too long")
        if not c.closed_by_peer(5):
            raise HarnessError("oversized line: the connection stayed open")
    finally:
        c.close()
    return len(hostile_requests()) + 1


def hostile_configs():
    n = DEEP
    return [
        ("deep arrays", "[vnetd]\nx = " + "[" * n + "]" * n + "\n", "line 2: nested deeper"),
        ("deep inline tables", "a = " + "{b = " * n + "1" + "}" * n + "\n", "line 1: nested"),
        ("deep dotted key", "a" + ".a" * n + " = 1\n", "line 1: nested deeper"),
        ("deep table header", "[a" + ".a" * n + "]\n", "line 1: nested deeper"),
        ("integer out of range", "[fdb]\nsize = 123456789012345678901234567890\n", "line 2"),
        ("float out of range", "[fdb]\nage = 1e400\n", "line 2"),
        ("2 MiB", "#" * (2 << 20), "larger than 1048576 bytes"),
        ("wrong types", "[vnetd]\ncontrol = [1]\n", "field 'control' must be a string"),
        ("port not a table", "port = [1, 2]\n", "a port must be a table"),
        ("unterminated", "[[port]]\nname = \"a\n", "line 2: unterminated string"),
    ]


def part_configs(s):
    binary = find_program(s.build_dir, "vnetd")
    for name, text, expect in hostile_configs():
        path = s.path("hostile.toml")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([binary, "--config", path, "--control", s.path("cfg.ctl")],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 2:
            raise HarnessError("config %s: vnetd exited with status %d (expected 2); stderr: %.500s"
                               % (name, r.returncode, r.stderr))
        if expect not in r.stderr or len(r.stderr) > 2000:
            raise HarnessError("config %s: stderr does not say %r (or is too long): %.500s"
                               % (name, expect, r.stderr))
        if os.path.exists(s.path("cfg.ctl")):
            raise HarnessError("config %s: vnetd left a control socket behind" % name)
    log("%d hostile configuration files refused (status 2, line or field named)"
        % len(hostile_configs()))


def timed_vnetctl(vnetd, *args):
    argv = [vnetd.vnetctl_binary, "--control", vnetd.control, "--json", "--timeout", "5000"]
    t0 = time.monotonic()
    r = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=10)
    took = time.monotonic() - t0
    if r.returncode != 0 or not json.loads(r.stdout).get("ok"):
        raise HarnessError("vnetctl %s failed: %s %s" % (args, r.stdout[:300], r.stderr[:300]))
    return took


def part_lockout(vnetd, still_forwarding):
    trickle = Client(vnetd.control)
    # One write: once the first reply is here, vnetd has read the partial line as well
    # (the trickle client is busy, not idle, from then on).
    trickle.send(b'{"cmd":"version"}\n{"cmd":')
    r = trickle.line()
    if not r or not r.get("ok"):
        raise HarnessError("trickle client: version request got %s" % r)
    idle = [Client(vnetd.control) for _ in range(IDLE_CLIENTS)]
    trickle.send(b'"')
    took = timed_vnetctl(vnetd, "ports")
    log("  vnetctl ports with %d idle clients and a trickle client: %.3f s"
        % (IDLE_CLIENTS, took))
    if took > 1.0:
        raise HarnessError("vnetctl took %.2f s with %d idle connections" % (took, IDLE_CLIENTS))
    still_forwarding("%d idle connections were opened" % IDLE_CLIENTS)
    # The trickle client: one byte every 50 ms, never a newline, until vnetd ends it.
    t0 = time.monotonic()
    reply = None
    while time.monotonic() - t0 < REQUEST_S + 5:
        try:
            trickle.send(b"v")
        except (BrokenPipeError, ConnectionResetError):
            break
        r, _, _ = select.select([trickle.sock], [], [], 0.05)
        if r:
            reply = trickle.line(timeout=1)
            break
    waited = time.monotonic() - t0
    check_error("trickle client", reply, "request timed out")
    if not trickle.closed_by_peer(5):
        raise HarnessError("trickle client: not closed after its timeout")
    log("  trickle client timed out after %.1f s" % waited)
    trickle.close()
    # The idle ones (those not evicted) are closed after IDLE_S.
    t0 = time.monotonic()
    for i, c in enumerate(idle):
        if not c.closed_by_peer(max(0.1, IDLE_S + 5 - (time.monotonic() - t0))):
            raise HarnessError("idle client %d still open %.1f s later" % (i, IDLE_S + 5))
        c.close()
    log("  all %d idle clients closed by vnetd within %.1f s" % (IDLE_CLIENTS,
                                                               time.monotonic() - t0))


def body(s, args):
    part_configs(s)
    socks = {p: s.path("%s.sock" % p) for p in "bc"}
    vnetd = Vnetd(s, [PortSpec(socks[p], name=p) for p in "bc"], log_level="info",
                  extra_args=["--control-idle-timeout", str(IDLE_S),
                              "--control-request-timeout", str(REQUEST_S)])
    vnetd.start()
    pid = vnetd.proc.pid
    check_rss = sanitizer_of(pid) is None
    start_b_to_c(s, vnetd, find_program(s.build_dir, "vnet-traffic"), socks)

    def delivered():
        return vnetd.counters()["c"]["tx_packets"]

    def still_forwarding(what):
        vnetd.check_alive()
        d0 = delivered()
        wait_until(lambda: delivered() > d0 + 1000, 5, interval=0.05,
                   what="b -> c still forwarded after %s" % what)

    baseline = None
    log_at = vnetd.proc.log_size()
    for rnd in range(ROUNDS):
        d0 = delivered()
        n = part_requests(vnetd.control)
        still_forwarding("%d hostile requests" % n)
        part_lockout(vnetd, still_forwarding)
        still_forwarding("the lockout attempt")
        # Measured with exactly one control client, ours, connected (the others, vnetctl's
        # included, closed by vnetd): the same state every round.
        own = Client(vnetd.control)

        def alone():
            own.send(b'{"cmd":"counters"}\n')
            return own.line()["control"]["clients"] == 1
        wait_until(alone, 10, interval=0.1, what="the other control clients gone")
        fds, rss = proc_status(pid)
        log("round %d: b -> c +%d frames; vnetd fds %d, RSS %d KiB" % (rnd, delivered() - d0,
                                                                        fds, rss))
        if baseline is None:
            baseline = (fds, rss)
        else:
            check_flat(pid, baseline, "round %d (baseline: round 0)" % rnd, check_rss)
        own.close()

    ctl = vnetd.vnetctl("counters")["control"]
    log("control counters: %s" % json.dumps(ctl, sort_keys=True))
    expect = {"bad_json": 6, "too_deep": 4, "too_long": 1, "bad_requests": 0,
              "evicted": IDLE_CLIENTS - 64, "request_timeouts": 1, "idle_timeouts": 1}
    for k, per_round in expect.items():
        if ctl.get(k, 0) < per_round * ROUNDS:
            raise HarnessError("control counter %s = %s, expected at least %d"
                               % (k, ctl.get(k), per_round * ROUNDS))
    new_log = vnetd.proc.read_log(log_at)
    for what in ("refused a request", "to make room for a new one",
                 "has not finished its request line", "request longer than"):
        if what not in new_log:
            raise HarnessError("vnetd logged nothing saying %r" % what)
    vnetd.stop_ok()


if __name__ == "__main__":
    run_test("control_hostile", body, [lambda a: require_root(), require_vnetd, require_traffic])
