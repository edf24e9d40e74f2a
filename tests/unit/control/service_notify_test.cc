// Unit tests for notify_service(): what a service manager's NOTIFY_SOCKET receives
// (sd_notify(3)), and nothing at all without one.
#include "control/service_notify.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace vnet::control {
namespace {

class NotifySocket {
 public:
  NotifySocket() {
    path_ = "/tmp/vnet-notify-test-" + std::to_string(getpid()) + ".sock";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    path_.copy(a.sun_path, sizeof(a.sun_path) - 1);
    unlink(path_.c_str());
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifySocket() {
    unsetenv("NOTIFY_SOCKET");
    close(fd_);
    unlink(path_.c_str());
  }
  // The next datagram, or "" when none is waiting.
  std::string next() {
    char buf[512];
    ssize_t n = recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    return n > 0 ? std::string(buf, size_t(n)) : std::string();
  }

 private:
  std::string path_;
  int fd_ = -1;
};

TEST(ServiceNotify, SendsTheStateToNotifySocket) {
  NotifySocket s;
  notify_service("READY=1\nSTATUS=2 port(s)");
  EXPECT_EQ(s.next(), "READY=1\nSTATUS=2 port(s)");
  notify_service(reloading_state());
  const std::string r = s.next();
  EXPECT_EQ(r.rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u) << r;
  EXPECT_GT(std::stoull(r.substr(r.find('=', 12) + 1)), 0u) << r;
  notify_service("STOPPING=1");  // the environment is kept for later notifications
  EXPECT_EQ(s.next(), "STOPPING=1");
  EXPECT_EQ(s.next(), "");
}

TEST(ServiceNotify, NothingWithoutNotifySocket) {
  unsetenv("NOTIFY_SOCKET");
  notify_service("READY=1");  // no socket to send to: a no-op, no error
  SUCCEED();
}

}  // namespace
}  // namespace vnet::control
