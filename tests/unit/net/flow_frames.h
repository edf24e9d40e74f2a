// Frames for the steering tests: Ethernet + IPv4/IPv6 + TCP/UDP headers with chosen
// addresses and ports (checksums left zero: steering never looks at them).
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "test_bytes.h"

namespace vnet::test {

struct Flow4 {
  uint32_t src_ip, dst_ip;
  uint16_t src_port, dst_port;
  uint8_t proto = 17;  // UDP
  Flow4 reversed() const { return {dst_ip, src_ip, dst_port, src_port, proto}; }
};

inline void put_macs(std::vector<uint8_t>& f, uint64_t dst, uint64_t src) {
  for (int i = 0; i < 6; ++i) {
    f[i] = uint8_t(dst >> (8 * (5 - i)));
    f[6 + i] = uint8_t(src >> (8 * (5 - i)));
  }
}

// Ethernet (02:00:00:00:00:01 <-> 02:00:00:00:00:02, swapped with the flow) + IPv4 +
// UDP/TCP, `payload` bytes after the L4 header; `vlan` > 0 adds an 802.1Q tag.
inline std::vector<uint8_t> ipv4_frame(const Flow4& fl, uint32_t payload = 18, uint16_t vlan = 0,
                                       uint16_t frag = 0) {
  const uint32_t l4 = fl.proto == 6 ? 20 : 8;
  const uint32_t tag = vlan ? 4 : 0;
  std::vector<uint8_t> f(14 + tag + 20 + l4 + payload, 0);
  const bool fwd = fl.src_ip < fl.dst_ip;
  put_macs(f, fwd ? 0x020000000002 : 0x020000000001, fwd ? 0x020000000001 : 0x020000000002);
  uint8_t* p = f.data() + 12;
  if (vlan) {
    wr16(p, 0x8100);
    wr16(p + 2, vlan);
    p += 4;
  }
  wr16(p, 0x0800);
  uint8_t* ip = p + 2;
  ip[0] = 0x45;
  wr16(ip + 2, uint16_t(20 + l4 + payload));
  wr16(ip + 6, frag);
  ip[8] = 64;
  ip[9] = fl.proto;
  wr32(ip + 12, fl.src_ip);
  wr32(ip + 16, fl.dst_ip);
  wr16(ip + 20, fl.src_port);
  wr16(ip + 22, fl.dst_port);
  if (fl.proto == 6)
    ip[20 + 12] = 0x50;
  else
    wr16(ip + 24, uint16_t(8 + payload));
  return f;
}

inline std::vector<uint8_t> ipv6_udp_frame(const std::array<uint8_t, 16>& src,
                                           const std::array<uint8_t, 16>& dst, uint16_t sport,
                                           uint16_t dport) {
  std::vector<uint8_t> f(14 + 40 + 8 + 10, 0);
  put_macs(f, 0x020000000002, 0x020000000001);
  wr16(f.data() + 12, 0x86dd);
  uint8_t* ip = f.data() + 14;
  ip[0] = 0x60;
  wr16(ip + 4, 18);
  ip[6] = 17;
  ip[7] = 64;
  std::memcpy(ip + 8, src.data(), 16);
  std::memcpy(ip + 24, dst.data(), 16);
  wr16(ip + 40, sport);
  wr16(ip + 42, dport);
  wr16(ip + 44, 18);
  return f;
}

// A non-IP frame (ethertype 0x88b5, local experimental) between two MACs.
inline std::vector<uint8_t> l2_frame(uint64_t dst, uint64_t src) {
  std::vector<uint8_t> f(60, 0);
  put_macs(f, dst, src);
  wr16(f.data() + 12, 0x88b5);
  return f;
}

}  // namespace vnet::test
