#include "ports/vni_steering.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vnet::ports {

namespace {
#ifndef SO_ATTACH_REUSEPORT_CBPF
constexpr int SO_ATTACH_REUSEPORT_CBPF = 51;
#endif
constexpr uint32_t kNoMember = 0xffffffff;  // past the end: the kernel hashes
}  // namespace

std::vector<sock_filter> VniSteering::program(const std::vector<uint32_t>& vnis) {
  std::vector<sock_filter> p;
  p.reserve(3 + 2 * vnis.size());
  p.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4));  // VNI << 8 | reserved
  p.push_back(BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 8));
  for (uint32_t i = 0; i < vnis.size(); ++i) {
    p.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, vnis[i], 0, 1));
    p.push_back(BPF_STMT(BPF_RET | BPF_K, i));
  }
  p.push_back(BPF_STMT(BPF_RET | BPF_K, kNoMember));
  return p;
}

Status VniSteering::attach() const {
  if (members_.empty()) return Status::ok();
  std::vector<uint32_t> vnis;
  for (const auto& m : members_) vnis.push_back(m.second);
  std::vector<sock_filter> code = program(vnis);
  if (code.size() > BPF_MAXINSNS)
    return Status::errorf("{} VNIs on one UDP port: the steering program is too long", vnis.size());
  sock_fprog fp{uint16_t(code.size()), code.data()};
  if (setsockopt(members_.front().first, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &fp, sizeof(fp)) !=
      0)
    return Status::errorf("SO_ATTACH_REUSEPORT_CBPF: {}", strerror(errno));
  return Status::ok();
}

Status VniSteering::joined(int fd, uint32_t vni) {
  for (const auto& m : members_)
    if (m.second == vni) return Status::errorf("VNI {} has a socket in the group already", vni);
  members_.emplace_back(fd, vni);
  Status st = attach();
  if (!st) members_.pop_back();
  return st;
}

Status VniSteering::left(int fd) {
  auto it =
      std::find_if(members_.begin(), members_.end(), [fd](const auto& m) { return m.first == fd; });
  if (it == members_.end()) return Status::ok();
  *it = members_.back();  // what the kernel does with the group's array
  members_.pop_back();
  return attach();
}

}  // namespace vnet::ports
