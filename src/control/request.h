// Control requests as hostile input: a cheap iterative pre-scan that bounds the nesting
// depth before anything recursive sees a value, parsing that turns every nlohmann
// exception into an error, and the bounded, escaped short form that is the only way a
// request's value is ever echoed into an error message or a log line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace vnet::control {

// Arrays and objects nested deeper than this are refused before they are parsed.
constexpr size_t kMaxRequestDepth = 32;
// At most this many bytes of a value are echoed (then "...").
constexpr size_t kEchoMax = 64;

// The deepest nesting of arrays and objects in JSON text, strings skipped, computed in
// one pass without recursion. Stops at `limit + 1` (anything above `limit` is refused
// anyway). Exact for valid JSON; for other text it is only an upper bound of what a
// parser could build from it before it fails.
size_t json_depth(std::string_view text, size_t limit);

struct ParsedRequest {
  enum class Error { kNone, kTooDeep, kBadJson };
  Error error = Error::kNone;
  std::string message;  // why, for the error reply: bounded (kEchoMax-sized excerpts)
  nlohmann::json value;
  bool ok() const { return error == Error::kNone; }
};

// Pre-scans `line` (depth at most `max_depth`) and parses it; never throws.
ParsedRequest parse_request(std::string_view line, size_t max_depth = kMaxRequestDepth);

// `s` JSON-escaped (without quotes), at most `max` input bytes of it (cut at a UTF-8
// character boundary, "..." appended), invalid UTF-8 replaced: safe in a log line.
std::string short_string(std::string_view s, size_t max = kEchoMax);
// A value as compact JSON, at most about `max` characters ("..." appended when cut),
// written iteratively: any depth, any size, bounded time and output.
std::string short_form(const nlohmann::json& v, size_t max = kEchoMax);
// The text of a nlohmann exception without its "[json.exception.x.N] " prefix, bounded.
std::string json_error_text(const char* what);

}  // namespace vnet::control
