// Tests for ControlServer: the line protocol (framing, malformed and oversized
// requests, big replies against a full socket buffer, disconnects), the socket file
// (stale, live, not a socket, mode, removal, parent directory) and resource hygiene.
#include "control/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "control/control_test_util.h"

namespace vnet::control {
namespace {

using nlohmann::json;
using testing::count_open_fds;
using testing::pump_until;
using testing::RawClient;
using testing::TempDir;
using testing::unix_socket_at;

// Replies {"ok":true,"echo":REQ}; {"cmd":"big","n":N} gets an N-byte string back;
// {"cmd":"throw"} throws, {"cmd":"throw_int"} throws an int, {"cmd":"typed","n":N}
// reads N as an integer (nlohmann throws type_error for anything else).
json echo_handler(const json& req) {
  if (req.is_object() && req.value("cmd", "") == "throw_int") throw 42;
  if (req.is_object() && req.value("cmd", "") == "typed")
    return {{"ok", true}, {"n", req.at("n").get<int>()}};
  if (req.is_object() && req.value("cmd", "") == "big")
    return {{"ok", true}, {"data", std::string(req.value("n", size_t(0)), 'x')}};
  if (req.is_object() && req.value("cmd", "") == "throw") throw std::runtime_error("boom");
  if (req.is_object() && req.value("cmd", "") == "fail") return {{"ok", false}, {"error", "no"}};
  return {{"ok", true}, {"echo", req}};
}

class ControlServerTest : public ::testing::Test {
 protected:
  std::unique_ptr<ControlServer> start(ControlServerLimits limits = {}) {
    auto s = ControlServer::create(loop_, path_, echo_handler, limits);
    EXPECT_TRUE(s) << s.message();
    return s ? std::move(*s) : nullptr;
  }
  std::unique_ptr<ControlServer> start_with_max_clients(size_t max_clients) {
    ControlServerLimits limits;
    limits.max_clients = max_clients;
    return start(limits);
  }
  std::unique_ptr<ControlServer> start_with_timeouts(int idle_ms, int request_ms) {
    ControlServerLimits limits;
    limits.idle_timeout = std::chrono::milliseconds(idle_ms);
    limits.request_timeout = std::chrono::milliseconds(request_ms);
    return start(limits);
  }
  // Pumps until the server has `n` clients.
  bool clients_become(ControlServer& server, size_t n) {
    return pump_until(loop_, [&] { return server.client_count() == n; });
  }
  json reply(RawClient& c) {
    auto line = c.read_line();
    EXPECT_TRUE(line.has_value()) << "no reply line";
    if (!line) return json();
    return json::parse(*line);
  }

  TempDir dir_;
  std::string path_ = dir_.file("vnetd.sock");
  EventLoop loop_;
};

TEST_F(ControlServerTest, RequestAndReply) {
  auto server = start();
  ASSERT_TRUE(server);
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send_all(R"({"cmd":"version"})"
                         "\n"));
  json r = reply(c);
  EXPECT_EQ(r["ok"], true);
  EXPECT_EQ(r["echo"], json({{"cmd", "version"}}));
  EXPECT_EQ(server->counters().requests.get(), 1u);
  EXPECT_EQ(server->client_count(), 1u);
}

TEST_F(ControlServerTest, SeveralRequestsInOneWrite) {
  auto server = start();
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("{\"cmd\":\"a\"}\n{\"cmd\":\"b\"}\r\n\n  \n{\"cmd\":\"c\"}\n"));
  EXPECT_EQ(reply(c)["echo"]["cmd"], "a");
  EXPECT_EQ(reply(c)["echo"]["cmd"], "b");  // CRLF accepted, blank lines ignored
  EXPECT_EQ(reply(c)["echo"]["cmd"], "c");
  EXPECT_EQ(server->counters().requests.get(), 3u);
}

TEST_F(ControlServerTest, RequestSplitAcrossWrites) {
  auto server = start();
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("{\"cmd\":"));
  // Unix sockets deliver at send(): these rounds let the server read the fragment.
  for (int i = 0; i < 5; ++i) loop_.run_once(0);
  c.read_available();
  EXPECT_EQ(c.buffered(), "");
  EXPECT_EQ(server->counters().requests.get(), 0u);
  ASSERT_TRUE(c.send_all("\"ports\""));
  for (int i = 0; i < 5; ++i) loop_.run_once(0);
  EXPECT_EQ(server->counters().requests.get(), 0u);
  ASSERT_TRUE(c.send_all("}\n{\"cmd\":\"x\"}"));
  EXPECT_EQ(reply(c)["echo"]["cmd"], "ports");
  ASSERT_TRUE(c.send_all("\n"));
  EXPECT_EQ(reply(c)["echo"]["cmd"], "x");
}

TEST_F(ControlServerTest, MalformedJsonGetsErrorAndConnectionStaysUsable) {
  auto server = start();
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("{bad json\n"));
  json r = reply(c);
  EXPECT_EQ(r["ok"], false);
  ASSERT_TRUE(r["error"].is_string());
  EXPECT_EQ(r["error"].get<std::string>().rfind("bad JSON: ", 0), 0u) << r.dump();
  EXPECT_EQ(r["error"].get<std::string>().find("[json.exception"), std::string::npos);
  ASSERT_TRUE(c.send_all("{\"cmd\":\"version\"}\n"));
  EXPECT_EQ(reply(c)["ok"], true);
  EXPECT_EQ(server->counters().bad_json.get(), 1u);
  EXPECT_EQ(server->counters().error_replies.get(), 1u);
  EXPECT_EQ(server->client_count(), 1u);
}

TEST_F(ControlServerTest, HandlerExceptionBecomesErrorReply) {
  auto server = start();
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("{\"cmd\":\"throw\"}\n{\"cmd\":\"fail\"}\n"));
  json r = reply(c);
  EXPECT_EQ(r["ok"], false);
  EXPECT_EQ(r["error"], "internal error: boom");
  EXPECT_EQ(reply(c), json({{"ok", false}, {"error", "no"}}));
  EXPECT_EQ(server->counters().handler_failures.get(), 1u);
  EXPECT_EQ(server->counters().error_replies.get(), 2u);
}

TEST_F(ControlServerTest, OversizedLineGetsErrorAndClose) {
  auto server = start();  // default limit: 1 MiB
  RawClient c(loop_, path_);
  RawClient other(loop_, path_);
  // The server may close while we are still writing: that is fine.
  (void)c.send_all(std::string((size_t(1) << 20) + 4096, 'x'));
  auto line = c.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(json::parse(*line), json({{"ok", false}, {"error", "request too long"}}));
  EXPECT_TRUE(c.wait_eof());
  EXPECT_EQ(server->counters().too_long.get(), 1u);
  EXPECT_TRUE(pump_until(loop_, [&] { return server->client_count() == 1; }));
  // Others are not affected.
  ASSERT_TRUE(other.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(other)["ok"], true);
}

TEST_F(ControlServerTest, CompleteLineOverLimitIsRefused) {
  ControlServerLimits limits;
  limits.max_request = 100;
  auto server = start(limits);
  RawClient c(loop_, path_);
  std::string ok_line = "{\"cmd\":\"" + std::string(100 - 10, 'a') + "\"}";
  ASSERT_EQ(ok_line.size(), 100u);
  ASSERT_TRUE(c.send_all(ok_line + "\n"));
  EXPECT_EQ(reply(c)["ok"], true);  // exactly at the limit
  ASSERT_TRUE(c.send_all("{\"cmd\":\"" + std::string(100, 'a') + "\"}\n"));
  EXPECT_EQ(reply(c)["error"], "request too long");
  EXPECT_TRUE(c.wait_eof());
}

TEST_F(ControlServerTest, BigRepliesAreWrittenFullyWhenTheSocketIsFull) {
  auto server = start();
  RawClient c(loop_, path_);
  const size_t n = size_t(2) << 20;  // far more than a Unix socket buffers
  ASSERT_TRUE(
      c.send_all("{\"cmd\":\"big\",\"n\":" + std::to_string(n) + "}\n{\"cmd\":\"after\"}\n"));
  // The client reads nothing for a while: the server must buffer, not block or drop.
  for (int i = 0; i < 20; ++i) loop_.run_once(0);
  EXPECT_EQ(server->counters().requests.get(), 1u);  // second waits for the first reply
  json r = reply(c);
  ASSERT_TRUE(r["data"].is_string());
  EXPECT_EQ(r["data"].get<std::string>().size(), n);
  EXPECT_EQ(reply(c)["echo"]["cmd"], "after");
  EXPECT_EQ(server->counters().requests.get(), 2u);
}

TEST_F(ControlServerTest, ClientGoneInMidReplyIsCleanedUp) {
  auto server = start();
  {
    RawClient c(loop_, path_);
    ASSERT_TRUE(c.send_all("{\"cmd\":\"big\",\"n\":2097152}\n"));
    ASSERT_TRUE(pump_until(loop_, [&] { return server->counters().requests.get() == 1; }));
    char buf[1000];
    ASSERT_GT(recv(c.fd(), buf, sizeof(buf), 0), 0);  // a piece of the reply, then leave
  }
  EXPECT_TRUE(pump_until(loop_, [&] { return server->client_count() == 0; }));
  EXPECT_EQ(server->counters().write_errors.get(), 1u);
  RawClient c2(loop_, path_);
  ASSERT_TRUE(c2.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(c2)["ok"], true);
}

TEST_F(ControlServerTest, ClientThatDoesNotReadItsReplyIsClosed) {
  ControlServerLimits limits;
  limits.write_stall_timeout = std::chrono::milliseconds(200);
  auto server = start(limits);
  RawClient lazy(loop_, path_);
  RawClient reader(loop_, path_);
  ASSERT_TRUE(lazy.send_all("{\"cmd\":\"big\",\"n\":2097152}\n"));
  ASSERT_TRUE(pump_until(loop_, [&] { return server->counters().requests.get() == 1; }));
  // A reader that keeps making progress is not cut off.
  ASSERT_TRUE(reader.send_all("{\"cmd\":\"big\",\"n\":2097152}\n"));
  json r = reply(reader);
  EXPECT_EQ(r["data"].get<std::string>().size(), 2097152u);
  EXPECT_TRUE(pump_until(loop_, [&] { return server->client_count() == 1; }));
  EXPECT_EQ(server->counters().write_stalls.get(), 1u);
  EXPECT_TRUE(lazy.wait_eof());
  ASSERT_TRUE(reader.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(reader)["ok"], true);
}

TEST_F(ControlServerTest, HalfClosedClientIsAnsweredThenClosed) {
  auto server = start();
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("{\"cmd\":\"a\"}\n{\"cmd\":\"last\"}"));  // no final newline
  ASSERT_EQ(shutdown(c.fd(), SHUT_WR), 0);
  EXPECT_EQ(reply(c)["echo"]["cmd"], "a");
  EXPECT_EQ(reply(c)["echo"]["cmd"], "last");
  EXPECT_TRUE(c.wait_eof());
  EXPECT_TRUE(pump_until(loop_, [&] { return server->client_count() == 0; }));
}

TEST_F(ControlServerTest, FullServerEvictsTheLeastRecentlyActiveClient) {
  auto server = start_with_max_clients(2);
  RawClient a(loop_, path_);
  ASSERT_TRUE(clients_become(*server, 1));
  RawClient b(loop_, path_);
  ASSERT_TRUE(clients_become(*server, 2));
  ASSERT_TRUE(a.send_all("{\"cmd\":\"v\"}\n"));  // a is now more recent than b
  EXPECT_EQ(reply(a)["ok"], true);
  RawClient c(loop_, path_);
  // b goes, with a line saying why; the newcomer is served.
  auto line = b.read_line();
  ASSERT_TRUE(line.has_value());
  json r = json::parse(*line);
  EXPECT_EQ(r["ok"], false);
  EXPECT_NE(r["error"].get<std::string>().find("too many"), std::string::npos);
  EXPECT_TRUE(b.wait_eof());
  ASSERT_TRUE(c.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(c)["ok"], true);
  ASSERT_TRUE(a.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(a)["ok"], true);
  EXPECT_EQ(server->counters().evicted.get(), 1u);
  EXPECT_EQ(server->counters().rejected.get(), 0u);
  EXPECT_EQ(server->client_count(), 2u);
}

TEST_F(ControlServerTest, IdleClientsBeforeBusyOnesAreEvicted) {
  auto server = start_with_max_clients(2);
  RawClient busy(loop_, path_);
  ASSERT_TRUE(clients_become(*server, 1));
  ASSERT_TRUE(busy.send_all("{\"cmd\":"));  // half a request: older but not idle
  for (int i = 0; i < 5; ++i) loop_.run_once(0);
  RawClient idle(loop_, path_);
  ASSERT_TRUE(clients_become(*server, 2));
  RawClient c(loop_, path_);
  EXPECT_TRUE(idle.wait_eof());
  ASSERT_TRUE(busy.send_all("\"v\"}\n"));
  EXPECT_EQ(reply(busy)["ok"], true);
}

TEST_F(ControlServerTest, ManyConnectionsNeverLockANewClientOut) {
  auto server = start();  // 64 clients at most
  std::vector<std::unique_ptr<RawClient>> idle;
  for (int i = 0; i < 200; ++i) {
    idle.push_back(std::make_unique<RawClient>(loop_, path_));
    loop_.run_once(0);
  }
  ASSERT_TRUE(pump_until(loop_, [&] { return server->counters().accepted.get() == 200; }));
  EXPECT_EQ(server->client_count(), 64u);
  RawClient op(loop_, path_);
  ASSERT_TRUE(op.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(op)["ok"], true);
  EXPECT_EQ(server->counters().evicted.get(), 137u);
  EXPECT_EQ(server->client_count(), 64u);
}

TEST_F(ControlServerTest, MaxClientsZeroTurnsEveryoneAway) {
  auto server = start_with_max_clients(0);
  RawClient extra(loop_, path_);
  auto line = extra.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_NE(json::parse(*line)["error"].get<std::string>().find("too many"), std::string::npos);
  EXPECT_TRUE(extra.wait_eof());
  EXPECT_EQ(server->counters().rejected.get(), 1u);
}

TEST_F(ControlServerTest, IdleClientIsTimedOut) {
  auto server = start_with_timeouts(100, 10000);
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(c)["ok"], true);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.wait_eof(5000));
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, std::chrono::milliseconds(90));
  EXPECT_EQ(server->counters().idle_timeouts.get(), 1u);
  EXPECT_EQ(server->client_count(), 0u);
}

TEST_F(ControlServerTest, BlankLinesDoNotKeepAClientAlive) {
  auto server = start_with_timeouts(100, 10000);
  RawClient c(loop_, path_);
  auto t0 = std::chrono::steady_clock::now();
  bool closed = false;
  while (!closed && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
    closed = !c.send_all("\n") || c.wait_eof(20);
  }
  EXPECT_TRUE(closed);
  EXPECT_EQ(server->counters().idle_timeouts.get(), 1u);
}

TEST_F(ControlServerTest, SlowClientIsTimedOutWithAnError) {
  auto server = start_with_timeouts(60000, 200);
  RawClient c(loop_, path_);
  RawClient other(loop_, path_);
  // One byte every 20 ms, never a newline.
  auto t0 = std::chrono::steady_clock::now();
  std::optional<std::string> line;
  while (!line && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
    if (!c.send_all("[")) break;
    line = c.read_line(20);
  }
  if (!line) line = c.read_line();
  ASSERT_TRUE(line.has_value());
  EXPECT_EQ(json::parse(*line), json({{"ok", false}, {"error", "request timed out"}}));
  EXPECT_TRUE(c.wait_eof());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(190));
  EXPECT_EQ(server->counters().request_timeouts.get(), 1u);
  ASSERT_TRUE(other.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(other)["ok"], true);
}

TEST_F(ControlServerTest, PipelinedRequestsDoNotStarveOthers) {
  auto server = start();  // 16 lines per turn
  RawClient a(loop_, path_), b(loop_, path_);
  ASSERT_TRUE(clients_become(*server, 2));
  std::string many;
  for (int i = 0; i < 1000; ++i) many += "{\"cmd\":\"a\"}\n";
  ASSERT_TRUE(a.send_all(many));
  loop_.run_once(0);  // a's first turn
  ASSERT_TRUE(b.send_all("{\"cmd\":\"b\"}\n"));
  EXPECT_EQ(reply(b)["echo"]["cmd"], "b");
  // b was served after a few of a's turns, not after all of a's requests.
  EXPECT_LE(server->counters().requests.get(), 16u * 4 + 1);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(reply(a)["echo"]["cmd"], "a") << i;
  EXPECT_EQ(server->counters().requests.get(), 1001u);
  // a is read again once its backlog is done.
  ASSERT_TRUE(a.send_all("{\"cmd\":\"again\"}\n"));
  EXPECT_EQ(reply(a)["echo"]["cmd"], "again");
}

TEST_F(ControlServerTest, PipelinedRequestsBeforeAHalfCloseAreAllAnswered) {
  auto server = start();
  RawClient a(loop_, path_);
  std::string many;
  for (int i = 0; i < 100; ++i) many += "{\"cmd\":\"a\"}\n";
  ASSERT_TRUE(a.send_all(many + "{\"cmd\":\"last\"}"));  // no newline, then EOF
  shutdown(a.fd(), SHUT_WR);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(reply(a)["echo"]["cmd"], "a") << i;
  EXPECT_EQ(reply(a)["echo"]["cmd"], "last");
  EXPECT_TRUE(a.wait_eof());
  EXPECT_TRUE(clients_become(*server, 0));
}

TEST_F(ControlServerTest, HostileRequestsGetErrorsAndTheConnectionGoesOn) {
  auto server = start();
  RawClient c(loop_, path_);
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  struct Case {
    std::string line;
    std::string error_prefix;
  } cases[] = {
      {R"({"cmd":"x","n":1e400})", "bad JSON: "},
      {R"({"cmd":"x","n":-1e400})", "bad JSON: "},
      {"{\"cmd\":\"set-port\",\"trunk\":" + deep + "}", "request nested deeper than 32"},
      {"{\"cmd\":" + std::string(100000, '{'), "request nested deeper than 32"},
      {"{\"cmd\":\"\xff\xfe\"}", "bad JSON: "},
      {R"({"cmd":"typed","n":"seven"})", "bad request: "},
      {R"({"cmd":"typed"})", "bad request: "},
      {R"({"cmd":"throw_int"})", "internal error"},
  };
  for (const auto& k : cases) {
    ASSERT_TRUE(c.send_all(k.line + "\n"));
    json r = reply(c);
    EXPECT_EQ(r["ok"], false) << k.line.substr(0, 60);
    EXPECT_EQ(r["error"].get<std::string>().rfind(k.error_prefix, 0), 0u) << r.dump();
    EXPECT_LE(r["error"].get<std::string>().size(), 300u);
  }
  ASSERT_TRUE(c.send_all(R"({"cmd":"typed","n":[123456789012345678901234567890]})"
                         "\n"));
  EXPECT_EQ(reply(c)["ok"], false);  // type_error, not a crash
  ASSERT_TRUE(c.send_all(R"({"cmd":"typed","n":7})"
                         "\n"));
  EXPECT_EQ(reply(c)["n"], 7);
  const auto& k = server->counters();
  EXPECT_EQ(k.bad_json.get(), 3u);
  EXPECT_EQ(k.too_deep.get(), 2u);
  EXPECT_EQ(k.bad_requests.get(), 3u);
  EXPECT_EQ(k.handler_failures.get(), 1u);
  EXPECT_EQ(server->client_count(), 1u);
}

TEST_F(ControlServerTest, StaleSocketIsReplaced) {
  {
    UniqueFd stale = unix_socket_at(path_, /*do_listen=*/false);
    ASSERT_TRUE(stale);
  }
  struct stat st;
  ASSERT_EQ(lstat(path_.c_str(), &st), 0);
  ASSERT_TRUE(S_ISSOCK(st.st_mode));
  auto server = start();
  ASSERT_TRUE(server);
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(c)["ok"], true);
}

TEST_F(ControlServerTest, LiveSocketIsRefused) {
  UniqueFd live = unix_socket_at(path_, /*do_listen=*/true);
  ASSERT_TRUE(live);
  auto s = ControlServer::create(loop_, path_, echo_handler);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.message(), "another vnetd is listening on " + path_);
  RawClient c(loop_, path_);  // the other listener's socket is untouched
  EXPECT_TRUE(c.connected());
}

TEST_F(ControlServerTest, RegularFileIsRefused) {
  { std::ofstream(path_) << "precious"; }
  auto s = ControlServer::create(loop_, path_, echo_handler);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find(path_), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("not a socket"), std::string::npos) << s.message();
  std::ifstream in(path_);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(ControlServerTest, PathTooLongIsRefused) {
  std::string longpath = dir_.file(std::string(120, 'p'));
  auto s = ControlServer::create(loop_, longpath, echo_handler);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("too long"), std::string::npos) << s.message();
}

TEST_F(ControlServerTest, SocketModeIs0660WhateverTheUmask) {
  for (mode_t mask : {mode_t(0), mode_t(022), mode_t(077)}) {
    mode_t old = umask(mask);
    auto server = start();
    umask(old);
    ASSERT_TRUE(server);
    struct stat st;
    ASSERT_EQ(lstat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0660u) << "umask " << std::oct << mask;
  }
}

TEST_F(ControlServerTest, SocketRemovedOnDestruction) {
  auto server = start();
  ASSERT_TRUE(server);
  RawClient c(loop_, path_);
  ASSERT_TRUE(pump_until(loop_, [&] { return server->client_count() == 1; }));
  server.reset();
  struct stat st;
  EXPECT_NE(lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(c.wait_eof(1000));  // its clients are closed too
}

TEST_F(ControlServerTest, DestructionLeavesAReplacementAlone) {
  auto server = start();
  ASSERT_TRUE(server);
  ASSERT_EQ(unlink(path_.c_str()), 0);
  UniqueFd successor = unix_socket_at(path_, /*do_listen=*/true);
  ASSERT_TRUE(successor);
  server.reset();
  struct stat st;
  EXPECT_EQ(lstat(path_.c_str(), &st), 0);
}

TEST_F(ControlServerTest, CreatesParentDirectories) {
  std::string nested = (dir_.path() / "run" / "vnet" / "vnetd.sock").string();
  mode_t old = umask(077);
  auto s = ControlServer::create(loop_, nested, echo_handler);
  umask(old);
  ASSERT_TRUE(s) << s.message();
  for (auto d : {dir_.path() / "run", dir_.path() / "run" / "vnet"}) {
    struct stat st;
    ASSERT_EQ(stat(d.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0755u) << d;
  }
  RawClient c(loop_, nested);
  ASSERT_TRUE(c.send_all("{\"cmd\":\"v\"}\n"));
  EXPECT_EQ(reply(c)["ok"], true);
}

TEST_F(ControlServerTest, ParentThatIsAFileIsAnError) {
  { std::ofstream(dir_.file("f")) << "x"; }
  auto s = ControlServer::create(loop_, dir_.file("f") + "/vnetd.sock", echo_handler);
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("not a directory"), std::string::npos) << s.message();
}

TEST_F(ControlServerTest, ConnectDisconnectCyclesLeakNoFds) {
  auto server = start();
  ASSERT_TRUE(server);
  // Warm up once so that lazily opened things (none expected) are not counted.
  {
    RawClient c(loop_, path_);
    ASSERT_TRUE(c.send_all("{\"cmd\":\"v\"}\n"));
    reply(c);
  }
  ASSERT_TRUE(pump_until(loop_, [&] { return server->client_count() == 0; }));
  const int before = count_open_fds();
  for (int i = 0; i < 200; ++i) {
    RawClient c(loop_, path_);
    ASSERT_TRUE(c.connected());
    switch (i % 4) {
      case 0:  // request and reply
        ASSERT_TRUE(c.send_all("{\"cmd\":\"v\"}\n"));
        ASSERT_EQ(reply(c)["ok"], true);
        break;
      case 1:  // connect and go
        break;
      case 2:  // partial request, then go
        ASSERT_TRUE(c.send_all("{\"cmd\":"));
        break;
      case 3:  // a reply bigger than the socket buffer, unread
        ASSERT_TRUE(c.send_all("{\"cmd\":\"big\",\"n\":500000}\n"));
        ASSERT_TRUE(pump_until(loop_, [&, n = server->counters().requests.get()] {
          return server->counters().requests.get() == n + 1;
        }));
        break;
    }
  }
  ASSERT_TRUE(pump_until(loop_, [&] { return server->client_count() == 0; }));
  EXPECT_EQ(count_open_fds(), before);
  EXPECT_EQ(server->counters().accepted.get(), 201u);
}

TEST_F(ControlServerTest, CountersJson) {
  auto server = start();
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("nope\n"));
  reply(c);
  json j = server->counters_json();
  EXPECT_EQ(j["clients"], 1);
  EXPECT_EQ(j["requests"], 1);
  EXPECT_EQ(j["bad_json"], 1);
  for (const char* k : {"evicted", "too_deep", "bad_requests", "idle_timeouts", "request_timeouts"})
    EXPECT_EQ(j[k], 0) << k;
}

}  // namespace
}  // namespace vnet::control

namespace vnet::control {
namespace {

// A request whose handler calls hand_off(): the reply is written, then the connection
// leaves the server and the handler's function owns it (as "capture" does).
TEST_F(ControlServerTest, HandOffAfterTheReply) {
  ControlServer* srv = nullptr;
  UniqueFd taken;
  auto s = ControlServer::create(loop_, path_, [&](const json& req) -> json {
    if (req.value("cmd", "") == "stream")
      srv->hand_off([&](UniqueFd fd) { taken = std::move(fd); });
    return {{"ok", true}};
  });
  ASSERT_TRUE(s);
  srv = s->get();
  RawClient c(loop_, path_);
  ASSERT_TRUE(c.send_all("{\"cmd\":\"stream\"}\n{\"cmd\":\"ignored\"}\n"));
  EXPECT_EQ(reply(c)["ok"], true);
  ASSERT_TRUE(pump_until(loop_, [&] { return bool(taken); }));
  EXPECT_EQ((*s)->client_count(), 0u);
  EXPECT_EQ((*s)->counters().requests.get(), 1u);  // the line after it is not handled
  // The connection is the new owner's: bytes it writes reach the client.
  ASSERT_EQ(write(taken.get(), "pcapng", 6), 6);
  char buf[6];
  ASSERT_TRUE(
      pump_until(loop_, [&] { return recv(c.fd(), buf, 6, MSG_PEEK | MSG_DONTWAIT) == 6; }));
  EXPECT_EQ(std::string(buf, 6), "pcapng");
  // A request without hand_off() leaves the next client as before.
  RawClient d(loop_, path_);
  ASSERT_TRUE(d.send_all("{\"cmd\":\"x\"}\n"));
  EXPECT_EQ(reply(d)["ok"], true);
  EXPECT_EQ((*s)->client_count(), 1u);
}

}  // namespace
}  // namespace vnet::control
