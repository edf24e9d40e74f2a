// Readiness and state for a service manager: systemd's Type=notify protocol
// (sd_notify(3): READY=1, RELOADING=1, STOPPING=1, STATUS=...), through libsystemd.
// Without NOTIFY_SOCKET in the environment (vnetd not started by systemd, or a unit of
// another type) every call does nothing.
#pragma once

#include <string>

namespace vnet::control {

// Sends newline-separated KEY=VALUE assignments; failures are logged at debug level.
void notify_service(const std::string& state);
// "RELOADING=1" with MONOTONIC_USEC=now, which systemd 253's Type=notify-reload expects.
std::string reloading_state();

}  // namespace vnet::control
