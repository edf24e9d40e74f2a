// Helpers for the vhost-user unit tests: a fake Backend that records what the
// session asks of it, memfd-backed guest memory, fd counting, a front end over a
// socketpair driving a Session one message at a time.
#pragma once

#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <dirent.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vhost_user/backend.h"
#include "vhost_user/message.h"
#include "vhost_user/session.h"

namespace vnet::vhost_user::testing {

constexpr uint64_t bit(unsigned b) {
  return 1ULL << b;
}

class FakeBackend : public Backend {
 public:
  struct Started {
    virtio::QueueConfig cfg;
    bool kick_valid = false;
  };

  uint64_t features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) |
                      bit(VIRTIO_RING_F_INDIRECT_DESC) | kFeatureProtocolFeatures;
  uint64_t proto = protocol::kMq | protocol::kReplyAck | protocol::kConfigureMemSlots |
                   protocol::kStatus | protocol::kMtu;
  uint32_t queue_pairs = 1;
  uint16_t stop_index = 0;
  bool fail_start = false;

  // What the session did.
  uint64_t acked = 0;
  int set_features_calls = 0, set_memory_calls = 0, start_calls = 0, stop_calls = 0,
      set_call_calls = 0, resets = 0;
  uint32_t mtu = 0;
  int set_log_calls = 0;
  std::shared_ptr<memory::DirtyLog> log;
  std::vector<uint8_t> rarp;  // the last SEND_RARP's MAC
  std::shared_ptr<const memory::GuestMemory> memory;
  std::map<uint32_t, Started> started;
  std::map<uint32_t, FrontendFd> kicks, calls;
  std::map<uint32_t, bool> enabled;

  uint64_t device_features() const override { return features; }
  uint64_t protocol_features() const override { return proto; }
  uint32_t max_queue_pairs() const override { return queue_pairs; }
  Status set_features(uint64_t f) override {
    ++set_features_calls;
    acked = f;
    return Status::ok();
  }
  void set_memory(std::shared_ptr<const memory::GuestMemory> mem) override {
    ++set_memory_calls;
    memory = std::move(mem);
  }
  Status start_queue(uint32_t index, const virtio::QueueConfig& cfg, FrontendFd kick) override {
    ++start_calls;
    if (fail_start) return Status::error("fake start failure");
    started[index] = {cfg, kick.valid()};
    kicks[index] = std::move(kick);
    return Status::ok();
  }
  uint16_t stop_queue(uint32_t index) override {
    ++stop_calls;
    started.erase(index);
    kicks.erase(index);
    return stop_index;
  }
  Status set_call(uint32_t index, FrontendFd call) override {
    ++set_call_calls;
    calls[index] = std::move(call);
    return Status::ok();
  }
  void set_enabled(uint32_t index, bool e) override { enabled[index] = e; }
  Status set_mtu(uint32_t m) override {
    mtu = m;
    return Status::ok();
  }
  Status set_log(std::shared_ptr<memory::DirtyLog> l) override {
    ++set_log_calls;
    log = std::move(l);
    return Status::ok();
  }
  Status send_rarp(const uint8_t (&mac)[6]) override {
    rarp.assign(mac, mac + 6);
    return Status::ok();
  }
  void reset() override {
    ++resets;
    memory.reset();
    log.reset();
    started.clear();
    kicks.clear();
    calls.clear();
    enabled.clear();
    acked = 0;
  }
};

// Open file descriptors of this process.
inline size_t count_fds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n - 1;  // the directory stream's own fd
}

// Mappings of this process (lines of /proc/self/maps).
inline size_t count_maps() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  size_t n = 0;
  while (std::getline(f, line)) ++n;
  return n;
}

inline UniqueFd make_memfd(uint64_t size) {
  UniqueFd fd(memfd_create("vnet-vhu-test", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(ftruncate(fd.get(), off_t(size)), 0);
  return fd;
}

inline UniqueFd make_eventfd() {
  UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  EXPECT_TRUE(fd.valid());
  return fd;
}

inline bool readable(int fd, int timeout_ms = 0) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1;
}

// A memory table payload (SET_MEM_TABLE) for `regions`.
inline std::vector<uint8_t> mem_table_payload(const std::vector<MemoryRegion>& regions) {
  std::vector<uint8_t> p(sizeof(MemoryTableHeader) + regions.size() * sizeof(MemoryRegion));
  MemoryTableHeader h{uint32_t(regions.size()), 0};
  std::memcpy(p.data(), &h, sizeof(h));
  if (!regions.empty())
    std::memcpy(p.data() + sizeof(h), regions.data(), regions.size() * sizeof(MemoryRegion));
  return p;
}

// A front end on one end of a socketpair, a Session on the other.
class FrontEnd {
 public:
  explicit FrontEnd(FakeBackend& backend, PortLogLimits* logs = nullptr) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    fe_.reset(sv[0]);
    session = std::make_unique<Session>(UniqueFd(sv[1]), backend, "test", logs);
  }

  int fd() const { return fe_.get(); }

  // Sends a request and lets the session handle it.
  Status send(Request r, const void* payload, uint32_t size, const std::vector<int>& fds = {},
              uint32_t flags = 0) {
    Status st = send_request(fe_.get(), r, payload, size, fds, flags);
    EXPECT_TRUE(st) << st.message();
    return session->on_readable();
  }
  Status send0(Request r, uint32_t flags = 0) { return send(r, nullptr, 0, {}, flags); }
  Status send_u64(Request r, uint64_t v, const std::vector<int>& fds = {}, uint32_t flags = 0) {
    return send(r, &v, sizeof(v), fds, flags);
  }
  Status send_state(Request r, uint32_t index, uint32_t num, uint32_t flags = 0) {
    VringState s{index, num};
    return send(r, &s, sizeof(s), {}, flags);
  }
  Status send_addr(uint32_t index, uint64_t desc, uint64_t used, uint64_t avail,
                   uint32_t flags = 0) {
    VringAddr a{index, 0, desc, used, avail, 0};
    return send(Request::SET_VRING_ADDR, &a, sizeof(a), {}, flags);
  }
  Status send_mem_table(const std::vector<MemoryRegion>& regions, const std::vector<int>& fds,
                        uint32_t flags = 0) {
    auto p = mem_table_payload(regions);
    return send(Request::SET_MEM_TABLE, p.data(), uint32_t(p.size()), fds, flags);
  }
  Status send_single_region(Request r, const MemoryRegion& reg, const std::vector<int>& fds,
                            uint32_t flags = 0) {
    SingleMemoryRegion s{0, reg};
    return send(r, &s, sizeof(s), fds, flags);
  }

  // The reply the session sent (must be there already).
  Message reply(Request expected) {
    EXPECT_TRUE(readable(fe_.get())) << "no reply to " << request_name(uint32_t(expected));
    auto m = recv_message_blocking(fe_.get(), 1000);
    EXPECT_TRUE(m.is_ok()) << m.message();
    if (!m) return Message{};
    EXPECT_EQ(m->hdr.request, uint32_t(expected));
    EXPECT_EQ(m->hdr.flags, kVersion | kFlagReply);
    return std::move(*m);
  }
  uint64_t reply_u64(Request expected) {
    Message m = reply(expected);
    EXPECT_EQ(m.hdr.size, 8u);
    return m.u64();
  }
  // GET_* round trip.
  uint64_t get_u64(Request r) {
    Status st = send0(r);
    EXPECT_TRUE(st) << st.message();
    return reply_u64(r);
  }
  bool reply_pending() const { return readable(fe_.get()); }

  std::unique_ptr<Session> session;

 private:
  UniqueFd fe_;
};

}  // namespace vnet::vhost_user::testing
