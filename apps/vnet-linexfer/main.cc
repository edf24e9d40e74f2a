// vnet-linexfer: how fast can one core take cache lines that another core just wrote?
//
// A virtio switch moves no data that is not in some other core's cache: every packet
// buffer, descriptor and ring entry it touches was last written by the front end's
// core, and every one it writes the front end reads next. Its cycles per packet are
// therefore bounded below by the cost of those cache-line transfers. This tool measures
// that cost on the machine at hand, with two threads pinned to the two given CPUs:
//
//   latency  one line bounced between the two cores (half a round trip);
//   read     the producer writes 4096 lines, then the consumer (the switch's CPU)
//            reads them in a random order with software prefetch 16 lines ahead, as
//            a switch reads TX buffers and descriptors whose addresses it knows early;
//   write    the same, but the consumer stores into every line (PREFETCHW ahead), as
//            a switch fills RX buffers and used ring entries.
//
// and two costs that bound a userspace switch's round-trip time through TAP:
//
//   wake     a thread blocked in read() on an eventfd on the other CPU is woken by the
//            switch's CPU (write() to the eventfd) until it stores into a line the
//            switch's CPU spins on: what delivering a reply to a sleeping ping costs.
//            Measured 0, 200 and 2000 us after the thread's previous answer: on a
//            virtual machine the cost grows with how long the vCPU was idle;
//   syscall  one system call that does nothing (getppid) on the switch's CPU.
//
// Output: one JSON object (ns per line and lines per second for each), for bench/run.
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/cpu.h"

namespace {

constexpr uint32_t kLines = 4096;  // ring size (256 KiB: fits in L2, no DRAM traffic)
constexpr uint32_t kAhead = 16;    // prefetch distance, in lines

struct alignas(64) Line {
  uint64_t w[8];
};
struct alignas(64) Index {
  std::atomic<uint32_t> v{0};
};

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0) {
    std::fprintf(stderr, "vnet-linexfer: cannot pin to cpu %d\n", cpu);
    std::exit(2);
  }
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One line bounced: returns ns per one-way transfer.
double latency(int cpu_a, int cpu_b, double secs) {
  struct alignas(64) Shared {
    std::atomic<uint64_t> v{0};
    std::atomic<bool> stop{false};
  };
  auto s = std::make_unique<Shared>();
  std::thread b([&] {
    pin(cpu_b);
    uint64_t seen = 0;
    while (!s->stop.load(std::memory_order_relaxed)) {
      uint64_t v = s->v.load(std::memory_order_acquire);
      if (v != seen && (v & 1)) {
        s->v.store(v + 1, std::memory_order_release);
        seen = v + 1;
      } else {
        vnet::cpu_relax();
      }
    }
  });
  pin(cpu_a);
  uint64_t trips = 0;
  const auto t0 = Clock::now();
  double t = 0;
  for (;;) {
    const uint64_t odd = trips * 2 + 1;
    s->v.store(odd, std::memory_order_release);
    while (s->v.load(std::memory_order_acquire) != odd + 1) {
    }
    ++trips;
    if ((trips & 4095) == 0 && (t = seconds_since(t0)) >= secs) break;
  }
  s->stop.store(true);
  b.join();
  return t * 1e9 / double(trips) / 2.0;
}

// Lines from producer (cpu_p) to consumer (cpu_c), in rounds: the producer writes the
// whole ring (every word of every line, as a driver fills buffers), then the consumer
// goes through it in a fixed random order with software prefetch kAhead lines ahead, reading each
// line or (write) storing into each. Only the consumer's passes are timed, so the rate is the
// consumer's alone. Returns ns per line.
double stream(int cpu_p, int cpu_c, double secs, bool write) {
  auto ring = std::make_unique<Line[]>(kLines);
  // The consumer's order: a fixed random permutation, as packet buffers come from a
  // pool (sequential lines would let the hardware prefetcher hide the transfers).
  std::vector<uint32_t> order(kLines);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), std::mt19937(12345));
  auto filled = std::make_unique<Index>();
  auto taken = std::make_unique<Index>();
  std::atomic<bool> stop{false};
  std::thread p([&] {
    pin(cpu_p);
    for (uint32_t round = 1; !stop.load(std::memory_order_relaxed); ++round) {
      for (uint32_t i = 0; i < kLines; ++i)
        for (auto& w : ring[i].w) w = uint64_t(round) << 32 | i;
      filled->v.store(round, std::memory_order_release);
      while (taken->v.load(std::memory_order_acquire) != round)
        if (stop.load(std::memory_order_relaxed)) return;
    }
  });
  pin(cpu_c);
  uint64_t sum = 0, bad = 0, lines = 0;
  Clock::duration busy{};
  for (uint32_t round = 1;; ++round) {
    while (filled->v.load(std::memory_order_acquire) != round) vnet::cpu_relax();
    const auto t0 = Clock::now();
    for (uint32_t i = 0; i < kLines; ++i) {
      if (i + kAhead < kLines) {
        if (write)
          vnet::prefetch_for_write(&ring[order[i + kAhead]]);
        else
          __builtin_prefetch(&ring[order[i + kAhead]], 0, 3);
      }
      const uint32_t k = order[i];
      Line& l = ring[k];
      if (write) {
        for (auto& w : l.w) w = ~uint64_t(k);
      } else {
        bad += l.w[0] != (uint64_t(round) << 32 | k);
        sum += l.w[0] + l.w[7];
      }
    }
    busy += Clock::now() - t0;
    lines += kLines;
    taken->v.store(round, std::memory_order_release);
    if (std::chrono::duration<double>(busy).count() >= secs / 4 || round > 200000) break;
  }
  stop.store(true);
  p.join();
  if (bad) {
    std::fprintf(stderr, "vnet-linexfer: %llu lines read before they were written\n",
                 (unsigned long long)bad);
    std::exit(1);
  }
  asm volatile("" : : "r"(sum));
  return std::chrono::duration<double, std::nano>(busy).count() / double(lines);
}

// A sleeper on cpu_b woken from cpu_a, `gap` seconds after its previous answer (its CPU
// has nothing else to run meanwhile): returns ns from the eventfd write to the sleeper's
// answer, median of the rounds.
double wake(int cpu_a, int cpu_b, double secs, double gap) {
  const int efd = eventfd(0, EFD_CLOEXEC);
  if (efd < 0) {
    std::perror("vnet-linexfer: eventfd");
    std::exit(2);
  }
  struct alignas(64) Shared {
    std::atomic<uint64_t> answered{0};
    std::atomic<bool> stop{false};
  };
  auto s = std::make_unique<Shared>();
  std::thread b([&] {
    pin(cpu_b);
    for (;;) {
      uint64_t v;
      if (read(efd, &v, sizeof(v)) != sizeof(v)) continue;
      if (s->stop.load(std::memory_order_relaxed)) return;
      s->answered.fetch_add(1, std::memory_order_release);
    }
  });
  pin(cpu_a);
  std::vector<double> ns;
  const auto t0 = Clock::now();
  for (uint64_t i = 1; seconds_since(t0) < secs && i < 200000; ++i) {
    // Let the sleeper go back to sleep (and its CPU idle) first, as between two pings.
    const auto idle = Clock::now();
    while (seconds_since(idle) < gap) vnet::cpu_relax();
    const uint64_t one = 1;
    const auto t = Clock::now();
    [[maybe_unused]] ssize_t w = write(efd, &one, sizeof(one));
    while (s->answered.load(std::memory_order_acquire) != i) vnet::cpu_relax();
    ns.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t).count());
  }
  s->stop.store(true);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t w = write(efd, &one, sizeof(one));
  b.join();
  close(efd);
  std::sort(ns.begin(), ns.end());
  return ns.empty() ? 0 : ns[ns.size() / 2];
}

// One system call that does nothing, on `cpu`: ns each.
double null_syscall(int cpu, double secs) {
  pin(cpu);
  uint64_t n = 0;
  const auto t0 = Clock::now();
  double t = 0;
  for (;;) {
    syscall(SYS_getppid);
    if ((++n & 1023) == 0 && (t = seconds_since(t0)) >= secs) break;
  }
  return t * 1e9 / double(n);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Cache-line transfer cost between two CPUs (the switch's and the front end's), as JSON."};
  std::vector<int> cpus{0, 1};
  double secs = 1.0;
  app.add_option("--cpus", cpus, "switch CPU, front-end CPU")->expected(2)->delimiter(',');
  app.add_option("--seconds", secs, "measuring time of each test")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  const int cpu_a = cpus[0], cpu_b = cpus[1];
  const double lat = latency(cpu_a, cpu_b, secs);
  // The switch (cpu_a) is the consumer: it takes what the front end (cpu_b) wrote.
  const double rd = stream(cpu_b, cpu_a, secs, false);
  const double wr = stream(cpu_b, cpu_a, secs, true);
  const double wk0 = wake(cpu_a, cpu_b, secs / 3, 0);
  const double wk200 = wake(cpu_a, cpu_b, secs / 3, 200e-6);
  const double wk2000 = wake(cpu_a, cpu_b, secs / 3, 2000e-6);
  const double sc = null_syscall(cpu_a, secs / 4);
  std::printf(
      "{\"cpus\": [%d, %d], \"latency_ns\": %.1f, \"read_ns_per_line\": %.2f, "
      "\"write_ns_per_line\": %.2f, \"wake_ns\": {\"idle_0us\": %.0f, \"idle_200us\": %.0f, "
      "\"idle_2000us\": %.0f}, \"syscall_ns\": %.1f}\n",
      cpu_a, cpu_b, lat, rd, wr, wk0, wk200, wk2000, sc);
  return 0;
}
