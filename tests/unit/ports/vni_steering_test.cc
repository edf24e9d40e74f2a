// VniSteering against the kernel: UDP sockets on loopback in one SO_REUSEPORT group, the
// steering program attached, datagrams with VXLAN headers sent to the group's port.
#include "ports/vni_steering.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <vector>

#include "common/unique_fd.h"

namespace vnet::ports {
namespace {

UniqueFd bound_socket(uint16_t port) {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  EXPECT_EQ(setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  return fd;
}

uint16_t port_of(int fd) {
  sockaddr_in sa{};
  socklen_t l = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &l);
  return ntohs(sa.sin_port);
}

void send_vni(int tx, uint16_t port, uint32_t vni, uint16_t sport_salt) {
  uint8_t d[64] = {0x08, 0, 0, 0, uint8_t(vni >> 16), uint8_t(vni >> 8), uint8_t(vni), 0};
  d[20] = uint8_t(sport_salt);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa.sin_port = htons(port);
  ASSERT_EQ(sendto(tx, d, sizeof(d), 0, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)),
            ssize_t(sizeof(d)));
}

// VNIs each socket received, drained.
std::vector<uint32_t> drain(int fd) {
  std::vector<uint32_t> out;
  uint8_t d[256];
  for (;;) {
    ssize_t n = recv(fd, d, sizeof(d), 0);
    if (n < 0) break;
    out.push_back(n >= 8 ? uint32_t(d[4]) << 16 | uint32_t(d[5]) << 8 | d[6] : 0xffffffff);
  }
  return out;
}

TEST(VniSteering, EachVniReachesItsSocketAlsoAfterOneLeaves) {
  UniqueFd a = bound_socket(0);
  const uint16_t port = port_of(a.get());
  UniqueFd b = bound_socket(port), c = bound_socket(port);
  VniSteering g;
  ASSERT_TRUE(g.joined(a.get(), 100));
  ASSERT_TRUE(g.joined(b.get(), 200));
  ASSERT_TRUE(g.joined(c.get(), 300));
  EXPECT_FALSE(g.joined(c.get(), 200)) << "a VNI twice";
  EXPECT_EQ(g.members().size(), 3u);

  UniqueFd tx(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  for (uint32_t vni : {100u, 200u, 300u})
    for (int i = 0; i < 5; ++i) send_vni(tx.get(), port, vni, uint16_t(i));
  usleep(20000);
  EXPECT_EQ(drain(a.get()), std::vector<uint32_t>(5, 100));
  EXPECT_EQ(drain(b.get()), std::vector<uint32_t>(5, 200));
  EXPECT_EQ(drain(c.get()), std::vector<uint32_t>(5, 300));

  // b leaves: the kernel moves c into b's slot; the program follows.
  const int bfd = b.get();
  b.reset();
  ASSERT_TRUE(g.left(bfd));
  ASSERT_EQ(g.members().size(), 2u);
  EXPECT_EQ(g.members()[1].second, 300u);
  for (uint32_t vni : {100u, 300u})
    for (int i = 0; i < 5; ++i) send_vni(tx.get(), port, vni, uint16_t(i));
  usleep(20000);
  EXPECT_EQ(drain(a.get()), std::vector<uint32_t>(5, 100));
  EXPECT_EQ(drain(c.get()), std::vector<uint32_t>(5, 300));

  // A VNI nobody has goes to some member (which counts it as a bad VNI), not lost.
  send_vni(tx.get(), port, 999, 1);
  usleep(20000);
  EXPECT_EQ(drain(a.get()).size() + drain(c.get()).size(), 1u);
}

TEST(VniSteering, ProgramEndsInPastTheEnd) {
  auto p = VniSteering::program({7, 8});
  ASSERT_EQ(p.size(), 2u + 4u + 1u);
  EXPECT_EQ(p.back().code, BPF_RET | BPF_K);
  EXPECT_EQ(p.back().k, 0xffffffffu);
}

}  // namespace
}  // namespace vnet::ports
