// DirtyLog: mapping the front end's bitmap.
#include "memory/dirty_log.h"

namespace vnet::memory {

Result<std::shared_ptr<DirtyLog>> DirtyLog::map(int fd, uint64_t size, uint64_t offset) {
  if (size == 0) return Status::error("dirty log of size 0");
  if (size > kMaxSize)
    return Status::errorf("dirty log of {} bytes, more than the {} accepted", size, kMaxSize);
  // The log is mapped like a guest memory region (size, offset and file end checked,
  // SIGBUS on a truncated file caught); its addresses mean nothing, so they are 0.
  auto r = MappedRegion::map(RegionDesc{0, size, 0, offset}, fd);
  if (!r) return Status::errorf("dirty log: {}", r.message());
  uint8_t* bits = (*r)->host();
  return std::shared_ptr<DirtyLog>(new DirtyLog(std::move(*r), bits, size));
}

std::shared_ptr<DirtyLog> DirtyLog::borrow(uint8_t* bits, uint64_t size) {
  return std::shared_ptr<DirtyLog>(new DirtyLog(nullptr, bits, size));
}

}  // namespace vnet::memory
