// Unit tests for dataplane::Worker running its thread: the per-poll burst budget
// (a port that always has frames cannot starve the others: every port is polled once
// per round for at most net::kBurst frames), and the control thread changing ports and
// reading counters through run_sync while frames flow (the ThreadSanitizer stage of
// scripts/test runs these).
#include "dataplane/worker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include <sys/eventfd.h>
#include <unistd.h>

#include "common/unique_fd.h"
#include "ports/port.h"

namespace vnet::dataplane {
namespace {

using Clock = std::chrono::steady_clock;

// A port that hands the worker frames from its MAC (an unlimited supply, or `quota`
// frames) and counts what the switch sends it. Frame counts are atomics: the worker
// writes them, the test thread reads them.
class SourcePort : public ports::Port {
 public:
  static constexpr uint64_t kUnlimited = UINT64_MAX;
  SourcePort(std::string name, uint8_t mac_last, uint64_t quota)
      : Port(std::move(name)), mac_last_(mac_last), quota_(quota) {}

  uint32_t receive_burst(net::Packet* const* pkts, uint32_t max, uint32_t = 0) override {
    polls.fetch_add(1, std::memory_order_relaxed);
    uint32_t largest = largest_max.load(std::memory_order_relaxed);
    if (max > largest) largest_max.store(max, std::memory_order_relaxed);
    uint64_t left = quota_.load(std::memory_order_relaxed);
    const uint32_t n = uint32_t(std::min<uint64_t>(max, left));
    for (uint32_t i = 0; i < n; ++i) fill(*pkts[i]);
    // Only this thread takes quota; add_quota may add at any time, so take by
    // subtracting (a store of left - n would lose what was added since the load).
    if (left != kUnlimited && n != 0) quota_.fetch_sub(n, std::memory_order_relaxed);
    given.fetch_add(n, std::memory_order_relaxed);
    return n;
  }
  uint32_t send_burst(net::Packet* const*, uint32_t n) override {
    received.fetch_add(n, std::memory_order_relaxed);
    return n;
  }
  void wait_fds(std::vector<WaitFd>&, uint32_t = 0) const override {}
  bool enable_notifications(uint32_t = 0) override {
    return quota_.load(std::memory_order_relaxed) != 0;
  }
  void disable_notifications(uint32_t = 0) override {}
  ports::PortInfo info() const override { return {}; }

  void add_quota(uint64_t n) { quota_.fetch_add(n, std::memory_order_relaxed); }

  std::atomic<uint64_t> polls{0}, given{0}, received{0};
  std::atomic<uint32_t> largest_max{0};

 private:
  // Broadcast from 52:54:00:00:00:<mac_last>: flooded to every other port.
  void fill(net::Packet& p) const {
    std::memset(&p.vhdr, 0, sizeof(p.vhdr));
    std::memset(p.data, 0xff, 6);
    const uint8_t src[6] = {0x52, 0x54, 0x00, 0x00, 0x00, mac_last_};
    std::memcpy(p.data + 6, src, 6);
    p.data[12] = 0x88;
    p.data[13] = 0xb5;
    std::memset(p.data + 14, 0, 46);
    p.len = 60;
  }
  const uint8_t mac_last_;
  std::atomic<uint64_t> quota_;
};

template <typename Pred>
bool wait_for(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

WorkerConfig poll_config() {
  WorkerConfig cfg;
  cfg.poll_mode = PollMode::kPoll;  // the fake ports have no fds to sleep on
  return cfg;
}

TEST(WorkerBudget, FloodingPortDoesNotStarveAnother) {
  // Ports outlive the worker (declared first): a failed ASSERT stops it before they go.
  SourcePort flood("flood", 1, SourcePort::kUnlimited);
  SourcePort paced("paced", 2, 0);
  SourcePort sink("sink", 3, 0);
  Worker w(poll_config());
  flood.set_id(1);
  paced.set_id(2);
  sink.set_id(3);
  w.add_port(&flood);
  w.add_port(&paced);
  w.add_port(&sink);
  w.start();
  ASSERT_TRUE(wait_for([&] { return flood.given.load() > 10000; })) << "the worker is not polling";
  // 1000 frames appear on the other port while the first keeps flooding.
  constexpr uint64_t kPaced = 1000;
  paced.add_quota(kPaced);
  ASSERT_TRUE(wait_for([&] { return paced.given.load() == kPaced; }))
      << "the paced port's frames were not taken while another port flooded";
  w.stop();
  // Each round polls every port once for at most kBurst frames: while the paced port's
  // 1000 frames took 32 polls, the flood got one burst per poll, no more.
  EXPECT_LE(flood.largest_max.load(), net::kBurst);
  EXPECT_LE(paced.largest_max.load(), net::kBurst);
  const uint64_t polls_flood = flood.polls.load(), polls_paced = paced.polls.load();
  EXPECT_LE(polls_flood, polls_paced + 1);
  EXPECT_LE(polls_paced, polls_flood + 1);
  // Flooded broadcasts: the sink got every frame of both sources that the worker took.
  EXPECT_EQ(sink.received.load(), flood.given.load() + paced.given.load());
  EXPECT_EQ(flood.received.load(), paced.given.load());
}

// A sink that owes its guest a notification after each burst (as a vhost-user port
// does), through the worker's per-round list when it has one.
class NotifyingPort : public SourcePort {
 public:
  NotifyingPort(std::string name, uint8_t mac_last) : SourcePort(std::move(name), mac_last, 0) {}
  uint32_t send_burst(net::Packet* const* pkts, uint32_t n) override {
    sends.fetch_add(1, std::memory_order_relaxed);
    if (std::vector<Port*>* list = notify_list()) {
      if (!due_.load(std::memory_order_relaxed)) list->push_back(this);
      due_.store(true, std::memory_order_relaxed);
    } else {
      at_once.fetch_add(1, std::memory_order_relaxed);
    }
    return SourcePort::send_burst(pkts, n);
  }
  void flush_notify() override {
    if (due_.load(std::memory_order_relaxed)) flushed.fetch_add(1, std::memory_order_relaxed);
    due_.store(false, std::memory_order_relaxed);
  }
  bool due() const { return due_.load(std::memory_order_relaxed); }
  std::atomic<uint64_t> sends{0}, at_once{0}, flushed{0};

 private:
  std::atomic<bool> due_{false};
};

// One worker batches its ports' notifications: whatever a round owes is flushed at the
// end of that round (nothing is left owed), once per port however many bursts it got.
// Where other workers may send to the port (locked sends), the port notifies at once.
TEST(WorkerNotify, OneWorkerFlushesEachRoundsNotificationsAtItsEnd) {
  for (bool locked : {false, true}) {
    SourcePort a("a", 1, 0), b("b", 2, 0);
    NotifyingPort sink("sink", 3);
    WorkerConfig cfg = poll_config();
    Worker w(cfg, Forwarder::make_fdb(cfg.forwarding), locked);
    a.set_id(1);
    b.set_id(2);
    sink.set_id(3);
    w.add_port(&a);
    w.add_port(&b);
    w.add_port(&sink);
    w.start();
    constexpr uint64_t kFrames = 20000;
    a.add_quota(kFrames);
    b.add_quota(kFrames);
    ASSERT_TRUE(wait_for([&] { return sink.received.load() == 2 * kFrames; }))
        << "locked " << locked << ": " << sink.received.load();
    w.run_sync([] {});  // a round boundary: the last round has ended
    EXPECT_FALSE(sink.due()) << "a notification was left owed, locked " << locked;
    if (!locked) {
      EXPECT_EQ(sink.at_once.load(), 0u);
      // Both sources flood the sink in one round: two bursts, one flush.
      EXPECT_GT(sink.flushed.load(), 0u);
      EXPECT_LT(sink.flushed.load(), sink.sends.load());
    } else {
      EXPECT_EQ(sink.at_once.load(), sink.sends.load());
      EXPECT_EQ(sink.flushed.load(), 0u);
    }
    w.stop();
  }
}

TEST(WorkerControl, PortsAddedAndRemovedWhileForwarding) {
  SourcePort flood("flood", 1, SourcePort::kUnlimited);
  Worker w(WorkerConfig{});
  flood.set_id(1);
  w.add_port(&flood);
  w.start();
  for (int round = 0; round < 50; ++round) {
    SourcePort sink("sink" + std::to_string(round), 2, 0);
    sink.set_id(2);
    w.add_port(&sink);
    const bool fed = wait_for([&] { return sink.received.load() > 0; });
    EXPECT_TRUE(fed) << "round " << round << ": an added port gets no flooded frames";
    uint64_t fdb_size = 0, packets = 0;
    w.run_sync([&] {  // what vnetctl counters does on the control thread
      fdb_size = w.forwarder().fdb().size();
      packets = w.counters().packets.get();
    });
    EXPECT_GE(fdb_size, 1u);
    EXPECT_GT(packets + w.counters().busy_loops.get(), 0u);
    w.remove_port(&sink);
    // Removal is synchronous: the worker never touches the port again.
    const uint64_t after = sink.received.load();
    w.run_sync([] {});
    EXPECT_EQ(sink.received.load(), after) << "round " << round;
    if (!fed) break;
  }
  w.stop();
  EXPECT_GT(flood.given.load(), 0u);
}

// A SourcePort that the worker can sleep on: frames come with a kick on an eventfd, the
// way a guest kicks a vhost-user port.
class KickPort : public SourcePort {
 public:
  KickPort(std::string name, uint8_t mac_last)
      : SourcePort(std::move(name), mac_last, 0), kick_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  void wait_fds(std::vector<WaitFd>& out, uint32_t = 0) const override {
    out.push_back({kick_.get(), WaitFd::kOwnEventFd});
  }
  void send_one() {
    add_quota(1);
    uint64_t one = 1;
    [[maybe_unused]] ssize_t r = write(kick_.get(), &one, sizeof(one));
  }

 private:
  UniqueFd kick_;
};

// A kicking source and a sink it floods to; declared before the Worker so that they
// outlive it.
struct KickPair {
  KickPort src{"src", 1};
  SourcePort sink{"sink", 2, 0};
  KickPair() {
    src.set_id(1);
    sink.set_id(2);
  }
  void attach(Worker& w) {
    w.add_port(&src);
    w.add_port(&sink);
  }
};

WorkerConfig adaptive_config(uint32_t base_us, uint32_t max_us) {
  WorkerConfig cfg;
  cfg.poll_mode = PollMode::kAdaptive;
  cfg.idle_poll_us = base_us;
  cfg.idle_poll_max_us = max_us;
  return cfg;
}

// Kicks each arriving right after the worker fell asleep: every wake-up came well within
// the largest window, so the window doubles each time up to the cap; then a quiet spell
// longer than the cap (the 1 s epoll timeout) halves it again.
TEST(WorkerAdaptive, IdleWindowGrowsOnQuickWakeupsAndShrinksWhenQuiet) {
  KickPair ports;
  KickPort& src = ports.src;
  SourcePort& sink = ports.sink;
  // A large cap, so that a loaded machine's scheduling delays stay well inside it.
  Worker w(adaptive_config(1000, 400000));
  ports.attach(w);
  EXPECT_EQ(w.counters().idle_window_us.load(), 0u);
  w.start();
  ASSERT_TRUE(wait_for([&] { return w.counters().sleeps.get() >= 1; })) << "never slept";
  EXPECT_EQ(w.counters().idle_window_us.load(), 1000u);
  // 1 ms -> 2 -> 4 -> ... -> 256 -> 400 (the cap): nine grows; two more kicks at the cap.
  for (int i = 1; i <= 11; ++i) {
    const uint64_t sleeps = w.counters().sleeps.get();
    src.send_one();
    ASSERT_TRUE(wait_for([&] { return sink.received.load() == uint64_t(i); })) << "kick " << i;
    ASSERT_TRUE(wait_for([&] { return w.counters().sleeps.get() > sleeps; }))
        << "no sleep after kick " << i;
  }
  EXPECT_EQ(w.counters().idle_window_us.load(), 400000u);
  EXPECT_EQ(w.counters().window_grows.get(), 9u);
  EXPECT_EQ(w.counters().wakeups.get(), 11u);
  // A control command wakes it without frames: back to sleep after the 1 ms base window,
  // not the grown 400 ms one (vnetctl must not keep a core busy).
  const uint64_t sleeps = w.counters().sleeps.get();
  const auto t0 = Clock::now();
  w.run_sync([] {});
  ASSERT_TRUE(wait_for([&] { return w.counters().sleeps.get() > sleeps; }));
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(300));
  EXPECT_EQ(w.counters().idle_window_us.load(), 400000u);
  // Nothing more: the next wake-up is the epoll timeout, a sleep longer than the cap.
  ASSERT_TRUE(
      wait_for([&] { return w.counters().window_shrinks.get() >= 1; }, std::chrono::seconds(5)));
  EXPECT_EQ(w.counters().idle_window_us.load(), 200000u);
  w.stop();
}

TEST(WorkerAdaptive, FixedWindowWhenTheCapIsNotAboveIt) {
  KickPair ports;
  KickPort& src = ports.src;
  SourcePort& sink = ports.sink;
  Worker w(adaptive_config(100, 100));
  ports.attach(w);
  w.start();
  for (int i = 1; i <= 4; ++i) {
    ASSERT_TRUE(wait_for([&] { return w.counters().sleeps.get() >= uint64_t(i); }));
    src.send_one();
    ASSERT_TRUE(wait_for([&] { return sink.received.load() == uint64_t(i); })) << "kick " << i;
  }
  w.stop();
  EXPECT_EQ(w.counters().window_grows.get(), 0u);
  EXPECT_EQ(w.counters().idle_window_us.load(), 100u);
}

}  // namespace
}  // namespace vnet::dataplane
