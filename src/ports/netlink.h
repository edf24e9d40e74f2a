// Netlink: the link configuration vnet does itself, through libnl-route-3 (never by
// running `ip`): look a link up, set its MTU and bring it up, delete it, add an address.
// A socket works in the network namespace of the thread that opened it, for as long as
// it lives, whichever thread uses it later. Control thread and tests only: it allocates.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"

struct nl_sock;  // libnl; its headers stay out of the rest of vnet

namespace vnet::ports {

// What vnet needs to know about a link.
struct LinkState {
  int ifindex = 0;
  std::string name;
  std::string kind;      // IFLA_INFO_KIND: "tun" for TUN/TAP, "veth", ...; empty for none
  uint32_t arptype = 0;  // ARPHRD_*: ARPHRD_ETHER for a TAP, ARPHRD_LOOPBACK for lo
  uint32_t mtu = 0;
  bool up = false;  // IFF_UP (administratively up)
  std::array<uint8_t, 6> mac{};
};

class Netlink {
 public:
  // A NETLINK_ROUTE socket in the calling thread's network namespace.
  static Result<Netlink> open();

  Netlink(Netlink&&) noexcept = default;
  Netlink& operator=(Netlink&&) noexcept = default;
  ~Netlink() = default;

  // The link called `name`; std::nullopt if there is none.
  Result<std::optional<LinkState>> find_link(const std::string& name);
  // Sets the MTU (when given) and, when `up`, IFF_UP, in one RTM_NEWLINK/RTM_SETLINK
  // (rtnl_link_change).
  Status configure_link(const std::string& name, std::optional<uint32_t> mtu, bool up);
  Status delete_link(const std::string& name);
  // Adds an address given as "A.B.C.D/N" (or an IPv6 one) to the link.
  Status add_address(const std::string& name, const std::string& cidr);

 private:
  struct SockDeleter {
    void operator()(nl_sock* s) const;
  };
  explicit Netlink(std::unique_ptr<nl_sock, SockDeleter> sock) : sock_(std::move(sock)) {}
  std::unique_ptr<nl_sock, SockDeleter> sock_;
};

}  // namespace vnet::ports
