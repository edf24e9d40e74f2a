// Counter: a statistic with exactly one writer (the thread that owns the object it
// counts) and any number of readers. Relaxed load+store, no locked instruction.
#pragma once

#include <atomic>
#include <cstdint>

namespace vnet {

class Counter {
 public:
  void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }
  void reset() { v_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

}  // namespace vnet
