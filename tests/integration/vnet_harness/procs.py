"""Process management for integration tests.

Every peer (vnetd, testpmd, QEMU) runs as a child in its own process group
with its output in a log file of the test's temporary directory.  A
`Cleanup` registry undoes everything a test created (processes, sockets,
hugepage files, directories) in reverse order, on success, failure, Ctrl-C
or SIGTERM.  Processes are only ever signalled by the PID we started
(its process group id is the same number), never by name.
"""

import ctypes
import os
import re
import signal
import subprocess
import sys
import time


class HarnessError(Exception):
    """A test expectation or a peer failed; the message says what and where."""


def log(msg):
    """Progress line on stderr (ctest shows it with --output-on-failure)."""
    sys.stderr.write("[%8.3f] %s\n" % (time.monotonic() - _T0, msg))
    sys.stderr.flush()


_T0 = time.monotonic()

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _child_setup():
    # Runs in the child between fork and exec: die with the harness if it is
    # SIGKILLed (ctest timeout), so no busy-polling peer outlives a test.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


class Cleanup:
    """LIFO registry of undo actions; each runs once, errors are reported, not raised."""

    def __init__(self):
        self._actions = []

    def push(self, description, fn, *args, **kwargs):
        self._actions.append((description, fn, args, kwargs))

    def run(self):
        failed = []
        while self._actions:
            description, fn, args, kwargs = self._actions.pop()
            try:
                fn(*args, **kwargs)
            except Exception as e:  # keep cleaning the rest
                failed.append("%s: %s" % (description, e))
                log("cleanup of %s failed: %s" % (description, e))
        return failed


class Process:
    """A child process in its own process group, output appended to log_path."""

    def __init__(self, name, argv, log_path, stdin_pipe=False, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self._log_file = open(log_path, "ab", buffering=0)
        self._log_file.write(("$ %s\n" % " ".join(self.argv)).encode())
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # own session => own process group, pgid == pid
            preexec_fn=_child_setup,
        )
        self.pid = self.popen.pid
        self.started_at = time.monotonic()
        log("started %s pid %d (log %s)" % (name, self.pid, os.path.basename(log_path)))

    # --- state -----------------------------------------------------------
    def alive(self):
        return self.popen.poll() is None

    @property
    def returncode(self):
        return self.popen.poll()

    # --- log ---------------------------------------------------------------
    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def read_log(self, start=0):
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")

    def log_tail(self, lines=40):
        return "\n".join(self.read_log().splitlines()[-lines:])

    def wait_for_log(self, pattern, timeout, start=0, flags=re.MULTILINE):
        """Wait until regex `pattern` matches the log from byte `start`; return the match.

        Fails at once if the process exits first, with the log's tail in the message."""
        rx = re.compile(pattern, flags)
        deadline = time.monotonic() + timeout
        while True:
            text = self.read_log(start)
            m = rx.search(text)
            if m:
                return m
            if not self.alive():
                # One last read: output written just before exit.
                m = rx.search(self.read_log(start))
                if m:
                    return m
                raise HarnessError(
                    "%s (pid %d) exited with status %s before /%s/ appeared; log tail:\n%s"
                    % (self.name, self.pid, self.returncode, pattern, self.log_tail()))
            if time.monotonic() > deadline:
                raise HarnessError("timeout (%.0f s) waiting for /%s/ in %s log; tail:\n%s"
                                   % (timeout, pattern, self.name, self.log_tail()))
            time.sleep(0.05)

    # --- input -------------------------------------------------------------
    def send(self, text):
        if self.popen.stdin is None:
            raise HarnessError("%s was not started with a stdin pipe" % self.name)
        if not self.alive():
            raise HarnessError("%s (pid %d) is not running (status %s); log tail:\n%s"
                               % (self.name, self.pid, self.returncode, self.log_tail()))
        self.popen.stdin.write(text.encode())
        self.popen.stdin.flush()

    # --- stopping ------------------------------------------------------------
    def _signal_group(self, sig):
        # The group was created by us (start_new_session) and its id is our child's PID.
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=5.0, sig=signal.SIGTERM):
        """SIGTERM (or `sig`), then SIGKILL after `timeout`; returns the exit status."""
        if self.alive():
            self._signal_group(sig)
            if self.wait(timeout) is None:
                log("%s (pid %d) ignored %s for %.0f s: SIGKILL"
                    % (self.name, self.pid, signal.Signals(sig).name, timeout))
                self._signal_group(signal.SIGKILL)
                self.wait(None)
        # Reap leftovers of the group (children that outlived the leader).
        self._signal_group(signal.SIGKILL)
        self._close()
        return self.returncode

    def kill(self):
        """SIGKILL the whole group at once (simulates a crash)."""
        self._signal_group(signal.SIGKILL)
        self.popen.wait()
        self._close()
        return self.popen.returncode

    def _close(self):
        if self.popen.stdin is not None and not self.popen.stdin.closed:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        if not self._log_file.closed:
            self._log_file.close()


def become_subreaper():
    """Make the harness the child subreaper of everything it starts: a descendant whose
    parent exits (the vnetd an upgrade starts, forked by the vnetd it replaces) is
    re-parented to the harness, which can then wait for it (`AdoptedProcess`).  Call it
    before that parent can exit.  Idempotent."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise HarnessError("prctl(PR_SET_CHILD_SUBREAPER): %s"
                           % os.strerror(ctypes.get_errno()))


def child_pids(pid):
    """PIDs of the processes whose parent is `pid` (from /proc/*/stat), zombies included."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


class AdoptedProcess(Process):
    """A process the harness did not start but inherited as child subreaper
    (`become_subreaper()`): a vnetd started by an upgrade.  Same interface as `Process` for
    its state, log (the file it inherited as its output), waiting and stopping; signalled by
    its PID alone, never its process group (it may share the group of the process that
    started it), and never once reaped.  It has no PDEATHSIG: the harness stops it at
    cleanup."""

    def __init__(self, name, pid, log_path):
        self.name = name
        self.argv = []
        self.log_path = log_path
        self.popen = None
        self.pid = pid
        self.started_at = time.monotonic()
        self._status = None

    def _reap(self, block=False):
        if self._status is None:
            try:
                pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            except ChildProcessError:
                raise HarnessError("%s (pid %d) is not a child of the harness (not re-parented "
                                   "to it: is the harness a child subreaper?)"
                                   % (self.name, self.pid))
            if pid == self.pid:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status

    def alive(self):
        return self._reap() is None

    @property
    def returncode(self):
        return self._reap()

    def send(self, text):
        raise HarnessError("%s (pid %d) has no stdin pipe (adopted)" % (self.name, self.pid))

    def _signal_group(self, sig):
        # Only this PID, and only while it is not reaped (its number could be reused).
        if self._reap() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._reap() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.01)
        return self._status

    def kill(self):
        self._signal_group(signal.SIGKILL)
        return self.wait(None)

    def _close(self):
        pass


def wait_until(predicate, timeout, interval=0.1, what="condition"):
    """Poll `predicate()` until it returns a true value (returned) or fail after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise HarnessError("timeout (%.0f s) waiting for %s" % (timeout, what))
        time.sleep(interval)
