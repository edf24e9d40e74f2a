// Capture: a live copy of one port's frames for `vnetctl capture`. The worker that
// receives a burst from the port (rx) or sends one to it (tx) runs the capture's
// filter (a BPF program compiled by libpcap from tcpdump's language) on each frame and
// copies the matching ones into a bounded ring of its own: one ring per producer
// (worker), single producer, single consumer (the control thread), no lock, no
// allocation, no system call. A full ring drops the frame and counts it; the worker
// never waits for the reader. A port holds an immutable CaptureSet (nullptr when
// nothing captures it), loaded once per burst: without a capture the data path pays
// one predictable branch per burst and direction.
//
// Directions are as seen from the port: rx (pcapng "inbound") are the frames the
// switch received from the port, tx ("outbound") those it sent to it, with the 802.1Q
// tag the port adds on the way out. A frame carrying virtio-net offload metadata
// (GSO, or a partial checksum: VIRTIO_NET_HDR_F_NEEDS_CSUM) is captured as it is, one
// super-frame with an incomplete checksum, and the record says so (the pcapng writer
// turns that into a comment on the packet).
#pragma once

#include <pcap/pcap.h>  // bpf_insn, bpf_program, bpf_filter

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/counter.h"
#include "net/packet.h"
#include "net/vlan.h"

namespace vnet::net {

enum class CaptureDir : uint8_t { kRx = 1, kTx = 2 };

// One captured frame in a ring: this header, then caplen bytes, the record padded to
// kRecordAlign. A record with caplen kSkipRecord fills the ring's end up to the wrap.
struct CaptureRecord {
  uint32_t size;      // whole record, header included, a multiple of kRecordAlign
  uint32_t caplen;    // bytes that follow
  uint32_t orig_len;  // the frame's length (with a tag added on tx)
  uint8_t dir;        // CaptureDir
  uint8_t vflags;     // virtio_net_hdr flags (VIRTIO_NET_HDR_F_NEEDS_CSUM, ...)
  uint8_t gso_type;   // virtio_net_hdr gso_type
  uint8_t pad0 = 0;
  uint64_t ts_ns;  // CLOCK_REALTIME, one reading per burst
  uint16_t gso_size, csum_start, csum_offset, pad1 = 0;
};
static_assert(sizeof(CaptureRecord) == 32);
inline constexpr uint32_t kRecordAlign = 32;
inline constexpr uint32_t kSkipRecord = UINT32_MAX;

// Single-producer single-consumer byte ring of CaptureRecords.
class CaptureRing {
 public:
  explicit CaptureRing(uint32_t bytes);  // rounded up to a power of two
  // Producer.
  // Room for a record of `caplen` bytes (after a skip record if it must wrap): where to
  // write its data, or nullptr when the ring is full. Nothing is visible until commit.
  CaptureRecord* reserve(uint32_t caplen);
  void commit();  // publishes the last reserve()
  // Consumer: the next record, or nullptr; release() frees it.
  const CaptureRecord* peek();
  void release();
  uint32_t capacity() const { return size_; }

  // Written by the producer, read by anyone.
  Counter seen;      // frames the filter looked at
  Counter accepted;  // frames the filter accepted (those dropped included)
  Counter dropped;   // accepted frames that did not fit (a slow reader)

 private:
  uint32_t size_, mask_;
  std::unique_ptr<uint8_t[]> buf_;
  alignas(64) std::atomic<uint64_t> head_{0};  // producer
  uint64_t reserved_head_ = 0;                 // producer: head after the last reserve
  alignas(64) std::atomic<uint64_t> tail_{0};  // consumer
  uint64_t tail_next_ = 0;                     // consumer: tail after the peeked record
};

class Capture {
 public:
  // `program`: a compiled filter (pcap_compile; empty: every frame), copied.
  // `producers`: rings, one per worker index. `dirs`: bit mask of CaptureDir.
  Capture(const bpf_program* program, uint8_t dirs, uint32_t snaplen, uint32_t producers,
          uint32_t ring_bytes);
  Capture(const Capture&) = delete;
  Capture& operator=(const Capture&) = delete;

  bool wants(CaptureDir d) const { return dirs_ & uint8_t(d); }
  uint32_t snaplen() const { return snaplen_; }
  uint32_t producers() const { return uint32_t(rings_.size()); }
  CaptureRing& ring(uint32_t producer) { return *rings_[producer]; }

  // Worker: filters and copies a burst (producer: the worker's index, < producers()).
  // `vlan` is the port's VLAN setting (the tag a tx frame leaves with).
  void add_burst(CaptureDir d, Packet* const* pkts, uint32_t n, uint32_t producer,
                 const VlanConfig& vlan, uint64_t ts_ns);

 private:
  bool matches(const uint8_t* data, uint32_t wire_len, uint32_t buf_len) const;

  std::vector<bpf_insn> insns_;
  uint8_t dirs_;
  uint32_t snaplen_;
  std::vector<std::unique_ptr<CaptureRing>> rings_;
};

// The captures running on one port, immutable once published (Port::set_capture).
struct CaptureSet {
  std::vector<Capture*> captures;
  bool rx = false, tx = false;  // any capture wants the direction
};

// Worker: one call per burst and direction with a set (the per-burst branch is the
// caller's: `if (const CaptureSet* c = port.capture())`).
void capture_burst(const CaptureSet& set, CaptureDir d, Packet* const* pkts, uint32_t n,
                   uint32_t producer, const VlanConfig& vlan);

}  // namespace vnet::net
