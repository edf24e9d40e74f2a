// Tests for the pre-parse check of TOML configuration files (control/toml_check.h):
// valid TOML passes untouched; nesting by arrays, inline tables, dotted keys and table
// headers is refused past the limit, before toml++ (recursive) runs; syntax errors
// name the line; the whole config loader on hostile files; [vnetd] control timeouts.
#include "control/toml_check.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "control/config.h"
#include "control/control_test_util.h"

namespace vnet::control {
namespace {

Status check(const std::string& text) {
  return check_toml_text(text, "t.toml");
}

TEST(TomlCheck, AcceptsValidToml) {
  const char* ok[] = {
      "",
      "# only a comment\n\n",
      "a = 1\nb = -2\nc = +3.5e-7\nd = true\ne = 0o640\nf = 0x1F\ng = 1_000\nh = inf\n",
      "s = \"[[[{{{ # not a comment\"\nt = 'C:\\path[' # comment [[[\n",
      "m = \"\"\"\nmulti [[[ \\\"\"\" ]]]\nline\\\n  continued\"\"\"\n",
      "l = '''\n[[[ { '' \n'''\n",
      "e = \"\"\nq = ''\n",
      "a = [\n  1, # one\n  2,\n]\n",
      "a = [ [1, 2], [\"x\"], [] ]\nb = []\n",
      "t = { x = 1, y.z = \"a\", w = { v = [1] } }\nu = {}\n",
      "[vnetd]\ncontrol = \"/run/vnet/x.sock\"\n[[port]]\nname = \"a\"\n[[port]]\n",
      "[ a . b . 'c.d' . \"e\" ]\nx.y = 1\n",
      "[[a.b]]\n[a.b.c]\n",
      "a = 1\r\nb = 2\r\n",
      "a = 1979-05-27T07:32:00Z\n",
      "a = 1",  // no final newline
  };
  for (const char* t : ok) EXPECT_TRUE(check(t)) << t << "\n" << check(t).message();
}

TEST(TomlCheck, RefusesDeepNestingOfEveryKind) {
  const size_t n = 100000;
  const std::string cases[] = {
      "a = " + std::string(n, '[') + std::string(n, ']') + "\n",
      "a = " + std::string(n, '['),  // unterminated as well
      [&] {
        std::string s = "a = ";
        for (size_t i = 0; i < n; ++i) s += "{b = ";
        return s + "1" + std::string(n, '}');
      }(),
      [&] {
        std::string s = "a";
        for (size_t i = 0; i < n; ++i) s += ".a";
        return s + " = 1\n";
      }(),
      [&] {
        std::string s = "[a";
        for (size_t i = 0; i < n; ++i) s += ".a";
        return s + "]\n";
      }(),
      [&] {
        std::string s = "a = [{";
        for (size_t i = 0; i < n; ++i) s += "b.";
        return s + "c = 1}]\n";
      }(),
      // Each level under the limit, together over it.
      "[a.b.c.d.e.f.g.h]\ni.j.k.l.m.n.o.p = [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]\n",
  };
  for (const auto& t : cases) {
    Status st = check(t);
    ASSERT_FALSE(st) << t.substr(0, 80);
    EXPECT_NE(st.message().find("nested deeper than 32 levels"), std::string::npos) << st.message();
    EXPECT_EQ(st.message().rfind("t.toml: line ", 0), 0u) << st.message();
  }
  EXPECT_TRUE(check("a = " + std::string(31, '[') + std::string(31, ']')));
  EXPECT_FALSE(check("a = " + std::string(33, '[') + std::string(33, ']')));
}

TEST(TomlCheck, SyntaxErrorsNameTheLine) {
  struct Case {
    const char* text;
    const char* expect;
  } cases[] = {
      {"a = 1\nb = \"open\n", "line 2: unterminated string"},
      {"a = 1\n\nm = \"\"\"never closed\n", "line 4: unterminated multi-line string"},
      {"[vnetd\n", "line 1: unexpected end of line"},
      {"a = [1 2]\n", "line 1: unexpected character '2', expected ',' or ']'"},
      {"a = {x = 1\n}\n", "line 1: unexpected end of line, expected ',' or '}'"},
      {"a b = 1\n", "line 1: unexpected character 'b'"},
      {"a\"b = [[[1]]]\n", "line 1: unexpected character '\\\"'"},
      {"a = [\"s\"\"[[[\"]\n", "expected ',' or ']'"},
      {"a = 1 2\n", "expected the end of the line"},
      {"a = \n", "line 1: unexpected end of line, expected a value"},
      {"x = 1\n\x01 = 2\n", "line 2: unexpected character '\\u0001'"},
      {"a = 1\rb = 2\n", "line 1"},
      {"[[a]\n", "expected ']]'"},
      {"a = {x = 1,}\n", "expected a key"},
  };
  for (const auto& c : cases) {
    Status st = check(c.text);
    ASSERT_FALSE(st) << c.text;
    EXPECT_NE(st.message().find(c.expect), std::string::npos)
        << "input: " << c.text << "\nmessage: " << st.message() << "\nexpected: " << c.expect;
  }
}

TEST(ConfigFile, HostileFilesAreRefusedWithTheLineOrField) {
  struct Case {
    std::string text;
    const char* expect;
  } cases[] = {
      {"[fdb]\nsize = 123456789012345678901234567890\n", "line 2"},  // out of int64
      {"[fdb]\nsize = 1e400\n", "line 2"},                           // out of double
      {"[fdb]\nsize = -1e400\n", "line 2"},
      {"[fdb]\nsize = 1.5\n", "field 'size' must be an integer"},
      {"vnetd = 5\n", "[vnetd] must be a table"},
      {"worker = [1]\n", "[worker] must be a table"},
      {"[vnetd]\ncontrol = [\"a\"]\n", "field 'control' must be a string"},
      {"[vnetd]\nlog_level = {a = 1}\n", "field 'log_level' must be a string"},
      {"[[port]]\nname = 5\n", "field 'name' must be a string"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\ntrunk = [[1]]\n", "[1] is not a VLAN id"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nallowed_macs = [[[[[\"x\"]]]]]\n",
       "allowed_macs[0] must be a unicast MAC"},
      {"[[port]]\nname = \"" + std::string(5000, 'n') + "\"\ntype = \"tap\"\n", "must be 1-32 of"},
      {"[vnetd]\nsocket_owner = \"" + std::string(5000, 'u') + "\"\n", "is not a user name"},
      {"[vnetd]\nsocket_mode = \"" + std::string(5000, '0') + "\"\n", "must be an octal mode"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\ningress_rate = \"" + std::string(5000, '9') +
           "x\"\n",
       "is not a rate"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nstorm = \"" + std::string(5000, 's') + "\"\n",
       "is not CLASS=RATE"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nstorm = \"" + std::string(5000, 'c') + "=1\"\n",
       "unknown class"},
      {"[[port]]\nname = \"a\"\ntype = \"tap\"\nstorm = \"broadcast=" + std::string(5000, 'r') +
           "\"\n",
       "is not a rate"},
      {"a = " + std::string(100000, '[') + "\n", "nested deeper than 32 levels"},
      {std::string(kMaxConfigBytes + 1, '#'), "larger than 1048576 bytes"},
  };
  for (const auto& c : cases) {
    auto cfg = parse_config_toml(c.text, "bad.toml");
    ASSERT_FALSE(cfg) << c.text.substr(0, 100);
    EXPECT_NE(cfg.message().find(c.expect), std::string::npos)
        << "input: " << c.text.substr(0, 100) << "\nmessage: " << cfg.message()
        << "\nexpected: " << c.expect;
    EXPECT_EQ(cfg.message().rfind("bad.toml", 0), 0u) << cfg.message();
    EXPECT_LE(cfg.message().size(), 400u) << cfg.message().substr(0, 400);
  }
}

TEST(ConfigFile, ControlTimeouts) {
  auto cfg = parse_config_toml("[vnetd]\ncontrol_idle_timeout = 5\ncontrol_request_timeout = 2\n",
                               "t.toml");
  ASSERT_TRUE(cfg) << cfg.message();
  EXPECT_EQ(cfg->control_idle_timeout, 5u);
  EXPECT_EQ(cfg->control_request_timeout, 2u);
  auto dflt = parse_config_toml("[vnetd]\n", "t.toml");
  ASSERT_TRUE(dflt);
  EXPECT_EQ(dflt->control_idle_timeout, 0u);  // vnetd's default
  auto zero = parse_config_toml("[vnetd]\ncontrol_idle_timeout = 0\n", "t.toml");
  ASSERT_FALSE(zero);
  EXPECT_NE(zero.message().find("'control_idle_timeout' = 0 is out of range"), std::string::npos)
      << zero.message();
  auto text = parse_config_toml("[vnetd]\ncontrol_request_timeout = \"10s\"\n", "t.toml");
  ASSERT_FALSE(text);
  EXPECT_NE(text.message().find("'control_request_timeout' must be an integer"), std::string::npos);
}

TEST(ConfigFile, ReadIsBounded) {
  // /dev/zero never ends: the loader reads one byte past the limit and stops.
  auto cfg = load_config_file("/dev/zero");
  ASSERT_FALSE(cfg);
  EXPECT_NE(cfg.message().find("larger than"), std::string::npos) << cfg.message();
  testing::TempDir dir;
  const std::string path = dir.file("ok.toml");
  std::ofstream(path) << "[fdb]\nsize = 1024\n";
  auto ok = load_config_file(path);
  ASSERT_TRUE(ok) << ok.message();
  EXPECT_EQ(ok->fdb_size, 1024u);
}

}  // namespace
}  // namespace vnet::control
