// vnetctl top's arithmetic and rendering (control/top.h) on hand-made samples.
#include "control/top.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace vnet::control {
namespace {

using nlohmann::json;

json port(uint64_t rx, uint64_t rx_bytes, uint64_t tx, uint64_t tx_bytes, uint64_t policed) {
  return {{"rx_packets", rx},
          {"rx_bytes", rx_bytes},
          {"tx_packets", tx},
          {"tx_bytes", tx_bytes},
          {"drops", {{"policed", policed}, {"rx_no_buffers", 0}}}};
}

json worker(int index, uint64_t packets, uint64_t busy, uint64_t idle, uint64_t sleeps) {
  return {{"worker", index},       {"cpu", nullptr},      {"ports", {"a", "b"}},
          {"packets", packets},    {"busy_cycles", busy}, {"idle_cycles", idle},
          {"wakeups", sleeps / 2}, {"sleeps", sleeps}};
}

TopSample sample(double t, json ports, json workers) {
  TopSample s;
  s.seconds = t;
  s.counters = {{"ok", true}, {"counters", std::move(ports)}};
  s.workers = {{"ok", true}, {"workers", std::move(workers)}};
  return s;
}

TEST(TopTest, RatesAreDeltasOverTheInterval) {
  TopSample a = sample(10.0, {{"a", port(1000, 64000, 500, 32000, 0)}},
                       json::array({worker(0, 1500, 1000, 9000, 10)}));
  TopSample b = sample(12.0, {{"a", port(3000, 192000, 1500, 96000, 400)}},
                       json::array({worker(0, 4500, 301000, 9000, 30)}));
  a.have_cpu = b.have_cpu = true;
  a.process_ticks = 100;
  b.process_ticks = 150;
  a.thread_ticks["vnet-worker0"] = 40;
  b.thread_ticks["vnet-worker0"] = 80;
  const TopRates r = top_rates(a, b, 100);
  EXPECT_DOUBLE_EQ(r.interval, 2.0);
  ASSERT_EQ(r.ports.size(), 1u);
  const auto& p = r.ports[0];
  EXPECT_FALSE(p.fresh);
  EXPECT_DOUBLE_EQ(p.rx_pps, 1000);
  EXPECT_DOUBLE_EQ(p.rx_bps, 8.0 * 128000 / 2);
  EXPECT_DOUBLE_EQ(p.tx_pps, 500);
  EXPECT_DOUBLE_EQ(p.tx_bps, 8.0 * 64000 / 2);
  EXPECT_DOUBLE_EQ(p.drop_pps, 200);
  ASSERT_EQ(p.drops.size(), 1u);  // only the reasons that moved
  EXPECT_DOUBLE_EQ(p.drops.at("policed"), 200);
  ASSERT_EQ(r.workers.size(), 1u);
  const auto& w = r.workers[0];
  EXPECT_DOUBLE_EQ(w.pps, 1500);
  EXPECT_DOUBLE_EQ(w.busy_pct, 100.0);  // idle did not move
  EXPECT_DOUBLE_EQ(w.cycles_per_packet, 100.0);
  EXPECT_DOUBLE_EQ(w.sleeps_ps, 10);
  EXPECT_DOUBLE_EQ(w.cpu_pct, 20.0);  // 40 ticks of 100 Hz over 2 s
  EXPECT_DOUBLE_EQ(r.vnetd_cpu_pct, 25.0);
  EXPECT_EQ(w.cpu, "-");
}

TEST(TopTest, NewPortsHaveNoRatesAndRestartedCountersCountFromZero) {
  TopSample a = sample(1.0, {{"a", port(5000, 320000, 0, 0, 0)}}, json::array());
  // a was removed and added again (its counters restarted); b is new.
  TopSample b =
      sample(2.0, {{"a", port(100, 6400, 0, 0, 0)}, {"b", port(7, 448, 0, 0, 0)}}, json::array());
  const TopRates r = top_rates(a, b, 100);
  ASSERT_EQ(r.ports.size(), 2u);
  EXPECT_EQ(r.ports[0].name, "a");  // busiest first
  EXPECT_DOUBLE_EQ(r.ports[0].rx_pps, 100);
  EXPECT_EQ(r.ports[1].name, "b");
  EXPECT_TRUE(r.ports[1].fresh);
  EXPECT_DOUBLE_EQ(r.vnetd_cpu_pct, -1);  // no /proc samples
  const std::string screen = format_top(r, "title");
  EXPECT_NE(screen.find("(new)"), std::string::npos) << screen;
  const json j = top_json(r);
  EXPECT_EQ(j["ports"][1]["new"], true);
  EXPECT_TRUE(j["vnetd_cpu_pct"].is_null());
}

TEST(TopTest, BusiestPortsFirst) {
  TopSample a = sample(0, {{"x", port(0, 0, 0, 0, 0)}, {"y", port(0, 0, 0, 0, 0)}}, json::array());
  TopSample b = sample(1, {{"x", port(10, 640, 0, 0, 0)}, {"y", port(10, 640, 990, 63360, 0)}},
                       json::array());
  const TopRates r = top_rates(a, b, 100);
  ASSERT_EQ(r.ports.size(), 2u);
  EXPECT_EQ(r.ports[0].name, "y");
  const std::string screen = format_top(r, "vnetd test");
  // y: 10 rx/s, 990 tx/s at 64-byte frames = 507 kbit/s.
  EXPECT_NE(screen.find("507k"), std::string::npos) << screen;
  EXPECT_LT(screen.find("y  "), screen.find("x  ")) << screen;
}

TEST(TopTest, SiRates) {
  EXPECT_EQ(si_rate(0), "0");
  EXPECT_EQ(si_rate(-3), "0");
  EXPECT_EQ(si_rate(950), "950");
  EXPECT_EQ(si_rate(999.7), "1.00k");
  EXPECT_EQ(si_rate(1234567), "1.23M");
  EXPECT_EQ(si_rate(45600), "45.6k");
  EXPECT_EQ(si_rate(9.87e9), "9.87G");
  EXPECT_EQ(si_rate(123e9), "123G");
}

TEST(TopTest, ReadsItsOwnThreadsFromProc) {
  TopSample s;
  ASSERT_TRUE(read_cpu_ticks(getpid(), s));
  EXPECT_TRUE(s.have_cpu);
  EXPECT_FALSE(s.thread_ticks.empty());
  TopSample none;
  EXPECT_FALSE(read_cpu_ticks(0, none));
  EXPECT_FALSE(none.have_cpu);
}

}  // namespace
}  // namespace vnet::control
