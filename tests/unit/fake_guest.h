// FakeGuest: fake guest memory for unit tests. One or more regions of page-aligned,
// zeroed host memory, each seen by the device at a chosen guest physical address and
// front-end virtual address (MappedRegion::borrow), plus helpers to carve buffers out
// of them and to lay a DriverQueue's rings into them. Each region is its own heap
// allocation, so a device that reads or writes past a region is caught by
// AddressSanitizer, and two regions adjacent in guest space are never adjacent on the host.
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "memory/guest_memory.h"
#include "virtio/driver_queue.h"
#include "virtio/packed_device_queue.h"
#include "virtio/packed_driver_queue.h"

namespace vnet::testing {

class FakeGuest {
 public:
  struct Region {
    uint64_t gpa = 0;
    uint64_t uva = 0;
    uint64_t size = 0;
    uint8_t* host = nullptr;
    uint64_t next_free = 0;  // bump allocator, offset into the region
  };

  FakeGuest() = default;
  FakeGuest(const FakeGuest&) = delete;
  FakeGuest& operator=(const FakeGuest&) = delete;
  ~FakeGuest() {
    for (auto& r : regions_) std::free(r.host);
  }

  // Adds a region of `size` bytes at guest physical `gpa` and front-end virtual `uva`.
  // Returns its index. Must be called before memory().
  size_t add_region(uint64_t gpa, uint64_t size, uint64_t uva) {
    Region r;
    r.gpa = gpa;
    r.uva = uva;
    r.size = size;
    size_t alloc = (size + 4095) / 4096 * 4096;
    r.host = static_cast<uint8_t*>(std::aligned_alloc(4096, alloc));
    std::memset(r.host, 0, alloc);
    regions_.push_back(r);
    return regions_.size() - 1;
  }

  // The GuestMemory table over every region (built on first use).
  std::shared_ptr<const memory::GuestMemory> memory() {
    if (!mem_) {
      memory::GuestMemory::RegionList list;
      for (auto& r : regions_)
        list.push_back(
            memory::MappedRegion::borrow(memory::RegionDesc{r.gpa, r.size, r.uva, 0}, r.host));
      auto res = memory::GuestMemory::create(std::move(list));
      EXPECT_TRUE(res.is_ok()) << res.message();
      if (res.is_ok()) mem_ = res.value();
    }
    return mem_;
  }

  const Region& region(size_t i) const { return regions_.at(i); }

  // Host pointer of guest physical [gpa, gpa+len), from the test's own table. Fails the
  // test and returns nullptr when the range is not inside one region.
  uint8_t* host(uint64_t gpa, uint64_t len = 1) {
    for (auto& r : regions_)
      if (gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa))
        return r.host + (gpa - r.gpa);
    ADD_FAILURE() << "test bug: gpa " << gpa << " len " << len << " not in fake memory";
    return nullptr;
  }
  template <typename T>
  T* at(uint64_t gpa) {
    return reinterpret_cast<T*>(host(gpa, sizeof(T)));
  }
  // Front-end virtual address of a guest physical address.
  uint64_t uva(uint64_t gpa) {
    for (auto& r : regions_)
      if (gpa >= r.gpa && gpa - r.gpa < r.size) return r.uva + (gpa - r.gpa);
    ADD_FAILURE() << "test bug: gpa " << gpa << " not in fake memory";
    return 0;
  }

  // Allocates `len` bytes (aligned) in region `ri`; returns the guest physical address.
  uint64_t alloc(uint64_t len, uint64_t align = 16, size_t ri = 0) {
    Region& r = regions_.at(ri);
    uint64_t off = (r.next_free + align - 1) / align * align;
    if (off + len > r.size) {
      ADD_FAILURE() << "test bug: fake region " << ri << " full";
      return r.gpa;
    }
    r.next_free = off + len;
    return r.gpa + off;
  }

  // Allocates a buffer, fills it with `fill` and returns it as a virtio::Buf.
  virtio::Buf buf(uint32_t len, uint8_t fill = 0, size_t ri = 0) {
    uint64_t gpa = alloc(len == 0 ? 1 : len, 16, ri);
    std::memset(host(gpa, len == 0 ? 1 : len), fill, len);
    return virtio::Buf{gpa, len};
  }

  // Lays out the rings of `q` (a DriverQueue or a PackedDriverQueue) in region `ri`
  // (page-aligned) and returns the config a front end would send for them.
  template <class Driver>
  virtio::QueueConfig place_queue(Driver& q, uint16_t size, bool event_idx, bool indirect = true,
                                  size_t ri = 0) {
    size_t bytes = Driver::ring_bytes(size);
    uint64_t gpa = alloc(bytes, 4096, ri);
    q.init(size, host(gpa, bytes), gpa, uva(gpa), event_idx);
    virtio::QueueConfig cfg = q.config();
    cfg.indirect = indirect;
    cfg.event_idx = event_idx;
    return cfg;
  }

 private:
  std::vector<Region> regions_;
  std::shared_ptr<const memory::GuestMemory> mem_;
};

// A driver and a device on the same queue in a FakeGuest: the split ring by default,
// BasicQueuePair<PackedDriverQueue, PackedDeviceQueue> for the packed one.
template <class Driver, class Device>
struct BasicQueuePair {
  Driver drv;
  Device dev;
  virtio::QueueConfig cfg;

  // Lays the rings out in region `ri` of `g` and starts the device side on them.
  ::testing::AssertionResult start(FakeGuest& g, uint16_t size, bool event_idx,
                                   bool indirect = true, size_t ri = 0) {
    cfg = g.place_queue(drv, size, event_idx, indirect, ri);
    Status st = dev.start(g.memory(), cfg);
    if (!st.is_ok()) return ::testing::AssertionFailure() << "start: " << st.message();
    return ::testing::AssertionSuccess();
  }
};
using QueuePair = BasicQueuePair<virtio::DriverQueue, virtio::DeviceQueue>;
using PackedQueuePair = BasicQueuePair<virtio::PackedDriverQueue, virtio::PackedDeviceQueue>;

// Makes the whole pages inside [p, p + len) read-only: for tests, run in a death-test
// child, that the device leaves some guest memory unwritten (a write there kills the
// child with SIGSEGV, or with AddressSanitizer's report of it).
inline void make_pages_read_only(void* p, size_t len) {
  const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + 4095) & ~uintptr_t(4095);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + len) & ~uintptr_t(4095);
  if (e > a && mprotect(reinterpret_cast<void*>(a), e - a, PROT_READ) != 0) std::abort();
}

// A death-test predicate: the child did not exit normally with status 0.
inline bool died(int status) {
  return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// used_event (end of the avail ring) and avail_event (end of the used ring) of a
// split queue of `size` entries (virtio 1.2 section 2.7.6 and 2.7.8).
inline uint16_t* used_event_of(vring_avail* avail, uint16_t size) {
  return reinterpret_cast<uint16_t*>(&avail->ring[size]);
}
inline uint16_t* avail_event_of(vring_used* used, uint16_t size) {
  return reinterpret_cast<uint16_t*>(&used->ring[size]);
}

}  // namespace vnet::testing
