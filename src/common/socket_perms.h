// SocketPerms: who may connect to a Unix socket vnetd listens on (the vhost-user
// server sockets, the control socket): the file's mode, owner and group.
//
// Connecting to a Unix stream socket needs write permission on its file, so the mode
// is the access control. The file never has a looser mode or a wider group than
// configured, not even for an instant: bind() creates it with the socket inode's mode
// minus the umask, so before bind the inode gets only the owner bits (owner: vnetd's
// user, who may connect anyway); after bind the file gets its owner and group, then
// its exact mode.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/result.h"

namespace vnet {

struct SocketPerms {
  mode_t mode = 0660;
  int uid = -1;  // -1: vnetd's own
  int gid = -1;  // -1: vnetd's own
};

// "0660", "660" or "0o660" -> 0660; only permission bits (no setuid/setgid/sticky).
Result<mode_t> parse_socket_mode(const std::string& s);
// A user or group by name or number; errors say which name was not found.
Result<int> lookup_user(const std::string& name);
Result<int> lookup_group(const std::string& name);

// Before bind(): the socket inode keeps only the owner bits of perms.mode.
Status socket_perms_before_bind(int fd, const SocketPerms& perms);
// After bind(): chown (if asked) then chmod to exactly perms.mode.
Status socket_perms_after_bind(const std::string& path, const SocketPerms& perms);

}  // namespace vnet
