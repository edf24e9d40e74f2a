// FaultGuard: a front end cannot kill vnetd by shrinking its guest memory. A region is
// a MAP_SHARED mapping of the front end's file; if the front end truncates the file (or
// punches a hole in a hugetlbfs file with no huge page left to fill it), vnetd's next
// access to a lost page raises SIGBUS, which would end the process. Every mapping of
// guest memory is registered here; a SIGBUS whose address lies in one is absorbed: the
// handler maps anonymous zero pages over the whole mapping (the access is restarted and
// reads zeros or writes into memory nobody sees), marks the region lost, and wakes the
// control thread through notify_fd(), which closes the session that owns the region.
// A SIGBUS anywhere else goes to the previous handler (or kills the process as before).
// No cost on the data path: nothing is checked per access.
//
// Sealing: a memfd sealed with F_SEAL_SHRINK (QEMU's memory-backend-memfd by default)
// cannot shrink at all; the guard is what covers the rest (DPDK's memfds and hugetlbfs
// files, shared files, a punched hugetlbfs hole).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace vnet::memory {

class FaultGuard {
 public:
  // One registered mapping. `lost` is set by the handler (any thread).
  struct Slot {
    std::atomic<uintptr_t> base{0};  // 0: free
    std::atomic<size_t> len{0};
    std::atomic<bool> lost{false};
  };

  // Installs the SIGBUS handler once per process (later calls do nothing) and creates
  // the notification eventfd. Called by protect(); callable earlier.
  static void install();
  // Registers [base, base+len); nullptr when the table is full (the caller refuses the
  // mapping). The mapping must stay until unprotect().
  static Slot* protect(void* base, size_t len);
  // Unregisters (before the mapping is unmapped).
  static void unprotect(Slot* slot);
  // Readable (an eventfd, read it to reset) after the handler absorbed a fault.
  static int notify_fd();
  // Faults absorbed since start.
  static uint64_t faults();
  static constexpr size_t kSlots = 8192;
};

}  // namespace vnet::memory
