// Policing settings: rates and bursts with units, storm classes; see policing_config.h.
#include "control/policing_config.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>
#include <string_view>
#include <vector>

#include "control/request.h"

namespace vnet::control {

using nlohmann::json;

namespace {

enum class Unit { kBits, kPackets };

struct Quantity {
  uint64_t value = 0;
  Unit unit = Unit::kBits;
};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(uint8_t(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(uint8_t(s.back()))) s.remove_suffix(1);
  return s;
}

// "off" or a number (digits, an optional fraction), an optional k/M/G/T (powers of 1000)
// and a unit: for a rate bit, bits, bps (bits per second) or pps; for a burst bit, bits
// or pkt, pkts, packets. No unit: `dflt`. nullopt: not a quantity.
std::optional<Quantity> parse_quantity(std::string_view s, bool rate, Unit dflt) {
  s = trim(s);
  if (lower(s) == "off") return Quantity{0, dflt};
  size_t i = 0;
  __extension__ typedef unsigned __int128 u128;
  u128 whole = 0, frac = 0, frac_div = 1;
  size_t digits = 0;
  const u128 huge = u128(UINT64_MAX) * 1000;  // beyond every limit: saturated
  for (; i < s.size() && std::isdigit(uint8_t(s[i])); ++i, ++digits)
    whole = std::min(huge, whole * 10 + uint32_t(s[i] - '0'));
  if (i < s.size() && s[i] == '.') {
    for (++i; i < s.size() && std::isdigit(uint8_t(s[i])); ++i, ++digits) {
      if (frac_div >= 1'000'000'000'000ULL) continue;  // beyond any unit's precision
      frac = frac * 10 + uint32_t(s[i] - '0');
      frac_div *= 10;
    }
  }
  if (digits == 0) return std::nullopt;
  u128 mult = 1;
  if (i < s.size()) {
    switch (s[i]) {
      case 'k':
      case 'K':
        mult = 1'000;
        break;
      case 'm':
      case 'M':
        mult = 1'000'000;
        break;
      case 'g':
      case 'G':
        mult = 1'000'000'000;
        break;
      case 't':
      case 'T':
        mult = 1'000'000'000'000ULL;
        break;
      default:
        mult = 0;
        break;
    }
    if (mult) {
      ++i;
    } else {
      mult = 1;
    }
  }
  const std::string unit = lower(s.substr(i));
  Unit u = dflt;
  if (unit.empty()) {
  } else if (unit == "bit" || unit == "bits" || (rate && (unit == "bps" || unit == "bit/s"))) {
    u = Unit::kBits;
  } else if (rate ? unit == "pps" : (unit == "pkt" || unit == "pkts" || unit == "packets")) {
    u = Unit::kPackets;
  } else {
    return std::nullopt;
  }
  const u128 v = whole * mult + frac * mult / frac_div;
  // Beyond every limit: reported by the caller's range check.
  return Quantity{v > u128(UINT64_MAX) ? UINT64_MAX : uint64_t(v), u};
}

const char* unit_name(Unit u, bool rate) {
  if (u == Unit::kBits) return rate ? "bits per second" : "bits";
  return rate ? "packets per second" : "packets";
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    const size_t k = s.find(sep);
    out.push_back(trim(s.substr(0, k)));
    if (k == std::string_view::npos) return out;
    s.remove_prefix(k + 1);
  }
}

// The text of a field that may be a string or a non-negative integer.
Result<std::string> quantity_text(const json& v, const std::string& where, const char* key) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0))
    return std::to_string(v.get<uint64_t>());
  return Status::errorf("{}: field '{}' must be a string like \"100M\" or a non-negative integer",
                        where, key);
}

uint64_t default_burst(uint64_t rate, Unit u) {
  return std::max(rate / 10, u == Unit::kBits ? kMinDefaultBurstBits : kMinDefaultBurstPackets);
}

sw::Limit& limit_of(sw::RateLimits& l, Unit u) {
  return u == Unit::kBits ? l.bits : l.packets;
}

// A list of quantities ("100M,20kpps"), at most one of each unit.
Result<std::vector<Quantity>> parse_list(const std::string& text, const std::string& where,
                                         const char* key, bool rate, Unit dflt) {
  std::vector<Quantity> out;
  const char* example = rate ? "100M, 1.5G, 20kpps" : "2M, 256pkt";
  for (std::string_view item : split(text, ',')) {
    auto q = parse_quantity(item, rate, dflt);
    if (!q)
      return Status::errorf(
          "{}: field '{}': '{}' is not a {} (a number, an optional k/M/G/T and {}; e.g. {}; "
          "or off)",
          where, key, short_string(item), rate ? "rate" : "burst",
          rate ? "bit/bps or pps" : "bit or pkt", example);
    for (const Quantity& o : out)
      if (o.unit == q->unit)
        return Status::errorf("{}: field '{}': two values in {}", where, key,
                              unit_name(q->unit, rate));
    out.push_back(*q);
  }
  return out;
}

Status check_rate(uint64_t rate, Unit u, const std::string& where, const std::string& what) {
  if (rate > sw::TokenBucket::kMaxRate)
    return Status::errorf("{}: {}: {} {} is above the maximum {}", where, what, rate,
                          unit_name(u, true), sw::TokenBucket::kMaxRate);
  return Status::ok();
}

Status check_burst(const sw::Limit& l, Unit u, const std::string& where, const std::string& what) {
  if (!l.on()) return Status::ok();
  const uint64_t lo = u == Unit::kBits ? kMinBurstBits : 1;
  if (l.burst < lo || l.burst > sw::TokenBucket::kMaxBurst)
    return Status::errorf("{}: {}: a burst of {} {} is out of range [{}, {}]{}", where, what,
                          l.burst, unit_name(u, false), lo, sw::TokenBucket::kMaxBurst,
                          u == Unit::kBits ? " (it must hold one 1518-byte frame)" : "");
  return Status::ok();
}

std::optional<sw::StormClass> storm_class(std::string_view name) {
  const std::string n = lower(name);
  if (n == "broadcast") return sw::StormClass::kBroadcast;
  if (n == "multicast") return sw::StormClass::kMulticast;
  if (n == "unknown-unicast" || n == "unknown_unicast") return sw::StormClass::kUnknownUnicast;
  return std::nullopt;
}

// "storm": "class=rate,..." | "off" | {class: rate, ...}, over cfg.
Status parse_storm(const json& v, const std::string& where, sw::PolicerConfig* cfg) {
  std::vector<std::pair<std::string, std::string>> entries;  // class, rate text
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (lower(trim(s)) == "off" || trim(s) == "0") {
      cfg->storm = {};
      return Status::ok();
    }
    for (std::string_view item : split(s, ',')) {
      const size_t eq = item.find('=');
      if (eq == std::string_view::npos)
        return Status::errorf(
            "{}: field 'storm': '{}' is not CLASS=RATE (classes: broadcast, multicast, "
            "unknown-unicast; e.g. broadcast=1000,multicast=5k; or off)",
            where, short_string(item));
      entries.emplace_back(std::string(trim(item.substr(0, eq))),
                           std::string(trim(item.substr(eq + 1))));
    }
  } else if (v.is_object()) {
    for (const auto& [k, val] : v.items()) {
      auto t = quantity_text(val, where, "storm");
      if (!t) return t.status();
      entries.emplace_back(k, *t);
    }
  } else {
    return Status::errorf(
        "{}: field 'storm' must be a string like \"broadcast=1000,multicast=5k\" or a table",
        where);
  }
  std::array<bool, sw::kStormClasses> seen{};
  for (const auto& [name, text] : entries) {
    auto c = storm_class(name);
    if (!c)
      return Status::errorf(
          "{}: field 'storm': unknown class '{}' (broadcast, multicast, unknown-unicast)", where,
          short_string(name));
    const std::string what = std::string("storm ") + sw::storm_class_name(*c);
    auto q = parse_quantity(text, true, Unit::kPackets);
    if (!q)
      return Status::errorf(
          "{}: field 'storm': {}: '{}' is not a rate (packets per second, or bits with "
          "bit/bps: 1000, 5k, 10Mbit; or off)",
          where, sw::storm_class_name(*c), short_string(text));
    Status st = check_rate(q->value, q->unit, where, what);
    if (!st) return st;
    sw::RateLimits& l = cfg->storm[size_t(*c)];
    if (!seen[size_t(*c)]) l = {};  // the class's limits are the ones listed now
    seen[size_t(*c)] = true;
    limit_of(l, q->unit) = sw::Limit{q->value, q->value ? default_burst(q->value, q->unit) : 0};
  }
  return Status::ok();
}

json limits_json(const sw::RateLimits& l) {
  json j = json::object();
  if (l.bits.on()) {
    j["bps"] = l.bits.rate;
    j["bps_burst"] = l.bits.burst;
  }
  if (l.packets.on()) {
    j["pps"] = l.packets.rate;
    j["pps_burst"] = l.packets.burst;
  }
  return j;
}

}  // namespace

bool has_policing(const json& j) {
  return j.contains("ingress_rate") || j.contains("ingress_burst") || j.contains("storm");
}

Result<sw::PolicerConfig> parse_policing(const json& j, const std::string& where,
                                         const sw::PolicerConfig& base) {
  sw::PolicerConfig cfg = base;
  if (j.contains("ingress_rate")) {
    auto text = quantity_text(j["ingress_rate"], where, "ingress_rate");
    if (!text) return text.status();
    auto list = parse_list(*text, where, "ingress_rate", true, Unit::kBits);
    if (!list) return list.status();
    cfg.ingress = {};
    for (const Quantity& q : *list) {
      Status st = check_rate(q.value, q.unit, where, "field 'ingress_rate'");
      if (!st) return st;
      limit_of(cfg.ingress, q.unit) =
          sw::Limit{q.value, q.value ? default_burst(q.value, q.unit) : 0};
    }
  }
  if (j.contains("ingress_burst")) {
    auto text = quantity_text(j["ingress_burst"], where, "ingress_burst");
    if (!text) return text.status();
    auto list = parse_list(*text, where, "ingress_burst", false, Unit::kBits);
    if (!list) return list.status();
    for (const Quantity& q : *list) {
      sw::Limit& l = limit_of(cfg.ingress, q.unit);
      if (!l.on())
        return Status::errorf(
            "{}: field 'ingress_burst': a burst in {} needs a rate in {} "
            "(ingress_rate)",
            where, unit_name(q.unit, false), unit_name(q.unit, true));
      l.burst = q.value;
    }
  }
  if (j.contains("storm")) {
    Status st = parse_storm(j["storm"], where, &cfg);
    if (!st) return st;
  }
  for (Unit u : {Unit::kBits, Unit::kPackets}) {
    Status st = check_burst(limit_of(cfg.ingress, u), u, where, "field 'ingress_burst'");
    if (!st) return st;
  }
  return cfg;
}

json policing_json(const sw::PolicerConfig& c) {
  json storm = json::object();
  for (size_t i = 0; i < sw::kStormClasses; ++i)
    if (c.storm[i].on()) storm[sw::storm_class_name(sw::StormClass(i))] = limits_json(c.storm[i]);
  return {{"ingress", limits_json(c.ingress)}, {"storm", storm}};
}

}  // namespace vnet::control
