// FaultGuard: the SIGBUS handler and the table of guest-memory mappings it knows.
#include "memory/fault_guard.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>

namespace vnet::memory {

namespace {

FaultGuard::Slot g_slots[FaultGuard::kSlots];
std::atomic<uint64_t> g_faults{0};
int g_notify_fd = -1;
struct sigaction g_previous;
std::once_flag g_once;

// Async-signal-safe: atomics, a raw mmap system call and write().
void on_sigbus(int sig, siginfo_t* info, void* uctx) {
  const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (auto& s : g_slots) {
    uintptr_t base = s.base.load(std::memory_order_acquire);
    if (base == 0 || addr < base) continue;
    size_t len = s.len.load(std::memory_order_relaxed);
    if (addr - base >= len) continue;
    // Zero pages over the whole mapping: every later access to it succeeds, so one
    // truncation costs one signal. (A raw system call: no interceptor, no lock.)
    // (Every argument as a long: syscall() is variadic.)
    long r = syscall(SYS_mmap, long(base), long(len), long(PROT_READ | PROT_WRITE),
                     long(MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE), -1L, 0L);
    if (r == -1) break;  // cannot repair: let the previous handler decide
    s.lost.store(true, std::memory_order_release);
    g_faults.fetch_add(1, std::memory_order_relaxed);
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = write(g_notify_fd, &one, sizeof(one));
    return;
  }
  // Not guest memory: what would have happened without us.
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) return g_previous.sa_sigaction(sig, info, uctx);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    return g_previous.sa_handler(sig);
  }
  // Default action: restore it and return; the faulting access runs again and kills us.
  signal(SIGBUS, SIG_DFL);
}

}  // namespace

void FaultGuard::install() {
  std::call_once(g_once, [] {
    g_notify_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

FaultGuard::Slot* FaultGuard::protect(void* base, size_t len) {
  install();
  static std::mutex m;  // writers (control threads) take turns; the handler reads without it
  std::lock_guard<std::mutex> lock(m);
  for (auto& s : g_slots) {
    if (s.base.load(std::memory_order_relaxed) != 0) continue;
    s.lost.store(false, std::memory_order_relaxed);
    s.len.store(len, std::memory_order_relaxed);
    s.base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);
    return &s;
  }
  return nullptr;
}

void FaultGuard::unprotect(Slot* slot) {
  if (slot) slot->base.store(0, std::memory_order_release);
}

int FaultGuard::notify_fd() {
  install();
  return g_notify_fd;
}

uint64_t FaultGuard::faults() {
  return g_faults.load(std::memory_order_relaxed);
}

}  // namespace vnet::memory
