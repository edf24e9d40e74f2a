// Tests for the hostile-input side of control requests (control/request.h): the depth
// pre-scan, parsing that never throws (numbers out of range, invalid UTF-8, nesting
// 100,000 deep) and the bounded echo of arbitrary values.
#include "control/request.h"

#include <gtest/gtest.h>

#include <string>

namespace vnet::control {
namespace {

using nlohmann::json;

std::string nested(size_t depth, char open = '[', char close = ']') {
  return std::string(depth, open) + std::string(depth, close);
}

TEST(JsonDepth, CountsArraysAndObjectsNotStrings) {
  EXPECT_EQ(json_depth("1", 32), 0u);
  EXPECT_EQ(json_depth("[]", 32), 1u);
  EXPECT_EQ(json_depth(R"({"a":[1,{"b":[]}],"c":[]})", 32), 4u);
  EXPECT_EQ(json_depth(R"(["[[[[", "\"[[[[", "\\", [1]])", 32), 2u);
  EXPECT_EQ(json_depth(nested(32), 32), 32u);
  EXPECT_EQ(json_depth(nested(33), 32), 33u);
  EXPECT_EQ(json_depth(nested(100000, '{', '}'), 32), 33u);  // stops at limit + 1
}

TEST(ParseRequest, NumbersOutOfRangeAreErrorsNotExceptions) {
  for (const char* line :
       {R"({"cmd":"ports","x":1e400})", R"({"cmd":-1e400})", "1e400", "[1E+99999]"}) {
    ParsedRequest r = parse_request(line);
    EXPECT_FALSE(r.ok()) << line;
    EXPECT_EQ(r.error, ParsedRequest::Error::kBadJson) << line;
    EXPECT_EQ(r.message.rfind("bad JSON: ", 0), 0u) << r.message;
    EXPECT_NE(r.message.find("number overflow"), std::string::npos) << r.message;
  }
  // Integers too big for 64 bits are doubles, as nlohmann parses them.
  ParsedRequest big = parse_request(R"({"n":123456789012345678901234567890})");
  ASSERT_TRUE(big.ok()) << big.message;
  EXPECT_TRUE(big.value["n"].is_number_float());
}

TEST(ParseRequest, DeepNestingIsRefusedBeforeParsing) {
  ParsedRequest r = parse_request("{\"cmd\":\"set-port\",\"trunk\":" + nested(100000) + "}");
  EXPECT_EQ(r.error, ParsedRequest::Error::kTooDeep);
  EXPECT_EQ(r.message, "request nested deeper than 32 levels");
  EXPECT_TRUE(parse_request(nested(32)).ok());
  EXPECT_EQ(parse_request(nested(33)).error, ParsedRequest::Error::kTooDeep);
  EXPECT_EQ(parse_request(nested(5), 4).error, ParsedRequest::Error::kTooDeep);
  // Unbalanced text deeper than the limit is refused too (never reaches the parser).
  EXPECT_EQ(parse_request(std::string(1000, '[')).error, ParsedRequest::Error::kTooDeep);
}

TEST(ParseRequest, MalformedInputIsAnError) {
  const std::string cases[] = {"",
                               "{",
                               "{\"cmd\":\"ports\"} trailing",
                               "{\"cmd\":\"\xff\xfe\"}",  // invalid UTF-8
                               "{\"cmd\":\"\xc3\"}",      // truncated sequence
                               std::string("{\"cmd\":\"a\0b\"}", 14),
                               "{\"cmd\":\"\\ud800\"}",  // lone surrogate
                               "nan",
                               "[1,]"};
  for (const auto& line : cases) {
    ParsedRequest r = parse_request(line);
    EXPECT_EQ(r.error, ParsedRequest::Error::kBadJson) << line;
    EXPECT_LE(r.message.size(), 300u);
    // The message is safe to put in a JSON reply and a log line.
    EXPECT_NO_THROW((void)json(r.message).dump());
  }
}

TEST(ParseRequest, ErrorMessagesAreBoundedWhateverTheInput) {
  // A 1 MiB bad token would otherwise be quoted whole in "last read: '...'".
  ParsedRequest r = parse_request("{\"cmd\":tru" + std::string(1 << 20, 'e') + "}");
  ASSERT_FALSE(r.ok());
  EXPECT_LE(r.message.size(), 300u) << r.message.substr(0, 300);
}

TEST(ShortString, EscapesAndTruncatesAtACharacterBoundary) {
  EXPECT_EQ(short_string("vm1"), "vm1");
  EXPECT_EQ(short_string("a\nb\"c\x01"), "a\\nb\\\"c\\u0001");
  EXPECT_EQ(short_string(std::string(100, 'x')), std::string(64, 'x') + "...");
  // 63 ASCII bytes then a 2-byte character: cut before it, not inside.
  std::string s = std::string(63, 'x') + "\xc3\xa9" + "tail";
  EXPECT_EQ(short_string(s), std::string(63, 'x') + "...");
  EXPECT_NO_THROW((void)json(short_string("\xff\xfe bad")).dump());
}

TEST(ShortForm, BoundedForAnyValue) {
  EXPECT_EQ(short_form(json(5)), "5");
  EXPECT_EQ(short_form(json::parse(R"([1,"a",{"k":null}])")), R"([1,"a",{"k":null}])");
  // 100,000 levels: the parser is iterative (and so is nlohmann's destructor); the
  // short form must not recurse either.
  json deep = json::parse(nested(100000));
  std::string f = short_form(deep);
  EXPECT_EQ(f, std::string(64, '[') + "...");
  json wide = json::array();
  for (int i = 0; i < 100000; ++i) wide.push_back(i);
  EXPECT_LE(short_form(wide).size(), 64u + 8);
  json long_string = std::string(1 << 20, 'y');
  EXPECT_LE(short_form(long_string).size(), 64u + 8);
  json obj = {{std::string(1000, 'k'), std::string(1000, 'v')}};
  EXPECT_LE(short_form(obj).size(), 2 * 64u + 16);
}

TEST(JsonErrorText, DropsThePrefix) {
  EXPECT_EQ(json_error_text("[json.exception.parse_error.101] parse error: x"), "parse error: x");
  EXPECT_EQ(json_error_text("boom"), "boom");
}

}  // namespace
}  // namespace vnet::control
