// A strict, iterative syntax check of a TOML configuration file that runs before
// cpptoml sees it. cpptoml parses arrays and inline tables recursively and builds one
// table per dotted-key or header component, so a hostile file ([[[[... 100000 deep,
// or a.a.a.a... = 1) would overflow the stack in the parser or in the destructors.
// This check accepts only well-formed TOML (a subset: no dates with a space) whose
// nesting, counting every array, inline table and key component, stays within a
// limit, so that what cpptoml then builds is bounded too.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "common/result.h"

namespace vnet::control {

constexpr size_t kMaxConfigBytes = size_t(1) << 20;
constexpr size_t kMaxConfigDepth = 32;

// Ok, or an error "SOURCE: line N: what is wrong". Never recursive; linear time.
Status check_toml_text(std::string_view text, const std::string& source,
                       size_t max_depth = kMaxConfigDepth);

}  // namespace vnet::control
