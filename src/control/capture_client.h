// vnetctl capture: sends the "capture" request and then reads the pcapng stream that
// follows the reply on the same connection (control/capture_sessions.h). With a file
// (-w FILE, or -w - for standard output) the bytes are written as they come, so
// `vnetctl capture vm1 -w - | tcpdump -nr -` prints frames as they arrive. Without -w,
// the stream goes to standard output when that is not a terminal (a pipe or a file,
// as `tcpdump -w -` would need), else one line per frame is printed. Ctrl-C (SIGINT,
// SIGTERM) or a closed output (EPIPE) shuts the connection's sending side: vnetd
// ends the capture and sends the rest and its statistics; then vnetctl prints
// "N frames captured, M dropped by vnetd" on standard error.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "control/control_client.h"

namespace vnet::control {

struct CaptureOptions {
  std::string port;
  std::string direction = "both";
  std::string filter;
  uint64_t count = 0;
  std::string write;  // "" (decide), "-" (stdout) or a file name
};

// Runs a capture to its end; returns the process exit status (error messages on
// standard error).
int run_capture(ControlClient& client, const CaptureOptions& opt, int timeout_ms);

// One line for a frame: time, port, direction, addresses, protocol, length.
std::string frame_summary(const std::string& port, uint64_t ts_ns, uint32_t flags,
                          std::string_view data, uint32_t orig_len, std::string_view comment);

}  // namespace vnet::control
