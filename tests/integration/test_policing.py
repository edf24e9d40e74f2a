#!/usr/bin/env python3
"""Per-port ingress policing and storm control against a hostile front end.

vnetd with three vhost-user ports s, b, c; a fourth, h, is added with `vnetctl add-port
... --ingress-rate 20kpps`.  Every front end is vnet-traffic: s is a sink, b and c
exchange a paced flow (one process, `--pair-socket`) from start to end, and h is the
hostile one: it sends 64-byte frames as fast as it can.  Phases, each measured with
vnetd's counters over a window of a few seconds (rates = counter deltas / the time
between the two snapshots):
  1. h -> s unicast policed at 20 kpps: s gets 20 kpps (within TOLERANCE), h's other
     frames are counted as `policed` (h's rx = s's tx + policed), h offered several
     times more;
  2. `set-port h --ingress-rate 10M --ingress-burst 2M`: s gets 10 Mbit/s of frames;
  3. `--ingress-rate off`: s gets far more than either limit (the policer is gone);
  3b. h sends TSO frames (`vnet-traffic --gso-size`) of 64 segments at 20 kpps: s gets
     20,000 segments a second (a frame costs its segments), h's other frames policed;
  4. h sends broadcasts, `--storm broadcast=5000`: every other port gets 5 kpps of them,
     the rest are counted as `storm_broadcast`;
  5. h sends to an unknown MAC, `--storm unknown-unicast=3k`: 3 kpps flooded, the rest
     `storm_unknown_unicast`.
Throughout, b and c are unaffected: vnetd takes their frames in every window (at least
half their paced rate: their generator shares a CPU with h), counts no drop on them,
and at the end each has received what the other sent (less what was in flight when the
pair stopped).
`vnetctl ports` shows the settings (JSON and the table); a bad value is refused with an
error naming the field and changes nothing.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.testpmd import cpu_plan  # noqa: E402
from vnet_harness.traffic import require_traffic, result_of  # noqa: E402
from vnet_harness.vnetd import PortSpec, Vnetd, find_program, require_vnetd  # noqa: E402

MAC = {"h": "02:00:00:00:d0:01", "s": "02:00:00:00:d0:02", "b": "02:00:00:00:d0:03",
       "c": "02:00:00:00:d0:04"}
NOBODY = "02:00:00:00:d0:99"
BCAST = "ff:ff:ff:ff:ff:ff"
PAIR_RATE = 10000  # frames per second each way between b and c
WINDOW = 3.0  # seconds per measured window
TOLERANCE = 0.15  # delivered rate within +-15 % of the configured one
SETTLE = 0.3  # after a change, before the window opens (the bucket starts full)
TSO_MSS = 500
TSO_SEGMENTS = 64
TSO_SIZE = 14 + 20 + 20 + TSO_MSS * TSO_SEGMENTS  # Ethernet, IPv4, TCP, payload


def drop_sum(c):
    return sum(c["drops"].values())


class Policing:
    def __init__(self, s):
        self.s = s
        self.traffic = find_program(s.build_dir, "vnet-traffic")
        self.socks = {p: s.path("%s.sock" % p) for p in "hsbc"}
        self.vnetd = Vnetd(s, [PortSpec(self.socks[p], name=p) for p in "sbc"])
        self.cpu = cpu_plan()[1]

    def spawn(self, name, port, mode, *extra):
        return self.s.spawn(name, [self.traffic, "--socket", self.socks[port], "--mode", mode,
                                   "--mac", MAC[port], "--cpu", self.cpu, "--log-level", "warn"]
                            + [str(x) for x in extra])

    def snap(self):
        """(time, counters): the time is the midpoint of the request."""
        t0 = time.monotonic()
        doc = self.vnetd.vnetctl("counters")
        t1 = time.monotonic()
        return (t0 + t1) / 2, doc["counters"]

    def window(self, what):
        """Counter deltas over WINDOW seconds: (seconds, {port: {field: delta}})."""
        time.sleep(SETTLE)
        t0, c0 = self.snap()
        time.sleep(WINDOW)
        t1, c1 = self.snap()
        self.vnetd.check_alive()
        d = {}
        for p in c1:
            d[p] = {k: c1[p][k] - c0.get(p, c1[p])[k]
                    for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")}
            d[p]["drops"] = {k: v - c0.get(p, c1[p])["drops"][k] for k, v in c1[p]["drops"].items()}
        dt = t1 - t0
        self.check_others(d, dt, what)
        return dt, d

    def check_others(self, d, dt, what):
        """b and c forward, without a drop. Their generator shares a CPU with h's and may
        lose it for a while (it catches up later: the lossless count at the end), so a
        window is only checked for flow: at least half the paced rate."""
        for p in "bc":
            rate = d[p]["rx_packets"] / dt
            if rate < 0.5 * PAIR_RATE:
                raise HarnessError("%s: vnetd took %.0f frames/s from %s, which sends %d/s; "
                                   "deltas over %.2f s: %s"
                                   % (what, rate, p, PAIR_RATE, dt, d))
            # rx_no_buffers: the receiving front end had no buffer posted (its generator
            # lost the CPU to h's); that is the receiver's, not the policer's, and the
            # lossless count at the end allows for what vnetd counted of it.
            bad = {k: v for k, v in d[p]["drops"].items() if v and k != "rx_no_buffers"}
            if bad:
                raise HarnessError("%s: drops on %s: %s" % (what, p, bad))

    def check_rate(self, what, got, want):
        log("%s: %.0f per second delivered, limit %d (%.3fx)" % (what, got, want, got / want))
        if abs(got - want) > TOLERANCE * want:
            raise HarnessError("%s: delivered %.0f per second, configured %d (tolerance %d %%)"
                               % (what, got, want, TOLERANCE * 100))

    def check_accounted(self, what, d, reason):
        """Every frame h sent in the window was delivered to s or dropped for `reason`."""
        h = d["h"]
        dropped = h["drops"][reason]
        other = {k: v for k, v in h["drops"].items() if v and k != reason}
        # Counters are read while the worker runs, one field after another: the frames h
        # sends between two reads are in one and not yet in the other. At a few Mpps (and
        # with vnetd under a sanitizer, where the reads are slow) that is more than a burst:
        # 1781 of 9.8 M in one CI run. 0.05 % of the window still catches a lost count.
        slack = max(64, h["rx_packets"] // 2000)
        if other or abs(h["rx_packets"] - d["s"]["tx_packets"] - dropped) > slack:
            raise HarnessError("%s: h sent %d, s got %d, %s %d, other drops %s"
                               % (what, h["rx_packets"], d["s"]["tx_packets"], reason, dropped,
                                  other))
        if dropped == 0 or h["rx_packets"] < 3 * d["s"]["tx_packets"]:
            raise HarnessError("%s: h offered %d frames, %d delivered: not a flood"
                               % (what, h["rx_packets"], d["s"]["tx_packets"]))

    def check_top(self):
        """`vnetctl top` shows the rates of phase 1: s gets 20 kpps, h's excess is policed,
        b and c flow, the worker forwards; as JSON lines and as a screen."""
        v = self.vnetd
        argv = [v.vnetctl_binary, "--control", v.control, "top"]
        r = subprocess.run(argv + ["--json", "--iterations", "2", "--interval", "1"],
                           capture_output=True,
                           text=True, timeout=20)
        lines = r.stdout.splitlines()
        if r.returncode != 0 or len(lines) != 2:
            raise HarnessError("vnetctl --json top -n 2: status %d, %d lines: %r %r"
                               % (r.returncode, len(lines), r.stdout[-500:], r.stderr[-500:]))
        doc = json.loads(lines[-1])
        ports = {p["port"]: p for p in doc["ports"]}
        log("vnetctl top: s tx %.0f/s, h rx %.0f/s (policed %.0f/s), b rx %.0f/s, "
            "vnetd CPU %s %%" % (ports["s"]["tx_pps"], ports["h"]["rx_pps"],
                                 ports["h"]["drops"].get("policed", 0), ports["b"]["rx_pps"],
                                 doc["vnetd_cpu_pct"]))
        self.check_rate("vnetctl top: s's TX-PPS", ports["s"]["tx_pps"], 20000)
        h = ports["h"]
        if h["drops"].get("policed", 0) < h["rx_pps"] / 2 or set(h["drops"]) != {"policed"}:
            raise HarnessError("vnetctl top: h receives %.0f/s, drops %s (want most policed)"
                               % (h["rx_pps"], h["drops"]))
        for p in "bc":
            if ports[p]["rx_pps"] < 0.5 * PAIR_RATE or ports[p]["drop_pps"]:
                raise HarnessError("vnetctl top: %s %s" % (p, ports[p]))
        # Workers and ports are two requests of each sample, apart by as long as vnetctl
        # waits for the CPU (on a loaded machine a fifth of the interval): only the order
        # of magnitude is checked here; the arithmetic is unit-tested (TopTest).
        if sum(w["pps"] for w in doc["workers"]) < 0.5 * h["rx_pps"]:
            raise HarnessError("vnetctl top: workers forward %s, h alone sends %.0f/s"
                               % ([w["pps"] for w in doc["workers"]], h["rx_pps"]))
        if doc["vnetd_cpu_pct"] is None or doc["vnetd_cpu_pct"] <= 0:
            raise HarnessError("vnetctl top: vnetd CPU %r while h floods" % doc["vnetd_cpu_pct"])
        # The screen (stdout is a pipe: batch mode, no escape sequences).
        r = subprocess.run(argv + ["--iterations", "1", "--interval", "0.5"],
                           capture_output=True, text=True, timeout=20)
        head = r.stdout.split("\n", 1)[0]
        rows = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.strip()}
        if (r.returncode != 0 or "\x1b" in r.stdout or not head.startswith("vnetd ")
                or "policed:" not in rows.get("h", "") or not all(p in rows for p in "sbc")):
            raise HarnessError("vnetctl top (screen): status %d:\n%s%s"
                               % (r.returncode, r.stdout, r.stderr))

    def set_port(self, *args):
        self.vnetd.vnetctl("set-port", "h", *args)

    def policing_of(self, port):
        return self.vnetd.ports_info()[port]["policing"]

    def run(self):
        v = self.vnetd
        v.start()
        sink = self.spawn("s", "s", "rx", "--notify", "--rx-count-only", "--duration", 600,
                          "--queue-size", 4096)
        pair = self.s.spawn("pair", [self.traffic, "--socket", self.socks["b"], "--mac", MAC["b"],
                                     "--pair-socket", self.socks["c"], "--pair-mac", MAC["c"],
                                     "--rate", PAIR_RATE, "--duration", 600, "--cpu", self.cpu,
                                     "--log-level", "warn"])
        wait_until(lambda: all(v.counters()[p]["rx_packets"] >= 1 for p in "sbc"), 20,
                   what="announcements of s, b and c")

        # h comes with its policer (add-port); bad values are refused.
        v.vnetctl("add-port", "vhost-user", "h", "--socket", self.socks["h"],
                  "--ingress-rate", "20kpps")
        self.s.remove_file_later(self.socks["h"])
        pol = self.policing_of("h")
        if pol["ingress"].get("pps") != 20000 or "bps" in pol["ingress"]:
            raise HarnessError("vnetctl ports shows %s after --ingress-rate 20kpps" % pol)
        table = subprocess.run([v.vnetctl_binary, "--control", v.control, "ports"],
                               capture_output=True, text=True, timeout=10).stdout
        if "in:20kpps" not in table:
            raise HarnessError("vnetctl ports (table) does not show in:20kpps:\n%s" % table)
        for bad, field in ((["--ingress-rate", "lots"], "ingress_rate"),
                           (["--storm", "everything=5"], "storm"),
                           (["--ingress-rate", "10M", "--ingress-burst", "100"], "ingress_burst")):
            r = subprocess.run([v.vnetctl_binary, "--control", v.control, "set-port", "h"] + bad,
                               capture_output=True, text=True, timeout=10)
            if r.returncode == 0 or field not in r.stderr:
                raise HarnessError("set-port h %s: status %d, %r (want an error naming %s)"
                                   % (" ".join(bad), r.returncode, r.stderr, field))
        now = self.policing_of("h")
        if now != pol:
            raise HarnessError("a refused set-port changed h's policing: %s" % now)

        h = self.spawn("h-unicast", "h", "tx", "--dst-mac", MAC["s"], "--duration", 600,
                       "--busy-poll")
        wait_until(lambda: v.counters()["h"]["rx_packets"] > 1000, 20, what="h sending")

        dt, d = self.window("20 kpps")
        self.check_rate("h -> s at --ingress-rate 20kpps (packets)", d["s"]["tx_packets"] / dt,
                        20000)
        self.check_accounted("20 kpps", d, "policed")
        self.check_top()

        self.set_port("--ingress-rate", "10M", "--ingress-burst", "2M")
        pol = self.policing_of("h")["ingress"]
        if pol != {"bps": 10000000, "bps_burst": 2000000}:
            raise HarnessError("after --ingress-rate 10M --ingress-burst 2M: %s" % pol)
        dt, d = self.window("10 Mbit/s")
        self.check_rate("h -> s at --ingress-rate 10M (bits)", d["s"]["tx_bytes"] * 8 / dt,
                        10000000)
        self.check_accounted("10 Mbit/s", d, "policed")

        self.set_port("--ingress-rate", "off")
        dt, d = self.window("policing off")
        got = d["s"]["tx_packets"] / dt
        log("policing off: %.0f frames/s delivered to s, %d policed" % (
            got, d["h"]["drops"]["policed"]))
        if got < 2 * 20000 or d["h"]["drops"]["policed"]:
            raise HarnessError("policing off: s got %.0f frames/s, %d policed"
                               % (got, d["h"]["drops"]["policed"]))
        h.stop()

        # A TSO frame counts as its segments: 32054-byte frames with gso_size 500 are 64
        # segments each (s, without GUEST_TSO4, gets them segmented), so 20 kpps lets
        # 312 of them through a second, not 20,000.
        self.set_port("--ingress-rate", "20kpps")
        h = self.spawn("h-tso", "h", "tx", "--dst-mac", MAC["s"], "--duration", 600,
                       "--busy-poll", "--size", TSO_SIZE, "--gso-size", TSO_MSS,
                       "--queue-size", 256)
        wait_until(lambda: v.counters()["h"]["drops"]["policed"] > 1000, 20,
                   what="h's TSO frames policed")
        dt, d = self.window("TSO at 20 kpps")
        self.check_rate("h -> s TSO frames of %d segments at --ingress-rate 20kpps (segments)"
                        % TSO_SEGMENTS, d["s"]["tx_packets"] / dt, 20000)
        hd = d["h"]
        frames = d["s"]["tx_packets"] / TSO_SEGMENTS
        log("TSO: h sent %d frames, %d policed, %.0f delivered as %d segments"
            % (hd["rx_packets"], hd["drops"]["policed"], frames, d["s"]["tx_packets"]))
        if (abs(hd["rx_packets"] - hd["drops"]["policed"] - frames) > 64
                or hd["rx_packets"] < 3 * frames or drop_sum(hd) != hd["drops"]["policed"]):
            raise HarnessError("TSO at 20 kpps: h sent %d frames, %d policed, s got %d segments"
                               " (%.0f frames); drops %s" % (hd["rx_packets"],
                                                             hd["drops"]["policed"],
                                                             d["s"]["tx_packets"], frames,
                                                             hd["drops"]))
        h.stop()
        self.set_port("--ingress-rate", "off")

        # Storms: h floods; each class is held to its own limit at every other port.
        for name, dst, storm, reason, rate in (
                ("broadcast", BCAST, "broadcast=5000", "storm_broadcast", 5000),
                ("unknown unicast", NOBODY, "unknown-unicast=3k", "storm_unknown_unicast", 3000)):
            self.set_port("--storm", "off")
            self.set_port("--storm", storm)
            h = self.spawn("h-" + name.replace(" ", "-"), "h", "tx", "--dst-mac", dst,
                           "--duration", 600, "--busy-poll")
            wait_until(lambda: v.counters()["h"]["drops"][reason] > 1000, 20,
                       what="h's %s storm" % name)
            dt, d = self.window(name + " storm")
            self.check_rate("%s storm at --storm %s" % (name, storm),
                            d["s"]["tx_packets"] / dt, rate)
            self.check_accounted(name + " storm", d, reason)
            for p in "bc":  # flooded to them as well, no more
                extra = d[p]["tx_packets"] / dt - PAIR_RATE
                if extra > (1 + TOLERANCE) * rate:
                    raise HarnessError("%s storm: %s got %.0f frames/s besides its flow"
                                       % (name, p, extra))
            h.stop()
        storm = self.policing_of("h")["storm"]
        if list(storm) != ["unknown_unicast"] or storm["unknown_unicast"].get("pps") != 3000:
            raise HarnessError("vnetctl ports shows storm %s" % storm)

        pair.stop()
        res = result_of(pair)["pair"]
        final = v.counters()
        for i, (me, other) in enumerate((("b", "c"), ("c", "b"))):
            nobuf = final[me]["drops"]["rx_no_buffers"]
            # Completed: vnetd delivered them before it completed them; posted: some may
            # not have been taken when the pair stopped.
            done, posted = res[1 - i]["tx"]["packets"], res[1 - i]["tx"]["posted"]
            got, bad = res[i]["rx"]["packets"], res[i]["rx"]["bad_packets"]
            log("%s -> %s: %d sent (%d completed), %d received, %d bad, %d found no buffer"
                % (other, me, posted, done, got, bad, nobuf))
            # The receiver may not have reaped the last burst or two when it stopped.
            if got < done - 64 - nobuf or got > posted or bad:
                raise HarnessError("%s received %d of %s's frames (%d completed, %d posted; "
                                   "%d bad)" % (me, got, other, done, posted, bad))
        sink.stop()
        rc = v.stop()
        if rc != 0:
            raise HarnessError("vnetd exited with status %s" % rc)


def body(s, args):
    t0 = time.monotonic()
    Policing(s).run()
    log("policing test: %.1f s" % (time.monotonic() - t0))


if __name__ == "__main__":
    run_test("policing", body, [lambda a: require_root(), require_vnetd, require_traffic])
