#!/usr/bin/env python3
"""Large FDB dumps: streamed in bounded chunks, filtered on the server side.

vnetd with an FDB of 1,048,576 entries and no per-port limit; port a's vnet-traffic
sends frames from ENTRIES random source MACs (`--random-src-mac`), which fill the
table.  Then `vnetctl --json fdb` dumps it.  Asserted:
  - the dump holds every entry vnetd counts (`fdb_size`), each (MAC, VLAN) once, and
    the output is one valid JSON object;
  - vnetd's RSS grows by less than 32 MiB during the dump (it grew by 640 MiB when the
    whole table went into one reply) and vnetctl's peak RSS stays under 64 MiB (not
    asserted under a sanitizer, whose quarantine keeps freed memory);
  - another control client is answered during the dump: requests sent while it runs
    are answered within 1 s each (the dump is many short requests, not one long one);
  - filters: --port, --vlan, --mac and --count return exactly the matching entries,
    and an unknown port is an error (status 1, the reason on stderr).
"""

import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import (PortSpec, Vnetd, find_program, require_vnetd,  # noqa: E402
                                sanitizer_of)

FDB_SIZE = 1 << 20
FRAMES = 1000000
MAC_B = "02:00:00:00:bb:01"
NOBODY = "02:00:00:00:99:99"
RSS_GROWTH_MAX = 32 << 20
VNETCTL_RSS_MAX = 64 << 20


def rss_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise HarnessError("no VmRSS for pid %d" % pid)


# vnetctl run by a small Python parent whose only child it is: the parent prints the
# child's peak RSS (getrusage RUSAGE_CHILDREN) on its stderr.
PEAK_WRAPPER = ("import resource, subprocess, sys\n"
                "r = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1], 'w'))\n"
                "sys.stderr.write('maxrss_kib=%d\\n' % "
                "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
                "sys.exit(r)\n")


def body(s, args):
    traffic = find_program(s.build_dir, "vnet-traffic")
    vnetctl = find_program(s.build_dir, "vnetctl")
    socks = {p: s.path("%s.sock" % p) for p in "ab"}
    vnetd = Vnetd(s, [PortSpec(socks[p], name=p) for p in "ab"],
                  extra_args=["--fdb-size", str(FDB_SIZE)])
    vnetd.start()
    common = ["--notify", "--cpu", cpu_plan()[1], "--log-level", "warn", "--timeout", 120]

    # b announces its MAC (one entry on b), then a fills the table.
    b = s.spawn("b", [traffic, "--socket", socks["b"], "--mode", "rx", "--mac", MAC_B,
                      "--duration", 600] + common)
    wait_until(lambda: vnetd.vnetctl("counters")["worker"]["fdb_size"] >= 1, 20,
               what="b's announcement learned")
    t0 = time.monotonic()
    flood = s.spawn("a", [traffic, "--socket", socks["a"], "--mode", "tx", "--mac",
                          "02:00:00:00:aa:01", "--count", FRAMES, "--dst-mac", NOBODY,
                          "--random-src-mac", "--queue-size", 1024] + common)
    if flood.wait(120) is None or flood.returncode != 0:
        raise HarnessError("the flood failed: %s" % flood.log_tail())
    log("flood: %s" % result_of(flood)["tx"])
    w = vnetd.vnetctl("counters")["worker"]
    size = w["fdb_size"]
    log("FDB filled in %.1f s: %d entries (capacity %d, learned %d, refused %d)"
        % (time.monotonic() - t0, size, w["fdb_capacity"], w["fdb_learned"], w["fdb_refused"]))
    if size < FDB_SIZE // 2:
        raise HarnessError("only %d FDB entries after %d random MACs" % (size, FRAMES))

    # The dump, with vnetd's RSS sampled and another client asking meanwhile.
    rss0 = rss_of(vnetd.proc.pid)
    done = threading.Event()
    peak = [rss0]
    latencies = []
    errors = []

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], rss_of(vnetd.proc.pid))
            time.sleep(0.02)

    def other_client():
        try:
            conn = vnetd.connect_control()
            while not done.is_set():
                t = time.monotonic()
                conn.request("version")
                latencies.append(time.monotonic() - t)
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=sampler), threading.Thread(target=other_client)]
    for t in threads:
        t.start()
    out = s.path("fdb.json")
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-c", PEAK_WRAPPER, out, vnetctl, "--control",
                            vnetd.control, "--json", "fdb"], capture_output=True, text=True,
                           timeout=300)
    finally:
        done.set()
        for t in threads:
            t.join()
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise HarnessError("vnetctl fdb failed (status %d): %s" % (r.returncode, r.stderr[-2000:]))
    vnetctl_rss = int(r.stderr.split("maxrss_kib=")[1].split()[0]) * 1024
    with open(out) as f:
        doc = json.load(f)
    os.unlink(out)
    entries = doc["fdb"]
    keys = {(e["mac"], e["vlan"]) for e in entries}
    growth = peak[0] - rss0
    log("vnetctl --json fdb: %d entries in %.1f s; vnetd RSS %d MiB, +%.1f MiB at most during "
        "the dump; vnetctl peak RSS %.1f MiB; another client: %d requests answered, slowest "
        "%.0f ms" % (len(entries), took, rss0 >> 20, growth / 2**20, vnetctl_rss / 2**20,
                     len(latencies), 1000 * max(latencies or [0])))
    if not doc.get("ok"):
        raise HarnessError("dump not ok: %s" % str(doc)[:500])
    if len(entries) != size or len(keys) != size:
        raise HarnessError("dump has %d entries (%d distinct), vnetd counts %d"
                           % (len(entries), len(keys), size))
    # Under a sanitizer freed memory sits in quarantine: RSS says nothing about bounds.
    check_rss = sanitizer_of(vnetd.proc.pid) is None
    if not check_rss:
        log("vnetd runs under %s: RSS bounds not asserted" % sanitizer_of(vnetd.proc.pid))
    if check_rss and growth > RSS_GROWTH_MAX:
        raise HarnessError("vnetd's RSS grew by %d MiB during the dump" % (growth >> 20))
    if check_rss and vnetctl_rss > VNETCTL_RSS_MAX:
        raise HarnessError("vnetctl's peak RSS was %d MiB" % (vnetctl_rss >> 20))
    if errors:
        raise HarnessError("the other control client failed: %s" % errors[0])
    if len(latencies) < 3 or max(latencies) > 1.0:
        raise HarnessError("the other client during the dump: %d requests, slowest %.2f s"
                           % (len(latencies), max(latencies or [0])))
    del entries, keys, doc

    # Filters.
    on_b = vnetd.vnetctl("fdb", "--port", "b")["fdb"]
    if [(e["mac"], e["port"]) for e in on_b] != [(MAC_B, "b")]:
        raise HarnessError("fdb --port b: %s" % on_b[:5])
    by_mac = vnetd.vnetctl("fdb", "--mac", MAC_B.upper(), "--vlan", "0")["fdb"]
    if [e["mac"] for e in by_mac] != [MAC_B]:
        raise HarnessError("fdb --mac %s --vlan 0: %s" % (MAC_B, by_mac[:5]))
    if vnetd.vnetctl("fdb", "--vlan", "7")["fdb"]:
        raise HarnessError("fdb --vlan 7 is not empty")
    some = vnetd.vnetctl("fdb", "--port", "a", "--count", "2500")["fdb"]
    if len(some) != 2500 or any(e["port"] != "a" for e in some):
        raise HarnessError("fdb --port a --count 2500: %d entries, ports %s"
                           % (len(some), {e["port"] for e in some}))
    bad = subprocess.run([vnetctl, "--control", vnetd.control, "fdb", "--port", "nosuch"],
                         capture_output=True, text=True, timeout=10)
    if bad.returncode != 1 or "no port named nosuch" not in bad.stderr:
        raise HarnessError("fdb --port nosuch: status %d, %r" % (bad.returncode, bad.stderr))
    log("filters: --port, --mac, --vlan, --count and an unknown port as expected")
    b.stop()
    vnetd.stop_ok()


if __name__ == "__main__":
    run_test("test_fdb_dump", body, prerequisites=[require_vnetd, require_traffic])
