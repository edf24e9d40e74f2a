// ControlClient: vnetctl's side of the control socket (one JSON request line out, one
// reply line back, blocking with a timeout), and the plain-text rendering of replies
// that vnetctl prints without --json.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/unique_fd.h"

namespace vnet::control {

class ControlClient {
 public:
  // Connects to vnetd's control socket at `path`. Errors read like
  // "cannot connect to PATH: No such file or directory (is vnetd running?)".
  static Result<ControlClient> connect(const std::string& path, int timeout_ms = 5000);

  // Sends `req` and waits up to `timeout_ms` (in all) for the reply line. The reply is
  // returned as it came, {"ok": false, ...} included; only transport and framing
  // failures are errors here.
  Result<nlohmann::json> request(const nlohmann::json& req, int timeout_ms = 5000);

  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }
  // Bytes that came after the last reply line (a stream that follows the reply).
  std::string take_buffered() { return std::exchange(buf_, {}); }

 private:
  ControlClient(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}

  UniqueFd fd_;
  std::string path_;
  std::string buf_;  // bytes received after the last reply line
};

// --- Rendering replies as text (vnetctl without --json) ---------------------------

// Columns separated by two spaces, each as wide as its widest cell; columns listed in
// `right_aligned` (by index) are padded on the left. No trailing spaces.
std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows,
                         const std::vector<size_t>& right_aligned = {});

// A reply's value as a cell: strings as they are, booleans as yes/no, missing as "-".
std::string cell(const nlohmann::json& obj, const char* key);

// NAME TYPE MODE CONNECTED SOCKET VLAN MTU POLICING FEATURES, from a "ports" reply.
std::string format_ports(const nlohmann::json& reply);
// A port's "policing" object as one cell: "in:100Mbit,20kpps broadcast:1kpps", or "-".
std::string policing_cell(const nlohmann::json& policing);
// Per port RX/TX packets and bytes and the non-zero drops, then the worker counters,
// from a "counters" reply.
std::string format_counters(const nlohmann::json& reply);
// WORKER CPU PORTS PACKETS BUSY_CYCLES IDLE_CYCLES CYCLES/PKT WAKEUPS SLEEPS, from a
// "workers" reply.
std::string format_workers(const nlohmann::json& reply);
// MAC VLAN PORT AGE, from an "fdb" reply (fixed column widths, so that a dump in
// chunks prints the same table: format_fdb_header, then format_fdb_row per entry).
std::string format_fdb(const nlohmann::json& reply);
std::string format_fdb_header();
std::string format_fdb_row(const nlohmann::json& entry);

// Dumps the FDB in chunks ("fdb" requests with a cursor, daemon.cc): `filter` holds
// the request's filters (port, vlan, mac); at most `count` entries (0: all). Calls
// `on_entry` for each entry as its chunk arrives, so memory stays bounded however
// large the table. Each request gets `timeout_ms`. An error reply ends the dump: it is
// returned as it came ({"ok": false, ...}); else {"ok": true, "entries": N}.
Result<nlohmann::json> dump_fdb(ControlClient& client, const nlohmann::json& filter, uint64_t count,
                                int timeout_ms,
                                const std::function<void(const nlohmann::json&)>& on_entry);

}  // namespace vnet::control
