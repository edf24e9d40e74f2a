// Hot upgrade: the hand-over socket's messages and the state's parts (handover.h).
#include "control/handover.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "control/policing_config.h"

namespace vnet::control::handover {

using nlohmann::json;

namespace {

Status send_all(int fd, const void* data, size_t len, const std::vector<int>& fds) {
  iovec iov{const_cast<void*>(data), len};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  std::vector<char> ctl;
  if (!fds.empty()) {
    ctl.assign(CMSG_SPACE(sizeof(int) * fds.size()), 0);
    mh.msg_control = ctl.data();
    mh.msg_controllen = ctl.size();
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t r = ::sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (r == ssize_t(len)) return Status::ok();
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, 5000) > 0) continue;
      return Status::error("hand-over socket: send timed out");
    }
    return Status::errorf("hand-over socket: send: {}", r < 0 ? strerror(errno) : "short");
  }
}

// One message: its bytes and fds (MSG_CMSG_CLOEXEC). EOF is an error.
Status recv_one(int fd, Deadline deadline, std::vector<char>& buf, std::vector<UniqueFd>* fds) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status::error("timed out");
    pollfd p{fd, POLLIN, 0};
    int pr = ::poll(&p, 1, int(std::min<int64_t>(left.count(), 1000)));
    if (pr < 0 && errno != EINTR) return Status::errorf("poll: {}", strerror(errno));
    if (pr <= 0) continue;
    buf.assign(kChunk + 1, 0);
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kFdsPerMessage)];
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl;
    mh.msg_controllen = sizeof(ctl);
    ssize_t r = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0) return Status::errorf("recv: {}", strerror(errno));
    std::vector<UniqueFd> got;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < n; ++i) {
        int f;
        std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        got.emplace_back(f);
      }
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Status::error("message truncated");
    if (r == 0) return Status::error("the other side closed the hand-over socket");
    buf.resize(size_t(r));
    if (fds)
      *fds = std::move(got);
    else if (!got.empty())
      return Status::error("fds where none were expected");
    return Status::ok();
  }
}

}  // namespace

Status send_json(int fd, const json& j) {
  const std::string text = j.dump();
  size_t off = 0;
  do {
    size_t n = std::min(kChunk - 1, text.size() - off);
    std::string msg(1, off + n == text.size() ? 'E' : 'J');
    msg.append(text, off, n);
    if (Status st = send_all(fd, msg.data(), msg.size(), {}); !st) return st;
    off += n;
  } while (off < text.size());
  return Status::ok();
}

Result<json> recv_json(int fd, Deadline deadline, size_t max_bytes) {
  std::string text;
  std::vector<char> buf;
  for (;;) {
    if (Status st = recv_one(fd, deadline, buf, nullptr); !st) return st;
    if (buf.empty() || (buf[0] != 'J' && buf[0] != 'E'))
      return Status::error("hand-over: not a JSON chunk");
    text.append(buf.data() + 1, buf.size() - 1);
    if (text.size() > max_bytes)
      return Status::errorf("hand-over: state larger than {} bytes", max_bytes);
    if (buf[0] == 'E') break;
  }
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::error("hand-over: malformed JSON");
  return j;
}

Status send_fds(int fd, const std::vector<UniqueFd>& fds) {
  for (size_t off = 0; off < fds.size(); off += kFdsPerMessage) {
    std::vector<int> raw;
    for (size_t i = off; i < std::min(fds.size(), off + kFdsPerMessage); ++i)
      raw.push_back(fds[i].get());
    const char tag = 'F';
    if (Status st = send_all(fd, &tag, 1, raw); !st) return st;
  }
  return Status::ok();
}

Result<std::vector<UniqueFd>> recv_fds(int fd, size_t n, Deadline deadline) {
  if (n > kMaxFds) return Status::errorf("hand-over: {} fds, more than {}", n, kMaxFds);
  std::vector<UniqueFd> out;
  std::vector<char> buf;
  while (out.size() < n) {
    std::vector<UniqueFd> got;
    if (Status st = recv_one(fd, deadline, buf, &got); !st) return st;
    if (buf.size() != 1 || buf[0] != 'F') return Status::error("hand-over: not an fd message");
    if (got.empty() || out.size() + got.size() > n)
      return Status::errorf("hand-over: {} fds announced, {} received", n, out.size() + got.size());
    for (auto& f : got) out.push_back(std::move(f));
  }
  return out;
}

void drain(int fd) {
  std::vector<char> buf;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) return;  // nothing more comes
    std::vector<UniqueFd> fds;           // closed here
    if (!recv_one(fd, deadline, buf, &fds)) return;
  }
}

json spec_json(const PortSpec& s) {
  json policing = json::array();
  auto limits = [&](const sw::RateLimits& r) {
    policing.push_back({r.packets.rate, r.packets.burst, r.bits.rate, r.bits.burst});
  };
  limits(s.policing.ingress);
  for (const auto& r : s.policing.storm) limits(r);
  return {{"name", s.name},
          {"type", s.type},
          {"socket", s.socket},
          {"client", s.client},
          {"ifname", s.ifname},
          {"netns", s.netns},
          {"attach", s.attach},
          {"offloads", s.offloads},
          {"io", s.io},
          {"mtu", s.mtu},
          {"vlan", vlan_json(s.vlan)},
          {"allowed_macs", s.allowed_macs},
          {"socket_mode", s.socket_mode},
          {"socket_uid", s.socket_uid},
          {"socket_gid", s.socket_gid},
          {"worker", s.worker},
          {"queues", s.queues},
          {"vni", s.vni},
          {"local", s.local},
          {"remotes", s.remotes},
          {"udp_port", s.udp_port},
          {"control", s.control},
          {"underlay_mtu", s.underlay_mtu},
          {"shadow_udp_port", s.shadow_udp_port},
          {"policing", policing}};
}

Result<PortSpec> spec_from_json(const json& j) {
  if (!j.is_object()) return Status::error("port spec: not an object");
  PortSpec s;
  try {
    s.name = j.at("name").get<std::string>();
    s.type = j.at("type").get<std::string>();
    s.socket = j.at("socket").get<std::string>();
    s.client = j.at("client").get<bool>();
    s.ifname = j.at("ifname").get<std::string>();
    s.netns = j.at("netns").get<std::string>();
    s.attach = j.at("attach").get<bool>();
    s.offloads = j.at("offloads").get<bool>();
    s.io = j.at("io").get<std::string>();
    s.mtu = j.at("mtu").get<uint32_t>();
    s.allowed_macs = j.at("allowed_macs").get<std::vector<uint64_t>>();
    s.socket_mode = j.at("socket_mode").get<int>();
    s.socket_uid = j.at("socket_uid").get<int>();
    s.socket_gid = j.at("socket_gid").get<int>();
    s.worker = j.at("worker").get<int>();
    s.queues = j.at("queues").get<uint32_t>();
    if (s.type == "vxlan") {
      s.vni = j.at("vni").get<uint32_t>();
      s.local = j.at("local").get<std::string>();
      s.remotes = j.at("remotes").get<std::vector<std::string>>();
      s.udp_port = j.at("udp_port").get<uint32_t>();
      s.control = j.at("control").get<std::string>();
      s.underlay_mtu = j.at("underlay_mtu").get<uint32_t>();
      s.shadow_udp_port = j.at("shadow_udp_port").get<uint32_t>();
    }
    const json& pol = j.at("policing");
    if (!pol.is_array() || pol.size() != 1 + sw::kStormClasses)
      return Status::error("port spec: 'policing' must be an array of 4");
    auto limits = [](const json& a, sw::RateLimits& r) {
      auto v = a.get<std::vector<uint64_t>>();
      if (v.size() != 4) throw std::runtime_error("a policing entry must have 4 numbers");
      r.packets = {v[0], v[1]};
      r.bits = {v[2], v[3]};
    };
    limits(pol[0], s.policing.ingress);
    for (size_t i = 0; i < sw::kStormClasses; ++i) limits(pol[1 + i], s.policing.storm[i]);
  } catch (const std::exception& e) {
    return Status::errorf("port spec: {}", e.what());
  }
  // The fields parse_port checks, checked again the same way.
  json check = {{"name", s.name}, {"type", s.type}};
  if (s.type == "vhost-user") {
    check["socket"] = s.socket;
  } else if (s.type == "tap") {
    check["ifname"] = s.ifname;
    check["netns"] = s.netns;
    check["io"] = s.io;
  } else if (s.type == "vxlan") {
    check["vni"] = s.vni;
    check["local"] = s.local;
    check["remote"] = s.remotes;
    check["udp_port"] = s.udp_port;
    check["control"] = s.control;
    check["netns"] = s.netns;
    check["underlay_mtu"] = s.underlay_mtu;
    check["shadow_udp_port"] = s.shadow_udp_port;
  }
  if (s.queues && s.type != "vxlan") check["queues"] = s.queues;
  if (s.mtu) check["mtu"] = s.mtu;
  if (s.worker >= 0) check["worker"] = s.worker;
  if (!j.at("vlan").is_object()) return Status::error("port spec: 'vlan' must be an object");
  for (auto& [k, v] : j.at("vlan").items())
    if (k != "mode") check[k] = v;
  auto checked = parse_port(check, "handed-over port");
  if (!checked) return checked.status();
  s.vlan = checked->vlan;
  for (uint64_t m : s.allowed_macs)
    if (m == 0 || (m >> 48) != 0) return Status::error("port spec: bad allowed MAC");
  return s;
}

json FdTable::add(UniqueFd fd) {
  if (!fd) return nullptr;
  fds_.push_back(std::move(fd));
  return fds_.size() - 1;
}

Result<UniqueFd> FdTable::take(const json& v, const std::string& what) {
  if (v.is_null()) return UniqueFd();
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<uint64_t>() >= fds_.size())
    return Status::errorf("{}: fd index {} out of range", what, v.dump());
  UniqueFd& f = fds_[v.get<size_t>()];
  if (!f) return Status::errorf("{}: fd index {} used twice", what, v.dump());
  return std::move(f);
}

json messages_json(std::vector<vhost_user::Message>& msgs, FdTable& fds) {
  json out = json::array();
  static const char* hex = "0123456789abcdef";
  for (auto& m : msgs) {
    std::string p;
    for (uint8_t b : m.payload) {
      p += hex[b >> 4];
      p += hex[b & 15];
    }
    json f = json::array();
    for (auto& fd : m.fds) f.push_back(fds.add(std::move(fd)));
    out.push_back({{"r", m.hdr.request}, {"p", p}, {"f", f}});
  }
  return out;
}

Result<std::vector<vhost_user::Message>> messages_from_json(const json& j, FdTable& fds,
                                                            const std::string& what) {
  if (!j.is_array()) return Status::errorf("{}: not an array", what);
  std::vector<vhost_user::Message> out;
  for (const auto& e : j) {
    if (!e.is_object() || !e.contains("r") || !e["r"].is_number_unsigned() || !e.contains("p") ||
        !e["p"].is_string() || !e.contains("f") || !e["f"].is_array())
      return Status::errorf("{}: malformed message", what);
    vhost_user::Message m;
    m.hdr.request = e["r"].get<uint32_t>();
    m.hdr.flags = 1;
    const std::string& p = e["p"].get_ref<const std::string&>();
    if (p.size() % 2 || p.size() / 2 > vhost_user::kMaxPayload)
      return Status::errorf("{}: bad payload", what);
    for (size_t i = 0; i < p.size(); i += 2) {
      auto nib = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
      };
      int hi = nib(p[i]), lo = nib(p[i + 1]);
      if (hi < 0 || lo < 0) return Status::errorf("{}: bad payload", what);
      m.payload.push_back(uint8_t(hi << 4 | lo));
    }
    m.hdr.size = uint32_t(m.payload.size());
    for (const auto& f : e["f"]) {
      auto fd = fds.take(f, what);
      if (!fd) return fd.status();
      if (!*fd) return Status::errorf("{}: a message fd is null", what);
      m.fds.push_back(std::move(*fd));
    }
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace vnet::control::handover
