// notify_service(): sd_notify(3) from libsystemd (service_notify.h).
#include "control/service_notify.h"

#include <systemd/sd-daemon.h>

#include <cstring>
#include <ctime>

#include "common/log.h"

namespace vnet::control {

void notify_service(const std::string& state) {
  // unset_environment = 0: a reload or the exit notifies again over the same socket.
  const int r = sd_notify(0, state.c_str());
  if (r < 0) spdlog::debug("vnetd: sd_notify: {}", strerror(-r));
}

std::string reloading_state() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t usec = uint64_t(ts.tv_sec) * 1'000'000 + uint64_t(ts.tv_nsec) / 1000;
  return "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec);
}

}  // namespace vnet::control
