// vnetctl top: rates between two samples of vnetd's "counters" and "workers" replies
// (and, where vnetctl can read vnetd's /proc, the CPU time of vnetd and of each worker
// thread), and their rendering as one screen of tables or as one JSON line.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vnet::control {

// One look at vnetd.
struct TopSample {
  double seconds = 0;                            // CLOCK_MONOTONIC when the replies came
  nlohmann::json counters;                       // the "counters" reply
  nlohmann::json workers;                        // the "workers" reply
  bool have_cpu = false;                         // the /proc fields below were read
  uint64_t process_ticks = 0;                    // vnetd's utime + stime, clock ticks
  std::map<std::string, uint64_t> thread_ticks;  // thread name (comm) -> utime + stime
};

struct TopPortRates {
  std::string name;
  bool fresh = false;  // not in the previous sample (new port): no rates yet
  double rx_pps = 0, rx_bps = 0, tx_pps = 0, tx_bps = 0, drop_pps = 0;
  std::map<std::string, double> drops;  // reason -> per second, the non-zero ones
};

struct TopWorkerRates {
  int64_t index = 0;
  std::string cpu;                 // the CPU it is pinned to, "-" if none
  std::vector<std::string> ports;  // ports it polls
  double pps = 0;
  double busy_pct = 0;  // busy cycles over busy + idle cycles (sleep not counted)
  double cpu_pct = -1;  // CPU time of its thread over the interval; -1: unknown
  double cycles_per_packet = 0;
  double wakeups_ps = 0, sleeps_ps = 0;
};

struct TopRates {
  double interval = 0;  // seconds between the samples
  double vnetd_cpu_pct = -1;
  std::vector<TopPortRates> ports;  // busiest first (rx + tx packets/s), then by name
  std::vector<TopWorkerRates> workers;
};

// Rates from `prev` to `cur`. A counter that went down (the port was removed and added
// again) counts from zero. `ticks_per_second` is sysconf(_SC_CLK_TCK).
TopRates top_rates(const TopSample& prev, const TopSample& cur, long ticks_per_second);

// vnetd's and its threads' CPU time from /proc/PID/stat and /proc/PID/task/*/stat into
// `s`; false (and have_cpu false) where they cannot be read (another PID namespace).
bool read_cpu_ticks(pid_t pid, TopSample& s);

// 1234567 -> "1.23M", 950 -> "950", 0 -> "0" (SI prefixes, three significant digits).
std::string si_rate(double v);

// The screen: `title` on the first line, then PORT RX-PPS RX-BPS TX-PPS TX-BPS DROPS/S
// (with the reasons) and WORKER CPU BUSY% CPU% PPS CYC/PKT WAKEUPS/S SLEEPS/S PORTS.
std::string format_top(const TopRates& r, const std::string& title);

// The same as one JSON object (rates as numbers), for `vnetctl --json top`.
nlohmann::json top_json(const TopRates& r);

}  // namespace vnet::control

namespace vnet::control {

class ControlClient;

struct TopOptions {
  double interval = 1.0;    // seconds between screens
  uint64_t iterations = 0;  // screens to show; 0: until q or Ctrl-C
  bool batch = false;       // screens one after another, no clearing (also off a terminal)
  bool as_json = false;     // one JSON object per line instead of screens
  int timeout_ms = 5000;    // for each request
};

// The `vnetctl top` loop: samples vnetd through `client` every interval and prints.
// On a terminal (and not batch) it redraws the screen and quits on q; Ctrl-C quits in
// every mode. Returns the exit status (1 when vnetd stops answering).
int run_top(ControlClient& client, const TopOptions& opt);

}  // namespace vnet::control
