// EventLoop: the control thread's epoll loop. File descriptors with callbacks and
// one-shot timers; callbacks may add or remove fds (including their own) and timers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>

#include "common/result.h"
#include "common/unique_fd.h"

namespace vnet {

class EventLoop {
 public:
  using FdCallback = std::function<void(uint32_t events)>;
  using TimerId = uint64_t;

  EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Watches `fd` (not owned) for `events` (EPOLLIN, ...). One callback per fd.
  Status add(int fd, uint32_t events, FdCallback cb);
  Status modify(int fd, uint32_t events);
  // Safe from inside any callback; a removed fd's callback is not called again.
  void remove(int fd);

  // Calls `cb` once, `delay` from now, on the loop thread.
  TimerId add_timer(std::chrono::milliseconds delay, std::function<void()> cb);
  void cancel_timer(TimerId id);

  // Runs until stop(). run_once waits at most timeout_ms (-1: until an event or timer).
  void run();
  void run_once(int timeout_ms);
  void stop() { stopped_ = true; }
  bool stopped() const { return stopped_; }

 private:
  UniqueFd epfd_;
  struct Watch {
    std::shared_ptr<FdCallback> cb;
    uint32_t gen;
  };
  std::unordered_map<int, Watch> fds_;
  uint32_t generation_ = 0;
  struct Timer {
    TimerId id;
    std::function<void()> cb;
  };
  std::multimap<std::chrono::steady_clock::time_point, Timer> timers_;
  TimerId next_timer_ = 1;
  bool stopped_ = false;
};

}  // namespace vnet
