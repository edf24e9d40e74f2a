"""Read tcpdump captures and check IPv4/TCP/UDP/ICMP checksums independently of vnetd.

`read_pcap(path)` yields (orig_len, bytes) per frame (classic pcap, Ethernet).
`check_frames(frames)` recomputes, for every IPv4 frame, the header checksum and
the TCP/UDP/ICMP checksum over the whole captured segment and classifies each:

  full     the checksum field is the correct full checksum;
  partial  the checksum field holds exactly the folded pseudo-header sum: what a
           CHECKSUM_PARTIAL skb carries (the sender asked for checksum offload:
           virtio_net_hdr NEEDS_CSUM through the TAP).  tcpdump on a TAP sees
           received frames before anyone completes them, so this is the one
           correct form such a frame can have (whoever completes it later adds
           the payload sum to this seed);
  bad      anything else (a wrong IPv4 header checksum is always bad: nobody
           offloads it).

A frame longer than the interface MTU + 14 is counted as `gso` as well (a
TSO super-frame written whole into the TAP).  Only frames captured whole can be
checked; a cut frame (snaplen) is `truncated`.
"""

import struct

ETH_P_IP = 0x0800
ETH_P_8021Q = 0x8100


def read_pcap(path):
    """Frames of a classic pcap file as (orig_len, data)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("%s: not a classic pcap file (magic %s)" % (path, magic.hex()))
    linktype, = struct.unpack_from(endian + "I", data, 20)
    if linktype != 1:
        raise ValueError("%s: link type %d, expected 1 (Ethernet)" % (path, linktype))
    frames = []
    off = 24
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack_from(endian + "IIII", data, off)
        off += 16
        frames.append((orig, data[off:off + incl]))
        off += incl
    return frames


def ones_sum(data, start=0):
    """Ones'-complement sum of big-endian 16-bit words, folded to 16 bits."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    mv = memoryview(data).cast("H")  # native order; fixed up below
    s = sum(mv)
    # sum() of little-endian reads: fold, then swap bytes (byte-order independence of
    # the ones'-complement sum, RFC 1071 section 2(B)).
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    if struct.pack("=H", 1) == b"\x01\x00":  # little-endian host
        s = ((s & 0xFF) << 8) | (s >> 8)
    s += start
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _pseudo_sum(src, dst, proto, length):
    return ones_sum(src + dst + struct.pack("!BBH", 0, proto, length))


class CheckResult:
    def __init__(self):
        self.counts = {}  # "tcp full" -> n, ...
        self.bad = []  # descriptions of bad frames (first few)
        self.gso = 0
        self.truncated = 0
        self.frames = 0
        self.max_len = 0

    def add(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1

    def n(self, *keys):
        return sum(self.counts.get(k, 0) for k in keys)

    @property
    def n_bad(self):
        return sum(v for k, v in self.counts.items() if k.endswith(" bad"))

    @property
    def n_partial(self):
        return sum(v for k, v in self.counts.items() if k.endswith(" partial"))

    def summary(self):
        parts = ["%d frames" % self.frames]
        parts += ["%s %d" % kv for kv in sorted(self.counts.items())]
        parts.append("gso %d" % self.gso)
        parts.append("max %d B" % self.max_len)
        if self.truncated:
            parts.append("truncated %d" % self.truncated)
        return ", ".join(parts)


def _addr(b):
    return ".".join(str(x) for x in b)


def check_frames(frames, mtu=1500):
    """Classify each frame's checksums (see the module comment); returns a CheckResult."""
    r = CheckResult()
    for idx, (orig, f) in enumerate(frames):
        r.frames += 1
        r.max_len = max(r.max_len, orig)
        if len(f) < orig:
            r.truncated += 1
            continue
        off = 12
        etype, = struct.unpack_from("!H", f, off)
        off += 2
        if etype == ETH_P_8021Q:
            etype, = struct.unpack_from("!H", f, off + 2)
            off += 4
        if orig > mtu + off:
            r.gso += 1
        if etype != ETH_P_IP:
            r.add("other")
            continue
        ip = f[off:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[0] >> 4 != 4 or ihl < 20 or len(ip) < ihl:
            r.add("ipv4 bad")
            r.bad.append("frame %d: malformed IPv4 header" % idx)
            continue
        tot_len, = struct.unpack_from("!H", ip, 2)
        if ones_sum(ip[:ihl]) != 0xFFFF:
            r.add("ipv4 bad")
            r.bad.append("frame %d: IPv4 header checksum %04x wrong" % (idx, struct.unpack_from(
                "!H", ip, 10)[0]))
            continue
        r.add("ipv4 full")
        if tot_len > len(ip) or tot_len < ihl:
            r.add("ipv4 bad")
            r.bad.append("frame %d: IPv4 total length %d, %d bytes present" % (idx, tot_len,
                                                                               len(ip)))
            continue
        frag, = struct.unpack_from("!H", ip, 6)
        if frag & 0x3FFF:  # a fragment: the L4 checksum covers the reassembled datagram
            r.add("fragment")
            continue
        proto = ip[9]
        src, dst = bytes(ip[12:16]), bytes(ip[16:20])
        l4 = bytes(ip[ihl:tot_len])
        if proto == 6 and len(l4) >= 20:
            name, field_off = "tcp", 16
        elif proto == 17 and len(l4) >= 8:
            name, field_off = "udp", 6
            if struct.unpack_from("!H", l4, 6)[0] == 0:
                r.add("udp none")
                continue
        elif proto == 1 and len(l4) >= 4:
            if ones_sum(l4) == 0xFFFF:
                r.add("icmp full")
            else:
                r.add("icmp bad")
                r.bad.append("frame %d: ICMP %s -> %s checksum wrong" % (idx, _addr(src),
                                                                        _addr(dst)))
            continue
        else:
            r.add("other")
            continue
        field, = struct.unpack_from("!H", l4, field_off)
        pseudo = _pseudo_sum(src, dst, proto, len(l4))
        if ones_sum(l4, pseudo) == 0xFFFF:
            r.add(name + " full")
        elif field == pseudo or (pseudo == 0xFFFF and field == 0):
            r.add(name + " partial")
        else:
            r.add(name + " bad")
            if len(r.bad) < 10:
                r.bad.append("frame %d: %s %s -> %s len %d checksum %04x, neither full nor the "
                             "pseudo-header seed %04x" % (idx, name.upper(), _addr(src),
                                                          _addr(dst), len(l4), field, pseudo))
    return r


def check_pcap(path, mtu=1500):
    return check_frames(read_pcap(path), mtu=mtu)


def detects_corruption(frames, limit=5):
    """Self-check of the checker: for up to `limit` TCP/UDP/ICMP frames, a copy with one
    payload byte changed (a full checksum covers it) or, for a frame without payload or
    with a partial checksum (whose seed covers only the pseudo-header), with the checksum
    field changed, must be classified bad.  Returns the number of frames tried (0 if
    none qualified); raises ValueError naming a corrupted frame that passed."""
    tried = 0
    for orig, f in frames:
        if tried >= limit or len(f) < orig or len(f) < 14 + 20:
            continue
        if struct.unpack_from("!H", f, 12)[0] != ETH_P_IP:
            continue
        ihl = (f[14] & 0x0F) * 4
        proto = f[14 + 9]
        tot_len, = struct.unpack_from("!H", f, 16)
        l4 = 14 + ihl
        field = {6: 16, 17: 6, 1: 2}.get(proto)
        if field is None or struct.unpack_from("!H", f, 20)[0] & 0x3FFF:
            continue
        tcp_hdr = (f[l4 + 12] >> 4) * 4 if len(f) > l4 + 12 else 20
        hdr = {6: tcp_hdr, 17: 8, 1: 8}[proto]
        partial = check_frames([(orig, f)]).n_partial == 1
        pos = l4 + hdr if 14 + tot_len > l4 + hdr and not partial else l4 + field
        bad = bytearray(f)
        bad[pos] ^= 0x5A
        res = check_frames([(orig, bytes(bad))])
        if res.n_bad != 1:
            if not partial and res.n_partial == 1:
                # Its full checksum happens to equal the pseudo-header seed (1 in 65536):
                # any change of its payload then reads as a partial checksum. Not a
                # frame the check can be tried on.
                continue
            raise ValueError("a frame with byte %d changed passed the checksum check" % pos)
        tried += 1
    return tried
