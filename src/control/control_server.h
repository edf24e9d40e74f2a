// ControlServer: vnetd's control socket. A Unix stream socket on the control EventLoop
// that reads one JSON request per line from each client, hands it to the daemon's
// handler and writes one JSON reply line back. Protects the daemon from its clients:
// bounded number of clients (when full, the least recently active one makes room for
// a new one), bounded request lines and nesting (checked before parsing), every
// malformed request answered with an error, idle and slow clients timed out, bounded
// replies, nonblocking I/O, one reply in flight per client (a client that does not read
// stalls only itself, and only until write_stall_timeout).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/counter.h"
#include "common/event_loop.h"
#include "common/result.h"
#include "common/socket_perms.h"
#include "common/unique_fd.h"
#include "control/request.h"

namespace vnet::control {

struct ControlServerLimits {
  // When this many are connected, a new client evicts the least recently active one
  // (an idle one first) instead of being turned away: a new operator is always served.
  size_t max_clients = 64;
  size_t max_request = size_t(1) << 20;  // bytes per request line, newline excluded
  size_t max_depth = kMaxRequestDepth;   // nesting of arrays and objects in a request
  size_t max_reply = size_t(64) << 20;   // a larger reply is replaced by an error
  size_t read_chunk = size_t(64) << 10;  // bytes read per readiness event
  // Request lines handled per client per turn; a client that pipelines more waits for
  // its next turn, after the other clients' (no client starves the others).
  size_t lines_per_turn = 16;
  // A client whose pending reply makes no progress for this long is closed.
  std::chrono::milliseconds write_stall_timeout{30000};
  // A client that completes no request for this long (and has none in progress) is closed.
  std::chrono::milliseconds idle_timeout{60000};
  // A request line must be complete this long after its first byte came (slow clients).
  std::chrono::milliseconds request_timeout{10000};
  // Who may connect (mode 0660 by default; owner and group vnetd's unless set).
  SocketPerms perms;
};

struct ControlServerCounters {
  Counter accepted;          // connections accepted
  Counter rejected;          // connections closed at once: too many clients (max_clients 0)
  Counter evicted;           // clients closed to make room for a new one
  Counter requests;          // request lines handed to the handler
  Counter error_replies;     // replies with "ok": false (any cause)
  Counter bad_json;          // request lines that were not JSON (or numbers out of range)
  Counter too_deep;          // request lines nested deeper than max_depth
  Counter too_long;          // clients closed for an over-long request line
  Counter bad_requests;      // handler threw a JSON error (a field of the wrong type)
  Counter handler_failures;  // handler threw anything else; answered with an error
  Counter write_errors;      // clients that went away with a reply unsent
  Counter write_stalls;      // clients closed for not reading their reply
  Counter idle_timeouts;     // clients closed for sending no request for idle_timeout
  Counter request_timeouts;  // clients closed for not finishing a line in request_timeout
};

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json&)>;

  // Listens on `path` (creating its parent directory, mode 0755, if missing) with
  // socket mode, owner and group limits.perms. Refuses a path that exists unless it is a stale
  // socket (nobody listening), which is replaced. `handler` runs on the loop thread.
  static Result<std::unique_ptr<ControlServer>> create(EventLoop& loop, const std::string& path,
                                                       Handler handler,
                                                       ControlServerLimits limits = {});
  // Hot upgrade (control/handover.h): serves on a listening socket a predecessor vnetd
  // handed over (bound to `path`) instead of creating one.
  static Result<std::unique_ptr<ControlServer>> adopt(EventLoop& loop, const std::string& path,
                                                      UniqueFd listen, Handler handler,
                                                      ControlServerLimits limits = {});
  // The successor serves the socket now: stop accepting and leave the file alone.
  void release();
  // The hand-over is final: the socket file is ours (the destructor removes it).
  void own();
  // The listening socket (for a successor to duplicate).
  int listen_fd() const { return listen_fd_.get(); }
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;
  // Closes every client and removes the socket file (if it is still the one it made).
  ~ControlServer();

  const std::string& path() const { return path_; }
  size_t client_count() const { return clients_.size(); }
  const ControlServerCounters& counters() const { return counters_; }
  // Counters as a JSON object, e.g. for a daemon's "counters" reply.
  nlohmann::json counters_json() const;
  // Only inside the handler: once this request's reply line is written, the connection
  // leaves the server and `take` owns it (a request that turns its connection into a
  // stream, as "capture" does). Lines the client sent after the request are dropped.
  // If the client goes away first, `take` is destroyed without being called.
  void hand_off(std::function<void(UniqueFd)> take) { handoff_ = std::move(take); }

 private:
  struct Client {
    UniqueFd fd;
    std::string in;  // bytes received; in[0, in_off) is handled
    size_t in_off = 0;
    size_t scanned = 0;  // in[in_off, scanned) holds no newline
    std::string out;     // reply bytes; out[0, out_off) is written
    size_t out_off = 0;
    bool eof = false;      // the client sent all it will send: answer, then close
    bool more = false;     // its turn ended with lines maybe left: continue next round
    bool closing = false;  // close once `out` is written; handle nothing more
    uint32_t events = 0;   // what the loop watches for now
    std::chrono::steady_clock::time_point progress;  // last reply bytes queued or written
    std::chrono::steady_clock::time_point active;    // connected or last request handled
    std::chrono::steady_clock::time_point seen;      // last bytes read or written
    std::chrono::steady_clock::time_point started;   // first byte of the partial line in `in`
    std::function<void(UniqueFd)> handoff;           // hand_off() of the request being answered
    bool reply_pending() const { return out_off < out.size(); }
  };

  ControlServer(EventLoop& loop, std::string path, Handler handler, ControlServerLimits limits);
  Status listen_on_path();
  void on_listen(uint32_t events);
  void on_client(int fd, uint32_t events);
  // Reads what is available; returns false if the client was closed.
  bool read_client(Client& c);
  // Handles complete lines while no reply is pending; returns false if closed.
  bool process_lines(Client& c);
  // Writes pending output; returns false if the client was closed.
  bool flush_client(Client& c);
  void queue_reply(Client& c, const nlohmann::json& reply);
  nlohmann::json handle_line(std::string_view line);
  // Watches for input when idle, for output when a reply is pending.
  void update_events(Client& c);
  void close_client(int fd);
  // Makes room for a new client: closes the least recently active one, idle ones first.
  void evict_one();
  // Closes clients whose reply has been stuck for write_stall_timeout, idle clients and
  // slow requests; re-arms itself while any client is connected.
  void arm_sweep();
  // Gives clients whose turn ended with lines left (Client::more) another turn, after
  // the events that are already waiting.
  void schedule_more(int fd);
  void run_more();
  void sweep();

  EventLoop& loop_;
  std::string path_;
  Handler handler_;
  ControlServerLimits limits_;
  UniqueFd listen_fd_;
  bool listening_registered_ = false;
  std::optional<EventLoop::TimerId> accept_retry_timer_;
  std::optional<EventLoop::TimerId> sweep_timer_;
  std::optional<EventLoop::TimerId> more_timer_;
  std::vector<int> more_;  // clients waiting for another turn
  dev_t sock_dev_ = 0;     // identity of the socket file we bound, to remove only ours
  ino_t sock_ino_ = 0;
  bool bound_ = false;
  std::unordered_map<int, std::unique_ptr<Client>> clients_;
  std::function<void(UniqueFd)> handoff_;  // set by the handler through hand_off()
  ControlServerCounters counters_;
};

}  // namespace vnet::control
