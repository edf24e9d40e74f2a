"""Per-test session: temp dir, log files, cleanup, exit codes for ctest.

A test script is `run_test(name, body, prerequisites)`: it parses `--build-dir`,
checks prerequisites (skip with 77 outside CI, fail in CI: env CI=true), runs
`body(session)` and always cleans up.  Exit codes: 0 pass, 1 fail, 77 skip.
On failure the logs are copied to `<build-dir>/integration-logs/<name>/` and
their tails are printed.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback

from . import hugepages
from .procs import Cleanup, HarnessError, Process, log

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_SKIP = 77


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class Terminated(BaseException):
    """Raised from the SIGTERM handler so cleanup runs as for Ctrl-C."""


class Session:
    """Owns everything one test creates; `with Session(...) as s:` cleans it all."""

    def __init__(self, name, build_dir=None, keep_logs=False):
        self.name = name
        self.build_dir = os.path.abspath(build_dir) if build_dir else None
        self.keep_logs = keep_logs
        self.cleanup = Cleanup()
        self.processes = []
        self._prefix_seq = 0
        # Short path: Unix socket paths must stay under 108 bytes.
        self.tmp = tempfile.mkdtemp(prefix="vnet-%s-" % name[:12])
        self.failed = False

    # --- context manager ----------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.failed = exc_type is not None
        self.close()
        return False

    def close(self):
        # A second Ctrl-C or SIGTERM must not interrupt the cleanup half way: hold
        # them until everything is undone (cleanup starts no processes).
        held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            problems = self.cleanup.run()
            if self.failed or problems:
                self._save_logs()
            if self.keep_logs:
                log("kept %s" % self.tmp)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        if problems:
            raise HarnessError("cleanup problems: %s" % "; ".join(problems))

    def _save_logs(self):
        for p in self.processes:
            try:
                sys.stderr.write("----- %s (pid %d, status %s) log tail -----\n%s\n"
                                 % (p.name, p.pid, p.returncode, p.log_tail(30)))
            except OSError:
                pass
        if not self.build_dir:
            return
        dest = os.path.join(self.build_dir, "integration-logs", self.name)
        try:
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest, exist_ok=True)
            for entry in os.listdir(self.tmp):
                if entry.endswith(".log"):
                    shutil.copy(os.path.join(self.tmp, entry), dest)
            log("logs saved in %s" % dest)
        except OSError as e:
            log("could not save logs: %s" % e)

    # --- resources ------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.tmp, name)

    def spawn(self, name, argv, stdin_pipe=False, env=None, stop_timeout=5.0, after_stop=None):
        """Start a process; cleanup stops it (SIGTERM then SIGKILL) and runs after_stop()."""
        log_path = self.path("%s.log" % name)
        p = Process(name, argv, log_path, stdin_pipe=stdin_pipe, env=env)
        self.processes.append(p)
        if after_stop is not None:
            self.cleanup.push("%s files" % name, after_stop)
        self.cleanup.push("process %s" % name, p.stop, stop_timeout)
        return p

    def dpdk_prefix(self, role):
        """A unique --file-prefix, whose hugepage files are removed at cleanup."""
        self._prefix_seq += 1
        prefix = "vnt%d%s%d" % (os.getpid(), role, self._prefix_seq)
        self.cleanup.push("hugepage files %s" % prefix, hugepages.remove_prefix_files, prefix)
        return prefix

    def remove_file_later(self, path):
        def rm():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.cleanup.push("file %s" % path, rm)


# --- prerequisites ------------------------------------------------------------

def require_root():
    return [] if os.geteuid() == 0 else ["root (hugepages, QEMU memfd sharing)"]


def require_tools(*tools):
    return ["program %s" % t for t in tools if shutil.which(t) is None]


def parse_args(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.environ.get("VNET_BUILD_DIR", "build"),
                    help="CMake build directory holding vnetd and vnetctl")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temp dir")
    return ap.parse_args(argv)


def run_test(name, body, prerequisites=(), argv=None):
    """Entry point of a test script; never returns (sys.exit)."""
    args = parse_args(argv)
    missing = []
    for check in prerequisites:
        missing.extend(check(args))
    if missing:
        msg = "missing prerequisites: " + ", ".join(missing)
        if in_ci():
            print("FAIL %s: %s (CI=true, so this is a failure)" % (name, msg))
            sys.exit(EXIT_FAIL)
        print("SKIP %s: %s" % (name, msg))
        sys.exit(EXIT_SKIP)

    def on_term(signum, frame):
        raise Terminated("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    t0 = time.monotonic()
    status = EXIT_FAIL
    try:
        with Session(name, args.build_dir, args.keep_logs) as s:
            body(s, args)
        status = EXIT_PASS
    except HarnessError as e:
        print("FAIL %s: %s" % (name, e))
    except (KeyboardInterrupt, Terminated) as e:
        print("ABORTED %s: %r (cleaned up)" % (name, e))
        status = 130
    except Exception:
        traceback.print_exc()
        print("FAIL %s: unexpected exception" % name)
    if status == EXIT_PASS:
        print("PASS %s (%.1f s)" % (name, time.monotonic() - t0))
    sys.stdout.flush()
    sys.exit(status)
