// Logging: spdlog with one process-wide logger, plus a rate limiter for log lines
// that a guest or front end can trigger (bad input must not flood the log).
#pragma once

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace vnet {

// Allows `burst` lines per `interval`, counts what it suppressed and reports the
// number with the next allowed line. Safe to call from any thread.
class RateLimit {
 public:
  explicit RateLimit(std::chrono::milliseconds interval = std::chrono::seconds(5), uint32_t burst = 10)
      : interval_ns_(std::chrono::nanoseconds(interval).count()), burst_(burst) {}
  // Returns true if a line may be logged now; `suppressed` gets the lines dropped since.
  bool allow(uint64_t* suppressed);

 private:
  int64_t interval_ns_;
  uint32_t burst_;
  std::atomic<int64_t> window_start_{0};
  std::atomic<uint32_t> in_window_{0};
  std::atomic<uint64_t> suppressed_{0};
};

void init_logging(const std::string& level);

}  // namespace vnet

// VNET_LOG_RL(limiter, level, fmt, ...) logs through `limiter` (a static RateLimit).
#define VNET_LOG_RL(limiter, level, ...)                                         \
  do {                                                                           \
    uint64_t vnet_suppressed_ = 0;                                               \
    if ((limiter).allow(&vnet_suppressed_)) {                                    \
      if (vnet_suppressed_)                                                      \
        spdlog::log(level, "({} similar messages suppressed)", vnet_suppressed_); \
      spdlog::log(level, __VA_ARGS__);                                           \
    }                                                                            \
  } while (0)
