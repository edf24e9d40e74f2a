// Control requests as hostile input: depth pre-scan, exception-free parsing and the
// bounded echo of request values (request.h).
#include "control/request.h"

#include <fmt/format.h>

#include <vector>

namespace vnet::control {

using nlohmann::json;

size_t json_depth(std::string_view text, size_t limit) {
  size_t depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char ch : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (ch == '\\')
        escaped = true;
      else if (ch == '"')
        in_string = false;
      continue;
    }
    switch (ch) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > limit) return limit + 1;
        }
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return deepest;
}

ParsedRequest parse_request(std::string_view line, size_t max_depth) {
  ParsedRequest r;
  if (json_depth(line, max_depth) > max_depth) {
    r.error = ParsedRequest::Error::kTooDeep;
    r.message = fmt::format("request nested deeper than {} levels", max_depth);
    return r;
  }
  try {
    r.value = json::parse(line);
  } catch (const json::exception& e) {  // parse_error, out_of_range (406: 1e400), ...
    r.error = ParsedRequest::Error::kBadJson;
    r.message = "bad JSON: " + json_error_text(e.what());
  } catch (const std::exception& e) {  // bad_alloc
    r.error = ParsedRequest::Error::kBadJson;
    r.message = "bad JSON: " + short_string(e.what(), 2 * kEchoMax);
  }
  return r;
}

namespace {
// The length of the longest prefix of s[0, max) that does not end inside a UTF-8 sequence.
size_t utf8_cut(std::string_view s, size_t max) {
  if (s.size() <= max) return s.size();
  size_t cut = max;
  while (cut > 0 && (uint8_t(s[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}
}  // namespace

std::string short_string(std::string_view s, size_t max) {
  const size_t cut = utf8_cut(s, max);
  std::string out =
      json(std::string(s.substr(0, cut))).dump(-1, ' ', false, json::error_handler_t::replace);
  out = out.substr(1, out.size() - 2);  // the quotes
  if (cut < s.size()) out += "...";
  return out;
}

std::string short_form(const json& v, size_t max) {
  struct Frame {
    const json* container;
    json::const_iterator it;
    bool first;
  };
  std::vector<Frame> stack;
  std::string out;
  auto open = [&](const json& x) {
    if (x.is_array() || x.is_object()) {
      out += x.is_array() ? '[' : '{';
      stack.push_back({&x, x.cbegin(), true});
    } else if (x.is_string()) {
      out += '"' + short_string(x.get_ref<const std::string&>(), max) + '"';
    } else {
      out += x.dump(-1, ' ', false, json::error_handler_t::replace);  // number, bool, null
    }
  };
  open(v);
  while (!stack.empty() && out.size() <= max) {
    Frame& f = stack.back();
    if (f.it == f.container->cend()) {
      out += f.container->is_array() ? ']' : '}';
      stack.pop_back();
      continue;
    }
    if (!f.first) out += ',';
    f.first = false;
    if (f.container->is_object()) out += '"' + short_string(f.it.key(), max) + "\":";
    const json& x = *f.it;
    ++f.it;
    open(x);  // may grow `stack`: `f` is not used after this
  }
  if (out.size() > max || !stack.empty()) {
    out.resize(utf8_cut(out, max));
    out += "...";
  }
  return out;
}

std::string json_error_text(const char* what) {
  std::string_view s(what);
  if (!s.empty() && s.front() == '[') {
    size_t end = s.find("] ");
    if (end != std::string_view::npos) s.remove_prefix(end + 2);
  }
  return short_string(s, 4 * kEchoMax);
}

}  // namespace vnet::control
