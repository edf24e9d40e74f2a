#!/usr/bin/env python3
"""Switch limits: a MAC flood from one port, per-port FDB limits, port security.

vnetd (FDB of 4096 entries, at most 1024 per port) with three vhost-user ports; every
front end is vnet-traffic.  B and C learn their MACs (announcements, then unicast
traffic both ways).  Then A sends 1,000,000 frames, each from a new random source MAC
(`--random-src-mac`), to a MAC nobody has (flooded).  Asserted:
  - vnetd is up and counted all 1,000,000 frames from A;
  - B's and C's FDB entries are still there, on their ports (`vnetctl fdb`), and A holds
    at most the per-port limit; the FDB never exceeds its size; the limit and eviction
    counters moved;
  - afterwards B -> C is still unicast: exactly N frames reach C, and A receives none
    of them (it would if C's entry had been evicted and the frames flooded).
Port security: `vnetctl set-port B --allowed-macs MAC_B`; frames from B with another
source MAC (a second vnet-traffic on B's socket is not possible, so B's own generator
is restarted with `--mac` of a stranger) are all dropped and counted as
`port_security`, frames from MAC_B still go through; `--allowed-macs any` lifts it.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd, find_program, require_vnetd  # noqa: E402

FLOOD = 1000000
N = 20000
FDB_SIZE, PORT_LIMIT = 4096, 1024
MAC_A, MAC_B, MAC_C = "02:00:00:00:aa:01", "02:00:00:00:bb:01", "02:00:00:00:cc:01"
STRANGER = "02:00:00:00:ee:01"
NOBODY = "02:00:00:00:99:99"


def fdb_of(vnetd):
    """{mac: port} of every FDB entry."""
    return {e["mac"]: e["port"] for e in vnetd.vnetctl("fdb")["fdb"]}


def body(s, args):
    traffic = find_program(s.build_dir, "vnet-traffic")
    socks = {p: s.path("%s.sock" % p) for p in "abc"}
    vnetd = Vnetd(s, [PortSpec(socks[p], name=p) for p in "abc"],
                  extra_args=["--fdb-size", str(FDB_SIZE), "--fdb-port-limit", str(PORT_LIMIT)])
    vnetd.start()
    cpu = cpu_plan()[1]
    common = ["--notify", "--cpu", cpu, "--log-level", "warn", "--timeout", 60]

    def spawn(name, port, mode, mac, *extra):
        return s.spawn(name, [traffic, "--socket", socks[port], "--mode", mode, "--mac", mac]
                       + common + list(extra))

    def finish(proc):
        if proc.wait(90) is None:
            raise HarnessError("%s still running after 90 s:\n%s" % (proc.name, proc.log_tail()))
        res = result_of(proc)
        if proc.returncode != 0:
            raise HarnessError("%s failed (status %s): %s" % (proc.name, proc.returncode, res))
        return res

    # C receives; A and B are receivers too (every front end keeps its RX ring full), so
    # a frame flooded to them is counted by vnetd as delivered to their port.
    # C's ring holds more than N buffers, so B's N frames fit in it even if C is kept off
    # the CPU the whole time: a lossless count must not depend on scheduling.
    c = spawn("c", "c", "rx", MAC_C, "--count", N, "--queue-size", 32768)
    a_rx = spawn("a-rx", "a", "rx", MAC_A, "--duration", 600)
    wait_until(lambda: vnetd.counters()["c"]["rx_packets"] >= 1
               and vnetd.counters()["a"]["rx_packets"] >= 1, 20,
               what="announcements of a and c")
    fdb = fdb_of(vnetd)
    if fdb.get(MAC_C) != "c":
        raise HarnessError("C's MAC not learned on c: %s" % fdb)

    # The flood: A's receiver goes, a sender with random source MACs takes the socket.
    a_rx.stop()
    wait_until(lambda: not vnetd.ports_info()["a"]["connected"], 10, what="a disconnected")
    t0 = time.monotonic()
    flood = spawn("a-flood", "a", "tx", MAC_A, "--count", FLOOD, "--dst-mac", NOBODY,
                  "--random-src-mac", "--queue-size", 1024)
    fr = finish(flood)
    log("flood: %d frames from random source MACs in %.1f s (%.2f Mpps at the sender)"
        % (fr["tx"]["packets"], time.monotonic() - t0, fr["tx"]["mpps"]))
    vnetd.check_alive()
    counters = vnetd.vnetctl("counters")
    w = counters["worker"]
    got_a = counters["counters"]["a"]["rx_packets"]
    if got_a < FLOOD:
        raise HarnessError("vnetd counted %d frames from a, the flood had %d" % (got_a, FLOOD))
    fdb_list = vnetd.vnetctl("fdb")["fdb"]
    fdb = {e["mac"]: e["port"] for e in fdb_list}
    on_a = sum(1 for e in fdb_list if e["port"] == "a")
    log("after the flood: FDB %d entries (size %d, capacity %d), %d on a (limit %d); "
        "learned %d, evicted %d, refused %d, limited %d, full %d"
        % (len(fdb_list), w["fdb_size"], w["fdb_capacity"], on_a, w["fdb_per_port_limit"],
           w["fdb_learned"], w["fdb_evicted"], w["fdb_refused"], w["fdb_limited"],
           w["fdb_full"]))
    if fdb.get(MAC_C) != "c":
        raise HarnessError("C's entry did not survive the flood: %s" % fdb.get(MAC_C))
    if w["fdb_capacity"] != FDB_SIZE or w["fdb_per_port_limit"] != PORT_LIMIT:
        raise HarnessError("vnetd reports capacity %d, per-port limit %d; started with %d, %d"
                           % (w["fdb_capacity"], w["fdb_per_port_limit"], FDB_SIZE, PORT_LIMIT))
    if len(fdb_list) > FDB_SIZE or w["fdb_size"] > FDB_SIZE:
        raise HarnessError("FDB holds %d entries, more than its size %d" % (len(fdb_list), FDB_SIZE))
    if on_a > PORT_LIMIT:
        raise HarnessError("a holds %d FDB entries, more than the per-port limit %d"
                           % (on_a, PORT_LIMIT))
    if on_a < PORT_LIMIT // 2:
        raise HarnessError("a holds only %d entries after 1M source MACs (limit %d): "
                           "learning stopped?" % (on_a, PORT_LIMIT))
    if w["fdb_limited"] + w["fdb_refused"] == 0:
        raise HarnessError("neither the per-port limit nor eviction refused a key: %s" % w)

    # B -> C after the flood: unicast, all of it, nothing flooded to a.
    a_rx = spawn("a-rx2", "a", "rx", MAC_A, "--duration", 600)
    wait_until(lambda: vnetd.ports_info()["a"]["connected"], 10, what="a's receiver connected")
    a_before = vnetd.counters()["a"]["tx_packets"]
    b = spawn("b", "b", "tx", MAC_B, "--count", N, "--dst-mac", MAC_C, "--rate", 200000)
    finish(b)
    cr = finish(c)
    if cr["rx"]["packets"] != N or cr["rx"]["bad_packets"]:
        raise HarnessError("C got %d of %d frames from B (%d bad)"
                           % (cr["rx"]["packets"], N, cr["rx"]["bad_packets"]))
    if fdb_of(vnetd).get(MAC_B) != "b":
        raise HarnessError("B's MAC not learned on b")
    a_got = vnetd.counters()["a"]["tx_packets"] - a_before
    if a_got > 1:  # B's announcement is a broadcast
        raise HarnessError("a received %d frames while B sent to C: C's entry was lost" % a_got)
    log("B -> C after the flood: %d of %d frames, unicast (a got %d: the announcement)"
        % (cr["rx"]["packets"], N, a_got))

    # Port security on b.
    vnetd.vnetctl("set-port", "b", "--allowed-macs", MAC_B)
    info = vnetd.ports_info()["b"]
    if info.get("allowed_macs") != [MAC_B]:
        raise HarnessError("vnetctl ports shows allowed_macs %s" % info.get("allowed_macs"))
    c = spawn("c2", "c", "rx", MAC_C, "--duration", 600, "--queue-size", 8192)
    wait_until(lambda: vnetd.ports_info()["c"]["connected"], 10, what="c's receiver connected")
    d0 = vnetd.counters()["b"]["drops"]["port_security"]
    stranger = spawn("b-stranger", "b", "tx", STRANGER, "--count", 1000, "--dst-mac", MAC_C)
    sr = finish(stranger)
    d1 = vnetd.counters()["b"]["drops"]["port_security"]
    # 1000 frames and the announcement, all from the stranger's MAC.
    want = sr["tx"]["packets"] + sr["announce_packets"]
    if d1 - d0 != want:
        raise HarnessError("port_security drops on b went %d -> %d, expected +%d" % (d0, d1, want))
    if STRANGER in fdb_of(vnetd):
        raise HarnessError("the stranger's MAC was learned despite port security")
    c_before = vnetd.counters()["c"]["tx_packets"]
    finish(spawn("b-allowed", "b", "tx", MAC_B, "--count", 1000, "--dst-mac", MAC_C,
                 "--rate", 200000))
    wait_until(lambda: vnetd.counters()["c"]["tx_packets"] - c_before >= 1000, 10,
               what="MAC_B's frames delivered to c under port security")
    vnetd.vnetctl("set-port", "b", "--allowed-macs", "any")
    if "allowed_macs" in vnetd.ports_info()["b"]:
        raise HarnessError("allowed_macs still shown after --allowed-macs any")
    log("port security: %d frames from %s dropped as port_security, %s forwarded; lifted"
        % (want, STRANGER, MAC_B))
    c.stop()
    a_rx.stop()
    rc = vnetd.stop()
    if rc != 0:
        raise HarnessError("vnetd exited with status %s" % rc)


if __name__ == "__main__":
    run_test("mac_flood", body, [lambda a: require_root(), require_vnetd, require_traffic])
