// Worker: the poll loop, the command channel and the sleep/wake logic.
#include "dataplane/worker.h"

#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/cpu.h"
#include "common/log.h"

namespace vnet::dataplane {

namespace {
uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ULL + uint64_t(ts.tv_nsec);
}
inline uint64_t tsc() {
  return __builtin_ia32_rdtsc();
}
}  // namespace

Worker::Worker(const WorkerConfig& cfg)
    : cfg_(cfg), forwarder_(cfg.forwarding), wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_fd_) throw std::runtime_error(std::string("eventfd: ") + strerror(errno));
}

Worker::Worker(const WorkerConfig& cfg, std::shared_ptr<sw::Fdb> fdb, bool locked_send)
    : cfg_(cfg), forwarder_(std::move(fdb)), wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_fd_) throw std::runtime_error(std::string("eventfd: ") + strerror(errno));
  forwarder_.set_locked_send(locked_send);
  forwarder_.set_capture_producer(cfg.index);
}

Worker::~Worker() {
  stop();
}

void Worker::start() {
  if (running_) return;
  stop_ = false;
  running_ = true;
  thread_ = std::thread([this] { loop(); });
}

void Worker::stop() {
  if (!running_) return;
  stop_ = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = write(wake_fd_.get(), &one, sizeof(one));
  thread_.join();
  running_ = false;
}

void Worker::run_sync(const std::function<void()>& fn) {
  if (!running_ || std::this_thread::get_id() == thread_.get_id()) {
    fn();
    return;
  }
  Command cmd{&fn, false};
  std::unique_lock lk(mu_);
  commands_.push_back(&cmd);
  pending_.store(true, std::memory_order_release);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = write(wake_fd_.get(), &one, sizeof(one));
  cv_.wait(lk, [&] { return cmd.done; });
}

std::unique_ptr<Worker::Parked> Worker::park() {
  std::unique_ptr<Parked> pk(new Parked());
  if (!running_ || std::this_thread::get_id() == thread_.get_id()) return pk;
  Parked* raw = pk.get();
  raw->worker_ = this;
  raw->fn_ = [raw] {
    std::unique_lock lk(raw->mu_);
    raw->parked_ = true;
    raw->cv_.notify_all();
    raw->cv_.wait(lk, [raw] { return raw->released_; });
  };
  raw->cmd_ = Command{&raw->fn_, false};
  {
    std::lock_guard lk(mu_);
    commands_.push_back(&raw->cmd_);
    pending_.store(true, std::memory_order_release);
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = write(wake_fd_.get(), &one, sizeof(one));
  std::unique_lock lk(raw->mu_);
  raw->cv_.wait(lk, [raw] { return raw->parked_; });
  return pk;
}

Worker::Parked::~Parked() {
  if (!worker_) return;
  {
    std::lock_guard lk(mu_);
    released_ = true;
  }
  cv_.notify_all();
  // The worker marks the command done under its own lock; this object (and the
  // command in it) must outlive that.
  std::unique_lock lk(worker_->mu_);
  worker_->cv_.wait(lk, [this] { return cmd_.done; });
}

void Worker::run_commands() {
  std::vector<Command*> cmds;
  {
    std::lock_guard lk(mu_);
    cmds.swap(commands_);
    pending_.store(false, std::memory_order_relaxed);
  }
  for (Command* c : cmds) (*c->fn)();
  {
    std::lock_guard lk(mu_);
    for (Command* c : cmds) c->done = true;
  }
  cv_.notify_all();
}

namespace {
void erase_port(std::vector<ports::Port*>& v, ports::Port* p) {
  v.erase(std::remove(v.begin(), v.end(), p), v.end());
}
void insert_port(std::vector<ports::Port*>& v, ports::Port* p) {
  if (std::find(v.begin(), v.end(), p) == v.end()) v.push_back(p);
}
}  // namespace

void Worker::units_changed() {
  std::vector<ports::Port*> distinct;
  for (const PollUnit& u : units_) insert_port(distinct, u.port);
  counters_.ports.store(uint32_t(distinct.size()), std::memory_order_relaxed);
  counters_.queues.store(uint32_t(units_.size()), std::memory_order_relaxed);
  live_.reserve(units_.size());  // (no allocation on the data path)
  round_busy_.reserve(units_.size());
  fds_dirty_ = true;
}

void Worker::add_port(ports::Port* p, bool poll) {
  run_sync([&] {
    insert_port(dests_, p);
    if (poll)
      for (uint32_t q = 0; q < p->rx_queues(); ++q)
        if (std::find(units_.begin(), units_.end(), PollUnit{p, q}) == units_.end())
          units_.push_back({p, q});
    // Notifications batched per round: only where no other worker touches the port.
    if (!forwarder_.locked_send()) {
      p->set_notify_list(&notify_);
      notify_.reserve(dests_.size());  // (no allocation on the data path)
    }
    units_changed();
  });
}

void Worker::start_polling(ports::Port* p) {
  add_port(p, true);
}

void Worker::start_polling(ports::Port* p, uint32_t q) {
  run_sync([&] {
    insert_port(dests_, p);
    if (std::find(units_.begin(), units_.end(), PollUnit{p, q}) == units_.end())
      units_.push_back({p, q});
    units_changed();
  });
}

void Worker::stop_polling(ports::Port* p) {
  run_sync([&] {
    units_.erase(std::remove_if(units_.begin(), units_.end(),
                                [&](const PollUnit& u) { return u.port == p; }),
                 units_.end());
    units_changed();
  });
}

void Worker::stop_polling(ports::Port* p, uint32_t q) {
  run_sync([&] {
    units_.erase(std::remove(units_.begin(), units_.end(), PollUnit{p, q}), units_.end());
    units_changed();
  });
}

void Worker::remove_port(ports::Port* p) {
  run_sync([&] {
    units_.erase(std::remove_if(units_.begin(), units_.end(),
                                [&](const PollUnit& u) { return u.port == p; }),
                 units_.end());
    erase_port(dests_, p);
    p->set_notify_list(nullptr);  // (the list is empty between rounds)
    units_changed();
    forwarder_.port_removed(*p);
  });
}

void Worker::rebuild_epoll() {
  epfd_.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epfd_) {
    spdlog::error("worker: epoll_create1: {}", strerror(errno));
    return;
  }
  using WaitFd = ports::Port::WaitFd;
  auto watch = [&](int fd, WaitFd::Kind kind) {
    epoll_event ev{};
    // A front end's eventfd is never read (its owner can drain it between our wake-up
    // and a read, which would block): edge-triggered, every kick is one event and a
    // counter left non-zero is not reported again (common/frontend_fd.h).
    ev.events = EPOLLIN;
    if (kind == WaitFd::kFrontendEventFd) ev.events |= EPOLLET;
    ev.data.u64 = uint64_t(uint32_t(fd)) | (uint64_t(kind) << 32);
    if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST) {
      static RateLimit rl;
      VNET_LOG_RL(rl, spdlog::level::warn, "worker: cannot watch fd {}: {}", fd, strerror(errno));
    }
  };
  watch(wake_fd_.get(), WaitFd::kOwnEventFd);
  fds_dirty_.store(false, std::memory_order_relaxed);
  // Only live queues are polled and watched: a port that offers more queue pairs than
  // its guest uses costs nothing for the others. Their state changes come with
  // wait_fds_changed().
  live_.clear();
  std::vector<WaitFd> fds;
  for (const PollUnit& u : units_) {
    if (!u.port->rx_queue_live(u.queue)) continue;
    live_.push_back(u);
    u.port->wait_fds(fds, u.queue);
  }
  for (auto& w : fds) watch(w.fd, w.kind);
  forwarder_.set_ports(dests_);
}

bool Worker::sleep() {
  bool traffic = false;
  bool pending = false;
  for (const PollUnit& u : live_) pending |= u.port->enable_notifications(u.queue);
  if (!pending && !pending_.load(std::memory_order_acquire) && !stop_) {
    counters_.sleeps.add();
    epoll_event evs[64];
    int n = epoll_wait(epfd_.get(), evs, 64, 1000);
    for (int i = 0; i < n; ++i) {
      const int fd = int(uint32_t(evs[i].data.u64));
      traffic |= fd != wake_fd_.get();
      if (evs[i].events & (EPOLLHUP | EPOLLERR)) {
        // Hung up (or failed): it will never bring work again and, level-triggered,
        // would wake us at once forever. Not watched until the port's fds change.
        epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
        counters_.hangups.add();
        static RateLimit rl;
        VNET_LOG_RL(rl, spdlog::level::warn, "worker {}: fd {} hung up; no longer watched",
                    cfg_.index, fd);
        continue;
      }
      // Only our own eventfds are read (to reset them): a TAP fd keeps its frames and
      // a front end's kick fd is edge-triggered.
      if ((evs[i].data.u64 >> 32) != ports::Port::WaitFd::kOwnEventFd) continue;
      uint64_t v;
      [[maybe_unused]] ssize_t r = read(fd, &v, sizeof(v));
    }
    if (n > 0) counters_.wakeups.add();
  }
  for (const PollUnit& u : live_) u.port->disable_notifications(u.queue);
  return traffic;
}

void Worker::adapt_window(bool traffic, uint64_t slept_ns, uint64_t base_ns, uint64_t max_ns,
                          uint64_t* window_ns) {
  // A frame that came while the largest window would still have been polling: polling
  // longer would have saved this wake-up (tens of microseconds on a virtual machine).
  uint64_t w = *window_ns;
  if (traffic && slept_ns < max_ns) {
    w = std::min(max_ns, std::max(w * 2, base_ns));
    if (w != *window_ns) counters_.window_grows.add();
  } else if (slept_ns >= max_ns && w > base_ns) {
    w = std::max(base_ns, w / 2);
    counters_.window_shrinks.add();
  }
  *window_ns = w;
  counters_.idle_window_us.store(uint32_t(w / 1000), std::memory_order_relaxed);
}

void Worker::loop() {
  if (cfg_.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cfg_.cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
      spdlog::warn("worker {}: cannot pin to cpu {}", cfg_.index, cfg_.cpu);
  }
  const std::string thread_name = "vnet-worker" + std::to_string(cfg_.index);
  pthread_setname_np(pthread_self(), thread_name.c_str());
  net::PacketBatch batch;
  const uint64_t base_ns =
      cfg_.poll_mode == PollMode::kSleep ? 0 : uint64_t(cfg_.idle_poll_us) * 1000;
  const uint64_t max_ns = cfg_.poll_mode == PollMode::kAdaptive
                              ? std::max(base_ns, uint64_t(cfg_.idle_poll_max_us) * 1000)
                              : base_ns;
  uint64_t idle_ns = base_ns;  // the idle window after traffic
  // The window of this idle spell: idle_ns once frames moved, base_ns after a wake-up
  // that brought none (a control command), so that vnetctl does not keep a core busy.
  uint64_t window_ns = idle_ns;
  counters_.idle_window_us.store(uint32_t(idle_ns / 1000), std::memory_order_relaxed);
  const bool may_sleep = cfg_.poll_mode != PollMode::kPoll;
  uint64_t last_work = monotonic_ns();
  uint64_t now = last_work;
  uint32_t idle_iters = 0;
  // Cycles are accumulated locally and published now and then (Counter has one writer,
  // but each add is still a store the control thread may read).
  uint64_t busy_cycles = 0, idle_cycles = 0, packets = 0;
  auto publish = [&] {
    counters_.busy_cycles.add(busy_cycles);
    counters_.idle_cycles.add(idle_cycles);
    counters_.packets.add(packets);
    busy_cycles = idle_cycles = packets = 0;
  };
  while (!stop_.load(std::memory_order_relaxed)) {
    if (pending_.load(std::memory_order_acquire)) {
      publish();
      run_commands();
    }
    if (fds_dirty_.load(std::memory_order_relaxed)) rebuild_epoll();
    counters_.loops.add();
    const uint64_t t0 = tsc();
    uint32_t work = 0;
    const size_t n_units = live_.size();
    for (size_t i = 0; i < n_units; ++i) {
      const PollUnit u = live_[i];
      // The next unit's rings: their misses overlap with this unit's work.
      const PollUnit& next = live_[i + 1 < n_units ? i + 1 : 0];
      next.port->prefetch(!forwarder_.locked_send(), next.queue);
      uint32_t n = u.port->receive_burst(batch.ptrs(), net::kBurst, u.queue);
      if (n) {
        forwarder_.forward(*u.port, batch.ptrs(), n, dests_, now);
        u.port->receive_done(u.queue);
        work += n;
        round_busy_.push_back({uint32_t(i), n});  // (reserved: no allocation)
      }
    }
    if (!notify_.empty()) {
      // Every used index of the round is published: one fence orders them all before
      // the reads of the drivers' notification wishes (virtio 1.2 section 2.7.7.2).
      std::atomic_thread_fence(std::memory_order_seq_cst);
      for (ports::Port* p : notify_) p->flush_notify();
      notify_.clear();
    }
    const uint64_t t1 = tsc();
    if (work) {
      busy_cycles += t1 - t0;
      // Per-queue busy cycles: the round's, shared by the frames each unit moved.
      if (round_busy_.size() == 1) {
        const PollUnit& u = live_[round_busy_[0].unit];
        u.port->queue_counters(u.queue).busy_cycles.add(t1 - t0);
      } else {
        const uint64_t per_packet = (t1 - t0) / work;
        for (const BusyUnit& b : round_busy_) {
          const PollUnit& u = live_[b.unit];
          u.port->queue_counters(u.queue).busy_cycles.add(per_packet * b.packets);
        }
      }
      round_busy_.clear();
      packets += work;
      counters_.busy_loops.add();
      idle_iters = 0;
      window_ns = idle_ns;
      if ((counters_.busy_loops.get() & 1023) == 0) {
        publish();
        now = monotonic_ns();
        forwarder_.tick(now);
      }
      continue;
    }
    idle_cycles += t1 - t0;
    // Idle: look at the clock only now and then, sleep after the idle window.
    if (idle_iters == 0) last_work = now = monotonic_ns();
    if ((++idle_iters & 63) != 0 && idle_ns != 0) {
      cpu_relax();
      continue;
    }
    publish();
    now = monotonic_ns();
    forwarder_.tick(now);
    if (!may_sleep) continue;
    if (now - last_work < window_ns) {
      // Past the base window the worker polls on speculation only: like KVM's halt
      // polling, which stops when another task wants the CPU, it lets any runnable task
      // (a guest's vCPU, a front end) go first.
      if (now - last_work >= base_ns) sched_yield();
      continue;
    }
    const uint64_t asleep = now;
    const bool traffic = sleep();
    now = last_work = monotonic_ns();
    idle_iters = 0;
    if (max_ns > base_ns) adapt_window(traffic, now - asleep, base_ns, max_ns, &idle_ns);
    window_ns = traffic ? idle_ns : base_ns;
  }
  publish();
}

}  // namespace vnet::dataplane
