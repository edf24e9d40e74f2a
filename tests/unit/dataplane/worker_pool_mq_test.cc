// WorkerPool with a multiqueue port: its queues spread over the workers, each queue is
// polled by one worker at a time (also while queues move under traffic), every frame
// of every queue arrives, per-queue busy cycles are counted by the worker polling it,
// and a control change of the port runs while no worker polls any of its queues (the
// others are parked).
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "dataplane/worker_pool.h"

namespace vnet::dataplane {
namespace {

constexpr uint32_t kQueues = 4;

// Emits frames on each of its queues (from its MAC to the sink's) and notices a queue
// polled by two workers at once, or polled while a control change runs.
class MultiQueuePort : public ports::Port {
 public:
  MultiQueuePort() : Port("mq", kQueues) { set_id(1); }

  void emit(uint32_t per_queue) {
    for (auto& r : remaining_) r.store(per_queue, std::memory_order_release);
  }
  bool drained() const {
    for (auto& r : remaining_)
      if (r.load(std::memory_order_acquire)) return false;
    return true;
  }
  bool any_receiving() const {
    for (auto& b : in_receive_)
      if (b.load()) return true;
    return false;
  }

  uint32_t receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t q) override {
    if (q >= kQueues) {
      bad_queue.fetch_add(1);
      return 0;
    }
    if (in_receive_[q].exchange(true)) overlaps.fetch_add(1);
    uint32_t left = remaining_[q].load(std::memory_order_acquire);
    uint32_t n = std::min(left, max);
    for (uint32_t i = 0; i < n; ++i) {
      net::Packet& p = *pkts[i];
      p.vhdr = {};
      const uint8_t dst[6] = {0x52, 0x54, 0, 0, 0, 0x02}, src[6] = {0x52, 0x54, 0, 0, 0, 0x01};
      std::copy(dst, dst + 6, p.data);
      std::copy(src, src + 6, p.data + 6);
      p.data[12] = 0x08;
      p.data[13] = 0x00;
      p.len = 60;
    }
    if (n) remaining_[q].store(left - n, std::memory_order_release);
    in_receive_[q].store(false);
    return n;
  }
  uint32_t send_burst(net::Packet* const*, uint32_t n) override { return n; }
  void wait_fds(std::vector<WaitFd>&, uint32_t = 0) const override {}
  bool enable_notifications(uint32_t q) override {
    return remaining_[q].load(std::memory_order_acquire) != 0;
  }
  void disable_notifications(uint32_t = 0) override {}
  ports::PortInfo info() const override { return {}; }

  std::atomic<uint64_t> overlaps{0}, bad_queue{0};

 private:
  std::array<std::atomic<uint32_t>, kQueues> remaining_{};
  std::array<std::atomic<bool>, kQueues> in_receive_{};
};

class SinkPort : public ports::Port {
 public:
  SinkPort() : Port("sink") { set_id(2); }
  uint32_t receive_burst(net::Packet* const*, uint32_t, uint32_t = 0) override { return 0; }
  uint32_t send_burst(net::Packet* const*, uint32_t n) override {
    received.store(received.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    return n;
  }
  void wait_fds(std::vector<WaitFd>&, uint32_t = 0) const override {}
  bool enable_notifications(uint32_t = 0) override { return false; }
  void disable_notifications(uint32_t = 0) override {}
  ports::PortInfo info() const override { return {}; }
  std::atomic<uint64_t> received{0};
};

class WorkerPoolMqTest : public ::testing::Test {
 protected:
  WorkerPoolMqTest() : pool_(config()) {}
  ~WorkerPoolMqTest() override {
    pool_.detach(&mq_);
    pool_.detach(&sink_);
    pool_.stop();
  }
  static PoolConfig config() {
    PoolConfig c;
    c.cpus = {-1, -1};
    c.poll_mode = PollMode::kPoll;
    return c;
  }
  bool wait_for(uint64_t expected) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      if (mq_.drained()) {
        pool_.quiesce();
        if (sink_.received.load() == expected) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }

  WorkerPool pool_;
  MultiQueuePort mq_;
  SinkPort sink_;
};

TEST_F(WorkerPoolMqTest, QueuesSpreadOverWorkersAndEveryFrameArrives) {
  pool_.attach(&sink_, 0, nullptr);
  pool_.attach(&mq_, pool_.least_loaded(), nullptr);
  pool_.start();
  const std::vector<size_t> owners = pool_.queue_owners(&mq_);
  ASSERT_EQ(owners.size(), kQueues);
  EXPECT_EQ(owners, (std::vector<size_t>{1, 0, 1, 0}));
  EXPECT_EQ(pool_.queues_on(0), 3u);  // the sink's queue and two of mq's
  EXPECT_EQ(pool_.queues_on(1), 2u);
  EXPECT_EQ(pool_.ports_on(0), 2u);
  EXPECT_EQ(pool_.worker(0).counters().queues.load(), 3u);
  EXPECT_EQ(pool_.worker(1).counters().queues.load(), 2u);
  mq_.emit(20000);
  ASSERT_TRUE(wait_for(4 * 20000)) << sink_.received.load();
  EXPECT_EQ(mq_.overlaps.load(), 0u);
  EXPECT_EQ(mq_.bad_queue.load(), 0u);
  for (uint32_t q = 0; q < kQueues; ++q)
    EXPECT_GT(mq_.queue_counters(q).busy_cycles.get(), 0u) << "queue " << q;
}

TEST_F(WorkerPoolMqTest, PinnedPortKeepsEveryQueueOnItsWorker) {
  pool_.attach(&sink_, 0, nullptr);
  pool_.attach(&mq_, 1, nullptr, /*spread=*/false);
  EXPECT_EQ(pool_.queue_owners(&mq_), (std::vector<size_t>(kQueues, 1)));
  EXPECT_FALSE(pool_.move_queue(&mq_, kQueues, 0)) << "no such queue";
  EXPECT_FALSE(pool_.move_queue(&mq_, 0, 2)) << "no such worker";
}

TEST_F(WorkerPoolMqTest, QueuesMoveUnderTrafficNoneLostNoOverlap) {
  pool_.attach(&sink_, 0, nullptr);
  pool_.attach(&mq_, 0, nullptr);
  pool_.start();
  mq_.emit(200000);
  for (int round = 0; round < 40 && !mq_.drained(); ++round)
    for (uint32_t q = 0; q < kQueues; ++q)
      ASSERT_TRUE(pool_.move_queue(&mq_, q, size_t(round + q) % 2));
  ASSERT_TRUE(wait_for(4ull * 200000)) << sink_.received.load();
  EXPECT_EQ(mq_.overlaps.load(), 0u);
  ASSERT_TRUE(pool_.move(&mq_, 1));
  EXPECT_EQ(pool_.queue_owners(&mq_), (std::vector<size_t>(kQueues, 1)));
  EXPECT_EQ(pool_.worker(0).counters().queues.load(), 1u);
}

TEST_F(WorkerPoolMqTest, ControlChangeRunsWhileNoQueueIsPolled) {
  auto ex = pool_.make_executor(0);
  pool_.attach(&sink_, 0, nullptr);
  pool_.attach(&mq_, 0, ex.get());
  ASSERT_NE(pool_.queue_owners(&mq_)[1], pool_.queue_owners(&mq_)[0]) << "spread over both";
  pool_.start();
  mq_.emit(1000000);
  int seen_receiving = 0, runs = 0;
  for (int i = 0; i < 300 && !mq_.drained(); ++i) {
    ex->run_sync([&] {
      ++runs;
      if (mq_.any_receiving()) ++seen_receiving;
    });
  }
  EXPECT_GT(runs, 0);
  EXPECT_EQ(seen_receiving, 0) << "a queue was polled during a control change";
  ASSERT_TRUE(wait_for(4ull * 1000000)) << sink_.received.load();
  EXPECT_EQ(mq_.overlaps.load(), 0u);
}

}  // namespace
}  // namespace vnet::dataplane
