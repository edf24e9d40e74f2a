#!/usr/bin/env python3
"""Two vnetds joined by a static VXLAN segment, and a hot upgrade of one of them under ping.

Two "hosts", each a vnetd of its own (both processes in the root namespace, each with its
own configuration file and control socket); namespaces named vnt<pid>..., deleted by name
at cleanup:

  vmA (10.78.0.1/24, MTU 1450)                       vmB (10.78.0.2/24, MTU 1450)
    TAP of vnetd A                                     TAP of vnetd B
      |                                                  |
  vnetd A: port "tapa" <-> segment "vx100"           vnetd B: port "tapb" <-> segment "vx100"
      VNI 100, local 192.168.60.1, remote [.2]           VNI 100, local 192.168.60.2, remote [.1]
      sockets opened in namespace uA                     sockets opened in namespace uB
      |                                                  |
  uA: ula 192.168.60.1/24  <-------- veth -------->  uB: ulb 192.168.60.2/24

Both underlay veths have TX checksum offload off (`ethtool -K IF tx off`), as a real NIC
that finishes checksums on the wire: otherwise a veth hands the other namespace's UDP
socket datagrams whose inner TCP checksum is only the pseudo-header seed
(CHECKSUM_PARTIAL kept across namespaces), which no user-space socket can tell (see
test_vxlan_static.py).  The vnetds are not pinned: the scheduler spreads the two of them
and the kernels' work over the 2 cores.

Asserts:
  1. ping vmA -> vmB: after a warm-up (ARP flooded through the tunnel, both sides
     learning), 20 pings at 20 ms are all answered (RTTs printed);
  2. iperf3 TCP vmA -> vmB for 3 s and the reverse (-R) each move > 50 Mbit/s (10 under
     a sanitizer; printed); no VXLAN drop reason (vxlan_bad_header, vxlan_bad_vni,
     vxlan_unknown_vtep, tunnel_too_big) moves in either vnetd;
  3. `vnetctl --json fdb` of each vnetd: the remote VM's MAC on its segment with "vtep"
     the other host's underlay address, the local VM's MAC on its TAP port; both
     segments are of type "vxlan" with the VXLAN drop reasons and the extra counters;
  4. known unicast: over the 20 pings each segment's unicast_sent rose by at least 20
     and its flood_copies by at most 2 (flooding is for ARP and unknown MACs only);
  5. hot upgrade of vnetd A (`vnetctl --json upgrade`) while vmA pings vmB every 20 ms:
     the reply says ok (no warning), names the old and new pids and the segment, the
     old process exits 0; the new process has the segment (type vxlan, same VNI, local
     and remote) and the FDB: vmB's MAC behind the segment with vtep 192.168.60.2, and
     taken over rather than learned again: over the ping stream the new process's segment
     floods at most 2 copies and not both floods and learns (a successor that lost vmB's
     VTEP floods the requests toward vmB until vmB's reply teaches it again);
     at most 2 pings lost across the upgrade (missing icmp_seq, plus any beyond one
     still in flight at the end), then 10 more pings all answered, iperf3 vmA -> vmB
     again above the bound; the new vnetd's fd count is not above the old one's + 2
     (pause_ms, pings lost, longest reply gap and fd counts printed);
  5b. a second upgrade of vnetd A with no traffic: the FDB the new vnetd answers with at
     once has vmB's MAC on the segment with vtep 192.168.60.2 (under the ping stream vmB's
     next reply would re-teach a successor that lost it, within 20 ms); 10 pings answered
     after it; fds still not above the first old one's + 2;
  6. both vnetds exit 0 on SIGTERM, no sanitizer report in their logs.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.netns import require_netns  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from vnet_harness.vnetd import require_vnetd  # noqa: E402
from vnet_harness.vxlan import (EXTRA, PING_COUNT, PING_INTERVAL, SEGMENT,  # noqa: E402
                                VXLAN_DROPS, VxlanHost, delta, host_pair, iperf, iperf_server,
                                fdb_entry, listing, ping_all, ping_stats, require_veth, start_hosts,
                                warm_up, warning_lines)
from test_upgrade import stable_fd_count  # noqa: E402
from test_vnetctl import PingStream  # noqa: E402

NET = "10.78.0."
IP_A, IP_B = NET + "1", NET + "2"
UL = "192.168.60."
VTEP_A, VTEP_B = UL + "1", UL + "2"
TAP_A, TAP_B = "tapa", "tapb"     # the TAP ports' names (in vnetd A and vnetd B)
MAC_A = "02:78:00:00:00:01"       # vmA's TAP
MAC_B = "02:78:00:00:00:02"       # vmB's TAP
MAX_FLOOD_DURING_PINGS = 2
UPGRADE_PINGS = 25        # replies of the 20 ms ping stream before and after the upgrade
MAX_UPGRADE_LOST = 2
AFTER_UPGRADE_PINGS = 10
MAX_FD_GROWTH = 2


# --- helpers --------------------------------------------------------------------------

def check_no_vxlan_drops(hosts, base, what):
    for h in hosts:
        d = delta(base[h.tag], h.segment_state()[0], VXLAN_DROPS)
        if any(d.values()):
            raise HarnessError("vnetd %s: segment %s dropped legitimate traffic (%s): %s"
                               % (h.tag, SEGMENT, what, d))





# --- the test -----------------------------------------------------------------------------

def body(s, args):
    t_start = time.monotonic()
    a, b = host_pair(s, VxlanHost, (IP_A, IP_B), (VTEP_A, VTEP_B), (MAC_A, MAC_B),
                     (TAP_A, TAP_B))
    hosts = (a, b)
    ma, mb = a.vm, b.vm
    _, min_mbps = start_hosts(hosts)
    for h in hosts:
        h.check_ports("at start")
    drops0 = {h.tag: h.segment_state()[0] for h in hosts}

    # --- (1) ping vmA -> vmB, (4) known unicast -------------------------------------------
    tries = warm_up(ma, IP_B, "warm-up ping vmA -> %s" % IP_B)
    log("warm-up: vmA reached vmB with ping %d (ARP flooded through the tunnel)" % tries)
    extra0 = {h.tag: h.segment_state()[1] for h in hosts}
    tx, rx, out = ping_all(ma, IP_B, "ping vmA -> vmB")
    rtt_first = ping_stats(out)
    log("RESULT ping vmA -> vmB: %d/%d answered, %s" % (rx, tx, rtt_first))
    for h in hosts:
        e = delta(extra0[h.tag], h.segment_state()[1], EXTRA)
        log("RESULT vnetd %s segment over the %d pings: unicast_sent +%d, flood_copies +%d "
            "(learned +%d, moved +%d, send_errors +%d)"
            % (h.tag, PING_COUNT, e["unicast_sent"], e["flood_copies"], e["learned"],
               e["moved"], e["send_errors"]))
        if e["unicast_sent"] < PING_COUNT or e["flood_copies"] > MAX_FLOOD_DURING_PINGS:
            raise HarnessError("vnetd %s: over %d pings the segment's unicast_sent rose by %d "
                               "(expected >= %d) and flood_copies by %d (expected <= %d): "
                               "known unicast must not be flooded; %s"
                               % (h.tag, PING_COUNT, e["unicast_sent"], PING_COUNT,
                                  e["flood_copies"], MAX_FLOOD_DURING_PINGS, e))
        if e["send_errors"]:
            raise HarnessError("vnetd %s: segment send_errors rose by %d during the pings"
                               % (h.tag, e["send_errors"]))

    # --- (2) iperf3 both ways -----------------------------------------------------------
    server = iperf_server(mb, IP_B)
    fwd = iperf(ma, IP_B, min_mbps, "iperf3 TCP vmA -> vmB")
    rev = iperf(ma, IP_B, min_mbps, "iperf3 TCP vmB -> vmA (-R)", reverse=True)
    check_no_vxlan_drops(hosts, drops0, "ping and iperf3")

    # --- (3) FDBs -------------------------------------------------------------------------
    a.check_fdb("before the upgrade", MAC_B, VTEP_B)
    b.check_fdb("before the upgrade", MAC_A, VTEP_A)

    # --- (5) hot upgrade of vnetd A under a 20 ms ping ------------------------------------
    fd_old = stable_fd_count(a.vnetd, "before the upgrade")
    old_pid = a.vnetd.proc.pid
    ping = PingStream(s, ma, IP_B)
    wait_until(lambda: len(ping.replies()) >= UPGRADE_PINGS, 30, interval=0.05,
               what="%d replies of the ping stream before the upgrade" % UPGRADE_PINGS)
    t0 = time.monotonic()
    reply = a.vnetd.upgrade(timeout=60)
    took = time.monotonic() - t0
    n_at_upgrade = len(ping.replies())
    if reply.get("ok") is not True or "warning" in reply:
        raise HarnessError("upgrade of vnetd A: reply %s" % reply)
    if reply.get("old_pid") != old_pid or reply.get("pid") == old_pid:
        raise HarnessError("upgrade reply: old_pid %s pid %s; vnetd A was pid %d"
                           % (reply.get("old_pid"), reply.get("pid"), old_pid))
    if SEGMENT not in reply.get("ports", {}):
        raise HarnessError("upgrade reply has no counters of %s: %s" % (SEGMENT, reply))
    pause = reply.get("pause_ms")
    handed = reply["ports"][SEGMENT]
    log("RESULT upgrade of vnetd A: pid %d -> %d in %.0f ms, data path paused %s ms; the old "
        "process's segment: rx %s tx %s packets, drops %s"
        % (old_pid, a.vnetd.proc.pid, took * 1e3,
           "%.2f" % pause if isinstance(pause, (int, float)) else "(not in the reply)",
           handed.get("rx_packets"), handed.get("tx_packets"),
           {k: v for k, v in handed.get("drops", {}).items() if v} or "none"))
    wait_until(lambda: (a.vnetd.check_alive(), ping.proc.alive() and
                        len(ping.replies()) >= n_at_upgrade + UPGRADE_PINGS)[1], 30,
               interval=0.05, what="%d replies of the ping stream after the upgrade"
               % UPGRADE_PINGS)
    sent, received, lost, missing, in_flight, gap = ping.stop_counted()
    log("RESULT ping vmA -> vmB every %d ms across the upgrade: %d sent, %d answered, lost %d "
        "(icmp_seq %s unanswered, %d after the last reply), longest gap between replies %.0f ms"
        % (PING_INTERVAL * 1e3, sent, received, lost, missing or "none", in_flight, gap * 1e3))
    if lost > MAX_UPGRADE_LOST:
        raise HarnessError("the upgrade of vnetd A lost %d pings (icmp_seq %s, %d after the last "
                           "reply), at most %d allowed" % (lost, missing, in_flight,
                                                           MAX_UPGRADE_LOST))

    seg = a.check_ports("after the upgrade")
    e_new = {k: seg.get("extra", {}).get(k, 0) for k in EXTRA}
    log("RESULT new vnetd A's segment after the ping stream: %s" % e_new)
    a.check_fdb("after the upgrade", MAC_B, VTEP_B)
    # Taken over, not learned again: with vmB's VTEP handed over, the first request after the
    # upgrade goes unicast (no flood copy) and vmB's replies teach nothing new (learned 0).
    # A successor that re-learns the handed-over table may count it as learned, but must
    # not flood; one that lost the table does both: floods toward vmB until its reply comes.
    if (e_new["learned"] and e_new["flood_copies"]) or \
            e_new["flood_copies"] > MAX_FLOOD_DURING_PINGS:
        raise HarnessError("the new vnetd A did not take over its segment's MAC -> VTEP table: "
                           "over the ping stream after the upgrade it flooded %d copies (%d "
                           "allowed, and none if a MAC was learned) and learned %d MAC(s) from "
                           "the tunnel again, although vmB's MAC %s behind %s was known before "
                           "the upgrade; segment extra %s"
                           % (e_new["flood_copies"], MAX_FLOOD_DURING_PINGS, e_new["learned"],
                              MAC_B, VTEP_B, seg.get("extra")))
    tx, rx, out = ping_all(ma, IP_B, "ping vmA -> vmB after the upgrade",
                           count=AFTER_UPGRADE_PINGS)
    log("RESULT ping vmA -> vmB after the upgrade: %d/%d answered, %s"
        % (rx, tx, ping_stats(out)))
    after = iperf(ma, IP_B, min_mbps, "iperf3 TCP vmA -> vmB after the upgrade")
    server.stop()
    drops_new = a.segment_state()[0]
    bad = {k: drops_new[k] for k in VXLAN_DROPS if drops_new[k]}
    if bad:
        raise HarnessError("new vnetd A: segment %s dropped legitimate traffic: %s"
                           % (SEGMENT, bad))
    check_no_vxlan_drops((b,), drops0, "ping and iperf3 across the upgrade")
    fd_new = stable_fd_count(a.vnetd, "after the upgrade")
    log("RESULT vnetd A fds: %d before the upgrade (pid %d), %d after (pid %d)"
        % (fd_old, old_pid, fd_new, a.vnetd.proc.pid))
    if fd_new > fd_old + MAX_FD_GROWTH:
        raise HarnessError("the new vnetd A has %d fds, the old one had %d (at most %d more "
                           "allowed): %s" % (fd_new, fd_old, MAX_FD_GROWTH,
                                             sorted(os.listdir("/proc/%d/fd"
                                                               % a.vnetd.proc.pid))))
    b.check_fdb("after the upgrade", MAC_A, VTEP_A)

    # --- (5b) a quiet upgrade: the MAC -> VTEP table itself handed over -------------------
    # Under the ping stream, vmB's next reply teaches a successor that lost vmB's VTEP
    # again within 20 ms; with nothing crossing the tunnel, the FDB the new vnetd answers
    # with at once shows what it was handed.
    old2 = a.vnetd.proc.pid
    reply2 = a.vnetd.upgrade(timeout=60)
    entry = fdb_entry(a.vnetd, MAC_B)
    seg2 = a.ports()[SEGMENT]
    if reply2.get("ok") is not True or "warning" in reply2:
        raise HarnessError("second upgrade of vnetd A: reply %s" % reply2)
    pause2 = reply2.get("pause_ms")
    log("RESULT quiet upgrade of vnetd A: pid %d -> %d, data path paused %s ms; at once the "
        "FDB has %s (the new segment had received %d frames, learned %d)"
        % (old2, a.vnetd.proc.pid,
           "%.2f" % pause2 if isinstance(pause2, (int, float)) else "(not in the reply)",
           entry, seg2["counters"]["rx_packets"], seg2.get("extra", {}).get("learned", 0)))
    if entry is None or entry.get("port") != SEGMENT or entry.get("vtep") != VTEP_B:
        raise HarnessError("right after an upgrade without traffic, the new vnetd A's FDB has "
                           "vmB's MAC %s as %s; expected it on %s with vtep %s, handed over by "
                           "the old vnetd (which had it so)"
                           % (MAC_B, entry, SEGMENT, VTEP_B))
    tx, rx, out2 = ma.ping(IP_B, count=AFTER_UPGRADE_PINGS, interval=PING_INTERVAL)
    if rx != tx:
        raise HarnessError("ping vmA -> vmB after the quiet upgrade: %d/%d answered:\n%s"
                           % (rx, tx, out2))
    fd_new2 = stable_fd_count(a.vnetd, "after the quiet upgrade")
    log("RESULT after the quiet upgrade: ping %d/%d answered, %s; vnetd A fds %d"
        % (rx, tx, ping_stats(out2), fd_new2))
    if fd_new2 > fd_old + MAX_FD_GROWTH:
        raise HarnessError("vnetd A has %d fds after two upgrades, %d before them (at most %d "
                           "more allowed)" % (fd_new2, fd_old, MAX_FD_GROWTH))

    # --- (6) the end ------------------------------------------------------------------------
    for h in hosts:
        drops9, extra9 = h.segment_state()
        log("vnetd %s segment final: drops %s; extra %s"
            % (h.tag, {k: drops9[k] for k in VXLAN_DROPS}, extra9))
        warnings = warning_lines(h.vnetd)
        log("vnetd %s log: %d warning/error lines%s" % (h.tag, len(warnings), listing(warnings)))
    for h in hosts:
        h.stop()
    log("RESULT summary: ping %s; iperf3 vmA -> vmB %.1f, vmB -> vmA %.1f, after the "
        "upgrade %.1f Mbit/s; upgrade pause %s ms, %d pings lost; fds %d -> %d -> %d"
        % (rtt_first, fwd.receiver_mbps, rev.receiver_mbps, after.receiver_mbps,
           "%.2f" % pause if isinstance(pause, (int, float)) else "?", lost, fd_old, fd_new,
           fd_new2))
    log("done in %.1f s" % (time.monotonic() - t_start))


if __name__ == "__main__":
    run_test("vxlan_vnetd", body,
             [lambda a: require_root(), require_netns, require_vnetd,
              lambda a: require_tools("ip", "ping", "iperf3", "ethtool"),
              require_veth])
