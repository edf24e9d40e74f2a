// Configuration checks: valid files and requests parse to the expected specs; every
// kind of bad input gets an error naming the field (and the line, for TOML syntax).
#include "control/config.h"
#include "switch/mac.h"

#include <gtest/gtest.h>

namespace vnet::control {
namespace {

using nlohmann::json;

TEST(Config, FullFile) {
  auto cfg = parse_config_toml(R"(
[vnetd]
control = "/run/vnet/test.sock"
log_level = "debug"
tap_io = "syscalls"
socket_mode = "0600"
socket_group = "daemon"
[worker]
cpu = 1
idle_poll_us = 50
poll_mode = "poll"
[fdb]
size = 1024
age = 60
per_port_limit = 100
[[port]]
name = "vm1"
type = "vhost-user"
socket = "/tmp/vm1.sock"
vlan = 10
allowed_macs = ["52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:01"]
socket_mode = 0o640
socket_owner = "0"
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
io = "uring"
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
  EXPECT_EQ(cfg->fdb_port_limit, 100u);
  EXPECT_EQ(cfg->socket_perms.mode, mode_t(0600));
  EXPECT_EQ(cfg->socket_perms.gid, 1);  // daemon
  EXPECT_EQ(cfg->socket_perms.uid, -1);
  EXPECT_EQ(cfg->ports[0].socket_mode, 0640);
  EXPECT_EQ(cfg->ports[0].socket_uid, 0);
  EXPECT_EQ(cfg->ports[0].socket_gid, -1);
  EXPECT_EQ(cfg->ports[1].socket_mode, -1);
  EXPECT_EQ(cfg->ports[0].allowed_macs,
            (std::vector<uint64_t>{sw::Mac::parse("52:54:00:00:00:01")->raw(),
                                   sw::Mac::parse("52:54:00:00:00:02")->raw()}));
  EXPECT_TRUE(cfg->ports[1].allowed_macs.empty());
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
  EXPECT_EQ(cfg->ports[2].io, "uring");
  EXPECT_EQ(cfg->tap_io, "syscalls");
}

TEST(Config, MetricsListen) {
  auto cfg = parse_config_toml("[metrics]\nlisten = \"127.0.0.1:9465\"\n", "m.toml");
  ASSERT_TRUE(cfg) << cfg.message();
  EXPECT_EQ(cfg->metrics_listen, "127.0.0.1:9465");
  auto off = parse_config_toml("", "m.toml");
  ASSERT_TRUE(off) << off.message();
  EXPECT_EQ(off->metrics_listen, "");  // off by default
}

TEST(Config, TomlValuesOfEveryKind) {
  // Dates, floats and inline tables are converted (and then refused by name when a
  // field does not take them).
  auto cfg = parse_config_toml("[fdb]\nage = 1979-05-27T07:32:00Z\n", "d.toml");
  ASSERT_FALSE(cfg);
  EXPECT_NE(cfg.message().find("'age' must be an integer"), std::string::npos) << cfg.message();
  cfg = parse_config_toml("[fdb]\nsize = 1.5\n", "d.toml");
  ASSERT_FALSE(cfg);
  EXPECT_NE(cfg.message().find("'size' must be an integer"), std::string::npos) << cfg.message();
  cfg = parse_config_toml("port = [{name = \"a\", type = \"tap\", mtu = 9000}]\n", "d.toml");
  ASSERT_TRUE(cfg) << cfg.message();
  ASSERT_EQ(cfg->ports.size(), 1u);
  EXPECT_EQ(cfg->ports[0].mtu, 9000u);
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
      {"[vnetd\ncontrol = 1", "line 1"},
      // Errors toml++ finds after the pre-check (toml_check.h): the line and the key.
      {"[vnetd]\ncontrol = \"/a\"\ncontrol = \"/b\"", "line 3"},
      {"[vnetd]\ncontrol = \"/a\"\ncontrol = \"/b\"", "'control'"},
      {"[fdb]\nsize = 99999999999999999999", "line 2"},
      {"[fdb]\n\nage = 1x", "line 3"},
      {"[metrics]\nlisten = \"localhost\"", "[metrics]: field 'listen'"},
      {"[metrics]\nlisten = \"127.0.0.1:99999\"", "field 'listen'"},
      {"[metrics]\nlisten = 9465", "'listen' must be a string"},
      {"[metrics]\nport = 9465", "[metrics]: unknown field 'port'"},
      {"metrics = 1", "[metrics] must be a table"},
      {"x = 1", "unknown field 'x'"},
      {"[vnetd]\ncontrol = 5", "'control' must be a string"},
      {"[vnetd]\nlog_level = \"loud\"", "log_level"},
      {"[worker]\ncpu = -2", "'cpu' = -2 is out of range"},
      {"[worker]\npoll_mode = \"spin\"", "poll_mode"},
      {"[vnetd]\ntap_io = \"aio\"", "'tap_io' must be"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nio = \"epoll\"", "field 'io' must be"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/s\"\nio = \"uring\"",
       "unknown field 'io'"},
      {"[fdb]\nsize = 1", "'size' = 1 is out of range"},
      {"[fdb]\nper_port_limit = -1", "'per_port_limit' = -1 is out of range"},
      {"[vnetd]\nsocket_mode = \"4660\"", "field 'socket_mode'"},
      {"[vnetd]\nsocket_mode = true", "field 'socket_mode' must be an octal mode"},
      {"[vnetd]\nsocket_group = \"no-such-group-vnet\"", "field 'socket_group': no group named"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/s\"\nsocket_owner = "
       "\"no-such-user-vnet\"",
       "field 'socket_owner': no user named"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nsocket_mode = \"0600\"",
       "unknown field 'socket_mode'"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/s\"\nallowed_macs = "
       "[\"01:00:5e:00:00:01\"]",
       "allowed_macs[0] must be a unicast MAC"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nallowed_macs = [\"52:54:00:00:00:01\", \"x\"]",
       "allowed_macs[1] must be a unicast MAC"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nallowed_macs = \"52:54:00:00:00:01\"",
       "'allowed_macs' must be an array"},
      {"[fdb]\nage = \"long\"", "'age' must be an integer"},
      {"port = 3", "array of tables"},
      {"[[port]]\ntype = \"tap\"", "missing field 'name'"},
      {"[[port]]\nname = \"a\"", "missing field 'type'"},
      {"[[port]]\nname = \"a b\"\ntype = \"tap\"", "port name 'a b'"},
      {"[[port]]\nname = \"a\"\ntype = \"geneve\"", "'type' must be"},
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
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\n[[port]]\nname = \"a\"\ntype = "
       "\"tap\"\nifname=\"b\"",
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

// Errors found after parsing (values, unknown fields) name the line of the field, or of
// the table when the message names no field of it.
TEST(Config, CheckErrorsNameTheLine) {
  const BadCase cases[] = {
      {"[vnetd]\nlog_level = \"info\"\n[[port]]\nname = \"a\"\ntype = \"tap\"\n\nvlan = 5000",
       "bad.toml: line 7: port[0] (a): field 'vlan' = 5000"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\n[[port]]\nname = \"b\"\ntype = \"tap\"\n"
       "bogus = 1",
       "bad.toml: line 7: port[1] (b): unknown field 'bogus'"},
      {"# comment\n\n[fdb]\nage = 1\nsize = 1", "bad.toml: line 5: [fdb]: field 'size' = 1"},
      {"[fdb]\nage = 1\n\nswitch = 1", "bad.toml: line 4: [fdb]: unknown field 'switch'"},
      {"[fdb]\nage = 1\n[switch]\nflood = 1", "bad.toml: line 3: unknown field 'switch'"},
      {"[fdb]\nage = 1\n[port]\nname = \"a\"", "bad.toml: 'port' must be an array"},
      {"[metrics]\n\nlisten = \"localhost\"", "bad.toml: line 3: [metrics]: field 'listen'"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nallowed_macs = [\"x\"]",
       "bad.toml: line 1: port[0] (a): allowed_macs[0]"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/s\"\n"
       "[[port]]\nname = \"b\"\ntype = \"vhost-user\"\nsocket = \"/s\"",
       "bad.toml: line 5: port[1] (b): socket /s is used by another port"},
  };
  for (const auto& c : cases) {
    auto cfg = parse_config_toml(c.toml, "bad.toml");
    ASSERT_FALSE(cfg) << "accepted: " << c.toml;
    EXPECT_NE(cfg.message().find(c.expect), std::string::npos)
        << "input: " << c.toml << "\nmessage: " << cfg.message() << "\nexpected: " << c.expect;
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

// queues: vhost-user 1..128 (default 8), TAP 1..16 (default 1); out of range names the
// field; in a TOML [[port]] too.
TEST(Config, PortQueues) {
  auto vu = [](json extra) {
    json j{{"name", "v"}, {"type", "vhost-user"}, {"socket", "/tmp/v.sock"}};
    j.update(extra);
    return parse_port(j, "add-port");
  };
  auto d = vu(json::object());
  ASSERT_TRUE(d) << d.message();
  EXPECT_EQ(d->queues, kDefaultQueuePairs);
  auto four = vu(json{{"queues", 4}});
  ASSERT_TRUE(four);
  EXPECT_EQ(four->queues, 4u);
  EXPECT_TRUE(vu(json{{"queues", 128}}));
  for (json bad : {json(0), json(129), json(-1), json("4")}) {
    auto r = vu(json{{"queues", bad}});
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.message().find("queues"), std::string::npos) << r.message();
  }
  auto tap = parse_port(json{{"name", "t"}, {"type", "tap"}}, "add-port");
  ASSERT_TRUE(tap);
  EXPECT_EQ(tap->queues, 1u);
  auto tap4 = parse_port(json{{"name", "t"}, {"type", "tap"}, {"queues", 4}}, "add-port");
  ASSERT_TRUE(tap4);
  EXPECT_EQ(tap4->queues, 4u);
  EXPECT_FALSE(parse_port(json{{"name", "t"}, {"type", "tap"}, {"queues", 17}}, "add-port"));
  auto file = parse_config_toml(
      "[[port]]\nname = \"vm1\"\ntype = \"vhost-user\"\nsocket = \"/tmp/a.sock\"\nqueues = 2\n",
      "test.toml");
  ASSERT_TRUE(file) << file.message();
  ASSERT_EQ(file->ports.size(), 1u);
  EXPECT_EQ(file->ports[0].queues, 2u);
}

// [[segment]]: a VXLAN port named vxlan<VNI> unless named, in the VLAN it gives; the
// same keys as a [[port]] of type "vxlan"; bad values name the field and the line.
TEST(Config, Segments) {
  auto cfg = parse_config_toml(R"(
[[port]]
name = "t"
type = "tap"

[[segment]]
vni = 100
vlan = 10
local = "192.0.2.1"
remote = ["192.0.2.2", "192.0.2.3", "192.0.2.2"]
netns = "under"

[[segment]]
name = "blue"
vni = 200
local = "192.0.2.1"
udp_port = 8472
underlay_mtu = 9000
)",
                               "s.toml");
  ASSERT_TRUE(cfg) << cfg.message();
  ASSERT_EQ(cfg->ports.size(), 3u);
  const PortSpec& a = cfg->ports[1];
  EXPECT_EQ(a.name, "vxlan100");
  EXPECT_EQ(a.type, "vxlan");
  EXPECT_EQ(a.vni, 100u);
  EXPECT_EQ(a.vlan.tag, 10);
  EXPECT_EQ(a.local, "192.0.2.1");
  EXPECT_EQ(a.remotes, (std::vector<std::string>{"192.0.2.2", "192.0.2.3"}));
  EXPECT_EQ(a.udp_port, 4789u);
  EXPECT_EQ(a.netns, "under");
  EXPECT_EQ(a.control, "static");
  EXPECT_EQ(a.underlay_mtu, 1500u);
  const PortSpec& b = cfg->ports[2];
  EXPECT_EQ(b.name, "blue");
  EXPECT_EQ(b.udp_port, 8472u);
  EXPECT_EQ(b.underlay_mtu, 9000u);
  EXPECT_TRUE(b.remotes.empty());

  auto p = parse_port(json{{"name", "x"}, {"type", "vxlan"}, {"vni", 7}, {"local", "10.0.0.1"}},
                      "add-port");
  ASSERT_TRUE(p) << p.message();
  EXPECT_EQ(p->vni, 7u);
  // IPv6 VTEPs, kept in canonical text (equal addresses compare equal), duplicates once.
  auto v6 = parse_port(json{{"name", "x6"},
                            {"type", "vxlan"},
                            {"vni", 9},
                            {"local", "2001:DB8:0::1"},
                            {"remote", {"2001:db8::2", "2001:db8:0:0::2", "2001:db8::3"}}},
                       "add-port");
  ASSERT_TRUE(v6) << v6.message();
  EXPECT_EQ(v6->local, "2001:db8::1");
  EXPECT_EQ(v6->remotes, (std::vector<std::string>{"2001:db8::2", "2001:db8::3"}));
  auto e = parse_port(
      json{
          {"name", "e"}, {"type", "vxlan"}, {"vni", 8}, {"local", "10.0.0.1"}, {"control", "evpn"}},
      "add-port");
  ASSERT_TRUE(e) << e.message();
  EXPECT_EQ(e->control, "evpn");
  EXPECT_EQ(e->shadow_udp_port, 4790u);

  const BadCase cases[] = {
      {"[[segment]]\nlocal = \"192.0.2.1\"", "'vni' is required"},
      {"[[segment]]\nvni = 0\nlocal = \"192.0.2.1\"", "'vni' = 0 is out of range"},
      {"[[segment]]\nvni = 16777216\nlocal = \"192.0.2.1\"", "out of range"},
      {"[[segment]]\nvni = 1", "field 'local'"},
      {"[[segment]]\nvni = 1\nlocal = \"2001:db8::x\"", "'local' must be an IPv4 or IPv6"},
      {"[[segment]]\nvni = 1\nlocal = \"2001:db8::1\"\nremote = [\"192.0.2.2\"]",
       "remote[0] must be an IPv6 address (the family of 'local')"},
      {"[[segment]]\nname = \"a\"\nvni = 1\nlocal = \"2001:db8::1\"\n[[segment]]\nname = "
       "\"b\"\nvni = 1\nlocal = \"2001:db8:0::1\"",
       "another VXLAN port already has VNI 1 on 2001:db8::1:4789"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\nremote = [\"x\"]", "remote[0]"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\nremote = \"192.0.2.2\"", "'remote' must be"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\nremote = [\"192.0.2.1\"]",
       "is the local address"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\ncontrol = \"bgp\"", "field 'control'"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\nudp_port = 0", "'udp_port' = 0"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\nunderlay_mtu = 100", "'underlay_mtu'"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\ntype = \"tap\"", "no field 'type'"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\nsocket = \"/s\"", "unknown field 'socket'"},
      {"[[segment]]\nname = \"a\"\nvni = 1\nlocal = \"192.0.2.1\"\n[[segment]]\nname = "
       "\"b\"\nvni = 1\nlocal = \"192.0.2.1\"",
       "another VXLAN port already has VNI 1 on 192.0.2.1:4789"},
      {"[[port]]\nname = \"vxlan1\"\ntype = \"tap\"\n[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"",
       "used by another port"},
      {"segment = 1", "'segment' must be an array"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\ncontrol = \"evpn\"\nremote = [\"192.0.2.2\"]",
       "flood list comes from BGP"},
      {"[[segment]]\nvni = 1\nlocal = \"192.0.2.1\"\ncontrol = \"evpn\"\nshadow_udp_port = 4789",
       "'shadow_udp_port' must differ"},
  };
  for (const auto& c : cases) {
    auto r = parse_config_toml(c.toml, "s.toml");
    ASSERT_FALSE(r) << c.toml;
    EXPECT_NE(r.message().find(c.expect), std::string::npos) << c.toml << " -> " << r.message();
  }
}

}  // namespace
}  // namespace vnet::control
