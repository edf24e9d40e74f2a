// TapUring: ring set-up and probing, the armed multishot read over a provided-buffer ring,
// batched writes, and a teardown that cancels the read and waits for it (the kernel writes
// into the buffers until the read's last completion, so they are freed only after it).
#include "ports/tap_uring.h"

#include <sys/eventfd.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/log.h"

namespace vnet::ports {
namespace {

// IORING_OP_READ_MULTISHOT of the kernel's uapi io_uring.h (Linux 6.7); the liburing
// headers of Debian 12 stop at IORING_OP_SENDMSG_ZC (48). Probed before use.
constexpr uint8_t kOpReadMultishot = 49;
constexpr uint16_t kBufferGroup = 0;
constexpr uint64_t kReadTag = 1;
constexpr uint64_t kCancelTag = ~uint64_t(0);

size_t page_round(size_t n) {
  return (n + 4095) & ~size_t(4095);
}

void* map_anon(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

__kernel_timespec timeout_of(std::chrono::milliseconds ms) {
  __kernel_timespec ts{};
  ts.tv_sec = ms.count() / 1000;
  ts.tv_nsec = (ms.count() % 1000) * 1000000;
  return ts;
}

}  // namespace

TapUring::TapUring(int tap_fd, size_t buffer_len)
    : tap_fd_(tap_fd), buffer_len_(buffer_len), stride_((buffer_len + 63) & ~size_t(63)) {}

Result<std::unique_ptr<TapUring>> TapUring::open(int tap_fd, size_t buffer_len) {
  std::unique_ptr<TapUring> u(new TapUring(tap_fd, buffer_len));
  if (Status st = u->init(); !st) return st;
  return u;
}

Status TapUring::probe() {
  TapUring u(-1, 0);
  return u.init_rx_ring();
}

Status TapUring::init_rx_ring() {
  // Read ring: room in the CQ for a completion per buffer and then some.
  // COOP_TASKRUN with TASKRUN_FLAG: when a frame arrives the kernel does not interrupt a
  // worker that busy-polls in user space (an inter-processor interrupt, tens of
  // microseconds on a virtual machine); it sets IORING_SQ_TASKRUN and the worker enters
  // the kernel once to run the pending reads (reap_reads). A sleeping worker is still
  // woken. Kernels before 5.19 get the interrupting ring.
  io_uring_params p{};
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  p.cq_entries = 4 * kRxBuffers;
  int r = io_uring_queue_init_params(4, &rx_, &p);
  if (r == -EINVAL) {
    p = io_uring_params{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = 4 * kRxBuffers;
    r = io_uring_queue_init_params(4, &rx_, &p);
  } else if (r == 0) {
    taskrun_flag_ = true;
  }
  if (r < 0) {
    return Status::errorf("io_uring_setup: {}{}", std::strerror(-r),
                          -r == EPERM ? " (kernel.io_uring_disabled?)" : "");
  }
  rx_ok_ = true;
  io_uring_probe* probe = io_uring_get_probe_ring(&rx_);
  if (!probe) return Status::error("io_uring probe failed");
  const bool have = io_uring_opcode_supported(probe, kOpReadMultishot) &&
                    io_uring_opcode_supported(probe, IORING_OP_WRITEV) &&
                    io_uring_opcode_supported(probe, IORING_OP_ASYNC_CANCEL);
  io_uring_free_probe(probe);
  if (!have) return Status::error("kernel lacks IORING_OP_READ_MULTISHOT (Linux 6.7)");
  return Status::ok();
}

Status TapUring::init() {
  if (Status st = init_rx_ring(); !st) return st;

  // Write ring: a burst per submission; SUBMIT_ALL so that one bad SQE does not hold back
  // the rest of the burst.
  if (int r = io_uring_queue_init(kTxBatch, &tx_, IORING_SETUP_SUBMIT_ALL); r < 0) {
    return Status::errorf("io_uring_setup (writes): {}", std::strerror(-r));
  }
  tx_ok_ = true;

  buffers_bytes_ = page_round(stride_ * kRxBuffers);
  buffers_ = static_cast<uint8_t*>(map_anon(buffers_bytes_));
  br_bytes_ = page_round(sizeof(io_uring_buf) * kRxBuffers);
  br_ = static_cast<io_uring_buf_ring*>(map_anon(br_bytes_));
  if (!buffers_ || !br_) return Status::errorf("mmap receive buffers: {}", std::strerror(errno));
  io_uring_buf_ring_init(br_);
  const int mask = io_uring_buf_ring_mask(kRxBuffers);
  for (uint32_t i = 0; i < kRxBuffers; ++i) {
    io_uring_buf_ring_add(br_, buffers_ + i * stride_, unsigned(buffer_len_), uint16_t(i), mask,
                          int(i));
  }
  io_uring_buf_ring_advance(br_, kRxBuffers);
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(br_);
  reg.ring_entries = kRxBuffers;
  reg.bgid = kBufferGroup;
  if (int r = io_uring_register_buf_ring(&rx_, &reg, 0); r < 0) {
    return Status::errorf("IORING_REGISTER_PBUF_RING: {}", std::strerror(-r));
  }
  br_registered_ = true;

  event_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_fd_) return Status::errorf("eventfd: {}", std::strerror(errno));
  if (int r = io_uring_register_eventfd(&rx_, event_fd_.get()); r < 0) {
    return Status::errorf("IORING_REGISTER_EVENTFD: {}", std::strerror(-r));
  }
  return Status::ok();
}

TapUring::~TapUring() {
  bool buffers_free = true;
  if (rx_ok_) {
    if (armed_) cancel_read();
    // A read the kernel could not be made to finish may still write into the buffers:
    // keep them (a leak, logged) rather than let it write into freed memory.
    buffers_free = !armed_;
    io_uring_queue_exit(&rx_);
  }
  if (tx_ok_) io_uring_queue_exit(&tx_);
  if (buffers_ && buffers_free) ::munmap(buffers_, buffers_bytes_);
  if (br_ && buffers_free) ::munmap(br_, br_bytes_);
}

void TapUring::cancel_read() {
  io_uring_sqe* sqe = io_uring_get_sqe(&rx_);
  if (!sqe) return;
  io_uring_prep_cancel64(sqe, kReadTag, 0);
  io_uring_sqe_set_data64(sqe, kCancelTag);
  io_uring_submit(&rx_);
  // The read's last completion (no IORING_CQE_F_MORE) ends it; frames read meanwhile are
  // dropped with the port.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (armed_ && std::chrono::steady_clock::now() < deadline) {
    __kernel_timespec ts = timeout_of(std::chrono::milliseconds(100));
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe_timeout(&rx_, &cqe, &ts) != 0 || !cqe) continue;
    if (cqe->user_data == kReadTag && !(cqe->flags & IORING_CQE_F_MORE)) armed_ = false;
    io_uring_cqe_seen(&rx_, cqe);
  }
  if (armed_) spdlog::error("TAP io_uring: the armed read did not end; keeping its buffers");
}

bool TapUring::task_work_pending() const {
  return taskrun_flag_ &&
         (__atomic_load_n(rx_.sq.kflags, __ATOMIC_RELAXED) & IORING_SQ_TASKRUN) != 0;
}

uint32_t TapUring::reap_reads(ReadDone* out, uint32_t max) {
  // Reads the kernel has queued for this task: one system call runs them all.
  if (task_work_pending()) {
    enters_.add();
    io_uring_get_events(&rx_);
  }
  uint32_t n = 0, seen = 0;
  unsigned head;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&rx_, head, cqe) {
    if (n == max) break;
    ++seen;
    if (cqe->user_data != kReadTag) continue;  // a cancel's own completion
    if (!(cqe->flags & IORING_CQE_F_MORE)) armed_ = false;
    const bool has = cqe->flags & IORING_CQE_F_BUFFER;
    out[n++] = {cqe->res, has, uint16_t(has ? cqe->flags >> IORING_CQE_BUFFER_SHIFT : 0)};
  }
  io_uring_cq_advance(&rx_, seen);
  return n;
}

void TapUring::recycle(const ReadDone* done, uint32_t n) {
  const int mask = io_uring_buf_ring_mask(kRxBuffers);
  int k = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (!done[i].has_buffer || done[i].bid >= kRxBuffers) continue;
    io_uring_buf_ring_add(br_, buffers_ + size_t(done[i].bid) * stride_, unsigned(buffer_len_),
                          done[i].bid, mask, k++);
  }
  if (k) io_uring_buf_ring_advance(br_, k);
}

void TapUring::hold(bool on) {
  held_ = on;
  if (!on || !armed_) return;
  io_uring_sqe* sqe = io_uring_get_sqe(&rx_);
  if (!sqe) return;
  io_uring_prep_cancel64(sqe, kReadTag, 0);
  io_uring_sqe_set_data64(sqe, kCancelTag);
  enters_.add();
  io_uring_submit(&rx_);
}

int TapUring::arm() {
  if (armed_ || held_) return 0;
  io_uring_sqe* sqe = io_uring_get_sqe(&rx_);
  if (!sqe) return EBUSY;
  // Length 0: each read takes a whole provided buffer; the offset is unused on a TAP.
  io_uring_prep_rw(kOpReadMultishot, sqe, tap_fd_, nullptr, 0, 0);
  sqe->buf_group = kBufferGroup;
  sqe->flags |= IOSQE_BUFFER_SELECT;
  io_uring_sqe_set_data64(sqe, kReadTag);
  enters_.add();
  int r = io_uring_submit(&rx_);
  if (r < 0) return -r;
  armed_ = true;
  return 0;
}

void TapUring::set_wakeups(bool on) {
  io_uring_cq_eventfd_toggle(&rx_, on);
  // The flag store must be visible before we look at the CQ tail (the kernel stores the
  // tail, then reads the flag).
  if (on) std::atomic_thread_fence(std::memory_order_seq_cst);
}

void TapUring::write_batch(const iovec* const* iovs, const unsigned* iovcnt, uint32_t n, int* res) {
  io_uring_sqe* sqes[kTxBatch];
  uint32_t queued = 0;
  for (; queued < n && queued < kTxBatch; ++queued) {
    io_uring_sqe* sqe = io_uring_get_sqe(&tx_);
    if (!sqe) break;
    io_uring_prep_writev(sqe, tap_fd_, iovs[queued], iovcnt[queued], 0);
    io_uring_sqe_set_data64(sqe, queued);
    sqes[queued] = sqe;
    res[queued] = -EINPROGRESS;
  }
  for (uint32_t i = queued; i < n; ++i) res[i] = -ENOBUFS;
  // The kernel takes SQEs in order; retry what it did not take (a full CQ, EINTR).
  uint32_t submitted = 0;
  for (int tries = 0; submitted < queued && tries < 4; ++tries) {
    enters_.add();
    int r = io_uring_submit(&tx_);
    if (r > 0) submitted += uint32_t(r);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      static RateLimit rl;
      VNET_LOG_RL(rl, spdlog::level::warn, "TAP io_uring: submit: {}", std::strerror(-r));
      break;
    }
  }
  // An SQE left in the ring would go out with the next submission, long after the frame it
  // points to is gone: make it a no-op and report the frame as not sent.
  for (uint32_t i = submitted; i < queued; ++i) {
    io_uring_prep_nop(sqes[i]);
    io_uring_sqe_set_data64(sqes[i], kCancelTag);
    res[i] = -EAGAIN;
  }
  // TAP writes complete during the submission (the kernel's write path does not wait on
  // a non-blocking TAP); wait for any that did not, cancelling them after a second.
  uint32_t outstanding = submitted;
  bool cancelled = false;
  const auto cancel_at = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (outstanding > 0) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_peek_cqe(&tx_, &cqe) != 0 || !cqe) {
      __kernel_timespec ts = timeout_of(std::chrono::milliseconds(100));
      enters_.add();
      if (io_uring_wait_cqe_timeout(&tx_, &cqe, &ts) != 0 || !cqe) {
        if (!cancelled && std::chrono::steady_clock::now() > cancel_at) {
          if (io_uring_sqe* c = io_uring_get_sqe(&tx_)) {
            io_uring_prep_cancel64(c, 0, IORING_ASYNC_CANCEL_ANY);
            io_uring_sqe_set_data64(c, kCancelTag);
            enters_.add();
            cancelled = io_uring_submit(&tx_) > 0;
          }
        }
        continue;
      }
    }
    const uint64_t i = cqe->user_data;
    if (i < submitted && res[i] == -EINPROGRESS) {
      res[i] = cqe->res;
      --outstanding;
    }
    io_uring_cqe_seen(&tx_, cqe);
  }
}

}  // namespace vnet::ports
