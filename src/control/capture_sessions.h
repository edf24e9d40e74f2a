// CaptureSessions: vnetd's side of `vnetctl capture`. A "capture" request is checked
// and its filter compiled by libpcap (pcap_open_dead + pcap_compile) on the control
// thread; after the JSON reply the same control connection carries the pcapng stream
// (ControlServer::hand_off). The capture's rings are attached to the port (a new
// immutable net::CaptureSet, published, then every worker let past its burst before
// the old set is freed), and a timer on the control loop drains them every few
// milliseconds into pcapng blocks written with non-blocking sends. A reader that does
// not keep up only makes the rings fill: the workers drop and count, never wait.
// The capture ends when --count frames were written, when the client shuts its side
// down (vnetctl on Ctrl-C or a closed pipe), when the client goes away, or when the
// port is removed; it is detached, its remaining frames and an Interface Statistics
// Block are written, and the connection is closed (within kFinalFlush).
#pragma once

#include <pcap/pcap.h>
#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/counter.h"
#include "common/event_loop.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "dataplane/worker_pool.h"
#include "net/capture.h"
#include "ports/port.h"

namespace vnet::control {

struct CaptureRequest {
  std::string filter;  // tcpdump's language; empty: every frame
  uint8_t dirs = 3;    // net::CaptureDir bits
  uint64_t count = 0;  // stop after this many frames (0: never)
  uint32_t snaplen = kDefaultSnaplen;
  static constexpr uint32_t kDefaultSnaplen = 262144;  // tcpdump's default
  static constexpr size_t kMaxFilter = 4096;           // bytes of filter text
};

struct CaptureCounters {
  Counter started, ended, frames, dropped, bad_filters;
};

class CaptureSessions {
 public:
  static constexpr size_t kMaxSessions = 32;
  static constexpr uint32_t kRingBytes = 2u << 20;  // per worker and capture
  static constexpr size_t kOutMax = 1u << 20;       // pcapng bytes queued per client
  static constexpr std::chrono::milliseconds kDrainEvery{5};
  static constexpr std::chrono::milliseconds kFinalFlush{2000};

  CaptureSessions(EventLoop& loop, dataplane::WorkerPool& pool) : loop_(loop), pool_(pool) {}
  ~CaptureSessions();  // detaches and closes every capture
  CaptureSessions(const CaptureSessions&) = delete;
  CaptureSessions& operator=(const CaptureSessions&) = delete;

  // Checks the request and compiles its filter: the capture, not attached yet, or an
  // error with libpcap's message.
  Result<std::shared_ptr<net::Capture>> prepare(const CaptureRequest& req);
  // Attaches a prepared capture to `port` and streams it on `fd` (the control
  // connection after the reply).
  void start(ports::Port& port, std::shared_ptr<net::Capture> cap, const CaptureRequest& req,
             UniqueFd fd);
  // Before a port goes: its captures end (statistics written, connections closed).
  void port_removed(ports::Port& port);

  size_t active() const { return sessions_.size(); }
  const CaptureCounters& counters() const { return counters_; }
  nlohmann::json counters_json() const;

 private:
  struct Session {
    ports::Port* port;
    std::string port_name;
    std::shared_ptr<net::Capture> cap;
    UniqueFd fd;
    uint64_t count = 0, delivered = 0;
    uint64_t start_ns = 0;
    std::string out;
    size_t out_off = 0;
    bool detached = false;      // no longer on the port; the rest is being written
    uint32_t events = EPOLLIN;  // what the loop watches
    std::chrono::steady_clock::time_point deadline;  // detached: close by then
  };

  // Publishes the port's set of attached captures, then waits for every worker.
  void publish(ports::Port& port);
  // Moves records from the rings (oldest first) to s.out, at most kOutMax queued.
  void drain(Session& s);
  // Detaches s, drains what is left and queues the statistics block.
  void finish(Session& s);
  // Writes what is queued; false when the session was closed.
  bool flush(Session& s);
  void on_fd(int fd, uint32_t events);
  void close(int fd);
  void tick();
  void arm();

  EventLoop& loop_;
  dataplane::WorkerPool& pool_;
  std::map<int, std::unique_ptr<Session>> sessions_;  // by fd
  std::map<ports::Port*, std::unique_ptr<net::CaptureSet>> sets_;
  std::optional<EventLoop::TimerId> timer_;
  CaptureCounters counters_;
};

}  // namespace vnet::control
