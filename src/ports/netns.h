// Network namespaces by name, as `ip netns` keeps them: a namespace NAME is the bind mount
// /run/netns/NAME. run_in_netns() runs set-up code (opening /dev/net/tun, netlink and packet
// sockets) on a short-lived thread that joined the namespace; what that code opens stays in
// the namespace and works from any thread of vnetd afterwards. Control thread and tests only.
#pragma once

#include <functional>
#include <string>

#include "common/result.h"

namespace vnet::ports {

// Directory of named namespaces (the iproute2 convention).
inline constexpr const char* kNetnsDir = "/run/netns";

// A usable namespace name: not empty, no '/', not "." or "..", at most 64 bytes.
Status check_netns_name(const std::string& name);
// kNetnsDir + "/" + name.
std::string netns_path(const std::string& name);

// Runs `fn` in the named network namespace and returns what it returns. An empty name runs
// `fn` on the calling thread, in the caller's namespace. Otherwise `fn` runs on a new
// thread that setns()'d into the namespace and ends with `fn`, so the caller's namespace
// never changes. Exceptions from `fn` come back as an error status.
Status run_in_netns(const std::string& name, const std::function<Status()>& fn);

// Creates a named namespace the way `ip netns add NAME` does: kNetnsDir made a shared
// mount point (so other mount namespaces see it), an empty file NAME bind-mounted onto a
// new namespace. Fails if NAME exists.
Status create_netns(const std::string& name);
// Removes it the way `ip netns delete NAME` does (lazy unmount, unlink). The namespace
// itself lives on while something (a TAP fd, a socket) still refers to it.
Status delete_netns(const std::string& name);

}  // namespace vnet::ports
