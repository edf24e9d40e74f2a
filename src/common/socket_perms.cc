// SocketPerms: mode parsing, user/group lookup, and the before/after-bind steps.
#include "common/socket_perms.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace vnet {

Result<mode_t> parse_socket_mode(const std::string& s) {
  std::string digits = s;
  if (digits.rfind("0o", 0) == 0) digits = digits.substr(2);
  if (digits.empty() || digits.size() > 4)
    return Status::errorf("socket mode '{}' must be octal permission bits like \"0660\"", s);
  mode_t m = 0;
  for (char c : digits) {
    if (c < '0' || c > '7')
      return Status::errorf("socket mode '{}' must be octal permission bits like \"0660\"", s);
    m = mode_t(m * 8 + mode_t(c - '0'));
  }
  if (m & ~mode_t(0777))
    return Status::errorf("socket mode '{}' has bits beyond 0777 (setuid, setgid, sticky)", s);
  if (!(m & S_IWUSR))
    return Status::errorf("socket mode '{}' must let the owner write (connect)", s);
  return m;
}

namespace {

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

Result<int> lookup_user(const std::string& name) {
  if (all_digits(name)) return std::stoi(name);
  std::vector<char> buf(16384);
  passwd pw{}, *res = nullptr;
  int rc = getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &res);
  if (rc != 0) return Status::errorf("user '{}': {}", name, strerror(rc));
  if (!res) return Status::errorf("no user named '{}'", name);
  return int(pw.pw_uid);
}

Result<int> lookup_group(const std::string& name) {
  if (all_digits(name)) return std::stoi(name);
  std::vector<char> buf(65536);
  group gr{}, *res = nullptr;
  int rc = getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &res);
  if (rc != 0) return Status::errorf("group '{}': {}", name, strerror(rc));
  if (!res) return Status::errorf("no group named '{}'", name);
  return int(gr.gr_gid);
}

Status socket_perms_before_bind(int fd, const SocketPerms& perms) {
  if (fchmod(fd, perms.mode & S_IRWXU) != 0)
    return Status::errorf("fchmod socket: {}", strerror(errno));
  return Status::ok();
}

Status socket_perms_after_bind(const std::string& path, const SocketPerms& perms) {
  if ((perms.uid >= 0 || perms.gid >= 0) &&
      chown(path.c_str(), perms.uid >= 0 ? uid_t(perms.uid) : uid_t(-1),
            perms.gid >= 0 ? gid_t(perms.gid) : gid_t(-1)) != 0)
    return Status::errorf("chown {}: {}", path, strerror(errno));
  if (chmod(path.c_str(), perms.mode) != 0)  // exactly the mode, whatever the umask
    return Status::errorf("chmod {}: {}", path, strerror(errno));
  return Status::ok();
}

}  // namespace vnet
