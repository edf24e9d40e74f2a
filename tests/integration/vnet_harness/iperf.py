"""iperf3 text output: the sender and receiver summary lines of a TCP run."""

import re

from .procs import HarnessError

_SUMMARY = re.compile(r"^\[\s*\d+\]\s+[\d.]+-[\d.]+\s+sec\s+([\d.]+)\s+(\w?)Bytes\s+"
                      r"([\d.]+)\s+(\w?)bits/sec.*?\b(sender|receiver)\s*$", re.MULTILINE)
_UNIT = {"": 1e-6, "K": 1e-3, "M": 1.0, "G": 1e3}


class Result:
    def __init__(self, sender_mbps, receiver_mbps, receiver_mbytes, text):
        self.sender_mbps = sender_mbps
        self.receiver_mbps = receiver_mbps
        self.receiver_mbytes = receiver_mbytes
        self.text = text

    @property
    def gbps(self):
        return self.receiver_mbps / 1000.0

    def __str__(self):
        return "%.3f Gbit/s (%.1f MBytes received)" % (self.gbps, self.receiver_mbytes)


def parse_iperf3(text, rc, what):
    """Parse `iperf3 -f m` client output; fails unless it completed with data received."""
    lines = {m.group(5): m for m in _SUMMARY.finditer(text)}
    if rc != 0 or "sender" not in lines or "receiver" not in lines:
        raise HarnessError("%s did not complete (status %d):\n%s" % (what, rc, text[-3000:]))
    if "iperf Done" not in text:
        raise HarnessError("%s: no 'iperf Done':\n%s" % (what, text[-3000:]))

    def mbps(m):
        return float(m.group(3)) * _UNIT.get(m.group(4), 1.0)

    def mbytes(m):
        return float(m.group(1)) * {"": 1e-6, "K": 1e-3, "M": 1.0, "G": 1e3}.get(m.group(2), 1.0)
    return Result(mbps(lines["sender"]), mbps(lines["receiver"]), mbytes(lines["receiver"]), text)
