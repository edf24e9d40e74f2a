"""vnet-traffic (the project's lean vhost-user front end) in tests: prerequisite check
and the one JSON object it prints when it stops."""

import json

from .procs import HarnessError
from .vnetd import find_program


def require_traffic(args):
    if find_program(args.build_dir, "vnet-traffic") is None:
        return ["vnet-traffic in build dir %s (build it first)" % args.build_dir]
    return []


def result_of(proc):
    """The JSON object vnet-traffic printed (the last line of its log that parses)."""
    for line in reversed(proc.read_log().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise HarnessError("%s printed no JSON result; log tail:\n%s" % (proc.name, proc.log_tail()))
