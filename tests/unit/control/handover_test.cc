// Hot upgrade: the hand-over socket's messages and the state's parts (control/handover.h).
#include "control/handover.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vnet::control::handover {
namespace {

using nlohmann::json;

struct Pair {
  Pair() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
  UniqueFd a, b;
};

Deadline soon() {
  return std::chrono::steady_clock::now() + std::chrono::seconds(2);
}

TEST(Handover, JsonLargerThanAChunkArrivesWhole) {
  Pair p;
  json j = {{"big", std::string(3 * kChunk + 17, 'x')}, {"n", 5}};
  std::thread t([&] { EXPECT_TRUE(send_json(p.a.get(), j)); });
  auto r = recv_json(p.b.get(), soon());
  t.join();
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(*r, j);
}

TEST(Handover, BadJsonTimeoutsAndLimitsAreErrors) {
  {
    Pair p;
    const char junk[] = "E{not json";
    ASSERT_EQ(send(p.a.get(), junk, sizeof(junk) - 1, 0), ssize_t(sizeof(junk) - 1));
    EXPECT_FALSE(recv_json(p.b.get(), soon()));
  }
  {
    Pair p;  // nothing comes
    auto r = recv_json(p.b.get(), std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
    ASSERT_FALSE(r);
    EXPECT_NE(r.message().find("timed out"), std::string::npos);
  }
  {
    Pair p;  // the other side goes
    p.a.reset();
    EXPECT_FALSE(recv_json(p.b.get(), soon()));
  }
  {
    Pair p;  // larger than the receiver accepts (the chunks fit the socket's buffer)
    std::thread t([&] {
      EXPECT_TRUE(send_json(p.a.get(), json{{"x", std::string(100000, 'y')}}));
    });
    EXPECT_FALSE(recv_json(p.b.get(), soon(), 50000));
    t.join();
  }
  {
    Pair p;  // fds where JSON is expected: refused, and closed
    int e = eventfd(0, EFD_CLOEXEC);
    std::vector<UniqueFd> fds;
    fds.emplace_back(e);
    ASSERT_TRUE(send_fds(p.a.get(), fds));
    EXPECT_FALSE(recv_json(p.b.get(), soon()));
  }
}

TEST(Handover, FdsArriveInOrderAcrossMessages) {
  Pair p;
  std::vector<UniqueFd> fds;
  std::vector<ino_t> inos;
  for (size_t i = 0; i < kFdsPerMessage + 7; ++i) {
    fds.emplace_back(eventfd(0, EFD_CLOEXEC));
    struct stat st;
    ASSERT_EQ(fstat(fds.back().get(), &st), 0);
    inos.push_back(st.st_ino);
    // Make each one recognisable by its counter.
    uint64_t v = i + 1;
    ASSERT_EQ(write(fds.back().get(), &v, 8), 8);
  }
  ASSERT_TRUE(send_fds(p.a.get(), fds));
  auto got = recv_fds(p.b.get(), fds.size(), soon());
  ASSERT_TRUE(got) << got.message();
  ASSERT_EQ(got->size(), fds.size());
  for (size_t i = 0; i < got->size(); ++i) {
    uint64_t v = 0;
    ASSERT_EQ(read((*got)[i].get(), &v, 8), 8);
    EXPECT_EQ(v, i + 1);
    EXPECT_TRUE(fcntl((*got)[i].get(), F_GETFD) & FD_CLOEXEC);
  }
  // Fewer than announced: an error, not a hang.
  std::vector<UniqueFd> two;
  two.emplace_back(eventfd(0, EFD_CLOEXEC));
  ASSERT_TRUE(send_fds(p.a.get(), two));
  EXPECT_FALSE(
      recv_fds(p.b.get(), 3, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
  EXPECT_FALSE(recv_fds(p.b.get(), kMaxFds + 1, soon()));
}

TEST(Handover, PortSpecsRoundTrip) {
  PortSpec v;
  v.name = "vm1";
  v.type = "vhost-user";
  v.socket = "/run/vnet/vm1.sock";
  v.client = true;
  v.queues = 4;
  v.mtu = 9000;
  v.worker = 1;
  v.vlan.mode = VlanSpec::Mode::kTrunk;
  v.vlan.trunks = {10, 20};
  v.vlan.native = 10;
  v.allowed_macs = {0x525400000001ULL};
  v.socket_mode = 0660;
  v.socket_uid = 64055;
  v.policing.ingress.packets = {1000, 2000};
  v.policing.storm[1].bits = {8000000, 1600000};
  auto r = spec_from_json(spec_json(v));
  ASSERT_TRUE(r) << r.message();
  EXPECT_EQ(spec_json(*r), spec_json(v));
  EXPECT_EQ(r->vlan, v.vlan);
  EXPECT_EQ(r->policing, v.policing);

  PortSpec t;
  t.name = "tap0";
  t.type = "tap";
  t.ifname = "vnet-t0";
  t.netns = "blue";
  t.io = "uring";
  t.queues = 2;
  t.offloads = false;
  t.vlan.tag = 30;
  auto rt = spec_from_json(spec_json(t));
  ASSERT_TRUE(rt) << rt.message();
  EXPECT_EQ(spec_json(*rt), spec_json(t));

  PortSpec x;
  x.name = "vxlan100";
  x.type = "vxlan";
  x.vni = 100;
  x.local = "192.0.2.1";
  x.remotes = {"192.0.2.2", "192.0.2.3"};
  x.udp_port = 8472;
  x.netns = "under";
  x.underlay_mtu = 9000;
  x.queues = 1;
  x.vlan.tag = 10;
  auto rx = spec_from_json(spec_json(x));
  ASSERT_TRUE(rx) << rx.message();
  EXPECT_EQ(spec_json(*rx), spec_json(x));
  EXPECT_EQ(rx->remotes, x.remotes);
  // A segment's fields are checked as a file's are.
  for (auto lie : std::vector<std::function<void(json&)>>{
           [](json& j) { j["vni"] = 0; }, [](json& j) { j["local"] = "nowhere"; },
           [](json& j) { j["remotes"] = {"192.0.2.1"}; }, [](json& j) { j["udp_port"] = 0; },
           [](json& j) { j["control"] = "bgp"; }, [](json& j) { j["underlay_mtu"] = 10; },
           [](json& j) { j.erase("vni"); }}) {
    json j = spec_json(x);
    lie(j);
    EXPECT_FALSE(spec_from_json(j)) << j.dump();
  }
}

TEST(Handover, LyingSpecsAreRefused) {
  PortSpec v;
  v.name = "vm1";
  v.type = "vhost-user";
  v.socket = "/run/vnet/vm1.sock";
  const json good = spec_json(v);
  ASSERT_TRUE(spec_from_json(good));
  std::vector<std::pair<const char*, std::function<void(json&)>>> lies = {
      {"not an object", [](json& j) { j = json::array(); }},
      {"missing field", [](json& j) { j.erase("socket"); }},
      {"wrong type", [](json& j) { j["client"] = "yes"; }},
      {"bad name", [](json& j) { j["name"] = "../etc"; }},
      {"bad type", [](json& j) { j["type"] = "vxlan9"; }},
      {"empty socket", [](json& j) { j["socket"] = ""; }},
      {"too many queues", [](json& j) { j["queues"] = 100000; }},
      {"vlan out of range",
       [](json& j) {
         j["vlan"] = {{"vlan", 5000}};
       }},
      {"policing of 3",
       [](json& j) {
         j["policing"] = json::array({1, 2, 3});
       }},
      {"negative mtu", [](json& j) { j["mtu"] = -1; }},
      {"multicast allowed MAC", [](json& j) { j["allowed_macs"] = {0}; }},
  };
  for (auto& [what, lie] : lies) {
    SCOPED_TRACE(what);
    json j = good;
    lie(j);
    EXPECT_FALSE(spec_from_json(j));
  }
}

TEST(Handover, FdIndicesAreTakenOnce) {
  FdTable t;
  std::vector<UniqueFd> fds;
  fds.emplace_back(eventfd(0, EFD_CLOEXEC));
  t.set(std::move(fds));
  EXPECT_FALSE(t.take(1, "x"));
  EXPECT_FALSE(t.take(-1, "x"));
  EXPECT_FALSE(t.take("0", "x"));
  auto null = t.take(nullptr, "x");
  ASSERT_TRUE(null);
  EXPECT_FALSE(null->valid());
  auto f = t.take(0, "x");
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->valid());
  EXPECT_FALSE(t.take(0, "x"));  // twice
}

TEST(Handover, MessagesRoundTripAndLiesAreRefused) {
  std::vector<vhost_user::Message> msgs(2);
  msgs[0].hdr = {uint32_t(vhost_user::Request::SET_FEATURES), 1, 8};
  msgs[0].payload = {1, 2, 3, 4, 5, 6, 7, 0xff};
  msgs[1].hdr = {uint32_t(vhost_user::Request::SET_VRING_CALL), 1, 8};
  msgs[1].payload = {0, 0, 0, 0, 0, 0, 0, 0};
  msgs[1].fds.emplace_back(eventfd(0, EFD_CLOEXEC));
  FdTable out;
  json j = messages_json(msgs, out);
  FdTable in;
  in.set(std::move(out.fds()));
  auto back = messages_from_json(j, in, "t");
  ASSERT_TRUE(back) << back.message();
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].payload, msgs[0].payload);
  EXPECT_EQ((*back)[0].hdr.size, 8u);
  EXPECT_EQ((*back)[1].fds.size(), 1u);

  FdTable empty;
  for (json bad :
       {json::object(), json::array({1}),
        json::array({{{"r", 1}, {"p", "0g"}, {"f", json::array()}}}),
        json::array({{{"r", 1}, {"p", "abc"}, {"f", json::array()}}}),
        json::array({{{"r", -1}, {"p", ""}, {"f", json::array()}}}),
        json::array({{{"r", 1}, {"p", std::string(2 * 4097, 'a')}, {"f", json::array()}}}),
        json::array({{{"r", 1}, {"p", ""}, {"f", json::array({0})}}}),
        json::array({{{"r", 1}, {"p", ""}, {"f", json::array({nullptr})}}})}) {
    SCOPED_TRACE(bad.dump().substr(0, 80));
    EXPECT_FALSE(messages_from_json(bad, empty, "t"));
  }
}

}  // namespace
}  // namespace vnet::control::handover
