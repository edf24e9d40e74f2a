// Fuzz target "config_file": the configuration loader (control/config.h
// parse_config_toml: the size limit, the non-recursive TOML pre-check of
// control/toml_check.h, toml++, the conversion to JSON and every field check) over a
// file that a careless or hostile hand wrote.
//
// Input: the file's bytes.
//
// Checked beyond "no crash, no stack overflow, no undefined behaviour": an error names
// the file; an accepted file has unique, valid port names and every port's worker
// within the worker count (what vnetd relies on afterwards).
#include <cstdint>
#include <set>
#include <string>

#include "common/log.h"
#include "control/config.h"
#include "fuzz_input.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto cfg = vnet::control::parse_config_toml(text, "fuzz.toml");
  if (!cfg) {
    FUZZ_CHECK(cfg.message().rfind("fuzz.toml", 0) == 0);
    return 0;
  }
  std::set<std::string> names;
  const size_t workers = cfg->worker.cpus.empty() ? 1 : cfg->worker.cpus.size();
  for (const auto& p : cfg->ports) {
    FUZZ_CHECK(!p.name.empty() && p.name.size() <= 32);
    FUZZ_CHECK(names.insert(p.name).second);
    FUZZ_CHECK(p.worker < 0 || size_t(p.worker) < workers);
    FUZZ_CHECK(p.type == "vhost-user" || p.type == "tap");
  }
  return 0;
}
