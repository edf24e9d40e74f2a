// Worker: a data-plane thread. It owns (polls) some (port, queue) units and forwards
// their frames to
// its list of destination ports: with one worker both lists are the same; with several
// (WorkerPool) every worker sends to every port, under the port's send lock. The control
// thread reaches it only through run_sync(), which runs a function on the worker
// between bursts and waits for it (DESIGN.md: one owner per queue). Polling is
// adaptive: the worker busy-polls while frames flow and, after an idle window, asks its
// ports for notifications and sleeps in epoll on their fds.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/counter.h"
#include "common/executor.h"
#include "common/unique_fd.h"
#include "dataplane/forwarder.h"
#include "ports/port.h"

namespace vnet::dataplane {

enum class PollMode {
  kAdaptive,  // busy-poll while frames flow, sleep after an idle window without any
  kPoll,      // never sleep (lowest latency, one core at 100%)
  kSleep,     // sleep as soon as a poll round finds nothing
};

struct WorkerConfig {
  PollMode poll_mode = PollMode::kAdaptive;
  // Adaptive: busy-poll at least idle_poll_us after the last frame. The window grows
  // (doubling, up to idle_poll_max_us) each time a frame woke the worker less than
  // idle_poll_max_us after it went to sleep, and halves (down to idle_poll_us) after a
  // longer sleep: KVM's halt-polling rule. idle_poll_max_us <= idle_poll_us: fixed window.
  uint32_t idle_poll_us = 200;
  uint32_t idle_poll_max_us = 2000;
  int cpu = -1;        // pin to this core when >= 0
  uint32_t index = 0;  // in its pool (thread name vnet-worker<index>)
  Forwarder::Config forwarding;
};

struct WorkerCounters {
  Counter loops, busy_loops, sleeps, wakeups;
  Counter hangups;      // watched fds that hung up or failed (no longer watched)
  Counter packets;      // frames received from ports and switched
  Counter busy_cycles;  // TSC cycles spent in poll rounds that moved frames
  Counter idle_cycles;  // TSC cycles spent in poll rounds that found nothing (not asleep)
  std::atomic<uint32_t> ports{0};           // ports it polls (at least one queue of)
  std::atomic<uint32_t> queues{0};          // (port, queue) units it polls
  Counter window_grows, window_shrinks;     // adaptive idle window changes
  std::atomic<uint32_t> idle_window_us{0};  // the adaptive idle window now
};

class Worker : public Executor {
 public:
  explicit Worker(const WorkerConfig& cfg);
  // One of several workers: shares `fdb` and locks each destination port around its
  // send_burst when `locked_send`.
  Worker(const WorkerConfig& cfg, std::shared_ptr<sw::Fdb> fdb, bool locked_send);
  ~Worker() override;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void start();
  void stop();

  // Runs fn on the worker thread between bursts and waits for it. Inline when the
  // thread is not running or when called from the worker itself.
  void run_sync(const std::function<void()>& fn) override;
  // Call (inside run_sync) after a port's wait fds changed.
  void wait_fds_changed() override { fds_dirty_.store(true, std::memory_order_relaxed); }

  // Holds the worker between two bursts (it runs nothing else) until destroyed: while
  // a port whose queues several workers poll is changed on one of them, the others
  // are parked. A no-op when the thread is not running or is the caller.
  class Parked {
   public:
    ~Parked();
    Parked(const Parked&) = delete;
    Parked& operator=(const Parked&) = delete;

   private:
    friend class Worker;
    Parked() = default;
    Worker* worker_ = nullptr;
    std::function<void()> fn_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool parked_ = false, released_ = false;
    struct Cmd {
      const std::function<void()>* fn;
      bool done;
    } cmd_{nullptr, false};
  };
  std::unique_ptr<Parked> park();

  // All through run_sync. add_port: a destination, and every queue of it polled if
  // `poll`.
  void add_port(ports::Port* p, bool poll = true);
  // p must be a destination already: polls queue q of it (every queue without q).
  void start_polling(ports::Port* p);
  void start_polling(ports::Port* p, uint32_t q);
  void stop_polling(ports::Port* p);  // every queue of p
  void stop_polling(ports::Port* p, uint32_t q);
  void remove_port(ports::Port* p);  // neither polled nor a destination any more

  // One receive queue of one port: what a worker polls (DESIGN.md "Queues").
  struct PollUnit {
    ports::Port* port;
    uint32_t queue;
    bool operator==(const PollUnit&) const = default;
  };

  // Worker thread only (inside run_sync).
  Forwarder& forwarder() { return forwarder_; }
  const std::vector<PollUnit>& units() const { return units_; }  // polled
  const std::vector<ports::Port*>& destinations() const { return dests_; }
  WorkerCounters& counters() { return counters_; }

 private:
  void loop();
  void run_commands();
  void rebuild_epoll();
  // Sleeps in epoll until a port or a command wakes it; true when a port did.
  bool sleep();
  // Grows or shrinks the adaptive idle window after a sleep of slept_ns.
  void adapt_window(bool traffic, uint64_t slept_ns, uint64_t base_ns, uint64_t max_ns,
                    uint64_t* window_ns);

  WorkerConfig cfg_;
  Forwarder forwarder_;
  void units_changed();          // counters and a rebuild of what is polled
  std::vector<PollUnit> units_;  // assigned to this worker
  std::vector<PollUnit> live_;   // polled now: units_ whose queue is live (rebuild_epoll)
  // The units that moved frames in the current round and how many: the round's busy
  // cycles are shared among them by frames at its end (one TSC read per round, not one
  // per unit: a TSC read costs about 100 cycles on this kind of virtual machine).
  struct BusyUnit {
    uint32_t unit;
    uint32_t packets;
  };
  std::vector<BusyUnit> round_busy_;
  std::vector<ports::Port*> dests_;  // forwarded to
  // Ports owing their guest a notification this round (Port::set_notify_list; one
  // worker only): one fence, then each flushed, at the end of the round.
  std::vector<ports::Port*> notify_;
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_{false};

  std::mutex mu_;
  std::condition_variable cv_;
  using Command = Parked::Cmd;
  std::vector<Command*> commands_;
  std::atomic<bool> pending_{false};

  UniqueFd wake_fd_;  // eventfd: a command is pending
  UniqueFd epfd_;
  // Set by the control side (inside run_sync, or while this worker is parked by
  // WorkerPool for a port it shares); read each round.
  std::atomic<bool> fds_dirty_{true};
  WorkerCounters counters_;
};

}  // namespace vnet::dataplane
