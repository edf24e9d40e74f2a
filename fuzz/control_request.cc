// Fuzz target "control_request": vnetd's control protocol as a hostile local client
// speaks it. The bytes go through a real ControlServer (framing, the line limit, the
// depth pre-scan, parsing, the handler's exception net) over a Unix socket, and each
// request is dispatched into a real, started Daemon with one vhost-user port ("p0", no
// front end) and one worker: its handlers' argument checks (set-port, counters, ...)
// and the echo of request values into error messages. add-port only runs the port
// checks (parse_port): creating sockets and TAPs where an input says is not for a
// fuzzer; del-port is answered with an error so that p0 stays.
//
// Input: one byte that chooses how the rest is cut into writes (0: one write; else
// chunks of 1 + (b * k) % 97 bytes for the k-th), then the request bytes.
//
// Checked beyond "no crash": every reply is one line of a JSON object with a boolean
// "ok", error texts are bounded; after the client half-closes, the server answers what
// was complete and closes the connection; no fd is leaked by an input.
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "common/event_loop.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "control/config.h"
#include "control/control_server.h"
#include "control/daemon.h"
#include "fuzz_input.h"

namespace {

using nlohmann::json;
using namespace vnet;
using namespace vnet::control;

constexpr size_t kMaxRequest = 4096;    // small, so that inputs reach the line limit
constexpr size_t kMaxErrorText = 1024;  // no error message is longer than this
constexpr int kMaxPumps = 1000;

struct World {
  std::string dir;
  std::unique_ptr<Daemon> daemon;
  EventLoop loop;
  std::unique_ptr<ControlServer> server;
};

World* g_world = nullptr;

json dispatch(const json& req) {
  std::string cmd;
  if (req.is_object() && req.contains("cmd") && req["cmd"].is_string()) cmd = req["cmd"];
  if (cmd == "add-port") {
    if (!req.contains("port")) return {{"ok", false}, {"error", "add-port: missing port"}};
    auto spec = parse_port(req["port"], "add-port");
    if (!spec) return {{"ok", false}, {"error", spec.message()}};
    return {{"ok", true}};
  }
  if (cmd == "del-port") return {{"ok", false}, {"error", "del-port: not in the fuzzer"}};
  return g_world->daemon->handle(req);
}

void remove_dir() {
  if (g_world) std::filesystem::remove_all(g_world->dir);
}

World* make_world() {
  auto* w = new World;  // lives until exit (the daemon's worker thread with it)
  char tmpl[] = "/tmp/vnet-fuzz-control-XXXXXX";
  if (!mkdtemp(tmpl)) std::abort();
  w->dir = tmpl;
  DaemonConfig cfg;
  cfg.control_path = w->dir + "/vnetd.sock";
  PortSpec p0;
  p0.name = "p0";
  p0.type = "vhost-user";
  p0.socket = w->dir + "/p0.sock";
  cfg.ports.push_back(p0);
  w->daemon = std::make_unique<Daemon>(std::move(cfg));
  Status st = w->daemon->start();
  if (!st) {
    std::fprintf(stderr, "daemon: %s\n", st.message().c_str());
    std::abort();
  }
  // Daemon::start blocks SIGINT and SIGTERM for its signalfd: give them back to libFuzzer.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  pthread_sigmask(SIG_UNBLOCK, &mask, nullptr);
  ControlServerLimits limits;
  limits.max_request = kMaxRequest;
  limits.read_chunk = 4096;  // (64 KiB buffers per read: page faults dominate under ASan)
  auto server = ControlServer::create(w->loop, w->dir + "/fuzz.sock", dispatch, limits);
  if (!server) std::abort();
  w->server = std::move(*server);
  atexit(remove_dir);
  return w;
}

// Checks one reply line.
void check_reply(const std::string& line) {
  json r = json::parse(line, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(r.is_object());
  FUZZ_CHECK(r.contains("ok") && r["ok"].is_boolean());
  if (r["ok"] == false) {
    FUZZ_CHECK(r.contains("error") && r["error"].is_string());
    FUZZ_CHECK(r["error"].get_ref<const std::string&>().size() <= kMaxErrorText);
  }
}

// Reads what the server sent; checks each complete line. False once the server closed.
bool drain(int fd, std::string& in) {
  char buf[65536];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      in.append(buf, size_t(n));
      size_t nl;
      while ((nl = in.find('\n')) != std::string::npos) {
        check_reply(in.substr(0, nl));
        in.erase(0, nl + 1);
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

void run(const uint8_t* data, size_t size) {
  World& w = *g_world;
  vnet::fuzz::FuzzInput input(data, size);
  const uint8_t cut = input.u8();
  size_t len = 0;
  const uint8_t* bytes = input.view(input.left(), &len);

  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = w.dir + "/fuzz.sock";
  memcpy(addr.sun_path, path.c_str(), path.size());
  FUZZ_CHECK(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  std::string in;
  bool open = true;
  size_t off = 0;
  for (size_t k = 1; off < len && open; ++k) {
    size_t chunk = cut == 0 ? len - off : std::min(len - off, 1 + (size_t(cut) * k) % 97);
    ssize_t n = send(fd.get(), bytes + off, chunk, MSG_NOSIGNAL);
    if (n > 0) off += size_t(n);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;  // closed
    w.loop.run_once(0);
    open = drain(fd.get(), in);
  }
  shutdown(fd.get(), SHUT_WR);
  for (int i = 0; i < kMaxPumps && open; ++i) {
    w.loop.run_once(i < 10 ? 0 : 1);
    open = drain(fd.get(), in);
  }
  FUZZ_CHECK(!open);  // the server answered and closed
  fd.reset();
  for (int i = 0; i < kMaxPumps && w.server->client_count() != 0; ++i) w.loop.run_once(1);
  FUZZ_CHECK(w.server->client_count() == 0);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  g_world = make_world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t fds_before = vnet::fuzz::count_open_fds();
  run(data, size);
  const size_t fds_after = vnet::fuzz::count_open_fds();
  if (fds_after != fds_before) {
    std::fprintf(stderr, "fd leak: %zu fds before the input, %zu after\n", fds_before, fds_after);
    FUZZ_CHECK(fds_after == fds_before);
  }
  return 0;
}
