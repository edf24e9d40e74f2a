// SpinLock: a test-and-test-and-set lock for very short critical sections on the data
// path (a port's send path when several workers send to it: one lock per burst).
#pragma once

#include <atomic>

#include "common/cpu.h"

namespace vnet {

class SpinLock {
 public:
  void lock() {
    while (locked_.exchange(true, std::memory_order_acquire)) {
      while (locked_.load(std::memory_order_relaxed)) cpu_relax();
    }
  }
  bool try_lock() { return !locked_.exchange(true, std::memory_order_acquire); }
  void unlock() { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

}  // namespace vnet
