"""libvirt: a system libvirtd (started here when none runs) and guests defined by domain XML.

`Libvirt(session)` uses the libvirtd that answers on qemu:///system, or starts virtlogd and
libvirtd in the foreground (no systemd needed) and stops them at cleanup.  `LibvirtGuest` is
the harness guest (guest.QemuGuest: same initramfs, same console protocol) started by
`virsh create` from a transient domain whose network is `<interface type='vhostuser'>`.
libvirt runs QEMU as its own unprivileged user (qemu.conf `user`, libvirt-qemu on Debian),
so the files QEMU opens live in a directory that user can reach, and the serial console is
a Unix socket this harness listens on (QEMU connects to it at start; nothing is lost).
"""

import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
from xml.sax.saxutils import quoteattr

from .guest import QemuGuest
from .procs import HarnessError, log, wait_until

URI = "qemu:///system"
SYSTEM_SOCKET = "/run/libvirt/libvirt-sock"
QEMU_USER = "libvirt-qemu"  # Debian's compiled-in qemu.conf `user`

# One serial console <-> stdin/stdout: listens on argv[1] (mode 0666), serves one
# connection, exits when QEMU closes it.  Runs as a harness Process, so the console
# lands in a log file and QemuGuest.run() writes to its stdin.
_BRIDGE = r"""
import os, select, socket, sys
path = sys.argv[1]
ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ls.bind(path + ".tmp")
os.chmod(path + ".tmp", 0o666)
ls.listen(1)
os.rename(path + ".tmp", path)
c, _ = ls.accept()
ls.close()
fds = [c, sys.stdin.buffer]
while True:
    r, _, _ = select.select(fds, [], [])
    if c in r:
        d = c.recv(65536)
        if not d:
            break
        sys.stdout.buffer.write(d)
        sys.stdout.buffer.flush()
    if sys.stdin.buffer in r:
        d = os.read(0, 65536)
        if not d:
            fds.remove(sys.stdin.buffer)
            continue
        c.sendall(d)
"""


def require_libvirt(_args=None):
    missing = []
    for prog in ("libvirtd", "virtlogd", "virsh"):
        if shutil.which(prog) is None:
            missing.append("%s (apt-get install libvirt-daemon-system libvirt-clients)" % prog)
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        missing.append("user %s (libvirt-daemon-system)" % QEMU_USER)
    return missing


def qemu_user():
    """(uid, gid, supplementary group names) of the user libvirt runs QEMU as."""
    pw = pwd.getpwnam(QEMU_USER)
    groups = [g.gr_name for g in grp.getgrall() if QEMU_USER in g.gr_mem]
    groups.append(grp.getgrgid(pw.pw_gid).gr_name)
    return pw.pw_uid, pw.pw_gid, groups


def virsh(*args, check=True, timeout=60):
    p = subprocess.run(["virsh", "-q", "-c", URI] + list(args), capture_output=True,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise HarnessError("virsh %s: exit %d: %s%s" % (" ".join(args), p.returncode,
                                                        p.stdout, p.stderr))
    return p


class Libvirt:
    """qemu:///system, from a running libvirtd or one started (and stopped) here."""

    def __init__(self, session):
        self.session = session
        self.started = False
        if self._answers():
            log("libvirt: using the running libvirtd")
            return
        # virtlogd first: the QEMU driver sends each guest's stdio through it.
        for name in ("virtlogd", "libvirtd"):
            self.session.spawn(name, [name], stop_timeout=10.0)
            if name == "virtlogd":
                wait_until(lambda: os.path.exists("/run/libvirt/virtlogd-sock"), 20,
                           what="virtlogd socket")
        wait_until(self._answers, 30, interval=0.3, what="libvirtd answering on " + URI)
        self.started = True
        log("libvirt: started virtlogd and libvirtd (%s)" % virsh("version").stdout.split(
            "\n")[-2].strip())

    @staticmethod
    def _answers():
        if not os.path.exists(SYSTEM_SOCKET):
            return False
        try:
            return virsh("version", check=False, timeout=10).returncode == 0
        except subprocess.TimeoutExpired:
            return False


def shared_dir(session, name):
    """A directory under the session's temp dir that QEMU's user may use (group-owned by
    that user's group, 0770; the temp dir itself gets o+x to be traversed)."""
    os.chmod(session.tmp, 0o711)
    uid, gid, _ = qemu_user()
    d = session.path(name)
    os.makedirs(d, exist_ok=True)
    os.chown(d, 0, gid)
    os.chmod(d, 0o770)
    return d


def domain_xml(name, kernel, initrd, append, mac, vhost_socket, vhost_mode,
               console_socket, mem_mb=256, reconnect=None, nova=False):
    """A transient domain: direct kernel boot, memfd guest RAM shared with the vhost-user
    back end, one virtio-net interface of type vhostuser, the serial console on a Unix
    socket.  vhost_mode is libvirt's: 'client' (QEMU connects to the back end's socket)
    or 'server' (QEMU listens, the back end connects).  nova=True writes memory and
    interface as OpenStack Nova does for a vhost-user VIF: 2 MiB hugepages, a NUMA cell with
    memAccess='shared' and <driver rx_queue_size tx_queue_size>."""
    rec = ""
    if reconnect:
        rec = "\n        <reconnect enabled='yes' timeout='%d'/>" % reconnect
    src_open = "<source type='unix' path=%s mode='%s'>" % (quoteattr(vhost_socket), vhost_mode)
    # QEMU 7.2 under TCG crashes when the guest enables MSI-X on a vhost-user virtio-net-pci
    # device (docs: ENVIRONMENT); -global virtio-net-pci.vectors=0 keeps it on INTx.
    return """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>%(name)s</name>
  <memory unit='MiB'>%(mem)d</memory>
%(memory)s
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>%(kernel)s</kernel>
    <initrd>%(initrd)s</initrd>
    <cmdline>%(append)s</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>%(emulator)s</emulator>
    <interface type='vhostuser'>
      <mac address='%(mac)s'/>
      %(src_open)s%(rec)s
      </source>
      <model type='virtio'/>%(nic_extra)s
    </interface>
    <serial type='unix'>
      <source mode='connect' path=%(console)s/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
    <qemu:arg value='-global'/>
    <qemu:arg value='virtio-net-pci.vectors=0'/>
  </qemu:commandline>
</domain>
""" % {"name": name, "mem": mem_mb, "kernel": kernel, "initrd": initrd, "append": append,
       "emulator": shutil.which("qemu-system-x86_64"), "mac": mac, "src_open": src_open,
       "rec": rec, "console": quoteattr(console_socket),
       "memory": NOVA_MEMORY % (mem_mb * 1024) if nova else MEMFD_MEMORY,
       "nic_extra": NOVA_NIC if nova else ""}


MEMFD_MEMORY = """  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>"""
NOVA_MEMORY = """  <memoryBacking>
    <hugepages>
      <page size='2048' unit='KiB' nodeset='0'/>
    </hugepages>
  </memoryBacking>
  <cpu>
    <numa>
      <cell id='0' cpus='0' memory='%d' unit='KiB' memAccess='shared'/>
    </numa>
  </cpu>"""
NOVA_NIC = """
      <driver rx_queue_size='1024' tx_queue_size='1024'/>"""
# Nova also writes <mtu size='N'/>; libvirt 9.0 then sets the MTU of a host interface by
# <target dev>, which exists only with OVS's <virtualport>: "Cannot set interface MTU on
# '(null)'". vnetd gives the guest its port's MTU itself (VIRTIO_NET_F_MTU).


class LibvirtGuest(QemuGuest):
    """A harness guest that libvirt starts.  vhost_mode: 'client' or 'server' (libvirt's
    <source mode>, seen from QEMU)."""

    def __init__(self, session, name, image, socket_path, ip, mac, workdir, vhost_mode="client",
                 reconnect=None, nova=False):
        super().__init__(session, name, image, socket_path, ip, mac,
                         server=(vhost_mode == "server"))
        self.workdir = workdir
        self.vhost_mode = vhost_mode
        self.reconnect = reconnect
        self.nova = nova
        self.xml = None

    def start(self):
        # Kernel and initramfs copied where QEMU's user can read them (the build tree may
        # be under a private home directory).
        kernel = os.path.join(self.workdir, "vmlinuz")
        initrd = os.path.join(self.workdir, os.path.basename(self.image.initrd))
        for src, dst in ((self.image.kernel, kernel), (self.image.initrd, initrd)):
            if not os.path.exists(dst):
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o644)
        console = os.path.join(self.workdir, "%s.console" % self.name)
        self.session.remove_file_later(console)
        self.proc = self.session.spawn(self.name, [sys.executable, "-c", _BRIDGE, console],
                                       stdin_pipe=True, stop_timeout=3.0)
        wait_until(lambda: os.path.exists(console) or not self.proc.alive(), 10,
                   what="console socket of " + self.name)
        self.xml = domain_xml(self.name, kernel, initrd, self.kernel_append(),
                              self.mac, self.socket, self.vhost_mode, console,
                              reconnect=self.reconnect, nova=self.nova)
        path = os.path.join(self.workdir, "%s.xml" % self.name)
        with open(path, "w") as f:
            f.write(self.xml)
        self.session.cleanup.push("libvirt domain %s" % self.name, self.destroy)
        self.t0 = time.monotonic()
        # `virsh create` returns once QEMU runs; with vhost_mode 'server' QEMU 7.2 holds its
        # start-up until the back end has connected, so the back end must be trying already.
        virsh("create", path, timeout=120)
        return self

    def qemu_pid(self):
        with open("/run/libvirt/qemu/%s.pid" % self.name) as f:
            return int(f.read().strip())

    def live_xml(self):
        return virsh("dumpxml", self.name).stdout

    def state(self):
        p = virsh("domstate", self.name, check=False)
        return p.stdout.strip() if p.returncode == 0 else "gone"

    def destroy(self):
        if self.state() != "gone":
            virsh("destroy", self.name, check=False)
        wait_until(lambda: self.state() == "gone", 20, what="domain %s gone" % self.name)

    def poweroff(self, timeout=20.0):
        if self.proc and self.proc.alive():
            self.send_poweroff()
        try:
            wait_until(lambda: self.state() == "gone", timeout, what="%s powered off"
                       % self.name)
        except HarnessError:
            self.destroy()
        if self.proc:
            self.proc.stop()
