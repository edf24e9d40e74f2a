// Unit tests for FaultGuard: a region whose file the front end truncates after it was
// mapped does not kill the process. The access that hits a lost page returns (reading
// zeros), the region says lost(), GuestMemory names it, notify_fd() becomes readable
// and faults() counts it; a fault outside guest memory still kills (death test), and a
// region unmapped normally is no longer guarded.
#include "memory/fault_guard.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>

#include "memory/guest_memory.h"

namespace vnet::memory {
namespace {

constexpr uint64_t kSize = 64 * 1024;

int make_memfd(uint64_t size, unsigned flags = MFD_CLOEXEC) {
  int fd = memfd_create("vnet-unit-guard", flags);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ftruncate(fd, off_t(size)), 0);
  return fd;
}

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

void drain(int fd) {
  uint64_t v;
  while (read(fd, &v, sizeof(v)) == sizeof(v)) {
  }
}

TEST(FaultGuard, TruncatedMemfdReadsZerosAndIsReported) {
  int fd = make_memfd(kSize);
  auto r = MappedRegion::map(RegionDesc{0, kSize, 0x7f0000000000, 0}, fd);
  ASSERT_TRUE(r.is_ok()) << r.message();
  auto mem = GuestMemory::create({*r});
  ASSERT_TRUE(mem.is_ok());
  volatile uint8_t* p = (*mem)->gpa_to_host(0x1000, 16);
  ASSERT_NE(p, nullptr);
  p[0] = 0xab;
  EXPECT_EQ(p[0], 0xab);
  EXPECT_FALSE((*r)->lost());
  EXPECT_EQ((*mem)->lost_region(), nullptr);
  drain(FaultGuard::notify_fd());
  const uint64_t faults = FaultGuard::faults();

  ASSERT_EQ(ftruncate(fd, 0), 0);  // the front end shrinks its file under us
  EXPECT_EQ(p[0], 0);              // SIGBUS absorbed: a zero page now
  p[1] = 7;                        // and writes go somewhere harmless
  EXPECT_EQ(p[1], 7);
  EXPECT_TRUE((*r)->lost());
  EXPECT_EQ((*mem)->lost_region(), r->get());
  EXPECT_EQ(FaultGuard::faults(), faults + 1);
  EXPECT_TRUE(readable(FaultGuard::notify_fd()));
  // Every other page of the mapping was replaced too: no second signal.
  volatile uint8_t* q = (*mem)->gpa_to_host(kSize - 1, 1);
  EXPECT_EQ(*q, 0);
  EXPECT_EQ(FaultGuard::faults(), faults + 1);
  drain(FaultGuard::notify_fd());
  close(fd);
}

TEST(FaultGuard, UnmappedRegionIsNoLongerGuarded) {
  // Map and drop many regions: slots are given back (more than kSlots in all).
  for (size_t i = 0; i < FaultGuard::kSlots + 16; ++i) {
    int fd = make_memfd(4096);
    auto r = MappedRegion::map(RegionDesc{0, 4096, 0, 0}, fd);
    close(fd);
    ASSERT_TRUE(r.is_ok()) << i << ": " << r.message();
  }
}

TEST(FaultGuard, TableFullRefusesTheMapping) {
  int fd = make_memfd(4096);
  std::vector<std::shared_ptr<MappedRegion>> held;
  bool refused = false;
  for (size_t i = 0; i <= FaultGuard::kSlots; ++i) {
    auto r = MappedRegion::map(RegionDesc{0, 4096, 0, 0}, fd);
    if (!r) {
      refused = true;
      EXPECT_NE(r.message().find("guest memory mappings"), std::string::npos) << r.message();
      break;
    }
    held.push_back(std::move(*r));
  }
  EXPECT_TRUE(refused);
  close(fd);
}

TEST(FaultGuardDeathTest, SigbusOutsideGuestMemoryStillKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  FaultGuard::install();
  EXPECT_EXIT(
      {
        int fd = make_memfd(8192);
        // Not through MappedRegion: not guest memory, not guarded.
        auto* p = static_cast<volatile uint8_t*>(
            mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
        if (ftruncate(fd, 0) != 0) _exit(3);
        (void)p[0];
        _exit(0);
      },
      // SIGBUS, or a sanitizer's report and abort: anything but surviving the access.
      [](int status) { return !(WIFEXITED(status) && WEXITSTATUS(status) == 0); }, "");
}

}  // namespace
}  // namespace vnet::memory
