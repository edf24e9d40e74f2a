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
  explicit RateLimit(std::chrono::milliseconds interval = std::chrono::seconds(5),
                     uint32_t burst = 10)
      : interval_ns_(std::chrono::nanoseconds(interval).count()), burst_(burst) {}
  // Returns true if a line may be logged now; `suppressed` gets the lines dropped since.
  bool allow(uint64_t* suppressed);
  // Lines suppressed since start (reported or not).
  uint64_t suppressed_total() const { return total_.load(std::memory_order_relaxed); }

 private:
  int64_t interval_ns_;
  uint32_t burst_;
  std::atomic<int64_t> window_start_{0};
  std::atomic<uint32_t> in_window_{0};
  std::atomic<uint64_t> suppressed_{0};
  std::atomic<uint64_t> total_{0};
};

// The log budget of one port, one limiter per reason: a front end or guest that
// misbehaves in a loop (a QEMU refused and reconnecting a thousand times a second) fills
// neither the disk nor the journal, and one port's noise does not use up another's.
// Every line a front end or guest can trigger goes through one of these.
struct PortLogLimits {
  // Connections, negotiation, memory tables, rings started and stopped (info). A whole
  // QEMU or DPDK start-up fits in the burst.
  RateLimit session{std::chrono::seconds(10), 60};
  // Messages and fds refused, rings broken by the guest, frames dropped as bad (warn).
  RateLimit bad_input{std::chrono::seconds(5), 10};
  // Sessions vnetd ended, connections refused (warn).
  RateLimit ended{std::chrono::seconds(5), 10};
  uint64_t suppressed_total() const {
    return session.suppressed_total() + bad_input.suppressed_total() + ended.suppressed_total();
  }
};

void init_logging(const std::string& level);

}  // namespace vnet

// VNET_LOG_RL(limiter, level, fmt, ...) logs through `limiter` (a static RateLimit).
#define VNET_LOG_RL(limiter, level, ...)                                          \
  do {                                                                            \
    uint64_t vnet_suppressed_ = 0;                                                \
    if ((limiter).allow(&vnet_suppressed_)) {                                     \
      if (vnet_suppressed_)                                                       \
        spdlog::log(level, "({} similar messages suppressed)", vnet_suppressed_); \
      spdlog::log(level, __VA_ARGS__);                                            \
    }                                                                             \
  } while (0)
