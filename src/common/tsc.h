// The time-stamp counter as a cheap clock for the data path (token buckets): one RDTSC
// per burst instead of a clock_gettime, and its rate, measured once against
// CLOCK_MONOTONIC. Needs an invariant TSC (constant_tsc, nonstop_tsc: every x86 server
// of the last decade and KVM guests on them); across cores it may differ by a little,
// which its users treat as no time passing.
#pragma once

#include <cstdint>

namespace vnet {

inline uint64_t read_tsc() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_ia32_rdtsc();
#else
  uint64_t v;
  asm volatile("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#endif
}

// Ticks of read_tsc() per second. The first call measures it (about 20 ms, on the calling
// thread); later calls return the same value. Thread-safe.
uint64_t tsc_hz();

}  // namespace vnet
