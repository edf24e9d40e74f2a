// DirtyLog: the front end's dirty page bitmap for live migration (vhost-user
// VHOST_USER_PROTOCOL_F_LOG_SHMFD, SET_LOG_BASE; VHOST_F_LOG_ALL). One bit per 4 KiB
// page of guest physical memory (VHOST_LOG_PAGE), bit n of byte n / 8 for page n. While
// logging is on, every guest page the back end writes is marked here after the write:
// the front end reads and clears the bitmap with atomic exchanges while the guest runs
// and copies the marked pages again. Marks are atomic ORs with release order, so the
// data a mark covers is visible before the mark. The bitmap is the front end's shared
// memory and hostile like the rest: it is mapped through the FaultGuard (a truncated
// file costs the marks, not vnetd), and marks past its end are dropped and counted.
#pragma once

#include <cstdint>
#include <memory>

#include "common/counter.h"
#include "common/result.h"
#include "memory/guest_memory.h"

namespace vnet::memory {

class DirtyLog {
 public:
  static constexpr uint64_t kPageShift = 12;  // VHOST_LOG_PAGE = 0x1000
  // Largest log accepted: one bit per page of 32 TiB of guest memory.
  static constexpr uint64_t kMaxSize = 1ULL << 30;

  // Maps [offset, offset + size) of `fd` (borrowed, the caller closes it).
  static Result<std::shared_ptr<DirtyLog>> map(int fd, uint64_t size, uint64_t offset);
  // A bitmap the caller owns and keeps alive (tests).
  static std::shared_ptr<DirtyLog> borrow(uint8_t* bits, uint64_t size);

  // Marks every page [gpa, gpa + len) touches. len 0 marks nothing.
  void mark(uint64_t gpa, uint64_t len) {
    if (len == 0) return;
    uint64_t page = gpa >> kPageShift;
    const uint64_t last = (gpa + len - 1) >> kPageShift;
    if (last < page) return;  // wrapped: no such range
    for (; page <= last; ++page) {
      const uint64_t byte = page >> 3;
      if (byte >= size_) [[unlikely]] {
        beyond_.add(last - page + 1);
        return;
      }
      __atomic_fetch_or(&bits_[byte], uint8_t(1u << (page & 7)), __ATOMIC_RELEASE);
    }
  }
  uint64_t size() const { return size_; }
  // Pages that fell past the end of the bitmap (a front end that sized it too small).
  uint64_t beyond() const { return beyond_.get(); }
  bool lost() const { return region_ && region_->lost(); }

 private:
  DirtyLog(std::shared_ptr<MappedRegion> r, uint8_t* bits, uint64_t size)
      : region_(std::move(r)), bits_(bits), size_(size) {}
  std::shared_ptr<MappedRegion> region_;  // nullptr when borrowed
  uint8_t* bits_;
  uint64_t size_;
  Counter beyond_;
};

}  // namespace vnet::memory
