// Unit tests for worker placement in the configuration: [worker] cpus / cpu, a port's
// worker index, and the errors that name the field when either is out of range.
#include <gtest/gtest.h>

#include "control/config.h"

namespace vnet::control {
namespace {

using nlohmann::json;

TEST(WorkersConfig, CpusListAndPortWorkers) {
  auto cfg = parse_config_toml(R"(
[worker]
cpus = [1, 0]

[[port]]
name = "a"
type = "vhost-user"
socket = "/tmp/a.sock"
worker = 1

[[port]]
name = "b"
type = "tap"
worker = 0

[[port]]
name = "c"
type = "vhost-user"
socket = "/tmp/c.sock"
)",
                               "w.toml");
  ASSERT_TRUE(cfg) << cfg.message();
  EXPECT_EQ(cfg->worker.cpus, (std::vector<int>{1, 0}));
  ASSERT_EQ(cfg->ports.size(), 3u);
  EXPECT_EQ(cfg->ports[0].worker, 1);
  EXPECT_EQ(cfg->ports[1].worker, 0);
  EXPECT_EQ(cfg->ports[2].worker, -1);  // placed on the least loaded worker
}

TEST(WorkersConfig, CpuIsAOneElementList) {
  auto one = parse_config_toml("[worker]\ncpu = 0\n", "w.toml");
  ASSERT_TRUE(one) << one.message();
  EXPECT_EQ(one->worker.cpus, std::vector<int>{0});
  auto unpinned = parse_config_toml("[worker]\ncpu = -1\n", "w.toml");
  ASSERT_TRUE(unpinned) << unpinned.message();
  EXPECT_TRUE(unpinned->worker.cpus.empty());  // one worker, not pinned
  auto none = parse_config_toml("", "w.toml");
  ASSERT_TRUE(none) << none.message();
  EXPECT_TRUE(none->worker.cpus.empty());
}

TEST(WorkersConfig, BadPlacementNamesTheField) {
  struct Case {
    std::string toml;
    std::string expect;
  };
  const std::string too_big = std::to_string(max_cpu() + 1);
  const Case cases[] = {
      {"[worker]\ncpus = [0, " + too_big + "]",
       "field 'cpus': CPU " + too_big + " is out of range"},
      {"[worker]\ncpus = [-1]", "field 'cpus': CPU -1 is out of range"},
      {"[worker]\ncpus = []", "field 'cpus' must be a non-empty list"},
      {"[worker]\ncpus = [0, 0]", "CPU 0 is listed twice"},
      {"[worker]\ncpus = [\"0\"]", "is not an integer"},
      {"[worker]\ncpus = 1", "field 'cpus' must be a non-empty list"},
      {"[worker]\ncpu = " + too_big, "'cpu' = " + too_big + " is out of range"},
      {"[worker]\ncpu = 0\ncpus = [0]", "'cpus' (a list) or 'cpu', not both"},
      {"[worker]\ncpus = [0]\n[[port]]\nname = \"a\"\ntype = \"tap\"\nworker = 1",
       "port[0] (a): field 'worker' = 1 but there is 1 worker (0..0)"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nworker = 2",
       "port[0] (a): field 'worker' = 2 but there is 1 worker"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nworker = -1", "'worker' = -1 is out of range"},
      {"[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/s\"\nworker = \"x\"",
       "'worker' must be an integer"},
  };
  for (const auto& c : cases) {
    auto cfg = parse_config_toml(c.toml, "bad.toml");
    ASSERT_FALSE(cfg) << "accepted: " << c.toml;
    EXPECT_NE(cfg.message().find(c.expect), std::string::npos)
        << "input: " << c.toml << "\nmessage: " << cfg.message() << "\nexpected: " << c.expect;
  }
}

TEST(WorkersConfig, CommandLineCpuList) {
  auto ok = parse_cpu_list(json::array({0, 1}), "--cpus", 1);
  ASSERT_TRUE(ok) << ok.message();
  EXPECT_EQ(*ok, (std::vector<int>{0, 1}));
  auto bad = parse_cpu_list(json::array({0, 2}), "--cpus", 1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.message(), "--cpus: CPU 2 is out of range [0, 1] (this machine has 2 CPUs)");
}

TEST(WorkersConfig, AddPortWorkerField) {
  auto p = parse_port(json{{"name", "x"}, {"type", "vhost-user"}, {"socket", "/s"}, {"worker", 3}},
                      "add-port");
  ASSERT_TRUE(p) << p.message();
  EXPECT_EQ(p->worker, 3);
  auto bad = parse_port(json{{"name", "x"}, {"type", "tap"}, {"worker", 64}}, "add-port");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.message().find("add-port (x): field 'worker' = 64 is out of range"),
            std::string::npos)
      << bad.message();
}

TEST(WorkersConfig, CheckPortWorkersAfterCommandLineOverride) {
  std::vector<PortSpec> ports(2);
  ports[0].name = "a";
  ports[1].name = "b";
  ports[1].worker = 1;
  EXPECT_TRUE(check_port_workers(ports, 2, "vnetd"));
  Status st = check_port_workers(ports, 1, "vnetd");
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("port[1] (b): field 'worker' = 1"), std::string::npos)
      << st.message();
}

}  // namespace
}  // namespace vnet::control
