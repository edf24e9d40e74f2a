// GuestMemory: the only way vnet touches guest bytes. A table of regions mapped from
// the front end's fds (vhost-user SET_MEM_TABLE / ADD_MEM_REG), with translation of
// guest physical addresses (descriptors) and front-end virtual addresses (ring
// addresses) as ranges, checked region by region. Immutable once built: a new table
// replaces the old one as a whole, at a point where no worker uses it.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/result.h"
#include "memory/fault_guard.h"

namespace vnet::memory {

// The fields of a vhost-user memory region (VhostUserMemoryRegion).
struct RegionDesc {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t mmap_offset = 0;
};

// One region, mapped MAP_SHARED from a front-end fd (or, for tests, borrowed host
// memory). Unmapped when the last table that uses it goes away.
class MappedRegion {
 public:
  // Maps [mmap_offset, mmap_offset + memory_size) of `fd`. The fd is only borrowed:
  // the caller closes it (the mapping stays valid). Fails on a zero size, on
  // offset+size overflow or past the end of the file, or when mmap fails.
  static Result<std::shared_ptr<MappedRegion>> map(const RegionDesc& desc, int fd);
  // Wraps memory the caller owns and keeps alive (tests, the driver side).
  static std::shared_ptr<MappedRegion> borrow(const RegionDesc& desc, void* host);

  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;
  ~MappedRegion();

  const RegionDesc& desc() const { return desc_; }
  // Host address of desc().guest_phys_addr.
  uint8_t* host() const { return host_; }
  // The file lost pages under the mapping (truncated): the FaultGuard replaced them with
  // zero pages and the session that owns the region must end.
  bool lost() const { return guard_ && guard_->lost.load(std::memory_order_acquire); }

 private:
  MappedRegion(const RegionDesc& d, uint8_t* host, void* map_base, size_t map_len,
               FaultGuard::Slot* guard)
      : desc_(d), host_(host), map_base_(map_base), map_len_(map_len), guard_(guard) {}
  RegionDesc desc_;
  uint8_t* host_;
  void* map_base_;  // nullptr when borrowed
  size_t map_len_;
  FaultGuard::Slot* guard_;  // nullptr when borrowed
};

class GuestMemory {
 public:
  using RegionList = std::vector<std::shared_ptr<MappedRegion>>;

  // Checks every region (non-zero size, no address overflow) and that no two
  // overlap in guest physical or front-end virtual space.
  static Result<std::shared_ptr<const GuestMemory>> create(RegionList regions);

  // Host pointer for [gpa, gpa+len) when the whole range lies in one region, else
  // nullptr. len 0 is allowed and needs gpa inside a region. Inline: the data path
  // translates every descriptor.
  uint8_t* gpa_to_host(uint64_t gpa, uint64_t len) const {
    const Span* s = find_gpa(gpa);
    if (!s) return nullptr;
    uint64_t off = gpa - s->gpa;
    if (len > s->size - off) return nullptr;
    return s->host + off;
  }
  // The range as host pieces, one per region crossed. Returns the number of pieces
  // written to `out`, or 0 if any byte is unmapped or more than `max` are needed.
  size_t gpa_to_iov(uint64_t gpa, uint64_t len, iovec* out, size_t max) const;
  // Host pointer for a front-end virtual address range inside one region, else nullptr.
  uint8_t* uva_to_host(uint64_t uva, uint64_t len) const;
  // The guest physical address of host range [p, p + len) when it lies in one region
  // (dirty logging: the data path writes through host pointers it translated).
  bool host_to_gpa(const void* p, uint64_t len, uint64_t* gpa) const {
    const auto a = reinterpret_cast<uintptr_t>(p);
    for (const Span& s : spans_) {
      const uintptr_t off = a - reinterpret_cast<uintptr_t>(s.host);
      if (off < s.size) {
        if (len > s.size - off) return false;
        *gpa = s.gpa + off;
        return true;
      }
    }
    return false;
  }

  const RegionList& regions() const { return regions_; }
  size_t size() const { return regions_.size(); }
  // The first region whose file lost pages under vnetd (FaultGuard), or nullptr.
  const MappedRegion* lost_region() const;

 private:
  // The lookup table of the data path: plain values in one array (no pointer chase
  // per probe), sorted by guest physical address like regions_.
  struct Span {
    uint64_t gpa, size;
    uint8_t* host;
  };
  explicit GuestMemory(RegionList r);
  // The span holding gpa, or nullptr. Front ends send a handful of regions (QEMU a
  // few, DPDK one per memory segment list): a linear scan beats a binary search.
  const Span* find_gpa(uint64_t gpa) const {
    for (const Span& s : spans_)
      if (gpa - s.gpa < s.size) return &s;
    return nullptr;
  }
  RegionList regions_;  // sorted by guest_phys_addr
  std::vector<Span> spans_;
};

}  // namespace vnet::memory
