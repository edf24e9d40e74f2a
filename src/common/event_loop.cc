// EventLoop: epoll + timers.
#include "common/event_loop.h"

#include <sys/epoll.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace vnet {

EventLoop::EventLoop() : epfd_(epoll_create1(EPOLL_CLOEXEC)) {
  if (!epfd_) throw std::runtime_error(std::string("epoll_create1: ") + strerror(errno));
}

// epoll data: the fd and the generation it was added with, so that an event already
// returned for a removed fd never reaches a new file that got the same number.
static uint64_t pack(int fd, uint32_t gen) { return uint64_t(gen) << 32 | uint32_t(fd); }

Status EventLoop::add(int fd, uint32_t events, FdCallback cb) {
  const uint32_t gen = ++generation_;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = pack(fd, gen);
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return Status::errorf("epoll_ctl add fd {}: {}", fd, strerror(errno));
  fds_[fd] = Watch{std::make_shared<FdCallback>(std::move(cb)), gen};
  return Status::ok();
}

Status EventLoop::modify(int fd, uint32_t events) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return Status::errorf("epoll_ctl mod fd {}: not watched", fd);
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = pack(fd, it->second.gen);
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    return Status::errorf("epoll_ctl mod fd {}: {}", fd, strerror(errno));
  return Status::ok();
}

void EventLoop::remove(int fd) {
  if (fds_.erase(fd)) epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

EventLoop::TimerId EventLoop::add_timer(std::chrono::milliseconds delay, std::function<void()> cb) {
  TimerId id = next_timer_++;
  timers_.emplace(std::chrono::steady_clock::now() + delay, Timer{id, std::move(cb)});
  return id;
}

void EventLoop::cancel_timer(TimerId id) {
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->second.id == id) {
      timers_.erase(it);
      return;
    }
  }
}

void EventLoop::run() {
  while (!stopped_) run_once(-1);
}

void EventLoop::run_once(int timeout_ms) {
  auto now = std::chrono::steady_clock::now();
  if (!timers_.empty()) {
    auto until = std::chrono::ceil<std::chrono::milliseconds>(timers_.begin()->first - now).count();
    if (until < 0) until = 0;
    if (timeout_ms < 0 || until < timeout_ms) timeout_ms = int(until);
  }
  epoll_event evs[32];
  int n = epoll_wait(epfd_.get(), evs, 32, timeout_ms);
  for (int i = 0; i < n; ++i) {
    const int fd = int(uint32_t(evs[i].data.u64));
    const uint32_t gen = uint32_t(evs[i].data.u64 >> 32);
    auto it = fds_.find(fd);
    // Removed by an earlier callback in this round (and maybe reused since).
    if (it == fds_.end() || it->second.gen != gen) continue;
    auto cb = it->second.cb;  // keeps the callback alive while it runs
    (*cb)(evs[i].events);
  }
  now = std::chrono::steady_clock::now();
  while (!timers_.empty() && timers_.begin()->first <= now) {
    auto cb = std::move(timers_.begin()->second.cb);
    timers_.erase(timers_.begin());
    cb();
  }
}

}  // namespace vnet
