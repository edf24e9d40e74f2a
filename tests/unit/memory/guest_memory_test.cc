// Unit tests for GuestMemory and MappedRegion: mapping regions from a memfd with an
// offset, rejection of bad region descriptions and overlapping tables, and range
// translation (gpa_to_host, gpa_to_iov, uva_to_host) at every edge, including ranges
// whose end wraps past 2^64.
#include "memory/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace vnet::memory {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// A memfd of `size` bytes, closed at the end of the test.
class Memfd {
 public:
  explicit Memfd(uint64_t size) {
    fd_ = memfd_create("vnet-unit", MFD_CLOEXEC);
    EXPECT_GE(fd_, 0);
    EXPECT_EQ(ftruncate(fd_, off_t(size)), 0);
  }
  ~Memfd() {
    if (fd_ >= 0) close(fd_);
  }
  Memfd(const Memfd&) = delete;
  Memfd& operator=(const Memfd&) = delete;
  int fd() const { return fd_; }
  void release() {
    close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Host memory for borrowed regions, one allocation each.
class Arena {
 public:
  uint8_t* get(size_t size) {
    bufs_.emplace_back(size);
    return bufs_.back().data();
  }

 private:
  std::vector<std::vector<uint8_t>> bufs_;
};

std::shared_ptr<MappedRegion> borrow(Arena& a, uint64_t gpa, uint64_t size, uint64_t uva) {
  return MappedRegion::borrow(RegionDesc{gpa, size, uva, 0}, a.get(size ? size : 1));
}

// ---- MappedRegion::map -------------------------------------------------------------

TEST(MappedRegionTest, MapsMemfdAtOffset) {
  Memfd f(3 * 4096);
  // A pattern at file offset 0x1000 must appear at host() when mapped at that offset.
  std::vector<uint8_t> pattern(64);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = uint8_t(i * 7 + 1);
  ASSERT_EQ(pwrite(f.fd(), pattern.data(), pattern.size(), 0x1000), ssize_t(pattern.size()));

  auto r = MappedRegion::map(RegionDesc{0x100000, 0x2000, 0x7f0000000000, 0x1000}, f.fd());
  ASSERT_TRUE(r.is_ok()) << r.message();
  f.release();  // the fd is only borrowed: the mapping outlives it
  auto& reg = *r;
  EXPECT_EQ(reg->desc().guest_phys_addr, 0x100000u);
  EXPECT_EQ(reg->desc().memory_size, 0x2000u);
  EXPECT_EQ(std::memcmp(reg->host(), pattern.data(), pattern.size()), 0);
  // The whole region is accessible (last byte), and writes land in the shared mapping.
  reg->host()[0x1fff] = 0xab;
  EXPECT_EQ(reg->host()[0x1fff], 0xab);

  auto mem = GuestMemory::create({reg});
  ASSERT_TRUE(mem.is_ok()) << mem.message();
  EXPECT_EQ((*mem)->gpa_to_host(0x100000, 64), reg->host());
  EXPECT_EQ((*mem)->uva_to_host(0x7f0000001fff, 1), reg->host() + 0x1fff);
}

TEST(MappedRegionTest, WritesAreSharedWithTheFile) {
  Memfd f(2 * 4096);
  auto r = MappedRegion::map(RegionDesc{0, 4096, 0x1000, 4096}, f.fd());
  ASSERT_TRUE(r.is_ok()) << r.message();
  std::memcpy((*r)->host() + 10, "vnet", 4);
  char back[4] = {};
  ASSERT_EQ(pread(f.fd(), back, 4, 4096 + 10), 4);
  EXPECT_EQ(std::memcmp(back, "vnet", 4), 0);
}

TEST(MappedRegionTest, MapsWholeFileExactly) {
  Memfd f(4096);
  auto r = MappedRegion::map(RegionDesc{0, 4096, 0, 0}, f.fd());
  EXPECT_TRUE(r.is_ok()) << r.message();
}

TEST(MappedRegionTest, RejectsZeroSize) {
  Memfd f(4096);
  EXPECT_FALSE(MappedRegion::map(RegionDesc{0, 0, 0, 0}, f.fd()).is_ok());
}

TEST(MappedRegionTest, RejectsOffsetPlusSizeOverflow) {
  Memfd f(4096);
  EXPECT_FALSE(MappedRegion::map(RegionDesc{0, 0x2000, 0, kMax - 0xfff}, f.fd()).is_ok());
  EXPECT_FALSE(MappedRegion::map(RegionDesc{0, kMax, 0, 1}, f.fd()).is_ok());
}

TEST(MappedRegionTest, RejectsOffsetPastEndOfFile) {
  Memfd f(3 * 4096);
  // Offset beyond the end.
  EXPECT_FALSE(MappedRegion::map(RegionDesc{0, 4096, 0, 4 * 4096}, f.fd()).is_ok());
  // Offset inside, but the region runs past the end by one byte.
  EXPECT_FALSE(MappedRegion::map(RegionDesc{0, 0x1001, 0, 0x2000}, f.fd()).is_ok());
  // Offset exactly at the end.
  EXPECT_FALSE(MappedRegion::map(RegionDesc{0, 1, 0, 3 * 4096}, f.fd()).is_ok());
}

TEST(MappedRegionTest, RejectsAddressOverflow) {
  Memfd f(2 * 4096);
  EXPECT_FALSE(MappedRegion::map(RegionDesc{kMax - 0xfff + 1, 0x2000, 0, 0}, f.fd()).is_ok());
  EXPECT_FALSE(MappedRegion::map(RegionDesc{0, 0x2000, kMax - 0x10, 0}, f.fd()).is_ok());
  // A region ending exactly at 2^64 is representable.
  EXPECT_TRUE(MappedRegion::map(RegionDesc{kMax - 0xfff, 0x1000, 0, 0}, f.fd()).is_ok());
}

TEST(MappedRegionTest, RejectsBadFd) {
  EXPECT_FALSE(MappedRegion::map(RegionDesc{0, 4096, 0, 0}, -1).is_ok());
}

// ---- GuestMemory::create -----------------------------------------------------------

TEST(GuestMemoryCreateTest, AcceptsDisjointAndAdjacentRegionsInAnyOrder) {
  Arena a;
  auto r2 = borrow(a, 0x20000, 0x1000, 0x9000);
  auto r0 = borrow(a, 0x0, 0x10000, 0x100000);
  auto r1 = borrow(a, 0x10000, 0x10000, 0x200000);  // adjacent to r0 in gpa
  auto mem = GuestMemory::create({r2, r0, r1});
  ASSERT_TRUE(mem.is_ok()) << mem.message();
  ASSERT_EQ((*mem)->size(), 3u);
  // Sorted by guest physical address.
  EXPECT_EQ((*mem)->regions()[0], r0);
  EXPECT_EQ((*mem)->regions()[1], r1);
  EXPECT_EQ((*mem)->regions()[2], r2);
}

TEST(GuestMemoryCreateTest, RejectsOverlapInGuestPhysical) {
  Arena a;
  EXPECT_FALSE(
      GuestMemory::create({borrow(a, 0x0, 0x2000, 0x100000), borrow(a, 0x1fff, 0x1000, 0x200000)})
          .is_ok());
  // Same start.
  EXPECT_FALSE(
      GuestMemory::create({borrow(a, 0x1000, 0x1000, 0x100000), borrow(a, 0x1000, 0x10, 0x200000)})
          .is_ok());
  // One inside another, listed first.
  EXPECT_FALSE(
      GuestMemory::create({borrow(a, 0x1800, 0x10, 0x300000), borrow(a, 0x1000, 0x1000, 0x100000)})
          .is_ok());
}

TEST(GuestMemoryCreateTest, RejectsOverlapInFrontEndVirtual) {
  Arena a;
  EXPECT_FALSE(
      GuestMemory::create({borrow(a, 0x0, 0x2000, 0x100000), borrow(a, 0x10000, 0x1000, 0x101fff)})
          .is_ok());
  EXPECT_FALSE(
      GuestMemory::create({borrow(a, 0x10000, 0x1000, 0x100800), borrow(a, 0x0, 0x2000, 0x100000)})
          .is_ok());
}

TEST(GuestMemoryCreateTest, RejectsEmptyOrOverflowingBorrowedRegion) {
  Arena a;
  EXPECT_FALSE(GuestMemory::create({borrow(a, 0x0, 0, 0x100000)}).is_ok());
  uint8_t byte = 0;
  EXPECT_FALSE(
      GuestMemory::create({MappedRegion::borrow(RegionDesc{kMax, 2, 0x1000, 0}, &byte)}).is_ok());
  EXPECT_FALSE(
      GuestMemory::create({MappedRegion::borrow(RegionDesc{0x1000, 2, kMax, 0}, &byte)}).is_ok());
}

TEST(GuestMemoryCreateTest, EmptyTableTranslatesNothing) {
  auto mem = GuestMemory::create({});
  ASSERT_TRUE(mem.is_ok()) << mem.message();
  iovec iov[2];
  EXPECT_EQ((*mem)->gpa_to_host(0, 0), nullptr);
  EXPECT_EQ((*mem)->gpa_to_iov(0, 1, iov, 2), 0u);
  EXPECT_EQ((*mem)->uva_to_host(0, 1), nullptr);
}

// ---- gpa_to_host -------------------------------------------------------------------

class TranslateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Three regions: [0x1000, 0x2000) and [0x2000, 0x3000) adjacent in gpa but not on the
    // host; [0x5000, 0x6000) after a hole; and one page at the very top of the space.
    r0_ = borrow(a_, 0x1000, 0x1000, 0x7f0000000000);
    r1_ = borrow(a_, 0x2000, 0x1000, 0x7f0000100000);
    r2_ = borrow(a_, 0x5000, 0x1000, 0x7f0000200000);
    top_ = borrow(a_, kMax - 0xfff, 0x1000, 0x7f0000300000);
    auto m = GuestMemory::create({r0_, r1_, r2_, top_});
    ASSERT_TRUE(m.is_ok()) << m.message();
    mem_ = *m;
  }
  Arena a_;
  std::shared_ptr<MappedRegion> r0_, r1_, r2_, top_;
  std::shared_ptr<const GuestMemory> mem_;
};

TEST_F(TranslateTest, GpaToHostInsideOneRegion) {
  EXPECT_EQ(mem_->gpa_to_host(0x1000, 0x1000), r0_->host());
  EXPECT_EQ(mem_->gpa_to_host(0x1fff, 1), r0_->host() + 0xfff);  // last byte
  EXPECT_EQ(mem_->gpa_to_host(0x2000, 1), r1_->host());
  EXPECT_EQ(mem_->gpa_to_host(0x5800, 0x800), r2_->host() + 0x800);
}

TEST_F(TranslateTest, GpaToHostRejectsRangesLeavingARegion) {
  EXPECT_EQ(mem_->gpa_to_host(0x1fff, 2), nullptr);  // one past the last byte
  EXPECT_EQ(mem_->gpa_to_host(0x1000, 0x1001), nullptr);
  EXPECT_EQ(mem_->gpa_to_host(0xfff, 1), nullptr);  // just before the first region
  EXPECT_EQ(mem_->gpa_to_host(0x0, 1), nullptr);
  EXPECT_EQ(mem_->gpa_to_host(0x3000, 1), nullptr);       // the hole
  EXPECT_EQ(mem_->gpa_to_host(0x2fff, 0x2002), nullptr);  // across the hole
  EXPECT_EQ(mem_->gpa_to_host(0x6000, 1), nullptr);
}

TEST_F(TranslateTest, GpaToHostZeroLength) {
  EXPECT_EQ(mem_->gpa_to_host(0x1000, 0), r0_->host());
  EXPECT_EQ(mem_->gpa_to_host(0x1fff, 0), r0_->host() + 0xfff);
  EXPECT_EQ(mem_->gpa_to_host(0x3000, 0), nullptr);  // must still be inside a region
  EXPECT_EQ(mem_->gpa_to_host(0x6000, 0), nullptr);
}

TEST_F(TranslateTest, GpaToHostRejectsWrapPast2To64) {
  EXPECT_EQ(mem_->gpa_to_host(0x1800, kMax), nullptr);
  // gpa + len wraps to a small value inside region 0.
  EXPECT_EQ(mem_->gpa_to_host(0x1800, kMax - 0x1800 + 0x10), nullptr);
  EXPECT_EQ(mem_->gpa_to_host(kMax - 0xff, 0x200), nullptr);    // top region, wraps to 0x100
  EXPECT_EQ(mem_->gpa_to_host(kMax, 1), top_->host() + 0xfff);  // the very last byte
  EXPECT_EQ(mem_->gpa_to_host(kMax, 2), nullptr);
  EXPECT_EQ(mem_->gpa_to_host(kMax - 0xfff, 0x1000), top_->host());
}

// ---- gpa_to_iov --------------------------------------------------------------------

TEST_F(TranslateTest, GpaToIovOnePiece) {
  iovec iov[4];
  ASSERT_EQ(mem_->gpa_to_iov(0x1100, 0x100, iov, 4), 1u);
  EXPECT_EQ(iov[0].iov_base, r0_->host() + 0x100);
  EXPECT_EQ(iov[0].iov_len, 0x100u);
}

TEST_F(TranslateTest, GpaToIovAcrossAdjacentRegionsGivesTwoPieces) {
  iovec iov[4];
  ASSERT_EQ(mem_->gpa_to_iov(0x1f00, 0x200, iov, 4), 2u);
  EXPECT_EQ(iov[0].iov_base, r0_->host() + 0xf00);
  EXPECT_EQ(iov[0].iov_len, 0x100u);
  EXPECT_EQ(iov[1].iov_base, r1_->host());
  EXPECT_EQ(iov[1].iov_len, 0x100u);
  // Both regions whole.
  ASSERT_EQ(mem_->gpa_to_iov(0x1000, 0x2000, iov, 4), 2u);
  EXPECT_EQ(iov[0].iov_len + iov[1].iov_len, 0x2000u);
}

TEST_F(TranslateTest, GpaToIovHoleGivesZero) {
  iovec iov[4];
  EXPECT_EQ(mem_->gpa_to_iov(0x2f00, 0x200, iov, 4), 0u);   // runs into the hole
  EXPECT_EQ(mem_->gpa_to_iov(0x3000, 0x10, iov, 4), 0u);    // starts in the hole
  EXPECT_EQ(mem_->gpa_to_iov(0x1000, 0x5000, iov, 4), 0u);  // spans the hole
  EXPECT_EQ(mem_->gpa_to_iov(0x5f00, 0x101, iov, 4), 0u);   // past the last region
}

TEST_F(TranslateTest, GpaToIovTooManyPiecesGivesZero) {
  iovec iov[4];
  EXPECT_EQ(mem_->gpa_to_iov(0x1f00, 0x200, iov, 1), 0u);
  EXPECT_EQ(mem_->gpa_to_iov(0x1f00, 0x200, iov, 0), 0u);
  EXPECT_EQ(mem_->gpa_to_iov(0x1100, 0x10, iov, 0), 0u);
}

TEST_F(TranslateTest, GpaToIovRejectsWrapPast2To64) {
  iovec iov[4];
  // Last byte of the space is fine; one more wraps to 0 and must not be followed.
  ASSERT_EQ(mem_->gpa_to_iov(kMax - 0xf, 0x10, iov, 4), 1u);
  EXPECT_EQ(iov[0].iov_base, top_->host() + 0xff0);
  EXPECT_EQ(mem_->gpa_to_iov(kMax - 0xf, 0x11, iov, 4), 0u);
  EXPECT_EQ(mem_->gpa_to_iov(0x1800, kMax, iov, 4), 0u);
}

// ---- uva_to_host -------------------------------------------------------------------

TEST_F(TranslateTest, UvaToHost) {
  EXPECT_EQ(mem_->uva_to_host(0x7f0000000000, 0x1000), r0_->host());
  EXPECT_EQ(mem_->uva_to_host(0x7f0000000fff, 1), r0_->host() + 0xfff);
  EXPECT_EQ(mem_->uva_to_host(0x7f0000100010, 0x10), r1_->host() + 0x10);
  EXPECT_EQ(mem_->uva_to_host(0x7f0000300000, 8), top_->host());
}

TEST_F(TranslateTest, UvaToHostRejectsOutsideOrAcross) {
  EXPECT_EQ(mem_->uva_to_host(0x7f0000000fff, 2), nullptr);  // one past the end
  EXPECT_EQ(mem_->uva_to_host(0x7effffffffff, 1), nullptr);  // one before the start
  EXPECT_EQ(mem_->uva_to_host(0x7f0000001000, 1), nullptr);  // gap after region 0
  EXPECT_EQ(mem_->uva_to_host(0x7f0000001000, 0), nullptr);
  EXPECT_EQ(mem_->uva_to_host(0x7f0000000010, kMax), nullptr);  // wraps
  EXPECT_EQ(mem_->uva_to_host(0x7f0000000010, kMax - 0x7f0000000010 + 0x20), nullptr);
  EXPECT_EQ(mem_->uva_to_host(0, 1), nullptr);
  // The gpa of a region is not a uva.
  EXPECT_EQ(mem_->uva_to_host(0x1000, 1), nullptr);
}

}  // namespace
}  // namespace vnet::memory
