"""vnet integration-test harness: real peers (DPDK testpmd, QEMU guests) around vnetd.

Python 3 standard library only.  Modules:
  procs      processes in their own groups, logs, waits, cleanup registry
  session    per-test temp dir and cleanup, prerequisites, exit codes (0/1/77)
  hugepages  hugepage reservation and removal of DPDK's leftover files
  testpmd    interactive dpdk-testpmd driver (virtio-user and net_vhost peers)
  guest      initramfs builder and QEMU guest launcher
  vnetd      vnetd launcher (vhost-user and TAP ports) and vnetctl JSON queries
  netns      network namespaces (per-run names, cleanup), tcpdump captures, kernel counters
  pcap       pcap reader and independent IPv4/TCP/UDP/ICMP checksum checks
  iperf      iperf3 output parsing
  traffic    vnet-traffic prerequisite and result parsing
"""

from .procs import Cleanup, HarnessError, Process, log, wait_until  # noqa: F401
from .session import Session, in_ci, require_root, require_tools, run_test  # noqa: F401


def dpdk_prerequisites():
    """Prerequisite checks of tests that run vnetd with testpmd peers."""
    from .vnetd import require_vnetd
    return [lambda a: require_root(), lambda a: require_tools("dpdk-testpmd", "stdbuf"),
            require_vnetd]
