// vhost-user codec: round trips over a socketpair, the validation table (sizes, fd
// counts, layout rules), and framing errors (unknown codes, truncation, oversized
// size field, too many fds) that must close every received fd.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>

#include "vhost_user/message.h"
#include "vhu_test_util.h"

namespace vnet::vhost_user {
namespace {

using testing::count_fds;
using testing::make_eventfd;

struct Pair {
  UniqueFd a, b;
  Pair() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
  }
};

// A message as validate() sees it: header, payload of `size` zero bytes, `nfds` fds.
Message make(Request r, uint32_t size, size_t nfds = 0, uint32_t flags = kVersion) {
  Message m;
  m.hdr = {uint32_t(r), flags, size};
  m.payload.resize(size);
  for (size_t i = 0; i < nfds; ++i) m.fds.push_back(make_eventfd());
  return m;
}

Message make_u64(Request r, uint64_t v, size_t nfds = 0) {
  Message m = make(r, 8, nfds);
  std::memcpy(m.payload.data(), &v, 8);
  return m;
}

Result<MessageReader::Outcome> read_one(int fd, Message& m) {
  MessageReader r;
  return r.read(fd, m);
}

TEST(Message, RoundTripWithFds) {
  Pair p;
  UniqueFd e1 = make_eventfd(), e2 = make_eventfd();
  VringAddr a{1, 1, 0x1000, 0x3000, 0x2000, 0x4000};
  ASSERT_TRUE(send_request(p.a.get(), Request::SET_VRING_ADDR, &a, sizeof(a), {e1.get(), e2.get()},
                           kFlagNeedReply));
  Message m;
  auto r = read_one(p.b.get(), m);
  ASSERT_TRUE(r.is_ok()) << r.message();
  EXPECT_EQ(*r, MessageReader::Outcome::kMessage);
  EXPECT_EQ(m.request(), Request::SET_VRING_ADDR);
  EXPECT_EQ(m.hdr.flags, kVersion | kFlagNeedReply);
  EXPECT_TRUE(m.need_reply());
  ASSERT_EQ(m.hdr.size, sizeof(VringAddr));
  auto got = m.as<VringAddr>();
  EXPECT_EQ(got.index, 1u);
  EXPECT_EQ(got.flags, 1u);
  EXPECT_EQ(got.desc_user_addr, 0x1000u);
  EXPECT_EQ(got.used_user_addr, 0x3000u);
  EXPECT_EQ(got.avail_user_addr, 0x2000u);
  EXPECT_EQ(got.log_guest_addr, 0x4000u);
  ASSERT_EQ(m.fds.size(), 2u);
  for (auto& fd : m.fds) {
    ASSERT_TRUE(fd.valid());
    EXPECT_NE(fd.get(), e1.get());
    EXPECT_TRUE(fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  }
  // The received fd is the same eventfd: a write on it is seen on the original.
  uint64_t one = 1, v = 0;
  ASSERT_EQ(write(m.fds[0].get(), &one, 8), 8);
  ASSERT_EQ(read(e1.get(), &v, 8), 8);
  EXPECT_EQ(v, 1u);
  // Nothing more.
  Message m2;
  auto r2 = read_one(p.b.get(), m2);
  ASSERT_TRUE(r2.is_ok());
  EXPECT_EQ(*r2, MessageReader::Outcome::kNone);
}

TEST(Message, ReplyRoundTrip) {
  Pair p;
  VringState s{1, 42};
  ASSERT_TRUE(send_reply(p.a.get(), uint32_t(Request::GET_VRING_BASE), &s, sizeof(s)));
  auto m = recv_message_blocking(p.b.get(), 1000);
  ASSERT_TRUE(m.is_ok()) << m.message();
  EXPECT_EQ(m->hdr.request, uint32_t(Request::GET_VRING_BASE));
  EXPECT_EQ(m->hdr.flags, kVersion | kFlagReply);
  EXPECT_EQ(m->as<VringState>().num, 42u);
  EXPECT_TRUE(m->fds.empty());
}

TEST(Message, SeveralMessagesOneAtATime) {
  Pair p;
  uint64_t f = 7;
  ASSERT_TRUE(send_request(p.a.get(), Request::GET_FEATURES, nullptr, 0));
  ASSERT_TRUE(send_request(p.a.get(), Request::SET_FEATURES, &f, 8));
  MessageReader r;
  Message m1, m2, m3;
  ASSERT_EQ(*r.read(p.b.get(), m1), MessageReader::Outcome::kMessage);
  EXPECT_EQ(m1.request(), Request::GET_FEATURES);
  ASSERT_EQ(*r.read(p.b.get(), m2), MessageReader::Outcome::kMessage);
  EXPECT_EQ(m2.request(), Request::SET_FEATURES);
  EXPECT_EQ(m2.u64(), 7u);
  EXPECT_EQ(*r.read(p.b.get(), m3), MessageReader::Outcome::kNone);
  p.a.reset();
  EXPECT_EQ(*r.read(p.b.get(), m3), MessageReader::Outcome::kClosed);
}

TEST(Message, SplitMessageIsReassembled) {
  Pair p;
  Header h{uint32_t(Request::SET_FEATURES), kVersion, 8};
  uint64_t v = 0x1234;
  uint8_t buf[20];
  std::memcpy(buf, &h, 12);
  std::memcpy(buf + 12, &v, 8);
  MessageReader r;
  Message m;
  ASSERT_EQ(write(p.a.get(), buf, 5), 5);
  ASSERT_EQ(*r.read(p.b.get(), m), MessageReader::Outcome::kNone);
  EXPECT_TRUE(r.in_message());
  ASSERT_EQ(write(p.a.get(), buf + 5, 10), 10);
  ASSERT_EQ(*r.read(p.b.get(), m), MessageReader::Outcome::kNone);
  ASSERT_EQ(write(p.a.get(), buf + 15, 5), 5);
  ASSERT_EQ(*r.read(p.b.get(), m), MessageReader::Outcome::kMessage);
  EXPECT_EQ(m.u64(), 0x1234u);
  EXPECT_FALSE(r.in_message());
}

TEST(Message, TruncatedHeaderIsAnError) {
  Pair p;
  Header h{uint32_t(Request::GET_FEATURES), kVersion, 0};
  ASSERT_EQ(write(p.a.get(), &h, 6), 6);
  p.a.reset();
  Message m;
  auto r = read_one(p.b.get(), m);
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.message().find("truncated header"), std::string::npos) << r.message();
}

// Sends raw bytes with fds attached (sendmsg), to build broken messages.
void raw_send(int fd, const void* buf, size_t len, const std::vector<int>& fds) {
  iovec iov{const_cast<void*>(buf), len};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 16)] = {};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (!fds.empty()) {
    mh.msg_control = cbuf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ASSERT_EQ(sendmsg(fd, &mh, 0), ssize_t(len));
}

TEST(Message, TruncatedPayloadIsAnErrorAndClosesFds) {
  size_t before = count_fds();
  {
    Pair p;
    UniqueFd e = make_eventfd();
    // Header says 8 bytes of payload; 4 come, with an fd, then the peer closes.
    uint8_t buf[16] = {};
    Header h{uint32_t(Request::SET_VRING_CALL), kVersion, 8};
    std::memcpy(buf, &h, 12);
    raw_send(p.a.get(), buf, sizeof(buf), {e.get()});
    p.a.reset();
    e.reset();
    MessageReader r;
    Message m;
    auto res = r.read(p.b.get(), m);
    ASSERT_FALSE(res.is_ok());
    EXPECT_NE(res.message().find("truncated payload"), std::string::npos) << res.message();
    EXPECT_TRUE(m.fds.empty());
  }
  EXPECT_EQ(count_fds(), before);
}

TEST(Message, FdsOfAnUnknownRequestAreClosed) {
  size_t before = count_fds();
  {
    Pair p;
    UniqueFd e1 = make_eventfd(), e2 = make_eventfd();
    Header h{77, kVersion, 0};
    raw_send(p.a.get(), &h, sizeof(h), {e1.get(), e2.get()});
    e1.reset();
    e2.reset();
    Message m;
    EXPECT_FALSE(read_one(p.b.get(), m).is_ok());
  }
  EXPECT_EQ(count_fds(), before);
}

TEST(Message, UnknownCodesAreErrors) {
  for (uint32_t code : {0u, 41u, 1000u, 0xFFFFFFFFu}) {
    Pair p;
    Header h{code, kVersion, 0};
    ASSERT_EQ(write(p.a.get(), &h, 12), 12);
    Message m;
    auto r = read_one(p.b.get(), m);
    ASSERT_FALSE(r.is_ok()) << code;
    EXPECT_NE(r.message().find("unknown request"), std::string::npos) << r.message();
    EXPECT_EQ(request_info(code), nullptr);
    Message v = make(Request::GET_FEATURES, 0);
    v.hdr.request = code;
    EXPECT_FALSE(validate(v));
  }
}

TEST(Message, OversizedSizeFieldIsRejectedWithoutReading) {
  for (uint32_t size : {kMaxPayload + 1, 0x10000000u, 0xFFFFFFFFu}) {
    Pair p;
    Header h{uint32_t(Request::SET_MEM_TABLE), kVersion, size};
    uint8_t buf[12 + 64] = {};
    std::memcpy(buf, &h, 12);
    ASSERT_EQ(write(p.a.get(), buf, sizeof(buf)), ssize_t(sizeof(buf)));
    Message m;
    auto r = read_one(p.b.get(), m);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.message().find("exceeds"), std::string::npos) << r.message();
    int left = 0;
    ASSERT_EQ(ioctl(p.b.get(), FIONREAD, &left), 0);
    EXPECT_EQ(left, 64);  // not one payload byte was read
  }
}

TEST(Message, BadVersionIsAnError) {
  Pair p;
  Header h{uint32_t(Request::GET_FEATURES), 0x2, 0};
  ASSERT_EQ(write(p.a.get(), &h, 12), 12);
  Message m;
  EXPECT_FALSE(read_one(p.b.get(), m).is_ok());
  EXPECT_FALSE(validate(make(Request::GET_FEATURES, 0, 0, 0)));
  EXPECT_FALSE(validate(make(Request::GET_FEATURES, 0, 0, kVersion | kFlagReply)));
  EXPECT_TRUE(validate(make(Request::GET_FEATURES, 0, 0, kVersion | kFlagNeedReply)));
}

TEST(Message, TooManyFdsAreClosed) {
  size_t before = count_fds();
  {
    Pair p;
    std::vector<UniqueFd> owned;
    std::vector<int> fds;
    for (int i = 0; i < 9; ++i) {
      owned.push_back(make_eventfd());
      fds.push_back(owned.back().get());
    }
    // send_message refuses more than 8: send by hand.
    EXPECT_FALSE(send_message(p.a.get(), Header{5, kVersion, 0}, nullptr, fds.data(), 9));
    Header h{uint32_t(Request::SET_MEM_TABLE), kVersion, 0};
    raw_send(p.a.get(), &h, sizeof(h), fds);
    Message m;
    auto r = read_one(p.b.get(), m);
    ASSERT_FALSE(r.is_ok());
    EXPECT_NE(r.message().find("truncated"), std::string::npos) << r.message();
    EXPECT_TRUE(m.fds.empty());
  }
  EXPECT_EQ(count_fds(), before);
}

TEST(Validate, ExactSizes) {
  EXPECT_TRUE(validate(make(Request::GET_FEATURES, 0)));
  EXPECT_FALSE(validate(make(Request::GET_FEATURES, 8)));
  EXPECT_TRUE(validate(make(Request::SET_FEATURES, 8)));
  EXPECT_FALSE(validate(make(Request::SET_FEATURES, 4)));
  EXPECT_FALSE(validate(make(Request::SET_FEATURES, 16)));
  EXPECT_FALSE(validate(make(Request::SET_FEATURES, 0)));
  EXPECT_TRUE(validate(make(Request::SET_VRING_NUM, 8)));
  EXPECT_FALSE(validate(make(Request::SET_VRING_NUM, 12)));
  EXPECT_TRUE(validate(make(Request::SET_VRING_ADDR, 40)));
  EXPECT_FALSE(validate(make(Request::SET_VRING_ADDR, 32)));
  EXPECT_FALSE(validate(make(Request::SET_VRING_ADDR, 48)));
  EXPECT_TRUE(validate(make(Request::GET_VRING_BASE, 8)));
  EXPECT_FALSE(validate(make(Request::GET_VRING_BASE, 0)));
  EXPECT_FALSE(validate(make(Request::SET_OWNER, 8)));
  EXPECT_FALSE(validate(make(Request::GET_MAX_MEM_SLOTS, 8)));
  EXPECT_TRUE(validate(make(Request::ADD_MEM_REG, 40, 1)));
  EXPECT_FALSE(validate(make(Request::ADD_MEM_REG, 32, 1)));
  EXPECT_FALSE(validate(make(Request::ADD_MEM_REG, 72, 1)));
  // Payload shorter than the header says (cannot come from the reader, but checked).
  Message m = make(Request::SET_FEATURES, 8);
  m.payload.resize(4);
  EXPECT_FALSE(validate(m));
}

TEST(Validate, MemTableLayout) {
  auto table = [](uint32_t nregions, uint32_t size, size_t nfds) {
    Message m = make(Request::SET_MEM_TABLE, size, nfds);
    MemoryTableHeader h{nregions, 0};
    std::memcpy(m.payload.data(), &h, std::min<size_t>(size, sizeof(h)));
    return m;
  };
  EXPECT_TRUE(validate(table(1, 40, 1)));
  EXPECT_TRUE(validate(table(8, 8 + 8 * 32, 8)));
  EXPECT_FALSE(validate(table(0, 40, 1)));  // no regions
  EXPECT_FALSE(validate(table(9, 8 + 8 * 32, 8)));
  EXPECT_FALSE(validate(table(2, 40, 2)));  // size says 1 region
  EXPECT_FALSE(validate(table(1, 41, 1)));  // stray byte
  EXPECT_FALSE(validate(table(1, 8, 1)));   // header only
  EXPECT_FALSE(validate(table(1, 40, 0)));  // fd missing
  EXPECT_FALSE(validate(table(1, 40, 2)));  // one fd too many
  EXPECT_FALSE(validate(table(2, 72, 1)));
  EXPECT_TRUE(validate(table(2, 72, 2)));
}

TEST(Validate, FdCounts) {
  // Requests that take no fd.
  for (Request r : {Request::SET_FEATURES, Request::SET_PROTOCOL_FEATURES, Request::SET_STATUS,
                    Request::NET_SET_MTU}) {
    EXPECT_TRUE(validate(make(r, 8, 0))) << request_name(uint32_t(r));
    EXPECT_FALSE(validate(make(r, 8, 1))) << request_name(uint32_t(r));
  }
  for (Request r : {Request::SET_VRING_NUM, Request::SET_VRING_BASE, Request::GET_VRING_BASE,
                    Request::SET_VRING_ENABLE}) {
    EXPECT_TRUE(validate(make(r, 8, 0))) << request_name(uint32_t(r));
    EXPECT_FALSE(validate(make(r, 8, 1))) << request_name(uint32_t(r));
  }
  for (Request r : {Request::GET_FEATURES, Request::GET_PROTOCOL_FEATURES, Request::SET_OWNER,
                    Request::RESET_OWNER, Request::GET_QUEUE_NUM, Request::GET_MAX_MEM_SLOTS,
                    Request::GET_STATUS, Request::RESET_DEVICE}) {
    EXPECT_TRUE(validate(make(r, 0, 0))) << request_name(uint32_t(r));
    EXPECT_FALSE(validate(make(r, 0, 1))) << request_name(uint32_t(r));
  }
  EXPECT_FALSE(validate(make(Request::SET_VRING_ADDR, 40, 1)));
  // Kick/call/err: an fd, or none with the invalid-FD flag; never both or two.
  for (Request r : {Request::SET_VRING_KICK, Request::SET_VRING_CALL, Request::SET_VRING_ERR}) {
    const char* n = request_name(uint32_t(r));
    EXPECT_TRUE(validate(make_u64(r, 1, 1))) << n;
    EXPECT_TRUE(validate(make_u64(r, 1 | kVringNoFdFlag, 0))) << n;
    EXPECT_FALSE(validate(make_u64(r, 1, 0))) << n;
    EXPECT_FALSE(validate(make_u64(r, 1 | kVringNoFdFlag, 1))) << n;
    EXPECT_FALSE(validate(make_u64(r, 1, 2))) << n;
    EXPECT_FALSE(validate(make_u64(r, 0x200, 1))) << n;  // reserved bit
    EXPECT_FALSE(validate(make_u64(r, 1ULL << 40, 1))) << n;
  }
  EXPECT_FALSE(validate(make(Request::ADD_MEM_REG, 40, 0)));
  EXPECT_FALSE(validate(make(Request::ADD_MEM_REG, 40, 2)));
  EXPECT_TRUE(validate(make(Request::REM_MEM_REG, 40, 0)));
  EXPECT_TRUE(validate(make(Request::REM_MEM_REG, 40, 1)));
  EXPECT_FALSE(validate(make(Request::REM_MEM_REG, 40, 2)));
  EXPECT_FALSE(validate(make(Request::SET_LOG_FD, 0, 0)));
  EXPECT_FALSE(validate(make(Request::SET_BACKEND_REQ_FD, 0, 0)));
  EXPECT_FALSE(validate(make(Request::SET_BACKEND_REQ_FD, 0, 2)));
}

TEST(Validate, TableNamesFollowTheSpec) {
  EXPECT_STREQ(request_name(1), "GET_FEATURES");
  EXPECT_STREQ(request_name(9), "SET_VRING_ADDR");
  EXPECT_STREQ(request_name(36), "GET_MAX_MEM_SLOTS");
  EXPECT_STREQ(request_name(40), "GET_STATUS");
  EXPECT_STREQ(request_name(41), "UNKNOWN");
  EXPECT_TRUE(request_info(uint32_t(Request::GET_VRING_BASE))->has_reply);
  EXPECT_FALSE(request_info(uint32_t(Request::SET_VRING_BASE))->has_reply);
}

}  // namespace
}  // namespace vnet::vhost_user
