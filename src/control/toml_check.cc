// The pre-parse check of TOML configuration files (toml_check.h): a hand-written
// scanner over the whole text with an explicit stack, no recursion.
#include "control/toml_check.h"

#include <vector>

#include "control/request.h"

namespace vnet::control {

namespace {

class TomlCheck {
 public:
  TomlCheck(std::string_view text, size_t max_depth) : s_(text), max_depth_(max_depth) {}

  // Empty when the text is fine, else what is wrong (and line_ says where).
  std::string run() {
    while (!err_ && pos_ < s_.size()) {
      skip_blanks();
      if (at_eol()) {
        eat_eol();
      } else if (peek() == '#') {
        skip_comment();
      } else if (peek() == '[') {
        header();
      } else {
        key_value();
      }
    }
    return err_ ? why_ : std::string();
  }
  size_t line() const { return line_; }

 private:
  char peek(size_t ahead = 0) const { return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0'; }
  bool at_end() const { return pos_ >= s_.size(); }
  bool at_eol() const { return at_end() || peek() == '\n' || (peek() == '\r' && peek(1) == '\n'); }
  void eat_eol() {
    if (at_end()) return;
    pos_ += peek() == '\r' ? 2 : 1;
    ++line_;
  }
  bool fail(std::string why) {
    if (!err_) {
      err_ = true;
      why_ = std::move(why);
    }
    return false;
  }
  bool fail_here(const char* expected) {
    if (at_eol()) return fail(std::string("unexpected end of line, expected ") + expected);
    return fail("unexpected character '" + short_string(s_.substr(pos_, 1)) + "', expected " +
                expected);
  }
  void skip_blanks() {
    while (peek() == ' ' || peek() == '\t') ++pos_;
  }
  void skip_comment() {  // at '#': to the end of the line
    while (!at_eol()) ++pos_;
  }
  // Blanks, comments and line ends (inside arrays).
  void skip_space() {
    for (;;) {
      skip_blanks();
      if (peek() == '#')
        skip_comment();
      else if (at_eol() && !at_end())
        eat_eol();
      else
        return;
    }
  }
  // After a header or a value at the top level: blanks, a comment, the end of the line.
  bool end_of_statement() {
    skip_blanks();
    if (peek() == '#') skip_comment();
    if (!at_eol()) return fail_here("the end of the line");
    eat_eol();
    return true;
  }
  bool check_depth(size_t depth) {
    if (depth > max_depth_)
      return fail("nested deeper than " + std::to_string(max_depth_) + " levels");
    return true;
  }

  static bool bare_key_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
  }
  // Scalars other than strings: integers, floats, booleans, dates without a space.
  static bool token_char(char c) { return bare_key_char(c) || c == '+' || c == '.' || c == ':'; }

  // A string at pos_ (a quote); multi-line forms span lines.
  bool string() {
    const char q = peek();
    const bool multi = peek(1) == q && peek(2) == q;  // """ or '''
    const char* unterminated = multi ? "unterminated multi-line string" : "unterminated string";
    pos_ += multi ? 3 : 1;
    for (;;) {
      if (at_end() || (!multi && at_eol())) return fail(unterminated);
      const char c = peek();
      if (q == '"' && c == '\\') {  // skip what it escapes (a line end, in multi-line ones)
        ++pos_;
        if (at_end() || (!multi && at_eol())) return fail(unterminated);
        if (at_eol())
          eat_eol();
        else
          ++pos_;
      } else if (c == q && (!multi || (peek(1) == q && peek(2) == q))) {
        pos_ += multi ? 3 : 1;
        return true;
      } else if (at_eol()) {
        eat_eol();
      } else {
        ++pos_;
      }
    }
  }
  bool single_line_string() {
    if (peek(1) == peek() && peek(2) == peek()) return fail("a key cannot be a multi-line string");
    return string();
  }

  // A dotted key up to (not including) `end`; *dots gets the number of dots.
  bool key(char end, size_t* dots) {
    *dots = 0;
    for (;;) {
      skip_blanks();
      if (peek() == '"' || peek() == '\'') {
        if (!single_line_string()) return false;
      } else if (bare_key_char(peek())) {
        while (bare_key_char(peek())) ++pos_;
      } else {
        return fail_here("a key");
      }
      skip_blanks();
      if (peek() == end) return true;
      if (peek() != '.') return fail_here(end == '=' ? "'=' or '.'" : "']' or '.'");
      ++pos_;
      ++*dots;
      if (!check_depth(2 * *dots)) return false;
    }
  }

  // [table] or [[array.of.tables]]: each component may be an array of tables holding a
  // table, two levels.
  void header() {
    ++pos_;
    const bool array = peek() == '[';
    if (array) ++pos_;
    size_t dots = 0;
    if (!key(']', &dots)) return;
    ++pos_;
    if (array) {
      if (peek() != ']') {
        fail_here("']]'");
        return;
      }
      ++pos_;
    }
    header_depth_ = 2 * (dots + 1);
    if (!check_depth(header_depth_)) return;
    end_of_statement();
  }

  // key = value, the value with every array and inline table in it.
  void key_value() {
    size_t dots = 0;
    if (!key('=', &dots)) return;
    ++pos_;
    // The value goes into a table at `base`; each array, inline table and dotted-key
    // component inside it is one level more.
    const size_t base = header_depth_ + dots;
    if (!check_depth(base)) return;
    struct Open {
      char kind;    // '[' or '{'
      size_t own;   // its own depth
      size_t next;  // the depth its next value is at (an inline table's dotted keys add)
    };
    std::vector<Open> open;
    enum class Want { kValue, kAfterValue, kKey } want = Want::kValue;
    bool may_close = false;  // just after '[' or an array's ',': ']' may follow
    for (;;) {
      const bool in_array = !open.empty() && open.back().kind == '[';
      if (want == Want::kValue) {
        const size_t here = open.empty() ? base : open.back().next;
        if (in_array)
          skip_space();
        else
          skip_blanks();
        const char c = peek();
        if (in_array && c == ']' && may_close) {
          ++pos_;
          open.pop_back();
        } else if (c == '[' || c == '{') {
          ++pos_;
          if (!check_depth(here + 1)) return;
          open.push_back({c, here + 1, here + 1});
          may_close = c == '[';
          if (c == '{') {
            skip_blanks();
            if (peek() == '}') {
              ++pos_;
              open.pop_back();
            } else {
              want = Want::kKey;
            }
          }
          if (want == Want::kKey || c == '[') continue;
        } else if (c == '"' || c == '\'') {
          if (!string()) return;
        } else if (token_char(c)) {
          while (token_char(peek())) ++pos_;
        } else {
          fail_here("a value");
          return;
        }
        may_close = false;
        want = Want::kAfterValue;
        continue;                       // what is open may have changed
      } else if (want == Want::kKey) {  // inside an inline table
        size_t key_dots = 0;
        if (!key('=', &key_dots)) return;
        ++pos_;
        open.back().next = open.back().own + key_dots;
        if (!check_depth(open.back().next)) return;
        want = Want::kValue;
        continue;
      }
      // After a value.
      if (open.empty()) {
        end_of_statement();
        return;
      }
      // In an array: ',' (then a value, or ']' after a trailing comma) or ']'; in an
      // inline table: ',' (then a key) or '}', on the same line.
      if (in_array)
        skip_space();
      else
        skip_blanks();
      if (peek() == ',') {
        ++pos_;
        want = in_array ? Want::kValue : Want::kKey;
        may_close = in_array;
      } else if (peek() == (in_array ? ']' : '}')) {
        ++pos_;
        open.pop_back();
      } else {
        fail_here(in_array ? "',' or ']'" : "',' or '}' (an inline table ends on its line)");
        return;
      }
    }
  }

  std::string_view s_;
  size_t max_depth_;
  size_t pos_ = 0;
  size_t line_ = 1;
  size_t header_depth_ = 0;
  bool err_ = false;
  std::string why_;
};

}  // namespace

Status check_toml_text(std::string_view text, const std::string& source, size_t max_depth) {
  TomlCheck check(text, max_depth);
  std::string why = check.run();
  if (why.empty()) return Status::ok();
  return Status::errorf("{}: line {}: {}", source, check.line(), why);
}

}  // namespace vnet::control
