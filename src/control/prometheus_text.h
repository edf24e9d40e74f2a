// PrometheusText: writes metrics in the Prometheus text exposition format (version
// 0.0.4: "# HELP", "# TYPE", then one line per sample, each family's samples
// together). Label values are escaped (backslash, double quote, line feed); metric
// and label names are the caller's constants and must match [a-zA-Z_:][a-zA-Z0-9_:]*.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace vnet::control {

using Label = std::pair<std::string_view, std::string_view>;

class PrometheusText {
 public:
  // Starts a family: `type` is "counter" or "gauge"; counters' names end in _total.
  void family(std::string_view name, std::string_view type, std::string_view help);
  // One sample of the family last started.
  void sample(std::initializer_list<Label> labels, uint64_t value);
  void sample(std::initializer_list<Label> labels, double value);
  // A family with one unlabelled sample.
  void single(std::string_view name, std::string_view type, std::string_view help, uint64_t value);
  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void labels(std::initializer_list<Label> labels);
  std::string out_;
  std::string name_;
};

// A label value as the format writes it between double quotes.
std::string escape_label_value(std::string_view v);

}  // namespace vnet::control
