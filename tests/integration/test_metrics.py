#!/usr/bin/env python3
"""Prometheus metrics: vnetd's /metrics endpoint checked by promtool and scraped by a
real Prometheus server.

vnetd with three vhost-user ports (a, b, c; vnet-traffic front ends) and
`--metrics-listen 127.0.0.1:0` (the kernel picks the port; `vnetctl counters` says
which).  B sends N frames to C.  Asserted:
  - GET /metrics answers 200 with the text format (version 0.0.4), and its per-port
    packets and bytes, drops by reason, worker and FDB series equal `vnetctl --json
    counters` (read after the traffic stopped, so both are the same numbers);
  - `promtool check metrics` accepts it (names, types, HELP, _total suffixes);
  - other paths and methods get 404 and 405, a slow client does not hold the control
    thread (`vnetctl ports` answers meanwhile), and vnetd counts the refusals;
  - a real `prometheus` on loopback, scraping vnetd every second, reports the target up
    (`up == 1`) and the same vnet_port_rx_packets_total for b as vnetctl, through its
    HTTP API (bounded wait, clear failure).
The prometheus process is stopped by its PID and its data directory deleted.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_tools, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd, find_program, require_vnetd  # noqa: E402

N = 5000
MAC_B, MAC_C = "02:00:00:00:bb:01", "02:00:00:00:cc:01"


def http_get(url, timeout=5.0, method="GET"):
    """(status, content type, body) of one request."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} of a text-format page."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        labels = {}
        if "{" in name_labels:
            name, rest = name_labels.split("{", 1)
            for part in rest.rstrip("}").split(","):
                k, v = part.split("=", 1)
                labels[k] = json.loads(v)  # the values here have no escapes json refuses
        else:
            name = name_labels
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def metric(m, name, **labels):
    key = (name, frozenset(labels.items()))
    if key not in m:
        raise HarnessError("/metrics has no %s%s" % (name, labels))
    return m[key]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_against_vnetctl(m, counters, workers):
    for port, c in counters["counters"].items():
        for key in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes"):
            got = metric(m, "vnet_port_%s_total" % key, port=port)
            if got != c[key]:
                raise HarnessError("port %s %s: /metrics %d, vnetctl %d" % (port, key, got, c[key]))
        for reason, n in c["drops"].items():
            got = metric(m, "vnet_port_drops_total", port=port, reason=reason)
            if got != n:
                raise HarnessError("port %s drops %s: /metrics %d, vnetctl %d"
                                   % (port, reason, got, n))
    w = counters["worker"]
    for name, key in (("vnet_fdb_entries", "fdb_size"), ("vnet_fdb_capacity", "fdb_capacity"),
                      ("vnet_fdb_learned_total", "fdb_learned"),
                      ("vnet_fdb_evicted_total", "fdb_evicted")):
        if metric(m, name) != w[key]:
            raise HarnessError("%s: /metrics %d, vnetctl %d" % (name, metric(m, name), w[key]))
    for wk in workers["workers"]:
        got = metric(m, "vnet_worker_packets_total", worker=str(wk["worker"]))
        if got != wk["packets"]:
            raise HarnessError("worker %d packets: /metrics %d, vnetctl %d"
                               % (wk["worker"], got, wk["packets"]))
        # An idle worker may wake and sleep again between the two reads (/metrics first).
        for name, key in (("vnet_worker_sleeps_total", "sleeps"),
                          ("vnet_worker_poll_rounds_total", "loops"),
                          ("vnet_worker_busy_cycles_total", "busy_cycles")):
            got = metric(m, name, worker=str(wk["worker"]))
            if not 0 < got <= wk[key]:
                raise HarnessError("worker %d %s: /metrics %d, vnetctl afterwards %d"
                                   % (wk["worker"], key, got, wk[key]))


def body(s, args):
    traffic = find_program(s.build_dir, "vnet-traffic")
    socks = {p: s.path("%s.sock" % p) for p in "abc"}
    vnetd = Vnetd(s, [PortSpec(socks[p], name=p) for p in "abc"],
                  extra_args=["--metrics-listen", "127.0.0.1:0"])
    vnetd.start()
    mport = vnetd.vnetctl("counters")["metrics"]["port"]
    base = "http://127.0.0.1:%d" % mport
    log("metrics on %s/metrics" % base)

    # Traffic: B -> C, N frames, all counted.
    common = ["--notify", "--cpu", cpu_plan()[1], "--log-level", "warn", "--timeout", 60]
    c = s.spawn("c", [traffic, "--socket", socks["c"], "--mode", "rx", "--mac", MAC_C,
                      "--count", N, "--queue-size", 8192] + common)
    wait_until(lambda: vnetd.counters()["c"]["rx_packets"] >= 1, 20, what="c's announcement")
    b = s.spawn("b", [traffic, "--socket", socks["b"], "--mode", "tx", "--mac", MAC_B,
                      "--count", N, "--dst-mac", MAC_C, "--rate", 100000] + common)
    for proc in (b, c):
        if proc.wait(90) is None or proc.returncode != 0:
            raise HarnessError("%s failed: %s" % (proc.name, proc.log_tail()))
    if result_of(c)["rx"]["packets"] != N:
        raise HarnessError("c got %s of %d frames" % (result_of(c)["rx"]["packets"], N))

    # /metrics against vnetctl, traffic stopped: the same numbers.
    status, ctype, text = http_get(base + "/metrics")
    if status != 200 or not ctype.startswith("text/plain; version=0.0.4"):
        raise HarnessError("GET /metrics: %d %r" % (status, ctype))
    counters, workers = vnetd.vnetctl("counters"), vnetd.vnetctl("workers")
    m = parse_metrics(text)
    check_against_vnetctl(m, counters, workers)
    if metric(m, "vnet_port_rx_packets_total", port="b") < N:
        raise HarnessError("b's rx_packets %d < %d" % (metric(m, "vnet_port_rx_packets_total",
                                                              port="b"), N))
    # Per queue: b's queues add up to its port total and match vnetctl's per-queue list.
    b_info = vnetd.ports_info()["b"]
    per_queue = 0
    for q in b_info.get("queues", []):
        v = metric(m, "vnet_port_queue_rx_packets_total", port="b", queue=str(q["queue"]))
        if v != q["rx_packets"]:
            raise HarnessError("b queue %s rx_packets: /metrics %d, vnetctl %d"
                               % (q["queue"], v, q["rx_packets"]))
        per_queue += v
    if per_queue != metric(m, "vnet_port_rx_packets_total", port="b"):
        raise HarnessError("b's queues add up to %d, its total is %d"
                           % (per_queue, metric(m, "vnet_port_rx_packets_total", port="b")))
    log("/metrics: %d series, %d bytes, equal to vnetctl's counters" % (len(m), len(text)))

    # promtool.
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
        raise HarnessError("promtool check metrics (status %d): %s %s"
                           % (r.returncode, r.stdout[:2000], r.stderr[:2000]))
    log("promtool check metrics: clean")

    # Refusals, and a slow client that does not hold the control thread.
    for path, method, want in (("/", "GET", 404), ("/metrics", "POST", 405)):
        got = http_get(base + path, method=method)[0]
        if got != want:
            raise HarnessError("%s %s: %d, want %d" % (method, path, got, want))
    slow = socket.create_connection(("127.0.0.1", mport))
    slow.sendall(b"GET /metr")
    t0 = time.monotonic()
    vnetd.vnetctl("ports")
    if time.monotonic() - t0 > 2:
        raise HarnessError("vnetctl took %.1f s with a slow metrics client"
                           % (time.monotonic() - t0))
    slow.close()
    mc = vnetd.vnetctl("counters")["metrics"]
    if mc["bad_requests"] < 2:
        raise HarnessError("metrics refusals not counted: %s" % mc)

    # A real Prometheus server scraping vnetd.
    ppath = shutil.which("prometheus")
    pport = free_port()
    data = s.path("prometheus-data")
    s.cleanup.push("prometheus data", shutil.rmtree, data, True)
    cfg = s.path("prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: vnetd\n    static_configs:\n"
                "      - targets: ['127.0.0.1:%d']\n" % mport)
    prom = s.spawn("prometheus", [ppath, "--config.file=" + cfg, "--storage.tsdb.path=" + data,
                                  "--web.listen-address=127.0.0.1:%d" % pport,
                                  "--log.level=warn"])
    api = "http://127.0.0.1:%d/api/v1/query?query=" % pport

    def query(q):
        try:
            st, _, body_text = http_get(api + urllib.parse.quote(q), timeout=2)
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            return None
        if st != 200:
            return None
        res = json.loads(body_text)["data"]["result"]
        return float(res[0]["value"][1]) if res else None

    t0 = time.monotonic()
    try:
        wait_until(lambda: query('up{job="vnetd"}') == 1.0, 60, interval=0.5,
                   what="prometheus reporting vnetd up")
    except HarnessError:
        if not prom.alive():
            raise HarnessError("prometheus exited (status %s): %s"
                               % (prom.returncode, prom.log_tail()))
        raise
    want = vnetd.counters()["b"]["rx_packets"]
    wait_until(lambda: query('vnet_port_rx_packets_total{port="b"}') == want, 30, interval=0.5,
               what="prometheus reporting b's rx_packets = %d" % want)
    log("prometheus scraped vnetd: up == 1, vnet_port_rx_packets_total{port=\"b\"} == %d "
        "(%.1f s)" % (want, time.monotonic() - t0))
    prom.stop()
    shutil.rmtree(data, ignore_errors=True)
    vnetd.check_alive()
    vnetd.stop_ok()


if __name__ == "__main__":
    run_test("test_metrics", body,
             prerequisites=[require_vnetd, require_traffic,
                            lambda a: require_tools("promtool", "prometheus")])
