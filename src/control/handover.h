// Hot upgrade: one vnetd hands everything the guests' network depends on to its successor
// (`vnetctl upgrade`), over a SOCK_SEQPACKET socket pair the predecessor creates when it
// starts the successor (VNET_HANDOVER_FD in the successor's environment names its end):
//
//   successor   -> predecessor  {"hello": kHandoverVersion, "version": ..., "pid": ...}
//   predecessor -> successor    the state: JSON (below) in chunks of at most kChunk bytes,
//                               then its fds, at most kFdsPerMessage per message
//   successor   -> predecessor  {"ready": true} | {"error": "..."}
//   predecessor -> successor    {"commit": true}   (from here on the predecessor never resumes)
//   successor   -> predecessor  {"done": true}
//
// The predecessor stops every data path before it sends the state (TAP reads held and
// drained, then the guests' transmitqs, then their receiveqs, each at the position it
// reached), so that no frame is lost: what was taken was delivered, the rest is still in
// the rings and the TAP queues. The successor rebuilds every port without attaching it to
// a worker, says ready, and on commit starts them all. Anything that goes wrong before
// commit leaves the predecessor running as it was (its rings resume where they stopped).
//
// The state is untrusted input for the successor (docs/threat-model.md): every field is
// checked, every fd is checked for its kind, and a vhost-user session's state is a list of
// vhost-user messages the successor validates and handles as if its front end had sent
// them. State JSON:
//   {"handover": 1, "version": "0.1.0", "control": FD, "metrics": FD | null,
//    "next_port_id": N, "file_ports": [NAME...], "fdb": [[MAC, VLAN, PORT NAME, AGE_MS]...],
//    "ports": [{"spec": {...}, "id": N,
//               "vhost": {"listen": FD | null, "session": FD | null,
//                         "setup": [MSG...], "start": [MSG...]}      (vhost-user)
//               "tap": {"fds": [FD...], "created": BOOL}}]}          (tap)
//   FD: an index into the fds sent after the JSON; MSG: {"r": request, "p": "hex payload",
//   "f": [FD...]}.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "common/unique_fd.h"
#include "control/config.h"
#include "vhost_user/message.h"

namespace vnet::control::handover {

inline constexpr int kHandoverVersion = 1;
inline constexpr const char* kFdEnv = "VNET_HANDOVER_FD";
inline constexpr size_t kChunk = 32 * 1024;
inline constexpr size_t kFdsPerMessage = 200;
// Limits on what a successor accepts.
inline constexpr size_t kMaxStateBytes = 64 * 1024 * 1024;
inline constexpr size_t kMaxFds = 65536;

using Deadline = std::chrono::steady_clock::time_point;

// A JSON message (chunked) and a whole JSON message back.
Status send_json(int fd, const nlohmann::json& j);
Result<nlohmann::json> recv_json(int fd, Deadline deadline, size_t max_bytes = kMaxStateBytes);
// fds in messages of at most kFdsPerMessage, and exactly n of them back.
Status send_fds(int fd, const std::vector<UniqueFd>& fds);
Result<std::vector<UniqueFd>> recv_fds(int fd, size_t n, Deadline deadline);

// Reads and drops whatever waits on the socket (closing the fds that came with it), so
// that closing it does not reset the other side before it read our last message.
void drain(int fd);

// A port's spec, whole (the JSON is the handover's own: every field of PortSpec).
nlohmann::json spec_json(const PortSpec& s);
Result<PortSpec> spec_from_json(const nlohmann::json& j);

// Fds of the state travel as indices into one table.
class FdTable {
 public:
  // Sender: adds fd (invalid: null) and returns what to put into the JSON.
  nlohmann::json add(UniqueFd fd);
  std::vector<UniqueFd>& fds() { return fds_; }
  // Receiver: takes the fd a JSON value names (null: an invalid fd). Each fd is taken
  // once; a second take, an index out of range or not a number is an error.
  void set(std::vector<UniqueFd> fds) { fds_ = std::move(fds); }
  Result<UniqueFd> take(const nlohmann::json& v, const std::string& what);

 private:
  std::vector<UniqueFd> fds_;
};

// vhost-user messages <-> JSON (their fds through the table).
nlohmann::json messages_json(std::vector<vhost_user::Message>& msgs, FdTable& fds);
Result<std::vector<vhost_user::Message>> messages_from_json(const nlohmann::json& j, FdTable& fds,
                                                            const std::string& what);

}  // namespace vnet::control::handover
