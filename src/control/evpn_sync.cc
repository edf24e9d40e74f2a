#include "control/evpn_sync.h"

#include <arpa/inet.h>
#include <linux/if_bridge.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/link/inet6.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/link/vxlan.h>
#include <netlink/route/neighbour.h>
#include <netlink/route/rtnl.h>
#include <poll.h>
#include <sys/epoll.h>

#include <cstring>
#include <vector>

#include "common/log.h"
#include "dataplane/forwarder.h"
#include "ports/netlink.h"
#include "ports/netns.h"
#include "switch/mac.h"

namespace vnet::control {

namespace {

struct LinkDeleter {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
using LinkPtr = std::unique_ptr<rtnl_link, LinkDeleter>;
struct AddrDeleter {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
using AddrPtr = std::unique_ptr<nl_addr, AddrDeleter>;
struct NeighDeleter {
  void operator()(rtnl_neigh* n) const { rtnl_neigh_put(n); }
};
using NeighPtr = std::unique_ptr<rtnl_neigh, NeighDeleter>;
struct MsgDeleter {
  void operator()(nl_msg* m) const { nlmsg_free(m); }
};
using MsgPtr = std::unique_ptr<nl_msg, MsgDeleter>;

constexpr int kAddrGenModeNone = 1;  // IN6_ADDR_GEN_MODE_NONE

Status add_link(nl_sock* sk, rtnl_link* l, const std::string& what) {
  if (int err = rtnl_link_add(sk, l, NLM_F_CREATE | NLM_F_EXCL); err < 0)
    return Status::errorf("create {}: {}", what, nl_geterror(err));
  return Status::ok();
}

// A bridge with multicast snooping off from the start (libnl has no setter for it):
// with snooping on, the bridge sends IGMP and MLD reports of its own, which would leave
// through the shadow VXLAN device to every VTEP of the flood list.
Status add_quiet_bridge(nl_sock* sk, const std::string& name) {
  MsgPtr m(nlmsg_alloc_simple(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK));
  if (!m) return Status::error("nlmsg_alloc failed");
  ifinfomsg ifi{};
  ifi.ifi_family = AF_UNSPEC;
  nlattr* info = nullptr;
  nlattr* data = nullptr;
  if (nlmsg_append(m.get(), &ifi, sizeof(ifi), NLMSG_ALIGNTO) < 0 ||
      nla_put_string(m.get(), IFLA_IFNAME, name.c_str()) < 0 ||
      !(info = nla_nest_start(m.get(), IFLA_LINKINFO)) ||
      nla_put_string(m.get(), IFLA_INFO_KIND, "bridge") < 0 ||
      !(data = nla_nest_start(m.get(), IFLA_INFO_DATA)) ||
      nla_put_u8(m.get(), IFLA_BR_MCAST_SNOOPING, 0) < 0)
    return Status::error("building the bridge request failed");
  nla_nest_end(m.get(), data);
  nla_nest_end(m.get(), info);
  int err = nl_send_auto(sk, m.get());
  if (err >= 0) err = nl_wait_for_ack(sk);
  if (err < 0) return Status::errorf("create bridge {}: {}", name, nl_geterror(err));
  return Status::ok();
}

}  // namespace

void EvpnSync::NlDeleter::operator()(nl_sock* s) const {
  nl_socket_free(s);
}

EvpnSync::EvpnSync(EventLoop& loop, ports::VxlanPort& port, const PortSpec& spec, sw::Fdb& fdb,
                   std::function<void()> quiesce)
    : loop_(loop), port_(port), spec_(spec), fdb_(fdb), quiesce_(std::move(quiesce)) {}

Result<std::unique_ptr<EvpnSync>> EvpnSync::start(EventLoop& loop, ports::VxlanPort& port,
                                                  const PortSpec& spec, sw::Fdb& fdb,
                                                  std::function<void()> quiesce, bool reuse) {
  std::unique_ptr<EvpnSync> s(new EvpnSync(loop, port, spec, fdb, std::move(quiesce)));
  Status st = ports::run_in_netns(spec.netns, [&]() -> Status {
    for (auto* sk : {&s->cmd_, &s->events_}) {
      sk->reset(nl_socket_alloc());
      if (!*sk) return Status::error("netlink: nl_socket_alloc failed");
      if (int err = nl_connect(sk->get(), NETLINK_ROUTE); err < 0)
        return Status::errorf("netlink: connect: {}", nl_geterror(err));
    }
    auto nl = ports::Netlink::open();
    if (!nl) return nl.status();
    s->nl_.emplace(std::move(*nl));
    if (Status c = s->create_shadow(reuse); !c) return c;
    return s->subscribe();
  });
  if (!st) {
    // What this start created goes again (also a part of it); a predecessor's shadow that
    // a hot upgrade was to take over stays with the predecessor.
    s->released_ = reuse;
    return Status::errorf("EVPN shadow of VNI {}{}: {}", spec.vni,
                          spec.netns.empty() ? "" : " in netns " + spec.netns, st.message());
  }
  Status reg = loop.add(nl_socket_get_fd(s->events_.get()), EPOLLIN,
                        [p = s.get()](uint32_t) { p->on_readable(); });
  if (!reg) return reg;
  // The table as it stands (after a hot upgrade: the predecessor's routes, complete),
  // in the port before it carries a frame, rather than some loop passes later.
  s->dump();
  s->finish_dump(std::chrono::seconds(1));
  spdlog::info("port {}: EVPN through the kernel shadow {} / {} / {} (UDP {}) in {}", spec.name,
               bridge_name(spec.vni), vxlan_name(spec.vni), anchor_name(spec.vni),
               spec.shadow_udp_port, spec.netns.empty() ? "vnetd's namespace" : spec.netns);
  return s;
}

int EvpnSync::ifindex(const std::string& name) {
  auto l = nl_->find_link(name);
  return l && *l ? (*l)->ifindex : 0;
}

void EvpnSync::delete_shadow() {
  for (const std::string& n :
       {vxlan_name(spec_.vni), anchor_name(spec_.vni), bridge_name(spec_.vni)})
    if (ifindex(n)) (void)nl_->delete_link(n);  // the veth's peer goes with it
}

Status EvpnSync::create_shadow(bool reuse) {
  nl_sock* sk = cmd_.get();
  const uint32_t vni = spec_.vni;
  const std::string br = bridge_name(vni), vx = vxlan_name(vni), an = anchor_name(vni),
                    peer = anchor_peer_name(vni);
  const bool present = ifindex(br) && ifindex(vx) && ifindex(an);
  if (!reuse || !present) {
    delete_shadow();  // left over (a vnetd that did not stop cleanly) or partial: made anew
    if (Status st = add_quiet_bridge(sk, br); !st) return st;
    bridge_ifindex_ = ifindex(br);
    LinkPtr x(rtnl_link_vxlan_alloc());
    rtnl_link_set_name(x.get(), vx.c_str());
    rtnl_link_vxlan_set_id(x.get(), vni);
    auto local = ports::parse_vtep(spec_.local, "local address");
    if (!local) return local.status();
    AddrPtr a(ports::vtep_is_v4(*local) ? nl_addr_build(AF_INET, local->data() + 12, 4)
                                        : nl_addr_build(AF_INET6, local->data(), 16));
    rtnl_link_vxlan_set_local(x.get(), a.get());
    rtnl_link_vxlan_set_port(x.get(), spec_.shadow_udp_port);
    rtnl_link_vxlan_set_learning(x.get(), 0);
    rtnl_link_set_master(x.get(), bridge_ifindex_);
    if (Status st = add_link(sk, x.get(), "VXLAN device " + vx); !st) return st;
    LinkPtr v(rtnl_link_veth_alloc());
    rtnl_link_set_name(v.get(), an.c_str());
    rtnl_link_set_master(v.get(), bridge_ifindex_);
    rtnl_link* p = rtnl_link_veth_get_peer(v.get());
    rtnl_link_set_name(p, peer.c_str());
    rtnl_link_put(p);
    if (Status st = add_link(sk, v.get(), "anchor " + an); !st) return st;
  }
  bridge_ifindex_ = ifindex(br);
  vxlan_ifindex_ = ifindex(vx);
  anchor_ifindex_ = ifindex(an);
  if (!bridge_ifindex_ || !vxlan_ifindex_ || !anchor_ifindex_)
    return Status::error("the shadow devices did not appear");
  // No IPv6 link-local addresses (so no router solicitations or MLD reports through the
  // shadow), then up. Best effort: a shadow that talks a little still works.
  for (const std::string& n : {peer, an, vx, br}) {
    rtnl_link* orig = nullptr;
    if (rtnl_link_get_kernel(sk, 0, n.c_str(), &orig) < 0) continue;
    LinkPtr o(orig);
    LinkPtr change(rtnl_link_alloc());
    rtnl_link_inet6_set_addr_gen_mode(change.get(), kAddrGenModeNone);
    if (int err = rtnl_link_change(sk, orig, change.get(), 0); err < 0)
      spdlog::debug("EVPN shadow {}: addrgenmode none: {}", n, nl_geterror(err));
  }
  for (const std::string& n : {peer, an, vx, br})
    if (Status st = nl_->configure_link(n, std::nullopt, true); !st) return st;
  return Status::ok();
}

Status EvpnSync::subscribe() {
  nl_sock* sk = events_.get();
  nl_socket_disable_seq_check(sk);
  nl_socket_disable_auto_ack(sk);
  if (int err = nl_socket_add_membership(sk, RTNLGRP_NEIGH); err < 0)
    return Status::errorf("netlink: join RTNLGRP_NEIGH: {}", nl_geterror(err));
  nl_socket_set_buffer_size(sk, 4 << 20, 0);
  nl_socket_set_nonblocking(sk);
  auto valid = [](nl_msg* m, void* arg) -> int {
    nlmsghdr* h = nlmsg_hdr(m);
    static_cast<EvpnSync*>(arg)->on_neigh(h->nlmsg_type, h);
    return NL_OK;
  };
  nl_socket_modify_cb(sk, NL_CB_VALID, NL_CB_CUSTOM, valid, this);
  auto finish = [](nl_msg*, void* arg) -> int {
    static_cast<EvpnSync*>(arg)->dump_pending_ = false;  // NLMSG_DONE of the dump
    return NL_OK;
  };
  nl_socket_modify_cb(sk, NL_CB_FINISH, NL_CB_CUSTOM, finish, this);
  return Status::ok();
}

void EvpnSync::dump() {
  // The whole bridge neighbour table; what it says replaces what we had.
  flood_.clear();
  remote_.clear();
  dump_pending_ = true;
  dirty_ = true;
  // The request carries a whole ndmsg: the kernel answers a bridge FDB dump asked with
  // the 1-byte rtgenmsg header of nl_rtgen_request() with an empty table.
  int err = -NLE_NOMEM;
  if (MsgPtr m(nlmsg_alloc_simple(RTM_GETNEIGH, NLM_F_DUMP)); m) {
    ndmsg nd{};
    nd.ndm_family = AF_BRIDGE;
    err = nlmsg_append(m.get(), &nd, sizeof(nd), NLMSG_ALIGNTO);
    if (err >= 0) err = nl_send_auto(events_.get(), m.get());
  }
  if (err < 0) {
    ++stats_.netlink_errors;
    dump_pending_ = false;
    spdlog::warn("port {}: EVPN: neighbour dump: {}", spec_.name, nl_geterror(err));
  }
}

void EvpnSync::finish_dump(std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  pollfd pfd{nl_socket_get_fd(events_.get()), POLLIN, 0};
  while (dump_pending_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || ::poll(&pfd, 1, int(left.count())) <= 0) break;
    const int r = nl_recvmsgs_default(events_.get());
    if (r < 0 && r != -NLE_AGAIN) break;  // the loop's on_readable() deals with it
  }
  if (dump_pending_)
    spdlog::warn(
        "port {}: EVPN: the neighbour table did not arrive within {} ms; it is "
        "applied when it does",
        spec_.name, limit.count());
  apply();
}

void EvpnSync::on_readable() {
  for (int i = 0; i < 64; ++i) {
    const int r = nl_recvmsgs_default(events_.get());
    if (r >= 0) continue;  // more may wait
    if (r == -NLE_AGAIN) break;
    if (r == -NLE_NOMEM || r == -NLE_MSG_OVERFLOW) {
      // ENOBUFS: events were lost; the table is read again.
      ++stats_.resyncs;
      spdlog::warn("port {}: EVPN: netlink events lost ({}); reading the table again", spec_.name,
                   nl_geterror(r));
      dump();
      break;
    }
    if (r == -NLE_DUMP_INTR) {
      dump();
      break;
    }
    ++stats_.netlink_errors;
    break;
  }
  apply();
}

void EvpnSync::on_neigh(int type, const void* p) {
  const auto* h = static_cast<const nlmsghdr*>(p);
  if (type != RTM_NEWNEIGH && type != RTM_DELNEIGH) return;
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(ndmsg))) return;
  const auto* nd = static_cast<const ndmsg*>(NLMSG_DATA(h));
  if (nd->ndm_family != AF_BRIDGE) return;
  if (nd->ndm_ifindex != vxlan_ifindex_ && nd->ndm_ifindex != anchor_ifindex_) return;
  nlattr* tb[NDA_MAX + 1] = {};
  if (nlmsg_parse(const_cast<nlmsghdr*>(h), sizeof(ndmsg), tb, NDA_MAX, nullptr) < 0) return;
  if (nd->ndm_ifindex == anchor_ifindex_) {
    // Ours (or a predecessor's, after a hot upgrade): tick() removes what is not local.
    if (tb[NDA_LLADDR] && nla_len(tb[NDA_LLADDR]) == 6 && (nd->ndm_flags & NTF_EXT_LEARNED)) {
      const sw::Mac m = sw::Mac::from_bytes(static_cast<const uint8_t*>(nla_data(tb[NDA_LLADDR])));
      if (type == RTM_NEWNEIGH)
        exported_.insert(m.raw());
      else
        exported_.erase(m.raw());
    }
    return;
  }
  if (!tb[NDA_LLADDR] || nla_len(tb[NDA_LLADDR]) != 6 || !tb[NDA_DST] ||
      (nla_len(tb[NDA_DST]) != 4 && nla_len(tb[NDA_DST]) != 16))
    return;  // the bridge's own entry of the device
  const sw::Mac mac = sw::Mac::from_bytes(static_cast<const uint8_t*>(nla_data(tb[NDA_LLADDR])));
  ports::VtepAddr dst{};
  if (nla_len(tb[NDA_DST]) == 4) {
    uint32_t v4 = 0;
    std::memcpy(&v4, nla_data(tb[NDA_DST]), 4);
    dst = ports::vtep_v4(v4);
  } else {
    std::memcpy(dst.data(), nla_data(tb[NDA_DST]), 16);
  }
  if (ports::vtep_is_v4(dst) == port_.ipv6()) return;  // not the segment's family
  // Bounded whatever BGP peers announce: the port holds kMaxRemotes VTEPs; beyond
  // kMaxRemoteMacs remote MACs new ones are not taken (flooded to), counted.
  if (mac.is_zero()) {
    if (type == RTM_NEWNEIGH && flood_.size() < ports::VxlanPort::kMaxRemotes)
      flood_.insert(dst);
    else if (type == RTM_NEWNEIGH)
      ++stats_.over_limit;
    else
      flood_.erase(dst);
  } else if (!mac.is_multicast()) {
    if (type == RTM_NEWNEIGH) {
      if (remote_.size() < kMaxRemoteMacs || remote_.count(mac.raw()))
        remote_[mac.raw()] = dst;
      else
        ++stats_.over_limit;
    } else {
      auto it = remote_.find(mac.raw());
      if (it != remote_.end() && it->second == dst) remote_.erase(it);
    }
  }
  dirty_ = true;
}

void EvpnSync::apply() {
  if (dump_pending_ || !dirty_) return;
  dirty_ = false;
  if (flood_ != flood_applied_) {
    if (!port_.set_flood_list(std::vector<ports::VtepAddr>(flood_.begin(), flood_.end())))
      spdlog::warn("port {}: EVPN: more VTEPs than the segment holds", spec_.name);
    quiesce_();
    flood_applied_ = flood_;
  }
  const uint16_t vlan = port_.vlan().access;  // follows set-port --vlan
  const uint64_t now = dataplane::Forwarder::monotonic_ns();
  for (auto it = remote_applied_.begin(); it != remote_applied_.end();) {
    if (remote_.count(it->first)) {
      ++it;
      continue;
    }
    port_.remove_remote_mac(it->first);
    const sw::Mac m = sw::Mac::from_raw(it->first);
    if (fdb_.lookup(m, vlan, now) == port_.id()) fdb_.remove(m, vlan);
    it = remote_applied_.erase(it);
  }
  for (const auto& [mac, dst] : remote_) {
    auto it = remote_applied_.find(mac);
    if (it != remote_applied_.end() && it->second == dst) continue;
    if (!port_.set_remote_mac(mac, dst)) continue;
    fdb_.learn(sw::Mac::from_raw(mac), vlan, port_.id(), now);
    remote_applied_[mac] = dst;
  }
}

void EvpnSync::tick() {
  const uint16_t vlan = port_.vlan().access;  // follows set-port --vlan
  const uint64_t now = dataplane::Forwarder::monotonic_ns();
  // Remote MACs stay in the FDB while their routes last (a local station that moves
  // here takes its entry over, as it should).
  for (const auto& [mac, dst] : remote_applied_) {
    const sw::Mac m = sw::Mac::from_raw(mac);
    const uint16_t at = fdb_.lookup(m, vlan, now);
    if (at == 0 || at == port_.id()) fdb_.learn(m, vlan, port_.id(), now);
  }
  // Local MACs of the segment's VLAN: what the switch learned on its other ports.
  std::set<uint64_t> local;
  fdb_.for_each(now, [&](sw::Mac m, uint16_t v, uint16_t port, uint64_t) {
    if (v == vlan && port != port_.id() && !m.is_multicast() && !m.is_zero() &&
        local.size() < 65536)
      local.insert(m.raw());
  });
  for (auto it = exported_.begin(); it != exported_.end();) {
    if (local.count(*it)) {
      ++it;
      continue;
    }
    (void)write_local(*it, false);
    it = exported_.erase(it);
  }
  for (uint64_t m : local)
    if (!exported_.count(m) && write_local(m, true)) exported_.insert(m);
}

Status EvpnSync::write_local(uint64_t mac, bool add) {
  NeighPtr n(rtnl_neigh_alloc());
  if (!n) return Status::error("rtnl_neigh_alloc failed");
  rtnl_neigh_set_family(n.get(), AF_BRIDGE);
  rtnl_neigh_set_ifindex(n.get(), anchor_ifindex_);
  const auto b = sw::Mac::from_raw(mac).to_bytes();
  AddrPtr ll(nl_addr_build(AF_LLC, b.data(), b.size()));
  rtnl_neigh_set_lladdr(n.get(), ll.get());
  rtnl_neigh_set_flags(n.get(), NTF_MASTER | NTF_EXT_LEARNED);
  rtnl_neigh_set_state(n.get(), NUD_REACHABLE);
  const int err = add ? rtnl_neigh_add(cmd_.get(), n.get(), NLM_F_CREATE | NLM_F_REPLACE)
                      : rtnl_neigh_delete(cmd_.get(), n.get(), 0);
  if (err < 0 && !(err == -NLE_OBJ_NOTFOUND && !add)) {
    ++stats_.netlink_errors;
    VNET_LOG_RL(port_.log_limits().session, spdlog::level::warn,
                "port {}: EVPN: {} local MAC {}: {}", spec_.name, add ? "write" : "remove",
                sw::Mac::from_raw(mac).to_string(), nl_geterror(err));
    return Status::error(nl_geterror(err));
  }
  return Status::ok();
}

EvpnSync::Stats EvpnSync::stats() const {
  Stats s = stats_;
  s.vteps = flood_applied_.size();
  s.remote_macs = remote_applied_.size();
  s.local_macs = exported_.size();
  return s;
}

EvpnSync::~EvpnSync() {
  if (events_) loop_.remove(nl_socket_get_fd(events_.get()));
  // The devices go (zebra withdraws the VNI's routes); the entries with them.
  if (!released_ && nl_) delete_shadow();
}

}  // namespace vnet::control
