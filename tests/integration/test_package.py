#!/usr/bin/env python3
"""The Debian package: build, lintian, install, run as its systemd unit says, purge.

1. The source tree (without .git and build directories) is copied to a temporary
   directory and `dpkg-buildpackage -us -uc -b` builds it there (vnetd and vnetctl
   only, DEB_BUILD_OPTIONS=noopt; the time is printed): nothing is written into the
   repository.
2. `lintian --fail-on error,warning` on the .changes (the .deb and its -dbgsym).
3. The .deb holds /usr/sbin/vnetd, /usr/bin/vnetctl, their man pages, the unit
   vnetd.service and /etc/vnet/vnetd.toml, a conffile.
4. `apt-get install ./vnet_*.deb`; the example configuration passes `vnetd
   --check-config`; the man pages document --check-config and reload.
5. The unit is parsed (Type=notify, RuntimeDirectory, CapabilityBoundingSet,
   NoNewPrivileges, ExecStart, ExecReload) and vnetd is started the way systemd would
   (there is no systemd as PID 1 here): /run/vnet created as RuntimeDirectory=vnet does,
   NOTIFY_SOCKET pointing at a datagram socket of the test, the capability bounding set
   and no_new_privs applied with setpriv. The installed config gets a vhost-user port and
   a TAP port (so CAP_NET_ADMIN is proved enough). Asserted: READY=1, vnetd's effective
   capabilities are exactly the unit's, `vnetctl ports` (default socket
   /run/vnet/vnetd.sock) lists both ports; after a port is added to the file,
   ExecReload exits 0, RELOADING=1 then READY=1 come and the port exists; SIGTERM gives
   STOPPING=1 and exit 0, and /run/vnet is empty.
6. `dpkg --purge vnet`: no file of the package is left, /etc/vnet is gone (the modified
   conffile too), the unit's enablement symlink is gone.
The machine is shared: the test refuses to run when vnet is installed already or
/run/vnet or /etc/vnet exist, and its cleanup purges the package it installed even when
it fails.
"""

import glob
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from vnet_harness import HarnessError, log, require_root, require_tools, run_test  # noqa: E402
from vnet_harness.procs import wait_until  # noqa: E402
from test_reload import Notifications  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = "vnet"
RUNDIR = "/run/vnet"
CONFDIR = "/etc/vnet"
TAP = "vpk%d" % (os.getpid() % 100000)
CAPS = {"CAP_CHOWN": 0, "CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}


def sh(*argv, check=True, timeout=600, env=None, cwd=None):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                       env=env, cwd=cwd)
    if check and r.returncode != 0:
        raise HarnessError("%s: status %d:\n%s%s" % (" ".join(map(str, argv)), r.returncode,
                                                     r.stdout[-3000:], r.stderr[-3000:]))
    return r


def installed(pkg):
    r = sh("dpkg-query", "-W", "-f=${Status}", pkg, check=False)
    return r.returncode == 0 and "installed" in r.stdout and "not-installed" not in r.stdout


def copy_source(dest):
    """The source tree without .git, build trees and caches."""
    def ignore(d, names):
        top = os.path.abspath(d) == REPO
        return [n for n in names if n in (".git", "__pycache__", "obj-x86_64-linux-gnu")
                or (top and (n.startswith("build") or n == "out"))
                or (os.path.basename(d) == "debian" and n in ("man", ".debhelper", "vnet"))]
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


def tree(root):
    """The repository's files outside build trees and .git (to prove the build left it)."""
    out = set()
    for d, dirs, names in os.walk(root):
        if d == root:
            dirs[:] = [n for n in dirs if n != ".git" and not n.startswith("build")]
        out.update(os.path.join(d, n) for n in names)
    return out


def unit_fields(path):
    fields = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                continue
            k, v = line.split("=", 1)
            fields.setdefault(k.strip(), []).append(v.strip())
    return fields


def one(fields, key):
    v = fields.get(key)
    if not v or len(v) != 1:
        raise HarnessError("vnetd.service: expected one %s=, got %s" % (key, v))
    return v[0]


def cap_eff(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise HarnessError("no CapEff for pid %d" % pid)


def package_files(deb):
    """Regular files and links the .deb installs (paths without the leading '.')."""
    out = sh("dpkg-deb", "-c", deb).stdout
    files = []
    for line in out.splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("d"):
            path = parts[5] if len(parts) > 5 else parts[-1]
            files.append(path[1:] if path.startswith(".") else path)
    return files


def body(s, args):
    # The machine is shared: never touch an install that is not ours.
    if installed(PACKAGE):
        raise HarnessError("package %s is installed already: not touching it" % PACKAGE)
    for d in (RUNDIR, CONFDIR):
        if os.path.exists(d):
            raise HarnessError("%s exists (another vnetd or install?): not touching it" % d)

    # 1. build in a copy of the source
    repo_before = tree(REPO)
    work = s.path("pkg")
    src = os.path.join(work, "vnet")
    copy_source(src)
    # noopt (debian/rules: -O0, no -O3): what is checked here is the packaging, and
    # optimizing took half of this test's time in CI.
    env = dict(os.environ, DEB_BUILD_OPTIONS="parallel=%d noopt" % os.cpu_count())
    t0 = time.monotonic()
    r = sh("dpkg-buildpackage", "-us", "-uc", "-b", cwd=src, env=env, check=False, timeout=1700)
    build_s = time.monotonic() - t0
    with open(s.path("dpkg-buildpackage.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise HarnessError("dpkg-buildpackage: status %d:\n%s" % (r.returncode,
                                                                 (r.stdout + r.stderr)[-4000:]))
    log("dpkg-buildpackage -us -uc -b: %.0f s" % build_s)
    debs = glob.glob(os.path.join(work, "vnet_*.deb"))
    changes = glob.glob(os.path.join(work, "vnet_*.changes"))
    if len(debs) != 1 or len(changes) != 1:
        raise HarnessError("expected one vnet .deb and .changes in %s: %s" % (work,
                                                                           os.listdir(work)))
    deb = debs[0]
    if tree(REPO) != repo_before:
        raise HarnessError("the package build changed the repository's tree")

    # 2. lintian
    r = sh("lintian", "--fail-on", "error,warning", "--info", changes[0], check=False,
           timeout=600)
    log("lintian (status %d):\n%s" % (r.returncode, (r.stdout + r.stderr).strip() or "clean"))
    if r.returncode != 0:
        raise HarnessError("lintian found errors or warnings:\n%s%s" % (r.stdout, r.stderr))

    # 3. contents
    files = package_files(deb)
    want = ["/usr/sbin/vnetd", "/usr/bin/vnetctl", "/usr/share/man/man8/vnetd.8.gz",
            "/usr/share/man/man1/vnetctl.1.gz", "/etc/vnet/vnetd.toml"]
    units = [f for f in files if f.endswith("/systemd/system/vnetd.service")]
    missing = [f for f in want if f not in files]
    if missing or len(units) != 1:
        raise HarnessError("the .deb lacks %s (or vnetd.service: %s); it has %s"
                           % (missing, units, files))
    conffiles = sh("dpkg-deb", "-I", deb, "conffiles").stdout.split()
    if "/etc/vnet/vnetd.toml" not in conffiles:
        raise HarnessError("/etc/vnet/vnetd.toml is not a conffile: %s" % conffiles)

    # 4. install; cleanup purges it whatever happens next
    s.cleanup.push("purge %s" % PACKAGE, lambda: sh("dpkg", "--purge", PACKAGE, check=False))
    s.cleanup.push("files of %s" % PACKAGE, lambda: [shutil.rmtree(d, ignore_errors=True)
                                                      for d in (RUNDIR,)])
    s.cleanup.push("TAP %s" % TAP, lambda: sh("ip", "link", "del", TAP, check=False))
    sh("apt-get", "install", "-y", "-q", "--no-install-recommends", deb,
       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if not installed(PACKAGE):
        raise HarnessError("apt-get install did not install %s" % PACKAGE)
    missing = [f for f in files if not os.path.lexists(f)]
    if missing:
        raise HarnessError("after install, missing: %s" % missing)
    r = sh("/usr/sbin/vnetd", "--check-config", "/etc/vnet/vnetd.toml")
    log(r.stdout.strip())
    for page, words in (("/usr/share/man/man8/vnetd.8.gz", ("check\\-config", "SIGHUP")),
                        ("/usr/share/man/man1/vnetctl.1.gz", ("reload",))):
        text = sh("zcat", page).stdout
        if not all(w in text for w in words):
            raise HarnessError("man page %s lacks %s" % (page, words))

    # 5. run it as the unit says
    unit = unit_fields(units[0])
    if one(unit, "Type") != "notify" or one(unit, "RuntimeDirectory") != "vnet" \
            or one(unit, "NoNewPrivileges") != "yes" or one(unit, "Restart") != "on-failure":
        raise HarnessError("vnetd.service: Type, RuntimeDirectory, NoNewPrivileges or Restart "
                           "not as expected: %s" % unit)
    caps = one(unit, "CapabilityBoundingSet").split()
    unknown = [c for c in caps if c not in CAPS]
    if unknown:
        raise HarnessError("vnetd.service wants capabilities the test does not know: %s" % caps)
    with open("/etc/vnet/vnetd.toml", "a") as f:
        f.write('\n[[port]]\nname = "vm1"\ntype = "vhost-user"\nsocket = "/run/vnet/vm1.sock"\n'
                '\n[[port]]\nname = "uplink"\ntype = "tap"\nifname = "%s"\n' % TAP)
    os.mkdir(RUNDIR, int(one(unit, "RuntimeDirectoryMode") if "RuntimeDirectoryMode" in unit
                         else "0755", 8))
    notify = Notifications(s)
    setpriv = ["setpriv", "--bounding-set",
               ",".join(["-all"] + ["+" + c[4:].lower() for c in caps]), "--no-new-privs", "--"]
    start = shlex.split(one(unit, "ExecStart"))
    vnetd = s.spawn("vnetd", setpriv + start, env=dict(os.environ, NOTIFY_SOCKET=notify.path),
                    stop_timeout=10.0)
    notify.expect("READY", timeout=30)
    want_caps = sum(1 << CAPS[c] for c in caps)
    if cap_eff(vnetd.pid) != want_caps:
        raise HarnessError("vnetd's effective capabilities %#x, the unit allows %#x"
                           % (cap_eff(vnetd.pid), want_caps))
    out = sh("vnetctl", "--json", "ports").stdout
    if '"vm1"' not in out or '"uplink"' not in out:
        raise HarnessError("vnetctl ports through /run/vnet: %s" % out)
    if not os.path.exists("/run/vnet/vm1.sock") or sh("ip", "link", "show", TAP,
                                                      check=False).returncode:
        raise HarnessError("READY=1 but vm1's socket or TAP %s is missing" % TAP)
    log("READY=1 with capabilities %s; vnetctl ports lists vm1 and uplink" % caps)

    with open("/etc/vnet/vnetd.toml", "a") as f:
        f.write('\n[[port]]\nname = "vm2"\ntype = "vhost-user"\nsocket = "/run/vnet/vm2.sock"\n')
    reload_cmd = [a.replace("$MAINPID", str(vnetd.pid))
                  for a in shlex.split(one(unit, "ExecReload"))]
    r = sh(*reload_cmd, check=False)
    if r.returncode != 0:
        raise HarnessError("ExecReload %s: status %d: %s%s" % (reload_cmd, r.returncode,
                                                               r.stdout, r.stderr))
    notify.expect("RELOADING")
    notify.expect("READY")
    if '"vm2"' not in sh("vnetctl", "--json", "ports").stdout:
        raise HarnessError("ExecReload did not add vm2")
    log("ExecReload (%s): vm2 added" % " ".join(reload_cmd))

    rc = vnetd.stop(10.0)
    notify.expect("STOPPING", timeout=5)
    if rc != 0:
        raise HarnessError("vnetd exited with status %s on SIGTERM" % rc)
    left = os.listdir(RUNDIR)
    if left:
        raise HarnessError("vnetd left %s in %s" % (left, RUNDIR))
    os.rmdir(RUNDIR)  # RuntimeDirectory= removes it when the service stops

    # 6. purge
    sh("dpkg", "--purge", PACKAGE)
    if installed(PACKAGE):
        raise HarnessError("%s still installed after dpkg --purge" % PACKAGE)
    left = [f for f in files if os.path.lexists(f)]
    left += [p for p in (CONFDIR, "/etc/systemd/system/multi-user.target.wants/vnetd.service")
             if os.path.lexists(p)]
    if left:
        raise HarnessError("left after purge: %s" % left)
    log("purged: nothing of %s left" % PACKAGE)


def prerequisites():
    return [lambda a: require_root(),
            lambda a: require_tools("dpkg-buildpackage", "dh", "lintian", "help2man", "apt-get",
                                    "setpriv", "cmake", "ninja")]


if __name__ == "__main__":
    run_test("test_package", body, prerequisites())
