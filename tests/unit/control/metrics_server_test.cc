// Tests for the Prometheus endpoint: the text format writer (families, labels,
// escaping), listen addresses, and the HTTP server on an EventLoop driven by the test
// thread: GET /metrics answered, other paths, methods and malformed or oversized
// request heads refused with a status and a counter, slow clients closed at their
// deadline, the oldest connection evicted when full, big replies written in full.
#include "control/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

#include "control/control_test_util.h"
#include "control/prometheus_text.h"

namespace vnet::control {
namespace {

using testing::pump_until;

TEST(PrometheusText, FamiliesSamplesAndEscaping) {
  PrometheusText m;
  m.family("vnet_port_rx_packets_total", "counter", "Frames received.");
  m.sample({{"port", "vm1"}}, uint64_t(7));
  m.sample({{"port", "a\"b\\c\nd"}, {"queue", "0"}}, uint64_t(18446744073709551615ULL));
  m.single("vnet_fdb_entries", "gauge", "Entries.", 3);
  m.family("vnet_ratio", "gauge", "A ratio.");
  m.sample({}, 0.5);
  EXPECT_EQ(m.text(),
            "# HELP vnet_port_rx_packets_total Frames received.\n"
            "# TYPE vnet_port_rx_packets_total counter\n"
            "vnet_port_rx_packets_total{port=\"vm1\"} 7\n"
            "vnet_port_rx_packets_total{port=\"a\\\"b\\\\c\\nd\",queue=\"0\"} "
            "18446744073709551615\n"
            "# HELP vnet_fdb_entries Entries.\n"
            "# TYPE vnet_fdb_entries gauge\n"
            "vnet_fdb_entries 3\n"
            "# HELP vnet_ratio A ratio.\n"
            "# TYPE vnet_ratio gauge\n"
            "vnet_ratio 0.5\n");
}

TEST(ListenAddress, Parses) {
  auto a = parse_listen_address("127.0.0.1:9465");
  ASSERT_TRUE(a) << a.message();
  EXPECT_EQ(a->addr.ss_family, AF_INET);
  EXPECT_EQ(ntohs(reinterpret_cast<sockaddr_in*>(&a->addr)->sin_port), 9465);
  auto b = parse_listen_address("[::1]:0");
  ASSERT_TRUE(b) << b.message();
  EXPECT_EQ(b->addr.ss_family, AF_INET6);
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                          "localhost:9465", "::1:9465", "[::1]:x", "1.2.3.4:80 "}) {
    auto r = parse_listen_address(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_NE(r.message().find("ADDRESS:PORT"), std::string::npos) << r.message();
    }
  }
}

TEST(ClassifyRequest, Verdicts) {
  const struct {
    const char* in;
    MetricsRequest want;
  } cases[] = {
      {"", MetricsRequest::kIncomplete},
      {"GET /metrics HTTP/1.1\r\nHost: x\r\n", MetricsRequest::kIncomplete},
      {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", MetricsRequest::kGet},
      {"GET /metrics HTTP/1.0\n\n", MetricsRequest::kGet},
      {"HEAD /metrics?a=b HTTP/1.1\r\n\r\n", MetricsRequest::kHead},
      {"GET /metrics/ HTTP/1.1\r\n\r\n", MetricsRequest::kNotFound},
      {"DELETE /metrics HTTP/1.1\r\n\r\n", MetricsRequest::kBadMethod},
      {"GET /metrics HTTP/2\r\n\r\n", MetricsRequest::kBadRequest},
      {"GET\r\n\r\n", MetricsRequest::kBadRequest},
      {"\r\n\r\n", MetricsRequest::kBadRequest},
  };
  for (const auto& c : cases) EXPECT_EQ(classify_request(c.in, 64), c.want) << c.in;
  EXPECT_EQ(classify_request(std::string(65, 'x'), 64), MetricsRequest::kTooLarge);
  // A head that ends past the limit is too large even if it arrived in one piece.
  EXPECT_EQ(
      classify_request("GET /metrics HTTP/1.1\r\nX: " + std::string(100, 'a') + "\r\n\r\n", 64),
      MetricsRequest::kTooLarge);
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void start(MetricsServerLimits limits = {}) {
    auto s = MetricsServer::create(
        loop_, "127.0.0.1:0",
        [this] {
          ++renders_;
          return body_;
        },
        limits);
    ASSERT_TRUE(s) << s.message();
    server_ = std::move(*s);
    ASSERT_NE(server_->port(), 0);
  }
  UniqueFd connect_client() {
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(server_->port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
    EXPECT_TRUE(r == 0 || errno == EINPROGRESS);
    pump_until(
        loop_, [&] { return server_->client_count() > 0; }, 1000);
    return fd;
  }
  // Sends `req` and reads until the server closes; pumps the loop meanwhile.
  std::string exchange(const std::string& req) {
    UniqueFd fd = connect_client();
    EXPECT_EQ(send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size()));
    return read_all(fd.get());
  }
  std::string read_all(int fd) {
    std::string out;
    bool closed = false;
    pump_until(loop_, [&] {
      char buf[65536];
      ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n > 0) out.append(buf, size_t(n));
      if (n == 0 || (n < 0 && errno != EAGAIN)) closed = true;
      return closed;
    });
    EXPECT_TRUE(closed);
    return out;
  }

  EventLoop loop_;
  std::unique_ptr<MetricsServer> server_;
  std::string body_ = "vnet_up 1\n";
  int renders_ = 0;
};

TEST_F(MetricsServerTest, GetMetrics) {
  start();
  std::string r = exchange("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  EXPECT_NE(r.find("Content-Length: 10\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.substr(r.size() - 10), "vnet_up 1\n");
  EXPECT_EQ(renders_, 1);
  EXPECT_EQ(server_->counters().scrapes.get(), 1u);
  EXPECT_EQ(server_->client_count(), 0u);
  // Query strings are ignored, bare LF line ends accepted, HEAD has no body.
  EXPECT_EQ(exchange("GET /metrics?x=1 HTTP/1.0\n\n").rfind("HTTP/1.1 200", 0), 0u);
  r = exchange("HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(r.find("vnet_up"), std::string::npos);
}

TEST_F(MetricsServerTest, EverythingElseIsRefused) {
  start();
  struct Case {
    const char* req;
    const char* status;
  } cases[] = {
      {"GET / HTTP/1.1\r\n\r\n", "404"},
      {"GET /metricsx HTTP/1.1\r\n\r\n", "404"},
      {"POST /metrics HTTP/1.1\r\n\r\n", "405"},
      {"GET /metrics\r\n\r\n", "400"},
      {"hello\r\n\r\n", "400"},
      {"GET /metrics SPDY/3\r\n\r\n", "400"},
  };
  for (const auto& c : cases) {
    std::string r = exchange(c.req);
    EXPECT_EQ(r.rfind(std::string("HTTP/1.1 ") + c.status, 0), 0u) << c.req << "\n" << r;
  }
  EXPECT_EQ(server_->counters().bad_requests.get(), std::size(cases));
  EXPECT_EQ(renders_, 0);
  // A head that never ends is refused once it passes the limit.
  std::string r = exchange("GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a'));
  EXPECT_EQ(r.rfind("HTTP/1.1 431", 0), 0u) << r.substr(0, 80);
}

TEST_F(MetricsServerTest, SlowClientIsClosedAtItsDeadline) {
  MetricsServerLimits limits;
  limits.deadline = std::chrono::milliseconds(100);
  start(limits);
  UniqueFd fd = connect_client();
  ASSERT_EQ(send(fd.get(), "GET /met", 8, MSG_NOSIGNAL), 8);
  std::string r = read_all(fd.get());
  EXPECT_EQ(r, "");
  EXPECT_EQ(server_->counters().timeouts.get(), 1u);
  EXPECT_EQ(server_->client_count(), 0u);
}

TEST_F(MetricsServerTest, FullServerClosesTheOldestConnection) {
  MetricsServerLimits limits;
  limits.max_clients = 2;
  start(limits);
  UniqueFd a = connect_client();
  UniqueFd b = connect_client();
  ASSERT_TRUE(pump_until(loop_, [&] { return server_->client_count() == 2; }));
  std::string r = exchange("GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(r.rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(server_->counters().evicted.get(), 1u);
  EXPECT_EQ(read_all(a.get()), "");  // `a` was the oldest: closed without a reply
}

TEST_F(MetricsServerTest, BigReplyIsWrittenInFull) {
  start();
  body_ = std::string(8 << 20, 'x');
  std::string r = exchange("GET /metrics HTTP/1.1\r\n\r\n");
  ASSERT_GT(r.size(), body_.size());
  EXPECT_EQ(r.substr(r.size() - body_.size()), body_);
}

TEST_F(MetricsServerTest, BindFailureIsAnError) {
  start();
  auto again = MetricsServer::create(loop_, "127.0.0.1:" + std::to_string(server_->port()),
                                     [] { return std::string(); });
  ASSERT_FALSE(again);
  EXPECT_NE(again.message().find("bind"), std::string::npos) << again.message();
}

}  // namespace
}  // namespace vnet::control
