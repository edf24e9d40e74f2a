// virtio-net offloads in software: validation of the offload metadata a source attached to a
// frame (virtio 1.2 section 5.1.6.2 "Packet Transmission"), checksum completion for
// VIRTIO_NET_HDR_F_NEEDS_CSUM frames, and segmentation of TSO (TCP over IPv4/IPv6) and USO
// (VIRTIO_NET_HDR_GSO_UDP_L4) frames for a destination that cannot take them (5.1.6.4
// "Processing of Incoming Packets": a guest only gets what its GUEST_* features allow).
//
// Hot path: no allocation, no exceptions, bounded work. Everything is computed from the
// parsed frame; hdr_len from the source is a hint only (5.1.6.2.2) and is never used to
// find headers. Header fields in Packet::vhdr are little-endian (VIRTIO_F_VERSION_1).
#pragma once

#include <cstdint>

#include "net/frame.h"
#include "net/packet.h"
#include "virtio/net_uapi.h"

// Newer than some installed UAPI headers (virtio 1.2 section 5.1.3, 5.1.6).
#ifndef VIRTIO_NET_HDR_GSO_UDP_L4
#define VIRTIO_NET_HDR_GSO_UDP_L4 5
#endif
#ifndef VIRTIO_NET_F_GUEST_USO4
#define VIRTIO_NET_F_GUEST_USO4 54
#endif
#ifndef VIRTIO_NET_F_GUEST_USO6
#define VIRTIO_NET_F_GUEST_USO6 55
#endif
#ifndef VIRTIO_NET_F_HOST_USO
#define VIRTIO_NET_F_HOST_USO 56
#endif

namespace vnet::net {

// TUNSETOFFLOAD flags newer than some installed linux/if_tun.h.
inline constexpr unsigned kTunFCsum = 0x01, kTunFTso4 = 0x02, kTunFTso6 = 0x04, kTunFTsoEcn = 0x08,
                          kTunFUso4 = 0x20, kTunFUso6 = 0x40;

// Most segments one GSO frame may produce (a 64 KiB frame with an MSS of 16 bytes); more
// is hostile and rejected, which bounds the work per frame.
inline constexpr uint32_t kMaxGsoSegments = 4096;

// What a port can accept, or what a source may send.
struct OffloadCaps {
  bool csum = false;     // partial checksums (NEEDS_CSUM)
  bool tso4 = false;     // TCP over IPv4 GSO
  bool tso6 = false;     // TCP over IPv6 GSO
  bool tso_ecn = false;  // TSO frames with the ECN bit (CWR must be on the first segment only)
  bool uso = false;      // UDP_L4 GSO, IPv4 and IPv6
};

// A guest port as a destination: GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, and uso only when both
// GUEST_USO4 and GUEST_USO6 were negotiated. A capability without GUEST_CSUM is void (a
// GUEST_TSO* feature requires GUEST_CSUM, 5.1.3.1).
OffloadCaps guest_rx_caps(uint64_t features);
// A guest port as a source: VIRTIO_NET_F_CSUM, HOST_TSO4/6, HOST_ECN, HOST_USO (each GSO
// feature requires VIRTIO_NET_F_CSUM, 5.1.3.1).
OffloadCaps guest_tx_caps(uint64_t features);
// A TAP device from the flags given to TUNSETOFFLOAD (uso needs TUN_F_USO4 and TUN_F_USO6).
OffloadCaps tap_caps(unsigned tun_flags);

// Why a frame's virtio_net_hdr was rejected.
enum class OffloadError : uint8_t {
  kOk,
  kFlagsForbidden,         // DATA_VALID or RSC_INFO set by a sender (5.1.6.2.1 MUST NOT)
  kCsumNotNegotiated,      // NEEDS_CSUM without VIRTIO_NET_F_CSUM
  kCsumStartBeyondFrame,   // csum_start + 2 > frame length
  kCsumOffsetBeyondFrame,  // csum_start + csum_offset + 2 > frame length
  kGsoUnknownType,         // gso_type (without ECN) not NONE/TCPV4/UDP/TCPV6/UDP_L4
  kGsoNotNegotiated,       // a GSO type the source did not negotiate
  kEcnNotNegotiated,       // ECN bit without HOST_ECN
  kEcnWithoutTcp,          // ECN bit on a frame that is not TSO
  kGsoUfoUnsupported,      // legacy UFO (VIRTIO_NET_HDR_GSO_UDP): IP fragmentation not done
  kGsoWithoutCsum,         // GSO without NEEDS_CSUM (5.1.6.2.1 MUST)
  kGsoSizeZero,            // GSO with gso_size 0
  kHdrLenBeyondFrame,      // hdr_len > frame length
  kGsoBadHeaders,          // headers of a GSO frame do not parse (truncated, bad lengths)
  kGsoL3Mismatch,          // TCPV4 on a non-IPv4 frame, TCPV6 on a non-IPv6 frame
  kGsoL4Mismatch,          // TCP GSO on non-TCP, UDP_L4 on non-UDP
  kGsoFragment,            // a GSO frame that is an IP fragment
  kGsoLengthMismatch,      // IP total/payload length does not end at the frame's end
  kGsoCsumMismatch,        // csum_start/csum_offset do not point at the L4 checksum
  kGsoTooManySegments,     // more than kMaxGsoSegments segments
  kCount
};

const char* offload_error_name(OffloadError e);

// Checks p.vhdr against the frame and against what the source may send (virtio 1.2
// 5.1.6.2.1 driver requirements, as Linux virtio_net_hdr_to_skb enforces them plus the
// consistency segment() needs). Unknown flag bits are ignored (5.1.6.2.2: the device MUST
// ignore flag bits it does not recognise). GSO without NEEDS_CSUM is rejected: the spec
// makes NEEDS_CSUM a MUST for GSO and Linux only tolerates its absence for AF_PACKET.
// Inline: a frame without offload metadata (flags and gso_type zero, the usual case of a
// small frame) is valid from any source; validate_offloads() is the whole check.
OffloadError validate_offloads(const Packet& p, OffloadCaps src);
inline OffloadError validate(const Packet& p, OffloadCaps src) {
  if ((p.vhdr.flags | p.vhdr.gso_type) == 0) [[likely]]
    return OffloadError::kOk;
  return validate_offloads(p, src);
}

// Completes a NEEDS_CSUM checksum in software: the ones'-complement sum from csum_start to
// the end of the frame (the field already holds the pseudo-header sum, Linux
// CHECKSUM_PARTIAL), complemented and stored at csum_start + csum_offset (0 becomes 0xffff,
// as in Linux skb_checksum_help); clears NEEDS_CSUM. A frame without NEEDS_CSUM is left as
// is. Returns false (frame untouched) if the offsets do not fit in the frame. The result is
// good for every destination, so a flooded frame can be finished once, in place.
bool finish_csum(Packet& p);

// What a destination needs done to a (validated) frame before it can take it.
enum class OffloadAction : uint8_t {
  kPass,        // deliver unchanged (metadata included)
  kFinishCsum,  // finish_csum() first
  kSegment,     // segment() into frames without GSO
};
// Inline: a frame with neither GSO nor a partial checksum passes to any destination;
// decide_offloads() is the whole decision.
OffloadAction decide_offloads(const Packet& p, OffloadCaps dst);
inline OffloadAction decide(const Packet& p, OffloadCaps dst) {
  if ((p.vhdr.gso_type | (p.vhdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM)) == 0) [[likely]]
    return OffloadAction::kPass;
  return decide_offloads(p, dst);
}

struct SegmentResult {
  OffloadError error = OffloadError::kOk;
  uint32_t total = 0;     // segments the frame makes in all
  uint32_t produced = 0;  // written by this call to out[0..produced)
};

// Segments a TSO or USO frame (validated, so NEEDS_CSUM is set) into frames of at most
// gso_size bytes of L4 payload, writing segments first, first+1, ... into out[0..n_out).
// A pool smaller than the frame's segment count is handled by calling again with
// first += produced until first == total; each call re-derives everything from `in`,
// so nothing is kept between calls. Every segment carries the original L2 header (tags
// included), IPv4 total length / id + index / header checksum or IPv6 payload length,
// TCP sequence number advanced (FIN and PSH on the last segment only, CWR on the first
// only) or UDP length. Its L4 checksum is complete, or, if dst.csum, left partial: the
// field holds the pseudo-header sum and vhdr says NEEDS_CSUM with csum_start/offset.
// `in` must not be one of `out`. A frame whose payload fits in gso_size gives one segment.
SegmentResult segment(const Packet& in, OffloadCaps dst, uint32_t first, Packet* const* out,
                      uint32_t n_out);

}  // namespace vnet::net
