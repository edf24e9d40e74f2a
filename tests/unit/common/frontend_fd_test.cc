// Unit tests for FrontendFd and Notifier: only eventfds pass as kick/call/err fds and
// only regular files as memory fds (pipes, sockets, listening sockets, devices, epoll
// and timer fds are refused with a reason naming what they are); a Notifier signals an
// eventfd whose counter the front end saturated and made blocking without blocking
// (the write() it replaces would hang), and an edge-triggered watch of a kick eventfd
// that is never read reports each write once, also when the counter stays non-zero.
#include "common/frontend_fd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>

namespace vnet {
namespace {

std::string refusal(int raw, FdKind kind) {
  auto r = FrontendFd::adopt(UniqueFd(raw), kind);
  EXPECT_FALSE(r.is_ok());
  return r.is_ok() ? "" : r.message();
}

TEST(FrontendFd, EventFdKind) {
  auto ok = FrontendFd::adopt(UniqueFd(eventfd(0, EFD_CLOEXEC)), FdKind::kEventFd);
  ASSERT_TRUE(ok.is_ok()) << ok.message();
  EXPECT_GE(ok->watch_fd(), 0);
  EXPECT_EQ(ok->map_fd(), -1);
  // A blocking eventfd is an eventfd too (the front end's flags are its business).
  EXPECT_TRUE(FrontendFd::adopt(UniqueFd(eventfd(0, 0)), FdKind::kEventFd).is_ok());
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  EXPECT_NE(refusal(p[0], FdKind::kEventFd).find("pipe"), std::string::npos);
  close(p[1]);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  EXPECT_NE(refusal(sv[0], FdKind::kEventFd).find("socket"), std::string::npos);
  close(sv[1]);
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(listen(ls, 1), 0);
  EXPECT_NE(refusal(ls, FdKind::kEventFd).find("socket"), std::string::npos);
  EXPECT_NE(refusal(open("/dev/null", O_RDWR | O_CLOEXEC), FdKind::kEventFd).find("device"),
            std::string::npos);
  EXPECT_NE(refusal(memfd_create("x", MFD_CLOEXEC), FdKind::kEventFd).find("regular file"),
            std::string::npos);
  EXPECT_NE(refusal(epoll_create1(EPOLL_CLOEXEC), FdKind::kEventFd).find("eventpoll"),
            std::string::npos);
  EXPECT_NE(refusal(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC), FdKind::kEventFd).find("timerfd"),
            std::string::npos);
  // No fd (the invalid-FD flag): an invalid FrontendFd, not an error.
  auto none = FrontendFd::adopt(UniqueFd(), FdKind::kEventFd);
  ASSERT_TRUE(none.is_ok());
  EXPECT_FALSE(none->valid());
}

TEST(FrontendFd, MemoryKind) {
  int m = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_EQ(fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK), 0);
  auto ok = FrontendFd::adopt(UniqueFd(m), FdKind::kMemory);
  ASSERT_TRUE(ok.is_ok()) << ok.message();
  EXPECT_GE(ok->map_fd(), 0);
  EXPECT_EQ(ok->watch_fd(), -1);
  EXPECT_TRUE(ok->sealed_against_shrink());
  auto unsealed = FrontendFd::adopt(UniqueFd(memfd_create("y", MFD_CLOEXEC)), FdKind::kMemory);
  ASSERT_TRUE(unsealed.is_ok());
  EXPECT_FALSE(unsealed->sealed_against_shrink());
  EXPECT_NE(refusal(eventfd(0, EFD_CLOEXEC), FdKind::kMemory).find("eventfd"), std::string::npos);
  EXPECT_NE(refusal(open("/dev/zero", O_RDWR | O_CLOEXEC), FdKind::kMemory).find("device"),
            std::string::npos);
  EXPECT_NE(refusal(open("/", O_RDONLY | O_CLOEXEC), FdKind::kMemory).find("directory"),
            std::string::npos);
}

TEST(FrontendFd, DupKeepsTheKind) {
  auto a = FrontendFd::adopt(UniqueFd(eventfd(0, EFD_CLOEXEC)), FdKind::kEventFd);
  ASSERT_TRUE(a.is_ok());
  auto b = a->dup();
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(b->kind(), FdKind::kEventFd);
  EXPECT_NE(b->watch_fd(), a->watch_fd());
}

TEST(Notifier, SignalsANormalEventFd) {
  int raw = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int mine = dup(raw);  // the front end's copy
  auto fd = FrontendFd::adopt(UniqueFd(raw), FdKind::kEventFd);
  ASSERT_TRUE(fd.is_ok());
  Notifier n;
  ASSERT_TRUE(n.set(std::move(*fd)).is_ok());
  ASSERT_TRUE(n.armed());
  for (int i = 0; i < 3; ++i) n.signal();
  uint64_t v = 0;
  ASSERT_EQ(read(mine, &v, sizeof(v)), 8);
  EXPECT_EQ(v, 3u);
  EXPECT_EQ(n.failures(), 0u);
  close(mine);
}

TEST(Notifier, SaturatedBlockingEventFdDoesNotBlock) {
  // The front end makes its call fd blocking and puts the counter at its maximum: a
  // write() of 1 would block forever. (With the write() fallback this test would hang.)
  int raw = eventfd(0, EFD_CLOEXEC);
  int mine = dup(raw);
  uint64_t max = 0xfffffffffffffffeULL;
  ASSERT_EQ(write(mine, &max, sizeof(max)), 8);
  auto fd = FrontendFd::adopt(UniqueFd(raw), FdKind::kEventFd);
  ASSERT_TRUE(fd.is_ok());
  Notifier n;
  ASSERT_TRUE(n.set(std::move(*fd)).is_ok());
  ASSERT_TRUE(n.uses_uring()) << "io_uring is not available";  // (made by the first set)
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) n.signal();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  // The front end drains it and the next signal arrives.
  uint64_t v = 0;
  ASSERT_EQ(read(mine, &v, sizeof(v)), 8);
  n.signal();
  ASSERT_EQ(read(mine, &v, sizeof(v)), 8);
  EXPECT_EQ(v, 1u);
  close(mine);
}

TEST(Notifier, ReplacingAndClearingTheFd) {
  Notifier n;
  n.signal();  // nothing set: nothing happens
  int a = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), b = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int a2 = dup(a), b2 = dup(b);
  ASSERT_TRUE(n.set(std::move(*FrontendFd::adopt(UniqueFd(a), FdKind::kEventFd))).is_ok());
  n.signal();
  ASSERT_TRUE(n.set(std::move(*FrontendFd::adopt(UniqueFd(b), FdKind::kEventFd))).is_ok());
  n.signal();
  n.signal();
  uint64_t v = 0;
  ASSERT_EQ(read(a2, &v, 8), 8);
  EXPECT_EQ(v, 1u);
  ASSERT_EQ(read(b2, &v, 8), 8);
  EXPECT_EQ(v, 2u);
  ASSERT_TRUE(n.set(FrontendFd()).is_ok());
  EXPECT_FALSE(n.armed());
  n.signal();
  fcntl(b2, F_SETFL, O_NONBLOCK);
  EXPECT_EQ(read(b2, &v, 8), -1);  // nothing more
  // A memory fd is not an eventfd.
  auto m = FrontendFd::adopt(UniqueFd(memfd_create("m", MFD_CLOEXEC)), FdKind::kMemory);
  ASSERT_TRUE(m.is_ok());
  EXPECT_FALSE(n.set(std::move(*m)).is_ok());
  close(a2);
  close(b2);
}

TEST(FrontendFd, EdgeTriggeredKickWatchNeedsNoRead) {
  // The worker's use of a kick fd: EPOLLIN | EPOLLET, never read. Each write is one
  // event even though the counter never returns to 0, and a counter left non-zero is
  // not reported again (no spinning). The kernel behaviour the design relies on.
  int raw = eventfd(0, EFD_CLOEXEC);
  auto kick = FrontendFd::adopt(UniqueFd(raw), FdKind::kEventFd);
  ASSERT_TRUE(kick.is_ok());
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, kick->watch_fd(), &ev), 0);
  epoll_event out[4];
  EXPECT_EQ(epoll_wait(ep, out, 4, 0), 0);
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(eventfd_write(raw, 1), 0);
    EXPECT_EQ(epoll_wait(ep, out, 4, 0), 1) << round;
    EXPECT_EQ(epoll_wait(ep, out, 4, 0), 0) << round;  // reported once
  }
  // The front end drains its copy: nothing for us to do, nothing reported.
  uint64_t v;
  ASSERT_EQ(read(raw, &v, 8), 8);
  EXPECT_EQ(epoll_wait(ep, out, 4, 0), 0);
  close(ep);
}

}  // namespace
}  // namespace vnet
