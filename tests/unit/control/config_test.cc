// Configuration checks: valid files and requests parse to the expected specs; every
// kind of bad input gets an error naming the field (and the line, for TOML syntax).
#include "control/config.h"

#include <gtest/gtest.h>

namespace vnet::control {
namespace {

using nlohmann::json;

TEST(Config, FullFile) {
  auto cfg = parse_config_toml(R"(
[vnetd]
control = "/run/vnet/test.sock"
log_level = "debug"
[worker]
cpu = 1
idle_poll_us = 50
poll_mode = "poll"
[fdb]
size = 1024
age = 60
[[port]]
name = "vm1"
type = "vhost-user"
socket = "/tmp/vm1.sock"
vlan = 10
[[port]]
name = "vm2"
type = "vhost-user"
socket = "/tmp/vm2.sock"
mode = "client"
trunk = [20, 10, 20]
native = 5
mtu = 9000
[[port]]
name = "tap0"
type = "tap"
netns = "host1"
offloads = false
)",
                               "test.toml");
  ASSERT_TRUE(cfg) << cfg.message();
  EXPECT_EQ(cfg->control_path, "/run/vnet/test.sock");
  EXPECT_EQ(cfg->log_level, "debug");
  EXPECT_EQ(cfg->worker.cpus, std::vector<int>{1});
  EXPECT_EQ(cfg->worker.idle_poll_us, 50u);
  EXPECT_EQ(cfg->worker.poll_mode, "poll");
  EXPECT_EQ(cfg->fdb_size, 1024u);
  EXPECT_EQ(cfg->fdb_age, 60u);
  ASSERT_EQ(cfg->ports.size(), 3u);
  EXPECT_EQ(cfg->ports[0].vlan.mode, VlanSpec::Mode::kAccess);
  EXPECT_EQ(cfg->ports[0].vlan.tag, 10);
  EXPECT_FALSE(cfg->ports[0].client);
  EXPECT_TRUE(cfg->ports[1].client);
  EXPECT_EQ(cfg->ports[1].vlan.mode, VlanSpec::Mode::kTrunk);
  EXPECT_EQ(cfg->ports[1].vlan.trunks, (std::vector<uint16_t>{10, 20}));
  EXPECT_EQ(cfg->ports[1].vlan.native, 5);
  EXPECT_EQ(cfg->ports[1].mtu, 9000u);
  EXPECT_EQ(cfg->ports[2].type, "tap");
  EXPECT_EQ(cfg->ports[2].ifname, "tap0");  // defaults to the port name
  EXPECT_EQ(cfg->ports[2].netns, "host1");
  EXPECT_FALSE(cfg->ports[2].offloads);
}

TEST(Config, EmptyFileIsValid) {
  auto cfg = parse_config_toml("", "empty.toml");
  ASSERT_TRUE(cfg) << cfg.message();
  EXPECT_TRUE(cfg->ports.empty());
  EXPECT_EQ(cfg->fdb_age, 300u);
}

// Each bad input and a piece of the message it must produce.
struct BadCase {
  const char* toml;
  const char* expect;
};

TEST(Config, BadFilesNameTheProblem) {
  const BadCase cases[] = {
      {"[vnetd\ncontrol = 1", "line"},
      {"x = 1", "unknown field 'x'"},
      {"[vnetd]\ncontrol = 5", "'control' must be a string"},
      {"[vnetd]\nlog_level = \"loud\"", "log_level"},
      {"[worker]\ncpu = -2", "'cpu' = -2 is out of range"},
      {"[worker]\npoll_mode = \"spin\"", "poll_mode"},
      {"[fdb]\nsize = 1", "'size' = 1 is out of range"},
      {"[fdb]\nage = \"long\"", "'age' must be an integer"},
      {"port = 3", "array of tables"},
      {"[[port]]\ntype = \"tap\"", "missing field 'name'"},
      {"[[port]]\nname = \"a\"", "missing field 'type'"},
      {"[[port]]\nname = \"a b\"\ntype = \"tap\"", "port name 'a b'"},
      {"[[port]]\nname = \"a\"\ntype = \"vxlan\"", "'type' must be"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"", "port[0] (a): missing field 'socket'"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/s\"\nmode = \"both\"", "'mode'"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/s\"\nifname = \"x\"",
       "unknown field 'ifname'"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nifname = \"much-too-long-name\"",
       "not a valid interface name"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nnetns = \"/var/run/netns/x\"", "'netns'"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nmtu = 67", "'mtu' = 67 is out of range"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nvlan = 4095", "'vlan' = 4095"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nvlan = 1\ntrunk = [2]", "exclusive"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\ntrunk = []", "non-empty list"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\ntrunk = [0]", "not a VLAN id"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nnative = 3", "'native' needs 'trunk'"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nattach = 1", "'attach' must be true or false"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\n[[port]]\nname = \"a\"\ntype = \"tap\"\nifname=\"b\"",
       "duplicate port name 'a'"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/s\"\n"
       "[[port]]\nname = \"b\"\ntype = \"vhost-user\"\nsocket = \"/s\"",
       "socket /s is used by another port"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nifname = \"t\"\n"
       "[[port]]\nname = \"b\"\ntype = \"tap\"\nifname = \"t\"",
       "interface t is used by another port"},
  };
  for (const auto& c : cases) {
    auto cfg = parse_config_toml(c.toml, "bad.toml");
    ASSERT_FALSE(cfg) << "accepted: " << c.toml;
    EXPECT_NE(cfg.message().find(c.expect), std::string::npos)
        << "input: " << c.toml << "\nmessage: " << cfg.message() << "\nexpected: " << c.expect;
    EXPECT_EQ(cfg.message().rfind("bad.toml", 0), 0u) << cfg.message();
  }
}

TEST(Config, MissingFile) {
  auto cfg = load_config_file("/nonexistent/vnet.toml");
  ASSERT_FALSE(cfg);
  EXPECT_NE(cfg.message().find("/nonexistent/vnet.toml"), std::string::npos);
}

TEST(Config, PortFromJson) {
  auto p = parse_port(json{{"name", "t1"}, {"type", "tap"}, {"trunk", {100, 200}}}, "add-port");
  ASSERT_TRUE(p) << p.message();
  EXPECT_EQ(p->ifname, "t1");
  EXPECT_EQ(vlan_json(p->vlan), (json{{"mode", "trunk"}, {"trunk", {100, 200}}, {"native", 0}}));
  auto bad = parse_port(json::array(), "add-port");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("add-port"), std::string::npos);
}

}  // namespace
}  // namespace vnet::control
