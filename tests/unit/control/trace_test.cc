// vnetctl trace's dry run (control/trace.h) against a real FDB and VLAN settings.
#include "control/trace.h"

#include <gtest/gtest.h>

namespace vnet::control {
namespace {

using nlohmann::json;

constexpr uint64_t kNow = 1'000'000'000'000ULL;
const char* kA = "02:00:00:00:00:0a";
const char* kB = "02:00:00:00:00:0b";

net::VlanConfig access(uint16_t v) {
  net::VlanConfig c;
  c.access = v;
  return c;
}

net::VlanConfig trunk(std::initializer_list<uint16_t> vids, uint16_t native) {
  net::VlanConfig c;
  c.trunk = true;
  c.native = native;
  for (uint16_t v : vids) c.allowed.set(v);
  return c;
}

struct Switch {
  // a: access VLAN 10 (port security: only kA), b: access VLAN 10, t: trunk 10,20 native 30,
  // u: access VLAN 20.
  net::VlanConfig va = access(10), vb = access(10), vt = trunk({10, 20}, 30), vu = access(20);
  PortSpec sa;
  sw::Fdb fdb;
  std::vector<TracePort> ports;
  Switch() {
    sa.allowed_macs = {sw::Mac::parse(kA)->raw()};
    ports = {{"a", "tap", 1, &va, &sa},
             {"b", "vhost-user", 2, &vb, nullptr},
             {"t", "vhost-user", 3, &vt, nullptr},
             {"u", "tap", 4, &vu, nullptr}};
  }
  json trace(json req) { return trace_frame(req, ports, fdb, kNow); }
};

std::vector<std::pair<std::string, int>> outputs(const json& r) {
  std::vector<std::pair<std::string, int>> v;
  for (const json& o : r["outputs"]) v.emplace_back(o["port"], o["tag"]);
  return v;
}

TEST(TraceTest, KnownDestinationIsUnicast) {
  Switch s;
  s.fdb.learn(*sw::Mac::parse(kB), 10, 2, kNow);
  const json r = s.trace({{"port", "a"}, {"src", kA}, {"dst", kB}});
  ASSERT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["action"], "unicast");
  EXPECT_EQ(outputs(r), (std::vector<std::pair<std::string, int>>{{"b", 0}}));
  EXPECT_NE(format_trace(r).find("=> unicast to b (untagged)"), std::string::npos)
      << format_trace(r);
  // A dry run: the source was not learned.
  EXPECT_EQ(s.fdb.lookup(*sw::Mac::parse(kA), 10, kNow), 0);
}

TEST(TraceTest, UnknownDestinationFloodsTheVlanWithTags) {
  Switch s;
  const json r = s.trace({{"port", "a"}, {"src", kA}, {"dst", kB}});
  EXPECT_EQ(r["action"], "flood");
  // b (access 10) untagged, t (trunk carrying 10) tagged 10; u (VLAN 20) not.
  EXPECT_EQ(outputs(r), (std::vector<std::pair<std::string, int>>{{"b", 0}, {"t", 10}}));
}

TEST(TraceTest, TrunkIngress) {
  Switch s;
  // Untagged on the trunk: native VLAN 30, where nobody else is.
  json r = s.trace({{"port", "t"}, {"src", kB}, {"dst", "ff:ff:ff:ff:ff:ff"}});
  EXPECT_EQ(r["action"], "flood");
  EXPECT_TRUE(r["outputs"].empty());
  // Tagged 20: to u, untagged.
  r = s.trace({{"port", "t"}, {"src", kB}, {"dst", "ff:ff:ff:ff:ff:ff"}, {"vlan", 20}});
  EXPECT_EQ(outputs(r), (std::vector<std::pair<std::string, int>>{{"u", 0}}));
  // Tagged 99: not carried.
  r = s.trace({{"port", "t"}, {"src", kB}, {"dst", kA}, {"vlan", 99}});
  EXPECT_EQ(r["action"], "drop");
  EXPECT_EQ(r["drop"], "vlan_not_allowed");
  // The same frame as hex: dst, src, 8100 0063, 0800.
  r = s.trace({{"port", "t"}, {"hex", "020000000000a 020000000000b 8100 0063 0800"}});
  EXPECT_EQ(r["ok"], false);  // odd digits in the first group
  r = s.trace({{"port", "t"}, {"hex", "02000000000a 02000000000b 8100 0063 0800"}});
  EXPECT_EQ(r["ok"], true) << r.dump();
  EXPECT_EQ(r["drop"], "vlan_not_allowed");
}

TEST(TraceTest, Drops) {
  Switch s;
  // Tagged on an access port.
  EXPECT_EQ(s.trace({{"port", "b"}, {"src", kB}, {"dst", kA}, {"vlan", 10}})["drop"],
            "vlan_tagged_on_access");
  // Port security on a: only kA may send.
  EXPECT_EQ(s.trace({{"port", "a"}, {"src", kB}, {"dst", kA}})["drop"], "port_security");
  // Back to where it came from.
  s.fdb.learn(*sw::Mac::parse(kB), 10, 2, kNow);
  EXPECT_EQ(s.trace({{"port", "b"}, {"src", kA}, {"dst", kB}})["drop"], "same_port");
}

TEST(TraceTest, StaleEntryFloods) {
  Switch s;
  s.fdb.learn(*sw::Mac::parse(kB), 20, 2, kNow);  // b was in VLAN 20 once
  s.vb = access(10);
  const json r = s.trace({{"port", "u"}, {"src", kA}, {"dst", kB}});
  EXPECT_EQ(r["action"], "flood");
  EXPECT_EQ(outputs(r), (std::vector<std::pair<std::string, int>>{{"t", 20}}));
  EXPECT_NE(r.dump().find("no longer in that VLAN"), std::string::npos) << r.dump();
}

TEST(TraceTest, BadRequests) {
  Switch s;
  for (const json& req :
       {json{{"src", kA}, {"dst", kB}}, json{{"port", "zz"}, {"src", kA}, {"dst", kB}},
        json{{"port", "a"}, {"src", kA}}, json{{"port", "a"}, {"src", "x"}, {"dst", kB}},
        json{{"port", "a"}, {"src", kA}, {"dst", kB}, {"vlan", 4095}},
        json{{"port", "a"}, {"src", kA}, {"dst", kB}, {"ethertype", 5}},
        json{{"port", "a"}, {"hex", "0102"}}, json{{"port", "a"}, {"hex", 7}},
        json{{"port", "a"}, {"hex", std::string(140000, 'a')}}}) {
    const json r = s.trace(req);
    EXPECT_EQ(r["ok"], false) << req.dump();
    EXPECT_EQ(r["error"].get<std::string>().rfind("trace: ", 0), 0u) << r.dump();
  }
}

}  // namespace
}  // namespace vnet::control
