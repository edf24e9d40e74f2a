// A strict, iterative syntax check of a TOML configuration file that runs before
// toml++ sees it. toml++ bounds the nesting of arrays and inline tables (256) but
// builds one table per dotted-key or header component and destroys tables
// recursively, so a hostile file (a.a.a.a... = 1, 100000 deep) overflows the stack
// (measured with toml++ 3.3); the JSON conversion after it recurses too. This check
// accepts only well-formed TOML (a subset: no dates with a space) whose nesting,
// counting every array, inline table and key component, stays within a limit, so
// that what toml++ then builds is bounded too.
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
