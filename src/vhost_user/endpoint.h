// Endpoint: the vhost-user socket a port owns. Server mode listens on a Unix socket
// path and runs one Session at a time (a second front end is refused); client mode
// connects to the front end's socket and reconnects on failure or when the session
// ends. Everything runs on the EventLoop (control) thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/counter.h"
#include "common/event_loop.h"
#include "common/log.h"
#include "common/result.h"
#include "common/socket_perms.h"
#include "common/unique_fd.h"
#include "vhost_user/backend.h"
#include "vhost_user/session.h"

namespace vnet::vhost_user {

struct EndpointConfig {
  std::string path;
  bool client = false;  // connect to `path` (the front end listens) instead of listening
  std::string name;     // for logs
  std::chrono::milliseconds reconnect_interval{1000};
  SocketPerms perms;  // server: who may connect (mode 0660 by default)
  // The port's log budget (common/log.h); nullptr: the endpoint keeps its own.
  PortLogLimits* logs = nullptr;
};

struct EndpointCounters {
  Counter connections;       // sessions started
  Counter disconnects;       // sessions ended
  Counter rejected;          // server: connections refused while a session was active
  Counter connect_failures;  // client: connection attempts that failed
  Counter bad_messages;      // messages refused, over all sessions
  Counter protocol_errors;   // sessions vnetd ended because of what the front end sent
  Counter bad_fds;           // fds of the wrong kind refused (each ended its session)
  Counter memory_lost;       // sessions ended because the front end shrank guest memory
};

class Endpoint {
 public:
  // Server: creates the listening socket (an existing socket nobody listens on is
  // replaced; a live one or a non-socket is an error). Client: starts connecting;
  // failing to connect is not an error (it retries).
  static Result<std::unique_ptr<Endpoint>> create(EventLoop& loop, const EndpointConfig& cfg,
                                                  Backend& backend);
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  // Ends the session (backend.reset() through ~Session), removes its fds from the
  // loop, cancels the reconnect timer, unlinks the socket (server mode).
  ~Endpoint();

  bool connected() const { return session_ != nullptr; }
  const EndpointCounters& counters() const { return counters_; }
  // The active session (nullptr when not connected), for diagnostics and tests.
  const Session* session() const { return session_.get(); }
  // Ends the session if the FaultGuard took pages of its guest memory away (called on
  // the loop thread when memory::FaultGuard::notify_fd() fires; every endpoint of a
  // loop is asked, see watch_faults()).
  void check_memory();

  // --- Hot upgrade (control/handover.h): the endpoint moves to another vnetd. ---
  // The listening socket (server mode) and the session's socket with its state.
  struct Handover {
    UniqueFd listen;
    UniqueFd session;
    Session::Saved state;
  };
  // Stops the session's transmitqs (`odd`) or receiveqs; an error (a message half read)
  // means the endpoint cannot move now.
  Status suspend(bool odd);
  void resume();
  Result<Handover> save() const;
  // The successor has it all: closes our copies without unlinking the socket file.
  void release();
  // The successor's side: an endpoint on the sockets handed over, the session's state
  // rebuilt from `setup` (rings not started yet: start_adopted() does that).
  static Result<std::unique_ptr<Endpoint>> adopt(EventLoop& loop, const EndpointConfig& cfg,
                                                 Backend& backend, UniqueFd listen,
                                                 UniqueFd session, std::vector<Message>& setup);
  Status start_adopted(std::vector<Message>& start);
  // The hand-over is final: the socket file is ours (the destructor unlinks it).
  void own();

 private:
  Endpoint(EventLoop& loop, const EndpointConfig& cfg, Backend& backend);
  Status listen();
  void on_accept();
  void start_connect();
  void on_connect_ready();
  void connect_failed(const std::string& why);
  void schedule_reconnect();
  Status start_session(UniqueFd sock, bool adopted = false);
  Status add_listener();
  void on_session_event();
  void end_session(const Status& why);
  // Registers (or removes) this endpoint for FaultGuard notifications on its loop.
  void watch_faults(bool on);

  EventLoop& loop_;
  EndpointConfig cfg_;
  Backend& backend_;
  UniqueFd listen_fd_;
  dev_t sock_dev_ = 0;  // identity of the socket file we created (unlinked only if still ours)
  ino_t sock_ino_ = 0;
  UniqueFd connecting_fd_;
  std::unique_ptr<Session> session_;
  std::optional<EventLoop::TimerId> timer_;
  bool failure_logged_ = false;
  EndpointCounters counters_;
  PortLogLimits own_logs_;
  PortLogLimits& logs_;
};

}  // namespace vnet::vhost_user
