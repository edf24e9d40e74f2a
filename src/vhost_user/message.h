// vhost-user wire format (docs/interop/vhost-user.rst in qemu/qemu, "Message
// Specification"): the header, the payload layouts, the request codes, a validation
// table (payload size, file descriptor count, whether the request has a reply of its
// own) and the socket codec: an incremental reader that takes file descriptors with
// SCM_RIGHTS straight into UniqueFds, and a sender for requests and replies.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace vnet::vhost_user {

// Front-end requests ("Front-end message types"), named as in the spec.
enum class Request : uint32_t {
  NONE = 0,
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  CREATE_CRYPTO_SESSION = 26,
  CLOSE_CRYPTO_SESSION = 27,
  POSTCOPY_ADVISE = 28,
  POSTCOPY_LISTEN = 29,
  POSTCOPY_END = 30,
  GET_INFLIGHT_FD = 31,
  SET_INFLIGHT_FD = 32,
  GPU_SET_SOCKET = 33,
  RESET_DEVICE = 34,
  VRING_KICK = 35,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
};

// Header flags ("Header"): bits 0-1 version, bit 2 reply, bit 3 need_reply.
constexpr uint32_t kVersion = 0x1;
constexpr uint32_t kFlagVersionMask = 0x3;
constexpr uint32_t kFlagReply = 0x4;
constexpr uint32_t kFlagNeedReply = 0x8;

// Feature bit in GET_FEATURES / SET_FEATURES that enables the protocol features.
constexpr uint64_t kFeatureProtocolFeatures = 1ULL << 30;  // VHOST_USER_F_PROTOCOL_FEATURES

// Protocol features ("Protocol features").
namespace protocol {
constexpr uint64_t kMq = 1ULL << 0;
constexpr uint64_t kLogShmfd = 1ULL << 1;
constexpr uint64_t kRarp = 1ULL << 2;
constexpr uint64_t kReplyAck = 1ULL << 3;
constexpr uint64_t kMtu = 1ULL << 4;
constexpr uint64_t kBackendReq = 1ULL << 5;
constexpr uint64_t kConfig = 1ULL << 9;
constexpr uint64_t kResetDevice = 1ULL << 13;
constexpr uint64_t kInbandNotifications = 1ULL << 14;
constexpr uint64_t kConfigureMemSlots = 1ULL << 15;
constexpr uint64_t kStatus = 1ULL << 16;
}  // namespace protocol

// Limits of the message format.
constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxFds = 8;           // VHOST_MEMORY_BASELINE_NREGIONS / ancillary data
constexpr uint32_t kMaxMemRegions = 8;  // regions in one SET_MEM_TABLE
constexpr uint32_t kMaxPayload = 4096;  // larger than any payload of the spec: rejected
// Vring descriptor payload ("A vring descriptor index for split virtqueues"):
// bits 0-7 index, bit 8 "invalid FD" (no fd: polling / no notification).
constexpr uint64_t kVringIndexMask = 0xff;
constexpr uint64_t kVringNoFdFlag = 0x100;
// SET_VRING_ADDR flags bit 0: log the used ring at log_guest_addr.
constexpr uint32_t kVringFLog = 1u << 0;
// VHOST_F_LOG_ALL: a feature bit of the vhost protocol (not virtio): while negotiated,
// the back end marks the pages it writes in the dirty log.
constexpr uint64_t kFeatureLogAll = 1ULL << 26;

struct Header {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;
};
static_assert(sizeof(Header) == kHeaderSize);

// "A vring state description".
struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
};
static_assert(sizeof(VringState) == 8);

// "A vring address description" (same layout as struct vhost_vring_addr).
struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;  // bit 0: VHOST_VRING_F_LOG
  uint64_t desc_user_addr = 0;
  uint64_t used_user_addr = 0;
  uint64_t avail_user_addr = 0;
  uint64_t log_guest_addr = 0;
};
static_assert(sizeof(VringAddr) == 40);

// "Memory region description".
struct MemoryRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t mmap_offset = 0;
};
static_assert(sizeof(MemoryRegion) == 32);

// "Multiple Memory regions description": followed by nregions MemoryRegions.
struct MemoryTableHeader {
  uint32_t nregions = 0;
  uint32_t padding = 0;
};
static_assert(sizeof(MemoryTableHeader) == 8);

// "Single memory region description" (ADD_MEM_REG / REM_MEM_REG).
struct SingleMemoryRegion {
  uint64_t padding = 0;
  MemoryRegion region;
};
static_assert(sizeof(SingleMemoryRegion) == 40);

// One received message: header, payload bytes (exactly hdr.size) and the file
// descriptors that came with it, owned from the moment they arrived.
struct Message {
  Header hdr;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;

  Request request() const { return static_cast<Request>(hdr.request); }
  bool need_reply() const { return hdr.flags & kFlagNeedReply; }
  // The payload as a T; only after validate() checked the size.
  template <typename T>
  T as() const {
    static_assert(std::is_trivially_copyable_v<T>);
    T v{};
    std::memcpy(&v, payload.data(), std::min(sizeof(T), payload.size()));
    return v;
  }
  uint64_t u64() const { return as<uint64_t>(); }
  // Takes the first fd (invalid if none).
  UniqueFd take_fd() { return fds.empty() ? UniqueFd() : std::move(fds.front()); }
};

// What the validation table knows about a request.
struct RequestInfo {
  const char* name;
  uint32_t min_size;  // payload size bounds (equal when the size is exact)
  uint32_t max_size;
  uint8_t min_fds;  // number of fds allowed
  uint8_t max_fds;
  bool has_reply;  // the back end answers it (GET_*): no REPLY_ACK for it
};

// The table entry for `code`, or nullptr for an unknown request code.
const RequestInfo* request_info(uint32_t code);
// The spec name of `code` ("GET_FEATURES"), or "UNKNOWN".
const char* request_name(uint32_t code);

// Checks a received request against the validation table and the per-request
// layout rules (memory table count vs size vs fds, vring fd flag vs fd). Must pass
// before any handler looks at the message.
Status validate(const Message& m);

// Incremental reader of one message at a time from a stream socket. Uses
// non-blocking reads, so a front end that sends part of a message and stops does not
// block the caller: read() returns kNone and continues on the next call. File
// descriptors may come with any part of the message; at most kMaxFds in all.
class MessageReader {
 public:
  enum class Outcome { kMessage, kNone, kClosed };
  // kMessage: `out` holds a whole message. kNone: nothing (more) to read now.
  // kClosed: orderly end of stream between messages. An error (truncated message,
  // MSG_CTRUNC, unknown request code, oversized payload, bad flags) cannot be
  // recovered from: the stream is out of step; every fd received is closed.
  Result<Outcome> read(int fd, Message& out);
  // True while part of a message has been read.
  bool in_message() const { return got_ > 0; }

 private:
  void clear();
  uint8_t hdr_buf_[kHeaderSize] = {};
  size_t got_ = 0;  // bytes of header + payload read so far
  Message msg_;
};

// Sends one message (header + payload in one sendmsg with MSG_NOSIGNAL, fds as
// SCM_RIGHTS). Waits a bounded time if the socket buffer is full.
Status send_message(int fd, const Header& hdr, const void* payload, const int* fds = nullptr,
                    size_t nfds = 0);
// A request (front-end side: tests and tools) with flags = version | extra_flags.
Status send_request(int fd, Request req, const void* payload, uint32_t size,
                    const std::vector<int>& fds = {}, uint32_t extra_flags = 0);
// A reply to `request` with the reply flag.
Status send_reply(int fd, uint32_t request, const void* payload, uint32_t size);

// Reads one message, waiting at most timeout_ms for it to arrive in full (front-end
// side helper for tests and tools; the back end uses MessageReader on its loop).
Result<Message> recv_message_blocking(int fd, int timeout_ms);

}  // namespace vnet::vhost_user
