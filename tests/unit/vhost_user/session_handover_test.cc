// Session hand-over (hot upgrade): a session's state saved as messages and rebuilt in a
// second session on another backend, as a successor vnetd does; and what a lying
// predecessor's messages do to the successor.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "vhost_user/session.h"
#include "vhu_test_util.h"

namespace vnet::vhost_user {
namespace {

using testing::bit;
using testing::count_fds;
using testing::FakeBackend;
using testing::FrontEnd;
using testing::make_eventfd;
using testing::make_memfd;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kUva0 = 0x7f0000000000ULL;
constexpr uint64_t kUva1 = 0x7f0010000000ULL;

// A negotiated session with two regions (the second added twice, as a multiqueue QEMU
// does), an MTU, status, and two started, enabled rings with call fds.
class HandoverTest : public ::testing::Test {
 protected:
  HandoverTest() : fe(a) {
    a.queue_pairs = 2;
    b.queue_pairs = 2;
    fe = FrontEnd(a);
  }
  void set_up() {
    ASSERT_TRUE(fe.send_u64(
        Request::SET_PROTOCOL_FEATURES,
        protocol::kMq | protocol::kConfigureMemSlots | protocol::kMtu | protocol::kStatus));
    ASSERT_TRUE(fe.send0(Request::SET_OWNER));
    ASSERT_TRUE(fe.send_u64(Request::SET_FEATURES, features));
    m0 = make_memfd(kMiB);
    m1 = make_memfd(2 * kMiB);
    SingleMemoryRegion r0{0, {0, kMiB, kUva0, 0}}, r1{0, {0x100000000ULL, kMiB, kUva1, kMiB}};
    ASSERT_TRUE(fe.send(Request::ADD_MEM_REG, &r0, sizeof(r0), {m0.get()}));
    ASSERT_TRUE(fe.send(Request::ADD_MEM_REG, &r1, sizeof(r1), {m1.get()}));
    ASSERT_TRUE(fe.send(Request::ADD_MEM_REG, &r1, sizeof(r1), {m1.get()}));
    ASSERT_TRUE(fe.send_u64(Request::NET_SET_MTU, 9000));
    for (uint32_t i = 0; i < 2; ++i) {
      uint64_t off = 0x10000 * (i + 1);
      ASSERT_TRUE(fe.send_state(Request::SET_VRING_NUM, i, 256));
      ASSERT_TRUE(fe.send_state(Request::SET_VRING_BASE, i, 3));
      ASSERT_TRUE(fe.send_addr(i, kUva0 + off, kUva0 + off + 0x2000, kUva0 + off + 0x1000));
      calls[i] = make_eventfd();
      ASSERT_TRUE(fe.send_u64(Request::SET_VRING_CALL, i, {calls[i].get()}));
      kicks[i] = make_eventfd();
      ASSERT_TRUE(fe.send_u64(Request::SET_VRING_KICK, i, {kicks[i].get()}));
      ASSERT_TRUE(fe.send_state(Request::SET_VRING_ENABLE, i, 1));
    }
    ASSERT_TRUE(fe.send_u64(Request::SET_STATUS, 0x0f));
    ASSERT_EQ(a.started.size(), 2u);
  }
  // The successor's session on a new connection.
  std::unique_ptr<Session> successor() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    peer.reset(sv[0]);
    return std::make_unique<Session>(UniqueFd(sv[1]), b, "successor");
  }

  const uint64_t features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) |
                            bit(VIRTIO_RING_F_INDIRECT_DESC) | kFeatureProtocolFeatures;
  FakeBackend a, b;
  FrontEnd fe;
  UniqueFd m0, m1, calls[2], kicks[2], peer;
};

TEST_F(HandoverTest, SavedStateRebuildsTheSessionExactly) {
  set_up();
  // Saving a running session is refused: its bases would be stale.
  EXPECT_FALSE(fe.session->save());
  a.stop_index = 42;
  fe.session->suspend(true);
  EXPECT_EQ(a.started.count(1), 0u);  // transmitq first
  EXPECT_EQ(a.started.count(0), 1u);
  fe.session->suspend(false);
  EXPECT_TRUE(a.started.empty());
  auto saved = fe.session->save();
  ASSERT_TRUE(saved) << saved.message();
  EXPECT_EQ(saved->start_rx.size(), 2u);  // ring 0: kick, enable
  EXPECT_EQ(saved->start_tx.size(), 2u);  // ring 1

  auto s = successor();
  ASSERT_TRUE(s->restore(saved->setup));
  EXPECT_EQ(b.acked, features);
  EXPECT_EQ(s->acked_protocol_features(), fe.session->acked_protocol_features());
  EXPECT_EQ(s->status(), 0x0f);
  EXPECT_EQ(b.mtu, 9000u);
  ASSERT_TRUE(b.memory);
  EXPECT_EQ(b.memory->size(), 2u);
  EXPECT_TRUE(b.started.empty());  // nothing runs before the start messages
  EXPECT_TRUE(b.calls.at(0).valid());
  EXPECT_TRUE(b.calls.at(1).valid());
  // The same files: a byte written through the predecessor's mapping is read in the
  // successor's.
  uint8_t* pa = a.memory->gpa_to_host(0x100000000ULL + 77, 1);
  uint8_t* pb = b.memory->gpa_to_host(0x100000000ULL + 77, 1);
  ASSERT_TRUE(pa && pb);
  EXPECT_NE(pa, pb);
  *pa = 0xa5;
  EXPECT_EQ(*pb, 0xa5);

  ASSERT_TRUE(s->restore(saved->start_rx));
  ASSERT_EQ(b.started.count(0), 1u);
  EXPECT_EQ(b.started.count(1), 0u);
  ASSERT_TRUE(s->restore(saved->start_tx));
  ASSERT_EQ(b.started.size(), 2u);
  for (uint32_t i = 0; i < 2; ++i) {
    const auto& st = b.started.at(i);
    uint64_t off = 0x10000 * (i + 1);
    EXPECT_EQ(st.cfg.avail_base, 42);  // where the predecessor stopped
    EXPECT_EQ(st.cfg.size, 256);
    EXPECT_EQ(st.cfg.desc_addr, kUva0 + off);
    EXPECT_EQ(st.cfg.used_addr, kUva0 + off + 0x2000);
    EXPECT_TRUE(st.cfg.event_idx);
    EXPECT_TRUE(b.enabled.at(i));
    // The successor's kick fd is the front end's eventfd.
    uint64_t one = 1, v = 0;
    ASSERT_EQ(write(kicks[i].get(), &one, 8), 8);
    ASSERT_EQ(read(b.kicks.at(i).watch_fd(), &v, 8), 8);
    EXPECT_EQ(v, 1u);
  }
  // The region added twice is still counted twice: one REM_MEM_REG from the front end
  // keeps it mapped.
  SingleMemoryRegion r1{0, {0x100000000ULL, kMiB, kUva1, kMiB}};
  ASSERT_TRUE(send_request(peer.get(), Request::REM_MEM_REG, &r1, sizeof(r1)));
  ASSERT_TRUE(s->on_readable());
  EXPECT_EQ(b.memory->size(), 2u);
}

TEST_F(HandoverTest, ResumeStartsTheRingsWhereTheyStopped) {
  set_up();
  a.stop_index = 9;
  fe.session->suspend(true);
  fe.session->suspend(false);
  const int starts = a.start_calls;
  fe.session->resume();
  EXPECT_EQ(a.start_calls, starts + 2);
  ASSERT_EQ(a.started.size(), 2u);
  EXPECT_EQ(a.started.at(0).cfg.avail_base, 9);
  EXPECT_EQ(a.started.at(1).cfg.avail_base, 9);
  EXPECT_TRUE(a.enabled.at(0));
  // A second resume does nothing: only suspended rings start.
  fe.session->resume();
  EXPECT_EQ(a.start_calls, starts + 2);
}

TEST_F(HandoverTest, SavedFdsAreDuplicatesAndNothingLeaks) {
  set_up();
  fe.session->suspend(true);
  fe.session->suspend(false);
  const size_t before = count_fds();
  {
    auto saved = fe.session->save();
    ASSERT_TRUE(saved);
    // 3 region fds (one per ADD_MEM_REG), 2 calls, 2 kicks.
    size_t n = 0;
    for (auto* v : {&saved->setup, &saved->start_rx, &saved->start_tx})
      for (auto& m : *v) n += m.fds.size();
    EXPECT_EQ(n, 7u);
    EXPECT_EQ(count_fds(), before + 7);
    auto s = successor();
    ASSERT_TRUE(s->restore(saved->setup));
    ASSERT_TRUE(s->restore(saved->start_rx));
    ASSERT_TRUE(s->restore(saved->start_tx));
  }
  b.reset();
  peer.reset();
  EXPECT_EQ(count_fds(), before);
}

// A predecessor that lies: its messages are refused as a front end's would be.
TEST_F(HandoverTest, LyingStateIsRefused) {
  auto msg = [](Request r, std::vector<uint8_t> payload, UniqueFd fd = UniqueFd()) {
    Message m;
    m.hdr = {uint32_t(r), 1, uint32_t(payload.size())};
    m.payload = std::move(payload);
    if (fd) m.fds.push_back(std::move(fd));
    return m;
  };
  auto u64 = [](uint64_t v) {
    std::vector<uint8_t> p(8);
    std::memcpy(p.data(), &v, 8);
    return p;
  };
  struct Case {
    const char* what;
    std::function<Message()> make;
  };
  std::vector<Case> cases = {
      {"features not offered", [&] { return msg(Request::SET_FEATURES, u64(1ULL << 63)); }},
      {"short payload",
       [&] {
         return msg(Request::SET_VRING_NUM, {1, 2, 3});
       }},
      {"ring out of range",
       [&] {
         VringState s{200, 256};
         std::vector<uint8_t> p(8);
         std::memcpy(p.data(), &s, 8);
         return msg(Request::SET_VRING_NUM, p);
       }},
      {"a pipe as memory",
       [&] {
         int pp[2];
         EXPECT_EQ(pipe2(pp, O_CLOEXEC), 0);
         close(pp[1]);
         SingleMemoryRegion r{0, {0, kMiB, kUva0, 0}};
         std::vector<uint8_t> p(sizeof(r));
         std::memcpy(p.data(), &r, sizeof(r));
         return msg(Request::ADD_MEM_REG, p, UniqueFd(pp[0]));
       }},
      {"a region past its file's end",
       [&] {
         SingleMemoryRegion r{0, {0, 4 * kMiB, kUva0, 0}};
         std::vector<uint8_t> p(sizeof(r));
         std::memcpy(p.data(), &r, sizeof(r));
         return msg(Request::ADD_MEM_REG, p, make_memfd(kMiB));
       }},
      {"a memfd as kick", [&] { return msg(Request::SET_VRING_KICK, u64(0), make_memfd(4096)); }},
      {"a request that is not state", [&] { return msg(Request::GET_VRING_BASE, u64(0)); }},
  };
  const size_t before = count_fds();
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto s = successor();
    std::vector<Message> v;
    v.push_back(c.make());
    // GET_VRING_BASE is not state: the successor's restore refuses what is not a SET.
    EXPECT_FALSE(s->restore(v));
  }
  peer.reset();
  b.reset();
  EXPECT_EQ(count_fds(), before);
}

}  // namespace
}  // namespace vnet::vhost_user
