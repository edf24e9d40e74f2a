// CPU hints shared by the spin loops and the virtqueue look-ahead.
#pragma once

namespace vnet {

// In a spin-wait loop: lets the sibling hyperthread run and avoids the memory-order
// flush when the loop exits (PAUSE).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Brings a line in exclusive state: another core read or wrote it last, and a plain
// prefetch would leave it shared, so the write would still wait for the invalidation.
// PREFETCHW (AMD 3DNowPrefetch, Intel since Broadwell; a no-op on older cores) needs
// no compiler flag this way.
inline void prefetch_for_write(const void* p) {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1, 3);
#endif
}

}  // namespace vnet
