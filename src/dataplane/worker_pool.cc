// WorkerPool: creating the workers, placing ports on them and moving ports between them.
#include "dataplane/worker_pool.h"

#include <algorithm>

#include "common/log.h"

namespace vnet::dataplane {

void PortExecutor::run_sync(const std::function<void()>& fn) {
  // The other workers polling a queue of the port wait between bursts meanwhile (in
  // worker index order, as every park is: the control thread is the only parker).
  std::vector<std::unique_ptr<Worker::Parked>> parked;
  parked.reserve(others_.size());
  for (Worker* w : others_) parked.push_back(w->park());
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

void PortExecutor::wait_fds_changed() {
  worker_->wait_fds_changed();
  for (Worker* w : others_) w->wait_fds_changed();  // (parked now)
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
    if (queues_on(i) < queues_on(best)) best = i;
  return best;
}

size_t WorkerPool::ports_on(size_t w) const {
  size_t n = 0;
  for (const auto& [p, pl] : placement_)
    n += std::find(pl.workers.begin(), pl.workers.end(), w) != pl.workers.end();
  return n;
}

size_t WorkerPool::queues_on(size_t w) const {
  size_t n = 0;
  for (const auto& [p, pl] : placement_)
    n += size_t(std::count(pl.workers.begin(), pl.workers.end(), w));
  return n;
}

std::unique_ptr<PortExecutor> WorkerPool::make_executor(size_t w) {
  return std::make_unique<PortExecutor>(workers_[w].get(), workers_.size() > 1);
}

void WorkerPool::update_executor(const Placement& pl) {
  if (!pl.ex) return;
  const size_t home = pl.workers[0];
  std::vector<size_t> others;
  for (size_t w : pl.workers)
    if (w != home && std::find(others.begin(), others.end(), w) == others.end())
      others.push_back(w);
  std::sort(others.begin(), others.end());
  std::vector<Worker*> ws;
  for (size_t w : others) ws.push_back(workers_[w].get());
  pl.ex->set_worker(workers_[home].get());
  pl.ex->set_others(std::move(ws));
}

void WorkerPool::attach(ports::Port* p, size_t w, PortExecutor* ex, bool spread) {
  if (ex) ex->bind(p);
  Placement pl{std::vector<size_t>(p->rx_queues(), w), ex};
  if (spread && workers_.size() > 1) {
    // Queue by queue onto the least loaded worker, counting the queues placed so far;
    // among equals the one after the previous queue's, so a port alone spreads
    // round-robin from `w`.
    std::vector<size_t> load(workers_.size());
    for (size_t i = 0; i < workers_.size(); ++i) load[i] = queues_on(i);
    ++load[w];
    size_t prev = w;
    for (uint32_t q = 1; q < p->rx_queues(); ++q) {
      size_t best = (prev + 1) % workers_.size();
      for (size_t k = 1; k < workers_.size(); ++k) {
        const size_t c = (prev + 1 + k) % workers_.size();
        if (load[c] < load[best]) best = c;
      }
      pl.workers[q] = best;
      ++load[best];
      prev = best;
    }
  }
  update_executor(pl);
  // Destinations first: once polled, its frames may go to any port.
  for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->add_port(p, false);
  for (uint32_t q = 0; q < p->rx_queues(); ++q) workers_[pl.workers[q]]->start_polling(p, q);
  placement_[p] = std::move(pl);
}

Status WorkerPool::move(ports::Port* p, size_t w) {
  auto it = placement_.find(p);
  if (it == placement_.end()) return Status::errorf("port {} is not attached", p->name());
  if (w >= workers_.size())
    return Status::errorf("worker {} does not exist (workers: 0..{})", w, workers_.size() - 1);
  for (uint32_t q = 0; q < p->rx_queues(); ++q)
    if (Status st = move_queue(p, q, w); !st) return st;
  return Status::ok();
}

Status WorkerPool::move_queue(ports::Port* p, uint32_t q, size_t w) {
  auto it = placement_.find(p);
  if (it == placement_.end()) return Status::errorf("port {} is not attached", p->name());
  if (w >= workers_.size())
    return Status::errorf("worker {} does not exist (workers: 0..{})", w, workers_.size() - 1);
  if (q >= p->rx_queues())
    return Status::errorf("queue {} does not exist (port {} has queues 0..{})", q, p->name(),
                          p->rx_queues() - 1);
  Placement& pl = it->second;
  const size_t from = pl.workers[q];
  if (from == w) return Status::ok();
  // Between the two steps nobody polls the queue: its frames wait in it, none is lost.
  workers_[from]->stop_polling(p, q);
  pl.workers[q] = w;
  update_executor(pl);
  workers_[w]->start_polling(p, q);
  spdlog::info("port {}: queue {} moved from worker {} to worker {}", p->name(), q, from, w);
  return Status::ok();
}

void WorkerPool::detach(ports::Port* p) {
  auto it = placement_.find(p);
  if (it == placement_.end()) return;
  // The owners stop polling first (nothing new from p), then no one sends to it.
  for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->stop_polling(p);
  for (auto& wk : workers_) wk->remove_port(p);
  placement_.erase(it);
}

size_t WorkerPool::owner(const ports::Port* p) const {
  auto it = placement_.find(p);
  return it == placement_.end() ? workers_.size() : it->second.workers[0];
}

std::vector<size_t> WorkerPool::queue_owners(const ports::Port* p) const {
  auto it = placement_.find(p);
  return it == placement_.end() ? std::vector<size_t>{} : it->second.workers;
}

void WorkerPool::quiesce() {
  for (auto& w : workers_) w->run_sync([] {});
}

}  // namespace vnet::dataplane
