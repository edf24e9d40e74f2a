// Test helpers for the offload tests: a frame builder (Ethernet, VLAN tags, IPv4 with
// options / IPv6 with extension headers, TCP/UDP) and an independent, byte-at-a-time RFC 1071
// reference checksum used to verify what the code under test produces.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>
#include "test_bytes.h"

#include "net/packet.h"

namespace vnet::net::test {

using vnet::test::rd16;
using vnet::test::rd32;
using vnet::test::ref_sum;
using vnet::test::wr16;
using vnet::test::wr32;

// The pseudo-header written out as bytes (RFC 793 3.1 / RFC 8200 8.1), then the reference
// sum over pseudo-header + L4 segment: 0xffff when the L4 checksum is right.
inline uint16_t ref_l4_verify(const uint8_t* frame, uint32_t l3_off, int ip_version, uint8_t proto,
                              uint32_t l4_off, uint32_t l4_len) {
  std::vector<uint8_t> buf;
  const uint8_t* ip = frame + l3_off;
  if (ip_version == 4) {
    buf.insert(buf.end(), ip + 12, ip + 20);
    buf.push_back(0);
    buf.push_back(proto);
    buf.push_back(uint8_t(l4_len >> 8));
    buf.push_back(uint8_t(l4_len));
  } else {
    buf.insert(buf.end(), ip + 8, ip + 40);
    for (int s = 24; s >= 0; s -= 8) buf.push_back(uint8_t(l4_len >> s));
    buf.insert(buf.end(), {0, 0, 0, proto});
  }
  buf.insert(buf.end(), frame + l4_off, frame + l4_off + l4_len);
  return ref_sum(buf.data(), buf.size());
}

struct FrameSpec {
  int n_vlans = 0;
  int ip_version = 4;
  uint32_t ipv4_opts = 0;       // bytes of IPv4 options (multiple of 4, <= 40)
  std::vector<uint8_t> v6_ext;  // IPv6 extension header types, in order (8 bytes each)
  uint8_t proto = 6;            // 6 TCP, 17 UDP, other: raw
  uint32_t tcp_opts = 0;        // bytes of TCP options (multiple of 4, <= 40)
  uint8_t tcp_flags = 0x18;     // PSH|ACK
  uint32_t payload = 100;
  uint32_t seq = 0xfffff000;  // near a wrap, to test sequence arithmetic
  uint16_t ip_id = 0xfff0;    // near a wrap as well
  uint8_t fill_seed = 1;
};

struct BuiltFrame {
  uint32_t len = 0, l3_off = 0, l4_off = 0, payload_off = 0;
};

// Writes the frame into buf with correct IP and L4 checksums (reference implementation).
inline BuiltFrame build_frame(uint8_t* buf, const FrameSpec& s) {
  BuiltFrame b;
  uint8_t* p = buf;
  for (int i = 0; i < 6; ++i) p[i] = uint8_t(0x02 + i);      // dst
  for (int i = 0; i < 6; ++i) p[6 + i] = uint8_t(0x52 + i);  // src
  uint32_t pos = 12;
  for (int v = 0; v < s.n_vlans; ++v) {
    wr16(p + pos, v == 0 && s.n_vlans == 2 ? 0x88a8 : 0x8100);
    wr16(p + pos + 2, uint16_t(100 + v));
    pos += 4;
  }
  wr16(p + pos, s.ip_version == 4 ? 0x0800 : 0x86dd);
  pos += 2;
  b.l3_off = pos;
  const uint32_t l4_hdr = s.proto == 6 ? 20 + s.tcp_opts : s.proto == 17 ? 8 : 0;
  const uint32_t l4_len = l4_hdr + s.payload;
  if (s.ip_version == 4) {
    const uint32_t ihl = 20 + s.ipv4_opts;
    uint8_t* ip = p + pos;
    std::memset(ip, 0, ihl);
    ip[0] = uint8_t(0x40 | (ihl / 4));
    wr16(ip + 2, uint16_t(ihl + l4_len));
    wr16(ip + 4, s.ip_id);
    wr16(ip + 6, 0x4000);  // DF
    ip[8] = 64;
    ip[9] = s.proto;
    const uint8_t src[4] = {10, 0, 0, 1}, dst[4] = {10, 0, 0, 2};
    std::memcpy(ip + 12, src, 4);
    std::memcpy(ip + 16, dst, 4);
    for (uint32_t i = 20; i < ihl; ++i) ip[i] = 1;  // NOP options
    wr16(ip + 10, uint16_t(~ref_sum(ip, ihl)));
    pos += ihl;
  } else {
    uint8_t* ip = p + pos;
    std::memset(ip, 0, 40);
    ip[0] = 0x60;
    const uint32_t ext = uint32_t(s.v6_ext.size()) * 8;
    wr16(ip + 4, uint16_t(ext + l4_len));
    ip[6] = s.v6_ext.empty() ? s.proto : s.v6_ext[0];
    ip[7] = 64;
    for (int i = 0; i < 16; ++i) ip[8 + i] = uint8_t(0x20 + i);
    for (int i = 0; i < 16; ++i) ip[24 + i] = uint8_t(0x40 + i);
    pos += 40;
    for (size_t e = 0; e < s.v6_ext.size(); ++e) {
      uint8_t* h = p + pos;
      std::memset(h, 0, 8);
      h[0] = e + 1 < s.v6_ext.size() ? s.v6_ext[e + 1] : s.proto;
      // Routing: type 0 bytes, segments left 0. HBH / destination options: one PadN.
      if (s.v6_ext[e] == 0 || s.v6_ext[e] == 60) {
        h[2] = 1;
        h[3] = 4;
      }  // PadN
      pos += 8;
    }
  }
  b.l4_off = pos;
  uint8_t* l4 = p + pos;
  if (s.proto == 6) {
    std::memset(l4, 0, l4_hdr);
    wr16(l4, 40000);
    wr16(l4 + 2, 5201);
    wr32(l4 + 4, s.seq);
    wr32(l4 + 8, 0xabcdef01);
    l4[12] = uint8_t((l4_hdr / 4) << 4);
    l4[13] = s.tcp_flags;
    wr16(l4 + 14, 65535);
    for (uint32_t i = 20; i < l4_hdr; ++i) l4[i] = 1;
  } else if (s.proto == 17) {
    wr16(l4, 40000);
    wr16(l4 + 2, 4789);
    wr16(l4 + 4, uint16_t(l4_len));
    wr16(l4 + 6, 0);
  }
  pos += l4_hdr;
  b.payload_off = pos;
  uint32_t x = s.fill_seed * 2654435761u;
  for (uint32_t i = 0; i < s.payload; ++i) {
    x = x * 1103515245u + 12345u;
    p[pos + i] = uint8_t(x >> 16);
  }
  pos += s.payload;
  b.len = pos;
  if (s.proto == 6 || s.proto == 17) {
    const uint32_t co = s.proto == 6 ? 16 : 6;
    wr16(l4 + co, 0);
    uint16_t c = uint16_t(~ref_l4_verify(p, b.l3_off, s.ip_version, s.proto, b.l4_off, l4_len));
    if (c == 0) c = 0xffff;
    wr16(l4 + co, c);
  }
  return b;
}

// Turns a fully checksummed frame into the CHECKSUM_PARTIAL form a guest sends: the L4
// checksum field holds the folded pseudo-header sum (for l4_len), NEEDS_CSUM set.
inline void make_partial(Packet& p, const BuiltFrame& b, int ip_version, uint8_t proto) {
  const uint32_t co = proto == 6 ? 16 : 6;
  const uint32_t l4_len = b.len - b.l4_off;
  std::vector<uint8_t> ph;  // the pseudo-header bytes, summed by the reference
  const uint8_t* ip = p.data + b.l3_off;
  if (ip_version == 4) {
    ph.insert(ph.end(), ip + 12, ip + 20);
    ph.insert(ph.end(), {0, proto, uint8_t(l4_len >> 8), uint8_t(l4_len)});
  } else {
    ph.insert(ph.end(), ip + 8, ip + 40);
    ph.insert(ph.end(), {0, 0, uint8_t(l4_len >> 8), uint8_t(l4_len), 0, 0, 0, proto});
  }
  wr16(p.data + b.l4_off + co, ref_sum(ph.data(), ph.size()));
  p.vhdr = {};
  p.vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  p.vhdr.csum_start = uint16_t(b.l4_off);
  p.vhdr.csum_offset = uint16_t(co);
}

inline std::unique_ptr<Packet> make_packet() {
  auto p = std::make_unique<Packet>();
  p->vhdr = {};
  p->len = 0;
  return p;
}

}  // namespace vnet::net::test
