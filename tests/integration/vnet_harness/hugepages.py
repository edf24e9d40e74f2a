"""Hugepage setup for DPDK peers and removal of the files each testpmd leaves.

DPDK keeps its hugepage backing files (`<mount>/<file-prefix>map_<n>`) and its
runtime directory (`/var/run/dpdk/<file-prefix>`) after it exits, even on a
clean `quit`; every testpmd the harness starts gets a unique prefix and these
are removed once it has exited.
"""

import os
import shutil
import subprocess

from .procs import HarnessError, log

DEFAULT_PAGES = 1024  # 2 MiB pages: room for three or four 512 MiB testpmds
HUGEPAGE_MOUNT = "/dev/hugepages"


def hugetlbfs_mounts():
    mounts = []
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "hugetlbfs":
                mounts.append(fields[1])
    return mounts


def meminfo(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def ensure_hugepages(pages=DEFAULT_PAGES):
    """Idempotent: at least `pages` 2 MiB pages reserved and hugetlbfs mounted."""
    with open("/proc/sys/vm/nr_hugepages") as f:
        current = int(f.read())
    if current < pages:
        try:
            with open("/proc/sys/vm/nr_hugepages", "w") as f:
                f.write(str(pages))
        except OSError as e:
            raise HarnessError("cannot reserve %d hugepages: %s (needs root)" % (pages, e))
        got = meminfo("HugePages_Total")
        if got < pages:
            raise HarnessError("asked for %d hugepages, kernel gave %d" % (pages, got))
        log("reserved %d hugepages" % got)
    if not hugetlbfs_mounts():
        os.makedirs(HUGEPAGE_MOUNT, exist_ok=True)
        r = subprocess.run(["mount", "-t", "hugetlbfs", "nodev", HUGEPAGE_MOUNT],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError("mount hugetlbfs on %s failed: %s" % (HUGEPAGE_MOUNT, r.stderr))
        log("mounted hugetlbfs on %s" % HUGEPAGE_MOUNT)
    return hugetlbfs_mounts()


def free_hugepages():
    return meminfo("HugePages_Free")


def dpdk_runtime_dir(prefix):
    if os.geteuid() == 0:
        base = "/var/run/dpdk"
    else:
        base = os.path.join(os.environ.get("XDG_RUNTIME_DIR", "/tmp"), "dpdk")
    return os.path.join(base, prefix)


def remove_prefix_files(prefix):
    """Remove the hugepage files and runtime directory of one (exited) DPDK process."""
    if not prefix or "/" in prefix:
        raise ValueError("bad DPDK file prefix %r" % prefix)
    removed = 0
    stem = prefix + "map_"
    for mount in hugetlbfs_mounts():
        try:
            names = os.listdir(mount)
        except OSError:
            continue
        for name in names:
            # Exact stem match: prefix "a" must not remove files of prefix "ab".
            if name.startswith(stem) and name[len(stem):].replace("_", "").isdigit():
                try:
                    os.unlink(os.path.join(mount, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    shutil.rmtree(dpdk_runtime_dir(prefix), ignore_errors=True)
    return removed
