// Policing settings of a port as vnetctl, the control socket and the [[port]] tables of
// the configuration file give them (one grammar for all three), checked and turned into
// sw::PolicerConfig, and shown back:
//   ingress_rate  = "100M" | "20kpps" | "100M,20kpps" | 100000000 | "off"
//                   bits per second unless the unit is pps; k, M, G, T are powers of 1000
//   ingress_burst = "2M" | "256pkt" | "2M,256pkt" | 2000000
//                   bits unless the unit is pkt; default: 100 ms of the rate, at least
//                   kMinDefaultBurstBits / kMinDefaultBurstPackets
//   storm         = "broadcast=1000,multicast=5k,unknown-unicast=10k" | "off"
//                   (or a table {broadcast = 1000, ...}): packets per second unless the
//                   unit is bit/bps; a class "=off" lifts its limits
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.h"
#include "switch/policer.h"

namespace vnet::control {

// Default bursts: 100 ms of the rate (a worker that loses its CPU for a few scheduler
// slices does not lose the credit of that time), but at least a 64 KiB TSO frame at a
// standard MSS (46 segments, about 550 kbit on the wire) and two bursts of the worker.
inline constexpr uint64_t kMinDefaultBurstBits = 1'000'000;
inline constexpr uint64_t kMinDefaultBurstPackets = 64;
// A bits burst must hold one full-sized frame (1518 bytes).
inline constexpr uint64_t kMinBurstBits = 1518 * 8;

// The fields "ingress_rate", "ingress_burst" and "storm" of `j`, applied over `base`
// (set-port: the port's setting now; a new port: none). ingress_rate replaces both
// ingress limits (a kind it does not list is lifted) and resets their bursts to the
// default unless ingress_burst is given; ingress_burst alone changes the bursts of the
// limits there are; storm changes the classes it lists. Errors name the field.
Result<sw::PolicerConfig> parse_policing(const nlohmann::json& j, const std::string& where,
                                         const sw::PolicerConfig& base);
// Whether `j` has any of those fields.
bool has_policing(const nlohmann::json& j);
// {"ingress": {"bps": ..., "bps_burst": ..., "pps": ..., "pps_burst": ...}, "storm":
// {"broadcast": {...}, ...}}: the limits that are on.
nlohmann::json policing_json(const sw::PolicerConfig& c);

}  // namespace vnet::control
