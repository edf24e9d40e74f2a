"""Scenario vxlan: VM to VM across two "hosts" joined by a static VXLAN segment (VNI 100).

Topology (every side): host namespaces uA and uB joined by one underlay veth (ula
192.168.80.1/24 <-> ulb 192.168.80.2/24, MTU 1500, TX checksum offload off on both ends as
in the integration tests: a veth would otherwise hand the far end inner TCP segments with
unfinished checksums, which vnetd's user-space UDP socket cannot tell; a real NIC finishes
them on the wire), and VM namespaces mA (10.92.0.1) and mB (10.92.0.2) with an MTU of 1450.

Sides of `vxlan` (same addresses, same ping/iperf3 commands, alternated A B A B):
  vnet       one vnetd per host: a TAP port in the VM namespace (mtu 1450, offloads on) and a
             `[[segment]]` vni 100, local/remote the underlay addresses, netns = the host
             namespace (its UDP and raw sockets live there)
  kernel     the same from the kernel only: in each host namespace a bridge with a VXLAN
             device (id 100, the same local/remote, dstport 4789, MTU 1450) and a veth pair
             into the VM namespace (MTU 1450 both ends)
  vnet-base  with --baseline DIR: vnet with the vnetd of another build
Measured: ping RTT avg and p99 (ping -i 0.002, then back to back with -i 0, as tap), iperf3
TCP mA -> mB with 1 and 4 streams (receiver Gbit/s from iperf3 -J).  CPU placement as in
tap: both vnetds on the switch core (they share it), ping, iperf3 client and server on the
traffic core.  The kernel has no process: encapsulation, the veth, decapsulation, the bridge
and the receiving TCP all run in softirq on the sending CPU (the traffic core), so the
kernel gets one core where the two vnetds get two.  Sharing the switch core, each vnetd's
adaptive idle polling holds the core the other needs for the next hop (README: measured
0.66 Gbit/s and 600 us RTT so, 1.97 Gbit/s and 117 us with vnetd B on the other core).

Scenario `vxlan-64` (vnet, and vnet-base with --baseline; no kernel peer: the kernel has no
vhost-user port to feed): 64-byte frames through encapsulation and decapsulation.  vnetd A
has a vhost-user port fed by `vnet-traffic --mode tx --dst-mac MAC_RX --size 64`, vnetd B
one drained by `vnet-traffic --mode rx --rx-count-only` (MAC_RX).  The sink starts first;
its start-up announcement (a broadcast from MAC_RX) teaches vnetd B its port and, flooded
through the tunnel, teaches vnetd A that MAC_RX is behind 192.168.80.2, so the generator's
frames go as known unicast (one datagram each, `unicast_sent`); the run waits for that
FDB entry and records `dst_learned` (if it never came, the frames would flood:
`flood_copies`, one copy per remote VTEP, here also one).  CPU placement: one core per
host, since two switches busy-polling one core would share it by scheduler slices: host A
= the switch core (vnetd A, --cpu there, and the generator), host B = the traffic core
(vnetd B and the sink).  Both front ends sleep on their call eventfd when they have nothing
to do (--notify), so each vnetd has its core whenever it has frames.  With a veth as the
underlay the kernel's receive path of a datagram (IP, UDP, the socket queue of vnetd B) runs
in the softirq of vnetd A's sendmmsg, i.e. on host A's core.
Measured over a window after 1 s of warm-up:
  mpps              frames vnetd B delivered into the sink's RX ring per second
  encap_mpps        frames vnetd A's segment sent into the tunnel per second
  decap_mpps        frames vnetd B's segment took out of it per second
  gen_mpps          frames vnetd A took from the generator per second
  a_unicast_sent, a_flood_copies   vnetd A's segment counters over the window
  a_syscalls_per_frame, b_syscalls_per_frame   the segments' `syscalls` (sendmmsg calls on A,
                    recvmmsg calls that returned datagrams on B; empty polls are not
                    counted) per frame
  encap_cycles_per_frame, decap_cycles_per_frame   each vnetd worker's busy TSC cycles per
                    frame it took (A: from the generator, B: from the tunnel)
  loss_pct          frames sent into the tunnel but not delivered to the sink
  udp_rcvbuf_errors datagrams the kernel dropped at vnetd B's full UDP socket
"""

import time

from .common import (BenchNetns, CpuMeter, HarnessError, cpus, log, new_session, taskset,
                     unique, use_baseline, wait_until)
from .tap import iperf, ping_stats
from vnet_harness.traffic import result_of  # noqa: E402
from vnet_harness.vnetd import (ControlConnection, PortSpec, TapSpec, Vnetd,  # noqa: E402
                                find_program)
from vnet_harness.vxlan import (INNER_MTU, UDP_PORT, UNDERLAY_MTU, VNI, fdb_entry,  # noqa: E402
                                link_underlay)

SIDES = ("vnet", "kernel")
VNET_SIDES = ("vnet", "vnet-base")
IP_A, IP_B = "10.92.0.1", "10.92.0.2"
VTEP_A, VTEP_B = "192.168.80.1", "192.168.80.2"
SEGMENT = "vx100"
VM_PORT = "vm"                    # the vhost-user port of vxlan-64 (in both vnetds)
MAC_TX = "52:54:00:4e:45:01"      # vxlan-64 generator (on vnetd A)
MAC_RX = "52:54:00:4e:45:02"      # vxlan-64 sink (on vnetd B)
SINK_QUEUE = 4096


class PinnedVnetd(Vnetd):
    """A harness Vnetd pinned (taskset, and --cpu for its worker) to a given CPU rather
    than to the harness' switch CPU."""

    def __init__(self, session, ports, cpu, **kwargs):
        super().__init__(session, ports, pin=False, **kwargs)
        self.cpu = cpu

    def argv(self):
        return taskset(self.cpu) + super().argv()


def underlay(s):
    """Host namespaces uA and uB joined by the underlay veth (harness link_underlay: ula,
    ulb, MTU 1500, TX checksum offload off), once they reach each other."""
    ua, ub = BenchNetns(s, "ua"), BenchNetns(s, "ub")
    link_underlay(ua, ub, VTEP_A, VTEP_B)
    wait_until(lambda: ua.run("ping -n -c 1 -W 1 %s" % VTEP_B, check=False)[0] == 0, 15,
               interval=0.1, what="the underlay %s -> %s" % (VTEP_A, VTEP_B))
    return ua, ub


def start_vnetd(s, args, side, tag, host_ns, local, remote, ports, cpu):
    """vnetd of host `tag`: `ports` from the command line, the segment from a config file
    (sockets in host_ns), worker pinned to `cpu`, the process too."""
    lines = ["[[segment]]",
             'name = "%s"' % SEGMENT,
             "vni = %d" % VNI,
             'local = "%s"' % local,
             'remote = ["%s"]' % remote,
             "udp_port = %d" % UDP_PORT,
             'netns = "%s"' % host_ns.name,
             "underlay_mtu = %d" % UNDERLAY_MTU, ""]
    path = s.path("vnetd-%s.toml" % tag)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    d = PinnedVnetd(s, ports, cpu, name="vnetd-%s" % tag, log_level="warn",
                    extra_args=["--config", path, "--cpu", str(cpu)] + list(args.vnetd_arg))
    if side == "vnet-base":
        use_baseline(d, args.baseline)
    d.start()
    seg = d.ports_info().get(SEGMENT)
    if seg is None or seg.get("type") != "vxlan":
        raise HarnessError("vnetd %s has no VXLAN port %s: %s" % (tag, SEGMENT, seg))
    return d


def setup_vnet(s, args, side, ua, ub, ma, mb, sw_cpu):
    ta, tb = unique("ta"), unique("tb")
    da = start_vnetd(s, args, side, "A", ua, VTEP_A, VTEP_B,
                     [TapSpec("tapa", ifname=ta, netns=ma, mtu=INNER_MTU)], sw_cpu)
    db = start_vnetd(s, args, side, "B", ub, VTEP_B, VTEP_A,
                     [TapSpec("tapb", ifname=tb, netns=mb, mtu=INNER_MTU)], sw_cpu)
    return ta, tb, (da, db)


def setup_kernel(s, ua, ub, ma, mb):
    """In each host namespace: bridge br0, VXLAN device vx100 (id 100, local, remote,
    dstport 4789, MTU 1450) and veth hv0 in the bridge, its peer in the VM namespace."""
    names = []
    for tag, u, m, local, remote in (("a", ua, ma, VTEP_A, VTEP_B),
                                     ("b", ub, mb, VTEP_B, VTEP_A)):
        vm_if = unique("k" + tag)
        m.own_link(vm_if)
        u.run("ip link add br0 type bridge && ip link set br0 up")
        u.run("ip link add %s type vxlan id %d local %s remote %s dstport %d"
              % (SEGMENT, VNI, local, remote, UDP_PORT))
        u.run("ip link set %s mtu %d master br0 up" % (SEGMENT, INNER_MTU))
        u.run("ip link add hv0 type veth peer name %s netns %s" % (vm_if, m.name))
        u.run("ip link set hv0 mtu %d master br0 up" % INNER_MTU)
        m.run("ip link set %s mtu %d" % (vm_if, INNER_MTU))
        names.append(vm_if)
    return names[0], names[1]


def segment_reading(vnetd):
    """(the segment's counters, its extra counters, the worker counters, every port's
    counters) of one vnetd, over a fresh control connection (no vnetctl process)."""
    vnetd.check_alive()
    conn = ControlConnection(vnetd.control)
    try:
        c = conn.request("counters")
        ports = {p["name"]: p for p in conn.request("ports")["ports"]}
    finally:
        conn.close()
    return c["counters"][SEGMENT], ports[SEGMENT].get("extra", {}), c["worker"], c["counters"]


def run_one(args, side):
    sw_cpu, cpu = cpus()
    seconds = 3 if args.quick else 10
    pings = 300 if args.quick else 500
    with new_session("vxlan-%s" % side, args) as s:
        ua, ub = underlay(s)
        ma, mb = BenchNetns(s, "ma"), BenchNetns(s, "mb")
        vnetds = ()
        if side in VNET_SIDES:
            ia, ib, vnetds = setup_vnet(s, args, side, ua, ub, ma, mb, sw_cpu)
        else:
            ia, ib = setup_kernel(s, ua, ub, ma, mb)
        ma.wait_link(ia)
        mb.wait_link(ib)
        for ns, dev in ((ma, ia), (mb, ib)):
            mtu = ns.link_mtu(dev)
            if mtu != INNER_MTU:
                raise HarnessError("%s in %s has MTU %d, expected %d"
                                   % (dev, ns.name, mtu, INNER_MTU))
        ma.add_address(ia, IP_A + "/24")
        mb.add_address(ib, IP_B + "/24")
        wait_until(lambda: ma.ping(IP_B, count=1, interval=0.2)[1] == 1, 20, interval=0.2,
                   what="first ping %s -> %s through %s" % (ma.name, mb.name, side))
        res = ping_stats(ma, IP_B, pings, cpu)
        res.update(ping_stats(ma, IP_B, pings * 4, cpu, interval="0", prefix="rtt_b2b"))
        before = [segment_reading(d) for d in vnetds]
        meters = [CpuMeter(d.proc.pid) for d in vnetds]
        res["tcp1_gbps"], res["tcp1_retransmits"] = iperf(s, mb, ma, IP_B, seconds, 1, cpu, "1")
        if meters:
            res["switch_cpu_pct_tcp1"] = sum(m.percent() for m in meters)
        res["tcp4_gbps"], res["tcp4_retransmits"] = iperf(s, mb, ma, IP_B, seconds, 4, cpu, "4")
        res["iperf_seconds"] = seconds
        if vnetds:
            after = [segment_reading(d) for d in vnetds]
            for tag, (s0, e0, _, _), (s1, e1, _, _) in zip("ab", before, after):
                tx = s1["tx_packets"] - s0["tx_packets"]
                rx = s1["rx_packets"] - s0["rx_packets"]
                sc = e1.get("syscalls", 0) - e0.get("syscalls", 0)
                res["%s_seg_tx_frames" % tag] = tx
                res["%s_seg_rx_frames" % tag] = rx
                res["%s_seg_syscalls_per_frame" % tag] = sc / (tx + rx) if tx + rx else None
                res["%s_send_errors" % tag] = e1.get("send_errors", 0) - e0.get("send_errors", 0)
                res["%s_seg_drops" % tag] = {k: v - s0["drops"].get(k, 0)
                                             for k, v in s1["drops"].items()
                                             if v - s0["drops"].get(k, 0)}
        log("vxlan %s: TCP %.2f / %.2f Gbit/s (1/4 streams), RTT avg %.1f us p99 %.1f us, "
            "back to back avg %.1f us p99 %.1f us"
            % (side, res["tcp1_gbps"], res["tcp4_gbps"], res["rtt_avg_us"], res["rtt_p99_us"],
               res["rtt_b2b_avg_us"], res["rtt_b2b_p99_us"]))
        time.sleep(0.2)
        return res



def udp_rcvbuf_errors(ns):
    udp = ns.snmp().get("Udp", {})
    return udp.get("RcvbufErrors", 0), udp.get("InDatagrams", 0)


def run_64(args, side):
    host_a_cpu, host_b_cpu = cpus()
    seconds = 2.0 if args.quick else 5.0
    prog = find_program(args.build_dir, "vnet-traffic")
    if prog is None:
        raise HarnessError("vnet-traffic not found in %s" % args.build_dir)
    with new_session("vxlan64-%s" % side, args) as s:
        ua, ub = underlay(s)
        sa, sb = s.path("a.sock"), s.path("b.sock")
        da = start_vnetd(s, args, side, "A", ua, VTEP_A, VTEP_B, [PortSpec(sa, name=VM_PORT)],
                         host_a_cpu)
        db = start_vnetd(s, args, side, "B", ub, VTEP_B, VTEP_A, [PortSpec(sb, name=VM_PORT)],
                         host_b_cpu)
        # The sink first: its announcement teaches vnetd B its port and vnetd A (through the
        # tunnel) its VTEP.  It runs until stopped.
        sink = s.spawn("vnet-traffic-rx", [
            prog, "--socket", sb, "--mode", "rx", "--mac", MAC_RX, "--size", "64",
            "--rx-count-only", "--queue-size", str(SINK_QUEUE), "--notify",
            "--cpu", str(host_b_cpu), "--duration", "3600", "--log-level", "warn"])
        learned = True
        try:
            wait_until(lambda: (lambda e: e is not None and e.get("port") == SEGMENT
                                and e.get("vtep") == VTEP_B)(fdb_entry(da, MAC_RX)), 10,
                       interval=0.05, what="vnetd A learning %s behind %s" % (MAC_RX, VTEP_B))
        except HarnessError as e:
            learned = False
            log("vxlan-64 %s: %s; the generator's frames will flood" % (side, e))
        entry_b = fdb_entry(db, MAC_RX)
        gen = s.spawn("vnet-traffic-tx", [
            prog, "--socket", sa, "--mode", "tx", "--mac", MAC_TX, "--dst-mac", MAC_RX,
            "--size", "64", "--notify", "--cpu", str(host_a_cpu),
            "--duration", str(seconds + 2.5), "--log-level", "warn"])
        time.sleep(1.0)

        def reading():
            a, b = segment_reading(da), segment_reading(db)
            return a, b, udp_rcvbuf_errors(ub), time.monotonic()

        (a0, b0, u0, t0) = reading()
        meters = [CpuMeter(da.proc.pid), CpuMeter(db.proc.pid)]
        time.sleep(seconds)
        (a1, b1, u1, t1) = reading()
        cpu_a, cpu_b = (m.percent() for m in meters)
        dt = t1 - t0
        if gen.wait(seconds + 30) is None:
            raise HarnessError("vnet-traffic tx still running:\n%s" % gen.log_tail())
        gen_res = result_of(gen)
        sink.stop(10)
        try:
            sink_res = result_of(sink)
        except HarnessError as e:  # only a cross-check: vnetd B's counters are the figure
            log("vxlan-64 %s: %s" % (side, e))
            sink_res = {}
        if gen.returncode != 0:
            raise HarnessError("vnet-traffic tx failed (status %s): %s" % (gen.returncode, gen_res))

        def d(r1, r0, *path):
            x1, x0 = r1, r0
            for k in path:
                x1, x0 = x1.get(k, 0), x0.get(k, 0)
            return x1 - x0

        # (segment counters, segment extra, worker, all ports' counters)
        a_seg_tx = d(a1[0], a0[0], "tx_packets")
        b_seg_rx = d(b1[0], b0[0], "rx_packets")
        delivered = d(b1[3][VM_PORT], b0[3][VM_PORT], "tx_packets")
        taken = d(a1[3][VM_PORT], a0[3][VM_PORT], "rx_packets")
        a_sys = d(a1[1], a0[1], "syscalls")
        b_sys = d(b1[1], b0[1], "syscalls")
        a_pk, b_pk = d(a1[2], a0[2], "packets"), d(b1[2], b0[2], "packets")
        b_drops = {k: v - b0[3][VM_PORT]["drops"].get(k, 0)
                   for k, v in b1[3][VM_PORT]["drops"].items()
                   if v - b0[3][VM_PORT]["drops"].get(k, 0)}
        a_seg_drops = {k: v - a0[0]["drops"].get(k, 0) for k, v in a1[0]["drops"].items()
                       if v - a0[0]["drops"].get(k, 0)}
        uni, flood = d(a1[1], a0[1], "unicast_sent"), d(a1[1], a0[1], "flood_copies")
        res = {
            "mpps": delivered / dt / 1e6,
            "encap_mpps": a_seg_tx / dt / 1e6,
            "decap_mpps": b_seg_rx / dt / 1e6,
            "gen_mpps": taken / dt / 1e6,
            "a_unicast_sent": uni,
            "a_flood_copies": flood,
            "unicast_pct": 100.0 * uni / (uni + flood) if uni + flood else None,
            "a_syscalls_per_frame": a_sys / a_seg_tx if a_seg_tx else None,
            "b_syscalls_per_frame": b_sys / b_seg_rx if b_seg_rx else None,
            "a_frames_per_syscall": a_seg_tx / a_sys if a_sys else None,
            "b_frames_per_syscall": b_seg_rx / b_sys if b_sys else None,
            "encap_cycles_per_frame": d(a1[2], a0[2], "busy_cycles") / a_pk if a_pk else None,
            "decap_cycles_per_frame": d(b1[2], b0[2], "busy_cycles") / b_pk if b_pk else None,
            "a_cpu_pct": cpu_a, "b_cpu_pct": cpu_b,
            "a_sleeps": d(a1[2], a0[2], "sleeps"), "b_sleeps": d(b1[2], b0[2], "sleeps"),
            "a_send_errors": d(a1[1], a0[1], "send_errors"),
            "a_seg_drops": a_seg_drops, "b_port_drops": b_drops,
            "loss_pct": 100.0 * (a_seg_tx - delivered) / a_seg_tx if a_seg_tx else None,
            "udp_rcvbuf_errors": u1[0] - u0[0],
            "udp_in_datagrams": u1[1] - u0[1],
            "dst_learned": learned,
            "dst_on_b": (entry_b or {}).get("port"),
            "gen_kicks": gen_res.get("kicks"), "gen_waits": gen_res.get("waits"),
            "gen_tx_mpps": (gen_res.get("tx") or {}).get("mpps"),
            "sink_rx_packets": (sink_res.get("rx") or {}).get("packets"),
            "sink_waits": sink_res.get("waits"),
            "seconds": dt,
            "placement": "host A (vnetd A, generator) on CPU %d, host B (vnetd B, sink) on "
                         "CPU %d" % (host_a_cpu, host_b_cpu),
        }
        log("vxlan-64 %s: %.3f Mpps delivered (encap %.3f, decap %.3f), %s unicast / %s "
            "flood copies, syscalls/frame A %.3f B %.3f, cycles/frame A %.0f B %.0f, loss %.1f%%"
            % (side, res["mpps"], res["encap_mpps"], res["decap_mpps"], uni, flood,
               res["a_syscalls_per_frame"] or 0, res["b_syscalls_per_frame"] or 0,
               res["encap_cycles_per_frame"] or 0, res["decap_cycles_per_frame"] or 0,
               res["loss_pct"] or 0))
        return res


def scenarios(args=None):
    base = ("vnet-base",) if args is not None and args.baseline else ()
    return [("vxlan", run_one, SIDES + base),
            ("vxlan-64", run_64, ("vnet",) + base)]
