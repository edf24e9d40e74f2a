// Named network namespaces: creation and removal as iproute2 does them, and running set-up
// code inside one on a short-lived thread (network namespaces are per thread, so setns()
// on that thread leaves the rest of the process where it was).
#include "ports/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <thread>

#include "common/unique_fd.h"

namespace vnet::ports {
namespace {

// Runs fn on a new thread and waits for it; the thread's namespace changes die with it.
Status on_new_thread(const std::function<Status()>& fn) {
  Status result;
  std::thread t([&] {
    try {
      result = fn();
    } catch (const std::exception& e) {
      result = Status::errorf("exception in namespace thread: {}", e.what());
    } catch (...) {
      result = Status::error("unknown exception in namespace thread");
    }
  });
  t.join();
  return result;
}

// kNetnsDir as a shared mount point, so namespaces mounted under it show in every mount
// namespace that has it (iproute2 netns_add does the same).
Status prepare_netns_dir() {
  if (::mkdir(kNetnsDir, 0755) != 0 && errno != EEXIST) {
    return Status::errorf("mkdir {}: {}", kNetnsDir, std::strerror(errno));
  }
  for (bool bound = false;; bound = true) {
    if (::mount("", kNetnsDir, "none", MS_SHARED | MS_REC, nullptr) == 0) return Status::ok();
    if (errno != EINVAL || bound) {
      return Status::errorf("mount --make-shared {}: {}", kNetnsDir, std::strerror(errno));
    }
    // Not a mount point yet: bind it onto itself, then make that shared.
    if (::mount(kNetnsDir, kNetnsDir, "none", MS_BIND | MS_REC, nullptr) != 0) {
      return Status::errorf("mount --bind {} {}: {}", kNetnsDir, kNetnsDir, std::strerror(errno));
    }
  }
}

}  // namespace

Status check_netns_name(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos || name.size() > 64) {
    return Status::errorf("invalid network namespace name '{}'", name);
  }
  return Status::ok();
}

std::string netns_path(const std::string& name) {
  return std::string(kNetnsDir) + "/" + name;
}

Status run_in_netns(const std::string& name, const std::function<Status()>& fn) {
  if (name.empty()) return fn();
  if (Status st = check_netns_name(name); !st) return st;
  const std::string path = netns_path(name);
  UniqueFd nsfd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!nsfd) {
    return Status::errorf("network namespace '{}': open {}: {}", name, path, std::strerror(errno));
  }
  return on_new_thread([&]() -> Status {
    if (::setns(nsfd.get(), CLONE_NEWNET) != 0) {
      return Status::errorf("network namespace '{}': setns: {}", name, std::strerror(errno));
    }
    return fn();
  });
}

Status create_netns(const std::string& name) {
  if (Status st = check_netns_name(name); !st) return st;
  if (Status st = prepare_netns_dir(); !st) return st;
  const std::string path = netns_path(name);
  {
    UniqueFd f(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0));
    if (!f) return Status::errorf("create {}: {}", path, std::strerror(errno));
  }
  Status st = on_new_thread([&]() -> Status {
    if (::unshare(CLONE_NEWNET) != 0) {
      return Status::errorf("unshare(CLONE_NEWNET): {}", std::strerror(errno));
    }
    // /proc/thread-self: /proc/self would name the main thread's namespace.
    if (::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      return Status::errorf("bind mount of the new namespace on {}: {}", path,
                            std::strerror(errno));
    }
    return Status::ok();
  });
  if (!st) ::unlink(path.c_str());
  return st;
}

Status delete_netns(const std::string& name) {
  if (Status st = check_netns_name(name); !st) return st;
  const std::string path = netns_path(name);
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    return Status::errorf("umount {}: {}", path, std::strerror(errno));
  }
  if (::unlink(path.c_str()) != 0) {
    return Status::errorf("unlink {}: {}", path, std::strerror(errno));
  }
  return Status::ok();
}

}  // namespace vnet::ports
