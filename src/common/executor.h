// Executor: how control-thread code reaches the data-plane thread that owns an object.
// A port holds one (its worker) and applies configuration changes through it, so the
// ports layer does not depend on the dataplane layer that drives it.
#pragma once

#include <functional>

namespace vnet {

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs fn on the owning thread between bursts and waits for it (inline when that
  // thread is not running or is the caller).
  virtual void run_sync(const std::function<void()>& fn) = 0;
  // Call inside run_sync after the fds a port waits on changed.
  virtual void wait_fds_changed() = 0;
};

}  // namespace vnet
