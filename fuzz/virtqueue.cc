// Fuzz target "virtqueue": the device side of a split virtqueue (src/virtio/device_queue)
// or, with configuration flag 0x80, of a packed one (src/virtio/packed_device_queue),
// and the virtio-net TX/RX paths over it (src/net/virtio_net_queue) against guest memory
// whose every byte, and every change of it during the run, the input chooses. For a
// packed ring the three ring addresses are the descriptor ring and the driver and
// device event suppression areas, and the base carries the wrap counter in bit 15. The
// top bit of the configuration's VLAN word (a VLAN id has 12) negotiates IN_ORDER (the
// packed ring then publishes a burst of completions as one used descriptor).
//
// Input: a 20-byte configuration (queue size, features, ring placement, region sizes and
// layout, offload caps), a count of operations and the operations (8 bytes each), then
// the initial contents of the guest memory (region 0, then region 1; zeros past the end).
// Each region is its own heap block of exactly its size, so any access outside guest
// memory is caught by AddressSanitizer.
//
// Operations: pop / push (of chains the harness holds) / publish / should_notify /
// enable_notifications / disable_notifications / available / tx_dequeue / rx_enqueue /
// guest writes (the driver changing rings under the device) / mark + rewind / stop and
// restart (GET_VRING_BASE + SET_VRING_BASE) / a new memory table.
//
// Invariants checked beyond "no crash": every chain pop() returns has its head in range
// and every piece inside a guest region, with lengths that add up; at the end, once the
// harness has completed what it held and the device has drained the ring, every chain
// made available since the queue (re)started is completed to the used ring (used index
// == last avail index == avail index, and used->idx in guest memory says so) unless the
// queue is broken(). (Packed: the device's used position equals its avail position.)
#include <sanitizer/asan_interface.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/log.h"
#include "fuzz_input.h"
#include "memory/guest_memory.h"
#include "net/drops.h"
#include "net/offload.h"
#include "net/packet.h"
#include "net/virtio_net_queue.h"
#include "net/vlan.h"
#include "virtio/device_queue.h"
#include "virtio/packed_device_queue.h"

namespace {

using vnet::fuzz::caps_from;

using namespace vnet;
using vnet::fuzz::FuzzInput;

constexpr uint32_t kMaxOps = 64;
constexpr uint32_t kBurstMax = 4;
constexpr uint32_t kMaxRegion = 16384;
constexpr uint32_t kMaxRxFrame = 2048;
constexpr size_t kMaxHeld = 512;

struct Region {
  uint8_t* host = nullptr;
  uint64_t size = 0, gpa = 0, uva = 0;
};

struct Guest {
  Region r[2];
  int n = 0;
  ~Guest() {
    for (auto& x : r) std::free(x.host);
  }
  void add(uint64_t size, uint64_t gpa, uint64_t uva) {
    Region& x = r[n++];
    void* p = nullptr;
    // Exactly `size` bytes (ASan's redzone starts right after), page-aligned like a
    // real mapping so that ring alignment in uva space is alignment in host space.
    if (posix_memalign(&p, 4096, size) != 0) std::abort();
    x.host = static_cast<uint8_t*>(p);
    std::memset(x.host, 0, size);
    x.size = size;
    x.gpa = gpa;
    x.uva = uva;
  }
  std::shared_ptr<const memory::GuestMemory> table() const {
    memory::GuestMemory::RegionList list;
    for (int i = 0; i < n; ++i)
      list.push_back(memory::MappedRegion::borrow({r[i].gpa, r[i].size, r[i].uva, 0}, r[i].host));
    auto gm = memory::GuestMemory::create(std::move(list));
    FUZZ_CHECK(gm.is_ok());
    return *gm;
  }
  // Host address of a front-end virtual address, or nullptr.
  uint8_t* uva_host(uint64_t uva, uint64_t len) const {
    for (int i = 0; i < n; ++i)
      if (uva >= r[i].uva && uva - r[i].uva <= r[i].size && len <= r[i].size - (uva - r[i].uva))
        return r[i].host + (uva - r[i].uva);
    return nullptr;
  }
  bool inside(const void* p, size_t len) const {
    auto a = reinterpret_cast<uintptr_t>(p);
    for (int i = 0; i < n; ++i) {
      auto b = reinterpret_cast<uintptr_t>(r[i].host);
      if (a >= b && a - b <= r[i].size && len <= r[i].size - (a - b)) return true;
    }
    return false;
  }
};

struct Held {
  uint16_t head;
  uint64_t in_len;
  uint64_t seq;  // pop number, for mark/rewind
};

struct Bufs {
  std::unique_ptr<net::Packet> store[kBurstMax];
  net::Packet* ptr[kBurstMax];
  Bufs() {
    for (uint32_t i = 0; i < kBurstMax; ++i) {
      store[i] = std::make_unique<net::Packet>();
      ptr[i] = store[i].get();
    }
  }
};

void check_chain(const virtio::Chain& c, const Guest& g, uint16_t qsize) {
  FUZZ_CHECK(c.head < qsize);
  FUZZ_CHECK(c.n_out + c.n_in <= virtio::Chain::kMaxSegs);
  uint64_t out = 0, in = 0;
  for (uint32_t i = 0; i < c.n_out + c.n_in; ++i) {
    FUZZ_CHECK(c.segs[i].iov_len > 0);
    FUZZ_CHECK(g.inside(c.segs[i].iov_base, c.segs[i].iov_len));
    (i < c.n_out ? out : in) += c.segs[i].iov_len;
  }
  FUZZ_CHECK(out == c.out_len && in == c.in_len);
}

template <class Q>
class Harness {
 public:
  Harness(Guest& g, virtio::QueueConfig cfg) : g_(g), cfg_(cfg) {}

  void start(std::shared_ptr<const memory::GuestMemory> mem, uint16_t base) {
    cfg_.avail_base = base;
    mark_valid_ = false;
    // A layout start() refuses is fine (the session refuses the ring); nothing to run.
    running_ = q_.start(std::move(mem), cfg_).is_ok();
    if (running_) FUZZ_CHECK(q_.started() && !q_.broken() && q_.last_avail_idx() == base);
  }

  void op(const uint8_t* o, Bufs& tx, Bufs& rx);
  void finish();

 private:
  void pop() {
    virtio::PopStatus st = q_.pop(c_);
    if (st != virtio::PopStatus::kOk) {
      FUZZ_CHECK(st == (q_.broken() ? virtio::PopStatus::kBroken : virtio::PopStatus::kEmpty));
      return;
    }
    check_chain(c_, g_, q_.size());
    if (held_.size() == kMaxHeld) {
      q_.push(c_.head, 0);
      return;
    }
    held_.push_back({c_.head, c_.in_len, seq_++});
  }
  void push_held(size_t i, uint32_t written) {
    Held h = held_[i];
    held_.erase(held_.begin() + long(i));
    if (mark_valid_ && h.seq < mark_seq_) mark_valid_ = false;  // rewinding would lose it
    q_.push(h.head, uint32_t(std::min<uint64_t>(written, h.in_len)));
  }
  void push_all() {
    while (!held_.empty()) push_held(0, 0);
  }
  void publish() {
    q_.publish();
    mark_valid_ = false;
  }

  Guest& g_;
  virtio::QueueConfig cfg_;
  Q q_;
  virtio::Chain c_;
  bool running_ = false;
  std::vector<Held> held_;
  uint64_t seq_ = 0;
  bool mark_valid_ = false;
  typename Q::Mark mark_{};
  uint64_t mark_seq_ = 0;
  net::DropCounters drops_;

 public:
  uint32_t hdr_len = 12;
  bool mergeable = false;
  net::OffloadCaps tx_caps, rx_caps;
  net::VlanConfig vlan;
};

template <class Q>
void Harness<Q>::op(const uint8_t* o, Bufs& tx, Bufs& rx) {
  const uint8_t code = o[0] % 16;
  const uint8_t a = o[1];
  uint16_t b;
  uint32_t c;
  std::memcpy(&b, o + 2, 2);
  std::memcpy(&c, o + 4, 4);
  if (code == 10 || code == 11) {  // the guest writes its memory under the device
    Region& r = g_.r[a % g_.n];
    const uint64_t len = code == 10 ? 2 : 4;
    if (r.size >= len) {
      const uint64_t off = b % (r.size - len + 1);
      std::memcpy(r.host + off, &c, len);
    }
    return;
  }
  if (code == 15) {  // a new memory table (same regions): the device restarts on it
    push_all();
    publish();
    const uint16_t at = q_.last_avail_idx();
    q_.stop();
    start(g_.table(), at);
    return;
  }
  if (!running_) return;
  switch (code) {
    case 0:
    case 1:
      pop();
      break;
    case 2:  // complete the oldest / newest / some held chain
      if (!held_.empty()) push_held(a % 2 ? held_.size() - 1 : b % held_.size(), c);
      break;
    case 3:
      publish();
      break;
    case 4:
      (void)q_.should_notify();
      break;
    case 5:
      (void)q_.enable_notifications();
      break;
    case 6:
      q_.disable_notifications();
      break;
    case 7:
      (void)q_.available();
      break;
    case 8: {  // guest TX
      const uint32_t max = 1 + a % kBurstMax;
      // Odd b: large frames stay in guest memory until complete_deferred() (the
      // chains are completed right after, as the port does after delivery).
      net::TxDeferred deferred;
      const uint32_t n = net::tx_dequeue(q_, c_, hdr_len, tx_caps, tx.ptr, max, drops_,
                                         b & 1 ? &deferred : nullptr);
      FUZZ_CHECK(n <= max);
      FUZZ_CHECK(deferred.n <= n);
      uint32_t external = 0;
      for (uint32_t i = 0; i < n; ++i) {
        net::Packet& p = *tx.ptr[i];
        FUZZ_CHECK(p.len >= net::kEthHdrLen && p.len <= net::kMaxFrame);
        FUZZ_CHECK(net::validate(p, tx_caps) == net::OffloadError::kOk);
        if (!p.local()) {
          ++external;
          uint64_t tail = 0;
          for (uint32_t k = 0; k < p.tail_n; ++k) tail += p.tail[k].iov_len;
          FUZZ_CHECK(p.head == net::kDirectHead && p.head + tail == p.len);
          net::materialize(p);  // reads every piece: ASan checks they are in guest memory
        }
      }
      FUZZ_CHECK(external == deferred.n);
      net::complete_deferred(q_, deferred);
      mark_valid_ = false;
      break;
    }
    case 9: {  // guest RX: frames of lengths from the operation
      const uint32_t n = 1 + a % kBurstMax;
      for (uint32_t i = 0; i < n; ++i) {
        net::Packet& p = *rx.ptr[i];
        p.len = net::kEthHdrLen + (uint32_t(b) * (i + 1) + c) % (kMaxRxFrame - net::kEthHdrLen);
        std::memset(p.data, int(0xa0 + i), p.len);
        p.vhdr = {};
        p.vhdr.flags = uint8_t(c >> (8 + i));
        p.vhdr.gso_type = uint8_t(c >> 24);
        p.vhdr.csum_start = uint16_t(b + i);
        p.vhdr.csum_offset = uint16_t(b >> 8);
        p.vhdr.gso_size = uint16_t(c);
        p.vlan = uint16_t((c >> 4) & 0xfff);
      }
      uint64_t bytes = 0;
      const uint32_t sent =
          net::rx_enqueue(q_, c_, hdr_len, mergeable, rx_caps, vlan, rx.ptr, n, drops_, &bytes);
      FUZZ_CHECK(sent <= n);
      mark_valid_ = false;
      break;
    }
    case 12:
      mark_ = q_.mark();
      mark_seq_ = seq_;
      mark_valid_ = true;
      break;
    case 13:
      // rewind() is only for "nothing published, nothing older pushed since mark()".
      if (mark_valid_) {
        q_.rewind(mark_);
        held_.erase(std::remove_if(held_.begin(), held_.end(),
                                   [&](const Held& h) { return h.seq >= mark_seq_; }),
                    held_.end());
        mark_valid_ = false;
      }
      break;
    case 14: {  // GET_VRING_BASE then SET_VRING_BASE (the front end's base, or ours)
      push_all();
      publish();
      const uint16_t at = q_.last_avail_idx();
      auto mem = g_.table();
      q_.stop();
      FUZZ_CHECK(q_.last_avail_idx() == at && !q_.started());
      start(std::move(mem), a & 1 ? b : at);
      break;
    }
    default:
      break;
  }
}

template <class Q>
void Harness<Q>::finish() {
  if (!running_) return;
  push_all();
  // The device drains what is left, as a worker would. (A guest that lays its used ring
  // over its own avail index can make this go on; that only ends the check.)
  bool drained = false;
  for (uint32_t i = 0; i < 4 * 32768; ++i) {
    virtio::PopStatus st = q_.pop(c_);
    if (st != virtio::PopStatus::kOk) {
      drained = true;
      break;
    }
    check_chain(c_, g_, q_.size());
    q_.push(c_.head, 0);
  }
  q_.publish();
  if (q_.broken() || !drained) return;
  // Every chain made available since the (re)start is completed: none is left, and
  // every chain popped (good or bad) was pushed and published.
  const uint16_t avail = q_.available();
  if (q_.broken()) return;
  FUZZ_CHECK(avail == 0);
  FUZZ_CHECK(q_.mark().used_idx == q_.last_avail_idx());
  if constexpr (std::is_same_v<Q, virtio::PackedDeviceQueue>) return;
  const uint8_t* used = g_.uva_host(cfg_.used_addr, 4);
  FUZZ_CHECK(used != nullptr);  // start() checked the whole ring
  uint16_t used_idx;
  std::memcpy(&used_idx, used + 2, 2);
  FUZZ_CHECK(used_idx == q_.mark().used_idx);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Bufs tx, rx;
  FuzzInput in(data, size);
  // Configuration (20 bytes).
  const uint8_t size_byte = in.u8();
  const uint8_t flags = in.u8();
  // Split: a power of 2, 1..256 (2.7). Packed: any size, 1..256 (2.8 has no such rule).
  const uint16_t qsize = (flags & 0x80) ? uint16_t(1 + size_byte) : uint16_t(1u << (size_byte % 9));
  const uint16_t base = in.u16();
  const uint16_t desc_off = in.u16(), avail_off = in.u16(), used_off = in.u16();
  const uint16_t size0 = in.u16(), size1 = in.u16();
  const uint8_t tx_caps = in.u8(), rx_caps = in.u8();
  const uint16_t vlan = in.u16();
  const uint8_t nops = in.u8() % (kMaxOps + 1);
  std::vector<uint8_t> ops(8u * nops);
  in.bytes(ops.data(), ops.size());

  Guest g;
  const bool two = flags & 4;
  const uint64_t s0 = 16 + size0 % (kMaxRegion - 15), s1 = 16 + size1 % (kMaxRegion - 15);
  g.add(s0, 0x100000, 0x7f0000000000);
  // Region 1 right after region 0 in guest physical space (a buffer may span both)
  // or far away.
  if (two) g.add(s1, flags & 8 ? 0x100000 + s0 : 0x40000000, 0x7f1000000000);
  for (int i = 0; i < g.n; ++i) in.bytes(g.r[i].host, g.r[i].size);

  auto ring_addr = [&](uint16_t v) {
    const Region& r = g.r[(v >> 15) % g.n];
    return r.uva + (v & 0x7fff) % (r.size + 64);  // a little past the end sometimes
  };
  virtio::QueueConfig cfg;
  cfg.size = qsize;
  cfg.event_idx = flags & 1;
  cfg.indirect = flags & 2;
  cfg.in_order = vlan & 0x8000;
  cfg.desc_addr = ring_addr(desc_off);
  cfg.avail_addr = ring_addr(avail_off);
  cfg.used_addr = ring_addr(used_off);

  auto run = [&](auto& h) {
    h.mergeable = flags & 16;
    h.hdr_len = flags & 32 ? 12 : 10;
    h.tx_caps = caps_from(tx_caps);
    h.rx_caps = caps_from(rx_caps);
    if (flags & 64) {
      h.vlan.trunk = true;
      h.vlan.native = vlan & 0xfff;
      h.vlan.allowed.set();
    }
    h.start(g.table(), base);
    for (uint32_t i = 0; i < nops; ++i) h.op(ops.data() + 8 * i, tx, rx);
    h.finish();
  };
  if (flags & 128) {
    cfg.packed = true;
    Harness<virtio::PackedDeviceQueue> h(g, cfg);
    run(h);
  } else {
    Harness<virtio::DeviceQueue> h(g, cfg);
    run(h);
  }
  return 0;
}
