"""A small vhost-user front end for hostile tests: it speaks the protocol
(docs/interop/vhost-user.rst in qemu/qemu) well enough to bring rings up, and can send
anything else as raw bytes and fds.  Guest memory is one memfd the test writes split
rings into by hand (virtio 1.2 section 2.7)."""

import mmap
import os
import socket
import struct
import time

# Request codes (vhost-user "Front-end message types").
GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_LOG_BASE, SET_LOG_FD, SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 6, 7, 8, 9, 10
GET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 11, 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
SEND_RARP, NET_SET_MTU = 19, 20
LAST_REQUEST = 40
HAS_REPLY = {GET_FEATURES, GET_PROTOCOL_FEATURES, GET_VRING_BASE, GET_QUEUE_NUM}

VERSION = 0x1
REPLY_FLAG = 0x4
NOFD = 0x100
F_VERSION_1 = 1 << 32
F_INDIRECT = 1 << 28
F_MRG_RXBUF = 1 << 15
F_GUEST_ANNOUNCE = 1 << 21
F_LOG_ALL = 1 << 26  # VHOST_F_LOG_ALL: the dirty log is marked while negotiated
F_PROTOCOL_FEATURES = 1 << 30
# Protocol features (GET/SET_PROTOCOL_FEATURES).
PROTO_MQ, PROTO_LOG_SHMFD, PROTO_RARP, PROTO_REPLY_ACK = 1 << 0, 1 << 1, 1 << 2, 1 << 3
VRING_F_LOG = 1 << 0  # SET_VRING_ADDR flags: log the used ring at log_guest_addr
VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT = 1, 2, 4
HDR_LEN = 12  # virtio_net_hdr_v1

MEM_SIZE = 1 << 20
UVA = 0x7F0000000000  # the front end's address of guest physical 0
DESC, AVAIL, USED, BUFS = 0x0, 0x4000, 0x8000, 0x10000


class Closed(Exception):
    pass


class GuestMemory:
    """One memfd of MEM_SIZE bytes, guest physical 0 .. MEM_SIZE; or `fd`, a file the
    caller made (at least `file_size` bytes: a hugetlbfs file is mapped whole)."""

    def __init__(self, fd=None, file_size=MEM_SIZE):
        if fd is None:
            fd = os.memfd_create("vnet-hostile", 0)
            os.ftruncate(fd, MEM_SIZE)
        self.fd = fd
        self.mem = mmap.mmap(self.fd, file_size)

    def put(self, gpa, data):
        self.mem[gpa:gpa + len(data)] = data

    def u16(self, gpa):
        return struct.unpack_from("<H", self.mem, gpa)[0]

    def close(self):
        self.mem.close()
        os.close(self.fd)

    # Split ring at DESC/AVAIL/USED (one ring is enough: tests use the TX ring).
    def desc(self, i, addr, length, flags=0, nxt=0, table=DESC):
        self.put(table + 16 * i, struct.pack("<QIHH", addr & (2**64 - 1), length, flags, nxt))

    def avail(self, slot, head, size):
        self.put(AVAIL + 4 + 2 * (slot % size), struct.pack("<H", head))

    def avail_idx(self, idx):
        self.put(AVAIL + 2, struct.pack("<H", idx & 0xFFFF))

    def used_idx(self):
        return self.u16(USED + 2)


def region(gpa=0, size=MEM_SIZE, uva=UVA, offset=0):
    return struct.pack("<QQQQ", gpa, size, uva, offset)


class Conn:
    """One connection to a vhost-user server socket."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.fds = []  # eventfds we made (closed with the connection)

    def close(self):
        self.sock.close()
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def raw(self, data, fds=()):
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        struct.pack("%di" % len(fds), *fds))])
        else:
            self.sock.sendall(data)

    def send(self, request, payload=b"", fds=(), flags=VERSION, size=None):
        hdr = struct.pack("<III", request, flags, len(payload) if size is None else size)
        self.raw(hdr + payload, fds)

    def reply(self, request):
        return self.reply_with_flags(request)[1]

    def reply_with_flags(self, request):
        """(flags, payload) of the next message, which must answer `request`."""
        data = b""
        while len(data) < 12:
            chunk = self.sock.recv(12 - len(data))
            if not chunk:
                raise Closed("closed while waiting for the reply to %d" % request)
            data += chunk
        req, flags, size = struct.unpack("<III", data)
        body = b""
        while len(body) < size:
            chunk = self.sock.recv(size - len(body))
            if not chunk:
                raise Closed("closed in the reply to %d" % request)
            body += chunk
        if req != request:
            raise Closed("reply to %d answered %d" % (request, req))
        return flags, body

    def call(self, request, payload=b""):
        self.send(request, payload)
        return self.reply(request)

    def u64(self, request, value, fds=()):
        self.send(request, struct.pack("<Q", value), fds)

    def state(self, request, index, num):
        self.send(request, struct.pack("<II", index, num))

    def addr(self, index, desc, used, avail, flags=0, log=0):
        """SET_VRING_ADDR; with flags VRING_F_LOG, `log` is the used ring's log_guest_addr."""
        self.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", index, flags, desc, used, avail, log))

    def log_base(self, size, offset, fds):
        """SET_LOG_BASE: the dirty log is [offset, offset + size) of the fd in `fds`."""
        self.send(SET_LOG_BASE, struct.pack("<QQ", size, offset), fds)

    def eventfd(self, nonblock=True):
        fd = os.eventfd(0, (os.EFD_NONBLOCK if nonblock else 0) | os.EFD_CLOEXEC)
        self.fds.append(fd)
        return fd

    def mem_table(self, regions, fds):
        payload = struct.pack("<II", len(regions), 0) + b"".join(regions)
        self.send(SET_MEM_TABLE, payload, fds)

    def closed_by_peer(self, timeout=5.0):
        """True when the back end closes the connection within `timeout` (whatever it
        sends first is read and ignored)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(4096):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False
        return False

    def setup(self, guest, size=256, features=F_VERSION_1 | F_INDIRECT, rings=(0, 1),
              nonblock=True):
        """GET/SET_FEATURES, SET_OWNER, the memory table, and each ring started (size,
        base 0, addresses in `guest`, kick and call eventfds, blocking ones with
        nonblock=False): the rings are enabled at their kick without
        VHOST_USER_F_PROTOCOL_FEATURES."""
        offered = struct.unpack("<Q", self.call(GET_FEATURES))[0]
        self.u64(SET_FEATURES, offered & features)
        self.send(SET_OWNER)
        self.mem_table([region()], [guest.fd])
        for i in rings:
            base = 0x40000 * (i + 1) if i != 1 else 0  # ring 1 (TX) at DESC/AVAIL/USED
            self.state(SET_VRING_NUM, i, size)
            self.state(SET_VRING_BASE, i, 0)
            self.addr(i, UVA + base + DESC, UVA + base + USED, UVA + base + AVAIL)
            self.u64(SET_VRING_CALL, i, [self.eventfd(nonblock)])
            self.u64(SET_VRING_KICK, i, [self.eventfd(nonblock)])
        # A round trip: every message above has been handled.
        self.call(GET_FEATURES)

    def kick(self, ring=1):
        """The kick eventfd of `ring` as set by setup() (2 eventfds per ring: call, kick)."""
        os.eventfd_write(self.fds[2 * ring + 1], 1)

    def kick_fd(self, ring=1):
        return self.fds[2 * ring + 1]

    def call_fd(self, ring=1):
        return self.fds[2 * ring]
