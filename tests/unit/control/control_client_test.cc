// Tests for ControlClient (against a ControlServer whose loop the test thread drives
// while the client blocks in another thread) and for vnetctl's table rendering.
#include "control/control_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "control/control_server.h"
#include "control/control_test_util.h"

namespace vnet::control {
namespace {

using nlohmann::json;
using testing::pump_until;
using testing::TempDir;
using testing::unix_socket_at;

class ControlClientTest : public ::testing::Test {
 protected:
  // Runs `fn` in a thread while this thread drives the server's loop.
  template <typename Fn>
  void run_client(Fn fn) {
    std::atomic<bool> done{false};
    std::thread t([&] {
      fn();
      done = true;
    });
    bool finished = pump_until(
        loop_, [&] { return done.load(); }, 20000);
    t.join();
    ASSERT_TRUE(finished);
  }

  TempDir dir_;
  std::string path_ = dir_.file("vnetd.sock");
  EventLoop loop_;
};

TEST_F(ControlClientTest, RequestGetsTheReply) {
  auto server = ControlServer::create(loop_, path_, [](const json& req) {
    return json{{"ok", true}, {"got", req}};
  });
  ASSERT_TRUE(server) << server.message();
  Result<json> r1 = Status::error("not run"), r2 = Status::error("not run");
  run_client([&] {
    auto c = ControlClient::connect(path_);
    if (!c) {
      r1 = c.status();
      return;
    }
    r1 = c->request({{"cmd", "version"}});
    r2 = c->request({{"cmd", "counters"}, {"port", "vhu0"}});  // same connection
  });
  ASSERT_TRUE(r1) << r1.message();
  EXPECT_EQ((*r1)["got"], json({{"cmd", "version"}}));
  ASSERT_TRUE(r2) << r2.message();
  EXPECT_EQ((*r2)["got"]["port"], "vhu0");
}

TEST_F(ControlClientTest, ErrorRepliesAreValuesNotFailures) {
  auto server = ControlServer::create(loop_, path_, [](const json&) {
    return json{{"ok", false}, {"error", "no port named x"}};
  });
  ASSERT_TRUE(server);
  Result<json> r = Status::error("not run");
  run_client([&] {
    auto c = ControlClient::connect(path_);
    r = c ? c->request({{"cmd", "counters"}, {"port", "x"}}) : Result<json>(c.status());
  });
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ((*r)["error"], "no port named x");
}

TEST_F(ControlClientTest, BigReply) {
  const size_t n = size_t(4) << 20;
  auto server = ControlServer::create(loop_, path_, [&](const json&) {
    return json{{"ok", true}, {"data", std::string(n, 'y')}};
  });
  ASSERT_TRUE(server);
  Result<json> r = Status::error("not run");
  run_client([&] {
    auto c = ControlClient::connect(path_);
    r = c ? c->request({{"cmd", "fdb"}}) : Result<json>(c.status());
  });
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ((*r)["data"].get<std::string>().size(), n);
}

TEST_F(ControlClientTest, MissingSocketSaysIsVnetdRunning) {
  auto c = ControlClient::connect(path_);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.message(),
            "cannot connect to " + path_ + ": No such file or directory (is vnetd running?)");
}

TEST_F(ControlClientTest, StaleSocketSaysConnectionRefused) {
  {
    UniqueFd stale = unix_socket_at(path_, false);
    ASSERT_TRUE(stale);
  }
  auto c = ControlClient::connect(path_);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.message(), "cannot connect to " + path_ + ": Connection refused (is vnetd running?)");
}

TEST_F(ControlClientTest, SilentServerTimesOut) {
  UniqueFd listener = unix_socket_at(path_, true);  // accepts into its backlog, never answers
  ASSERT_TRUE(listener);
  auto c = ControlClient::connect(path_);
  ASSERT_TRUE(c) << c.message();
  auto t0 = std::chrono::steady_clock::now();
  auto r = c->request({{"cmd", "version"}}, 200);
  auto elapsed = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_EQ(r.message(), "no reply from vnetd on " + path_ + " within 200 ms");
  EXPECT_GE(elapsed, std::chrono::milliseconds(200));
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

TEST_F(ControlClientTest, ServerClosingWithoutReplyIsAnError) {
  UniqueFd listener = unix_socket_at(path_, true);
  ASSERT_TRUE(listener);
  auto c = ControlClient::connect(path_);
  ASSERT_TRUE(c);
  UniqueFd accepted(accept(listener.get(), nullptr, nullptr));
  ASSERT_TRUE(accepted);
  accepted.reset();
  auto r = c->request({{"cmd", "version"}}, 1000);
  ASSERT_FALSE(r);
  // Either the send already fails or the read sees EOF; both name the socket.
  EXPECT_NE(r.message().find(path_), std::string::npos) << r.message();
}

TEST_F(ControlClientTest, TooManyClientsReplyIsReported) {
  ControlServerLimits limits;
  limits.max_clients = 0;
  auto server = ControlServer::create(
      loop_, path_,
      [](const json&) {
        return json{{"ok", true}};
      },
      limits);
  ASSERT_TRUE(server);
  Result<json> r = Status::error("not run");
  run_client([&] {
    auto c = ControlClient::connect(path_);
    r = c ? c->request({{"cmd", "ports"}}) : Result<json>(c.status());
  });
  // Depending on timing the client sees the server's explanation or a closed socket.
  if (r) {
    EXPECT_EQ((*r)["ok"], false);
    EXPECT_NE((*r)["error"].get<std::string>().find("too many"), std::string::npos);
  } else {
    EXPECT_NE(r.message().find(path_), std::string::npos) << r.message();
  }
}

// --- rendering ------------------------------------------------------------------------

// dump_fdb against a server that hands out 10 entries in chunks of at most 3 (and at
// most "limit"): every entry once, in order, the filter passed on with each request,
// --count stops early and asks for no more than it needs, an error reply ends the dump.
TEST_F(ControlClientTest, DumpFdbFollowsTheCursor) {
  std::vector<json> requests;
  auto server = ControlServer::create(loop_, path_, [&](const json& req) {
    requests.push_back(req);
    if (req.value("port", "") == "nosuch") return json{{"ok", false}, {"error", "fdb: no port"}};
    const int64_t from = req.value("cursor", int64_t(0));
    const int64_t n = std::min<int64_t>({3, req.value("limit", int64_t(1024)), 10 - from});
    json entries = json::array();
    for (int64_t i = from; i < from + n; ++i) entries.push_back({{"mac", i}});
    json reply{{"ok", true}, {"fdb", entries}};
    if (from + n < 10) reply["cursor"] = from + n;
    return reply;
  });
  ASSERT_TRUE(server) << server.message();
  std::vector<int64_t> got, first4;
  Result<json> all = Status::error("not run"), some = all, bad = all;
  run_client([&] {
    auto c = ControlClient::connect(path_);
    if (!c) return;
    all = dump_fdb(*c, {{"port", "a"}}, 0, 5000, [&](const json& e) { got.push_back(e["mac"]); });
    some =
        dump_fdb(*c, json::object(), 4, 5000, [&](const json& e) { first4.push_back(e["mac"]); });
    bad = dump_fdb(*c, {{"port", "nosuch"}}, 0, 5000, [](const json&) {});
  });
  ASSERT_TRUE(all) << all.message();
  EXPECT_EQ((*all)["entries"], 10);
  EXPECT_EQ(got, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  ASSERT_GE(requests.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(requests[i]["cmd"], "fdb");
    EXPECT_EQ(requests[i]["port"], "a");
  }
  ASSERT_TRUE(some) << some.message();
  EXPECT_EQ((*some)["entries"], 4);
  EXPECT_EQ(first4, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(requests[5]["limit"], 1);  // after 3 entries, one more is all it asks for
  ASSERT_TRUE(bad) << bad.message();
  EXPECT_EQ((*bad)["ok"], false);
  EXPECT_EQ((*bad)["error"], "fdb: no port");
}

TEST(FormatTable, AlignsColumnsWithoutTrailingSpaces) {
  std::string t = format_table({"A", "LONGHEAD", "N"}, {{"xxxx", "y", "5"}, {"z", "", "123"}}, {2});
  EXPECT_EQ(t,
            "A     LONGHEAD    N\n"
            "xxxx  y           5\n"
            "z               123\n");
}

TEST(FormatTable, ShortRowsArePadded) {
  EXPECT_EQ(format_table({"A", "B"}, {{"1"}}), "A  B\n1\n");
}

TEST(Cell, RendersValues) {
  json j = {{"s", "x"}, {"e", ""}, {"b", true}, {"f", false}, {"n", 42}, {"z", nullptr}};
  EXPECT_EQ(cell(j, "s"), "x");
  EXPECT_EQ(cell(j, "e"), "-");
  EXPECT_EQ(cell(j, "b"), "yes");
  EXPECT_EQ(cell(j, "f"), "no");
  EXPECT_EQ(cell(j, "n"), "42");
  EXPECT_EQ(cell(j, "z"), "-");
  EXPECT_EQ(cell(j, "missing"), "-");
  EXPECT_EQ(cell(json::array(), "s"), "-");
}

TEST(FormatPorts, Table) {
  json reply = json::parse(R"({"ok":true,"ports":[
    {"name":"vhu0","type":"vhost-user","socket":"/s/vm0.sock","mode":"server","connected":true,
     "features":["VERSION_1","MRG_RXBUF"],"counters":{},"vlan":{"mode":"access","vlan":0},
     "mtu":1500},
    {"name":"vhu1","type":"vhost-user","socket":"/s/vm1.sock","mode":"client","connected":false,
     "features":[],"counters":{},"vlan":{"mode":"trunk","trunk":[10,20],"native":1},"mtu":9000}
    ]})");
  EXPECT_EQ(format_ports(reply),
            "NAME  TYPE        MODE    CONNECTED  SOCKET       VLAN                  MTU   "
            "POLICING  FEATURES\n"
            "vhu0  vhost-user  server  yes        /s/vm0.sock  access 0              1500  -       "
            "  VERSION_1,MRG_RXBUF\n"
            "vhu1  vhost-user  client  no         /s/vm1.sock  trunk 10,20 native 1  9000  -       "
            "  -\n");
}

TEST(FormatPorts, MissingFieldsDoNotThrow) {
  json reply =
      json::parse(R"({"ok":true,"ports":[{"name":"p","connected":"maybe","features":7}]})");
  EXPECT_EQ(format_ports(reply),
            "NAME  TYPE  MODE  CONNECTED  SOCKET  VLAN  MTU  POLICING  FEATURES\n"
            "p     -     -     maybe      -       -     -    -         -\n");
  EXPECT_EQ(format_ports(json::object()),
            "NAME  TYPE  MODE  CONNECTED  SOCKET  VLAN  MTU  POLICING  FEATURES\n");
}

TEST(FormatPorts, PolicingCell) {
  EXPECT_EQ(policing_cell(json::parse(R"({"ingress": {}, "storm": {}})")), "-");
  EXPECT_EQ(policing_cell(json::parse(R"({
      "ingress": {"bps": 100000000, "bps_burst": 1000000, "pps": 20000, "pps_burst": 200},
      "storm": {"broadcast": {"pps": 1000, "pps_burst": 64},
                "unknown_unicast": {"bps": 1500000, "bps_burst": 1000000}}})")),
            "in:100Mbit,20kpps broadcast:1kpps unknown_unicast:1.5Mbit");
  EXPECT_EQ(policing_cell(json()), "-");
}

TEST(FormatCounters, PortsThenWorker) {
  json reply = json::parse(R"({"ok":true,
    "counters":{"vhu0":{"rx_packets":10,"rx_bytes":1500,"tx_packets":2,"tx_bytes":120,
                        "drops":{"no_buffers":0,"bad_chain":3,"vlan":1}},
                "vhu1":{"rx_packets":0,"rx_bytes":0,"tx_packets":0,"tx_bytes":0,
                        "drops":{"no_buffers":0}}},
    "worker":{"loops":1000,"flooded":4}})");
  EXPECT_EQ(format_counters(reply),
            "PORT  RX_PACKETS  RX_BYTES  TX_PACKETS  TX_BYTES  DROPS\n"
            "vhu0          10      1500           2       120  bad_chain=3 vlan=1\n"
            "vhu1           0         0           0         0  -\n"
            "\n"
            "WORKER   VALUE\n"
            "flooded      4\n"
            "loops     1000\n");
}

TEST(FormatFdb, Table) {
  json reply = json::parse(R"({"ok":true,"fdb":[
    {"mac":"52:54:00:00:00:01","vlan":0,"port":"vhu0","age":3},
    {"mac":"52:54:00:00:00:02","vlan":100,"port":"vhu1","age":120}]})");
  EXPECT_EQ(format_fdb(reply),
            "MAC                VLAN  PORT             AGE\n"
            "52:54:00:00:00:01     0  vhu0               3\n"
            "52:54:00:00:00:02   100  vhu1             120\n"
            "2 entries\n");
  // Fixed widths: a dump in chunks (format_fdb_row per entry) prints the same table.
  EXPECT_EQ(format_fdb(json::parse(R"({"ok":true,"fdb":[]})")),
            "MAC                VLAN  PORT             AGE\n0 entries\n");
}

}  // namespace
}  // namespace vnet::control
