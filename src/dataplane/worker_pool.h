// WorkerPool: the data-plane workers of one switch (issue 4, "worker placement"): one
// thread per configured CPU, each polling the (port, queue) units placed on it and
// forwarding to every port; one FDB shared by all. Placement and moves are
// control-thread operations that reach the workers through run_sync, so each receive
// queue is polled by exactly one worker at any time (OVS-DPDK's rxq-to-PMD assignment,
// with per-port transmit locks); a multiqueue port's queues spread over the workers.
//
// With one worker nothing is shared and nothing is locked: the hot path is the one of a
// single Worker. With several, a sender holds the destination port's send lock once per
// burst, and each port's control changes (PortExecutor::run_sync) run on its owner while
// holding that lock, so they never overlap a send from another worker.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <vector>

#include "common/executor.h"
#include "common/result.h"
#include "dataplane/worker.h"
#include "ports/port.h"

namespace vnet::dataplane {

struct PoolConfig {
  // One worker per entry, pinned to that CPU (-1: not pinned). Empty: one unpinned worker.
  std::vector<int> cpus;
  PollMode poll_mode = PollMode::kAdaptive;
  uint32_t idle_poll_us = 200;
  uint32_t idle_poll_max_us = 2000;
  Forwarder::Config forwarding;
};

// The Executor a port is built with: runs its control changes on the worker that owns
// its queue 0 now (a move re-targets it), under its send lock when several workers may
// send, while every other worker polling one of its queues is parked between bursts.
class PortExecutor : public Executor {
 public:
  PortExecutor(Worker* w, bool locked) : worker_(w), locked_(locked) {}
  void run_sync(const std::function<void()>& fn) override;
  void wait_fds_changed() override;
  void bind(ports::Port* p) { port_ = p; }
  // Control thread, between run_syncs: `w` runs the changes, `others` are parked.
  void set_worker(Worker* w) { worker_ = w; }
  void set_others(std::vector<Worker*> others) { others_ = std::move(others); }

 private:
  Worker* worker_;
  std::vector<Worker*> others_;
  ports::Port* port_ = nullptr;
  bool locked_;
};

class WorkerPool {
 public:
  explicit WorkerPool(const PoolConfig& cfg);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  size_t size() const { return workers_.size(); }
  Worker& worker(size_t i) { return *workers_[i]; }
  const std::vector<int>& cpus() const { return cpus_; }
  sw::Fdb& fdb() { return *fdb_; }
  void start();
  void stop();

  // --- control thread ---
  // The worker with the fewest (port, queue) units (the lowest index among equals).
  size_t least_loaded() const;
  // An executor for a port that will be attached to worker `w` (< size()).
  std::unique_ptr<PortExecutor> make_executor(size_t w);
  // Every worker sends to p from now on; worker `w` polls its queue 0 and, with
  // `spread`, queue q goes to the worker with the fewest units then (ties: the next
  // after the previous queue's), else to `w` as well. `ex` (may be null: a port
  // without control changes on the worker) must outlive the port.
  void attach(ports::Port* p, size_t w, PortExecutor* ex, bool spread = true);
  // Moves the polling of every queue of p to worker `w`: the old owner stops polling
  // it, then the new one starts. Frames stay in the port's queue meanwhile.
  Status move(ports::Port* p, size_t w);
  // The same for queue q of p alone.
  Status move_queue(ports::Port* p, uint32_t q, size_t w);
  // No worker polls or sends to p any more; its FDB entries are gone.
  void detach(ports::Port* p);
  // The worker polling queue 0 of p (size() if p is not attached).
  size_t owner(const ports::Port* p) const;
  // The worker polling each queue of p (empty if p is not attached).
  std::vector<size_t> queue_owners(const ports::Port* p) const;
  size_t ports_on(size_t w) const;   // ports with at least one queue on w
  size_t queues_on(size_t w) const;  // (port, queue) units on w
  // Waits until every worker has finished the burst it was in (after publishing a
  // change that workers read without a lock, e.g. Port::set_vlan).
  void quiesce();

 private:
  struct Placement {
    std::vector<size_t> workers;  // per queue
    PortExecutor* ex;
  };
  void update_executor(const Placement& pl);
  std::vector<int> cpus_;
  std::shared_ptr<sw::Fdb> fdb_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::map<const ports::Port*, Placement> placement_;
};

}  // namespace vnet::dataplane
