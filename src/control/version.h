// Version and defaults shared by vnetd and vnetctl.
#pragma once

namespace vnet::control {

inline constexpr const char* kVersion = "0.1.0";
inline constexpr const char* kDefaultControlPath = "/run/vnet/vnetd.sock";

}  // namespace vnet::control
