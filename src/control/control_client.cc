// ControlClient: connect, one request/reply exchange with a deadline, and the text
// tables vnetctl prints.
#include "control/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace vnet::control {

using nlohmann::json;

namespace {

constexpr size_t kMaxReply = size_t(512) << 20;  // far above the server's own limit
constexpr size_t kReadChunk = size_t(64) << 10;

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : int(std::min<int64_t>(left, 1 << 30));
}

// Waits for `events` on `fd` until `deadline`; false on timeout.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return true;  // let the next send/recv report the error
  }
}

std::string connect_hint(int err) {
  switch (err) {
    case ENOENT:
    case ECONNREFUSED:
      return " (is vnetd running?)";
    case EACCES:
    case EPERM:
      return " (the control socket is mode 0660: run as its owner, its group or root)";
    default:
      return "";
  }
}

}  // namespace

Result<ControlClient> ControlClient::connect(const std::string& path, int timeout_ms) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return Status::error("cannot connect: the control socket path is empty");
  if (path.size() >= sizeof(addr.sun_path))
    return Status::errorf("cannot connect to {}: path too long ({} bytes, at most {})", path,
                          path.size(), sizeof(addr.sun_path) - 1);
  memcpy(addr.sun_path, path.data(), path.size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::errorf("cannot connect to {}: socket: {}", path, strerror(errno));
  // A blocking connect to a Unix socket whose backlog is full waits up to SO_SNDTIMEO.
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  if (timeout_ms > 0) setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int r;
  do {
    r = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    int err = errno;
    if (err == EAGAIN || err == EINPROGRESS)
      return Status::errorf("cannot connect to {}: vnetd is not accepting connections (timed out)",
                            path);
    return Status::errorf("cannot connect to {}: {}{}", path, strerror(err), connect_hint(err));
  }
  return ControlClient(std::move(fd), path);
}

Result<json> ControlClient::request(const json& req, int timeout_ms) {
  if (!fd_) return Status::error("not connected to vnetd");
  const auto deadline = Clock::now() + std::chrono::milliseconds(std::max(timeout_ms, 0));
  const std::string out = req.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";

  // The reply line in buf_, if one is complete.
  auto take_line = [&]() -> Result<json> {
    size_t nl = buf_.find('\n');
    std::string line = buf_.substr(0, nl);
    buf_.erase(0, nl + 1);
    try {
      return json::parse(line);
    } catch (const json::parse_error& e) {
      return Status::errorf("bad reply from vnetd on {}: {}", path_, e.what());
    }
  };
  // Reads without waiting; true if it got bytes.
  auto read_some = [&](int* err) -> ssize_t {
    char tmp[kReadChunk];
    ssize_t n = recv(fd_.get(), tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n > 0) buf_.append(tmp, size_t(n));
    *err = n < 0 ? errno : 0;
    return n;
  };

  size_t off = 0;
  while (off < out.size()) {
    ssize_t n = send(fd_.get(), out.data() + off, out.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += size_t(n);
      continue;
    }
    int err = errno;
    if (n < 0 && err == EINTR) continue;
    if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
      if (!wait_for(fd_.get(), POLLOUT, deadline))
        return Status::errorf("timed out sending a request to vnetd on {}", path_);
      continue;
    }
    // vnetd may have said why before it closed (e.g. too many clients).
    int rerr = 0;
    while (buf_.find('\n') == std::string::npos && read_some(&rerr) > 0) {
    }
    if (buf_.find('\n') != std::string::npos) return take_line();
    return Status::errorf("sending to vnetd on {}: {}", path_, strerror(err));
  }

  size_t scanned = 0;  // buf_[0, scanned) holds no newline: keeps big replies linear
  for (;;) {
    if (buf_.find('\n', scanned) != std::string::npos) return take_line();
    scanned = buf_.size();
    if (buf_.size() > kMaxReply)
      return Status::errorf("reply from vnetd on {} is longer than {} bytes", path_, kMaxReply);
    int err = 0;
    ssize_t n = read_some(&err);
    if (n > 0) continue;
    if (n == 0)
      return Status::errorf("vnetd on {} closed the connection {}", path_,
                            buf_.empty() ? "without replying" : "in mid-reply");
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      if (!wait_for(fd_.get(), POLLIN, deadline))
        return Status::errorf("no reply from vnetd on {} within {} ms", path_, timeout_ms);
      continue;
    }
    return Status::errorf("reading from vnetd on {}: {}", path_, strerror(err));
  }
}

// --- Text rendering -----------------------------------------------------------------

std::string format_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& rows,
                         const std::vector<size_t>& right_aligned) {
  size_t ncols = header.size();
  for (const auto& r : rows) ncols = std::max(ncols, r.size());
  std::vector<size_t> width(ncols, 0);
  auto measure = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  };
  measure(header);
  for (const auto& r : rows) measure(r);
  auto is_right = [&](size_t i) {
    return std::find(right_aligned.begin(), right_aligned.end(), i) != right_aligned.end();
  };
  std::string out;
  auto emit = [&](const std::vector<std::string>& r) {
    std::string line;
    for (size_t i = 0; i < ncols; ++i) {
      const std::string empty;
      const std::string& c = i < r.size() ? r[i] : empty;
      if (i > 0) line += "  ";
      size_t pad = width[i] - c.size();
      if (is_right(i)) {
        line.append(pad, ' ');
        line += c;
      } else {
        line += c;
        line.append(pad, ' ');
      }
    }
    line.erase(line.find_last_not_of(' ') + 1);
    out += line;
    out += '\n';
  };
  emit(header);
  for (const auto& r : rows) emit(r);
  return out;
}

std::string cell(const json& obj, const char* key) {
  if (!obj.is_object()) return "-";
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return "-";
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    return s.empty() ? "-" : s;
  }
  if (it->is_boolean()) return it->get<bool>() ? "yes" : "no";
  return it->dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

const json& member(const json& obj, const char* key) {
  static const json null;
  if (!obj.is_object()) return null;
  auto it = obj.find(key);
  return it == obj.end() ? null : *it;
}

std::string join_features(const json& features) {
  if (!features.is_array() || features.empty()) return "-";
  std::string s;
  for (const auto& f : features) {
    if (!s.empty()) s += ',';
    s += f.is_string() ? f.get<std::string>() : f.dump();
  }
  return s;
}

std::string nonzero_drops(const json& drops) {
  std::string s;
  if (!drops.is_object()) return "-";
  for (const auto& [reason, n] : drops.items()) {
    if (n.is_number() && n == 0) continue;
    if (!s.empty()) s += ' ';
    s += reason + "=" + (n.is_string() ? n.get<std::string>() : n.dump());
  }
  return s.empty() ? "-" : s;
}

}  // namespace

// "access 10", "trunk 10,20 native 1", or "-".
std::string vlan_cell(const json& v) {
  if (!v.is_object()) return "-";
  if (cell(v, "mode") == "access") return "access " + cell(v, "vlan");
  std::string out = "trunk ";
  const json& t = member(v, "trunk");
  if (t.is_array())
    for (size_t i = 0; i < t.size(); ++i) out += (i ? "," : "") + t[i].dump();
  if (cell(v, "native") != "0") out += " native " + cell(v, "native");
  return out;
}

namespace {

// 20000 -> "20k", 1500000 -> "1.5M".
std::string si(const json& v) {
  if (!v.is_number_unsigned()) return v.dump();
  const uint64_t n = v.get<uint64_t>();
  static const char* const kSuffix[] = {"", "k", "M", "G", "T"};
  size_t k = 0;
  double x = double(n);
  while (x >= 1000 && k < 4) {
    x /= 1000;
    ++k;
  }
  std::string s = fmt::format("{:.3f}", x);
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.') s.pop_back();
  return s + kSuffix[k];
}

// {"bps": 1e8, "pps": 2e4, ...} -> "100Mbit,20kpps".
std::string limits_text(const json& l) {
  std::string s;
  if (l.contains("bps")) s += si(l["bps"]) + "bit";
  if (l.contains("pps")) s += (s.empty() ? "" : ",") + si(l["pps"]) + "pps";
  return s;
}

}  // namespace

// "in:100Mbit,20kpps broadcast:1kpps", or "-".
std::string policing_cell(const json& p) {
  std::string out;
  const json& in = member(p, "ingress");
  if (in.is_object() && !in.empty()) out = "in:" + limits_text(in);
  const json& storm = member(p, "storm");
  if (storm.is_object())
    for (const auto& [cls, l] : storm.items())
      if (l.is_object() && !l.empty()) out += (out.empty() ? "" : " ") + cls + ":" + limits_text(l);
  return out.empty() ? "-" : out;
}

std::string format_ports(const json& reply) {
  std::vector<std::vector<std::string>> rows;
  const json& ports = member(reply, "ports");
  if (ports.is_array()) {
    for (const auto& p : ports)
      rows.push_back({cell(p, "name"), cell(p, "type"), cell(p, "mode"), cell(p, "connected"),
                      cell(p, "socket"), vlan_cell(member(p, "vlan")), cell(p, "mtu"),
                      policing_cell(member(p, "policing")), join_features(member(p, "features"))});
  }
  return format_table(
      {"NAME", "TYPE", "MODE", "CONNECTED", "SOCKET", "VLAN", "MTU", "POLICING", "FEATURES"}, rows);
}

std::string format_counters(const json& reply) {
  std::vector<std::vector<std::string>> rows;
  const json& counters = member(reply, "counters");
  if (counters.is_object()) {
    for (const auto& [name, c] : counters.items())
      rows.push_back({name, cell(c, "rx_packets"), cell(c, "rx_bytes"), cell(c, "tx_packets"),
                      cell(c, "tx_bytes"), nonzero_drops(member(c, "drops"))});
  }
  std::string out = format_table(
      {"PORT", "RX_PACKETS", "RX_BYTES", "TX_PACKETS", "TX_BYTES", "DROPS"}, rows, {1, 2, 3, 4});
  // Other groups of counters ("worker", ...) as NAME VALUE tables.
  for (const auto& [group, values] : reply.items()) {
    if (group == "counters" || !values.is_object()) continue;
    std::vector<std::vector<std::string>> grows;
    for (const auto& [k, v] : values.items()) grows.push_back({k, cell(values, k.c_str())});
    std::string title = group;
    std::transform(title.begin(), title.end(), title.begin(),
                   [](unsigned char ch) { return char(std::toupper(ch)); });
    out += '\n';
    out += format_table({title, "VALUE"}, grows, {1});
  }
  return out;
}

std::string format_workers(const json& reply) {
  std::vector<std::vector<std::string>> rows;
  const json& workers = member(reply, "workers");
  if (workers.is_array()) {
    for (const auto& w : workers) {
      std::string ports;
      const json& names = member(w, "ports");
      if (names.is_array())
        for (const auto& n : names)
          if (n.is_string()) ports += (ports.empty() ? "" : ",") + n.get<std::string>();
      const json& cpp = member(w, "busy_cycles_per_packet");
      rows.push_back({cell(w, "worker"), cell(w, "cpu"), ports.empty() ? "-" : ports,
                      cell(w, "packets"), cell(w, "busy_cycles"), cell(w, "idle_cycles"),
                      cpp.is_number() ? fmt::format("{:.1f}", cpp.get<double>()) : "-",
                      cell(w, "wakeups"), cell(w, "sleeps"), cell(w, "idle_window_us")});
    }
  }
  std::string out = format_table({"WORKER", "CPU", "PORTS", "PACKETS", "BUSY_CYCLES", "IDLE_CYCLES",
                                  "CYCLES/PKT", "WAKEUPS", "SLEEPS", "IDLE_WINDOW_US"},
                                 rows, {0, 1, 3, 4, 5, 6, 7, 8, 9});
  // The (port, queue) units each worker polls.
  std::vector<std::vector<std::string>> qrows;
  if (workers.is_array())
    for (const auto& w : workers) {
      const json& qs = member(w, "queues");
      if (!qs.is_array()) continue;
      for (const auto& q : qs)
        qrows.push_back({cell(w, "worker"), cell(q, "port"), cell(q, "queue"), cell(q, "packets"),
                         cell(q, "drops"), cell(q, "busy_cycles")});
    }
  if (!qrows.empty()) {
    out += '\n';
    out += format_table({"WORKER", "PORT", "QUEUE", "PACKETS", "DROPS", "BUSY_CYCLES"}, qrows,
                        {0, 2, 3, 4, 5});
  }
  return out;
}

std::string format_fdb_header() {
  return fmt::format("{:<17}  {:>4}  {:<12}  {:>6}\n", "MAC", "VLAN", "PORT", "AGE");
}

// A MAC behind a VXLAN port ends its row with the remote VTEP: "  via 192.0.2.2".
std::string format_fdb_row(const json& e) {
  return fmt::format("{:<17}  {:>4}  {:<12}  {:>6}{}\n", cell(e, "mac"), cell(e, "vlan"),
                     cell(e, "port"), cell(e, "age"),
                     e.contains("vtep") ? "  via " + cell(e, "vtep") : "");
}

std::string format_fdb(const json& reply) {
  std::string out = format_fdb_header();
  size_t n = 0;
  const json& fdb = member(reply, "fdb");
  if (fdb.is_array()) {
    for (const auto& e : fdb) out += format_fdb_row(e);
    n = fdb.size();
  }
  out += fmt::format("{} entr{}\n", n, n == 1 ? "y" : "ies");
  return out;
}

Result<json> dump_fdb(ControlClient& client, const json& filter, uint64_t count, int timeout_ms,
                      const std::function<void(const json&)>& on_entry) {
  json req = filter;
  req["cmd"] = "fdb";
  uint64_t n = 0;
  for (;;) {
    if (count) req["limit"] = std::min<uint64_t>(count - n, 1024);
    auto reply = client.request(req, timeout_ms);
    if (!reply) return reply.status();
    const json& r = *reply;
    if (!r.is_object() || r.value("ok", false) != true || !r.contains("fdb") ||
        !r["fdb"].is_array())
      return r;
    for (const json& e : r["fdb"]) {
      on_entry(e);
      if (++n == count) return json{{"ok", true}, {"entries", n}};
    }
    if (!r.contains("cursor") || !r["cursor"].is_number_unsigned()) break;
    req["cursor"] = r["cursor"];
  }
  return json{{"ok", true}, {"entries", n}};
}

}  // namespace vnet::control
