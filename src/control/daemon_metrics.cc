// Daemon::metrics_text: every counter vnetctl shows, in the Prometheus text format
// (prometheus_text.h), for the metrics endpoint (metrics_server.h). Runs on the control
// thread, as vnetctl's requests do: counters are single-writer atomics, read without
// stopping any worker. Names follow Prometheus conventions (vnet_ prefix, base units,
// _total for counters); ratios such as packets per poll round or cycles per packet
// are left to queries over the counters.
//
// Per-port series carry the label `port`. Per-queue series, when ports have several
// queue pairs, take the same families with a `queue` label added (port_labels below).
#include <string>
#include <vector>

#include "control/control_server.h"
#include "control/daemon.h"
#include "control/metrics_server.h"
#include "control/prometheus_text.h"

namespace vnet::control {

namespace {

// A counter family: one Counter member of a counters struct, one sample per owner.
template <typename Counters>
struct CounterMetric {
  const char* name;
  const char* help;
  const Counter Counters::*field;
};

// A port-wide family: the receive side is kept per queue (the port's totals add them up).
struct PortMetric {
  const char* name;
  const char* help;
  uint64_t (*value)(ports::Port&);
};

constexpr PortMetric kPortCounters[] = {
    {"vnet_port_rx_packets_total", "Frames received from the port and switched.",
     [](ports::Port& p) { return p.rx_packets_total(); }},
    {"vnet_port_rx_bytes_total", "Bytes of the frames received from the port.",
     [](ports::Port& p) { return p.rx_bytes_total(); }},
    {"vnet_port_tx_packets_total", "Frames sent to the port.",
     [](ports::Port& p) { return p.counters().tx_packets.get(); }},
    {"vnet_port_tx_bytes_total", "Bytes of the frames sent to the port.",
     [](ports::Port& p) { return p.counters().tx_bytes.get(); }},
};

// Per queue (pair) of a port, label `queue`.
constexpr CounterMetric<ports::QueueCounters> kQueueCounters[] = {
    {"vnet_port_queue_rx_packets_total", "Frames received from the port on this queue.",
     &ports::QueueCounters::rx_packets},
    {"vnet_port_queue_rx_bytes_total", "Bytes of the frames received on this queue.",
     &ports::QueueCounters::rx_bytes},
    {"vnet_port_queue_tx_packets_total", "Frames sent to the port on this queue.",
     &ports::QueueCounters::tx_packets},
    {"vnet_port_queue_tx_drops_total", "Frames steered to this queue and dropped.",
     &ports::QueueCounters::tx_drops},
    {"vnet_port_queue_busy_cycles_total",
     "TSC cycles of poll rounds that moved frames from this queue (shared by frames).",
     &ports::QueueCounters::busy_cycles},
};

// Counters of a port's PortInfo::extra exported as their own family (vhost-user
// sessions and what their front ends did wrong; TAP I/O errors).
struct ExtraMetric {
  const char* key;
  const char* name;
  const char* help;
};

constexpr ExtraMetric kExtraCounters[] = {
    {"connections", "vnet_port_sessions_total", "vhost-user sessions started."},
    {"disconnects", "vnet_port_session_ends_total", "vhost-user sessions ended."},
    {"rejected_connections", "vnet_port_rejected_connections_total",
     "vhost-user connections refused while a session was active."},
    {"bad_messages", "vnet_port_bad_messages_total", "vhost-user messages refused."},
    {"protocol_errors", "vnet_port_protocol_errors_total",
     "vhost-user sessions ended because of what the front end sent."},
    {"bad_fds", "vnet_port_bad_fds_total", "Front-end fds of the wrong kind refused."},
    {"memory_lost", "vnet_port_memory_lost_total",
     "Sessions ended because the front end shrank guest memory."},
    {"rx_bad_chains", "vnet_port_rx_bad_chains_total", "Bad descriptor chains on RX queues."},
    {"tx_bad_chains", "vnet_port_tx_bad_chains_total", "Bad descriptor chains on TX queues."},
    {"read_errors", "vnet_port_read_errors_total", "TAP read errors."},
    {"write_errors", "vnet_port_write_errors_total", "TAP write errors."},
};

constexpr CounterMetric<dataplane::WorkerCounters> kWorkerCounters[] = {
    {"vnet_worker_packets_total", "Frames the worker received from its ports and switched.",
     &dataplane::WorkerCounters::packets},
    {"vnet_worker_busy_cycles_total", "TSC cycles spent in poll rounds that moved frames.",
     &dataplane::WorkerCounters::busy_cycles},
    {"vnet_worker_idle_cycles_total", "TSC cycles spent in poll rounds that found nothing.",
     &dataplane::WorkerCounters::idle_cycles},
    {"vnet_worker_poll_rounds_total", "Poll rounds over the worker's ports.",
     &dataplane::WorkerCounters::loops},
    {"vnet_worker_busy_poll_rounds_total", "Poll rounds that moved at least one frame.",
     &dataplane::WorkerCounters::busy_loops},
    {"vnet_worker_sleeps_total", "Times the worker slept in epoll.",
     &dataplane::WorkerCounters::sleeps},
    {"vnet_worker_wakeups_total", "Times the worker woke from epoll.",
     &dataplane::WorkerCounters::wakeups},
};

constexpr CounterMetric<dataplane::ForwarderCounters> kForwarderCounters[] = {
    {"vnet_worker_flooded_total", "Frames flooded (broadcast, multicast, unknown unicast).",
     &dataplane::ForwarderCounters::flooded},
    {"vnet_worker_unicast_total", "Frames sent to one learned port.",
     &dataplane::ForwarderCounters::unicast},
};

constexpr CounterMetric<sw::FdbCounters> kFdbCounters[] = {
    {"vnet_fdb_learned_total", "FDB entries learned.", &sw::FdbCounters::learned},
    {"vnet_fdb_moved_total", "Station moves: a known MAC and VLAN seen on another port.",
     &sw::FdbCounters::moved},
    {"vnet_fdb_aged_total", "FDB entries removed because they expired.", &sw::FdbCounters::aged},
    {"vnet_fdb_evicted_total", "FDB entries removed to make room for a new one.",
     &sw::FdbCounters::evicted},
    {"vnet_fdb_full_total", "New keys that found no free FDB slot.", &sw::FdbCounters::full},
    {"vnet_fdb_refused_total", "New keys not learned (nothing could be evicted).",
     &sw::FdbCounters::refused},
    {"vnet_fdb_limited_total", "New keys or moves that hit the per-port limit.",
     &sw::FdbCounters::limited},
};

}  // namespace

std::string Daemon::metrics_text() {
  PrometheusText m;
  std::vector<ports::PortInfo> infos;
  infos.reserve(ports_.size());
  for (auto& p : ports_) infos.push_back(p->info());

  for (const auto& c : kPortCounters) {
    m.family(c.name, "counter", c.help);
    for (auto& p : ports_) m.sample({{"port", p->name()}}, c.value(*p));
  }
  for (const auto& c : kQueueCounters) {
    m.family(c.name, "counter", c.help);
    for (auto& p : ports_)
      for (uint32_t q = 0; q < p->rx_queues(); ++q)
        m.sample({{"port", p->name()}, {"queue", std::to_string(q)}},
                 (p->queue_counters(q).*c.field).get());
  }
  m.family("vnet_port_drops_total", "counter", "Frames dropped, by port and reason.");
  for (auto& p : ports_) {
    for (size_t i = 0; i < size_t(net::Drop::kCount); ++i)
      m.sample({{"port", p->name()}, {"reason", net::drop_name(net::Drop(i))}},
               p->dropped_total(net::Drop(i)));
  }
  m.family("vnet_port_connected", "gauge", "1 while the port's front end or device is up.");
  for (size_t i = 0; i < ports_.size(); ++i)
    m.sample({{"port", ports_[i]->name()}, {"type", infos[i].type}},
             uint64_t(infos[i].connected ? 1 : 0));
  for (const auto& e : kExtraCounters) {
    bool started = false;
    for (size_t i = 0; i < ports_.size(); ++i) {
      for (const auto& [k, v] : infos[i].extra) {
        if (k != e.key) continue;
        if (!started) m.family(e.name, "counter", e.help);
        started = true;
        m.sample({{"port", ports_[i]->name()}}, v);
      }
    }
  }

  std::vector<std::string> ids;
  for (size_t i = 0; i < pool_.size(); ++i) ids.push_back(std::to_string(i));
  for (const auto& c : kWorkerCounters) {
    m.family(c.name, "counter", c.help);
    for (size_t i = 0; i < pool_.size(); ++i)
      m.sample({{"worker", ids[i]}}, (pool_.worker(i).counters().*c.field).get());
  }
  for (const auto& c : kForwarderCounters) {
    m.family(c.name, "counter", c.help);
    for (size_t i = 0; i < pool_.size(); ++i)
      m.sample({{"worker", ids[i]}}, (pool_.worker(i).forwarder().counters().*c.field).get());
  }

  auto& fdb = pool_.fdb();
  m.single("vnet_fdb_entries", "gauge", "Entries in the FDB.", fdb.size());
  m.single("vnet_fdb_capacity", "gauge", "Entries the FDB holds at most.", fdb.capacity());
  for (const auto& c : kFdbCounters)
    m.single(c.name, "counter", c.help, (fdb.counters().*c.field).get());

  const auto& cc = control_->counters();
  m.single("vnet_control_clients", "gauge", "vnetctl clients connected.", control_->client_count());
  m.single("vnet_control_requests_total", "counter", "Control requests handled.",
           cc.requests.get());
  m.single("vnet_control_error_replies_total", "counter",
           "Control requests answered with an error.", cc.error_replies.get());
  if (metrics_) {
    const auto& mc = metrics_->counters();
    m.single("vnet_metrics_scrapes_total", "counter", "Requests for /metrics answered.",
             mc.scrapes.get());  // this one included
    m.single("vnet_metrics_bad_requests_total", "counter",
             "Metrics endpoint requests refused (400, 404, 405, 431).", mc.bad_requests.get());
  }
  return m.take();
}

}  // namespace vnet::control
