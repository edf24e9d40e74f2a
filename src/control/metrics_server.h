// MetricsServer: vnetd's Prometheus endpoint ([metrics] listen, --metrics-listen). A
// minimal HTTP/1.x server on the control EventLoop that answers GET (and HEAD)
// /metrics with the text the daemon renders, on the control thread like a vnetctl
// request (so it never races the port list), and closes the connection after each
// reply. Nothing else is served (404, 405, 400). It is built for hostile clients like
// the control socket (control_server.h): a bounded number of connections (a new one
// makes the oldest go), a bounded request head, a deadline for a connection's whole
// life (slow senders and clients that do not read their reply), nonblocking I/O, and
// every refusal counted and logged with a rate limit.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "common/counter.h"
#include "common/event_loop.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace vnet::control {

struct MetricsServerLimits {
  size_t max_clients = 16;                   // a new connection beyond this closes the oldest
  size_t max_request = 8192;                 // request line and headers, bytes
  std::chrono::milliseconds deadline{5000};  // from accept to the last reply byte
};

struct MetricsServerCounters {
  Counter accepted;      // connections accepted
  Counter evicted;       // connections closed to make room for a new one
  Counter scrapes;       // GET/HEAD /metrics answered
  Counter bad_requests;  // answered 400, 404, 405 or 431
  Counter timeouts;      // connections closed at their deadline
  Counter write_errors;  // clients gone before their reply was written
};

// "127.0.0.1:9465", "[::1]:9465" or "0.0.0.0:9465" (a numeric address and a port).
struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
};
Result<ListenAddress> parse_listen_address(std::string_view s);

// What a request head asks for (classify_request), decided from the bytes received so
// far: kIncomplete until the head's empty line arrives (or max_request is passed).
enum class MetricsRequest : uint8_t {
  kIncomplete,
  kGet,         // GET /metrics: 200 with the text
  kHead,        // HEAD /metrics: 200 without a body
  kNotFound,    // another path: 404
  kBadMethod,   // another method: 405
  kBadRequest,  // not an HTTP/1.x request line: 400
  kTooLarge,    // no end of the head within max_request bytes: 431
};
MetricsRequest classify_request(std::string_view in, size_t max_request);

class MetricsServer {
 public:
  using Render = std::function<std::string()>;

  // Hot upgrade (control/handover.h): serves on a listening socket a predecessor handed
  // over; release(): the successor serves it now.
  static Result<std::unique_ptr<MetricsServer>> adopt(EventLoop& loop, UniqueFd listen,
                                                      Render render,
                                                      MetricsServerLimits limits = {});
  void release();
  int listen_fd() const { return listen_fd_.get(); }
  static Result<std::unique_ptr<MetricsServer>> create(EventLoop& loop, const std::string& listen,
                                                       Render render,
                                                       MetricsServerLimits limits = {});
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  ~MetricsServer();

  uint16_t port() const { return port_; }  // the bound port (listen port 0: the kernel's)
  size_t client_count() const { return clients_.size(); }
  const MetricsServerCounters& counters() const { return counters_; }

 private:
  struct Client {
    UniqueFd fd;
    std::string in;
    std::string out;
    size_t out_off = 0;
    bool replied = false;  // `out` holds the whole reply: write it, then close
    std::chrono::steady_clock::time_point accepted;
  };

  MetricsServer(EventLoop& loop, Render render, MetricsServerLimits limits);
  Status listen_on(const std::string& listen);
  void on_listen();
  void on_client(int fd);
  // Decides the reply once the request head is complete (or cannot be).
  void answer(Client& c);
  void reply(Client& c, int status, std::string_view reason, std::string_view body,
             bool head_only = false);
  // Writes what it can; closes the client when done or gone. False if closed.
  bool flush(Client& c);
  void close_client(int fd);
  void arm_sweep();
  void sweep();

  EventLoop& loop_;
  Render render_;
  MetricsServerLimits limits_;
  UniqueFd listen_fd_;
  bool registered_ = false;
  uint16_t port_ = 0;
  std::optional<EventLoop::TimerId> sweep_timer_;
  std::optional<EventLoop::TimerId> retry_timer_;
  std::unordered_map<int, std::unique_ptr<Client>> clients_;
  MetricsServerCounters counters_;
};

}  // namespace vnet::control
