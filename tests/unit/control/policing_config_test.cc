// Policing settings: rates and bursts with units (bits unless pps/pkt; k/M/G/T), the
// default bursts, storm classes as a string or a table, set-port merging over the port's
// setting, the same fields in a [[port]] table, their JSON, and an error naming the field
// for each bad value.
#include "control/policing_config.h"

#include <gtest/gtest.h>

#include "control/config.h"

namespace vnet::control {
namespace {

using nlohmann::json;
using sw::StormClass;

sw::PolicerConfig parse(const json& j, const sw::PolicerConfig& base = {}) {
  auto r = parse_policing(j, "test", base);
  EXPECT_TRUE(r.is_ok()) << r.message();
  return r.is_ok() ? *r : sw::PolicerConfig{};
}

std::string error(const json& j, const sw::PolicerConfig& base = {}) {
  auto r = parse_policing(j, "test", base);
  EXPECT_FALSE(r.is_ok()) << j.dump();
  return r.is_ok() ? "" : r.message();
}

TEST(PolicingConfig, IngressRatesAndDefaultBursts) {
  auto c = parse({{"ingress_rate", "100M"}});
  EXPECT_EQ(c.ingress.bits, (sw::Limit{100'000'000, 10'000'000}));  // 100 ms, at least 1 Mbit
  EXPECT_FALSE(c.ingress.packets.on());
  c = parse({{"ingress_rate", "1.5G,20kpps"}});
  EXPECT_EQ(c.ingress.bits, (sw::Limit{1'500'000'000, 150'000'000}));
  EXPECT_EQ(c.ingress.packets, (sw::Limit{20'000, 2000}));
  c = parse({{"ingress_rate", "500kbit, 100pps"}});
  EXPECT_EQ(c.ingress.bits, (sw::Limit{500'000, 1'000'000}));
  EXPECT_EQ(c.ingress.packets, (sw::Limit{100, 64}));
  c = parse({{"ingress_rate", 10'000'000}});
  EXPECT_EQ(c.ingress.bits, (sw::Limit{10'000'000, 1'000'000}));
  EXPECT_TRUE(
      error({{"ingress_rate", 10'000'000}, {"ingress_burst", "128pkt"}}).find("needs a rate") !=
      std::string::npos);
  c = parse({{"ingress_rate", "10Mbps,1kpps"}, {"ingress_burst", "2M,128pkt"}});
  EXPECT_EQ(c.ingress.bits, (sw::Limit{10'000'000, 2'000'000}));
  EXPECT_EQ(c.ingress.packets, (sw::Limit{1000, 128}));
  EXPECT_TRUE(parse({{"ingress_rate", "10T"}}).ingress.bits.on());
}

TEST(PolicingConfig, OffAndMerging) {
  const auto base = parse({{"ingress_rate", "1G,1Mpps"}, {"storm", "broadcast=1000,multicast=5k"}});
  EXPECT_TRUE(base.on());
  EXPECT_FALSE(parse({{"ingress_rate", "off"}, {"storm", "off"}}, base).on());
  EXPECT_FALSE(parse({{"ingress_rate", 0}, {"storm", "0"}}, base).on());
  // ingress_rate replaces both; storm changes the classes it names.
  auto c =
      parse({{"ingress_rate", "20kpps"}, {"storm", "multicast=off,unknown-unicast=10k"}}, base);
  EXPECT_FALSE(c.ingress.bits.on());
  EXPECT_EQ(c.ingress.packets.rate, 20'000u);
  EXPECT_EQ(c.storm[size_t(StormClass::kBroadcast)].packets.rate, 1000u);
  EXPECT_FALSE(c.storm[size_t(StormClass::kMulticast)].on());
  EXPECT_EQ(c.storm[size_t(StormClass::kUnknownUnicast)].packets.rate, 10'000u);
  // A burst alone changes the burst of the rate there is.
  c = parse({{"ingress_burst", "4M"}}, base);
  EXPECT_EQ(c.ingress.bits, (sw::Limit{1'000'000'000, 4'000'000}));
  EXPECT_EQ(c.ingress.packets, base.ingress.packets);
  // Nothing given: nothing changes.
  EXPECT_EQ(parse(json::object(), base), base);
}

TEST(PolicingConfig, StormClassesAndUnits) {
  auto c = parse({{"storm", "broadcast=1000,multicast=5k,unknown_unicast=10Mbit"}});
  EXPECT_EQ(c.storm[size_t(StormClass::kBroadcast)].packets, (sw::Limit{1000, 100}));
  EXPECT_EQ(c.storm[size_t(StormClass::kMulticast)].packets, (sw::Limit{5000, 500}));
  EXPECT_EQ(c.storm[size_t(StormClass::kUnknownUnicast)].bits, (sw::Limit{10'000'000, 1'000'000}));
  EXPECT_FALSE(c.storm[size_t(StormClass::kUnknownUnicast)].packets.on());
  c = parse({{"storm", {{"broadcast", 200}, {"multicast", "1kpps"}}}});
  EXPECT_EQ(c.storm[size_t(StormClass::kBroadcast)].packets.rate, 200u);
  EXPECT_EQ(c.storm[size_t(StormClass::kMulticast)].packets.rate, 1000u);
  c = parse({{"storm", "broadcast=100,broadcast=1Mbit"}});  // both kinds of one class
  EXPECT_EQ(c.storm[size_t(StormClass::kBroadcast)].packets.rate, 100u);
  EXPECT_EQ(c.storm[size_t(StormClass::kBroadcast)].bits.rate, 1'000'000u);
}

TEST(PolicingConfig, BadValuesNameTheField) {
  const std::pair<json, const char*> cases[] = {
      {{{"ingress_rate", "fast"}}, "field 'ingress_rate': 'fast' is not a rate"},
      {{{"ingress_rate", "10MB"}}, "'10MB' is not a rate"},
      {{{"ingress_rate", ""}}, "is not a rate"},
      {{{"ingress_rate", -5}}, "field 'ingress_rate' must be"},
      {{{"ingress_rate", true}}, "field 'ingress_rate' must be"},
      {{{"ingress_rate", "1M,2M"}}, "two values in bits per second"},
      {{{"ingress_rate", "11T"}}, "above the maximum"},
      {{{"ingress_rate", "99999999999999999999999999"}}, "above the maximum"},
      {{{"ingress_rate", "10M"}, {"ingress_burst", "100"}}, "one 1518-byte frame"},
      {{{"ingress_rate", "10kpps"}, {"ingress_burst", "0pkt"}}, "out of range"},
      {{{"ingress_burst", "1M"}}, "needs a rate"},
      {{{"ingress_rate", "10M"}, {"ingress_burst", "10pps"}}, "is not a burst"},
      {{{"storm", "everything=5"}}, "unknown class 'everything'"},
      {{{"storm", "broadcast"}}, "is not CLASS=RATE"},
      {{{"storm", "broadcast=lots"}}, "broadcast: 'lots' is not a rate"},
      {{{"storm", 5}}, "field 'storm' must be"},
  };
  for (const auto& [j, want] : cases)
    EXPECT_NE(error(j).find(want), std::string::npos) << j.dump() << ": " << error(j);
}

TEST(PolicingConfig, Json) {
  auto c = parse({{"ingress_rate", "100M,20kpps"}, {"storm", "broadcast=1000"}});
  EXPECT_EQ(policing_json(c), json::parse(R"({
    "ingress": {"bps": 100000000, "bps_burst": 10000000, "pps": 20000, "pps_burst": 2000},
    "storm": {"broadcast": {"pps": 1000, "pps_burst": 100}}})"));
  EXPECT_EQ(policing_json(sw::PolicerConfig{}), json::parse(R"({"ingress": {}, "storm": {}})"));
}

TEST(PolicingConfig, PortTableAndRequest) {
  auto cfg = parse_config_toml(R"(
[[port]]
name = "vm1"
type = "vhost-user"
socket = "/tmp/vm1.sock"
ingress_rate = "100M"
ingress_burst = "2M"
storm = { broadcast = 1000, unknown-unicast = "5k" }
[[port]]
name = "t1"
type = "tap"
ingress_rate = 20000000
storm = "multicast=500"
)",
                               "test.toml");
  ASSERT_TRUE(cfg.is_ok()) << cfg.message();
  const auto& p = cfg->ports[0].policing;
  EXPECT_EQ(p.ingress.bits, (sw::Limit{100'000'000, 2'000'000}));
  EXPECT_EQ(p.storm[size_t(StormClass::kBroadcast)].packets.rate, 1000u);
  EXPECT_EQ(p.storm[size_t(StormClass::kUnknownUnicast)].packets.rate, 5000u);
  EXPECT_EQ(cfg->ports[1].policing.ingress.bits.rate, 20'000'000u);
  EXPECT_EQ(cfg->ports[1].policing.storm[size_t(StormClass::kMulticast)].packets.rate, 500u);
  auto bad = parse_config_toml(R"(
[[port]]
name = "vm1"
type = "vhost-user"
socket = "/tmp/vm1.sock"
ingress_rate = "lots"
)",
                               "test.toml");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.message().find("port[0] (vm1): field 'ingress_rate'"), std::string::npos)
      << bad.message();
  auto req = parse_port(json::parse(R"({"name": "vm3", "type": "vhost-user", "socket": "/s",
                                        "ingress_rate": "50kpps"})"),
                        "add-port");
  ASSERT_TRUE(req.is_ok()) << req.message();
  EXPECT_EQ(req->policing.ingress.packets.rate, 50'000u);
}

}  // namespace
}  // namespace vnet::control
