// GuestMemory: region mapping and range translation.
#include "memory/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vnet::memory {

namespace {
// Last byte of [start, start+len), or false on overflow / len 0.
bool last_byte(uint64_t start, uint64_t len, uint64_t* last) {
  if (len == 0) return false;
  return !__builtin_add_overflow(start, len - 1, last);
}
}  // namespace

Result<std::shared_ptr<MappedRegion>> MappedRegion::map(const RegionDesc& d, int fd) {
  uint64_t end, last;
  if (d.memory_size == 0) return Status::error("memory region of size 0");
  if (__builtin_add_overflow(d.mmap_offset, d.memory_size, &end))
    return Status::error("memory region mmap_offset + memory_size overflows");
  if (!last_byte(d.guest_phys_addr, d.memory_size, &last) ||
      !last_byte(d.userspace_addr, d.memory_size, &last))
    return Status::error("memory region address + size overflows");
  struct stat st;
  if (fstat(fd, &st) != 0) return Status::errorf("fstat on region fd: {}", strerror(errno));
  if (uint64_t(st.st_size) < end)
    return Status::errorf("memory region ends at {:#x}, past the end of its file ({:#x})", end,
                          uint64_t(st.st_size));
  // hugetlbfs needs the mapping length aligned to its page size (st_blksize).
  uint64_t align = st.st_blksize > 0 ? uint64_t(st.st_blksize) : 4096;
  uint64_t map_len = (end + align - 1) / align * align;
  if (map_len < end || map_len > SIZE_MAX) return Status::error("memory region too large");
  void* base = mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (base == MAP_FAILED) return Status::errorf("mmap of memory region: {}", strerror(errno));
  madvise(base, map_len, MADV_DONTDUMP);
  // From here on a truncated file costs the session, not the process.
  FaultGuard::Slot* guard = FaultGuard::protect(base, map_len);
  if (!guard) {
    munmap(base, map_len);
    return Status::errorf("more than {} guest memory mappings in vnetd", FaultGuard::kSlots);
  }
  auto* host = static_cast<uint8_t*>(base) + d.mmap_offset;
  return std::shared_ptr<MappedRegion>(new MappedRegion(d, host, base, map_len, guard));
}

std::shared_ptr<MappedRegion> MappedRegion::borrow(const RegionDesc& d, void* host) {
  return std::shared_ptr<MappedRegion>(
      new MappedRegion(d, static_cast<uint8_t*>(host), nullptr, 0, nullptr));
}

MappedRegion::~MappedRegion() {
  FaultGuard::unprotect(guard_);
  if (map_base_) munmap(map_base_, map_len_);
}

const MappedRegion* GuestMemory::lost_region() const {
  for (auto& r : regions_)
    if (r->lost()) return r.get();
  return nullptr;
}

Result<std::shared_ptr<const GuestMemory>> GuestMemory::create(RegionList regions) {
  for (auto& r : regions) {
    const auto& d = r->desc();
    uint64_t last;
    if (!last_byte(d.guest_phys_addr, d.memory_size, &last) ||
        !last_byte(d.userspace_addr, d.memory_size, &last))
      return Status::errorf("memory region gpa {:#x} size {:#x}: empty or overflowing",
                            d.guest_phys_addr, d.memory_size);
  }
  auto overlap = [&](auto key) -> bool {
    std::vector<const RegionDesc*> v;
    for (auto& r : regions) v.push_back(&r->desc());
    std::sort(v.begin(), v.end(), [&](auto* a, auto* b) { return key(*a) < key(*b); });
    for (size_t i = 1; i < v.size(); ++i)
      if (key(*v[i]) - key(*v[i - 1]) < v[i - 1]->memory_size) return true;
    return false;
  };
  if (overlap([](const RegionDesc& d) { return d.guest_phys_addr; }))
    return Status::error("memory regions overlap in guest physical addresses");
  if (overlap([](const RegionDesc& d) { return d.userspace_addr; }))
    return Status::error("memory regions overlap in front-end virtual addresses");
  std::sort(regions.begin(), regions.end(),
            [](auto& a, auto& b) { return a->desc().guest_phys_addr < b->desc().guest_phys_addr; });
  return std::shared_ptr<const GuestMemory>(new GuestMemory(std::move(regions)));
}

GuestMemory::GuestMemory(RegionList r) : regions_(std::move(r)) {
  spans_.reserve(regions_.size());
  for (auto& m : regions_)
    spans_.push_back(Span{m->desc().guest_phys_addr, m->desc().memory_size, m->host()});
}

size_t GuestMemory::gpa_to_iov(uint64_t gpa, uint64_t len, iovec* out, size_t max) const {
  size_t n = 0;
  uint64_t last;
  if (len != 0 && !last_byte(gpa, len, &last)) return 0;
  do {
    if (n == max) return 0;
    const Span* s = find_gpa(gpa);
    if (!s) return 0;
    uint64_t off = gpa - s->gpa;
    uint64_t chunk = std::min(len, s->size - off);
    out[n++] = iovec{s->host + off, size_t(chunk)};
    gpa += chunk;
    len -= chunk;
  } while (len > 0);
  return n;
}

uint8_t* GuestMemory::uva_to_host(uint64_t uva, uint64_t len) const {
  for (auto& r : regions_) {
    const auto& d = r->desc();
    if (uva >= d.userspace_addr && uva - d.userspace_addr < d.memory_size &&
        len <= d.memory_size - (uva - d.userspace_addr))
      return r->host() + (uva - d.userspace_addr);
  }
  return nullptr;
}

}  // namespace vnet::memory
