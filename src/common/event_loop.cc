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

Status EventLoop::add(int fd, uint32_t events, FdCallback cb) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return Status::errorf("epoll_ctl add fd {}: {}", fd, strerror(errno));
  fds_[fd] = std::make_shared<FdCallback>(std::move(cb));
  return Status::ok();
}

Status EventLoop::modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
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
    auto it = fds_.find(evs[i].data.fd);
    if (it == fds_.end()) continue;  // removed by an earlier callback in this round
    auto cb = it->second;            // keeps the callback alive while it runs
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
