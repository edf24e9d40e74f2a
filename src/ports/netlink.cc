// Netlink link configuration with libnl-route-3: each call is one request and its ack on
// the socket's own namespace; libnl error codes become readable statuses.
#include "ports/netlink.h"

#include <net/if.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>

#include <cstring>

namespace vnet::ports {
namespace {

struct LinkDeleter {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
struct AddrDeleter {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
struct NlAddrDeleter {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};

// Looks `name` up; *out stays null (and 0 comes back) when there is no such link.
int get_link(nl_sock* sock, const std::string& name, LinkPtr* out) {
  rtnl_link* link = nullptr;
  int err = rtnl_link_get_kernel(sock, 0, name.c_str(), &link);
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV) return 0;
  if (err < 0) return err;
  out->reset(link);
  return 0;
}

Status check_name(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return Status::errorf("invalid interface name '{}' (1 to {} bytes)", name, IFNAMSIZ - 1);
  }
  return Status::ok();
}

}  // namespace

void Netlink::SockDeleter::operator()(nl_sock* s) const {
  nl_socket_free(s);  // closes the socket too
}

Result<Netlink> Netlink::open() {
  std::unique_ptr<nl_sock, SockDeleter> sock(nl_socket_alloc());
  if (!sock) return Status::error("netlink: nl_socket_alloc failed");
  if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0) {
    return Status::errorf("netlink: connect: {}", nl_geterror(err));
  }
  return Netlink(std::move(sock));
}

Result<std::optional<LinkState>> Netlink::find_link(const std::string& name) {
  if (Status st = check_name(name); !st) return st;
  LinkPtr link;
  if (int err = get_link(sock_.get(), name, &link); err < 0) {
    return Status::errorf("netlink: get link {}: {}", name, nl_geterror(err));
  }
  if (!link) return std::optional<LinkState>();
  LinkState s;
  s.ifindex = rtnl_link_get_ifindex(link.get());
  s.name = rtnl_link_get_name(link.get()) ? rtnl_link_get_name(link.get()) : name;
  if (const char* kind = rtnl_link_get_type(link.get())) s.kind = kind;
  s.arptype = rtnl_link_get_arptype(link.get());
  s.mtu = rtnl_link_get_mtu(link.get());
  s.up = rtnl_link_get_flags(link.get()) & IFF_UP;
  if (nl_addr* a = rtnl_link_get_addr(link.get()); a && nl_addr_get_len(a) == s.mac.size()) {
    std::memcpy(s.mac.data(), nl_addr_get_binary_addr(a), s.mac.size());
  }
  return std::optional<LinkState>(std::move(s));
}

Status Netlink::configure_link(const std::string& name, std::optional<uint32_t> mtu, bool up) {
  if (Status st = check_name(name); !st) return st;
  LinkPtr orig;
  if (int err = get_link(sock_.get(), name, &orig); err < 0) {
    return Status::errorf("netlink: get link {}: {}", name, nl_geterror(err));
  }
  if (!orig) return Status::errorf("netlink: no interface named {}", name);
  LinkPtr change(rtnl_link_alloc());
  if (!change) return Status::error("netlink: rtnl_link_alloc failed");
  if (mtu) rtnl_link_set_mtu(change.get(), *mtu);
  if (up) rtnl_link_set_flags(change.get(), IFF_UP);
  if (int err = rtnl_link_change(sock_.get(), orig.get(), change.get(), 0); err < 0) {
    return Status::errorf("netlink: configure {} (mtu {}, up {}): {}", name,
                          mtu ? std::to_string(*mtu) : "unchanged", up, nl_geterror(err));
  }
  return Status::ok();
}

Status Netlink::delete_link(const std::string& name) {
  if (Status st = check_name(name); !st) return st;
  LinkPtr link(rtnl_link_alloc());
  if (!link) return Status::error("netlink: rtnl_link_alloc failed");
  rtnl_link_set_name(link.get(), name.c_str());
  if (int err = rtnl_link_delete(sock_.get(), link.get()); err < 0) {
    return Status::errorf("netlink: delete link {}: {}", name, nl_geterror(err));
  }
  return Status::ok();
}

Status Netlink::add_address(const std::string& name, const std::string& cidr) {
  LinkPtr link;
  if (int err = get_link(sock_.get(), name, &link); err < 0) {
    return Status::errorf("netlink: get link {}: {}", name, nl_geterror(err));
  }
  if (!link) return Status::errorf("netlink: no interface named {}", name);
  nl_addr* parsed = nullptr;
  if (int err = nl_addr_parse(cidr.c_str(), AF_UNSPEC, &parsed); err < 0) {
    return Status::errorf("netlink: bad address '{}': {}", cidr, nl_geterror(err));
  }
  std::unique_ptr<nl_addr, NlAddrDeleter> local(parsed);
  std::unique_ptr<rtnl_addr, AddrDeleter> addr(rtnl_addr_alloc());
  if (!addr) return Status::error("netlink: rtnl_addr_alloc failed");
  rtnl_addr_set_ifindex(addr.get(), rtnl_link_get_ifindex(link.get()));
  if (int err = rtnl_addr_set_local(addr.get(), local.get()); err < 0) {
    return Status::errorf("netlink: address '{}': {}", cidr, nl_geterror(err));
  }
  if (int err = rtnl_addr_add(sock_.get(), addr.get(), 0); err < 0) {
    return Status::errorf("netlink: add address {} to {}: {}", cidr, name, nl_geterror(err));
  }
  return Status::ok();
}

}  // namespace vnet::ports
