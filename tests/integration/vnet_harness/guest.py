"""Linux guest for QEMU: initramfs builder and launcher.

The initramfs holds busybox-static, the virtio-net modules of the installed
Debian cloud kernel (found at run time under /boot and /lib/modules, load
order from modules.dep), optional extra programs with their shared libraries
(iperf3, ethtool), and an /init that:
  - mounts proc, sys, dev; loads the modules; brings up lo and eth0 with
    `vnet.ip=ADDR/LEN` from the kernel command line (the MAC is QEMU's
    `-device ...,mac=`);
  - `vnet.mode=oneshot`: runs the shell script in `vnet.cmd=<base64>`, prints
    `VNET-EXIT rc=N` and powers off;
  - `vnet.mode=serve` (default): prints `VNET-READY`, then reads lines
    `<id> <base64 script>` from the serial console and answers each with
    `VNET-BEGIN <id>`, the output, `VNET-END <id> rc=N`.
The image is built once per (kernel, busybox, init) and cached under the
build directory.  It is written as a newc cpio by Python (so /dev/console can
be a device node without mknod).
"""

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import socket as socketlib
import stat
import subprocess
import time

from .procs import HarnessError, log, wait_until

MODULES = ["virtio_net", "virtio_pci"]

# QEMU virtio-net-pci properties that turn off every checksum and segmentation
# offload in both directions (the guest then computes and verifies checksums itself).
OFFLOADS_OFF = {p: "off" for p in (
    "csum", "guest_csum", "gso", "host_tso4", "host_tso6", "host_ecn", "host_ufo",
    "guest_tso4", "guest_tso6", "guest_ecn", "guest_ufo")}

INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 1 > /proc/sys/kernel/printk
exec </dev/ttyS0 >/dev/ttyS0 2>&1
stty -echo 2>/dev/null
echo VNET-INIT
for m in $(cat /etc/vnet-modules); do
  insmod /lib/modules/$m || echo "VNET-ERROR insmod $m"
done
IP=; MODE=serve; CMD=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vnet.ip=*) IP="${arg#vnet.ip=}" ;;
    vnet.mode=*) MODE="${arg#vnet.mode=}" ;;
    vnet.cmd=*) CMD="${arg#vnet.cmd=}" ;;
  esac
done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  [ -n "$IP" ] && ip addr add "$IP" dev eth0
  ip link set eth0 up
  echo "VNET-NET eth0 $(cat /sys/class/net/eth0/address) ${IP:-noip}"
else
  echo "VNET-ERROR no eth0"
fi
if [ "$MODE" = oneshot ]; then
  echo "$CMD" | base64 -d > /tmp/cmd.sh
  sh /tmp/cmd.sh </dev/null
  echo "VNET-EXIT rc=$?"
  poweroff -f
fi
echo VNET-READY
while read -r id b64; do
  [ -z "$id" ] && continue
  echo "$b64" | base64 -d > /tmp/c.sh
  echo "VNET-BEGIN $id"
  sh /tmp/c.sh </dev/null 2>&1
  echo "VNET-END $id rc=$?"
done
echo "VNET-EXIT rc=0"
poweroff -f
"""


def kernel_version():
    """Newest kernel with both /boot/vmlinuz-V and /lib/modules/V/modules.dep."""
    found = []
    for name in os.listdir("/boot") if os.path.isdir("/boot") else []:
        if name.startswith("vmlinuz-"):
            v = name[len("vmlinuz-"):]
            if os.path.exists(os.path.join("/lib/modules", v, "modules.dep")):
                found.append(v)
    if not found:
        return None
    # Prefer a cloud kernel (what the package list installs), then the highest version.
    found.sort(key=lambda v: ("cloud" in v, [int(x) if x.isdigit() else 0
                                              for x in re.split(r"[.-]", v)]))
    return found[-1]


def require_guest(_args=None):
    """Prerequisite check for QEMU tests: returns a list of what is missing."""
    missing = []
    for tool in ("qemu-system-x86_64",):
        if shutil.which(tool) is None:
            missing.append("program %s (qemu-system-x86)" % tool)
    if _busybox() is None:
        missing.append("static busybox (busybox-static)")
    v = kernel_version()
    if v is None:
        missing.append("a kernel in /boot with modules in /lib/modules (linux-image-cloud-amd64)")
    elif not os.access(os.path.join("/boot", "vmlinuz-" + v), os.R_OK):
        missing.append("read access to /boot/vmlinuz-%s" % v)
    return missing


def _is_static_elf(path):
    """True for an ELF executable without a PT_INTERP program header (statically linked)."""
    import struct
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(data):
            return False
        p_type, = struct.unpack_from("<I", data, off)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _busybox():
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(cand) and _is_static_elf(os.path.realpath(cand)):
            return cand
    return None


def module_load_order(version, wanted=MODULES):
    """Relative module paths (kernel/...) in dependency order, from modules.dep."""
    deps = {}
    with open(os.path.join("/lib/modules", version, "modules.dep")) as f:
        for line in f:
            if ":" not in line:
                continue
            mod, rest = line.split(":", 1)
            deps[mod.strip()] = rest.split()
    by_name = {}
    for mod in deps:
        base = os.path.basename(mod).split(".ko")[0].replace("-", "_")
        by_name[base] = mod
    order = []

    def visit(mod):
        if mod in order:
            return
        for d in deps.get(mod, []):
            visit(d)
        order.append(mod)

    for name in wanted:
        mod = by_name.get(name)
        if mod is None:
            # Built into the kernel (modules.builtin) needs no loading.
            continue
        visit(mod)
    return order


def _module_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        import lzma
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    return data


def _shared_libs(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m and os.path.exists(m.group(1)):
            libs.append(m.group(1))
    return libs


class _Cpio:
    """Minimal writer of the newc cpio format the kernel unpacks as initramfs."""

    def __init__(self):
        self.out = bytearray()
        self.ino = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1],
            len(name_b), 0))
        self.ino += 1
        self.out += hdr.encode() + name_b
        self.out += b"\0" * ((4 - len(self.out) % 4) % 4)
        self.out += data
        self.out += b"\0" * ((4 - len(self.out) % 4) % 4)

    def mkdir(self, path):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d and d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755)

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFREG | mode, data)

    def symlink(self, path, target):
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, path, major, minor):
        path = path.strip("/")
        self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.out)


class GuestImage:
    """Kernel + cached initramfs.  `GuestImage.build(cache_dir)` returns one."""

    def __init__(self, kernel, initrd, version):
        self.kernel = kernel
        self.initrd = initrd
        self.version = version

    @classmethod
    def build(cls, cache_dir, extra_programs=("iperf3", "ethtool")):
        version = kernel_version()
        if version is None:
            raise HarnessError("no kernel with modules found under /boot and /lib/modules")
        busybox = _busybox()
        if busybox is None:
            raise HarnessError("no static busybox (install busybox-static)")
        kernel = os.path.join("/boot", "vmlinuz-" + version)
        mods = module_load_order(version)
        programs = [shutil.which(p) for p in extra_programs if shutil.which(p)]
        key = hashlib.sha256()
        for item in [INIT_SCRIPT, version, busybox] + mods + programs:
            key.update(item.encode() + b"\0")
        for p in [busybox] + programs:
            key.update(str(os.stat(p).st_mtime_ns).encode())
        digest = key.hexdigest()[:16]
        os.makedirs(cache_dir, exist_ok=True)
        initrd = os.path.join(cache_dir, "vnet-guest-%s.cpio.gz" % digest)
        if os.path.exists(initrd):
            return cls(kernel, initrd, version)

        t0 = time.monotonic()
        c = _Cpio()
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "tmp", "etc", "root"):
            c.mkdir(d)
        c.chardev("dev/console", 5, 1)
        c.chardev("dev/null", 1, 3)
        with open(busybox, "rb") as f:
            c.file("bin/busybox", f.read(), 0o755)
        c.symlink("bin/sh", "busybox")
        c.file("init", INIT_SCRIPT.encode(), 0o755)
        names = []
        for rel in mods:
            src = os.path.join("/lib/modules", version, rel)
            name = os.path.basename(rel).split(".ko")[0] + ".ko"
            c.file("lib/modules/" + name, _module_bytes(src))
            names.append(name)
        c.file("etc/vnet-modules", ("\n".join(names) + "\n").encode())
        seen = set()
        for prog in programs:
            with open(prog, "rb") as f:
                c.file("usr/bin/" + os.path.basename(prog), f.read(), 0o755)
            for lib in _shared_libs(prog):
                for path in {lib, os.path.realpath(lib)}:
                    if path in seen:
                        continue
                    seen.add(path)
                    with open(os.path.realpath(lib), "rb") as f:
                        c.file(path, f.read(), 0o755)
        tmp = initrd + ".tmp%d" % os.getpid()
        with open(tmp, "wb") as f:
            f.write(gzip.compress(c.finish(), compresslevel=6))
        os.replace(tmp, initrd)
        log("built guest initramfs %s (%d modules, %s) in %.1f s"
            % (os.path.basename(initrd), len(names), ", ".join(names), time.monotonic() - t0))
        return cls(kernel, initrd, version)


def b64(script):
    return base64.b64encode(script.encode()).decode()


class QemuGuest:
    """One QEMU TCG guest with one vhost-user virtio-net device.

    socket:      vhost-user socket path
    server:      False: QEMU connects to a listening back end (socket must exist);
                 True:  QEMU listens (`server=on,wait=off`) and the back end connects.
                 QEMU 7.2's vhost-user netdev still waits during start-up until a
                 back end has connected, so the guest boots only once one has.
    qmp:         True: a QMP monitor on a Unix socket (`-qmp unix:PATH,server=on,wait=off`,
                 PATH = session dir / NAME.qmp); `qmp()` returns a connected `Qmp`.
    incoming:    a migration target: `-incoming URI` ("unix:PATH", or "defer" for QMP
                 `migrate-incoming`).  `migration_target()` makes one with the same machine
                 and device options.  A target does not boot: once the migration has
                 completed, `run()` on it talks to the migrated guest's /init.
    """

    def __init__(self, session, name, image, socket, ip, mac, server=False, mem_mb=256,
                 mode="serve", oneshot_script=None, extra_append="", device_props=None,
                 smp=1, queues=1, packed=False, qmp=False, incoming=None):
        self.session = session
        self.name = name
        self.image = image
        self.socket = socket
        self.ip = ip
        self.mac = mac
        self.server = server
        self.mem_mb = mem_mb
        self.mode = mode
        self.oneshot_script = oneshot_script
        self.extra_append = extra_append
        # Extra virtio-net-pci properties: {"host_mtu": 9000, "csum": "off"} or OFFLOADS_OFF.
        self.device_props = dict(device_props or {})
        # Queue pairs of the vhost-user netdev (`queues=N`, device `mq=on` when N > 1),
        # vCPUs, and the packed virtqueue layout (device `packed=on`).
        self.smp = smp
        self.queues = queues
        self.packed = packed
        self.qmp_path = session.path("%s.qmp" % name) if qmp else None
        self.incoming = incoming
        self.proc = None
        self.boot_seconds = None
        self._seq = 0
        self._qmp = None

    def migration_target(self, name, socket, incoming, server=None, qmp=True):
        """A QemuGuest with this one's machine, memory and device options (same MAC, IP and
        kernel command line) on vhost-user socket `socket`, waiting for `-incoming INCOMING`."""
        return QemuGuest(self.session, name, self.image, socket, self.ip, self.mac,
                         server=self.server if server is None else server, mem_mb=self.mem_mb,
                         mode=self.mode, oneshot_script=self.oneshot_script,
                         extra_append=self.extra_append, device_props=self.device_props,
                         smp=self.smp, queues=self.queues, packed=self.packed, qmp=qmp,
                         incoming=incoming)

    def kernel_append(self):
        """The guest kernel's command line: the console and what /init reads (vnet.*)."""
        append = "console=ttyS0 panic=-1 quiet vnet.mode=%s" % self.mode
        if self.ip:
            append += " vnet.ip=%s" % self.ip
        if self.mode == "oneshot":
            append += " vnet.cmd=%s" % b64(self.oneshot_script or "true")
        if self.extra_append:
            append += " " + self.extra_append
        return append

    def argv(self):
        chardev = "socket,id=c0,path=%s" % self.socket
        if self.server:
            chardev += ",server=on,wait=off"
        append = self.kernel_append()
        device = "virtio-net-pci,netdev=n0,vectors=0,mac=%s" % self.mac
        netdev = "vhost-user,id=n0,chardev=c0"
        if self.queues > 1:
            netdev += ",queues=%d" % self.queues
            device += ",mq=on"
        if self.packed:
            device += ",packed=on"
        for k, v in self.device_props.items():
            device += ",%s=%s" % (k, v)
        return [
            "qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-no-user-config",
            "-m", str(self.mem_mb), "-smp", str(self.smp),
            "-object", "memory-backend-memfd,id=mem,size=%dM,share=on" % self.mem_mb,
            "-numa", "node,memdev=mem",
            "-chardev", chardev,
            "-netdev", netdev,
            "-device", device,
            "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-no-reboot", "-kernel", self.image.kernel, "-initrd", self.image.initrd,
            "-append", append,
        ] + (["-qmp", "unix:%s,server=on,wait=off" % self.qmp_path] if self.qmp_path else []) + (
            ["-incoming", self.incoming] if self.incoming else [])

    def start(self):
        self.t0 = time.monotonic()
        if self.qmp_path:
            self.session.remove_file_later(self.qmp_path)
        if self.incoming and self.incoming.startswith("unix:"):
            self.session.remove_file_later(self.incoming[len("unix:"):])
        self.proc = self.session.spawn(self.name, self.argv(), stdin_pipe=True, stop_timeout=3.0)
        return self

    def qmp(self, timeout=30.0):
        """The QMP monitor (qmp=True), connected once QEMU has created its socket."""
        if self._qmp is None:
            if not self.qmp_path:
                raise HarnessError("%s was started without qmp=True" % self.name)

            def connect():
                if not self.proc.alive():
                    raise HarnessError("%s (pid %d) exited with status %s; log tail:\n%s"
                                       % (self.name, self.proc.pid, self.proc.returncode,
                                          self.proc.log_tail()))
                if not os.path.exists(self.qmp_path):
                    return None
                try:
                    return Qmp(self.qmp_path, name=self.name)
                except (ConnectionRefusedError, FileNotFoundError):
                    return None
            self._qmp = wait_until(connect, timeout, interval=0.05,
                                   what="QMP socket of %s" % self.name)
            self.session.cleanup.push("QMP connection of %s" % self.name, self._qmp.close)
        return self._qmp

    def wait_ready(self, timeout=120.0):
        """Wait for `VNET-READY` (serve mode); fails on a module or eth0 error."""
        m = self.proc.wait_for_log(r"^(VNET-READY|VNET-ERROR.*)\r?$", timeout)
        if m.group(1) != "VNET-READY":
            raise HarnessError("%s: %s; console:\n%s" % (self.name, m.group(1),
                                                          self.proc.log_tail()))
        self.boot_seconds = time.monotonic() - self.t0
        log("%s booted in %.1f s" % (self.name, self.boot_seconds))
        return self.boot_seconds

    def run(self, script, timeout=60.0):
        """Run a shell script in the guest (serve mode); returns (rc, output)."""
        self._seq += 1
        cid = "c%d" % self._seq
        start = self.proc.log_size()
        self.proc.send("%s %s\n" % (cid, b64(script)))
        m = self.proc.wait_for_log(r"^VNET-BEGIN %s\r?\n(.*?)^VNET-END %s rc=(\d+)" % (cid, cid),
                                   timeout, start=start, flags=re.MULTILINE | re.DOTALL)
        return int(m.group(2)), m.group(1).replace("\r", "")

    def wait_exit(self, timeout=120.0):
        """Oneshot mode: wait for `VNET-EXIT rc=N`; returns (rc, console text)."""
        m = self.proc.wait_for_log(r"^VNET-EXIT rc=(\d+)", timeout)
        return int(m.group(1)), self.proc.read_log().replace("\r", "")

    def ping(self, target, count=5, timeout=60.0):
        """Ping from the guest; returns (transmitted, received, output)."""
        rc, out = self.run("ping -c %d -W 2 %s" % (count, target), timeout)
        m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
        if not m:
            raise HarnessError("%s: no ping summary (rc %d):\n%s" % (self.name, rc, out))
        return int(m.group(1)), int(m.group(2)), out

    def snmp(self):
        """The guest's /proc/net/snmp + /proc/net/netstat, parsed (netns.parse_snmp)."""
        from .netns import parse_snmp
        rc, out = self.run("cat /proc/net/snmp /proc/net/netstat", timeout=30)
        if rc != 0:
            raise HarnessError("%s: cannot read /proc/net/snmp:\n%s" % (self.name, out))
        return parse_snmp(out)

    def link_stats(self, ifname="eth0"):
        keys = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped",
                "tx_dropped", "rx_errors", "tx_errors")
        rc, out = self.run("cd /sys/class/net/%s/statistics && cat %s" % (ifname, " ".join(keys)),
                           timeout=30)
        vals = out.split()
        if rc != 0 or len(vals) != len(keys):
            raise HarnessError("%s: cannot read %s statistics:\n%s" % (self.name, ifname, out))
        return dict(zip(keys, (int(v) for v in vals)))

    def mtu(self, ifname="eth0"):
        rc, out = self.run("cat /sys/class/net/%s/mtu" % ifname, timeout=30)
        if rc != 0:
            raise HarnessError("%s: cannot read the MTU of %s:\n%s" % (self.name, ifname, out))
        return int(out.strip())

    def set_mtu(self, mtu, ifname="eth0"):
        rc, out = self.run("ip link set dev %s mtu %d" % (ifname, mtu), timeout=30)
        if rc != 0:
            raise HarnessError("%s: ip link set %s mtu %d failed:\n%s" % (self.name, ifname, mtu,
                                                                          out))
        got = self.mtu(ifname)
        if got != mtu:
            raise HarnessError("%s: %s MTU is %d after setting %d" % (self.name, ifname, got, mtu))

    def features(self, ifname="eth0"):
        """The virtio feature bits the guest driver negotiated (a string of 0/1, bit 0 first)."""
        rc, out = self.run("cat /sys/class/net/%s/device/features" % ifname, timeout=30)
        if rc != 0:
            raise HarnessError("%s: cannot read virtio features:\n%s" % (self.name, out))
        return out.strip()

    def set_channels(self, combined, ifname="eth0"):
        """`ethtool -L IF combined N`: the queue pairs the guest driver uses."""
        rc, out = self.run("ethtool -L %s combined %d" % (ifname, combined), timeout=30)
        if rc != 0:
            raise HarnessError("%s: ethtool -L %s combined %d failed:\n%s"
                               % (self.name, ifname, combined, out))

    def channels(self, ifname="eth0"):
        """(current, maximum) combined channels from `ethtool -l`."""
        rc, out = self.run("ethtool -l %s" % ifname, timeout=30)
        nums = re.findall(r"^Combined:\s*(\d+)", out, re.MULTILINE)
        if rc != 0 or len(nums) != 2:
            raise HarnessError("%s: ethtool -l %s:\n%s" % (self.name, ifname, out))
        return int(nums[1]), int(nums[0])

    def queue_stats(self, ifname="eth0"):
        """Per-queue driver counters from `ethtool -S`: {"rx": {q: packets}, "tx": {...}}."""
        rc, out = self.run("ethtool -S %s" % ifname, timeout=30)
        if rc != 0:
            raise HarnessError("%s: ethtool -S %s:\n%s" % (self.name, ifname, out))
        stats = {"rx": {}, "tx": {}}
        for d, q, v in re.findall(r"^\s*(rx|tx)_queue_(\d+)_packets:\s*(\d+)", out, re.MULTILINE):
            stats[d][int(q)] = int(v)
        if not stats["rx"] or not stats["tx"]:
            raise HarnessError("%s: no per-queue counters in ethtool -S:\n%s" % (self.name, out))
        return stats

    def iperf3(self, server_ip, seconds=3, reverse=False, port=5201, timeout=None):
        """iperf3 TCP client in the guest; returns an iperf.Result (raises if it failed)."""
        from .iperf import parse_iperf3
        cmd = "iperf3 -c %s -p %d -t %d -f m --connect-timeout 10000%s" % (
            server_ip, port, seconds, " -R" if reverse else "")
        rc, out = self.run(cmd, timeout=timeout or (seconds * 10 + 60))
        return parse_iperf3(out, rc, "%s: %s" % (self.name, cmd))

    def send_poweroff(self):
        """Ask the guest's /init to power off (no answer: the console goes away)."""
        try:
            self.proc.send("x %s\n" % b64("poweroff -f"))
        except (HarnessError, OSError):
            pass

    def poweroff(self, timeout=10.0):
        if self.proc and self.proc.alive():
            self.send_poweroff()
            if self.proc.wait(timeout) is None:
                self.proc.stop()


class QmpError(HarnessError):
    """A QMP command answered with an error; `desc` and `error_class` say which."""

    def __init__(self, command, error):
        self.command = command
        self.desc = error.get("desc", "")
        self.error_class = error.get("class", "")
        HarnessError.__init__(self, "QMP %s: %s: %s" % (command, self.error_class, self.desc))


class Qmp:
    """A minimal QMP client (standard library only): the greeting and qmp_capabilities on
    connect, `execute(command, **arguments)` returns the "return" value (QmpError on an
    error reply), asynchronous events are kept in `events` (`wait_event()` waits for one)."""

    def __init__(self, path, name="qemu", timeout=30.0):
        self.name = name
        self.timeout = timeout
        self.sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.buf = b""
        self.events = []
        self._id = 0
        greeting = self._read()
        if "QMP" not in greeting:
            raise HarnessError("%s: not a QMP greeting: %s" % (name, greeting))
        self.version = greeting["QMP"].get("version", {}).get("qemu", {})
        self.execute("qmp_capabilities")

    def _read(self, timeout=None):
        """One JSON object from the monitor."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError("%s: QMP: no answer within %.0f s"
                                   % (self.name, timeout or self.timeout))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socketlib.timeout:
                continue
            except OSError as e:
                raise HarnessError("%s: QMP socket: %s" % (self.name, e))
            if not chunk:
                raise HarnessError("%s: QEMU closed the QMP connection" % self.name)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command, timeout=None, **arguments):
        """Run `command`; return its "return" value or raise QmpError."""
        self._id += 1
        req = {"execute": command, "id": self._id}
        if arguments:
            req["arguments"] = arguments
        try:
            self.sock.sendall((json.dumps(req) + "\n").encode())
        except OSError as e:
            raise HarnessError("%s: QMP %s: %s" % (self.name, command, e))
        while True:
            msg = self._read(timeout)
            if "event" in msg:
                self.events.append(msg)
                continue
            if msg.get("id") != self._id:
                continue
            if "error" in msg:
                raise QmpError(command, msg["error"])
            return msg.get("return")

    def poll_events(self):
        """Read the events QEMU has sent so far (without blocking); return them all."""
        while True:
            self.sock.setblocking(False)
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                chunk = None
            finally:
                self.sock.setblocking(True)
            if chunk:
                self.buf += chunk
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(line)
                if "event" in msg:
                    self.events.append(msg)
            if not chunk:
                return self.events

    def wait_event(self, name, timeout=30.0, match=None):
        """The first event `name` (with data for which match(data) is true), read so far or
        arriving within `timeout`; it is removed from `events`."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev["event"] == name and (match is None or match(ev.get("data", {}))):
                    self.events.remove(ev)
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError("%s: no QMP event %s within %.0f s" % (self.name, name, timeout))
            msg = self._read(left)
            if "event" in msg:
                self.events.append(msg)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
