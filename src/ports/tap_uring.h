// TapUring: the batched io_uring data path of a TAP port. Reads: one multishot READ
// (IORING_OP_READ_MULTISHOT, Linux 6.7) stays armed on the TAP fd and fills port-owned
// buffers taken from a provided-buffer ring, one completion per frame; the worker enters
// the kernel once per poll round that finds frames waiting (COOP_TASKRUN), however many. Writes:
// one submission (io_uring_enter) for a whole burst, one WRITEV per frame. An eventfd registered
// with the read ring wakes a sleeping worker when a frame arrives. Owned by TapPort, used only on
// its worker thread (the destructor excepted, which cancels the armed read and waits for it before
// freeing).
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/counter.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace vnet::ports {

class TapUring {
 public:
  // Frames the read side can hold before the worker takes them: the provided buffers.
  static constexpr uint32_t kRxBuffers = 64;
  // Frames in one write submission at most.
  static constexpr uint32_t kTxBatch = 32;

  // Sets up both rings, probes the kernel for what the data path needs and registers the
  // buffers and the eventfd. Does not arm the read (arm() does, on the worker, so that the
  // kernel runs the reads in the worker's context). The error says what is missing.
  static Result<std::unique_ptr<TapUring>> open(int tap_fd, size_t buffer_len);
  // Whether this kernel (and its io_uring settings) gives what open() needs.
  static Status probe();
  ~TapUring();
  TapUring(const TapUring&) = delete;
  TapUring& operator=(const TapUring&) = delete;

  // One completed read: res is the byte count or -errno; bid names the buffer, valid when
  // has_buffer (it must then go back through recycle()).
  struct ReadDone {
    int res;
    bool has_buffer;
    uint16_t bid;
  };
  // Takes up to `max` read completions off the ring, oldest first. No system call.
  uint32_t reap_reads(ReadDone* out, uint32_t max);
  const uint8_t* buffer(uint16_t bid) const { return buffers_ + size_t(bid) * stride_; }
  // Gives the buffers of out[0..n) back to the kernel (one release store).
  void recycle(const ReadDone* done, uint32_t n);
  // Arms the multishot read if it is not (first call, or it ended: buffers ran out, an
  // error). 0 or an errno.
  int arm();
  bool armed() const { return armed_; }
  // Hot upgrade: cancels the armed read without waiting (what it read still comes through
  // reap_reads(), the end of the read too) and arms none until hold(false).
  void hold(bool on);
  // Held, the read ended and no completion waits.
  bool drained() const {
    return held_ && !armed_ && io_uring_cq_ready(&rx_) == 0 && !task_work_pending();
  }
  bool reads_pending() const { return io_uring_cq_ready(&rx_) > 0 || task_work_pending(); }

  // Writes frame i from iovs[i][0..iovcnt[i]) for i < n (n <= kTxBatch) in one submission
  // and waits until every write completed (the frames' memory is the caller's). res[i] gets
  // the byte count or -errno.
  void write_batch(const iovec* const* iovs, const unsigned* iovcnt, uint32_t n, int* res);

  int event_fd() const { return event_fd_.get(); }
  // While the worker polls it needs no eventfd signal; on before it sleeps.
  void set_wakeups(bool on);
  // io_uring_enter calls made (submissions and waits); read from any thread.
  uint64_t enters() const { return enters_.get(); }

 private:
  TapUring(int tap_fd, size_t buffer_len);
  Status init();
  Status init_rx_ring();
  void cancel_read();
  // Frames arrived whose reads wait for this task to enter the kernel (COOP_TASKRUN).
  bool task_work_pending() const;

  int tap_fd_;
  size_t buffer_len_, stride_;
  io_uring rx_{}, tx_{};
  bool rx_ok_ = false, tx_ok_ = false;
  io_uring_buf_ring* br_ = nullptr;
  size_t br_bytes_ = 0;
  uint8_t* buffers_ = nullptr;
  size_t buffers_bytes_ = 0;
  bool br_registered_ = false;
  bool armed_ = false;
  bool held_ = false;
  bool taskrun_flag_ = false;  // the read ring has COOP_TASKRUN | TASKRUN_FLAG
  UniqueFd event_fd_;
  Counter enters_;
};

}  // namespace vnet::ports
