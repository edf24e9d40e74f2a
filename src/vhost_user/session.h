// Session: one vhost-user connection, back-end role. Reads one message per
// on_readable() call, validates it against the table in message.h, applies it to the
// per-ring state and the Backend, and replies (GET_* replies, REPLY_ACK). Keeps the
// memory table and the per-ring state (num, addr, base, kick, err, enable) so that a
// ring starts once all of it is known. Runs on the control thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/counter.h"
#include "common/frontend_fd.h"
#include "common/log.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "memory/dirty_log.h"
#include "memory/guest_memory.h"
#include "vhost_user/backend.h"
#include "vhost_user/message.h"

namespace vnet::vhost_user {

struct SessionCounters {
  Counter messages;      // messages received (valid or not)
  Counter bad_messages;  // messages refused (framing, validation or handler error)
  Counter bad_fds;       // fds of the wrong kind (the session was closed for each)
};

class Session {
 public:
  // GET_MAX_MEM_SLOTS answer (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS).
  static constexpr uint32_t kMaxMemSlots = 509;
  // Rings a kick/call/err message can name (bits 0-7 of its payload).
  static constexpr uint32_t kMaxRings = 256;

  // `sock` is a connected stream socket (made non-blocking here).
  // `logs`: the port's log budget (common/log.h); nullptr: the session keeps its own.
  Session(UniqueFd sock, Backend& backend, std::string name, PortLogLimits* logs = nullptr);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();  // calls backend.reset()

  // Reads and handles at most one message. An error means the session must end (the
  // reason says why; "peer closed" when the front end went away).
  Status on_readable();

  int fd() const { return sock_.get(); }
  const std::string& name() const { return name_; }
  const SessionCounters& counters() const { return counters_; }
  // Negotiated state, for logs and tests.
  uint64_t acked_features() const { return acked_features_; }
  uint64_t acked_protocol_features() const { return protocol_features_; }
  uint8_t status() const { return status_; }
  std::shared_ptr<const memory::GuestMemory> memory() const { return mem_; }
  // The dirty log (SET_LOG_BASE) lost pages under vnetd (its file was shrunk).
  bool log_lost() const { return log_ && log_->lost(); }
  // True when the last on_readable() ended because the peer closed the connection.
  bool peer_closed() const { return peer_closed_; }

  // --- Hot upgrade (control/handover.h): the session moves to another vnetd. ---
  // Part of a message has been read: the session cannot move now (its bytes would be lost).
  bool in_message() const { return reader_.in_message(); }
  // Stops every started ring at the position it reached, without telling the front end:
  // first the transmitqs (odd rings, `odd`), then the receiveqs, so that a frame taken
  // from one is never dropped for want of the other. resume() starts them again (a
  // hand-over that failed).
  void suspend(bool odd);
  void resume();
  // The messages that rebuild this session's state in a new back end, as if the front end
  // had sent them (fds duplicated): `setup` (features, memory, log, ring sizes,
  // addresses, bases, call and err fds), then `start_rx` and `start_tx` (kick fds and
  // enables, which start the receiveqs and the transmitqs: a successor starts every
  // port's receiveqs before any transmitq). Only after suspend() of both halves, so that
  // the bases are current.
  struct Saved {
    std::vector<Message> setup, start_rx, start_tx;
  };
  Result<Saved> save() const;
  // Applies saved messages (another vnetd's, untrusted: each is validated and handled as
  // a front end's would be, without replies). The first failure ends the restore.
  Status restore(std::vector<Message>& msgs);

 private:
  struct Ring {
    uint32_t num = 0;
    bool has_num = false;
    VringAddr addr;
    bool has_addr = false;
    uint16_t base = 0;
    FrontendFd kick;        // our copy; the backend gets a dup
    bool kick_set = false;  // SET_VRING_KICK seen (fd or polling) since the last stop
    FrontendFd err;
    FrontendFd call;  // our copy of SET_VRING_CALL's fd (the backend has another)
    bool call_set = false;
    bool enabled = false;  // SET_VRING_ENABLE state
    bool started = false;
    bool suspended = false;  // stopped by suspend(), started again by resume()
  };
  // A reply under construction (GET_* messages).
  struct Reply {
    bool present = false;
    uint32_t size = 0;
    uint8_t data[16] = {};
    template <typename T>
    void set(const T& v) {
      static_assert(sizeof(T) <= sizeof(data));
      std::memcpy(data, &v, sizeof(T));
      size = sizeof(T);
      present = true;
    }
  };

  Status dispatch(Message& m);
  Status handle(Message& m, Reply& reply);
  Status check_ring(uint32_t index) const;
  // Fd `i` of `m` through the door (common/frontend_fd.h); a wrong kind makes the
  // message's failure end the session.
  Result<FrontendFd> adopt_fd(Message& m, size_t i, FdKind kind);
  Result<std::shared_ptr<memory::MappedRegion>> map_region(Message& m, size_t i,
                                                           const MemoryRegion& r);
  Status install_memory(memory::GuestMemory::RegionList regions);
  Status try_start(uint32_t index);
  // Stops a started ring (keeping the position it reached) and starts it again with
  // the current state.
  Status restart(uint32_t index);
  void reset_device_state();
  bool reply_ack() const { return protocol_features_ & protocol::kReplyAck; }

  Status on_set_features(uint64_t f);
  Status on_set_protocol_features(uint64_t f);
  Status on_set_mem_table(Message& m);
  Status on_add_mem_reg(Message& m);
  Status on_rem_mem_reg(const Message& m);
  Status on_set_vring_num(const VringState& s);
  Status on_set_vring_addr(const VringAddr& a);
  Status on_set_vring_base(const VringState& s);
  Result<uint16_t> on_get_vring_base(const VringState& s);
  Status on_set_vring_kick(Message& m);
  Status on_set_vring_call(Message& m);
  Status on_set_vring_err(Message& m);
  Status on_set_vring_enable(const VringState& s);
  Status on_set_log_base(Message& m);

  UniqueFd sock_;
  Backend& backend_;
  std::string name_;
  MessageReader reader_;
  SessionCounters counters_;
  std::unique_ptr<PortLogLimits> own_logs_;
  PortLogLimits& logs_;
  bool peer_closed_ = false;
  bool fatal_ = false;           // an fd of the wrong kind came: the session ends
  uint32_t sealed_regions_ = 0;  // of the last memory table, for its log line

  uint64_t acked_features_ = 0;
  uint64_t protocol_features_ = 0;
  bool owner_ = false;
  uint8_t status_ = 0;
  std::shared_ptr<const memory::GuestMemory> mem_;
  // The last SET_LOG_BASE's log (shared with the backend), for log_lost().
  std::shared_ptr<const memory::DirtyLog> log_;
  // For save(): the log's fd, size and offset; each mapped region's fd; NET_SET_MTU.
  FrontendFd log_fd_;
  uint64_t log_size_ = 0, log_offset_ = 0;
  std::vector<std::pair<const memory::MappedRegion*, FrontendFd>> region_fds_;
  uint32_t mtu_ = 0;
  // ADD_MEM_REG of a region identical to one already in the table (same guest address,
  // size, user address and offset) takes another reference instead of failing: a
  // multiqueue QEMU (7.2) sends the table once per queue pair, each pair's vhost device
  // adding and removing the same regions. REM_MEM_REG drops one reference; the region
  // goes when the last one does. Only regions with more than one reference are listed.
  struct RegionRef {
    uint64_t guest_phys_addr, memory_size, userspace_addr;
    uint32_t refs;
  };
  std::vector<RegionRef> region_refs_;
  std::vector<RegionRef>::iterator find_region_ref(const MemoryRegion& r);
  static constexpr uint32_t kMaxRegionRefs = 1024;
  std::vector<Ring> rings_;
};

}  // namespace vnet::vhost_user
