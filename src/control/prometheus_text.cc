// PrometheusText: the text exposition format writer (prometheus_text.h).
#include "control/prometheus_text.h"

#include <fmt/format.h>

namespace vnet::control {

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

void PrometheusText::family(std::string_view name, std::string_view type, std::string_view help) {
  name_ = name;
  fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void PrometheusText::labels(std::initializer_list<Label> labels) {
  out_ += name_;
  if (labels.size() == 0) return;
  char sep = '{';
  for (const auto& [k, v] : labels) {
    out_ += sep;
    out_ += k;
    out_ += "=\"";
    out_ += escape_label_value(v);
    out_ += '"';
    sep = ',';
  }
  out_ += '}';
}

void PrometheusText::sample(std::initializer_list<Label> l, uint64_t value) {
  labels(l);
  fmt::format_to(std::back_inserter(out_), " {}\n", value);
}

void PrometheusText::sample(std::initializer_list<Label> l, double value) {
  labels(l);
  fmt::format_to(std::back_inserter(out_), " {}\n", value);
}

void PrometheusText::single(std::string_view name, std::string_view type, std::string_view help,
                            uint64_t value) {
  family(name, type, help);
  sample({}, value);
}

}  // namespace vnet::control
