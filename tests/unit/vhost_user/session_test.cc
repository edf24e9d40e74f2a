// Session: a front end over a socketpair drives the session with real memfd-backed
// memory regions and eventfds; a fake Backend records what the session asked of it.
#include <fcntl.h>
#include <gtest/gtest.h>

#include "vhost_user/session.h"
#include "vhu_test_util.h"

namespace vnet::vhost_user {
namespace {

using testing::bit;
using testing::count_fds;
using testing::count_maps;
using testing::FakeBackend;
using testing::FrontEnd;
using testing::make_eventfd;
using testing::make_memfd;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kUva0 = 0x7f0000000000ULL;
constexpr uint64_t kUva1 = 0x7f0010000000ULL;

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() : fe(backend) {}

  // Negotiates features (with PROTOCOL_FEATURES) and the given protocol features.
  void negotiate(uint64_t proto) {
    uint64_t f = fe.get_u64(Request::GET_FEATURES);
    ASSERT_EQ(f, backend.features);
    ASSERT_EQ(fe.get_u64(Request::GET_PROTOCOL_FEATURES), backend.proto);
    ASSERT_TRUE(fe.send_u64(Request::SET_PROTOCOL_FEATURES, proto));
    ASSERT_TRUE(fe.send0(Request::SET_OWNER));
    ASSERT_TRUE(fe.send_u64(Request::SET_FEATURES, bit(VIRTIO_F_VERSION_1) |
                                                       bit(VIRTIO_RING_F_EVENT_IDX) |
                                                       kFeatureProtocolFeatures));
  }
  // A one-region table (1 MiB at gpa 0).
  Status set_one_region(uint32_t flags = 0) {
    UniqueFd m = make_memfd(kMiB);
    return fe.send_mem_table({{0, kMiB, kUva0, 0}}, {m.get()}, flags);
  }
  // SET_VRING_NUM/BASE/ADDR and KICK for ring `i`.
  void setup_ring(uint32_t i, uint32_t num, uint32_t base, bool with_kick = true) {
    uint64_t off = 0x10000 * (i + 1);
    ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, i, num));
    ASSERT_TRUE(fe.send_state(Request::SET_VRING_BASE, i, base));
    ASSERT_TRUE(fe.send_addr(i, kUva0 + off, kUva0 + off + 0x2000, kUva0 + off + 0x1000));
    if (with_kick) {
      UniqueFd k = make_eventfd();
      ASSERT_TRUE(fe.send_u64(Request::SET_VRING_KICK, i, {k.get()}));
    }
  }
  uint64_t ack(Request r) { return fe.reply_u64(r); }
  // A new connection (the old session ends and resets the backend).
  void reconnect() {
    fe.session.reset();
    fe = FrontEnd(backend);
  }

  FakeBackend backend;
  FrontEnd fe;
};

TEST_F(SessionTest, QemuLikeNegotiationStartsQueues) {
  EXPECT_EQ(fe.get_u64(Request::GET_FEATURES), backend.features);
  EXPECT_EQ(fe.get_u64(Request::GET_PROTOCOL_FEATURES), backend.proto);
  uint64_t proto = protocol::kMq | protocol::kReplyAck | protocol::kConfigureMemSlots;
  ASSERT_TRUE(fe.send_u64(Request::SET_PROTOCOL_FEATURES, proto));
  EXPECT_FALSE(fe.reply_pending());
  EXPECT_EQ(fe.session->acked_protocol_features(), proto);
  EXPECT_EQ(fe.get_u64(Request::GET_QUEUE_NUM), 1u);
  EXPECT_EQ(fe.get_u64(Request::GET_MAX_MEM_SLOTS), 509u);
  ASSERT_TRUE(fe.send0(Request::SET_OWNER, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_OWNER), 0u);
  for (uint32_t i = 0; i < 2; ++i) {
    UniqueFd call = make_eventfd();
    ASSERT_TRUE(fe.send_u64(Request::SET_VRING_CALL, i, {call.get()}, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_CALL), 0u);
    EXPECT_TRUE(backend.calls.at(i).valid());
  }
  uint64_t features =
      bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | kFeatureProtocolFeatures;
  ASSERT_TRUE(fe.send_u64(Request::SET_FEATURES, features, {}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_FEATURES), 0u);
  EXPECT_EQ(backend.acked, features);

  // Two regions, the second at a non-zero file offset.
  UniqueFd m0 = make_memfd(kMiB), m1 = make_memfd(kMiB + 4096);
  ASSERT_TRUE(fe.send_mem_table({{0, kMiB, kUva0, 0}, {0x100000000ULL, kMiB, kUva1, 4096}},
                                {m0.get(), m1.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_MEM_TABLE), 0u);
  ASSERT_TRUE(backend.memory);
  EXPECT_EQ(backend.memory->size(), 2u);
  // The mapping is the memfd: bytes written through one are seen through the other.
  uint8_t* host = backend.memory->gpa_to_host(0x100000000ULL + 10, 1);
  ASSERT_NE(host, nullptr);
  *host = 0x5a;
  uint8_t b = 0;
  ASSERT_EQ(pread(m1.get(), &b, 1, 4096 + 10), 1);
  EXPECT_EQ(b, 0x5a);

  for (uint32_t i = 0; i < 2; ++i) {
    uint64_t off = 0x10000 * (i + 1);
    ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, i, 256, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_NUM), 0u);
    ASSERT_TRUE(fe.send_state(Request::SET_VRING_BASE, i, 7, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_BASE), 0u);
    ASSERT_TRUE(
        fe.send_addr(i, kUva0 + off, kUva0 + off + 0x2000, kUva0 + off + 0x1000, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_ADDR), 0u);
    EXPECT_EQ(backend.started.count(i), 0u);  // not before the kick
    UniqueFd kick = make_eventfd();
    ASSERT_TRUE(fe.send_u64(Request::SET_VRING_KICK, i, {kick.get()}, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_KICK), 0u);
    ASSERT_EQ(backend.started.count(i), 1u);
    const auto& s = backend.started.at(i);
    EXPECT_EQ(s.cfg.size, 256);
    EXPECT_EQ(s.cfg.desc_addr, kUva0 + off);
    EXPECT_EQ(s.cfg.avail_addr, kUva0 + off + 0x1000);
    EXPECT_EQ(s.cfg.used_addr, kUva0 + off + 0x2000);
    EXPECT_EQ(s.cfg.avail_base, 7);
    EXPECT_TRUE(s.cfg.event_idx);
    EXPECT_FALSE(s.cfg.indirect);
    EXPECT_TRUE(s.kick_valid);
    // The backend's kick fd is the same eventfd.
    uint64_t one = 1, v = 0;
    ASSERT_EQ(write(kick.get(), &one, 8), 8);
    ASSERT_EQ(read(backend.kicks.at(i).watch_fd(), &v, 8), 8);
    EXPECT_EQ(v, 1u);
    // PROTOCOL_FEATURES negotiated: the ring waits for SET_VRING_ENABLE.
    EXPECT_EQ(backend.enabled.count(i), 0u);
    ASSERT_TRUE(fe.send_state(Request::SET_VRING_ENABLE, i, 1, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_ENABLE), 0u);
    EXPECT_TRUE(backend.enabled.at(i));
  }
  EXPECT_EQ(backend.start_calls, 2);

  // GET_VRING_BASE stops the ring and answers the backend's index.
  backend.stop_index = 42;
  ASSERT_TRUE(fe.send_state(Request::GET_VRING_BASE, 0, 0, kFlagNeedReply));
  Message r = fe.reply(Request::GET_VRING_BASE);
  ASSERT_EQ(r.hdr.size, 8u);
  EXPECT_EQ(r.as<VringState>().index, 0u);
  EXPECT_EQ(r.as<VringState>().num, 42u);
  EXPECT_FALSE(fe.reply_pending());  // no REPLY_ACK on top of a real reply
  EXPECT_EQ(backend.started.count(0), 0u);
  // Stopped until the next kick, which restarts it where it stopped.
  ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, 0, 256));
  EXPECT_EQ(backend.started.count(0), 0u);
  UniqueFd kick = make_eventfd();
  ASSERT_TRUE(fe.send_u64(Request::SET_VRING_KICK, 0, {kick.get()}));
  ASSERT_EQ(backend.started.count(0), 1u);
  EXPECT_EQ(backend.started.at(0).cfg.avail_base, 42);

  EXPECT_EQ(fe.session->counters().messages.get(), 23u);
  EXPECT_EQ(fe.session->counters().bad_messages.get(), 0u);
  fe.session.reset();
  EXPECT_EQ(backend.resets, 1);
}

TEST_F(SessionTest, WithoutProtocolFeaturesRingsStartEnabled) {
  ASSERT_TRUE(fe.send_u64(Request::SET_FEATURES,
                          bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_INDIRECT_DESC)));
  ASSERT_TRUE(set_one_region());
  setup_ring(1, 1024, 0);
  ASSERT_EQ(backend.started.count(1), 1u);
  EXPECT_TRUE(backend.started.at(1).cfg.indirect);
  EXPECT_FALSE(backend.started.at(1).cfg.event_idx);
  EXPECT_TRUE(backend.enabled.at(1));
}

TEST_F(SessionTest, PollingModeKickWithoutFd) {
  negotiate(0);
  ASSERT_TRUE(set_one_region());
  setup_ring(0, 256, 0, false);
  ASSERT_TRUE(fe.send_u64(Request::SET_VRING_KICK, 0 | kVringNoFdFlag));
  ASSERT_EQ(backend.started.count(0), 1u);
  EXPECT_FALSE(backend.started.at(0).kick_valid);
  // No call fd either: the backend gets an invalid fd.
  ASSERT_TRUE(fe.send_u64(Request::SET_VRING_CALL, 0 | kVringNoFdFlag));
  EXPECT_FALSE(backend.calls.at(0).valid());
}

TEST_F(SessionTest, KickBeforeMemoryStartsWhenMemoryArrives) {
  negotiate(0);
  setup_ring(0, 256, 3);
  EXPECT_EQ(backend.started.count(0), 0u);
  ASSERT_TRUE(set_one_region());
  ASSERT_EQ(backend.started.count(0), 1u);
  EXPECT_EQ(backend.started.at(0).cfg.avail_base, 3);
}

TEST_F(SessionTest, AddressChangeRestartsAtTheCurrentIndex) {
  negotiate(0);
  ASSERT_TRUE(set_one_region());
  setup_ring(0, 256, 0);
  backend.stop_index = 9;
  ASSERT_TRUE(fe.send_addr(0, kUva0 + 0x40000, kUva0 + 0x42000, kUva0 + 0x41000));
  ASSERT_EQ(backend.started.count(0), 1u);
  EXPECT_EQ(backend.started.at(0).cfg.desc_addr, kUva0 + 0x40000);
  EXPECT_EQ(backend.started.at(0).cfg.avail_base, 9);
  EXPECT_TRUE(backend.started.at(0).kick_valid);  // the kick fd survives the restart
  int starts = backend.start_calls;
  // The same addresses again do not restart.
  ASSERT_TRUE(fe.send_addr(0, kUva0 + 0x40000, kUva0 + 0x42000, kUva0 + 0x41000));
  EXPECT_EQ(backend.start_calls, starts);
  // The log flag and address (QEMU turning migration logging on) reach the queue: a
  // restart at the index it reached.
  backend.stop_index = 11;
  VringAddr a{0, kVringFLog, kUva0 + 0x40000, kUva0 + 0x42000, kUva0 + 0x41000, 0x41000};
  ASSERT_TRUE(fe.send(Request::SET_VRING_ADDR, &a, sizeof(a)));
  EXPECT_EQ(backend.start_calls, starts + 1);
  EXPECT_TRUE(backend.started.at(0).cfg.log_used);
  EXPECT_EQ(backend.started.at(0).cfg.log_guest_addr, 0x41000u);
  EXPECT_EQ(backend.started.at(0).cfg.avail_base, 11);
}

TEST_F(SessionTest, ReplyAck) {
  negotiate(protocol::kReplyAck);
  // Success: 0. Failure: 1, and the session goes on.
  ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, 0, 256, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_VRING_NUM), 0u);
  ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, 0, 3, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_VRING_NUM), 1u);
  ASSERT_TRUE(fe.send_u64(Request::SET_FEATURES, bit(63), {}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_FEATURES), 1u);
  // A validation failure (an fd where none belongs) is acked with 1 too.
  UniqueFd e = make_eventfd();
  ASSERT_TRUE(fe.send_u64(Request::SET_STATUS, 1, {e.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_STATUS), 1u);
  // Without need_reply: no ack, and a failure ends the session.
  ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, 0, 256));
  EXPECT_FALSE(fe.reply_pending());
  EXPECT_FALSE(fe.send_state(Request::SET_VRING_NUM, 0, 3));
  EXPECT_FALSE(fe.reply_pending());
  EXPECT_EQ(fe.session->counters().bad_messages.get(), 4u);
}

TEST_F(SessionTest, NeedReplyIgnoredWithoutReplyAck) {
  negotiate(protocol::kMq);
  ASSERT_TRUE(fe.send0(Request::SET_OWNER, kFlagNeedReply));
  EXPECT_FALSE(fe.reply_pending());
  EXPECT_FALSE(fe.send_state(Request::SET_VRING_NUM, 0, 3, kFlagNeedReply));
  EXPECT_FALSE(fe.reply_pending());
}

TEST_F(SessionTest, VringIndexCheckedAtFullWidth) {
  negotiate(protocol::kReplyAck);
  for (uint32_t index : {2u, 3u, 255u, 0x10000u, 0xFFFFFFFFu}) {
    for (Request r : {Request::SET_VRING_NUM, Request::SET_VRING_BASE, Request::SET_VRING_ENABLE}) {
      ASSERT_TRUE(fe.send_state(r, index, 1, kFlagNeedReply));
      EXPECT_EQ(ack(r), 1u) << request_name(uint32_t(r)) << " " << index;
    }
    VringAddr a{index, 0, kUva0, kUva0 + 0x2000, kUva0 + 0x1000, 0};
    ASSERT_TRUE(fe.send(Request::SET_VRING_ADDR, &a, sizeof(a), {}, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_ADDR), 1u) << index;
  }
  // Kick/call/err carry an 8-bit index.
  for (Request r : {Request::SET_VRING_KICK, Request::SET_VRING_CALL, Request::SET_VRING_ERR}) {
    for (uint64_t index : {2u, 255u}) {
      UniqueFd e = make_eventfd();
      ASSERT_TRUE(fe.send_u64(r, index, {e.get()}, kFlagNeedReply));
      EXPECT_EQ(ack(r), 1u) << request_name(uint32_t(r)) << " " << index;
    }
  }
  EXPECT_EQ(backend.set_call_calls, 0);
  EXPECT_TRUE(backend.started.empty());
  // GET_VRING_BASE has a reply of its own: a bad index ends the session.
  for (uint32_t index : {2u, 0x10000u, 0xFFFFFFFFu}) {
    EXPECT_FALSE(fe.send_state(Request::GET_VRING_BASE, index, 0, kFlagNeedReply));
    EXPECT_FALSE(fe.reply_pending());
  }
  EXPECT_EQ(backend.stop_calls, 0);
}

TEST_F(SessionTest, VringIndexRejectedWithoutReplyAck) {
  negotiate(0);
  EXPECT_FALSE(fe.send_state(Request::SET_VRING_NUM, 2, 256));
  EXPECT_FALSE(fe.send_state(Request::SET_VRING_NUM, 0x10000, 256));
  EXPECT_FALSE(fe.send_state(Request::SET_VRING_NUM, 0xFFFFFFFF, 256));
  EXPECT_TRUE(fe.send_state(Request::SET_VRING_NUM, 1, 256));
}

TEST_F(SessionTest, MoreQueuePairsMoreRings) {
  backend.queue_pairs = 4;
  FrontEnd fe4(backend);
  EXPECT_EQ(fe4.get_u64(Request::GET_QUEUE_NUM), 4u);
  EXPECT_TRUE(fe4.send_state(Request::SET_VRING_NUM, 7, 256));
  EXPECT_FALSE(fe4.send_state(Request::SET_VRING_NUM, 8, 256));
}

// VIRTIO_NET_F_MQ with 8 pairs: GET_QUEUE_NUM says 8, all 16 rings start (ring 2k is
// receiveq k, 2k+1 transmitq k), ring 16 is refused, and SET_VRING_ENABLE turns rings
// of any pair off and on again while the others stay (ethtool -L in the guest).
TEST_F(SessionTest, EightPairsSixteenRingsEnableDisable) {
  backend.queue_pairs = 8;
  FrontEnd fe8(backend);
  EXPECT_EQ(fe8.get_u64(Request::GET_QUEUE_NUM), 8u);
  ASSERT_TRUE(fe8.send_u64(Request::SET_PROTOCOL_FEATURES, protocol::kMq | protocol::kReplyAck));
  ASSERT_TRUE(fe8.send0(Request::SET_OWNER));
  ASSERT_TRUE(
      fe8.send_u64(Request::SET_FEATURES, bit(VIRTIO_F_VERSION_1) | kFeatureProtocolFeatures));
  UniqueFd m = make_memfd(kMiB);
  ASSERT_TRUE(fe8.send_mem_table({{0, kMiB, kUva0, 0}}, {m.get()}, 0));
  std::vector<UniqueFd> kicks;
  for (uint32_t i = 0; i < 16; ++i) {
    const uint64_t off = 0x4000 * (i + 1);
    ASSERT_TRUE(fe8.send_state(Request::SET_VRING_NUM, i, 64));
    ASSERT_TRUE(fe8.send_state(Request::SET_VRING_BASE, i, 0));
    ASSERT_TRUE(fe8.send_addr(i, kUva0 + off, kUva0 + off + 0x2000, kUva0 + off + 0x1000));
    kicks.push_back(make_eventfd());
    ASSERT_TRUE(fe8.send_u64(Request::SET_VRING_KICK, i, {kicks.back().get()}, kFlagNeedReply));
    EXPECT_EQ(fe8.reply_u64(Request::SET_VRING_KICK), 0u) << "ring " << i;
    ASSERT_TRUE(fe8.send_state(Request::SET_VRING_ENABLE, i, 1, kFlagNeedReply));
    EXPECT_EQ(fe8.reply_u64(Request::SET_VRING_ENABLE), 0u);
  }
  EXPECT_EQ(backend.started.size(), 16u);
  for (uint32_t i = 0; i < 16; ++i) EXPECT_TRUE(backend.enabled.at(i)) << i;
  // Ring 16 does not exist.
  ASSERT_TRUE(fe8.send_state(Request::SET_VRING_NUM, 16, 64, kFlagNeedReply));
  EXPECT_EQ(fe8.reply_u64(Request::SET_VRING_NUM), 1u);
  ASSERT_TRUE(fe8.send_state(Request::SET_VRING_ENABLE, 16, 1, kFlagNeedReply));
  EXPECT_EQ(fe8.reply_u64(Request::SET_VRING_ENABLE), 1u);
  // combined 8 -> 3: pairs 3..7 off; the rest stay on and started.
  for (uint32_t i = 6; i < 16; ++i) {
    ASSERT_TRUE(fe8.send_state(Request::SET_VRING_ENABLE, i, 0, kFlagNeedReply));
    EXPECT_EQ(fe8.reply_u64(Request::SET_VRING_ENABLE), 0u);
  }
  for (uint32_t i = 0; i < 16; ++i) EXPECT_EQ(backend.enabled.at(i), i < 6) << i;
  EXPECT_EQ(backend.started.size(), 16u) << "disabling a ring does not stop it";
  // and back to 8.
  for (uint32_t i = 6; i < 16; ++i) {
    ASSERT_TRUE(fe8.send_state(Request::SET_VRING_ENABLE, i, 1, kFlagNeedReply));
    EXPECT_EQ(fe8.reply_u64(Request::SET_VRING_ENABLE), 0u);
  }
  for (uint32_t i = 0; i < 16; ++i) EXPECT_TRUE(backend.enabled.at(i)) << i;
}

TEST_F(SessionTest, RingSizes) {
  negotiate(protocol::kReplyAck);
  for (uint32_t bad : {0u, 3u, 100u, 32769u, 65536u, 0x80000000u}) {
    ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, 0, bad, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_NUM), 1u) << bad;
  }
  for (uint32_t good : {1u, 2u, 256u, 32768u}) {
    ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, 0, good, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_VRING_NUM), 0u) << good;
  }
  // Bases are 16-bit for split rings.
  ASSERT_TRUE(fe.send_state(Request::SET_VRING_BASE, 0, 0x10000, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_VRING_BASE), 1u);
  ASSERT_TRUE(fe.send_state(Request::SET_VRING_BASE, 0, 0xFFFF, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_VRING_BASE), 0u);
  // Enable is 0 or 1.
  ASSERT_TRUE(fe.send_state(Request::SET_VRING_ENABLE, 0, 2, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_VRING_ENABLE), 1u);
}

TEST_F(SessionTest, FeaturesMustBeOffered) {
  EXPECT_FALSE(fe.send_u64(Request::SET_FEATURES, backend.features | bit(40)));
  EXPECT_EQ(backend.set_features_calls, 0);
  EXPECT_FALSE(fe.send_u64(Request::SET_PROTOCOL_FEATURES, protocol::kConfig));
  EXPECT_EQ(fe.session->acked_protocol_features(), 0u);
  EXPECT_TRUE(fe.send_u64(Request::SET_FEATURES, backend.features));
  EXPECT_EQ(backend.acked, backend.features);
}

TEST_F(SessionTest, BadMemoryTablesAreRejectedAndTheOldOneKept) {
  negotiate(protocol::kReplyAck);
  ASSERT_TRUE(set_one_region());
  auto old = backend.memory;
  ASSERT_TRUE(old);
  UniqueFd m = make_memfd(kMiB);
  struct Case {
    const char* what;
    MemoryRegion r;
  } cases[] = {
      {"zero size", {0, 0, kUva0, 0}},
      {"offset past the end of the file", {0, 4096, kUva0, kMiB}},
      {"region longer than the file", {0, 2 * kMiB, kUva0, 0}},
      {"offset + size overflows", {0, 4096, kUva0, ~0ULL - 100}},
      {"gpa + size overflows", {~0ULL - 100, 4096, kUva0, 0}},
  };
  for (auto& c : cases) {
    ASSERT_TRUE(fe.send_mem_table({c.r}, {m.get()}, kFlagNeedReply));
    EXPECT_EQ(ack(Request::SET_MEM_TABLE), 1u) << c.what;
    EXPECT_EQ(backend.memory, old) << c.what;
  }
  // Overlapping regions.
  UniqueFd m2 = make_memfd(kMiB);
  ASSERT_TRUE(fe.send_mem_table({{0, kMiB, kUva0, 0}, {0x80000, kMiB, kUva1, 0}},
                                {m.get(), m2.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_MEM_TABLE), 1u);
  // An fd that is no memory file (an eventfd): refused, and the session ends.
  UniqueFd e = make_eventfd();
  EXPECT_FALSE(fe.send_mem_table({{0, 4096, kUva0, 0}}, {e.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_MEM_TABLE), 1u);
  EXPECT_EQ(backend.memory, old);
  EXPECT_EQ(backend.set_memory_calls, 1);
}

TEST_F(SessionTest, AddAndRemoveMemoryRegions) {
  negotiate(protocol::kReplyAck | protocol::kConfigureMemSlots);
  EXPECT_EQ(fe.get_u64(Request::GET_MAX_MEM_SLOTS), 509u);
  UniqueFd m0 = make_memfd(kMiB), m1 = make_memfd(kMiB);
  MemoryRegion r0{0, kMiB, kUva0, 0}, r1{0x100000000ULL, kMiB, kUva1, 0};
  ASSERT_TRUE(fe.send_single_region(Request::ADD_MEM_REG, r0, {m0.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::ADD_MEM_REG), 0u);
  ASSERT_TRUE(backend.memory);
  EXPECT_EQ(backend.memory->size(), 1u);
  ASSERT_TRUE(fe.send_single_region(Request::ADD_MEM_REG, r1, {m1.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::ADD_MEM_REG), 0u);
  EXPECT_EQ(backend.memory->size(), 2u);
  EXPECT_NE(backend.memory->gpa_to_host(0x100000000ULL, 8), nullptr);
  // Overlap with an existing region.
  ASSERT_TRUE(fe.send_single_region(Request::ADD_MEM_REG, {0x1000, 4096, kUva0 + kMiB * 4, 0},
                                    {m0.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::ADD_MEM_REG), 1u);
  EXPECT_EQ(backend.memory->size(), 2u);
  // Removal matches gpa + size + uva; the offset is ignored; QEMU passes an fd.
  MemoryRegion wrong = r0;
  wrong.memory_size = 4096;
  ASSERT_TRUE(fe.send_single_region(Request::REM_MEM_REG, wrong, {}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::REM_MEM_REG), 1u);
  MemoryRegion rem = r0;
  rem.mmap_offset = 12345;
  ASSERT_TRUE(fe.send_single_region(Request::REM_MEM_REG, rem, {m0.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::REM_MEM_REG), 0u);
  EXPECT_EQ(backend.memory->size(), 1u);
  EXPECT_EQ(backend.memory->gpa_to_host(0, 8), nullptr);
  EXPECT_NE(backend.memory->gpa_to_host(0x100000000ULL, 8), nullptr);
  // Two fds on REM_MEM_REG is a validation error.
  ASSERT_TRUE(
      fe.send_single_region(Request::REM_MEM_REG, r1, {m0.get(), m1.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::REM_MEM_REG), 1u);
  ASSERT_TRUE(fe.send_single_region(Request::REM_MEM_REG, r1, {}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::REM_MEM_REG), 0u);
  EXPECT_EQ(backend.memory->size(), 0u);
}

// A multiqueue QEMU adds the same regions once per queue pair (one vhost device each) and
// removes them the same way: an identical ADD_MEM_REG takes a reference, REM_MEM_REG drops
// one, the region goes with the last.
TEST_F(SessionTest, SameRegionAddedPerQueuePair) {
  negotiate(protocol::kReplyAck | protocol::kConfigureMemSlots);
  UniqueFd m0 = make_memfd(kMiB);
  MemoryRegion r0{0, kMiB, kUva0, 0};
  for (int pair = 0; pair < 3; ++pair) {
    ASSERT_TRUE(fe.send_single_region(Request::ADD_MEM_REG, r0, {m0.get()}, kFlagNeedReply));
    EXPECT_EQ(ack(Request::ADD_MEM_REG), 0u) << pair;
  }
  ASSERT_TRUE(backend.memory);
  EXPECT_EQ(backend.memory->size(), 1u);
  EXPECT_EQ(backend.set_memory_calls, 1);  // the duplicates changed nothing
  // The same addresses with another offset are a different (overlapping) region.
  MemoryRegion other = r0;
  other.mmap_offset = 4096;
  ASSERT_TRUE(fe.send_single_region(Request::ADD_MEM_REG, other, {m0.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::ADD_MEM_REG), 1u);
  for (int pair = 0; pair < 2; ++pair) {
    ASSERT_TRUE(fe.send_single_region(Request::REM_MEM_REG, r0, {}, kFlagNeedReply));
    EXPECT_EQ(ack(Request::REM_MEM_REG), 0u) << pair;
    EXPECT_EQ(backend.memory->size(), 1u) << pair;
  }
  ASSERT_TRUE(fe.send_single_region(Request::REM_MEM_REG, r0, {}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::REM_MEM_REG), 0u);
  EXPECT_EQ(backend.memory->size(), 0u);
  ASSERT_TRUE(fe.send_single_region(Request::REM_MEM_REG, r0, {}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::REM_MEM_REG), 1u);
}

TEST_F(SessionTest, StatusMtuQueueNum) {
  negotiate(protocol::kStatus | protocol::kMtu);
  ASSERT_TRUE(fe.send_u64(Request::SET_STATUS, 0x0f));
  EXPECT_EQ(fe.get_u64(Request::GET_STATUS), 0x0fu);
  EXPECT_FALSE(fe.send_u64(Request::SET_STATUS, 0x100));
  EXPECT_EQ(fe.session->status(), 0x0f);
  ASSERT_TRUE(fe.send_u64(Request::NET_SET_MTU, 9000));
  EXPECT_EQ(backend.mtu, 9000u);
}

TEST_F(SessionTest, NotOfferedRequestsAreErrors) {
  negotiate(protocol::kReplyAck);
  UniqueFd e = make_eventfd();
  uint64_t log[2] = {4096, 0};
  // SET_LOG_BASE has a reply of its own: refused and the session ends.
  EXPECT_FALSE(fe.send(Request::SET_LOG_BASE, log, sizeof(log), {e.get()}, kFlagNeedReply));
  EXPECT_FALSE(fe.reply_pending());
  ASSERT_TRUE(fe.send(Request::SET_LOG_FD, nullptr, 0, {e.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_LOG_FD), 1u);
  uint8_t cfg[12] = {};
  EXPECT_FALSE(fe.send(Request::GET_CONFIG, cfg, sizeof(cfg)));
  ASSERT_TRUE(fe.send(Request::SET_CONFIG, cfg, sizeof(cfg), {}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_CONFIG), 1u);
}

TEST_F(SessionTest, SetLogBaseMapsTheLogAndRepliesWithoutPayload) {
  backend.proto |= protocol::kLogShmfd;
  negotiate(protocol::kLogShmfd);
  UniqueFd m = make_memfd(3 * 4096);
  uint64_t log[2] = {4096, 8192};  // size, offset
  ASSERT_TRUE(fe.send(Request::SET_LOG_BASE, log, sizeof(log), {m.get()}));
  Message r = fe.reply(Request::SET_LOG_BASE);
  EXPECT_EQ(r.hdr.size, 0u) << "QEMU reads a reply without payload";
  ASSERT_NE(backend.log, nullptr);
  EXPECT_EQ(backend.log->size(), 4096u);
  backend.log->mark(9 * 4096, 1);  // page 9: byte 1, bit 1 of the file at the offset
  uint8_t b = 0;
  ASSERT_EQ(pread(m.get(), &b, 1, 8192 + 1), 1);
  EXPECT_EQ(b, 0x02);
  // A second log replaces the first.
  UniqueFd m2 = make_memfd(4096);
  uint64_t log2[2] = {4096, 0};
  ASSERT_TRUE(fe.send(Request::SET_LOG_BASE, log2, sizeof(log2), {m2.get()}));
  fe.reply(Request::SET_LOG_BASE);
  EXPECT_EQ(backend.set_log_calls, 2);
  EXPECT_EQ(backend.log->size(), 4096u);
}

TEST_F(SessionTest, SetLogBaseThatCannotBeMappedEndsTheSession) {
  backend.proto |= protocol::kLogShmfd;
  struct Case {
    uint64_t size, offset, file;
    const char* what;
  } cases[] = {{8192, 0, 4096, "past the end of the file"},
               {4096, 4096, 4096, "offset at the end"},
               {0, 0, 4096, "size 0"},
               {(1ULL << 30) + 8, 0, 4096, "more than 1 GiB"},
               {4096, ~0ULL - 100, 4096, "offset + size overflows"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    reconnect();
    negotiate(protocol::kLogShmfd);
    UniqueFd m = make_memfd(c.file);
    uint64_t log[2] = {c.size, c.offset};
    EXPECT_FALSE(fe.send(Request::SET_LOG_BASE, log, sizeof(log), {m.get()}));
    EXPECT_EQ(backend.log, nullptr);
  }
  // An eventfd where the log's file should be: counted as a bad fd.
  reconnect();
  negotiate(protocol::kLogShmfd);
  UniqueFd e = make_eventfd();
  uint64_t log[2] = {4096, 0};
  EXPECT_FALSE(fe.send(Request::SET_LOG_BASE, log, sizeof(log), {e.get()}));
  EXPECT_EQ(fe.session->counters().bad_fds.get(), 1u);
}

TEST_F(SessionTest, SendRarpNeedsTheProtocolFeature) {
  backend.proto |= protocol::kRarp;
  negotiate(protocol::kReplyAck);
  const uint64_t mac = 0x0000'5634'1200'5452ULL;  // 52:54:00:12:34:56 in the low 6 bytes
  ASSERT_TRUE(fe.send_u64(Request::SEND_RARP, mac, {}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SEND_RARP), 1u);
  EXPECT_TRUE(backend.rarp.empty());
  reconnect();
  negotiate(protocol::kRarp);
  ASSERT_TRUE(fe.send_u64(Request::SEND_RARP, mac));
  EXPECT_EQ(backend.rarp, (std::vector<uint8_t>{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}));
}

TEST_F(SessionTest, ResetDeviceForgetsState) {
  negotiate(0);
  ASSERT_TRUE(set_one_region());
  setup_ring(0, 256, 0);
  ASSERT_EQ(backend.started.size(), 1u);
  ASSERT_TRUE(fe.send0(Request::RESET_DEVICE));
  EXPECT_EQ(backend.resets, 1);
  EXPECT_FALSE(fe.session->memory());
  EXPECT_EQ(fe.session->acked_features(), 0u);
  // A kick now does not start anything: size, addresses and memory are gone.
  UniqueFd k = make_eventfd();
  ASSERT_TRUE(fe.send_u64(Request::SET_VRING_KICK, 0, {k.get()}));
  EXPECT_TRUE(backend.started.empty());
  ASSERT_TRUE(fe.send0(Request::RESET_OWNER));
  EXPECT_EQ(backend.resets, 2);
}

TEST_F(SessionTest, FailedStartIsReported) {
  negotiate(protocol::kReplyAck);
  ASSERT_TRUE(set_one_region());
  setup_ring(0, 256, 0, false);
  backend.fail_start = true;
  UniqueFd k = make_eventfd();
  ASSERT_TRUE(fe.send_u64(Request::SET_VRING_KICK, 0, {k.get()}, kFlagNeedReply));
  EXPECT_EQ(ack(Request::SET_VRING_KICK), 1u);
  EXPECT_TRUE(backend.started.empty());
}

TEST_F(SessionTest, PeerCloseAndGarbageEndTheSession) {
  {
    FrontEnd other(backend);
    uint8_t junk[12] = {0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0, 0, 0, 0, 0};
    ASSERT_EQ(write(other.fd(), junk, sizeof(junk)), 12);
    Status st = other.session->on_readable();
    EXPECT_FALSE(st);
    EXPECT_FALSE(other.session->peer_closed());
    EXPECT_EQ(other.session->counters().bad_messages.get(), 1u);
  }
  // Nothing to read: no error.
  EXPECT_TRUE(fe.session->on_readable());
  FrontEnd fe2(backend);
  int resets = backend.resets;
  ::shutdown(fe2.fd(), SHUT_WR);
  EXPECT_FALSE(fe2.session->on_readable());
  EXPECT_TRUE(fe2.session->peer_closed());
  fe2.session.reset();
  EXPECT_EQ(backend.resets, resets + 1);
}

TEST_F(SessionTest, RepeatedMessagesLeakNeitherFdsNorMappings) {
  negotiate(protocol::kReplyAck);
  ASSERT_TRUE(set_one_region());
  setup_ring(0, 256, 0);
  // Warm up (first allocations of logging, maps, ...).
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(set_one_region());
  UniqueFd call0 = make_eventfd(), err0 = make_eventfd();  // ring 1 holds a call and an err fd
  ASSERT_TRUE(fe.send_u64(Request::SET_VRING_CALL, 1, {call0.get()}));
  ASSERT_TRUE(fe.send_u64(Request::SET_VRING_ERR, 1, {err0.get()}));
  call0.reset();
  err0.reset();
  size_t fds = count_fds(), maps = count_maps();
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(set_one_region());
    UniqueFd call = make_eventfd();
    ASSERT_TRUE(fe.send_u64(Request::SET_VRING_CALL, 1, {call.get()}));
    UniqueFd err = make_eventfd();
    ASSERT_TRUE(fe.send_u64(Request::SET_VRING_ERR, 1, {err.get()}));
    UniqueFd kick = make_eventfd();
    ASSERT_TRUE(fe.send_u64(Request::SET_VRING_KICK, 0, {kick.get()}));
    if (i % 10 == 0) {
      ASSERT_TRUE(fe.send_state(Request::GET_VRING_BASE, 0, 0));
      fe.reply(Request::GET_VRING_BASE);
    }
    // A refused message with fds (acked 1) closes them too.
    UniqueFd bad = make_memfd(4096);
    ASSERT_TRUE(fe.send_mem_table({{0, 0, kUva0, 0}}, {bad.get()}, kFlagNeedReply));
    ASSERT_EQ(ack(Request::SET_MEM_TABLE), 1u);
  }
  EXPECT_EQ(count_fds(), fds);
  EXPECT_LE(count_maps(), maps + 4);  // a leaked table would add ~1000
  EXPECT_TRUE(backend.memory);
  EXPECT_EQ(backend.memory->size(), 1u);
  EXPECT_EQ(backend.started.count(0), 1u);
}

TEST_F(SessionTest, FdsOfTheWrongKindEndTheSession) {
  // Where an eventfd belongs: a pipe, a socket, a memfd. Where a memory file belongs: an
  // eventfd. Each ends the session (also when the front end asked for an ack, which it
  // gets first) and is counted; the fd is closed.
  size_t fds0 = count_fds();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd pr(p[0]), pw(p[1]);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd s0(sv[0]), s1(sv[1]);
  UniqueFd mem = make_memfd(4096);
  struct Case {
    Request r;
    int fd;
  } cases[] = {{Request::SET_VRING_KICK, pr.get()},
               {Request::SET_VRING_CALL, pw.get()},
               {Request::SET_VRING_ERR, s0.get()},
               {Request::SET_VRING_KICK, mem.get()}};
  for (const Case& c : cases) {
    for (bool with_ack : {false, true}) {
      FakeBackend b;
      FrontEnd f(b);
      if (with_ack) {
        ASSERT_TRUE(f.send_u64(Request::SET_FEATURES, kFeatureProtocolFeatures));
        ASSERT_TRUE(f.send_u64(Request::SET_PROTOCOL_FEATURES, protocol::kReplyAck));
      }
      Status st = f.send_u64(c.r, 0, {c.fd}, with_ack ? kFlagNeedReply : 0);
      EXPECT_FALSE(st) << request_name(uint32_t(c.r));
      EXPECT_NE(st.message().find("not an eventfd"), std::string::npos) << st.message();
      if (with_ack) {
        EXPECT_EQ(f.reply_u64(c.r), 1u);
      }
      EXPECT_EQ(f.session->counters().bad_fds.get(), 1u);
      EXPECT_TRUE(b.calls.empty());
      EXPECT_TRUE(b.started.empty());
    }
  }
  {
    FakeBackend b;
    FrontEnd f(b);
    UniqueFd ev = make_eventfd();
    Status st = f.send_mem_table({{0, kMiB, kUva0, 0}}, {ev.get()});
    EXPECT_FALSE(st);
    EXPECT_NE(st.message().find("not a memory file"), std::string::npos) << st.message();
    EXPECT_FALSE(b.memory);
  }
  pr.reset();
  pw.reset();
  s0.reset();
  s1.reset();
  mem.reset();
  EXPECT_EQ(count_fds(), fds0);
}

TEST_F(SessionTest, LogBudgetPerPort) {
  // A front end that misbehaves in a loop spends its own port's budget, not another's.
  PortLogLimits noisy, quiet;
  for (int i = 0; i < 200; ++i) {
    FakeBackend b;
    FrontEnd f(b, &noisy);
    ASSERT_TRUE(f.send_u64(Request::SET_FEATURES, bit(VIRTIO_F_VERSION_1)));  // a line
    EXPECT_FALSE(f.send_u64(Request::SET_FEATURES, bit(60)));                 // refused
  }
  EXPECT_GT(noisy.session.suppressed_total(), 100u);
  EXPECT_GT(noisy.bad_input.suppressed_total(), 150u);
  FakeBackend b;
  FrontEnd f(b, &quiet);
  ASSERT_TRUE(f.send_u64(Request::SET_FEATURES, bit(VIRTIO_F_VERSION_1)));
  uint64_t suppressed = 0;
  EXPECT_TRUE(quiet.bad_input.allow(&suppressed));
  EXPECT_EQ(quiet.suppressed_total(), 0u);
}

}  // namespace
}  // namespace vnet::vhost_user
