// WorkerPool: creating the workers, placing ports on them and moving ports between them.
#include "dataplane/worker_pool.h"

#include "common/log.h"

namespace vnet::dataplane {

void PortExecutor::run_sync(const std::function<void()>& fn) {
  if (!locked_ || !port_) {
    worker_->run_sync(fn);
    return;
  }
  // On the owner, between its bursts; the lock keeps other workers' send_burst out.
  // (Taken on the worker, never on the control thread: the owner itself may need the
  // lock to send before it gets to run this.)
  worker_->run_sync([&] {
    port_->tx_lock().lock();
    fn();
    port_->tx_lock().unlock();
  });
}

WorkerPool::WorkerPool(const PoolConfig& cfg) : cpus_(cfg.cpus) {
  if (cpus_.empty()) cpus_.push_back(-1);
  fdb_ = Forwarder::make_fdb(cfg.forwarding);
  const bool locked = cpus_.size() > 1;
  for (size_t i = 0; i < cpus_.size(); ++i) {
    WorkerConfig wc;
    wc.poll_mode = cfg.poll_mode;
    wc.idle_poll_us = cfg.idle_poll_us;
    wc.idle_poll_max_us = cfg.idle_poll_max_us;
    wc.cpu = cpus_[i];
    wc.index = uint32_t(i);
    wc.forwarding = cfg.forwarding;
    workers_.push_back(std::make_unique<Worker>(wc, fdb_, locked));
  }
}

WorkerPool::~WorkerPool() {
  stop();
}

void WorkerPool::start() {
  for (auto& w : workers_) w->start();
}

void WorkerPool::stop() {
  for (auto& w : workers_) w->stop();
}

size_t WorkerPool::least_loaded() const {
  size_t best = 0;
  for (size_t i = 1; i < workers_.size(); ++i)
    if (ports_on(i) < ports_on(best)) best = i;
  return best;
}

size_t WorkerPool::ports_on(size_t w) const {
  size_t n = 0;
  for (const auto& [p, pl] : placement_) n += pl.worker == w;
  return n;
}

std::unique_ptr<PortExecutor> WorkerPool::make_executor(size_t w) {
  return std::make_unique<PortExecutor>(workers_[w].get(), workers_.size() > 1);
}

void WorkerPool::attach(ports::Port* p, size_t w, PortExecutor* ex) {
  if (ex) {
    ex->bind(p);
    ex->set_worker(workers_[w].get());
  }
  // Destinations first: once polled, its frames may go to any port.
  for (size_t i = 0; i < workers_.size(); ++i)
    if (i != w) workers_[i]->add_port(p, false);
  workers_[w]->add_port(p, true);
  placement_[p] = Placement{w, ex};
}

Status WorkerPool::move(ports::Port* p, size_t w) {
  auto it = placement_.find(p);
  if (it == placement_.end()) return Status::errorf("port {} is not attached", p->name());
  if (w >= workers_.size())
    return Status::errorf("worker {} does not exist (workers: 0..{})", w, workers_.size() - 1);
  Placement& pl = it->second;
  if (pl.worker == w) return Status::ok();
  // Between the two steps nobody polls p: its frames wait in its queue, none is lost.
  workers_[pl.worker]->stop_polling(p);
  if (pl.ex) pl.ex->set_worker(workers_[w].get());
  workers_[w]->start_polling(p);
  spdlog::info("port {}: moved from worker {} to worker {}", p->name(), pl.worker, w);
  pl.worker = w;
  return Status::ok();
}

void WorkerPool::detach(ports::Port* p) {
  auto it = placement_.find(p);
  if (it == placement_.end()) return;
  // The owner stops polling first (nothing new from p), then no one sends to it.
  workers_[it->second.worker]->stop_polling(p);
  for (auto& wk : workers_) wk->remove_port(p);
  placement_.erase(it);
}

size_t WorkerPool::owner(const ports::Port* p) const {
  auto it = placement_.find(p);
  return it == placement_.end() ? workers_.size() : it->second.worker;
}

void WorkerPool::quiesce() {
  for (auto& w : workers_) w->run_sync([] {});
}

}  // namespace vnet::dataplane
