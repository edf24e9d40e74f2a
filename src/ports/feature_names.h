// Names of virtio / virtio-net feature bits, for logs and vnetctl.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vnet::ports {

std::vector<std::string> feature_names(uint64_t features);
std::string join_feature_names(uint64_t features);

}  // namespace vnet::ports
