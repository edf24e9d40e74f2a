// vnet-tapfloor: the least work a userspace switch can do between two TAP devices.
//
// A benchmark instrument, not a switch: it creates two TAP devices (no vnet header, no
// offloads), and one thread pinned to the given CPU busy-polls both with non-blocking
// read() and writes each frame it gets to the other device with one write(). No
// learning, no batching, no copy but the kernel's, never asleep. Whatever round-trip
// time ping sees through it is what the kernel's TAP path and the wake-up of ping cost
// any process that sits between two TAPs; bench/run reports it beside vnetd and the
// Linux bridge so that vnetd's RTT can be judged against that floor.
//
//   vnet-tapfloor --tap NAME_A --tap NAME_B [--cpu N]
//
// It prints "ready" once both devices exist (move them into namespaces then, the fds
// stay attached), runs until SIGTERM or SIGINT, and then prints one JSON object: frames
// and bytes forwarded each way, write errors, and polls that found nothing.
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) {
  g_stop.store(true, std::memory_order_relaxed);
}

int open_tap(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    std::fprintf(stderr, "vnet-tapfloor: interface name '%s' must be 1-%d bytes\n", name.c_str(),
                 IFNAMSIZ - 1);
    return -1;
  }
  int fd = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "vnet-tapfloor: /dev/net/tun: %s\n", std::strerror(errno));
    return -1;
  }
  struct ifreq ifr {};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
    std::fprintf(stderr, "vnet-tapfloor: TUNSETIFF %s: %s\n", name.c_str(), std::strerror(errno));
    ::close(fd);
    return -1;
  }
  return fd;
}

struct Direction {
  uint64_t frames = 0;
  uint64_t bytes = 0;
  uint64_t write_errors = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vnet-tapfloor: busy-polled read()/write() forwarding between two TAPs"};
  std::vector<std::string> taps;
  int cpu = -1;
  app.add_option("--tap", taps, "TAP device to create (give two)")->required()->expected(2);
  app.add_option("--cpu", cpu, "CPU to pin the forwarding thread to");
  CLI11_PARSE(app, argc, argv);

  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
      std::fprintf(stderr, "vnet-tapfloor: CPU %d: %s\n", cpu, std::strerror(errno));
      return 1;
    }
  }
  int fd[2] = {open_tap(taps[0]), open_tap(taps[1])};
  if (fd[0] < 0 || fd[1] < 0) {
    for (int f : fd)
      if (f >= 0) ::close(f);
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::printf("ready\n");
  std::fflush(stdout);

  static unsigned char buf[65536];
  Direction dir[2];
  uint64_t empty_polls = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    bool any = false;
    for (int i = 0; i < 2; i++) {
      ssize_t n = ::read(fd[i], buf, sizeof(buf));
      if (n <= 0) continue;
      any = true;
      if (::write(fd[1 - i], buf, static_cast<size_t>(n)) == n) {
        dir[i].frames++;
        dir[i].bytes += static_cast<uint64_t>(n);
      } else {
        dir[i].write_errors++;
      }
    }
    if (!any) empty_polls++;
  }
  std::printf(
      "{\"a_to_b\": {\"frames\": %llu, \"bytes\": %llu, \"write_errors\": %llu}, "
      "\"b_to_a\": {\"frames\": %llu, \"bytes\": %llu, \"write_errors\": %llu}, "
      "\"empty_polls\": %llu}\n",
      static_cast<unsigned long long>(dir[0].frames), static_cast<unsigned long long>(dir[0].bytes),
      static_cast<unsigned long long>(dir[0].write_errors),
      static_cast<unsigned long long>(dir[1].frames), static_cast<unsigned long long>(dir[1].bytes),
      static_cast<unsigned long long>(dir[1].write_errors),
      static_cast<unsigned long long>(empty_polls));
  ::close(fd[0]);
  ::close(fd[1]);
  return 0;
}
