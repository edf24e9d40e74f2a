// tsc_hz(): the TSC's rate, from a short measurement against CLOCK_MONOTONIC.
#include "common/tsc.h"

#include <time.h>

#include <algorithm>

namespace vnet {

namespace {

__extension__ typedef unsigned __int128 u128;

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ULL + uint64_t(ts.tv_nsec);
}

// One (monotonic ns, tsc) pair read close together: the TSC is read between two clock
// reads and paired with their midpoint; of a few tries the tightest one is kept, so a
// preemption between the reads does not skew the pair.
void sample(uint64_t* ns, uint64_t* tsc) {
  uint64_t best = UINT64_MAX;
  for (int i = 0; i < 5; ++i) {
    const uint64_t a = monotonic_ns();
    const uint64_t t = read_tsc();
    const uint64_t b = monotonic_ns();
    if (b - a < best) {
      best = b - a;
      *ns = a + (b - a) / 2;
      *tsc = t;
    }
  }
}

uint64_t measure() {
  uint64_t ns0 = 0, t0 = 0, ns1 = 0, t1 = 0;
  sample(&ns0, &t0);
  timespec nap{0, 20'000'000};
  while (nanosleep(&nap, &nap) != 0) {
  }
  sample(&ns1, &t1);
  const uint64_t dns = std::max<uint64_t>(ns1 - ns0, 1);
  const u128 hz = u128(t1 - t0) * 1'000'000'000ULL / dns;
  return std::max<uint64_t>(uint64_t(hz), 1);
}

}  // namespace

uint64_t tsc_hz() {
  static const uint64_t hz = measure();
  return hz;
}

}  // namespace vnet
