// VhostUserPort with several queue pairs (VIRTIO_NET_F_MQ), driven by vnet's own
// vhost-user front end over a real socket: GET_QUEUE_NUM and the MQ feature, frames the
// switch sends spread over the enabled receiveqs with each flow on one queue, a flow the
// guest sent on transmitq k comes back on receiveq k, and SET_VRING_ENABLE turning a pair
// off and on (no frame goes to a disabled queue, none is lost).
#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include "virtio/net_uapi.h"

#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "../net/flow_frames.h"
#include "common/event_loop.h"
#include "net/flow_hash.h"
#include "net/packet.h"
#include "ports/vhost_user_port.h"
#include "vhost_user/frontend.h"

namespace vnet::ports {
namespace {

using test::Flow4;
using test::ipv4_frame;

constexpr uint64_t bit(unsigned b) {
  return 1ULL << b;
}
constexpr uint32_t kPairs = 4;
constexpr uint32_t kHdr = 12;  // virtio_net_hdr_v1 (VERSION_1)
constexpr uint32_t kBufLen = 2048;

// Runs the port's control changes under a mutex the test's data-path calls hold too:
// the session's thread and the test body never touch the port at the same time.
class SerialExecutor : public Executor {
 public:
  void run_sync(const std::function<void()>& fn) override {
    std::lock_guard lk(mu);
    fn();
  }
  void wait_fds_changed() override {}
  std::mutex mu;
};

// A flow whose frames carry its index in the payload (bytes 0-3 after UDP).
Flow4 flow(uint32_t i) {
  return Flow4{0x0a000001, 0x0a000100 + (i >> 10), uint16_t(30000 + (i & 1023)), 5201};
}
std::vector<uint8_t> frame_of(const Flow4& fl, uint32_t id) {
  auto f = ipv4_frame(fl, 18);
  std::memcpy(f.data() + 14 + 20 + 8, &id, 4);
  return f;
}
uint32_t id_of(const uint8_t* frame) {
  uint32_t id;
  std::memcpy(&id, frame + 14 + 20 + 8, 4);
  return id;
}

class VhostUserMqTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "vnet-mq-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    VhostUserPortConfig pc;
    pc.socket_path = dir_ + "/mq.sock";
    pc.queue_pairs = kPairs;
    port_ = std::make_unique<VhostUserPort>("mq0", pc, ex_);
    ASSERT_TRUE(port_->open(loop_));
    wake_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ASSERT_TRUE(loop_.add(wake_.get(), EPOLLIN, [this](uint32_t) { loop_.stop(); }));
    thread_ = std::thread([this] { loop_.run(); });

    vhost_user::FrontendConfig fc;
    fc.socket_path = pc.socket_path;
    fc.mem_size = 16ULL << 20;
    fc.features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MQ);
    fc.required_features = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MQ);
    fc.num_queues = 2 * kPairs;
    fc.queue_size = 256;
    fc.timeout_ms = 3000;
    auto fe = vhost_user::Frontend::connect_and_start(fc);
    ASSERT_TRUE(fe) << fe.message();
    fe_ = std::move(*fe);
    for (uint32_t p = 0; p < kPairs; ++p) post_rx(2 * p, 128);
  }
  void TearDown() override {
    fe_.reset();
    if (thread_.joinable()) {
      uint64_t one = 1;
      EXPECT_EQ(::write(wake_.get(), &one, sizeof(one)), ssize_t(sizeof(one)));
      thread_.join();
    }
    port_.reset();
    ::unlink((dir_ + "/mq.sock").c_str());
    ::rmdir(dir_.c_str());
  }

  // The guest posts n receive buffers on receiveq `ring`.
  void post_rx(uint32_t ring, uint32_t n) {
    auto& dq = fe_->queue(ring);
    for (uint32_t i = 0; i < n; ++i) {
      auto m = fe_->alloc(kBufLen);
      ASSERT_TRUE(m) << m.message();
      virtio::Buf b{m->gpa, kBufLen};
      int head = dq.add(nullptr, 0, &b, 1);
      ASSERT_GE(head, 0);
      rx_buf_[ring][uint16_t(head)] = m->gpa;
    }
    dq.publish();
  }
  // The frame ids the guest finds on receiveq `ring` (buffers go back to the ring).
  std::vector<uint32_t> reap_rx(uint32_t ring) {
    std::vector<uint32_t> ids;
    auto& dq = fe_->queue(ring);
    virtio::Used u;
    uint32_t n = 0;
    while (dq.reap(u)) {
      const uint8_t* data = fe_->host(rx_buf_[ring][u.id], kBufLen);
      EXPECT_GE(u.len, kHdr + 14 + 20 + 8 + 4);
      ids.push_back(id_of(data + kHdr));
      ++n;
    }
    if (n) post_rx(ring, n);
    return ids;
  }
  // The switch sends these frames to the port (one send_burst per 32).
  uint32_t send(const std::vector<std::vector<uint8_t>>& frames) {
    uint32_t sent = 0;
    for (size_t base = 0; base < frames.size(); base += net::kBurst) {
      const uint32_t n = uint32_t(std::min<size_t>(net::kBurst, frames.size() - base));
      for (uint32_t i = 0; i < n; ++i) {
        net::Packet& p = batch_[i];
        p.vhdr = {};
        p.tail_n = 0;
        p.vlan = 0;
        p.len = uint32_t(frames[base + i].size());
        std::memcpy(p.data, frames[base + i].data(), p.len);
      }
      std::lock_guard lk(ex_.mu);
      sent += port_->send_burst(batch_.ptrs(), n);
    }
    return sent;
  }
  // The guest sends one frame on transmitq `pair`; the switch takes it off the port.
  void guest_send(uint32_t pair, const std::vector<uint8_t>& frame) {
    auto& dq = fe_->queue(2 * pair + 1);
    auto m = fe_->alloc(kHdr + frame.size());
    ASSERT_TRUE(m);
    std::memset(m->host, 0, kHdr);
    std::memcpy(m->host + kHdr, frame.data(), frame.size());
    virtio::Buf b{m->gpa, uint32_t(kHdr + frame.size())};
    ASSERT_GE(dq.add(&b, 1, nullptr, 0), 0);
    dq.publish();
    std::lock_guard lk(ex_.mu);
    ASSERT_EQ(port_->receive_burst(batch_.ptrs(), net::kBurst, pair), 1u);
    EXPECT_EQ(batch_[0].len, frame.size());
    port_->receive_done(pair);
  }
  // Frame id -> receiveq pair, over every pair.
  std::map<uint32_t, uint32_t> reap_all() {
    std::map<uint32_t, uint32_t> where;
    for (uint32_t p = 0; p < kPairs; ++p)
      for (uint32_t id : reap_rx(2 * p)) {
        EXPECT_EQ(where.count(id), 0u) << "frame " << id << " arrived twice";
        where[id] = p;
      }
    return where;
  }

  std::string dir_;
  SerialExecutor ex_;
  EventLoop loop_;
  UniqueFd wake_;
  std::thread thread_;
  std::unique_ptr<VhostUserPort> port_;
  std::unique_ptr<vhost_user::Frontend> fe_;
  std::map<uint32_t, std::map<uint16_t, uint64_t>> rx_buf_;
  net::PacketBatch batch_;
};

TEST_F(VhostUserMqTest, OffersMqAndAnswersQueueNum) {
  EXPECT_EQ(fe_->backend_queue_pairs(), kPairs);
  EXPECT_TRUE(fe_->offered_features() & bit(VIRTIO_NET_F_MQ));
  EXPECT_EQ(port_->rx_queues(), kPairs);
  EXPECT_EQ(port_->max_queue_pairs(), kPairs);
  const PortInfo info = port_->info();
  ASSERT_EQ(info.queue_states.size(), kPairs);
  for (const auto& s : info.queue_states) EXPECT_EQ(s, "active");
}

TEST(VhostUserPortPairs, OnePairOffersNoMq) {
  SerialExecutor ex;
  VhostUserPortConfig pc;
  pc.queue_pairs = 1;
  VhostUserPort p1("one", pc, ex);
  EXPECT_FALSE(p1.device_features() & bit(VIRTIO_NET_F_MQ));
  EXPECT_EQ(p1.max_queue_pairs(), 1u);
  pc.queue_pairs = 1000;  // clamped to what steering can name
  VhostUserPort pmax("max", pc, ex);
  EXPECT_EQ(pmax.max_queue_pairs(), VhostUserPortConfig::kMaxQueuePairs);
  EXPECT_TRUE(pmax.device_features() & bit(VIRTIO_NET_F_MQ));
}

TEST_F(VhostUserMqTest, FlowsSpreadAndKeepTheirQueue) {
  // 64 flows, 3 frames each, interleaved: every frame arrives once, the frames of a
  // flow on one queue in order, every queue carries some flows.
  constexpr uint32_t kFlows = 64;
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t round = 0; round < 3; ++round)
    for (uint32_t f = 0; f < kFlows; ++f) frames.push_back(frame_of(flow(f), round * kFlows + f));
  ASSERT_EQ(send(frames), frames.size());
  std::map<uint32_t, std::vector<uint32_t>> order;  // pair -> ids in arrival order
  for (uint32_t p = 0; p < kPairs; ++p) order[p] = reap_rx(2 * p);
  std::map<uint32_t, uint32_t> flow_queue;
  size_t total = 0;
  for (auto& [p, ids] : order) {
    EXPECT_GT(ids.size(), 0u) << "queue pair " << p << " carried nothing";
    total += ids.size();
    std::map<uint32_t, uint32_t> last_round;
    for (uint32_t id : ids) {
      const uint32_t f = id % kFlows, round = id / kFlows;
      auto it = flow_queue.emplace(f, p).first;
      EXPECT_EQ(it->second, p) << "flow " << f << " on two queues";
      if (last_round.count(f)) {
        EXPECT_GT(round, last_round[f]) << "flow " << f << " reordered";
      }
      last_round[f] = round;
    }
    EXPECT_EQ(port_->queue_counters(p).tx_packets.get(), ids.size());
  }
  EXPECT_EQ(total, frames.size());
  EXPECT_EQ(port_->counters().tx_packets.get(), frames.size());
}

TEST_F(VhostUserMqTest, FlowComesBackOnTheQueueItWasSentOn) {
  // For each pair, a flow whose hash alone would pick another queue: the guest sends it
  // on transmitq p, the reply comes back on receiveq p.
  for (uint32_t p = 0; p < kPairs; ++p) {
    uint32_t i = 1000 + p * 100;
    for (;; ++i) {
      auto f = frame_of(flow(i), i);
      if (net::RxSteering::spread(net::flow_hash(f.data(), uint32_t(f.size())), kPairs) != p) break;
    }
    guest_send(p, frame_of(flow(i), i));
    EXPECT_EQ(port_->queue_counters(p).rx_packets.get(), 1u);
    ASSERT_EQ(send({frame_of(flow(i).reversed(), 7000 + p)}), 1u);
    auto where = reap_all();
    ASSERT_EQ(where.count(7000 + p), 1u);
    EXPECT_EQ(where[7000 + p], p) << "reply of a flow sent on transmitq " << p;
  }
}

TEST_F(VhostUserMqTest, DisabledPairGetsNothingAndComesBack) {
  constexpr uint32_t kFlows = 128;
  auto burst = [&](uint32_t base) {
    std::vector<std::vector<uint8_t>> frames;
    for (uint32_t f = 0; f < kFlows; ++f) frames.push_back(frame_of(flow(f), base + f));
    return frames;
  };
  // ethtool -L combined 3: the front end disables pair 3 (both rings).
  ASSERT_TRUE(fe_->enable_queue(6, false));
  ASSERT_TRUE(fe_->enable_queue(7, false));
  EXPECT_EQ(port_->info().queue_states[3], "off");
  EXPECT_FALSE(port_->rx_queue_live(3));
  EXPECT_TRUE(port_->rx_queue_live(2));
  ASSERT_EQ(send(burst(0)), kFlows) << "nothing lost on the pairs that stay";
  auto where = reap_all();
  EXPECT_EQ(where.size(), kFlows);
  std::set<uint32_t> used;
  for (auto& [id, p] : where) used.insert(p);
  EXPECT_EQ(used, (std::set<uint32_t>{0, 1, 2}));
  // Back to 4.
  ASSERT_TRUE(fe_->enable_queue(6, true));
  ASSERT_TRUE(fe_->enable_queue(7, true));
  EXPECT_TRUE(port_->rx_queue_live(3));
  ASSERT_EQ(send(burst(1000)), kFlows);
  where = reap_all();
  EXPECT_EQ(where.size(), kFlows);
  used.clear();
  for (auto& [id, p] : where) used.insert(p);
  EXPECT_EQ(used, (std::set<uint32_t>{0, 1, 2, 3}));
  // Down to one pair: no steering at all, everything on pair 0.
  for (uint32_t ring = 2; ring < 2 * kPairs; ++ring) ASSERT_TRUE(fe_->enable_queue(ring, false));
  ASSERT_EQ(send(burst(2000)), kFlows);
  where = reap_all();
  EXPECT_EQ(where.size(), kFlows);
  for (auto& [id, p] : where) EXPECT_EQ(p, 0u);
}

}  // namespace
}  // namespace vnet::ports
