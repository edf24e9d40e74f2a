// vnetctl capture's one-line frame summaries (what it prints on a terminal).
#include "control/capture_client.h"

#include <gtest/gtest.h>

#include <string>

#include "net/pcapng.h"

namespace vnet::control {
namespace {

std::string icmp_frame(bool tagged) {
  std::string f = std::string("\x52\x54\x00\x00\x00\x02\x52\x54\x00\x00\x00\x01", 12);
  if (tagged) f += std::string("\x81\x00\x00\x0a", 4);
  f += std::string("\x08\x00", 2);
  std::string ip(20, '\0');
  ip[0] = 0x45;
  ip[9] = 1;  // ICMP
  ip[12] = 10, ip[15] = 1;
  ip[16] = 10, ip[19] = 2;
  return f + ip;
}

TEST(CaptureClient, SummaryNamesPortDirectionAddressesAndProtocol) {
  const std::string s =
      frame_summary("vm1", 0, net::pcapng::kFlagInbound, icmp_frame(false), 98, "");
  EXPECT_NE(s.find(" vm1 In  52:54:00:00:00:01 > 52:54:00:00:00:02"), std::string::npos) << s;
  EXPECT_NE(s.find("IPv4 10.0.0.1 > 10.0.0.2: ICMP, length 98"), std::string::npos) << s;
  const std::string t =
      frame_summary("vm1", 0, net::pcapng::kFlagOutbound, icmp_frame(true), 102, "virtio-net: GSO");
  EXPECT_NE(t.find(" Out "), std::string::npos) << t;
  EXPECT_NE(t.find("vlan 10, IPv4"), std::string::npos) << t;
  EXPECT_NE(t.find("(virtio-net: GSO)"), std::string::npos) << t;
  EXPECT_NE(frame_summary("p", 0, 1, "short", 5, "").find("truncated frame, length 5"),
            std::string::npos);
}

}  // namespace
}  // namespace vnet::control
