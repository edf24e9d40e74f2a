// Tests for segment(): 64000-byte TSO frames over IPv4 and IPv6 (with and without a VLAN
// tag) and USO frames cut at gso_size 1448, every segment checked field by field against
// the original, every IPv4 header and L4 checksum verified with the reference sum; resuming
// in chunks; partial-checksum output; and hostile frames (never a crash, never a segment
// past kMaxFrame).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "net/offload.h"
#include "offload_test_util.h"

namespace vnet::net {
namespace {

using test::build_frame;
using test::BuiltFrame;
using test::FrameSpec;
using test::rd16;
using test::rd32;

constexpr OffloadCaps kNone{};
constexpr uint8_t kFin = 0x01, kPsh = 0x08, kAck = 0x10, kCwr = 0x80;

class OffloadSegment : public ::testing::Test {
 protected:
  OffloadSegment() {
    for (int i = 0; i < 64; ++i) pool_.push_back(test::make_packet());
    for (auto& p : pool_) ptrs_.push_back(p.get());
  }

  // Builds a GSO frame as a guest sends it (pseudo-header sum in the L4 checksum field).
  void make(const FrameSpec& s, uint8_t gso_type, uint16_t mss) {
    spec_ = s;
    b_ = build_frame(in_->data, s);
    in_->len = b_.len;
    test::make_partial(*in_, b_, s.ip_version, s.proto);
    in_->vhdr.gso_type = gso_type;
    in_->vhdr.gso_size = mss;
    in_->vhdr.hdr_len = uint16_t(b_.payload_off);
    in_->vlan = 7;
    orig_.assign(in_->data, in_->data + in_->len);
    mss_ = mss;
  }

  // All segments, n_out at a time.
  uint32_t run(OffloadCaps dst, uint32_t n_out) {
    segs_.clear();
    uint32_t total = 0;
    for (uint32_t first = 0;;) {
      std::vector<Packet*> out(ptrs_.begin(), ptrs_.begin() + n_out);
      SegmentResult r = segment(*in_, dst, first, out.data(), n_out);
      EXPECT_EQ(r.error, OffloadError::kOk) << offload_error_name(r.error);
      if (r.error != OffloadError::kOk) return 0;
      total = r.total;
      for (uint32_t i = 0; i < r.produced; ++i) {
        segs_.emplace_back(ptrs_[i]->data, ptrs_[i]->data + ptrs_[i]->len);
        hdrs_.push_back(ptrs_[i]->vhdr);
        EXPECT_EQ(ptrs_[i]->vlan, 7);
      }
      first += r.produced;
      if (first >= total || r.produced == 0) break;
    }
    return total;
  }

  // Checks segs_ against the original frame.
  void verify(bool partial) {
    const bool tcp = spec_.proto == kIpProtoTcp;
    const uint32_t payload = b_.len - b_.payload_off;
    const uint32_t want = payload == 0 ? 1 : (payload + mss_ - 1) / mss_;
    ASSERT_EQ(segs_.size(), want);
    ASSERT_EQ(hdrs_.size(), want);
    std::vector<uint8_t> joined;
    const uint8_t* o = orig_.data();
    const uint8_t oflags = tcp ? o[b_.l4_off + 13] : 0;
    for (uint32_t i = 0; i < want; ++i) {
      const std::vector<uint8_t>& s = segs_[i];
      SCOPED_TRACE("segment " + std::to_string(i));
      ASSERT_GE(s.size(), b_.payload_off);
      const uint32_t seg_payload = uint32_t(s.size()) - b_.payload_off;
      EXPECT_LE(seg_payload, mss_);
      if (i + 1 < want) {
        EXPECT_EQ(seg_payload, mss_);
      }
      joined.insert(joined.end(), s.begin() + b_.payload_off, s.end());
      // L2 unchanged (tags included).
      EXPECT_TRUE(std::equal(o, o + b_.l3_off, s.data()));
      const uint8_t* ip = s.data() + b_.l3_off;
      const uint8_t* oip = o + b_.l3_off;
      if (spec_.ip_version == 4) {
        const uint32_t ihl = (ip[0] & 0xf) * 4u;
        EXPECT_EQ(rd16(ip + 2), s.size() - b_.l3_off);
        EXPECT_EQ(rd16(ip + 4), uint16_t(spec_.ip_id + i));
        EXPECT_EQ(test::ref_sum(ip, ihl), 0xffff) << "IPv4 header checksum";
        for (uint32_t k = 0; k < ihl; ++k) {
          if (k == 2 || k == 3 || k == 4 || k == 5 || k == 10 || k == 11) continue;
          EXPECT_EQ(ip[k], oip[k]) << "IPv4 byte " << k;
        }
      } else {
        EXPECT_EQ(rd16(ip + 4), s.size() - b_.l3_off - 40);
        for (uint32_t k = 0; k < b_.l4_off - b_.l3_off; ++k) {
          if (k == 4 || k == 5) continue;
          EXPECT_EQ(ip[k], oip[k]) << "IPv6 byte " << k;
        }
      }
      const uint8_t* l4 = s.data() + b_.l4_off;
      const uint8_t* ol4 = o + b_.l4_off;
      const uint32_t l4_len = uint32_t(s.size()) - b_.l4_off;
      if (tcp) {
        EXPECT_EQ(rd32(l4 + 4), rd32(ol4 + 4) + i * mss_);
        uint8_t f = oflags;
        if (i != 0) f &= uint8_t(~kCwr);
        if (i + 1 != want) f &= uint8_t(~(kFin | kPsh));
        EXPECT_EQ(l4[13], f);
        for (uint32_t k = 0; k < b_.payload_off - b_.l4_off; ++k) {
          if ((k >= 4 && k < 8) || k == 13 || k == 16 || k == 17) continue;
          EXPECT_EQ(l4[k], ol4[k]) << "TCP byte " << k;
        }
      } else {
        EXPECT_EQ(rd16(l4 + 4), l4_len);
        EXPECT_EQ(rd16(l4), rd16(ol4));
        EXPECT_EQ(rd16(l4 + 2), rd16(ol4 + 2));
      }
      const uint32_t co = tcp ? 16 : 6;
      std::vector<uint8_t> check(s);
      if (partial) {
        EXPECT_EQ(hdrs_[i].flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        EXPECT_EQ(hdrs_[i].csum_start, b_.l4_off);
        EXPECT_EQ(hdrs_[i].csum_offset, co);
        // Complete it the way a device would, with the reference sum.
        const uint16_t c = uint16_t(~test::ref_sum(l4, l4_len));
        test::wr16(&check[b_.l4_off + co], c);
      } else {
        EXPECT_EQ(hdrs_[i].flags, 0);
      }
      EXPECT_EQ(hdrs_[i].gso_type, VIRTIO_NET_HDR_GSO_NONE);
      EXPECT_EQ(test::ref_l4_verify(check.data(), b_.l3_off, spec_.ip_version, spec_.proto,
                                    b_.l4_off, l4_len),
                0xffff)
          << "L4 checksum";
    }
    EXPECT_EQ(joined.size(), payload);
    EXPECT_TRUE(std::equal(joined.begin(), joined.end(), o + b_.payload_off));
  }

  std::vector<std::unique_ptr<Packet>> pool_;
  std::vector<Packet*> ptrs_;
  std::unique_ptr<Packet> in_ = test::make_packet();
  FrameSpec spec_;
  BuiltFrame b_;
  std::vector<uint8_t> orig_;
  uint32_t mss_ = 0;
  std::vector<std::vector<uint8_t>> segs_;
  std::vector<virtio_net_hdr_v1> hdrs_;
};

struct TsoCase {
  int ip_version;
  int vlans;
};

class OffloadTso : public OffloadSegment, public ::testing::WithParamInterface<TsoCase> {};

TEST_P(OffloadTso, Tso64000) {
  FrameSpec s;
  s.ip_version = GetParam().ip_version;
  s.n_vlans = GetParam().vlans;
  s.payload = 64000;
  s.tcp_opts = 12;  // timestamps-sized options ride on every segment
  s.tcp_flags = kFin | kPsh | kAck | kCwr;
  const uint8_t type = s.ip_version == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
  make(s, type | VIRTIO_NET_HDR_GSO_ECN, 1448);
  OffloadCaps src{true, true, true, true, false};
  ASSERT_EQ(validate(*in_, src), OffloadError::kOk);
  EXPECT_EQ(decide(*in_, kNone), OffloadAction::kSegment);
  EXPECT_EQ(run(kNone, 64), 45u);  // ceil(64000 / 1448)
  verify(false);
  hdrs_.clear();
  EXPECT_EQ(run(kNone, 7), 45u);  // the same, seven at a time
  verify(false);
  // A destination with partial checksums but no ECN-capable TSO: segments stay partial.
  hdrs_.clear();
  OffloadCaps csum_only{true, true, true, false, false};
  EXPECT_EQ(decide(*in_, csum_only), OffloadAction::kSegment);
  run(csum_only, 64);
  verify(true);
  // The input is not modified.
  EXPECT_TRUE(std::equal(orig_.begin(), orig_.end(), in_->data));
}

INSTANTIATE_TEST_SUITE_P(
    All, OffloadTso, ::testing::Values(TsoCase{4, 0}, TsoCase{4, 1}, TsoCase{6, 0}, TsoCase{6, 1}),
    [](const ::testing::TestParamInfo<TsoCase>& p) {
      return "v" + std::to_string(p.param.ip_version) + "_vlan" + std::to_string(p.param.vlans);
    });

TEST_F(OffloadSegment, Tso6WithExtensionHeadersAndIpv4Options) {
  FrameSpec s;
  s.ip_version = 6;
  s.v6_ext = {0, 60};
  s.payload = 10000;
  make(s, VIRTIO_NET_HDR_GSO_TCPV6, 1220);
  EXPECT_EQ(run(kNone, 64), 9u);
  verify(false);
  hdrs_.clear();
  FrameSpec s4;
  s4.ipv4_opts = 8;
  s4.n_vlans = 2;
  s4.payload = 5000;
  s4.tcp_flags = kAck;
  make(s4, VIRTIO_NET_HDR_GSO_TCPV4, 999);  // odd MSS
  EXPECT_EQ(run(kNone, 64), 6u);
  verify(false);
}

TEST_F(OffloadSegment, Uso) {
  for (int v : {4, 6}) {
    for (int vlans : {0, 1}) {
      FrameSpec s;
      s.ip_version = v;
      s.n_vlans = vlans;
      s.proto = kIpProtoUdp;
      s.payload = 64000;
      SCOPED_TRACE("v" + std::to_string(v) + " vlans " + std::to_string(vlans));
      make(s, VIRTIO_NET_HDR_GSO_UDP_L4, 1448);
      ASSERT_EQ(validate(*in_, OffloadCaps{true, false, false, false, true}), OffloadError::kOk);
      hdrs_.clear();
      EXPECT_EQ(run(kNone, 64), 45u);
      verify(false);
      hdrs_.clear();
      run(OffloadCaps{true, true, true, true, false}, 10);
      verify(true);
    }
  }
}

TEST_F(OffloadSegment, GsoSizeLargerThanPayloadGivesOneSegment) {
  FrameSpec s;
  s.payload = 1000;
  s.tcp_flags = kFin | kPsh | kAck | kCwr;
  make(s, VIRTIO_NET_HDR_GSO_TCPV4, 1448);
  EXPECT_EQ(run(kNone, 64), 1u);
  verify(false);  // FIN, PSH and CWR all stay on the only segment
  // Only the checksum may differ from the input (partial there, complete here).
  ASSERT_EQ(segs_[0].size(), orig_.size());
  for (uint32_t k = 0; k < orig_.size(); ++k) {
    if (k == b_.l4_off + 16 || k == b_.l4_off + 17) continue;
    EXPECT_EQ(segs_[0][k], orig_[k]) << k;
  }
  EXPECT_EQ(rd16(&segs_[0][b_.l3_off + 4]), spec_.ip_id);
  // No payload at all: one header-only segment.
  FrameSpec e;
  e.payload = 0;
  e.ip_version = 6;
  make(e, VIRTIO_NET_HDR_GSO_TCPV6, 1448);
  hdrs_.clear();
  EXPECT_EQ(run(kNone, 64), 1u);
  verify(false);
}

TEST_F(OffloadSegment, ResumeAndEdgeCursors) {
  FrameSpec s;
  s.payload = 3000;
  make(s, VIRTIO_NET_HDR_GSO_TCPV4, 1000);
  Packet* out[2] = {ptrs_[0], ptrs_[1]};
  SegmentResult r = segment(*in_, kNone, 0, out, 0);  // no room: nothing produced
  EXPECT_EQ(r.error, OffloadError::kOk);
  EXPECT_EQ(r.total, 3u);
  EXPECT_EQ(r.produced, 0u);
  r = segment(*in_, kNone, 2, out, 2);  // the last one only
  EXPECT_EQ(r.produced, 1u);
  EXPECT_EQ(rd32(&ptrs_[0]->data[b_.l4_off + 4]), s.seq + 2000);
  EXPECT_EQ(rd16(&ptrs_[0]->data[b_.l3_off + 4]), uint16_t(s.ip_id + 2));
  r = segment(*in_, kNone, 3, out, 2);  // past the end
  EXPECT_EQ(r.produced, 0u);
  r = segment(*in_, kNone, 0xffffffffu, out, 2);
  EXPECT_EQ(r.produced, 0u);
}

TEST_F(OffloadSegment, RejectsWhatValidateRejects) {
  FrameSpec s;
  s.payload = 3000;
  make(s, VIRTIO_NET_HDR_GSO_TCPV4, 1000);
  Packet* out[1] = {ptrs_[0]};
  in_->vhdr.gso_type = VIRTIO_NET_HDR_GSO_NONE;
  EXPECT_EQ(segment(*in_, kNone, 0, out, 1).error, OffloadError::kGsoUnknownType);
  in_->vhdr.gso_type = VIRTIO_NET_HDR_GSO_UDP;
  EXPECT_EQ(segment(*in_, kNone, 0, out, 1).error, OffloadError::kGsoUfoUnsupported);
  in_->vhdr.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  in_->vhdr.gso_size = 0;
  EXPECT_EQ(segment(*in_, kNone, 0, out, 1).error, OffloadError::kGsoSizeZero);
  in_->vhdr.gso_size = 1000;
  in_->vhdr.flags = 0;
  EXPECT_EQ(segment(*in_, kNone, 0, out, 1).error, OffloadError::kGsoWithoutCsum);
  in_->vhdr.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  in_->len -= 1;  // IP total length now past the frame
  EXPECT_EQ(segment(*in_, kNone, 0, out, 1).error, OffloadError::kGsoBadHeaders);
}

// Hostile: random corruption of a valid GSO frame's headers and virtio_net_hdr, and random
// frame lengths. validate() and segment() must never crash (ASan/UBSan build); whatever
// segment() accepts yields bounded, well-formed segments.
TEST_F(OffloadSegment, HostileNeverCrashes) {
  std::mt19937 rng(2024);
  const OffloadCaps all{true, true, true, true, true};
  uint32_t accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    FrameSpec s;
    s.ip_version = rng() % 2 ? 4 : 6;
    s.proto = rng() % 3 ? kIpProtoTcp : kIpProtoUdp;
    s.n_vlans = int(rng() % 3);
    if (s.ip_version == 6 && rng() % 2) s.v6_ext = {0, 44};
    s.payload = rng() % 6000;
    const uint8_t type = s.proto == kIpProtoUdp ? VIRTIO_NET_HDR_GSO_UDP_L4
                         : s.ip_version == 4    ? VIRTIO_NET_HDR_GSO_TCPV4
                                                : VIRTIO_NET_HDR_GSO_TCPV6;
    make(s, type, uint16_t(1 + rng() % 2000));
    const int n_flips = 1 + int(rng() % 4);
    for (int k = 0; k < n_flips; ++k) {
      switch (rng() % 5) {
        case 0:  // a header byte
          in_->data[rng() % std::min<uint32_t>(in_->len, b_.payload_off + 4)] = uint8_t(rng());
          break;
        case 1:
          in_->len = rng() % (b_.len + 1);
          break;
        case 2:
          in_->vhdr.gso_size = uint16_t(rng());
          break;
        case 3:
          in_->vhdr.csum_start = uint16_t(rng() % 2 ? rng() : b_.l4_off + rng() % 3);
          in_->vhdr.csum_offset = uint16_t(rng() % 2 ? rng() : rng() % 20);
          break;
        case 4:
          in_->vhdr.gso_type = uint8_t(rng());
          in_->vhdr.flags = uint8_t(rng());
          in_->vhdr.hdr_len = uint16_t(rng());
          break;
      }
    }
    const OffloadError v = validate(*in_, all);
    uint32_t first = 0;
    for (int rounds = 0; rounds < 4; ++rounds) {
      SegmentResult r = segment(*in_, all, first, ptrs_.data(), 16);
      if (r.error != OffloadError::kOk) {
        // What segment() refuses, validate() refuses too (unless it is no GSO frame).
        if ((in_->vhdr.gso_type & 0x7f) != VIRTIO_NET_HDR_GSO_NONE) {
          EXPECT_NE(v, OffloadError::kOk) << offload_error_name(r.error);
        }
        break;
      }
      ++accepted;
      EXPECT_LE(r.total, kMaxGsoSegments);
      for (uint32_t i = 0; i < r.produced; ++i) {
        EXPECT_LE(ptrs_[i]->len, in_->len);
        EXPECT_LE(ptrs_[i]->len, kMaxFrame);
      }
      first += r.produced;
      if (first >= r.total) break;
    }
    if (v == OffloadError::kOk) finish_csum(*in_);  // must be in bounds as well
  }
  EXPECT_GT(accepted, 100u);  // the corruption leaves enough frames valid to segment
}

}  // namespace
}  // namespace vnet::net
