// Endpoint: server mode (accept, one session at a time, stale / live / non-socket
// paths, socket file removed on destruction) and client mode (retry and reconnect),
// driven by EventLoop::run_once in bounded loops.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cstdlib>
#include <functional>

#include "common/event_loop.h"
#include "common/socket_perms.h"
#include "memory/fault_guard.h"
#include "vhost_user/endpoint.h"
#include "vhu_test_util.h"

namespace vnet::vhost_user {
namespace {

using testing::count_fds;
using testing::FakeBackend;
using testing::readable;

// Runs the loop until `cond` holds, at most ~5 s of 10 ms rounds.
bool drive(EventLoop& loop, const std::function<bool()>& cond) {
  for (int i = 0; i < 500 && !cond(); ++i) loop.run_once(10);
  return cond();
}

sockaddr_un addr_of(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

UniqueFd connect_client(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto a = addr_of(path);
  EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  return fd;
}

UniqueFd listen_at(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  auto a = addr_of(path);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << strerror(errno);
  EXPECT_EQ(listen(fd.get(), 4), 0);
  return fd;
}

bool exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

// True once the peer of `fd` has closed (EOF readable).
bool at_eof(int fd) {
  if (!readable(fd)) return false;
  char c;
  return recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) == 0;
}

class EndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The fault guard's notification eventfd lives as long as the process: made before
    // any test counts fds.
    memory::FaultGuard::install();
    std::string tmpl = ::testing::TempDir() + "vnet-vhu-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/vhu.sock";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }

  EndpointConfig server_cfg() {
    EndpointConfig c;
    c.path = path_;
    c.name = "ep-test";
    return c;
  }

  EventLoop loop;
  FakeBackend backend;
  std::string dir_, path_;
};

TEST_F(EndpointTest, ServerAcceptsOneFrontEndAtATime) {
  size_t fds_before = count_fds();
  {
    auto ep = Endpoint::create(loop, server_cfg(), backend);
    ASSERT_TRUE(ep.is_ok()) << ep.message();
    Endpoint& e = **ep;
    struct stat st;
    ASSERT_EQ(lstat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_FALSE(e.connected());

    UniqueFd c1 = connect_client(path_);
    ASSERT_TRUE(drive(loop, [&] { return e.connected(); }));
    EXPECT_EQ(e.counters().connections.get(), 1u);

    // The session answers.
    ASSERT_TRUE(send_request(c1.get(), Request::GET_FEATURES, nullptr, 0));
    ASSERT_TRUE(drive(loop, [&] { return readable(c1.get()); }));
    auto reply = recv_message_blocking(c1.get(), 1000);
    ASSERT_TRUE(reply.is_ok()) << reply.message();
    EXPECT_EQ(reply->u64(), backend.features);

    // A second front end is accepted and closed at once.
    UniqueFd c2 = connect_client(path_);
    ASSERT_TRUE(drive(loop, [&] { return e.counters().rejected.get() == 1; }));
    ASSERT_TRUE(drive(loop, [&] { return at_eof(c2.get()); }));
    EXPECT_TRUE(e.connected());
    EXPECT_EQ(backend.resets, 0);

    // The first goes away: the backend is reset and the next one is accepted.
    c1.reset();
    ASSERT_TRUE(drive(loop, [&] { return !e.connected(); }));
    EXPECT_EQ(backend.resets, 1);
    EXPECT_EQ(e.counters().disconnects.get(), 1u);
    UniqueFd c3 = connect_client(path_);
    ASSERT_TRUE(drive(loop, [&] { return e.connected(); }));
    EXPECT_EQ(e.counters().connections.get(), 2u);

    // Nobody else may listen on a live socket.
    auto other = Endpoint::create(loop, server_cfg(), backend);
    ASSERT_FALSE(other.is_ok());
    EXPECT_NE(other.message().find("in use"), std::string::npos) << other.message();
    EXPECT_TRUE(exists(path_));  // the failed attempt did not remove ours

    // A front end that sends garbage ends its session.
    uint8_t junk[12] = {0xee, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
    ASSERT_EQ(write(c3.get(), junk, sizeof(junk)), 12);
    ASSERT_TRUE(drive(loop, [&] { return !e.connected(); }));
    EXPECT_EQ(backend.resets, 2);
    ASSERT_TRUE(drive(loop, [&] { return at_eof(c3.get()); }));

    UniqueFd c4 = connect_client(path_);
    ASSERT_TRUE(drive(loop, [&] { return e.connected(); }));
    ep->reset();  // destroys the endpoint with a live session
    EXPECT_EQ(backend.resets, 3);
    EXPECT_FALSE(exists(path_));
    EXPECT_TRUE(at_eof(c4.get()));
  }
  EXPECT_EQ(count_fds(), fds_before);
}

// Who may connect: the server socket gets exactly the configured mode and group, the
// default is 0660, and a user outside them cannot connect (checked from a child that
// drops to nobody; skipped unless root).
TEST_F(EndpointTest, ServerSocketModeOwnerAndGroup) {
  for (mode_t mask : {mode_t(0), mode_t(077)}) {  // the umask changes nothing
    mode_t old = umask(mask);
    auto ep = Endpoint::create(loop, server_cfg(), backend);
    umask(old);
    ASSERT_TRUE(ep.is_ok()) << ep.message();
    struct stat st;
    ASSERT_EQ(lstat(path_.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0660u) << "default mode, umask " << std::oct << mask;
  }
  auto gid = lookup_group("daemon");  // in every Debian base system
  ASSERT_TRUE(gid) << gid.message();
  EndpointConfig c = server_cfg();
  c.perms.mode = 0600;
  c.perms.gid = *gid;
  auto ep = Endpoint::create(loop, c, backend);
  ASSERT_TRUE(ep.is_ok()) << ep.message();
  struct stat st;
  ASSERT_EQ(lstat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  if (geteuid() != 0) GTEST_SKIP() << "chown and the connect check need root";
  EXPECT_EQ(st.st_gid, gid_t(*gid));
  auto nobody = lookup_user("nobody");
  ASSERT_TRUE(nobody) << nobody.message();
  // The directory must be searchable for the check to be about the socket's own mode.
  ASSERT_EQ(chmod(dir_.c_str(), 0755), 0);
  auto can_connect_as_nobody = [&] {
    pid_t pid = fork();
    if (pid == 0) {
      if (setgid(65534) != 0 || setuid(uid_t(*nobody)) != 0) _exit(3);
      int fd = socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path_.c_str());
      _exit(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 4;
  };
  EXPECT_EQ(can_connect_as_nobody(), 1) << "0600: nobody must not connect";
  ASSERT_EQ(chmod(path_.c_str(), 0666), 0);
  EXPECT_EQ(can_connect_as_nobody(), 0) << "0666: nobody may connect (the check itself works)";
}

TEST(SocketPermsTest, ParsesModesAndRejectsBadOnes) {
  EXPECT_EQ(*parse_socket_mode("0660"), mode_t(0660));
  EXPECT_EQ(*parse_socket_mode("600"), mode_t(0600));
  EXPECT_EQ(*parse_socket_mode("0o640"), mode_t(0640));
  for (const char* bad : {"", "0999", "4660", "rw-rw----", "0060", "066600"})
    EXPECT_FALSE(parse_socket_mode(bad)) << bad;
  EXPECT_FALSE(lookup_user("no-such-user-vnet"));
  EXPECT_NE(lookup_group("no-such-group-vnet").message().find("no-such-group-vnet"),
            std::string::npos);
  EXPECT_EQ(*lookup_group("1234"), 1234);
}

TEST_F(EndpointTest, RefusesARegularFile) {
  {
    UniqueFd f(open(path_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    ASSERT_TRUE(f.valid());
  }
  auto ep = Endpoint::create(loop, server_cfg(), backend);
  ASSERT_FALSE(ep.is_ok());
  EXPECT_NE(ep.message().find("not a socket"), std::string::npos) << ep.message();
  EXPECT_TRUE(exists(path_));
}

TEST_F(EndpointTest, ReplacesAStaleSocket) {
  {
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    auto a = addr_of(path_);
    ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  }  // closed without listening: a stale socket file
  ASSERT_TRUE(exists(path_));
  auto ep = Endpoint::create(loop, server_cfg(), backend);
  ASSERT_TRUE(ep.is_ok()) << ep.message();
  UniqueFd c = connect_client(path_);
  ASSERT_TRUE(drive(loop, [&] { return (*ep)->connected(); }));
}

TEST_F(EndpointTest, RefusesBadPaths) {
  EndpointConfig c = server_cfg();
  c.path = dir_ + "/" + std::string(200, 'x');
  auto ep = Endpoint::create(loop, c, backend);
  ASSERT_FALSE(ep.is_ok());
  EXPECT_NE(ep.message().find("too long"), std::string::npos) << ep.message();
  c.path = dir_ + "/no-such-dir/sock";
  EXPECT_FALSE(Endpoint::create(loop, c, backend).is_ok());
}

TEST_F(EndpointTest, ClientRetriesAndReconnects) {
  EndpointConfig c = server_cfg();
  c.client = true;
  c.reconnect_interval = std::chrono::milliseconds(10);
  auto ep = Endpoint::create(loop, c, backend);
  ASSERT_TRUE(ep.is_ok()) << ep.message();
  Endpoint& e = **ep;
  // Nobody listens yet: failures are counted, retries go on.
  EXPECT_FALSE(e.connected());
  EXPECT_GE(e.counters().connect_failures.get(), 1u);
  ASSERT_TRUE(drive(loop, [&] { return e.counters().connect_failures.get() >= 3; }));

  UniqueFd srv = listen_at(path_);
  ASSERT_TRUE(drive(loop, [&] { return e.connected(); }));
  EXPECT_EQ(e.counters().connections.get(), 1u);
  UniqueFd s1(accept4(srv.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(s1.valid());
  ASSERT_TRUE(send_request(s1.get(), Request::GET_QUEUE_NUM, nullptr, 0));
  ASSERT_TRUE(drive(loop, [&] { return readable(s1.get()); }));
  auto reply = recv_message_blocking(s1.get(), 1000);
  ASSERT_TRUE(reply.is_ok()) << reply.message();
  EXPECT_EQ(reply->u64(), 1u);

  // The front end goes away: reset, then a new connection after the interval.
  s1.reset();
  ASSERT_TRUE(drive(loop, [&] { return e.counters().disconnects.get() == 1; }));
  EXPECT_EQ(backend.resets, 1);
  ASSERT_TRUE(drive(loop, [&] { return e.counters().connections.get() == 2; }));
  EXPECT_TRUE(e.connected());
  UniqueFd s2(accept4(srv.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(s2.valid());

  // Client mode never unlinks the front end's socket.
  ep->reset();
  EXPECT_EQ(backend.resets, 2);
  EXPECT_TRUE(exists(path_));
  EXPECT_TRUE(drive(loop, [&] { return at_eof(s2.get()); }));
}

TEST_F(EndpointTest, ClientDestroyedWhileRetrying) {
  EndpointConfig c = server_cfg();
  c.client = true;
  c.reconnect_interval = std::chrono::milliseconds(5);
  {
    auto ep = Endpoint::create(loop, c, backend);
    ASSERT_TRUE(ep.is_ok());
  }
  // The timer was cancelled: running the loop calls nothing of the dead endpoint.
  for (int i = 0; i < 5; ++i) loop.run_once(10);
  EXPECT_EQ(backend.resets, 0);
}

}  // namespace
}  // namespace vnet::vhost_user
