// Helpers for the control socket tests: a temporary directory, a loop pump with a
// deadline, and a raw nonblocking client socket that pumps the server's loop while it
// waits (the server and the client share the test thread).
#pragma once

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "common/event_loop.h"
#include "common/unique_fd.h"

namespace vnet::control::testing {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vnet-ctl-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs the loop until `pred` holds or `timeout_ms` passes; returns pred().
inline bool pump_until(EventLoop& loop, const std::function<bool()>& pred, int timeout_ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return pred();
    loop.run_once(5);
  }
  return true;
}

inline int count_open_fds() {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)e;
    ++n;
  }
  return n;
}

inline UniqueFd unix_socket_at(const std::string& path, bool do_listen) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return UniqueFd();
  if (do_listen && listen(fd.get(), 8) != 0) return UniqueFd();
  return fd;
}

// A client socket used from the loop's thread: every wait pumps the loop.
class RawClient {
 public:
  RawClient(EventLoop& loop, const std::string& path) : loop_(loop) {
    fd_.reset(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    connected_ = connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_.get(); }
  void close() { fd_.reset(); }

  // Writes all of `data`, pumping the loop when the socket is full. Returns false if
  // the server closed the connection (EPIPE/ECONNRESET) before all was written.
  bool send_all(const std::string& data, int timeout_ms = 5000) {
    size_t off = 0;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (off < data.size()) {
      ssize_t n = send(fd_.get(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n > 0) {
        off += size_t(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        loop_.run_once(5);
        continue;
      }
      return false;
    }
    return true;
  }

  // Reads what is available without pumping; false on EOF or error.
  bool read_available() {
    char buf[65536];
    for (;;) {
      ssize_t n = recv(fd_.get(), buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) {
        in_.append(buf, size_t(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      if (n < 0 && errno == EINTR) continue;
      eof_ = true;  // 0: orderly close; ECONNRESET: closed with our data unread
      return false;
    }
  }

  // The next line (without its newline), pumping the loop; nullopt on EOF or timeout.
  std::optional<std::string> read_line(int timeout_ms = 5000) {
    pump_until(
        loop_,
        [&] {
          read_available();
          if (in_.find('\n', scanned_) != std::string::npos) return true;
          scanned_ = in_.size();
          return eof_;
        },
        timeout_ms);
    size_t nl = in_.find('\n');
    if (nl == std::string::npos) return std::nullopt;
    std::string line = in_.substr(0, nl);
    in_.erase(0, nl + 1);
    scanned_ = 0;
    return line;
  }

  // Pumps until the server closes the connection; true if it did.
  bool wait_eof(int timeout_ms = 5000) {
    return pump_until(
        loop_,
        [&] {
          read_available();
          return eof_;
        },
        timeout_ms);
  }
  const std::string& buffered() const { return in_; }

 private:
  EventLoop& loop_;
  UniqueFd fd_;
  bool connected_ = false;
  bool eof_ = false;
  std::string in_;
  size_t scanned_ = 0;  // in_[0, scanned_) holds no newline
};

}  // namespace vnet::control::testing
