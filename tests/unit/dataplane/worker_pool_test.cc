// Unit tests for dataplane::WorkerPool with two real worker threads and fake ports that
// generate and count frames: frames cross between workers both ways and stay within a
// worker, none is lost or duplicated; send_burst to a port never overlaps itself (the
// send lock) and receive_burst never runs on two workers (a move hands the port over);
// control changes run under the port's send lock; placement picks the least loaded.
#include "dataplane/worker_pool.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "switch/mac.h"

namespace vnet::dataplane {
namespace {

constexpr uint32_t kPorts = 4;

std::array<uint8_t, 6> mac_of(uint32_t i) {
  return {0x52, 0x54, 0, 0, 0, uint8_t(0x10 + i)};
}
std::array<uint8_t, 6> broadcast() {
  return {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
}

// A port that, when told to, emits frames from its own MAC to a peer MAC, and counts
// what it is sent by source MAC. It notices overlapping calls that the locking and the
// placement must prevent.
class TrafficPort : public ports::Port {
 public:
  TrafficPort(uint32_t index) : Port("t" + std::to_string(index)), index_(index) {
    set_id(uint16_t(index + 1));
  }

  // Test thread (while the owner may be polling).
  void emit(std::array<uint8_t, 6> dst, uint32_t count) {
    dst_ = dst;
    remaining_.store(count, std::memory_order_release);
  }
  bool drained() const { return remaining_.load(std::memory_order_acquire) == 0; }
  uint64_t received_from(uint32_t src) const { return from_[src].load(std::memory_order_relaxed); }

  uint32_t receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t = 0) override {
    if (in_receive_.exchange(true)) overlaps.fetch_add(1);
    uint32_t left = remaining_.load(std::memory_order_acquire);
    uint32_t n = std::min(left, max);
    const auto src = mac_of(index_);
    for (uint32_t i = 0; i < n; ++i) {
      net::Packet& p = *pkts[i];
      p.vhdr = {};
      std::copy(dst_.begin(), dst_.end(), p.data);
      std::copy(src.begin(), src.end(), p.data + 6);
      p.data[12] = 0x08;
      p.data[13] = 0x00;
      p.len = 60;
    }
    if (n) remaining_.store(left - n, std::memory_order_release);
    in_receive_.store(false);
    return n;
  }

  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override {
    if (in_send_.exchange(true)) overlaps.fetch_add(1);
    for (uint32_t i = 0; i < n; ++i) {
      uint8_t last = pkts[i]->data[11];
      uint32_t src = last >= 0x10 && last < 0x10 + kPorts ? last - 0x10u : kPorts;
      // One writer at a time (the send lock): a load and a store, no read-modify-write.
      from_[src].store(from_[src].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }
    in_send_.store(false);
    return n;
  }
  void wait_fds(std::vector<WaitFd>&, uint32_t = 0) const override {}
  bool enable_notifications(uint32_t = 0) override { return !drained(); }
  void disable_notifications(uint32_t = 0) override {}
  ports::PortInfo info() const override { return {}; }

  std::atomic<uint64_t> overlaps{0};

 private:
  uint32_t index_;
  std::array<uint8_t, 6> dst_{};
  std::atomic<uint32_t> remaining_{0};
  std::atomic<bool> in_receive_{false}, in_send_{false};
  std::array<std::atomic<uint64_t>, kPorts + 1> from_{};
};

class WorkerPoolTest : public ::testing::Test {
 protected:
  WorkerPoolTest() : pool_(config()) {
    for (uint32_t i = 0; i < kPorts; ++i) ports_.push_back(std::make_unique<TrafficPort>(i));
  }
  ~WorkerPoolTest() override {
    for (auto& p : ports_) pool_.detach(p.get());
    pool_.stop();
  }
  static PoolConfig config() {
    PoolConfig c;
    c.cpus = {-1, -1};  // two workers, not pinned (the test may run on one core)
    c.poll_mode = PollMode::kPoll;
    return c;
  }
  TrafficPort& port(uint32_t i) { return *ports_[i]; }

  // Polls until every port has emitted all its frames and `done` holds, or 20 s pass.
  template <typename Pred>
  bool wait_for(Pred done) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < deadline) {
      bool drained = true;
      for (auto& p : ports_) drained &= p->drained();
      if (drained) {
        pool_.quiesce();  // the bursts in flight are delivered
        if (done()) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }

  // Every port says hello once (a broadcast), so that every MAC is learned.
  void learn_all() {
    for (uint32_t i = 0; i < kPorts; ++i) {
      port(i).emit(broadcast(), 1);
      ASSERT_TRUE(wait_for([&] { return port((i + 1) % kPorts).received_from(i) == 1; }));
    }
    ASSERT_EQ(pool_.fdb().size(), kPorts);
  }

  WorkerPool pool_;
  std::vector<std::unique_ptr<TrafficPort>> ports_;
};

TEST_F(WorkerPoolTest, FramesCrossWorkersBothWaysAndWithinAWorkerNoneLost) {
  // t0, t1 on worker 0; t2, t3 on worker 1.
  for (uint32_t i = 0; i < kPorts; ++i) pool_.attach(ports_[i].get(), i / 2, nullptr);
  pool_.start();
  EXPECT_EQ(pool_.worker(0).counters().ports.load(), 2u);
  EXPECT_EQ(pool_.worker(1).counters().ports.load(), 2u);
  learn_all();
  constexpr uint32_t kN = 200'000;
  // Each port already got one broadcast from every other (learn_all): counts are kN + 1.
  port(0).emit(mac_of(2), kN);  // worker 0 -> worker 1
  port(2).emit(mac_of(0), kN);  // worker 1 -> worker 0
  port(1).emit(mac_of(0), kN);  // within worker 0, to the port t2 also sends to
  port(3).emit(mac_of(2), kN);  // within worker 1, to the port t0 also sends to
  ASSERT_TRUE(wait_for([&] {
    return port(2).received_from(0) + port(0).received_from(2) + port(0).received_from(1) +
               port(2).received_from(3) ==
           4 * (kN + 1);
  })) << port(2).received_from(0)
      << " " << port(0).received_from(2) << " " << port(0).received_from(1) << " "
      << port(2).received_from(3) << " drained " << port(0).drained() << port(1).drained()
      << port(2).drained() << port(3).drained();
  EXPECT_EQ(port(2).received_from(0), kN + 1);
  EXPECT_EQ(port(0).received_from(2), kN + 1);
  EXPECT_EQ(port(0).received_from(1), kN + 1);
  EXPECT_EQ(port(2).received_from(3), kN + 1);
  // Unicast only after learning: nobody else got any of them.
  EXPECT_EQ(port(1).received_from(0), 1u);
  EXPECT_EQ(port(3).received_from(2), 1u);
  for (auto& p : ports_) EXPECT_EQ(p->overlaps.load(), 0u) << p->name();
  EXPECT_EQ(pool_.worker(0).counters().packets.get() + pool_.worker(1).counters().packets.get(),
            0u + 4 * kN + kPorts);
}

TEST_F(WorkerPoolTest, MovingAPortUnderTrafficLosesNothing) {
  for (uint32_t i = 0; i < kPorts; ++i) pool_.attach(ports_[i].get(), i / 2, nullptr);
  pool_.start();
  learn_all();
  constexpr uint32_t kN = 1'000'000;
  port(0).emit(mac_of(3), kN);
  port(3).emit(mac_of(0), kN);
  // Move t0 back and forth while it emits.
  int moves = 0;
  for (; moves < 50 && !port(0).drained(); ++moves) {
    ASSERT_TRUE(pool_.move(ports_[0].get(), size_t(1 - moves % 2)));
    EXPECT_EQ(pool_.owner(ports_[0].get()), size_t(1 - moves % 2));
  }
  EXPECT_GE(moves, 2);
  ASSERT_TRUE(wait_for([&] {
    return port(3).received_from(0) == kN + 1 && port(0).received_from(3) == kN + 1;
  })) << port(3).received_from(0)
      << " " << port(0).received_from(3);
  for (auto& p : ports_) EXPECT_EQ(p->overlaps.load(), 0u) << p->name();
  EXPECT_FALSE(pool_.move(ports_[0].get(), 2));  // no worker 2
}

TEST_F(WorkerPoolTest, PlacementPicksTheLeastLoadedWorker) {
  for (uint32_t i = 0; i < kPorts; ++i) {
    size_t w = pool_.least_loaded();
    pool_.attach(ports_[i].get(), w, nullptr);
  }
  EXPECT_EQ(pool_.ports_on(0), 2u);
  EXPECT_EQ(pool_.ports_on(1), 2u);
  EXPECT_EQ(pool_.owner(ports_[0].get()), 0u);
  EXPECT_EQ(pool_.owner(ports_[1].get()), 1u);
  pool_.detach(ports_[1].get());
  EXPECT_EQ(pool_.least_loaded(), 1u);
  EXPECT_EQ(pool_.owner(ports_[1].get()), pool_.size());  // not attached
}

TEST_F(WorkerPoolTest, ControlChangesRunOnTheOwnerUnderTheSendLock) {
  pool_.start();
  auto ex = pool_.make_executor(1);
  pool_.attach(ports_[0].get(), 1, ex.get());
  bool held = false;
  ex->run_sync([&] { held = !ports_[0]->tx_lock().try_lock(); });
  EXPECT_TRUE(held);
  ASSERT_TRUE(pool_.move(ports_[0].get(), 0));
  std::thread::id on;
  ex->run_sync([&] { on = std::this_thread::get_id(); });
  std::thread::id w0;
  pool_.worker(0).run_sync([&] { w0 = std::this_thread::get_id(); });
  EXPECT_EQ(on, w0);  // the executor followed the move
}

TEST(WorkerPoolSingle, OneWorkerTakesNoSendLock) {
  PoolConfig c;
  WorkerPool pool(c);
  ASSERT_EQ(pool.size(), 1u);
  TrafficPort p(0);
  auto ex = pool.make_executor(0);
  pool.attach(&p, 0, ex.get());
  pool.start();
  bool free_lock = false;
  ex->run_sync([&] {
    free_lock = p.tx_lock().try_lock();
    if (free_lock) p.tx_lock().unlock();
  });
  EXPECT_TRUE(free_lock);
  pool.detach(&p);
}

}  // namespace
}  // namespace vnet::dataplane
