#!/usr/bin/env python3
"""vnetd forwards frames between two DPDK virtio-user front ends on packed rings, exactly.

The same exact-count run as test_dpdk_interop.py (a sender testpmd on vhu0, a
receiver testpmd on vhu1, rounds of 4 bursts of 32 frames, each burst well within one
ring, as many rounds as it takes for every ring to wrap at least twice), with `packed_vq=1` on both front ends, for in_order=0/1 x mrg_rxbuf=0/1 x
queue_size 256/1024/4096, and once with 1500-byte frames (external packets: the
sender's TX chains are completed only after delivery).  Asserted for each, on top of
what test_dpdk_interop.py asserts (receiver RX == sender TX frames and bytes every
round; vnetd's rx/tx counters grew by exactly that with no drops; MRG_RXBUF and
IN_ORDER negotiated as asked; exit status 0 on SIGTERM): VIRTIO_F_RING_PACKED was
negotiated on both ports.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import dpdk_prerequisites, run_test  # noqa: E402
from vnet_harness import hugepages  # noqa: E402
from test_dpdk_interop import BURSTS, ROUNDS, run_variant  # noqa: E402


def rounds_for(queue_size):
    """Enough rounds that every ring wraps at least twice (wrap counters flip both ways)."""
    return max(ROUNDS, 2 * queue_size // (BURSTS * 32) + 1)


def body(s, args):
    hugepages.ensure_hugepages()
    for queue_size in (256, 1024, 4096):
        for in_order in (0, 1):
            for mrg in (0, 1):
                run_variant(s, mrg, in_order=in_order, packed=1, queue_size=queue_size,
                            rounds=rounds_for(queue_size))
    run_variant(s, 1, in_order=1, size=1500, packed=1)


if __name__ == "__main__":
    run_test("dpdk_packed", body, dpdk_prerequisites())
