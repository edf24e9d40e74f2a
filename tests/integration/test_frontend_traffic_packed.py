#!/usr/bin/env python3
"""vnet-traffic --packed through vnetd: test_frontend_traffic.py on packed rings.

The same run as test_frontend_traffic.py (exactly N frames from a paced sender on vhu0
to a checking receiver on vhu1, both sleeping on their call eventfds when idle, then
the two-port generator), with every vnet-traffic negotiating VIRTIO_F_RING_PACKED (and,
as by default, VIRTIO_RING_F_EVENT_IDX: the packed rings' event suppression with
descriptor offsets and wrap counters both ways). Asserted: everything
test_frontend_traffic.py asserts, and RING_PACKED negotiated on both of vnetd's ports.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, require_root, run_test  # noqa: E402
from vnet_harness.traffic import require_traffic  # noqa: E402
from vnet_harness.vnetd import require_vnetd  # noqa: E402
import test_frontend_traffic  # noqa: E402


def body(s, args):
    vnetds = []
    original = test_frontend_traffic.Vnetd.start

    def start(self, *a, **kw):  # keep the Vnetd, to read its log afterwards
        vnetds.append(self)
        return original(self, *a, **kw)
    test_frontend_traffic.Vnetd.start = start
    try:
        test_frontend_traffic.body(s, args, extra=["--packed"])
    finally:
        test_frontend_traffic.Vnetd.start = original
    # vnetd logs the features each session negotiated ("port NAME: features ...").
    text = vnetds[0].proc.read_log(0)
    for port in ("vhu0", "vhu1"):
        lines = [ln for ln in text.splitlines() if "port %s: features" % port in ln]
        if not lines or not all("RING_PACKED" in ln for ln in lines):
            raise HarnessError("%s: sessions without RING_PACKED: %s" % (port, lines))

if __name__ == "__main__":
    run_test("frontend_traffic_packed", body,
             [lambda a: require_root(), require_vnetd, require_traffic])
